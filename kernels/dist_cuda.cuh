/* Data-parallel pieces of the CUDA backend's step (dist_cuda.cu): the device twins of
 * kernels/dist_cpu.h. The collectives themselves (NCCL) are the backend's; these kernels build
 * what it reduces and use the reduced results. */
#ifndef DIST_CUDA_CUH
#define DIST_CUDA_CUH

#include <stdint.h>

#include "backward.cuh"
#include "cuda_compat.h"

#ifdef __cplusplus
extern "C" {
#endif

/* From the column sums summed over the ranks (loss_colsum_cuda, then an all-reduce) and the
 * global row count: mean[j] = sum[j] / rows, 0 when no rank has rows (dist_center_cpu's rule). */
void dist_mean_cuda(const double *sum, // (d) device
                    int d, int64_t rows,
                    float *mean,       // (d) out
                    cudaStream_t stream);

/* Writes one rank's row-sparse gradient and the main code's per-latent fire counts into the
 * dense buffer of dist_grad_floats(d, n) floats, [dW_enc | dW_dec | db_enc | db_dec | fired]
 * (zeroed first): dist_grads_cpu before its sum. lat: the main code's slots (-1 = padding). */
void dist_grads_scatter_cuda(const sae_grads_cuda *sparse,
                             const int *lat, // (slots)
                             int slots, int d, int n,
                             float *buf,     // (dist_grad_floats(d, n)) out
                             cudaStream_t stream);

/* The all-latents view of the dense buffer (every latent a row; rows = slot = ident), for the
 * projection, norm and Adam on the summed gradient. ident (n) and n_rows (1) are device
 * memory that dist_dense_view_cuda fills. */
void dist_dense_view_cuda(float *buf, int d, int n,
                          int *ident,   // (n) out, device
                          int *n_rows,  // (1) out, device
                          sae_grads_cuda *view, cudaStream_t stream);

/* dist_since_fired_cpu: since_fired[i] = 0 where the global fired[i] > 0, else += the other
 * ranks' rows (B_global - B_local); after featstats_update_cuda on the local rows. */
void dist_since_fired_cuda(const float *fired, // (n) device
                           int64_t B_local, int64_t B_global, int n,
                           int64_t *since_fired, // (n) device
                           cudaStream_t stream);

/* *out = number of slots with lat >= 0, as a double (the metrics sum of entries). */
void dist_entries_cuda(const int *lat, // (slots)
                       int slots,
                       double *out,    // (1) device
                       cudaStream_t stream);

/* The batch selection's threshold over the ranks: key = float bits of *min_kept, or
 * 0xffffffff when nothing was kept here (so a minimum over ranks ignores this rank); back:
 * *min_kept = the key's value, 0 for 0xffffffff. dist_set_kept_cuda stores known bits. */
void dist_kept_key_cuda(const float *min_kept, unsigned *key, cudaStream_t stream);
void dist_kept_value_cuda(const unsigned *key, float *min_kept, cudaStream_t stream);
void dist_set_kept_cuda(float *min_kept, unsigned bits, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
