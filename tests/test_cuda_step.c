/* Whole training steps: the CUDA backend (emulated in make test, real in make test-gpu) against the
 * CPU backend on identical parameters and data, for every architecture, with AuxK active; state
 * round trips and a checkpoint moved from one backend to the other mid-run. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"

static uint64_t rs;
static void seed(uint64_t s) { rs = s * 0x9E3779B97F4A7C15ull + 99; }
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

enum { D = 16, N = 128, B = 32, K = 4, STEPS = 20 };

static sae_hparams make_hp(sae_arch arch)
{
    sae_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.arch = arch;
    hp.d = D;
    hp.n = N;
    hp.k = K;
    hp.gsae_beta = 1.0f;
    if (arch == SAE_ARCH_MATRYOSHKA) {
        hp.n_prefixes = 3;
        hp.prefixes[0] = N / 8;
        hp.prefixes[1] = N / 2;
        hp.prefixes[2] = N;
    } else {
        hp.n_prefixes = 1;
        hp.prefixes[0] = N;
    }
    hp.aux_k = D / 2;
    hp.aux_alpha = 1.0f / 32.0f;
    hp.dead_tokens = 2 * B; /* many latents die at once: AuxK runs from step 2 on */
    hp.adam_b1 = 0.9f;
    hp.adam_b2 = 0.999f;
    hp.adam_eps = 1e-8f;
    hp.grad_clip = 0.0f;
    hp.precision = SAE_PREC_FP32;
    hp.theta_ema = 0.99f;
    return hp;
}

/* Data: sparse combinations of 48 random unit directions plus noise; g random. */
static float *data_x, *data_g;
static void make_data(int steps)
{
    seed(7);
    float truth[48][D];
    for (int f = 0; f < 48; f++) {
        double ss = 0;
        for (int j = 0; j < D; j++) {
            truth[f][j] = gauss();
            ss += truth[f][j] * truth[f][j];
        }
        for (int j = 0; j < D; j++)
            truth[f][j] /= (float)sqrt(ss);
    }
    size_t rows = (size_t)steps * B;
    free(data_x);
    free(data_g);
    data_x = calloc(rows * D, sizeof(float));
    data_g = calloc(rows * D, sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        for (int t = 0; t < 3; t++) {
            int f = (int)(unif() * 48);
            float a = (float)(0.5 + 2.0 * unif());
            for (int j = 0; j < D; j++)
                data_x[r * D + j] += a * truth[f][j];
        }
        for (int j = 0; j < D; j++) {
            data_x[r * D + j] += 0.05f * gauss() + 0.3f;
            data_g[r * D + j] = 0.2f * gauss();
        }
    }
}

static void init_params(sae_params *p, uint64_t s)
{
    seed(s);
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
        p->b_enc[i] = 0.0f;
    }
    for (int j = 0; j < D; j++) {
        double m = 0;
        for (int b = 0; b < B; b++)
            m += data_x[b * D + j];
        p->b_dec[j] = (float)(m / B);
    }
}

static sae_backend *open_cuda(const sae_hparams *hp)
{
    char why[256] = "";
    sae_backend *be = backend_cuda_new(hp, B, 0, why, (int)sizeof why);
    cr_assert(be != NULL, "backend_cuda_new: %s", why);
    cr_assert_str_eq(be->name, "cuda");
    return be;
}

static void expect_params_near(const sae_params *a, const sae_params *b, double tol, const char *what)
{
    const struct {
        const float *x, *y;
        size_t n;
        const char *name;
    } t[] = {{a->W_enc, b->W_enc, (size_t)N * D, "W_enc"}, {a->W_dec, b->W_dec, (size_t)N * D, "W_dec"},
             {a->b_enc, b->b_enc, N, "b_enc"}, {a->b_dec, b->b_dec, D, "b_dec"}};
    for (int k = 0; k < 4; k++)
        for (size_t i = 0; i < t[k].n; i++)
            cr_assert(fabs((double)t[k].x[i] - t[k].y[i]) <= tol * (1.0 + fabs((double)t[k].y[i])),
                      "%s: %s[%zu] %.9g vs %.9g", what, t[k].name, i, (double)t[k].x[i],
                      (double)t[k].y[i]);
}

