/* metrics.jsonl and progress output (see metrics.h). */
#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

/* Drops lines whose "step" is greater than keep_step, and the end-of-run evaluation (written
 * after the last checkpoint, so a resume from that checkpoint writes it again), rewriting the
 * file atomically. */
#define FINAL_TAG "\"final\":true"

static int truncate_after(const char *path, int64_t keep_step, sf_err *err)
{
    char *data = NULL;
    size_t len = 0;
    if (!fs_exists(path))
        return SF_OK;
    int rc = fs_read_all(path, &data, &len, err);
    if (rc)
        return rc;
    char *out = malloc(len + 1);
    size_t o = 0;
    char *line = data;
    while (line < data + len) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        size_t ll = nl ? (size_t)(nl - line) + 1 : (size_t)(data + len - line);
        const char *s = strstr(line, "\"step\":");
        int64_t step = s && s < line + ll ? strtoll(s + 7, NULL, 10) : -1;
        const char *fin = strstr(line, FINAL_TAG);
        if (fin && fin < line + ll)
            step = INT64_MAX;
        if (nl && step <= keep_step) { /* a line without '\n' was cut by a crash: drop it */
            memcpy(out + o, line, ll);
            o += ll;
        }
        line += ll;
    }
    rc = fs_write_atomic(path, out, o, err);
    free(out);
    free(data);
    return rc;
}

int metrics_open(metrics_log *m, const char *run_dir, int64_t keep_step, int live, sf_err *err)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    memset(m, 0, sizeof *m);
    int rc = truncate_after(path, keep_step, err);
    if (rc)
        return rc;
    m->f = fopen(path, "a");
    if (!m->f)
        return sf_fail(err, SF_EINPUT, "%s: cannot open for writing (%s); check out_dir permissions",
                       path, strerror(errno));
    m->live = live;
    return SF_OK;
}

static void put_num(FILE *f, const char *key, double v)
{
    if (isfinite(v))
        fprintf(f, ",\"%s\":%.17g", key, v);
    else
        fprintf(f, ",\"%s\":null", key);
}

void metrics_train(metrics_log *m, int64_t step, int64_t tokens, float lr, int k,
                   const sae_metrics *mt, double elapsed_s, double tokens_per_s)
{
    FILE *f = m->f;
    fprintf(f, "{\"step\":%lld,\"tokens\":%lld", (long long)step, (long long)tokens);
    put_num(f, "lr", lr);
    fprintf(f, ",\"k\":%d", k);
    put_num(f, "loss", mt->loss);
    put_num(f, "fvu", mt->fvu);
    put_num(f, "auxk", mt->auxk);
    put_num(f, "l0", mt->l0);
    put_num(f, "dead_frac", mt->dead_frac);
    put_num(f, "grad_norm", mt->grad_norm);
    if (mt->gw_err >= 0)
        put_num(f, "gw_err", mt->gw_err);
    put_num(f, "elapsed_s", elapsed_s);
    put_num(f, "tokens_per_s", tokens_per_s);
    fputs("}\n", f);
    fflush(f);
}

static void eval_line(metrics_log *m, int final, int64_t step, int64_t tokens, const sae_metrics *acc)
{
    FILE *f = m->f;
    fprintf(f, "{\"eval\":true,%s\"step\":%lld,\"tokens\":%lld", final ? FINAL_TAG "," : "",
            (long long)step, (long long)tokens);
    put_num(f, "fvu", acc->fvu);
    put_num(f, "l0", acc->l0);
    if (acc->gw_err >= 0)
        put_num(f, "gw_err", acc->gw_err);
    fprintf(f, ",\"eval_tokens\":%lld}\n", (long long)acc->tokens);
    fflush(f);
}

void metrics_eval(metrics_log *m, int64_t step, int64_t tokens, const sae_metrics *acc)
{
    eval_line(m, 0, step, tokens, acc);
}

void metrics_eval_final(metrics_log *m, int64_t step, int64_t tokens, const sae_metrics *acc)
{
    eval_line(m, 1, step, tokens, acc);
}

static void fmt_eta(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e7)
        snprintf(buf, n, "--");
    else if (s >= 3600)
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

void metrics_progress(metrics_log *m, int64_t step, int64_t total_steps, const sae_metrics *mt,
                      double tokens_per_s, double eta_s)
{
    char eta[32];
    fmt_eta(eta, sizeof eta, eta_s);
    char line[256];
    snprintf(line, sizeof line,
             "step %lld/%lld  %.0f tok/s  loss %.4f  fvu %.4f  L0 %.1f  dead %.1f%%  eta %s",
             (long long)step, (long long)total_steps, tokens_per_s, mt->loss, mt->fvu, mt->l0,
             100.0 * mt->dead_frac, eta);
    if (m->live) {
        fprintf(stderr, "\r%-100s", line);
        m->line_open = 1;
    } else {
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
}

void metrics_close(metrics_log *m)
{
    if (m->line_open)
        fputc('\n', stderr);
    if (m->f)
        fclose(m->f);
    m->f = NULL;
}
