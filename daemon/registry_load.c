/* Loading bases and adapter versions into the registry off the event loop; see registry_load.h. */
#include "daemon/registry_load.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fold.h"
#include "io/model_io.h"
#include "daemon/version_compose.h"

typedef struct waiter {
    registry_base_cb base_cb;       /* one of the two */
    registry_adapter_cb adapter_cb;
    void *data;
} waiter;                           /* the first waiter of a load started it; the others waited */

/* One load in flight: a base (is_base) or an adapter version, and everyone waiting for it. */
typedef struct load {
    registry_loader *l;
    struct load *next;
    bool is_base;
    char name[STORE_NAME_MAX + 1];  /* the base, or the version's task */
    int64_t version;
    waiter *w;
    size_t n_w, cap_w;
    /* adapter loads, on the loop: the base and (fusion) the sources, referenced */
    loaded_base *base;
    loaded_adapter *deps[FUSION_MAX_SOURCES];
    int n_deps;
    /* written by the worker, read on the loop after it */
    model *m;                       /* a base load's model */
    char sha256[SHA256_HEX_SIZE];
    store_version *v;
    adapter *a;
    route_stats route;              /* the version's routing statistics (dim 0: none) */
    char sources[FUSION_MAX_SOURCES][PARAM_NAME_MAX];
    int n_sources;
} load;

struct registry_loader {
    registry *r;
    job_queue *q;
    store *st;
    char db_path[PATH_MAX];
    load *head;
    size_t n;
};

registry_loader *registry_loader_create(registry *r, job_queue *q, store *st, const char *db_path)
{
    registry_loader *l = calloc(1, sizeof *l);
    if (!l) abort();
    l->r = r;
    l->q = q;
    l->st = st;
    snprintf(l->db_path, sizeof l->db_path, "%s", db_path);
    return l;
}

void registry_loader_destroy(registry_loader *l)
{
    free(l);
}

size_t registry_loader_pending(const registry_loader *l)
{
    return l->n;
}

static load *load_find(registry_loader *l, bool is_base, const char *name, int64_t version)
{
    for (load *ld = l->head; ld; ld = ld->next)
        if (ld->is_base == is_base && ld->version == version && !strcmp(ld->name, name)) return ld;
    return NULL;
}

static void load_wait(load *ld, waiter w)
{
    if (ld->n_w == ld->cap_w) {
        ld->cap_w = ld->cap_w ? 2 * ld->cap_w : 4;
        ld->w = realloc(ld->w, ld->cap_w * sizeof *ld->w);
        if (!ld->w) abort();
    }
    ld->w[ld->n_w++] = w;
}

static load *load_start(registry_loader *l, bool is_base, const char *name, int64_t version, waiter w)
{
    load *ld = calloc(1, sizeof *ld);
    if (!ld) abort();
    ld->l = l;
    ld->is_base = is_base;
    snprintf(ld->name, sizeof ld->name, "%s", name);
    ld->version = version;
    load_wait(ld, w);
    ld->next = l->head;
    l->head = ld;
    l->n++;
    return ld;
}

/* Unlinks ld and hands the result to every waiter: the first gets the caller's reference to the entry,
 * each other one its own, all taken before any callback runs (a callback may release its reference). */
static void load_finish(load *ld, loaded_base *b, loaded_adapter *la, const clad_err *err)
{
    registry_loader *l = ld->l;
    for (load **p = &l->head; *p; p = &(*p)->next)
        if (*p == ld) {
            *p = ld->next;
            l->n--;
            break;
        }
    for (size_t i = 1; i < ld->n_w; i++) {
        if (b) b->refs++;
        if (la) la->refs++;
    }
    for (size_t i = 0; i < ld->n_w; i++) {
        if (ld->is_base) ld->w[i].base_cb(ld->w[i].data, b, b ? NULL : err);
        else ld->w[i].adapter_cb(ld->w[i].data, la, i ? REGISTRY_WAITED : REGISTRY_LOADED, la ? NULL : err);
    }
    store_version_free(ld->v);
    route_stats_finish(&ld->route);
    free(ld->w);
    free(ld);
}

