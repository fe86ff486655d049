/* CUDA runtime API under emulation: device memory is host memory from malloc (so ASan sees
 * overruns) filled with 0xff bytes (NaN / -1) like uninitialised device memory; copies check
 * that the device side lies inside one cudaMalloc allocation and run in stream order
 * (emu_stream.cpp), with CUDA's rules for when the host side is read or written: pageable host
 * memory at the call, pinned memory when the queued copy runs. */
#include "emu_internal.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace {

const size_t TOTAL_MEM = (size_t)16 << 30;

std::mutex mu;
std::map<uintptr_t, size_t> dev_allocs;  /* base -> bytes */
std::map<uintptr_t, size_t> host_allocs; /* pinned */
size_t dev_bytes = 0;
__thread cudaError_t last_error = cudaSuccess;

/* Whether [p, p+n) lies inside one allocation of m (mu held). */
bool inside(const std::map<uintptr_t, size_t> &m, const void *p, size_t n)
{
    const uintptr_t a = (uintptr_t)p;
    auto it = m.upper_bound(a);
    if (it == m.begin())
        return false;
    --it;
    return a >= it->first && a - it->first <= it->second && n <= it->second - (a - it->first);
}

bool in_device(const void *p, size_t n)
{
    std::lock_guard<std::mutex> g(mu);
    return inside(dev_allocs, p, n);
}

bool pinned(const void *p, size_t n)
{
    std::lock_guard<std::mutex> g(mu);
    return inside(host_allocs, p, n);
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

/* A (possibly pitched) copy: `height` rows of `width` bytes. */
struct Copy {
    char *dst;
    const char *src;
    size_t dpitch, spitch, width, height;
    size_t dspan() const { return height ? (height - 1) * dpitch + width : 0; }
    size_t sspan() const { return height ? (height - 1) * spitch + width : 0; }
    void run() const
    {
        for (size_t r = 0; r < height; r++)
            memmove(dst + r * dpitch, src + r * spitch, width);
    }
};

/* Checks c (a copy of kind `kind`) and says which sides are device memory; cudaMemcpyDefault
 * asks the allocation maps, as unified addressing does. */
cudaError_t check_copy(const Copy &c, cudaMemcpyKind kind, const char *what, bool *dst_dev,
                       bool *src_dev)
{
    if ((unsigned)kind > (unsigned)cudaMemcpyDefault)
        return fail(cudaErrorInvalidMemcpyDirection, "%s: kind %d is not a cudaMemcpyKind", what,
                    (int)kind);
    if (!c.dst || !c.src)
        return fail(cudaErrorInvalidValue, "%s: null pointer", what);
    if (kind == cudaMemcpyDefault) {
        *dst_dev = in_device(c.dst, c.dspan());
        *src_dev = in_device(c.src, c.sspan());
        return cudaSuccess;
    }
    *dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    *src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (*dst_dev && !in_device(c.dst, c.dspan()))
        return fail(cudaErrorInvalidValue,
                    "%s: destination %p (+%zu bytes) is not inside one cudaMalloc allocation",
                    what, (void *)c.dst, c.dspan());
    if (*src_dev && !in_device(c.src, c.sspan()))
        return fail(cudaErrorInvalidValue,
                    "%s: source %p (+%zu bytes) is not inside one cudaMalloc allocation", what,
                    (const void *)c.src, c.sspan());
    return cudaSuccess;
}

/* A synchronous copy: an op of the legacy stream, so after the work it waits for; CUDA may
 * return from some of these (device to device) before the copy ran, here they complete. */
cudaError_t sync_copy(const Copy &c, cudaMemcpyKind kind, const char *what)
{
    if (c.width == 0 || c.height == 0)
        return cudaSuccess;
    bool dd = false, sd = false;
    const cudaError_t e = check_copy(c, kind, what, &dd, &sd);
    if (e != cudaSuccess)
        return e;
    emu_legacy_drain();
    c.run();
    return cudaSuccess;
}

cudaError_t async_copy(const Copy &c, cudaMemcpyKind kind, cudaStream_t s, const char *what)
{
    if (!emu_stream_ok(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    if (c.width == 0 || c.height == 0)
        return cudaSuccess;
    bool dd = false, sd = false;
    const cudaError_t e = check_copy(c, kind, what, &dd, &sd);
    if (e != cudaSuccess)
        return e;
    /* into pageable memory, or host to host: CUDA returns only once the copy is done */
    if (!dd && (!sd || !pinned(c.dst, c.dspan()))) {
        emu_stream_drain(s);
        c.run();
        return cudaSuccess;
    }
    /* from pageable memory: CUDA stages the source before returning, so read it now */
    if (!sd && !pinned(c.src, c.sspan()) && emu_streams_deferred()) {
        auto staged = std::make_shared<std::vector<char>>(c.src, c.src + c.sspan());
        emu_enqueue(s, [c, staged]() {
            Copy from = c;
            from.src = staged->data();
            from.run();
        });
        return cudaSuccess;
    }
    emu_enqueue(s, [c]() { c.run(); });
    return cudaSuccess;
}

cudaError_t check_memset(void *p, size_t bytes, const char *what)
{
    if (!in_device(p, bytes))
        return fail(cudaErrorInvalidValue,
                    "%s: %p (+%zu bytes) is not inside one cudaMalloc allocation", what, p, bytes);
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

/* cudaFree and cudaFreeHost synchronise the device, as in CUDA: queued work may use p. */
cudaError_t cudaFree(void *p)
{
    if (!p)
        return cudaSuccess;
    emu_drain_all();
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
    emu_drain_all();
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
    return sync_copy(Copy{(char *)dst, (const char *)src, bytes, bytes, bytes, 1}, kind,
                     "cudaMemcpy");
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s)
{
    return async_copy(Copy{(char *)dst, (const char *)src, bytes, bytes, bytes, 1}, kind, s,
                      "cudaMemcpyAsync");
}

cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                         size_t height, cudaMemcpyKind kind)
{
    if (width > dpitch || width > spitch)
        return emu_set_error(cudaErrorInvalidValue);
    return sync_copy(Copy{(char *)dst, (const char *)src, dpitch, spitch, width, height}, kind,
                     "cudaMemcpy2D");
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t s)
{
    if (width > dpitch || width > spitch)
        return emu_set_error(cudaErrorInvalidValue);
    return async_copy(Copy{(char *)dst, (const char *)src, dpitch, spitch, width, height}, kind,
                      s, "cudaMemcpy2DAsync");
}

/* Synchronous here; CUDA may return before a memset of device memory ran. */
cudaError_t cudaMemset(void *p, int value, size_t bytes)
{
    if (bytes == 0)
        return cudaSuccess;
    const cudaError_t e = check_memset(p, bytes, "cudaMemset");
    if (e != cudaSuccess)
        return e;
    emu_legacy_drain();
    memset(p, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s)
{
    if (!emu_stream_ok(s))
        return emu_set_error(cudaErrorInvalidResourceHandle);
    if (bytes == 0)
        return cudaSuccess;
    const cudaError_t e = check_memset(p, bytes, "cudaMemsetAsync");
    if (e != cudaSuccess)
        return e;
    emu_enqueue(s, [p, value, bytes]() { memset(p, value, bytes); });
    return cudaSuccess;
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
