/* Tests for data/shard.c and data/shard_write.c: dtype round trips, chunked and contiguous,
 * multi-file sets (file, directory, glob), validation errors, and exact half conversions. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/shard.h"
#include "data/shard_write.h"
#include "host/fsutil.h"
#include "host/rng.h"

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/sf_shard_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}
static void teardown(void) { fs_remove_tree(dir); }

TestSuite(shard, .init = setup, .fini = teardown);

static float *rand_rows(int64_t rows, int d, uint64_t seed)
{
    float *x = malloc((size_t)rows * d * sizeof(float));
    sf_rng r;
    rng_seed(&r, seed, 7);
    for (int64_t i = 0; i < rows * d; i++)
        x[i] = (float)(3.0 * rng_normal(&r));
    return x;
}

/* Expected value after storing in dtype t. */
static float quant(shard_dtype t, float v)
{
    if (t == SHARD_F16)
        return shard_f16_to_f32(shard_f32_to_f16(v));
    if (t == SHARD_BF16)
        return shard_bf16_to_f32(shard_f32_to_bf16(v));
    return v;
}

static void write_file(const char *name, int64_t rows, int d, shard_dtype t, int64_t chunk, const float *x,
                       const float *g)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    shard_write_opts o = {.dtype = t, .chunk_rows = chunk, .with_gradients = g != NULL, .model = "gpt2",
                          .hook = "blocks.6.hook_resid_post", .context_size = 128};
    sf_err err = {0};
    cr_assert_eq(shard_write(p, rows, d, x, g, NULL, &o, &err), SF_OK, "%s", err.msg);
}

static void round_trip(shard_dtype t, int64_t chunk)
{
    int64_t rows = 300;
    int d = 24;
    float *x = rand_rows(rows, d, 1), *g = rand_rows(rows, d, 2);
    write_file("a.h5", rows, d, t, chunk, x, g);
    char p[512];
    snprintf(p, sizeof p, "%s/a.h5", dir);
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, p, 1, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(s.n_files, 1);
    cr_assert_eq(s.rows, rows);
    cr_assert_eq(s.d, d);
    cr_assert_eq(s.dtype, t);
    cr_assert_eq(s.has_gradients, 1);
    cr_assert_eq(s.has_tokens, 0);
    cr_assert_eq(s.files[0].chunk_rows, chunk);
    cr_assert_str_eq(s.model, "gpt2");
    cr_assert_str_eq(s.hook, "blocks.6.hook_resid_post");
    cr_assert_eq(s.context_size, 128);
    /* several unaligned windows */
    int64_t ranges[][2] = {{0, rows}, {1, 7}, {63, 130}, {299, 1}, {100, 0}};
    for (size_t k = 0; k < sizeof ranges / sizeof *ranges; k++) {
        int64_t r0 = ranges[k][0], n = ranges[k][1];
        float *xo = malloc((size_t)(n + 1) * d * sizeof(float)), *go = malloc((size_t)(n + 1) * d * sizeof(float));
        cr_assert_eq(shard_set_read(&s, r0, n, xo, go, &err), SF_OK, "%s", err.msg);
        for (int64_t i = 0; i < n * d; i++) {
            cr_assert_eq(xo[i], quant(t, x[r0 * d + i]), "x mismatch %s chunk %lld at %lld", shard_dtype_name(t),
                         (long long)chunk, (long long)(r0 * d + i));
            cr_assert_eq(go[i], quant(t, g[r0 * d + i]));
        }
        free(xo);
        free(go);
    }
    shard_set_free(&s);
    free(x);
    free(g);
}

Test(shard, round_trip_f32_chunked) { round_trip(SHARD_F32, 64); }
Test(shard, round_trip_f32_contiguous) { round_trip(SHARD_F32, 0); }
Test(shard, round_trip_f16_chunked) { round_trip(SHARD_F16, 50); }
Test(shard, round_trip_f16_contiguous) { round_trip(SHARD_F16, 0); }
Test(shard, round_trip_bf16_chunked) { round_trip(SHARD_BF16, 128); }
Test(shard, round_trip_bf16_contiguous) { round_trip(SHARD_BF16, 0); }

