/* Routes /v1/jobs: list, inspect, follow and cancel jobs; and the job reply helper other modules use. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api.h"

#define LIST_DEFAULT 100
#define LIST_MAX 1000

bool api_parse_id(http_req *req, const char *param, uint64_t *out)
{
    const char *s = http_req_param(req, param);
    char *end = NULL;
    errno = 0;
    unsigned long long v = s && *s >= '1' && *s <= '9' ? strtoull(s, &end, 10) : 0;
    if (!s || v == 0 || errno || *end) {
        http_reply_error(req, CLAD_EINVAL, "%s must be a positive whole number, not '%.40s'", param,
                         s ? s : "");
        return false;
    }
    *out = v;
    return true;
}

double api_uptime(const cladd *app)
{
    return (double)uv_hrtime() * 1e-9 - app->started_mono;
}

/* --- following a job ------------------------------------------------------------------------------- */

typedef struct job_stream {
    http_req *req;
    job_follower *follower;
} job_stream;

static void stream_event(job *j, const json_t *event, bool last, void *data)
{
    job_stream *s = data;
    http_stream_json(s->req, json_incref((json_t *)event));
    if (last) {
        /* The follower is removed by the queue after the last event. */
        http_req_on_gone(s->req, NULL, NULL);
        http_stream_end(s->req);
        free(s);
    }
}

static void stream_gone(http_req *req, void *data)
{
    job_stream *s = data;
    job_unfollow(s->follower);
    http_stream_end(req);
    free(s);
}

void api_reply_job(http_req *req, job *j, int status)
{
    bool follow = false;
    clad_err err = {0};
    if (http_req_query_bool(req, "follow", &follow, &err) != 0) {
        http_reply_err(req, &err);
        return;
    }
    if (!follow) {
        http_reply_json(req, status, job_to_json(j));
        return;
    }
    http_stream_start(req, status, HTTP_NDJSON);
    http_stream_json(req, json_pack("{s:s,s:o}", "event", "job", "job", job_to_json(j)));
    job_stream *s = job_state_final(job_get_state(j)) ? NULL : calloc(1, sizeof *s);
    if (s) {
        s->req = req;
        s->follower = job_follow(j, stream_event, s);
    }
    if (!s || !s->follower) {
        /* Finished already (or out of memory): the snapshot is the whole story. */
        free(s);
        http_stream_json(req, json_pack("{s:s,s:o}", "event", "end", "job", job_to_json(j)));
        http_stream_end(req);
        return;
    }
    http_req_on_gone(req, stream_gone, s);
}

/* --- routes ---------------------------------------------------------------------------------------- */

/* Whether this node's view of a job it holds is the current one: it runs the job (or ran it), or the job
 * is not in the store. A job it accepted and still holds as queued may meanwhile run on another node, so
 * the store tells. */
static bool seen_here(const cladd *app, const job *j)
{
    const job_link *l = app_link_find(app, job_id(j));
    return !l || l->claimed || job_get_state(j) != JOB_QUEUED;
}

/* Jobs of every node from the store, newest first: a job this node holds as it sees it (live progress),
 * the others as their owners last wrote them. NULL when the store cannot be read. */
static json_t *store_list_json(cladd *app, int state, const char *lane, size_t limit)
{
    store_job *sj = NULL;
    size_t n = 0;
    clad_err err = {0};
    /* Filters apply after reading, so read them all when there is one. */
    if (store_jobs_list(app->st, NULL, state >= 0 || lane ? 0 : limit, &sj, &n, &err) != 0) return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; i < n && json_array_size(arr) < limit; i++) {
        job *j = job_find(app->jobs, (uint64_t)sj[i].id);
        json_t *o = j && (seen_here(app, j) || sj[i].state == STORE_JOB_QUEUED) ? job_to_json(j)
                                                                                : app_store_job_json(&sj[i]);
        const char *st = json_string_value(json_object_get(o, "state"));
        const char *ln = json_string_value(json_object_get(o, "lane"));
        if ((state >= 0 && (!st || job_state_parse(st) != state)) || (lane && (!ln || strcmp(ln, lane)))) {
            json_decref(o);
            continue;
        }
        json_array_append_new(arr, o);
    }
    store_jobs_free(sj, n);
    return arr;
}

