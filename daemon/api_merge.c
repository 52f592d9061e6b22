/* Merging task adapters into one multitask version: POST /v1/merges/{name}, as a job.
 *
 * Body: {"tasks": ["rot15", "rot20n"], "method": "drm-h" | "drm-v" | "ties" | "ta", "drop": 0.8,
 * "lambda": 1, "rank": 64}. The job reads the active version of every source task (all on one base),
 * merges their changes into one backbone (core/merge.h), re-expresses it as a LoRA of `rank` (truncated
 * SVD; the default keeps it exact for the reference configs) and stores it as version N of the merge entry
 * `name` (a task of kind "merge") whose lineage names the source versions. Predictions through a merge take
 * ?task=SOURCE and use the shared backbone with that task's own head.
 *
 * The job's params are the request body, which any node parses again to run a merge accepted by another
 * (api_merge_revive; the sources are resolved by the job, on the node that runs it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/merge.h"
#include "daemon/version_compose.h"
#include "daemon/api.h"
#include "daemon/api_util.h"
#include "daemon/job_claim.h"
#include "daemon/log.h"
#include "daemon/registry_load.h"
#include "io/merge_io.h"
#include "io/model_io.h"

#define MERGE_DEFAULT_RANK 64

typedef struct merge_arg {
    cladd *app;
    char name[STORE_NAME_MAX + 1];
    char db_path[PATH_MAX];
    loaded_base *base;
    int n;
    char tasks[MERGE_MAX_TASKS][STORE_NAME_MAX + 1];
    store_ref parents[MERGE_MAX_TASKS];
    merge_config mc;
    int rank;
    int peer_uid;
    uint8_t *blob;
    size_t blob_len;
    json_t *lineage;
    http_req *req;      /* while the base loads; NULL for a merge of another node rebuilt here */
    json_t *body;       /* that merge's stored request */
    int64_t revive_id;  /* its id in the store */
    int revive_attempt; /* and its start */
} merge_arg;

static int merge_run(job *j, void *argp, json_t **result, clad_err *err)
{
    merge_arg *a = argp;
    const model *m = a->base->m;
    adapter *src[MERGE_MAX_TASKS] = {0}, *lora = NULL;
    model *merged = NULL;
    int rc = 0;
    store *rd = store_open_reader(a->db_path, err);
    if (!rd) return err->code;
    for (int i = 0; !rc && i < a->n; i++) {
        store_version *v = NULL;
        store_task *t = NULL;
        rc = store_task_get(rd, a->tasks[i], &t, err);
        if (!rc && strcmp(t->base, a->base->name))
            rc = clad_err_set(err, CLAD_ECONFLICT, "task '%s' is on base '%s', not '%s'", t->name, t->base, a->base->name);
        if (!rc && strcmp(t->kind, "task"))
            rc = clad_err_set(err, CLAD_EINVAL, "'%s' is a %s; only trained tasks can be merged", t->name, t->kind);
        if (!rc) rc = store_version_get_alias(rd, a->tasks[i], "active", STORE_WITH_BLOB, &v, err);
        if (!rc && !(src[i] = version_adapter(rd, m, v, err))) rc = err->code;
        if (!rc) {
            a->parents[i] = (store_ref){.version = v->version};
            snprintf(a->parents[i].task, sizeof a->parents[i].task, "%s", v->task);
        }
        store_version_free(v);
        store_task_free(t);
    }
    store_close(rd);
    char status[160];
    snprintf(status, sizeof status, "merging %d adapters with %s", a->n, merge_method_name(a->mc.method));
    if (!rc) job_post(j, json_pack("{s:s,s:s}", "event", "merge", "status", status));
    if (!rc && !(merged = merge_backbone(m, (const adapter *const *)src, a->n, &a->mc, err))) rc = err->code;
    if (!rc && !(lora = merge_to_lora(m, merged, a->rank, src[0], err))) rc = err->code;
    const char *names[MERGE_MAX_TASKS];
    for (int i = 0; i < a->n; i++) names[i] = a->tasks[i];
    if (!rc) rc = merged_blob_build(lora, m, names, (const adapter *const *)src, a->n, &a->blob, &a->blob_len, err);
    if (!rc) {
        json_t *srcs = json_array();
        for (int i = 0; i < a->n; i++)
            json_array_append_new(srcs, json_pack("{s:s,s:I}", "task", a->parents[i].task, "version",
                                                  (json_int_t)a->parents[i].version));
        a->lineage = json_pack("{s:{s:s,s:f,s:f,s:i,s:o,s:o}}", "merge", "method", merge_method_name(a->mc.method),
                               "drop", (double)a->mc.drop, "lambda", (double)a->mc.lambda, "rank", a->rank, "sources", srcs,
                               "ranks", adapter_ranks_to_json(lora, m));
        *result = json_pack("{s:s,s:O}", "merge", a->name, "sources", srcs);
    }
    adapter_destroy(lora);
    model_destroy(merged);
    for (int i = 0; i < a->n; i++) adapter_destroy(src[i]);
    return rc;
}

