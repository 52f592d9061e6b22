/* Jobs: persisted daemon work with a small state machine, so a restart finds and marks interrupted
 * work instead of resuming half of it. */
#include "storage/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {"queued", "running", "succeeded", "failed", "cancelled",
                                          "interrupted"};

const char *store_job_state_name(store_job_state st)
{
    return (unsigned)st < sizeof state_names / sizeof state_names[0] ? state_names[st] : "unknown";
}

static store_job_state state_parse(const char *name)
{
    for (size_t i = 0; name && i < sizeof state_names / sizeof state_names[0]; i++)
        if (strcmp(name, state_names[i]) == 0) return (store_job_state)i;
    return STORE_JOB_INTERRUPTED; /* unreachable: the schema's CHECK allows only the names above */
}

static int audit_job(store *s, int peer_uid, const char *action, int64_t id, const char *state,
                     const char *extra_key, int64_t extra, clad_err *err)
{
    char object[32];
    snprintf(object, sizeof object, "job:%lld", (long long)id);
    jbuf j;
    jb_init(&j);
    jb_str(&j, "state", state);
    if (extra_key) jb_int(&j, extra_key, extra);
    return audit_add(s, peer_uid, action, object, jb_done(&j), err);
}

int store_job_create(store *s, const char *kind, const char *task, const char *lane, const char *request_json,
                     int peer_uid, int64_t *id_out, clad_err *err)
{
    return store_job_create_with_data(s, kind, task, lane, request_json, NULL, 0, peer_uid, id_out, err);
}

int store_job_create_with_data(store *s, const char *kind, const char *task, const char *lane,
                               const char *request_json, const void *data, size_t data_size, int peer_uid,
                               int64_t *id_out, clad_err *err)
{
    if (data && data_size > STORE_BLOB_MAX)
        return clad_err_set(err, CLAD_ETOOLARGE, "job data of %zu bytes is over the limit of %u", data_size,
                            STORE_BLOB_MAX);
    int rc = check_name(kind, "job kind", err);
    if (rc || (task && (rc = check_name(task, "task", err)))) return rc;
    if (lane && strnlen(lane, STORE_NAME_MAX + 1) > STORE_NAME_MAX)
        return clad_err_set(err, CLAD_EINVAL, "job lane is longer than %d bytes", STORE_NAME_MAX);
    if ((rc = check_json(s, request_json, "object", true, "job request", err))) return rc;
    if ((rc = tx_begin_write(s, err))) return rc;
    int64_t id = 0;
    rc = st_int(s, &id, err,
                "INSERT INTO jobs (kind, task, lane, state, request_json, peer_uid, created_ms) "
                "VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6) RETURNING id", "ttttiI", kind, task ? task : "",
                lane ? lane : "", request_json ? request_json : "{}", peer_uid, now_ms());
    /* The data commits with its job: a crash leaves both or neither. */
    if (rc == 0 && data)
        rc = st_exec(s, err, "INSERT INTO job_data (job_id, data) VALUES (?1, ?2)", "Ib", id, data, data_size);
    if (rc == 0) rc = audit_job(s, peer_uid, "job.create", id, "queued", NULL, 0, err);
    if (rc == 0) rc = store_jobs_notify(s, err); /* idle nodes claim it at once (delivered at commit) */
    rc = tx_end(s, rc, err);
    if (rc == 0 && id_out) *id_out = id;
    return rc;
}

/* Inside a write transaction: checks that job id is in one of the states in `from` (NULL-terminated)
 * and gives its owner's uid; CLAD_ECONFLICT naming the current state otherwise. */
static int job_check_state(store *s, int64_t id, const char *const *from, const char *to, int *owner,
                           clad_err *err)
{
    db_stmt *st;
    int rc = st_prepare(s, &st, err, "SELECT state, peer_uid FROM jobs WHERE id = ?1", "I", id);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        const char *state = col_text(st, 0);
        *owner = col_int(st, 1);
        rc = CLAD_ECONFLICT;
        for (size_t i = 0; from[i]; i++)
            if (strcmp(state, from[i]) == 0) rc = 0;
        if (rc) clad_err_set(err, rc, "job %lld is %s; it cannot become %s", (long long)id, state, to);
        else if (strcmp(state, "running") == 0) rc = job_check_owner(s, id, err);
    } else if (rc == 0) {
        rc = clad_err_set(err, CLAD_ENOTFOUND, "unknown job %lld", (long long)id);
    }
    st_finalize(st);
    return rc;
}

