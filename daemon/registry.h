/* The daemon's in-memory cache of loaded base models and adapter versions.
 *
 * Loading happens on the loop thread (it reads the store); workers use what they were handed while they
 * hold a reference. Entries are immutable once loaded (versions are immutable in the store), so workers
 * read them without locks. A rollback changes which version a task's alias resolves to, never an
 * entry: a prediction that already holds the old adapter finishes with it, the next one gets the new
 * one, and nothing is ever seen half-changed.
 *
 * Adapters are evicted least-recently-used beyond a byte budget, but never while referenced. Every
 * function here runs on the loop thread.
 */
#ifndef CLAD_DAEMON_REGISTRY_H
#define CLAD_DAEMON_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "core/model.h"
#include "core/route.h"
#include "storage/store.h"

typedef struct loaded_base {
    char name[STORE_NAME_MAX + 1];
    char sha256[SHA256_HEX_SIZE];
    model *m;
    int refs;
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
    struct loaded_adapter *deps[FUSION_MAX_SOURCES]; /* a fusion version's sources, referenced while loaded */
    int n_deps;
    route_stats route;  /* the version's routing statistics; route.dim == 0: it has none */
} loaded_adapter;

typedef struct registry registry;

registry *registry_create(size_t adapter_budget_bytes);
void registry_destroy(registry *r);  /* every reference must have been released */

/* A base model by name: from the cache, or loaded from the store (weights checked by sha256).
 * The caller owns one reference. */
int registry_base_get(registry *r, store *s, const char *name, loaded_base **out, clad_err *err);
void registry_base_release(registry *r, loaded_base *b);
/* Adds a base the daemon just created (takes ownership of m), so it need not be reloaded. */
int registry_base_add(registry *r, const char *name, const char *sha256, model *m, clad_err *err);

/* An adapter version: from the cache, or loaded from the store (blob checked by sha256). A fusion
 * version loads its source versions first (named "task@version" in its file). */
int registry_adapter_get(registry *r, store *s, const char *task, int64_t version, loaded_adapter **out,
                         clad_err *err);
void registry_adapter_release(registry *r, loaded_adapter *a);

typedef struct registry_stats {
    size_t bases, adapters, adapter_bytes, base_bytes;
    uint64_t adapter_hits, adapter_misses;
} registry_stats;
void registry_get_stats(const registry *r, registry_stats *st);

#endif
