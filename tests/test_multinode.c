/* Several cladd nodes on one store (docs/SCALING.md), as real processes on their own sockets and state
 * directories: they see each other in /v1/status and `clad nodes` (a killed node turns dead, a stopped
 * one stopped), a rollback through one node is what the others serve next, every node predicts the same
 * bits for a version, and deletes through one node reach the caches of the others through the change
 * feed. Each scenario runs on one SQLite file shared by the processes, and on a PostgreSQL database of a
 * throwaway cluster (tests/pg_cluster.h; skipped where PostgreSQL is not installed), where the nodes learn
 * of changes by LISTEN/NOTIFY. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"
#include "storage/store.h"
#include "tests/multinode_util.h"
#include "tests/pg_cluster.h"
#include "tests/test.h"
#include "tests/test_store_fixture.h"

#define JSON_BODY "-H 'Content-Type: application/json' "

/* Three inputs of the 16 features the task's base takes. */
#define INPUTS                                                                                                    \
    "{\"inputs\": [[0.1,-0.2,0.3,0.4,-0.5,0.6,0.7,-0.8,0.9,1.0,-1.1,0.2,0.3,-0.4,0.5,0.6],"                       \
    "[1,0,1,0,1,0,1,0,1,0,1,0,1,0,1,0],[-0.3,0.3,-0.3,0.3,0.2,-0.2,0.2,-0.2,0.1,-0.1,0.1,-0.1,0.5,0.5,-0.5,-0.5]]}"

static const model_config tiny = {.kind = MODEL_MLP, .input_dim = 16, .n_hidden = 2, .hidden = {32, 24}, .n_classes = 5};

/* POST /v1/tasks/t/predict{query}: the status, *body (malloc'd) the reply. */
static int predict(const daemon_proc *d, const char *query, char **body)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/t/predict%s", query);
    return curl_req(d, "POST", path, JSON_BODY "-d '" INPUTS "'", body, NULL);
}

/* The version a node serves for task t's active alias. */
static long long served_version(const daemon_proc *d)
{
    char *body = NULL;
    int code = predict(d, "", &body);
    CHECK_MSG(code == 200, "predict answered %d: %s", code, body);
    json_t *j = json_or_fail(body);
    long long v = json_integer_value(json_object_get(j, "version"));
    json_decref(j);
    free(body);
    return v;
}

static void sqlite_store(char *out, size_t size)
{
    snprintf(out, size, "%s/shared.db", test_tmpdir());
}

/* A fresh database `name` on the shared test cluster (the test is skipped where PostgreSQL is missing). */
static void pg_store(const char *name, char *out, size_t size)
{
    pg_cluster_require();
    CHECK_MSG(pg_cluster_create_db(name, out, size) == 0, "cannot create database %s", name);
}

/* Does node d listen for the store's change notifications (/v1/status node.feed.listening)? */
static bool listening(const daemon_proc *d)
{
    json_t *j = mn_status(d);
    bool yes = json_is_true(json_object_get(json_object_get(json_object_get(j, "node"), "feed"), "listening"));
    json_decref(j);
    return yes;
}

/* Every node listens for notifications (PostgreSQL) or does not (SQLite). */
static void check_listening(const mn_cluster *c, bool want)
{
    for (int i = 0; i < c->n; i++) CHECK_MSG(listening(&c->node[i]) == want, "node n%d listening: %d", i, !want);
}

