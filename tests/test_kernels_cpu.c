/* CPU twins of decode, loss, optimizer and feature statistics against plain dense references. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "host/rng.h"
#include "kernels/adam.h"
#include "kernels/backend.h"
#include "kernels/decode.h"
#include "kernels/featstats.h"
#include "kernels/loss.h"

static void randn(float *v, size_t len, uint64_t seed)
{
    sf_rng r;
    rng_seed(&r, seed, 11);
    for (size_t t = 0; t < len; t++)
        v[t] = (float)rng_normal(&r);
}

static int close_to(double a, double ref, double atol, double rtol)
{
    return fabs(a - ref) <= atol + rtol * fabs(ref);
}

Test(kernels, decode_with_padding_limit_and_bias)
{
    enum { B = 5, d = 13, n = 20 };
    float W[n * d], bias[d], xhat[B * d];
    randn(W, n * d, 1);
    randn(bias, d, 2);
    int row_ptr[B + 1] = {0, 3, 3, 7, 9, 12};
    int lat[12] = {0, 5, 19, 2, 4, -1, 17, 3, -1, 1, 10, 18};
    float val[12];
    randn(val, 12, 3);
    for (int limit = 1; limit <= n; limit += 9) {
        for (int use_bias = 0; use_bias < 2; use_bias++) {
            decode_cpu(row_ptr, lat, val, W, use_bias ? bias : NULL, B, d, limit, xhat);
            for (int b = 0; b < B; b++)
                for (int j = 0; j < d; j++) {
                    double s = use_bias ? bias[j] : 0.0;
                    for (int e = row_ptr[b]; e < row_ptr[b + 1]; e++)
                        if (lat[e] >= 0 && lat[e] < limit)
                            s += (double)val[e] * W[lat[e] * d + j];
                    cr_assert(close_to(xhat[b * d + j], s, 1e-5, 1e-5), "b %d j %d limit %d", b, j, limit);
                }
        }
    }
}

Test(kernels, loss_center_residual_gw)
{
    enum { B = 300, d = 17 };
    float *x = malloc(B * d * sizeof(float)), *p = malloc(B * d * sizeof(float));
    float *g = malloc(B * d * sizeof(float)), *dY = malloc(B * d * sizeof(float));
    randn(x, B * d, 4);
    randn(p, B * d, 5);
    randn(g, B * d, 6);
    for (int t = 0; t < B * d; t++)
        x[t] += 3.0f; /* a non-zero mean */
    float mean[d];
    double den = loss_center_cpu(x, B, d, mean);
    double rden = 0.0, rmean[d];
    for (int j = 0; j < d; j++) {
        rmean[j] = 0.0;
        for (int b = 0; b < B; b++)
            rmean[j] += x[b * d + j];
        rmean[j] /= B;
        cr_assert(close_to(mean[j], rmean[j], 1e-6, 1e-6));
    }
    for (int t = 0; t < B * d; t++)
        rden += (x[t] - rmean[t % d]) * (x[t] - rmean[t % d]);
    cr_assert(close_to(den, rden, 0, 1e-6), "den %g ref %g", den, rden);

    double num = loss_residual_cpu(x, p, B, d, 0.5f, 0, dY), rnum = 0.0;
    for (int t = 0; t < B * d; t++) {
        double diff = (double)p[t] - x[t];
        rnum += diff * diff;
        cr_assert(close_to(dY[t], 0.5 * diff, 1e-6, 1e-6));
    }
    cr_assert(close_to(num, rnum, 0, 1e-9));
    /* accumulate adds a second term */
    loss_residual_cpu(x, p, B, d, 0.25f, 1, dY);
    for (int t = 0; t < B * d; t++)
        cr_assert(close_to(dY[t], 0.75 * ((double)p[t] - x[t]), 1e-5, 1e-5));
    cr_assert(close_to(loss_residual_cpu(x, p, B, d, 0.0f, 0, NULL), rnum, 0, 1e-9));

    double gn, gd, rgn = 0.0, rgd = 0.0;
    loss_gw_cpu(g, x, p, mean, B, d, &gn, &gd);
    for (int b = 0; b < B; b++) {
        double a = 0.0, c = 0.0;
        for (int j = 0; j < d; j++) {
            a += (double)g[b * d + j] * ((double)x[b * d + j] - p[b * d + j]);
            c += (double)g[b * d + j] * ((double)x[b * d + j] - mean[j]);
        }
        rgn += a * a;
        rgd += c * c;
    }
    cr_assert(close_to(gn, rgn, 0, 1e-9));
    cr_assert(close_to(gd, rgd, 0, 1e-9));
    free(x);
    free(p);
    free(g);
    free(dY);
}

