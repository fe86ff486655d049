/* Feature statistics (SPEC §4): per-latent fire count, frequency, mean/max activation when
 * active, last step fired, dead flag (and mean gate for gsae) to feature_stats.h5 and
 * feature_stats.csv, both written atomically; and `saeforge stats`, which computes them for a
 * trained SAE over a data set with the inference rule. */
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../data/shard.h"
#include "../data/stream.h"
#include "../kernels/backend.h"
#include "../kernels/sf_check.h"
#include "cmd.h"
#include "export.h"
#include "fsutil.h"

typedef struct feat_table {
    int n;
    double *freq, *mean_act, *mean_gate;
    uint8_t *dead;
} feat_table;

static void table_build(feat_table *t, const sae_state *s, int n, int64_t tokens, int64_t dead_tokens,
                        int with_gate)
{
    t->n = n;
    t->freq = malloc((size_t)n * sizeof(double) + 1);
    t->mean_act = malloc((size_t)n * sizeof(double) + 1);
    t->mean_gate = with_gate ? malloc((size_t)n * sizeof(double) + 1) : NULL;
    t->dead = malloc((size_t)n + 1);
    SF_CHECK(t->freq && t->mean_act && t->dead && (!with_gate || t->mean_gate));
    for (int i = 0; i < n; i++) {
        int64_t c = s->fire_count[i];
        t->freq[i] = tokens > 0 ? (double)c / (double)tokens : 0.0;
        t->mean_act[i] = c > 0 ? s->act_sum[i] / (double)c : 0.0;
        if (with_gate)
            t->mean_gate[i] = c > 0 ? s->gate_sum[i] / (double)c : 0.0;
        t->dead[i] = (uint8_t)stats_latent_dead(s, i, dead_tokens);
    }
}

static void table_free(feat_table *t)
{
    free(t->freq);
    free(t->mean_act);
    free(t->mean_gate);
    free(t->dead);
}

static int h5_dataset(hid_t f, const char *name, hid_t type, int n, const void *data)
{
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    if (sp < 0)
        return -1;
    hid_t ds = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = ds < 0 ? -1 : (H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0);
    if (ds >= 0)
        H5Dclose(ds);
    H5Sclose(sp);
    return rc;
}

