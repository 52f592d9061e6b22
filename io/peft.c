/* PEFT LoRA directories to and from clad adapters; see peft.h. */
#include "io/peft.h"

#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "io/vit_import.h"

#define MODULE_MAX 160

void peft_files_finish(peft_files *f)
{
    if (!f) return;
    free(f->model);
    free(f->config);
    memset(f, 0, sizeof *f);
}

/* The factor shapes PEFT stores for linear li (or part of its n_parts of output rows: HF's query, key,
 * value of qkv): nn.Linear's (r,in) and (out,r), or a Conv2d's kernels for the patch embedding. Returns
 * the number of dimensions. */
static int factor_shape(const model *m, int li, int n_parts, int r, bool is_B, int64_t *shape)
{
    const model_linear *L = &m->linear[li];
    bool conv = m->cfg.kind == MODEL_VIT && li == 0;
    if (is_B) {
        shape[0] = L->out / n_parts, shape[1] = r, shape[2] = 1, shape[3] = 1;
    } else if (conv) {
        shape[0] = r, shape[1] = m->cfg.channels, shape[2] = m->cfg.patch, shape[3] = m->cfg.patch;
    } else {
        shape[0] = r, shape[1] = L->in;
    }
    return conv ? 4 : 2;
}

static json_t *json_number_tidy(double v)
{
    return v == floor(v) && fabs(v) < 1e15 ? json_integer((json_int_t)v) : json_real(v);
}

/* ---- export ---- */

/* The rank PEFT's r should hold: the most common nonzero rank (the larger on a tie), 8 when none. */
static int common_rank(const adapter *a)
{
    int best = 0, best_n = 0;
    for (int li = 0; li < a->n_linear; li++) {
        int r = a->rank[li], n = 0;
        if (!r) continue;
        for (int k = 0; k < a->n_linear; k++) n += a->rank[k] == r;
        if (n > best_n || (n == best_n && r > best)) best = r, best_n = n;
    }
    return best ? best : 8;
}

static int add_factors(st_writer *w, const adapter *a, const model *m, int li, clad_err *err)
{
    char module[MODULE_MAX], name[MODULE_MAX + 64];
    vit_timm_module_name(m, li, module, sizeof module);
    int64_t shape[4];
    int nd = factor_shape(m, li, 1, a->rank[li], false, shape);
    snprintf(name, sizeof name, PEFT_PREFIX "%s.lora_A.weight", module);
    int rc = st_writer_add_f32(w, name, nd, shape, param_set_ptr(&a->params, a->A[li]), err);
    nd = factor_shape(m, li, 1, a->rank[li], true, shape);
    snprintf(name, sizeof name, PEFT_PREFIX "%s.lora_B.weight", module);
    if (!rc) rc = st_writer_add_f32(w, name, nd, shape, param_set_ptr(&a->params, a->B[li]), err);
    return rc;
}

