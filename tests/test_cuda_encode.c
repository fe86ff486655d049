/* Parity of the encoder kernels (encode.cu) with their CPU twins (encode.c) and with a double
 * reference: fp32 tight, tf32 loose, bf16 against the product of the bf16-rounded inputs.
 * Built against the emulator (make test) and against real CUDA (make test-gpu). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda_compat.h"
#include "kernels/encode.cuh"
#include "kernels/encode.h"

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 7; }
static float rng_sym(void) /* [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

/* Round-to-nearest-even to bf16 (the bits), as __float2bfloat16_rn does for finite values. */
static uint16_t bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))
        return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float bf16_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float *to_device(const float *h, size_t count)
{
    float *d;
    CUDA_CHECK(cudaMalloc((void **)&d, count * sizeof(float)));
    CUDA_CHECK(cudaMemcpy(d, h, count * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}

static float *to_host(const float *d, size_t count)
{
    float *h = malloc(count * sizeof(float));
    CUDA_CHECK(cudaMemcpy(h, d, count * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

/* |got - ref| <= atol + rtol*|ref| everywhere, with atol scaled by the row's sum |u_j w_j|
 * (the natural size of the rounding error of a dot product). */
static void expect_close(const float *got, const double *ref, const double *absdot, size_t count,
                         double rtol, double atol_rel, const char *what)
{
    for (size_t t = 0; t < count; t++) {
        const double tol = atol_rel * absdot[t] + rtol * fabs(ref[t]) + 1e-30;
        if (!(fabs((double)got[t] - ref[t]) <= tol))
            cr_assert_fail("%s: entry %zu is %.9g, reference %.9g (tolerance %.3g)", what, t, got[t],
                     ref[t], tol);
    }
}

static void run_encode(int B, int d, int n, uint64_t seed)
{
    rng_seed(seed);
    const size_t xc = (size_t)B * d, wc = (size_t)n * d, pc = (size_t)B * n;
    float *x = malloc(xc * sizeof(float)), *W = malloc(wc * sizeof(float));
    float *b_enc = malloc((size_t)n * sizeof(float)), *b_dec = malloc((size_t)d * sizeof(float));
    for (size_t t = 0; t < xc; t++)
        x[t] = 2.0f * rng_sym();
    for (size_t t = 0; t < wc; t++)
        W[t] = rng_sym();
    for (int i = 0; i < n; i++)
        b_enc[i] = 0.5f * rng_sym();
    for (int j = 0; j < d; j++)
        b_dec[j] = 0.3f * rng_sym();

    /* CPU twin */
    float *u_ref = malloc(xc * sizeof(float)), *pre_ref = malloc(pc * sizeof(float));
    enc_forward_cpu(x, W, b_enc, b_dec, B, d, n, u_ref, pre_ref);

    /* double references: exact inputs, and bf16-rounded inputs */
    uint16_t *Wh = malloc(wc * sizeof(uint16_t));
    for (size_t t = 0; t < wc; t++)
        Wh[t] = bf16_bits(W[t]);
    double *ref = malloc(pc * sizeof(double)), *ref_bf = malloc(pc * sizeof(double));
    double *absdot = malloc(pc * sizeof(double)), *absdot_bf = malloc(pc * sizeof(double));
    double *twin = malloc(pc * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < n; i++) {
            double s = b_enc[i], sa = fabs(b_enc[i]), sb = b_enc[i], sba = fabs(b_enc[i]);
            for (int j = 0; j < d; j++) {
                const float uj = x[(size_t)b * d + j] - b_dec[j];
                const double p = (double)uj * W[(size_t)i * d + j];
                const double pb = (double)bf16_float(bf16_bits(uj)) * bf16_float(Wh[(size_t)i * d + j]);
                s += p, sa += fabs(p), sb += pb, sba += fabs(pb);
            }
            const size_t t = (size_t)b * n + i;
            ref[t] = s, absdot[t] = sa, ref_bf[t] = sb, absdot_bf[t] = sba;
            twin[t] = pre_ref[t];
        }
    expect_close(pre_ref, ref, absdot, pc, 0.0, 1e-5, "CPU twin vs double reference");

    float *d_x = to_device(x, xc), *d_W = to_device(W, wc), *d_be = to_device(b_enc, (size_t)n);
    float *d_bd = to_device(b_dec, (size_t)d);
    float *d_u, *d_pre;
    uint16_t *d_Wh;
    CUDA_CHECK(cudaMalloc((void **)&d_u, xc * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&d_pre, pc * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&d_Wh, wc * sizeof(uint16_t)));
    size_t wsb = enc_workspace_bytes(B, d, SAE_PREC_BF16);
    cr_assert_geq(wsb, xc * 2);
    cr_assert_eq(enc_workspace_bytes(B, d, SAE_PREC_FP32), 0);
    void *d_ws;
    CUDA_CHECK(cudaMalloc(&d_ws, wsb));
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreate(&stream));
    cublasHandle_t h;
    CUBLAS_CHECK(cublasCreate(&h));

    /* bf16 shadow: exact round-to-nearest-even bits */
    enc_shadow_bf16_cuda(d_W, (long long)wc, d_Wh, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    uint16_t *Wh_got = malloc(wc * sizeof(uint16_t));
    CUDA_CHECK(cudaMemcpy(Wh_got, d_Wh, wc * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    for (size_t t = 0; t < wc; t++)
        if (Wh_got[t] != Wh[t])
            cr_assert_fail("bf16 shadow entry %zu: %04x, expected %04x (from %.9g)", t, Wh_got[t], Wh[t], W[t]);

    const sae_precision precs[3] = {SAE_PREC_FP32, SAE_PREC_TF32, SAE_PREC_BF16};
    for (int q = 0; q < 3; q++) {
        CUDA_CHECK(cudaMemsetAsync(d_pre, 0xff, pc * sizeof(float), stream)); /* NaN garbage */
        enc_forward_cuda(d_x, d_W, precs[q] == SAE_PREC_BF16 ? d_Wh : NULL, d_be, d_bd, B, d, n,
                         d_u, d_pre, precs[q], precs[q] == SAE_PREC_BF16 ? d_ws : NULL, h, stream);
        CUDA_CHECK(cudaStreamSynchronize(stream));
        float *u = to_host(d_u, xc), *pre = to_host(d_pre, pc);
        cr_assert(memcmp(u, u_ref, xc * sizeof(float)) == 0, "u differs from the CPU twin (prec %d)", q);
        char what[80];
        snprintf(what, sizeof what, "enc_forward B=%d d=%d n=%d prec=%d", B, d, n, (int)precs[q]);
        if (precs[q] == SAE_PREC_FP32) {
            expect_close(pre, ref, absdot, pc, 0.0, 1e-5, what);
            expect_close(pre, twin, absdot, pc, 0.0, 2e-5, what);
        } else if (precs[q] == SAE_PREC_TF32) {
            /* tf32 keeps 10 mantissa bits of each input: error <= ~2^-10 of sum |u_j w_j| */
            expect_close(pre, ref, absdot, pc, 0.0, 2e-3, what);
        } else {
            expect_close(pre, ref_bf, absdot_bf, pc, 0.0, 1e-5, what);
            expect_close(pre, ref, absdot, pc, 0.0, 1.6e-2, what);
        }
        free(u), free(pre);
    }

    CUBLAS_CHECK(cublasDestroy(h));
    CUDA_CHECK(cudaStreamDestroy(stream));
    CUDA_CHECK(cudaFree(d_x));
    CUDA_CHECK(cudaFree(d_W));
    CUDA_CHECK(cudaFree(d_be));
    CUDA_CHECK(cudaFree(d_bd));
    CUDA_CHECK(cudaFree(d_u));
    CUDA_CHECK(cudaFree(d_pre));
    CUDA_CHECK(cudaFree(d_Wh));
    CUDA_CHECK(cudaFree(d_ws));
    free(x), free(W), free(b_enc), free(b_dec), free(u_ref), free(pre_ref), free(Wh), free(Wh_got);
    free(ref), free(ref_bf), free(absdot), free(absdot_bf), free(twin);
}

Test(cuda_encode, aligned) { run_encode(64, 64, 1024, 1); }
Test(cuda_encode, odd_shape) { run_encode(7, 33, 333, 2); }

static void run_gate(int B, int d, int n, uint64_t seed)
{
    rng_seed(seed);
    const size_t gc = (size_t)B * d, wc = (size_t)n * d, pc = (size_t)B * n;
    float *g = malloc(gc * sizeof(float)), *W = malloc(wc * sizeof(float));
    for (size_t t = 0; t < gc; t++)
        g[t] = rng_sym();
    for (size_t t = 0; t < wc; t++)
        W[t] = rng_sym();
    float *gate_ref = malloc(pc * sizeof(float));
    gate_forward_cpu(g, W, B, d, n, gate_ref);
    double *ref = malloc(pc * sizeof(double)), *absdot = malloc(pc * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < n; i++) {
            double s = 0, sa = 0;
            for (int j = 0; j < d; j++) {
                const double p = (double)g[(size_t)b * d + j] * W[(size_t)i * d + j];
                s += p, sa += fabs(p);
            }
            ref[(size_t)b * n + i] = fabs(s);
            absdot[(size_t)b * n + i] = sa;
        }
    double *twin = malloc(pc * sizeof(double));
    for (size_t t = 0; t < pc; t++) {
        twin[t] = gate_ref[t];
        cr_assert(gate_ref[t] >= 0.0f);
    }
    float *d_g = to_device(g, gc), *d_W = to_device(W, wc), *d_gate;
    CUDA_CHECK(cudaMalloc((void **)&d_gate, pc * sizeof(float)));
    cublasHandle_t h;
    CUBLAS_CHECK(cublasCreate(&h));
    const sae_precision precs[2] = {SAE_PREC_FP32, SAE_PREC_TF32};
    for (int q = 0; q < 2; q++) {
        gate_forward_cuda(d_g, d_W, B, d, n, d_gate, precs[q], h, 0);
        CUDA_CHECK(cudaDeviceSynchronize());
        float *gate = to_host(d_gate, pc);
        for (size_t t = 0; t < pc; t++)
            cr_assert(gate[t] >= 0.0f, "gate[%zu] = %g is negative", t, gate[t]);
        if (precs[q] == SAE_PREC_FP32) {
            expect_close(gate, ref, absdot, pc, 0.0, 1e-5, "gate fp32 vs double");
            expect_close(gate, twin, absdot, pc, 0.0, 2e-5, "gate fp32 vs CPU twin");
        } else {
            expect_close(gate, ref, absdot, pc, 0.0, 2e-3, "gate tf32 vs double");
        }
        free(gate);
    }
    CUBLAS_CHECK(cublasDestroy(h));
    CUDA_CHECK(cudaFree(d_g));
    CUDA_CHECK(cudaFree(d_W));
    CUDA_CHECK(cudaFree(d_gate));
    free(g), free(W), free(gate_ref), free(ref), free(absdot), free(twin);
}

Test(cuda_encode, gate_aligned) { run_gate(64, 64, 1024, 3); }
Test(cuda_encode, gate_odd_shape) { run_gate(7, 33, 333, 4); }
