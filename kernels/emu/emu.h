/* CPU emulation of the slice of CUDA that saeforge uses: the runtime API and cuBLAS (C and
 * C++), and in C++ the device side (thread indices, __shared__, barriers, lane-synchronous
 * warp intrinsics, atomics, bf16), so g++ compiles the project's .cu files unchanged.
 * Every CUDA thread is a fiber; a launch runs all its blocks, one after another, when it runs.
 *
 * Stream order (emu_stream.cpp): by default (SF_EMU_STREAMS=defer) launches, async copies and
 * memsets, event records, stream waits, host functions and cuBLAS calls are queued on their
 * stream and run only when the host waits for them (cudaStreamSynchronize, cudaEventSynchronize,
 * cudaDeviceSynchronize, a synchronous cudaMemcpy/cudaMemset for the legacy and blocking
 * streams, cudaFree, ...), as late as CUDA allows, so a host-side ordering bug shows on the CPU.
 * Kernel arguments are evaluated at the launch. SF_EMU_STREAMS=eager runs everything at the
 * call instead. Queries (cudaStreamQuery, cudaEventQuery) force the work and report success. */
#ifndef SF_EMU_H
#define SF_EMU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- runtime API ----------------------------------------------------------------------- */
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorLaunchFailure = 719
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;

typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)
#define cudaStreamDefault 0x0u
#define cudaStreamNonBlocking 0x1u
#define cudaEventDefault 0x0u
#define cudaEventBlockingSync 0x1u
#define cudaEventDisableTiming 0x2u
#define cudaHostAllocDefault 0x0u
#define cudaHostAllocPortable 0x1u
#define cudaHostAllocMapped 0x2u
#define cudaHostAllocWriteCombined 0x4u

typedef enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9
} cudaFuncAttribute;

typedef struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    size_t sharedMemPerBlockOptin;
    size_t sharedMemPerMultiprocessor;
    int regsPerBlock;
    int warpSize;
    int maxThreadsPerBlock;
    int maxThreadsDim[3];
    int maxGridSize[3];
    int maxThreadsPerMultiProcessor;
    int multiProcessorCount;
    int major;
    int minor;
    int clockRate;
    int l2CacheSize;
    size_t totalConstMem;
    int asyncEngineCount;
    int concurrentKernels;
} cudaDeviceProp;

typedef void (*cudaHostFn_t)(void *user_data);

const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t bytes);
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s);
cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                         size_t height, cudaMemcpyKind kind);
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags);
cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void *user_data);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaDeviceReset(void);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev);
cudaError_t emu_func_set_attribute(const void *func, cudaFuncAttribute attr, int value);
#ifndef __cplusplus
#define cudaFuncSetAttribute(func, attr, value) emu_func_set_attribute((const void *)(func), attr, value)
#endif

/* ---- cuBLAS (column-major, routed to OpenBLAS) ----------------------------------------- */
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
typedef enum {
    CUBLAS_DEFAULT_MATH = 0,
    CUBLAS_TENSOR_OP_MATH = 1,
    CUBLAS_PEDANTIC_MATH = 2,
    CUBLAS_TF32_TENSOR_OP_MATH = 3,
    CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION = 16
} cublasMath_t;
typedef enum { CUBLAS_POINTER_MODE_HOST = 0, CUBLAS_POINTER_MODE_DEVICE = 1 } cublasPointerMode_t;
typedef enum {
    CUDA_R_32F = 0,
    CUDA_R_64F = 1,
    CUDA_R_16F = 2,
    CUDA_R_8I = 3,
    CUDA_R_16BF = 14
} cudaDataType;
typedef cudaDataType cudaDataType_t;
typedef enum {
    CUBLAS_COMPUTE_16F = 64,
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_PEDANTIC = 69,
    CUBLAS_COMPUTE_64F = 70,
    CUBLAS_COMPUTE_32F_FAST_16F = 74,
    CUBLAS_COMPUTE_32F_FAST_16BF = 75,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77
} cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1, CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99 } cublasGemmAlgo_t;
typedef struct emu_cublas *cublasHandle_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasGetStream(cublasHandle_t h, cudaStream_t *s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode);
cublasStatus_t cublasGetMathMode(cublasHandle_t h, cublasMath_t *mode);
cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t mode);
cublasStatus_t cublasGetPointerMode(cublasHandle_t h, cublasPointerMode_t *mode);
const char *cublasGetStatusString(cublasStatus_t s);
const char *cublasGetStatusName(cublasStatus_t s);
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *A, int lda,
                           const float *B, int ldb, const float *beta, float *C, int ldc);
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda,
                                         long long strideA, const float *B, int ldb,
                                         long long strideB, const float *beta, float *C,
                                         int ldc, long long strideC, int batch);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType Atype,
                            int lda, const void *B, cudaDataType Btype, int ldb,
                            const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo);
