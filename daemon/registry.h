/* The daemon's in-memory cache of loaded base models and adapter versions.
 *
 * The lookups and inserts run on the loop thread; registry_load.h reads and deserializes what is not
 * cached on a worker with its own store reader, and registry_base_get and registry_adapter_get do the same
 * on the calling thread (tools and tests). Workers use what they were handed while they hold a reference. Entries are immutable once loaded (versions are immutable in the store), so workers
 * read them without locks. A rollback changes which version a task's alias resolves to, never an
 * entry: a prediction that already holds the old adapter finishes with it, the next one gets the new
 * one, and nothing is ever seen half-changed.
 *
 * Adapters and bases are evicted least-recently-used beyond a byte budget each, but never while
 * referenced. A cached adapter holds its base; a base over budget that only unreferenced cached adapters
 * hold goes with them (they are dropped first, least-recently-used first). Whatever
 * deletes a version from the store must call registry_adapter_forget, so the cache never serves what
 * the store no longer has. Alias moves (rollback, undo, set) need nothing: requests resolve aliases in
 * the store and the cache is keyed by version number, which is never reused. Every function here runs
 * on the loop thread.
 */
#ifndef CLAD_DAEMON_REGISTRY_H
#define CLAD_DAEMON_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"
#include "core/ws_pool.h"
#include "core/route.h"
#include "storage/store.h"

typedef struct loaded_base {
    char name[STORE_NAME_MAX + 1];
    char sha256[SHA256_HEX_SIZE];
    model *m;
    int refs;           /* all holders: requests, jobs and cached adapters */
    int cache_refs;     /* the part of refs held by cached adapter entries */
    size_t bytes;
    uint64_t last_used;  /* registry clock, for eviction */
    int64_t last_used_ms; /* Unix ms of the last use, for `clad ps` */
} loaded_base;

typedef struct loaded_adapter {
    char task[STORE_NAME_MAX + 1];
    int64_t version;
    char kind[8];
    adapter *a;
    loaded_base *base;  /* referenced for as long as the adapter is loaded */
    size_t bytes;
    int refs;
    uint64_t last_used;
    int64_t last_used_ms;   /* Unix ms of the last get, for `clad ps` */
    uint64_t hits;          /* gets served from the cache */
    struct loaded_adapter *deps[FUSION_MAX_SOURCES]; /* a fusion version's sources, referenced while loaded */
    int n_deps;
    bool forgotten;     /* deleted from the store: never handed out again, freed at its last release */
    /* Serving a hot version: after REGISTRY_FOLD_AFTER predictions a lora/tied entry gets the adapter
     * folded into a copy of its base (core/fold.h), counted in bytes, freed with the entry. Set on the
     * loop; a request reads it once, when it takes its reference. */
    model *folded;
    unsigned served;    /* predictions served while cached */
    bool folding;       /* a fold is running on a worker */
    route_stats route;  /* the version's routing statistics; route.dim == 0: it has none */
} loaded_adapter;

typedef struct registry registry;

/* Unreferenced entries are evicted beyond the budgets (bytes of adapter parameters, bytes of base
 * parameters); what is in use stays loaded whatever the budget. */
registry *registry_create(size_t adapter_budget_bytes, size_t base_budget_bytes);
void registry_destroy(registry *r);  /* every reference must have been released */

/* A base model by name: from the cache, or loaded from the store (weights checked by sha256).
 * The caller owns one reference. */
int registry_base_get(registry *r, store *s, const char *name, loaded_base **out, clad_err *err);
void registry_base_release(registry *r, loaded_base *b);
/* Adds a base the daemon just created, so it need not be reloaded. Takes ownership of m, also when it
 * fails (CLAD_ECONFLICT: a base of that name is loaded). */
int registry_base_add(registry *r, const char *name, const char *sha256, model *m, clad_err *err);

/* An adapter version: from the cache, or loaded from the store (blob checked by sha256). A fusion
 * version loads its source versions first (named "task@version" in its file). */
int registry_adapter_get(registry *r, store *s, const char *task, int64_t version, loaded_adapter **out,
                         clad_err *err);
