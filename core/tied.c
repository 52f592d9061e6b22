/* Tied-LoRA adapters: one shared (A, B) pair per group of same-shaped linears, with per-layer scaling
 * vectors, dW_l = diag(v_l) B diag(u_l) A (Renduchintala et al., "Tied-LoRA"; see docs/METHODS.md).
 *
 * Running one is running a LoRA whose B for layer l is Beff_l = diag(v_l) B diag(u_l): the table's prepare
 * forms Beff_l (out x r, cheap) in the workspace before the forward pass, the run reuses the plain LoRA
 * kernels, and map_dB maps dBeff_l back to dB, du_l and dv_l. The shared A needs no mapping: every layer's dA
 * lands in the same buffer, which is exactly the accumulation over layers that sharing requires. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/adapter_priv.h"

/* Beff (out,r) = diag(v) B diag(u), the per-layer B that turns a tied layer into a plain LoRA one. */
static void tied_effective_B(float *Beff, const float *B, const float *u, const float *v, int out, int r)
{
    for (int o = 0; o < out; o++) {
        float vo = v ? v[o] : 1.0f;
        for (int k = 0; k < r; k++) Beff[(size_t)o * r + k] = vo * B[(size_t)o * r + k] * (u ? u[k] : 1.0f);
    }
}

/* Chain rule through tied_effective_B: given dBeff (out,r),
 * dB (out,r) += dBeff * v u^T;  du (r) += sum_o dBeff[o,k] v[o] B[o,k];  dv (out) += sum_k dBeff[o,k] B[o,k] u[k].
 * Any of dB, du, dv may be NULL. */
static void tied_backward_scales(float *dB, float *du, float *dv, const float *dBeff, const float *B, const float *u,
                                 const float *v, int out, int r)
{
    for (int o = 0; o < out; o++) {
        float vo = v ? v[o] : 1.0f, acc_v = 0.0f;
        const float *g = dBeff + (size_t)o * r, *b = B + (size_t)o * r;
        for (int k = 0; k < r; k++) {
            float uk = u ? u[k] : 1.0f;
            if (dB) dB[(size_t)o * r + k] += g[k] * vo * uk;
            if (du) du[k] += g[k] * vo * b[k];
            acc_v += g[k] * b[k] * uk;
        }
        if (dv) dv[o] += acc_v;
    }
}

/* The first linear of li's shape group (whose turn it is to initialise the shared pair). */
static int tied_group_leader(const adapter *a, int li)
{
    for (int j = 0; j < a->n_linear; j++)
        if (a->tied.group[j] == a->tied.group[li]) return j;
    return li;
}

/* u = v = 1 for every member (tl6; tl5 has no u, v tensors). */
static void tied_init_scales(adapter *a)
{
    for (int li = 0; li < a->n_linear; li++) {
        if (a->tied.u[li] >= 0) {
            float *u = param_set_ptr(&a->params, a->tied.u[li]);
            for (size_t k = 0; k < a->params.t[a->tied.u[li]].numel; k++) u[k] = 1.0f;
        }
        if (a->tied.v[li] >= 0) {
            float *v = param_set_ptr(&a->params, a->tied.v[li]);
            for (size_t k = 0; k < a->params.t[a->tied.v[li]].numel; k++) v[k] = 1.0f;
        }
    }
}

/* u (r) and v (out) of linear li: NULL in tl5, where they are fixed at 1. */
static const float *tied_u(const adapter *a, int li)
{
    return a->tied.u[li] >= 0 ? param_set_ptr(&a->params, a->tied.u[li]) : NULL;
}

static const float *tied_v(const adapter *a, int li)
{
    return a->tied.v[li] >= 0 ? param_set_ptr(&a->params, a->tied.v[li]) : NULL;
}

static void tied_init(adapter *a, const model *m, rng *r)
{
    /* A group's shared A is initialised once, by its first member. */
    for (int li = 0; li < a->n_linear; li++)
        if (a->rank[li] && tied_group_leader(a, li) == li) adapter_init_A(a, m, li, r);
    tied_init_scales(a);
}

