/* Storage tests for the shared job queue: several handles on one store, each a node, claim, renew, lose
 * and requeue jobs; a job produces at most one version, and its data is gone (also from the file's
 * bytes) once it ends. */
#include "tests/test.h"

#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "io/dataset_io.h"
#include "tests/test_store_fixture.h"

static store *node_open(const char *file, const char *node)
{
    store *s = fx_open(file);
    clad_err e = {0};
    CHECK_OK(store_set_node(s, node, &e), e);
    return s;
}

static int64_t job_new(store *s, const char *task, const char *lane, const void *data, size_t n)
{
    clad_err e = {0};
    int64_t id = 0;
    CHECK_OK(store_job_create_with_data(s, "train", task, lane, "{\"epochs\":1}", data, n, 500, &id, &e), e);
    return id;
}

/* Claims and expects job `want` (0: nothing). */
static void claim_expect(store *s, int64_t only, int64_t lease_ms, int64_t want)
{
    clad_err e = {0};
    store_job *j = NULL;
    CHECK_OK(store_job_claim(s, only, NULL, lease_ms, &j, &e), e);
    CHECK_INT_EQ(j ? j->id : 0, want);
    store_job_free(j);
}

STORE_TEST(store_queue_claims_oldest_job_whose_lane_is_free_on_every_node)
{
    clad_err e = {0};
    store *a = node_open("q.db", "node-a"), *b = node_open("q.db", "node-b");
    store_job *j = NULL;
    store *plain = fx_open("q.db");
    CHECK_CODE(store_job_claim(plain, 0, NULL, 1000, &j, &e), CLAD_EINVAL, e); /* no node id */
    store_close(plain);
    int64_t j1 = job_new(a, "t1", "mlp", "d1", 2), j2 = job_new(b, "t2", "mlp", "d2", 2);
    int64_t j3 = job_new(a, "t3", "other", NULL, 0);
    CHECK_OK(store_job_claim(b, 0, "merge", 10000, &j, &e), e); /* only jobs of that kind */
    CHECK(j == NULL);
    CHECK_OK(store_job_claim(b, 0, NULL, 10000, &j, &e), e);
    CHECK(j != NULL);
    CHECK_INT_EQ(j->id, j1); /* the oldest, whoever accepted it */
    CHECK_STR_EQ(j->node, "node-b");
    CHECK_INT_EQ(j->attempt, 1);
    CHECK_INT_EQ(j->state, STORE_JOB_RUNNING);
    CHECK(j->lease_until_ms > j->started_ms);
    store_job_free(j);
    /* Lane mlp is busy on node b: node a skips j2 and takes j3; then nothing is left to claim. */
    claim_expect(a, j2, 10000, 0);
    claim_expect(a, 0, 10000, j3);
    claim_expect(a, 0, 10000, 0);
    /* Only the owner ends a running job. */
    CHECK_CODE(store_job_mark_failed(a, j1, CLAD_EINVAL, "x", &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "run by node 'node-b'"));
    CHECK_OK(store_job_mark_failed(b, j1, CLAD_EINVAL, "bad data", &e), e);
    claim_expect(a, 0, 10000, j2);
    CHECK_OK(store_check(a, STORE_CHECK_FULL, &e), e);
    store_close(a);
    store_close(b);
}

