/* Serving: predictions and evaluations with a task's adapter, on the compute pool.
 *
 *   POST /v1/tasks/{name}/predict    inputs -> labels and probabilities   (?version=N | ?alias=NAME)
 *   POST /v1/tasks/{name}/evaluate   labelled data -> accuracy and loss, recorded in the store
 *
 * Inputs are a JSON body {"inputs": [[...], ...]} (one row of input floats per sample, images flattened
 * C,H,W) or a dataset file (safetensors, IDX, CSV). The version is resolved on the loop thread and its
 * adapter taken from the registry (a miss loads on the pool: daemon/registry_load.h); the work runs on a
 * compute thread, never behind a training job, with a workspace from the registry's pool; predictions of
 * one version that meet on the pool share one compute task and workspace (daemon/serve_batch.h). A
 * version that has served REGISTRY_FOLD_AFTER predictions is folded into its base once, and later
 * requests run the folded model without an adapter. A rollback during a prediction does not affect it: it holds the
 * adapter it started with.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/train.h"
#include "daemon/api.h"
#include "daemon/api_util.h"
#include "daemon/eval_record.h"
#include "daemon/log.h"
#include "daemon/task_counters.h"
#include "daemon/registry_load.h"
#include "daemon/serve_batch.h"
#include "io/merge_io.h"


typedef struct serve_call {
    http_req *req;
    cladd *app;
    loaded_adapter *la;
    const model *m;         /* what runs: la's folded model (a NULL), or its base with its adapter */
    const adapter *a;
    bool own;               /* la is this request's own (a merge served for one source), not the cache's */
    const char *source;     /* that source task (in req) */
    int64_t version;
    registry_alias_get by_alias; /* the get of the version an alias names (registry_loader_alias) */
    bool evaluate;
    bool want_probs;
    /* results (worker) */
    int n, K;
    int *labels;
    float *probs;
    eval_result ev;
    char data_sha[SHA256_HEX_SIZE];
    eval_place place;       /* where an evaluation is recorded (found on the worker) */
    bool gone;
    registry_found found;   /* how the adapter was found (counted per task version) */
} serve_call;

/* serve_work's first step for a merge source: reads the merged version with the worker's own store
 * reader and builds the source's adapter into la. */
static int merge_source_load(serve_call *c, clad_err *err)
{
    loaded_adapter *la = c->la;
    store *rd = store_open_reader(c->app->db_path, err);
    if (!rd) return err->code;
    store_version *v = NULL;
    int rc = store_version_get(rd, la->task, la->version, STORE_WITH_BLOB, &v, err);
    if (!rc && !(la->a = merged_adapter_load(c->m, v->adapter, v->adapter_size, c->source, err))) rc = err->code;
    store_version_free(v);
    store_close(rd);
    c->a = la->a;
    return rc;
}

/* Parses the request's inputs and predicts or evaluates them with workspace ws (worker). */
static int serve_run(serve_call *c, model_ws *ws, clad_err *err)
{
    dataset d = {0};
    const model *m = c->m;
    const adapter *a = c->a;
    int rc = request_inputs(&d, c->req, c->evaluate, &m->cfg, err);
    if (rc) goto done;
    /* Only evaluations are recorded, with the hash of their data; predictions skip the hashing. */
    if (c->evaluate) sha256_hex(c->req->body, c->req->body_len, c->data_sha);
    c->n = d.n;
    c->K = a ? a->n_classes : m->cfg.n_classes;
    if (c->evaluate) {
        rc = model_evaluate_ws(ws, m, a, &d, &c->ev, err);
        if (!rc) eval_record_place(c->app->db_path, c->req, c->la->task, c->la->base->name, c->data_sha, &c->place);
    } else {
        c->labels = malloc(sizeof *c->labels * (size_t)d.n);
        c->probs = c->want_probs ? malloc(sizeof *c->probs * (size_t)d.n * (size_t)c->K) : NULL;
        if (!c->labels || (c->want_probs && !c->probs)) rc = clad_err_set(err, CLAD_ENOMEM, "out of memory");
        else rc = model_predict_ws(ws, m, a, d.x, d.n, c->probs, c->labels, err);
    }
done:
    dataset_finish(&d);
    return rc;
}

