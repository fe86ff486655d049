/* Test kernels for the emulator itself (tests/test_emu.c): barriers, shared memory, warp
 * intrinsics, atomics, launch shapes, and deliberately faulty kernels whose diagnostics the
 * tests check. Compiled only against kernels/emu (see kernels/emu/emu.mk). */
#include "tests/emu_kernels/emu_test_kernels.h"

/* ---- well-formed kernels -------------------------------------------------------------- */
static __global__ void k_block_sum(const float *__restrict__ x, float *__restrict__ out)
{
    __shared__ float sh[256];
    const int t = threadIdx.x;
    const int b = blockIdx.y * gridDim.x + blockIdx.x;
    sh[t] = x[b * 256 + t];
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s)
            sh[t] += sh[t + s];
        __syncthreads();
    }
    if (t == 0)
        out[b] = sh[0];
}

void tk_block_sum(const float *x, float *out, int gx, int gy, cudaStream_t s)
{
    SF_LAUNCH(k_block_sum, dim3(gx, gy), 256, 0, s, x, out);
}

static __global__ void k_warp(const int *in, int *out)
{
    __shared__ int sh[1024];
    const unsigned full = 0xffffffffu;
    const int t = threadIdx.x, lane = t & 31;
    const int v = in[t];
    int *o = out + t * TK_WARP_SLOTS;

    int x = v;
    for (int off = 16; off > 0; off >>= 1)
        x += __shfl_xor_sync(full, x, off);
    o[0] = x;

    x = v;
    for (int off = 16; off > 0; off >>= 1)
        x += __shfl_down_sync(full, x, off);
    o[1] = x;

    x = v;
    for (int off = 1; off < 32; off <<= 1) {
        const int y = __shfl_up_sync(full, x, off);
        if (lane >= off)
            x += y;
    }
    o[2] = x;

    o[3] = __shfl_sync(full, v, 5);
    o[4] = __shfl_sync(full, v, 3, 8);
    o[5] = __shfl_xor_sync(full, v, 8, 16);
    o[6] = __shfl_down_sync(full, v, 2, 8);
    o[7] = __shfl_up_sync(full, v, 3, 8);
    o[8] = (int)__ballot_sync(full, v & 1);
    o[9] = __any_sync(full, v > 1000);
    o[10] = __all_sync(full, v >= 0);

    /* two independent half-warp groups at once */
    const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
    o[11] = (int)__ballot_sync(half, v & 2);
    x = v;
    for (int off = 8; off > 0; off >>= 1)
        x += __shfl_xor_sync(half, x, off);
    o[12] = x;

    /* even lanes only */
    if ((lane & 1) == 0)
        o[13] = __shfl_sync(0x55555555u, v, (lane + 2) & 31);
    else
        o[13] = -9;

    /* shared memory made visible by __syncwarp */
    sh[t] = v * 3;
    __syncwarp();
    o[14] = sh[t ^ 1];
    o[15] = (int)__match_any_sync(full, v & 3);
    o[16] = __reduce_add_sync(full, v);
    o[17] = (int)__activemask();
}

void tk_warp(const int *in, int *out, int nthreads, cudaStream_t s)
{
    SF_LAUNCH(k_warp, 1, nthreads, 0, s, in, out);
}

static __global__ void k_atomics(int *c, float *fsum, double *dsum, unsigned long long *ull)
{
    __shared__ int block_count;
    const int gid = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x == 0)
        block_count = 0;
    __syncthreads();
    atomicAdd(&c[0], 1);
    atomicSub((unsigned *)&c[1], 2u);
    atomicMax(&c[2], gid);
    atomicMin(&c[3], -gid);
    int old = atomicAdd(&c[4], 0), seen; /* a plain read here would race with the CAS */
    do {
        seen = old;
        old = atomicCAS(&c[4], seen, seen + 3);
    } while (old != seen);
    atomicOr(&c[5], 1 << (gid % 31));
    atomicAnd(&c[6], ~(1 << (gid % 20)));
    atomicExch(&c[7], gid);
    atomicInc((unsigned *)&c[8], 9u);
    atomicAdd(&block_count, 1);
    atomicAdd(fsum, 0.5f);
    atomicAdd(dsum, (double)gid);
    atomicAdd(ull, 1ull << 33);
    __syncthreads();
    if (threadIdx.x == 0)
        atomicAdd(&c[9], block_count);
}

