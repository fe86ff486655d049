/* Backend-level data-parallel parity, run under mpirun (tests/dist/run.sh): every rank trains an
 * emulated CUDA backend and a CPU backend on its own rows of the same global batches (uneven
 * shares), both with the ranks' collectives attached (the CUDA one through its emulated NCCL),
 * plus a one-rank CPU backend on the full batches. For every architecture, with AuxK active:
 * the CUDA multi-rank weights must match the CPU multi-rank weights, and those the one-rank
 * weights; metrics are the global step's on every rank; eval with an empty share on one rank
 * matches the one-rank eval. Exit status 0 only when every rank passes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/dist_mpi.h"
#include "kernels/backend.h"

enum { D = 16, N = 128, GB = 32, K = 4, STEPS = 50 };
#define RTOL 1e-4

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
    hp.dead_tokens = 2 * GB; /* many latents die early: AuxK runs from step 2 on */
    hp.adam_b1 = 0.9f;
    hp.adam_b2 = 0.999f;
    hp.adam_eps = 1e-8f;
    hp.grad_clip = 0.0f;
    hp.precision = SAE_PREC_FP32;
    hp.theta_ema = 0.99f;
    return hp;
}

/* Sparse combinations of 48 unit directions plus noise; g random (same on every rank).
 * dup: every other batch ends with copies of its first 8 rows, which live on another rank. */
static float *data_x, *data_g;
static void make_data(int dup)
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
    size_t rows = (size_t)(STEPS + 1) * GB;
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
    for (int s = 1; dup && s <= STEPS; s += 2)
        for (int j = 0; j < 8; j++) {
            size_t dst = ((size_t)s * GB + GB - 8 + j) * D, src = ((size_t)s * GB + j) * D;
            memcpy(data_x + dst, data_x + src, sizeof(float) * D);
            memcpy(data_g + dst, data_g + src, sizeof(float) * D);
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
        for (int b = 0; b < GB; b++)
            m += data_x[b * D + j];
        p->b_dec[j] = (float)(m / GB);
    }
}

static int fails;
#define EXPECT(cond, ...)                                                                     \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "dist-parity rank %d: ", g_rank);                                 \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
            fails++;                                                                          \
        }                                                                                     \
    } while (0)
static int g_rank;

static int near(double a, double b, double tol) { return fabs(a - b) <= tol * (1.0 + fabs(b)); }

/* Largest |a - b| / (1 + |b|) over the four tensors (the parity suites' atol + rtol |ref| with
 * atol = rtol): Adam turns gradients that are rounding noise (|g| near eps) into steps of
 * either sign, so entries near zero are compared on the weights' scale, not their own. */
static double max_err(const sae_params *a, const sae_params *b, const char **where)
{
    const struct {
        const float *x, *y;
        size_t n;
        const char *name;
    } t[] = {{a->W_enc, b->W_enc, (size_t)N * D, "W_enc"}, {a->W_dec, b->W_dec, (size_t)N * D, "W_dec"},
             {a->b_enc, b->b_enc, N, "b_enc"}, {a->b_dec, b->b_dec, D, "b_dec"}};
    double worst = 0.0;
    for (int k = 0; k < 4; k++)
        for (size_t i = 0; i < t[k].n; i++) {
            double r = fabs((double)t[k].x[i] - t[k].y[i]) / (1.0 + fabs(t[k].y[i]));
            if (r > worst) {
                worst = r;
                *where = t[k].name;
            }
        }
    return worst;
}

/* Rows [off, off + B) of each global batch go to this rank: uneven shares (rank 0 two more). */
static void share_of(int rank, int world, int *off, int *B)
{
    int base = GB / world, o = 0;
    for (int r = 0; r <= rank; r++) {
        int b = base + (r == 0 ? GB % world : 0) + (world > 1 ? (r == 0 ? 2 : r == world - 1 ? -2 : 0) : 0);
        if (r == rank) {
            *off = o;
            *B = b;
        }
        o += b;
    }
}

