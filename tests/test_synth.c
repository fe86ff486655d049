/* Tests for data/synth.c: files match the generator, sparsity ~k, unit-norm truth, gradients equal
 * P^T (P x - y) recomputed here, important features dominate the loss, CLI errors, speed. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/shard.h"
#include "data/synth.h"
#include "host/cmd.h"
#include "host/fsutil.h"
#include "host/safetensors.h"

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/sf_synth_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}
static void teardown(void) { fs_remove_tree(dir); }

TestSuite(synth, .init = setup, .fini = teardown);

static int run(const char *args)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", args);
    char *argv[32];
    int argc = 0;
    for (char *t = strtok(buf, " "); t && argc < 32; t = strtok(NULL, " "))
        argv[argc++] = t;
    return cmd_synth(argc, argv);
}

static float *read_all(const shard_set *s, int grads)
{
    float *v = malloc((size_t)s->rows * s->d * sizeof(float));
    float *g = grads ? malloc((size_t)s->rows * s->d * sizeof(float)) : NULL;
    sf_err err = {0};
    cr_assert_eq(shard_set_read(s, 0, s->rows, v, g, &err), SF_OK, "%s", err.msg);
    if (grads) {
        free(v);
        return g;
    }
    return v;
}

Test(synth, files_match_generator_and_truth_is_sane)
{
    char args[512];
    snprintf(args, sizeof args, "--out %s/o --d 32 --features 256 --tokens 10000 --k 6 --seed 3 --shards 3", dir);
    cr_assert_eq(run(args), 0);
    char p[512];
    snprintf(p, sizeof p, "%s/o", dir);
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(s.n_files, 3);
    cr_assert_eq(s.rows, 10000);
    cr_assert_eq(s.d, 32);
    cr_assert_eq(s.dtype, SHARD_F32);
    cr_assert_eq(s.has_gradients, 0);
    cr_assert_gt(s.files[0].chunk_rows, 0, "written chunked");
    float *x = read_all(&s, 0);
    synth_model m;
    synth_model_init(&m, 32, 256, 6, 0, 3);
    float *ref = malloc((size_t)10000 * 32 * sizeof(float));
    synth_generate(&m, 0, 10000, ref, NULL, NULL);
    cr_assert_eq(memcmp(x, ref, (size_t)10000 * 32 * sizeof(float)), 0, "file rows equal the generator");
    /* generating a sub-range gives the same rows (pure function of token index) */
    synth_generate(&m, 4000, 333, ref, NULL, NULL);
    cr_assert_eq(memcmp(x + 4000 * 32, ref, 333 * 32 * sizeof(float)), 0);

    st_file t;
    snprintf(p, sizeof p, "%s/o/truth.safetensors", dir);
    cr_assert_eq(st_read(p, &t, &err), SF_OK, "%s", err.msg);
    const st_tensor *w;
    int64_t shape[2] = {256, 32};
    cr_assert_eq(st_expect(&t, "W_dec", ST_F32, 2, shape, &w, &err), SF_OK, "%s", err.msg);
    const float *W = w->data;
    for (int f = 0; f < 256; f++) {
        double n = 0;
        for (int i = 0; i < 32; i++)
            n += (double)W[f * 32 + i] * W[f * 32 + i];
        cr_assert(fabs(sqrt(n) - 1) < 1e-5, "row %d norm %g", f, sqrt(n));
    }
    cr_assert_eq(memcmp(W, m.W, sizeof(float) * 256 * 32), 0);
    const st_tensor *imp = st_get(&t, "important");
    cr_assert_not_null(imp);
    cr_assert_eq(imp->dtype, ST_I32);
    cr_assert_eq(imp->shape[0], 0, "no important features without a downstream loss");
    cr_assert_str_eq(st_get_meta(&t, "d"), "32");
    cr_assert_str_eq(st_get_meta(&t, "features"), "256");
    cr_assert_null(st_get(&t, "P"), "no loss matrix without --gradients");
    st_file_free(&t);
    free(x);
    free(ref);
    synth_model_free(&m);
    shard_set_free(&s);
}

