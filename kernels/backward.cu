/* Sparse backward (CUDA twin of backward_cpu). Steps:
 *   1. flatten: every slot of every group gets (key = latent or n for padding, ref = flat slot)
 *      and its token (binary search in row_ptr);
 *   2. stable LSD radix sort of (key, ref) by key, 8 bits a pass: per-tile digit histograms,
 *      one-block exclusive scan in (digit, tile) order, per-tile scatter where thread t moves
 *      the tile's elements of digit t in order (stable, no atomics);
 *   3. segment the sorted keys: touched rows (ascending), slot map, [seg_start, seg_end);
 *   4. per sorted entry: dpre = dY_band[b] . W_dec[i] (one warp each);
 *   5. one block per touched latent: dW_dec, dW_enc rows and db_enc summed in sorted order;
 *   6. db_dec = column sums of dY[0] (bias groups) - sum_r db_enc[rows[r]] W_enc[rows[r]],
 *      two-stage over fixed row chunks. */
#include <string.h>

#include "backward.cuh"
#include "devutil.cuh"
#include "sf_check.h"

#define RS_TILE 1024
#define RS_THREADS 256
#define SCAN_THREADS 1024
#define COL_CHUNK 64

typedef struct bwd_groups_arg {
    int n_groups;
    int off[SF_BWD_MAX_GROUPS + 1]; /* flat slot offsets */
    sae_bwd_group_cuda g[SF_BWD_MAX_GROUPS];
} bwd_groups_arg;

static int tiles_of(int count) { return (count + RS_TILE - 1) / RS_TILE; }

extern "C" void bwd_ws_alloc(sae_bwd_ws *ws, int n, int d, int max_B, int cap_entries)
{
    memset(ws, 0, sizeof *ws);
    ws->n = n;
    ws->d = d;
    ws->max_B = max_B;
    ws->cap_entries = cap_entries < 1 ? 1 : cap_entries;
    ws->cap_rows = n < ws->cap_entries ? n : ws->cap_entries;
    const size_t E = (size_t)ws->cap_entries;
    for (int i = 0; i < 2; i++) {
        CUDA_CHECK(cudaMalloc((void **)&ws->keys[i], E * sizeof(int)));
        CUDA_CHECK(cudaMalloc((void **)&ws->refs[i], E * sizeof(int)));
    }
    CUDA_CHECK(cudaMalloc((void **)&ws->tok, E * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&ws->hist, (size_t)256 * tiles_of((int)E) * sizeof(int) + sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&ws->flags, E * sizeof(int)));
    size_t scan_n = E + 1;
    if (scan_n < (size_t)256 * tiles_of((int)E) + 1)
        scan_n = (size_t)256 * tiles_of((int)E) + 1;
    CUDA_CHECK(cudaMalloc((void **)&ws->scan, scan_n * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&ws->ent_tok, E * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&ws->ent_gb, E * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&ws->ent_val, E * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&ws->dpre, E * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&ws->seg_start, (size_t)ws->cap_rows * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&ws->seg_end, (size_t)ws->cap_rows * sizeof(int)));
    /* row chunks of the db_dec column sums: the dY parts of up to SF_BWD_MAX_GROUPS bias groups
     * over max_B tokens, then the W_enc part over cap_rows rows */
    ws->col_chunks = SF_BWD_MAX_GROUPS * ((max_B + COL_CHUNK - 1) / COL_CHUNK) +
                     (ws->cap_rows + COL_CHUNK - 1) / COL_CHUNK;
    CUDA_CHECK(cudaMalloc((void **)&ws->colpart, (size_t)ws->col_chunks * d * sizeof(double)));
    ws->key = ws->keys[0];
    ws->ref = ws->refs[0];
}

extern "C" void bwd_ws_free(sae_bwd_ws *ws)
{
    for (int i = 0; i < 2; i++) {
        cudaFree(ws->keys[i]);
        cudaFree(ws->refs[i]);
    }
    cudaFree(ws->tok);
    cudaFree(ws->hist);
    cudaFree(ws->flags);
    cudaFree(ws->scan);
    cudaFree(ws->ent_tok);
    cudaFree(ws->ent_gb);
    cudaFree(ws->ent_val);
    cudaFree(ws->dpre);
    cudaFree(ws->seg_start);
    cudaFree(ws->seg_end);
    cudaFree(ws->colpart);
    memset(ws, 0, sizeof *ws);
}

