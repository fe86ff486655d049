/* Whole-step benchmark of one configuration: the backend's train_step (median/min, tokens/s),
 * a per-phase breakdown from the backend's own phase timers (kernels/profile.h), and the limits
 * measured in the same process: the encoder-shaped GEMM alone and a copy bandwidth. Writes one
 * JSON line. With --dead FRAC that share of the latents is dead at the start of every timed
 * step (re-marked outside the timing), so AuxK runs in every measured step.
 * bench/run.sh drives the grid, one process per configuration, so peak RSS is per configuration. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../data/shard.h"
#include "../host/backend_open.h"
#include "../host/config.h"
#include "../host/sae_init.h"
#include "../kernels/backend.h"
#include "../kernels/input16.h"
#include "../kernels/sf_check.h"
#include "bench_util.h"

#ifdef SF_WITH_CUDA
#include "../kernels/cuda_compat.h"
#endif

typedef struct opts {
    const char *backend; /* cpu | cuda */
    int arch, d, n, k, B;
    int warmup, reps;
    double max_seconds; /* budget for the timed steps of each of the timing and the profiled loop */
    int threads;
    double dead_frac;
    sae_precision prec;
    const char *out, *run;
    int phases;
    uint64_t seed;
    float lr;
    sae_input_dtype upload; /* --upload-dtype: the batch format handed to the backend */
} opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: step_bench [--backend cpu|cuda] [--arch topk|gsae|batchtopk|matryoshka]\n"
            "         [--d D] [--n N] [--k K] [--B B] [--warmup W] [--reps R] [--max-seconds S]\n"
            "         [--threads T] [--dead FRAC] [--precision fp32|tf32|bf16] [--no-phases]\n"
            "         [--seed S] [--upload-dtype f32|f16|bf16] [--out FILE.jsonl] [--run ID]\n"
            "  --upload-dtype f16|bf16: the batches are rounded to that dtype and handed over as a\n"
            "         16-bit shard's rows (backend.h, set_input_format; CUDA: half the upload bytes)\n"
            "       step_bench --slug [--backend cuda]   print the machine's results-file name\n");
}

static int parse_prec(const char *s)
{
    return !strcmp(s, "fp32") ? SAE_PREC_FP32 : !strcmp(s, "tf32") ? SAE_PREC_TF32
                                            : !strcmp(s, "bf16") ? SAE_PREC_BF16 : -1;
}

static const char *prec_name(sae_precision p)
{
    return p == SAE_PREC_TF32 ? "tf32" : p == SAE_PREC_BF16 ? "bf16" : "fp32";
}

/* since_fired = dead_tokens for a deterministic dead_frac of the latents (a multiplicative hash
 * spreads them over the index range). */
static void mark_dead(int64_t *since_fired, int n, int64_t dead_tokens, double dead_frac)
{
    for (int i = 0; i < n; i++)
        if ((double)(((uint32_t)i * 2654435761u) % 100000u) < dead_frac * 100000.0)
            since_fired[i] = dead_tokens;
}

/* Re-marks the dead latents: they revive as soon as they fire, and a bench of AuxK needs them
 * dead in every timed step. A no-op without --dead. */
static void keep_dead(sae_backend *be, sae_state *st, int n, int64_t dead_tokens, double dead_frac)
{
    if (dead_frac <= 0.0)
        return;
    be->get_state(be, st);
    mark_dead(st->since_fired, n, dead_tokens, dead_frac);
    be->set_state(be, st);
}

/* ---- limits on the CPU ------------------------------------------------------------------- */
/* The encoder GEMM alone, timed interleaved with the steps so both see the same machine load. */
typedef struct gemm_ctx {
    int cuda, B, d, n, threads;
    sae_precision prec;
    const float *u, *W; /* host (CPU) */
    float *C;
#ifdef SF_WITH_CUDA
    float *du, *dW, *dC;
    void *ub, *Wb;
    cublasHandle_t h;
    cudaEvent_t e0, e1;
#endif
} gemm_ctx;