cublasStatus_t cublasSgemv(cublasHandle_t h, cublasOperation_t t, int m, int n,
                           const float *alpha, const float *A, int lda, const float *x, int incx,
                           const float *beta, float *y, int incy);
cublasStatus_t cublasSgeam(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, const float *alpha, const float *A, int lda, const float *beta,
                           const float *B, int ldb, float *C, int ldc);
cublasStatus_t cublasSaxpy(cublasHandle_t h, int n, const float *alpha, const float *x, int incx,
                           float *y, int incy);
cublasStatus_t cublasSscal(cublasHandle_t h, int n, const float *alpha, float *x, int incx);
cublasStatus_t cublasSdot(cublasHandle_t h, int n, const float *x, int incx, const float *y,
                          int incy, float *result);

/* ---- emulator controls and numeric helpers (not CUDA API) ------------------------------ */
/* Stream execution: "defer" (queued, run when waited for) or "eager" (run at the call). Runs
 * all queued work first. Returns 0, or -1 for another spec. The default comes from env
 * SF_EMU_STREAMS (else defer). */
int emu_set_streams(const char *spec);
/* Fiber resume order: "forward", "reverse", "random" or "random:SEED". Returns 0, or -1 for a
 * spec it does not understand. The default comes from env SF_EMU_SCHEDULE (else forward). */
int emu_set_schedule(const char *spec);
/* Nearest bf16 (ties to even; NaN stays a quiet NaN), as raw bits, and back. */
uint16_t emu_bf16_from_float(float f);
float emu_bf16_to_float(uint16_t b);
/* f rounded to TF32 (10 explicit mantissa bits, ties to even), still stored as a float. */
float emu_tf32_round(float f);
/* Counters since process start: launches run, blocks, fiber switches, and the most operations
 * ever queued on one stream at once (for tests/benchmarks). */
typedef struct emu_stats {
    unsigned long long launches, blocks, switches, max_queued;
} emu_stats;
emu_stats emu_get_stats(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#ifdef __cplusplus
/* ===== device side (C++ only) ============================================================ */
#include <cmath>
#include <cstring>
#include <memory> /* before __noinline__ below: libstdc++ spells __attribute__((__noinline__)) */
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
/* Shared by the threads of a block: blocks run one after another on the OS thread that runs
 * the launch, so one copy per OS thread is the block's copy. */
#define __shared__ static thread_local

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned int x, y; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline int2 make_int2(int x, int y) { return int2{x, y}; }
static inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }

/* Set by the scheduler at every switch into a fiber. */
extern __thread uint3 threadIdx;
extern __thread uint3 blockIdx;
extern __thread dim3 blockDim;
extern __thread dim3 gridDim;
constexpr int warpSize = 32;

/* -- launch (used by SF_LAUNCH in cuda_compat.h) -- */
/* Checks the configuration (errors go to cudaGetLastError at once) and issues body(ctx) for
 * every emulated thread on `stream`; drop(ctx) frees ctx once the launch is done with it. */
void emu_launch_impl(const char *name, const char *file, int line, dim3 grid, dim3 block,
                     size_t shmem, cudaStream_t stream, void (*body)(void *), void *ctx,
                     void (*drop)(void *));
