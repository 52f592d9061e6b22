/* An in-memory labelled dataset: the one type every reader produces and every trainer consumes.
 *
 * Samples are float rows (n, dim); images are stored (C,H,W) per sample with pixel values in [0,1]
 * (U8 sources are divided by 255). Labels are ints in [0, n_classes). The dataset owns x and y.
 */
#ifndef CLAD_CORE_DATASET_H
#define CLAD_CORE_DATASET_H

#include <stddef.h>

#include "core/error.h"

#define DATASET_MAX_RANK 3
/* Hard limits that keep a request-sized allocation bounded. */
#define DATASET_MAX_SAMPLES 10000000
#define DATASET_MAX_DIM (1 << 20)
#define DATASET_MAX_CLASSES 100000

typedef struct dataset {
    int n;                        /* samples */
    int dim;                      /* floats per sample = product of shape */
    int rank;                     /* 1 for flat features, 3 for images (C,H,W) */
    int shape[DATASET_MAX_RANK];  /* per-sample shape */
    int n_classes;                /* 1 + the largest label (at least 1) */
    float *x;                     /* (n, dim) */
    int *y;                       /* (n) */
} dataset;

/* Allocates x and y for n samples of the given shape (zeroed). Returns 0 or CLAD_ENOMEM/CLAD_EINVAL. */
int dataset_init(dataset *d, int n, int rank, const int *shape, clad_err *err);
void dataset_finish(dataset *d);   /* frees x and y; accepts a zeroed or finished dataset */

/* Checks every value is finite and every label in [0, n_classes); names the first bad sample. */
int dataset_validate(const dataset *d, clad_err *err);
/* Sets n_classes to 1 + max label. */
void dataset_count_classes(dataset *d);
/* Appends src's samples to dst (a zeroed dst takes src's shape; otherwise the shapes must match). */
int dataset_append(dataset *dst, const dataset *src, clad_err *err);
/* dst = the samples idx[0..k) of src (copies). */
int dataset_select(dataset *dst, const dataset *src, const int *idx, int k, clad_err *err);
/* dst = the first k samples of src after a seeded shuffle (k <= src->n). */
int dataset_sample(dataset *dst, const dataset *src, int k, unsigned long long seed, clad_err *err);

#endif
