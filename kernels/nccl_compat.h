/* NCCL for the .cu files: the real library under nvcc, the MPI-backed emulation of
 * kernels/emu/emu_nccl.h under g++ (-DSF_EMU); and the abort-on-error check for its calls. */
#ifndef NCCL_COMPAT_H
#define NCCL_COMPAT_H

#include "cuda_compat.h"

#ifdef SF_EMU
#include "emu/emu_nccl.h"
#else
#include <nccl.h>
#endif

#define NCCL_CHECK(call)                                                               \
    do {                                                                               \
        ncclResult_t sf_r_ = (call);                                                   \
        if (sf_r_ != ncclSuccess) {                                                    \
            fprintf(stderr, "saeforge: NCCL error '%s' in `%s` at %s:%d\n",            \
                    ncclGetErrorString(sf_r_), #call, __FILE__, __LINE__);             \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#endif