/* A launch of a callable: body (copied at the launch) is called by every emulated thread. */
template <class F>
static inline void emu_launch(const char *name, const char *file, int line, dim3 grid, dim3 block,
                              size_t shmem, cudaStream_t stream, F body)
{
    emu_launch_impl(name, file, line, grid, block, shmem, stream,
                    [](void *p) { (*static_cast<F *>(p))(); }, new F(body),
                    [](void *p) { delete static_cast<F *>(p); });
}
/* A launch of kernel `k` whose call operator takes exactly the kernel's parameters, so the
 * arguments convert as in kernel<<<...>>>(args) and are stored by value at the launch (CUDA
 * copies them into the launch's parameter buffer): a host variable changed after the launch
 * does not change the kernel's arguments. Each emulated thread gets its own copy. */
template <class... P>
struct emu_kernel_launch {
    const char *name, *file;
    int line;
    dim3 grid, block;
    size_t shmem;
    cudaStream_t stream;
    void (*k)(P...);
    struct call {
        void (*k)(P...);
        std::tuple<P...> args;
    };
    void operator()(P... args) const
    {
        emu_launch_impl(
            name, file, line, grid, block, shmem, stream,
            [](void *p) {
                const call *c = static_cast<const call *>(p);
                std::tuple<P...> mine = c->args;
                std::apply(c->k, std::move(mine));
            },
            new call{k, std::tuple<P...>(args...)}, [](void *p) { delete static_cast<call *>(p); });
    }
};
template <class... P>
static inline emu_kernel_launch<P...> emu_kernel(const char *name, const char *file, int line,
                                                 dim3 grid, dim3 block, size_t shmem,
                                                 cudaStream_t stream, void (*k)(P...))
{
    return emu_kernel_launch<P...>{name, file, line, grid, block, shmem, stream, k};
}
void *emu_dynamic_shared();

template <class T>
static inline cudaError_t cudaFuncSetAttribute(T *func, cudaFuncAttribute attr, int value)
{
    return emu_func_set_attribute(reinterpret_cast<const void *>(func), attr, value);
}
template <class T>
static inline cudaError_t cudaMemcpyToSymbol(T &symbol, const void *src, size_t bytes,
                                             size_t offset = 0,
                                             cudaMemcpyKind kind = cudaMemcpyHostToDevice)
{
    if (offset + bytes > sizeof(T))
        return cudaErrorInvalidValue;
    std::memcpy(reinterpret_cast<char *>(&symbol) + offset, src, bytes);
    return cudaSuccess;
}

/* -- block barriers: the call site is part of the barrier's identity and of diagnostics -- */
enum { EMU_BAR_SYNC, EMU_BAR_COUNT, EMU_BAR_AND, EMU_BAR_OR };
int emu_block_barrier(int kind, int pred, const char *file, int line);
static inline void __syncthreads(const char *f = __builtin_FILE(), int l = __builtin_LINE())
{
    emu_block_barrier(EMU_BAR_SYNC, 0, f, l);
}
static inline int __syncthreads_count(int p, const char *f = __builtin_FILE(),
                                      int l = __builtin_LINE())
{
    return emu_block_barrier(EMU_BAR_COUNT, p != 0, f, l);
}
static inline int __syncthreads_and(int p, const char *f = __builtin_FILE(),
                                    int l = __builtin_LINE())
{
    return emu_block_barrier(EMU_BAR_AND, p != 0, f, l);
}
static inline int __syncthreads_or(int p, const char *f = __builtin_FILE(),
                                   int l = __builtin_LINE())
{
    return emu_block_barrier(EMU_BAR_OR, p != 0, f, l);
}

/* -- warp intrinsics: every lane named in the mask must reach the same intrinsic -- */
enum {
    EMU_W_SYNCWARP, EMU_W_SHFL_IDX, EMU_W_SHFL_UP, EMU_W_SHFL_DOWN, EMU_W_SHFL_XOR, EMU_W_BALLOT,
    EMU_W_ANY, EMU_W_ALL, EMU_W_MATCH_ANY, EMU_W_RED_ADD, EMU_W_RED_MIN, EMU_W_RED_MAX,
    EMU_W_RED_UMIN, EMU_W_RED_UMAX, EMU_W_RED_AND, EMU_W_RED_OR, EMU_W_RED_XOR, EMU_W_ACTIVEMASK
};
uint64_t emu_warp_op(int kind, unsigned mask, uint64_t value, int size, int param, int width,
                     const char *file, int line);
/* The lanes of the warp that reach __activemask together: it parks like a warp intrinsic and
 * returns, once nothing else in the block can run, the lanes waiting in it. */
