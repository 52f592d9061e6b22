/* The PostgreSQL driver (storage/db.h), over libpq: one database per store, reached by a
 * "postgresql://" or "postgres://" URI.
 *
 * Parameters and results travel in binary form (integers, doubles and bytea as raw bytes; no hex text
 * round trips). The store's `?N` placeholders become `$N`, and group_concat( becomes string_agg(.
 * Write transactions run at READ COMMITTED behind one transaction-scoped advisory lock per database,
 * the counterpart of SQLite's BEGIN IMMEDIATE: writers from every process are serialised, so the
 * store's read-check-write steps (next version number, alias state, job state) cannot interleave and a
 * task's numbers have no gaps or duplicates. Reads run as REPEATABLE READ READ ONLY snapshots. The
 * schema version lives in the clad_meta table. The password in a URI is never printed.
 */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/store_internal.h"

#define PG_WRITER_LOCK 0x636c6164 /* advisory lock key of the store's writers ("clad") */
#define PG_RETRIES 5              /* attempts for a serialization failure or deadlock */
#define PG_MAX_PARAMS 32

/* Type oids from PostgreSQL's catalog (pg_type.dat); stable across releases. */
enum { OID_BOOL = 16, OID_BYTEA = 17, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23, OID_TEXT = 25,
       OID_FLOAT4 = 700, OID_FLOAT8 = 701, OID_NUMERIC = 1700 };

#define PG_MAX_CHANNELS 8

typedef struct pg_db {
    db base;
    PGconn *c;
    bool reader;
    char channels[PG_MAX_CHANNELS][64]; /* LISTENed, to listen again after a reconnect */
    bool arrived[PG_MAX_CHANNELS];      /* a notification on channels[i] waits for that channel's drain */
    int n_channels;
    char name[256];    /* the URI without its password, for messages */
    char sqlstate[6];  /* of the last failure; "" when the connection itself failed */
    char msg[256];     /* its primary message */
    int64_t changes;
} pg_db;

typedef struct pg_stmt {
    db_stmt base;
    pg_db *d;
    char *sql;         /* in PostgreSQL's dialect */
    int n_params;
    Oid types[PG_MAX_PARAMS];
    const char *vals[PG_MAX_PARAMS];
    int lens[PG_MAX_PARAMS];
    int fmts[PG_MAX_PARAMS];
    unsigned char raw[PG_MAX_PARAMS][8]; /* big-endian integers and doubles */
    PGresult *res;
    int row;           /* current row; -1 before the first step */
    char num[32];      /* col_text of a number */
} pg_stmt;

static pg_db *PD(db *d) { return (pg_db *)d; }
static pg_stmt *PS(db_stmt *st) { return (pg_stmt *)st; }

/* ---- Names and errors ---- */

/* Copies a URI without the password of its user info ("user:secret@") or a password= parameter. */
static void pg_display(const char *target, char *buf, size_t cap)
{
    char tmp[1024];
    size_t n = 0;
    const char *p = target, *scheme = strstr(target, "://");
    const char *at = scheme ? strpbrk(scheme + 3, "@/?") : NULL;
    if (at && *at == '@') { /* user info: keep the user, drop ":password" */
        const char *colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
        const char *user_end = colon ? colon : at;
        n = (size_t)snprintf(tmp, sizeof tmp, "%.*s", (int)(user_end - target), target);
        p = at;
    }
    for (; *p && n + 1 < sizeof tmp;) {
        bool param_start = p > target && (p[-1] == '?' || p[-1] == '&');
        if (param_start && strncmp(p, "password=", 9) == 0) {
            p += strcspn(p, "&");
            if (*p == '&') p++;
            continue;
        }
        tmp[n++] = *p++;
    }
    while (n > 0 && (tmp[n - 1] == '&' || tmp[n - 1] == '?')) n--;
    tmp[n] = '\0';
    snprintf(buf, cap, "%s", tmp);
}

/* Copies libpq's message (its first line) with every copy of the URI's password masked: libpq quotes
 * a URI it cannot parse whole. */
