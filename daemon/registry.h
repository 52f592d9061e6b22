/* The daemon's in-memory cache of loaded base models and adapter versions.
 *
 * Loading happens on the loop thread (it reads the store); workers use what they were handed while they
 * hold a reference. Entries are immutable once loaded (versions are immutable in the store), so workers
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

#endif
