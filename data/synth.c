/* `saeforge synth`: synthetic shards from a known sparse dictionary, with optional gradients of a
 * synthetic downstream loss in which some rare, small features matter a lot (the g-SAE case). */
#include "synth.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../host/cmd.h"
#include "../host/fsutil.h"
#include "../host/rng.h"
#include "../host/safetensors.h"
#include "../kernels/sf_check.h"
#include "shard_write.h"

#define SYNTH_POWER 0.7     /* p_f proportional to (f+1)^-0.7 */
#define SYNTH_LAMBDA 4.0    /* P = I + lambda * (projection onto the important subspace) */
#define SYNTH_IMP_SCALE 0.3 /* important features are small */

enum { STREAM_W = 1, STREAM_Y = 2, STREAM_BLOCK0 = 1u << 20 };

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    SF_CHECK(p);
    return p;
}

void synth_model_init(synth_model *m, int d, int F, double k, int gradients, uint64_t seed)
{
    SF_CHECK(d >= 1 && F >= 1 && k > 0 && k <= F);
    memset(m, 0, sizeof *m);
    m->d = d;
    m->F = F;
    m->seed = seed;
    m->noise = 0.01;
    m->gradients = gradients;
    m->W = xcalloc((size_t)F * (size_t)d, sizeof(float));
    m->p = xcalloc((size_t)F, sizeof(float));
    m->mag = xcalloc((size_t)F, sizeof(float));

    /* Important: every fifth feature of the rarer half (10% of F), made small. Only with
     * gradients: without a downstream loss, "important" means nothing, and the data is a
     * plain sparse dictionary. */
    m->imp = xcalloc((size_t)F, sizeof(int32_t));
    char *is_imp = xcalloc((size_t)F, 1);
    for (int f = F / 2; gradients && f < F && F >= 2; f++)
        if ((f - F / 2) % 5 == 0) {
            m->imp[m->n_imp++] = f;
            is_imp[f] = 1;
        }

    /* A random orthonormal basis Q (Gram-Schmidt); important features live in the span of its
     * first ds rows (S), the others in the complement, so the loss can amplify exactly S. */
    sf_rng r;
    rng_seed(&r, seed, STREAM_W);
    int ds = gradients && d >= 2 ? (d / 4 > 0 ? d / 4 : 1) : 0;
    double *Q = xcalloc((size_t)d * (size_t)d, sizeof(double));
    for (int i = 0; i < d; i++) {
        double *q = Q + (size_t)i * d;
        double nn;
        do {
            for (int j = 0; j < d; j++)
                q[j] = rng_normal(&r);
            for (int k = 0; k < i; k++) {
                const double *p = Q + (size_t)k * d;
                double dot = 0;
                for (int j = 0; j < d; j++)
                    dot += q[j] * p[j];
                for (int j = 0; j < d; j++)
                    q[j] -= dot * p[j];
            }
            nn = 0;
            for (int j = 0; j < d; j++)
                nn += q[j] * q[j];
        } while (nn < 1e-20);
        for (int j = 0; j < d; j++)
            q[j] /= sqrt(nn);
    }
    double *v = xcalloc((size_t)d, sizeof(double));
    for (int f = 0; f < F; f++) {
        int lo = 0, hi = d; /* basis rows this feature is drawn from */
        if (ds > 0) {
            lo = is_imp[f] ? 0 : ds;
            hi = is_imp[f] ? ds : d;
        }
        double nn;
        do {
            memset(v, 0, (size_t)d * sizeof(double));
            for (int i = lo; i < hi; i++) {
                double z = rng_normal(&r);
                for (int j = 0; j < d; j++)
                    v[j] += z * Q[(size_t)i * d + j];
            }
            nn = 0;
            for (int j = 0; j < d; j++)
                nn += v[j] * v[j];
        } while (nn < 1e-20);
        float *w = m->W + (size_t)f * (size_t)d;
        for (int j = 0; j < d; j++)
            w[j] = (float)(v[j] / sqrt(nn));
    }
    free(v);

    /* Scale c so that sum_f min(1, c (f+1)^-a) = k (bisection; the sum is monotone in c). */
    double lo = 0, hi = 1;
    for (;;) {
        double s = 0;
        for (int f = 0; f < F; f++)
            s += fmin(1.0, hi * pow(f + 1.0, -SYNTH_POWER));
        if (s >= k || hi > 1e30)
            break;
        hi *= 2;
    }
    for (int it = 0; it < 200; it++) {
        double mid = 0.5 * (lo + hi), s = 0;
        for (int f = 0; f < F; f++)
            s += fmin(1.0, mid * pow(f + 1.0, -SYNTH_POWER));
        if (s < k)
            lo = mid;
        else
            hi = mid;
    }
    for (int f = 0; f < F; f++) {
        m->p[f] = (float)fmin(1.0, hi * pow(f + 1.0, -SYNTH_POWER));
        m->mag[f] = 1.0f;
    }

    for (int j = 0; j < m->n_imp; j++)
        m->mag[m->imp[j]] = (float)SYNTH_IMP_SCALE;
    free(is_imp);

    if (gradients) {
        m->P = xcalloc((size_t)d * (size_t)d, sizeof(float));
        m->y = xcalloc((size_t)d, sizeof(float));
        m->M = xcalloc((size_t)d * (size_t)d, sizeof(float));
        m->c = xcalloc((size_t)d, sizeof(float));
        double *P = xcalloc((size_t)d * (size_t)d, sizeof(double));
        for (int i = 0; i < d; i++)
            P[(size_t)i * d + i] = 1.0;
        for (int k = 0; k < ds; k++) {
            const double *u = Q + (size_t)k * d;
            for (int a = 0; a < d; a++)
                for (int b = 0; b < d; b++)
                    P[(size_t)a * d + b] += SYNTH_LAMBDA * u[a] * u[b];
        }
        sf_rng ry;
        rng_seed(&ry, seed, STREAM_Y);
        for (int i = 0; i < d; i++)
            m->y[i] = (float)(0.1 * rng_normal(&ry));
        for (size_t i = 0; i < (size_t)d * d; i++)
            m->P[i] = (float)P[i];
        /* M = P^T P, c = P^T y from the stored float P so tests can recompute them exactly. */
        for (int a = 0; a < d; a++) {
            for (int b = 0; b < d; b++) {
                double s = 0;
                for (int i = 0; i < d; i++)
                    s += (double)m->P[(size_t)i * d + a] * m->P[(size_t)i * d + b];
                m->M[(size_t)a * d + b] = (float)s;
            }
            double s = 0;
            for (int i = 0; i < d; i++)
                s += (double)m->P[(size_t)i * d + a] * m->y[i];
            m->c[a] = (float)s;
        }
        free(P);
    }
    free(Q);
}

