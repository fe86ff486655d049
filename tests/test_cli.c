/* Bad input through the real binary (SPEC §5): exit 2, one line naming what/where and what to
 * do, and nothing half-written left in the run directory. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/shard_write.h"
#include "helpers/cli.h"
#include "host/config.h"
#include "host/fsutil.h"

static char out[65536];
static char before[65536], after[65536];

/* Every path under dir with its size (empty when dir does not exist). */
static void listing(const char *dir, char *buf, size_t cap)
{
    tcli_run(buf, cap, "cd %s 2>/dev/null && find . -printf '%%p %%s\\n' | sort", dir);
}

/* The last command must have failed as bad input: exit 2, one line holding each of want[]. */
static int allow_progress; /* a failure mid-run may follow training log lines ("step i/n ...") */

static void drop_progress_lines(void)
{
    char *o = out;
    for (const char *l = out; *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) + 1 : strlen(l);
        if (strncmp(l, "step ", 5)) {
            memmove(o, l, n);
            o += n;
        }
        l += n;
    }
    *o = 0;
}

static void check_bad(int rc, const char *const *want)
{
    if (allow_progress)
        drop_progress_lines();
    cr_assert_eq(rc, 2, "exit %d, output:\n%s", rc, out);
    cr_assert_eq(tcli_count_lines(out), 1, "expected one line:\n%s", out);
    cr_assert(!strncmp(out, "saeforge: ", 10), "not a saeforge error line: %s", out);
    for (; *want; want++)
        cr_assert(strstr(out, *want), "'%s' not named in: %s", *want, out);
}

/* Runs the command (printf-style after want) with run as the directory that must not change. */
#define EXPECT_BAD(run, want, ...)                                                                \
    do {                                                                                          \
        listing(run, before, sizeof before);                                                      \
        int rc_ = tcli_run(out, sizeof out, __VA_ARGS__);                                         \
        check_bad(rc_, want);                                                                     \
        listing(run, after, sizeof after);                                                        \
        cr_assert_str_eq(before, after, "%s changed:\nbefore:\n%s\nafter:\n%s", run, before, after); \
        cr_assert(!strstr(after, ".tmp"), "temporary files left in %s:\n%s", run, after);          \
    } while (0)

typedef struct fx {
    char dir[512], data[600], run[600], cfg[600];
} fx;

static void write_cfg(const fx *f, const char *path, const char *data, const char *arch,
                      const char *extra)
{
    char text[4096];
    snprintf(text, sizeof text,
             "seed: 3\nout_dir: %s\nbackend: cpu\n"
             "data:\n  path: %s\n  shuffle_buffer: 512\n%s"
             "sae:\n  arch: %s\n  n_latents: 32\n  k: 4\n"
             "train:\n  batch_tokens: 256\n  total_tokens: 2048\n  threads: 1\n"
             "checkpoint:\n  every_steps: 2\n  keep: 4\n"
             "log:\n  every_steps: 100\n  progress: off\n",
             f->run, data, extra ? extra : "", arch);
    tcli_write(path, text);
}

/* A temp dir with synthetic shards (d=16, 2048 rows) in data/ and a valid config c.yaml. */
static void fx_init(fx *f, int slot)
{
    snprintf(f->dir, sizeof f->dir, "%s", tcli_tmpdir(slot));
    snprintf(f->data, sizeof f->data, "%s/data", f->dir);
    snprintf(f->run, sizeof f->run, "%s/run", f->dir);
    snprintf(f->cfg, sizeof f->cfg, "%s/c.yaml", f->dir);
    int rc = tcli_run(out, sizeof out, "%s synth --out %s --d 16 --features 32 --tokens 2048 --k 3 --seed 5",
                      tcli_bin(), f->data);
    cr_assert_eq(rc, 0, "%s", out);
    write_cfg(f, f->cfg, f->data, "topk", NULL);
}

static void fx_free(fx *f) { tcli_run(NULL, 0, "rm -rf %s", f->dir); }

/* A config that differs from the valid one by replacing `from` with `to`. */
static void cfg_variant(const fx *f, const char *name, const char *from, const char *to, char *path,
                        size_t cap)
{
    snprintf(path, cap, "%s/%s", f->dir, name);
    tcli_run(out, sizeof out, "sed 's#%s#%s#' %s > %s", from, to, f->cfg, path);
}

