/* The CUDA backend's data-parallel kernels against their CPU twins, in one process (no NCCL):
 * the centring halves, the dense-gradient scatter, the since_fired fix-up, the selection's
 * device histograms, and the keep rule that the host-side steps of bselect_dist.h choose, which
 * must reproduce select_batch_dist_cpu exactly. The multi-rank runs are tests/dist (mpirun).
 * Built against the emulator (make test) and real CUDA (make test-gpu). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backward.cuh"
#include "kernels/backward.h"
#include "kernels/bselect.cuh"
#include "kernels/bselect_dist.cuh"
#include "kernels/bselect_dist.h"
#include "kernels/cuda_compat.h"
#include "kernels/dist_cpu.h"
#include "kernels/dist_cuda.cuh"
#include "kernels/loss.cuh"
#include "kernels/loss.h"

static uint64_t rs;
static void seed(uint64_t s) { rs = s * 0x9E3779B97F4A7C15ull + 4242; }
static uint32_t rnd(void)
{
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rs >> 33);
}
static float sym(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; }

static void *up(const void *h, size_t bytes)
{
    void *d;
    CUDA_CHECK(cudaMalloc(&d, bytes ? bytes : 1));
    if (h && bytes)
        CUDA_CHECK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    return d;
}
static void down(void *h, const void *d, size_t bytes)
{
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}

static void *loss_work(int B)
{
    void *w;
    CUDA_CHECK(cudaMalloc(&w, loss_cuda_work_bytes(B)));
    return w;
}

/* One rank "over" itself: the collectives are identities, so dist_grads_cpu is the scatter. */
static void id_f32(const sae_dist *dd, float *b, int64_t c) { (void)dd; (void)b; (void)c; }

static void check_center(int B, int d)
{
    float *x = malloc(sizeof(float) * (size_t)(B > 0 ? B : 1) * d);
    for (int e = 0; e < B * d; e++)
        x[e] = 3.0f * sym() + 0.5f;
    double *sum_c = malloc(sizeof(double) * d), *sum_g = malloc(sizeof(double) * d);
    float *mean_c = malloc(sizeof(float) * d), *mean_g = malloc(sizeof(float) * d);
    loss_colsum_cpu(x, B, d, sum_c);
    const int64_t rows = B + 7; /* as if other ranks held 7 more rows */
    for (int j = 0; j < d; j++)
        mean_c[j] = (float)(sum_c[j] / (double)rows);
    double den_c = loss_spread_cpu(x, B, d, mean_c);
    float *dx = up(x, sizeof(float) * (size_t)B * d), *dmean = up(NULL, sizeof(float) * d);
    double *dsum = up(NULL, sizeof(double) * d), *dden = up(NULL, sizeof(double)), den_g = -1.0;
    void *w = loss_work(B);
    loss_colsum_cuda(dx, B, d, dsum, 0);
    dist_mean_cuda(dsum, d, rows, dmean, 0);
    loss_spread_cuda(dx, B, d, dmean, dden, w, 0);
    down(sum_g, dsum, sizeof(double) * d);
    down(mean_g, dmean, sizeof(float) * d);
    down(&den_g, dden, sizeof(double));
    for (int j = 0; j < d; j++) {
        cr_assert_eq(sum_g[j], sum_c[j], "B %d: colsum[%d] %.17g vs %.17g", B, j, sum_g[j], sum_c[j]);
        cr_assert_eq(mean_g[j], mean_c[j], "B %d: mean[%d]", B, j);
    }
    cr_assert(fabs(den_g - den_c) <= 1e-12 * fabs(den_c), "B %d: den %.17g vs %.17g", B, den_g, den_c);
    if (B == 0)
        cr_assert_eq(den_g, 0.0);
    /* no rows anywhere: the mean is 0, as dist_center_cpu's */
    dist_mean_cuda(dsum, d, 0, dmean, 0);
    down(mean_g, dmean, sizeof(float) * d);
    for (int j = 0; j < d; j++)
        cr_assert_eq(mean_g[j], 0.0f);
    cudaFree(dx); cudaFree(dmean); cudaFree(dsum); cudaFree(dden); cudaFree(w);
    free(x); free(sum_c); free(sum_g); free(mean_c); free(mean_g);
}

