/* clad-bench nodes: prediction requests per second with three nodes (cladd processes on one store,
 * docs/SCALING.md) against one node, with the same clients in total.
 *
 * Starts node a on a shared store (an SQLite file in a temporary directory, or the empty database given
 * with --store, such as a postgresql:// URI), imports a random mlp base, trains one task, and runs
 * `clients` prediction clients against it for a few seconds; then starts nodes b and c on the same store
 * and spreads the same number of clients over the three sockets. On one machine the nodes share its
 * cores, so the ratio says what the store and the extra processes cost rather than what more machines
 * would gain. The database's own overhead per commit and per rollback is `clad-bench store`.
 */
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_daemon.h"
#include "core/model.h"
#include "io/model_io.h"

#define NODES 3

static int die(const char *what)
{
    fprintf(stderr, "clad-bench nodes: %s\n", what);
    return 1;
}

/* clients processes, client k on node k % n_nodes, predicting for `seconds`: requests per second. */
static double throughput(const bench_daemon *nodes, int n_nodes, int clients, double seconds, const char *body)
{
    int fds[2];
    pid_t pids[64];
    if (clients > 64 || pipe(fds)) return -1;
    for (int k = 0; k < clients; k++) {
        if ((pids[k] = fork()) == 0) {
            close(fds[0]);
            long done = 0;
            double t0 = bench_now();
            while (bench_now() - t0 < seconds)
                done += bench_daemon_call(&nodes[k % n_nodes], "POST", "/v1/tasks/t0/predict?probs=0",
                                          "application/json", body, strlen(body), NULL) == 200;
            if (write(fds[1], &done, sizeof done) != sizeof done) _exit(1);
            _exit(0);
        }
    }
    close(fds[1]);
    long total = 0, one;
    while (read(fds[0], &one, sizeof one) == sizeof one) total += one;
    close(fds[0]);
    for (int k = 0; k < clients; k++) waitpid(pids[k], NULL, 0);
    return (double)total / seconds;
}

int bench_nodes_main(int argc, char **argv)
{
    bool json = false, quick = false;
    const char *location = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--store") && i + 1 < argc) location = argv[++i];
        else {
            fprintf(stderr, "usage: clad-bench nodes [--quick] [--json] [--store EMPTY-STORE]\n");
            return 2;
        }
    }
    char dir[] = "/tmp/clad-bench-nodes-XXXXXX", store[PATH_MAX], base[PATH_MAX], data[PATH_MAX];
    if (!mkdtemp(dir)) return die("mkdtemp failed");
    snprintf(store, sizeof store, "%s", location ? location : "");
    if (!location) snprintf(store, sizeof store, "%s/shared.db", dir);
    snprintf(base, sizeof base, "%s/base.safetensors", dir);
    snprintf(data, sizeof data, "%s/task.safetensors", dir);
    const char *args[] = {"--store", store, NULL};
    bench_daemon nodes[NODES];
    memset(nodes, 0, sizeof nodes);
    if (bench_daemon_start_args(&nodes[0], "nodes-a", "node_id = a\n", NULL, args)) return die("node a did not start");

    model_config cfg;
    model_config_preset(&cfg, "mlp", NULL);
    model *m = model_create(&cfg, NULL);
    model_init_random(m, 1);
    if (model_save(m, base, NULL)) return die("cannot write the base");
    model_destroy(m);
    if (bench_write_images(data, 300, 1)) return die("cannot write task data");
    char *buf = NULL, *reply = NULL;
    size_t len = 0;
    bench_read_file(base, &buf, &len);
    int st = bench_daemon_call(&nodes[0], "POST", "/v1/bases/mlp", "application/octet-stream", buf, len, NULL);
    free(buf);
    if (st != 201) return die("base import failed");
    bench_read_file(data, &buf, &len);
    st = bench_daemon_call(&nodes[0], "POST", "/v1/tasks/t0/train?follow=1&epochs=1", "application/octet-stream",
                           buf, len, &reply);
    bool trained = st == 202 && reply && strstr(reply, "\"state\":\"succeeded\"");
    free(buf);
    free(reply);
    if (!trained) return die("training the task failed");

    json_t *row = json_array();
    for (int k = 0; k < cfg.input_dim; k++) json_array_append_new(row, json_real(0.5));
    json_t *req = json_pack("{s:[o]}", "inputs", row);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int clients = 12;
    double seconds = quick ? 1.0 : 4.0;
    double one = throughput(nodes, 1, clients, seconds, body);
    static const char *const configs[NODES] = {"node_id = a\n", "node_id = b\n", "node_id = c\n"};
    for (int i = 1; i < NODES; i++) {
        char name[16];
        snprintf(name, sizeof name, "nodes-%c", 'a' + i);
        if (bench_daemon_start_args(&nodes[i], name, configs[i], NULL, args)) return die("a node did not start");
    }
    for (int i = 0; i < NODES; i++) throughput(nodes, NODES, NODES, 0.2, body); /* each node loads t0 */
    double three = throughput(nodes, NODES, clients, seconds, body);
    free(body);
    for (int i = 0; i < NODES; i++) {
        bench_daemon_stop(&nodes[i]);
        bench_daemon_remove(&nodes[i]);
    }
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) {}
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (json)
        printf("{\"store\":\"%s\",\"clients\":%d,\"seconds\":%.1f,\"cpus\":%ld,\"one_node_rps\":%.1f,\"three_nodes_rps\":%.1f,"
               "\"ratio\":%.3f}\n", location ? "given" : "sqlite", clients, seconds, cpus, one, three, one > 0 ? three / one : 0.0);
    else
        printf("predictions/s with %d clients on %ld CPUs: one node %.1f, three nodes on one store %.1f (x%.2f)\n",
               clients, cpus, one, three, one > 0 ? three / one : 0.0);
    return 0;
}
