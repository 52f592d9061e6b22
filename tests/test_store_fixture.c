/* Helpers shared by the storage tests; see test_store_fixture.h. */
#include "tests/test_store_fixture.h"

#include <ctype.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "core/rng.h"
#include "tests/pg_cluster.h"
#include "tests/test.h"

static fx_backend backend = FX_SQLITE;

void fx_use_backend(fx_backend b)
{
    if (b == FX_PG) pg_cluster_require();
    backend = b;
}

bool fx_on_pg(void) { return backend == FX_PG; }

void fx_path(char *buf, size_t cap, const char *file)
{
    if (backend == FX_SQLITE) {
        snprintf(buf, cap, "%s/%s", test_tmpdir(), file);
        return;
    }
    /* One database per test and file: the temp dir's unique suffix, then the file name. */
    const char *tag = strrchr(test_tmpdir(), '-');
    char name[64];
    int n = snprintf(name, sizeof name, "t_%s_%s", tag ? tag + 1 : "x", file);
    for (int i = 0; i < n && i < (int)sizeof name - 1; i++)
        if (!isalnum((unsigned char)name[i])) name[i] = '_';
    CHECK_MSG(pg_cluster_create_db(name, buf, cap) == 0, "cannot create test database %s", name);
}

store *fx_open(const char *file)
{
    char path[512];
    fx_path(path, sizeof path, file);
    clad_err e = {0};
    store *s = store_open(path, &e);
    CHECK_MSG(s != NULL, "store_open(%s): %s: %s", path, clad_code_name(e.code), e.msg);
    return s;
}

void fx_task(store *s, const char *task)
{
    clad_err e = {0};
    store_base *b = NULL;
    if (store_base_get(s, "mlp", 0, &b, NULL) != 0) {
        static const float weights[64] = {1, 2, 3};
        store_base_in bi = {.name = "mlp", .config_json = "{\"arch\":\"mlp\",\"dims\":[784,256,256,10]}",
                            .weights = weights, .weights_size = sizeof weights};
        CHECK_OK(store_base_put(s, &bi, 1000, &e), e);
    }
    store_base_free(b);
    store_task_in ti = {.name = task, .base = "mlp", .n_classes = 10};
    CHECK_OK(store_task_create(s, &ti, 1000, &e), e);
}

int64_t fx_n_versions(store *s, const char *task)
{
    store_task *t = NULL;
    clad_err e = {0};
    CHECK_OK(store_task_get(s, task, &t, &e), e);
    int64_t n = t->n_versions;
    store_task_free(t);
    return n;
}

store *fx_open_with_task(const char *file, const char *task, int n_versions, char *path, size_t cap)
{
    if (path) fx_path(path, cap, file);
    store *s = fx_open(file);
    fx_task(s, task);
    for (int i = 0; i < n_versions; i++) fx_put(s, task, 0);
    return s;
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

size_t fx_blob_size(const char *task, int64_t version)
{
    return 1024 + (size_t)((name_hash(task) + (uint64_t)version * 7919) % (39 * 1024));
}

void fx_blob(uint8_t *buf, size_t size, const char *task, int64_t version)
{
    rng r;
    rng_init(&r, name_hash(task) ^ (uint64_t)version * 0x9e3779b97f4a7c15ULL);
    memcpy(buf, &version, 8);
    for (size_t i = 8; i < size; i++) buf[i] = (uint8_t)rng_next(&r);
}

int fx_blob_ok(const store_version *v)
{
    if (!v->adapter || v->adapter_size != fx_blob_size(v->task, v->version)) return 0;
    uint8_t *want = malloc(v->adapter_size);
    fx_blob(want, v->adapter_size, v->task, v->version);
    int ok = memcmp(want, v->adapter, v->adapter_size) == 0;
    free(want);
    return ok;
}

int fx_put_job(store *s, const char *task, int64_t job_id, int64_t *version, clad_err *err)
{
    store_task *t = NULL;
    int rc = store_task_get(s, task, &t, err);
    if (rc) return rc;
    int64_t next = t->latest_version + 1;
    store_task_free(t);
    size_t n = fx_blob_size(task, next);
    uint8_t *blob = malloc(n);
    fx_blob(blob, n, task, next);
    store_version_in in = {.task = task, .kind = "lora", .adapter = blob, .adapter_size = n,
                           .hparams_json = "{\"lr\":0.001,\"rank\":8}", .seed = (uint64_t)next,
                           .wall_time_s = 0.5, .job_id = job_id};
    rc = store_version_put(s, &in, 1000, version, err);
    free(blob);
    if (rc == 0 && *version != next) return clad_err_set(err, CLAD_EINTERNAL, "got version %lld, expected %lld",
                                                         (long long)*version, (long long)next);
    return rc;
}

int64_t fx_put(store *s, const char *task, unsigned flags)
{
    store_task *t = NULL;
    clad_err e = {0};
    CHECK_OK(store_task_get(s, task, &t, &e), e);
    int64_t next = t->latest_version + 1, got = 0;
    store_task_free(t);
    size_t n = fx_blob_size(task, next);
    uint8_t *blob = malloc(n);
    fx_blob(blob, n, task, next);
    store_version_in in = {.task = task, .kind = "lora", .adapter = blob, .adapter_size = n, .flags = flags};
    CHECK_OK(store_version_put(s, &in, 1000, &got, &e), e);
    free(blob);
    CHECK_INT_EQ(got, next);
    return got;
}

uint8_t *fx_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len + 1);
    CHECK(fread(buf, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

void fx_write_file(const char *path, const uint8_t *data, size_t n)
{
    FILE *f = fopen(path, "r+b");
    if (!f) f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static bool is_uri(const char *path) { return strncmp(path, "postgresql://", 13) == 0; }

static void notice_ignore(void *arg, const char *message) {}

/* Runs sql on a PostgreSQL store; returns the result (the caller clears it). */
static PGresult *pg_direct(const char *uri, const char *sql)
{
    PGconn *c = PQconnectdb(uri);
    CHECK_MSG(PQstatus(c) == CONNECTION_OK, "connecting to %s: %s", uri, PQerrorMessage(c));
    PQsetNoticeProcessor(c, notice_ignore, NULL);
    PGresult *r = PQexec(c, sql);
    ExecStatusType t = PQresultStatus(r);
    CHECK_MSG(t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    PQfinish(c);
    return r;
}

int64_t fx_count(const char *path, const char *sql)
{
    if (is_uri(path)) {
        PGresult *r = pg_direct(path, sql);
        CHECK_MSG(PQntuples(r) == 1, "%s: %d rows", sql, PQntuples(r));
        int64_t n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        return n;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    CHECK_INT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    CHECK_INT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    CHECK_INT_EQ(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

void fx_exec(const char *path, const char *sql)
{
    if (is_uri(path)) {
        PQclear(pg_direct(path, sql));
        return;
    }
    sqlite3 *db = NULL;
    CHECK_INT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    CHECK_MSG(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}
