/* Encoder forward on the device (CUDA twin of enc_forward_cpu / gate_forward_cpu): one prep
 * kernel (u = x - b_dec, its bf16 copy, pre = broadcast b_enc), then one cuBLAS GEMM that adds
 * u W_enc^T into pre (beta = 1).
 *
 * Layout: cuBLAS is column-major. Row-major pre (B, n) is the column-major n x B matrix C;
 * row-major W_enc (n, d) is the column-major d x n matrix A (lda = d); row-major u (B, d) is the
 * column-major d x B matrix U (ldb = d). So C = A^T U: gemm(OP_T, OP_N, m = n, n = B, k = d). */
#include "encode.cuh"

#include "sf_check.h"

#define ENC_THREADS 256

static __global__ void enc_prep_kernel(const float *x, const float *b_dec, const float *b_enc,
                                       int B, int d, int n, int vec_pre, float *u,
                                       __nv_bfloat16 *ub, float *pre)
{
    const int c0 = blockIdx.x * blockDim.x + threadIdx.x;
    const int cs = gridDim.x * blockDim.x;
    for (int r = blockIdx.y; r < B; r += gridDim.y) {
        const float *xr = x + (size_t)r * d;
        float *ur = u + (size_t)r * d;
        for (int c = c0; c < d; c += cs) {
            const float v = xr[c] - b_dec[c];
            ur[c] = v;
            if (ub)
                ub[(size_t)r * d + c] = __float2bfloat16_rn(v);
        }
        if (vec_pre) {
            float4 *pr = (float4 *)(pre + (size_t)r * n);
            const float4 *b4 = (const float4 *)b_enc;
            for (int c = c0; c < n / 4; c += cs)
                pr[c] = b4[c];
        } else {
            float *pr = pre + (size_t)r * n;
            for (int c = c0; c < n; c += cs)
                pr[c] = b_enc[c];
        }
    }
}

static __global__ void enc_bf16_kernel(const float *W, long long count, __nv_bfloat16 *out)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride)
        out[t] = __float2bfloat16_rn(W[t]);
}

static __global__ void enc_abs_kernel(float *a, long long count)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count; t += stride)
        a[t] = fabsf(a[t]);
}

static int enc_blocks(long long count)
{
    long long b = (count + ENC_THREADS * 4 - 1) / (ENC_THREADS * 4);
    if (b > 4096)
        b = 4096;
    return b < 1 ? 1 : (int)b;
}

static size_t enc_round(size_t x) { return (x + 255) & ~(size_t)255; }

extern "C" size_t enc_workspace_bytes(int B, int d, sae_precision prec)
{
    if (prec != SAE_PREC_BF16 || B <= 0 || d <= 0)
        return 0;
    return enc_round((size_t)B * d * sizeof(__nv_bfloat16));
}

extern "C" void enc_forward_cuda(const float *x, const float *W_enc, const uint16_t *W_enc_bf16,
                                 const float *b_enc, const float *b_dec, int B, int d, int n,
                                 float *u, float *pre, sae_precision prec, void *workspace,
                                 cublasHandle_t handle, cudaStream_t stream)
{
    SF_CHECK(B >= 0 && d >= 0 && n >= 0);
    if (B == 0 || n == 0)
        return;
    const bool bf16 = prec == SAE_PREC_BF16;
    SF_CHECK(!bf16 || (W_enc_bf16 != NULL && workspace != NULL));
    __nv_bfloat16 *ub = bf16 ? (__nv_bfloat16 *)workspace : NULL;
    const int vec_pre = n % 4 == 0 && ((uintptr_t)pre & 15u) == 0 && ((uintptr_t)b_enc & 15u) == 0;

    const int wide = (d > n / (vec_pre ? 4 : 1)) ? d : n / (vec_pre ? 4 : 1);
    int gx = (wide + ENC_THREADS - 1) / ENC_THREADS;
    gx = gx < 1 ? 1 : gx > 64 ? 64 : gx;
    const int gy = B < 65535 ? B : 65535;
    SF_LAUNCH(enc_prep_kernel, dim3(gx, gy), ENC_THREADS, 0, stream, x, b_dec, b_enc, B, d, n,
              vec_pre, u, ub, pre);

    if (d == 0)
        return; /* pre = b_enc */
    const float one = 1.0f;
    CUBLAS_CHECK(cublasSetStream(handle, stream));
    if (prec == SAE_PREC_FP32) {
        CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, B, d, &one, W_enc, d, u, d,
                                 &one, pre, n));
    } else if (prec == SAE_PREC_TF32) {
        CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, B, d, &one, W_enc,
                                  CUDA_R_32F, d, u, CUDA_R_32F, d, &one, pre, CUDA_R_32F, n,
                                  CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
    } else {
        SF_CHECK(bf16);
        CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, B, d, &one, W_enc_bf16,
                                  CUDA_R_16BF, d, ub, CUDA_R_16BF, d, &one, pre, CUDA_R_32F, n,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
}

extern "C" void enc_shadow_bf16_cuda(const float *W, long long count, uint16_t *W_bf16,
                                     cudaStream_t stream)
{
    SF_CHECK(count >= 0);
    if (count == 0)
        return;
    SF_LAUNCH(enc_bf16_kernel, enc_blocks(count), ENC_THREADS, 0, stream, W, count,
              (__nv_bfloat16 *)W_bf16);
}

extern "C" void gate_forward_cuda(const float *g, const float *W_dec, int B, int d, int n,
                                  float *gate, sae_precision prec, cublasHandle_t handle,
                                  cudaStream_t stream)
{
    SF_CHECK(B >= 0 && d >= 0 && n >= 0);
    if (B == 0 || n == 0)
        return;
    if (d == 0) {
        CUDA_CHECK(cudaMemsetAsync(gate, 0, (size_t)B * n * sizeof(float), stream));
        return;
    }
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasSetStream(handle, stream));
    if (prec == SAE_PREC_FP32) {
        CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, B, d, &one, W_dec, d, g, d,
                                 &zero, gate, n));
    } else {
        CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, B, d, &one, W_dec,
                                  CUDA_R_32F, d, g, CUDA_R_32F, d, &zero, gate, CUDA_R_32F, n,
                                  CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
    }
    const long long count = (long long)B * n;
    SF_LAUNCH(enc_abs_kernel, enc_blocks(count), ENC_THREADS, 0, stream, gate, count);
}
