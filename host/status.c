/* `saeforge status RUN`: where a run is (step, tokens, last metrics, ETA, checkpoint) and its
 * Slurm jobs (from <run>/slurm/jobs.txt, with their queue state when squeue is on PATH). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "cmd.h"
#include "config.h"
#include "fsutil.h"
#include "json.h"
#include "proc.h"

static double num_or(const json_value *o, const char *key, double dflt)
{
    const json_value *v = json_get(o, key);
    return v && v->type == JSON_NUM ? v->num : dflt;
}

/* The last training line and the last eval line of metrics.jsonl (either may stay JSON_NULL). */
static void last_metrics(const char *run, json_value *train, json_value *eval)
{
    char path[SF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    char *text = NULL;
    size_t len = 0;
    sf_err err = {0};
    memset(train, 0, sizeof *train);
    memset(eval, 0, sizeof *eval);
    if (!fs_exists(path) || fs_read_all(path, &text, &len, &err))
        return;
    for (char *l = text; *l;) {
        char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        json_value v;
        char why[64];
        if (n && !json_parse(l, n, &v, why, sizeof why)) { /* a torn last line is skipped */
            json_value *dst = json_get(&v, "eval") ? eval : train;
            json_value_free(dst);
            *dst = v;
        }
        l += n + (e ? 1 : 0);
    }
    free(text);
}

static void fmt_duration(char *buf, size_t cap, double s)
{
    if (s < 90)
        snprintf(buf, cap, "%.0f s", s);
    else if (s < 5400)
        snprintf(buf, cap, "%.1f min", s / 60);
    else
        snprintf(buf, cap, "%.1f h", s / 3600);
}

static void print_progress(const char *run, const sf_config *c, int have_cfg, int done)
{
    json_value tr, ev;
    last_metrics(run, &tr, &ev);
    int64_t total = have_cfg ? c->train.total_tokens : 0;
    int64_t bt = have_cfg ? c->train.batch_tokens : 0;
    if (tr.type == JSON_OBJ) {
        double step = num_or(&tr, "step", 0) + 1, tokens = num_or(&tr, "tokens", 0);
        if (total > 0 && bt > 0)
            printf("step:       %.0f of %lld (%.1f%%)\n", step, (long long)(total / bt),
                   100.0 * step / (double)(total / bt));
        else
            printf("step:       %.0f\n", step);
        if (total > 0)
            printf("tokens:     %.0f of %lld\n", tokens, (long long)total);
        else
            printf("tokens:     %.0f\n", tokens);
        printf("last log:   loss %.6g  fvu %.4f  l0 %.2f  dead %.2f%%  lr %.3g\n",
               num_or(&tr, "loss", 0), num_or(&tr, "fvu", 0), num_or(&tr, "l0", 0),
               100 * num_or(&tr, "dead_frac", 0), num_or(&tr, "lr", 0));
        double tps = num_or(&tr, "tokens_per_s", 0);
        char eta[32];
        if (done) {
            fmt_duration(eta, sizeof eta, num_or(&tr, "elapsed_s", 0));
            printf("time:       %s of training\n", eta);
        } else if (tps > 0 && total > tokens) {
            fmt_duration(eta, sizeof eta, (total - tokens) / tps);
            printf("speed:      %.0f tokens/s; ETA %s (at that speed, once running)\n", tps, eta);
        }
    } else {
        printf("step:       not started (no metrics.jsonl lines yet)\n");
    }
    if (ev.type == JSON_OBJ)
        printf("last eval:  step %.0f: fvu %.4f  l0 %.2f\n", num_or(&ev, "step", 0) + 1,
               num_or(&ev, "fvu", 0), num_or(&ev, "l0", 0));
    json_value_free(&tr);
    json_value_free(&ev);
}

/* State of one job from squeue; "" when squeue no longer lists it. Returns -1 if no squeue. */
static int job_state(const char *id, char *state, size_t cap)
{
    const char *argv[] = {"squeue", "-h", "-t", "all", "-o", "%T", "-j", id, NULL};
    char out[256];
    int st = proc_run(argv, out, sizeof out, NULL, 0, NULL);
    if (st < 0)
        return -1;
    proc_one_line(out, sizeof out);
    snprintf(state, cap, "%s", st == 0 ? out : "");
    return 0;
}

static void print_jobs(const char *run)
{
    char path[SF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/slurm/jobs.txt", run);
    char *text = NULL;
    size_t len = 0;
    sf_err err = {0};
    if (!fs_exists(path) || fs_read_all(path, &text, &len, &err))
        return;
    int no_squeue = 0;
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) {
        char id[64] = "", when[64] = "", state[256] = "";
        if (sscanf(l, "%63s %63s", id, when) < 1)
            continue;
        if (!no_squeue && job_state(id, state, sizeof state) < 0)
            no_squeue = 1;
        printf("slurm job:  %s submitted %s: %s\n", id, when,
               no_squeue ? "state unknown (squeue not on PATH)"
               : *state  ? state
                         : "not in the queue (finished, cancelled or purged; see the log)");
    }
    free(text);
}

int cmd_status(int argc, char **argv)
{
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        printf("usage: saeforge status RUN\n"
               "  Where the run in directory RUN is: step, tokens, last logged metrics and eval,\n"
               "  speed and ETA, newest checkpoint, and the Slurm jobs `saeforge submit` recorded\n"
               "  (slurm/jobs.txt) with their queue state when squeue is on PATH.\n");
        return 0;
    }
    if (argc != 1)
        return cli_error(2, "status: expected one RUN directory; usage: saeforge status RUN");
    const char *run = argv[0];
    char path[SF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/config.yaml", run);
    int have_cfg = fs_exists(path);
    snprintf(path, sizeof path, "%s/slurm", run);
    if (!fs_is_dir(run) || (!have_cfg && !fs_is_dir(path)))
        return cli_error(2, "status: %s is not a run directory (no config.yaml or slurm/); pass "
                            "the out_dir of a config", run);
    sf_config *c = calloc(1, sizeof *c);
    sf_err err = {0};
    snprintf(path, sizeof path, "%s/config.yaml", run);
    if (have_cfg && config_load(path, NULL, 0, c, &err)) {
        fprintf(stderr, "saeforge: status: %s (ignored)\n", err.msg);
        have_cfg = 0;
    }
    snprintf(path, sizeof path, "%s/final/sae.safetensors", run);
    int done = fs_exists(path);
    printf("run:        %s\n", run);
    printf("state:      %s\n", done ? "finished (final/ written)"
                           : have_cfg ? "not finished (training, queued or stopped)"
                                      : "submitted, not started");
    print_progress(run, c, have_cfg, done);
    char ck[SF_PATH_MAX + 64];
    err.code = 0;
    int found = ckpt_find_latest(run, ck, sizeof ck, &err);
    if (found == 1)
        printf("checkpoint: %s\n", ck);
    else if (!done)
        printf("checkpoint: none yet\n");
    print_jobs(run);
    free(c);
    return 0;
}
