/* The ViT's forward and backward passes: patch embedding, class token and positions, pre-LayerNorm blocks,
 * the final LayerNorm on the class token, then the head. Under a fusion adapter every block is a fusion
 * site, run once with the base and once per source. See model_priv.h. */
#include <string.h>

#include "core/layers.h"
#include "core/model_priv.h"

/* Value and gradient (NULL when the base is frozen) of base tensor i, an index from m->vit. */
static float *pgrad(float *base_grad, const model *m, int i)
{
    return base_grad ? base_grad + m->params.t[i].offset : NULL;
}

static const float *pval(const model *m, int i)
{
    return param_set_ptr(&m->params, i);
}

/* Linear indices of block l: patch_embed is 0, then 4 per block. */
static int blk_lin(int l, int which) { return 1 + 4 * l + which; }
enum { QKV, PROJ, FC1, FC2 };

/* Block l on res_in (BT,C) with adapter a (NULL = base weights); the output is b->res2. */
static void vit_block_forward(model_ws *ws, const model *m, const adapter *a, vit_block_acts *b,
                              const float *res_in, int l, int N)
{
    const model_config *c = &m->cfg;
    int T = m->seq_len, C = c->dim, BT = N * T;
    const model_norm *ln1 = &m->vit.ln1[l], *ln2 = &m->vit.ln2[l];
    ln_forward(&m->cfg, b->ln1, b->ln1_mean, b->ln1_rstd, res_in, pval(m, ln1->weight), pval(m, ln1->bias), BT, C);
    lin_forward(ws, b->qkv, b->qkv_xa, b->ln1, m, a, blk_lin(l, QKV), BT);
    attention_forward(b->atty, b->att, b->qkv, N, T, C, c->heads);
    lin_forward_fused(ws, b->res1, b->proj_xa, b->atty, m, a, blk_lin(l, PROJ), BT, res_in, NULL);
    ln_forward(&m->cfg, b->ln2, b->ln2_mean, b->ln2_rstd, b->res1, pval(m, ln2->weight), pval(m, ln2->bias), BT, C);
    lin_forward_fused(ws, b->fc1, b->fc1_xa, b->ln2, m, a, blk_lin(l, FC1), BT, NULL, b->gelu);
    lin_forward_fused(ws, b->res2, b->fc2_xa, b->gelu, m, a, blk_lin(l, FC2), BT, b->res1, NULL);
}

/* Backward through block l: dres (BT,C) holds d(res2) on entry and d(res_in) on return. */
static void vit_block_backward(model_ws *ws, const model *m, const adapter *a, const vit_block_acts *b,
                               const float *res_in, float *dres, int l, int N, float *base_grad, float *adapter_grad)
{
    const model_config *c = &m->cfg;
    int T = m->seq_len, C = c->dim, M = c->mlp_dim, BT = N * T;
    size_t nBTM = (size_t)BT * (size_t)M;
    const model_norm *ln1 = &m->vit.ln1[l], *ln2 = &m->vit.ln2[l];
    /* MLP half: res2 = res1 + fc2(gelu(fc1(ln2(res1)))) */
    lin_backward_set(ws->dM1, dres, b->gelu, b->fc2_xa, ws, m, a, blk_lin(l, FC2), BT, base_grad, adapter_grad);
    act_backward_set(&m->cfg, ws->dM2, b->fc1, ws->dM1, nBTM);
    lin_backward_set(ws->dA_c, ws->dM2, b->ln2, b->fc1_xa, ws, m, a, blk_lin(l, FC1), BT, base_grad, adapter_grad);
    layernorm_backward(dres, pgrad(base_grad, m, ln2->weight), pgrad(base_grad, m, ln2->bias), ws->dA_c, b->res1,
                       pval(m, ln2->weight), b->ln2_mean, b->ln2_rstd, BT, C);
    /* attention half: res1 = res_in + proj(attn(qkv(ln1(res_in)))) */
    lin_backward_set(ws->dA_c, dres, b->atty, b->proj_xa, ws, m, a, blk_lin(l, PROJ), BT, base_grad, adapter_grad);
    attention_backward_set(ws->dqkv, ws->datt, ws->dA_c, b->qkv, b->att, N, T, C, c->heads);
    lin_backward_set(ws->dB_c, ws->dqkv, b->ln1, b->qkv_xa, ws, m, a, blk_lin(l, QKV), BT, base_grad, adapter_grad);
    layernorm_backward(dres, pgrad(base_grad, m, ln1->weight), pgrad(base_grad, m, ln1->bias), ws->dB_c, res_in,
                       pval(m, ln1->weight), b->ln1_mean, b->ln1_rstd, BT, C);
}

/* Block l under a fusion adapter: the base run (ws->blocks[l]), one run per source, then the fusion. */
static const float *vit_fuse_forward(model_ws *ws, const model *m, const adapter *a, const float *res_in, int l,
                                     int N)
{
    int S = a->fusion.n_sources;
    const float *z[FUSION_MAX_SOURCES];
    for (int n = 0; n < S; n++) {
        vit_block_acts *b = &ws->fus_blocks[(size_t)l * ws->max_sources + n];
        vit_block_forward(ws, m, a->fusion.source[n], b, res_in, l, N);
        z[n] = b->res2;
    }
    site_fuse_forward(ws, a, l, ws->blocks[l].res2, z, N * m->seq_len, m->cfg.dim);
    return ws->fus[l].out;
}

