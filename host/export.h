/* Dictionary exports: SAELens layout (sae.safetensors + cfg.json + sparsity.safetensors) and sparsify layout. */
#ifndef EXPORT_H
#define EXPORT_H

#include <stdint.h>

#include "../kernels/sae_types.h"
#include "sf_err.h"

typedef struct export_info {
    sae_arch arch;
    int d, n, k;
    float input_scale;      /* folded back into the weights so the export takes raw inputs */
    float theta;            /* batchtopk/matryoshka threshold (exported as jumprelu) */
    const char *model, *hook, *dataset_path;
    int64_t context_size;   /* -1 unknown */
    int64_t tokens_seen;
    const int64_t *fire_count; /* (n) for sparsity.safetensors, or NULL */
} export_info;

/* Writes dir/sae.safetensors, dir/cfg.json, dir/sparsity.safetensors (SAELens 5.x/6.x). */
int export_saelens(const char *dir, const export_info *info, const sae_params *p, sf_err *err);
/* Writes dir/cfg.json + dir/sae.safetensors in EleutherAI sparsify's layout. */
int export_sparsify(const char *dir, const export_info *info, const sae_params *p, sf_err *err);

/* An SAE read back from any saeforge artefact, as parameters for RAW inputs (input scale
 * folded in, internal layout: W_enc [n, d]). Used by export, compare, stats and inspect. */
typedef struct sae_loaded {
    char source[4096];     /* the file or dir it was read from */
    char kind[32];         /* "saelens", "sparsify", "checkpoint", "decoder" (truth file) */
    int dec_only;          /* only W_dec is present (a truth file): p.W_enc etc. are NULL */
    sae_arch arch;
    int d, n, k;           /* k = 0 when unknown */
    float gsae_beta;       /* from the run's config; 1 when unknown */
    float theta;           /* batchtopk/matryoshka inference threshold (< 0 unset) */
    char model[256], hook[256], dataset_path[1024];
    int64_t context_size;  /* -1 unknown */
    int64_t tokens_seen;   /* 0 unknown */
    int64_t step;          /* checkpoint step, -1 otherwise */
    int64_t *fire_count;   /* (n) checkpoint counters, or NULL */
    float *log_sparsity;   /* (n) from sparsity.safetensors, or NULL */
    sae_params p;          /* malloc'd; only W_dec when dec_only */
} sae_loaded;

/* path: a run dir (final/, else newest complete checkpoint), a checkpoint dir, an export dir
 * (SAELens or sparsify), a sae.safetensors file in one of those, or a file / synth dir with a
 * truth.safetensors holding W_dec [F, d]. need_full = 1 refuses decoder-only files. */
int sae_load(const char *path, int need_full, sae_loaded *out, sf_err *err);
void sae_loaded_free(sae_loaded *s);
/* "topk", "gsae", "batchtopk", "matryoshka" -> arch; returns -1 for other names. */
int export_arch_from_name(const char *name, sae_arch *out);

#endif
