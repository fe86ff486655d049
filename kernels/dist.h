/* Data-parallel collectives as the backends see them: the contract between a backend's step and
 * whatever connects the ranks (host/dist.c over MPI; the CUDA backend adds NCCL for device buffers).
 *
 * A backend with be->dist == NULL (or world == 1) is a one-rank run and makes no call here.
 * With world > 1, every rank holds identical parameters and optimizer state, gets its own part
 * of each global batch (B_r rows, sum over ranks = the global B), and train_step runs this
 * step order (backend.h's, with the collectives marked *):
 *
 *   1.  dead mask from since_fired (identical on every rank)
 *   2-3 encoder, gate on the local rows
 *   5*  centre first: sum_f64 over [column sums of x (d), rows] -> global mean and B;
 *       sum_f64 over the local sum |x - mean|^2 -> global den
 *   4*  topk/gsae: local row selection; batchtopk/matryoshka: dist_select_batch over the global
 *       batch with K = B_global k (two histogram sums and one gather, see bselect_dist.h)
 *   6-7 reconstructions, AuxK on the local rows with the global den
 *   8*  backward into one dense, contiguous gradient buffer laid out as
 *       [dW_enc (n, d) | dW_dec (n, d) | db_enc (n) | db_dec (d) | fired (n)]
 *       (fired = tokens of the local rows on which each latent fired), summed by ONE sum_f32
 *       (NCCL all-reduce on the device buffer in the CUDA backend); then decoder projection,
 *       norm and clip scale on the summed gradient (identical everywhere)
 *   9   Adam (identical everywhere)
 *   10  featstats on the local rows; since_fired[i] = 0 if the global fired[i] > 0, else
 *       += B_global; fire_count, act_sum, gate_sum stay per-rank partial sums and act_max,
 *       last_fired_step per-rank maxima, combined only when the trainer saves (dist_state_*)
 *   *   metrics: sum_f64 over the step's sums (reconstruction error per prefix, AuxK error,
 *       entries, gw sums), so every rank reports the global step's metrics
 *
 * eval_batch centres with the global mean and adds the global batch's sums to acc on every
 * rank (so acc is identical everywhere; the caller must not reduce it again). encode is local.
 * Ties in the batch selection go to the lower (rank, local flat index): with the stream's rank
 * striding that differs from the one-rank order only for exactly equal values at the threshold. */
#ifndef DIST_H
#define DIST_H

#include <stdint.h>

typedef struct sae_dist sae_dist;

struct sae_dist {
    int rank, world;
    int local_rank;  /* rank among this node's ranks: the CUDA device to use */
    /* In-place sums over all ranks of host buffers (every rank gets the result). */
    void (*sum_f32)(const sae_dist *dd, float *buf, int64_t count);
    void (*sum_f64)(const sae_dist *dd, double *buf, int64_t count);
    void (*sum_i64)(const sae_dist *dd, int64_t *buf, int64_t count);
    void (*max_i64)(const sae_dist *dd, int64_t *buf, int64_t count);
    void (*max_f32)(const sae_dist *dd, float *buf, int64_t count);
    /* all[r] = rank r's mine, on every rank. */
    void (*gather_i64)(const sae_dist *dd, int64_t mine, int64_t *all); // all: (world)
    /* Copies root's bytes to every rank (e.g. an ncclUniqueId). */
    void (*bcast)(const sae_dist *dd, void *buf, int64_t bytes, int root);
    void *ctx;
};

static inline int sae_dist_on(const sae_dist *dd)
{
    return dd != 0 && dd->world > 1;
}

#endif
