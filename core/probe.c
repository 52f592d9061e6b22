/* The dense short-training probe; see probe.h. */
#include "core/probe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/linalg.h"
#include "core/optim.h"
#include "core/rng.h"
#include "core/train.h"

void probe_config_default(probe_config *c)
{
    /* 32 Adam steps of 16 on 256 samples, judged on 128 held out at 2 path points: about 850 sample
     * passes, a fifth of the 512/256/4/48x64 probe the rule was first validated with (docs/RANKS.md). The
     * learning rate is 1.5x the first probe's so the pull moves as far (Adam moves a weight about lr per
     * step: 32 x 1.5e-3 = 48 x 1e-3). */
    c->samples = 256;
    c->holdout = 128;
    c->path_points = 2;
    c->steps = 32;
    c->batch = 16;
    c->lr = 1.5e-3f;
    c->seed = 1;
    c->stop = NULL;
    c->stop_ctx = NULL;
}

int probe_config_validate(const probe_config *c, clad_err *err)
{
    if (c->samples < 16 || c->samples > 65536)
        return clad_err_set(err, CLAD_EINVAL, "probe: samples %d is outside [16, 65536]", c->samples);
    if (c->holdout < 16 || c->holdout > 65536)
        return clad_err_set(err, CLAD_EINVAL, "probe: holdout %d is outside [16, 65536]", c->holdout);
    if (c->path_points < 1 || c->path_points > 64)
        return clad_err_set(err, CLAD_EINVAL, "probe: path_points %d is outside [1, 64]", c->path_points);
    if (c->steps < 1 || c->steps > 10000)
        return clad_err_set(err, CLAD_EINVAL, "probe: steps %d is outside [1, 10000]", c->steps);
    if (c->batch < 1 || c->batch > 4096)
        return clad_err_set(err, CLAD_EINVAL, "probe: batch %d is outside [1, 4096]", c->batch);
    if (!(c->lr > 0.0f && c->lr <= 1.0f))
        return clad_err_set(err, CLAD_EINVAL, "probe: lr %g is outside (0, 1]", (double)c->lr);
    return 0;
}

void probe_result_finish(probe_result *res)
{
    if (!res) return;
    for (int li = 0; li < MODEL_MAX_LINEARS; li++) {
        free(res->delta[li]);
        free(res->grad[li]);
        res->delta[li] = res->grad[li] = NULL;
    }
}

/* Evaluation batches: the gradient batch is small enough that one forward and backward pass of the largest
 * preset stays well under the 0.5 s within which a stop request must be seen. */
#define PROBE_LOSS_BATCH 256
#define PROBE_GRAD_BATCH 64
#define PROBE_TAIL_STEPS 8

static int check_stop(const probe_config *pc, clad_err *err)
{
    if (pc->stop && pc->stop(pc->stop_ctx)) return clad_err_set(err, CLAD_ECANCELLED, "probe: stopped on request");
    return 0;
}

/* *out = mean loss of (m, a) over d, in batches of B; CLAD_ECANCELLED when pc->stop says so. */
static int mean_loss(float *out, model_ws *ws, const model *m, const adapter *a, const dataset *d, int B,
                     const probe_config *pc, clad_err *err)
{
    double s = 0.0;
    for (int i = 0; i < d->n; i += B) {
        int rc = check_stop(pc, err);
        if (rc) return rc;
        int n = d->n - i < B ? d->n - i : B;
        s += (double)model_forward(ws, m, a, d->x + (size_t)i * d->dim, d->y + i, n) * n;
    }
    *out = (float)(s / d->n);
    return 0;
}

/* g (layout of m->params) = gradient of the mean loss over d, in batches of B; scratch like g.
 * CLAD_ECANCELLED when pc->stop says so. */
static int mean_grad(float *g, float *scratch, model_ws *ws, const model *m, const adapter *a, const dataset *d,
                     int B, const probe_config *pc, clad_err *err)
{
    memset(g, 0, m->params.total * sizeof *g);
    for (int i = 0; i < d->n; i += B) {
        int rc = check_stop(pc, err);
        if (rc) return rc;
        int n = d->n - i < B ? d->n - i : B;
        memset(scratch, 0, m->params.total * sizeof *scratch);
        model_forward(ws, m, a, d->x + (size_t)i * d->dim, d->y + i, n);
        model_backward(ws, m, a, scratch, NULL);
        float w = (float)n / (float)d->n;
        for (size_t k = 0; k < m->params.total; k++) g[k] += w * scratch[k];
    }
    return 0;
}

