/* Feature statistics (SPEC §4): per latent fire count, frequency, mean/max activation when active,
 * last step fired, dead flag, and for gsae the mean gate |W_dec g|; to HDF5 and CSV. */
#ifndef STATS_H
#define STATS_H

#include <stdint.h>

#include "../kernels/sae_types.h"
#include "sf_err.h"

/* Writes dir/feature_stats.h5 and dir/feature_stats.csv from the counters in s over
 * `tokens` tokens (dead = since_fired >= dead_tokens, or never fired). with_gate adds
 * mean_gate. Extra scalars (fvu, gw_err, ...) go in as HDF5 root attributes. */
int stats_write(const char *dir, const sae_state *s, int n, int64_t tokens, int64_t dead_tokens,
                int with_gate, const sae_metrics *eval, sf_err *err);

/* The one definition of a dead latent in the run's outputs: never fired, or silent for
 * dead_tokens tokens. */
static inline int stats_latent_dead(const sae_state *s, int i, int64_t dead_tokens)
{
    return s->fire_count[i] == 0 || s->since_fired[i] >= dead_tokens;
}

#endif
