/* 16-bit batch inputs widened on the device (CUDA twin of input16_widen_cpu), as the host stream would. */
#include "devutil.cuh"
#include "input16.cuh"

/* data/shard.c's conversion as bit moves (a subnormal f16 is an exact product, nothing rounds),
 * so the scale's one non-contracted product gives the bits of data/stream.c's x[i] * scale. */
static __device__ inline float widen_one(unsigned h, int bf16)
{
    if (bf16)
        return __uint_as_float(h << 16);
    const unsigned sign = (h >> 15) << 31, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) {
        const float v = sf_fmul(__uint2float_rn(man), 0x1p-24f); /* exact: man < 2^10 */
        return sign ? -v : v;
    }
    if (exp == 31)
        return __uint_as_float(sign | 0x7f800000u | (man << 13)); /* NaN keeps its payload */
    return __uint_as_float(sign | ((exp - 15u + 127u) << 23) | (man << 13));
}

/* Two values per thread: one 32-bit load, one 64-bit store (an odd count's last value is
 * taken alone). */
static __global__ void widen_kernel(const uint16_t *h, long long count, int bf16, float scale,
                                    float *out)
{
    const long long pairs = count / 2;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const int mul = scale != 1.0f;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < pairs; p += stride) {
        const unsigned two = ((const unsigned *)h)[p];
        float a = widen_one(two & 0xffffu, bf16), b = widen_one(two >> 16, bf16);
        if (mul) {
            a = sf_fmul(a, scale);
            b = sf_fmul(b, scale);
        }
        ((float2 *)out)[p] = make_float2(a, b);
    }
    if ((count & 1) && blockIdx.x == 0 && threadIdx.x == 0) {
        const float v = widen_one(h[count - 1], bf16);
        out[count - 1] = mul ? sf_fmul(v, scale) : v;
    }
}

extern "C" void input16_widen_cuda(const uint16_t *h, long long count, sae_input_dtype dtype,
                                   float scale, float *out, cudaStream_t stream)
{
    if (count <= 0)
        return;
    long long blocks = (count / 2 + 255) / 256;
    if (blocks > 4096)
        blocks = 4096;
    SF_LAUNCH(widen_kernel, (int)(blocks > 0 ? blocks : 1), 256, 0, stream, h, count,
              dtype == SAE_INPUT_BF16 ? 1 : 0, scale, out);
}
