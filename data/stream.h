/* Batches for training and evaluation: a seeded windowed shuffle over a row range of a shard set,
 * read ahead on a background thread, with bad-row handling. One stream can feed several SAEs
 * (the caller hands the same batch to each) and several ranks (rank/world select disjoint rows).
 *
 * Order (what makes resume exact without saving buffer contents): the row range is cut into
 * windows of `window` rows (the shuffle buffer); window w of epoch e is permuted by an RNG
 * seeded from (seed, e, w); batches are the concatenation of the permuted windows, of rows
 * r with (position_in_epoch % world) == rank. The position is the count of rows consumed
 * (skipped bad rows included), so state = (epoch, position). */
#ifndef STREAM_H
#define STREAM_H

#include <stdint.h>

#include "../host/sf_err.h"
#include "shard.h"

typedef struct shard_stream shard_stream;

typedef struct shard_stream_cfg {
    uint64_t seed;
    int64_t row_begin, row_end; /* global row range [begin, end) of the set */
    int64_t window;             /* shuffle window rows; <= 1 = sequential */
    int want_gradients;         /* deliver g as well (set must have gradients) */
    int skip_bad_rows;          /* 0: a NaN/Inf row is an error naming file and row */
    int loop;                   /* 1: start a new epoch at the end; 0: stop (eval) */
    float scale;                /* multiply x by this (input normalisation); 1 = off */
    int rank, world;            /* data parallel: 0, 1 for one process */
    int prefetch_batches;       /* batches read ahead (>= 1) */
    int batch;                  /* rows per batch */
    int64_t start_epoch, start_position; /* resume point */
} shard_stream_cfg;

int shard_stream_init(shard_stream **out, const shard_set *set, const shard_stream_cfg *cfg, sf_err *err);

/* Next batch: writes up to cfg.batch rows into x (and g); returns the rows delivered (0 at the
 * end of a non-looping stream), or -1 with err set (bad row with skip off, read failure). */
int shard_stream_next(shard_stream *s, float *x, float *g, sf_err *err);

/* The resume point after the last batch returned by shard_stream_next. */
void shard_stream_position(const shard_stream *s, int64_t *epoch, int64_t *position);
int64_t shard_stream_skipped(const shard_stream *s); /* bad rows skipped so far */
double shard_stream_wait_seconds(const shard_stream *s); /* time next() spent blocked on the reader */
void shard_stream_free(shard_stream *s);

#endif
