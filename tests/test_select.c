/* Selection kernels (CPU twins) against sort-based references: row top-k, batch top-k, threshold. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "host/rng.h"
#include "kernels/select.h"

typedef struct ref_item {
    float s;
    int64_t i;
} ref_item;

static int cmp_ref(const void *a, const void *b)
{
    const ref_item *x = a, *y = b;
    if (x->s != y->s)
        return x->s > y->s ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* mode 0: normal, 1: quantised (many ties), 2: mostly negative, 3: all non-positive */
static void fill(float *v, size_t len, int mode, uint64_t seed)
{
    sf_rng r;
    rng_seed(&r, seed, 7);
    for (size_t t = 0; t < len; t++) {
        double z = rng_normal(&r);
        if (mode == 1)
            z = (double)(int)(z * 4.0) / 4.0;
        else if (mode == 2)
            z = z - 2.0;
        else if (mode == 3)
            z = -fabs(z);
        v[t] = (float)z;
    }
}

static void check_topk(int B, int n, int k, int mode, int use_gate, int use_mask, uint64_t seed)
{
    float *pre = malloc((size_t)B * n * sizeof(float));
    float *gate = malloc((size_t)B * n * sizeof(float));
    uint8_t *mask = malloc((size_t)n);
    fill(pre, (size_t)B * n, mode, seed);
    fill(gate, (size_t)B * n, 1, seed + 1);
    for (size_t t = 0; t < (size_t)B * n; t++)
        gate[t] = fabsf(gate[t]);
    for (int i = 0; i < n; i++)
        mask[i] = (i % 3) != 1;
    float beta = 0.5f;
    int *lat = malloc((size_t)B * k * sizeof(int));
    float *val = malloc((size_t)B * k * sizeof(float));
    select_topk_cpu(pre, use_gate ? gate : NULL, beta, use_mask ? mask : NULL, B, n, k, lat, val);
    ref_item *it = malloc((size_t)n * sizeof(ref_item));
    int64_t *keep = malloc((size_t)n * sizeof(int64_t));
    for (int b = 0; b < B; b++) {
        const float *pb = pre + (size_t)b * n;
        int m = 0;
        for (int i = 0; i < n; i++) {
            float a = pb[i] > 0.0f ? pb[i] : 0.0f;
            float s = use_gate ? a * (1.0f + beta * gate[(size_t)b * n + i]) : a;
            if (s > 0.0f && (!use_mask || mask[i]))
                it[m++] = (ref_item){s, i};
        }
        qsort(it, (size_t)m, sizeof(ref_item), cmp_ref);
        int kept = m < k ? m : k;
        for (int t = 0; t < kept; t++)
            keep[t] = it[t].i;
        qsort(keep, (size_t)kept, sizeof(int64_t), cmp_i64);
        for (int t = 0; t < k; t++) {
            int want = t < kept ? (int)keep[t] : -1;
            float wv = t < kept ? pb[keep[t]] : 0.0f;
            cr_assert_eq(lat[(size_t)b * k + t], want, "row %d slot %d: lat %d want %d (B%d n%d k%d mode%d)",
                         b, t, lat[(size_t)b * k + t], want, B, n, k, mode);
            cr_assert_eq(val[(size_t)b * k + t], wv, "row %d slot %d val", b, t);
        }
    }
    free(pre);
    free(gate);
    free(mask);
    free(lat);
    free(val);
    free(it);
    free(keep);
}

Test(select, topk_random) { check_topk(7, 300, 16, 0, 0, 0, 1); }
Test(select, topk_ties) { check_topk(9, 257, 20, 1, 0, 0, 2); }
Test(select, topk_ties_small_k) { check_topk(9, 64, 1, 1, 0, 0, 12); }
Test(select, topk_negatives_few_positives) { check_topk(8, 100, 40, 2, 0, 0, 3); }
Test(select, topk_all_nonpositive) { check_topk(4, 70, 5, 3, 0, 0, 4); }
Test(select, topk_k_equals_n) { check_topk(5, 32, 32, 0, 0, 0, 5); }
Test(select, topk_k_exceeds_n) { check_topk(3, 10, 12, 0, 0, 0, 13); }
Test(select, topk_mask) { check_topk(6, 200, 12, 1, 0, 1, 6); }
Test(select, topk_gate) { check_topk(6, 333, 10, 0, 1, 0, 7); }
Test(select, topk_gate_mask_ties) { check_topk(6, 96, 8, 1, 1, 1, 8); }
Test(select, topk_block_bound_ties) { check_topk(6, 1000, 8, 1, 0, 0, 14); }
Test(select, topk_block_bound_gate) { check_topk(6, 1003, 12, 0, 1, 0, 15); }
Test(select, topk_large_k_heap) { check_topk(3, 4000, 384, 0, 0, 0, 9); }
/* k >= 64 takes the quickselect path: masks (AuxK), ties, gates, fewer eligible than k */
Test(select, topk_large_k_mask) { check_topk(7, 3000, 384, 0, 0, 1, 16); }
Test(select, topk_large_k_mask_ties) { check_topk(7, 2048, 100, 1, 0, 1, 17); }
Test(select, topk_large_k_gate_ties) { check_topk(5, 1500, 64, 1, 1, 0, 18); }
Test(select, topk_large_k_few_positive) { check_topk(6, 300, 200, 2, 0, 1, 19); }

