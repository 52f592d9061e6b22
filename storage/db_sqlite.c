/* The SQLite driver (storage/db.h): one file per store in WAL mode with synchronous=FULL, writers
 * serialised by BEGIN IMMEDIATE, header in PRAGMA application_id and user_version. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/store_internal.h"

#define SQLITE_APPLICATION_ID 0x636c6164 /* "clad" in PRAGMA application_id */

typedef struct lite_db {
    db base;
    sqlite3 *h;
    char *path;
} lite_db;

typedef struct lite_stmt {
    db_stmt base;
    sqlite3_stmt *st;
    lite_db *d;
} lite_stmt;

static lite_db *LD(db *d) { return (lite_db *)d; }
static sqlite3_stmt *LS(db_stmt *st) { return ((lite_stmt *)st)->st; }

static int lite_map(lite_db *d, int rc, clad_err *err, const char *what)
{
    const char *detail = d && d->h ? sqlite3_errmsg(d->h) : sqlite3_errstr(rc);
    const char *path = d && d->path ? d->path : "?";
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return clad_err_set(err, CLAD_EFULL,
                            "store %s is full (disk full or size limit reached) while %s; nothing was "
                            "written: free space or delete old versions", path, what);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return clad_err_set(err, CLAD_EBUSY, "store %s is busy (locked by another writer for more than "
                            "%d ms) while %s; try again", path, STORE_BUSY_TIMEOUT_MS, what);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return clad_err_set(err, CLAD_ECORRUPT, "store %s is corrupt (%s) while %s; restore it from a "
                            "backup", path, detail, what);
    case SQLITE_NOMEM:
        return clad_err_set(err, CLAD_ENOMEM, "out of memory while %s", what);
    case SQLITE_TOOBIG:
        return clad_err_set(err, CLAD_ETOOLARGE, "value too large for the store while %s", what);
    case SQLITE_CONSTRAINT:
        return clad_err_set(err, CLAD_ECONFLICT, "store constraint failed while %s: %s", what, detail);
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return clad_err_set(err, CLAD_EDENIED, "store %s is not writable while %s: %s", path, what, detail);
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
        return clad_err_set(err, CLAD_EIO, "store %s: I/O error while %s: %s", path, what, detail);
    default:
        return clad_err_set(err, CLAD_EINTERNAL, "store %s: unexpected SQLite error while %s: %s (%d)",
                            path, what, detail, rc);
    }
}

static int lite_error(db *d, int rc, clad_err *err, const char *what) { return lite_map(LD(d), rc, err, what); }

