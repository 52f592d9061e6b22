/* Forward and backward passes of the MLP and the ViT, with LoRA adapters; see model.h.
 *
 * The workspace holds every activation the backward pass needs, in one allocation. Gradients of
 * activations use a few reusable scratch buffers rather than a mirror of every activation: the backward
 * pass walks the layers in reverse keeping one running gradient of the residual stream (`dres`).
 */
#include "core/model.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

struct model_ws {
    const model *m;
    int max_batch, max_rank, max_classes;
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
    const float *mlp_input;             /* the caller's x of the last forward (MLP backward reads it) */
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

static void ws_layout(model_ws *ws, const model *m, bump *b)
{
    const model_config *c = &m->cfg;
    size_t B = (size_t)ws->max_batch, R = (size_t)ws->max_rank, K = (size_t)ws->max_classes;
    size_t widest = 0;
    if (c->kind == MODEL_MLP) {
        widest = (size_t)c->input_dim;
        for (int i = 0; i < c->n_hidden; i++) {
            size_t h = (size_t)c->hidden[i];
            if (h > widest) widest = h;
            ws->mlp_pre[i] = take(b, B * h);
            ws->mlp_post[i] = take(b, B * h);
            ws->mlp_xa[i] = take(b, B * R);
        }
        if (ws->with_grads) {
            ws->dA_c = take(b, B * widest);
            ws->dB_c = take(b, B * widest);
            ws->dxa = take(b, B * R);
        }
    } else {
        size_t T = (size_t)m->seq_len, P = T - 1, C = (size_t)c->dim, M = (size_t)c->mlp_dim;
        size_t NH = (size_t)c->heads, pp = (size_t)(c->channels * c->patch * c->patch), BT = B * T;
        ws->patches = take(b, B * P * pp);
        ws->emb = take(b, B * P * C);
        ws->emb_xa = take(b, B * P * R);
        ws->tokens = take(b, BT * C);
        for (int l = 0; l < c->depth; l++) {
            vit_block_acts *a = &ws->blocks[l];
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
        }
    }
    ws->logits = take(b, B * K);
    ws->probs = take(b, B * K);
    ws->losses = take(b, B);
    if (ws->with_grads) ws->dlogits = take(b, B * K);
}

model_ws *model_ws_create(const model *m, int max_batch, int max_rank, int max_classes, bool with_grads,
                          clad_err *err)
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
    ws->with_grads = with_grads;
    if (m->cfg.kind == MODEL_VIT) {
        ws->blocks = calloc((size_t)m->cfg.depth, sizeof *ws->blocks);
        if (!ws->blocks) abort();
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

void model_ws_destroy(model_ws *ws)
{
    if (!ws) return;
    free(ws->buf);
    free(ws->blocks);
    free(ws->targets);
    free(ws);
}

bool model_ws_fits(const model_ws *ws, const model *m, const adapter *a)
{
    if (ws->m != m) return false;
    if (!a) return true;
    if (a->n_classes > ws->max_classes) return false;
    for (int li = 0; li < a->n_linear; li++)
        if (a->rank[li] > ws->max_rank) return false;
    return true;
}

int model_ws_max_batch(const model_ws *ws) { return ws->max_batch; }

const float *model_ws_probs(const model_ws *ws) { return ws->probs; }
const float *model_ws_logits(const model_ws *ws) { return ws->logits; }

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

/* y (N,out) = x W^T + b [+ LoRA]; xa (N,r) is kept for backward. */
static void lin_forward(float *y, float *xa, const float *x, const model *m, const adapter *a, int li, int N)
{
    const model_linear *L = &m->linear[li];
    int out = lin_out(m, a, li);
    linear_forward(y, x, lin_weight(m, a, li), lin_bias(m, a, li), N, L->in, out);
    if (a && a->rank[li])
        lora_forward(y, xa, x, param_set_ptr(&a->params, a->A[li]), param_set_ptr(&a->params, a->B[li]),
                     adapter_scale(a, li), N, L->in, out, a->rank[li]);
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
    if (a && a->rank[li]) {
        float *dA = adapter_grad ? adapter_grad + a->params.t[a->A[li]].offset : NULL;
        float *dB = adapter_grad ? adapter_grad + a->params.t[a->B[li]].offset : NULL;
        lora_backward(dx, dA, dB, ws->dxa, dy, x, xa, param_set_ptr(&a->params, a->A[li]),
                      param_set_ptr(&a->params, a->B[li]), adapter_scale(a, li), N, L->in, out, a->rank[li]);
    }
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

/* ---- MLP ------------------------------------------------------------------------------------------ */

static float mlp_forward(model_ws *ws, const model *m, const adapter *a, const float *x, const int *targets,
                         int N)
{
    const model_config *c = &m->cfg;
    const float *h = x;
    for (int i = 0; i < c->n_hidden; i++) {
        lin_forward(ws->mlp_pre[i], ws->mlp_xa[i], h, m, a, i, N);
        gelu_forward(ws->mlp_post[i], ws->mlp_pre[i], (size_t)N * (size_t)c->hidden[i]);
        h = ws->mlp_post[i];
    }
    lin_forward(ws->logits, NULL, h, m, a, m->n_linear - 1, N);
    return loss_forward(ws, targets, N, lin_out(m, a, m->n_linear - 1));
}

static void mlp_backward(model_ws *ws, const model *m, const adapter *a, const float *x, float *base_grad,
                         float *adapter_grad)
{
    const model_config *c = &m->cfg;
    int N = ws->last_n, head = m->n_linear - 1;
    float *dcur = ws->dA_c, *dnext = ws->dB_c;
    const float *head_in = c->n_hidden ? ws->mlp_post[c->n_hidden - 1] : x;
    size_t head_in_n = (size_t)N * (size_t)m->linear[head].in;
    memset(dcur, 0, head_in_n * sizeof *dcur);
    lin_backward(c->n_hidden ? dcur : NULL, ws->dlogits, head_in, NULL, ws, m, a, head, N, base_grad,
                 adapter_grad);
    for (int i = c->n_hidden - 1; i >= 0; i--) {
        size_t n = (size_t)N * (size_t)c->hidden[i];
        /* dcur holds d(post_i); turn it into d(pre_i) in dnext, then back through linear i. */
        memset(dnext, 0, n * sizeof *dnext);
        gelu_backward(dnext, ws->mlp_pre[i], dcur, n);
        const float *in = i ? ws->mlp_post[i - 1] : x;
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

static float vit_forward(model_ws *ws, const model *m, const adapter *a, const float *x, const int *targets,
                         int N)
{
    const model_config *c = &m->cfg;
    int T = m->seq_len, P = T - 1, C = c->dim, M = c->mlp_dim, BT = N * T;
    char name[PARAM_NAME_MAX];
    patchify_forward(ws->patches, x, N, c->channels, c->height, c->width, c->patch, c->patch);
    lin_forward(ws->emb, ws->emb_xa, ws->patches, m, a, 0, N * P);
    tokens_forward(ws->tokens, ws->emb, pval(m, "cls_token"), pval(m, "pos_embed"), N, P, C);
    const float *res = ws->tokens;
    for (int l = 0; l < c->depth; l++) {
        vit_block_acts *b = &ws->blocks[l];
        snprintf(name, sizeof name, "blocks.%d.ln1.weight", l);
        const float *ln1w = pval(m, name);
        snprintf(name, sizeof name, "blocks.%d.ln1.bias", l);
        layernorm_forward(b->ln1, b->ln1_mean, b->ln1_rstd, res, ln1w, pval(m, name), BT, C);
        lin_forward(b->qkv, b->qkv_xa, b->ln1, m, a, blk_lin(l, QKV), BT);
        attention_forward(b->atty, b->att, b->qkv, N, T, C, c->heads);
        lin_forward(b->proj, b->proj_xa, b->atty, m, a, blk_lin(l, PROJ), BT);
        residual_forward(b->res1, res, b->proj, (size_t)BT * (size_t)C);
        snprintf(name, sizeof name, "blocks.%d.ln2.weight", l);
        const float *ln2w = pval(m, name);
        snprintf(name, sizeof name, "blocks.%d.ln2.bias", l);
        layernorm_forward(b->ln2, b->ln2_mean, b->ln2_rstd, b->res1, ln2w, pval(m, name), BT, C);
        lin_forward(b->fc1, b->fc1_xa, b->ln2, m, a, blk_lin(l, FC1), BT);
        gelu_forward(b->gelu, b->fc1, (size_t)BT * (size_t)M);
        lin_forward(b->fc2, b->fc2_xa, b->gelu, m, a, blk_lin(l, FC2), BT);
        residual_forward(b->res2, b->res1, b->fc2, (size_t)BT * (size_t)C);
        res = b->res2;
    }
    /* Only the class token reaches the head, so the final LayerNorm runs on those rows alone. */
    for (int n = 0; n < N; n++) memcpy(ws->cls + (size_t)n * C, res + (size_t)n * T * C, (size_t)C * sizeof(float));
    layernorm_forward(ws->lnf, ws->lnf_mean, ws->lnf_rstd, ws->cls, pval(m, "ln.weight"), pval(m, "ln.bias"), N, C);
    lin_forward(ws->logits, NULL, ws->lnf, m, a, m->n_linear - 1, N);
    return loss_forward(ws, targets, N, lin_out(m, a, m->n_linear - 1));
}

static void vit_backward(model_ws *ws, const model *m, const adapter *a, float *base_grad, float *adapter_grad)
{
    const model_config *c = &m->cfg;
    int N = ws->last_n, T = m->seq_len, P = T - 1, C = c->dim, M = c->mlp_dim, BT = N * T;
    size_t nBTC = (size_t)BT * (size_t)C, nBTM = (size_t)BT * (size_t)M;
    char name[PARAM_NAME_MAX], name2[PARAM_NAME_MAX];

    memset(ws->dcls, 0, (size_t)N * C * sizeof(float));
    memset(ws->dA_c, 0, (size_t)N * C * sizeof(float));
    lin_backward(ws->dA_c, ws->dlogits, ws->lnf, NULL, ws, m, a, m->n_linear - 1, N, base_grad, adapter_grad);
    layernorm_backward(ws->dcls, pgrad(base_grad, m, "ln.weight"), pgrad(base_grad, m, "ln.bias"), ws->dA_c,
                       ws->cls, pval(m, "ln.weight"), ws->lnf_mean, ws->lnf_rstd, N, C);
    memset(ws->dres, 0, nBTC * sizeof(float));
    for (int n = 0; n < N; n++) memcpy(ws->dres + (size_t)n * T * C, ws->dcls + (size_t)n * C, (size_t)C * sizeof(float));

    for (int l = c->depth - 1; l >= 0; l--) {
        vit_block_acts *b = &ws->blocks[l];
        const float *res_in = l ? ws->blocks[l - 1].res2 : ws->tokens;
        /* MLP half: res2 = res1 + fc2(gelu(fc1(ln2(res1)))) */
        memset(ws->dM1, 0, nBTM * sizeof(float));
        lin_backward(ws->dM1, ws->dres, b->gelu, b->fc2_xa, ws, m, a, blk_lin(l, FC2), BT, base_grad, adapter_grad);
        memset(ws->dM2, 0, nBTM * sizeof(float));
        gelu_backward(ws->dM2, b->fc1, ws->dM1, nBTM);
        memset(ws->dA_c, 0, nBTC * sizeof(float));
        lin_backward(ws->dA_c, ws->dM2, b->ln2, b->fc1_xa, ws, m, a, blk_lin(l, FC1), BT, base_grad, adapter_grad);
        snprintf(name, sizeof name, "blocks.%d.ln2.weight", l);
        snprintf(name2, sizeof name2, "blocks.%d.ln2.bias", l);
        layernorm_backward(ws->dres, pgrad(base_grad, m, name), pgrad(base_grad, m, name2), ws->dA_c, b->res1,
                           pval(m, name), b->ln2_mean, b->ln2_rstd, BT, C);
        /* attention half: res1 = res_in + proj(attn(qkv(ln1(res_in)))) */
        memset(ws->dA_c, 0, nBTC * sizeof(float));
        lin_backward(ws->dA_c, ws->dres, b->atty, b->proj_xa, ws, m, a, blk_lin(l, PROJ), BT, base_grad, adapter_grad);
        memset(ws->dqkv, 0, 3 * nBTC * sizeof(float));
        attention_backward(ws->dqkv, ws->datt, ws->dA_c, b->qkv, b->att, N, T, C, c->heads);
        memset(ws->dB_c, 0, nBTC * sizeof(float));
        lin_backward(ws->dB_c, ws->dqkv, b->ln1, b->qkv_xa, ws, m, a, blk_lin(l, QKV), BT, base_grad, adapter_grad);
        snprintf(name, sizeof name, "blocks.%d.ln1.weight", l);
        snprintf(name2, sizeof name2, "blocks.%d.ln1.bias", l);
        layernorm_backward(ws->dres, pgrad(base_grad, m, name), pgrad(base_grad, m, name2), ws->dB_c, res_in,
                           pval(m, name), b->ln1_mean, b->ln1_rstd, BT, C);
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
    assert(!a || a->n_classes <= ws->max_classes);
    for (int li = 0; a && li < a->n_linear; li++) assert(a->rank[li] <= ws->max_rank);
    ws->last_n = N;
    ws->mlp_input = x;
    if (m->cfg.kind == MODEL_MLP) return mlp_forward(ws, m, a, x, targets, N);
    return vit_forward(ws, m, a, x, targets, N);
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
}
