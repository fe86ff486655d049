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

/* gate = |g W_dec^T|: how far each decoder direction moves each token's loss (g-SAE). */
void gate_forward_cpu(const float *g,     // (B, d)
                      const float *W_dec, // (n, d)
                      int B, int d, int n,
                      float *gate);       // (B, n) out

#endif
