/* What clad knows, for people and dashboards:
 *
 *   GET /v1/bases/{name}/matrix   the accuracy matrix of the tasks on a base (and cross-evaluations)
 *   GET /v1/bases/{name}/report   one self-contained HTML page with SVG plots (io/report_html.c)
 *   GET /v1/loaded                what the daemon holds in memory: bases and adapter versions
 *
 * and the per task series of /v1/metrics (report_metrics_write). Everything is read from the store on the
 * loop thread; these are small reads (metadata, no blobs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api.h"
#include "daemon/api_util.h"
#include "daemon/serve_batch.h"
#include "daemon/task_counters.h"
#include "io/report_html.h"

#ifndef CLAD_VERSION
#define CLAD_VERSION "unknown"
#endif

/* Every version on a base in the order it was committed (the stream), as version_json(full). */
static int stream_versions(cladd *app, const char *base, json_t **out, clad_err *err)
{
    store_base *b = NULL;
    int rc = store_base_get(app->st, base, 0, &b, err);
    store_base_free(b);
    if (rc) return rc;
    store_task *tasks = NULL;
    size_t n = 0;
    if ((rc = store_tasks_list(app->st, &tasks, &n, err))) return rc;
    json_t *all = json_array();
    for (size_t i = 0; !rc && i < n; i++) {
        if (strcmp(tasks[i].base, base)) continue;
        store_version *vs = NULL;
        size_t nv = 0;
        rc = store_versions_list(app->st, tasks[i].name, &vs, &nv, err);
        for (size_t k = 0; !rc && k < nv; k++) json_array_append_new(all, version_json(&vs[k], true));
        store_versions_free(vs, nv);
    }
    store_tasks_free(tasks, n);
    if (rc) {
        json_decref(all);
        return rc;
    }
    /* Insertion sort by creation time (then task and number, for equal milliseconds): small lists. */
    size_t m = json_array_size(all);
    for (size_t i = 1; i < m; i++)
        for (size_t k = i; k > 0; k--) {
            json_t *a = json_array_get(all, k - 1), *c = json_array_get(all, k);
            json_int_t ta = json_integer_value(json_object_get(a, "created_ms"));
            json_int_t tc = json_integer_value(json_object_get(c, "created_ms"));
            if (ta < tc || (ta == tc && json_integer_value(json_object_get(a, "version")) <=
                                            json_integer_value(json_object_get(c, "version"))))
                break;
            json_incref(a);
            json_array_set(all, k - 1, c);
            json_array_set_new(all, k, a);
        }
    *out = all;
    return 0;
}

static json_t *cell_json(const store_eval *e, json_t *detail)
{
    return json_pack("{s:I,s:f,s:f,s:I,s:o,s:O,s:I}", "version", (json_int_t)e->version.version, "accuracy", e->accuracy,
                     "loss", e->loss, "samples", (json_int_t)e->n_samples, "data_sha256",
                     e->data_sha256[0] ? json_string(e->data_sha256) : json_null(), "data_name",
                     json_object_get(detail, "data_name") ? json_object_get(detail, "data_name") : json_null(),
                     "time_ms", (json_int_t)e->time_ms);
}

