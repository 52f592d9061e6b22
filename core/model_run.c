/* Forward and backward passes of the MLP and the ViT, with LoRA, tied and fusion adapters; see model.h.
 *
 * The workspace holds every activation the backward pass needs, in one allocation. Gradients of
 * activations use a few reusable scratch buffers rather than a mirror of every activation: the backward
 * pass walks the layers in reverse keeping one running gradient of the residual stream (`dres`).
 *
 * A tied adapter runs as a LoRA whose B for layer l is Beff_l = diag(v_l) B diag(u_l), formed in the
 * workspace at the start of each forward (core/tied.c). A fusion adapter runs every fusion site once with
 * the base and once per source, each with its own activations, and combines them (core/fusion.h).
 */
#include "core/model.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/adapter_priv.h"
#include "core/fusion.h"
#include "core/layers.h"

typedef struct vit_block_acts {
    float *ln1, *ln1_mean, *ln1_rstd;  /* (BT,C) (BT) (BT) */
    float *qkv, *qkv_xa;               /* (BT,3C) (BT,R) */
    float *att;                        /* (B,NH,T,T) */
    float *atty;                       /* (BT,C) */
    float *proj, *proj_xa;             /* (BT,C) (BT,R) */
    float *res1;                       /* (BT,C) */
    float *ln2, *ln2_mean, *ln2_rstd;  /* (BT,C) (BT) (BT) */
    float *fc1, *fc1_xa;               /* (BT,M) (BT,R) */
    float *gelu;                       /* (BT,M) */
    float *fc2, *fc2_xa;               /* (BT,C) (BT,R) */
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
    /* tied */
    float *beff;                        /* per linear (out,R) at beff_off[li]: Beff of a tl6 adapter */
    size_t beff_off[MODEL_MAX_LINEARS];
    float *dbeff;                       /* (max out, R) */
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

/* Two-pass bump allocation: with base == NULL it only counts. */
typedef struct bump {
    float *base;
    size_t used;
} bump;

static float *take(bump *b, size_t n)
{
    float *p = b->base ? b->base + b->used : NULL;
    b->used += n + (16 - n % 16) % 16; /* keep every buffer 64-byte aligned relative to the base */
    return p;
}

static void layout_block(vit_block_acts *a, bump *b, size_t B, size_t T, size_t C, size_t M, size_t NH,
                         size_t R)
{
    size_t BT = B * T;
    a->ln1 = take(b, BT * C);
    a->ln1_mean = take(b, BT);
    a->ln1_rstd = take(b, BT);
    a->qkv = take(b, BT * 3 * C);
    a->qkv_xa = take(b, BT * R);
    a->att = take(b, B * NH * T * T);
    a->atty = take(b, BT * C);
    a->proj = take(b, BT * C);
    a->proj_xa = take(b, BT * R);
    a->res1 = take(b, BT * C);
    a->ln2 = take(b, BT * C);
    a->ln2_mean = take(b, BT);
    a->ln2_rstd = take(b, BT);
    a->fc1 = take(b, BT * M);
    a->fc1_xa = take(b, BT * R);
    a->gelu = take(b, BT * M);
    a->fc2 = take(b, BT * C);
    a->fc2_xa = take(b, BT * R);
    a->res2 = take(b, BT * C);
}

/* Fusion site buffers for R rows of width C. */
static void layout_site(fusion_site_acts *f, bump *b, size_t R, size_t C, size_t S)
{
    f->out = take(b, R * C);
    f->q = take(b, R * C);
    f->k = take(b, S * R * C);
    f->v = take(b, S * R * C);
    f->s = take(b, R * S);
}

static void ws_layout(model_ws *ws, const model *m, bump *b)
{
    const model_config *c = &m->cfg;
    size_t B = (size_t)ws->max_batch, R = (size_t)ws->max_rank, K = (size_t)ws->max_classes;
    size_t S = (size_t)ws->max_sources;
    size_t widest = 0, max_out = 0, beff = 0;
    for (int li = 0; li < m->n_linear; li++) {
        ws->beff_off[li] = beff;
        beff += (size_t)m->linear[li].out * R;
        if ((size_t)m->linear[li].out > max_out) max_out = (size_t)m->linear[li].out;
    }
    ws->beff = take(b, beff);
    if (ws->with_grads) ws->dbeff = take(b, max_out * R);
    if (c->kind == MODEL_MLP) {
        widest = (size_t)c->input_dim;
        for (int i = 0; i < c->n_hidden; i++) {
            size_t h = (size_t)c->hidden[i];
            if (h > widest) widest = h;
            ws->mlp_pre[i] = take(b, B * h);
            ws->mlp_post[i] = take(b, B * h);
            ws->mlp_xa[i] = take(b, B * R);
            if (!S) continue;
            fusion_site_acts *f = &ws->fus[i];
            layout_site(f, b, B, h, S);
            for (size_t n = 0; n < S; n++) {
                f->pre[n] = take(b, B * h);
                f->post[n] = take(b, B * h);
                f->xa[n] = take(b, B * R);
            }
        }
        if (ws->with_grads) {
            ws->dA_c = take(b, B * widest);
            ws->dB_c = take(b, B * widest);
            ws->dxa = take(b, B * R);
            if (S) {
                ws->fus_dh0 = take(b, B * widest);
                ws->fus_dz = take(b, S * B * widest);
                ws->fus_tmp = take(b, B * widest);
                ws->fus_scratch = take(b, 3 * B * widest + B * S);
            }
        }
    } else {
        size_t T = (size_t)m->seq_len, P = T - 1, C = (size_t)c->dim, M = (size_t)c->mlp_dim;
        size_t NH = (size_t)c->heads, pp = (size_t)(c->channels * c->patch * c->patch), BT = B * T;
        ws->patches = take(b, B * P * pp);
        ws->emb = take(b, B * P * C);
        ws->emb_xa = take(b, B * P * R);
        ws->tokens = take(b, BT * C);
        for (int l = 0; l < c->depth; l++) {
            layout_block(&ws->blocks[l], b, B, T, C, M, NH, R);
            if (!S) continue;
            layout_site(&ws->fus[l], b, BT, C, S);
            for (size_t n = 0; n < S; n++) layout_block(&ws->fus_blocks[(size_t)l * S + n], b, B, T, C, M, NH, R);
        }
        ws->cls = take(b, B * C);
        ws->lnf = take(b, B * C);
        ws->lnf_mean = take(b, B);
        ws->lnf_rstd = take(b, B);
        widest = C;
        if (ws->with_grads) {
            ws->dres = take(b, BT * C);
            ws->dA_c = take(b, BT * C);
            ws->dB_c = take(b, BT * C);
            ws->dqkv = take(b, BT * 3 * C);
            ws->dM1 = take(b, BT * M);
            ws->dM2 = take(b, BT * M);
            ws->datt = take(b, T * T);
            ws->dxa = take(b, BT * R);
            ws->dcls = take(b, B * C);
            if (S) {
                ws->fus_dh0 = take(b, BT * C);
                ws->fus_dz = take(b, S * BT * C);
                ws->fus_tmp = take(b, BT * C);
                ws->fus_scratch = take(b, 3 * BT * C + BT * S);
            }
        }
    }
    ws->logits = take(b, B * K);
    ws->probs = take(b, B * K);
    ws->losses = take(b, B);
    if (ws->with_grads) ws->dlogits = take(b, B * K);
}

static model_ws *ws_create(const model *m, int max_batch, int max_rank, int max_classes, int max_sources,
                           bool with_grads, clad_err *err)
{
    if (max_batch < 1 || max_batch > 65536) {
        clad_err_set(err, CLAD_EINVAL, "batch size %d is outside [1, 65536]", max_batch);
        return NULL;
    }
    model_ws *ws = calloc(1, sizeof *ws);
    if (!ws) abort();
    ws->m = m;
    ws->max_batch = max_batch;
    ws->max_rank = max_rank < 1 ? 1 : max_rank;
    ws->max_classes = max_classes > m->cfg.n_classes ? max_classes : m->cfg.n_classes;
    ws->max_sources = max_sources < 0 ? 0 : max_sources;
    ws->with_grads = with_grads;
    if (m->cfg.kind == MODEL_VIT) {
        ws->blocks = calloc((size_t)m->cfg.depth, sizeof *ws->blocks);
        if (!ws->blocks) abort();
        if (ws->max_sources) {
            ws->fus_blocks = calloc((size_t)m->cfg.depth * (size_t)ws->max_sources, sizeof *ws->fus_blocks);
            if (!ws->fus_blocks) abort();
        }
    }
    ws->targets = calloc((size_t)max_batch, sizeof *ws->targets);
    bump b = {0};
    ws_layout(ws, m, &b);
    ws->buf = aligned_alloc(64, (b.used * sizeof(float) + 63) / 64 * 64);
    if (!ws->buf || !ws->targets) {
        clad_err_set(err, CLAD_ENOMEM, "cannot allocate a workspace of %zu MB for batch %d",
                     b.used * sizeof(float) >> 20, max_batch);
        model_ws_destroy(ws);
        return NULL;
    }
    memset(ws->buf, 0, b.used * sizeof(float));
    b = (bump){ws->buf, 0};
    ws_layout(ws, m, &b);
    return ws;
}

model_ws *model_ws_create(const model *m, int max_batch, int max_rank, int max_classes, bool with_grads,
                          clad_err *err)
{
    return ws_create(m, max_batch, max_rank, max_classes, 0, with_grads, err);
}

static int max_rank_of(const adapter *a)
{
    int r = 1;
    for (int li = 0; a && li < a->n_linear; li++)
        if (a->rank[li] > r) r = a->rank[li];
    return r;
}

model_ws *model_ws_create_for(const model *m, const adapter *a, int max_batch, bool with_grads, clad_err *err)
{
    int R = max_rank_of(a), S = 0;
    if (a && a->kind == ADAPTER_FUSION) {
        S = a->fusion.n_sources;
        for (int n = 0; n < S; n++) {
            int r = max_rank_of(a->fusion.source[n]);
            if (r > R) R = r;
        }
    }
    return ws_create(m, max_batch, R, a ? a->n_classes : m->cfg.n_classes, S, with_grads, err);
}

void model_ws_destroy(model_ws *ws)
{
    if (!ws) return;
    free(ws->buf);
    free(ws->blocks);
    free(ws->fus_blocks);
    free(ws->targets);
    free(ws);
}

static bool ranks_fit(const model_ws *ws, const adapter *a)
{
    for (int li = 0; li < a->n_linear; li++)
        if (a->rank[li] > ws->max_rank) return false;
    return true;
}

bool model_ws_fits(const model_ws *ws, const model *m, const adapter *a)
{
    if (ws->m != m) return false;
    if (!a) return true;
    if (a->n_classes > ws->max_classes || !ranks_fit(ws, a)) return false;
    if (a->kind == ADAPTER_FUSION) {
        if (a->fusion.n_sources > ws->max_sources) return false;
        for (int n = 0; n < a->fusion.n_sources; n++)
            if (!ranks_fit(ws, a->fusion.source[n])) return false;
    }
    return true;
}

int model_ws_max_batch(const model_ws *ws) { return ws->max_batch; }

const float *model_ws_probs(const model_ws *ws) { return ws->probs; }
const float *model_ws_logits(const model_ws *ws) { return ws->logits; }

int model_depth_features_dim(const model *m)
{
    const model_config *c = &m->cfg;
    if (c->kind == MODEL_VIT) return (c->depth + 1) * c->dim;
    int d = 0;
    for (int i = 0; i < c->n_hidden; i++) d += c->hidden[i];
    return c->n_hidden ? d : c->input_dim;
}

void model_ws_depth_features(const model_ws *ws, float *out)
{
    const model *m = ws->m;
    const model_config *c = &m->cfg;
    int N = ws->last_n, D = model_depth_features_dim(m);
    assert(!ws->last_fusion);
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * D;
        if (c->kind == MODEL_VIT) {
            int T = m->seq_len, C = c->dim;
            for (int l = 0; l < c->depth; l++, o += C) {
                const float *res = ws->blocks[l].res2 + (size_t)n * T * C;
                for (int k = 0; k < C; k++) {
                    double acc = 0;
                    for (int t = 0; t < T; t++) acc += (double)res[(size_t)t * C + k];
                    o[k] = (float)(acc / T);
                }
            }
            memcpy(o, ws->lnf + (size_t)n * C, (size_t)C * sizeof *o);
        } else if (!c->n_hidden) {
            memcpy(o, ws->mlp_input + (size_t)n * c->input_dim, (size_t)c->input_dim * sizeof *o);
        } else {
            for (int i = 0; i < c->n_hidden; i++) {
                memcpy(o, ws->mlp_post[i] + (size_t)n * c->hidden[i], (size_t)c->hidden[i] * sizeof *o);
                o += c->hidden[i];
            }
        }
    }
}


