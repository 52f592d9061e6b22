/* Model workspaces: the layout of every activation and scratch buffer in one allocation, sized for a batch,
 * a rank, a class count and (fusion) a number of sources; see model.h and model_priv.h. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/model_priv.h"

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
    a->proj_xa = take(b, BT * R);
    a->res1 = take(b, BT * C);
    a->ln2 = take(b, BT * C);
    a->ln2_mean = take(b, BT);
    a->ln2_rstd = take(b, BT);
    a->fc1 = take(b, BT * M);
    a->fc1_xa = take(b, BT * R);
    a->gelu = take(b, BT * M);
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

/* The fusion backward's scratch for R rows of width at most C. */
static void layout_fusion_grads(model_ws *ws, bump *b, size_t R, size_t C, size_t S)
{
    ws->fus_dh0 = take(b, R * C);
    ws->fus_dz = take(b, S * R * C);
    ws->fus_tmp = take(b, R * C);
    ws->fus_scratch = take(b, 3 * R * C + R * S);
}

static void ws_layout(model_ws *ws, const model *m, bump *b)
{
    const model_config *c = &m->cfg;
    size_t B = (size_t)ws->max_batch, R = (size_t)ws->max_rank, K = (size_t)ws->max_classes;
    size_t S = (size_t)ws->max_sources;
    size_t widest = 0, max_out = 0, per_linear = 0;
    size_t off[MODEL_MAX_LINEARS];
    for (int li = 0; li < m->n_linear; li++) {
        off[li] = per_linear;
        per_linear += (size_t)m->linear[li].out * R;
        if ((size_t)m->linear[li].out > max_out) max_out = (size_t)m->linear[li].out;
    }
    float *bufs_B = take(b, per_linear);
    for (int li = 0; li < m->n_linear; li++) ws->bufs.B[li] = bufs_B ? bufs_B + off[li] : NULL;
    if (ws->with_grads) ws->bufs.dB = take(b, max_out * R);
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
            if (S) layout_fusion_grads(ws, b, B, widest, S);
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
            if (S) layout_fusion_grads(ws, b, BT, C, S);
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

model_ws *model_ws_create_for(const model *m, const adapter *a, int max_batch, bool with_grads, clad_err *err)
{
    adapter_needs need = {.max_rank = 1, .n_sources = 0};
    if (a) a->ops->needs(a, &need);
    return ws_create(m, max_batch, need.max_rank, a ? a->n_classes : m->cfg.n_classes, need.n_sources, with_grads,
                     err);
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

bool model_ws_fits(const model_ws *ws, const model *m, const adapter *a)
{
    if (ws->m != m) return false;
    if (!a) return true;
    adapter_needs need;
    a->ops->needs(a, &need);
    return a->n_classes <= ws->max_classes && need.max_rank <= ws->max_rank && need.n_sources <= ws->max_sources;
}

int model_ws_max_batch(const model_ws *ws) { return ws->max_batch; }
const model *model_ws_model(const model_ws *ws) { return ws->m; }

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
    assert(!ws->last_fusion);
    int D = model_depth_features_dim(ws->m);
    if (ws->m->cfg.kind == MODEL_VIT) vit_depth_features(ws, out, D);
    else mlp_depth_features(ws, out, D);
}

const float *model_ws_fusion_weights(const model_ws *ws, int site, int *rows)
{
    if (!ws->last_fusion || site < 0 || site >= FUSION_MAX_SITES || !ws->fus[site].s) return NULL;
    if (rows) *rows = ws->last_n * (ws->m->cfg.kind == MODEL_VIT ? ws->m->seq_len : 1);
    return ws->fus[site].s;
}
