/* The adapter registry: base models, tasks, immutable adapter versions, aliases with history and
 * rollback, lineage, metrics, jobs and an audit log, in one SQLite file or one PostgreSQL database
 * (a "postgresql://" or "postgres://" URI as the path). Both backends keep this contract; where they
 * differ (backup, size limit) the function says so. See docs/STORAGE.md.
 *
 * Objects
 *   base     a frozen base model: name, config JSON, weights (inline blob or a path) and their sha256.
 *   task     a named label space on a base. kind "task" for trained tasks, "merge" for the home of
 *            merged adapters (their parents live in other tasks).
 *   version  (task, number) with number = 1, 2, ... per task, never reused, immutable once written:
 *            the adapter tensors as one blob with its sha256, kind, lineage, metrics.
 *   alias    a per-task name pointing at one version. `active` exists as soon as a task has a version;
 *            every move is kept in the alias history with the peer uid, old and new target and reason.
 *   job      a queued/running/finished unit of daemon work, persisted so a restart can mark it.
 *
 * Rules every function follows
 *   - Returns 0 or a negative CLAD_E* code, and fills `err` (may be NULL) with a message naming the
 *     object: CLAD_ENOTFOUND unknown name/version/id, CLAD_ECONFLICT contradicts current state,
 *     CLAD_EINVAL malformed input, CLAD_ETOOLARGE over a limit below, CLAD_EFULL disk full or size limit,
 *     CLAD_EBUSY another writer held the store past the busy timeout, CLAD_ECORRUPT failed integrity or
 *     sha256 check, CLAD_EVERSION written by a newer clad, CLAD_EIO file errors.
 *   - Every write is one transaction (all or nothing, durable when the function returns 0) and adds a
 *     row to the audit log with `peer_uid` (the Unix uid of the client, or STORE_UID_CLAD for clad's
 *     own actions).
 *   - Blobs are verified against their sha256 every time they are loaded.
 *   - Anything returned through a pointer-to-pointer is heap memory owned by the caller, released with
 *     the matching *_free function (which accepts NULL).
 *   - A handle belongs to one thread at a time. Several handles (threads or processes) may use the same
 *     file: writers are serialised by SQLite, readers see a consistent snapshot per call.
 *   - Past records (alias history, lineage parents, metrics) name versions by (task, number), so they
 *     survive deletion of the version; live pointers (aliases, and the runtime dependencies of a
 *     version: the versions it loads whenever it is served) make deletion of their target impossible.
 */
#ifndef CLAD_STORAGE_STORE_H
#define CLAD_STORAGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/sha256.h"

#define STORE_SCHEMA_VERSION 6          /* schema version this clad writes (SQLite: PRAGMA user_version) */
#define STORE_NAME_MAX 64               /* names: 1..64 of [A-Za-z0-9._-], starting with a letter or digit */
#define STORE_REASON_MAX 256            /* free-text reasons on alias moves */
#define STORE_JSON_MAX (1 << 20)        /* any JSON text field */
#define STORE_BLOB_MAX (512u << 20)     /* adapter or base weights blob */
#define STORE_PARENTS_MAX 64            /* parents of one version */
#define STORE_CLASSES_MAX 100000        /* classes of one task */
#define STORE_ERRMSG_MAX 511            /* stored job error messages are truncated to this */
#define STORE_UID_CLAD (-1)             /* peer uid recorded for clad's own actions */

typedef struct store store;

/* ---- Opening ---------------------------------------------------------------------------------- */

/* Opens (creating if missing) the store at path for reading and writing: WAL mode, synchronous=FULL,
 * foreign keys on, 5 s busy timeout; runs `PRAGMA quick_check` and pending schema migrations. A
 * "postgresql://" or "postgres://" path is a libpq URI of an existing database, whose schema is created
 * on first open; CLAD_EIO when the server cannot be reached (the message never shows the password).
 * Errors: CLAD_EVERSION when the file has a newer schema (the file is left untouched); CLAD_ECORRUPT
 * when the check fails; CLAD_EINVAL when the file is some other SQLite database; CLAD_EIO. */
store *store_open(const char *path, clad_err *err);