const float *model_ws_fusion_weights(const model_ws *ws, int site, int *rows)
{
    if (!ws->last_fusion || site < 0 || site >= FUSION_MAX_SITES || !ws->fus[site].s) return NULL;
    if (rows) *rows = ws->last_n * (ws->m->cfg.kind == MODEL_VIT ? ws->m->seq_len : 1);
    return ws->fus[site].s;
}

/* ---- one linear layer with its adapter ------------------------------------------------------- */

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

static int lin_out(const model *m, const adapter *a, int li)
{
    return m->linear[li].is_head && a ? a->n_classes : m->linear[li].out;
}

/* The B a LoRA product of linear li uses: the adapter's own, or for a tl6 tied adapter the Beff formed by
 * tied_prepare. */
static const float *lora_B(const model_ws *ws, const adapter *a, int li)
{
    if (a->kind == ADAPTER_TIED && a->tied.u[li] >= 0) return ws->beff + ws->beff_off[li];
    return param_set_ptr(&a->params, a->B[li]);
}

/* Beff_l = diag(v_l) B diag(u_l) for every tl6 layer (tl5 has u = v = 1 and uses B as it is). */
static void tied_prepare(model_ws *ws, const model *m, const adapter *a)
{
    for (int li = 0; li < a->n_linear; li++) {
        if (!a->rank[li] || a->tied.u[li] < 0) continue;
        tied_effective_B(ws->beff + ws->beff_off[li], param_set_ptr(&a->params, a->B[li]),
                         param_set_ptr(&a->params, a->tied.u[li]), param_set_ptr(&a->params, a->tied.v[li]),
                         m->linear[li].out, a->rank[li]);
    }
}

