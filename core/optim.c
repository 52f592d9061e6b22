/* AdamW, schedule and clipping; see optim.h. */
#include "core/optim.h"

#include <math.h>
#include <stdlib.h>

int adamw_init(adamw *o, size_t n, clad_err *err)
{
    o->n = n;
    o->t = 0;
    o->m = calloc(n + 1, sizeof *o->m);
    o->v = calloc(n + 1, sizeof *o->v);
    if (!o->m || !o->v) {
        adamw_finish(o);
        return clad_err_set(err, CLAD_ENOMEM, "cannot allocate optimizer state for %zu parameters", n);
    }
    return 0;
}

void adamw_finish(adamw *o)
{
    if (!o) return;
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

void adamw_step(adamw *o, const param_set *p, const float *g, float lr, float beta1, float beta2, float eps,
                float weight_decay)
{
    o->t++;
    /* Bias corrections in double: for small t, 1 - beta^t loses digits in float. */
    float c1 = (float)(1.0 - pow((double)beta1, (double)o->t));
    float c2 = (float)(1.0 - pow((double)beta2, (double)o->t));
    for (int ti = 0; ti < p->n; ti++) {
        const param_tensor *t = &p->t[ti];
        float decay = t->decay ? lr * weight_decay : 0.0f;
        float *w = p->data + t->offset, *m = o->m + t->offset, *v = o->v + t->offset;
        const float *gt = g + t->offset;
        for (size_t i = 0; i < t->numel; i++) {
            m[i] = beta1 * m[i] + (1.0f - beta1) * gt[i];
            v[i] = beta2 * v[i] + (1.0f - beta2) * gt[i] * gt[i];
            float mhat = m[i] / c1, vhat = v[i] / c2;
            w[i] -= lr * mhat / (sqrtf(vhat) + eps) + decay * w[i];
        }
    }
}

float lr_schedule(long step, long total, long warmup, float lr, float min_ratio)
{
    if (warmup > 0 && step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (total <= warmup) return lr;
    double progress = (double)(step - warmup) / (double)(total - warmup);
    if (progress > 1.0) progress = 1.0;
    double cosine = 0.5 * (1.0 + cos(M_PI * progress));
    return lr * (float)((double)min_ratio + (1.0 - (double)min_ratio) * cosine);
}

double grad_norm(const float *g, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * (double)g[i];
    return sqrt(s);
}

double grad_clip(float *g, size_t n, float max_norm)
{
    double norm = grad_norm(g, n);
    if (max_norm > 0.0f && norm > (double)max_norm) {
        float s = (float)((double)max_norm / (norm + 1e-12));
        for (size_t i = 0; i < n; i++) g[i] *= s;
    }
    return norm;
}
