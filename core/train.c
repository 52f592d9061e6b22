/* Training, evaluation and prediction loops; see train.h. */
#include "core/train.h"

#include <cblas.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/optim.h"
#include "core/rng.h"

void train_config_default(train_config *c)
{
    memset(c, 0, sizeof *c);
    c->epochs = 1;
    c->batch = 64;
    c->lr = 1e-3f;
    c->min_lr_ratio = 0.1f;
    c->warmup_ratio = 0.05f;
    c->weight_decay = 0.01f;
    c->clip = 1.0f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->seed = 1;
}

#define FIELD_IN(f, lo, hi)                                                                            \
    do {                                                                                               \
        if (!(isfinite((double)c->f) && (double)c->f >= (lo) && (double)c->f <= (hi)))                 \
            return clad_err_set(err, CLAD_EINVAL, "training option %s = %g is outside [%g, %g]", #f,   \
                                (double)c->f, (double)(lo), (double)(hi));                             \
    } while (0)

int train_config_validate(const train_config *c, clad_err *err)
{
    FIELD_IN(epochs, 1, 1000);
    FIELD_IN(batch, 1, 4096);
    FIELD_IN(lr, 1e-8, 10);
    FIELD_IN(min_lr_ratio, 0, 1);
    FIELD_IN(warmup_ratio, 0, 1);
    FIELD_IN(weight_decay, 0, 10);
    FIELD_IN(clip, 0, 1e6);
    FIELD_IN(beta1, 0, 0.999999);
    FIELD_IN(beta2, 0, 0.999999);
    FIELD_IN(eps, 1e-12, 1);
    if (c->step_begin < 0 || c->step_end < 0 || (c->step_end && c->step_end <= c->step_begin))
        return clad_err_set(err, CLAD_EINVAL, "training step window [%ld, %ld) is empty or negative", c->step_begin,
                            c->step_end);
    return 0;
}

long train_total_steps(const train_config *c, int n)
{
    int B = c->batch < n ? c->batch : n;
    return B < 1 ? 0 : (long)((n + B - 1) / B) * c->epochs;
}

double train_clock_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int train_check_data(const model *m, const adapter *a, const dataset *d, bool need_labels, clad_err *err)
{
    const model_config *c = &m->cfg;
    int in = model_config_input_dim(c);
    if (d->n < 1) return clad_err_set(err, CLAD_EINVAL, "the dataset has no samples");
    if (d->dim != in)
        return clad_err_set(err, CLAD_EINVAL, "samples have %d features but the model takes %d", d->dim, in);
    if (c->kind == MODEL_VIT && d->rank == 3 &&
        (d->shape[0] != c->channels || d->shape[1] != c->height || d->shape[2] != c->width))
        return clad_err_set(err, CLAD_EINVAL, "images are %dx%dx%d (CxHxW) but the model takes %dx%dx%d",
                            d->shape[0], d->shape[1], d->shape[2], c->channels, c->height, c->width);
    int K = a ? a->n_classes : c->n_classes;
    if (need_labels)
        for (int i = 0; i < d->n; i++)
            if (d->y[i] < 0 || d->y[i] >= K)
                return clad_err_set(err, CLAD_EINVAL, "label %d of sample %d is outside the %d classes", d->y[i],
                                    i, K);
    return 0;
}

