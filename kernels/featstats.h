/* Per-latent counters updated after each step (CPU twin of featstats.cu): dead detection and feature statistics. */
#ifndef FEATSTATS_H
#define FEATSTATS_H

#include <stdint.h>

#include "sae_types.h"

/* For the main code of a step of B tokens: latents that fired get since_fired = 0, the others
 * since_fired += B; fire_count, act_sum, act_max, last_fired_step (= step) updated per kept
 * entry; gate_sum += gate[b, i] per kept entry when gate != NULL. */
void featstats_update_cpu(const int *row_ptr, // (B + 1)
                          const int *lat,
                          const float *val,
                          const float *gate,  // (B, n) or NULL
                          int B, int n, int64_t step,
                          sae_state *s);

/* mask[i] = 1 if latent i is dead (since_fired >= dead_tokens); returns the dead count. */
int featstats_dead_mask_cpu(const int64_t *since_fired, // (n)
                            int n, int64_t dead_tokens,
                            uint8_t *mask);              // (n) out

#endif
