/* Data-parallel pieces of the CUDA backend's step (dist_cuda.cuh), twins of dist_cpu.c. */
#include "dist_cuda.cuh"

#include "devutil.cuh"
#include "sf_check.h"

static __global__ void mean_kernel(const double *sum, int d, long long rows, float *mean)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < d)
        mean[j] = rows > 0 ? (float)(sum[j] / (double)rows) : 0.0f;
}

extern "C" void dist_mean_cuda(const double *sum, int d, int64_t rows, float *mean,
                               cudaStream_t stream)
{
    SF_LAUNCH(mean_kernel, (d + 127) / 128, 128, 0, stream, sum, d, (long long)rows, mean);
}

/* One block per touched row r: dW_enc/dW_dec row r -> dense row rows[r]. */
static __global__ void scatter_rows_kernel(const int *n_rows, const int *rows, const float *dW_enc,
                                           const float *dW_dec, int d, int n, float *buf)
{
    const int r = blockIdx.x;
    if (r >= *n_rows)
        return;
    const size_t i = (size_t)rows[r], nd = (size_t)n * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        buf[i * d + c] = dW_enc[(size_t)r * d + c];
        buf[nd + i * d + c] = dW_dec[(size_t)r * d + c];
    }
}

/* Biases, and the fire counts of the main code (whole numbers below 2^24: exact in float, in
 * any order of the atomic additions). */
static __global__ void scatter_vec_kernel(const float *db_enc, const float *db_dec, const int *lat,
                                          int slots, int d, int n, float *buf)
{
    const size_t nd = (size_t)n * d;
    float *be = buf + 2 * nd, *bd = be + n, *fired = bd + d;
    const int t0 = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
    for (int i = t0; i < n; i += stride)
        be[i] = db_enc[i];
    for (int j = t0; j < d; j += stride)
        bd[j] = db_dec[j];
    for (int s = t0; s < slots; s += stride)
        if (lat[s] >= 0)
            atomicAdd(&fired[lat[s]], 1.0f);
}

extern "C" void dist_grads_scatter_cuda(const sae_grads_cuda *sp, const int *lat, int slots, int d,
                                        int n, float *buf, cudaStream_t stream)
{
    const size_t floats = 2 * (size_t)n * d + 2 * (size_t)n + (size_t)d;
    CUDA_CHECK(cudaMemsetAsync(buf, 0, floats * sizeof(float), stream));
    if (sp->cap_rows > 0)
        SF_LAUNCH(scatter_rows_kernel, sp->cap_rows, 128, 0, stream, (const int *)sp->n_rows,
                  (const int *)sp->rows, (const float *)sp->dW_enc, (const float *)sp->dW_dec, d,
                  n, buf);
    long long work = slots > n ? slots : n;
    int blocks = (int)((work + 255) / 256 < 1024 ? (work + 255) / 256 : 1024);
    SF_LAUNCH(scatter_vec_kernel, blocks > 0 ? blocks : 1, 256, 0, stream,
              (const float *)sp->db_enc, (const float *)sp->db_dec, lat, slots, d, n, buf);
}

static __global__ void iota_kernel(int *ident, int *n_rows, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        ident[i] = i;
    if (i == 0)
        *n_rows = n;
}

extern "C" void dist_dense_view_cuda(float *buf, int d, int n, int *ident, int *n_rows,
                                     sae_grads_cuda *view, cudaStream_t stream)
{
    SF_LAUNCH(iota_kernel, (n + 255) / 256, 256, 0, stream, ident, n_rows, n);
    const size_t nd = (size_t)n * d;
    view->cap_rows = n;
    view->n_rows = n_rows;
    view->rows = ident;
    view->slot = ident;
    view->dW_enc = buf;
    view->dW_dec = buf + nd;
    view->db_enc = buf + 2 * nd;
    view->db_dec = buf + 2 * nd + n;
}

static __global__ void since_fired_kernel(const float *fired, long long add, int n,
                                          int64_t *since_fired)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        since_fired[i] = fired[i] > 0.0f ? 0 : since_fired[i] + add;
}

extern "C" void dist_since_fired_cuda(const float *fired, int64_t B_local, int64_t B_global, int n,
                                      int64_t *since_fired, cudaStream_t stream)
{
    SF_LAUNCH(since_fired_kernel, (n + 255) / 256, 256, 0, stream, fired,
              (long long)(B_global - B_local), n, since_fired);
}

static __global__ void entries_kernel(const int *lat, int slots, double *out)
{
    __shared__ double sh[SF_RED_THREADS];
    double c = 0.0;
    for (int s = threadIdx.x; s < slots; s += blockDim.x)
        c += lat[s] >= 0 ? 1.0 : 0.0;
    c = sf_block_sum(c, sh);
    if (threadIdx.x == 0)
        *out = c;
}

extern "C" void dist_entries_cuda(const int *lat, int slots, double *out, cudaStream_t stream)
{
    SF_LAUNCH(entries_kernel, 1, SF_RED_THREADS, 0, stream, lat, slots, out);
}

static __global__ void kept_key_kernel(const float *min_kept, unsigned *key)
{
    const float v = *min_kept;
    *key = v > 0.0f ? __float_as_uint(v) : 0xffffffffu;
}

static __global__ void kept_value_kernel(const unsigned *key, float *min_kept)
{
    const unsigned k = *key;
    *min_kept = k == 0xffffffffu ? 0.0f : __uint_as_float(k);
}

extern "C" void dist_kept_key_cuda(const float *min_kept, unsigned *key, cudaStream_t stream)
{
    SF_LAUNCH(kept_key_kernel, 1, 1, 0, stream, min_kept, key);
}

extern "C" void dist_kept_value_cuda(const unsigned *key, float *min_kept, cudaStream_t stream)
{
    SF_LAUNCH(kept_value_kernel, 1, 1, 0, stream, key, min_kept);
}

static __global__ void set_kept_kernel(float *min_kept, unsigned bits)
{
    *min_kept = __uint_as_float(bits);
}

extern "C" void dist_set_kept_cuda(float *min_kept, unsigned bits, cudaStream_t stream)
{
    SF_LAUNCH(set_kept_kernel, 1, 1, 0, stream, min_kept, bits);
}
