/* Loss reductions, CPU twin of loss.cu. Each row is summed in double, then rows are combined in
 * fixed blocks whose layout depends only on B, so results do not depend on the thread count. */
#include <stddef.h>
#include <stdlib.h>

#include "loss.h"
#include "sf_check.h"

/* Rows are grouped into at most RED_BLOCKS consecutive blocks; block sums are added in order. */
#define RED_BLOCKS 256

static int red_block_rows(int B)
{
    return (B + RED_BLOCKS - 1) / RED_BLOCKS;
}

void loss_colsum_cpu(const float *x, // (B, d)
                     int B, int d,
                     double *sum)    // (d) out
{
    /* Column sums in row order; parallel over columns so each column has one fixed order. */
#pragma omp parallel for schedule(static)
    for (int j = 0; j < d; j++) {
        double s = 0.0;
        for (int b = 0; b < B; b++)
            s += x[(size_t)b * d + j];
        sum[j] = s;
    }
}

double loss_spread_cpu(const float *x,    // (B, d)
                       int B, int d,
                       const float *mean) // (d)
{
    int rows = red_block_rows(B);
    double part[RED_BLOCKS] = {0};
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < RED_BLOCKS; blk++) {
        double acc = 0.0;
        for (int b = blk * rows; b < (blk + 1) * rows && b < B; b++) {
            const float *xb = x + (size_t)b * d;
            double r = 0.0;
            for (int j = 0; j < d; j++) {
                double t = (double)xb[j] - (double)mean[j];
                r += t * t;
            }
            acc += r;
        }
        part[blk] = acc;
    }
    double den = 0.0;
    for (int blk = 0; blk < RED_BLOCKS; blk++)
        den += part[blk];
    return den;
}

double loss_center_cpu(const float *x, // (B, d)
                       int B, int d,
                       float *mean)    // (d) out
{
    double *sum = malloc(sizeof(double) * (size_t)(d > 0 ? d : 1));
    SF_CHECK(sum);
    loss_colsum_cpu(x, B, d, sum);
    for (int j = 0; j < d; j++)
        mean[j] = B > 0 ? (float)(sum[j] / B) : 0.0f;
    free(sum);
    return loss_spread_cpu(x, B, d, mean);
}

double loss_residual_cpu(const float *target, // (B, d)
                         const float *pred,   // (B, d)
                         int B, int d, float coef, int accumulate,
                         float *dY)           // (B, d) or NULL
{
    int rows = red_block_rows(B);
    double part[RED_BLOCKS] = {0};
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < RED_BLOCKS; blk++) {
        double acc = 0.0;
        for (int b = blk * rows; b < (blk + 1) * rows && b < B; b++) {
            const float *tb = target + (size_t)b * d;
            const float *pb = pred + (size_t)b * d;
            float *gb = dY ? dY + (size_t)b * d : NULL;
            double r = 0.0;
            if (gb && accumulate) {
#pragma omp simd reduction(+ : r)
                for (int j = 0; j < d; j++) {
                    float diff = pb[j] - tb[j];
                    r += (double)diff * (double)diff;
                    gb[j] += coef * diff;
                }
            } else if (gb) {
#pragma omp simd reduction(+ : r)
                for (int j = 0; j < d; j++) {
                    float diff = pb[j] - tb[j];
                    r += (double)diff * (double)diff;
                    gb[j] = coef * diff;
                }
            } else {
#pragma omp simd reduction(+ : r)
                for (int j = 0; j < d; j++) {
                    float diff = pb[j] - tb[j];
                    r += (double)diff * (double)diff;
                }
            }
            acc += r;
        }
        part[blk] = acc;
    }
    double sum = 0.0;
    for (int blk = 0; blk < RED_BLOCKS; blk++)
        sum += part[blk];
    return sum;
}

void loss_gw_cpu(const float *g,    // (B, d)
                 const float *x,    // (B, d)
                 const float *xhat, // (B, d)
                 const float *mean, // (d)
                 int B, int d,
                 double *num, double *den)
{
    int rows = red_block_rows(B);
    double pn[RED_BLOCKS] = {0}, pd[RED_BLOCKS] = {0};
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < RED_BLOCKS; blk++) {
        double an = 0.0, ad = 0.0;
        for (int b = blk * rows; b < (blk + 1) * rows && b < B; b++) {
            const float *gb = g + (size_t)b * d;
            const float *xb = x + (size_t)b * d;
            const float *hb = xhat + (size_t)b * d;
            double dn = 0.0, dd = 0.0;
            for (int j = 0; j < d; j++) {
                dn += (double)gb[j] * ((double)xb[j] - (double)hb[j]);
                dd += (double)gb[j] * ((double)xb[j] - (double)mean[j]);
            }
            an += dn * dn;
            ad += dd * dd;
        }
        pn[blk] = an;
        pd[blk] = ad;
    }
    double sn = 0.0, sd = 0.0;
    for (int blk = 0; blk < RED_BLOCKS; blk++) {
        sn += pn[blk];
        sd += pd[blk];
    }
    *num = sn;
    *den = sd;
}
