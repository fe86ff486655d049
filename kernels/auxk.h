/* AuxK on the CPU through dense products over the dead latents (no CUDA twin: the CUDA backend
 * keeps the sparse path). Same maths as backend.h step 7-8 for the AuxK group: ehat = A Wd with
 * A (B, |D|) the row top-k_aux code restricted to the dead set D and Wd = W_dec[D]; its backward
 * dpre = (dY_aux Wd^T) masked to the selected entries, dW_dec[D] += A^T dY_aux,
 * dW_enc[D] += dpre^T u, db_enc[D] += column sums of dpre. With |D| a small multiple of k_aux
 * these four GEMMs cost far less than the sparse path's B k_aux gathers of d-rows. */
#ifndef AUXK_H
#define AUXK_H

#include <stdint.h>

#include "backward.h"
#include "sae_types.h"

/* The dense path is taken when |D| <= AUXK_DENSE_RATIO * k_aux (SF_AUXK=dense|sparse forces a
 * path; bench/results and docs/performance.md hold the measurement behind the ratio). */
#define AUXK_DENSE_RATIO 16

typedef struct auxk_dense {
    int d, max_B, cap; /* cap: largest |D| the buffers hold (grown on demand) */
    int nd;            /* |D| of the current step */
    int *dead;         // (cap) dead latents, ascending
    int *pos;          // (n) latent -> index in dead, -1 when alive
    float *Wd;         // (cap, d) W_dec[D]
    float *A, *dA;     // (max_B, cap) code and its gradient, dense
    float *gdec, *genc; // (cap, d) gradients of W_dec[D], W_enc[D]
    float *db;         // (cap)
} auxk_dense;

void auxk_dense_init(auxk_dense *w, int n, int d, int max_B);
void auxk_dense_free(auxk_dense *w);

/* 1 when the dense path should run for nd dead latents and k_aux slots (honours SF_AUXK). */
int auxk_dense_wanted(int nd, int k_aux);

/* Forward: D from mask, Wd, A from the AuxK code (kaux slots per row, lat -1 = padding); then
 * ehat = A Wd (no bias). */
void auxk_dense_forward(auxk_dense *w, const uint8_t *mask, int n, const float *W_dec, // (n, d)
                        const int *lat, const float *val, int B, int kaux,            // (B, kaux)
                        float *ehat);                                                 // (B, d) out

/* Backward of the AuxK loss (dY_aux = dL/dehat), added into the row-sparse gradients g that the
 * main group's backward produced: rows of D that had a selected entry are added to existing
 * rows or merged in (g->rows stays ascending); db_enc and the b_dec path through u included. */
void auxk_dense_backward(auxk_dense *w, const float *u, const float *dY_aux, // (B, d) each
                         const sae_params *p, int B, int n, sae_grads *g);

#endif
