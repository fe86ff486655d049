/* Config loading, --set overrides, validation messages (file:line: key), resolution and the
 * resolved dump's round trip. Expected values are written out here, not taken from config.c. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/config.h"

static char tmpdir[256];

static void mk_tmp(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sf_test_config_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmp(void)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

TestSuite(config, .init = mk_tmp, .fini = rm_tmp);

/* Writes text to <tmpdir>/name and returns the path (static storage, one per slot). */
static const char *wr(const char *name, const char *text)
{
    static char paths[8][512];
    static int slot;
    char *p = paths[slot++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

#define MINIMAL "out_dir: runs/x\ndata:\n  path: acts/\ntrain:\n  total_tokens: 1000000\n"

/* Loads text, expects SF_EINPUT and a message holding "<file>:<line>:" (line > 0), or just
 * "<file>: " (line 0), and the key. Returns the message for further checks. */
static const char *expect_err(const char *text, const char *const *sets, int n_sets, int line, const char *key)
{
    static sf_err err;
    static sf_config c;
    const char *p = wr("bad.yaml", text);
    memset(&err, 0, sizeof err);
    int rc = config_load(p, sets, n_sets, &c, &err);
    cr_assert_eq(rc, SF_EINPUT, "rc %d for:\n%s", rc, text);
    cr_assert_eq(err.code, SF_EINPUT);
    char want[600];
    if (line > 0)
        snprintf(want, sizeof want, "%s:%d: ", p, line);
    else
        snprintf(want, sizeof want, "%s: ", p);
    if (line >= 0)
        cr_assert(strstr(err.msg, want) == err.msg, "message '%s' should start with '%s'", err.msg, want);
    cr_assert(strstr(err.msg, key), "message '%s' should name '%s'", err.msg, key);
    cr_assert(!strchr(err.msg, '\n'), "one line: '%s'", err.msg);
    return err.msg;
}

static void load_ok(const char *text, const char *const *sets, int n, sf_config *c)
{
    sf_err err = {0};
    const char *p = wr("ok.yaml", text);
    int rc = config_load(p, sets, n, c, &err);
    cr_assert_eq(rc, SF_OK, "unexpected error: %s", err.msg);
}

Test(config, defaults_match_spec)
{
    sf_config c;
    memset(&c, 0x5a, sizeof c);
    config_defaults(&c);
    cr_assert_eq(c.seed, 0);
    cr_assert_str_empty(c.out_dir);
    cr_assert_str_empty(c.source);
    cr_assert_eq(c.backend, SF_BACKEND_AUTO);
    cr_assert_str_empty(c.data.path);
    cr_assert_str_empty(c.data.eval_path);
    cr_assert_eq(c.data.eval_tokens, 0);
    cr_assert_eq(c.data.shuffle_buffer, 65536);
    cr_assert_eq(c.data.bad_rows, SF_BAD_ROWS_ERROR);
    cr_assert_eq(c.data.normalize, SF_NORMALIZE_NONE);
    cr_assert_eq(c.sae.arch, SAE_ARCH_TOPK);
    cr_assert_eq(c.sae.n_latents, 0);
    cr_assert_eq(c.sae.expansion, 16);
    cr_assert_eq(c.sae.k, 32);
    cr_assert_float_eq(c.sae.gsae_beta, 1.0f, 0);
    cr_assert_float_eq(c.sae.init_scale, 0.0f, 0);
    cr_assert_float_eq(config_init_scale(&c), 1.0f, 0); /* topk: row selection keeps the unit init */
    sf_config cb = c;
    cb.sae.arch = SAE_ARCH_BATCHTOPK;
    cr_assert_float_eq(config_init_scale(&cb), 0.01f, 0);
    cb.sae.arch = SAE_ARCH_MATRYOSHKA;
    cr_assert_float_eq(config_init_scale(&cb), 0.01f, 0);
    cb.sae.arch = SAE_ARCH_GSAE;
    cr_assert_float_eq(config_init_scale(&cb), 1.0f, 0);
    /* the benches' entry: same rule without a config */
    cr_assert_float_eq(config_init_scale_for(SAE_ARCH_MATRYOSHKA, 0), 0.01f, 0);
    cr_assert_float_eq(config_init_scale_for(SAE_ARCH_TOPK, 0), 1.0f, 0);
    cr_assert_float_eq(config_init_scale_for(SAE_ARCH_BATCHTOPK, 0.5f), 0.5f, 0);
    cr_assert_eq(c.sae.n_prefixes, 0);
    cr_assert_eq(c.sae.aux_k, 0);
    cr_assert_float_eq(c.sae.aux_alpha, -1.0f, 0); /* per arch, resolved by config_resolve */
    cr_assert_float_eq(config_aux_alpha_for(SAE_ARCH_BATCHTOPK, -1), 0.125f, 0);
    cr_assert_float_eq(config_aux_alpha_for(SAE_ARCH_MATRYOSHKA, -1), 0.03125f, 0);
    cr_assert_float_eq(config_aux_alpha_for(SAE_ARCH_TOPK, -1), 0.03125f, 0);
    cr_assert_float_eq(config_aux_alpha_for(SAE_ARCH_GSAE, -1), 0.03125f, 0);
    cr_assert_float_eq(config_aux_alpha_for(SAE_ARCH_BATCHTOPK, 0), 0.0f, 0); /* 0 stays off */
    cr_assert_float_eq(config_aux_alpha_for(SAE_ARCH_BATCHTOPK, 0.5f), 0.5f, 0);
    sf_config cr = c;
    cr.sae.arch = SAE_ARCH_BATCHTOPK;
    config_resolve(&cr, 64);
    cr_assert_float_eq(cr.sae.aux_alpha, 0.125f, 0);
    cr = c;
    config_resolve(&cr, 64);
    cr_assert_float_eq(cr.sae.aux_alpha, 0.03125f, 0);
    cr_assert_eq(c.sae.dead_tokens, 10000000);
    cr_assert_eq(c.train.batch_tokens, 4096);
    cr_assert_eq(c.train.total_tokens, 0);
    cr_assert_float_eq(c.train.lr, 0.0f, 0);
    cr_assert_float_eq(c.train.lr_min, 0.0f, 0);
    cr_assert_eq(c.train.warmup_steps, 0);
    cr_assert_eq(c.train.schedule, SF_SCHED_CONSTANT);
    cr_assert_float_eq(c.train.decay_start, 0.8f, 0);
    cr_assert_eq(c.train.k_start, 0);
    cr_assert_eq(c.train.k_anneal_steps, 0);
    cr_assert_float_eq(c.train.grad_clip, 0.0f, 0);
    cr_assert_eq(c.train.precision, SAE_PREC_FP32);
    cr_assert_eq(c.train.threads, 0);
    cr_assert_eq(c.train.eval_every_steps, 0);
    cr_assert_eq(c.checkpoint.every_steps, 1000);
    cr_assert_eq(c.checkpoint.keep, 3);
    cr_assert_eq(c.log.every_steps, 10);
    cr_assert_eq(c.log.progress, SF_PROGRESS_AUTO);
}

Test(config, minimal_file_keeps_defaults)
{
    sf_config c, d;
    load_ok("# a comment\n" MINIMAL, NULL, 0, &c);
    config_defaults(&d);
    cr_assert_str_eq(c.out_dir, "runs/x");
    cr_assert_str_eq(c.data.path, "acts/");
    cr_assert_eq(c.train.total_tokens, 1000000);
    cr_assert(strstr(c.source, "ok.yaml"));
    cr_assert_eq(c.sae.k, d.sae.k);
    cr_assert_eq(c.train.batch_tokens, d.train.batch_tokens);
    cr_assert_float_eq(c.sae.aux_alpha, d.sae.aux_alpha, 0);
    cr_assert_eq(c.checkpoint.every_steps, d.checkpoint.every_steps);
}

static const char *FULL =
    "seed: 7\n"
    "out_dir: \"runs/full run: #1\"\n"
    "backend: cpu\n"
    "data:\n"
    "  path: 'shards/*.h5'\n"
    "  eval_path: eval/\n"
    "  shuffle_buffer: 10_000\n"
    "  bad_rows: skip\n"
    "  normalize: expected_norm\n"
    "sae:\n"
    "  arch: matryoshka\n"
    "  n_latents: 1024\n"
    "  expansion: 8\n"
    "  k: 16\n"
    "  gsae_beta: 0.5\n"
    "  init_scale: 0.25\n"
    "  matryoshka_prefixes: [64, 256, 1024]\n"
    "  aux_k: 24\n"
    "  aux_alpha: 0.0625\n"
    "  dead_tokens: 2e6\n"
    "train:\n"
    "  batch_tokens: 2048\n"
    "  total_tokens: 1e7\n"
    "  lr: 3e-4\n"
    "  lr_min: 1.5e-5\n"
    "  warmup_steps: 100\n"
    "  schedule: cosine\n"
    "  decay_start: 0.5\n"
    "  k_start: 64\n"
    "  k_anneal_steps: 500\n"
    "  grad_clip: 1.0\n"
    "  precision: bf16\n"
    "  threads: 2\n"
    "  eval_every_steps: 250\n"
    "checkpoint:\n"
    "  every_steps: 200\n"
    "  keep: 5\n"
    "log: {every_steps: 20, progress: off}\n";

static void check_full(const sf_config *c)
{
    cr_assert_eq(c->seed, 7);
    cr_assert_str_eq(c->out_dir, "runs/full run: #1");
    cr_assert_eq(c->backend, SF_BACKEND_CPU);
    cr_assert_str_eq(c->data.path, "shards/*.h5");
    cr_assert_str_eq(c->data.eval_path, "eval/");
    cr_assert_eq(c->data.eval_tokens, 0);
    cr_assert_eq(c->data.shuffle_buffer, 10000);
    cr_assert_eq(c->data.bad_rows, SF_BAD_ROWS_SKIP);
    cr_assert_eq(c->data.normalize, SF_NORMALIZE_EXPECTED_NORM);
    cr_assert_eq(c->sae.arch, SAE_ARCH_MATRYOSHKA);
    cr_assert_eq(c->sae.n_latents, 1024);
    cr_assert_eq(c->sae.expansion, 8);
    cr_assert_eq(c->sae.k, 16);
    cr_assert_float_eq(c->sae.gsae_beta, 0.5f, 0);
    cr_assert_float_eq(c->sae.init_scale, 0.25f, 0);
    cr_assert_float_eq(config_init_scale(c), 0.25f, 0); /* given: wins over the arch's default */
    cr_assert_eq(c->sae.n_prefixes, 3);
    cr_assert_eq(c->sae.prefixes[0], 64);
    cr_assert_eq(c->sae.prefixes[1], 256);
    cr_assert_eq(c->sae.prefixes[2], 1024);
    cr_assert_eq(c->sae.aux_k, 24);
    cr_assert_float_eq(c->sae.aux_alpha, 0.0625f, 0);
    cr_assert_eq(c->sae.dead_tokens, 2000000);
    cr_assert_eq(c->train.batch_tokens, 2048);
    cr_assert_eq(c->train.total_tokens, 10000000);
    cr_assert_float_eq(c->train.lr, 3e-4f, 0);
    cr_assert_float_eq(c->train.lr_min, 1.5e-5f, 0);
    cr_assert_eq(c->train.warmup_steps, 100);
    cr_assert_eq(c->train.schedule, SF_SCHED_COSINE);
    cr_assert_float_eq(c->train.decay_start, 0.5f, 0);
    cr_assert_eq(c->train.k_start, 64);
    cr_assert_eq(c->train.k_anneal_steps, 500);
    cr_assert_float_eq(c->train.grad_clip, 1.0f, 0);
    cr_assert_eq(c->train.precision, SAE_PREC_BF16);
    cr_assert_eq(c->train.threads, 2);
    cr_assert_eq(c->train.eval_every_steps, 250);
    cr_assert_eq(c->checkpoint.every_steps, 200);
    cr_assert_eq(c->checkpoint.keep, 5);
    cr_assert_eq(c->log.every_steps, 20);
    cr_assert_eq(c->log.progress, SF_PROGRESS_OFF);
}

Test(config, full_file_sets_every_key)
{
    sf_config c;
    load_ok(FULL, NULL, 0, &c);
    check_full(&c);
}

/* Every field, compared one by one (independent of config.c's key table). */
static void assert_same(const sf_config *a, const sf_config *b)
{
    cr_assert_eq(a->seed, b->seed);
    cr_assert_str_eq(a->out_dir, b->out_dir);
    cr_assert_eq(a->backend, b->backend);
    cr_assert_str_eq(a->data.path, b->data.path);
    cr_assert_str_eq(a->data.eval_path, b->data.eval_path);
    cr_assert_eq(a->data.eval_tokens, b->data.eval_tokens);
    cr_assert_eq(a->data.shuffle_buffer, b->data.shuffle_buffer);
    cr_assert_eq(a->data.bad_rows, b->data.bad_rows);
    cr_assert_eq(a->data.normalize, b->data.normalize);
    cr_assert_eq(a->sae.arch, b->sae.arch);
    cr_assert_eq(a->sae.n_latents, b->sae.n_latents);
    cr_assert_eq(a->sae.expansion, b->sae.expansion);
    cr_assert_eq(a->sae.k, b->sae.k);
    cr_assert(a->sae.gsae_beta == b->sae.gsae_beta);
    cr_assert(a->sae.init_scale == b->sae.init_scale);
    cr_assert_eq(a->sae.n_prefixes, b->sae.n_prefixes);
    for (int i = 0; i < a->sae.n_prefixes; i++)
        cr_assert_eq(a->sae.prefixes[i], b->sae.prefixes[i]);
    cr_assert_eq(a->sae.aux_k, b->sae.aux_k);
    cr_assert(a->sae.aux_alpha == b->sae.aux_alpha);
    cr_assert_eq(a->sae.dead_tokens, b->sae.dead_tokens);
    cr_assert_eq(a->train.batch_tokens, b->train.batch_tokens);
    cr_assert_eq(a->train.total_tokens, b->train.total_tokens);
    cr_assert(a->train.lr == b->train.lr, "lr %.9g vs %.9g", (double)a->train.lr, (double)b->train.lr);
    cr_assert(a->train.lr_min == b->train.lr_min);
    cr_assert_eq(a->train.warmup_steps, b->train.warmup_steps);
    cr_assert_eq(a->train.schedule, b->train.schedule);
    cr_assert(a->train.decay_start == b->train.decay_start);
    cr_assert_eq(a->train.k_start, b->train.k_start);
    cr_assert_eq(a->train.k_anneal_steps, b->train.k_anneal_steps);
    cr_assert(a->train.grad_clip == b->train.grad_clip);
    cr_assert_eq(a->train.precision, b->train.precision);
    cr_assert_eq(a->train.threads, b->train.threads);
    cr_assert_eq(a->train.eval_every_steps, b->train.eval_every_steps);
    cr_assert_eq(a->checkpoint.every_steps, b->checkpoint.every_steps);
    cr_assert_eq(a->checkpoint.keep, b->checkpoint.keep);
    cr_assert_eq(a->log.every_steps, b->log.every_steps);
    cr_assert_eq(a->log.progress, b->log.progress);
}

static void round_trip(sf_config *a, int d)
{
    sf_err err = {0};
    cr_assert_eq(config_validate(a, d, &err), SF_OK, "%s", err.msg);
    config_resolve(a, d);
    char p[512];
    snprintf(p, sizeof p, "%s/resolved.yaml", tmpdir);
    cr_assert_eq(config_write(a, p, &err), SF_OK, "%s", err.msg);
    sf_config b;
    int rc = config_load(p, NULL, 0, &b, &err);
    cr_assert_eq(rc, SF_OK, "reloading the dump failed: %s", err.msg);
    assert_same(a, &b);
    cr_assert_eq(config_validate(&b, d, &err), SF_OK, "%s", err.msg);
}

Test(config, write_then_load_round_trips)
{
    sf_config a;
    load_ok(FULL, NULL, 0, &a);
    round_trip(&a, 64);
    check_full(&a); /* nothing in FULL needed resolving */
}

Test(config, round_trip_resolved_defaults_and_odd_strings)
{
    sf_config a;
    const char *sets[] = {"out_dir=\"dir with \\\"quotes\\\", a back\\\\slash, é and # hash\"",
                          "data.eval_path=- starts with dash: yes", "sae.arch=matryoshka"};
    load_ok(MINIMAL, sets, 3, &a);
    cr_assert_str_eq(a.out_dir, "dir with \"quotes\", a back\\slash, é and # hash");
    cr_assert_str_eq(a.data.eval_path, "- starts with dash: yes");
    round_trip(&a, 48); /* n = 768; lr = 2e-4 / sqrt(768/16384) is not a short decimal */
    cr_assert_eq(a.sae.n_latents, 768);
    cr_assert_eq(a.sae.n_prefixes, 3);
}

Test(config, resolved_dump_is_atomic_and_fails_cleanly)
{
    sf_config a;
    load_ok(MINIMAL, NULL, 0, &a);
    sf_err err = {0};
    char p[512];
    snprintf(p, sizeof p, "%s/no/such/dir/config.yaml", tmpdir);
    int rc = config_write(&a, p, &err);
    cr_assert_neq(rc, SF_OK);
    cr_assert(strstr(err.msg, "config.yaml"), "%s", err.msg);
    snprintf(p, sizeof p, "%s/w.yaml", tmpdir);
    cr_assert_eq(config_write(&a, p, &err), SF_OK, "%s", err.msg);
    /* only the file itself, no temp left beside it */
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while ((e = readdir(d)))
        cr_assert(!strstr(e->d_name, ".tmp"), "left behind: %s", e->d_name);
    closedir(d);
}

/* ---- errors ---------------------------------------------------------------------------------- */

Test(config, unknown_key_names_line_and_suggests)
{
    const char *m = expect_err(MINIMAL "  lrr: 0.1\n", NULL, 0, 6, "train.lrr");
    cr_assert(strstr(m, "unknown key"), "%s", m);
    cr_assert(strstr(m, "train.lr"), "%s", m);
    m = expect_err("lr: 0.1\n" MINIMAL, NULL, 0, 1, "lr");
    cr_assert(strstr(m, "did you mean train.lr"), "%s", m);
    m = expect_err(MINIMAL "bogus:\n  x: 1\n", NULL, 0, 6, "bogus");
    cr_assert(strstr(m, "unknown key"), "%s", m);
}

Test(config, wrong_type_names_line)
{
    const char *m = expect_err(MINIMAL "  lr: fast\n", NULL, 0, 6, "train.lr");
    cr_assert(strstr(m, "expected a number, got 'fast'"), "%s", m);
    m = expect_err("out_dir: o\ndata:\n  path: p\nsae:\n  k: 2.5\ntrain:\n  total_tokens: 100000\n", NULL, 0, 5,
                   "sae.k");
    cr_assert(strstr(m, "expected an integer"), "%s", m);
    expect_err(MINIMAL "sae:\n  k: 0x10\n", NULL, 0, 7, "sae.k");
    expect_err(MINIMAL "sae:\n  k: 99999999999\n", NULL, 0, 7, "sae.k");
    expect_err(MINIMAL "sae:\n  k: [1, 2]\n", NULL, 0, 7, "sae.k");
    expect_err(MINIMAL "sae:\n  k:\n", NULL, 0, 7, "sae.k");
    m = expect_err(MINIMAL "sae: 5\n", NULL, 0, 6, "sae");
    cr_assert(strstr(m, "mapping"), "%s", m);
    expect_err("out_dir: o\ndata:\n  path:\n    a: 1\ntrain:\n  total_tokens: 100000\n", NULL, 0, 3, "data.path");
    expect_err(MINIMAL "sae:\n  arch: matryoshka\n  matryoshka_prefixes: [1, x]\n", NULL, 0, 8,
               "sae.matryoshka_prefixes");
    expect_err(MINIMAL "sae:\n  arch: matryoshka\n  matryoshka_prefixes: 5\n", NULL, 0, 8,
               "sae.matryoshka_prefixes");
    expect_err(MINIMAL "  lr: .inf\n", NULL, 0, 6, "train.lr");
    expect_err(MINIMAL "  lr: 1e99\n", NULL, 0, 6, "train.lr");
}

Test(config, bad_enum_lists_choices)
{
    const char *m = expect_err(MINIMAL "sae:\n  arch: jumprelu\n", NULL, 0, 7, "sae.arch");
    cr_assert(strstr(m, "topk|gsae|batchtopk|matryoshka"), "%s", m);
    cr_assert(strstr(m, "jumprelu"), "%s", m);
    expect_err("backend: gpu\n" MINIMAL, NULL, 0, 1, "backend");
    expect_err(MINIMAL "  precision: fp16\n", NULL, 0, 6, "train.precision");
    expect_err(MINIMAL "log:\n  progress: yes\n", NULL, 0, 7, "log.progress");
}

Test(config, out_of_range_names_line)
{
    const char *m = expect_err(MINIMAL "sae:\n  k: 0\n", NULL, 0, 7, "sae.k");
    cr_assert(strstr(m, "out of range"), "%s", m);
    expect_err(MINIMAL "  decay_start: 1.5\n", NULL, 0, 6, "train.decay_start");
    expect_err(MINIMAL "  lr: -1e-4\n", NULL, 0, 6, "train.lr");
    expect_err(MINIMAL "  batch_tokens: 0\n", NULL, 0, 6, "train.batch_tokens");
    expect_err(MINIMAL "checkpoint:\n  keep: 0\n", NULL, 0, 7, "checkpoint.keep");
    expect_err(MINIMAL "sae:\n  gsae_beta: -0.5\n", NULL, 0, 7, "sae.gsae_beta");
    expect_err(MINIMAL "sae:\n  aux_alpha: -0.5\n", NULL, 0, 7, "sae.aux_alpha");
    expect_err(MINIMAL "sae:\n  init_scale: -0.5\n", NULL, 0, 7, "sae.init_scale");
    expect_err(MINIMAL "sae:\n  init_scale: 1.5\n", NULL, 0, 7, "sae.init_scale");
    expect_err(MINIMAL "log:\n  every_steps: 0\n", NULL, 0, 7, "log.every_steps");
    /* cross-key rules */
    m = expect_err("out_dir: o\ndata:\n  path: p\ntrain:\n  batch_tokens: 4096\n  total_tokens: 100\n", NULL, 0, 6,
                   "train.total_tokens");
    cr_assert(strstr(m, "batch"), "%s", m);
    expect_err(MINIMAL "sae:\n  n_latents: 64\n  k: 65\n", NULL, 0, 8, "sae.k");
    expect_err(MINIMAL "sae:\n  arch: matryoshka\n  n_latents: 64\n  matryoshka_prefixes: [8, 4, 64]\n", NULL, 0, 9,
               "sae.matryoshka_prefixes");
    expect_err(MINIMAL "sae:\n  arch: matryoshka\n  n_latents: 64\n  matryoshka_prefixes: [8, 16, 32]\n", NULL, 0, 9,
               "sae.matryoshka_prefixes");
    expect_err(MINIMAL "sae:\n  arch: matryoshka\n  matryoshka_prefixes: [0, 16]\n", NULL, 0, 8,
               "sae.matryoshka_prefixes");
    m = expect_err(MINIMAL "sae:\n  matryoshka_prefixes: [8, 16]\n", NULL, 0, 7, "sae.matryoshka_prefixes");
    cr_assert(strstr(m, "matryoshka"), "%s", m);
    expect_err(MINIMAL "  k_start: 64\n", NULL, 0, 6, "train.k_start");
    expect_err(MINIMAL "  k_anneal_steps: 64\n", NULL, 0, 6, "train.k_anneal_steps");
    expect_err(MINIMAL "  k_start: 8\n  k_anneal_steps: 10\n", NULL, 0, 6, "train.k_start");
    expect_err(MINIMAL "  eval_every_steps: 10\n", NULL, 0, 6, "train.eval_every_steps");
    expect_err(MINIMAL "  lr: 1e-4\n  lr_min: 1e-3\n", NULL, 0, 7, "train.lr_min");
    expect_err("out_dir: o\ndata:\n  path: p\n  eval_path: e\n  eval_tokens: 10\ntrain:\n  total_tokens: 100000\n",
               NULL, 0, 5, "data.eval_tokens");
}

Test(config, missing_required_keys)
{
    /* the section exists: point at it */
    const char *m = expect_err("out_dir: o\ndata:\n  path: p\ntrain:\n  lr: 1e-3\n", NULL, 0, 4,
                               "train.total_tokens");
    cr_assert(strstr(m, "missing required key"), "%s", m);
    m = expect_err("data:\n  path: p\ntrain:\n  total_tokens: 100000\n", NULL, 0, 0, "out_dir");
    cr_assert(strstr(m, "missing required key"), "%s", m);
    expect_err("out_dir: o\ntrain:\n  total_tokens: 100000\n", NULL, 0, 0, "data.path");
    m = expect_err("out_dir:\ndata:\n  path: p\ntrain:\n  total_tokens: 100000\n", NULL, 0, 1, "out_dir");
    cr_assert(strstr(m, "empty"), "%s", m);
    expect_err("", NULL, 0, 0, "out_dir");
    expect_err("# only a comment\n", NULL, 0, 0, "out_dir");
    /* --set can supply what the file lacks */
    sf_config c;
    const char *sets[] = {"train.total_tokens=50000"};
    load_ok("out_dir: o\ndata:\n  path: p\n", sets, 1, &c);
    cr_assert_eq(c.train.total_tokens, 50000);
}

Test(config, yaml_syntax_error_names_line)
{
    const char *m = expect_err(MINIMAL "sae:\n  matryoshka_prefixes: [1, 2\n  k: 3\n", NULL, 0, -1,
                               "invalid YAML");
    char want[600];
    snprintf(want, sizeof want, "%s/bad.yaml:", tmpdir);
    cr_assert(strstr(m, want) == m, "%s", m);
    m = expect_err("out_dir: o\ndata:\n  path: p\n   bad: indent\n", NULL, 0, 4, "invalid YAML");
    m = expect_err("out_dir: \"unterminated\ndata: 1\n", NULL, 0, -1, "invalid YAML");
    cr_assert(strstr(m, want) == m, "%s", m);
    expect_err("out_dir: o\nout_dir: p\n", NULL, 0, 2, "duplicate");
    expect_err("- a\n- b\n", NULL, 0, 1, "top level");
    expect_err(MINIMAL "---\nseed: 1\n", NULL, 0, 6, "document");
    expect_err("out_dir: &a o\ndata:\n  path: *a\ntrain:\n  total_tokens: 100000\n", NULL, 0, 3, "alias");
}

Test(config, missing_file)
{
    sf_config c;
    sf_err err = {0};
    char p[512];
    snprintf(p, sizeof p, "%s/nope.yaml", tmpdir);
    int rc = config_load(p, NULL, 0, &c, &err);
    cr_assert_eq(rc, SF_EINPUT);
    cr_assert(strstr(err.msg, p) == err.msg, "%s", err.msg);
    cr_assert(strstr(err.msg, "cannot read config (No such file or directory)"), "%s", err.msg);
    rc = config_load(tmpdir, NULL, 0, &c, &err); /* a directory */
    cr_assert_eq(rc, SF_EINPUT, "%s", err.msg);
    cr_assert(strstr(err.msg, "cannot read config"), "%s", err.msg);
}

/* ---- --set ------------------------------------------------------------------------------------ */

Test(config, set_overrides_in_order)
{
    sf_config c;
    const char *sets[] = {"train.lr=1e-3",
                          "sae.arch=matryoshka",
                          "sae.n_latents=512",
                          "sae.matryoshka_prefixes=[32, 128,512]",
                          "seed=42",
                          "data.path=shards/*.h5",
                          "train.lr=2e-3",
                          "log.progress='off'",
                          "data.eval_tokens=4_096"};
    load_ok(MINIMAL "  lr: 5e-4\n", sets, 9, &c);
    cr_assert_float_eq(c.train.lr, 2e-3f, 0);
    cr_assert_eq(c.sae.arch, SAE_ARCH_MATRYOSHKA);
    cr_assert_eq(c.sae.n_latents, 512);
    cr_assert_eq(c.sae.n_prefixes, 3);
    cr_assert_eq(c.sae.prefixes[0], 32);
    cr_assert_eq(c.sae.prefixes[1], 128);
    cr_assert_eq(c.sae.prefixes[2], 512);
    cr_assert_eq(c.seed, 42);
    cr_assert_str_eq(c.data.path, "shards/*.h5");
    cr_assert_eq(c.log.progress, SF_PROGRESS_OFF);
    cr_assert_eq(c.data.eval_tokens, 4096);

    const char *sets2[] = {"sae.arch=matryoshka", "sae.matryoshka_prefixes=16,64", "sae.n_latents=64"};
    load_ok(MINIMAL, sets2, 3, &c);
    cr_assert_eq(c.sae.n_prefixes, 2);
    cr_assert_eq(c.sae.prefixes[0], 16);
    cr_assert_eq(c.sae.prefixes[1], 64);
    const char *sets3[] = {"sae.matryoshka_prefixes=[]", "data.eval_path="};
    load_ok(MINIMAL "sae:\n  arch: matryoshka\n  matryoshka_prefixes: [4, 8]\n", sets3, 2, &c);
    cr_assert_eq(c.sae.n_prefixes, 0);
    cr_assert_str_empty(c.data.eval_path);
}

static void expect_set_err(const char *set, const char *key, const char *what)
{
    sf_config c;
    sf_err err = {0};
    const char *sets[] = {set};
    const char *p = wr("s.yaml", MINIMAL);
    int rc = config_load(p, sets, 1, &c, &err);
    cr_assert_eq(rc, SF_EINPUT, "--set %s should fail", set);
    char want[300];
    snprintf(want, sizeof want, "--set %s: ", key);
    cr_assert(strstr(err.msg, want) == err.msg, "'%s' should start with '%s'", err.msg, want);
    cr_assert(strstr(err.msg, what), "'%s' should say '%s'", err.msg, what);
}

Test(config, bad_set_overrides)
{
    expect_set_err("train.lrr=1", "train.lrr", "unknown key");
    expect_set_err("train.lr=fast", "train.lr", "expected a number, got 'fast'");
    expect_set_err("train.lr", "train.lr", "key=value");
    expect_set_err("train=1", "train", "section");
    expect_set_err("sae.k=[1,2", "sae.k", "cannot parse");
    expect_set_err("sae.k={a: 1}", "sae.k", "single value");
    expect_set_err("sae.k=[1,2]", "sae.k", "list");
    expect_set_err("sae.arch=relu", "sae.arch", "topk|gsae|batchtopk|matryoshka");
    expect_set_err("sae.matryoshka_prefixes=[1,b]", "sae.matryoshka_prefixes", "integers");
    expect_set_err("sae.matryoshka_prefixes=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", "sae.matryoshka_prefixes",
                   "at most 16");
    expect_set_err("sae.k=0", "sae.k", "out of range"); /* range errors name the --set too */
    expect_set_err("train.total_tokens=", "train.total_tokens", "integer");
}

/* ---- validate with d, resolve ------------------------------------------------------------------ */

Test(config, validate_with_width_names_origin)
{
    sf_config c;
    sf_err err = {0};
    /* n = expansion * d = 4 * 8 = 32 < k = 40 (k from line 7) */
    load_ok(MINIMAL "sae:\n  k: 40\n  expansion: 4\n", NULL, 0, &c);
    cr_assert_eq(config_validate(&c, 0, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(config_validate(&c, 64, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(config_validate(&c, 8, &err), SF_EINPUT);
    char want[1100];
    snprintf(want, sizeof want, "%s:7: sae.k: ", c.source);
    cr_assert(strstr(err.msg, want) == err.msg, "'%s' vs '%s'", err.msg, want);
    /* the same value coming from --set is reported as such */
    const char *sets[] = {"sae.k=40"};
    load_ok(MINIMAL "sae:\n  k: 8\n  expansion: 4\n", sets, 1, &c);
    cr_assert_eq(config_validate(&c, 8, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "--set sae.k: ") == err.msg, "%s", err.msg);
    /* k defaults to 32: blame the expansion line instead */
    load_ok(MINIMAL "sae:\n  expansion: 1\n", NULL, 0, &c);
    cr_assert_eq(config_validate(&c, 16, &err), SF_EINPUT);
    snprintf(want, sizeof want, "%s:7: sae.expansion: ", c.source);
    cr_assert(strstr(err.msg, want) == err.msg, "'%s' vs '%s'", err.msg, want);
    /* matryoshka: last prefix must equal n = 16 * d */
    load_ok(MINIMAL "sae:\n  arch: matryoshka\n  k: 4\n  matryoshka_prefixes: [16, 64, 256]\n", NULL, 0, &c);
    cr_assert_eq(config_validate(&c, 16, &err), SF_OK, "%s", err.msg);
    cr_assert_eq(config_validate(&c, 32, &err), SF_EINPUT);
    snprintf(want, sizeof want, "%s:9: sae.matryoshka_prefixes: ", c.source);
    cr_assert(strstr(err.msg, want) == err.msg, "'%s' vs '%s'", err.msg, want);
    /* a config built in code (no source) still validates, naming only the key */
    config_defaults(&c);
    cr_assert_eq(config_validate(&c, 0, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "out_dir"), "%s", err.msg);
}

Test(config, resolve_rules)
{
    sf_config c;
    load_ok(MINIMAL, NULL, 0, &c);
    config_resolve(&c, 1024); /* n = 16 * 1024 = 16384: lr = 2e-4 exactly */
    cr_assert_eq(c.sae.n_latents, 16384);
    cr_assert_eq(c.sae.aux_k, 512);
    cr_assert_float_eq(c.train.lr, 2e-4f, 1e-10);
    cr_assert_eq(c.sae.n_prefixes, 0); /* topk: no prefixes */
    sf_config again = c;
    config_resolve(&again, 1024);
    assert_same(&c, &again); /* idempotent */

    load_ok(MINIMAL "sae:\n  expansion: 64\n", NULL, 0, &c);
    config_resolve(&c, 1024); /* n = 65536: lr = 2e-4 / 2 */
    cr_assert_eq(c.sae.n_latents, 65536);
    cr_assert_float_eq(c.train.lr, 1e-4f, 1e-10);

    load_ok(MINIMAL "  lr: 7e-4\nsae:\n  n_latents: 512\n  aux_k: 3\n  arch: matryoshka\n", NULL, 0, &c);
    config_resolve(&c, 64);
    cr_assert_eq(c.sae.n_latents, 512); /* n_latents wins over expansion */
    cr_assert_eq(c.sae.aux_k, 3);
    cr_assert_float_eq(c.train.lr, 7e-4f, 0);
    cr_assert_eq(c.sae.n_prefixes, 3);
    cr_assert_eq(c.sae.prefixes[0], 32);
    cr_assert_eq(c.sae.prefixes[1], 128);
    cr_assert_eq(c.sae.prefixes[2], 512);

    /* rounding: n = 40 -> 40/16 = 2.5 -> 3, 40/4 = 10, 40 */
    load_ok(MINIMAL "sae:\n  n_latents: 40\n  k: 4\n  arch: matryoshka\n", NULL, 0, &c);
    config_resolve(&c, 8);
    cr_assert_eq(c.sae.n_prefixes, 3);
    cr_assert_eq(c.sae.prefixes[0], 3);
    cr_assert_eq(c.sae.prefixes[1], 10);
    cr_assert_eq(c.sae.prefixes[2], 40);
    cr_assert_eq(c.sae.aux_k, 4);
    sf_err err = {0};
    cr_assert_eq(config_validate(&c, 8, &err), SF_OK, "%s", err.msg);

    /* tiny n: duplicates and zeros dropped, still ascending and ending at n */
    load_ok(MINIMAL "sae:\n  n_latents: 4\n  k: 1\n  arch: matryoshka\n", NULL, 0, &c);
    config_resolve(&c, 2);
    cr_assert_eq(c.sae.n_prefixes, 2);
    cr_assert_eq(c.sae.prefixes[0], 1);
    cr_assert_eq(c.sae.prefixes[1], 4);
    cr_assert_eq(c.sae.aux_k, 1);

    /* explicit prefixes are kept */
    load_ok(MINIMAL "sae:\n  n_latents: 64\n  k: 4\n  arch: matryoshka\n  matryoshka_prefixes: [8, 64]\n", NULL, 0, &c);
    config_resolve(&c, 16);
    cr_assert_eq(c.sae.n_prefixes, 2);
    cr_assert_eq(c.sae.prefixes[0], 8);
}

Test(config, arch_names)
{
    cr_assert_str_eq(config_arch_name(SAE_ARCH_TOPK), "topk");
    cr_assert_str_eq(config_arch_name(SAE_ARCH_GSAE), "gsae");
    cr_assert_str_eq(config_arch_name(SAE_ARCH_BATCHTOPK), "batchtopk");
    cr_assert_str_eq(config_arch_name(SAE_ARCH_MATRYOSHKA), "matryoshka");
}

/* The shipped example configs load and validate (tests run from the repository root). */
Test(config, example_configs_load)
{
    const char *names[] = {"configs/quickstart.yaml", "configs/gsae.yaml", "configs/batchtopk.yaml",
                           "configs/matryoshka.yaml"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        sf_config c;
        sf_err err = {0};
        int rc = config_load(names[i], NULL, 0, &c, &err);
        cr_assert_eq(rc, SF_OK, "%s: %s", names[i], err.msg);
        cr_assert_eq(config_validate(&c, 64, &err), SF_OK, "%s: %s", names[i], err.msg);
    }
}

/* Loads text, resolves for d, writes the resolved dump, loads it again: returns the reloaded
 * config in *b (and the resolved one in *a). */
static void resolve_write_reload(const char *text, const char *const *sets, int n_sets, int d, sf_config *a,
                                 sf_config *b)
{
    sf_err err = {0};
    load_ok(text, sets, n_sets, a);
    cr_assert_eq(config_validate(a, d, &err), SF_OK, "%s", err.msg);
    config_resolve(a, d);
    char out[600];
    snprintf(out, sizeof out, "%s/resolved.yaml", tmpdir);
    cr_assert_eq(config_write(a, out, &err), SF_OK, "%s", err.msg);
    int rc = config_load(out, NULL, 0, b, &err);
    cr_assert_eq(rc, SF_OK, "the resolved dump does not load: %s", err.msg);
}

/* What the fuzz harness found (or would have): each reloaded to something else or not at all. */
Test(config, resolved_dump_reloads_odd_text_and_floats)
{
    sf_config a, b;
    /* NEL, LS, PS, C1 controls, BOM, U+FFFE as YAML escapes: libyaml folds the first three to a
     * space when written raw and refuses the rest */
    resolve_write_reload("out_dir: \"r\\x85\\u2028\\u2029\\x80\\x9f\\uFEFF\\uFFFE|\"\n"
                         "data:\n  path: \"p\\t\\x01\\\\\\\"\"\ntrain:\n  total_tokens: 4096\n",
                         NULL, 0, 64, &a, &b);
    cr_assert_str_eq(b.out_dir, "r\xc2\x85\xe2\x80\xa8\xe2\x80\xa9\xc2\x80\xc2\x9f\xef\xbb\xbf\xef\xbf\xbe|");
    cr_assert_str_eq(b.data.path, "p\t\x01\\\"");
    /* 3.4028234e38 rounds to FLT_MAX, whose shortest text 3.4028235e38 is above FLT_MAX as a
     * double: it must load (the float it names is finite) */
    resolve_write_reload(MINIMAL "  grad_clip: 3.4028234e38\n  lr: 1.0000000596046448\n", NULL, 0, 64, &a, &b);
    cr_assert_eq(b.train.grad_clip, FLT_MAX);
    cr_assert_eq(a.train.lr, b.train.lr);
    cr_assert_eq(b.train.lr, nextafterf(1.0f, 2.0f), "strtof rounding (not strtod then float): %.9g",
                 (double)b.train.lr);
    /* past FLT_MAX is an error, not infinity */
    expect_err(MINIMAL "  grad_clip: 3.5e38\n", NULL, 0, 6, "train.grad_clip");
}

Test(config, lr_min_checked_against_the_default_lr)
{
    /* n given: default lr 2e-4 / sqrt(16384 / 16384) = 2e-4, known at load */
    const char *m = expect_err(MINIMAL "  lr_min: 5\n  schedule: cosine\nsae:\n  n_latents: 16384\n", NULL, 0, 6,
                               "train.lr_min");
    cr_assert(strstr(m, "5.0 is above train.lr = 0.0002"), "%s", m);
    /* n = expansion * d: checked once d is known; d = 64 -> n = 1024 -> lr 8e-4 */
    sf_config c;
    sf_err err = {0};
    load_ok(MINIMAL "  lr_min: 0.001\n  schedule: cosine\n", NULL, 0, &c);
    cr_assert_eq(config_validate(&c, 64, &err), SF_EINPUT);
    cr_assert(strstr(err.msg, "train.lr_min") && strstr(err.msg, "0.001 is above train.lr = 0.0008 (the default"),
              "%s", err.msg);
    /* at or below the default lr is fine */
    load_ok(MINIMAL "  lr_min: 0.0008\n  schedule: cosine\n", NULL, 0, &c);
    cr_assert_eq(config_validate(&c, 64, &err), SF_OK, "%s", err.msg);
}

Test(config, threads_bounded_by_online_cores)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char text[256], want[64];
    snprintf(text, sizeof text, MINIMAL "  threads: %ld\n", 4 * cores);
    sf_config c;
    load_ok(text, NULL, 0, &c);
    cr_assert_eq(c.train.threads, 4 * cores);
    const char *m = expect_err(MINIMAL "  threads: 100000\n", NULL, 0, 6, "train.threads");
    snprintf(want, sizeof want, "use at most %ld", 4 * cores);
    cr_assert(strstr(m, "100000") && strstr(m, want), "%s", m);
    const char *sets[] = {"train.threads=100000"};
    expect_err(MINIMAL, sets, 1, -1, "--set train.threads");
}

Test(config, text_values_must_be_utf8)
{
    const char *sets[] = {"out_dir=runs/\xff\xfe"};
    const char *m = expect_err(MINIMAL, sets, 1, -1, "--set out_dir");
    cr_assert(strstr(m, "not UTF-8") && strstr(m, "runs/\\xff\\xfe"), "%s", m);
}

/* Quoted input is escaped and cut: a message stays one printable line whatever the file holds. */
Test(config, messages_escape_and_cut_quoted_input)
{
    const char *m = expect_err("\"ev\\x1b[2Jil\\nkey\": 1\n" MINIMAL, NULL, 0, 1, "ev\\x1b[2Jil\\x0akey");
    for (const char *p = m; *p; p++)
        cr_assert((unsigned char)*p >= 0x20 && *p != 0x7f, "raw control byte in: %s", m);
    char text[2048];
    snprintf(text, sizeof text, MINIMAL "  batch_tokens: \"");
    for (int i = 0; i < 900; i++)
        strcat(text, "\\e");
    strcat(text, "\"\n");
    m = expect_err(text, NULL, 0, 6, "train.batch_tokens");
    cr_assert(strlen(m) < 400, "not cut (%zu bytes): %s", strlen(m), m);
    cr_assert(strstr(m, "\\x1b\\x1b...'"), "%s", m);
}
