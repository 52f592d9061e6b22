/* Background jobs (training and the like) and short compute tasks (prediction) on libuv's worker pool.
 *
 * A job has an id, a kind (what it does), a lane and a state:
 *
 *     queued -> running -> succeeded | failed | cancelled | interrupted
 *     queued -> cancelled (DELETE before it started) | interrupted (daemon stopped before it started)
 *
 * At most one job runs per lane (the lane is the base model name: two trainings of one base never
 * overlap) and at most max_running jobs run at all; the oldest queued job whose lane is free starts
 * first. A running job's work (kind->run) runs on one worker thread of libuv's pool; it must check
 * job_should_stop between steps and return CLAD_ECANCELLED when asked, which is how a cancel takes
 * effect within one step. Its progress events (job_post, callable from the worker) reach the loop thread
 * through a uv_async and are fanned out to followers (streaming responses) and the on_progress hook.
 * When run returns, kind->finish runs on the loop thread (commit or discard the result), then the final
 * state is published.
 *
 * Threads and predictions: libuv's pool is shared by everything queued with uv_queue_work. Jobs occupy
 * at most max_running threads (1 by default), so if the pool has max_running + compute_threads threads
 * (cladd sets UV_THREADPOOL_SIZE accordingly before the pool starts) compute tasks such as predictions
 * (job_queue_compute) always find a thread that no training holds: they may wait behind other
 * predictions, never behind training. A running job also gets an engine thread pool of engine_threads
 * (bound to its worker thread, so the engine's kernels split their work over it); while predictions are
 * in flight it shrinks to leave them the cores, and grows back when they are done. The engine's results
 * do not depend on its thread count, so this changes timing only. The loop thread never runs job or
 * compute work.
 *
 * Persistence: the queue itself lives in memory. The hooks let the store record every state change (and
 * refuse a submission it cannot record, or give the job the store's id); job_queue_restore loads finished
 * jobs back after a restart. Shared queue: before a queued job starts, the on_claim hook claims it in the
 * store, where other nodes may have taken it or may be running its lane (daemon/job_claim.c).
 *
 * Everything here runs on the loop thread, except job_should_stop, job_post and job_id, which a kind's
 * run function calls from its worker thread.
 */
#ifndef CLAD_DAEMON_JOBS_H
#define CLAD_DAEMON_JOBS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "core/error.h"

typedef enum job_state {
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_SUCCEEDED,
    JOB_FAILED,
    JOB_CANCELLED,
    JOB_INTERRUPTED,
    JOB_STATE_COUNT
} job_state;

typedef struct job job;
typedef struct job_queue job_queue;
typedef struct job_follower job_follower;

/* What one kind of job does. Kinds are static const tables. */
typedef struct job_kind {
    const char *name; /* "train", "sleep" */
    /* Worker thread: does the work. Checks job_should_stop(j) between steps and then returns
     * CLAD_ECANCELLED; posts progress with job_post. Returns 0 or a CLAD_E* code with err filled (err is
     * the run's own: the loop publishes it only after run returned, so readers never see a torn one). On
     * success it may set *result to a JSON object (ownership passes to the job). It must not call libuv
     * or touch loop-thread state. */
    int (*run)(job *j, void *arg, json_t **result, clad_err *err);
    /* Loop thread, after run returned (whatever it returned) and before the final state is published:
     * commit the work on success, discard it otherwise. Returns the final status (normally `status`; an
     * error if the commit failed, which makes the job failed). Optional. */
    int (*finish)(job *j, void *arg, int status, clad_err *err);
    /* Loop thread: frees arg once the job no longer needs it. Optional. */
    void (*free_arg)(void *arg);
} job_kind;

typedef struct job_spec {
    const job_kind *kind;
    const char *lane;   /* jobs of one lane run one at a time; 1..63 bytes */
    const char *task;   /* the task the job creates or changes (recorded with it); NULL: none */
    void *arg;          /* the job owns it after a successful submit (kind->free_arg) */
    uint64_t id;        /* 0: the queue numbers it; else this id (a job claimed from the shared queue) */
    json_t *params;     /* public description shown in the job's JSON; stolen, also on failure (NULL: {}) */
    uid_t owner_uid;    /* who submitted it */
} job_spec;