static void jobs_list(http_req *req)
{
    cladd *app = req->app;
    int state = -1;
    const char *s = http_req_query(req, "state");
    if (s && (state = job_state_parse(s)) < 0) {
        http_reply_error(req, CLAD_EINVAL,
                         "state must be one of queued, running, succeeded, failed, cancelled, interrupted");
        return;
    }
    size_t limit = LIST_DEFAULT;
    const char *l = http_req_query(req, "limit");
    if (l) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(l, &end, 10);
        if (!*l || *end || errno || v < 1 || v > LIST_MAX) {
            http_reply_error(req, CLAD_EINVAL, "limit must be 1 to %d", LIST_MAX);
            return;
        }
        limit = v;
    }
    const char *lane = http_req_query(req, "lane");
    json_t *jobs = app->st ? store_list_json(app, state, lane, limit) : NULL;
    if (!jobs) jobs = job_queue_list_json(app->jobs, state, lane, limit);
    http_reply_json(req, 200, json_pack("{s:o}", "jobs", jobs));
}

/* A job this node does not hold, from the store (replied 404 when unknown); NULL after a reply. */
static json_t *store_job_json(http_req *req, uint64_t id)
{
    cladd *app = req->app;
    store_job *sj = NULL;
    clad_err err = {0};
    if (!app->st) clad_err_set(&err, CLAD_ENOTFOUND, "unknown job %llu", (unsigned long long)id);
    else store_job_get(app->st, (int64_t)id, &sj, &err);
    if (!sj) {
        http_reply_err(req, &err);
        return NULL;
    }
    json_t *o = app_store_job_json(sj);
    store_job_free(sj);
    return o;
}

static void jobs_get(http_req *req)
{
    cladd *app = req->app;
    uint64_t id;
    if (!api_parse_id(req, "id", &id)) return;
    job *j = job_find(app->jobs, id);
    store_job *sj = NULL;
    if (j && !seen_here(app, j) && app->st) store_job_get(app->st, (int64_t)id, &sj, NULL);
    bool elsewhere = sj && sj->state != STORE_JOB_QUEUED;
    store_job_free(sj);
    if (j && !elsewhere) {
        api_reply_job(req, j, 200);
        return;
    }
    json_t *o = store_job_json(req, id); /* run by another node: progress as it last saved it */
    if (o) http_reply_json(req, 200, o);
}

static void jobs_cancel(http_req *req)
{
    cladd *app = req->app;
    uint64_t id;
    if (!api_parse_id(req, "id", &id)) return;
    job *j = job_find(app->jobs, id);
    job_link *l = app_link_find(app, id);
    clad_err err = {0};
    /* Not running here: the store decides (a queued job is cancelled now wherever it was accepted; a
     * running one's owner sees the request at its next lease renewal). */
    if (app->st && (!j || !l || !l->claimed) && !(j && job_state_final(job_get_state(j)))) {
        store_job_state after;
        if (store_job_request_cancel(app->st, (int64_t)id, app_peer_uid(req), &after, &err) != 0) {
            http_reply_err(req, &err);
            return;
        }
        if (j && after == STORE_JOB_RUNNING) job_abandon(app->jobs, j); /* another node has it */
        else if (j) job_cancel(app->jobs, j, &err);
        json_t *o = after == STORE_JOB_CANCELLED && j ? job_to_json(j) : store_job_json(req, id);
        if (o) http_reply_json(req, after == STORE_JOB_CANCELLED ? 200 : 202, o);
        return;
    }
    if (!j) {
        http_reply_error(req, CLAD_ENOTFOUND, "unknown job %llu", (unsigned long long)id);
        return;
    }
    if (job_cancel(app->jobs, j, &err) != 0) {
        http_reply_err(req, &err);
        return;
    }
    /* 200 when the job is cancelled already, 202 when a running job was asked to stop at its next check. */
    http_reply_json(req, job_state_final(job_get_state(j)) ? 200 : 202, job_to_json(j));
}

const route api_jobs_routes[] = {
    {"GET", "/v1/jobs{?state,lane,limit}", ROUTE_READ, jobs_list, NULL, "list jobs, newest first (?state=, ?lane=, ?limit=)"},
    {"GET", "/v1/jobs/{id}{?follow}", ROUTE_READ, jobs_get, NULL, "one job; ?follow=1 streams its progress as NDJSON"},
    {"DELETE", "/v1/jobs/{id}", ROUTE_WRITE, jobs_cancel, NULL, "cancel a queued or running job"},
    ROUTE_END,
};
