/* One linear layer with its adapter: the base product (or the adapter's head) plus the LoRA product the
 * adapter's kind supplies through its table; see model_priv.h. */
#include <string.h>

#include "core/layers.h"
#include "core/model_priv.h"

static const float *lin_weight(const model *m, const adapter *a, int li)
{
    const model_linear *L = &m->linear[li];
    if (L->is_head && a) return param_set_ptr(&a->params, a->head_w);
    return param_set_ptr(&m->params, L->weight);
}

static const float *lin_bias(const model *m, const adapter *a, int li)
{
    const model_linear *L = &m->linear[li];
    if (L->is_head && a) return param_set_ptr(&a->params, a->head_b);
    return param_set_ptr(&m->params, L->bias);
}

int lin_out(const model *m, const adapter *a, int li)
{
    return m->linear[li].is_head && a ? a->n_classes : m->linear[li].out;
}

void lin_forward_fused(const model_ws *ws, float *y, float *xa, const float *x, const model *m, const adapter *a,
                       int li, int N, const float *res, float *act)
{
    const model_linear *L = &m->linear[li];
    linear_epilogue e = {.res = res, .act = act};
    if (act) e.act_kind = m->cfg.gelu_erf ? LINEAR_ACT_GELU_ERF : LINEAR_ACT_GELU;
    if (a && a->rank[li]) {
        e.A = param_set_ptr(&a->params, a->A[li]);
        e.B = a->ops->lora_B(a, &ws->bufs, li);
        e.xa = xa;
        e.scale = adapter_scale(a, li);
        e.r = a->rank[li];
    }
    linear_forward_fused(y, x, lin_weight(m, a, li), lin_bias(m, a, li), &e, N, L->in, lin_out(m, a, li));
}

void lin_forward(const model_ws *ws, float *y, float *xa, const float *x, const model *m, const adapter *a,
                 int li, int N)
{
    lin_forward_fused(ws, y, xa, x, m, a, li, N, NULL, NULL);
}

static void lin_backward_job(float *dx, const float *dy, const float *x, const float *xa, model_ws *ws,
                             const model *m, const adapter *a, int li, int N, float *base_grad, float *adapter_grad,
                             bool dx_set)
{
    const model_linear *L = &m->linear[li];
    int out = lin_out(m, a, li);
    float *dW = NULL, *db = NULL;
    if (L->is_head && a) {
        if (adapter_grad) {
            dW = adapter_grad + a->params.t[a->head_w].offset;
            db = adapter_grad + a->params.t[a->head_b].offset;
        }
    } else if (base_grad) {
        dW = base_grad + m->params.t[L->weight].offset;
        db = base_grad + m->params.t[L->bias].offset;
    }
    /* The base product writes dx (or adds to it); the LoRA product then adds its part. */
    if (dx_set) linear_backward_set(dx, dW, db, dy, x, lin_weight(m, a, li), N, L->in, out);
    else linear_backward(dx, dW, db, dy, x, lin_weight(m, a, li), N, L->in, out);
    if (!a || !a->rank[li]) return;
    int r = a->rank[li];
    const float *A = param_set_ptr(&a->params, a->A[li]), *B = a->ops->lora_B(a, &ws->bufs, li);
    /* A tied layer's dA lands in the shared A's gradient, accumulating over the group's layers. */
    float *dA = adapter_grad ? adapter_grad + a->params.t[a->A[li]].offset : NULL;
    float *dB = adapter_grad ? a->ops->lora_dB(a, &ws->bufs, adapter_grad, li) : NULL;
    lora_backward(dx, dA, dB, ws->dxa, dy, x, xa, A, B, adapter_scale(a, li), N, L->in, out, r);
    if (adapter_grad && a->ops->map_dB) a->ops->map_dB(a, &ws->bufs, adapter_grad, li);
}

void lin_backward(float *dx, const float *dy, const float *x, const float *xa, model_ws *ws,
                  const model *m, const adapter *a, int li, int N, float *base_grad,
                  float *adapter_grad)
{
    lin_backward_job(dx, dy, x, xa, ws, m, a, li, N, base_grad, adapter_grad, false);
}

void lin_backward_set(float *dx, const float *dy, const float *x, const float *xa, model_ws *ws,
                      const model *m, const adapter *a, int li, int N, float *base_grad,
                      float *adapter_grad)
{
    lin_backward_job(dx, dy, x, xa, ws, m, a, li, N, base_grad, adapter_grad, true);
}
