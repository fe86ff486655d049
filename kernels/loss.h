/* Loss reductions (CPU twins of loss.cu): centring, residual sums and their gradients, gradient-weighted error. */
#ifndef LOSS_H
#define LOSS_H

/* mean = column mean of x; returns sum_b |x_b - mean|^2 (the FVU denominator). */
double loss_center_cpu(const float *x, // (B, d)
                       int B, int d,
                       float *mean);   // (d) out

/* The two halves of loss_center_cpu, for data-parallel ranks that sum the column sums first:
 * sum = column sums of x (row order, double); returns sum_b |x_b - mean|^2 for a given mean. */
void loss_colsum_cpu(const float *x, // (B, d)
                     int B, int d,
                     double *sum);   // (d) out
double loss_spread_cpu(const float *x,     // (B, d)
                       int B, int d,
                       const float *mean); // (d)

/* Returns sum_b |target_b - pred_b|^2. If dY != NULL: dY = coef * (pred - target), or
 * dY += coef * (pred - target) when accumulate != 0 (Matryoshka suffix sums). */
double loss_residual_cpu(const float *target, // (B, d)
                         const float *pred,   // (B, d)
                         int B, int d, float coef, int accumulate,
                         float *dY);          // (B, d) or NULL

/* Gradient-weighted error terms: num = sum_b (g_b . (x_b - xhat_b))^2,
 * den = sum_b (g_b . (x_b - mean))^2. */
void loss_gw_cpu(const float *g,    // (B, d)
                 const float *x,    // (B, d)
                 const float *xhat, // (B, d)
                 const float *mean, // (d)
                 int B, int d,
                 double *num, double *den);

#endif