/* Splits a seeded shuffle of d into a training part and a disjoint held-out part. */
static int split_data(dataset *train, dataset *hold, const dataset *d, int want_train, int want_hold, uint64_t seed,
                      clad_err *err)
{
    int nt = want_train, nh = want_hold;
    if (nt + nh > d->n) {
        /* Small data: keep the same proportions, at least one sample on each side. */
        nh = (int)((double)d->n * want_hold / (want_train + want_hold));
        if (nh < 1) nh = 1;
        nt = d->n - nh;
        if (nt < 1) return clad_err_set(err, CLAD_EINVAL, "probe: the task has %d samples; at least 2 needed", d->n);
    }
    int *idx = malloc((size_t)d->n * sizeof *idx);
    if (!idx) return clad_err_set(err, CLAD_ENOMEM, "probe: out of memory");
    for (int i = 0; i < d->n; i++) idx[i] = i;
    rng r;
    rng_init(&r, seed);
    rng_shuffle(&r, idx, d->n);
    int rc = dataset_select(train, d, idx, nt, err);
    if (!rc) rc = dataset_select(hold, d, idx + nt, nh, err);
    free(idx);
    return rc;
}

static bool is_target_weight(const probe_result *res, const model *m, int ti)
{
    for (int li = 0; li < m->n_linear; li++)
        if (res->target[li] && m->linear[li].weight == ti) return true;
    return false;
}