void tk_atomics(int *counters, float *fsum, double *dsum, unsigned long long *ull, int blocks,
                cudaStream_t s)
{
    SF_LAUNCH(k_atomics, blocks, 128, 0, s, counters, fsum, dsum, ull);
}

static __global__ void k_dyn_shared(const float *x, float *y, float *nb)
{
    SF_DYN_SHARED(float, dyn);
    const int n = blockDim.x, t = threadIdx.x, base = blockIdx.x * n;
    float *a = dyn, *b = dyn + n;
    a[t] = x[base + t];
    __syncthreads();
    y[base + t] = a[n - 1 - t];
    b[t] = 2.0f * a[t];
    __syncthreads();
    nb[base + t] = b[(t + 1) % n];
}

void tk_dyn_shared(const float *x, float *y, float *nb, int blocks, int threads, cudaStream_t s)
{
    SF_LAUNCH(k_dyn_shared, blocks, threads, 2 * threads * sizeof(float), s, x, y, nb);
}

static __global__ void k_sync_preds(const int *pred, int *out)
{
    const int p = pred[blockIdx.x * blockDim.x + threadIdx.x];
    const int c = __syncthreads_count(p);
    const int a = __syncthreads_and(p);
    const int o = __syncthreads_or(p);
    if (threadIdx.x == 7) {
        out[blockIdx.x * 3 + 0] = c;
        out[blockIdx.x * 3 + 1] = a;
        out[blockIdx.x * 3 + 2] = o;
    }
}

void tk_sync_preds(const int *pred, int *out, int blocks, cudaStream_t s)
{
    SF_LAUNCH(k_sync_preds, blocks, 96, 0, s, pred, out);
}

static __global__ void k_dims(int *out)
{
    const int tl = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int bl = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int *o = out + (bl * 24 + tl) * 3;
    o[0] = threadIdx.x + 4 * threadIdx.y + 12 * threadIdx.z;
    o[1] = blockDim.x * 100 + blockDim.y * 10 + blockDim.z;
    o[2] = blockIdx.x + 10 * blockIdx.z + 100 * gridDim.x + 1000 * gridDim.z + 10000 * gridDim.y;
}

void tk_dims(int *out, cudaStream_t s)
{
    SF_LAUNCH(k_dims, dim3(2, 1, 2), dim3(4, 3, 2), 0, s, out);
}

static __global__ void k_fill(int *out, int n, int value)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = value;
}

void tk_fill(int *out, int n, int value, cudaStream_t s)
{
    SF_LAUNCH(k_fill, 2, 64, 0, s, out, n, value);
}

/* The arguments read host state through a pointer, as the backend's SF_LAUNCH(..., c->lat)
 * does: what the kernel gets must be what they were at the launch. */
void tk_fill_args(const tk_fill_spec *a, cudaStream_t s)
{
    SF_LAUNCH(k_fill, 2, 64, 0, s, a->out, a->n, a->value);
}

static __global__ void k_nop(int *out)
{
    if (out)
        out[0] = 1;
}

cudaError_t tk_bad_launch(int which)
{
    int *none = nullptr;
    cudaStream_t bogus = (cudaStream_t)(uintptr_t)0x1234;
    switch (which) {
    case 0: emu_launch("k_nop", __FILE__, __LINE__, dim3(1), dim3(2048), 0, 0, [=]() { k_nop(none); }); break;
    case 1: emu_launch("k_nop", __FILE__, __LINE__, dim3(0), dim3(32), 0, 0, [=]() { k_nop(none); }); break;
    case 2: emu_launch("k_nop", __FILE__, __LINE__, dim3(1), dim3(32), 200000, 0, [=]() { k_nop(none); }); break;
    default: emu_launch("k_nop", __FILE__, __LINE__, dim3(1), dim3(32), 0, bogus, [=]() { k_nop(none); }); break;
    }
    return cudaGetLastError();
}

