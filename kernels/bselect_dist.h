/* Batch top-k over the union of every rank's rows (data-parallel batchtopk/matryoshka), exactly.
 *
 * A radix selection on the float bit patterns whose histograms are summed over the ranks:
 * pass 1 buckets the positive values by their top 15 bits, pass 2 the threshold bucket by its
 * low 16 bits, which gives the exact K-th largest key T; a gather of each rank's count of
 * values equal to T then hands the ties to the lower (rank, local flat index). The CUDA
 * backend can build the same histograms on the device and reuse the host-side steps below. */
#ifndef BSELECT_DIST_H
#define BSELECT_DIST_H

#include <stdint.h>

#include "dist.h"

#define BSEL_DIST_HI_BUCKETS (1 << 15) /* pass 1: bits >> 16 of a positive float */
#define BSEL_DIST_LO_BUCKETS (1 << 16) /* pass 2: bits & 0xFFFF within the pass-1 bucket */

/* Same contract as select_batch_cpu (select.h) for this rank's B rows, with K counted over
 * every rank's rows; dd may be NULL or one rank (then it equals select_batch_cpu exactly).
 * lat/val need room for min(K, B n) entries. Returns this rank's kept count; *min_kept is the
 * global threshold value (identical on every rank; 0 when nothing is kept anywhere). */
int select_batch_dist_cpu(const float *pre,     // (B, n)
                          int B, int n, int64_t K,
                          const sae_dist *dd,
                          int *row_ptr,         // (B + 1) out
                          int *lat,             // out
                          float *val,           // out
                          float *min_kept);

/* Host-side steps shared with a device implementation. Scanning hist (buckets ascending) from
 * the top: the bucket in which the running count reaches K, and the count strictly above it
 * in *above. Returns -1 when the whole histogram holds <= K values (keep everything). */
int bsel_dist_bucket(const int64_t *hist, int buckets, int64_t K, int64_t *above);

/* This rank's share of the `need` ties at the threshold key, given its own tie count: ranks
 * before it take theirs first (one gather). */
int64_t bsel_dist_tie_share(const sae_dist *dd, int64_t my_ties, int64_t need);

#endif
