/* The shared job queue with real daemons: three cladd on three sockets share one store (an SQLite file,
 * or a PostgreSQL database on the test cluster, skipped where PostgreSQL is missing; through
 * tests/multinode_util.h), so a job submitted to any node is run by one of them, once; a node
 * killed while it trains loses the job to another, which trains it again. Merges and base trainings
 * accepted by a busy or dead node are run by another. */
#include "tests/test.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/model.h"
#include "core/rng.h"
#include "io/model_io.h"
#include "tests/daemon_util.h"
#include "tests/multinode_util.h"
#include "tests/pg_cluster.h"
#include "tests/test_store_fixture.h"

#define FEATURES 8
#define NODES 3
#define LEASE_S 2

/* The shared store: an SQLite file, or a fresh database on the PostgreSQL test cluster. */
static void store_location(bool pg, const char *name, char *buf, size_t cap)
{
    if (!pg) {
        snprintf(buf, cap, "%s/shared.db", test_tmpdir());
        return;
    }
    pg_cluster_require();
    CHECK_MSG(pg_cluster_create_db(name, buf, cap) == 0, "cannot create database %s", name);
}

/* Three nodes on the store at location with base "mlp" (imported through the first). Nodes 0 to
 * readers - 1 may read the test's files (base trainings by path). */
static void cluster_start_readers(mn_cluster *c, const char *location, int readers)
{
    char lease[64], reader[700];
    snprintf(lease, sizeof lease, "job_lease_seconds = %d\n", LEASE_S);
    snprintf(reader, sizeof reader, "%sdata_dirs = %s\n", lease, test_tmpdir());
    const char *configs[NODES];
    for (int k = 0; k < NODES; k++) configs[k] = k < readers ? reader : lease;
    mn_start_configs(c, NODES, location, configs);
    char path[512], extra[700], *body = NULL;
    snprintf(path, sizeof path, "%s/base.safetensors", test_tmpdir());
    model_config mc = {.kind = MODEL_MLP, .input_dim = FEATURES, .n_hidden = 1, .hidden = {16}, .n_classes = 4};
    write_random_base(path, &mc, 3);
    snprintf(extra, sizeof extra, "-H 'Content-Type: application/octet-stream' --data-binary '@%s'", path);
    int code = curl_req(&c->node[0], "POST", "/v1/bases/mlp", extra, &body, NULL);
    CHECK_MSG(code == 201, "base import answered %d: %s", code, body);
    free(body);
}

static void cluster_start(mn_cluster *c, const char *location)
{
    cluster_start_readers(c, location, NODES);
}

/* POSTs a training of task with the CSV at csv to node d; returns the job id. */
static long long submit_train(const daemon_proc *d, const char *task, const char *csv, const char *query)
{
    char path[256], extra[700], *body = NULL;
    snprintf(path, sizeof path, "/v1/tasks/%s/train?%s", task, query);
    snprintf(extra, sizeof extra, "-H 'Content-Type: text/csv' --data-binary '@%s'", csv);
    int code = curl_req(d, "POST", path, extra, &body, NULL);
    CHECK_MSG(code == 202, "train answered %d: %s", code, body);
    json_t *j = json_or_fail(body);
    long long id = (long long)json_integer_value(json_object_get(j, "id"));
    json_decref(j);
    free(body);
    return id;
}

/* The index of the node that runs or ran the job (node ids are n0, n1, ...), -1 for none. */
static int node_of(json_t *job)
{
    const char *node = json_string_value(json_object_get(job, "node"));
    return node && node[0] == 'n' && node[1] >= '0' && node[1] < '0' + NODES && !node[2] ? node[1] - '0' : -1;
}

/* Each task's versions are numbered 1..n without gaps or duplicates, each made by a different job; the
 * store passes its full check. Returns the number of versions. */
static int check_store(const char *db, const char *const *tasks, int n_tasks)
{
    clad_err e = {0};
    store *s = store_open_reader(db, &e);
    CHECK_MSG(s != NULL, "%s", e.msg);
    int total = 0;
    int64_t jobs_seen[64];
    for (int t = 0; t < n_tasks; t++) {
        store_version *v = NULL;
        size_t n = 0;
        CHECK_OK(store_versions_list(s, tasks[t], &v, &n, &e), e);
        for (size_t i = 0; i < n; i++) {
            CHECK_INT_EQ(v[i].version, (int64_t)i + 1);
            CHECK(v[i].job_id > 0);
            for (int k = 0; k < total; k++) CHECK_MSG(jobs_seen[k] != v[i].job_id, "job %lld made two versions",
                                                     (long long)v[i].job_id);
            if (total < 64) jobs_seen[total++] = v[i].job_id;
        }
        store_versions_free(v, n);
    }
    store_close(s);
    s = store_open(db, &e);
    CHECK_MSG(s != NULL, "%s", e.msg);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
    return total;
}

