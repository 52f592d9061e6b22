/* Model configs, parameter layouts and initialisation, and what every adapter kind shares (allocation,
 * head, initialisation and delta through the kind's table); see model.h and adapter_priv.h. */
#include "core/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/adapter_priv.h"
#include "core/rng.h"

int model_config_preset(model_config *cfg, const char *name, clad_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    if (!strcmp(name, "mlp")) {
        cfg->kind = MODEL_MLP;
        cfg->input_dim = 784;
        cfg->n_hidden = 2;
        cfg->hidden[0] = 256;
        cfg->hidden[1] = 256;
        cfg->n_classes = 10;
        return 0;
    }
    if (!strcmp(name, "vit-tiny")) {
        cfg->kind = MODEL_VIT;
        cfg->channels = 1;
        cfg->height = 28;
        cfg->width = 28;
        cfg->patch = 4;
        cfg->dim = 64;
        cfg->depth = 4;
        cfg->heads = 4;
        cfg->mlp_dim = 128;
        cfg->n_classes = 10;
        return 0;
    }
    return clad_err_set(err, CLAD_ENOTFOUND, "unknown model preset '%s' (known: mlp, vit-tiny)", name);
}

#define CHECK_RANGE(field, lo, hi)                                                                   \
    do {                                                                                             \
        if (cfg->field < (lo) || cfg->field > (hi))                                                  \
            return clad_err_set(err, CLAD_EINVAL, "model config: %s = %d is outside [%d, %d]", #field,  \
                                cfg->field, (lo), (hi));                                             \
    } while (0)

int model_config_validate(const model_config *cfg, clad_err *err)
{
    CHECK_RANGE(n_classes, 1, MODEL_MAX_CLASSES);
    if (cfg->kind == MODEL_MLP) {
        CHECK_RANGE(input_dim, 1, 1 << 20);
        CHECK_RANGE(n_hidden, 0, MODEL_MAX_HIDDEN);
        for (int i = 0; i < cfg->n_hidden; i++)
            if (cfg->hidden[i] < 1 || cfg->hidden[i] > 65536)
                return clad_err_set(err, CLAD_EINVAL, "model config: hidden[%d] = %d is outside [1, 65536]",
                                    i, cfg->hidden[i]);
        return 0;
    }
    if (cfg->kind == MODEL_VIT) {
        CHECK_RANGE(channels, 1, 64);
        CHECK_RANGE(height, 1, 1024);
        CHECK_RANGE(width, 1, 1024);
        CHECK_RANGE(patch, 1, 1024);
        CHECK_RANGE(dim, 1, 4096);
        CHECK_RANGE(depth, 1, MODEL_MAX_DEPTH);
        CHECK_RANGE(heads, 1, 64);
        CHECK_RANGE(mlp_dim, 1, 16384);
        if (cfg->height % cfg->patch || cfg->width % cfg->patch)
            return clad_err_set(err, CLAD_EINVAL, "model config: patch %d does not divide the image %dx%d",
                                cfg->patch, cfg->height, cfg->width);
        if (cfg->dim % cfg->heads)
            return clad_err_set(err, CLAD_EINVAL, "model config: heads %d do not divide dim %d", cfg->heads,
                                cfg->dim);
        if (!(cfg->ln_eps >= 0.0f && cfg->ln_eps <= 0.1f))
            return clad_err_set(err, CLAD_EINVAL, "model config: ln_eps = %g is outside [0, 0.1]", (double)cfg->ln_eps);
        int tokens = (cfg->height / cfg->patch) * (cfg->width / cfg->patch) + 1;
        if (tokens > 4096)
            return clad_err_set(err, CLAD_EINVAL, "model config: %d tokens (limit 4096)", tokens);
        return 0;
    }
    return clad_err_set(err, CLAD_EINVAL, "model config: unknown kind %d", (int)cfg->kind);
}

int model_config_input_dim(const model_config *cfg)
{
    if (cfg->kind == MODEL_MLP) return cfg->input_dim;
    return cfg->channels * cfg->height * cfg->width;
}

