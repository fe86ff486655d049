/* The training driver end to end through the CLI: exact resume, outputs, recovery of a known dictionary. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers/cli.h"
#include "host/compare.h"
#include "host/fsutil.h"
#include "host/safetensors.h"

static char out[65536];

/* metrics.jsonl without the wall-clock fields, which are the only ones allowed to differ. */
static char *metrics_sans_timing(const char *run)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    char *data = NULL;
    size_t len = 0;
    sf_err err = {0};
    cr_assert_eq(fs_read_all(path, &data, &len, &err), 0, "%s", err.msg);
    char *o = data;
    for (const char *s = data; *s;) {
        if (!strncmp(s, ",\"elapsed_s\":", 13) || !strncmp(s, ",\"tokens_per_s\":", 16)) {
            s++;
            while (*s && *s != ',' && *s != '}')
                s++;
            continue;
        }
        *o++ = *s++;
    }
    *o = 0;
    return data;
}

/* backend cuda: with an eval set evaluated every 7 steps (the pipelined loop collects before
 * each eval and each save). */
static void write_cfg(const char *path, const char *run, const char *data, const char *arch,
                      int steps, const char *backend)
{
    char text[2048];
    int cuda = !strcmp(backend, "cuda");
    snprintf(text, sizeof text,
             "seed: 7\nout_dir: %s\nbackend: %s\n"
             "data:\n  path: %s\n  shuffle_buffer: 1000\n%s"
             "sae:\n  arch: %s\n  n_latents: 96\n  k: 4\n  dead_tokens: 1024\n  aux_k: 8\n"
             "train:\n  batch_tokens: 256\n  total_tokens: %d\n  lr: 0.002\n  threads: 2\n%s"
             "checkpoint:\n  every_steps: 10\n  keep: 2\n"
             "log:\n  every_steps: 1\n  progress: off\n",
             run, backend, data, cuda ? "  eval_tokens: 512\n" : "", arch, 256 * steps,
             cuda ? "  eval_every_steps: 7\n" : "");
    tcli_write(path, text);
}

/* The emulated CUDA build's binary beside the CPU one. */
static const char *emu_bin(void)
{
    static char path[1024];
    const char *b = getenv("SF_BUILD");
    snprintf(path, sizeof path, "%s/emu/saeforge", b && *b ? b : "build");
    return path;
}

/* skip: a tensor allowed to differ (the wall clock a checkpoint keeps), or NULL */
static void same_tensors_but(const char *a, const char *b, const char *skip)
{
    st_file fa, fb;
    sf_err err = {0};
    cr_assert_eq(st_read(a, &fa, &err), 0, "%s", err.msg);
    cr_assert_eq(st_read(b, &fb, &err), 0, "%s", err.msg);
    cr_assert_eq(fa.n, fb.n);
    for (int i = 0; i < fa.n; i++) {
        const st_tensor *tb = st_get(&fb, fa.t[i].name);
        cr_assert(tb, "tensor %s missing in %s", fa.t[i].name, b);
        if (skip && !strcmp(tb->name, skip))
            continue;
        cr_assert_eq(fa.t[i].nbytes, tb->nbytes);
        cr_assert(!memcmp(fa.t[i].data, tb->data, tb->nbytes), "tensor %s differs", tb->name);
    }
    st_file_free(&fa);
    st_file_free(&fb);
}

static void same_tensors(const char *a, const char *b) { same_tensors_but(a, b, NULL); }

static void check_resume_on(const char *arch, const char *bin, const char *backend)
{
    const char *dir = tcli_tmpdir(0);
    char data[600], runA[600], runB[600], cfgA[600], cfgB[600];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(runA, sizeof runA, "%s/a", dir);
    snprintf(runB, sizeof runB, "%s/b", dir);
    snprintf(cfgA, sizeof cfgA, "%s/a.yaml", dir);
    snprintf(cfgB, sizeof cfgB, "%s/b.yaml", dir);
    int rc = tcli_run(out, sizeof out, "%s synth --out %s --d 16 --features 64 --tokens 8192 --k 3 --seed 5",
                      tcli_bin(), data);
    cr_assert_eq(rc, 0, "%s", out);
    write_cfg(cfgA, runA, data, arch, 20, backend);
    write_cfg(cfgB, runB, data, arch, 20, backend);
    rc = tcli_run(out, sizeof out, "%s train %s", bin, cfgA);
    cr_assert_eq(rc, 0, "straight run: %s", out);
    rc = tcli_run(out, sizeof out, "%s train %s --set train.total_tokens=2560", bin, cfgB);
    cr_assert_eq(rc, 0, "first half: %s", out);
    rc = tcli_run(out, sizeof out, "%s train %s --resume", bin, cfgB);
    cr_assert_eq(rc, 0, "resumed half: %s", out);
    cr_assert(strstr(out, "resuming from"), "%s", out);

    char *ma = metrics_sans_timing(runA), *mb = metrics_sans_timing(runB);
    cr_assert_eq(tcli_count_lines(ma), !strcmp(backend, "cuda") ? 20 + 2 + 1 : 20); /* + evals */
    cr_assert_str_eq(ma, mb);
    free(ma);
    free(mb);
    char a[800], b[800];
    snprintf(a, sizeof a, "%s/final/sae.safetensors", runA);
    snprintf(b, sizeof b, "%s/final/sae.safetensors", runB);
    same_tensors(a, b);
    snprintf(a, sizeof a, "%s/checkpoints/step_20/sae.safetensors", runA);
    snprintf(b, sizeof b, "%s/checkpoints/step_20/sae.safetensors", runB);
    same_tensors(a, b);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}