/* Same call and shape as enc_forward_cpu: pre(B,n) += u(B,d) W(n,d)^T. */
static double gemm_cpu_run(gemm_ctx *g)
{
    int saved = openblas_get_num_threads();
    openblas_set_num_threads(g->threads);
    double t0 = bench_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->B, g->n, g->d, 1.0f, g->u, g->d, g->W,
                g->d, 1.0f, g->C, g->n);
    double t = bench_now() - t0;
    openblas_set_num_threads(saved);
    return t;
}

/* Copy bandwidth with the step's thread count: every thread copies its slice (read + write
 * bytes counted, as STREAM's copy does). Returns GB/s of the best of the repeats. */
static double copy_cpu(size_t bytes, int threads)
{
    char *a = bench_alloc(bytes), *b = bench_alloc(bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best = INFINITY;
    for (int r = 0; r < 6; r++) {
        double t0 = bench_now();
#pragma omp parallel num_threads(threads)
        {
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
            size_t chunk = (bytes + (size_t)nt - 1) / (size_t)nt;
            size_t lo = (size_t)id * chunk, hi = lo + chunk < bytes ? lo + chunk : bytes;
            if (lo < hi)
                memcpy(b + lo, a + lo, hi - lo);
        }
        double t = bench_now() - t0;
        if (r > 0 && t < best) /* the first pass also faults the pages in */
            best = t;
    }
    free(a);
    free(b);
    return 2.0 * (double)bytes / best / 1e9;
}

#ifdef SF_WITH_CUDA
/* ---- limits on the GPU ------------------------------------------------------------------- */
/* The encoder GEMM alone on the device with the step's precision (cuBLAS, fp32 output). */
static void gemm_cuda_init(gemm_ctx *g, const float *u_h, const float *W_h)
{
    int B = g->B, d = g->d, n = g->n;
    g->ub = g->Wb = NULL;
    CUDA_CHECK(cudaMalloc((void **)&g->du, (size_t)B * d * 4));
    CUDA_CHECK(cudaMalloc((void **)&g->dW, (size_t)n * d * 4));
    CUDA_CHECK(cudaMalloc((void **)&g->dC, (size_t)B * n * 4));
    CUDA_CHECK(cudaMemset(g->dC, 0, (size_t)B * n * 4));
    CUDA_CHECK(cudaMemcpy(g->du, u_h, (size_t)B * d * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(g->dW, W_h, (size_t)n * d * 4, cudaMemcpyHostToDevice));
    CUBLAS_CHECK(cublasCreate(&g->h));
    if (g->prec == SAE_PREC_BF16) {
        /* bf16 inputs: rounded to nearest even on the host, then uploaded */
        uint16_t *tmp = bench_alloc((size_t)(n > B ? n : B) * d * 2);
        size_t cnt[2] = {(size_t)B * d, (size_t)n * d};
        const float *src[2] = {u_h, W_h};
        void **dst[2] = {&g->ub, &g->Wb};
        for (int t = 0; t < 2; t++) {
            for (size_t i = 0; i < cnt[t]; i++) {
                uint32_t bits;
                memcpy(&bits, &src[t][i], 4);
                bits += 0x7FFFu + ((bits >> 16) & 1u);
                tmp[i] = (uint16_t)(bits >> 16);
            }
            CUDA_CHECK(cudaMalloc(dst[t], cnt[t] * 2));
            CUDA_CHECK(cudaMemcpy(*dst[t], tmp, cnt[t] * 2, cudaMemcpyHostToDevice));
        }
        free(tmp);
    }
    CUDA_CHECK(cudaEventCreate(&g->e0));
    CUDA_CHECK(cudaEventCreate(&g->e1));
}

static double gemm_cuda_run(gemm_ctx *g)
{
    const float one = 1.0f;
    int B = g->B, d = g->d, n = g->n;
    CUDA_CHECK(cudaEventRecord(g->e0, 0));
    /* column-major view: C^T (n, B) = W (n, d) * u^T (d, B) */
    if (g->prec == SAE_PREC_FP32)
        CUBLAS_CHECK(cublasSgemm(g->h, CUBLAS_OP_T, CUBLAS_OP_N, n, B, d, &one, g->dW, d, g->du, d,
                                 &one, g->dC, n));
    else if (g->prec == SAE_PREC_TF32)
        CUBLAS_CHECK(cublasGemmEx(g->h, CUBLAS_OP_T, CUBLAS_OP_N, n, B, d, &one, g->dW, CUDA_R_32F,
                                  d, g->du, CUDA_R_32F, d, &one, g->dC, CUDA_R_32F, n,
                                  CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
    else
        CUBLAS_CHECK(cublasGemmEx(g->h, CUBLAS_OP_T, CUBLAS_OP_N, n, B, d, &one, g->Wb, CUDA_R_16BF,
                                  d, g->ub, CUDA_R_16BF, d, &one, g->dC, CUDA_R_32F, n,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    CUDA_CHECK(cudaEventRecord(g->e1, 0));
    CUDA_CHECK(cudaEventSynchronize(g->e1));
    float ms;
    CUDA_CHECK(cudaEventElapsedTime(&ms, g->e0, g->e1));
    return ms * 1e-3;
}

static void gemm_cuda_free(gemm_ctx *g)
{
    cublasDestroy(g->h);
    cudaEventDestroy(g->e0);
    cudaEventDestroy(g->e1);
    cudaFree(g->du);
    cudaFree(g->dW);
    cudaFree(g->dC);
    cudaFree(g->ub);
    cudaFree(g->Wb);
}

/* Device-to-device copy bandwidth (read + write bytes), best of repeats. */
static double copy_cuda(size_t bytes)
{
    void *a, *b;
    CUDA_CHECK(cudaMalloc(&a, bytes));
    CUDA_CHECK(cudaMalloc(&b, bytes));
    CUDA_CHECK(cudaMemset(a, 1, bytes));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    double best = INFINITY;
    for (int r = 0; r < 8; r++) {
        CUDA_CHECK(cudaEventRecord(e0, 0));
        CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0));
        CUDA_CHECK(cudaEventRecord(e1, 0));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (r > 0 && ms * 1e-3 < best)
            best = ms * 1e-3;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return 2.0 * (double)bytes / best / 1e9;
}

static double dev_used_mib(void)
{
    size_t fr = 0, tot = 0;
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    return (double)(tot - fr) / (1024.0 * 1024.0);
}
#endif

/* ---- the record ---------------------------------------------------------------------------- */
static void write_config(jw *w, const opts *o, const sae_hparams *hp)
{
    j_obj(w, "config");
    j_str(w, "backend", o->backend);
    j_str(w, "arch", bench_arch_name(o->arch));
    j_int(w, "d", o->d);
    j_int(w, "n", o->n);
    j_int(w, "k", o->k);
    j_int(w, "B", o->B);
    j_str(w, "precision", prec_name(o->prec));
    j_int(w, "threads", o->threads);
    j_num(w, "dead_frac", o->dead_frac);
    j_int(w, "aux_k", hp->aux_k);
    j_str(w, "upload_dtype", o->upload == SAE_INPUT_F16 ? "f16" : o->upload == SAE_INPUT_BF16 ? "bf16" : "f32");
    if (o->arch == SAE_ARCH_MATRYOSHKA)
        j_int(w, "prefixes", hp->n_prefixes);
    j_close(w);
}

static FILE *open_out(const opts *o)
{
    if (!o->out || !strcmp(o->out, "-"))
        return stdout;
    FILE *f = fopen(o->out, "a");
    if (!f) {
        fprintf(stderr, "step_bench: cannot open %s for appending; check the directory exists\n", o->out);
        exit(2);
    }
    return f;
}

static void write_skip(const opts *o, const bench_machine *m, const sae_hparams *hp, const char *why)
{
    FILE *f = open_out(o);
    jw w;
    j_begin(&w, f);
    j_str(&w, "kind", "step");
    j_common(&w, m, o->run);
    write_config(&w, o, hp);
    j_str(&w, "skipped", why);
    j_end(&w);
    if (f != stdout)
        fclose(f);
    fprintf(stderr, "step_bench: skipped %s d=%d n=%d k=%d B=%d: %s\n", bench_arch_name(o->arch),
            o->d, o->n, o->k, o->B, why);
}

/* Rounds the pool to dtype values (nearest even), as a 16-bit shard would hold them. */
static void round_pool(float *xs, float *gs, size_t count, sae_input_dtype dt)
{
    for (size_t i = 0; i < count; i++) {
        if (dt == SAE_INPUT_BF16) {
            xs[i] = shard_bf16_to_f32(shard_f32_to_bf16(xs[i]));
            if (gs)
                gs[i] = shard_bf16_to_f32(shard_f32_to_bf16(gs[i]));
        } else {
            xs[i] = shard_f16_to_f32(shard_f32_to_f16(xs[i]));
            if (gs)
                gs[i] = shard_f16_to_f32(shard_f32_to_f16(gs[i]));
        }
    }
}

/* Host cost of the narrowing a 16-bit upload does per batch (best of a few, ns per value). */
static double narrow_ns_per_value(const float *x, size_t count, sae_input_dtype dt)
{
    uint16_t *o = bench_alloc(count * sizeof(uint16_t));
    double best = INFINITY;
    for (int r = 0; r < 6; r++) {
        double t0 = bench_now();
        SF_CHECK(input16_narrow(x, count, dt, o));
        double t = bench_now() - t0;
        if (r > 0 && t < best) /* the first pass also faults the pages in */
            best = t;
    }
    free(o);
    return best * 1e9 / (double)count;
}

/* The batch as the training driver hands it over: in the backend's own input buffers when it
 * lends them (CUDA: pinned staging, so no extra host copy), else in ours. The copy into them is
 * data delivery, which the data bench measures, so it stays outside the timed step. */
static void feed(sae_backend *be, const float *xs, const float *gs, size_t Bd, int slot,
                 const float **bx, const float **bg)
{
    *bx = xs + (size_t)slot * Bd;
    *bg = gs ? gs + (size_t)slot * Bd : NULL;
    if (!be->input_buffer)
        return;
    float *ix = be->input_buffer(be, 0);
    memcpy(ix, *bx, Bd * sizeof(float));
    *bx = ix;
    if (gs) {
        float *ig = be->input_buffer(be, 1);
        memcpy(ig, *bg, Bd * sizeof(float));
        *bg = ig;
    }
}

int main(int argc, char **argv)
{
    opts o = {.backend = "cpu", .arch = SAE_ARCH_TOPK, .d = 768, .n = 16384, .k = 32, .B = 0,
              .warmup = 1, .reps = 5, .max_seconds = 60.0, .threads = 0, .dead_frac = 0.0,
              .prec = SAE_PREC_FP32, .out = NULL, .run = NULL, .phases = 1, .seed = 1, .lr = 0.0f,
              .upload = SAE_INPUT_F32};
    int slug = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV                                                                          \
    do {                                                                               \
        if (!v) {                                                                      \
            fprintf(stderr, "step_bench: %s needs a value\n", a);                      \
            return 2;                                                                  \
        }                                                                              \
        i++;                                                                           \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--slug")) {
            slug = 1;
        } else if (!strcmp(a, "--no-phases")) {
            o.phases = 0;
        } else if (!strcmp(a, "--backend")) {
            NEEDV;
            o.backend = v;
        } else if (!strcmp(a, "--arch")) {
            NEEDV;
            o.arch = bench_arch_parse(v);
        } else if (!strcmp(a, "--d")) {
            NEEDV;
            o.d = atoi(v);
        } else if (!strcmp(a, "--n")) {
            NEEDV;
            o.n = atoi(v);
        } else if (!strcmp(a, "--k")) {
            NEEDV;
            o.k = atoi(v);
        } else if (!strcmp(a, "--B")) {
            NEEDV;
            o.B = atoi(v);
        } else if (!strcmp(a, "--warmup")) {
            NEEDV;
            o.warmup = atoi(v);
        } else if (!strcmp(a, "--reps")) {
            NEEDV;
            o.reps = atoi(v);
        } else if (!strcmp(a, "--max-seconds")) {
            NEEDV;
            o.max_seconds = atof(v);
        } else if (!strcmp(a, "--threads")) {
            NEEDV;
            o.threads = atoi(v);
        } else if (!strcmp(a, "--dead")) {
            NEEDV;
            o.dead_frac = atof(v);
        } else if (!strcmp(a, "--precision")) {
            NEEDV;
            int p = parse_prec(v);
            if (p < 0) {
                fprintf(stderr, "step_bench: --precision must be fp32, tf32 or bf16\n");
                return 2;
            }
            o.prec = (sae_precision)p;
        } else if (!strcmp(a, "--seed")) {
            NEEDV;
            o.seed = strtoull(v, NULL, 10);
        } else if (!strcmp(a, "--upload-dtype")) {
            NEEDV;
            if (!strcmp(v, "f32") || !strcmp(v, "f16") || !strcmp(v, "bf16")) {
                o.upload = v[0] == 'b' ? SAE_INPUT_BF16 : v[1] == '1' ? SAE_INPUT_F16 : SAE_INPUT_F32;
            } else {
                fprintf(stderr, "step_bench: --upload-dtype must be f32, f16 or bf16\n");
                return 2;
            }
        } else if (!strcmp(a, "--lr")) {
            NEEDV;
            o.lr = (float)atof(v);
        } else if (!strcmp(a, "--out")) {
            NEEDV;
            o.out = v;
        } else if (!strcmp(a, "--run")) {
            NEEDV;
            o.run = v;
        } else {
            fprintf(stderr, "step_bench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
#undef NEEDV
    }
    int cuda = !strcmp(o.backend, "cuda");
    if (!cuda && strcmp(o.backend, "cpu")) {
        fprintf(stderr, "step_bench: --backend must be cpu or cuda\n");
        return 2;
    }
#ifndef SF_WITH_CUDA
    if (cuda) {
        fprintf(stderr, "step_bench: this build has no CUDA; use `make bench-cuda`\n");
        return 2;
    }
#endif
    bench_machine mach;
    bench_machine_init(&mach);
#ifdef SF_WITH_CUDA
    if (cuda)
        bench_machine_fill_gpu(&mach);
#endif
    if (slug) {
        char s[160];
        bench_machine_slug(&mach, s, sizeof s);
        printf("%s\n", s);
        return 0;
    }
    if (o.arch < 0 || o.d < 1 || o.n < 1 || o.k < 1 || o.k > o.n || o.reps < 1 || o.warmup < 0 ||
        o.dead_frac < 0 || o.dead_frac > 1) {
        fprintf(stderr, "step_bench: bad configuration (arch, d, n >= 1, 1 <= k <= n, reps >= 1, "
                        "0 <= dead <= 1)\n");
        return 2;
    }
    if (o.B <= 0)
        o.B = cuda ? 8192 : 4096;
    if (o.threads <= 0)
        o.threads = cuda ? 1 : mach.cores;
    if (o.lr <= 0.0f)
        o.lr = (float)(2e-4 / sqrt((double)o.n / 16384.0));
    const sae_hparams hp = bench_hparams(o.arch, o.d, o.n, o.k, cuda ? o.prec : SAE_PREC_FP32);
    if (!cuda)
        o.prec = SAE_PREC_FP32; /* the CPU backend is always fp32 */
    const int B = o.B, d = o.d, n = o.n, gsae = o.arch == SAE_ARCH_GSAE;
    const size_t Bd = (size_t)B * d;
    const int pool = 2; /* distinct batches cycled through */

    /* Memory: skip (and record why) instead of failing half-way. */
    int64_t host_need = (int64_t)pool * (int64_t)Bd * 4 * (gsae ? 2 : 1) + (int64_t)n * d * 4 * 2 +
                        (cuda ? 2 * (int64_t)Bd * 4 : backend_cpu_bytes(&hp, B) + (int64_t)B * n * 4 + (int64_t)Bd * 4);
    int64_t avail = bench_mem_available();
    if (avail > 0 && host_need > avail * 0.85) {
        char why[160];
        snprintf(why, sizeof why, "needs %.1f GiB of host memory, %.1f GiB available",
                 host_need / 1073741824.0, avail / 1073741824.0);
        write_skip(&o, &mach, &hp, why);
        return 0;
    }
#ifdef SF_WITH_CUDA
    double dev_base = 0.0;
    if (cuda) {
        size_t fr = 0, tot = 0;
        CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
        int64_t need = backend_cuda_bytes(&hp, B) + (int64_t)B * n * 4 + (int64_t)n * d * 6 + (int64_t)Bd * 6;
        if ((double)need > 0.92 * (double)fr) {
            char why[160];
            snprintf(why, sizeof why, "needs %.1f GiB of device memory, %.1f GiB free",
                     need / 1073741824.0, fr / 1073741824.0);
            write_skip(&o, &mach, &hp, why);
            return 0;
        }
        dev_base = (double)(tot - fr) / (1024.0 * 1024.0);
    }
#endif

    /* Inputs and initial parameters */
    double t_setup = bench_now();
    bench_gen gen;
    bench_gen_init(&gen, d, o.seed);
    float *xs = bench_alloc((size_t)pool * Bd * sizeof(float));
    float *gs = gsae ? bench_alloc((size_t)pool * Bd * sizeof(float)) : NULL;
    for (int p = 0; p < pool; p++)
        bench_gen_batch(&gen, B, xs + p * Bd, gs ? gs + p * Bd : NULL);
    if (o.upload != SAE_INPUT_F32) /* a 16-bit shard's rows: every value a dtype value */
        round_pool(xs, gs, (size_t)pool * Bd, o.upload);
    sae_params init;
    sae_params_alloc(&init, d, n);
    sf_rng rng;
    rng_seed(&rng, o.seed, 1);
    sae_init_params(&init, d, n, config_init_scale_for(o.arch, 0), &rng, xs, B);
    t_setup = bench_now() - t_setup;

    /* Copy bandwidth (before anything big is allocated) */
    double copy_gbps;
#ifdef SF_WITH_CUDA
    if (cuda)
        copy_gbps = copy_cuda((size_t)1 << 30);
    else
#endif
        copy_gbps = copy_cpu((size_t)256 << 20, o.threads);
    double gemm_flop = 2.0 * B * (double)d * n;

    /* The backend's whole step */
    char why[256] = "";
    sae_backend *be = backend_open(&hp, B, cuda ? 2 : 1, o.threads, why, (int)sizeof why);
    if (!be) {
        write_skip(&o, &mach, &hp, why[0] ? why : "backend could not be opened");
        return cuda ? 1 : 0;
    }
    double narrow_ns = -1.0;
    if (o.upload != SAE_INPUT_F32) {
        if (!be->set_input_format) {
            write_skip(&o, &mach, &hp, "the backend takes no 16-bit input (CPU backend, or SF_UPLOAD=f32)");
            be->free(be);
            return 0;
        }
        be->set_input_format(be, o.upload, 1.0f);
        narrow_ns = narrow_ns_per_value(xs, Bd, o.upload);
    }
    be->set_params(be, &init);
    be->profile = 0;
    sae_state st;
    sae_state_alloc(&st, d, n);
    keep_dead(be, &st, n, hp.dead_tokens, o.dead_frac);
    sae_metrics mt;
    memset(&mt, 0, sizeof mt);
    int64_t step = 0;
    for (int w = 0; w < o.warmup; w++, step++) {
        const float *bx, *bg;
        feed(be, xs, gs, Bd, step % pool, &bx, &bg);
        be->train_step(be, bx, bg, B, o.k, o.lr, step, &mt);
    }
    /* Memory figures now, before the GEMM-only buffers exist */
    double rss_backend = bench_rss_peak_mib();
    double dev_mib = -1.0;
#ifdef SF_WITH_CUDA
    if (cuda)
        dev_mib = dev_used_mib() - dev_base;
#endif

    /* GEMM-only limit, timed interleaved with the steps (same machine load for both) */
    gemm_ctx gc;
    memset(&gc, 0, sizeof gc);
    gc.cuda = cuda;
    gc.B = B;
    gc.d = d;
    gc.n = n;
    gc.threads = o.threads;
    gc.prec = o.prec;
    float *u0 = bench_alloc(Bd * sizeof(float));
    for (size_t i = 0; i < Bd; i++)
        u0[i] = xs[i] - init.b_dec[i % d];
    gc.u = u0;
    gc.W = init.W_enc;
#ifdef SF_WITH_CUDA
    if (cuda) {
        gemm_cuda_init(&gc, u0, init.W_enc);
        gemm_cuda_run(&gc);
        gemm_cuda_run(&gc);
    } else
#endif
    {
        gc.C = bench_alloc((size_t)B * n * sizeof(float));
        memset(gc.C, 0, (size_t)B * n * sizeof(float));
        gemm_cpu_run(&gc);
    }
    double ts[256], tg[256];
    int m = 0;
    double tstart = bench_now();
    while (m < o.reps && m < 256 && (m < 2 || bench_now() - tstart < o.max_seconds)) {
#ifdef SF_WITH_CUDA
        tg[m] = cuda ? gemm_cuda_run(&gc) : gemm_cpu_run(&gc);
#else
        tg[m] = gemm_cpu_run(&gc);
#endif
        const float *bx, *bg;
        keep_dead(be, &st, n, hp.dead_tokens, o.dead_frac);
        feed(be, xs, gs, Bd, step % pool, &bx, &bg);
        double t0 = bench_now();
        be->train_step(be, bx, bg, B, o.k, o.lr, step, &mt);
        ts[m++] = bench_now() - t0;
        step++;
    }
    double step_min = bench_min(ts, m), step_med = bench_median(ts, m);
    double gemm_min = bench_min(tg, m), gemm_med = bench_median(tg, m);
    int steps_timed = m;

    /* Pipelined: the same number of steps back to back as the trainer runs them (submit t, then
     * collect t-1 while t computes; the next batch staged meanwhile): wall time per step. With
     * submit_step the dead latents are not pinned again here (that reads the state, which waits
     * for the device), so --dead figures of this loop are for latents free to revive; a backend
     * without it runs the timed loop above again, dead latents pinned. */
    double t_pipe = bench_now();
    for (int i = 0; i < steps_timed; i++, step++) {
        const float *bx, *bg;
        feed(be, xs, gs, Bd, step % pool, &bx, &bg);
        if (!be->submit_step) {
            keep_dead(be, &st, n, hp.dead_tokens, o.dead_frac);
            be->train_step(be, bx, bg, B, o.k, o.lr, step, &mt);
            continue;
        }
        be->submit_step(be, bx, bg, B, o.k, o.lr, step);
        if (i > 0)
            be->collect_step(be, &mt);
    }
    if (be->collect_step)
        be->collect_step(be, &mt);
    const double pipe_step = (bench_now() - t_pipe) / steps_timed;
#ifdef SF_WITH_CUDA
    if (cuda)
        gemm_cuda_free(&gc);
#endif
    free(gc.C);
    free(u0);

    /* Phases from the backend's own timers: the same backend, further steps, profiling on */
    double ph_med[SAE_PH_COUNT] = {0}, ph_sum = NAN, ph_step_med = NAN;
    int ph_steps = 0;
    if (o.phases) {
        static double hist[SAE_PH_COUNT][256];
        double tot[256];
        be->profile = 1;
        tstart = bench_now();
        m = 0;
        while (m < o.reps && m < 256 && (m < 2 || bench_now() - tstart < o.max_seconds)) {
            const float *bx, *bg;
            keep_dead(be, &st, n, hp.dead_tokens, o.dead_frac);
            feed(be, xs, gs, Bd, step % pool, &bx, &bg);
            double t0 = bench_now();
            be->train_step(be, bx, bg, B, o.k, o.lr, step, &mt);
            tot[m] = bench_now() - t0;
            for (int p = 0; p < SAE_PH_COUNT; p++)
                hist[p][m] = be->phase_s[p];
            m++;
            step++;
        }
        ph_steps = m;
        ph_sum = 0.0;
        for (int p = 0; p < SAE_PH_COUNT; p++) {
            ph_med[p] = bench_median(hist[p], m);
            ph_sum += ph_med[p];
        }
        ph_step_med = bench_median(tot, m);
    }
    sae_state_free(&st);
    be->free(be);

    FILE *f = open_out(&o);
    jw w;
    j_begin(&w, f);
    j_str(&w, "kind", "step");
    j_common(&w, &mach, o.run);
    write_config(&w, &o, &hp);
    j_obj(&w, "figures");
    j_int(&w, "steps_timed", steps_timed);
    j_num(&w, "step_med_s", step_med);
    j_num(&w, "step_min_s", step_min);
    j_num(&w, "tokens_per_s", B / step_med);
    j_num(&w, "gemm_med_s", gemm_med);
    j_num(&w, "gemm_min_s", gemm_min);
    j_num(&w, "gemm_gflops", gemm_flop / gemm_min / 1e9);
    j_num(&w, "step_over_gemm", step_med / gemm_med);
    j_num(&w, "step_pipelined_s", pipe_step);
    j_num(&w, "pipelined_over_gemm", pipe_step / gemm_med);
    j_num(&w, "copy_GBps", copy_gbps);
    if (narrow_ns >= 0.0) /* host: the batch narrowed to 16 bits, part of every step's time */
        j_num(&w, "narrow_ns_per_value", narrow_ns);
    j_num(&w, "fvu", mt.fvu);
    j_num(&w, "l0", mt.l0);
    j_num(&w, "dead_frac_seen", mt.dead_frac);
    j_num(&w, "rss_peak_MiB", rss_backend);
    j_num(&w, "dev_MiB", dev_mib);
    j_num(&w, "setup_s", t_setup);
    j_close(&w);
    if (o.phases) {
        j_obj(&w, "phases_s");
        j_num(&w, "data_wait", 0.0); /* inputs are in memory here; see the data bench */
        for (int p = 0; p < SAE_PH_COUNT; p++)
            j_num(&w, sae_phase_name(p), ph_med[p]);
        j_close(&w);
        j_obj(&w, "profile");
        j_int(&w, "steps_timed", ph_steps);
        j_num(&w, "step_med_s", ph_step_med);
        j_num(&w, "phase_sum_s", ph_sum);
        j_num(&w, "sum_over_backend", ph_sum / step_med);
        j_close(&w);
    }
    j_end(&w);
    if (f != stdout)
        fclose(f);
    fprintf(stderr,
            "step_bench: %-10s d=%-5d n=%-6d k=%-4d B=%-5d step %.4f s (min %.4f) %.0f tok/s  "
            "gemm %.4f s  step/gemm %.2f  pipelined %.4f s (%.2f)  rss %.0f MiB\n",
            bench_arch_name(o.arch), d, n, o.k, B, step_med, step_min, B / step_med, gemm_med,
            step_med / gemm_med, pipe_step, pipe_step / gemm_med, rss_backend);
    sae_params_free(&init);
    free(xs);
    free(gs);
    bench_gen_free(&gen);
    return 0;
}
