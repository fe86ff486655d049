/* Sparse decode (CPU twin of decode.cu): a gather of the selected decoder rows per token. */
#ifndef DECODE_H
#define DECODE_H

/* xhat_b = bias + sum over entries p of row b with 0 <= lat[p] < limit of val[p] * W_dec[lat[p]].
 * bias may be NULL (AuxK's ehat has no b_dec). limit < n gives a Matryoshka prefix. */
void decode_cpu(const int *row_ptr,  // (B + 1)
                const int *lat,      // (row_ptr[B])
                const float *val,    // (row_ptr[B])
                const float *W_dec,  // (n, d)
                const float *bias,   // (d) or NULL
                int B, int d, int limit,
                float *xhat);        // (B, d) out

#endif
