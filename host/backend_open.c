/* Backend choice for the host (built three ways by the Makefile: plain CPU, CUDA, emulated CUDA). */
#include <stdio.h>

#include "backend_open.h"

sae_backend *backend_open(const sae_hparams *hp, int max_B, int kind, int threads, char *why,
                          int len)
{
    if (why && len > 0)
        why[0] = '\0';
    if (kind == 1)
        return backend_cpu_new(hp, max_B, threads);
#if !defined(SF_WITH_CUDA)
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
        return backend_cuda_new(hp, max_B, 0, why, len);
    return backend_cpu_new(hp, max_B, threads);
#else
    if (kind == 2)
        return backend_cuda_new(hp, max_B, 0, why, len);
    char reason[256];
    sae_backend *be = backend_cuda_new(hp, max_B, 0, reason, (int)sizeof reason);
    if (be)
        return be;
    fprintf(stderr, "saeforge: no usable GPU (%s); training on the CPU\n", reason);
    return backend_cpu_new(hp, max_B, threads);
#endif
}
