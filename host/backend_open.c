/* Backend choice for the host (built three ways by the Makefile: plain CPU, CUDA, emulated CUDA). */
#include <stdio.h>

#include "backend_open.h"
#include "memcheck.h"

#if defined(SF_WITH_CUDA) && !defined(SF_EMU)
#include <cuda_runtime_api.h>
#endif

/* Defined here rather than in memcheck.c: this file is the one built per variant. */
int64_t memcheck_cuda_bytes(const sae_hparams *hp, int max_B)
{
#if defined(SF_WITH_CUDA)
    return backend_cuda_bytes(hp, max_B);
#else
    (void)hp;
    (void)max_B;
    return 0;
#endif
}

/* Free memory of device 0, or -1 when there is no device to ask (CPU and emulated builds,
 * no GPU): the memory check then skips the device side. */
int64_t memcheck_cuda_available(void)
{
#if defined(SF_WITH_CUDA) && !defined(SF_EMU)
    size_t fr = 0, tot = 0;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count < 1 || cudaSetDevice(0) != cudaSuccess ||
        cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        cudaGetLastError(); /* clear it: the backend reports the GPU's state itself */
        return -1;
    }
    return (int64_t)fr;
#else
    return -1;
#endif
}

int backend_open_dist_device(const sae_dist *dd)
{
#if defined(SF_WITH_CUDA)
    return backend_cuda_dist_device(dd);
#else
    return sae_dist_on(dd) ? dd->local_rank : 0;
#endif
}

sae_backend *backend_open(const sae_hparams *hp, int max_B, int kind, int threads, char *why,
                          int len)
{
    return backend_open_on(hp, max_B, kind, threads, 0, why, len);
}

sae_backend *backend_open_on(const sae_hparams *hp, int max_B, int kind, int threads, int device,
                             char *why, int len)
{
    if (why && len > 0)
        why[0] = '\0';
    if (kind == 1)
        return backend_cpu_new(hp, max_B, threads);
#if !defined(SF_WITH_CUDA)
    (void)device;
    if (kind == 2) {
        snprintf(why, (size_t)len,
                 "this saeforge was built without CUDA; build it with `make cuda` and run "
                 "build/cuda/saeforge");
        return NULL;
    }
    fprintf(stderr, "saeforge: no CUDA in this build; training on the CPU\n");
    return backend_cpu_new(hp, max_B, threads);
#elif defined(SF_EMU)
    /* The emulator runs the CUDA kernels on the CPU for tests: only an explicit request uses it. */
    if (kind == 2)
        return backend_cuda_new(hp, max_B, device, why, len);
    return backend_cpu_new(hp, max_B, threads);
#else
    if (kind == 2)
        return backend_cuda_new(hp, max_B, device, why, len);
    char reason[256];
    sae_backend *be = backend_cuda_new(hp, max_B, device, reason, (int)sizeof reason);
    if (be)
        return be;
    fprintf(stderr, "saeforge: no usable GPU (%s); training on the CPU\n", reason);
    return backend_cpu_new(hp, max_B, threads);
#endif
}
