/* Phase-timed replicas of one training step (bench only): the step order of kernels/backend.h
 * run op by op with a timer between ops, so the benchmark can say where a step's time goes
 * without timers inside the backends. The CPU replica calls the CPU twins (as backend_cpu.c
 * does); the CUDA replica calls the CUDA launchers (kernels/ .cuh headers) with cudaEvents between them. */
#ifndef BENCH_PHASES_H
#define BENCH_PHASES_H

#include <stdint.h>

#include "../kernels/sae_types.h"

enum {
    PH_UPLOAD = 0, /* host -> device copy of the batch (GPU only; 0 on the CPU) */
    PH_ENCODE, /* u = x - b_dec, pre = u W_enc^T + b_enc (the encoder GEMM) */
    PH_GATE,       /* gsae: |g W_dec^T| */
    PH_SELECT,     /* main selection (+ batchtopk threshold) */
    PH_DECODE,     /* centring, decodes of every prefix, residuals and dY */
    PH_AUXK,       /* AuxK selection, decode, residual (only with dead latents) */
    PH_BACKWARD,   /* sparse backward, decoder projection, gradient norm */
    PH_OPTIM,      /* Adam + W_dec renorm */
    PH_STATS,      /* dead mask, feature statistics, gradient-weighted error */
    PH_COUNT
};

extern const char *const bench_phase_names[PH_COUNT];

typedef struct phase_runner phase_runner;

/* A replica owning its own copy of the parameters (init) and a zero state; `dead_frac` of the
 * latents start dead (since_fired = dead_tokens) so AuxK can be measured. threads: CPU threads. */
phase_runner *phase_cpu_new(const sae_hparams *hp, int max_B, int threads, const sae_params *init,
                            double dead_frac);
/* One step; ph[] receives seconds per phase. Returns the step's wall time. */
double phase_cpu_step(phase_runner *r, const float *x, const float *g, int B, int k, float lr,
                      int64_t step, double *ph);
void phase_cpu_free(phase_runner *r);

/* Bytes of host memory the CPU backend (or the replica) needs for this configuration. */
int64_t phase_cpu_bytes(const sae_hparams *hp, int B);

/* Marks latents dead: since_fired[i] = dead_tokens for a deterministic dead_frac of them. */
void phase_mark_dead(int64_t *since_fired, int n, int64_t dead_tokens, double dead_frac);

#ifdef SF_WITH_CUDA
/* CUDA replica: parameters uploaded from init; same phases, timed with cudaEvents. */
phase_runner *phase_cuda_new(const sae_hparams *hp, int max_B, const sae_params *init,
                             double dead_frac);
double phase_cuda_step(phase_runner *r, const float *x, const float *g, int B, int k, float lr,
                       int64_t step, double *ph);
void phase_cuda_free(phase_runner *r);
int64_t phase_cuda_bytes(const sae_hparams *hp, int B);
#endif

#endif