Test(shard, bf16_file_type_is_what_h5py_writes)
{
    float x[4] = {1, 2, 3, 4};
    write_file("b.h5", 2, 2, SHARD_BF16, 0, x, NULL);
    char p[512];
    snprintf(p, sizeof p, "%s/b.h5", dir);
    shard_hdf5_lock();
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "activations", H5P_DEFAULT);
    hid_t t = H5Dget_type(ds);
    size_t spos, epos, esize, mpos, msize;
    H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize);
    cr_assert_eq(H5Tget_size(t), 2);
    cr_assert_eq(spos, 15);
    cr_assert_eq(epos, 7);
    cr_assert_eq(esize, 8);
    cr_assert_eq(mpos, 0);
    cr_assert_eq(msize, 7);
    cr_assert_eq(H5Tget_ebias(t), 127);
    cr_assert_eq(H5Tget_precision(t), 16);
    cr_assert_eq(H5Tget_offset(t), 0);
    /* HDF5's own conversion of this type must agree with ours. */
    float back[4];
    cr_assert(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, back) >= 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(back[i], x[i]);
    H5Tclose(t);
    H5Dclose(ds);
    H5Fclose(f);
    shard_hdf5_unlock();
}

static void three_files(void)
{
    int d = 8;
    float *x0 = rand_rows(10, d, 10), *x1 = rand_rows(25, d, 11), *x2 = rand_rows(7, d, 12);
    /* written out of name order; the set must sort by name */
    write_file("s_2.h5", 7, d, SHARD_F32, 3, x2, NULL);
    write_file("s_0.h5", 10, d, SHARD_F32, 4, x0, NULL);
    write_file("s_1.h5", 25, d, SHARD_F32, 0, x1, NULL);
    free(x0);
    free(x1);
    free(x2);
}

static void check_three(const shard_set *s)
{
    int d = 8;
    cr_assert_eq(s->n_files, 3);
    cr_assert_eq(s->rows, 42);
    cr_assert(strstr(s->files[0].path, "s_0.h5"));
    cr_assert(strstr(s->files[1].path, "s_1.h5"));
    cr_assert(strstr(s->files[2].path, "s_2.h5"));
    cr_assert_eq(s->files[1].row0, 10);
    cr_assert_eq(s->files[2].row0, 35);
    float *all = malloc(42 * d * sizeof(float));
    float *x0 = rand_rows(10, d, 10), *x1 = rand_rows(25, d, 11), *x2 = rand_rows(7, d, 12);
    memcpy(all, x0, 10 * d * sizeof(float));
    memcpy(all + 10 * d, x1, 25 * d * sizeof(float));
    memcpy(all + 35 * d, x2, 7 * d * sizeof(float));
    float got[42 * 8];
    sf_err err = {0};
    /* a read crossing both file boundaries */
    cr_assert_eq(shard_set_read(s, 5, 35, got, NULL, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(memcmp(got, all + 5 * d, 35 * d * sizeof(float)), 0);
    cr_assert_eq(shard_set_read(s, 0, 42, got, NULL, &err), SF_OK);
    cr_assert_eq(memcmp(got, all, sizeof got), 0);
    free(all);
    free(x0);
    free(x1);
    free(x2);
}

Test(shard, directory_spec)
{
    three_files();
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, dir, 0, &err), SF_OK, "%s", err.msg);
    check_three(&s);
    shard_set_free(&s);
}

Test(shard, glob_spec)
{
    three_files();
    char p[512];
    snprintf(p, sizeof p, "%s/s_*.h5", dir);
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_OK, "%s", err.msg);
    check_three(&s);
    shard_set_free(&s);
    snprintf(p, sizeof p, "%s/zz_*.h5", dir);
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "matches no files"), "%s", err.msg);
}

