/* CPU backend: one SAE's training step on the host, composed from the CPU twins of the kernels in
 * the order fixed by backend.h. All buffers are sized at creation for max_B (the code buffers grow
 * once if a later step asks for a larger k than any before). OpenMP threads and OpenBLAS threads
 * are both set to the backend's thread count for the duration of each call. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "adam.h"
#include "auxk.h"
#include "backend.h"
#include "backward.h"
#include "bselect_dist.h"
#include "dist_cpu.h"
#include "decode.h"
#include "encode.h"
#include "featstats.h"
#include "loss.h"
#include "select.h"
#include "sf_check.h"

typedef struct cpu_impl {
    int threads;
    sae_params p;
    sae_state s;
    int G;                       /* reconstructions in the loss (matryoshka prefixes, else 1) */
    int bounds[SAE_MAX_PREFIXES];
    int full_bound[1];
    /* step buffers */
    float *u, *pre, *gate;       /* (max_B, d), (max_B, n), (max_B, n) gsae only */
    float *xhat, *xtmp, *ebuf;   /* (max_B, d) */
    float *dY, *dY_aux;          /* (G, max_B, d), (max_B, d) */
    float *mean;                 /* (d) */
    uint8_t *mask;               /* (n) */
    int kcap;                    /* main code capacity per token */
    int *row_ptr, *lat;          /* (max_B + 1), (max_B * kcap) */
    float *val;
    int kaux_cap;                /* min(aux_k, n), 0 when AuxK is off */
    int *aux_row_ptr, *aux_lat;  /* (max_B + 1), (max_B * kaux_cap) */
    float *aux_val;
    sae_grads gr;
    sae_bwd_scratch ws;
    auxk_dense ad;               /* AuxK through dense products over the dead set (auxk.h) */
    /* data parallel (dist.h): the dense gradient buffer and its all-latents view */
    int code_mul;                /* main code rows per local row: world for batch rules, else 1 */
    float *dbuf;                 /* (dist_grad_floats(d, n)) */
    int *ident;                  /* (n) */
    sae_grads dgr;
    /* inference codes (eval_batch, encode); grow on demand for the threshold rule */
    int64_t ecap;
    int *erow_ptr, *elat;
    float *eval;
    /* saved thread settings of the caller */
    int saved_omp, saved_blas;
} cpu_impl;

static void *xmalloc(size_t count, size_t size)
{
    void *p = malloc((count ? count : 1) * size);
    SF_CHECK(p != NULL);
    return p;
}

static void enter(cpu_impl *c)
{
    c->saved_omp = omp_get_max_threads();
    c->saved_blas = openblas_get_num_threads();
    omp_set_num_threads(c->threads);
    openblas_set_num_threads(c->threads);
}

static void leave(cpu_impl *c)
{
    omp_set_num_threads(c->saved_omp);
    openblas_set_num_threads(c->saved_blas);
}

/* Main-code buffers, gradient rows and backward scratch for per-token k up to kcap. */
static void size_codes(sae_backend *be, int kcap)
{
    cpu_impl *c = be->impl;
    int n = be->hp.n, d = be->hp.d;
    free(c->lat);
    free(c->val);
    free(c->gr.rows);
    free(c->gr.dW_enc);
    free(c->gr.dW_dec);
    bwd_scratch_free(&c->ws);
    c->kcap = kcap;
    /* a rank's share of a global batch selection can exceed its B k (never its B n) */
    size_t main_entries = (size_t)be->max_B * (size_t)kcap * (size_t)c->code_mul;
    if (main_entries > (size_t)be->max_B * (size_t)n)
        main_entries = (size_t)be->max_B * (size_t)n;
    size_t all_entries = main_entries + (size_t)be->max_B * (size_t)c->kaux_cap;
    c->lat = xmalloc(main_entries, sizeof(int));
    c->val = xmalloc(main_entries, sizeof(float));
    c->gr.cap_rows = all_entries < (size_t)n ? (int)all_entries : n;
    c->gr.rows = xmalloc((size_t)c->gr.cap_rows, sizeof(int));
    c->gr.dW_enc = xmalloc((size_t)c->gr.cap_rows * d, sizeof(float));
    c->gr.dW_dec = xmalloc((size_t)c->gr.cap_rows * d, sizeof(float));
    bwd_scratch_init(&c->ws, n, (int64_t)all_entries);
}

