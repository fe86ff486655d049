/* Run configuration (config.h): one key table drives loading, --set, validation and the resolved
 * dump. libcyaml loads the file against a schema; a libyaml event pass over the same text maps
 * every key to its line and catches unknown keys, wrong shapes and syntax errors with that line.
 * Scalars are converted here, strictly: libcyaml 1.3 accepts "1e7" as the integer 1, reads "010"
 * as octal and saves floats with %g, so every leaf is loaded as text and parsed below. */
#include "config.h"

#include <cyaml/cyaml.h>
#include <yaml.h>

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kernels/sf_check.h"
#include "fsutil.h"

_Static_assert(sizeof(sf_backend_kind) == sizeof(int) && sizeof(sae_arch) == sizeof(int) &&
                   sizeof(sae_precision) == sizeof(int) && sizeof(sf_schedule) == sizeof(int),
               "enum fields are stored as int");

/* ---- the text-only mirror libcyaml loads into ------------------------------------------------ */

typedef struct {
    char *path, *eval_path, *eval_tokens, *shuffle_buffer, *bad_rows, *normalize;
} y_data;
typedef struct {
    char *arch, *n_latents, *expansion, *k, *gsae_beta, *init_scale;
    char **prefixes;
    unsigned prefixes_count;
    char *aux_k, *aux_alpha, *dead_tokens;
} y_sae;
typedef struct {
    char *batch_tokens, *total_tokens, *lr, *lr_min, *warmup_steps, *schedule, *decay_start, *k_start,
        *k_anneal_steps, *grad_clip, *precision, *threads, *eval_every_steps, *dist_timeout_s;
} y_train;
typedef struct {
    char *every_steps, *keep;
} y_ckpt;
typedef struct {
    char *every_steps, *progress;
} y_logsec;
typedef struct {
    char *seed, *out_dir, *backend;
    y_data *data;
    y_sae *sae;
    y_train *train;
    y_ckpt *checkpoint;
    y_logsec *log;
} y_root;

#define YS(key, T, m) CYAML_FIELD_STRING_PTR(key, CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER_NULL, T, m, 0, CYAML_UNLIMITED)
#define YM(key, T, m, f) CYAML_FIELD_MAPPING_PTR(key, CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER_NULL, T, m, f)

static const cyaml_schema_field_t y_data_f[] = {
    YS("path", y_data, path), YS("eval_path", y_data, eval_path), YS("eval_tokens", y_data, eval_tokens),
    YS("shuffle_buffer", y_data, shuffle_buffer), YS("bad_rows", y_data, bad_rows),
    YS("normalize", y_data, normalize), CYAML_FIELD_END};
static const cyaml_schema_value_t y_str_entry = {CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED)};
static const cyaml_schema_field_t y_sae_f[] = {
    YS("arch", y_sae, arch), YS("n_latents", y_sae, n_latents), YS("expansion", y_sae, expansion),
    YS("k", y_sae, k), YS("gsae_beta", y_sae, gsae_beta), YS("init_scale", y_sae, init_scale),
    CYAML_FIELD_SEQUENCE("matryoshka_prefixes", CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER_NULL, y_sae, prefixes,
                         &y_str_entry, 0, SAE_MAX_PREFIXES),
    YS("aux_k", y_sae, aux_k), YS("aux_alpha", y_sae, aux_alpha), YS("dead_tokens", y_sae, dead_tokens),
    CYAML_FIELD_END};
static const cyaml_schema_field_t y_train_f[] = {
    YS("batch_tokens", y_train, batch_tokens), YS("total_tokens", y_train, total_tokens), YS("lr", y_train, lr),
    YS("lr_min", y_train, lr_min), YS("warmup_steps", y_train, warmup_steps), YS("schedule", y_train, schedule),
    YS("decay_start", y_train, decay_start), YS("k_start", y_train, k_start),
    YS("k_anneal_steps", y_train, k_anneal_steps), YS("grad_clip", y_train, grad_clip),
    YS("precision", y_train, precision), YS("threads", y_train, threads),
    YS("eval_every_steps", y_train, eval_every_steps), YS("dist_timeout_s", y_train, dist_timeout_s),
    CYAML_FIELD_END};
static const cyaml_schema_field_t y_ckpt_f[] = {YS("every_steps", y_ckpt, every_steps), YS("keep", y_ckpt, keep),
                                                CYAML_FIELD_END};
static const cyaml_schema_field_t y_log_f[] = {YS("every_steps", y_logsec, every_steps),
                                               YS("progress", y_logsec, progress),
                                               CYAML_FIELD_END};
static const cyaml_schema_field_t y_root_f[] = {
    YS("seed", y_root, seed), YS("out_dir", y_root, out_dir), YS("backend", y_root, backend),
    YM("data", y_root, data, y_data_f), YM("sae", y_root, sae, y_sae_f), YM("train", y_root, train, y_train_f),
    YM("checkpoint", y_root, checkpoint, y_ckpt_f), YM("log", y_root, log, y_log_f),
    CYAML_FIELD_IGNORE("sweep", CYAML_FLAG_OPTIONAL), CYAML_FIELD_END};
static const cyaml_schema_value_t y_root_schema = {CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, y_root, y_root_f)};

/* libcyaml logs to stderr by default; keep its first error line for our own message instead. */
static _Thread_local char y_logbuf[256];
static void y_logfn(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
    (void)ctx;
    if (level < CYAML_LOG_ERROR || y_logbuf[0])
        return;
    vsnprintf(y_logbuf, sizeof y_logbuf, fmt, args);
    y_logbuf[strcspn(y_logbuf, "\n")] = 0;
}
static const cyaml_config_t y_cfg = {
    .log_fn = y_logfn, .mem_fn = cyaml_mem, .log_level = CYAML_LOG_ERROR, .flags = CYAML_CFG_DEFAULT};

/* ---- the key table ------------------------------------------------------------------------- */

typedef enum { K_SECTION, K_I64, K_INT, K_F32, K_STR, K_ENUM, K_PREFIXES } key_kind;

static const char *const backend_names[] = {"auto", "cpu", "cuda", NULL};
static const char *const bad_rows_names[] = {"error", "skip", NULL};
static const char *const normalize_names[] = {"none", "expected_norm", NULL};
static const char *const arch_names[] = {"topk", "gsae", "batchtopk", "matryoshka", NULL};
static const char *const schedule_names[] = {"constant", "linear", "cosine", NULL};
static const char *const precision_names[] = {"fp32", "tf32", "bf16", NULL};
static const char *const progress_names[] = {"auto", "on", "off", NULL};

#define NO_SEC ((size_t)-1)

typedef struct key_def {
    const char *name;          /* dotted, as in the file */
    key_kind kind;
    size_t off;                /* field in sf_config */
    const char *const *enums;  /* K_ENUM: names in value order */
    size_t ysec;               /* K_SECTION: its pointer in y_root; leaves: their section's pointer (NO_SEC = top) */
    size_t yoff;               /* leaves: the char * in the y_ struct */
    const char *help;          /* one line, written beside the key in the resolved dump */
} key_def;

#define SEC(name, m) {name, K_SECTION, 0, NULL, offsetof(y_root, m), 0, NULL}
#define TOP(name, kind, f, en, help) {name, kind, offsetof(sf_config, f), en, NO_SEC, offsetof(y_root, f), help}
#define LEAF(name, kind, f, en, sec, YT, ym, help) \
    {name, kind, offsetof(sf_config, f), en, offsetof(y_root, sec), offsetof(YT, ym), help}

