/* Helpers shared by the model tests (test_model.c, test_compose_*.c). */
#ifndef CLAD_TESTS_MODEL_CHECK_H
#define CLAD_TESTS_MODEL_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

/* x[i] = s * N(0, 1), deterministic in seed. */
void fill_normal(float *x, size_t n, float s, uint64_t seed);

/* Compares the analytic gradient of the mean loss with central differences on up to `probes` random
 * entries of every tensor of the trained set: the base's when a is NULL, else the adapter's (any kind). */
void check_model_grads(model *m, adapter *a, int N, int probes);

#endif