static void jobs_run_once_spread_over_nodes(const char *location)
{
    mn_cluster c;
    cluster_start(&c, location);
    daemon_proc *nodes = c.node;
    char csv[512];
    snprintf(csv, sizeof csv, "%s/train.csv", test_tmpdir());
    write_argmax_csv(csv, 200, FEATURES, 5);
    static const char *const tasks[] = {"t0", "t1", "t2", "t3"};
    long long ids[12];
    for (int i = 0; i < 12; i++) {
        char query[64];
        snprintf(query, sizeof query, "epochs=1&seed=%d", i + 1);
        ids[i] = submit_train(&nodes[i % NODES], tasks[i % 4], csv, query);
    }
    long ran_by[NODES] = {0};
    int n_nodes = 0;
    for (int i = 0; i < 12; i++) {
        /* Asked through another node than the one that accepted it: every node reads the store. */
        json_t *j = wait_final(&nodes[(i + 1) % NODES], ids[i], 240);
        CHECK_MSG(!strcmp(state_of(j), "succeeded"), "job %lld: %s", ids[i], json_dumps(j, 0));
        CHECK(json_integer_value(json_object_get(json_object_get(j, "result"), "version")) >= 1);
        CHECK_INT_EQ(json_integer_value(json_object_get(j, "attempt")), 1);
        int k = node_of(j);
        CHECK_MSG(k >= 0, "job %lld ran on an unknown node: %s", ids[i], json_dumps(j, 0));
        if (!ran_by[k]++) n_nodes++;
        json_decref(j);
    }
    printf("# jobs run per node: n0 %ld, n1 %ld, n2 %ld\n", ran_by[0], ran_by[1], ran_by[2]);
    CHECK_MSG(n_nodes > 1, "all 12 jobs ran on one node");
    CHECK_INT_EQ(check_store(location, tasks, 4), 12);
    /* The list reads the same through every node. */
    char *list[NODES];
    for (int k = 0; k < NODES; k++) {
        CHECK_INT_EQ(curl_req(&nodes[k], "GET", "/v1/jobs?state=succeeded", NULL, &list[k], NULL), 200);
        json_t *l = json_or_fail(list[k]);
        CHECK_INT_EQ(json_array_size(json_object_get(l, "jobs")), 12);
        json_decref(l);
        free(list[k]);
    }
    mn_stop(&c);
}

/* Predictions on node d keep answering (task t0, one row). */
static void check_predict(const daemon_proc *d)
{
    char *body = NULL;
    int code = curl_req(d, "POST", "/v1/tasks/t0/predict", "-H 'Content-Type: application/json' "
                        "-d '{\"inputs\": [[1,0,0,0,0,0,0,0]]}'", &body, NULL);
    CHECK_MSG(code == 200, "predict answered %d: %s", code, body);
    free(body);
}

static void killed_nodes_job_finished_by_another(const char *location)
{
    mn_cluster c;
    cluster_start(&c, location);
    daemon_proc *nodes = c.node;
    char csv[512], big[512];
    snprintf(csv, sizeof csv, "%s/train.csv", test_tmpdir());
    write_argmax_csv(csv, 200, FEATURES, 5);
    snprintf(big, sizeof big, "%s/big.csv", test_tmpdir());
    write_argmax_csv(big, 4000, FEATURES, 6);
    json_t *first = wait_final(&nodes[0], submit_train(&nodes[0], "t0", csv, "epochs=1"), 120);
    CHECK(!strcmp(state_of(first), "succeeded"));
    json_decref(first);
    /* A long training through node b; whoever runs it is killed while it trains. */
    double t0 = now_s();
    long long id = submit_train(&nodes[1], "t1", big, "epochs=1000"); /* ~3 s here */
    json_t *j = NULL;
    for (;;) {
        j = get_job(&nodes[2], id);
        if (!strcmp(state_of(j), "running")) break;
        CHECK_MSG(!strcmp(state_of(j), "queued") || !strcmp(state_of(j), "running"),
                  "job %lld ended before it could be killed: %s", id, json_dumps(j, 0));
        json_decref(j);
        sleep_ms(50);
    }
    int victim = node_of(j);
    json_decref(j);
    CHECK_MSG(victim >= 0, "job %lld runs on no node of ours", id);
    double killed_at = now_s();
    CHECK_INT_EQ(daemon_stop(&nodes[victim], SIGKILL, 10), 128 + SIGKILL);
    nodes[victim].pid = 0;
    int survivor = (victim + 1) % NODES;
    /* Predictions keep working on the surviving nodes while the job moves. */
    for (int k = 0; k < NODES; k++)
        if (k != victim) check_predict(&nodes[k]);
    j = wait_final(&nodes[survivor], id, 240);
    double done_at = now_s();
    CHECK_MSG(!strcmp(state_of(j), "succeeded"), "job %lld: %s", id, json_dumps(j, 0));
    CHECK(json_integer_value(json_object_get(j, "attempt")) >= 2);
    CHECK(node_of(j) >= 0 && node_of(j) != victim);
    json_decref(j);
    for (int k = 0; k < NODES; k++)
        if (k != victim) check_predict(&nodes[k]);
    printf("# killed %.1f s after the submit; finished by another node %.1f s after the kill (lease %d s)\n",
           killed_at - t0, done_at - killed_at, LEASE_S);
    static const char *const tasks[] = {"t0", "t1"};
    CHECK_INT_EQ(check_store(location, tasks, 2), 2);
    mn_stop(&c);
}

