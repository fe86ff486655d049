/* The CUDA backend's training step (backend.h's step order) as one enqueue on the compute
 * stream, pipelined: submit_step returns once the step is queued, collect_step reads a step's
 * results when they are there. In steady state nothing here waits for the device: the dead
 * mask, the clip decision and the batchtopk threshold stay on the device, the host reads each
 * step's small result block after the next step was queued, and the next batch is copied into
 * the other input slot while this step computes. */
#include <math.h>
#include <string.h>

#include "adam.cuh"
#include "backend_cuda_impl.cuh"
#include "backward.cuh"
#include "bselect.cuh"
#include "decode.cuh"
#include "devutil.cuh"
#include "encode.cuh"
#include "featstats.cuh"
#include "loss.cuh"
#include "select.cuh"
#include "sf_check.h"

/* ---- phase timing (kernels/profile.h) --------------------------------------------------- */

static void prof_begin(cuda_impl *c, int on)
{
    c->prof_on = on;
    c->n_marks = 0;
    if (on && !c->ev_mark[0]) {
        for (int i = 0; i < PROF_MARKS; i++)
            CUDA_CHECK(cudaEventCreate(&c->ev_mark[i]));
        CUDA_CHECK(cudaEventCreate(&c->ev_up[0]));
        CUDA_CHECK(cudaEventCreate(&c->ev_up[1]));
    }
}

/* Ends the current phase on cs (the first call starts the clock: phase < 0). */
static void prof_mark(cuda_impl *c, int phase)
{
    if (!c->prof_on)
        return;
    SF_CHECK(c->n_marks < PROF_MARKS);
    c->mark_phase[c->n_marks] = phase;
    CUDA_CHECK(cudaEventRecord(c->ev_mark[c->n_marks++], c->cs));
}

/* After the step's final synchronisation: every event has completed. */
static void prof_collect(cuda_impl *c, double *out)
{
    memset(out, 0, sizeof(double) * SAE_PH_COUNT);
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, c->ev_up[0], c->ev_up[1]));
    out[SAE_PH_UPLOAD] = ms * 1e-3;
    for (int i = 1; i < c->n_marks; i++) {
        CUDA_CHECK(cudaEventElapsedTime(&ms, c->ev_mark[i - 1], c->ev_mark[i]));
        out[c->mark_phase[i]] += ms * 1e-3;
    }
}

/* ---- small kernels of the step ------------------------------------------------------------ */
static __global__ void theta_kernel(float *theta, const float *min_kept, float ema)
{
    const float mk = *min_kept;
    const float t = *theta;
    *theta = t < 0.0f ? mk : sf_fadd(sf_fmul(ema, t), sf_fmul(1.0f - ema, mk));
}

/* Clears the step's result block and entry count; keeps the size of this step's dead mask. */
static __global__ void step_begin_kernel(double *res, int *count, const int *dead)
{
    for (int i = (int)threadIdx.x; i < R_COUNT; i += (int)blockDim.x)
        res[i] = i == R_DEAD0 ? (double)*dead : 0.0;
    if (threadIdx.x == 0)
        *count = 0;
}

#define MARGIN_THREADS 256

/* res[R_MARGIN] = dead_tokens - the largest since_fired of a live latent (dead_tokens when none
 * is live), so the host knows how many tokens must pass before a latent can die. An AuxK that
 * was enqueued on a guess reports 0 when this step's mask turned out empty. One block. */
static __global__ void step_end_kernel(const long long *since_fired, int n, long long dead_tokens,
                                       double *res)
{
    __shared__ long long best[MARGIN_THREADS];
    const int tid = (int)threadIdx.x;
    long long m = 0;
    for (int i = tid; i < n; i += MARGIN_THREADS) {
        const long long s = since_fired[i];
        if (s < dead_tokens && s > m)
            m = s;
    }
    best[tid] = m;
    __syncthreads();
    for (int w = MARGIN_THREADS / 2; w > 0; w /= 2) {
        if (tid < w && best[tid + w] > best[tid])
            best[tid] = best[tid + w];
        __syncthreads();
    }
    if (tid == 0) {
        res[R_MARGIN] = (double)(dead_tokens - best[0]);
        if (res[R_DEAD0] == 0.0)
            res[R_AUX] = 0.0;
    }
}

