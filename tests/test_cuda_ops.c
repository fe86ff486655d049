/* Parity of decode/loss/backward/adam/featstats kernels (*.cu) with their CPU twins (*.c), on an
 * aligned shape and an odd one. Built against the emulator (make test) and real CUDA (make test-gpu). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/adam.cuh"
#include "kernels/adam.h"
#include "kernels/backend.h"
#include "kernels/backward.cuh"
#include "kernels/backward.h"
#include "kernels/cuda_compat.h"
#include "kernels/decode.cuh"
#include "kernels/decode.h"
#include "kernels/featstats.cuh"
#include "kernels/featstats.h"
#include "kernels/loss.cuh"
#include "kernels/loss.h"

static uint64_t rs;
static void seed(uint64_t s) { rs = s * 0x9E3779B97F4A7C15ull + 12345; }
static uint32_t rnd(void)
{
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rs >> 33);
}
static float sym(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; }
static float pos(void) { return 0.05f + (float)(rnd() % 1000) / 1000.0f; }

static void *up(const void *h, size_t bytes)
{
    void *d;
    CUDA_CHECK(cudaMalloc(&d, bytes ? bytes : 1));
    if (bytes)
        CUDA_CHECK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    return d;
}
static void *zdev(size_t bytes)
{
    void *d;
    CUDA_CHECK(cudaMalloc(&d, bytes ? bytes : 1));
    CUDA_CHECK(cudaMemset(d, 0, bytes ? bytes : 1));
    return d;
}
static void down(void *h, const void *d, size_t bytes)
{
    CUDA_CHECK(cudaDeviceSynchronize());
    if (bytes)
        CUDA_CHECK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}
static float *frand(size_t count)
{
    float *a = malloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++)
        a[i] = sym();
    return a;
}

static void expect_near(const float *got, const float *ref, size_t count, double atol, double rtol,
                        const char *what)
{
    for (size_t i = 0; i < count; i++) {
        double diff = fabs((double)got[i] - (double)ref[i]);
        cr_assert(diff <= atol + rtol * fabs((double)ref[i]), "%s[%zu]: got %.9g, want %.9g", what,
                  i, (double)got[i], (double)ref[i]);
    }
}
static void expect_dnear(double got, double ref, double rtol, const char *what)
{
    cr_assert(fabs(got - ref) <= 1e-12 + rtol * fabs(ref), "%s: got %.17g, want %.17g", what, got,
              ref);
}

/* A row top-k code: k distinct ascending latents per token, with padding (-1) on some rows. */
static void topk_code(int B, int n, int k, int *lat, float *val)
{
    int *pick = malloc((size_t)n * sizeof(int));
    for (int b = 0; b < B; b++) {
        memset(pick, 0, (size_t)n * sizeof(int));
        int kb = (b % 5 == 3) ? k - 1 : k; /* some rows padded */
        int got = 0;
        while (got < kb) {
            int i = (int)(rnd() % (uint32_t)n);
            if (!pick[i]) {
                pick[i] = 1;
                got++;
            }
        }
        int o = 0;
        for (int i = 0; i < n; i++)
            if (pick[i]) {
                lat[b * k + o] = i;
                val[b * k + o] = pos();
                o++;
            }
        for (; o < k; o++) {
            lat[b * k + o] = -1;
            val[b * k + o] = 0.0f;
        }
    }
    free(pick);
}

/* A batch code: variable row lengths (some rows empty), returns the entry count. */
static int batch_code(int B, int n, int kmax, int *row_ptr, int *lat, float *val)
{
    int *pick = malloc((size_t)n * sizeof(int));
    row_ptr[0] = 0;
    for (int b = 0; b < B; b++) {
        int kb = (int)(rnd() % (uint32_t)(kmax + 1));
        if (b == 1)
            kb = 0;
        memset(pick, 0, (size_t)n * sizeof(int));
        int got = 0;
        while (got < kb) {
            int i = (int)(rnd() % (uint32_t)n);
            if (!pick[i]) {
                pick[i] = 1;
                got++;
            }
        }
        int o = row_ptr[b];
        for (int i = 0; i < n; i++)
            if (pick[i]) {
                lat[o] = i;
                val[o] = pos();
                o++;
            }
        row_ptr[b + 1] = o;
    }
    free(pick);
    return row_ptr[B];
}