Test(shard, rewritten_file_is_reread)
{
    /* The handle cache must not serve a replaced file. */
    float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, got[4];
    char p[512];
    snprintf(p, sizeof p, "%s/r.h5", dir);
    shard_set s;
    sf_err err = {0};
    write_file("r.h5", 2, 2, SHARD_F32, 0, a, NULL);
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_OK);
    cr_assert_eq(shard_set_read(&s, 0, 2, got, NULL, &err), SF_OK);
    cr_assert_eq(memcmp(got, a, sizeof a), 0);
    shard_set_free(&s);
    write_file("r.h5", 2, 2, SHARD_F32, 0, b, NULL);
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_OK);
    cr_assert_eq(shard_set_read(&s, 0, 2, got, NULL, &err), SF_OK);
    cr_assert_eq(memcmp(got, b, sizeof b), 0);
    shard_set_free(&s);
}

Test(shard, d_mismatch_names_both_files)
{
    float x[64] = {0};
    write_file("a.h5", 4, 8, SHARD_F32, 0, x, NULL);
    write_file("b.h5", 8, 4, SHARD_F32, 0, x, NULL);
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, dir, 0, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "a.h5") && strstr(err.msg, "b.h5"), "%s", err.msg);
    cr_assert_eq(s.n_files, 0, "set left empty");
}

Test(shard, dtype_mismatch)
{
    float x[32] = {0};
    write_file("a.h5", 4, 8, SHARD_F32, 0, x, NULL);
    write_file("b.h5", 4, 8, SHARD_F16, 0, x, NULL);
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, dir, 0, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "float16") && strstr(err.msg, "float32"), "%s", err.msg);
}

Test(shard, missing_file_and_empty_dir)
{
    char p[512];
    snprintf(p, sizeof p, "%s/none.h5", dir);
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, p), "%s", err.msg);
    cr_assert_eq(shard_set_open(&s, dir, 0, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "no *.h5"), "%s", err.msg);
}

static void expect_bad_file(const char *p, const char *what)
{
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_EINPUT, "%s", what);
    cr_assert(strstr(err.msg, p), "%s: message names file: %s", what, err.msg);
    cr_assert_null(strchr(err.msg, '\n'));
}

Test(shard, truncated_file)
{
    int d = 16;
    float *x = rand_rows(512, d, 3);
    write_file("t.h5", 512, d, SHARD_F16, 64, x, NULL);
    free(x);
    char p[512];
    snprintf(p, sizeof p, "%s/t.h5", dir);
    char *buf;
    size_t len;
    sf_err err;
    cr_assert_eq(fs_read_all(p, &buf, &len, &err), SF_OK);
    cr_assert_eq(fs_write_atomic(p, buf, len / 2, &err), SF_OK);
    expect_bad_file(p, "half the file");
    cr_assert_eq(fs_write_atomic(p, buf, 100, &err), SF_OK);
    expect_bad_file(p, "first 100 bytes");
    cr_assert_eq(fs_write_atomic(p, buf, 0, &err), SF_OK);
    expect_bad_file(p, "empty");
    free(buf);
}

Test(shard, corrupt_file)
{
    char p[512];
    snprintf(p, sizeof p, "%s/c.h5", dir);
    unsigned char junk[8192];
    sf_rng r;
    rng_seed(&r, 5, 5);
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)rng_next(&r);
    sf_err err;
    cr_assert_eq(fs_write_atomic(p, junk, sizeof junk, &err), SF_OK);
    expect_bad_file(p, "garbage");
    /* a real shard whose superblock is overwritten */
    float x[64] = {0};
    write_file("c.h5", 8, 8, SHARD_F32, 0, x, NULL);
    char *buf;
    size_t len;
    cr_assert_eq(fs_read_all(p, &buf, &len, &err), SF_OK);
    memcpy(buf, junk, len < 96 ? len : 96);
    cr_assert_eq(fs_write_atomic(p, buf, len, &err), SF_OK);
    free(buf);
    expect_bad_file(p, "overwritten superblock");
}