extern "C" void grads_cuda_alloc(sae_grads_cuda *g, int n, int d, int cap_rows)
{
    memset(g, 0, sizeof *g);
    g->cap_rows = cap_rows < 1 ? 1 : cap_rows;
    CUDA_CHECK(cudaMalloc((void **)&g->n_rows, sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&g->rows, (size_t)g->cap_rows * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&g->slot, (size_t)n * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&g->dW_enc, (size_t)g->cap_rows * d * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&g->dW_dec, (size_t)g->cap_rows * d * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&g->db_enc, (size_t)n * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&g->db_dec, (size_t)d * sizeof(float)));
    CUDA_CHECK(cudaMemset(g->n_rows, 0, sizeof(int)));
}

extern "C" void grads_cuda_free(sae_grads_cuda *g)
{
    cudaFree(g->n_rows);
    cudaFree(g->rows);
    cudaFree(g->slot);
    cudaFree(g->dW_enc);
    cudaFree(g->dW_dec);
    cudaFree(g->db_enc);
    cudaFree(g->db_dec);
    memset(g, 0, sizeof *g);
}

/* ---- 1. flatten ------------------------------------------------------------------------ */
static __global__ void flatten_kernel(bwd_groups_arg ga, int B, int n, int *key, int *ref,
                                      int *tok)
{
    const int total = ga.off[ga.n_groups];
    const int stride = gridDim.x * blockDim.x;
    for (int f = blockIdx.x * blockDim.x + threadIdx.x; f < total; f += stride) {
        int g = 0;
        while (f >= ga.off[g + 1])
            g++;
        const int p = f - ga.off[g];
        const int *rp = ga.g[g].row_ptr;
        int lat = n, b = 0;
        if (p < rp[B]) {
            /* largest b with rp[b] <= p (b < B, rows may be empty) */
            int lo = 0, hi = B - 1;
            while (lo < hi) {
                const int mid = (lo + hi + 1) / 2;
                if (rp[mid] <= p)
                    lo = mid;
                else
                    hi = mid - 1;
            }
            b = lo;
            const int l = ga.g[g].lat[p];
            if (l >= 0 && l < n)
                lat = l;
        }
        key[f] = lat;
        ref[f] = f;
        tok[f] = b;
    }
}

/* ---- 2. radix sort ---------------------------------------------------------------------- */
static __global__ void rs_hist_kernel(const int *key, int count, int shift, int tiles, int *hist)
{
    __shared__ int cnt[256];
    cnt[threadIdx.x] = 0;
    __syncthreads();
    const int base = blockIdx.x * RS_TILE;
    for (int j = threadIdx.x; j < RS_TILE; j += RS_THREADS) {
        const int e = base + j;
        if (e < count)
            atomicAdd(&cnt[(key[e] >> shift) & 255], 1);
    }
    __syncthreads();
    hist[threadIdx.x * tiles + blockIdx.x] = cnt[threadIdx.x];
}

/* One block: out[i] = sum in[0..i), out[count] = total. Each thread scans a contiguous chunk. */
static __global__ void scan_excl_kernel(const int *in, int count, int *out)
{
    __shared__ int part[SCAN_THREADS];
    const int t = threadIdx.x;
    const int chunk = (count + SCAN_THREADS - 1) / SCAN_THREADS;
    const int lo = t * chunk < count ? t * chunk : count;
    const int hi = lo + chunk < count ? lo + chunk : count;
    int s = 0;
    for (int i = lo; i < hi; i++)
        s += in[i];
    part[t] = s;
    __syncthreads();
    if (t == 0) {
        int run = 0;
        for (int i = 0; i < SCAN_THREADS; i++) {
            const int v = part[i];
            part[i] = run;
            run += v;
        }
        out[count] = run;
    }
    __syncthreads();
    int run = part[t];
    for (int i = lo; i < hi; i++) {
        const int v = in[i];
        out[i] = run;
        run += v;
    }
}

