/* Helpers shared by the compose_ tests (tied, fusion, prune, merge). */
#ifndef CLAD_TESTS_TEST_COMPOSE_H
#define CLAD_TESTS_TEST_COMPOSE_H

#include <stdint.h>

#include "core/dataset.h"
#include "core/model.h"
#include "tests/model_check.h"

model *compose_small_vit(uint64_t seed);
model *compose_small_mlp(int in, int h, int layers, int classes, uint64_t seed);
/* Ranks r on every default target (the hidden linears of an mlp; every block linear of a vit). */
void compose_default_ranks(int *ranks, const model *m, int r);
/* Fills every tensor of a (not the head) with N(0, s) values. */
void compose_randomise(adapter *a, float s, uint64_t seed);
/* Probabilities of a on n random inputs (caller frees). */
float *compose_probs(const model *m, const adapter *a, int n, uint64_t seed);
/* Labels from a quadrant of two projections of x (4 classes); `variant` picks the projections. */
void compose_quadrant_data(dataset *d, int n, int in, int variant, uint64_t seed);

#endif
