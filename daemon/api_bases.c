/* Base models: import from safetensors, train from a reference dataset, list and show.
 *
 *   GET  /v1/bases              every base
 *   GET  /v1/bases/{name}       one base
 *   POST /v1/bases/{name}       safetensors body: import (config from the file's metadata or ?config=JSON);
 *                               JSON body: train a base from a reference dataset as a job (202)
 *
 * A base training's params are its JSON spec, which any node parses again to run one accepted by another
 * (api_base_train_revive); a dataset path is then checked against the data_dirs of the node that runs it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/sha256.h"
#include "core/train.h"
#include "daemon/api.h"
#include "daemon/api_util.h"
#include "daemon/job_claim.h"
#include "daemon/log.h"
#include "io/dataset_io.h"
#include "io/model_io.h"

/* The JSON spec of a base training (a model config and a few numbers). */
#define BASE_SPEC_MAX (64u << 10)

static json_t *base_json(const store_base *b)
{
    json_error_t je;
    json_t *cfg = json_loads(b->config_json ? b->config_json : "{}", 0, &je);
    return json_pack("{s:s,s:o,s:s,s:I,s:o}", "name", b->name, "config", cfg ? cfg : json_object(), "sha256",
                     b->weights_sha256, "created_ms", (json_int_t)b->created_ms, "created", http_time_ms_json(b->created_ms));
}

