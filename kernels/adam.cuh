/* Optimizer pieces on the device (adam.cu): CUDA twins of kernels/adam.h. */
#ifndef ADAM_CUH
#define ADAM_CUH

#include <stddef.h>

#include "backward.cuh"
#include "cuda_compat.h"
#include "sae_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Removes from each touched dW_dec row its component along the W_dec row (block per row). */
void dec_grad_project_cuda(const float *W_dec, // (n, d)
                           int d, sae_grads_cuda *g, cudaStream_t stream);

/* Bytes of device scratch grad_sqnorm_cuda needs. */
size_t adam_cuda_work_bytes(void);

/* *out = squared global L2 norm of the four gradients (double, deterministic two-stage). */
void grad_sqnorm_cuda(const sae_grads_cuda *g, int d, int n,
                      double *out, // (1) device
                      void *work, cudaStream_t stream);

/* From the device sqnorm: *norm = sqrt(sqnorm) (may be NULL), *gscale = clip/norm when
 * clip > 0 and norm > clip, else 1. Keeps the clip decision on the device (no host sync). */
void grad_clip_scale_cuda(const double *sqnorm, float clip, double *norm, float *gscale,
                          cudaStream_t stream);

/* adam_step_cpu on the device. p: device parameters; s: the moment pointers (m_*, v_*) are
 * device memory, other fields unused; gscale: device scalar. Every W row takes the step (g = 0
 * for untouched rows), then each W_dec row is renormalised. One block per row, fused. If
 * W_enc_bf16 != NULL it receives the bf16 (round to nearest even) copy of the new W_enc. */
void adam_step_cuda(sae_params *p, sae_state *s, const sae_grads_cuda *g,
                    int d, int n,
                    float step_size, float bc2_sqrt,
                    float b1, float b2, float eps,
                    const float *gscale,   // (1) device
                    void *W_enc_bf16,      // (n, d) __nv_bfloat16 or NULL
                    cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
