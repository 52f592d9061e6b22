/* Composing versions stored by reference; see version_compose.h. */
#include "daemon/version_compose.h"

#include <stdlib.h>
#include <string.h>

#include "core/cl_pipeline.h"
#include "io/model_io.h"
#include "io/signature_io.h"

static int signature_at(store *s, const model *m, const store_version *v, int depth, signature *sig, clad_err *err);

/* Does the parsed part reuse any layer of the version it needs (that is, is it stored by reference)? */
static bool any_reused(const model *m, const int *reused)
{
    for (int li = 0; li < m->n_linear; li++)
        if (reused[li] > 0) return true;
    return false;
}

/* Is v gone from the store since it was read? */
static bool deleted_since_read(store *s, const store_version *v)
{
    store_version *now = NULL;
    int rc = store_version_get(s, v->task, v->version, 0, &now, NULL);
    store_version_free(now);
    return rc == CLAD_ENOTFOUND;
}

/* The served adapter of v from its parsed part (taken over) and the reused counts read with it: the part
 * itself, or for a version stored by reference the part joined with the change of the version it needs. */
static adapter *compose(store *s, const model *m, const store_version *v, adapter *part, const int *reused,
                        int depth, clad_err *err)
{
    if (!any_reused(m, reused)) return part;
    adapter *a = NULL;
    store_version *rv = NULL;
    signature rsig = {0};
    bool deleted = false;
    if (v->n_needs != 1 || depth >= VERSION_COMPOSE_DEPTH) {
        clad_err_set(err, CLAD_ECORRUPT, "version %lld of task '%s' is stored by reference but names %zu versions "
                     "it needs (or the chain is deeper than %d)", (long long)v->version, v->task, v->n_needs,
                     VERSION_COMPOSE_DEPTH);
    } else if (store_version_get(s, v->needs[0].task, v->needs[0].version, STORE_WITH_BLOB, &rv, err)) {
        /* The store refuses to delete a version another one needs, so when that one is gone v was deleted
         * too, after this load had read it: say that, not the store's words about a version the caller
         * never asked for. */
        if (err && err->code == CLAD_ENOTFOUND && deleted_since_read(s, v)) {
            clad_err_clear(err);
            version_deleted_while_loading(err, v->task, v->version);
            deleted = true;
        }
    } else if (signature_at(s, m, rv, depth + 1, &rsig, err) == 0) {
        a = cl_adapter_join(m, &rsig, reused, part, err);
    }
    if (!a && !deleted) clad_err_prefix(err, "composing version %lld of task '%s': ", (long long)v->version, v->task);
    signature_finish(&rsig);
    store_version_free(rv);
    adapter_destroy(part);
    return a;
}

static adapter *adapter_at(store *s, const model *m, const store_version *v, int depth, clad_err *err)
{
    int reused[MODEL_MAX_LINEARS] = {0};
    adapter *part = adapter_part_from_buffer(m, v->adapter, v->adapter_size, reused, err);
    return part ? compose(s, m, v, part, reused, depth, err) : NULL;
}

static int signature_at(store *s, const model *m, const store_version *v, int depth, signature *sig, clad_err *err)
{
    int rc = signature_from_blob(sig, m, v->adapter, v->adapter_size, err);
    if (rc || !v->n_needs || !strcmp(v->kind, "fusion")) return rc;
    /* Possibly stored by reference: its change part is that of the composed adapter. The part is parsed
     * once, for both the check and the composition. */
    int reused[MODEL_MAX_LINEARS] = {0};
    adapter *part = adapter_part_from_buffer(m, v->adapter, v->adapter_size, reused, NULL);
    if (!part || !any_reused(m, reused)) {
        adapter_destroy(part);
        return 0;
    }
    adapter *a = compose(s, m, v, part, reused, depth, err);
    signature full = {0};
    rc = a ? signature_compute(&full, m, a, SIGNATURE_KEEP, err) : err ? err->code : CLAD_ECORRUPT;
    adapter_destroy(a);
    if (rc) {
        signature_finish(sig);
        return rc;
    }
    /* The stored pull moves over to the recomputed change. */
    for (int li = 0; li < m->n_linear; li++) {
        sig_layer *F = &full.layer[li], *S = &sig->layer[li];
        if (!S->kp) continue;
        F->out = m->linear[li].out;
        F->in = m->linear[li].in;
        F->kp = S->kp;
        F->Up = S->Up;
        F->Vtp = S->Vtp;
        F->gp = S->gp;
        S->kp = 0;
        S->Up = S->Vtp = S->gp = NULL;
    }
    signature_finish(sig);
    *sig = full;
    return 0;
}

int version_deleted_while_loading(clad_err *err, const char *task, int64_t version)
{
    return clad_err_set(err, CLAD_ENOTFOUND, "version %lld of task '%s' was deleted while it was being loaded",
                        (long long)version, task);
}

adapter *version_adapter(store *s, const model *m, const store_version *v, clad_err *err)
{
    return adapter_at(s, m, v, 0, err);
}

int version_signature(store *s, const model *m, const store_version *v, signature *sig, clad_err *err)
{
    return signature_at(s, m, v, 0, sig, err);
}
