/* The training rules of issue 4 against independent references: g-SAE recovers the important
 * features better than TopK, AuxK revives dead latents, the gradient-weighted error is what SPEC
 * says for every arch, batchtopk exports its threshold and matryoshka's loss is the prefix mean. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/synth.h"
#include "helpers/cli.h"
#include "host/compare.h"
#include "host/fsutil.h"
#include "host/rng.h"
#include "host/safetensors.h"
#include "kernels/backend.h"

static char out[65536];

static char *slurp(const char *path)
{
    char *data = NULL;
    size_t len = 0;
    sf_err err = {0};
    cr_assert_eq(fs_read_all(path, &data, &len, &err), 0, "%s", err.msg);
    return data;
}

/* ---- an independent reference of the forward pass (plain loops, double sums) ------------- */

/* W_dec rows Gaussian then unit norm, W_enc = W_dec, small random b_enc and b_dec. */
static void rand_params(sae_params *p, int d, int n, uint64_t seed)
{
    sae_params_alloc(p, d, n);
    sf_rng r;
    rng_seed(&r, seed, 1);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) {
            p->W_dec[(size_t)i * d + j] = (float)rng_normal(&r);
            s += (double)p->W_dec[(size_t)i * d + j] * p->W_dec[(size_t)i * d + j];
        }
        for (int j = 0; j < d; j++) {
            p->W_dec[(size_t)i * d + j] /= (float)sqrt(s);
            p->W_enc[(size_t)i * d + j] = p->W_dec[(size_t)i * d + j];
        }
        p->b_enc[i] = (float)(0.05 * rng_normal(&r));
    }
    for (int j = 0; j < d; j++)
        p->b_dec[j] = (float)(0.05 * rng_normal(&r));
}

/* a = relu(W_enc (x - b_dec) + b_enc) (B, n). */
static double *ref_acts(const sae_params *p, const float *x, int B, int d, int n)
{
    double *a = malloc(sizeof(double) * (size_t)B * n);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < n; i++) {
            double s = p->b_enc[i];
            for (int j = 0; j < d; j++)
                s += (double)p->W_enc[(size_t)i * d + j] * ((double)x[(size_t)b * d + j] - p->b_dec[j]);
            a[(size_t)b * n + i] = s > 0 ? s : 0;
        }
    return a;
}

/* keep (B, n): 1 where latent i is active on token b under the named rule. */
enum { RULE_TOPK, RULE_GATED, RULE_THETA, RULE_BATCH };
static unsigned char *ref_keep(const sae_params *p, const double *a, const float *g, int B, int d,
                               int n, int k, int rule, double beta, double theta)
{
    unsigned char *keep = calloc((size_t)B * n, 1);
    double *s = malloc(sizeof(double) * (size_t)B * n);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < n; i++) {
            double v = a[(size_t)b * n + i];
            if (rule == RULE_GATED) {
                double gate = 0;
                for (int j = 0; j < d; j++)
                    gate += (double)p->W_dec[(size_t)i * d + j] * g[(size_t)b * d + j];
                v *= 1 + beta * fabs(gate);
            }
            s[(size_t)b * n + i] = v;
        }
    if (rule == RULE_THETA) {
        for (size_t t = 0; t < (size_t)B * n; t++)
            keep[t] = a[t] > theta;
    } else if (rule == RULE_BATCH) { /* the B*k largest positive a over the batch */
        for (int c = 0; c < B * k; c++) {
            size_t best = 0;
            double bv = 0;
            for (size_t t = 0; t < (size_t)B * n; t++)
                if (!keep[t] && s[t] > bv) {
                    bv = s[t];
                    best = t;
                }
            if (bv <= 0)
                break;
            keep[best] = 1;
        }
    } else { /* row top-k of the score with s > 0 */
        for (int b = 0; b < B; b++)
            for (int c = 0; c < k; c++) {
                int best = -1;
                double bv = 0;
                for (int i = 0; i < n; i++)
                    if (!keep[(size_t)b * n + i] && s[(size_t)b * n + i] > bv) {
                        bv = s[(size_t)b * n + i];
                        best = i;
                    }
                if (best < 0)
                    break;
                keep[(size_t)b * n + best] = 1;
            }
    }
    free(s);
    return keep;
}