typedef struct shape {
    int B, d, n, k;
} shape;
static const shape shapes[] = {{64, 32, 256, 8}, {7, 13, 77, 3}};

/* ---- decode -------------------------------------------------------------------------------- */
Test(cuda_ops, decode)
{
    for (int si = 0; si < 2; si++) {
        const shape s = shapes[si];
        seed(100 + si);
        int *lat = malloc((size_t)s.B * s.k * sizeof(int));
        float *val = malloc((size_t)s.B * s.k * sizeof(float));
        int *rp = malloc((size_t)(s.B + 1) * sizeof(int));
        topk_code(s.B, s.n, s.k, lat, val);
        for (int b = 0; b <= s.B; b++)
            rp[b] = b * s.k;
        float *W = frand((size_t)s.n * s.d), *bias = frand((size_t)s.d);
        float *ref = malloc((size_t)s.B * s.d * sizeof(float)), *got = malloc((size_t)s.B * s.d * sizeof(float));
        int *d_lat = up(lat, (size_t)s.B * s.k * sizeof(int)), *d_rp = zdev((size_t)(s.B + 1) * sizeof(int));
        float *d_val = up(val, (size_t)s.B * s.k * sizeof(float)), *d_W = up(W, (size_t)s.n * s.d * 4),
              *d_bias = up(bias, (size_t)s.d * 4), *d_x = zdev((size_t)s.B * s.d * 4);
        fill_row_ptr_cuda(d_rp, s.B, s.k, 0);
        int *rp_got = malloc((size_t)(s.B + 1) * sizeof(int));
        down(rp_got, d_rp, (size_t)(s.B + 1) * sizeof(int));
        cr_assert(!memcmp(rp, rp_got, (size_t)(s.B + 1) * sizeof(int)), "fill_row_ptr");
        const int limits[] = {s.n, s.n / 3};
        for (int li = 0; li < 2; li++) {
            for (int wb = 0; wb < 2; wb++) {
                decode_cpu(rp, lat, val, W, wb ? bias : NULL, s.B, s.d, limits[li], ref);
                decode_cuda(d_rp, d_lat, d_val, d_W, wb ? d_bias : NULL, s.B, s.d, limits[li], d_x, 0);
                down(got, d_x, (size_t)s.B * s.d * 4);
                /* non-contracted float ops in entry order: the same bits as the CPU twin */
                expect_near(got, ref, (size_t)s.B * s.d, 0.0, 0.0, "xhat");
            }
        }
        cudaFree(d_lat); cudaFree(d_rp); cudaFree(d_val); cudaFree(d_W); cudaFree(d_bias); cudaFree(d_x);
        free(lat); free(val); free(rp); free(W); free(bias); free(ref); free(got); free(rp_got);
    }
}