Test(shard, missing_gradients_when_needed)
{
    float x[32] = {0};
    write_file("a.h5", 4, 8, SHARD_F32, 0, x, NULL);
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, dir, 0, &err), SF_OK);
    cr_assert_eq(s.has_gradients, 0);
    float g[32];
    cr_assert_eq(shard_set_read(&s, 0, 4, x, g, &err), SF_EINPUT, "reading gradients that do not exist");
    shard_set_free(&s);
    cr_assert_eq(shard_set_open(&s, dir, 1, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "a.h5") && strstr(err.msg, "gradients") && strstr(err.msg, "synth --gradients"),
              "%s", err.msg);
}

Test(shard, no_activations_and_wrong_rank)
{
    char p[512];
    snprintf(p, sizeof p, "%s/w.h5", dir);
    shard_hdf5_lock();
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[1] = {5};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t ds = H5Dcreate2(f, "other", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(ds);
    H5Fclose(f);
    shard_hdf5_unlock();
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "no `activations`"), "%s", err.msg);

    shard_hdf5_lock();
    f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ds = H5Dcreate2(f, "activations", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(ds);
    H5Fclose(f);
    shard_hdf5_unlock();
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "dimensions"), "%s", err.msg);

    /* float64 is not a supported dtype */
    hsize_t d2[2] = {2, 2};
    hid_t sp2 = H5Screate_simple(2, d2, NULL);
    shard_hdf5_lock();
    f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ds = H5Dcreate2(f, "activations", H5T_IEEE_F64LE, sp2, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(ds);
    H5Fclose(f);
    shard_hdf5_unlock();
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "unsupported element type"), "%s", err.msg);
    H5Sclose(sp);
    H5Sclose(sp2);
}

Test(shard, tokens_dataset)
{
    float x[24] = {0};
    int32_t tok[3] = {5, 6, 7};
    char p[512];
    snprintf(p, sizeof p, "%s/k.h5", dir);
    shard_write_opts o = {.dtype = SHARD_F32, .chunk_rows = 2, .with_tokens = 1, .context_size = -1};
    sf_err err = {0};
    cr_assert_eq(shard_write(p, 3, 8, x, NULL, tok, &o, &err), SF_OK, "%s", err.msg);
    shard_set s;
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(s.has_tokens, 1);
    cr_assert_eq(s.context_size, -1);
    cr_assert_str_eq(s.model, "");
    shard_set_free(&s);
}

/* ---- half conversions ---- */

Test(shard, f16_to_f32_edge_cases)
{
    cr_assert_eq(shard_f16_to_f32(0x3c00), 1.0f);
    cr_assert_eq(shard_f16_to_f32(0xc000), -2.0f);
    cr_assert_eq(shard_f16_to_f32(0x7bff), 65504.0f);
    cr_assert_eq(shard_f16_to_f32(0x0001), ldexpf(1, -24), "smallest subnormal");
    cr_assert_eq(shard_f16_to_f32(0x03ff), ldexpf(1023, -24), "largest subnormal");
    cr_assert_eq(shard_f16_to_f32(0x0400), ldexpf(1, -14), "smallest normal");
    cr_assert(isinf(shard_f16_to_f32(0x7c00)) && shard_f16_to_f32(0x7c00) > 0);
    cr_assert(isinf(shard_f16_to_f32(0xfc00)) && shard_f16_to_f32(0xfc00) < 0);
    cr_assert(isnan(shard_f16_to_f32(0x7e00)));
    cr_assert(isnan(shard_f16_to_f32(0x7c01)), "signalling NaN stays NaN");
    float nz = shard_f16_to_f32(0x8000);
    cr_assert(nz == 0 && signbit(nz));
}

