/* CPU backend: training makes progress, steps are deterministic (also across thread counts and a
 * state round trip), AuxK and theta follow backend.h, and eval/encode use the inference rule. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "host/rng.h"
#include "kernels/backend.h"
#include "kernels/encode.h"
#include "kernels/select.h"

enum { D = 16, N = 64, K = 4, BMAX = 64 };

static sae_hparams make_hp(sae_arch arch)
{
    sae_hparams hp = {.arch = arch, .d = D, .n = N, .k = K, .gsae_beta = 1.0f, .n_prefixes = 1,
                      .aux_k = D / 2, .aux_alpha = 1.0f / 32, .dead_tokens = 1000,
                      .adam_b1 = 0.9f, .adam_b2 = 0.999f, .adam_eps = 1e-8f, .theta_ema = 0.99f};
    hp.prefixes[0] = N;
    if (arch == SAE_ARCH_MATRYOSHKA) {
        hp.n_prefixes = 3;
        hp.prefixes[0] = 8;
        hp.prefixes[1] = 24;
        hp.prefixes[2] = N;
    }
    return hp;
}

static void init_params(sae_params *p, uint64_t seed)
{
    sae_params_alloc(p, D, N);
    sf_rng r;
    rng_seed(&r, seed, 1);
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int j = 0; j < D; j++) {
            p->W_dec[i * D + j] = (float)rng_normal(&r);
            s += (double)p->W_dec[i * D + j] * p->W_dec[i * D + j];
        }
        for (int j = 0; j < D; j++) {
            p->W_dec[i * D + j] /= (float)sqrt(s);
            p->W_enc[i * D + j] = p->W_dec[i * D + j];
        }
    }
}

/* Tokens made of three atoms of a hidden dictionary with positive weights (easy to fit). */
static void make_data(float *x, float *g, int B, uint64_t seed)
{
    sf_rng r;
    rng_seed(&r, 99, 0);
    static float atoms[32 * D];
    for (int t = 0; t < 32 * D; t++)
        atoms[t] = (float)rng_normal(&r);
    rng_seed(&r, seed, 2);
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < D; j++)
            x[b * D + j] = 0.0f;
        for (int q = 0; q < 3; q++) {
            int a = (int)rng_below(&r, 32);
            float c = 1.0f + (float)rng_uniform(&r);
            for (int j = 0; j < D; j++)
                x[b * D + j] += c * atoms[a * D + j];
        }
        if (g)
            for (int j = 0; j < D; j++)
                g[b * D + j] = (float)rng_normal(&r);
    }
}

static sae_backend *new_backend(sae_arch arch, int threads, const sae_params *p)
{
    sae_hparams hp = make_hp(arch);
    sae_backend *be = backend_cpu_new(&hp, BMAX, threads);
    cr_assert(be && strcmp(be->name, "cpu") == 0 && be->max_B == BMAX);
    be->set_params(be, p);
    return be;
}

static const sae_arch ARCHS[4] = {SAE_ARCH_TOPK, SAE_ARCH_GSAE, SAE_ARCH_BATCHTOPK, SAE_ARCH_MATRYOSHKA};