/* ---- loss ---------------------------------------------------------------------------------- */
Test(cuda_ops, loss)
{
    for (int si = 0; si < 2; si++) {
        const shape s = shapes[si];
        seed(200 + si);
        const size_t Bd = (size_t)s.B * s.d;
        float *x = frand(Bd), *p = frand(Bd), *g = frand(Bd);
        for (size_t i = 0; i < Bd; i++)
            x[i] += 0.5f; /* a mean away from 0 */
        float *mean = malloc((size_t)s.d * 4), *gmean = malloc((size_t)s.d * 4);
        float *dY = malloc(Bd * 4), *gdY = malloc(Bd * 4);
        float *d_x = up(x, Bd * 4), *d_p = up(p, Bd * 4), *d_g = up(g, Bd * 4);
        float *d_mean = zdev((size_t)s.d * 4), *d_dY = zdev(Bd * 4);
        double *d_out = zdev(4 * sizeof(double));
        void *work = zdev(loss_cuda_work_bytes(s.B));
        double out[4];

        double den = loss_center_cpu(x, s.B, s.d, mean);
        loss_center_cuda(d_x, s.B, s.d, d_mean, d_out, work, 0);
        down(gmean, d_mean, (size_t)s.d * 4);
        down(out, d_out, sizeof(double));
        expect_near(gmean, mean, (size_t)s.d, 0.0, 0.0, "mean");
        expect_dnear(out[0], den, 1e-12, "den");

        /* dY = coef (pred - x), coef = 2 / (G den), then accumulate a second term */
        float coef = (float)(2.0 / (3.0 * den));
        double r1 = loss_residual_cpu(x, p, s.B, s.d, coef, 0, dY);
        loss_residual_cuda(d_x, d_p, s.B, s.d, 2.0, 3.0, d_out, 0, d_dY, d_out + 1, work, 0);
        double r2 = loss_residual_cpu(g, p, s.B, s.d, 0.25f, 1, dY);
        loss_residual_cuda(d_g, d_p, s.B, s.d, 0.25, 1.0, NULL, 1, d_dY, d_out + 2, work, 0);
        down(out, d_out, 3 * sizeof(double));
        down(gdY, d_dY, Bd * 4);
        expect_dnear(out[1], r1, 1e-12, "residual sum");
        expect_dnear(out[2], r2, 1e-12, "residual sum (accumulate)");
        expect_near(gdY, dY, Bd, 0.0, 0.0, "dY");

        /* no dY, sum only */
        double r3 = loss_residual_cpu(x, g, s.B, s.d, 0.0f, 0, NULL);
        loss_residual_cuda(d_x, d_g, s.B, s.d, 0.0, 1.0, NULL, 0, NULL, d_out + 3, work, 0);
        down(out, d_out, 4 * sizeof(double));
        expect_dnear(out[3], r3, 1e-12, "residual sum only");

        double num, gden;
        loss_gw_cpu(g, x, p, mean, s.B, s.d, &num, &gden);
        loss_gw_cuda(d_g, d_x, d_p, d_mean, s.B, s.d, d_out, d_out + 1, work, 0);
        down(out, d_out, 2 * sizeof(double));
        expect_dnear(out[0], num, 1e-10, "gw num");
        expect_dnear(out[1], gden, 1e-10, "gw den");
        /* a wrong answer must fail: sanity of the comparison itself */
        cr_assert(fabs(out[0] - 1.01 * num) > 1e-12 + 1e-10 * fabs(num));

        cudaFree(d_x); cudaFree(d_p); cudaFree(d_g); cudaFree(d_mean); cudaFree(d_dY); cudaFree(d_out); cudaFree(work);
        free(x); free(p); free(g); free(mean); free(gmean); free(dY); free(gdY);
    }
}

/* ---- backward, projection, norm, Adam, featstats -------------------------------------------- */
typedef struct bwd_case {
    shape s;
    int G, bounds[3];
    int kaux;
    /* host */
    float *u, *dY, *dYa;
    int *rp, *lat, *arp, *alat;
    float *val, *aval;
    int main_cap, aux_cap;
    sae_params p;
    /* device */
    float *d_u, *d_dY, *d_dYa, *d_val, *d_aval;
    int *d_rp, *d_lat, *d_arp, *d_alat;
    sae_params dp;
} bwd_case;

