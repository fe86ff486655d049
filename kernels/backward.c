/* Sparse backward, CPU twin of backward.cu: gradients of the four tensors through the selected
 * entries only. Entries are counting-sorted by latent, then each touched latent's rows are summed
 * by one thread in (group, token) order, so the result does not depend on the thread count. */
#include <stdlib.h>
#include <string.h>

#include "backward.h"
#include "sf_check.h"

void bwd_scratch_init(sae_bwd_scratch *ws, int n, int64_t cap_entries)
{
    SF_CHECK(n > 0 && cap_entries >= 0 && cap_entries <= 0x7FFFFFFF);
    ws->n = n;
    ws->cap_entries = cap_entries;
    ws->start = malloc((size_t)(n + 1) * sizeof(int));
    ws->cursor = malloc((size_t)n * sizeof(int));
    ws->pair = malloc((size_t)(3 * cap_entries + 3) * sizeof(int));
    SF_CHECK(ws->start && ws->cursor && ws->pair);
}

void bwd_scratch_free(sae_bwd_scratch *ws)
{
    if (!ws)
        return;
    free(ws->start);
    free(ws->cursor);
    free(ws->pair);
    memset(ws, 0, sizeof(*ws));
}

static int band_of(const sae_bwd_group *g, int i)
{
    int j = 0;
    while (j < g->n_bands - 1 && i >= g->bounds[j])
        j++;
    return j;
}

void backward_cpu_ws(const float *u,            // (B, d) x - b_dec
                     const sae_params *p,
                     int B, int d, int n,
                     const sae_bwd_group *groups, int n_groups,
                     sae_grads *out,
                     sae_bwd_scratch *ws)
{
    SF_CHECK(ws->n == n);
    int64_t total = 0;
    for (int gi = 0; gi < n_groups; gi++)
        total += groups[gi].row_ptr[B];
    SF_CHECK(total <= ws->cap_entries);

    /* Counting sort of (latent, group, token) pairs by latent; fill order keeps group then token order. */
    int *start = ws->start, *cursor = ws->cursor, *pair = ws->pair;
    memset(start, 0, (size_t)(n + 1) * sizeof(int));
    for (int gi = 0; gi < n_groups; gi++) {
        const sae_bwd_group *g = &groups[gi];
        for (int e = 0; e < g->row_ptr[B]; e++) {
            int i = g->lat[e];
            if (i >= 0) {
                SF_CHECK(i < n);
                start[i + 1]++;
            }
        }
    }
    out->n_rows = 0;
    for (int i = 0; i < n; i++) {
        if (start[i + 1] > 0) {
            SF_CHECK(out->n_rows < out->cap_rows);
            out->slot[i] = out->n_rows;
            out->rows[out->n_rows++] = i;
        } else {
            out->slot[i] = -1;
        }
        start[i + 1] += start[i];
        cursor[i] = start[i];
    }
    for (int gi = 0; gi < n_groups; gi++) {
        const sae_bwd_group *g = &groups[gi];
        for (int b = 0; b < B; b++) {
            for (int e = g->row_ptr[b]; e < g->row_ptr[b + 1]; e++) {
                int i = g->lat[e];
                if (i < 0)
                    continue;
                int *q = pair + 3 * (size_t)cursor[i]++;
                q[0] = b;
                q[1] = e;
                q[2] = gi;
            }
        }
    }

    memset(out->db_enc, 0, (size_t)n * sizeof(float));
    int n_rows = out->n_rows;
#pragma omp parallel for schedule(dynamic, 16)
    for (int r = 0; r < n_rows; r++) {
        int i = out->rows[r];
        const float *wd = p->W_dec + (size_t)i * d;
        float *gdec = out->dW_dec + (size_t)r * d;
        float *genc = out->dW_enc + (size_t)r * d;
        memset(gdec, 0, (size_t)d * sizeof(float));
        memset(genc, 0, (size_t)d * sizeof(float));
        double db = 0.0;
        for (int q = start[i]; q < start[i + 1]; q++) {
            int b = pair[3 * (size_t)q], e = pair[3 * (size_t)q + 1];
            const sae_bwd_group *g = &groups[pair[3 * (size_t)q + 2]];
            float a = g->val[e];
            const float *dy = g->dY + ((size_t)band_of(g, i) * B + b) * d;
            const float *ub = u + (size_t)b * d;
            double dval = 0.0;
#pragma omp simd reduction(+ : dval)
            for (int j = 0; j < d; j++)
                dval += (double)dy[j] * (double)wd[j];
            float dpre = (float)dval; /* relu' = 1: kept entries have a > 0 */
#pragma omp simd
            for (int j = 0; j < d; j++) {
                gdec[j] += a * dy[j];
                genc[j] += dpre * ub[j];
            }
            db += dpre;
        }
        out->db_enc[i] = (float)db;
    }

    /* db_dec: direct path through each biased reconstruction, minus the path through u = x - b_dec.
     * Column blocks keep row accesses contiguous; each column is summed in a fixed order. */
    enum { JB = 64 };
    int n_jb = (d + JB - 1) / JB;
#pragma omp parallel for schedule(static)
    for (int jb = 0; jb < n_jb; jb++) {
        int j0 = jb * JB, j1 = j0 + JB < d ? j0 + JB : d;
        double s[JB] = {0}, t[JB] = {0};
        for (int gi = 0; gi < n_groups; gi++) {
            if (!groups[gi].has_bias)
                continue;
            for (int b = 0; b < B; b++) {
                const float *dy = groups[gi].dY + (size_t)b * d;
                for (int j = j0; j < j1; j++)
                    s[j - j0] += dy[j];
            }
        }
        for (int r = 0; r < n_rows; r++) {
            int i = out->rows[r];
            double gb = out->db_enc[i];
            const float *we = p->W_enc + (size_t)i * d;
            for (int j = j0; j < j1; j++)
                t[j - j0] += gb * (double)we[j];
        }
        for (int j = j0; j < j1; j++)
            out->db_dec[j] = (float)(s[j - j0] - t[j - j0]);
    }
}

void backward_cpu(const float *u,            // (B, d) x - b_dec
                  const sae_params *p,
                  int B, int d, int n,
                  const sae_bwd_group *groups, int n_groups,
                  sae_grads *out)
{
    int64_t total = 0;
    for (int gi = 0; gi < n_groups; gi++)
        total += groups[gi].row_ptr[B];
    sae_bwd_scratch ws;
    bwd_scratch_init(&ws, n, total);
    backward_cpu_ws(u, p, B, d, n, groups, n_groups, out, &ws);
    bwd_scratch_free(&ws);
}
