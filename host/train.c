/* `saeforge train`: the training driver — config, shards, backend, loop, checkpoints, eval, outputs.
 *
 * One data stream feeds the SAE's backend; the loop only touches the backend through
 * kernels/backend.h, so several backends (a sweep) or several ranks can share this shape. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../data/shard.h"
#include "../data/stream.h"
#include "../kernels/backend.h"
#include "backend_open.h"
#include "ckpt.h"
#include "cmd.h"
#include "config.h"
#include "export.h"
#include "fsutil.h"
#include "metrics.h"
#include "rng.h"
#include "sae_init.h"
#include "sched.h"
#include "stats.h"

#define NORM_BATCHES 100 /* batches used to estimate the expected_norm input scale */

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { stop_requested = sig; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct train_ctx {
    sf_config cfg;
    shard_set set, eval_set;
    int have_eval;       /* eval rows exist (eval_path or eval_tokens) */
    int eval_separate;   /* eval rows come from eval_set rather than the tail of set */
    int64_t train_rows;  /* rows of set used for training */
    int d, n, B;
    sae_hparams hp;
    sae_backend *be;
    sae_params p;
    sae_state s;
    ckpt_meta meta;
    int64_t total_steps;
    float *x, *g;   /* owned batch buffers (NULL when the backend lends its own) */
    float *bx, *bg; /* the buffers batches are read into: x, g or the backend's */
    char run_dir[SF_PATH_MAX];
    int created_dir; /* run_dir did not exist before this run made it */
} train_ctx;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: saeforge train CONFIG [--set key=value]... [--resume]\n"
            "  Trains the SAE described by CONFIG (YAML; see docs/config.md).\n"
            "  --set key=value  override a config key (dotted, e.g. --set train.lr=1e-4)\n"
            "  --resume         continue from the newest complete checkpoint in out_dir\n");
}

static sae_hparams make_hparams(const sf_config *c, int d, int n)
{
    sae_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.arch = c->sae.arch;
    hp.d = d;
    hp.n = n;
    hp.k = c->sae.k;
    hp.gsae_beta = c->sae.gsae_beta;
    if (c->sae.arch == SAE_ARCH_MATRYOSHKA) {
        hp.n_prefixes = c->sae.n_prefixes;
        for (int i = 0; i < c->sae.n_prefixes; i++)
            hp.prefixes[i] = (int)c->sae.prefixes[i];
    } else {
        hp.n_prefixes = 1;
        hp.prefixes[0] = n;
    }
    hp.aux_k = c->sae.aux_k;
    hp.aux_alpha = c->sae.aux_alpha;
    hp.dead_tokens = c->sae.dead_tokens;
    hp.adam_b1 = 0.9f;
    hp.adam_b2 = 0.999f;
    hp.adam_eps = 1e-8f;
    hp.grad_clip = c->train.grad_clip;
    hp.precision = c->train.precision;
    hp.theta_ema = 0.99f;
    return hp;
}

static shard_stream_cfg stream_cfg(const train_ctx *t, int loop, int64_t begin, int64_t end,
                                   float scale, int want_g)
{
    shard_stream_cfg sc;
    memset(&sc, 0, sizeof sc);
    sc.seed = (uint64_t)t->cfg.seed;
    sc.row_begin = begin;
    sc.row_end = end;
    sc.window = loop ? t->cfg.data.shuffle_buffer : 0;
    sc.want_gradients = want_g;
    sc.skip_bad_rows = t->cfg.data.bad_rows == SF_BAD_ROWS_SKIP;
    sc.loop = loop;
    sc.scale = scale;
    sc.rank = 0;
    sc.world = 1;
    sc.prefetch_batches = 4;
    sc.batch = t->B;
    return sc;
}

