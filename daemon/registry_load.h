/* Loading bases and adapter versions into the registry off the event loop.
 *
 * A cache miss must not stall other clients: reading a blob (megabytes to gigabytes), checking its
 * sha256 and deserializing it run on a worker of the compute pool (job_queue_compute), each load with its
 * own read-only store handle (store_open_reader: SQLite handles are never shared between threads). The
 * loop inserts the result into the registry in the after-work callback, so the registry stays a
 * loop-thread structure with its invariants (references, budgets, forget) in registry.c. Concurrent
 * requests for the same base or version share one load: later ones wait for the first.
 *
 * An adapter load first gets its base (cached, or loaded the same way), then reads and deserializes the
 * version; a fusion version then gets its sources (each an adapter load) and is built on a worker. Before
 * inserting, the loop checks that the version is still in the store, so a version deleted while it loaded
 * is never cached (the waiting requests get a 404 saying it was deleted while it was being loaded, unless
 * they asked for what an alias names: registry_loader_alias follows the alias again).
 *
 * Every function here runs on the loop thread. Each get calls its callback exactly once: inside the call
 * on a cache hit, later otherwise; on success the callback owns one reference (release it with
 * registry_base_release / registry_adapter_release).
 */
#ifndef CLAD_DAEMON_REGISTRY_LOAD_H
#define CLAD_DAEMON_REGISTRY_LOAD_H

#include "daemon/jobs.h"
#include "daemon/registry.h"

typedef struct registry_loader registry_loader;

/* Loads for r through q's compute pool, reading db_path (copied); st is the loop's store handle, used
 * only for small metadata reads (a task's base, whether a version still exists). */
registry_loader *registry_loader_create(registry *r, job_queue *q, store *st, const char *db_path);
/* After the job queue's shutdown (no load in flight). Accepts NULL. */
void registry_loader_destroy(registry_loader *l);

typedef void (*registry_base_cb)(void *data, loaded_base *b, const clad_err *err);
/* How an adapter get found its entry: in the cache, by waiting for a load another get had started (a hit
 * after a wait: the store was read once for both), or by loading it. The registry counts the three
 * (registry_stats adapter_hits, adapter_waits, adapter_misses). */
typedef enum registry_found { REGISTRY_CACHED, REGISTRY_WAITED, REGISTRY_LOADED } registry_found;
typedef void (*registry_adapter_cb)(void *data, loaded_adapter *la, registry_found how, const clad_err *err);

void registry_loader_base(registry_loader *l, const char *name, registry_base_cb cb, void *data);
void registry_loader_adapter(registry_loader *l, const char *task, int64_t version, registry_adapter_cb cb,
                             void *data);

/* A get of the version an alias names, with the state it keeps until its callback (caller memory, e.g.
 * inside the request; task and alias must stay valid as long). */
typedef struct registry_alias_get {
    registry_loader *l;
    const char *task, *alias;
    int64_t version;             /* what the alias named when the get started, then when last followed */
    int follows;
    registry_adapter_cb cb;
    void *data;
} registry_alias_get;

/* registry_loader_adapter for `version`, which the caller read from `alias` of task: when that version is
 * deleted before it loads (a rollback or alias move and a delete racing the load), the alias is read again
 * and the version it names by then is loaded instead, at most REGISTRY_ALIAS_FOLLOWS times, so the request
 * is answered as if it had arrived a moment later rather than with a 404. */
#define REGISTRY_ALIAS_FOLLOWS 3
void registry_loader_alias(registry_loader *l, registry_alias_get *g, const char *task, const char *alias,
                           int64_t version, registry_adapter_cb cb, void *data);

/* Folds la on a worker once it has served enough predictions (registry_adapter_served); call after
 * each prediction la served. Holds a reference while it folds. */
void registry_loader_served(registry_loader *l, loaded_adapter *la);

/* Loads in flight (for tests and status). */
size_t registry_loader_pending(const registry_loader *l);

#endif
