/* 16-bit batch inputs, host side: exact narrowing of f16/bf16-valued floats, CPU twin of input16.cu. */
#ifndef INPUT16_H
#define INPUT16_H

#include <stddef.h>
#include <stdint.h>

#include "sae_types.h"

/* out[i] = v[i] as a dtype (SAE_INPUT_F16 or SAE_INPUT_BF16) bit pattern. Returns 1 when every
 * value was exact: input16_widen_cpu(out) gives v back bit for bit (signed zeros, subnormals,
 * infinities and quiet NaNs included); 0 when some value is not a dtype value, out is then
 * unspecified. An f16 signalling NaN may count as not exact (the F16C conversion quiets it); the
 * data stream never hands over a NaN. Uses F16C / AVX2 where the CPU has them. */
int input16_narrow(const float *v, size_t count, sae_input_dtype dtype,
                   uint16_t *out); // (count) out

/* input16_narrow on `threads` threads (it picks a quarter of the cores, at most 4; batches under
 * 2^20 values always take one): exposed for tests and benches. */
int input16_narrow_threads(const float *v, size_t count, sae_input_dtype dtype, uint16_t *out,
                           int threads);

/* input16_narrow without SIMD: what it falls back to on a CPU without F16C / AVX2 (exposed for
 * tests). A signalling NaN counts as exact here. */
int input16_narrow_portable(const float *v, size_t count, sae_input_dtype dtype, uint16_t *out);

/* out[i] = float(h[i]) * scale, the widen of input16.cuh's kernel: the float data/shard.c's
 * conversion gives (NaNs keep their payload), times scale as one float product unless
 * scale == 1 (then no multiply, so every pattern comes back bit for bit). A NaN times a scale is
 * some NaN (the device's is the canonical one): the data stream never hands over NaN rows. */
void input16_widen_cpu(const uint16_t *h, size_t count, sae_input_dtype dtype, float scale,
                       float *out); // (count) out

/* The conversion of one value (the scalar path of both functions above). */
float input16_f16_to_f32(uint16_t h);
float input16_bf16_to_f32(uint16_t h);

#endif