/* Opens an existing store for reading only, without the integrity check, so it is cheap enough for a
 * worker thread to call per job. The schema must be exactly STORE_SCHEMA_VERSION (CLAD_EVERSION
 * otherwise). Writes through this handle fail with CLAD_EDENIED. */
store *store_open_reader(const char *path, clad_err *err);

/* Opens an existing store for writing from a worker thread: like store_open_reader (no integrity check,
 * the schema must be current) but writable, with the same durability as store_open. For writes too large
 * for the daemon's loop thread, such as a job's data. */
store *store_open_worker(const char *path, clad_err *err);

/* How long a write through this handle waits for another writer before CLAD_EBUSY (default 5000 ms;
 * 0: not at all). Returns the previous value. */
int store_set_busy_timeout(store *s, int ms);

/* Closes the handle. Accepts NULL. */
void store_close(store *s);

/* A number that changes whenever the database may have changed, by writes through this handle or through
 * any other connection: two equal marks mean nothing changed in between. For caches of query results. */
int64_t store_change_mark(store *s);

enum {
    STORE_CHECK_QUICK = 0, /* PRAGMA quick_check */
    STORE_CHECK_FULL = 1,  /* integrity_check, foreign_key_check, every blob's sha256, alias and
                              runtime dependency invariants */
};
/* Verifies the store; CLAD_ECORRUPT with the first problem found. */
int store_check(store *s, int level, clad_err *err);

/* Caps the database size for this handle (PRAGMA max_page_count): writes that would grow the file past
 * max_bytes fail with CLAD_EFULL and change nothing. Cannot go below the current size. Used as a quota
 * and to test full-disk behaviour. *limit_out (may be NULL) receives the limit in effect, in bytes.
 * SQLite only: CLAD_EINVAL on PostgreSQL. */
int store_set_size_limit(store *s, int64_t max_bytes, int64_t *limit_out, clad_err *err);

/* Writes a consistent copy of the whole store to dest_path (sqlite3_backup, one snapshot) while other
 * handles keep reading and writing. The copy is written beside dest_path, synced, then renamed over it,
 * so dest_path is always either the old file or a complete backup. SQLite only: CLAD_EINVAL on
 * PostgreSQL, whose own tools (pg_dump, pg_basebackup) do this. */
int store_backup(store *s, const char *dest_path, clad_err *err);

/* Groups several reads into one snapshot: everything read between begin and end sees the same state,
 * even while other handles write. No writes through this handle in between (CLAD_EINVAL). */
int store_snapshot_begin(store *s, clad_err *err);
void store_snapshot_end(store *s);

/* ---- Bases and tasks -------------------------------------------------------------------------- */

typedef struct store_base_in {
    const char *name;
    const char *config_json;  /* a JSON object (architecture) */
    const void *weights;      /* inline weights, or NULL to record a path instead */
    size_t weights_size;
    const char *weights_path; /* used when weights is NULL */
    const char *weights_sha256; /* required with a path (the store does not read model files); with
                                   inline weights it is computed, and if given must match */
    int64_t job_id;           /* the job that trained it, or 0: as for store_version_put, the job must be
                                 running under this node's lease, and succeeds in the same transaction */
} store_base_in;

typedef struct store_base {
    int64_t id;
    char name[STORE_NAME_MAX + 1];
    char *config_json;
    void *weights;            /* weights_size bytes when loaded with STORE_WITH_BLOB and stored inline */
    size_t weights_size;
    char *weights_path;       /* NULL when stored inline */
    char weights_sha256[SHA256_HEX_SIZE];
    int64_t created_ms;       /* Unix time, milliseconds */
} store_base;

enum { STORE_WITH_BLOB = 1 }; /* flag for *_get: also load (and verify) the blob */

/* Adds a base. CLAD_ECONFLICT if the name exists, or (with a job id) when the job is not running under
 * this handle's node's lease: a node that lost the lease stores nothing. */
int store_base_put(store *s, const store_base_in *in, int peer_uid, clad_err *err);
int store_base_get(store *s, const char *name, unsigned flags, store_base **out, clad_err *err);
int store_bases_list(store *s, store_base **out, size_t *n, clad_err *err);
void store_base_free(store_base *b);
void store_bases_free(store_base *b, size_t n);