Test(backend_cpu, one_step_decreases_loss_all_archs)
{
    float x[BMAX * D], g[BMAX * D];
    make_data(x, g, BMAX, 1);
    for (int a = 0; a < 4; a++) {
        sae_params p;
        init_params(&p, 5);
        sae_backend *be = new_backend(ARCHS[a], 1, &p);
        sae_metrics m1, m2, m3;
        be->train_step(be, x, g, BMAX, K, 1e-2f, 0, &m1);
        be->train_step(be, x, g, BMAX, K, 1e-2f, 1, &m2);
        for (int s = 2; s < 30; s++)
            be->train_step(be, x, g, BMAX, K, 1e-2f, s, &m3);
        cr_assert(isfinite(m1.loss) && m1.loss > 0.0, "arch %d", a);
        cr_assert(m2.loss < m1.loss, "arch %d: step loss %g -> %g", a, m1.loss, m2.loss);
        cr_assert(m3.loss < 0.7 * m1.loss, "arch %d: 30 steps %g -> %g", a, m1.loss, m3.loss);
        cr_assert(m1.grad_norm > 0.0 && m1.tokens == BMAX);
        cr_assert(m1.l0 > 0.0 && m1.l0 <= K + 1e-9, "arch %d l0 %g", a, m1.l0);
        cr_assert(m1.gw_err >= 0.0, "gradients given: gw_err computed");
        if (ARCHS[a] == SAE_ARCH_TOPK)
            cr_assert_eq(m1.l0, (double)K);
        if (ARCHS[a] != SAE_ARCH_MATRYOSHKA)
            cr_assert(fabs(m1.loss - m1.fvu - m1.auxk / 32) < 1e-12 * (1 + m1.loss), "loss = fvu + alpha auxk");
        /* parameters stay finite and decoder rows unit norm */
        be->get_params(be, &p);
        for (int i = 0; i < N; i++) {
            double s = 0;
            for (int j = 0; j < D; j++)
                s += (double)p.W_dec[i * D + j] * p.W_dec[i * D + j];
            cr_assert(fabs(sqrt(s) - 1.0) < 1e-5);
        }
        be->free(be);
        sae_params_free(&p);
    }
}

/* Runs `steps` steps from step `from` and returns params + metrics of the last step. */
static void run_steps(sae_backend *be, int from, int steps, sae_metrics *last)
{
    float x[BMAX * D], g[BMAX * D];
    for (int s = from; s < from + steps; s++) {
        make_data(x, g, BMAX - (s % 3), 100 + s); /* varying B */
        be->train_step(be, x, g, BMAX - (s % 3), K, 3e-3f, s, last);
    }
}

static int same_params(sae_backend *a, sae_backend *b)
{
    sae_params pa, pb;
    sae_params_alloc(&pa, D, N);
    sae_params_alloc(&pb, D, N);
    a->get_params(a, &pa);
    b->get_params(b, &pb);
    int same = !memcmp(pa.W_enc, pb.W_enc, sizeof(float) * N * D) && !memcmp(pa.W_dec, pb.W_dec, sizeof(float) * N * D) &&
               !memcmp(pa.b_enc, pb.b_enc, sizeof(float) * N) && !memcmp(pa.b_dec, pb.b_dec, sizeof(float) * D);
    sae_params_free(&pa);
    sae_params_free(&pb);
    return same;
}

Test(backend_cpu, deterministic_and_thread_count_independent)
{
    for (int a = 0; a < 4; a++) {
        sae_params p;
        init_params(&p, 6);
        sae_backend *b1 = new_backend(ARCHS[a], 1, &p), *b1b = new_backend(ARCHS[a], 1, &p);
        sae_backend *b2 = new_backend(ARCHS[a], 2, &p);
        sae_metrics m1, m1b, m2;
        run_steps(b1, 0, 5, &m1);
        run_steps(b1b, 0, 5, &m1b);
        run_steps(b2, 0, 5, &m2);
        cr_assert(same_params(b1, b1b), "arch %d: repeat run differs", a);
        cr_assert(same_params(b1, b2), "arch %d: 1 vs 2 threads differ", a);
        cr_assert_eq(memcmp(&m1, &m1b, sizeof(m1)), 0);
        cr_assert_eq(memcmp(&m1, &m2, sizeof(m1)), 0, "arch %d metrics differ across threads", a);
        b1->free(b1);
        b1b->free(b1b);
        b2->free(b2);
        sae_params_free(&p);
    }
}