/* xhat (B, d) from the latents i < limit that keep marks. */
static double *ref_decode(const sae_params *p, const double *a, const unsigned char *keep, int B,
                          int d, int n, int limit)
{
    double *xh = malloc(sizeof(double) * (size_t)B * d);
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < d; j++)
            xh[(size_t)b * d + j] = p->b_dec[j];
        for (int i = 0; i < limit; i++)
            if (keep[(size_t)b * n + i])
                for (int j = 0; j < d; j++)
                    xh[(size_t)b * d + j] += a[(size_t)b * n + i] * p->W_dec[(size_t)i * d + j];
    }
    return xh;
}

/* FVU and the gradient-weighted error of SPEC/issue 4 for one batch. */
static void ref_errors(const float *x, const float *g, const double *xh, int B, int d, double *fvu,
                       double *gw_num, double *gw_den)
{
    double mean[256] = {0};
    cr_assert(d <= 256);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < d; j++)
            mean[j] += x[(size_t)b * d + j];
    for (int j = 0; j < d; j++)
        mean[j] /= B;
    double num = 0, den = 0, gn = 0, gd = 0;
    for (int b = 0; b < B; b++) {
        double ge = 0, gc = 0;
        for (int j = 0; j < d; j++) {
            double e = x[(size_t)b * d + j] - xh[(size_t)b * d + j];
            double c = x[(size_t)b * d + j] - mean[j];
            num += e * e;
            den += c * c;
            if (g) {
                ge += g[(size_t)b * d + j] * e;
                gc += g[(size_t)b * d + j] * c;
            }
        }
        gn += ge * ge;
        gd += gc * gc;
    }
    *fvu = num / den;
    if (gw_num) {
        *gw_num = gn;
        *gw_den = gd;
    }
}

static sae_hparams hparams(sae_arch arch, int d, int n, int k)
{
    sae_hparams hp = {.arch = arch, .d = d, .n = n, .k = k, .gsae_beta = 2.0f, .n_prefixes = 1,
                      .aux_k = d / 2, .aux_alpha = 1.0f / 32, .dead_tokens = 100000,
                      .adam_b1 = 0.9f, .adam_b2 = 0.999f, .adam_eps = 1e-8f, .theta_ema = 0.99f};
    hp.prefixes[0] = n;
    return hp;
}

static void synth_batch(int d, int F, double k, int grads, uint64_t seed, int64_t t0, int B, float *x,
                        float *g)
{
    synth_model m;
    synth_model_init(&m, d, F, k, grads, seed);
    synth_generate(&m, t0, B, x, g, NULL);
    synth_model_free(&m);
}

static int near(double a, double b, double rtol) { return fabs(a - b) <= 1e-9 + rtol * fabs(b); }

/* ---- c. the gradient-weighted error ------------------------------------------------------- */

