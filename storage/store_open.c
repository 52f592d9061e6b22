/* Opening and closing a store, schema migrations, integrity checks, size limit, online backup and
 * read snapshots. */
#include "storage/store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Runs `PRAGMA quick_check` or `integrity_check`; CLAD_ECORRUPT with its first message unless "ok". */
static int run_integrity(store *s, const char *pragma, clad_err *err)
{
    sqlite3_stmt *st;
    int rc = st_prepare(s, &st, err, pragma, NULL);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        const char *msg = (const char *)sqlite3_column_text(st, 0);
        if (!msg || strcmp(msg, "ok") != 0) {
            /* The report can be long; its first problem is enough to name the damage. */
            char first[160] = "(no message)";
            if (msg) {
                const char *m = strncmp(msg, "*** in database main ***\n", 25) == 0 ? msg + 25 : msg;
                snprintf(first, sizeof first, "%.*s", (int)strcspn(m, "\n"), m);
            }
            rc = clad_err_set(err, CLAD_ECORRUPT, "store %s failed %s (restore it from a backup): %s",
                              s->path, pragma + 7, first);
        } else {
            rc = 0;
        }
    } else if (rc == 0) {
        rc = clad_err_set(err, CLAD_EINTERNAL, "store %s: %s returned no row", s->path, pragma + 7);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Applies every migration the file lacks, in one write transaction. */
static int migrate(store *s, clad_err *err)
{
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t from = 0;
    /* Read again under the write lock: another process may have migrated in the meantime. */
    rc = st_int(s, &from, err, "PRAGMA user_version", NULL);
    for (int64_t v = from; rc == 0 && v < store_n_migrations; v++) {
        int e = sqlite3_exec(s->db, store_migrations[v], NULL, NULL, NULL);
        if (e != SQLITE_OK) {
            rc = st_error(s, e, err, "migrating the schema");
            clad_err_prefix(err, "migration %lld: ", (long long)v + 1);
        }
    }
    if (rc == 0 && from < store_n_migrations) {
        char sql[96];
        snprintf(sql, sizeof sql, "PRAGMA application_id = %d; PRAGMA user_version = %d",
                 STORE_APPLICATION_ID, store_n_migrations);
        int e = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        if (e != SQLITE_OK) rc = st_error(s, e, err, "setting the schema version");
        if (rc == 0) {
            jbuf j;
            jb_init(&j);
            jb_int(&j, "from", from);
            jb_int(&j, "to", store_n_migrations);
            rc = audit_add(s, STORE_UID_CLAD, "store.migrate", "store", jb_done(&j), err);
        }
    }
    return tx_end(s, rc, err);
}

static int exec_pragma(store *s, const char *sql, clad_err *err)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : st_error(s, rc, err, sql);
}

/* Switches the file to WAL mode (a no-op when it already is). Converting a new file needs an exclusive
 * lock and SQLite does not call the busy handler for it, so when several handles create the store at
 * once the losers retry here for up to the busy timeout. */
static int set_wal(store *s, clad_err *err)
{
    for (int waited_ms = 0;; waited_ms += 10) {
        sqlite3_stmt *st;
        int rc = st_prepare(s, &st, err, "PRAGMA journal_mode = WAL", NULL);
        if (rc) return rc;
        int e = sqlite3_step(st);
        bool wal = e == SQLITE_ROW && sqlite3_column_text(st, 0) &&
                   strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
        sqlite3_finalize(st);
        if (wal) return 0;
        if (e == SQLITE_ROW)
            return clad_err_set(err, CLAD_EIO, "store %s: cannot switch to WAL mode (is the file system "
                                "local?)", s->path);
        if (e != SQLITE_BUSY || waited_ms >= STORE_BUSY_TIMEOUT_MS)
            return st_error(s, e, err, "switching to WAL mode");
        sqlite3_sleep(10);
    }
}

