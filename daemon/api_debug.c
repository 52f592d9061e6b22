/* Test-only routes under /v1/debug, registered only when cladd runs with --enable-test-routes.
 *
 * They let the test suite drive the job system, the compute pool and the body handling end to end
 * through the real socket without the training engine:
 *   POST /v1/debug/sleep-job  a job of `steps` steps of `step_ms` each, posting progress every step,
 *                             honouring cancel between steps, optionally failing at step `fail_at`,
 *                             then `tail_ms` of work that does not look at cancel requests;
 *   POST /v1/debug/compute    sleeps `ms` on the compute pool, the way a prediction would run;
 *   POST /v1/debug/echo       answers the body's size and FNV-1a hash.
 * They are not part of the API and must never be enabled in production.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/api.h"

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Reads an optional integer field within [lo, hi]; answers 400 and returns false when it is bad. */
static bool get_int(http_req *req, const char *key, long long lo, long long hi, long long *out)
{
    json_t *v = json_object_get(req->json, key);
    if (!v) return true;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        http_reply_error(req, CLAD_EINVAL, "'%s' must be a whole number from %lld to %lld", key, lo, hi);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

/* --- sleep job --------------------------------------------------------------------------------------- */

typedef struct sleep_arg {
    int steps;
    int step_ms;
    int fail_at;
    int tail_ms;   /* work after the last step (or after failing) that does not look at stop requests */
} sleep_arg;

static int sleep_run(job *j, void *argp, json_t **result, clad_err *err)
{
    const sleep_arg *a = argp;
    for (int step = 1; step <= a->steps; step++) {
        if (job_should_stop(j)) return clad_err_set(err, CLAD_ECANCELLED, "stopped before step %d", step);
        sleep_ms((unsigned)a->step_ms);
        char status[96];
        snprintf(status, sizeof status, "sleep job %llu: step %d/%d", (unsigned long long)job_id(j), step,
                 a->steps);
        job_post(j, json_pack("{s:i,s:i,s:s}", "done", step, "total", a->steps, "status", status));
        if (step == a->fail_at) {
            clad_err_set(err, CLAD_EINVAL, "failed on purpose at step %d", step);
            sleep_ms((unsigned)a->tail_ms);
            return CLAD_EINVAL;
        }
    }
    sleep_ms((unsigned)a->tail_ms);
    *result = json_pack("{s:i}", "steps", a->steps);
    return 0;
}

static const job_kind sleep_kind = {
    .name = "sleep",
    .run = sleep_run,
    .free_arg = free,
};

static void sleep_job(http_req *req)
{
    cladd *app = req->app;
    long long steps = 10, step_ms = 100, fail_at = 0, tail_ms = 0;
    if (!get_int(req, "steps", 1, 100000, &steps) || !get_int(req, "step_ms", 0, 60000, &step_ms) ||
        !get_int(req, "fail_at", 0, 100000, &fail_at) || !get_int(req, "tail_ms", 0, 60000, &tail_ms))
        return;
    json_t *lane_v = json_object_get(req->json, "lane");
    if (lane_v && !json_is_string(lane_v)) {
        http_reply_error(req, CLAD_EINVAL, "'lane' must be a string");
        return;
    }
    sleep_arg *a = malloc(sizeof *a);
    if (!a) {
        http_reply_error(req, CLAD_ENOMEM, "out of memory");
        return;
    }
    *a = (sleep_arg){(int)steps, (int)step_ms, (int)fail_at, (int)tail_ms};
    job_spec spec = {
        .kind = &sleep_kind,
        .lane = lane_v ? json_string_value(lane_v) : "debug",
        .arg = a,
        .params = json_pack("{s:I,s:I,s:I,s:I}", "steps", steps, "step_ms", step_ms, "fail_at", fail_at, "tail_ms",
                            tail_ms),
        .owner_uid = req->peer->uid,
    };
    job *j = NULL;
    clad_err err = {0};
    if (job_submit(app->jobs, &spec, &j, &err) != 0) {
        free(a);
        http_reply_err(req, &err);
        return;
    }
    api_reply_job(req, j, 202);
}

/* --- compute ------------------------------------------------------------------------------------------ */

typedef struct compute_arg {
    http_req *req;
    unsigned ms;
    uint64_t queued_ns, started_ns;
} compute_arg;

static int compute_run(void *argp, clad_err *err)
{
    compute_arg *a = argp;
    a->started_ns = uv_hrtime();
    sleep_ms(a->ms);
    return 0;
}

static void compute_done(void *argp, int status, const clad_err *err)
{
    compute_arg *a = argp;
    if (status != 0) http_reply_err(a->req, err);
    else
        http_reply_json(a->req, 200, json_pack("{s:i,s:f}", "slept_ms", a->ms, "waited_ms",
                                               (double)(a->started_ns - a->queued_ns) * 1e-6));
    free(a);
}

static void compute(http_req *req)
{
    cladd *app = req->app;
    long long ms = 10;
    if (!get_int(req, "ms", 0, 10000, &ms)) return;
    compute_arg *a = calloc(1, sizeof *a);
    if (!a) {
        http_reply_error(req, CLAD_ENOMEM, "out of memory");
        return;
    }
    a->req = req;
    a->ms = (unsigned)ms;
    a->queued_ns = uv_hrtime();
    clad_err err = {0};
    if (job_queue_compute(app->jobs, compute_run, compute_done, a, &err) != 0) {
        free(a);
        http_reply_err(req, &err);
    }
}

/* --- echo --------------------------------------------------------------------------------------------- */

static void echo(http_req *req)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < req->body_len; i++) {
        h ^= (unsigned char)req->body[i];
        h *= 1099511628211ull;
    }
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    char media[128];
    http_reply_json(req, 200, json_pack("{s:I,s:s,s:s}", "bytes", (json_int_t)req->body_len, "fnv1a", hex,
                                        "content_type", http_req_media_type(req, media, sizeof media)));
}

const route api_debug_routes[] = {
    {"POST", "/v1/debug/sleep-job{?follow}", ROUTE_WRITE | ROUTE_JSON, sleep_job, NULL,
     "test only: a job of N steps of S ms"},
    {"POST", "/v1/debug/compute", ROUTE_READ | ROUTE_JSON, compute, NULL, "test only: sleep on the compute pool"},
    {"POST", "/v1/debug/echo", ROUTE_READ, echo, "application/octet-stream,application/json,text/plain",
     "test only: size and hash of the body"},
    ROUTE_END,
};
