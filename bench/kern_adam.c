/* Kernel benchmark: fused Adam + W_dec renorm (adam_step_cpu; adam_step_cuda in CUDA builds) over
 * all n x d parameters with a row-sparse gradient. Checked first against an independent
 * reference in double (the CPU twin for the CUDA kernel); exits 1 on a mismatch.
 * Usage: kern_adam [--B B] [--d D] [--n N] [--k K] [--reps R] [--out FILE] [--run ID]
 * (B and k only set how many rows are touched: min(n, B*k) drawn from a Zipf-like code). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/adam.h"
#include "../kernels/backend.h"
#include "bench_util.h"
#include "kcommon.h"

#ifdef SF_WITH_CUDA
#include "../kernels/adam.cuh"
#include "../kernels/cuda_compat.h"
#endif

static const float B1 = 0.9f, B2 = 0.999f, EPS = 1e-8f;

static void ref_span(float *p, float *m, float *v, const float *g, int len, double ss, double bc2)
{
    for (int j = 0; j < len; j++) {
        double gj = g ? g[j] : 0.0;
        double mj = B1 * (double)m[j] + (1.0 - B1) * gj;
        double vj = B2 * (double)v[j] + (1.0 - B2) * gj * gj;
        m[j] = (float)mj;
        v[j] = (float)vj;
        p[j] = (float)((double)p[j] - ss * mj / (sqrt(vj) / bc2 + EPS));
    }
}

int main(int argc, char **argv)
{
    kern_opts o = {.B = 4096, .d = 768, .n = 16384, .k = 32, .reps = 10};
    if (kern_parse(&o, argc, argv, "kern_adam"))
        return 2;
    const int d = o.d, n = o.n;
    const size_t nd = (size_t)n * d;
    sf_rng rng;
    rng_seed(&rng, 8, 0);
    sae_params p, pr;
    sae_state s, sr;
    sae_params_alloc(&p, d, n);
    sae_params_alloc(&pr, d, n);
    sae_state_alloc(&s, d, n);
    sae_state_alloc(&sr, d, n);
    for (size_t i = 0; i < nd; i++) {
        p.W_enc[i] = (float)rng_normal(&rng) * 0.04f;
        p.W_dec[i] = (float)rng_normal(&rng) * 0.04f;
        s.m_W_enc[i] = (float)rng_normal(&rng) * 1e-4f;
        s.v_W_enc[i] = (float)rng_uniform(&rng) * 1e-7f;
        s.m_W_dec[i] = (float)rng_normal(&rng) * 1e-4f;
        s.v_W_dec[i] = (float)rng_uniform(&rng) * 1e-7f;
    }
    for (int i = 0; i < n; i++)
        p.b_enc[i] = (float)rng_normal(&rng) * 0.01f;
    for (int j = 0; j < d; j++)
        p.b_dec[j] = (float)rng_normal(&rng);
    /* touched rows: the distinct latents of a random code of B*k entries */
    long long want = (long long)o.B * o.k;
    sae_grads g;
    memset(&g, 0, sizeof g);
    g.slot = bench_alloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++)
        g.slot[i] = -1;
    g.cap_rows = want < n ? (int)want : n;
    g.rows = bench_alloc((size_t)g.cap_rows * sizeof(int));
    for (long long e = 0; e < want && g.n_rows < g.cap_rows; e++) {
        double u = rng_uniform(&rng);
        int i = (int)((double)n * u * u);
        if (i < n && g.slot[i] < 0)
            g.slot[i] = 0;
    }
    for (int i = 0; i < n; i++)
        if (g.slot[i] >= 0) {
            g.slot[i] = g.n_rows;
            g.rows[g.n_rows++] = i;
        }
    g.dW_enc = bench_alloc((size_t)g.n_rows * d * 4 + 4);
    g.dW_dec = bench_alloc((size_t)g.n_rows * d * 4 + 4);
    g.db_enc = bench_alloc((size_t)n * 4);
    g.db_dec = bench_alloc((size_t)d * 4);
    for (size_t i = 0; i < (size_t)g.n_rows * d; i++) {
        g.dW_enc[i] = (float)rng_normal(&rng) * 1e-3f;
        g.dW_dec[i] = (float)rng_normal(&rng) * 1e-3f;
    }
    for (int i = 0; i < n; i++)
        g.db_enc[i] = g.slot[i] >= 0 ? (float)rng_normal(&rng) * 1e-3f : 0.0f;
    for (int j = 0; j < d; j++)
        g.db_dec[j] = (float)rng_normal(&rng) * 1e-3f;

    const float lr = 2e-4f, gscale = 0.75f;
    const double t = 3.0;
    const float step_size = (float)(lr / (1.0 - pow(B1, t))), bc2 = (float)sqrt(1.0 - pow(B2, t));

    /* reference on copies, in double */
    sae_params pcopy;
    sae_state scopy;
    sae_params_alloc(&pcopy, d, n);
    sae_state_alloc(&scopy, d, n);