/* Everything store_open and store_open_reader share: connection, header checks. */
static store *open_common(const char *path, bool reader, bool worker, clad_err *err)
{
    if (!path || !*path) {
        clad_err_set(err, CLAD_EINVAL, "store path is empty");
        return NULL;
    }
    store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        clad_err_set(err, CLAD_ENOMEM, "out of memory opening store %s", path);
        return NULL;
    }
    s->readonly = reader;
    /* NOMUTEX: a handle is used by one thread at a time, so SQLite's per-connection mutex is waste. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (reader || worker ? 0 : SQLITE_OPEN_CREATE);
    int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        if ((reader || worker) && rc == SQLITE_CANTOPEN && access(path, F_OK) != 0)
            clad_err_set(err, CLAD_ENOTFOUND, "no store at %s", path);
        else
            st_error(s, rc, err, "opening");
        goto fail_close;
    }
    s->busy_ms = STORE_BUSY_TIMEOUT_MS;
    sqlite3_busy_timeout(s->db, s->busy_ms);
    if (exec_pragma(s, "PRAGMA foreign_keys = ON", err)) goto fail_close;

    /* Read the header before anything writes to the file: a newer schema must leave it untouched. The
     * three values come from one read transaction, because another process may be creating the
     * schema right now. */
    int64_t app_id = 0, user_version = 0, n_tables = 0;
    bool began;
    rc = tx_read_begin(s, &began, err);
    if (rc == 0 && (st_int(s, &app_id, err, "PRAGMA application_id", NULL) ||
                    st_int(s, &user_version, err, "PRAGMA user_version", NULL) ||
                    st_int(s, &n_tables, err, "SELECT count(*) FROM sqlite_master", NULL)))
        rc = -1;
    tx_read_end(s, began);
    if (rc) {
        clad_err_prefix(err, "opening: ");
        goto fail_close;
    }
    if (user_version > STORE_SCHEMA_VERSION) {
        clad_err_set(err, CLAD_EVERSION, "store schema version %lld is newer than this clad (%d); "
                     "upgrade clad", (long long)user_version, STORE_SCHEMA_VERSION);
        goto fail_close;
    }
    if ((app_id != 0 && app_id != STORE_APPLICATION_ID) || (app_id == 0 && n_tables > 0)) {
        clad_err_set(err, CLAD_EINVAL, "%s is an SQLite database but not a clad store", path);
        goto fail_close;
    }
    if (reader || worker) {
        if (user_version != STORE_SCHEMA_VERSION) {
            clad_err_set(err, CLAD_EVERSION, "store schema version %lld is older than this clad (%d); "
                         "open it read-write once (start cladd) to migrate it",
                         (long long)user_version, STORE_SCHEMA_VERSION);
            goto fail_close;
        }
        if (reader && exec_pragma(s, "PRAGMA query_only = 1", err)) goto fail_close;
        /* A worker's writes are as durable and as careful with deleted data as the main handle's. */
        if (worker && (exec_pragma(s, "PRAGMA synchronous = FULL", err) ||
                       exec_pragma(s, "PRAGMA secure_delete = ON", err)))
            goto fail_close;
        return s;
    }

    if (n_tables > 0 && run_integrity(s, "PRAGMA quick_check", err)) goto fail_close;
    /* Incremental auto-vacuum lets store_gc give pages back to the file system; it can only be chosen
     * before the first table is created. */
    if (n_tables == 0 && exec_pragma(s, "PRAGMA auto_vacuum = INCREMENTAL", err)) goto fail_close;
    /* WAL: readers never block the writer and a commit is one append + fsync. synchronous=FULL syncs
     * the WAL at every commit, so a version is durable when store_version_put returns. */
    if (set_wal(s, err)) goto fail_close;
    if (exec_pragma(s, "PRAGMA synchronous = FULL", err) ||
        exec_pragma(s, "PRAGMA journal_size_limit = 67108864", err))
        goto fail_close;
    /* Job data (training samples) must not survive its job in free pages: deleted content is zeroed. */
    if (exec_pragma(s, "PRAGMA secure_delete = ON", err)) goto fail_close;
    if (user_version < STORE_SCHEMA_VERSION && migrate(s, err)) goto fail_close;
    return s;

fail_close:
    store_close(s);
    return NULL;
}

store *store_open(const char *path, clad_err *err) { return open_common(path, false, false, err); }

