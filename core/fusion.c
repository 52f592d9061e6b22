/* AdapterFusion: the fusion adapter's table of operations, layout and initialisation, the
 * attention-over-sources kernels and the V penalty; see fusion.h. The per-site orchestration (running the
 * sources) lives with the passes it extends (model_fusion_site.c, model_mlp.c, model_vit.c). */
#include "core/fusion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/adapter_priv.h"
#include "core/layers.h"

int fusion_site_dim(const model *m, int site)
{
    return m->cfg.kind == MODEL_VIT ? m->cfg.dim : m->cfg.hidden[site];
}

static void fusion_init(adapter *a, const model *m, rng *r);

/* The LoRA copies of tied sources are the adapter's own. */
static void fusion_finish(adapter *a)
{
    for (int i = 0; i < FUSION_MAX_SOURCES; i++) adapter_destroy(a->fusion.owned[i]);
}

/* Every source runs beside the base, each with its own ranks. */
static void fusion_needs(const adapter *a, adapter_needs *need)
{
    need->max_rank = 1;
    need->n_sources = a->fusion.n_sources;
    for (int n = 0; n < a->fusion.n_sources; n++) {
        adapter_needs sn;
        adapter_needs_own_ranks(a->fusion.source[n], &sn);
        if (sn.max_rank > need->max_rank) need->max_rank = sn.max_rank;
    }
}

static const adapter_ops fusion_ops = {
    .kind = ADAPTER_FUSION,
    .init = fusion_init,
    .finish = fusion_finish,
    .needs = fusion_needs,
    .penalty = fusion_penalty,
    .penalty_backward = fusion_penalty_backward,
    .fuses_sources = true,
};

adapter *adapter_fusion_create(const model *m, const adapter *const *sources, const char *const *names, int n,
                               int n_classes, clad_err *err)
{
    if (n < 1 || n > FUSION_MAX_SOURCES) {
        clad_err_set(err, CLAD_EINVAL, "fusion: %d sources is outside [1, %d]", n, FUSION_MAX_SOURCES);
        return NULL;
    }
    int sites = m->cfg.kind == MODEL_VIT ? m->cfg.depth : m->cfg.n_hidden;
    if (sites < 1 || sites > FUSION_MAX_SITES) {
        clad_err_set(err, CLAD_EINVAL, "fusion: the model has %d fusion sites (blocks or hidden layers); "
                     "fusion needs 1 to %d", sites, FUSION_MAX_SITES);
        return NULL;
    }
    adapter *a = adapter_alloc(m, &fusion_ops, 1.0f, n_classes, err);
    if (!a) return NULL;
    a->fusion.n_sources = n;
    a->fusion.n_sites = sites;
    for (int i = 0; i < n; i++) {
        const adapter *s = sources[i];
        char nm[PARAM_NAME_MAX];
        snprintf(nm, sizeof nm, "source%d", i);
        snprintf(a->fusion.source_name[i], PARAM_NAME_MAX, "%s", names && names[i] ? names[i] : nm);
        const char *sn = a->fusion.source_name[i];
        if (s && !adapter_has_lora_form(s)) {
            clad_err_set(err, CLAD_EINVAL, "fusion: source '%s' is itself a %s adapter", sn,
                         adapter_kind_name(s->kind));
            goto fail;
        }
        if (!s || s->n_linear != m->n_linear) {
            clad_err_set(err, CLAD_EINVAL, "fusion: source '%s' is %s", sn, !s ? "missing" : "made for another model");
            goto fail;
        }
        if (m->cfg.kind == MODEL_VIT && s->rank[0]) {
            clad_err_set(err, CLAD_EINVAL, "fusion: source '%s' adapts patch_embed, which lies before the first "
                         "fusion site", sn);
            goto fail;
        }
        for (int li = 0; li < m->n_linear; li++) {
            if (!s->rank[li]) continue;
            const param_tensor *tA = &s->params.t[s->A[li]], *tB = &s->params.t[s->B[li]];
            if (tA->shape[1] != m->linear[li].in || tB->shape[0] != m->linear[li].out) {
                clad_err_set(err, CLAD_EINVAL, "fusion: source '%s' was made for another model (layer '%s')", sn,
                             m->linear[li].name);
                goto fail;
            }
        }
        if (s->ops->to_lora) {
            a->fusion.owned[i] = s->ops->to_lora(s, m, err);
            if (!a->fusion.owned[i]) goto fail;
            s = a->fusion.owned[i];
        }
        a->fusion.source[i] = s;
    }
    char prefix[PARAM_NAME_MAX], name[PARAM_NAME_MAX + 32];
    for (int site = 0; site < sites; site++) {
        int C = fusion_site_dim(m, site);
        if (m->cfg.kind == MODEL_VIT) snprintf(prefix, sizeof prefix, "blocks.%d", site);
        else snprintf(prefix, sizeof prefix, "%s", m->linear[site].name);
        snprintf(name, sizeof name, "%s.fusion.query.weight", prefix);
        a->fusion.q_w[site] = param_set_add(&a->params, name, 2, (int[]){C, C}, true);
        snprintf(name, sizeof name, "%s.fusion.query.bias", prefix);
        a->fusion.q_b[site] = param_set_add(&a->params, name, 1, (int[]){C}, false);
        snprintf(name, sizeof name, "%s.fusion.key.weight", prefix);
        a->fusion.k_w[site] = param_set_add(&a->params, name, 2, (int[]){C, C}, true);
        snprintf(name, sizeof name, "%s.fusion.key.bias", prefix);
        a->fusion.k_b[site] = param_set_add(&a->params, name, 1, (int[]){C}, false);
        /* No weight decay on V: the penalty already pulls it, towards I rather than 0. */
        snprintf(name, sizeof name, "%s.fusion.value.weight", prefix);
        a->fusion.v_w[site] = param_set_add(&a->params, name, 2, (int[]){C, C}, false);
    }
    if (adapter_finish_layout(a, m, err)) goto fail;
    return a;
fail:
    adapter_destroy(a);
    return NULL;
}

