/* Training/eval batches (see stream.h): windowed seeded shuffle, rank striding, bad-row handling,
 * and a background reader thread that fills a ring of prefetched batches. The order depends only
 * on (seed, epoch, window), so (epoch, position) is a complete resume point. */
#include "stream.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../host/rng.h"
#include "../kernels/sf_check.h"

typedef struct slot {
    float *x, *g;
    int n;
    int end;                /* the stream ends after this slot's rows */
    int failed;             /* e holds the error */
    int64_t epoch, pos;     /* state after the last row of this slot */
    int64_t skipped;        /* cumulative */
    sf_err e;
} slot;

struct shard_stream {
    const shard_set *set;
    shard_stream_cfg cfg;
    int d;
    int64_t n_rows;   /* rows in the range */
    int64_t win;      /* window rows used for reading (the shuffle window, or a read block) */
    int shuffle;

    /* ring */
    slot *slots;
    int n_slots, head, tail, count;
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    int stop;
    pthread_t thread;
    int thread_started;

    /* consumer state */
    int64_t epoch, pos, skipped;
    double wait_s;
    int done, failed;
    sf_err fatal;

    /* reader state (reader thread only) */
    int64_t r_epoch, r_pos, r_skipped, r_end_epoch, r_epoch_delivered;
    int64_t w_epoch, w_idx, w_rows; /* loaded window */
    float *wx, *wg;
    int64_t *perm;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* First position >= pos that belongs to this rank. */
static int64_t rank_pos(const shard_stream *s, int64_t pos)
{
    int64_t world = s->cfg.world, rank = s->cfg.rank;
    return pos + ((rank - pos % world) % world + world) % world;
}

/* Rolls (epoch, pos) into the next epoch when this rank has no row left in the current one. */
static void normalize(const shard_stream *s, int64_t *epoch, int64_t *pos)
{
    if (rank_pos(s, *pos) >= s->n_rows) {
        (*epoch)++;
        *pos = 0;
    }
}

static int load_window(shard_stream *s, int64_t epoch, int64_t w, sf_err *err)
{
    int64_t first = w * s->win;
    int64_t rows = s->n_rows - first < s->win ? s->n_rows - first : s->win;
    int rc = shard_set_read(s->set, s->cfg.row_begin + first, rows, s->wx, s->cfg.want_gradients ? s->wg : NULL, err);
    if (rc != SF_OK)
        return rc;
    for (int64_t i = 0; i < rows; i++)
        s->perm[i] = i;
    if (s->shuffle) {
        sf_rng r;
        rng_seed(&r, s->cfg.seed, (uint64_t)epoch * 1000003u + (uint64_t)w);
        for (int64_t i = rows - 1; i > 0; i--) {
            int64_t j = (int64_t)rng_below(&r, (uint64_t)i + 1);
            int64_t t = s->perm[i];
            s->perm[i] = s->perm[j];
            s->perm[j] = t;
        }
    }
    s->w_epoch = epoch;
    s->w_idx = w;
    s->w_rows = rows;
    return SF_OK;
}

static int all_finite(const float *v, int n)
{
    const uint32_t *u = (const uint32_t *)(const void *)v;
    uint32_t bad = 0;
    for (int i = 0; i < n; i++)
        bad |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    return !bad;
}

static int bad_row_error(const shard_stream *s, int64_t grow, const char *what, sf_err *err)
{
    const shard_set *set = s->set;
    int f = 0;
    while (f + 1 < set->n_files && set->files[f + 1].row0 <= grow)
        f++;
    return sf_fail(err, SF_EINPUT,
                   "%s: row %lld of `%s` has NaN/Inf values; set data.bad_rows: skip to drop such rows",
                   set->files[f].path, (long long)(grow - set->files[f].row0), what);
}

/* Fills one slot; returns SF_OK (slot->end may be set) or an error in slot->e. */
static int fill_slot(shard_stream *s, slot *sl)
{
    int d = s->d, batch = s->cfg.batch;
    float scale = s->cfg.scale;
    sl->n = 0;
    sl->end = 0;
    while (sl->n < batch) {
        if (s->r_epoch > s->r_end_epoch) {
            sl->end = 1;
            break;
        }
        int64_t p = rank_pos(s, s->r_pos);
        int64_t w = p / s->win;
        if (s->w_epoch != s->r_epoch || s->w_idx != w) {
            int rc = load_window(s, s->r_epoch, w, &sl->e);
            if (rc != SF_OK)
                return rc;
        }
        int64_t local = s->perm[p - w * s->win];
        int64_t grow = s->cfg.row_begin + w * s->win + local;
        const float *xs = s->wx + (size_t)local * (size_t)d;
        const float *gs = s->cfg.want_gradients ? s->wg + (size_t)local * (size_t)d : NULL;
        int ok_x = all_finite(xs, d), ok_g = gs ? all_finite(gs, d) : 1;
        if (ok_x && ok_g) {
            float *xo = sl->x + (size_t)sl->n * (size_t)d;
            if (scale == 1.0f)
                memcpy(xo, xs, (size_t)d * sizeof(float));
            else
                for (int i = 0; i < d; i++)
                    xo[i] = xs[i] * scale;
            if (gs)
                memcpy(sl->g + (size_t)sl->n * (size_t)d, gs, (size_t)d * sizeof(float));
            sl->n++;
            s->r_epoch_delivered++;
        } else if (s->cfg.skip_bad_rows) {
            s->r_skipped++;
        } else {
            return bad_row_error(s, grow, ok_x ? "gradients" : "activations", &sl->e);
        }
        s->r_pos = p - s->cfg.rank + s->cfg.world;
        int64_t e0 = s->r_epoch;
        normalize(s, &s->r_epoch, &s->r_pos);
        if (s->r_epoch != e0) {
            if (s->r_epoch_delivered == 0)
                return sf_fail(&sl->e, SF_EINPUT,
                               "every row this process reads in rows %lld..%lld of the shards has NaN/Inf values; "
                               "check the shards (data.path)",
                               (long long)s->cfg.row_begin, (long long)(s->cfg.row_end - 1));
            s->r_epoch_delivered = 0;
        }
    }
    sl->epoch = s->r_epoch;
    sl->pos = s->r_pos;
    sl->skipped = s->r_skipped;
    return SF_OK;
}

static void *reader_main(void *arg)
{
    shard_stream *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && s->count == s->n_slots)
            pthread_cond_wait(&s->not_full, &s->mu);
        if (s->stop) {
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        slot *sl = &s->slots[s->tail];
        pthread_mutex_unlock(&s->mu);

        sl->failed = fill_slot(s, sl) != SF_OK;

        pthread_mutex_lock(&s->mu);
        s->tail = (s->tail + 1) % s->n_slots;
        s->count++;
        pthread_cond_signal(&s->not_empty);
        pthread_mutex_unlock(&s->mu);
        if (sl->failed || sl->end)
            return NULL;
    }
}

