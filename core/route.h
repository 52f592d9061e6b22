/* Routing: which task an input belongs to, decided from statistics of the frozen base's features.
 *
 * Features are the base's activations at every depth (model_ws_depth_features: every hidden layer of an
 * MLP; each ViT block's token mean and the final class token), d of them. While a task trains,
 * route_stats_compute runs the frozen base once over the task's data and keeps, per class, the number of
 * samples and the mean feature (or the means of up to k k-means components of the class), and the task's
 * within-class scatter S = sum_c sum_{i in c} (f_i - mu_c)(f_i - mu_c)^T. These are sums over many samples:
 * no sample is kept, and classes or components with fewer than ROUTE_MIN_CLASS_SAMPLES samples are left out
 * (their mean would be too close to one sample's features). The size depends on d and the class and
 * component counts only: (K + 2M + M d + d (d + 1) / 2) floats.
 *
 * A router over T tasks pools their scatters into one covariance shared by every class of every task (LDA;
 * route_config.pool < 1 blends in each task's own), shrinks it towards a scaled identity,
 * Sigma_s = (1 - g) Sigma + g (tr Sigma / d) I, and keeps its whitening W (Sigma_s^-1 = W^T W, W lower
 * triangular). An input's features f score each class c (of any task) by the Gaussian log-density
 *     log p(f, c) = -|W f - W mu_c|^2 / 2 - log det(Sigma_s) / 2 + log prior_c,   prior_c = 1 / (T K_t)
 * (tasks equally likely, and classes within a task); the class posterior is the softmax over the union of
 * classes, and a task's posterior is the sum over its classes: the routing confidence. The Mahalanobis
 * distance to the nearest class mean, sqrt(min_c |W f - W mu_c|^2 / d), is about 1 for inputs like the
 * training data and grows for inputs unlike every task (a threshold on it reports "no match").
 * Scoring costs one base forward plus O(d^2 / 2 + d C) per input. docs/METHODS.md (section 6) has the why.
 */
#ifndef CLAD_CORE_ROUTE_H
#define CLAD_CORE_ROUTE_H

#include <stddef.h>

#include "core/dataset.h"
#include "core/error.h"
#include "core/model.h"

#define ROUTE_MIN_CLASS_SAMPLES 8
#define ROUTE_SHRINK 0.001
#define ROUTE_POOL 1.0
#define ROUTE_MAX_CLASSES 4096   /* classes over all tasks of one task_router */

#define ROUTE_COMPONENTS 1        /* components per class by default */
#define ROUTE_MAX_COMPONENTS 64

typedef struct route_stats {
    int dim;           /* feature dimension (route_feature_dim of the base) */
    int n_classes;     /* the task's classes K */
    int n_comp;        /* M: components (sub-clusters of the classes), each of >= ROUTE_MIN_CLASS_SAMPLES */
    float *count;      /* (K) samples per class; 0: unseen or left out */
    int *comp_class;   /* (M) the class of each component */
    float *comp_count; /* (M) samples per component */
    float *mean;       /* (M,dim) component means of the features */
    float *scatter;    /* (dim,dim) within-component scatter, symmetric */
} route_stats;

/* Zeroed stats of the given shape (caller memory). Errors: CLAD_EINVAL (sizes), CLAD_ENOMEM. */
int route_stats_init(route_stats *rs, int dim, int n_classes, int n_comp, clad_err *err);
void route_stats_finish(route_stats *rs);   /* accepts zeroed or finished stats */
/* The stats of dataset d (labels in [0, n_classes)) under base: one base forward over d, each class split
 * into up to `components` sub-clusters by k-means (1: the class mean alone). rs is initialised here.
 * Errors: CLAD_EINVAL (no class with enough samples, components out of range), CLAD_ENOMEM. base is only
 * read. */
int route_stats_compute(route_stats *rs, const model *base, const dataset *d, int n_classes, int components,
                        clad_err *err);
/* Bytes the stats take when stored (float32, the scatter as its upper triangle): (K + 2M + M d + d(d+1)/2) * 4. */
size_t route_stats_bytes(const route_stats *rs);
/* Classes with samples. */
int route_stats_seen(const route_stats *rs);

/* The routing features' dimension d for base m. */
int route_feature_dim(const model *m);
/* Features (n, route_feature_dim) of n inputs x under the base alone, in batches of ws's size; ws must fit
 * the base (model_ws_create_for(base, NULL, ...)). */
void route_base_features(float *feat, model_ws *ws, const model *base, const float *x, int n);

typedef struct task_router task_router;

typedef struct route_config {
    double shrink;  /* g in [0, 1]: weight of the scaled identity in each covariance (ROUTE_SHRINK) */
    double pool;    /* in [0, 1]: 1 = one covariance shared by every task (LDA, the default); below 1 each task
                       gets pool * pooled + (1 - pool) * its own (regularised discriminant analysis), at
                       one d x d product per task per input instead of one in all */
} route_config;
void route_config_default(route_config *c);

/* A router over n_tasks tasks' stats (borrowed only during the call); cfg NULL = defaults. Errors:
 * CLAD_EINVAL (no tasks, dimensions differ, no class with samples, too few samples for a covariance, a
 * setting out of range), CLAD_ETOOLARGE (over ROUTE_MAX_CLASSES classes), CLAD_ENOMEM. */
task_router *task_router_create(const route_stats *const *tasks, int n_tasks, const route_config *cfg,
                                clad_err *err);
void task_router_destroy(task_router *r);
int task_router_dim(const task_router *r);
size_t task_router_bytes(const task_router *r);

/* Scores n inputs' features feat (n, dim): task_prob (n, T) the posterior of each task, distance (n) the
 * scaled Mahalanobis distance to the nearest class mean (either may be NULL). Needs scratch of
 * task_router_scratch_floats(r, n) floats. */
size_t task_router_scratch_floats(const task_router *r, int n);
void task_router_score(const task_router *r, const float *feat, int n, float *task_prob, float *distance, float *scratch);

#endif
