/* The training loop: each batch read once and handed to every live member's backend, step t
 * submitted while step t-1's metrics are collected, checkpoints and evals on their steps, and a
 * signal stop that saves first. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "../data/stream.h"
#include "../kernels/sf_check.h"
#include "dist_mpi.h"
#include "sched.h"
#include "slurm_env.h"
#include "trainer.h"

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { stop_requested = sig; }

static void member_diverged(const trainer *t, tr_member *m, int64_t step)
{
    m->status = TR_DIVERGED;
    snprintf(m->why, sizeof m->why,
             "training diverged at step %lld (loss is %g); lower train.lr or set train.grad_clip, "
             "then --resume from the last checkpoint",
             (long long)step, m->mt.loss);
    if (m->name[0] && trainer_rank0(t))
        fprintf(stderr, "saeforge: member %s stopped: %s\n", m->name, m->why);
    if (m->ml_open)
        metrics_close(&m->ml);
    m->ml_open = 0;
}

/* Whether the member evaluates after step `step` (0-based). */
static int eval_due(const trainer *t, const tr_member *m, int64_t step)
{
    const int64_t every = m->cfg.train.eval_every_steps;
    return t->have_eval && every > 0 && step + 1 < t->total_steps && (step + 1) % every == 0;
}

/* One member's step on the shared batch, queued on its backend (or run, without submit_step). */
static void member_submit(trainer *t, tr_member *m, int64_t step, int got)
{
    const sf_config *c = &m->cfg;
    const float *g = c->sae.arch == SAE_ARCH_GSAE ? t->g : NULL;
    SF_CHECK(m->n_pend < 2);
    tr_pending *p = &m->pend[m->n_pend++];
    p->step = step;
    p->lr = sched_lr(c, step, t->total_steps);
    p->k = sched_k(c, step);
    if (m->be->submit_step)
        m->be->submit_step(m->be, t->x, g, got, p->k, p->lr, step);
    else
        m->be->train_step(m->be, t->x, g, got, p->k, p->lr, step, &p->m);
}

/* The oldest submitted step's metrics: divergence, its log line, periodic eval. */
static int member_collect(trainer *t, tr_member *m, double t0, sf_err *err)
{
    const sf_config *c = &m->cfg;
    const int64_t step = m->pend[0].step;
    const float lr = m->pend[0].lr;
    const int k = m->pend[0].k;
    if (m->be->collect_step)
        SF_CHECK(m->be->collect_step(m->be, &m->mt) == 1);
    else
        m->mt = m->pend[0].m;
    m->pend[0] = m->pend[1];
    m->n_pend--;
    if (m->status != TR_LIVE) /* a later step of a member that diverged: dropped */
        return SF_OK;
    if (!isfinite(m->mt.loss)) {
        member_diverged(t, m, step);
        return SF_OK;
    }
    m->meta.step = step + 1;
    m->meta.tokens_seen += m->mt.tokens; /* the global batch's rows */
    m->meta.elapsed_s = trainer_now() - t0;
    int last = m->meta.step == t->total_steps;
    if ((step % c->log.every_steps == 0 || last) && m->ml_open) {
        double now = trainer_now();
        double tps = now > m->t_log ? (double)(m->meta.tokens_seen - m->tok_log) / (now - m->t_log) : 0;
        metrics_train(&m->ml, step, m->meta.tokens_seen, lr, k, &m->mt, m->meta.elapsed_s, tps);
        if (t->n_members == 1) {
            double eta = tps > 0 ? (double)(t->total_steps - m->meta.step) * t->B / tps : -1;
            metrics_progress(&m->ml, m->meta.step, t->total_steps, &m->mt, tps, eta);
        }
        m->t_log = now;
        m->tok_log = m->meta.tokens_seen;
    }
    if (eval_due(t, m, step)) {
        SF_CHECK(m->n_pend == 0); /* the eval must see this step's parameters */
        sae_metrics ev;
        int rc = trainer_evaluate(t, m, &ev, k, err);
        if (rc)
            return rc;
        if (m->ml_open)
            metrics_eval(&m->ml, step, m->meta.tokens_seen, &ev);
    }
    return SF_OK;
}

