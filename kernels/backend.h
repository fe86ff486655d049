/* The training-step engine behind one SAE: the contract both backends (CPU, CUDA) implement.
 *
 * One backend instance owns one SAE's parameters and optimizer state in its own memory
 * (host for cpu, device for cuda). The host driver feeds the same batch to several instances
 * for a sweep; a data-parallel run sums gradients between backward and update inside
 * train_step (see dist.h for where its collectives sit in the step order below).
 *
 * Step order (train_step), identical on both backends:
 *   1. dead mask D from since_fired (state before this step); dead_frac = |D|/n
 *   2. u = x - b_dec; pre = u W_enc^T + b_enc                 (enc_forward)
 *   3. gsae: gate = |g W_dec^T|                                (gate_forward)
 *   4. selection: topk/gsae -> select_topk(k); batchtopk/matryoshka -> select_batch(B*k),
 *      theta = min_kept if theta < 0 else theta_ema*theta + (1-theta_ema)*min_kept
 *   5. mean, den = loss_center(x)
 *   6. xhat_g = decode(limit = m_g) for each prefix (one prefix = n unless matryoshka);
 *      recon = (1/G) sum_g |x - xhat_g|^2 / den; dY[j] = sum_{g>=j} 2/(G den) (xhat_g - x)
 *   7. AuxK if aux_alpha > 0 and |D| > 0: k_aux = min(aux_k, |D|); row top-k_aux of
 *      relu(pre) restricted to D; e = x - xhat_full (constant); ehat = decode(no bias);
 *      auxk = |e - ehat|^2 / den; dY_aux = 2 aux_alpha / den (ehat - e)
 *   8. backward over the groups {main (G bands), aux (1 band)}; dec_grad_project;
 *      grad_norm = sqrt(grad_sqnorm); gscale = grad_clip > 0 && norm > clip ? clip/norm : 1
 *   9. adam_t += 1; adam_step(step_size, bc2_sqrt from adam_t, gscale); renorm W_dec
 *  10. featstats_update with the main code (gate for gsae)
 * Metrics: loss = recon + aux_alpha * auxk; fvu = |x - xhat_full|^2 / den; l0 = entries/B;
 * gw_* when g != NULL (any arch: the gradient-weighted error of SPEC/issue 4).
 *
 * Inference rule (eval_batch, encode): topk -> row top-k on a; gsae -> gated top-k when g is
 * given, plain top-k on a otherwise; batchtopk/matryoshka -> a > theta (batch top-k while
 * theta < 0). */
#ifndef BACKEND_H
#define BACKEND_H

#include <stdint.h>

#include "dist.h"
#include "profile.h"
#include "sae_types.h"

typedef struct sae_backend sae_backend;

struct sae_backend {
    const char *name; /* "cpu" or "cuda" */
    sae_hparams hp;
    int max_B;        /* largest batch train_step / eval_batch / encode accept */

    void (*free)(sae_backend *be);
    /* Host <-> backend copies of the parameters and of the resumable state. Host arrays are
     * caller-allocated with the shapes of sae_params / sae_state. */
    void (*set_params)(sae_backend *be, const sae_params *host);
    void (*get_params)(sae_backend *be, sae_params *host);
    void (*set_state)(sae_backend *be, const sae_state *host);
    void (*get_state)(sae_backend *be, sae_state *host);

    /* One training step on B <= max_B tokens (host memory). g may be NULL unless arch is
     * gsae. k is this step's k (k annealing). step is the 0-based global step number. */
    void (*train_step)(sae_backend *be,
                       const float *x, // (B, d)
                       const float *g, // (B, d) or NULL
                       int B, int k, float lr, int64_t step,
                       sae_metrics *out);

    /* Forward pass with the inference rule; adds this batch's sums (fvu_num, fvu_den, gw_num,
     * gw_den, l0 * B as a sum in l0, tokens) into acc. The caller derives the ratios. */
    void (*eval_batch)(sae_backend *be,
                       const float *x, // (B, d)
                       const float *g, // (B, d) or NULL
                       int B, int k,
                       sae_metrics *acc);

    /* Inference codes for statistics, as a host CSR. Returns the number of entries needed;
     * lat/val/gate_val are written only when that is <= cap (row_ptr always). gate_val gets
     * |W_dec g| of each entry for gsae with g given (may be NULL). */
    int64_t (*encode)(sae_backend *be,
                      const float *x, // (B, d)
                      const float *g, // (B, d) or NULL
                      int B, int k, int64_t cap,
                      int *row_ptr,     // (B + 1)
                      int *lat,         // (cap)
                      float *val,       // (cap)
                      float *gate_val); // (cap) or NULL

