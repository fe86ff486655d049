/* Sparse decode, CPU twin of decode.cu: each token's reconstruction gathers its selected decoder rows. */
#include <stddef.h>
#include <string.h>

#include "decode.h"

void decode_cpu(const int *row_ptr,  // (B + 1)
                const int *lat,      // (row_ptr[B])
                const float *val,    // (row_ptr[B])
                const float *W_dec,  // (n, d)
                const float *bias,   // (d) or NULL
                int B, int d, int limit,
                float *xhat)         // (B, d) out
{
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float *xb = xhat + (size_t)b * d;
        if (bias)
            memcpy(xb, bias, (size_t)d * sizeof(float));
        else
            memset(xb, 0, (size_t)d * sizeof(float));
        for (int p = row_ptr[b]; p < row_ptr[b + 1]; p++) {
            int i = lat[p];
            if (i < 0 || i >= limit)
                continue;
            float a = val[p];
            const float *w = W_dec + (size_t)i * d;
#pragma omp simd
            for (int j = 0; j < d; j++)
                xb[j] += a * w[j];
        }
    }
}
