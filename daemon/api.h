/* What route handlers can reach: the daemon's shared state and the route tables of each API module.
 *
 * Adding an API module (daemon/api_<name>.c):
 *   1. write handlers `static void tasks_list(http_req *req)`; `cladd *app = req->app` gives the job
 *      queue, the configuration and (later) the store;
 *   2. export `const route api_<name>_routes[] = {..., ROUTE_END};` and declare it below;
 *   3. add it to the table list in daemon/cladd_main.c, and document each route in docs/API.md.
 * Long work goes to app->jobs: job_submit for training-like jobs (then api_reply_job answers 202 or
 * streams progress for ?follow=1), job_queue_compute for short work such as prediction.
 */
#ifndef CLAD_DAEMON_API_H
#define CLAD_DAEMON_API_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "daemon/config.h"
#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/metrics.h"
#include "daemon/notify.h"
#include "daemon/router.h"
#include "daemon/server.h"

/* The daemon, as req->app. Loop thread only. */
typedef struct cladd {
    uv_loop_t *loop;
    cladd_config cfg;
    server *srv;
    router *rt;
    job_queue *jobs;
    metrics *metrics;
    notifier *notify;
    double started_wall;    /* Unix seconds */
    double started_mono;    /* uv_hrtime() in seconds */
    unsigned threadpool_size;
    bool stopping;
} cladd;

/* Route tables (each ends with ROUTE_END). */
extern const route api_system_routes[]; /* /v1/health, /v1/status, /v1/metrics */
extern const route api_jobs_routes[];   /* /v1/jobs... */
extern const route api_debug_routes[];  /* /v1/debug/...: only with --enable-test-routes, for tests */

/* Answers a job: its JSON with status (200, or 202 right after a submit), or with ?follow=1 an NDJSON
 * stream with that status: {"event":"job","job":{...}} first, then the job's progress events, then
 * {"event":"end","job":{...}} when it finishes. A bad ?follow value is answered 400. */
void api_reply_job(http_req *req, job *j, int status);

/* Parses a job id path parameter ("{id}"): a decimal number from 1. On failure answers 400 and returns
 * false. */
bool api_parse_id(http_req *req, const char *param, uint64_t *out);

/* Seconds since the daemon started. */
double api_uptime(const cladd *app);

#endif