/* eval_batch of every arch against the reference, with the arch's inference rule. */
Test(rules, gw_err_matches_reference_all_archs)
{
    enum { d = 32, n = 96, k = 4, B = 128 };
    static float x[B * d], g[B * d];
    synth_batch(d, 128, 4, 1, 21, 4096, B, x, g);
    const sae_arch archs[4] = {SAE_ARCH_TOPK, SAE_ARCH_GSAE, SAE_ARCH_BATCHTOPK, SAE_ARCH_MATRYOSHKA};
    for (int ai = 0; ai < 4; ai++) {
        sae_hparams hp = hparams(archs[ai], d, n, k);
        if (archs[ai] == SAE_ARCH_MATRYOSHKA) {
            hp.n_prefixes = 2;
            hp.prefixes[0] = 32;
            hp.prefixes[1] = n;
        }
        sae_params p;
        rand_params(&p, d, n, 40 + ai);
        sae_backend *be = backend_cpu_new(&hp, B, 1);
        cr_assert(be);
        be->set_params(be, &p);
        double theta = -1;
        if (archs[ai] == SAE_ARCH_BATCHTOPK || archs[ai] == SAE_ARCH_MATRYOSHKA) {
            sae_state s;
            sae_state_alloc(&s, d, n);
            s.theta = 0.35f; /* a trained threshold: inference is a > theta */
            be->set_state(be, &s);
            sae_state_free(&s);
            theta = 0.35f;
        }
        sae_metrics acc;
        memset(&acc, 0, sizeof acc);
        be->eval_batch(be, x, g, B, k, &acc);

        double *a = ref_acts(&p, x, B, d, n);
        int rule = archs[ai] == SAE_ARCH_GSAE ? RULE_GATED : theta > 0 ? RULE_THETA : RULE_TOPK;
        unsigned char *keep = ref_keep(&p, a, g, B, d, n, k, rule, hp.gsae_beta, theta);
        double *xh = ref_decode(&p, a, keep, B, d, n, n);
        double fvu, gn, gd;
        ref_errors(x, g, xh, B, d, &fvu, &gn, &gd);
        cr_assert(gd > 0);
        cr_assert(near(acc.gw_num, gn, 1e-4) && near(acc.gw_den, gd, 1e-4),
                  "arch %d: gw %g/%g, reference %g/%g", ai, acc.gw_num, acc.gw_den, gn, gd);
        cr_assert(near(acc.fvu_num / acc.fvu_den, fvu, 1e-4), "arch %d: fvu %g vs %g", ai,
                  acc.fvu_num / acc.fvu_den, fvu);
        /* the gated rule really differs from plain top-k on this batch (else gsae is untested) */
        if (rule == RULE_GATED) {
            unsigned char *plain = ref_keep(&p, a, g, B, d, n, k, RULE_TOPK, 0, 0);
            cr_assert(memcmp(plain, keep, (size_t)B * n), "gate changed no selection");
            free(plain);
        }
        free(a);
        free(keep);
        free(xh);
        sae_params_free(&p);
        be->free(be);
    }
}

static double json_num(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *s = strstr(line, pat);
    return s ? strtod(s + strlen(pat), NULL) : NAN;
}

static void write_cfg(const char *path, const char *run, const char *data, const char *arch,
                      const char *extra_sae, int eval_tokens, long tokens)
{
    char text[4096];
    snprintf(text, sizeof text,
             "seed: 3\nout_dir: %s\nbackend: cpu\n"
             "data:\n  path: %s\n  shuffle_buffer: 4096\n  eval_tokens: %d\n"
             "sae:\n  arch: %s\n  n_latents: 128\n  k: 4\n  dead_tokens: 4096\n%s"
             "train:\n  batch_tokens: 512\n  total_tokens: %ld\n  lr: 0.003\n  threads: 2\n"
             "  eval_every_steps: 10\n"
             "checkpoint:\n  every_steps: 0\n  keep: 1\nlog:\n  every_steps: 5\n  progress: off\n",
             run, data, eval_tokens, arch, extra_sae, tokens);
    tcli_write(path, text);
}

/* Through the CLI: every arch's eval lines carry gw_err; for topk the final one equals the
 * reference on the eval rows (one eval batch) with the exported weights; gsae's stats carry the
 * mean gate. */
