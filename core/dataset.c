/* In-memory datasets; see dataset.h. */
#include "core/dataset.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

int dataset_init(dataset *d, int n, int rank, const int *shape, clad_err *err)
{
    memset(d, 0, sizeof *d);
    if (n < 0 || n > DATASET_MAX_SAMPLES)
        return clad_err_set(err, CLAD_ETOOLARGE, "dataset: %d samples (limit %d)", n, DATASET_MAX_SAMPLES);
    if (rank < 1 || rank > DATASET_MAX_RANK)
        return clad_err_set(err, CLAD_EINVAL, "dataset: sample rank %d not in [1,%d]", rank, DATASET_MAX_RANK);
    long long dim = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] <= 0)
            return clad_err_set(err, CLAD_EINVAL, "dataset: sample dimension %d is %d", i, shape[i]);
        dim *= shape[i];
        if (dim > DATASET_MAX_DIM)
            return clad_err_set(err, CLAD_ETOOLARGE, "dataset: %lld features per sample (limit %d)", dim,
                                DATASET_MAX_DIM);
    }
    d->n = n;
    d->dim = (int)dim;
    d->rank = rank;
    memcpy(d->shape, shape, (size_t)rank * sizeof *shape);
    d->n_classes = 1;
    d->x = calloc((size_t)n * (size_t)dim + 1, sizeof *d->x);
    d->y = calloc((size_t)n + 1, sizeof *d->y);
    if (!d->x || !d->y) {
        dataset_finish(d);
        return clad_err_set(err, CLAD_ENOMEM, "dataset: cannot allocate %d x %lld floats", n, dim);
    }
    return 0;
}

void dataset_finish(dataset *d)
{
    if (!d) return;
    free(d->x);
    free(d->y);
    memset(d, 0, sizeof *d);
}

int dataset_validate(const dataset *d, clad_err *err)
{
    size_t total = (size_t)d->n * (size_t)d->dim;
    for (size_t i = 0; i < total; i++)
        if (!isfinite(d->x[i]))
            return clad_err_set(err, CLAD_EINVAL, "dataset: sample %zu feature %zu is not finite",
                                i / (size_t)d->dim, i % (size_t)d->dim);
    for (int i = 0; i < d->n; i++)
        if (d->y[i] < 0 || d->y[i] >= d->n_classes)
            return clad_err_set(err, CLAD_EINVAL, "dataset: label %d of sample %d is outside [0,%d)",
                                d->y[i], i, d->n_classes);
    return 0;
}

void dataset_count_classes(dataset *d)
{
    int k = 0;
    for (int i = 0; i < d->n; i++)
        if (d->y[i] > k) k = d->y[i];
    d->n_classes = k + 1;
}

int dataset_select(dataset *dst, const dataset *src, const int *idx, int k, clad_err *err)
{
    int rc = dataset_init(dst, k, src->rank, src->shape, err);
    if (rc) return rc;
    for (int i = 0; i < k; i++) {
        memcpy(dst->x + (size_t)i * (size_t)src->dim, src->x + (size_t)idx[i] * (size_t)src->dim,
               (size_t)src->dim * sizeof *src->x);
        dst->y[i] = src->y[idx[i]];
    }
    dst->n_classes = src->n_classes;
    return 0;
}

int dataset_sample(dataset *dst, const dataset *src, int k, unsigned long long seed, clad_err *err)
{
    if (k < 0 || k > src->n)
        return clad_err_set(err, CLAD_EINVAL, "dataset: cannot sample %d of %d samples", k, src->n);
    int *idx = malloc(((size_t)src->n + 1) * sizeof *idx);
    if (!idx) return clad_err_set(err, CLAD_ENOMEM, "dataset: out of memory");
    for (int i = 0; i < src->n; i++) idx[i] = i;
    rng r;
    rng_init(&r, seed);
    rng_shuffle(&r, idx, src->n);
    int rc = dataset_select(dst, src, idx, k, err);
    free(idx);
    return rc;
}

int dataset_append(dataset *dst, const dataset *src, clad_err *err)
{
    if (dst->n && (dst->rank != src->rank || memcmp(dst->shape, src->shape, sizeof dst->shape)))
        return clad_err_set(err, CLAD_EINVAL, "datasets of different sample shapes cannot be joined");
    dataset joined = {0};
    int rc = dataset_init(&joined, dst->n + src->n, src->rank, src->shape, err);
    if (rc) return rc;
    size_t dim = (size_t)src->dim;
    if (dst->n) {
        memcpy(joined.x, dst->x, (size_t)dst->n * dim * sizeof *joined.x);
        memcpy(joined.y, dst->y, (size_t)dst->n * sizeof *joined.y);
    }
    memcpy(joined.x + (size_t)dst->n * dim, src->x, (size_t)src->n * dim * sizeof *joined.x);
    memcpy(joined.y + dst->n, src->y, (size_t)src->n * sizeof *joined.y);
    dataset_count_classes(&joined);
    dataset_finish(dst);
    *dst = joined;
    return 0;
}
