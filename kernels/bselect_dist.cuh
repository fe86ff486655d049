/* Device histograms of the data-parallel batch top-k (bselect_dist.cu): the local counts that
 * select_batch_dist_cpu (bselect_dist.h) builds on the host, for the CUDA backend to sum over
 * the ranks with NCCL and scan with bsel_dist_bucket. */
#ifndef BSELECT_DIST_CUH
#define BSELECT_DIST_CUH

#include <stdint.h>

#include "cuda_compat.h"

#ifdef __cplusplus
extern "C" {
#endif

/* hist[q] = number of values pre > 0 whose float bits u satisfy (u >> 16) == hi_bucket (any
 * when hi_bucket < 0) and ((u >> shift) & (buckets - 1)) == q. Pass 1: hi_bucket = -1,
 * shift = 16, buckets = BSEL_DIST_HI_BUCKETS; pass 2: hi_bucket = the pass-1 bucket, shift = 0,
 * buckets = BSEL_DIST_LO_BUCKETS. hist is zeroed here (also for B = 0). Asynchronous. */
void bsel_dist_hist_cuda(const float *pre, // (B, n)
                         int B, int n, int hi_bucket, int shift, int buckets,
                         int64_t *hist,    // (buckets) out, device
                         cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