#define COPY_ALL(dp, ds, sp, ss)                                                   \
    do {                                                                           \
        memcpy((dp)->W_enc, (sp)->W_enc, nd * 4);                                  \
        memcpy((dp)->W_dec, (sp)->W_dec, nd * 4);                                  \
        memcpy((dp)->b_enc, (sp)->b_enc, (size_t)n * 4);                           \
        memcpy((dp)->b_dec, (sp)->b_dec, (size_t)d * 4);                           \
        memcpy((ds)->m_W_enc, (ss)->m_W_enc, nd * 4);                              \
        memcpy((ds)->v_W_enc, (ss)->v_W_enc, nd * 4);                              \
        memcpy((ds)->m_W_dec, (ss)->m_W_dec, nd * 4);                              \
        memcpy((ds)->v_W_dec, (ss)->v_W_dec, nd * 4);                              \
        memcpy((ds)->m_b_enc, (ss)->m_b_enc, (size_t)n * 4);                       \
        memcpy((ds)->v_b_enc, (ss)->v_b_enc, (size_t)n * 4);                       \
        memcpy((ds)->m_b_dec, (ss)->m_b_dec, (size_t)d * 4);                       \
        memcpy((ds)->v_b_dec, (ss)->v_b_dec, (size_t)d * 4);                       \
    } while (0)
    COPY_ALL(&pr, &sr, &p, &s);
    COPY_ALL(&pcopy, &scopy, &p, &s);
    float *tmp = bench_alloc((size_t)(n > d ? n : d) * 4);
    for (int i = 0; i < n; i++) {
        size_t off = (size_t)i * d;
        int r = g.slot[i];
        for (int q = 0; q < 2; q++) {
            const float *src = r < 0 ? NULL : (q ? g.dW_dec : g.dW_enc) + (size_t)r * d;
            if (src)
                for (int j = 0; j < d; j++)
                    tmp[j] = src[j] * gscale;
            ref_span((q ? pr.W_dec : pr.W_enc) + off, (q ? sr.m_W_dec : sr.m_W_enc) + off,
                     (q ? sr.v_W_dec : sr.v_W_enc) + off, src ? tmp : NULL, d, step_size, bc2);
        }
        double ss = 0;
        for (int j = 0; j < d; j++)
            ss += (double)pr.W_dec[off + j] * pr.W_dec[off + j];
        for (int j = 0; j < d && ss > 0; j++)
            pr.W_dec[off + j] = (float)(pr.W_dec[off + j] / sqrt(ss));
    }
    for (int i = 0; i < n; i++)
        tmp[i] = g.db_enc[i] * gscale;
    ref_span(pr.b_enc, sr.m_b_enc, sr.v_b_enc, tmp, n, step_size, bc2);
    for (int j = 0; j < d; j++)
        tmp[j] = g.db_dec[j] * gscale;
    ref_span(pr.b_dec, sr.m_b_dec, sr.v_b_dec, tmp, d, step_size, bc2);

    adam_step_cpu(&p, &s, &g, d, n, step_size, bc2, B1, B2, EPS, gscale);
    double err = 0;
    err = fmax(err, kern_max_err(p.W_enc, pr.W_enc, nd, 1e-6, 1e-4));
    err = fmax(err, kern_max_err(p.W_dec, pr.W_dec, nd, 1e-6, 1e-4));
    err = fmax(err, kern_max_err(s.m_W_enc, sr.m_W_enc, nd, 1e-9, 1e-4));
    err = fmax(err, kern_max_err(s.v_W_dec, sr.v_W_dec, nd, 1e-12, 1e-4));
    err = fmax(err, kern_max_err(p.b_enc, pr.b_enc, (size_t)n, 1e-6, 1e-4));
    err = fmax(err, kern_max_err(p.b_dec, pr.b_dec, (size_t)d, 1e-6, 1e-4));
    if (err > 1.0) {
        fprintf(stderr, "kern_adam: adam_step_cpu differs from the reference (scaled error %.3g)\n", err);
        return 1;
    }
    /* traffic: 6 dense (n, d) arrays read and written, gradient rows read */
    const double bytes = 12.0 * nd * 4 + 2.0 * g.n_rows * d * 4;
    bench_machine mach;
    bench_machine_init(&mach);
    double ts[KERN_MAX_REPS];
    adam_step_cpu(&p, &s, &g, d, n, step_size, bc2, B1, B2, EPS, gscale);
    for (int r = 0; r < o.reps; r++) {
        double t0 = bench_now();
        adam_step_cpu(&p, &s, &g, d, n, step_size, bc2, B1, B2, EPS, gscale);
        ts[r] = bench_now() - t0;
    }
    kern_report(&o, &mach, "adam", "cpu", ts, o.reps, bytes, 0.0, err);