int shard_stream_init(shard_stream **out, const shard_set *set, const shard_stream_cfg *cfg, sf_err *err)
{
    *out = NULL;
    if (cfg->row_begin < 0 || cfg->row_end > set->rows || cfg->row_begin >= cfg->row_end)
        return sf_fail(err, SF_EINPUT, "row range %lld..%lld is empty or outside the %lld rows of the shards; "
                                       "check data.eval_tokens and the shard sizes",
                       (long long)cfg->row_begin, (long long)cfg->row_end, (long long)set->rows);
    if (cfg->world < 1 || cfg->rank < 0 || cfg->rank >= cfg->world)
        return sf_fail(err, SF_EINPUT, "rank %d of world %d is invalid; check the launch settings", cfg->rank,
                       cfg->world);
    if (cfg->row_end - cfg->row_begin <= cfg->rank)
        return sf_fail(err, SF_EINPUT, "row range %lld..%lld has no rows for rank %d of %d; use more data",
                       (long long)cfg->row_begin, (long long)cfg->row_end, cfg->rank, cfg->world);
    if (cfg->batch < 1)
        return sf_fail(err, SF_EINPUT, "batch of %d rows is invalid; set train.batch_tokens >= 1", cfg->batch);
    if (cfg->want_gradients && !set->has_gradients)
        return sf_fail(err, SF_EINPUT, "%s: has no `gradients` dataset; gsae needs shards written with gradients "
                                       "(saeforge synth --gradients)", set->files[0].path);
    if (cfg->start_epoch < 0 || cfg->start_position < 0)
        return sf_fail(err, SF_EINPUT, "data position (%lld, %lld) is invalid; the checkpoint may be damaged",
                       (long long)cfg->start_epoch, (long long)cfg->start_position);

    shard_stream *s = calloc(1, sizeof *s);
    SF_CHECK(s);
    s->set = set;
    s->cfg = *cfg;
    if (s->cfg.prefetch_batches < 1)
        s->cfg.prefetch_batches = 1;
    if (!(s->cfg.scale == s->cfg.scale) || s->cfg.scale == 0.0f)
        s->cfg.scale = 1.0f;
    s->d = set->d;
    s->n_rows = cfg->row_end - cfg->row_begin;
    s->shuffle = cfg->window > 1;
    if (s->shuffle) {
        s->win = cfg->window;
    } else {
        /* Sequential: the permutation is the identity, so read in blocks of about 16 MiB. */
        int64_t block = ((int64_t)16 << 20) / ((int64_t)s->d * 4);
        int64_t need = (int64_t)cfg->batch * cfg->world;
        s->win = block > need ? block : need;
    }
    if (s->win > s->n_rows)
        s->win = s->n_rows;
    size_t wfloats = (size_t)s->win * (size_t)s->d;
    s->wx = malloc(wfloats * sizeof(float));
    s->wg = cfg->want_gradients ? malloc(wfloats * sizeof(float)) : NULL;
    s->perm = malloc((size_t)s->win * sizeof *s->perm);
    if (!s->wx || !s->perm || (cfg->want_gradients && !s->wg)) {
        shard_stream_free(s);
        return sf_fail(err, SF_EINPUT, "cannot allocate a shuffle window of %lld rows x %d; lower data.shuffle_buffer",
                       (long long)s->win, s->d);
    }
    s->w_epoch = s->w_idx = -1;

    s->epoch = cfg->start_epoch;
    s->pos = cfg->start_position;
    normalize(s, &s->epoch, &s->pos);
    s->r_epoch = s->epoch;
    s->r_pos = s->pos;
    s->r_end_epoch = cfg->loop ? INT64_MAX : s->epoch;

    s->n_slots = s->cfg.prefetch_batches;
    s->slots = calloc((size_t)s->n_slots, sizeof *s->slots);
    SF_CHECK(s->slots);
    size_t bfloats = (size_t)cfg->batch * (size_t)s->d;
    for (int i = 0; i < s->n_slots; i++) {
        s->slots[i].x = malloc(bfloats * sizeof(float));
        s->slots[i].g = cfg->want_gradients ? malloc(bfloats * sizeof(float)) : NULL;
        if (!s->slots[i].x || (cfg->want_gradients && !s->slots[i].g)) {
            shard_stream_free(s);
            return sf_fail(err, SF_EINPUT, "cannot allocate %d prefetch batches of %d rows; lower the batch size",
                           cfg->prefetch_batches, cfg->batch);
        }
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->not_empty, NULL);
    pthread_cond_init(&s->not_full, NULL);
    if (pthread_create(&s->thread, NULL, reader_main, s) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->not_empty);
        pthread_cond_destroy(&s->not_full);
        shard_stream_free(s);
        return sf_fail(err, SF_EFAIL, "cannot start the data reader thread");
    }
    s->thread_started = 1;
    *out = s;
    return SF_OK;
}

