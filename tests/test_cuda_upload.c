/* 16-bit batch uploads (backend.h, set_input_format): the widen kernel against its CPU twin and
 * the shard conversion for every 16-bit pattern, the host narrowing, and whole CUDA steps fed
 * f16/bf16 rows plus a scale against a float backend fed the scaled rows, bit for bit. Built
 * against the emulator (make test) and real CUDA (make test-gpu). */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data/shard.h"
#include "kernels/backend.h"
#include "kernels/cuda_compat.h"
#include "kernels/input16.cuh"
#include "kernels/input16.h"

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float shard_widen(uint16_t h, sae_input_dtype dt)
{
    return dt == SAE_INPUT_BF16 ? shard_bf16_to_f32(h) : shard_f16_to_f32(h);
}

static const char *dt_name(sae_input_dtype dt) { return dt == SAE_INPUT_BF16 ? "bf16" : "f16"; }

/* ---- the widen kernel and the narrowing ----------------------------------------------------- */

/* Every pattern through the kernel and the CPU twin: the same bits; at scale 1 the shard
 * conversion's bits (NaN payloads too), else its value times the scale as one float product,
 * which is what the stream computes (a NaN only has to stay a NaN: no NaN row is ever sent). */
Test(cuda_upload, widen_every_pattern_matches_twin_and_stream)
{
    const size_t all = 65536;
    uint16_t *h = malloc(all * sizeof *h);
    float *want = malloc(all * sizeof *want), *got = malloc(all * sizeof *got);
    for (size_t i = 0; i < all; i++)
        h[i] = (uint16_t)i;
    uint16_t *dh;
    float *dout;
    CUDA_CHECK(cudaMalloc((void **)&dh, all * sizeof *dh));
    CUDA_CHECK(cudaMalloc((void **)&dout, all * sizeof *dout));
    CUDA_CHECK(cudaMemcpy(dh, h, all * sizeof *dh, cudaMemcpyHostToDevice));
    const float scales[] = {1.0f, 1.7320508f, 0.0123f, 3e30f};
    int subnormal_seen = 0;
    for (int dt = SAE_INPUT_F16; dt <= SAE_INPUT_BF16; dt++) {
        for (size_t si = 0; si < sizeof scales / sizeof *scales; si++) {
            const float sc = scales[si];
            /* the odd count takes the kernel's single-value tail */
            for (size_t count = all; count >= all - 1; count--) {
                CUDA_CHECK(cudaMemset(dout, 0, all * sizeof *dout));
                input16_widen_cuda(dh, (long long)count, (sae_input_dtype)dt, sc, dout, 0);
                CUDA_CHECK(cudaDeviceSynchronize());
                CUDA_CHECK(cudaMemcpy(got, dout, all * sizeof *got, cudaMemcpyDeviceToHost));
                input16_widen_cpu(h, count, (sae_input_dtype)dt, sc, want);
                for (size_t i = 0; i < count; i++) {
                    const float ref = shard_widen(h[i], (sae_input_dtype)dt);
                    const float stream = sc == 1.0f ? ref : ref * sc;
                    if (isnan(stream)) {
                        cr_assert(isnan(got[i]) && isnan(want[i]), "%s %04zx: NaN lost", dt_name(dt), i);
                        if (sc == 1.0f)
                            cr_assert(bits(got[i]) == bits(ref) && bits(want[i]) == bits(ref),
                                      "%s %04zx: NaN payload %08x / %08x, want %08x", dt_name(dt), i,
                                      bits(got[i]), bits(want[i]), bits(ref));
                        continue;
                    }
                    cr_assert(bits(got[i]) == bits(stream), "%s %04zx scale %g: kernel %08x, want %08x",
                              dt_name(dt), i, (double)sc, bits(got[i]), bits(stream));
                    cr_assert(bits(want[i]) == bits(stream), "%s %04zx scale %g: twin %08x, want %08x",
                              dt_name(dt), i, (double)sc, bits(want[i]), bits(stream));
                    subnormal_seen |= fpclassify(got[i]) == FP_SUBNORMAL;
                }
                cr_assert(count == all || got[all - 1] == 0.0f, "wrote past count");
            }
        }
    }
    cr_assert(subnormal_seen, "no subnormal result: the scales do not cover them");
    cudaFree(dh);
    cudaFree(dout);
    free(h);
    free(want);
    free(got);
}

/* Every dtype value narrows back to its own pattern (both code paths); the F16C path may refuse an
 * f16 signalling NaN, which it would quiet. */