static void nodes_see_each_other(const char *location)
{
    mn_cluster c;
    mn_start(&c, 3, location);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            char id[8];
            snprintf(id, sizeof id, "n%d", k);
            mn_wait_node_state(&c.node[i], id, "live", 10);
        }
    json_t *st = mn_status(&c.node[1]);
    json_t *self = json_object_get(st, "node");
    CHECK_STR_EQ(json_string_value(json_object_get(self, "id")), "n1");
    CHECK_STR_EQ(json_string_value(json_object_get(self, "socket")), c.node[1].sock);
    CHECK_INT_EQ(json_integer_value(json_object_get(self, "pid")), c.node[1].pid);
    CHECK(json_is_true(json_object_get(self, "self")));
    CHECK_INT_EQ(json_array_size(json_object_get(st, "nodes")), 3);
    json_decref(st);

    char *out = NULL;
    CHECK_INT_EQ(clad_run(&c.node[0], "nodes", &out), 0);
    CHECK_MSG(strstr(out, "* n0 ") && strstr(out, "  n1 ") && strstr(out, "  n2 ") && strstr(out, c.node[2].sock),
              "clad nodes printed:\n%s", out);
    free(out);

    /* SIGKILL: no clean stop is recorded, the heartbeat just ends; 5 s later the others call it dead. */
    CHECK_INT_EQ(daemon_stop(&c.node[2], SIGKILL, 10), 128 + SIGKILL);
    double t = mn_wait_node_state(&c.node[0], "n2", "dead", 15);
    CHECK_STR_EQ(mn_node_state(&c.node[1], "n2"), "dead");
    printf("# a killed node was reported dead after %.1f s (heartbeat 1 s, dead after 5 s)\n", t);
    CHECK_INT_EQ(clad_run(&c.node[1], "nodes", &out), 0);
    CHECK_MSG(strstr(out, "n2 ") && strstr(out, "dead"), "clad nodes printed:\n%s", out);
    free(out);
    /* A clean stop is recorded at once. */
    CHECK_INT_EQ(daemon_stop(&c.node[1], SIGTERM, 20), 0);
    CHECK_STR_EQ(mn_node_state(&c.node[0], "n1"), "stopped");
    CHECK_STR_EQ(mn_node_state(&c.node[0], "n0"), "live");
    mn_stop(&c);
}

/* Polls node d until it serves `want` for t's active alias; returns the seconds it took. */
static double wait_served(const daemon_proc *d, long long want, double timeout_s)
{
    double t0 = now_s();
    long long got;
    while ((got = served_version(d)) != want) {
        CHECK_MSG(now_s() - t0 < timeout_s, "node still serves version %lld, not %lld, after %.0f s", got, want,
                  timeout_s);
        sleep_ms(5);
    }
    return now_s() - t0;
}

/* Waits until node d has applied the newest change of the store at location; returns the time from that
 * change's commit to its application there (/v1/status node.feed.last_lag_ms). */
static long long feed_lag_ms(const daemon_proc *d, const char *location)
{
    clad_err e = {0};
    store *s = store_open_reader(location, &e);
    CHECK_MSG(s != NULL, "%s", e.msg);
    int64_t last = 0;
    CHECK_INT_EQ(store_changes_last(s, &last, &e), 0);
    store_close(s);
    double t0 = now_s();
    for (;;) {
        json_t *j = mn_status(d);
        json_t *feed = json_object_get(json_object_get(j, "node"), "feed");
        long long seen = json_integer_value(json_object_get(feed, "last_change"));
        long long lag = json_integer_value(json_object_get(feed, "last_lag_ms"));
        json_decref(j);
        if (seen >= last) return lag;
        CHECK_MSG(now_s() - t0 < 5, "the node applied change %lld, not %lld, after 5 s", seen, (long long)last);
        sleep_ms(10);
    }
}

static void rollback_served_everywhere(const char *location, const char *label)
{
    store_fill_lora(location, &tiny, 3);
    mn_cluster c;
    mn_start(&c, 3, location);
    /* Every node predicts the same bits for a version (each loads it from the store on its own), and
     * different ones for different versions. Fewer than REGISTRY_FOLD_AFTER predictions each, so none is
     * folded yet (a fold sums in another order). */
    char *ref[3] = {0};
    for (int v = 1; v <= 3; v++)
        for (int i = 0; i < 3; i++) {
            char q[32], *body = NULL;
            snprintf(q, sizeof q, "?version=%d", v);
            CHECK_INT_EQ(predict(&c.node[i], q, &body), 200);
            if (i == 0) {
                CHECK_MSG(v == 1 || strcmp(body, ref[v - 2]), "versions %d and %d predict the same", v - 1, v);
                ref[v - 1] = body;
                continue;
            }
            CHECK_MSG(!strcmp(body, ref[v - 1]), "version %d: node n%d predicts\n%s\nnode n0\n%s", v, i, body, ref[v - 1]);
            free(body);
        }
    for (int v = 0; v < 3; v++) free(ref[v]);
    for (int i = 0; i < 3; i++) CHECK_INT_EQ(served_version(&c.node[i]), 3);

    /* A rollback through n0, then an undo through n1: the other nodes serve the new target next. */
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&c.node[0], "POST", "/v1/tasks/t/rollback", JSON_BODY "-d '{\"reason\": \"bad\"}'", &body, NULL), 200);
    free(body);
    double b = wait_served(&c.node[1], 2, 5), cc = wait_served(&c.node[2], 2, 5);
    printf("# %s: a rollback through n0 was served by n1 after %.1f ms, by n2 after %.1f ms more\n", label, b * 1e3, cc * 1e3);
    printf("# %s: the rollback's change reached n1's feed %lld ms after its commit\n", label, feed_lag_ms(&c.node[1], location));
    CHECK_INT_EQ(curl_req(&c.node[1], "POST", "/v1/tasks/t/rollback/undo", JSON_BODY "-d '{}'", &body, NULL), 200);
    free(body);
    double a = wait_served(&c.node[0], 3, 5);
    wait_served(&c.node[2], 3, 5);
    printf("# %s: an undo through n1 was served by n0 after %.1f ms\n", label, a * 1e3);
    mn_stop(&c);
}

