/* Job queue, lanes, worker-pool execution, progress fan-out and compute tasks; see jobs.h. */
#include "daemon/jobs.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/parallel.h"
#include "daemon/log.h"

#define LANE_MAX 64
#define TASK_MAX 65 /* a task name (64 bytes, as the store's) and its NUL */
#define EVENTS_MAX 4096

enum { STOP_NONE = 0, STOP_CANCEL = 1, STOP_SHUTDOWN = 2, STOP_LOST = 3 };

struct job_follower {
    job_follower *next;
    job *j;
    job_event_fn fn;
    void *data;
    bool dead; /* unfollowed during a fan-out; freed after it */
};

struct job {
    job_queue *q;
    uint64_t id;
    const job_kind *kind;
    char kind_name[32]; /* for restored jobs, whose kind table may not exist */
    char lane[LANE_MAX];
    char task[TASK_MAX]; /* "" for none */
    job_state state;
    atomic_int stop;    /* STOP_*: written by the loop, read by the worker */
    atomic_uint dropped; /* progress events dropped because the loop fell behind */
    void *arg;
    json_t *params;
    json_t *progress;   /* last event */
    json_t *result;
    /* The run's private results: written only by the worker while the job runs, read only by the loop
     * in after_work (the pool's completion orders the two), so the loop never sees them half-written. */
    json_t *run_result;
    int run_status;
    clad_err run_err;
    clad_err err;       /* the published error: loop thread only */
    uid_t owner_uid;
    char node[LANE_MAX + 2]; /* who runs it ("" none): a node id, at most 64 bytes */
    int attempt;
    bool remote_cancel;  /* a record's cancel_requested (a job another node runs) */
    bool gone;           /* on_claim said JOB_CLAIM_GONE while it was being submitted */
    double created, started, finished;
    uv_work_t work;
    par_pool *pool;     /* engine threads while running (NULL: the worker thread alone) */
    job *prev, *next;   /* all jobs, oldest first */
    job *qnext;         /* queued list */
    job_follower *followers;
    int fanout_depth;
};

typedef struct event_msg {
    struct event_msg *next;
    job *j;
    json_t *event;
} event_msg;

typedef struct compute_task {
    uv_work_t work;
    job_queue *q;
    compute_fn fn;
    compute_done_fn done;
    void *arg;
    int status;
    clad_err err;
} compute_task;

struct job_queue {
    uv_loop_t *loop;
    uv_async_t async;
    job_queue_options opt;
    uint64_t next_id;
    job *all_head, *all_tail;
    job *queued_head, *queued_tail;
    unsigned n_queued, n_running, n_compute, n_final;
    pthread_mutex_t lock; /* guards the event list below */
    event_msg *ev_head, *ev_tail;
    unsigned n_events;
    job *submitting;      /* the job job_submit returns, while it schedules */
    bool shutting_down;
    bool shutdown_reported;
    void (*shutdown_cb)(job_queue *q, void *data);
    void *shutdown_data;
};

static const char *const state_names[JOB_STATE_COUNT] = {
    "queued", "running", "succeeded", "failed", "cancelled", "interrupted",
};

const char *job_state_name(job_state s)
{
    return (unsigned)s < JOB_STATE_COUNT ? state_names[s] : "unknown";
}

int job_state_parse(const char *name)
{
    for (int i = 0; i < JOB_STATE_COUNT; i++)
        if (!strcmp(name, state_names[i])) return i;
    return -1;
}

bool job_state_final(job_state s)
{
    return s >= JOB_SUCCEEDED && s < JOB_STATE_COUNT;
}

static void drain_events(job_queue *q);
static void maybe_report_shutdown(job_queue *q);

static void on_async(uv_async_t *a)
{
    job_queue *q = a->data;
    drain_events(q);
    maybe_report_shutdown(q);
}

