/* Synthetic activation shards with a known dictionary (`saeforge synth`): the ground truth that
 * recovery tests and the quickstart train against. Generation is a pure function of (seed, token
 * index), so any token range can be regenerated exactly (tests compare files against it). */
#ifndef SYNTH_H
#define SYNTH_H

#include <stdint.h>

#include "../host/sf_err.h"
#include "shard.h"

#define SYNTH_BLOCK 4096 /* tokens per independently seeded generation block */

typedef struct synth_cfg {
    const char *out; /* directory */
    int d, features;
    int64_t tokens;
    double k;        /* mean active features per token */
    shard_dtype dtype;
    int gradients;
    uint64_t seed;
    int shards;
} synth_cfg;

typedef struct synth_model {
    int d, F;
    uint64_t seed;
    double noise;       /* std of the Gaussian noise added to every element */
    float *W;           // (F, d) unit-norm true feature directions
    float *p;           // (F) probability a feature is active on a token; sums to ~k
    float *mag;         // (F) magnitude multiplier (0.3 for important features, else 1)
    int n_imp;
    int32_t *imp;       // (n_imp) important (rare, small, high-effect) features, ascending
    int gradients;
    float *P;           // (d, d) downstream loss L = 1/2 |P x - y|^2 (gradients only)
    float *y;           // (d)
    float *M;           // (d, d) P^T P
    float *c;           // (d) P^T y
} synth_model;

void synth_model_init(synth_model *m, int d, int features, double k, int gradients, uint64_t seed);
void synth_model_free(synth_model *m);

/* Tokens [t0, t0+n): x (n, d); g (n, d) = P^T (P x - y) if non-NULL (needs gradients);
 * n_active (n) = true active feature count per token if non-NULL. */
void synth_generate(const synth_model *m, int64_t t0, int64_t n, float *x, float *g, int32_t *n_active);

/* Writes cfg->out/shard_000.h5 ... and cfg->out/truth.safetensors (each atomically). */
int synth_write(const synth_cfg *cfg, sf_err *err);

#endif