int store_set_busy_timeout(store *s, int ms)
{
    int old = s->busy_ms;
    s->busy_ms = ms < 0 ? 0 : ms;
    sqlite3_busy_timeout(s->db, s->busy_ms);
    return old;
}

store *store_open_reader(const char *path, clad_err *err) { return open_common(path, true, false, err); }

store *store_open_worker(const char *path, clad_err *err) { return open_common(path, false, true, err); }

int64_t store_change_mark(store *s)
{
    /* Writes of this connection (total changes) and commits of others (data_version). */
    int64_t other = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA data_version", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        other = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return (int64_t)sqlite3_total_changes64(s->db) * 1000003 + other;
}

void store_close(store *s)
{
    if (!s) return;
    if (s->in_snapshot) store_snapshot_end(s);
    /* sqlite3_close_v2 would defer; every statement is finalized by now, so plain close succeeds. */
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

/* ---- Checks ---- */

/* Re-hashes every stored blob (adapters and inline base weights). */
static int check_blobs(store *s, clad_err *err)
{
    sqlite3_stmt *st;
    int rc = st_prepare(s, &st, err,
                        "SELECT t.name, v.version, v.adapter_size, v.adapter_sha256, b.data "
                        "FROM versions v JOIN tasks t ON t.id = v.task_id "
                        "LEFT JOIN version_blobs b ON b.version_id = v.id ORDER BY v.id", NULL);
    if (rc) return rc;
    while ((rc = st_step(s, st, err)) == 1) {
        const char *task = (const char *)sqlite3_column_text(st, 0);
        long long ver = sqlite3_column_int64(st, 1);
        const void *data = sqlite3_column_blob(st, 4);
        size_t n = (size_t)sqlite3_column_bytes(st, 4);
        char hex[SHA256_HEX_SIZE];
        if (!data) {
            rc = clad_err_set(err, CLAD_ECORRUPT, "version %lld of task '%s': adapter blob missing", ver, task);
            break;
        }
        sha256_hex(data, n, hex);
        if ((int64_t)n != sqlite3_column_int64(st, 2) ||
            strcmp(hex, (const char *)sqlite3_column_text(st, 3)) != 0) {
            rc = clad_err_set(err, CLAD_ECORRUPT, "version %lld of task '%s': adapter blob sha256 mismatch",
                              ver, task);
            break;
        }
    }
    sqlite3_finalize(st);
    if (rc < 0) return rc;

    rc = st_prepare(s, &st, err, "SELECT name, weights_sha256, weights FROM bases WHERE weights IS NOT NULL",
                    NULL);
    if (rc) return rc;
    while ((rc = st_step(s, st, err)) == 1) {
        char hex[SHA256_HEX_SIZE];
        sha256_hex(sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2), hex);
        if (strcmp(hex, (const char *)sqlite3_column_text(st, 1)) != 0) {
            rc = clad_err_set(err, CLAD_ECORRUPT, "base '%s': weights blob sha256 mismatch",
                              (const char *)sqlite3_column_text(st, 0));
            break;
        }
    }
    sqlite3_finalize(st);
    return rc < 0 ? rc : 0;
}

