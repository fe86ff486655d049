/* `saeforge train`: the CLI front of the trainer — a solo run, or a sweep of members when the
 * config holds a `sweep:` block (host/sweep.c) — and the end-of-run summary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/shard.h"
#include "cmd.h"
#include "config.h"
#include "dist_mpi.h"
#include "fsutil.h"
#include "plot.h"
#include "sweep.h"
#include "trainer.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: saeforge train CONFIG [--set key=value]... [--resume] [--member I]\n"
            "  Trains the SAE described by CONFIG (YAML; see docs/config.md), or every member of\n"
            "  its sweep: block from one pass over the data (see README, Sweeps).\n"
            "  --set key=value  override a config key (dotted, e.g. --set train.lr=1e-4)\n"
            "  --resume         continue from the newest complete checkpoint in out_dir\n"
            "  --member I       train only member I (0-based, sweep.json order) of the sweep, in\n"
            "                   its own pass over the data (what `submit --array` runs per task)\n");
}

static void summary_solo(const trainer *t)
{
    const tr_member *m = &t->m[0];
    const sf_config *c = &m->cfg;
    printf("trained %s SAE: d=%d n=%d k=%d, %lld steps, %lld tokens in %.1f s (%.0f tokens/s)\n",
           config_arch_name(c->sae.arch), t->d, m->hp.n, c->sae.k, (long long)m->meta.step,
           (long long)m->meta.tokens_seen, m->meta.elapsed_s,
           m->meta.elapsed_s > 0 ? m->meta.tokens_seen / m->meta.elapsed_s : 0);
    printf("%s: FVU %.4f  L0 %.2f  dead %.2f%%", t->have_eval ? "eval" : "last batch", m->ev.fvu,
           m->ev.l0, 100.0 * m->dead / m->hp.n);
    if (m->ev.gw_err >= 0)
        printf("  gradient-weighted error %.4f", m->ev.gw_err);
    printf("\n");
    if (m->meta.skipped_rows > 0)
        printf("skipped %lld rows with NaN/Inf values (data.bad_rows: skip)\n",
               (long long)m->meta.skipped_rows);
    printf("read %lld bytes from shards\n", (long long)shard_bytes_read());
    printf("results: %s/final (SAELens layout), %s/stats, %s/metrics.jsonl\n", c->out_dir,
           c->out_dir, c->out_dir);
}

/* tokens/s is the sweep's: every member saw each batch in the same wall time. */
static void summary_sweep(const trainer *t)
{
    printf("sweep of %d members: %lld steps of %d tokens (%s)\n", t->n_members,
           (long long)t->total_steps, t->B, t->have_eval ? "eval metrics" : "last-batch metrics");
    printf("%-28s %-10s %5s %8s %8s %8s %7s %10s  %s\n", "member", "arch", "k", "n", "FVU", "L0",
           "dead%", "tokens/s", "status");
    for (int i = 0; i < t->n_members; i++) {
        const tr_member *m = &t->m[i];
        double tps = m->meta.elapsed_s > 0 ? m->meta.tokens_seen / m->meta.elapsed_s : 0;
        if (m->status == TR_DONE)
            printf("%-28s %-10s %5d %8d %8.4f %8.2f %7.2f %10.0f  done\n", m->name,
                   config_arch_name(m->cfg.sae.arch), m->cfg.sae.k, m->hp.n, m->ev.fvu, m->ev.l0,
                   100.0 * m->dead / m->hp.n, tps);
        else
            printf("%-28s %-10s %5d %8d %8s %8s %7s %10s  diverged\n", m->name,
                   config_arch_name(m->cfg.sae.arch), m->cfg.sae.k, m->hp.n, "-", "-", "-", "-");
    }
    printf("read %lld bytes from shards (one stream for all members; evals per member)\n",
           (long long)shard_bytes_read());
    printf("results: %s/<member>/ (ordinary run directories), %s/frontier.svg, %s/sweep.json\n",
           t->sweep_dir, t->sweep_dir, t->sweep_dir);
}

