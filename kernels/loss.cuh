/* Loss reductions on the device (loss.cu): CUDA twins of kernels/loss.h. Every reduction is
 * two-stage with a fixed launch shape (per-block partials, then one block in fixed order), so
 * results do not depend on scheduling. Sums are written to device doubles. */
#ifndef LOSS_CUH
#define LOSS_CUH

#include <stddef.h>

#include "cuda_compat.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of device scratch (`work`) the loss launchers need for a batch of B tokens. */
size_t loss_cuda_work_bytes(int B);

/* mean = column mean of x; *den = sum_b |x_b - mean|^2. */
void loss_center_cuda(const float *x,  // (B, d)
                      int B, int d,
                      float *mean,     // (d) out
                      double *den,     // (1) out
                      void *work, cudaStream_t stream);

/* The two halves of loss_center_cuda (loss_colsum_cpu, loss_spread_cpu), for data-parallel ranks
 * that sum the column sums first: sum = column sums of x (row order, double); *den =
 * sum_b |x_b - mean|^2 for a given mean. Both work for B = 0 (zeros). */
void loss_colsum_cuda(const float *x, // (B, d)
                      int B, int d,
                      double *sum,    // (d) out
                      cudaStream_t stream);
void loss_spread_cuda(const float *x,    // (B, d)
                      int B, int d,
                      const float *mean, // (d)
                      double *den,       // (1) out
                      void *work, cudaStream_t stream);

/* *sum = sum_b |target_b - pred_b|^2 (if sum != NULL). If dY != NULL: dY = coef * (pred - target)
 * (dY += ... when accumulate != 0), coef = (float)(coef_num / (coef_mul * den)) with den =
 * *coef_den when coef_den != NULL (a device double, e.g. the den of loss_center_cuda; a den <= 0
 * counts as 1, like the CPU backend's den_eff), else coef = (float)coef_num. The coefficient is
 * formed on the device so the step needs no host sync. */
void loss_residual_cuda(const float *target, // (B, d)
                        const float *pred,   // (B, d)
                        int B, int d,
                        double coef_num, double coef_mul, const double *coef_den,
                        int accumulate,
                        float *dY,           // (B, d) or NULL
                        double *sum,         // (1) out or NULL
                        void *work, cudaStream_t stream);

/* *num = sum_b (g_b . (x_b - xhat_b))^2, *den = sum_b (g_b . (x_b - mean))^2. */
void loss_gw_cuda(const float *g,    // (B, d)
                  const float *x,    // (B, d)
                  const float *xhat, // (B, d)
                  const float *mean, // (d)
                  int B, int d,
                  double *num, double *den, // (1) out each
                  void *work, cudaStream_t stream);

/* out = a - b elementwise (n values). */
void sub_cuda(const float *a, const float *b, long long count, float *out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
