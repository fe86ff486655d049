/* Optimizer pieces, CPU twin of adam.cu: decoder-gradient projection, global gradient norm and
 * the fused Adam step + decoder renormalisation. Float arithmetic follows adam.h literally so the
 * GPU kernel can match it closely. */
#include <math.h>
#include <stddef.h>

#include "adam.h"

void dec_grad_project_cpu(const float *W_dec, // (n, d)
                          int d, sae_grads *g)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < g->n_rows; r++) {
        const float *w = W_dec + (size_t)g->rows[r] * d;
        float *gr = g->dW_dec + (size_t)r * d;
        double dot = 0.0;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < d; j++)
            dot += (double)gr[j] * (double)w[j];
        float c = (float)dot;
#pragma omp simd
        for (int j = 0; j < d; j++)
            gr[j] -= c * w[j];
    }
}

#define RED_BLOCKS 256

/* Sum of squares of a (rows, d) block, blocked so the result depends only on the shape. */
static double rows_sqnorm(const float *a, int rows, int d)
{
    int per = (rows + RED_BLOCKS - 1) / RED_BLOCKS;
    double part[RED_BLOCKS] = {0};
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < RED_BLOCKS; blk++) {
        double acc = 0.0;
        for (int r = blk * per; r < (blk + 1) * per && r < rows; r++) {
            const float *ar = a + (size_t)r * d;
            double s = 0.0;
#pragma omp simd reduction(+ : s)
            for (int j = 0; j < d; j++)
                s += (double)ar[j] * (double)ar[j];
            acc += s;
        }
        part[blk] = acc;
    }
    double s = 0.0;
    for (int blk = 0; blk < RED_BLOCKS; blk++)
        s += part[blk];
    return s;
}

double grad_sqnorm_cpu(const sae_grads *g, int d, int n)
{
    return rows_sqnorm(g->dW_enc, g->n_rows, d) + rows_sqnorm(g->db_enc, n, 1) +
           rows_sqnorm(g->dW_dec, g->n_rows, d) + rows_sqnorm(g->db_dec, d, 1);
}

/* One Adam update of len values; grad == NULL means a zero gradient. */
static inline void adam_span(float *p, float *m, float *v, const float *grad, int len,
                             float step_size, float bc2_sqrt, float b1, float b2, float eps,
                             float gscale)
{
#pragma omp simd
    for (int j = 0; j < len; j++) {
        float gj = grad ? grad[j] * gscale : 0.0f;
        m[j] = b1 * m[j] + (1.0f - b1) * gj;
        v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
        p[j] -= step_size * m[j] / (sqrtf(v[j]) / bc2_sqrt + eps);
    }
}

void adam_step_cpu(sae_params *p, sae_state *s, const sae_grads *g,
                   int d, int n,
                   float step_size, float bc2_sqrt,
                   float b1, float b2, float eps, float gscale)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        size_t off = (size_t)i * d;
        int r = g->slot[i];
        const float *ge = r >= 0 ? g->dW_enc + (size_t)r * d : NULL;
        const float *gd = r >= 0 ? g->dW_dec + (size_t)r * d : NULL;
        adam_span(p->W_enc + off, s->m_W_enc + off, s->v_W_enc + off, ge, d,
                  step_size, bc2_sqrt, b1, b2, eps, gscale);
        float *w = p->W_dec + off;
        adam_span(w, s->m_W_dec + off, s->v_W_dec + off, gd, d,
                  step_size, bc2_sqrt, b1, b2, eps, gscale);
        /* Renormalise while the row is in cache: norm in double, scale in float. */
        double ss = 0.0;
#pragma omp simd reduction(+ : ss)
        for (int j = 0; j < d; j++)
            ss += (double)w[j] * (double)w[j];
        float nrm = (float)sqrt(ss);
        if (nrm > 0.0f)
#pragma omp simd
            for (int j = 0; j < d; j++)
                w[j] /= nrm;
    }
    adam_span(p->b_enc, s->m_b_enc, s->v_b_enc, g->db_enc, n,
              step_size, bc2_sqrt, b1, b2, eps, gscale);
    adam_span(p->b_dec, s->m_b_dec, s->v_b_dec, g->db_dec, d,
              step_size, bc2_sqrt, b1, b2, eps, gscale);
}