static void write_rows(const char *path, int64_t rows, int d, int64_t nan_row, int grads)
{
    float *x = malloc(sizeof(float) * (size_t)rows * d);
    for (int64_t i = 0; i < rows * d; i++)
        x[i] = (float)sin(0.37 * (double)i) * 0.5f;
    if (nan_row >= 0)
        x[nan_row * d + 3] = NAN;
    shard_write_opts o = {.dtype = SHARD_F32, .chunk_rows = 256, .context_size = -1};
    o.with_gradients = grads;
    sf_err err = {0};
    cr_assert_eq(shard_write(path, rows, d, x, grads ? x : NULL, NULL, &o, &err), 0, "%s", err.msg);
    free(x);
}

Test(cli, config_unknown_key)
{
    fx f;
    fx_init(&f, 0);
    char p[700];
    cfg_variant(&f, "u.yaml", "  k: 4", "  k: 4\\n  bogus_key: 1", p, sizeof p);
    const char *want[] = {"u.yaml", "sae.bogus_key", "unknown", NULL};
    EXPECT_BAD(f.run, want, "%s train %s", tcli_bin(), p);
    fx_free(&f);
}

Test(cli, config_wrong_type)
{
    fx f;
    fx_init(&f, 0);
    char p[700];
    cfg_variant(&f, "t.yaml", "batch_tokens: 256", "batch_tokens: lots", p, sizeof p);
    const char *want[] = {"t.yaml", "train.batch_tokens", "lots", NULL};
    EXPECT_BAD(f.run, want, "%s train %s", tcli_bin(), p);
    fx_free(&f);
}

Test(cli, config_out_of_range)
{
    fx f;
    fx_init(&f, 0);
    char p[700];
    cfg_variant(&f, "k0.yaml", "  k: 4", "  k: 0", p, sizeof p);
    const char *want[] = {"k0.yaml", "sae.k", NULL};
    EXPECT_BAD(f.run, want, "%s train %s", tcli_bin(), p);
    /* k > n is only known once d (and so n) is resolved */
    const char *want2[] = {"sae.k", "n_latents", NULL};
    EXPECT_BAD(f.run, want2, "%s train %s --set sae.k=64", tcli_bin(), f.cfg);
    fx_free(&f);
}

Test(cli, config_missing_file)
{
    fx f;
    fx_init(&f, 0);
    const char *want[] = {"nope.yaml", NULL};
    EXPECT_BAD(f.run, want, "%s train %s/nope.yaml", tcli_bin(), f.dir);
    fx_free(&f);
}

Test(cli, data_path_missing)
{
    fx f;
    fx_init(&f, 0);
    const char *want[] = {"/nowhere", "data.path", NULL};
    EXPECT_BAD(f.run, want, "%s train %s --set data.path=%s/nowhere", tcli_bin(), f.cfg, f.dir);
    fx_free(&f);
}

Test(cli, shards_with_different_d)
{
    fx f;
    fx_init(&f, 0);
    char mix[700], a[800], b[800];
    snprintf(mix, sizeof mix, "%s/mix", f.dir);
    mkdir(mix, 0755);
    snprintf(a, sizeof a, "%s/a.h5", mix);
    snprintf(b, sizeof b, "%s/b.h5", mix);
    write_rows(a, 1024, 16, -1, 0);
    write_rows(b, 1024, 24, -1, 0);
    const char *want[] = {"b.h5", "a.h5", "d=24", NULL};
    EXPECT_BAD(f.run, want, "%s train %s --set data.path=%s", tcli_bin(), f.cfg, mix);
    fx_free(&f);
}

/* Data rows are only checked as they are read: a bad row in the first batch stops the run
 * before the run dir exists; one found mid-run (before any checkpoint) removes the new dir. */
