/* A fusion site: the attention over the sources' outputs (core/fusion.h's kernels) on the workspace's
 * buffers for that site; the passes (model_mlp.c, model_vit.c) run the sources and call these. */
#include <string.h>

#include "core/fusion.h"
#include "core/model_priv.h"

void site_fuse_forward(model_ws *ws, const adapter *a, int site, const float *h0, const float *const *z,
                       int R, int C)
{
    const param_set *p = &a->params;
    fusion_site_acts *f = &ws->fus[site];
    const adapter_fusion *fu = &a->fusion;
    fusion_forward(f->out, f->s, f->q, f->k, f->v, h0, z, param_set_ptr(p, fu->q_w[site]),
                   param_set_ptr(p, fu->q_b[site]), param_set_ptr(p, fu->k_w[site]), param_set_ptr(p, fu->k_b[site]),
                   param_set_ptr(p, fu->v_w[site]), R, C, fu->n_sources);
}

void site_fuse_backward(model_ws *ws, const adapter *a, int site, const float *dout, const float *h0,
                        const float *const *z, int R, int C, float *adapter_grad)
{
    const param_set *p = &a->params;
    const adapter_fusion *fu = &a->fusion;
    fusion_site_acts *f = &ws->fus[site];
    int S = fu->n_sources;
    size_t RC = (size_t)R * (size_t)C;
    float *dz[FUSION_MAX_SOURCES];
    for (int n = 0; n < S; n++) dz[n] = ws->fus_dz + n * RC;
    memset(ws->fus_dh0, 0, RC * sizeof(float));
    memset(ws->fus_dz, 0, (size_t)S * RC * sizeof(float));
#define G(idx) (adapter_grad ? adapter_grad + p->t[idx].offset : NULL)
    fusion_backward(ws->fus_dh0, dz, G(fu->q_w[site]), G(fu->q_b[site]), G(fu->k_w[site]), G(fu->k_b[site]),
                    G(fu->v_w[site]), ws->fus_scratch, dout, h0, z, f->s, f->q, f->k, f->v,
                    param_set_ptr(p, fu->q_w[site]), param_set_ptr(p, fu->k_w[site]), param_set_ptr(p, fu->v_w[site]),
                    R, C, S);
#undef G
}