/* --- bases ------------------------------------------------------------------------------------------ */

static int base_work(void *arg, clad_err *err)
{
    load *ld = arg;
    store *rd = store_open_reader(ld->l->db_path, err);
    if (!rd) return err->code;
    int rc = registry_base_read(rd, ld->name, &ld->m, ld->sha256, err);
    store_close(rd);
    return rc;
}

static void base_done(void *arg, int status, const clad_err *err)
{
    load *ld = arg;
    loaded_base *b = status ? NULL : registry_base_insert(ld->l->r, ld->name, ld->sha256, ld->m);
    load_finish(ld, b, NULL, err);
}

void registry_loader_base(registry_loader *l, const char *name, registry_base_cb cb, void *data)
{
    loaded_base *b = registry_base_lookup(l->r, name);
    if (b) {
        cb(data, b, NULL);
        return;
    }
    waiter w = {.base_cb = cb, .data = data};
    load *ld = load_find(l, true, name, 0);
    if (ld) {
        load_wait(ld, w);
        return;
    }
    ld = load_start(l, true, name, 0, w);
    clad_err e = {0};
    if (job_queue_compute(l->q, base_work, base_done, ld, &e)) load_finish(ld, NULL, NULL, &e);
}

/* --- adapters --------------------------------------------------------------------------------------- */

/* Gives back what an adapter load holds and reports err to its waiters. */
static void adapter_fail(load *ld, const clad_err *err)
{
    registry *r = ld->l->r;
    adapter_destroy(ld->a);  /* a fusion adapter before the sources it borrows from */
    for (int i = 0; i < ld->n_deps; i++) registry_adapter_release(r, ld->deps[i]);
    registry_base_release(r, ld->base);
    load_finish(ld, NULL, NULL, err);
}

/* Caches the loaded adapter, unless the store deleted the version while it loaded. */
static void adapter_commit(load *ld)
{
    registry_loader *l = ld->l;
    clad_err e = {0};
    store_version *now = NULL;
    if (store_version_get(l->st, ld->name, ld->version, 0, &now, &e)) {
        if (e.code == CLAD_ENOTFOUND) {
            clad_err_clear(&e);
            version_deleted_while_loading(&e, ld->name, ld->version);
        }
        adapter_fail(ld, &e);
        return;
    }
    store_version_free(now);
    loaded_adapter *la = registry_adapter_insert(l->r, ld->name, ld->version, ld->v->kind, ld->a, &ld->route,
                                                 ld->base, ld->deps, ld->n_deps);
    ld->a = NULL;
    ld->base = NULL;
    ld->n_deps = 0;
    load_finish(ld, NULL, la, NULL);
}

static int fusion_work(void *arg, clad_err *err)
{
    load *ld = arg;
    const adapter *srcs[FUSION_MAX_SOURCES];
    for (int i = 0; i < ld->n_deps; i++) srcs[i] = ld->deps[i]->a;
    ld->a = adapter_fusion_from_buffer(ld->base->m, ld->v->adapter, ld->v->adapter_size, srcs, ld->n_deps, err);
    return ld->a ? 0 : err->code;
}

static void fusion_done(void *arg, int status, const clad_err *err)
{
    load *ld = arg;
    if (status) adapter_fail(ld, err);
    else adapter_commit(ld);
}

static void next_source(load *ld);

static void on_source(void *data, loaded_adapter *la, registry_found how, const clad_err *err)
{
    load *ld = data;
    (void)how;
    if (!la) {
        adapter_fail(ld, err);
        return;
    }
    ld->deps[ld->n_deps++] = la;
    next_source(ld);
}

/* A fusion version: its sources one after the other (each cached or loaded), then the build. */
static void next_source(load *ld)
{
    clad_err e = {0};
    if (ld->n_deps < ld->n_sources) {
        int64_t version = 0;
        char *name = ld->sources[ld->n_deps];
        if (registry_source_split(name, &version, &e)) adapter_fail(ld, &e);
        else registry_loader_adapter(ld->l, name, version, on_source, ld);
        return;
    }
    if (job_queue_compute(ld->l->q, fusion_work, fusion_done, ld, &e)) adapter_fail(ld, &e);
}

