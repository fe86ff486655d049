/* Per-latent counters on the device (featstats.cu): CUDA twins of kernels/featstats.h. The
 * counters stay in device memory for the whole run. */
#ifndef FEATSTATS_CUH
#define FEATSTATS_CUH

#include <stdint.h>

#include "backward.cuh"
#include "cuda_compat.h"
#include "sae_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* featstats_update_cpu for the main code, read through the by-latent view that bwd_sort_cuda
 * built (ws, and view->rows/slot/n_rows) with the main code as group 0: its entries are the
 * flat slots [0, main_cap) and main_val their values. One thread per latent walks its entries in
 * token order, so act_sum/gate_sum get the same additions in the same order as on the CPU.
 * s: since_fired, fire_count, act_sum, act_max, last_fired_step, gate_sum are device arrays. */
void featstats_update_cuda(const sae_bwd_ws *ws, const sae_grads_cuda *view,
                           const float *main_val, int main_cap,
                           const float *gate, // (B, n) or NULL
                           int B, int n, int64_t step,
                           sae_state *s, cudaStream_t stream);

/* mask[i] = since_fired[i] >= dead_tokens; *count = number dead (device int). */
void featstats_dead_mask_cuda(const int64_t *since_fired, // (n)
                              int n, int64_t dead_tokens,
                              uint8_t *mask,               // (n) out
                              int *count,                  // (1) out
                              cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
