/* Batch-wide selection on the device (CUDA twins of select_batch_cpu's two paths).
 *
 * Fast path (bselect_1pass.cu): a bound sampled from every (B/256)-th row, one pass over pre that
 * gathers the keys above it (about 2K), in flat order. Then, over the candidates when the fast
 * path held, over all B*n keys of pre otherwise (the reference: the multi-pass radix select):
 * a radix select over the keys (bit patterns) of the values relu(pre) > 0: for each digit
 * (11 + 10 + 10 bits) many blocks build shared-memory histograms of the keys that still match the
 * chosen prefix and merge them into one global histogram with atomics; a one-block kernel scans
 * it, picks the digit holding the K-th largest key and updates the selection state in device
 * memory (later kernels read it, so the host never syncs). Then: per-row counts of keys above
 * the threshold and equal to it, a one-block scan over the rows (equal keys are kept in
 * flat-index order: row b keeps those whose rank, counting the equal keys of rows < b first, is
 * below `need`), and a per-row compaction in ascending latent order. Every kernel reads
 * st->path and does the work of the path taken; the others return at once. */
#include "bselect_impl.cuh"

#include "sf_check.h"

extern "C" size_t bselect_workspace_bytes(int B, int n)
{
    return bsel_ws_layout(NULL, B, n).bytes;
}

extern "C" int bselect_path_debug(const void *workspace)
{
    bsel_state st;
    CUDA_CHECK(cudaMemcpy(&st, workspace, sizeof st, cudaMemcpyDeviceToHost));
    return (int)st.path;
}

/* try: the fast path is attempted (its front decides; until then path is BSEL_PATH_TRY). */
static __global__ void bsel_init_kernel(bsel_state *st, unsigned *hist, unsigned K, int try_fast)
{
    if (threadIdx.x == 0) {
        st->kk = K;
        st->prefix = 0;
        st->lo = K ? 1u : 0xffffffffu; /* K == 0 keeps nothing */
        st->teq = 0;
        st->need = 0;
        st->done = K ? 0u : 1u;
        st->minkey = 0xffffffffu;
        st->path = try_fast ? BSEL_PATH_TRY : (unsigned)BSEL_PATH_REF;
        st->bound = 0;
        st->ncand = 0;
    }
    for (int i = threadIdx.x; i < BSEL_HIST_BINS; i += blockDim.x)
        hist[i] = 0;
}

static __device__ inline void bsel_hist_add(unsigned *hist, float x, int p, unsigned prefix)
{
    const int shift = sel_shift(p), hs = shift + sel_width(p);
    const unsigned key = __float_as_uint(sel_relu(x));
    if (key && (key >> hs) == (prefix >> hs))
        atomicAdd(&hist[(key >> shift) & ((1u << sel_width(p)) - 1u)], 1u);
}

/* Histogram of digit p of the keys matching the current prefix, over the flat array: pre (N
 * values, float4 loads when vec), or the st->ncand candidate values on the fast path. */
static __global__ void bsel_hist_kernel(const float *pre, long long N, int vec, const float *cval,
                                        const bsel_state *st, unsigned *ghist, int p)
{
    __shared__ unsigned hist[SEL_BINS];
    if (st->done)
        return; /* the same for every thread of the grid */
    const bool fast = st->path == BSEL_PATH_FAST;
    const float *src = fast ? cval : pre;
    const long long cnt = fast ? (long long)st->ncand : N;
    const unsigned prefix = st->prefix;
    for (int i = threadIdx.x; i < SEL_BINS; i += blockDim.x)
        hist[i] = 0;
    __syncthreads();
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long n4 = fast || vec ? cnt / 4 : 0; /* the candidates are 16-byte aligned */
    const float4 *p4 = (const float4 *)src;
    for (long long q = t0; q < n4; q += stride) {
        const float4 v = p4[q];
        bsel_hist_add(hist, v.x, p, prefix);
        bsel_hist_add(hist, v.y, p, prefix);
        bsel_hist_add(hist, v.z, p, prefix);
        bsel_hist_add(hist, v.w, p, prefix);
    }
    for (long long q = 4 * n4 + t0; q < cnt; q += stride)
        bsel_hist_add(hist, src[q], p, prefix);
    __syncthreads();
    for (int i = threadIdx.x; i < SEL_BINS; i += blockDim.x)
        if (hist[i])
            atomicAdd(&ghist[i], hist[i]);
}

