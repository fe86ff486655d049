/* Shared pieces of the benchmark programs: clocks, order statistics, machine description,
 * JSON-line output, memory figures and the synthetic "realistic" activation batches. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../host/rng.h"
#include "../kernels/sae_types.h"

/* Monotonic wall clock in seconds. */
double bench_now(void);

/* Order statistics of v[0..n) (v is sorted in place). */
double bench_median(double *v, int n);
double bench_min(const double *v, int n);

/* Peak resident set of this process so far (getrusage), MiB. */
double bench_rss_peak_mib(void);
/* MemAvailable from /proc/meminfo in bytes (0 if unknown). */
int64_t bench_mem_available(void);
/* 1-minute load average (-1 if unknown). */
double bench_loadavg(void);

/* Machine description, filled once. gpu/driver stay "none" unless a CUDA build sets them. */
typedef struct bench_machine {
    char cpu[128];
    int cores;
    char gpu[256];
    char driver[64];
    char host[64];
    char commit[48];
    char date[32];  /* ISO 8601 UTC */
} bench_machine;

void bench_machine_init(bench_machine *m);
#ifdef SF_WITH_CUDA
/* GPU name (cudaGetDeviceProperties) and driver version (cudaDriverGetVersion) of device 0. */
void bench_machine_fill_gpu(bench_machine *m);
#endif
/* Filesystem-safe short name: "<cpu>-<cores>c" or "<gpu>" in GPU runs. */
void bench_machine_slug(const bench_machine *m, char *out, size_t len);

/* Minimal JSON-line writer: j_begin, then fields, then j_end writes '\n' and flushes. Nested
 * objects: j_obj / j_close. Keys and strings are escaped. */
typedef struct jw {
    FILE *f;
    int first;
} jw;

void j_begin(jw *w, FILE *f);
void j_str(jw *w, const char *key, const char *val);
void j_num(jw *w, const char *key, double val);   /* NaN/Inf written as null */
void j_int(jw *w, const char *key, int64_t val);
void j_obj(jw *w, const char *key);
void j_close(jw *w);
void j_end(jw *w);
/* The fields every record carries: machine, commit, date, run id, load average. */
void j_common(jw *w, const bench_machine *m, const char *run_id);

/* Arch names as in the config ("topk", "gsae", "batchtopk", "matryoshka"); -1 if unknown. */
int bench_arch_parse(const char *s);
const char *bench_arch_name(int arch);

/* Hyper-parameters of a benchmark configuration, with the project's defaults (aux_k = d/2,
 * aux_alpha 1/32, dead_tokens 10M, Adam 0.9/0.999/1e-8, theta EMA 0.99, gsae beta 1,
 * matryoshka prefixes n/16, n/4, n). */
sae_hparams bench_hparams(int arch, int d, int n, int k, sae_precision prec);

/* Realistic-looking activations: x_b = mu + sum of `active` features of a hidden dictionary of
 * F unit directions with exponential magnitudes, plus isotropic noise; heavy-tailed per-token
 * norms like a residual stream. g (optional) = small Gaussian gradients with a component along
 * the token's active features. */
typedef struct bench_gen {
    int d, F, active;
    float *dict; /* (F, d) */
    float *mu;   /* (d) */
    sf_rng rng;
} bench_gen;

void bench_gen_init(bench_gen *gn, int d, uint64_t seed);
void bench_gen_batch(bench_gen *gn, int B, float *x, float *g); /* g may be NULL */
void bench_gen_free(bench_gen *gn);

/* Aborting allocation. */
void *bench_alloc(size_t bytes);

#endif
