/* Continual learning, one task at a time: the small API that clad-bench cl and the daemon share.
 *
 * For each new task a caller holding the frozen base, the signatures of the earlier tasks' adapters and
 * the task's data does:
 *
 *   cl_plan_task()          probe the task against the base and decide the rank of every layer, with
 *                           the explanation (distance, overlap with each earlier task, novelty, ...);
 *   cl_train_task()         train the task's adapter (and its own head) with those ranks; the base and
 *                           every earlier adapter stay bit-identical;
 *   cl_signature_compute()  the adapter's signature, to store beside it for the next tasks.
 *
 * Nothing here keeps data: the plan and the signature hold weight-space quantities whose sizes depend on the
 * model and the ranks only. The caller may drop a task's data once its adapter is trained (rehearsal-free).
 * When the plan reuses an earlier task, cl_train_task needs that task's signature: the change it describes
 * is copied, frozen, into the new adapter, which then trains only its new components.
 */
#ifndef CLAD_CORE_CL_H
#define CLAD_CORE_CL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dataset.h"
#include "core/model.h"
#include "core/probe.h"
#include "core/ranks.h"
#include "core/signature.h"
#include "core/train.h"

typedef struct cl_config {
    rank_policy policy;
    probe_config probe;
    bool targets[MODEL_MAX_LINEARS];  /* linears that may be adapted (default: rank_linear_is_candidate) */
    float alpha;                      /* LoRA alpha of every adapter (scale alpha / rank) */
    double signature_keep;            /* energy a signature keeps (SIGNATURE_KEEP) */
    bool init_from_pull;              /* auto: start a task's new factors from the probe's pull where the plan
                                         does not reuse (rank_plan_init_adapter; off by default, as it lost
                                         accuracy once auto trained at the stable scale); else, and for
                                         fixed:N and linear, PEFT's init */
} cl_config;

/* Defaults for model m: policy auto, default probe, default targets, alpha 16. */
void cl_config_default(cl_config *c, const model *m);

typedef struct cl_plan {
    rank_plan rank;                   /* ranks and the per-layer explanation; see core/ranks.h */
    float loss_before, loss_after;    /* the probe's training-subset loss */
    float holdout_before, holdout_after;
    double probe_seconds;
} cl_plan;

/* Probes task (labels in [0, n_classes)) against base and applies the policy. earlier[t] are the
 * signatures of the n_earlier earlier tasks (NULL if none). plan is caller memory; release with
 * cl_plan_finish. base is only read. Errors from the probe and the rule (CLAD_EINVAL, CLAD_ENOMEM, ...);
 * CLAD_ECANCELLED when cfg->probe.stop asks to stop (it is polled throughout the probe and before the rule). */
int cl_plan_task(cl_plan *plan, const model *base, const signature *const *earlier, int n_earlier,
                 const dataset *task, int n_classes, const cl_config *cfg, clad_err *err);
void cl_plan_finish(cl_plan *plan);

/* Creates and trains the task's adapter with the plan's ranks: a LoRA of plan->rank.total ranks whose
 * first components (when plan->rank.reuse >= 0) are the frozen change of the reused task, given by its
 * signature `reused`, and whose remaining plan->rank.ranks components and head train on task. The head
 * starts from the base head when n_classes matches the base, else fresh. init_seed seeds the new factors
 * and a fresh head; tc the training (its seed the shuffling). on_step/ctx/res as in train_run. Returns
 * the adapter (the caller owns it) or NULL with err set. base is only read. Under auto with a start
 * (rank_policy.start) the task trains wide first and the ranks it keeps are written into plan. */
adapter *cl_train_task(const model *base, cl_plan *plan, const signature *reused, const dataset *task,
                       int n_classes, const cl_config *cfg, const train_config *tc, uint64_t init_seed,
                       train_step_fn on_step, void *ctx, train_result *res, clad_err *err);

/* Writes the first reused_ranks[li] components of every layer of the LoRA adapter a (rank[li] >= that)
 * from the reused task's signature: A rows its row directions, B columns its column directions times its
 * singular values divided by a's scale, so that scale * B A reproduces the reused change. cl_train_task
 * and the composition of an adapter stored by reference (core/cl_pipeline.h) both use it, so the two
 * give bit-identical adapters. */
void cl_adapter_put_reused(adapter *a, const model *base, const signature *reused, const int *reused_ranks);

/* The signature to store with adapter a (see core/signature.h): the adapter's change and the plan's pull
 * directions, per layer. */
int cl_signature_compute(signature *sig, const model *base, const adapter *a, const cl_plan *plan,
                         const cl_config *cfg, clad_err *err);

#endif