static int lite_exec(db *d, const char *sql, clad_err *err)
{
    int rc = sqlite3_exec(LD(d)->h, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : lite_map(LD(d), rc, err, "running a statement");
}

static void lite_close(db *d)
{
    if (!d) return;
    /* sqlite3_close_v2 would defer; every statement is finalized by now, so plain close succeeds. */
    sqlite3_close(LD(d)->h);
    free(LD(d)->path);
    free(d);
}

static db *lite_open(const char *path, bool reader, clad_err *err)
{
    lite_db *d = calloc(1, sizeof *d);
    if (!d || !(d->path = strdup(path))) {
        free(d);
        clad_err_set(err, CLAD_ENOMEM, "out of memory opening store %s", path);
        return NULL;
    }
    d->base.ops = &db_sqlite_ops;
    /* NOMUTEX: a handle is used by one thread at a time, so SQLite's per-connection mutex is waste. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (reader ? 0 : SQLITE_OPEN_CREATE);
    int rc = sqlite3_open_v2(path, &d->h, flags, NULL);
    if (rc != SQLITE_OK) {
        if (reader && rc == SQLITE_CANTOPEN && access(path, F_OK) != 0)
            clad_err_set(err, CLAD_ENOTFOUND, "no store at %s", path);
        else
            lite_map(d, rc, err, "opening");
        lite_close(&d->base);
        return NULL;
    }
    sqlite3_busy_timeout(d->h, STORE_BUSY_TIMEOUT_MS);
    /* query_only is only a guard: the store refuses writes on reader handles before they reach SQL. */
    if (lite_exec(&d->base, "PRAGMA foreign_keys = ON", err) ||
        (reader && lite_exec(&d->base, "PRAGMA query_only = 1", err))) {
        clad_err_prefix(err, "opening: ");
        lite_close(&d->base);
        return NULL;
    }
    return &d->base;
}

static void lite_display(const char *target, char *buf, size_t cap) { snprintf(buf, cap, "%s", target); }

/* ---- Statements ---- */

static int lite_prepare(db *d, const char *sql, db_stmt **out, clad_err *err)
{
    *out = NULL;
    lite_stmt *s = calloc(1, sizeof *s);
    if (!s) abort(); /* a bounded bookkeeping allocation */
    int rc = sqlite3_prepare_v2(LD(d)->h, sql, -1, &s->st, NULL);
    if (rc != SQLITE_OK) {
        free(s);
        return lite_map(LD(d), rc, err, "preparing a statement");
    }
    s->base.ops = &db_sqlite_ops;
    s->d = LD(d);
    *out = &s->base;
    return 0;
}

static int lite_bind_null(db_stmt *st, int at, char type) { return sqlite3_bind_null(LS(st), at); }
static int lite_bind_int64(db_stmt *st, int at, int64_t v) { return sqlite3_bind_int64(LS(st), at, v); }
static int lite_bind_double(db_stmt *st, int at, double v) { return sqlite3_bind_double(LS(st), at, v); }
static int lite_bind_text(db_stmt *st, int at, const char *v)
{
    return sqlite3_bind_text(LS(st), at, v, -1, SQLITE_STATIC);
}
static int lite_bind_blob(db_stmt *st, int at, const void *p, size_t n)
{
    return sqlite3_bind_blob64(LS(st), at, p, n, SQLITE_STATIC);
}

static int lite_step(db_stmt *st, clad_err *err)
{
    int rc = sqlite3_step(LS(st));
    if (rc == SQLITE_ROW) return 1;
    if (rc == SQLITE_DONE) return 0;
    return lite_map(((lite_stmt *)st)->d, rc, err, "running a statement");
}

static void lite_finalize(db_stmt *st)
{
    if (!st) return;
    sqlite3_finalize(LS(st));
    free(st);
}

static bool lite_col_is_null(db_stmt *st, int i) { return sqlite3_column_type(LS(st), i) == SQLITE_NULL; }
static int64_t lite_col_int64(db_stmt *st, int i) { return sqlite3_column_int64(LS(st), i); }
static double lite_col_double(db_stmt *st, int i) { return sqlite3_column_double(LS(st), i); }
static const char *lite_col_text(db_stmt *st, int i) { return (const char *)sqlite3_column_text(LS(st), i); }
static const void *lite_col_blob(db_stmt *st, int i, size_t *n)
{
    const void *p = sqlite3_column_blob(LS(st), i);
    *n = (size_t)sqlite3_column_bytes(LS(st), i);
    return p;
}

static int64_t lite_changes(db *d) { return sqlite3_changes64(LD(d)->h); }

/* ---- Transactions ---- */

static int lite_begin(db *d, db_tx kind, clad_err *err)
{
    int rc = sqlite3_exec(LD(d)->h, kind == DB_TX_WRITE ? "BEGIN IMMEDIATE" : "BEGIN", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return lite_map(LD(d), rc, err, kind == DB_TX_WRITE ? "starting a write transaction"
                                                           : "starting a read transaction");
    if (kind != DB_TX_SNAPSHOT) return 0;
    /* BEGIN is lazy; the first read fixes the snapshot, so read now rather than at the caller's first
     * query. */
    rc = sqlite3_exec(LD(d)->h, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL);
    if (rc == SQLITE_OK) return 0;
    int code = lite_map(LD(d), rc, err, "starting a snapshot");
    sqlite3_exec(LD(d)->h, "ROLLBACK", NULL, NULL, NULL);
    return code;
}

static int lite_commit(db *d, clad_err *err)
{
    int rc = sqlite3_exec(LD(d)->h, "COMMIT", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : lite_map(LD(d), rc, err, "committing");
}

static bool lite_in_tx(db *d) { return !sqlite3_get_autocommit(LD(d)->h); }

static void lite_rollback(db *d)
{
    /* SQLite may already have rolled back by itself (for example after SQLITE_FULL). */
    if (lite_in_tx(d)) sqlite3_exec(LD(d)->h, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- Schema header, setup and checks ---- */

static int lite_int(lite_db *d, const char *sql, int64_t *out, clad_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(d->h, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : lite_map(d, rc == SQLITE_DONE ? SQLITE_INTERNAL : rc, err, sql);
}

static int lite_header_read(db *d, int64_t *version, bool *foreign, clad_err *err)
{
    int64_t app_id = 0, n_tables = 0;
    int rc = lite_int(LD(d), "PRAGMA application_id", &app_id, err);
    if (rc == 0) rc = lite_int(LD(d), "PRAGMA user_version", version, err);
    if (rc == 0) rc = lite_int(LD(d), "SELECT count(*) FROM sqlite_master", &n_tables, err);
    if (rc) return rc;
    *foreign = (app_id != 0 && app_id != SQLITE_APPLICATION_ID) || (app_id == 0 && n_tables > 0);
    return 0;
}

static int lite_header_write(db *d, int64_t version, clad_err *err)
{
    char sql[96];
    snprintf(sql, sizeof sql, "PRAGMA application_id = %d; PRAGMA user_version = %lld", SQLITE_APPLICATION_ID,
             (long long)version);
    int rc = lite_exec(d, sql, err);
    if (rc) clad_err_prefix(err, "setting the schema version: ");
    return rc;
}

/* Runs `PRAGMA quick_check` or `integrity_check`; CLAD_ECORRUPT with its first message unless "ok". */
static int run_integrity(lite_db *d, const char *pragma, clad_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(d->h, pragma, -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *msg = (const char *)sqlite3_column_text(st, 0);
        rc = 0;
        if (!msg || strcmp(msg, "ok") != 0) {
            /* The report can be long; its first problem is enough to name the damage. */
            char first[160] = "(no message)";
            if (msg) {
                const char *m = strncmp(msg, "*** in database main ***\n", 25) == 0 ? msg + 25 : msg;
                snprintf(first, sizeof first, "%.*s", (int)strcspn(m, "\n"), m);
            }
            rc = clad_err_set(err, CLAD_ECORRUPT, "store %s failed %s (restore it from a backup): %s",
                              d->path, pragma + 7, first);
        }
    } else if (rc == SQLITE_DONE) {
        rc = clad_err_set(err, CLAD_EINTERNAL, "store %s: %s returned no row", d->path, pragma + 7);
    } else {
        rc = lite_map(d, rc, err, pragma + 7);
    }
    sqlite3_finalize(st);
    return rc;
}

static int lite_check(db *d, int level, clad_err *err)
{
    if (level != STORE_CHECK_FULL) return run_integrity(LD(d), "PRAGMA quick_check", err);
    int rc = run_integrity(LD(d), "PRAGMA integrity_check", err);
    if (rc) return rc;
    sqlite3_stmt *st = NULL;
    int e = sqlite3_prepare_v2(LD(d)->h, "PRAGMA foreign_key_check", -1, &st, NULL);
    if (e == SQLITE_OK) e = sqlite3_step(st);
    if (e == SQLITE_ROW)
        rc = clad_err_set(err, CLAD_ECORRUPT, "store %s: row %lld of table %s breaks a foreign key to %s",
                          LD(d)->path, (long long)sqlite3_column_int64(st, 1),
                          (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 2));
    else if (e != SQLITE_DONE)
        rc = lite_map(LD(d), e, err, "foreign_key_check");
    sqlite3_finalize(st);
    return rc;
}

/* Switches the file to WAL mode (a no-op when it already is). Converting a new file needs an exclusive
 * lock and SQLite does not call the busy handler for it, so when several handles create the store at
 * once the losers retry here for up to the busy timeout. */
static int set_wal(lite_db *d, clad_err *err)
{
    for (int waited_ms = 0;; waited_ms += 10) {
        sqlite3_stmt *st = NULL;
        int e = sqlite3_prepare_v2(d->h, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (e == SQLITE_OK) e = sqlite3_step(st);
        bool wal = e == SQLITE_ROW && sqlite3_column_text(st, 0) &&
                   strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
        sqlite3_finalize(st);
        if (wal) return 0;
        if (e == SQLITE_ROW)
            return clad_err_set(err, CLAD_EIO, "store %s: cannot switch to WAL mode (is the file system "
                                "local?)", d->path);
        if (e != SQLITE_BUSY || waited_ms >= STORE_BUSY_TIMEOUT_MS)
            return lite_map(d, e, err, "switching to WAL mode");
        sqlite3_sleep(10);
    }
}

static int lite_writer_setup(db *d, bool fresh, clad_err *err)
{
    /* Incremental auto-vacuum lets store_gc give pages back to the file system; it can only be chosen
     * before the first table is created. */
    if (fresh && lite_exec(d, "PRAGMA auto_vacuum = INCREMENTAL", err)) return CLAD_EIO;
    /* WAL: readers never block the writer and a commit is one append + fsync. synchronous=FULL syncs
     * the WAL at every commit, so a version is durable when store_version_put returns. */
    int rc = set_wal(LD(d), err);
    if (rc == 0) rc = lite_exec(d, "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 67108864", err);
    /* Job data (training samples) must not survive its job in free pages: deleted content is zeroed. */
    if (rc == 0) rc = lite_exec(d, "PRAGMA secure_delete = ON", err);
    return rc;
}

static int lite_set_size_limit(db *d, int64_t max_bytes, int64_t *limit_out, clad_err *err)
{
    int64_t page_size = 0, pages = 0;
    int rc = lite_int(LD(d), "PRAGMA page_size", &page_size, err);
    if (rc) return rc;
    if (max_bytes < page_size) return clad_err_set(err, CLAD_EINVAL, "store size limit below one page");
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)(max_bytes / page_size));
    if ((rc = lite_int(LD(d), sql, &pages, err))) return rc;
    if (limit_out) *limit_out = pages * page_size;
    return 0;
}

static int64_t lite_change_mark(db *d)
{
    /* Writes of this connection (total changes) and commits of others (data_version). */
    int64_t other = 0;
    lite_int(LD(d), "PRAGMA data_version", &other, NULL);
    return (int64_t)sqlite3_total_changes64(LD(d)->h) * 1000003 + other;
}

static void lite_reclaim(db *d) { sqlite3_exec(LD(d)->h, "PRAGMA incremental_vacuum", NULL, NULL, NULL); }

static void lite_busy_timeout(db *d, int ms) { sqlite3_busy_timeout(LD(d)->h, ms); }

/* In WAL mode NORMAL skips the commit's fsync; the next FULL commit syncs everything before it. */
static void lite_sync_commits(db *d, bool durable)
{
    sqlite3_exec(LD(d)->h, durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
}

/* Deleted cells are still zeroed inside pages that are written anyway; freed pages are the wipe's. */
/* Also no automatic checkpoints: they would copy a worker's large write on this connection's next small
 * commit (seconds on the daemon's loop); the wipe checkpoints instead. */
static void lite_wipe_deferred(db *d)
{
    sqlite3_exec(LD(d)->h, "PRAGMA secure_delete = FAST", NULL, NULL, NULL);
    sqlite3_wal_autocheckpoint(LD(d)->h, 0);
}

static int lite_wipe(db *d, clad_err *err)
{
    /* Every free page goes (live pages move into the holes and the file is truncated), then the WAL,
     * which still holds the deleted rows' old pages, is copied back and truncated. */
    int rc = lite_exec(d, "PRAGMA incremental_vacuum", err);
    int e = sqlite3_wal_checkpoint_v2(LD(d)->h, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc == 0 && e != SQLITE_OK) rc = lite_map(LD(d), e, err, "emptying the WAL after deleting job data");
    return rc;
}

/* ---- Backup ---- */

static int fsync_path(const char *path, bool dir)
{
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int lite_backup(db *d, const char *dest_path, clad_err *err)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", dest_path, (long)getpid()) >= (int)sizeof tmp)
        return clad_err_set(err, CLAD_EINVAL, "backup path is too long");
    unlink(tmp);
    sqlite3 *dst = NULL;
    int rc = 0;
    int e = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (e != SQLITE_OK) {
        rc = clad_err_set(err, e == SQLITE_FULL ? CLAD_EFULL : CLAD_EIO, "backup: cannot create %s: %s", tmp,
                          dst ? sqlite3_errmsg(dst) : sqlite3_errstr(e));
        goto fail_unlink;
    }
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", LD(d)->h, "main");
    if (!b) {
        rc = clad_err_set(err, CLAD_EIO, "backup to %s: %s", dest_path, sqlite3_errmsg(dst));
        goto fail_unlink;
    }
    /* All pages in one step: the copy is one read snapshot of the source, and WAL readers do not
     * block writers on other handles while it runs. */
    e = sqlite3_backup_step(b, -1);
    int fin = sqlite3_backup_finish(b);
    if (e != SQLITE_DONE || fin != SQLITE_OK) {
        int code = e != SQLITE_DONE ? e : fin;
        int mapped = (code & 0xff) == SQLITE_FULL ? CLAD_EFULL
                     : (code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED ? CLAD_EBUSY
                                                                                      : CLAD_EIO;
        rc = clad_err_set(err, mapped, "backup to %s failed: %s", dest_path, sqlite3_errstr(code));
        goto fail_unlink;
    }
    if (sqlite3_close(dst) != SQLITE_OK) {
        rc = clad_err_set(err, CLAD_EIO, "backup to %s: closing the copy failed", dest_path);
        dst = NULL;
        goto fail_unlink;
    }
    dst = NULL;
    if (fsync_path(tmp, false) != 0 || rename(tmp, dest_path) != 0) {
        rc = clad_err_set(err, errno == ENOSPC ? CLAD_EFULL : CLAD_EIO, "backup to %s: %s", dest_path,
                          strerror(errno));
        goto fail_unlink;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", dest_path);
    fsync_path(dirname(dir), true); /* make the rename durable; best effort */
    return 0;

fail_unlink:
    if (dst) sqlite3_close(dst);
    unlink(tmp);
    return rc;
}

/* ---- No change notification: callers poll ---- */

static int lite_listen(db *d, const char *channel, clad_err *err)
{
    return clad_err_set(err, CLAD_EINVAL, "the sqlite backend has no change notifications; poll the feed");
}
/* Nobody can listen, so there is nothing to deliver: a write's notification is a no-op. */
static int lite_notify(db *d, const char *channel, const char *payload, clad_err *err) { return 0; }
static int lite_notify_fd(db *d) { return -1; }
static int lite_drain(db *d, const char *channel) { return -1; }

const db_ops db_sqlite_ops = {
    .name = "sqlite",
    .engine = "SQLite",
    .skip_locked = false,
    .open = lite_open,
    .close = lite_close,
    .display = lite_display,
    .prepare = lite_prepare,
    .bind_null = lite_bind_null,
    .bind_int64 = lite_bind_int64,
    .bind_double = lite_bind_double,
    .bind_text = lite_bind_text,
    .bind_blob = lite_bind_blob,
    .step = lite_step,
    .finalize = lite_finalize,
    .col_is_null = lite_col_is_null,
    .col_int64 = lite_col_int64,
    .col_double = lite_col_double,
    .col_text = lite_col_text,
    .col_blob = lite_col_blob,
    .changes = lite_changes,
    .exec = lite_exec,
    .error = lite_error,
    .begin = lite_begin,
    .commit = lite_commit,
    .rollback = lite_rollback,
    .in_tx = lite_in_tx,
    .migrations = store_migrations_sqlite,
    .header_read = lite_header_read,
    .header_write = lite_header_write,
    .writer_setup = lite_writer_setup,
    .check = lite_check,
    .set_size_limit = lite_set_size_limit,
    .backup = lite_backup,
    .change_mark = lite_change_mark,
    .reclaim = lite_reclaim,
    .busy_timeout = lite_busy_timeout,
    .wipe_deferred = lite_wipe_deferred,
    .wipe = lite_wipe,
    .sync_commits = lite_sync_commits,
    .listen = lite_listen,
    .notify = lite_notify,
    .notify_fd = lite_notify_fd,
    .drain = lite_drain,
};
