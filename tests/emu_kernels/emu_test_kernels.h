/* Launchers of the emulator's own test kernels (tests/emu_kernels/emu_test_kernels.cu), for
 * tests/test_emu.c. All pointers are device pointers; each launcher runs on `s`. */
#ifndef EMU_TEST_KERNELS_H
#define EMU_TEST_KERNELS_H

#include "kernels/cuda_compat.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Slots per thread written by tk_warp. */
#define TK_WARP_SLOTS 18

/* out[b] = sum of x[b*256 .. b*256+255] for b in a (gx, gy) grid, via a shared-memory tree. */
void tk_block_sum(const float *x, float *out, int gx, int gy, cudaStream_t s); // x: (gx*gy*256)
/* Warp intrinsics over one block of `nthreads` (a multiple of 32) threads; in: (nthreads),
 * out: (nthreads, TK_WARP_SLOTS). See the kernel for the meaning of each slot. */
void tk_warp(const int *in, int *out, int nthreads, cudaStream_t s);
/* Atomics from `blocks` blocks of 128 threads; counters: (16) ints, fsum: (1), dsum: (1),
 * ull: (1). */
void tk_atomics(int *counters, float *fsum, double *dsum, unsigned long long *ull, int blocks,
                cudaStream_t s);
/* Each block reverses its `threads` values of x into y through dynamic shared memory and
 * also stores, per thread, the value of its neighbour after a second barrier. */
void tk_dyn_shared(const float *x, float *y, float *nb, int blocks, int threads, cudaStream_t s);
/* __syncthreads_count/_and/_or over blockDim 96; out: (3) per block. */
void tk_sync_preds(const int *pred, int *out, int blocks, cudaStream_t s);
/* A 3-D block: out[t] = linear index of (threadIdx.x, .y, .z) recomputed from the built-ins,
 * plus blockDim and gridDim; out: (blocks * 4*3*2 * 3). */
void tk_dims(int *out, cudaStream_t s);
/* out[0..n) = value. */
void tk_fill(int *out, int n, int value, cudaStream_t s);
typedef struct tk_fill_spec {
    int *out;
    int n, value;
} tk_fill_spec;
/* tk_fill with the arguments read from *a when launching. */
void tk_fill_args(const tk_fill_spec *a, cudaStream_t s);
/* Launch with a bad configuration and return cudaGetLastError (no abort). */
cudaError_t tk_bad_launch(int which);

/* Faulty kernels: each aborts the process with a diagnostic. */
void tk_deadlock(void);      /* barrier inside `if (threadIdx.x < 16)` */
void tk_bad_mask(void);      /* a lane passes a mask without its own bit */
void tk_mask_mismatch(void); /* lanes disagree on the mask */
void tk_exited_lane(void);   /* a lane named in the mask has returned */
void tk_split_barriers(void); /* threads wait at two different barriers */
/* Line numbers of the faulty statements, for the diagnostics' file:line. */
extern const int tk_deadlock_line, tk_bad_mask_line, tk_mask_mismatch_line, tk_split_line1;
/* Writes one float past the end of its dynamic shared memory (for AddressSanitizer). */
void tk_dyn_overflow(void);
/* Unsynchronised shared-memory traffic between threads of a block (for ThreadSanitizer). */
void tk_racy(int *out);
/* The same traffic separated by a barrier: no race. */
void tk_not_racy(int *out);

#ifdef __cplusplus
}
#endif
#endif
