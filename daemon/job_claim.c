/* The node's side of the shared job queue: claiming, lease renewal, cancels from other nodes and jobs of
 * other nodes; see job_claim.h. */
#include "daemon/job_claim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api.h"
#include "daemon/log.h"

/* Kinds any node can rebuild from the store, with how. */
static const struct {
    const char *kind;
    job_revive_fn revive;
} revivers[] = {
    {"train", api_train_revive},
    {"merge", api_merge_revive},
    {"base-train", api_base_train_revive},
};

static double mono_now(void)
{
    return (double)uv_hrtime() * 1e-9;
}

static int64_t lease_ms(const cladd *app)
{
    return (int64_t)app->cfg.job_lease_seconds * 1000;
}

/* This node now holds l's lease (just taken); j, when it is queued here, runs it as that attempt. */
static void link_claimed(cladd *app, job_link *l, job *j, int attempt)
{
    l->claimed = true;
    l->renewed = mono_now();
    if (j) job_set_node(j, app->cfg.node_id, attempt);
}

int job_claim_hook(cladd *app, job *j)
{
    job_link *l = app_link_find(app, job_id(j));
    if (!l) return JOB_CLAIM_START; /* not in the store (no store): nobody else can take it */
    if (l->claimed) return JOB_CLAIM_START;
    store_job *sj = NULL;
    clad_err err = {0};
    int busy_ms = store_set_busy_timeout(app->st, 0); /* busy: the next tick tries again */
    int rc = store_job_claim(app->st, (int64_t)l->id, NULL, lease_ms(app), &sj, &err);
    store_set_busy_timeout(app->st, busy_ms);
    if (rc != 0) {
        if (rc != CLAD_EBUSY) log_warning("job %llu: cannot claim it: %s", (unsigned long long)l->id, err.msg);
        return JOB_CLAIM_WAIT;
    }
    if (sj) {
        link_claimed(app, l, j, sj->attempt);
        store_job_free(sj);
        return JOB_CLAIM_START;
    }
    /* Not claimable: its lane runs on another node (wait), or it is no longer queued (another node took
     * it, or it was cancelled there). */
    rc = store_job_get(app->st, (int64_t)l->id, &sj, &err);
    bool queued = rc == 0 && sj->state == STORE_JOB_QUEUED;
    store_job_free(sj);
    if (rc != 0 || queued) return JOB_CLAIM_WAIT;
    app_link_drop(app, l);
    return JOB_CLAIM_GONE;
}

void job_claim_revive_failed(cladd *app, int64_t id, const clad_err *err)
{
    log_warning("job %lld of another node cannot run here: %s", (long long)id, err->msg);
    store_job_end end = {.state = STORE_JOB_FAILED, .error_code = err->code ? err->code : CLAD_EINTERNAL,
                         .error_msg = err->msg};
    clad_err e = {0};
    if (store_job_finish(app->st, id, &end, &e) != 0) log_warning("job %lld: cannot record its failure: %s", (long long)id, e.msg);
    app_link_drop(app, app_link_find(app, (uint64_t)id));
}

json_t *job_claim_request(cladd *app, const store_job *sj)
{
    json_error_t je;
    json_t *req = sj->request_json ? json_loads(sj->request_json, 0, &je) : NULL;
    if (json_is_object(req)) return req;
    json_decref(req);
    clad_err err = {0};
    clad_err_set(&err, CLAD_EINVAL, "the stored %s request is not a JSON object", sj->kind);
    job_claim_revive_failed(app, sj->id, &err);
    return NULL;
}

int job_claim_resubmit(cladd *app, job_spec *spec, int attempt)
{
    job *j = NULL;
    clad_err err = {0};
    int rc = job_submit(app->jobs, spec, &j, &err);
    if (rc == 0) job_set_node(j, app->cfg.node_id, attempt);
    else job_claim_revive_failed(app, (int64_t)spec->id, &err);
    return rc;
}

/* Renews the leases this node holds; a lost one stops its job, a cancel from another node reaches it.
 * The loop tries the write lock without waiting (busy_ms 0 in the tick), except for a lease with less
 * than a third of its time left: that renewal waits up to busy_ms, the handle's usual timeout. */
static void renew_leases(cladd *app, int busy_ms)
{
    double now = mono_now(), every = (double)app->cfg.job_lease_seconds / 3.0;
    for (size_t i = 0; i < app->n_links;) {
        job_link *l = &app->links[i];
        if (!l->claimed || now - l->renewed < every) {
            i++;
            continue;
        }
        bool cancel = false, urgent = now - l->renewed >= 2 * every;
        clad_err err = {0};
        if (urgent) store_set_busy_timeout(app->st, busy_ms);
        int rc = store_job_renew(app->st, (int64_t)l->id, lease_ms(app), &cancel, &err);
        if (urgent) store_set_busy_timeout(app->st, 0);
        job *j = job_find(app->jobs, l->id);
        if (rc == CLAD_ECONFLICT) {
            log_warning("job %llu: %s", (unsigned long long)l->id, err.msg);
            app_link_drop(app, l); /* nothing more is written for it */
            if (j) job_abandon(app->jobs, j);
            continue;
        }
        if (rc != 0 && (rc != CLAD_EBUSY || urgent))
            log_warning("job %llu: lease not renewed (will retry): %s", (unsigned long long)l->id, err.msg);
        else l->renewed = now;
        if (cancel && j && !job_state_final(job_get_state(j)) && !job_cancel_requested(j)) {
            clad_err cerr = {0};
            log_info("job %llu: cancelled through another node", (unsigned long long)l->id);
            job_cancel(app->jobs, j, &cerr);
        }
        i++;
    }
}