    /* Pipelined stepping (optional: NULL when the backend has none; the driver then calls
     * train_step). submit_step queues the same step as train_step and returns without waiting
     * for it; collect_step waits for the oldest submitted step not yet collected, writes its
     * metrics and returns 1 (0 when none is pending). At most two steps are uncollected: submit
     * with two pending, or train_step with any, is a programmer error. Everything else (params,
     * state, eval_batch, encode) first waits for the submitted steps, whose metrics stay
     * collectable. The intended loop submits step t, then collects step t-1 while t computes;
     * the CUDA backend copies batch t+1 while step t runs and never waits inside a step in
     * steady state (a data-parallel or profiled step is collected before submit returns). */
    void (*submit_step)(sae_backend *be,
                        const float *x, // (B, d)
                        const float *g, // (B, d) or NULL
                        int B, int k, float lr, int64_t step);
    int (*collect_step)(sae_backend *be, sae_metrics *out);

    /* Optional (NULL when the backend has none): host buffers of (max_B, d) floats that the
     * driver may fill with the next batch (which = 0 for x, 1 for g). The CUDA backend hands out
     * its pinned staging buffers, so a step skips a host copy and DMAs straight from them. The
     * buffer belongs to the next submitted step: ask again before filling each batch (the CUDA
     * backend alternates between two, and a buffer is free once its step was collected). */
    float *(*input_buffer)(sae_backend *be, int which);

    /* Optional (NULL when the backend has none; the CUDA backend has none either when SF_UPLOAD=f32
     * was in the environment at its creation): the format of every later x and g handed to
     * train_step, submit_step, eval_batch and encode, data-parallel steps included. With dtype
     * SAE_INPUT_F16 or SAE_INPUT_BF16, x is a row as read from a shard of that dtype, before the
     * input scale, so every value of x and g is a dtype value (anything else is a programmer
     * error and aborts), and the backend uses x * x_scale: the float product the data stream
     * forms with scale x_scale. Results are therefore bit-identical to handing over the scaled
     * floats; g is used as given. The CUDA backend ships such a batch in 16 bits (half the bytes
     * of a float upload) and widens it on the device. SAE_INPUT_F32 with x_scale 1 restores plain
     * floats. x_scale is finite and nonzero; input_buffer's buffers stay float either way. */
    void (*set_input_format)(sae_backend *be, sae_input_dtype dtype, float x_scale);

    /* Phase timing (kernels/profile.h): when profile != 0 (default: SF_PROFILE in the
     * environment at creation), each train_step leaves its phases' seconds in phase_s; the CUDA
     * backend then times with events and synchronises per phase boundary only at the step's end. */
    int profile;
    double phase_s[SAE_PH_COUNT];

    /* Data parallel (dist.h, which writes down the multi-rank step order): NULL for one rank.
     * set_dist attaches the ranks' collectives before the first step (the CUDA backend opens
     * its NCCL communicator there); the caller keeps *dd alive while the backend lives. Under
     * dist, train_step's metrics and eval_batch's sums are the global batch's on every rank,
     * and eval_batch accepts B = 0. */
    const sae_dist *dist;
    void (*set_dist)(sae_backend *be, const sae_dist *dd);

    void *impl;
};

/* CPU backend: OpenMP over the batch with `threads` threads (0 = all cores). */
sae_backend *backend_cpu_new(const sae_hparams *hp, int max_B, int threads);

/* CUDA backend on `device`. Returns NULL and writes a one-line reason to why (size len)
 * when no usable GPU is present. Defined only in CUDA and emulated-CUDA builds. */
sae_backend *backend_cuda_new(const sae_hparams *hp, int max_B, int device, char *why, int len);

/* The device a data-parallel rank must create its CUDA backend on (set_dist refuses another):
 * local_rank modulo the visible devices, so one GPU per rank on a node, or the one device a
 * launcher left visible to each rank. 0 when dd is NULL or one rank. CUDA builds only. */
int backend_cuda_dist_device(const sae_dist *dd);

/* Bytes of memory a backend for (hp, max_B) allocates: host memory for the CPU backend,
 * device memory for the CUDA one (defined in CUDA builds), so callers can refuse a
 * configuration that does not fit before allocating anything. */
int64_t backend_cpu_bytes(const sae_hparams *hp, int max_B);
int64_t backend_cuda_bytes(const sae_hparams *hp, int max_B);

/* Host-side helpers for the sae_params / sae_state shapes (all arrays zeroed;
 * theta = -1, last_fired_step = -1). */
void sae_params_alloc(sae_params *p, int d, int n);
void sae_params_free(sae_params *p);
void sae_state_alloc(sae_state *s, int d, int n);
void sae_state_free(sae_state *s);
/* The same without aborting: 0 (nothing left allocated) when memory runs out, for sizes that
 * come from a user's config. */
int sae_params_try_alloc(sae_params *p, int d, int n);
int sae_state_try_alloc(sae_state *s, int d, int n);

#endif