static void launch_step_end(cuda_impl *c)
{
    SF_LAUNCH(step_end_kernel, 1, MARGIN_THREADS, 0, c->cs, (const long long *)c->S.since_fired,
              c->n, (long long)c->hp.dead_tokens, c->res);
}

void cu_refresh_dead(cuda_impl *c)
{
    featstats_dead_mask_cuda(c->S.since_fired, c->n, c->hp.dead_tokens, c->dead_mask, c->d_dead,
                             c->cs);
    SF_LAUNCH(step_begin_kernel, 1, 64, 0, c->cs, c->res, c->d_count, (const int *)c->d_dead);
    launch_step_end(c);
    CUDA_CHECK(cudaMemcpyAsync(c->h_res, c->res, R_COUNT * sizeof(double), cudaMemcpyDeviceToHost,
                               c->cs));
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    c->known_dead = (int)c->h_res[R_DEAD0];
    c->known_margin = (long long)c->h_res[R_MARGIN];
    c->tokens_since = 0;
}

/* Grows the main code when a step asks for more than the current k (k annealing from above). */
static void ensure_k(cuda_impl *c, int k)
{
    if (k <= c->kcap)
        return;
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    cu_alloc_codes(c, k);
}

/* Whether this step's mask can hold a dead latent. Exact when the last absorbed step is the one
 * before (its count); otherwise a latent can have died since only if the tokens of the steps
 * submitted after it reach its margin. When in doubt AuxK is enqueued and its code is padding
 * for an empty mask, which changes nothing but its cost. */
static int aux_may_run(const cuda_impl *c)
{
    if (!(c->hp.aux_alpha > 0.0f) || c->auxcap <= 0)
        return 0;
    return c->known_dead > 0 || c->tokens_since >= c->known_margin;
}

/* ---- the step ------------------------------------------------------------------------------ */

/* Steps 2-6: encoder, gate, selection, centre, reconstructions of every prefix. Fills the main
 * backward group. */
static void step_forward(cuda_impl *c, int B, int64_t Bg, int k, int main_cap, int has_g,
                         sae_bwd_group_cuda *grp)
{
    const sae_hparams *hp = &c->hp;
    const int d = c->d, n = c->n, dist = c->dp != NULL;
    cudaStream_t cs = c->cs;
    cu_encoder(c, B);
    prof_mark(c, SAE_PH_ENCODE);
    const int gsae = hp->arch == SAE_ARCH_GSAE;
    if (has_g) /* g's copy ran beside the encoder */
        cu_wait_g(c);
    if (gsae)
        gate_forward_cuda(c->g, c->P.W_dec, B, d, n, c->gate, hp->precision, c->blas, cs);
    prof_mark(c, SAE_PH_GATE);
    const int batch = hp->arch == SAE_ARCH_BATCHTOPK || hp->arch == SAE_ARCH_MATRYOSHKA;
    if (batch) {
        if (dist)
            cu_dist_select_batch(c, c->pre, B, Bg * k, main_cap, c->row_ptr, c->lat, c->val,
                                 c->d_min_kept);
        else
            bselect_cuda(c->pre, B, n, (int64_t)B * k, c->row_ptr, c->lat, c->val, c->d_min_kept,
                         c->bsel_ws, cs);
        SF_LAUNCH(theta_kernel, 1, 1, 0, cs, c->d_theta, (const float *)c->d_min_kept,
                  hp->theta_ema);
    } else {
        select_topk_cuda(c->pre, gsae ? c->gate : NULL, hp->gsae_beta, NULL, B, n, k, c->lat,
                         c->val, cs);
        fill_row_ptr_cuda(c->row_ptr, B, k, cs);
    }
    prof_mark(c, SAE_PH_SELECT);
    /* sums: the step's sums, summed over the ranks under data parallelism */
    if (dist)
        cu_dist_center_end(c, B);
    else
        loss_center_cuda(c->x, B, d, c->mean, c->res + R_DEN, c->loss_ws, cs);
    double *sums = dist ? cu_dist_sums(c) : c->res;
    /* largest prefix first: dY[j] = sum_{g >= j} 2/(G den) (xhat_g - x) */
    const int G = grp->n_bands;
    const size_t Bd = (size_t)B * d;
    for (int j = G - 1; j >= 0; j--) {
        float *xh = j == G - 1 ? c->xhat : c->xtmp;
        decode_cuda(c->row_ptr, c->lat, c->val, c->P.W_dec, c->P.b_dec, B, d, grp->bounds[j], xh,
                    cs);
        if (j < G - 1)
            CUDA_CHECK(cudaMemcpyAsync(c->dY + j * Bd, c->dY + (j + 1) * Bd, Bd * sizeof(float),
                                       cudaMemcpyDeviceToDevice, cs));
        loss_residual_cuda(c->x, xh, B, d, 2.0, (double)G, c->res + R_DEN, j < G - 1,
                           c->dY + j * Bd, sums + R_RES + j, c->loss_ws, cs);
    }
    prof_mark(c, SAE_PH_DECODE);
}