int shard_stream_next(shard_stream *s, float *x, float *g, sf_err *err)
{
    if (s->failed) {
        if (err)
            *err = s->fatal;
        return -1;
    }
    if (s->done)
        return 0;
    pthread_mutex_lock(&s->mu);
    if (s->count == 0) {
        double t0 = now_s();
        while (s->count == 0)
            pthread_cond_wait(&s->not_empty, &s->mu);
        s->wait_s += now_s() - t0;
    }
    slot *sl = &s->slots[s->head];
    pthread_mutex_unlock(&s->mu);

    int n;
    if (sl->failed) {
        s->failed = 1;
        s->fatal = sl->e;
        if (err)
            *err = sl->e;
        n = -1;
    } else {
        n = sl->n;
        size_t cnt = (size_t)n * (size_t)s->d;
        if (cnt)
            memcpy(x, sl->x, cnt * sizeof(float));
        if (g && s->cfg.want_gradients && cnt)
            memcpy(g, sl->g, cnt * sizeof(float));
        s->epoch = sl->epoch;
        s->pos = sl->pos;
        s->skipped = sl->skipped;
        s->done = sl->end;
    }

    pthread_mutex_lock(&s->mu);
    s->head = (s->head + 1) % s->n_slots;
    s->count--;
    pthread_cond_signal(&s->not_full);
    pthread_mutex_unlock(&s->mu);
    return n;
}

void shard_stream_position(const shard_stream *s, int64_t *epoch, int64_t *position)
{
    *epoch = s->epoch;
    *position = s->pos;
}

int64_t shard_stream_skipped(const shard_stream *s) { return s->skipped; }

double shard_stream_wait_seconds(const shard_stream *s) { return s->wait_s; }

void shard_stream_free(shard_stream *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_broadcast(&s->not_full);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->not_empty);
        pthread_cond_destroy(&s->not_full);
    }
    for (int i = 0; s->slots && i < s->n_slots; i++) {
        free(s->slots[i].x);
        free(s->slots[i].g);
    }
    free(s->slots);
    free(s->wx);
    free(s->wg);
    free(s->perm);
    free(s);
}