static char *config_text(const adapter *a, const model *m, const char *base_name)
{
    int r = common_rank(a);
    json_t *targets = json_array(), *ranks = json_object();
    char module[MODULE_MAX], head[MODULE_MAX];
    for (int li = 0; li < a->n_linear; li++) {
        if (!a->rank[li]) continue;
        vit_timm_module_name(m, li, module, sizeof module);
        json_array_append_new(targets, json_string(module));
        if (a->rank[li] != r) json_object_set_new(ranks, module, json_integer(a->rank[li]));
    }
    vit_timm_module_name(m, m->n_linear - 1, head, sizeof head);
    json_t *c = json_pack("{s:s,s:i,s:o,s:f,s:o,s:o,s:o,s:[s],s:s,s:s,s:b,s:b,s:b,s:b,s:n,s:n}", "peft_type", "LORA",
                          "r", r, "lora_alpha", json_number_tidy((double)a->alpha), "lora_dropout", 0.0,
                          "target_modules", targets, "rank_pattern", ranks, "alpha_pattern", json_object(),
                          "modules_to_save", head, "bias", "none", "base_model_name_or_path", base_name,
                          "fan_in_fan_out", 0, "use_rslora", 0, "use_dora", 0, "inference_mode", 1, "task_type",
                          "revision");
    char *text = json_dumps(c, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(c);
    return text;
}

int peft_export(const adapter *a, const model *m, const char *base_name, peft_files *out, clad_err *err)
{
    memset(out, 0, sizeof *out);
    if (a->kind == ADAPTER_FUSION)
        return clad_err_set(err, CLAD_EINVAL,
                            "a fusion version has no plain LoRA equivalent (its output mixes its source adapters "
                            "with input-dependent attention weights); export the source versions instead");
    adapter *owned = NULL;
    if (a->kind == ADAPTER_TIED) {
        /* Exact: per layer A_l = A and B_l = diag(v) B diag(u), the tied scale folded in. */
        if (!(owned = adapter_tied_to_lora(a, m, err))) return err->code;
        a = owned;
    }
    st_writer *w = st_writer_create();
    int rc = st_writer_meta(w, "format", "pt", err);
    for (int li = 0; !rc && li < a->n_linear; li++)
        if (a->rank[li]) rc = add_factors(w, a, m, li, err);
    char head[MODULE_MAX], name[MODULE_MAX + 32];
    vit_timm_module_name(m, m->n_linear - 1, head, sizeof head);
    const param_tensor *hw = &a->params.t[a->head_w];
    snprintf(name, sizeof name, PEFT_PREFIX "%s.weight", head);
    if (!rc)
        rc = st_writer_add_f32(w, name, 2, (int64_t[]){hw->shape[0], hw->shape[1]}, param_set_ptr(&a->params, a->head_w),
                               err);
    snprintf(name, sizeof name, PEFT_PREFIX "%s.bias", head);
    if (!rc) rc = st_writer_add_f32(w, name, 1, (int64_t[]){hw->shape[0]}, param_set_ptr(&a->params, a->head_b), err);
    if (!rc) rc = st_writer_to_buffer(w, &out->model, &out->model_len, err);
    if (!rc) out->config = config_text(a, m, base_name ? base_name : "");
    st_writer_destroy(w);
    adapter_destroy(owned);
    if (rc) peft_files_finish(out);
    return rc;
}

/* ---- import ---- */

typedef struct peft_config {
    int r;
    double alpha;
    bool rslora;
    json_t *rank_pattern, *alpha_pattern;  /* borrowed from the parsed config */
    const char *head;                      /* the modules_to_save entry, or NULL */
} peft_config;

/* head_modules: the names the model's head may have in modules_to_save (timm's "head", HF's "classifier"). */
static int parse_config(peft_config *c, json_t *j, const char *const head_modules[2], clad_err *err)
{
    memset(c, 0, sizeof *c);
    if (!json_is_object(j)) return clad_err_set(err, CLAD_EINVAL, PEFT_CONFIG_FILE ": not a JSON object");
    const char *type = json_string_value(json_object_get(j, "peft_type"));
    if (!type || strcmp(type, "LORA"))
        return clad_err_set(err, CLAD_EINVAL, PEFT_CONFIG_FILE ": peft_type is '%s'; clad imports LORA adapters only",
                            type ? type : "(missing)");
    json_t *r = json_object_get(j, "r"), *alpha = json_object_get(j, "lora_alpha");
    c->r = r ? (int)json_integer_value(r) : 8;       /* PEFT's defaults */
    c->alpha = alpha ? json_number_value(alpha) : 8.0;
    if ((r && !json_is_integer(r)) || c->r < 1 || (alpha && !json_is_number(alpha)) || !(c->alpha > 0.0) ||
        !isfinite(c->alpha))
        return clad_err_set(err, CLAD_EINVAL, PEFT_CONFIG_FILE ": r must be a positive integer and lora_alpha a positive number");
    const char *bias = json_string_value(json_object_get(j, "bias"));
    if (bias && strcmp(bias, "none"))
        return clad_err_set(err, CLAD_EINVAL,
                            PEFT_CONFIG_FILE ": bias '%s' trains the base biases; clad imports bias \"none\" only", bias);
    static const char *const refused[] = {"use_dora", "fan_in_fan_out"};
    for (size_t k = 0; k < 2; k++)
        if (json_is_true(json_object_get(j, refused[k])))
            return clad_err_set(err, CLAD_EINVAL, PEFT_CONFIG_FILE ": %s is not supported by clad", refused[k]);
    c->rslora = json_is_true(json_object_get(j, "use_rslora"));
    c->rank_pattern = json_object_get(j, "rank_pattern");
    c->alpha_pattern = json_object_get(j, "alpha_pattern");
    json_t *mts = json_object_get(j, "modules_to_save"), *v;
    size_t i;
    json_array_foreach(mts, i, v) {
        const char *s = json_string_value(v);
        int k = 0;
        while (k < 2 && head_modules[k] && (!s || strcmp(s, head_modules[k]))) k++;
        if (k == 2 || !head_modules[k])
            return clad_err_set(err, CLAD_EINVAL, PEFT_CONFIG_FILE ": modules_to_save holds '%s'; clad keeps only the task head ('%s')",
                                s ? s : "(not a string)", head_modules[0]);
        c->head = head_modules[k];
    }
    return 0;
}

/* PEFT's pattern rule: the value of the first key k (in file order) for which (.*\.)?(k)$ matches the whole
 * module name; *found false when none does. */
static int pattern_lookup(const json_t *patterns, const char *module, double *value, bool *found, clad_err *err)
{
    *found = false;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)patterns, key, v) {
        size_t n = strlen(key) + 16;
        char *re = malloc(n);
        if (!re) abort();
        snprintf(re, n, "^(.*\\.)?(%s)$", key);
        regex_t rx;
        int bad = regcomp(&rx, re, REG_EXTENDED | REG_NOSUB);
        free(re);
        if (bad)
            return clad_err_set(err, CLAD_EINVAL, PEFT_CONFIG_FILE ": pattern '%s' is not a regular expression clad can read",
                                key);
        bool match = regexec(&rx, module, 0, NULL, 0) == 0;
        regfree(&rx);
        if (!match) continue;
        if (!json_is_number(v) || !(json_number_value(v) > 0.0))
            return clad_err_set(err, CLAD_EINVAL, PEFT_CONFIG_FILE ": the value of pattern '%s' must be a positive number", key);
        *value = json_number_value(v);
        *found = true;
        return 0;
    }
    return 0;
}

