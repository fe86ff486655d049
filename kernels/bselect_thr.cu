/* Threshold rule on the device (select_threshold_cuda, bselect.cuh): count, scan, compaction. */
#include "bselect.cuh"

#include "select_common.cuh"
#include "sf_check.h"

#define THR_THREADS 256
#define THR_SCAN_THREADS 1024

static __device__ inline void thr_load4(const float *prow, int n, int i, bool vec, float a[4])
{
    if (vec) {
        const float4 v = *(const float4 *)(prow + i);
        a[0] = v.x; a[1] = v.y; a[2] = v.z; a[3] = v.w;
    } else {
        for (int j = 0; j < 4; j++)
            a[j] = i + j < n ? prow[i + j] : 0.0f;
    }
    for (int j = 0; j < 4; j++)
        a[j] = sel_relu(a[j]);
}

static __global__ void thr_count_kernel(const float *pre, int n, int vec, float theta, int *row_ptr)
{
    __shared__ unsigned ws[32];
    const float *prow = pre + (size_t)blockIdx.x * n;
    unsigned c = 0;
    for (int i = 4 * threadIdx.x; i < n; i += 4 * blockDim.x) {
        float a[4];
        thr_load4(prow, n, i, vec != 0, a);
        for (int j = 0; j < 4; j++)
            c += (i + j < n && a[j] > 0.0f && a[j] > theta);
    }
    unsigned total;
    sel_block_scan(c, ws, &total);
    if (threadIdx.x == 0)
        row_ptr[blockIdx.x] = (int)total;
}

/* One block: row counts -> exclusive offsets in place, row_ptr[B] = total. */
static __global__ void thr_scan_kernel(int *row_ptr, int B)
{
    __shared__ unsigned ws[32];
    const int per = (B + (int)blockDim.x - 1) / (int)blockDim.x;
    const int r0 = (int)threadIdx.x * per;
    const int r1 = r0 + per < B ? r0 + per : B;
    unsigned c = 0;
    for (int r = r0; r < r1; r++)
        c += (unsigned)row_ptr[r];
    const unsigned total = sel_block_offsets(row_ptr, r0, r1, c, ws);
    if (threadIdx.x == 0)
        row_ptr[B] = (int)total;
}

static __global__ void thr_compact_kernel(const float *pre, int n, int vec, float theta,
                                          const int *row_ptr, int B, long long cap, int *lat,
                                          float *val)
{
    __shared__ unsigned ws[32];
    if ((long long)row_ptr[B] > cap)
        return; /* the caller only learns the size it needs */
    const int b = blockIdx.x;
    const int start = row_ptr[b], cnt = row_ptr[b + 1] - start;
    const float *prow = pre + (size_t)b * n;
    const int tile = 4 * (int)blockDim.x;
    unsigned run = 0;
    for (int base = 0; base < n && run < (unsigned)cnt; base += tile) {
        const int i = base + 4 * (int)threadIdx.x;
        float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        bool keep[4] = {false, false, false, false};
        unsigned c = 0;
        if (i < n) {
            thr_load4(prow, n, i, vec != 0, a);
            for (int j = 0; j < 4; j++) {
                keep[j] = i + j < n && a[j] > 0.0f && a[j] > theta;
                c += keep[j];
            }
        }
        unsigned total;
        unsigned pos = (unsigned)start + run + sel_block_scan(c, ws, &total);
        for (int j = 0; j < 4; j++)
            if (keep[j]) {
                lat[pos] = i + j;
                val[pos] = a[j];
                pos++;
            }
        run += total;
    }
}

extern "C" void select_threshold_cuda(const float *pre, float theta, int B, int n, int64_t cap,
                                      int *row_ptr, int *lat, float *val, cudaStream_t stream)
{
    SF_CHECK(B >= 0 && n >= 0 && cap >= 0);
    SF_CHECK((long long)B * n < (1ll << 31));
    if (B == 0) {
        CUDA_CHECK(cudaMemsetAsync(row_ptr, 0, sizeof(int), stream));
        return;
    }
    const bool vrow = n % 4 == 0 && sel_aligned16(pre);
    SF_LAUNCH(thr_count_kernel, B, THR_THREADS, 0, stream, pre, n, (int)vrow, theta, row_ptr);
    SF_LAUNCH(thr_scan_kernel, 1, THR_SCAN_THREADS, 0, stream, row_ptr, B);
    SF_LAUNCH(thr_compact_kernel, B, THR_THREADS, 0, stream, pre, n, (int)vrow, theta,
              (const int *)row_ptr, B, (long long)cap, lat, val);
}
