/* Batch top-k, CPU twin of bselect.cu: the K largest relu(pre) over the whole batch, exactly.
 *
 * One pass over pre in the common case: a bound sampled from a subset of rows marks the
 * candidates (values above it, about 2K of them), and the exact selection runs on those alone.
 * When the bound turns out too high (fewer than K candidates) or too low (too many), the
 * three-pass reference runs instead, so the result never depends on the sample. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "select.h"
#include "sf_check.h"

/* Positive floats order like their bit patterns; the top 15 bits (sign is 0) bucket them. */
#define BSEL_SHIFT 16
#define BSEL_BUCKETS (1 << (31 - BSEL_SHIFT))

static inline uint32_t fbits(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof(u));
    return u;
}

typedef struct bsel_cand {
    uint32_t bits;
    int64_t flat;
} bsel_cand;

/* The keep rule both paths share: a key above the threshold key Tb, or equal to it at a flat
 * index b*n + i no later than tie_last (ties go to the lower flat index). */
static inline int bsel_keep(uint32_t u, int64_t flat, uint32_t Tb, int64_t tie_last)
{
    return u > Tb || (u == Tb && flat <= tie_last);
}

static int cmp_bsel(const void *a, const void *b)
{
    const bsel_cand *x = a, *y = b;
    if (x->bits != y->bits)
        return x->bits > y->bits ? -1 : 1; /* larger value first */
    return (x->flat > y->flat) - (x->flat < y->flat);
}

/* The reference algorithm: three passes over pre (histogram, count + candidates of the
 * threshold bucket, write). Used when the one-pass path's sampled bound fails. */
int select_batch_3pass_cpu(const float *pre,     // (B, n)
                           int B, int n, int64_t K,
                           int *row_ptr,         // (B + 1) out
                           int *lat,             // (K) out
                           float *val,           // (K) out
                           float *min_kept)
{
    row_ptr[0] = 0;
    if (K <= 0 || B <= 0) {
        for (int b = 0; b < B; b++)
            row_ptr[b + 1] = 0;
        *min_kept = 0.0f;
        return 0;
    }
    /* Pass 1: global histogram of the positive values' high bits (per-thread, merged exactly). */
    int nt = omp_get_max_threads();
    uint32_t *hist = calloc((size_t)nt * BSEL_BUCKETS, sizeof(uint32_t));
    int64_t *total = calloc(BSEL_BUCKETS, sizeof(int64_t));
    SF_CHECK(hist && total);
#pragma omp parallel num_threads(nt)
    {
        uint32_t *h = hist + (size_t)omp_get_thread_num() * BSEL_BUCKETS;
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            const float *pb = pre + (size_t)b * n;
            for (int i = 0; i < n; i++)
                if (pb[i] > 0.0f)
                    h[fbits(pb[i]) >> BSEL_SHIFT]++;
        }
    }
    int64_t total_pos = 0;
    for (int t = 0; t < nt; t++)
        for (int q = 0; q < BSEL_BUCKETS; q++)
            total[q] += hist[(size_t)t * BSEL_BUCKETS + q];
    for (int q = 0; q < BSEL_BUCKETS; q++)
        total_pos += total[q];

    /* Keep rule: bits > Tb, or bits == Tb and flat <= tie_last. All positives when <= K. */
    uint32_t Tb = 0;
    int64_t tie_last = -1;
    int bk = -1;
    int64_t need = 0;
    if (total_pos > K) {
        int64_t cum = 0;
        for (bk = BSEL_BUCKETS - 1; bk >= 0; bk--) {
            if (cum + total[bk] >= K)
                break;
            cum += total[bk];
        }
        need = K - cum;
    }
    /* Pass 2: per-row count of values in buckets above bk; collect the bucket-bk candidates. */
    bsel_cand *cand = NULL;
    int64_t n_cand = 0;
    if (bk >= 0) {
        cand = malloc((size_t)total[bk] * sizeof(bsel_cand));
        SF_CHECK(cand);
    }
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *pb = pre + (size_t)b * n;
        int cnt = 0;
        for (int i = 0; i < n; i++) {
            if (!(pb[i] > 0.0f))
                continue;
            int q = (int)(fbits(pb[i]) >> BSEL_SHIFT);
            if (q > bk) {
                cnt++;
            } else if (q == bk) {
                int64_t slot;
#pragma omp atomic capture
                slot = n_cand++;
                cand[slot].bits = fbits(pb[i]);
                cand[slot].flat = (int64_t)b * n + i;
            }
        }
        row_ptr[b + 1] = cnt;
    }
    if (bk >= 0) {
        SF_CHECK(n_cand == total[bk]);
        /* Collection order depends on threads; the sort key (value desc, flat asc) is unique. */
        qsort(cand, (size_t)n_cand, sizeof(bsel_cand), cmp_bsel);
        Tb = cand[need - 1].bits;
        tie_last = cand[need - 1].flat;
        for (int64_t c = 0; c < need; c++)
            row_ptr[cand[c].flat / n + 1]++;
    }
    for (int b = 0; b < B; b++)
        row_ptr[b + 1] += row_ptr[b];
    int kept = row_ptr[B];
    SF_CHECK(kept <= K);

    /* Pass 3: write each row's kept latents in ascending order. */
    uint32_t mn_bits = 0xFFFFFFFFu;
