/* Model configs as JSON and model/adapter files as safetensors; see model_io.h. */
#include "io/model_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fusion.h"
#include "io/safetensors.h"

/* ---- configs ------------------------------------------------------------------------------------ */

typedef struct int_field {
    const char *key;
    size_t offset;
} int_field;

#define F(name, field) {name, offsetof(model_config, field)}
static const int_field vit_fields[] = {
    F("channels", channels), F("height", height), F("width", width), F("patch", patch), F("dim", dim),
    F("depth", depth), F("heads", heads), F("mlp_dim", mlp_dim), F("classes", n_classes),
};
static const int_field mlp_fields[] = {F("input_dim", input_dim), F("classes", n_classes)};
#undef F

static int set_int_field(model_config *cfg, const int_field *f, const json_t *v, clad_err *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1 << 30)
        return clad_err_set(err, CLAD_EINVAL, "model config: '%s' must be a non-negative integer", f->key);
    *(int *)((char *)cfg + f->offset) = (int)json_integer_value(v);
    return 0;
}

/* A config key whose value is one of two words: off (clad's default) or on. */
static int two_word_flag(const json_t *v, const char *key, const char *off, const char *on, bool *out, clad_err *err)
{
    const char *s = json_string_value(v);
    if (!s || (strcmp(s, off) && strcmp(s, on)))
        return clad_err_set(err, CLAD_EINVAL, "model config: '%s' must be \"%s\" or \"%s\"", key, off, on);
    *out = !strcmp(s, on);
    return 0;
}

/* A config naming an unknown preset is bad input (400), not a missing resource. */
static int preset(model_config *cfg, const char *name, clad_err *err)
{
    int rc = model_config_preset(cfg, name, err);
    if (rc == CLAD_ENOTFOUND) rc = err ? (err->code = CLAD_EINVAL) : CLAD_EINVAL;
    return rc;
}

int model_config_from_json(model_config *cfg, const json_t *j, clad_err *err)
{
    if (json_is_string(j)) return preset(cfg, json_string_value(j), err);
    if (!json_is_object(j))
        return clad_err_set(err, CLAD_EINVAL, "model config must be a preset name or an object");
    const char *kind = json_string_value(json_object_get(j, "model"));
    if (!kind) return clad_err_set(err, CLAD_EINVAL, "model config: 'model' (mlp, vit, or a preset) is required");
    memset(cfg, 0, sizeof *cfg);
    if (!strcmp(kind, "mlp") || !strcmp(kind, "vit")) {
        cfg->kind = kind[0] == 'm' ? MODEL_MLP : MODEL_VIT;
    } else if (preset(cfg, kind, err)) {
        return CLAD_EINVAL;
    }
    const int_field *fields = cfg->kind == MODEL_MLP ? mlp_fields : vit_fields;
    size_t n_fields = cfg->kind == MODEL_MLP ? sizeof mlp_fields / sizeof *mlp_fields
                                             : sizeof vit_fields / sizeof *vit_fields;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v) {
        if (!strcmp(key, "model")) continue;
        if (cfg->kind == MODEL_MLP && !strcmp(key, "hidden")) {
            if (!json_is_array(v) || json_array_size(v) > MODEL_MAX_HIDDEN)
                return clad_err_set(err, CLAD_EINVAL, "model config: 'hidden' must be an array of at most %d sizes",
                                    MODEL_MAX_HIDDEN);
            cfg->n_hidden = (int)json_array_size(v);
            for (int i = 0; i < cfg->n_hidden; i++) {
                json_t *h = json_array_get(v, (size_t)i);
                if (!json_is_integer(h) || json_integer_value(h) < 1 || json_integer_value(h) > 65536)
                    return clad_err_set(err, CLAD_EINVAL, "model config: hidden[%d] must be an integer in [1, 65536]", i);
                cfg->hidden[i] = (int)json_integer_value(h);
            }
            continue;
        }
        if (cfg->kind == MODEL_VIT && !strcmp(key, "ln_eps")) {
            if (!json_is_number(v)) return clad_err_set(err, CLAD_EINVAL, "model config: 'ln_eps' must be a number");
            cfg->ln_eps = (float)json_number_value(v);
            continue;
        }
        if (cfg->kind == MODEL_VIT && !strcmp(key, "gelu")) {
            if (two_word_flag(v, key, "tanh", "erf", &cfg->gelu_erf, err)) return CLAD_EINVAL;
            continue;
        }
        if (cfg->kind == MODEL_VIT && !strcmp(key, "input_range")) {
            if (two_word_flag(v, key, "unit", "finite", &cfg->inputs_finite, err)) return CLAD_EINVAL;
            continue;
        }
        size_t k = 0;
        while (k < n_fields && strcmp(fields[k].key, key)) k++;
        if (k == n_fields) return clad_err_set(err, CLAD_EINVAL, "model config: unknown key '%s'", key);
        if (set_int_field(cfg, &fields[k], v, err)) return CLAD_EINVAL;
    }
    return model_config_validate(cfg, err);
}

