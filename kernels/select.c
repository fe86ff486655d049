/* Latent selection, CPU twin of select.cu: exact row top-k (heap) and the inference threshold
 * rule. Batch top-k (bselect.cu's twin) is in bselect.c. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "select.h"
#include "sf_check.h"

typedef struct sel_cand {
    float s;
    int i;
} sel_cand;

/* a ranks below b: smaller score, or equal score and higher index (ties go to the lower index). */
static inline int cand_worse(sel_cand a, sel_cand b)
{
    return a.s < b.s || (a.s == b.s && a.i > b.i);
}

/* Min-heap on "worse": heap[0] is the weakest kept candidate. */
static void heap_sift_down(sel_cand *h, int len, int pos)
{
    sel_cand x = h[pos];
    for (;;) {
        int c = 2 * pos + 1;
        if (c >= len)
            break;
        if (c + 1 < len && cand_worse(h[c + 1], h[c]))
            c++;
        if (!cand_worse(h[c], x))
            break;
        h[pos] = h[c];
        pos = c;
    }
    h[pos] = x;
}

static void heap_sift_up(sel_cand *h, int pos)
{
    sel_cand x = h[pos];
    while (pos > 0) {
        int par = (pos - 1) / 2;
        if (!cand_worse(x, h[par]))
            break;
        h[pos] = h[par];
        pos = par;
    }
    h[pos] = x;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void sort_ints(int *v, int len)
{
    if (len > 48) {
        qsort(v, (size_t)len, sizeof(int), cmp_int);
        return;
    }
    for (int t = 1; t < len; t++) {
        int x = v[t], j = t - 1;
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
}

static inline float topk_score(const float *pre, const float *gate, float beta, int i)
{
    float a = pre[i] > 0.0f ? pre[i] : 0.0f;
    return gate ? a * (1.0f + beta * gate[i]) : a;
}

/* Upper bound test for a block of SEL_BLK values: the largest pre * (1 + beta * gate). Any value
 * whose true score relu(pre) * (1 + beta * gate) exceeds thr >= 0 has pre > 0 and the same product,
 * so a block whose bound is <= thr cannot contribute. Four running maxima keep it branch-free. */
#define SEL_BLK 16

static inline float block_bound(const float *pre, const float *gate, float beta)
{
    float m0 = 0.0f, m1 = 0.0f, m2 = 0.0f, m3 = 0.0f;
    for (int t = 0; t < SEL_BLK; t += 4) {
        float v0 = pre[t], v1 = pre[t + 1], v2 = pre[t + 2], v3 = pre[t + 3];
        if (gate) {
            v0 = v0 * (1.0f + beta * gate[t]);
            v1 = v1 * (1.0f + beta * gate[t + 1]);
            v2 = v2 * (1.0f + beta * gate[t + 2]);
            v3 = v3 * (1.0f + beta * gate[t + 3]);
        }
        m0 = v0 > m0 ? v0 : m0;
        m1 = v1 > m1 ? v1 : m1;
        m2 = v2 > m2 ? v2 : m2;
        m3 = v3 > m3 ? v3 : m3;
    }
    m0 = m1 > m0 ? m1 : m0;
    m2 = m3 > m2 ? m3 : m2;
    return m2 > m0 ? m2 : m0;
}

/* k-th largest of v[0..len) (len >= k >= 1), by a size-k min-heap of values. */
static float kth_largest(const float *v, int len, int k, float *heap)
{
    for (int t = 0; t < k; t++) {
        int pos = t;
        float x = v[t];
        while (pos > 0 && x < heap[(pos - 1) / 2]) {
            heap[pos] = heap[(pos - 1) / 2];
            pos = (pos - 1) / 2;
        }
        heap[pos] = x;
    }
    for (int t = k; t < len; t++) {
        float x = v[t];
        if (!(x > heap[0]))
            continue;
        int pos = 0;
        for (;;) {
            int c = 2 * pos + 1;
            if (c >= k)
                break;
            if (c + 1 < k && heap[c + 1] < heap[c])
                c++;
            if (!(heap[c] < x))
                break;
            heap[pos] = heap[c];
            pos = c;
        }
        heap[pos] = x;
    }
    return heap[0];
}

/* One row: fills idx with the kept latents (ascending), returns how many. Scanning in index
 * order means a later candidate with an equal score never displaces an earlier one, so a
 * strict '>' against the weakest kept score implements "ties to the lower index".
 * Without a mask, a first pass takes each block's best score; the k-th largest of those, L, is
 * a lower bound of the row's k-th largest score (k blocks each hold a score >= L), so only
 * blocks whose best is >= L can hold a kept latent. */
static int topk_row(const float *pre, const float *gate, float beta, const uint8_t *mask,
                    int n, int k, sel_cand *heap, int *idx, float *bm, float *vheap)
{
    int len = 0;
    float thr = 0.0f; /* eligible scores must exceed this; 0 until the heap is full */
    int nb = n / SEL_BLK;
    float L = 0.0f;
    if (!mask) {
        for (int blk = 0; blk < nb; blk++)
            bm[blk] = block_bound(pre + blk * SEL_BLK, gate ? gate + blk * SEL_BLK : NULL, beta);
        if (nb >= k)
            L = kth_largest(bm, nb, k, vheap);
    }
    for (int i0 = 0; i0 < n; i0 += SEL_BLK) {
        int cnt = n - i0 < SEL_BLK ? n - i0 : SEL_BLK;
        if (cnt == SEL_BLK) {
            float bound = mask ? block_bound(pre + i0, gate ? gate + i0 : NULL, beta) : bm[i0 / SEL_BLK];
            if (!(bound > thr) || bound < L)
                continue;
        }
        for (int t = 0; t < cnt; t++) {
            int i = i0 + t;
            float s = topk_score(pre, gate, beta, i);
            if (!(s > thr))
                continue;
            if (mask && !mask[i])
                continue;
            sel_cand c = {s, i};
            if (len < k) {
                heap[len] = c;
                heap_sift_up(heap, len);
                len++;
            } else {
                heap[0] = c;
                heap_sift_down(heap, len, 0);
            }
            if (len == k)
                thr = heap[0].s;
        }
    }
    for (int t = 0; t < len; t++)
        idx[t] = heap[t].i;
    sort_ints(idx, len);
    return len;
}

/* k-th largest (1 <= k <= m) of w[0..m) by quickselect with a three-way partition (ties are
 * common: equal scores), reordering w. Falls back to the heap when the partitions degrade. */
static float kth_largest_select(float *w, int m, int k, float *heap)
{
    int lo = 0, hi = m - 1, want = k - 1, rounds = 0;
    while (lo < hi) {
        if (++rounds > 64)
            return kth_largest(w + lo, hi - lo + 1, want - lo + 1, heap);
        float a = w[lo], b = w[lo + (hi - lo) / 2], c = w[hi];
        float p = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
        int lt = lo, i = lo, gt = hi; /* [lo, lt) > p, [lt, i) == p, (gt, hi] < p */
        while (i <= gt) {
            float x = w[i];
            if (x > p) {
                w[i++] = w[lt];
                w[lt++] = x;
            } else if (x < p) {
                w[i] = w[gt];
                w[gt--] = x;
            } else {
                i++;
            }
        }
        if (want < lt)
            hi = lt - 1;
        else if (want > gt)
            lo = gt + 1;
        else
            return p;
    }
    return w[lo];
}

/* Large k (AuxK's k_aux = d/2): the row's eligible positive scores are gathered in index order,
 * the k-th largest found in O(m), and one scan in index order keeps every score above it plus
 * the lowest-index ties, so the result is the heap path's exactly. elig lists the eligible
 * latents (ascending), shared by all rows. */
static int topk_row_large(const float *pre, const float *gate, float beta, const int *elig, int m,
                          int k, float *sc, int *pos, float *work, float *heap, int *idx)
{
    int len = 0;
    for (int t = 0; t < m; t++) {
        float s = topk_score(pre, gate, beta, elig[t]);
        if (s > 0.0f) {
            sc[len] = s;
            pos[len++] = elig[t];
        }
    }
    if (len <= k) {
        memcpy(idx, pos, (size_t)len * sizeof(int));
        return len;
    }
    memcpy(work, sc, (size_t)len * sizeof(float));
    float v = kth_largest_select(work, len, k, heap);
    int above = 0;
    for (int t = 0; t < len; t++)
        above += sc[t] > v;
    int ties = k - above, out = 0;
    for (int t = 0; t < len; t++)
        if (sc[t] > v || (sc[t] == v && ties-- > 0))
            idx[out++] = pos[t];
    return out;
}

#define TOPK_LARGE_K 64 /* from here on the O(n) selection beats the size-k heap */

void select_topk_cpu(const float *pre,     // (B, n)
                     const float *gate,    // (B, n) or NULL
                     float beta,
                     const uint8_t *mask,  // (n) or NULL
                     int B, int n, int k,
                     int *lat,             // (B, k) out
                     float *val)           // (B, k) out
{
    SF_CHECK(k >= 0);
    if (k == 0 || B == 0)
        return;
    int kk = k < n ? k : n;
    int large = kk >= TOPK_LARGE_K;
    int *elig = NULL, m = 0;
    if (large) {
        elig = malloc((size_t)n * sizeof(int));
        SF_CHECK(elig);
        for (int i = 0; i < n; i++)
            if (!mask || mask[i])
                elig[m++] = i;
    }
#pragma omp parallel
    {
        sel_cand *heap = malloc((size_t)kk * sizeof(sel_cand));
        int *idx = malloc((size_t)kk * sizeof(int));
        float *bm = malloc(((size_t)n / SEL_BLK + 1) * sizeof(float));
        float *vheap = malloc((size_t)kk * sizeof(float));
        float *sc = large ? malloc((size_t)n * sizeof(float)) : NULL;
        float *work = large ? malloc((size_t)n * sizeof(float)) : NULL;
        int *pos = large ? malloc((size_t)n * sizeof(int)) : NULL;
        SF_CHECK(heap && idx && bm && vheap && (!large || (sc && work && pos)));
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            const float *pb = pre + (size_t)b * n;
            const float *gb = gate ? gate + (size_t)b * n : NULL;
            int len = large ? topk_row_large(pb, gb, beta, elig, m, kk, sc, pos, work, vheap, idx)
                            : topk_row(pb, gb, beta, mask, n, kk, heap, idx, bm, vheap);
            int *lb = lat + (size_t)b * k;
            float *vb = val + (size_t)b * k;
            for (int t = 0; t < len; t++) {
                lb[t] = idx[t];
                vb[t] = pb[idx[t]];
            }
            for (int t = len; t < k; t++) {
                lb[t] = -1;
                vb[t] = 0.0f;
            }
        }
        free(heap);
        free(idx);
        free(bm);
        free(vheap);
        free(sc);
        free(work);
        free(pos);
    }
    free(elig);
}

/* ---- threshold rule --------------------------------------------------------------------- */

int64_t select_threshold_cpu(const float *pre, // (B, n)
                             float theta,
                             int B, int n, int64_t cap,
                             int *row_ptr,     // (B + 1) out
                             int *lat,         // (cap) out
                             float *val)       // (cap) out
{
    /* relu(pre) > theta; values that relu maps to 0 are never kept, even for theta < 0. */
    row_ptr[0] = 0;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *pb = pre + (size_t)b * n;
        int cnt = 0;
        for (int i = 0; i < n; i++)
            cnt += (pb[i] > 0.0f && pb[i] > theta);
        row_ptr[b + 1] = cnt;
    }
    int64_t total = 0;
    for (int b = 0; b < B; b++) {
        total += row_ptr[b + 1];
        SF_CHECK(total <= 0x7FFFFFFF);
        row_ptr[b + 1] = (int)total;
    }
    if (total > cap)
        return total;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *pb = pre + (size_t)b * n;
        int off = row_ptr[b];
        for (int i = 0; i < n; i++) {
            if (pb[i] > 0.0f && pb[i] > theta) {
                lat[off] = i;
                val[off] = pb[i];
                off++;
            }
        }
    }
    return total;
}
