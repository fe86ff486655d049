/* Run configuration: the YAML schema of SPEC §5, defaults, validation, --set overrides, resolved dump. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdint.h>

#include "../kernels/sae_types.h"
#include "sf_err.h"

#define SF_PATH_MAX 1024
/* Encoder scale at init (W_enc = s * W_dec) when sae.init_scale is 0 (the default), per arch:
 * batch selection needs a small encoder, row top-k does better at 1 on real activations
 * (docs/rules.md, "Initial encoder scale"). */
#define SF_INIT_SCALE_BATCH 0.01f
#define SF_INIT_SCALE_ROW 1.0f
/* AuxK weight when sae.aux_alpha is SF_AUX_ALPHA_ARCH (the default), per arch: batchtopk
 * recovers about 10 points more of the true features at 1/8 than at 1/32, matryoshka loses 5 at
 * 1/8, topk and gsae do not move (docs/rules.md, "AuxK weight"). */
#define SF_AUX_ALPHA_ARCH (-1.0f)
#define SF_AUX_ALPHA_BATCHTOPK 0.125f
#define SF_AUX_ALPHA_OTHER 0.03125f

typedef enum { SF_BACKEND_AUTO = 0, SF_BACKEND_CPU = 1, SF_BACKEND_CUDA = 2 } sf_backend_kind;
typedef enum { SF_BAD_ROWS_ERROR = 0, SF_BAD_ROWS_SKIP = 1 } sf_bad_rows;
typedef enum { SF_NORMALIZE_NONE = 0, SF_NORMALIZE_EXPECTED_NORM = 1 } sf_normalize;
typedef enum { SF_SCHED_CONSTANT = 0, SF_SCHED_LINEAR = 1, SF_SCHED_COSINE = 2 } sf_schedule;
typedef enum { SF_PROGRESS_AUTO = 0, SF_PROGRESS_ON = 1, SF_PROGRESS_OFF = 2 } sf_progress;

typedef struct sf_config {
    char source[SF_PATH_MAX];  /* the file it was read from (for messages) */
    int64_t seed;              /* default 0 */
    char out_dir[SF_PATH_MAX]; /* required */
    sf_backend_kind backend;   /* default auto */

    struct {
        char path[SF_PATH_MAX];      /* required: file, directory or glob */
        char eval_path[SF_PATH_MAX]; /* optional; "" = none */
        int64_t eval_tokens;         /* held out from the end of path when eval_path is ""; default 0 */
        int64_t shuffle_buffer;      /* rows per shuffle window; default 65536; 0 or 1 = no shuffle */
        sf_bad_rows bad_rows;        /* default error */
        sf_normalize normalize;      /* default none */
    } data;

    struct {
        sae_arch arch;              /* default topk */
        int64_t n_latents;          /* n; 0 = use expansion */
        int expansion;              /* n = expansion * d when n_latents == 0; default 16 */
        int k;                      /* default 32 */
        float gsae_beta;            /* default 1.0, >= 0 */
        float init_scale;           /* W_enc = init_scale * W_dec at init; [0, 1], 0 = per arch */
        int n_prefixes;             /* matryoshka_prefixes; 0 = default (n/16, n/4, n) */
        int64_t prefixes[SAE_MAX_PREFIXES];
        int aux_k;                  /* 0 = default d/2 */
        float aux_alpha;            /* >= 0 (0 = off); -1 = per arch, the default (config.h) */
        int64_t dead_tokens;        /* default 10,000,000 */
    } sae;

    struct {
        int batch_tokens;           /* B; default 4096 */
        int64_t total_tokens;       /* required > 0 */
        float lr;                   /* 0 = default 2e-4 / sqrt(n / 16384) */
        float lr_min;               /* cosine floor; default 0 */
        int warmup_steps;           /* default 0 */
        sf_schedule schedule;       /* default constant */
        float decay_start;          /* linear: fraction of the run where decay starts; default 0.8 */
        int k_start;                /* 0 = no annealing; else k anneals from k_start to sae.k */
        int k_anneal_steps;         /* default 0 = off */
        float grad_clip;            /* 0 = off */
        sae_precision precision;    /* default fp32 */
        int threads;                /* CPU threads; 0 = all cores */
        int dist_timeout_s;         /* data parallel: a collective waiting longer stops the job */
        int eval_every_steps;       /* 0 = only at the end; evaluation needs an eval set */
    } train;

    struct {
        int every_steps;            /* 0 = only at the end; default 1000 */
        int keep;                   /* newest N complete checkpoints kept; default 3 */
    } checkpoint;

    struct {
        int every_steps;            /* default 10 */
        sf_progress progress;       /* default auto (live line on a terminal) */
    } log;
} sf_config;

/* Fills every default (out_dir and data.path empty, total_tokens 0). */
void config_defaults(sf_config *c);

/* Parses YAML at path into c (defaults first), applies the "key=value" overrides in order
 * (dotted keys as in the file), then validates. Errors name file, line (where the key came
 * from a file) and key; return SF_EINPUT. */
int config_load(const char *path, const char *const *overrides, int n_overrides,
                sf_config *c, sf_err *err);

/* Checks ranges and cross-key rules (e.g. k <= n, prefixes ascending and last = n once d is
 * known). d = 0 skips the checks that need the data width. */
int config_validate(const sf_config *c, int d, sf_err *err);

/* n, aux_k, lr and prefixes resolved for input width d (call after config_validate). */
void config_resolve(sf_config *c, int d);

/* Writes the resolved config as YAML (every key, loadable by config_load) to path, durably. */
int config_write(const sf_config *c, const char *path, sf_err *err);

/* The default train.lr for n latents: 2e-4 / sqrt(n / 16384). */
float config_default_lr(int64_t n);

/* The largest train.threads accepted: 4 x the online cores (more only oversubscribes, and
 * libgomp crashes creating tens of thousands of threads). */
int config_max_threads(void);

/* Names for enums, as in the YAML. */
const char *config_arch_name(sae_arch a);
/* The initial encoder scale c->sae.init_scale resolves to (its arch's default when 0). */
float config_init_scale(const sf_config *c);
/* The same rule for callers without a config (benches): `scale` when > 0, else arch's default. */
float config_init_scale_for(sae_arch arch, float scale);
/* The AuxK weight `alpha` resolves to for arch: alpha when >= 0, else the arch's default. */
float config_aux_alpha_for(sae_arch arch, float alpha);

#endif