typedef struct store_task_in {
    const char *name;
    const char *base;             /* an existing base */
    const char *kind;             /* "task" (default when NULL) or "merge" */
    int n_classes;                /* 1..STORE_CLASSES_MAX for "task"; may be 0 for "merge" */
    const char *label_names_json; /* NULL, or a JSON array of n_classes strings */
} store_task_in;

typedef struct store_task {
    int64_t id;
    char name[STORE_NAME_MAX + 1];
    char base[STORE_NAME_MAX + 1];
    char kind[8];
    int n_classes;
    char *label_names_json;       /* NULL when not given */
    int64_t n_versions;           /* versions currently stored */
    int64_t latest_version;       /* highest number ever given (0 when none) */
    int64_t created_ms;
} store_task;

/* Adds a task. CLAD_ECONFLICT if the name exists, CLAD_ENOTFOUND for an unknown base. */
int store_task_create(store *s, const store_task_in *in, int peer_uid, clad_err *err);
int store_task_get(store *s, const char *name, store_task **out, clad_err *err);
int store_tasks_list(store *s, store_task **out, size_t *n, clad_err *err);
void store_task_free(store_task *t);
void store_tasks_free(store_task *t, size_t n);
/* Deletes a task with its versions, aliases, alias history, evaluations and matrix entries, in one
 * transaction (storage/store_delete.c). CLAD_ECONFLICT, naming them, while versions of other tasks have
 * one of its versions as a parent or while a job for it is queued or running. */
int store_task_delete(store *s, const char *task, int peer_uid, clad_err *err);
/* Deletes a base. CLAD_ECONFLICT, naming them, while tasks are on it. */
int store_base_delete(store *s, const char *base, int peer_uid, clad_err *err);

/* ---- Versions --------------------------------------------------------------------------------- */

/* A version named by its task and number. As input, fill task (e.g. `(store_ref){"rot15", 3}`). */
typedef struct store_ref {
    char task[STORE_NAME_MAX + 1];
    int64_t version;
} store_ref;

enum {
    /* store_version_in.flags: leave `active` where it is (it is still set when the task had no
     * version yet, because `active` always exists once a task has a version). */
    STORE_PUT_KEEP_ACTIVE = 1,
};

typedef struct store_version_in {
    const char *task;
    const char *kind;             /* "lora", "tied", "fusion", "merged" or "full" */
    const void *adapter;          /* the adapter tensors as one blob (a safetensors file) */
    size_t adapter_size;          /* 1..STORE_BLOB_MAX */
    const store_ref *parents;     /* versions this one was trained from or merged from */
    size_t n_parents;             /* 0..STORE_PARENTS_MAX */
    const store_ref *needs;       /* versions this one loads whenever it is served (a fusion version's
                                     sources, in order); they cannot be deleted while it exists */
    size_t n_needs;               /* 0..STORE_PARENTS_MAX; at least 1 for kind "fusion" */
    const char *base_sha256;      /* NULL: the task's base; otherwise it must equal it */
    const char *data_sha256;      /* sha256 of the submitted training data, or NULL */
    const char *lineage_json;     /* JSON object: per-layer distances, novelty, ranks, ...; NULL = {} */
    const char *hparams_json;     /* JSON object, NULL = {} */
    const char *metrics_json;     /* JSON object with the final metrics, NULL = {} */
    uint64_t seed;
    double wall_time_s;           /* training wall time */
    int64_t job_id;               /* 0, or the running job that produced this version: it is marked
                                     succeeded in the same transaction */
    unsigned flags;               /* STORE_PUT_* */
    const store_task_in *create_task; /* NULL, or the task to create in the same transaction when it does
                                         not exist yet (name must equal `task`); an existing task is used
                                         as it is. A failure anywhere then leaves no task either. */
} store_version_in;

typedef struct store_version {
    int64_t id;                   /* row id, unique across tasks */
    char task[STORE_NAME_MAX + 1];
    int64_t version;
    char kind[8];
    void *adapter;                /* adapter_size bytes when loaded with STORE_WITH_BLOB, else NULL */
    size_t adapter_size;
    char sha256[SHA256_HEX_SIZE]; /* of the adapter blob */
    store_ref *parents;
    size_t n_parents;
    store_ref *needs;             /* runtime dependencies, as given to store_version_put */
    size_t n_needs;
    char base_sha256[SHA256_HEX_SIZE];
    char data_sha256[SHA256_HEX_SIZE]; /* "" when not given */
    char *lineage_json;
    char *hparams_json;
    char *metrics_json;
    uint64_t seed;
    char clad_version[32];        /* the clad that wrote it */
    double wall_time_s;
    int64_t job_id;               /* 0 when none */
    int creator_uid;
    int64_t created_ms;
} store_version;