void synth_model_free(synth_model *m)
{
    free(m->W);
    free(m->p);
    free(m->mag);
    free(m->imp);
    free(m->P);
    free(m->y);
    free(m->M);
    free(m->c);
    memset(m, 0, sizeof *m);
}

/* One block of SYNTH_BLOCK tokens, seeded by (seed, block). */
static void gen_block(const synth_model *m, int64_t b, float *x, int32_t *nact)
{
    int d = m->d;
    sf_rng r;
    rng_seed(&r, m->seed, STREAM_BLOCK0 + (uint64_t)b);
    memset(x, 0, (size_t)SYNTH_BLOCK * (size_t)d * sizeof(float));
    memset(nact, 0, SYNTH_BLOCK * sizeof(int32_t));
    for (int f = 0; f < m->F; f++) {
        double p = m->p[f];
        if (p <= 0)
            continue;
        const float *w = m->W + (size_t)f * (size_t)d;
        double lq = p < 1 ? log1p(-p) : 0;
        int64_t t = -1;
        for (;;) {
            /* Geometric gaps between active tokens: work is proportional to activations. */
            if (p >= 1) {
                t++;
            } else {
                double u = rng_uniform(&r);
                if (u < 1e-300)
                    u = 1e-300;
                double gap = floor(log(u) / lq);
                if ((double)t + 1.0 + gap >= SYNTH_BLOCK)
                    break;
                t += 1 + (int64_t)gap;
            }
            if (t >= SYNTH_BLOCK)
                break;
            float a = (float)(m->mag[f] * (0.5 + rng_uniform(&r)));
            float *xt = x + (size_t)t * (size_t)d;
            for (int i = 0; i < d; i++)
                xt[i] += a * w[i];
            nact[t]++;
        }
    }
    float noise = (float)m->noise;
    for (size_t i = 0; i < (size_t)SYNTH_BLOCK * (size_t)d; i++)
        x[i] += noise * (float)rng_normal(&r);
}

