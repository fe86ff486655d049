/* The trainer's data side and members: shards, each member's backend, evaluation and outputs (the
 * loop over the steps is in trainer_loop.c). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../data/stream.h"
#include "../kernels/sf_check.h"
#include "backend_open.h"
#include "dist_mpi.h"
#include "export.h"
#include "fsutil.h"
#include "memcheck.h"
#include "rng.h"
#include "sae_init.h"
#include "sched.h"
#include "stats.h"
#include "slurm_env.h"
#include "trainer.h"

#define NORM_BATCHES 100 /* batches used to estimate the expected_norm input scale */

_Static_assert((int)SAE_INPUT_F16 == (int)SHARD_F16 && (int)SAE_INPUT_BF16 == (int)SHARD_BF16,
               "a shard dtype is a backend input format as it stands");

double trainer_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
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

/* The stream every member shares: only data keys, the seed and B enter it (sweep.c refuses
 * varying those), so member 0's config speaks for all. ranked: this rank's rows of each
 * global batch (training, evaluation); else whole batches (the one-time set-up reads). */
shard_stream_cfg trainer_stream_cfg(const trainer *t, int loop, int64_t begin, int64_t end,
                                   float scale, int want_g, int ranked)
{
    const sf_config *c = &t->m[0].cfg;
    shard_stream_cfg sc;
    memset(&sc, 0, sizeof sc);
    sc.seed = (uint64_t)c->seed;
    sc.row_begin = begin;
    sc.row_end = end;
    sc.window = loop ? c->data.shuffle_buffer : 0;
    sc.want_gradients = want_g;
    sc.skip_bad_rows = c->data.bad_rows == SF_BAD_ROWS_SKIP;
    sc.loop = loop;
    sc.scale = scale;
    sc.world = 1;
    sc.prefetch_batches = 4;
    sc.batch = t->B;
    if (ranked && sae_dist_on(t->dist)) {
        sc.rank = t->dist->rank;
        sc.world = t->dist->world;
        sc.batch = t->Bl;
    }
    return sc;
}

int trainer_open_data(trainer *t, const sf_config *c, int need_g, sf_err *err)
{
    int rc;
    if ((rc = shard_set_open(&t->set, c->data.path, need_g, err)))
        return rc;
    t->set_open = 1;
    t->want_g = need_g;
    t->d = t->set.d;
    t->B = c->train.batch_tokens;
    t->train_rows = t->set.rows;
    if (c->data.eval_path[0]) {
        if ((rc = shard_set_open(&t->eval_set, c->data.eval_path, need_g, err)))
            return rc;
        t->have_eval = t->eval_separate = 1;
        if (t->eval_set.d != t->d)
            return sf_fail(err, SF_EINPUT,
                           "%s: data.eval_path has width d=%d but data.path has d=%d; use shards "
                           "from the same hook",
                           c->source, t->eval_set.d, t->d);
    } else if (c->data.eval_tokens > 0) {
        if (c->data.eval_tokens >= t->set.rows)
            return sf_fail(err, SF_EINPUT,
                           "%s: data.eval_tokens (%lld) must be smaller than the %lld rows in "
                           "data.path; lower it",
                           c->source, (long long)c->data.eval_tokens, (long long)t->set.rows);
        t->train_rows = t->set.rows - c->data.eval_tokens;
        t->have_eval = 1;
    }
    if (t->B <= 0 || t->train_rows < t->B)
        return sf_fail(err, SF_EINPUT,
                       "%s: train.batch_tokens (%d) exceeds the %lld training rows in %s; lower it "
                       "or add data",
                       c->source, t->B, (long long)t->train_rows, c->data.path);
    t->total_steps = c->train.total_tokens / t->B;
    t->Bl = t->B;
    if (sae_dist_on(t->dist)) {
        int w = t->dist->world;
        if (t->B % w)
            return sf_fail(err, SF_EINPUT,
                           "%s: train.batch_tokens (%d) is the global batch and must split evenly "
                           "over the %d ranks; use a multiple of %d (e.g. %d)",
                           c->source, t->B, w, w, (t->B / w + 1) * w);
        t->Bl = t->B / w;
    }
    return SF_OK;
}