static void scrub_password(const char *target, const char *msg, char *out, size_t cap)
{
    snprintf(out, cap, "%.*s", (int)strcspn(msg, "\n"), msg);
    const char *secrets[2] = {NULL, NULL};
    size_t lens[2] = {0, 0};
    const char *scheme = strstr(target, "://");
    const char *at = scheme ? strpbrk(scheme + 3, "@/?") : NULL;
    const char *colon = at && *at == '@' ? memchr(scheme + 3, ':', (size_t)(at - scheme - 3)) : NULL;
    if (colon) {
        secrets[0] = colon + 1;
        lens[0] = (size_t)(at - colon - 1);
    }
    const char *param = strstr(target, "password=");
    if (param) {
        secrets[1] = param + 9;
        lens[1] = strcspn(secrets[1], "&");
    }
    for (int k = 0; k < 2; k++) {
        if (!lens[k]) continue;
        for (char *hit; (hit = memmem(out, strlen(out), secrets[k], lens[k])) != NULL;) memset(hit, '*', lens[k]);
    }
}

/* Remembers the SQLSTATE and primary message of a failed result (or of the connection). */
static void pg_note(pg_db *d, const PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg) msg = PQerrorMessage(d->c);
    snprintf(d->sqlstate, sizeof d->sqlstate, "%s", state ? state : "");
    snprintf(d->msg, sizeof d->msg, "%.*s", (int)strcspn(msg, "\n"), msg);
}

static bool state_is(const pg_db *d, const char *prefix) { return !strncmp(d->sqlstate, prefix, strlen(prefix)); }

static bool retryable(const pg_db *d) { return state_is(d, "40001") || state_is(d, "40P01"); }

/* Maps the last SQLSTATE to a CLAD_E* code (class first, then the codes that matter within it). */
static int pg_map(pg_db *d, clad_err *err, const char *what)
{
    const char *name = d->name, *m = d->msg;
    if (!d->sqlstate[0] || state_is(d, "08") || state_is(d, "57P"))
        return clad_err_set(err, CLAD_EIO, "store %s: lost or cannot reach the PostgreSQL server while %s: %s",
                            name, what, m);
    if (state_is(d, "23"))
        return clad_err_set(err, CLAD_ECONFLICT, "store constraint failed while %s: %s", what, m);
    if (state_is(d, "53100"))
        return clad_err_set(err, CLAD_EFULL, "store %s is full (the PostgreSQL server's disk) while %s; "
                            "nothing was written: free space or delete old versions", name, what);
    if (state_is(d, "53200")) return clad_err_set(err, CLAD_ENOMEM, "PostgreSQL is out of memory while %s", what);
    if (state_is(d, "53") || state_is(d, "40") || state_is(d, "55P03"))
        return clad_err_set(err, CLAD_EBUSY, "store %s is busy while %s (%s); try again", name, what, m);
    if (state_is(d, "57014"))
        return clad_err_set(err, CLAD_ECANCELLED, "store %s: statement cancelled while %s", name, what);
    if (state_is(d, "25006") || state_is(d, "42501") || state_is(d, "28"))
        return clad_err_set(err, CLAD_EDENIED, "store %s is not writable while %s: %s", name, what, m);
    if (state_is(d, "XX001") || state_is(d, "XX002"))
        return clad_err_set(err, CLAD_ECORRUPT, "store %s is corrupt (%s) while %s; restore it from a backup",
                            name, m, what);
    if (state_is(d, "54"))
        return clad_err_set(err, CLAD_ETOOLARGE, "value too large for the store while %s: %s", what, m);
    if (state_is(d, "22"))
        return clad_err_set(err, CLAD_EINVAL, "store %s: invalid value while %s: %s", name, what, m);
    return clad_err_set(err, CLAD_EINTERNAL, "store %s: unexpected PostgreSQL error while %s: %s (SQLSTATE %s)",
                        name, what, m, d->sqlstate);
}