/* Polls until node d answers `want` to method path; returns the seconds it took. */
static double wait_status(const daemon_proc *d, const char *method, const char *path, int want, double timeout_s)
{
    double t0 = now_s();
    int got;
    for (;;) {
        char *body = NULL;
        if (!strcmp(path, "predict-v1")) got = predict(d, "?version=1", &body);
        else got = curl_req(d, method, path, NULL, &body, NULL);
        free(body);
        if (got == want) return now_s() - t0;
        CHECK_MSG(now_s() - t0 < timeout_s, "%s %s still answers %d, not %d, after %.0f s", method, path, got, want,
                  timeout_s);
        sleep_ms(5);
    }
}

static long long loaded(const daemon_proc *d, const char *field)
{
    json_t *j = mn_status(d);
    long long n = json_integer_value(json_object_get(json_object_get(j, "loaded"), field));
    json_decref(j);
    return n;
}

static void deletes_reach_every_node(const char *location, const char *label)
{
    store_fill_lora(location, &tiny, 3);
    mn_cluster c;
    mn_start(&c, 3, location);
    /* n1 and n2 hold version 1 in their caches: without the feed they would go on serving it. */
    for (int i = 1; i < 3; i++) {
        char *body = NULL;
        CHECK_INT_EQ(predict(&c.node[i], "?version=1", &body), 200);
        free(body);
        CHECK_INT_EQ(loaded(&c.node[i], "adapters"), 1);
    }
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&c.node[0], "DELETE", "/v1/tasks/t/versions/1", NULL, &body, NULL), 200);
    free(body);
    double t1 = wait_status(&c.node[1], "POST", "predict-v1", 404, 5);
    double t2 = wait_status(&c.node[2], "POST", "predict-v1", 404, 5);
    CHECK_INT_EQ(loaded(&c.node[1], "adapters"), 0);
    printf("# %s: a version deleted through n0 was not found by n1 after %.1f ms, by n2 after %.1f ms more\n", label,
           t1 * 1e3, t2 * 1e3);
    check_listening(&c, strcmp(label, "sqlite") != 0);

    /* The task, then the base. */
    CHECK_INT_EQ(predict(&c.node[1], "", &body), 200);
    free(body);
    CHECK_INT_EQ(curl_req(&c.node[0], "DELETE", "/v1/tasks/t", NULL, &body, NULL), 200);
    free(body);
    wait_status(&c.node[1], "GET", "/v1/tasks/t", 404, 5);
    wait_status(&c.node[2], "POST", "predict-v1", 404, 5);
    CHECK_INT_EQ(curl_req(&c.node[2], "DELETE", "/v1/bases/b", NULL, &body, NULL), 200);
    free(body);
    wait_status(&c.node[0], "GET", "/v1/bases/b", 404, 5);
    /* n1 held the base (loaded for its predictions); the feed makes it let go. */
    double t0 = now_s();
    while (loaded(&c.node[1], "bases")) {
        CHECK_MSG(now_s() - t0 < 5, "n1 still holds the deleted base after 5 s");
        sleep_ms(20);
    }
    json_t *st = mn_status(&c.node[1]);
    json_t *feed = json_object_get(json_object_get(st, "node"), "feed");
    CHECK(json_integer_value(json_object_get(feed, "dropped")) >= 3);
    /* On PostgreSQL the changes arrived by notification (not only by the 1 s poll). */
    if (strcmp(label, "sqlite"))
        CHECK_MSG(json_integer_value(json_object_get(feed, "notifications")) >= 1, "feed: %s",
                  json_dumps(feed, JSON_COMPACT));
    json_decref(st);
    mn_stop(&c);
}

