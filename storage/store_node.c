/* Nodes sharing one store: each cladd registers itself at startup and keeps its row fresh with a
 * heartbeat, so every node can list the others and tell the live from the dead (docs/SCALING.md).
 * Heartbeats are not audited: like job progress, they are not state changes. */
#include "storage/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODE_COLUMNS "id, host, state_dir, socket, version, pid, started_ms, last_seen_ms, stopped_ms, running_jobs"

static void node_from_row(db_stmt *st, store_node *n)
{
    memset(n, 0, sizeof *n);
    col_copy(st, 0, n->id, sizeof n->id);
    col_copy(st, 1, n->host, sizeof n->host);
    col_copy(st, 2, n->state_dir, sizeof n->state_dir);
    col_copy(st, 3, n->socket, sizeof n->socket);
    col_copy(st, 4, n->version, sizeof n->version);
    n->pid = col_int64(st, 5);
    n->started_ms = col_int64(st, 6);
    n->last_seen_ms = col_int64(st, 7);
    n->stopped_ms = col_int64(st, 8); /* NULL reads as 0 */
    n->running_jobs = col_int64(st, 9);
}

int store_node_claim(store *s, const store_node *n, int64_t live_ms, clad_err *err)
{
    int rc = check_name(n->id, "node", err);
    if (rc || (rc = tx_begin_write(s, err))) return rc;
    int64_t now = now_ms();
    db_stmt *st = NULL;
    rc = st_prepare(s, &st, err, "SELECT " NODE_COLUMNS " FROM nodes WHERE id = ?1", "t", n->id);
    if (rc == 0 && (rc = st_step(s, st, err)) == 1) {
        store_node old;
        node_from_row(st, &old);
        rc = 0;
        /* The same host and state directory is this node restarted (the state directory's lock says the
         * old process is gone); anything else still beating is another node with our name. */
        bool same = !strcmp(old.host, n->host) && !strcmp(old.state_dir, n->state_dir);
        if (!same && !old.stopped_ms && now - old.last_seen_ms < live_ms)
            rc = clad_err_set(err, CLAD_ECONFLICT,
                              "node id '%s' is in use by a live node (host %s, pid %lld, state directory %s); "
                              "give this node another node_id", n->id, old.host, (long long)old.pid, old.state_dir);
    }
    st_finalize(st);
    if (rc == 0)
        rc = st_exec(s, err,
                     "INSERT INTO nodes (" NODE_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, NULL, 0) "
                     "ON CONFLICT (id) DO UPDATE SET host = excluded.host, state_dir = excluded.state_dir, "
                     "socket = excluded.socket, version = excluded.version, pid = excluded.pid, "
                     "started_ms = excluded.started_ms, last_seen_ms = excluded.last_seen_ms, stopped_ms = NULL, "
                     "running_jobs = 0",
                     "tttttII", n->id, n->host, n->state_dir, n->socket, n->version, n->pid, now);
    return tx_end(s, rc, err);
}

/* The heartbeat and the stop are one statement each, outside the store's write transactions: on
 * PostgreSQL those are serialised across all nodes, and a heartbeat must not wait behind another node's
 * large commit (it touches only its own row). */
int store_node_beat(store *s, const char *id, int64_t running_jobs, clad_err *err)
{
    int rc = check_writable(s, err);
    if (rc) return rc;
    rc = st_exec(s, err, "UPDATE nodes SET last_seen_ms = ?2, running_jobs = ?3 WHERE id = ?1", "tII", id,
                 now_ms(), running_jobs);
    if (rc == 0 && st_changes(s) == 0)
        rc = clad_err_set(err, CLAD_ENOTFOUND, "node '%s' is not registered in the store", id);
    return rc;
}

int store_node_stopped(store *s, const char *id, clad_err *err)
{
    int rc = check_writable(s, err);
    if (rc) return rc;
    return st_exec(s, err, "UPDATE nodes SET last_seen_ms = ?2, stopped_ms = ?2, running_jobs = 0 WHERE id = ?1",
                   "tI", id, now_ms());
}

int store_nodes_list(store *s, int64_t since_ms, store_node **out, size_t *n, clad_err *err)
{
    *out = NULL;
    *n = 0;
    db_stmt *st;
    int rc = st_prepare(s, &st, err, "SELECT " NODE_COLUMNS " FROM nodes WHERE last_seen_ms >= ?1 ORDER BY id",
                        "I", since_ms);
    if (rc) return rc;
    row_list rows = ROW_LIST_INIT(store_node);
    store_node *r;
    while (rc == 0 && (r = st_step_append(s, st, &rows, "listing nodes", &rc, err))) node_from_row(st, r);
    st_finalize(st);
    if (rc < 0) {
        free(rows.items);
        return rc;
    }
    *out = rows.items;
    *n = rows.n;
    return 0;
}

void store_nodes_free(store_node *n)
{
    free(n);
}