typedef struct opt_case {
    int d, n;
    sae_params p;
    sae_state s;
    sae_grads g;
} opt_case;

/* Unit-norm decoder, random moments, gradients on rows {1, 4, 5}. */
static void opt_case_init(opt_case *c, int d, int n)
{
    c->d = d;
    c->n = n;
    sae_params_alloc(&c->p, d, n);
    sae_state_alloc(&c->s, d, n);
    randn(c->p.W_enc, (size_t)n * d, 7);
    randn(c->p.W_dec, (size_t)n * d, 8);
    randn(c->p.b_enc, n, 9);
    randn(c->p.b_dec, d, 10);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++)
            s += (double)c->p.W_dec[i * d + j] * c->p.W_dec[i * d + j];
        for (int j = 0; j < d; j++)
            c->p.W_dec[i * d + j] /= (float)sqrt(s);
    }
    randn(c->s.m_W_enc, (size_t)n * d, 11);
    randn(c->s.m_W_dec, (size_t)n * d, 12);
    randn(c->s.v_W_enc, (size_t)n * d, 13);
    randn(c->s.v_W_dec, (size_t)n * d, 14);
    for (size_t t = 0; t < (size_t)n * d; t++) {
        c->s.v_W_enc[t] = fabsf(c->s.v_W_enc[t]) * 0.01f;
        c->s.v_W_dec[t] = fabsf(c->s.v_W_dec[t]) * 0.01f;
    }
    c->g.cap_rows = 3;
    c->g.n_rows = 3;
    c->g.rows = malloc(3 * sizeof(int));
    c->g.slot = malloc(n * sizeof(int));
    c->g.dW_enc = malloc(3 * d * sizeof(float));
    c->g.dW_dec = malloc(3 * d * sizeof(float));
    c->g.db_enc = malloc(n * sizeof(float));
    c->g.db_dec = malloc(d * sizeof(float));
    int rows[3] = {1, 4, 5};
    for (int i = 0; i < n; i++)
        c->g.slot[i] = -1;
    for (int r = 0; r < 3; r++) {
        c->g.rows[r] = rows[r];
        c->g.slot[rows[r]] = r;
    }
    randn(c->g.dW_enc, 3 * d, 15);
    randn(c->g.dW_dec, 3 * d, 16);
    randn(c->g.db_enc, n, 17);
    randn(c->g.db_dec, d, 18);
}

static void opt_case_free(opt_case *c)
{
    sae_params_free(&c->p);
    sae_state_free(&c->s);
    free(c->g.rows);
    free(c->g.slot);
    free(c->g.dW_enc);
    free(c->g.dW_dec);
    free(c->g.db_enc);
    free(c->g.db_dec);
}

Test(kernels, projection_orthogonal)
{
    opt_case c;
    opt_case_init(&c, 24, 8);
    float before[3 * 24];
    memcpy(before, c.g.dW_dec, sizeof(before));
    dec_grad_project_cpu(c.p.W_dec, c.d, &c.g);
    for (int r = 0; r < 3; r++) {
        const float *w = c.p.W_dec + c.g.rows[r] * c.d;
        double dot = 0.0, dot0 = 0.0;
        for (int j = 0; j < c.d; j++) {
            dot += (double)c.g.dW_dec[r * c.d + j] * w[j];
            dot0 += (double)before[r * c.d + j] * w[j];
        }
        cr_assert(fabs(dot) < 1e-5, "row %d still has a parallel part %g", r, dot);
        for (int j = 0; j < c.d; j++)
            cr_assert(close_to(c.g.dW_dec[r * c.d + j], before[r * c.d + j] - dot0 * w[j], 1e-5, 1e-5));
    }
    opt_case_free(&c);
}