/* Jobs this node holds that have not ended: running, or claimed and waiting for their base. */
static unsigned busy_slots(const cladd *app)
{
    unsigned n = 0;
    for (size_t i = 0; i < app->n_links; i++) {
        if (!app->links[i].claimed) continue;
        job *j = job_find(app->jobs, app->links[i].id);
        if (!j || job_get_state(j) == JOB_RUNNING || job_get_state(j) == JOB_QUEUED) n++;
    }
    return n;
}

/* A claimed job's data, read on the pool (an upload may be 512 MiB), then handed to its kind's revive. */
typedef struct data_read {
    cladd *app;
    store_job *sj;
    job_revive_fn revive;
    void *data;
    size_t len;
} data_read;

static int data_read_work(void *arg, clad_err *err)
{
    data_read *r = arg;
    store *rd = store_open_reader(r->app->db_path, err);
    int rc = rd ? store_job_data_get(rd, r->sj->id, &r->data, &r->len, err) : err->code;
    store_close(rd);
    return rc == CLAD_ENOTFOUND ? 0 : rc; /* a job without data */
}

static void data_read_done(void *arg, int status, const clad_err *err)
{
    data_read *r = arg;
    if (status == 0) r->revive(r->app, r->sj, r->data, r->len);
    else job_claim_revive_failed(r->app, r->sj->id, err);
    if (status) free(r->data);
    store_job_free(r->sj);
    free(r);
}

/* Claims one job of another node of a kind this node can rebuild, when a slot is free. Not while this
 * node stores an upload of its own: the job it is about to queue here would be claimed as a stranger's.
 * True when a claim found the store busy (so none was made). */
static bool claim_foreign(cladd *app)
{
    bool busy = false;
    if (app->stopping || app->n_storing || busy_slots(app) >= app->cfg.max_running_jobs) return false;
    for (size_t k = 0; k < sizeof revivers / sizeof revivers[0]; k++) {
        store_job *sj = NULL;
        clad_err err = {0};
        if (store_job_claim(app->st, 0, revivers[k].kind, lease_ms(app), &sj, &err) != 0) {
            log_debug("claiming a %s job: %s", revivers[k].kind, err.msg);
            busy = busy || err.code == CLAD_EBUSY;
            continue;
        }
        if (!sj) continue;
        job_link *l = app_link_find(app, (uint64_t)sj->id);
        if (l) { /* one this node accepted: it starts from its queue at the next poll */
            link_claimed(app, l, job_find(app->jobs, l->id), sj->attempt);
            store_job_free(sj);
            job_queue_poll(app->jobs);
            return false;
        }
        /* The claim just took the lease: renew from now, not at once (an urgent renewal may wait on the
         * loop for the store's busy timeout). The job itself is queued here once revived. */
        l = app_link_add(app, (uint64_t)sj->id);
        link_claimed(app, l, NULL, sj->attempt);
        log_info("job %lld (%s, lane %s, attempt %d) claimed from the shared queue", (long long)sj->id, sj->kind,
                 sj->lane, sj->attempt);
        data_read *r = calloc(1, sizeof *r);
        if (!r) abort();
        *r = (data_read){.app = app, .sj = sj, .revive = revivers[k].revive};
        if (job_queue_compute(app->jobs, data_read_work, data_read_done, r, &err) != 0) {
            job_claim_revive_failed(app, sj->id, &err);
            store_job_free(sj);
            free(r);
        }
        return false;
    }
    return busy;
}

static void on_tick(uv_timer_t *t)
{
    cladd *app = t->data;
    if (!app->st || !app->jobs) return;
    /* The loop does not wait for the store's write lock here (a worker may hold it for seconds while it
     * stores a large upload): a renewal that finds it busy is tried again at the next tick, a claim sooner. */
    int busy_ms = store_set_busy_timeout(app->st, 0);
    renew_leases(app, busy_ms);
    bool retry = false;
    if (!app->stopping) {
        job_queue_poll(app->jobs);
        retry = claim_foreign(app);
    }
    /* The loop's handle leaves checkpoints to workers (store_job_data_defer_wipe). */
    if (++app->claim_ticks % JOB_CLAIM_CHECKPOINT_TICKS == 0) app_store_wipe(app);
    store_set_busy_timeout(app->st, busy_ms);
    /* A node that writes often (one finishing short jobs back to back) holds the write lock at most of this
     * node's ticks, so an idle node that waited a whole poll each time would never get in. It tries again
     * within 10-20 ms, jittered by the clock's microseconds (differently on every node), until it claims or
     * finds nothing. */
    if (retry)
        uv_timer_start(&app->claim_timer, on_tick, JOB_CLAIM_RETRY_MS + uv_hrtime() / 1000 % JOB_CLAIM_RETRY_MS,
                       JOB_CLAIM_POLL_MS);
}

void job_claim_kick(cladd *app)
{
    if (app->claim_timer_live && !app->stopping) uv_timer_start(&app->claim_timer, on_tick, 0, JOB_CLAIM_POLL_MS);
}

void job_claim_start(cladd *app)
{
    uv_timer_init(app->loop, &app->claim_timer);
    app->claim_timer.data = app;
    app->claim_timer_live = true;
    uv_timer_start(&app->claim_timer, on_tick, JOB_CLAIM_POLL_MS, JOB_CLAIM_POLL_MS);
}

void job_claim_stop(cladd *app)
{
    if (!app->claim_timer_live) return;
    app->claim_timer_live = false;
    uv_close((uv_handle_t *)&app->claim_timer, NULL);
}
