/* clad-bench cl --routing and --joint: accuracy without task ids on a stream, and the joint-training
 * reference (one adapter of the same kind trained on every task's data at once).
 *
 * Labels are compared as global classes: a task whose transforms include `classes` (keep = [a, b, ...])
 * has local label l meaning class keep[l] (the last such transform counts), so on a class-incremental
 * stream such as Split-MNIST a prediction is right only if it names the right digit, which needs the right
 * task; on a domain-incremental stream (no `classes`) labels mean the same in every task. */
#ifndef CLAD_BENCH_CL_ROUTING_H
#define CLAD_BENCH_CL_ROUTING_H

#include <jansson.h>

#include "bench/stream.h"
#include "core/cl.h"
#include "core/route.h"

typedef struct cl_routing_task {
    const stream_task *def;     /* for global labels */
    const dataset *test;        /* local labels */
    const adapter *ad;
    const route_stats *rs;
    double task_aware_acc;      /* the task's accuracy with its id given (R[T-1][j]) */
} cl_routing_task;

/* The global class of task t's local label l (see above). */
int cl_global_label(const stream_task *t, int l);

/* Routes every test sample of every task among all T tasks (one base forward for the features, then the
 * chosen task's adapter) and returns {task_id_acc, acc_routed, acc_task_aware, gap, per_task, confusion,
 * bytes_per_task, distance_p50/p99, no_match_at_default, seconds}; accuracies are means over tasks.
 * NULL with err set on failure. */
json_t *cl_routing_evaluate(const model *base, const cl_routing_task *tasks, int T, const route_config *cfg,
                            clad_err *err);

/* Task-id accuracy (mean over tasks) for every shrink x pool of a grid: how sensitive routing is to its
 * two settings. Returns [{"shrink", "pool", "task_id_acc"}, ...]. */
json_t *cl_routing_sweep(const model *base, const cl_routing_task *tasks, int T, clad_err *err);

/* Joint training: the union of every task's training data (global labels) trains one adapter with the same
 * policy and settings; returns {acc (mean over tasks of test accuracy), per_task, params, train_seconds}.
 * The data is rebuilt from the stream (nothing is kept by the continual learner for this). */
json_t *cl_joint_evaluate(const stream *s, stream_sources *src, const model *base, const cl_config *cfg,
                          const train_config *tc, clad_err *err);

#endif
