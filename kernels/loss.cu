/* Loss reductions (CUDA twins of kernels/loss.h). Sums are two-stage: a fixed number of blocks
 * (a function of the size only) write per-block partials in double, then one block adds them
 * in a fixed tree order, so the same inputs always give the same bits. */
#include "loss.cuh"
#include "devutil.cuh"

extern "C" size_t loss_cuda_work_bytes(int B)
{
    return sizeof(double) * ((size_t)SF_RED_MAX_PARTS * 2 + 2 * (size_t)(B > 0 ? B : 1));
}

/* Sums parts[0..P) (P <= SF_RED_THREADS) into *out. One block of SF_RED_THREADS threads. */
static __global__ void red_finish_kernel(const double *parts, int P, double *out)
{
    __shared__ double sh[SF_RED_THREADS];
    const int t = threadIdx.x;
    double v = t < P ? parts[t] : 0.0;
    v = sf_block_sum(v, sh);
    if (t == 0)
        *out = v;
}

/* Column mean in double, rows in order. */
static __global__ void col_mean_kernel(const float *x, int B, int d, float *mean)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d)
        return;
    double acc = 0.0;
    for (int b = 0; b < B; b++)
        acc += x[(size_t)b * d + c];
    mean[c] = (float)(acc / B);
}

/* Column sums in double, rows in order (loss_colsum_cpu). */
static __global__ void col_sum_kernel(const float *x, int B, int d, double *sum)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d)
        return;
    double acc = 0.0;
    for (int b = 0; b < B; b++)
        acc += x[(size_t)b * d + c];
    sum[c] = acc;
}

static __global__ void center_parts_kernel(const float *x, const float *mean, long long count,
                                           int d, double *parts)
{
    __shared__ double sh[SF_RED_THREADS];
    double acc = 0.0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += stride) {
        const double diff = (double)x[e] - (double)mean[e % d];
        acc += diff * diff;
    }
    acc = sf_block_sum(acc, sh);
    if (threadIdx.x == 0)
        parts[blockIdx.x] = acc;
}

static __global__ void residual_parts_kernel(const float *target, const float *pred,
                                             long long count, double coef_num,
                                             double coef_mul, const double *coef_den, int accumulate, float *dY,
                                             double *parts)
{
    __shared__ double sh[SF_RED_THREADS];
    float coef = (float)coef_num;
    if (coef_den) {
        const double den = *coef_den;
        coef = (float)(coef_num / (coef_mul * (den > 0.0 ? den : 1.0)));
    }
    double acc = 0.0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += stride) {
        const float diff = pred[e] - target[e];
        acc += (double)diff * (double)diff;
        if (dY) {
            const float gval = sf_fmul(coef, diff);
            dY[e] = accumulate ? sf_fadd(dY[e], gval) : gval;
        }
    }
    acc = sf_block_sum(acc, sh);
    if (threadIdx.x == 0 && parts)
        parts[blockIdx.x] = acc;
}

/* One block per token: the two squared dot products of the gradient-weighted error. */
static __global__ void gw_token_kernel(const float *g, const float *x, const float *xhat,
                                       const float *mean, int B, int d, double *tok)
{
    __shared__ double sh[SF_RED_THREADS];
    const int b = blockIdx.x;
    const float *gb = g + (size_t)b * d, *xb = x + (size_t)b * d, *hb = xhat + (size_t)b * d;
    double s1 = 0.0, s2 = 0.0;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        s1 += (double)gb[c] * ((double)xb[c] - (double)hb[c]);
        s2 += (double)gb[c] * ((double)xb[c] - (double)mean[c]);
    }
    s1 = sf_block_sum(s1, sh);
    s2 = sf_block_sum(s2, sh);
    if (threadIdx.x == 0) {
        tok[b] = s1 * s1;
        tok[B + b] = s2 * s2;
    }
}

