/* Per-latent counters after each step, CPU twin of featstats.cu: dead detection and feature
 * statistics. Entries are visited serially in code order so double sums are reproducible. */
#include <stddef.h>

#include "featstats.h"

void featstats_update_cpu(const int *row_ptr, // (B + 1)
                          const int *lat,
                          const float *val,
                          const float *gate,  // (B, n) or NULL
                          int B, int n, int64_t step,
                          sae_state *s)
{
    for (int i = 0; i < n; i++)
        s->since_fired[i] += B;
    for (int b = 0; b < B; b++) {
        for (int e = row_ptr[b]; e < row_ptr[b + 1]; e++) {
            int i = lat[e];
            if (i < 0)
                continue;
            float a = val[e];
            s->since_fired[i] = 0;
            s->fire_count[i]++;
            s->act_sum[i] += a;
            if (a > s->act_max[i])
                s->act_max[i] = a;
            s->last_fired_step[i] = step;
            if (gate)
                s->gate_sum[i] += gate[(size_t)b * n + i];
        }
    }
}

int featstats_dead_mask_cpu(const int64_t *since_fired, // (n)
                            int n, int64_t dead_tokens,
                            uint8_t *mask)               // (n) out
{
    int dead = 0;
    for (int i = 0; i < n; i++) {
        mask[i] = since_fired[i] >= dead_tokens;
        dead += mask[i];
    }
    return dead;
}