job_queue *job_queue_create(uv_loop_t *loop, const job_queue_options *opts)
{
    job_queue *q = calloc(1, sizeof *q);
    if (!q) abort();
    q->loop = loop;
    q->opt = *opts;
    if (q->opt.max_running == 0) q->opt.max_running = 1;
    q->next_id = 1;
    pthread_mutex_init(&q->lock, NULL);
    uv_async_init(loop, &q->async, on_async);
    q->async.data = q;
    return q;
}

void job_queue_set_limits(job_queue *q, unsigned max_queued, unsigned max_compute, unsigned history)
{
    q->opt.max_queued = max_queued;
    q->opt.max_compute = max_compute;
    q->opt.history = history;
}

void job_queue_set_next_id(job_queue *q, uint64_t next_id)
{
    if (next_id > q->next_id) q->next_id = next_id;
}

uint64_t job_id(const job *j) { return j->id; }
json_t *job_run_result(job *j) { return j->run_result; }
job_state job_get_state(const job *j) { return j->state; }
const char *job_lane(const job *j) { return j->lane; }
const char *job_task(const job *j) { return j->task[0] ? j->task : NULL; }
const char *job_kind_name(const job *j) { return j->kind_name; }
bool job_cancel_requested(const job *j) { return atomic_load(&j->stop) != STOP_NONE; }
bool job_should_stop(const job *j) { return atomic_load(&j->stop) != STOP_NONE; }
const clad_err *job_error(const job *j) { return &j->err; }
void job_assign_id(job *j, uint64_t id) { j->id = id; }
bool job_abandoned(const job *j) { return atomic_load(&j->stop) == STOP_LOST; }

void job_times(const job *j, double *created, double *started, double *finished)
{
    *created = j->created;
    *started = j->started;
    *finished = j->finished;
}

/* --- JSON ---------------------------------------------------------------------------------------------- */

static json_t *time_json(double t)
{
    if (t <= 0) return json_null();
    /* Whole milliseconds, rounded: the store keeps milliseconds, and truncating t - s (0.123 is
     * 0.12299...) made a restored job's times read 1 ms earlier than before the restart. */
    long long ms = llround(t * 1000.0);
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char buf[40];
    size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof buf - n, ".%03dZ", (int)(ms % 1000));
    return json_string(buf);
}

json_t *job_to_json(const job *j)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)j->id));
    json_object_set_new(o, "kind", json_string(j->kind_name));
    json_object_set_new(o, "lane", json_string(j->lane));
    json_object_set_new(o, "state", json_string(job_state_name(j->state)));
    json_object_set_new(o, "created", time_json(j->created));
    json_object_set_new(o, "started", time_json(j->started));
    json_object_set_new(o, "finished", time_json(j->finished));
    json_object_set_new(o, "owner_uid", json_integer((json_int_t)j->owner_uid));
    json_object_set_new(o, "cancel_requested", json_boolean(job_cancel_requested(j) || j->remote_cancel));
    json_object_set_new(o, "node", j->node[0] ? json_string(j->node) : json_null());
    json_object_set_new(o, "attempt", json_integer(j->attempt));
    json_object_set(o, "params", j->params);
    json_object_set_new(o, "progress", j->progress ? json_incref(j->progress) : json_null());
    json_object_set_new(o, "result", j->result ? json_incref(j->result) : json_null());
    if (j->err.code)
        json_object_set_new(o, "error", json_pack("{s:s,s:s}", "code", clad_code_name(j->err.code), "message",
                                                  j->err.msg));
    else
        json_object_set_new(o, "error", json_null());
    unsigned dropped = atomic_load(&((job *)j)->dropped);
    if (dropped) json_object_set_new(o, "progress_dropped", json_integer(dropped));
    return o;
}

json_t *job_queue_list_json(job_queue *q, int state, const char *lane, size_t limit)
{
    json_t *arr = json_array();
    for (job *j = q->all_tail; j && json_array_size(arr) < limit; j = j->prev) {
        if (state >= 0 && (int)j->state != state) continue;
        if (lane && strcmp(lane, j->lane)) continue;
        json_array_append_new(arr, job_to_json(j));
    }
    return arr;
}

