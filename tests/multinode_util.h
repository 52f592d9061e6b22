/* Helpers for the multi-node tests: several real cladd processes, each on its own socket and state
 * directory (<tmp>/n0, <tmp>/n1, ...; node ids n0, n1, ...), sharing one store given by location (an
 * SQLite file path or a postgresql:// URI), and a store filled with a small LoRA task before they start.
 */
#ifndef CLAD_TESTS_MULTINODE_UTIL_H
#define CLAD_TESTS_MULTINODE_UTIL_H

#include <jansson.h>
#include <stdbool.h>

#include "core/model.h"
#include "tests/daemon_util.h"

#define MN_MAX_NODES 4

typedef struct mn_cluster {
    int n;
    daemon_proc node[MN_MAX_NODES];
    char store[512];
} mn_cluster;

/* Starts n nodes on the shared store (every node with one BLAS thread and the test routes). */
void mn_start(mn_cluster *c, int n, const char *location);
/* mn_start with more config file lines for every node (NULL: none). */
void mn_start_config(mn_cluster *c, int n, const char *location, const char *config);
/* mn_start with more config file lines for each node: configs[i] for node i (NULL: none). */
void mn_start_configs(mn_cluster *c, int n, const char *location, const char *const *configs);
/* SIGTERM to every node still running; each must exit 0. */
void mn_stop(mn_cluster *c);

/* Fills the store at location with base "b" of config cfg and task "t" on it holding `versions` LoRA
 * versions (rank 2 on every hidden linear, differently seeded, non-zero B factors so each predicts
 * differently). `active` ends at the last one. */
void store_fill_lora(const char *location, const model_config *cfg, int versions);

/* POSTs a JSON body to path on node d; returns the job id (the answer must be 202). */
long long mn_submit_json(const daemon_proc *d, const char *path, const char *json);
/* A long sleep job on node d in a lane of its own, once it runs: d's one job slot is taken. Returns its
 * id (cancel it to free the slot). */
long long mn_occupy_slot(const daemon_proc *d, const char *lane);

/* GET /v1/status as JSON (fails the test unless 200). */
json_t *mn_status(const daemon_proc *d);
/* The state d reports for node id ("live", "dead", "stopped"), or "" when d does not list it (static). */
const char *mn_node_state(const daemon_proc *d, const char *id);
/* Waits up to timeout_s until d reports node id in state want; returns the seconds it took (fails the
 * test on timeout, showing d's node list). */
double mn_wait_node_state(const daemon_proc *d, const char *id, const char *want, double timeout_s);

#endif
