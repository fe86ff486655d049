/* Sweeps through the CLI: members bit-identical to solo runs, refused keys, a diverging member,
 * exact resume after kill -9 and after a partial sweep checkpoint, memory refusal, plots. */
#pragma GCC diagnostic ignored "-Wformat-truncation" /* test paths are short temp dirs */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers/cli.h"
#include "host/fsutil.h"
#include "host/safetensors.h"

static char out[65536];

static char *read_text(const char *path)
{
    char *data = NULL;
    size_t len = 0;
    sf_err err = {0};
    cr_assert_eq(fs_read_all(path, &data, &len, &err), 0, "%s", err.msg);
    return data;
}

/* metrics.jsonl without the wall-clock fields, the only ones allowed to differ. */
static char *metrics_sans_timing(const char *run)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    char *data = read_text(path), *o = data;
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

static void same_file_tensors(const char *a, const char *b)
{
    st_file fa, fb;
    sf_err err = {0};
    cr_assert_eq(st_read(a, &fa, &err), 0, "%s", err.msg);
    cr_assert_eq(st_read(b, &fb, &err), 0, "%s", err.msg);
    cr_assert_eq(fa.n, fb.n);
    for (int i = 0; i < fa.n; i++) {
        const st_tensor *tb = st_get(&fb, fa.t[i].name);
        cr_assert(tb, "tensor %s missing in %s", fa.t[i].name, b);
        cr_assert_eq(fa.t[i].nbytes, tb->nbytes);
        cr_assert(!memcmp(fa.t[i].data, tb->data, tb->nbytes), "tensor %s differs (%s vs %s)", tb->name, a, b);
    }
    st_file_free(&fa);
    st_file_free(&fb);
}

/* Same weights (final/) and same metrics values in two run dirs. */
static void same_run(const char *a, const char *b)
{
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/final/sae_weights.safetensors", a);
    snprintf(pb, sizeof pb, "%s/final/sae_weights.safetensors", b);
    same_file_tensors(pa, pb);
    char *ma = metrics_sans_timing(a), *mb = metrics_sans_timing(b);
    cr_assert_str_eq(ma, mb, "metrics differ: %s vs %s", a, b);
    free(ma);
    free(mb);
}

/* The "read N bytes from shards" figure of a train summary. */
static long long read_bytes(const char *text)
{
    const char *p = strstr(text, "\nread ");
    cr_assert(p, "no bytes line in: %s", text);
    return atoll(p + 6);
}

static const char *make_data(const char *dir)
{
    static char data[700];
    snprintf(data, sizeof data, "%s/data", dir);
    int rc = tcli_run(out, sizeof out, "%s synth --out %s --d 16 --features 64 --tokens 8192 --k 3 --seed 5 --gradients",
                      tcli_bin(), data);
    cr_assert_eq(rc, 0, "%s", out);
    return data;
}

/* A base config; `sweep` (may be "") is appended as the sweep: block. */
static void write_cfg(const char *path, const char *run, const char *data, int steps, const char *sweep)
{
    char text[4096];
    snprintf(text, sizeof text,
             "seed: 7\nout_dir: %s\nbackend: cpu\n"
             "data:\n  path: %s\n  shuffle_buffer: 1000\n  eval_tokens: 512\n"
             "sae:\n  arch: topk\n  n_latents: 96\n  k: 4\n  dead_tokens: 1024\n  aux_k: 8\n"
             "train:\n  batch_tokens: 256\n  total_tokens: %d\n  lr: 0.002\n  threads: 2\n"
             "  eval_every_steps: 10\n"
             "checkpoint:\n  every_steps: 10\n  keep: 1\n"
             "log:\n  every_steps: 1\n  progress: off\n%s",
             run, data, 256 * steps, sweep);
    tcli_write(path, text);
}