/* The matrix of base's tasks from the recorded evaluations (see daemon/eval_record.h). */
static int matrix_json(cladd *app, const char *base, json_t *stream, json_t **out, clad_err *err)
{
    json_t *columns = json_array(), *rows = json_array(), *cross = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(stream, i, v) {
        const char *task = json_string_value(json_object_get(v, "task"));
        bool seen = false;
        for (size_t k = 0; k < json_array_size(columns) && !seen; k++)
            seen = !strcmp(json_string_value(json_array_get(columns, k)), task);
        if (!seen) json_array_append_new(columns, json_string(task));
        json_array_append_new(rows, json_pack("{s:{s:s,s:O},s:{}}", "after", "task", task, "version",
                                              json_object_get(v, "version"), "cells"));
    }
    int rc = 0;
    for (size_t c = 0; !rc && c < json_array_size(columns); c++) {
        const char *task = json_string_value(json_array_get(columns, c));
        store_eval *ev = NULL;
        size_t n = 0;
        rc = store_evals_list(app->st, task, 0, &ev, &n, err);
        for (size_t k = 0; !rc && k < n; k++) { /* oldest first: a later evaluation replaces an earlier one */
            json_t *d = json_loads(ev[k].detail_json ? ev[k].detail_json : "{}", 0, NULL);
            json_t *after = json_object_get(d, "after");
            if (json_is_true(json_object_get(d, "own_data")) && json_is_object(after)) {
                json_t *row;
                size_t r;
                json_array_foreach(rows, r, row) {
                    json_t *a = json_object_get(row, "after");
                    if (json_equal(json_object_get(a, "task"), json_object_get(after, "task")) &&
                        json_equal(json_object_get(a, "version"), json_object_get(after, "version")))
                        json_object_set_new(json_object_get(row, "cells"), task, cell_json(&ev[k], d));
                }
            } else if (json_is_string(json_object_get(d, "data_task"))) {
                json_t *x = cell_json(&ev[k], d);
                json_object_set_new(x, "task", json_string(task));
                json_object_set(x, "data_task", json_object_get(d, "data_task"));
                json_array_append_new(cross, x);
            }
            json_decref(d);
        }
        store_evals_free(ev, n);
    }
    if (rc) {
        json_decref(columns);
        json_decref(rows);
        json_decref(cross);
        return rc;
    }
    *out = json_pack("{s:s,s:o,s:o,s:o}", "base", base, "tasks", columns, "rows", rows, "cross", cross);
    return 0;
}

/* The stream of versions on the route's base and its matrix (new references); answers the error and
 * returns false. */
static bool stream_and_matrix(http_req *req, json_t **stream, json_t **m)
{
    const char *base = http_req_param(req, "name");
    clad_err err = {0};
    *stream = *m = NULL;
    if (stream_versions(req->app, base, stream, &err) || matrix_json(req->app, base, *stream, m, &err)) {
        json_decref(*stream);
        http_reply_err(req, &err);
        return false;
    }
    return true;
}

static void matrix_get(http_req *req)
{
    json_t *stream, *m;
    if (!stream_and_matrix(req, &stream, &m)) return;
    json_decref(stream);
    http_reply_json(req, 200, m);
}

/* Alias histories of the tasks in the stream: {"task": [moves...]}. */
static json_t *alias_histories(cladd *app, json_t *stream)
{
    json_t *out = json_object();
    size_t i;
    json_t *v;
    json_array_foreach(stream, i, v) {
        const char *task = json_string_value(json_object_get(v, "task"));
        if (json_object_get(out, task)) continue;
        store_alias_move *moves = NULL;
        size_t n = 0;
        json_t *list = json_array();
        if (store_alias_history(app->st, task, NULL, &moves, &n, NULL) == 0)
            for (size_t k = 0; k < n; k++)
                json_array_append_new(list, json_pack("{s:s,s:s,s:I,s:I,s:I,s:s}", "alias", moves[k].alias, "action",
                                                      moves[k].action, "from", (json_int_t)moves[k].old_version, "to",
                                                      (json_int_t)moves[k].new_version, "time_ms",
                                                      (json_int_t)moves[k].time_ms, "reason", moves[k].reason));
        store_alias_history_free(moves);
        json_object_set_new(out, task, list);
    }
    return out;
}

static void report_get(http_req *req)
{
    cladd *app = req->app;
    const char *base = http_req_param(req, "name");
    json_t *stream, *m;
    clad_err err = {0};
    if (!stream_and_matrix(req, &stream, &m)) return;
    json_t *doc = json_pack("{s:s,s:s,s:o,s:o,s:o}", "base", base, "clad_version", CLAD_VERSION, "matrix", m,
                            "versions", stream, "aliases", alias_histories(app, stream));
    char *html = NULL;
    size_t len = 0;
    int rc = report_html_render(doc, &html, &len, &err);
    json_decref(doc);
    if (rc) {
        http_reply_err(req, &err);
        return;
    }
    http_reply(req, 200, "text/html; charset=utf-8", html, len, NULL);
    free(html);
}