/* One block: pick digit p, update the state, clear the histogram for the next pass. */
static __global__ void bsel_pick_kernel(unsigned *ghist, bsel_state *st, int p)
{
    __shared__ unsigned ws[32];
    __shared__ unsigned sh[4];
    if (st->done)
        return; /* read by every thread before thread 0 can change it (barriers in between) */
    const unsigned kk0 = st->kk;
    const int shift = sel_shift(p);
    sel_pick(ghist, 1 << sel_width(p), kk0, ws, sh);
    if (threadIdx.x == 0) {
        if (p == 0 && sh[2] <= kk0) { /* at most K positive values: keep them all */
            st->lo = 1;
            st->done = 1;
        } else {
            const unsigned kk = kk0 - sh[1];
            const unsigned prefix = st->prefix | (sh[0] << shift);
            st->kk = kk;
            st->prefix = prefix;
            if (sh[3] == kk) { /* the whole bucket is kept */
                st->lo = prefix;
                st->done = 1;
            } else if (p == 2) {
                st->lo = prefix + 1;
                st->teq = prefix;
                st->need = kk;
                st->done = 1;
            }
        }
    }
    for (int i = threadIdx.x; i < SEL_BINS; i += blockDim.x)
        ghist[i] = 0; /* every read of ghist finished before sel_pick's last barrier */
}

/* Per row: keys >= lo, keys == teq, and the smallest key >= lo (into st->minkey); over the row's
 * candidates [crow[b], crow[b+1]) on the fast path. */
static __global__ void bsel_count_kernel(const float *pre, int n, int vec, bsel_state *st,
                                         const int *crow, const float *cval, unsigned *row_gt,
                                         unsigned *row_eq)
{
    __shared__ unsigned ws[32];
    __shared__ unsigned smin;
    const unsigned lo = st->lo, teq = st->teq, need = st->need;
    if (threadIdx.x == 0)
        smin = 0xffffffffu;
    unsigned g = 0, e = 0, mn = 0xffffffffu;
    if (st->path == BSEL_PATH_FAST) {
        const int c1 = crow[blockIdx.x + 1];
        for (int j = crow[blockIdx.x] + (int)threadIdx.x; j < c1; j += blockDim.x) {
            const unsigned key = __float_as_uint(cval[j]); /* != 0 */
            if (key >= lo) {
                g++;
                mn = key < mn ? key : mn;
            }
            e += (need != 0 && key == teq);
        }
    } else {
        const float *prow = pre + (size_t)blockIdx.x * n;
        for (int i = 4 * threadIdx.x; i < n; i += 4 * blockDim.x) {
            float s[4];
            sel_load4(prow, NULL, 0.0f, NULL, n, i, vec != 0, s);
            for (int j = 0; j < 4; j++) {
                const unsigned key = __float_as_uint(s[j]);
                if (key != 0 && key >= lo) {
                    g++;
                    mn = key < mn ? key : mn;
                }
                e += (need != 0 && key == teq);
            }
        }
    }
    __syncthreads();
    if (mn != 0xffffffffu)
        atomicMin(&smin, mn);
    unsigned G, E;
    sel_block_scan(g, ws, &G);
    sel_block_scan(e, ws, &E);
    if (threadIdx.x == 0) {
        row_gt[blockIdx.x] = G;
        row_eq[blockIdx.x] = E;
        if (smin != 0xffffffffu)
            atomicMin(&st->minkey, smin);
    }
}

/* One block over the B rows (each thread a contiguous run): eq counts -> equal keys of earlier
 * rows (in place), row counts -> row_ptr, min_kept, padding of lat/val. */
static __global__ void bsel_scan_kernel(const bsel_state *st, int B, const unsigned *row_gt,
                                        unsigned *row_eq, int *row_ptr, int *lat, float *val,
                                        long long K, float *min_kept)
{
    __shared__ unsigned ws[32];
    const unsigned need = st->need;
    const int per = (B + (int)blockDim.x - 1) / (int)blockDim.x;
    const int r0 = (int)threadIdx.x * per;
    const int r1 = r0 + per < B ? r0 + per : B;
    unsigned e = 0;
    for (int r = r0; r < r1; r++)
        e += row_eq[r];
    unsigned tot;
    unsigned eb = sel_block_scan(e, ws, &tot);
    unsigned c = 0;
    for (int r = r0; r < r1; r++) {
        const unsigned er = row_eq[r];
        const unsigned keq = need > eb ? (need - eb < er ? need - eb : er) : 0u;
        row_eq[r] = eb;
        eb += er;
        const unsigned cnt = row_gt[r] + keq;
        row_ptr[r] = (int)cnt;
        c += cnt;
    }
    const unsigned total = sel_block_offsets(row_ptr, r0, r1, c, ws);
    if (threadIdx.x == 0) {
        row_ptr[B] = (int)total;
        *min_kept = total == 0 ? 0.0f : __uint_as_float(need ? st->teq : st->minkey);
    }
    for (long long q = (long long)total + threadIdx.x; q < K; q += blockDim.x) {
        lat[q] = -1;
        val[q] = 0.0f;
    }
}

