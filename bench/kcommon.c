/* Shared pieces of the kernel benchmarks (see kcommon.h). */
#include "kcommon.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


int kern_parse(kern_opts *o, int argc, char **argv, const char *prog)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "%s: %s needs a value (options: --B --d --n --k --reps --out --run)\n",
                    prog, a);
            return 1;
        }
        i++;
        if (!strcmp(a, "--B"))
            o->B = atoi(v);
        else if (!strcmp(a, "--d"))
            o->d = atoi(v);
        else if (!strcmp(a, "--n"))
            o->n = atoi(v);
        else if (!strcmp(a, "--k"))
            o->k = atoi(v);
        else if (!strcmp(a, "--reps"))
            o->reps = atoi(v);
        else if (!strcmp(a, "--out"))
            o->out = v;
        else if (!strcmp(a, "--run"))
            o->run = v;
        else {
            fprintf(stderr, "%s: unknown option '%s'\n", prog, a);
            return 1;
        }
    }
    if (o->B < 1 || o->d < 1 || o->n < 2 || o->k < 1 || o->k > o->n || o->reps < 1 ||
        o->reps > KERN_MAX_REPS) {
        fprintf(stderr, "%s: need B, d >= 1, n >= 2, 1 <= k <= n, 1 <= reps <= %d\n", prog,
                KERN_MAX_REPS);
        return 1;
    }
    return 0;
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

void kern_random_code(sf_rng *rng, int B, int n, int k, int *row_ptr, int *lat, float *val)
{
    for (int b = 0; b <= B; b++)
        row_ptr[b] = b * k;
    for (int b = 0; b < B; b++) {
        int *l = lat + (size_t)b * k;
        float *v = val + (size_t)b * k;
        int keep = b % 17 == 3 ? k / 2 : k; /* some rows with padding */
        int c = 0;
        while (c < keep) {
            double u = rng_uniform(rng);
            int i = (int)((double)n * u * u);
            if (i >= n)
                i = n - 1;
            int dup = 0;
            for (int q = 0; q < c; q++)
                dup |= l[q] == i;
            if (!dup)
                l[c++] = i;
        }
        qsort(l, (size_t)keep, sizeof(int), cmp_int);
        for (int q = 0; q < keep; q++)
            v[q] = (float)(0.05 + rng_uniform(rng));
        for (int q = keep; q < k; q++) {
            l[q] = -1;
            v[q] = 0.0f;
        }
    }
}

double kern_max_err(const float *a, const float *b, size_t count, double atol, double rtol)
{
    double worst = 0.0;
    for (size_t i = 0; i < count; i++) {
        double e = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (!(e <= worst)) /* NaN counts as a mismatch */
            worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

void kern_report(const kern_opts *o, const bench_machine *m, const char *op, const char *impl,
                 double *ts, int reps, double bytes, double flops, double err)
{
    double best = bench_min(ts, reps), med = bench_median(ts, reps);
    FILE *f = o->out && strcmp(o->out, "-") ? fopen(o->out, "a") : stdout;
    if (!f) {
        fprintf(stderr, "cannot open %s for appending\n", o->out);
        exit(2);
    }
    jw w;
    j_begin(&w, f);
    j_str(&w, "kind", "kernel");
    j_common(&w, m, o->run);
    j_obj(&w, "config");
    j_str(&w, "op", op);
    j_str(&w, "impl", impl);
    j_int(&w, "B", o->B);
    j_int(&w, "d", o->d);
    j_int(&w, "n", o->n);
    j_int(&w, "k", o->k);
    j_int(&w, "reps", reps);
    j_close(&w);
    j_obj(&w, "figures");
    j_num(&w, "min_s", best);
    j_num(&w, "med_s", med);
    if (bytes > 0)
        j_num(&w, "GBps", bytes / best / 1e9);
    if (flops > 0)
        j_num(&w, "gflops", flops / best / 1e9);
    j_num(&w, "max_scaled_err", err);
    j_close(&w);
    j_end(&w);
    if (f != stdout)
        fclose(f);
    fprintf(stderr, "kern %-10s %-4s B=%d d=%d n=%d k=%d: min %.3f ms, median %.3f ms", op, impl,
            o->B, o->d, o->n, o->k, best * 1e3, med * 1e3);
    if (bytes > 0)
        fprintf(stderr, ", %.1f GB/s", bytes / best / 1e9);
    fprintf(stderr, " (check ok, scaled err %.2g)\n", err);
}