static const key_def KEYS[] = {
    TOP("seed", K_I64, seed, NULL, "RNG seed (init, shuffle)"),
    TOP("out_dir", K_STR, out_dir, NULL, "run directory"),
    TOP("backend", K_ENUM, backend, backend_names, "auto | cpu | cuda"),
    SEC("data", data),
    LEAF("data.path", K_STR, data.path, NULL, data, y_data, path, "activation shards: file, directory or glob"),
    LEAF("data.eval_path", K_STR, data.eval_path, NULL, data, y_data, eval_path, "evaluation shards; \"\" = none"),
    LEAF("data.eval_tokens", K_I64, data.eval_tokens, NULL, data, y_data, eval_tokens,
         "tokens held out from the end of data.path for evaluation"),
    LEAF("data.shuffle_buffer", K_I64, data.shuffle_buffer, NULL, data, y_data, shuffle_buffer,
         "rows per shuffle window; 0 or 1 = no shuffle"),
    LEAF("data.bad_rows", K_ENUM, data.bad_rows, bad_rows_names, data, y_data, bad_rows,
         "NaN/Inf rows: error | skip"),
    LEAF("data.normalize", K_ENUM, data.normalize, normalize_names, data, y_data, normalize,
         "none | expected_norm"),
    SEC("sae", sae),
    LEAF("sae.arch", K_ENUM, sae.arch, arch_names, sae, y_sae, arch, "topk | gsae | batchtopk | matryoshka"),
    LEAF("sae.n_latents", K_I64, sae.n_latents, NULL, sae, y_sae, n_latents, "n; 0 = expansion * d"),
    LEAF("sae.expansion", K_INT, sae.expansion, NULL, sae, y_sae, expansion, "n = expansion * d when n_latents is 0"),
    LEAF("sae.k", K_INT, sae.k, NULL, sae, y_sae, k, "active latents per token"),
    LEAF("sae.gsae_beta", K_F32, sae.gsae_beta, NULL, sae, y_sae, gsae_beta, "gsae gate strength"),
    LEAF("sae.init_scale", K_F32, sae.init_scale, NULL, sae, y_sae, init_scale,
         "initial encoder scale: W_enc = init_scale * W_dec (unit rows); "
         "0 = per arch (0.01 batchtopk/matryoshka, 1 topk/gsae)"),
    LEAF("sae.matryoshka_prefixes", K_PREFIXES, sae.prefixes, NULL, sae, y_sae, prefixes,
         "matryoshka: ascending prefix sizes, last = n; [] = default"),
    LEAF("sae.aux_k", K_INT, sae.aux_k, NULL, sae, y_sae, aux_k, "AuxK dead latents per token; 0 = d/2"),
    LEAF("sae.aux_alpha", K_F32, sae.aux_alpha, NULL, sae, y_sae, aux_alpha,
         "AuxK loss weight; 0 = off, -1 = per arch (1/8 batchtopk, 1/32 others)"),
    LEAF("sae.dead_tokens", K_I64, sae.dead_tokens, NULL, sae, y_sae, dead_tokens,
         "a latent is dead after this many tokens without firing"),
    SEC("train", train),
    LEAF("train.batch_tokens", K_INT, train.batch_tokens, NULL, train, y_train, batch_tokens, "B, tokens per step"),
    LEAF("train.total_tokens", K_I64, train.total_tokens, NULL, train, y_train, total_tokens, "tokens to train on"),
    LEAF("train.lr", K_F32, train.lr, NULL, train, y_train, lr, "Adam learning rate; 0 = 2e-4 / sqrt(n / 16384)"),
    LEAF("train.lr_min", K_F32, train.lr_min, NULL, train, y_train, lr_min, "cosine schedule floor"),
    LEAF("train.warmup_steps", K_INT, train.warmup_steps, NULL, train, y_train, warmup_steps, "linear warmup steps"),
    LEAF("train.schedule", K_ENUM, train.schedule, schedule_names, train, y_train, schedule,
         "constant | linear | cosine"),
    LEAF("train.decay_start", K_F32, train.decay_start, NULL, train, y_train, decay_start,
         "linear: fraction of the run where decay starts"),
    LEAF("train.k_start", K_INT, train.k_start, NULL, train, y_train, k_start, "k annealing start; 0 = off"),
    LEAF("train.k_anneal_steps", K_INT, train.k_anneal_steps, NULL, train, y_train, k_anneal_steps,
         "steps to anneal k_start -> sae.k; 0 = off"),
    LEAF("train.grad_clip", K_F32, train.grad_clip, NULL, train, y_train, grad_clip, "global grad norm clip; 0 = off"),
    LEAF("train.precision", K_ENUM, train.precision, precision_names, train, y_train, precision,
         "GPU encoder GEMM inputs: fp32 | tf32 | bf16"),
    LEAF("train.threads", K_INT, train.threads, NULL, train, y_train, threads, "CPU threads; 0 = all cores"),
    LEAF("train.eval_every_steps", K_INT, train.eval_every_steps, NULL, train, y_train, eval_every_steps,
         "evaluate every N steps; 0 = only at the end"),
    LEAF("train.dist_timeout_s", K_INT, train.dist_timeout_s, NULL, train, y_train, dist_timeout_s,
         "data parallel: stop the job when a rank waits this long for the others"),
    SEC("checkpoint", checkpoint),
    LEAF("checkpoint.every_steps", K_INT, checkpoint.every_steps, NULL, checkpoint, y_ckpt, every_steps,
         "checkpoint every N steps; 0 = only at the end"),
    LEAF("checkpoint.keep", K_INT, checkpoint.keep, NULL, checkpoint, y_ckpt, keep, "newest complete checkpoints kept"),
    SEC("log", log),
    LEAF("log.every_steps", K_INT, log.every_steps, NULL, log, y_logsec, every_steps, "metrics line every N steps"),
    LEAF("log.progress", K_ENUM, log.progress, progress_names, log, y_logsec, progress,
         "live progress line: auto | on | off"),
};
#define NKEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

static int key_find(const char *name)
{
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].name, name) == 0)
            return i;
    return -1;
}

/* Index of a key by name; the names used in this file are all in the table. */
static int K(const char *name)
{
    int i = key_find(name);
    SF_CHECK(i >= 0);
    return i;
}

static const char *leaf_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