static int add_linear(model *m, const char *name, int in, int out)
{
    model_linear *L = &m->linear[m->n_linear];
    snprintf(L->name, sizeof L->name, "%s", name);
    L->in = in;
    L->out = out;
    char pname[PARAM_NAME_MAX];
    snprintf(pname, sizeof pname, "%s.weight", name);
    L->weight = param_set_add(&m->params, pname, 2, (int[]){out, in}, true);
    snprintf(pname, sizeof pname, "%s.bias", name);
    L->bias = param_set_add(&m->params, pname, 1, (int[]){out}, false);
    L->is_head = !strcmp(name, "head");
    return m->n_linear++;
}

static model_norm add_norm(model *m, const char *name, int dim)
{
    model_norm n;
    char pname[PARAM_NAME_MAX];
    snprintf(pname, sizeof pname, "%s.weight", name);
    n.weight = param_set_add(&m->params, pname, 1, (int[]){dim}, false);
    snprintf(pname, sizeof pname, "%s.bias", name);
    n.bias = param_set_add(&m->params, pname, 1, (int[]){dim}, false);
    return n;
}

model *model_create(const model_config *cfg, clad_err *err)
{
    if (model_config_validate(cfg, err)) return NULL;
    model *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->cfg = *cfg;
    param_set_init(&m->params);
    model_vit_params *v = &m->vit;
    v->cls_token = v->pos_embed = v->ln.weight = v->ln.bias = -1;
    for (int l = 0; l < MODEL_MAX_DEPTH; l++) v->ln1[l] = v->ln2[l] = (model_norm){-1, -1};
    char name[PARAM_NAME_MAX];
    if (cfg->kind == MODEL_MLP) {
        int in = cfg->input_dim;
        for (int i = 0; i < cfg->n_hidden; i++) {
            snprintf(name, sizeof name, "fc%d", i + 1);
            add_linear(m, name, in, cfg->hidden[i]);
            in = cfg->hidden[i];
        }
        add_linear(m, "head", in, cfg->n_classes);
        m->seq_len = 1;
    } else {
        int C = cfg->dim, pp = cfg->channels * cfg->patch * cfg->patch;
        int P = (cfg->height / cfg->patch) * (cfg->width / cfg->patch);
        m->seq_len = P + 1;
        add_linear(m, "patch_embed", pp, C);
        v->cls_token = param_set_add(&m->params, "cls_token", 1, (int[]){C}, false);
        v->pos_embed = param_set_add(&m->params, "pos_embed", 2, (int[]){m->seq_len, C}, false);
        for (int l = 0; l < cfg->depth; l++) {
            snprintf(name, sizeof name, "blocks.%d.ln1", l);
            v->ln1[l] = add_norm(m, name, C);
            snprintf(name, sizeof name, "blocks.%d.qkv", l);
            add_linear(m, name, C, 3 * C);
            snprintf(name, sizeof name, "blocks.%d.proj", l);
            add_linear(m, name, C, C);
            snprintf(name, sizeof name, "blocks.%d.ln2", l);
            v->ln2[l] = add_norm(m, name, C);
            snprintf(name, sizeof name, "blocks.%d.fc1", l);
            add_linear(m, name, C, cfg->mlp_dim);
            snprintf(name, sizeof name, "blocks.%d.fc2", l);
            add_linear(m, name, cfg->mlp_dim, C);
        }
        v->ln = add_norm(m, "ln", C);
        add_linear(m, "head", C, cfg->n_classes);
    }
    if (param_set_alloc(&m->params, err)) {
        model_destroy(m);
        return NULL;
    }
    return m;
}

void model_destroy(model *m)
{
    if (!m) return;
    param_set_finish(&m->params);
    free(m);
}

/* PyTorch's nn.Linear default (kaiming_uniform with a = sqrt(5)) is U(-1/sqrt(in), 1/sqrt(in)). */
void model_fill_uniform(float *w, size_t n, float bound, rng *r)
{
    for (size_t i = 0; i < n; i++) w[i] = (2.0f * rng_uniform(r) - 1.0f) * bound;
}