static void expect_metrics_near(const sae_metrics *a, const sae_metrics *b, double rtol, int step)
{
    cr_assert(fabs(a->fvu - b->fvu) <= 1e-6 + rtol * fabs(b->fvu), "step %d fvu %.9g vs %.9g", step, a->fvu, b->fvu);
    cr_assert(fabs(a->loss - b->loss) <= 1e-6 + rtol * fabs(b->loss), "step %d loss %.9g vs %.9g", step, a->loss, b->loss);
    cr_assert(fabs(a->auxk - b->auxk) <= 1e-6 + rtol * fabs(b->auxk), "step %d auxk %.9g vs %.9g", step, a->auxk, b->auxk);
    cr_assert(fabs(a->grad_norm - b->grad_norm) <= 1e-6 + rtol * fabs(b->grad_norm), "step %d grad_norm %.9g vs %.9g", step, a->grad_norm, b->grad_norm);
    cr_assert(fabs(a->fvu_den - b->fvu_den) <= 1e-9 * fabs(b->fvu_den), "step %d den", step);
    cr_assert(fabs(a->l0 - b->l0) <= 0.05 * b->l0 + 1e-9, "step %d l0 %g vs %g", step, a->l0, b->l0);
    cr_assert(fabs(a->dead_frac - b->dead_frac) <= 0.05, "step %d dead_frac %g vs %g", step, a->dead_frac, b->dead_frac);
    cr_assert(fabs(a->gw_err - b->gw_err) <= 1e-6 + rtol * fabs(b->gw_err), "step %d gw_err %g vs %g", step, a->gw_err, b->gw_err);
    cr_assert_eq(a->tokens, b->tokens);
}

/* Codes of both backends under the inference rule: identical indices, close values. */
static void expect_same_codes(sae_backend *cu, sae_backend *cpu, const float *x, const float *g)
{
    const int64_t cap = (int64_t)B * N;
    int *rp1 = malloc((B + 1) * sizeof(int)), *rp2 = malloc((B + 1) * sizeof(int));
    int *l1 = malloc(cap * sizeof(int)), *l2 = malloc(cap * sizeof(int));
    float *v1 = malloc(cap * sizeof(float)), *v2 = malloc(cap * sizeof(float));
    float *g1 = malloc(cap * sizeof(float)), *g2 = malloc(cap * sizeof(float));
    int64_t t1 = cu->encode(cu, x, g, B, K, cap, rp1, l1, v1, g1);
    int64_t t2 = cpu->encode(cpu, x, g, B, K, cap, rp2, l2, v2, g2);
    cr_assert_eq(t1, t2, "entries %lld vs %lld", (long long)t1, (long long)t2);
    cr_assert(!memcmp(rp1, rp2, (B + 1) * sizeof(int)), "row_ptr differs");
    cr_assert(!memcmp(l1, l2, (size_t)t1 * sizeof(int)), "selected latents differ");
    for (int64_t e = 0; e < t1; e++) {
        cr_assert(fabsf(v1[e] - v2[e]) <= 1e-5f + 1e-5f * fabsf(v2[e]), "val[%lld]", (long long)e);
        cr_assert(fabsf(g1[e] - g2[e]) <= 1e-5f + 1e-5f * fabsf(g2[e]), "gate_val[%lld]", (long long)e);
    }
    free(rp1); free(rp2); free(l1); free(l2); free(v1); free(v2); free(g1); free(g2);
}

