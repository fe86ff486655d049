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

#endif