TEST(multinode_sqlite_nodes_see_each_other_and_the_dead)
{
    char location[512];
    sqlite_store(location, sizeof location);
    nodes_see_each_other(location);
}

TEST(multinode_sqlite_rollback_served_everywhere_bit_identical)
{
    char location[512];
    sqlite_store(location, sizeof location);
    rollback_served_everywhere(location, "sqlite");
}

TEST(multinode_sqlite_deletes_reach_every_node)
{
    char location[512];
    sqlite_store(location, sizeof location);
    deletes_reach_every_node(location, "sqlite");
}

TEST(multinode_store_location_is_checked_and_its_password_never_shown)
{
    static const char *const cases[][2] = {
        {"postgresql://clad:s3cret@db1:5432/clad", "postgresql://clad:***@db1:5432/clad"},
        {"postgres://u:p@h/d?sslmode=require&password=x&application_name=a",
         "postgres://u:***@h/d?sslmode=require&password=***&application_name=a"},
        {"postgresql://db1/clad?password=only", "postgresql://db1/clad?password=***"},
        {"postgresql://clad@db1/clad", "postgresql://clad@db1/clad"},
        {"postgresql:///clad?host=/tmp/pg&user=u@x", "postgresql:///clad?host=/tmp/pg&user=u@x"},
        {"/var/lib/clad/clad.db", "/var/lib/clad/clad.db"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256];
        config_store_redacted(cases[i][0], out, sizeof out);
        CHECK_STR_EQ(out, cases[i][1]);
    }
    char tiny_buf[12];
    config_store_redacted("postgresql://u:secret@h/d", tiny_buf, sizeof tiny_buf);
    CHECK(!strstr(tiny_buf, "secret"));

    cladd_config cfg;
    config_init(&cfg);
    clad_err e = {0};
    CHECK_INT_EQ(config_set(&cfg, "store", "relative/clad.db", &e), CLAD_EINVAL);
    CHECK_INT_EQ(config_set(&cfg, "store", "mysql://x", &e), CLAD_EINVAL);
    CHECK_INT_EQ(config_set(&cfg, "store", "postgresql://db1/clad", &e), 0);
    CHECK_INT_EQ(config_set(&cfg, "node_id", "web 1", &e), CLAD_EINVAL);
    CHECK_INT_EQ(config_set(&cfg, "node_id", "web-1.a", &e), 0);
    char id[CONFIG_NAME_MAX + 1], other[CONFIG_NAME_MAX + 1];
    config_default_node_id("/var/lib/clad-a", id, sizeof id);
    config_default_node_id("/var/lib/clad-b", other, sizeof other);
    CHECK_MSG(strcmp(id, other) && strlen(id) > 9 && id[strlen(id) - 9] == '-', "%s vs %s", id, other);
}

/* A second node under a live node's id is refused at startup, naming the first; --store must be a usable
 * location. */
TEST(multinode_node_id_in_use_is_refused)
{
    char location[512];
    sqlite_store(location, sizeof location);
    mn_cluster c;
    mn_start(&c, 1, location);
    daemon_proc twin;
    const char *args[] = {"--store", location, NULL};
    daemon_opts o = {.args = args, .config = "node_id = n0\n", .subdir = "twin", .no_wait = true};
    daemon_start(&twin, &o);
    CHECK_INT_EQ(daemon_wait(&twin, 10), 1);
    char *log = daemon_log(&twin);
    CHECK_MSG(strstr(log, "node id 'n0' is in use by a live node") && strstr(log, "/n0/state"), "log:\n%s", log);
    free(log);
    const char *bad[] = {"--store", "clad.db", NULL};
    daemon_opts ob = {.args = bad, .subdir = "bad", .no_wait = true};
    daemon_start(&twin, &ob);
    CHECK_INT_EQ(daemon_wait(&twin, 10), 2);
    mn_stop(&c);
}

TEST(multinode_pg_nodes_see_each_other_and_the_dead)
{
    char location[512];
    pg_store("mn_nodes", location, sizeof location);
    nodes_see_each_other(location);
}

TEST(multinode_pg_rollback_served_everywhere_bit_identical)
{
    char location[512];
    pg_store("mn_rollback", location, sizeof location);
    rollback_served_everywhere(location, "postgresql");
}

