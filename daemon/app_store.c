/* The daemon's side of the store: opening it, persisting job states, restoring job history. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api.h"
#include "daemon/job_claim.h"
#include "daemon/log.h"
#include "daemon/registry_load.h"

/* Adapters and bases kept loaded beyond what requests and jobs hold (LRU). */
#define APP_ADAPTER_CACHE_BYTES (256u << 20)
#define APP_BASE_CACHE_BYTES ((size_t)1 << 30)

/* A running job's progress is written to the store at most this often (a write transaction each). */
#define APP_PROGRESS_SAVE_S 1.0

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

/* A stored job as the queue's record (its JSON values are new references the record owns). */
static void record_from_store(const store_job *sj, job_record *rec)
{
    json_error_t je;
    *rec = (job_record){
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
        .node = sj->node,
        .attempt = sj->attempt,
        .cancel_requested = sj->cancel_requested,
    };
}

json_t *app_store_job_json(const store_job *sj)
{
    job_record rec;
    record_from_store(sj, &rec);
    return job_record_to_json(&rec);
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
        if (!job_state_final(from_store_state(sj->state))) continue; /* another node's live job */
        job_record rec;
        record_from_store(sj, &rec);
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
    if (store_set_node(app->st, app->cfg.node_id, err) != 0) return err ? err->code : CLAD_EINVAL;
    /* Deleted job data is wiped from the files by a worker (app_job_state_hook), not on the loop; what a
     * stop left unwiped goes now, before anything is served. */
    store_job_data_defer_wipe(app->st);
    clad_err werr = {0};
    if (store_job_data_wipe(app->st, &werr) != 0) log_warning("wiping deleted job data: %s", werr.msg);
    /* Alone on its store (in its state directory), a node ends what its previous run left. On a store
     * given by --store, which nodes share, queued jobs are the cluster's and running ones are other
     * nodes' until their leases expire (then they run again). */
    int64_t marked = 0;
    if (app->cfg.store[0]) {
        if (store_jobs_requeue_expired(app->st, &marked, err) != 0) return err ? err->code : CLAD_EIO;
        if (marked) log_warning("%lld job(s) of stopped nodes were given back to the queue", (long long)marked);
    } else {
        if (store_jobs_mark_interrupted(app->st, &marked, err) != 0) return err ? err->code : CLAD_EIO;
        if (marked) log_warning("%lld job(s) of a previous run did not finish; marked interrupted", (long long)marked);
    }
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

job_link *app_link_find(const cladd *app, uint64_t id)
{
    for (size_t i = 0; i < app->n_links; i++)
        if (app->links[i].id == id) return &app->links[i];
    return NULL;
}

job_link *app_link_add(cladd *app, uint64_t id)
{
    if (app->n_links == app->cap_links) {
        app->cap_links = app->cap_links ? 2 * app->cap_links : 16;
        app->links = realloc(app->links, app->cap_links * sizeof *app->links);
        if (!app->links) abort();
    }
    double now = (double)uv_hrtime() * 1e-9;
    job_link *l = &app->links[app->n_links++];
    *l = (job_link){.id = id, .progress_saved = now, .renewed = now};
    return l;
}

void app_link_drop(cladd *app, job_link *l)
{
    if (l) *l = app->links[--app->n_links];
}

int64_t app_store_job_id(const cladd *app, const job *j)
{
    job_link *l = app_link_find(app, job_id(j));
    /* A job this node no longer holds must not commit anything: -1 makes store_version_put refuse. */
    return l ? (int64_t)l->id : -1;
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
    /* Cancelled through the store already (DELETE of a queued job): only the outcome is left to write. */
    if (rc == CLAD_ECONFLICT && end.state == STORE_JOB_CANCELLED) {
        clad_err_clear(err);
        rc = store_job_set_outcome(app->st, store_id, &end.outcome, err);
    }
    free(rtext);
    free(ptext);
    json_decref(jj);
    return rc;
}

void app_job_progress_hook(cladd *app, job *j, const json_t *event)
{
    job_link *l = app->st ? app_link_find(app, job_id(j)) : NULL;
    double now = (double)uv_hrtime() * 1e-9;
    if (!l || now - l->progress_saved < APP_PROGRESS_SAVE_S) return;
    l->progress_saved = now;
    char *text = json_dumps(event, JSON_COMPACT);
    clad_err e = {0};
    /* A progress write is skipped rather than wait for a worker's long write (the next one comes). */
    int busy_ms = store_set_busy_timeout(app->st, 0);
    if (text && store_job_set_progress(app->st, (int64_t)l->id, text, &e) != 0)
        log_debug("job %llu: progress not saved: %s", (unsigned long long)job_id(j), e.msg);
    store_set_busy_timeout(app->st, busy_ms);
    free(text);
}

/* Pool thread: wipes deleted job data from the store's files through a handle of its own. */
static int wipe_work(void *arg, clad_err *err)
{
    const cladd *app = arg;
    store *w = store_open_worker(app->db_path, err);
    int rc = w ? store_job_data_wipe(w, err) : err->code;
    store_close(w);
    return rc;
}

static void wipe_done(void *arg, int status, const clad_err *err)
{
    if (status) log_warning("wiping deleted job data: %s", err->msg);
}

void app_store_wipe(cladd *app)
{
    clad_err err = {0};
    /* Refused while stopping or busy: the next wipe (or the next start) covers this data too. */
    if (job_queue_compute(app->jobs, wipe_work, wipe_done, app, &err) != 0)
        log_debug("job data wipe postponed: %s", err.msg);
}

int app_job_state_hook(cladd *app, job *j, clad_err *err)
{
    if (!app->st) return 0;
    job_state st = job_get_state(j);
    uint64_t qid = job_id(j);
    if (st == JOB_QUEUED) {
        /* Claimed from the store, or stored with its data by the submitter: its record exists. */
        if (app_link_find(app, qid)) return 0;
        /* The store's id becomes the job's. */
        json_t *jj = job_to_json(j);
        char *req = json_dumps(json_object_get(jj, "params"), JSON_COMPACT);
        json_t *owner = json_object_get(jj, "owner_uid");
        int64_t sid = 0;
        int rc = store_job_create(app->st, job_kind_name(j), job_task(j), job_lane(j), req,
                                  (int)json_integer_value(owner), &sid, err);
        free(req);
        json_decref(jj);
        if (rc) return rc;
        job_assign_id(j, (uint64_t)sid);
        app_link_add(app, (uint64_t)sid);
        return 0;
    }
    job_link *l = app_link_find(app, qid);
    if (!l) return 0;
    clad_err e = {0};
    /* A job this node lost is another node's to record; a running job was marked by its claim. */
    int rc = job_state_final(st) && !job_abandoned(j) ? record_end(app, j, (int64_t)l->id, &e) : 0;
    if (rc) log_warning("job %llu: cannot record state %s: %s", (unsigned long long)qid, job_state_name(st), e.msg);
    if (store_job_data_wipe_due(app->st)) app_store_wipe(app);
    if (job_state_final(st)) {
        app_link_drop(app, l);
        job_claim_kick(app);
    }
    return 0;
}