void job_queue_counts(const job_queue *q, unsigned counts[JOB_STATE_COUNT])
{
    memset(counts, 0, sizeof(unsigned) * JOB_STATE_COUNT);
    for (const job *j = q->all_head; j; j = j->next) counts[j->state]++;
}

unsigned job_queue_compute_count(const job_queue *q)
{
    return q->n_compute;
}

job *job_find(job_queue *q, uint64_t id)
{
    for (job *j = q->all_tail; j; j = j->prev)
        if (j->id == id) return j;
    return NULL;
}

/* --- followers ----------------------------------------------------------------------------------------- */

job_follower *job_follow(job *j, job_event_fn fn, void *data)
{
    if (job_state_final(j->state)) return NULL;
    job_follower *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->j = j;
    f->fn = fn;
    f->data = data;
    f->next = j->followers;
    j->followers = f;
    return f;
}

static void follower_unlink(job *j, job_follower *f)
{
    for (job_follower **pp = &j->followers; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            free(f);
            return;
        }
    }
}

void job_unfollow(job_follower *f)
{
    if (!f) return;
    job *j = f->j;
    if (j->fanout_depth > 0) f->dead = true;
    else follower_unlink(j, f);
}

/* Calls every live follower; followers may unfollow themselves or others meanwhile. With last, every
 * follower is removed afterwards. */
static void fan_out(job *j, const json_t *event, bool last)
{
    j->fanout_depth++;
    for (job_follower *f = j->followers; f; f = f->next)
        if (!f->dead) f->fn(j, event, last, f->data);
    j->fanout_depth--;
    if (j->fanout_depth > 0) return;
    job_follower **pp = &j->followers;
    while (*pp) {
        job_follower *f = *pp;
        if (f->dead || last) {
            *pp = f->next;
            free(f);
        } else {
            pp = &f->next;
        }
    }
}

/* --- state changes ------------------------------------------------------------------------------------- */

static void job_free(job *j)
{
    json_decref(j->params);
    json_decref(j->progress);
    json_decref(j->result);
    json_decref(j->run_result);
    while (j->followers) {
        job_follower *f = j->followers;
        j->followers = f->next;
        free(f);
    }
    free(j);
}

static void list_remove(job_queue *q, job *j)
{
    if (j->prev) j->prev->next = j->next;
    else q->all_head = j->next;
    if (j->next) j->next->prev = j->prev;
    else q->all_tail = j->prev;
}

/* Drops the oldest finished jobs beyond the history limit, never `keep` (the job the caller still
 * holds). */
static void evict(job_queue *q, const job *keep)
{
    job *j = q->all_head;
    while (q->n_final > q->opt.history && j) {
        job *next = j->next;
        if (j != keep && job_state_final(j->state) && !j->followers && j->fanout_depth == 0) {
            list_remove(q, j);
            q->n_final--;
            job_free(j);
        }
        j = next;
    }
}

static void notify_state(job_queue *q, job *j)
{
    if (!q->opt.hooks.on_state) return;
    clad_err err = {0};
    if (q->opt.hooks.on_state(j, q->opt.hooks.data, &err) != 0)
        log_error("job %llu: recording state %s failed: %s", (unsigned long long)j->id, job_state_name(j->state),
                  err.msg);
}

/* Publishes a final state: hooks, followers' last event, history. */
static void job_finalize(job_queue *q, job *j, job_state state)
{
    j->state = state;
    j->finished = wall_now();
    q->n_final++;
    if (j->kind && j->kind->free_arg && j->arg) j->kind->free_arg(j->arg);
    j->arg = NULL;
    notify_state(q, j);
    if (state == JOB_FAILED)
        log_warning("job %llu (%s, lane %s) failed: %s: %s", (unsigned long long)j->id, j->kind_name, j->lane,
                    clad_code_name(j->err.code), j->err.msg);
    else
        log_info("job %llu (%s, lane %s) %s", (unsigned long long)j->id, j->kind_name, j->lane,
                 job_state_name(state));
    json_t *end = json_pack("{s:s,s:o}", "event", "end", "job", job_to_json(j));
    if (end) fan_out(j, end, true);
    json_decref(end);
    evict(q, j);
}

