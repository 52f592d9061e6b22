/* AdamW, the learning-rate schedule and gradient clipping.
 *
 * The optimizer works on one flat parameter buffer described by a param_set: the moments are two buffers
 * of the same length, so a step is one loop (per tensor, to honour each tensor's weight-decay flag).
 */
#ifndef CLAD_CORE_OPTIM_H
#define CLAD_CORE_OPTIM_H

#include <stddef.h>

#include "core/error.h"
#include "core/params.h"

typedef struct adamw {
    size_t n;
    long t;         /* steps taken */
    float *m, *v;   /* (n) first and second moments */
} adamw;

int adamw_init(adamw *o, size_t n, clad_err *err);
void adamw_finish(adamw *o);
/* One step on p->data with gradients g (same layout). Decoupled weight decay on tensors with decay set. */
void adamw_step(adamw *o, const param_set *p, const float *g, float lr, float beta1, float beta2, float eps,
                float weight_decay);

/* Linear warm-up from 0 to lr over `warmup` steps, then cosine decay to lr * min_ratio at `total`. */
float lr_schedule(long step, long total, long warmup, float lr, float min_ratio);

/* Global L2 norm of g (n), computed in double. */
double grad_norm(const float *g, size_t n);
/* Scales g so its global norm is at most max_norm; returns the norm before clipping. */
double grad_clip(float *g, size_t n, float max_norm);

#endif