/* Q, K ~ N(0, 0.02), biases 0, V = I with 1e-6 off the diagonal. */
static void fusion_init(adapter *a, const model *m, rng *r)
{
    (void)m;
    for (int site = 0; site < a->fusion.n_sites; site++) {
        const param_tensor *tq = &a->params.t[a->fusion.q_w[site]];
        int C = tq->shape[0];
        float *Q = param_set_ptr(&a->params, a->fusion.q_w[site]);
        float *K = param_set_ptr(&a->params, a->fusion.k_w[site]);
        float *V = param_set_ptr(&a->params, a->fusion.v_w[site]);
        for (size_t i = 0; i < tq->numel; i++) Q[i] = 0.02f * rng_normal(r);
        for (size_t i = 0; i < tq->numel; i++) K[i] = 0.02f * rng_normal(r);
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) V[(size_t)i * C + j] = i == j ? 1.0f : 1e-6f;
    }
}

void fusion_forward(float *out, float *s, float *q, float *k, float *v, const float *h0, const float *const *z,
                    const float *Qw, const float *Qb, const float *Kw, const float *Kb, const float *Vw, int R,
                    int C, int S)
{
    size_t RC = (size_t)R * (size_t)C;
    linear_forward(q, h0, Qw, Qb, R, C, C);
    for (int n = 0; n < S; n++) {
        linear_forward(k + n * RC, z[n], Kw, Kb, R, C, C);
        linear_forward(v + n * RC, z[n], Vw, NULL, R, C, C);
    }
    /* scores (R,S), then a row softmax in place */
    for (int t = 0; t < R; t++) {
        const float *qt = q + (size_t)t * C;
        for (int n = 0; n < S; n++) {
            const float *kt = k + n * RC + (size_t)t * C;
            float dot = 0.0f;
            for (int c = 0; c < C; c++) dot += qt[c] * kt[c];
            s[(size_t)t * S + n] = dot;
        }
    }
    softmax_forward(s, s, R, S);
    memset(out, 0, RC * sizeof *out);
    for (int n = 0; n < S; n++)
        for (int t = 0; t < R; t++) {
            float w = s[(size_t)t * S + n];
            const float *vt = v + n * RC + (size_t)t * C;
            float *ot = out + (size_t)t * C;
            for (int c = 0; c < C; c++) ot[c] += w * vt[c];
        }
}

