/* The daemon's cache of loaded bases and adapters (daemon/registry.c) against a real store: bases are
 * evicted least-recently-used within their byte budget (there is no count cap), never while in use, and
 * go together with the cached adapters that are all that keeps them loaded; a forgotten (deleted)
 * adapter is never handed out again but stays valid for its holder. Run under ASan for the leaks. */
#include <stdio.h>
#include <stdlib.h>

#include "daemon/registry.h"
#include "daemon/version_compose.h"
#include "io/model_io.h"
#include "io/signature_io.h"
#include "tests/test.h"
#include "tests/test_store_fixture.h"

#define N_BASES 70 /* more than the old hard cap of 64 */

static const model_config small_mlp = {.kind = MODEL_MLP, .input_dim = 8, .n_hidden = 1, .hidden = {16}, .n_classes = 4};

/* Bases b0..b{n-1}, each a differently seeded small MLP stored inline, and (with tasks) task tI on bI
 * with one LoRA version. Returns the parameter bytes of one base. */
static size_t fill_store(store *s, int n, bool tasks)
{
    clad_err e = {0};
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        char name[16];
        model *m = model_create(&small_mlp, NULL);
        CHECK(m != NULL);
        model_init_random(m, (uint64_t)i + 1);
        bytes = m->params.total * sizeof(float);
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK_OK(model_to_buffer(m, &buf, &len, &e), e);
        snprintf(name, sizeof name, "b%d", i);
        store_base_in bi = {.name = name, .config_json = "{}", .weights = buf, .weights_size = len};
        CHECK_OK(store_base_put(s, &bi, 1000, &e), e);
        free(buf);
        if (tasks) {
            char task[16];
            snprintf(task, sizeof task, "t%d", i);
            store_task_in ti = {.name = task, .base = name, .n_classes = small_mlp.n_classes};
            CHECK_OK(store_task_create(s, &ti, 1000, &e), e);
            int ranks[MODEL_MAX_LINEARS] = {2};
            adapter *a = adapter_create(m, ranks, 4, small_mlp.n_classes, &e);
            CHECK_MSG(a != NULL, "%s", e.msg);
            adapter_init(a, m, 7);
            CHECK_OK(adapter_to_buffer(a, m, &buf, &len, &e), e);
            store_version_in vi = {.task = task, .kind = "lora", .adapter = buf, .adapter_size = len};
            CHECK_OK(store_version_put(s, &vi, 1000, NULL, &e), e);
            free(buf);
            adapter_destroy(a);
        }
        model_destroy(m);
    }
    return bytes;
}

/* The registry's pieces put together the way daemon/registry_load.c does, on this thread (the daemon
 * itself never loads on its loop). */
static int registry_base_get(registry *r, store *s, const char *name, loaded_base **out, clad_err *err)
{
    if ((*out = registry_base_lookup(r, name))) return 0;
    model *m = NULL;
    char sha[SHA256_HEX_SIZE];
    int rc = registry_base_read(s, name, &m, sha, err);
    if (!rc) *out = registry_base_insert(r, name, sha, m);
    return rc;
}

/* The same for a LoRA version (these tests store no fusions). */
static int registry_adapter_get(registry *r, store *s, const char *task, int64_t version, loaded_adapter **out,
                                clad_err *err)
{
    if ((*out = registry_adapter_lookup(r, task, version))) return 0;
    registry_adapter_count(r, false);
    store_task *t = NULL;
    store_version *v = NULL;
    loaded_base *b = NULL;
    adapter *a = NULL;
    route_stats route = {0};
    char names[FUSION_MAX_SOURCES][PARAM_NAME_MAX];
    int n = 0;
    int rc = store_task_get(s, task, &t, err);
    if (!rc) rc = registry_base_get(r, s, t->base, &b, err);
    if (!rc) rc = registry_version_read(s, b->m, task, version, &v, &a, &route, names, &n, err);
    if (!rc) *out = registry_adapter_insert(r, task, version, v->kind, a, &route, b, NULL, 0);
    else registry_base_release(r, b);
    store_version_free(v);
    store_task_free(t);
    return rc;
}