static int h5_attr(hid_t f, const char *name, hid_t type, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    if (sp < 0)
        return -1;
    hid_t a = H5Acreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 ? -1 : (H5Awrite(a, type, v) < 0 ? -1 : 0);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int write_h5(const char *path, const sae_state *s, const feat_table *t, int64_t tokens,
                    int64_t dead_tokens, const sae_metrics *eval)
{
    hid_t f;
    H5E_BEGIN_TRY { f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT); }
    H5E_END_TRY;
    if (f < 0)
        return -1;
    int rc = 0, n = t->n;
    int64_t n64 = n, dead_count = 0;
    for (int i = 0; i < n; i++)
        dead_count += t->dead[i];
    H5E_BEGIN_TRY
    {
        rc |= h5_dataset(f, "fire_count", H5T_NATIVE_INT64, n, s->fire_count);
        rc |= h5_dataset(f, "frequency", H5T_NATIVE_DOUBLE, n, t->freq);
        rc |= h5_dataset(f, "mean_act", H5T_NATIVE_DOUBLE, n, t->mean_act);
        rc |= h5_dataset(f, "max_act", H5T_NATIVE_FLOAT, n, s->act_max);
        rc |= h5_dataset(f, "last_fired_step", H5T_NATIVE_INT64, n, s->last_fired_step);
        rc |= h5_dataset(f, "dead", H5T_NATIVE_UINT8, n, t->dead);
        if (t->mean_gate)
            rc |= h5_dataset(f, "mean_gate", H5T_NATIVE_DOUBLE, n, t->mean_gate);
        rc |= h5_attr(f, "tokens", H5T_NATIVE_INT64, &tokens);
        rc |= h5_attr(f, "n_latents", H5T_NATIVE_INT64, &n64);
        rc |= h5_attr(f, "dead_tokens", H5T_NATIVE_INT64, &dead_tokens);
        rc |= h5_attr(f, "dead_count", H5T_NATIVE_INT64, &dead_count);
        if (eval) {
            rc |= h5_attr(f, "fvu", H5T_NATIVE_DOUBLE, &eval->fvu);
            rc |= h5_attr(f, "l0", H5T_NATIVE_DOUBLE, &eval->l0);
            rc |= h5_attr(f, "gw_err", H5T_NATIVE_DOUBLE, &eval->gw_err);
            rc |= h5_attr(f, "loss", H5T_NATIVE_DOUBLE, &eval->loss);
            rc |= h5_attr(f, "auxk", H5T_NATIVE_DOUBLE, &eval->auxk);
            rc |= h5_attr(f, "eval_tokens", H5T_NATIVE_INT64, &eval->tokens);
        }
    }
    H5E_END_TRY;
    if (H5Fclose(f) < 0)
        rc = -1;
    if (rc)
        return -1;
    /* HDF5 does not fsync: do it here before the rename makes the file visible */
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

static char *build_csv(const sae_state *s, const feat_table *t, size_t *len)
{
    size_t cap = 256 + (size_t)t->n * 160, n = 0;
    char *buf = malloc(cap);
    SF_CHECK(buf != NULL);
    n += (size_t)snprintf(buf + n, cap - n, "latent,fire_count,frequency,mean_act,max_act,last_fired_step,dead%s\n",
                          t->mean_gate ? ",mean_gate" : "");
    for (int i = 0; i < t->n; i++) {
        n += (size_t)snprintf(buf + n, cap - n, "%d,%" PRId64 ",%.9g,%.9g,%.9g,%" PRId64 ",%d", i, s->fire_count[i],
                              t->freq[i], t->mean_act[i], s->fire_count[i] > 0 ? (double)s->act_max[i] : 0.0,
                              s->last_fired_step[i], t->dead[i]);
        if (t->mean_gate)
            n += (size_t)snprintf(buf + n, cap - n, ",%.9g", t->mean_gate[i]);
        buf[n++] = '\n';
        SF_CHECK(n < cap);
    }
    *len = n;
    return buf;
}

int stats_write(const char *dir, const sae_state *s, int n, int64_t tokens, int64_t dead_tokens,
                int with_gate, const sae_metrics *eval, sf_err *err)
{
    SF_CHECK(s && n > 0 && s->fire_count && s->act_sum && s->act_max && s->since_fired && s->last_fired_step);
    SF_CHECK(!with_gate || s->gate_sum);
    int rc = fs_mkdirs(dir, err);
    if (rc)
        return rc;
    char h5[4200], h5tmp[4300], csv[4200];
    if (snprintf(h5, sizeof h5, "%s/feature_stats.h5", dir) >= (int)sizeof h5 ||
        snprintf(h5tmp, sizeof h5tmp, "%s.tmp.%ld", h5, (long)getpid()) >= (int)sizeof h5tmp ||
        snprintf(csv, sizeof csv, "%s/feature_stats.csv", dir) >= (int)sizeof csv)
        return sf_fail(err, SF_EINPUT, "stats: path too long under %s", dir);
    feat_table t;
    table_build(&t, s, n, tokens, dead_tokens, with_gate);
    if (write_h5(h5tmp, s, &t, tokens, dead_tokens, eval)) {
        unlink(h5tmp);
        table_free(&t);
        return sf_fail(err, SF_EFAIL, "cannot write %s; check the disk space and permissions", h5);
    }
    size_t len;
    char *text = build_csv(s, &t, &len);
    rc = fs_write_atomic(csv, text, len, err);
    free(text);
    table_free(&t);
    if (rc) {
        unlink(h5tmp);
        return rc;
    }
    if (rename(h5tmp, h5) != 0) {
        int e = errno;
        unlink(h5tmp);
        return sf_fail(err, SF_EFAIL, "cannot rename %s to %s (%s); check permissions", h5tmp, h5, strerror(e));
    }
    return fs_fsync_dir(dir, err);
}

/* ---- saeforge stats ------------------------------------------------------------------------ */

static void stats_usage(FILE *f)
{
    fprintf(f, "usage: saeforge stats SAE --data PATH [--out DIR] [--tokens N] [--batch B] [--threads T]\n"
               "  SAE: a run dir, checkpoint dir or SAELens/sparsify export.  PATH: shard file, dir or glob.\n"
               "  Encodes the data with the inference rule and writes feature_stats.h5/.csv to DIR\n"
               "  (default: RUN/stats for a run dir, else a stats/ dir beside the SAE).\n");
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* Default output dir: RUN/stats for a run dir; the SAE dir's stats/ otherwise. */
static void default_out(const char *sae_path, const sae_loaded *s, char *out, size_t cap)
{
    char base[4096];
    snprintf(base, sizeof base, "%s", sae_path);
    size_t l = strlen(base);
    while (l > 1 && base[l - 1] == '/')
        base[--l] = '\0';
    if (!fs_is_dir(base)) {
        char *sl = strrchr(base, '/');
        if (sl)
            *sl = '\0';
        else
            snprintf(base, sizeof base, ".");
    }
    (void)s;
    if (snprintf(out, cap, "%s/stats", base) >= (int)cap)
        out[0] = '\0';
}

int cmd_stats(int argc, char **argv)
{
    const char *sae_path = NULL, *data = NULL, *out = NULL;
    int64_t max_tokens = 0, batch = 4096, threads = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            stats_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--data") || !strcmp(a, "--out") || !strcmp(a, "--tokens") || !strcmp(a, "--batch") ||
            !strcmp(a, "--threads")) {
            if (i + 1 >= argc)
                return cli_error(2, "stats: %s needs a value; see saeforge stats --help", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--data"))
                data = v;
            else if (!strcmp(a, "--out"))
                out = v;
            else if (parse_i64(v, !strcmp(a, "--tokens") ? &max_tokens : !strcmp(a, "--batch") ? &batch : &threads))
                return cli_error(2, "stats: %s '%s' is not a non-negative integer", a, v);
        } else if (a[0] == '-' && a[1]) {
            return cli_error(2, "stats: unknown option '%s'; see saeforge stats --help", a);
        } else if (!sae_path) {
            sae_path = a;
        } else {
            return cli_error(2, "stats: unexpected argument '%s'; see saeforge stats --help", a);
        }
    }
    if (!sae_path || !data)
        return cli_error(2, "stats: need SAE and --data PATH; see saeforge stats --help");
    if (batch < 1 || batch > (1 << 20))
        return cli_error(2, "stats: --batch %" PRId64 " is out of range 1..1048576", batch);

    sf_err err = {0};
    sae_loaded s;
    if (sae_load(sae_path, 1, &s, &err))
        return cli_error(2, "%s", err.msg);
    if (s.k <= 0 && (s.arch == SAE_ARCH_TOPK || s.arch == SAE_ARCH_GSAE)) {
        sae_loaded_free(&s);
        return cli_error(2, "stats: k of %s is unknown (no config.yaml or cfg.json with k); use the run dir", sae_path);
    }
    shard_set set;
    memset(&set, 0, sizeof set);
    if (shard_set_open(&set, data, 0, &err)) {
        sae_loaded_free(&s);
        return cli_error(2, "%s", err.msg);
    }
    if (set.d != s.d) {
        int sd = set.d;
        shard_set_free(&set);
        sae_loaded_free(&s);
        return cli_error(2, "stats: %s has width d=%d but the SAE %s has d=%d; use the layer it was trained on",
                         data, sd, sae_path, s.d);
    }
    char outdir[4200];
    if (out)
        snprintf(outdir, sizeof outdir, "%s", out);
    else
        default_out(sae_path, &s, outdir, sizeof outdir);

    const int d = s.d, n = s.n, B = (int)batch;
    const int use_g = s.arch == SAE_ARCH_GSAE && set.has_gradients;
    int64_t rows = set.rows;
    if (max_tokens > 0 && max_tokens < rows)
        rows = max_tokens;

    sae_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.arch = s.arch;
    hp.d = d;
    hp.n = n;
    hp.k = s.k > 0 ? s.k : 1;
    hp.gsae_beta = s.gsae_beta;
    hp.n_prefixes = 1;
    hp.prefixes[0] = n;
    hp.aux_k = 0;
    hp.aux_alpha = 0;
    hp.dead_tokens = rows + 1;
    hp.adam_b1 = 0.9f;
    hp.adam_b2 = 0.999f;
    hp.adam_eps = 1e-8f;
    hp.theta_ema = 0.99f;
    hp.precision = SAE_PREC_FP32;
    sae_backend *be = backend_cpu_new(&hp, B, (int)threads);
    SF_CHECK(be != NULL);
    be->set_params(be, &s.p);
    sae_state st;
    sae_state_alloc(&st, d, n);
    st.theta = s.theta;
    be->set_state(be, &st);
    for (int i = 0; i < n; i++)
        st.since_fired[i] = 0;

    shard_stream_cfg sc;
    memset(&sc, 0, sizeof sc);
    sc.row_begin = 0;
    sc.row_end = rows;
    sc.window = 0;
    sc.want_gradients = use_g;
    sc.skip_bad_rows = 1;
    sc.loop = 0;
    sc.scale = 1.0f;
    sc.rank = 0;
    sc.world = 1;
    sc.prefetch_batches = 2;
    sc.batch = B;
    shard_stream *stream = NULL;
    float *x = malloc((size_t)B * d * sizeof(float)), *g = use_g ? malloc((size_t)B * d * sizeof(float)) : NULL;
    int64_t cap = (int64_t)B * (s.k > 0 ? s.k : 32);
    int *row_ptr = malloc((size_t)(B + 1) * sizeof(int)), *lat = malloc((size_t)cap * sizeof(int));
    float *val = malloc((size_t)cap * sizeof(float)), *gv = use_g ? malloc((size_t)cap * sizeof(float)) : NULL;
    SF_CHECK(x && row_ptr && lat && val && (!use_g || (g && gv)));
    int64_t *last_tok = malloc((size_t)n * sizeof(int64_t));
    SF_CHECK(last_tok != NULL);
    for (int i = 0; i < n; i++)
        last_tok[i] = -1;

    int rc = shard_stream_init(&stream, &set, &sc, &err);
    sae_metrics acc;
    memset(&acc, 0, sizeof acc);
    int64_t tokens = 0, batch_no = 0;
    while (!rc) {
        int got = shard_stream_next(stream, x, g, &err);
        if (got < 0) {
            rc = err.code ? err.code : SF_EINPUT;
            break;
        }
        if (got == 0)
            break;
        int64_t need = be->encode(be, x, g, got, s.k, cap, row_ptr, lat, val, gv);
        if (need > cap) {
            cap = need;
            lat = realloc(lat, (size_t)cap * sizeof(int));
            val = realloc(val, (size_t)cap * sizeof(float));
            if (use_g)
                gv = realloc(gv, (size_t)cap * sizeof(float));
            SF_CHECK(lat && val && (!use_g || gv));
            need = be->encode(be, x, g, got, s.k, cap, row_ptr, lat, val, gv);
            SF_CHECK(need <= cap);
        }
        for (int b = 0; b < got; b++)
            for (int e = row_ptr[b]; e < row_ptr[b + 1]; e++) {
                int i = lat[e];
                float v = val[e];
                st.fire_count[i]++;
                st.act_sum[i] += v;
                if (v > st.act_max[i])
                    st.act_max[i] = v;
                st.last_fired_step[i] = batch_no;
                last_tok[i] = tokens + b;
                if (use_g)
                    st.gate_sum[i] += gv[e];
            }
        be->eval_batch(be, x, g, got, s.k, &acc);
        tokens += got;
        batch_no++;
    }
    if (!rc && tokens == 0)
        rc = sf_fail(&err, SF_EINPUT, "stats: no usable rows in %s", data);
    if (!rc) {
        for (int i = 0; i < n; i++)
            st.since_fired[i] = last_tok[i] < 0 ? tokens : tokens - 1 - last_tok[i];
        acc.fvu = acc.fvu_den > 0 ? acc.fvu_num / acc.fvu_den : NAN;
        acc.l0 = acc.tokens ? acc.l0 / (double)acc.tokens : 0;
        acc.gw_err = acc.gw_den > 0 ? acc.gw_num / acc.gw_den : -1;
        /* dead here = never fired in this pass */
        rc = stats_write(outdir, &st, n, tokens, tokens + 1, use_g, &acc, &err);
    }
    int64_t skipped = stream ? shard_stream_skipped(stream) : 0;
    if (stream)
        shard_stream_free(stream);
    be->free(be);
    free(x); free(g); free(row_ptr); free(lat); free(val); free(gv); free(last_tok);
    int dead = 0;
    for (int i = 0; i < n; i++)
        dead += st.fire_count[i] == 0;
    sae_state_free(&st);
    shard_set_free(&set);
    sae_loaded_free(&s);
    if (rc)
        return cli_error(rc == SF_EFAIL ? 1 : 2, "%s", err.msg);
    printf("stats of %d latents over %" PRId64 " tokens%s: fvu %.4f, l0 %.2f, never fired %d (%.1f%%); wrote %s\n",
           n, tokens, skipped ? " (bad rows skipped)" : "", acc.fvu, acc.l0, dead, 100.0 * dead / n, outdir);
    return 0;
}
