/* saeforge submit without a cluster: a stand-in `sbatch` (and `scontrol`) on PATH records how it
 * was called, so the tests see what is submitted, what is refused before sbatch runs, and that a
 * USR1 under Slurm checkpoints, requeues and resumes to the same weights. The real-Slurm
 * counterpart is tests/slurm/run.sh (`make test-slurm`). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers/cli.h"

static char out[65536];
static const char *dir, *fake;
static char sf[4096]; /* absolute: some commands cd into the work dir first */

/* A work dir with small shards, a config, and fake sbatch/scontrol in dir/bin. sbatch answers
 * with $FAKE_SBATCH_MODE: ok (prints "4242;cluster"), or refuse (two stderr lines, exit 1). */
static void setup(void)
{
    dir = tcli_tmpdir(0);
    cr_assert(realpath(tcli_bin(), sf), "no binary at %s", tcli_bin());
    char p[1024], text[2048];
    cr_assert_eq(tcli_run(out, sizeof out, "%s synth --out %s/data --d 32 --features 128 "
                                           "--tokens 16384 --k 4 --seed 1", sf, dir), 0,
                 "%s", out);
    snprintf(p, sizeof p, "%s/c.yaml", dir);
    snprintf(text, sizeof text,
             "seed: 0\nout_dir: %s/run\ndata:\n  path: %s/data\nsae:\n  arch: topk\n"
             "  n_latents: 256\n  k: 4\ntrain:\n  batch_tokens: 256\n  total_tokens: 262144\n"
             "checkpoint:\n  every_steps: 1000000\nlog:\n  every_steps: 1\n  progress: off\n",
             dir, dir);
    tcli_write(p, text);
    static char bin[512];
    snprintf(bin, sizeof bin, "%s/bin", dir);
    mkdir(bin, 0755);
    fake = bin;
    snprintf(p, sizeof p, "%s/sbatch", bin);
    snprintf(text, sizeof text,
             "#!/bin/sh\necho \"$*\" >> %s/sbatch.calls\n"
             "if [ \"$FAKE_SBATCH_MODE\" = refuse ]; then\n"
             "  echo 'sbatch: error: invalid partition specified: gpu' >&2\n"
             "  echo 'sbatch: error: Batch job submission failed' >&2\n  exit 1\nfi\n"
             "echo '4242;cluster'\n", dir);
    tcli_write(p, text);
    chmod(p, 0755);
    snprintf(p, sizeof p, "%s/scontrol", bin);
    snprintf(text, sizeof text, "#!/bin/sh\necho \"$*\" >> %s/scontrol.calls\n", dir);
    tcli_write(p, text);
    chmod(p, 0755);
}

static int calls(const char *what, char *buf, size_t cap)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s.calls", dir, what);
    buf[0] = 0;
    FILE *f = fopen(p, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
    return tcli_count_lines(buf);
}

TestSuite(submit, .init = setup);

Test(submit, bad_config_is_refused_before_sbatch)
{
    const char *bad[] = {"--set sae.k=0", "--set data.path=/nowhere", "--set train.batch_tokens=999999",
                         "--set sae.bogus=1", "--time 'two hours'", "--nodes 0", "--array"};
    char c[4096];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = tcli_run(out, sizeof out, "PATH=%s:$PATH %s submit %s/c.yaml %s", fake, sf,
                          dir, bad[i]);
        cr_assert_eq(rc, 2, "%s: exit %d: %s", bad[i], rc, out);
        cr_assert_eq(tcli_count_lines(out), 1, "%s: not one line: %s", bad[i], out);
        cr_assert(!strncmp(out, "saeforge: ", 10), "%s", out);
    }
    cr_assert_eq(calls("sbatch", c, sizeof c), 0, "sbatch was called: %s", c);
    char p[1024];
    snprintf(p, sizeof p, "%s/run", dir);
    cr_assert(access(p, F_OK) != 0, "bad input left %s behind", p);
}

