/* Private glue between the emulator's translation units (runtime, scheduler, cuBLAS). */
#ifndef SF_EMU_INTERNAL_H
#define SF_EMU_INTERNAL_H

#include "emu.h"

/* Records e as the calling host thread's last error (cudaGetLastError) and returns it. */
cudaError_t emu_set_error(cudaError_t e);
/* Whether s is the default stream, a per-thread/legacy handle or a live created stream. */
int emu_stream_ok(cudaStream_t s);
/* Whether [p, p + n) lies inside one cudaMalloc allocation. */
int emu_in_device(const void *p, size_t n);
/* Prints "saeforge-emu: <msg>" and aborts. */
[[noreturn]] void emu_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