unsigned emu_activemask(const char *file, int line);

static inline void __syncwarp(unsigned mask = 0xffffffffu, const char *f = __builtin_FILE(),
                              int l = __builtin_LINE())
{
    emu_warp_op(EMU_W_SYNCWARP, mask, 0, 0, 0, 32, f, l);
}
template <class T>
static inline T emu_shfl(int kind, unsigned mask, T v, int param, int width, const char *f, int l)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp shuffles move trivially copyable values of at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = emu_warp_op(kind, mask, bits, (int)sizeof(T), param, width, f, l);
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}
template <class T>
static inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize,
                            const char *f = __builtin_FILE(), int l = __builtin_LINE())
{
    return emu_shfl(EMU_W_SHFL_IDX, mask, v, src_lane, width, f, l);
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                               const char *f = __builtin_FILE(), int l = __builtin_LINE())
{
    return emu_shfl(EMU_W_SHFL_UP, mask, v, (int)delta, width, f, l);
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                                 const char *f = __builtin_FILE(), int l = __builtin_LINE())
{
    return emu_shfl(EMU_W_SHFL_DOWN, mask, v, (int)delta, width, f, l);
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize,
                                const char *f = __builtin_FILE(), int l = __builtin_LINE())
{
    return emu_shfl(EMU_W_SHFL_XOR, mask, v, lane_mask, width, f, l);
}
static inline unsigned __ballot_sync(unsigned mask, int p, const char *f = __builtin_FILE(),
                                     int l = __builtin_LINE())
{
    return (unsigned)emu_warp_op(EMU_W_BALLOT, mask, p != 0, 4, 0, 32, f, l);
}
static inline int __any_sync(unsigned mask, int p, const char *f = __builtin_FILE(),
                             int l = __builtin_LINE())
{
    return (int)emu_warp_op(EMU_W_ANY, mask, p != 0, 4, 0, 32, f, l);
}
static inline int __all_sync(unsigned mask, int p, const char *f = __builtin_FILE(),
                             int l = __builtin_LINE())
{
    return (int)emu_warp_op(EMU_W_ALL, mask, p != 0, 4, 0, 32, f, l);
}
template <class T>
static inline unsigned __match_any_sync(unsigned mask, T v, const char *f = __builtin_FILE(),
                                        int l = __builtin_LINE())
{
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "__match_any_sync takes 32/64-bit values");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return (unsigned)emu_warp_op(EMU_W_MATCH_ANY, mask, bits, (int)sizeof(T), 0, 32, f, l);
}
#define EMU_WARP_REDUCE(fn, T, kind)                                                       \
    static inline T fn(unsigned mask, T v, const char *f = __builtin_FILE(),               \
                       int l = __builtin_LINE())                                           \
    {                                                                                      \
        return (T)emu_warp_op(kind, mask, (uint64_t)(uint32_t)v, 4, 0, 32, f, l);           \
    }
EMU_WARP_REDUCE(__reduce_add_sync, unsigned, EMU_W_RED_ADD)
EMU_WARP_REDUCE(__reduce_add_sync, int, EMU_W_RED_ADD)
EMU_WARP_REDUCE(__reduce_min_sync, unsigned, EMU_W_RED_UMIN)
EMU_WARP_REDUCE(__reduce_min_sync, int, EMU_W_RED_MIN)
EMU_WARP_REDUCE(__reduce_max_sync, unsigned, EMU_W_RED_UMAX)
EMU_WARP_REDUCE(__reduce_max_sync, int, EMU_W_RED_MAX)
EMU_WARP_REDUCE(__reduce_and_sync, unsigned, EMU_W_RED_AND)
EMU_WARP_REDUCE(__reduce_or_sync, unsigned, EMU_W_RED_OR)
EMU_WARP_REDUCE(__reduce_xor_sync, unsigned, EMU_W_RED_XOR)
#undef EMU_WARP_REDUCE
static inline unsigned __activemask(const char *f = __builtin_FILE(), int l = __builtin_LINE())
{
    return emu_activemask(f, l);
}

/* -- fences: launches run one at a time and so do blocks, so these only order the
 *    compiler (sequentially consistent atomics below carry the ordering the checker needs) -- */
