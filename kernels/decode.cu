/* Sparse decode (CUDA twin of decode_cpu): each token gathers its kept decoder rows. One block
 * per token, threads over the d columns (float4 loads when d % 4 == 0); each column is summed
 * in entry order, so the result does not depend on the launch. */
#include "decode.cuh"
#include "devutil.cuh"

#define DEC_THREADS 128

static __global__ void decode_kernel(const int *row_ptr, const int *lat, const float *val,
                                     const float *W_dec, const float *bias, int d, int limit,
                                     float *xhat)
{
    const int b = blockIdx.x;
    const int p0 = row_ptr[b], p1 = row_ptr[b + 1];
    float *out = xhat + (size_t)b * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = bias ? bias[c] : 0.0f;
        for (int p = p0; p < p1; p++) {
            const int i = lat[p];
            if (i < 0 || i >= limit)
                continue;
            acc = sf_fadd(acc, sf_fmul(val[p], W_dec[(size_t)i * d + c]));
        }
        out[c] = acc;
    }
}

/* d % 4 == 0: each thread owns four adjacent columns and reads them as one float4. */
static __global__ void decode_kernel4(const int *row_ptr, const int *lat, const float *val,
                                      const float *W_dec, const float *bias, int d, int limit,
                                      float *xhat)
{
    const int b = blockIdx.x;
    const int p0 = row_ptr[b], p1 = row_ptr[b + 1];
    const int d4 = d / 4;
    float4 *out = (float4 *)(xhat + (size_t)b * d);
    const float4 *W4 = (const float4 *)W_dec;
    const float4 *bias4 = (const float4 *)bias;
    for (int c = threadIdx.x; c < d4; c += blockDim.x) {
        float4 acc = bias4 ? bias4[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int p = p0; p < p1; p++) {
            const int i = lat[p];
            if (i < 0 || i >= limit)
                continue;
            const float v = val[p];
            const float4 w = W4[(size_t)i * d4 + c];
            acc.x = sf_fadd(acc.x, sf_fmul(v, w.x));
            acc.y = sf_fadd(acc.y, sf_fmul(v, w.y));
            acc.z = sf_fadd(acc.z, sf_fmul(v, w.z));
            acc.w = sf_fadd(acc.w, sf_fmul(v, w.w));
        }
        out[c] = acc;
    }
}

static __global__ void fill_row_ptr_kernel(int *row_ptr, int B, int k)
{
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b <= B)
        row_ptr[b] = b * k;
}

extern "C" void decode_cuda(const int *row_ptr, const int *lat, const float *val,
                            const float *W_dec, const float *bias, int B, int d, int limit,
                            float *xhat, cudaStream_t stream)
{
    if (B <= 0)
        return;
    const bool vec = (d % 4 == 0) && ((size_t)W_dec % 16 == 0) && ((size_t)xhat % 16 == 0) &&
                     (bias == NULL || (size_t)bias % 16 == 0);
    if (vec) {
        int threads = d / 4 < DEC_THREADS ? ((d / 4 + 31) / 32) * 32 : DEC_THREADS;
        SF_LAUNCH(decode_kernel4, B, threads, 0, stream, row_ptr, lat, val, W_dec, bias, d,
                  limit, xhat);
    } else {
        int threads = d < DEC_THREADS ? ((d + 31) / 32) * 32 : DEC_THREADS;
        SF_LAUNCH(decode_kernel, B, threads, 0, stream, row_ptr, lat, val, W_dec, bias, d, limit,
                  xhat);
    }
}

extern "C" void fill_row_ptr_cuda(int *row_ptr, int B, int k, cudaStream_t stream)
{
    SF_LAUNCH(fill_row_ptr_kernel, (B + 1 + 255) / 256, 256, 0, stream, row_ptr, B, k);
}