Test(sweep, members_match_solo_runs_and_plots_exist, .timeout = 300)
{
    const char *dir = tcli_tmpdir(0);
    const char *data = make_data(dir);
    char cfg[800], base[800], sw[800];
    snprintf(cfg, sizeof cfg, "%s/sweep.yaml", dir);
    snprintf(base, sizeof base, "%s/base.yaml", dir);
    snprintf(sw, sizeof sw, "%s/sw", dir);
    write_cfg(cfg, sw, data, 30, "sweep:\n  sae.k: [4, 8]\n  sae.arch: [topk, gsae]\n");
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s", out);
    cr_assert(strstr(out, "k8-arch_gsae") && strstr(out, "FVU") && strstr(out, "tokens/s"), "%s", out);
    long long sweep_bytes = read_bytes(out), solo_bytes = 0;
    static const char *const members[4][3] = {
        {"k4-arch_topk", "4", "topk"}, {"k4-arch_gsae", "4", "gsae"},
        {"k8-arch_topk", "8", "topk"}, {"k8-arch_gsae", "8", "gsae"}};
    write_cfg(base, "unused", data, 30, "");
    for (int i = 0; i < 4; i++) {
        char solo[800], mem[800];
        snprintf(solo, sizeof solo, "%s/solo_%d", dir, i);
        snprintf(mem, sizeof mem, "%s/%s", sw, members[i][0]);
        int rc = tcli_run(out, sizeof out, "%s train %s --set out_dir=%s --set sae.k=%s --set sae.arch=%s",
                          tcli_bin(), base, solo, members[i][1], members[i][2]);
        cr_assert_eq(rc, 0, "%s", out);
        solo_bytes += read_bytes(out);
        same_run(mem, solo);
        char svg[900];
        snprintf(svg, sizeof svg, "%s/curves.svg", mem);
        char *t = read_text(svg);
        cr_assert(strstr(t, "<svg") && strstr(t, "</svg>") && strstr(t, "<polyline"), "%s", svg);
        free(t);
    }
    /* one training stream: the sweep reads the training rows once; the evals (every 10 steps
     * here, a large share of the reads) are still per member */
    cr_assert(sweep_bytes > 0 && sweep_bytes < solo_bytes, "sweep read %lld bytes, 4 solo runs %lld",
              sweep_bytes, solo_bytes);
    char path[900];
    snprintf(path, sizeof path, "%s/sweep.json", sw);
    char *j = read_text(path);
    cr_assert(strstr(j, "\"k8-arch_gsae\"") && strstr(j, "\"sae.arch\": \"gsae\""), "%s", j);
    free(j);
    snprintf(path, sizeof path, "%s/frontier.svg", sw);
    char *f = read_text(path);
    /* one series per arch, four points, both legends */
    cr_assert(strstr(f, ">topk<") && strstr(f, ">gsae<") && strstr(f, "L0"), "%s", f);
    int circles = 0;
    for (const char *s = f; (s = strstr(s, "<circle")); s++)
        circles++;
    cr_assert_eq(circles, 4);
    free(f);
    /* inspect and compare take the sweep dir */
    cr_assert_eq(tcli_run(out, sizeof out, "%s inspect %s", tcli_bin(), sw), 0, "%s", out);
    cr_assert(strstr(out, "k8-arch_gsae") && strstr(out, "FVU"), "%s", out);
    cr_assert_eq(tcli_run(out, sizeof out, "%s compare %s %s/k4-arch_topk", tcli_bin(), sw, sw), 0, "%s", out);
    cr_assert(strstr(out, "k8-arch_topk"), "%s", out);
}

static void refused(const char *dir, const char *data, const char *block, const char *key)
{
    char cfg[800], sw[800];
    snprintf(cfg, sizeof cfg, "%s/bad.yaml", dir);
    snprintf(sw, sizeof sw, "%s/refused", dir);
    write_cfg(cfg, sw, data, 10, block);
    int rc = tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg);
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert_eq(tcli_count_lines(out), 1, "%s", out);
    cr_assert(strstr(out, key) && strstr(out, "bad.yaml:"), "%s", out);
    cr_assert(!fs_exists(sw), "%s was created", sw);
}

