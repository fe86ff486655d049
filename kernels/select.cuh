/* Row top-k selection on the device (select.cu): the CUDA twin of select_topk_cpu
 * (kernels/select.h). One block per token; radix select on the bit patterns of the scores. */
#ifndef SELECT_CUH
#define SELECT_CUH

#include <stdint.h>

#include "cuda_compat.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Same output as select_topk_cpu, bit for bit: score_i = relu(pre_i) * (gate ? 1 + beta*gate_i : 1)
 * (computed without FMA contraction), latent i eligible iff mask == NULL or mask[i] != 0; keeps the
 * k largest eligible scores > 0, ties to the lower index; row b's slots lat/val[b*k, b*k+k) hold
 * the kept latents in ascending order, then padding (lat -1, val 0). val = relu(pre), never the
 * score. Any 0 <= k (k > n only pads more); fewer than k positive scores keeps them all. AuxK uses
 * it with mask = dead latents and k = k_aux.
 * All pointers are device memory; asynchronous on `stream`; no scratch memory, no host sync.
 * When the row's scores fit in shared memory (4*n bytes plus ~9 KiB under the device's opt-in
 * limit: n <= ~54K on H100, ~38K on A100) the row is read from global memory once; otherwise
 * once per radix pass (up to 4 reads). */
void select_topk_cuda(const float *pre,    // (B, n)
                      const float *gate,   // (B, n) or NULL
                      float beta,
                      const uint8_t *mask, // (n) or NULL
                      int B, int n, int k,
                      int *lat,            // (B, k) out
                      float *val,          // (B, k) out
                      cudaStream_t stream);

/* The same with the code path forced (tests, benchmarks): path 1 = shared-memory row cache
 * (falls back to 0 when the row does not fit), 0 = re-read the row from global memory each pass,
 * -1 = automatic (what select_topk_cuda does). threads: block size (256, 512 or 1024), 0 = auto. */
void select_topk_cuda_path(const float *pre, const float *gate, float beta, const uint8_t *mask,
                           int B, int n, int k, int *lat, float *val, int path, int threads,
                           cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
