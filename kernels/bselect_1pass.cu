/* The one-pass front of bselect_cuda (CUDA twin of select_batch_1pass_cpu's bound and candidates).
 *
 * A bound is taken from the histogram of every (B/256)-th row (all rows when B <= 256): the
 * lower edge of the bucket holding the sample's share of 2K (13-bit buckets, refined by a second
 * look at the sample with 9 more bits when that bucket is too full). One pass over pre then
 * gathers the keys >= bound, tile by tile: a tile's candidates are written contiguously in flat
 * order at a place an atomic reserves, so the tiles land in whatever order the blocks ran; a scan
 * over the tile counts then puts every candidate in flat order, and nothing later depends on the
 * atomics. The decision (fast path, or the multi-pass reference when fewer than K or more than
 * min(8K, capacity) keys are above the bound) is taken on the device and kept in the state, which
 * every later kernel of the call reads; the host never waits. */
#include "bselect_impl.cuh"

#include "sf_check.h"

/* Coarse histogram (bits 18..30) of the sample -> sel_pick's sh for the sample's want-th largest
 * key. True when that bucket's lower edge is a good bound as it is: the sample has at most
 * 2 want keys >= it (so the batch about 4K), and the fine histogram is not needed. */
static __device__ inline bool bsel_coarse_ok(const unsigned *ghist, unsigned want, unsigned *ws,
                                             unsigned *sh)
{
    sel_pick(ghist, BSEL_SBINS, want, ws, sh);
    return sh[2] >= want && (unsigned long long)sh[1] + sh[3] <= 2ull * want;
}

/* Histogram of the keys of the sampled rows r * step, r < rows. Coarse (fine = 0): bits 18..30
 * of every key into ghist. Fine: bits 9..17 of the keys inside the coarse bucket of the sample's
 * want-th largest key, into ghist + BSEL_SBINS, and only when that bucket is too full to give
 * the bound (a top-heavy sample, e.g. uniform values). */
static __global__ void bsel_sample_kernel(const float *pre, int n, int vec, int step, int rows,
                                          const bsel_state *st, unsigned *ghist, int fine,
                                          unsigned want)
{
    __shared__ unsigned hist[BSEL_SBINS];
    __shared__ unsigned ws[32];
    __shared__ unsigned sh[4];
    if (st->path != BSEL_PATH_TRY)
        return; /* the same for every thread of the grid */
    unsigned d1 = 0;
    if (fine) {
        if (bsel_coarse_ok(ghist, want, ws, sh) || sh[2] < want)
            return; /* the same in every block */
        d1 = sh[0];
    }
    const int nb = fine ? BSEL_SBINS2 : BSEL_SBINS;
    unsigned *gh = fine ? ghist + BSEL_SBINS : ghist;
    for (int i = threadIdx.x; i < nb; i += blockDim.x)
        hist[i] = 0;
    __syncthreads();
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *prow = pre + (size_t)r * step * n;
        for (int i = 4 * threadIdx.x; i < n; i += 4 * blockDim.x) {
            float s[4];
            sel_load4(prow, NULL, 0.0f, NULL, n, i, vec != 0, s);
            for (int j = 0; j < 4; j++) {
                const unsigned key = __float_as_uint(s[j]);
                if (key == 0)
                    continue;
                if (!fine)
                    atomicAdd(&hist[key >> BSEL_SSHIFT], 1u);
                else if ((key >> BSEL_SSHIFT) == d1)
                    atomicAdd(&hist[(key >> BSEL_SSHIFT2) & (BSEL_SBINS2 - 1)], 1u);
            }
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nb; i += blockDim.x)
        if (hist[i])
            atomicAdd(&gh[i], hist[i]);
}

/* One block: the bound is the lower edge of the coarse (or coarse + fine) bucket holding the
 * sample's want-th largest key; a sample with fewer positives than want gives no bound.
 * Clears both histograms. */
static __global__ void bsel_bound_kernel(unsigned *ghist, bsel_state *st, unsigned want)
{
    __shared__ unsigned ws[32];
    __shared__ unsigned sh[4];
    if (st->path != BSEL_PATH_TRY)
        return; /* read by every thread before thread 0 can change it (barriers in between) */
    const bool coarse = bsel_coarse_ok(ghist, want, ws, sh);
    const unsigned total = sh[2], d1 = sh[0], above = sh[1];
    unsigned bound = d1 << BSEL_SSHIFT;
    if (total >= want && !coarse) {
        sel_pick(ghist + BSEL_SBINS, BSEL_SBINS2, want - above, ws, sh);
        bound |= sh[0] << BSEL_SSHIFT2;
    }
    if (threadIdx.x == 0) {
        if (total < want)
            st->path = BSEL_PATH_NO_BOUND;
        else
            st->bound = bound ? bound : 1u; /* key 0 is never a candidate */
    }
    for (int i = threadIdx.x; i < BSEL_SBINS + BSEL_SBINS2; i += blockDim.x)
        ghist[i] = 0; /* every read of ghist finished before sel_pick's last barrier */
}

