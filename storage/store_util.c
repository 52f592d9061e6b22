/* Helpers shared by the store: statements with typed binds, SQLite-to-clad error mapping,
 * transactions, validation of names and JSON, and small lookups. */
#include "storage/store_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int st_error(store *s, int rc, clad_err *err, const char *what)
{
    const char *detail = s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    const char *path = s && s->path ? s->path : "?";
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

static int bind_args(store *s, sqlite3_stmt *st, clad_err *err, const char *types, va_list ap)
{
    int rc = SQLITE_OK;
    for (int i = 0; types && types[i] && rc == SQLITE_OK; i++) {
        int at = i + 1;
        switch (types[i]) {
        case 't': {
            const char *v = va_arg(ap, const char *);
            rc = v ? sqlite3_bind_text(st, at, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, at);
            break;
        }
        case 'i': rc = sqlite3_bind_int(st, at, va_arg(ap, int)); break;
        case 'I': rc = sqlite3_bind_int64(st, at, va_arg(ap, int64_t)); break;
        case 'N': {
            int64_t v = va_arg(ap, int64_t);
            rc = v ? sqlite3_bind_int64(st, at, v) : sqlite3_bind_null(st, at);
            break;
        }
        case 'd': rc = sqlite3_bind_double(st, at, va_arg(ap, double)); break;
        case 'b': {
            const void *p = va_arg(ap, const void *);
            size_t n = va_arg(ap, size_t);
            rc = p ? sqlite3_bind_blob64(st, at, p, n, SQLITE_STATIC) : sqlite3_bind_null(st, at);
            break;
        }
        default:
            return clad_err_set(err, CLAD_EINTERNAL, "store: bad bind type '%c'", types[i]);
        }
    }
    return rc == SQLITE_OK ? 0 : st_error(s, rc, err, "binding a value");
}

static int st_vprepare(store *s, sqlite3_stmt **st, clad_err *err, const char *sql, const char *types,
                       va_list ap)
{
    *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    if (rc != SQLITE_OK) {
        /* A failed prepare of a statement we wrote is a bug unless the database is busy or corrupt. */
        int code = st_error(s, rc, err, "preparing a statement");
        clad_err_prefix(err, "[%.60s] ", sql);
        return code;
    }
    int e = bind_args(s, *st, err, types, ap);
    if (e) {
        sqlite3_finalize(*st);
        *st = NULL;
    }
    return e;
}

int st_prepare(store *s, sqlite3_stmt **st, clad_err *err, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    int rc = st_vprepare(s, st, err, sql, types, ap);
    va_end(ap);
    return rc;
}

int st_step(store *s, sqlite3_stmt *st, clad_err *err)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) return 1;
    if (rc == SQLITE_DONE) return 0;
    return st_error(s, rc, err, "running a statement");
}

int st_exec(store *s, clad_err *err, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st;
    va_list ap;
    va_start(ap, types);
    int rc = st_vprepare(s, &st, err, sql, types, ap);
    va_end(ap);
    if (rc) return rc;
    while ((rc = st_step(s, st, err)) == 1) {}
    sqlite3_finalize(st);
    return rc;
}

int st_int(store *s, int64_t *out, clad_err *err, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st;
    va_list ap;
    va_start(ap, types);
    int rc = st_vprepare(s, &st, err, sql, types, ap);
    va_end(ap);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        *out = sqlite3_column_int64(st, 0);
        rc = 0;
    } else if (rc == 0) {
        rc = CLAD_ENOTFOUND;
    }
    sqlite3_finalize(st);
    return rc;
}

void col_copy(sqlite3_stmt *st, int i, char *buf, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(buf, cap, "%s", t ? (const char *)t : "");
}

char *col_strdup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    if (!t) return NULL;
    char *c = strdup((const char *)t);
    if (!c) abort(); /* a bounded bookkeeping allocation */
    return c;
}

void *arr_reserve(void *arr, size_t n, size_t *cap, size_t elem)
{
    if (n < *cap) return arr;
    size_t c = *cap ? 2 * *cap : 16;
    void *grown = realloc(arr, c * elem);
    if (grown) *cap = c;
    return grown;
}

/* ---- Transactions ---- */

