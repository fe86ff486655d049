/* Exact batch top-k across data-parallel ranks (bselect_dist.h): histogram passes whose counts
 * are summed over the ranks, then a tie share by rank order. Four passes over pre; the local
 * work is the same as the three-pass reference plus one counting pass. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "bselect_dist.h"
#include "sf_check.h"

static inline uint32_t fbits(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof(u));
    return u;
}

static void sum_i64(const sae_dist *dd, int64_t *buf, int64_t count)
{
    if (sae_dist_on(dd))
        dd->sum_i64(dd, buf, count);
}

int bsel_dist_bucket(const int64_t *hist, int buckets, int64_t K, int64_t *above)
{
    int64_t cum = 0;
    for (int q = buckets - 1; q >= 0; q--) {
        if (cum + hist[q] >= K) {
            *above = cum;
            return q;
        }
        cum += hist[q];
    }
    *above = cum;
    return -1;
}

int64_t bsel_dist_tie_share(const sae_dist *dd, int64_t my_ties, int64_t need)
{
    int64_t before = 0;
    if (sae_dist_on(dd)) {
        int64_t *all = malloc(sizeof(int64_t) * (size_t)dd->world);
        SF_CHECK(all);
        dd->gather_i64(dd, my_ties, all);
        for (int r = 0; r < dd->rank; r++)
            before += all[r];
        free(all);
    }
    int64_t share = need - before;
    if (share < 0)
        share = 0;
    return share < my_ties ? share : my_ties;
}

/* Histogram of the positive values' keys selected by (u >> 16) == hi_bucket (any when < 0),
 * bucketed by (u >> shift) & mask; per-thread counts merged into hist (zeroed here). */
static void key_hist(const float *pre, int B, int n, int hi_bucket, int shift, uint32_t mask,
                     int64_t *hist, int buckets)
{
    int nt = omp_get_max_threads();
    uint32_t *part = calloc((size_t)nt * buckets, sizeof(uint32_t));
    SF_CHECK(part);
#pragma omp parallel num_threads(nt)
    {
        uint32_t *h = part + (size_t)omp_get_thread_num() * buckets;
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            const float *pb = pre + (size_t)b * n;
            for (int i = 0; i < n; i++) {
                if (!(pb[i] > 0.0f))
                    continue;
                uint32_t u = fbits(pb[i]);
                if (hi_bucket >= 0 && (int)(u >> 16) != hi_bucket)
                    continue;
                h[(u >> shift) & mask]++;
            }
        }
    }
    memset(hist, 0, sizeof(int64_t) * (size_t)buckets);
    for (int t = 0; t < nt; t++)
        for (int q = 0; q < buckets; q++)
            hist[q] += part[(size_t)t * buckets + q];
    free(part);
}

int select_batch_dist_cpu(const float *pre,     // (B, n)
                          int B, int n, int64_t K,
                          const sae_dist *dd,
                          int *row_ptr,         // (B + 1) out
                          int *lat,             // out
                          float *val,           // out
                          float *min_kept)
{
    row_ptr[0] = 0;
    for (int b = 0; b < B; b++)
        row_ptr[b + 1] = 0;
    *min_kept = 0.0f;
    if (K <= 0) /* K is global, so every rank returns here together */
        return 0;
    int64_t *hist = malloc(sizeof(int64_t) * BSEL_DIST_LO_BUCKETS);
    SF_CHECK(hist);
    /* Pass 1 (every rank joins, even with B = 0): the threshold's top 15 bits. */
    key_hist(pre, B, n, -1, 16, 0x7FFFu, hist, BSEL_DIST_HI_BUCKETS);
    sum_i64(dd, hist, BSEL_DIST_HI_BUCKETS);
    int64_t above_hi = 0, above_lo = 0, need = 0;
    int bk = bsel_dist_bucket(hist, BSEL_DIST_HI_BUCKETS, K, &above_hi);
    uint32_t Tb = 0; /* keep u > Tb (all positives when bk < 0), plus `share` ties u == Tb */
    if (bk >= 0) {
        /* Pass 2: the low 16 bits inside bucket bk give the exact K-th key. */
        key_hist(pre, B, n, bk, 0, 0xFFFFu, hist, BSEL_DIST_LO_BUCKETS);
        sum_i64(dd, hist, BSEL_DIST_LO_BUCKETS);
        int bl = bsel_dist_bucket(hist, BSEL_DIST_LO_BUCKETS, K - above_hi, &above_lo);
        SF_CHECK(bl >= 0);
        Tb = ((uint32_t)bk << 16) | (uint32_t)bl;
        need = K - above_hi - above_lo;
        SF_CHECK(need >= 1 && need <= hist[bl]);
    }
    free(hist);
    /* Pass 3: per-row counts above and at the key; this rank's tie share by rank order. */
    int *eq = calloc((size_t)B + 1, sizeof(int));
    SF_CHECK(eq);
    int64_t my_ties = 0;
#pragma omp parallel for schedule(static) reduction(+ : my_ties)
    for (int b = 0; b < B; b++) {
        const float *pb = pre + (size_t)b * n;
        int gt = 0, ties = 0;
        for (int i = 0; i < n; i++) {
            if (!(pb[i] > 0.0f))
                continue;
            uint32_t u = fbits(pb[i]);
            gt += u > Tb;
            ties += bk >= 0 && u == Tb;
        }
        row_ptr[b + 1] = gt;
        eq[b] = ties;
        my_ties += ties;
    }
    int64_t share = bk >= 0 ? bsel_dist_tie_share(dd, my_ties, need) : 0;
    /* Rows take their ties in order until the share is used up. */
    int64_t left = share;
    for (int b = 0; b < B; b++) {
        int take = left < eq[b] ? (int)left : eq[b];
        eq[b] = take;
        left -= take;
        row_ptr[b + 1] += row_ptr[b] + take;
    }
    /* Pass 4: write each row's kept latents in ascending order. */
    uint32_t mn_bits = 0xFFFFFFFFu;
#pragma omp parallel for schedule(static) reduction(min : mn_bits)
    for (int b = 0; b < B; b++) {
        const float *pb = pre + (size_t)b * n;
        int off = row_ptr[b], ties = eq[b];
        for (int i = 0; i < n; i++) {
            if (!(pb[i] > 0.0f))
                continue;
            uint32_t u = fbits(pb[i]);
            int keep = u > Tb;
            if (!keep && bk >= 0 && u == Tb && ties > 0) {
                keep = 1;
                ties--;
            }
            if (keep) {
                lat[off] = i;
                val[off] = pb[i];
                off++;
                if (u < mn_bits)
                    mn_bits = u;
            }
        }
    }
    free(eq);
    /* The smallest kept value over all ranks: the key itself, or (everything kept) the
     * global minimum positive value. */
    if (bk < 0 && sae_dist_on(dd)) {
        int64_t neg = -(int64_t)mn_bits;
        dd->max_i64(dd, &neg, 1);
        mn_bits = (uint32_t)(-neg);
    }
    uint32_t kb = bk >= 0 ? Tb : mn_bits;
    if (kb != 0xFFFFFFFFu)
        memcpy(min_kept, &kb, sizeof(*min_kept));
    return row_ptr[B];
}