static void queued_remove(job_queue *q, job *j)
{
    job **pp = &q->queued_head;
    job *prev = NULL;
    while (*pp && *pp != j) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (!*pp) return;
    *pp = j->qnext;
    if (q->queued_tail == j) q->queued_tail = prev;
    j->qnext = NULL;
    q->n_queued--;
}

static bool lane_busy(job_queue *q, const char *lane)
{
    for (job *j = q->all_head; j; j = j->next)
        if (j->state == JOB_RUNNING && !strcmp(j->lane, lane)) return true;
    return false;
}

static void work_cb(uv_work_t *w)
{
    job *j = w->data;
    json_t *result = NULL;
    par_pool *outer = par_bind(j->pool);
    j->run_status = j->kind->run(j, j->arg, &result, &j->run_err);
    par_bind(outer);
    j->run_result = result;
}

unsigned job_queue_engine_threads(const job_queue *q)
{
    return q->opt.engine_threads > 1 ? q->opt.engine_threads : 1;
}

/* Every running job's engine budget: its threads minus the predictions in flight, at least one. */
static void rebudget(job_queue *q)
{
    /* Called for every prediction: with no job running (or no engine threads) there is nothing to lend,
     * and the job list, history included, need not be walked. */
    if (!q->n_running || q->opt.engine_threads <= 1) return;
    int budget = (int)q->opt.engine_threads - (int)q->n_compute;
    for (job *j = q->all_head; j; j = j->next)
        if (j->state == JOB_RUNNING && j->pool) par_pool_set_budget(j->pool, budget);
}

static void schedule(job_queue *q);

static void after_work_cb(uv_work_t *w, int status)
{
    job *j = w->data;
    job_queue *q = j->q;
    /* Progress posted just before run returned may still sit in the event list (the pool's completion
     * and our async are separate wake-ups): deliver it first so followers see events in order. */
    drain_events(q);
    q->n_running--;
    par_pool_destroy(j->pool);   /* idle: run has returned */
    j->pool = NULL;
    /* The handover: from here on the run's results are the loop's. */
    j->err = j->run_err;
    int rc = status < 0 ? CLAD_EINTERNAL : j->run_status;
    if (status < 0) clad_err_set(&j->err, CLAD_EINTERNAL, "worker: %s", uv_strerror(status));
    if (rc != 0 && !j->err.code) clad_err_set(&j->err, rc, "job ended with %s", clad_code_name(rc));
    /* A cancel answered 202 is honoured even when the run finished its work before it looked: job_cancel
     * and this callback both run on the loop, so a cancel either came before this point (and nothing is
     * committed) or finds the job final (409). A stop for shutdown still commits finished work. */
    int stop = atomic_load(&j->stop);
    if (rc == 0 && stop == STOP_CANCEL) {
        rc = CLAD_ECANCELLED;
        clad_err_set(&j->err, CLAD_ECANCELLED, "cancelled on request after the work was done; nothing kept");
    }
    if (stop == STOP_LOST) rc = CLAD_ECANCELLED; /* another node runs it now: commit nothing */
    if (j->kind->finish) {
        clad_err ferr = {0};
        int frc = j->kind->finish(j, j->arg, rc, &ferr);
        if (frc != 0 && rc == 0) {
            j->err = ferr;
            if (!j->err.code) clad_err_set(&j->err, frc, "committing the job's result failed");
        }
        rc = frc;
    }
    job_state final;
    if (rc == 0) final = JOB_SUCCEEDED;
    else if (stop == STOP_SHUTDOWN || stop == STOP_LOST) final = JOB_INTERRUPTED;
    else if (stop == STOP_CANCEL || rc == CLAD_ECANCELLED) final = JOB_CANCELLED;
    else final = JOB_FAILED;
    if (final == JOB_SUCCEEDED) {
        j->result = j->run_result;
        j->err.code = 0;
        j->err.msg[0] = '\0';
    } else {
        json_decref(j->run_result);
        if (final != JOB_FAILED) {
            /* A cancelled or interrupted job's "error" says so plainly. */
            clad_err_clear(&j->err);
            clad_err_set(&j->err, CLAD_ECANCELLED, "%s", stop == STOP_LOST ? "interrupted: this node lost the job's "
                         "lease; another node runs it" : final == JOB_INTERRUPTED ? "interrupted: the daemon stopped"
                                                                                  : "cancelled on request");
        }
    }
    j->run_result = NULL;
    job_finalize(q, j, final);
    schedule(q);
    maybe_report_shutdown(q);
}

