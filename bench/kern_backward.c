/* Kernel benchmark: sparse backward (backward_cpu_ws; backward_cuda in CUDA builds) for one top-k
 * code. Checked first against an independent dense-per-entry reference in double (the CPU twin
 * for the CUDA kernel); exits 1 on a mismatch. Then warm-up, repeats, min and median.
 * Usage: kern_backward [--B B] [--d D] [--n N] [--k K] [--reps R] [--out FILE] [--run ID] */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/backend.h"
#include "../kernels/backward.h"
#include "bench_util.h"
#include "kcommon.h"

#ifdef SF_WITH_CUDA
#include "../kernels/backward.cuh"
#include "../kernels/cuda_compat.h"
#endif

static double absmax(const float *v, size_t count)
{
    double m = 0;
    for (size_t i = 0; i < count; i++)
        m = fmax(m, fabs(v[i]));
    return m;
}

/* Compares gradients a (under test) with b (reference) as dense per-latent rows. */
static double grads_err(const sae_grads *a, const sae_grads *b, int d, int n)
{
    if (a->n_rows != b->n_rows || memcmp(a->rows, b->rows, (size_t)a->n_rows * sizeof(int)))
        return INFINITY;
    double e = 0;
    size_t rd = (size_t)a->n_rows * d;
    e = fmax(e, kern_max_err(a->dW_enc, b->dW_enc, rd, 1e-5 * absmax(b->dW_enc, rd), 1e-3));
    e = fmax(e, kern_max_err(a->dW_dec, b->dW_dec, rd, 1e-5 * absmax(b->dW_dec, rd), 1e-3));
    e = fmax(e, kern_max_err(a->db_enc, b->db_enc, (size_t)n, 1e-5 * absmax(b->db_enc, n), 1e-3));
    e = fmax(e, kern_max_err(a->db_dec, b->db_dec, (size_t)d, 1e-5 * absmax(b->db_dec, d), 1e-3));
    return e;
}

static void grads_alloc(sae_grads *g, int n, int d, int cap_rows)
{
    g->cap_rows = cap_rows;
    g->rows = bench_alloc((size_t)cap_rows * sizeof(int));
    g->slot = bench_alloc((size_t)n * sizeof(int));
    g->dW_enc = bench_alloc((size_t)cap_rows * d * 4);
    g->dW_dec = bench_alloc((size_t)cap_rows * d * 4);
    g->db_enc = bench_alloc((size_t)n * 4);
    g->db_dec = bench_alloc((size_t)d * 4);
}

static void grads_free(sae_grads *g)
{
    free(g->rows);
    free(g->slot);
    free(g->dW_enc);
    free(g->dW_dec);
    free(g->db_enc);
    free(g->db_dec);
}