Test(rules, gw_err_in_eval_metrics_every_arch, .timeout = 120)
{
    enum { d = 32, F = 128, ROWS = 16384, EV = 512 };
    const char *dir = tcli_tmpdir(0);
    char data[600], run[700], cfg[700], p[900];
    snprintf(data, sizeof data, "%s/data", dir);
    cr_assert_eq(tcli_run(out, sizeof out, "%s synth --out %s --d %d --features %d --tokens %d --k 4 "
                          "--gradients --seed 9", tcli_bin(), data, d, F, ROWS), 0, "%s", out);
    const char *archs[4] = {"topk", "gsae", "batchtopk", "matryoshka"};
    for (int ai = 0; ai < 4; ai++) {
        snprintf(run, sizeof run, "%s/%s", dir, archs[ai]);
        snprintf(cfg, sizeof cfg, "%s/%s.yaml", dir, archs[ai]);
        write_cfg(cfg, run, data, archs[ai],
                  ai == 3 ? "  matryoshka_prefixes: [16, 64, 128]\n" : "", EV, 512 * 30);
        cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s: %s",
                     archs[ai], out);
        cr_assert(strstr(out, "gradient-weighted error"), "%s: summary lacks it: %s", archs[ai], out);
        snprintf(p, sizeof p, "%s/metrics.jsonl", run);
        char *m = slurp(p);
        int evals = 0;
        double last_gw = NAN;
        for (char *line = strtok(m, "\n"); line; line = strtok(NULL, "\n")) {
            if (!strstr(line, "\"eval\":true"))
                continue;
            evals++;
            last_gw = json_num(line, "gw_err");
            cr_assert(isfinite(last_gw) && last_gw >= 0, "%s: eval line without gw_err: %s",
                      archs[ai], line);
        }
        free(m);
        cr_assert_eq(evals, 3, "%s: evals at steps 10, 20 and the end", archs[ai]);

        snprintf(p, sizeof p, "%s/stats/feature_stats.csv", run);
        char *csv = slurp(p);
        char *nl = strchr(csv, '\n');
        cr_assert(nl);
        *nl = 0;
        if (ai == 1)
            cr_assert(strstr(csv, "mean_gate"), "gsae stats lack the mean gate: %s", csv);
        else
            cr_assert(!strstr(csv, "mean_gate"), "%s stats: %s", archs[ai], csv);
        if (ai == 1) { /* some latent fired with a non-zero gate */
            double mx = 0;
            for (char *line = strtok(nl + 1, "\n"); line; line = strtok(NULL, "\n")) {
                const char *c = strrchr(line, ',');
                double v = c ? strtod(c + 1, NULL) : 0;
                mx = v > mx ? v : mx;
            }
            cr_assert(mx > 0, "every mean_gate is 0");
        }
        free(csv);

        if (ai == 0) { /* independent recomputation of the final eval for topk */
            static float x[EV * d], g[EV * d];
            synth_batch(d, F, 4, 1, 9, ROWS - EV, EV, x, g);
            snprintf(p, sizeof p, "%s/final/sae.safetensors", run);
            st_file f;
            sf_err err = {0};
            cr_assert_eq(st_read(p, &f, &err), 0, "%s", err.msg);
            const int n = 128;
            sae_params q;
            sae_params_alloc(&q, d, n);
            const float *We = (const float *)st_get(&f, "W_enc")->data; /* (d, n) */
            for (int i = 0; i < n; i++)
                for (int j = 0; j < d; j++)
                    q.W_enc[(size_t)i * d + j] = We[(size_t)j * n + i];
            memcpy(q.W_dec, st_get(&f, "W_dec")->data, sizeof(float) * n * d);
            memcpy(q.b_enc, st_get(&f, "b_enc")->data, sizeof(float) * n);
            memcpy(q.b_dec, st_get(&f, "b_dec")->data, sizeof(float) * d);
            double *a = ref_acts(&q, x, EV, d, n);
            unsigned char *keep = ref_keep(&q, a, g, EV, d, n, 4, RULE_TOPK, 0, 0);
            double *xh = ref_decode(&q, a, keep, EV, d, n, n);
            double fvu, gn, gd;
            ref_errors(x, g, xh, EV, d, &fvu, &gn, &gd);
            cr_assert(near(last_gw, gn / gd, 1e-4), "metrics gw_err %.9g, reference %.9g", last_gw,
                      gn / gd);
            free(a);
            free(keep);
            free(xh);
            sae_params_free(&q);
            st_file_free(&f);
        }
    }
    tcli_run(NULL, 0, "rm -rf %s", dir);
}

/* ---- d. batchtopk's threshold, matryoshka's loss ------------------------------------------ */

