/* Data-path benchmark: throughput of the shard reader (shard_stream_next, float32 delivered)
 * from a page-cached float16 shard, and the fraction of a training loop's time spent waiting
 * for data (shard_stream_wait_seconds) with the CPU backend consuming the batches. The shard is
 * written here (data/shard_write.h: chunked row blocks, IEEE half), then removed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../data/shard.h"
#include "../data/shard_write.h"
#include "../data/stream.h"
#include "../host/backend_open.h"
#include "../host/config.h"
#include "../host/sae_init.h"
#include "../kernels/backend.h"
#include "../kernels/sf_check.h"
#include "bench_util.h"

typedef struct opts {
    int d, B, n, k, arch;
    int64_t rows;
    int steps, threads, prefetch;
    int64_t window;
    const char *dir, *out, *run;
} opts;

/* A float16 shard of `rows` rows in chunks of ~2 MiB, from the synthetic generator, written with
 * the project's own writer (data/shard_write.h). */
static int write_f16_shard(const char *path, int64_t rows, int d, uint64_t seed)
{
    int64_t chunk = (2 << 20) / (2 * (int64_t)d);
    if (chunk < 1)
        chunk = 1;
    if (chunk > rows)
        chunk = rows;
    shard_write_opts wo;
    memset(&wo, 0, sizeof wo);
    wo.dtype = SHARD_F16;
    wo.chunk_rows = chunk;
    wo.context_size = -1;
    shard_writer wr;
    sf_err err;
    memset(&err, 0, sizeof err);
    if (shard_writer_open(&wr, path, rows, d, &wo, &err)) {
        fprintf(stderr, "data_bench: %s\n", err.msg);
        return -1;
    }
    bench_gen gen;
    bench_gen_init(&gen, d, seed);
    float *x = bench_alloc((size_t)chunk * d * sizeof(float));
    int rc = 0;
    for (int64_t r = 0; r < rows && !rc; r += chunk) {
        int64_t cnt = rows - r < chunk ? rows - r : chunk;
        bench_gen_batch(&gen, (int)cnt, x, NULL);
        rc = shard_writer_write(&wr, r, cnt, x, NULL, NULL, &err);
    }
    if (!rc)
        rc = shard_writer_commit(&wr, &err);
    else
        shard_writer_abort(&wr);
    if (rc)
        fprintf(stderr, "data_bench: %s\n", err.msg);
    free(x);
    bench_gen_free(&gen);
    return rc ? -1 : 0;
}

static shard_stream_cfg stream_cfg(const opts *o, const shard_set *set, int64_t window, int loop)
{
    shard_stream_cfg c;
    memset(&c, 0, sizeof c);
    c.seed = 7;
    c.row_begin = 0;
    c.row_end = set->rows;
    c.window = window;
    c.loop = loop;
    c.scale = 1.0f;
    c.rank = 0;
    c.world = 1;
    c.prefetch_batches = o->prefetch;
    c.batch = o->B;
    return c;
}

/* One pass over the shard with nothing else running: GB/s of float32 delivered. */
static int reader_pass(const opts *o, const shard_set *set, int64_t window, double *gbps,
                       double *wait_frac, double *secs)
{
    sf_err err;
    memset(&err, 0, sizeof err);
    shard_stream_cfg c = stream_cfg(o, set, window, 0);
    shard_stream *st;
    if (shard_stream_init(&st, set, &c, &err)) {
        fprintf(stderr, "data_bench: %s\n", err.msg);
        return -1;
    }
    float *x = bench_alloc((size_t)o->B * set->d * sizeof(float));
    int64_t rows = 0;
    double t0 = bench_now();
    for (;;) {
        int got = shard_stream_next(st, x, NULL, &err);
        if (got < 0) {
            fprintf(stderr, "data_bench: %s\n", err.msg);
            free(x);
            shard_stream_free(st);
            return -1;
        }
        if (got == 0)
            break;
        rows += got;
    }
    double t = bench_now() - t0;
    *secs = t;
    *gbps = (double)rows * set->d * 4.0 / t / 1e9;
    *wait_frac = shard_stream_wait_seconds(st) / t;
    free(x);
    shard_stream_free(st);
    return rows == set->rows ? 0 : -1;
}