static void expect_state_near(const sae_state *a, const sae_state *b, int exact_counts)
{
    cr_assert_eq(a->adam_t, b->adam_t);
    cr_assert(fabsf(a->theta - b->theta) <= 1e-4f * (1.0f + fabsf(b->theta)), "theta %g vs %g", (double)a->theta, (double)b->theta);
    for (int i = 0; i < N; i++) {
        if (exact_counts) {
            cr_assert_eq(a->since_fired[i], b->since_fired[i], "since_fired[%d]", i);
            cr_assert_eq(a->fire_count[i], b->fire_count[i], "fire_count[%d]", i);
            cr_assert_eq(a->last_fired_step[i], b->last_fired_step[i], "last_fired_step[%d]", i);
        }
        cr_assert(fabs(a->act_sum[i] - b->act_sum[i]) <= 1e-3 * (1.0 + fabs(b->act_sum[i])), "act_sum[%d]", i);
    }
    /* moments average gradients, whose selections may part on near-ties of the fp32 GEMMs;
     * components that cancel are compared on the scale of the whole tensor */
    float mx = 0.0f;
    for (size_t i = 0; i < (size_t)N * D; i++)
        mx = fmaxf(mx, fabsf(b->m_W_dec[i]));
    cr_assert(mx > 0.0f, "moments never set");
    for (size_t i = 0; i < (size_t)N * D; i++)
        cr_assert(fabsf(a->m_W_dec[i] - b->m_W_dec[i]) <= 5e-3f * fabsf(b->m_W_dec[i]) + 1e-3f * mx,
                  "m_W_dec[%zu] %g vs %g", i, (double)a->m_W_dec[i], (double)b->m_W_dec[i]);
}

/* Trains both backends STEPS steps from the same start; compares step 0 selection exactly,
 * metrics every step, parameters, state, eval and codes at the end. */
static void parity_run(sae_arch arch, float clip, double param_tol)
{
    make_data(STEPS);
    sae_hparams hp = make_hp(arch);
    hp.grad_clip = clip;
    sae_params p0, pc, pg;
    sae_params_alloc(&p0, D, N);
    sae_params_alloc(&pc, D, N);
    sae_params_alloc(&pg, D, N);
    init_params(&p0, 11 + arch);
    sae_backend *cpu = backend_cpu_new(&hp, B, 1);
    sae_backend *cu = open_cuda(&hp);
    cpu->set_params(cpu, &p0);
    cu->set_params(cu, &p0);
    const int use_g = arch == SAE_ARCH_GSAE || arch == SAE_ARCH_TOPK; /* topk: gw metrics */
    expect_same_codes(cu, cpu, data_x, use_g ? data_g : NULL);
    int saw_aux = 0;
    for (int s = 0; s < STEPS; s++) {
        const float *x = data_x + (size_t)s * B * D, *g = use_g ? data_g + (size_t)s * B * D : NULL;
        sae_metrics mc, mg;
        cpu->train_step(cpu, x, g, B, K, 1e-3f, s, &mc);
        cu->train_step(cu, x, g, B, K, 1e-3f, s, &mg);
        if (s == 0)
            cr_assert_eq(mg.l0, mc.l0, "first-step l0");
        expect_metrics_near(&mg, &mc, 1e-3, s);
        saw_aux |= mc.auxk > 0.0;
    }
    cr_assert(saw_aux, "AuxK never ran: the test does not cover it");
    cpu->get_params(cpu, &pc);
    cu->get_params(cu, &pg);
    expect_params_near(&pg, &pc, param_tol, "after training");
    /* a broken update must fail this comparison */
    cr_assert(fabs((double)pc.W_enc[0] - p0.W_enc[0]) > 10 * param_tol * (1 + fabs(p0.W_enc[0])) ||
              fabs((double)pc.W_enc[1] - p0.W_enc[1]) > 10 * param_tol * (1 + fabs(p0.W_enc[1])) ||
              fabs((double)pc.b_dec[0] - p0.b_dec[0]) > 10 * param_tol * (1 + fabs(p0.b_dec[0])),
              "parameters barely moved: tolerance too loose to mean anything");
    sae_state sc, sg;
    sae_state_alloc(&sc, D, N);
    sae_state_alloc(&sg, D, N);
    cpu->get_state(cpu, &sc);
    cu->get_state(cu, &sg);
    expect_state_near(&sg, &sc, 0);
    /* eval and codes on the trained SAEs (same params on both, so codes are comparable) */
    cu->set_params(cu, &pc);
    cu->set_state(cu, &sc);
    expect_same_codes(cu, cpu, data_x + B * D, use_g ? data_g + B * D : NULL);
    sae_metrics ac, ag;
    memset(&ac, 0, sizeof ac);
    memset(&ag, 0, sizeof ag);
    cpu->eval_batch(cpu, data_x, use_g ? data_g : NULL, B, K, &ac);
    cu->eval_batch(cu, data_x, use_g ? data_g : NULL, B, K, &ag);
    cr_assert(fabs(ag.fvu_num - ac.fvu_num) <= 1e-5 * ac.fvu_num, "eval fvu_num %g vs %g", ag.fvu_num, ac.fvu_num);
    cr_assert(fabs(ag.fvu_den - ac.fvu_den) <= 1e-9 * ac.fvu_den);
    cr_assert_eq(ag.l0, ac.l0);
    cr_assert_eq(ag.tokens, ac.tokens);
    cr_assert(fabs(ag.gw_num - ac.gw_num) <= 1e-5 * ac.gw_num + 1e-12);
    sae_state_free(&sc);
    sae_state_free(&sg);
    cu->free(cu);
    cpu->free(cpu);
    sae_params_free(&p0);
    sae_params_free(&pc);
    sae_params_free(&pg);
}