Test(rules, batchtopk_exports_jumprelu_with_theta, .timeout = 120)
{
    const char *dir = tcli_tmpdir(1);
    char data[600], run[700], cfg[700], p[900];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(cfg, sizeof cfg, "%s/c.yaml", dir);
    cr_assert_eq(tcli_run(out, sizeof out, "%s synth --out %s --d 32 --features 128 --tokens 16384 "
                          "--k 4 --seed 4", tcli_bin(), data), 0, "%s", out);
    write_cfg(cfg, run, data, "batchtopk", "", 1024, 512 * 40);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s", out);

    snprintf(p, sizeof p, "%s/final/cfg.json", run);
    char *cj = slurp(p);
    cr_assert(strstr(cj, "\"architecture\"") && strstr(cj, "jumprelu"), "%s", cj);
    free(cj);
    st_file fs, fc;
    sf_err err = {0};
    snprintf(p, sizeof p, "%s/checkpoints/step_40/state.safetensors", run);
    cr_assert_eq(st_read(p, &fc, &err), 0, "%s", err.msg);
    const st_tensor *th = st_get(&fc, "theta");
    cr_assert(th && th->nbytes == 4);
    float theta = *(const float *)th->data;
    cr_assert(theta > 0 && theta < 100, "theta %g", theta);
    snprintf(p, sizeof p, "%s/final/sae.safetensors", run);
    cr_assert_eq(st_read(p, &fs, &err), 0, "%s", err.msg);
    const st_tensor *thr = st_get(&fs, "threshold");
    cr_assert(thr && thr->shape[0] == 128, "threshold [n] missing");
    for (int i = 0; i < 128; i++)
        cr_assert_eq(((const float *)thr->data)[i], theta, "threshold[%d] != checkpoint theta", i);
    st_file_free(&fs);
    st_file_free(&fc);

    /* the eval L0 is that of the threshold rule: not the fixed k of a top-k rule */
    snprintf(p, sizeof p, "%s/metrics.jsonl", run);
    char *m = slurp(p);
    char *last = strstr(m, "\"eval\":true"), *e;
    while (last && (e = strstr(last + 1, "\"eval\":true")))
        last = e;
    cr_assert(last);
    double l0 = json_num(last, "l0");
    cr_assert(l0 > 0.05 && l0 != 4.0, "eval l0 %g with k = 4", l0);
    free(m);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}

/* One matryoshka step's loss is the mean over prefixes of FVU(x, xhat_g) with batch top-(B k)
 * selection (theta not yet set), and fvu is the full prefix's. aux off to isolate it. */
Test(rules, matryoshka_loss_is_mean_prefix_fvu)
{
    enum { d = 32, n = 96, k = 4, B = 64 };
    static float x[B * d];
    synth_batch(d, 128, 4, 0, 5, 0, B, x, NULL);
    sae_hparams hp = hparams(SAE_ARCH_MATRYOSHKA, d, n, k);
    hp.aux_alpha = 0;
    hp.n_prefixes = 3;
    hp.prefixes[0] = 8;
    hp.prefixes[1] = 32;
    hp.prefixes[2] = n;
    sae_params p;
    rand_params(&p, d, n, 77);
    sae_backend *be = backend_cpu_new(&hp, B, 1);
    be->set_params(be, &p);
    sae_metrics mt;
    be->train_step(be, x, NULL, B, k, 1e-3f, 0, &mt);
    double *a = ref_acts(&p, x, B, d, n);
    unsigned char *keep = ref_keep(&p, a, NULL, B, d, n, k, RULE_BATCH, 0, 0);
    double sum = 0, fvu[3];
    for (int gi = 0; gi < 3; gi++) {
        double *xh = ref_decode(&p, a, keep, B, d, n, hp.prefixes[gi]);
        ref_errors(x, NULL, xh, B, d, &fvu[gi], NULL, NULL);
        sum += fvu[gi];
        free(xh);
    }
    cr_assert(fabs(fvu[0] - fvu[2]) > 0.05 * fvu[2] && fabs(fvu[1] - fvu[2]) > 1e-3 * fvu[2],
              "prefixes must differ for the test to mean anything");
    cr_assert(near(mt.loss, sum / 3, 1e-4), "loss %.9g, mean prefix FVU %.9g", mt.loss, sum / 3);
    cr_assert(near(mt.fvu, fvu[2], 1e-4), "fvu %.9g, full-prefix FVU %.9g", mt.fvu, fvu[2]);
    free(a);
    free(keep);
    sae_params_free(&p);
    be->free(be);
}