/* y (N,out) = x W^T + b [+ LoRA]; xa (N,r) is kept for backward. */
static void lin_forward(const model_ws *ws, float *y, float *xa, const float *x, const model *m, const adapter *a,
                        int li, int N)
{
    const model_linear *L = &m->linear[li];
    int out = lin_out(m, a, li);
    linear_forward(y, x, lin_weight(m, a, li), lin_bias(m, a, li), N, L->in, out);
    if (a && a->rank[li])
        lora_forward(y, xa, x, param_set_ptr(&a->params, a->A[li]), lora_B(ws, a, li), adapter_scale(a, li), N,
                     L->in, out, a->rank[li]);
}

/* dx (N,in) += ...; weight gradients go to base_grad / adapter_grad (either may be NULL). */
static void lin_backward(float *dx, const float *dy, const float *x, const float *xa, model_ws *ws,
                         const model *m, const adapter *a, int li, int N, float *base_grad,
                         float *adapter_grad)
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
    linear_backward(dx, dW, db, dy, x, lin_weight(m, a, li), N, L->in, out);
    if (!a || !a->rank[li]) return;
    int r = a->rank[li];
    const float *A = param_set_ptr(&a->params, a->A[li]), *B = lora_B(ws, a, li);
    /* A tied layer's dA lands in the shared A's gradient, accumulating over the group's layers. */
    float *dA = adapter_grad ? adapter_grad + a->params.t[a->A[li]].offset : NULL;
    float *dB = adapter_grad ? adapter_grad + a->params.t[a->B[li]].offset : NULL;
    if (a->kind == ADAPTER_TIED && a->tied.u[li] >= 0 && dB) {
        /* tl6: the LoRA kernel gives dBeff; map it to the shared dB and this layer's du, dv. */
        size_t n = (size_t)out * (size_t)r;
        memset(ws->dbeff, 0, n * sizeof *ws->dbeff);
        lora_backward(dx, dA, ws->dbeff, ws->dxa, dy, x, xa, A, B, adapter_scale(a, li), N, L->in, out, r);
        tied_backward_scales(dB, adapter_grad + a->params.t[a->tied.u[li]].offset,
                             adapter_grad + a->params.t[a->tied.v[li]].offset, ws->dbeff,
                             param_set_ptr(&a->params, a->B[li]), param_set_ptr(&a->params, a->tied.u[li]),
                             param_set_ptr(&a->params, a->tied.v[li]), out, r);
        return;
    }
    lora_backward(dx, dA, dB, ws->dxa, dy, x, xa, A, B, adapter_scale(a, li), N, L->in, out, r);
}

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

