/* Deterministic data transforms that turn one dataset into a new task: rotation, pixel permutation,
 * inversion, additive noise, label permutation and class selection.
 *
 * Every transform is a pure function of its parameters and seed, so the train and test splits of a task get
 * the same rotation, the same pixel permutation and the same label permutation. Noise is the exception by
 * nature: it is drawn per sample, from the seed mixed with a caller-given salt (use a different salt per
 * split so two splits do not share noise). Pixel values are in [0, 1] (see core/dataset.h).
 */
#ifndef CLAD_CORE_TRANSFORMS_H
#define CLAD_CORE_TRANSFORMS_H

#include <stdint.h>

#include "core/dataset.h"
#include "core/error.h"

#define TRANSFORM_MAX_CLASSES 1024

typedef enum transform_op {
    TRANSFORM_ROTATE = 1,         /* degrees: counter-clockwise as displayed, about the image centre */
    TRANSFORM_PERMUTE_PIXELS,     /* fraction of pixel positions (0..1) moved by one fixed permutation */
    TRANSFORM_INVERT,             /* x -> 1 - x */
    TRANSFORM_NOISE,              /* x -> clamp(x + sigma * N(0,1), 0, 1) */
    TRANSFORM_PERMUTE_LABELS,     /* labels renamed by a fixed permutation with no fixed point */
    TRANSFORM_CLASSES,            /* keep samples of the listed labels, renumbered 0.. in list order */
} transform_op;

typedef struct transform {
    transform_op op;
    double degrees;               /* rotate */
    double fraction;              /* permute_pixels */
    double sigma;                 /* noise */
    uint64_t seed;                /* permute_pixels, noise, permute_labels */
    int n_keep;                   /* classes: how many labels are kept */
    int keep[TRANSFORM_MAX_CLASSES];
} transform;

/* Op name ("rotate", "permute_pixels", "invert", "noise", "permute_labels", "classes") and back. */
const char *transform_op_name(transform_op op);
int transform_op_parse(transform_op *op, const char *name, clad_err *err);
/* Checks the parameters of t (ranges, finiteness, distinct class labels), naming the bad one. */
int transform_validate(const transform *t, clad_err *err);

/* Applies t to d in place (classes replaces d's samples and sets n_classes to n_keep). Rotation needs image
 * data (rank 3); the pixel permutation works on images (positions shared by the channels) and on flat
 * feature vectors. salt only matters to noise. Errors: CLAD_EINVAL with a message naming the problem
 * (a label outside the dataset's classes, no sample left after `classes`, ...), CLAD_ENOMEM. */
int transform_apply(dataset *d, const transform *t, uint64_t salt, clad_err *err);

/* ---- the kernels, on plain arrays ---- */

/* dst (C,H,W) = src (C,H,W) rotated by degrees about the centre ((W-1)/2, (H-1)/2), bilinear, zero fill
 * outside the source. dst and src must not overlap. */
void transform_rotate_image(float *dst, const float *src, int C, int H, int W, double degrees);

/* perm (n): a permutation of 0..n-1 that moves exactly round(fraction * n) positions (all of them when that
 * count is at least 2, none when it is below 2): the chosen positions are cycled by one random cycle.
 * dst[i] = src[perm[i]]. Deterministic in seed. */
void transform_pixel_permutation(int *perm, int n, double fraction, uint64_t seed);

/* perm (k): a permutation of 0..k-1 with no fixed point (k >= 2; the identity for k < 2), deterministic in
 * seed; label y becomes perm[y]. */
void transform_label_permutation(int *perm, int k, uint64_t seed);

#endif