static void ensure_k(sae_backend *be, int k)
{
    cpu_impl *c = be->impl;
    if (k > c->kcap)
        size_codes(be, k);
}

static void ensure_ecap(cpu_impl *c, int64_t need)
{
    if (need <= c->ecap)
        return;
    free(c->elat);
    free(c->eval);
    c->ecap = need;
    c->elat = xmalloc((size_t)need, sizeof(int));
    c->eval = xmalloc((size_t)need, sizeof(float));
}

static void cpu_free(sae_backend *be)
{
    if (!be)
        return;
    cpu_impl *c = be->impl;
    sae_params_free(&c->p);
    sae_state_free(&c->s);
    free(c->u);
    free(c->pre);
    free(c->gate);
    free(c->xhat);
    free(c->xtmp);
    free(c->ebuf);
    free(c->dY);
    free(c->dY_aux);
    free(c->mean);
    free(c->mask);
    free(c->row_ptr);
    free(c->lat);
    free(c->val);
    free(c->aux_row_ptr);
    free(c->aux_lat);
    free(c->aux_val);
    free(c->gr.rows);
    free(c->gr.slot);
    free(c->gr.dW_enc);
    free(c->gr.dW_dec);
    free(c->gr.db_enc);
    free(c->gr.db_dec);
    bwd_scratch_free(&c->ws);
    auxk_dense_free(&c->ad);
    free(c->erow_ptr);
    free(c->elat);
    free(c->eval);
    free(c->dbuf);
    free(c->ident);
    free(c);
    free(be);
}

static void cpu_set_params(sae_backend *be, const sae_params *h)
{
    cpu_impl *c = be->impl;
    size_t nd = (size_t)be->hp.n * be->hp.d;
    memcpy(c->p.W_enc, h->W_enc, nd * sizeof(float));
    memcpy(c->p.b_enc, h->b_enc, (size_t)be->hp.n * sizeof(float));
    memcpy(c->p.W_dec, h->W_dec, nd * sizeof(float));
    memcpy(c->p.b_dec, h->b_dec, (size_t)be->hp.d * sizeof(float));
}

static void cpu_get_params(sae_backend *be, sae_params *h)
{
    cpu_impl *c = be->impl;
    size_t nd = (size_t)be->hp.n * be->hp.d;
    memcpy(h->W_enc, c->p.W_enc, nd * sizeof(float));
    memcpy(h->b_enc, c->p.b_enc, (size_t)be->hp.n * sizeof(float));
    memcpy(h->W_dec, c->p.W_dec, nd * sizeof(float));
    memcpy(h->b_dec, c->p.b_dec, (size_t)be->hp.d * sizeof(float));
}

static void copy_state(sae_state *dst, const sae_state *src, int d, int n)
{
    size_t nd = (size_t)n * d, fn = (size_t)n * sizeof(float), fd = (size_t)d * sizeof(float);
    memcpy(dst->m_W_enc, src->m_W_enc, nd * sizeof(float));
    memcpy(dst->v_W_enc, src->v_W_enc, nd * sizeof(float));
    memcpy(dst->m_b_enc, src->m_b_enc, fn);
    memcpy(dst->v_b_enc, src->v_b_enc, fn);
    memcpy(dst->m_W_dec, src->m_W_dec, nd * sizeof(float));
    memcpy(dst->v_W_dec, src->v_W_dec, nd * sizeof(float));
    memcpy(dst->m_b_dec, src->m_b_dec, fd);
    memcpy(dst->v_b_dec, src->v_b_dec, fd);
    dst->adam_t = src->adam_t;
    memcpy(dst->since_fired, src->since_fired, (size_t)n * sizeof(int64_t));
    memcpy(dst->fire_count, src->fire_count, (size_t)n * sizeof(int64_t));
    memcpy(dst->act_sum, src->act_sum, (size_t)n * sizeof(double));
    memcpy(dst->act_max, src->act_max, fn);
    memcpy(dst->last_fired_step, src->last_fired_step, (size_t)n * sizeof(int64_t));
    memcpy(dst->gate_sum, src->gate_sum, (size_t)n * sizeof(double));
    dst->theta = src->theta;
}

static void cpu_set_state(sae_backend *be, const sae_state *h)
{
    copy_state(&((cpu_impl *)be->impl)->s, h, be->hp.d, be->hp.n);
}