/* A workspace for c's model from the registry's pool (worker); serve_ws_give returns it. */
static int serve_ws_take(void *first, void **ws, clad_err *err)
{
    serve_call *c = first;
    *ws = ws_pool_take(registry_ws_pool(c->app->reg), c->m, c->a, err);
    return *ws ? 0 : err->code;
}

static void serve_ws_give(void *first, void *ws)
{
    serve_call *c = first;
    ws_pool_give(registry_ws_pool(c->app->reg), ws);
}

/* Evaluations and merge sources: one request per compute task. */
static int serve_work(void *argp, clad_err *err)
{
    serve_call *c = argp;
    int rc = c->own ? merge_source_load(c, err) : 0;
    void *ws = NULL;
    if (!rc) rc = serve_ws_take(c, &ws, err);
    if (rc) return rc;
    rc = serve_run(c, ws, err);
    serve_ws_give(c, ws);
    return rc;
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
    if (!status) task_counters_add(c->la->task, c->la->version, c->evaluate, c->n, c->found);
    if (status) {
        http_reply_err(req, err);
    } else if (c->evaluate) {
        clad_err e = {0};
        json_t *rec = eval_record(app, req, c->la->task, c->la->version, &c->place, &c->ev, c->data_sha, &e);
        if (e.code && e.code != CLAD_EDENIED)
            log_warning("evaluation of %s@%lld not recorded: %s", c->la->task, (long long)c->la->version, e.msg);
        json_t *reply = json_pack("{s:s,s:I,s:f,s:f,s:i}", "task", c->la->task, "version", (json_int_t)c->la->version,
                                  "accuracy", (double)c->ev.accuracy, "loss", (double)c->ev.loss, "samples", c->ev.n);
        json_object_update(reply, rec);
        json_decref(rec);
        http_reply_json(req, 200, reply);
    } else {
        /* The reply is as large as the request: every append is checked, so running out of memory is a
         * 503 for this request and never a reply with rows missing. */
        json_t *labels = json_array(), *probs = c->probs ? json_array() : NULL;
        bool ok = labels && (probs || !c->probs);
        for (int i = 0; ok && i < c->n; i++) {
            ok = json_array_append_new(labels, json_integer(c->labels[i])) == 0;
            if (!ok || !probs) continue;
            json_t *row = json_array();
            for (int k = 0; ok && k < c->K; k++)
                ok = row && json_array_append_new(row, json_real(c->probs[(size_t)i * c->K + k])) == 0;
            ok = ok && json_array_append_new(probs, row) == 0;
        }
        json_t *j = ok ? json_pack("{s:s,s:I,s:O}", "task", c->la->task, "version", (json_int_t)c->la->version,
                                   "labels", labels) : NULL;
        if (j && probs && json_object_set(j, "probabilities", probs) != 0) {
            json_decref(j);
            j = NULL;
        }
        json_decref(labels);
        json_decref(probs);
        if (j) http_reply_json(req, 200, j);
        else http_reply_error(req, CLAD_ENOMEM, "out of memory building the reply of %d predictions", c->n);
        if (!c->own) registry_loader_served(app->loads, c->la);
    }
    serve_release(app, c->la, c->own);
    free(c->labels);
    free(c->probs);
    free(c);
}

/* Bodies up to this size are batched: a batch-1 vit-tiny prediction is about 4 KB of JSON. */
#define SERVE_BATCH_BODY_MAX (64 * 1024)

static int serve_batch_run(void *item, void *ws, clad_err *err)
{
    return serve_run(item, ws, err);
}

static const serve_batch_ops predict_batch = {serve_ws_take, serve_batch_run, serve_ws_give, serve_done};