static void check_resume(const char *arch) { check_resume_on(arch, tcli_bin(), "cpu"); }

Test(train, exact_resume_topk, .timeout = 120) { check_resume("topk"); }
/* The pipelined CUDA loop (metrics a step late, the next batch in the other pinned buffer):
 * the same lines in the same order, and resume as exact, under emulation. */
Test(train, exact_resume_cuda_pipelined, .timeout = 240) { check_resume_on("batchtopk", emu_bin(), "cuda"); }
Test(train, exact_resume_batchtopk, .timeout = 120) { check_resume("batchtopk"); }

/* An f16 shard set with a real input scale on the emulated CUDA backend: batches go over in f16
 * and are scaled on the device (backend.h, set_input_format), gsae so g does too, with an eval
 * set; SF_UPLOAD=f32 sends the stream's scaled floats. Both give the same files bit for bit. */
Test(train, f16_upload_matches_float_upload, .timeout = 240)
{
    const char *dir = tcli_tmpdir(3);
    char data[600], cfg[2][600], run[2][600], text[2048];
    snprintf(data, sizeof data, "%s/data", dir);
    int rc = tcli_run(out, sizeof out, "%s synth --out %s --d 16 --features 64 --tokens 8192 --k 3 "
                      "--seed 5 --dtype f16 --gradients", tcli_bin(), data);
    cr_assert_eq(rc, 0, "%s", out);
    for (int i = 0; i < 2; i++) {
        snprintf(run[i], sizeof run[i], "%s/%c", dir, "ab"[i]);
        snprintf(cfg[i], sizeof cfg[i], "%s/%c.yaml", dir, "ab"[i]);
        snprintf(text, sizeof text,
                 "seed: 7\nout_dir: %s\nbackend: cuda\n"
                 "data:\n  path: %s\n  shuffle_buffer: 1000\n  eval_tokens: 512\n"
                 "  normalize: expected_norm\n"
                 "sae:\n  arch: gsae\n  n_latents: 96\n  k: 4\n  dead_tokens: 1024\n  aux_k: 8\n"
                 "train:\n  batch_tokens: 256\n  total_tokens: 5120\n  lr: 0.002\n"
                 "  eval_every_steps: 7\n"
                 "checkpoint:\n  every_steps: 10\n  keep: 2\nlog:\n  every_steps: 1\n  progress: off\n",
                 run[i], data);
        tcli_write(cfg[i], text);
    }
    const char *note = "float16 shards: batches go to the backend in float16";
    rc = tcli_run(out, sizeof out, "%s train %s", emu_bin(), cfg[0]);
    cr_assert_eq(rc, 0, "16-bit upload: %s", out);
    cr_assert(strstr(out, note), "the 16-bit path was not taken: %s", out);
    rc = tcli_run(out, sizeof out, "SF_UPLOAD=f32 %s train %s", emu_bin(), cfg[1]);
    cr_assert_eq(rc, 0, "float upload: %s", out);
    cr_assert(!strstr(out, note), "SF_UPLOAD=f32 still took the 16-bit path: %s", out);
    rc = tcli_run(out, sizeof out, "%s inspect %s/checkpoints/step_20", tcli_bin(), run[0]);
    cr_assert_eq(rc, 0, "%s", out);
    const char *sc = strstr(out, "input scale ");
    cr_assert(sc && strtod(sc + 12, NULL) > 0 && fabs(strtod(sc + 12, NULL) - 1.0) > 0.05,
              "the run must have an input scale away from 1: %s", out);

    char *ma = metrics_sans_timing(run[0]), *mb = metrics_sans_timing(run[1]);
    cr_assert_eq(tcli_count_lines(ma), 20 + 2 + 1); /* + evals */
    cr_assert_str_eq(ma, mb);
    free(ma);
    free(mb);
    const char *files[] = {"final/sae.safetensors", "checkpoints/step_20/sae.safetensors",
                           "checkpoints/step_20/state.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char a[800], b[800];
        snprintf(a, sizeof a, "%s/%s", run[0], files[i]);
        snprintf(b, sizeof b, "%s/%s", run[1], files[i]);
        same_tensors_but(a, b, "elapsed_s");
    }
    tcli_run(NULL, 0, "rm -rf %s", dir);
}