/* A bind fails before anything reaches the server, so it returns its own code for pg_error to report
 * (the connection's last SQLSTATE says nothing about it). */
enum { BIND_BAD_INDEX = 1, BIND_TOO_LARGE = 2 };

static int pg_error(db *d, int rc, clad_err *err, const char *what)
{
    if (rc == BIND_BAD_INDEX)
        return clad_err_set(err, CLAD_EINTERNAL, "store %s: a parameter number out of range while %s",
                            PD(d)->name, what);
    if (rc == BIND_TOO_LARGE)
        return clad_err_set(err, CLAD_ETOOLARGE, "value too large for the store while %s (PostgreSQL takes "
                            "at most 1 GiB)", what);
    return pg_map(PD(d), err, what);
}

/* Runs parameterless SQL; 0 or the mapped error. *res receives the result when wanted. */
static int pg_run(pg_db *d, const char *sql, PGresult **res, clad_err *err, const char *what)
{
    PGresult *r = PQexec(d->c, sql);
    ExecStatusType t = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK) {
        if (res) *res = r;
        else PQclear(r);
        return 0;
    }
    pg_note(d, r);
    PQclear(r);
    return pg_map(d, err, what);
}

static int pg_exec(db *d, const char *sql, clad_err *err) { return pg_run(PD(d), sql, NULL, err, "running a statement"); }

/* ---- Connections ---- */

static void notice_ignore(void *arg, const char *message) {}

/* What every session needs, again after a reconnect: writers wait for the writer lock as long as
 * SQLite's busy timeout (then CLAD_EBUSY), readers refuse writes, notifications keep coming. */
static int session_setup(pg_db *d, clad_err *err)
{
    PQsetNoticeProcessor(d->c, notice_ignore, NULL);
    char sql[160];
    snprintf(sql, sizeof sql, "SET lock_timeout = %d; SET client_min_messages = warning%s",
             STORE_BUSY_TIMEOUT_MS, d->reader ? "; SET default_transaction_read_only = on" : "");
    int rc = pg_run(d, sql, NULL, err, "setting up the session");
    for (int i = 0; rc == 0 && i < d->n_channels; i++) {
        snprintf(sql, sizeof sql, "LISTEN %s", d->channels[i]);
        rc = pg_run(d, sql, NULL, err, "listening again");
    }
    return rc;
}

/* A connection the server dropped (restart, failover, idle timeout) is opened again before the next
 * transaction or lone statement; one that fails mid-transaction has already failed its store call. */
static void reconnect_if_lost(pg_db *d)
{
    if (PQstatus(d->c) == CONNECTION_OK) return;
    PQreset(d->c);
    if (PQstatus(d->c) == CONNECTION_OK) session_setup(d, NULL);
}

static void pg_close(db *d)
{
    if (!d) return;
    PQfinish(PD(d)->c);
    free(d);
}

static db *pg_open(const char *target, bool reader, clad_err *err)
{
    pg_db *d = calloc(1, sizeof *d);
    if (!d) {
        clad_err_set(err, CLAD_ENOMEM, "out of memory opening a PostgreSQL store");
        return NULL;
    }
    d->base.ops = &db_pg_ops;
    pg_display(target, d->name, sizeof d->name);
    /* The URI comes last so that its own settings win over these defaults. */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {"10", "clad", target, NULL};
    d->c = PQconnectdbParams(keys, vals, 1);
    if (!d->c || PQstatus(d->c) != CONNECTION_OK) {
        char m[400];
        scrub_password(target, d->c ? PQerrorMessage(d->c) : "out of memory", m, sizeof m);
        clad_err_set(err, CLAD_EIO, "cannot connect to the PostgreSQL store %s: %s", d->name, m);
        pg_close(&d->base);
        return NULL;
    }
    d->reader = reader;
    if (session_setup(d, err)) {
        pg_close(&d->base);
        return NULL;
    }
    return &d->base;
}

/* ---- Statements ---- */

/* Rewrites the common dialect: `?N` to `$N` (a bare `?` takes the next number) and group_concat( to
 * string_agg(, outside string literals. Returns the highest parameter number, or -1 when too many. */