Test(backend_cpu, state_round_trip_resumes_bit_identically)
{
    sae_params p;
    init_params(&p, 7);
    sae_backend *a = new_backend(SAE_ARCH_BATCHTOPK, 2, &p), *b = new_backend(SAE_ARCH_BATCHTOPK, 2, &p);
    sae_metrics ma, mb;
    run_steps(a, 0, 6, &ma);
    run_steps(b, 0, 3, &mb);
    sae_state s;
    sae_state_alloc(&s, D, N);
    b->get_state(b, &s);
    b->get_params(b, &p);
    cr_assert_eq(s.adam_t, 3);
    cr_assert(s.theta > 0.0f);
    sae_backend *c = new_backend(SAE_ARCH_BATCHTOPK, 1, &p);
    c->set_state(c, &s);
    run_steps(c, 3, 3, &mb);
    cr_assert(same_params(a, c));
    cr_assert_eq(memcmp(&ma, &mb, sizeof(ma)), 0);
    sae_state sa, sc;
    sae_state_alloc(&sa, D, N);
    sae_state_alloc(&sc, D, N);
    a->get_state(a, &sa);
    c->get_state(c, &sc);
    cr_assert_eq(memcmp(sa.m_W_dec, sc.m_W_dec, sizeof(float) * N * D), 0);
    cr_assert_eq(memcmp(sa.fire_count, sc.fire_count, sizeof(int64_t) * N), 0);
    cr_assert_eq(sa.theta, sc.theta);
    a->free(a);
    b->free(b);
    c->free(c);
    sae_state_free(&s);
    sae_state_free(&sa);
    sae_state_free(&sc);
    sae_params_free(&p);
}

Test(backend_cpu, auxk_zero_without_dead_latents)
{
    float x[BMAX * D];
    make_data(x, NULL, BMAX, 3);
    sae_params p;
    init_params(&p, 8);
    sae_backend *be = new_backend(SAE_ARCH_TOPK, 1, &p);
    sae_metrics m;
    be->train_step(be, x, NULL, BMAX, K, 1e-3f, 0, &m);
    cr_assert_eq(m.auxk, 0.0);
    cr_assert_eq(m.dead_frac, 0.0);
    cr_assert_eq(m.gw_err, -1.0);
    /* mark half the latents dead: AuxK becomes positive and the loss includes it */
    sae_state s;
    sae_state_alloc(&s, D, N);
    be->get_state(be, &s);
    cr_assert_eq(s.adam_t, 1);
    for (int i = 0; i < N; i += 2)
        s.since_fired[i] = 1000;
    be->set_state(be, &s);
    be->train_step(be, x, NULL, BMAX, K, 1e-3f, 1, &m);
    cr_assert(m.auxk > 0.0);
    cr_assert_eq(m.dead_frac, 0.5);
    cr_assert(fabs(m.loss - (m.fvu + m.auxk / 32)) < 1e-9);
    /* featstats: fired latents reset, others advanced by B */
    be->get_state(be, &s);
    int fired = 0;
    for (int i = 0; i < N; i++) {
        cr_assert(s.since_fired[i] == 0 || s.since_fired[i] >= BMAX);
        fired += s.since_fired[i] == 0;
        cr_assert_eq(s.since_fired[i] == 0, s.last_fired_step[i] == 1);
    }
    cr_assert(fired > 0);
    be->free(be);
    sae_state_free(&s);
    sae_params_free(&p);
}

static float batch_min_kept(const sae_params *p, const float *x, int B)
{
    float u[BMAX * D], pre[BMAX * N], val[BMAX * K], mk;
    int row_ptr[BMAX + 1], lat[BMAX * K];
    enc_forward_cpu(x, p->W_enc, p->b_enc, p->b_dec, B, D, N, u, pre);
    select_batch_cpu(pre, B, N, (int64_t)B * K, row_ptr, lat, val, &mk);
    return mk;
}

Test(backend_cpu, theta_ema)
{
    float x[BMAX * D];
    make_data(x, NULL, BMAX, 4);
    sae_params p;
    init_params(&p, 9);
    sae_backend *be = new_backend(SAE_ARCH_BATCHTOPK, 2, &p);
    sae_state s;
    sae_state_alloc(&s, D, N);
    float mk1 = batch_min_kept(&p, x, BMAX);
    sae_metrics m;
    be->train_step(be, x, NULL, BMAX, K, 1e-3f, 0, &m);
    be->get_state(be, &s);
    cr_assert_eq(s.theta, mk1, "first step sets theta = min kept");
    cr_assert(mk1 > 0.0f);
    be->get_params(be, &p);
    float mk2 = batch_min_kept(&p, x, BMAX);
    be->train_step(be, x, NULL, BMAX, K, 1e-3f, 1, &m);
    be->get_state(be, &s);
    float want = 0.99f * mk1 + (1.0f - 0.99f) * mk2;
    cr_assert(fabsf(s.theta - want) <= 1e-6f * want, "theta %g want %g", s.theta, want);
    cr_assert(mk1 != mk2);
    be->free(be);
    sae_state_free(&s);
    sae_params_free(&p);
}