Test(kernels, grad_sqnorm)
{
    opt_case c;
    opt_case_init(&c, 24, 8);
    double ref = 0.0;
    for (int t = 0; t < 3 * 24; t++)
        ref += (double)c.g.dW_enc[t] * c.g.dW_enc[t] + (double)c.g.dW_dec[t] * c.g.dW_dec[t];
    for (int i = 0; i < 8; i++)
        ref += (double)c.g.db_enc[i] * c.g.db_enc[i];
    for (int j = 0; j < 24; j++)
        ref += (double)c.g.db_dec[j] * c.g.db_dec[j];
    cr_assert(close_to(grad_sqnorm_cpu(&c.g, 24, 8), ref, 0, 1e-12));
    opt_case_free(&c);
}

/* Dense reference: a full (n, d) gradient with zeros in untouched rows, PyTorch Adam in float. */
static void ref_adam(float *p, float *m, float *v, const float *g, size_t len, float ss, float bc2,
                     float b1, float b2, float eps, float gscale)
{
    for (size_t t = 0; t < len; t++) {
        float gt = g[t] * gscale;
        m[t] = b1 * m[t] + (1.0f - b1) * gt;
        v[t] = b2 * v[t] + (1.0f - b2) * gt * gt;
        p[t] -= ss * m[t] / (sqrtf(v[t]) / bc2 + eps);
    }
}

Test(kernels, adam_matches_dense_reference_and_renormalises)
{
    enum { d = 16, n = 9 };
    opt_case c;
    opt_case_init(&c, d, n);
    float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, gscale = 0.7f, lr = 1e-2f;
    int t = 3;
    float ss = (float)(lr / (1.0 - pow(b1, t))), bc2 = (float)sqrt(1.0 - pow(b2, t));
    /* dense copies */
    float We[n * d], Wd[n * d], mWe[n * d], vWe[n * d], mWd[n * d], vWd[n * d], gWe[n * d] = {0},
        gWd[n * d] = {0}, be[n], bd[d], mbe[n], vbe[n], mbd[d], vbd[d];
    memcpy(We, c.p.W_enc, sizeof(We));
    memcpy(Wd, c.p.W_dec, sizeof(Wd));
    memcpy(mWe, c.s.m_W_enc, sizeof(mWe));
    memcpy(vWe, c.s.v_W_enc, sizeof(vWe));
    memcpy(mWd, c.s.m_W_dec, sizeof(mWd));
    memcpy(vWd, c.s.v_W_dec, sizeof(vWd));
    memcpy(be, c.p.b_enc, sizeof(be));
    memcpy(bd, c.p.b_dec, sizeof(bd));
    memcpy(mbe, c.s.m_b_enc, sizeof(mbe));
    memcpy(vbe, c.s.v_b_enc, sizeof(vbe));
    memcpy(mbd, c.s.m_b_dec, sizeof(mbd));
    memcpy(vbd, c.s.v_b_dec, sizeof(vbd));
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < d; j++) {
            gWe[c.g.rows[r] * d + j] = c.g.dW_enc[r * d + j];
            gWd[c.g.rows[r] * d + j] = c.g.dW_dec[r * d + j];
        }
    ref_adam(We, mWe, vWe, gWe, n * d, ss, bc2, b1, b2, eps, gscale);
    ref_adam(Wd, mWd, vWd, gWd, n * d, ss, bc2, b1, b2, eps, gscale);
    ref_adam(be, mbe, vbe, c.g.db_enc, n, ss, bc2, b1, b2, eps, gscale);
    ref_adam(bd, mbd, vbd, c.g.db_dec, d, ss, bc2, b1, b2, eps, gscale);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++)
            s += (double)Wd[i * d + j] * Wd[i * d + j];
        for (int j = 0; j < d; j++)
            Wd[i * d + j] /= (float)sqrt(s);
    }
    float W_dec_before[n * d];
    memcpy(W_dec_before, c.p.W_dec, sizeof(W_dec_before));
    adam_step_cpu(&c.p, &c.s, &c.g, d, n, ss, bc2, b1, b2, eps, gscale);
    for (int q = 0; q < n * d; q++) {
        cr_assert(close_to(c.p.W_enc[q], We[q], 1e-6, 1e-6), "W_enc %d: %g vs %g", q, c.p.W_enc[q], We[q]);
        cr_assert(close_to(c.s.m_W_enc[q], mWe[q], 1e-7, 1e-6));
        cr_assert(close_to(c.s.v_W_enc[q], vWe[q], 1e-9, 1e-6));
        cr_assert(close_to(c.p.W_dec[q], Wd[q], 1e-6, 1e-5), "W_dec %d: %g vs %g", q, c.p.W_dec[q], Wd[q]);
        cr_assert(close_to(c.s.m_W_dec[q], mWd[q], 1e-7, 1e-6));
        cr_assert(close_to(c.s.v_W_dec[q], vWd[q], 1e-9, 1e-6));
        cr_assert(c.p.W_dec[q] != W_dec_before[q] || W_dec_before[q] == 0.0f, "untouched rows step too");
    }
    for (int i = 0; i < n; i++) {
        cr_assert(close_to(c.p.b_enc[i], be[i], 1e-6, 1e-6));
        cr_assert(close_to(c.s.m_b_enc[i], mbe[i], 1e-7, 1e-6));
        double s = 0;
        for (int j = 0; j < d; j++)
            s += (double)c.p.W_dec[i * d + j] * c.p.W_dec[i * d + j];
        cr_assert(fabs(sqrt(s) - 1.0) < 1e-6, "row %d norm %g", i, sqrt(s));
    }
    for (int j = 0; j < d; j++) {
        cr_assert(close_to(c.p.b_dec[j], bd[j], 1e-6, 1e-6));
        cr_assert(close_to(c.s.v_b_dec[j], vbd[j], 1e-9, 1e-6));
    }
    opt_case_free(&c);
}

