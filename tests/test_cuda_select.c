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

/* Runs bselect_cuda on pre (twice: the workspace must be reusable without clearing) and compares
 * it with select_batch_cpu bit for bit. ws: a workspace to use (sized for at least (B, n)), or
 * NULL for a fresh one. expect_path: the BSEL_PATH_* that must have run, or -1 for any. Returns
 * the path taken. */
static int run_batch_on(const float *pre, int B, int n, int64_t K, int misalign, int expect_path,
                        void *ws, const char *label)
{
    const size_t cnt = (size_t)B * n;
    const size_t kc = (size_t)K;
    int *rp_ref = malloc((size_t)(B + 1) * sizeof(int)), *rp = malloc((size_t)(B + 1) * sizeof(int));
    int *lat_ref = malloc((kc + 1) * sizeof(int)), *lat = malloc((kc + 1) * sizeof(int));
    float *val_ref = malloc((kc + 1) * sizeof(float)), *val = malloc((kc + 1) * sizeof(float));
    float mk_ref = -1.0f, mk = -2.0f;
    const int kept = select_batch_cpu(pre, B, n, K, rp_ref, lat_ref, val_ref, &mk_ref);

    float *d_base;
    CUDA_CHECK(cudaMalloc((void **)&d_base, (cnt + 1) * sizeof(float)));
    float *d_pre = d_base + (misalign ? 1 : 0);
    if (cnt)
        CUDA_CHECK(cudaMemcpy(d_pre, pre, cnt * sizeof(float), cudaMemcpyHostToDevice));
    int *d_rp, *d_lat;
    float *d_val, *d_mk;
    void *d_ws = ws;
    CUDA_CHECK(cudaMalloc((void **)&d_rp, (size_t)(B + 1) * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&d_lat, (kc + 1) * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&d_val, (kc + 1) * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&d_mk, sizeof(float)));
    if (!ws)
        CUDA_CHECK(cudaMalloc(&d_ws, bselect_workspace_bytes(B, n)));
    CUDA_CHECK(cudaMemset(d_lat, 0x7f, (kc + 1) * sizeof(int)));
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreate(&stream));
    int path = -1;
    for (int rep = 0; rep < 2; rep++) {
        bselect_cuda(d_pre, B, n, K, d_rp, d_lat, d_val, d_mk, d_ws, stream);
        CUDA_CHECK(cudaStreamSynchronize(stream));
        to_host(rp, d_rp, (size_t)(B + 1) * sizeof(int));
        to_host(lat, d_lat, (kc + 1) * sizeof(int));
        to_host(val, d_val, (kc + 1) * sizeof(float));
        to_host(&mk, d_mk, sizeof(float));
        if (B > 0)
            path = bselect_path_debug(d_ws);
        char what[160];
        snprintf(what, sizeof what, "batch %s B=%d n=%d K=%lld path=%d", label, B, n,
                 (long long)K, path);
        if (expect_path >= 0)
            cr_assert_eq(path, expect_path, "%s: expected path %d", what, expect_path);
        expect_same_ints(rp, rp_ref, (size_t)B + 1, what);
        cr_assert_eq(rp[B], kept, "%s: kept", what);
        expect_same_ints(lat, lat_ref, (size_t)kept, what);
        expect_same_floats(val, val_ref, (size_t)kept, what);
        expect_same_floats(&mk, &mk_ref, 1, what);
        for (size_t q = (size_t)kept; q < kc; q++) {
            cr_assert_eq(lat[q], -1, "%s: padding lat[%zu] = %d", what, q, lat[q]);
            cr_assert_eq(val[q], 0.0f, "%s: padding val[%zu]", what, q);
        }
        cr_assert_eq(lat[kc], 0x7f7f7f7f, "%s: write past the end of lat", what);
    }
    CUDA_CHECK(cudaStreamDestroy(stream));
    CUDA_CHECK(cudaFree(d_base));
    CUDA_CHECK(cudaFree(d_rp));
    CUDA_CHECK(cudaFree(d_lat));
    CUDA_CHECK(cudaFree(d_val));
    CUDA_CHECK(cudaFree(d_mk));
    if (!ws)
        CUDA_CHECK(cudaFree(d_ws));
    free(rp_ref), free(rp), free(lat_ref), free(lat), free(val_ref), free(val);
    return path;
}

