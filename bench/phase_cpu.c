/* Phase-timed replica of the CPU training step (see phases.h): the CPU twins called in the order
 * of kernels/backend.h with a clock read between phases. Buffers and thread settings mirror
 * kernels/backend_cpu.c so the phase sum can be compared with the backend's own step time. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/adam.h"
#include "../kernels/backend.h"
#include "../kernels/backward.h"
#include "../kernels/decode.h"
#include "../kernels/encode.h"
#include "../kernels/featstats.h"
#include "../kernels/loss.h"
#include "../kernels/select.h"
#include "../kernels/sf_check.h"
#include "bench_util.h"
#include "phases.h"

const char *const bench_phase_names[PH_COUNT] = {"upload", "encode",   "gate",      "select",
                                                 "decode", "auxk",     "backward",  "optimizer",
                                                 "stats"};

struct phase_runner {
    sae_hparams hp;
    int threads, max_B, G, kcap, kaux_cap;
    int bounds[SAE_MAX_PREFIXES], full_bound[1];
    sae_params p;
    sae_state s;
    float *u, *pre, *gate, *xhat, *xtmp, *ebuf, *dY, *dY_aux, *mean;
    uint8_t *mask;
    int *row_ptr, *lat, *aux_row_ptr, *aux_lat;
    float *val, *aux_val;
    sae_grads gr;
    sae_bwd_scratch ws;
};

void phase_mark_dead(int64_t *since_fired, int n, int64_t dead_tokens, double dead_frac)
{
    if (dead_frac <= 0.0)
        return;
    /* a multiplicative hash spreads the dead latents over the whole index range */
    for (int i = 0; i < n; i++)
        if ((double)(((uint32_t)i * 2654435761u) % 100000u) < dead_frac * 100000.0)
            since_fired[i] = dead_tokens;
}

static int kaux_cap_of(const sae_hparams *hp)
{
    return hp->aux_alpha > 0.0f && hp->aux_k > 0 ? (hp->aux_k < hp->n ? hp->aux_k : hp->n) : 0;
}

int64_t phase_cpu_bytes(const sae_hparams *hp, int B)
{
    int64_t d = hp->d, n = hp->n, G = hp->arch == SAE_ARCH_MATRYOSHKA ? hp->n_prefixes : 1;
    int64_t nd = n * d, Bd = (int64_t)B * d, Bn = (int64_t)B * n;
    int64_t ents = (int64_t)B * (hp->k + kaux_cap_of(hp));
    int64_t rows = ents < n ? ents : n;
    int64_t f = 6 * nd + Bn * (hp->arch == SAE_ARCH_GSAE ? 2 : 1) + (6 + G) * Bd + 2 * rows * d;
    return 4 * f + 20 * ents + 64 * n;
}

