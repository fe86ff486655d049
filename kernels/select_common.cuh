/* Device-only helpers shared by select.cu and bselect.cu (C++ only, not a C header): the
 * selection score, keys, block-wide scans and the radix digit pick.
 *
 * Keys: a score s > 0 (finite or +inf) is ordered exactly like its IEEE bit pattern read as an
 * unsigned integer, so top-k over positive floats is top-k over those 31-bit keys. Key 0 means
 * "not eligible" (score <= 0, NaN, masked out, or past the end of the row). The radix passes look
 * at digits of 11 + 10 + 10 bits (bits 20..30, 10..19, 0..9; bit 31 is always 0). */
#ifndef SELECT_COMMON_CUH
#define SELECT_COMMON_CUH

#include <stdint.h>

#include "cuda_compat.h"
#include "devutil.cuh" /* sf_fmul/sf_fadd: scores without FMA contraction, as the CPU twin */

#define SEL_BINS 2048 /* histogram bins: enough for the widest (11-bit) digit */

/* Radix pass p (0, 1, 2) looks at bits [sel_shift(p), sel_shift(p) + sel_width(p)). */
static __host__ __device__ inline int sel_shift(int p) { return p == 0 ? 20 : p == 1 ? 10 : 0; }
static __host__ __device__ inline int sel_width(int p) { return p == 0 ? 11 : 10; }

static __device__ inline float sel_relu(float p) { return p > 0.0f ? p : 0.0f; }

/* Score of one latent as in select_topk_cpu: relu(p) * (1 + beta * g) (gate) or relu(p);
 * returns 0 for anything that cannot be selected. */
static __device__ inline float sel_score(float p, float g, bool has_gate, float beta, bool ok)
{
    const float a = sel_relu(p);
    const float s = has_gate ? sf_fmul(a, sf_fadd(1.0f, sf_fmul(beta, g))) : a;
    return (ok && s > 0.0f) ? s : 0.0f;
}

/* Scores of latents i..i+3 of one row (i a multiple of 4, i < n). vec: n % 4 == 0 and the row
 * pointers are 16-byte aligned, so the row is read with float4 loads. */
static __device__ inline void sel_load4(const float *prow, const float *grow, float beta,
                                        const unsigned char *mask, int n, int i, bool vec,
                                        float s[4])
{
    float p[4], g[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (vec) {
        const float4 v = *(const float4 *)(prow + i);
        p[0] = v.x; p[1] = v.y; p[2] = v.z; p[3] = v.w;
        if (grow) {
            const float4 w = *(const float4 *)(grow + i);
            g[0] = w.x; g[1] = w.y; g[2] = w.z; g[3] = w.w;
        }
    } else {
        for (int j = 0; j < 4; j++) {
            p[j] = i + j < n ? prow[i + j] : 0.0f;
            if (grow)
                g[j] = i + j < n ? grow[i + j] : 0.0f;
        }
    }
    for (int j = 0; j < 4; j++) {
        const bool ok = i + j < n && (!mask || mask[i + j] != 0);
        s[j] = sel_score(p[j], g[j], grow != NULL, beta, ok);
    }
}

/* Exclusive prefix sum of v over the block (blockDim.x a multiple of 32, at most 1024); *total
 * gets the block's sum. ws: 32 words of shared memory. Every thread of the block must call it;
 * it ends with a barrier, so ws may be reused right after. */
static __device__ inline unsigned sel_block_scan(unsigned v, unsigned *ws, unsigned *total)
{
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    unsigned x = v;
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= (unsigned)o)
            x += y;
    }
    if (lane == 31u)
        ws[warp] = x;
    __syncthreads();
    if (warp == 0) {
        unsigned s = lane < nw ? ws[lane] : 0u;
        for (int o = 1; o < 32; o <<= 1) {
            const unsigned y = __shfl_up_sync(0xffffffffu, s, o);
            if (lane >= (unsigned)o)
                s += y;
        }
        ws[lane] = s; /* inclusive sums of the warp totals */
    }
    __syncthreads();
    const unsigned before = warp ? ws[warp - 1] : 0u;
    *total = ws[nw - 1];
    __syncthreads();
    return before + x - v;
}

/* Counts -> exclusive offsets in place over the block: each thread owns the run a[i0, i1) whose
 * sum is c. Returns the block's total. Every thread of the block must call it (sel_block_scan). */
template <class T>
static __device__ inline unsigned sel_block_offsets(T *a, int i0, int i1, unsigned c, unsigned *ws)
{
    unsigned total;
    unsigned off = sel_block_scan(c, ws, &total);
    for (int i = i0; i < i1; i++) {
        const unsigned cnt = (unsigned)a[i];
        a[i] = (T)off;
        off += cnt;
    }
    return total;
}

/* Radix digit pick over hist[0, nb): the digit D with count(digit > D) < kk <= count(digit >= D).
 * Writes sh[0] = D, sh[1] = count(digit > D), sh[3] = hist[D] (only when total >= kk) and
 * sh[2] = total. Ends with a barrier: every thread may read sh afterwards. */
static __device__ inline void sel_pick(const unsigned *hist, int nb, unsigned kk, unsigned *ws,
                                       unsigned *sh)
{
    const int per = (nb + (int)blockDim.x - 1) / (int)blockDim.x;
    const int hi = nb - 1 - (int)threadIdx.x * per; /* this thread's bins: hi, hi-1, ... */
    unsigned c = 0;
    for (int j = 0; j < per; j++)
        if (hi - j >= 0)
            c += hist[hi - j];
    unsigned total;
    unsigned above = sel_block_scan(c, ws, &total);
    for (int j = 0; j < per; j++) {
        const int bin = hi - j;
        if (bin < 0)
            break;
        const unsigned h = hist[bin];
        if (above < kk && above + h >= kk) {
            sh[0] = (unsigned)bin;
            sh[1] = above;
            sh[3] = h;
        }
        above += h;
    }
    if (threadIdx.x == 0)
        sh[2] = total;
    __syncthreads();
}

/* Device properties the launchers need, cached per device. */
typedef struct sel_devinfo {
    int sms;
    size_t smem_optin; /* largest dynamic + static shared memory one block may opt in to */
} sel_devinfo;

static inline sel_devinfo sel_device_info(void)
{
    static sel_devinfo cache[16];
    static int have[16];
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    if (dev < 0 || dev >= 16)
        dev = 0;
    if (!have[dev]) {
        cudaDeviceProp prop;
        CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
        cache[dev].sms = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
        cache[dev].smem_optin = prop.sharedMemPerBlockOptin > prop.sharedMemPerBlock
                                    ? prop.sharedMemPerBlockOptin
                                    : prop.sharedMemPerBlock;
        have[dev] = 1;
    }
    return cache[dev];
}

/* Row pointers allow float4 loads. */
static inline bool sel_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

#endif