/* An adversarial order: ascending values make every element displace the heap minimum. */
Test(select, topk_ascending_and_constant_rows)
{
    int n = 100, k = 7;
    float pre[2 * 100];
    for (int i = 0; i < n; i++) {
        pre[i] = (float)(i + 1);
        pre[n + i] = 1.5f;
    }
    int lat[14];
    float val[14];
    select_topk_cpu(pre, NULL, 0.0f, NULL, 2, n, k, lat, val);
    for (int t = 0; t < k; t++) {
        cr_assert_eq(lat[t], n - k + t);
        cr_assert_eq(lat[k + t], t, "constant row keeps the lowest indices");
        cr_assert_eq(val[k + t], 1.5f);
    }
}

typedef int (*batch_fn)(const float *, int, int, int64_t, int *, int *, float *, float *);

/* path: 0 select_batch_cpu, 1 the one-pass path (want_1pass: whether its bound must hold),
 * 2 the three-pass reference. */
static void check_batch_path(int B, int n, int64_t K, int mode, uint64_t seed, int path, int want_1pass)
{
    size_t N = (size_t)B * n;
    float *pre = malloc(N * sizeof(float));
    fill(pre, N, mode, seed);
    int *row_ptr = malloc((size_t)(B + 1) * sizeof(int));
    int *lat = malloc((size_t)(K > 0 ? K : 1) * sizeof(int));
    float *val = malloc((size_t)(K > 0 ? K : 1) * sizeof(float));
    float mk = -1.0f;
    batch_fn fn = path == 1 ? select_batch_1pass_cpu : path == 2 ? select_batch_3pass_cpu : select_batch_cpu;
    int kept = fn(pre, B, n, K, row_ptr, lat, val, &mk);
    if (path == 1) {
        cr_assert_eq(kept >= 0, want_1pass, "one-pass bound %s (kept %d)", want_1pass ? "must hold" : "must fail", kept);
        if (kept < 0) {
            free(pre);
            free(row_ptr);
            free(lat);
            free(val);
            return;
        }
    }
    ref_item *it = malloc(N * sizeof(ref_item));
    size_t m = 0;
    for (size_t t = 0; t < N; t++)
        if (pre[t] > 0.0f)
            it[m++] = (ref_item){pre[t], (int64_t)t};
    qsort(it, m, sizeof(ref_item), cmp_ref);
    int64_t want = (int64_t)m < K ? (int64_t)m : K;
    cr_assert_eq(kept, want, "kept %d want %lld", kept, (long long)want);
    float want_min = want > 0 ? it[want - 1].s : 0.0f;
    cr_assert_eq(mk, want_min, "min_kept %g want %g", mk, want_min);
    int64_t *flat = malloc((size_t)(want > 0 ? want : 1) * sizeof(int64_t));
    for (int64_t t = 0; t < want; t++)
        flat[t] = it[t].i;
    qsort(flat, (size_t)want, sizeof(int64_t), cmp_i64);
    cr_assert_eq(row_ptr[0], 0);
    int64_t q = 0;
    for (int b = 0; b < B; b++) {
        for (int e = row_ptr[b]; e < row_ptr[b + 1]; e++, q++) {
            cr_assert(q < want);
            cr_assert_eq((int64_t)b * n + lat[e], flat[q], "row %d entry %d", b, e);
            cr_assert_eq(val[e], pre[flat[q]]);
        }
    }
    cr_assert_eq(q, want);
    free(pre);
    free(row_ptr);
    free(lat);
    free(val);
    free(it);
    free(flat);
}

static void check_batch(int B, int n, int64_t K, int mode, uint64_t seed)
{
    check_batch_path(B, n, K, mode, seed, 0, 0);
    check_batch_path(B, n, K, mode, seed, 2, 0);
}

Test(select, batch_random) { check_batch(16, 300, 16 * 8, 0, 21); }
Test(select, batch_ties) { check_batch(16, 200, 16 * 8, 1, 22); }
Test(select, batch_ties_big) { check_batch(64, 512, 64 * 32, 1, 25); }
Test(select, batch_fewer_positives) { check_batch(8, 50, 8 * 40, 2, 23); }
Test(select, batch_none_positive) { check_batch(4, 30, 20, 3, 24); }
Test(select, batch_k_one) { check_batch(5, 40, 1, 1, 26); }

/* The one-pass path on data where its sampled bound holds, and where it cannot: sampled rows
 * (every B/256-th) far above the rest (too few candidates), far below them (too many), or with
 * too few positives for a bound. select_batch_cpu must match the sort reference in every case. */
Test(select, batch_one_pass_holds)
{
    check_batch_path(16, 300, 16 * 8, 0, 41, 1, 1);
    check_batch_path(300, 257, 300 * 16, 0, 42, 1, 1);
    check_batch_path(1024, 96, 1024 * 4, 1, 43, 1, 1); /* heavy ties */
}

