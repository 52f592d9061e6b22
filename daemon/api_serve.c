/* Serving: predictions and evaluations with a task's adapter, on the compute pool.
 *
 *   POST /v1/tasks/{name}/predict    inputs -> labels and probabilities   (?version=N | ?alias=NAME)
 *   POST /v1/tasks/{name}/evaluate   labelled data -> accuracy and loss, recorded in the store
 *
 * Inputs are a JSON body {"inputs": [[...], ...]} (one row of input floats per sample, images flattened
 * C,H,W) or a dataset file (safetensors, IDX, CSV). The version is resolved and its adapter loaded on the
 * loop thread; the work runs on a compute thread, never behind a training job. A rollback during a
 * prediction does not affect it: it holds the adapter it started with.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/train.h"
#include "daemon/api.h"
#include "daemon/api_util.h"
#include "daemon/log.h"
#include "io/merge_io.h"

#define SERVE_BATCH 64

typedef struct serve_call {
    http_req *req;
    cladd *app;
    loaded_adapter *la;
    bool own;               /* la is this request's own (a merge served for one source), not the cache's */
    bool evaluate;
    bool want_probs;
    /* results (worker) */
    int n, K;
    int *labels;
    float *probs;
    eval_result ev;
    char data_sha[SHA256_HEX_SIZE];
    bool gone;
} serve_call;

static int serve_work(void *argp, clad_err *err)
{
    serve_call *c = argp;
    const model *m = c->la->base->m;
    const adapter *a = c->la->a;
    int dim = model_config_input_dim(&m->cfg);
    dataset d = {0};
    int rc = request_inputs(&d, c->req, c->evaluate, dim, err);
    if (rc) goto done;
    /* Only evaluations are recorded, with the hash of their data; predictions skip the hashing. */
    if (c->evaluate) sha256_hex(c->req->body, c->req->body_len, c->data_sha);
    c->n = d.n;
    c->K = a->n_classes;
    if (c->evaluate) {
        rc = model_evaluate(m, a, &d, SERVE_BATCH, &c->ev, err);
    } else {
        c->labels = malloc(sizeof *c->labels * (size_t)d.n);
        c->probs = c->want_probs ? malloc(sizeof *c->probs * (size_t)d.n * (size_t)c->K) : NULL;
        if (!c->labels || (c->want_probs && !c->probs)) rc = clad_err_set(err, CLAD_ENOMEM, "out of memory");
        else rc = model_predict(m, a, d.x, d.n, SERVE_BATCH, c->probs, c->labels, err);
    }
done:
    dataset_finish(&d);
    return rc;
}

/* The latest version committed on the same base: the "after" row of the accuracy matrix. */
static int latest_on_base(cladd *app, const char *base, store_ref *out)
{
    store_task *tasks = NULL;
    size_t n = 0;
    int64_t best_ms = -1;
    if (store_tasks_list(app->st, &tasks, &n, NULL)) return -1;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(tasks[i].base, base) || !tasks[i].latest_version) continue;
        store_version *v = NULL;
        if (store_version_get(app->st, tasks[i].name, tasks[i].latest_version, 0, &v, NULL) == 0) {
            if (v->created_ms > best_ms) {
                best_ms = v->created_ms;
                snprintf(out->task, sizeof out->task, "%s", v->task);
                out->version = v->version;
            }
            store_version_free(v);
        }
    }
    store_tasks_free(tasks, n);
    return best_ms >= 0 ? 0 : -1;
}

/* Gives back the adapter a request used: the registry's reference, or the request's own merge adapter. */
static void serve_release(cladd *app, loaded_adapter *la, bool own)
{
    if (!la) return;
    if (!own) {
        registry_adapter_release(app->reg, la);
        return;
    }
    adapter_destroy(la->a);
    registry_base_release(app->reg, la->base);
    free(la);
}

