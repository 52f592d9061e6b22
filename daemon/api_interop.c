/* Interop with PyTorch users' formats: PEFT LoRA directories and timm / Hugging Face ViT checkpoints.
 *
 *   GET  /v1/tasks/{name}/versions/{v}/export  a version as a PEFT LoRA directory, as a ustar archive
 *                                              (?format=peft, the only format); ?file=adapter_model.safetensors
 *                                              or ?file=adapter_config.json answers that one file. {v} is a
 *                                              number or an alias.
 *   POST /v1/tasks/{name}/import               a PEFT directory as a ustar archive -> a new lora version
 *                                              (?format=peft; ?base=B for a new task)
 *   GET  /v1/bases/{name}/export               the base as a timm-layout safetensors checkpoint
 *   POST /v1/bases/{name}/import               a timm or HF ViT checkpoint -> a new base
 *                                              (?layout=auto|timm|hf, ?heads=N, ?ln_eps=X, ?gelu=erf|tanh)
 * The conversions live in io/peft.c and io/vit_import.c; this file resolves names and stores results.
 * Bases and versions that are not cached load on the pool (daemon/registry_load.h), never on the loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/sha256.h"
#include "core/signature.h"
#include "daemon/api.h"
#include "daemon/api_util.h"
#include "daemon/log.h"
#include "daemon/registry_load.h"
#include "io/model_io.h"
#include "io/peft.h"
#include "io/signature_io.h"
#include "io/tar.h"
#include "io/vit_import.h"

/* {v}: a version number, or an alias of the task. */
static int path_version(cladd *app, const http_req *req, const char *task, int64_t *version, clad_err *err)
{
    const char *s = http_req_param(req, "v");
    char *end;
    long long x = strtoll(s, &end, 10);
    if (*s >= '0' && *s <= '9') {
        if (*end || x < 1) return clad_err_set(err, CLAD_EINVAL, "version '%s' must be a whole number from 1 or an alias", s);
        *version = x;
        return 0;
    }
    if (!name_is_valid(s)) return clad_err_set(err, CLAD_EINVAL, "version '%s' must be a whole number from 1 or an alias", s);
    return store_alias_get(app->st, task, s, version, err);
}

/* The version's adapter is in (loaded off the loop when it was not cached): convert and answer. */
static void version_export_loaded(void *data, loaded_adapter *la, registry_found how, const clad_err *lerr)
{
    http_req *req = data;
    cladd *app = req->app;
    const char *file = http_req_query(req, "file");
    clad_err err = {0};
    (void)how;
    if (!la) {
        http_reply_err(req, lerr);
        return;
    }
    peft_files f;
    int rc = peft_export(la->a, la->base->m, la->base->name, &f, &err);
    if (rc) clad_err_prefix(&err, "version %lld of task '%s' (%s): ", (long long)la->version, la->task, la->kind);
    char dir[STORE_NAME_MAX + 32], headers[STORE_NAME_MAX + 128];
    snprintf(dir, sizeof dir, "%s-v%lld-peft", la->task, (long long)la->version);
    registry_adapter_release(app->reg, la);
    if (rc) {
        http_reply_err(req, &err);
        return;
    }
    if (file && !strcmp(file, PEFT_CONFIG_FILE)) {
        http_reply(req, 200, "application/json", f.config, strlen(f.config), NULL);
    } else if (file) {
        http_reply(req, 200, "application/octet-stream", f.model, f.model_len, NULL);
    } else {
        tar_file files[2] = {{PEFT_MODEL_FILE, f.model, f.model_len}, {PEFT_CONFIG_FILE, f.config, strlen(f.config)}};
        uint8_t *tar = NULL;
        size_t len = 0;
        if (tar_build(dir, files, 2, (int64_t)time(NULL), &tar, &len, &err)) {
            http_reply_err(req, &err);
        } else {
            snprintf(headers, sizeof headers, "Content-Disposition: attachment; filename=\"%s.tar\"\r\n", dir);
            http_reply(req, 200, "application/x-tar", tar, len, headers);
        }
        free(tar);
    }
    peft_files_finish(&f);
}

