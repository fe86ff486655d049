/* Sparse decode on the device (decode.cu): the CUDA twin of decode_cpu (kernels/decode.h). */
#ifndef DECODE_CUH
#define DECODE_CUH

#include "cuda_compat.h"

#ifdef __cplusplus
extern "C" {
#endif

/* xhat_b = bias + sum over entries p of row b with 0 <= lat[p] < limit of val[p] * W_dec[lat[p]].
 * All pointers are device memory; bias may be NULL. One block per token. */
void decode_cuda(const int *row_ptr,  // (B + 1)
                 const int *lat,      // (row_ptr[B])
                 const float *val,    // (row_ptr[B])
                 const float *W_dec,  // (n, d)
                 const float *bias,   // (d) or NULL
                 int B, int d, int limit,
                 float *xhat,         // (B, d) out
                 cudaStream_t stream);

/* row_ptr[b] = b * k for b in [0, B]: the implicit CSR of a row top-k code. */
void fill_row_ptr_cuda(int *row_ptr, int B, int k, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