static __global__ void rs_scatter_kernel(const int *key_in, const int *ref_in, int count,
                                         int shift, int tiles, const int *offs, int *key_out,
                                         int *ref_out)
{
    __shared__ int sk[RS_TILE];
    __shared__ int sr[RS_TILE];
    const int base = blockIdx.x * RS_TILE;
    const int m = count - base < RS_TILE ? count - base : RS_TILE;
    for (int j = threadIdx.x; j < m; j += RS_THREADS) {
        sk[j] = key_in[base + j];
        sr[j] = ref_in[base + j];
    }
    __syncthreads();
    const int digit = threadIdx.x;
    int pos = offs[digit * tiles + blockIdx.x];
    for (int j = 0; j < m; j++) {
        const int k = sk[j];
        if (((k >> shift) & 255) == digit) {
            key_out[pos] = k;
            ref_out[pos] = sr[j];
            pos++;
        }
    }
}

/* ---- 3. segments -------------------------------------------------------------------------- */
static __global__ void seg_flags_kernel(const int *key, int count, int n, int *flags)
{
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= count)
        return;
    const int k = key[s];
    flags[s] = (k < n && (s == 0 || key[s - 1] != k)) ? 1 : 0;
}

static __global__ void seg_write_kernel(const int *key, const int *flags, const int *scan,
                                        int count, int n, int *rows, int *slot, int *seg_start,
                                        int *seg_end, int *n_rows)
{
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s == 0)
        *n_rows = scan[count];
    if (s >= count)
        return;
    const int k = key[s];
    if (k >= n)
        return;
    const int idx = scan[s] + flags[s] - 1; /* row of the segment holding s */
    if (flags[s]) {
        rows[idx] = k;
        slot[k] = idx;
        seg_start[idx] = s;
    }
    if (s + 1 == count || key[s + 1] != k)
        seg_end[idx] = s + 1;
}

/* ---- 4. per-entry upstream gradient -------------------------------------------------------- */
static __global__ void entry_kernel(bwd_groups_arg ga, const int *key, const int *ref,
                                    const int *tok, int count, int B, int d, int n,
                                    const float *W_dec, int *ent_tok, int *ent_gb,
                                    float *ent_val, float *dpre)
{
    const int warps = blockDim.x / 32;
    const int s = blockIdx.x * warps + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (s >= count) /* whole warps leave together: s is uniform in the warp */
        return;
    const int i = key[s];
    if (i >= n)
        return;
    const int f = ref[s];
    int g = 0;
    while (f >= ga.off[g + 1])
        g++;
    const int p = f - ga.off[g];
    const int b = tok[f];
    int j = 0;
    while (j < ga.g[g].n_bands - 1 && i >= ga.g[g].bounds[j])
        j++;
    const float *dy = ga.g[g].dY + ((size_t)j * B + b) * d;
    const float *w = W_dec + (size_t)i * d;
    float acc = 0.0f;
    for (int c = lane; c < d; c += 32)
        acc += dy[c] * w[c];
    acc = sf_warp_sum(acc);
    if (lane == 0) {
        ent_tok[s] = b;
        ent_gb[s] = g * SAE_MAX_PREFIXES + j;
        ent_val[s] = ga.g[g].val[p];
        dpre[s] = acc;
    }
}

/* ---- 5. gradient rows ---------------------------------------------------------------------- */
static __global__ void rows_kernel(bwd_groups_arg ga, const int *n_rows, const int *rows,
                                   const int *seg_start, const int *seg_end, const int *ent_tok,
                                   const int *ent_gb, const float *ent_val, const float *dpre,
                                   const float *u, int B, int d, float *dW_enc, float *dW_dec,
                                   float *db_enc)
{
    const int r = blockIdx.x;
    if (r >= *n_rows) /* uniform over the block */
        return;
    const int s0 = seg_start[r], s1 = seg_end[r];
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float ae = 0.0f, ad = 0.0f;
        for (int s = s0; s < s1; s++) {
            const int b = ent_tok[s];
            const int gb = ent_gb[s];
            const int g = gb / SAE_MAX_PREFIXES, j = gb % SAE_MAX_PREFIXES;
            const float dy = ga.g[g].dY[((size_t)j * B + b) * d + c];
            ad = sf_fadd(ad, sf_fmul(ent_val[s], dy));
            ae = sf_fadd(ae, sf_fmul(dpre[s], u[(size_t)b * d + c]));
        }
        dW_enc[(size_t)r * d + c] = ae;
        dW_dec[(size_t)r * d + c] = ad;
    }
    if (threadIdx.x == 0) {
        double db = 0.0;
        for (int s = s0; s < s1; s++)
            db += dpre[s];
        db_enc[rows[r]] = (float)db;
    }
}

