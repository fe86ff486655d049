/* Dense-product AuxK for the CPU backend (see auxk.h). Every GEMM splits its output rows on
 * fixed boundaries (sgemm_rows_cpu), so results do not depend on the thread count. */
#include "auxk.h"

#include <stdlib.h>
#include <string.h>

#include "encode.h"
#include "sf_check.h"

static void *xrealloc(void *p, size_t count, size_t size)
{
    void *q = realloc(p, (count ? count : 1) * size);
    SF_CHECK(q != NULL);
    return q;
}

void auxk_dense_init(auxk_dense *w, int n, int d, int max_B)
{
    memset(w, 0, sizeof *w);
    w->d = d;
    w->max_B = max_B;
    w->pos = xrealloc(NULL, (size_t)n, sizeof(int));
}

void auxk_dense_free(auxk_dense *w)
{
    free(w->dead);
    free(w->pos);
    free(w->Wd);
    free(w->A);
    free(w->dA);
    free(w->gdec);
    free(w->genc);
    free(w->db);
    memset(w, 0, sizeof *w);
}

int auxk_dense_wanted(int nd, int k_aux)
{
    const char *v = getenv("SF_AUXK");
    if (v && !strcmp(v, "dense"))
        return 1;
    if (v && !strcmp(v, "sparse"))
        return 0;
    return (int64_t)nd <= (int64_t)AUXK_DENSE_RATIO * k_aux;
}

static void ensure_cap(auxk_dense *w, int nd)
{
    if (nd <= w->cap)
        return;
    size_t c = (size_t)nd, d = (size_t)w->d, B = (size_t)w->max_B;
    w->dead = xrealloc(w->dead, c, sizeof(int));
    w->Wd = xrealloc(w->Wd, c * d, sizeof(float));
    w->A = xrealloc(w->A, B * c, sizeof(float));
    w->dA = xrealloc(w->dA, B * c, sizeof(float));
    w->gdec = xrealloc(w->gdec, c * d, sizeof(float));
    w->genc = xrealloc(w->genc, c * d, sizeof(float));
    w->db = xrealloc(w->db, c, sizeof(float));
    w->cap = nd;
}

void auxk_dense_forward(auxk_dense *w, const uint8_t *mask, int n, const float *W_dec,
                        const int *lat, const float *val, int B, int kaux, float *ehat)
{
    const int d = w->d;
    int nd = 0;
    for (int i = 0; i < n; i++)
        nd += mask[i] != 0;
    ensure_cap(w, nd);
    w->nd = nd;
    for (int i = 0, r = 0; i < n; i++) {
        w->pos[i] = mask[i] ? r : -1;
        if (mask[i])
            w->dead[r++] = i;
    }
#pragma omp parallel for schedule(static)
    for (int r = 0; r < nd; r++)
        memcpy(w->Wd + (size_t)r * d, W_dec + (size_t)w->dead[r] * d, (size_t)d * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        float *ab = w->A + (size_t)b * nd;
        memset(ab, 0, (size_t)nd * sizeof(float));
        for (int t = 0; t < kaux; t++) {
            int i = lat[(size_t)b * kaux + t];
            if (i >= 0) {
                SF_CHECK(w->pos[i] >= 0);
                ab[w->pos[i]] = val[(size_t)b * kaux + t];
            }
        }
    }
    sgemm_rows_cpu(0, 0, B, d, nd, w->A, nd, w->Wd, d, 0.0f, ehat, d);
}