static void grad_rows(const synth_model *m, const float *x, float *g, int64_t n)
{
    int d = m->d;
    for (int64_t t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * (size_t)d;
        float *gt = g + (size_t)t * (size_t)d;
        for (int a = 0; a < d; a++) {
            const float *row = m->M + (size_t)a * (size_t)d;
            float s = 0;
            for (int b = 0; b < d; b++)
                s += row[b] * xt[b];
            gt[a] = s - m->c[a];
        }
    }
}

void synth_generate(const synth_model *m, int64_t t0, int64_t n, float *x, float *g, int32_t *n_active)
{
    SF_CHECK(t0 >= 0 && n >= 0);
    SF_CHECK(!g || m->gradients);
    int d = m->d;
    float *bx = malloc((size_t)SYNTH_BLOCK * (size_t)d * sizeof(float));
    int32_t *bn = malloc(SYNTH_BLOCK * sizeof(int32_t));
    SF_CHECK(bx && bn);
    int64_t t = t0;
    while (t < t0 + n) {
        int64_t b = t / SYNTH_BLOCK, off = t - b * SYNTH_BLOCK;
        int64_t cnt = SYNTH_BLOCK - off;
        if (cnt > t0 + n - t)
            cnt = t0 + n - t;
        gen_block(m, b, bx, bn);
        memcpy(x + (size_t)(t - t0) * (size_t)d, bx + (size_t)off * (size_t)d, (size_t)cnt * (size_t)d * sizeof(float));
        if (n_active)
            memcpy(n_active + (t - t0), bn + off, (size_t)cnt * sizeof(int32_t));
        if (g)
            grad_rows(m, x + (size_t)(t - t0) * (size_t)d, g + (size_t)(t - t0) * (size_t)d, cnt);
        t += cnt;
    }
    free(bx);
    free(bn);
}

static int write_truth(const synth_cfg *cfg, const synth_model *m, sf_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/truth.safetensors", cfg->out);
    st_writer w;
    st_writer_init(&w);
    int64_t s_w[2] = {m->F, m->d}, s_f[1] = {m->F}, s_i[1] = {m->n_imp}, s_p[2] = {m->d, m->d}, s_y[1] = {m->d};
    st_writer_add(&w, "W_dec", ST_F32, 2, s_w, m->W);
    st_writer_add(&w, "freq", ST_F32, 1, s_f, m->p);
    st_writer_add(&w, "magnitude_scale", ST_F32, 1, s_f, m->mag);
    st_writer_add(&w, "important", ST_I32, 1, s_i, m->imp);
    if (m->gradients) {
        st_writer_add(&w, "P", ST_F32, 2, s_p, m->P);
        st_writer_add(&w, "y", ST_F32, 1, s_y, m->y);
    }
    char buf[64];
    st_writer_meta(&w, "generator", "saeforge synth");
    snprintf(buf, sizeof buf, "%d", m->d);
    st_writer_meta(&w, "d", buf);
    snprintf(buf, sizeof buf, "%d", m->F);
    st_writer_meta(&w, "features", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)cfg->tokens);
    st_writer_meta(&w, "tokens", buf);
    snprintf(buf, sizeof buf, "%g", cfg->k);
    st_writer_meta(&w, "k", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)cfg->seed);
    st_writer_meta(&w, "seed", buf);
    snprintf(buf, sizeof buf, "%g", m->noise);
    st_writer_meta(&w, "noise_std", buf);
    st_writer_meta(&w, "dtype", shard_dtype_name(cfg->dtype));
    st_writer_meta(&w, "gradients", m->gradients ? "true" : "false");
    if (m->gradients)
        st_writer_meta(&w, "loss", "L = 0.5*|P x - y|^2, g = P^T (P x - y)");
    int rc = st_writer_commit(&w, path, err);
    st_writer_free(&w);
    return rc;
}