phase_runner *phase_cpu_new(const sae_hparams *hp, int max_B, int threads, const sae_params *init,
                            double dead_frac)
{
    phase_runner *r = calloc(1, sizeof *r);
    SF_CHECK(r != NULL);
    int d = hp->d, n = hp->n;
    r->hp = *hp;
    r->max_B = max_B;
    r->threads = threads > 0 ? threads : omp_get_num_procs();
    r->G = hp->arch == SAE_ARCH_MATRYOSHKA ? hp->n_prefixes : 1;
    for (int j = 0; j < r->G; j++)
        r->bounds[j] = r->G == 1 ? n : hp->prefixes[j];
    r->full_bound[0] = n;
    sae_params_alloc(&r->p, d, n);
    sae_state_alloc(&r->s, d, n);
    size_t nd = (size_t)n * d;
    memcpy(r->p.W_enc, init->W_enc, nd * sizeof(float));
    memcpy(r->p.W_dec, init->W_dec, nd * sizeof(float));
    memcpy(r->p.b_enc, init->b_enc, (size_t)n * sizeof(float));
    memcpy(r->p.b_dec, init->b_dec, (size_t)d * sizeof(float));
    phase_mark_dead(r->s.since_fired, n, hp->dead_tokens, dead_frac);
    size_t Bd = (size_t)max_B * d, Bn = (size_t)max_B * n;
    r->u = bench_alloc(Bd * 4);
    r->pre = bench_alloc(Bn * 4);
    r->gate = hp->arch == SAE_ARCH_GSAE ? bench_alloc(Bn * 4) : NULL;
    r->xhat = bench_alloc(Bd * 4);
    r->xtmp = bench_alloc(Bd * 4);
    r->ebuf = bench_alloc(Bd * 4);
    r->dY = bench_alloc((size_t)r->G * Bd * 4);
    r->dY_aux = bench_alloc(Bd * 4);
    r->mean = bench_alloc((size_t)d * 4);
    r->mask = bench_alloc((size_t)n);
    r->kcap = hp->k;
    r->kaux_cap = kaux_cap_of(hp);
    r->row_ptr = bench_alloc(((size_t)max_B + 1) * sizeof(int));
    r->lat = bench_alloc((size_t)max_B * r->kcap * sizeof(int));
    r->val = bench_alloc((size_t)max_B * r->kcap * sizeof(float));
    r->aux_row_ptr = bench_alloc(((size_t)max_B + 1) * sizeof(int));
    r->aux_lat = bench_alloc((size_t)max_B * r->kaux_cap * sizeof(int) + 4);
    r->aux_val = bench_alloc((size_t)max_B * r->kaux_cap * sizeof(float) + 4);
    r->aux_row_ptr[0] = 0;
    size_t all = (size_t)max_B * (size_t)(r->kcap + r->kaux_cap);
    r->gr.cap_rows = all < (size_t)n ? (int)all : n;
    r->gr.rows = bench_alloc((size_t)r->gr.cap_rows * sizeof(int));
    r->gr.slot = bench_alloc((size_t)n * sizeof(int));
    r->gr.dW_enc = bench_alloc((size_t)r->gr.cap_rows * d * sizeof(float));
    r->gr.dW_dec = bench_alloc((size_t)r->gr.cap_rows * d * sizeof(float));
    r->gr.db_enc = bench_alloc((size_t)n * sizeof(float));
    r->gr.db_dec = bench_alloc((size_t)d * sizeof(float));
    bwd_scratch_init(&r->ws, n, (int64_t)all);
    return r;
}

void phase_cpu_free(phase_runner *r)
{
    if (!r)
        return;
    sae_params_free(&r->p);
    sae_state_free(&r->s);
    void *bufs[] = {r->u,       r->pre,        r->gate,     r->xhat,      r->xtmp,
                    r->ebuf,    r->dY,         r->dY_aux,   r->mean,      r->mask,
                    r->row_ptr, r->lat,        r->val,      r->aux_row_ptr, r->aux_lat,
                    r->aux_val, r->gr.rows,    r->gr.slot,  r->gr.dW_enc, r->gr.dW_dec,
                    r->gr.db_enc, r->gr.db_dec};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    bwd_scratch_free(&r->ws);
    free(r);
}

