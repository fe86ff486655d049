/* Feature statistics: values in feature_stats.h5 and feature_stats.csv against hand-computed ones. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/fsutil.h"
#include "host/stats.h"
#include "kernels/backend.h"

#define N 4

static void make_state(sae_state *s)
{
    sae_state_alloc(s, 3, N);
    int64_t fc[N] = {10, 0, 4, 1};
    double as[N] = {25.0, 0, 2.0, 0.5};
    float am[N] = {4.5f, 0, 1.0f, 0.5f};
    int64_t lf[N] = {99, -1, 50, 7};
    int64_t sf[N] = {0, 1000, 200, 5000};
    double gs[N] = {5.0, 0, 8.0, 0.25};
    for (int i = 0; i < N; i++) {
        s->fire_count[i] = fc[i];
        s->act_sum[i] = as[i];
        s->act_max[i] = am[i];
        s->last_fired_step[i] = lf[i];
        s->since_fired[i] = sf[i];
        s->gate_sum[i] = gs[i];
    }
}

static void read_ds(hid_t f, const char *name, hid_t type, void *out)
{
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert(ds >= 0, "dataset %s", name);
    cr_assert(H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0);
    H5Dclose(ds);
}

Test(stats, h5_and_csv_values)
{
    char root[64], dir[128], path[256];
    snprintf(root, sizeof root, "/tmp/sf_stats_XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    snprintf(dir, sizeof dir, "%s/stats", root);
    sae_state s;
    make_state(&s);
    sae_metrics ev;
    memset(&ev, 0, sizeof ev);
    ev.fvu = 0.125;
    ev.gw_err = 0.5;
    ev.l0 = 3.0;
    ev.tokens = 77;
    sf_err err = {0};
    cr_assert_eq(stats_write(dir, &s, N, 1000, 1000, 1, &ev, &err), SF_OK, "%s", err.msg);

    snprintf(path, sizeof path, "%s/feature_stats.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    int64_t fc[N], lf[N];
    double freq[N], mean[N], gate[N];
    float mx[N];
    uint8_t dead[N];
    read_ds(f, "fire_count", H5T_NATIVE_INT64, fc);
    read_ds(f, "frequency", H5T_NATIVE_DOUBLE, freq);
    read_ds(f, "mean_act", H5T_NATIVE_DOUBLE, mean);
    read_ds(f, "max_act", H5T_NATIVE_FLOAT, mx);
    read_ds(f, "last_fired_step", H5T_NATIVE_INT64, lf);
    read_ds(f, "dead", H5T_NATIVE_UINT8, dead);
    read_ds(f, "mean_gate", H5T_NATIVE_DOUBLE, gate);
    cr_assert_eq(fc[0], 10);
    cr_assert_eq(fc[1], 0);
    cr_assert_float_eq(freq[0], 0.01, 1e-15);
    cr_assert_float_eq(freq[2], 0.004, 1e-15);
    cr_assert_float_eq(mean[0], 2.5, 1e-15);
    cr_assert_eq(mean[1], 0.0);
    cr_assert_float_eq(mean[2], 0.5, 1e-15);
    cr_assert_eq(mx[0], 4.5f);
    cr_assert_eq(lf[1], -1);
    cr_assert_eq(lf[2], 50);
    /* dead: never fired (1) or since_fired >= 1000 (3) */
    cr_assert_eq(dead[0], 0);
    cr_assert_eq(dead[1], 1);
    cr_assert_eq(dead[2], 0);
    cr_assert_eq(dead[3], 1);
    cr_assert_float_eq(gate[0], 0.5, 1e-15);
    cr_assert_float_eq(gate[2], 2.0, 1e-15);
    double fvu = 0;
    int64_t tokens = 0;
    hid_t a = H5Aopen(f, "fvu", H5P_DEFAULT);
    cr_assert(a >= 0);
    H5Aread(a, H5T_NATIVE_DOUBLE, &fvu);
    H5Aclose(a);
    a = H5Aopen(f, "tokens", H5P_DEFAULT);
    cr_assert(a >= 0);
    H5Aread(a, H5T_NATIVE_INT64, &tokens);
    H5Aclose(a);
    cr_assert_eq(fvu, 0.125);
    cr_assert_eq(tokens, 1000);
    cr_assert(H5Aexists(f, "gw_err") > 0);
    H5Fclose(f);

    snprintf(path, sizeof path, "%s/feature_stats.csv", dir);
    char *csv;
    size_t len;
    cr_assert_eq(fs_read_all(path, &csv, &len, &err), SF_OK);
    const char *want = "latent,fire_count,frequency,mean_act,max_act,last_fired_step,dead,mean_gate\n"
                       "0,10,0.01,2.5,4.5,99,0,0.5\n"
                       "1,0,0,0,0,-1,1,0\n"
                       "2,4,0.004,0.5,1,50,0,2\n"
                       "3,1,0.001,0.5,0.5,7,1,0.25\n";
    cr_assert_str_eq(csv, want);
    free(csv);
    sae_state_free(&s);
    fs_remove_tree(root);
}

Test(stats, no_gate_no_eval)
{
    char root[64], path[256];
    snprintf(root, sizeof root, "/tmp/sf_stats_XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    sae_state s;
    make_state(&s);
    sf_err err = {0};
    cr_assert_eq(stats_write(root, &s, N, 0, 10000, 0, NULL, &err), SF_OK, "%s", err.msg);
    snprintf(path, sizeof path, "%s/feature_stats.h5", root);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0);
    cr_assert(H5Lexists(f, "mean_gate", H5P_DEFAULT) == 0);
    cr_assert(H5Aexists(f, "fvu") == 0);
    double freq[N];
    read_ds(f, "frequency", H5T_NATIVE_DOUBLE, freq);
    cr_assert_eq(freq[0], 0.0, "no tokens: frequency 0, not NaN");
    H5Fclose(f);
    snprintf(path, sizeof path, "%s/feature_stats.csv", root);
    char *csv;
    size_t len;
    cr_assert_eq(fs_read_all(path, &csv, &len, &err), SF_OK);
    const char *hdr = "latent,fire_count,frequency,mean_act,max_act,last_fired_step,dead\n";
    cr_assert(strncmp(csv, hdr, strlen(hdr)) == 0, "%s", csv);
    cr_assert(strstr(csv, "\n3,1,0,0.5,0.5,7,0\n") != NULL, "since_fired 5000 < 10000: alive\n%s", csv);
    cr_assert(strstr(csv, "mean_gate") == NULL);
    free(csv);
    snprintf(path, sizeof path, "%s/feature_stats.h5.tmp.%ld", root, (long)getpid());
    cr_assert(!fs_exists(path));
    sae_state_free(&s);
    fs_remove_tree(root);
}