static void cpu_get_state(sae_backend *be, sae_state *h)
{
    copy_state(h, &((cpu_impl *)be->impl)->s, be->hp.d, be->hp.n);
}

static int64_t count_entries(const int *lat, int64_t len)
{
    int64_t cnt = 0;
    for (int64_t e = 0; e < len; e++)
        cnt += lat[e] >= 0;
    return cnt;
}

static int is_batch_arch(sae_arch a)
{
    return a == SAE_ARCH_BATCHTOPK || a == SAE_ARCH_MATRYOSHKA;
}

static const sae_dist *dist_of(const sae_backend *be)
{
    return sae_dist_on(be->dist) ? be->dist : NULL;
}

/* Step 4: the main code; returns its entry count. */
static int64_t train_select(sae_backend *be, const float *gate, int B, int64_t Bg, int k)
{
    cpu_impl *c = be->impl;
    const sae_hparams *hp = &be->hp;
    int n = hp->n;
    if (!is_batch_arch(hp->arch)) {
        select_topk_cpu(c->pre, gate, hp->gsae_beta, NULL, B, n, k, c->lat, c->val);
        for (int b = 0; b <= B; b++)
            c->row_ptr[b] = b * k;
        return count_entries(c->lat, (int64_t)B * k);
    }
    float min_kept;
    const sae_dist *dd = dist_of(be);
    int64_t entries = dd ? select_batch_dist_cpu(c->pre, B, n, Bg * k, dd, c->row_ptr, c->lat, c->val, &min_kept)
                         : select_batch_cpu(c->pre, B, n, (int64_t)B * k, c->row_ptr, c->lat, c->val, &min_kept);
    if (c->s.theta < 0.0f)
        c->s.theta = min_kept;
    else
        c->s.theta = hp->theta_ema * c->s.theta + (1.0f - hp->theta_ema) * min_kept;
    return entries;
}