static int setup_sweep(trainer *t, const char *cfg_path, const char **sets, int n_sets,
                       const sweep_spec *sp, int member, int resume, sf_err *err)
{
    sf_config base;
    int rc = config_load(cfg_path, sets, n_sets, &base, err);
    if (rc)
        return rc;
    snprintf(t->sweep_dir, sizeof t->sweep_dir, "%s", base.out_dir);
    const char **all = calloc((size_t)n_sets + SWEEP_MAX_KEYS + 1, sizeof *all);
    char(*ov)[256] = calloc(SWEEP_MAX_KEYS, 256);
    char *out_ov = malloc(SF_PATH_MAX + 200);
    sf_config *cs = calloc((size_t)sp->n_members, sizeof *cs);
    char(*names)[128] = calloc((size_t)sp->n_members, 128);
    int need_g = 0;
    if (member >= sp->n_members)
        rc = sf_fail(err, SF_EINPUT, "%s: --member %d: the sweep has %d members (0..%d)", cfg_path,
                     member, sp->n_members, sp->n_members - 1);
    for (int i = 0; i < sp->n_members && !rc; i++) {
        sweep_member(sp, i, names[i], 128, ov);
        if (member >= 0 && i != member)
            continue;
        snprintf(out_ov, SF_PATH_MAX + 200, "out_dir=%s/%s", base.out_dir, names[i]);
        int n = 0;
        for (int j = 0; j < n_sets; j++)
            all[n++] = sets[j];
        for (int j = 0; j < sp->n_keys; j++)
            all[n++] = ov[j];
        all[n++] = out_ov;
        rc = config_load(cfg_path, all, n, &cs[i], err);
        for (int j = 0; rc && j < sp->n_keys; j++) { /* say where a bad sweep value came from */
            char pre[160];
            snprintf(pre, sizeof pre, "--set %s", sp->keys[j].key);
            if (!strncmp(err->msg, pre, strlen(pre))) {
                char msg[sizeof err->msg];
                snprintf(msg, sizeof msg, "%s", err->msg + 6);
                snprintf(err->msg, sizeof err->msg, "%.200s:%d: sweep.%.700s", cfg_path, sp->keys[j].line, msg);
            }
        }
        need_g |= !rc && cs[i].sae.arch == SAE_ARCH_GSAE;
    }
    if (!rc)
        rc = trainer_open_data(t, &base, need_g, err);
    for (int i = 0; i < sp->n_members && !rc; i++)
        if (member < 0 || i == member)
            rc = trainer_add_member(t, &cs[i], names[i], resume, err);
    free(all);
    free(ov);
    free(out_ov);
    free(cs);
    free(names);
    return rc;
}

/* Config, sweep expansion, shards and the memory check: everything that can be wrong with the
 * input, before anything is written. sp receives the sweep (n_keys = 0 for a solo run). */
static int train_prepare(trainer *t, const char *cfg_path, const char **sets, int n_sets,
                         int member, int resume, sweep_spec *sp, sf_err *err)
{
    int rc = sweep_read(cfg_path, sp, err);
    if (!rc && member >= 0 && sp->n_keys == 0)
        rc = sf_fail(err, SF_EINPUT, "%s: --member %d: this config has no sweep: block; drop --member",
                     cfg_path, member);
    if (!rc && sp->n_keys == 0) {
        sf_config c;
        rc = config_load(cfg_path, sets, n_sets, &c, err);
        if (!rc)
            rc = trainer_open_data(t, &c, c.sae.arch == SAE_ARCH_GSAE, err);
        if (!rc)
            rc = trainer_add_member(t, &c, "", resume, err);
    } else if (!rc) {
        rc = setup_sweep(t, cfg_path, sets, n_sets, sp, member, resume, err);
    }
    if (!rc)
        rc = trainer_check_memory(t, err);
    return rc;
}

