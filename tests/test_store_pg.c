/* What only the PostgreSQL backend has to show: writers in several processes get gapless version
 * numbers, a write transaction that meets a serialization failure is retried (and gives up cleanly),
 * unreachable servers and bad URIs give a clear error without the password, a damaged bytea is caught
 * by its sha256, and LISTEN/NOTIFY reaches another connection. Every test runs on the shared throwaway
 * cluster (tests/pg_cluster.h) and is skipped where PostgreSQL is not installed. */
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/store_internal.h"
#include "tests/pg_cluster.h"
#include "tests/test.h"
#include "tests/test_store_fixture.h"

static double now_ms_f(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

TEST(store_pg_concurrent_puts_from_processes_are_numbered_without_gaps)
{
    enum { WRITERS = 4, PUTS = 25 };
    fx_use_backend(FX_PG);
    char uri[512];
    store *s = fx_open_with_task("race.db", "t", 0, uri, sizeof uri);
    CHECK_STR_EQ(store_backend(s), "postgresql");
    pid_t kids[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        if ((kids[w] = fork()) == 0) {
            clad_err e = {0};
            store *c = store_open(uri, &e);
            if (!c) _exit(2);
            static const uint8_t blob[64] = {1, 2, 3};
            for (int i = 0; i < PUTS; i++) {
                store_version_in in = {.task = "t", .kind = "lora", .adapter = blob, .adapter_size = sizeof blob,
                                       .seed = (uint64_t)(w * 1000 + i)};
                if (store_version_put(c, &in, 1000 + w, NULL, &e) != 0) {
                    fprintf(stderr, "writer %d: %s\n", w, e.msg);
                    _exit(3);
                }
            }
            store_close(c);
            _exit(0);
        }
    }
    for (int w = 0; w < WRITERS; w++) {
        int status = 0;
        CHECK(waitpid(kids[w], &status, 0) == kids[w]);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d ended with status %d", w, status);
    }
    clad_err e = {0};
    store_version *v = NULL;
    size_t n = 0;
    CHECK_OK(store_versions_list(s, "t", &v, &n, &e), e);
    CHECK_INT_EQ(n, WRITERS * PUTS);
    for (size_t i = 0; i < n; i++) CHECK_INT_EQ(v[i].version, (int64_t)i + 1); /* 1..100, no gap, no twin */
    store_versions_free(v, n);
    int64_t active = 0;
    CHECK_OK(store_alias_get(s, "t", "active", &active, &e), e);
    CHECK_INT_EQ(active, WRITERS * PUTS);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

/* Fault injection: with pg_catalog searched after public, the writers' lock call reaches this function,
 * which fails with SQLSTATE 40001 (serialization_failure) as many times as the sequence allows. */
static void inject_lock_failures(const char *uri, int failures)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "DROP SEQUENCE IF EXISTS lock_calls; CREATE SEQUENCE lock_calls;"
             "CREATE OR REPLACE FUNCTION public.pg_advisory_xact_lock(bigint) RETURNS void AS $$ BEGIN"
             "  IF nextval('lock_calls') <= %d THEN"
             "    RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure'; END IF;"
             "  PERFORM pg_catalog.pg_advisory_xact_lock($1); END $$ LANGUAGE plpgsql;", failures);
    fx_exec(uri, sql);
}

TEST(store_pg_write_transaction_retries_serialization_failures)
{
    fx_use_backend(FX_PG);
    char uri[512], injected[640];
    store_close(fx_open_with_task("retry.db", "t", 0, uri, sizeof uri));
    snprintf(injected, sizeof injected, "%s&options=-csearch_path%%3Dpublic,pg_catalog", uri);

    clad_err e = {0};
    inject_lock_failures(uri, 2); /* fewer than the driver's attempts: the put goes through */
    store *s = store_open(injected, &e);
    CHECK_MSG(s != NULL, "%s", e.msg);
    CHECK_INT_EQ(fx_put(s, "t", 0), 1);
    CHECK_INT_EQ(fx_count(uri, "SELECT last_value FROM lock_calls"), 3);
    store_close(s);

    inject_lock_failures(uri, 1000); /* never stops: a bounded number of attempts, then busy */
    s = store_open(injected, &e);
    CHECK_MSG(s != NULL, "%s", e.msg);
    static const uint8_t blob[16] = {9};
    store_version_in in = {.task = "t", .kind = "lora", .adapter = blob, .adapter_size = sizeof blob};
    CHECK_CODE(store_version_put(s, &in, 1000, NULL, &e), CLAD_EBUSY, e);
    int64_t attempts = fx_count(uri, "SELECT last_value FROM lock_calls");
    CHECK_MSG(attempts >= 2 && attempts <= 10, "%lld attempts", (long long)attempts);
    store_close(s);
    fx_exec(uri, "DROP FUNCTION public.pg_advisory_xact_lock(bigint)");
    s = fx_open("retry.db");
    int64_t version = 0;
    CHECK_OK(store_version_put(s, &in, 1000, &version, &e), e);
    CHECK_INT_EQ(version, 2); /* the refused attempts used no number */
    store_close(s);
}

