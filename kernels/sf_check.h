/* Always-on checks for programmer, CUDA and cuBLAS errors: abort naming statement, file and line. */
#ifndef SF_CHECK_H
#define SF_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define SF_CHECK(cond)                                                          \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "saeforge: internal error: check `%s` failed at %s:%d\n", \
                    #cond, __FILE__, __LINE__);                                 \
            abort();                                                            \
        }                                                                       \
    } while (0)

/* CUDA_CHECK / CUBLAS_CHECK live in kernels/cuda_compat.h (they need the CUDA types). */

#endif