static const char *const from_queued[] = {"queued", NULL};
static const char *const from_running[] = {"running", NULL};
static const char *const from_live[] = {"queued", "running", NULL};

/* State changes made on behalf of the job's owner are audited with the owner's uid. */

int store_job_mark_running(store *s, int64_t id, clad_err *err)
{
    int owner = 0, rc = tx_begin_write(s, err);
    if (rc) return rc;
    rc = job_check_state(s, id, from_queued, "running", &owner, err);
    if (rc == 0)
        rc = st_exec(s, err, "UPDATE jobs SET state = 'running', started_ms = ?2 WHERE id = ?1", "II", id, now_ms());
    if (rc == 0) rc = audit_job(s, owner, "job.running", id, "running", NULL, 0, err);
    return tx_end(s, rc, err);
}

/* The final transitions, inside a write transaction the caller holds. */

static int mark_succeeded_tx(store *s, int64_t id, int64_t result_version, clad_err *err)
{
    int owner = 0;
    int rc = job_check_state(s, id, from_running, "succeeded", &owner, err);
    if (rc == 0)
        rc = st_exec(s, err, "UPDATE jobs SET state = 'succeeded', finished_ms = ?2, result_version = ?3 "
                     "WHERE id = ?1", "IIN", id, now_ms(), result_version);
    if (rc == 0)
        rc = audit_job(s, owner, "job.succeeded", id, "succeeded", result_version ? "result_version" : NULL,
                       result_version, err);
    return rc ? rc : job_data_sweep(s, err);
}

static int mark_failed_tx(store *s, int64_t id, int code, const char *msg, clad_err *err)
{
    char m[STORE_ERRMSG_MAX + 1];
    snprintf(m, sizeof m, "%s", msg ? msg : "");
    int owner = 0;
    int rc = job_check_state(s, id, from_live, "failed", &owner, err);
    if (rc == 0)
        rc = st_exec(s, err, "UPDATE jobs SET state = 'failed', finished_ms = ?2, error_code = ?3, error_msg = ?4 "
                     "WHERE id = ?1", "IIit", id, now_ms(), code, m);
    if (rc == 0) rc = audit_job(s, owner, "job.failed", id, "failed", "error_code", code, err);
    return rc ? rc : job_data_sweep(s, err);
}

/* cancelled or interrupted, audited with *audit_uid (who cancelled), or with the owner's uid when NULL. */
static int mark_stopped_tx(store *s, int64_t id, const char *state, const int *audit_uid, clad_err *err)
{
    int owner = 0;
    int rc = job_check_state(s, id, from_live, state, &owner, err);
    if (rc == 0)
        rc = st_exec(s, err, "UPDATE jobs SET state = ?3, finished_ms = ?2 WHERE id = ?1", "IIt", id, now_ms(),
                     state);
    char action[32];
    snprintf(action, sizeof action, "job.%s", state);
    if (rc == 0) rc = audit_job(s, audit_uid ? *audit_uid : owner, action, id, state, NULL, 0, err);
    return rc ? rc : job_data_sweep(s, err);
}

int store_job_mark_succeeded(store *s, int64_t id, int64_t result_version, clad_err *err)
{
    if (result_version < 0) return clad_err_set(err, CLAD_EINVAL, "result version must be >= 0");
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    return tx_end(s, mark_succeeded_tx(s, id, result_version, err), err);
}

int store_job_mark_failed(store *s, int64_t id, int code, const char *msg, clad_err *err)
{
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    return tx_end(s, mark_failed_tx(s, id, code, msg, err), err);
}

int store_job_mark_cancelled(store *s, int64_t id, int peer_uid, clad_err *err)
{
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    return tx_end(s, mark_stopped_tx(s, id, "cancelled", &peer_uid, err), err);
}

