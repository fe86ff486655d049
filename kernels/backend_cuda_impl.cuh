/* Private to the CUDA backend: its state, shared by backend_cuda.cu (the one-rank step and the
 * backend functions) and backend_cuda_dist.cu (the multi-rank pieces of dist.h). */
#ifndef BACKEND_CUDA_IMPL_CUH
#define BACKEND_CUDA_IMPL_CUH

#include "backward.cuh"
#include "cuda_compat.h"
/* backend.h is a C header without extern "C" guards */
extern "C" {
#include "backend.h"
}

/* Slots of the per-step results block (doubles, device), read back once per step. */
enum {
    R_DEN = 0,
    R_AUX = 1,
    R_SQN = 2,
    R_NORM = 3,
    R_GWN = 4,
    R_GWD = 5,
    R_L0 = 6,
    R_THETA = 7,
    R_DEAD = 8,   /* dead latents after the step (the next step's mask) */
    R_DEAD0 = 9,  /* dead latents in this step's mask */
    R_MARGIN = 10, /* tokens until the next live latent can die (after the step) */
    R_RES = 11, /* R_RES + g: |x - xhat_g|^2 for each prefix g */
    R_COUNT = R_RES + SAE_MAX_PREFIXES
};

#define PROF_MARKS 16

/* A submitted step whose metrics the host has not handed out yet (backend_cuda_step.cu). */
typedef struct cu_pending {
    int slot;    /* input/result slot it used */
    int B, G;    /* local rows, prefixes */
    int aux;     /* AuxK was enqueued (the device zeroes it when the mask was empty) */
    int has_g;   /* the step had gradients (gw metrics) */
    int64_t Bg;  /* global rows */
    int done;    /* absorbed: m holds the metrics */
    sae_metrics m;
} cu_pending;

typedef struct cuda_impl {
    sae_hparams hp;
    int device;
    int d, n, max_B;
    int kcap;   /* code slots per token of the main code */
    int auxcap; /* code slots per token of the AuxK code */
    cudaStream_t cs, xs;
    cudaEvent_t ev_x, ev_g;
    cublasHandle_t blas;

    sae_params P; /* device */
    sae_state S;  /* device arrays; adam_t and theta mirrored on the host */
    int64_t adam_t;
    float theta;
    float *d_theta;
    uint16_t *W_enc_bf16; /* bf16 shadow (precision bf16) */

    float *x, *g, *u, *pre, *gate, *mean, *xhat, *xtmp, *dY, *e, *ehat, *dY_aux;
    int *row_ptr, *lat;
    float *val;
    int *aux_row_ptr, *aux_lat;
    float *aux_val;
    int ecap; /* encode/eval code capacity (threshold codes can be larger) */
    int *e_lat;
    float *e_val, *e_gate;

    uint8_t *dead_mask;
    int *d_dead;
    int dead_count; /* dead latents under the current state */
    int *d_count;
    float *d_min_kept, *d_gscale;
    void *bsel_ws, *enc_ws, *loss_ws, *adam_ws;

    sae_bwd_ws ws;
    sae_grads_cuda gr;

    /* phase timing (be->profile): events recorded at phase ends on cs, read after the step */
    cudaEvent_t ev_up[2];             /* around the batch copy on xs */
    cudaEvent_t ev_mark[PROF_MARKS];  /* ev_mark[0] = start on cs */
    int mark_phase[PROF_MARKS], n_marks, prof_on;

    /* data parallel (backend_cuda_dist.cu): NULL / 1 for one rank */
    struct cuda_dist *dp;
    int code_mul; /* main code slots per token: up to world * k for the batch rules */

    double *res;     /* (R_COUNT) device */
    double *h_res;   /* pinned: the current slot's h_resb */
    float *h_x, *h_g; /* pinned staging (max_B, d): the current slot's */

    /* Pipelining (backend_cuda_step.cu): two slots of inputs and results, so that batch t+1 is
     * copied while step t computes and the host reads step t-1's results meanwhile. x, g, h_x,
     * h_g, h_res above point into the slot in use. */
    float *xb[2], *gb[2];     /* device inputs (max_B, d) */
    float *h_xb[2], *h_gb[2]; /* pinned staging (max_B, d) */
    double *h_resb[2];        /* pinned results (R_COUNT) */
    cudaEvent_t ev_step[2];   /* recorded on cs when the slot's step has finished */
    int slot;                 /* the slot the next submitted step uses */
    int cur;                  /* the slot x, g, h_x, h_g, h_res point into */
    cu_pending pend[2];       /* FIFO of uncollected steps, oldest at pend_head */
    int pend_head, n_pend;
    /* What the host knows of the dead mask without waiting: from the last absorbed step, plus
     * the tokens of the steps submitted since (AuxK is skipped only when no latent can be dead) */
    int known_dead;
    long long known_margin, tokens_since;

    /* 16-bit inputs (set_input_format; allocated on the first 16-bit format): pinned staging
     * per slot that the host narrows into, the device buffers the copies land in (copies and
     * widens are ordered on xs, so one of each serves both slots), and per staging slot an
     * event after its copies, so the host never narrows into a buffer a copy still reads. */
    sae_input_dtype in_dtype;
    float in_scale;
    uint16_t *h_x16[2], *h_g16[2];
    uint16_t *x16, *g16;
    cudaEvent_t ev_in16[2];
} cuda_impl;