void fusion_backward(float *dh0, float *const *dz, float *dQw, float *dQb, float *dKw, float *dKb, float *dVw,
                     float *scratch, const float *dout, const float *h0, const float *const *z, const float *s,
                     const float *q, const float *k, const float *v, const float *Qw, const float *Kw,
                     const float *Vw, int R, int C, int S)
{
    size_t RC = (size_t)R * (size_t)C;
    float *dq = scratch, *dk = scratch + RC, *dv = scratch + 2 * RC, *dscore = scratch + 3 * RC;  /* (R,S) */
    /* Softmax backward per row: dscore_n = s_n (ds_n - sum_m s_m ds_m), with ds_n = dout . v_n. */
    for (int t = 0; t < R; t++) {
        const float *dt = dout + (size_t)t * C;
        const float *st = s + (size_t)t * S;
        float *gt = dscore + (size_t)t * S, dot_s = 0.0f;
        for (int n = 0; n < S; n++) {
            const float *vt = v + n * RC + (size_t)t * C;
            float ds = 0.0f;
            for (int c = 0; c < C; c++) ds += dt[c] * vt[c];
            gt[n] = ds;
            dot_s += st[n] * ds;
        }
        for (int n = 0; n < S; n++) gt[n] = st[n] * (gt[n] - dot_s);
    }
    /* dq = sum_n dscore_n k_n, then back through the query projection into h0. */
    memset(dq, 0, RC * sizeof *dq);
    for (int n = 0; n < S; n++)
        for (int t = 0; t < R; t++) {
            float g = dscore[(size_t)t * S + n];
            const float *kt = k + n * RC + (size_t)t * C;
            float *qt = dq + (size_t)t * C;
            for (int c = 0; c < C; c++) qt[c] += g * kt[c];
        }
    linear_backward(dh0, dQw, dQb, dq, h0, Qw, R, C, C);
    /* Per source: dk_n = dscore_n q and dv_n = s_n dout, back through K and V into z_n. */
    for (int n = 0; n < S; n++) {
        for (int t = 0; t < R; t++) {
            float g = dscore[(size_t)t * S + n], w = s[(size_t)t * S + n];
            const float *qt = q + (size_t)t * C, *dt = dout + (size_t)t * C;
            float *kt = dk + (size_t)t * C, *vt = dv + (size_t)t * C;
            for (int c = 0; c < C; c++) {
                kt[c] = g * qt[c];
                vt[c] = w * dt[c];
            }
        }
        linear_backward(dz[n], dKw, dKb, dk, z[n], Kw, R, C, C);
        linear_backward(dz[n], dVw, NULL, dv, z[n], Vw, R, C, C);
    }
}

float fusion_penalty(const adapter *a)
{
    double sum = 0.0;
    for (int site = 0; site < a->fusion.n_sites; site++) {
        int C = a->params.t[a->fusion.v_w[site]].shape[0];
        const float *V = param_set_ptr(&a->params, a->fusion.v_w[site]);
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) {
                double d = (i == j ? 1.0 : 0.0) - (double)V[(size_t)i * C + j];
                sum += d * d;
            }
    }
    return (float)((double)FUSION_V_PENALTY * sum);
}

void fusion_penalty_backward(float *adapter_grad, const adapter *a)
{
    for (int site = 0; site < a->fusion.n_sites; site++) {
        const param_tensor *t = &a->params.t[a->fusion.v_w[site]];
        int C = t->shape[0];
        const float *V = param_set_ptr(&a->params, a->fusion.v_w[site]);
        float *dV = adapter_grad + t->offset;
        /* d/dV of p ||I - V||^2 is 2 p (V - I). */
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) {
                size_t ij = (size_t)i * C + j;
                dV[ij] += 2.0f * FUSION_V_PENALTY * (V[ij] - (i == j ? 1.0f : 0.0f));
            }
    }
}