static void cancel_job(const daemon_proc *d, long long id)
{
    char path[64], *body = NULL;
    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    int code = curl_req(d, "DELETE", path, NULL, &body, NULL);
    CHECK_MSG(code == 200 || code == 202, "cancel answered %d: %s", code, body);
    free(body);
}

/* Tasks t0 and t1 trained through node d, for merging. */
static void train_sources(const daemon_proc *d)
{
    char csv[512];
    snprintf(csv, sizeof csv, "%s/train.csv", test_tmpdir());
    write_argmax_csv(csv, 200, FEATURES, 5);
    for (int i = 0; i < 2; i++) {
        json_t *j = wait_final(d, submit_train(d, i ? "t1" : "t0", csv, "epochs=1"), 120);
        CHECK_MSG(!strcmp(state_of(j), "succeeded"), "source training: %s", json_dumps(j, 0));
        json_decref(j);
    }
}

/* The merge job id, finished through node d by a node other than `not`: one version of merge "m". */
static void check_merge_done(const char *location, const daemon_proc *d, long long id, int not)
{
    json_t *j = wait_final(d, id, 240);
    CHECK_MSG(!strcmp(state_of(j), "succeeded"), "merge %lld: %s", id, json_dumps(j, 0));
    CHECK_MSG(node_of(j) >= 0 && node_of(j) != not, "merge %lld ran on n%d: %s", id, not, json_dumps(j, 0));
    CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(j, "result"), "version")), 1);
    printf("# merge accepted by n%d ran on n%d\n", not, node_of(j));
    json_decref(j);
    static const char *const merges[] = {"m"};
    CHECK_INT_EQ(check_store(location, merges, 1), 1);
}

/* A merge accepted by a node whose job slot is busy is run by a free node while that slot stays busy. */
static void merge_of_a_busy_node_run_by_another(const char *location)
{
    mn_cluster c;
    cluster_start(&c, location);
    train_sources(&c.node[0]);
    long long sleeper = mn_occupy_slot(&c.node[0], "d0");
    long long id = mn_submit_json(&c.node[0], "/v1/merges/m", "{\"tasks\": [\"t0\", \"t1\"], \"rank\": 4}");
    check_merge_done(location, &c.node[1], id, 0);
    json_t *s = get_job(&c.node[0], sleeper);
    CHECK_MSG(!strcmp(state_of(s), "running"), "the busy node's job: %s", json_dumps(s, 0));
    json_decref(s);
    cancel_job(&c.node[0], sleeper);
    mn_stop(&c);
}

/* A merge and a base training queued on a node that is SIGKILLed before they start (every node's slot
 * is busy, so none could take them earlier) are run by the others once their slots free up; the base
 * training's data is a file every node may read. */