/* Per row: write the kept entries in ascending latent order at row_ptr[b] (from the row's
 * candidates, which are in flat order, on the fast path). */
static __global__ void bsel_compact_kernel(const float *pre, int n, int vec, const bsel_state *st,
                                           const int *crow, const int *cflat, const float *cval,
                                           const int *row_ptr, const unsigned *eq_before,
                                           int *lat, float *val)
{
    __shared__ unsigned ws[32];
    const int b = blockIdx.x;
    const int start = row_ptr[b], cnt = row_ptr[b + 1] - start;
    if (cnt == 0)
        return;
    const unsigned lo = st->lo, teq = st->teq, need = st->need;
    const unsigned eb = eq_before[b];
    const unsigned keq0 = eb < need ? eb : need; /* equal keys kept by earlier rows */
    if (st->path == BSEL_PATH_FAST) {
        const int c0 = crow[b], c1 = crow[b + 1];
        unsigned run_gt = 0, run_eq = eb;
        for (int base = c0; base < c1; base += blockDim.x) {
            const int j = base + (int)threadIdx.x;
            const unsigned key = j < c1 ? __float_as_uint(cval[j]) : 0u;
            const unsigned g = key != 0 && key >= lo, e = need != 0 && key == teq;
            unsigned total;
            const unsigned ex = sel_block_scan((g << 16) | e, ws, &total);
            const unsigned eq_rank = run_eq + (ex & 0xffffu);
            if (g || (e && eq_rank < need)) {
                const unsigned pos = (unsigned)start + run_gt + (ex >> 16) +
                                     (eq_rank < need ? eq_rank : need) - keq0;
                lat[pos] = cflat[j] - b * n;
                val[pos] = cval[j];
            }
            run_gt += total >> 16;
            run_eq += total & 0xffffu;
        }
        return;
    }
    const float *prow = pre + (size_t)b * n;
    const int tile = 4 * (int)blockDim.x;
    unsigned run_gt = 0, run_eq = eb;
    for (int base = 0; base < n; base += tile) {
        const int i = base + 4 * (int)threadIdx.x;
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (i < n)
            sel_load4(prow, NULL, 0.0f, NULL, n, i, vec != 0, s);
        unsigned g = 0, e = 0;
        for (int j = 0; j < 4; j++) {
            const unsigned key = __float_as_uint(s[j]);
            g += (key != 0 && key >= lo);
            e += (need != 0 && key == teq);
        }
        unsigned total;
        const unsigned ex = sel_block_scan((g << 16) | e, ws, &total);
        unsigned eq_rank = run_eq + (ex & 0xffffu);
        unsigned pos = (unsigned)start + run_gt + (ex >> 16) + (eq_rank < need ? eq_rank : need) - keq0;
        for (int j = 0; j < 4; j++) {
            const unsigned key = __float_as_uint(s[j]);
            bool keep = key != 0 && key >= lo;
            if (!keep && need != 0 && key == teq) {
                keep = eq_rank < need;
                eq_rank++;
            }
            if (keep) {
                lat[pos] = i + j;
                val[pos] = s[j];
                pos++;
            }
        }
        run_gt += total >> 16;
        run_eq += total & 0xffffu;
        if (run_gt + (run_eq < need ? run_eq : need) - keq0 >= (unsigned)cnt)
            break; /* uniform: the row is complete */
    }
}