int trainer_add_member(trainer *t, const sf_config *c, const char *name, int resume, sf_err *err)
{
    int rc;
    if ((rc = config_validate(c, t->d, err)))
        return rc;
    tr_member *nm = realloc(t->m, sizeof *nm * (size_t)(t->n_members + 1));
    if (!nm)
        return sf_fail(err, SF_EINPUT, "out of memory adding sweep member %s", name);
    t->m = nm;
    tr_member *m = &t->m[t->n_members];
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    config_resolve(&m->cfg, t->d);
    snprintf(m->name, sizeof m->name, "%s", name);
    m->hp = make_hparams(&m->cfg, t->d, (int)m->cfg.sae.n_latents);
    t->n_members++;

    char probe[SF_PATH_MAX + 32];
    snprintf(probe, sizeof probe, "%s/checkpoints", m->cfg.out_dir);
    int has_ckpt = fs_is_dir(probe);
    snprintf(probe, sizeof probe, "%s/metrics.jsonl", m->cfg.out_dir);
    if (!resume && (has_ckpt || fs_exists(probe)))
        return sf_fail(err, SF_EINPUT,
                       "%s: out_dir %s already holds a run; pass --resume to continue it or choose "
                       "another out_dir",
                       c->source, m->cfg.out_dir);
    return SF_OK;
}

/* Host copies of the params and state the trainer keeps per member (checkpoints, outputs). */
static int64_t host_copy_bytes(int64_t d, int64_t n)
{
    int64_t params = 2 * n * d + n + d;
    int64_t state = 4 * n * d + 2 * n + 2 * d;
    return 4 * (params + state) + n * (8 * 4 + 4 + 8);
}

int64_t trainer_host_bytes(const trainer *t, int64_t *device)
{
    /* the shared batch (x, g) plus the stream's read-ahead of each */
    int64_t host = 2LL * (1 + 4 + 1 + 1) * t->B * t->d * 4; /* + the eval batch */
    int64_t dev = 0;
    for (int i = 0; i < t->n_members; i++) {
        const tr_member *m = &t->m[i];
        host += host_copy_bytes(t->d, m->hp.n);
        if (m->cfg.backend == SF_BACKEND_CUDA)
            dev += memcheck_cuda_bytes(&m->hp, t->Bl);
        else
            host += backend_cpu_bytes(&m->hp, t->Bl);
        /* data parallel: the CPU backend's dense gradient buffer (kernels/dist_cpu.h) */
        if (sae_dist_on(t->dist) && m->cfg.backend != SF_BACKEND_CUDA)
            host += 4 * (2LL * m->hp.n * t->d + 2LL * m->hp.n + t->d);
    }
    if (device)
        *device = dev;
    return host;
}

int trainer_check_memory(const trainer *t, sf_err *err)
{
    int64_t dev = 0, need = trainer_host_bytes(t, &dev);
    char src[128];
    int64_t avail = memcheck_host_available(src, sizeof src);
    const char *what = t->n_members > 1 ? "this sweep" : "this run";
    if (avail >= 0 && need > avail)
        return sf_fail(err, SF_EINPUT,
                       "%s: %s needs %.2f GiB of host memory (%d member(s): parameters, Adam "
                       "state, activation buffers) but %.2f GiB are available (%s); lower "
                       "sae.n_latents/expansion or train.batch_tokens, or train fewer members",
                       t->m[0].cfg.source, what, need / 1073741824.0, t->n_members,
                       avail / 1073741824.0, src);
    int64_t davail = dev > 0 ? memcheck_cuda_available() : -1;
    if (davail >= 0 && dev > davail)
        return sf_fail(err, SF_EINPUT,
                       "%s: %s needs %.2f GiB of GPU memory but %.2f GiB are free; lower "
                       "sae.n_latents/expansion or train.batch_tokens, or train fewer members",
                       t->m[0].cfg.source, what, dev / 1073741824.0, davail / 1073741824.0);
    return SF_OK;
}