int train_run(model *m, adapter *a, const dataset *d, const train_config *cfg, train_step_fn on_step,
              void *ctx, train_result *res, clad_err *err)
{
    int rc = train_config_validate(cfg, err);
    if (rc) return rc;
    rc = train_check_data(m, a, d, true, err);
    if (rc) return rc;
    if (dataset_validate(d, err)) return CLAD_EINVAL;

    param_set *p = a ? &a->params : &m->params;
    int B = cfg->batch < d->n ? cfg->batch : d->n;
    long per_epoch = (d->n + B - 1) / B;
    long total = train_total_steps(cfg, d->n);
    long end = cfg->step_end ? cfg->step_end : total;
    if (end > total || cfg->step_begin >= end)
        return clad_err_set(err, CLAD_EINVAL, "training step window [%ld, %ld) is not inside the run's %ld steps",
                            cfg->step_begin, end, total);
    long warmup = (long)(cfg->warmup_ratio * (float)total);

    float *grad = calloc(p->total + 1, sizeof *grad);
    float *xb = malloc(((size_t)B * (size_t)d->dim + 1) * sizeof *xb);
    int *yb = malloc(((size_t)B + 1) * sizeof *yb), *order = malloc(((size_t)d->n + 1) * sizeof *order);
    adamw opt = {0};
    model_ws *ws = model_ws_create_for(m, a, B, true, err);
    if (!grad || !xb || !yb || !order || !ws) {
        rc = ws ? clad_err_set(err, CLAD_ENOMEM, "out of memory for training buffers") : CLAD_ENOMEM;
        goto done;
    }
    if ((rc = adamw_init(&opt, p->total, err))) goto done;

    rng r;
    rng_init(&r, cfg->seed);
    for (int i = 0; i < d->n; i++) order[i] = i;
    double t0 = train_clock_seconds(), epoch_loss = 0.0;
    long step = 0, samples = 0, epoch_samples = 0;
    for (int epoch = 1; epoch <= cfg->epochs && step < end; epoch++) {
        rng_shuffle(&r, order, d->n);
        epoch_loss = 0.0;
        epoch_samples = 0;
        if (step + per_epoch <= cfg->step_begin) {
            step += per_epoch;  /* outside the window: only the shuffle, to keep the order of the whole run */
            continue;
        }
        if (a && cfg->epoch_hook && step >= cfg->step_begin &&
            (rc = cfg->epoch_hook(cfg->hook_ctx, a, epoch, cfg->epochs, err)))
            goto done;
        for (long s = 0; s < per_epoch && step < end; s++) {
            if (step < cfg->step_begin) {
                step++;
                continue;
            }
            int n = (int)((s + 1) * B <= d->n ? B : d->n - s * B);
            for (int i = 0; i < n; i++) {
                int k = order[s * B + i];
                memcpy(xb + (size_t)i * d->dim, d->x + (size_t)k * d->dim, (size_t)d->dim * sizeof *xb);
                yb[i] = d->y[k];
            }
            float loss = model_forward(ws, m, a, xb, yb, n);
            if (!isfinite(loss)) {
                rc = clad_err_set(err, CLAD_EINVAL, "training diverged: the loss is %g at step %ld; "
                                  "try a lower learning rate", (double)loss, step + 1);
                goto done;
            }
            memset(grad, 0, p->total * sizeof *grad);
            model_backward(ws, m, a, a ? NULL : grad, a ? grad : NULL);
            grad_clip(grad, p->total, cfg->clip);
            float lr = lr_schedule(step, total, warmup, cfg->lr, cfg->min_lr_ratio);
            adamw_step(&opt, p, grad, lr, cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay);
            if (a && cfg->step_hook) cfg->step_hook(cfg->hook_ctx, a);
            step++;
            samples += n;
            epoch_samples += n;
            epoch_loss += (double)loss * n;
            if (on_step) {
                train_progress pr = {epoch, cfg->epochs, step, total, loss, lr, train_clock_seconds() - t0};
                if (!on_step(ctx, &pr)) {
                    rc = clad_err_set(err, CLAD_ECANCELLED, "training cancelled at step %ld of %ld", step, total);
                    goto done;
                }
            }
        }
    }
    if (res) {
        res->steps = step - cfg->step_begin;
        res->final_loss = epoch_samples ? (float)(epoch_loss / epoch_samples) : 0.0f;
        res->seconds = train_clock_seconds() - t0;
        res->samples = samples;
    }
done:
    adamw_finish(&opt);
    model_ws_destroy(ws);
    free(grad);
    free(xb);
    free(yb);
    free(order);
    return rc;
}

int model_evaluate(const model *m, const adapter *a, const dataset *d, int batch, eval_result *res,
                   clad_err *err)
{
    int rc = train_check_data(m, a, d, true, err);
    if (rc) return rc;
    int B = batch < 1 ? 256 : batch;
    if (B > d->n) B = d->n;
    model_ws *ws = model_ws_create_for(m, a, B, false, err);
    if (!ws) return err ? err->code : CLAD_ENOMEM;
    rc = model_evaluate_ws(ws, m, a, d, res, err);
    model_ws_destroy(ws);
    return rc;
}

