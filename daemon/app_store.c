/* The daemon's side of the store: opening it, persisting job states, restoring job history. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api.h"
#include "daemon/log.h"
#include "daemon/registry_load.h"

/* Adapters and bases kept loaded beyond what requests and jobs hold (LRU). */
#define APP_ADAPTER_CACHE_BYTES (256u << 20)
#define APP_BASE_CACHE_BYTES ((size_t)1 << 30)

/* A running job's progress is written to the store at most this often (a write transaction each). */
#define APP_PROGRESS_SAVE_S 1.0

typedef struct job_link {
    uint64_t queue_id;
    int64_t store_id;
    double progress_saved; /* uv_hrtime seconds of the last progress write (or of the submit: a job
                              shorter than APP_PROGRESS_SAVE_S costs no progress write at all) */
} job_link;

int app_peer_uid(const http_req *req)
{
    return (int)req->peer->uid;
}

static job_state from_store_state(store_job_state s)
{
    switch (s) {
    case STORE_JOB_QUEUED: return JOB_QUEUED;
    case STORE_JOB_RUNNING: return JOB_RUNNING;
    case STORE_JOB_SUCCEEDED: return JOB_SUCCEEDED;
    case STORE_JOB_FAILED: return JOB_FAILED;
    case STORE_JOB_CANCELLED: return JOB_CANCELLED;
    default: return JOB_INTERRUPTED;
    }
}

/* The stored progress as the job's last event, NULL for none ("{}", the column's default). */
static json_t *restored_progress(const char *text)
{
    json_error_t je;
    json_t *p = text ? json_loads(text, 0, &je) : NULL;
    if (p && json_object_size(p) == 0) {
        json_decref(p);
        p = NULL;
    }
    return p;
}

/* Loads the newest finished jobs back into the queue so /v1/jobs lists them after a restart. */
static void restore_jobs(cladd *app)
{
    store_job *jobs = NULL;
    size_t n = 0;
    clad_err err = {0};
    if (store_jobs_list(app->st, NULL, app->cfg.job_history, &jobs, &n, &err) != 0) {
        log_warning("cannot list earlier jobs: %s", err.msg);
        return;
    }
    for (size_t i = n; i-- > 0;) { /* oldest first */
        store_job *sj = &jobs[i];
        job_queue_set_next_id(app->jobs, (uint64_t)sj->id + 1);
        json_error_t je;
        job_record rec = {
            .id = (uint64_t)sj->id,
            .kind = sj->kind,
            .lane = sj->lane[0] ? sj->lane : "-",
            .state = from_store_state(sj->state),
            .created = (double)sj->created_ms / 1e3,
            .started = (double)sj->started_ms / 1e3,
            .finished = (double)sj->finished_ms / 1e3,
            .params = sj->request_json ? json_loads(sj->request_json, 0, &je) : NULL,
            .result = sj->result_json ? json_loads(sj->result_json, 0, &je)
                      : sj->result_version ? json_pack("{s:I}", "version", (json_int_t)sj->result_version) : NULL,
            .progress = restored_progress(sj->progress_json),
            .error_code = sj->error_code,
            .error_message = sj->error_msg,
            .owner_uid = (uid_t)sj->peer_uid,
        };
        clad_err rerr = {0};
        if (job_queue_restore(app->jobs, &rec, &rerr) != 0) log_debug("job %lld not restored: %s", (long long)sj->id, rerr.msg);
    }
    store_jobs_free(jobs, n);
}

int app_store_open(cladd *app, clad_err *err)
{
    if (app->cfg.store[0]) snprintf(app->db_path, sizeof app->db_path, "%s", app->cfg.store);
    else if (snprintf(app->db_path, sizeof app->db_path, "%s/clad.db", app->cfg.state_dir) >= (int)sizeof app->db_path)
        return clad_err_set(err, CLAD_EINVAL, "state directory path is too long");
    char shown[CONFIG_STORE_MAX];
    config_store_redacted(app->db_path, shown, sizeof shown);
    app->st = store_open(app->db_path, err);
    if (!app->st) {
        clad_err_prefix(err, "opening %s: ", shown);
        return err ? err->code : CLAD_EIO;
    }
    int64_t marked = 0;
    if (store_jobs_mark_interrupted(app->st, &marked, err) != 0) return err ? err->code : CLAD_EIO;
    if (marked) log_warning("%lld job(s) of a previous run did not finish; marked interrupted", (long long)marked);
    restore_jobs(app);
    app->reg = registry_create(APP_ADAPTER_CACHE_BYTES, APP_BASE_CACHE_BYTES);
    app->loads = registry_loader_create(app->reg, app->jobs, app->st, app->db_path);
    log_info("store %s open", shown);
    return 0;
}