int probe_run(probe_result *res, const model *m, const bool *targets, const dataset *d, int n_classes,
              const probe_config *pc, clad_err *err)
{
    memset(res, 0, sizeof *res);
    res->n_linear = m->n_linear;
    int rc = probe_config_validate(pc, err);
    if (rc) return rc;
    int n_targets = 0;
    for (int li = 0; li < m->n_linear; li++) {
        res->w_norm2[li] = linalg_frob2(param_set_ptr(&m->params, m->linear[li].weight),
                                        m->params.t[m->linear[li].weight].numel);
        if (!targets[li]) continue;
        if (m->linear[li].is_head)
            return clad_err_set(err, CLAD_EINVAL, "probe: the head cannot be a target (heads are per task)");
        res->target[li] = true;
        n_targets++;
    }
    if (!n_targets) return clad_err_set(err, CLAD_EINVAL, "probe: no target layer");

    double t0 = train_clock_seconds();
    dataset sub = {0}, hold = {0};
    model *pm = NULL;
    adapter *head = NULL;
    model_ws *ws = NULL;
    float *gb = NULL, *ga = NULL, *scratch = NULL, *xb = NULL, *w_end = NULL, *h0 = NULL, *h1 = NULL;
    int *yb = NULL, *order = NULL;
    adamw ob = {0}, oa = {0};

    if ((rc = split_data(&sub, &hold, d, pc->samples, pc->holdout, pc->seed, err))) goto cleanup;
    sub.n_classes = hold.n_classes = n_classes;
    if (!(pm = model_create(&m->cfg, err))) {
        rc = err ? err->code : CLAD_ENOMEM;
        goto cleanup;
    }
    memcpy(pm->params.data, m->params.data, m->params.total * sizeof *m->params.data);
    if (!(head = adapter_create(pm, NULL, 1.0f, n_classes, err))) {
        rc = err ? err->code : CLAD_EINVAL;
        goto cleanup;
    }
    adapter_init(head, pm, pc->seed);
    if ((rc = train_check_data(pm, head, &sub, true, err))) goto cleanup;

    int B = pc->batch < sub.n ? pc->batch : sub.n;
    int BE = PROBE_LOSS_BATCH;
    if (!(ws = model_ws_create(pm, B > BE ? B : BE, 1, n_classes, true, err))) {
        rc = err ? err->code : CLAD_ENOMEM;
        goto cleanup;
    }
    size_t np = pm->params.total, na = head->params.total;
    gb = malloc(np * sizeof *gb);
    scratch = malloc(np * sizeof *scratch);
    w_end = malloc(np * sizeof *w_end);
    ga = malloc(na * sizeof *ga);
    h0 = malloc(na * sizeof *h0);
    h1 = malloc(na * sizeof *h1);
    xb = malloc((size_t)B * (size_t)sub.dim * sizeof *xb);
    yb = malloc((size_t)B * sizeof *yb);
    order = malloc((size_t)sub.n * sizeof *order);
    if (!gb || !scratch || !w_end || !ga || !h0 || !h1 || !xb || !yb || !order) {
        rc = clad_err_set(err, CLAD_ENOMEM, "probe: out of memory");
        goto cleanup;
    }
    if ((rc = adamw_init(&ob, np, err)) || (rc = adamw_init(&oa, na, err))) goto cleanup;
    memcpy(h0, head->params.data, na * sizeof *h0);

    if ((rc = mean_loss(&res->holdout_before, ws, pm, head, &hold, BE, pc, err))) goto cleanup;
    rng r;
    rng_init(&r, pc->seed ^ 0x70726f6265ULL);
    for (int i = 0; i < sub.n; i++) order[i] = i;
    int pos = sub.n;
    /* The training-subset losses come from the minibatches themselves (no extra passes): the first one at
     * the reference, and the mean of the last PROBE_TAIL_STEPS before their updates. */
    int tail = pc->steps < PROBE_TAIL_STEPS ? pc->steps : PROBE_TAIL_STEPS;
    double tail_loss = 0.0;
    for (int step = 0; step < pc->steps; step++) {
        if ((rc = check_stop(pc, err))) goto cleanup;
        for (int i = 0; i < B; i++) {
            if (pos == sub.n) {
                rng_shuffle(&r, order, sub.n);
                pos = 0;
            }
            int j = order[pos++];
            memcpy(xb + (size_t)i * sub.dim, sub.x + (size_t)j * sub.dim, (size_t)sub.dim * sizeof *xb);
            yb[i] = sub.y[j];
        }
        float loss = model_forward(ws, pm, head, xb, yb, B);
        if (!isfinite(loss)) {
            rc = clad_err_set(err, CLAD_EINVAL, "probe: the loss is %g at step %d; the data may be unusable",
                              (double)loss, step + 1);
            goto cleanup;
        }
        if (step == 0) res->loss_before = loss;
        if (step >= pc->steps - tail) tail_loss += (double)loss;
        memset(gb, 0, np * sizeof *gb);
        memset(ga, 0, na * sizeof *ga);
        model_backward(ws, pm, head, gb, ga);
        /* Only the target weights move: every other gradient is zeroed, and with no weight decay a
         * zero gradient leaves Adam's update at exactly zero. */
        for (int ti = 0; ti < pm->params.n; ti++)
            if (!is_target_weight(res, pm, ti)) memset(gb + pm->params.t[ti].offset, 0, pm->params.t[ti].numel * sizeof *gb);
        adamw_step(&ob, &pm->params, gb, pc->lr, 0.9f, 0.999f, 1e-8f, 0.0f);
        adamw_step(&oa, &head->params, ga, pc->lr, 0.9f, 0.999f, 1e-8f, 0.0f);
    }
    res->loss_after = (float)(tail_loss / tail);
    if ((rc = mean_loss(&res->holdout_after, ws, pm, head, &hold, BE, pc, err))) goto cleanup;
    memcpy(w_end, pm->params.data, np * sizeof *w_end);
    memcpy(h1, head->params.data, na * sizeof *h1);

    for (int li = 0; li < m->n_linear; li++) {
        if (!res->target[li]) continue;
        const model_linear *L = &m->linear[li];
        size_t n = (size_t)L->out * (size_t)L->in;
        res->delta[li] = malloc(n * sizeof *res->delta[li]);
        res->grad[li] = calloc(n, sizeof *res->grad[li]);
        if (!res->delta[li] || !res->grad[li]) {
            rc = clad_err_set(err, CLAD_ENOMEM, "probe: out of memory");
            goto cleanup;
        }
        const float *w0 = param_set_ptr(&m->params, L->weight), *w1 = w_end + m->params.t[L->weight].offset;
        for (size_t i = 0; i < n; i++) res->delta[li][i] = w1[i] - w0[i];
    }

    /* Integrated gradients: the held-out gradient averaged over the midpoints of P equal pieces of the
     * straight path from the reference (t = 0) to the probe's end (t = 1), head included. Then
     * L(1) - L(0) ~= <grad, dW> summed over the layers (plus the head's share), and the share of any
     * component X of dW_l is <grad_l, X>. */
    for (int k = 0; k < pc->path_points; k++) {
        float t = ((float)k + 0.5f) / (float)pc->path_points;
        for (size_t i = 0; i < np; i++) pm->params.data[i] = m->params.data[i] + t * (w_end[i] - m->params.data[i]);
        for (size_t i = 0; i < na; i++) head->params.data[i] = h0[i] + t * (h1[i] - h0[i]);
        if ((rc = mean_grad(gb, scratch, ws, pm, head, &hold, PROBE_GRAD_BATCH, pc, err))) goto cleanup;
        for (int li = 0; li < m->n_linear; li++) {
            if (!res->target[li]) continue;
            const model_linear *L = &m->linear[li];
            size_t n = (size_t)L->out * (size_t)L->in;
            const float *g = gb + m->params.t[L->weight].offset;
            for (size_t i = 0; i < n; i++) res->grad[li][i] += g[i] / (float)pc->path_points;
        }
    }
    res->seconds = train_clock_seconds() - t0;
cleanup:
    if (rc) probe_result_finish(res);
    adamw_finish(&ob);
    adamw_finish(&oa);
    free(gb);
    free(scratch);
    free(w_end);
    free(ga);
    free(h0);
    free(h1);
    free(xb);
    free(yb);
    free(order);
    model_ws_destroy(ws);
    adapter_destroy(head);
    model_destroy(pm);
    dataset_finish(&sub);
    dataset_finish(&hold);
    return rc;
}