static int run_batch_path(int B, int n, int64_t K, enum fill_mode mode, int misalign,
                          int expect_path, uint64_t seed)
{
    rng_seed(seed);
    const size_t cnt = (size_t)B * n;
    float *pre = malloc((cnt + 1) * sizeof(float));
    fill(pre, cnt, mode);
    char label[32];
    snprintf(label, sizeof label, "mode=%d", (int)mode);
    const int path = run_batch_on(pre, B, n, K, misalign, expect_path, NULL, label);
    free(pre);
    return path;
}

static void run_batch(int B, int n, int64_t K, enum fill_mode mode, int misalign, uint64_t seed)
{
    run_batch_path(B, n, K, mode, misalign, -1, seed);
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

/* ---- batch top-k: the one-pass path and its fallbacks ------------------------------------ */

/* Uniform in [lo, hi) (rng_u32 has 31 bits: rng_unif above only reaches [0, 0.5)). */
static float unif_in(float lo, float hi)
{
    return lo + (hi - lo) * (float)((rng_u32() >> 7) * (1.0 / 16777216.0));
}

/* Rows the one-pass path samples (every (B/256)-th; all when B <= 256), as bselect_cuda. */
static int is_sampled(int B, int b)
{
    const int step = B > 256 ? B / 256 : 1;
    return b % step == 0 && b / step < (B + step - 1) / step;
}

/* Sampled rows hold values in [s_lo, s_hi), the others in [o_lo, o_hi); a NaN bound means the
 * rows are all negative instead. */
static float *fill_split(int B, int n, float s_lo, float s_hi, float o_lo, float o_hi)
{
    float *pre = malloc(((size_t)B * n + 1) * sizeof(float));
    for (int b = 0; b < B; b++) {
        const int smp = is_sampled(B, b);
        const float lo = smp ? s_lo : o_lo, hi = smp ? s_hi : o_hi;
        for (int i = 0; i < n; i++)
            pre[(size_t)b * n + i] = isnan(lo) ? -unif_in(0.1f, 1.0f) : unif_in(lo, hi);
    }
    return pre;
}

Test(cuda_bselect, fast_path_runs)
{
    cr_assert_eq(run_batch_path(64, 1024, 64 * 32, FILL_NORMAL, 0, -1, 31), BSEL_PATH_FAST);
    cr_assert_eq(run_batch_path(7, 333, 35, FILL_NORMAL, 0, -1, 32), BSEL_PATH_FAST);
    /* B > 256: the bound comes from every (B/256)-th row only */
    run_batch_path(1024, 64, 1024 * 4, FILL_NORMAL, 0, BSEL_PATH_FAST, 61);
    run_batch_path(700, 50, 700 * 3, FILL_NORMAL, 0, BSEL_PATH_FAST, 62);
    /* float4 loads off: misaligned pre, and N % 4 != 0 (the last tile's tail) */
    run_batch_path(6, 128, 50, FILL_NORMAL, 1, BSEL_PATH_FAST, 63);
    run_batch_path(5, 4099, 60, FILL_NORMAL, 0, BSEL_PATH_FAST, 64);
    run_batch_path(3, 1001, 25, FILL_NORMAL, 1, BSEL_PATH_FAST, 65);
}

Test(cuda_bselect, fast_path_edges)
{
    run_batch_path(1, 5000, 50, FILL_NORMAL, 0, BSEL_PATH_FAST, 66); /* B = 1 */
    run_batch_path(1, 3, 1, FILL_NORMAL, 0, -1, 67);
    run_batch_path(300, 1, 10, FILL_NORMAL, 0, BSEL_PATH_FAST, 68); /* n = 1 */
    run_batch_path(513, 2, 40, FILL_NORMAL, 0, -1, 69);
    run_batch_path(4, 0, 3, FILL_NORMAL, 0, BSEL_PATH_REF, 74); /* n = 0: nothing to select */
    /* K = number of candidates exactly: every positive is kept */
    rng_seed(70);
    float *pre = malloc(400 * sizeof(float));
    for (int t = 0; t < 400; t++)
        pre[t] = t % 4 == 0 ? unif_in(1.0f, 2.0f) : -1.0f;
    run_batch_on(pre, 4, 100, 100, 0, -1, NULL, "all positives kept");
    free(pre);
}

Test(cuda_bselect, fast_path_sparse_rows)
{
    /* most rows have no candidate at all (all negative, or zero): long gaps between row ranges */
    rng_seed(71);
    const int B = 300, n = 70;
    float *pre = malloc((size_t)B * n * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < n; i++)
            pre[(size_t)b * n + i] = b % 37 == 5 ? rng_normal()
                                     : b % 2     ? 0.0f
                                                 : -fabsf(rng_normal());
    run_batch_on(pre, B, n, 60, 0, BSEL_PATH_FAST, NULL, "sparse rows");
    free(pre);
    run_batch_path(9, 300, 9 * 50, FILL_FEWPOS, 0, -1, 72);
}

/* Uniform values: the sample's share of 2K sits in the top 13-bit bucket, which alone holds far
 * more than 8K; the bound must come from the second, finer histogram of the sample. */
Test(cuda_bselect, fast_path_top_heavy)
{
    rng_seed(73);
    float *pre = malloc(16 * 8192 * sizeof(float));
    for (int t = 0; t < 16 * 8192; t++)
        pre[t] = unif_in(-1.0f, 1.0f);
    run_batch_on(pre, 16, 8192, 64, 0, BSEL_PATH_FAST, NULL, "uniform");
    run_batch_on(pre, 512, 256, 100, 0, BSEL_PATH_FAST, NULL, "uniform, sampled rows");
    free(pre);
}

/* Ties at the threshold on the fast path: the K-th largest value repeats many times, spread over
 * rows and tiles, so `need` of them are kept by flat index. */
Test(cuda_bselect, fast_path_ties_at_threshold)
{
    static const float level[3] = {1.0f, 1.3f, 0.75f}; /* a bucket edge, and two inside a bucket */
    for (int L = 0; L < 3; L++) {
        rng_seed(80 + L);
        const int B = 48, n = 700;
        const int64_t K = 600;
        float *pre = malloc((size_t)B * n * sizeof(float));
        for (size_t t = 0; t < (size_t)B * n; t++) {
            const uint32_t r = rng_u32() % 1000;
            pre[t] = r < 9 ? unif_in(2.0f, 3.0f) /* ~300 distinct values above the tie */
                     : r < 45 ? level[L]         /* ~1200 copies of it */
                     : -rng_unif();
        }
        run_batch_on(pre, B, n, K, 0, BSEL_PATH_FAST, NULL, "ties at threshold");
        free(pre);
    }
    /* quantised values everywhere: a few levels, every selection ends inside a tie */
    for (int t = 0; t < 4; t++)
        run_batch_path(16 + 7 * t, 517, 16 * 40 + 13 * t, FILL_TIES, t & 1, -1, 85 + t);
    /* all ties: every positive value equal */
    rng_seed(90);
    float *pre = malloc(600 * 50 * sizeof(float));
    for (int t = 0; t < 600 * 50; t++)
        pre[t] = rng_u32() % 3 ? 0.5f : -0.5f;
    run_batch_on(pre, 600, 50, 2000, 0, BSEL_PATH_MANY, NULL, "one level");
    run_batch_on(pre, 600, 50, 19000, 0, -1, NULL, "one level, K above it");
    free(pre);
}

/* Bound too high: the sampled rows hold the large values, so the sample's 2K share sits above
 * everything else and fewer than K keys clear it (every (B/256)-th row is 1/3 of the rows here;
 * the sampled values spread wide, so the bound's bucket adds few above the sample's share). */
Test(cuda_bselect, fallback_few_candidates)
{
    rng_seed(91);
    float *pre = fill_split(768, 64, 10.0f, 100.0f, 1.0f, 2.0f);
    run_batch_on(pre, 768, 64, 768 * 4, 0, BSEL_PATH_FEW, NULL, "sampled rows high");
    free(pre);
    pre = fill_split(1000, 33, 5.0f, 50.0f, 0.5f, 4.0f);
    run_batch_on(pre, 1000, 33, 1000 * 2, 1, BSEL_PATH_FEW, NULL, "sampled rows high, misaligned");
    free(pre);
}

/* Bound too low: the sampled rows hold the small values, so everything in the other rows is a
 * candidate: far more than 8K. */
Test(cuda_bselect, fallback_many_candidates)
{
    rng_seed(92);
    float *pre = fill_split(512, 64, 1.0f, 2.0f, 10.0f, 20.0f);
    run_batch_on(pre, 512, 64, 100, 0, BSEL_PATH_MANY, NULL, "sampled rows low");
    free(pre);
    pre = fill_split(2048, 20, 0.01f, 0.02f, 0.5f, 0.6f);
    run_batch_on(pre, 2048, 20, 2048, 0, BSEL_PATH_MANY, NULL, "sampled rows low, big B");
    free(pre);
}

/* No bound: the sampled rows have fewer positives than their share of 2K. */
Test(cuda_bselect, fallback_no_bound)
{
    rng_seed(93);
    float *pre = fill_split(512, 64, NAN, NAN, -1.0f, 1.0f);
    run_batch_on(pre, 512, 64, 300, 0, BSEL_PATH_NO_BOUND, NULL, "sampled rows negative");
    free(pre);
    run_batch_path(5, 100, 500, FILL_NORMAL, 0, BSEL_PATH_NO_BOUND, 38); /* K >= positives */
    run_batch_path(9, 300, 9 * 50, FILL_FEWPOS, 0, BSEL_PATH_NO_BOUND, 94);
}

Test(cuda_bselect, reference_only)
{
    run_batch_path(5, 100, 0, FILL_NORMAL, 0, BSEL_PATH_REF, 37);       /* K = 0 */
    run_batch_path(2, 16384, 20000, FILL_NORMAL, 0, BSEL_PATH_REF, 95); /* K > capacity */
}

/* One workspace sized for the largest batch, reused across shapes and paths (as the backend
 * does): no state of an earlier call may leak into the next. */
Test(cuda_bselect, shared_workspace)
{
    void *ws;
    CUDA_CHECK(cudaMalloc(&ws, bselect_workspace_bytes(1024, 64)));
    rng_seed(96);
    float *pre = fill_split(512, 64, 1.0f, 2.0f, 10.0f, 20.0f);
    run_batch_on(pre, 512, 64, 100, 0, BSEL_PATH_MANY, ws, "shared ws, many");
    free(pre);
    pre = fill_split(768, 64, 10.0f, 100.0f, 1.0f, 2.0f);
    run_batch_on(pre, 768, 64, 768 * 4, 0, BSEL_PATH_FEW, ws, "shared ws, few");
    free(pre);
    pre = malloc(1024 * 64 * sizeof(float));
    fill(pre, 1024 * 64, FILL_NORMAL);
    run_batch_on(pre, 1024, 64, 1024 * 8, 0, BSEL_PATH_FAST, ws, "shared ws, fast");
    run_batch_on(pre, 100, 64, 100 * 8, 0, BSEL_PATH_FAST, ws, "shared ws, fast, small B");
    run_batch_on(pre, 1024, 64, 0, 0, BSEL_PATH_REF, ws, "shared ws, K = 0");
    run_batch_on(pre, 3, 64, 5, 0, BSEL_PATH_FAST, ws, "shared ws, fast, tiny");
    free(pre);
    CUDA_CHECK(cudaFree(ws));
}

/* Random shapes, K and value mixes; every path must agree with the CPU twin. */
Test(cuda_bselect, random_shapes)
{
    int paths[5] = {0, 0, 0, 0, 0};
    for (int c = 0; c < 24; c++) {
        rng_seed(1000 + c);
        const int B = 1 + (int)(rng_u32() % (c % 4 == 0 ? 900 : 120));
        const int n = 1 + (int)(rng_u32() % (c % 3 == 0 ? 40 : 900));
        const int64_t N = (int64_t)B * n;
        int64_t K = c % 7 == 0 ? (int64_t)(rng_u32() % (uint32_t)(N + 2))
                               : 1 + (int64_t)(rng_u32() % (uint32_t)(N / 8 + 1));
        const enum fill_mode mode = (enum fill_mode)(rng_u32() % 5);
        const int p = run_batch_path(B, n, K, mode, c % 5 == 1, -1, 2000 + c);
        cr_assert(p >= 0 && p < 5);
        paths[p]++;
    }
    cr_expect_gt(paths[BSEL_PATH_FAST], 8, "fast path ran in %d of 24 random cases",
                 paths[BSEL_PATH_FAST]);
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
