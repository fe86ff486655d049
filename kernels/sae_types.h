/* Types shared by the step kernels, their CPU twins, the backends and the host driver. */
#ifndef SAE_TYPES_H
#define SAE_TYPES_H

#include <stdint.h>

typedef enum sae_arch {
    SAE_ARCH_TOPK = 0,
    SAE_ARCH_GSAE = 1,       /* gradient-gated TopK: score a*(1+beta*|W_dec g|) */
    SAE_ARCH_BATCHTOPK = 2,  /* B*k largest scores over the whole batch */
    SAE_ARCH_MATRYOSHKA = 3, /* batchtopk selection, mean FVU over nested prefixes */
} sae_arch;

typedef enum sae_precision {
    SAE_PREC_FP32 = 0,
    SAE_PREC_TF32 = 1,
    SAE_PREC_BF16 = 2,
} sae_precision;

/* How a backend receives its inputs (backend.h, set_input_format). The codes are data/shard.h's
 * shard_dtype, so a shard's dtype is a format as it stands. */
typedef enum sae_input_dtype {
    SAE_INPUT_F32 = 0,  /* floats used as given (the default) */
    SAE_INPUT_F16 = 1,  /* every value an IEEE binary16 one */
    SAE_INPUT_BF16 = 2, /* every value a bfloat16 one */
} sae_input_dtype;

#define SAE_MAX_PREFIXES 16

/* Everything a training step needs besides tensors. Filled by the host from the config. */
typedef struct sae_hparams {
    sae_arch arch;
    int d, n;
    int k;                              /* final k; the per-step k is passed to each step */
    float gsae_beta;
    int n_prefixes;                     /* matryoshka: G >= 1; others: 1 with prefixes[0] = n */
    int prefixes[SAE_MAX_PREFIXES];     /* m_1 < ... < m_G = n */
    int aux_k;                          /* AuxK: at most this many dead latents per token */
    float aux_alpha;                    /* 0 turns AuxK off */
    int64_t dead_tokens;                /* dead = fired on no token in the last dead_tokens tokens */
    float adam_b1, adam_b2, adam_eps;   /* 0.9, 0.999, 1e-8 */
    float grad_clip;                    /* global L2 norm; 0 = off */
    sae_precision precision;            /* encoder GEMM input precision (GPU); CPU is always fp32 */
    float theta_ema;                    /* batchtopk threshold EMA decay, 0.99 */
} sae_hparams;

/* fp32 master parameters, row-major, host or device memory depending on context. */
typedef struct sae_params {
    float *W_enc; /* (n, d): row i = encoder of latent i */
    float *b_enc; /* (n) */
    float *W_dec; /* (n, d): row i = unit-norm decoder direction of latent i */
    float *b_dec; /* (d) */
} sae_params;

/* Optimizer and bookkeeping state that a checkpoint must carry to resume exactly. Host memory. */
typedef struct sae_state {
    float *m_W_enc, *v_W_enc; /* (n, d) Adam moments */
    float *m_b_enc, *v_b_enc; /* (n) */
    float *m_W_dec, *v_W_dec; /* (n, d) */
    float *m_b_dec, *v_b_dec; /* (d) */
    int64_t adam_t;           /* Adam steps taken (bias correction) */
    int64_t *since_fired;     /* (n) tokens since each latent last fired (dead if >= dead_tokens) */
    int64_t *fire_count;      /* (n) tokens on which each latent fired, whole run */
    double *act_sum;          /* (n) sum of kept activation values, whole run */
    float *act_max;           /* (n) max kept activation value, whole run */
    int64_t *last_fired_step; /* (n) last step in which the latent fired, -1 = never */
    double *gate_sum;         /* (n) gsae: sum of |W_dec g| over tokens where the latent fired */
    float theta;              /* batchtopk/matryoshka inference threshold; < 0 = not yet set */
} sae_state;

/* Metrics of one step or one evaluation pass. Sums are kept so batches can be pooled. */
typedef struct sae_metrics {
    double fvu_num;   /* sum_b |x_b - xhat_b|^2 (matryoshka: of the full prefix) */
    double fvu_den;   /* sum_b |x_b - mean(x)|^2 */
    double fvu;       /* fvu_num / fvu_den (matryoshka: the loss uses the mean over prefixes) */
    double loss;      /* the training loss L = recon + aux_alpha * auxk */
    double auxk;      /* AuxK term (0 when no dead latents or aux_alpha == 0) */
    double l0;        /* mean number of active latents per token */
    double dead_frac; /* fraction of latents dead at the start of the step */
    double grad_norm; /* global L2 norm of the gradient (after decoder projection, before clipping) */
    double gw_num;    /* sum_b (g_b . (x_b - xhat_b))^2, when gradients are present */
    double gw_den;    /* sum_b (g_b . (x_b - mean(x)))^2 */
    double gw_err;    /* gw_num / gw_den, or -1 when no gradients */
    int64_t tokens;   /* tokens in this step / evaluation */
} sae_metrics;

#endif
