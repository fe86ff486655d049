/* Encoder forward, CPU twin of encode.cu: the step's one dense GEMM (OpenBLAS) and the g-SAE gate GEMM. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>

#include "encode.h"

/* Row blocks start at multiples of 96 rows so every value's arithmetic is independent of the
 * thread count: OpenBLAS tiles rows by its kernel's unroll (16 on SkylakeX, 24 on Haswell/Zen),
 * and a block boundary inside a tile changes which kernel computes those rows (seen on Zen with
 * 16-row quanta). */
#define GEMM_ROW_QUANTUM 96

void sgemm_rows_cpu(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
                    const float *Bm, int ldb, float beta, float *C, int ldc)
{
    /* OpenBLAS's own pthread pool would keep spinning after the GEMM and starve the OpenMP
     * phases that follow on a small machine: one single-threaded call per OpenMP thread. */
    int saved = openblas_get_num_threads();
    if (saved != 1)
        openblas_set_num_threads(1);
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int per = (M + nt - 1) / nt;
        per = (per + GEMM_ROW_QUANTUM - 1) / GEMM_ROW_QUANTUM * GEMM_ROW_QUANTUM;
        int m0 = t * per, m1 = m0 + per < M ? m0 + per : M;
        if (m1 > m0)
            cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                        trans_b ? CblasTrans : CblasNoTrans, m1 - m0, N, K, 1.0f,
                        trans_a ? A + m0 : A + (size_t)m0 * lda, lda, Bm, ldb, beta,
                        C + (size_t)m0 * ldc, ldc);
    }
    if (saved != 1)
        openblas_set_num_threads(saved);
}

/* C (B, n) = A (B, d) W^T + beta C */
static void gemm_rows(const float *A, const float *W, int B, int d, int n, float beta, float *C)
{
    sgemm_rows_cpu(0, 1, B, n, d, A, d, W, d, beta, C, n);
}

void enc_forward_cpu(const float *x,     // (B, d)
                     const float *W_enc, // (n, d)
                     const float *b_enc, // (n)
                     const float *b_dec, // (d)
                     int B, int d, int n,
                     float *u,           // (B, d) out
                     float *pre)         // (B, n) out
{
    /* pre starts as the broadcast bias so the GEMM adds into it (beta = 1): no extra pass after. */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * d;
        float *ub = u + (size_t)b * d;
        for (int j = 0; j < d; j++)
            ub[j] = xb[j] - b_dec[j];
        float *pb = pre + (size_t)b * n;
        for (int i = 0; i < n; i++)
            pb[i] = b_enc[i];
    }
    gemm_rows(u, W_enc, B, d, n, 1.0f, pre);
}

void gate_forward_cpu(const float *g,     // (B, d)
                      const float *W_dec, // (n, d)
                      int B, int d, int n,
                      float *gate)        // (B, n) out
{
    gemm_rows(g, W_dec, B, d, n, 0.0f, gate);
    size_t total = (size_t)B * (size_t)n;
#pragma omp parallel for schedule(static)
    for (size_t t = 0; t < total; t++)
        gate[t] = fabsf(gate[t]);
}
