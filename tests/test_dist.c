/* Data-parallel runs through real mpirun: 2 ranks equal 1 rank for every arch and for a sweep,
 * kill -9 and resume on 2 and on 1 rank, a rank that dies or hangs ends the job within 60 s. */
#pragma GCC diagnostic ignored "-Wformat-truncation" /* test paths are short temp dirs */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers/cli.h"
#include "host/fsutil.h"
#include "host/safetensors.h"

static char out[65536];

/* mpirun as root needs both variables; --bind-to none: ranks share the test machine's cores.
 * Under test-asan the ranks keep ASan's memory checks but not LeakSanitizer: OpenMPI leaves its
 * plugins' allocations behind at MPI_Finalize (dlclosed, so no suppression can name them). */
static const char *MPIRUN = "env ASAN_OPTIONS=detect_leaks=0 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                            "OMPI_MCA_rmaps_base_oversubscribe=1 mpirun --bind-to none";

static const char *make_data(const char *dir)
{
    static char data[700];
    snprintf(data, sizeof data, "%s/data", dir);
    int rc = tcli_run(out, sizeof out,
                      "%s synth --out %s --d 16 --features 64 --tokens 8192 --k 3 --seed 5 --gradients",
                      tcli_bin(), data);
    cr_assert_eq(rc, 0, "%s", out);
    return data;
}

/* batch 384: 192 rows per rank, whole 96-row GEMM blocks on both sides (encode.c), so each
 * row's pre is computed alike in both runs and only the ranks' sums differ in order; with a
 * ragged block the last bits of pre differ, and one near tie at a top-k boundary then makes
 * the runs part ways (a discrete choice, not rounding), which no tolerance would absorb. The
 * same happens on these rows to batchtopk at its default AuxK weight (1/8): at 1/16, 1/32 and
 * 1/4 the 40-step runs agree to 1e-7, at 1/8 one choice flips before step 40 (0.2%), so the
 * runs pin the weight that has no near tie here. */
static void write_cfg(const char *path, const char *run, const char *data, const char *arch,
                      int steps, const char *extra)
{
    char text[4096];
    snprintf(text, sizeof text,
             "seed: 3\nout_dir: %s\nbackend: cpu\n"
             "data:\n  path: %s\n  shuffle_buffer: 1000\n  eval_tokens: 1000\n"
             "sae:\n  arch: %s\n  n_latents: 96\n  k: 4\n  dead_tokens: 768\n  aux_k: 8\n  aux_alpha: 0.03125\n%s"
             "train:\n  batch_tokens: 384\n  total_tokens: %d\n  lr: 0.003\n  threads: 1\n"
             "  warmup_steps: 10\n  schedule: linear\n"
             "checkpoint:\n  every_steps: 40\n  keep: 2\n"
             "log:\n  every_steps: 10\n  progress: off\n%s",
             run, data, arch,
             !strcmp(arch, "matryoshka") ? "  matryoshka_prefixes: [24, 48, 96]\n" : "",
             384 * steps, extra);
    tcli_write(path, text);
}

/* max over tensors of |a - b| / |a| (L2 norms) between two runs' final weights */
static double weights_rel_diff(const char *a, const char *b)
{
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/final/sae_weights.safetensors", a);
    snprintf(pb, sizeof pb, "%s/final/sae_weights.safetensors", b);
    st_file fa, fb;
    sf_err err = {0};
    cr_assert_eq(st_read(pa, &fa, &err), 0, "%s", err.msg);
    cr_assert_eq(st_read(pb, &fb, &err), 0, "%s", err.msg);
    double worst = 0;
    for (int i = 0; i < fa.n; i++) {
        const st_tensor *ta = &fa.t[i], *tb = st_get(&fb, ta->name);
        cr_assert(tb && tb->nbytes == ta->nbytes && ta->dtype == ST_F32, "tensor %s", ta->name);
        const float *x = ta->data, *y = tb->data;
        double num = 0, den = 0;
        for (size_t j = 0; j < ta->nbytes / 4; j++) {
            num += ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
            den += (double)x[j] * x[j];
        }
        double r = den > 0 ? sqrt(num / den) : sqrt(num);
        if (r > worst)
            worst = r;
    }
    st_file_free(&fa);
    st_file_free(&fb);
    return worst;
}

/* The value of "key": in the last line of run/metrics.jsonl that has it. */
static double last_metric(const char *run, const char *key)
{
    char path[1024], pat[64];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    snprintf(pat, sizeof pat, "\"%s\":", key);
    char *data = NULL;
    size_t len = 0;
    sf_err err = {0};
    cr_assert_eq(fs_read_all(path, &data, &len, &err), 0, "%s", err.msg);
    double v = NAN;
    for (char *p = strstr(data, pat); p; p = strstr(p + 1, pat))
        v = atof(p + strlen(pat));
    free(data);
    return v;
}

