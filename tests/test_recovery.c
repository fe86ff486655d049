/* Dictionary recovery regression (issue 10): BatchTopK on the quickstart data must recover the
 * true features about as well as SAELens's BatchTopK does (68-70% at cos >= 0.9, FVU 0.24), and
 * its exported threshold must give L0 near k at inference. Fails if the init regresses. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers/cli.h"
#include "host/compare.h"
#include "host/safetensors.h"

static char out[65536];

/* Fraction of the true features (truth.safetensors) with a decoder row of the run at cos >= 0.9. */
static double matched_truth(const char *run, const char *data)
{
    char a[1600], b[1600];
    snprintf(a, sizeof a, "%s/final/sae.safetensors", run);
    snprintf(b, sizeof b, "%s/truth.safetensors", data);
    st_file fa, fb;
    sf_err err = {0};
    cr_assert_eq(st_read(a, &fa, &err), 0, "%s", err.msg);
    cr_assert_eq(st_read(b, &fb, &err), 0, "%s", err.msg);
    const st_tensor *wa = st_get(&fa, "W_dec"), *wb = st_get(&fb, "W_dec");
    cr_assert(wa && wb && wa->shape[1] == wb->shape[1]);
    compare_result r = compare_dicts_ex((const float *)wa->data, (int)wa->shape[0], (const float *)wb->data,
                                        (int)wb->shape[0], (int)wb->shape[1], NULL, NULL);
    st_file_free(&fa);
    st_file_free(&fb);
    return r.frac_b;
}

/* The last line of metrics.jsonl: the end-of-run eval. */
static double final_eval(const char *run, const char *key)
{
    char path[1600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    static char line[4096], last[4096];
    while (fgets(line, sizeof line, f))
        if (strstr(line, "\"final\":true"))
            snprintf(last, sizeof last, "%s", line);
    fclose(f);
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *s = strstr(last, pat);
    cr_assert(s, "no final eval with %s in %s", key, path);
    return strtod(s + strlen(pat), NULL);
}

Test(recovery, batchtopk_matches_reference_on_quickstart_data, .timeout = 600)
{
    const char *dir = tcli_tmpdir(4);
    char data[600], run[700], cfg[700], text[4096];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(cfg, sizeof cfg, "%s/bt.yaml", dir);
    cr_assert_eq(tcli_run(out, sizeof out, "%s synth --out %s --d 64 --features 512 --tokens 262144 --k 8 "
                          "--dtype f16 --seed 1", tcli_bin(), data), 0, "%s", out);
    /* configs/quickstart.yaml with arch batchtopk and the default init_scale */
    snprintf(text, sizeof text,
             "seed: 0\nout_dir: %s\nbackend: cpu\ndata:\n  path: %s\n  eval_tokens: 8192\n"
             "sae:\n  arch: batchtopk\n  n_latents: 1024\n  k: 8\n  dead_tokens: 100_000\n"
             "train:\n  batch_tokens: 1024\n  total_tokens: 2_097_152\n  lr: 0.004\n  warmup_steps: 50\n"
             "  schedule: linear\n  decay_start: 0.6\n  threads: 2\n"
             "checkpoint:\n  every_steps: 0\n  keep: 1\nlog:\n  every_steps: 100\n  progress: off\n",
             run, data);
    tcli_write(cfg, text);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s", out);
    double matched = matched_truth(run, data), fvu = final_eval(run, "fvu"), l0 = final_eval(run, "l0");
    cr_log_info("batchtopk: matched %.3f, eval FVU %.4f, eval L0 %.2f", matched, fvu, l0);
    /* measured 0.672 / 0.2424 (SAELens 6.54: 0.68-0.70 / 0.24); the old unit-scale init gave
     * 0.398 / 0.277, so these bounds catch a regression of the init with room for noise */
    cr_assert(matched >= 0.60, "batchtopk recovered %.3f of the true features (want >= 0.60)", matched);
    cr_assert(fvu <= 0.255, "batchtopk eval FVU %.4f (want <= 0.255)", fvu);
    /* eval uses the exported rule (a > theta): sparsity near the training k */
    cr_assert(l0 >= 6.0 && l0 <= 10.0, "inference L0 %.2f with the threshold, k = 8", l0);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}