Test(cuda_step, topk) { parity_run(SAE_ARCH_TOPK, 0.0f, 2e-4); }
Test(cuda_step, topk_clipped) { parity_run(SAE_ARCH_TOPK, 0.05f, 2e-4); }
Test(cuda_step, batchtopk) { parity_run(SAE_ARCH_BATCHTOPK, 0.0f, 2e-4); }
Test(cuda_step, matryoshka) { parity_run(SAE_ARCH_MATRYOSHKA, 0.0f, 2e-4); }
Test(cuda_step, gsae) { parity_run(SAE_ARCH_GSAE, 0.0f, 2e-4); }

/* get/set of params and state are exact inverses; a state moved in gives the same next step. */
Test(cuda_step, state_round_trip)
{
    make_data(4);
    sae_hparams hp = make_hp(SAE_ARCH_BATCHTOPK);
    sae_params p0, p1;
    sae_params_alloc(&p0, D, N);
    sae_params_alloc(&p1, D, N);
    init_params(&p0, 5);
    sae_backend *a = open_cuda(&hp), *b = open_cuda(&hp);
    a->set_params(a, &p0);
    sae_metrics m;
    for (int s = 0; s < 3; s++)
        a->train_step(a, data_x + (size_t)s * B * D, NULL, B, K, 1e-3f, s, &m);
    sae_state s1, s2;
    sae_state_alloc(&s1, D, N);
    sae_state_alloc(&s2, D, N);
    a->get_state(a, &s1);
    a->get_params(a, &p1);
    cr_assert_eq(s1.adam_t, 3);
    cr_assert(s1.theta > 0.0f, "theta set by batchtopk training");
    b->set_params(b, &p1);
    b->set_state(b, &s1);
    b->get_state(b, &s2);
    cr_assert(!memcmp(s1.m_W_enc, s2.m_W_enc, (size_t)N * D * 4));
    cr_assert(!memcmp(s1.v_W_dec, s2.v_W_dec, (size_t)N * D * 4));
    cr_assert(!memcmp(s1.m_b_dec, s2.m_b_dec, D * 4));
    cr_assert(!memcmp(s1.since_fired, s2.since_fired, N * 8));
    cr_assert(!memcmp(s1.fire_count, s2.fire_count, N * 8));
    cr_assert(!memcmp(s1.act_sum, s2.act_sum, N * 8));
    cr_assert(!memcmp(s1.act_max, s2.act_max, N * 4));
    cr_assert(!memcmp(s1.last_fired_step, s2.last_fired_step, N * 8));
    cr_assert_eq(s1.adam_t, s2.adam_t);
    cr_assert_eq(s1.theta, s2.theta);
    /* same state + params + data: bit-identical next step on the two instances */
    sae_metrics ma, mb;
    a->train_step(a, data_x + 3 * B * D, NULL, B, K, 1e-3f, 3, &ma);
    b->train_step(b, data_x + 3 * B * D, NULL, B, K, 1e-3f, 3, &mb);
    cr_assert_eq(ma.loss, mb.loss, "loss %.17g vs %.17g", ma.loss, mb.loss);
    cr_assert_eq(ma.grad_norm, mb.grad_norm);
    cr_assert_eq(ma.dead_frac, mb.dead_frac);
    sae_params q1, q2;
    sae_params_alloc(&q1, D, N);
    sae_params_alloc(&q2, D, N);
    a->get_params(a, &q1);
    b->get_params(b, &q2);
    cr_assert(!memcmp(q1.W_dec, q2.W_dec, (size_t)N * D * 4), "not deterministic");
    cr_assert(!memcmp(q1.b_dec, q2.b_dec, D * 4));
    sae_params_free(&q1);
    sae_params_free(&q2);
    sae_state_free(&s1);
    sae_state_free(&s2);
    sae_params_free(&p0);
    sae_params_free(&p1);
    a->free(a);
    b->free(b);
}