static int train_main(trainer *t, const char *cfg_path, const char **sets, int n_sets, int member,
                      int resume, int *made_sweep_dir, sf_err *err)
{
    sweep_spec *sp = calloc(1, sizeof *sp);
    int rc = train_prepare(t, cfg_path, sets, n_sets, member, resume, sp, err);
    if (rc && !trainer_rank0(t))
        t->quiet_error = 1; /* every rank read the same input: rank 0 says it once */
    if (!rc && t->n_members > 0)
        dist_set_timeout(NULL, t->m[0].cfg.train.dist_timeout_s);
    if (!rc && sp->n_keys && trainer_rank0(t)) {
        *made_sweep_dir = member < 0 && !fs_exists(t->sweep_dir);
        rc = sweep_write_json(t->sweep_dir, sp, err);
    }
    free(sp);
    /* One member alone (an array task) checkpoints as a solo run: the sweep's shared-step marker
     * belongs to a run of all members, and tasks running side by side would overwrite it. */
    if (member >= 0)
        t->sweep_dir[0] = 0;
    if (rc)
        return rc;
    rc = trainer_run(t, resume, err);
    if (rc == SF_EINPUT || !trainer_rank0(t))
        return rc;
    if (rc == SF_OK || t->n_members > 1) {
        int finished = 0;
        for (int i = 0; i < t->n_members; i++)
            finished += t->m[i].status == TR_DONE;
        if (t->n_members == 1 && finished)
            summary_solo(t);
        else if (finished || rc == SF_OK)
            summary_sweep(t);
        if (t->n_members > 1 && finished) {
            sf_err perr = {0};
            if (plot_frontier(t->sweep_dir, &perr))
                fprintf(stderr, "saeforge: frontier plot not written: %s\n", perr.msg);
        }
    }
    return rc;
}

int cmd_train(int argc, char **argv)
{
    const char *cfg_path = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0, resume = 0, member = -1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            free(sets);
            return 0;
        } else if (!strcmp(argv[i], "--resume")) {
            resume = 1;
        } else if (!strcmp(argv[i], "--member")) {
            char *end = NULL;
            long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : -1;
            if (i + 1 >= argc || !end || *end || end == argv[i + 1] || v < 0 || v > 1000000) {
                free(sets);
                return cli_error(2, "train: --member needs a member index 0, 1, ... (see sweep.json)");
            }
            member = (int)v;
            i++;
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
    trainer *t = calloc(1, sizeof *t);
    sf_err err = {0};
    int made_sweep_dir = 0;
    /* under mpirun/srun: this process is one rank of the run (host/dist_mpi.h) */
    static sae_dist dd;
    int rc = dist_open(&dd, 600, &err);
    t->dist = &dd;
    if (!rc)
        rc = train_main(t, cfg_path, sets, n_sets, member, resume, &made_sweep_dir, &err);
    if (rc && !t->quiet_error) {
        if (sae_dist_on(&dd) && dd.rank > 0)
            cli_error(rc == SF_EINPUT ? 2 : 1, "rank %d: %s", dd.rank, err.msg);
        else
            cli_error(rc == SF_EINPUT ? 2 : 1, "%s", err.msg);
    }
    if (rc == SF_EINPUT) { /* nothing worth keeping; lets the fixed config run again */
        trainer_cleanup_failed(t);
        if (made_sweep_dir)
            fs_remove_tree(t->sweep_dir);
    }
    trainer_free(t);
    free(t);
    free(sets);
    /* After a failure the other ranks may sit in a collective: no finalize (it would wait for
     * them); the launcher ends the job when this rank exits. */
    if (rc == SF_OK)
        dist_close(&dd);
    return rc == SF_OK ? 0 : (rc == SF_EINPUT ? 2 : 1);
}

int train_check_input(const char *cfg_path, const char *const *sets, int n_sets, sf_config *cfg,
                      sf_err *err)
{
    trainer *t = calloc(1, sizeof *t);
    sweep_spec *sp = calloc(1, sizeof *sp);
    int rc = train_prepare(t, cfg_path, (const char **)sets, n_sets, -1, 1, sp, err);
    if (!rc) /* the run's (or the sweep's) out_dir and settings as given */
        rc = config_load(cfg_path, (const char **)sets, n_sets, cfg, err);
    trainer_free(t);
    free(t);
    free(sp);
    return rc;
}
