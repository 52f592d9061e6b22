/* Tasks, their versions and aliases: the registry side of the API.
 *
 *   GET    /v1/tasks                              every task with its active version
 *   GET    /v1/tasks/{name}                       one task, its aliases
 *   GET    /v1/tasks/{name}/versions              versions, oldest first
 *   GET    /v1/tasks/{name}/versions/{v}          one version: lineage, metrics, evaluations
 *   DELETE /v1/tasks/{name}/versions/{v}          delete a version no alias points at
 *   POST   /v1/tasks/{name}/rollback              {"to": v?, "alias": "active"?, "reason": ...?}
 *   POST   /v1/tasks/{name}/rollback/undo         {"alias": ...?, "reason": ...?}
 *   GET    /v1/tasks/{name}/aliases               aliases and their full history
 *   PUT    /v1/tasks/{name}/aliases/{alias}       {"version": v, "reason": ...?}
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api.h"
#include "daemon/api_util.h"

static json_t *parse_or_empty(const char *text)
{
    json_error_t je;
    json_t *j = text ? json_loads(text, 0, &je) : NULL;
    return j ? j : json_object();
}

static json_t *aliases_json(cladd *app, const char *task)
{
    store_alias *al = NULL;
    size_t n = 0;
    json_t *o = json_object();
    if (store_aliases_list(app->st, task, &al, &n, NULL) == 0)
        for (size_t i = 0; i < n; i++) json_object_set_new(o, al[i].name, json_integer(al[i].version));
    store_aliases_free(al);
    return o;
}

static json_t *task_json(cladd *app, const store_task *t)
{
    json_t *j = json_pack("{s:s,s:s,s:s,s:i,s:I,s:I,s:I,s:o}", "name", t->name, "base", t->base, "kind", t->kind,
                          "classes", t->n_classes, "versions", (json_int_t)t->n_versions, "latest_version",
                          (json_int_t)t->latest_version, "created_ms", (json_int_t)t->created_ms, "aliases",
                          aliases_json(app, t->name));
    json_object_set_new(j, "created", http_time_ms_json(t->created_ms));
    if (t->label_names_json) json_object_set_new(j, "label_names", parse_or_empty(t->label_names_json));
    return j;
}

static json_t *refs_json(const store_ref *refs, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:s,s:I}", "task", refs[i].task, "version", (json_int_t)refs[i].version));
    return a;
}

json_t *version_json(const store_version *v, bool full)
{
    json_t *parents = refs_json(v->parents, v->n_parents);
    json_t *j = json_pack("{s:s,s:I,s:s,s:s,s:I,s:o,s:o,s:I,s:f,s:s,s:i}", "task", v->task, "version",
                          (json_int_t)v->version, "kind", v->kind, "sha256", v->sha256, "bytes",
                          (json_int_t)v->adapter_size, "parents", parents, "metrics", parse_or_empty(v->metrics_json),
                          "created_ms", (json_int_t)v->created_ms, "wall_time_s", seconds_us(v->wall_time_s), "clad_version",
                          v->clad_version, "creator_uid", v->creator_uid);
    json_object_set_new(j, "created", http_time_ms_json(v->created_ms));
    if (full) {
        json_object_set_new(j, "lineage", parse_or_empty(v->lineage_json));
        json_object_set_new(j, "needs", refs_json(v->needs, v->n_needs));
        json_object_set_new(j, "hparams", parse_or_empty(v->hparams_json));
        json_object_set_new(j, "base_sha256", json_string(v->base_sha256));
        json_object_set_new(j, "data_sha256", v->data_sha256[0] ? json_string(v->data_sha256) : json_null());
        json_object_set_new(j, "seed", json_integer((json_int_t)v->seed));
        json_object_set_new(j, "job", v->job_id ? json_integer(v->job_id) : json_null());
    }
    return j;
}

static void tasks_list(http_req *req)
{
    cladd *app = req->app;
    store_task *tasks = NULL;
    size_t n = 0;
    clad_err err = {0};
    if (store_tasks_list(app->st, &tasks, &n, &err)) {
        http_reply_err(req, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, task_json(app, &tasks[i]));
    store_tasks_free(tasks, n);
    http_reply_json(req, 200, json_pack("{s:o}", "tasks", arr));
}

static void tasks_get(http_req *req)
{
    cladd *app = req->app;
    store_task *t = NULL;
    clad_err err = {0};
    if (store_task_get(app->st, http_req_param(req, "name"), &t, &err)) {
        http_reply_err(req, &err);
        return;
    }
    json_t *j = task_json(app, t);
    store_version *v = NULL;
    if (store_version_get_alias(app->st, t->name, "active", 0, &v, NULL) == 0) {
        json_object_set_new(j, "active", version_json(v, true));
        store_version_free(v);
    }
    store_task_free(t);
    http_reply_json(req, 200, j);
}

static void versions_list(http_req *req)
{
    cladd *app = req->app;
    store_version *vs = NULL;
    size_t n = 0;
    clad_err err = {0};
    if (store_versions_list(app->st, http_req_param(req, "name"), &vs, &n, &err)) {
        http_reply_err(req, &err);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, version_json(&vs[i], false));
    store_versions_free(vs, n);
    http_reply_json(req, 200, json_pack("{s:s,s:o,s:o}", "task", http_req_param(req, "name"), "versions", arr,
                                        "aliases", aliases_json(app, http_req_param(req, "name"))));
}

static bool parse_version(http_req *req, int64_t *v)
{
    const char *s = http_req_param(req, "v");
    char *end;
    errno = 0; /* past 2^63 - 1 strtoll clamps: refuse it rather than look up version 9223372036854775807 */
    long long x = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || x < 1 || errno == ERANGE) {
        http_reply_error(req, CLAD_EINVAL, "version '%s' must be a whole number from 1", s ? s : "");
        return false;
    }
    *v = x;
    return true;
}