static void cpu_train_step(sae_backend *be, const float *x, const float *g, int B, int k,
                           float lr, int64_t step, sae_metrics *out)
{
    cpu_impl *c = be->impl;
    const sae_hparams *hp = &be->hp;
    const sae_dist *dd = dist_of(be);
    int d = hp->d, n = hp->n, G = c->G;
    SF_CHECK(B >= 1 && B <= be->max_B && k >= 1);
    SF_CHECK(hp->arch != SAE_ARCH_GSAE || g != NULL);
    /* the clock covers the whole step, thread set-up and code resizing included (as stats) */
    sae_prof prof;
    sae_prof_begin(&prof, be->profile, be->phase_s);
    enter(c);
    ensure_k(be, k);
    memset(out, 0, sizeof(*out));
    size_t Bd = (size_t)B * d;

    /* 1. dead mask from the state before this step */
    int ndead = featstats_dead_mask_cpu(c->s.since_fired, n, hp->dead_tokens, c->mask);
    sae_prof_mark(&prof, SAE_PH_STATS);
    /* 2-3. encoder, gate */
    enc_forward_cpu(x, c->p.W_enc, c->p.b_enc, c->p.b_dec, B, d, n, c->u, c->pre);
    sae_prof_mark(&prof, SAE_PH_ENCODE);
    const float *gate = NULL;
    if (hp->arch == SAE_ARCH_GSAE) {
        gate_forward_cpu(g, c->p.W_dec, B, d, n, c->gate);
        gate = c->gate;
    }
    sae_prof_mark(&prof, SAE_PH_GATE);
    /* 5 first under data parallelism: the global batch size sets the selection's budget */
    int64_t Bg = B;
    double den = dd ? dist_center_cpu(dd, x, B, d, c->mean, &Bg) : 0.0;
    /* 4. selection */
    int64_t entries = train_select(be, gate, B, Bg, k);
    sae_prof_mark(&prof, SAE_PH_SELECT);
    /* 5. centring; a zero spread (e.g. B = 1) falls back to plain squared error */
    if (!dd)
        den = loss_center_cpu(x, B, d, c->mean);
    double den_eff = den > 0.0 ? den : 1.0;
    /* 6. prefixes from the full one down, so dY[j] = sum_{g >= j} is a running suffix sum.
     * sums[]: per-prefix errors, AuxK error, entries, gw num/den (summed over ranks below). */
    double sums[SAE_MAX_PREFIXES + 4] = {0};
    float coef = (float)(2.0 / ((double)G * den_eff));
    for (int gi = G - 1; gi >= 0; gi--) {
        float *xh = gi == G - 1 ? c->xhat : c->xtmp;
        float *dy = c->dY + (size_t)gi * Bd;
        decode_cpu(c->row_ptr, c->lat, c->val, c->p.W_dec, c->p.b_dec, B, d, c->bounds[gi], xh);
        if (gi < G - 1)
            memcpy(dy, dy + Bd, Bd * sizeof(float));
        sums[gi] = loss_residual_cpu(x, xh, B, d, coef, gi < G - 1, dy);
    }
    sae_prof_mark(&prof, SAE_PH_DECODE);
    /* 7. AuxK on dead latents against the (constant) residual of the full reconstruction */
    int n_groups = 1;
    int kaux = 0, aux_dense = 0, aux_on = 0;
    if (hp->aux_alpha > 0.0f && ndead > 0 && c->kaux_cap > 0) {
        aux_on = 1;
        kaux = ndead < c->kaux_cap ? ndead : c->kaux_cap;
        select_topk_cpu(c->pre, NULL, 0.0f, c->mask, B, n, kaux, c->aux_lat, c->aux_val);
        for (int b = 0; b <= B; b++)
            c->aux_row_ptr[b] = b * kaux;
#pragma omp parallel for schedule(static)
        for (size_t t = 0; t < Bd; t++)
            c->ebuf[t] = x[t] - c->xhat[t];
        /* few dead latents relative to k_aux: four GEMMs over the dead set beat B k_aux gathers */
        aux_dense = auxk_dense_wanted(ndead, kaux);
        if (aux_dense)
            auxk_dense_forward(&c->ad, c->mask, n, c->p.W_dec, c->aux_lat, c->aux_val, B, kaux, c->xtmp);
        else
            decode_cpu(c->aux_row_ptr, c->aux_lat, c->aux_val, c->p.W_dec, NULL, B, d, n, c->xtmp);
        float acoef = (float)(2.0 * hp->aux_alpha / den_eff);
        sums[G] = loss_residual_cpu(c->ebuf, c->xtmp, B, d, acoef, 0, c->dY_aux);
        n_groups = aux_dense ? 1 : 2;
    }
    sae_prof_mark(&prof, SAE_PH_AUXK);
    /* 8. backward (summed over ranks), decoder projection, norm and clipping factor */
    sae_bwd_group groups[2] = {
        {c->row_ptr, c->lat, c->val, G, c->bounds, c->dY, 1},
        {c->aux_row_ptr, c->aux_lat, c->aux_val, 1, c->full_bound, c->dY_aux, 0},
    };
    backward_cpu_ws(c->u, &c->p, B, d, n, groups, n_groups, &c->gr, &c->ws);
    if (aux_dense)
        auxk_dense_backward(&c->ad, c->u, c->dY_aux, &c->p, B, n, &c->gr);
    sae_grads *gr = &c->gr;
    if (dd) {
        dist_grads_cpu(dd, &c->gr, c->row_ptr, c->lat, B, d, n, c->dbuf, c->ident, &c->dgr);
        gr = &c->dgr;
    }
    dec_grad_project_cpu(c->p.W_dec, d, gr);
    double gnorm = sqrt(grad_sqnorm_cpu(gr, d, n));
    float gscale = hp->grad_clip > 0.0f && gnorm > hp->grad_clip ? (float)(hp->grad_clip / gnorm) : 1.0f;
    sae_prof_mark(&prof, SAE_PH_BACKWARD);
    /* 9. Adam with bias corrections from the step count */
    c->s.adam_t += 1;
    double t = (double)c->s.adam_t;
    float step_size = (float)((double)lr / (1.0 - pow((double)hp->adam_b1, t)));
    float bc2_sqrt = (float)sqrt(1.0 - pow((double)hp->adam_b2, t));
    adam_step_cpu(&c->p, &c->s, gr, d, n, step_size, bc2_sqrt,
                  hp->adam_b1, hp->adam_b2, hp->adam_eps, gscale);
    sae_prof_mark(&prof, SAE_PH_OPTIM);
    /* 10. statistics from the main code; dead counters over every rank's rows */
    featstats_update_cpu(c->row_ptr, c->lat, c->val, gate, B, n, step, &c->s);
    if (dd)
        dist_since_fired_cpu(c->dgr.db_dec + d, B, Bg, n, c->s.since_fired);

    sums[G + 1] = (double)entries;
    if (g)
        loss_gw_cpu(g, x, c->xhat, c->mean, B, d, &sums[G + 2], &sums[G + 3]);
    if (dd)
        dd->sum_f64(dd, sums, G + 4);
    double recon = 0.0;
    for (int gi = G - 1; gi >= 0; gi--)
        recon += sums[gi] / den_eff;
    recon /= G;
    out->fvu_num = sums[G - 1];
    out->fvu_den = den;
    out->fvu = sums[G - 1] / den_eff;
    out->auxk = aux_on ? sums[G] / den_eff : 0.0;
    out->loss = recon + hp->aux_alpha * out->auxk;
    out->l0 = sums[G + 1] / (double)Bg;
    out->dead_frac = (double)ndead / n;
    out->grad_norm = gnorm;
    out->gw_err = -1.0;
    if (g) {
        out->gw_num = sums[G + 2];
        out->gw_den = sums[G + 3];
        out->gw_err = out->gw_den > 0.0 ? out->gw_num / out->gw_den : 0.0;
    }
    out->tokens = Bg;
    leave(c);
    sae_prof_mark(&prof, SAE_PH_STATS);
}

