/* MPI behind sae_dist (dist_mpi.h): start-up, the collectives, the hang watchdog. */
#include <math.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "dist_mpi.h"

/* Aborts through one macro naming the call, like CUDA_CHECK: MPI failures are not input errors. */
#define MPI_CHECK(call)                                                                       \
    do {                                                                                      \
        int rc_ = (call);                                                                     \
        if (rc_ != MPI_SUCCESS) {                                                             \
            char s_[MPI_MAX_ERROR_STRING];                                                    \
            int l_ = 0;                                                                       \
            MPI_Error_string(rc_, s_, &l_);                                                   \
            fprintf(stderr, "saeforge: %s failed (%s) at %s:%d\n", #call, s_, __FILE__, __LINE__); \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                     \
        }                                                                                     \
    } while (0)

/* Watchdog: the time the current collective started (0 = none), checked twice a second. */
static struct {
    pthread_t th;
    int running;
    volatile int timeout_s;
    volatile double since;
    const char *volatile what;
    int rank, world;
} wd;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *wd_main(void *arg)
{
    (void)arg;
    for (;;) {
        usleep(500000);
        double t0 = wd.since;
        if (t0 > 0 && mono_s() - t0 > wd.timeout_s) {
            /* exit, not MPI_Abort: this thread may not call MPI while the main thread is inside
             * it, and the launcher (mpirun, srun --kill-on-bad-exit) ends the other ranks */
            fprintf(stderr,
                    "saeforge: rank %d of %d waited %d s in %s for the other ranks: one of them "
                    "died or hangs; stopping this job (train.dist_timeout_s); rerun with --resume "
                    "to continue from the last checkpoint\n",
                    wd.rank, wd.world, wd.timeout_s, wd.what ? wd.what : "a collective");
            _exit(1);
        }
    }
    return NULL;
}

static void wd_enter(const char *what)
{
    wd.what = what;
    wd.since = mono_s();
}

static void wd_leave(void)
{
    wd.since = 0;
}

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

int dist_launched(void)
{
    /* OpenMPI's mpirun, PMIx (srun --mpi=pmix, prterun), PMI-1/2 (srun --mpi=pmi2) */
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") ||
           getenv("PMI_SIZE");
}

static MPI_Comm comm_of(const sae_dist *dd)
{
    return *(MPI_Comm *)dd->ctx;
}

static void d_sum_f32(const sae_dist *dd, float *buf, int64_t count)
{
    wd_enter("the gradient all-reduce");
    /* counts above INT_MAX go in slices */
    for (int64_t o = 0; o < count; o += 1 << 30) {
        int c = (int)(count - o < (1 << 30) ? count - o : (1 << 30));
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf + o, c, MPI_FLOAT, MPI_SUM, comm_of(dd)));
    }
    wd_leave();
}

static void d_sum_f64(const sae_dist *dd, double *buf, int64_t count)
{
    wd_enter("a sum over ranks");
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_DOUBLE, MPI_SUM, comm_of(dd)));
    wd_leave();
}

static void d_sum_i64(const sae_dist *dd, int64_t *buf, int64_t count)
{
    wd_enter("the batch selection's histogram sum");
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_INT64_T, MPI_SUM, comm_of(dd)));
    wd_leave();
}

static void d_max_i64(const sae_dist *dd, int64_t *buf, int64_t count)
{
    wd_enter("a maximum over ranks");
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_INT64_T, MPI_MAX, comm_of(dd)));
    wd_leave();
}

static void d_max_f32(const sae_dist *dd, float *buf, int64_t count)
{
    wd_enter("a maximum over ranks");
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_MAX, comm_of(dd)));
    wd_leave();
}

static void d_gather_i64(const sae_dist *dd, int64_t mine, int64_t *all)
{
    wd_enter("a gather over ranks");
    MPI_CHECK(MPI_Allgather(&mine, 1, MPI_INT64_T, all, 1, MPI_INT64_T, comm_of(dd)));
    wd_leave();
}

static void d_bcast(const sae_dist *dd, void *buf, int64_t bytes, int root)
{
    wd_enter("a broadcast from rank 0");
    for (int64_t o = 0; o < bytes; o += 1 << 30) {
        int c = (int)(bytes - o < (1 << 30) ? bytes - o : (1 << 30));
        MPI_CHECK(MPI_Bcast((char *)buf + o, c, MPI_BYTE, root, comm_of(dd)));
    }
    wd_leave();
}

static MPI_Comm world_comm;

int dist_open(sae_dist *dd, int timeout_s, sf_err *err)
{
    memset(dd, 0, sizeof *dd);
    dd->world = 1;
    /* srun without an MPI plugin starts N independent one-rank trainers on one out_dir */
    int step_tasks = env_int("SLURM_STEP_NUM_TASKS", 1);
    if (!dist_launched()) {
        if (step_tasks > 1)
            return sf_fail(err, SF_EINPUT,
                           "srun started %d tasks but gave them no MPI (no PMIx/PMI in the "
                           "environment); start them with `srun --mpi=pmix` (saeforge submit "
                           "does) or with mpirun", step_tasks);
        return SF_OK;
    }
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return sf_fail(err, SF_EFAIL, "MPI_Init failed under the launcher; check that mpirun/srun "
                       "and this saeforge use the same MPI");
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world_comm));
    MPI_CHECK(MPI_Comm_rank(world_comm, &dd->rank));
    MPI_CHECK(MPI_Comm_size(world_comm, &dd->world));
    MPI_Comm local;
    MPI_CHECK(MPI_Comm_split_type(world_comm, MPI_COMM_TYPE_SHARED, dd->rank, MPI_INFO_NULL, &local));
    MPI_CHECK(MPI_Comm_rank(local, &dd->local_rank));
    MPI_CHECK(MPI_Comm_free(&local));
    dd->ctx = &world_comm;
    dd->sum_f32 = d_sum_f32;
    dd->sum_f64 = d_sum_f64;
    dd->sum_i64 = d_sum_i64;
    dd->max_i64 = d_max_i64;
    dd->max_f32 = d_max_f32;
    dd->gather_i64 = d_gather_i64;
    dd->bcast = d_bcast;
    wd.rank = dd->rank;
    wd.world = dd->world;
    wd.timeout_s = timeout_s > 0 ? timeout_s : 600;
    wd.timeout_s = env_int("SAEFORGE_DIST_TIMEOUT", wd.timeout_s);
    if (dd->world > 1 && pthread_create(&wd.th, NULL, wd_main, NULL) == 0) {
        pthread_detach(wd.th);
        wd.running = 1;
    }
    return SF_OK;
}

