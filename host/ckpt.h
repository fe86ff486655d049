/* Checkpoints (SPEC §4): <run>/checkpoints/step_<N>/{sae,state}.safetensors + DONE, written
 * atomically, newest complete one found on resume, damaged ones skipped with a message. */
#ifndef CKPT_H
#define CKPT_H

#include <stdint.h>

#include "../kernels/sae_types.h"
#include "sf_err.h"

typedef struct ckpt_meta {
    int64_t step;           /* steps completed */
    int64_t tokens_seen;
    int64_t data_epoch, data_position; /* shard_stream resume point */
    int64_t skipped_rows;
    float input_scale;      /* data.normalize factor c (1 = none) */
    int64_t scale_batches;  /* batches already folded into the scale estimate */
    double scale_norm_sum;  /* running sum of |x| for the estimate */
    uint64_t rng[4];        /* host RNG state */
    double elapsed_s;       /* training wall time so far */
    int d, n;
    char arch[32];
} ckpt_meta;

/* Writes step_<m->step> under run_dir/checkpoints: both files (each with a CRC32C of its
 * payload in the metadata) and DONE into a temp dir, fsynced, then one rename (an atomic
 * exchange when that step exists already) and an fsync of the parent; then removes all but the
 * newest `keep` complete ones. step_<N> is never visible incomplete. */
int ckpt_save(const char *run_dir, const sae_params *p, const sae_state *s, const ckpt_meta *m,
              int keep, sf_err *err);

/* Removes all but the newest `keep` complete checkpoints of run_dir (keep <= 0: none removed);
 * a sweep saves every member with keep = 0 and prunes only once the sweep marker is written. */
void ckpt_prune(const char *run_dir, int keep);

/* Finds the newest complete checkpoint dir. Returns 1 and fills path if found, 0 if none (also
 * when run_dir does not exist), -SF_EINPUT only when run_dir or its checkpoints cannot be read.
 * Damaged checkpoints (unreadable files, checksum mismatch) are skipped with one line each on
 * stderr; leftovers of interrupted saves (temp dirs, step dirs without DONE) are removed. */
int ckpt_find_latest(const char *run_dir, char *path, int len, sf_err *err);

/* Loads a checkpoint dir, checking d, n and arch against the caller's (expected) values in m
 * on input (m->d, m->n, m->arch); fills p, s (allocated by caller) and the rest of m. */
int ckpt_load(const char *ckpt_dir, sae_params *p, sae_state *s, ckpt_meta *m, sf_err *err);

/* Reads only what a checkpoint dir describes (d, n, arch, step, tokens_seen, input_scale,
 * elapsed_s) into m (other fields zeroed), so callers can allocate before ckpt_load. */
int ckpt_peek(const char *ckpt_dir, ckpt_meta *m, sf_err *err);

#endif