/* Inference codes into erow_ptr/elat/eval (topk rules keep their padding). Returns the gate
 * used (gsae with g) or NULL. Assumes enter() and c->pre filled by enc_forward_cpu (B > 0).
 * Bg: the global batch (data parallel; B otherwise) that the batch rule selects over; local:
 * this rank's rows alone (encode, which dist.h keeps free of collectives). */
static const float *infer_codes(sae_backend *be, const float *g, int B, int64_t Bg, int k, int local)
{
    cpu_impl *c = be->impl;
    const sae_hparams *hp = &be->hp;
    const sae_dist *dd = local ? NULL : dist_of(be);
    int n = hp->n;
    c->erow_ptr[0] = 0;
    if (is_batch_arch(hp->arch)) {
        if (c->s.theta < 0.0f) {
            float mk;
            int64_t cap = Bg * k < (int64_t)B * n ? Bg * k : (int64_t)B * n;
            ensure_ecap(c, cap > 0 ? cap : 1);
            if (dd)
                select_batch_dist_cpu(c->pre, B, n, Bg * k, dd, c->erow_ptr, c->elat, c->eval, &mk);
            else
                select_batch_cpu(c->pre, B, n, (int64_t)B * k, c->erow_ptr, c->elat, c->eval, &mk);
        } else if (B > 0) {
            int64_t need = select_threshold_cpu(c->pre, c->s.theta, B, n, c->ecap,
                                                c->erow_ptr, c->elat, c->eval);
            if (need > c->ecap) {
                ensure_ecap(c, need);
                select_threshold_cpu(c->pre, c->s.theta, B, n, c->ecap, c->erow_ptr, c->elat, c->eval);
            }
        }
        return NULL;
    }
    if (B == 0)
        return NULL;
    const float *gate = NULL;
    if (hp->arch == SAE_ARCH_GSAE && g) {
        gate_forward_cpu(g, c->p.W_dec, B, hp->d, n, c->gate);
        gate = c->gate;
    }
    ensure_ecap(c, (int64_t)B * k);
    select_topk_cpu(c->pre, gate, hp->gsae_beta, NULL, B, n, k, c->elat, c->eval);
    for (int b = 0; b <= B; b++)
        c->erow_ptr[b] = b * k;
    return gate;
}

/* Under data parallelism a rank whose share of the last eval batch is empty still calls with
 * B = 0 and joins the collectives; acc then gets the global batch's sums on every rank. */