/* Everything that can be wrong with the input is checked here, before the run dir is touched. */
static int setup(train_ctx *t, const char *cfg_path, const char **sets, int n_sets, int resume,
                 sf_err *err)
{
    int rc = config_load(cfg_path, sets, n_sets, &t->cfg, err);
    if (rc)
        return rc;
    sf_config *c = &t->cfg;
    int need_g = c->sae.arch == SAE_ARCH_GSAE;
    if ((rc = shard_set_open(&t->set, c->data.path, need_g, err)))
        return rc;
    t->d = t->set.d;
    if ((rc = config_validate(c, t->d, err)))
        return rc;
    config_resolve(c, t->d);
    t->n = (int)c->sae.n_latents;
    t->B = c->train.batch_tokens;
    t->train_rows = t->set.rows;
    if (c->data.eval_path[0]) {
        if ((rc = shard_set_open(&t->eval_set, c->data.eval_path, need_g, err)))
            return rc;
        if (t->eval_set.d != t->d)
            return sf_fail(err, SF_EINPUT,
                           "%s: data.eval_path has width d=%d but data.path has d=%d; use shards "
                           "from the same hook",
                           c->source, t->eval_set.d, t->d);
        t->have_eval = t->eval_separate = 1;
    } else if (c->data.eval_tokens > 0) {
        if (c->data.eval_tokens >= t->set.rows)
            return sf_fail(err, SF_EINPUT,
                           "%s: data.eval_tokens (%lld) must be smaller than the %lld rows in "
                           "data.path; lower it",
                           c->source, (long long)c->data.eval_tokens, (long long)t->set.rows);
        t->train_rows = t->set.rows - c->data.eval_tokens;
        t->have_eval = 1;
    }
    if (t->train_rows < t->B)
        return sf_fail(err, SF_EINPUT,
                       "%s: train.batch_tokens (%d) exceeds the %lld training rows in %s; lower it "
                       "or add data",
                       c->source, t->B, (long long)t->train_rows, c->data.path);
    t->total_steps = c->train.total_tokens / t->B;
    snprintf(t->run_dir, sizeof t->run_dir, "%s", c->out_dir);

    char probe[SF_PATH_MAX + 32];
    snprintf(probe, sizeof probe, "%s/checkpoints", t->run_dir);
    int has_ckpt = fs_is_dir(probe);
    snprintf(probe, sizeof probe, "%s/metrics.jsonl", t->run_dir);
    if (!resume && (has_ckpt || fs_exists(probe)))
        return sf_fail(err, SF_EINPUT,
                       "%s: out_dir %s already holds a run; pass --resume to continue it or choose "
                       "another out_dir",
                       c->source, t->run_dir);
    t->hp = make_hparams(c, t->d, t->n);
    return SF_OK;
}

/* c = sqrt(d) / mean |x| over the first NORM_BATCHES batches of the training order. */
static int estimate_scale(train_ctx *t, float *scale, sf_err *err)
{
    shard_stream_cfg sc = stream_cfg(t, 1, 0, t->train_rows, 1.0f, 0);
    shard_stream *st;
    int rc = shard_stream_init(&st, &t->set, &sc, err);
    if (rc)
        return rc;
    double sum = 0;
    int64_t rows = 0;
    for (int b = 0; b < NORM_BATCHES && rows < t->train_rows; b++) {
        int got = shard_stream_next(st, t->bx, NULL, err);
        if (got < 0) {
            shard_stream_free(st);
            return err->code ? err->code : SF_EINPUT;
        }
        for (int r = 0; r < got; r++) {
            double ss = 0;
            for (int j = 0; j < t->d; j++)
                ss += (double)t->bx[(size_t)r * t->d + j] * t->bx[(size_t)r * t->d + j];
            sum += sqrt(ss);
        }
        rows += got;
    }
    shard_stream_free(st);
    double mean = rows ? sum / rows : 0;
    *scale = mean > 0 ? (float)(sqrt((double)t->d) / mean) : 1.0f;
    return SF_OK;
}

static int evaluate(train_ctx *t, sae_metrics *acc, int k, sf_err *err)
{
    memset(acc, 0, sizeof *acc);
    const shard_set *es = t->eval_separate ? &t->eval_set : &t->set;
    int64_t begin = t->eval_separate ? 0 : t->train_rows;
    int64_t end = t->eval_separate ? t->eval_set.rows : t->set.rows;
    int want_g = es->has_gradients;
    shard_stream_cfg sc = stream_cfg(t, 0, begin, end, t->meta.input_scale, want_g);
    shard_stream *st;
    int rc = shard_stream_init(&st, es, &sc, err);
    if (rc)
        return rc;
    for (;;) {
        int got = shard_stream_next(st, t->bx, want_g ? t->bg : NULL, err);
        if (got < 0) {
            shard_stream_free(st);
            return err->code ? err->code : SF_EINPUT;
        }
        if (got == 0)
            break;
        t->be->eval_batch(t->be, t->bx, want_g ? t->bg : NULL, got, k, acc);
    }
    shard_stream_free(st);
    acc->fvu = acc->fvu_den > 0 ? acc->fvu_num / acc->fvu_den : NAN;
    acc->l0 = acc->tokens ? acc->l0 / (double)acc->tokens : 0;
    acc->gw_err = acc->gw_den > 0 ? acc->gw_num / acc->gw_den : -1;
    return SF_OK;
}