/* The one pass over pre: per tile, the flat indices of keys >= bound go to cand_a in flat order
 * at tile_base[t] (reserved with an atomic on st->ncand), tile_off[t] = their number. Once more
 * than cap were seen the fast path has failed: nothing more is written, and blocks stop early. */
static __global__ void bsel_cand_kernel(const float *pre, long long N, int vec, bsel_state *st,
                                        int nt, unsigned cap, unsigned *tile_base,
                                        unsigned *tile_off, int *cand_a)
{
    __shared__ unsigned ws[32];
    __shared__ unsigned s_over, s_base;
    if (st->path != BSEL_PATH_TRY)
        return; /* the same for every thread of the grid */
    const unsigned bound = st->bound;
    /* Last tile first: the emulator runs blocks in order, and reversed tiles make its atomics
     * hand out places out of flat order, as a GPU's may, so the tests cover the reordering. */
    for (int c = blockIdx.x; c < nt; c += gridDim.x) {
        if (threadIdx.x == 0)
            s_over = *(volatile unsigned *)&st->ncand > cap;
        __syncthreads();
        if (s_over)
            break; /* uniform over the block */
        const int tile = nt - 1 - c;
        const long long t0 = (long long)tile * BSEL_TILE;
        unsigned mask = 0, cnt[4];
        for (int j = 0; j < 4; j++) {
            const long long i = t0 + j * (BSEL_TILE / 4) + 4 * threadIdx.x;
            float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (vec && i + 3 < N) {
                const float4 x = *(const float4 *)(pre + i);
                v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
            } else {
                for (int q = 0; q < 4; q++)
                    v[q] = i + q < N ? pre[i + q] : 0.0f;
            }
            cnt[j] = 0;
            for (int q = 0; q < 4; q++) {
                const unsigned key = __float_as_uint(sel_relu(v[q]));
                if (key != 0 && key >= bound) {
                    mask |= 1u << (4 * j + q);
                    cnt[j]++;
                }
            }
        }
        /* flat order inside the tile is (sub-tile j, thread, q): two scans of packed pairs */
        unsigned ta, tb;
        const unsigned ea = sel_block_scan((cnt[0] << 16) | cnt[1], ws, &ta);
        const unsigned eb = sel_block_scan((cnt[2] << 16) | cnt[3], ws, &tb);
        const unsigned T0 = ta >> 16, T1 = ta & 0xffffu, T2 = tb >> 16, T3 = tb & 0xffffu;
        const unsigned total = T0 + T1 + T2 + T3;
        if (threadIdx.x == 0) {
            const unsigned base = total ? atomicAdd(&st->ncand, total) : 0u;
            s_base = base;
            tile_base[tile] = base;
            tile_off[tile] = total;
        }
        __syncthreads();
        const unsigned base = s_base;
        if ((unsigned long long)base + total <= cap) {
            unsigned pos[4] = {base + (ea >> 16), base + T0 + (ea & 0xffffu),
                               base + T0 + T1 + (eb >> 16), base + T0 + T1 + T2 + (eb & 0xffffu)};
            for (int j = 0; j < 4; j++)
                for (int q = 0; q < 4; q++)
                    if ((mask >> (4 * j + q)) & 1u)
                        cand_a[pos[j]++] =
                            (int)(t0 + j * (BSEL_TILE / 4) + 4 * threadIdx.x + q);
        }
    }
}

/* One block: take the decision; on the fast path turn the tile counts into offsets in place
 * (tile_off[nt] = number of candidates). */
static __global__ void bsel_decide_kernel(bsel_state *st, int nt, unsigned Kc, unsigned cap,
                                          unsigned *tile_off)
{
    __shared__ unsigned ws[32];
    const unsigned path = st->path, m = st->ncand;
    __syncthreads(); /* every thread has read the state before thread 0 changes it */
    if (path != BSEL_PATH_TRY)
        return;
    if (m < Kc || m > cap) {
        if (threadIdx.x == 0)
            st->path = m < Kc ? BSEL_PATH_FEW : BSEL_PATH_MANY;
        return;
    }
    const int per = (nt + (int)blockDim.x - 1) / (int)blockDim.x;
    const int t0 = (int)threadIdx.x * per;
    const int t1 = t0 + per < nt ? t0 + per : nt;
    unsigned c = 0;
    for (int t = t0; t < t1; t++)
        c += tile_off[t];
    const unsigned total = sel_block_offsets(tile_off, t0, t1, c, ws);
    if (threadIdx.x == 0) {
        tile_off[nt] = total; /* == m */
        st->path = BSEL_PATH_FAST;
    }
}