/* ---- fusion sites --------------------------------------------------------------------------------- */

static bool is_fusion(const adapter *a) { return a && a->kind == ADAPTER_FUSION; }

/* Runs the attention over sources at `site`; z[n] are the sources' outputs, h0 the base output. */
static void site_fuse_forward(model_ws *ws, const adapter *a, int site, const float *h0, const float *const *z,
                              int R, int C)
{
    const param_set *p = &a->params;
    fusion_site_acts *f = &ws->fus[site];
    const adapter_fusion *fu = &a->fusion;
    fusion_forward(f->out, f->s, f->q, f->k, f->v, h0, z, param_set_ptr(p, fu->q_w[site]),
                   param_set_ptr(p, fu->q_b[site]), param_set_ptr(p, fu->k_w[site]), param_set_ptr(p, fu->k_b[site]),
                   param_set_ptr(p, fu->v_w[site]), R, C, fu->n_sources);
}

/* From dout (R,C) at `site`, fills ws->fus_dh0 (R,C) and ws->fus_dz (S,R,C) (overwritten) and accumulates
 * the site's Q, K, V gradients. */
static void site_fuse_backward(model_ws *ws, const adapter *a, int site, const float *dout, const float *h0,
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

/* ---- MLP ------------------------------------------------------------------------------------------ */

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
        gelu_forward(f->post[s], f->pre[s], n);
        z[s] = f->post[s];
    }
    site_fuse_forward(ws, a, i, ws->mlp_post[i], z, N, L->out);
    return f->out;
}