static void job_start(job_queue *q, job *j)
{
    queued_remove(q, j);
    j->state = JOB_RUNNING;
    j->started = wall_now();
    q->n_running++;
    /* Without a pool the job still runs, on its worker thread alone. */
    if (q->opt.engine_threads > 1) j->pool = par_pool_create((int)q->opt.engine_threads);
    rebudget(q);
    j->work.data = j;
    int rc = uv_queue_work(q->loop, &j->work, work_cb, after_work_cb);
    if (rc < 0) {
        q->n_running--;
        par_pool_destroy(j->pool);
        j->pool = NULL;
        clad_err_set(&j->err, CLAD_EINTERNAL, "cannot start on the worker pool: %s", uv_strerror(rc));
        job_finalize(q, j, JOB_FAILED);
        return;
    }
    log_info("job %llu (%s, lane %s) started", (unsigned long long)j->id, j->kind_name, j->lane);
    notify_state(q, j);
}

/* Drops a queued job that is no longer this node's; its record is the store's. */
static void job_forget(job_queue *q, job *j)
{
    queued_remove(q, j);
    list_remove(q, j);
    log_info("job %llu (%s, lane %s) is run by another node", (unsigned long long)j->id, j->kind_name, j->lane);
    json_t *end = json_pack("{s:s,s:o}", "event", "end", "job", job_to_json(j));
    if (end) fan_out(j, end, true);
    json_decref(end);
    if (j->kind && j->kind->free_arg && j->arg) j->kind->free_arg(j->arg);
    job_free(j);
}

/* Starts the oldest queued jobs whose lanes are free, here and (through on_claim) on every node. */
static void schedule(job_queue *q)
{
    if (q->shutting_down) return;
    job *pick = q->queued_head;
    while (pick && q->n_running < q->opt.max_running) {
        job *next = pick->qnext;
        /* The job job_submit is about to hand to its caller is dropped at the next poll, not now. */
        int claim = pick->gone ? JOB_CLAIM_GONE
                    : lane_busy(q, pick->lane) ? JOB_CLAIM_WAIT
                    : q->opt.hooks.on_claim ? q->opt.hooks.on_claim(pick, q->opt.hooks.data) : JOB_CLAIM_START;
        if (claim == JOB_CLAIM_START) job_start(q, pick);
        else if (claim == JOB_CLAIM_GONE && pick != q->submitting) job_forget(q, pick);
        else if (claim == JOB_CLAIM_GONE) pick->gone = true; /* never asked again */
        pick = next;
    }
}

void job_queue_poll(job_queue *q)
{
    schedule(q);
}

void job_abandon(job_queue *q, job *j)
{
    if (j->state == JOB_QUEUED) {
        atomic_store(&j->stop, STOP_LOST);
        job_forget(q, j);
    } else if (j->state == JOB_RUNNING) {
        atomic_store(&j->stop, STOP_LOST);
        log_warning("job %llu: this node lost its lease; stopping it without writing", (unsigned long long)j->id);
    }
}

static bool valid_lane(const char *lane)
{
    size_t n = lane ? strlen(lane) : 0;
    if (n == 0 || n >= LANE_MAX) return false;
    for (const char *p = lane; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) return false;
    return true;
}