static int levenshtein(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 99;
    int row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* "did you mean X?" for an unknown dotted key, or a pointer to the docs. */
static void suggest(const char *name, char *out, size_t outsz)
{
    const char *leaf = leaf_of(name);
    for (int i = 0; i < NKEYS; i++)
        if (KEYS[i].kind != K_SECTION && strcmp(leaf_of(KEYS[i].name), leaf) == 0) {
            snprintf(out, outsz, "did you mean %s?", KEYS[i].name);
            return;
        }
    int best = -1, bd = 99;
    for (int i = 0; i < NKEYS; i++) {
        int dd = levenshtein(name, KEYS[i].name);
        if (dd < bd) {
            bd = dd;
            best = i;
        }
    }
    int lim = (int)strlen(name) / 3;
    if (best >= 0 && bd <= (lim < 2 ? 2 : lim))
        snprintf(out, outsz, "did you mean %s?", KEYS[best].name);
    else
        snprintf(out, outsz, "remove it (the keys are listed in docs/config.md)");
}

/* ---- where a value came from, for messages --------------------------------------------------- */

typedef struct origin {
    const char *file;     /* the config file, or "" */
    int line[NKEYS];      /* 1-based line of the key in the file; 0 = not in the file */
    bool set[NKEYS];      /* the value came from --set */
    bool null[NKEYS];     /* present in the file with an empty value */
} origin;

static void where(const origin *o, int k, char *out, size_t outsz)
{
    if (o->set[k])
        snprintf(out, outsz, "--set %s", KEYS[k].name);
    else if (o->file[0] && o->line[k] > 0)
        snprintf(out, outsz, "%s:%d: %s", o->file, o->line[k], KEYS[k].name);
    else if (o->file[0])
        snprintf(out, outsz, "%s: %s", o->file, KEYS[k].name);
    else
        snprintf(out, outsz, "config: %s", KEYS[k].name);
}

static int failk(sf_err *err, const origin *o, int k, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int failk(sf_err *err, const origin *o, int k, const char *fmt, ...)
{
    char w[SF_PATH_MAX + 128], what[700];
    where(o, k, w, sizeof w);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return sf_fail(err, SF_EINPUT, "%s: %s", w, what);
}

/* ---- scalar conversion ----------------------------------------------------------------------- */

/* A value as the file or --set gave it: null, one scalar, or a list of scalars. */
typedef struct vnode {
    bool null, seq;
    const char *text;
    const char *const *items;
    int n_items;
} vnode;

static bool is_null_text(const char *s)
{
    return !s || !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Whole numbers: 4096, -3, 10_000_000, or an exact integer in scientific form (1e7, 2.5e6). */
static bool parse_i64(const char *s, int64_t *out)
{
    const char *p = s;
    bool neg = false;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    if (*p >= '0' && *p <= '9') {
        uint64_t v = 0;
        const char *q = p;
        for (; *q; q++) {
            if (*q == '_' && q > p && q[-1] != '_' && q[1] >= '0' && q[1] <= '9')
                continue;
            if (*q < '0' || *q > '9')
                break;
            if (v > (UINT64_MAX - 9) / 10)
                return false;
            v = v * 10 + (uint64_t)(*q - '0');
        }
        if (!*q) {
            if (v > (uint64_t)INT64_MAX + neg)
                return false;
            *out = neg ? (int64_t)(0 - v) : (int64_t)v;
            return true;
        }
    }
    /* scientific / decimal form: only digits, one '.', one exponent */
    if (strspn(s, "+-0123456789.eE") != strlen(s) || !strpbrk(s, "0123456789"))
        return false;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (*end || errno || !isfinite(d) || d != floor(d) || fabs(d) > 9007199254740992.0)
        return false;
    *out = (int64_t)d;
    return true;
}

static bool parse_f32(const char *s, float *out)
{
    if (!*s || strspn(s, "+-0123456789.eE") != strlen(s) || !strpbrk(s, "0123456789"))
        return false;
    /* strtof, not (float)strtod: the double rounding of the latter can land on the other float
     * of a near tie, and the resolved dump (shortest text that strtof reads back) must reload
     * to the same bits. A value that rounds past FLT_MAX is an overflow, not FLT_MAX. */
    char *end;
    errno = 0;
    float f = strtof(s, &end);
    if (*end || !isfinite(f))
        return false;
    *out = f;
    return true;
}

static void enum_list(const char *const *names, char *out, size_t outsz)
{
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; names[i]; i++)
        used += (size_t)snprintf(out + used, used < outsz ? outsz - used : 0, "%s%s", i ? "|" : "", names[i]);
}

/* A value quoted in a message: escaped and cut (sf_quote). */
static const char *clip(const char *s, char *buf, size_t bufsz) { return sf_quote_str(buf, bufsz, s); }

static int parse_prefix_text(const char *s, int64_t *v, int *n, char *why, size_t whysz)
{
    char tmp[512], cb[SF_QUOTE_MAX];
    if (strlen(s) >= sizeof tmp) {
        snprintf(why, whysz, "list too long; give at most %d sizes", SAE_MAX_PREFIXES);
        return -1;
    }
    snprintf(tmp, sizeof tmp, "%s", s);
    char *p = tmp;
    while (*p == ' ' || *p == '[')
        p++;
    char *e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == ']'))
        *--e = 0;
    *n = 0;
    if (!*p)
        return 0;
    for (char *tok = strtok(p, ","); tok; tok = strtok(NULL, ",")) {
        while (*tok == ' ')
            tok++;
        char *te = tok + strlen(tok);
        while (te > tok && te[-1] == ' ')
            *--te = 0;
        if (*n >= SAE_MAX_PREFIXES) {
            snprintf(why, whysz, "more than %d prefixes; give at most %d sizes", SAE_MAX_PREFIXES, SAE_MAX_PREFIXES);
            return -1;
        }
        if (!parse_i64(tok, &v[*n])) {
            snprintf(why, whysz, "expected a list of integers like [32, 128, 512], got '%s'", clip(tok, cb, sizeof cb));
            return -1;
        }
        (*n)++;
    }
    return 0;
}

/* Stores v into key k of c, or says in why what is wrong ("expected ..., got ...; do ..."). */
static int key_assign(sf_config *c, int k, const vnode *v, char *why, size_t whysz)
{
    const key_def *kd = &KEYS[k];
    char *field = (char *)c + kd->off;
    char cb[SF_QUOTE_MAX];
    const char *t = v->text ? v->text : "";
    if (kd->kind != K_PREFIXES && v->seq) {
        snprintf(why, whysz, "expected a single value, got a list; write `%s: value`", leaf_of(kd->name));
        return -1;
    }
    switch (kd->kind) {
    case K_SECTION:
        snprintf(why, whysz, "is a section; set one of its keys, e.g. %s.<key>", kd->name);
        return -1;
    case K_I64:
    case K_INT: {
        int64_t x;
        if (v->null) {
            snprintf(why, whysz, "expected an integer, got nothing; give a whole number or remove the key");
            return -1;
        }
        if (!parse_i64(t, &x)) {
            snprintf(why, whysz, "expected an integer, got '%s'; write a whole number like 4096 or 1e7",
                     clip(t, cb, sizeof cb));
            return -1;
        }
        if (kd->kind == K_INT) {
            if (x < INT_MIN || x > INT_MAX) {
                snprintf(why, whysz, "%s is out of range; use a value up to %d", clip(t, cb, sizeof cb), INT_MAX);
                return -1;
            }
            int xi = (int)x;
            memcpy(field, &xi, sizeof xi);
        } else {
            memcpy(field, &x, sizeof x);
        }
        return 0;
    }
    case K_F32: {
        float x;
        if (v->null) {
            snprintf(why, whysz, "expected a number, got nothing; give a number or remove the key");
            return -1;
        }
        if (!parse_f32(t, &x)) {
            snprintf(why, whysz, "expected a number, got '%s'; write e.g. 0.0003 or 3e-4", clip(t, cb, sizeof cb));
            return -1;
        }
        memcpy(field, &x, sizeof x);
        return 0;
    }
    case K_STR: {
        const char *s = v->null ? "" : t;
        if (strlen(s) >= SF_PATH_MAX) {
            snprintf(why, whysz, "value is %zu bytes long; use at most %d", strlen(s), SF_PATH_MAX - 1);
            return -1;
        }
        /* the resolved dump is YAML, which holds only UTF-8 text (a --set value may be any bytes) */
        for (size_t i = 0, n = strlen(s); i < n;) {
            uint32_t cp;
            size_t l = sf_utf8_decode(s + i, n - i, &cp);
            if (!l) {
                snprintf(why, whysz, "'%s' is not UTF-8 text (byte %zu); rename the path or give it in UTF-8",
                         clip(s, cb, sizeof cb), i);
                return -1;
            }
            i += l;
        }
        memcpy(field, s, strlen(s) + 1);
        return 0;
    }
    case K_ENUM: {
        char names[128];
        enum_list(kd->enums, names, sizeof names);
        if (!v->null)
            for (int i = 0; kd->enums[i]; i++)
                if (strcmp(t, kd->enums[i]) == 0) {
                    memcpy(field, &i, sizeof i);
                    return 0;
                }
        snprintf(why, whysz, "expected one of %s, got '%s'; pick one of those", names,
                 v->null ? "" : clip(t, cb, sizeof cb));
        return -1;
    }
    case K_PREFIXES: {
        int64_t vals[SAE_MAX_PREFIXES];
        int n = 0;
        if (v->seq) {
            if (v->n_items > SAE_MAX_PREFIXES) {
                snprintf(why, whysz, "%d prefixes given; use at most %d", v->n_items, SAE_MAX_PREFIXES);
                return -1;
            }
            for (int i = 0; i < v->n_items; i++) {
                if (!parse_i64(v->items[i] ? v->items[i] : "", &vals[i])) {
                    snprintf(why, whysz, "expected a list of integers like [32, 128, 512], got '%s'",
                             clip(v->items[i] ? v->items[i] : "", cb, sizeof cb));
                    return -1;
                }
            }
            n = v->n_items;
        } else if (!v->null) {
            if (parse_prefix_text(t, vals, &n, why, whysz))
                return -1;
        }
        c->sae.n_prefixes = n;
        memset(c->sae.prefixes, 0, sizeof c->sae.prefixes);
        memcpy(c->sae.prefixes, vals, (size_t)n * sizeof vals[0]);
        return 0;
    }
    }
    return -1;
}