STORE_TEST(store_queue_renewal_carries_cancel_and_fails_once_the_lease_is_lost)
{
    clad_err e = {0};
    store *a = node_open("q.db", "node-a"), *b = node_open("q.db", "node-b");
    int64_t j1 = job_new(a, "t1", "mlp", NULL, 0);
    claim_expect(a, 0, 10000, j1);
    bool cancel = true;
    CHECK_OK(store_job_renew(a, j1, 10000, &cancel, &e), e);
    CHECK(!cancel);
    CHECK_CODE(store_job_renew(b, j1, 10000, NULL, &e), CLAD_ECONFLICT, e);
    /* A cancel through another node reaches the owner at its renewal; the job ends by the owner. */
    store_job_state st = STORE_JOB_QUEUED;
    CHECK_OK(store_job_request_cancel(b, j1, 501, &st, &e), e);
    CHECK_INT_EQ(st, STORE_JOB_RUNNING);
    CHECK_OK(store_job_renew(a, j1, 10000, &cancel, &e), e);
    CHECK(cancel);
    CHECK_OK(store_job_mark_cancelled(a, j1, 501, &e), e);
    CHECK_CODE(store_job_request_cancel(b, j1, 501, &st, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "already cancelled"));
    /* A queued job is cancelled at once, by any node. */
    int64_t j2 = job_new(a, "t2", "mlp", "data", 4);
    CHECK_OK(store_job_request_cancel(b, j2, 501, &st, &e), e);
    CHECK_INT_EQ(st, STORE_JOB_CANCELLED);
    void *d = NULL;
    size_t n = 0;
    CHECK_CODE(store_job_data_get(a, j2, &d, &n, &e), CLAD_ENOTFOUND, e);
    /* A lease that ran out cannot be renewed, even before anyone requeues the job. */
    int64_t j3 = job_new(a, "t3", "mlp", NULL, 0);
    claim_expect(a, 0, 30, j3);
    usleep(60 * 1000);
    CHECK_CODE(store_job_renew(a, j3, 10000, NULL, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "no longer holds its lease"));
    store_close(a);
    store_close(b);
}