Test(train, outputs_present_and_refuses_to_overwrite, .timeout = 120)
{
    const char *dir = tcli_tmpdir(1);
    char data[600], run[600], cfg[600], p[900];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(cfg, sizeof cfg, "%s/c.yaml", dir);
    cr_assert_eq(tcli_run(out, sizeof out, "%s synth --out %s --d 16 --features 64 --tokens 4096 --seed 2",
                          tcli_bin(), data), 0, "%s", out);
    write_cfg(cfg, run, data, "topk", 12, "cpu");
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s", out);
    const char *files[] = {"config.yaml", "metrics.jsonl", "final/sae.safetensors", "final/cfg.json",
                           "final/sparsity.safetensors", "stats/feature_stats.h5",
                           "stats/feature_stats.csv", "checkpoints/step_12/DONE"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(p, sizeof p, "%s/%s", run, files[i]);
        cr_assert(fs_exists(p), "missing %s", p);
    }
    /* keep: 2 -> step_10 and step_12 remain */
    snprintf(p, sizeof p, "%s/checkpoints/step_10/DONE", run);
    cr_assert(fs_exists(p));
    /* The resolved config round-trips through the loader. */
    snprintf(p, sizeof p, "%s/config.yaml", run);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --set out_dir=%s/again --set train.total_tokens=512",
                          tcli_bin(), p, dir), 0, "%s", out);
    /* Same out_dir without --resume: refused, exit 2, nothing changed. */
    int rc = tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg);
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert(strstr(out, "--resume"), "%s", out);
    cr_assert_eq(tcli_count_lines(out), 1, "%s", out);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}

/* SPEC/issue: 512 true features in d = 64; the SAE must match >= 90% at cosine >= 0.9. */
Test(train, recovers_true_features, .timeout = 180)
{
    const char *dir = tcli_tmpdir(2);
    char data[600], run[600], cfg[600], text[2048];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(cfg, sizeof cfg, "%s/c.yaml", dir);
    cr_assert_eq(tcli_run(out, sizeof out, "%s synth --out %s --d 64 --features 512 --tokens 262144 --k 8 --seed 11",
                          tcli_bin(), data), 0, "%s", out);
    snprintf(text, sizeof text,
             "seed: 1\nout_dir: %s\nbackend: cpu\ndata:\n  path: %s\n  shuffle_buffer: 65536\n"
             "sae:\n  arch: topk\n  n_latents: 1024\n  k: 8\n  dead_tokens: 200000\n"
             "train:\n  batch_tokens: 1024\n  total_tokens: 2097152\n  lr: 0.004\n"
             "  schedule: linear\n  decay_start: 0.6\n  threads: 2\n"
             "checkpoint:\n  every_steps: 0\n  keep: 1\nlog:\n  every_steps: 100\n  progress: off\n",
             run, data);
    tcli_write(cfg, text);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s", out);

    char a[800], b[800];
    snprintf(a, sizeof a, "%s/final/sae.safetensors", run);
    snprintf(b, sizeof b, "%s/truth.safetensors", data);
    st_file fa, fb;
    sf_err err = {0};
    cr_assert_eq(st_read(a, &fa, &err), 0, "%s", err.msg);
    cr_assert_eq(st_read(b, &fb, &err), 0, "%s", err.msg);
    const st_tensor *wa = st_get(&fa, "W_dec"), *wb = st_get(&fb, "W_dec");
    cr_assert(wa && wb);
    compare_result r = compare_dicts((const float *)wa->data, (int)wa->shape[0],
                                     (const float *)wb->data, (int)wb->shape[0], 64);
    cr_assert_geq(r.frac_b, 0.90, "only %.3f of the true features recovered", r.frac_b);
    st_file_free(&fa);
    st_file_free(&fb);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}
