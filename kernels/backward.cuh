/* Sparse backward on the device (backward.cu): the CUDA twin of backward_cpu (kernels/backward.h).
 * Entries of all groups are sorted by latent with a stable LSD radix sort (ties keep group,
 * token order), then one block per touched latent sums its gradient rows in that order: no
 * atomics on weights, no dense n x d buffers, and bit-identical results run to run. */
#ifndef BACKWARD_CUH
#define BACKWARD_CUH

#include <stddef.h>

#include "cuda_compat.h"
#include "sae_types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SF_BWD_MAX_GROUPS 4

/* One group of entries (device pointers); as sae_bwd_group, plus `cap`, an upper bound on
 * row_ptr[B] known to the host (the slots allocated), and bounds held by value. */
typedef struct sae_bwd_group_cuda {
    const int *row_ptr;  // (B + 1)
    const int *lat;      // (cap) -1 = padding
    const float *val;    // (cap)
    int cap;
    int n_bands;
    int bounds[SAE_MAX_PREFIXES]; // ascending, last = n
    const float *dY;     // (n_bands, B, d)
    int has_bias;
} sae_bwd_group_cuda;

/* Row-sparse gradients in device memory (as sae_grads; n_rows lives on the device). */
typedef struct sae_grads_cuda {
    int cap_rows;
    int *n_rows;    // (1)
    int *rows;      // (cap_rows) touched latents, ascending
    int *slot;      // (n) latent -> row index, -1 if untouched
    float *dW_enc;  // (cap_rows, d)
    float *dW_dec;  // (cap_rows, d)
    float *db_enc;  // (n)
    float *db_dec;  // (d)
} sae_grads_cuda;

/* Scratch of the sort and of the by-latent view, sized for cap_entries entries in all groups
 * together, B <= max_B tokens. After bwd_sort_cuda: entries s in [0, count) sorted by latent;
 * key[s] = latent (n = padding, sorted last); ref[s] = flat slot (group offset + position);
 * ent_tok/ent_gb/ent_val: token, group*SAE_MAX_PREFIXES+band and value of sorted entry s;
 * the touched latents are rows[0..*n_rows) of the grads given to the sort, with their entries
 * in [seg_start[r], seg_end[r]). */
typedef struct sae_bwd_ws {
    int n, d, max_B, cap_entries, cap_rows;
    int *keys[2], *refs[2]; // (cap_entries) radix ping-pong
    int *tok;               // (cap_entries) token of each flat slot
    int *hist;              // (256 * tiles)
    int *flags;             // (cap_entries)
    int *scan;              // (cap_entries + 1)
    int *key, *ref;         // the sorted arrays (point into keys/refs)
    int *ent_tok, *ent_gb;  // (cap_entries)
    float *ent_val, *dpre;  // (cap_entries)
    int *seg_start, *seg_end; // (cap_rows)
    double *colpart;        // (col_chunks, d)
    int col_chunks;
} sae_bwd_ws;

void bwd_ws_alloc(sae_bwd_ws *ws, int n, int d, int max_B, int cap_entries);
void bwd_ws_free(sae_bwd_ws *ws);
/* cap_rows = min(n, cap_entries). */
void grads_cuda_alloc(sae_grads_cuda *g, int n, int d, int cap_rows);
void grads_cuda_free(sae_grads_cuda *g);

/* Sorts the entries of the groups by latent and fills the by-latent view: ws (sorted entries,
 * segments) and out->rows, out->slot, out->n_rows. Part of backward_cuda; exposed so that
 * featstats can reuse the same deterministic order. */
void bwd_sort_cuda(sae_bwd_ws *ws, const sae_bwd_group_cuda *groups, int n_groups,
                   int B, int n, sae_grads_cuda *out, cudaStream_t stream);

/* The exact sparse gradients of backward.h. p holds device pointers. */
void backward_cuda(sae_bwd_ws *ws,
                   const float *u,  // (B, d) x - b_dec
                   const sae_params *p,
                   int B, int d, int n,
                   const sae_bwd_group_cuda *groups, int n_groups,
                   sae_grads_cuda *out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