/* Stores a new immutable version with the next number of its task and (unless STORE_PUT_KEEP_ACTIVE)
 * points `active` at it; *version_out (may be NULL) receives the number. CLAD_ENOTFOUND for an unknown
 * task, parent, needed version or job; CLAD_ECONFLICT for a base sha256 that is not the task's, a
 * needed version on another base, or a job that is not running; CLAD_EFULL when the disk or size limit is reached (nothing is written). */
int store_version_put(store *s, const store_version_in *in, int peer_uid, int64_t *version_out,
                      clad_err *err);

/* Loads a version by number, or the version an alias points at (alias and version read in one
 * snapshot). With STORE_WITH_BLOB the adapter is loaded and checked: CLAD_ECORRUPT "version 3 of task
 * 'rot15': adapter blob sha256 mismatch" if it does not match. */
int store_version_get(store *s, const char *task, int64_t version, unsigned flags, store_version **out,
                      clad_err *err);
int store_version_get_alias(store *s, const char *task, const char *alias, unsigned flags,
                            store_version **out, clad_err *err);

/* All versions of a task, oldest first, without blobs. */
int store_versions_list(store *s, const char *task, store_version **out, size_t *n, clad_err *err);
void store_version_free(store_version *v);
void store_versions_free(store_version *v, size_t n);

/* Deletes a version (its number is never reused). CLAD_ECONFLICT, naming them, if any alias points at
 * it or another version needs it at run time ("needed by version 1 of task 'f'"). */
int store_version_delete(store *s, const char *task, int64_t version, int peer_uid, clad_err *err);

typedef struct store_gc_stats {
    int64_t versions_deleted;
    int64_t bytes_freed;          /* adapter bytes of the deleted versions */
} store_gc_stats;

/* Retention: for one task (or every task when task is NULL) keeps the newest `keep` (>= 1) versions,
 * every version an alias points at and every version a kept version needs (transitively), and deletes
 * the rest in one transaction. */
int store_gc(store *s, const char *task, int keep, int peer_uid, store_gc_stats *stats, clad_err *err);

/* ---- Aliases and rollback --------------------------------------------------------------------- */

typedef struct store_alias {
    char name[STORE_NAME_MAX + 1];
    int64_t version;
    int64_t updated_ms;
} store_alias;

typedef struct store_alias_move {
    int64_t id;                   /* increasing with time */
    int64_t time_ms;
    int peer_uid;
    char alias[STORE_NAME_MAX + 1];
    char action[12];              /* "put", "set", "rollback", "undo" or "delete" */
    int64_t old_version;          /* 0 when the alias did not exist */
    int64_t new_version;          /* 0 when the alias was deleted */
    char reason[STORE_REASON_MAX + 1];
} store_alias_move;

/* Resolves an alias to a version number. CLAD_ENOTFOUND for an unknown task or alias. */
int store_alias_get(store *s, const char *task, const char *alias, int64_t *version_out, clad_err *err);
int store_aliases_list(store *s, const char *task, store_alias **out, size_t *n, clad_err *err);
void store_aliases_free(store_alias *a);

/* Points alias at version (creating the alias if needed). Setting it to its current target is a
 * no-op. reason may be NULL. */
int store_alias_set(store *s, const char *task, const char *alias, int64_t version, int peer_uid,
                    const char *reason, clad_err *err);
/* Removes an alias; `active` cannot be removed (CLAD_ECONFLICT). */
int store_alias_delete(store *s, const char *task, const char *alias, int peer_uid, const char *reason,
                       clad_err *err);

