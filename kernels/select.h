/* Latent selection (CPU twins of select.cu / bselect.cu): row top-k, batch top-k, threshold.
 *
 * Every selection writes a CSR code: entries of token b are [row_ptr[b], row_ptr[b+1]),
 * listed in ascending latent order; lat = -1 marks padding (val = 0). val is always the
 * activation a = relu(pre), never the score. */
#ifndef SELECT_H
#define SELECT_H

#include <stdint.h>

/* Row top-k. score_i = relu(pre_i) * (gate ? 1 + beta * gate_i : 1); latent i is eligible
 * only if mask == NULL or mask[i] != 0. Keeps the k largest eligible scores with score > 0,
 * ties to the lower index. Row b's slots are lat[b*k .. b*k+k): kept latents in ascending
 * order, then padding. (So row_ptr[b] = b*k implicitly.) */
void select_topk_cpu(const float *pre,     // (B, n)
                     const float *gate,    // (B, n) or NULL
                     float beta,
                     const uint8_t *mask,  // (n) or NULL
                     int B, int n, int k,
                     int *lat,             // (B, k) out
                     float *val);          // (B, k) out

/* Batch top-k: the K largest relu(pre) > 0 over all B*n values, ties to the lower flat
 * index b*n + i. Returns the number kept (<= K). *min_kept = smallest kept value (0 if none). */
int select_batch_cpu(const float *pre,     // (B, n)
                     int B, int n, int64_t K,
                     int *row_ptr,         // (B + 1) out
                     int *lat,             // (K) out
                     float *val,           // (K) out
                     float *min_kept);

/* The two paths select_batch_cpu takes, same contract: one pass over pre with a bound sampled
 * from every (B/256)-th row (returns -1, writing nothing useful, when the bound does not hold:
 * fewer than K values above it or more than 8K), and the three-pass reference it falls back to. */
int select_batch_1pass_cpu(const float *pre, int B, int n, int64_t K, // pre (B, n)
                           int *row_ptr, int *lat, float *val, float *min_kept);
int select_batch_3pass_cpu(const float *pre, int B, int n, int64_t K, // pre (B, n)
                           int *row_ptr, int *lat, float *val, float *min_kept);

/* Threshold rule (batchtopk/matryoshka inference): keep latents with relu(pre) > theta.
 * Returns the number of entries the code needs; writes lat/val only if that is <= cap
 * (row_ptr is always written). */
int64_t select_threshold_cpu(const float *pre, // (B, n)
                             float theta,
                             int B, int n, int64_t cap,
                             int *row_ptr,     // (B + 1) out
                             int *lat,         // (cap) out
                             float *val);      // (cap) out

#endif