/* ---- faulty kernels ------------------------------------------------------------------- */
/* Each launcher synchronises: a fault shows when the kernel runs, not when it is queued. */
static int *scratch(void)
{
    int *p = nullptr;
    CUDA_CHECK(cudaMalloc((void **)&p, 1024 * sizeof(int)));
    return p;
}

const int tk_deadlock_line = __LINE__ + 4;
static __global__ void k_deadlock(int *out)
{
    if (threadIdx.x < 16)
        __syncthreads();
    out[threadIdx.x] = 1;
}
void tk_deadlock(void)
{
    SF_LAUNCH(k_deadlock, 2, 64, 0, 0, scratch());
    CUDA_CHECK(cudaDeviceSynchronize());
}

const int tk_bad_mask_line = __LINE__ + 6;
static __global__ void k_bad_mask(int *out)
{
    const int lane = threadIdx.x & 31;
    /* lane 3 names lanes 0-2 only */
    const unsigned m = lane == 3 ? 0x7u : 0xffffffffu;
    out[threadIdx.x] = __shfl_sync(m, lane, 0);
}
void tk_bad_mask(void)
{
    SF_LAUNCH(k_bad_mask, 1, 32, 0, 0, scratch());
    CUDA_CHECK(cudaDeviceSynchronize());
}

const int tk_mask_mismatch_line = __LINE__ + 4;
static __global__ void k_mask_mismatch(int *out)
{
    const int lane = threadIdx.x & 31;
    const int v = lane < 16 ? __shfl_xor_sync(0xffffffffu, lane, 1) : __shfl_xor_sync(0xfffffffeu, lane, 1);
    out[threadIdx.x] = v;
}
void tk_mask_mismatch(void)
{
    SF_LAUNCH(k_mask_mismatch, 1, 32, 0, 0, scratch());
    CUDA_CHECK(cudaDeviceSynchronize());
}

static __global__ void k_exited_lane(int *out)
{
    const int lane = threadIdx.x & 31;
    if (lane == 31)
        return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, lane, 1);
}
void tk_exited_lane(void)
{
    SF_LAUNCH(k_exited_lane, 1, 64, 0, 0, scratch());
    CUDA_CHECK(cudaDeviceSynchronize());
}

const int tk_split_line1 = __LINE__ + 5;
static __global__ void k_split_barriers(int *out)
{
    __shared__ int sh[64];
    if (threadIdx.x & 1) {
        __syncthreads();
        sh[threadIdx.x] = 1;
    } else {
        sh[threadIdx.x] = 2;
        __syncthreads();
    }
    out[threadIdx.x] = sh[threadIdx.x];
}
void tk_split_barriers(void)
{
    SF_LAUNCH(k_split_barriers, 1, 64, 0, 0, scratch());
    CUDA_CHECK(cudaDeviceSynchronize());
}

static __global__ void k_racy(int *out, int with_barrier)
{
    __shared__ int sh;
    if (threadIdx.x == 0)
        sh = 42;
    if (with_barrier)
        __syncthreads();
    out[threadIdx.x] = sh;
}
void tk_racy(int *out)
{
    SF_LAUNCH(k_racy, 1, 64, 0, 0, out, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
}
void tk_not_racy(int *out)
{
    SF_LAUNCH(k_racy, 1, 64, 0, 0, out, 1);
    CUDA_CHECK(cudaDeviceSynchronize());
}

static __global__ void k_dyn_overflow(int n)
{
    SF_DYN_SHARED(float, dyn);
    dyn[threadIdx.x + 1] = 1.0f; /* thread n-1 writes dyn[n] */
}
void tk_dyn_overflow(void)
{
    SF_LAUNCH(k_dyn_overflow, 1, 32, 32 * sizeof(float), 0, 32);
    CUDA_CHECK(cudaDeviceSynchronize());
}
