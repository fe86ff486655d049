/* Shared pieces of the kernel benchmarks (bench/kern_*.c): options, random codes, the parity
 * check and the JSON report line. */
#ifndef BENCH_KCOMMON_H
#define BENCH_KCOMMON_H

#include <stddef.h>

#include "../host/rng.h"
#include "bench_util.h"

#define KERN_MAX_REPS 1000

typedef struct kern_opts {
    int B, d, n, k, reps;
    const char *out, *run;
} kern_opts;

/* Parses --B --d --n --k --reps --out --run over the defaults in o; prints a message and
 * returns nonzero on a bad option. */
int kern_parse(kern_opts *o, int argc, char **argv, const char *prog);

/* A row top-k shaped code: row b has up to k distinct latents in ascending order (a few rows end
 * in padding, lat -1, val 0), values positive; row_ptr[b] = b*k. Popular latents are drawn more
 * often (Zipf-like), as in training. */
void kern_random_code(sf_rng *rng, int B, int n, int k, int *row_ptr, int *lat, float *val);

/* max over i of |a - b| / (atol + rtol |b|): <= 1 means every element is within tolerance. */
double kern_max_err(const float *a, const float *b, size_t count, double atol, double rtol);

/* One JSON line (kind "kernel") to o->out (append) or stdout, and a line on stderr. bytes/flops
 * per call give GB/s and GFLOP/s from the best time (0 = not reported). */
void kern_report(const kern_opts *o, const bench_machine *m, const char *op, const char *impl,
                 double *ts, int reps, double bytes, double flops, double err);

#endif