void registry_adapter_release(registry *r, loaded_adapter *a);
/* The store deleted (task, version): drop it from the cache. A request that holds it finishes with it;
 * the next one loads from the store (and gets its 404). */
void registry_adapter_forget(registry *r, const char *task, int64_t version);

typedef struct registry_stats {
    size_t bases, adapters, adapter_bytes, base_bytes;
    size_t folded, folded_bytes;  /* folded entries and their models' bytes (part of adapter_bytes) */
    uint64_t adapter_hits, adapter_misses;
} registry_stats;
void registry_get_stats(const registry *r, registry_stats *st);

/* What is loaded, for listing: the i-th base or adapter (NULL past the end). Borrowed. */
const loaded_base *registry_base_at(const registry *r, size_t i);
const loaded_adapter *registry_adapter_at(const registry *r, size_t i);
/* After a task or base was deleted from the store: its entries are no longer found by name (so a new
 * task or base of that name loads afresh) and are freed once no request holds them. */
void registry_forget_task(registry *r, const char *task);
void registry_forget_base(registry *r, const char *base);
/* Forgets every entry, as the two above do for one: when the daemon cannot know what changed in the
 * store (it missed part of the change feed, daemon/node.h). */
void registry_forget_all(registry *r);
/* Prediction workspaces for every loaded model (bases and folded entries): the registry forgets a
 * model's workspaces before freeing it. Thread-safe (core/ws_pool.h); workspaces of REGISTRY_WS_BATCH. */
/* Batches of 16: most requests are small, a vit-tiny workspace costs about 0.85 MB per sample, and larger
 * requests run in chunks of 16 at nearly the same speed per sample. */
#define REGISTRY_WS_BATCH 16
ws_pool *registry_ws_pool(registry *r);

/* --- pieces for loading off the loop (daemon/registry_load.h) -------------------------------------- */

/* Reads base `name` from s and deserializes it (weights checked by sha256). Touches no registry: any
 * thread may call it with its own store handle. */
int registry_base_read(store *s, const char *name, model **m, char sha256[SHA256_HEX_SIZE], clad_err *err);
/* Reads version (task, version) from s (blob checked by sha256) into *v (the caller frees it) and
 * deserializes it against base m into *a and its routing statistics into *route (route->dim == 0: none,
 * as for versions trained before routing, and fusions); for a fusion version *a is NULL and
 * sources/n_sources name its source versions ("task@version", FUSION_MAX_SOURCES). Touches no registry,
 * like registry_base_read. */
int registry_version_read(store *s, const model *m, const char *task, int64_t version, store_version **v,
                          adapter **a, route_stats *route, char sources[][PARAM_NAME_MAX], int *n_sources,
                          clad_err *err);
/* Splits a fusion source "task@version" in place (name keeps the task). CLAD_ECORRUPT without '@'. */
int registry_source_split(char *name, int64_t *version, clad_err *err);

/* A cached base (one reference for the caller), or NULL. */
loaded_base *registry_base_lookup(registry *r, const char *name);
/* Caches m (owned from now on) as base `name` and returns one reference; if that base was loaded
 * meanwhile, m is destroyed and the cached one returned. */
loaded_base *registry_base_insert(registry *r, const char *name, const char *sha256, model *m);
/* A cached adapter (one reference), or NULL; counts a cache hit or miss. */
loaded_adapter *registry_adapter_lookup(registry *r, const char *task, int64_t version);
/* Caches a and *route (both owned from now on; *route is left zeroed) for (task, version) on base b, taking
 * the caller's references to b and to the n_deps source entries; returns one reference to the new entry. */
loaded_adapter *registry_adapter_insert(registry *r, const char *task, int64_t version, const char *kind,
                                        adapter *a, route_stats *route, loaded_base *b,
                                        loaded_adapter *const *deps, int n_deps);

/* Folding (see loaded_adapter): counts one prediction served by la and says whether la should now be
 * folded (the caller then marks la->folding, folds on a worker and calls registry_adapter_folded). */
#define REGISTRY_FOLD_AFTER 8
bool registry_adapter_served(registry *r, loaded_adapter *la);
/* Attaches a fold (owned from now on; NULL if it failed) and clears la->folding. */
void registry_adapter_folded(registry *r, loaded_adapter *la, model *folded);

#endif