Test(cuda_upload, narrow_round_trips_every_pattern)
{
    const size_t all = 65536;
    float *v = malloc(all * sizeof *v);
    uint16_t *o = malloc(all * sizeof *o);
    for (int dt = SAE_INPUT_F16; dt <= SAE_INPUT_BF16; dt++) {
        size_t n = 0;
        uint16_t *pat = malloc(all * sizeof *pat);
        for (size_t i = 0; i < all; i++) {
            const int snan16 = dt == SAE_INPUT_F16 && (i & 0x7c00) == 0x7c00 && (i & 0x3ff) &&
                               !(i & 0x200);
            if (snan16)
                continue;
            pat[n] = (uint16_t)i;
            v[n++] = shard_widen((uint16_t)i, (sae_input_dtype)dt);
        }
        for (int path = 0; path < 2; path++) {
            memset(o, 0, all * sizeof *o);
            const int ok = path ? input16_narrow_portable(v, n, (sae_input_dtype)dt, o)
                                : input16_narrow(v, n, (sae_input_dtype)dt, o);
            cr_assert(ok, "%s path %d: a dtype value was refused", dt_name(dt), path);
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(o[i], pat[i], "%s path %d: %04x came back as %04x", dt_name(dt), path,
                             pat[i], o[i]);
        }
        free(pat);
    }
    free(v);
    free(o);
}

/* One value that is not a dtype value anywhere in a batch (SIMD body, tail, parallel shares)
 * makes the narrowing report it. */
Test(cuda_upload, narrow_refuses_values_outside_the_dtype)
{
    const size_t n = ((size_t)1 << 20) + 1000; /* above the parallel threshold, odd tail */
    float *v = malloc(n * sizeof *v);
    uint16_t *o = malloc(n * sizeof *o);
    const float bad[2][4] = {{1.0f + 0x1p-12f, 65520.0f, 1e-8f, 0x1p-25f * 3.0f},
                             {1.0f + 0x1p-9f, 3.0e-39f + 0x1p-140f, 1.0e30f, -1.0f - 0x1p-20f}};
    const size_t where[] = {0, 7, 8, 15, 16, 17, n / 2 + 3, n - 1};
    for (int dt = SAE_INPUT_F16; dt <= SAE_INPUT_BF16; dt++) {
        for (size_t i = 0; i < n; i++)
            v[i] = shard_widen((uint16_t)((i * 40503u) & 0x3bff), (sae_input_dtype)dt);
        cr_assert(input16_narrow(v, n, (sae_input_dtype)dt, o), "%s: a clean batch refused", dt_name(dt));
        uint16_t *o3 = malloc(n * sizeof *o3);
        cr_assert(input16_narrow_threads(v, n, (sae_input_dtype)dt, o3, 3), "%s: 3 threads refused", dt_name(dt));
        cr_assert(!memcmp(o, o3, n * sizeof *o), "%s: the threads' split changed the result", dt_name(dt));
        free(o3);
        for (int b = 0; b < 4; b++) {
            const float x = bad[dt - 1][b];
            cr_assert(bits(shard_widen(dt == SAE_INPUT_BF16 ? shard_f32_to_bf16(x) : shard_f32_to_f16(x),
                                       (sae_input_dtype)dt)) != bits(x),
                      "%s: %g is a dtype value: not a test of refusal", dt_name(dt), (double)x);
            for (size_t w = 0; w < sizeof where / sizeof *where; w++) {
                const size_t at = where[w];
                const float keep = v[at];
                v[at] = x;
                cr_assert(!input16_narrow(v, n, (sae_input_dtype)dt, o), "%s: %g at %zu accepted",
                          dt_name(dt), (double)x, at);
                cr_assert(!input16_narrow_threads(v, n, (sae_input_dtype)dt, o, 3),
                          "%s 3 threads: %g at %zu accepted", dt_name(dt), (double)x, at);
                cr_assert(!input16_narrow_portable(v + at, n - at, (sae_input_dtype)dt, o),
                          "%s portable: %g accepted", dt_name(dt), (double)x);
                v[at] = keep;
            }
        }
    }
    free(v);
    free(o);
}

/* ---- whole steps: 16-bit + scale on the device vs scaled floats ----------------------------- */

enum { D = 16, N = 128, B = 32, K = 4, STEPS = 12 };

