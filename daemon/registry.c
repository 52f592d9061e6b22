/* Cache of loaded bases and adapters; see registry.h. */
#include "daemon/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fold.h"
#include "io/model_io.h"
#include "io/signature_io.h"
#include "daemon/log.h"
#include "daemon/version_compose.h"

/* Idle prediction workspaces kept: one per compute thread of cladd's default (compute_threads = 2). A
 * vit-tiny workspace takes about 0.85 MB per sample of its batch, so more idle ones cost memory for
 * nothing. */
#define REGISTRY_WS_IDLE 2

struct registry {
    loaded_base **bases;
    size_t n_bases, cap_bases;
    loaded_adapter **adapters;
    size_t n_adapters, cap_adapters;
    size_t budget, adapter_bytes;
    size_t base_budget, base_bytes;
    uint64_t clock, hits, misses, waits;
    ws_pool *ws;
};

registry *registry_create(size_t adapter_budget_bytes, size_t base_budget_bytes)
{
    registry *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->budget = adapter_budget_bytes;
    r->base_budget = base_budget_bytes;
    r->ws = ws_pool_create(REGISTRY_WS_BATCH, REGISTRY_WS_IDLE);
    if (!r->ws) abort();
    return r;
}

/* Makes room for one more pointer in a growing array (bookkeeping: aborts when out of memory). */
static void *ptrs_reserve(void *arr, size_t n, size_t *cap)
{
    if (n < *cap) return arr;
    *cap = *cap ? 2 * *cap : 16;
    void **grown = realloc(arr, *cap * sizeof *grown);
    if (!grown) abort();
    return grown;
}

/* Frees a model after dropping its idle workspaces (a later model at the same address must not match). */
static void model_free(registry *r, model *m)
{
    if (!m) return;
    ws_pool_forget_model(r->ws, m);
    model_destroy(m);
}

static void adapter_entry_free(registry *r, loaded_adapter *la)
{
    r->adapter_bytes -= la->bytes;
    model_free(r, la->folded);
    adapter_destroy(la->a);
    route_stats_finish(&la->route);
    for (int i = 0; i < la->n_deps; i++) la->deps[i]->refs--;
    la->base->cache_refs--;
    la->base->refs--;
    free(la);
}