static bool key_equal(const sf_config *a, const sf_config *b, int k)
{
    const key_def *kd = &KEYS[k];
    const char *fa = (const char *)a + kd->off, *fb = (const char *)b + kd->off;
    switch (kd->kind) {
    case K_SECTION:
        return true;
    case K_I64:
        return !memcmp(fa, fb, sizeof(int64_t));
    case K_INT:
    case K_ENUM:
        return !memcmp(fa, fb, sizeof(int));
    case K_F32:
        return !memcmp(fa, fb, sizeof(float));
    case K_STR:
        return !strcmp(fa, fb);
    case K_PREFIXES:
        return a->sae.n_prefixes == b->sae.n_prefixes &&
               !memcmp(a->sae.prefixes, b->sae.prefixes, (size_t)a->sae.n_prefixes * sizeof(int64_t));
    }
    return false;
}

/* ---- the libyaml pass: lines, unknown keys, shapes, syntax ------------------------------------ */

typedef struct scan {
    yaml_parser_t p;
    origin *o;
    sf_err *err;
    bool empty; /* the document holds no mapping at all */
} scan;

static int scan_next(scan *s, yaml_event_t *ev)
{
    if (yaml_parser_parse(&s->p, ev))
        return 0;
    const char *ctx = s->p.context ? s->p.context : "";
    int line = (int)s->p.problem_mark.line + 1, cline = (int)s->p.context_mark.line + 1;
    char started[48] = "";
    if (*ctx && cline != line)
        snprintf(started, sizeof started, " started at line %d", cline);
    return sf_fail(s->err, SF_EINPUT, "%s:%d: invalid YAML: %s%s%s%s; fix the syntax (indentation, colons, quotes, "
                   "brackets)", s->o->file, line, s->p.problem ? s->p.problem : "parse error", *ctx ? " " : "", ctx,
                   started);
}

static const char *event_shape(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_MAPPING_START_EVENT:
        return "a mapping";
    case YAML_SEQUENCE_START_EVENT:
        return "a list";
    case YAML_ALIAS_EVENT:
        return "an alias";
    default:
        return "a value";
    }
}

static int ev_line(const yaml_event_t *ev) { return (int)ev->start_mark.line + 1; }

static int alias_error(scan *s, const yaml_event_t *ev)
{
    return sf_fail(s->err, SF_EINPUT,
                   "%s:%d: anchors and aliases (*name) are not supported; write the value out, and quote values "
                   "that start with '*' or '&' (e.g. path: \"*.h5\")",
                   s->o->file, ev_line(ev));
}

static int scan_map(scan *s, const char *prefix);

static int scan_value(scan *s, int k, const char *name)
{
    yaml_event_t ev;
    if (scan_next(s, &ev))
        return SF_EINPUT;
    int rc = 0;
    const key_def *kd = &KEYS[k];
    if (ev.type == YAML_ALIAS_EVENT) {
        rc = alias_error(s, &ev);
    } else if (kd->kind == K_SECTION) {
        if (ev.type == YAML_MAPPING_START_EVENT)
            rc = scan_map(s, name);
        else if (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                 is_null_text((const char *)ev.data.scalar.value))
            s->o->null[k] = true;
        else
            rc = failk(s->err, s->o, k, "expected a mapping of %s keys (indented `key: value` lines), got %s",
                       name, ev.type == YAML_SCALAR_EVENT ? "a single value" : event_shape(&ev));
    } else if (ev.type == YAML_SCALAR_EVENT) {
        const char *t = (const char *)ev.data.scalar.value;
        if (ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && is_null_text(t))
            s->o->null[k] = true;
        else if (kd->kind == K_PREFIXES) {
            char q[SF_QUOTE_MAX];
            rc = failk(s->err, s->o, k, "expected a list of integers, got '%s'; write it as [32, 128, 512]",
                       sf_quote_str(q, sizeof q, t));
        }
    } else if (ev.type == YAML_SEQUENCE_START_EVENT && kd->kind == K_PREFIXES) {
        for (;;) {
            yaml_event_t it;
            if (scan_next(s, &it)) {
                rc = SF_EINPUT;
                break;
            }
            yaml_event_type_t ty = it.type;
            if (ty == YAML_ALIAS_EVENT)
                rc = alias_error(s, &it);
            else if (ty != YAML_SEQUENCE_END_EVENT && ty != YAML_SCALAR_EVENT)
                rc = failk(s->err, s->o, k, "expected a list of integers, got %s inside it; write [32, 128, 512]",
                           event_shape(&it));
            yaml_event_delete(&it);
            if (rc || ty == YAML_SEQUENCE_END_EVENT)
                break;
        }
    } else {
        char what[96] = "a value", names[80];
        if (kd->kind == K_I64 || kd->kind == K_INT)
            snprintf(what, sizeof what, "an integer");
        else if (kd->kind == K_F32)
            snprintf(what, sizeof what, "a number");
        else if (kd->kind == K_STR)
            snprintf(what, sizeof what, "a path (text)");
        else if (kd->kind == K_ENUM) {
            enum_list(kd->enums, names, sizeof names);
            snprintf(what, sizeof what, "one of %s", names);
        }
        rc = failk(s->err, s->o, k, "expected %s, got %s; write `%s: value` on one line", what, event_shape(&ev),
                   leaf_of(name));
    }
    yaml_event_delete(&ev);
    return rc;
}

/* Consumes one value of any shape (scalar, or a whole nested map/list). */
static int skip_value(scan *s)
{
    int depth = 0;
    do {
        yaml_event_t ev;
        if (scan_next(s, &ev))
            return SF_EINPUT;
        if (ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_SEQUENCE_START_EVENT)
            depth++;
        else if (ev.type == YAML_MAPPING_END_EVENT || ev.type == YAML_SEQUENCE_END_EVENT)
            depth--;
        yaml_event_delete(&ev);
    } while (depth > 0);
    return 0;
}

