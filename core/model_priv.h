/* Private to core/: the model workspace and the pieces of the forward and backward passes, shared by
 * model_ws.c (workspace layout), model_linear.c (a linear with its adapter), model_fusion_site.c (attention
 * over fusion sources), model_mlp.c and model_vit.c (the passes) and model_run.c (the public entry points).
 * Not part of the public API.
 *
 * The workspace holds every activation the backward pass needs, in one allocation. Gradients of
 * activations use a few reusable scratch buffers rather than a mirror of every activation: the backward
 * pass walks the layers in reverse keeping one running gradient of the residual stream (`dres`). */
#ifndef CLAD_CORE_MODEL_PRIV_H
#define CLAD_CORE_MODEL_PRIV_H

#include "core/adapter_priv.h"
#include "core/layers.h"
#include "core/model.h"

typedef struct vit_block_acts {
    float *ln1, *ln1_mean, *ln1_rstd;  /* (BT,C) (BT) (BT) */
    float *qkv, *qkv_xa;               /* (BT,3C) (BT,R) */
    float *att;                        /* (B,NH,T,T) */
    float *atty;                       /* (BT,C) */
    float *proj_xa;                    /* (BT,R); proj's output goes straight into res1 */
    float *res1;                       /* (BT,C) */
    float *ln2, *ln2_mean, *ln2_rstd;  /* (BT,C) (BT) (BT) */
    float *fc1, *fc1_xa;               /* (BT,M) (BT,R) */
    float *gelu;                       /* (BT,M) */
    float *fc2_xa;                     /* (BT,R); fc2's output goes straight into res2 */
    float *res2;                       /* (BT,C) */
} vit_block_acts;

/* Activations of one fusion site: the fused output and the attention over sources; for an mlp also each
 * source's pre-activation, post-GELU output and LoRA product (a vit keeps those in fus_blocks). */
typedef struct fusion_site_acts {
    float *out, *q;                     /* (R,C) (R,C) */
    float *k, *v;                       /* (S,R,C) each */
    float *s;                           /* (R,S) */
    float *pre[FUSION_MAX_SOURCES];     /* mlp: (B,h) */
    float *post[FUSION_MAX_SOURCES];    /* mlp: (B,h) */
    float *xa[FUSION_MAX_SOURCES];      /* mlp: (B,R) */
} fusion_site_acts;

struct model_ws {
    const model *m;
    int max_batch, max_rank, max_classes, max_sources;
    bool with_grads;
    float *buf;
    /* mlp */
    float *mlp_pre[MODEL_MAX_HIDDEN];   /* (B,h) */
    float *mlp_post[MODEL_MAX_HIDDEN];  /* (B,h) */
    float *mlp_xa[MODEL_MAX_HIDDEN];    /* (B,R) */
    /* vit */
    float *patches;                     /* (B,P,pp) */
    float *emb, *emb_xa;                /* (B,P,C) (B*P,R) */
    float *tokens;                      /* (BT,C) */
    vit_block_acts *blocks;             /* depth */
    float *cls;                         /* (B,C) class-token rows of the last block */
    float *lnf, *lnf_mean, *lnf_rstd;   /* (B,C) (B) (B) */
    /* head */
    float *logits, *probs, *losses;     /* (B,K) (B,K) (B) */
    int *targets;                       /* (B) */
    int last_n;
    bool last_has_targets;
    bool last_fusion;                   /* the last forward ran a fusion adapter */
    const float *mlp_input;             /* the caller's x of the last forward (MLP backward reads it) */
    adapter_bufs bufs;                  /* lent to the adapter's kind: per linear (out,R), and (max out,R) */
    /* fusion (max_sources > 0) */
    fusion_site_acts fus[FUSION_MAX_SITES];
    vit_block_acts *fus_blocks;         /* vit: depth * max_sources, source n of block l at l*max_sources+n */
    float *fus_dh0;                     /* (R,C) */
    float *fus_dz;                      /* (S,R,C) */
    float *fus_tmp;                     /* (R,C) */
    float *fus_scratch;                 /* 3*R*C + R*S */
    /* backward scratch */
    float *dres, *dA_c, *dB_c;          /* (BT,C) each */
    float *dqkv;                        /* (BT,3C) */
    float *dM1, *dM2;                   /* (BT,M) */
    float *datt;                        /* (T,T) */
    float *dxa;                         /* (BT,R) */
    float *dlogits;                     /* (B,K) */
    float *dcls;                        /* (B,C) */
};