static void versions_get(http_req *req)
{
    cladd *app = req->app;
    int64_t ver;
    if (!parse_version(req, &ver)) return;
    store_version *v = NULL;
    clad_err err = {0};
    const char *task = http_req_param(req, "name");
    if (store_version_get(app->st, task, ver, 0, &v, &err)) {
        http_reply_err(req, &err);
        return;
    }
    json_t *j = version_json(v, true);
    store_version_free(v);
    store_eval *ev = NULL;
    size_t n = 0;
    json_t *evs = json_array();
    if (store_evals_list(app->st, task, ver, &ev, &n, NULL) == 0) {
        for (size_t i = 0; i < n; i++)
            json_array_append_new(evs, json_pack("{s:f,s:f,s:I,s:I,s:o}", "accuracy", ev[i].accuracy, "loss",
                                                 ev[i].loss, "samples", (json_int_t)ev[i].n_samples, "time_ms",
                                                 (json_int_t)ev[i].time_ms, "time", http_time_ms_json(ev[i].time_ms)));
        store_evals_free(ev, n);
    }
    json_object_set_new(j, "evaluations", evs);
    http_reply_json(req, 200, j);
}

static void versions_delete(http_req *req)
{
    cladd *app = req->app;
    int64_t ver;
    if (!parse_version(req, &ver)) return;
    clad_err err = {0};
    if (store_version_delete(app->st, http_req_param(req, "name"), ver, app_peer_uid(req), &err)) {
        http_reply_err(req, &err);
        return;
    }
    registry_adapter_forget(app->reg, http_req_param(req, "name"), ver);
    http_reply_json(req, 200, json_pack("{s:s,s:I,s:b}", "task", http_req_param(req, "name"), "version",
                                        (json_int_t)ver, "deleted", 1));
}

/* Optional string and version fields of a JSON body; answers 400 and returns false on a bad one. */
static bool body_fields(http_req *req, const char **alias, const char **reason, int64_t *version,
                        const char *version_key)
{
    json_t *a = json_object_get(req->json, "alias"), *r = json_object_get(req->json, "reason");
    json_t *v = version_key ? json_object_get(req->json, version_key) : NULL;
    const char *key;
    json_t *val;
    json_object_foreach(req->json, key, val) {
        if (strcmp(key, "alias") && strcmp(key, "reason") && (!version_key || strcmp(key, version_key))) {
            http_reply_error(req, CLAD_EINVAL, "unknown key '%s' (known: alias, reason%s%s)", key,
                             version_key ? ", " : "", version_key ? version_key : "");
            return false;
        }
    }
    const char *bad_string = a && !json_is_string(a) ? "alias" : r && !json_is_string(r) ? "reason" : NULL;
    if (bad_string) {
        http_reply_error(req, CLAD_EINVAL, "'%s' must be a string", bad_string);
        return false;
    }
    if (v && (!json_is_integer(v) || json_integer_value(v) < 1)) {
        http_reply_error(req, CLAD_EINVAL, "'%s' must be a version number (a whole number from 1)", version_key);
        return false;
    }
    if (alias) *alias = a ? json_string_value(a) : NULL;
    if (reason) *reason = r ? json_string_value(r) : NULL;
    if (version) *version = v ? json_integer_value(v) : 0;
    if (alias && *alias && !require_name(req, "alias", *alias)) return false;
    return true;
}