/* Collects every submitted step of every member (before a save, an eval or the end). */
static int collect_all(trainer *t, double t0, sf_err *err)
{
    int rc = SF_OK;
    for (int i = 0; i < t->n_members && !rc; i++)
        while (t->m[i].n_pend > 0 && !rc)
            rc = member_collect(t, &t->m[i], t0, err);
    return rc;
}

static int live_count(const trainer *t)
{
    int n = 0;
    for (int i = 0; i < t->n_members; i++)
        n += t->m[i].status == TR_LIVE;
    return n;
}

int trainer_loop(trainer *t, int64_t start, sf_err *err)
{
    tr_member *m0 = NULL;
    for (int i = 0; i < t->n_members && !m0; i++)
        if (t->m[i].status == TR_LIVE)
            m0 = &t->m[i];
    shard_stream_cfg sc = trainer_stream_cfg(t, 1, 0, t->train_rows, t->raw_x ? 1.0f : m0->meta.input_scale,
                                     t->want_g, 1);
    sc.start_epoch = m0->meta.data_epoch;
    sc.start_position = m0->meta.data_position;
    shard_stream *st;
    int rc = shard_stream_init(&st, &t->set, &sc, err);
    if (rc)
        return rc;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGUSR1, on_signal); /* Slurm's --signal=B:USR1@grace warning before preemption */
    double t0 = trainer_now() - m0->meta.elapsed_s;
    for (int i = 0; i < t->n_members; i++) {
        t->m[i].t_log = trainer_now();
        t->m[i].tok_log = t->m[i].meta.tokens_seen;
    }
    int every = m0->cfg.checkpoint.every_steps;
    for (int64_t step = start; step < t->total_steps && live_count(t) > 0; step++) {
        if (t->lent) { /* the backend's pinned buffers alternate: the next step's */
            t->x = t->m[0].be->input_buffer(t->m[0].be, 0);
            t->g = t->m[0].be->input_buffer(t->m[0].be, 1);
        }
        int got = shard_stream_next(st, t->x, t->want_g ? t->g : NULL, err);
        if (got <= 0) {
            rc = got < 0 ? (err->code ? err->code : SF_EINPUT)
                         : sf_fail(err, SF_EFAIL, "data stream ended unexpectedly at step %lld",
                                   (long long)step);
            break;
        }
        int64_t ep, pos;
        shard_stream_position(st, &ep, &pos);
        for (int i = 0; i < t->n_members && !rc; i++) {
            tr_member *m = &t->m[i];
            if (m->status != TR_LIVE)
                continue;
            member_submit(t, m, step, got);
            /* step t-1's metrics while step t computes; all of them before an eval */
            while (!rc && (m->n_pend > 1 || (m->n_pend > 0 && eval_due(t, m, step))))
                rc = member_collect(t, m, t0, err);
            m->meta.data_epoch = ep;
            m->meta.data_position = pos;
            m->meta.skipped_rows = shard_stream_skipped(st);
        }
        if (rc)
            break;
        int last = step + 1 == t->total_steps;
        /* a signal may reach one rank only (or each at another step): all stop at one step */
        int stop = sae_dist_on(t->dist) ? (int)dist_max(t->dist, stop_requested) : stop_requested;
        int save = (every > 0 && (step + 1) % every == 0) || last || stop;
        if (save && (rc = collect_all(t, t0, err)))
            break;
        if (save && (rc = trainer_save(t, err)))
            break;
        if (stop && !last) {
            char next[768] = "";
            if (trainer_rank0(t))
                slurm_env_requeue(stop, next, sizeof next);
            rc = sf_fail(err, SF_EFAIL, "stopped by signal %d at step %lld; checkpoint written; %s",
                         stop, (long long)(step + 1), next);
            break;
        }
    }
    if (!rc) /* the last steps' metrics (a loop left early keeps its error) */
        rc = collect_all(t, t0, err);
    shard_stream_free(st);
    return rc;
}