static int translate(const char *sql, char *out, size_t cap)
{
    size_t n = 0;
    int max = 0, next = 0;
    bool quoted = false;
    for (const char *p = sql; *p; p++) {
        if (n + 16 >= cap) return -1;
        if (*p == '\'') quoted = !quoted;
        if (!quoted && *p == '?') {
            int k = 0;
            while (p[1] >= '0' && p[1] <= '9') k = k * 10 + (*++p - '0');
            if (!k) k = ++next;
            if (k > max) max = k;
            n += (size_t)snprintf(out + n, cap - n, "$%d", k);
            continue;
        }
        if (!quoted && strncmp(p, "group_concat(", 13) == 0) {
            n += (size_t)snprintf(out + n, cap - n, "string_agg(");
            p += 12;
            continue;
        }
        out[n++] = *p;
    }
    out[n] = '\0';
    return max <= PG_MAX_PARAMS ? max : -1;
}

static int pg_prepare(db *d, const char *sql, db_stmt **out, clad_err *err)
{
    *out = NULL;
    pg_stmt *s = calloc(1, sizeof *s);
    size_t cap = strlen(sql) * 2 + 64;
    if (!s || !(s->sql = malloc(cap))) abort(); /* bounded by the store's own SQL */
    s->n_params = translate(sql, s->sql, cap);
    if (s->n_params < 0) {
        free(s->sql);
        free(s);
        return clad_err_set(err, CLAD_EINTERNAL, "store: a statement has more than %d parameters", PG_MAX_PARAMS);
    }
    s->base.ops = &db_pg_ops;
    s->d = PD(d);
    s->row = -1;
    *out = &s->base;
    return 0;
}

static int param(pg_stmt *s, int at, Oid type, const void *val, int len, int fmt)
{
    if (at < 1 || at > s->n_params) return BIND_BAD_INDEX;
    s->types[at - 1] = type;
    s->vals[at - 1] = val;
    s->lens[at - 1] = len;
    s->fmts[at - 1] = fmt;
    return 0;
}

static int pg_bind_null(db_stmt *st, int at, char type)
{
    return param(PS(st), at, type == 't' ? OID_TEXT : type == 'b' ? OID_BYTEA : OID_INT8, NULL, 0, 0);
}

static int pg_bind_int64(db_stmt *st, int at, int64_t v)
{
    if (at < 1 || at > PS(st)->n_params) return BIND_BAD_INDEX;
    unsigned char *b = PS(st)->raw[at - 1];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)v >> (56 - 8 * i));
    return param(PS(st), at, OID_INT8, b, 8, 1);
}

static int pg_bind_double(db_stmt *st, int at, double v)
{
    int64_t bits;
    memcpy(&bits, &v, 8);
    int rc = pg_bind_int64(st, at, bits); /* the same eight big-endian bytes */
    if (rc == 0) PS(st)->types[at - 1] = OID_FLOAT8;
    return rc;
}

static int pg_bind_text(db_stmt *st, int at, const char *v) { return param(PS(st), at, OID_TEXT, v, 0, 0); }

static int pg_bind_blob(db_stmt *st, int at, const void *p, size_t n)
{
    if (n > (size_t)1 << 30) return BIND_TOO_LARGE; /* libpq lengths are int; the store's blobs are far smaller */
    return param(PS(st), at, OID_BYTEA, p, (int)n, 1);
}

static PGresult *pg_run_params(pg_stmt *s)
{
    return PQexecParams(s->d->c, s->sql, s->n_params, s->types, s->vals, s->lens, s->fmts, 1);
}