static void check_same(const char *one, const char *two, const char *what)
{
    double r = weights_rel_diff(one, two);
    cr_assert(r <= 1e-4, "%s: weights of the 2-rank run differ from the 1-rank run by %g", what, r);
    cr_log_info("%s: relative weight difference %.3g", what, r);
    double f1 = last_metric(one, "fvu"), f2 = last_metric(two, "fvu");
    cr_assert(fabs(f1 - f2) <= 1e-4 * fabs(f1), "%s: final eval fvu %g vs %g", what, f1, f2);
    double d1 = last_metric(one, "dead_frac"), d2 = last_metric(two, "dead_frac");
    cr_assert(fabs(d1 - d2) <= 0.02, "%s: dead fraction %g vs %g", what, d1, d2);
}

Test(dist, two_ranks_equal_one_rank_for_every_arch, .timeout = 600)
{
    const char *dir = tcli_tmpdir(0);
    const char *data = make_data(dir);
    const char *archs[] = {"topk", "gsae", "batchtopk", "matryoshka"};
    for (int a = 0; a < 4; a++) {
        char cfg[800], one[800], two[800];
        snprintf(cfg, sizeof cfg, "%s/%s.yaml", dir, archs[a]);
        snprintf(one, sizeof one, "%s/%s_1", dir, archs[a]);
        snprintf(two, sizeof two, "%s/%s_2", dir, archs[a]);
        write_cfg(cfg, one, data, archs[a], 200, "");
        cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s", out);
        cr_assert_eq(tcli_run(out, sizeof out, "%s -np 2 %s train %s --set out_dir=%s", MPIRUN,
                              tcli_bin(), cfg, two), 0, "%s", out);
        cr_assert(strstr(out, "trained "), "rank 0 prints the summary: %s", out);
        cr_assert(!strstr(out, "rank 1"), "rank 1 stays quiet: %s", out);
        /* AuxK must have run (dead latents) for the comparison to cover it */
        cr_assert(last_metric(one, "auxk") >= 0, "%s", archs[a]);
        check_same(one, two, archs[a]);
    }
}

/* Two emulated CUDA ranks on f16 shards with an input scale: each rank's batches go over in f16
 * and are scaled on the device (backend.h, set_input_format); SF_UPLOAD=f32 sends floats. The
 * same weights and metrics bit for bit. */
Test(dist, f16_upload_on_two_cuda_ranks_matches_float_upload, .timeout = 300)
{
    const char *dir = tcli_tmpdir(6);
    char data[700], cfg[800], run[2][800], emu[800];
    const char *b = getenv("SF_BUILD");
    snprintf(emu, sizeof emu, "%s/emu/saeforge", b && *b ? b : "build");
    snprintf(data, sizeof data, "%s/data", dir);
    cr_assert_eq(tcli_run(out, sizeof out, "%s synth --out %s --d 16 --features 64 --tokens 8192 "
                          "--k 3 --seed 5 --gradients --dtype f16", tcli_bin(), data), 0, "%s", out);
    snprintf(cfg, sizeof cfg, "%s/gsae.yaml", dir);
    write_cfg(cfg, "unused", data, "gsae", 12, "");
    const char *note = "float16 shards: batches go to the backend in float16";
    for (int i = 0; i < 2; i++) {
        snprintf(run[i], sizeof run[i], "%s/%s", dir, i ? "f32" : "f16");
        cr_assert_eq(tcli_run(out, sizeof out, "%s%s -np 2 %s %s train %s --set out_dir=%s "
                              "--set backend=cuda --set data.normalize=expected_norm",
                              i ? "SF_UPLOAD=f32 " : "", MPIRUN, i ? "-x SF_UPLOAD" : "", emu, cfg,
                              run[i]), 0, "%s", out);
        cr_assert(strstr(out, "data parallel over 2 ranks"), "%s", out);
        const char *at = strstr(out, note);
        cr_assert(i ? !at : at && !strstr(at + 1, note), "the 16-bit note (rank 0 only, f16 run "
                  "only): %s", out);
    }
    cr_assert_eq(weights_rel_diff(run[0], run[1]), 0.0);
    cr_assert_eq(last_metric(run[0], "fvu"), last_metric(run[1], "fvu"));
    cr_assert_eq(last_metric(run[0], "loss"), last_metric(run[1], "loss"));
    tcli_run(NULL, 0, "rm -rf %s", dir);
}