/* Rolls alias (NULL means "active") back, in one atomic step.
 *   to_version == 0: to the target it had before the move that set its current target. Repeated
 *     rollbacks keep walking back (5 -> 4 -> 3), not back and forth. CLAD_ECONFLICT if there is no
 *     earlier target or it was deleted (never skipped: roll back to an explicit version instead).
 *   to_version > 0: to that version, which must exist and differ from the current target.
 * *version_out (may be NULL) receives the new target. */
int store_rollback(store *s, const char *task, const char *alias, int64_t to_version, int peer_uid,
                   const char *reason, int64_t *version_out, clad_err *err);
/* Undoes the latest rollback of alias (NULL = "active"): moves it back to the target it had before
 * that rollback. Successive undos undo earlier rollbacks in turn. CLAD_ECONFLICT if the alias's
 * current target was not set by a rollback (or an undo of one that is itself undoable), or if the
 * target was deleted. */
int store_rollback_undo(store *s, const char *task, const char *alias, int peer_uid, const char *reason,
                        int64_t *version_out, clad_err *err);

/* History of one alias (or of every alias of the task when alias is NULL), oldest first. */
int store_alias_history(store *s, const char *task, const char *alias, store_alias_move **out,
                        size_t *n, clad_err *err);
void store_alias_history_free(store_alias_move *m);

/* ---- Metrics ---------------------------------------------------------------------------------- */

/* One entry of the continual-learning accuracy matrix: the model state after learning version
 * `after`, evaluated on task `evaluated.task` with adapter version `evaluated.version` (0 when the
 * evaluation used no task-specific version). */
typedef struct store_acc_entry {
    store_ref after;
    store_ref evaluated;
    double accuracy;              /* 0..1 */
    double loss;
    int64_t n_samples;
    int64_t time_ms;              /* filled by the store on output; ignored on input */
} store_acc_entry;

/* Adds n entries in one transaction. Versions must exist when added. */
int store_matrix_add(store *s, const store_acc_entry *entries, size_t n, int peer_uid, clad_err *err);
/* Entries whose `after` version belongs to task (every entry when NULL), in insertion order. */
int store_matrix_list(store *s, const char *task, store_acc_entry **out, size_t *n, clad_err *err);
void store_matrix_free(store_acc_entry *e);

typedef struct store_eval {
    int64_t id;                   /* output only */
    store_ref version;
    char data_sha256[SHA256_HEX_SIZE]; /* of the evaluation data; "" when unknown */
    double accuracy;
    double loss;
    int64_t n_samples;
    char *detail_json;            /* JSON object (per-class numbers, ...); NULL on input means {} */
    int peer_uid;                 /* output only */
    int64_t time_ms;              /* output only */
} store_eval;

/* Records one evaluation result of an existing version; *id_out may be NULL. */
int store_eval_add(store *s, const store_eval *in, int peer_uid, int64_t *id_out, clad_err *err);
/* Evaluations of one version (or of every version of task when version == 0), oldest first. */
int store_evals_list(store *s, const char *task, int64_t version, store_eval **out, size_t *n,
                     clad_err *err);
void store_evals_free(store_eval *e, size_t n);

/* ---- Jobs ------------------------------------------------------------------------------------- */

typedef enum store_job_state {
    STORE_JOB_QUEUED,
    STORE_JOB_RUNNING,
    STORE_JOB_SUCCEEDED,
    STORE_JOB_FAILED,
    STORE_JOB_CANCELLED,
    STORE_JOB_INTERRUPTED,        /* clad stopped while the job was queued or running */
} store_job_state;

const char *store_job_state_name(store_job_state st); /* "queued", ... */

typedef struct store_job {
    int64_t id;
    char kind[STORE_NAME_MAX + 1];    /* "train", "merge", "eval", ... */
    char task[STORE_NAME_MAX + 1];    /* the task it creates or changes; "" when none (a base's job) */
    char lane[STORE_NAME_MAX + 1];    /* the daemon's queue lane (the base's name); "" when none */
    store_job_state state;
    int error_code;                   /* CLAD_E* when failed, else 0 */
    char error_msg[STORE_ERRMSG_MAX + 1];
    char *request_json;
    char *progress_json;
    char *result_json;                /* NULL when none */
    int64_t result_version;           /* 0 when none */
    int peer_uid;
    int64_t created_ms, started_ms, finished_ms; /* 0 when not yet */
    char node[STORE_NAME_MAX + 1];    /* the node that claimed it last (store_job_claim); "" when none */
    int attempt;                      /* starts through store_job_claim so far */
    int64_t lease_until_ms;           /* a running claimed job's lease; 0 when none */
    bool cancel_requested;            /* store_job_request_cancel on a running job */
} store_job;

