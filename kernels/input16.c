/* 16-bit batch inputs on the host (input16.h): exact narrowing with a round-trip check, widen CPU twin. */
#include "input16.h"

#include <omp.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define INPUT16_X86 1
#endif

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* data/shard.c's shard_f16_to_f32, bit for bit: the device kernel and the stream must agree. */
float input16_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h >> 15) << 31;
    const uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        const float v = (float)man * 0x1p-24f; /* exact: at most 10 significant bits */
        return sign ? -v : v;
    }
    if (exp == 31)
        return u2f(sign | 0x7f800000u | (man << 13)); /* inf, or NaN keeping its payload */
    return u2f(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

float input16_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

void input16_widen_cpu(const uint16_t *h, size_t count, sae_input_dtype dtype, float scale,
                       float *out)
{
    for (size_t i = 0; i < count; i++) {
        const float v =
            dtype == SAE_INPUT_BF16 ? input16_bf16_to_f32(h[i]) : input16_f16_to_f32(h[i]);
        out[i] = scale == 1.0f ? v : v * scale;
    }
}

/* The f16 pattern of u when u is an f16 value; any pattern otherwise (the caller's round trip
 * then differs). */
static uint16_t f16_bits_of(uint32_t u)
{
    const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf, NaN: a NaN with a payload only in the low 13 bits fails */
        return (uint16_t)(sign | 0x7c00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x38800000u) /* the f16 normal range (and above, which comes back different) */
        return (uint16_t)(sign | (((a - 0x38000000u) >> 13) & 0x7fffu));
    const float units = u2f(a) * 0x1p24f; /* subnormal f16: an integer count of 2^-24 */
    return (uint16_t)(sign | (units < 1024.0f ? (uint32_t)units : 0x3ffu));
}

static int narrow_f16_scalar(const float *v, size_t count, uint16_t *out)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < count; i++) {
        const uint32_t u = f2u(v[i]);
        const uint16_t h = f16_bits_of(u);
        out[i] = h;
        bad |= f2u(input16_f16_to_f32(h)) ^ u;
    }
    return bad == 0;
}

static int narrow_bf16_scalar(const float *restrict v, size_t count, uint16_t *restrict out)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < count; i++) {
        const uint32_t u = f2u(v[i]);
        bad |= u & 0xffffu;
        out[i] = (uint16_t)(u >> 16);
    }
    return bad == 0;
}

#ifdef INPUT16_X86
/* Eight values per instruction each way; the back-converted values must equal the inputs bit for
 * bit (xor), which is the exactness check. */
__attribute__((target("avx,f16c"))) static int narrow_f16_f16c(const float *v, size_t count,
                                                               uint16_t *out)
{
    __m256 acc = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        const __m256 a0 = _mm256_loadu_ps(v + i), a1 = _mm256_loadu_ps(v + i + 8);
        const __m128i h0 = _mm256_cvtps_ph(a0, _MM_FROUND_TO_NEAREST_INT);
        const __m128i h1 = _mm256_cvtps_ph(a1, _MM_FROUND_TO_NEAREST_INT);
        acc = _mm256_or_ps(acc, _mm256_xor_ps(a0, _mm256_cvtph_ps(h0)));
        acc = _mm256_or_ps(acc, _mm256_xor_ps(a1, _mm256_cvtph_ps(h1)));
        _mm_storeu_si128((__m128i *)(void *)(out + i), h0);
        _mm_storeu_si128((__m128i *)(void *)(out + i + 8), h1);
    }
    const __m256i bits = _mm256_castps_si256(acc);
    const int ok = _mm256_testz_si256(bits, bits);
    return narrow_f16_scalar(v + i, count - i, out + i) && ok;
}

/* Sixteen values per step: the low halves must be zero, the high halves are the bf16 values. */
__attribute__((target("avx2"))) static int narrow_bf16_avx2(const float *v, size_t count,
                                                            uint16_t *out)
{
    const __m256i low = _mm256_set1_epi32(0xffff);
    __m256i acc = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        const __m256i a0 = _mm256_loadu_si256((const __m256i *)(const void *)(v + i));
        const __m256i a1 = _mm256_loadu_si256((const __m256i *)(const void *)(v + i + 8));
        acc = _mm256_or_si256(acc, _mm256_and_si256(_mm256_or_si256(a0, a1), low));
        /* packus works per 128-bit lane: (a0 lo, a1 lo, a0 hi, a1 hi) -> reorder the quads */
        const __m256i p = _mm256_packus_epi32(_mm256_srli_epi32(a0, 16), _mm256_srli_epi32(a1, 16));
        _mm256_storeu_si256((__m256i *)(void *)(out + i), _mm256_permute4x64_epi64(p, 0xd8));
    }
    const int ok = _mm256_testz_si256(acc, acc);
    return narrow_bf16_scalar(v + i, count - i, out + i) && ok;
}

#endif

int input16_narrow_portable(const float *v, size_t count, sae_input_dtype dtype, uint16_t *out)
{
    return dtype == SAE_INPUT_BF16 ? narrow_bf16_scalar(v, count, out)
                                   : narrow_f16_scalar(v, count, out);
}

/* One thread's share of input16_narrow. */
static int narrow_part(const float *v, size_t count, sae_input_dtype dtype, uint16_t *out)
{
#ifdef INPUT16_X86
    /* the CPU's feature bits, read in place: no cache for two threads to race on */
    if (dtype == SAE_INPUT_BF16 && __builtin_cpu_supports("avx2"))
        return narrow_bf16_avx2(v, count, out);
    if (dtype == SAE_INPUT_F16 && __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c"))
        return narrow_f16_f16c(v, count, out);
#endif
    return input16_narrow_portable(v, count, dtype, out);
}

/* A batch is millions of values and this runs on the host between two GPU steps: a few threads
 * share it (elementwise, so the result does not depend on the split). Only a quarter of the
 * cores: a parallel region ends with its slowest thread, and one that waits for a core held by
 * the stream's reader or another job costs a time slice (measured 10x slower on 2 busy cores). */
#define NARROW_PAR_MIN ((size_t)1 << 20)
#define NARROW_MAX_THREADS 4
#define NARROW_ALIGN 16 /* values per SIMD step: shares start on a multiple */

int input16_narrow(const float *v, size_t count, sae_input_dtype dtype, uint16_t *out)
{
    const int nt = omp_get_num_procs() / 4;
    return input16_narrow_threads(v, count, dtype, out,
                                  nt < NARROW_MAX_THREADS ? nt : NARROW_MAX_THREADS);
}

int input16_narrow_threads(const float *v, size_t count, sae_input_dtype dtype, uint16_t *out,
                           int nt)
{
    if (count < NARROW_PAR_MIN || nt < 2)
        return narrow_part(v, count, dtype, out);
    const size_t share = (count / (size_t)nt + NARROW_ALIGN - 1) / NARROW_ALIGN * NARROW_ALIGN;
    int ok = 1;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(& : ok)
    for (int p = 0; p < nt; p++) {
        const size_t lo = (size_t)p * share, hi = lo + share < count ? lo + share : count;
        if (lo < hi)
            ok &= narrow_part(v + lo, hi - lo, dtype, out + lo);
    }
    return ok;
}