static void bases_list(http_req *req)
{
    cladd *app = req->app;
    store_base *bases = NULL;
    size_t n = 0;
    clad_err err = {0};
    if (store_bases_list(app->st, &bases, &n, &err)) {
        http_reply_err(req, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, base_json(&bases[i]));
    store_bases_free(bases, n);
    http_reply_json(req, 200, json_pack("{s:o}", "bases", arr));
}

static void bases_get(http_req *req)
{
    cladd *app = req->app;
    store_base *b = NULL;
    clad_err err = {0};
    if (store_base_get(app->st, http_req_param(req, "name"), 0, &b, &err)) {
        http_reply_err(req, &err);
        return;
    }
    json_t *j = base_json(b);
    store_base_free(b);
    http_reply_json(req, 200, j);
}

/* A base's canonical weights file, its hash and its config, built on a pool thread (the work is as large
 * as the model) and stored on the loop. */
typedef struct base_blob {
    uint8_t *buf;
    size_t len;
    char sha[SHA256_HEX_SIZE];
    char *config_text;
} base_blob;

static int base_blob_build(base_blob *b, const model *m, clad_err *err)
{
    int rc = model_to_buffer(m, &b->buf, &b->len, err);
    if (rc) return rc;
    json_t *cj = model_config_to_json(&m->cfg);
    b->config_text = cj ? json_dumps(cj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(cj);
    if (!b->config_text) return clad_err_set(err, CLAD_ENOMEM, "out of memory");
    sha256_hex(b->buf, b->len, b->sha);
    return 0;
}

static void base_blob_finish(base_blob *b)
{
    free(b->buf);
    free(b->config_text);
    memset(b, 0, sizeof *b);
}

/* Loop thread: stores a base made or imported by the daemon and keeps it loaded. Takes ownership of m.
 * job_id: the store's id of the job that trained it (its lease is checked in the base's transaction), or 0. */
static int base_store(cladd *app, const char *name, model *m, const base_blob *b, int peer_uid, int64_t job_id,
                      clad_err *err)
{
    store_base_in in = {.name = name, .config_json = b->config_text, .weights = b->buf, .weights_size = b->len,
                        .job_id = job_id};
    int rc = store_base_put(app->st, &in, peer_uid, err);
    if (rc == 0) rc = registry_base_add(app->reg, name, b->sha, m, err);
    else model_destroy(m);
    return rc;
}

/* ---- import ---- */

typedef struct base_import_call {
    http_req *req;
    char name[STORE_NAME_MAX + 1];
    base_parse_fn parse;
    void *opts;           /* parse's options, owned */
    char *body;           /* the upload, taken from the request */
    size_t body_len;
    model *m;             /* parsed on the pool */
    base_blob blob;
} base_import_call;

static void base_import_free(base_import_call *bi)
{
    free(bi->body);
    free(bi->opts);
    model_destroy(bi->m);
    base_blob_finish(&bi->blob);
    free(bi);
}

/* Pool thread: parse and check every tensor, then build the canonical file. */
static int base_import_work(void *argp, clad_err *err)
{
    base_import_call *bi = argp;
    bi->m = bi->parse(bi->body, bi->body_len, bi->opts, err);
    free(bi->body);
    bi->body = NULL;
    if (!bi->m) return err->code == CLAD_ENOTFOUND ? (err->code = CLAD_EINVAL) : err->code;
    return base_blob_build(&bi->blob, bi->m, err);
}

static void base_import_done(void *argp, int status, const clad_err *werr)
{
    base_import_call *bi = argp;
    http_req *req = bi->req;
    cladd *app = req->app;
    clad_err err = {0};
    if (status) {
        http_reply_err(req, werr);
        base_import_free(bi);
        return;
    }
    model *m = bi->m;
    bi->m = NULL;
    if (base_store(app, bi->name, m, &bi->blob, app_peer_uid(req), 0, &err)) {
        http_reply_err(req, &err);
        base_import_free(bi);
        return;
    }
    log_info("base '%s' imported (%zu bytes)", bi->name, bi->blob.len);
    store_base *b = NULL;
    if (store_base_get(app->st, bi->name, 0, &b, &err)) http_reply_err(req, &err);
    else http_reply_json(req, 201, base_json(b));
    store_base_free(b);
    base_import_free(bi);
}

void base_import_submit(http_req *req, const char *name, base_parse_fn parse, const void *opts, size_t opts_size)
{
    cladd *app = req->app;
    clad_err err = {0};
    base_import_call *bi = calloc(1, sizeof *bi);
    void *o = malloc(opts_size ? opts_size : 1);
    if (!bi || !o) {
        free(bi);
        free(o);
        http_reply_error(req, CLAD_ENOMEM, "out of memory");
        return;
    }
    if (opts_size) memcpy(o, opts, opts_size);
    bi->req = req;
    bi->parse = parse;
    bi->opts = o;
    snprintf(bi->name, sizeof bi->name, "%s", name);
    /* Parsing, checking and hashing a model as large as the upload run on the pool, never on the loop. */
    bi->body = http_req_take_body(req, &bi->body_len);
    if (job_queue_compute(app->jobs, base_import_work, base_import_done, bi, &err)) {
        base_import_free(bi);
        http_reply_err(req, &err);
    }
}

/* A clad base file (safetensors with clad's metadata), with an optional config from ?config=. */
typedef struct native_opts {
    model_config cfg;
    bool have_cfg;
} native_opts;

static model *parse_native(const char *body, size_t len, const void *opts, clad_err *err)
{
    const native_opts *o = opts;
    return model_from_buffer(body, len, o->have_cfg ? &o->cfg : NULL, err);
}

static void base_import(http_req *req, const char *name)
{
    clad_err err = {0};
    native_opts o = {0};
    const char *cfg_text = http_req_query(req, "config");
    if (cfg_text && model_config_parse(&o.cfg, cfg_text, &err)) {
        http_reply_err(req, &err);
        return;
    }
    o.have_cfg = cfg_text != NULL;
    base_import_submit(req, name, parse_native, &o, sizeof o);
}

/* ---- training a base from a reference dataset (a job) ---- */

typedef struct base_train_arg {
    char name[STORE_NAME_MAX + 1];
    model_config cfg;
    char data[1024];      /* "fmnist" or a dataset file readable by cladd */
    long long samples;    /* 0 = all */
    uint64_t seed;
    train_config tc;
    int peer_uid;
    cladd *app;
    model *m;             /* the trained model, handed from run to finish */
    base_blob blob;       /* its canonical file, built by run */
    eval_result train_eval;
} base_train_arg;

static int base_train_run(job *j, void *argp, json_t **result, clad_err *err)
{
    base_train_arg *a = argp;
    dataset all = {0}, d = {0};
    int rc;
    if (!strcmp(a->data, "fmnist")) {
        rc = dataset_load_fmnist(&all, NULL, true, err);
    } else {
        uint8_t *buf = NULL;
        size_t len = 0;
        rc = file_read_all(a->data, DATASET_IO_MAX_BYTES, &buf, &len, err);
        if (!rc) rc = dataset_parse_any(&all, buf, len, false, err);
        free(buf);
    }
    if (!rc) rc = job_check_stop(j, "reading the data", err);
    if (rc) {
        dataset_finish(&all);
        return rc;
    }
    long long n = a->samples && a->samples < all.n ? a->samples : all.n;
    rc = dataset_sample(&d, &all, (int)n, a->seed, err);
    dataset_finish(&all);
    if (rc) return rc;
    if (d.n_classes > a->cfg.n_classes) a->cfg.n_classes = d.n_classes;
    a->m = model_create(&a->cfg, err);
    if (!a->m) {
        dataset_finish(&d);
        return err->code;
    }
    model_init_random(a->m, a->seed);
    char status[1200];
    snprintf(status, sizeof status, "base %s: %d samples of %d classes from %s", a->name, d.n, d.n_classes, a->data);
    job_post(j, json_pack("{s:s,s:i,s:i,s:s}", "event", "data", "samples", d.n, "classes", d.n_classes, "status", status));
    char what[96];
    snprintf(what, sizeof what, "training base %s", a->name);
    train_reporter rep = {j, what, 20};
    a->tc.seed = a->seed;
    train_result tr;
    rc = train_run(a->m, NULL, &d, &a->tc, train_reporter_step, &rep, &tr, err);
    if (!rc) rc = job_evaluate(j, a->m, NULL, &d, &a->train_eval, err);
    dataset_finish(&d);
    if (!rc) rc = job_check_stop(j, "evaluation", err);
    if (!rc) rc = base_blob_build(&a->blob, a->m, err);
    if (rc) return rc;
    *result = json_pack("{s:s,s:I,s:f,s:f,s:f}", "base", a->name, "samples", (json_int_t)n, "train_accuracy",
                        (double)a->train_eval.accuracy, "train_loss", (double)a->train_eval.loss, "seconds",
                        seconds_us(tr.seconds));
    return 0;
}

static int base_train_finish(job *j, void *argp, int status, clad_err *err)
{
    base_train_arg *a = argp;
    if (status != 0) return status;
    model *m = a->m;
    a->m = NULL;
    return base_store(a->app, a->name, m, &a->blob, a->peer_uid, app_store_job_id(a->app, j), err);
}

static void base_train_free(void *argp)
{
    base_train_arg *a = argp;
    model_destroy(a->m);
    base_blob_finish(&a->blob);
    free(a);
}

static const job_kind base_train_kind = {"base-train", base_train_run, base_train_finish, base_train_free};

static int parse_train_spec(base_train_arg *a, const json_t *spec, clad_err *err)
{
    const char *key;
    json_t *v;
    train_config_default(&a->tc);
    a->tc.epochs = 3;
    a->seed = 1;
    snprintf(a->data, sizeof a->data, "fmnist");
    bool have_model = false;
    json_object_foreach((json_t *)spec, key, v) {
        if (!strcmp(key, "model")) {
            /* Without "classes" the reference data decides (the run raises it to the data's classes). */
            json_t *mv = json_is_object(v) && !json_object_get(v, "classes") ? json_deep_copy(v) : json_incref(v);
            if (json_is_object(mv) && !json_object_get(mv, "classes")) json_object_set_new(mv, "classes", json_integer(1));
            int mrc = model_config_from_json(&a->cfg, mv, err);
            json_decref(mv);
            if (mrc) return mrc;
            have_model = true;
        } else if (!strcmp(key, "data")) {
            if (!json_is_string(v) || !json_string_length(v) || json_string_length(v) >= sizeof a->data)
                return clad_err_set(err, CLAD_EINVAL, "'data' must be \"fmnist\" or the path of a dataset file");
            snprintf(a->data, sizeof a->data, "%s", json_string_value(v));
            /* The daemon does not share the client's working directory: a relative path means nothing. */
            if (strcmp(a->data, "fmnist") && a->data[0] != '/')
                return clad_err_set(err, CLAD_EINVAL, "'data' must be \"fmnist\" or an absolute path (the "
                                    "daemon does not know the client's working directory)");
        } else if (!strcmp(key, "epochs") || !strcmp(key, "batch") || !strcmp(key, "seed") ||
                   !strcmp(key, "samples")) {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                return clad_err_set(err, CLAD_EINVAL, "'%s' must be a non-negative whole number", key);
            long long x = json_integer_value(v);
            if (key[0] == 'e') a->tc.epochs = (int)(x > 1000 ? 1001 : x);
            else if (key[0] == 'b') a->tc.batch = (int)(x > 4096 ? 4097 : x);
            else if (key[1] == 'e') a->seed = (uint64_t)x;
            else a->samples = x;
        } else if (!strcmp(key, "lr")) {
            if (!json_is_number(v)) return clad_err_set(err, CLAD_EINVAL, "'lr' must be a number");
            a->tc.lr = (float)json_number_value(v);
        } else {
            return clad_err_set(err, CLAD_EINVAL, "unknown key '%s' (known: model, data, epochs, batch, lr, seed, samples)", key);
        }
    }
    if (!have_model) return clad_err_set(err, CLAD_EINVAL, "'model' is required (a preset such as \"vit-tiny\" or a config)");
    return train_config_validate(&a->tc, err);
}

/* A server-side path is read with the daemon's rights: only files in the allowed data directories, and a
 * refusal that says nothing about the file (whether it exists, what it holds). It names the node, which
 * may not be the one that accepted the job. */
static int data_path_check(const cladd *app, base_train_arg *a, clad_err *err)
{
    if (!strcmp(a->data, "fmnist") || config_data_path_allowed(&app->cfg, a->data, a->data, sizeof a->data)) return 0;
    return clad_err_set(err, CLAD_EDENIED, "'data' must be \"fmnist\" or a dataset file inside a data directory "
                        "node %s allows (data_dirs in its configuration)", app->cfg.node_id);
}

static void base_train(http_req *req, const char *name)
{
    cladd *app = req->app;
    clad_err err = {0};
    /* The spec is parsed on the loop: it is a few fields, so its size is bounded first. */
    if (req->body_len > BASE_SPEC_MAX) {
        http_reply_error(req, CLAD_ETOOLARGE, "a base training spec of %zu bytes is larger than the limit of %u",
                         req->body_len, BASE_SPEC_MAX);
        return;
    }
    json_error_t je;
    json_t *spec = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(spec)) {
        json_decref(spec);
        http_reply_error(req, CLAD_EINVAL, "the body must be a JSON object: %s (line %d column %d)",
                         spec ? "not an object" : je.text, je.line, je.column);
        return;
    }
    base_train_arg *a = calloc(1, sizeof *a);
    if (!a) {
        json_decref(spec);
        http_reply_error(req, CLAD_ENOMEM, "out of memory");
        return;
    }
    snprintf(a->name, sizeof a->name, "%s", name);
    a->app = app;
    a->peer_uid = app_peer_uid(req);
    if (!parse_train_spec(a, spec, &err)) data_path_check(app, a, &err);
    if (err.code) {
        free(a);
        json_decref(spec);
        http_reply_err(req, &err);
        return;
    }
    job_spec js = {.kind = &base_train_kind, .lane = name, .arg = a, .params = spec, .owner_uid = req->peer->uid};
    job *j = NULL;
    if (job_submit(app->jobs, &js, &j, &err)) {
        base_train_free(a);
        http_reply_err(req, &err);
        return;
    }
    api_reply_job(req, j, 202);
}

static void bases_post(http_req *req)
{
    cladd *app = req->app;
    const char *name = http_req_param(req, "name");
    if (!require_name(req, "base", name)) return;
    store_base *existing = NULL;
    clad_err err = {0};
    if (store_base_get(app->st, name, 0, &existing, &err) == 0) {
        store_base_free(existing);
        http_reply_error(req, CLAD_ECONFLICT, "base '%s' exists; bases are immutable, choose another name", name);
        return;
    }
    char mt[64];
    http_req_media_type(req, mt, sizeof mt);
    bool json = !strcmp(mt, "application/json") || (!mt[0] && req->body_len && req->body[0] == '{');
    if (json) base_train(req, name);
    else base_import(req, name);
}

void api_base_train_revive(cladd *app, const store_job *sj, void *data, size_t data_len)
{
    (void)data_len;
    free(data); /* the spec names its data; the job stores none */
    json_t *spec = job_claim_request(app, sj);
    if (!spec) return;
    base_train_arg *a = calloc(1, sizeof *a);
    if (!a) abort();
    snprintf(a->name, sizeof a->name, "%s", sj->lane);
    a->app = app;
    a->peer_uid = sj->peer_uid;
    clad_err err = {0};
    if (!parse_train_spec(a, spec, &err)) data_path_check(app, a, &err);
    if (err.code) {
        job_claim_revive_failed(app, sj->id, &err);
        json_decref(spec);
        base_train_free(a);
        return;
    }
    job_spec js = {.kind = &base_train_kind, .lane = a->name, .arg = a, .params = spec,
                   .owner_uid = (uid_t)sj->peer_uid, .id = (uint64_t)sj->id};
    if (job_claim_resubmit(app, &js, sj->attempt)) base_train_free(a);
}

const route api_bases_routes[] = {
    {"GET", "/v1/bases", ROUTE_READ, bases_list, NULL, "list base models"},
    {"GET", "/v1/bases/{name}", ROUTE_READ, bases_get, NULL, "one base model"},
    {"POST", "/v1/bases/{name}{?config,follow}", ROUTE_WRITE, bases_post, "application/json,application/octet-stream,application/x-safetensors",
     "import a base (safetensors) or train one from a reference dataset (JSON)"},
    ROUTE_END,
};