#ifdef SF_WITH_CUDA
    bench_machine_fill_gpu(&mach);
    /* device copies of the starting point (pcopy, scopy) and of the gradients */
    sae_params dp;
    sae_state ds;
    memset(&ds, 0, sizeof ds);
    float **dpp[4] = {&dp.W_enc, &dp.W_dec, &dp.b_enc, &dp.b_dec};
    float *hp[4] = {pcopy.W_enc, pcopy.W_dec, pcopy.b_enc, pcopy.b_dec};
    size_t pc[4] = {nd, nd, (size_t)n, (size_t)d};
    for (int q = 0; q < 4; q++) {
        CUDA_CHECK(cudaMalloc((void **)dpp[q], pc[q] * 4));
        CUDA_CHECK(cudaMemcpy(*dpp[q], hp[q], pc[q] * 4, cudaMemcpyHostToDevice));
    }
    float **dsp[8] = {&ds.m_W_enc, &ds.v_W_enc, &ds.m_W_dec, &ds.v_W_dec,
                      &ds.m_b_enc, &ds.v_b_enc, &ds.m_b_dec, &ds.v_b_dec};
    float *hs[8] = {scopy.m_W_enc, scopy.v_W_enc, scopy.m_W_dec, scopy.v_W_dec,
                    scopy.m_b_enc, scopy.v_b_enc, scopy.m_b_dec, scopy.v_b_dec};
    size_t sc[8] = {nd, nd, nd, nd, (size_t)n, (size_t)n, (size_t)d, (size_t)d};
    for (int q = 0; q < 8; q++) {
        CUDA_CHECK(cudaMalloc((void **)dsp[q], sc[q] * 4));
        CUDA_CHECK(cudaMemcpy(*dsp[q], hs[q], sc[q] * 4, cudaMemcpyHostToDevice));
    }
    sae_grads_cuda cg;
    grads_cuda_alloc(&cg, n, d, g.cap_rows);
    CUDA_CHECK(cudaMemcpy(cg.n_rows, &g.n_rows, sizeof(int), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(cg.rows, g.rows, (size_t)g.n_rows * sizeof(int), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(cg.slot, g.slot, (size_t)n * sizeof(int), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(cg.dW_enc, g.dW_enc, (size_t)g.n_rows * d * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(cg.dW_dec, g.dW_dec, (size_t)g.n_rows * d * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(cg.db_enc, g.db_enc, (size_t)n * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(cg.db_dec, g.db_dec, (size_t)d * 4, cudaMemcpyHostToDevice));
    float *dgs;
    CUDA_CHECK(cudaMalloc((void **)&dgs, sizeof(float)));
    CUDA_CHECK(cudaMemcpy(dgs, &gscale, sizeof(float), cudaMemcpyHostToDevice));
    /* the CPU twin from the same start, then the kernel, then compare */
    adam_step_cpu(&pcopy, &scopy, &g, d, n, step_size, bc2, B1, B2, EPS, gscale);
    adam_step_cuda(&dp, &ds, &cg, d, n, step_size, bc2, B1, B2, EPS, dgs, NULL, 0);
    CUDA_CHECK(cudaMemcpy(pr.W_enc, dp.W_enc, nd * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(pr.W_dec, dp.W_dec, nd * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(sr.v_W_enc, ds.v_W_enc, nd * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(pr.b_dec, dp.b_dec, (size_t)d * 4, cudaMemcpyDeviceToHost));
    double gerr = 0;
    gerr = fmax(gerr, kern_max_err(pr.W_enc, pcopy.W_enc, nd, 1e-6, 1e-5));
    gerr = fmax(gerr, kern_max_err(pr.W_dec, pcopy.W_dec, nd, 1e-6, 1e-5));
    gerr = fmax(gerr, kern_max_err(sr.v_W_enc, scopy.v_W_enc, nd, 1e-12, 1e-5));
    gerr = fmax(gerr, kern_max_err(pr.b_dec, pcopy.b_dec, (size_t)d, 1e-6, 1e-5));
    if (gerr > 1.0) {
        fprintf(stderr, "kern_adam: adam_step_cuda differs from adam_step_cpu (scaled error %.3g)\n", gerr);
        return 1;
    }
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    for (int r = -2; r < o.reps; r++) {
        CUDA_CHECK(cudaEventRecord(e0, 0));
        adam_step_cuda(&dp, &ds, &cg, d, n, step_size, bc2, B1, B2, EPS, dgs, NULL, 0);
        CUDA_CHECK(cudaEventRecord(e1, 0));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= 0)
            ts[r] = ms * 1e-3;
    }
    kern_report(&o, &mach, "adam", "cuda", ts, o.reps, bytes, 0.0, gerr);
    for (int q = 0; q < 4; q++)
        cudaFree(*dpp[q]);
    for (int q = 0; q < 8; q++)
        cudaFree(*dsp[q]);
    cudaFree(dgs);
    grads_cuda_free(&cg);
#endif
    free(tmp);
    sae_params_free(&p);
    sae_params_free(&pr);
    sae_params_free(&pcopy);
    sae_state_free(&s);
    sae_state_free(&sr);
    sae_state_free(&scopy);
    free(g.slot);
    free(g.rows);
    free(g.dW_enc);
    free(g.dW_dec);
    free(g.db_enc);
    free(g.db_dec);
    return 0;
}