static registry_stats stats_of(const registry *r)
{
    registry_stats st;
    registry_get_stats(r, &st);
    return st;
}

TEST(daemon_registry_bases_are_evicted_within_budget_never_in_use)
{
    clad_err e = {0};
    store *s = fx_open("r.db");
    size_t one = fill_store(s, N_BASES, false);
    registry *r = registry_create(1 << 20, 3 * one);
    loaded_base *held = NULL, *b = NULL;
    CHECK_OK(registry_base_get(r, s, "b0", &held, &e), e);
    for (int i = 1; i < N_BASES; i++) {
        char name[16];
        snprintf(name, sizeof name, "b%d", i);
        CHECK_OK(registry_base_get(r, s, name, &b, &e), e);
        CHECK_STR_EQ(b->name, name);
        registry_base_release(r, b);
        registry_stats st = stats_of(r);
        CHECK_MSG(st.bases <= 3 && st.base_bytes <= 3 * one, "%zu bases, %zu bytes after loading %s", st.bases,
                  st.base_bytes, name);
    }
    /* The held base was never evicted: the same entry comes back without a reload. */
    CHECK_OK(registry_base_get(r, s, "b0", &b, &e), e);
    CHECK(b == held && b->m != NULL && b->refs == 2);
    registry_base_release(r, b);
    /* The most recent base is still cached; the oldest unheld one is not. */
    CHECK_OK(registry_base_get(r, s, "b69", &b, &e), e);
    CHECK_INT_EQ(b->refs, 1);
    registry_base_release(r, b);
    /* A base added under a loaded name is refused and its model freed (ASan checks the latter). */
    model *m = model_create(&small_mlp, NULL);
    CHECK_CODE(registry_base_add(r, "b0", held->sha256, m, &e), CLAD_ECONFLICT, e);
    registry_base_release(r, held);
    /* Over budget and nothing held: down to the budget at once. */
    CHECK(stats_of(r).base_bytes <= 3 * one);
    registry_destroy(r);
    store_close(s);
}

TEST(daemon_registry_cached_adapters_do_not_pin_their_bases)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    size_t one = fill_store(s, 8, true);
    registry *r = registry_create(64 << 20, 2 * one);
    loaded_adapter *held = NULL, *la = NULL;
    CHECK_OK(registry_adapter_get(r, s, "t0", 1, &held, &e), e);
    for (int i = 1; i < 8; i++) {
        char task[16];
        snprintf(task, sizeof task, "t%d", i);
        CHECK_OK(registry_adapter_get(r, s, task, 1, &la, &e), e);
        registry_adapter_release(r, la);
        registry_stats st = stats_of(r);
        CHECK_MSG(st.bases <= 2 && st.adapters <= 2, "%zu bases, %zu adapters after %s", st.bases, st.adapters, task);
    }
    /* The held adapter and its base stayed: a cache hit. */
    CHECK_OK(registry_adapter_get(r, s, "t0", 1, &la, &e), e);
    CHECK(la == held && la->base->m != NULL);
    registry_adapter_release(r, la);

    /* Forgotten while held: the holder keeps a working entry, the next get is a fresh load. */
    registry_adapter_forget(r, "t0", 1);
    CHECK(held->a != NULL && held->base->m != NULL);
    CHECK_OK(registry_adapter_get(r, s, "t0", 1, &la, &e), e);
    CHECK(la != held);
    size_t before = stats_of(r).adapters;
    registry_adapter_release(r, held);
    CHECK_INT_EQ(stats_of(r).adapters, before - 1);
    registry_adapter_release(r, la);
    registry_destroy(r);
    store_close(s);
}