static void reply_alias_move(http_req *req, const char *alias, int64_t from, int64_t to)
{
    /* A new alias came from nowhere: null, as in its history, not a version 0. */
    http_reply_json(req, 200, json_pack("{s:s,s:s,s:o,s:I}", "task", http_req_param(req, "name"), "alias",
                                        alias ? alias : "active", "from", from ? json_integer(from) : json_null(),
                                        "to", (json_int_t)to));
}

static void rollback(http_req *req)
{
    cladd *app = req->app;
    const char *alias, *reason;
    int64_t to, from = 0, now = 0;
    if (!body_fields(req, &alias, &reason, &to, "to")) return;
    clad_err err = {0};
    const char *task = http_req_param(req, "name");
    if (store_alias_get(app->st, task, alias ? alias : "active", &from, &err) ||
        store_rollback(app->st, task, alias, to, app_peer_uid(req), reason, &now, &err)) {
        http_reply_err(req, &err);
        return;
    }
    reply_alias_move(req, alias, from, now);
}

static void rollback_undo(http_req *req)
{
    cladd *app = req->app;
    const char *alias, *reason;
    int64_t from = 0, now = 0;
    if (!body_fields(req, &alias, &reason, NULL, NULL)) return;
    clad_err err = {0};
    const char *task = http_req_param(req, "name");
    if (store_alias_get(app->st, task, alias ? alias : "active", &from, &err) ||
        store_rollback_undo(app->st, task, alias, app_peer_uid(req), reason, &now, &err)) {
        http_reply_err(req, &err);
        return;
    }
    reply_alias_move(req, alias, from, now);
}

static void aliases_list(http_req *req)
{
    cladd *app = req->app;
    const char *task = http_req_param(req, "name");
    store_alias_move *moves = NULL;
    size_t n = 0;
    clad_err err = {0};
    if (store_alias_history(app->st, task, NULL, &moves, &n, &err)) {
        http_reply_err(req, &err);
        return;
    }
    json_t *hist = json_array();
    for (size_t i = 0; i < n; i++) {
        const store_alias_move *m = &moves[i];
        json_array_append_new(hist, json_pack("{s:s,s:s,s:o,s:o,s:I,s:o,s:i,s:s}", "alias", m->alias, "action",
                                              m->action, "from", m->old_version ? json_integer(m->old_version) : json_null(),
                                              "to", m->new_version ? json_integer(m->new_version) : json_null(), "time_ms",
                                              (json_int_t)m->time_ms, "time", http_time_ms_json(m->time_ms), "peer_uid",
                                              m->peer_uid, "reason", m->reason));
    }
    store_alias_history_free(moves);
    http_reply_json(req, 200, json_pack("{s:s,s:o,s:o}", "task", task, "aliases", aliases_json(app, task), "history", hist));
}

static void aliases_put(http_req *req)
{
    cladd *app = req->app;
    const char *reason, *alias = http_req_param(req, "alias");
    int64_t version, from = 0;
    if (!require_name(req, "alias", alias) || !body_fields(req, NULL, &reason, &version, "version")) return;
    if (!version) {
        http_reply_error(req, CLAD_EINVAL, "'version' is required");
        return;
    }
    const char *task = http_req_param(req, "name");
    store_alias_get(app->st, task, alias, &from, NULL);
    clad_err err = {0};
    if (store_alias_set(app->st, task, alias, version, app_peer_uid(req), reason, &err)) {
        http_reply_err(req, &err);
        return;
    }
    reply_alias_move(req, alias, from, version);
}

const route api_tasks_routes[] = {
    {"GET", "/v1/tasks", ROUTE_READ, tasks_list, NULL, "list tasks"},
    {"GET", "/v1/tasks/{name}", ROUTE_READ, tasks_get, NULL, "one task with its active version"},
    {"GET", "/v1/tasks/{name}/versions", ROUTE_READ, versions_list, NULL, "versions of a task"},
    {"GET", "/v1/tasks/{name}/versions/{v}", ROUTE_READ, versions_get, NULL, "one version with lineage and metrics"},
    {"DELETE", "/v1/tasks/{name}/versions/{v}", ROUTE_WRITE, versions_delete, NULL, "delete an unaliased version"},
    {"POST", "/v1/tasks/{name}/rollback", ROUTE_WRITE | ROUTE_JSON, rollback, NULL, "move an alias back"},
    {"POST", "/v1/tasks/{name}/rollback/undo", ROUTE_WRITE | ROUTE_JSON, rollback_undo, NULL, "undo the last rollback"},
    {"GET", "/v1/tasks/{name}/aliases", ROUTE_READ, aliases_list, NULL, "aliases and their history"},
    {"PUT", "/v1/tasks/{name}/aliases/{alias}", ROUTE_WRITE | ROUTE_JSON, aliases_put, NULL, "point an alias at a version"},
    ROUTE_END,
};
