/* The CPU backend's data-parallel pieces (the step order is in dist.h): global centring, the
 * dense gradient buffer and its one all-reduce, and the dead-latent counters over ranks. */
#ifndef DIST_CPU_H
#define DIST_CPU_H

#include <stdint.h>

#include "backward.h"
#include "dist.h"

/* Global column mean of every rank's rows into mean and the global row count into *B_global;
 * returns the global sum_b |x_b - mean|^2. Works for B = 0 (the rank still joins). */
double dist_center_cpu(const sae_dist *dd,
                       const float *x, // (B, d)
                       int B, int d,
                       float *mean,    // (d) out
                       int64_t *B_global);

/* Floats of the dense buffer: [dW_enc (n, d) | dW_dec (n, d) | db_enc (n) | db_dec (d) | fired (n)]. */
int64_t dist_grad_floats(int d, int n);

/* Writes the row-sparse gradient and the main code's per-latent fire counts into buf, sums buf
 * over the ranks (one sum_f32), and points *dense at it: every latent a row (rows = slot = ident,
 * ident (n) filled here), so the projection, norm and Adam run on the summed gradient. */
void dist_grads_cpu(const sae_dist *dd,
                    const sae_grads *sparse,
                    const int *row_ptr, const int *lat, // the main code (B + 1), entries
                    int B, int d, int n,
                    float *buf,                         // (dist_grad_floats)
                    int *ident,                         // (n)
                    sae_grads *dense);

/* since_fired after featstats_update_cpu ran on the local rows: 0 where the global fire count
 * (the buffer's fired part) is positive, else advanced by the other ranks' rows too. */
void dist_since_fired_cpu(const float *fired, // (n)
                          int64_t B_local, int64_t B_global, int n,
                          int64_t *since_fired); // (n)

#endif