Test(rules, matryoshka_trains_and_exports, .timeout = 120)
{
    const char *dir = tcli_tmpdir(2);
    char data[600], run[700], cfg[700], p[900];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(cfg, sizeof cfg, "%s/c.yaml", dir);
    cr_assert_eq(tcli_run(out, sizeof out, "%s synth --out %s --d 32 --features 128 --tokens 16384 "
                          "--k 4 --seed 4", tcli_bin(), data), 0, "%s", out);
    /* init_scale 1: with the small default encoder every prefix's FVU is ~1 at step 0, so the
     * prefix mean and the full FVU could not be told apart there */
    write_cfg(cfg, run, data, "matryoshka", "  matryoshka_prefixes: [16, 64, 128]\n  init_scale: 1\n", 1024,
              512 * 40);
    cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s", out);
    snprintf(p, sizeof p, "%s/config.yaml", run);
    char *c = slurp(p);
    cr_assert(strstr(c, "16") && strstr(c, "64"), "prefixes not in the resolved config: %s", c);
    free(c);
    /* loss (prefix mean; no dead latents yet, so no AuxK) differs from fvu (full prefix) */
    snprintf(p, sizeof p, "%s/metrics.jsonl", run);
    char *m = slurp(p);
    double loss0 = json_num(m, "loss"), fvu0 = json_num(m, "fvu");
    cr_assert(fabs(loss0 - fvu0) > 0.01 * fvu0, "step 0: loss %g, fvu %g", loss0, fvu0);
    free(m);
    snprintf(p, sizeof p, "%s/final/sae.safetensors", run);
    st_file f;
    sf_err err = {0};
    cr_assert_eq(st_read(p, &f, &err), 0, "%s", err.msg);
    cr_assert(st_get(&f, "threshold"), "matryoshka exports a threshold too");
    st_file_free(&f);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}

/* ---- b. AuxK revives dead latents --------------------------------------------------------- */

/* 80% of the encoder rows are shrunk to 2% of their length: their pre-activations are small,
 * positive half the time, never in the top k, so without AuxK no gradient ever reaches them. */
static double dead_after(float aux_alpha)
{
    enum { d = 32, n = 256, k = 4, B = 256 };
    const int STEPS = 300;
    const float LR = 5e-3f;
    sae_hparams hp = hparams(SAE_ARCH_TOPK, d, n, k);
    hp.aux_alpha = aux_alpha;
    hp.aux_k = 16;
    hp.dead_tokens = 2048;
    sae_params p;
    rand_params(&p, d, n, 8);
    for (int i = n / 5; i < n; i++) {
        for (int j = 0; j < d; j++)
            p.W_enc[(size_t)i * d + j] *= 0.02f;
        p.b_enc[i] = 0;
    }
    synth_model m;
    synth_model_init(&m, d, 2048, 4, 0, 13); /* many more features than latents: all are needed */
    static float x[B * d];
    memset(x, 0, sizeof x);
    synth_generate(&m, 0, B, x, NULL, NULL);
    for (int j = 0; j < d; j++) { /* b_dec = mean of the first batch, as the driver does */
        double s = 0;
        for (int b = 0; b < B; b++)
            s += x[b * d + j];
        p.b_dec[j] = (float)(s / B);
    }
    sae_backend *be = backend_cpu_new(&hp, B, 1);
    be->set_params(be, &p);
    sae_metrics mt;
    for (int s = 0; s < STEPS; s++) {
        synth_generate(&m, (int64_t)s * B, B, x, NULL, NULL);
        be->train_step(be, x, NULL, B, k, LR, s, &mt);
    }
    sae_state st;
    sae_state_alloc(&st, d, n);
    be->get_state(be, &st);
    int dead = 0;
    for (int i = 0; i < n; i++)
        dead += st.since_fired[i] >= hp.dead_tokens;
    sae_state_free(&st);
    sae_params_free(&p);
    synth_model_free(&m);
    be->free(be);
    return (double)dead / n;
}

Test(rules, auxk_revives_dead_latents, .timeout = 60)
{
    double off = dead_after(0.0f), on = dead_after(1.0f / 32);
    cr_log_info("dead off %.3f on %.3f", off, on);
    cr_assert(off >= 0.6, "the poor init must leave most latents dead without AuxK (%.3f)", off);
    cr_assert(on <= off - 0.3, "AuxK: dead fraction %.3f vs %.3f without", on, off);
}

