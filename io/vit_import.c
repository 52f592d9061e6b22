/* timm and Hugging Face ViT checkpoints to and from clad models; see vit_import.h. */
#include "io/vit_import.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/model_io.h"
#include "io/safetensors.h"

#define NAME_MAX_LEN 160

/* One clad module and its path in each layout. HF's qkv is three modules (hf_qkv below). */
typedef struct module_map {
    const char *clad, *timm, *hf;
} module_map;

static const module_map top_modules[] = {
    {"patch_embed", "patch_embed.proj", "vit.embeddings.patch_embeddings.projection"},
    {"cls_token", "cls_token", "vit.embeddings.cls_token"},
    {"pos_embed", "pos_embed", "vit.embeddings.position_embeddings"},
    {"ln", "norm", "vit.layernorm"},
    {"head", "head", "classifier"},
};
static const module_map block_modules[] = {
    {"ln1", "norm1", "layernorm_before"},
    {"qkv", "attn.qkv", NULL},
    {"proj", "attn.proj", "attention.output.dense"},
    {"ln2", "norm2", "layernorm_after"},
    {"fc1", "mlp.fc1", "intermediate.dense"},
    {"fc2", "mlp.fc2", "output.dense"},
};
static const char *const hf_qkv[3] = {"attention.attention.query", "attention.attention.key", "attention.attention.value"};
#define N_TOP (sizeof top_modules / sizeof *top_modules)
#define N_BLOCK (sizeof block_modules / sizeof *block_modules)

const char *vit_layout_name(vit_layout l)
{
    return l == VIT_LAYOUT_TIMM ? "timm" : l == VIT_LAYOUT_HF ? "hf" : "auto";
}

int vit_layout_parse(vit_layout *l, const char *name, clad_err *err)
{
    for (vit_layout k = VIT_LAYOUT_AUTO; k <= VIT_LAYOUT_HF; k++)
        if (!strcmp(name, vit_layout_name(k))) {
            *l = k;
            return 0;
        }
    return clad_err_set(err, CLAD_EINVAL, "unknown checkpoint layout '%s' (known: timm, hf, auto)", name);
}

/* ---- names ---- */

/* The file tensors holding clad parameter `param` (1, or 3 for HF's qkv); returns their count. Layout AUTO
 * (used for MLPs) keeps clad's names. */
static int source_names(vit_layout layout, const char *param, char out[3][NAME_MAX_LEN])
{
    if (layout == VIT_LAYOUT_AUTO) {
        snprintf(out[0], NAME_MAX_LEN, "%s", param);
        return 1;
    }
    int l = -1, used = 0;
    const char *rest = param;
    if (sscanf(param, "blocks.%d.%n", &l, &used) == 1 && used > 0) rest = param + used;
    const char *dot = strchr(rest, '.');
    size_t mlen = dot ? (size_t)(dot - rest) : strlen(rest);
    const char *suffix = dot ? dot : "";
    const module_map *tab = l >= 0 ? block_modules : top_modules;
    size_t n = l >= 0 ? N_BLOCK : N_TOP;
    for (size_t k = 0; k < n; k++) {
        if (strlen(tab[k].clad) != mlen || strncmp(tab[k].clad, rest, mlen)) continue;
        if (layout == VIT_LAYOUT_TIMM) {
            if (l >= 0) snprintf(out[0], NAME_MAX_LEN, "blocks.%d.%s%s", l, tab[k].timm, suffix);
            else snprintf(out[0], NAME_MAX_LEN, "%s%s", tab[k].timm, suffix);
            return 1;
        }
        if (l < 0) {
            snprintf(out[0], NAME_MAX_LEN, "%s%s", tab[k].hf, suffix);
            return 1;
        }
        if (tab[k].hf) {
            snprintf(out[0], NAME_MAX_LEN, "vit.encoder.layer.%d.%s%s", l, tab[k].hf, suffix);
            return 1;
        }
        for (int q = 0; q < 3; q++) snprintf(out[q], NAME_MAX_LEN, "vit.encoder.layer.%d.%s%s", l, hf_qkv[q], suffix);
        return 3;
    }
    snprintf(out[0], NAME_MAX_LEN, "%s", param); /* not a ViT parameter: no file holds it */
    return 1;
}

void vit_timm_module_name(const model *m, int li, char *out, size_t size)
{
    char src[3][NAME_MAX_LEN];
    char wname[NAME_MAX_LEN];
    snprintf(wname, sizeof wname, "%s.weight", m->linear[li].name);
    source_names(m->cfg.kind == MODEL_VIT ? VIT_LAYOUT_TIMM : VIT_LAYOUT_AUTO, wname, src);
    size_t len = strlen(src[0]) - strlen(".weight");
    snprintf(out, size, "%.*s", (int)len, src[0]);
}

int vit_linear_from_timm(const model *m, const char *module)
{
    char name[NAME_MAX_LEN];
    for (int li = 0; li < m->n_linear; li++) {
        vit_timm_module_name(m, li, name, sizeof name);
        if (!strcmp(name, module)) return li;
    }
    return -1;
}

