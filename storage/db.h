/* The database driver interface, private to storage/: one table of operations per backend (SQLite in
 * db_sqlite.c, PostgreSQL in db_pg.c), called by the store through the helpers in store_internal.h.
 *
 * The store writes its SQL once, in a common dialect: `?N` placeholders (the PostgreSQL driver rewrites
 * them to `$N`), ON CONFLICT, RETURNING, WITH RECURSIVE, `IS DISTINCT FROM`. Only what cannot be common
 * lives per backend: the schema text (one migration list per backend, same version numbers), the engine's
 * own integrity checks, pragmas and session settings, backup, size limits and change notification.
 *
 * Conventions: actions return 0 or a negative CLAD_E* code with err filled (the driver maps its engine's
 * codes); step returns 1 for a row, 0 when done. Column getters read the current row and never fail: SQL
 * NULL reads as 0, 0.0, NULL text or a NULL blob. A connection and its statements belong to one thread.
 */
#ifndef CLAD_STORAGE_DB_H
#define CLAD_STORAGE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct db_ops db_ops;

/* A connection; each driver embeds this header first in its own struct. */
typedef struct db {
    const db_ops *ops;
} db;

/* A prepared statement with its bound values; each driver embeds this header first. */
typedef struct db_stmt {
    const db_ops *ops;
} db_stmt;

typedef enum db_tx {
    DB_TX_READ,     /* one consistent view for a multi-statement read */
    DB_TX_WRITE,    /* writers are serialised: the lock is taken at begin, never halfway */
    DB_TX_SNAPSHOT, /* like READ, but the view is fixed now rather than at the first query */
} db_tx;

struct db_ops {
    const char *name;   /* "sqlite" or "postgresql": what store_backend reports */
    const char *engine; /* "SQLite" or "PostgreSQL", for messages */
    /* Capabilities the shared SQL may use. skip_locked: `SELECT ... FOR UPDATE SKIP LOCKED` (row locks
     * that other writers skip; SQLite has no row locks, its writers are serialised as a whole). */
    bool skip_locked;
    /* Connects; reader connections refuse writes. target is a file path or a connection URI. */
    db *(*open)(const char *target, bool reader, clad_err *err);
    void (*close)(db *d);
    /* A name for messages: the path, or the URI without its password. Writes at most cap bytes. */
    void (*display)(const char *target, char *buf, size_t cap);

    int (*prepare)(db *d, const char *sql, db_stmt **out, clad_err *err);
    /* Binds parameter `at` (1-based); text and blobs must outlive the statement's last step. A NULL
     * carries the type it stands for ('t' text, 'I' integer, 'b' blob), which PostgreSQL needs in
     * `?1 IS NULL OR x = ?1`. */
    int (*bind_null)(db_stmt *st, int at, char type);
    int (*bind_int64)(db_stmt *st, int at, int64_t v);
    int (*bind_double)(db_stmt *st, int at, double v);
    int (*bind_text)(db_stmt *st, int at, const char *v);
    int (*bind_blob)(db_stmt *st, int at, const void *p, size_t n);
    int (*step)(db_stmt *st, clad_err *err);
    void (*finalize)(db_stmt *st);
    bool (*col_is_null)(db_stmt *st, int i);
    int64_t (*col_int64)(db_stmt *st, int i);
    double (*col_double)(db_stmt *st, int i);
    const char *(*col_text)(db_stmt *st, int i);
    const void *(*col_blob)(db_stmt *st, int i, size_t *n);
    /* Rows changed by the connection's last INSERT, UPDATE or DELETE. */
    int64_t (*changes)(db *d);
    /* Runs statements without parameters (a migration's text may hold several). */
    int (*exec)(db *d, const char *sql, clad_err *err);
    /* Maps the connection's last engine error (rc: the driver's own code, if it has one) to a CLAD_E*
     * code and fills err with what failed. */
    int (*error)(db *d, int rc, clad_err *err, const char *what);

    int (*begin)(db *d, db_tx kind, clad_err *err);
    int (*commit)(db *d, clad_err *err);
    void (*rollback)(db *d); /* a no-op when no transaction is open (the engine may have ended it) */
    bool (*in_tx)(db *d);

    /* The schema: migrations[i] takes version i to i + 1 (STORE_SCHEMA_VERSION entries). */
    const char *const *migrations;
    /* Reads the schema version (0 for an empty database); *foreign is set for a database that holds
     * something other than a clad store. Runs inside the caller's transaction. */
    int (*header_read)(db *d, int64_t *version, bool *foreign, clad_err *err);
    /* Records the schema version, inside the migration's write transaction. */
    int (*header_write)(db *d, int64_t version, clad_err *err);
    /* A read-write connection's setup before migrations (journal mode, durability); fresh: no schema. */
    int (*writer_setup)(db *d, bool fresh, clad_err *err);
    /* The engine's own checks: STORE_CHECK_QUICK or STORE_CHECK_FULL (store.h). */
    int (*check)(db *d, int level, clad_err *err);
    int (*set_size_limit)(db *d, int64_t max_bytes, int64_t *limit_out, clad_err *err);
    int (*backup)(db *d, const char *dest, clad_err *err);
    int64_t (*change_mark)(db *d);
    /* After deletes: gives freed space back where the engine needs to be asked; best effort. */
    void (*reclaim)(db *d);
    /* How long a write waits for another writer's lock before CLAD_EBUSY (0: not at all). */
    void (*busy_timeout)(db *d, int ms);
    /* Deleted job data (store_queue.c): wipe_deferred makes this connection's deletes cheap, leaving
     * freed pages to wipe; wipe removes every trace of deleted rows from the files (free pages, old log
     * pages). Best effort where readers hold old pages. */
    void (*wipe_deferred)(db *d);
    int (*wipe)(db *d, clad_err *err);
    /* Whether commits wait for the disk (the default) or may be lost at a power failure (never at a
     * crash of the process): for writes that are redone anyway, such as a job claim or a lease. */
    void (*sync_commits)(db *d, bool durable);

    /* Change notification (PostgreSQL LISTEN/NOTIFY). Engines without it fail listen (with a message),
     * return -1 from notify_fd and drain, and make notify a no-op, so callers poll the change feed. */
    int (*listen)(db *d, const char *channel, clad_err *err);
    /* Sends a notification on channel, delivered when the current transaction commits (at once
     * outside one). */
    int (*notify)(db *d, const char *channel, const char *payload, clad_err *err);
    int (*notify_fd)(db *d);     /* a descriptor that becomes readable when a notification arrives */
    /* Reads what arrived on the connection: 1 when notifications on `channel` arrived since that channel's
     * last drain, 0 none, -1 without notifications or a broken connection. Notifications on the
     * connection's other channels are kept for their own drain. */
    int (*drain)(db *d, const char *channel);
};

extern const db_ops db_sqlite_ops;
extern const db_ops db_pg_ops;

/* Change notification through the connection's driver (see db_ops): LISTEN on a channel (a name of
 * [a-z0-9_]), NOTIFY, the descriptor to poll and the drain. See db_ops for a backend without them. */
int db_listen(db *d, const char *channel, clad_err *err);
int db_notify(db *d, const char *channel, const char *payload, clad_err *err);
int db_notify_fd(db *d);
int db_drain(db *d, const char *channel);

/* The driver for a store target: PostgreSQL for "postgresql://" and "postgres://" URIs, else SQLite. */
const db_ops *db_ops_for(const char *target);

#endif