Test(sweep, refuses_keys_that_change_the_stream, .timeout = 60)
{
    const char *dir = tcli_tmpdir(0);
    const char *data = make_data(dir);
    refused(dir, data, "sweep:\n  data.shuffle_buffer: [10, 100]\n", "sweep.data.shuffle_buffer");
    refused(dir, data, "sweep:\n  seed: [1, 2]\n", "sweep.seed");
    refused(dir, data, "sweep:\n  train.batch_tokens: [128, 256]\n", "sweep.train.batch_tokens");
    refused(dir, data, "sweep:\n  train.total_tokens: [1024, 2048]\n", "sweep.train.total_tokens");
    refused(dir, data, "sweep:\n  backend: [cpu, cuda]\n", "sweep.backend");
    refused(dir, data, "sweep:\n  sae.kk: [1, 2]\n", "sweep.sae.kk");
    refused(dir, data, "sweep:\n  sae.k: 4\n", "sweep.sae.k");
    refused(dir, data, "sweep:\n  sae.k: [4, 1000]\n", "sae.k");
}

Test(sweep, diverging_member_stops_alone, .timeout = 120)
{
    const char *dir = tcli_tmpdir(0);
    const char *data = make_data(dir);
    char cfg[800], sw[800], solo[800], mem[900];
    snprintf(cfg, sizeof cfg, "%s/div.yaml", dir);
    snprintf(sw, sizeof sw, "%s/sw", dir);
    snprintf(solo, sizeof solo, "%s/solo", dir);
    write_cfg(cfg, sw, data, 20, "sweep:\n  train.lr: [0.002, 1e30]\n");
    int rc = tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "1 of 2 sweep members diverged (lr1e30)"), "%s", out);
    cr_assert(strstr(out, "diverged") && strstr(out, "lr0.002"), "%s", out);
    snprintf(mem, sizeof mem, "%s/lr1e30/final", sw);
    cr_assert(!fs_exists(mem), "a diverged member must not export");
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --set out_dir=%s --set train.lr=0.002 --set sweep=1",
                          tcli_bin(), cfg, solo), 2, "sweep is not a --set key: %s", out);
    char base[800];
    snprintf(base, sizeof base, "%s/base.yaml", dir);
    write_cfg(base, solo, data, 20, "");
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), base), 0, "%s", out);
    snprintf(mem, sizeof mem, "%s/lr0.002", sw);
    same_run(mem, solo);
    /* resuming the finished sweep keeps the diverged member stopped and says so again */
    rc = tcli_run(out, sizeof out, "%s train %s --resume", tcli_bin(), cfg);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "lr1e30"), "%s", out);
}

/* Runs the sweep to the end in ref, then in run: killed with SIGKILL once its sweep marker
 * shows a checkpoint, resumed; optionally a partial sweep checkpoint is staged first. */
