/* Merged versions; see merge_io.h. */
#include "io/merge_io.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/model_io.h"
#include "io/safetensors.h"

int merged_blob_build(const adapter *lora, const model *m, const char *const *names, const adapter *const *heads,
                      int n, uint8_t **out, size_t *len, clad_err *err)
{
    st_writer *w = st_writer_create();
    json_t *list = json_array();
    int rc = adapter_to_writer(w, lora, m, err);
    char name[PARAM_NAME_MAX + 80];
    for (int i = 0; !rc && i < n; i++) {
        const adapter *h = heads[i];
        const param_tensor *tw = &h->params.t[h->head_w], *tb = &h->params.t[h->head_b];
        json_array_append_new(list, json_string(names[i]));
        snprintf(name, sizeof name, MERGE_HEADS_PREFIX "%s.weight", names[i]);
        rc = st_writer_add_f32(w, name, 2, (int64_t[]){tw->shape[0], tw->shape[1]}, param_set_ptr(&h->params, h->head_w), err);
        snprintf(name, sizeof name, MERGE_HEADS_PREFIX "%s.bias", names[i]);
        if (!rc) rc = st_writer_add_f32(w, name, 1, (int64_t[]){tb->shape[0]}, param_set_ptr(&h->params, h->head_b), err);
    }
    char *text = json_dumps(list, JSON_COMPACT);
    if (!rc) rc = st_writer_meta(w, "merge_sources", text, err);
    if (!rc) rc = st_writer_to_buffer(w, out, len, err);
    free(text);
    json_decref(list);
    st_writer_destroy(w);
    return rc;
}

adapter *merged_adapter_load(const model *m, const void *blob, size_t len, const char *task, clad_err *err)
{
    adapter *shared = adapter_from_buffer(m, blob, len, err), *a = NULL;
    st_reader *r = shared ? st_reader_parse(blob, len, err) : NULL;
    if (!r) goto done;
    json_error_t je;
    const char *srcs = st_reader_meta(r, "merge_sources");
    json_t *list = srcs ? json_loads(srcs, 0, &je) : NULL;
    if (!json_is_array(list) || !json_array_size(list)) {
        clad_err_set(err, CLAD_ECORRUPT, "merged version: no 'merge_sources' metadata");
        json_decref(list);
        goto done;
    }
    const char *want = task ? task : json_string_value(json_array_get(list, 0));
    bool found = false;
    for (size_t i = 0; i < json_array_size(list); i++)
        if (want && !strcmp(json_string_value(json_array_get(list, i)), want)) found = true;
    if (!found) {
        char *names = json_dumps(list, JSON_COMPACT);
        clad_err_set(err, CLAD_ENOTFOUND, "task '%s' is not a source of this merge (sources: %s)", want ? want : "", names);
        free(names);
        json_decref(list);
        goto done;
    }
    char wname[PARAM_NAME_MAX + 80], bname[PARAM_NAME_MAX + 80];
    snprintf(wname, sizeof wname, MERGE_HEADS_PREFIX "%s.weight", want);
    snprintf(bname, sizeof bname, MERGE_HEADS_PREFIX "%s.bias", want);
    json_decref(list);
    const st_tensor *hw = st_reader_find(r, wname);
    if (!hw || hw->ndim != 2 || hw->shape[1] != shared->params.t[shared->head_w].shape[1] || hw->shape[0] < 1 ||
        hw->shape[0] > MODEL_MAX_CLASSES) {
        clad_err_set(err, CLAD_ECORRUPT, "merged version: head of '%s' is missing or malformed", want);
        goto done;
    }
    int K = (int)hw->shape[0];
    a = adapter_create(m, shared->rank, shared->alpha, K, err);
    if (!a) goto done;
    /* The shared factors, by name; then this task's head. */
    for (int i = 0; i < a->params.n; i++) {
        int j = param_set_find(&shared->params, a->params.t[i].name);
        if (j >= 0 && i != a->head_w && i != a->head_b)
            memcpy(param_set_ptr(&a->params, i), param_set_ptr(&shared->params, j), a->params.t[i].numel * sizeof(float));
    }
    if (st_reader_get_f32(r, wname, 2, (int64_t[]){K, hw->shape[1]}, param_set_ptr(&a->params, a->head_w), err) ||
        st_reader_get_f32(r, bname, 1, (int64_t[]){K}, param_set_ptr(&a->params, a->head_b), err)) {
        adapter_destroy(a);
        a = NULL;
    }
done:
    st_reader_destroy(r);
    adapter_destroy(shared);
    return a;
}