static void cpu_eval_batch(sae_backend *be, const float *x, const float *g, int B, int k,
                           sae_metrics *acc)
{
    cpu_impl *c = be->impl;
    const sae_dist *dd = dist_of(be);
    int d = be->hp.d, n = be->hp.n;
    SF_CHECK(B >= (dd ? 0 : 1) && B <= be->max_B && k >= 1);
    enter(c);
    int64_t Bg = B;
    double den = dd ? dist_center_cpu(dd, x, B, d, c->mean, &Bg) : 0.0;
    if (B > 0)
        enc_forward_cpu(x, c->p.W_enc, c->p.b_enc, c->p.b_dec, B, d, n, c->u, c->pre);
    infer_codes(be, g, B, Bg, k, 0);
    if (!dd)
        den = loss_center_cpu(x, B, d, c->mean);
    double sums[4] = {0}; /* error, entries, gw num, gw den */
    if (B > 0) {
        decode_cpu(c->erow_ptr, c->elat, c->eval, c->p.W_dec, c->p.b_dec, B, d, n, c->xhat);
        sums[0] = loss_residual_cpu(x, c->xhat, B, d, 0.0f, 0, NULL);
        sums[1] = (double)count_entries(c->elat, c->erow_ptr[B]);
        if (g)
            loss_gw_cpu(g, x, c->xhat, c->mean, B, d, &sums[2], &sums[3]);
    }
    if (dd)
        dd->sum_f64(dd, sums, 4);
    acc->fvu_num += sums[0];
    acc->fvu_den += den;
    acc->l0 += sums[1];
    if (g) {
        acc->gw_num += sums[2];
        acc->gw_den += sums[3];
    }
    acc->tokens += Bg;
    leave(c);
}

static int64_t cpu_encode(sae_backend *be, const float *x, const float *g, int B, int k, int64_t cap,
                          int *row_ptr, int *lat, float *val, float *gate_val)
{
    cpu_impl *c = be->impl;
    int d = be->hp.d, n = be->hp.n;
    SF_CHECK(B >= 1 && B <= be->max_B && k >= 1);
    enter(c);
    enc_forward_cpu(x, c->p.W_enc, c->p.b_enc, c->p.b_dec, B, d, n, c->u, c->pre);
    const float *gate = infer_codes(be, g, B, B, k, 1);
    /* Compact: drop top-k padding, keep ascending latent order. */
    row_ptr[0] = 0;
    for (int b = 0; b < B; b++)
        row_ptr[b + 1] = row_ptr[b] + (int)count_entries(c->elat + c->erow_ptr[b],
                                                          c->erow_ptr[b + 1] - c->erow_ptr[b]);
    int64_t total = row_ptr[B];
    if (total <= cap) {
        for (int b = 0; b < B; b++) {
            int o = row_ptr[b];
            for (int e = c->erow_ptr[b]; e < c->erow_ptr[b + 1]; e++) {
                int i = c->elat[e];
                if (i < 0)
                    continue;
                lat[o] = i;
                val[o] = c->eval[e];
                if (gate_val)
                    gate_val[o] = gate ? gate[(size_t)b * n + i] : 0.0f;
                o++;
            }
        }
    }
    leave(c);
    return total;
}

/* Data parallel: the dense gradient buffer, and room for a rank's share of a global batch
 * selection (up to world times its own B k). */
static void cpu_set_dist(sae_backend *be, const sae_dist *dd)
{
    cpu_impl *c = be->impl;
    be->dist = dd;
    if (!sae_dist_on(dd))
        return;
    int d = be->hp.d, n = be->hp.n;
    SF_CHECK((int64_t)be->max_B * dd->world < (1 << 24)); /* fire counts travel as floats */
    if (!c->dbuf) {
        c->dbuf = xmalloc((size_t)dist_grad_floats(d, n), sizeof(float));
        c->ident = xmalloc((size_t)n, sizeof(int));
    }
    int mul = is_batch_arch(be->hp.arch) ? dd->world : 1;
    if (mul != c->code_mul) {
        c->code_mul = mul;
        size_codes(be, c->kcap);
    }
}