static int scan_map(scan *s, const char *prefix)
{
    for (;;) {
        yaml_event_t ev;
        if (scan_next(s, &ev))
            return SF_EINPUT;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        int line = ev_line(&ev);
        if (ev.type != YAML_SCALAR_EVENT) {
            int rc = ev.type == YAML_ALIAS_EVENT
                         ? alias_error(s, &ev)
                         : sf_fail(s->err, SF_EINPUT, "%s:%d: %s%skeys must be plain names, got %s; write `name: value`",
                                   s->o->file, line, prefix ? prefix : "", prefix ? ": " : "", event_shape(&ev));
            yaml_event_delete(&ev);
            return rc;
        }
        char name[256];
        snprintf(name, sizeof name, "%s%s%s", prefix ? prefix : "", prefix ? "." : "",
                 (const char *)ev.data.scalar.value);
        yaml_event_delete(&ev);
        if (!prefix && !strcmp(name, "sweep")) { /* host/sweep.c reads it; a member's config has none */
            int rc = skip_value(s);
            if (rc)
                return rc;
            continue;
        }
        int k = key_find(name);
        if (k < 0) {
            char hint[160];
            suggest(name, hint, sizeof hint);
            return sf_fail(s->err, SF_EINPUT, "%s:%d: %s: unknown key; %s", s->o->file, line, name, hint);
        }
        if (s->o->line[k] > 0)
            return sf_fail(s->err, SF_EINPUT, "%s:%d: %s: duplicate key (first given at line %d); keep one of them",
                           s->o->file, line, name, s->o->line[k]);
        s->o->line[k] = line;
        int rc = scan_value(s, k, name);
        if (rc)
            return rc;
    }
}

static int scan_doc(scan *s)
{
    yaml_event_t ev;
    int rc = 0;
    s->empty = true;
    if (scan_next(s, &ev)) /* stream start */
        return SF_EINPUT;
    yaml_event_delete(&ev);
    if (scan_next(s, &ev))
        return SF_EINPUT;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        return 0;
    }
    yaml_event_delete(&ev); /* document start */
    if (scan_next(s, &ev))
        return SF_EINPUT;
    if (ev.type == YAML_MAPPING_START_EVENT) {
        s->empty = false;
        rc = scan_map(s, NULL);
    } else if (!(ev.type == YAML_SCALAR_EVENT && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                 is_null_text((const char *)ev.data.scalar.value))) {
        rc = sf_fail(s->err, SF_EINPUT, "%s:%d: expected `key: value` lines at the top level, got %s", s->o->file,
                     ev_line(&ev), ev.type == YAML_SCALAR_EVENT ? "a single value" : event_shape(&ev));
    }
    yaml_event_delete(&ev);
    if (rc)
        return rc;
    if (scan_next(s, &ev)) /* document end */
        return SF_EINPUT;
    yaml_event_delete(&ev);
    if (scan_next(s, &ev))
        return SF_EINPUT;
    if (ev.type == YAML_DOCUMENT_START_EVENT)
        rc = sf_fail(s->err, SF_EINPUT, "%s:%d: more than one YAML document (---); keep one", s->o->file,
                     ev_line(&ev));
    yaml_event_delete(&ev);
    return rc;
}

/* ---- loading -------------------------------------------------------------------------------- */

static int read_file(const char *path, char **buf, size_t *len, sf_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return sf_fail(err, SF_EINPUT, "%s: cannot read config (%s); check the path", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 >= cap) {
            char *nb = cap > (64u << 20) ? NULL : realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0)
            break;
    }
    int e = ferror(f) ? errno : 0;
    fclose(f);
    if (!b)
        return sf_fail(err, SF_EINPUT, "%s: cannot read config (file too large); check the path", path);
    if (e) {
        free(b);
        return sf_fail(err, SF_EINPUT, "%s: cannot read config (%s); check the path", path, strerror(e));
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return 0;
}

/* Reads path into c (over whatever c holds) and fills o (o->file must already point at the name). */
static int load_file(const char *path, sf_config *c, origin *o, sf_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = read_file(path, &buf, &len, err);
    if (rc)
        return rc;
    scan s = {.o = o, .err = err};
    if (!yaml_parser_initialize(&s.p)) {
        free(buf);
        return sf_fail(err, SF_EFAIL, "%s: out of memory", path);
    }
    yaml_parser_set_input_string(&s.p, (const unsigned char *)buf, len);
    rc = scan_doc(&s);
    yaml_parser_delete(&s.p);
    if (rc || s.empty) {
        free(buf);
        return rc;
    }

    y_root *root = NULL;
    y_logbuf[0] = 0;
    cyaml_err_t ye = cyaml_load_data((const uint8_t *)buf, len, &y_cfg, &y_root_schema, (cyaml_data_t **)&root, NULL);
    free(buf);
    if (ye != CYAML_OK)
        return sf_fail(err, SF_EINPUT, "%s: cannot load config (%s%s%s); check it against docs/config.md", path,
                       cyaml_strerror(ye), y_logbuf[0] ? ": " : "", y_logbuf);

    for (int k = 0; k < NKEYS && !rc; k++) {
        const key_def *kd = &KEYS[k];
        if (kd->kind == K_SECTION || o->line[k] == 0)
            continue;
        const char *sec = kd->ysec == NO_SEC ? (const char *)root : *(char *const *)((const char *)root + kd->ysec);
        vnode v = {.null = o->null[k]};
        if (sec && kd->kind == K_PREFIXES) {
            const y_sae *ys = (const y_sae *)sec;
            v.seq = ys->prefixes != NULL;
            v.items = (const char *const *)ys->prefixes;
            v.n_items = (int)ys->prefixes_count;
            v.null = v.null || !ys->prefixes;
        } else if (sec) {
            v.text = *(char *const *)(sec + kd->yoff);
            v.null = v.null || !v.text;
        } else {
            v.null = true;
        }
        char why[512];
        if (key_assign(c, k, &v, why, sizeof why))
            rc = failk(err, o, k, "%s", why);
    }
    cyaml_free(&y_cfg, &y_root_schema, root, 0);
    return rc;
}

