/* Row top-k on the device (CUDA twin of select_topk_cpu). One block per token:
 *   1. read the row once, computing each latent's score key (bits of the positive score, 0 =
 *      not eligible) and the histogram of its top 11-bit digit; with the shared-memory path the
 *      keys are kept in shared memory, so the row is read from global memory only once;
 *   2. up to three radix passes (11 + 10 + 10 bits) narrow down the k-th largest key T and how
 *      many keys equal to T to keep (`need`); a pass stops early when the digit's whole bucket
 *      is kept;
 *   3. a compaction pass in ascending index order (tiles of 4*blockDim latents, block-wide
 *      prefix sums of per-thread counts) writes the kept latents: every key >= lo, plus the first
 *      `need` keys equal to T (ties to the lower index), then the padding. */
#include "select.cuh"

#include "select_common.cuh"
#include "sf_check.h"

#define SEL_UNROLL 4 /* tiles loaded per step of the histogram loops */
#define SEL_STATIC_SMEM (SEL_BINS * 4 + 64 * 4 + 1024) /* static shared bytes, with margin */

static __global__ void topk_row_kernel(const float *pre, const float *gate, float beta,
                                       const unsigned char *mask, int n, int k, int cached,
                                       int vec, int *lat, float *val)
{
    __shared__ unsigned hist[SEL_BINS];
    __shared__ unsigned ws[32];
    __shared__ unsigned sh[4];
    SF_DYN_SHARED(float, srow); /* (round_up(n, 4)) scores, when cached */

    const int b = blockIdx.x;
    const int tid = threadIdx.x;
    const float *prow = pre + (size_t)b * n;
    const float *grow = gate ? gate + (size_t)b * n : NULL;
    int *lrow = lat + (size_t)b * k;
    float *vrow = val + (size_t)b * k;
    const int tile = 4 * (int)blockDim.x;

    for (int i = tid; i < SEL_BINS; i += blockDim.x)
        hist[i] = 0;
    __syncthreads();

    /* Pass 1: scores, cache, histogram of the top digit. SEL_UNROLL tiles' loads are issued
     * before any of them is used, to keep enough bytes in flight per SM. */
    for (int base = 0; base < n; base += SEL_UNROLL * tile) {
        float s[SEL_UNROLL][4];
        for (int u = 0; u < SEL_UNROLL; u++) {
            const int i = base + u * tile + 4 * tid;
            if (i < n)
                sel_load4(prow, grow, beta, mask, n, i, vec != 0, s[u]);
        }
        for (int u = 0; u < SEL_UNROLL; u++) {
            const int i = base + u * tile + 4 * tid;
            if (i >= n)
                break;
            if (cached)
                *(float4 *)(srow + i) = make_float4(s[u][0], s[u][1], s[u][2], s[u][3]);
            for (int j = 0; j < 4; j++) {
                const unsigned key = __float_as_uint(s[u][j]);
                if (key)
                    atomicAdd(&hist[key >> 20], 1u);
            }
        }
    }
    __syncthreads();

    /* Radix passes. Keep rule afterwards: key != 0 && key >= lo, or key == teq among the first
     * `need` such keys in index order. */
    unsigned kk = (unsigned)k, prefix = 0, lo = 1, teq = 0, need = 0;
    for (int p = 0; p < 3; p++) {
        const int shift = sel_shift(p), width = sel_width(p);
        if (p > 0) {
            for (int i = tid; i < SEL_BINS; i += blockDim.x)
                hist[i] = 0;
            __syncthreads();
            const int hs = shift + width;
            const unsigned dmask = (1u << width) - 1u;
            for (int base = 0; base < n; base += SEL_UNROLL * tile) {
                float s[SEL_UNROLL][4];
                for (int u = 0; u < SEL_UNROLL; u++) {
                    const int i = base + u * tile + 4 * tid;
                    if (i >= n)
                        break;
                    if (cached) {
                        const float4 v = *(const float4 *)(srow + i);
                        s[u][0] = v.x; s[u][1] = v.y; s[u][2] = v.z; s[u][3] = v.w;
                    } else {
                        sel_load4(prow, grow, beta, mask, n, i, vec != 0, s[u]);
                    }
                }
                for (int u = 0; u < SEL_UNROLL; u++) {
                    const int i = base + u * tile + 4 * tid;
                    if (i >= n)
                        break;
                    for (int j = 0; j < 4; j++) {
                        const unsigned key = __float_as_uint(s[u][j]);
                        if (key && (key >> hs) == (prefix >> hs))
                            atomicAdd(&hist[(key >> shift) & dmask], 1u);
                    }
                }
            }
            __syncthreads();
        }
        sel_pick(hist, 1 << width, kk, ws, sh);
        if (p == 0 && sh[2] <= kk) { /* at most k positive scores: keep them all */
            lo = 1;
            break;
        }
        kk -= sh[1];
        prefix |= sh[0] << shift;
        if (sh[3] == kk) { /* the whole bucket is kept: everything >= its smallest key */
            lo = prefix;
            break;
        }
        if (p == 2) {
            lo = prefix + 1;
            teq = prefix;
            need = kk;
        }
    }
    if (lo == 0)
        lo = 1; /* key 0 is never eligible */

    if (cached) {
        /* Warp-level compaction from shared memory: warp w owns a contiguous segment of the row
         * (a multiple of 128 latents); one pass counts, one block scan over the warp totals, one
         * pass writes with warp-level prefix sums. Only two block barriers. */
        __shared__ unsigned wtot[2][32];
        const int lane = tid & 31, warp = tid >> 5, nw = (int)blockDim.x >> 5;
        const int seg = ((n + nw - 1) / nw + 127) & ~127;
        const int s0 = warp * seg, s1 = s0 + seg < n ? s0 + seg : n;
        unsigned g = 0, e = 0;
        for (int i = s0 + 4 * lane; i < s1; i += 128) {
            const float4 v = *(const float4 *)(srow + i);
            const unsigned kq[4] = {__float_as_uint(v.x), __float_as_uint(v.y),
                                    __float_as_uint(v.z), __float_as_uint(v.w)};
            for (int j = 0; j < 4; j++) {
                g += (kq[j] != 0 && kq[j] >= lo);
                e += (need != 0 && kq[j] == teq);
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            g += __shfl_xor_sync(0xffffffffu, g, o);
            e += __shfl_xor_sync(0xffffffffu, e, o);
        }
        if (lane == 0) {
            wtot[0][warp] = g;
            wtot[1][warp] = e;
        }
        __syncthreads();
        unsigned gb = 0, eb = 0, gall = 0, eall = 0;
        for (int w = 0; w < nw; w++) { /* broadcast reads: cheap for <= 32 warps */
            if (w == warp) {
                gb = gall;
                eb = eall;
            }
            gall += wtot[0][w];
            eall += wtot[1][w];
        }
        for (int base = s0; base < s1; base += 128) {
            const int i = base + 4 * lane;
            unsigned kq[4] = {0u, 0u, 0u, 0u};
            if (i < s1) {
                const float4 v = *(const float4 *)(srow + i);
                kq[0] = __float_as_uint(v.x), kq[1] = __float_as_uint(v.y);
                kq[2] = __float_as_uint(v.z), kq[3] = __float_as_uint(v.w);
            }
            unsigned c = 0;
            for (int j = 0; j < 4; j++)
                c += ((kq[j] != 0 && kq[j] >= lo) << 16) | (need != 0 && kq[j] == teq);
            unsigned x = c;
            for (int o = 1; o < 32; o <<= 1) {
                const unsigned y = __shfl_up_sync(0xffffffffu, x, o);
                if (lane >= o)
                    x += y;
            }
            const unsigned tot = __shfl_sync(0xffffffffu, x, 31);
            const unsigned ex = x - c;
            unsigned eq_rank = eb + (ex & 0xffffu);
            unsigned pos = gb + (ex >> 16) + (eq_rank < need ? eq_rank : need);
            for (int j = 0; j < 4; j++) {
                bool keep = kq[j] != 0 && kq[j] >= lo;
                if (!keep && need != 0 && kq[j] == teq) {
                    keep = eq_rank < need;
                    eq_rank++;
                }
                if (keep) {
                    lrow[pos] = i + j;
                    vrow[pos] = grow ? sel_relu(prow[i + j]) : __uint_as_float(kq[j]);
                    pos++;
                }
            }
            gb += tot >> 16;
            eb += tot & 0xffffu;
        }
        const unsigned kept = gall + (eall < need ? eall : need);
        for (int q = (int)kept + tid; q < k; q += blockDim.x) {
            lrow[q] = -1;
            vrow[q] = 0.0f;
        }
        return;
    }

    /* Global-memory path: compaction tile by tile in index order. Per-thread counts (<= 4 each, tile totals <= 4096) are packed
     * as gt << 16 | eq into one scan. */
    unsigned run_gt = 0, run_eq = 0;
    for (int base = 0; base < n; base += tile) {
        const int i = base + 4 * tid;
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (i < n) {
            if (cached) {
                const float4 v = *(const float4 *)(srow + i);
                s[0] = v.x; s[1] = v.y; s[2] = v.z; s[3] = v.w;
            } else {
                sel_load4(prow, grow, beta, mask, n, i, vec != 0, s);
            }
        }
        unsigned g = 0, e = 0;
        for (int j = 0; j < 4; j++) {
            const unsigned key = __float_as_uint(s[j]);
            g += (key != 0 && key >= lo);
            e += (need != 0 && key == teq);
        }
        unsigned total;
        const unsigned ex = sel_block_scan((g << 16) | e, ws, &total);
        unsigned eq_rank = run_eq + (ex & 0xffffu);
        unsigned pos = run_gt + (ex >> 16) + (eq_rank < need ? eq_rank : need);
        for (int j = 0; j < 4; j++) {
            const unsigned key = __float_as_uint(s[j]);
            bool keep = key != 0 && key >= lo;
            if (!keep && need != 0 && key == teq) {
                keep = eq_rank < need;
                eq_rank++;
            }
            if (keep) {
                lrow[pos] = i + j;
                vrow[pos] = grow ? sel_relu(prow[i + j]) : s[j];
                pos++;
            }
        }
        run_gt += total >> 16;
        run_eq += total & 0xffffu;
        if (run_gt + (run_eq < need ? run_eq : need) >= (unsigned)k)
            break; /* uniform: all k found */
    }
    const unsigned kept = run_gt + (run_eq < need ? run_eq : need);
    for (int q = (int)kept + tid; q < k; q += blockDim.x) {
        lrow[q] = -1;
        vrow[q] = 0.0f;
    }
}

extern "C" void select_topk_cuda_path(const float *pre, const float *gate, float beta,
                                      const uint8_t *mask, int B, int n, int k, int *lat,
                                      float *val, int path, int threads, cudaStream_t stream)
{
    SF_CHECK(B >= 0 && n >= 0 && k >= 0);
    if (B == 0 || k == 0)
        return;
    const bool vec = n % 4 == 0 && sel_aligned16(pre) && (!gate || sel_aligned16(gate));
    const size_t n4 = ((size_t)n + 3) & ~(size_t)3;
    const size_t dyn = n4 * sizeof(float);
    bool cached = false;
    size_t optin = 0;
    if (path != 0) {
        const sel_devinfo di = sel_device_info();
        optin = di.smem_optin;
        cached = dyn + SEL_STATIC_SMEM <= optin;
    }
    if (threads == 0) {
        /* Measured on H100 (B=8192): a row cache big enough to allow only one block per SM
         * runs best with 1024 threads; otherwise 512 (several blocks share an SM). */
        if (n < 2048)
            threads = 256;
        else if (cached && 2 * (dyn + SEL_STATIC_SMEM) > optin)
            threads = 1024;
        else
            threads = 512;
    }
    SF_CHECK(threads == 256 || threads == 512 || threads == 1024);
    if (cached && dyn > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(topk_row_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)dyn));
    SF_LAUNCH(topk_row_kernel, B, threads, cached ? dyn : 0, stream, pre, gate, beta,
              (const unsigned char *)mask, n, k, (int)cached, (int)vec, lat, val);
}

extern "C" void select_topk_cuda(const float *pre, const float *gate, float beta,
                                 const uint8_t *mask, int B, int n, int k, int *lat, float *val,
                                 cudaStream_t stream)
{
    select_topk_cuda_path(pre, gate, beta, mask, B, n, k, lat, val, -1, 0, stream);
}