Test(shard, f32_to_f16_ties_and_limits)
{
    cr_assert_eq(shard_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00, "tie rounds to even (down)");
    cr_assert_eq(shard_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02, "tie rounds to even (up)");
    cr_assert_eq(shard_f32_to_f16(nextafterf(1.0f + ldexpf(1, -11), 2)), 0x3c01, "just above tie");
    cr_assert_eq(shard_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(shard_f32_to_f16(65519.0f), 0x7bff);
    cr_assert_eq(shard_f32_to_f16(65520.0f), 0x7c00, "65520 ties to inf");
    cr_assert_eq(shard_f32_to_f16(-1e10f), 0xfc00);
    cr_assert_eq(shard_f32_to_f16(ldexpf(1, -24)), 0x0001);
    cr_assert_eq(shard_f32_to_f16(ldexpf(1, -25)), 0x0000, "half the smallest subnormal ties to 0");
    cr_assert_eq(shard_f32_to_f16(nextafterf(ldexpf(1, -25), 1)), 0x0001);
    cr_assert_eq(shard_f32_to_f16(3 * ldexpf(1, -25)), 0x0002, "subnormal tie to even");
    cr_assert_eq(shard_f32_to_f16(ldexpf(1, -14) - ldexpf(1, -25)), 0x0400, "tie into the smallest normal");
    cr_assert_eq(shard_f32_to_f16(ldexpf(1, -30)), 0x0000);
    cr_assert_eq(shard_f32_to_f16(-ldexpf(1, -30)), 0x8000, "sign of underflow kept");
    cr_assert_eq(shard_f32_to_f16(1e-45f), 0x0000, "f32 subnormal");
    cr_assert_eq(shard_f32_to_f16(INFINITY), 0x7c00);
    uint16_t n = shard_f32_to_f16(NAN);
    cr_assert((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0, "NaN stays NaN");
    /* every finite half survives f16 -> f32 -> f16 */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue;
        cr_assert_eq(shard_f32_to_f16(shard_f16_to_f32((uint16_t)h)), h, "round trip of 0x%04x", h);
    }
}

#ifdef __FLT16_MAX__
Test(shard, f32_to_f16_matches_compiler_float16)
{
    /* _Float16 conversions (IEEE RNE) as an independent reference on random bit patterns */
    sf_rng r;
    rng_seed(&r, 42, 0);
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)rng_next(&r);
        /* bias towards the half range: exponents 100..150 */
        if (i % 2)
            u = (u & 0x807fffffu) | ((uint32_t)(100 + rng_below(&r, 51)) << 23);
        float f;
        memcpy(&f, &u, 4);
        if (isnan(f))
            continue;
        _Float16 h = (_Float16)f;
        uint16_t ref;
        memcpy(&ref, &h, 2);
        cr_assert_eq(shard_f32_to_f16(f), ref, "bits 0x%08x", u);
    }
}
#endif

/* bf16 reference: nearest of the two truncation neighbours, ties to even, in double. */
static uint16_t bf16_ref(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
    double vf = f, vl = shard_bf16_to_f32(lo), vh = shard_bf16_to_f32(hi);
    if ((u & 0xffff) == 0)
        return lo;
    /* an infinite upper neighbour counts as 2^128 (where RNE overflow starts) */
    double dl = fabs(vf - vl), dh = isinf(vh) ? ldexp(1, 128) - fabs(vf) : fabs(vh - vf);
    if (dl < dh)
        return lo;
    if (dh < dl)
        return hi;
    return (lo & 1) ? hi : lo;
}