/* Parses the text of one --set value as a YAML scalar or flow list. */
static int apply_override(sf_config *c, origin *o, const char *ov, sf_err *err)
{
    char key[256];
    const char *eq = strchr(ov, '=');
    size_t kl = eq ? (size_t)(eq - ov) : strlen(ov);
    snprintf(key, sizeof key, "%.*s", (int)(kl < sizeof key ? kl : sizeof key - 1), ov);
    if (!eq)
        return sf_fail(err, SF_EINPUT, "--set %s: expected key=value, e.g. --set train.lr=1e-4", key);
    const char *val = eq + 1;
    int k = key_find(key);
    if (k < 0) {
        char hint[160];
        suggest(key, hint, sizeof hint);
        return sf_fail(err, SF_EINPUT, "--set %s: unknown key; %s", key, hint);
    }
    if (KEYS[k].kind == K_SECTION)
        return sf_fail(err, SF_EINPUT, "--set %s: is a section; set one of its keys, e.g. --set %s.<key>=value",
                       key, key);

    vnode v = {0};
    char *items[SAE_MAX_PREFIXES + 1] = {0};
    char *text = NULL, why[512];
    int rc = 0;
    /* Paths are taken literally unless quoted, so globs like *.h5 need no YAML quoting on a shell. */
    if (KEYS[k].kind == K_STR && val[0] != '"' && val[0] != '\'') {
        v.text = val;
    } else {
        yaml_parser_t p;
        if (!yaml_parser_initialize(&p))
            return sf_fail(err, SF_EFAIL, "--set %s: out of memory", key);
        yaml_parser_set_input_string(&p, (const unsigned char *)val, strlen(val));
        int state = 0; /* 0 before the value, 1 inside a list, 2 done */
        while (!rc) {
            yaml_event_t ev;
            if (!yaml_parser_parse(&p, &ev)) {
                char q[SF_QUOTE_MAX];
                rc = sf_fail(err, SF_EINPUT, "--set %s: cannot parse value '%s' (%s); quote it or fix it", key,
                             sf_quote_str(q, sizeof q, val),
                             p.problem ? p.problem : "parse error");
                break;
            }
            yaml_event_type_t ty = ev.type;
            if (ty == YAML_SCALAR_EVENT && state == 0) {
                const char *t = (const char *)ev.data.scalar.value;
                v.null = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && is_null_text(t);
                text = strdup(t);
                v.text = text;
                state = 2;
            } else if (ty == YAML_SEQUENCE_START_EVENT && state == 0) {
                v.seq = true;
                state = 1;
            } else if (ty == YAML_SCALAR_EVENT && state == 1) {
                if (v.n_items < SAE_MAX_PREFIXES + 1)
                    items[v.n_items] = strdup((const char *)ev.data.scalar.value);
                v.n_items++;
            } else if (ty == YAML_SEQUENCE_END_EVENT && state == 1) {
                state = 2;
            } else if (ty == YAML_MAPPING_START_EVENT || ty == YAML_SEQUENCE_START_EVENT || ty == YAML_ALIAS_EVENT) {
                char q[SF_QUOTE_MAX];
                rc = sf_fail(err, SF_EINPUT, "--set %s: expected a single value%s, got '%s'; quote it", key,
                             KEYS[k].kind == K_PREFIXES ? " or a list [a,b,c]" : "", sf_quote_str(q, sizeof q, val));
            } else if (ty == YAML_STREAM_END_EVENT) {
                yaml_event_delete(&ev);
                break;
            }
            yaml_event_delete(&ev);
        }
        yaml_parser_delete(&p);
        if (state == 0)
            v.null = true;
    }
    if (!rc) {
        if (v.n_items > SAE_MAX_PREFIXES) {
            rc = sf_fail(err, SF_EINPUT, "--set %s: %d prefixes given; use at most %d", key, v.n_items,
                         SAE_MAX_PREFIXES);
        } else {
            v.items = (const char *const *)items;
            if (key_assign(c, k, &v, why, sizeof why))
                rc = sf_fail(err, SF_EINPUT, "--set %s: %s", key, why);
        }
    }
    if (!rc) {
        o->set[k] = true;
        o->null[k] = false;
    }
    free(text);
    for (int i = 0; i <= SAE_MAX_PREFIXES; i++)
        free(items[i]);
    return rc;
}

/* ---- validation ----------------------------------------------------------------------------- */

static float fget(const sf_config *c, int k)
{
    float f;
    memcpy(&f, (const char *)c + KEYS[k].off, sizeof f);
    return f;
}

/* The section line, for "missing key" messages: points at the section the key belongs under. */
static int missing(sf_err *err, const origin *o, int k, const char *example)
{
    const char *name = KEYS[k].name;
    const char *dot = strrchr(name, '.');
    if (o->line[k] > 0 || o->set[k])
        return failk(err, o, k, "is empty; set it, e.g. `%s: %s`", leaf_of(name), example);
    if (dot) {
        char sec[32];
        snprintf(sec, sizeof sec, "%.*s", (int)(dot - name), name);
        int sk = key_find(sec);
        if (o->file[0] && sk >= 0 && o->line[sk] > 0)
            return sf_fail(err, SF_EINPUT, "%s:%d: %s: missing required key; add `%s: %s` under %s:", o->file,
                           o->line[sk], name, leaf_of(name), example, sec);
        return failk(err, o, k, "missing required key; add `%s:` with `%s: %s` under it (or --set %s=...)", sec,
                     leaf_of(name), example, name);
    }
    return failk(err, o, k, "missing required key; add `%s: %s` (or --set %s=...)", name, example, name);
}

static void fmt_float(float f, char *out, size_t outsz);

float config_default_lr(int64_t n) { return (float)(2e-4 / sqrt((double)n / 16384.0)); }

int config_max_threads(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return 4 * (int)(cores > 0 && cores < 1 << 20 ? cores : 1);
}