/* Step 7: AuxK over this step's dead mask into the second backward group. Top-aux_k over the
 * mask keeps at most |D| latents per row and pads the rest, which is top-min(aux_k, |D|). */
static void step_auxk(cuda_impl *c, int B, sae_bwd_group_cuda *aux)
{
    const int d = c->d, n = c->n;
    cudaStream_t cs = c->cs;
    double *sums = c->dp ? cu_dist_sums(c) : c->res;
    const int k_aux = c->auxcap;
    select_topk_cuda(c->pre, NULL, 0.0f, c->dead_mask, B, n, k_aux, c->aux_lat, c->aux_val, cs);
    fill_row_ptr_cuda(c->aux_row_ptr, B, k_aux, cs);
    sub_cuda(c->x, c->xhat, (long long)B * d, c->e, cs);
    decode_cuda(c->aux_row_ptr, c->aux_lat, c->aux_val, c->P.W_dec, NULL, B, d, n, c->ehat, cs);
    loss_residual_cuda(c->e, c->ehat, B, d, 2.0 * (double)c->hp.aux_alpha, 1.0, c->res + R_DEN, 0,
                       c->dY_aux, sums + R_AUX, c->loss_ws, cs);
    aux->row_ptr = c->aux_row_ptr;
    aux->lat = c->aux_lat;
    aux->val = c->aux_val;
    aux->cap = B * k_aux;
    aux->n_bands = 1;
    aux->bounds[0] = n;
    aux->dY = c->dY_aux;
    aux->has_bias = 0;
}