static void version_export(http_req *req)
{
    cladd *app = req->app;
    const char *task = http_req_param(req, "name"), *format = http_req_query(req, "format");
    const char *file = http_req_query(req, "file");
    clad_err err = {0};
    if (format && strcmp(format, "peft")) {
        http_reply_error(req, CLAD_EINVAL, "format '%s' is not supported (known: peft)", format);
        return;
    }
    if (file && strcmp(file, PEFT_MODEL_FILE) && strcmp(file, PEFT_CONFIG_FILE)) {
        http_reply_error(req, CLAD_EINVAL, "file '%s' is not part of a PEFT directory (%s or %s)", file, PEFT_MODEL_FILE,
                         PEFT_CONFIG_FILE);
        return;
    }
    int64_t version = 0;
    if (path_version(app, req, task, &version, &err)) {
        http_reply_err(req, &err);
        return;
    }
    registry_loader_adapter(app->loads, task, version, version_export_loaded, req);
}

/* ---- import of a PEFT directory ---- */

/* The base of the imported task: the task's own, else ?base=, else the config's base_model_name_or_path
 * when clad holds a base of that name. */
static int import_base(cladd *app, const http_req *req, const char *task, const char *config, size_t config_len,
                       char *out, int *task_classes, clad_err *err)
{
    const char *q = http_req_query(req, "base");
    store_task *t = NULL;
    if (store_task_get(app->st, task, &t, NULL) == 0) {
        int rc = 0;
        if (strcmp(t->kind, "task")) /* as training says; the store would only say the name exists */
            rc = clad_err_set(err, CLAD_ECONFLICT, "'%s' is a %s, not a trainable task", task, t->kind);
        else if (q && strcmp(q, t->base))
            rc = clad_err_set(err, CLAD_ECONFLICT, "task '%s' is on base '%s', not '%s'", task, t->base, q);
        snprintf(out, STORE_NAME_MAX + 1, "%s", t->base);
        *task_classes = t->n_classes;
        store_task_free(t);
        return rc;
    }
    *task_classes = 0;
    if (q) {
        snprintf(out, STORE_NAME_MAX + 1, "%s", q);
        return 0;
    }
    json_t *j = json_loadb(config, config_len, 0, NULL);
    const char *named = json_string_value(json_object_get(j, "base_model_name_or_path"));
    store_base *b = NULL;
    int rc = named && name_is_valid(named) ? store_base_get(app->st, named, 0, &b, NULL) : CLAD_ENOTFOUND;
    if (rc == 0) snprintf(out, STORE_NAME_MAX + 1, "%s", named);
    else rc = clad_err_set(err, CLAD_EINVAL, "task '%s' is new: say which base it adapts with ?base=NAME", task);
    store_base_free(b);
    json_decref(j);
    return rc;
}

/* Stores adapter a (with its signature, so later training compares against it) as a new lora version. */
static int store_import(cladd *app, const http_req *req, const char *task, const loaded_base *b, const adapter *a,
                        int task_classes, json_t *lineage, int64_t *version, clad_err *err)
{
    signature sig = {0};
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = signature_compute(&sig, b->m, a, SIGNATURE_KEEP, err);
    if (!rc) rc = adapter_blob_build(a, b->m, &sig, &blob, &len, err);
    signature_finish(&sig);
    /* A new task is created with its first version, in one transaction: a failed import leaves no task. */
    store_task_in ti = {.name = task, .base = b->name, .kind = "task", .n_classes = a->n_classes};
    if (!rc && task_classes && task_classes != a->n_classes)
        rc = clad_err_set(err, CLAD_ECONFLICT, "task '%s' has %d classes; the adapter's head has %d", task, task_classes,
                          a->n_classes);
    json_t *hp = json_pack("{s:f,s:o}", "alpha", (double)a->alpha, "ranks", adapter_ranks_to_json(a, b->m));
    /* The same size measure as a trained version's, so `clad versions` compares them. */
    json_t *measured = json_pack("{s:I}", "adapter_params", (json_int_t)adapter_param_count(a));
    char *lin = json_dumps(lineage, JSON_COMPACT), *hps = json_dumps(hp, JSON_COMPACT);
    char *mets = json_dumps(measured, JSON_COMPACT);
    store_version_in vi = {.task = task, .kind = "lora", .adapter = blob, .adapter_size = len, .base_sha256 = b->sha256,
                           .lineage_json = lin, .hparams_json = hps, .metrics_json = mets,
                           .create_task = task_classes ? NULL : &ti};
    if (!rc) rc = store_version_put(app->st, &vi, app_peer_uid(req), version, err);
    free(lin);
    free(hps);
    free(mets);
    json_decref(hp);
    json_decref(measured);
    free(blob);
    return rc;
}