/* The LoRA factors of one PyTorch module: a part of a clad linear (see vit_linear_from_module). */
typedef struct module_factors {
    const st_tensor *A, *B;
    char module[MODULE_MAX];
    int rank;
} module_factors;

typedef struct linear_factors {
    int n_parts;
    module_factors part[3];
} linear_factors;

/* Files tensor t if it is "base_model.model.<module>.lora_A|B.weight" of a module m has; false if not. */
static bool file_factor(linear_factors *lf, const model *m, const st_tensor *t)
{
    static const char *const sfx[2] = {".lora_A.weight", ".lora_B.weight"};
    const char *name = t->name;
    size_t pl = strlen(PEFT_PREFIX), len = strlen(name);
    if (strncmp(name, PEFT_PREFIX, pl)) return false;
    for (int k = 0; k < 2; k++) {
        size_t sl = strlen(sfx[k]);
        if (len <= pl + sl || strcmp(name + len - sl, sfx[k]) || len - pl - sl >= MODULE_MAX) continue;
        char module[MODULE_MAX];
        snprintf(module, sizeof module, "%.*s", (int)(len - pl - sl), name + pl);
        int part, n_parts, li = vit_linear_from_module(m, module, &part, &n_parts);
        if (li < 0) return false;
        lf[li].n_parts = n_parts;
        module_factors *mf = &lf[li].part[part];
        snprintf(mf->module, sizeof mf->module, "%s", module);
        if (k) mf->B = t;
        else mf->A = t;
        return true;
    }
    return false;
}

static bool is_head_tensor(const char *name, const char *head, const char *what)
{
    char a[MODULE_MAX + 64], b[MODULE_MAX + 64];
    snprintf(a, sizeof a, PEFT_PREFIX "%s.%s", head, what);
    snprintf(b, sizeof b, PEFT_PREFIX "%s.modules_to_save.default.%s", head, what);
    return !strcmp(name, a) || !strcmp(name, b);
}