/* Queues a job. task: the task it creates or changes (the task may not exist yet), NULL for none; it is
 * what store_jobs_list and store_task_delete match. lane: the daemon's queue lane (at most 64 bytes), NULL
 * for none. request_json: a JSON object, NULL = {}. */
int store_job_create(store *s, const char *kind, const char *task, const char *lane, const char *request_json,
                     int peer_uid, int64_t *id_out, clad_err *err);
/* State changes; each refuses (CLAD_ECONFLICT) a transition that is not listed:
 *   queued -> running; running -> succeeded; queued|running -> failed, cancelled.
 * A job becomes interrupted through store_job_finish (graceful shutdown, with its outcome) or
 * store_jobs_mark_interrupted (at startup, for a previous run's jobs). */
int store_job_mark_running(store *s, int64_t id, clad_err *err);
int store_job_mark_succeeded(store *s, int64_t id, int64_t result_version, clad_err *err);
int store_job_mark_failed(store *s, int64_t id, int code, const char *msg, clad_err *err);
int store_job_mark_cancelled(store *s, int64_t id, int peer_uid, clad_err *err);
/* Replaces the progress JSON object of a running job (not audited: it is not a state change). */
int store_job_set_progress(store *s, int64_t id, const char *progress_json, clad_err *err);
/* What a finished job leaves for its history: the result and last progress event (JSON objects, NULL:
 * leave as is) and the job's own times in ms (0: leave as is), which replace the store's clock so that a
 * job reads the same before and after a restart. Only for a job in a final state (CLAD_ECONFLICT
 * otherwise); not audited. */
typedef struct store_job_outcome {
    const char *result_json;
    const char *progress_json;
    int64_t created_ms, started_ms, finished_ms;
} store_job_outcome;
int store_job_set_outcome(store *s, int64_t id, const store_job_outcome *o, clad_err *err);
/* A job's end in one transaction: the final state (as the store_job_mark_* calls above; a succeeded job
 * already marked by its version's commit stays as it is) and its outcome. */
typedef struct store_job_end {
    store_job_state state;        /* succeeded, failed, cancelled or interrupted */
    int error_code;               /* failed: CLAD_E* */
    const char *error_msg;        /* failed */
    int peer_uid;                 /* cancelled: who cancelled (audited) */
    store_job_outcome outcome;
} store_job_end;
int store_job_finish(store *s, int64_t id, const store_job_end *e, clad_err *err);
/* At startup: marks every queued or running job left by a previous run as interrupted. */
int store_jobs_mark_interrupted(store *s, int64_t *n_marked, clad_err *err);

int store_job_get(store *s, int64_t id, store_job **out, clad_err *err);

/* ---- Shared job queue (storage/store_queue.c) ---------------------------------------------------
 * Several daemons (nodes) on one store share the queue: a job submitted to any of them is claimed by one
 * node, which holds a lease on it and renews it while it works. A node that stops renewing (it died)
 * loses the job: store_jobs_requeue_expired puts it back to queued and another node runs it again from
 * the start. Only the owner with a valid lease can end a running job or commit its version, so a job
 * never produces two versions. A job's data lives in the store until its final transaction. */

#define STORE_JOB_ATTEMPTS 3            /* starts of one job before an expired lease fails it */

/* Names the node that claims and runs jobs through this handle (1..64 printable bytes). */
int store_set_node(store *s, const char *node, clad_err *err);
/* store_job_create with the job's data (the uploaded dataset; NULL/0 for none), in the same
 * transaction. CLAD_ETOOLARGE over STORE_BLOB_MAX. */
int store_job_create_with_data(store *s, const char *kind, const char *task, const char *lane,
                               const char *request_json, const void *data, size_t data_size, int peer_uid,
                               int64_t *id_out, clad_err *err);