static int merge_finish(job *j, void *argp, int status, clad_err *err)
{
    merge_arg *a = argp;
    cladd *app = a->app;
    if (status) return status;
    /* A new merge entry is created by store_version_put, in the transaction of its first version. */
    store_task_in ti = {.name = a->name, .base = a->base->name, .kind = "merge", .n_classes = 0};
    char *lineage = json_dumps(a->lineage, JSON_COMPACT);
    store_version_in vi = {.task = a->name, .kind = "merged", .adapter = a->blob, .adapter_size = a->blob_len,
                           .parents = a->parents, .n_parents = (size_t)a->n, .base_sha256 = a->base->sha256,
                           .lineage_json = lineage, .job_id = app_store_job_id(app, j), .create_task = &ti};
    int64_t version = 0;
    int rc = store_version_put(app->st, &vi, a->peer_uid, &version, err);
    free(lineage);
    if (!rc) {
        json_t *res = job_run_result(j);
        if (res) json_object_set_new(res, "version", json_integer(version));
        log_info("merge '%s' version %lld stored from %d tasks", a->name, (long long)version, a->n);
    }
    return rc;
}

static void merge_free(void *argp)
{
    merge_arg *a = argp;
    if (a->base) registry_base_release(a->app->reg, a->base);
    free(a->blob);
    json_decref(a->lineage);
    json_decref(a->body);
    free(a);
}

static const job_kind merge_kind = {"merge", merge_run, merge_finish, merge_free};

static int parse_merge(merge_arg *a, const json_t *body, clad_err *err)
{
    const char *key;
    json_t *v;
    merge_method method = MERGE_DRM_H;
    const char *mname = json_string_value(json_object_get(body, "method"));
    if (json_object_get(body, "method") && !mname) return clad_err_set(err, CLAD_EINVAL, "'method' must be a string");
    if (mname && merge_method_parse(&method, mname, err)) return CLAD_EINVAL;
    merge_config_default(&a->mc, method);
    a->rank = MERGE_DEFAULT_RANK;
    json_object_foreach((json_t *)body, key, v) {
        if (!strcmp(key, "method")) continue;
        if (!strcmp(key, "tasks")) {
            if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > MERGE_MAX_TASKS)
                return clad_err_set(err, CLAD_EINVAL, "'tasks' must list 1 to %d task names", MERGE_MAX_TASKS);
            a->n = (int)json_array_size(v);
            for (int i = 0; i < a->n; i++) {
                const char *t = json_string_value(json_array_get(v, (size_t)i));
                if (!name_is_valid(t)) return clad_err_set(err, CLAD_EINVAL, "'tasks'[%d] is not a task name", i);
                for (int k = 0; k < i; k++)
                    if (!strcmp(a->tasks[k], t)) return clad_err_set(err, CLAD_EINVAL, "task '%s' is listed twice", t);
                snprintf(a->tasks[i], sizeof a->tasks[i], "%s", t);
            }
        } else if (!strcmp(key, "drop") || !strcmp(key, "lambda")) {
            if (!json_is_number(v)) return clad_err_set(err, CLAD_EINVAL, "'%s' must be a number", key);
            if (key[0] == 'd') a->mc.drop = (float)json_number_value(v);
            else a->mc.lambda = (float)json_number_value(v);
        } else if (!strcmp(key, "rank")) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 4096)
                return clad_err_set(err, CLAD_EINVAL, "'rank' must be a whole number from 1 to 4096");
            a->rank = (int)json_integer_value(v);
        } else {
            return clad_err_set(err, CLAD_EINVAL, "unknown key '%s' (known: tasks, method, drop, lambda, rank)", key);
        }
    }
    if (!a->n) return clad_err_set(err, CLAD_EINVAL, "'tasks' is required");
    return merge_config_validate(&a->mc, a->n, err);
}