/* Checks t's shape and copies it into dst (numel floats), refusing non-finite values. */
static int take_tensor(float *dst, const st_tensor *t, int nd, const int64_t *shape, clad_err *err)
{
    bool same = t->ndim == nd;
    for (int d = 0; same && d < nd; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char want[64], got[64];
        snprintf(want, sizeof want, "[%lld", (long long)shape[0]);
        for (int d = 1; d < nd; d++) snprintf(want + strlen(want), sizeof want - strlen(want), ",%lld", (long long)shape[d]);
        snprintf(got, sizeof got, "[%lld", t->ndim ? (long long)t->shape[0] : 0LL);
        for (int d = 1; d < t->ndim; d++) snprintf(got + strlen(got), sizeof got - strlen(got), ",%lld", (long long)t->shape[d]);
        return clad_err_set(err, CLAD_EINVAL, PEFT_MODEL_FILE ": tensor '%s' has shape %s], expected %s]", t->name, got, want);
    }
    int rc = st_tensor_to_f32(t, dst, err);
    for (int64_t i = 0; !rc && i < t->numel; i++)
        if (!isfinite(dst[i])) rc = clad_err_set(err, CLAD_EINVAL, PEFT_MODEL_FILE ": tensor '%s' holds a non-finite value", t->name);
    return rc;
}

/* The scale PEFT gives module `module` of rank r: alpha_pattern's alpha (else lora_alpha) over r, or over
 * sqrt(r) with rsLoRA; also checks r against rank_pattern (else r), as PEFT would build the module. */
static int module_scale(const peft_config *c, const char *module, int r, double *scale, clad_err *err)
{
    double want = c->r, alpha = c->alpha;
    bool found;
    int rc = pattern_lookup(c->rank_pattern, module, &want, &found, err);
    if (!rc && (int)want != r)
        rc = clad_err_set(err, CLAD_EINVAL, "PEFT adapter: module '%s' has rank %d in the file but %d in the config", module, r,
                          (int)want);
    if (!rc) rc = pattern_lookup(c->alpha_pattern, module, &alpha, &found, err);
    *scale = alpha / (c->rslora ? sqrt((double)r) : (double)r);
    return rc;
}

/* Fills linear li of a from its modules: A stacks the parts' A rows; B places each part's B (rows of its
 * share, columns of its rank) with PEFT's scale over clad's folded in, so the product is exact. */
static int take_linear(adapter *a, const model *m, const peft_config *c, int li, const linear_factors *lf, clad_err *err)
{
    const model_linear *L = &m->linear[li];
    int R = a->rank[li], np = lf->n_parts, rows = L->out / np, off = 0, rc = 0;
    float *A = param_set_ptr(&a->params, a->A[li]), *B = param_set_ptr(&a->params, a->B[li]);
    for (int p = 0; !rc && p < np; p++) {
        const module_factors *mf = &lf->part[p];
        int r = mf->rank;
        if (!r) continue;
        int64_t shape[4];
        int nd = factor_shape(m, li, np, r, false, shape);
        double scale = 0;
        rc = module_scale(c, mf->module, r, &scale, err);
        if (!rc) rc = take_tensor(A + (size_t)off * (size_t)L->in, mf->A, nd, shape, err);
        float *Bp = malloc((size_t)rows * (size_t)r * sizeof *Bp);
        if (!Bp) abort();
        nd = factor_shape(m, li, np, r, true, shape);
        if (!rc) rc = take_tensor(Bp, mf->B, nd, shape, err);
        double fold = scale / ((double)a->alpha / (double)R);
        for (int o = 0; !rc && o < rows; o++) {
            float *dst = B + (size_t)(p * rows + o) * (size_t)R + (size_t)off; /* row p*rows+o, columns off.. */
            for (int k = 0; k < r; k++) dst[k] = (float)((double)Bp[(size_t)o * (size_t)r + (size_t)k] * fold);
        }
        free(Bp);
        off += r;
    }
    return rc;
}