static void queued_jobs_of_a_killed_node_run_by_another(const char *location)
{
    mn_cluster c;
    cluster_start(&c, location);
    daemon_proc *nodes = c.node;
    train_sources(&nodes[0]);
    char csv[512], spec[900];
    snprintf(csv, sizeof csv, "%s/base.csv", test_tmpdir());
    write_argmax_csv(csv, 100, FEATURES, 9);
    long long sleepers[NODES];
    for (int k = 0; k < NODES; k++) {
        char lane[8];
        snprintf(lane, sizeof lane, "d%d", k);
        sleepers[k] = mn_occupy_slot(&nodes[k], lane);
    }
    long long merge = mn_submit_json(&nodes[0], "/v1/merges/m", "{\"tasks\": [\"t0\", \"t1\"], \"rank\": 4}");
    snprintf(spec, sizeof spec, "{\"model\": {\"model\": \"mlp\", \"input_dim\": %d, \"hidden\": [8]}, "
             "\"data\": \"%s\", \"epochs\": 1}", FEATURES, csv);
    long long base = mn_submit_json(&nodes[0], "/v1/bases/mlp2", spec);
    long long queued[] = {merge, base};
    for (int i = 0; i < 2; i++) {
        json_t *j = get_job(&nodes[1], queued[i]);
        CHECK_MSG(!strcmp(state_of(j), "queued"), "job %lld before the kill: %s", queued[i], json_dumps(j, 0));
        json_decref(j);
    }
    CHECK_INT_EQ(daemon_stop(&nodes[0], SIGKILL, 10), 128 + SIGKILL);
    nodes[0].pid = 0;
    for (int k = 1; k < NODES; k++) cancel_job(&nodes[k], sleepers[k]);
    check_merge_done(location, &nodes[2], merge, 0);
    json_t *j = wait_final(&nodes[1], base, 240);
    CHECK_MSG(!strcmp(state_of(j), "succeeded"), "base training %lld: %s", base, json_dumps(j, 0));
    CHECK_MSG(node_of(j) > 0, "base training %lld ran on n0: %s", base, json_dumps(j, 0));
    json_decref(j);
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&nodes[2], "GET", "/v1/bases/mlp2", NULL, &body, NULL), 200);
    free(body);
    mn_stop(&c);
}

/* A base training from a file that only its accepting node may read, taken by another node while that
 * node is busy: it fails denied, naming the node that ran it. */
static void base_training_from_a_file_another_node_may_not_read(const char *location)
{
    mn_cluster c;
    cluster_start_readers(&c, location, 1);
    char csv[512], spec[900];
    snprintf(csv, sizeof csv, "%s/base.csv", test_tmpdir());
    write_argmax_csv(csv, 100, FEATURES, 9);
    long long sleeper = mn_occupy_slot(&c.node[0], "d0");
    snprintf(spec, sizeof spec, "{\"model\": {\"model\": \"mlp\", \"input_dim\": %d, \"hidden\": [8]}, "
             "\"data\": \"%s\", \"epochs\": 1}", FEATURES, csv);
    long long id = mn_submit_json(&c.node[0], "/v1/bases/mlp2", spec);
    json_t *j = wait_final(&c.node[1], id, 120);
    json_t *error = json_object_get(j, "error");
    const char *msg = json_string_value(json_object_get(error, "message"));
    char node[16];
    snprintf(node, sizeof node, "node n%d", node_of(j));
    CHECK_MSG(!strcmp(state_of(j), "failed") && node_of(j) > 0, "base training %lld: %s", id, json_dumps(j, 0));
    CHECK_STR_EQ(json_string_value(json_object_get(error, "code")), "denied");
    CHECK_MSG(msg && strstr(msg, node), "the error names no node: %s", json_dumps(j, 0));
    json_decref(j);
    cancel_job(&c.node[0], sleeper);
    mn_stop(&c);
}

/* Each test twice: `name` on an SQLite file and `name_pg` on PostgreSQL database pgdb. */
#define QUEUE_TEST(name, fn, pgdb)                                                                        \
    TEST_TIMEOUT(name, 300)                                                                               \
    {                                                                                                     \
        char location[512];                                                                               \
        store_location(false, NULL, location, sizeof location);                                           \
        fn(location);                                                                                     \
    }                                                                                                     \
    TEST_TIMEOUT(name##_pg, 300)                                                                          \
    {                                                                                                     \
        char location[512];                                                                               \
        store_location(true, pgdb, location, sizeof location);                                            \
        fn(location);                                                                                     \
    }

QUEUE_TEST(daemon_queue_jobs_from_every_node_run_once_spread_over_nodes, jobs_run_once_spread_over_nodes,
           "queue_spread")
QUEUE_TEST(daemon_queue_job_of_a_killed_node_is_finished_by_another, killed_nodes_job_finished_by_another,
           "queue_kill")
QUEUE_TEST(daemon_queue_merge_of_a_busy_node_is_run_by_another, merge_of_a_busy_node_run_by_another, "queue_merge")
QUEUE_TEST(daemon_queue_queued_jobs_of_a_killed_node_are_run_by_another, queued_jobs_of_a_killed_node_run_by_another,
           "queue_kill_queued")
QUEUE_TEST(daemon_queue_base_training_from_a_file_another_node_may_not_read,
           base_training_from_a_file_another_node_may_not_read, "queue_base_denied")