int main(int argc, char **argv)
{
    opts o = {.d = 768, .B = 4096, .n = 16384, .k = 32, .arch = SAE_ARCH_TOPK, .rows = 262144,
              .steps = 10, .threads = 0, .prefetch = 4, .window = 65536, .dir = NULL, .out = NULL,
              .run = NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: data_bench [--d D] [--rows N] [--B B] [--n N] [--k K] [--arch A]\n"
                   "         [--steps S] [--threads T] [--prefetch P] [--window W] [--dir DIR]\n"
                   "         [--out FILE.jsonl] [--run ID]\n");
            return 0;
        }
        if (!v) {
            fprintf(stderr, "data_bench: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--d"))
            o.d = atoi(v);
        else if (!strcmp(a, "--rows"))
            o.rows = atoll(v);
        else if (!strcmp(a, "--B"))
            o.B = atoi(v);
        else if (!strcmp(a, "--n"))
            o.n = atoi(v);
        else if (!strcmp(a, "--k"))
            o.k = atoi(v);
        else if (!strcmp(a, "--arch"))
            o.arch = bench_arch_parse(v);
        else if (!strcmp(a, "--steps"))
            o.steps = atoi(v);
        else if (!strcmp(a, "--threads"))
            o.threads = atoi(v);
        else if (!strcmp(a, "--prefetch"))
            o.prefetch = atoi(v);
        else if (!strcmp(a, "--window"))
            o.window = atoll(v);
        else if (!strcmp(a, "--dir"))
            o.dir = v;
        else if (!strcmp(a, "--out"))
            o.out = v;
        else if (!strcmp(a, "--run"))
            o.run = v;
        else {
            fprintf(stderr, "data_bench: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (o.d < 1 || o.B < 1 || o.rows < o.B || o.arch < 0 || o.arch == SAE_ARCH_GSAE || o.steps < 2 ||
        o.prefetch < 1) {
        fprintf(stderr, "data_bench: bad options (rows >= B, steps >= 2, arch without gradients)\n");
        return 2;
    }
    bench_machine mach;
    bench_machine_init(&mach);
    if (o.threads <= 0)
        o.threads = mach.cores;
    const char *dir = o.dir ? o.dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[1024];
    snprintf(path, sizeof path, "%s/saeforge-bench-%d.h5", dir, (int)getpid());

    double tw = bench_now();
    if (write_f16_shard(path, o.rows, o.d, 3) != 0) {
        fprintf(stderr, "data_bench: cannot create %s; pass --dir to a writable directory\n", path);
        return 2;
    }
    tw = bench_now() - tw;
    shard_set set;
    sf_err err;
    memset(&err, 0, sizeof err);
    if (shard_set_open(&set, path, 0, &err)) {
        fprintf(stderr, "data_bench: %s\n", err.msg);
        unlink(path);
        return 1;
    }
    int rc = 0;
    double gb_shuf = NAN, gb_seq = NAN, wf_shuf = NAN, wf_seq = NAN, s_shuf = NAN, s_seq = NAN;
    double dummy_g, dummy_w, dummy_s;
    /* warm pass: page cache and allocator; the file was just written, so mostly cached already */
    if (reader_pass(&o, &set, 0, &dummy_g, &dummy_w, &dummy_s) ||
        reader_pass(&o, &set, 0, &gb_seq, &wf_seq, &s_seq) ||
        reader_pass(&o, &set, o.window, &gb_shuf, &wf_shuf, &s_shuf)) {
        fprintf(stderr, "data_bench: reader pass failed\n");
        rc = 1;
    }

    /* Training loop: stream (looping, shuffled) -> CPU backend, the quick configuration. */
    double loop_s = NAN, wait_s = NAN, wait_first = NAN, step_s = NAN;
    if (!rc) {
        sae_hparams hp = bench_hparams(o.arch, o.d, o.n, o.k, SAE_PREC_FP32);
        char why[256] = "";
        sae_backend *be = backend_open(&hp, o.B, 1, o.threads, why, (int)sizeof why);
        SF_CHECK(be != NULL);
        shard_stream_cfg c = stream_cfg(&o, &set, o.window, 1);
        shard_stream *st;
        if (shard_stream_init(&st, &set, &c, &err)) {
            fprintf(stderr, "data_bench: %s\n", err.msg);
            rc = 1;
        } else {
            float *x = bench_alloc((size_t)o.B * o.d * sizeof(float));
            sae_params init;
            sae_params_alloc(&init, o.d, o.n);
            sf_rng rng;
            rng_seed(&rng, 1, 1);
            double t0 = bench_now();
            double compute = 0.0;
            for (int s = 0; s < o.steps && !rc; s++) {
                int got = shard_stream_next(st, x, NULL, &err);
                if (got <= 0) {
                    fprintf(stderr, "data_bench: stream: %s\n", err.msg);
                    rc = 1;
                    break;
                }
                if (s == 0) {
                    wait_first = shard_stream_wait_seconds(st);
                    sae_init_params(&init, o.d, o.n, config_init_scale_for(o.arch, 0), &rng, x, got);
                    be->set_params(be, &init);
                    t0 = bench_now(); /* steady state: from the first batch on */
                }
                sae_metrics mt;
                double ts = bench_now();
                be->train_step(be, x, NULL, got, o.k, 2e-4f, s, &mt);
                compute += bench_now() - ts;
            }
            loop_s = bench_now() - t0;
            wait_s = shard_stream_wait_seconds(st) - wait_first;
            step_s = compute / o.steps;
            free(x);
            sae_params_free(&init);
            shard_stream_free(st);
        }
        be->free(be);
    }
    shard_set_free(&set);
    unlink(path);
    if (rc)
        return rc;

    FILE *f = o.out && strcmp(o.out, "-") ? fopen(o.out, "a") : stdout;
    if (!f) {
        fprintf(stderr, "data_bench: cannot open %s for appending\n", o.out);
        return 2;
    }
    jw w;
    j_begin(&w, f);
    j_str(&w, "kind", "data");
    j_common(&w, &mach, o.run);
    j_obj(&w, "config");
    j_str(&w, "dtype", "float16");
    j_int(&w, "d", o.d);
    j_int(&w, "rows", o.rows);
    j_int(&w, "B", o.B);
    j_int(&w, "window", o.window);
    j_int(&w, "prefetch", o.prefetch);
    j_str(&w, "loop_arch", bench_arch_name(o.arch));
    j_int(&w, "loop_n", o.n);
    j_int(&w, "loop_k", o.k);
    j_int(&w, "loop_steps", o.steps);
    j_int(&w, "threads", o.threads);
    j_close(&w);
    j_obj(&w, "figures");
    j_num(&w, "shard_MiB", (double)o.rows * o.d * 2 / 1048576.0);
    j_num(&w, "write_s", tw);
    j_num(&w, "reader_seq_GBps", gb_seq);
    j_num(&w, "reader_shuffled_GBps", gb_shuf);
    j_num(&w, "loop_s", loop_s);
    j_num(&w, "loop_step_s", step_s);
    j_num(&w, "loop_wait_s", wait_s);
    j_num(&w, "loop_wait_frac", wait_s / loop_s);
    j_num(&w, "loop_first_wait_s", wait_first);
    j_num(&w, "rss_peak_MiB", bench_rss_peak_mib());
    j_close(&w);
    j_end(&w);
    if (f != stdout)
        fclose(f);
    fprintf(stderr,
            "data_bench: f16 d=%d: reader %.2f GB/s sequential, %.2f GB/s shuffled (window %lld); "
            "training loop waits %.1f%% of %.1f s\n",
            o.d, gb_seq, gb_shuf, (long long)o.window, 100.0 * wait_s / loop_s, loop_s);
    return 0;
}
