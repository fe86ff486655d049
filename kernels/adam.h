/* Optimizer pieces (CPU twins of adam.cu): decoder-gradient projection, gradient norm, fused Adam + renorm. */
#ifndef ADAM_H
#define ADAM_H

#include "backward.h"
#include "sae_types.h"

/* Removes from each touched dW_dec row its component along the (unit-norm) W_dec row. */
void dec_grad_project_cpu(const float *W_dec, // (n, d)
                          int d, sae_grads *g);

/* Squared global L2 norm of all four gradients (double accumulation). */
double grad_sqnorm_cpu(const sae_grads *g, int d, int n);

/* Adam (PyTorch form) on all four tensors, gradients multiplied by gscale (clipping):
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= step_size * m / (sqrtf(v) / bc2_sqrt + eps)
 * with step_size = lr / (1 - b1^t) and bc2_sqrt = sqrt(1 - b2^t) computed by the caller in
 * double. Untouched W rows take the step with g = 0 (dense Adam semantics). Then every W_dec
 * row is renormalised to unit L2 norm. */
void adam_step_cpu(sae_params *p, sae_state *s, const sae_grads *g,
                   int d, int n,
                   float step_size, float bc2_sqrt,
                   float b1, float b2, float eps, float gscale);

#endif
