/* Task-making data transforms; see transforms.h. */
#include "core/transforms.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

static const char *const op_names[] = {
    [TRANSFORM_ROTATE] = "rotate",
    [TRANSFORM_PERMUTE_PIXELS] = "permute_pixels",
    [TRANSFORM_INVERT] = "invert",
    [TRANSFORM_NOISE] = "noise",
    [TRANSFORM_PERMUTE_LABELS] = "permute_labels",
    [TRANSFORM_CLASSES] = "classes",
};
#define N_OPS ((int)(sizeof op_names / sizeof op_names[0]))

const char *transform_op_name(transform_op op)
{
    return (int)op > 0 && (int)op < N_OPS ? op_names[op] : "unknown";
}

int transform_op_parse(transform_op *op, const char *name, clad_err *err)
{
    for (int i = 1; i < N_OPS; i++)
        if (!strcmp(name, op_names[i])) {
            *op = (transform_op)i;
            return 0;
        }
    return clad_err_set(err, CLAD_EINVAL,
                        "unknown transform '%s' (known: rotate, permute_pixels, invert, noise, permute_labels, "
                        "classes)", name);
}

int transform_validate(const transform *t, clad_err *err)
{
    switch (t->op) {
    case TRANSFORM_ROTATE:
        if (!isfinite(t->degrees) || fabs(t->degrees) > 36000.0)
            return clad_err_set(err, CLAD_EINVAL, "rotate: degrees must be a finite number within +-36000");
        return 0;
    case TRANSFORM_PERMUTE_PIXELS:
        if (!(t->fraction >= 0.0 && t->fraction <= 1.0))
            return clad_err_set(err, CLAD_EINVAL, "permute_pixels: fraction %g is outside [0, 1]", t->fraction);
        return 0;
    case TRANSFORM_NOISE:
        if (!(t->sigma >= 0.0 && t->sigma <= 100.0))
            return clad_err_set(err, CLAD_EINVAL, "noise: sigma %g is outside [0, 100]", t->sigma);
        return 0;
    case TRANSFORM_INVERT:
    case TRANSFORM_PERMUTE_LABELS:
        return 0;
    case TRANSFORM_CLASSES:
        if (t->n_keep < 1 || t->n_keep > TRANSFORM_MAX_CLASSES)
            return clad_err_set(err, CLAD_EINVAL, "classes: the list must hold 1 to %d labels",
                                TRANSFORM_MAX_CLASSES);
        for (int i = 0; i < t->n_keep; i++) {
            if (t->keep[i] < 0 || t->keep[i] >= TRANSFORM_MAX_CLASSES)
                return clad_err_set(err, CLAD_EINVAL, "classes: label %d is outside [0, %d)", t->keep[i],
                                    TRANSFORM_MAX_CLASSES);
            for (int j = 0; j < i; j++)
                if (t->keep[j] == t->keep[i])
                    return clad_err_set(err, CLAD_EINVAL, "classes: label %d is listed twice", t->keep[i]);
        }
        return 0;
    }
    return clad_err_set(err, CLAD_EINVAL, "unknown transform op %d", (int)t->op);
}

/* ---- kernels ---- */

/* Snaps coordinates that are integers up to trigonometric rounding (cos 90 deg is 6e-17, not 0), so
 * quarter turns move pixels exactly. */
static double snap(double v)
{
    double r = nearbyint(v);
    return fabs(v - r) < 1e-9 ? r : v;
}

void transform_rotate_image(float *dst, const float *src, int C, int H, int W, double degrees)
{
    double th = degrees * (3.14159265358979323846 / 180.0), c = cos(th), s = sin(th);
    double cx = (W - 1) * 0.5, cy = (H - 1) * 0.5;
    size_t plane = (size_t)H * (size_t)W;
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) {
            /* Inverse map: the source point that lands on (x, y). With y pointing down, a counter-clockwise
             * turn as displayed sends (dx, dy) to (dx c + dy s, -dx s + dy c); we invert that. */
            double dx = x - cx, dy = y - cy;
            double xs = snap(cx + dx * c - dy * s), ys = snap(cy + dx * s + dy * c);
            double fx0 = floor(xs), fy0 = floor(ys);
            int x0 = (int)fx0, y0 = (int)fy0;
            double wx = xs - fx0, wy = ys - fy0;
            double w[4] = {(1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy};
            int px[4] = {x0, x0 + 1, x0, x0 + 1}, py[4] = {y0, y0, y0 + 1, y0 + 1};
            for (int ch = 0; ch < C; ch++) {
                const float *sp = src + (size_t)ch * plane;
                double v = 0.0;
                for (int k = 0; k < 4; k++)
                    if (w[k] != 0.0 && px[k] >= 0 && px[k] < W && py[k] >= 0 && py[k] < H)
                        v += w[k] * (double)sp[(size_t)py[k] * W + px[k]];
                dst[(size_t)ch * plane + (size_t)y * W + x] = (float)v;
            }
        }
    }
}

/* Permutes the k chosen positions (a random ordering) by one cycle: chosen[i] takes chosen[i+1]'s value. */
static void cycle_positions(int *perm, const int *chosen, int k)
{
    for (int i = 0; i < k; i++) perm[chosen[i]] = chosen[(i + 1) % k];
}