static void fill_rows(float *pre, int B, int n, int step, float lo_s, float hi_s, float lo_o, float hi_o)
{
    uint32_t r = 99;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < n; i++) {
            r = r * 1664525u + 1013904223u;
            float u = (float)(r >> 8) / 16777216.0f;
            pre[(size_t)b * n + i] = b % step == 0 ? lo_s + u * (hi_s - lo_s) : lo_o + u * (hi_o - lo_o);
        }
}

static void check_rows_case(int B, int n, int64_t K, float lo_s, float hi_s, float lo_o, float hi_o)
{
    size_t N = (size_t)B * n;
    float *pre = malloc(N * sizeof(float));
    fill_rows(pre, B, n, B / 256, lo_s, hi_s, lo_o, hi_o);
    int *rp1 = malloc((size_t)(B + 1) * sizeof(int)), *rp3 = malloc((size_t)(B + 1) * sizeof(int));
    int *l1 = malloc((size_t)K * sizeof(int)), *l3 = malloc((size_t)K * sizeof(int));
    float *v1 = malloc((size_t)K * sizeof(float)), *v3 = malloc((size_t)K * sizeof(float));
    float m1, m3;
    cr_assert_eq(select_batch_1pass_cpu(pre, B, n, K, rp1, l1, v1, &m1), -1, "bound must fail here");
    int k1 = select_batch_cpu(pre, B, n, K, rp1, l1, v1, &m1);
    int k3 = select_batch_3pass_cpu(pre, B, n, K, rp3, l3, v3, &m3);
    cr_assert_eq(k1, k3);
    cr_assert_eq(m1, m3);
    cr_assert(!memcmp(rp1, rp3, (size_t)(B + 1) * sizeof(int)));
    cr_assert(!memcmp(l1, l3, (size_t)k1 * sizeof(int)) && !memcmp(v1, v3, (size_t)k1 * sizeof(float)));
    free(pre);
    free(rp1);
    free(rp3);
    free(l1);
    free(l3);
    free(v1);
    free(v3);
}

Test(select, batch_one_pass_falls_back)
{
    check_rows_case(1024, 64, 1024 * 4, 1.0f, 2.0f, 0.0f, 1.0f);   /* sampled rows above: too few */
    check_rows_case(1024, 64, 1024 * 4, 0.0f, 0.01f, 1.0f, 2.0f);  /* sampled rows below: too many */
    check_rows_case(1024, 64, 1024 * 4, -2.0f, -1.0f, 0.0f, 1.0f); /* no positives sampled */
}

/* Many equal values straddling the cut: the lower flat indices must win. */
Test(select, batch_constant_values)
{
    int B = 4, n = 10;
    float pre[40];
    for (int t = 0; t < 40; t++)
        pre[t] = t % 2 ? 2.0f : 1.0f;
    int row_ptr[5], lat[25];
    float val[25], mk;
    int kept = select_batch_cpu(pre, B, n, 25, row_ptr, lat, val, &mk);
    cr_assert_eq(kept, 25);
    cr_assert_eq(mk, 1.0f);
    /* all 20 twos, then the first five ones: flat 0,2,4,6,8 (row 0) */
    cr_assert_eq(row_ptr[1], 10);
    cr_assert_eq(row_ptr[2], 15);
    cr_assert_eq(row_ptr[4], 25);
    for (int t = 0; t < 10; t++)
        cr_assert_eq(lat[t], t);
}

Test(select, threshold)
{
    int B = 9, n = 77;
    float pre[9 * 77];
    fill(pre, (size_t)B * n, 1, 31);
    float thetas[3] = {0.5f, 0.0f, -1.0f};
    for (int c = 0; c < 3; c++) {
        float theta = thetas[c];
        int row_ptr[10], lat[9 * 77];
        float val[9 * 77];
        int64_t need = select_threshold_cpu(pre, theta, B, n, B * n, row_ptr, lat, val);
        int64_t q = 0;
        cr_assert_eq(row_ptr[0], 0);
        for (int b = 0; b < B; b++) {
            for (int i = 0; i < n; i++) {
                float v = pre[b * n + i];
                if (v > 0.0f && v > theta) {
                    cr_assert(q < row_ptr[b + 1]);
                    cr_assert_eq(lat[q], i);
                    cr_assert_eq(val[q], v);
                    q++;
                }
            }
            cr_assert_eq(row_ptr[b + 1], q);
        }
        cr_assert_eq(need, q);
        /* a too-small cap returns the need and writes only row_ptr */
        int row2[10], lat2[1] = {-7};
        float val2[1] = {-7.0f};
        int64_t need2 = select_threshold_cpu(pre, theta, B, n, need - 1, row2, lat2, val2);
        cr_assert_eq(need2, need);
        cr_assert_eq(memcmp(row2, row_ptr, sizeof(row2)), 0);
        cr_assert_eq(lat2[0], -7);
    }
}
