/* The trainer's checkpoint side: all members save the same step; in a sweep the marker
 * <sweep>/sweep_state.json naming that step is written last, and resume picks the newest step
 * every live member holds complete, so members always restart from one point of the stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "json.h"
#include "plot.h"
#include "trainer.h"

int trainer_write_marker(trainer *t, int64_t step, sf_err *err)
{
    json_writer w;
    jw_init(&w, 1);
    jw_obj_begin(&w);
    jw_key(&w, "step");
    jw_int(&w, step);
    jw_key(&w, "stopped");
    jw_obj_begin(&w);
    for (int i = 0; i < t->n_members; i++)
        if (t->m[i].status == TR_DIVERGED) {
            jw_key(&w, t->m[i].name);
            jw_str(&w, t->m[i].why);
        }
    jw_obj_end(&w);
    jw_obj_end(&w);
    char path[SF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/sweep_state.json", t->sweep_dir);
    int rc = fs_write_atomic(path, w.buf, w.len, err);
    jw_free(&w);
    return rc;
}

int trainer_save(trainer *t, sf_err *err)
{
    int sweep = t->sweep_dir[0] != 0;
    int64_t step = -1;
    for (int i = 0; i < t->n_members; i++) {
        tr_member *m = &t->m[i];
        if (m->status != TR_LIVE)
            continue;
        m->be->get_params(m->be, &m->p);
        m->be->get_state(m->be, &m->s);
        if (sae_dist_on(t->dist)) {
            int rc = trainer_dist_prepare_save(t, m, err);
            if (rc)
                return rc;
            if (!trainer_rank0(t)) {
                step = m->meta.step;
                continue;
            }
        }
        /* a sweep keeps the previous checkpoints until the marker moves past them */
        int rc = ckpt_save(m->cfg.out_dir, &m->p, &m->s, &m->meta, sweep ? 0 : m->cfg.checkpoint.keep, err);
        if (rc)
            return rc;
        step = m->meta.step;
        sf_err perr = {0};
        if (plot_curves(m->cfg.out_dir, &perr)) /* a plot is a view, not a reason to stop */
            fprintf(stderr, "saeforge: curves.svg not written: %s\n", perr.msg);
    }
    if (!sweep || step < 0 || !trainer_rank0(t))
        return SF_OK;
    int rc = trainer_write_marker(t, step, err);
    if (rc)
        return rc;
    for (int i = 0; i < t->n_members; i++)
        if (t->m[i].status == TR_LIVE)
            ckpt_prune(t->m[i].cfg.out_dir, t->m[i].cfg.checkpoint.keep);
    return SF_OK;
}

/* Members the marker lists as stopped stay stopped: resuming them would only diverge again. */
static void read_marker(trainer *t)
{
    char path[SF_PATH_MAX + 32], why[128];
    snprintf(path, sizeof path, "%s/sweep_state.json", t->sweep_dir);
    char *text = NULL;
    size_t len = 0;
    sf_err e = {0};
    if (!fs_exists(path) || fs_read_all(path, &text, &len, &e))
        return;
    json_value v;
    if (!json_parse(text, len, &v, why, sizeof why)) {
        const json_value *st = json_get(&v, "stopped");
        for (int i = 0; i < t->n_members; i++) {
            const char *w = json_get_str(st, t->m[i].name, NULL);
            if (w) {
                t->m[i].status = TR_DIVERGED;
                snprintf(t->m[i].why, sizeof t->m[i].why, "%s", w);
            }
        }
        json_value_free(&v);
    } else {
        fprintf(stderr, "saeforge: ignoring %s (%s); member checkpoints decide the resume point\n",
                path, why);
    }
    free(text);
}

static int load_member(tr_member *m, const char *dir, sf_err *err)
{
    m->meta.d = m->hp.d;
    m->meta.n = m->hp.n;
    snprintf(m->meta.arch, sizeof m->meta.arch, "%s", config_arch_name(m->cfg.sae.arch));
    return ckpt_load(dir, &m->p, &m->s, &m->meta, err);
}

int trainer_load_resume(trainer *t, int *resumed, sf_err *err)
{
    *resumed = 0;
    char ck[SF_PATH_MAX + 64];
    if (!t->sweep_dir[0]) {
        tr_member *m = &t->m[0];
        int rc = ckpt_find_latest(m->cfg.out_dir, ck, sizeof ck, err);
        if (rc < 0)
            return -rc;
        if (rc == 0) {
            /* Nothing usable (never checkpointed, killed early, or every checkpoint damaged):
             * a requeued job must not need a person, so the run starts over from step 0. */
            fprintf(stderr, "saeforge: no complete checkpoint in %s; starting the run from the "
                            "beginning\n", m->cfg.out_dir);
            return SF_OK;
        }
        if ((rc = load_member(m, ck, err)))
            return rc;
        fprintf(stderr, "saeforge: resuming from %s (step %lld)\n", ck, (long long)m->meta.step);
        *resumed = 1;
        return SF_OK;
    }
    read_marker(t);
    int64_t common = -1;
    int live = 0;
    for (int i = 0; i < t->n_members; i++) {
        tr_member *m = &t->m[i];
        if (m->status != TR_LIVE)
            continue;
        live++;
        int rc = ckpt_find_latest(m->cfg.out_dir, ck, sizeof ck, err);
        if (rc < 0)
            return -rc;
        ckpt_meta pm;
        if (rc == 0 || ckpt_peek(ck, &pm, err)) {
            common = 0;
            continue;
        }
        if (common < 0 || pm.step < common)
            common = pm.step;
    }
    if (live == 0)
        return SF_OK; /* every member stopped before: nothing left to train */
    if (common <= 0) {
        fprintf(stderr, "saeforge: no complete sweep checkpoint in %s; starting the sweep from the "
                        "beginning\n", t->sweep_dir);
        for (int i = 0; i < t->n_members; i++)
            t->m[i].status = TR_LIVE;
        return SF_OK;
    }
    for (int i = 0; i < t->n_members; i++) {
        tr_member *m = &t->m[i];
        if (m->status != TR_LIVE)
            continue;
        snprintf(ck, sizeof ck, "%s/checkpoints/step_%lld", m->cfg.out_dir, (long long)common);
        char done[SF_PATH_MAX + 80];
        snprintf(done, sizeof done, "%s/DONE", ck);
        if (!fs_exists(done))
            return sf_fail(err, SF_EINPUT,
                           "%s: sweep member %s has no complete checkpoint at step %lld, the "
                           "newest step all members share; remove %s to start the sweep over",
                           m->cfg.source, m->name, (long long)common, t->sweep_dir);
        int rc = load_member(m, ck, err);
        if (rc)
            return rc;
    }
    fprintf(stderr, "saeforge: resuming %d sweep member(s) from step %lld\n", live, (long long)common);
    *resumed = 1;
    return SF_OK;
}
