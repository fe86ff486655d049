/* Private glue between the emulator's translation units (runtime, streams, scheduler, cuBLAS,
 * NCCL). */
#ifndef SF_EMU_INTERNAL_H
#define SF_EMU_INTERNAL_H

#include "emu.h"

#include <functional>

/* Records e as the calling host thread's last error (cudaGetLastError) and returns it. */
cudaError_t emu_set_error(cudaError_t e);
/* Whether s is the default stream, a per-thread/legacy handle or a live created stream. */
int emu_stream_ok(cudaStream_t s);
/* Whether [p, p + n) lies inside one cudaMalloc allocation. */
int emu_in_device(const void *p, size_t n);
/* Prints "saeforge-emu: <msg>" and aborts. */
[[noreturn]] void emu_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- stream order (emu_stream.cpp); s must have passed emu_stream_ok ---- */
/* Whether stream work is queued (SF_EMU_STREAMS=defer, the default) rather than run at once. */
int emu_streams_deferred(void);
/* Issues fn on s: queued behind s's earlier work, run when something waits for it (at once,
 * after that work, when eager). Everything fn reads from the caller must be captured by value:
 * it may run after the caller's frame is gone. */
void emu_enqueue(cudaStream_t s, std::function<void()> fn);
/* Runs s's queued work, and the work of other streams it waits for, to its end. */
void emu_stream_drain(cudaStream_t s);
/* What a synchronous call on the legacy stream waits for: the legacy stream and every
 * blocking stream (not those made with cudaStreamNonBlocking). */
void emu_legacy_drain();
/* Runs every stream's queued work. */
void emu_drain_all();
/* The most operations ever queued on one stream at once. */
unsigned long long emu_max_queued();

#endif