/* Also: the deletes reach the others by notification, not only by the 1 s poll. */
TEST(multinode_pg_deletes_reach_every_node)
{
    char location[512];
    pg_store("mn_deletes", location, sizeof location);
    deletes_reach_every_node(location, "postgresql");
}

/* The database drops every connection of the nodes (as a restart of PostgreSQL does): requests fail
 * while it is away, then the nodes reconnect by themselves, beat again, listen again, and a delete through
 * one node still reaches the others' caches. */
TEST(multinode_pg_nodes_recover_after_losing_the_database)
{
    char location[512];
    pg_store("mn_lost", location, sizeof location);
    store_fill_lora(location, &tiny, 2);
    mn_cluster c;
    mn_start(&c, 2, location);
    char *body = NULL;
    CHECK_INT_EQ(predict(&c.node[1], "?version=1", &body), 200);
    free(body);
    CHECK_INT_EQ(pg_cluster_exec("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                             "WHERE datname = 'mn_lost' AND pid <> pg_backend_pid()"), 0);
    double t0 = now_s();
    while (!listening(&c.node[1]) || strcmp(mn_node_state(&c.node[1], "n0"), "live") || strcmp(mn_node_state(&c.node[0], "n1"), "live")) {
        CHECK_MSG(now_s() - t0 < 15, "the nodes did not recover within 15 s; n1 log:\n%s", daemon_log(&c.node[1]));
        sleep_ms(100);
    }
    printf("# both nodes live and listening again %.1f s after their connections were dropped\n", now_s() - t0);
    CHECK_INT_EQ(curl_req(&c.node[0], "DELETE", "/v1/tasks/t/versions/1", NULL, &body, NULL), 200);
    free(body);
    wait_status(&c.node[1], "POST", "predict-v1", 404, 5);
    mn_stop(&c);
}

/* A job accepted by a node whose job slot is busy is claimed by an idle node. On PostgreSQL the job's
 * transaction notifies (NOTIFY clad_jobs) and the idle node, which LISTENs, tries to claim at once; on
 * SQLite the idle node finds the job at its next poll (every 250 ms). Prints the submit-to-claim times
 * (each job's claim audit row minus its create row, both stamped by the store's writers on one clock). */
#define CLAIM_JOBS 8

static void idle_node_claims_new_jobs(const char *location, const char *label)
{
    char csv[512], config[700], spec[900];
    snprintf(csv, sizeof csv, "%s/base.csv", test_tmpdir());
    write_argmax_csv(csv, 60, 8, 9);
    snprintf(config, sizeof config, "data_dirs = %s\n", test_tmpdir());
    mn_cluster c;
    mn_start_config(&c, 2, location, config);
    long long sleeper = mn_occupy_slot(&c.node[0], "d0");
    double ms[CLAIM_JOBS];
    for (int i = 0; i < CLAIM_JOBS; i++) {
        char path[64], sql[256];
        snprintf(path, sizeof path, "/v1/bases/b%d", i);
        snprintf(spec, sizeof spec, "{\"model\": {\"model\": \"mlp\", \"input_dim\": 8, \"hidden\": [4]}, "
                 "\"data\": \"%s\", \"epochs\": 1}", csv);
        long long id = mn_submit_json(&c.node[0], path, spec);
        json_t *j = wait_final(&c.node[1], id, 120);
        CHECK_MSG(!strcmp(state_of(j), "succeeded"), "base training %lld: %s", id, json_dumps(j, 0));
        CHECK_STR_EQ(json_string_value(json_object_get(j, "node")), "n1");
        json_decref(j);
        snprintf(sql, sizeof sql, "SELECT (SELECT min(time_ms) FROM audit WHERE object = 'job:%lld' AND action = "
                 "'job.running') - (SELECT min(time_ms) FROM audit WHERE object = 'job:%lld' AND action = 'job.create')",
                 id, id);
        ms[i] = (double)fx_count(location, sql);
    }
    double lo = ms[0], hi = ms[0], sum = 0;
    for (int i = 0; i < CLAIM_JOBS; i++) {
        lo = ms[i] < lo ? ms[i] : lo;
        hi = ms[i] > hi ? ms[i] : hi;
        sum += ms[i];
    }
    printf("# %s: a job accepted by a busy node was claimed by the idle node %.0f..%.0f ms (mean %.0f, %d jobs) "
           "after its submit\n", label, lo, hi, sum / CLAIM_JOBS, CLAIM_JOBS);
    /* Every job's notification reached the idle node (none on SQLite, which has none to send). */
    json_t *st = mn_status(&c.node[1]);
    json_int_t notified = json_integer_value(json_object_get(json_object_get(json_object_get(st, "node"), "feed"),
                                                             "job_notifications"));
    json_decref(st);
    if (config_store_is_postgres(location)) CHECK_MSG(notified >= CLAIM_JOBS, "%lld job notifications", (long long)notified);
    else CHECK_INT_EQ(notified, 0);
    char *body = NULL, del[64];
    snprintf(del, sizeof del, "/v1/jobs/%lld", sleeper);
    CHECK_INT_EQ(curl_req(&c.node[0], "DELETE", del, NULL, &body, NULL), 202);
    free(body);
    mn_stop(&c);
}

TEST_TIMEOUT(multinode_sqlite_idle_node_claims_new_jobs, 300)
{
    char location[512];
    sqlite_store(location, sizeof location);
    idle_node_claims_new_jobs(location, "sqlite (poll)");
}

TEST_TIMEOUT(multinode_pg_idle_node_claims_new_jobs, 300)
{
    char location[512];
    pg_store("mn_claims", location, sizeof location);
    idle_node_claims_new_jobs(location, "postgresql");
}

/* A large upload stored through one node holds the store's writers' lock for seconds (one PostgreSQL
 * transaction of 384 MiB; 5 s here). The lease of a job another node runs (2 s) is renewed throughout,
 * because renewals, like the heartbeat, do not take that lock: the job keeps running on its first attempt.
 * On SQLite every write waits for that transaction, renewals too (docs/SCALING.md says when that is safe). */
static void large_upload_keeps_other_leases(const char *location)
{
    char file[512], extra[700], *body = NULL;
    store_fill_lora(location, &tiny, 1);
    mn_cluster c;
    mn_start_config(&c, 2, location, "job_lease_seconds = 2\n");
    long long sleeper = mn_occupy_slot(&c.node[0], "d0");
    snprintf(file, sizeof file, "%s/upload.bin", test_tmpdir());
    FILE *f = fopen(file, "wb");
    CHECK(f != NULL);
    /* Bytes that do not compress (PostgreSQL would store zeros in a few pages). */
    static uint32_t block[1 << 14];
    uint32_t x = 12345;
    for (int i = 0; i < 384 * 16; i++) {
        for (size_t k = 0; k < sizeof block / sizeof block[0]; k++) block[k] = x = x * 1664525u + 1013904223u;
        CHECK_INT_EQ(fwrite(block, 1, sizeof block, f), sizeof block);
    }
    CHECK_INT_EQ(fclose(f), 0);
    snprintf(extra, sizeof extra, "-H 'Content-Type: application/octet-stream' --data-binary '@%s'", file);
    double t0 = now_s();
    int code = curl_req(&c.node[1], "POST", "/v1/tasks/t/train", extra, &body, NULL);
    double took = now_s() - t0;
    CHECK_MSG(code == 202, "the upload was answered %d: %s", code, body);
    free(body);
    /* A lease lost during the upload shows at the next renewal and claim: wait for them. */
    sleep_ms(2500);
    json_t *j = get_job(&c.node[0], sleeper);
    bool held = !strcmp(state_of(j), "running") && json_integer_value(json_object_get(j, "attempt")) == 1 &&
                fx_count(location, "SELECT count(*) FROM audit WHERE action = 'jobs.lease_expired'") == 0;
    printf("# a 384 MiB upload through n1 was answered after %.1f s; n0's job (lease 2 s) %s\n", took,
           held ? "kept its lease" : "lost its lease");
    CHECK_MSG(held, "n0's job: %s", json_dumps(j, 0));
    json_decref(j);
    snprintf(extra, sizeof extra, "/v1/jobs/%lld", sleeper);
    code = curl_req(&c.node[0], "DELETE", extra, NULL, &body, NULL);
    free(body);
    mn_stop(&c);
}

TEST_TIMEOUT(multinode_pg_large_upload_keeps_other_nodes_leases, 300)
{
    char location[512];
    pg_store("mn_upload", location, sizeof location);
    large_upload_keeps_other_leases(location);
}
