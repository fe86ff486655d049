/* The CUDA backend: one SAE's parameters, optimizer state and statistics in device memory, and
 * the training step of kernels/backend.h as a sequence of device kernels on one compute stream.
 * Inputs are staged through pinned buffers and copied on a separate copy stream (x first, then g,
 * so the encoder GEMM starts while g is still in flight); the host reads back one small block of
 * results per step. The clip decision and the batchtopk threshold stay on the device. */
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
static void prof_collect(cuda_impl *c, int uploaded, double *out)
{
    if (!c->prof_on)
        return;
    memset(out, 0, sizeof(double) * SAE_PH_COUNT);
    float ms = 0.0f;
    if (uploaded) {
        CUDA_CHECK(cudaEventElapsedTime(&ms, c->ev_up[0], c->ev_up[1]));
        out[SAE_PH_UPLOAD] = ms * 1e-3;
    }
    for (int i = 1; i < c->n_marks; i++) {
        CUDA_CHECK(cudaEventElapsedTime(&ms, c->ev_mark[i - 1], c->ev_mark[i]));
        out[c->mark_phase[i]] += ms * 1e-3;
    }
}

void *cu_dalloc(size_t bytes)
{
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    return p;
}

/* ---- small kernels of the step ------------------------------------------------------------ */
static __global__ void count_entries_kernel(const int *row_ptr, const int *lat, int B, int *out)
{
    const int total = row_ptr[B];
    const int stride = gridDim.x * blockDim.x;
    int c = 0;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride)
        c += lat[p] >= 0;
    if (c)
        atomicAdd(out, c);
}

static __global__ void theta_kernel(float *theta, const float *min_kept, float ema)
{
    const float mk = *min_kept;
    const float t = *theta;
    *theta = t < 0.0f ? mk : sf_fadd(sf_fmul(ema, t), sf_fmul(1.0f - ema, mk));
}

static __global__ void finalize_kernel(const int *count, const float *theta, const int *dead,
                                       double *res)
{
    res[R_L0] = (double)*count;
    res[R_THETA] = (double)*theta;
    res[R_DEAD] = dead ? (double)*dead : -1.0;
}

/* gate_val[p] = gate[b, lat[p]] for the entries of a CSR code (gsae statistics). */
static __global__ void gather_gate_kernel(const int *row_ptr, const int *lat, const float *gate,
                                          int B, int n, float *out)
{
    const int b = blockIdx.x;
    if (b >= B)
        return;
    for (int p = row_ptr[b] + threadIdx.x; p < row_ptr[b + 1]; p += blockDim.x) {
        const int i = lat[p];
        out[p] = i >= 0 ? gate[(size_t)b * n + i] : 0.0f;
    }
}

/* ---- buffers ----------------------------------------------------------------------------- */
void cu_alloc_codes(cuda_impl *c, int kcap)
{
    cudaFree(c->lat);
    cudaFree(c->val);
    bwd_ws_free(&c->ws);
    grads_cuda_free(&c->gr);
    c->kcap = kcap;
    const int per = cu_code_per_token(c, kcap);
    const size_t slots = (size_t)c->max_B * per;
    c->lat = (int *)cu_dalloc(slots * sizeof(int));
    c->val = (float *)cu_dalloc(slots * sizeof(float));
    const long long entries = (long long)c->max_B * (per + c->auxcap);
    SF_CHECK(entries < 0x7fffffffLL);
    bwd_ws_alloc(&c->ws, c->n, c->d, c->max_B, (int)entries);
    grads_cuda_alloc(&c->gr, c->n, c->d, c->ws.cap_rows);
}

/* Grows the main code when a step asks for more than the current k (k annealing from above). */
static void ensure_k(cuda_impl *c, int k)
{
    if (k <= c->kcap)
        return;
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    cu_alloc_codes(c, k);
}

void cu_ensure_ecap(cuda_impl *c, long long need)
{
    if (need <= c->ecap)
        return;
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    cudaFree(c->e_lat);
    cudaFree(c->e_val);
    cudaFree(c->e_gate);
    SF_CHECK(need < 0x7fffffffLL);
    c->ecap = (int)need;
    c->e_lat = (int *)cu_dalloc((size_t)need * sizeof(int));
    c->e_val = (float *)cu_dalloc((size_t)need * sizeof(float));
    c->e_gate = (float *)cu_dalloc((size_t)need * sizeof(float));
}

/* Stages x (and g) through the pinned buffers on the copy stream; the compute stream waits for
 * x at once and for g only where g is used (wait_g). */