Test(cuda_dist, center_halves)
{
    seed(1);
    check_center(37, 19);
    check_center(256, 64);
    check_center(0, 16);
}

/* A random row-sparse gradient and a padded main code, scattered on both sides. */
static void check_grads(int B, int k, int d, int n)
{
    sae_grads sp;
    memset(&sp, 0, sizeof sp);
    int *rows = malloc(sizeof(int) * n), *slot = malloc(sizeof(int) * n);
    int nr = 0;
    for (int i = 0; i < n; i++) {
        slot[i] = -1;
        if (rnd() % 3 == 0) {
            slot[i] = nr;
            rows[nr++] = i;
        }
    }
    float *dWe = malloc(sizeof(float) * (size_t)(nr ? nr : 1) * d);
    float *dWd = malloc(sizeof(float) * (size_t)(nr ? nr : 1) * d);
    float *dbe = malloc(sizeof(float) * n), *dbd = malloc(sizeof(float) * d);
    for (int e = 0; e < nr * d; e++) {
        dWe[e] = sym();
        dWd[e] = sym();
    }
    for (int i = 0; i < n; i++)
        dbe[i] = sym();
    for (int j = 0; j < d; j++)
        dbd[j] = sym();
    sp.n_rows = nr;
    sp.cap_rows = nr;
    sp.rows = rows;
    sp.slot = slot;
    sp.dW_enc = dWe;
    sp.dW_dec = dWd;
    sp.db_enc = dbe;
    sp.db_dec = dbd;
    int slots = B * k;
    int *row_ptr = malloc(sizeof(int) * (B + 1)), *lat = malloc(sizeof(int) * slots);
    for (int b = 0; b <= B; b++)
        row_ptr[b] = b * k;
    for (int s = 0; s < slots; s++)
        lat[s] = rnd() % 5 == 0 ? -1 : (int)(rnd() % (uint32_t)n); /* padding and repeats */
    int64_t F = dist_grad_floats(d, n);
    float *buf_c = malloc(sizeof(float) * F), *buf_g = malloc(sizeof(float) * F);
    int *ident = malloc(sizeof(int) * n);
    sae_dist one;
    memset(&one, 0, sizeof one);
    one.world = 1;
    one.sum_f32 = id_f32;
    sae_grads dense;
    dist_grads_cpu(&one, &sp, row_ptr, lat, B, d, n, buf_c, ident, &dense);

    sae_grads_cuda g;
    grads_cuda_alloc(&g, n, d, nr);
    CUDA_CHECK(cudaMemcpy(g.n_rows, &nr, sizeof(int), cudaMemcpyHostToDevice));
    if (nr) {
        CUDA_CHECK(cudaMemcpy(g.rows, rows, sizeof(int) * nr, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(g.dW_enc, dWe, sizeof(float) * nr * d, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(g.dW_dec, dWd, sizeof(float) * nr * d, cudaMemcpyHostToDevice));
    }
    CUDA_CHECK(cudaMemcpy(g.slot, slot, sizeof(int) * n, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(g.db_enc, dbe, sizeof(float) * n, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(g.db_dec, dbd, sizeof(float) * d, cudaMemcpyHostToDevice));
    int *dlat = up(lat, sizeof(int) * slots);
    float *dbuf = up(NULL, sizeof(float) * F);
    CUDA_CHECK(cudaMemset(dbuf, 0x7f, sizeof(float) * F)); /* the scatter must zero it */
    dist_grads_scatter_cuda(&g, dlat, slots, d, n, dbuf, 0);
    down(buf_g, dbuf, sizeof(float) * F);
    for (int64_t e = 0; e < F; e++)
        cr_assert_eq(buf_g[e], buf_c[e], "dense[%lld] %g vs %g (fired part from %lld)", (long long)e,
                     (double)buf_g[e], (double)buf_c[e], (long long)(F - n));
    /* the all-latents view points at the buffer, every latent its own row */
    int *did = up(NULL, sizeof(int) * n), *dnr = up(NULL, sizeof(int)), nr_g = -1;
    sae_grads_cuda view;
    dist_dense_view_cuda(dbuf, d, n, did, dnr, &view, 0);
    int *id_g = malloc(sizeof(int) * n);
    down(id_g, did, sizeof(int) * n);
    down(&nr_g, dnr, sizeof(int));
    cr_assert_eq(nr_g, n);
    cr_assert_eq(view.cap_rows, n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(id_g[i], i);
    cr_assert(view.dW_enc == dbuf && view.dW_dec == dbuf + (size_t)n * d &&
              view.db_enc == dbuf + 2 * (size_t)n * d && view.db_dec == view.db_enc + n);
    /* entries of the code, as the metrics sum */
    double ent_g = -1.0;
    double *dent = up(NULL, sizeof(double));
    dist_entries_cuda(dlat, slots, dent, 0);
    down(&ent_g, dent, sizeof(double));
    int ent = 0;
    for (int s = 0; s < slots; s++)
        ent += lat[s] >= 0;
    cr_assert_eq(ent_g, (double)ent);
    /* since_fired over the ranks from the fired part */
    int64_t *sf_c = malloc(sizeof(int64_t) * n), *sf_g = malloc(sizeof(int64_t) * n);
    for (int i = 0; i < n; i++)
        sf_c[i] = rnd() % 100;
    int64_t *dsf = up(sf_c, sizeof(int64_t) * n);
    dist_since_fired_cpu(buf_c + F - n, B, 3 * B, n, sf_c);
    dist_since_fired_cuda(dbuf + F - n, B, 3 * B, n, dsf, 0);
    down(sf_g, dsf, sizeof(int64_t) * n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(sf_g[i], sf_c[i], "since_fired[%d]", i);
    grads_cuda_free(&g);
    cudaFree(dlat); cudaFree(dbuf); cudaFree(did); cudaFree(dnr); cudaFree(dent); cudaFree(dsf);
    free(rows); free(slot); free(dWe); free(dWd); free(dbe); free(dbd); free(row_ptr); free(lat);
    free(buf_c); free(buf_g); free(ident); free(id_g); free(sf_c); free(sf_g);
}

Test(cuda_dist, dense_gradient_scatter)
{
    seed(2);
    check_grads(24, 5, 16, 96);
    check_grads(7, 3, 33, 257);
}

/* Values with many exact ties (coarse grid), negatives and zeros. */
static float *tie_data(int B, int n, int levels)
{
    float *pre = calloc((size_t)(B > 0 ? B : 1) * n, sizeof(float));
    for (size_t e = 0; e < (size_t)B * n; e++) {
        int q = (int)(rnd() % (uint32_t)(2 * levels)) - levels / 2;
        pre[e] = q <= 0 ? -(float)(rnd() % 3) : (float)q / (float)levels + (q % 7 == 0 ? 1e-3f : 0.0f);
    }
    return pre;
}

static void ref_hist(const float *pre, int B, int n, int hi, int shift, int buckets, int64_t *h)
{
    memset(h, 0, sizeof(int64_t) * buckets);
    for (size_t e = 0; e < (size_t)B * n; e++) {
        if (!(pre[e] > 0.0f))
            continue;
        uint32_t u;
        memcpy(&u, &pre[e], 4);
        if (hi >= 0 && (int)(u >> 16) != hi)
            continue;
        h[(u >> shift) & (uint32_t)(buckets - 1)]++;
    }
}

/* The backend's selection without the sums: device histograms, bsel_dist_bucket, the tie
 * share (all ties for one rank, or `share` when earlier ranks took some), bselect_rule_cuda. */
static void check_select(int B, int n, int64_t K, int levels, int64_t share_cut)
{
    float *pre = tie_data(B, n, levels);
    float *dpre = up(pre, sizeof(float) * (size_t)B * n);
    int64_t *dh = up(NULL, sizeof(int64_t) * BSEL_DIST_LO_BUCKETS);
    int64_t *h = malloc(sizeof(int64_t) * BSEL_DIST_LO_BUCKETS), *r = malloc(sizeof(int64_t) * BSEL_DIST_LO_BUCKETS);
    bsel_dist_hist_cuda(dpre, B, n, -1, 16, BSEL_DIST_HI_BUCKETS, dh, 0);
    down(h, dh, sizeof(int64_t) * BSEL_DIST_HI_BUCKETS);
    ref_hist(pre, B, n, -1, 16, BSEL_DIST_HI_BUCKETS, r);
    cr_assert(!memcmp(h, r, sizeof(int64_t) * BSEL_DIST_HI_BUCKETS), "pass-1 histogram differs");
    int64_t above_hi = 0, above_lo = 0;
    int bk = bsel_dist_bucket(h, BSEL_DIST_HI_BUCKETS, K, &above_hi);
    unsigned lo = 1u, teq = 0u, need = 0u, Tb = 0u;
    int64_t ties = 0;
    if (bk >= 0) {
        bsel_dist_hist_cuda(dpre, B, n, bk, 0, BSEL_DIST_LO_BUCKETS, dh, 0);
        down(h, dh, sizeof(int64_t) * BSEL_DIST_LO_BUCKETS);
        ref_hist(pre, B, n, bk, 0, BSEL_DIST_LO_BUCKETS, r);
        cr_assert(!memcmp(h, r, sizeof(int64_t) * BSEL_DIST_LO_BUCKETS), "pass-2 histogram differs");
        int bl = bsel_dist_bucket(h, BSEL_DIST_LO_BUCKETS, K - above_hi, &above_lo);
        cr_assert(bl >= 0);
        Tb = ((unsigned)bk << 16) | (unsigned)bl;
        ties = h[bl];
        int64_t nd = K - above_hi - above_lo;
        int64_t share = bsel_dist_tie_share(NULL, ties, nd);
        cr_assert_eq(share, nd);
        if (share_cut >= 0 && share_cut < share)
            share = share_cut; /* what a later rank gets when earlier ranks took ties */
        lo = Tb + 1u;
        teq = Tb;
        need = (unsigned)share;
    }
    int64_t slots = K < (int64_t)B * n ? K : (int64_t)B * n;
    int *drp = up(NULL, sizeof(int) * (B + 1)), *dl = up(NULL, sizeof(int) * (slots + 1));
    float *dv = up(NULL, sizeof(float) * (slots + 1)), *dmk = up(NULL, sizeof(float));
    void *ws = up(NULL, bselect_workspace_bytes(B, n));
    bselect_rule_cuda(dpre, B, n, lo, teq, need, slots, drp, dl, dv, dmk, ws, 0);
    int *rp_g = malloc(sizeof(int) * (B + 1)), *l_g = malloc(sizeof(int) * (slots + 1));
    float *v_g = malloc(sizeof(float) * (slots + 1)), mk_g = -1.0f;
    down(rp_g, drp, sizeof(int) * (B + 1));
    down(l_g, dl, sizeof(int) * slots);
    down(v_g, dv, sizeof(float) * slots);
    down(&mk_g, dmk, sizeof(float));
    /* reference: select_batch_dist_cpu for the whole share; the rule itself for a cut share */
    int *rp_c = malloc(sizeof(int) * (B + 1)), *l_c = malloc(sizeof(int) * (slots + 1));
    float *v_c = malloc(sizeof(float) * (slots + 1)), mk_c = -1.0f;
    if (share_cut < 0) {
        int kept = select_batch_dist_cpu(pre, B, n, K, NULL, rp_c, l_c, v_c, &mk_c);
        cr_assert_eq(kept, rp_g[B]);
        cr_assert_eq(mk_g, mk_c, "min_kept %g vs %g", (double)mk_g, (double)mk_c);
    } else {
        int64_t left = need, o = 0;
        rp_c[0] = 0;
        for (int b = 0; b < B; b++) {
            for (int i = 0; i < n; i++) {
                float v = pre[(size_t)b * n + i];
                uint32_t u;
                memcpy(&u, &v, 4);
                int keep = v > 0.0f && u >= lo;
                if (!keep && v > 0.0f && u == teq && left > 0) {
                    keep = 1;
                    left--;
                }
                if (keep) {
                    l_c[o] = i;
                    v_c[o++] = v;
                }
            }
            rp_c[b + 1] = (int)o;
        }
    }
    cr_assert(!memcmp(rp_g, rp_c, sizeof(int) * (B + 1)), "row_ptr differs (K %lld, cut %lld)",
              (long long)K, (long long)share_cut);
    cr_assert(!memcmp(l_g, l_c, sizeof(int) * rp_c[B]), "kept latents differ");
    cr_assert(!memcmp(v_g, v_c, sizeof(float) * rp_c[B]), "kept values differ");
    for (int64_t q = rp_c[B]; q < slots; q++)
        cr_assert(l_g[q] == -1 && v_g[q] == 0.0f, "slot %lld is not padding", (long long)q);
    if (bk >= 0)
        cr_assert(ties > 1 || share_cut >= 0 || levels > 1000, "no ties at the threshold: the case is not covered");
    cudaFree(dpre); cudaFree(dh); cudaFree(drp); cudaFree(dl); cudaFree(dv); cudaFree(dmk); cudaFree(ws);
    free(pre); free(h); free(r); free(rp_g); free(l_g); free(v_g); free(rp_c); free(l_c); free(v_c);
}

Test(cuda_dist, selection_rule_matches_cpu)
{
    seed(3);
    check_select(32, 128, 32 * 4, 16, -1);   /* coarse values: many ties at the key */
    check_select(29, 67, 29 * 5, 16, -1);    /* odd shape */
    check_select(16, 64, 16 * 64, 16, -1);   /* K above the positives: keep them all */
    check_select(32, 128, 32 * 4, 4096, -1); /* fine values */
    check_select(32, 128, 32 * 4, 16, 1);    /* a later rank's cut tie share */
    check_select(32, 128, 32 * 4, 16, 0);
}

Test(cuda_dist, histogram_of_empty_share)
{
    int64_t *dh = up(NULL, sizeof(int64_t) * BSEL_DIST_HI_BUCKETS);
    CUDA_CHECK(cudaMemset(dh, 0x55, sizeof(int64_t) * BSEL_DIST_HI_BUCKETS));
    float *dpre = up(NULL, sizeof(float));
    bsel_dist_hist_cuda(dpre, 0, 8, -1, 16, BSEL_DIST_HI_BUCKETS, dh, 0);
    int64_t *h = malloc(sizeof(int64_t) * BSEL_DIST_HI_BUCKETS);
    down(h, dh, sizeof(int64_t) * BSEL_DIST_HI_BUCKETS);
    for (int q = 0; q < BSEL_DIST_HI_BUCKETS; q++)
        cr_assert_eq(h[q], 0, "bucket %d not zeroed", q);
    cudaFree(dh);
    cudaFree(dpre);
    free(h);
}

Test(cuda_dist, kept_threshold_keys)
{
    float vals[3] = {0.25f, 0.0f, 3.5f};
    float *dmk = up(NULL, sizeof(float));
    unsigned *dkey = up(NULL, sizeof(unsigned));
    for (int t = 0; t < 3; t++) {
        CUDA_CHECK(cudaMemcpy(dmk, &vals[t], sizeof(float), cudaMemcpyHostToDevice));
        dist_kept_key_cuda(dmk, dkey, 0);
        unsigned key = 0;
        down(&key, dkey, sizeof key);
        uint32_t bits;
        memcpy(&bits, &vals[t], 4);
        cr_assert_eq(key, vals[t] > 0.0f ? bits : 0xffffffffu);
        dist_kept_value_cuda(dkey, dmk, 0);
        float back = -1.0f;
        down(&back, dmk, sizeof back);
        cr_assert_eq(back, vals[t]);
    }
    uint32_t bits;
    float want = 0.75f, got = 0.0f;
    memcpy(&bits, &want, 4);
    dist_set_kept_cuda(dmk, bits, 0);
    down(&got, dmk, sizeof got);
    cr_assert_eq(got, want);
    cudaFree(dmk);
    cudaFree(dkey);
}
