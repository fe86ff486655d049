/* Device histograms of the data-parallel batch top-k (bselect_dist.cuh). The buckets are too
 * many for shared memory, so counts go to global memory, aggregated per warp first: the lanes
 * holding the same bucket add once through their leader (__match_any_sync over the full warp;
 * every lane runs every iteration, so the mask is exact). Integer counts: order-independent. */
#include "bselect_dist.cuh"

#include "sf_check.h"

#define BDH_THREADS 256 /* a multiple of 32: whole warps */
#define BDH_NONE 0xffffffffu

static __global__ void bdh_zero_kernel(unsigned long long *hist, int buckets)
{
    for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < buckets; q += gridDim.x * blockDim.x)
        hist[q] = 0ull;
}

static __global__ void bdh_count_kernel(const float *pre, long long N, int hi_bucket, int shift,
                                        unsigned mask, unsigned long long *hist)
{
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x / 32);
    const long long w0 = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    for (long long base = w0 * 32; base < N; base += warps * 32) {
        const long long q = base + lane;
        unsigned key = BDH_NONE;
        if (q < N) {
            const float v = pre[q];
            const unsigned u = __float_as_uint(v);
            if (v > 0.0f && (hi_bucket < 0 || (int)(u >> 16) == hi_bucket))
                key = (u >> shift) & mask;
        }
        const unsigned same = __match_any_sync(0xffffffffu, key);
        if (key != BDH_NONE && lane == __ffs((int)same) - 1)
            atomicAdd(&hist[key], (unsigned long long)__popc(same));
    }
}

extern "C" void bsel_dist_hist_cuda(const float *pre, int B, int n, int hi_bucket, int shift,
                                    int buckets, int64_t *hist, cudaStream_t stream)
{
    SF_CHECK(B >= 0 && n > 0 && buckets > 0 && (buckets & (buckets - 1)) == 0);
    SF_CHECK(shift >= 0 && shift < 32);
    unsigned long long *h = (unsigned long long *)hist;
    SF_LAUNCH(bdh_zero_kernel, (buckets + 255) / 256, 256, 0, stream, h, buckets);
    const long long N = (long long)B * n;
    if (N == 0)
        return;
    long long blocks = (N + BDH_THREADS * 8 - 1) / (BDH_THREADS * 8);
    if (blocks > 1024)
        blocks = 1024;
    SF_LAUNCH(bdh_count_kernel, (int)blocks, BDH_THREADS, 0, stream, pre, N, hi_bucket, shift,
              (unsigned)(buckets - 1), h);
}
