/* CUDA runtime API under emulation: device memory is host memory from malloc (so ASan sees
 * overruns) filled with 0xff bytes (NaN / -1) like uninitialised device memory; copies check
 * that the device side lies inside one cudaMalloc allocation; streams and events are
 * bookkeeping because every call completes before it returns. */
#include "emu_internal.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <set>

struct emu_stream {
    unsigned flags;
};
struct emu_event {
    unsigned flags;
    bool recorded;
    double ms;
};

namespace {

const size_t TOTAL_MEM = (size_t)16 << 30;

std::mutex mu;
std::map<uintptr_t, size_t> dev_allocs;  /* base -> bytes */
std::map<uintptr_t, size_t> host_allocs; /* pinned */
size_t dev_bytes = 0;
std::set<const emu_stream *> streams;
std::set<const emu_event *> events;
__thread cudaError_t last_error = cudaSuccess;

/* Whether [p, p+n) lies inside one device allocation. */
bool in_device(const void *p, size_t n)
{
    std::lock_guard<std::mutex> g(mu);
    const uintptr_t a = (uintptr_t)p;
    auto it = dev_allocs.upper_bound(a);
    if (it == dev_allocs.begin())
        return false;
    --it;
    return a >= it->first && a - it->first <= it->second && n <= it->second - (a - it->first);
}

cudaError_t fail(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cudaError_t fail(cudaError_t e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("saeforge-emu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return emu_set_error(e);
}

double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

bool event_ok(cudaEvent_t e)
{
    std::lock_guard<std::mutex> g(mu);
    return e && events.count(e);
}

cudaError_t copy(void *dst, const void *src, size_t n, cudaMemcpyKind kind, const char *what)
{
    if (n == 0)
        return cudaSuccess;
    if ((unsigned)kind > (unsigned)cudaMemcpyDefault)
        return fail(cudaErrorInvalidMemcpyDirection, "%s: kind %d is not a cudaMemcpyKind", what,
                    (int)kind);
    if (!dst || !src)
        return fail(cudaErrorInvalidValue, "%s: null pointer", what);
    const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (dst_dev && !in_device(dst, n))
        return fail(cudaErrorInvalidValue,
                    "%s: destination %p (+%zu bytes) is not inside one cudaMalloc allocation",
                    what, dst, n);
    if (src_dev && !in_device(src, n))
        return fail(cudaErrorInvalidValue,
                    "%s: source %p (+%zu bytes) is not inside one cudaMalloc allocation", what,
                    src, n);
    memmove(dst, src, n);
    return cudaSuccess;
}

} // namespace

/* ---- emulator internals ------------------------------------------------------------------ */
cudaError_t emu_set_error(cudaError_t e)
{
    if (e != cudaSuccess)
        last_error = e;
    return e;
}

int emu_stream_ok(cudaStream_t s)
{
    if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread)
        return 1;
    std::lock_guard<std::mutex> g(mu);
    return streams.count(s) != 0;
}

int emu_in_device(const void *p, size_t n) { return in_device(p, n) ? 1 : 0; }

void emu_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("saeforge-emu: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    abort();
}

/* ---- numeric helpers --------------------------------------------------------------------- */
extern "C" uint16_t emu_bf16_from_float(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign, force quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u); /* ties to even; overflow carries into inf correctly */
    return (uint16_t)(u >> 16);
}

extern "C" float emu_bf16_to_float(uint16_t b)
{
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

extern "C" float emu_tf32_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) { /* finite: round away the low 13 mantissa bits */
        u += 0xfffu + ((u >> 13) & 1u);
        u &= 0xffffe000u;
    }
    float r;
    memcpy(&r, &u, 4);
    return r;
}

/* ---- runtime API -------------------------------------------------------------------------- */
extern "C" {

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

cudaError_t cudaGetLastError(void)
{
    const cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return last_error; }

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    if (!p)
        return emu_set_error(cudaErrorInvalidValue);
    *p = nullptr;
    if (bytes == 0)
        return cudaSuccess;
    {
        std::lock_guard<std::mutex> g(mu);
        if (bytes > TOTAL_MEM - dev_bytes)
            return emu_set_error(cudaErrorMemoryAllocation);
    }
    void *m = nullptr;
    if (posix_memalign(&m, 256, bytes) != 0)
        return emu_set_error(cudaErrorMemoryAllocation);
    memset(m, 0xff, bytes); /* device memory starts as garbage: NaN / -1 */
    std::lock_guard<std::mutex> g(mu);
    dev_allocs[(uintptr_t)m] = bytes;
    dev_bytes += bytes;
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    if (!p)
        return cudaSuccess;
    {
        std::lock_guard<std::mutex> g(mu);
        auto it = dev_allocs.find((uintptr_t)p);
        if (it == dev_allocs.end())
            return fail(cudaErrorInvalidValue, "cudaFree(%p): not a live cudaMalloc pointer", p);
        dev_bytes -= it->second;
        dev_allocs.erase(it);
    }
    free(p);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags)
{
    if (!p || flags > 0xfu)
        return emu_set_error(cudaErrorInvalidValue);
    *p = nullptr;
    if (bytes == 0)
        return cudaSuccess;
    void *m = nullptr;
    if (posix_memalign(&m, 64, bytes) != 0)
        return emu_set_error(cudaErrorMemoryAllocation);
    memset(m, 0xff, bytes);
    std::lock_guard<std::mutex> g(mu);
    host_allocs[(uintptr_t)m] = bytes;
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t bytes) { return cudaHostAlloc(p, bytes, 0); }