/* An import waiting for its base to load. */
typedef struct import_call {
    http_req *req;
    const uint8_t *st, *cfg;    /* the two files, inside the request's body */
    size_t st_len, cfg_len;
    int task_classes;
} import_call;

static void task_import_on_base(void *data, loaded_base *b, const clad_err *lerr)
{
    import_call *ic = data;
    http_req *req = ic->req;
    cladd *app = req->app;
    const char *task = http_req_param(req, "name");
    clad_err err = {0};
    adapter *a = NULL;
    int64_t version = 0;
    if (!b) {
        err = *lerr;
        goto fail;
    }
    if (!(a = peft_import(b->m, ic->st, ic->st_len, (const char *)ic->cfg, ic->cfg_len, &err))) goto fail;
    char sha_cfg[SHA256_HEX_SIZE], sha_st[SHA256_HEX_SIZE];
    sha256_hex(ic->cfg, ic->cfg_len, sha_cfg);
    sha256_hex(ic->st, ic->st_len, sha_st);
    json_t *lineage = json_pack("{s:{s:s,s:s,s:s}}", "imported", "format", "peft", "config_sha256", sha_cfg, "model_sha256", sha_st);
    int rc = store_import(app, req, task, b, a, ic->task_classes, lineage, &version, &err);
    json_decref(lineage);
    if (rc) goto fail;
    log_info("task '%s' version %lld imported from a PEFT adapter", task, (long long)version);
    http_reply_json(req, 201, json_pack("{s:s,s:I,s:s,s:s,s:i,s:o}", "task", task, "version", (json_int_t)version, "kind", "lora",
                                        "base", b->name, "classes", a->n_classes, "ranks", adapter_ranks_to_json(a, b->m)));
    goto done;
fail:
    http_reply_err(req, &err);
done:
    adapter_destroy(a);
    registry_base_release(app->reg, b);
    free(ic);
}

static void task_import(http_req *req)
{
    cladd *app = req->app;
    const char *task = http_req_param(req, "name"), *format = http_req_query(req, "format");
    if (!require_name(req, "task", task)) return;
    if (format && strcmp(format, "peft")) {
        http_reply_error(req, CLAD_EINVAL, "format '%s' is not supported (known: peft)", format);
        return;
    }
    clad_err err = {0};
    import_call *ic = calloc(1, sizeof *ic);
    if (!ic) abort();
    ic->req = req;
    char base[STORE_NAME_MAX + 1];
    if (tar_find(req->body, req->body_len, PEFT_CONFIG_FILE, &ic->cfg, &ic->cfg_len, &err) ||
        tar_find(req->body, req->body_len, PEFT_MODEL_FILE, &ic->st, &ic->st_len, &err)) {
        if (err.code == CLAD_ENOTFOUND) err.code = CLAD_EINVAL; /* the body lacks a file, not the daemon */
    } else {
        import_base(app, req, task, (const char *)ic->cfg, ic->cfg_len, base, &ic->task_classes, &err);
    }
    if (err.code) {
        http_reply_err(req, &err);
        free(ic);
        return;
    }
    registry_loader_base(app->loads, base, task_import_on_base, ic);
}