static int validate_impl(const sf_config *c, int d, const origin *o, sf_err *err)
{
    /* required keys */
    if (!c->out_dir[0])
        return missing(err, o, K("out_dir"), "runs/my_sae");
    if (!c->data.path[0])
        return missing(err, o, K("data.path"), "activations/");
    if (c->train.total_tokens == 0 && !o->line[K("train.total_tokens")] && !o->set[K("train.total_tokens")])
        return missing(err, o, K("train.total_tokens"), "100_000_000");

    /* single-key ranges; NaN/Inf never get past parse_f32 */
    struct { const char *key; int64_t lo; } ilo[] = {
        {"seed", 0},
        {"data.eval_tokens", 0},
        {"data.shuffle_buffer", 0},
        {"sae.n_latents", 0},
        {"sae.expansion", 1},
        {"sae.k", 1},
        {"sae.aux_k", 0},
        {"sae.dead_tokens", 1},
        {"train.batch_tokens", 1},
        {"train.total_tokens", 1},
        {"train.warmup_steps", 0},
        {"train.k_start", 0},
        {"train.k_anneal_steps", 0},
        {"train.threads", 0},
        {"train.eval_every_steps", 0},
        {"train.dist_timeout_s", 1},
        {"checkpoint.every_steps", 0},
        {"checkpoint.keep", 1},
        {"log.every_steps", 1},
    };
    for (size_t i = 0; i < sizeof ilo / sizeof ilo[0]; i++) {
        int k = K(ilo[i].key);
        int64_t x;
        if (KEYS[k].kind == K_I64) {
            memcpy(&x, (const char *)c + KEYS[k].off, sizeof x);
        } else {
            int xi;
            memcpy(&xi, (const char *)c + KEYS[k].off, sizeof xi);
            x = xi;
        }
        if (x < ilo[i].lo)
            return failk(err, o, k, "%" PRId64 " is out of range; use a value >= %" PRId64, x, ilo[i].lo);
    }
    const char *nonneg_f[] = {"sae.gsae_beta", "train.lr", "train.lr_min", "train.grad_clip"};
    for (size_t i = 0; i < sizeof nonneg_f / sizeof nonneg_f[0]; i++) {
        int k = K(nonneg_f[i]);
        if (!(fget(c, k) >= 0))
            return failk(err, o, k, "%g is out of range; use a value >= 0", (double)fget(c, k));
    }
    if (!(c->sae.aux_alpha >= 0 || c->sae.aux_alpha == SF_AUX_ALPHA_ARCH))
        return failk(err, o, K("sae.aux_alpha"),
                     "%g is out of range; use a value >= 0 (0 = off), or -1 for the arch's default (%g batchtopk, "
                     "%g the others)",
                     (double)c->sae.aux_alpha, (double)SF_AUX_ALPHA_BATCHTOPK, (double)SF_AUX_ALPHA_OTHER);
    if (!(c->sae.init_scale >= 0 && c->sae.init_scale <= 1))
        return failk(err, o, K("sae.init_scale"),
                     "%g is out of range; use a value in (0, 1], or 0 for the arch's default (%g batchtopk/matryoshka, "
                     "%g topk/gsae)",
                     (double)c->sae.init_scale, (double)SF_INIT_SCALE_BATCH, (double)SF_INIT_SCALE_ROW);
    if (!(c->train.decay_start >= 0 && c->train.decay_start <= 1))
        return failk(err, o, K("train.decay_start"), "%g is out of range; use a fraction in [0, 1]",
                     (double)c->train.decay_start);
    if (c->sae.n_latents > INT_MAX)
        return failk(err, o, K("sae.n_latents"), "%" PRId64 " is too large; use at most %d", c->sae.n_latents,
                     INT_MAX);

    /* cross-key rules */
    int kk = K("sae.k"), kn = K("sae.n_latents"), ke = K("sae.expansion");
    int64_t n = c->sae.n_latents;
    int kn_src = kn; /* the key that fixed n, for messages */
    if (n == 0 && d > 0) {
        n = (int64_t)c->sae.expansion * d;
        kn_src = ke;
        if (n > INT_MAX)
            return failk(err, o, ke, "%d * d (%d) = %" PRId64 " latents is too many; lower it", c->sae.expansion, d, n);
    }
    if (n > 0 && c->sae.k > n) {
        int blame = (o->line[kk] || o->set[kk] || !(o->line[kn_src] || o->set[kn_src])) ? kk : kn_src;
        return failk(err, o, blame, "k = %d exceeds the number of latents n = %" PRId64 "%s; lower sae.k or raise %s",
                     c->sae.k, n, kn_src == ke ? " (expansion * d)" : "", KEYS[kn_src].name);
    }
    if (c->train.total_tokens < c->train.batch_tokens)
        return failk(err, o, K("train.total_tokens"),
                     "%" PRId64 " is less than one batch (train.batch_tokens = %d); raise it or lower batch_tokens",
                     c->train.total_tokens, c->train.batch_tokens);
    int kp = K("sae.matryoshka_prefixes");
    if (c->sae.n_prefixes > 0) {
        if (c->sae.arch != SAE_ARCH_MATRYOSHKA)
            return failk(err, o, kp, "only used by sae.arch: matryoshka (arch is %s); remove it or set the arch",
                         config_arch_name(c->sae.arch));
        if (c->sae.n_prefixes > SAE_MAX_PREFIXES)
            return failk(err, o, kp, "%d prefixes; use at most %d", c->sae.n_prefixes, SAE_MAX_PREFIXES);
        for (int i = 0; i < c->sae.n_prefixes; i++) {
            int64_t m = c->sae.prefixes[i];
            if (m < 1)
                return failk(err, o, kp, "prefix %" PRId64 " is not positive; give sizes >= 1", m);
            if (i > 0 && m <= c->sae.prefixes[i - 1])
                return failk(err, o, kp, "prefixes must be strictly ascending (%" PRId64 " after %" PRId64 ")", m,
                             c->sae.prefixes[i - 1]);
        }
        int64_t last = c->sae.prefixes[c->sae.n_prefixes - 1];
        if (n > 0 && last != n)
            return failk(err, o, kp, "the last prefix must equal the number of latents n = %" PRId64
                         " (got %" PRId64 "); end the list with %" PRId64, n, last, n);
        if (n > 0 && last > n)
            return failk(err, o, kp, "prefix %" PRId64 " exceeds n = %" PRId64, last, n);
    }
    int kks = K("train.k_start"), kka = K("train.k_anneal_steps");
    if (c->train.k_start > 0 && c->train.k_anneal_steps == 0)
        return failk(err, o, kks, "is set but train.k_anneal_steps is 0, so k never anneals; set k_anneal_steps "
                     "or remove k_start");
    if (c->train.k_anneal_steps > 0 && c->train.k_start == 0)
        return failk(err, o, kka, "is set but train.k_start is 0; set k_start (the k to start from, >= sae.k)");
    if (c->train.k_start > 0 && c->train.k_start < c->sae.k)
        return failk(err, o, kks, "%d is below sae.k = %d; annealing goes from k_start down to k, so use >= %d",
                     c->train.k_start, c->sae.k, c->sae.k);
    if (c->train.k_start > 0 && n > 0 && c->train.k_start > n)
        return failk(err, o, kks, "%d exceeds the number of latents n = %" PRId64 "; lower it", c->train.k_start, n);
    /* against the lr the run will use: the default one once n is known */
    float lr = c->train.lr > 0 ? c->train.lr : n > 0 ? config_default_lr(n) : 0;
    if (lr > 0 && c->train.lr_min > lr) {
        char a[48], b[48];
        fmt_float(c->train.lr_min, a, sizeof a);
        fmt_float(lr, b, sizeof b);
        return failk(err, o, K("train.lr_min"), "%s is above train.lr = %s%s; use a floor <= lr (or raise lr)", a, b,
                     c->train.lr > 0 ? "" : " (the default for this n)");
    }
    int max_threads = config_max_threads();
    if (c->train.threads > max_threads)
        return failk(err, o, K("train.threads"), "%d is more than 4 x the %d online cores; use at most %d (0 = all "
                     "cores)", c->train.threads, max_threads / 4, max_threads);
    if (c->data.eval_path[0] && c->data.eval_tokens > 0)
        return failk(err, o, K("data.eval_tokens"),
                     "is set together with data.eval_path; use one: eval_path for a separate set, or eval_tokens "
                     "to hold out the end of data.path");
    if (c->train.eval_every_steps > 0 && !c->data.eval_path[0] && c->data.eval_tokens == 0)
        return failk(err, o, K("train.eval_every_steps"),
                     "needs an evaluation set; set data.eval_path or data.eval_tokens, or set it to 0");
    return 0;
}

/* For config_validate after load: recover where each value came from by reading the source again
 * and comparing values (a value that differs from the file's, or from the default when the file
 * lacks the key, came from --set). */
static void origin_from_source(const sf_config *c, origin *o)
{
    memset(o, 0, sizeof *o);
    o->file = c->source;
    if (!c->source[0])
        return;
    sf_config *fc = malloc(sizeof *fc), *dc = malloc(sizeof *dc);
    origin *fo = calloc(1, sizeof *fo);
    if (fc && dc && fo) {
        config_defaults(fc);
        config_defaults(dc);
        fo->file = c->source;
        sf_err e;
        if (load_file(c->source, fc, fo, &e) == 0) {
            for (int k = 0; k < NKEYS; k++) {
                if (KEYS[k].kind == K_SECTION) {
                    o->line[k] = fo->line[k];
                    continue;
                }
                bool in_file = fo->line[k] > 0;
                if (key_equal(c, in_file ? fc : dc, k)) {
                    o->line[k] = fo->line[k];
                    o->null[k] = fo->null[k];
                } else {
                    o->set[k] = true;
                }
            }
        }
    }
    free(fc);
    free(dc);
    free(fo);
}

/* ---- public API ----------------------------------------------------------------------------- */

void config_defaults(sf_config *c)
{
    memset(c, 0, sizeof *c);
    c->seed = 0;
    c->backend = SF_BACKEND_AUTO;
    c->data.eval_tokens = 0;
    c->data.shuffle_buffer = 65536;
    c->data.bad_rows = SF_BAD_ROWS_ERROR;
    c->data.normalize = SF_NORMALIZE_NONE;
    c->sae.arch = SAE_ARCH_TOPK;
    c->sae.n_latents = 0;
    c->sae.expansion = 16;
    c->sae.k = 32;
    c->sae.gsae_beta = 1.0f;
    c->sae.init_scale = 0;
    c->sae.n_prefixes = 0;
    c->sae.aux_k = 0;
    c->sae.aux_alpha = SF_AUX_ALPHA_ARCH;
    c->sae.dead_tokens = 10000000;
    c->train.batch_tokens = 4096;
    c->train.total_tokens = 0;
    c->train.lr = 0;
    c->train.lr_min = 0;
    c->train.warmup_steps = 0;
    c->train.schedule = SF_SCHED_CONSTANT;
    c->train.decay_start = 0.8f;
    c->train.k_start = 0;
    c->train.k_anneal_steps = 0;
    c->train.grad_clip = 0;
    c->train.precision = SAE_PREC_FP32;
    c->train.threads = 0;
    c->train.eval_every_steps = 0;
    c->train.dist_timeout_s = 600;
    c->checkpoint.every_steps = 1000;
    c->checkpoint.keep = 3;
    c->log.every_steps = 10;
    c->log.progress = SF_PROGRESS_AUTO;
}