/* ---- a linear layer with its adapter (model_linear.c) ---- */
/* Output width of linear li: the adapter's class count for the head, else the model's. */
int lin_out(const model *m, const adapter *a, int li);
/* y (N,out) = x W^T + b [+ the adapter's LoRA product]; xa (N,r) is kept for backward. a's head replaces the
 * base head. */
void lin_forward(const model_ws *ws, float *y, float *xa, const float *x, const model *m, const adapter *a,
                 int li, int N);
/* The same with the fused epilogue (core/layers.h): y = res + (...) when res is not NULL, then act (N,out) =
 * the config's GELU of y when act is not NULL. */
void lin_forward_fused(const model_ws *ws, float *y, float *xa, const float *x, const model *m, const adapter *a,
                       int li, int N, const float *res, float *act);
/* dx (N,in) += ... (dx may be NULL); weight gradients go to base_grad / adapter_grad (either may be NULL). */
void lin_backward(float *dx, const float *dy, const float *x, const float *xa, model_ws *ws,
                  const model *m, const adapter *a, int li, int N, float *base_grad,
                  float *adapter_grad);
/* The same, but dx (N,in) is overwritten: no zeroing pass before it. */
void lin_backward_set(float *dx, const float *dy, const float *x, const float *xa, model_ws *ws,
                      const model *m, const adapter *a, int li, int N, float *base_grad,
                      float *adapter_grad);

/* ---- fusion sites (model_fusion_site.c) ---- */
/* The adapter's table selects the fusion path: sites over the sources' outputs. */
/* The activation and LayerNorm the config asks for (imported timm/HF ViTs: exact GELU, their eps). */
static inline void act_forward(const model_config *c, float *out, const float *x, size_t n)
{
    if (c->gelu_erf) gelu_erf_forward(out, x, n);
    else gelu_forward(out, x, n);
}

static inline void act_backward(const model_config *c, float *dx, const float *x, const float *dout, size_t n)
{
    if (c->gelu_erf) gelu_erf_backward(dx, x, dout, n);
    else gelu_backward(dx, x, dout, n);
}

/* The same, overwriting dx. */
static inline void act_backward_set(const model_config *c, float *dx, const float *x, const float *dout, size_t n)
{
    if (c->gelu_erf) gelu_erf_backward_set(dx, x, dout, n);
    else gelu_backward_set(dx, x, dout, n);
}

static inline void ln_forward(const model_config *c, float *out, float *mean, float *rstd, const float *x,
                              const float *w, const float *b, int N, int C)
{
    if (c->ln_eps > 0.0f) layernorm_forward_eps(out, mean, rstd, x, w, b, N, C, c->ln_eps);
    else layernorm_forward(out, mean, rstd, x, w, b, N, C);
}

static inline bool is_fusion(const adapter *a) { return a && a->ops->fuses_sources; }
/* Runs the attention over sources at `site` on R rows of width C; z[n] are the sources' outputs, h0 the
 * base output. The result is ws->fus[site].out. */
void site_fuse_forward(model_ws *ws, const adapter *a, int site, const float *h0, const float *const *z,
                       int R, int C);
/* From dout (R,C) at `site`, fills ws->fus_dh0 (R,C) and ws->fus_dz (S,R,C) (overwritten) and accumulates
 * the site's Q, K, V gradients. */
void site_fuse_backward(model_ws *ws, const adapter *a, int site, const float *dout, const float *h0,
                        const float *const *z, int R, int C, float *adapter_grad);

/* ---- the passes (model_mlp.c, model_vit.c) ---- */
/* Forward on N samples x up to the logits (ws->logits). */
void mlp_forward(model_ws *ws, const model *m, const adapter *a, const float *x, int N);
void vit_forward(model_ws *ws, const model *m, const adapter *a, const float *x, int N);
/* Backward of the last forward from ws->dlogits, accumulating into base_grad / adapter_grad (may be NULL). */
void mlp_backward(model_ws *ws, const model *m, const adapter *a, float *base_grad, float *adapter_grad);
void vit_backward(model_ws *ws, const model *m, const adapter *a, float *base_grad, float *adapter_grad);
/* Routing's depth features of the last forward's samples into out (N, D), D = model_depth_features_dim. */
void mlp_depth_features(const model_ws *ws, float *out, int D);
void vit_depth_features(const model_ws *ws, float *out, int D);

#endif
