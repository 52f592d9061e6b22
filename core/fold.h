/* Folding an adapter into its base for serving: one model whose weights are W + scale B A.
 *
 * A LoRA or tied adapter adds scale (x A^T) B^T to a linear's output; folding adds the same change to the
 * weight once (W' = W + adapter_delta), and swaps in the adapter's head, so a batch then costs exactly what
 * the base costs. The folded model gives the adapter's outputs up to float rounding (the sum is formed in
 * a different order). Fusion adapters mix several sources per input and cannot be folded.
 */
#ifndef CLAD_CORE_FOLD_H
#define CLAD_CORE_FOLD_H

#include "core/model.h"

/* A new model: m's config with the adapter's class count, m's parameters with every adapted linear's
 * delta added, the adapter's head. CLAD_EINVAL (naming the kind) for a fusion adapter, CLAD_ENOMEM. */
model *model_fold(const model *m, const adapter *a, clad_err *err);

#endif