/* c = sqrt(d) / mean |x| over the first NORM_BATCHES batches of the training order. */
static int estimate_scale(trainer *t, float *scale, sf_err *err)
{
    shard_stream_cfg sc = trainer_stream_cfg(t, 1, 0, t->train_rows, 1.0f, 0, 0);
    shard_stream *st;
    int rc = shard_stream_init(&st, &t->set, &sc, err);
    if (rc)
        return rc;
    double sum = 0;
    int64_t rows = 0;
    for (int b = 0; b < NORM_BATCHES && rows < t->train_rows; b++) {
        int got = shard_stream_next(st, t->x, NULL, err);
        if (got < 0) {
            shard_stream_free(st);
            return err->code ? err->code : SF_EINPUT;
        }
        for (int r = 0; r < got; r++) {
            double ss = 0;
            for (int j = 0; j < t->d; j++)
                ss += (double)t->x[(size_t)r * t->d + j] * t->x[(size_t)r * t->d + j];
            sum += sqrt(ss);
        }
        rows += got;
    }
    shard_stream_free(st);
    double mean = rows ? sum / rows : 0;
    *scale = mean > 0 ? (float)(sqrt((double)t->d) / mean) : 1.0f;
    return SF_OK;
}

int trainer_evaluate(trainer *t, tr_member *m, sae_metrics *acc, int k, sf_err *err)
{
    memset(acc, 0, sizeof *acc);
    const shard_set *es = t->eval_separate ? &t->eval_set : &t->set;
    int64_t begin = t->eval_separate ? 0 : t->train_rows;
    int64_t end = t->eval_separate ? t->eval_set.rows : t->set.rows;
    int want_g = es->has_gradients;
    shard_stream_cfg sc = trainer_stream_cfg(t, 0, begin, end, t->raw_x ? 1.0f : m->meta.input_scale,
                                     want_g, 1);
    shard_stream *st;
    int rc = shard_stream_init(&st, es, &sc, err);
    if (rc)
        return rc;
    for (;;) {
        int got = shard_stream_next(st, t->ex, want_g ? t->eg : NULL, err);
        if (got < 0) {
            shard_stream_free(st);
            return err->code ? err->code : SF_EINPUT;
        }
        /* every rank joins each global batch's collectives, even with an empty share */
        if (dist_max(t->dist, got) == 0)
            break;
        m->be->eval_batch(m->be, t->ex, want_g ? t->eg : NULL, got, k, acc);
    }
    shard_stream_free(st);
    acc->fvu = acc->fvu_den > 0 ? acc->fvu_num / acc->fvu_den : NAN;
    acc->l0 = acc->tokens ? acc->l0 / (double)acc->tokens : 0;
    acc->gw_err = acc->gw_den > 0 ? acc->gw_num / acc->gw_den : -1;
    return SF_OK;
}

/* Fresh members: the input scale and b_dec come from the data alone, so they are computed once
 * and given to every member; each member's init RNG starts from its own seed. */