/* A checkpoint (params + state) taken from the CPU backend mid-run resumes on the CUDA backend
 * and the other way round; both continuations stay with the CPU-only run. */
Test(cuda_step, resume_across_backends)
{
    make_data(STEPS);
    sae_hparams hp = make_hp(SAE_ARCH_TOPK);
    sae_params p0, pm, pref, pgot;
    sae_params_alloc(&p0, D, N);
    sae_params_alloc(&pm, D, N);
    sae_params_alloc(&pref, D, N);
    sae_params_alloc(&pgot, D, N);
    init_params(&p0, 21);
    sae_state sm;
    sae_state_alloc(&sm, D, N);
    for (int dir = 0; dir < 2; dir++) {
        sae_backend *cpu = backend_cpu_new(&hp, B, 1);
        sae_backend *cu = open_cuda(&hp);
        sae_backend *first = dir == 0 ? cpu : cu, *second = dir == 0 ? cu : cpu;
        sae_backend *ref = backend_cpu_new(&hp, B, 1);
        ref->set_params(ref, &p0);
        first->set_params(first, &p0);
        sae_metrics m, mr;
        for (int s = 0; s < STEPS / 2; s++) {
            first->train_step(first, data_x + (size_t)s * B * D, NULL, B, K, 1e-3f, s, &m);
            ref->train_step(ref, data_x + (size_t)s * B * D, NULL, B, K, 1e-3f, s, &mr);
        }
        first->get_params(first, &pm);
        first->get_state(first, &sm);
        second->set_params(second, &pm);
        second->set_state(second, &sm);
        for (int s = STEPS / 2; s < STEPS; s++) {
            second->train_step(second, data_x + (size_t)s * B * D, NULL, B, K, 1e-3f, s, &m);
            ref->train_step(ref, data_x + (size_t)s * B * D, NULL, B, K, 1e-3f, s, &mr);
            expect_metrics_near(&m, &mr, 1e-3, s);
        }
        ref->get_params(ref, &pref);
        second->get_params(second, &pgot);
        expect_params_near(&pgot, &pref, 2e-4, dir == 0 ? "cpu -> cuda" : "cuda -> cpu");
        sae_state sa, sb;
        sae_state_alloc(&sa, D, N);
        sae_state_alloc(&sb, D, N);
        ref->get_state(ref, &sa);
        second->get_state(second, &sb);
        expect_state_near(&sb, &sa, 0);
        sae_state_free(&sa);
        sae_state_free(&sb);
        cpu->free(cpu);
        cu->free(cu);
        ref->free(ref);
    }
    sae_state_free(&sm);
    sae_params_free(&p0);
    sae_params_free(&pm);
    sae_params_free(&pref);
    sae_params_free(&pgot);
}