static int pg_step(db_stmt *st, clad_err *err)
{
    pg_stmt *s = PS(st);
    if (s->res) return ++s->row < PQntuples(s->res) ? 1 : 0;
    /* A statement outside a transaction is rolled back whole by a serialization failure, so it can
     * simply run again; inside one, the caller's transaction has to end. */
    reconnect_if_lost(s->d);
    bool own_tx = PQtransactionStatus(s->d->c) == PQTRANS_IDLE;
    for (int attempt = 1;; attempt++) {
        PGresult *r = pg_run_params(s);
        ExecStatusType t = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK) {
            s->d->changes = strtoll(PQcmdTuples(r), NULL, 10);
            s->res = r;
            s->row = 0;
            return PQntuples(r) > 0 ? 1 : 0;
        }
        pg_note(s->d, r);
        PQclear(r);
        if (!(own_tx && retryable(s->d) && attempt < PG_RETRIES)) return pg_map(s->d, err, "running a statement");
        nanosleep(&(struct timespec){0, 5000000L * attempt}, NULL);
    }
}

static void pg_finalize(db_stmt *st)
{
    if (!st) return;
    PQclear(PS(st)->res);
    free(PS(st)->sql);
    free(st);
}

static bool pg_col_is_null(db_stmt *st, int i)
{
    pg_stmt *s = PS(st);
    return !s->res || s->row < 0 || PQgetisnull(s->res, s->row, i);
}

static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int k = 0; k < n; k++) v = v << 8 | p[k];
    return v;
}

/* PostgreSQL's binary numeric (what sum() of integers gives): digit count, weight, sign and display
 * scale as int16, then base-10000 digits, digit k worth 10000^(weight - k). */
enum { NUMERIC_NEG = 0x4000, NUMERIC_NAN = 0xC000 };

static double numeric_double(const unsigned char *p)
{
    int n = (int16_t)be(p, 2), weight = (int16_t)be(p + 2, 2);
    unsigned sign = (unsigned)be(p + 4, 2);
    if (sign == NUMERIC_NAN) return NAN;
    double v = 0;
    for (int k = 0; k < n; k++) v += (double)be(p + 8 + 2 * k, 2) * pow(10000.0, weight - k);
    return sign == NUMERIC_NEG ? -v : v;
}

/* The integer part, exactly (digits past the stored ones are zeros). */
static int64_t numeric_int64(const unsigned char *p)
{
    int n = (int16_t)be(p, 2), weight = (int16_t)be(p + 2, 2);
    int64_t v = 0;
    for (int k = 0; k <= weight; k++) v = v * 10000 + (k < n ? (int64_t)be(p + 8 + 2 * k, 2) : 0);
    return be(p + 4, 2) == NUMERIC_NEG ? -v : v;
}

static double pg_col_double(db_stmt *st, int i);

static int64_t pg_col_int64(db_stmt *st, int i)
{
    pg_stmt *s = PS(st);
    if (pg_col_is_null(st, i)) return 0;
    const unsigned char *p = (const unsigned char *)PQgetvalue(s->res, s->row, i);
    switch (PQftype(s->res, i)) {
    case OID_INT8: return (int64_t)be(p, 8);
    case OID_INT4: return (int32_t)be(p, 4);
    case OID_INT2: return (int16_t)be(p, 2);
    case OID_BOOL: return p[0] != 0;
    case OID_NUMERIC: return numeric_int64(p);
    case OID_FLOAT8:
    case OID_FLOAT4: return (int64_t)pg_col_double(st, i);
    default: return strtoll((const char *)p, NULL, 10); /* text holding a number */
    }
}

static double pg_col_double(db_stmt *st, int i)
{
    pg_stmt *s = PS(st);
    if (pg_col_is_null(st, i)) return 0;
    const unsigned char *p = (const unsigned char *)PQgetvalue(s->res, s->row, i);
    switch (PQftype(s->res, i)) {
    case OID_FLOAT8: {
        uint64_t bits = be(p, 8);
        double v;
        memcpy(&v, &bits, 8);
        return v;
    }
    case OID_FLOAT4: {
        uint32_t bits = (uint32_t)be(p, 4);
        float v;
        memcpy(&v, &bits, 4);
        return v;
    }
    case OID_NUMERIC: return numeric_double(p);
    default: return (double)pg_col_int64(st, i);
    }
}

