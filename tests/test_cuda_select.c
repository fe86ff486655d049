/* Parity of the selection kernels (select.cu, bselect.cu) with their CPU twins (select.c):
 * indices and values must match exactly. Built against the emulator (make test) and against
 * real CUDA (make test-gpu), so only the CUDA runtime API is used. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/bselect.cuh"
#include "kernels/cuda_compat.h"
#include "kernels/select.cuh"
#include "kernels/select.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static uint32_t rng_u32(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}
static float rng_unif(void) { return (float)((rng_u32() >> 8) * (1.0 / 16777216.0)); } /* [0,1) */
static float rng_normal(void)
{
    float u1 = rng_unif() + 1e-7f, u2 = rng_unif();
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

enum fill_mode {
    FILL_NORMAL,   /* continuous, about half positive */
    FILL_TIES,     /* a few quantised levels: many exact ties */
    FILL_FEWPOS,   /* mostly negative: rows have fewer than k positives */
    FILL_SPECIAL,  /* denormals, zeros of both signs, inf, NaN mixed in */
    FILL_DENORM,   /* only tiny (denormal) positives and negatives */
};

static void fill(float *v, size_t count, enum fill_mode m)
{
    for (size_t t = 0; t < count; t++) {
        float x = rng_normal();
        switch (m) {
        case FILL_NORMAL:
            break;
        case FILL_TIES:
            x = floorf(x * 2.0f) * 0.5f;
            break;
        case FILL_FEWPOS:
            x = rng_unif() < 0.03f ? fabsf(x) + 0.01f : -fabsf(x);
            break;
        case FILL_SPECIAL: {
            uint32_t r = rng_u32() % 16;
            if (r == 0)
                x = 1e-40f * (float)(rng_u32() % 7);
            else if (r == 1)
                x = -0.0f;
            else if (r == 2)
                x = 0.0f;
            else if (r == 3 && rng_u32() % 8 == 0)
                x = INFINITY;
            else if (r == 4 && rng_u32() % 8 == 0)
                x = NAN;
            break;
        }
        case FILL_DENORM:
            x = (float)((int)(rng_u32() % 41) - 20) * 1e-44f;
            break;
        }
        v[t] = x;
    }
}

static void *dup_to_device(const void *h, size_t bytes)
{
    void *d = NULL;
    CUDA_CHECK(cudaMalloc(&d, bytes > 0 ? bytes : 4));
    if (bytes)
        CUDA_CHECK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    return d;
}

static void to_host(void *h, const void *d, size_t bytes)
{
    if (bytes)
        CUDA_CHECK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}

static void expect_same_ints(const int *got, const int *want, size_t count, const char *what)
{
    for (size_t t = 0; t < count; t++)
        if (got[t] != want[t])
            cr_assert_fail("%s: entry %zu is %d, CPU twin has %d", what, t, got[t], want[t]);
}

static void expect_same_floats(const float *got, const float *want, size_t count, const char *what)
{
    for (size_t t = 0; t < count; t++)
        if (memcmp(&got[t], &want[t], sizeof(float)) != 0)
            cr_assert_fail("%s: entry %zu is %.9g, CPU twin has %.9g", what, t, got[t], want[t]);
}

/* ---- row top-k ------------------------------------------------------------------------------ */

typedef struct topk_case {
    int B, n, k;
    enum fill_mode mode;
    int gate;      /* use a gate */
    float beta;
    float mask_p;  /* fraction of latents eligible; 0 = no mask */
    int misalign;  /* offset the device rows by one float (no float4 loads) */
} topk_case;

/* Runs the CPU twin once and the kernel under each path / block size; all must agree. */
static void run_topk(topk_case c, uint64_t seed)
{
    rng_seed(seed);
    const size_t cnt = (size_t)c.B * c.n, kc = (size_t)c.B * (c.k > 0 ? c.k : 0);
    float *pre = malloc((cnt + 1) * sizeof(float));
    float *gate = malloc((cnt + 1) * sizeof(float));
    uint8_t *mask = malloc((size_t)c.n + 1);
    fill(pre, cnt, c.mode);
    for (size_t t = 0; t < cnt; t++)
        gate[t] = c.mode == FILL_TIES ? floorf(rng_unif() * 3.0f) : fabsf(rng_normal());
    for (int i = 0; i < c.n; i++)
        mask[i] = c.mask_p > 0.0f ? (rng_unif() < c.mask_p) : 1;
    const float *g = c.gate ? gate : NULL;
    const uint8_t *m = c.mask_p > 0.0f ? mask : NULL;

    int *lat_ref = malloc((kc + 1) * sizeof(int));
    float *val_ref = malloc((kc + 1) * sizeof(float));
    select_topk_cpu(pre, g, c.beta, m, c.B, c.n, c.k, lat_ref, val_ref);

    /* device copies; misalign shifts the rows by one float inside the allocation */
    const int off = c.misalign ? 1 : 0;
    float *d_pre_base, *d_gate_base;
    CUDA_CHECK(cudaMalloc((void **)&d_pre_base, (cnt + 1) * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&d_gate_base, (cnt + 1) * sizeof(float)));
    float *d_pre = d_pre_base + off, *d_gate = d_gate_base + off;
    CUDA_CHECK(cudaMemcpy(d_pre, pre, cnt * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_gate, gate, cnt * sizeof(float), cudaMemcpyHostToDevice));
    uint8_t *d_mask = dup_to_device(mask, (size_t)c.n);
    int *d_lat;
    float *d_val;
    CUDA_CHECK(cudaMalloc((void **)&d_lat, (kc + 1) * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&d_val, (kc + 1) * sizeof(float)));
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreate(&stream));

    int *lat = malloc((kc + 1) * sizeof(int));
    float *val = malloc((kc + 1) * sizeof(float));
    const int paths[4][2] = {{-1, 0}, {0, 0}, {1, 256}, {1, 1024}};
    for (int p = 0; p < 4; p++) {
        CUDA_CHECK(cudaMemsetAsync(d_lat, 0x7f, (kc + 1) * sizeof(int), stream));
        CUDA_CHECK(cudaMemsetAsync(d_val, 0x7f, (kc + 1) * sizeof(float), stream));
        select_topk_cuda_path(d_pre, c.gate ? d_gate : NULL, c.beta, m ? d_mask : NULL, c.B, c.n,
                              c.k, d_lat, d_val, paths[p][0], paths[p][1], stream);
        CUDA_CHECK(cudaStreamSynchronize(stream));
        to_host(lat, d_lat, (kc + 1) * sizeof(int));
        to_host(val, d_val, (kc + 1) * sizeof(float));
        char what[128];
        snprintf(what, sizeof what, "topk B=%d n=%d k=%d mode=%d path=%d threads=%d lat", c.B,
                 c.n, c.k, (int)c.mode, paths[p][0], paths[p][1]);
        expect_same_ints(lat, lat_ref, kc, what);
        what[strlen(what) - 3] = 0;
        strcat(what, "val");
        expect_same_floats(val, val_ref, kc, what);
        cr_expect_eq(lat[kc], 0x7f7f7f7f, "write past the end of lat");
    }
    /* the default launcher too */
    select_topk_cuda(d_pre, c.gate ? d_gate : NULL, c.beta, m ? d_mask : NULL, c.B, c.n, c.k,
                     d_lat, d_val, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    to_host(lat, d_lat, kc * sizeof(int));
    expect_same_ints(lat, lat_ref, kc, "topk default launcher lat");

    CUDA_CHECK(cudaStreamDestroy(stream));
    CUDA_CHECK(cudaFree(d_pre_base));
    CUDA_CHECK(cudaFree(d_gate_base));
    CUDA_CHECK(cudaFree(d_mask));
    CUDA_CHECK(cudaFree(d_lat));
    CUDA_CHECK(cudaFree(d_val));
    free(pre), free(gate), free(mask), free(lat_ref), free(val_ref), free(lat), free(val);
}

Test(cuda_select, topk_aligned)
{
    run_topk((topk_case){.B = 64, .n = 1024, .k = 32, .mode = FILL_NORMAL}, 1);
}

Test(cuda_select, topk_odd_shape)
{
    run_topk((topk_case){.B = 7, .n = 333, .k = 5, .mode = FILL_NORMAL}, 2);
}

Test(cuda_select, topk_ties)
{
    run_topk((topk_case){.B = 16, .n = 517, .k = 40, .mode = FILL_TIES}, 3);
    run_topk((topk_case){.B = 8, .n = 1024, .k = 100, .mode = FILL_TIES}, 4);
}

Test(cuda_select, topk_few_positives)
{
    run_topk((topk_case){.B = 9, .n = 300, .k = 50, .mode = FILL_FEWPOS}, 5);
    run_topk((topk_case){.B = 4, .n = 64, .k = 3, .mode = FILL_FEWPOS}, 6);
}

Test(cuda_select, topk_k_equals_n_and_more)
{
    run_topk((topk_case){.B = 5, .n = 130, .k = 130, .mode = FILL_NORMAL}, 7);
    run_topk((topk_case){.B = 3, .n = 21, .k = 30, .mode = FILL_NORMAL}, 8);
    run_topk((topk_case){.B = 3, .n = 64, .k = 64, .mode = FILL_TIES}, 9);
}

Test(cuda_select, topk_mask_auxk)
{
    run_topk((topk_case){.B = 8, .n = 1000, .k = 17, .mode = FILL_NORMAL, .mask_p = 0.3f}, 10);
    run_topk((topk_case){.B = 6, .n = 700, .k = 200, .mode = FILL_NORMAL, .mask_p = 0.5f}, 11);
    run_topk((topk_case){.B = 4, .n = 257, .k = 9, .mode = FILL_TIES, .mask_p = 0.05f}, 12);
}

Test(cuda_select, topk_gate)
{
    run_topk((topk_case){.B = 8, .n = 777, .k = 33, .mode = FILL_NORMAL, .gate = 1, .beta = 0.7f}, 13);
    run_topk((topk_case){.B = 8, .n = 512, .k = 20, .mode = FILL_TIES, .gate = 1, .beta = 1.0f}, 14);
    run_topk((topk_case){.B = 5, .n = 300, .k = 12, .mode = FILL_NORMAL, .gate = 1, .beta = 0.3f,
                         .mask_p = 0.6f}, 15);
}

Test(cuda_select, topk_large_k_and_row)
{
    run_topk((topk_case){.B = 3, .n = 4100, .k = 512, .mode = FILL_NORMAL}, 16);
    run_topk((topk_case){.B = 2, .n = 9000, .k = 300, .mode = FILL_TIES}, 17);
}

Test(cuda_select, topk_special_values)
{
    run_topk((topk_case){.B = 6, .n = 400, .k = 25, .mode = FILL_SPECIAL}, 18);
    run_topk((topk_case){.B = 6, .n = 400, .k = 25, .mode = FILL_DENORM}, 19);
    run_topk((topk_case){.B = 6, .n = 400, .k = 3, .mode = FILL_SPECIAL, .gate = 1, .beta = 2.0f}, 20);
}

Test(cuda_select, topk_misaligned_rows)
{
    run_topk((topk_case){.B = 5, .n = 256, .k = 16, .mode = FILL_NORMAL, .misalign = 1}, 21);
    run_topk((topk_case){.B = 5, .n = 256, .k = 16, .mode = FILL_NORMAL, .gate = 1, .beta = 0.5f,
                         .misalign = 1}, 22);
}

/* ---- batch top-k ---------------------------------------------------------------------------- */

static void run_batch(int B, int n, int64_t K, enum fill_mode mode, int misalign, uint64_t seed)
{
    rng_seed(seed);
    const size_t cnt = (size_t)B * n;
    float *pre = malloc((cnt + 1) * sizeof(float));
    fill(pre, cnt, mode);
    const size_t kc = (size_t)K;
    int *rp_ref = malloc((size_t)(B + 1) * sizeof(int)), *rp = malloc((size_t)(B + 1) * sizeof(int));
    int *lat_ref = malloc((kc + 1) * sizeof(int)), *lat = malloc((kc + 1) * sizeof(int));
    float *val_ref = malloc((kc + 1) * sizeof(float)), *val = malloc((kc + 1) * sizeof(float));
    float mk_ref = -1.0f, mk = -2.0f;
    const int kept = select_batch_cpu(pre, B, n, K, rp_ref, lat_ref, val_ref, &mk_ref);

    float *d_base;
    CUDA_CHECK(cudaMalloc((void **)&d_base, (cnt + 1) * sizeof(float)));
    float *d_pre = d_base + (misalign ? 1 : 0);
    CUDA_CHECK(cudaMemcpy(d_pre, pre, cnt * sizeof(float), cudaMemcpyHostToDevice));
    int *d_rp, *d_lat;
    float *d_val, *d_mk;
    void *d_ws;
    CUDA_CHECK(cudaMalloc((void **)&d_rp, (size_t)(B + 1) * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&d_lat, (kc + 1) * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&d_val, (kc + 1) * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&d_mk, sizeof(float)));
    CUDA_CHECK(cudaMalloc(&d_ws, bselect_workspace_bytes(B, n)));
    CUDA_CHECK(cudaMemset(d_lat, 0x7f, (kc + 1) * sizeof(int)));
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreate(&stream));
    /* twice: the workspace must be reusable without clearing */
    for (int rep = 0; rep < 2; rep++) {
        bselect_cuda(d_pre, B, n, K, d_rp, d_lat, d_val, d_mk, d_ws, stream);
        CUDA_CHECK(cudaStreamSynchronize(stream));
        to_host(rp, d_rp, (size_t)(B + 1) * sizeof(int));
        to_host(lat, d_lat, (kc + 1) * sizeof(int));
        to_host(val, d_val, (kc + 1) * sizeof(float));
        to_host(&mk, d_mk, sizeof(float));
        char what[96];
        snprintf(what, sizeof what, "batch B=%d n=%d K=%lld mode=%d row_ptr", B, n, (long long)K,
                 (int)mode);
        expect_same_ints(rp, rp_ref, (size_t)B + 1, what);
        cr_assert_eq(rp[B], kept);
        expect_same_ints(lat, lat_ref, (size_t)kept, "batch lat");
        expect_same_floats(val, val_ref, (size_t)kept, "batch val");
        expect_same_floats(&mk, &mk_ref, 1, "batch min_kept");
        for (size_t q = (size_t)kept; q < kc; q++) {
            cr_assert_eq(lat[q], -1, "padding lat[%zu] = %d", q, lat[q]);
            cr_assert_eq(val[q], 0.0f, "padding val[%zu]", q);
        }
        cr_assert_eq(lat[kc], 0x7f7f7f7f, "write past the end of lat");
    }
    CUDA_CHECK(cudaStreamDestroy(stream));
    CUDA_CHECK(cudaFree(d_base));
    CUDA_CHECK(cudaFree(d_rp));
    CUDA_CHECK(cudaFree(d_lat));
    CUDA_CHECK(cudaFree(d_val));
    CUDA_CHECK(cudaFree(d_mk));
    CUDA_CHECK(cudaFree(d_ws));
    free(pre), free(rp_ref), free(rp), free(lat_ref), free(lat), free(val_ref), free(val);
}