void cu_upload(cuda_impl *c, const float *x, const float *g, int B)
{
    const size_t bytes = (size_t)B * c->d * sizeof(float);
    /* the previous step's copies have finished: every step ends with a sync of cs after its
     * kernels consumed x and g, so the staging buffers and device inputs are free */
    if (x != c->h_x) /* the driver filled our pinned buffer itself: nothing to stage */
        memcpy(c->h_x, x, bytes);
    if (c->prof_on)
        CUDA_CHECK(cudaEventRecord(c->ev_up[0], c->xs));
    CUDA_CHECK(cudaMemcpyAsync(c->x, c->h_x, bytes, cudaMemcpyHostToDevice, c->xs));
    CUDA_CHECK(cudaEventRecord(c->ev_x, c->xs));
    if (g) {
        if (g != c->h_g)
            memcpy(c->h_g, g, bytes);
        CUDA_CHECK(cudaMemcpyAsync(c->g, c->h_g, bytes, cudaMemcpyHostToDevice, c->xs));
        CUDA_CHECK(cudaEventRecord(c->ev_g, c->xs));
    }
    if (c->prof_on)
        CUDA_CHECK(cudaEventRecord(c->ev_up[1], c->xs));
    CUDA_CHECK(cudaStreamWaitEvent(c->cs, c->ev_x, 0));
}

static float *cu_input_buffer(sae_backend *be, int which)
{
    cuda_impl *c = impl_of(be);
    return which ? c->h_g : c->h_x;
}

void cu_wait_g(cuda_impl *c) { CUDA_CHECK(cudaStreamWaitEvent(c->cs, c->ev_g, 0)); }

void cu_encoder(cuda_impl *c, int B)
{
    enc_forward_cuda(c->x, c->P.W_enc, c->W_enc_bf16, c->P.b_enc, c->P.b_dec, B, c->d, c->n, c->u,
                     c->pre, c->hp.precision, c->enc_ws, c->blas, c->cs);
}

static void refresh_shadow(cuda_impl *c)
{
    if (c->W_enc_bf16)
        enc_shadow_bf16_cuda(c->P.W_enc, (long long)c->n * c->d, c->W_enc_bf16, c->cs);
}

/* Dead mask and count for the current since_fired (synchronous: after set_state). */
static void refresh_dead(cuda_impl *c)
{
    featstats_dead_mask_cuda(c->S.since_fired, c->n, c->hp.dead_tokens, c->dead_mask, c->d_dead,
                             c->cs);
    int dead = 0;
    CUDA_CHECK(cudaMemcpyAsync(&dead, c->d_dead, sizeof(int), cudaMemcpyDeviceToHost, c->cs));
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    c->dead_count = dead;
}

/* The inference code of backend.h into (row_ptr, lat, val) of capacity cap slots; returns the
 * code's slot count (row_ptr[B] may be smaller: padding) or -1 when a threshold code needs more
 * than cap (row_ptr is then valid, lat/val not). gated: gate is ready in c->gate. */
long long cu_infer_select(cuda_impl *c, int B, int k, int gated, int *lat, float *val,
                          long long cap)
{
    const sae_hparams *hp = &c->hp;
    if (hp->arch == SAE_ARCH_TOPK || hp->arch == SAE_ARCH_GSAE) {
        SF_CHECK((long long)B * k <= cap);
        select_topk_cuda(c->pre, gated ? c->gate : NULL, hp->gsae_beta, NULL, B, c->n, k, lat,
                         val, c->cs);
        fill_row_ptr_cuda(c->row_ptr, B, k, c->cs);
        return (long long)B * k;
    }
    if (c->theta < 0.0f) {
        SF_CHECK((long long)B * k <= cap);
        bselect_cuda(c->pre, B, c->n, (int64_t)B * k, c->row_ptr, lat, val, c->d_min_kept,
                     c->bsel_ws, c->cs);
        return (long long)B * k;
    }
    select_threshold_cuda(c->pre, c->theta, B, c->n, cap, c->row_ptr, lat, val, c->cs);
    int need = 0;
    CUDA_CHECK(cudaMemcpyAsync(&need, c->row_ptr + B, sizeof(int), cudaMemcpyDeviceToHost, c->cs));
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    return need <= cap ? (long long)need : -1 - (long long)need;
}

/* Forward with the inference rule into c->e_lat/e_val (grown as needed); returns slots used. */
static long long infer_code(cuda_impl *c, const float *x, const float *g, int B, int k)
{
    cu_upload(c, x, g, B);
    cu_encoder(c, B);
    int gated = 0;
    if (c->hp.arch == SAE_ARCH_GSAE && g) {
        cu_wait_g(c);
        gate_forward_cuda(c->g, c->P.W_dec, B, c->d, c->n, c->gate, c->hp.precision, c->blas,
                          c->cs);
        gated = 1;
    }
    cu_ensure_ecap(c, (long long)B * k);
    long long used = cu_infer_select(c, B, k, gated, c->e_lat, c->e_val, c->ecap);
    if (used < 0) {
        cu_ensure_ecap(c, -1 - used);
        used = cu_infer_select(c, B, k, gated, c->e_lat, c->e_val, c->ecap);
        SF_CHECK(used >= 0);
    }
    return used;
}

