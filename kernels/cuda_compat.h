/* What every .cu includes: real CUDA + cuBLAS under nvcc (or a C host file of a CUDA build),
 * the emulator of kernels/emu/ under g++ (-DSF_EMU). Also the launch/shared-memory macros and
 * the abort-on-error checks, so the same kernel source builds both ways. */
#ifndef CUDA_COMPAT_H
#define CUDA_COMPAT_H

#include <stdio.h>
#include <stdlib.h>

#ifdef SF_EMU
#include "emu/emu.h" /* runtime, cuBLAS and (in C++) device-side emulation */
#else
#include <cublas_v2.h>
#include <cuda_runtime.h>
#ifdef __CUDACC__
#include <cuda_bf16.h>
#endif
#endif

#define CUDA_CHECK(call)                                                               \
    do {                                                                               \
        cudaError_t sf_e_ = (call);                                                    \
        if (sf_e_ != cudaSuccess) {                                                    \
            fprintf(stderr, "saeforge: CUDA error '%s' in `%s` at %s:%d\n",            \
                    cudaGetErrorString(sf_e_), #call, __FILE__, __LINE__);             \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#define CUBLAS_CHECK(call)                                                             \
    do {                                                                               \
        cublasStatus_t sf_s_ = (call);                                                 \
        if (sf_s_ != CUBLAS_STATUS_SUCCESS) {                                          \
            fprintf(stderr, "saeforge: cuBLAS error %d in `%s` at %s:%d\n",            \
                    (int)sf_s_, #call, __FILE__, __LINE__);                            \
            abort();                                                                   \
        }                                                                              \
    } while (0)

/* SF_LAUNCH(kernel, grid, block, shmem_bytes, stream, args...) launches and checks. */
#if defined(__CUDACC__)
#define SF_LAUNCH(kernel, grid, block, shmem, stream, ...)                             \
    do {                                                                               \
        kernel<<<(grid), (block), (shmem), (stream)>>>(__VA_ARGS__);                   \
        CUDA_CHECK(cudaGetLastError());                                                \
    } while (0)
/* SF_DYN_SHARED(type, name): the block's dynamic shared memory as `type *name`. */
#define SF_DYN_SHARED(type, name) extern __shared__ type name[]
#elif defined(SF_EMU) && defined(__cplusplus)
/* The arguments are evaluated and converted to the kernel's parameter types here, at the
 * launch, as <<<>>> does; the kernel may run later (emulated stream order). */
#define SF_LAUNCH(kernel, grid, block, shmem, stream, ...)                             \
    do {                                                                               \
        emu_kernel(#kernel, __FILE__, __LINE__, dim3(grid), dim3(block), (shmem),       \
                   (stream), kernel)(__VA_ARGS__);                                     \
        CUDA_CHECK(cudaGetLastError());                                                \
    } while (0)
#define SF_DYN_SHARED(type, name) type *name = (type *)emu_dynamic_shared()
#endif

#endif