/* Steps 8-10: backward, projection, clip, Adam, statistics, next dead mask, results. */
static void step_update(cuda_impl *c, int B, int64_t Bg, float lr, int64_t step, int main_cap,
                        const sae_bwd_group_cuda *grp, int n_groups)
{
    const sae_hparams *hp = &c->hp;
    const int d = c->d, n = c->n, dist = c->dp != NULL, gsae = hp->arch == SAE_ARCH_GSAE;
    cudaStream_t cs = c->cs;
    backward_cuda(&c->ws, c->u, &c->P, B, d, n, grp, n_groups, &c->gr, cs);
    sae_grads_cuda *gr = dist ? cu_dist_grads(c, B, Bg, main_cap, gsae ? c->gate : NULL, step)
                              : &c->gr;
    dec_grad_project_cuda(c->P.W_dec, d, gr, cs);
    grad_sqnorm_cuda(gr, d, n, c->res + R_SQN, c->adam_ws, cs);
    grad_clip_scale_cuda(c->res + R_SQN, hp->grad_clip, c->res + R_NORM, c->d_gscale, cs);
    prof_mark(c, SAE_PH_BACKWARD);
    c->adam_t += 1;
    const double t = (double)c->adam_t;
    const float step_size = (float)((double)lr / (1.0 - pow((double)hp->adam_b1, t)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)hp->adam_b2, t));
    adam_step_cuda(&c->P, &c->S, gr, d, n, step_size, bc2_sqrt, hp->adam_b1, hp->adam_b2,
                   hp->adam_eps, c->d_gscale, c->W_enc_bf16, cs);
    prof_mark(c, SAE_PH_OPTIM);
    /* statistics of the main code (sorted view of the backward: group 0; cu_dist_grads ran
     * them under data parallelism), next dead mask */
    if (!dist)
        featstats_update_cuda(&c->ws, &c->gr, c->val, main_cap, gsae ? c->gate : NULL, B, n, step,
                              &c->S, cs);
    featstats_dead_mask_cuda(c->S.since_fired, n, hp->dead_tokens, c->dead_mask, c->d_dead, cs);
    cu_count_results(c, c->lat, main_cap, B, c->d_dead);
    launch_step_end(c);
    CUDA_CHECK(cudaMemcpyAsync(c->h_res, c->res, R_COUNT * sizeof(double), cudaMemcpyDeviceToHost,
                               cs));
    prof_mark(c, SAE_PH_STATS);
}

/* Queues one whole step in slot c->slot; returns its pending record. */
static cu_pending *enqueue_step(sae_backend *be, const float *x, const float *g, int B, int k,
                                float lr, int64_t step)
{
    cuda_impl *c = impl_of(be);
    const sae_hparams *hp = &c->hp;
    SF_CHECK(B > 0 && B <= c->max_B && k > 0);
    SF_CHECK(hp->arch != SAE_ARCH_GSAE || g != NULL);
    SF_CHECK(c->n_pend < 2);
    ensure_k(c, k);
    const int s = c->slot;
    c->slot ^= 1;
    cu_use_slot(c, s);
    cu_pending *p = &c->pend[(c->pend_head + c->n_pend) % 2];
    c->n_pend++;
    memset(p, 0, sizeof *p);
    p->slot = s;
    p->B = B;
    p->Bg = c->dp ? cu_dist_rows(c, B) : B;
    p->G = hp->arch == SAE_ARCH_MATRYOSHKA ? hp->n_prefixes : 1;
    p->aux = aux_may_run(c);
    c->tokens_since += p->Bg;

    prof_begin(c, be->profile);
    cu_upload(c, x, g, B);
    prof_mark(c, -1);
    SF_LAUNCH(step_begin_kernel, 1, 64, 0, c->cs, c->res, c->d_count, (const int *)c->d_dead);
    if (c->dp)
        cu_dist_center_begin(c, B);

    const int batch = hp->arch == SAE_ARCH_BATCHTOPK || hp->arch == SAE_ARCH_MATRYOSHKA;
    const int main_cap = B * (batch ? cu_code_per_token(c, k) : k);
    sae_bwd_group_cuda grp[2];
    memset(grp, 0, sizeof grp);
    grp[0].row_ptr = c->row_ptr;
    grp[0].lat = c->lat;
    grp[0].val = c->val;
    grp[0].cap = main_cap;
    grp[0].n_bands = p->G;
    for (int j = 0; j < p->G; j++)
        grp[0].bounds[j] = p->G == 1 ? c->n : hp->prefixes[j];
    grp[0].bounds[p->G - 1] = c->n;
    grp[0].dY = c->dY;
    grp[0].has_bias = 1;
    step_forward(c, B, p->Bg, k, main_cap, g != NULL, &grp[0]);
    if (p->aux)
        step_auxk(c, B, &grp[1]);
    prof_mark(c, SAE_PH_AUXK);
    if (g) {
        double *sums = c->dp ? cu_dist_sums(c) : c->res;
        loss_gw_cuda(c->g, c->x, c->xhat, c->mean, B, c->d, sums + R_GWN, sums + R_GWD,
                     c->loss_ws, c->cs);
    }
    if (c->dp)
        cu_dist_metrics(c, main_cap);
    prof_mark(c, SAE_PH_STATS);
    step_update(c, B, p->Bg, lr, step, main_cap, grp, p->aux ? 2 : 1);
    CUDA_CHECK(cudaEventRecord(c->ev_step[s], c->cs));
    p->has_g = g != NULL;
    return p;
}