/* Invariants the schema cannot express; each query returns a description of the first violation. */
static const char *const invariant_queries[] = {
    "SELECT 'task ''' || t.name || ''' has versions but no active alias' FROM tasks t "
    "WHERE EXISTS (SELECT 1 FROM versions v WHERE v.task_id = t.id) "
    "AND NOT EXISTS (SELECT 1 FROM aliases a WHERE a.task_id = t.id AND a.name = 'active')",
    "SELECT 'alias ''' || a.name || ''' disagrees with its history row' FROM aliases a "
    "JOIN alias_history h ON h.id = a.state_id JOIN versions v ON v.id = a.version_id "
    "WHERE h.new_version IS NOT v.version OR h.task_id != a.task_id OR h.alias != a.name",
    "SELECT 'alias history row ' || h.id || ' names a version that was never written' "
    "FROM alias_history h JOIN tasks t ON t.id = h.task_id "
    "WHERE h.old_version >= t.next_version OR h.new_version >= t.next_version",
    "SELECT 'version ' || v.version || ' of task ''' || t.name || ''' is at or past the next number' "
    "FROM versions v JOIN tasks t ON t.id = v.task_id WHERE v.version >= t.next_version",
    "SELECT 'version ' || v.version || ' was produced by job ' || v.job_id || ' which did not succeed' "
    "FROM versions v JOIN jobs j ON j.id = v.job_id "
    "WHERE j.state != 'succeeded' OR j.result_version IS NOT v.version",
    /* Runtime dependencies (dangling ones fail foreign_key_check above). */
    "SELECT 'fusion version ' || v.version || ' of task ''' || t.name || ''' records no source versions "
    "(a source was deleted before clad recorded dependencies; it cannot be served)' "
    "FROM versions v JOIN tasks t ON t.id = v.task_id WHERE v.kind = 'fusion' "
    "AND NOT EXISTS (SELECT 1 FROM version_deps d WHERE d.version_id = v.id)",
    "SELECT 'version ' || v.version || ' of task ''' || t.name || ''' needs a version on another base' "
    "FROM version_deps d JOIN versions v ON v.id = d.version_id JOIN versions n ON n.id = d.needs_id "
    "JOIN tasks t ON t.id = v.task_id WHERE n.base_sha256 != v.base_sha256",
};

int store_check(store *s, int level, clad_err *err)
{
    if (level != STORE_CHECK_FULL) return run_integrity(s, "PRAGMA quick_check", err);
    int rc = run_integrity(s, "PRAGMA integrity_check", err);
    if (rc) return rc;
    bool began;
    if ((rc = tx_read_begin(s, &began, err))) return rc;
    sqlite3_stmt *st;
    rc = st_prepare(s, &st, err, "PRAGMA foreign_key_check", NULL);
    if (rc == 0) {
        rc = st_step(s, st, err);
        if (rc == 1)
            rc = clad_err_set(err, CLAD_ECORRUPT, "store %s: row %lld of table %s breaks a foreign key to %s",
                              s->path, (long long)sqlite3_column_int64(st, 1),
                              (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 2));
        sqlite3_finalize(st);
    }
    for (size_t i = 0; rc == 0 && i < sizeof invariant_queries / sizeof invariant_queries[0]; i++) {
        rc = st_prepare(s, &st, err, invariant_queries[i], NULL);
        if (rc) break;
        rc = st_step(s, st, err);
        if (rc == 1)
            rc = clad_err_set(err, CLAD_ECORRUPT, "store %s: %s", s->path,
                              (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
    }
    if (rc == 0) rc = check_blobs(s, err);
    tx_read_end(s, began);
    return rc;
}

int store_set_size_limit(store *s, int64_t max_bytes, int64_t *limit_out, clad_err *err)
{
    int64_t page_size = 0, pages = 0;
    int rc = st_int(s, &page_size, err, "PRAGMA page_size", NULL);
    if (rc) return rc;
    if (max_bytes < page_size) return clad_err_set(err, CLAD_EINVAL, "store size limit below one page");
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)(max_bytes / page_size));
    rc = st_int(s, &pages, err, sql, NULL);
    if (rc) return rc;
    if (limit_out) *limit_out = pages * page_size;
    return 0;
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

int store_backup(store *s, const char *dest_path, clad_err *err)
{
    if (!dest_path || !*dest_path) return clad_err_set(err, CLAD_EINVAL, "backup path is empty");
    if (s->in_snapshot) return clad_err_set(err, CLAD_EINVAL, "store: backup inside a read snapshot");
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
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", s->db, "main");
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

/* ---- Snapshots ---- */

int store_snapshot_begin(store *s, clad_err *err)
{
    if (s->in_snapshot) return clad_err_set(err, CLAD_EINVAL, "store: snapshots do not nest");
    int rc = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return st_error(s, rc, err, "starting a snapshot");
    /* BEGIN is lazy; the first read fixes the snapshot, so read now rather than at the caller's first
     * query. */
    int64_t n;
    rc = st_int(s, &n, err, "SELECT count(*) FROM sqlite_master", NULL);
    if (rc) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    s->in_snapshot = true;
    return 0;
}

void store_snapshot_end(store *s)
{
    if (!s || !s->in_snapshot) return;
    s->in_snapshot = false;
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
}