int main(int argc, char **argv)
{
    kern_opts o = {.B = 4096, .d = 768, .n = 16384, .k = 32, .reps = 10};
    if (kern_parse(&o, argc, argv, "kern_backward"))
        return 2;
    const int B = o.B, d = o.d, n = o.n, k = o.k;
    const size_t Bd = (size_t)B * d, nd = (size_t)n * d;
    sf_rng rng;
    rng_seed(&rng, 6, 0);
    sae_params p;
    sae_params_alloc(&p, d, n);
    for (size_t i = 0; i < nd; i++) {
        p.W_enc[i] = (float)rng_normal(&rng) * 0.04f;
        p.W_dec[i] = (float)rng_normal(&rng) * 0.04f;
    }
    float *u = bench_alloc(Bd * 4), *dY = bench_alloc(Bd * 4);
    for (size_t i = 0; i < Bd; i++) {
        u[i] = (float)rng_normal(&rng);
        dY[i] = (float)rng_normal(&rng) * 1e-3f;
    }
    int *row_ptr = bench_alloc(((size_t)B + 1) * sizeof(int)), *lat = bench_alloc((size_t)B * k * sizeof(int));
    float *val = bench_alloc((size_t)B * k * 4);
    kern_random_code(&rng, B, n, k, row_ptr, lat, val);
    int bounds[1] = {n};
    sae_bwd_group grp = {row_ptr, lat, val, 1, bounds, dY, 1};
    const int cap_rows = (size_t)B * k < (size_t)n ? B * k : n;

    /* reference: per entry, in double, rows in ascending latent order */
    sae_grads ref, out;
    grads_alloc(&ref, n, d, cap_rows);
    grads_alloc(&out, n, d, cap_rows);
    double *dWe = calloc(nd, sizeof(double)), *dWd = calloc(nd, sizeof(double));
    double *dbe = calloc((size_t)n, sizeof(double)), *dbd = calloc((size_t)d, sizeof(double));
    char *touched = calloc((size_t)n, 1);
    if (!dWe || !dWd || !dbe || !dbd || !touched) {
        fprintf(stderr, "kern_backward: out of memory for the reference (try a smaller --n or --d)\n");
        return 2;
    }
    for (int b = 0; b < B; b++) {
        const float *dy = dY + (size_t)b * d, *ub = u + (size_t)b * d;
        for (int j = 0; j < d; j++)
            dbd[j] += dy[j];
        for (int e = row_ptr[b]; e < row_ptr[b + 1]; e++) {
            int i = lat[e];
            if (i < 0)
                continue;
            touched[i] = 1;
            const float *w = p.W_dec + (size_t)i * d;
            double dv = 0;
            for (int j = 0; j < d; j++)
                dv += (double)dy[j] * w[j];
            for (int j = 0; j < d; j++) {
                dWd[(size_t)i * d + j] += (double)val[e] * dy[j];
                dWe[(size_t)i * d + j] += dv * ub[j];
            }
            dbe[i] += dv;
        }
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d && dbe[i] != 0.0; j++)
            dbd[j] -= dbe[i] * p.W_enc[(size_t)i * d + j];
    ref.n_rows = 0;
    for (int i = 0; i < n; i++) {
        ref.slot[i] = touched[i] ? ref.n_rows : -1;
        ref.db_enc[i] = (float)dbe[i];
        if (!touched[i])
            continue;
        int r = ref.n_rows++;
        ref.rows[r] = i;
        for (int j = 0; j < d; j++) {
            ref.dW_enc[(size_t)r * d + j] = (float)dWe[(size_t)i * d + j];
            ref.dW_dec[(size_t)r * d + j] = (float)dWd[(size_t)i * d + j];
        }
    }
    for (int j = 0; j < d; j++)
        ref.db_dec[j] = (float)dbd[j];
    free(dWe);
    free(dWd);
    free(dbe);
    free(dbd);
    free(touched);

    sae_bwd_scratch ws;
    bwd_scratch_init(&ws, n, (int64_t)B * k);
    backward_cpu_ws(u, &p, B, d, n, &grp, 1, &out, &ws);
    double err = grads_err(&out, &ref, d, n);
    if (err > 1.0) {
        fprintf(stderr, "kern_backward: backward_cpu differs from the reference (scaled error %.3g)\n", err);
        return 1;
    }
    /* traffic: per entry the W_dec row, u row and dY row are read; touched rows written twice */
    const double entries = (double)B * k;
    const double bytes = entries * 3.0 * d * 4 + 2.0 * ref.n_rows * d * 4;
    const double flops = entries * 6.0 * d;
    bench_machine mach;
    bench_machine_init(&mach);
    double ts[KERN_MAX_REPS];
    backward_cpu_ws(u, &p, B, d, n, &grp, 1, &out, &ws);
    for (int r = 0; r < o.reps; r++) {
        double t0 = bench_now();
        backward_cpu_ws(u, &p, B, d, n, &grp, 1, &out, &ws);
        ts[r] = bench_now() - t0;
    }
    kern_report(&o, &mach, "backward", "cpu", ts, o.reps, bytes, flops, err);

#ifdef SF_WITH_CUDA
    bench_machine_fill_gpu(&mach);
    sae_params dp;
    float *du, *ddY, *dval;
    int *drp, *dlat;
    CUDA_CHECK(cudaMalloc((void **)&dp.W_enc, nd * 4));
    CUDA_CHECK(cudaMalloc((void **)&dp.W_dec, nd * 4));
    CUDA_CHECK(cudaMalloc((void **)&dp.b_enc, (size_t)n * 4));
    CUDA_CHECK(cudaMalloc((void **)&dp.b_dec, (size_t)d * 4));
    CUDA_CHECK(cudaMalloc((void **)&du, Bd * 4));
    CUDA_CHECK(cudaMalloc((void **)&ddY, Bd * 4));
    CUDA_CHECK(cudaMalloc((void **)&dval, (size_t)B * k * 4));
    CUDA_CHECK(cudaMalloc((void **)&drp, ((size_t)B + 1) * 4));
    CUDA_CHECK(cudaMalloc((void **)&dlat, (size_t)B * k * 4));
    CUDA_CHECK(cudaMemcpy(dp.W_enc, p.W_enc, nd * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dp.W_dec, p.W_dec, nd * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dp.b_enc, p.b_enc, (size_t)n * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dp.b_dec, p.b_dec, (size_t)d * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(du, u, Bd * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(ddY, dY, Bd * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dval, val, (size_t)B * k * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(drp, row_ptr, ((size_t)B + 1) * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dlat, lat, (size_t)B * k * 4, cudaMemcpyHostToDevice));
    sae_bwd_ws cws;
    sae_grads_cuda cg;
    bwd_ws_alloc(&cws, n, d, B, B * k);
    grads_cuda_alloc(&cg, n, d, cws.cap_rows);
    sae_bwd_group_cuda cgrp;
    memset(&cgrp, 0, sizeof cgrp);
    cgrp.row_ptr = drp;
    cgrp.lat = dlat;
    cgrp.val = dval;
    cgrp.cap = B * k;
    cgrp.n_bands = 1;
    cgrp.bounds[0] = n;
    cgrp.dY = ddY;
    cgrp.has_bias = 1;
    backward_cuda(&cws, du, &dp, B, d, n, &cgrp, 1, &cg, 0);
    sae_grads got;
    grads_alloc(&got, n, d, cap_rows);
    CUDA_CHECK(cudaMemcpy(&got.n_rows, cg.n_rows, sizeof(int), cudaMemcpyDeviceToHost));
    double gerr = INFINITY;
    if (got.n_rows >= 0 && got.n_rows <= cap_rows) {
        size_t rd = (size_t)got.n_rows * d * 4;
        CUDA_CHECK(cudaMemcpy(got.rows, cg.rows, (size_t)got.n_rows * sizeof(int), cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(got.dW_enc, cg.dW_enc, rd, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(got.dW_dec, cg.dW_dec, rd, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(got.db_enc, cg.db_enc, (size_t)n * 4, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(got.db_dec, cg.db_dec, (size_t)d * 4, cudaMemcpyDeviceToHost));
        gerr = grads_err(&got, &out, d, n);
    }
    if (gerr > 1.0) {
        fprintf(stderr, "kern_backward: backward_cuda differs from backward_cpu (scaled error %.3g)\n", gerr);
        return 1;
    }
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    for (int r = -2; r < o.reps; r++) {
        CUDA_CHECK(cudaEventRecord(e0, 0));
        backward_cuda(&cws, du, &dp, B, d, n, &cgrp, 1, &cg, 0);
        CUDA_CHECK(cudaEventRecord(e1, 0));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= 0)
            ts[r] = ms * 1e-3;
    }
    kern_report(&o, &mach, "backward", "cuda", ts, o.reps, bytes, flops, gerr);
    bwd_ws_free(&cws);
    grads_cuda_free(&cg);
    grads_free(&got);
    void *dev[] = {dp.W_enc, dp.W_dec, dp.b_enc, dp.b_dec, du, ddY, dval, drp, dlat};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
#endif
    bwd_scratch_free(&ws);
    grads_free(&ref);
    grads_free(&out);
    sae_params_free(&p);
    free(u);
    free(dY);
    free(row_ptr);
    free(lat);
    free(val);
    return 0;
}
