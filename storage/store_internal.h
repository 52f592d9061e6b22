/* Private to storage/: the store handle, statement helpers, transactions, validation and the audit
 * writer shared by the store_*.c files. Nothing outside storage/ includes this. The store_*.c files
 * speak to the database only through these helpers, which call the backend's driver (storage/db.h). */
#ifndef CLAD_STORAGE_STORE_INTERNAL_H
#define CLAD_STORAGE_STORE_INTERNAL_H

#include "storage/db.h"
#include "storage/store.h"

struct store {
    db *db;           /* the connection; db->ops is the backend's driver */
    char *path;       /* for messages: the file, or the URI without its password */
    bool readonly;    /* opened with store_open_reader */
    bool in_snapshot; /* between store_snapshot_begin and _end */
    char node[STORE_NAME_MAX + 1]; /* store_set_node: the node claiming jobs through this handle ("": none) */
    bool wipe_wal;    /* job data was deleted: after the commit, wipe its pages (store_job_data_wipe) */
    bool wipe_deferred; /* store_job_data_defer_wipe: leave that to store_job_data_wipe */
    bool wipe_due;    /* a deferred wipe is due (store_job_data_wipe_due) */
    int busy_ms;      /* store_set_busy_timeout */
};

#define STORE_BUSY_TIMEOUT_MS 5000

/* Ordered migrations per backend (store_schema.c): entry i takes schema version i to i + 1. Both lists
 * have STORE_SCHEMA_VERSION entries with the same meaning. */
extern const char *const store_migrations_sqlite[];
extern const char *const store_migrations_pg[];

/* The backend's name: "sqlite" or "postgresql". */
const char *store_backend(const store *s);

/* ---- Statements (store_util.c) ---- */

/* Prepares sql and binds one argument per letter of types, to ?1, ?2, ... in order:
 *   t  const char *          (NULL binds SQL NULL)
 *   i  int
 *   I  int64_t
 *   N  int64_t, where 0 binds SQL NULL (optional ids and versions)
 *   d  double
 *   b  const void *, size_t  (NULL binds SQL NULL)
 * On failure *st is NULL and err is filled. */
int st_prepare(store *s, db_stmt **st, clad_err *err, const char *sql, const char *types, ...);
/* Steps once: 1 for a row, 0 when done, or a negative CLAD_E* code with err filled. */
int st_step(store *s, db_stmt *st, clad_err *err);
/* Releases a statement; accepts NULL. */
void st_finalize(db_stmt *st);
/* Prepares, binds, runs to completion and finalizes a statement that returns no rows we need. */
int st_exec(store *s, clad_err *err, const char *sql, const char *types, ...);
/* Runs a query whose first row's first column is an integer: 0 and *out set, CLAD_ENOTFOUND when
 * there is no row (err untouched, so callers can word it), or another error. */
int st_int(store *s, int64_t *out, clad_err *err, const char *sql, const char *types, ...);

/* Rows changed by the last INSERT, UPDATE or DELETE on this handle. */
int64_t st_changes(store *s);

/* Maps the driver's last error (rc: its own result code where it has one) to a CLAD_E* code and fills
 * err with what failed. */
int st_error(store *s, int rc, clad_err *err, const char *what);

/* Column getters for the current row; SQL NULL reads as 0, 0.0, "" (col_copy), NULL (col_strdup,
 * col_text, col_blob). col_text and col_blob point into the statement until its next step. */
void col_copy(db_stmt *st, int i, char *buf, size_t cap);
char *col_strdup(db_stmt *st, int i);
const char *col_text(db_stmt *st, int i);
int64_t col_int64(db_stmt *st, int i);
int col_int(db_stmt *st, int i);
double col_double(db_stmt *st, int i);
const void *col_blob(db_stmt *st, int i, size_t *n);
bool col_is_null(db_stmt *st, int i);

/* Records read from a query's rows, one per row, into one growing array (st_step_append). */
typedef struct row_list {
    void *items; /* n records of elem bytes; the caller owns them (and what they point to) */
    size_t n;    /* records appended */
    size_t cap;  /* records allocated */
    size_t elem; /* size of one record */
} row_list;
#define ROW_LIST_INIT(type) ((row_list){NULL, 0, 0, sizeof(type)})

/* Steps st and, on a row, appends one zeroed record to rows and returns it for the caller to fill from
 * the row. Returns NULL when the rows are done (*rc 0) or on failure (*rc a negative code, err filled;
 * out of memory reads "out of memory <doing>"). Records appended before stay in rows either way, so the
 * caller frees rows.items (and its records' contents) on failure. Loop with
 *     while (rc == 0 && (r = st_step_append(s, st, &rows, "listing things", &rc, err))) fill(r);
 */
void *st_step_append(store *s, db_stmt *st, row_list *rows, const char *doing, int *rc, clad_err *err);

/* ---- Transactions (store_util.c) ---- */

/* Takes the write lock now (SQLite: BEGIN IMMEDIATE; PostgreSQL: READ COMMITTED plus one advisory lock
 * per database) so the transaction cannot fail later for lack of it. Writers of every process and node
 * are serialised, so a read-check-write inside one transaction sees no other writer; keep write
 * transactions short, since every other writer waits for them (CLAD_EBUSY after 5 s). */