/* Deleted job data must not stay readable in the files: a job's final transaction deletes its data, and
 * store_job_data_wipe then removes the freed pages from the database file (incremental vacuum) and the
 * old pages from the WAL (checkpoint and truncate). By default the handle that ends the job does that
 * right after the commit. After store_job_data_defer_wipe the handle's final transactions only make the
 * data unreadable (store_job_data_get refuses data of a job that ended) and note that a wipe is due
 * (store_job_data_wipe_due, which also clears the note); store_job_data_wipe then deletes the data of
 * every ended job and wipes, so that a daemon can run this work, which reads and writes in proportion to
 * the data, on a worker thread with a handle of its own. Such a handle does not checkpoint the log by
 * itself either (a checkpoint after a worker's large write copies it all): call store_job_data_wipe from a
 * worker now and then. Wiping is best effort: a wipe blocked by readers is completed by the next one. */
void store_job_data_defer_wipe(store *s);
bool store_job_data_wipe_due(store *s);
int store_job_data_wipe(store *s, clad_err *err);
/* The job's data (heap copy, the caller frees it). CLAD_ENOTFOUND when it has none (any more). */
int store_job_data_get(store *s, int64_t id, void **data, size_t *size, clad_err *err);
/* In one write transaction: requeues jobs whose lease expired, then claims a queued job whose lane has no
 * running job on any node: job `only_id` (0: the oldest such job of `kind`, or of any kind when kind is
 * NULL), marking it running with this node, lease_until = now + lease_ms and attempt + 1. *out is the
 * claimed job, or NULL when there is none (or job only_id is not queued or its lane is busy). Needs
 * store_set_node. */
int store_job_claim(store *s, int64_t only_id, const char *kind, int64_t lease_ms, store_job **out,
                    clad_err *err);
/* Extends this node's lease on a running job to now + lease_ms; *cancel_requested (may be NULL) tells
 * whether a cancel was asked. CLAD_ECONFLICT when the lease is lost (expired, or the job is no longer
 * running here): the node must stop the job and write nothing. */
int store_job_renew(store *s, int64_t id, int64_t lease_ms, bool *cancel_requested, clad_err *err);
/* Running jobs whose lease expired go back to queued (another start, from the beginning), or become
 * cancelled (a cancel was asked) or failed (STORE_JOB_ATTEMPTS starts used). *n (may be NULL): how many. */
int store_jobs_requeue_expired(store *s, int64_t *n, clad_err *err);
/* Job notification, where the backend has it (PostgreSQL LISTEN/NOTIFY on channel clad_jobs, as for the
 * change feed): store_jobs_notify tells listening nodes that a queued job waits for a node (sent at the
 * commit of the current transaction, at once outside one; a no-op on SQLite). store_job_create* notify
 * in the job's transaction, and so do store_job_claim and store_jobs_requeue_expired when they put jobs
 * with an expired lease back to queued.
 * store_jobs_listen starts listening on this handle (CLAD_EINVAL on SQLite: poll store_job_claim);
 * store_jobs_drain: 1 when a job notification arrived since its last drain, 0 not, -1 without
 * notifications or a broken connection. One handle may listen to both channels (store_changes_fd). */
#define STORE_JOBS_CHANNEL "clad_jobs"
int store_jobs_notify(store *s, clad_err *err);
int store_jobs_listen(store *s, clad_err *err);
int store_jobs_drain(store *s);
/* A cancel through any node: a queued job becomes cancelled now; a running one gets cancel_requested,
 * which its owner sees at its next renewal. *state_out (may be NULL): the job's state afterwards.
 * CLAD_ECONFLICT once the job has finished. */
int store_job_request_cancel(store *s, int64_t id, int peer_uid, store_job_state *state_out, clad_err *err);
/* Newest first, at most limit (0 = all); task NULL = every task. */
int store_jobs_list(store *s, const char *task, size_t limit, store_job **out, size_t *n, clad_err *err);
void store_job_free(store_job *j);
void store_jobs_free(store_job *j, size_t n);

/* ---- Audit log -------------------------------------------------------------------------------- */

typedef struct store_audit {
    int64_t id;
    int64_t time_ms;
    int peer_uid;
    char action[32];              /* "version.put", "alias.rollback", ... */
    char object[160];             /* "version:rot15/3", "alias:rot15/active", "job:12", ... */
    char *detail_json;
} store_audit;