/* ---- backend functions ----------------------------------------------------------------- */
static void cu_free(sae_backend *be)
{
    if (!be)
        return;
    cuda_impl *c = impl_of(be);
    cudaStreamSynchronize(c->cs);
    cudaStreamSynchronize(c->xs);
    cu_dist_free(c);
    void *dev[] = {c->P.W_enc, c->P.b_enc, c->P.W_dec, c->P.b_dec, c->S.m_W_enc, c->S.v_W_enc,
                   c->S.m_b_enc, c->S.v_b_enc, c->S.m_W_dec, c->S.v_W_dec, c->S.m_b_dec,
                   c->S.v_b_dec, c->S.since_fired, c->S.fire_count, c->S.act_sum, c->S.act_max,
                   c->S.last_fired_step, c->S.gate_sum, c->d_theta, c->W_enc_bf16, c->x, c->g,
                   c->u, c->pre, c->gate, c->mean, c->xhat, c->xtmp, c->dY, c->e, c->ehat,
                   c->dY_aux, c->row_ptr, c->lat, c->val, c->aux_row_ptr, c->aux_lat,
                   c->aux_val, c->e_lat, c->e_val, c->e_gate, c->dead_mask, c->d_dead,
                   c->d_count, c->d_min_kept, c->d_gscale, c->bsel_ws, c->enc_ws, c->loss_ws,
                   c->adam_ws, c->res};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    bwd_ws_free(&c->ws);
    grads_cuda_free(&c->gr);
    cudaFreeHost(c->h_res);
    cudaFreeHost(c->h_x);
    cudaFreeHost(c->h_g);
    cublasDestroy(c->blas);
    cudaEventDestroy(c->ev_x);
    cudaEventDestroy(c->ev_g);
    if (c->ev_mark[0]) {
        for (int i = 0; i < PROF_MARKS; i++)
            cudaEventDestroy(c->ev_mark[i]);
        cudaEventDestroy(c->ev_up[0]);
        cudaEventDestroy(c->ev_up[1]);
    }
    cudaStreamDestroy(c->cs);
    cudaStreamDestroy(c->xs);
    free(c);
    free(be);
}