double phase_cpu_step(phase_runner *r, const float *x, const float *g, int B, int k, float lr,
                      int64_t step, double *ph)
{
    const sae_hparams *hp = &r->hp;
    int d = hp->d, n = hp->n, G = r->G;
    SF_CHECK(B >= 1 && B <= r->max_B && k >= 1 && k <= r->kcap);
    int saved_omp = omp_get_max_threads(), saved_blas = openblas_get_num_threads();
    omp_set_num_threads(r->threads);
    openblas_set_num_threads(r->threads);
    for (int i = 0; i < PH_COUNT; i++)
        ph[i] = 0.0;
    size_t Bd = (size_t)B * d;
    double t0 = bench_now(), t = t0, now;
#define LAP(phase) (now = bench_now(), ph[phase] += now - t, t = now)

    int ndead = featstats_dead_mask_cpu(r->s.since_fired, n, hp->dead_tokens, r->mask);
    LAP(PH_STATS);
    enc_forward_cpu(x, r->p.W_enc, r->p.b_enc, r->p.b_dec, B, d, n, r->u, r->pre);
    LAP(PH_ENCODE);
    const float *gate = NULL;
    if (hp->arch == SAE_ARCH_GSAE) {
        gate_forward_cpu(g, r->p.W_dec, B, d, n, r->gate);
        gate = r->gate;
    }
    LAP(PH_GATE);
    if (hp->arch == SAE_ARCH_BATCHTOPK || hp->arch == SAE_ARCH_MATRYOSHKA) {
        float min_kept;
        select_batch_cpu(r->pre, B, n, (int64_t)B * k, r->row_ptr, r->lat, r->val, &min_kept);
        r->s.theta = r->s.theta < 0.0f ? min_kept
                                       : hp->theta_ema * r->s.theta + (1.0f - hp->theta_ema) * min_kept;
    } else {
        select_topk_cpu(r->pre, gate, hp->gsae_beta, NULL, B, n, k, r->lat, r->val);
        for (int b = 0; b <= B; b++)
            r->row_ptr[b] = b * k;
    }
    LAP(PH_SELECT);
    double den = loss_center_cpu(x, B, d, r->mean);
    double den_eff = den > 0.0 ? den : 1.0;
    float coef = (float)(2.0 / ((double)G * den_eff));
    for (int gi = G - 1; gi >= 0; gi--) {
        float *xh = gi == G - 1 ? r->xhat : r->xtmp;
        float *dy = r->dY + (size_t)gi * Bd;
        decode_cpu(r->row_ptr, r->lat, r->val, r->p.W_dec, r->p.b_dec, B, d, r->bounds[gi], xh);
        if (gi < G - 1)
            memcpy(dy, dy + Bd, Bd * sizeof(float));
        loss_residual_cpu(x, xh, B, d, coef, gi < G - 1, dy);
    }
    LAP(PH_DECODE);
    int n_groups = 1;
    if (hp->aux_alpha > 0.0f && ndead > 0 && r->kaux_cap > 0) {
        int kaux = ndead < r->kaux_cap ? ndead : r->kaux_cap;
        select_topk_cpu(r->pre, NULL, 0.0f, r->mask, B, n, kaux, r->aux_lat, r->aux_val);
        for (int b = 0; b <= B; b++)
            r->aux_row_ptr[b] = b * kaux;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < Bd; i++)
            r->ebuf[i] = x[i] - r->xhat[i];
        decode_cpu(r->aux_row_ptr, r->aux_lat, r->aux_val, r->p.W_dec, NULL, B, d, n, r->xtmp);
        float acoef = (float)(2.0 * hp->aux_alpha / den_eff);
        loss_residual_cpu(r->ebuf, r->xtmp, B, d, acoef, 0, r->dY_aux);
        n_groups = 2;
    }
    LAP(PH_AUXK);
    sae_bwd_group groups[2] = {
        {r->row_ptr, r->lat, r->val, G, r->bounds, r->dY, 1},
        {r->aux_row_ptr, r->aux_lat, r->aux_val, 1, r->full_bound, r->dY_aux, 0},
    };
    backward_cpu_ws(r->u, &r->p, B, d, n, groups, n_groups, &r->gr, &r->ws);
    dec_grad_project_cpu(r->p.W_dec, d, &r->gr);
    double gnorm = sqrt(grad_sqnorm_cpu(&r->gr, d, n));
    float gscale = hp->grad_clip > 0.0f && gnorm > hp->grad_clip ? (float)(hp->grad_clip / gnorm) : 1.0f;
    LAP(PH_BACKWARD);
    r->s.adam_t += 1;
    double at = (double)r->s.adam_t;
    float step_size = (float)((double)lr / (1.0 - pow((double)hp->adam_b1, at)));
    float bc2_sqrt = (float)sqrt(1.0 - pow((double)hp->adam_b2, at));
    adam_step_cpu(&r->p, &r->s, &r->gr, d, n, step_size, bc2_sqrt, hp->adam_b1, hp->adam_b2,
                  hp->adam_eps, gscale);
    LAP(PH_OPTIM);
    featstats_update_cpu(r->row_ptr, r->lat, r->val, gate, B, n, step, &r->s);
    if (g) {
        double num, gden;
        loss_gw_cpu(g, x, r->xhat, r->mean, B, d, &num, &gden);
    }
    LAP(PH_STATS);
#undef LAP
    omp_set_num_threads(saved_omp);
    openblas_set_num_threads(saved_blas);
    return t - t0;
}