/* Reference codes from the public kernels on the backend's current parameters. */
static int ref_codes(sae_backend *be, int rule, const float *x, const float *g, int B, float theta,
                     int *row_ptr, int *lat, float *val, float *gv)
{
    sae_params p;
    sae_params_alloc(&p, D, N);
    be->get_params(be, &p);
    static float u[BMAX * D], pre[BMAX * N], gate[BMAX * N], tv[BMAX * N];
    static int tl[BMAX * N];
    enc_forward_cpu(x, p.W_enc, p.b_enc, p.b_dec, B, D, N, u, pre);
    int total = 0;
    if (rule == 0 || rule == 1) { /* top-k, gated when rule 1 */
        if (rule == 1)
            gate_forward_cpu(g, p.W_dec, B, D, N, gate);
        select_topk_cpu(pre, rule == 1 ? gate : NULL, 1.0f, NULL, B, N, K, tl, tv);
        row_ptr[0] = 0;
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < K; t++)
                if (tl[b * K + t] >= 0) {
                    lat[total] = tl[b * K + t];
                    val[total] = tv[b * K + t];
                    if (gv)
                        gv[total] = rule == 1 ? gate[b * N + lat[total]] : 0.0f;
                    total++;
                }
            row_ptr[b + 1] = total;
        }
    } else if (rule == 2) {
        float mk;
        total = select_batch_cpu(pre, B, N, (int64_t)B * K, row_ptr, lat, val, &mk);
    } else {
        total = (int)select_threshold_cpu(pre, theta, B, N, (int64_t)B * N, row_ptr, lat, val);
    }
    sae_params_free(&p);
    return total;
}

static void check_encode(sae_backend *be, int rule, const float *x, const float *g, int B, float theta)
{
    static int rp[BMAX + 1], lat[BMAX * N], rrp[BMAX + 1], rlat[BMAX * N];
    static float val[BMAX * N], gv[BMAX * N], rval[BMAX * N], rgv[BMAX * N];
    int want = ref_codes(be, rule, x, g, B, theta, rrp, rlat, rval, rgv);
    int64_t got = be->encode(be, x, g, B, K, BMAX * N, rp, lat, val, gv);
    cr_assert_eq(got, want, "rule %d: %lld entries, want %d", rule, (long long)got, want);
    cr_assert_eq(memcmp(rp, rrp, sizeof(int) * (B + 1)), 0);
    cr_assert_eq(memcmp(lat, rlat, sizeof(int) * want), 0);
    cr_assert_eq(memcmp(val, rval, sizeof(float) * want), 0);
    if (rule <= 1)
        for (int e = 0; e < want; e++)
            cr_assert(fabsf(gv[e] - rgv[e]) <= 1e-6f * (1 + fabsf(rgv[e])));
    /* a small cap reports the need and leaves the arrays alone */
    int small_lat[1] = {-9};
    float small_val[1] = {-9.0f};
    cr_assert_eq(be->encode(be, x, g, B, K, want - 1, rp, small_lat, small_val, NULL), want);
    cr_assert_eq(small_lat[0], -9);
    /* eval_batch adds the sums of this code's reconstruction */
    sae_metrics acc = {0};
    acc.tokens = 5;
    acc.l0 = 1.0;
    be->eval_batch(be, x, g, B, K, &acc);
    cr_assert_eq(acc.tokens, 5 + B);
    cr_assert(fabs(acc.l0 - (1.0 + want)) < 1e-9, "l0 sum %g want %d", acc.l0, want);
    sae_params p;
    sae_params_alloc(&p, D, N);
    be->get_params(be, &p);
    double num = 0.0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < D; j++) {
            double xh = p.b_dec[j];
            for (int e = rrp[b]; e < rrp[b + 1]; e++)
                xh += (double)rval[e] * p.W_dec[rlat[e] * D + j];
            num += (x[b * D + j] - xh) * (x[b * D + j] - xh);
        }
    cr_assert(fabs(acc.fvu_num - num) <= 1e-4 * num, "fvu_num %g want %g", acc.fvu_num, num);
    cr_assert(acc.fvu_den > 0.0);
    cr_assert(g ? acc.gw_den > 0.0 : acc.gw_den == 0.0);
    sae_params_free(&p);
}