int job_submit(job_queue *q, job_spec *spec, job **out, clad_err *err)
{
    json_t *params = spec->params ? spec->params : json_object();
    spec->params = NULL;
    if (!spec->kind || !spec->kind->run) {
        json_decref(params);
        return clad_err_set(err, CLAD_EINTERNAL, "job kind without a run function");
    }
    if (!valid_lane(spec->lane)) {
        json_decref(params);
        return clad_err_set(err, CLAD_EINVAL, "lane must be 1 to %d printable bytes", LANE_MAX - 1);
    }
    if (spec->task && strlen(spec->task) >= TASK_MAX) {
        json_decref(params);
        return clad_err_set(err, CLAD_EINVAL, "task name is too long");
    }
    if (q->shutting_down) {
        json_decref(params);
        return clad_err_set(err, CLAD_EBUSY, "the daemon is stopping; no new jobs");
    }
    if (q->n_queued >= q->opt.max_queued) {
        json_decref(params);
        return clad_err_set(err, CLAD_EBUSY, "%u jobs are already queued (the limit); try again later",
                            q->n_queued);
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        json_decref(params);
        return clad_err_set(err, CLAD_ENOMEM, "out of memory");
    }
    j->q = q;
    j->id = spec->id ? spec->id : q->next_id;
    j->kind = spec->kind;
    snprintf(j->kind_name, sizeof j->kind_name, "%s", spec->kind->name);
    snprintf(j->lane, sizeof j->lane, "%s", spec->lane);
    snprintf(j->task, sizeof j->task, "%s", spec->task ? spec->task : "");
    j->state = JOB_QUEUED;
    j->params = params;
    j->owner_uid = spec->owner_uid;
    j->created = wall_now();
    j->arg = spec->arg;
    /* Linked before the hook runs, so the hook sees the queue as it will be. */
    j->prev = q->all_tail;
    if (q->all_tail) q->all_tail->next = j;
    else q->all_head = j;
    q->all_tail = j;
    j->qnext = NULL;
    job *old_queued_tail = q->queued_tail;
    if (q->queued_tail) q->queued_tail->qnext = j;
    else q->queued_head = j;
    q->queued_tail = j;
    q->n_queued++;
    if (q->opt.hooks.on_state) {
        int rc = q->opt.hooks.on_state(j, q->opt.hooks.data, err);
        if (rc != 0) {
            list_remove(q, j);
            q->queued_tail = old_queued_tail;
            if (old_queued_tail) old_queued_tail->qnext = NULL;
            else q->queued_head = NULL;
            q->n_queued--;
            j->arg = NULL; /* stays the caller's */
            job_free(j);
            return rc;
        }
    }
    job_queue_set_next_id(q, j->id + 1);
    spec->arg = NULL;
    log_info("job %llu (%s, lane %s) queued by uid %ld", (unsigned long long)j->id, j->kind_name, j->lane,
             (long)j->owner_uid);
    if (out) *out = j;
    q->submitting = j;
    schedule(q);
    q->submitting = NULL;
    return 0;
}

int job_cancel(job_queue *q, job *j, clad_err *err)
{
    if (job_state_final(j->state))
        return clad_err_set(err, CLAD_ECONFLICT, "job %llu has already %s", (unsigned long long)j->id,
                            job_state_name(j->state));
    if (j->state == JOB_QUEUED) {
        queued_remove(q, j);
        atomic_store(&j->stop, STOP_CANCEL);
        clad_err_set(&j->err, CLAD_ECANCELLED, "cancelled on request before it started");
        job_finalize(q, j, JOB_CANCELLED);
        return 0;
    }
    int expected = STOP_NONE;
    atomic_compare_exchange_strong(&j->stop, &expected, STOP_CANCEL);
    log_info("job %llu: cancel requested", (unsigned long long)j->id);
    return 0;
}

void job_set_node(job *j, const char *node, int attempt)
{
    snprintf(j->node, sizeof j->node, "%s", node ? node : "");
    j->attempt = attempt;
}