Test(dist, a_sweep_on_two_ranks_equals_one_rank, .timeout = 300)
{
    const char *dir = tcli_tmpdir(5);
    const char *data = make_data(dir);
    char cfg[800], one[800], two[800], m1[900], m2[900];
    snprintf(cfg, sizeof cfg, "%s/sw.yaml", dir);
    snprintf(one, sizeof one, "%s/sw1", dir);
    snprintf(two, sizeof two, "%s/sw2", dir);
    write_cfg(cfg, one, data, "batchtopk", 120, "sweep:\n  sae.k: [3, 6]\n");
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s", out);
    cr_assert_eq(tcli_run(out, sizeof out, "%s -np 2 %s train %s --set out_dir=%s", MPIRUN,
                          tcli_bin(), cfg, two), 0, "%s", out);
    cr_assert(strstr(out, "sweep of 2 members"), "%s", out);
    const char *members[] = {"k3", "k6"};
    for (int i = 0; i < 2; i++) {
        snprintf(m1, sizeof m1, "%s/%s", one, members[i]);
        snprintf(m2, sizeof m2, "%s/%s", two, members[i]);
        check_same(m1, m2, members[i]);
    }
    cr_assert(fs_exists(two) && tcli_run(out, sizeof out, "test -f %s/frontier.svg", two) == 0,
              "rank 0 drew the frontier");
}

Test(dist, bad_global_batch_is_refused_once, .timeout = 120)
{
    const char *dir = tcli_tmpdir(1);
    const char *data = make_data(dir);
    char cfg[800], run[800];
    snprintf(cfg, sizeof cfg, "%s/c.yaml", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    write_cfg(cfg, run, data, "topk", 20, "");
    int rc = tcli_run(out, sizeof out, "%s -np 3 %s train %s --set train.batch_tokens=256", MPIRUN,
                      tcli_bin(), cfg);
    cr_assert_neq(rc, 0, "%s", out);
    cr_assert(strstr(out, "split evenly over the 3 ranks"), "%s", out);
    const char *first = strstr(out, "split evenly");
    cr_assert(!strstr(first + 1, "split evenly"), "said once, by rank 0: %s", out);
    cr_assert(!fs_exists(run), "nothing written");
}

/* PID of the rank `rank` of a job whose environment carries SFTEST_TAG=tag, or -1. */
static pid_t find_rank(const char *tag, int rank)
{
    char want_tag[256], want_rank[64];
    snprintf(want_tag, sizeof want_tag, "SFTEST_TAG=%s", tag);
    snprintf(want_rank, sizeof want_rank, "OMPI_COMM_WORLD_RANK=%d", rank);
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t found = -1;
    while (d && (e = readdir(d)) && found < 0) {
        pid_t pid = atoi(e->d_name);
        if (pid <= 0)
            continue;
        char path[64], buf[65536];
        snprintf(path, sizeof path, "/proc/%d/environ", pid);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        int tag_ok = 0, rank_ok = 0;
        for (size_t o = 0; o < n; o += strlen(buf + o) + 1) {
            buf[n] = 0;
            tag_ok |= !strcmp(buf + o, want_tag);
            rank_ok |= !strcmp(buf + o, want_rank);
        }
        if (tag_ok && rank_ok)
            found = pid;
    }
    if (d)
        closedir(d);
    return found;
}

/* Starts `cmd` in its own process group with output to log; returns the group leader. */
static pid_t start_bg(const char *cmd, const char *log)
{
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        char full[4096];
        snprintf(full, sizeof full, "exec %s > %s 2>&1", cmd, log);
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    return pid;
}

/* Waits up to `secs` for pid; returns its exit status (128 + signal) or -1 on timeout. */
static int wait_for(pid_t pid, double secs)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) * 1e-9 > secs)
            return -1;
        usleep(50000);
    }
}

/* Waits up to `secs` for the first complete checkpoint of run while job still runs, polling
 * every 5 ms: a 400-step job here lasts about half a second, and with keep: 2 an early step's
 * directory is pruned within milliseconds, so any step will do. Not ckpt_find_latest: it
 * removes step dirs without DONE, i.e. the save the live job is writing. */
static void wait_ckpt(const char *run, pid_t job, double secs)
{
    char dir[900], done[1200];
    snprintf(dir, sizeof dir, "%s/checkpoints", run);
    for (int i = 0; i < secs * 200; i++) {
        DIR *d = opendir(dir);
        struct dirent *e;
        int found = 0;
        while (d && !found && (e = readdir(d))) {
            snprintf(done, sizeof done, "%s/%s/DONE", dir, e->d_name);
            found = !strncmp(e->d_name, "step_", 5) && fs_exists(done);
        }
        if (d)
            closedir(d);
        if (found)
            return;
        int st;
        cr_assert_neq(waitpid(job, &st, WNOHANG), job,
                      "the job ended before the test could act on it: make it longer");
        usleep(5000);
    }
    cr_assert_fail("no checkpoint in %s within %g s", dir, secs);
}

