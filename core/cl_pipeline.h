/* The continual-learning pipeline for one task: plan -> train -> signature, with per-task numbers. The
 * daemon's training job (daemon/api_train.c) and `clad-bench cl` (bench/bench_cl.c) both call cl_task_run,
 * so the benchmark measures exactly what the daemon does.
 *
 *   plan       cl_plan_task (core/cl.h): probe and rank rule, timed as plan_seconds. Skipped under fixed:N
 *              (every target gets N; no probe) unless an explanation is asked for.
 *   train      cl_train_task, or a Tied-LoRA of the plan's largest rank; optional rank pruning.
 *   signature  cl_signature_compute of the adapter that serves.
 *
 * Reuse by reference: when the task builds on an earlier task (the rule chose to, or the caller asked with
 * from), the served adapter is [reused | new] (core/cl.h). Its reused part is a function of the earlier
 * task's signature only, so a store keeps just `part` (the new components and the head) plus a reference to
 * the earlier version, and cl_adapter_join rebuilds the served adapter bit for bit. docs/RANKS.md,
 * "Pipeline and reuse by reference".
 *
 * Nothing here does I/O; a stop request (cfg->probe.stop) is polled between and inside the phases.
 */
#ifndef CLAD_CORE_CL_PIPELINE_H
#define CLAD_CORE_CL_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/cl.h"

typedef struct cl_task_result cl_task_result;

typedef struct cl_task_options {
    bool explain;          /* plan even under fixed:N, for the per-layer explanation */
    int from;              /* index into earlier of a version to continue from (reused whatever the
                              rule says), or -1 */
    int tied;              /* 0: LoRA; TIED_TL5 / TIED_TL6: Tied-LoRA at the plan's largest rank (no reuse) */
    double prune;          /* > 0: rank-prune the trained LoRA to this energy fraction (then stored whole) */
    uint64_t init_seed;    /* the new factors and a fresh head */
    train_step_fn on_step; /* as in train_run (may be NULL) */
    void *ctx;
    /* Optional: called once the plan is made, before training (to publish it). */
    void (*on_plan)(void *plan_ctx, const cl_task_result *res);
    void *plan_ctx;
} cl_task_options;

/* Defaults: no explanation, from -1, LoRA, no pruning, seed 1, no callbacks. */
void cl_task_options_default(cl_task_options *o);

struct cl_task_result {
    cl_plan plan;          /* the plan; under fixed:N without explanation only ranks and why ("fixed") */
    bool planned;          /* false: no probe ran (fixed:N without explanation) */
    adapter *ad;           /* the adapter that serves (owned) */
    adapter *part;         /* when stored by reference: the new components and the head (owned), else NULL */
    int reuse;             /* index into earlier of the task whose change ad reuses, or -1 */
    int reused[MODEL_MAX_LINEARS]; /* components per layer taken from it (what part leaves out) */
    signature sig;         /* of ad, with the plan's pull */
    train_result train;
    double plan_seconds;   /* probe and rule; 0 when not planned */
    double train_seconds;
    double signature_seconds;
    long params;           /* parameters of ad (factors and head) */
    long new_params;       /* parameters the task adds: of part when stored by reference, else params */
    bool pruned;
    int rank_before[MODEL_MAX_LINEARS]; /* ranks before pruning */
};

/* Runs the pipeline for one task (labels in [0, n_classes)) against base, with the signatures of the
 * n_earlier earlier tasks. Under auto with reuse=0 (cfg->policy.reuse_min 0) the rule sees no earlier task
 * (reuse off); opt->from still continues from the task it names. res is caller memory, initialised here;
 * release with cl_task_result_finish (also after an error). base is only read.
 * Errors: those of the phases; CLAD_ECANCELLED when cfg->probe.stop or opt->on_step asks to stop. */
int cl_task_run(cl_task_result *res, const model *base, const signature *const *earlier, int n_earlier,
                const dataset *task, int n_classes, const cl_config *cfg, const train_config *tc,
                const cl_task_options *opt, clad_err *err);
void cl_task_result_finish(cl_task_result *res);

/* The part of a LoRA adapter a that a store keeps when its first reused[li] components per layer are
 * referenced: a LoRA of ranks a->rank - reused (same alpha, same head) whose factors are a's remaining
 * columns of B and rows of A, copied as they are. NULL with err set on error. */
adapter *cl_adapter_new_part(const adapter *a, const model *base, const int *reused, clad_err *err);

/* The served adapter from a stored part and the signature of the version it references: the inverse of
 * cl_adapter_new_part, bit-identical to the adapter cl_task_run trained. alpha is part's. Errors:
 * CLAD_EINVAL (a layer of the signature holds fewer than reused[li] directions, shapes), CLAD_ENOMEM. */
adapter *cl_adapter_join(const model *base, const signature *reused_sig, const int *reused, const adapter *part,
                         clad_err *err);

#endif