/* A job from a record, not linked into any queue. */
static job *job_from_record(job_record *rec)
{
    job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->id = rec->id;
    snprintf(j->kind_name, sizeof j->kind_name, "%s", rec->kind);
    snprintf(j->lane, sizeof j->lane, "%s", rec->lane);
    j->state = rec->state;
    j->created = rec->created;
    j->started = rec->started;
    j->finished = rec->finished;
    j->params = rec->params ? rec->params : json_object();
    j->result = rec->result;
    j->progress = rec->progress;
    rec->params = rec->result = rec->progress = NULL;
    j->owner_uid = rec->owner_uid;
    j->remote_cancel = rec->cancel_requested;
    job_set_node(j, rec->node, rec->attempt);
    if (rec->error_code)
        clad_err_set(&j->err, rec->error_code, "%s", rec->error_message ? rec->error_message : "");
    return j;
}

json_t *job_record_to_json(job_record *rec)
{
    job *j = job_from_record(rec);
    json_t *o = job_to_json(j);
    job_free(j);
    return o;
}

int job_queue_restore(job_queue *q, job_record *rec, clad_err *err)
{
    json_t *params = rec->params ? rec->params : json_object();
    json_t *result = rec->result, *progress = rec->progress;
    rec->params = rec->result = rec->progress = NULL;
    int rc = 0;
    if (!job_state_final(rec->state)) {
        rc = clad_err_set(err, CLAD_EINVAL, "job %llu: restored jobs must be finished, not %s",
                          (unsigned long long)rec->id, job_state_name(rec->state));
        goto drop;
    }
    if (!valid_lane(rec->lane) || !rec->kind) {
        rc = clad_err_set(err, CLAD_EINVAL, "job %llu: bad lane or kind", (unsigned long long)rec->id);
        goto drop;
    }
    if (job_find(q, rec->id)) {
        rc = clad_err_set(err, CLAD_ECONFLICT, "job %llu exists already", (unsigned long long)rec->id);
        goto drop;
    }
    rec->params = params;
    rec->result = result;
    rec->progress = progress;
    job *j = job_from_record(rec);
    j->q = q;
    /* Keep creation order: insert before the first job with a larger id. */
    job *after = q->all_tail;
    while (after && after->id > j->id) after = after->prev;
    j->prev = after;
    j->next = after ? after->next : q->all_head;
    if (j->next) j->next->prev = j;
    else q->all_tail = j;
    if (after) after->next = j;
    else q->all_head = j;
    q->n_final++;
    job_queue_set_next_id(q, rec->id + 1);
    evict(q, NULL);
    return 0;
drop:
    json_decref(params);
    json_decref(result);
    json_decref(progress);
    return rc;
}

/* --- progress events ----------------------------------------------------------------------------------- */

void job_post(job *j, json_t *event)
{
    if (!event) return;
    if (!json_is_object(event)) {
        json_decref(event);
        return;
    }
    job_queue *q = j->q;
    event_msg *m = malloc(sizeof *m);
    if (!m) {
        json_decref(event);
        atomic_fetch_add(&j->dropped, 1);
        return;
    }
    m->next = NULL;
    m->j = j;
    m->event = event;
    pthread_mutex_lock(&q->lock);
    bool full = q->n_events >= EVENTS_MAX;
    if (!full) {
        if (q->ev_tail) q->ev_tail->next = m;
        else q->ev_head = m;
        q->ev_tail = m;
        q->n_events++;
    }
    pthread_mutex_unlock(&q->lock);
    if (full) {
        json_decref(event);
        free(m);
        atomic_fetch_add(&j->dropped, 1);
        return;
    }
    uv_async_send(&q->async);
}

static void drain_events(job_queue *q)
{
    pthread_mutex_lock(&q->lock);
    event_msg *m = q->ev_head;
    q->ev_head = q->ev_tail = NULL;
    q->n_events = 0;
    pthread_mutex_unlock(&q->lock);
    while (m) {
        event_msg *next = m->next;
        job *j = m->j;
        /* "event" and "job" first, for people reading the stream; the worker's fields after them. */
        json_t *ev = json_pack("{s:s,s:I}", "event", "progress", "job", (json_int_t)j->id);
        if (!ev || json_object_update(ev, m->event) != 0) {
            json_decref(ev);
            ev = json_incref(m->event);
        }
        json_object_set_new(ev, "job", json_integer((json_int_t)j->id));
        json_decref(m->event);
        json_decref(j->progress);
        j->progress = json_incref(ev);
        fan_out(j, ev, false);
        if (q->opt.hooks.on_progress) q->opt.hooks.on_progress(j, ev, q->opt.hooks.data);
        json_decref(ev);
        free(m);
        m = next;
    }
}