Test(dist, kill9_then_resume_on_two_and_on_one_rank, .timeout = 600)
{
    const char *dir = tcli_tmpdir(2);
    const char *data = make_data(dir);
    char cfg[800], ref[800], run[800], a[800], b[800], cmd[4096], log[900];
    snprintf(cfg, sizeof cfg, "%s/c.yaml", dir);
    snprintf(ref, sizeof ref, "%s/ref", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(a, sizeof a, "%s/resume2", dir);
    snprintf(b, sizeof b, "%s/resume1", dir);
    write_cfg(cfg, ref, data, "batchtopk", 400, "");
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s", out);
    snprintf(cmd, sizeof cmd, "%s -np 2 %s train %s --set out_dir=%s", MPIRUN, tcli_bin(), cfg, run);
    snprintf(log, sizeof log, "%s/bg.log", dir);
    pid_t job = start_bg(cmd, log);
    wait_ckpt(run, job, 240);
    kill(-job, SIGKILL);
    cr_assert_neq(wait_for(job, 30), -1, "the killed job is gone");
    usleep(300000); /* the ranks, re-parented, die with their group */
    cr_assert_eq(tcli_run(out, sizeof out, "cp -r %s %s && cp -r %s %s", run, a, run, b), 0, "%s", out);
    cr_assert_eq(tcli_run(out, sizeof out, "%s -np 2 %s train %s --set out_dir=%s --resume", MPIRUN,
                          tcli_bin(), cfg, a), 0, "%s", out);
    cr_assert(strstr(out, "resuming from"), "%s", out);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s --set out_dir=%s --resume", tcli_bin(), cfg, b),
                 0, "%s", out);
    cr_assert(strstr(out, "resuming from"), "%s", out);
    check_same(ref, a, "kill -9, resume on 2 ranks");
    check_same(ref, b, "kill -9, resume on 1 rank");
    /* and a 1-rank checkpoint resumes on 2 ranks: the 2-rank resume above read a 2-rank one */
}

/* A rank that dies: the launcher ends the others; a rank that hangs: the watchdog does. */
static void fault_case(int hang)
{
    const char *dir = tcli_tmpdir(hang ? 4 : 3);
    const char *data = make_data(dir);
    char cfg[800], run[800], cmd[4096], log[900], tag[64];
    snprintf(cfg, sizeof cfg, "%s/c.yaml", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    write_cfg(cfg, run, data, "topk", 2000, "");
    snprintf(tag, sizeof tag, "fault%d_%d", hang, (int)getpid());
    snprintf(cmd, sizeof cmd, "env SFTEST_TAG=%s %s -np 2 %s train %s --set train.dist_timeout_s=10",
             tag, MPIRUN, tcli_bin(), cfg);
    snprintf(log, sizeof log, "%s/bg.log", dir);
    pid_t job = start_bg(cmd, log);
    wait_ckpt(run, job, 240);
    pid_t r1 = find_rank(tag, 1);
    cr_assert(r1 > 0, "rank 1 of the job not found");
    kill(r1, hang ? SIGSTOP : SIGKILL);
    int rc = wait_for(job, 60);
    if (rc == -1) {
        kill(-job, SIGKILL);
        kill(r1, SIGKILL);
        wait_for(job, 10);
    }
    cr_assert_neq(rc, -1, "the job still runs 60 s after rank 1 %s", hang ? "hung" : "died");
    cr_assert_neq(rc, 0, "the job reports the failure");
    char *text = NULL;
    size_t len = 0;
    sf_err err = {0};
    cr_assert_eq(fs_read_all(log, &text, &len, &err), 0);
    if (hang)
        cr_assert(strstr(text, "for the other ranks: one of them died or hangs"), "%s", text);
    else
        cr_assert(strstr(text, "rank 1") || strstr(text, "signal 9"), "%s", text);
    free(text);
    if (find_rank(tag, 1) > 0) { /* never leave a stopped rank behind */
        kill(find_rank(tag, 1), SIGKILL);
        cr_assert_fail("rank 1 outlived its job");
    }
    /* the job resumes from its last checkpoint */
    cr_assert_eq(tcli_run(out, sizeof out, "%s -np 2 %s train %s --resume", MPIRUN, tcli_bin(), cfg),
                 0, "%s", out);
}

Test(dist, a_dead_rank_ends_the_job, .timeout = 400)
{
    fault_case(0);
}

Test(dist, a_hung_rank_ends_the_job, .timeout = 400)
{
    fault_case(1);
}
