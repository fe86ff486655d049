/* Device-only helpers shared by decode/loss/backward/adam/featstats .cu files (C++ only, not a
 * C header): fixed-order block reductions, so every reduction is deterministic for a given
 * launch shape, and a one-block deterministic exclusive scan. */
#ifndef DEVUTIL_CUH
#define DEVUTIL_CUH

#include "cuda_compat.h"

/* Threads per block of the reduction kernels; a power of two. */
#define SF_RED_THREADS 256
/* Partial sums of the two-stage reductions: at most this many blocks in stage one. */
#define SF_RED_MAX_PARTS 256

/* Sum of v over the block in a fixed tree order. sh: blockDim.x elements of shared memory;
 * blockDim.x must be a power of two. Every thread of the block must call it. */
template <typename T>
static __device__ T sf_block_sum(T v, T *sh)
{
    const int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s)
            sh[t] += sh[t + s];
        __syncthreads();
    }
    T r = sh[0];
    __syncthreads();
    return r;
}

/* Sum over the 32 lanes of a full warp (butterfly: every lane gets the same value). */
static __device__ inline float sf_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Non-contracted IEEE float product and sum: nvcc would fuse a*b+c into an FMA, which rounds
 * differently from the CPU twins' separate operations. */
static __device__ inline float sf_fmul(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
static __device__ inline float sf_fadd(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

/* Number of stage-one blocks for a two-stage reduction over `count` items. */
static inline int sf_red_parts(long long count)
{
    long long p = (count + SF_RED_THREADS * 4 - 1) / (SF_RED_THREADS * 4);
    if (p < 1)
        p = 1;
    if (p > SF_RED_MAX_PARTS)
        p = SF_RED_MAX_PARTS;
    return (int)p;
}

#endif
