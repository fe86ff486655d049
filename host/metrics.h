/* Run output while training: metrics.jsonl (one JSON object per log step and per eval) and
 * the live progress line (terminal) or plain log lines (otherwise). */
#ifndef METRICS_H
#define METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "../kernels/sae_types.h"
#include "sf_err.h"

typedef struct metrics_log {
    FILE *f;        /* <run>/metrics.jsonl, appended, flushed per line */
    int live;       /* progress line with \r on a terminal */
    int line_open;  /* a live line is on screen */
} metrics_log;

/* Opens <run>/metrics.jsonl. When resuming from keep_step >= 0, lines of later steps (work
 * lost since that checkpoint) are dropped first, atomically, so a resumed run's file equals a
 * straight run's. */
int metrics_open(metrics_log *m, const char *run_dir, int64_t keep_step, int live, sf_err *err);

/* One training log line. Timing fields (elapsed_s, tokens_per_s) are the only ones that differ
 * between a straight and a resumed run. */
void metrics_train(metrics_log *m, int64_t step, int64_t tokens, float lr, int k,
                   const sae_metrics *mt, double elapsed_s, double tokens_per_s);
void metrics_eval(metrics_log *m, int64_t step, int64_t tokens, const sae_metrics *acc);
/* The end-of-run evaluation: an eval record with "final": true, which metrics_open drops on
 * resume (it is written after the last checkpoint and is written again). */
void metrics_eval_final(metrics_log *m, int64_t step, int64_t tokens, const sae_metrics *acc);
/* Progress: live line or plain line to stderr. */
void metrics_progress(metrics_log *m, int64_t step, int64_t total_steps, const sae_metrics *mt,
                      double tokens_per_s, double eta_s);
void metrics_close(metrics_log *m);

#endif