Test(backend_cpu, eval_and_encode_inference_rules)
{
    float x[BMAX * D], g[BMAX * D];
    make_data(x, g, BMAX, 5);
    sae_params p;
    init_params(&p, 10);
    int B = BMAX - 7;
    /* topk: row top-k on a, gradients ignored */
    sae_backend *be = new_backend(SAE_ARCH_TOPK, 2, &p);
    run_steps(be, 0, 2, &(sae_metrics){0});
    check_encode(be, 0, x, NULL, B, 0);
    check_encode(be, 0, x, g, B, 0);
    be->free(be);
    /* gsae: gated with g, plain top-k without */
    be = new_backend(SAE_ARCH_GSAE, 2, &p);
    run_steps(be, 0, 2, &(sae_metrics){0});
    check_encode(be, 1, x, g, B, 0);
    check_encode(be, 0, x, NULL, B, 0);
    be->free(be);
    /* batchtopk: batch top-k while theta < 0, then the threshold */
    be = new_backend(SAE_ARCH_MATRYOSHKA, 2, &p);
    check_encode(be, 2, x, NULL, B, 0);
    run_steps(be, 0, 2, &(sae_metrics){0});
    sae_state s;
    sae_state_alloc(&s, D, N);
    be->get_state(be, &s);
    cr_assert(s.theta > 0.0f);
    check_encode(be, 3, x, NULL, B, s.theta);
    s.theta = 0.01f; /* a low threshold needs more entries than B*k: the code grows */
    be->set_state(be, &s);
    check_encode(be, 3, x, NULL, B, s.theta);
    be->free(be);
    sae_state_free(&s);
    sae_params_free(&p);
}

Test(backend_cpu, k_larger_than_initial)
{
    float x[BMAX * D];
    make_data(x, NULL, BMAX, 6);
    sae_params p;
    init_params(&p, 11);
    sae_backend *be = new_backend(SAE_ARCH_TOPK, 2, &p);
    sae_metrics m;
    be->train_step(be, x, NULL, BMAX, 3 * K, 1e-3f, 0, &m); /* k annealing starts above k */
    cr_assert_eq(m.l0, 3.0 * K);
    be->train_step(be, x, NULL, BMAX, K, 1e-3f, 1, &m);
    cr_assert_eq(m.l0, (double)K);
    be->free(be);
    sae_params_free(&p);
}

/* SF_PROFILE / be->profile: phases are timed, add up to the step, and change no result. */
Test(backend_cpu, profile_times_phases_and_changes_nothing)
{
    for (int a = 0; a < 4; a++) {
        sae_params p;
        init_params(&p, 11);
        sae_backend *plain = new_backend(ARCHS[a], 2, &p), *prof = new_backend(ARCHS[a], 2, &p);
        prof->profile = 1;
        plain->profile = 0;
        float x[BMAX * D], g[BMAX * D];
        sae_metrics m1, m2;
        for (int s = 0; s < 3; s++) {
            make_data(x, g, BMAX, 300 + s);
            plain->train_step(plain, x, g, BMAX, K, 3e-3f, s, &m1);
            double t0 = omp_get_wtime();
            prof->train_step(prof, x, g, BMAX, K, 3e-3f, s, &m2);
            double wall = omp_get_wtime() - t0, sum = 0.0;
            for (int ph = 0; ph < SAE_PH_COUNT; ph++) {
                cr_assert(prof->phase_s[ph] >= 0.0, "arch %d phase %s", a, sae_phase_name(ph));
                sum += prof->phase_s[ph];
            }
            cr_assert(sum <= wall + 1e-6 && sum >= 0.5 * wall, "arch %d: phases %g of step %g", a, sum, wall);
            cr_assert(prof->phase_s[SAE_PH_ENCODE] > 0.0);
            cr_assert_eq(prof->phase_s[SAE_PH_UPLOAD], 0.0, "no upload on the CPU");
            if (ARCHS[a] != SAE_ARCH_GSAE)
                cr_assert(prof->phase_s[SAE_PH_GATE] < 0.5 * sum);
            for (int ph = 0; ph < SAE_PH_COUNT; ph++)
                cr_assert_eq(plain->phase_s[ph], 0.0, "profile off: nothing recorded");
        }
        cr_assert(same_params(plain, prof), "arch %d: profiling changed the result", a);
        cr_assert_eq(memcmp(&m1, &m2, sizeof m1), 0);
        plain->free(plain);
        prof->free(prof);
        sae_params_free(&p);
    }
}

