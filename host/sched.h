/* Training schedules: learning rate (warmup then constant/linear/cosine) and k annealing. */
#ifndef SCHED_H
#define SCHED_H

#include <stdint.h>

#include "config.h"

/* Learning rate for 0-based step of total_steps: linear warmup over warmup_steps
 * (lr * (step+1) / warmup), then constant; linear decay to 0 from decay_start * total_steps;
 * or cosine from lr to lr_min over the steps after warmup. */
float sched_lr(const sf_config *c, int64_t step, int64_t total_steps);

/* k for 0-based step: linear from k_start to sae.k over k_anneal_steps (rounded to nearest),
 * sae.k when annealing is off or done. */
int sched_k(const sf_config *c, int64_t step);

#endif
