/* Finite-difference checks of backward_cpu: the loss is recomputed in double with the selection
 * held fixed, each parameter is perturbed in turn, and the central difference is compared with
 * the sparse gradients (topk, gsae, batchtopk, matryoshka bands; AuxK on with dead latents). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "host/rng.h"
#include "kernels/backward.h"
#include "kernels/decode.h"
#include "kernels/encode.h"
#include "kernels/featstats.h"
#include "kernels/loss.h"
#include "kernels/select.h"

enum { D = 8, N = 32, BT = 6 };

typedef struct problem {
    int arch, k, G, bounds[4];
    float aux_alpha;
    int aux_k;
    /* fixed selection */
    int row_ptr[BT + 1], lat[BT * N];
    int aux_row_ptr[BT + 1], aux_lat[BT * N];
    int n_aux;
    double e[BT][D]; /* AuxK target residual, constant */
    double den;
    float x[BT * D];
} problem;

/* Double-precision loss for parameters given as doubles (layout: W_enc, b_enc, W_dec, b_dec). */
static double ref_loss(const problem *pr, const double *P)
{
    const double *We = P, *be = P + N * D, *Wd = be + N, *bd = Wd + N * D;
    double loss = 0.0;
    for (int b = 0; b < BT; b++) {
        double u[D];
        for (int j = 0; j < D; j++)
            u[j] = pr->x[b * D + j] - bd[j];
        double a[N];
        for (int i = 0; i < N; i++) {
            double s = be[i];
            for (int j = 0; j < D; j++)
                s += We[i * D + j] * u[j];
            a[i] = s;
        }
        for (int g = 0; g < pr->G; g++) {
            double xh[D];
            for (int j = 0; j < D; j++)
                xh[j] = bd[j];
            for (int e = pr->row_ptr[b]; e < pr->row_ptr[b + 1]; e++) {
                int i = pr->lat[e];
                if (i < 0 || i >= pr->bounds[g])
                    continue;
                for (int j = 0; j < D; j++)
                    xh[j] += a[i] * Wd[i * D + j];
            }
            for (int j = 0; j < D; j++) {
                double t = pr->x[b * D + j] - xh[j];
                loss += t * t / (pr->den * pr->G);
            }
        }
        if (pr->n_aux > 0) {
            double eh[D] = {0};
            for (int e = pr->aux_row_ptr[b]; e < pr->aux_row_ptr[b + 1]; e++) {
                int i = pr->aux_lat[e];
                if (i < 0)
                    continue;
                for (int j = 0; j < D; j++)
                    eh[j] += a[i] * Wd[i * D + j];
            }
            for (int j = 0; j < D; j++) {
                double t = pr->e[b][j] - eh[j];
                loss += pr->aux_alpha * t * t / pr->den;
            }
        }
    }
    return loss;
}