int config_load(const char *path, const char *const *overrides, int n_overrides, sf_config *c, sf_err *err)
{
    config_defaults(c);
    if (strlen(path) >= sizeof c->source)
        return sf_fail(err, SF_EINPUT, "%.200s...: config path too long; use a shorter path", path);
    snprintf(c->source, sizeof c->source, "%s", path);
    origin *o = calloc(1, sizeof *o);
    if (!o)
        return sf_fail(err, SF_EFAIL, "%s: out of memory", path);
    o->file = c->source;
    int rc = load_file(path, c, o, err);
    for (int i = 0; i < n_overrides && !rc; i++)
        rc = apply_override(c, o, overrides[i], err);
    if (!rc)
        rc = validate_impl(c, 0, o, err);
    free(o);
    return rc;
}

int config_validate(const sf_config *c, int d, sf_err *err)
{
    origin *o = malloc(sizeof *o);
    if (!o)
        return sf_fail(err, SF_EFAIL, "config: out of memory");
    origin_from_source(c, o);
    int rc = validate_impl(c, d, o, err);
    free(o);
    return rc;
}

void config_resolve(sf_config *c, int d)
{
    if (c->sae.n_latents == 0)
        c->sae.n_latents = (int64_t)c->sae.expansion * d;
    int64_t n = c->sae.n_latents;
    if (c->sae.aux_k == 0)
        c->sae.aux_k = d / 2 > 0 ? d / 2 : 1;
    c->sae.aux_alpha = config_aux_alpha_for(c->sae.arch, c->sae.aux_alpha);
    if (c->train.lr == 0 && n > 0)
        c->train.lr = config_default_lr(n);
    if (c->sae.arch == SAE_ARCH_MATRYOSHKA && c->sae.n_prefixes == 0 && n > 0) {
        int64_t cand[3] = {llround((double)n / 16.0), llround((double)n / 4.0), n};
        int g = 0;
        for (int i = 0; i < 3; i++)
            if (cand[i] >= 1 && (g == 0 || cand[i] > c->sae.prefixes[g - 1]))
                c->sae.prefixes[g++] = cand[i];
        c->sae.n_prefixes = g;
    }
}

const char *config_arch_name(sae_arch a)
{
    return (int)a >= 0 && (int)a < 4 ? arch_names[a] : "unknown";
}

float config_init_scale_for(sae_arch arch, float scale)
{
    if (scale > 0)
        return scale;
    int batch = arch == SAE_ARCH_BATCHTOPK || arch == SAE_ARCH_MATRYOSHKA;
    return batch ? SF_INIT_SCALE_BATCH : SF_INIT_SCALE_ROW;
}

float config_aux_alpha_for(sae_arch arch, float alpha)
{
    if (alpha >= 0)
        return alpha;
    return arch == SAE_ARCH_BATCHTOPK ? SF_AUX_ALPHA_BATCHTOPK : SF_AUX_ALPHA_OTHER;
}

float config_init_scale(const sf_config *c)
{
    return config_init_scale_for(c->sae.arch, c->sae.init_scale);
}

/* Shortest decimal that reads back as the same float. */
static void fmt_float(float f, char *out, size_t outsz)
{
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(out, outsz, "%.*g", prec, (double)f);
        if (strtof(out, NULL) == f)
            break;
    }
    /* keep it a number in YAML's eyes even when it prints as an integer */
    if (!strpbrk(out, ".eEn"))
        snprintf(out + strlen(out), outsz - strlen(out), ".0");
}

/* Needs an escape inside a YAML double-quoted scalar: not printable for YAML (C0, DEL, C1,
 * U+FFFE/U+FFFF), folded as a line break when read back (NEL, LS, PS), or a BOM. */
static bool yaml_needs_escape(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp < 0xa0) || cp == 0x2028 || cp == 0x2029 || cp == 0xfeff ||
           cp == 0xfffe || cp == 0xffff;
}

/* s is valid UTF-8 (key_assign refuses anything else), so every code point has an escape
 * that reads back as itself. */
static void put_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    const unsigned char *p = (const unsigned char *)s;
    size_t left = strlen(s);
    while (left) {
        uint32_t cp;
        size_t n = sf_utf8_decode(p, left, &cp);
        if (n == 0) { /* only a caller that filled the struct itself gets here */
            fprintf(f, "\\x%02x", *p);
            n = 1;
        } else if (cp == '"' || cp == '\\')
            fprintf(f, "\\%c", (int)cp);
        else if (yaml_needs_escape(cp))
            fprintf(f, cp < 0x100 ? "\\x%02x" : "\\u%04x", (unsigned)cp);
        else
            fwrite(p, 1, n, f);
        p += n;
        left -= n;
    }
    fputc('"', f);
}

int config_write(const sf_config *c, const char *path, sf_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return sf_fail(err, SF_EFAIL, "%s: out of memory", path);
    fprintf(f, "# saeforge resolved config: every key, defaults filled in (see docs/config.md).\n");
    if (c->source[0]) {
        /* escaped: a line break (or a byte that is not UTF-8) in the name would end the comment
         * or make the whole file unreadable */
        char q[3 * SF_PATH_MAX + 8];
        fprintf(f, "# from: %s\n", sf_quote_str(q, sizeof q, c->source));
    }
    for (int k = 0; k < NKEYS; k++) {
        const key_def *kd = &KEYS[k];
        const char *fld = (const char *)c + kd->off;
        if (kd->kind == K_SECTION) {
            fprintf(f, "%s:\n", kd->name);
            continue;
        }
        fprintf(f, "%s%s: ", strchr(kd->name, '.') ? "  " : "", leaf_of(kd->name));
        switch (kd->kind) {
        case K_I64: {
            int64_t x;
            memcpy(&x, fld, sizeof x);
            fprintf(f, "%" PRId64, x);
            break;
        }
        case K_INT: {
            int x;
            memcpy(&x, fld, sizeof x);
            fprintf(f, "%d", x);
            break;
        }
        case K_F32: {
            char nb[48];
            fmt_float(fget(c, k), nb, sizeof nb);
            fputs(nb, f);
            break;
        }
        case K_STR:
            put_quoted(f, fld);
            break;
        case K_ENUM: {
            int x;
            memcpy(&x, fld, sizeof x);
            int cnt = 0;
            while (kd->enums[cnt])
                cnt++;
            fputs(x >= 0 && x < cnt ? kd->enums[x] : "?", f);
            break;
        }
        case K_PREFIXES:
            fputc('[', f);
            for (int i = 0; i < c->sae.n_prefixes && i < SAE_MAX_PREFIXES; i++)
                fprintf(f, "%s%" PRId64, i ? ", " : "", c->sae.prefixes[i]);
            fputc(']', f);
            break;
        case K_SECTION:
            break;
        }
        fprintf(f, "  # %s\n", kd->help);
    }
    if (fclose(f) != 0) {
        free(buf);
        return sf_fail(err, SF_EFAIL, "%s: out of memory", path);
    }
    int rc = fs_write_atomic(path, buf, len, err);
    free(buf);
    return rc;
}