/* ---- 6. db_dec ------------------------------------------------------------------------------ */
/* part[chunk][c] = sum over rows b of the chunk of dY[b][c] */
static __global__ void colsum_dy_kernel(const float *dY, int B, int d, double *part)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    const int chunk = blockIdx.y;
    if (c >= d)
        return;
    double acc = 0.0;
    const int b1 = (chunk + 1) * COL_CHUNK < B ? (chunk + 1) * COL_CHUNK : B;
    for (int b = chunk * COL_CHUNK; b < b1; b++)
        acc += dY[(size_t)b * d + c];
    part[(size_t)chunk * d + c] = acc;
}

/* part[chunk][c] = sum over touched rows r of the chunk of db_enc[i] W_enc[i][c], i = rows[r] */
static __global__ void colsum_wenc_kernel(const int *n_rows, const int *rows, const float *db_enc,
                                          const float *W_enc, int d, double *part)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    const int chunk = blockIdx.y;
    if (c >= d)
        return;
    const int nr = *n_rows;
    const int r1 = (chunk + 1) * COL_CHUNK < nr ? (chunk + 1) * COL_CHUNK : nr;
    double acc = 0.0;
    for (int r = chunk * COL_CHUNK; r < r1; r++) {
        const int i = rows[r];
        acc += (double)db_enc[i] * (double)W_enc[(size_t)i * d + c];
    }
    part[(size_t)chunk * d + c] = acc;
}

static __global__ void db_dec_kernel(const double *part, int chunks_dy, int chunks_w, int d,
                                     float *db_dec)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d)
        return;
    double a = 0.0, w = 0.0;
    for (int q = 0; q < chunks_dy; q++)
        a += part[(size_t)q * d + c];
    for (int q = 0; q < chunks_w; q++)
        w += part[(size_t)(chunks_dy + q) * d + c];
    db_dec[c] = (float)(a - w);
}

static bwd_groups_arg make_arg(const sae_bwd_group_cuda *groups, int n_groups)
{
    bwd_groups_arg ga;
    memset(&ga, 0, sizeof ga);
    SF_CHECK(n_groups >= 0 && n_groups <= SF_BWD_MAX_GROUPS);
    ga.n_groups = n_groups;
    ga.off[0] = 0;
    for (int g = 0; g < n_groups; g++) {
        ga.g[g] = groups[g];
        ga.off[g + 1] = ga.off[g] + groups[g].cap;
    }
    return ga;
}

