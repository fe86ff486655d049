/* Opt-in phase timing of train_step (SF_PROFILE=1 or sae_backend.profile): the phases of the
 * step order in kernels/backend.h, timed inside the backends so no replica has to copy them. */
#ifndef PROFILE_H
#define PROFILE_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SAE_PH_UPLOAD = 0, /* host -> device copy of the batch (GPU; 0 on the CPU) */
    SAE_PH_ENCODE,     /* u = x - b_dec, pre = u W_enc^T + b_enc: the encoder GEMM */
    SAE_PH_GATE,       /* gsae: |g W_dec^T| */
    SAE_PH_SELECT,     /* main selection (+ batchtopk threshold) */
    SAE_PH_DECODE,     /* centring, decodes of every prefix, residuals and dY */
    SAE_PH_AUXK,       /* AuxK selection, decode, residual (only with dead latents) */
    SAE_PH_BACKWARD,   /* sparse backward, decoder projection, gradient norm */
    SAE_PH_OPTIM,      /* Adam + W_dec renorm */
    SAE_PH_STATS,      /* dead mask, feature statistics, gradient-weighted error, metrics */
    SAE_PH_COUNT
} sae_phase;

/* Short names for reports and JSON ("upload", "encode", ...). */
const char *sae_phase_name(int phase);

/* 1 when SF_PROFILE is set to anything but "" or "0": the backends' default for .profile. */
int sae_profile_env(void);

/* CPU wall-clock phase marks: begin zeroes out and starts the clock (nothing when !on); each
 * mark adds the time since the previous mark to out[phase]. */
typedef struct sae_prof {
    int on;
    double t;
    double *out; /* (SAE_PH_COUNT) */
} sae_prof;

void sae_prof_begin(sae_prof *p, int on, double *out);
void sae_prof_mark(sae_prof *p, int phase);

#ifdef __cplusplus
}
#endif

#endif
