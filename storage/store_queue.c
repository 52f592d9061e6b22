/* The shared job queue: nodes claim queued jobs with a lease, renew it while they work, and find the
 * jobs of nodes that stopped renewing. Every step is one write transaction; on SQLite BEGIN IMMEDIATE
 * serialises the claimers, so "the oldest queued job whose lane has no running job" is decided by one
 * node at a time. See docs/SCALING.md, "Shared job queue". */
#include "storage/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int store_set_node(store *s, const char *node, clad_err *err)
{
    /* One rule for node ids, as store_node_claim and the node_id config key check them. */
    int rc = check_name(node, "node", err);
    if (rc == 0) snprintf(s->node, sizeof s->node, "%s", node);
    return rc;
}

int job_check_owner(store *s, int64_t id, clad_err *err)
{
    db_stmt *st;
    int rc = st_prepare(s, &st, err, "SELECT node, lease_until FROM jobs WHERE id = ?1", "I", id);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        rc = 0;
        const char *node = col_text(st, 0);
        if (node && strcmp(node, s->node) != 0)
            rc = clad_err_set(err, CLAD_ECONFLICT, "job %lld is run by node '%s', not by this node ('%s')",
                              (long long)id, node, s->node);
        else if (node && col_int64(st, 1) < now_ms())
            rc = clad_err_set(err, CLAD_ECONFLICT, "job %lld: the lease of node '%s' has expired; the job goes "
                              "back to the queue", (long long)id, node);
    } else if (rc == 0) {
        rc = clad_err_set(err, CLAD_ENOTFOUND, "unknown job %lld", (long long)id);
    }
    st_finalize(st);
    return rc;
}

int job_commit_check(store *s, int64_t id, const char *what, clad_err *err)
{
    db_stmt *st;
    int rc = st_prepare(s, &st, err, "SELECT state FROM jobs WHERE id = ?1", "I", id);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 0) rc = clad_err_set(err, CLAD_ENOTFOUND, "unknown job %lld", (long long)id);
    else if (rc == 1 && strcmp(col_text(st, 0), "running") != 0)
        rc = clad_err_set(err, CLAD_ECONFLICT, "job %lld is %s, not running; it cannot produce %s", (long long)id,
                          col_text(st, 0), what);
    else if (rc == 1)
        rc = 0;
    st_finalize(st);
    /* On a shared store only the node holding the job's lease may commit its result. */
    return rc ? rc : job_check_owner(s, id, err);
}

int job_commit_done(store *s, int64_t id, int64_t result_version, clad_err *err)
{
    int rc = st_exec(s, err, "UPDATE jobs SET state = 'succeeded', result_version = ?2, finished_ms = ?3 WHERE id = ?1",
                     "INI", id, result_version, now_ms());
    return rc ? rc : job_data_sweep(s, err);
}

/* Deleting a large blob walks all its pages: a handle with a deferred wipe leaves that to the wipe too. */
static int data_delete_ended(store *s, clad_err *err)
{
    return st_exec(s, err, "DELETE FROM job_data WHERE job_id IN "
                   "(SELECT id FROM jobs WHERE state NOT IN ('queued', 'running'))", NULL);
}

int job_data_sweep(store *s, clad_err *err)
{
    if (s->wipe_deferred) {
        s->wipe_due = true;
        return 0;
    }
    int rc = data_delete_ended(s, err);
    if (rc == 0 && st_changes(s) > 0) s->wipe_wal = true;
    return rc;
}

void store_job_data_defer_wipe(store *s)
{
    s->wipe_deferred = true;
    s->db->ops->wipe_deferred(s->db);
}

bool store_job_data_wipe_due(store *s)
{
    bool due = s->wipe_due;
    s->wipe_due = false;
    return due;
}

int store_job_data_wipe(store *s, clad_err *err)
{
    int rc = check_writable(s, err);
    if (rc || (rc = tx_begin_write(s, err))) return rc;
    if ((rc = tx_end(s, data_delete_ended(s, err), err))) return rc;
    return s->db->ops->wipe(s->db, err);
}