typedef struct job_hooks {
    /* Loop thread, after each state change: queued (on submit), running, and the final state. For the
     * queued change, a nonzero return (with err filled) refuses the submission with that error. */
    int (*on_state)(job *j, void *data, clad_err *err);
    /* Loop thread, for each progress event after the followers got it. */
    void (*on_progress)(job *j, const json_t *event, void *data);
    /* Loop thread, before a queued job starts (its lane is free here): JOB_CLAIM_START to start it,
     * JOB_CLAIM_WAIT to leave it queued (its lane is busy on another node), JOB_CLAIM_GONE when it is
     * not this node's any more (another node took it, or it was cancelled there): the queue drops it
     * without another state change. Optional (every job starts). */
    int (*on_claim)(job *j, void *data);
    void *data;
} job_hooks;

typedef struct job_queue_options {
    unsigned max_running; /* jobs running at once, each on one worker thread; >= 1 */
    unsigned max_queued;  /* more queued jobs: CLAD_EBUSY */
    unsigned max_compute; /* compute tasks in flight; more: CLAD_EBUSY */
    unsigned history;     /* finished jobs kept in memory for listing */
    /* Engine threads of each running job (core/parallel.h); 0 or 1 = the job's own thread only. A job
     * lends all but one of them back while compute tasks (predictions) are in flight: its budget is
     * engine_threads - (compute tasks in flight), at least 1, so predictions find a free core. */
    unsigned engine_threads;
    job_hooks hooks;
} job_queue_options;

enum { JOB_CLAIM_GONE = -1, JOB_CLAIM_WAIT = 0, JOB_CLAIM_START = 1 };

/* A finished job loaded from the store after a restart. */
typedef struct job_record {
    uint64_t id;
    const char *kind;
    const char *lane;
    job_state state;   /* must be a final state */
    double created, started, finished; /* Unix seconds; 0 = never */
    json_t *params;    /* stolen; NULL: {} */
    json_t *result;    /* stolen; may be NULL */
    json_t *progress;  /* stolen; may be NULL: the last progress event */
    int error_code;    /* 0 or CLAD_E* */
    const char *error_message;
    uid_t owner_uid;
    const char *node;  /* the node that ran it (shared queue); NULL or "": none */
    int attempt;       /* its starts so far */
    bool cancel_requested;
} job_record;

const char *job_state_name(job_state s);
/* "running" -> JOB_RUNNING; -1 if unknown. */
int job_state_parse(const char *name);
bool job_state_final(job_state s);

/* Creates a queue on loop (aborts on allocation failure; startup only). */
job_queue *job_queue_create(uv_loop_t *loop, const job_queue_options *opts);
/* Limits that can change on reload (max_running cannot: the thread pool is sized at start). */
void job_queue_set_limits(job_queue *q, unsigned max_queued, unsigned max_compute, unsigned history);
/* Ids continue after the largest the store has seen. */
void job_queue_set_next_id(job_queue *q, uint64_t next_id);

/* Queues a job and starts it if its lane and a slot are free. On success *out (if non-NULL) is the job,
 * valid on the loop thread until it is evicted from history (never before the end of the current
 * callback). CLAD_EBUSY when max_queued jobs wait or the queue is stopping; CLAD_EINVAL for a bad lane;
 * the on_state hook's error. On failure spec->arg stays the caller's. */
int job_submit(job_queue *q, job_spec *spec, job **out, clad_err *err);

/* The job with this id, or NULL. */
job *job_find(job_queue *q, uint64_t id);
/* Inside the on_state hook of a job being queued: gives it this id (the store's), unused so far. */
void job_assign_id(job *j, uint64_t id);
/* Tries again to start queued jobs (their lanes may have become free on other nodes). */
void job_queue_poll(job_queue *q);
/* This node lost the job to another (its lease in the store expired): a queued job is dropped, a running
 * job is asked to stop and ends interrupted, its finish told CLAD_ECANCELLED (nothing is committed). */
void job_abandon(job_queue *q, job *j);
/* Whether job_abandon was called on it. */
bool job_abandoned(const job *j);

/* Cancels: a queued job becomes cancelled at once; a running job is asked to stop (job_should_stop) and
 * becomes cancelled when its run returns, whatever run returned: a cancel accepted while the job is
 * running is always honoured (finish is told CLAD_ECANCELLED and commits nothing). CLAD_ECONFLICT once the
 * job has finished, which includes the moment its result is being committed: there is no window in which
 * a cancel is accepted and then ignored. */