static float mlp_forward(model_ws *ws, const model *m, const adapter *a, const float *x, const int *targets,
                         int N)
{
    const model_config *c = &m->cfg;
    bool fuse = is_fusion(a);
    const float *h = x;
    for (int i = 0; i < c->n_hidden; i++) {
        lin_forward(ws, ws->mlp_pre[i], ws->mlp_xa[i], h, m, fuse ? NULL : a, i, N);
        gelu_forward(ws->mlp_post[i], ws->mlp_pre[i], (size_t)N * (size_t)c->hidden[i]);
        h = fuse ? mlp_fuse_forward(ws, m, a, h, i, N) : ws->mlp_post[i];
    }
    lin_forward(ws, ws->logits, NULL, h, m, a, m->n_linear - 1, N);
    return loss_forward(ws, targets, N, lin_out(m, a, m->n_linear - 1));
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
    gelu_backward(dpre, ws->mlp_pre[i], ws->fus_dh0, n);
    if (dx) memset(dx, 0, (size_t)N * (size_t)L->in * sizeof *dx);
    for (int s = 0; s < S; s++) {
        const adapter *src = a->fusion.source[s];
        memset(ws->fus_tmp, 0, n * sizeof(float));
        gelu_backward(ws->fus_tmp, f->pre[s], ws->fus_dz + (size_t)s * n, n);
        for (size_t k = 0; k < n; k++) dpre[k] += ws->fus_tmp[k];
        if (src->rank[i] && dx)
            lora_backward(dx, NULL, NULL, ws->dxa, ws->fus_tmp, in, f->xa[s], param_set_ptr(&src->params, src->A[i]),
                          param_set_ptr(&src->params, src->B[i]), adapter_scale(src, i), N, L->in, L->out,
                          src->rank[i]);
    }
    lin_backward(dx, dpre, in, NULL, ws, m, NULL, i, N, base_grad, NULL);
}