int store_job_data_get(store *s, int64_t id, void **data, size_t *size, clad_err *err)
{
    *data = NULL;
    *size = 0;
    db_stmt *st;
    int rc = st_prepare(s, &st, err, "SELECT d.data FROM job_data d JOIN jobs j ON j.id = d.job_id "
                        "WHERE d.job_id = ?1 AND j.state IN ('queued', 'running')", "I", id);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        size_t n = 0;
        const void *blob = col_blob(st, 0, &n);
        void *p = malloc(n ? n : 1);
        if (!p) {
            rc = clad_err_set(err, CLAD_ENOMEM, "out of memory reading %zu bytes of job %lld's data", n, (long long)id);
        } else {
            if (n) memcpy(p, blob, n);
            *data = p;
            *size = n;
            rc = 0;
        }
    } else if (rc == 0) {
        rc = clad_err_set(err, CLAD_ENOTFOUND, "job %lld has no data (it has ended, or never had any)", (long long)id);
    }
    st_finalize(st);
    return rc;
}

/* Inside a write transaction: jobs whose owner stopped renewing go back to the queue, or end. */
static int requeue_expired_tx(store *s, int64_t *n, clad_err *err)
{
    int64_t now = now_ms();
    int rc = st_exec(s, err,
                     "UPDATE jobs SET lease_until = NULL, "
                     "state = CASE WHEN cancel_requested <> 0 THEN 'cancelled' WHEN attempt >= ?2 THEN 'failed' "
                     "ELSE 'queued' END, "
                     "finished_ms = CASE WHEN cancel_requested <> 0 OR attempt >= ?2 THEN ?1 ELSE NULL END, "
                     "error_code = CASE WHEN attempt >= ?2 AND cancel_requested = 0 THEN ?3 ELSE error_code END, "
                     "error_msg = CASE WHEN attempt >= ?2 AND cancel_requested = 0 THEN 'the job was started ' || "
                     "attempt || ' times and each time its node stopped renewing its lease (last: node ' || "
                     "node || '); not tried again' ELSE error_msg END "
                     "WHERE state = 'running' AND lease_until IS NOT NULL AND lease_until < ?1",
                     "IIi", now, (int64_t)STORE_JOB_ATTEMPTS, CLAD_EINTERNAL);
    *n = rc == 0 ? st_changes(s) : 0;
    if (rc == 0 && *n) {
        jbuf j;
        jb_init(&j);
        jb_int(&j, "jobs", *n);
        rc = audit_add(s, STORE_UID_CLAD, "jobs.lease_expired", "jobs", jb_done(&j), err);
        if (rc == 0) rc = store_jobs_notify(s, err); /* requeued jobs wait for a node */
    }
    return rc ? rc : job_data_sweep(s, err);
}

int store_jobs_notify(store *s, clad_err *err)
{
    return db_notify(s->db, STORE_JOBS_CHANNEL, "queued", err);
}

int store_jobs_listen(store *s, clad_err *err)
{
    return db_listen(s->db, STORE_JOBS_CHANNEL, err);
}

int store_jobs_drain(store *s)
{
    return db_drain(s->db, STORE_JOBS_CHANNEL);
}

int store_jobs_requeue_expired(store *s, int64_t *n, clad_err *err)
{
    int rc = check_writable(s, err);
    if (rc || (rc = tx_begin_write(s, err))) return rc;
    int64_t count = 0;
    rc = tx_end(s, requeue_expired_tx(s, &count, err), err);
    if (rc == 0 && n) *n = count;
    return rc;
}

/* A claim or a renewal lost to a power failure is harmless: the job is back to queued, or its lease
 * runs out, as it would for the node that lost power. So these commits do not wait for the disk (which
 * can take long on the daemon's loop while a worker writes a large upload). */
static int tx_begin_lease(store *s, clad_err *err)
{
    s->db->ops->sync_commits(s->db, false);
    int rc = tx_begin_write(s, err);
    if (rc) s->db->ops->sync_commits(s->db, true);
    return rc;
}

static int tx_end_lease(store *s, int rc, clad_err *err)
{
    rc = tx_end(s, rc, err);
    s->db->ops->sync_commits(s->db, true);
    return rc;
}