Test(synth, mean_active_features_is_k)
{
    double ks[3] = {8, 2.5, 30};
    for (int c = 0; c < 3; c++) {
        synth_model m;
        synth_model_init(&m, 16, 512, ks[c], 0, 11);
        double sp = 0;
        for (int f = 0; f < 512; f++) {
            sp += m.p[f];
            cr_assert(m.p[f] > 0 && m.p[f] <= 1);
            if (f)
                cr_assert_leq(m.p[f], m.p[f - 1], "power law: non-increasing");
        }
        cr_assert(fabs(sp - ks[c]) < 1e-3 * ks[c], "sum of probabilities %g vs k %g", sp, ks[c]);
        int n = 65536;
        float *x = malloc((size_t)n * 16 * sizeof(float));
        int32_t *na = malloc((size_t)n * sizeof(int32_t));
        synth_generate(&m, 0, n, x, NULL, na);
        double mean = 0;
        for (int i = 0; i < n; i++)
            mean += na[i];
        mean /= n;
        cr_assert(fabs(mean - ks[c]) < 0.03 * ks[c] + 0.02, "mean active %g vs k %g", mean, ks[c]);
        free(x);
        free(na);
        synth_model_free(&m);
    }
}

Test(synth, gradients_are_the_loss_gradient)
{
    char args[512];
    snprintf(args, sizeof args, "--out %s/g --d 24 --features 96 --tokens 3000 --k 4 --gradients --seed 5", dir);
    cr_assert_eq(run(args), 0);
    char p[512];
    snprintf(p, sizeof p, "%s/g", dir);
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, p, 1, &err), SF_OK, "%s", err.msg);
    float *x = read_all(&s, 0), *g = read_all(&s, 1);
    st_file t;
    snprintf(p, sizeof p, "%s/g/truth.safetensors", dir);
    cr_assert_eq(st_read(p, &t, &err), SF_OK, "%s", err.msg);
    const st_tensor *tp, *ty;
    int64_t sp[2] = {24, 24}, sy[1] = {24};
    cr_assert_eq(st_expect(&t, "P", ST_F32, 2, sp, &tp, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(st_expect(&t, "y", ST_F32, 1, sy, &ty, &err), SF_OK, "%s", err.msg);
    const float *P = tp->data, *y = ty->data;
    for (int64_t r = 0; r < 3000; r++) {
        double px[24];
        for (int i = 0; i < 24; i++) {
            px[i] = -y[i];
            for (int j = 0; j < 24; j++)
                px[i] += (double)P[i * 24 + j] * x[r * 24 + j];
        }
        for (int j = 0; j < 24; j++) {
            double ref = 0;
            for (int i = 0; i < 24; i++)
                ref += (double)P[i * 24 + j] * px[i];
            float v = g[r * 24 + j];
            cr_assert(isfinite(v));
            cr_assert(fabs(v - ref) <= 1e-4 + 1e-4 * fabs(ref), "row %lld col %d: %g vs %g", (long long)r, j, v, ref);
        }
    }
    /* Important features: small in x, but the loss amplifies their directions (|P^T P u| large). */
    const st_tensor *ti = st_get(&t, "important"), *tw = st_get(&t, "W_dec");
    const int32_t *imp = ti->data;
    const float *W = tw->data;
    int is_imp[96] = {0};
    for (int i = 0; i < ti->shape[0]; i++)
        is_imp[imp[i]] = 1;
    double gain[2] = {0}, cnt[2] = {0};
    for (int f = 0; f < 96; f++) {
        double n2 = 0;
        for (int i = 0; i < 24; i++) {
            double pu = 0;
            for (int j = 0; j < 24; j++)
                pu += (double)P[i * 24 + j] * W[f * 24 + j];
            n2 += pu * pu;
        }
        gain[is_imp[f]] += sqrt(n2);
        cnt[is_imp[f]] += 1;
    }
    cr_assert_gt(cnt[1], 0);
    cr_assert_gt(gain[1] / cnt[1], 3 * gain[0] / cnt[0], "important directions dominate the loss");
    st_file_free(&t);
    free(x);
    free(g);
    shard_set_free(&s);
}

Test(synth, half_dtypes_and_determinism)
{
    char args[512], p[512];
    sf_err err = {0};
    const char *dt[2] = {"f16", "bf16"};
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, "--out %s/%s --d 16 --features 64 --tokens 5000 --k 3 --dtype %s --gradients",
                 dir, dt[k], dt[k]);
        cr_assert_eq(run(args), 0);
        snprintf(p, sizeof p, "%s/%s", dir, dt[k]);
        shard_set s;
        cr_assert_eq(shard_set_open(&s, p, 1, &err), SF_OK, "%s", err.msg);
        cr_assert_eq(s.dtype, k == 0 ? SHARD_F16 : SHARD_BF16);
        float *x = read_all(&s, 0);
        synth_model m;
        synth_model_init(&m, 16, 64, 3, 1, 0);
        float *ref = malloc((size_t)5000 * 16 * sizeof(float));
        synth_generate(&m, 0, 5000, ref, NULL, NULL);
        for (int i = 0; i < 5000 * 16; i++) {
            float q = k == 0 ? shard_f16_to_f32(shard_f32_to_f16(ref[i])) : shard_bf16_to_f32(shard_f32_to_bf16(ref[i]));
            cr_assert_eq(x[i], q);
        }
        free(x);
        free(ref);
        synth_model_free(&m);
        shard_set_free(&s);
    }
    /* same seed, same data; different seed, different data */
    synth_model a, b;
    synth_model_init(&a, 8, 32, 2, 0, 1);
    synth_model_init(&b, 8, 32, 2, 0, 2);
    float xa[800], xb[800], xc[800];
    synth_generate(&a, 0, 100, xa, NULL, NULL);
    synth_generate(&a, 0, 100, xc, NULL, NULL);
    synth_generate(&b, 0, 100, xb, NULL, NULL);
    cr_assert_eq(memcmp(xa, xc, sizeof xa), 0);
    cr_assert_neq(memcmp(xa, xb, sizeof xa), 0);
    synth_model_free(&a);
    synth_model_free(&b);
}