/* Another connection holds the writers' lock: a writer waits for it, and a statement timeout set in
 * the URI cancels the wait with CLAD_ECANCELLED (SQLSTATE 57014); readers never wait. */
TEST(store_pg_writers_wait_for_the_lock_and_a_cancel_is_clear)
{
    fx_use_backend(FX_PG);
    char uri[512], timed[640];
    store_close(fx_open_with_task("lock.db", "t", 1, uri, sizeof uri));
    snprintf(timed, sizeof timed, "%s&options=-cstatement_timeout%%3D200", uri);
    PGconn *holder = PQconnectdb(uri);
    CHECK(PQstatus(holder) == CONNECTION_OK);
    PQclear(PQexec(holder, "SELECT pg_advisory_lock(1668047204)"));
    clad_err e = {0};
    store *s = store_open(timed, &e);
    CHECK_MSG(s != NULL, "%s", e.msg);
    int64_t active = 0;
    CHECK_OK(store_alias_get(s, "t", "active", &active, &e), e);
    static const uint8_t blob[16] = {5};
    store_version_in in = {.task = "t", .kind = "lora", .adapter = blob, .adapter_size = sizeof blob};
    double t0 = now_ms_f();
    CHECK_CODE(store_version_put(s, &in, 1000, NULL, &e), CLAD_ECANCELLED, e);
    CHECK_MSG(now_ms_f() - t0 >= 150, "the put did not wait for the lock (%.0f ms)", now_ms_f() - t0);
    PQclear(PQexec(holder, "SELECT pg_advisory_unlock(1668047204)"));
    PQfinish(holder);
    int64_t version = 0;
    CHECK_OK(store_version_put(s, &in, 1000, &version, &e), e);
    CHECK_INT_EQ(version, 2);
    store_close(s);
}

