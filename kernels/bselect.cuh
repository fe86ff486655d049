/* Batch-wide selection on the device (bselect.cu): the CUDA twins of select_batch_cpu and
 * select_threshold_cpu (kernels/select.h). Multi-block radix select over all B*n values. */
#ifndef BSELECT_CUH
#define BSELECT_CUH

#include <stddef.h>
#include <stdint.h>

#include "cuda_compat.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Scratch bytes bselect_cuda needs for a (B, n) batch (device memory, any 256-byte-aligned
 * allocation of at least this size; reusable across calls on the same stream). */
size_t bselect_workspace_bytes(int B, int n);

/* Batch top-k, same output as select_batch_cpu: keeps the K largest relu(pre) > 0 over all B*n
 * values, ties to the lower flat index b*n + i. Writes the CSR code row_ptr (B+1) / lat / val
 * (entries of a row in ascending latent order; val = relu(pre)); the number kept is row_ptr[B]
 * (<= K) and slots [row_ptr[B], K) are padding (lat -1, val 0). *min_kept (device float) = the
 * smallest kept value, 0 if none. Everything stays on the device: asynchronous on `stream`, no
 * host sync; read row_ptr[B] / *min_kept back only when needed. Requires B*n < 2^31.
 * Launches: 1 init + 3 x (histogram + pick) + count + scan + compact; pre is read up to 5 times
 * (the radix passes stop early once the threshold is known). */
void bselect_cuda(const float *pre,    // (B, n)
                  int B, int n, int64_t K,
                  int *row_ptr,        // (B + 1) out
                  int *lat,            // (K) out
                  float *val,          // (K) out
                  float *min_kept,     // (1) out, device
                  void *workspace,     // bselect_workspace_bytes(B, n)
                  cudaStream_t stream);

/* The keep/compaction half of bselect_cuda for a rule the caller found (data-parallel batch
 * top-k, bselect_dist.cuh): keeps keys (float bits of relu(pre) > 0) >= lo, plus the first
 * `need` keys == teq in flat-index order; pads lat/val from row_ptr[B] to `slots`. *min_kept =
 * this rank's smallest kept value (0 if none). Asynchronous, no host sync; same workspace. */
void bselect_rule_cuda(const float *pre,  // (B, n)
                       int B, int n,
                       unsigned lo, unsigned teq, unsigned need,
                       int64_t slots,
                       int *row_ptr,      // (B + 1) out
                       int *lat,          // (slots) out
                       float *val,        // (slots) out
                       float *min_kept,   // (1) out, device
                       void *workspace,   // bselect_workspace_bytes(B, n)
                       cudaStream_t stream);

/* Threshold rule, same output as select_threshold_cpu: keeps latents with relu(pre) > theta
 * and pre > 0 (a value relu maps to 0 is never kept, even for theta < 0).
 * row_ptr (B+1) is always written; row_ptr[B] is the number of entries the code needs. lat/val
 * are written only when row_ptr[B] <= cap (decided on the device). Needs no scratch; asynchronous
 * on `stream`. Requires B*n < 2^31. */
void select_threshold_cuda(const float *pre, // (B, n)
                           float theta,
                           int B, int n, int64_t cap,
                           int *row_ptr,     // (B + 1) out
                           int *lat,         // (cap) out
                           float *val,       // (cap) out
                           cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