Test(kernels, featstats_counters_and_dead_mask)
{
    enum { n = 6, B = 3 };
    sae_state s;
    sae_state_alloc(&s, 2, n);
    cr_assert_eq(s.theta, -1.0f);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(s.last_fired_step[i], -1);
        s.since_fired[i] = 100 * i;
    }
    int row_ptr[B + 1] = {0, 2, 4, 6};
    int lat[6] = {1, 3, -1, 3, 0, 1};
    float val[6] = {0.5f, 2.0f, 0.0f, 1.0f, 3.0f, 1.5f};
    float gate[B * n];
    for (int t = 0; t < B * n; t++)
        gate[t] = 0.1f * t;
    featstats_update_cpu(row_ptr, lat, val, gate, B, n, 42, &s);
    int64_t want_since[n] = {0, 0, 200 + B, 0, 400 + B, 500 + B};
    int64_t want_count[n] = {1, 2, 0, 2, 0, 0};
    double want_sum[n] = {3.0, 2.0, 0, 3.0, 0, 0};
    float want_max[n] = {3.0f, 1.5f, 0, 2.0f, 0, 0};
    double want_gate[n] = {0.1 * 12, 0.1 * 1 + 0.1 * 13, 0, 0.1 * 3 + 0.1 * 9, 0, 0};
    for (int i = 0; i < n; i++) {
        cr_assert_eq(s.since_fired[i], want_since[i], "since_fired[%d]", i);
        cr_assert_eq(s.fire_count[i], want_count[i]);
        cr_assert(close_to(s.act_sum[i], want_sum[i], 1e-12, 0));
        cr_assert_eq(s.act_max[i], want_max[i]);
        cr_assert_eq(s.last_fired_step[i], want_count[i] ? 42 : -1);
        cr_assert(close_to(s.gate_sum[i], want_gate[i], 1e-6, 1e-6), "gate_sum[%d] %g", i, s.gate_sum[i]);
    }
    uint8_t mask[n];
    int dead = featstats_dead_mask_cpu(s.since_fired, n, 203, mask);
    cr_assert_eq(dead, 3);
    uint8_t want_mask[n] = {0, 0, 1, 0, 1, 1};
    cr_assert_eq(memcmp(mask, want_mask, n), 0);
    sae_state_free(&s);
}