static void fill_const(param_set *p, int i, float value)
{
    float *w = param_set_ptr(p, i);
    for (size_t k = 0; k < p->t[i].numel; k++) w[k] = value;
}

void model_init_random(model *m, uint64_t seed)
{
    rng r;
    rng_init(&r, seed);
    param_set *p = &m->params;
    memset(p->data, 0, p->total * sizeof *p->data);
    for (int li = 0; li < m->n_linear; li++) {
        const model_linear *L = &m->linear[li];
        model_fill_uniform(param_set_ptr(p, L->weight), p->t[L->weight].numel, 1.0f / sqrtf((float)L->in), &r);
    }
    if (m->cfg.kind != MODEL_VIT) return;
    const model_vit_params *v = &m->vit;
    fill_const(p, v->ln.weight, 1.0f);
    for (int l = 0; l < m->cfg.depth; l++) {
        fill_const(p, v->ln1[l].weight, 1.0f);
        fill_const(p, v->ln2[l].weight, 1.0f);
    }
    /* The class token before the positions, as they are laid out. */
    const int normal[2] = {v->cls_token, v->pos_embed};
    for (int j = 0; j < 2; j++) {
        float *w = param_set_ptr(p, normal[j]);
        for (size_t k = 0; k < p->t[normal[j]].numel; k++) w[k] = 0.02f * rng_normal(&r);
    }
}

int model_linear_find(const model *m, const char *name)
{
    for (int i = 0; i < m->n_linear; i++)
        if (!strcmp(m->linear[i].name, name)) return i;
    return -1;
}

bool model_linear_is_default_target(const model *m, int li)
{
    const model_linear *L = &m->linear[li];
    if (L->is_head) return false;
    if (m->cfg.kind == MODEL_MLP) return true;
    return strncmp(L->name, "blocks.", 7) == 0;
}

adapter *adapter_alloc(const model *m, const adapter_ops *ops, float alpha, int n_classes, clad_err *err)
{
    if (n_classes < 1 || n_classes > MODEL_MAX_CLASSES) {
        clad_err_set(err, CLAD_EINVAL, "adapter: %d classes is outside [1, %d]", n_classes, MODEL_MAX_CLASSES);
        return NULL;
    }
    if (!(alpha > 0.0f) || !isfinite(alpha)) {
        clad_err_set(err, CLAD_EINVAL, "adapter: alpha must be a positive number");
        return NULL;
    }
    adapter *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->kind = ops->kind;
    a->ops = ops;
    a->n_linear = m->n_linear;
    a->alpha = alpha;
    a->n_classes = n_classes;
    param_set_init(&a->params);
    for (int li = 0; li < MODEL_MAX_LINEARS; li++) {
        a->A[li] = a->B[li] = -1;
        a->tied.group[li] = a->tied.u[li] = a->tied.v[li] = -1;
    }
    a->head_w = a->head_b = -1;
    return a;
}

int adapter_check_rank(const model *m, int li, int r, clad_err *err)
{
    const model_linear *L = &m->linear[li];
    int max_r = model_linear_max_rank(L->out, L->in);
    if (r < 0 || r > max_r || (r > 0 && L->is_head))
        return clad_err_set(err, CLAD_EINVAL, "adapter: rank %d for layer '%s' is outside [0, %d]", r, L->name,
                            L->is_head ? 0 : max_r);
    return 0;
}

int adapter_finish_layout(adapter *a, const model *m, clad_err *err)
{
    int head_in = m->linear[m->n_linear - 1].in;
    a->head_w = param_set_add(&a->params, "head.weight", 2, (int[]){a->n_classes, head_in}, true);
    a->head_b = param_set_add(&a->params, "head.bias", 1, (int[]){a->n_classes}, false);
    return param_set_alloc(&a->params, err);
}

void adapter_destroy(adapter *a)
{
    if (!a) return;
    if (a->ops->finish) a->ops->finish(a);
    param_set_finish(&a->params);
    free(a);
}