static void mlp_backward(model_ws *ws, const model *m, const adapter *a, const float *x, float *base_grad,
                         float *adapter_grad)
{
    const model_config *c = &m->cfg;
    int N = ws->last_n, head = m->n_linear - 1;
    float *dcur = ws->dA_c, *dnext = ws->dB_c;
    const float *head_in = mlp_layer_input(ws, m, a, x, c->n_hidden);
    size_t head_in_n = (size_t)N * (size_t)m->linear[head].in;
    memset(dcur, 0, head_in_n * sizeof *dcur);
    lin_backward(c->n_hidden ? dcur : NULL, ws->dlogits, head_in, NULL, ws, m, a, head, N, base_grad,
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
        memset(dnext, 0, n * sizeof *dnext);
        gelu_backward(dnext, ws->mlp_pre[i], dcur, n);
        float *dx = NULL;
        if (i > 0) {
            dx = dcur;
            memset(dx, 0, (size_t)N * (size_t)c->hidden[i - 1] * sizeof *dx);
        }
        lin_backward(dx, dnext, in, ws->mlp_xa[i], ws, m, a, i, N, base_grad, adapter_grad);
    }
}

/* ---- ViT ------------------------------------------------------------------------------------------ */

static float *pgrad(float *base_grad, const model *m, const char *name)
{
    if (!base_grad) return NULL;
    int i = param_set_find(&m->params, name);
    return base_grad + m->params.t[i].offset;
}

static const float *pval(const model *m, const char *name)
{
    return param_set_ptr(&m->params, param_set_find(&m->params, name));
}

/* Linear indices of block l: patch_embed is 0, then 4 per block. */
static int blk_lin(int l, int which) { return 1 + 4 * l + which; }
enum { QKV, PROJ, FC1, FC2 };

/* Block l on res_in (BT,C) with adapter a (NULL = base weights); the output is b->res2. */
static void vit_block_forward(model_ws *ws, const model *m, const adapter *a, vit_block_acts *b,
                              const float *res_in, int l, int N)
{
    const model_config *c = &m->cfg;
    int T = m->seq_len, C = c->dim, M = c->mlp_dim, BT = N * T;
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, "blocks.%d.ln1.weight", l);
    const float *ln1w = pval(m, name);
    snprintf(name, sizeof name, "blocks.%d.ln1.bias", l);
    layernorm_forward(b->ln1, b->ln1_mean, b->ln1_rstd, res_in, ln1w, pval(m, name), BT, C);
    lin_forward(ws, b->qkv, b->qkv_xa, b->ln1, m, a, blk_lin(l, QKV), BT);
    attention_forward(b->atty, b->att, b->qkv, N, T, C, c->heads);
    lin_forward(ws, b->proj, b->proj_xa, b->atty, m, a, blk_lin(l, PROJ), BT);
    residual_forward(b->res1, res_in, b->proj, (size_t)BT * (size_t)C);
    snprintf(name, sizeof name, "blocks.%d.ln2.weight", l);
    const float *ln2w = pval(m, name);
    snprintf(name, sizeof name, "blocks.%d.ln2.bias", l);
    layernorm_forward(b->ln2, b->ln2_mean, b->ln2_rstd, b->res1, ln2w, pval(m, name), BT, C);
    lin_forward(ws, b->fc1, b->fc1_xa, b->ln2, m, a, blk_lin(l, FC1), BT);
    gelu_forward(b->gelu, b->fc1, (size_t)BT * (size_t)M);
    lin_forward(ws, b->fc2, b->fc2_xa, b->gelu, m, a, blk_lin(l, FC2), BT);
    residual_forward(b->res2, b->res1, b->fc2, (size_t)BT * (size_t)C);
}

