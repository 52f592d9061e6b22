/* LoRA adapters (also how merged versions are stored): one (A, B) pair per adapted linear, scale alpha / r.
 * The reference kind: its table is what the others are measured against; see adapter_priv.h. */
#include <stdio.h>

#include "core/adapter_priv.h"

static void lora_init(adapter *a, const model *m, rng *r)
{
    for (int li = 0; li < a->n_linear; li++)
        if (a->rank[li]) adapter_init_A(a, m, li, r);
}

static float lora_scale(const adapter *a, int li)
{
    return a->alpha / (float)a->rank[li];
}

static void lora_delta(float *dW, const adapter *a, const model *m, int li)
{
    const model_linear *L = &m->linear[li];
    adapter_delta_add(dW, param_set_ptr(&a->params, a->A[li]), param_set_ptr(&a->params, a->B[li]), NULL, NULL,
                      lora_scale(a, li), L->out, L->in, a->rank[li]);
}

static const float *lora_B(const adapter *a, const adapter_bufs *bufs, int li)
{
    (void)bufs;
    return param_set_ptr(&a->params, a->B[li]);
}

static float *lora_dB(const adapter *a, adapter_bufs *bufs, float *adapter_grad, int li)
{
    (void)bufs;
    return adapter_grad + a->params.t[a->B[li]].offset;
}

static const adapter_ops lora_ops = {
    .kind = ADAPTER_LORA,
    .init = lora_init,
    .scale = lora_scale,
    .delta = lora_delta,
    .needs = adapter_needs_own_ranks,
    .lora_B = lora_B,
    .lora_dB = lora_dB,
};

adapter *adapter_create(const model *m, const int *ranks, float alpha, int n_classes, clad_err *err)
{
    adapter *a = adapter_alloc(m, &lora_ops, alpha, n_classes, err);
    if (!a) return NULL;
    char name[PARAM_NAME_MAX + 16];
    for (int li = 0; li < m->n_linear; li++) {
        const model_linear *L = &m->linear[li];
        int r = ranks ? ranks[li] : 0;
        if (adapter_check_rank(m, li, r, err)) {
            adapter_destroy(a);
            return NULL;
        }
        a->rank[li] = r;
        if (!r) continue;
        snprintf(name, sizeof name, "%s.lora_A.weight", L->name);
        a->A[li] = param_set_add(&a->params, name, 2, (int[]){r, L->in}, true);
        snprintf(name, sizeof name, "%s.lora_B.weight", L->name);
        a->B[li] = param_set_add(&a->params, name, 2, (int[]){L->out, r}, true);
    }
    if (adapter_finish_layout(a, m, err)) {
        adapter_destroy(a);
        return NULL;
    }
    return a;
}
