/* Cache of loaded bases and adapters; see registry.h. */
#include "daemon/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/model_io.h"
#include "io/signature_io.h"

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct registry {
    loaded_base **bases;
    size_t n_bases, cap_bases;
    loaded_adapter **adapters;
    size_t n_adapters, cap_adapters;
    size_t budget, adapter_bytes;
    size_t base_budget, base_bytes;
    uint64_t clock, hits, misses;
};

registry *registry_create(size_t adapter_budget_bytes, size_t base_budget_bytes)
{
    registry *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->budget = adapter_budget_bytes;
    r->base_budget = base_budget_bytes;
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

static void adapter_entry_free(registry *r, loaded_adapter *la)
{
    r->adapter_bytes -= la->bytes;
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
            adapter_destroy(la->a);
            route_stats_finish(&la->route);
            free(la);
            r->adapters[i] = NULL;
        }
    for (size_t i = 0; i < r->n_bases; i++) {
        model_destroy(r->bases[i]->m);
        free(r->bases[i]);
    }
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

int registry_base_get(registry *r, store *s, const char *name, loaded_base **out, clad_err *err)
{
    loaded_base *b = find_base(r, name);
    if (!b) {
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
        b = base_insert(r, name, sb->weights_sha256, m);
        store_base_free(sb);
    }
    b->refs++;
    b->last_used = ++r->clock;
    b->last_used_ms = wall_ms();
    evict(r);
    *out = b;
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
    model_destroy(lb->m);
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

int registry_adapter_get(registry *r, store *s, const char *task, int64_t version, loaded_adapter **out,
                         clad_err *err)
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
            *out = la;
            return 0;
        }
    }
    r->misses++;
    store_task *t = NULL;
    store_version *v = NULL;
    loaded_base *b = NULL;
    int rc = store_task_get(s, task, &t, err);
    if (!rc) rc = store_version_get(s, task, version, STORE_WITH_BLOB, &v, err);
    if (!rc) rc = registry_base_get(r, s, t->base, &b, err);
    adapter *a = NULL;
    loaded_adapter *deps[FUSION_MAX_SOURCES];
    int n_deps = 0;
    if (!rc && !strcmp(v->kind, "fusion")) {
        /* Sources first: the fusion adapter borrows their weights. */
        char names[FUSION_MAX_SOURCES][PARAM_NAME_MAX];
        int n = 0;
        rc = adapter_file_sources(v->adapter, v->adapter_size, names, &n, err);
        const adapter *srcs[FUSION_MAX_SOURCES];
        for (int i = 0; !rc && i < n; i++) {
            char *at = strrchr(names[i], '@');
            if (!at) {
                rc = clad_err_set(err, CLAD_ECORRUPT, "fusion source '%s' does not name a version", names[i]);
                break;
            }
            *at = '\0';
            rc = registry_adapter_get(r, s, names[i], strtoll(at + 1, NULL, 10), &deps[n_deps], err);
            if (!rc) srcs[n_deps] = deps[n_deps]->a, n_deps++;
        }
        if (!rc && !(a = adapter_fusion_from_buffer(b->m, v->adapter, v->adapter_size, srcs, n, err))) rc = err->code;
        if (rc) {
            for (int i = 0; i < n_deps; i++) registry_adapter_release(r, deps[i]);
            n_deps = 0;
        }
    } else if (!rc) {
        a = adapter_from_buffer(b->m, v->adapter, v->adapter_size, err);
        if (!a) {
            clad_err_prefix(err, "loading version %lld of task '%s': ", (long long)version, task);
            rc = err ? err->code : CLAD_ECORRUPT;
        }
    }
    if (rc) {
        registry_base_release(r, b);
        store_version_free(v);
        store_task_free(t);
        return rc;
    }
    loaded_adapter *la = calloc(1, sizeof *la);
    if (!la) abort();
    snprintf(la->task, sizeof la->task, "%s", task);
    snprintf(la->kind, sizeof la->kind, "%s", v->kind);
    la->version = version;
    la->a = a;
    la->base = b;
    b->cache_refs++;
    la->bytes = a->params.total * sizeof(float) + sizeof *a;
    /* Versions trained before routing existed, and fusions, carry no statistics: they are not routed to. */
    if (route_stats_from_blob(&la->route, b->m, v->adapter, v->adapter_size, NULL) == 0)
        la->bytes += route_stats_bytes(&la->route);
    la->refs = 1;
    la->last_used = ++r->clock;
    la->last_used_ms = wall_ms();
    memcpy(la->deps, deps, (size_t)n_deps * sizeof *deps);
    la->n_deps = n_deps;
    r->adapters = ptrs_reserve(r->adapters, r->n_adapters, &r->cap_adapters);
    r->adapters[r->n_adapters++] = la;
    r->adapter_bytes += la->bytes;
    store_version_free(v);
    store_task_free(t);
    evict(r);
    *out = la;
    return 0;
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

void registry_get_stats(const registry *r, registry_stats *st)
{
    memset(st, 0, sizeof *st);
    st->bases = r->n_bases;
    st->adapters = r->n_adapters;
    st->adapter_bytes = r->adapter_bytes;
    st->base_bytes = r->base_bytes;
    st->adapter_hits = r->hits;
    st->adapter_misses = r->misses;
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