json_t *model_config_to_json(const model_config *cfg)
{
    json_t *j = json_object();
    if (cfg->kind == MODEL_MLP) {
        json_object_set_new(j, "model", json_string("mlp"));
        json_object_set_new(j, "input_dim", json_integer(cfg->input_dim));
        json_t *h = json_array();
        for (int i = 0; i < cfg->n_hidden; i++) json_array_append_new(h, json_integer(cfg->hidden[i]));
        json_object_set_new(j, "hidden", h);
        json_object_set_new(j, "classes", json_integer(cfg->n_classes));
        return j;
    }
    json_object_set_new(j, "model", json_string("vit"));
    for (size_t k = 0; k < sizeof vit_fields / sizeof *vit_fields; k++)
        json_object_set_new(j, vit_fields[k].key, json_integer(*(const int *)((const char *)cfg + vit_fields[k].offset)));
    /* Written only when not clad's defaults, so the configs of existing bases keep their exact text. */
    if (cfg->ln_eps > 0.0f) json_object_set_new(j, "ln_eps", json_real((double)cfg->ln_eps));
    if (cfg->gelu_erf) json_object_set_new(j, "gelu", json_string("erf"));
    if (cfg->inputs_finite) json_object_set_new(j, "input_range", json_string("finite"));
    return j;
}

int model_config_parse(model_config *cfg, const char *text, clad_err *err)
{
    /* A bare preset name (mlp, vit-tiny) is what people type on a command line or in a query. */
    size_t lead = strspn(text, " \t\r\n");
    if (text[lead] && strchr("{\"", text[lead]) == NULL && strspn(text + lead, "abcdefghijklmnopqrstuvwxyz0123456789-_") ==
                                                               strlen(text + lead))
        return preset(cfg, text + lead, err);
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!j) return clad_err_set(err, CLAD_EINVAL, "model config: %s (line %d column %d)", je.text, je.line, je.column);
    int rc = model_config_from_json(cfg, j, err);
    json_decref(j);
    return rc;
}

/* ---- shared helpers ----------------------------------------------------------------------------- */

static int add_params(st_writer *w, const param_set *p, clad_err *err)
{
    for (int i = 0; i < p->n; i++) {
        int64_t shape[PARAM_MAX_DIMS];
        for (int d = 0; d < p->t[i].ndim; d++) shape[d] = p->t[i].shape[d];
        int rc = st_writer_add_f32(w, p->t[i].name, p->t[i].ndim, shape, param_set_ptr(p, i), err);
        if (rc) return rc;
    }
    return 0;
}

/* Loads every tensor of p from r, checking shapes, finiteness, and that r holds nothing else (but for
 * names starting with one of the NULL-terminated skip prefixes, which belong to something stored beside). */