static void case_init(bwd_case *c, shape s, int batch, int with_aux, uint64_t sd)
{
    memset(c, 0, sizeof *c);
    seed(sd);
    c->s = s;
    const size_t Bd = (size_t)s.B * s.d, nd = (size_t)s.n * s.d;
    c->G = batch ? 3 : 1;
    if (batch) {
        c->bounds[0] = s.n / 5;
        c->bounds[1] = s.n / 2;
        c->bounds[2] = s.n;
    } else {
        c->bounds[0] = s.n;
    }
    c->u = frand(Bd);
    c->dY = frand((size_t)c->G * Bd);
    c->dYa = frand(Bd);
    c->rp = malloc((size_t)(s.B + 1) * sizeof(int));
    c->main_cap = batch ? 2 * s.B * s.k : s.B * s.k; /* batch rows hold up to 2k entries */
    c->lat = malloc((size_t)c->main_cap * sizeof(int));
    c->val = malloc((size_t)c->main_cap * sizeof(float));
    if (batch) {
        batch_code(s.B, s.n, 2 * s.k, c->rp, c->lat, c->val);
    } else {
        topk_code(s.B, s.n, s.k, c->lat, c->val);
        for (int b = 0; b <= s.B; b++)
            c->rp[b] = b * s.k;
    }
    c->kaux = with_aux ? 2 : 0;
    c->aux_cap = s.B * c->kaux;
    c->arp = malloc((size_t)(s.B + 1) * sizeof(int));
    c->alat = malloc((size_t)(c->aux_cap + 1) * sizeof(int));
    c->aval = malloc((size_t)(c->aux_cap + 1) * sizeof(float));
    if (with_aux) {
        topk_code(s.B, s.n, c->kaux, c->alat, c->aval);
        for (int b = 0; b <= s.B; b++)
            c->arp[b] = b * c->kaux;
    }
    sae_params_alloc(&c->p, s.d, s.n);
    for (size_t i = 0; i < nd; i++) {
        c->p.W_enc[i] = sym();
        c->p.W_dec[i] = sym();
    }
    for (int i = 0; i < s.n; i++) { /* unit-norm decoder rows, as in training */
        double ss = 0;
        for (int j = 0; j < s.d; j++)
            ss += (double)c->p.W_dec[(size_t)i * s.d + j] * c->p.W_dec[(size_t)i * s.d + j];
        for (int j = 0; j < s.d; j++)
            c->p.W_dec[(size_t)i * s.d + j] /= (float)sqrt(ss);
        c->p.b_enc[i] = 0.1f * sym();
    }
    for (int j = 0; j < s.d; j++)
        c->p.b_dec[j] = sym();
    c->d_u = up(c->u, Bd * 4);
    c->d_dY = up(c->dY, (size_t)c->G * Bd * 4);
    c->d_dYa = up(c->dYa, Bd * 4);
    c->d_rp = up(c->rp, (size_t)(s.B + 1) * 4);
    c->d_lat = up(c->lat, (size_t)c->main_cap * 4);
    c->d_val = up(c->val, (size_t)c->main_cap * 4);
    c->d_arp = up(c->arp, (size_t)(s.B + 1) * 4);
    c->d_alat = up(c->alat, (size_t)(c->aux_cap + 1) * 4);
    c->d_aval = up(c->aval, (size_t)(c->aux_cap + 1) * 4);
    c->dp.W_enc = up(c->p.W_enc, nd * 4);
    c->dp.W_dec = up(c->p.W_dec, nd * 4);
    c->dp.b_enc = up(c->p.b_enc, (size_t)s.n * 4);
    c->dp.b_dec = up(c->p.b_dec, (size_t)s.d * 4);
}

static void case_free(bwd_case *c)
{
    free(c->u); free(c->dY); free(c->dYa); free(c->rp); free(c->lat); free(c->val);
    free(c->arp); free(c->alat); free(c->aval);
    sae_params_free(&c->p);
    cudaFree(c->d_u); cudaFree(c->d_dY); cudaFree(c->d_dYa); cudaFree(c->d_rp); cudaFree(c->d_lat);
    cudaFree(c->d_val); cudaFree(c->d_arp); cudaFree(c->d_alat); cudaFree(c->d_aval);
    cudaFree(c->dp.W_enc); cudaFree(c->dp.W_dec); cudaFree(c->dp.b_enc); cudaFree(c->dp.b_dec);
}

static int case_groups(bwd_case *c, sae_bwd_group *hg, sae_bwd_group_cuda *dg)
{
    int ng = c->kaux ? 2 : 1;
    static int full[1];
    full[0] = c->s.n;
    sae_bwd_group h0 = {c->rp, c->lat, c->val, c->G, c->bounds, c->dY, 1};
    sae_bwd_group h1 = {c->arp, c->alat, c->aval, 1, full, c->dYa, 0};
    hg[0] = h0;
    hg[1] = h1;
    memset(dg, 0, 2 * sizeof *dg);
    dg[0].row_ptr = c->d_rp;
    dg[0].lat = c->d_lat;
    dg[0].val = c->d_val;
    dg[0].cap = c->main_cap;
    dg[0].n_bands = c->G;
    for (int j = 0; j < c->G; j++)
        dg[0].bounds[j] = c->bounds[j];
    dg[0].dY = c->d_dY;
    dg[0].has_bias = 1;
    dg[1].row_ptr = c->d_arp;
    dg[1].lat = c->d_alat;
    dg[1].val = c->d_aval;
    dg[1].cap = c->aux_cap;
    dg[1].n_bands = 1;
    dg[1].bounds[0] = c->s.n;
    dg[1].dY = c->d_dYa;
    dg[1].has_bias = 0;
    return ng;
}