/* Waits for p's step and turns its result block into metrics; updates the host's mirrors. */
static void absorb(cuda_impl *c, cu_pending *p)
{
    if (p->done)
        return;
    CUDA_CHECK(cudaEventSynchronize(c->ev_step[p->slot]));
    const double *h = c->h_resb[p->slot]; /* den, norm, theta, dead: the same on every rank */
    const double *r = c->dp ? cu_dist_finish(c) : h; /* the sums */
    const int G = p->G;
    const double den = h[R_DEN];
    const double den_eff = den > 0.0 ? den : 1.0; /* zero spread (B = 1): plain squared error */
    double recon = 0.0;
    for (int j = G - 1; j >= 0; j--)
        recon += r[R_RES + j] / den_eff;
    recon /= G;
    sae_metrics *out = &p->m;
    memset(out, 0, sizeof *out);
    out->fvu_num = r[R_RES + G - 1];
    out->fvu_den = den;
    out->fvu = out->fvu_num / den_eff;
    out->auxk = p->aux && h[R_DEAD0] > 0.0 ? r[R_AUX] / den_eff : 0.0;
    out->loss = recon + (double)c->hp.aux_alpha * out->auxk;
    out->l0 = r[R_L0] / (double)p->Bg;
    out->dead_frac = h[R_DEAD0] / c->n;
    out->grad_norm = h[R_NORM];
    if (p->has_g) {
        out->gw_num = r[R_GWN];
        out->gw_den = r[R_GWD];
        out->gw_err = r[R_GWD] > 0.0 ? r[R_GWN] / r[R_GWD] : 0.0;
    } else {
        out->gw_err = -1.0;
    }
    out->tokens = p->Bg;
    c->theta = (float)h[R_THETA];
    c->known_dead = (int)h[R_DEAD];
    c->known_margin = (long long)h[R_MARGIN];
    c->tokens_since -= p->Bg;
    p->done = 1;
}

void cu_drain(cuda_impl *c)
{
    for (int i = 0; i < c->n_pend; i++)
        absorb(c, &c->pend[(c->pend_head + i) % 2]);
}

static void cu_submit_step(sae_backend *be, const float *x, const float *g, int B, int k,
                           float lr, int64_t step)
{
    cuda_impl *c = impl_of(be);
    cu_pending *p = enqueue_step(be, x, g, B, k, lr, step);
    /* the multi-rank sums are read on the NCCL stream, and the phase events are reused by the
     * next step: both serialise */
    if (c->dp || c->prof_on)
        absorb(c, p);
    if (c->prof_on) {
        CUDA_CHECK(cudaStreamSynchronize(c->xs));
        prof_collect(c, be->phase_s);
    }
}

static int cu_collect_step(sae_backend *be, sae_metrics *out)
{
    cuda_impl *c = impl_of(be);
    if (c->n_pend == 0)
        return 0;
    cu_pending *p = &c->pend[c->pend_head];
    absorb(c, p);
    *out = p->m;
    c->pend_head = (c->pend_head + 1) % 2;
    c->n_pend--;
    return 1;
}

static void cu_train_step(sae_backend *be, const float *x, const float *g, int B, int k, float lr,
                          int64_t step, sae_metrics *out)
{
    SF_CHECK(impl_of(be)->n_pend == 0); /* mixing with submit_step is a programmer error */
    cu_submit_step(be, x, g, B, k, lr, step);
    SF_CHECK(cu_collect_step(be, out) == 1);
}

void cu_step_bind(sae_backend *be)
{
    be->train_step = cu_train_step;
    be->submit_step = cu_submit_step;
    be->collect_step = cu_collect_step;
}