static int read_params(param_set *p, const st_reader *r, const char *what, const char *const *skip, clad_err *err)
{
    for (int i = 0; i < p->n; i++) {
        int64_t shape[PARAM_MAX_DIMS];
        for (int d = 0; d < p->t[i].ndim; d++) shape[d] = p->t[i].shape[d];
        int rc = st_reader_get_f32(r, p->t[i].name, p->t[i].ndim, shape, param_set_ptr(p, i), err);
        if (rc) {
            clad_err_prefix(err, "%s: ", what);
            return rc;
        }
        const float *v = param_set_ptr(p, i);
        for (size_t k = 0; k < p->t[i].numel; k++)
            if (!isfinite(v[k]))
                return clad_err_set(err, CLAD_EINVAL, "%s: tensor '%s' holds a non-finite value at %zu", what,
                                    p->t[i].name, k);
    }
    for (int i = 0; i < st_reader_count(r); i++) {
        const char *name = st_reader_at(r, i)->name;
        bool beside = false;
        for (int k = 0; skip && skip[k]; k++) beside |= !strncmp(name, skip[k], strlen(skip[k]));
        if (beside) continue;
        if (param_set_find(p, name) < 0)
            return clad_err_set(err, CLAD_EINVAL, "%s: unexpected tensor '%s'", what, name);
    }
    return 0;
}

static int write_out(st_writer *w, const char *path, uint8_t **out, size_t *len, clad_err *err)
{
    return path ? st_writer_to_file(w, path, err) : st_writer_to_buffer(w, out, len, err);
}

/* ---- base models -------------------------------------------------------------------------------- */

static int model_write(const model *m, const char *path, uint8_t **out, size_t *len, clad_err *err)
{
    st_writer *w = st_writer_create();
    json_t *cj = model_config_to_json(&m->cfg);
    char *ctext = json_dumps(cj, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = st_writer_meta(w, "format", "clad-base", err);
    if (!rc) rc = st_writer_meta(w, "config", ctext, err);
    if (!rc) rc = add_params(w, &m->params, err);
    if (!rc) rc = write_out(w, path, out, len, err);
    free(ctext);
    json_decref(cj);
    st_writer_destroy(w);
    return rc;
}

int model_to_buffer(const model *m, uint8_t **out, size_t *len, clad_err *err)
{
    return model_write(m, NULL, out, len, err);
}

int model_save(const model *m, const char *path, clad_err *err)
{
    return model_write(m, path, NULL, NULL, err);
}

static model *model_from_reader(const st_reader *r, const model_config *cfg, clad_err *err)
{
    model_config file_cfg;
    if (!cfg) {
        const char *text = st_reader_meta(r, "config");
        if (!text) {
            clad_err_set(err, CLAD_EINVAL, "base model: the file has no 'config' metadata; give the model config explicitly "
                         "(clad base import --config PRESET|JSON, or ?config= in the API)");
            return NULL;
        }
        if (model_config_parse(&file_cfg, text, err)) return NULL;
        cfg = &file_cfg;
    }
    model *m = model_create(cfg, err);
    if (!m) return NULL;
    if (read_params(&m->params, r, "base model", NULL, err)) {
        model_destroy(m);
        return NULL;
    }
    return m;
}

model *model_from_buffer(const void *buf, size_t len, const model_config *cfg, clad_err *err)
{
    st_reader *r = st_reader_parse(buf, len, err);
    if (!r) return NULL;
    model *m = model_from_reader(r, cfg, err);
    st_reader_destroy(r);
    return m;
}

model *model_load(const char *path, const model_config *cfg, clad_err *err)
{
    st_reader *r = st_reader_open(path, MODEL_FILE_MAX_BYTES, err);
    if (!r) return NULL;
    model *m = model_from_reader(r, cfg, err);
    st_reader_destroy(r);
    return m;
}

/* ---- adapters ----------------------------------------------------------------------------------- */

json_t *adapter_ranks_to_json(const adapter *a, const model *m)
{
    json_t *j = json_object();
    for (int li = 0; li < a->n_linear; li++)
        if (a->rank[li]) json_object_set_new(j, m->linear[li].name, json_integer(a->rank[li]));
    return j;
}

int adapter_ranks_from_json(int *ranks, const model *m, const json_t *j, clad_err *err)
{
    if (!json_is_object(j)) return clad_err_set(err, CLAD_EINVAL, "ranks must be an object keyed by layer name");
    memset(ranks, 0, (size_t)m->n_linear * sizeof *ranks);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v) {
        int li = model_linear_find(m, key);
        if (li < 0) return clad_err_set(err, CLAD_EINVAL, "ranks: unknown layer '%s'", key);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 65536)
            return clad_err_set(err, CLAD_EINVAL, "ranks: '%s' must be a non-negative integer", key);
        ranks[li] = (int)json_integer_value(v);
    }
    return 0;
}