/* Fast path only. A warp per tile moves its candidates to their place in flat order (with their
 * values); a thread per row boundary b finds crow[b] = candidates with flat index < b n, from
 * the tile holding b n (its segment of cand_a is sorted). */
static __global__ void bsel_reorder_kernel(const float *pre, int B, int n, int nt,
                                           const bsel_state *st, const unsigned *tile_base,
                                           const unsigned *tile_off, const int *cand_a,
                                           int *cflat, float *cval, int *crow)
{
    if (st->path != BSEL_PATH_FAST)
        return;
    const long long gt = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long threads = (long long)gridDim.x * blockDim.x;
    const unsigned lane = threadIdx.x & 31u;
    for (long long t = gt >> 5; t < nt; t += threads >> 5) {
        const unsigned src = tile_base[t], dst = tile_off[t], cnt = tile_off[t + 1] - dst;
        for (unsigned j = lane; j < cnt; j += 32) {
            const int f = cand_a[src + j];
            cflat[dst + j] = f;
            cval[dst + j] = pre[f]; /* > 0: relu leaves it as it is */
        }
    }
    for (long long b = gt; b <= B; b += threads) {
        const long long pos = b * n;
        if (b == B) {
            crow[b] = (int)tile_off[nt];
            continue;
        }
        const long long t = pos / BSEL_TILE;
        const unsigned base = tile_base[t];
        unsigned lo = 0, hi = tile_off[t + 1] - tile_off[t];
        while (lo < hi) {
            const unsigned mid = (lo + hi) / 2;
            if (cand_a[base + mid] < pos)
                lo = mid + 1;
            else
                hi = mid;
        }
        crow[b] = (int)(tile_off[t] + lo);
    }
}

void bsel_1pass_front(const float *pre, int B, int n, long long Kc, const bsel_ws *ws,
                      cudaStream_t stream)
{
    SF_CHECK(Kc > 0 && Kc <= ws->cap_ws);
    const long long N = (long long)B * n;
    const long long cap = BSEL_CAP * Kc < ws->cap_ws ? BSEL_CAP * Kc : ws->cap_ws;
    const int step = B > BSEL_SAMPLE_ROWS ? B / BSEL_SAMPLE_ROWS : 1;
    const int rows = (B + step - 1) / step;
    /* the sample's share of BSEL_MARGIN * K, rounded up (the count reached is an integer) */
    const long long want = (BSEL_MARGIN * Kc * rows + B - 1) / B;
    SF_CHECK(want >= 1 && want < (1ll << 32));
    const sel_devinfo di = sel_device_info();
    const bool vrow = n % 4 == 0 && sel_aligned16(pre);
    int sblocks = rows < di.sms * 4 ? rows : di.sms * 4;
    int cblocks = ws->nt < di.sms * 8 ? ws->nt : di.sms * 8;
    long long rthreads = (long long)ws->nt * 32 > B + 1 ? (long long)ws->nt * 32 : B + 1;
    long long rblocks = (rthreads + BSEL_THREADS - 1) / BSEL_THREADS;
    if (rblocks > (long long)di.sms * 8)
        rblocks = (long long)di.sms * 8;

    for (int fine = 0; fine < 2; fine++)
        SF_LAUNCH(bsel_sample_kernel, sblocks, BSEL_THREADS, 0, stream, pre, n, (int)vrow, step,
                  rows, (const bsel_state *)ws->st, ws->hist, fine, (unsigned)want);
    SF_LAUNCH(bsel_bound_kernel, 1, BSEL_SCAN_THREADS, 0, stream, ws->hist, ws->st,
              (unsigned)want);
    SF_LAUNCH(bsel_cand_kernel, cblocks, BSEL_THREADS, 0, stream, pre, N,
              (int)sel_aligned16(pre), ws->st, ws->nt, (unsigned)cap, ws->tile_base,
              ws->tile_off, ws->cand_a);
    SF_LAUNCH(bsel_decide_kernel, 1, BSEL_SCAN_THREADS, 0, stream, ws->st, ws->nt, (unsigned)Kc,
              (unsigned)cap, ws->tile_off);
    SF_LAUNCH(bsel_reorder_kernel, (int)rblocks, BSEL_THREADS, 0, stream, pre, B, n, ws->nt,
              (const bsel_state *)ws->st, (const unsigned *)ws->tile_base,
              (const unsigned *)ws->tile_off, (const int *)ws->cand_a, ws->cflat, ws->cval,
              ws->crow);
}