int store_job_request_cancel(store *s, int64_t id, int peer_uid, store_job_state *state_out, clad_err *err)
{
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int owner = 0;
    store_job_state after = STORE_JOB_CANCELLED;
    /* A queued job has no owner yet: it ends here. A running one is ended by its owner, who sees the
     * request at its next lease renewal. */
    rc = job_check_state(s, id, from_queued, "cancelled", &owner, err);
    if (rc == CLAD_ECONFLICT) {
        clad_err_clear(err);
        after = STORE_JOB_RUNNING;
        rc = st_exec(s, err, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'", "I", id);
        if (rc == 0 && st_changes(s) == 0) {
            store_job *j = NULL;
            rc = store_job_get(s, id, &j, err);
            if (rc == 0)
                rc = clad_err_set(err, CLAD_ECONFLICT, "job %lld has already %s", (long long)id,
                                  store_job_state_name(j->state));
            store_job_free(j);
        }
        if (rc == 0) rc = audit_job(s, peer_uid, "job.cancel_requested", id, "running", NULL, 0, err);
    } else if (rc == 0) {
        rc = mark_stopped_tx(s, id, "cancelled", &peer_uid, err);
    }
    rc = tx_end(s, rc, err);
    if (rc == 0 && state_out) *state_out = after;
    return rc;
}

int store_job_set_progress(store *s, int64_t id, const char *progress_json, clad_err *err)
{
    int rc = check_json(s, progress_json, "object", false, "job progress", err);
    if (rc || (rc = tx_begin_write(s, err))) return rc;
    rc = st_exec(s, err, "UPDATE jobs SET progress_json = ?2 WHERE id = ?1 AND state = 'running'", "It", id,
                 progress_json);
    if (rc == 0 && st_changes(s) == 0) {
        int64_t exists;
        rc = st_int(s, &exists, err, "SELECT 1 FROM jobs WHERE id = ?1", "I", id);
        rc = rc == CLAD_ENOTFOUND ? clad_err_set(err, rc, "unknown job %lld", (long long)id)
                                  : clad_err_set(err, CLAD_ECONFLICT, "job %lld is not running", (long long)id);
    }
    return tx_end(s, rc, err);
}

static int set_outcome_tx(store *s, int64_t id, const store_job_outcome *o, clad_err *err)
{
    static const char *const from_final[] = {"succeeded", "failed", "cancelled", "interrupted", NULL};
    int owner = 0;
    int rc = job_check_state(s, id, from_final, "a recorded outcome", &owner, err);
    if (rc == 0)
        rc = st_exec(s, err,
                     "UPDATE jobs SET result_json = coalesce(?2, result_json), "
                     "progress_json = coalesce(?3, progress_json), "
                     "created_ms = CASE WHEN ?4 > 0 THEN ?4 ELSE created_ms END, "
                     "started_ms = CASE WHEN ?5 > 0 THEN ?5 ELSE started_ms END, "
                     "finished_ms = CASE WHEN ?6 > 0 THEN ?6 ELSE finished_ms END WHERE id = ?1",
                     "IttIII", id, o->result_json, o->progress_json, o->created_ms, o->started_ms, o->finished_ms);
    return rc;
}

static int check_outcome(store *s, const store_job_outcome *o, clad_err *err)
{
    int rc = check_json(s, o->result_json, "object", true, "job result", err);
    return rc ? rc : check_json(s, o->progress_json, "object", true, "job progress", err);
}

int store_job_set_outcome(store *s, int64_t id, const store_job_outcome *o, clad_err *err)
{
    int rc = check_outcome(s, o, err);
    if (rc || (rc = tx_begin_write(s, err))) return rc;
    return tx_end(s, set_outcome_tx(s, id, o, err), err);
}

int store_job_finish(store *s, int64_t id, const store_job_end *e, clad_err *err)
{
    int rc = check_outcome(s, &e->outcome, err);
    if (rc || (rc = tx_begin_write(s, err))) return rc;
    switch (e->state) {
    case STORE_JOB_SUCCEEDED: {
        /* A job that committed a version was marked succeeded in that version's transaction. */
        store_job *cur = NULL;
        rc = store_job_get(s, id, &cur, err);
        if (rc == 0 && cur->state != STORE_JOB_SUCCEEDED) rc = mark_succeeded_tx(s, id, 0, err);
        store_job_free(cur);
        break;
    }
    case STORE_JOB_FAILED: rc = mark_failed_tx(s, id, e->error_code, e->error_msg, err); break;
    case STORE_JOB_CANCELLED: rc = mark_stopped_tx(s, id, "cancelled", &e->peer_uid, err); break;
    case STORE_JOB_INTERRUPTED: rc = mark_stopped_tx(s, id, "interrupted", NULL, err); break;
    default: rc = clad_err_set(err, CLAD_EINVAL, "job %lld cannot finish as %s", (long long)id,
                               store_job_state_name(e->state));
    }
    if (rc == 0) rc = set_outcome_tx(s, id, &e->outcome, err);
    return tx_end(s, rc, err);
}

int store_jobs_mark_interrupted(store *s, int64_t *n_marked, clad_err *err)
{
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    rc = st_exec(s, err,
                 "UPDATE jobs SET state = 'interrupted', finished_ms = ?1, "
                 "error_msg = 'clad stopped while the job was ' || state "
                 "WHERE state IN ('queued', 'running')", "I", now_ms());
    int64_t n = st_changes(s);
    if (rc == 0 && n) {
        jbuf j;
        jb_init(&j);
        jb_int(&j, "jobs", n);
        rc = audit_add(s, STORE_UID_CLAD, "jobs.interrupted", "jobs", jb_done(&j), err);
    }
    if (rc == 0) rc = job_data_sweep(s, err);
    rc = tx_end(s, rc, err);
    if (rc == 0 && n_marked) *n_marked = n;
    return rc;
}

static const char job_cols[] =
    "SELECT id, kind, task, state, error_code, error_msg, request_json, progress_json, result_version, "
    "peer_uid, created_ms, started_ms, finished_ms, result_json, lane, node, attempt, lease_until, "
    "cancel_requested FROM jobs ";

static void job_from_row(db_stmt *st, store_job *j)
{
    memset(j, 0, sizeof *j);
    j->id = col_int64(st, 0);
    col_copy(st, 1, j->kind, sizeof j->kind);
    col_copy(st, 2, j->task, sizeof j->task);
    j->state = state_parse(col_text(st, 3));
    j->error_code = col_int(st, 4);
    col_copy(st, 5, j->error_msg, sizeof j->error_msg);
    j->request_json = col_strdup(st, 6);
    j->progress_json = col_strdup(st, 7);
    j->result_version = col_int64(st, 8);
    j->peer_uid = col_int(st, 9);
    j->created_ms = col_int64(st, 10);
    j->started_ms = col_int64(st, 11);
    j->finished_ms = col_int64(st, 12);
    j->result_json = col_strdup(st, 13);
    col_copy(st, 14, j->lane, sizeof j->lane);
    col_copy(st, 15, j->node, sizeof j->node);
    j->attempt = col_int(st, 16);
    j->lease_until_ms = col_int64(st, 17);
    j->cancel_requested = col_int(st, 18) != 0;
}

/* Shared with store_queue.c: one job row as the columns above select it. */
int job_get_where(store *s, const char *where, int64_t id, store_job **out, clad_err *err)
{
    *out = NULL;
    db_stmt *st;
    char sql[512];
    snprintf(sql, sizeof sql, "%s%s", job_cols, where);
    int rc = st_prepare(s, &st, err, sql, "I", id);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        store_job *j = malloc(sizeof *j);
        if (!j) abort();
        job_from_row(st, j);
        *out = j;
        rc = 0;
    }
    st_finalize(st);
    return rc;
}