void registry_destroy(registry *r)
{
    if (!r) return;
    /* Fusion entries first (they borrow their sources' weights), then the rest; references between
     * entries no longer matter. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < r->n_adapters; i++) {
            loaded_adapter *la = r->adapters[i];
            if (!la || (pass == 0) != (la->n_deps > 0)) continue;
            model_free(r, la->folded);
            adapter_destroy(la->a);
            route_stats_finish(&la->route);
            free(la);
            r->adapters[i] = NULL;
        }
    for (size_t i = 0; i < r->n_bases; i++) {
        model_free(r, r->bases[i]->m);
        free(r->bases[i]);
    }
    ws_pool_destroy(r->ws);
    free(r->bases);
    free(r->adapters);
    free(r);
}

static loaded_base *find_base(registry *r, const char *name)
{
    for (size_t i = 0; i < r->n_bases; i++)
        if (!strcmp(r->bases[i]->name, name)) return r->bases[i];
    return NULL;
}

/* Adds an unreferenced entry for m (owned from now on) without evicting anything. */
static loaded_base *base_insert(registry *r, const char *name, const char *sha256, model *m)
{
    loaded_base *b = calloc(1, sizeof *b);
    if (!b) abort();
    snprintf(b->name, sizeof b->name, "%s", name);
    snprintf(b->sha256, sizeof b->sha256, "%s", sha256);
    b->m = m;
    b->bytes = m->params.total * sizeof(float);
    b->last_used = ++r->clock;
    b->last_used_ms = wall_ms();
    r->bases = ptrs_reserve(r->bases, r->n_bases, &r->cap_bases);
    r->bases[r->n_bases++] = b;
    r->base_bytes += b->bytes;
    return b;
}

static void evict(registry *r);

int registry_base_add(registry *r, const char *name, const char *sha256, model *m, clad_err *err)
{
    if (find_base(r, name)) {
        model_destroy(m);
        return clad_err_set(err, CLAD_ECONFLICT, "base '%s' is already loaded", name);
    }
    base_insert(r, name, sha256, m);
    evict(r);
    return 0;
}

/* Takes a reference for a caller. */
static loaded_base *base_hold(registry *r, loaded_base *b)
{
    b->refs++;
    b->last_used = ++r->clock;
    b->last_used_ms = wall_ms();
    evict(r);
    return b;
}

loaded_base *registry_base_lookup(registry *r, const char *name)
{
    loaded_base *b = find_base(r, name);
    return b ? base_hold(r, b) : NULL;
}

loaded_base *registry_base_insert(registry *r, const char *name, const char *sha256, model *m)
{
    loaded_base *b = find_base(r, name);
    if (b) model_destroy(m);
    else b = base_insert(r, name, sha256, m);
    return base_hold(r, b);
}

int registry_base_read(store *s, const char *name, model **out, char sha256[SHA256_HEX_SIZE], clad_err *err)
{
    store_base *sb = NULL;
    int rc = store_base_get(s, name, STORE_WITH_BLOB, &sb, err);
    if (rc) return rc;
    model *m = NULL;
    if (sb->weights) {
        m = model_from_buffer(sb->weights, sb->weights_size, NULL, err);
    } else {
        clad_err_set(err, CLAD_ECORRUPT, "base '%s' has no stored weights", name);
    }
    if (!m) {
        clad_err_prefix(err, "loading base '%s': ", name);
        store_base_free(sb);
        return err ? err->code : CLAD_ECORRUPT;
    }
    memcpy(sha256, sb->weights_sha256, SHA256_HEX_SIZE);
    store_base_free(sb);
    *out = m;
    return 0;
}

void registry_base_release(registry *r, loaded_base *b)
{
    if (!b) return;
    b->refs--;
    evict(r);
}

static void adapter_remove_at(registry *r, size_t i)
{
    adapter_entry_free(r, r->adapters[i]);
    r->adapters[i] = r->adapters[--r->n_adapters];
}

/* The least-recently-used unreferenced adapter (whose base, when only_cache_held, is held by nothing
 * but cached adapters), or r->n_adapters when there is none. */
static size_t adapter_victim(const registry *r, bool only_cache_held)
{
    size_t victim = r->n_adapters;
    for (size_t i = 0; i < r->n_adapters; i++) {
        const loaded_adapter *la = r->adapters[i];
        if (la->refs || (only_cache_held && la->base->refs != la->base->cache_refs)) continue;
        if (victim == r->n_adapters || la->last_used < r->adapters[victim]->last_used) victim = i;
    }
    return victim;
}

/* The least-recently-used base nobody holds, or r->n_bases. */
static size_t base_victim(const registry *r)
{
    size_t victim = r->n_bases;
    for (size_t i = 0; i < r->n_bases; i++)
        if (!r->bases[i]->refs && (victim == r->n_bases || r->bases[i]->last_used < r->bases[victim]->last_used))
            victim = i;
    return victim;
}

static void base_remove_at(registry *r, size_t i)
{
    loaded_base *lb = r->bases[i];
    r->base_bytes -= lb->bytes;
    model_free(r, lb->m);
    free(lb);
    r->bases[i] = r->bases[--r->n_bases];
}

/* Drops forgotten adapters and bases nobody holds, then least-recently-used unreferenced adapters until
 * they fit their budget, then bases until they fit theirs: a free base first, else an adapter that is all
 * that keeps a base loaded (a fusion entry goes before its sources, which it holds). */
static void evict(registry *r)
{
    for (size_t i = r->n_adapters; i-- > 0;)
        if (r->adapters[i]->forgotten && !r->adapters[i]->refs) adapter_remove_at(r, i);
    for (size_t i = r->n_bases; i-- > 0;)
        if (!r->bases[i]->name[0] && !r->bases[i]->refs) base_remove_at(r, i);
    while (r->adapter_bytes > r->budget) {
        size_t victim = adapter_victim(r, false);
        if (victim == r->n_adapters) break; /* everything is in use */
        adapter_remove_at(r, victim);
    }
    while (r->base_bytes > r->base_budget) {
        size_t b = base_victim(r);
        if (b < r->n_bases) {
            base_remove_at(r, b);
            continue;
        }
        size_t a = adapter_victim(r, true);
        if (a == r->n_adapters) return; /* every base is in use */
        adapter_remove_at(r, a);
    }
}

int registry_version_read(store *s, const model *m, const char *task, int64_t version, store_version **v,
                          adapter **a, route_stats *route, char sources[][PARAM_NAME_MAX], int *n_sources,
                          clad_err *err)
{
    *a = NULL;
    *n_sources = 0;
    memset(route, 0, sizeof *route);
    int rc = store_version_get(s, task, version, STORE_WITH_BLOB, v, err);
    if (rc) return rc;
    if (!strcmp((*v)->kind, "fusion")) return adapter_file_sources((*v)->adapter, (*v)->adapter_size, sources, n_sources, err);
    if ((*a = version_adapter(s, m, *v, err))) {
        /* Versions trained before routing existed carry no statistics: they are not routed to. */
        if (route_stats_from_blob(route, m, (*v)->adapter, (*v)->adapter_size, NULL) != 0) {
            route_stats_finish(route);
            memset(route, 0, sizeof *route);
        }
        return 0;
    }
    clad_err_prefix(err, "loading version %lld of task '%s': ", (long long)version, task);
    return err ? err->code : CLAD_ECORRUPT;
}

int registry_source_split(char *name, int64_t *version, clad_err *err)
{
    char *at = strrchr(name, '@');
    if (!at) return clad_err_set(err, CLAD_ECORRUPT, "fusion source '%s' does not name a version", name);
    *at = '\0';
    *version = strtoll(at + 1, NULL, 10);
    return 0;
}

loaded_adapter *registry_adapter_lookup(registry *r, const char *task, int64_t version)
{
    for (size_t i = 0; i < r->n_adapters; i++) {
        loaded_adapter *la = r->adapters[i];
        if (la->version == version && !la->forgotten && !strcmp(la->task, task)) {
            la->refs++;
            la->last_used = ++r->clock;
            la->base->last_used = r->clock;
            la->last_used_ms = la->base->last_used_ms = wall_ms();
            la->hits++;
            r->hits++;
            return la;
        }
    }
    return NULL;
}

void registry_adapter_count(registry *r, bool waited)
{
    if (waited) r->waits++;
    else r->misses++;
}

loaded_adapter *registry_adapter_insert(registry *r, const char *task, int64_t version, const char *kind,
                                        adapter *a, route_stats *route, loaded_base *b,
                                        loaded_adapter *const *deps, int n_deps)
{
    loaded_adapter *la = calloc(1, sizeof *la);
    if (!la) abort();
    snprintf(la->task, sizeof la->task, "%s", task);
    snprintf(la->kind, sizeof la->kind, "%s", kind);
    la->version = version;
    la->a = a;
    la->base = b;
    b->cache_refs++;
    la->route = *route;
    memset(route, 0, sizeof *route);
    la->bytes = a->params.total * sizeof(float) + sizeof *a + (la->route.dim ? route_stats_bytes(&la->route) : 0);
    la->refs = 1;
    la->last_used = ++r->clock;
    la->last_used_ms = wall_ms();
    if (n_deps) memcpy(la->deps, deps, (size_t)n_deps * sizeof *deps); /* deps may be NULL without sources */
    la->n_deps = n_deps;
    r->adapters = ptrs_reserve(r->adapters, r->n_adapters, &r->cap_adapters);
    r->adapters[r->n_adapters++] = la;
    r->adapter_bytes += la->bytes;
    evict(r);
    return la;
}

void registry_adapter_release(registry *r, loaded_adapter *la)
{
    if (!la) return;
    la->refs--;
    evict(r);
}

void registry_adapter_forget(registry *r, const char *task, int64_t version)
{
    for (size_t i = 0; i < r->n_adapters; i++) {
        loaded_adapter *la = r->adapters[i];
        if (la->version == version && !strcmp(la->task, task)) la->forgotten = true;
    }
    evict(r);
}

bool registry_adapter_served(registry *r, loaded_adapter *la)
{
    (void)r;
    la->served++;
    bool foldable = !strcmp(la->kind, "lora") || !strcmp(la->kind, "tied");
    return foldable && la->served >= REGISTRY_FOLD_AFTER && !la->folded && !la->folding && !la->forgotten;
}

void registry_adapter_folded(registry *r, loaded_adapter *la, model *folded)
{
    la->folding = false;
    if (folded && !la->forgotten && !la->folded) {
        la->folded = folded;
        size_t bytes = folded->params.total * sizeof(float);
        la->bytes += bytes;
        r->adapter_bytes += bytes;
    } else {
        model_free(r, folded);
        if (!folded) la->served = 0; /* failed (out of memory): try again after as many predictions */
    }
    evict(r);
}

ws_pool *registry_ws_pool(registry *r)
{
    return r->ws;
}

void registry_get_stats(const registry *r, registry_stats *st)
{
    memset(st, 0, sizeof *st);
    for (size_t i = 0; i < r->n_adapters; i++)
        if (r->adapters[i]->folded) {
            st->folded++;
            st->folded_bytes += r->adapters[i]->folded->params.total * sizeof(float);
        }
    st->bases = r->n_bases;
    st->adapters = r->n_adapters;
    st->adapter_bytes = r->adapter_bytes;
    st->base_bytes = r->base_bytes;
    st->adapter_hits = r->hits;
    st->adapter_misses = r->misses;
    st->adapter_waits = r->waits;
}

const loaded_base *registry_base_at(const registry *r, size_t i)
{
    return i < r->n_bases ? r->bases[i] : NULL;
}

const loaded_adapter *registry_adapter_at(const registry *r, size_t i)
{
    return i < r->n_adapters ? r->adapters[i] : NULL;
}

void registry_forget_task(registry *r, const char *task)
{
    for (size_t i = 0; i < r->n_adapters; i++)
        if (!strcmp(r->adapters[i]->task, task)) r->adapters[i]->forgotten = true;
    evict(r);
}

void registry_forget_base(registry *r, const char *base)
{
    loaded_base *b = find_base(r, base);
    if (b) b->name[0] = '\0'; /* never matches a name again; freed once nobody holds it */
    evict(r);
}

void registry_forget_all(registry *r)
{
    for (size_t i = 0; i < r->n_adapters; i++) r->adapters[i]->forgotten = true;
    for (size_t i = 0; i < r->n_bases; i++) r->bases[i]->name[0] = '\0';
    evict(r);
}