void adapter_init_head(adapter *a, const model *m, rng *r)
{
    const model_linear *H = &m->linear[m->n_linear - 1];
    float *hw = param_set_ptr(&a->params, a->head_w), *hb = param_set_ptr(&a->params, a->head_b);
    if (a->n_classes == m->cfg.n_classes) {
        memcpy(hw, param_set_ptr(&m->params, H->weight), (size_t)H->out * (size_t)H->in * sizeof *hw);
        memcpy(hb, param_set_ptr(&m->params, H->bias), (size_t)H->out * sizeof *hb);
    } else {
        model_fill_uniform(hw, (size_t)a->n_classes * (size_t)H->in, 1.0f / sqrtf((float)H->in), r);
    }
}

void adapter_init_A(adapter *a, const model *m, int li, rng *r)
{
    model_fill_uniform(param_set_ptr(&a->params, a->A[li]), a->params.t[a->A[li]].numel,
                       1.0f / sqrtf((float)m->linear[li].in), r);
}

void adapter_init(adapter *a, const model *m, uint64_t seed)
{
    rng r;
    rng_init(&r, seed);
    memset(a->params.data, 0, a->params.total * sizeof *a->params.data);
    a->ops->init(a, m, &r);
    adapter_init_head(a, m, &r);
}

size_t adapter_param_count(const adapter *a)
{
    return a->params.total;
}

float adapter_scale(const adapter *a, int li)
{
    return a->rank[li] ? a->ops->scale(a, li) : 0.0f;
}

void adapter_lora_set_alpha(adapter *a, float alpha)
{
    if (a->kind != ADAPTER_LORA || a->alpha == alpha) return;
    float ratio = a->alpha / alpha;
    for (int li = 0; li < a->n_linear; li++) {
        if (!a->rank[li]) continue;
        float *B = param_set_ptr(&a->params, a->B[li]);
        for (size_t i = 0, n = a->params.t[a->B[li]].numel; i < n; i++) B[i] *= ratio;
    }
    a->alpha = alpha;
}

const char *adapter_kind_name(adapter_kind k)
{
    switch (k) {
    case ADAPTER_LORA: return "lora";
    case ADAPTER_TIED: return "tied";
    case ADAPTER_FUSION: return "fusion";
    }
    return "unknown";
}

void adapter_delta_add(float *dW, const float *A, const float *B, const float *u, const float *v, float scale,
                       int out, int in, int r)
{
    /* Row by row: dW[o,:] += scale v_o sum_k B[o,k] u_k A[k,:]. */
    for (int o = 0; o < out; o++) {
        float *row = dW + (size_t)o * in;
        float so = scale * (v ? v[o] : 1.0f);
        for (int k = 0; k < r; k++) {
            float c = so * B[(size_t)o * r + k] * (u ? u[k] : 1.0f);
            if (c == 0.0f) continue;
            const float *Ak = A + (size_t)k * in;
            for (int i = 0; i < in; i++) row[i] += c * Ak[i];
        }
    }
}

void adapter_delta(float *dW, const adapter *a, const model *m, int li)
{
    const model_linear *L = &m->linear[li];
    memset(dW, 0, (size_t)L->out * (size_t)L->in * sizeof *dW);
    if (a->rank[li] && a->ops->delta) a->ops->delta(dW, a, m, li);
}

void adapter_needs_own_ranks(const adapter *a, adapter_needs *need)
{
    need->max_rank = 1;
    need->n_sources = 0;
    for (int li = 0; li < a->n_linear; li++)
        if (a->rank[li] > need->max_rank) need->max_rank = a->rank[li];
}

int adapter_copy_head(adapter *dst, const adapter *src, clad_err *err)
{
    if (dst->n_classes != src->n_classes || dst->params.t[dst->head_w].numel != src->params.t[src->head_w].numel)
        return clad_err_set(err, CLAD_EINVAL, "adapter heads differ: %d classes against %d", dst->n_classes,
                            src->n_classes);
    memcpy(param_set_ptr(&dst->params, dst->head_w), param_set_ptr(&src->params, src->head_w),
           src->params.t[src->head_w].numel * sizeof(float));
    memcpy(param_set_ptr(&dst->params, dst->head_b), param_set_ptr(&src->params, src->head_b),
           src->params.t[src->head_b].numel * sizeof(float));
    return 0;
}