Test(submit, submits_script_and_records_job)
{
    int rc = tcli_run(out, sizeof out, "PATH=%s:$PATH %s submit %s/c.yaml --set seed=3 "
                      "--partition cpu --time 1:00:00 --signal-grace 90 --sbatch --qos=low "
                      "2>/dev/null", fake, sf, dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "4242\n");
    char c[4096], p[1024], *s = NULL;
    cr_assert_eq(calls("sbatch", c, sizeof c), 1);
    snprintf(p, sizeof p, "--parsable %s/run/slurm/job.sbatch\n", dir);
    cr_assert_str_eq(c, p);
    snprintf(p, sizeof p, "%s/run/slurm/jobs.txt", dir);
    FILE *f = fopen(p, "r");
    cr_assert(f);
    cr_assert(fgets(c, sizeof c, f) && !strncmp(c, "4242 20", 7), "jobs.txt: %s", c);
    fclose(f);
    snprintf(p, sizeof p, "%s/run/slurm/job.sbatch", dir);
    f = fopen(p, "r");
    cr_assert(f);
    s = calloc(1, 65536);
    cr_assert(fread(s, 1, 65535, f) > 0);
    fclose(f);
    const char *want[] = {"#!/bin/bash\n", "\n#SBATCH --requeue\n", "\n#SBATCH --open-mode=append\n",
                          "\n#SBATCH --signal=B:USR1@90\n", "\n#SBATCH --partition=cpu\n",
                          "\n#SBATCH --time=1:00:00\n", "\n#SBATCH --qos=low\n",
                          "/run/slurm/slurm-%j.out\n", "\nexec '"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(s, want[i]), "'%s' missing from:\n%s", want[i], s);
    snprintf(p, sizeof p, "/c.yaml' --set 'seed=3' --resume\n");
    cr_assert(strstr(s, p), "train line missing from:\n%s", s);
    cr_assert(!strstr(s, "srun"), "one rank must not use srun:\n%s", s);
    free(s);
    /* A second submit of the same run appends. */
    cr_assert_eq(tcli_run(out, sizeof out, "PATH=%s:$PATH %s submit %s/c.yaml 2>/dev/null && "
                          "wc -l < %s/run/slurm/jobs.txt", fake, sf, dir, dir), 0);
    cr_assert_str_eq(out, "4242\n2\n");
}

Test(submit, dry_run_and_multi_rank_script)
{
    int rc = tcli_run(out, sizeof out, "PATH=%s:$PATH %s submit %s/c.yaml --dry-run --nodes 2 "
                      "--ntasks-per-node 4 && grep '^exec srun ' %s/run/slurm/job.sbatch",
                      fake, sf, dir, dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "exec srun --kill-on-bad-exit=1 --mpi=pmix '"), "%s", out);
    char c[4096];
    cr_assert_eq(calls("sbatch", c, sizeof c), 0, "--dry-run called sbatch: %s", c);
    /* --mpi picks srun's plugin; `site` leaves the cluster's MpiDefault */
    rc = tcli_run(out, sizeof out, "PATH=%s:$PATH %s submit %s/c.yaml --dry-run --ntasks-per-node 2 "
                  "--mpi pmi2 && grep '^exec srun ' %s/run/slurm/job.sbatch", fake, sf, dir, dir);
    cr_assert(rc == 0 && strstr(out, "exec srun --kill-on-bad-exit=1 --mpi=pmi2 '"), "%s", out);
    rc = tcli_run(out, sizeof out, "PATH=%s:$PATH %s submit %s/c.yaml --dry-run --ntasks-per-node 2 "
                  "--mpi site && grep '^exec srun ' %s/run/slurm/job.sbatch", fake, sf, dir, dir);
    cr_assert(rc == 0 && strstr(out, "exec srun --kill-on-bad-exit=1 '"), "%s", out);
}