/* Audit rows with id > after_id, oldest first, at most limit (0 = all). */
int store_audit_list(store *s, int64_t after_id, size_t limit, store_audit **out, size_t *n, clad_err *err);
void store_audit_free(store_audit *a, size_t n);

/* ---- Nodes and the change feed (storage/store_node.c, storage/store_changes.c) ------------------ */

/* Several cladd processes (nodes) may share one store. Each keeps a row in `nodes` fresh with a
 * heartbeat; every write other nodes must act on appends a row to `changes` in its own transaction.
 * Neither heartbeats nor the change rows are audited (they are not changes of their own). */

#define STORE_NODE_HOST_MAX 64
#define STORE_NODE_PATH_MAX 256

typedef struct store_node {
    char id[STORE_NAME_MAX + 1];       /* the node's name, unique in the store */
    char host[STORE_NODE_HOST_MAX + 1];
    char state_dir[STORE_NODE_PATH_MAX + 1];
    char socket[STORE_NODE_PATH_MAX + 1];
    char version[32];                  /* the clad it runs */
    int64_t pid;
    int64_t started_ms, last_seen_ms;  /* Unix ms */
    int64_t stopped_ms;                /* when it stopped cleanly; 0 while it runs (or after a crash) */
    int64_t running_jobs;
} store_node;

/* Registers node n at startup (replacing the row of an earlier run of the same node). CLAD_ECONFLICT
 * naming it when another node with the same id (another host or state directory) was seen less than
 * live_ms ago. */
int store_node_claim(store *s, const store_node *n, int64_t live_ms, clad_err *err);
/* The heartbeat: sets last_seen_ms to now and the running job count. CLAD_ENOTFOUND if the row is gone. */
int store_node_beat(store *s, const char *id, int64_t running_jobs, clad_err *err);
/* A clean stop: sets stopped_ms (and last_seen_ms) to now. */
int store_node_stopped(store *s, const char *id, clad_err *err);
/* Nodes seen at or after since_ms, by id. */
int store_nodes_list(store *s, int64_t since_ms, store_node **out, size_t *n, clad_err *err);
void store_nodes_free(store_node *n);

typedef struct store_change {
    int64_t id;                        /* increasing in commit order */
    char kind[32];                     /* the audit action: "alias.rollback", "version.delete", ... */
    char base[STORE_NAME_MAX + 1];     /* "" unless the change is about a base */
    char task[STORE_NAME_MAX + 1];     /* "" when not about a task */
    int64_t version;                   /* 0 when not about one version */
    int64_t at_ms;
} store_change;

/* Changes with id > after_id, oldest first, at most limit. *oldest_id (may be NULL) receives the
 * smallest id still kept (0 when none): if it is above after_id + 1, rows the caller never saw may have
 * been pruned and it should drop everything it caches. */
int store_changes_since(store *s, int64_t after_id, size_t limit, store_change **out, size_t *n,
                        int64_t *oldest_id, clad_err *err);
void store_changes_free(store_change *c);
/* The newest change id (0 when none): where a node that starts with an empty cache begins to follow. */
int store_changes_last(store *s, int64_t *id, clad_err *err);
/* Change notification, where the backend has it (PostgreSQL LISTEN/NOTIFY on channel clad_changes; every
 * write that appends a change row also notifies, delivered at its commit). store_changes_listen starts
 * listening on this handle: 0, or CLAD_EINVAL when the backend has no notifications (SQLite: poll
 * store_changes_since instead). store_changes_fd is a descriptor that becomes readable when a notification
 * arrives (-1 without); store_changes_drain consumes what arrived: 1 when something did, 0 when not, -1
 * without notifications or when the connection broke (listen again after reconnecting). */
#define STORE_CHANGES_CHANNEL "clad_changes"
int store_changes_listen(store *s, clad_err *err);
int store_changes_fd(store *s);
int store_changes_drain(store *s);
/* Deletes change rows that are not among the newest keep_rows or at least keep_ms old, and node rows not
 * seen for node_keep_ms; *n_deleted (may be NULL) counts the change rows. */
int store_changes_prune(store *s, int64_t keep_rows, int64_t keep_ms, int64_t node_keep_ms,
                        int64_t *n_deleted, clad_err *err);

#endif
