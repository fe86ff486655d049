/* Batch-wide selection on the device: CUDA twins of select_batch_cpu and select_threshold_cpu. */
#ifndef BSELECT_CUH
#define BSELECT_CUH

#include <stddef.h>
#include <stdint.h>

#include "cuda_compat.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Scratch bytes bselect_cuda needs for a (B, n) batch (device memory, any 256-byte-aligned
 * allocation of at least this size; reusable across calls on the same stream; one sized for
 * (max_B, n) serves every B <= max_B). About 12 bytes per candidate of the fast path, which holds
 * min(B n, max(512 B, 16384)) of them, plus 16 bytes per row and 2 per 1024 values of pre. */
size_t bselect_workspace_bytes(int B, int n);

/* Batch top-k, same output as select_batch_cpu: keeps the K largest relu(pre) > 0 over all B*n
 * values, ties to the lower flat index b*n + i. Writes the CSR code row_ptr (B+1) / lat / val
 * (entries of a row in ascending latent order; val = relu(pre)); the number kept is row_ptr[B]
 * (<= K) and slots [row_ptr[B], K) are padding (lat -1, val 0). *min_kept (device float) = the
 * smallest kept value, 0 if none. Everything stays on the device: asynchronous on `stream`, no
 * host sync; read row_ptr[B] / *min_kept back only when needed. Requires B*n < 2^31.
 * Fast path, as select_batch_1pass_cpu: a bound from the histogram of every (B/256)-th row (all
 * rows when B <= 256), one pass over pre that gathers the keys above it, and the selection over
 * those candidates; it holds when K <= candidates <= min(8K, workspace capacity), which the
 * device decides: otherwise the same launches run the multi-pass reference over pre. Either
 * way the output is the same (it does not depend on the order atomics land in).
 * Launches: 16 (init, 2 sample histograms, bound, candidate pass, decision, reorder, 3 x
 * (histogram + pick), count, scan, compact); 10 when K = 0 or K exceeds the capacity (no fast
 * path). Reads of pre on the fast path: the sampled rows once, or twice when their coarse
 * histogram is too full to give the bound (all rows are sampled when B <= 256), then 1 full pass
 * and a gather of the candidates; on a fallback, those plus up to 5 passes of the reference
 * (the radix passes stop early once the threshold is known). */
void bselect_cuda(const float *pre,    // (B, n)
                  int B, int n, int64_t K,
                  int *row_ptr,        // (B + 1) out
                  int *lat,            // (K) out
                  float *val,          // (K) out
                  float *min_kept,     // (1) out, device
                  void *workspace,     // bselect_workspace_bytes(B, n)
                  cudaStream_t stream);

/* Which path the last bselect_cuda on `workspace` took (BSEL_PATH_*). Synchronous (copies from
 * the device): for tests and benchmarks, never on the training path. */
enum {
    BSEL_PATH_REF = 0,      /* fast path not tried: K = 0, K > capacity, or bselect_rule_cuda */
    BSEL_PATH_FAST = 1,     /* one pass: the bound held */
    BSEL_PATH_NO_BOUND = 2, /* fallback: the sample has fewer positives than its share of 2K */
    BSEL_PATH_FEW = 3,      /* fallback: fewer than K keys >= bound (bound too high) */
    BSEL_PATH_MANY = 4      /* fallback: more than min(8K, capacity) (bound too low) */
};
int bselect_path_debug(const void *workspace);

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

/* Threshold rule (bselect_thr.cu), same output as select_threshold_cpu: keeps latents with
 * relu(pre) > theta and pre > 0 (a value relu maps to 0 is never kept, even for theta < 0).
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