static inline void __threadfence() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

/* -- atomics (real atomics, so ThreadSanitizer does not flag them as races) -- */
#define EMU_ATOMIC_INT(T)                                                                  \
    static inline T atomicAdd(T *a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicSub(T *a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicExch(T *a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicOr(T *a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicAnd(T *a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicXor(T *a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); } \
    static inline T atomicCAS(T *a, T cmp, T v)                                           \
    {                                                                                      \
        __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
        return cmp;                                                                        \
    }                                                                                      \
    static inline T atomicMax(T *a, T v)                                                   \
    {                                                                                      \
        T old = __atomic_load_n(a, __ATOMIC_SEQ_CST);                                      \
        while (old < v && !__atomic_compare_exchange_n(a, &old, v, false, __ATOMIC_SEQ_CST, \
                                                       __ATOMIC_SEQ_CST)) {                \
        }                                                                                  \
        return old;                                                                        \
    }                                                                                      \
    static inline T atomicMin(T *a, T v)                                                   \
    {                                                                                      \
        T old = __atomic_load_n(a, __ATOMIC_SEQ_CST);                                      \
        while (old > v && !__atomic_compare_exchange_n(a, &old, v, false, __ATOMIC_SEQ_CST, \
                                                       __ATOMIC_SEQ_CST)) {                \
        }                                                                                  \
        return old;                                                                        \
    }
EMU_ATOMIC_INT(int)
EMU_ATOMIC_INT(unsigned int)
EMU_ATOMIC_INT(unsigned long long)
EMU_ATOMIC_INT(long long)
#undef EMU_ATOMIC_INT
#define EMU_ATOMIC_FP(T)                                                                   \
    static inline T atomicAdd(T *a, T v)                                                   \
    {                                                                                      \
        T old, nv;                                                                         \
        __atomic_load(a, &old, __ATOMIC_SEQ_CST);                                          \
        do {                                                                               \
            nv = old + v;                                                                  \
        } while (!__atomic_compare_exchange(a, &old, &nv, false, __ATOMIC_SEQ_CST,         \
                                            __ATOMIC_SEQ_CST));                            \
        return old;                                                                        \
    }                                                                                      \
    static inline T atomicExch(T *a, T v)                                                  \
    {                                                                                      \
        T old;                                                                             \
        __atomic_exchange(a, &v, &old, __ATOMIC_SEQ_CST);                                  \
        return old;                                                                        \
    }
EMU_ATOMIC_FP(float)
EMU_ATOMIC_FP(double)
#undef EMU_ATOMIC_FP
/* atomicInc/atomicDec wrap like the hardware: ((old >= lim) ? 0 : old+1), etc. */
static inline unsigned atomicInc(unsigned *a, unsigned lim)
{
    unsigned old = __atomic_load_n(a, __ATOMIC_SEQ_CST), nv;
    do {
        nv = old >= lim ? 0u : old + 1u;
    } while (!__atomic_compare_exchange_n(a, &old, nv, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return old;
}
static inline unsigned atomicDec(unsigned *a, unsigned lim)
{
    unsigned old = __atomic_load_n(a, __ATOMIC_SEQ_CST), nv;
    do {
        nv = (old == 0u || old > lim) ? lim : old - 1u;
    } while (!__atomic_compare_exchange_n(a, &old, nv, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return old;
}

/* -- bit tricks -- */
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
static inline unsigned __brev(unsigned x)
{
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    return __builtin_bswap32(x);
}
static inline unsigned long long __brevll(unsigned long long x)
{
    return ((unsigned long long)__brev((unsigned)x) << 32) | __brev((unsigned)(x >> 32));
}
static inline unsigned __umulhi(unsigned a, unsigned b)
{
    return (unsigned)(((unsigned long long)a * b) >> 32);
}
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b)
{
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline int __mul24(int a, int b)
{
    const int a24 = (int)((unsigned)a << 8) >> 8, b24 = (int)((unsigned)b << 8) >> 8;
    return (int)(unsigned)((long long)a24 * b24);
}

/* -- reinterpretation and conversions -- */
static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
static inline int __float_as_int(float f) { int u; std::memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline long long __double_as_longlong(double d) { long long u; std::memcpy(&u, &d, 8); return u; }
static inline double __longlong_as_double(long long u) { double d; std::memcpy(&d, &u, 8); return d; }
static inline int __float2int_rn(float x) { return (int)std::nearbyint(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)std::floor(x); }
static inline int __float2int_ru(float x) { return (int)std::ceil(x); }
static inline unsigned __float2uint_rn(float x) { return (unsigned)std::nearbyint(x); }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned x) { return (float)x; }
template <class T>
static inline T __ldg(const T *p) { return *p; }

/* -- fast math as plain math -- */
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
static inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
static inline float __fdividef(float a, float b) { return a / b; }
/* glibc already declares (but does not export) these names: macros, so they bind to ours */
static inline float emu_expf(float x) { return std::exp(x); }
static inline float emu_logf(float x) { return std::log(x); }
static inline float emu_log2f(float x) { return std::log2(x); }
static inline float emu_powf(float a, float b) { return std::pow(a, b); }
static inline float emu_sinf(float x) { return std::sin(x); }
static inline float emu_cosf(float x) { return std::cos(x); }
static inline float emu_tanhf(float x) { return std::tanh(x); }
#define __expf(x) emu_expf(x)
#define __logf(x) emu_logf(x)
#define __log2f(x) emu_log2f(x)
#define __powf(a, b) emu_powf(a, b)
#define __sinf(x) emu_sinf(x)
#define __cosf(x) emu_cosf(x)
#define __tanhf(x) emu_tanhf(x)
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
static inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }
static inline float __frsqrt_rn(float a) { return 1.0f / std::sqrt(a); }
static inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }

#define EMU_MINMAX(R, A, B)                                                                \
    static inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; }                    \
    static inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
EMU_MINMAX(int, int, int)
EMU_MINMAX(unsigned, unsigned, unsigned)
EMU_MINMAX(unsigned, int, unsigned)
EMU_MINMAX(unsigned, unsigned, int)
EMU_MINMAX(long, long, long)
EMU_MINMAX(unsigned long, unsigned long, unsigned long)
EMU_MINMAX(long long, long long, long long)
EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
EMU_MINMAX(unsigned long long, long long, unsigned long long)
EMU_MINMAX(unsigned long long, unsigned long long, long long)
#undef EMU_MINMAX
static inline float min(float a, float b) { return std::fmin(a, b); }
static inline float max(float a, float b) { return std::fmax(a, b); }
static inline double min(double a, double b) { return std::fmin(a, b); }
static inline double max(double a, double b) { return std::fmax(a, b); }
static inline double min(float a, double b) { return std::fmin((double)a, b); }
static inline double max(float a, double b) { return std::fmax((double)a, b); }
static inline double min(double a, float b) { return std::fmin(a, (double)b); }
static inline double max(double a, float b) { return std::fmax(a, (double)b); }

/* -- bf16: raw bits, round-to-nearest-even from float -- */
struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    template <class T, class = typename std::enable_if<std::is_arithmetic<T>::value>::type>
    __nv_bfloat16(T v) : __x(emu_bf16_from_float((float)v)) {}
    operator float() const { return emu_bf16_to_float(__x); }
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;
static inline __nv_bfloat16 emu_bf16_raw(unsigned short b)
{
    __nv_bfloat16 r;
    r.__x = b;
    return r;
}
static inline __nv_bfloat16 __float2bfloat16(float f) { return emu_bf16_raw(emu_bf16_from_float(f)); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return emu_bf16_raw(emu_bf16_from_float(f)); }
static inline __nv_bfloat16 __float2bfloat16_rz(float f)
{
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return emu_bf16_raw((unsigned short)((u >> 16) | 0x40u));
    return emu_bf16_raw((unsigned short)(u >> 16));
}
static inline float __bfloat162float(__nv_bfloat16 b) { return emu_bf16_to_float(b.__x); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b)
{
    return __nv_bfloat162{__float2bfloat16(a), __float2bfloat16(b)};
}
static inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
static inline float2 __bfloat1622float2(__nv_bfloat162 v)
{
    return float2{__bfloat162float(v.x), __bfloat162float(v.y)};
}
static inline float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
static inline float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return emu_bf16_raw(u); }

#endif /* __cplusplus */
#endif