static inline cuda_impl *impl_of(sae_backend *be) { return (cuda_impl *)be->impl; }

/* Main-code slots per token for this k: k, or for a rank of a data-parallel batch selection
 * its share of the global budget, which can reach world * k (never n). */
static inline int cu_code_per_token(const cuda_impl *c, int k)
{
    if (c->code_mul <= 1)
        return k;
    long long p = (long long)k * c->code_mul;
    if (p > c->n)
        p = c->n;
    return p > k ? (int)p : k;
}

/* backend_cuda.cu helpers the multi-rank pieces reuse. */
void *cu_dalloc(size_t bytes);
void cu_alloc_codes(cuda_impl *c, int kcap);
void cu_ensure_ecap(cuda_impl *c, long long need);
/* backend_cuda_input.cu: the batch upload (floats, or 16-bit after set_input_format). */
void cu_upload(cuda_impl *c, const float *x, const float *g, int B);
/* SF_UPLOAD in the environment: 1 (unset or auto: set_input_format offered), 0 (f32: not),
 * -1 with a reason in why for another value. */
int cu_input_env(char *why, int len);
void cu_input_bind(sae_backend *be, int allow16);
void cu_input_free(cuda_impl *c);
/* Points x, g, h_x, h_g, h_res at slot s. */
void cu_use_slot(cuda_impl *c, int s);
/* count of the code's real entries into res[R_L0], theta into R_THETA, dead (device int or
 * NULL: -1) into R_DEAD. */
void cu_count_results(cuda_impl *c, const int *lat, int slots, int B, const int *dead);
/* backend_cuda_step.cu: the training step. cu_drain absorbs every submitted step (their
 * metrics stay collectable); everything that reads or replaces device state calls it first. */
void cu_drain(cuda_impl *c);
void cu_step_bind(sae_backend *be);
/* Dead mask, dead count and margin for the current since_fired (synchronous: set_state, new). */
void cu_refresh_dead(cuda_impl *c);
void cu_wait_g(cuda_impl *c);
void cu_encoder(cuda_impl *c, int B);
long long cu_infer_select(cuda_impl *c, int B, int k, int gated, int *lat, float *val, long long cap);

/* backend_cuda_dist.cu: the collectives of dist.h's step order on the device buffers. NCCL
 * calls go on their own stream in one order on every rank; the compute stream waits for them
 * only where it needs their result. Called only when be->dist is on (world > 1). */
void cu_set_dist(sae_backend *be, const sae_dist *dd);
void cu_dist_free(cuda_impl *c);
/* The global batch size (a host sum). */
int64_t cu_dist_rows(cuda_impl *c, int B);
/* Column sums of x and the row count, summed over the ranks on the NCCL stream while the
 * encoder runs; then (end) the global mean and den into c->mean and res[R_DEN]. */
void cu_dist_center_begin(cuda_impl *c, int B);
void cu_dist_center_end(cuda_impl *c, int B);
/* Exact batch top-k over every rank's rows with budget K (select_batch_dist_cpu's rule), into
 * `slots` slots (padding after row_ptr[B]); *min_kept the global threshold (device). */
void cu_dist_select_batch(cuda_impl *c, const float *pre, int B, int64_t K, int64_t slots,
                          int *row_ptr, int *lat, float *val, float *min_kept);
/* The step's metric sums (c's mres block, plus the entries of the main code) summed over the
 * ranks on the NCCL stream, overlapping the backward. */
void cu_dist_metrics(cuda_impl *c, int slots);
/* Scatter into the dense gradient buffer, its one all-reduce, featstats on the local rows while
 * it runs, since_fired over the ranks; returns the dense view for projection, norm and Adam. */
sae_grads_cuda *cu_dist_grads(cuda_impl *c, int B, int64_t Bg, int slots, const float *gate,
                              int64_t step);
/* The summed metrics block (device), and its host copy after cu_dist_finish's sync. */
double *cu_dist_sums(cuda_impl *c);
const double *cu_dist_finish(cuda_impl *c);
void cu_eval_batch_dist(sae_backend *be, const float *x, const float *g, int B, int k,
                        sae_metrics *acc);

#endif
