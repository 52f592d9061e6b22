/* Signatures stored beside adapters; see signature_io.h. */
#include "io/signature_io.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/model_io.h"
#include "io/safetensors.h"

#define ROUTING_PREFIX ADAPTER_SIGNATURE_PREFIX "routing."

int route_stats_to_writer(st_writer *w, const route_stats *rs, clad_err *err)
{
    int64_t D = rs->dim, K = rs->n_classes, M = rs->n_comp, P = D * (D + 1) / 2;
    float *packed = malloc((size_t)P * sizeof *packed), *cls = malloc((size_t)(M + 1) * sizeof *cls);
    if (!packed || !cls) {
        free(packed);
        free(cls);
        return clad_err_set(err, CLAD_ENOMEM, "routing: out of memory");
    }
    size_t k = 0;
    for (int64_t r = 0; r < D; r++)
        for (int64_t c = r; c < D; c++) packed[k++] = rs->scatter[r * D + c];
    for (int64_t j = 0; j < M; j++) cls[j] = (float)rs->comp_class[j];
    int rc = st_writer_add_f32(w, ROUTING_PREFIX "count", 1, (int64_t[]){K}, rs->count, err);
    if (!rc) rc = st_writer_add_f32(w, ROUTING_PREFIX "component_class", 1, (int64_t[]){M}, cls, err);
    if (!rc) rc = st_writer_add_f32(w, ROUTING_PREFIX "component_count", 1, (int64_t[]){M}, rs->comp_count, err);
    if (!rc) rc = st_writer_add_f32(w, ROUTING_PREFIX "mean", 2, (int64_t[]){M, D}, rs->mean, err);
    if (!rc) rc = st_writer_add_f32(w, ROUTING_PREFIX "scatter", 1, (int64_t[]){P}, packed, err);
    free(packed);
    free(cls);
    return rc;
}

int adapter_blob_build(const adapter *a, const model *m, const signature *sig, uint8_t **out, size_t *len,
                       clad_err *err)
{
    return adapter_blob_build_routed(a, m, sig, NULL, out, len, err);
}

/* reused/reuses: NULL for a whole adapter, else the metadata of a part stored by reference. */
static int blob_build(const adapter *a, const model *m, const signature *sig, const route_stats *rs,
                      const int *reused, const char *reuses, uint8_t **out, size_t *len, clad_err *err)
{
    st_writer *w = st_writer_create();
    json_t *energy = json_object();
    int rc = adapter_to_writer(w, a, m, err);
    if (!rc && reused) {
        rc = adapter_ranks_meta(w, "reused", reused, m, err);
        if (!rc) rc = st_writer_meta(w, "reuses", reuses, err);
    }
    if (!rc && rs) rc = route_stats_to_writer(w, rs, err);
    char name[PARAM_NAME_MAX + 32];
    static const float none[1] = {0}; /* data pointer for empty tensors (k = 0) */
    for (int li = 0; !rc && li < sig->n_linear; li++) {
        const sig_layer *L = &sig->layer[li];
        if (!L->k && !L->kp) continue;
        json_object_set_new(energy, m->linear[li].name, json_real(L->energy));
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.U", m->linear[li].name);
        rc = st_writer_add_f32(w, name, 2, (int64_t[]){L->out, L->k}, L->k ? L->U : none, err);
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.Vt", m->linear[li].name);
        if (!rc) rc = st_writer_add_f32(w, name, 2, (int64_t[]){L->k, L->in}, L->k ? L->Vt : none, err);
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.s", m->linear[li].name);
        if (!rc) rc = st_writer_add_f32(w, name, 1, (int64_t[]){L->k}, L->k ? L->s : none, err);
        if (!L->kp) continue;
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.Up", m->linear[li].name);
        if (!rc) rc = st_writer_add_f32(w, name, 2, (int64_t[]){L->out, L->kp}, L->Up, err);
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.Vtp", m->linear[li].name);
        if (!rc) rc = st_writer_add_f32(w, name, 2, (int64_t[]){L->kp, L->in}, L->Vtp, err);
        if (!L->gp) continue;
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.gp", m->linear[li].name);
        if (!rc) rc = st_writer_add_f32(w, name, 1, (int64_t[]){L->kp}, L->gp, err);
    }
    char *etext = json_dumps(energy, JSON_COMPACT | JSON_SORT_KEYS);
    if (!rc) rc = st_writer_meta(w, "signature_energy", etext, err);
    if (!rc) rc = st_writer_to_buffer(w, out, len, err);
    free(etext);
    json_decref(energy);
    st_writer_destroy(w);
    return rc;
}