int synth_write(const synth_cfg *cfg, sf_err *err)
{
    int rc = fs_mkdirs(cfg->out, err);
    if (rc != SF_OK)
        return rc;
    synth_model m;
    synth_model_init(&m, cfg->d, cfg->features, cfg->k, cfg->gradients, cfg->seed);
    size_t esz = cfg->dtype == SHARD_F32 ? 4 : 2;
    int64_t chunk = (int64_t)((2u << 20) / ((size_t)cfg->d * esz));
    if (chunk < 1)
        chunk = 1;
    int64_t per = cfg->tokens / cfg->shards, extra = cfg->tokens % cfg->shards;
    float *x = malloc((size_t)SYNTH_BLOCK * (size_t)cfg->d * sizeof(float));
    float *g = cfg->gradients ? malloc((size_t)SYNTH_BLOCK * (size_t)cfg->d * sizeof(float)) : NULL;
    SF_CHECK(x && (!cfg->gradients || g));
    char path[4096];
    int64_t t = 0;
    int written = 0;
    for (int s = 0; s < cfg->shards && rc == SF_OK; s++) {
        int64_t rows = per + (s < extra ? 1 : 0);
        snprintf(path, sizeof path, "%s/shard_%03d.h5", cfg->out, s);
        shard_write_opts o = {.dtype = cfg->dtype, .chunk_rows = chunk, .with_gradients = cfg->gradients,
                              .model = "synthetic", .hook = "synth", .context_size = -1};
        shard_writer w;
        rc = shard_writer_open(&w, path, rows, cfg->d, &o, err);
        if (rc != SF_OK)
            break;
        for (int64_t r = 0; r < rows && rc == SF_OK;) {
            /* pieces aligned to generation blocks, so each block is generated once */
            int64_t n = SYNTH_BLOCK - (t + r) % SYNTH_BLOCK;
            if (n > rows - r)
                n = rows - r;
            synth_generate(&m, t + r, n, x, g, NULL);
            rc = shard_writer_write(&w, r, n, x, g, NULL, err);
            r += n;
        }
        if (rc == SF_OK)
            rc = shard_writer_commit(&w, err);
        else
            shard_writer_abort(&w);
        if (rc == SF_OK)
            written++;
        t += rows;
    }
    if (rc == SF_OK)
        rc = write_truth(cfg, &m, err);
    if (rc != SF_OK) {
        /* Leave no partial data set behind. */
        for (int s = 0; s < written; s++) {
            snprintf(path, sizeof path, "%s/shard_%03d.h5", cfg->out, s);
            unlink(path);
        }
    } else {
        /* Drop shards of an earlier, larger run in the same directory: they would join the set. */
        for (int s = cfg->shards; s < 1000000; s++) {
            snprintf(path, sizeof path, "%s/shard_%03d.h5", cfg->out, s);
            if (unlink(path) != 0)
                break;
        }
    }
    free(x);
    free(g);
    synth_model_free(&m);
    return rc;
}

/* ---------------------------------------------------------------- CLI */