/* ties = 0: the three backends against each other. ties = 1 (duplicated rows): equal values
 * on two ranks, so the threshold often falls on a tie that the rank order must break; the
 * one-rank run computes the copies at other GEMM positions, where they can differ in the last
 * bit and break the tie the other way, so it is left out (its checks compare the CPU run with
 * itself) and the CUDA run must follow the CPU run's tie breaks. */
static void run_arch(const sae_dist *dd, sae_arch arch, const char *name, int ties)
{
    sae_hparams hp = make_hp(arch);
    sae_params p0, p1, pc, pg;
    sae_params_alloc(&p0, D, N);
    sae_params_alloc(&p1, D, N);
    sae_params_alloc(&pc, D, N);
    sae_params_alloc(&pg, D, N);
    init_params(&p0, 11 + arch);
    int off = 0, B = 0;
    share_of(dd->rank, dd->world, &off, &B);
    sae_backend *one = backend_cpu_new(&hp, GB, 1);
    sae_backend *cpu = backend_cpu_new(&hp, GB, 1);
    char why[256] = "";
    sae_backend *cu = backend_cuda_new(&hp, GB, backend_cuda_dist_device(dd), why, (int)sizeof why);
    if (!cu) {
        EXPECT(0, "backend_cuda_new: %s", why);
        return;
    }
    cpu->set_dist(cpu, dd);
    cu->set_dist(cu, dd);
    one->set_params(one, &p0);
    cpu->set_params(cpu, &p0);
    cu->set_params(cu, &p0);
    const int use_g = arch == SAE_ARCH_GSAE || arch == SAE_ARCH_TOPK; /* topk: gw metrics */
    int saw_aux = 0;
    double worst_loss = 0.0;
    for (int s = 0; s < STEPS; s++) {
        const float *x = data_x + (size_t)s * GB * D, *g = use_g ? data_g + (size_t)s * GB * D : NULL;
        const float *xl = x + (size_t)off * D, *gl = g ? g + (size_t)off * D : NULL;
        sae_metrics m1, mc, mg;
        if (!ties)
            one->train_step(one, x, g, GB, K, 1e-3f, s, &m1);
        cpu->train_step(cpu, xl, gl, B, K, 1e-3f, s, &mc);
        cu->train_step(cu, xl, gl, B, K, 1e-3f, s, &mg);
        if (ties)
            m1 = mc;
        EXPECT(mc.tokens == GB && mg.tokens == GB, "%s step %d: tokens %lld / %lld, want %d", name,
               s, (long long)mc.tokens, (long long)mg.tokens, GB);
        EXPECT(near(mc.loss, m1.loss, 1e-3) && near(mg.loss, mc.loss, 1e-3),
               "%s step %d: loss 1-rank %.9g, cpu %.9g, cuda %.9g", name, s, m1.loss, mc.loss, mg.loss);
        EXPECT(near(mc.fvu_den, m1.fvu_den, 1e-9) && near(mg.fvu_den, mc.fvu_den, 1e-9),
               "%s step %d: den %.12g / %.12g / %.12g", name, s, m1.fvu_den, mc.fvu_den, mg.fvu_den);
        EXPECT(fabs(mc.l0 - m1.l0) < 1e-9 && fabs(mg.l0 - mc.l0) < 1e-9,
               "%s step %d: l0 %g / %g / %g", name, s, m1.l0, mc.l0, mg.l0);
        EXPECT(mc.dead_frac == m1.dead_frac && mg.dead_frac == mc.dead_frac,
               "%s step %d: dead_frac %g / %g / %g", name, s, m1.dead_frac, mc.dead_frac, mg.dead_frac);
        EXPECT(near(mc.auxk, m1.auxk, 1e-3) && near(mg.auxk, mc.auxk, 1e-3),
               "%s step %d: auxk %g / %g / %g", name, s, m1.auxk, mc.auxk, mg.auxk);
        EXPECT(near(mc.grad_norm, m1.grad_norm, 1e-3) && near(mg.grad_norm, mc.grad_norm, 1e-3),
               "%s step %d: grad_norm %g / %g / %g", name, s, m1.grad_norm, mc.grad_norm, mg.grad_norm);
        if (use_g)
            EXPECT(near(mc.gw_err, m1.gw_err, 1e-3) && near(mg.gw_err, mc.gw_err, 1e-3),
                   "%s step %d: gw_err %g / %g / %g", name, s, m1.gw_err, mc.gw_err, mg.gw_err);
        worst_loss = fmax(worst_loss, fabs(mg.loss - m1.loss) / (fabs(m1.loss) + 1e-30));
        if (getenv("DIST_PARITY_TRACE")) {
            one->get_params(one, &p1);
            cpu->get_params(cpu, &pc);
            cu->get_params(cu, &pg);
            const char *a = "-", *b = "-";
            double x1 = max_err(&pg, &pc, &a), x2 = max_err(&pc, &p1, &b);
            if (dd->rank == 0)
                printf("trace %s step %d: cuda-cpu %.2e (%s) cpu-1rank %.2e (%s)\n", name, s, x1, a, x2, b);
        }
        saw_aux |= m1.auxk > 0.0;
    }
    EXPECT(saw_aux, "%s: AuxK never ran: the test does not cover it", name);
    one->get_params(one, &p1);
    cpu->get_params(cpu, &pc);
    if (ties)
        cpu->get_params(cpu, &p1);
    cu->get_params(cu, &pg);
    const char *w1 = "-", *w2 = "-";
    double r_cc = max_err(&pg, &pc, &w1), r_c1 = max_err(&pc, &p1, &w2);
    EXPECT(r_cc <= RTOL, "%s: CUDA 2-rank vs CPU 2-rank weights differ by %.3g (relative, in %s)",
           name, r_cc, w1);
    EXPECT(r_c1 <= RTOL, "%s: CPU 2-rank vs CPU 1-rank weights differ by %.3g (relative, in %s)",
           name, r_c1, w2);
    /* the comparison means something only if training moved the weights well past it */
    const char *w0 = "-";
    double moved = max_err(&p0, &p1, &w0);
    EXPECT(moved > 20 * RTOL, "%s: weights moved only %.3g: the tolerance says nothing", name, moved);
    EXPECT(dist_params_diverged(dd, &pc, D, N) == 0 && dist_params_diverged(dd, &pg, D, N) == 0,
           "%s: ranks hold different weights", name);
    /* dead counters are global: since_fired equals the one-rank run's exactly */
    sae_state s1, sc, sg;
    sae_state_alloc(&s1, D, N);
    sae_state_alloc(&sc, D, N);
    sae_state_alloc(&sg, D, N);
    one->get_state(one, &s1);
    cpu->get_state(cpu, &sc);
    if (ties) {
        cpu->get_state(cpu, &s1);
        dist_combine_stats(dd, &s1, N);
    }
    cu->get_state(cu, &sg);
    int sf_bad = 0;
    for (int i = 0; i < N; i++)
        sf_bad += sc.since_fired[i] != s1.since_fired[i] || sg.since_fired[i] != sc.since_fired[i];
    EXPECT(sf_bad == 0, "%s: since_fired differs from the one-rank run on %d latents", name, sf_bad);
    EXPECT(near(sc.theta, s1.theta, 1e-4) && near(sg.theta, sc.theta, 1e-4),
           "%s: theta %g / %g / %g", name, (double)s1.theta, (double)sc.theta, (double)sg.theta);
    /* featstats stay per-rank partials; combined they are the one-rank totals */
    dist_combine_stats(dd, &sg, N);
    int fc_bad = 0;
    for (int i = 0; i < N; i++)
        fc_bad += sg.fire_count[i] != s1.fire_count[i];
    EXPECT(fc_bad == 0, "%s: combined fire_count differs from the one-rank run on %d latents", name, fc_bad);
    /* eval on the last batch with every row on rank 0 (the others pass B = 0) */
    const float *ex = data_x + (size_t)STEPS * GB * D, *eg = use_g ? data_g + (size_t)STEPS * GB * D : NULL;
    int eB = dd->rank == 0 ? GB : 0;
    sae_metrics a1, ac, ag;
    memset(&a1, 0, sizeof a1);
    memset(&ac, 0, sizeof ac);
    memset(&ag, 0, sizeof ag);
    one->eval_batch(one, ex, eg, GB, K, &a1);
    cpu->eval_batch(cpu, ex, eg, eB, K, &ac);
    if (ties)
        a1 = ac;
    cu->eval_batch(cu, ex, eg, eB, K, &ag);
    EXPECT(ac.tokens == GB && ag.tokens == GB, "%s eval: tokens %lld / %lld", name,
           (long long)ac.tokens, (long long)ag.tokens);
    EXPECT(near(ac.fvu_num, a1.fvu_num, 1e-3) && near(ag.fvu_num, ac.fvu_num, 1e-3),
           "%s eval: fvu_num %g / %g / %g", name, a1.fvu_num, ac.fvu_num, ag.fvu_num);
    EXPECT(near(ac.fvu_den, a1.fvu_den, 1e-9) && near(ag.fvu_den, ac.fvu_den, 1e-9),
           "%s eval: fvu_den %g / %g / %g", name, a1.fvu_den, ac.fvu_den, ag.fvu_den);
    EXPECT(ac.l0 == a1.l0 && ag.l0 == ac.l0, "%s eval: l0 %g / %g / %g", name, a1.l0, ac.l0, ag.l0);
    if (dd->rank == 0)
        printf("dist-parity: %-10s%s world %d, %d steps: cuda-vs-cpu %.2e (%s), cpu-vs-1rank %s%.2e (%s), "
               "moved %.2e, loss %.2e\n", name, ties ? " ties" : "     ", dd->world, STEPS, r_cc, w1,
               ties ? "(left out) " : "", r_c1, w2, moved, worst_loss);
    sae_state_free(&s1);
    sae_state_free(&sc);
    sae_state_free(&sg);
    one->free(one);
    cpu->free(cpu);
    cu->free(cu);
    sae_params_free(&p0);
    sae_params_free(&p1);
    sae_params_free(&pc);
    sae_params_free(&pg);
}

