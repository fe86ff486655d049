/* The CUDA backend: one SAE's parameters, optimizer state and statistics in device memory, its
 * buffers, parameter/state copies, inference (eval, encode) and creation; the training step is
 * in backend_cuda_step.cu, the batch upload in backend_cuda_input.cu (pinned staging, a separate
 * copy stream, x first, then g, so the encoder GEMM starts while g is still in flight). */
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

void cu_count_results(cuda_impl *c, const int *lat, int slots, int B, const int *dead)
{
    const int blocks = (slots + 255) / 256 < 256 ? (slots + 255) / 256 : 256;
    SF_LAUNCH(count_entries_kernel, blocks > 0 ? blocks : 1, 256, 0, c->cs,
              (const int *)c->row_ptr, lat, B, c->d_count);
    SF_LAUNCH(finalize_kernel, 1, 1, 0, c->cs, (const int *)c->d_count, (const float *)c->d_theta,
              dead, c->res);
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

void cu_use_slot(cuda_impl *c, int s)
{
    c->x = c->xb[s];
    c->g = c->gb[s];
    c->h_x = c->h_xb[s];
    c->h_g = c->h_gb[s];
    c->h_res = c->h_resb[s];
    c->cur = s;
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
    cu_drain(c);
    cu_use_slot(c, c->slot);
    cu_upload(c, x, g, B);
    cu_encoder(c, B);
    int gated = 0;
    if (g) /* also where g is not read here: the next upload rewrites its staging buffer */
        cu_wait_g(c);
    if (c->hp.arch == SAE_ARCH_GSAE && g) {
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
    cu_input_free(c);
    void *dev[] = {c->P.W_enc, c->P.b_enc, c->P.W_dec, c->P.b_dec, c->S.m_W_enc, c->S.v_W_enc,
                   c->S.m_b_enc, c->S.v_b_enc, c->S.m_W_dec, c->S.v_W_dec, c->S.m_b_dec,
                   c->S.v_b_dec, c->S.since_fired, c->S.fire_count, c->S.act_sum, c->S.act_max,
                   c->S.last_fired_step, c->S.gate_sum, c->d_theta, c->W_enc_bf16, c->xb[0],
                   c->xb[1], c->gb[0], c->gb[1], c->u, c->pre, c->gate, c->mean, c->xhat, c->xtmp, c->dY, c->e, c->ehat,
                   c->dY_aux, c->row_ptr, c->lat, c->val, c->aux_row_ptr, c->aux_lat,
                   c->aux_val, c->e_lat, c->e_val, c->e_gate, c->dead_mask, c->d_dead,
                   c->d_count, c->d_min_kept, c->d_gscale, c->bsel_ws, c->enc_ws, c->loss_ws,
                   c->adam_ws, c->res};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    bwd_ws_free(&c->ws);
    grads_cuda_free(&c->gr);
    for (int s = 0; s < 2; s++) {
        cudaFreeHost(c->h_resb[s]);
        cudaFreeHost(c->h_xb[s]);
        cudaFreeHost(c->h_gb[s]);
        cudaEventDestroy(c->ev_step[s]);
    }
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
    cu_drain(c);
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
    cu_drain(c);
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
    cu_drain(c);
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
    cu_refresh_dead(c);
}

static void cu_get_state(sae_backend *be, sae_state *h)
{
    cuda_impl *c = impl_of(be);
    copy_state(c, h, 0);
    h->adam_t = c->adam_t;
    h->theta = c->theta;
}

static void cu_eval_batch(sae_backend *be, const float *x, const float *g, int B, int k,
                          sae_metrics *acc)
{
    cuda_impl *c = impl_of(be);
    if (c->dp) {
        cu_drain(c);
        cu_eval_batch_dist(be, x, g, B, k, acc);
        return;
    }
    SF_CHECK(B > 0 && B <= c->max_B && k > 0);
    cudaStream_t cs = c->cs;
    const long long used = infer_code(c, x, g, B, k);
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
    cu_count_results(c, c->e_lat, (int)used, B, NULL);
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
    const int allow16 = cu_input_env(why, len);
    if (allow16 < 0)
        return NULL;

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
    for (int s = 0; s < 2; s++) {
        c->xb[s] = (float *)cu_dalloc(B * d * 4);
        c->gb[s] = (float *)cu_dalloc(B * d * 4);
        CUDA_CHECK(cudaMallocHost((void **)&c->h_resb[s], R_COUNT * sizeof(double)));
        CUDA_CHECK(cudaMallocHost((void **)&c->h_xb[s], B * d * 4));
        CUDA_CHECK(cudaMallocHost((void **)&c->h_gb[s], B * d * 4));
        CUDA_CHECK(cudaEventCreateWithFlags(&c->ev_step[s], cudaEventDisableTiming));
    }
    cu_use_slot(c, 0);
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
    cu_refresh_dead(c);

    be->name = "cuda";
    be->profile = sae_profile_env();
    be->hp = *hp;
    be->max_B = max_B;
    be->free = cu_free;
    be->set_params = cu_set_params;
    be->get_params = cu_get_params;
    be->set_state = cu_set_state;
    be->get_state = cu_get_state;
    cu_step_bind(be);
    be->eval_batch = cu_eval_batch;
    be->encode = cu_encode;
    be->set_dist = cu_set_dist;
    be->impl = c;
    cu_input_bind(be, allow16);
    return be;
}

extern "C" int64_t backend_cuda_bytes(const sae_hparams *hp, int B)
{
    int64_t d = hp->d, n = hp->n, G = hp->arch == SAE_ARCH_MATRYOSHKA ? hp->n_prefixes : 1;
    int64_t aux = hp->aux_alpha > 0.0f ? (hp->aux_k < hp->n ? hp->aux_k : hp->n) : 0;
    int64_t ents = (int64_t)B * (hp->k + aux);
    int64_t rows = ents < n ? ents : n;
    int64_t bytes = 6 * n * d * 4 + (hp->precision == SAE_PREC_BF16 ? n * d * 2 : 0) + n * 64 +
                    (int64_t)B * d * 4 * (12 + G) + 2 * (int64_t)B * n * 4 + ents * 64 +
                    2 * rows * d * 4 + (int64_t)bselect_workspace_bytes(B, hp->n) +
                    (int64_t)enc_workspace_bytes(B, hp->d, hp->precision) + (64 << 20);
    return bytes;
}