static const char *pg_col_text(db_stmt *st, int i)
{
    pg_stmt *s = PS(st);
    if (pg_col_is_null(st, i)) return NULL;
    Oid t = PQftype(s->res, i);
    if (t == OID_INT8 || t == OID_INT4 || t == OID_INT2 || t == OID_BOOL) {
        snprintf(s->num, sizeof s->num, "%lld", (long long)pg_col_int64(st, i));
        return s->num;
    }
    if (t == OID_FLOAT8 || t == OID_FLOAT4 || t == OID_NUMERIC) {
        snprintf(s->num, sizeof s->num, "%.17g", pg_col_double(st, i));
        return s->num;
    }
    /* Text types travel as their bytes; libpq ends every value with a zero byte. */
    return PQgetvalue(s->res, s->row, i);
}

static const void *pg_col_blob(db_stmt *st, int i, size_t *n)
{
    pg_stmt *s = PS(st);
    *n = 0;
    if (pg_col_is_null(st, i)) return NULL;
    *n = (size_t)PQgetlength(s->res, s->row, i);
    return PQgetvalue(s->res, s->row, i);
}

static int64_t pg_changes(db *d) { return PD(d)->changes; }

/* ---- Transactions ---- */

static bool pg_in_tx(db *d) { return PQtransactionStatus(PD(d)->c) != PQTRANS_IDLE; }

static void pg_rollback(db *d)
{
    if (pg_in_tx(d)) pg_run(PD(d), "ROLLBACK", NULL, NULL, "rolling back");
}

static int pg_begin(db *d, db_tx kind, clad_err *err)
{
    static const char *const sql[] = {
        [DB_TX_READ] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        /* A snapshot is fixed by the first query, so run one now. */
        [DB_TX_SNAPSHOT] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1",
        [DB_TX_WRITE] = "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(1668047204)",
    };
    _Static_assert(PG_WRITER_LOCK == 1668047204, "the lock key in the SQL above");
    reconnect_if_lost(PD(d));
    for (int attempt = 1;; attempt++) {
        clad_err mine = {0};
        int rc = pg_run(PD(d), sql[kind], NULL, &mine, kind == DB_TX_WRITE ? "starting a write transaction"
                                                                           : "starting a read transaction");
        if (rc == 0) return 0;
        pg_rollback(d);
        if (!retryable(PD(d)) || attempt >= PG_RETRIES) return clad_err_set(err, rc, "%s", mine.msg);
        nanosleep(&(struct timespec){0, 5000000L * attempt}, NULL);
    }
}

static int pg_commit(db *d, clad_err *err)
{
    PGresult *r = NULL;
    int rc = pg_run(PD(d), "COMMIT", &r, err, "committing");
    if (rc) return rc;
    /* COMMIT of a transaction that already failed answers ROLLBACK instead of an error. */
    bool rolled_back = strcmp(PQcmdStatus(r), "ROLLBACK") == 0;
    PQclear(r);
    if (rolled_back)
        return clad_err_set(err, CLAD_EINTERNAL, "store %s: the transaction had failed and was rolled back",
                            PD(d)->name);
    return 0;
}

/* ---- Schema header, setup and checks ---- */

/* The first column of the first row of parameterless SQL as an integer. */
static int pg_int(pg_db *d, const char *sql, int64_t *out, clad_err *err)
{
    db_stmt *st;
    int rc = pg_prepare(&d->base, sql, &st, err);
    if (rc) return rc;
    rc = pg_step(st, err);
    if (rc == 1) *out = pg_col_int64(st, 0);
    pg_finalize(st);
    return rc < 0 ? rc : rc == 1 ? 0 : CLAD_ENOTFOUND;
}

