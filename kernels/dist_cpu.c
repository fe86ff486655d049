/* Data-parallel pieces of the CPU backend (dist_cpu.h). */
#include <stdlib.h>
#include <string.h>

#include "dist_cpu.h"
#include "loss.h"
#include "sf_check.h"

double dist_center_cpu(const sae_dist *dd, const float *x, int B, int d, float *mean,
                       int64_t *B_global)
{
    double *sum = malloc(sizeof(double) * ((size_t)d + 1));
    SF_CHECK(sum);
    loss_colsum_cpu(x, B, d, sum);
    sum[d] = (double)B;
    dd->sum_f64(dd, sum, d + 1);
    int64_t Bg = (int64_t)sum[d];
    for (int j = 0; j < d; j++)
        mean[j] = Bg > 0 ? (float)(sum[j] / (double)Bg) : 0.0f;
    free(sum);
    double den = loss_spread_cpu(x, B, d, mean);
    dd->sum_f64(dd, &den, 1);
    *B_global = Bg;
    return den;
}

int64_t dist_grad_floats(int d, int n)
{
    return 2 * (int64_t)n * d + 2 * (int64_t)n + d;
}

void dist_grads_cpu(const sae_dist *dd, const sae_grads *sp, const int *row_ptr, const int *lat,
                    int B, int d, int n, float *buf, int *ident, sae_grads *dense)
{
    size_t nd = (size_t)n * d;
    float *dW_enc = buf, *dW_dec = buf + nd, *db_enc = buf + 2 * nd, *db_dec = db_enc + n;
    float *fired = db_dec + d;
    memset(buf, 0, sizeof(float) * (size_t)dist_grad_floats(d, n));
#pragma omp parallel for schedule(static)
    for (int r = 0; r < sp->n_rows; r++) {
        size_t i = (size_t)sp->rows[r];
        memcpy(dW_enc + i * d, sp->dW_enc + (size_t)r * d, sizeof(float) * (size_t)d);
        memcpy(dW_dec + i * d, sp->dW_dec + (size_t)r * d, sizeof(float) * (size_t)d);
    }
    memcpy(db_enc, sp->db_enc, sizeof(float) * (size_t)n);
    memcpy(db_dec, sp->db_dec, sizeof(float) * (size_t)d);
    /* counts of at most B_global tokens: exact in float below 2^24 */
    for (int e = row_ptr[0]; e < row_ptr[B]; e++)
        if (lat[e] >= 0)
            fired[lat[e]] += 1.0f;
    dd->sum_f32(dd, buf, dist_grad_floats(d, n));
    for (int i = 0; i < n; i++)
        ident[i] = i;
    dense->n_rows = n;
    dense->cap_rows = n;
    dense->rows = ident;
    dense->slot = ident;
    dense->dW_enc = dW_enc;
    dense->dW_dec = dW_dec;
    dense->db_enc = db_enc;
    dense->db_dec = db_dec;
}

void dist_since_fired_cpu(const float *fired, int64_t B_local, int64_t B_global, int n,
                          int64_t *since_fired)
{
    for (int i = 0; i < n; i++)
        since_fired[i] = fired[i] > 0.0f ? 0 : since_fired[i] + (B_global - B_local);
}
