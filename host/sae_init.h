/* Seeded SAE initialisation and input-scale estimation (SPEC §2 Init). */
#ifndef SAE_INIT_H
#define SAE_INIT_H

#include "../kernels/sae_types.h"
#include "rng.h"

/* W_dec rows Gaussian then unit norm; W_enc = init_scale * W_dec; b_enc = 0;
 * b_dec = column mean of x0. */
void sae_init_params(sae_params *p, int d, int n, float init_scale, sf_rng *rng,
                     const float *x0, // (B0, d) first batch, or NULL (b_dec = 0)
                     int B0);

#endif