/* Merges the touched dead rows (ascending, gradients in w->gdec/genc at dead index) into g. */
static void merge_rows(auxk_dense *w, const int *touched, int n_touched, sae_grads *g)
{
    const int d = w->d;
    int n_new = 0;
    for (int t = 0; t < n_touched; t++) {
        int r = touched[t], i = w->dead[r];
        int s = g->slot[i];
        if (s >= 0) { /* fired in the main code this step too */
            float *ge = g->dW_enc + (size_t)s * d, *gd = g->dW_dec + (size_t)s * d;
            const float *ae = w->genc + (size_t)r * d, *ad = w->gdec + (size_t)r * d;
            for (int j = 0; j < d; j++) {
                ge[j] += ae[j];
                gd[j] += ad[j];
            }
        } else {
            n_new++;
        }
    }
    if (!n_new)
        return;
    SF_CHECK(g->n_rows + n_new <= g->cap_rows);
    /* from the back, so no row is overwritten before it moves */
    int src = g->n_rows - 1, t = n_touched - 1;
    for (int dst = g->n_rows + n_new - 1; dst >= 0; dst--) {
        while (t >= 0 && g->slot[w->dead[touched[t]]] >= 0)
            t--; /* already merged above */
        int take_new = t >= 0 && (src < 0 || w->dead[touched[t]] > g->rows[src]);
        if (take_new) {
            int r = touched[t--];
            g->rows[dst] = w->dead[r];
            memcpy(g->dW_enc + (size_t)dst * d, w->genc + (size_t)r * d, (size_t)d * sizeof(float));
            memcpy(g->dW_dec + (size_t)dst * d, w->gdec + (size_t)r * d, (size_t)d * sizeof(float));
        } else {
            g->rows[dst] = g->rows[src];
            if (dst != src) {
                memcpy(g->dW_enc + (size_t)dst * d, g->dW_enc + (size_t)src * d, (size_t)d * sizeof(float));
                memcpy(g->dW_dec + (size_t)dst * d, g->dW_dec + (size_t)src * d, (size_t)d * sizeof(float));
            }
            src--;
        }
    }
    g->n_rows += n_new;
    for (int s = 0; s < g->n_rows; s++)
        g->slot[g->rows[s]] = s;
}

void auxk_dense_backward(auxk_dense *w, const float *u, const float *dY_aux, const sae_params *p,
                         int B, int n, sae_grads *g)
{
    const int d = w->d, nd = w->nd;
    if (nd == 0)
        return;
    /* dpre = dY_aux Wd^T on the selected entries (a > 0), 0 elsewhere */
    sgemm_rows_cpu(0, 1, B, nd, d, dY_aux, d, w->Wd, d, 0.0f, w->dA, nd);
#pragma omp parallel for schedule(static)
    for (size_t t = 0; t < (size_t)B * nd; t++)
        if (!(w->A[t] > 0.0f))
            w->dA[t] = 0.0f;
    sgemm_rows_cpu(1, 0, nd, d, B, w->A, nd, dY_aux, d, 0.0f, w->gdec, d);
    sgemm_rows_cpu(1, 0, nd, d, B, w->dA, nd, u, d, 0.0f, w->genc, d);
    /* column sums of dpre and whether each dead latent was selected at all, in token order */
    int *touched = xrealloc(NULL, (size_t)nd, sizeof(int));
#pragma omp parallel for schedule(static)
    for (int r = 0; r < nd; r++) {
        double s = 0.0;
        int any = 0;
        for (int b = 0; b < B; b++) {
            s += w->dA[(size_t)b * nd + r];
            any |= w->A[(size_t)b * nd + r] > 0.0f;
        }
        w->db[r] = (float)s;
        touched[r] = any;
    }
    int n_touched = 0;
    for (int r = 0; r < nd; r++)
        if (touched[r])
            touched[n_touched++] = r;
    merge_rows(w, touched, n_touched, g);
    /* db_enc, and b_dec's path through u = x - b_dec: db_dec -= sum_i db_aux_i W_enc[i] */
    for (int t = 0; t < n_touched; t++)
        g->db_enc[w->dead[touched[t]]] += w->db[touched[t]];
#pragma omp parallel for schedule(static)
    for (int j = 0; j < d; j++) {
        double s = 0.0;
        for (int t = 0; t < n_touched; t++) {
            int r = touched[t];
            s += (double)w->db[r] * p->W_enc[(size_t)w->dead[r] * d + j];
        }
        g->db_dec[j] -= (float)s;
    }
    free(touched);
}