int adapter_blob_build_routed(const adapter *a, const model *m, const signature *sig, const route_stats *rs,
                              uint8_t **out, size_t *len, clad_err *err)
{
    return blob_build(a, m, sig, rs, NULL, NULL, out, len, err);
}

int adapter_blob_build_part(const adapter *part, const model *m, const signature *sig, const route_stats *rs,
                            const int *reused, const char *reuses, uint8_t **out, size_t *len, clad_err *err)
{
    /* The signature's change part is a function of the composed adapter: only the pull is kept. */
    signature pull = *sig;
    for (int li = 0; li < pull.n_linear; li++) pull.layer[li].k = 0;
    return blob_build(part, m, &pull, rs, reused, reuses, out, len, err);
}

/* Reads one tensor of known rank whose shape must match (dims < 0 are taken from the file). */
static float *read_tensor(const st_reader *r, const char *name, int ndim, int64_t *shape, clad_err *err)
{
    const st_tensor *t = st_reader_find(r, name);
    if (!t) {
        clad_err_set(err, CLAD_ECORRUPT, "signature: tensor '%s' is missing", name);
        return NULL;
    }
    if (t->ndim != ndim) {
        clad_err_set(err, CLAD_ECORRUPT, "signature: tensor '%s' has %d dimensions, not %d", name, t->ndim, ndim);
        return NULL;
    }
    for (int d = 0; d < ndim; d++) {
        if (shape[d] >= 0 && t->shape[d] != shape[d]) {
            clad_err_set(err, CLAD_ECORRUPT, "signature: tensor '%s' dimension %d is %lld, not %lld", name, d,
                         (long long)t->shape[d], (long long)shape[d]);
            return NULL;
        }
        shape[d] = t->shape[d];
    }
    float *v = malloc(sizeof *v * (size_t)(t->numel + 1));
    if (!v) {
        clad_err_set(err, CLAD_ENOMEM, "signature: out of memory");
        return NULL;
    }
    if (st_tensor_to_f32(t, v, err)) {
        free(v);
        return NULL;
    }
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(v[i])) {
            clad_err_set(err, CLAD_ECORRUPT, "signature: tensor '%s' holds a non-finite value", name);
            free(v);
            return NULL;
        }
    return v;
}

int signature_from_blob(signature *sig, const model *m, const void *blob, size_t len, clad_err *err)
{
    memset(sig, 0, sizeof *sig);
    sig->n_linear = m->n_linear;
    st_reader *r = st_reader_parse(blob, len, err);
    if (!r) return err ? err->code : CLAD_EINVAL;
    int rc = 0;
    const char *etext = st_reader_meta(r, "signature_energy");
    json_error_t je;
    json_t *energy = etext ? json_loads(etext, 0, &je) : NULL;
    if (!json_is_object(energy)) {
        rc = clad_err_set(err, CLAD_ENOTFOUND, "the adapter carries no signature");
        goto done;
    }
    char name[PARAM_NAME_MAX + 32];
    for (int li = 0; !rc && li < m->n_linear; li++) {
        const model_linear *ml = &m->linear[li];
        json_t *e = json_object_get(energy, ml->name);
        if (!e) continue;
        sig_layer *L = &sig->layer[li];
        L->out = ml->out;
        L->in = ml->in;
        L->energy = json_number_value(e);
        int64_t su[2] = {ml->out, -1}, sv[2] = {-1, ml->in}, ss[1] = {-1};
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.U", ml->name);
        L->U = read_tensor(r, name, 2, su, err);
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.Vt", ml->name);
        if (L->U) L->Vt = read_tensor(r, name, 2, sv, err);
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.s", ml->name);
        if (L->Vt) L->s = read_tensor(r, name, 1, ss, err);
        if (!L->s) {
            rc = err ? err->code : CLAD_ECORRUPT;
            break;
        }
        if (su[1] != sv[0] || su[1] != ss[0] || su[1] > model_linear_max_rank(ml->out, ml->in)) {
            rc = clad_err_set(err, CLAD_ECORRUPT, "signature: layer '%s' has inconsistent sizes", ml->name);
            break;
        }
        L->k = (int)su[1];
        /* The task's pull directions, kept by newer signatures (optional). */
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.Up", ml->name);
        if (!st_reader_find(r, name)) continue;
        int64_t sup[2] = {ml->out, -1}, svp[2] = {-1, ml->in};
        L->Up = read_tensor(r, name, 2, sup, err);
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.Vtp", ml->name);
        if (L->Up) L->Vtp = read_tensor(r, name, 2, svp, err);
        if (!L->Vtp) {
            rc = err ? err->code : CLAD_ECORRUPT;
            break;
        }
        if (sup[1] != svp[0] || sup[1] > model_linear_max_rank(ml->out, ml->in)) {
            rc = clad_err_set(err, CLAD_ECORRUPT, "signature: layer '%s' has inconsistent pull sizes", ml->name);
            break;
        }
        L->kp = (int)sup[1];
        /* What each pull component earned (optional: without it they weigh the same). */
        snprintf(name, sizeof name, ADAPTER_SIGNATURE_PREFIX "%s.gp", ml->name);
        if (!st_reader_find(r, name)) continue;
        int64_t sg[1] = {L->kp};
        if (!(L->gp = read_tensor(r, name, 1, sg, err))) {
            rc = err ? err->code : CLAD_ECORRUPT;
            break;
        }
    }
done:
    json_decref(energy);
    st_reader_destroy(r);
    if (rc) signature_finish(sig);
    return rc;
}