STORE_TEST(store_queue_expired_job_runs_again_elsewhere_and_yields_one_version)
{
    clad_err e = {0};
    store *a = node_open("q.db", "node-a"), *b = node_open("q.db", "node-b");
    fx_task(a, "t1");
    static const char data[] = "the uploaded dataset";
    int64_t j1 = job_new(a, "t1", "mlp", data, sizeof data);
    claim_expect(a, 0, 40, j1);
    usleep(80 * 1000); /* node a "dies": it stops renewing */
    store_job *j = NULL;
    CHECK_OK(store_job_claim(b, 0, NULL, 10000, &j, &e), e);
    CHECK(j && j->id == j1);
    CHECK_STR_EQ(j->node, "node-b");
    CHECK_INT_EQ(j->attempt, 2);
    store_job_free(j);
    void *d = NULL;
    size_t n = 0;
    CHECK_OK(store_job_data_get(b, j1, &d, &n, &e), e); /* the new owner reads the data */
    CHECK_INT_EQ(n, sizeof data);
    CHECK(memcmp(d, data, n) == 0);
    free(d);
    /* Node a wakes up and tries to commit: refused, nothing written. Node b commits once. */
    int64_t v = 0;
    CHECK_CODE(fx_put_job(a, "t1", j1, &v, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "run by node 'node-b'"));
    CHECK_INT_EQ(fx_n_versions(a, "t1"), 0);
    CHECK_OK(fx_put_job(b, "t1", j1, &v, &e), e);
    CHECK_INT_EQ(v, 1);
    CHECK_CODE(fx_put_job(b, "t1", j1, &v, &e), CLAD_ECONFLICT, e);
    CHECK_INT_EQ(fx_n_versions(a, "t1"), 1);
    CHECK_OK(store_job_get(a, j1, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_SUCCEEDED);
    CHECK_INT_EQ(j->result_version, 1);
    store_job_free(j);
    CHECK_CODE(store_job_data_get(a, j1, &d, &n, &e), CLAD_ENOTFOUND, e); /* gone with its job */
    /* An owner whose lease ran out cannot commit either, even if nobody took the job yet. */
    int64_t j2 = job_new(a, "t1", "mlp", NULL, 0);
    claim_expect(a, 0, 30, j2);
    usleep(60 * 1000);
    CHECK_CODE(fx_put_job(a, "t1", j2, &v, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "lease of node 'node-a' has expired"));
    CHECK_INT_EQ(fx_n_versions(a, "t1"), 1);
    CHECK_OK(store_check(a, STORE_CHECK_FULL, &e), e);
    store_close(a);
    store_close(b);
}

/* A base trained by a job, stored by node s under that job (weights differ per node, so a stray store
 * would be seen). */
static int base_put_job(store *s, const char *name, int64_t job_id, clad_err *e)
{
    static const float weights[2][16] = {{1, 2, 3}, {4, 5, 6}};
    store_base_in bi = {.name = name, .config_json = "{\"arch\":\"mlp\"}", .weights = weights[job_id & 1],
                        .weights_size = sizeof weights[0], .job_id = job_id};
    return store_base_put(s, &bi, 1000, e);
}

static bool base_exists(store *s, const char *name)
{
    store_base *b = NULL;
    int rc = store_base_get(s, name, 0, &b, NULL);
    store_base_free(b);
    return rc == 0;
}

STORE_TEST(store_queue_base_commits_only_under_the_jobs_lease)
{
    clad_err e = {0};
    store *a = node_open("q.db", "node-a"), *b = node_open("q.db", "node-b");
    int64_t j1 = 0;
    CHECK_OK(store_job_create(a, "base-train", NULL, "b1", "{}", 500, &j1, &e), e);
    /* A queued job has produced nothing yet. */
    CHECK_CODE(base_put_job(a, "b1", j1, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "is queued, not running; it cannot produce a base"));
    claim_expect(a, 0, 40, j1);
    usleep(80 * 1000); /* node a stalls past its lease; node b takes the job */
    claim_expect(b, 0, 10000, j1);
    /* Node a wakes up with its trained base: refused with the reason, and nothing is stored. */
    CHECK_CODE(base_put_job(a, "b1", j1, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "run by node 'node-b'"));
    CHECK(!base_exists(b, "b1"));
    /* The holder stores it; the job succeeds in that transaction and cannot store a second base. */
    CHECK_OK(base_put_job(b, "b1", j1, &e), e);
    CHECK(base_exists(a, "b1"));
    store_job *j = NULL;
    CHECK_OK(store_job_get(a, j1, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_SUCCEEDED);
    CHECK_STR_EQ(j->node, "node-b");
    store_job_free(j);
    CHECK_CODE(base_put_job(b, "b1-again", j1, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "is succeeded, not running"));
    CHECK(!base_exists(a, "b1-again"));
    /* An owner whose lease ran out stores nothing either, even before another node took the job. */
    int64_t j2 = 0;
    CHECK_OK(store_job_create(a, "base-train", NULL, "b2", "{}", 500, &j2, &e), e);
    claim_expect(a, 0, 30, j2);
    usleep(60 * 1000);
    CHECK_CODE(base_put_job(a, "b2", j2, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "lease of node 'node-a' has expired"));
    CHECK(!base_exists(a, "b2"));
    /* A base stored without a job (an import) is not tied to any lease. */
    CHECK_OK(base_put_job(a, "b3", 0, &e), e);
    CHECK_OK(store_check(a, STORE_CHECK_FULL, &e), e);
    store_close(a);
    store_close(b);
}

STORE_TEST(store_queue_gives_up_after_the_attempt_limit)
{
    clad_err e = {0};
    store *a = node_open("q.db", "node-a");
    int64_t j1 = job_new(a, "t1", "mlp", "abc", 3);
    for (int i = 1; i <= STORE_JOB_ATTEMPTS; i++) {
        store_job *j = NULL;
        CHECK_OK(store_job_claim(a, 0, NULL, 20, &j, &e), e);
        CHECK(j && j->id == j1 && j->attempt == i);
        store_job_free(j);
        usleep(40 * 1000);
    }
    int64_t n = 0;
    CHECK_OK(store_jobs_requeue_expired(a, &n, &e), e);
    CHECK_INT_EQ(n, 1);
    store_job *j = NULL;
    CHECK_OK(store_job_get(a, j1, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_FAILED);
    CHECK(strstr(j->error_msg, "started 3 times"));
    CHECK(j->finished_ms > 0);
    store_job_free(j);
    void *d = NULL;
    size_t sz = 0;
    CHECK_CODE(store_job_data_get(a, j1, &d, &sz, &e), CLAD_ENOTFOUND, e);
    /* A running job with a cancel request whose owner died ends cancelled instead of running again. */
    int64_t j2 = job_new(a, "t2", "mlp", NULL, 0);
    claim_expect(a, 0, 20, j2);
    CHECK_OK(store_job_request_cancel(a, j2, 501, NULL, &e), e);
    usleep(40 * 1000);
    CHECK_OK(store_jobs_requeue_expired(a, &n, &e), e);
    CHECK_OK(store_job_get(a, j2, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_CANCELLED);
    store_job_free(j);
    store_close(a);
}

/* Another process's writer holding the store's write lock, as a worker storing a large upload does: on
 * SQLite an open BEGIN IMMEDIATE, on PostgreSQL the writers' advisory lock (key "clad", db_pg.c). */
typedef struct writer_lock {
    sqlite3 *lite;
    PGconn *pg;
} writer_lock;

static void writer_lock_take(writer_lock *w, const char *path)
{
    memset(w, 0, sizeof *w);
    if (fx_on_pg()) {
        w->pg = PQconnectdb(path);
        CHECK_MSG(PQstatus(w->pg) == CONNECTION_OK, "%s", PQerrorMessage(w->pg));
        PQclear(PQexec(w->pg, "SELECT pg_advisory_lock(1668047204)"));
    } else {
        CHECK_INT_EQ(sqlite3_open(path, &w->lite), SQLITE_OK);
        CHECK_INT_EQ(sqlite3_exec(w->lite, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    }
}

static void writer_lock_release(writer_lock *w)
{
    if (w->pg) PQfinish(w->pg); /* ends the session and its lock */
    if (w->lite) {
        sqlite3_exec(w->lite, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(w->lite);
    }
}

/* A lease renewal (like the heartbeat) is one statement outside the writers' lock: on PostgreSQL it does
 * not wait behind another writer's long transaction, which a claim must. SQLite has one write lock per
 * file, which every write takes: there the renewal waits too (docs/SCALING.md). */
STORE_TEST(store_queue_renewal_does_not_wait_for_the_writers_lock_on_postgresql)
{
    clad_err e = {0};
    store *a = node_open("q.db", "node-a");
    int64_t j1 = job_new(a, NULL, "lane1", NULL, 0);
    claim_expect(a, 0, 10000, j1);
    char path[512];
    fx_path(path, sizeof path, "q.db");
    store_set_busy_timeout(a, 0); /* as the daemon's loop renews */
    writer_lock w;
    writer_lock_take(&w, path);
    bool cancel = true;
    CHECK_CODE(store_job_renew(a, j1, 10000, &cancel, &e), fx_on_pg() ? 0 : CLAD_EBUSY, e);
    CHECK(!fx_on_pg() || !cancel);
    store_job *j = NULL;
    CHECK_CODE(store_job_claim(a, 0, NULL, 10000, &j, &e), CLAD_EBUSY, e); /* claims are serialised */
    writer_lock_release(&w);
    CHECK_OK(store_job_renew(a, j1, 10000, NULL, &e), e);
    store_close(a);
}

/* Four nodes claim from one store at once: every job is claimed exactly once. */
#define RACE_JOBS 60
#define RACE_NODES 4

typedef struct race_node {
    char name[16];
    int claimed;
} race_node;

static void *race_claimer(void *arg)
{
    race_node *rn = arg;
    store *s = node_open("q.db", rn->name);
    for (;;) {
        clad_err e = {0};
        store_job *j = NULL;
        int rc = store_job_claim(s, 0, NULL, 60000, &j, &e);
        if (rc == CLAD_EBUSY) continue;
        CHECK_OK(rc, e);
        if (!j) break;
        CHECK_OK(store_job_mark_succeeded(s, j->id, 0, &e), e);
        store_job_free(j);
        rn->claimed++;
    }
    store_close(s);
    return NULL;
}

STORE_TEST(store_queue_concurrent_claimers_take_each_job_once)
{
    clad_err e = {0};
    store *s = fx_open("q.db");
    for (int i = 0; i < RACE_JOBS; i++) {
        char lane[16];
        snprintf(lane, sizeof lane, "lane%d", i);
        job_new(s, NULL, lane, NULL, 0);
    }
    pthread_t th[RACE_NODES];
    race_node nodes[RACE_NODES] = {{"n0", 0}, {"n1", 0}, {"n2", 0}, {"n3", 0}};
    for (int i = 0; i < RACE_NODES; i++) CHECK_INT_EQ(pthread_create(&th[i], NULL, race_claimer, &nodes[i]), 0);
    int total = 0;
    for (int i = 0; i < RACE_NODES; i++) {
        pthread_join(th[i], NULL);
        total += nodes[i].claimed;
    }
    CHECK_INT_EQ(total, RACE_JOBS);
    store_job *list = NULL;
    size_t n = 0;
    CHECK_OK(store_jobs_list(s, NULL, 0, &list, &n, &e), e);
    CHECK_INT_EQ(n, RACE_JOBS);
    for (size_t i = 0; i < n; i++) {
        CHECK_INT_EQ(list[i].state, STORE_JOB_SUCCEEDED);
        CHECK_INT_EQ(list[i].attempt, 1);
    }
    store_jobs_free(list, n);
    store_close(s);
}

/* PostgreSQL claims use FOR UPDATE SKIP LOCKED (the driver's capability): a queued job whose row another
 * transaction has locked is skipped, not waited for (which would end in a lock timeout, CLAD_EBUSY). */
TEST(store_queue_pg_claim_skips_a_locked_row)
{
    fx_use_backend(FX_PG);
    store *a = node_open("q.db", "node-a");
    int64_t j1 = job_new(a, NULL, "lane1", NULL, 0), j2 = job_new(a, NULL, "lane2", NULL, 0);
    char uri[512], sql[128];
    fx_path(uri, sizeof uri, "q.db");
    PGconn *holder = PQconnectdb(uri);
    CHECK_MSG(PQstatus(holder) == CONNECTION_OK, "%s", PQerrorMessage(holder));
    snprintf(sql, sizeof sql, "BEGIN; SELECT id FROM jobs WHERE id = %lld FOR UPDATE", (long long)j1);
    PGresult *r = PQexec(holder, sql);
    CHECK_MSG(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQerrorMessage(holder));
    PQclear(r);
    store_set_busy_timeout(a, 300); /* so a claim that waited for the row would fail fast */
    claim_expect(a, 0, 10000, j2);
    PQclear(PQexec(holder, "COMMIT"));
    PQfinish(holder);
    claim_expect(a, 0, 10000, j1);
    store_close(a);
}

/* Waits up to 5 s for a notification on listener l; then drains the jobs channel and, as a check that
 * the channels stay apart, the changes channel. */
static void expect_job_notification(store *l)
{
    struct pollfd p = {.fd = store_changes_fd(l), .events = POLLIN};
    CHECK_MSG(poll(&p, 1, 5000) == 1, "no notification within 5 s");
    CHECK_INT_EQ(store_jobs_drain(l), 1);
    CHECK_INT_EQ(store_jobs_drain(l), 0);
    CHECK_INT_EQ(store_changes_drain(l), 0); /* jobs are not in the change feed */
}

/* A new job, and a job put back to queued when its owner's lease ran out, notify listening nodes (clad_jobs)
 * at commit, so idle nodes claim it without waiting for their poll. SQLite has no notifications. */
STORE_TEST(store_queue_new_and_requeued_jobs_notify_listening_nodes)
{
    clad_err e = {0};
    store *a = node_open("q.db", "node-a"), *b = node_open("q.db", "node-b");
    char path[512];
    fx_path(path, sizeof path, "q.db");
    store *l = store_open_reader(path, &e);
    CHECK_MSG(l != NULL, "%s", e.msg);
    if (!fx_on_pg()) {
        CHECK_CODE(store_jobs_listen(l, &e), CLAD_EINVAL, e);
        CHECK_INT_EQ(store_jobs_drain(l), -1);
        CHECK_OK(store_jobs_notify(a, &e), e); /* a no-op */
    } else {
        CHECK_OK(store_changes_listen(l, &e), e);
        CHECK_OK(store_jobs_listen(l, &e), e);
        int64_t j1 = job_new(a, NULL, "lane1", "data", 4);
        expect_job_notification(l);
        claim_expect(a, 0, 30, j1);
        usleep(60 * 1000);
        claim_expect(b, 0, 10000, j1); /* requeued and claimed again in one transaction: still announced */
        expect_job_notification(l);
    }
    store_close(l);
    store_close(a);
    store_close(b);
}

/* Rehearsal-free holds for the store's own files: a job's data is not found in the database or its WAL,
 * byte for byte, once the job has ended. The planted copy shows the scan finds it while it is there. */
static bool file_has(const char *path, const uint8_t *needle, size_t n)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (file_read_all(path, 1 << 28, &buf, &len, NULL) != 0) return false; /* no WAL: nothing there */
    bool found = memmem(buf, len, needle, n) != NULL;
    free(buf);
    return found;
}

/* Whether the store holds the n bytes at probe anywhere: SQLite's database file or WAL, byte for byte; on
 * PostgreSQL (whose files the server owns) every bytea column. */
static bool store_has(const char *db, const char *wal, const uint8_t *probe, size_t n)
{
    if (!fx_on_pg()) return file_has(db, probe, n) || file_has(wal, probe, n);
    char hex[2 * 64 + 1], sql[1024];
    for (size_t i = 0; i < n && i < 64; i++) snprintf(hex + 2 * i, 3, "%02x", probe[i]);
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM job_data WHERE position(decode('%s', 'hex') IN data) > 0) + "
             "(SELECT count(*) FROM version_blobs WHERE position(decode('%s', 'hex') IN data) > 0) + "
             "(SELECT count(*) FROM bases WHERE position(decode('%s', 'hex') IN coalesce(weights, '')) > 0)",
             hex, hex, hex);
    return fx_count(db, sql) > 0;
}

STORE_TEST(store_queue_job_data_leaves_no_bytes_in_the_files)
{
    clad_err e = {0};
    store *a = node_open("q.db", "node-a");
    fx_task(a, "t1");
    uint8_t data[20000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 131 + (i >> 7) * 7 + 3);
    char db[512], wal[520];
    fx_path(db, sizeof db, "q.db");
    snprintf(wal, sizeof wal, "%s-wal", db);
    const uint8_t *probe = data + 7777; /* a 64-byte window from the middle of the upload */
    int64_t ids[3];
    for (int i = 0; i < 3; i++) ids[i] = job_new(a, "t1", "mlp", data, sizeof data);
    CHECK(store_has(db, wal, probe, 64)); /* the scan sees the data while queued */
    /* One job succeeds with a version, one fails, one is cancelled while queued. */
    int64_t v = 0;
    claim_expect(a, 0, 10000, ids[0]);
    CHECK_OK(fx_put_job(a, "t1", ids[0], &v, &e), e);
    claim_expect(a, 0, 10000, ids[1]);
    CHECK_OK(store_job_mark_failed(a, ids[1], CLAD_EINVAL, "bad", &e), e);
    CHECK_OK(store_job_request_cancel(a, ids[2], 501, NULL, &e), e);
    CHECK(!store_has(db, wal, probe, 64));
    CHECK_OK(store_check(a, STORE_CHECK_FULL, &e), e);
    /* A daemon's handle leaves the wipe to a worker's handle: once that ran, the bytes are gone too. */
    store_job_data_defer_wipe(a);
    int64_t id = job_new(a, "t1", "mlp", data, sizeof data);
    CHECK(!store_job_data_wipe_due(a));
    CHECK_OK(store_job_request_cancel(a, id, 501, NULL, &e), e);
    CHECK(store_job_data_wipe_due(a));
    CHECK(!store_job_data_wipe_due(a)); /* asking clears it */
    store *w = store_open_worker(db, &e);
    CHECK_MSG(w != NULL, "%s", e.msg);
    CHECK_OK(store_job_data_wipe(w, &e), e);
    store_close(w);
    CHECK(!store_has(db, wal, probe, 64));
    CHECK_OK(store_check(a, STORE_CHECK_FULL, &e), e);
    store_close(a);
    CHECK(!store_has(db, wal, probe, 64));
}