int main(void)
{
    sae_dist dd;
    sf_err err;
    memset(&err, 0, sizeof err);
    if (dist_open(&dd, 120, &err) != SF_OK) {
        fprintf(stderr, "dist-parity: %s\n", err.msg);
        return 2;
    }
    g_rank = dd.rank;
    if (dd.world < 2) {
        fprintf(stderr, "dist-parity: run under mpirun -np 2 (or more): world is %d\n", dd.world);
        dist_close(&dd);
        return 2;
    }
    make_data(0);
    run_arch(&dd, SAE_ARCH_TOPK, "topk", 0);
    run_arch(&dd, SAE_ARCH_GSAE, "gsae", 0);
    run_arch(&dd, SAE_ARCH_BATCHTOPK, "batchtopk", 0);
    run_arch(&dd, SAE_ARCH_MATRYOSHKA, "matryoshka", 0);
    make_data(1);
    run_arch(&dd, SAE_ARCH_BATCHTOPK, "batchtopk", 1);
    run_arch(&dd, SAE_ARCH_MATRYOSHKA, "matryoshka", 1);
    int64_t bad = fails;
    dd.max_i64(&dd, &bad, 1);
    if (dd.rank == 0)
        printf("dist-parity: %s\n", bad ? "FAILED" : "ok");
    dist_close(&dd);
    free(data_x);
    free(data_g);
    return bad ? 1 : 0;
}
