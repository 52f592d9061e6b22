/* Lifecycle of what the registry holds: promoting a version, deleting aliases, tasks and bases.
 *
 *   POST   /v1/tasks/{name}/versions/{v}/promote   point `active` at v (and drop `candidate` if it was v)
 *   DELETE /v1/tasks/{name}/aliases/{alias}        remove an alias (not `active`)
 *   DELETE /v1/tasks/{name}                        a task with its versions; 409 naming what depends on it
 *   DELETE /v1/bases/{name}                        a base; 409 naming the tasks on it
 *
 * Every change is one store transaction with an audit row. Deleted tasks and bases are also forgotten by
 * the in-memory cache, so a later task or base of the same name never serves the old weights.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api.h"
#include "daemon/api_util.h"
#include "daemon/task_counters.h"

/* The optional {"reason": "..."} body of the write routes here. Answers 400 and returns false otherwise. */
static bool reason_of(http_req *req, const char **reason)
{
    *reason = NULL;
    const char *key;
    json_t *val;
    json_object_foreach(req->json, key, val) {
        if (strcmp(key, "reason") || !json_is_string(val)) {
            http_reply_error(req, CLAD_EINVAL, strcmp(key, "reason") ? "unknown key '%s' (known: reason)"
                                                                     : "'%s' must be a string", key);
            return false;
        }
        *reason = json_string_value(val);
    }
    return true;
}

static void promote(http_req *req)
{
    cladd *app = req->app;
    const char *task = http_req_param(req, "name"), *reason;
    uint64_t v = 0;
    clad_err err = {0};
    if (!reason_of(req, &reason) || !api_parse_id(req, "v", &v)) return;
    int64_t from = 0, cand = 0;
    if (store_alias_get(app->st, task, "active", &from, &err) ||
        store_alias_set(app->st, task, "active", (int64_t)v, app_peer_uid(req), reason ? reason : "promoted", &err)) {
        http_reply_err(req, &err);
        return;
    }
    /* A promoted candidate is no longer one. */
    bool dropped = store_alias_get(app->st, task, "candidate", &cand, NULL) == 0 && cand == (int64_t)v &&
                   store_alias_delete(app->st, task, "candidate", app_peer_uid(req), "promoted", NULL) == 0;
    http_reply_json(req, 200, json_pack("{s:s,s:s,s:I,s:I,s:b}", "task", task, "alias", "active", "from",
                                        (json_int_t)from, "to", (json_int_t)v, "candidate_cleared", dropped));
}

static void alias_delete(http_req *req)
{
    cladd *app = req->app;
    const char *task = http_req_param(req, "name"), *alias = http_req_param(req, "alias"), *reason;
    clad_err err = {0};
    int64_t was = 0;
    if (!require_name(req, "alias", alias) || !reason_of(req, &reason)) return;
    if (store_alias_get(app->st, task, alias, &was, &err) ||
        store_alias_delete(app->st, task, alias, app_peer_uid(req), reason, &err)) {
        http_reply_err(req, &err);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:s,s:s,s:I,s:b}", "task", task, "alias", alias, "was", (json_int_t)was,
                                        "deleted", 1));
}

/* Answers 409 and returns true when a queued or running job runs on the lane `base` (a training of a
 * task on it, the base's own training): deleting the base under it would make it fail at its end. A
 * task's jobs are the store's to check (store_task_delete): they are recorded with their task. */
static bool base_busy(http_req *req, const char *base)
{
    cladd *app = req->app;
    char list[300] = "";
    size_t n = 0;
    for (int st = JOB_QUEUED; st <= JOB_RUNNING; st++) {
        json_t *jobs = job_queue_list_json(app->jobs, st, base, 1000), *j;
        size_t i;
        json_array_foreach(jobs, i, j) {
            n += (size_t)snprintf(list + n, n < sizeof list ? sizeof list - n : 0, "%sjob %lld (%s)", n ? ", " : "",
                                  (long long)json_integer_value(json_object_get(j, "id")), job_state_name((job_state)st));
        }
        json_decref(jobs);
    }
    if (!n) return false;
    http_reply_error(req, CLAD_ECONFLICT, "base '%s' has unfinished work: %s; cancel it first", base, list);
    return true;
}

static void task_delete(http_req *req)
{
    cladd *app = req->app;
    const char *task = http_req_param(req, "name");
    clad_err err = {0};
    if (!require_name(req, "task", task)) return;
    if (store_task_delete(app->st, task, app_peer_uid(req), &err)) {
        http_reply_err(req, &err);
        return;
    }
    registry_forget_task(app->reg, task);
    task_counters_forget(task);
    http_reply_json(req, 200, json_pack("{s:s,s:b}", "task", task, "deleted", 1));
}

static void base_delete(http_req *req)
{
    cladd *app = req->app;
    const char *base = http_req_param(req, "name");
    clad_err err = {0};
    if (!require_name(req, "base", base) || base_busy(req, base)) return;
    if (store_base_delete(app->st, base, app_peer_uid(req), &err)) {
        http_reply_err(req, &err);
        return;
    }
    registry_forget_base(app->reg, base);
    http_reply_json(req, 200, json_pack("{s:s,s:b}", "base", base, "deleted", 1));
}

const route api_lifecycle_routes[] = {
    {"POST", "/v1/tasks/{name}/versions/{v}/promote", ROUTE_WRITE | ROUTE_JSON, promote, NULL, "point active at a version"},
    {"DELETE", "/v1/tasks/{name}/aliases/{alias}", ROUTE_WRITE | ROUTE_JSON, alias_delete, NULL, "delete an alias"},
    {"DELETE", "/v1/tasks/{name}", ROUTE_WRITE, task_delete, NULL, "delete a task and its versions"},
    {"DELETE", "/v1/bases/{name}", ROUTE_WRITE, base_delete, NULL, "delete a base without tasks"},
    ROUTE_END,
};
