/* Dictionary recovery regression (issue 10): BatchTopK on the quickstart data must recover the
 * true features about as well as SAELens's BatchTopK does (68-70% at cos >= 0.9, FVU 0.24), and
 * its exported threshold must give L0 near k at inference. Fails if the init regresses. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/shard.h"
#include "helpers/cli.h"
#include "host/compare.h"
#include "host/fsutil.h"
#include "host/json.h"
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

/* Inference L0 of the run's export, recomputed here from final/ alone: cfg.json must say
 * jumprelu, and z_i = pre_i * [pre_i > threshold_i] with pre = (x - b_dec) W_enc + b_enc (the
 * SAELens JumpReLU forward, W_enc [d, n]) over the last `rows` rows of the data, the ones the
 * run held out. Also checks that the threshold is one positive theta for every latent. */
static double export_jumprelu_l0(const char *run, const char *data, int rows)
{
    char path[1600], why[128], *text;
    size_t len;
    sf_err err = {0};
    snprintf(path, sizeof path, "%s/final/cfg.json", run);
    cr_assert_eq(fs_read_all(path, &text, &len, &err), 0, "%s", err.msg);
    json_value cfg;
    cr_assert_eq(json_parse(text, len, &cfg, why, (int)sizeof why), 0, "%s: %s", path, why);
    cr_assert_str_eq(json_get_str(&cfg, "architecture", ""), "jumprelu", "%s", path);
    json_value_free(&cfg);
    free(text);

    snprintf(path, sizeof path, "%s/final/sae.safetensors", run);
    st_file fs;
    cr_assert_eq(st_read(path, &fs, &err), 0, "%s", err.msg);
    const st_tensor *we = st_get(&fs, "W_enc"), *be = st_get(&fs, "b_enc"), *bd = st_get(&fs, "b_dec"),
                    *th = st_get(&fs, "threshold");
    cr_assert(we && be && bd && th, "export lacks W_enc, b_enc, b_dec or threshold");
    int d = (int)we->shape[0], n = (int)we->shape[1];
    const float *W = we->data, *b = be->data, *c = bd->data, *t = th->data;
    cr_assert(t[0] > 0, "threshold %g: no theta was learned", (double)t[0]);
    for (int i = 1; i < n; i++)
        cr_assert_eq(t[i], t[0], "threshold[%d] = %g differs from threshold[0] = %g", i, (double)t[i], (double)t[0]);

    shard_set set;
    cr_assert_eq(shard_set_open(&set, data, 0, &err), 0, "%s", err.msg);
    cr_assert(set.d == d && set.rows > rows);
    float *x = malloc(sizeof(float) * (size_t)rows * d);
    cr_assert_eq(shard_set_read(&set, set.rows - rows, rows, x, NULL, &err), 0, "%s", err.msg);
    int64_t active = 0;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        for (int i = 0; i < n; i++) {
            double pre = b[i];
            for (int j = 0; j < d; j++)
                pre += ((double)xr[j] - c[j]) * W[(size_t)j * n + i];
            active += pre > t[i];
        }
    }
    free(x);
    shard_set_free(&set);
    st_file_free(&fs);
    return (double)active / rows;
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
    /* configs/quickstart.yaml with arch batchtopk and the default init_scale and aux_alpha */
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
    /* measured 0.754 / 0.2358 (SAELens 6.54 on these rows: 0.58 / 0.255; the SAELens
     * figures 0.68-0.70 / 0.24); AuxK weight 1/32 gave 0.672 / 0.2424 and the old unit-scale
     * init 0.398 / 0.277, so these bounds catch a regression of either default */
    cr_assert(matched >= 0.70, "batchtopk recovered %.3f of the true features (want >= 0.70)", matched);
    cr_assert(fvu <= 0.240, "batchtopk eval FVU %.4f (want <= 0.240)", fvu);
    /* eval uses the exported rule (a > theta): sparsity near the training k */
    cr_assert(l0 >= 6.0 && l0 <= 10.0, "inference L0 %.2f with the threshold, k = 8", l0);
    /* the same rule from the exported files alone, as SAELens's JumpReLU would run it */
    double l0x = export_jumprelu_l0(run, data, 8192);
    cr_log_info("batchtopk export: jumprelu L0 %.2f on the held-out rows", l0x);
    cr_assert(l0x >= 6.0 && l0x <= 10.0, "exported jumprelu L0 %.2f on the held-out rows, k = 8", l0x);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}

/* Matryoshka shares batchtopk's selection and threshold; its export must also load as a
 * JumpReLU SAE whose threshold gives L0 near k on held-out rows. A smaller, shorter run than the
 * recovery test above (this checks the export rule, not recovery): 384 steps, so theta's EMA
 * (0.99) has forgotten the first, larger kept values (0.99^384 < 0.03). */
Test(recovery, matryoshka_export_is_jumprelu_with_l0_near_k, .timeout = 600)
{
    const char *dir = tcli_tmpdir(5);
    char data[600], run[700], cfg[700], text[4096];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(cfg, sizeof cfg, "%s/mat.yaml", dir);
    cr_assert_eq(tcli_run(out, sizeof out, "%s synth --out %s --d 64 --features 512 --tokens 65536 --k 8 "
                          "--seed 2", tcli_bin(), data), 0, "%s", out);
    snprintf(text, sizeof text,
             "seed: 0\nout_dir: %s\nbackend: cpu\ndata:\n  path: %s\n  eval_tokens: 8192\n"
             "sae:\n  arch: matryoshka\n  n_latents: 512\n  k: 8\n  dead_tokens: 100_000\n"
             "train:\n  batch_tokens: 1024\n  total_tokens: 393_216\n  lr: 0.004\n  warmup_steps: 50\n"
             "  schedule: linear\n  decay_start: 0.6\n  threads: 2\n"
             "checkpoint:\n  every_steps: 0\n  keep: 1\nlog:\n  every_steps: 100\n  progress: off\n",
             run, data);
    tcli_write(cfg, text);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s", out);
    double l0 = final_eval(run, "l0"), l0x = export_jumprelu_l0(run, data, 8192);
    cr_log_info("matryoshka: eval L0 %.3f, exported jumprelu L0 %.3f", l0, l0x);
    cr_assert(l0x >= 6.0 && l0x <= 10.0, "exported jumprelu L0 %.2f on the held-out rows, k = 8", l0x);
    /* the export's rule and the trainer's eval rule are the same rule on the same rows */
    cr_assert(fabs(l0x - l0) <= 0.01, "exported L0 %.3f vs the run's eval L0 %.3f", l0x, l0);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}