static float tied_scale(const adapter *a, int li)
{
    (void)a;
    (void)li;
    return 1.0f;
}

static void tied_delta(float *dW, const adapter *a, const model *m, int li)
{
    const model_linear *L = &m->linear[li];
    adapter_delta_add(dW, param_set_ptr(&a->params, a->A[li]), param_set_ptr(&a->params, a->B[li]), tied_u(a, li),
                      tied_v(a, li), tied_scale(a, li), L->out, L->in, a->rank[li]);
}

/* Beff_l = diag(v_l) B diag(u_l) for every tl6 layer (tl5 has u = v = 1 and uses B as it is). */
static void tied_prepare(const adapter *a, const model *m, adapter_bufs *bufs)
{
    for (int li = 0; li < a->n_linear; li++) {
        if (!a->rank[li] || a->tied.u[li] < 0) continue;
        tied_effective_B(bufs->B[li], param_set_ptr(&a->params, a->B[li]), tied_u(a, li), tied_v(a, li),
                         m->linear[li].out, a->rank[li]);
    }
}

static const float *tied_lora_B(const adapter *a, const adapter_bufs *bufs, int li)
{
    return a->tied.u[li] >= 0 ? bufs->B[li] : param_set_ptr(&a->params, a->B[li]);
}

/* A tl5 layer's dB lands in the shared B's gradient, accumulating over the group's layers (as dA always
 * does); a tl6 layer's is dBeff, mapped by tied_map_dB. */
static float *tied_lora_dB(const adapter *a, adapter_bufs *bufs, float *adapter_grad, int li)
{
    if (a->tied.u[li] < 0) return adapter_grad + a->params.t[a->B[li]].offset;
    const param_tensor *tB = &a->params.t[a->B[li]];
    memset(bufs->dB, 0, tB->numel * sizeof *bufs->dB);
    return bufs->dB;
}

static void tied_map_dB(const adapter *a, const adapter_bufs *bufs, float *adapter_grad, int li)
{
    if (a->tied.u[li] < 0) return;
    const param_tensor *tB = &a->params.t[a->B[li]];
    tied_backward_scales(adapter_grad + tB->offset, adapter_grad + a->params.t[a->tied.u[li]].offset,
                         adapter_grad + a->params.t[a->tied.v[li]].offset, bufs->dB, param_set_ptr(&a->params, a->B[li]),
                         tied_u(a, li), tied_v(a, li), tB->shape[0], a->rank[li]);
}

static const adapter_ops tied_ops = {
    .kind = ADAPTER_TIED,
    .init = tied_init,
    .scale = tied_scale,
    .delta = tied_delta,
    .to_lora = adapter_tied_to_lora,
    .needs = adapter_needs_own_ranks,
    .prepare = tied_prepare,
    .lora_B = tied_lora_B,
    .lora_dB = tied_lora_dB,
    .map_dB = tied_map_dB,
};