/* Runs 5 steps with half of the latents marked dead before each (so AuxK runs every step) on the
 * AuxK path named by SF_AUXK; params and last metrics out. */
static void run_dead_steps(sae_arch arch, const char *path, int threads, const sae_params *p0, sae_params *out,
                           sae_metrics *last)
{
    setenv("SF_AUXK", path, 1);
    sae_backend *be = new_backend(arch, threads, p0);
    sae_state s;
    sae_state_alloc(&s, D, N);
    float x[BMAX * D], g[BMAX * D];
    for (int step = 0; step < 5; step++) {
        be->get_state(be, &s);
        for (int i = 0; i < N; i++)
            s.since_fired[i] = i % 2 == step % 2 ? 1000 : 0;
        be->set_state(be, &s);
        make_data(x, g, BMAX - step, 500 + step);
        be->train_step(be, x, g, BMAX - step, K, 3e-3f, step, last);
        cr_assert(last->auxk > 0.0 && last->dead_frac == 0.5);
    }
    be->get_params(be, out);
    be->free(be);
    sae_state_free(&s);
    unsetenv("SF_AUXK");
}

static double max_rel_diff(const float *a, const float *b, size_t len)
{
    double scale = 0.0, diff = 0.0;
    for (size_t t = 0; t < len; t++) {
        scale = fmax(scale, fabs((double)a[t]));
        diff = fmax(diff, fabs((double)a[t] - (double)b[t]));
    }
    return diff / (scale > 0 ? scale : 1);
}

/* The dense-product AuxK path (auxk.h) computes what the sparse path computes (the sparse path is
 * the one checked against finite differences), and does not depend on the thread count. */
Test(backend_cpu, auxk_dense_path_equals_sparse_path)
{
    for (int a = 0; a < 4; a++) {
        sae_params p0, ps, pd, pd1;
        init_params(&p0, 21);
        sae_params_alloc(&ps, D, N);
        sae_params_alloc(&pd, D, N);
        sae_params_alloc(&pd1, D, N);
        sae_metrics ms, md, md1;
        run_dead_steps(ARCHS[a], "sparse", 2, &p0, &ps, &ms);
        run_dead_steps(ARCHS[a], "dense", 2, &p0, &pd, &md);
        run_dead_steps(ARCHS[a], "dense", 1, &p0, &pd1, &md1);
        const float *xs[4][3] = {{ps.W_enc, pd.W_enc, pd1.W_enc}, {ps.W_dec, pd.W_dec, pd1.W_dec},
                                 {ps.b_enc, pd.b_enc, pd1.b_enc}, {ps.b_dec, pd.b_dec, pd1.b_dec}};
        size_t len[4] = {N * D, N * D, N, D};
        for (int t = 0; t < 4; t++) {
            double r = max_rel_diff(xs[t][0], xs[t][1], len[t]);
            cr_assert(r < 2e-5, "arch %d tensor %d: dense vs sparse rel diff %g", a, t, r);
            cr_assert(!memcmp(xs[t][1], xs[t][2], len[t] * sizeof(float)), "arch %d tensor %d: threads", a, t);
        }
        cr_assert(fabs(ms.auxk - md.auxk) <= 1e-5 * ms.auxk, "auxk %g vs %g", ms.auxk, md.auxk);
        cr_assert(fabs(ms.grad_norm - md.grad_norm) <= 1e-5 * ms.grad_norm);
        cr_assert_eq(memcmp(&md, &md1, sizeof md), 0);
        sae_params_free(&p0);
        sae_params_free(&ps);
        sae_params_free(&pd);
        sae_params_free(&pd1);
    }
}