int job_cancel(job_queue *q, job *j, clad_err *err);

/* Engine threads each running job gets (the option, at least 1). */
unsigned job_queue_engine_threads(const job_queue *q);

/* Loop-thread accessors. */
/* The result run returned, during kind->finish (borrowed; finish may add fields, e.g. what it committed). */
json_t *job_run_result(job *j);
uint64_t job_id(const job *j);
job_state job_get_state(const job *j);
const char *job_lane(const job *j);
/* The spec's task; NULL for none (and for restored jobs). */
const char *job_task(const job *j);
const char *job_kind_name(const job *j);
bool job_cancel_requested(const job *j);
/* Unix seconds; 0 = not yet. */
void job_times(const job *j, double *created, double *started, double *finished);
/* The published error (code 0: none): what job_to_json reports as "error". */
const clad_err *job_error(const job *j);
/* The job as JSON (new reference): id, kind, lane, state, created/started/finished (RFC 3339 UTC to
 * the millisecond, rounded, or null), params, progress (the last event), result, error, cancel_requested,
 * owner_uid, node (who runs or ran it; null when none) and attempt (its starts). */
json_t *job_to_json(const job *j);
/* Jobs newest first, optionally only one state (-1: all) or one lane (NULL: all), at most limit. */
json_t *job_queue_list_json(job_queue *q, int state, const char *lane, size_t limit);
void job_queue_counts(const job_queue *q, unsigned counts[JOB_STATE_COUNT]);
/* Compute tasks in flight. */
unsigned job_queue_compute_count(const job_queue *q);

/* A job of the store that this node does not hold, as JSON like job_to_json (any state); takes the
 * record's JSON values. */
json_t *job_record_to_json(job_record *rec);
/* Which node runs the job and its start count (shown as "node" and "attempt" in its JSON). */
void job_set_node(job *j, const char *node, int attempt);

/* Adds a finished job from the store (for listings after a restart). CLAD_EINVAL if the state is not
 * final, CLAD_ECONFLICT if the id exists. The next id moves past it. */
int job_queue_restore(job_queue *q, job_record *rec, clad_err *err);

/* --- worker side (thread-safe) ------------------------------------------------------------------- */

/* True once cancel or shutdown asked the job to stop. */
bool job_should_stop(const job *j);
/* Posts a progress event (a JSON object; stolen). The queue adds "event": "progress" unless set, and
 * "job": id. Never blocks; if the loop falls more than 4096 events behind, new events are dropped
 * (and counted in the job's JSON as progress_dropped). */
void job_post(job *j, json_t *event);

/* --- followers ------------------------------------------------------------------------------------- */

/* Receives each later progress event and finally {"event": "end", "job": <job JSON>} with last = true,
 * after which the follower is gone by itself. The event is borrowed for the call. */
typedef void (*job_event_fn)(job *j, const json_t *event, bool last, void *data);

/* Follows a queued or running job; NULL if it has already finished (send its JSON instead). */
job_follower *job_follow(job *j, job_event_fn fn, void *data);
/* Stops following (safe from inside fn). Not to be called after the last event. */
void job_unfollow(job_follower *f);

/* --- compute --------------------------------------------------------------------------------------- */

/* Worker thread: the computation. Returns 0 or a CLAD_E* code with err filled. */
typedef int (*compute_fn)(void *arg, clad_err *err);
/* Loop thread, afterwards. */
typedef void (*compute_done_fn)(void *arg, int status, const clad_err *err);

/* Runs fn(arg) on the pool, then done(arg, ...) on the loop. CLAD_EBUSY when max_compute tasks are in
 * flight or the queue is stopping (done is then not called). */
int job_queue_compute(job_queue *q, compute_fn fn, compute_done_fn done, void *arg, clad_err *err);

/* --- lifecycle ------------------------------------------------------------------------------------- */

/* Stopping: queued jobs become interrupted, running jobs are asked to stop and become interrupted when
 * their run returns (finish still runs, so nothing is half-committed), new submissions and compute tasks
 * are refused. done runs on the loop once no job or compute task is in flight (possibly in the next loop
 * iteration, never inside this call). */
void job_queue_shutdown(job_queue *q, void (*done)(job_queue *q, void *data), void *data);
/* Frees the queue, after shutdown's done callback. Its async handle is closed, so run the loop once more
 * before closing the loop. */
void job_queue_destroy(job_queue *q);

#endif
