/* AdamW, schedule and clipping; see optim.h.
 *
 * The step and the clipping sweep every parameter once per training step: for a base trained in full that
 * is as much time as the matrix products of an MLP step, so both run in 16-lane code (core/vec.h, compiled
 * per CPU clone) in chunks of OPT_GRAIN elements on the bound thread pool (core/parallel.h). AdamW is
 * elementwise and IEEE division and square root are exact in every lane, so it gives the bits of a serial
 * loop; the norm is summed per chunk in a fixed tree and the chunks in order, the same for any thread
 * count.
 */
#include "core/optim.h"

#include <math.h>
#include <stdlib.h>

#include "core/parallel.h"
#include "core/simd.h"
#include "core/vec.h"

#define OPT_GRAIN 16384

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

/* Chunk `task`'s elements [*s, return) of n, cut OPT_GRAIN at a time. */
static size_t opt_chunk(int task, size_t n, size_t *s)
{
    *s = (size_t)task * OPT_GRAIN;
    return *s + OPT_GRAIN < n ? *s + OPT_GRAIN : n;
}

typedef struct adamw_job {
    const adamw *o;
    const param_set *p;
    const float *g;
    float lr, beta1, beta2, eps, weight_decay, c1, c2;
    int ti;   /* the tensor this run covers */
} adamw_job;

/* The plain loop, vectorized by the compiler for each CPU clone: every operation is elementwise (no sum
 * is reordered), and the Makefile builds this file with -fno-math-errno so that sqrtf can become a vector
 * square root (vhat >= 0 anyway). */
SIMD_CLONES
static void adamw_task(void *ctx, int task, int worker)
{
    const adamw_job *j = ctx;
    const param_tensor *t = &j->p->t[j->ti];
    size_t s, e = opt_chunk(task, t->numel, &s);
    float lr = j->lr, beta1 = j->beta1, beta2 = j->beta2, eps = j->eps, c1 = j->c1, c2 = j->c2;
    float decay = t->decay ? lr * j->weight_decay : 0.0f;
    float *restrict w = j->p->data + t->offset, *restrict m = j->o->m + t->offset, *restrict v = j->o->v + t->offset;
    const float *restrict gt = j->g + t->offset;
    for (size_t i = s; i < e; i++) {
        m[i] = beta1 * m[i] + (1.0f - beta1) * gt[i];
        v[i] = beta2 * v[i] + (1.0f - beta2) * gt[i] * gt[i];
        float mhat = m[i] / c1, vhat = v[i] / c2;
        w[i] -= lr * mhat / (sqrtf(vhat) + eps) + decay * w[i];
    }
}

void adamw_step(adamw *o, const param_set *p, const float *g, float lr, float beta1, float beta2, float eps,
                float weight_decay)
{
    o->t++;
    /* Bias corrections in double: for small t, 1 - beta^t loses digits in float. */
    adamw_job j = {.o = o, .p = p, .g = g, .lr = lr, .beta1 = beta1, .beta2 = beta2, .eps = eps,
                   .weight_decay = weight_decay, .c1 = (float)(1.0 - pow((double)beta1, (double)o->t)),
                   .c2 = (float)(1.0 - pow((double)beta2, (double)o->t))};
    for (j.ti = 0; j.ti < p->n; j.ti++) par_for(par_chunks(p->t[j.ti].numel, OPT_GRAIN), adamw_task, &j);
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

typedef struct norm_job {
    float *g;
    const float *gin;
    double *partial;   /* (chunks) */
    size_t n;
    float scale;
} norm_job;

/* The sum of squares of one chunk in eight double lanes, added up in a fixed tree. */
SIMD_CLONES
static void norm_task(void *ctx, int task, int worker)
{
    const norm_job *j = ctx;
    size_t s, e = opt_chunk(task, j->n, &s), i = s;
    vd8 acc = {0};
    double tail = 0.0;
    for (; i + 8 <= e; i += 8) {
        vd8 d = vd8_widen(vf8_load(j->gin + i));
        acc += d * d;
    }
    for (; i < e; i++) tail += (double)j->gin[i] * (double)j->gin[i];
    j->partial[task] = vd8_sum(acc) + tail;
}

double grad_norm(const float *g, size_t n)
{
    int chunks = par_chunks(n, OPT_GRAIN);
    double stack[64], *partial = chunks <= 64 ? stack : malloc((size_t)chunks * sizeof *partial);
    if (!partial) abort();
    norm_job j = {.gin = g, .partial = partial, .n = n};
    par_for(chunks, norm_task, &j);
    double s = 0.0;
    for (int c = 0; c < chunks; c++) s += partial[c];
    if (partial != stack) free(partial);
    return sqrt(s);
}

SIMD_CLONES
static void scale_task(void *ctx, int task, int worker)
{
    const norm_job *j = ctx;
    size_t s, e = opt_chunk(task, j->n, &s);
    for (size_t i = s; i < e; i++) j->g[i] *= j->scale;
}

double grad_clip(float *g, size_t n, float max_norm)
{
    double norm = grad_norm(g, n);
    if (max_norm > 0.0f && norm > (double)max_norm) {
        norm_job j = {.g = g, .n = n, .scale = (float)((double)max_norm / (norm + 1e-12))};
        par_for(par_chunks(n, OPT_GRAIN), scale_task, &j);
    }
    return norm;
}