cudaError_t cudaFreeHost(void *p)
{
    if (!p)
        return cudaSuccess;
    {
        std::lock_guard<std::mutex> g(mu);
        auto it = host_allocs.find((uintptr_t)p);
        if (it == host_allocs.end())
            return fail(cudaErrorInvalidValue, "cudaFreeHost(%p): not a live pinned pointer", p);
        host_allocs.erase(it);
    }
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    return copy(dst, src, bytes, kind, "cudaMemcpy");
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s)
{
    if (!emu_stream_ok(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    return copy(dst, src, bytes, kind, "cudaMemcpyAsync");
}

cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                         size_t height, cudaMemcpyKind kind)
{
    if (width > dpitch || width > spitch)
        return emu_set_error(cudaErrorInvalidValue);
    for (size_t r = 0; r < height; r++) {
        const cudaError_t e = copy((char *)dst + r * dpitch, (const char *)src + r * spitch,
                                   width, kind, "cudaMemcpy2D");
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t s)
{
    if (!emu_stream_ok(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    return cudaMemcpy2D(dst, dpitch, src, spitch, width, height, kind);
}

cudaError_t cudaMemset(void *p, int value, size_t bytes)
{
    if (bytes == 0)
        return cudaSuccess;
    if (!in_device(p, bytes))
        return fail(cudaErrorInvalidValue,
                    "cudaMemset: %p (+%zu bytes) is not inside one cudaMalloc allocation", p,
                    bytes);
    memset(p, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s)
{
    if (!emu_stream_ok(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    return cudaMemset(p, value, bytes);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    if (!free_bytes || !total_bytes)
        return emu_set_error(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> g(mu);
    *total_bytes = TOTAL_MEM;
    *free_bytes = TOTAL_MEM - dev_bytes;
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    if (!s || flags > cudaStreamNonBlocking)
        return emu_set_error(cudaErrorInvalidValue);
    emu_stream *st = new emu_stream{flags};
    std::lock_guard<std::mutex> g(mu);
    streams.insert(st);
    *s = st;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    std::lock_guard<std::mutex> g(mu);
    if (!s || !streams.erase(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    return emu_stream_ok(s) ? cudaSuccess : emu_set_error(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags)
{
    if (!emu_stream_ok(s) || !event_ok(e))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    return cudaSuccess;
}

cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void *user_data)
{
    if (!emu_stream_ok(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    if (!fn)
        return emu_set_error(cudaErrorInvalidValue);
    fn(user_data);
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    if (!e || flags > (cudaEventBlockingSync | cudaEventDisableTiming))
        return emu_set_error(cudaErrorInvalidValue);
    emu_event *ev = new emu_event{flags, false, 0.0};
    std::lock_guard<std::mutex> g(mu);
    events.insert(ev);
    *e = ev;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    if (!event_ok(e) || !emu_stream_ok(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    e->recorded = true;
    e->ms = now_ms();
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    return event_ok(e) ? cudaSuccess : emu_set_error(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (!ms)
        return emu_set_error(cudaErrorInvalidValue);
    if (!event_ok(start) || !event_ok(end) || (start->flags & cudaEventDisableTiming) ||
        (end->flags & cudaEventDisableTiming))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    if (!start->recorded || !end->recorded)
        return emu_set_error(cudaErrorInvalidResourceHandle);
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    std::lock_guard<std::mutex> g(mu);
    if (!e || !events.erase(e))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    delete e;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *n)
{
    if (!n)
        return emu_set_error(cudaErrorInvalidValue);
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev)
{
    return dev == 0 ? cudaSuccess : emu_set_error(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDevice(int *dev)
{
    if (!dev)
        return emu_set_error(cudaErrorInvalidValue);
    *dev = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev)
{
    if (!p)
        return emu_set_error(cudaErrorInvalidValue);
    if (dev != 0)
        return emu_set_error(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "saeforge-emu");
    p->totalGlobalMem = TOTAL_MEM;
    p->sharedMemPerBlock = 48 * 1024;
    p->sharedMemPerBlockOptin = 101376;
    p->sharedMemPerMultiprocessor = 102400;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024;
    p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 2147483647;
    p->maxGridSize[1] = 65535;
    p->maxGridSize[2] = 65535;
    p->maxThreadsPerMultiProcessor = 2048;
    p->multiProcessorCount = 4;
    p->major = 8;
    p->minor = 0;
    p->clockRate = 1000000;
    p->l2CacheSize = 4 << 20;
    p->totalConstMem = 65536;
    p->asyncEngineCount = 2;
    p->concurrentKernels = 1;
    return cudaSuccess;
}

cudaError_t emu_func_set_attribute(const void *func, cudaFuncAttribute attr, int value)
{
    if (!func)
        return emu_set_error(cudaErrorInvalidDeviceFunction);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > 101376)
            return fail(cudaErrorInvalidValue,
                        "cudaFuncSetAttribute: %d bytes of dynamic shared memory exceed "
                        "sharedMemPerBlockOptin (101376)",
                        value);
        return cudaSuccess;
    }
    if (attr == cudaFuncAttributePreferredSharedMemoryCarveout)
        return (value >= -1 && value <= 100) ? cudaSuccess : emu_set_error(cudaErrorInvalidValue);
    return emu_set_error(cudaErrorInvalidValue);
}

} /* extern "C" */
