/* Throwaway timing probe: encoder GEMM alone vs a whole CPU train_step (not a test). Usage:
 * step_cpu_probe [threads] [B] [arch] [dead] -- dead=1 marks every latent dead (AuxK on). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "host/rng.h"
#include "kernels/backend.h"
#include "kernels/encode.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    int B = argc > 2 ? atoi(argv[2]) : 4096;
    int arch = argc > 3 ? atoi(argv[3]) : 0;
    int dead = argc > 4 ? atoi(argv[4]) : 0;
    int d = 768, n = 16384, k = 32;
    sae_hparams hp = {.arch = arch, .d = d, .n = n, .k = k, .gsae_beta = 1.0f, .n_prefixes = 1,
                      .aux_k = d / 2, .aux_alpha = 1.0f / 32, .dead_tokens = 10000000,
                      .adam_b1 = 0.9f, .adam_b2 = 0.999f, .adam_eps = 1e-8f, .theta_ema = 0.99f};
    hp.prefixes[0] = n;
    if (arch == SAE_ARCH_MATRYOSHKA) {
        hp.n_prefixes = 4;
        int m[4] = {1024, 4096, 8192, 16384};
        for (int j = 0; j < 4; j++)
            hp.prefixes[j] = m[j];
    }
    sf_rng r;
    rng_seed(&r, 1, 0);
    sae_params p;
    sae_params_alloc(&p, d, n);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) {
            float v = (float)rng_normal(&r);
            p.W_dec[(size_t)i * d + j] = v;
            s += (double)v * v;
        }
        for (int j = 0; j < d; j++) {
            p.W_dec[(size_t)i * d + j] /= (float)sqrt(s);
            p.W_enc[(size_t)i * d + j] = p.W_dec[(size_t)i * d + j];
        }
    }
    float *x = malloc((size_t)B * d * sizeof(float)), *g = malloc((size_t)B * d * sizeof(float));
    for (size_t t = 0; t < (size_t)B * d; t++) {
        x[t] = (float)rng_normal(&r);
        g[t] = (float)rng_normal(&r);
    }
    sae_backend *be = backend_cpu_new(&hp, B, threads);
    be->set_params(be, &p);
    if (dead) {
        sae_state s;
        sae_state_alloc(&s, d, n);
        for (int i = 0; i < n; i++)
            s.since_fired[i] = hp.dead_tokens;
        be->set_state(be, &s);
        sae_state_free(&s);
    }
    float *u = malloc((size_t)B * d * sizeof(float)), *pre = malloc((size_t)B * n * sizeof(float));
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    double best_gemm = 1e9, best_step = 1e9;
    sae_metrics m;
    for (int it = 0; it < 5; it++) {
        double t0 = now();
        enc_forward_cpu(x, p.W_enc, p.b_enc, p.b_dec, B, d, n, u, pre);
        double t1 = now();
        be->train_step(be, x, g, B, k, 1e-4f, it, &m);
        double t2 = now();
        if (t1 - t0 < best_gemm)
            best_gemm = t1 - t0;
        if (t2 - t1 < best_step)
            best_step = t2 - t1;
        printf("it %d: gemm %.3f s, step %.3f s, loss %.4f l0 %.1f auxk %.4f\n", it, t1 - t0, t2 - t1,
               m.loss, m.l0, m.auxk);
    }
    printf("threads %d B %d arch %d dead %d: gemm %.3f s, step %.3f s, ratio %.2f\n", threads, B, arch,
           dead, best_gemm, best_step, best_step / best_gemm);
    be->free(be);
    sae_params_free(&p);
    free(x);
    free(g);
    free(u);
    free(pre);
    return 0;
}
