/* Cache of loaded bases and adapters; see registry.h. */
#include "daemon/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/model_io.h"
#include "io/signature_io.h"

#define REGISTRY_MAX_BASES 64

struct registry {
    loaded_base *bases[REGISTRY_MAX_BASES];
    size_t n_bases;
    loaded_adapter **adapters;
    size_t n_adapters, cap_adapters;
    size_t budget, adapter_bytes;
    uint64_t clock, hits, misses;
};

registry *registry_create(size_t adapter_budget_bytes)
{
    registry *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->budget = adapter_budget_bytes;
    return r;
}

static void adapter_entry_free(registry *r, loaded_adapter *la)
{
    r->adapter_bytes -= la->bytes;
    adapter_destroy(la->a);
    route_stats_finish(&la->route);
    for (int i = 0; i < la->n_deps; i++) la->deps[i]->refs--;
    registry_base_release(r, la->base);
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
    free(r->adapters);
    free(r);
}

static loaded_base *find_base(registry *r, const char *name)
{
    for (size_t i = 0; i < r->n_bases; i++)
        if (!strcmp(r->bases[i]->name, name)) return r->bases[i];
    return NULL;
}

int registry_base_add(registry *r, const char *name, const char *sha256, model *m, clad_err *err)
{
    if (find_base(r, name)) return clad_err_set(err, CLAD_ECONFLICT, "base '%s' is already loaded", name);
    if (r->n_bases == REGISTRY_MAX_BASES)
        return clad_err_set(err, CLAD_ETOOLARGE, "at most %d bases can be loaded", REGISTRY_MAX_BASES);
    loaded_base *b = calloc(1, sizeof *b);
    if (!b) abort();
    snprintf(b->name, sizeof b->name, "%s", name);
    snprintf(b->sha256, sizeof b->sha256, "%s", sha256);
    b->m = m;
    r->bases[r->n_bases++] = b;
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
        rc = registry_base_add(r, name, sb->weights_sha256, m, err);
        store_base_free(sb);
        if (rc) {
            model_destroy(m);
            return rc;
        }
        b = find_base(r, name);
    }
    b->refs++;
    *out = b;
    return 0;
}

void registry_base_release(registry *r, loaded_base *b)
{
    (void)r;
    if (b) b->refs--;
}

/* Drops least-recently-used unreferenced adapters until the cache fits its budget. */
static void evict(registry *r)
{
    while (r->adapter_bytes > r->budget) {
        size_t victim = r->n_adapters;
        for (size_t i = 0; i < r->n_adapters; i++)
            if (!r->adapters[i]->refs && (victim == r->n_adapters || r->adapters[i]->last_used < r->adapters[victim]->last_used))
                victim = i;
        if (victim == r->n_adapters) return; /* everything is in use */
        adapter_entry_free(r, r->adapters[victim]);
        r->adapters[victim] = r->adapters[--r->n_adapters];
    }
}

int registry_adapter_get(registry *r, store *s, const char *task, int64_t version, loaded_adapter **out,
                         clad_err *err)
{
    for (size_t i = 0; i < r->n_adapters; i++) {
        loaded_adapter *la = r->adapters[i];
        if (la->version == version && !strcmp(la->task, task)) {
            la->refs++;
            la->last_used = ++r->clock;
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
    la->bytes = a->params.total * sizeof(float) + sizeof *a;
    /* Versions trained before routing existed, and fusions, carry no statistics: they are not routed to. */
    if (route_stats_from_blob(&la->route, b->m, v->adapter, v->adapter_size, NULL) == 0)
        la->bytes += route_stats_bytes(&la->route);
    la->refs = 1;
    la->last_used = ++r->clock;
    memcpy(la->deps, deps, (size_t)n_deps * sizeof *deps);
    la->n_deps = n_deps;
    if (r->n_adapters == r->cap_adapters) {
        r->cap_adapters = r->cap_adapters ? 2 * r->cap_adapters : 16;
        r->adapters = realloc(r->adapters, r->cap_adapters * sizeof *r->adapters);
        if (!r->adapters) abort();
    }
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

void registry_get_stats(const registry *r, registry_stats *st)
{
    memset(st, 0, sizeof *st);
    st->bases = r->n_bases;
    st->adapters = r->n_adapters;
    st->adapter_bytes = r->adapter_bytes;
    for (size_t i = 0; i < r->n_bases; i++) st->base_bytes += r->bases[i]->m->params.total * sizeof(float);
    st->adapter_hits = r->hits;
    st->adapter_misses = r->misses;
}