static void serve_done(void *argp, int status, const clad_err *err)
{
    serve_call *c = argp;
    http_req *req = c->req;
    cladd *app = c->app;
    if (status) {
        http_reply_err(req, err);
    } else if (c->evaluate) {
        clad_err e = {0};
        store_eval ev = {.version = {.version = c->la->version}, .accuracy = c->ev.accuracy, .loss = c->ev.loss,
                         .n_samples = c->ev.n};
        snprintf(ev.version.task, sizeof ev.version.task, "%s", c->la->task);
        memcpy(ev.data_sha256, c->data_sha, sizeof ev.data_sha256);
        int64_t id = 0;
        /* Recording is a write: only for peers that may write; others just get the numbers. */
        bool may_record = router_peer_may_write(app->rt, req->peer, NULL, 0);
        if (!may_record) e.code = CLAD_EDENIED;
        else if (store_eval_add(app->st, &ev, app_peer_uid(req), &id, &e) == 0) {
            store_acc_entry ae = {.evaluated = ev.version, .accuracy = c->ev.accuracy, .loss = c->ev.loss,
                                  .n_samples = c->ev.n};
            if (latest_on_base(app, c->la->base->name, &ae.after) == 0)
                store_matrix_add(app->st, &ae, 1, app_peer_uid(req), &e);
        }
        if (e.code && may_record) log_warning("evaluation of %s@%lld not recorded: %s", c->la->task, (long long)c->la->version, e.msg);
        http_reply_json(req, 200, json_pack("{s:s,s:I,s:f,s:f,s:i,s:b}", "task", c->la->task, "version",
                                            (json_int_t)c->la->version, "accuracy", (double)c->ev.accuracy, "loss",
                                            (double)c->ev.loss, "samples", c->ev.n, "recorded", !e.code));
    } else {
        json_t *labels = json_array(), *probs = c->probs ? json_array() : NULL;
        for (int i = 0; i < c->n; i++) {
            json_array_append_new(labels, json_integer(c->labels[i]));
            if (!probs) continue;
            json_t *row = json_array();
            for (int k = 0; k < c->K; k++) json_array_append_new(row, json_real(c->probs[(size_t)i * c->K + k]));
            json_array_append_new(probs, row);
        }
        json_t *j = json_pack("{s:s,s:I,s:o}", "task", c->la->task, "version", (json_int_t)c->la->version, "labels", labels);
        if (probs) json_object_set_new(j, "probabilities", probs);
        http_reply_json(req, 200, j);
    }
    serve_release(app, c->la, c->own);
    free(c->labels);
    free(c->probs);
    free(c);
}

/* A merged version serving one of its source tasks (?task=SOURCE): the shared factors with that task's
 * head. Built per request; merges are not on the latency-critical path. */
static int load_merge_source(cladd *app, const char *merge, int64_t version, const char *source,
                             loaded_adapter **out, clad_err *err)
{
    store_task *t = NULL;
    store_version *v = NULL;
    int rc = store_task_get(app->st, merge, &t, err);
    if (!rc && strcmp(t->kind, "merge"))
        rc = clad_err_set(err, CLAD_EINVAL, "?task= selects a source task of a merge; '%s' is not a merge", merge);
    if (!rc) rc = store_version_get(app->st, merge, version, STORE_WITH_BLOB, &v, err);
    loaded_adapter *la = calloc(1, sizeof *la);
    if (!la) abort();
    if (!rc) rc = registry_base_get(app->reg, app->st, t->base, &la->base, err);
    if (!rc && !(la->a = merged_adapter_load(la->base->m, v->adapter, v->adapter_size, source, err))) rc = err->code;
    if (rc) {
        if (la->base) registry_base_release(app->reg, la->base);
        free(la);
    } else {
        snprintf(la->task, sizeof la->task, "%s", merge);
        snprintf(la->kind, sizeof la->kind, "merged");
        la->version = version;
        *out = la;
    }
    store_version_free(v);
    store_task_free(t);
    return rc;
}

static void serve(http_req *req, bool evaluate)
{
    cladd *app = req->app;
    const char *task = http_req_param(req, "name");
    clad_err err = {0};
    int64_t version = 0;
    bool probs = true;
    /* Probabilities are on unless ?probs=0 (an absent flag reads as false). */
    if ((http_req_query(req, "probs") && http_req_query_bool(req, "probs", &probs, &err)) ||
        resolve_version(app, req, task, &version, &err)) {
        http_reply_err(req, &err);
        return;
    }
    serve_call *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->req = req;
    c->app = app;
    c->evaluate = evaluate;
    c->want_probs = probs;
    const char *source = http_req_query(req, "task");
    int rc = source ? load_merge_source(app, task, version, source, &c->la, &err)
                    : registry_adapter_get(app->reg, app->st, task, version, &c->la, &err);
    c->own = source != NULL;
    if (rc || job_queue_compute(app->jobs, serve_work, serve_done, c, &err)) {
        serve_release(app, c->la, c->own);
        free(c);
        http_reply_err(req, &err);
    }
}

static void predict(http_req *req) { serve(req, false); }
static void evaluate(http_req *req) { serve(req, true); }

#define SERVE_TYPES "application/json,application/octet-stream,application/x-safetensors,text/csv"
const route api_serve_routes[] = {
    {"POST", "/v1/tasks/{name}/predict", ROUTE_READ, predict, SERVE_TYPES, "predict labels and probabilities"},
    {"POST", "/v1/tasks/{name}/evaluate", ROUTE_READ, evaluate, SERVE_TYPES, "accuracy and loss on labelled data"},
    ROUTE_END,
};
