/* The MLP's forward and backward passes: hidden linears with GELU, then the head. Under a fusion adapter
 * every hidden layer is a fusion site: the base pre-activation is shared and each source adds its LoRA
 * product. See model_priv.h. */
#include <string.h>

#include "core/layers.h"
#include "core/model_priv.h"

/* Fusion at hidden layer i: the base pre-activation is shared, each source adds its LoRA product. */
static const float *mlp_fuse_forward(model_ws *ws, const model *m, const adapter *a, const float *h, int i, int N)
{
    const model_linear *L = &m->linear[i];
    fusion_site_acts *f = &ws->fus[i];
    size_t n = (size_t)N * (size_t)L->out;
    const float *z[FUSION_MAX_SOURCES];
    for (int s = 0; s < a->fusion.n_sources; s++) {
        const adapter *src = a->fusion.source[s];
        memcpy(f->pre[s], ws->mlp_pre[i], n * sizeof(float));
        if (src->rank[i])
            lora_forward(f->pre[s], f->xa[s], h, param_set_ptr(&src->params, src->A[i]),
                         param_set_ptr(&src->params, src->B[i]), adapter_scale(src, i), N, L->in, L->out, src->rank[i]);
        act_forward(&m->cfg, f->post[s], f->pre[s], n);
        z[s] = f->post[s];
    }
    site_fuse_forward(ws, a, i, ws->mlp_post[i], z, N, L->out);
    return f->out;
}

void mlp_forward(model_ws *ws, const model *m, const adapter *a, const float *x, int N)
{
    const model_config *c = &m->cfg;
    bool fuse = is_fusion(a);
    const float *h = x;
    for (int i = 0; i < c->n_hidden; i++) {
        lin_forward_fused(ws, ws->mlp_pre[i], ws->mlp_xa[i], h, m, fuse ? NULL : a, i, N, NULL, ws->mlp_post[i]);
        h = fuse ? mlp_fuse_forward(ws, m, a, h, i, N) : ws->mlp_post[i];
    }
    lin_forward(ws, ws->logits, NULL, h, m, a, m->n_linear - 1, N);
}

/* The input of hidden layer i (or of the head, i = n_hidden) in the last forward. */
static const float *mlp_layer_input(const model_ws *ws, const model *m, const adapter *a, const float *x, int i)
{
    if (i == 0) return x;
    return is_fusion(a) ? ws->fus[i - 1].out : ws->mlp_post[i - 1];
}

/* Backward through fusion site i and the N + 1 runs of hidden layer i: dout holds d(site output); dx
 * (may be NULL) receives d(layer input). */
static void mlp_fuse_backward(model_ws *ws, const model *m, const adapter *a, const float *in, const float *dout,
                              float *dx, float *dpre, int i, int N, float *base_grad, float *adapter_grad)
{
    const model_linear *L = &m->linear[i];
    fusion_site_acts *f = &ws->fus[i];
    int S = a->fusion.n_sources;
    size_t n = (size_t)N * (size_t)L->out;
    const float *z[FUSION_MAX_SOURCES];
    for (int s = 0; s < S; s++) z[s] = f->post[s];
    site_fuse_backward(ws, a, i, dout, ws->mlp_post[i], z, N, L->out, adapter_grad);
    /* dpre = the base run's d(pre) plus every source's: they all pass through the same W. */
    memset(dpre, 0, n * sizeof *dpre);
    act_backward(&m->cfg, dpre, ws->mlp_pre[i], ws->fus_dh0, n);
    if (dx) memset(dx, 0, (size_t)N * (size_t)L->in * sizeof *dx);
    for (int s = 0; s < S; s++) {
        const adapter *src = a->fusion.source[s];
        memset(ws->fus_tmp, 0, n * sizeof(float));
        act_backward(&m->cfg, ws->fus_tmp, f->pre[s], ws->fus_dz + (size_t)s * n, n);
        for (size_t k = 0; k < n; k++) dpre[k] += ws->fus_tmp[k];
        if (src->rank[i] && dx)
            lora_backward(dx, NULL, NULL, ws->dxa, ws->fus_tmp, in, f->xa[s], param_set_ptr(&src->params, src->A[i]),
                          param_set_ptr(&src->params, src->B[i]), adapter_scale(src, i), N, L->in, L->out,
                          src->rank[i]);
    }
    lin_backward(dx, dpre, in, NULL, ws, m, NULL, i, N, base_grad, NULL);
}

void mlp_backward(model_ws *ws, const model *m, const adapter *a, float *base_grad, float *adapter_grad)
{
    const model_config *c = &m->cfg;
    const float *x = ws->mlp_input;
    int N = ws->last_n, head = m->n_linear - 1;
    float *dcur = ws->dA_c, *dnext = ws->dB_c;
    const float *head_in = mlp_layer_input(ws, m, a, x, c->n_hidden);
    lin_backward_set(c->n_hidden ? dcur : NULL, ws->dlogits, head_in, NULL, ws, m, a, head, N, base_grad,
                 adapter_grad);
    for (int i = c->n_hidden - 1; i >= 0; i--) {
        size_t n = (size_t)N * (size_t)c->hidden[i];
        const float *in = mlp_layer_input(ws, m, a, x, i);
        if (is_fusion(a)) {
            /* dcur is read by the fusion backward before it is overwritten with d(input). */
            mlp_fuse_backward(ws, m, a, in, dcur, i > 0 ? dcur : NULL, dnext, i, N, base_grad, adapter_grad);
            continue;
        }
        /* dcur holds d(post_i); turn it into d(pre_i) in dnext, then back through linear i. */
        act_backward_set(&m->cfg, dnext, ws->mlp_pre[i], dcur, n);
        lin_backward_set(i > 0 ? dcur : NULL, dnext, in, ws->mlp_xa[i], ws, m, a, i, N, base_grad, adapter_grad);
    }
}

void mlp_depth_features(const model_ws *ws, float *out, int D)
{
    const model_config *c = &ws->m->cfg;
    for (int n = 0; n < ws->last_n; n++) {
        float *o = out + (size_t)n * D;
        if (!c->n_hidden) {
            memcpy(o, ws->mlp_input + (size_t)n * c->input_dim, (size_t)c->input_dim * sizeof *o);
            continue;
        }
        for (int i = 0; i < c->n_hidden; i++) {
            memcpy(o, ws->mlp_post[i] + (size_t)n * c->hidden[i], (size_t)c->hidden[i] * sizeof *o);
            o += c->hidden[i];
        }
    }
}