int model_evaluate_ws(model_ws *ws, const model *m, const adapter *a, const dataset *d, eval_result *res,
                      clad_err *err)
{
    if (!model_ws_fits(ws, m, a))
        return clad_err_set(err, CLAD_EINTERNAL, "evaluation workspace does not fit the adapter");
    int rc = train_check_data(m, a, d, true, err);
    if (rc) return rc;
    int B = model_ws_max_batch(ws);
    int K = a ? a->n_classes : m->cfg.n_classes;
    long correct = 0;
    double loss = 0.0;
    for (int s = 0; s < d->n; s += B) {
        int n = d->n - s < B ? d->n - s : B;
        loss += (double)model_forward(ws, m, a, d->x + (size_t)s * d->dim, d->y + s, n) * n;
        const float *pr = model_ws_probs(ws);
        for (int i = 0; i < n; i++) {
            int best = 0;
            for (int k = 1; k < K; k++)
                if (pr[(size_t)i * K + k] > pr[(size_t)i * K + best]) best = k;
            correct += best == d->y[s + i];
        }
    }
    res->n = d->n;
    res->accuracy = (float)((double)correct / d->n);
    res->loss = (float)(loss / d->n);
    return 0;
}

/* Whether x[0..n-1] are all finite: an exponent of all ones is inf or NaN. Branch-free over blocks of 64
 * (a fixed inner count the compiler turns into vector code), since a prediction checks every input. */
static bool all_finite(const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint32_t bad = 0;
        for (int k = 0; k < 64; k++) {
            uint32_t u;
            memcpy(&u, x + i + k, sizeof u);
            bad |= (u & 0x7f800000u) == 0x7f800000u;
        }
        if (bad) return false;
    }
    for (; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

static int check_inputs(const model *m, const float *x, int n, clad_err *err)
{
    size_t dim = (size_t)model_config_input_dim(&m->cfg);
    if (all_finite(x, (size_t)n * dim)) return 0;
    for (size_t i = 0; i < (size_t)n * dim; i++)
        if (!isfinite(x[i]))
            return clad_err_set(err, CLAD_EINVAL, "input %zu feature %zu is not finite", i / dim, i % dim);
    return 0;
}

int model_predict_ws(model_ws *ws, const model *m, const adapter *a, const float *x, int n, float *probs,
                     int *labels, clad_err *err)
{
    if (!model_ws_fits(ws, m, a))
        return clad_err_set(err, CLAD_EINTERNAL, "prediction workspace does not fit the adapter");
    int rc = check_inputs(m, x, n, err);
    if (rc) return rc;
    int dim = model_config_input_dim(&m->cfg), B = model_ws_max_batch(ws);
    int K = a ? a->n_classes : m->cfg.n_classes;
    for (int s = 0; s < n; s += B) {
        int k = n - s < B ? n - s : B;
        model_forward(ws, m, a, x + (size_t)s * dim, NULL, k);
        const float *pr = model_ws_probs(ws);
        if (probs) memcpy(probs + (size_t)s * K, pr, (size_t)k * K * sizeof *pr);
        for (int i = 0; labels && i < k; i++) {
            int best = 0;
            for (int c = 1; c < K; c++)
                if (pr[(size_t)i * K + c] > pr[(size_t)i * K + best]) best = c;
            labels[s + i] = best;
        }
    }
    return 0;
}

int model_predict(const model *m, const adapter *a, const float *x, int n, int batch, float *probs, int *labels,
                  clad_err *err)
{
    int rc = check_inputs(m, x, n, err);
    if (rc) return rc;
    int B = batch < 1 ? 256 : batch;
    if (B > n) B = n;
    if (B < 1) return 0;
    model_ws *ws = model_ws_create_for(m, a, B, false, err);
    if (!ws) return err ? err->code : CLAD_ENOMEM;
    rc = model_predict_ws(ws, m, a, x, n, probs, labels, err);
    model_ws_destroy(ws);
    return rc;
}

void blas_set_threads(int n)
{
    openblas_set_num_threads(n);
}

int blas_threads(void)
{
    return openblas_get_num_threads();
}
