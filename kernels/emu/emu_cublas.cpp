/* cuBLAS under emulation: the same column-major calls, computed by OpenBLAS (cblas). Reduced
 * precision modes round the inputs as the tensor cores would read them (TF32: 10 mantissa
 * bits; BF16: 7), then accumulate in fp32; beta == 0 never reads C, as in cuBLAS. Arguments
 * are checked at the call; the computation is queued on the handle's stream (emu_stream.cpp),
 * and alpha/beta are read at the call in host pointer mode, when the work runs in device mode. */
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

/* A scalar argument: read at the call (host pointer mode) or when the queued work runs (device
 * pointer mode, where the value may be produced by earlier work on the stream). */
struct Scalar {
    const float *p;
    float v;
    float get() const { return p ? *p : v; }
};

Scalar scalar(cublasHandle_t h, const void *p)
{
    const float *f = (const float *)p;
    if (h->pmode == CUBLAS_POINTER_MODE_DEVICE)
        return Scalar{f, 0.0f};
    return Scalar{nullptr, *f};
}

struct Gemm {
    cublasOperation_t ta, tb;
    int m, n, k;
    Scalar alpha;
    const void *A;
    cudaDataType at;
    int lda;
    const void *B;
    cudaDataType bt;
    int ldb;
    Scalar beta;
    float *C;
    int ldc;
    Round r;
};

cublasStatus_t gemm_check(const char *fn, const Gemm &g)
{
    if ((unsigned)g.ta > CUBLAS_OP_C || (unsigned)g.tb > CUBLAS_OP_C)
        return bad(fn, "transa/transb is not a cublasOperation_t");
    if (g.m < 0 || g.n < 0 || g.k < 0)
        return bad(fn, "m, n and k must be >= 0");
    const int arows = g.ta == CUBLAS_OP_N ? g.m : g.k;
    const int brows = g.tb == CUBLAS_OP_N ? g.k : g.n;
    if (g.lda < (arows > 1 ? arows : 1))
        return bad(fn, "lda < max(1, rows of A as stored)");
    if (g.ldb < (brows > 1 ? brows : 1))
        return bad(fn, "ldb < max(1, rows of B as stored)");
    if (g.ldc < (g.m > 1 ? g.m : 1))
        return bad(fn, "ldc < max(1, m)");
    return CUBLAS_STATUS_SUCCESS;
}

void gemm_run(const Gemm &g)
{
    const int m = g.m, n = g.n, k = g.k, ldc = g.ldc;
    const float alpha = g.alpha.get(), beta = g.beta.get();
    float *C = g.C;
    if (m == 0 || n == 0)
        return;
    if (beta == 0.0f) /* C may hold garbage (NaN): cuBLAS does not read it */
        for (int j = 0; j < n; j++)
            memset(C + (size_t)j * (size_t)ldc, 0, sizeof(float) * (size_t)m);
    if (k == 0 || alpha == 0.0f) {
        if (beta != 0.0f && beta != 1.0f)
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++)
                    C[(size_t)j * (size_t)ldc + (size_t)i] *= beta;
        return;
    }
    if (g.at == CUDA_R_32F && g.bt == CUDA_R_32F && g.r == R_NONE) {
        cblas_sgemm(CblasColMajor, cb(g.ta), cb(g.tb), m, n, k, alpha, (const float *)g.A, g.lda,
                    (const float *)g.B, g.ldb, beta, C, ldc);
        return;
    }
    const int arows = g.ta == CUBLAS_OP_N ? m : k, acols = g.ta == CUBLAS_OP_N ? k : m;
    const int brows = g.tb == CUBLAS_OP_N ? k : n, bcols = g.tb == CUBLAS_OP_N ? n : k;
    const std::vector<float> a = pack(g.A, g.at, arows, acols, g.lda, g.r);
    const std::vector<float> b = pack(g.B, g.bt, brows, bcols, g.ldb, g.r);
    cblas_sgemm(CblasColMajor, cb(g.ta), cb(g.tb), m, n, k, alpha, a.data(),
                arows > 0 ? arows : 1, b.data(), brows > 0 ? brows : 1, beta, C, ldc);
}

cublasStatus_t gemm(const char *fn, cublasHandle_t h, const Gemm &g)
{
    const cublasStatus_t st = gemm_check(fn, g);
    if (st != CUBLAS_STATUS_SUCCESS)
        return st;
    emu_enqueue(h->stream, [g]() { gemm_run(g); });
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
    emu_drain_all(); /* cuBLAS documents an implicit cudaDeviceSynchronize here */
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
    h->pmode = mode; /* host and device memory are one here; the mode says when *alpha is read */
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
    return gemm("cublasSgemm", h,
                Gemm{ta, tb, m, n, k, scalar(h, alpha), A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb,
                     scalar(h, beta), C, ldc, handle_round(h)});
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda,
                                         long long strideA, const float *B, int ldb,
                                         long long strideB, const float *beta, float *C,
                                         int ldc, long long strideC, int batch)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
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
    return gemm("cublasGemmEx", h,
                Gemm{ta, tb, m, n, k, scalar(h, alpha), A, Atype, lda, B, Btype, ldb,
                     scalar(h, beta), (float *)C, ldc, r});
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
    const Scalar a = scalar(h, alpha), b = scalar(h, beta);
    emu_enqueue(h->stream, [=]() {
        const int ylen = t == CUBLAS_OP_N ? m : n;
        const float bv = b.get();
        if (bv == 0.0f) /* y may hold garbage (NaN): cuBLAS does not read it */
            for (int i = 0; i < ylen; i++)
                y[(long long)i * (incy > 0 ? incy : -incy)] = 0.0f;
        cblas_sgemv(CblasColMajor, cb(t), m, n, a.get(), A, lda, x, incx, bv, y, incy);
    });
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
    const Scalar sa = scalar(h, alpha), sb = scalar(h, beta);
    emu_enqueue(h->stream, [=]() {
        const float a = sa.get(), b = sb.get();
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
    });
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSaxpy(cublasHandle_t h, int n, const float *alpha, const float *x, int incx,
                           float *y, int incy)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || incx == 0 || incy == 0)
        return bad("cublasSaxpy", "invalid argument");
    const Scalar a = scalar(h, alpha);
    if (n > 0)
        emu_enqueue(h->stream, [=]() { cblas_saxpy(n, a.get(), x, incx, y, incy); });
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSscal(cublasHandle_t h, int n, const float *alpha, float *x, int incx)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || incx <= 0)
        return bad("cublasSscal", "invalid argument");
    const Scalar a = scalar(h, alpha);
    if (n > 0)
        emu_enqueue(h->stream, [=]() { cblas_sscal(n, a.get(), x, incx); });
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSdot(cublasHandle_t h, int n, const float *x, int incx, const float *y,
                          int incy, float *result)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!result)
        return bad("cublasSdot", "result must not be null");
    emu_enqueue(h->stream, [=]() { *result = n > 0 ? cblas_sdot(n, x, incx, y, incy) : 0.0f; });
    /* a result in host memory: cuBLAS returns once it is written */
    if (h->pmode == CUBLAS_POINTER_MODE_HOST)
        emu_stream_drain(h->stream);
    return CUBLAS_STATUS_SUCCESS;
}

} /* extern "C" */