static const char *const synth_usage =
    "usage: saeforge synth --out DIR [--d D] [--features F] [--tokens N] [--k K] [--dtype f32|f16|bf16]\n"
    "                      [--gradients] [--seed S] [--shards S]\n"
    "Writes synthetic activation shards DIR/shard_000.h5 ... and the true dictionary DIR/truth.safetensors.\n"
    "  --out DIR        output directory (created if missing)\n"
    "  --d D            activation width (default 64)\n"
    "  --features F     true dictionary size (default 512)\n"
    "  --tokens N       rows in total (default 65536)\n"
    "  --k K            mean active features per token (default 8)\n"
    "  --dtype T        f32, f16 or bf16 (default f32)\n"
    "  --gradients      also write `gradients` = dL/dx of a synthetic downstream loss (for gsae)\n"
    "  --seed S         random seed (default 0)\n"
    "  --shards S       number of shard files (default 1)\n";

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cmd_synth(int argc, char **argv)
{
    synth_cfg c = {.out = NULL, .d = 64, .features = 512, .tokens = 65536, .k = 8, .dtype = SHARD_F32,
                   .gradients = 0, .seed = 0, .shards = 1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(synth_usage, stdout);
            return 0;
        }
        if (!strcmp(a, "--gradients")) {
            c.gradients = 1;
            continue;
        }
        static const char *const with_value[] = {"--out", "--d", "--features", "--tokens", "--k",
                                                 "--dtype", "--seed", "--shards"};
        int known = 0;
        for (size_t j = 0; j < sizeof with_value / sizeof *with_value; j++)
            known |= !strcmp(a, with_value[j]);
        if (!known)
            return cli_error(2, "synth: unknown option `%s`; see saeforge synth --help", a);
        if (i + 1 >= argc)
            return cli_error(2, "synth: %s needs a value; see saeforge synth --help", a);
        const char *v = argv[++i];
        int64_t n;
        if (!strcmp(a, "--out")) {
            if (!*v)
                return cli_error(2, "synth: --out is empty; give an output directory");
            c.out = v;
        } else if (!strcmp(a, "--d")) {
            if (parse_i64(v, 1, 65536, &n))
                return cli_error(2, "synth: --d `%s` is not an integer in 1..65536", v);
            c.d = (int)n;
        } else if (!strcmp(a, "--features")) {
            if (parse_i64(v, 1, 1 << 24, &n))
                return cli_error(2, "synth: --features `%s` is not an integer in 1..16777216", v);
            c.features = (int)n;
        } else if (!strcmp(a, "--tokens")) {
            if (parse_i64(v, 1, (int64_t)1 << 40, &n))
                return cli_error(2, "synth: --tokens `%s` is not a positive integer", v);
            c.tokens = n;
        } else if (!strcmp(a, "--k")) {
            char *end;
            errno = 0;
            double k = strtod(v, &end);
            if (errno || end == v || *end || !(k > 0) || !isfinite(k))
                return cli_error(2, "synth: --k `%s` is not a positive number", v);
            c.k = k;
        } else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "f32") || !strcmp(v, "float32"))
                c.dtype = SHARD_F32;
            else if (!strcmp(v, "f16") || !strcmp(v, "float16"))
                c.dtype = SHARD_F16;
            else if (!strcmp(v, "bf16") || !strcmp(v, "bfloat16"))
                c.dtype = SHARD_BF16;
            else
                return cli_error(2, "synth: --dtype `%s` is not one of f32, f16, bf16", v);
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-')
                return cli_error(2, "synth: --seed `%s` is not a non-negative integer", v);
            c.seed = s;
        } else if (!strcmp(a, "--shards")) {
            if (parse_i64(v, 1, 100000, &n))
                return cli_error(2, "synth: --shards `%s` is not an integer in 1..100000", v);
            c.shards = (int)n;
        }
    }
    if (!c.out)
        return cli_error(2, "synth: --out DIR is required; see saeforge synth --help");
    if (c.k > c.features)
        return cli_error(2, "synth: --k %g is larger than --features %d; lower --k", c.k, c.features);
    if (c.shards > c.tokens)
        return cli_error(2, "synth: --shards %d is more than --tokens %lld; lower --shards", c.shards,
                         (long long)c.tokens);
    sf_err err = {0};
    int rc = synth_write(&c, &err);
    if (rc != SF_OK)
        return cli_error(rc == SF_EINPUT ? 2 : 1, "%s", err.msg);
    printf("synth: wrote %lld tokens (d=%d, %d features, k=%g, %s%s) to %s\n", (long long)c.tokens, c.d,
           c.features, c.k, shard_dtype_name(c.dtype), c.gradients ? ", with gradients" : "", c.out);
    return 0;
}