static void check_resume(int partial)
{
    const char *dir = tcli_tmpdir(0);
    const char *data = make_data(dir);
    const char *block = "sweep:\n  sae.k: [4, 8]\n  sae.arch: [topk, batchtopk]\n";
    char cref[800], crun[800], ref[800], run[800];
    snprintf(cref, sizeof cref, "%s/ref.yaml", dir);
    snprintf(crun, sizeof crun, "%s/run.yaml", dir);
    snprintf(ref, sizeof ref, "%s/ref", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    write_cfg(cref, ref, data, 40, block);
    write_cfg(crun, run, data, 40, block);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cref), 0, "%s", out);
    if (partial) {
        /* a finished sweep keeping two checkpoints, then the state a crash between members
         * during the step-40 save leaves: one member lacks step_40 and no marker names it */
        cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --set checkpoint.keep=2", tcli_bin(), crun), 0, "%s", out);
        cr_assert_eq(tcli_run(out, sizeof out,
                              "cd %s && rm -rf k8-arch_topk/checkpoints/step_40 sweep_state.json && "
                              "ls k4-arch_topk/checkpoints", run),
                     0, "%s", out);
        cr_assert(strstr(out, "step_40") && strstr(out, "step_30"), "%s", out);
    } else {
        char marker[900];
        snprintf(marker, sizeof marker, "%s/sweep_state.json", run);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            int fd = open("/dev/null", 1);
            dup2(fd, 1);
            dup2(fd, 2);
            execl(tcli_bin(), tcli_bin(), "train", crun, (char *)NULL);
            _exit(127);
        }
        for (int i = 0; i < 3000 && !fs_exists(marker); i++)
            usleep(10000);
        usleep(300000); /* land somewhere after the first sweep checkpoint */
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        cr_assert(fs_exists(marker), "no sweep checkpoint before the kill");
    }
    int rc = tcli_run(out, sizeof out, "%s train %s --resume", tcli_bin(), crun);
    cr_assert_eq(rc, 0, "%s", out);
    if (partial)
        cr_assert(strstr(out, "from step 30"), "%s", out);
    static const char *const m[4] = {"k4-arch_topk", "k4-arch_batchtopk", "k8-arch_topk", "k8-arch_batchtopk"};
    for (int i = 0; i < 4; i++) {
        char a[900], b[900];
        snprintf(a, sizeof a, "%s/%s", ref, m[i]);
        snprintf(b, sizeof b, "%s/%s", run, m[i]);
        same_run(a, b);
    }
}

Test(sweep, resume_after_kill9_is_exact, .timeout = 300) { check_resume(0); }
Test(sweep, resume_after_partial_sweep_checkpoint_is_exact, .timeout = 300) { check_resume(1); }

/* ASan reserves terabytes of shadow memory and cannot start under `ulimit -v`: there the test
 * uses sizes beyond any machine's RAM and the MemAvailable path instead of the ulimit one. */
#if defined(__SANITIZE_ADDRESS__)
#define MEM_LIMIT ""
#define MEM_SRC "GiB are available"
#define SOLO_N "2_000_000_000"
#define SWEEP_N "1_000_000_000"
#else
#define MEM_LIMIT "ulimit -v 8000000; "
#define MEM_SRC "available (ulimit -v)"
#define SOLO_N "50_000_000"
#define SWEEP_N "2_000_000"
#endif

Test(sweep, memory_estimate_refuses_oversized_runs, .timeout = 60)
{
    const char *dir = tcli_tmpdir(0);
    const char *data = make_data(dir);
    char cfg[800], runp[800];
    snprintf(cfg, sizeof cfg, "%s/big.yaml", dir);
    snprintf(runp, sizeof runp, "%s/big", dir);
    write_cfg(cfg, runp, data, 10, "");
    /* 50M latents: 3.2 GB per matrix at d=16, far beyond an 8 GB address-space limit */
    int rc = tcli_run(out, sizeof out, MEM_LIMIT "%s train %s --set sae.n_latents=" SOLO_N, tcli_bin(), cfg);
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert_eq(tcli_count_lines(out), 1, "%s", out);
    cr_assert(strstr(out, "GiB of host memory") && strstr(out, MEM_SRC), "%s", out);
    cr_assert(!fs_exists(runp), "%s was created", runp);
    /* a sweep whose members fit one by one but not together */
    write_cfg(cfg, runp, data, 10, "sweep:\n  sae.k: [4, 8, 16, 32]\n");
    rc = tcli_run(out, sizeof out, MEM_LIMIT "%s train %s --set sae.n_latents=" SWEEP_N, tcli_bin(), cfg);
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert(strstr(out, "this sweep needs") && strstr(out, "4 member(s)"), "%s", out);
    cr_assert(!fs_exists(runp), "%s was created", runp);
}