static int version_work(void *arg, clad_err *err)
{
    load *ld = arg;
    store *rd = store_open_reader(ld->l->db_path, err);
    if (!rd) return err->code;
    int rc = registry_version_read(rd, ld->base->m, ld->name, ld->version, &ld->v, &ld->a, &ld->route,
                                   ld->sources, &ld->n_sources, err);
    store_close(rd);
    return rc;
}

static void version_done(void *arg, int status, const clad_err *err)
{
    load *ld = arg;
    if (status) adapter_fail(ld, err);
    else if (ld->a) adapter_commit(ld);
    else next_source(ld);
}

static void on_base(void *data, loaded_base *b, const clad_err *err)
{
    load *ld = data;
    if (!b) {
        adapter_fail(ld, err);
        return;
    }
    ld->base = b;
    clad_err e = {0};
    if (job_queue_compute(ld->l->q, version_work, version_done, ld, &e)) adapter_fail(ld, &e);
}

void registry_loader_adapter(registry_loader *l, const char *task, int64_t version, registry_adapter_cb cb,
                             void *data)
{
    loaded_adapter *la = registry_adapter_lookup(l->r, task, version);
    if (la) {
        cb(data, la, REGISTRY_CACHED, NULL);
        return;
    }
    waiter w = {.adapter_cb = cb, .data = data};
    load *ld = load_find(l, false, task, version);
    registry_adapter_count(l->r, ld != NULL);
    if (ld) {
        load_wait(ld, w);
        return;
    }
    /* The task's base: a small row, read here. */
    store_task *t = NULL;
    clad_err e = {0};
    if (store_task_get(l->st, task, &t, &e)) {
        cb(data, NULL, REGISTRY_LOADED, &e);
        return;
    }
    ld = load_start(l, false, task, version, w);
    registry_loader_base(l, t->base, on_base, ld);
    store_task_free(t);
}

static void on_alias_version(void *data, loaded_adapter *la, registry_found how, const clad_err *err)
{
    registry_alias_get *g = data;
    int64_t now = 0;
    clad_err e = {0};
    if (!la && err && err->code == CLAD_ENOTFOUND && g->follows < REGISTRY_ALIAS_FOLLOWS &&
        !store_alias_get(g->l->st, g->task, g->alias, &now, &e) && now != g->version) {
        g->follows++;
        g->version = now;
        registry_loader_adapter(g->l, g->task, now, on_alias_version, g);
        return;
    }
    g->cb(g->data, la, how, err);
}

void registry_loader_alias(registry_loader *l, registry_alias_get *g, const char *task, const char *alias,
                           int64_t version, registry_adapter_cb cb, void *data)
{
    *g = (registry_alias_get){l, task, alias, version, 0, cb, data};
    registry_loader_adapter(l, task, version, on_alias_version, g);
}

/* --- folding ---------------------------------------------------------------------------------------- */

typedef struct fold_call {
    registry_loader *l;
    loaded_adapter *la;
    model *folded;
} fold_call;

static int fold_work(void *arg, clad_err *err)
{
    fold_call *f = arg;
    f->folded = model_fold(f->la->base->m, f->la->a, err);
    return f->folded ? 0 : err->code;
}

static void fold_done(void *arg, int status, const clad_err *err)
{
    fold_call *f = arg;
    (void)status;
    (void)err;  /* a failed fold only means the version keeps serving unfolded */
    registry_adapter_folded(f->l->r, f->la, f->folded);
    registry_adapter_release(f->l->r, f->la);
    free(f);
}

void registry_loader_served(registry_loader *l, loaded_adapter *la)
{
    if (!registry_adapter_served(l->r, la)) return;
    fold_call *f = calloc(1, sizeof *f);
    if (!f) return;
    f->l = l;
    f->la = la;
    la->folding = true;
    la->refs++;
    clad_err e = {0};
    if (job_queue_compute(l->q, fold_work, fold_done, f, &e)) fold_done(f, e.code, &e);
}