/* ---- a. g-SAE vs TopK on the important features ------------------------------------------- */

/* Mean over the important true features of the best cosine to any decoder row of the run. */
static double important_recovery(const char *run, const char *data, double *overall)
{
    char a[1600], b[1600];
    snprintf(a, sizeof a, "%s/final/sae.safetensors", run);
    snprintf(b, sizeof b, "%s/truth.safetensors", data);
    st_file fa, fb;
    sf_err err = {0};
    cr_assert_eq(st_read(a, &fa, &err), 0, "%s", err.msg);
    cr_assert_eq(st_read(b, &fb, &err), 0, "%s", err.msg);
    const st_tensor *wa = st_get(&fa, "W_dec"), *wb = st_get(&fb, "W_dec"),
                    *imp = st_get(&fb, "important");
    cr_assert(wa && wb && imp && imp->dtype == ST_I32);
    int F = (int)wb->shape[0], d = (int)wb->shape[1], ni = (int)imp->shape[0];
    cr_assert(ni > 0);
    float *best = malloc(sizeof(float) * F);
    compare_result r = compare_dicts_ex((const float *)wa->data, (int)wa->shape[0],
                                        (const float *)wb->data, F, d, NULL, best);
    double s = 0;
    for (int i = 0; i < ni; i++)
        s += best[((const int32_t *)imp->data)[i]];
    *overall = r.mean_ba;
    free(best);
    st_file_free(&fa);
    st_file_free(&fb);
    return s / ni;
}

/* Same data, n, k, lr, tokens and seed; only the ranking differs. The important features are
 * small (0.3x) and rare, so they barely move the reconstruction loss and TopK mostly gives
 * their slots to large features; g-SAE's gate |W_dec g| is large exactly along them. */
Test(rules, gsae_beats_topk_on_important_features, .timeout = 300)
{
    const char *dir = tcli_tmpdir(3);
    char data[600], run[2][700], cfg[700], text[4096];
    snprintf(data, sizeof data, "%s/data", dir);
    cr_assert_eq(tcli_run(out, sizeof out, "%s synth --out %s --d 64 --features 512 --tokens 262144 "
                          "--k 8 --gradients --seed 3", tcli_bin(), data), 0, "%s", out);
    const char *archs[2] = {"topk", "gsae"};
    double imp[2], all[2];
    for (int ai = 0; ai < 2; ai++) {
        snprintf(run[ai], sizeof run[ai], "%s/%s", dir, archs[ai]);
        snprintf(cfg, sizeof cfg, "%s/%s.yaml", dir, archs[ai]);
        snprintf(text, sizeof text,
                 "seed: 1\nout_dir: %s\nbackend: cpu\ndata:\n  path: %s\n  shuffle_buffer: 65536\n"
                 "sae:\n  arch: %s\n  n_latents: 1024\n  k: 8\n  gsae_beta: 4\n  dead_tokens: 200000\n"
                 "train:\n  batch_tokens: 1024\n  total_tokens: 2097152\n  lr: 0.004\n"
                 "  schedule: linear\n  decay_start: 0.6\n  threads: 2\n"
                 "checkpoint:\n  every_steps: 0\n  keep: 1\nlog:\n  every_steps: 100\n  progress: off\n",
                 run[ai], data, archs[ai]);
        tcli_write(cfg, text);
        cr_assert_eq(tcli_run(out, sizeof out, "%s train %s", tcli_bin(), cfg), 0, "%s", out);
        imp[ai] = important_recovery(run[ai], data, &all[ai]);
    }
    cr_log_info("important-feature mean best cosine: topk %.3f, gsae %.3f (all: %.3f, %.3f)",
                imp[0], imp[1], all[0], all[1]);
    cr_assert(imp[1] >= imp[0] + 0.1,
              "g-SAE %.3f vs TopK %.3f mean best cosine on the important features", imp[1], imp[0]);
    cr_assert(all[1] >= all[0] - 0.03, "g-SAE must not lose the rest: all %.3f vs %.3f", all[1], all[0]);
    tcli_run(NULL, 0, "rm -rf %s", dir);
}