int tx_begin_write(store *s, clad_err *err);
/* Commits when rc == 0, otherwise rolls back; returns rc or the commit's error. */
int tx_end(store *s, int rc, clad_err *err);
/* A read transaction so that multi-statement reads see one snapshot; *began tells tx_read_end whether
 * this call opened it (inside store_snapshot_begin it does not). */
int tx_read_begin(store *s, bool *began, clad_err *err);
void tx_read_end(store *s, bool began);

/* ---- Validation and lookups (store_util.c) ---- */

int check_name(const char *name, const char *what, clad_err *err);
/* A JSON text of the given type ("object" or "array") no longer than STORE_JSON_MAX; NULL is allowed
 * when nullable. */
int check_json(store *s, const char *json, const char *type, bool nullable, const char *what,
               clad_err *err);
int check_reason(const char *reason, clad_err *err);
int64_t now_ms(void);
/* Task row id by name; CLAD_ENOTFOUND "unknown task 'x'". */
int task_id(store *s, const char *name, int64_t *id, clad_err *err);
/* Version row id of (task_id, version); CLAD_ENOTFOUND naming it. */
int version_id(store *s, int64_t task_id, const char *task, int64_t version, int64_t *id, clad_err *err);
/* Refuses writes on reader handles and inside snapshots. */
int check_writable(store *s, clad_err *err);
/* After deletes: lets the backend give freed space back (best effort). */
void st_reclaim(store *s);

/* ---- Tasks (store_task.c), used by store_version_put ---- */

/* Everything about a new task that can be checked without the write lock. */
int task_validate(store *s, const store_task_in *in, clad_err *err);
/* Inserts and audits a validated task inside the current write transaction; CLAD_ECONFLICT if the name
 * exists, CLAD_ENOTFOUND for an unknown base. */
int task_insert(store *s, const store_task_in *in, int peer_uid, clad_err *err);

/* ---- Shared job queue (store_queue.c), used by store_job.c, store_version_put and store_base_put ---- */

/* Inside a write transaction: a job leaving `running` must be this handle's node's, with a lease that
 * has not expired (CLAD_ECONFLICT otherwise); a job no node claimed (node NULL) passes. */
int job_check_owner(store *s, int64_t id, clad_err *err);
/* Inside a write transaction, before a job's result (a version, a base) is written: the job exists, is
 * running, and (job_check_owner) this handle's node holds its lease. The write transaction holds the
 * lease for its duration: no claim, renewal or requeue can commit between this check and the commit.
 * `what` names the result for the message ("a version", "a base"). */
int job_commit_check(store *s, int64_t id, const char *what, clad_err *err);
/* Inside the same transaction, after the result is written: the job succeeded with it (result_version 0:
 * not a version), and its data goes. */
int job_commit_done(store *s, int64_t id, int64_t result_version, clad_err *err);
/* Inside a write transaction: deletes the data of every job in a final state, so a job's data goes in its
 * final transaction. */
int job_data_sweep(store *s, clad_err *err);
/* The one job row matching `where` (an SQL WHERE clause with ?1 bound to id), or *out NULL when none
 * (store_job.c). */
int job_get_where(store *s, const char *where, int64_t id, store_job **out, clad_err *err);

/* ---- Audit (store_audit.c) ---- */

/* A small JSON object builder for audit details; strings are escaped. */
typedef struct jbuf {
    char buf[1024];
    size_t n;
    bool truncated;
} jbuf;
void jb_init(jbuf *j);
void jb_str(jbuf *j, const char *key, const char *val);
void jb_int(jbuf *j, const char *key, int64_t val);
const char *jb_done(jbuf *j);
/* Appends one audit row inside the current write transaction. */
int audit_add(store *s, int peer_uid, const char *action, const char *object, const char *detail_json,
              clad_err *err);

/* ---- The change feed (store_changes.c) ---- */

/* Called by audit_add for every audited write: when action is one other nodes must act on (alias moves,
 * version put/delete/gc, task and base create/delete), appends a `changes` row naming its object
 * ("alias:t/a", "version:t/3", "task:t", "base:b") inside the current write transaction. */
int change_add(store *s, const char *action, const char *object, clad_err *err);

/* ---- Alias moves (store_alias.c), used by store_version_put ---- */

/* Moves alias (creating it) of task to the version with row id vid and number version, inside the
 * current write transaction, and records the move in the history. action is "put", "set", "rollback"
 * or "undo"; back_id/undo_id are history row ids or 0 (see store_alias.c). Does not audit. */
int alias_move(store *s, int64_t task_id, const char *alias, int64_t vid, int64_t version,
               const char *action, int64_t back_id, int64_t undo_id, int peer_uid, const char *reason,
               clad_err *err);
/* The current state row id of an alias (0 when the alias does not exist). */
int alias_state(store *s, int64_t task_id, const char *alias, int64_t *state_id, int64_t *version,
                clad_err *err);

#endif