int store_job_claim(store *s, int64_t only_id, const char *kind, int64_t lease_ms, store_job **out,
                    clad_err *err)
{
    *out = NULL;
    if (!s->node[0]) return clad_err_set(err, CLAD_EINVAL, "claiming jobs needs a node id (store_set_node)");
    if (lease_ms <= 0) return clad_err_set(err, CLAD_EINVAL, "a lease must be positive");
    int rc = check_writable(s, err);
    if (rc || (rc = tx_begin_lease(s, err))) return rc;
    int64_t expired = 0, id = 0, owner = 0, now = now_ms();
    rc = requeue_expired_tx(s, &expired, err);
    /* A lane ('' = none) runs one job at a time across every node. */
    if (rc == 0) {
        /* PostgreSQL: other claimers skip the row this one locks (its writers are serialised too). */
        char sql[400];
        snprintf(sql, sizeof sql,
                 "SELECT id FROM jobs j WHERE state = 'queued' AND (?1 = 0 OR id = ?1) AND "
                 "(CAST(?2 AS TEXT) IS NULL OR kind = ?2) AND NOT EXISTS "
                 "(SELECT 1 FROM jobs r WHERE r.state = 'running' AND r.lane = j.lane AND j.lane != '') "
                 "ORDER BY id LIMIT 1%s", s->db->ops->skip_locked ? " FOR UPDATE SKIP LOCKED" : "");
        rc = st_int(s, &id, err, sql, "It", only_id, kind);
        if (rc == CLAD_ENOTFOUND) {
            rc = 0;
            id = 0;
        }
    }
    if (rc == 0 && id)
        rc = st_exec(s, err,
                     "UPDATE jobs SET state = 'running', node = ?2, lease_until = ?3, attempt = attempt + 1, "
                     "started_ms = ?4 WHERE id = ?1", "ItII", id, s->node, now + lease_ms, now);
    if (rc == 0 && id) rc = st_int(s, &owner, err, "SELECT peer_uid FROM jobs WHERE id = ?1", "I", id);
    if (rc == 0 && id) {
        char object[32];
        snprintf(object, sizeof object, "job:%lld", (long long)id);
        jbuf j;
        jb_init(&j);
        jb_str(&j, "state", "running");
        jb_str(&j, "node", s->node);
        rc = audit_add(s, (int)owner, "job.running", object, jb_done(&j), err);
    }
    if (rc == 0 && id) rc = job_get_where(s, "WHERE id = ?1", id, out, err);
    rc = tx_end_lease(s, rc, err);
    if (rc) {
        store_job_free(*out);
        *out = NULL;
    }
    return rc;
}

int store_job_renew(store *s, int64_t id, int64_t lease_ms, bool *cancel_requested, clad_err *err)
{
    if (lease_ms <= 0) return clad_err_set(err, CLAD_EINVAL, "a lease must be positive");
    int rc = check_writable(s, err);
    if (rc) return rc;
    /* One statement outside the serialised write transactions, as the node heartbeat: on PostgreSQL a
     * renewal waits for this job's row only, never behind another writer's large commit (a 512 MiB upload
     * holds the writers' lock for seconds, longer than a lease has left). It needs no more: a claim's
     * requeue that changes this row locks it as well, and each re-checks its WHERE on the row the other
     * left (READ COMMITTED), so a lease is either renewed in time or requeued, never both. On SQLite every
     * write takes the file's one write lock anyway (docs/SCALING.md, "Large uploads and leases"). */
    int64_t now = now_ms(), cancel = 0;
    s->db->ops->sync_commits(s->db, false);
    rc = st_int(s, &cancel, err,
                "UPDATE jobs SET lease_until = ?3 WHERE id = ?1 AND state = 'running' AND node = ?2 "
                "AND lease_until >= ?4 RETURNING cancel_requested", "ItII", id, s->node, now + lease_ms, now);
    s->db->ops->sync_commits(s->db, true);
    if (rc == CLAD_ENOTFOUND)
        rc = clad_err_set(err, CLAD_ECONFLICT, "job %lld: node '%s' no longer holds its lease", (long long)id,
                          s->node);
    if (rc == 0 && cancel_requested) *cancel_requested = cancel != 0;
    return rc;
}