static void cu_set_params(sae_backend *be, const sae_params *h)
{
    cuda_impl *c = impl_of(be);
    const size_t nd = (size_t)c->n * c->d * sizeof(float);
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    CUDA_CHECK(cudaMemcpy(c->P.W_enc, h->W_enc, nd, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(c->P.W_dec, h->W_dec, nd, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(c->P.b_enc, h->b_enc, (size_t)c->n * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(c->P.b_dec, h->b_dec, (size_t)c->d * sizeof(float), cudaMemcpyHostToDevice));
    refresh_shadow(c);
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
}

static void cu_get_params(sae_backend *be, sae_params *h)
{
    cuda_impl *c = impl_of(be);
    const size_t nd = (size_t)c->n * c->d * sizeof(float);
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    CUDA_CHECK(cudaMemcpy(h->W_enc, c->P.W_enc, nd, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(h->W_dec, c->P.W_dec, nd, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(h->b_enc, c->P.b_enc, (size_t)c->n * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(h->b_dec, c->P.b_dec, (size_t)c->d * sizeof(float), cudaMemcpyDeviceToHost));
}

/* Copies every array of sae_state one way (to_dev: host -> device). */
static void copy_state(cuda_impl *c, sae_state *h, int to_dev)
{
    const size_t nd = (size_t)c->n * c->d, n = (size_t)c->n, d = (size_t)c->d;
    struct {
        void *dev, *host;
        size_t bytes;
    } t[] = {
        {c->S.m_W_enc, h->m_W_enc, nd * 4}, {c->S.v_W_enc, h->v_W_enc, nd * 4},
        {c->S.m_b_enc, h->m_b_enc, n * 4},  {c->S.v_b_enc, h->v_b_enc, n * 4},
        {c->S.m_W_dec, h->m_W_dec, nd * 4}, {c->S.v_W_dec, h->v_W_dec, nd * 4},
        {c->S.m_b_dec, h->m_b_dec, d * 4},  {c->S.v_b_dec, h->v_b_dec, d * 4},
        {c->S.since_fired, h->since_fired, n * 8}, {c->S.fire_count, h->fire_count, n * 8},
        {c->S.act_sum, h->act_sum, n * 8},  {c->S.act_max, h->act_max, n * 4},
        {c->S.last_fired_step, h->last_fired_step, n * 8}, {c->S.gate_sum, h->gate_sum, n * 8},
    };
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (to_dev)
            CUDA_CHECK(cudaMemcpy(t[i].dev, t[i].host, t[i].bytes, cudaMemcpyHostToDevice));
        else
            CUDA_CHECK(cudaMemcpy(t[i].host, t[i].dev, t[i].bytes, cudaMemcpyDeviceToHost));
    }
}

static void cu_set_state(sae_backend *be, const sae_state *h)
{
    cuda_impl *c = impl_of(be);
    copy_state(c, (sae_state *)h, 1);
    c->adam_t = h->adam_t;
    c->theta = h->theta;
    CUDA_CHECK(cudaMemcpy(c->d_theta, &c->theta, sizeof(float), cudaMemcpyHostToDevice));
    refresh_dead(c);
}

static void cu_get_state(sae_backend *be, sae_state *h)
{
    cuda_impl *c = impl_of(be);
    copy_state(c, h, 0);
    h->adam_t = c->adam_t;
    h->theta = c->theta;
}

static void cu_train_step(sae_backend *be, const float *x, const float *g, int B, int k, float lr,
                          int64_t step, sae_metrics *out)
{
    cuda_impl *c = impl_of(be);
    const sae_hparams *hp = &c->hp;
    const int d = c->d, n = c->n;
    SF_CHECK(B > 0 && B <= c->max_B && k > 0);
    SF_CHECK(hp->arch != SAE_ARCH_GSAE || g != NULL);
    ensure_k(c, k);
    cudaStream_t cs = c->cs;
    /* data parallel (dist.h): the hooks below are its collectives; dp is NULL for one rank */
    const int dist = c->dp != NULL;
    const int64_t Bg = dist ? cu_dist_rows(c, B) : B;

    /* 1. dead mask: computed at the end of the previous step (or by set_state) */
    const int dead = c->dead_count;
    prof_begin(c, be->profile);
    cu_upload(c, x, g, B);
    prof_mark(c, -1);
    CUDA_CHECK(cudaMemsetAsync(c->res, 0, R_COUNT * sizeof(double), cs));
    CUDA_CHECK(cudaMemsetAsync(c->d_count, 0, sizeof(int), cs));
    if (dist)
        cu_dist_center_begin(c, B);

    /* 2. encoder */
    cu_encoder(c, B);
    prof_mark(c, SAE_PH_ENCODE);
    /* 3. gate */
    const int gsae = hp->arch == SAE_ARCH_GSAE;
    if (g)
        cu_wait_g(c);
    if (gsae)
        gate_forward_cuda(c->g, c->P.W_dec, B, d, n, c->gate, hp->precision, c->blas, cs);
    prof_mark(c, SAE_PH_GATE);
    /* 4. selection */
    const int batch = hp->arch == SAE_ARCH_BATCHTOPK || hp->arch == SAE_ARCH_MATRYOSHKA;
    const int main_cap = B * (batch ? cu_code_per_token(c, k) : k);
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
    /* 5. centre; sums: the step's sums, summed over the ranks under data parallelism */
    if (dist)
        cu_dist_center_end(c, B);
    else
        loss_center_cuda(c->x, B, d, c->mean, c->res + R_DEN, c->loss_ws, cs);
    double *sums = dist ? cu_dist_sums(c) : c->res;
    /* 6. reconstructions, largest prefix first: dY[j] = sum_{g >= j} 2/(G den) (xhat_g - x) */
    const int G = hp->arch == SAE_ARCH_MATRYOSHKA ? hp->n_prefixes : 1;
    int bounds[SAE_MAX_PREFIXES];
    for (int j = 0; j < G; j++)
        bounds[j] = G == 1 ? n : hp->prefixes[j];
    bounds[G - 1] = n;
    const size_t Bd = (size_t)B * d;
    for (int j = G - 1; j >= 0; j--) {
        float *xh = j == G - 1 ? c->xhat : c->xtmp;
        decode_cuda(c->row_ptr, c->lat, c->val, c->P.W_dec, c->P.b_dec, B, d, bounds[j], xh, cs);
        if (j < G - 1)
            CUDA_CHECK(cudaMemcpyAsync(c->dY + j * Bd, c->dY + (j + 1) * Bd, Bd * sizeof(float),
                                       cudaMemcpyDeviceToDevice, cs));
        loss_residual_cuda(c->x, xh, B, d, 2.0, (double)G, c->res + R_DEN, j < G - 1, c->dY + j * Bd,
                           sums + R_RES + j, c->loss_ws, cs);
    }
    prof_mark(c, SAE_PH_DECODE);
    /* 7. AuxK */
    int n_groups = 1;
    sae_bwd_group_cuda grp[2];
    memset(grp, 0, sizeof grp);
    grp[0].row_ptr = c->row_ptr;
    grp[0].lat = c->lat;
    grp[0].val = c->val;
    grp[0].cap = main_cap;
    grp[0].n_bands = G;
    memcpy(grp[0].bounds, bounds, sizeof bounds);
    grp[0].dY = c->dY;
    grp[0].has_bias = 1;
    if (hp->aux_alpha > 0.0f && dead > 0) {
        int k_aux = hp->aux_k < dead ? hp->aux_k : dead;
        if (k_aux > c->auxcap)
            k_aux = c->auxcap;
        if (k_aux > 0) {
            select_topk_cuda(c->pre, NULL, 0.0f, c->dead_mask, B, n, k_aux, c->aux_lat,
                             c->aux_val, cs);
            fill_row_ptr_cuda(c->aux_row_ptr, B, k_aux, cs);
            sub_cuda(c->x, c->xhat, (long long)Bd, c->e, cs);
            decode_cuda(c->aux_row_ptr, c->aux_lat, c->aux_val, c->P.W_dec, NULL, B, d, n,
                        c->ehat, cs);
            loss_residual_cuda(c->e, c->ehat, B, d, 2.0 * (double)hp->aux_alpha, 1.0,
                               c->res + R_DEN, 0, c->dY_aux, sums + R_AUX, c->loss_ws, cs);
            grp[1].row_ptr = c->aux_row_ptr;
            grp[1].lat = c->aux_lat;
            grp[1].val = c->aux_val;
            grp[1].cap = B * k_aux;
            grp[1].n_bands = 1;
            grp[1].bounds[0] = n;
            grp[1].dY = c->dY_aux;
            grp[1].has_bias = 0;
            n_groups = 2;
        }
    }
    prof_mark(c, SAE_PH_AUXK);
    if (g)
        loss_gw_cuda(c->g, c->x, c->xhat, c->mean, B, d, sums + R_GWN, sums + R_GWD,
                     c->loss_ws, cs);
    if (dist)
        cu_dist_metrics(c, main_cap);
    prof_mark(c, SAE_PH_STATS);
    /* 8. backward (summed over the ranks: the dense view, statistics meanwhile), projection,
     * norm, clip scale */
    backward_cuda(&c->ws, c->u, &c->P, B, d, n, grp, n_groups, &c->gr, cs);
    sae_grads_cuda *gr = dist ? cu_dist_grads(c, B, Bg, main_cap, gsae ? c->gate : NULL, step)
                              : &c->gr;
    dec_grad_project_cuda(c->P.W_dec, d, gr, cs);
    grad_sqnorm_cuda(gr, d, n, c->res + R_SQN, c->adam_ws, cs);
    grad_clip_scale_cuda(c->res + R_SQN, hp->grad_clip, c->res + R_NORM, c->d_gscale, cs);
    prof_mark(c, SAE_PH_BACKWARD);
    /* 9. Adam */
    c->adam_t += 1;
    const double t = (double)c->adam_t;
    const float step_size = (float)((double)lr / (1.0 - pow((double)hp->adam_b1, t)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)hp->adam_b2, t));
    adam_step_cuda(&c->P, &c->S, gr, d, n, step_size, bc2_sqrt, hp->adam_b1, hp->adam_b2,
                   hp->adam_eps, c->d_gscale, c->W_enc_bf16, cs);
    prof_mark(c, SAE_PH_OPTIM);
    /* 10. statistics of the main code (sorted view of the backward: group 0; cu_dist_grads ran
     * them under data parallelism), next dead mask */
    if (!dist)
        featstats_update_cuda(&c->ws, &c->gr, c->val, main_cap, gsae ? c->gate : NULL, B, n, step,
                              &c->S, cs);
    featstats_dead_mask_cuda(c->S.since_fired, n, hp->dead_tokens, c->dead_mask, c->d_dead, cs);
    /* results */
    SF_LAUNCH(count_entries_kernel, (main_cap + 255) / 256 < 256 ? (main_cap + 255) / 256 : 256,
              256, 0, cs, (const int *)c->row_ptr, (const int *)c->lat, B, c->d_count);
    SF_LAUNCH(finalize_kernel, 1, 1, 0, cs, (const int *)c->d_count, (const float *)c->d_theta,
              (const int *)c->d_dead, c->res);
    CUDA_CHECK(cudaMemcpyAsync(c->h_res, c->res, R_COUNT * sizeof(double), cudaMemcpyDeviceToHost,
                               cs));
    prof_mark(c, SAE_PH_STATS);
    CUDA_CHECK(cudaStreamSynchronize(cs));
    const double *r = dist ? cu_dist_finish(c) : c->h_res; /* the sums */
    if (c->prof_on)
        CUDA_CHECK(cudaStreamSynchronize(c->xs));
    prof_collect(c, 1, be->phase_s);
    const double *h = c->h_res; /* den, norm, theta, dead: the same on every rank */
    const double den = h[R_DEN];
    const double den_eff = den > 0.0 ? den : 1.0; /* zero spread (B = 1): plain squared error */
    double recon = 0.0;
    for (int j = G - 1; j >= 0; j--)
        recon += r[R_RES + j] / den_eff;
    recon /= G;
    memset(out, 0, sizeof *out);
    out->fvu_num = r[R_RES + G - 1];
    out->fvu_den = den;
    out->fvu = out->fvu_num / den_eff;
    out->auxk = n_groups > 1 ? r[R_AUX] / den_eff : 0.0;
    out->loss = recon + (double)hp->aux_alpha * out->auxk;
    out->l0 = r[R_L0] / (double)Bg;
    out->dead_frac = (double)dead / n;
    out->grad_norm = h[R_NORM];
    if (g) {
        out->gw_num = r[R_GWN];
        out->gw_den = r[R_GWD];
        out->gw_err = r[R_GWD] > 0.0 ? r[R_GWN] / r[R_GWD] : 0.0;
    } else {
        out->gw_err = -1.0;
    }
    out->tokens = Bg;
    c->theta = (float)h[R_THETA];
    c->dead_count = (int)h[R_DEAD];
}

static void cu_eval_batch(sae_backend *be, const float *x, const float *g, int B, int k,
                          sae_metrics *acc)
{
    cuda_impl *c = impl_of(be);
    if (c->dp) {
        cu_eval_batch_dist(be, x, g, B, k, acc);
        return;
    }
    SF_CHECK(B > 0 && B <= c->max_B && k > 0);
    cudaStream_t cs = c->cs;
    infer_code(c, x, g, B, k);
    CUDA_CHECK(cudaMemsetAsync(c->res, 0, R_COUNT * sizeof(double), cs));
    CUDA_CHECK(cudaMemsetAsync(c->d_count, 0, sizeof(int), cs));
    decode_cuda(c->row_ptr, c->e_lat, c->e_val, c->P.W_dec, c->P.b_dec, B, c->d, c->n, c->xhat,
                cs);
    loss_center_cuda(c->x, B, c->d, c->mean, c->res + R_DEN, c->loss_ws, cs);
    loss_residual_cuda(c->x, c->xhat, B, c->d, 0.0, 1.0, NULL, 0, NULL, c->res + R_RES, c->loss_ws,
                       cs);
    if (g) {
        cu_wait_g(c);
        loss_gw_cuda(c->g, c->x, c->xhat, c->mean, B, c->d, c->res + R_GWN, c->res + R_GWD,
                     c->loss_ws, cs);
    }
    SF_LAUNCH(count_entries_kernel, 256, 256, 0, cs, (const int *)c->row_ptr,
              (const int *)c->e_lat, B, c->d_count);
    SF_LAUNCH(finalize_kernel, 1, 1, 0, cs, (const int *)c->d_count, (const float *)c->d_theta,
              (const int *)NULL, c->res);
    CUDA_CHECK(cudaMemcpyAsync(c->h_res, c->res, R_COUNT * sizeof(double), cudaMemcpyDeviceToHost,
                               cs));
    CUDA_CHECK(cudaStreamSynchronize(cs));
    const double *r = c->h_res;
    acc->fvu_num += r[R_RES];
    acc->fvu_den += r[R_DEN];
    if (g) {
        acc->gw_num += r[R_GWN];
        acc->gw_den += r[R_GWD];
    }
    acc->l0 += r[R_L0];
    acc->tokens += B;
}

static int64_t cu_encode(sae_backend *be, const float *x, const float *g, int B, int k,
                         int64_t cap, int *row_ptr, int *lat, float *val, float *gate_val)
{
    cuda_impl *c = impl_of(be);
    SF_CHECK(B > 0 && B <= c->max_B && k > 0);
    cudaStream_t cs = c->cs;
    const long long slots = infer_code(c, x, g, B, k);
    const int gated = c->hp.arch == SAE_ARCH_GSAE && g != NULL;
    if (gated && gate_val)
        SF_LAUNCH(gather_gate_kernel, B, 128, 0, cs, (const int *)c->row_ptr,
                  (const int *)c->e_lat, (const float *)c->gate, B, c->n, c->e_gate);
    /* the device code may hold padding (lat -1); the host CSR lists real entries only */
    int *drp = (int *)malloc((size_t)(B + 1) * sizeof(int));
    int *dl = (int *)malloc((size_t)(slots > 0 ? slots : 1) * sizeof(int));
    float *dv = (float *)malloc((size_t)(slots > 0 ? slots : 1) * sizeof(float));
    float *dg = (float *)malloc((size_t)(slots > 0 ? slots : 1) * sizeof(float));
    SF_CHECK(drp && dl && dv && dg);
    CUDA_CHECK(cudaMemcpyAsync(drp, c->row_ptr, (size_t)(B + 1) * sizeof(int),
                               cudaMemcpyDeviceToHost, cs));
    CUDA_CHECK(cudaStreamSynchronize(cs));
    const int used = drp[B];
    if (used > 0) {
        CUDA_CHECK(cudaMemcpyAsync(dl, c->e_lat, (size_t)used * sizeof(int), cudaMemcpyDeviceToHost, cs));
        CUDA_CHECK(cudaMemcpyAsync(dv, c->e_val, (size_t)used * sizeof(float), cudaMemcpyDeviceToHost, cs));
        if (gated && gate_val)
            CUDA_CHECK(cudaMemcpyAsync(dg, c->e_gate, (size_t)used * sizeof(float),
                                       cudaMemcpyDeviceToHost, cs));
        CUDA_CHECK(cudaStreamSynchronize(cs));
    }
    int64_t total = 0;
    for (int b = 0; b < B; b++)
        for (int p = drp[b]; p < drp[b + 1]; p++)
            total += dl[p] >= 0;
    row_ptr[0] = 0;
    int64_t o = 0;
    for (int b = 0; b < B; b++) {
        for (int p = drp[b]; p < drp[b + 1]; p++) {
            if (dl[p] < 0)
                continue;
            if (total <= cap) {
                lat[o] = dl[p];
                val[o] = dv[p];
                if (gate_val)
                    gate_val[o] = gated ? dg[p] : 0.0f;
            }
            o++;
        }
        row_ptr[b + 1] = (int)o;
    }
    free(drp);
    free(dl);
    free(dv);
    free(dg);
    return total;
}

extern "C" sae_backend *backend_cuda_new(const sae_hparams *hp, int max_B, int device, char *why,
                                         int len)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count <= 0) {
        snprintf(why, (size_t)len, "%s",
                 e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device found");
        (void)cudaGetLastError();
        return NULL;
    }
    if (device < 0 || device >= count) {
        snprintf(why, (size_t)len, "CUDA device %d does not exist (%d found)", device, count);
        return NULL;
    }
    e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        snprintf(why, (size_t)len, "cannot use CUDA device %d: %s", device, cudaGetErrorString(e));
        (void)cudaGetLastError();
        return NULL;
    }
    SF_CHECK(hp->d > 0 && hp->n > 0 && hp->k > 0 && max_B > 0);

    cuda_impl *c = (cuda_impl *)calloc(1, sizeof *c);
    sae_backend *be = (sae_backend *)calloc(1, sizeof *be);
    SF_CHECK(c && be);
    c->hp = *hp;
    c->device = device;
    c->d = hp->d;
    c->n = hp->n;
    c->max_B = max_B;
    c->auxcap = hp->aux_alpha > 0.0f ? (hp->aux_k < hp->n ? hp->aux_k : hp->n) : 0;
    if (c->auxcap < 0)
        c->auxcap = 0;
    c->adam_t = 0;
    c->theta = -1.0f;
    c->code_mul = 1;
    CUDA_CHECK(cudaStreamCreateWithFlags(&c->cs, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&c->xs, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&c->ev_x, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&c->ev_g, cudaEventDisableTiming));
    CUBLAS_CHECK(cublasCreate(&c->blas));

    const size_t d = (size_t)hp->d, n = (size_t)hp->n, B = (size_t)max_B;
    c->P.W_enc = (float *)cu_dalloc(n * d * 4);
    c->P.W_dec = (float *)cu_dalloc(n * d * 4);
    c->P.b_enc = (float *)cu_dalloc(n * 4);
    c->P.b_dec = (float *)cu_dalloc(d * 4);
    c->S.m_W_enc = (float *)cu_dalloc(n * d * 4);
    c->S.v_W_enc = (float *)cu_dalloc(n * d * 4);
    c->S.m_W_dec = (float *)cu_dalloc(n * d * 4);
    c->S.v_W_dec = (float *)cu_dalloc(n * d * 4);
    c->S.m_b_enc = (float *)cu_dalloc(n * 4);
    c->S.v_b_enc = (float *)cu_dalloc(n * 4);
    c->S.m_b_dec = (float *)cu_dalloc(d * 4);
    c->S.v_b_dec = (float *)cu_dalloc(d * 4);
    c->S.since_fired = (int64_t *)cu_dalloc(n * 8);
    c->S.fire_count = (int64_t *)cu_dalloc(n * 8);
    c->S.act_sum = (double *)cu_dalloc(n * 8);
    c->S.act_max = (float *)cu_dalloc(n * 4);
    c->S.last_fired_step = (int64_t *)cu_dalloc(n * 8);
    c->S.gate_sum = (double *)cu_dalloc(n * 8);
    c->d_theta = (float *)cu_dalloc(4);
    if (hp->precision == SAE_PREC_BF16)
        c->W_enc_bf16 = (uint16_t *)cu_dalloc(n * d * 2);

    const int G = hp->arch == SAE_ARCH_MATRYOSHKA ? hp->n_prefixes : 1;
    c->x = (float *)cu_dalloc(B * d * 4);
    c->g = (float *)cu_dalloc(B * d * 4);
    c->u = (float *)cu_dalloc(B * d * 4);
    c->pre = (float *)cu_dalloc(B * n * 4);
    c->gate = (float *)cu_dalloc(B * n * 4);
    c->mean = (float *)cu_dalloc(d * 4);
    c->xhat = (float *)cu_dalloc(B * d * 4);
    c->xtmp = (float *)cu_dalloc(B * d * 4);
    c->dY = (float *)cu_dalloc((size_t)G * B * d * 4);
    c->e = (float *)cu_dalloc(B * d * 4);
    c->ehat = (float *)cu_dalloc(B * d * 4);
    c->dY_aux = (float *)cu_dalloc(B * d * 4);
    c->row_ptr = (int *)cu_dalloc((B + 1) * 4);
    c->aux_row_ptr = (int *)cu_dalloc((B + 1) * 4);
    c->aux_lat = (int *)cu_dalloc(B * (size_t)(c->auxcap > 0 ? c->auxcap : 1) * 4);
    c->aux_val = (float *)cu_dalloc(B * (size_t)(c->auxcap > 0 ? c->auxcap : 1) * 4);
    c->dead_mask = (uint8_t *)cu_dalloc(n);
    c->d_dead = (int *)cu_dalloc(4);
    c->d_count = (int *)cu_dalloc(4);
    c->d_min_kept = (float *)cu_dalloc(4);
    c->d_gscale = (float *)cu_dalloc(4);
    c->bsel_ws = cu_dalloc(bselect_workspace_bytes(max_B, hp->n));
    c->enc_ws = cu_dalloc(enc_workspace_bytes(max_B, hp->d, hp->precision));
    c->loss_ws = cu_dalloc(loss_cuda_work_bytes(max_B));
    c->adam_ws = cu_dalloc(adam_cuda_work_bytes());
    c->res = (double *)cu_dalloc(R_COUNT * sizeof(double));
    CUDA_CHECK(cudaMallocHost((void **)&c->h_res, R_COUNT * sizeof(double)));
    CUDA_CHECK(cudaMallocHost((void **)&c->h_x, B * d * 4));
    CUDA_CHECK(cudaMallocHost((void **)&c->h_g, B * d * 4));
    cu_alloc_codes(c, hp->k);
    cu_ensure_ecap(c, (long long)max_B * hp->k);

    /* zero parameters and state, theta = -1, last_fired_step = -1 (as sae_state_alloc) */
    void *zero[] = {c->P.W_enc, c->P.W_dec, c->P.b_enc, c->P.b_dec, c->S.m_W_enc, c->S.v_W_enc,
                    c->S.m_W_dec, c->S.v_W_dec, c->S.m_b_enc, c->S.v_b_enc, c->S.m_b_dec,
                    c->S.v_b_dec, c->S.since_fired, c->S.fire_count, c->S.act_sum,
                    c->S.act_max, c->S.gate_sum};
    size_t zb[] = {n * d * 4, n * d * 4, n * 4, d * 4, n * d * 4, n * d * 4, n * d * 4,
                   n * d * 4, n * 4, n * 4, d * 4, d * 4, n * 8, n * 8, n * 8, n * 4, n * 8};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++)
        CUDA_CHECK(cudaMemset(zero[i], 0, zb[i]));
    CUDA_CHECK(cudaMemset(c->S.last_fired_step, 0xff, n * 8));
    CUDA_CHECK(cudaMemcpy(c->d_theta, &c->theta, sizeof(float), cudaMemcpyHostToDevice));
    refresh_shadow(c);
    refresh_dead(c);

    be->name = "cuda";
    be->profile = sae_profile_env();
    be->hp = *hp;
    be->max_B = max_B;
    be->free = cu_free;
    be->set_params = cu_set_params;
    be->get_params = cu_get_params;
    be->set_state = cu_set_state;
    be->get_state = cu_get_state;
    be->train_step = cu_train_step;
    be->input_buffer = cu_input_buffer;
    be->eval_batch = cu_eval_batch;
    be->encode = cu_encode;
    be->set_dist = cu_set_dist;
    be->impl = c;
    return be;
}

extern "C" int64_t backend_cuda_bytes(const sae_hparams *hp, int B)
{
    int64_t d = hp->d, n = hp->n, G = hp->arch == SAE_ARCH_MATRYOSHKA ? hp->n_prefixes : 1;
    int64_t aux = hp->aux_alpha > 0.0f ? (hp->aux_k < hp->n ? hp->aux_k : hp->n) : 0;
    int64_t ents = (int64_t)B * (hp->k + aux);
    int64_t rows = ents < n ? ents : n;
    int64_t bytes = 6 * n * d * 4 + (hp->precision == SAE_PREC_BF16 ? n * d * 2 : 0) + n * 64 +
                    (int64_t)B * d * 4 * (9 + G) + 2 * (int64_t)B * n * 4 + ents * 64 +
                    2 * rows * d * 4 + (int64_t)bselect_workspace_bytes(B, hp->n) +
                    (int64_t)enc_workspace_bytes(B, hp->d, hp->precision) + (64 << 20);
    return bytes;
}