static void check_nan(int64_t nan_row, const char *extra)
{
    fx f;
    fx_init(&f, 0);
    char nan[700], p[800], row[64];
    snprintf(nan, sizeof nan, "%s/nan", f.dir);
    mkdir(nan, 0755);
    snprintf(p, sizeof p, "%s/shard.h5", nan);
    write_rows(p, 2048, 16, nan_row, 0);
    snprintf(row, sizeof row, "row %lld ", (long long)nan_row);
    const char *want[] = {"shard.h5", row, "bad_rows", NULL};
    allow_progress = 1;
    EXPECT_BAD(f.run, want, "%s train %s --set data.path=%s %s", tcli_bin(), f.cfg, nan, extra);
    allow_progress = 0;
    cr_assert(access(f.run, F_OK) != 0, "run dir left behind");
    int rc = tcli_run(out, sizeof out, "%s train %s --set data.path=%s --set data.bad_rows=skip %s",
                      tcli_bin(), f.cfg, nan, extra);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "skipped 1 rows"), "skipped rows not reported:\n%s", out);
    fx_free(&f);
}

Test(cli, nan_row_first_batch) { check_nan(100, "--set data.shuffle_buffer=0"); }
Test(cli, nan_row_mid_run) { check_nan(1500, "--set data.shuffle_buffer=0 --set checkpoint.every_steps=0"); }

Test(cli, truncated_shard)
{
    fx f;
    fx_init(&f, 0);
    char sh[700];
    snprintf(sh, sizeof sh, "%s/shard_000.h5", f.data);
    struct stat st;
    cr_assert_eq(stat(sh, &st), 0);
    cr_assert_eq(truncate(sh, st.st_size / 2), 0);
    const char *want[] = {"shard_000.h5", "truncated or damaged", NULL};
    EXPECT_BAD(f.run, want, "%s train %s", tcli_bin(), f.cfg);
    fx_free(&f);
}

Test(cli, corrupt_shard_header)
{
    fx f;
    fx_init(&f, 0);
    char sh[700];
    snprintf(sh, sizeof sh, "%s/shard_000.h5", f.data);
    FILE *fp = fopen(sh, "r+b");
    cr_assert_not_null(fp);
    for (int i = 0; i < 1024; i++)
        fputc((i * 131 + 7) & 0xff, fp);
    fclose(fp);
    const char *want[] = {"shard_000.h5", NULL};
    EXPECT_BAD(f.run, want, "%s train %s", tcli_bin(), f.cfg);
    fx_free(&f);
}

static void truncate_half(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s", path);
    cr_assert_eq(truncate(path, st.st_size / 2), 0);
}

/* Every checkpoint damaged: --resume starts over (a requeued job needs no person) and ends
 * where an uninterrupted run ends. */
Test(cli, resume_with_only_damaged_checkpoint_starts_over)
{
    fx f;
    fx_init(&f, 0);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --set train.total_tokens=512", tcli_bin(), f.cfg),
                 0, "%s", out);
    char p[800], first[800];
    snprintf(p, sizeof p, "%s/final/sae.safetensors", f.run);
    snprintf(first, sizeof first, "%s.first", f.run);
    cr_assert_eq(tcli_run(out, sizeof out, "cp %s %s", p, first), 0);
    snprintf(p, sizeof p, "%s/checkpoints/step_2/sae.safetensors", f.run);
    truncate_half(p);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --set train.total_tokens=512 --resume", tcli_bin(), f.cfg),
                 0, "%s", out);
    cr_assert(strstr(out, "step_2 is damaged") && strstr(out, "starting the run from the beginning"),
              "%s", out);
    cr_assert_eq(tcli_run(out, sizeof out, "cmp %s %s/final/sae.safetensors", first, f.run), 0,
                 "restarted run ends as the first did: %s", out);
    unlink(first);
    fx_free(&f);
}

/* Killed before the run dir was made: --resume starts the run. */
Test(cli, resume_without_run_dir_starts_the_run)
{
    fx f;
    fx_init(&f, 0);
    cr_assert(!fs_exists(f.run));
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --resume", tcli_bin(), f.cfg), 0, "%s", out);
    cr_assert(strstr(out, "starting the run from the beginning"), "%s", out);
    char p[800];
    snprintf(p, sizeof p, "%s/final/sae.safetensors", f.run);
    cr_assert(fs_exists(p));
    fx_free(&f);
}

Test(cli, resume_skips_damaged_to_older)
{
    fx f;
    fx_init(&f, 0);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --set train.total_tokens=1024", tcli_bin(), f.cfg),
                 0, "%s", out);
    char p[800];
    snprintf(p, sizeof p, "%s/checkpoints/step_4/sae.safetensors", f.run);
    truncate_half(p);
    int rc = tcli_run(out, sizeof out, "%s train %s --resume", tcli_bin(), f.cfg);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "step_4 is damaged") && strstr(out, "skipping"), "%s", out);
    cr_assert(strstr(out, "resuming from") && strstr(out, "step_2 (step 2)"), "%s", out);
    cr_assert(strstr(out, "8 steps"), "%s", out);
    fx_free(&f);
}

