/* The public forward and backward entry points (see model.h): they pick the model's pass (model_mlp.c,
 * model_vit.c), let the adapter's kind prepare through its table (core/adapter_priv.h: a tied adapter forms
 * its Beff_l = diag(v_l) B diag(u_l)), and add the kind's penalty (fusion's). The loss sits here too. */
#include <assert.h>
#include <string.h>

#include "core/layers.h"
#include "core/model_priv.h"

/* Probabilities and per-sample losses of the logits in ws; the mean loss, or 0 without targets. */
static float loss_forward(model_ws *ws, const int *targets, int N, int K)
{
    ws->last_has_targets = targets != NULL;
    if (!targets) {
        /* Probabilities only: a dummy target keeps one code path; the loss is discarded. */
        memset(ws->targets, 0, (size_t)N * sizeof *ws->targets);
        crossentropy_forward(ws->probs, ws->losses, ws->logits, ws->targets, N, K);
        return 0.0f;
    }
    memcpy(ws->targets, targets, (size_t)N * sizeof *targets);
    return crossentropy_forward(ws->probs, ws->losses, ws->logits, targets, N, K);
}

float model_forward(model_ws *ws, const model *m, const adapter *a, const float *x, const int *targets, int N)
{
    assert(N >= 1 && N <= ws->max_batch);
    assert(model_ws_fits(ws, m, a));
    ws->last_n = N;
    ws->mlp_input = x;
    ws->last_fusion = is_fusion(a);
    if (a && a->ops->prepare) a->ops->prepare(a, m, &ws->bufs);
    if (m->cfg.kind == MODEL_MLP) mlp_forward(ws, m, a, x, N);
    else vit_forward(ws, m, a, x, N);
    float loss = loss_forward(ws, targets, N, lin_out(m, a, m->n_linear - 1));
    if (targets && a && a->ops->penalty) loss += a->ops->penalty(a);
    return loss;
}

void model_backward(model_ws *ws, const model *m, const adapter *a, float *base_grad, float *adapter_grad)
{
    int N = ws->last_n, K = lin_out(m, a, m->n_linear - 1);
    memset(ws->dlogits, 0, (size_t)N * K * sizeof(float));
    crossentropy_backward(ws->dlogits, ws->probs, ws->targets, 1.0f / (float)N, N, K);
    if (m->cfg.kind == MODEL_MLP) mlp_backward(ws, m, a, base_grad, adapter_grad);
    else vit_backward(ws, m, a, base_grad, adapter_grad);
    if (a && adapter_grad && a->ops->penalty_backward) a->ops->penalty_backward(adapter_grad, a);
}