int store_job_get(store *s, int64_t id, store_job **out, clad_err *err)
{
    int rc = job_get_where(s, "WHERE id = ?1", id, out, err);
    if (rc == 0 && !*out) rc = clad_err_set(err, CLAD_ENOTFOUND, "unknown job %lld", (long long)id);
    return rc;
}

int store_jobs_list(store *s, const char *task, size_t limit, store_job **out, size_t *n, clad_err *err)
{
    *out = NULL;
    *n = 0;
    db_stmt *st;
    char sql[512];
    snprintf(sql, sizeof sql, "%sWHERE ?1 IS NULL OR task = ?1 ORDER BY id DESC LIMIT ?2", job_cols);
    int rc = st_prepare(s, &st, err, sql, "tI", task, limit ? (int64_t)limit : INT64_MAX);
    if (rc) return rc;
    row_list rows = ROW_LIST_INIT(store_job);
    store_job *j;
    while (rc == 0 && (j = st_step_append(s, st, &rows, "listing jobs", &rc, err))) job_from_row(st, j);
    st_finalize(st);
    if (rc < 0) {
        store_jobs_free(rows.items, rows.n);
        return rc;
    }
    *out = rows.items;
    *n = rows.n;
    return 0;
}

void store_job_free(store_job *j)
{
    if (!j) return;
    free(j->request_json);
    free(j->progress_json);
    free(j->result_json);
    free(j);
}

void store_jobs_free(store_job *j, size_t n)
{
    if (!j) return;
    for (size_t i = 0; i < n; i++) {
        free(j[i].request_json);
        free(j[i].progress_json);
        free(j[i].result_json);
    }
    free(j);
}