/* Any checkpoints/step_* entry at all (complete or not). */
static int has_step_dirs(const char *run_dir)
{
    char path[SF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/checkpoints", run_dir);
    DIR *dir = opendir(path);
    if (!dir)
        return 0;
    struct dirent *e;
    int found = 0;
    while ((e = readdir(dir)))
        found |= !strncmp(e->d_name, "step_", 5);
    closedir(dir);
    return found;
}

static int save_checkpoint(train_ctx *t, sf_err *err)
{
    t->be->get_params(t->be, &t->p);
    t->be->get_state(t->be, &t->s);
    return ckpt_save(t->run_dir, &t->p, &t->s, &t->meta, t->cfg.checkpoint.keep, err);
}

static int write_outputs(train_ctx *t, const sae_metrics *ev, sf_err *err)
{
    char dir[SF_PATH_MAX + 16];
    t->be->get_params(t->be, &t->p);
    t->be->get_state(t->be, &t->s);
    export_info info;
    memset(&info, 0, sizeof info);
    info.arch = t->cfg.sae.arch;
    info.d = t->d;
    info.n = t->n;
    info.k = t->cfg.sae.k;
    info.input_scale = t->meta.input_scale;
    info.theta = t->s.theta;
    info.model = t->set.model;
    info.hook = t->set.hook;
    info.dataset_path = t->cfg.data.path;
    info.context_size = t->set.context_size;
    info.tokens_seen = t->meta.tokens_seen;
    info.fire_count = t->s.fire_count;
    snprintf(dir, sizeof dir, "%s/final", t->run_dir);
    int rc = export_saelens(dir, &info, &t->p, err);
    if (rc)
        return rc;
    snprintf(dir, sizeof dir, "%s/stats", t->run_dir);
    return stats_write(dir, &t->s, t->n, t->meta.tokens_seen, t->cfg.sae.dead_tokens,
                       t->cfg.sae.arch == SAE_ARCH_GSAE, ev, err);
}

static int run(train_ctx *t, int resume, sf_err *err)
{
    sf_config *c = &t->cfg;
    int rc;
    char why[256] = "";
    t->x = malloc(sizeof(float) * (size_t)t->B * t->d);
    t->g = malloc(sizeof(float) * (size_t)t->B * t->d);
    sae_params_alloc(&t->p, t->d, t->n);
    sae_state_alloc(&t->s, t->d, t->n);
    memset(&t->meta, 0, sizeof t->meta);
    t->meta.input_scale = 1.0f;

    /* Resume point (validated before anything is written). */
    char ck[SF_PATH_MAX + 64];
    int resumed = 0;
    if (resume) {
        rc = ckpt_find_latest(t->run_dir, ck, sizeof ck, err);
        if (rc < 0)
            return -rc;
        if (rc == 1) {
            t->meta.d = t->d;
            t->meta.n = t->n;
            snprintf(t->meta.arch, sizeof t->meta.arch, "%s", config_arch_name(c->sae.arch));
            if ((rc = ckpt_load(ck, &t->p, &t->s, &t->meta, err)))
                return rc;
            resumed = 1;
            fprintf(stderr, "saeforge: resuming from %s (step %lld)\n", ck,
                    (long long)t->meta.step);
        } else {
            /* Nothing usable (never checkpointed, killed early, or every checkpoint damaged):
             * a requeued job must not need a person, so the run starts over from step 0. */
            fprintf(stderr, "saeforge: no complete checkpoint in %s; starting the run from the "
                            "beginning\n", t->run_dir);
        }
    }

    t->be = backend_open(&t->hp, t->B, (int)c->backend, c->train.threads, why, sizeof why);
    if (!t->be)
        return sf_fail(err, SF_EINPUT, "%s: backend: %s", c->source, why);

    if (t->be->input_buffer) { /* read batches straight into the backend's (pinned) buffers */
        free(t->x);
        free(t->g);
        t->x = t->g = NULL;
        t->bx = t->be->input_buffer(t->be, 0);
        t->bg = t->be->input_buffer(t->be, 1);
    } else {
        t->bx = t->x;
        t->bg = t->g;
    }

    int want_g = c->sae.arch == SAE_ARCH_GSAE;
    if (!resumed) {
        if (c->data.normalize == SF_NORMALIZE_EXPECTED_NORM &&
            (rc = estimate_scale(t, &t->meta.input_scale, err)))
            return rc;
        sf_rng rng;
        rng_seed(&rng, (uint64_t)c->seed, 1);
        /* b_dec starts at the mean of the first training batch. */
        shard_stream_cfg sc0 = stream_cfg(t, 1, 0, t->train_rows, t->meta.input_scale, 0);
        shard_stream *s0;
        if ((rc = shard_stream_init(&s0, &t->set, &sc0, err)))
            return rc;
        int got = shard_stream_next(s0, t->bx, NULL, err);
        shard_stream_free(s0);
        if (got < 0)
            return err->code ? err->code : SF_EINPUT;
        sae_init_params(&t->p, t->d, t->n, &rng, t->bx, got);
        memcpy(t->meta.rng, rng.s, sizeof rng.s);
        t->meta.d = t->d;
        t->meta.n = t->n;
        snprintf(t->meta.arch, sizeof t->meta.arch, "%s", config_arch_name(c->sae.arch));
    }
    /* The run dir is touched only now, after the first reads (bad rows there stop us early);
     * a dir created here is removed again if bad input stops the run before a checkpoint. */
    t->created_dir = !fs_exists(t->run_dir);
    if ((rc = fs_mkdirs(t->run_dir, err)))
        return rc;
    char path[SF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/config.yaml", t->run_dir);
    if ((rc = config_write(c, path, err)))
        return rc;
    t->be->set_params(t->be, &t->p);
    t->be->set_state(t->be, &t->s);

    shard_stream_cfg sc = stream_cfg(t, 1, 0, t->train_rows, t->meta.input_scale, want_g);
    sc.start_epoch = t->meta.data_epoch;
    sc.start_position = t->meta.data_position;
    shard_stream *st;
    if ((rc = shard_stream_init(&st, &t->set, &sc, err)))
        return rc;

    int live = c->log.progress == SF_PROGRESS_ON ||
               (c->log.progress == SF_PROGRESS_AUTO && isatty(2));
    metrics_log ml;
    if ((rc = metrics_open(&ml, t->run_dir, resumed ? t->meta.step - 1 : -1, live, err))) {
        shard_stream_free(st);
        return rc;
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    double t0 = now_s() - t->meta.elapsed_s, t_log = now_s();
    int64_t tok_log = t->meta.tokens_seen;
    sae_metrics mt;
    memset(&mt, 0, sizeof mt);
    for (int64_t step = t->meta.step; step < t->total_steps; step++) {
        int got = shard_stream_next(st, t->bx, want_g ? t->bg : NULL, err);
        if (got <= 0) {
            rc = got < 0 ? (err->code ? err->code : SF_EINPUT)
                         : sf_fail(err, SF_EFAIL, "data stream ended unexpectedly at step %lld",
                                   (long long)step);
            break;
        }
        float lr = sched_lr(c, step, t->total_steps);
        int k = sched_k(c, step);
        t->be->train_step(t->be, t->bx, want_g ? t->bg : NULL, got, k, lr, step, &mt);
        if (!isfinite(mt.loss)) {
            rc = sf_fail(err, SF_EFAIL,
                         "training diverged at step %lld (loss is %g); lower train.lr or set "
                         "train.grad_clip, then --resume from the last checkpoint",
                         (long long)step, mt.loss);
            break;
        }
        t->meta.step = step + 1;
        t->meta.tokens_seen += got;
        shard_stream_position(st, &t->meta.data_epoch, &t->meta.data_position);
        t->meta.skipped_rows = shard_stream_skipped(st);
        t->meta.elapsed_s = now_s() - t0;

        int last = t->meta.step == t->total_steps;
        if (step % c->log.every_steps == 0 || last) {
            double now = now_s();
            double tps = now > t_log ? (double)(t->meta.tokens_seen - tok_log) / (now - t_log) : 0;
            metrics_train(&ml, step, t->meta.tokens_seen, lr, k, &mt, t->meta.elapsed_s, tps);
            double eta = tps > 0 ? (double)(t->total_steps - t->meta.step) * t->B / tps : -1;
            metrics_progress(&ml, t->meta.step, t->total_steps, &mt, tps, eta);
            t_log = now;
            tok_log = t->meta.tokens_seen;
        }
        if (t->have_eval && c->train.eval_every_steps > 0 && !last &&
            t->meta.step % c->train.eval_every_steps == 0) {
            sae_metrics ev;
            if ((rc = evaluate(t, &ev, k, err)))
                break;
            metrics_eval(&ml, step, t->meta.tokens_seen, &ev);
        }
        int every = c->checkpoint.every_steps;
        if ((every > 0 && t->meta.step % every == 0) || last || stop_requested) {
            if ((rc = save_checkpoint(t, err)))
                break;
        }
        if (stop_requested && !last) {
            rc = sf_fail(err, SF_EFAIL,
                         "stopped by signal %d at step %lld; checkpoint written; continue with "
                         "`saeforge train CONFIG --resume`",
                         (int)stop_requested, (long long)t->meta.step);
            break;
        }
    }
    shard_stream_free(st);
    if (rc) {
        metrics_close(&ml);
        return rc;
    }

    sae_metrics ev;
    memset(&ev, 0, sizeof ev);
    ev.gw_err = -1;
    ev.fvu = mt.fvu;
    ev.l0 = mt.l0;
    if (t->have_eval) {
        if ((rc = evaluate(t, &ev, c->sae.k, err))) {
            metrics_close(&ml);
            return rc;
        }
        metrics_eval(&ml, t->meta.step - 1, t->meta.tokens_seen, &ev);
    }
    metrics_close(&ml);
    if ((rc = write_outputs(t, &ev, err)))
        return rc;
    int dead = 0;
    for (int i = 0; i < t->n; i++)
        dead += stats_latent_dead(&t->s, i, c->sae.dead_tokens);
    printf("trained %s SAE: d=%d n=%d k=%d, %lld steps, %lld tokens in %.1f s (%.0f tokens/s)\n",
           config_arch_name(c->sae.arch), t->d, t->n, c->sae.k, (long long)t->meta.step,
           (long long)t->meta.tokens_seen, t->meta.elapsed_s,
           t->meta.elapsed_s > 0 ? t->meta.tokens_seen / t->meta.elapsed_s : 0);
    printf("%s: FVU %.4f  L0 %.2f  dead %.2f%%", t->have_eval ? "eval" : "last batch", ev.fvu,
           ev.l0, 100.0 * dead / t->n);
    if (ev.gw_err >= 0)
        printf("  gradient-weighted error %.4f", ev.gw_err);
    printf("\n");
    if (t->meta.skipped_rows > 0)
        printf("skipped %lld rows with NaN/Inf values (data.bad_rows: skip)\n",
               (long long)t->meta.skipped_rows);
    printf("results: %s/final (SAELens layout), %s/stats, %s/metrics.jsonl\n", t->run_dir,
           t->run_dir, t->run_dir);
    return SF_OK;
}

static void ctx_free(train_ctx *t)
{
    if (t->be)
        t->be->free(t->be);
    if (t->p.W_enc)
        sae_params_free(&t->p);
    if (t->s.m_W_enc)
        sae_state_free(&t->s);
    free(t->x);
    free(t->g);
    shard_set_free(&t->set);
    if (t->eval_separate)
        shard_set_free(&t->eval_set);
}

int cmd_train(int argc, char **argv)
{
    const char *cfg_path = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0, resume = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            free(sets);
            return 0;
        } else if (!strcmp(argv[i], "--resume")) {
            resume = 1;
        } else if (!strcmp(argv[i], "--set")) {
            if (i + 1 >= argc) {
                free(sets);
                return cli_error(2, "train: --set needs key=value (e.g. --set train.lr=1e-4)");
            }
            sets[n_sets++] = argv[++i];
        } else if (!strncmp(argv[i], "--set=", 6)) {
            sets[n_sets++] = argv[i] + 6;
        } else if (argv[i][0] == '-') {
            free(sets);
            return cli_error(2, "train: unknown option '%s'; see `saeforge train --help`", argv[i]);
        } else if (!cfg_path) {
            cfg_path = argv[i];
        } else {
            free(sets);
            return cli_error(2, "train: unexpected argument '%s'; one CONFIG file is expected",
                             argv[i]);
        }
    }
    if (!cfg_path) {
        free(sets);
        usage(stderr);
        return 2;
    }
    train_ctx *t = calloc(1, sizeof *t);
    sf_err err = {0};
    int rc = setup(t, cfg_path, sets, n_sets, resume, &err);
    if (!rc)
        rc = run(t, resume, &err);
    if (rc)
        cli_error(rc == SF_EINPUT ? 2 : 1, "%s", err.msg);
    if (rc == SF_EINPUT && t->created_dir && !has_step_dirs(t->run_dir))
        fs_remove_tree(t->run_dir); /* nothing worth keeping; lets the fixed config run again */
    ctx_free(t);
    free(t);
    free(sets);
    return rc == SF_OK ? 0 : (rc == SF_EINPUT ? 2 : 1);
}
