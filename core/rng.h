/* A small deterministic random number generator (SplitMix64 seeding a xoshiro256** state).
 * Same seed, same sequence on every machine: determinism of training depends on it. */
#ifndef CLAD_CORE_RNG_H
#define CLAD_CORE_RNG_H

#include <stdint.h>

typedef struct rng {
    uint64_t s[4];
} rng;

void rng_init(rng *r, uint64_t seed);
uint64_t rng_next(rng *r);
float rng_uniform(rng *r);                   /* [0, 1) */
float rng_normal(rng *r);                    /* standard normal (Box-Muller) */
uint32_t rng_below(rng *r, uint32_t bound);  /* uniform integer in [0, bound), unbiased */
void rng_shuffle(rng *r, int *a, int n);     /* Fisher-Yates */

#endif