TEST(store_pg_unreachable_server_and_bad_uri_are_clear_errors)
{
    clad_err e = {0};
    /* A socket directory with no server: the error names the store, never the password. */
    char uri[512];
    snprintf(uri, sizeof uri, "postgresql://clad:s3cret-pw@/registry?host=%s/nowhere&password=s3cret-pw",
             test_tmpdir());
    CHECK(store_open(uri, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EIO);
    CHECK_MSG(strstr(e.msg, "postgresql://clad@/registry?host=") && strstr(e.msg, "cannot connect"), "%s", e.msg);
    CHECK_MSG(!strstr(e.msg, "s3cret"), "the password leaked: %s", e.msg);
    clad_err_clear(&e);
    CHECK(store_open_reader(uri, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EIO);
    CHECK_MSG(!strstr(e.msg, "s3cret"), "the password leaked: %s", e.msg);
    /* A URI libpq cannot parse (libpq quotes it whole in its message). */
    clad_err_clear(&e);
    CHECK(store_open("postgresql://clad:s3cret-pw@[::1/db", &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EIO);
    CHECK_MSG(!strstr(e.msg, "s3cret"), "the password leaked: %s", e.msg);
    /* A database that does not exist on a running server. */
    fx_use_backend(FX_PG);
    pg_cluster_uri("no_such_db", uri, sizeof uri);
    clad_err_clear(&e);
    CHECK(store_open(uri, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EIO);
    CHECK_MSG(strstr(e.msg, "no_such_db"), "%s", e.msg);
}

TEST(store_pg_lost_connection_fails_one_call_then_reconnects)
{
    fx_use_backend(FX_PG);
    clad_err e = {0};
    char uri[512];
    store *s = fx_open_with_task("a.db", "t1", 1, uri, sizeof uri);
    /* As a server restart or an idle timeout would: the store's connection is cut. */
    fx_exec(uri, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE datname = current_database() AND pid <> pg_backend_pid()");
    store_task *t = NULL;
    CHECK_CODE(store_task_get(s, "t1", &t, &e), CLAD_EIO, e);
    CHECK_MSG(strstr(e.msg, "PostgreSQL server"), "%s", e.msg);
    CHECK_INT_EQ(fx_put(s, "t1", 0), 2); /* the next call reconnects */
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

TEST(store_pg_other_database_is_refused)
{
    fx_use_backend(FX_PG);
    char uri[512];
    fx_path(uri, sizeof uri, "other.db");
    fx_exec(uri, "CREATE TABLE customers (id int)");
    clad_err e = {0};
    CHECK(store_open(uri, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, "not a clad store"), "%s", e.msg);
    CHECK_INT_EQ(fx_count(uri, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), 1);
}

TEST(store_pg_newer_schema_is_refused)
{
    fx_use_backend(FX_PG);
    char uri[512];
    fx_path(uri, sizeof uri, "new.db");
    store_close(fx_open("new.db"));
    fx_exec(uri, "UPDATE clad_meta SET value = value + 1 WHERE key = 'schema_version'");
    clad_err e = {0};
    CHECK(store_open(uri, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EVERSION);
    clad_err_clear(&e);
    CHECK(store_open_reader(uri, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EVERSION);
}

TEST(store_pg_corrupted_bytea_is_detected_by_its_hash)
{
    fx_use_backend(FX_PG);
    clad_err e = {0};
    char uri[512];
    store *s = fx_open_with_task("a.db", "t1", 3, uri, sizeof uri);
    /* Flip one bit of version 2's adapter behind the store's back. */
    fx_exec(uri, "UPDATE version_blobs SET data = set_byte(data, 100, get_byte(data, 100) # 64) "
                 "WHERE version_id = (SELECT id FROM versions WHERE version = 2)");
    store_version *v = NULL;
    CHECK_CODE(store_version_get(s, "t1", 2, STORE_WITH_BLOB, &v, &e), CLAD_ECORRUPT, e);
    CHECK_STR_EQ(e.msg, "version 2 of task 't1': adapter blob sha256 mismatch");
    CHECK_OK(store_version_get(s, "t1", 3, STORE_WITH_BLOB, &v, &e), e);
    CHECK(fx_blob_ok(v));
    store_version_free(v);
    CHECK_CODE(store_check(s, STORE_CHECK_FULL, &e), CLAD_ECORRUPT, e);
    CHECK(strstr(e.msg, "version 2 of task 't1'"));
    /* The base's inline weights are checked the same way. */
    fx_exec(uri, "UPDATE version_blobs SET data = set_byte(data, 100, get_byte(data, 100) # 64);"
                 "UPDATE version_blobs SET data = set_byte(data, 100, get_byte(data, 100) # 64) "
                 "WHERE version_id = (SELECT id FROM versions WHERE version = 2);"
                 "UPDATE bases SET weights = set_byte(weights, 0, get_byte(weights, 0) # 1)");
    store_base *b = NULL;
    CHECK_CODE(store_base_get(s, "mlp", STORE_WITH_BLOB, &b, &e), CLAD_ECORRUPT, e);
    CHECK_STR_EQ(e.msg, "base 'mlp': weights blob sha256 mismatch");
    store_close(s);
}

TEST(store_pg_notifications_reach_a_listening_connection)
{
    fx_use_backend(FX_PG);
    char uri[512];
    fx_path(uri, sizeof uri, "n.db");
    clad_err e = {0};
    db *listener = db_pg_ops.open(uri, true, &e), *sender = db_pg_ops.open(uri, false, &e);
    CHECK_MSG(listener && sender, "%s", e.msg);
    CHECK_OK(db_listen(listener, "clad_changes", &e), e);
    CHECK_CODE(db_listen(listener, "Bad Channel;", &e), CLAD_EINVAL, e);
    int fd = db_notify_fd(listener);
    CHECK(fd >= 0);
    CHECK_INT_EQ(db_drain(listener, "clad_changes"), 0);
    CHECK_OK(db_notify(sender, "clad_changes", "task:t1", &e), e);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    CHECK_MSG(poll(&p, 1, 5000) == 1, "no notification within 5 s");
    CHECK_INT_EQ(db_drain(listener, "clad_changes"), 1);
    CHECK_INT_EQ(db_drain(listener, "clad_changes"), 0);
    /* One connection, two channels: each drain answers for its own channel and keeps the other's. */
    CHECK_OK(db_listen(listener, "clad_jobs", &e), e);
    CHECK_OK(db_notify(sender, "clad_jobs", "queued", &e), e);
    CHECK_MSG(poll(&p, 1, 5000) == 1, "no notification within 5 s");
    CHECK_INT_EQ(db_drain(listener, "clad_changes"), 0);
    CHECK_INT_EQ(db_drain(listener, "clad_jobs"), 1);
    CHECK_INT_EQ(db_drain(listener, "clad_jobs"), 0);
    db_pg_ops.close(listener);
    db_pg_ops.close(sender);
    /* SQLite has no notifications: callers poll. */
    char path[512];
    snprintf(path, sizeof path, "%s/n.db", test_tmpdir());
    db *lite = db_sqlite_ops.open(path, false, &e);
    CHECK(lite != NULL);
    CHECK_INT_EQ(db_listen(lite, "clad_changes", &e), -1);
    CHECK_INT_EQ(db_notify_fd(lite), -1);
    CHECK_INT_EQ(db_drain(lite, "clad_changes"), -1);
    db_sqlite_ops.close(lite);
}

/* Results come back in binary form; the column getters read every number type PostgreSQL may answer
 * with (numeric is what sum() of integers gives), and SQL NULL reads as zero or NULL. */
TEST(store_pg_column_getters_read_every_number_type)
{
    fx_use_backend(FX_PG);
    char uri[512];
    fx_path(uri, sizeof uri, "c.db");
    clad_err e = {0};
    db *d = db_pg_ops.open(uri, true, &e);
    CHECK_MSG(d != NULL, "%s", e.msg);
    db_stmt *st = NULL;
    CHECK_OK(d->ops->prepare(d, "SELECT 12345678901234::numeric, -2.5::numeric, 0.25::numeric, 7::int2, "
                                "-70000::int4, true, 1.5::float8, 0.5::float4, NULL::bigint, 'x'::varchar, "
                                "(SELECT sum(v) FROM (VALUES (4000000000::bigint), (5)) t(v))", &st, &e), e);
    CHECK_INT_EQ(st->ops->step(st, &e), 1);
    CHECK_INT_EQ(st->ops->col_int64(st, 0), 12345678901234LL);
    CHECK_STR_EQ(st->ops->col_text(st, 0), "12345678901234");
    CHECK_INT_EQ(st->ops->col_int64(st, 1), -2);
    CHECK_NEAR(st->ops->col_double(st, 1), -2.5, 0);
    CHECK_NEAR(st->ops->col_double(st, 2), 0.25, 0);
    CHECK_INT_EQ(st->ops->col_int64(st, 3), 7);
    CHECK_INT_EQ(st->ops->col_int64(st, 4), -70000);
    CHECK_INT_EQ(st->ops->col_int64(st, 5), 1);
    CHECK_NEAR(st->ops->col_double(st, 6), 1.5, 0);
    CHECK_NEAR(st->ops->col_double(st, 7), 0.5, 0);
    CHECK(st->ops->col_is_null(st, 8) && st->ops->col_int64(st, 8) == 0 && !st->ops->col_text(st, 8));
    CHECK_STR_EQ(st->ops->col_text(st, 9), "x");
    CHECK_INT_EQ(st->ops->col_int64(st, 10), 4000000005LL);
    CHECK_INT_EQ(st->ops->step(st, &e), 0);
    st->ops->finalize(st);
    d->ops->close(d);
}

/* Not a speed test (the machine is shared): prints the mean time of a 16 KiB version put, a rollback
 * with its undo, and an alias resolve with the blob load, per backend. The test cluster runs with
 * fsync=off while SQLite syncs every commit, so the two are not a like-for-like durability comparison. */
TEST(store_pg_operation_times_next_to_sqlite)
{
    enum { N = 50 };
    double put[2], roll[2], load[2];
    for (int b = 0; b < 2; b++) {
        fx_use_backend(b ? FX_PG : FX_SQLITE);
        store *s = fx_open_with_task("speed.db", "t", 0, NULL, 0);
        static uint8_t blob[16384];
        store_version_in in = {.task = "t", .kind = "lora", .adapter = blob, .adapter_size = sizeof blob};
        clad_err e = {0};
        double t0 = now_ms_f();
        for (int i = 0; i < N; i++) {
            blob[0] = (uint8_t)i;
            CHECK_OK(store_version_put(s, &in, 1000, NULL, &e), e);
        }
        double t1 = now_ms_f();
        for (int i = 0; i < N; i++) {
            CHECK_OK(store_rollback(s, "t", NULL, 0, 1000, NULL, NULL, &e), e);
            CHECK_OK(store_rollback_undo(s, "t", NULL, 1000, NULL, NULL, &e), e);
        }
        double t2 = now_ms_f();
        for (int i = 0; i < N; i++) {
            store_version *v = NULL;
            CHECK_OK(store_version_get_alias(s, "t", "active", STORE_WITH_BLOB, &v, &e), e);
            store_version_free(v);
        }
        load[b] = (now_ms_f() - t2) / N;
        put[b] = (t1 - t0) / N;
        roll[b] = (t2 - t1) / (2 * N);
        store_close(s);
    }
    printf("# mean ms, sqlite vs postgresql: version put (16 KiB) %.2f vs %.2f, rollback or undo %.2f vs %.2f, "
           "resolve and load %.2f vs %.2f\n", put[0], put[1], roll[0], roll[1], load[0], load[1]);
}
