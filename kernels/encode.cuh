/* Encoder forward on the device (encode.cu): the CUDA twins of enc_forward_cpu and
 * gate_forward_cpu (kernels/encode.h), with the GEMM input precision chosen per call. */
#ifndef ENCODE_CUH
#define ENCODE_CUH

#include <stddef.h>
#include <stdint.h>

#include "cuda_compat.h"
#include "sae_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Scratch bytes enc_forward_cuda needs: the bf16 copy of u for SAE_PREC_BF16 (B*d*2 bytes,
 * rounded up), 0 otherwise. */
size_t enc_workspace_bytes(int B, int d, sae_precision prec);

/* u = x - b_dec; pre = u W_enc^T + b_enc (the bias is broadcast into pre by the same kernel that
 * forms u, then the GEMM accumulates into it with beta = 1). Device pointers; cuBLAS is put on
 * `stream` (cublasSetStream on `handle`); asynchronous.
 *   SAE_PREC_FP32: cublasSgemm (full fp32 as long as the handle's math mode is the default one;
 *                  the launcher does not change the math mode);
 *   SAE_PREC_TF32: cublasGemmEx, fp32 in/out, CUBLAS_COMPUTE_32F_FAST_TF32;
 *   SAE_PREC_BF16: cublasGemmEx with bf16 inputs (W_enc_bf16, the caller's shadow of W_enc kept
 *                  by enc_shadow_bf16_cuda, and u rounded to bf16 in `workspace`), fp32
 *                  accumulation and output. u itself is still written in fp32.
 * W_enc_bf16 / workspace may be NULL unless prec is SAE_PREC_BF16. */
void enc_forward_cuda(const float *x,             // (B, d)
                      const float *W_enc,         // (n, d)
                      const uint16_t *W_enc_bf16, // (n, d) bf16 bits, or NULL
                      const float *b_enc,         // (n)
                      const float *b_dec,         // (d)
                      int B, int d, int n,
                      float *u,                   // (B, d) out
                      float *pre,                 // (B, n) out
                      sae_precision prec,
                      void *workspace,            // enc_workspace_bytes(B, d, prec)
                      cublasHandle_t handle,
                      cudaStream_t stream);

/* W_bf16 = round-to-nearest-even bf16 of W (count floats); the backend calls it after each
 * optimizer step to refresh the encoder's bf16 shadow. */
void enc_shadow_bf16_cuda(const float *W, long long count, uint16_t *W_bf16, cudaStream_t stream);

/* gate = |g W_dec^T| (GEMM, then an abs pass). SAE_PREC_FP32: cublasSgemm; TF32 and BF16 use
 * the TF32 GEMM (there is no bf16 shadow of W_dec). */
void gate_forward_cuda(const float *g,     // (B, d)
                       const float *W_dec, // (n, d)
                       int B, int d, int n,
                       float *gate,        // (B, n) out
                       sae_precision prec,
                       cublasHandle_t handle,
                       cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