/* tf32 and bf16 encoder GEMMs train like fp32 (loosely: they round the inputs). */
Test(cuda_step, reduced_precision)
{
    make_data(STEPS);
    for (int prec = SAE_PREC_TF32; prec <= SAE_PREC_BF16; prec++) {
        sae_hparams hp = make_hp(SAE_ARCH_TOPK);
        hp.precision = (sae_precision)prec;
        sae_params p0;
        sae_params_alloc(&p0, D, N);
        init_params(&p0, 31);
        sae_backend *cpu = backend_cpu_new(&hp, B, 1);
        sae_backend *cu = open_cuda(&hp);
        cpu->set_params(cpu, &p0);
        cu->set_params(cu, &p0);
        sae_metrics mc, mg;
        double first = 0;
        for (int s = 0; s < STEPS; s++) {
            cpu->train_step(cpu, data_x + (size_t)s * B * D, NULL, B, K, 1e-3f, s, &mc);
            cu->train_step(cu, data_x + (size_t)s * B * D, NULL, B, K, 1e-3f, s, &mg);
            if (s == 0)
                first = mg.fvu;
            cr_assert(isfinite(mg.loss));
        }
        cr_assert(fabs(mg.fvu - mc.fvu) <= 0.05 * mc.fvu, "precision %d: fvu %g vs %g", prec, mg.fvu, mc.fvu);
        cr_assert(mg.fvu < first, "precision %d: no progress (%g -> %g)", prec, first, mg.fvu);
        sae_params_free(&p0);
        cu->free(cu);
        cpu->free(cpu);
    }
}

/* be->profile on the CUDA backend: event-timed phases, including the batch upload, and the
 * same results as without profiling. */
Test(cuda_step, profile_times_phases_and_changes_nothing)
{
    make_data(4);
    sae_hparams hp = make_hp(SAE_ARCH_GSAE);
    sae_params p, q1, q2;
    sae_params_alloc(&p, D, N);
    sae_params_alloc(&q1, D, N);
    sae_params_alloc(&q2, D, N);
    init_params(&p, 5);
    sae_backend *plain = open_cuda(&hp), *prof = open_cuda(&hp);
    plain->profile = 0;
    prof->profile = 1;
    plain->set_params(plain, &p);
    prof->set_params(prof, &p);
    sae_metrics m1, m2;
    for (int s = 0; s < 4; s++) {
        const float *x = data_x + (size_t)s * B * D, *g = data_g + (size_t)s * B * D;
        plain->train_step(plain, x, g, B, K, 1e-2f, s, &m1);
        prof->train_step(prof, x, g, B, K, 1e-2f, s, &m2);
        double sum = 0.0;
        for (int ph = 0; ph < SAE_PH_COUNT; ph++) {
            cr_assert(prof->phase_s[ph] >= 0.0, "phase %s", sae_phase_name(ph));
            sum += prof->phase_s[ph];
            cr_assert_eq(plain->phase_s[ph], 0.0);
        }
        cr_assert(sum > 0.0 && prof->phase_s[SAE_PH_ENCODE] > 0.0 && prof->phase_s[SAE_PH_GATE] > 0.0);
        cr_assert_eq(memcmp(&m1, &m2, sizeof m1), 0, "step %d metrics", s);
    }
    plain->get_params(plain, &q1);
    prof->get_params(prof, &q2);
    cr_assert(!memcmp(q1.W_enc, q2.W_enc, sizeof(float) * N * D) && !memcmp(q1.W_dec, q2.W_dec, sizeof(float) * N * D));
    plain->free(plain);
    prof->free(prof);
    sae_params_free(&p);
    sae_params_free(&q1);
    sae_params_free(&q2);
}

/* The pipelined loop (submit step t into the next input buffer, collect step t-1 while t runs)
 * gives bit for bit the synchronous backend's metrics, parameters and state, with latents dying
 * mid-run (AuxK starts on the host's guess from a lagged margin) and an eval and a state read
 * landing between submits. */