void app_store_close(cladd *app)
{
    registry_loader_destroy(app->loads);
    app->loads = NULL;
    registry_destroy(app->reg);
    app->reg = NULL;
    store_close(app->st);
    app->st = NULL;
    free(app->links);
    app->links = NULL;
    app->n_links = app->cap_links = 0;
}

static job_link *find_link(const cladd *app, uint64_t id)
{
    for (size_t i = 0; i < app->n_links; i++)
        if (app->links[i].queue_id == id) return &app->links[i];
    return NULL;
}

int64_t app_store_job_id(const cladd *app, const job *j)
{
    job_link *l = find_link(app, job_id(j));
    return l ? l->store_id : 0;
}

static int64_t to_ms(double t)
{
    return t > 0 ? (int64_t)llround(t * 1000.0) : 0;
}

static store_job_state to_store_state(job_state s)
{
    switch (s) {
    case JOB_SUCCEEDED: return STORE_JOB_SUCCEEDED;
    case JOB_FAILED: return STORE_JOB_FAILED;
    case JOB_CANCELLED: return STORE_JOB_CANCELLED;
    default: return STORE_JOB_INTERRUPTED;
    }
}

/* A finished job's final state with its result, last progress and its own times, in one transaction, so
 * its history reads the same after a restart. */
static int record_end(cladd *app, job *j, int64_t store_id, clad_err *err)
{
    json_t *jj = job_to_json(j);
    json_t *res = json_object_get(jj, "result"), *prog = json_object_get(jj, "progress");
    const clad_err *je = job_error(j);
    char *rtext = json_is_object(res) ? json_dumps(res, JSON_COMPACT) : NULL;
    char *ptext = json_is_object(prog) ? json_dumps(prog, JSON_COMPACT) : NULL;
    double created, started, finished;
    job_times(j, &created, &started, &finished);
    store_job_end end = {
        .state = to_store_state(job_get_state(j)), .error_code = je->code ? je->code : CLAD_EINTERNAL,
        .error_msg = je->msg,
        .peer_uid = STORE_UID_CLAD,
        .outcome = {.result_json = rtext, .progress_json = ptext, .created_ms = to_ms(created),
                    .started_ms = to_ms(started), .finished_ms = to_ms(finished)},
    };
    int rc = store_job_finish(app->st, store_id, &end, err);
    free(rtext);
    free(ptext);
    json_decref(jj);
    return rc;
}

void app_job_progress_hook(cladd *app, job *j, const json_t *event)
{
    job_link *l = app->st ? find_link(app, job_id(j)) : NULL;
    double now = (double)uv_hrtime() * 1e-9;
    if (!l || now - l->progress_saved < APP_PROGRESS_SAVE_S) return;
    l->progress_saved = now;
    char *text = json_dumps(event, JSON_COMPACT);
    clad_err e = {0};
    if (text && store_job_set_progress(app->st, l->store_id, text, &e) != 0)
        log_debug("job %llu: progress not saved: %s", (unsigned long long)job_id(j), e.msg);
    free(text);
}

int app_job_state_hook(cladd *app, job *j, clad_err *err)
{
    if (!app->st) return 0;
    job_state st = job_get_state(j);
    uint64_t qid = job_id(j);
    if (st == JOB_QUEUED) {
        json_t *jj = job_to_json(j);
        char *req = json_dumps(json_object_get(jj, "params"), JSON_COMPACT);
        json_t *owner = json_object_get(jj, "owner_uid");
        int64_t sid = 0;
        int rc = store_job_create(app->st, job_kind_name(j), job_task(j), job_lane(j), req,
                                  (int)json_integer_value(owner), &sid, err);
        free(req);
        json_decref(jj);
        if (rc) return rc;
        if (app->n_links == app->cap_links) {
            app->cap_links = app->cap_links ? 2 * app->cap_links : 16;
            app->links = realloc(app->links, app->cap_links * sizeof *app->links);
            if (!app->links) abort();
        }
        app->links[app->n_links++] = (job_link){qid, sid, (double)uv_hrtime() * 1e-9};
        return 0;
    }
    job_link *l = find_link(app, qid);
    if (!l) return 0;
    clad_err e = {0};
    int rc = st == JOB_RUNNING ? store_job_mark_running(app->st, l->store_id, &e)
             : job_state_final(st) ? record_end(app, j, l->store_id, &e) : 0;
    if (rc) log_warning("job %llu: cannot record state %s: %s", (unsigned long long)qid, job_state_name(st), e.msg);
    if (job_state_final(st)) *l = app->links[--app->n_links];
    return 0;
}
