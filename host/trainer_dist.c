/* The trainer's data-parallel side: one start state for every rank, and what the ranks agree
 * on before rank 0 writes a checkpoint. */
#include "dist_mpi.h"
#include "trainer.h"

/* Rank 0 chose the start (a checkpoint or a fresh init); every rank takes the same state.
 * The summed statistics stay with rank 0, which carries the totals so far. The other ranks
 * wait here while rank 0 reads; if rank 0 fails instead, the launcher ends the job. */
void trainer_share_start(trainer *t, int *resumed)
{
    int64_t r = *resumed;
    dist_bcast_bytes(t->dist, &r, sizeof r);
    *resumed = (int)r;
    for (int i = 0; i < t->n_members; i++) {
        tr_member *m = &t->m[i];
        dist_bcast_bytes(t->dist, &m->status, sizeof m->status);
        dist_bcast_bytes(t->dist, m->why, sizeof m->why);
        dist_bcast_bytes(t->dist, &m->meta, sizeof m->meta);
        if (m->status != TR_LIVE)
            continue;
        dist_bcast_params(t->dist, &m->p, t->d, m->hp.n);
        dist_bcast_state(t->dist, &m->s, t->d, m->hp.n);
        if (!trainer_rank0(t))
            dist_zero_partials(&m->s, m->hp.n);
    }
}

/* Data parallel: the stream position every rank agrees to resume from (the furthest; ranks
 * differ only after skipped bad rows), the skipped rows of all ranks, and a check that the
 * ranks still hold one set of parameters. */
int trainer_dist_prepare_save(trainer *t, tr_member *m, sf_err *err)
{
    const sae_dist *dd = t->dist;
    int64_t key = (m->meta.data_epoch << 40) | m->meta.data_position;
    key = dist_max(dd, key);
    m->meta.data_epoch = key >> 40;
    m->meta.data_position = key & ((1LL << 40) - 1);
    int64_t skipped = m->meta.skipped_rows;
    dd->sum_i64(dd, &skipped, 1);
    m->meta.skipped_rows = skipped;
    dist_combine_stats(dd, &m->s, m->hp.n);
    int bad = dist_params_diverged(dd, &m->p, t->d, m->hp.n);
    if (bad)
        return sf_fail(err, SF_EFAIL,
                       "rank %d's parameters differ from rank 0's at step %lld: the ranks' sums "
                       "disagree (a saeforge bug, please report it); resume from the last "
                       "checkpoint", bad, (long long)m->meta.step);
    return SF_OK;
}