Test(shard, bf16_conversions)
{
    cr_assert_eq(shard_bf16_to_f32(0x3f80), 1.0f);
    cr_assert_eq(shard_f32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(shard_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80, "tie to even (down)");
    cr_assert_eq(shard_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82, "tie to even (up)");
    cr_assert_eq(shard_f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(shard_f32_to_bf16(-INFINITY), 0xff80);
    cr_assert_eq(shard_f32_to_bf16(3.4028235e38f), 0x7f80, "FLT_MAX rounds to inf");
    uint32_t snan = 0x7f800001u;
    float fn;
    memcpy(&fn, &snan, 4);
    cr_assert(isnan(shard_bf16_to_f32(shard_f32_to_bf16(fn))), "low-payload NaN stays NaN");
    cr_assert_eq(shard_f32_to_bf16(1e-45f), 0x0000);
    cr_assert_eq(shard_bf16_to_f32(0x0001), ldexpf(1, -133), "bf16 subnormal");
    sf_rng r;
    rng_seed(&r, 9, 0);
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)rng_next(&r);
        float f;
        memcpy(&f, &u, 4);
        if (isnan(f) || isinf(f))
            continue;
        cr_assert_eq(shard_f32_to_bf16(f), bf16_ref(f), "bits 0x%08x", u);
    }
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f))
            continue;
        cr_assert_eq(shard_f32_to_bf16(shard_bf16_to_f32((uint16_t)h)), h);
    }
}

Test(shard, dtype_names)
{
    cr_assert_str_eq(shard_dtype_name(SHARD_F32), "float32");
    cr_assert_str_eq(shard_dtype_name(SHARD_F16), "float16");
    cr_assert_str_eq(shard_dtype_name(SHARD_BF16), "bfloat16");
}

/* model/hook attributes that are arrays of strings (h5py writes a list that way): ignored, not
 * read into one string's room (a stack or heap overrun before); a single one with a newline and
 * an escape sequence arrives as it is (quoting is for the printers). */
Test(shard, string_array_attributes_ignored)
{
    float x[8] = {0};
    char p[512];
    snprintf(p, sizeof p, "%s/a.h5", dir);
    shard_write_opts o = {.dtype = SHARD_F32, .chunk_rows = 0, .context_size = -1};
    sf_err err = {0};
    cr_assert_eq(shard_write(p, 2, 4, x, NULL, NULL, &o, &err), SF_OK, "%s", err.msg);
    shard_hdf5_lock();
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hsize_t n4[1] = {4};
    hid_t sp4 = H5Screate_simple(1, n4, NULL), sp1 = H5Screate(H5S_SCALAR);
    hid_t vl = H5Tcopy(H5T_C_S1);
    H5Tset_size(vl, H5T_VARIABLE);
    const char *many[4] = {"a", "bb", "ccc", "dddd"};
    hid_t at = H5Acreate2(f, "model", vl, sp4, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(H5Awrite(at, vl, many) >= 0);
    H5Aclose(at);
    hid_t fx = H5Tcopy(H5T_C_S1);
    H5Tset_size(fx, 64);
    char fixed[4][64] = {"x", "y", "z", "w"};
    at = H5Acreate2(f, "hook", fx, sp4, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(H5Awrite(at, fx, fixed) >= 0);
    H5Aclose(at);
    H5Fclose(f);
    shard_hdf5_unlock();
    shard_set s;
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_OK, "%s", err.msg);
    cr_assert_str_empty(s.model);
    cr_assert_str_empty(s.hook);
    shard_set_free(&s);

    shard_hdf5_lock();
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(f, "model");
    const char *one = "gpt\n\x1b[2J";
    at = H5Acreate2(f, "model", vl, sp1, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(H5Awrite(at, vl, &one) >= 0);
    H5Aclose(at);
    H5Fclose(f);
    H5Tclose(vl);
    H5Tclose(fx);
    H5Sclose(sp4);
    H5Sclose(sp1);
    shard_hdf5_unlock();
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_OK, "%s", err.msg);
    cr_assert_str_eq(s.model, "gpt\n\x1b[2J");
    shard_set_free(&s);
}