/* The rule in the state applied: count, scan, compaction; padding up to `slots`. */
static void bsel_finish(const float *pre, int B, int n, long long slots, const bsel_ws *L,
                        int *row_ptr, int *lat, float *val, float *min_kept, cudaStream_t stream)
{
    const bool vrow = n % 4 == 0 && sel_aligned16(pre);
    SF_LAUNCH(bsel_count_kernel, B, BSEL_THREADS, 0, stream, pre, n, (int)vrow, L->st,
              (const int *)L->crow, (const float *)L->cval, L->row_gt, L->row_eq);
    SF_LAUNCH(bsel_scan_kernel, 1, BSEL_SCAN_THREADS, 0, stream, (const bsel_state *)L->st, B,
              (const unsigned *)L->row_gt, L->row_eq, row_ptr, lat, val, slots, min_kept);
    SF_LAUNCH(bsel_compact_kernel, B, BSEL_THREADS, 0, stream, pre, n, (int)vrow,
              (const bsel_state *)L->st, (const int *)L->crow, (const int *)L->cflat,
              (const float *)L->cval, (const int *)row_ptr, (const unsigned *)L->row_eq, lat,
              val);
}

extern "C" void bselect_cuda(const float *pre, int B, int n, int64_t K, int *row_ptr, int *lat,
                             float *val, float *min_kept, void *workspace, cudaStream_t stream)
{
    SF_CHECK(B >= 0 && n >= 0 && K >= 0);
    SF_CHECK((long long)B * n < (1ll << 31));
    SF_CHECK(workspace != NULL && sel_aligned16(workspace));
    if (B == 0) {
        CUDA_CHECK(cudaMemsetAsync(row_ptr, 0, sizeof(int), stream));
        CUDA_CHECK(cudaMemsetAsync(min_kept, 0, sizeof(float), stream));
        return;
    }
    const long long N = (long long)B * n;
    const long long Kc = K < N ? K : N;
    const bsel_ws L = bsel_ws_layout(workspace, B, n);
    /* the capacity follows (B, n): a K it cannot hold goes straight to the reference */
    const bool try_fast = Kc > 0 && Kc <= L.cap_ws;

    const bool vflat = sel_aligned16(pre);
    const sel_devinfo di = sel_device_info();
    long long blocks = (N + BSEL_THREADS * 16 - 1) / (BSEL_THREADS * 16);
    if (blocks > (long long)di.sms * 8)
        blocks = (long long)di.sms * 8;
    if (blocks < 1)
        blocks = 1;

    SF_LAUNCH(bsel_init_kernel, 1, 256, 0, stream, L.st, L.hist, (unsigned)Kc, (int)try_fast);
    if (try_fast)
        bsel_1pass_front(pre, B, n, Kc, &L, stream);
    for (int p = 0; p < 3; p++) {
        SF_LAUNCH(bsel_hist_kernel, (int)blocks, BSEL_THREADS, 0, stream, pre, N, (int)vflat,
                  (const float *)L.cval, (const bsel_state *)L.st, L.hist, p);
        SF_LAUNCH(bsel_pick_kernel, 1, BSEL_SCAN_THREADS, 0, stream, L.hist, L.st, p);
    }
    bsel_finish(pre, B, n, K, &L, row_ptr, lat, val, min_kept, stream);
}

/* A keep rule chosen by the caller (the data-parallel selection finds it over every rank). */
static __global__ void bsel_rule_kernel(bsel_state *st, unsigned lo, unsigned teq, unsigned need)
{
    st->kk = 0;
    st->prefix = 0;
    st->lo = lo;
    st->teq = teq;
    st->need = need;
    st->done = 1;
    st->minkey = 0xffffffffu;
    st->path = BSEL_PATH_REF;
    st->bound = 0;
    st->ncand = 0;
}

extern "C" void bselect_rule_cuda(const float *pre, int B, int n, unsigned lo, unsigned teq,
                                  unsigned need, int64_t slots, int *row_ptr, int *lat, float *val,
                                  float *min_kept, void *workspace, cudaStream_t stream)
{
    SF_CHECK(B >= 0 && n >= 0 && slots >= 0);
    SF_CHECK((long long)B * n < (1ll << 31));
    SF_CHECK(workspace != NULL && sel_aligned16(workspace));
    if (B == 0) {
        CUDA_CHECK(cudaMemsetAsync(row_ptr, 0, sizeof(int), stream));
        CUDA_CHECK(cudaMemsetAsync(min_kept, 0, sizeof(float), stream));
        return;
    }
    const bsel_ws L = bsel_ws_layout(workspace, B, n);
    SF_LAUNCH(bsel_rule_kernel, 1, 1, 0, stream, L.st, lo, teq, need);
    bsel_finish(pre, B, n, slots, &L, row_ptr, lat, val, min_kept, stream);
}