static int meta_json(st_writer *w, const char *key, json_t *j, clad_err *err)
{
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = text ? st_writer_meta(w, key, text, err) : clad_err_set(err, CLAD_ENOMEM, "adapter: cannot format '%s'", key);
    free(text);
    json_decref(j);
    return rc;
}

int adapter_ranks_meta(st_writer *w, const char *key, const int *ranks, const model *m, clad_err *err)
{
    json_t *j = json_object();
    for (int li = 0; li < m->n_linear; li++)
        if (ranks[li]) json_object_set_new(j, m->linear[li].name, json_integer(ranks[li]));
    return meta_json(w, key, j, err);
}

int adapter_to_writer(st_writer *w, const adapter *a, const model *m, clad_err *err)
{
    char num[64];
    int rc = st_writer_meta(w, "format", "clad-adapter", err);
    if (!rc) rc = st_writer_meta(w, "kind", adapter_kind_name(a->kind), err);
    snprintf(num, sizeof num, "%.9g", (double)a->alpha);
    if (!rc) rc = st_writer_meta(w, "alpha", num, err);
    snprintf(num, sizeof num, "%d", a->n_classes);
    if (!rc) rc = st_writer_meta(w, "classes", num, err);
    if (!rc) rc = meta_json(w, "ranks", adapter_ranks_to_json(a, m), err);
    bool pruned = false;
    for (int li = 0; li < a->n_linear; li++) pruned |= a->rank_before[li] > 0;
    if (!rc && pruned) rc = adapter_ranks_meta(w, "ranks_before", a->rank_before, m, err);
    if (!rc && a->kind == ADAPTER_TIED) rc = st_writer_meta(w, "variant", a->tied.variant == TIED_TL6 ? "tl6" : "tl5", err);
    if (!rc && a->kind == ADAPTER_FUSION) {
        json_t *names = json_array();
        for (int i = 0; i < a->fusion.n_sources; i++) json_array_append_new(names, json_string(a->fusion.source_name[i]));
        rc = meta_json(w, "sources", names, err);
    }
    if (!rc) rc = add_params(w, &a->params, err);
    return rc;
}

static int adapter_write(const adapter *a, const model *m, const char *path, uint8_t **out, size_t *len,
                         clad_err *err)
{
    st_writer *w = st_writer_create();
    int rc = adapter_to_writer(w, a, m, err);
    if (!rc) rc = write_out(w, path, out, len, err);
    st_writer_destroy(w);
    return rc;
}

int adapter_to_buffer(const adapter *a, const model *m, uint8_t **out, size_t *len, clad_err *err)
{
    return adapter_write(a, m, NULL, out, len, err);
}

int adapter_save(const adapter *a, const model *m, const char *path, clad_err *err)
{
    return adapter_write(a, m, path, NULL, NULL, err);
}

static int parse_ranks_meta(int *ranks, const model *m, const char *text, const char *key, clad_err *err)
{
    json_error_t je;
    json_t *rj = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!rj) return clad_err_set(err, CLAD_EINVAL, "adapter: metadata '%s' is not JSON: %s", key, je.text);
    int rc = adapter_ranks_from_json(ranks, m, rj, err);
    json_decref(rj);
    return rc;
}