/* Runs the request with la (NULL: err says why it has none). */
static void serve_start(void *data, loaded_adapter *la, registry_found how, const clad_err *err)
{
    serve_call *c = data;
    clad_err e = {0};
    c->la = la;
    c->found = how;
    if (la) {
        c->m = la->folded ? la->folded : la->base->m;
        c->a = la->folded ? NULL : la->a;
        /* Small predictions of one version run together when they meet on the pool (daemon/serve_batch.h);
         * a large one runs alone, so it never delays the small ones of its batch; evaluations are recorded
         * one by one, and a merge source's adapter is the request's own. */
        bool batch = !c->evaluate && !c->own && c->req->body_len <= SERVE_BATCH_BODY_MAX;
        int rc = batch ? serve_batch_submit(c->app->jobs, &predict_batch, c->m, c->a, c->app->cfg.compute_threads, c, &e)
                       : job_queue_compute(c->app->jobs, serve_work, serve_done, c, &e);
        if (!rc) return;
        err = &e;
    }
    serve_release(c->app, c->la, c->own);
    http_reply_err(c->req, err);
    free(c);
}

/* A merged version serving one of its source tasks (?task=SOURCE), once the merge's base is loaded: the
 * shared factors with that task's head, the request's own adapter, read and built by serve_work (merges
 * are not on the latency-critical path). */
static void merge_on_base(void *data, loaded_base *b, const clad_err *err)
{
    serve_call *c = data;
    loaded_adapter *la = b ? calloc(1, sizeof *la) : NULL;
    clad_err e = {0};
    if (b && !la) {
        registry_base_release(c->app->reg, b);
        err = &e;
        clad_err_set(&e, CLAD_ENOMEM, "out of memory");
    }
    if (la) {
        snprintf(la->task, sizeof la->task, "%s", http_req_param(c->req, "name"));
        snprintf(la->kind, sizeof la->kind, "merged");
        la->version = c->version;
        la->base = b;
    }
    serve_start(c, la, REGISTRY_LOADED, err); /* the request's own adapter, built for it */
}

static void serve(http_req *req, bool evaluate)
{
    cladd *app = req->app;
    const char *task = http_req_param(req, "name");
    clad_err err = {0};
    if (request_json_size_check(req, evaluate, &err)) {
        http_reply_err(req, &err);
        return;
    }
    int64_t version = 0;
    bool probs = true;
    /* Probabilities are on unless ?probs=0 (an absent flag reads as false). */
    if (evaluate && !eval_record_check(req)) return;
    if ((http_req_query(req, "probs") && http_req_query_bool(req, "probs", &probs, &err)) ||
        resolve_version(app, req, task, &version, &err)) {
        http_reply_err(req, &err);
        return;
    }
    serve_call *c = calloc(1, sizeof *c);
    if (!c) {
        http_reply_error(req, CLAD_ENOMEM, "out of memory");
        return;
    }
    c->req = req;
    c->app = app;
    c->evaluate = evaluate;
    c->want_probs = probs;
    const char *source = http_req_query(req, "task");
    c->version = version;
    if (!source) {
        /* A version the request named stays that version; one an alias named follows the alias. */
        const char *alias = http_req_query(req, "alias");
        if (http_req_query(req, "version")) registry_loader_adapter(app->loads, task, version, serve_start, c);
        else registry_loader_alias(app->loads, &c->by_alias, task, alias ? alias : "active", version, serve_start, c);
        return;
    }
    c->own = true;
    c->source = source;
    store_task *t = NULL;
    if (!store_task_get(app->st, task, &t, &err) && strcmp(t->kind, "merge"))
        clad_err_set(&err, CLAD_EINVAL, "?task= selects a source task of a merge; '%s' is not a merge", task);
    if (err.code) serve_start(c, NULL, REGISTRY_LOADED, &err);
    else registry_loader_base(app->loads, t->base, merge_on_base, c);
    store_task_free(t);
}

static void predict(http_req *req) { serve(req, false); }
static void evaluate(http_req *req) { serve(req, true); }

#define SERVE_TYPES "application/json,application/octet-stream,application/x-safetensors,text/csv"
const route api_serve_routes[] = {
    {"POST", "/v1/tasks/{name}/predict{?version,alias,probs,task}", ROUTE_READ, predict, SERVE_TYPES, "predict labels and probabilities"},
    {"POST", "/v1/tasks/{name}/evaluate{?version,alias,task,data_name,data_task}", ROUTE_READ, evaluate, SERVE_TYPES, "accuracy and loss on labelled data"},
    ROUTE_END,
};
