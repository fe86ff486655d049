/* SAE initialisation (see sae_init.h). */
#include "sae_init.h"

#include <math.h>
#include <string.h>

void sae_init_params(sae_params *p, int d, int n, float init_scale, sf_rng *rng, const float *x0, int B0)
{
    for (int i = 0; i < n; i++) {
        float *row = p->W_dec + (size_t)i * d;
        double ss = 0;
        for (int j = 0; j < d; j++) {
            row[j] = (float)rng_normal(rng);
            ss += (double)row[j] * row[j];
        }
        float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.f;
        for (int j = 0; j < d; j++)
            row[j] *= inv;
    }
    /* A small encoder keeps early pre-activations tiny, so the first batch-level selections are
     * not dominated by a few latents that happen to align with the data mean (docs/rules.md). */
    for (size_t i = 0; i < (size_t)n * d; i++)
        p->W_enc[i] = init_scale * p->W_dec[i];
    memset(p->b_enc, 0, sizeof(float) * (size_t)n);
    memset(p->b_dec, 0, sizeof(float) * (size_t)d);
    if (x0 && B0 > 0) {
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int b = 0; b < B0; b++)
                s += x0[(size_t)b * d + j];
            p->b_dec[j] = (float)(s / B0);
        }
    }
}