void transform_pixel_permutation(int *perm, int n, double fraction, uint64_t seed)
{
    for (int i = 0; i < n; i++) perm[i] = i;
    long k = lround(fraction * n);
    if (k < 2) return;
    int *order = malloc((size_t)n * sizeof *order);
    if (!order) abort(); /* n is an image size, bounded by DATASET_MAX_DIM */
    for (int i = 0; i < n; i++) order[i] = i;
    rng r;
    rng_init(&r, seed);
    rng_shuffle(&r, order, n);
    cycle_positions(perm, order, (int)k);
    free(order);
}

void transform_label_permutation(int *perm, int k, uint64_t seed)
{
    transform_pixel_permutation(perm, k, 1.0, seed ^ 0x6c6162656c73ULL);
}

/* ---- applying to a dataset ---- */

static int apply_rotate(dataset *d, const transform *t, clad_err *err)
{
    if (d->rank != 3)
        return clad_err_set(err, CLAD_EINVAL, "rotate needs images (C,H,W); this data has flat samples");
    float *tmp = malloc((size_t)d->dim * sizeof *tmp);
    if (!tmp) return clad_err_set(err, CLAD_ENOMEM, "rotate: out of memory");
    for (int i = 0; i < d->n; i++) {
        float *x = d->x + (size_t)i * d->dim;
        transform_rotate_image(tmp, x, d->shape[0], d->shape[1], d->shape[2], t->degrees);
        memcpy(x, tmp, (size_t)d->dim * sizeof *x);
    }
    free(tmp);
    return 0;
}

static int apply_permute_pixels(dataset *d, const transform *t, clad_err *err)
{
    int C = d->rank == 3 ? d->shape[0] : 1, P = d->dim / C;
    int *perm = malloc((size_t)P * sizeof *perm);
    float *tmp = malloc((size_t)d->dim * sizeof *tmp);
    if (!perm || !tmp) {
        free(perm);
        free(tmp);
        return clad_err_set(err, CLAD_ENOMEM, "permute_pixels: out of memory");
    }
    transform_pixel_permutation(perm, P, t->fraction, t->seed);
    for (int i = 0; i < d->n; i++) {
        float *x = d->x + (size_t)i * d->dim;
        for (int ch = 0; ch < C; ch++)
            for (int p = 0; p < P; p++) tmp[(size_t)ch * P + p] = x[(size_t)ch * P + perm[p]];
        memcpy(x, tmp, (size_t)d->dim * sizeof *x);
    }
    free(perm);
    free(tmp);
    return 0;
}

static int apply_classes(dataset *d, const transform *t, clad_err *err)
{
    int map[TRANSFORM_MAX_CLASSES];
    for (int i = 0; i < TRANSFORM_MAX_CLASSES; i++) map[i] = -1;
    for (int i = 0; i < t->n_keep; i++) {
        if (t->keep[i] >= d->n_classes)
            return clad_err_set(err, CLAD_EINVAL, "classes: label %d is not in the data (%d classes)", t->keep[i],
                                d->n_classes);
        map[t->keep[i]] = i;
    }
    int kept = 0;
    for (int i = 0; i < d->n; i++) {
        int y = d->y[i];
        int to = y >= 0 && y < TRANSFORM_MAX_CLASSES ? map[y] : -1;
        if (to < 0) continue;
        if (kept != i) memmove(d->x + (size_t)kept * d->dim, d->x + (size_t)i * d->dim, (size_t)d->dim * sizeof *d->x);
        d->y[kept++] = to;
    }
    if (!kept) return clad_err_set(err, CLAD_EINVAL, "classes: no sample has one of the %d listed labels", t->n_keep);
    d->n = kept;
    d->n_classes = t->n_keep;
    return 0;
}

int transform_apply(dataset *d, const transform *t, uint64_t salt, clad_err *err)
{
    int rc = transform_validate(t, err);
    if (rc) return rc;
    size_t total = (size_t)d->n * (size_t)d->dim;
    switch (t->op) {
    case TRANSFORM_ROTATE:
        return apply_rotate(d, t, err);
    case TRANSFORM_PERMUTE_PIXELS:
        return apply_permute_pixels(d, t, err);
    case TRANSFORM_INVERT:
        for (size_t i = 0; i < total; i++) d->x[i] = 1.0f - d->x[i];
        return 0;
    case TRANSFORM_NOISE: {
        rng r;
        /* The salt (one per split) keeps train and test noise independent under one seed. */
        rng_init(&r, t->seed ^ (salt * 0x9e3779b97f4a7c15ULL));
        float sigma = (float)t->sigma;
        for (size_t i = 0; i < total; i++) {
            float v = d->x[i] + sigma * rng_normal(&r);
            d->x[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
        return 0;
    }
    case TRANSFORM_PERMUTE_LABELS: {
        if (d->n_classes > TRANSFORM_MAX_CLASSES)
            return clad_err_set(err, CLAD_EINVAL, "permute_labels: %d classes (limit %d)", d->n_classes,
                                TRANSFORM_MAX_CLASSES);
        int perm[TRANSFORM_MAX_CLASSES];
        transform_label_permutation(perm, d->n_classes, t->seed);
        for (int i = 0; i < d->n; i++)
            if (d->y[i] < 0 || d->y[i] >= d->n_classes)
                return clad_err_set(err, CLAD_EINVAL, "permute_labels: label %d of sample %d is outside [0, %d)",
                                    d->y[i], i, d->n_classes);
        for (int i = 0; i < d->n; i++) d->y[i] = perm[d->y[i]];
        return 0;
    }
    case TRANSFORM_CLASSES:
        return apply_classes(d, t, err);
    }
    return clad_err_set(err, CLAD_EINVAL, "unknown transform op %d", (int)t->op);
}
