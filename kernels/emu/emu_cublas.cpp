/* cuBLAS under emulation: the same column-major calls, computed by OpenBLAS (cblas). Reduced
 * precision modes round the inputs as the tensor cores would read them (TF32: 10 mantissa
 * bits; BF16: 7), then accumulate in fp32; beta == 0 never reads C, as in cuBLAS. */
#include "emu_internal.h"

#include <cblas.h>
#include <cstdio>
#include <cstring>
#include <vector>

struct emu_cublas {
    cudaStream_t stream;
    cublasMath_t math;
    cublasPointerMode_t pmode;
};

namespace {

enum Round { R_NONE, R_TF32, R_BF16 };

cublasStatus_t bad(const char *fn, const char *what)
{
    fprintf(stderr, "saeforge-emu: %s: %s\n", fn, what);
    return CUBLAS_STATUS_INVALID_VALUE;
}

/* Stored rows x cols column-major matrix with leading dimension ld, converted to packed fp32
 * (leading dimension `rows`) with the requested input rounding. */
std::vector<float> pack(const void *src, cudaDataType type, int rows, int cols, int ld, Round r)
{
    std::vector<float> out((size_t)rows * (size_t)cols);
    for (int c = 0; c < cols; c++)
        for (int i = 0; i < rows; i++) {
            const size_t at = (size_t)c * (size_t)ld + (size_t)i;
            float v = type == CUDA_R_16BF ? emu_bf16_to_float(((const uint16_t *)src)[at])
                                          : ((const float *)src)[at];
            if (r == R_TF32)
                v = emu_tf32_round(v);
            else if (r == R_BF16)
                v = emu_bf16_to_float(emu_bf16_from_float(v));
            out[(size_t)c * (size_t)rows + (size_t)i] = v;
        }
    return out;
}

CBLAS_TRANSPOSE cb(cublasOperation_t t) { return t == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

cublasStatus_t gemm(const char *fn, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                    int m, int n, int k, float alpha, const void *A, cudaDataType at, int lda,
                    const void *B, cudaDataType bt, int ldb, float beta, float *C, int ldc,
                    Round r)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((unsigned)ta > CUBLAS_OP_C || (unsigned)tb > CUBLAS_OP_C)
        return bad(fn, "transa/transb is not a cublasOperation_t");
    if (m < 0 || n < 0 || k < 0)
        return bad(fn, "m, n and k must be >= 0");
    const int arows = ta == CUBLAS_OP_N ? m : k, acols = ta == CUBLAS_OP_N ? k : m;
    const int brows = tb == CUBLAS_OP_N ? k : n, bcols = tb == CUBLAS_OP_N ? n : k;
    if (lda < (arows > 1 ? arows : 1))
        return bad(fn, "lda < max(1, rows of A as stored)");
    if (ldb < (brows > 1 ? brows : 1))
        return bad(fn, "ldb < max(1, rows of B as stored)");
    if (ldc < (m > 1 ? m : 1))
        return bad(fn, "ldc < max(1, m)");
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    if (beta == 0.0f) /* C may hold garbage (NaN): cuBLAS does not read it */
        for (int j = 0; j < n; j++)
            memset(C + (size_t)j * (size_t)ldc, 0, sizeof(float) * (size_t)m);
    if (k == 0 || alpha == 0.0f) {
        if (beta != 0.0f && beta != 1.0f)
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++)
                    C[(size_t)j * (size_t)ldc + (size_t)i] *= beta;
        return CUBLAS_STATUS_SUCCESS;
    }
    if (at == CUDA_R_32F && bt == CUDA_R_32F && r == R_NONE) {
        cblas_sgemm(CblasColMajor, cb(ta), cb(tb), m, n, k, alpha, (const float *)A, lda,
                    (const float *)B, ldb, beta, C, ldc);
        return CUBLAS_STATUS_SUCCESS;
    }
    const std::vector<float> a = pack(A, at, arows, acols, lda, r);
    const std::vector<float> b = pack(B, bt, brows, bcols, ldb, r);
    cblas_sgemm(CblasColMajor, cb(ta), cb(tb), m, n, k, alpha, a.data(), arows > 0 ? arows : 1,
                b.data(), brows > 0 ? brows : 1, beta, C, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

Round handle_round(cublasHandle_t h)
{
    return (h->math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH ? R_TF32 : R_NONE;
}

} // namespace

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    if (!h)
        return CUBLAS_STATUS_INVALID_VALUE;
    *h = new emu_cublas{nullptr, CUBLAS_DEFAULT_MATH, CUBLAS_POINTER_MODE_HOST};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!emu_stream_ok(s))
        return bad("cublasSetStream", "not a live stream");
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t h, cudaStream_t *s)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    *s = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    const unsigned base = (unsigned)mode & 0xfu, rest = (unsigned)mode & ~0xfu;
    if (base > CUBLAS_TF32_TENSOR_OP_MATH || (rest & ~16u))
        return bad("cublasSetMathMode", "not a cublasMath_t");
    h->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t h, cublasMath_t *mode)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    *mode = h->math;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t mode)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((unsigned)mode > CUBLAS_POINTER_MODE_DEVICE)
        return bad("cublasSetPointerMode", "not a cublasPointerMode_t");
    h->pmode = mode; /* host and device memory are one here: both read *alpha directly */
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode(cublasHandle_t h, cublasPointerMode_t *mode)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    *mode = h->pmode;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusName(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return "cuBLAS error";
    }
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *A, int lda,
                           const float *B, int ldb, const float *beta, float *C, int ldc)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta)
        return bad("cublasSgemm", "alpha and beta must not be null");
    return gemm("cublasSgemm", h, ta, tb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F,
                ldb, *beta, C, ldc, handle_round(h));
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda,
                                         long long strideA, const float *B, int ldb,
                                         long long strideB, const float *beta, float *C,
                                         int ldc, long long strideC, int batch)
{
    if (batch < 0)
        return bad("cublasSgemmStridedBatched", "batch < 0");
    for (int i = 0; i < batch; i++) {
        const cublasStatus_t st = cublasSgemm(h, ta, tb, m, n, k, alpha, A + i * strideA, lda,
                                              B + i * strideB, ldb, beta, C + i * strideC, ldc);
        if (st != CUBLAS_STATUS_SUCCESS)
            return st;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType Atype,
                            int lda, const void *B, cudaDataType Btype, int ldb,
                            const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta)
        return bad("cublasGemmEx", "alpha and beta must not be null");
    if ((Atype != CUDA_R_32F && Atype != CUDA_R_16BF) || Btype != Atype || Ctype != CUDA_R_32F) {
        fprintf(stderr, "saeforge-emu: cublasGemmEx: emulated types are A = B = CUDA_R_32F or "
                        "CUDA_R_16BF with C = CUDA_R_32F\n");
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    Round r = R_NONE;
    switch (compute) {
    case CUBLAS_COMPUTE_32F:
        r = Atype == CUDA_R_32F ? handle_round(h) : R_NONE;
        break;
    case CUBLAS_COMPUTE_32F_PEDANTIC: r = R_NONE; break;
    case CUBLAS_COMPUTE_32F_FAST_TF32: r = Atype == CUDA_R_32F ? R_TF32 : R_NONE; break;
    case CUBLAS_COMPUTE_32F_FAST_16BF: r = R_BF16; break;
    default:
        fprintf(stderr, "saeforge-emu: cublasGemmEx: compute type %d is not emulated\n",
                (int)compute);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (algo != CUBLAS_GEMM_DEFAULT && algo != CUBLAS_GEMM_DEFAULT_TENSOR_OP &&
        ((int)algo < 0 || (int)algo > 123))
        return bad("cublasGemmEx", "not a cublasGemmAlgo_t");
    return gemm("cublasGemmEx", h, ta, tb, m, n, k, *(const float *)alpha, A, Atype, lda, B,
                Btype, ldb, *(const float *)beta, (float *)C, ldc, r);
}

cublasStatus_t cublasSgemv(cublasHandle_t h, cublasOperation_t t, int m, int n,
                           const float *alpha, const float *A, int lda, const float *x, int incx,
                           const float *beta, float *y, int incy)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((unsigned)t > CUBLAS_OP_C || m < 0 || n < 0 || lda < (m > 1 ? m : 1) || incx == 0 ||
        incy == 0 || !alpha || !beta)
        return bad("cublasSgemv", "invalid argument (trans, m, n, lda, incx, incy)");
    if (m == 0 || n == 0) /* quick return, as cuBLAS */
        return CUBLAS_STATUS_SUCCESS;
    const int ylen = t == CUBLAS_OP_N ? m : n;
    if (*beta == 0.0f) /* y may hold garbage (NaN): cuBLAS does not read it */
        for (int i = 0; i < ylen; i++)
            y[(long long)i * (incy > 0 ? incy : -incy)] = 0.0f;
    cblas_sgemv(CblasColMajor, cb(t), m, n, *alpha, A, lda, x, incx, *beta, y, incy);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgeam(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, const float *alpha, const float *A, int lda, const float *beta,
                           const float *B, int ldb, float *C, int ldc)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta || m < 0 || n < 0 || ldc < (m > 1 ? m : 1) ||
        lda < (ta == CUBLAS_OP_N ? (m > 1 ? m : 1) : (n > 1 ? n : 1)) ||
        ldb < (tb == CUBLAS_OP_N ? (m > 1 ? m : 1) : (n > 1 ? n : 1)))
        return bad("cublasSgeam", "invalid argument (m, n, lda, ldb, ldc)");
    const float a = *alpha, b = *beta;
    std::vector<float> out((size_t)m * (size_t)n); /* C may alias A or B */
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float v = 0.0f;
            if (a != 0.0f)
                v += a * (ta == CUBLAS_OP_N ? A[(size_t)j * lda + i] : A[(size_t)i * lda + j]);
            if (b != 0.0f)
                v += b * (tb == CUBLAS_OP_N ? B[(size_t)j * ldb + i] : B[(size_t)i * ldb + j]);
            out[(size_t)j * m + i] = v;
        }
    for (int j = 0; j < n; j++)
        memcpy(C + (size_t)j * ldc, out.data() + (size_t)j * m, sizeof(float) * (size_t)m);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSaxpy(cublasHandle_t h, int n, const float *alpha, const float *x, int incx,
                           float *y, int incy)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || incx == 0 || incy == 0)
        return bad("cublasSaxpy", "invalid argument");
    if (n > 0)
        cblas_saxpy(n, *alpha, x, incx, y, incy);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSscal(cublasHandle_t h, int n, const float *alpha, float *x, int incx)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || incx <= 0)
        return bad("cublasSscal", "invalid argument");
    if (n > 0)
        cblas_sscal(n, *alpha, x, incx);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSdot(cublasHandle_t h, int n, const float *x, int incx, const float *y,
                          int incy, float *result)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!result)
        return bad("cublasSdot", "result must not be null");
    *result = n > 0 ? cblas_sdot(n, x, incx, y, incy) : 0.0f;
    return CUBLAS_STATUS_SUCCESS;
}

} /* extern "C" */
