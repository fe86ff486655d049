/* 16-bit batch inputs widened on the device (input16.cu): the CUDA twin of input16_widen_cpu. */
#ifndef INPUT16_CUH
#define INPUT16_CUH

#include <stdint.h>

#include "cuda_compat.h"
#include "sae_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[i] = float(h[i]) * scale on stream: input16_widen_cpu bit for bit (no multiply when
 * scale == 1). count may be 0; h 4-byte and out 8-byte aligned (cudaMalloc'd). */
void input16_widen_cuda(const uint16_t *h, // (count) device
                        long long count, sae_input_dtype dtype, float scale,
                        float *out,        // (count) device out
                        cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