static adapter *import_tensors(const model *m, const st_reader *rd, const peft_config *c, clad_err *err)
{
    linear_factors lf[MODEL_MAX_LINEARS];
    memset(lf, 0, sizeof lf);
    const st_tensor *hw = NULL, *hb = NULL;
    for (int i = 0; i < st_reader_count(rd); i++) {
        const st_tensor *t = st_reader_at(rd, i);
        if (file_factor(lf, m, t)) continue;
        if (c->head && is_head_tensor(t->name, c->head, "weight")) {
            hw = t;
        } else if (c->head && is_head_tensor(t->name, c->head, "bias")) {
            hb = t;
        } else {
            clad_err_set(err, CLAD_EINVAL, PEFT_MODEL_FILE ": tensor '%s' is not a LoRA factor of a module clad's model has%s", t->name,
                         c->head ? " nor its head" : " (and modules_to_save names no head)");
            return NULL;
        }
    }
    int ranks[MODEL_MAX_LINEARS] = {0};
    for (int li = 0; li < m->n_linear; li++) {
        for (int p = 0; p < lf[li].n_parts; p++) {
            module_factors *mf = &lf[li].part[p];
            if (!mf->A != !mf->B) {
                clad_err_set(err, CLAD_EINVAL, PEFT_MODEL_FILE ": module '%s' has lora_%s but not lora_%s", mf->module,
                             mf->A ? "A" : "B", mf->A ? "B" : "A");
                return NULL;
            }
            mf->rank = mf->A && mf->A->ndim ? (int)(mf->A->shape[0] > 65536 ? 65536 : mf->A->shape[0]) : 0;
            ranks[li] += mf->rank;
        }
    }
    if (!hw != !hb) {
        clad_err_set(err, CLAD_EINVAL, PEFT_MODEL_FILE ": the head '%s' needs both weight and bias", c->head);
        return NULL;
    }
    int classes = hw && hw->ndim == 2 && hw->shape[0] <= MODEL_MAX_CLASSES ? (int)hw->shape[0] : m->cfg.n_classes;
    adapter *a = adapter_create(m, ranks, (float)c->alpha, classes, err);
    if (!a) return NULL;
    int rc = 0;
    for (int li = 0; !rc && li < m->n_linear; li++)
        if (ranks[li]) rc = take_linear(a, m, c, li, &lf[li], err);
    const model_linear *H = &m->linear[m->n_linear - 1];
    if (!rc && hw) {
        rc = take_tensor(param_set_ptr(&a->params, a->head_w), hw, 2, (int64_t[]){classes, H->in}, err);
        if (!rc) rc = take_tensor(param_set_ptr(&a->params, a->head_b), hb, 1, (int64_t[]){classes}, err);
    } else if (!rc) {
        memcpy(param_set_ptr(&a->params, a->head_w), param_set_ptr(&m->params, H->weight),
               (size_t)H->out * (size_t)H->in * sizeof(float));
        memcpy(param_set_ptr(&a->params, a->head_b), param_set_ptr(&m->params, H->bias), (size_t)H->out * sizeof(float));
    }
    if (rc) {
        adapter_destroy(a);
        return NULL;
    }
    return a;
}

adapter *peft_import(const model *m, const void *st_buf, size_t st_len, const char *config, size_t config_len,
                     clad_err *err)
{
    json_error_t je;
    json_t *j = json_loadb(config, config_len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        clad_err_set(err, CLAD_EINVAL, PEFT_CONFIG_FILE ": %s (line %d column %d)", je.text, je.line, je.column);
        return NULL;
    }
    char head[MODULE_MAX];
    vit_timm_module_name(m, m->n_linear - 1, head, sizeof head);
    const char *const heads[2] = {head, m->cfg.kind == MODEL_VIT ? "classifier" : NULL};
    peft_config c;
    adapter *a = NULL;
    st_reader *rd = NULL;
    if (parse_config(&c, j, heads, err)) goto done;
    if (!(rd = st_reader_parse(st_buf, st_len, err))) {
        clad_err_prefix(err, PEFT_MODEL_FILE ": ");
        goto done;
    }
    a = import_tensors(m, rd, &c, err);
done:
    st_reader_destroy(rd);
    json_decref(j);
    return a;
}
