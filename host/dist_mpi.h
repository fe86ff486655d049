/* Data-parallel ranks over MPI: start-up under mpirun/srun, the collectives behind sae_dist
 * (kernels/dist.h), a watchdog that ends a job whose ranks stop answering, and the host-side
 * steps the trainer needs (one state for every rank at start, statistics combined at saves).
 *
 * A process started without a launcher never calls MPI: it is rank 0 of 1. Under a launcher
 * (OpenMPI's mpirun, or srun with PMIx/PMI2) MPI starts, and world may still be 1. */
#ifndef DIST_MPI_H
#define DIST_MPI_H

#include <stdint.h>

#include "../kernels/dist.h"
#include "../kernels/sae_types.h"
#include "sf_err.h"

/* 1 when the environment says a launcher started this process (mpirun, srun). */
int dist_launched(void);

/* Starts MPI when launched and fills dd (rank 0 of 1 otherwise). timeout_s: how long any
 * collective may wait before the watchdog stops this rank with a message naming it. */
int dist_open(sae_dist *dd, int timeout_s, sf_err *err);
/* Finalizes MPI (after every rank reached the end). */
void dist_close(sae_dist *dd);
/* Raises the watchdog limit from now on (the config is read after start-up). */
void dist_set_timeout(sae_dist *dd, int timeout_s);

/* Every rank waits for all (watchdog-covered). */
void dist_barrier(const sae_dist *dd);
/* 1 on every rank if any rank passed a non-zero flag (a stop signal seen by one rank). */
int dist_any(const sae_dist *dd, int flag);
/* Largest value over the ranks. */
int64_t dist_max(const sae_dist *dd, int64_t v);

/* Rank 0's parameters and state to every rank (so all start from one state). */
void dist_bcast_params(const sae_dist *dd, sae_params *p, int d, int n);
void dist_bcast_state(const sae_dist *dd, sae_state *s, int d, int n);
void dist_bcast_bytes(const sae_dist *dd, void *buf, int64_t bytes);

/* The statistics each rank accumulated over its own rows, combined on every rank: fire_count,
 * act_sum, gate_sum summed; act_max, last_fired_step maximised. */
void dist_combine_stats(const sae_dist *dd, sae_state *s, int n);
/* After a resume on rank r > 0: the summed statistics start from 0 there (rank 0 carries the
 * loaded totals), so the next combine counts them once. */
void dist_zero_partials(sae_state *s, int n);

/* 0 when every rank holds bit-identical parameters; else the first rank that differs from 0. */
int dist_params_diverged(const sae_dist *dd, const sae_params *p, int d, int n);

#endif