/* Fills every parameter of a with small values that differ, so each layer's change has full rank. */
static void fill_params(adapter *a)
{
    for (size_t i = 0; i < a->params.total; i++)
        a->params.data[i] = ((float)((i * 2654435761u) % 2001) - 1000.0f) * 1e-3f;
}

/* A version stored by reference, read by a load and then deleted with the version it needs before the load
 * composes it (a load on a worker reads the two at different times): the load answers CLAD_ENOTFOUND (404)
 * saying the version was deleted while it was being loaded, not the store's words about the version it
 * needed. Deterministic: the deletion happens between reading and composing on this thread. */
TEST(daemon_registry_version_deleted_while_composed_says_so)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fill_store(s, 1, true); /* b0 and t0@1 */
    model *m = NULL;
    char sha[SHA256_HEX_SIZE];
    CHECK_OK(registry_base_read(s, "b0", &m, sha, &e), e);
    /* t0@2: a whole rank-2 adapter with a change on layer 0. */
    int ranks[MODEL_MAX_LINEARS] = {2}, reused[MODEL_MAX_LINEARS] = {1};
    adapter *whole = adapter_create(m, ranks, 4, small_mlp.n_classes, &e);
    CHECK_MSG(whole != NULL, "%s", e.msg);
    fill_params(whole);
    signature sig = {0};
    CHECK_OK(signature_compute(&sig, m, whole, SIGNATURE_KEEP, &e), e);
    CHECK_MSG(sig.layer[0].k >= reused[0], "the change keeps %d directions", sig.layer[0].k);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_OK(adapter_blob_build(whole, m, &sig, &buf, &len, &e), e);
    store_version_in vi = {.task = "t0", .kind = "lora", .adapter = buf, .adapter_size = len,
                           .flags = STORE_PUT_KEEP_ACTIVE};
    CHECK_OK(store_version_put(s, &vi, 1000, NULL, &e), e);
    free(buf);
    signature_finish(&sig);
    /* t0@3: one new direction on layer 0, reusing t0@2's first. */
    ranks[0] = 1;
    adapter *part = adapter_create(m, ranks, 4, small_mlp.n_classes, &e);
    CHECK_MSG(part != NULL, "%s", e.msg);
    fill_params(part);
    CHECK_OK(signature_compute(&sig, m, part, SIGNATURE_KEEP, &e), e);
    CHECK_OK(adapter_blob_build_part(part, m, &sig, NULL, reused, "t0@2", &buf, &len, &e), e);
    store_ref needs = {"t0", 2};
    store_version_in vr = {.task = "t0", .kind = "lora", .adapter = buf, .adapter_size = len, .needs = &needs,
                           .n_needs = 1, .flags = STORE_PUT_KEEP_ACTIVE};
    CHECK_OK(store_version_put(s, &vr, 1000, NULL, &e), e);
    free(buf);
    signature_finish(&sig);

    store_version *v = NULL;
    CHECK_OK(store_version_get(s, "t0", 3, STORE_WITH_BLOB, &v, &e), e);
    adapter *a = version_adapter(s, m, v, &e);
    CHECK_MSG(a != NULL, "t0@3 composes while it is stored: %s", e.msg);
    CHECK_INT_EQ(a ? a->rank[0] : 0, 2);
    adapter_destroy(a);
    CHECK_OK(store_version_delete(s, "t0", 3, 1000, &e), e);
    CHECK_OK(store_version_delete(s, "t0", 2, 1000, &e), e);
    CHECK(version_adapter(s, m, v, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_ENOTFOUND);
    CHECK_STR_EQ(e.msg, "version 3 of task 't0' was deleted while it was being loaded");
    CHECK_CODE(version_signature(s, m, v, &sig, &e), CLAD_ENOTFOUND, e);
    CHECK_STR_EQ(e.msg, "version 3 of task 't0' was deleted while it was being loaded");
    store_version_free(v);
    adapter_destroy(part);
    adapter_destroy(whole);
    model_destroy(m);
    store_close(s);
}
