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
    json_t *jobs = job_queue_list_json(app->jobs, state, http_req_query(req, "lane"), limit);
    http_reply_json(req, 200, json_pack("{s:o}", "jobs", jobs));
}

static job *find_job(http_req *req)
{
    cladd *app = req->app;
    uint64_t id;
    if (!api_parse_id(req, "id", &id)) return NULL;
    job *j = job_find(app->jobs, id);
    if (!j) http_reply_error(req, CLAD_ENOTFOUND, "unknown job %llu", (unsigned long long)id);
    return j;
}

static void jobs_get(http_req *req)
{
    job *j = find_job(req);
    if (j) api_reply_job(req, j, 200);
}

static void jobs_cancel(http_req *req)
{
    cladd *app = req->app;
    job *j = find_job(req);
    if (!j) return;
    clad_err err = {0};
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