#pragma omp parallel for schedule(static) reduction(min : mn_bits)
    for (int b = 0; b < B; b++) {
        const float *pb = pre + (size_t)b * n;
        int off = row_ptr[b];
        for (int i = 0; i < n; i++) {
            if (!(pb[i] > 0.0f))
                continue;
            uint32_t u = fbits(pb[i]);
            if (bsel_keep(u, (int64_t)b * n + i, Tb, tie_last)) {
                lat[off] = i;
                val[off] = pb[i];
                off++;
                if (u < mn_bits)
                    mn_bits = u;
            }
        }
    }
    float mn = 0.0f;
    if (kept > 0)
        memcpy(&mn, &mn_bits, sizeof(mn));
    *min_kept = mn;
    free(cand);
    free(hist);
    free(total);
    return kept;
}

/* ---- one-pass path ---------------------------------------------------------------------- */

#define SAMPLE_ROWS 256  /* rows the bound is estimated from (every B/256-th row) */
#define CAND_MARGIN 2    /* the bound aims at CAND_MARGIN * K candidates */
#define CAND_CAP 8       /* more than CAND_CAP * K candidates: the bound was too low */

typedef struct cand1 {
    uint32_t bits;
    int lat;
} cand1;

/* A value whose share of the sampled rows' positives above it is about CAND_MARGIN * K / (B n):
 * the lower edge of that histogram bucket. 0 when the sample has too few positives. */
static float sampled_bound(const float *pre, int B, int n, int64_t K, int nt)
{
    int step = B > SAMPLE_ROWS ? B / SAMPLE_ROWS : 1;
    int rows = (B + step - 1) / step;
    uint32_t *hist = calloc((size_t)nt * BSEL_BUCKETS, sizeof(uint32_t));
    SF_CHECK(hist);
#pragma omp parallel num_threads(nt)
    {
        uint32_t *h = hist + (size_t)omp_get_thread_num() * BSEL_BUCKETS;
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            const float *pb = pre + (size_t)r * step * n;
            for (int i = 0; i < n; i++)
                if (pb[i] > 0.0f)
                    h[fbits(pb[i]) >> BSEL_SHIFT]++;
        }
    }
    double want = (double)CAND_MARGIN * (double)K * rows / B;
    double cum = 0;
    float bound = 0.0f;
    for (int q = BSEL_BUCKETS - 1; q > 0; q--) {
        for (int t = 0; t < nt; t++)
            cum += hist[(size_t)t * BSEL_BUCKETS + q];
        if (cum >= want) {
            uint32_t u = (uint32_t)q << BSEL_SHIFT;
            memcpy(&bound, &u, sizeof bound);
            break;
        }
    }
    free(hist);
    return bound;
}

/* Candidates (values > lo) of rows [b0, b1) appended to *buf in row-major order; cnt[b] per row.
 * Returns the number collected, or -1 once more than cap were seen. */
static int64_t collect(const float *pre, int b0, int b1, int n, float lo, int64_t cap, cand1 **buf,
                       int64_t *buf_cap, int *cnt)
{
    int64_t m = 0;
    for (int b = b0; b < b1; b++) {
        const float *pb = pre + (size_t)b * n;
        int64_t start = m;
        for (int i = 0; i < n; i++) {
            if (pb[i] > lo) { /* rare: lo is far above most values, so this branch predicts well */
                if (m == *buf_cap) {
                    if (m >= cap)
                        return -1;
                    *buf_cap = *buf_cap * 2 < cap ? *buf_cap * 2 : cap;
                    cand1 *g = realloc(*buf, (size_t)*buf_cap * sizeof(cand1));
                    SF_CHECK(g);
                    *buf = g;
                }
                (*buf)[m].bits = fbits(pb[i]);
                (*buf)[m].lat = i;
                m++;
            }
        }
        cnt[b] = (int)(m - start);
    }
    return m;
}

/* Exact top K among the candidates c (row-major, crow = per-row offsets), written as the code.
 * Every value above the bound is a candidate and the K-th largest is above it, so this is the
 * batch's exact top K, ties to the lower flat index as in the reference. */