/* Backward through block l: dres (BT,C) holds d(res2) on entry and d(res_in) on return. */
static void vit_block_backward(model_ws *ws, const model *m, const adapter *a, const vit_block_acts *b,
                               const float *res_in, float *dres, int l, int N, float *base_grad, float *adapter_grad)
{
    const model_config *c = &m->cfg;
    int T = m->seq_len, C = c->dim, M = c->mlp_dim, BT = N * T;
    size_t nBTC = (size_t)BT * (size_t)C, nBTM = (size_t)BT * (size_t)M;
    char name[PARAM_NAME_MAX], name2[PARAM_NAME_MAX];
    /* MLP half: res2 = res1 + fc2(gelu(fc1(ln2(res1)))) */
    memset(ws->dM1, 0, nBTM * sizeof(float));
    lin_backward(ws->dM1, dres, b->gelu, b->fc2_xa, ws, m, a, blk_lin(l, FC2), BT, base_grad, adapter_grad);
    memset(ws->dM2, 0, nBTM * sizeof(float));
    gelu_backward(ws->dM2, b->fc1, ws->dM1, nBTM);
    memset(ws->dA_c, 0, nBTC * sizeof(float));
    lin_backward(ws->dA_c, ws->dM2, b->ln2, b->fc1_xa, ws, m, a, blk_lin(l, FC1), BT, base_grad, adapter_grad);
    snprintf(name, sizeof name, "blocks.%d.ln2.weight", l);
    snprintf(name2, sizeof name2, "blocks.%d.ln2.bias", l);
    layernorm_backward(dres, pgrad(base_grad, m, name), pgrad(base_grad, m, name2), ws->dA_c, b->res1,
                       pval(m, name), b->ln2_mean, b->ln2_rstd, BT, C);
    /* attention half: res1 = res_in + proj(attn(qkv(ln1(res_in)))) */
    memset(ws->dA_c, 0, nBTC * sizeof(float));
    lin_backward(ws->dA_c, dres, b->atty, b->proj_xa, ws, m, a, blk_lin(l, PROJ), BT, base_grad, adapter_grad);
    memset(ws->dqkv, 0, 3 * nBTC * sizeof(float));
    attention_backward(ws->dqkv, ws->datt, ws->dA_c, b->qkv, b->att, N, T, C, c->heads);
    memset(ws->dB_c, 0, nBTC * sizeof(float));
    lin_backward(ws->dB_c, ws->dqkv, b->ln1, b->qkv_xa, ws, m, a, blk_lin(l, QKV), BT, base_grad, adapter_grad);
    snprintf(name, sizeof name, "blocks.%d.ln1.weight", l);
    snprintf(name2, sizeof name2, "blocks.%d.ln1.bias", l);
    layernorm_backward(dres, pgrad(base_grad, m, name), pgrad(base_grad, m, name2), ws->dB_c, res_in,
                       pval(m, name), b->ln1_mean, b->ln1_rstd, BT, C);
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

static float vit_forward(model_ws *ws, const model *m, const adapter *a, const float *x, const int *targets,
                         int N)
{
    const model_config *c = &m->cfg;
    int T = m->seq_len, P = T - 1, C = c->dim;
    bool fuse = is_fusion(a);
    patchify_forward(ws->patches, x, N, c->channels, c->height, c->width, c->patch, c->patch);
    lin_forward(ws, ws->emb, ws->emb_xa, ws->patches, m, a, 0, N * P);
    tokens_forward(ws->tokens, ws->emb, pval(m, "cls_token"), pval(m, "pos_embed"), N, P, C);
    const float *res = ws->tokens;
    for (int l = 0; l < c->depth; l++) {
        vit_block_forward(ws, m, fuse ? NULL : a, &ws->blocks[l], res, l, N);
        res = fuse ? vit_fuse_forward(ws, m, a, res, l, N) : ws->blocks[l].res2;
    }
    /* Only the class token reaches the head, so the final LayerNorm runs on those rows alone. */
    for (int n = 0; n < N; n++) memcpy(ws->cls + (size_t)n * C, res + (size_t)n * T * C, (size_t)C * sizeof(float));
    layernorm_forward(ws->lnf, ws->lnf_mean, ws->lnf_rstd, ws->cls, pval(m, "ln.weight"), pval(m, "ln.bias"), N, C);
    lin_forward(ws, ws->logits, NULL, ws->lnf, m, a, m->n_linear - 1, N);
    return loss_forward(ws, targets, N, lin_out(m, a, m->n_linear - 1));
}

static void vit_backward(model_ws *ws, const model *m, const adapter *a, float *base_grad, float *adapter_grad)
{
    const model_config *c = &m->cfg;
    int N = ws->last_n, T = m->seq_len, P = T - 1, C = c->dim, BT = N * T;
    size_t nBTC = (size_t)BT * (size_t)C;
    bool fuse = is_fusion(a);

    memset(ws->dcls, 0, (size_t)N * C * sizeof(float));
    memset(ws->dA_c, 0, (size_t)N * C * sizeof(float));
    lin_backward(ws->dA_c, ws->dlogits, ws->lnf, NULL, ws, m, a, m->n_linear - 1, N, base_grad, adapter_grad);
    layernorm_backward(ws->dcls, pgrad(base_grad, m, "ln.weight"), pgrad(base_grad, m, "ln.bias"), ws->dA_c,
                       ws->cls, pval(m, "ln.weight"), ws->lnf_mean, ws->lnf_rstd, N, C);
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
    tokens_backward(demb, pgrad(base_grad, m, "cls_token"), pgrad(base_grad, m, "pos_embed"), ws->dres, N, P, C);
    lin_backward(NULL, demb, ws->patches, ws->emb_xa, ws, m, a, 0, N * P, base_grad, adapter_grad);
}

/* ---- public entry points -------------------------------------------------------------------------- */

float model_forward(model_ws *ws, const model *m, const adapter *a, const float *x, const int *targets, int N)
{
    assert(N >= 1 && N <= ws->max_batch);
    assert(model_ws_fits(ws, m, a));
    ws->last_n = N;
    ws->mlp_input = x;
    ws->last_fusion = is_fusion(a);
    if (a && a->kind == ADAPTER_TIED) tied_prepare(ws, m, a);
    float loss = m->cfg.kind == MODEL_MLP ? mlp_forward(ws, m, a, x, targets, N) : vit_forward(ws, m, a, x, targets, N);
    if (targets && is_fusion(a)) loss += fusion_penalty(a);
    return loss;
}

void model_backward(model_ws *ws, const model *m, const adapter *a, float *base_grad, float *adapter_grad)
{
    int N = ws->last_n, K = lin_out(m, a, m->n_linear - 1);
    memset(ws->dlogits, 0, (size_t)N * K * sizeof(float));
    crossentropy_backward(ws->dlogits, ws->probs, ws->targets, 1.0f / (float)N, N, K);
    if (m->cfg.kind == MODEL_MLP) {
        mlp_backward(ws, m, a, ws->mlp_input, base_grad, adapter_grad);
    } else {
        vit_backward(ws, m, a, base_grad, adapter_grad);
    }
    if (is_fusion(a) && adapter_grad) fusion_penalty_backward(adapter_grad, a);
}