/* ws->dres holds d(fused output of block l) on entry and d(res_in) on return. */
static void vit_fuse_backward(model_ws *ws, const model *m, const adapter *a, const float *res_in, int l, int N,
                              float *base_grad, float *adapter_grad)
{
    int S = a->fusion.n_sources, BT = N * m->seq_len, C = m->cfg.dim;
    size_t nBTC = (size_t)BT * (size_t)C;
    const float *z[FUSION_MAX_SOURCES];
    for (int n = 0; n < S; n++) z[n] = ws->fus_blocks[(size_t)l * ws->max_sources + n].res2;
    site_fuse_backward(ws, a, l, ws->dres, ws->blocks[l].res2, z, BT, C, adapter_grad);
    memcpy(ws->dres, ws->fus_dh0, nBTC * sizeof(float));
    vit_block_backward(ws, m, NULL, &ws->blocks[l], res_in, ws->dres, l, N, base_grad, NULL);
    for (int n = 0; n < S; n++) {
        float *dz = ws->fus_dz + n * nBTC;
        vit_block_backward(ws, m, a->fusion.source[n], &ws->fus_blocks[(size_t)l * ws->max_sources + n], res_in, dz,
                           l, N, base_grad, NULL);
        for (size_t k = 0; k < nBTC; k++) ws->dres[k] += dz[k];
    }
}

void vit_forward(model_ws *ws, const model *m, const adapter *a, const float *x, int N)
{
    const model_config *c = &m->cfg;
    int T = m->seq_len, P = T - 1, C = c->dim;
    bool fuse = is_fusion(a);
    patchify_forward(ws->patches, x, N, c->channels, c->height, c->width, c->patch, c->patch);
    lin_forward(ws, ws->emb, ws->emb_xa, ws->patches, m, a, 0, N * P);
    tokens_forward(ws->tokens, ws->emb, pval(m, m->vit.cls_token), pval(m, m->vit.pos_embed), N, P, C);
    const float *res = ws->tokens;
    for (int l = 0; l < c->depth; l++) {
        vit_block_forward(ws, m, fuse ? NULL : a, &ws->blocks[l], res, l, N);
        res = fuse ? vit_fuse_forward(ws, m, a, res, l, N) : ws->blocks[l].res2;
    }
    /* Only the class token reaches the head, so the final LayerNorm runs on those rows alone. */
    for (int n = 0; n < N; n++) memcpy(ws->cls + (size_t)n * C, res + (size_t)n * T * C, (size_t)C * sizeof(float));
    const model_norm *lnf = &m->vit.ln;
    ln_forward(&m->cfg, ws->lnf, ws->lnf_mean, ws->lnf_rstd, ws->cls, pval(m, lnf->weight), pval(m, lnf->bias), N, C);
    lin_forward(ws, ws->logits, NULL, ws->lnf, m, a, m->n_linear - 1, N);
}

void vit_backward(model_ws *ws, const model *m, const adapter *a, float *base_grad, float *adapter_grad)
{
    const model_config *c = &m->cfg;
    int N = ws->last_n, T = m->seq_len, P = T - 1, C = c->dim, BT = N * T;
    size_t nBTC = (size_t)BT * (size_t)C;
    bool fuse = is_fusion(a);

    memset(ws->dcls, 0, (size_t)N * C * sizeof(float));
    lin_backward_set(ws->dA_c, ws->dlogits, ws->lnf, NULL, ws, m, a, m->n_linear - 1, N, base_grad, adapter_grad);
    const model_norm *lnf = &m->vit.ln;
    layernorm_backward(ws->dcls, pgrad(base_grad, m, lnf->weight), pgrad(base_grad, m, lnf->bias), ws->dA_c, ws->cls,
                       pval(m, lnf->weight), ws->lnf_mean, ws->lnf_rstd, N, C);
    memset(ws->dres, 0, nBTC * sizeof(float));
    for (int n = 0; n < N; n++) memcpy(ws->dres + (size_t)n * T * C, ws->dcls + (size_t)n * C, (size_t)C * sizeof(float));

    for (int l = c->depth - 1; l >= 0; l--) {
        const float *res_in = !l ? ws->tokens : fuse ? ws->fus[l - 1].out : ws->blocks[l - 1].res2;
        if (fuse) vit_fuse_backward(ws, m, a, res_in, l, N, base_grad, adapter_grad);
        else vit_block_backward(ws, m, a, &ws->blocks[l], res_in, ws->dres, l, N, base_grad, adapter_grad);
    }
    /* Input side: only parameters can need gradients here (the images do not). */
    bool embed_trains = base_grad || (a && a->rank[0]);
    if (!embed_trains) return;
    float *demb = ws->dA_c;
    memset(demb, 0, (size_t)N * P * C * sizeof(float));
    tokens_backward(demb, pgrad(base_grad, m, m->vit.cls_token), pgrad(base_grad, m, m->vit.pos_embed), ws->dres, N, P,
                    C);
    lin_backward(NULL, demb, ws->patches, ws->emb_xa, ws, m, a, 0, N * P, base_grad, adapter_grad);
}

void vit_depth_features(const model_ws *ws, float *out, int D)
{
    const model *m = ws->m;
    int T = m->seq_len, C = m->cfg.dim;
    for (int n = 0; n < ws->last_n; n++) {
        float *o = out + (size_t)n * D;
        for (int l = 0; l < m->cfg.depth; l++, o += C) {
            const float *res = ws->blocks[l].res2 + (size_t)n * T * C;
            for (int k = 0; k < C; k++) {
                double acc = 0;
                for (int t = 0; t < T; t++) acc += (double)res[(size_t)t * C + k];
                o[k] = (float)(acc / T);
            }
        }
        memcpy(o, ws->lnf + (size_t)n * C, (size_t)C * sizeof *o);
    }
}