static __global__ void array_parts_kernel(const double *v, int count, double *parts)
{
    __shared__ double sh[SF_RED_THREADS];
    double acc = 0.0;
    const int stride = gridDim.x * blockDim.x;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < count; e += stride)
        acc += v[e];
    acc = sf_block_sum(acc, sh);
    if (threadIdx.x == 0)
        parts[blockIdx.x] = acc;
}

static __global__ void sub_kernel(const float *a, const float *b, long long count, float *out)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += stride)
        out[e] = a[e] - b[e];
}

extern "C" void loss_center_cuda(const float *x, int B, int d, float *mean, double *den,
                                 void *work, cudaStream_t stream)
{
    double *parts = (double *)work;
    const long long count = (long long)B * d;
    SF_LAUNCH(col_mean_kernel, (d + 127) / 128, 128, 0, stream, x, B, d, mean);
    const int P = sf_red_parts(count);
    SF_LAUNCH(center_parts_kernel, P, SF_RED_THREADS, 0, stream, x, mean, count, d, parts);
    SF_LAUNCH(red_finish_kernel, 1, SF_RED_THREADS, 0, stream, parts, P, den);
}

extern "C" void loss_colsum_cuda(const float *x, int B, int d, double *sum, cudaStream_t stream)
{
    SF_LAUNCH(col_sum_kernel, (d + 127) / 128, 128, 0, stream, x, B, d, sum);
}

extern "C" void loss_spread_cuda(const float *x, int B, int d, const float *mean, double *den,
                                 void *work, cudaStream_t stream)
{
    double *parts = (double *)work;
    const long long count = (long long)B * d;
    const int P = sf_red_parts(count);
    SF_LAUNCH(center_parts_kernel, P, SF_RED_THREADS, 0, stream, x, mean, count, d, parts);
    SF_LAUNCH(red_finish_kernel, 1, SF_RED_THREADS, 0, stream, (const double *)parts, P, den);
}

extern "C" void loss_residual_cuda(const float *target, const float *pred, int B, int d,
                                   double coef_num, double coef_mul, const double *coef_den,
                                   int accumulate,
                                   float *dY, double *sum, void *work, cudaStream_t stream)
{
    double *parts = (double *)work;
    const long long count = (long long)B * d;
    const int P = sf_red_parts(count);
    SF_LAUNCH(residual_parts_kernel, P, SF_RED_THREADS, 0, stream, target, pred, count, coef_num,
              coef_mul, coef_den, accumulate, dY, sum ? parts : (double *)NULL);
    if (sum)
        SF_LAUNCH(red_finish_kernel, 1, SF_RED_THREADS, 0, stream, parts, P, sum);
}

extern "C" void loss_gw_cuda(const float *g, const float *x, const float *xhat, const float *mean,
                             int B, int d, double *num, double *den, void *work,
                             cudaStream_t stream)
{
    double *parts = (double *)work;
    double *parts2 = parts + SF_RED_MAX_PARTS;
    double *tok = parts + 2 * SF_RED_MAX_PARTS;
    SF_LAUNCH(gw_token_kernel, B, SF_RED_THREADS, 0, stream, g, x, xhat, mean, B, d, tok);
    const int P = sf_red_parts(B);
    SF_LAUNCH(array_parts_kernel, P, SF_RED_THREADS, 0, stream, (const double *)tok, B, parts);
    SF_LAUNCH(array_parts_kernel, P, SF_RED_THREADS, 0, stream, (const double *)(tok + B), B,
              parts2);
    SF_LAUNCH(red_finish_kernel, 1, SF_RED_THREADS, 0, stream, (const double *)parts, P, num);
    SF_LAUNCH(red_finish_kernel, 1, SF_RED_THREADS, 0, stream, (const double *)parts2, P, den);
}

extern "C" void sub_cuda(const float *a, const float *b, long long count, float *out,
                         cudaStream_t stream)
{
    long long blocks = (count + 255) / 256;
    if (blocks > 1024)
        blocks = 1024;
    if (blocks < 1)
        return;
    SF_LAUNCH(sub_kernel, (int)blocks, 256, 0, stream, a, b, count, out);
}
