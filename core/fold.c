/* Folding an adapter into its base; see fold.h. */
#include "core/fold.h"

#include <stdlib.h>
#include <string.h>

#include "core/adapter_priv.h"

model *model_fold(const model *m, const adapter *a, clad_err *err)
{
    if (!adapter_has_lora_form(a)) {
        clad_err_set(err, CLAD_EINVAL, "a %s adapter cannot be folded into its base", adapter_kind_name(a->kind));
        return NULL;
    }
    model_config cfg = m->cfg;
    cfg.n_classes = a->n_classes;
    model *f = model_create(&cfg, err);
    if (!f) return NULL;
    /* Same layout except the head's class count: copy every tensor but the head by index. */
    for (int i = 0; i < m->params.n; i++) {
        int j = param_set_find(&f->params, m->params.t[i].name);
        if (j < 0 || f->params.t[j].numel != m->params.t[i].numel) continue;
        memcpy(param_set_ptr(&f->params, j), param_set_ptr(&m->params, i), m->params.t[i].numel * sizeof(float));
    }
    const model_linear *H = &f->linear[f->n_linear - 1];
    memcpy(param_set_ptr(&f->params, H->weight), param_set_ptr(&a->params, a->head_w),
           a->params.t[a->head_w].numel * sizeof(float));
    memcpy(param_set_ptr(&f->params, H->bias), param_set_ptr(&a->params, a->head_b),
           a->params.t[a->head_b].numel * sizeof(float));
    size_t max_w = 0;
    for (int li = 0; li < m->n_linear; li++)
        if (a->rank[li] && (size_t)m->linear[li].in * (size_t)m->linear[li].out > max_w)
            max_w = (size_t)m->linear[li].in * (size_t)m->linear[li].out;
    float *delta = max_w ? malloc(max_w * sizeof *delta) : NULL;
    if (max_w && !delta) {
        model_destroy(f);
        clad_err_set(err, CLAD_ENOMEM, "out of memory folding an adapter");
        return NULL;
    }
    for (int li = 0; li < m->n_linear; li++) {
        if (!a->rank[li]) continue;
        const model_linear *L = &f->linear[li];
        size_t n = (size_t)L->in * (size_t)L->out;
        adapter_delta(delta, a, m, li);
        float *W = param_set_ptr(&f->params, L->weight);
        for (size_t k = 0; k < n; k++) W[k] += delta[k];
    }
    free(delta);
    return f;
}
