/* What route handlers can reach: the daemon's shared state and the route tables of each API module.
 *
 * Adding an API module (daemon/api_<name>.c):
 *   1. write handlers `static void tasks_list(http_req *req)`; `cladd *app = req->app` gives the job
 *      queue, the configuration and (later) the store;
 *   2. export `const route api_<name>_routes[] = {..., ROUTE_END};` and declare it below; a pattern
 *      ends with the query parameters it takes ("/v1/x/{id}{?follow}"), any other is refused;
 *   3. add it to the table list in daemon/cladd_main.c, and document each route in docs/API.md.
 * Long work goes to app->jobs: job_submit for training-like jobs (then api_reply_job answers 202 or
 * streams progress for ?follow=1), job_queue_compute for short work such as prediction.
 */
#ifndef CLAD_DAEMON_API_H
#define CLAD_DAEMON_API_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "daemon/config.h"
#include "daemon/registry.h"
#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/metrics.h"
#include "daemon/notify.h"
#include "daemon/router.h"
#include "daemon/server.h"

/* The daemon, as req->app. Loop thread only. */
/* A live job this node accepted or claimed; its id is the same in the queue and in the store. */
typedef struct job_link {
    uint64_t id;
    bool claimed;          /* this node holds the job's lease (daemon/job_claim.c) */
    double progress_saved; /* uv_hrtime seconds of the last progress write (or of the submit: a job
                              shorter than APP_PROGRESS_SAVE_S costs no progress write at all) */
    double renewed;        /* uv_hrtime seconds of the claim or the last lease renewal */
} job_link;

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
    store *st;              /* the registry database; loop thread only (workers open readers) */
    char db_path[PATH_MAX]; /* the store: cfg.store, or $STATE_DIRECTORY/clad.db */
    struct node *node;      /* this daemon among the nodes sharing the store (daemon/node.h) */
    registry *reg;          /* loaded bases and adapters */
    struct registry_loader *loads; /* cache misses loaded on the pool (daemon/registry_load.h) */
    job_link *links;        /* jobs still live here */
    size_t n_links, cap_links;
    uv_timer_t claim_timer; /* daemon/job_claim.c */
    bool claim_timer_live;
    unsigned claim_ticks;
    unsigned n_storing;     /* uploads being queued in the store by the pool (api_train.c) */
} cladd;

/* --- the store (daemon/app_store.c) --- */

/* Opens the store in the state directory, marks jobs a previous run left unfinished as interrupted,
 * restores finished jobs for /v1/jobs and creates the registry. */
int app_store_open(cladd *app, clad_err *err);
void app_store_close(cladd *app);
/* The job hook: records every state change of a job in the store (a queued job the store cannot
 * record is refused). */
int app_job_state_hook(cladd *app, job *j, clad_err *err);
/* The progress hook: saves a running job's last progress event in the store (at most once a second), so
 * a job cut short by a crash still shows how far it got. */
void app_job_progress_hook(cladd *app, job *j, const json_t *event);
/* On the worker pool: deletes the data of ended jobs, wipes it from the store's files and checkpoints the
 * log, through a handle of its own (the loop's handle leaves all that to it: store_job_data_defer_wipe). */
void app_store_wipe(cladd *app);
/* The store's id of a live job; -1 when this node does not hold it (store_version_put refuses that). */
int64_t app_store_job_id(const cladd *app, const job *j);
/* The link of a live job, or NULL; app_link_add adds one (for a job being claimed or queued). */
job_link *app_link_find(const cladd *app, uint64_t id);
job_link *app_link_add(cladd *app, uint64_t id);
/* Removes the link l (from app_link_find; it and later links may move). */
void app_link_drop(cladd *app, job_link *l);
/* A job of the store as JSON, for one this node does not hold. */
json_t *app_store_job_json(const store_job *sj);
/* Peer uid of a request, as recorded in the store's audit log. */
int app_peer_uid(const http_req *req);

/* Route tables (each ends with ROUTE_END). */
extern const route api_system_routes[]; /* /v1/health, /v1/status, /v1/metrics */
extern const route api_jobs_routes[];   /* /v1/jobs... */
extern const route api_bases_routes[];  /* /v1/bases... */
extern const route api_tasks_routes[];  /* /v1/tasks... (registry reads, rollback, aliases) */
extern const route api_train_routes[];  /* POST /v1/tasks/{name}/train */
extern const route api_serve_routes[];
extern const route api_route_routes[];
extern const route api_merge_routes[];  /* POST /v1/merges/{name} */  /* predict and evaluate */
extern const route api_lifecycle_routes[]; /* promote; delete aliases, tasks, bases */
extern const route api_report_routes[];    /* matrix, report, loaded models */
extern const route api_interop_routes[]; /* PEFT and timm/HF exports and imports (daemon/api_interop.c) */
extern const route api_debug_routes[];  /* /v1/debug/...: only with --enable-test-routes, for tests */

/* Writes the per task series of /v1/metrics: serving counters and the active versions' held-out accuracy
 * and training seconds (daemon/api_report.c). */
void report_metrics_write(cladd *app, FILE *f);

/* Answers a job: its JSON with status (200, or 202 right after a submit), or with ?follow=1 an NDJSON
 * stream with that status: {"event":"job","job":{...}} first, then the job's progress events, then
 * {"event":"end","job":{...}} when it finishes. A bad ?follow value is answered 400. */
void api_reply_job(http_req *req, job *j, int status);

/* Parses a job id path parameter ("{id}"): a decimal number from 1. On failure answers 400 and returns
 * false. */
bool api_parse_id(http_req *req, const char *param, uint64_t *out);

/* Stores a base made or imported by the daemon and keeps it loaded; takes ownership of m (api_bases.c). */
/* Turns an uploaded body into a model; runs on a pool thread. */
typedef model *(*base_parse_fn)(const char *body, size_t len, const void *opts, clad_err *err);
/* Imports a base from the request's body: parse (with a copy of opts), check and hash on the pool, store
 * on the loop, reply 201 with the base or the error. Takes the request's body. */
void base_import_submit(http_req *req, const char *name, base_parse_fn parse, const void *opts, size_t opts_size);

/* Seconds since the daemon started. */
double api_uptime(const cladd *app);

#endif