static void run_case(int arch, int G, const int *bounds, int with_aux, uint64_t seed)
{
    sf_rng r;
    rng_seed(&r, seed, 3);
    problem *pr = calloc(1, sizeof(*pr));
    pr->arch = arch;
    pr->k = 4;
    pr->G = G;
    for (int g = 0; g < G; g++)
        pr->bounds[g] = bounds[g];
    pr->aux_alpha = with_aux ? 0.25f : 0.0f;
    pr->aux_k = 3;
    sae_params p;
    float We[N * D], be[N], Wd[N * D], bd[D], g[BT * D];
    p.W_enc = We;
    p.b_enc = be;
    p.W_dec = Wd;
    p.b_dec = bd;
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int j = 0; j < D; j++) {
            Wd[i * D + j] = (float)rng_normal(&r);
            s += (double)Wd[i * D + j] * Wd[i * D + j];
        }
        for (int j = 0; j < D; j++) {
            Wd[i * D + j] /= (float)sqrt(s);
            We[i * D + j] = Wd[i * D + j] + 0.3f * (float)rng_normal(&r);
        }
        be[i] = 0.2f * (float)rng_normal(&r);
    }
    for (int j = 0; j < D; j++)
        bd[j] = 0.1f * (float)rng_normal(&r);
    for (int t = 0; t < BT * D; t++) {
        pr->x[t] = (float)rng_normal(&r);
        g[t] = (float)rng_normal(&r);
    }
    /* forward with the kernels, as the backend does */
    float u[BT * D], pre[BT * N], gate[BT * N], val[BT * N], aux_val[BT * N];
    enc_forward_cpu(pr->x, We, be, bd, BT, D, N, u, pre);
    int k = pr->k;
    if (arch == SAE_ARCH_BATCHTOPK || arch == SAE_ARCH_MATRYOSHKA) {
        float mk;
        select_batch_cpu(pre, BT, N, (int64_t)BT * k, pr->row_ptr, pr->lat, val, &mk);
    } else {
        const float *gp = NULL;
        if (arch == SAE_ARCH_GSAE) {
            gate_forward_cpu(g, Wd, BT, D, N, gate);
            gp = gate;
        }
        select_topk_cpu(pre, gp, 2.0f, NULL, BT, N, k, pr->lat, val);
        for (int b = 0; b <= BT; b++)
            pr->row_ptr[b] = b * k;
    }
    float mean[D];
    pr->den = loss_center_cpu(pr->x, BT, D, mean);
    float *dY = calloc((size_t)G * BT * D, sizeof(float));
    float xhat[BT * D], xt[BT * D];
    float coef = (float)(2.0 / (G * pr->den));
    for (int gi = G - 1; gi >= 0; gi--) {
        float *xh = gi == G - 1 ? xhat : xt;
        decode_cpu(pr->row_ptr, pr->lat, val, Wd, bd, BT, D, bounds[gi], xh);
        if (gi < G - 1)
            memcpy(dY + (size_t)gi * BT * D, dY + (size_t)(gi + 1) * BT * D, sizeof(float) * BT * D);
        loss_residual_cpu(pr->x, xh, BT, D, coef, gi < G - 1, dY + (size_t)gi * BT * D);
    }
    /* dead latents: every third latent has not fired for dead_tokens tokens */
    int64_t since[N];
    uint8_t mask[N];
    for (int i = 0; i < N; i++)
        since[i] = i % 3 == 0 ? 1000 : 10;
    int ndead = featstats_dead_mask_cpu(since, N, 1000, mask);
    cr_assert_eq(ndead, 11);
    float dYa[BT * D], ebuf[BT * D], ehat[BT * D];
    int n_groups = 1;
    if (with_aux) {
        int kaux = pr->aux_k < ndead ? pr->aux_k : ndead;
        select_topk_cpu(pre, NULL, 0.0f, mask, BT, N, kaux, pr->aux_lat, aux_val);
        for (int b = 0; b <= BT; b++)
            pr->aux_row_ptr[b] = b * kaux;
        for (int t = 0; t < BT * D; t++) {
            ebuf[t] = pr->x[t] - xhat[t];
            pr->e[t / D][t % D] = ebuf[t];
        }
        decode_cpu(pr->aux_row_ptr, pr->aux_lat, aux_val, Wd, NULL, BT, D, N, ehat);
        loss_residual_cpu(ebuf, ehat, BT, D, (float)(2.0 * pr->aux_alpha / pr->den), 0, dYa);
        pr->n_aux = pr->aux_row_ptr[BT];
        n_groups = 2;
    }
    sae_bwd_group groups[2] = {
        {pr->row_ptr, pr->lat, val, G, bounds, dY, 1},
        {pr->aux_row_ptr, pr->aux_lat, aux_val, 1, (int[]){N}, dYa, 0},
    };
    sae_grads gr;
    int rows[N], slot[N];
    float gWe[N * D], gWd[N * D], gbe[N], gbd[D];
    gr.cap_rows = N;
    gr.rows = rows;
    gr.slot = slot;
    gr.dW_enc = gWe;
    gr.dW_dec = gWd;
    gr.db_enc = gbe;
    gr.db_dec = gbd;
    backward_cpu(u, &p, BT, D, N, groups, n_groups, &gr);

    /* dense view of the sparse gradient */
    const int NP = 2 * N * D + N + D;
    double *an = calloc(NP, sizeof(double)), *P = malloc(NP * sizeof(double));
    for (int i = 0; i < N; i++) {
        int s = slot[i];
        if (s >= 0) {
            cr_assert_eq(rows[s], i);
            for (int j = 0; j < D; j++) {
                an[i * D + j] = gWe[s * D + j];
                an[N * D + N + i * D + j] = gWd[s * D + j];
            }
        }
        an[N * D + i] = gbe[i];
    }
    for (int r2 = 1; r2 < gr.n_rows; r2++)
        cr_assert(rows[r2] > rows[r2 - 1], "rows ascending");
    for (int j = 0; j < D; j++)
        an[2 * N * D + N + j] = gbd[j];
    for (int t = 0; t < N * D; t++) {
        P[t] = We[t];
        P[N * D + N + t] = Wd[t];
    }
    for (int i = 0; i < N; i++)
        P[N * D + i] = be[i];
    for (int j = 0; j < D; j++)
        P[2 * N * D + N + j] = bd[j];

    double h = 1e-6, gmax = 0.0;
    double *fd = malloc(NP * sizeof(double));
    for (int t = 0; t < NP; t++) {
        double keep = P[t];
        P[t] = keep + h;
        double lp = ref_loss(pr, P);
        P[t] = keep - h;
        double lm = ref_loss(pr, P);
        P[t] = keep;
        fd[t] = (lp - lm) / (2 * h);
        if (fabs(fd[t]) > gmax)
            gmax = fabs(fd[t]);
    }
    cr_assert(gmax > 1e-3, "gradient not trivially zero");
    int nonzero[4] = {0};
    int base[5] = {0, N * D, N * D + N, 2 * N * D + N, NP};
    for (int q = 0; q < 4; q++) {
        for (int t = base[q]; t < base[q + 1]; t++) {
            double tol = 2e-4 * gmax + 1e-3 * fabs(fd[t]);
            cr_assert(fabs(an[t] - fd[t]) <= tol, "arch %d tensor %d index %d: backward %.8g fd %.8g",
                      arch, q, t - base[q], an[t], fd[t]);
            nonzero[q] += fabs(fd[t]) > 1e-3 * gmax;
        }
        cr_assert(nonzero[q] > 0, "tensor %d has a gradient", q);
    }
    if (with_aux) {
        /* AuxK must matter: some touched row belongs only to dead latents */
        int aux_only = 0;
        for (int e = 0; e < pr->aux_row_ptr[BT]; e++) {
            int i = pr->aux_lat[e], in_main = 0;
            for (int q = 0; q < pr->row_ptr[BT]; q++)
                in_main |= pr->lat[q] == i;
            aux_only += !in_main;
        }
        cr_assert(aux_only > 0, "AuxK selects latents outside the main code");
    }
    free(dY);
    free(an);
    free(P);
    free(fd);
    free(pr);
}

static const int full[1] = {N};
static const int bands[3] = {8, 20, N};

Test(grad, topk_aux) { run_case(SAE_ARCH_TOPK, 1, full, 1, 1); }
Test(grad, topk_no_aux) { run_case(SAE_ARCH_TOPK, 1, full, 0, 2); }
Test(grad, gsae_aux) { run_case(SAE_ARCH_GSAE, 1, full, 1, 3); }
Test(grad, batchtopk_aux) { run_case(SAE_ARCH_BATCHTOPK, 1, full, 1, 4); }
Test(grad, matryoshka_aux) { run_case(SAE_ARCH_MATRYOSHKA, 3, bands, 1, 5); }
Test(grad, matryoshka_no_aux) { run_case(SAE_ARCH_MATRYOSHKA, 3, bands, 0, 6); }
