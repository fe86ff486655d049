/* Phase-timed replica of the CUDA training step (see phases.h): the launchers of kernels/ .cuh
 * in the order of kernels/backend.h (as kernels/backend_cuda.cu calls them), on one stream with
 * a cudaEvent between phases. Differences from the backend, none of which moves time between
 * phases measurably: the batchtopk threshold EMA (a one-thread kernel) is not kept, and x and g
 * are copied on the compute stream instead of a side stream. Built only in CUDA variants. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/adam.cuh"
#include "../kernels/backend.h"
#include "../kernels/backward.cuh"
#include "../kernels/bselect.cuh"
#include "../kernels/cuda_compat.h"
#include "../kernels/decode.cuh"
#include "../kernels/encode.cuh"
#include "../kernels/featstats.cuh"
#include "../kernels/loss.cuh"
#include "../kernels/select.cuh"
#include "../kernels/sf_check.h"
#include "bench_util.h"
#include "phases.h"

enum { R_DEN = 0, R_AUX, R_SQN, R_NORM, R_GWN, R_GWD, R_RES, R_COUNT = R_RES + SAE_MAX_PREFIXES };

typedef struct cuda_replica {
    sae_hparams hp;
    int max_B, G, auxcap, kcap, dead;
    int bounds[SAE_MAX_PREFIXES];
    cudaStream_t cs;
    cublasHandle_t blas;
    cudaEvent_t ev[PH_COUNT + 1];
    sae_params P;
    sae_state S;
    int64_t adam_t;
    uint16_t *W_enc_bf16;
    float *x, *g, *u, *pre, *gate, *mean, *xhat, *xtmp, *dY, *e, *ehat, *dY_aux;
    float *h_x, *h_g;
    int *row_ptr, *lat, *aux_row_ptr, *aux_lat, *d_dead;
    float *val, *aux_val, *d_min_kept, *d_gscale;
    uint8_t *dead_mask;
    void *bsel_ws, *enc_ws, *loss_ws, *adam_ws;
    double *res;
    sae_bwd_ws ws;
    sae_grads_cuda gr;
} cuda_replica;

static void *dalloc(size_t bytes)
{
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    return p;
}

int64_t phase_cuda_bytes(const sae_hparams *hp, int B)
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

phase_runner *phase_cuda_new(const sae_hparams *hp, int max_B, const sae_params *init,
                             double dead_frac)
{
    cuda_replica *c = calloc(1, sizeof *c);
    SF_CHECK(c != NULL);
    c->hp = *hp;
    c->max_B = max_B;
    c->G = hp->arch == SAE_ARCH_MATRYOSHKA ? hp->n_prefixes : 1;
    for (int j = 0; j < c->G; j++)
        c->bounds[j] = c->G == 1 ? hp->n : hp->prefixes[j];
    c->bounds[c->G - 1] = hp->n;
    c->auxcap = hp->aux_alpha > 0.0f ? (hp->aux_k < hp->n ? hp->aux_k : hp->n) : 0;
    c->kcap = hp->k;
    CUDA_CHECK(cudaStreamCreateWithFlags(&c->cs, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&c->blas));
    for (int i = 0; i <= PH_COUNT; i++)
        CUDA_CHECK(cudaEventCreate(&c->ev[i]));
    const size_t d = (size_t)hp->d, n = (size_t)hp->n, B = (size_t)max_B, nd = n * d;
    c->P.W_enc = dalloc(nd * 4);
    c->P.W_dec = dalloc(nd * 4);
    c->P.b_enc = dalloc(n * 4);
    c->P.b_dec = dalloc(d * 4);
    CUDA_CHECK(cudaMemcpy(c->P.W_enc, init->W_enc, nd * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(c->P.W_dec, init->W_dec, nd * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(c->P.b_enc, init->b_enc, n * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(c->P.b_dec, init->b_dec, d * 4, cudaMemcpyHostToDevice));
    float **mom[8] = {&c->S.m_W_enc, &c->S.v_W_enc, &c->S.m_W_dec, &c->S.v_W_dec,
                      &c->S.m_b_enc, &c->S.v_b_enc, &c->S.m_b_dec, &c->S.v_b_dec};
    size_t msz[8] = {nd, nd, nd, nd, n, n, d, d};
    for (int i = 0; i < 8; i++) {
        *mom[i] = dalloc(msz[i] * 4);
        CUDA_CHECK(cudaMemset(*mom[i], 0, msz[i] * 4));
    }
    c->S.since_fired = dalloc(n * 8);
    c->S.fire_count = dalloc(n * 8);
    c->S.act_sum = dalloc(n * 8);
    c->S.act_max = dalloc(n * 4);
    c->S.last_fired_step = dalloc(n * 8);
    c->S.gate_sum = dalloc(n * 8);
    int64_t *sf = calloc(n, sizeof(int64_t));
    SF_CHECK(sf != NULL);
    phase_mark_dead(sf, hp->n, hp->dead_tokens, dead_frac);
    CUDA_CHECK(cudaMemcpy(c->S.since_fired, sf, n * 8, cudaMemcpyHostToDevice));
    free(sf);
    CUDA_CHECK(cudaMemset(c->S.fire_count, 0, n * 8));
    CUDA_CHECK(cudaMemset(c->S.act_sum, 0, n * 8));
    CUDA_CHECK(cudaMemset(c->S.act_max, 0, n * 4));
    CUDA_CHECK(cudaMemset(c->S.gate_sum, 0, n * 8));
    CUDA_CHECK(cudaMemset(c->S.last_fired_step, 0xff, n * 8));
    if (hp->precision == SAE_PREC_BF16) {
        c->W_enc_bf16 = dalloc(nd * 2);
        enc_shadow_bf16_cuda(c->P.W_enc, (long long)nd, c->W_enc_bf16, c->cs);
    }
    c->x = dalloc(B * d * 4);
    c->g = dalloc(B * d * 4);
    c->u = dalloc(B * d * 4);
    c->pre = dalloc(B * n * 4);
    c->gate = hp->arch == SAE_ARCH_GSAE ? dalloc(B * n * 4) : NULL;
    c->mean = dalloc(d * 4);
    c->xhat = dalloc(B * d * 4);
    c->xtmp = dalloc(B * d * 4);
    c->dY = dalloc((size_t)c->G * B * d * 4);
    c->e = dalloc(B * d * 4);
    c->ehat = dalloc(B * d * 4);
    c->dY_aux = dalloc(B * d * 4);
    CUDA_CHECK(cudaMallocHost((void **)&c->h_x, B * d * 4));
    CUDA_CHECK(cudaMallocHost((void **)&c->h_g, B * d * 4));
    c->row_ptr = dalloc((B + 1) * 4);
    c->lat = dalloc(B * (size_t)c->kcap * 4);
    c->val = dalloc(B * (size_t)c->kcap * 4);
    c->aux_row_ptr = dalloc((B + 1) * 4);
    c->aux_lat = dalloc(B * (size_t)(c->auxcap > 0 ? c->auxcap : 1) * 4);
    c->aux_val = dalloc(B * (size_t)(c->auxcap > 0 ? c->auxcap : 1) * 4);
    c->dead_mask = dalloc(n);
    c->d_dead = dalloc(4);
    c->d_min_kept = dalloc(4);
    c->d_gscale = dalloc(4);
    c->bsel_ws = dalloc(bselect_workspace_bytes(max_B, hp->n));
    c->enc_ws = dalloc(enc_workspace_bytes(max_B, hp->d, hp->precision));
    c->loss_ws = dalloc(loss_cuda_work_bytes(max_B));
    c->adam_ws = dalloc(adam_cuda_work_bytes());
    c->res = dalloc(R_COUNT * sizeof(double));
    long long entries = (long long)max_B * (c->kcap + c->auxcap);
    SF_CHECK(entries < 0x7fffffffLL);
    bwd_ws_alloc(&c->ws, hp->n, hp->d, max_B, (int)entries);
    grads_cuda_alloc(&c->gr, hp->n, hp->d, c->ws.cap_rows);
    featstats_dead_mask_cuda(c->S.since_fired, hp->n, hp->dead_tokens, c->dead_mask, c->d_dead, c->cs);
    CUDA_CHECK(cudaMemcpyAsync(&c->dead, c->d_dead, sizeof(int), cudaMemcpyDeviceToHost, c->cs));
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    return (phase_runner *)c;
}

void phase_cuda_free(phase_runner *r)
{
    cuda_replica *c = (cuda_replica *)r;
    if (!c)
        return;
    CUDA_CHECK(cudaStreamSynchronize(c->cs));
    void *dev[] = {c->P.W_enc, c->P.W_dec, c->P.b_enc, c->P.b_dec, c->S.m_W_enc, c->S.v_W_enc,
                   c->S.m_W_dec, c->S.v_W_dec, c->S.m_b_enc, c->S.v_b_enc, c->S.m_b_dec,
                   c->S.v_b_dec, c->S.since_fired, c->S.fire_count, c->S.act_sum, c->S.act_max,
                   c->S.last_fired_step, c->S.gate_sum, c->W_enc_bf16, c->x, c->g, c->u, c->pre,
                   c->gate, c->mean, c->xhat, c->xtmp, c->dY, c->e, c->ehat, c->dY_aux,
                   c->row_ptr, c->lat, c->val, c->aux_row_ptr, c->aux_lat, c->aux_val,
                   c->dead_mask, c->d_dead, c->d_min_kept, c->d_gscale, c->bsel_ws, c->enc_ws,
                   c->loss_ws, c->adam_ws, c->res};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    cudaFreeHost(c->h_x);
    cudaFreeHost(c->h_g);
    bwd_ws_free(&c->ws);
    grads_cuda_free(&c->gr);
    for (int i = 0; i <= PH_COUNT; i++)
        cudaEventDestroy(c->ev[i]);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->cs);
    free(c);
}

double phase_cuda_step(phase_runner *r, const float *x, const float *g, int B, int k, float lr,
                       int64_t step, double *ph)
{
    cuda_replica *c = (cuda_replica *)r;
    const sae_hparams *hp = &c->hp;
    const int d = hp->d, n = hp->n, G = c->G, gsae = hp->arch == SAE_ARCH_GSAE;
    SF_CHECK(B >= 1 && B <= c->max_B && k >= 1 && k <= c->kcap);
    cudaStream_t cs = c->cs;
    const size_t Bd = (size_t)B * d;
    double t0 = bench_now();
    int e = 0;
#define MARK() CUDA_CHECK(cudaEventRecord(c->ev[e++], cs))
    MARK(); /* start */
    memcpy(c->h_x, x, Bd * 4);
    CUDA_CHECK(cudaMemcpyAsync(c->x, c->h_x, Bd * 4, cudaMemcpyHostToDevice, cs));
    if (g) {
        memcpy(c->h_g, g, Bd * 4);
        CUDA_CHECK(cudaMemcpyAsync(c->g, c->h_g, Bd * 4, cudaMemcpyHostToDevice, cs));
    }
    CUDA_CHECK(cudaMemsetAsync(c->res, 0, R_COUNT * sizeof(double), cs));
    MARK(); /* upload */
    enc_forward_cuda(c->x, c->P.W_enc, c->W_enc_bf16, c->P.b_enc, c->P.b_dec, B, d, n, c->u, c->pre,
                     hp->precision, c->enc_ws, c->blas, cs);
    MARK(); /* encode */
    if (gsae)
        gate_forward_cuda(c->g, c->P.W_dec, B, d, n, c->gate, hp->precision, c->blas, cs);
    MARK(); /* gate */
    const int main_cap = B * k;
    if (hp->arch == SAE_ARCH_BATCHTOPK || hp->arch == SAE_ARCH_MATRYOSHKA) {
        bselect_cuda(c->pre, B, n, (int64_t)B * k, c->row_ptr, c->lat, c->val, c->d_min_kept,
                     c->bsel_ws, cs);
    } else {
        select_topk_cuda(c->pre, gsae ? c->gate : NULL, hp->gsae_beta, NULL, B, n, k, c->lat,
                         c->val, cs);
        fill_row_ptr_cuda(c->row_ptr, B, k, cs);
    }
    MARK(); /* select */
    loss_center_cuda(c->x, B, d, c->mean, c->res + R_DEN, c->loss_ws, cs);
    for (int j = G - 1; j >= 0; j--) {
        float *xh = j == G - 1 ? c->xhat : c->xtmp;
        decode_cuda(c->row_ptr, c->lat, c->val, c->P.W_dec, c->P.b_dec, B, d, c->bounds[j], xh, cs);
        if (j < G - 1)
            CUDA_CHECK(cudaMemcpyAsync(c->dY + j * Bd, c->dY + (j + 1) * Bd, Bd * 4,
                                       cudaMemcpyDeviceToDevice, cs));
        loss_residual_cuda(c->x, xh, B, d, 2.0, (double)G, c->res + R_DEN, j < G - 1, c->dY + j * Bd,
                           c->res + R_RES + j, c->loss_ws, cs);
    }
    MARK(); /* decode */
    int n_groups = 1;
    sae_bwd_group_cuda grp[2];
    memset(grp, 0, sizeof grp);
    grp[0].row_ptr = c->row_ptr;
    grp[0].lat = c->lat;
    grp[0].val = c->val;
    grp[0].cap = main_cap;
    grp[0].n_bands = G;
    memcpy(grp[0].bounds, c->bounds, sizeof c->bounds);
    grp[0].dY = c->dY;
    grp[0].has_bias = 1;
    if (hp->aux_alpha > 0.0f && c->dead > 0 && c->auxcap > 0) {
        int k_aux = hp->aux_k < c->dead ? hp->aux_k : c->dead;
        if (k_aux > c->auxcap)
            k_aux = c->auxcap;
        select_topk_cuda(c->pre, NULL, 0.0f, c->dead_mask, B, n, k_aux, c->aux_lat, c->aux_val, cs);
        fill_row_ptr_cuda(c->aux_row_ptr, B, k_aux, cs);
        sub_cuda(c->x, c->xhat, (long long)Bd, c->e, cs);
        decode_cuda(c->aux_row_ptr, c->aux_lat, c->aux_val, c->P.W_dec, NULL, B, d, n, c->ehat, cs);
        loss_residual_cuda(c->e, c->ehat, B, d, 2.0 * (double)hp->aux_alpha, 1.0, c->res + R_DEN, 0,
                           c->dY_aux, c->res + R_AUX, c->loss_ws, cs);
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
    MARK(); /* auxk */
    backward_cuda(&c->ws, c->u, &c->P, B, d, n, grp, n_groups, &c->gr, cs);
    dec_grad_project_cuda(c->P.W_dec, d, &c->gr, cs);
    grad_sqnorm_cuda(&c->gr, d, n, c->res + R_SQN, c->adam_ws, cs);
    grad_clip_scale_cuda(c->res + R_SQN, hp->grad_clip, c->res + R_NORM, c->d_gscale, cs);
    MARK(); /* backward */
    c->adam_t += 1;
    const double t = (double)c->adam_t;
    const float step_size = (float)((double)lr / (1.0 - pow((double)hp->adam_b1, t)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)hp->adam_b2, t));
    adam_step_cuda(&c->P, &c->S, &c->gr, d, n, step_size, bc2_sqrt, hp->adam_b1, hp->adam_b2,
                   hp->adam_eps, c->d_gscale, c->W_enc_bf16, cs);
    MARK(); /* optimizer */
    featstats_update_cuda(&c->ws, &c->gr, c->val, main_cap, gsae ? c->gate : NULL, B, n, step,
                          &c->S, cs);
    featstats_dead_mask_cuda(c->S.since_fired, n, hp->dead_tokens, c->dead_mask, c->d_dead, cs);
    if (g)
        loss_gw_cuda(c->g, c->x, c->xhat, c->mean, B, d, c->res + R_GWN, c->res + R_GWD,
                     c->loss_ws, cs);
    CUDA_CHECK(cudaMemcpyAsync(&c->dead, c->d_dead, sizeof(int), cudaMemcpyDeviceToHost, cs));
    MARK(); /* stats */
#undef MARK
    SF_CHECK(e == PH_COUNT + 1);
    CUDA_CHECK(cudaStreamSynchronize(cs));
    double wall = bench_now() - t0;
    for (int i = 0; i < PH_COUNT; i++) {
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, c->ev[i], c->ev[i + 1]));
        ph[i] = ms * 1e-3;
    }
    return wall;
}
