/* The trainer: one shard stream feeding N member SAEs (a solo run is a trainer with one member),
 * each with its own backend, schedule, metrics.jsonl and checkpoints in its own run directory.
 *
 * Parts kept apart so data-parallel ranks can reuse them: the data side (trainer_open_data, the
 * stream, the shared batch buffers), the member step (one train_step per member per batch) and
 * the checkpoint side (every live member saves step N, then the sweep marker names N). */
#ifndef TRAINER_H
#define TRAINER_H

#include <stdint.h>

#include "../data/shard.h"
#include "../data/stream.h"
#include "../kernels/backend.h"
#include "../kernels/dist.h"
#include "ckpt.h"
#include "config.h"
#include "metrics.h"
#include "sf_err.h"

typedef enum { TR_LIVE = 0, TR_DONE = 1, TR_DIVERGED = 2 } tr_status;

/* A step handed to a member's backend whose metrics are not in yet. */
typedef struct tr_pending {
    int64_t step;
    float lr;
    int k;
    sae_metrics m; /* a backend without submit_step: train_step's metrics */
} tr_pending;

typedef struct tr_member {
    char name[128];          /* sweep member name; "" for a solo run */
    sf_config cfg;           /* resolved; cfg.out_dir is the member's run directory */
    sae_hparams hp;
    sae_backend *be;
    sae_params p;
    sae_state s;
    ckpt_meta meta;
    metrics_log ml;
    int ml_open;
    tr_status status;
    char why[512];           /* why it stopped (diverged) */
    sae_metrics mt;          /* the last collected step's metrics */
    /* steps handed to the backend whose metrics are not in yet, oldest first: the loop collects
     * step t-1 while step t computes (backend.h, submit_step) */
    int n_pend;
    tr_pending pend[2];
    sae_metrics ev;          /* final evaluation (or the last batch when there is no eval set) */
    int dead;                /* dead latents at the end */
    double t_log;            /* progress/throughput bookkeeping */
    int64_t tok_log;
    int created_dir;
} tr_member;

typedef struct trainer {
    shard_set set, eval_set;
    int set_open, have_eval, eval_separate;
    int64_t train_rows;
    int d, B, want_g;        /* want_g: some member is gsae, so the stream delivers gradients */
    int Bl;                  /* this rank's rows of each global batch of B (= B on one rank) */
    const sae_dist *dist;    /* data-parallel ranks (NULL = one rank); set before trainer_open_data */
    int quiet_error;         /* a rank > 0 leaves the input error every rank hit to rank 0 */
    int64_t total_steps;
    float *x, *g;            /* (B, d) batch buffers shared by every member */
    float *ex, *eg;          /* (B, d) eval batch buffers (only with an eval set) */
    int lent;                /* x, g are a solo member's backend buffers (not ours to free) */
    int raw_x;               /* the backends apply the input scale (set_input_format): the
                              * streams that feed them run at scale 1 */
    int n_members;
    tr_member *m;            /* (n_members) */
    char sweep_dir[SF_PATH_MAX]; /* "" for a solo run; else where sweep_state.json lives */
} trainer;

/* Data parallel: rank 0 writes every file (run dir, metrics, checkpoints, exports); all ranks
 * train, evaluate and join each save (statistics combine there). */
static inline int trainer_rank0(const trainer *t)
{
    return !sae_dist_on(t->dist) || t->dist->rank == 0;
}

/* Opens the shards named by c (the data keys every member shares) and derives d, B, the train
 * and eval row ranges and the step count. need_g: open gradients too (some member is gsae). */
int trainer_open_data(trainer *t, const sf_config *c, int need_g, sf_err *err);

/* Adds a member from a loaded config: validates it against d, resolves it, and refuses an
 * out_dir that already holds a run unless resume. name may be "" (solo). */
int trainer_add_member(trainer *t, const sf_config *c, const char *name, int resume, sf_err *err);

/* Bytes the run will hold in host memory (and, in *device, on the GPU for cuda members). */
int64_t trainer_host_bytes(const trainer *t, int64_t *device);

/* Refuses (SF_EINPUT, one line with needed vs available) a run that cannot fit in memory. */
int trainer_check_memory(const trainer *t, sf_err *err);

/* Trains every member to the end. SF_OK when all finished; SF_EFAIL when some member diverged
 * (the others still finish; err names the diverged ones) or on a signal/I/O failure; SF_EINPUT
 * for bad input found while running. resume: continue from the newest checkpoint every live
 * member holds (a sweep) or the newest complete one (solo). */
int trainer_run(trainer *t, int resume, sf_err *err);

/* Removes member dirs this run created when bad input stopped it before any checkpoint. */
void trainer_cleanup_failed(trainer *t);

void trainer_free(trainer *t);

/* Shared by trainer.c and trainer_loop.c. */
double trainer_now(void); /* monotonic seconds */
/* A stream over the rows [begin, end) of the training set with the run's batch and shuffle. */
shard_stream_cfg trainer_stream_cfg(const trainer *t, int loop, int64_t begin, int64_t end,
                                    float scale, int want_g, int ranked);
/* The member's inference-rule metrics over the eval set, summed into *acc. */
int trainer_evaluate(trainer *t, tr_member *m, sae_metrics *acc, int k, sf_err *err);

/* The loop (host/trainer_loop.c): steps start..total_steps-1, saving on checkpoint steps, at the
 * end and on a signal (SF_EFAIL naming the signal after its checkpoint). */
int trainer_loop(trainer *t, int64_t start, sf_err *err);

/* Checkpoint side (host/trainer_ckpt.c). */
/* Every live member saves its checkpoint; in a sweep, then sweep_state.json names the step
 * (written last: the sweep checkpoint is complete only then) and old member checkpoints go. */
int trainer_save(trainer *t, sf_err *err);
/* Loads each live member's resume point (the same step for all); *resumed = 1 if any loaded. */
int trainer_load_resume(trainer *t, int *resumed, sf_err *err);
/* Writes sweep_state.json (the step of the last complete sweep checkpoint and stopped members). */
int trainer_write_marker(trainer *t, int64_t step, sf_err *err);

/* Data-parallel side (host/trainer_dist.c). */
/* Rank 0 chose the start (checkpoint or fresh init); every rank takes that state and meta. */
void trainer_share_start(trainer *t, int *resumed);
/* Before a save: stream position and skipped rows agreed, statistics combined, parameters
 * checked identical on every rank (SF_EFAIL naming the rank that differs). */
int trainer_dist_prepare_save(trainer *t, tr_member *m, sf_err *err);

#endif