/* ---- bases ---- */

static void base_export_on_base(void *data, loaded_base *b, const clad_err *lerr)
{
    http_req *req = data;
    cladd *app = req->app;
    clad_err err = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!b) {
        http_reply_err(req, lerr);
    } else if (vit_export_timm(b->m, &buf, &len, &err)) {
        http_reply_err(req, &err);
    } else {
        char headers[STORE_NAME_MAX + 96];
        snprintf(headers, sizeof headers, "Content-Disposition: attachment; filename=\"%s.safetensors\"\r\n", b->name);
        http_reply(req, 200, "application/octet-stream", buf, len, headers);
    }
    free(buf);
    registry_base_release(app->reg, b);
}

static void base_export(http_req *req)
{
    cladd *app = req->app;
    const char *name = http_req_param(req, "name"), *format = http_req_query(req, "format");
    if (format && strcmp(format, "timm")) {
        http_reply_error(req, CLAD_EINVAL, "format '%s' is not supported (known: timm)", format);
        return;
    }
    registry_loader_base(app->loads, name, base_export_on_base, req);
}

static int import_opts(const http_req *req, vit_import_opts *o, clad_err *err)
{
    memset(o, 0, sizeof *o);
    const char *layout = http_req_query(req, "layout"), *gelu = http_req_query(req, "gelu");
    if (layout && vit_layout_parse(&o->layout, layout, err)) return CLAD_EINVAL;
    if (gelu && strcmp(gelu, "erf") && strcmp(gelu, "tanh"))
        return clad_err_set(err, CLAD_EINVAL, "gelu '%s' must be erf or tanh", gelu);
    o->gelu_tanh = gelu && !strcmp(gelu, "tanh");
    long long heads = 0;
    double eps = 0;
    int rc = query_int(req, "heads", 1, 64, &heads, err);
    if (!rc) rc = query_float(req, "ln_eps", 1e-30, 0.1, &eps, err);
    o->heads = (int)heads;
    o->ln_eps = (float)eps;
    return rc;
}

static model *parse_checkpoint(const char *body, size_t len, const void *opts, clad_err *err)
{
    return vit_import(body, len, opts, err);
}

static void base_import_checkpoint(http_req *req)
{
    cladd *app = req->app;
    const char *name = http_req_param(req, "name");
    if (!require_name(req, "base", name)) return;
    clad_err err = {0};
    store_base *existing = NULL;
    if (store_base_get(app->st, name, 0, &existing, NULL) == 0) {
        store_base_free(existing);
        http_reply_error(req, CLAD_ECONFLICT, "base '%s' exists; bases are immutable, choose another name", name);
        return;
    }
    vit_import_opts o;
    if (import_opts(req, &o, &err)) {
        http_reply_err(req, &err);
        return;
    }
    /* Converting a checkpoint (up to hundreds of MB) runs on the pool, like every base import. */
    base_import_submit(req, name, parse_checkpoint, &o, sizeof o);
}

const route api_interop_routes[] = {
    {"GET", "/v1/tasks/{name}/versions/{v}/export{?format,file}", ROUTE_READ, version_export, NULL,
     "a version as a PEFT LoRA directory (tar; ?file= one file)"},
    {"POST", "/v1/tasks/{name}/import{?format,base}", ROUTE_WRITE, task_import, "application/x-tar,application/octet-stream",
     "a PEFT LoRA directory (tar) as a new version"},
    {"GET", "/v1/bases/{name}/export{?format}", ROUTE_READ, base_export, NULL, "the base as a timm-layout safetensors checkpoint"},
    {"POST", "/v1/bases/{name}/import{?layout,heads,ln_eps,gelu}", ROUTE_WRITE, base_import_checkpoint, "application/octet-stream,application/x-safetensors",
     "a timm or Hugging Face ViT checkpoint as a new base"},
    ROUTE_END,
};
