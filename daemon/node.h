/* This daemon as one node among several sharing a store (docs/SCALING.md).
 *
 * A node registers itself in the store's `nodes` table at startup (refused if another live node uses its
 * id), writes a heartbeat every NODE_BEAT_MS (last seen, running jobs), and follows the store's change
 * feed: every change another node commits that touches what this node caches (a deleted version, task
 * or base, a base or task created again under an old name) drops those cache entries, so the next
 * request reads the store. Alias moves need no dropping (requests resolve aliases in the store), but
 * they are followed too so the feed's lag can be measured. On PostgreSQL the node LISTENs on a connection
 * of its own (watched by a uv_poll handle) and reads the feed when notified, polling every
 * NODE_POLL_NOTIFY_MS in case a notification is lost; on SQLite it polls every NODE_POLL_MS. The same
 * connection LISTENs for new jobs (clad_jobs): a notification runs the job claim tick at once
 * (job_claim_kick) rather than at its next poll. If
 * rows were pruned before this node read them (it was stopped or stalled for long), it drops its whole
 * cache. A node whose heartbeat is older than NODE_DEAD_MS is reported dead.
 *
 * Loop thread only; the timers are embedded in the node and closed by node_stop.
 */
#ifndef CLAD_DAEMON_NODE_H
#define CLAD_DAEMON_NODE_H

#include <jansson.h>
#include <stdint.h>

#include "core/error.h"

#define NODE_BEAT_MS 1000
#define NODE_DEAD_MS 5000
#define NODE_POLL_MS 250           /* staleness bound of the feed on SQLite */
#define NODE_POLL_NOTIFY_MS 1000   /* on PostgreSQL, where LISTEN/NOTIFY delivers changes at once */
#define NODE_SHOWN_MS 3600000      /* dead and stopped nodes stay listed this long */
#define NODE_PRUNE_EVERY 60        /* heartbeats between prunes of the feed */
#define NODE_FEED_KEEP_ROWS 10000  /* the feed keeps at most this many rows ... */
#define NODE_FEED_KEEP_MS 3600000  /* ... and none older than this */
#define NODE_ROW_KEEP_MS (7 * 86400000LL) /* a node row not seen for a week is deleted */

struct cladd;
typedef struct node node;

/* Registers app as a node (app->cfg.node_id) in app->st and starts the heartbeat and the feed. Call after
 * app_store_open. CLAD_ECONFLICT when another live node has the id. */
int node_start(struct cladd *app, node **out, clad_err *err);
/* Records a clean stop in the store and closes the timers (the node is freed in their close callbacks).
 * Accepts NULL. */
void node_stop(node *n);

/* The id of the newest change of the feed this node has applied (0 for NULL): caches of query results
 * that other nodes' writes can make stale compare it along with store_change_mark. */
int64_t node_last_change(const node *n);

/* {"node": {...this node...}, "nodes": [...every node seen within NODE_SHOWN_MS...]} for /v1/status;
 * each node has id, host, pid, socket, state_dir, version, started_ms, last_seen_ms, stopped_ms,
 * running_jobs, state ("live", "dead" or "stopped") and self. This node's entry also has its feed:
 * last change id, changes applied, cache drops and the lag of the last change from another node. */
json_t *node_status_json(node *n);

#endif