/* Reads the fusion metadata 'sources' into names (at most FUSION_MAX_SOURCES). */
static int read_source_names(const st_reader *r, char names[][PARAM_NAME_MAX], int *n, clad_err *err)
{
    const char *text = st_reader_meta(r, "sources");
    if (!text) return clad_err_set(err, CLAD_EINVAL, "adapter: a fusion adapter needs metadata 'sources'");
    json_error_t je;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    int rc = 0;
    if (!json_is_array(j) || json_array_size(j) < 1 || json_array_size(j) > FUSION_MAX_SOURCES) {
        rc = clad_err_set(err, CLAD_EINVAL, "adapter: metadata 'sources' must list 1 to %d names", FUSION_MAX_SOURCES);
        goto done;
    }
    *n = (int)json_array_size(j);
    for (int i = 0; i < *n; i++) {
        const char *s = json_string_value(json_array_get(j, (size_t)i));
        if (!s || strlen(s) >= PARAM_NAME_MAX) {
            rc = clad_err_set(err, CLAD_EINVAL, "adapter: source %d in 'sources' is not a name under %d bytes", i,
                              PARAM_NAME_MAX);
            goto done;
        }
        snprintf(names[i], PARAM_NAME_MAX, "%s", s);
    }
done:
    json_decref(j);
    return rc;
}

/* sources/n_sources: the frozen sources of a fusion adapter (NULL/0 for the other kinds). reused: NULL
 * refuses the part of an adapter stored by reference (metadata 'reused'); else it receives the components
 * per layer the part leaves to the referenced version (zeros for a whole adapter). */
static adapter *adapter_from_reader(const model *m, const st_reader *r, const adapter *const *sources,
                                    int n_sources, int *reused, clad_err *err)
{
    const char *reused_s = st_reader_meta(r, "reused");
    if (reused_s && !reused) {
        const char *ref = st_reader_meta(r, "reuses");
        clad_err_set(err, CLAD_EINVAL, "adapter: this is the new part of an adapter stored by reference to %s; "
                     "load the version through the registry, which composes it", ref ? ref : "an earlier version");
        return NULL;
    }
    if (reused) memset(reused, 0, (size_t)m->n_linear * sizeof *reused);
    if (reused_s && parse_ranks_meta(reused, m, reused_s, "reused", err)) return NULL;
    const char *format = st_reader_meta(r, "format"), *kind = st_reader_meta(r, "kind");
    const char *alpha_s = st_reader_meta(r, "alpha"), *classes_s = st_reader_meta(r, "classes");
    const char *ranks_s = st_reader_meta(r, "ranks"), *before_s = st_reader_meta(r, "ranks_before");
    if (!format || strcmp(format, "clad-adapter")) {
        clad_err_set(err, CLAD_EINVAL, "adapter: metadata 'format' is not 'clad-adapter'");
        return NULL;
    }
    if (!kind || (strcmp(kind, "lora") && strcmp(kind, "tied") && strcmp(kind, "fusion"))) {
        clad_err_set(err, CLAD_EINVAL, "adapter: unsupported kind '%s'", kind ? kind : "(missing)");
        return NULL;
    }
    if (!alpha_s || !classes_s || !ranks_s) {
        clad_err_set(err, CLAD_EINVAL, "adapter: metadata needs 'alpha', 'classes' and 'ranks'");
        return NULL;
    }
    char *end;
    float alpha = strtof(alpha_s, &end);
    long classes = strtol(classes_s, &end, 10);
    int n_classes = (int)(classes > 0 && classes <= MODEL_MAX_CLASSES ? classes : 0);
    int ranks[MODEL_MAX_LINEARS], before[MODEL_MAX_LINEARS] = {0};
    if (parse_ranks_meta(ranks, m, ranks_s, "ranks", err)) return NULL;
    if (before_s && parse_ranks_meta(before, m, before_s, "ranks_before", err)) return NULL;
    adapter *a = NULL;
    if (!strcmp(kind, "lora")) {
        a = adapter_create(m, ranks, alpha, n_classes, err);
    } else if (!strcmp(kind, "tied")) {
        const char *variant = st_reader_meta(r, "variant");
        tied_variant v = variant && !strcmp(variant, "tl5") ? TIED_TL5 : variant && !strcmp(variant, "tl6") ? TIED_TL6 : 0;
        if (!v) {
            clad_err_set(err, CLAD_EINVAL, "adapter: tied variant '%s' is not tl5 or tl6", variant ? variant : "(missing)");
            return NULL;
        }
        a = adapter_tied_create(m, ranks, v, n_classes, err);
    } else {
        char names[FUSION_MAX_SOURCES][PARAM_NAME_MAX];
        int n = 0;
        if (read_source_names(r, names, &n, err)) return NULL;
        if (!sources) {
            clad_err_set(err, CLAD_EINVAL, "adapter: a fusion adapter needs its %d source adapters; load it with "
                         "adapter_fusion_load", n);
            return NULL;
        }
        if (n != n_sources) {
            clad_err_set(err, CLAD_EINVAL, "adapter: the fusion adapter fuses %d sources but %d were given", n, n_sources);
            return NULL;
        }
        const char *name_ptrs[FUSION_MAX_SOURCES];
        for (int i = 0; i < n; i++) name_ptrs[i] = names[i];
        a = adapter_fusion_create(m, sources, name_ptrs, n, n_classes, err);
    }
    if (!a) return NULL;
    memcpy(a->rank_before, before, sizeof before);
    static const char *const beside[] = {ADAPTER_SIGNATURE_PREFIX, ADAPTER_HEADS_PREFIX, NULL};
    if (read_params(&a->params, r, "adapter", beside, err)) {
        adapter_destroy(a);
        return NULL;
    }
    return a;
}

