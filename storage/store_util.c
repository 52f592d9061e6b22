/* Helpers shared by the store: statements with typed binds and column getters over the backend's
 * driver, transactions, validation of names and JSON, and small lookups. */
#include "storage/store_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

int st_error(store *s, int rc, clad_err *err, const char *what) { return s->db->ops->error(s->db, rc, err, what); }

/* Binds one argument per letter of types; each driver binds SQL NULL, integers, doubles, text and
 * blobs, and the letters say which (see store_internal.h). */
static int bind_args(store *s, db_stmt *st, clad_err *err, const char *types, va_list ap)
{
    const db_ops *o = s->db->ops;
    int rc = 0;
    for (int i = 0; types && types[i] && rc == 0; i++) {
        int at = i + 1;
        switch (types[i]) {
        case 't': {
            const char *v = va_arg(ap, const char *);
            rc = v ? o->bind_text(st, at, v) : o->bind_null(st, at, 't');
            break;
        }
        case 'i': rc = o->bind_int64(st, at, va_arg(ap, int)); break;
        case 'I': rc = o->bind_int64(st, at, va_arg(ap, int64_t)); break;
        case 'N': {
            int64_t v = va_arg(ap, int64_t);
            rc = v ? o->bind_int64(st, at, v) : o->bind_null(st, at, 'I');
            break;
        }
        case 'd': rc = o->bind_double(st, at, va_arg(ap, double)); break;
        case 'b': {
            const void *p = va_arg(ap, const void *);
            size_t n = va_arg(ap, size_t);
            rc = p ? o->bind_blob(st, at, p, n) : o->bind_null(st, at, 'b');
            break;
        }
        default:
            return clad_err_set(err, CLAD_EINTERNAL, "store: bad bind type '%c'", types[i]);
        }
    }
    return rc == 0 ? 0 : st_error(s, rc, err, "binding a value");
}

static int st_vprepare(store *s, db_stmt **st, clad_err *err, const char *sql, const char *types, va_list ap)
{
    *st = NULL;
    int rc = s->db->ops->prepare(s->db, sql, st, err);
    if (rc) {
        /* A failed prepare of a statement we wrote is a bug unless the database is busy or corrupt. */
        clad_err_prefix(err, "[%.60s] ", sql);
        return rc;
    }
    int e = bind_args(s, *st, err, types, ap);
    if (e) {
        st_finalize(*st);
        *st = NULL;
    }
    return e;
}

int st_prepare(store *s, db_stmt **st, clad_err *err, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    int rc = st_vprepare(s, st, err, sql, types, ap);
    va_end(ap);
    return rc;
}

int st_step(store *s, db_stmt *st, clad_err *err) { return st->ops->step(st, err); }

void st_finalize(db_stmt *st)
{
    if (st) st->ops->finalize(st);
}

int64_t st_changes(store *s) { return s->db->ops->changes(s->db); }

int st_exec(store *s, clad_err *err, const char *sql, const char *types, ...)
{
    db_stmt *st;
    va_list ap;
    va_start(ap, types);
    int rc = st_vprepare(s, &st, err, sql, types, ap);
    va_end(ap);
    if (rc) return rc;
    while ((rc = st_step(s, st, err)) == 1) {}
    st_finalize(st);
    return rc;
}

int st_int(store *s, int64_t *out, clad_err *err, const char *sql, const char *types, ...)
{
    db_stmt *st;
    va_list ap;
    va_start(ap, types);
    int rc = st_vprepare(s, &st, err, sql, types, ap);
    va_end(ap);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        *out = col_int64(st, 0);
        rc = 0;
    } else if (rc == 0) {
        rc = CLAD_ENOTFOUND;
    }
    st_finalize(st);
    return rc;
}

const char *col_text(db_stmt *st, int i) { return st->ops->col_text(st, i); }
int64_t col_int64(db_stmt *st, int i) { return st->ops->col_int64(st, i); }
int col_int(db_stmt *st, int i) { return (int)st->ops->col_int64(st, i); }
double col_double(db_stmt *st, int i) { return st->ops->col_double(st, i); }
const void *col_blob(db_stmt *st, int i, size_t *n) { return st->ops->col_blob(st, i, n); }
bool col_is_null(db_stmt *st, int i) { return st->ops->col_is_null(st, i); }

void col_copy(db_stmt *st, int i, char *buf, size_t cap)
{
    const char *t = col_text(st, i);
    snprintf(buf, cap, "%s", t ? t : "");
}

char *col_strdup(db_stmt *st, int i)
{
    const char *t = col_text(st, i);
    if (!t) return NULL;
    char *c = strdup(t);
    if (!c) abort(); /* a bounded bookkeeping allocation */
    return c;
}

void *st_step_append(store *s, db_stmt *st, row_list *rows, const char *doing, int *rc, clad_err *err)
{
    int step = st_step(s, st, err);
    if (step != 1) {
        *rc = step;
        return NULL;
    }
    if (rows->n == rows->cap) {
        size_t cap = rows->cap ? 2 * rows->cap : 16;
        void *grown = realloc(rows->items, cap * rows->elem);
        if (!grown) {
            *rc = clad_err_set(err, CLAD_ENOMEM, "out of memory %s", doing);
            return NULL;
        }
        rows->items = grown;
        rows->cap = cap;
    }
    void *r = (char *)rows->items + rows->n++ * rows->elem;
    memset(r, 0, rows->elem);
    *rc = 0;
    return r;
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
    return rc ? rc : s->db->ops->begin(s->db, DB_TX_WRITE, err);
}

int tx_end(store *s, int rc, clad_err *err)
{
    if (rc == 0) {
        rc = s->db->ops->commit(s->db, err);
        if (rc == 0 && s->wipe_wal) {
            s->wipe_wal = false;
            if (s->wipe_deferred) s->wipe_due = true;
            else store_job_data_wipe(s, NULL);
        }
        if (rc == 0) return 0;
    }
    s->wipe_wal = false;
    s->db->ops->rollback(s->db);
    return rc;
}

int tx_read_begin(store *s, bool *began, clad_err *err)
{
    *began = false;
    if (s->in_snapshot) return 0;
    int rc = s->db->ops->begin(s->db, DB_TX_READ, err);
    if (rc) return rc;
    *began = true;
    return 0;
}

void tx_read_end(store *s, bool began)
{
    if (began && s->db->ops->in_tx(s->db)) s->db->ops->commit(s->db, NULL);
}

void st_reclaim(store *s) { s->db->ops->reclaim(s->db); }

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
    /* Parsed here rather than by the database, so both backends accept exactly the same texts. */
    json_t *v = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    bool ok = v && ((strcmp(type, "object") == 0 && json_is_object(v)) ||
                    (strcmp(type, "array") == 0 && json_is_array(v)));
    json_decref(v);
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