static void hgrads_alloc(sae_grads *g, int n, int d, int cap)
{
    g->cap_rows = cap;
    g->n_rows = 0;
    g->rows = malloc((size_t)cap * sizeof(int));
    g->slot = malloc((size_t)n * sizeof(int));
    g->dW_enc = malloc((size_t)cap * d * sizeof(float));
    g->dW_dec = malloc((size_t)cap * d * sizeof(float));
    g->db_enc = malloc((size_t)n * sizeof(float));
    g->db_dec = malloc((size_t)d * sizeof(float));
}
static void hgrads_free(sae_grads *g)
{
    free(g->rows); free(g->slot); free(g->dW_enc); free(g->dW_dec); free(g->db_enc); free(g->db_dec);
}

/* Device grads -> a host sae_grads (same cap). */
static void grads_down(sae_grads *h, const sae_grads_cuda *g, int n, int d)
{
    down(&h->n_rows, g->n_rows, sizeof(int));
    down(h->rows, g->rows, (size_t)h->n_rows * sizeof(int));
    down(h->slot, g->slot, (size_t)n * sizeof(int));
    down(h->dW_enc, g->dW_enc, (size_t)h->n_rows * d * 4);
    down(h->dW_dec, g->dW_dec, (size_t)h->n_rows * d * 4);
    down(h->db_enc, g->db_enc, (size_t)n * 4);
    down(h->db_dec, g->db_dec, (size_t)d * 4);
}

static void expect_grads(const sae_grads *got, const sae_grads *ref, int n, int d, double tol)
{
    cr_assert_eq(got->n_rows, ref->n_rows, "n_rows %d vs %d", got->n_rows, ref->n_rows);
    cr_assert(!memcmp(got->rows, ref->rows, (size_t)ref->n_rows * sizeof(int)), "rows differ");
    cr_assert(!memcmp(got->slot, ref->slot, (size_t)n * sizeof(int)), "slot map differs");
    expect_near(got->dW_enc, ref->dW_enc, (size_t)ref->n_rows * d, tol, tol, "dW_enc");
    expect_near(got->dW_dec, ref->dW_dec, (size_t)ref->n_rows * d, tol, tol, "dW_dec");
    expect_near(got->db_enc, ref->db_enc, (size_t)n, tol, tol, "db_enc");
    expect_near(got->db_dec, ref->db_dec, (size_t)d, 10 * tol, tol, "db_dec");
}

