/* Merging task adapters into one multitask backbone: task arithmetic (TA), TIES, and Decom-Renorm-Merge in
 * its two directions (DRM-H, DRM-V); see docs/METHODS.md for the formulas and the choices made.
 *
 * Every method works on the dense per-layer deltas dW_i = (alpha/r) B_i A_i of N task adapters (lora or
 * tied; a task without an adapter on a layer contributes a zero delta there) and produces one dense delta
 * per layer. merge_backbone adds them to a COPY of the base: the merged backbone then predicts every source
 * task with that task's own head (merge_head_adapter), so no task id is needed to choose weights; only the
 * head is per task. merge_to_lora re-expresses a merged backbone as a LoRA of a chosen rank (truncated SVD)
 * for export.
 *
 * Shared steps, in this order: (DRM only) thin SVD of the concatenated deltas and renormalisation; trim by
 * magnitude (TIES: per task; DRM: jointly over tasks); sign election per entry by the sign of the summed
 * values (a zero sum takes the sign held by most entries) and zeroing of the entries that disagree;
 * per-task coefficients; the disjoint mean (the mean over the tasks whose entry is non-zero); a final
 * scale lambda. TA is lambda * sum_i c_i dW_i.
 */
#ifndef CLAD_CORE_MERGE_H
#define CLAD_CORE_MERGE_H

#include <stdbool.h>

#include "core/model.h"

#define MERGE_MAX_TASKS 64

typedef enum merge_method { MERGE_TA = 1, MERGE_TIES = 2, MERGE_DRM_H = 3, MERGE_DRM_V = 4 } merge_method;

typedef struct merge_config {
    merge_method method;
    float drop;            /* fraction of entries trimmed, in [0, 1): ties per task, drm jointly; ta ignores it */
    float lambda;          /* final scale of the merged delta */
    float rank_rtol;       /* drm: keep singular values above rank_rtol * the largest */
    const float *coef;     /* per-task coefficients (N), NULL = all 1 */
    bool sign_elect;       /* ties, drm: elect a sign per entry and zero the disagreeing ones */
    bool disjoint_mean;    /* ties, drm: divide by the number of tasks with a non-zero entry (else sum) */
} merge_config;

/* Defaults: drop 0.8 (ties, drm; the DRM README's default), lambda 1, rank_rtol 0.01, coef NULL, sign
 * election and disjoint mean on. */
void merge_config_default(merge_config *c, merge_method method);
/* "ta", "ties", "drm-h", "drm-v" and back (CLAD_EINVAL listing the names). */
const char *merge_method_name(merge_method m);
int merge_method_parse(merge_method *m, const char *name, clad_err *err);
/* Checks ranges and finiteness, naming the bad field. */
int merge_config_validate(const merge_config *c, int n_tasks, clad_err *err);

/* out (n,m) = the merge of deltas[0..N) (each (n,m)). Errors: CLAD_EINVAL, CLAD_ETOOLARGE (the SVD's size
 * limit), CLAD_ENOMEM, CLAD_EINTERNAL (LAPACK). */
int merge_deltas(float *out, const float *const *deltas, int N, int n, int m, const merge_config *c, clad_err *err);

/* A new model: base with every linear that any source adapts changed by the merged delta. The sources must
 * be lora or tied adapters made for base. NULL on error. */
model *merge_backbone(const model *base, const adapter *const *sources, int N, const merge_config *c,
                      clad_err *err);

/* An adapter for `merged` that only carries src's head (every rank 0): merged + this = task src. */
adapter *merge_head_adapter(const model *merged, const adapter *src, clad_err *err);

/* A LoRA for base of rank min(rank, in, out) on every linear where merged differs from base (truncated SVD
 * of the difference; B = U_k S_k^(1/2), A = S_k^(1/2) V_k^T, alpha = rank), with head_src's head (NULL =
 * the base head). rank >= 1. NULL on error. */
adapter *merge_to_lora(const model *base, const model *merged, int rank, const adapter *head_src, clad_err *err);

#endif
