/* Encoder forward (CPU twin of encode.cu): the dense GEMM of the step, and the g-SAE gate GEMM. */
#ifndef ENCODE_H
#define ENCODE_H

/* u = x - b_dec; pre = u W_enc^T + b_enc. Multithreaded OpenBLAS sgemm. */
void enc_forward_cpu(const float *x,     // (B, d)
                     const float *W_enc, // (n, d)
                     const float *b_enc, // (n)
                     const float *b_dec, // (d)
                     int B, int d, int n,
                     float *u,           // (B, d) out
                     float *pre);        // (B, n) out

/* C (M, N) = op(A) op(B) + beta C (row-major; op = transpose when trans_*), the rows of C split
 * over OpenMP threads in blocks on 96-row boundaries, each a single-threaded OpenBLAS call, so
 * every value is the same whatever the thread count. */
void sgemm_rows_cpu(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
                    const float *Bm, int ldb, float beta, float *C, int ldc);

/* gate = |g W_dec^T|: how far each decoder direction moves each token's loss (g-SAE). */
void gate_forward_cpu(const float *g,     // (B, d)
                      const float *W_dec, // (n, d)
                      int B, int d, int n,
                      float *gate);       // (B, n) out

#endif