int route_stats_from_blob(route_stats *rs, const model *m, const void *blob, size_t len, clad_err *err)
{
    memset(rs, 0, sizeof *rs);
    st_reader *r = st_reader_parse(blob, len, err);
    if (!r) return err ? err->code : CLAD_EINVAL;
    int rc = 0;
    const st_tensor *tc = st_reader_find(r, ROUTING_PREFIX "count");
    const st_tensor *tm = st_reader_find(r, ROUTING_PREFIX "component_count");
    if (!tc) {
        st_reader_destroy(r);
        return clad_err_set(err, CLAD_ENOTFOUND, "the version carries no routing statistics");
    }
    int64_t D = route_feature_dim(m), K = tc->ndim == 1 ? tc->shape[0] : 0, P = D * (D + 1) / 2;
    int64_t M = tm && tm->ndim == 1 ? tm->shape[0] : 0;
    int64_t sc[1] = {K}, sk[1] = {M}, sn[1] = {M}, sm[2] = {M, D}, ss[1] = {P};
    float *count = NULL, *cls = NULL, *ccount = NULL, *mean = NULL, *packed = NULL;
    if (K < 1 || K > MODEL_MAX_CLASSES || M < 1 || M > K * ROUTE_MAX_COMPONENTS) {
        rc = clad_err_set(err, CLAD_ECORRUPT, "routing: %lld classes and %lld components", (long long)K, (long long)M);
        goto done;
    }
    if (!(count = read_tensor(r, ROUTING_PREFIX "count", 1, sc, err)) ||
        !(cls = read_tensor(r, ROUTING_PREFIX "component_class", 1, sk, err)) ||
        !(ccount = read_tensor(r, ROUTING_PREFIX "component_count", 1, sn, err)) ||
        !(mean = read_tensor(r, ROUTING_PREFIX "mean", 2, sm, err)) ||
        !(packed = read_tensor(r, ROUTING_PREFIX "scatter", 1, ss, err))) {
        rc = err ? err->code : CLAD_ECORRUPT;
        goto done;
    }
    if ((rc = route_stats_init(rs, (int)D, (int)K, (int)M, err))) goto done;
    memcpy(rs->count, count, (size_t)K * sizeof *count);
    memcpy(rs->comp_count, ccount, (size_t)M * sizeof *ccount);
    memcpy(rs->mean, mean, (size_t)(M * D) * sizeof *mean);
    size_t k = 0;
    for (int64_t a = 0; a < D; a++)
        for (int64_t b = a; b < D; b++) rs->scatter[a * D + b] = rs->scatter[b * D + a] = packed[k++];
    for (int64_t j = 0; !rc && j < M; j++) {
        rs->comp_class[j] = (int)cls[j];
        if (cls[j] != (float)rs->comp_class[j] || cls[j] < 0 || cls[j] >= (float)K || !(ccount[j] >= 1) ||
            !(count[rs->comp_class[j]] >= ccount[j]))
            rc = clad_err_set(err, CLAD_ECORRUPT, "routing: component %lld is inconsistent", (long long)j);
    }
done:
    free(count);
    free(cls);
    free(ccount);
    free(mean);
    free(packed);
    st_reader_destroy(r);
    if (rc) route_stats_finish(rs);
    return rc;
}