static int init_fresh(trainer *t, sf_err *err)
{
    int rc;
    const sf_config *c0 = &t->m[0].cfg;
    float scale = 1.0f;
    if (c0->data.normalize == SF_NORMALIZE_EXPECTED_NORM && (rc = estimate_scale(t, &scale, err)))
        return rc;
    shard_stream_cfg sc0 = trainer_stream_cfg(t, 1, 0, t->train_rows, scale, 0, 0);
    shard_stream *s0;
    if ((rc = shard_stream_init(&s0, &t->set, &sc0, err)))
        return rc;
    int got = shard_stream_next(s0, t->x, NULL, err);
    shard_stream_free(s0);
    if (got < 0)
        return err->code ? err->code : SF_EINPUT;
    for (int i = 0; i < t->n_members; i++) {
        tr_member *m = &t->m[i];
        if (m->status != TR_LIVE || m->meta.step > 0)
            continue;
        sf_rng rng;
        rng_seed(&rng, (uint64_t)m->cfg.seed, 1);
        sae_init_params(&m->p, t->d, m->hp.n, config_init_scale(&m->cfg), &rng, t->x, got);
        memset(&m->meta, 0, sizeof m->meta);
        m->meta.input_scale = scale;
        memcpy(m->meta.rng, rng.s, sizeof rng.s);
        m->meta.d = t->d;
        m->meta.n = m->hp.n;
        snprintf(m->meta.arch, sizeof m->meta.arch, "%s", config_arch_name(m->cfg.sae.arch));
    }
    return SF_OK;
}