Test(cli, gsae_without_gradients)
{
    fx f;
    fx_init(&f, 0);
    const char *want[] = {"shard_000.h5", "gradients", "--gradients", NULL};
    EXPECT_BAD(f.run, want, "%s train %s --set sae.arch=gsae", tcli_bin(), f.cfg);
    fx_free(&f);
}

Test(cli, inspect_bad_paths)
{
    fx f;
    fx_init(&f, 0);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --set train.total_tokens=512", tcli_bin(), f.cfg),
                 0, "%s", out);
    char p[800];
    snprintf(p, sizeof p, "%s/checkpoints/step_2/sae.safetensors", f.run);
    truncate_half(p);
    const char *want[] = {"step_2/sae.safetensors", "damaged", NULL};
    EXPECT_BAD(f.run, want, "%s inspect %s", tcli_bin(), p);
    const char *want2[] = {"nothing_here", NULL};
    EXPECT_BAD(f.run, want2, "%s inspect %s/nothing_here", tcli_bin(), f.dir);
    fx_free(&f);
}

Test(cli, compare_missing_file)
{
    fx f;
    fx_init(&f, 0);
    const char *want[] = {"missing.safetensors", NULL};
    EXPECT_BAD(f.data, want, "%s compare %s/truth.safetensors %s/missing.safetensors", tcli_bin(),
               f.data, f.dir);
    fx_free(&f);
}

Test(cli, export_bad_format)
{
    fx f;
    fx_init(&f, 0);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --set train.total_tokens=512", tcli_bin(), f.cfg),
                 0, "%s", out);
    char dest[700];
    snprintf(dest, sizeof dest, "%s/exp", f.dir);
    const char *want[] = {"--format", "onnx", "saelens", NULL};
    EXPECT_BAD(f.dir, want, "%s export %s --format onnx --out %s", tcli_bin(), f.run, dest);
    fx_free(&f);
}

Test(cli, unknown_verb)
{
    const char *want[] = {"frobnicate", "--help", NULL};
    const char *dir = tcli_tmpdir(1);
    EXPECT_BAD(dir, want, "%s frobnicate %s/x", tcli_bin(), dir);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}

Test(cli, synth_bad_dtype)
{
    const char *dir = tcli_tmpdir(1);
    const char *want[] = {"--dtype", "f64", "bf16", NULL};
    EXPECT_BAD(dir, want, "%s synth --out %s/s --dtype f64", tcli_bin(), dir);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}

/* ---- issue 9 §5: bounds and quoting ---------------------------------------------------------- */

Test(cli, threads_above_bound_refused)
{
    fx f;
    fx_init(&f, 0);
    char want_max[64];
    snprintf(want_max, sizeof want_max, "at most %ld", 4 * sysconf(_SC_NPROCESSORS_ONLN));
    const char *want[] = {"--set train.threads", "100000", "online cores", want_max, NULL};
    EXPECT_BAD(f.run, want, "%s train %s --set train.threads=100000", tcli_bin(), f.cfg);
    fx_free(&f);
}

Test(cli, lr_min_above_resolved_lr_refused)
{
    fx f;
    fx_init(&f, 0);
    /* n_latents 32 in the file: default lr 2e-4 / sqrt(32 / 16384) = 0.00452548, known at load */
    const char *want[] = {"train.lr_min", "5.0 is above train.lr = 0.00452548", NULL};
    EXPECT_BAD(f.run, want, "%s train %s --set train.lr_min=5 --set train.schedule=cosine", tcli_bin(), f.cfg);
    /* n = expansion * d: known once the shards are open (d = 16 -> n = 32), still before the run dir */
    const char *want2[] = {"train.lr_min", "(the default for this n)", NULL};
    EXPECT_BAD(f.run, want2, "%s train %s --set sae.n_latents=0 --set sae.expansion=2 --set train.lr_min=5",
               tcli_bin(), f.cfg);
    fx_free(&f);
}

