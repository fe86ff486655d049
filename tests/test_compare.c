/* Dictionary matching: identical and permuted dictionaries match fully, unrelated ones do not,
 * partial overlaps give exact fractions, blocking agrees with a brute-force reference. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/cmd.h"
#include "host/compare.h"
#include "host/fsutil.h"
#include "host/safetensors.h"

static float frand(uint32_t *r)
{
    *r ^= *r << 13;
    *r ^= *r >> 17;
    *r ^= *r << 5;
    return (float)(*r % 20001) / 10000.0f - 1.0f;
}

static float *random_dict(int n, int d, uint32_t seed)
{
    float *A = malloc(sizeof(float) * n * d);
    for (int i = 0; i < n * d; i++)
        A[i] = frand(&seed);
    return A;
}

Test(compare, identical_is_one)
{
    float *A = random_dict(50, 16, 1);
    compare_result r = compare_dicts(A, 50, A, 50, 16);
    cr_assert_float_eq(r.mean_ab, 1.0, 1e-6);
    cr_assert_float_eq(r.mean_ba, 1.0, 1e-6);
    cr_assert_eq(r.matched_a, 50);
    cr_assert_eq(r.matched_b, 50);
    cr_assert_eq(r.frac_a, 1.0);
    cr_assert_eq(r.frac_b, 1.0);
    free(A);
}

Test(compare, permuted_and_rescaled_rows_match)
{
    const int n = 40, d = 12;
    float *A = random_dict(n, d, 2), *B = malloc(sizeof(float) * n * d);
    for (int i = 0; i < n; i++) {
        int src = (i * 7 + 3) % n; /* a permutation: gcd(7, 40) = 1 */
        for (int j = 0; j < d; j++)
            B[i * d + j] = A[src * d + j] * (0.5f + i); /* positive scale: same direction */
    }
    compare_result r = compare_dicts(A, n, B, n, d);
    cr_assert_float_eq(r.mean_ab, 1.0, 1e-6);
    cr_assert_float_eq(r.mean_ba, 1.0, 1e-6);
    cr_assert_eq(r.matched_b, n);
    /* flipped signs are different directions */
    for (int i = 0; i < n * d; i++)
        B[i] = -A[i];
    r = compare_dicts(A, n, B, n, d);
    cr_assert(r.mean_ab < 0.9);
    cr_assert(r.matched_a < n);
    free(A);
    free(B);
}

Test(compare, random_is_low)
{
    float *A = random_dict(64, 256, 3), *B = random_dict(64, 256, 4);
    compare_result r = compare_dicts(A, 64, B, 64, 256);
    cr_assert(r.mean_ab < 0.4, "%f", r.mean_ab);
    cr_assert(r.mean_ba < 0.4, "%f", r.mean_ba);
    cr_assert_eq(r.matched_a, 0);
    cr_assert_eq(r.matched_b, 0);
    free(A);
    free(B);
}

Test(compare, partial_overlap_exact)
{
    /* A = e0..e9, B = e0..e5 and e20..e25 (orthogonal to A): 6 shared of 10 and 12 */
    const int d = 32, na = 10, nb = 12;
    float *A = calloc((size_t)na * d, sizeof(float)), *B = calloc((size_t)nb * d, sizeof(float));
    for (int i = 0; i < na; i++)
        A[i * d + i] = 1;
    for (int i = 0; i < nb; i++)
        B[i * d + (i < 6 ? i : 20 + (i - 6))] = 2;
    compare_result r = compare_dicts(A, na, B, nb, d);
    cr_assert_eq(r.matched_a, 6);
    cr_assert_eq(r.matched_b, 6);
    cr_assert_float_eq(r.frac_a, 0.6, 1e-12);
    cr_assert_float_eq(r.frac_b, 0.5, 1e-12);
    cr_assert_float_eq(r.mean_ab, 0.6, 1e-6);
    cr_assert_float_eq(r.mean_ba, 0.5, 1e-6);
    /* a zero row matches nothing and does not produce NaN */
    memset(B, 0, sizeof(float) * d);
    r = compare_dicts(A, na, B, nb, d);
    cr_assert_eq(r.matched_b, 5);
    cr_assert(isfinite(r.mean_ab) && isfinite(r.mean_ba));
    free(A);
    free(B);
}

Test(compare, blocked_equals_brute_force)
{
    const int na = 2100, nb = 300, d = 9; /* na crosses the 2048 block */
    float *A = random_dict(na, d, 5), *B = random_dict(nb, d, 6);
    float *ba = malloc(sizeof(float) * na), *bb = malloc(sizeof(float) * nb);
    compare_result r = compare_dicts_ex(A, na, B, nb, d, ba, bb);
    double sa = 0;
    int ma = 0;
    double *mb = malloc(sizeof(double) * nb);
    for (int j = 0; j < nb; j++)
        mb[j] = -2;
    for (int i = 0; i < na; i++) {
        double best = -2, ni = 0;
        for (int t = 0; t < d; t++)
            ni += (double)A[i * d + t] * A[i * d + t];
        for (int j = 0; j < nb; j++) {
            double dot = 0, nj = 0;
            for (int t = 0; t < d; t++) {
                dot += (double)A[i * d + t] * B[j * d + t];
                nj += (double)B[j * d + t] * B[j * d + t];
            }
            double c = dot / sqrt(ni * nj);
            if (c > best)
                best = c;
            if (c > mb[j])
                mb[j] = c;
        }
        cr_assert_float_eq(ba[i], best, 1e-5);
        sa += best;
        ma += best >= 0.9;
    }
    for (int j = 0; j < nb; j++)
        cr_assert_float_eq(bb[j], mb[j], 1e-5);
    cr_assert_float_eq(r.mean_ab, sa / na, 1e-5);
    cr_assert(abs(r.matched_a - ma) <= 2); /* float vs double at the 0.9 edge */
    free(A); free(B); free(ba); free(bb); free(mb);
}

Test(compare, cli_truth_files)
{
    char root[64];
    snprintf(root, sizeof root, "/tmp/sf_cmp_XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    const int d = 8, n = 5;
    float *A = random_dict(n, d, 9);
    char pa[128], pb[128];
    snprintf(pa, sizeof pa, "%s/truth.safetensors", root);
    snprintf(pb, sizeof pb, "%s/other.safetensors", root);
    sf_err err = {0};
    st_writer w;
    int64_t shape[2] = {n, d};
    st_writer_init(&w);
    st_writer_add(&w, "W_dec", ST_F32, 2, shape, A);
    cr_assert_eq(st_writer_commit(&w, pa, &err), SF_OK, "%s", err.msg);
    st_writer_free(&w);
    int64_t shape2[2] = {n, d - 1};
    st_writer_init(&w);
    st_writer_add(&w, "W_dec", ST_F32, 2, shape2, A);
    cr_assert_eq(st_writer_commit(&w, pb, &err), SF_OK, "%s", err.msg);
    st_writer_free(&w);
    char *ok[] = {pa, root, "--json"};
    cr_assert_eq(cmd_compare(3, ok), 0);
    char *mismatch[] = {pa, pb};
    cr_assert_eq(cmd_compare(2, mismatch), 2);
    char *missing[] = {pa, "/nonexistent/x"};
    cr_assert_eq(cmd_compare(2, missing), 2);
    char *one[] = {pa};
    cr_assert_eq(cmd_compare(1, one), 2);
    free(A);
    fs_remove_tree(root);
}
