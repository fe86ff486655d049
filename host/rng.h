/* Seeded, splittable random numbers (xoshiro256**): the only RNG the project uses, so runs are reproducible. */
#ifndef RNG_H
#define RNG_H

#include <stdint.h>

typedef struct sf_rng {
    uint64_t s[4];
} sf_rng;

/* Seeds from (seed, stream): different streams give independent sequences. */
void rng_seed(sf_rng *r, uint64_t seed, uint64_t stream);
uint64_t rng_next(sf_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double rng_uniform(sf_rng *r);
/* Uniform integer in [0, bound), unbiased. */
uint64_t rng_below(sf_rng *r, uint64_t bound);
/* Standard normal (Box-Muller, no cached second value: state is just s[4]). */
double rng_normal(sf_rng *r);

#endif