static int open_member(trainer *t, tr_member *m, int resumed, sf_err *err)
{
    char why[256] = "";
    int rc;
    int dp = sae_dist_on(t->dist);
    m->be = backend_open_on(&m->hp, t->Bl, (int)m->cfg.backend, m->cfg.train.threads,
                            backend_open_dist_device(t->dist), why, sizeof why);
    if (!m->be)
        return sf_fail(err, SF_EINPUT, "%s: backend: %s", m->cfg.source, why);
    if (dp && !m->be->set_dist)
        return sf_fail(err, SF_EINPUT, "%s: the %s backend of this build has no multi-rank path; "
                       "run one rank, or use backend: cpu", m->cfg.source, m->be->name);
    if (dp)
        m->be->set_dist(m->be, t->dist);
    /* The run dir is touched only now, after the first reads (bad rows there stop us early). */
    if (trainer_rank0(t)) {
        m->created_dir = !fs_exists(m->cfg.out_dir);
        if ((rc = fs_mkdirs(m->cfg.out_dir, err)))
            return rc;
        char path[SF_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/config.yaml", m->cfg.out_dir);
        if ((rc = config_write(&m->cfg, path, err)))
            return rc;
    }
    m->be->set_params(m->be, &m->p);
    m->be->set_state(m->be, &m->s);
    if (t->n_members == 1 && m->be->input_buffer) { /* a solo run reads straight into pinned buffers */
        free(t->x);
        free(t->g);
        t->x = m->be->input_buffer(m->be, 0);
        t->g = m->be->input_buffer(m->be, 1);
        t->lent = 1;
    }
    if (!trainer_rank0(t))
        return SF_OK;
    int live = m->cfg.log.progress == SF_PROGRESS_ON ||
               (m->cfg.log.progress == SF_PROGRESS_AUTO && isatty(2) && t->n_members == 1);
    if ((rc = metrics_open(&m->ml, m->cfg.out_dir, resumed ? m->meta.step - 1 : -1, live, err)))
        return rc;
    m->ml_open = 1;
    return SF_OK;
}

/* 16-bit shards: when every live member's backend takes the shard's dtype (backend.h,
 * set_input_format), batches go to the backends unscaled and each applies the input scale itself,
 * so the CUDA backend uploads 2 bytes a value; the results are the float path's bit for bit.
 * The float path scales every member's batch by the first live member's scale and evaluates with
 * each member's own: the shortcut is taken only where those agree. The one-time reads before the
 * backends exist (estimate_scale, init_fresh) keep the scaled stream. */
static void choose_input_format(trainer *t)
{
    t->raw_x = 0;
    if (t->set.dtype == SHARD_F32 || (t->eval_separate && t->eval_set.dtype != t->set.dtype))
        return;
    const tr_member *m0 = NULL;
    for (int i = 0; i < t->n_members; i++) {
        const tr_member *m = &t->m[i];
        if (m->status != TR_LIVE)
            continue;
        if (!m->be->set_input_format)
            return;
        if (!m0)
            m0 = m;
        if (memcmp(&m->meta.input_scale, &m0->meta.input_scale, sizeof(float)))
            return;
    }
    const float scale = m0 ? m0->meta.input_scale : 0.0f;
    if (!isfinite(scale) || scale == 0.0f) /* the stream reads those as 1; keep it doing so */
        return;
    for (int i = 0; i < t->n_members; i++)
        if (t->m[i].status == TR_LIVE)
            t->m[i].be->set_input_format(t->m[i].be, (sae_input_dtype)t->set.dtype, scale);
    t->raw_x = 1;
    if (trainer_rank0(t))
        fprintf(stderr, "saeforge: %s shards: batches go to the backend in %s and are scaled "
                "there (SF_UPLOAD=f32 sends floats)\n", shard_dtype_name(t->set.dtype),
                shard_dtype_name(t->set.dtype));
}

static int write_outputs(trainer *t, tr_member *m, sf_err *err)
{
    char dir[SF_PATH_MAX + 16];
    m->be->get_params(m->be, &m->p);
    m->be->get_state(m->be, &m->s);
    dist_combine_stats(t->dist, &m->s, m->hp.n);
    if (!trainer_rank0(t))
        return SF_OK;
    export_info info;
    memset(&info, 0, sizeof info);
    info.arch = m->cfg.sae.arch;
    info.d = t->d;
    info.n = m->hp.n;
    info.k = m->cfg.sae.k;
    info.input_scale = m->meta.input_scale;
    info.theta = m->s.theta;
    info.model = t->set.model;
    info.hook = t->set.hook;
    info.dataset_path = m->cfg.data.path;
    info.context_size = t->set.context_size;
    info.tokens_seen = m->meta.tokens_seen;
    info.fire_count = m->s.fire_count;
    snprintf(dir, sizeof dir, "%s/final", m->cfg.out_dir);
    int rc = export_saelens(dir, &info, &m->p, err);
    if (rc)
        return rc;
    snprintf(dir, sizeof dir, "%s/stats", m->cfg.out_dir);
    return stats_write(dir, &m->s, m->hp.n, m->meta.tokens_seen, m->cfg.sae.dead_tokens,
                       m->cfg.sae.arch == SAE_ARCH_GSAE, &m->ev, err);
}

static int finish_member(trainer *t, tr_member *m, sf_err *err)
{
    int rc;
    memset(&m->ev, 0, sizeof m->ev);
    m->ev.gw_err = -1;
    m->ev.fvu = m->mt.fvu;
    m->ev.l0 = m->mt.l0;
    if (t->have_eval) {
        if ((rc = trainer_evaluate(t, m, &m->ev, m->cfg.sae.k, err)))
            return rc;
        if (m->ml_open)
            metrics_eval_final(&m->ml, m->meta.step - 1, m->meta.tokens_seen, &m->ev);
    }
    if (m->ml_open)
        metrics_close(&m->ml);
    m->ml_open = 0;
    if ((rc = write_outputs(t, m, err)))
        return rc;
    m->dead = 0;
    for (int i = 0; i < m->hp.n; i++)
        m->dead += stats_latent_dead(&m->s, i, m->cfg.sae.dead_tokens);
    m->status = TR_DONE;
    return SF_OK;
}

int trainer_run(trainer *t, int resume, sf_err *err)
{
    int rc;
    size_t bd = (size_t)t->B * (size_t)t->d;
    t->x = malloc(sizeof(float) * bd);
    t->g = malloc(sizeof(float) * bd);
    /* eval batches get their own buffers: an eval between two members' steps must not
     * overwrite the training batch the next member is about to see */
    t->ex = t->have_eval ? malloc(sizeof(float) * bd) : NULL;
    t->eg = t->have_eval ? malloc(sizeof(float) * bd) : NULL;
    if (!t->x || !t->g || (t->have_eval && (!t->ex || !t->eg)))
        return sf_fail(err, SF_EINPUT, "cannot allocate the (%d, %d) batch buffers; lower "
                       "train.batch_tokens", t->B, t->d);
    for (int i = 0; i < t->n_members; i++) {
        tr_member *m = &t->m[i];
        if (!sae_params_try_alloc(&m->p, t->d, m->hp.n) || !sae_state_try_alloc(&m->s, t->d, m->hp.n))
            return sf_fail(err, SF_EINPUT,
                           "%s: cannot allocate the parameters of an n=%d, d=%d SAE (%.2f GiB); "
                           "lower sae.n_latents or sae.expansion",
                           m->cfg.source, m->hp.n, t->d,
                           host_copy_bytes(t->d, m->hp.n) / 1073741824.0);
        m->meta.input_scale = 1.0f;
    }
    int resumed = 0;
    if (trainer_rank0(t)) {
        if (resume && (rc = trainer_load_resume(t, &resumed, err)))
            return rc;
        if (!resumed && (rc = init_fresh(t, err)))
            return rc;
    }
    if (sae_dist_on(t->dist)) {
        trainer_share_start(t, &resumed);
        if (trainer_rank0(t))
            fprintf(stderr, "saeforge: data parallel over %d ranks: global batch %d, %d rows per rank\n",
                    t->dist->world, t->B, t->Bl);
    }
    int64_t start = -1;
    for (int i = 0; i < t->n_members; i++) {
        tr_member *m = &t->m[i];
        if (m->status != TR_LIVE)
            continue;
        if ((rc = open_member(t, m, resumed, err)))
            return rc;
        start = m->meta.step;
    }
    if (start >= 0)
        choose_input_format(t);
    if (start >= 0 && (rc = trainer_loop(t, start, err)))
        return rc;
    int diverged = 0;
    for (int i = 0; i < t->n_members; i++) {
        tr_member *m = &t->m[i];
        if (m->status == TR_LIVE && (rc = finish_member(t, m, err)))
            return rc;
        diverged += m->status == TR_DIVERGED;
    }
    if (!diverged)
        return SF_OK;
    if (t->n_members == 1)
        return sf_fail(err, SF_EFAIL, "%s", t->m[0].why);
    char list[700] = "";
    for (int i = 0; i < t->n_members; i++)
        if (t->m[i].status == TR_DIVERGED && strlen(list) + strlen(t->m[i].name) + 3 < sizeof list)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "",
                     t->m[i].name);
    return sf_fail(err, SF_EFAIL,
                   "%d of %d sweep members diverged (%s); the others finished; see each member's "
                   "metrics.jsonl, lower train.lr or set train.grad_clip for those",
                   diverged, t->n_members, list);
}

void trainer_cleanup_failed(trainer *t)
{
    if (!trainer_rank0(t))
        return;
    for (int i = 0; i < t->n_members; i++) {
        tr_member *m = &t->m[i];
        char ck[SF_PATH_MAX + 32];
        snprintf(ck, sizeof ck, "%s/checkpoints", m->cfg.out_dir);
        if (m->created_dir && !fs_is_dir(ck))
            fs_remove_tree(m->cfg.out_dir);
    }
}

void trainer_free(trainer *t)
{
    for (int i = 0; i < t->n_members; i++) {
        tr_member *m = &t->m[i];
        if (m->ml_open)
            metrics_close(&m->ml);
        if (m->be)
            m->be->free(m->be);
        if (m->p.W_enc)
            sae_params_free(&m->p);
        if (m->s.m_W_enc)
            sae_state_free(&m->s);
    }
    free(t->m);
    free(t->ex);
    free(t->eg);
    if (!t->lent) {
        free(t->x);
        free(t->g);
    }
    if (t->set_open)
        shard_set_free(&t->set);
    if (t->eval_separate)
        shard_set_free(&t->eval_set);
    memset(t, 0, sizeof *t);
}
