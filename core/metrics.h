/* Continual-learning metrics from the accuracy matrix.
 *
 * R is T x T, row-major: R[i][j] is the accuracy (a fraction) on task j after learning tasks 0..i. Only the
 * lower triangle j <= i is read. base[j] is the accuracy on task j of the reference model with only a fresh
 * head trained on task j (a linear probe of the frozen base); it is optional.
 *
 * A metric that is undefined for the given input (forgetting with a single task, forward transfer without
 * base accuracies, ...) is reported as not defined with a reason, never as 0.
 *
 *   acc              (1/T) sum_j R[T-1][j]                                     final average accuracy
 *   aia              (1/T) sum_i (1/(i+1)) sum_{j<=i} R[i][j]                  average incremental accuracy
 *   forgetting_max   (1/(T-1)) sum_{j<T-1} (max_{j<=l<T-1} R[l][j] - R[T-1][j])   Chaudhry et al. 2018
 *   forgetting_first (1/(T-1)) sum_{j<T-1} (R[j][j] - R[T-1][j])                drop since first learned
 *   bwt              (1/(T-1)) sum_{j<T-1} (R[T-1][j] - R[j][j])                 Lopez-Paz & Ranzato 2017
 *   fwt              (1/(T-1)) sum_{j>=1} (R[j][j] - base[j])                    gain over the base's linear
 *                    probe on the tasks that had predecessors (see docs/RANKS.md)
 */
#ifndef CLAD_CORE_METRICS_H
#define CLAD_CORE_METRICS_H

#include <stdbool.h>

typedef struct cl_value {
    bool defined;
    double value;          /* meaningful only when defined */
    const char *reason;    /* why it is undefined (static string), NULL when defined */
} cl_value;

typedef struct cl_metrics {
    cl_value acc, aia, forgetting_max, forgetting_first, bwt, fwt;
} cl_metrics;

/* Fills every metric of m from R (T,T) and base (T, may be NULL). T < 1, a non-finite entry in the lower
 * triangle of R or in base makes the affected metrics undefined with a reason. */
void cl_metrics_compute(cl_metrics *m, const double *R, int T, const double *base);

#endif