/* --array on a sweep config: one task per member, each running `train --member $TASK`. */
Test(submit, array_script_for_a_sweep)
{
    int rc = tcli_run(out, sizeof out, "cp %s/c.yaml %s/s.yaml && printf 'sweep:\\n  sae.k: [2, 3, 4]\\n' "
                      ">> %s/s.yaml && PATH=%s:$PATH %s submit %s/s.yaml --dry-run --array && "
                      "grep -E '^#SBATCH --array|^exec ' %s/run/slurm/job.sbatch",
                      dir, dir, dir, fake, sf, dir, dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "#SBATCH --array=0-2\n"), "%s", out);
    cr_assert(strstr(out, " --member \"$SLURM_ARRAY_TASK_ID\" --resume"), "%s", out);
}

Test(submit, sbatch_refusal_and_absence_are_one_line)
{
    int rc = tcli_run(out, sizeof out, "FAKE_SBATCH_MODE=refuse PATH=%s:$PATH %s submit %s/c.yaml",
                      fake, sf, dir);
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert_eq(tcli_count_lines(out), 1, "%s", out);
    cr_assert(strstr(out, "invalid partition specified: gpu; sbatch: error: Batch job submission "
                          "failed"), "sbatch's message not passed through: %s", out);
    rc = tcli_run(out, sizeof out, "PATH=/nonexistent %s submit %s/c.yaml", sf, dir);
    cr_assert_eq(rc, 2, "%s", out);
    cr_assert_eq(tcli_count_lines(out), 1, "%s", out);
    cr_assert(strstr(out, "sbatch") && strstr(out, "not found on PATH") && strstr(out, "--dry-run"),
              "%s", out);
}

/* USR1 under Slurm: checkpoint, `scontrol requeue <id>`, exit 1; the resumed run ends with the
 * same bytes as an uninterrupted one. */
Test(submit, usr1_checkpoints_requeues_and_resumes_identically, .timeout = 600)
{
    char c[4096];
    int rc = tcli_run(out, sizeof out,
                      "cd %s && SLURM_JOB_ID=77 PATH=%s:$PATH %s train c.yaml & pid=$!; "
                      "i=0; while [ ! -e %s/run/metrics.jsonl ] && [ $i -lt 6000 ]; do sleep 0.01; "
                      "i=$((i + 1)); done; kill -USR1 $pid; "
                      "wait $pid", dir, fake, sf, dir);
    cr_assert_eq(rc, 1, "exit %d: %s", rc, out);
    cr_assert(strstr(out, "checkpoint written; requeued Slurm job 77"), "%s", out);
    cr_assert_eq(calls("scontrol", c, sizeof c), 1);
    cr_assert_str_eq(c, "requeue 77\n");
    rc = tcli_run(out, sizeof out, "cd %s && %s train c.yaml --resume", dir, sf);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "resuming from"), "%s", out);
    rc = tcli_run(out, sizeof out, "cd %s && %s train c.yaml --set out_dir=%s/ref && "
                  "cmp %s/ref/final/sae.safetensors %s/run/final/sae.safetensors",
                  dir, sf, dir, dir, dir);
    cr_assert_eq(rc, 0, "resumed weights differ from an uninterrupted run: %s", out);
}

Test(submit, status_reports_progress_and_jobs)
{
    int rc = tcli_run(out, sizeof out, "cd %s && %s train c.yaml --set train.total_tokens=65536 "
                      ">/dev/null && PATH=%s:$PATH %s submit c.yaml 2>/dev/null >/dev/null; "
                      "PATH=/nonexistent %s status %s/run", dir, sf, fake, sf,
                      sf, dir);
    cr_assert_eq(rc, 0, "%s", out);
    const char *want[] = {"state:      finished", "step:       256 of 256 (100.0%)",
                          "tokens:     65536 of 65536", "last log:   loss ",
                          "slurm job:  4242 ", "state unknown (squeue not on PATH)"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(out, want[i]), "'%s' missing from:\n%s", want[i], out);
    rc = tcli_run(out, sizeof out, "%s status %s/nothing", sf, dir);
    cr_assert_eq(rc, 2, "%s", out);
}