extern "C" void bwd_sort_cuda(sae_bwd_ws *ws, const sae_bwd_group_cuda *groups, int n_groups,
                              int B, int n, sae_grads_cuda *out, cudaStream_t stream)
{
    const bwd_groups_arg ga = make_arg(groups, n_groups);
    const int E = ga.off[n_groups];
    if (E > ws->cap_entries || B > ws->max_B || n != ws->n) {
        fprintf(stderr, "saeforge: internal error: backward workspace too small (%d > %d entries)\n",
                E, ws->cap_entries);
        abort();
    }
    CUDA_CHECK(cudaMemsetAsync(out->slot, 0xff, (size_t)n * sizeof(int), stream));
    if (E == 0) {
        CUDA_CHECK(cudaMemsetAsync(out->n_rows, 0, sizeof(int), stream));
        return;
    }
    int blocks = (E + 255) / 256;
    if (blocks > 4096)
        blocks = 4096;
    SF_LAUNCH(flatten_kernel, blocks, 256, 0, stream, ga, B, n, ws->keys[0], ws->refs[0], ws->tok);

    int bits = 0;
    while ((1LL << bits) <= (long long)n) /* keys are in [0, n] */
        bits++;
    const int tiles = tiles_of(E);
    int cur = 0;
    for (int shift = 0; shift < bits; shift += 8) {
        SF_LAUNCH(rs_hist_kernel, tiles, RS_THREADS, 0, stream, (const int *)ws->keys[cur], E,
                  shift, tiles, ws->hist);
        SF_LAUNCH(scan_excl_kernel, 1, SCAN_THREADS, 0, stream, (const int *)ws->hist,
                  256 * tiles, ws->scan);
        SF_LAUNCH(rs_scatter_kernel, tiles, RS_THREADS, 0, stream, (const int *)ws->keys[cur],
                  (const int *)ws->refs[cur], E, shift, tiles, (const int *)ws->scan,
                  ws->keys[1 - cur], ws->refs[1 - cur]);
        cur = 1 - cur;
    }
    ws->key = ws->keys[cur];
    ws->ref = ws->refs[cur];

    SF_LAUNCH(seg_flags_kernel, (E + 255) / 256, 256, 0, stream, (const int *)ws->key, E, n,
              ws->flags);
    SF_LAUNCH(scan_excl_kernel, 1, SCAN_THREADS, 0, stream, (const int *)ws->flags, E, ws->scan);
    SF_LAUNCH(seg_write_kernel, (E + 255) / 256, 256, 0, stream, (const int *)ws->key,
              (const int *)ws->flags, (const int *)ws->scan, E, n, out->rows, out->slot,
              ws->seg_start, ws->seg_end, out->n_rows);
}

extern "C" void backward_cuda(sae_bwd_ws *ws, const float *u, const sae_params *p, int B, int d,
                              int n, const sae_bwd_group_cuda *groups, int n_groups,
                              sae_grads_cuda *out, cudaStream_t stream)
{
    const bwd_groups_arg ga = make_arg(groups, n_groups);
    const int E = ga.off[n_groups];
    SF_CHECK((n < E ? n : E) <= out->cap_rows);
    bwd_sort_cuda(ws, groups, n_groups, B, n, out, stream);
    CUDA_CHECK(cudaMemsetAsync(out->db_enc, 0, (size_t)n * sizeof(float), stream));
    if (E > 0) {
        SF_LAUNCH(entry_kernel, (E + 7) / 8, 256, 0, stream, ga, (const int *)ws->key,
                  (const int *)ws->ref, (const int *)ws->tok, E, B, d, n,
                  (const float *)p->W_dec, ws->ent_tok, ws->ent_gb, ws->ent_val, ws->dpre);
        const int threads = d < 128 ? ((d + 31) / 32) * 32 : 128;
        const int cap_rows = n < E ? n : E;
        SF_LAUNCH(rows_kernel, cap_rows, threads, 0, stream, ga, (const int *)out->n_rows,
                  (const int *)out->rows, (const int *)ws->seg_start, (const int *)ws->seg_end,
                  (const int *)ws->ent_tok, (const int *)ws->ent_gb, (const float *)ws->ent_val,
                  (const float *)ws->dpre, u, B, d, out->dW_enc, out->dW_dec, out->db_enc);
    }
    /* db_dec */
    const int chunks_b = (B + COL_CHUNK - 1) / COL_CHUNK;
    int chunks_dy = 0;
    const dim3 cb((d + 127) / 128);
    for (int g = 0; g < n_groups; g++) {
        if (!groups[g].has_bias)
            continue;
        SF_LAUNCH(colsum_dy_kernel, dim3(cb.x, chunks_b), 128, 0, stream, groups[g].dY, B, d,
                  ws->colpart + (size_t)chunks_dy * d);
        chunks_dy += chunks_b;
    }
    const int cap_rows = n < E ? n : E;
    const int chunks_w = E > 0 ? (cap_rows + COL_CHUNK - 1) / COL_CHUNK : 0;
    if (chunks_w > 0)
        SF_LAUNCH(colsum_wenc_kernel, dim3(cb.x, chunks_w), 128, 0, stream,
                  (const int *)out->n_rows, (const int *)out->rows, (const float *)out->db_enc,
                  (const float *)p->W_enc, d, ws->colpart + (size_t)chunks_dy * d);
    SF_LAUNCH(db_dec_kernel, cb.x, 128, 0, stream, (const double *)ws->colpart, chunks_dy,
              chunks_w, d, out->db_dec);
}