static uint64_t rs;
static double unif(void)
{
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rs >> 11) / 9007199254740992.0;
}
static float gauss(void)
{
    double u = unif() + 1e-12, v = unif();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static sae_hparams make_hp(sae_arch arch)
{
    sae_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.arch = arch;
    hp.d = D;
    hp.n = N;
    hp.k = K;
    hp.gsae_beta = 1.0f;
    hp.n_prefixes = arch == SAE_ARCH_MATRYOSHKA ? 3 : 1;
    hp.prefixes[0] = arch == SAE_ARCH_MATRYOSHKA ? N / 8 : N;
    hp.prefixes[1] = N / 2;
    hp.prefixes[2] = N;
    hp.aux_k = D / 2;
    hp.aux_alpha = 1.0f / 32.0f;
    hp.dead_tokens = 3 * B; /* latents die mid-run: AuxK runs */
    hp.adam_b1 = 0.9f;
    hp.adam_b2 = 0.999f;
    hp.adam_eps = 1e-8f;
    hp.precision = SAE_PREC_FP32;
    hp.theta_ema = 0.99f;
    return hp;
}

/* The shard's rows (dtype values: x around 1 with a spread, small g, some subnormal-range f16
 * values and signed zeros) and what the stream makes of them at `scale`. */
typedef struct batches {
    float *raw_x, *raw_g, *x, *g;
} batches;

static batches make_batches(sae_input_dtype dt, float scale)
{
    const size_t cnt = (size_t)STEPS * B * D;
    batches t;
    t.raw_x = malloc(cnt * sizeof(float));
    t.raw_g = malloc(cnt * sizeof(float));
    t.x = malloc(cnt * sizeof(float));
    t.g = malloc(cnt * sizeof(float));
    rs = 77;
    for (size_t i = 0; i < cnt; i++) {
        float xv = (i % D < 3 ? 2.0f : 0.3f) * gauss() + (unif() < 0.2 ? 1.5f : 0.0f);
        float gv = 0.2f * gauss();
        if (i % 97 == 5)
            xv = 3e-6f * gauss(); /* f16 subnormals */
        if (i % 101 == 9)
            gv = -0.0f;
        const uint16_t hx = dt == SAE_INPUT_BF16 ? shard_f32_to_bf16(xv) : shard_f32_to_f16(xv);
        const uint16_t hg = dt == SAE_INPUT_BF16 ? shard_f32_to_bf16(gv) : shard_f32_to_f16(gv);
        t.raw_x[i] = shard_widen(hx, dt);
        t.raw_g[i] = shard_widen(hg, dt);
        t.x[i] = t.raw_x[i] * scale; /* data/stream.c's product */
        t.g[i] = t.raw_g[i];
    }
    return t;
}

static void free_batches(batches *t)
{
    free(t->raw_x);
    free(t->raw_g);
    free(t->x);
    free(t->g);
}

static void init_params(sae_params *p, const float *x)
{
    rs = 5;
    for (int i = 0; i < N; i++) {
        double ss = 0;
        for (int j = 0; j < D; j++) {
            p->W_dec[i * D + j] = gauss();
            ss += (double)p->W_dec[i * D + j] * p->W_dec[i * D + j];
        }
        for (int j = 0; j < D; j++) {
            p->W_dec[i * D + j] /= (float)sqrt(ss);
            p->W_enc[i * D + j] = p->W_dec[i * D + j];
        }
    }
    for (int j = 0; j < D; j++) {
        double m = 0;
        for (int b = 0; b < B; b++)
            m += x[b * D + j];
        p->b_dec[j] = (float)(m / B);
    }
}

static sae_backend *open_cuda(const sae_hparams *hp)
{
    char why[256] = "";
    sae_backend *be = backend_cuda_new(hp, B, 0, why, (int)sizeof why);
    cr_assert(be != NULL, "backend_cuda_new: %s", why);
    return be;
}

static void same_metrics(const sae_metrics *a, const sae_metrics *b, const char *what, int s)
{
    cr_assert(!memcmp(a, b, sizeof *a), "%s %d: loss %.17g vs %.17g, fvu %.17g vs %.17g, l0 %g vs %g",
              what, s, a->loss, b->loss, a->fvu, b->fvu, a->l0, b->l0);
}

static void same_params_state(sae_backend *a, sae_backend *b)
{
    sae_params pa, pb;
    sae_params_alloc(&pa, D, N);
    sae_params_alloc(&pb, D, N);
    a->get_params(a, &pa);
    b->get_params(b, &pb);
    cr_assert(!memcmp(pa.W_enc, pb.W_enc, sizeof(float) * N * D), "W_enc differs");
    cr_assert(!memcmp(pa.W_dec, pb.W_dec, sizeof(float) * N * D), "W_dec differs");
    cr_assert(!memcmp(pa.b_enc, pb.b_enc, sizeof(float) * N), "b_enc differs");
    cr_assert(!memcmp(pa.b_dec, pb.b_dec, sizeof(float) * D), "b_dec differs");
    sae_state sa, sb;
    sae_state_alloc(&sa, D, N);
    sae_state_alloc(&sb, D, N);
    a->get_state(a, &sa);
    b->get_state(b, &sb);
    const struct {
        const void *x, *y;
        size_t n;
        const char *name;
    } t[] = {{sa.m_W_enc, sb.m_W_enc, 4 * N * D, "m_W_enc"}, {sa.v_W_dec, sb.v_W_dec, 4 * N * D, "v_W_dec"},
             {sa.m_b_dec, sb.m_b_dec, 4 * D, "m_b_dec"}, {sa.v_b_enc, sb.v_b_enc, 4 * N, "v_b_enc"},
             {sa.since_fired, sb.since_fired, 8 * N, "since_fired"},
             {sa.fire_count, sb.fire_count, 8 * N, "fire_count"}, {sa.act_sum, sb.act_sum, 8 * N, "act_sum"},
             {sa.act_max, sb.act_max, 4 * N, "act_max"}, {sa.gate_sum, sb.gate_sum, 8 * N, "gate_sum"}};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        cr_assert(!memcmp(t[i].x, t[i].y, t[i].n), "state %s differs", t[i].name);
    cr_assert_eq(sa.adam_t, sb.adam_t);
    cr_assert(bits(sa.theta) == bits(sb.theta), "theta %g vs %g", (double)sa.theta, (double)sb.theta);
    sae_params_free(&pa);
    sae_params_free(&pb);
    sae_state_free(&sa);
    sae_state_free(&sb);
}

/* Inference on both: eval sums and the encode CSR, bit for bit. */
static void same_inference(sae_backend *flt, sae_backend *h16, const batches *t, int use_g)
{
    sae_metrics ea, eb;
    memset(&ea, 0, sizeof ea);
    memset(&eb, 0, sizeof eb);
    flt->eval_batch(flt, t->x, use_g ? t->g : NULL, B, K, &ea);
    h16->eval_batch(h16, t->raw_x, use_g ? t->raw_g : NULL, B, K, &eb);
    same_metrics(&ea, &eb, "eval", 0);
    const int64_t cap = (int64_t)B * N;
    int *rp[2], *lat[2];
    float *val[2], *gv[2];
    for (int i = 0; i < 2; i++) {
        rp[i] = malloc((B + 1) * sizeof(int));
        lat[i] = malloc(cap * sizeof(int));
        val[i] = malloc(cap * sizeof(float));
        gv[i] = calloc(cap, sizeof(float));
    }
    const int64_t na = flt->encode(flt, t->x, use_g ? t->g : NULL, B, K, cap, rp[0], lat[0], val[0], gv[0]);
    const int64_t nb = h16->encode(h16, t->raw_x, use_g ? t->raw_g : NULL, B, K, cap, rp[1], lat[1], val[1], gv[1]);
    cr_assert_eq(na, nb);
    cr_assert(na > 0 && na <= cap);
    cr_assert(!memcmp(rp[0], rp[1], (B + 1) * sizeof(int)) && !memcmp(lat[0], lat[1], na * sizeof(int)) &&
              !memcmp(val[0], val[1], na * sizeof(float)) && !memcmp(gv[0], gv[1], na * sizeof(float)),
              "encode differs");
    for (int i = 0; i < 2; i++) {
        free(rp[i]);
        free(lat[i]);
        free(val[i]);
        free(gv[i]);
    }
}

/* A float backend fed the stream's scaled rows and a backend told (dtype, scale) fed the raw
 * rows: every step's metrics, the parameters, the state, evals and codes bit for bit. pipelined:
 * the 16-bit backend runs the trainer's loop (the next batch in its input buffers, step t-1
 * collected while t runs, an eval between submits). */
static void upload_run(sae_arch arch, sae_input_dtype dt, float scale, int pipelined)
{
    const sae_hparams hp = make_hp(arch);
    batches t = make_batches(dt, scale);
    const int use_g = arch == SAE_ARCH_GSAE || arch == SAE_ARCH_TOPK; /* topk: gw metrics */
    sae_params p0;
    sae_params_alloc(&p0, D, N);
    init_params(&p0, t.x);
    sae_backend *flt = open_cuda(&hp), *h16 = open_cuda(&hp);
    cr_assert(h16->set_input_format, "the CUDA backend takes 16-bit inputs");
    h16->set_input_format(h16, dt, scale);
    flt->set_params(flt, &p0);
    h16->set_params(h16, &p0);
    sae_metrics mf[STEPS], mh[STEPS];
    int got = 0, aux = 0;
    for (int s = 0; s < STEPS; s++) {
        const size_t o = (size_t)s * B * D;
        flt->train_step(flt, t.x + o, use_g ? t.g + o : NULL, B, K, 3e-3f, s, &mf[s]);
        if (!pipelined) {
            h16->train_step(h16, t.raw_x + o, use_g ? t.raw_g + o : NULL, B, K, 3e-3f, s, &mh[got++]);
            continue;
        }
        float *bx = h16->input_buffer(h16, 0), *bg = h16->input_buffer(h16, 1);
        memcpy(bx, t.raw_x + o, sizeof(float) * B * D);
        memcpy(bg, t.raw_g + o, sizeof(float) * B * D);
        h16->submit_step(h16, bx, use_g ? bg : NULL, B, K, 3e-3f, s);
        if (s == 5) { /* an eval between submits reuses the next slot's staging */
            sae_metrics acc;
            memset(&acc, 0, sizeof acc);
            h16->eval_batch(h16, t.raw_x, NULL, B, K, &acc);
        }
        if (s > 0)
            cr_assert(h16->collect_step(h16, &mh[got++]));
    }
    if (pipelined)
        cr_assert(h16->collect_step(h16, &mh[got++]));
    cr_assert_eq(got, STEPS);
    for (int s = 0; s < STEPS; s++) {
        same_metrics(&mf[s], &mh[s], "step", s);
        aux += mf[s].auxk > 0.0;
    }
    cr_assert(aux > 0, "AuxK never ran");
    same_params_state(flt, h16);
    same_inference(flt, h16, &t, use_g);
    flt->free(flt);
    h16->free(h16);
    sae_params_free(&p0);
    free_batches(&t);
}

Test(cuda_upload, f16_topk_matches_float) { upload_run(SAE_ARCH_TOPK, SAE_INPUT_F16, 1.7320508f, 0); }
Test(cuda_upload, bf16_gsae_matches_float) { upload_run(SAE_ARCH_GSAE, SAE_INPUT_BF16, 0.6180340f, 0); }
Test(cuda_upload, f16_batchtopk_pipelined) { upload_run(SAE_ARCH_BATCHTOPK, SAE_INPUT_F16, 2.2360680f, 1); }
Test(cuda_upload, bf16_matryoshka_pipelined) { upload_run(SAE_ARCH_MATRYOSHKA, SAE_INPUT_BF16, 1.0f, 1); }

/* The format is a contract: a value that is not a dtype value aborts the step. */
Test(cuda_upload, value_outside_the_dtype_aborts, .signal = SIGABRT)
{
    const sae_hparams hp = make_hp(SAE_ARCH_TOPK);
    batches t = make_batches(SAE_INPUT_F16, 1.0f);
    sae_backend *be = open_cuda(&hp);
    be->set_input_format(be, SAE_INPUT_F16, 1.5f);
    t.raw_x[B * D - 1] = 1.0f + 0x1p-20f;
    sae_metrics m;
    be->train_step(be, t.raw_x, NULL, B, K, 1e-3f, 0, &m);
}

/* SF_UPLOAD=f32 takes the entry away (the trainer then sends floats); another value is refused. */
Test(cuda_upload, sf_upload_env)
{
    const sae_hparams hp = make_hp(SAE_ARCH_TOPK);
    setenv("SF_UPLOAD", "f32", 1);
    sae_backend *be = open_cuda(&hp);
    cr_assert(be->set_input_format == NULL);
    be->free(be);
    setenv("SF_UPLOAD", "half", 1);
    char why[256] = "";
    cr_assert(backend_cuda_new(&hp, B, 0, why, (int)sizeof why) == NULL);
    cr_assert(strstr(why, "SF_UPLOAD=half"), "%s", why);
    setenv("SF_UPLOAD", "auto", 1);
    be = open_cuda(&hp);
    cr_assert(be->set_input_format != NULL);
    be->free(be);
    unsetenv("SF_UPLOAD");
}