static void run_backward_case(shape s, int batch, int with_aux, uint64_t sd)
{
    bwd_case c;
    case_init(&c, s, batch, with_aux, sd);
    sae_bwd_group hg[2];
    sae_bwd_group_cuda dg[2];
    int ng = case_groups(&c, hg, dg);
    int cap_entries = dg[0].cap + dg[1].cap;
    int cap_rows = s.n < cap_entries ? s.n : cap_entries;
    sae_grads ref, got;
    hgrads_alloc(&ref, s.n, s.d, cap_rows);
    hgrads_alloc(&got, s.n, s.d, cap_rows);
    backward_cpu(c.u, &c.p, s.B, s.d, s.n, hg, ng, &ref);

    sae_bwd_ws ws;
    sae_grads_cuda gr;
    bwd_ws_alloc(&ws, s.n, s.d, s.B, cap_entries);
    grads_cuda_alloc(&gr, s.n, s.d, ws.cap_rows);
    backward_cuda(&ws, c.d_u, &c.dp, s.B, s.d, s.n, dg, ng, &gr, 0);
    grads_down(&got, &gr, s.n, s.d);
    expect_grads(&got, &ref, s.n, s.d, 1e-5);
    /* run again: bit-identical (deterministic sort and sums) */
    sae_grads again;
    hgrads_alloc(&again, s.n, s.d, cap_rows);
    backward_cuda(&ws, c.d_u, &c.dp, s.B, s.d, s.n, dg, ng, &gr, 0);
    grads_down(&again, &gr, s.n, s.d);
    cr_assert(!memcmp(again.dW_enc, got.dW_enc, (size_t)got.n_rows * s.d * 4), "not deterministic");
    cr_assert(!memcmp(again.db_dec, got.db_dec, (size_t)s.d * 4), "db_dec not deterministic");

    /* projection and norm */
    dec_grad_project_cpu(c.p.W_dec, s.d, &ref);
    dec_grad_project_cuda(c.dp.W_dec, s.d, &gr, 0);
    grads_down(&got, &gr, s.n, s.d);
    expect_near(got.dW_dec, ref.dW_dec, (size_t)ref.n_rows * s.d, 1e-5, 1e-5, "projected dW_dec");
    double sq_ref = grad_sqnorm_cpu(&ref, s.d, s.n);
    double *d_sq = zdev(2 * sizeof(double));
    float *d_gs = zdev(sizeof(float));
    void *aw = zdev(adam_cuda_work_bytes());
    grad_sqnorm_cuda(&gr, s.d, s.n, d_sq, aw, 0);
    double sq[2];
    float clip = (float)(0.5 * sqrt(sq_ref)); /* clipping active */
    grad_clip_scale_cuda(d_sq, clip, d_sq + 1, d_gs, 0);
    down(sq, d_sq, 2 * sizeof(double));
    expect_dnear(sq[0], sq_ref, 1e-6, "grad sqnorm");
    expect_dnear(sq[1], sqrt(sq_ref), 1e-6, "grad norm");
    float gs;
    down(&gs, d_gs, sizeof(float));
    float gs_ref = (float)(clip / sqrt(sq_ref));
    expect_near(&gs, &gs_ref, 1, 0, 1e-6, "gscale");

    /* Adam: two steps from a nonzero state, with the CPU gradients uploaded so the comparison
     * isolates the optimizer (the device gradients were checked above) */
    sae_state hs;
    sae_state_alloc(&hs, s.d, s.n);
    const size_t nd = (size_t)s.n * s.d;
    for (size_t i = 0; i < nd; i++) {
        hs.m_W_enc[i] = 0.01f * sym();
        hs.v_W_enc[i] = 1e-4f * (1.0f + sym());
        hs.m_W_dec[i] = 0.01f * sym();
        hs.v_W_dec[i] = 1e-4f * (1.0f + sym());
    }
    sae_state ds;
    memset(&ds, 0, sizeof ds);
    ds.m_W_enc = up(hs.m_W_enc, nd * 4);
    ds.v_W_enc = up(hs.v_W_enc, nd * 4);
    ds.m_W_dec = up(hs.m_W_dec, nd * 4);
    ds.v_W_dec = up(hs.v_W_dec, nd * 4);
    ds.m_b_enc = zdev((size_t)s.n * 4);
    ds.v_b_enc = zdev((size_t)s.n * 4);
    ds.m_b_dec = zdev((size_t)s.d * 4);
    ds.v_b_dec = zdev((size_t)s.d * 4);
    CUDA_CHECK(cudaMemcpy(gr.dW_enc, ref.dW_enc, (size_t)ref.n_rows * s.d * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(gr.dW_dec, ref.dW_dec, (size_t)ref.n_rows * s.d * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(gr.db_enc, ref.db_enc, (size_t)s.n * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(gr.db_dec, ref.db_dec, (size_t)s.d * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_gs, &gs_ref, sizeof(float), cudaMemcpyHostToDevice));
    uint16_t *d_bf = zdev(nd * 2);
    for (int t = 1; t <= 2; t++) {
        float step_size = (float)(1e-3 / (1.0 - pow(0.9, t)));
        float bc2 = (float)sqrt(1.0 - pow(0.999, t));
        adam_step_cpu(&c.p, &hs, &ref, s.d, s.n, step_size, bc2, 0.9f, 0.999f, 1e-8f, gs_ref);
        adam_step_cuda(&c.dp, &ds, &gr, s.d, s.n, step_size, bc2, 0.9f, 0.999f, 1e-8f, d_gs, d_bf, 0);
    }
    sae_params hp2;
    sae_params_alloc(&hp2, s.d, s.n);
    down(hp2.W_enc, c.dp.W_enc, nd * 4);
    down(hp2.W_dec, c.dp.W_dec, nd * 4);
    down(hp2.b_enc, c.dp.b_enc, (size_t)s.n * 4);
    down(hp2.b_dec, c.dp.b_dec, (size_t)s.d * 4);
    /* non-contracted float ops following adam.h literally: near bit-exact */
    expect_near(hp2.W_enc, c.p.W_enc, nd, 1e-7, 1e-6, "adam W_enc");
    expect_near(hp2.W_dec, c.p.W_dec, nd, 1e-7, 1e-6, "adam W_dec");
    expect_near(hp2.b_enc, c.p.b_enc, (size_t)s.n, 1e-7, 1e-6, "adam b_enc");
    expect_near(hp2.b_dec, c.p.b_dec, (size_t)s.d, 1e-7, 1e-6, "adam b_dec");
    float *mv = malloc(nd * 4);
    down(mv, ds.v_W_dec, nd * 4);
    expect_near(mv, hs.v_W_dec, nd, 1e-12, 1e-6, "adam v_W_dec");
    /* untouched rows moved too (dense Adam with g = 0 and a nonzero m) */
    uint16_t *bf = malloc(nd * 2);
    down(bf, d_bf, nd * 2);
    for (size_t i = 0; i < nd; i++) {
        uint32_t u = (uint32_t)bf[i] << 16;
        float f;
        memcpy(&f, &u, 4);
        cr_assert(fabsf(f - hp2.W_enc[i]) <= fabsf(hp2.W_enc[i]) * (1.0f / 256.0f),
                  "bf16 shadow[%zu] %g vs %g", i, (double)f, (double)hp2.W_enc[i]);
    }
    free(bf);
    free(mv);
    sae_params_free(&hp2);
    sae_state_free(&hs);
    cudaFree(ds.m_W_enc); cudaFree(ds.v_W_enc); cudaFree(ds.m_W_dec); cudaFree(ds.v_W_dec);
    cudaFree(ds.m_b_enc); cudaFree(ds.v_b_enc); cudaFree(ds.m_b_dec); cudaFree(ds.v_b_dec);
    cudaFree(d_bf); cudaFree(d_sq); cudaFree(d_gs); cudaFree(aw);
    hgrads_free(&ref);
    hgrads_free(&got);
    hgrads_free(&again);
    bwd_ws_free(&ws);
    grads_cuda_free(&gr);
    case_free(&c);
}

Test(cuda_ops, backward_adam_topk)
{
    run_backward_case(shapes[0], 0, 0, 300);
    run_backward_case(shapes[1], 0, 0, 301);
}

Test(cuda_ops, backward_adam_matryoshka_auxk)
{
    run_backward_case(shapes[0], 1, 1, 310);
    run_backward_case(shapes[1], 1, 1, 311);
}

Test(cuda_ops, backward_topk_auxk)
{
    run_backward_case(shapes[0], 0, 1, 320);
    run_backward_case(shapes[1], 0, 1, 321);
}

/* featstats: three updates through the sorted view (with an AuxK group beside the main one, which
 * must not count), against featstats_update_cpu; then the dead mask. */
Test(cuda_ops, featstats)
{
    for (int si = 0; si < 2; si++) {
        const shape s = shapes[si];
        sae_state hs, ds;
        sae_state_alloc(&hs, s.d, s.n);
        memset(&ds, 0, sizeof ds);
        ds.since_fired = zdev((size_t)s.n * 8);
        ds.fire_count = zdev((size_t)s.n * 8);
        ds.act_sum = zdev((size_t)s.n * 8);
        ds.act_max = zdev((size_t)s.n * 4);
        ds.last_fired_step = up(hs.last_fired_step, (size_t)s.n * 8);
        ds.gate_sum = zdev((size_t)s.n * 8);
        float *gate = frand((size_t)s.B * s.n);
        for (size_t i = 0; i < (size_t)s.B * s.n; i++)
            gate[i] = fabsf(gate[i]);
        float *d_gate = up(gate, (size_t)s.B * s.n * 4);
        for (int step = 0; step < 3; step++) {
            bwd_case c;
            case_init(&c, s, step == 1, 1, 400 + 10 * si + step);
            sae_bwd_group hg[2];
            sae_bwd_group_cuda dg[2];
            case_groups(&c, hg, dg);
            sae_bwd_ws ws;
            sae_grads_cuda gr;
            bwd_ws_alloc(&ws, s.n, s.d, s.B, dg[0].cap + dg[1].cap);
            grads_cuda_alloc(&gr, s.n, s.d, ws.cap_rows);
            bwd_sort_cuda(&ws, dg, 2, s.B, s.n, &gr, 0);
            const float *hgate = step == 2 ? NULL : gate;
            featstats_update_cpu(c.rp, c.lat, c.val, hgate, s.B, s.n, 10 + step, &hs);
            featstats_update_cuda(&ws, &gr, c.d_val, dg[0].cap, hgate ? d_gate : NULL, s.B, s.n,
                                  10 + step, &ds, 0);
            CUDA_CHECK(cudaDeviceSynchronize());
            bwd_ws_free(&ws);
            grads_cuda_free(&gr);
            case_free(&c);
        }
        int64_t *i64 = malloc((size_t)s.n * 8);
        double *f64 = malloc((size_t)s.n * 8);
        float *f32 = malloc((size_t)s.n * 4);
        down(i64, ds.since_fired, (size_t)s.n * 8);
        cr_assert(!memcmp(i64, hs.since_fired, (size_t)s.n * 8), "since_fired");
        down(i64, ds.fire_count, (size_t)s.n * 8);
        cr_assert(!memcmp(i64, hs.fire_count, (size_t)s.n * 8), "fire_count");
        down(i64, ds.last_fired_step, (size_t)s.n * 8);
        cr_assert(!memcmp(i64, hs.last_fired_step, (size_t)s.n * 8), "last_fired_step");
        down(f64, ds.act_sum, (size_t)s.n * 8);
        cr_assert(!memcmp(f64, hs.act_sum, (size_t)s.n * 8), "act_sum (same order: same bits)");
        down(f64, ds.gate_sum, (size_t)s.n * 8);
        cr_assert(!memcmp(f64, hs.gate_sum, (size_t)s.n * 8), "gate_sum");
        down(f32, ds.act_max, (size_t)s.n * 4);
        cr_assert(!memcmp(f32, hs.act_max, (size_t)s.n * 4), "act_max");

        uint8_t *mask = malloc((size_t)s.n), *gmask = malloc((size_t)s.n);
        uint8_t *d_mask = zdev((size_t)s.n);
        int *d_cnt = zdev(sizeof(int));
        const int64_t thr[] = {1, (int64_t)s.B, 2 * (int64_t)s.B, 100000};
        for (int t = 0; t < 4; t++) {
            int dead = featstats_dead_mask_cpu(hs.since_fired, s.n, thr[t], mask);
            featstats_dead_mask_cuda(ds.since_fired, s.n, thr[t], d_mask, d_cnt, 0);
            int gdead;
            down(&gdead, d_cnt, sizeof(int));
            down(gmask, d_mask, (size_t)s.n);
            cr_assert_eq(gdead, dead, "dead count (threshold %lld)", (long long)thr[t]);
            cr_assert(!memcmp(gmask, mask, (size_t)s.n), "dead mask");
        }
        free(mask); free(gmask); cudaFree(d_mask); cudaFree(d_cnt);
        free(i64); free(f64); free(f32); free(gate); cudaFree(d_gate);
        cudaFree(ds.since_fired); cudaFree(ds.fire_count); cudaFree(ds.act_sum);
        cudaFree(ds.act_max); cudaFree(ds.last_fired_step); cudaFree(ds.gate_sum);
        sae_state_free(&hs);
    }
}
