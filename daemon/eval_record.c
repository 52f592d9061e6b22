/* Recording evaluations with their data's provenance; see eval_record.h. */
#include "daemon/eval_record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api_util.h"

#define DATA_NAME_MAX 200

bool eval_record_check(http_req *req)
{
    cladd *app = req->app;
    const char *name = http_req_query(req, "data_name"), *task = http_req_query(req, "data_task");
    if (name) {
        size_t n = strlen(name);
        bool ok = n && n <= DATA_NAME_MAX;
        for (size_t i = 0; ok && i < n; i++) ok = (unsigned char)name[i] >= 0x20 && name[i] != 0x7f;
        if (!ok) {
            http_reply_error(req, CLAD_EINVAL, "query parameter 'data_name' must be 1 to %d printable characters",
                             DATA_NAME_MAX);
            return false;
        }
    }
    if (task) {
        clad_err err = {0};
        store_task *t = NULL;
        if (!require_name(req, "task", task)) return false;
        if (store_task_get(app->st, task, &t, &err)) {
            http_reply_err(req, &err);
            return false;
        }
        store_task_free(t);
    }
    return true;
}

/* The latest version committed on the same base: the "after" row of the accuracy matrix. */
static int latest_on_base(store *st, const char *base, store_ref *out)
{
    store_task *tasks = NULL;
    size_t n = 0;
    int64_t best_ms = -1;
    if (store_tasks_list(st, &tasks, &n, NULL)) return -1;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(tasks[i].base, base) || !tasks[i].latest_version) continue;
        store_version *v = NULL;
        if (store_version_get(st, tasks[i].name, tasks[i].latest_version, 0, &v, NULL) == 0) {
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

/* The task whose data this is, by its sha256: another task's training data or its recorded test data.
 * Writes the name to out and returns true when found. */
static bool data_owner(store *st, const char *base, const char *self, const char *sha, char *out, size_t size)
{
    store_task *tasks = NULL;
    size_t n = 0;
    bool found = false;
    if (store_tasks_list(st, &tasks, &n, NULL)) return false;
    for (size_t i = 0; i < n && !found; i++) {
        if (strcmp(tasks[i].base, base) || !strcmp(tasks[i].name, self)) continue;
        store_version *vs = NULL;
        store_eval *ev = NULL;
        size_t nv = 0, ne = 0;
        if (store_versions_list(st, tasks[i].name, &vs, &nv, NULL) == 0)
            for (size_t k = 0; k < nv && !found; k++) found = !strcmp(vs[k].data_sha256, sha);
        if (!found && store_evals_list(st, tasks[i].name, 0, &ev, &ne, NULL) == 0)
            for (size_t k = 0; k < ne && !found; k++) {
                json_t *d = json_loads(ev[k].detail_json ? ev[k].detail_json : "{}", 0, NULL);
                found = !strcmp(ev[k].data_sha256, sha) && json_is_true(json_object_get(d, "own_data"));
                json_decref(d);
            }
        if (found) snprintf(out, size, "%s", tasks[i].name);
        store_versions_free(vs, nv);
        store_evals_free(ev, ne);
    }
    store_tasks_free(tasks, n);
    return found;
}

void eval_record_place(const char *db_path, const http_req *req, const char *task, const char *base,
                       const char *data_sha, eval_place *p)
{
    const char *given = http_req_query(req, "data_task");
    snprintf(p->owner, sizeof p->owner, "%s", given ? given : task);
    store *rd = store_open_reader(db_path, NULL);
    if (rd && !given) data_owner(rd, base, task, data_sha, p->owner, sizeof p->owner);
    p->own = !strcmp(p->owner, task);
    p->placed = rd && p->own && latest_on_base(rd, base, &p->after) == 0;
    store_close(rd);
}

json_t *eval_record(cladd *app, const http_req *req, const char *task, int64_t version, const eval_place *p,
                    const eval_result *ev, const char *data_sha, clad_err *err)
{
    const char *name = http_req_query(req, "data_name");
    const char *owner = p->owner;
    bool own = p->own, placed = p->placed;
    store_ref after = p->after;
    json_t *detail = json_pack("{s:s,s:b}", "data_task", owner, "own_data", own);
    json_object_set_new(detail, "data_name", name ? json_string(name) : json_null());
    if (placed)
        json_object_set_new(detail, "after", json_pack("{s:s,s:I}", "task", after.task, "version", (json_int_t)after.version));
    char *text = json_dumps(detail, JSON_COMPACT);
    store_eval e = {.version = {.version = version}, .accuracy = ev->accuracy, .loss = ev->loss, .n_samples = ev->n,
                    .detail_json = text};
    snprintf(e.version.task, sizeof e.version.task, "%s", task);
    memcpy(e.data_sha256, data_sha, sizeof e.data_sha256);
    int rc = 0;
    /* Recording is a write: only for peers that may write; others just get the numbers. */
    if (!router_peer_may_write(app->rt, req->peer, NULL, 0)) rc = clad_err_set(err, CLAD_EDENIED, "not recorded");
    else rc = store_eval_add(app->st, &e, app_peer_uid(req), NULL, err);
    if (!rc && placed) {
        store_acc_entry ae = {.after = after, .evaluated = e.version, .accuracy = ev->accuracy, .loss = ev->loss,
                              .n_samples = ev->n};
        rc = store_matrix_add(app->st, &ae, 1, app_peer_uid(req), err);
    }
    free(text);
    /* The reply is the recorded detail and what became of it. */
    json_object_set_new(detail, "recorded", json_boolean(!rc));
    json_object_set_new(detail, "data_sha256", json_string(data_sha));
    return detail;
}