/* --- compute ------------------------------------------------------------------------------------------- */

static void compute_work(uv_work_t *w)
{
    compute_task *t = w->data;
    t->status = t->fn(t->arg, &t->err);
}

static void compute_after(uv_work_t *w, int status)
{
    compute_task *t = w->data;
    job_queue *q = t->q;
    q->n_compute--;
    rebudget(q);
    if (status < 0 && t->status == 0) t->status = clad_err_set(&t->err, CLAD_EINTERNAL, "worker: %s",
                                                               uv_strerror(status));
    t->done(t->arg, t->status, &t->err);
    free(t);
    maybe_report_shutdown(q);
}

int job_queue_compute(job_queue *q, compute_fn fn, compute_done_fn done, void *arg, clad_err *err)
{
    if (q->shutting_down) return clad_err_set(err, CLAD_EBUSY, "the daemon is stopping");
    if (q->n_compute >= q->opt.max_compute)
        return clad_err_set(err, CLAD_EBUSY, "%u computations are already in progress (the limit); try again",
                            q->n_compute);
    compute_task *t = calloc(1, sizeof *t);
    if (!t) return clad_err_set(err, CLAD_ENOMEM, "out of memory");
    t->q = q;
    t->fn = fn;
    t->done = done;
    t->arg = arg;
    t->work.data = t;
    int rc = uv_queue_work(q->loop, &t->work, compute_work, compute_after);
    if (rc < 0) {
        free(t);
        return clad_err_set(err, CLAD_EINTERNAL, "cannot queue work: %s", uv_strerror(rc));
    }
    q->n_compute++;
    rebudget(q);
    return 0;
}

/* --- lifecycle ----------------------------------------------------------------------------------------- */

static void maybe_report_shutdown(job_queue *q)
{
    if (!q->shutting_down || q->shutdown_reported || q->n_running || q->n_compute) return;
    q->shutdown_reported = true;
    if (q->shutdown_cb) q->shutdown_cb(q, q->shutdown_data);
}

void job_queue_shutdown(job_queue *q, void (*done)(job_queue *q, void *data), void *data)
{
    if (q->shutting_down) return;
    q->shutting_down = true;
    q->shutdown_cb = done;
    q->shutdown_data = data;
    while (q->queued_head) {
        job *j = q->queued_head;
        queued_remove(q, j);
        atomic_store(&j->stop, STOP_SHUTDOWN);
        job_finalize(q, j, JOB_INTERRUPTED);
    }
    for (job *j = q->all_head; j; j = j->next)
        if (j->state == JOB_RUNNING) {
            atomic_store(&j->stop, STOP_SHUTDOWN);
            log_info("job %llu: asked to stop (daemon stopping)", (unsigned long long)j->id);
        }
    /* Report through the async handle so done never runs inside this call. */
    uv_async_send(&q->async);
}

static void on_async_closed(uv_handle_t *h)
{
    job_queue *q = h->data;
    drain_events(q);
    while (q->all_head) {
        job *j = q->all_head;
        list_remove(q, j);
        if (j->kind && j->kind->free_arg && j->arg) j->kind->free_arg(j->arg);
        job_free(j);
    }
    pthread_mutex_destroy(&q->lock);
    free(q);
}

void job_queue_destroy(job_queue *q)
{
    if (!q) return;
    if (q->n_running || q->n_compute)
        log_error("bug: job queue destroyed with %u jobs and %u computations in flight", q->n_running,
                  q->n_compute);
    uv_close((uv_handle_t *)&q->async, on_async_closed);
}