int check_writable(store *s, clad_err *err)
{
    if (s->readonly)
        return clad_err_set(err, CLAD_EDENIED, "store %s was opened read-only (store_open_reader)", s->path);
    if (s->in_snapshot)
        return clad_err_set(err, CLAD_EINVAL, "store: a write was attempted inside a read snapshot");
    return 0;
}

int tx_begin_write(store *s, clad_err *err)
{
    int rc = check_writable(s, err);
    if (rc) return rc;
    rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : st_error(s, rc, err, "starting a write transaction");
}

int tx_end(store *s, int rc, clad_err *err)
{
    if (rc == 0) {
        int e = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
        if (e == SQLITE_OK && s->wipe_wal) {
            s->wipe_wal = false;
            if (s->wipe_deferred) s->wipe_due = true;
            else store_job_data_wipe(s, NULL);
        }
        if (e == SQLITE_OK) return 0;
        rc = st_error(s, e, err, "committing");
    }
    s->wipe_wal = false;
    /* SQLite may already have rolled back by itself (for example after SQLITE_FULL). */
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int tx_read_begin(store *s, bool *began, clad_err *err)
{
    *began = false;
    if (s->in_snapshot) return 0;
    int rc = sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return st_error(s, rc, err, "starting a read transaction");
    *began = true;
    return 0;
}

void tx_read_end(store *s, bool began)
{
    if (began && !sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
}

/* ---- Validation ---- */

static bool name_char(char c, bool first)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return !first && (c == '_' || c == '-' || c == '.');
}

int check_name(const char *name, const char *what, clad_err *err)
{
    if (!name || !*name) return clad_err_set(err, CLAD_EINVAL, "%s name is empty", what);
    size_t n = strnlen(name, STORE_NAME_MAX + 1);
    if (n > STORE_NAME_MAX)
        return clad_err_set(err, CLAD_EINVAL, "%s name is longer than %d characters", what, STORE_NAME_MAX);
    for (size_t i = 0; i < n; i++)
        if (!name_char(name[i], i == 0))
            return clad_err_set(err, CLAD_EINVAL, "%s name '%s' has a character other than letters, "
                                "digits, '.', '_', '-' (or starts with one of those three)", what, name);
    return 0;
}

int check_json(store *s, const char *json, const char *type, bool nullable, const char *what,
               clad_err *err)
{
    if (!json) return nullable ? 0 : clad_err_set(err, CLAD_EINVAL, "%s is missing", what);
    if (strnlen(json, STORE_JSON_MAX + 1) > STORE_JSON_MAX)
        return clad_err_set(err, CLAD_ETOOLARGE, "%s is longer than %d bytes", what, STORE_JSON_MAX);
    int64_t ok = 0;
    int rc = st_int(s, &ok, err, "SELECT CASE WHEN json_valid(?1) THEN json_type(?1) = ?2 ELSE 0 END", "tt", json, type);
    if (rc) return rc;
    if (!ok) return clad_err_set(err, CLAD_EINVAL, "%s is not a valid JSON %s", what, type);
    return 0;
}

int check_reason(const char *reason, clad_err *err)
{
    if (reason && strnlen(reason, STORE_REASON_MAX + 1) > STORE_REASON_MAX)
        return clad_err_set(err, CLAD_ETOOLARGE, "reason is longer than %d bytes", STORE_REASON_MAX);
    return 0;
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Lookups ---- */

int task_id(store *s, const char *name, int64_t *id, clad_err *err)
{
    int rc = check_name(name, "task", err);
    if (rc) return rc;
    rc = st_int(s, id, err, "SELECT id FROM tasks WHERE name = ?1", "t", name);
    if (rc == CLAD_ENOTFOUND) return clad_err_set(err, rc, "unknown task '%s'", name);
    return rc;
}

int version_id(store *s, int64_t tid, const char *task, int64_t version, int64_t *id, clad_err *err)
{
    int rc = st_int(s, id, err, "SELECT id FROM versions WHERE task_id = ?1 AND version = ?2", "II",
                    tid, version);
    if (rc == CLAD_ENOTFOUND) {
        int64_t next = 0;
        st_int(s, &next, NULL, "SELECT next_version FROM tasks WHERE id = ?1", "I", tid);
        if (version >= 1 && version < next)
            return clad_err_set(err, rc, "version %lld of task '%s' was deleted", (long long)version, task);
        return clad_err_set(err, rc, "task '%s' has no version %lld", task, (long long)version);
    }
    return rc;
}