static void loaded_get(http_req *req)
{
    cladd *app = req->app;
    json_t *bases = json_array(), *adapters = json_array();
    const loaded_base *b;
    const loaded_adapter *a;
    for (size_t i = 0; (b = registry_base_at(app->reg, i)); i++)
        if (b->name[0])
            json_array_append_new(bases, json_pack("{s:s,s:s,s:I,s:i,s:I}", "name", b->name, "sha256", b->sha256, "bytes",
                                                   (json_int_t)b->bytes, "in_use", b->refs - b->cache_refs, /* not the cached adapters on it */
                                                   "last_used_ms", (json_int_t)b->last_used_ms));
    for (size_t i = 0; (a = registry_adapter_at(app->reg, i)); i++)
        if (!a->forgotten)
            json_array_append_new(adapters, json_pack("{s:s,s:I,s:s,s:s,s:I,s:i,s:I,s:I}", "task", a->task, "version",
                                                      (json_int_t)a->version, "kind", a->kind, "base", a->base->name,
                                                      "bytes", (json_int_t)a->bytes, "in_use", a->refs, "hits",
                                                      (json_int_t)a->hits, "last_used_ms", (json_int_t)a->last_used_ms));
    http_reply_json(req, 200, json_pack("{s:o,s:o}", "bases", bases, "adapters", adapters));
}

void report_metrics_write(cladd *app, FILE *f)
{
    task_counters_write(f);
    serve_batch_metrics_write(f);
    store_task *tasks = NULL;
    size_t n = 0;
    if (store_tasks_list(app->st, &tasks, &n, NULL)) return;
    fputs("# HELP clad_task_active_holdout_accuracy Held-out accuracy of each task's active version.\n"
          "# TYPE clad_task_active_holdout_accuracy gauge\n", f);
    json_t *train = json_array();
    for (size_t i = 0; i < n; i++) {
        store_version *v = NULL;
        if (store_version_get_alias(app->st, tasks[i].name, "active", 0, &v, NULL)) continue;
        json_t *m = json_loads(v->metrics_json ? v->metrics_json : "{}", 0, NULL);
        json_t *acc = json_object_get(m, "holdout_accuracy"), *secs = json_object_get(m, "train_seconds");
        if (json_is_number(acc))
            fprintf(f, "clad_task_active_holdout_accuracy{task=\"%s\",version=\"%lld\"} %.6g\n", v->task,
                    (long long)v->version, json_number_value(acc));
        if (json_is_number(secs))
            json_array_append_new(train, json_pack("{s:s,s:I,s:f}", "task", v->task, "version", (json_int_t)v->version,
                                                   "s", json_number_value(secs)));
        json_decref(m);
        store_version_free(v);
    }
    store_tasks_free(tasks, n);
    fputs("# HELP clad_task_active_training_seconds Training time of each task's active version.\n"
          "# TYPE clad_task_active_training_seconds gauge\n", f);
    size_t i;
    json_t *t;
    json_array_foreach(train, i, t)
        fprintf(f, "clad_task_active_training_seconds{task=\"%s\",version=\"%lld\"} %.3f\n",
                json_string_value(json_object_get(t, "task")), (long long)json_integer_value(json_object_get(t, "version")),
                json_number_value(json_object_get(t, "s")));
    json_decref(train);
}

const route api_report_routes[] = {
    {"GET", "/v1/bases/{name}/matrix", ROUTE_READ, matrix_get, NULL, "the accuracy matrix of a base's tasks"},
    {"GET", "/v1/bases/{name}/report", ROUTE_READ, report_get, NULL, "an HTML report with SVG plots"},
    {"GET", "/v1/loaded", ROUTE_READ, loaded_get, NULL, "bases and adapters loaded in memory"},
    ROUTE_END,
};