int vit_linear_from_module(const model *m, const char *module, int *part, int *n_parts)
{
    *part = 0;
    *n_parts = 1;
    int li = vit_linear_from_timm(m, module);
    if (li >= 0 || m->cfg.kind != MODEL_VIT) return li;
    char src[3][NAME_MAX_LEN], wname[NAME_MAX_LEN];
    size_t mlen = strlen(module);
    for (li = 0; li < m->n_linear; li++) {
        snprintf(wname, sizeof wname, "%s.weight", m->linear[li].name);
        int ns = source_names(VIT_LAYOUT_HF, wname, src);
        for (int k = 0; k < ns; k++)
            if (strlen(src[k]) == mlen + strlen(".weight") && !strncmp(src[k], module, mlen)) {
                *part = k;
                *n_parts = ns;
                return li;
            }
    }
    return -1;
}

/* The shape a layout stores param i with: PyTorch keeps the conv kernel and a batch axis on the tokens. */
static int file_shape(const model *m, int i, int n_src, int64_t *shape)
{
    const param_tensor *t = &m->params.t[i];
    const model_config *c = &m->cfg;
    if (c->kind == MODEL_VIT && !strcmp(t->name, "patch_embed.weight")) {
        shape[0] = c->dim, shape[1] = c->channels, shape[2] = c->patch, shape[3] = c->patch;
        return 4;
    }
    if (c->kind == MODEL_VIT && (!strcmp(t->name, "cls_token") || !strcmp(t->name, "pos_embed"))) {
        shape[0] = 1;
        shape[1] = t->ndim == 1 ? 1 : t->shape[0];
        shape[2] = c->dim;
        return 3;
    }
    for (int d = 0; d < t->ndim; d++) shape[d] = t->shape[d];
    shape[0] /= n_src; /* HF's q, k, v each hold a third of qkv's rows */
    return t->ndim;
}

/* ---- import ---- */

static const st_tensor *find_dims(const st_reader *r, const char *name, int ndim, clad_err *err)
{
    const st_tensor *t = st_reader_find(r, name);
    if (!t) {
        clad_err_set(err, CLAD_EINVAL, "checkpoint: tensor '%s' is missing", name);
        return NULL;
    }
    if (t->ndim != ndim) {
        clad_err_set(err, CLAD_EINVAL, "checkpoint: tensor '%s' has %d dimensions, expected %d", name, t->ndim, ndim);
        return NULL;
    }
    return t;
}

/* Reads what the shapes say into cfg. */
static int infer_config(model_config *cfg, const st_reader *r, vit_layout layout, clad_err *err)
{
    char n[3][NAME_MAX_LEN];
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = MODEL_VIT;
    const st_tensor *t;
    source_names(layout, "patch_embed.weight", n);
    if (!(t = find_dims(r, n[0], 4, err))) return CLAD_EINVAL;
    if (t->shape[2] != t->shape[3] || t->shape[0] > 4096 || t->shape[1] > 64 || t->shape[2] > 1024)
        return clad_err_set(err, CLAD_EINVAL, "checkpoint: '%s' has an unsupported shape (square patches only)", n[0]);
    cfg->dim = (int)t->shape[0];
    cfg->channels = (int)t->shape[1];
    cfg->patch = (int)t->shape[2];
    source_names(layout, "pos_embed", n);
    if (!(t = find_dims(r, n[0], 3, err))) return CLAD_EINVAL;
    long long grid = (long long)llround(sqrt((double)(t->shape[1] - 1)));
    if (t->shape[1] < 2 || grid * grid != t->shape[1] - 1 || grid * cfg->patch > 1024)
        return clad_err_set(err, CLAD_EINVAL, "checkpoint: '%s' holds %lld tokens, not 1 + a square grid of patches", n[0],
                            (long long)t->shape[1]);
    cfg->height = cfg->width = (int)grid * cfg->patch;
    source_names(layout, "blocks.0.fc1.weight", n);
    if (!(t = find_dims(r, n[0], 2, err))) return CLAD_EINVAL;
    cfg->mlp_dim = t->shape[0] > 16384 ? 16385 : (int)t->shape[0];
    source_names(layout, "head.weight", n);
    if (!(t = find_dims(r, n[0], 2, err))) return CLAD_EINVAL;
    cfg->n_classes = t->shape[0] > MODEL_MAX_CLASSES ? MODEL_MAX_CLASSES + 1 : (int)t->shape[0];
    /* Depth: the blocks present, counted from 0 until the first missing one. */
    for (cfg->depth = 0; cfg->depth <= MODEL_MAX_LINEARS; cfg->depth++) {
        char pname[NAME_MAX_LEN];
        snprintf(pname, sizeof pname, "blocks.%d.ln1.weight", cfg->depth);
        source_names(layout, pname, n);
        if (!st_reader_find(r, n[0])) break;
    }
    return 0;
}