void dist_set_timeout(sae_dist *dd, int timeout_s)
{
    (void)dd;
    if (timeout_s > 0 && !getenv("SAEFORGE_DIST_TIMEOUT"))
        wd.timeout_s = timeout_s;
}

void dist_close(sae_dist *dd)
{
    if (!dd->ctx)
        return;
    dist_barrier(dd);
    wd.running = 0;
    MPI_Comm_free(&world_comm);
    MPI_Finalize();
    dd->ctx = NULL;
}

void dist_barrier(const sae_dist *dd)
{
    if (!sae_dist_on(dd))
        return;
    wd_enter("a barrier (waiting for every rank)");
    MPI_CHECK(MPI_Barrier(comm_of(dd)));
    wd_leave();
}

int dist_any(const sae_dist *dd, int flag)
{
    int64_t v = flag != 0;
    if (sae_dist_on(dd))
        dd->max_i64(dd, &v, 1);
    return v != 0;
}

int64_t dist_max(const sae_dist *dd, int64_t v)
{
    if (sae_dist_on(dd))
        dd->max_i64(dd, &v, 1);
    return v;
}

void dist_bcast_bytes(const sae_dist *dd, void *buf, int64_t bytes)
{
    if (sae_dist_on(dd))
        dd->bcast(dd, buf, bytes, 0);
}

void dist_bcast_params(const sae_dist *dd, sae_params *p, int d, int n)
{
    int64_t nd = (int64_t)n * d * 4;
    dist_bcast_bytes(dd, p->W_enc, nd);
    dist_bcast_bytes(dd, p->b_enc, (int64_t)n * 4);
    dist_bcast_bytes(dd, p->W_dec, nd);
    dist_bcast_bytes(dd, p->b_dec, (int64_t)d * 4);
}

void dist_bcast_state(const sae_dist *dd, sae_state *s, int d, int n)
{
    int64_t nd = (int64_t)n * d * 4, n4 = (int64_t)n * 4, n8 = (int64_t)n * 8, d4 = (int64_t)d * 4;
    float *big[] = {s->m_W_enc, s->v_W_enc, s->m_W_dec, s->v_W_dec};
    for (int i = 0; i < 4; i++)
        dist_bcast_bytes(dd, big[i], nd);
    dist_bcast_bytes(dd, s->m_b_enc, n4);
    dist_bcast_bytes(dd, s->v_b_enc, n4);
    dist_bcast_bytes(dd, s->m_b_dec, d4);
    dist_bcast_bytes(dd, s->v_b_dec, d4);
    dist_bcast_bytes(dd, &s->adam_t, 8);
    dist_bcast_bytes(dd, s->since_fired, n8);
    dist_bcast_bytes(dd, s->fire_count, n8);
    dist_bcast_bytes(dd, s->act_sum, n8);
    dist_bcast_bytes(dd, s->act_max, n4);
    dist_bcast_bytes(dd, s->last_fired_step, n8);
    dist_bcast_bytes(dd, s->gate_sum, n8);
    dist_bcast_bytes(dd, &s->theta, 4);
}

void dist_combine_stats(const sae_dist *dd, sae_state *s, int n)
{
    if (!sae_dist_on(dd))
        return;
    MPI_Comm c = comm_of(dd);
    wd_enter("the statistics sum before a checkpoint");
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, s->fire_count, n, MPI_INT64_T, MPI_SUM, c));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, s->act_sum, n, MPI_DOUBLE, MPI_SUM, c));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, s->gate_sum, n, MPI_DOUBLE, MPI_SUM, c));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, s->act_max, n, MPI_FLOAT, MPI_MAX, c));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, s->last_fired_step, n, MPI_INT64_T, MPI_MAX, c));
    wd_leave();
}

void dist_zero_partials(sae_state *s, int n)
{
    memset(s->fire_count, 0, sizeof(int64_t) * (size_t)n);
    memset(s->act_sum, 0, sizeof(double) * (size_t)n);
    memset(s->gate_sum, 0, sizeof(double) * (size_t)n);
}

int dist_params_diverged(const sae_dist *dd, const sae_params *p, int d, int n)
{
    if (!sae_dist_on(dd))
        return 0;
    uint32_t h = crc32c_update(0, p->W_enc, (size_t)n * d * 4);
    h = crc32c_update(h, p->b_enc, (size_t)n * 4);
    h = crc32c_update(h, p->W_dec, (size_t)n * d * 4);
    h = crc32c_update(h, p->b_dec, (size_t)d * 4);
    int64_t *all = malloc(sizeof(int64_t) * (size_t)dd->world);
    if (!all)
        return 0;
    dd->gather_i64(dd, (int64_t)h, all);
    int bad = 0;
    for (int r = 1; r < dd->world && !bad; r++)
        if (all[r] != all[0])
            bad = r;
    free(all);
    return bad;
}