Test(cuda_bselect, aligned) { run_batch(64, 1024, 64 * 32, FILL_NORMAL, 0, 31); }
Test(cuda_bselect, odd_shape) { run_batch(7, 333, 35, FILL_NORMAL, 0, 32); }
Test(cuda_bselect, misaligned) { run_batch(6, 128, 50, FILL_NORMAL, 1, 33); }
Test(cuda_bselect, ties)
{
    run_batch(16, 517, 16 * 40, FILL_TIES, 0, 34);
    run_batch(32, 256, 32 * 7, FILL_TIES, 0, 35);
}
Test(cuda_bselect, few_positives) { run_batch(9, 300, 9 * 50, FILL_FEWPOS, 0, 36); }
Test(cuda_bselect, k_zero_and_all)
{
    run_batch(5, 100, 0, FILL_NORMAL, 0, 37);
    run_batch(5, 100, 500, FILL_NORMAL, 0, 38);
}
Test(cuda_bselect, special_values)
{
    run_batch(6, 400, 6 * 25, FILL_SPECIAL, 0, 39);
    run_batch(6, 400, 6 * 25, FILL_DENORM, 0, 40);
}

/* ---- threshold rule ------------------------------------------------------------------------- */

static void run_threshold(int B, int n, float theta, int64_t cap, enum fill_mode mode, uint64_t seed)
{
    rng_seed(seed);
    const size_t cnt = (size_t)B * n;
    float *pre = malloc((cnt + 1) * sizeof(float));
    fill(pre, cnt, mode);
    int *rp_ref = malloc((size_t)(B + 1) * sizeof(int)), *rp = malloc((size_t)(B + 1) * sizeof(int));
    int *lat_ref = malloc(((size_t)cap + 1) * sizeof(int)), *lat = malloc(((size_t)cap + 1) * sizeof(int));
    float *val_ref = malloc(((size_t)cap + 1) * sizeof(float)), *val = malloc(((size_t)cap + 1) * sizeof(float));
    const int64_t need = select_threshold_cpu(pre, theta, B, n, cap, rp_ref, lat_ref, val_ref);

    float *d_pre = dup_to_device(pre, cnt * sizeof(float));
    int *d_rp, *d_lat;
    float *d_val;
    CUDA_CHECK(cudaMalloc((void **)&d_rp, (size_t)(B + 1) * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&d_lat, ((size_t)cap + 1) * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&d_val, ((size_t)cap + 1) * sizeof(float)));
    CUDA_CHECK(cudaMemset(d_lat, 0x7f, ((size_t)cap + 1) * sizeof(int)));
    select_threshold_cuda(d_pre, theta, B, n, cap, d_rp, d_lat, d_val, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    to_host(rp, d_rp, (size_t)(B + 1) * sizeof(int));
    to_host(lat, d_lat, ((size_t)cap + 1) * sizeof(int));
    to_host(val, d_val, ((size_t)cap + 1) * sizeof(float));
    expect_same_ints(rp, rp_ref, (size_t)B + 1, "threshold row_ptr");
    cr_assert_eq((int64_t)rp[B], need);
    if (need <= cap) {
        expect_same_ints(lat, lat_ref, (size_t)need, "threshold lat");
        expect_same_floats(val, val_ref, (size_t)need, "threshold val");
    } else {
        for (int64_t q = 0; q <= cap; q++)
            cr_assert_eq(lat[q], 0x7f7f7f7f, "lat written although the code does not fit");
    }
    cr_assert_eq(lat[cap], 0x7f7f7f7f, "write past the end of lat");
    CUDA_CHECK(cudaFree(d_pre));
    CUDA_CHECK(cudaFree(d_rp));
    CUDA_CHECK(cudaFree(d_lat));
    CUDA_CHECK(cudaFree(d_val));
    free(pre), free(rp_ref), free(rp), free(lat_ref), free(lat), free(val_ref), free(val);
}

Test(cuda_threshold, basic)
{
    run_threshold(64, 1024, 1.0f, 64 * 1024, FILL_NORMAL, 51);
    run_threshold(7, 333, 0.25f, 7 * 333, FILL_NORMAL, 52);
}
Test(cuda_threshold, negative_theta_and_ties)
{
    run_threshold(7, 333, -1.0f, 7 * 333, FILL_NORMAL, 53);
    run_threshold(9, 130, 0.5f, 9 * 130, FILL_TIES, 54);
    run_threshold(6, 400, 0.0f, 6 * 400, FILL_SPECIAL, 55);
}
Test(cuda_threshold, cap_too_small) { run_threshold(16, 256, 0.1f, 10, FILL_NORMAL, 56); }