/* True if `name` is one of the file tensors that m's parameters are read from. */
static bool is_source(const model *m, vit_layout layout, const char *name)
{
    char src[3][NAME_MAX_LEN];
    for (int i = 0; i < m->params.n; i++) {
        int ns = source_names(layout, m->params.t[i].name, src);
        for (int k = 0; k < ns; k++)
            if (!strcmp(src[k], name)) return true;
    }
    return false;
}

static int read_weights(model *m, const st_reader *r, vit_layout layout, clad_err *err)
{
    char src[3][NAME_MAX_LEN];
    for (int i = 0; i < m->params.n; i++) {
        int ns = source_names(layout, m->params.t[i].name, src);
        int64_t shape[ST_MAX_DIMS];
        int nd = file_shape(m, i, ns, shape);
        size_t part = m->params.t[i].numel / (size_t)ns;
        for (int k = 0; k < ns; k++) {
            float *dst = param_set_ptr(&m->params, i) + (size_t)k * part;
            int rc = st_reader_get_f32(r, src[k], nd, shape, dst, err);
            if (rc) {
                clad_err_prefix(err, "checkpoint (%s layout): ", vit_layout_name(layout));
                return rc;
            }
            for (size_t j = 0; j < part; j++)
                if (!isfinite(dst[j]))
                    return clad_err_set(err, CLAD_EINVAL, "checkpoint: tensor '%s' holds a non-finite value", src[k]);
        }
    }
    for (int i = 0; i < st_reader_count(r); i++) {
        const char *name = st_reader_at(r, i)->name;
        if (layout == VIT_LAYOUT_HF && !strncmp(name, "vit.pooler.", 11)) continue;
        if (!is_source(m, layout, name))
            return clad_err_set(err, CLAD_EINVAL,
                                "checkpoint (%s layout): unexpected tensor '%s' (clad's ViT has no such module)",
                                vit_layout_name(layout), name);
    }
    return 0;
}

model *vit_import(const void *buf, size_t len, const vit_import_opts *opts, clad_err *err)
{
    st_reader *r = st_reader_parse(buf, len, err);
    if (!r) return NULL;
    vit_layout layout = opts->layout;
    if (layout == VIT_LAYOUT_AUTO)
        layout = st_reader_find(r, "vit.embeddings.cls_token") ? VIT_LAYOUT_HF : VIT_LAYOUT_TIMM;
    model_config cfg, file_cfg;
    model *m = NULL;
    if (infer_config(&cfg, r, layout, err)) goto done;
    /* What shapes cannot tell: the caller's word, else a clad export's own config, else the defaults. */
    const char *ctext = st_reader_meta(r, "config");
    bool have_file_cfg = ctext && model_config_parse(&file_cfg, ctext, NULL) == 0 && file_cfg.kind == MODEL_VIT;
    cfg.heads = opts->heads ? opts->heads : have_file_cfg ? file_cfg.heads : cfg.dim % 64 == 0 ? cfg.dim / 64 : 0;
    if (!cfg.heads) {
        clad_err_set(err, CLAD_EINVAL,
                     "checkpoint: dim %d is not a multiple of 64, so the number of attention heads (heads) must be given",
                     cfg.dim);
        goto done;
    }
    cfg.ln_eps = opts->ln_eps > 0.0f ? opts->ln_eps
                 : have_file_cfg    ? file_cfg.ln_eps
                 : layout == VIT_LAYOUT_HF ? 1e-12f : 1e-6f;
    cfg.gelu_erf = opts->gelu_tanh ? false : have_file_cfg ? file_cfg.gelu_erf : true;
    /* timm and HF ViTs take normalised pixels, not [0, 1]; a clad export keeps the range it had. */
    cfg.inputs_finite = have_file_cfg ? file_cfg.inputs_finite : true;
    if (!(m = model_create(&cfg, err))) {
        clad_err_prefix(err, "checkpoint: ");
        goto done;
    }
    if (read_weights(m, r, layout, err)) {
        model_destroy(m);
        m = NULL;
    }
done:
    st_reader_destroy(r);
    return m;
}

/* ---- export ---- */

int vit_export_timm(const model *m, uint8_t **out, size_t *len, clad_err *err)
{
    vit_layout layout = m->cfg.kind == MODEL_VIT ? VIT_LAYOUT_TIMM : VIT_LAYOUT_AUTO;
    st_writer *w = st_writer_create();
    json_t *cj = model_config_to_json(&m->cfg);
    char *ctext = json_dumps(cj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(cj);
    /* "format": "pt" is what transformers' and timm's safetensors writers put there. */
    int rc = st_writer_meta(w, "format", "pt", err);
    if (!rc) rc = st_writer_meta(w, "config", ctext, err);
    char src[3][NAME_MAX_LEN];
    for (int i = 0; !rc && i < m->params.n; i++) {
        source_names(layout, m->params.t[i].name, src);
        int64_t shape[ST_MAX_DIMS];
        int nd = file_shape(m, i, 1, shape);
        rc = st_writer_add_f32(w, src[0], nd, shape, param_set_ptr(&m->params, i), err);
    }
    if (!rc) rc = st_writer_to_buffer(w, out, len, err);
    free(ctext);
    st_writer_destroy(w);
    return rc;
}