/* A NEL (U+0085) in out_dir: the run trains, and its config.yaml loads back to the same bytes. */
Test(cli, resolved_config_reloads_with_odd_path)
{
    fx f;
    fx_init(&f, 0);
    char run[700], cfg[800];
    snprintf(run, sizeof run, "%s/r\xc2\x85n", f.dir);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --set 'out_dir=%s' --set train.total_tokens=512", tcli_bin(),
                          f.cfg, run), 0, "%s", out);
    snprintf(cfg, sizeof cfg, "%s/config.yaml", run);
    sf_config c;
    sf_err err = {0};
    cr_assert_eq(config_load(cfg, NULL, 0, &c, &err), SF_OK, "%s", err.msg);
    cr_assert_str_eq(c.out_dir, run);
    fx_free(&f);
}

/* A safetensors file whose names and metadata hold terminal escapes and newlines. */
static void write_evil_safetensors(const char *path, const char *dtype)
{
    /* hand-written header: the writer would not produce an unknown dtype */
    char hdr[512];
    int hl = snprintf(hdr, sizeof hdr,
                      "{\"__metadata__\":{\"model\":\"gpt\\u001b[2J\\nx\"},"
                      "\"ev\\u001b]0;pwned\\u0007il\\nname\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                      dtype);
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp);
    uint64_t n = (uint64_t)hl;
    fwrite(&n, 8, 1, fp);
    fwrite(hdr, 1, (size_t)hl, fp);
    fwrite("\0\0\0\0", 1, 4, fp);
    fclose(fp);
}

static void assert_no_control_bytes(const char *s)
{
    for (const char *p = s; *p; p++)
        cr_assert(*p == '\n' || ((unsigned char)*p >= 0x20 && *p != 0x7f), "raw control byte 0x%02x in:\n%s",
                  (unsigned char)*p, s);
}

Test(cli, inspect_escapes_foreign_bytes)
{
    const char *dir = tcli_tmpdir(1);
    char p[600];
    snprintf(p, sizeof p, "%s/evil.safetensors", dir);
    write_evil_safetensors(p, "F32");
    cr_assert_eq(tcli_run(out, sizeof out, "%s inspect %s", tcli_bin(), p), 0, "%s", out);
    assert_no_control_bytes(out);
    cr_assert(strstr(out, "ev\\x1b]0;pwned\\x07il\\x0aname") && strstr(out, "gpt\\x1b[2J\\x0ax"), "%s", out);
    /* the same name in a damaged entry: one escaped line, exit 2 */
    write_evil_safetensors(p, "F33");
    const char *want[] = {"evil.safetensors", "ev\\x1b]0;pwned\\x07il\\x0aname", "unknown dtype", NULL};
    EXPECT_BAD(dir, want, "%s inspect %s", tcli_bin(), p);
    assert_no_control_bytes(out);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}

/* A foreign cfg.json with k: 1e300 (or a d_in that is not the weights'): one line, exit 2,
 * from compare, inspect and stats, before any conversion (UBSan runs this in test-asan). */
Test(cli, foreign_cfg_numbers_range_checked)
{
    fx f;
    fx_init(&f, 0);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --set train.total_tokens=512", tcli_bin(), f.cfg),
                 0, "%s", out);
    char fin[700];
    snprintf(fin, sizeof fin, "%s/final", f.run);
    cr_assert_eq(tcli_run(out, sizeof out, "sed -i 's/\"k\": 4,/\"k\": 1e300,/' %s/cfg.json && grep -c 1e300 %s/cfg.json",
                          fin, fin), 0, "%s", out);
    const char *want[] = {"cfg.json", "`k` is 1e+300", "whole number", NULL};
    EXPECT_BAD(f.run, want, "%s compare %s %s/truth.safetensors", tcli_bin(), fin, f.data);
    EXPECT_BAD(f.run, want, "%s inspect %s", tcli_bin(), fin);
    cr_assert_eq(tcli_run(out, sizeof out, "sed -i 's/\"k\": 1e300,/\"k\": 4,/; s/\"d_in\": 16,/\"d_in\": -3.5,/' "
                          "%s/cfg.json", fin), 0, "%s", out);
    const char *want2[] = {"cfg.json", "`d_in` is -3.5", NULL};
    EXPECT_BAD(f.run, want2, "%s compare %s %s/truth.safetensors", tcli_bin(), fin, f.data);
    fx_free(&f);
}