sae_backend *backend_cpu_new(const sae_hparams *hp, int max_B, int threads)
{
    SF_CHECK(hp->d > 0 && hp->n > 0 && hp->k > 0 && max_B > 0);
    sae_backend *be = calloc(1, sizeof(*be));
    cpu_impl *c = calloc(1, sizeof(*c));
    SF_CHECK(be && c);
    be->name = "cpu";
    be->profile = sae_profile_env();
    be->hp = *hp;
    be->max_B = max_B;
    be->impl = c;
    be->free = cpu_free;
    be->set_params = cpu_set_params;
    be->get_params = cpu_get_params;
    be->set_state = cpu_set_state;
    be->get_state = cpu_get_state;
    be->train_step = cpu_train_step;
    be->eval_batch = cpu_eval_batch;
    be->encode = cpu_encode;
    be->set_dist = cpu_set_dist;

    int d = hp->d, n = hp->n;
    c->threads = threads > 0 ? threads : omp_get_num_procs();
    c->code_mul = 1;
    if (hp->arch == SAE_ARCH_MATRYOSHKA) {
        SF_CHECK(hp->n_prefixes >= 1 && hp->n_prefixes <= SAE_MAX_PREFIXES);
        SF_CHECK(hp->prefixes[hp->n_prefixes - 1] == n);
        for (int j = 0; j < hp->n_prefixes; j++) {
            SF_CHECK(hp->prefixes[j] > 0 && (j == 0 || hp->prefixes[j] > hp->prefixes[j - 1]));
            c->bounds[j] = hp->prefixes[j];
        }
        c->G = hp->n_prefixes;
    } else {
        c->G = 1;
        c->bounds[0] = n;
    }
    c->full_bound[0] = n;
    sae_params_alloc(&c->p, d, n);
    sae_state_alloc(&c->s, d, n);
    size_t Bd = (size_t)max_B * d, Bn = (size_t)max_B * n;
    c->u = xmalloc(Bd, sizeof(float));
    c->pre = xmalloc(Bn, sizeof(float));
    if (hp->arch == SAE_ARCH_GSAE)
        c->gate = xmalloc(Bn, sizeof(float));
    c->xhat = xmalloc(Bd, sizeof(float));
    c->xtmp = xmalloc(Bd, sizeof(float));
    c->ebuf = xmalloc(Bd, sizeof(float));
    c->dY = xmalloc((size_t)c->G * Bd, sizeof(float));
    c->dY_aux = xmalloc(Bd, sizeof(float));
    c->mean = xmalloc((size_t)d, sizeof(float));
    c->mask = xmalloc((size_t)n, sizeof(uint8_t));
    c->row_ptr = xmalloc((size_t)max_B + 1, sizeof(int));
    c->kaux_cap = hp->aux_alpha > 0.0f && hp->aux_k > 0 ? (hp->aux_k < n ? hp->aux_k : n) : 0;
    c->aux_row_ptr = xmalloc((size_t)max_B + 1, sizeof(int));
    c->aux_lat = xmalloc((size_t)max_B * c->kaux_cap, sizeof(int));
    c->aux_val = xmalloc((size_t)max_B * c->kaux_cap, sizeof(float));
    c->aux_row_ptr[0] = 0;
    c->gr.slot = xmalloc((size_t)n, sizeof(int));
    c->gr.db_enc = xmalloc((size_t)n, sizeof(float));
    c->gr.db_dec = xmalloc((size_t)d, sizeof(float));
    auxk_dense_init(&c->ad, n, d, max_B);
    size_codes(be, hp->k);
    c->erow_ptr = xmalloc((size_t)max_B + 1, sizeof(int));
    ensure_ecap(c, (int64_t)max_B * hp->k);
    return be;
}

int64_t backend_cpu_bytes(const sae_hparams *hp, int B)
{
    int64_t d = hp->d, n = hp->n, G = hp->arch == SAE_ARCH_MATRYOSHKA ? hp->n_prefixes : 1;
    int64_t nd = n * d, Bd = (int64_t)B * d, Bn = (int64_t)B * n;
    int64_t ents = (int64_t)B * (hp->k + (hp->aux_alpha > 0.0f && hp->aux_k > 0 ? (hp->aux_k < hp->n ? hp->aux_k : hp->n) : 0));
    int64_t rows = ents < n ? ents : n;
    int64_t f = 6 * nd + Bn * (hp->arch == SAE_ARCH_GSAE ? 2 : 1) + (6 + G) * Bd + 2 * rows * d;
    /* the dense AuxK buffers at their largest: |D| = AUXK_DENSE_RATIO k_aux (auxk.h) */
    int64_t kaux = hp->aux_alpha > 0.0f && hp->aux_k > 0 ? (hp->aux_k < n ? hp->aux_k : n) : 0;
    int64_t dmax = kaux * AUXK_DENSE_RATIO < n ? kaux * AUXK_DENSE_RATIO : n;
    return 4 * f + 20 * ents + 64 * n + 4 * (2 * (int64_t)B * dmax + 3 * dmax * d + dmax);
}