Test(synth, rerun_with_fewer_shards_drops_stale_ones)
{
    char args[512], p[512];
    snprintf(args, sizeof args, "--out %s/r --d 4 --features 8 --tokens 100 --k 1 --shards 3", dir);
    cr_assert_eq(run(args), 0);
    snprintf(args, sizeof args, "--out %s/r --d 4 --features 8 --tokens 100 --k 1 --shards 1", dir);
    cr_assert_eq(run(args), 0);
    snprintf(p, sizeof p, "%s/r", dir);
    shard_set s;
    sf_err err = {0};
    cr_assert_eq(shard_set_open(&s, p, 0, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(s.n_files, 1);
    cr_assert_eq(s.rows, 100);
    shard_set_free(&s);
}

Test(synth, bad_arguments_exit_2)
{
    char args[512];
    cr_assert_eq(run("--d 8"), 2, "missing --out");
    snprintf(args, sizeof args, "--out %s/x --dtype f64", dir);
    cr_assert_eq(run(args), 2);
    snprintf(args, sizeof args, "--out %s/x --bogus 1", dir);
    cr_assert_eq(run(args), 2);
    snprintf(args, sizeof args, "--out %s/x --features 4 --k 5", dir);
    cr_assert_eq(run(args), 2);
    snprintf(args, sizeof args, "--out %s/x --d 0", dir);
    cr_assert_eq(run(args), 2);
    snprintf(args, sizeof args, "--out %s/x --tokens 12x", dir);
    cr_assert_eq(run(args), 2);
    snprintf(args, sizeof args, "--out %s/x --k", dir);
    cr_assert_eq(run(args), 2, "option without value");
    snprintf(args, sizeof args, "%s/x", dir);
    cr_assert_not(fs_exists(args), "nothing written on bad arguments");
    cr_assert_eq(run("--help"), 0);
    /* --out is an existing file: the directory cannot be made */
    snprintf(args, sizeof args, "%s/file", dir);
    sf_err err;
    cr_assert_eq(fs_write_atomic(args, "x", 1, &err), SF_OK);
    snprintf(args, sizeof args, "--out %s/file --tokens 10", dir);
    cr_assert_eq(run(args), 2);
}

Test(synth, default_size_is_fast)
{
    char args[512];
    snprintf(args, sizeof args, "--out %s/fast --gradients", dir);
    clock_t c0 = clock();
    cr_assert_eq(run(args), 0);
    double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
    cr_assert_lt(cpu, 2.0, "64k tokens x d=64 with gradients took %.2f s of CPU", cpu);
}