static void merge_on_base(void *data, loaded_base *b, const clad_err *berr);

static void merges_post(http_req *req)
{
    cladd *app = req->app;
    const char *name = http_req_param(req, "name");
    if (!require_name(req, "merge", name)) return;
    clad_err err = {0};
    merge_arg *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->app = app;
    a->peer_uid = app_peer_uid(req);
    snprintf(a->name, sizeof a->name, "%s", name);
    snprintf(a->db_path, sizeof a->db_path, "%s", app->db_path);
    int rc = parse_merge(a, req->json, &err);
    store_task *t = NULL;
    if (!rc && store_task_get(app->st, name, &t, NULL) == 0) {
        if (strcmp(t->kind, "merge")) rc = clad_err_set(&err, CLAD_ECONFLICT, "'%s' is a trained task, not a merge", name);
        store_task_free(t);
    }
    /* Every source exists and is on the first source's base: refused now (404, 409), not by a failed job. */
    char base[STORE_NAME_MAX + 1] = "";
    for (int i = 0; !rc && i < a->n; i++) {
        if ((rc = store_task_get(app->st, a->tasks[i], &t, &err))) break;
        if (!i) snprintf(base, sizeof base, "%s", t->base);
        else if (strcmp(t->base, base))
            rc = clad_err_set(&err, CLAD_ECONFLICT, "task '%s' is on base '%s', not '%s'", t->name, t->base, base);
        store_task_free(t);
    }
    /* The base is the first source's (a cold one loads on the pool). */
    if (!rc) {
        a->req = req;
        registry_loader_base(app->loads, base, merge_on_base, a);
        return;
    }
    merge_free(a);
    http_reply_err(req, &err);
}

/* The rest of merges_post, once the base is loaded (b NULL: berr says why not). */
static void merge_on_base(void *data, loaded_base *b, const clad_err *berr)
{
    merge_arg *a = data;
    cladd *app = a->app;
    http_req *req = a->req;
    clad_err err = {0};
    a->base = b;
    if (!req) { /* rebuilt from the store (api_merge_revive) */
        if (b) {
            job_spec js = {.kind = &merge_kind, .lane = b->name, .task = a->name, .arg = a, .params = json_incref(a->body),
                           .owner_uid = (uid_t)a->peer_uid, .id = (uint64_t)a->revive_id};
            if (job_claim_resubmit(app, &js, a->revive_attempt) == 0) return;
        } else {
            job_claim_revive_failed(app, a->revive_id, berr);
        }
        merge_free(a);
        return;
    }
    if (!b) {
        merge_free(a);
        http_reply_err(req, berr);
        return;
    }
    job_spec js = {.kind = &merge_kind, .lane = a->base->name, .task = a->name, .arg = a,
                   .params = json_incref(req->json), .owner_uid = req->peer->uid};
    job *j = NULL;
    if (job_submit(app->jobs, &js, &j, &err)) {
        merge_free(a);
        http_reply_err(req, &err);
        return;
    }
    api_reply_job(req, j, 202);
}

void api_merge_revive(cladd *app, const store_job *sj, void *data, size_t data_len)
{
    (void)data_len;
    free(data); /* a merge has no job data */
    merge_arg *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->app = app;
    a->peer_uid = sj->peer_uid;
    a->revive_id = sj->id;
    a->revive_attempt = sj->attempt;
    snprintf(a->name, sizeof a->name, "%s", sj->task);
    snprintf(a->db_path, sizeof a->db_path, "%s", app->db_path);
    clad_err err = {0};
    if (!(a->body = job_claim_request(app, sj))) {
        merge_free(a);
        return;
    }
    /* The lane is the base the accepting node found for the sources; the job checks them again. */
    if (parse_merge(a, a->body, &err) == 0 && !name_is_valid(a->name))
        clad_err_set(&err, CLAD_EINVAL, "the stored merge has no valid merge name");
    if (err.code) {
        job_claim_revive_failed(app, sj->id, &err);
        merge_free(a);
        return;
    }
    registry_loader_base(app->loads, sj->lane, merge_on_base, a);
}

const route api_merge_routes[] = {
    {"POST", "/v1/merges/{name}{?follow}", ROUTE_WRITE | ROUTE_JSON, merges_post, NULL, "merge task adapters into one version (job)"},
    ROUTE_END,
};