adapter *adapter_from_buffer(const model *m, const void *buf, size_t len, clad_err *err)
{
    return adapter_part_from_buffer(m, buf, len, NULL, err);
}

adapter *adapter_part_from_buffer(const model *m, const void *buf, size_t len, int *reused, clad_err *err)
{
    st_reader *r = st_reader_parse(buf, len, err);
    if (!r) return NULL;
    adapter *a = adapter_from_reader(m, r, NULL, 0, reused, err);
    st_reader_destroy(r);
    return a;
}

adapter *adapter_load(const model *m, const char *path, clad_err *err)
{
    st_reader *r = st_reader_open(path, MODEL_FILE_MAX_BYTES, err);
    if (!r) return NULL;
    adapter *a = adapter_from_reader(m, r, NULL, 0, NULL, err);
    st_reader_destroy(r);
    return a;
}

int adapter_file_sources(const void *buf, size_t len, char names[][PARAM_NAME_MAX], int *n, clad_err *err)
{
    st_reader *r = st_reader_parse(buf, len, err);
    if (!r) return err ? err->code : CLAD_EINVAL;
    int rc = read_source_names(r, names, n, err);
    st_reader_destroy(r);
    return rc;
}

adapter *adapter_fusion_from_buffer(const model *m, const void *buf, size_t len, const adapter *const *sources,
                                    int n_sources, clad_err *err)
{
    st_reader *r = st_reader_parse(buf, len, err);
    if (!r) return NULL;
    adapter *a = adapter_from_reader(m, r, sources, n_sources, NULL, err);
    st_reader_destroy(r);
    return a;
}

adapter *adapter_fusion_load(const model *m, const char *path, const adapter *const *sources, int n_sources,
                             clad_err *err)
{
    st_reader *r = st_reader_open(path, MODEL_FILE_MAX_BYTES, err);
    if (!r) return NULL;
    adapter *a = adapter_from_reader(m, r, sources, n_sources, NULL, err);
    st_reader_destroy(r);
    return a;
}