static int select_from_candidates(const cand1 *c, const int64_t *crow, int B, int n, int64_t K,
                                  int *row_ptr, int *lat, float *val, float *min_kept)
{
    int64_t total = crow[B];
    uint32_t Tb = 0;
    int64_t tie_last = INT64_MAX;
    if (total > K) {
        int64_t *h = calloc(BSEL_BUCKETS, sizeof(int64_t));
        SF_CHECK(h);
        for (int64_t j = 0; j < total; j++)
            h[c[j].bits >> BSEL_SHIFT]++;
        int64_t cum = 0;
        int bk = BSEL_BUCKETS - 1;
        for (; bk > 0 && cum + h[bk] < K; bk--)
            cum += h[bk];
        int64_t need = K - cum, nb = 0;
        bsel_cand *bc = malloc((size_t)h[bk] * sizeof(bsel_cand));
        SF_CHECK(bc);
        for (int b = 0; b < B; b++)
            for (int64_t j = crow[b]; j < crow[b + 1]; j++)
                if ((int)(c[j].bits >> BSEL_SHIFT) == bk) {
                    bc[nb].bits = c[j].bits;
                    bc[nb].flat = (int64_t)b * n + c[j].lat;
                    nb++;
                }
        qsort(bc, (size_t)nb, sizeof *bc, cmp_bsel);
        Tb = bc[need - 1].bits;
        tie_last = bc[need - 1].flat;
        free(bc);
        free(h);
    }
    row_ptr[0] = 0;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        int cnt = 0;
        for (int64_t j = crow[b]; j < crow[b + 1]; j++)
            cnt += bsel_keep(c[j].bits, (int64_t)b * n + c[j].lat, Tb, tie_last);
        row_ptr[b + 1] = cnt;
    }
    for (int b = 0; b < B; b++)
        row_ptr[b + 1] += row_ptr[b];
    int kept = row_ptr[B];
    SF_CHECK(kept <= K);
    uint32_t mn_bits = 0xFFFFFFFFu;
#pragma omp parallel for schedule(static) reduction(min : mn_bits)
    for (int b = 0; b < B; b++) {
        int off = row_ptr[b];
        for (int64_t j = crow[b]; j < crow[b + 1]; j++) {
            uint32_t u = c[j].bits;
            if (bsel_keep(u, (int64_t)b * n + c[j].lat, Tb, tie_last)) {
                lat[off] = c[j].lat;
                memcpy(&val[off], &u, sizeof(float));
                off++;
                if (u < mn_bits)
                    mn_bits = u;
            }
        }
    }
    float mn = 0.0f;
    if (kept > 0)
        memcpy(&mn, &mn_bits, sizeof mn);
    *min_kept = mn;
    return kept;
}

int select_batch_1pass_cpu(const float *pre,     // (B, n)
                           int B, int n, int64_t K,
                           int *row_ptr,         // (B + 1) out
                           int *lat,             // (K) out
                           float *val,           // (K) out
                           float *min_kept)
{
    if (K <= 0 || B <= 0)
        return -1;
    int nt = omp_get_max_threads();
    float lo = sampled_bound(pre, B, n, K, nt);
    if (!(lo > 0.0f))
        return -1;
    int *cnt = malloc((size_t)B * sizeof(int));
    cand1 **bufs = calloc((size_t)nt, sizeof *bufs);
    int64_t *got = calloc((size_t)nt, sizeof *got);
    SF_CHECK(cnt && bufs && got);
    int64_t cap = CAND_CAP * K / nt + n;
    int overflow = 0;
#pragma omp parallel num_threads(nt) reduction(| : overflow)
    {
        int t = omp_get_thread_num(), p = omp_get_num_threads();
        int per = (B + p - 1) / p, b0 = t * per, b1 = b0 + per < B ? b0 + per : B;
        int64_t bcap = 2 * CAND_MARGIN * K / p + 64;
        bufs[t] = malloc((size_t)bcap * sizeof(cand1));
        SF_CHECK(bufs[t]);
        got[t] = b1 > b0 ? collect(pre, b0, b1, n, lo, cap, &bufs[t], &bcap, cnt) : 0;
        overflow |= got[t] < 0;
    }
    int rc = -1;
    int64_t total = 0;
    for (int t = 0; t < nt && !overflow; t++)
        total += got[t];
    if (!overflow && total >= K) {
        cand1 *c = malloc((size_t)total * sizeof(cand1));
        int64_t *crow = malloc((size_t)(B + 1) * sizeof(int64_t));
        SF_CHECK(c && crow);
        for (int64_t t = 0, off = 0; t < nt; off += got[t], t++)
            if (got[t])
                memcpy(c + off, bufs[t], (size_t)got[t] * sizeof(cand1));
        crow[0] = 0;
        for (int b = 0; b < B; b++)
            crow[b + 1] = crow[b] + cnt[b];
        SF_CHECK(crow[B] == total);
        rc = select_from_candidates(c, crow, B, n, K, row_ptr, lat, val, min_kept);
        free(c);
        free(crow);
    }
    for (int t = 0; t < nt; t++)
        free(bufs[t]);
    free(bufs);
    free(got);
    free(cnt);
    return rc;
}

int select_batch_cpu(const float *pre,     // (B, n)
                     int B, int n, int64_t K,
                     int *row_ptr,         // (B + 1) out
                     int *lat,             // (K) out
                     float *val,           // (K) out
                     float *min_kept)
{
    int kept = select_batch_1pass_cpu(pre, B, n, K, row_ptr, lat, val, min_kept);
    if (kept >= 0)
        return kept;
    return select_batch_3pass_cpu(pre, B, n, K, row_ptr, lat, val, min_kept);
}