static int pg_header_read(db *d, int64_t *version, bool *foreign, clad_err *err)
{
    int64_t has_meta = 0, n_tables = 0;
    *version = 0;
    /* A catalog query rather than to_regclass: it reads with the statement's snapshot, so a writer that
     * waited for the lock sees the schema another process just created (to_regclass may answer from a
     * cache that is refreshed only later). */
    int rc = pg_int(PD(d), "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'clad_meta' "
                    "AND relnamespace = current_schema()::regnamespace", &has_meta, err);
    if (rc == 0)
        rc = pg_int(PD(d), "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
                    &n_tables, err);
    if (rc == 0 && has_meta)
        rc = pg_int(PD(d), "SELECT value FROM clad_meta WHERE key = 'schema_version'", version, err);
    if (rc == CLAD_ENOTFOUND) rc = 0;
    *foreign = !has_meta && n_tables > 0;
    return rc;
}

static int pg_header_write(db *d, int64_t version, clad_err *err)
{
    char sql[160];
    snprintf(sql, sizeof sql, "INSERT INTO clad_meta (key, value) VALUES ('schema_version', %lld) "
             "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (long long)version);
    int rc = pg_exec(d, sql, err);
    if (rc) clad_err_prefix(err, "setting the schema version: ");
    return rc;
}

static int pg_writer_setup(db *d, bool fresh, clad_err *err) { return 0; }

/* PostgreSQL enforces foreign keys on every write and checksums pages itself, so the quick check is
 * reaching the server, and the full one also refuses constraints that were never validated. */
static int pg_check(db *d, int level, clad_err *err)
{
    PGresult *r = NULL;
    int rc = pg_run(PD(d), level == STORE_CHECK_FULL
                               ? "SELECT conrelid::regclass::text, conname FROM pg_catalog.pg_constraint "
                                 "WHERE NOT convalidated AND connamespace = current_schema()::regnamespace"
                               : "SELECT 1 WHERE false",
                    &r, err, "checking the store");
    if (rc) return rc;
    if (PQntuples(r) > 0)
        rc = clad_err_set(err, CLAD_ECORRUPT, "store %s: constraint %s of table %s is not validated",
                          PD(d)->name, PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

static int pg_set_size_limit(db *d, int64_t max_bytes, int64_t *limit_out, clad_err *err)
{
    return clad_err_set(err, CLAD_EINVAL, "store %s: a size limit is an SQLite store feature; a PostgreSQL "
                        "store is bounded by its server's disk", PD(d)->name);
}

static int pg_backup(db *d, const char *dest, clad_err *err)
{
    return clad_err_set(err, CLAD_EINVAL, "store %s: back up a PostgreSQL store with the server's own tools "
                        "(pg_dump, pg_basebackup)", PD(d)->name);
}

/* The server's WAL insert position: it moves with every commit on the server (and sometimes without
 * one, which only costs a cache a reload). */
static int64_t pg_change_mark(db *d)
{
    int64_t v = 0;
    pg_int(PD(d), "SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint", &v, NULL);
    return v;
}

static void pg_reclaim(db *d) {} /* autovacuum gives space back */

/* The writer lock is an advisory lock, so its wait is lock_timeout (0 would mean forever: 1 ms). */
static void pg_busy_timeout(db *d, int ms)
{
    char sql[48];
    snprintf(sql, sizeof sql, "SET lock_timeout = %d", ms > 0 ? ms : 1);
    pg_run(PD(d), sql, NULL, NULL, "setting the lock timeout");
}

static void pg_wipe_deferred(db *d) {} /* deleting rows costs no more than marking them */

/* Deleted rows stay in the table's pages until they are reused; VACUUM FULL writes the table anew
 * without them and removes the old files (outside any transaction, and only job_data, which is small
 * once its rows are deleted). The server's own WAL segments are recycled by the server. */
static int pg_wipe(db *d, clad_err *err) { return pg_run(PD(d), "VACUUM FULL job_data", NULL, err, "wiping job data"); }

static void pg_sync_commits(db *d, bool durable)
{
    pg_run(PD(d), durable ? "SET synchronous_commit = on" : "SET synchronous_commit = off", NULL, NULL,
           "setting synchronous_commit");
}

/* ---- LISTEN/NOTIFY ---- */

static bool channel_valid(const char *c)
{
    size_t n = c ? strlen(c) : 0;
    if (n == 0 || n > 63) return false;
    for (size_t i = 0; i < n; i++)
        if (!((c[i] >= 'a' && c[i] <= 'z') || (c[i] >= '0' && c[i] <= '9') || c[i] == '_')) return false;
    return true;
}

static int pg_listen(db *d, const char *channel, clad_err *err)
{
    if (!channel_valid(channel))
        return clad_err_set(err, CLAD_EINVAL, "notification channel must be 1..63 of [a-z0-9_]");
    pg_db *p = PD(d);
    int known = 0;
    while (known < p->n_channels && strcmp(p->channels[known], channel) != 0) known++;
    if (known == p->n_channels && known == PG_MAX_CHANNELS)
        return clad_err_set(err, CLAD_ETOOLARGE, "a store connection listens on at most %d channels", PG_MAX_CHANNELS);
    char sql[96];
    snprintf(sql, sizeof sql, "LISTEN %s", channel);
    int rc = pg_exec(d, sql, err);
    if (rc == 0 && known == p->n_channels) snprintf(p->channels[p->n_channels++], sizeof p->channels[0], "%s", channel);
    return rc;
}

static int pg_notify(db *d, const char *channel, const char *payload, clad_err *err)
{
    if (!channel_valid(channel))
        return clad_err_set(err, CLAD_EINVAL, "notification channel must be 1..63 of [a-z0-9_]");
    db_stmt *st;
    int rc = pg_prepare(d, "SELECT pg_notify(?1, ?2)", &st, err);
    if (rc) return rc;
    pg_bind_text(st, 1, channel);
    pg_bind_text(st, 2, payload ? payload : "");
    rc = pg_step(st, err);
    pg_finalize(st);
    return rc < 0 ? rc : 0;
}

static int pg_notify_fd(db *d) { return PQsocket(PD(d)->c); }

static int pg_drain(db *d, const char *channel)
{
    pg_db *p = PD(d);
    if (!PQconsumeInput(p->c)) return -1;
    for (PGnotify *n; (n = PQnotifies(p->c)) != NULL; PQfreemem(n))
        for (int i = 0; i < p->n_channels; i++)
            if (!strcmp(p->channels[i], n->relname)) p->arrived[i] = true;
    for (int i = 0; i < p->n_channels; i++)
        if (!strcmp(p->channels[i], channel)) {
            bool got = p->arrived[i];
            p->arrived[i] = false;
            return got;
        }
    return 0;
}

const db_ops db_pg_ops = {
    .name = "postgresql",
    .engine = "PostgreSQL",
    .skip_locked = true,
    .open = pg_open,
    .close = pg_close,
    .display = pg_display,
    .prepare = pg_prepare,
    .bind_null = pg_bind_null,
    .bind_int64 = pg_bind_int64,
    .bind_double = pg_bind_double,
    .bind_text = pg_bind_text,
    .bind_blob = pg_bind_blob,
    .step = pg_step,
    .finalize = pg_finalize,
    .col_is_null = pg_col_is_null,
    .col_int64 = pg_col_int64,
    .col_double = pg_col_double,
    .col_text = pg_col_text,
    .col_blob = pg_col_blob,
    .changes = pg_changes,
    .exec = pg_exec,
    .error = pg_error,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .in_tx = pg_in_tx,
    .migrations = store_migrations_pg,
    .header_read = pg_header_read,
    .header_write = pg_header_write,
    .writer_setup = pg_writer_setup,
    .check = pg_check,
    .set_size_limit = pg_set_size_limit,
    .backup = pg_backup,
    .change_mark = pg_change_mark,
    .reclaim = pg_reclaim,
    .busy_timeout = pg_busy_timeout,
    .wipe_deferred = pg_wipe_deferred,
    .wipe = pg_wipe,
    .sync_commits = pg_sync_commits,
    .listen = pg_listen,
    .notify = pg_notify,
    .notify_fd = pg_notify_fd,
    .drain = pg_drain,
};
