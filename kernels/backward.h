/* Sparse backward (CPU twin of backward.cu): row-sparse W_enc/W_dec gradients in O(B k d). */
#ifndef BACKWARD_H
#define BACKWARD_H

#include "sae_types.h"

/* One group of selected entries feeding one reconstruction (the main code, or AuxK's).
 * An entry (b, i, a) with i in band j (bounds[j-1] <= i < bounds[j], bounds[-1] = 0) gets the
 * upstream gradient dY[j][b] = dL/dxhat for every reconstruction that includes latent i
 * (Matryoshka: the suffix sum over prefixes g >= j; otherwise one band, bounds = {n}). */
typedef struct sae_bwd_group {
    const int *row_ptr;  // (B + 1)
    const int *lat;      // entries; -1 = padding
    const float *val;    // entries: kept activations (> 0)
    int n_bands;
    const int *bounds;   // (n_bands) ascending, last = n
    const float *dY;     // (n_bands, B, d)
    int has_bias;        // 1 if this reconstruction includes b_dec (main: yes, AuxK: no)
} sae_bwd_group;

/* Row-sparse gradients. Caller allocates rows/dW_* with cap_rows = min(n, total entries). */
typedef struct sae_grads {
    int n_rows;     // latents touched this step
    int cap_rows;
    int *rows;      // (cap_rows) touched latents, ascending
    int *slot;      // (n) latent -> index into rows, -1 if untouched
    float *dW_enc;  // (cap_rows, d)
    float *dW_dec;  // (cap_rows, d)
    float *db_enc;  // (n) dense
    float *db_dec;  // (d)
} sae_grads;

/* Exact gradients of the loss through the selected entries (selection constant):
 *   dval = dY_band[b] . W_dec[i];  dpre = dval (a > 0 for kept entries)
 *   dW_dec[i] += a * dY_band[b];   dW_enc[i] += dpre * u_b;   db_enc[i] += dpre
 *   db_dec = sum over has_bias groups of sum_b dY[0][b]  -  sum_i db_enc[i] W_enc[i]
 * Entries are grouped by latent (sorted (latent, token) pairs), so each gradient row is
 * summed in token order by one thread: results do not depend on the thread count. */
void backward_cpu(const float *u,            // (B, d) x - b_dec
                  const sae_params *p,
                  int B, int d, int n,
                  const sae_bwd_group *groups, int n_groups,
                  sae_grads *out);

/* Scratch of the CPU backward (the (latent, token) pair sort), so a backend can allocate it once.
 * backward_cpu allocates one per call; backward_cpu_ws uses the caller's (cap_entries >= the
 * total entries of all groups, padding included). */
typedef struct sae_bwd_scratch {
    int n;
    int64_t cap_entries;
    int *start;  // (n + 1) pair range of each latent
    int *cursor; // (n) fill position per latent
    int *pair;   // (3 * cap_entries) token, entry, group per pair
} sae_bwd_scratch;

void bwd_scratch_init(sae_bwd_scratch *ws, int n, int64_t cap_entries);
void bwd_scratch_free(sae_bwd_scratch *ws);
void backward_cpu_ws(const float *u,            // (B, d) x - b_dec
                     const sae_params *p,
                     int B, int d, int n,
                     const sae_bwd_group *groups, int n_groups,
                     sae_grads *out,
                     sae_bwd_scratch *ws);

#endif