/* "blocks.3.qkv" -> "qkv". */
static const char *name_suffix(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

adapter *adapter_tied_create(const model *m, const int *ranks, tied_variant variant, int n_classes,
                             clad_err *err)
{
    if (variant != TIED_TL5 && variant != TIED_TL6) {
        clad_err_set(err, CLAD_EINVAL, "tied adapter: unknown variant %d (known: tl5, tl6)", (int)variant);
        return NULL;
    }
    int max_r = 0;
    for (int li = 0; ranks && li < m->n_linear; li++)
        if (ranks[li] > max_r) max_r = ranks[li];
    adapter *a = adapter_alloc(m, &tied_ops, max_r > 0 ? (float)max_r : 1.0f, n_classes, err);
    if (!a) return NULL;
    a->tied.variant = variant;
    int leader[MODEL_MAX_LINEARS];  /* first member of each group */
    for (int li = 0; li < m->n_linear; li++) {
        int r = ranks ? ranks[li] : 0;
        if (adapter_check_rank(m, li, r, err)) goto fail;
        a->rank[li] = r;
        if (!r) continue;
        const model_linear *L = &m->linear[li];
        int g = 0;
        while (g < a->tied.n_groups && (m->linear[leader[g]].in != L->in || m->linear[leader[g]].out != L->out)) g++;
        if (g == a->tied.n_groups) {
            leader[a->tied.n_groups++] = li;
        } else if (a->rank[leader[g]] != r) {
            clad_err_set(err, CLAD_EINVAL, "tied adapter: layers '%s' and '%s' share A and B but ask for ranks "
                         "%d and %d", m->linear[leader[g]].name, L->name, a->rank[leader[g]], r);
            goto fail;
        }
        a->tied.group[li] = g;
    }
    char name[PARAM_NAME_MAX + 32], gname[PARAM_NAME_MAX];
    for (int g = 0; g < a->tied.n_groups; g++) {
        const model_linear *L = &m->linear[leader[g]];
        const char *suffix = name_suffix(L->name);
        bool same = true;
        for (int li = 0; li < m->n_linear; li++)
            if (a->tied.group[li] == g && strcmp(name_suffix(m->linear[li].name), suffix)) same = false;
        if (same) snprintf(gname, sizeof gname, "%s", suffix);
        else snprintf(gname, sizeof gname, "%dx%d", L->in, L->out);
        int r = a->rank[leader[g]];
        snprintf(name, sizeof name, "tied.%s.lora_A.weight", gname);
        int ia = param_set_add(&a->params, name, 2, (int[]){r, L->in}, true);
        snprintf(name, sizeof name, "tied.%s.lora_B.weight", gname);
        int ib = param_set_add(&a->params, name, 2, (int[]){L->out, r}, true);
        for (int li = 0; li < m->n_linear; li++)
            if (a->tied.group[li] == g) {
                a->A[li] = ia;
                a->B[li] = ib;
            }
    }
    if (variant == TIED_TL6) {
        /* Scales are not decayed: AdamW's decay pulls towards 0, but their neutral value is 1. */
        for (int li = 0; li < m->n_linear; li++) {
            if (!a->rank[li]) continue;
            snprintf(name, sizeof name, "%s.tied_u", m->linear[li].name);
            a->tied.u[li] = param_set_add(&a->params, name, 1, (int[]){a->rank[li]}, false);
            snprintf(name, sizeof name, "%s.tied_v", m->linear[li].name);
            a->tied.v[li] = param_set_add(&a->params, name, 1, (int[]){m->linear[li].out}, false);
        }
    }
    if (adapter_finish_layout(a, m, err)) goto fail;
    return a;
fail:
    adapter_destroy(a);
    return NULL;
}

adapter *adapter_tied_to_lora(const adapter *t, const model *m, clad_err *err)
{
    if (t->ops != &tied_ops) {
        clad_err_set(err, CLAD_EINVAL, "adapter_tied_to_lora: the adapter is %s, not tied", adapter_kind_name(t->kind));
        return NULL;
    }
    int max_r = 1;
    for (int li = 0; li < t->n_linear; li++)
        if (t->rank[li] > max_r) max_r = t->rank[li];
    adapter *a = adapter_create(m, t->rank, (float)max_r, t->n_classes, err);
    if (!a) return NULL;
    for (int li = 0; li < t->n_linear; li++) {
        int r = t->rank[li];
        a->rank_before[li] = t->rank_before[li];
        if (!r) continue;
        int out = m->linear[li].out;
        memcpy(param_set_ptr(&a->params, a->A[li]), param_set_ptr(&t->params, t->A[li]),
               t->params.t[t->A[li]].numel * sizeof(float));
        float *B = param_set_ptr(&a->params, a->B[li]);
        tied_effective_B(B, param_set_ptr(&t->params, t->B[li]), tied_u(t, li), tied_v(t, li), out, r);
        /* The tied scale is 1 and the LoRA scale alpha / r: fold the ratio into B. */
        float fold = (float)r / a->alpha;
        for (size_t k = 0; k < (size_t)out * (size_t)r; k++) B[k] *= fold;
    }
    if (adapter_copy_head(a, t, err)) {
        adapter_destroy(a);
        return NULL;
    }
    return a;
}
