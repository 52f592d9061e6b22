/* Model configs as JSON and model/adapter files as safetensors; see model_io.h. */
#include "io/model_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int model_config_from_json(model_config *cfg, const json_t *j, clad_err *err)
{
    if (json_is_string(j)) return model_config_preset(cfg, json_string_value(j), err);
    if (!json_is_object(j))
        return clad_err_set(err, CLAD_EINVAL, "model config must be a preset name or an object");
    const char *kind = json_string_value(json_object_get(j, "model"));
    if (!kind) return clad_err_set(err, CLAD_EINVAL, "model config: 'model' (mlp, vit, or a preset) is required");
    memset(cfg, 0, sizeof *cfg);
    if (!strcmp(kind, "mlp") || !strcmp(kind, "vit")) {
        cfg->kind = kind[0] == 'm' ? MODEL_MLP : MODEL_VIT;
    } else if (model_config_preset(cfg, kind, err)) {
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
    return j;
}

int model_config_parse(model_config *cfg, const char *text, clad_err *err)
{
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
 * names starting with skip_prefix, when given). */
static int read_params(param_set *p, const st_reader *r, const char *what, const char *skip_prefix, clad_err *err)
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
        if (skip_prefix && !strncmp(name, skip_prefix, strlen(skip_prefix))) continue;
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
            clad_err_set(err, CLAD_EINVAL, "base model: the file has no 'config' metadata; give the config explicitly");
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

int adapter_to_writer(st_writer *w, const adapter *a, const model *m, clad_err *err)
{
    char num[64];
    json_t *rj = adapter_ranks_to_json(a, m);
    char *rtext = json_dumps(rj, JSON_COMPACT | JSON_SORT_KEYS);
    int rc = st_writer_meta(w, "format", "clad-adapter", err);
    if (!rc) rc = st_writer_meta(w, "kind", "lora", err);
    snprintf(num, sizeof num, "%.9g", (double)a->alpha);
    if (!rc) rc = st_writer_meta(w, "alpha", num, err);
    snprintf(num, sizeof num, "%d", a->n_classes);
    if (!rc) rc = st_writer_meta(w, "classes", num, err);
    if (!rc) rc = st_writer_meta(w, "ranks", rtext, err);
    if (!rc) rc = add_params(w, &a->params, err);
    free(rtext);
    json_decref(rj);
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

static adapter *adapter_from_reader(const model *m, const st_reader *r, clad_err *err)
{
    const char *format = st_reader_meta(r, "format"), *kind = st_reader_meta(r, "kind");
    const char *alpha_s = st_reader_meta(r, "alpha"), *classes_s = st_reader_meta(r, "classes");
    const char *ranks_s = st_reader_meta(r, "ranks");
    if (!format || strcmp(format, "clad-adapter")) {
        clad_err_set(err, CLAD_EINVAL, "adapter: metadata 'format' is not 'clad-adapter'");
        return NULL;
    }
    if (!kind || strcmp(kind, "lora")) {
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
    json_error_t je;
    json_t *rj = json_loads(ranks_s, JSON_REJECT_DUPLICATES, &je);
    int ranks[MODEL_MAX_LINEARS];
    if (!rj || adapter_ranks_from_json(ranks, m, rj, err)) {
        if (!rj) clad_err_set(err, CLAD_EINVAL, "adapter: metadata 'ranks' is not JSON: %s", je.text);
        json_decref(rj);
        return NULL;
    }
    json_decref(rj);
    adapter *a = adapter_create(m, ranks, alpha, (int)(classes > 0 && classes <= MODEL_MAX_CLASSES ? classes : 0), err);
    if (!a) return NULL;
    if (read_params(&a->params, r, "adapter", ADAPTER_SIGNATURE_PREFIX, err)) {
        adapter_destroy(a);
        return NULL;
    }
    return a;
}

adapter *adapter_from_buffer(const model *m, const void *buf, size_t len, clad_err *err)
{
    st_reader *r = st_reader_parse(buf, len, err);
    if (!r) return NULL;
    adapter *a = adapter_from_reader(m, r, err);
    st_reader_destroy(r);
    return a;
}

adapter *adapter_load(const model *m, const char *path, clad_err *err)
{
    st_reader *r = st_reader_open(path, MODEL_FILE_MAX_BYTES, err);
    if (!r) return NULL;
    adapter *a = adapter_from_reader(m, r, err);
    st_reader_destroy(r);
    return a;
}