static void pipeline_run(sae_arch arch, int64_t dead_tokens)
{
    make_data(STEPS);
    sae_hparams hp = make_hp(arch);
    hp.dead_tokens = dead_tokens;
    const int gs = arch == SAE_ARCH_GSAE;
    sae_params p0;
    sae_params_alloc(&p0, D, N);
    init_params(&p0, 11);
    sae_backend *sync = open_cuda(&hp), *pipe = open_cuda(&hp);
    cr_assert(pipe->submit_step && pipe->collect_step && pipe->input_buffer);
    sync->set_params(sync, &p0);
    pipe->set_params(pipe, &p0);
    sae_metrics ms[STEPS], mp[STEPS], acc;
    int got = 0, aux_steps = 0;
    sae_state st;
    sae_state_alloc(&st, D, N);
    for (int s = 0; s < STEPS; s++) {
        const float *x = data_x + (size_t)s * B * D, *g = data_g + (size_t)s * B * D;
        sync->train_step(sync, x, gs ? g : NULL, B, K, 3e-3f, s, &ms[s]);
        float *bx = pipe->input_buffer(pipe, 0), *bg = pipe->input_buffer(pipe, 1);
        memcpy(bx, x, (size_t)B * D * sizeof(float));
        memcpy(bg, g, (size_t)B * D * sizeof(float));
        pipe->submit_step(pipe, bx, gs ? bg : NULL, B, K, 3e-3f, s);
        if (s == 7) { /* waits for the queued steps; their metrics stay collectable */
            memset(&acc, 0, sizeof acc);
            pipe->eval_batch(pipe, data_x, NULL, B, K, &acc);
        }
        if (s == 12)
            pipe->get_state(pipe, &st);
        if (s > 0)
            cr_assert(pipe->collect_step(pipe, &mp[got++]));
    }
    cr_assert(pipe->collect_step(pipe, &mp[got++]));
    cr_assert(!pipe->collect_step(pipe, &acc), "nothing left to collect");
    cr_assert_eq(got, STEPS);
    for (int s = 0; s < STEPS; s++) {
        cr_assert_eq(mp[s].loss, ms[s].loss, "step %d loss %.17g vs %.17g", s, mp[s].loss, ms[s].loss);
        cr_assert_eq(mp[s].auxk, ms[s].auxk, "step %d auxk %.17g vs %.17g", s, mp[s].auxk, ms[s].auxk);
        cr_assert_eq(mp[s].dead_frac, ms[s].dead_frac, "step %d", s);
        cr_assert_eq(mp[s].grad_norm, ms[s].grad_norm, "step %d", s);
        cr_assert_eq(mp[s].l0, ms[s].l0, "step %d", s);
        cr_assert_eq(mp[s].gw_err, ms[s].gw_err, "step %d", s);
        cr_assert_eq(mp[s].tokens, ms[s].tokens, "step %d", s);
        aux_steps += ms[s].auxk > 0;
    }
    cr_assert_eq(ms[0].dead_frac, 0.0, "the run starts with no dead latent");
    cr_assert(aux_steps > 0, "latents died during the run: AuxK ran");
    sae_params a, b;
    sae_params_alloc(&a, D, N);
    sae_params_alloc(&b, D, N);
    sync->get_params(sync, &a);
    pipe->get_params(pipe, &b);
    cr_assert(!memcmp(a.W_enc, b.W_enc, (size_t)N * D * 4), "W_enc differs");
    cr_assert(!memcmp(a.W_dec, b.W_dec, (size_t)N * D * 4), "W_dec differs");
    cr_assert(!memcmp(a.b_dec, b.b_dec, D * 4), "b_dec differs");
    sae_state s1, s2;
    sae_state_alloc(&s1, D, N);
    sae_state_alloc(&s2, D, N);
    sync->get_state(sync, &s1);
    pipe->get_state(pipe, &s2);
    cr_assert(!memcmp(s1.since_fired, s2.since_fired, N * 8));
    cr_assert(!memcmp(s1.v_W_enc, s2.v_W_enc, (size_t)N * D * 4));
    cr_assert_eq(s1.theta, s2.theta);
    cr_assert_eq(st.adam_t, 13, "state read after submit 12 holds 13 steps");
    sae_state_free(&st);
    sae_state_free(&s1);
    sae_state_free(&s2);
    sae_params_free(&a);
    sae_params_free(&b);
    sae_params_free(&p0);
    sync->free(sync);
    pipe->free(pipe);
}

/* dead_tokens 5B: nothing can die before step 4, and the host learns of the first deaths a step
 * late (its margin, not the count, makes step 5 run AuxK). */
Test(cuda_step, pipelined_topk) { pipeline_run(SAE_ARCH_TOPK, 5 * B); }
Test(cuda_step, pipelined_batchtopk) { pipeline_run(SAE_ARCH_BATCHTOPK, 5 * B + B / 2); }
Test(cuda_step, pipelined_matryoshka) { pipeline_run(SAE_ARCH_MATRYOSHKA, 3 * B); }
Test(cuda_step, pipelined_gsae) { pipeline_run(SAE_ARCH_GSAE, 4 * B); }
