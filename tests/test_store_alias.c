/* Alias, rollback and undo semantics: exact histories, a randomized comparison against a simple
 * stack model, refusal to roll back onto deleted versions, and a concurrent reader during rollbacks. */
#include "tests/test.h"

#include <pthread.h>
#include <stdatomic.h>

#include "core/rng.h"
#include "tests/test_store_fixture.h"

static int64_t active(store *s, const char *task)
{
    clad_err e = {0};
    int64_t v = 0;
    CHECK_OK(store_alias_get(s, task, "active", &v, &e), e);
    return v;
}

STORE_TEST(store_alias_rollback_walks_back_and_undo_walks_forward)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    for (int i = 0; i < 5; i++) fx_put(s, "t1", 0);
    int64_t v = 0;
    CHECK_OK(store_rollback(s, "t1", NULL, 0, 501, "v5 is worse", &v, &e), e);
    CHECK_INT_EQ(v, 4);
    CHECK_OK(store_rollback(s, "t1", "active", 0, 501, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 3);
    CHECK_INT_EQ(active(s, "t1"), 3);
    CHECK_OK(store_rollback_undo(s, "t1", NULL, 502, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 4);
    CHECK_OK(store_rollback_undo(s, "t1", NULL, 502, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 5);
    CHECK_CODE(store_rollback_undo(s, "t1", NULL, 502, NULL, &v, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "was not set by a rollback"));
    CHECK_INT_EQ(active(s, "t1"), 5);
    /* After undoing, rolling back walks back again from 5. */
    CHECK_OK(store_rollback(s, "t1", NULL, 0, 501, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 4);
    /* A new version is a forward move: undo is no longer possible, rollback returns to 4. */
    fx_put(s, "t1", 0);
    CHECK_CODE(store_rollback_undo(s, "t1", NULL, 502, NULL, &v, &e), CLAD_ECONFLICT, e);
    CHECK_OK(store_rollback(s, "t1", NULL, 0, 501, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 4);
    CHECK_OK(store_rollback(s, "t1", NULL, 0, 501, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 3);
    for (int want = 2; want >= 1; want--) {
        CHECK_OK(store_rollback(s, "t1", NULL, 0, 501, NULL, &v, &e), e);
        CHECK_INT_EQ(v, want);
    }
    CHECK_CODE(store_rollback(s, "t1", NULL, 0, 501, NULL, &v, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "no earlier target"));

    /* The history records every move in order, with peer, targets and reason. */
    store_alias_move *h = NULL;
    size_t n = 0;
    CHECK_OK(store_alias_history(s, "t1", "active", &h, &n, &e), e);
    static const struct { const char *action; int64_t from, to; } want[] = {
        {"put", 0, 1}, {"put", 1, 2}, {"put", 2, 3}, {"put", 3, 4}, {"put", 4, 5},
        {"rollback", 5, 4}, {"rollback", 4, 3}, {"undo", 3, 4}, {"undo", 4, 5}, {"rollback", 5, 4},
        {"put", 4, 6}, {"rollback", 6, 4}, {"rollback", 4, 3}, {"rollback", 3, 2}, {"rollback", 2, 1},
    };
    CHECK_INT_EQ(n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < n; i++) {
        CHECK_STR_EQ(h[i].action, want[i].action);
        CHECK_INT_EQ(h[i].old_version, want[i].from);
        CHECK_INT_EQ(h[i].new_version, want[i].to);
        CHECK(i == 0 || h[i].id > h[i - 1].id);
        CHECK(i == 0 || h[i].time_ms >= h[i - 1].time_ms);
    }
    CHECK_INT_EQ(h[5].peer_uid, 501);
    CHECK_STR_EQ(h[5].reason, "v5 is worse");
    CHECK_INT_EQ(h[7].peer_uid, 502);
    store_alias_history_free(h);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

STORE_TEST(store_alias_rollback_to_explicit_version)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    for (int i = 0; i < 5; i++) fx_put(s, "t1", 0);
    int64_t v = 0;
    CHECK_OK(store_rollback(s, "t1", NULL, 2, 0, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 2);
    /* Version 2 was on the alias's path, so "previous" continues below it. */
    CHECK_OK(store_rollback(s, "t1", NULL, 0, 0, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 1);
    CHECK_OK(store_rollback_undo(s, "t1", NULL, 0, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 2);
    CHECK_OK(store_rollback_undo(s, "t1", NULL, 0, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 5);
    CHECK_CODE(store_rollback(s, "t1", NULL, 5, 0, NULL, &v, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "already points at version 5"));
    CHECK_CODE(store_rollback(s, "t1", NULL, 9, 0, NULL, &v, &e), CLAD_ENOTFOUND, e);
    CHECK_CODE(store_rollback(s, "t1", "champion", 0, 0, NULL, &v, &e), CLAD_ENOTFOUND, e);
    CHECK(strstr(e.msg, "no alias 'champion'"));
    CHECK_CODE(store_rollback(s, "t9", NULL, 0, 0, NULL, &v, &e), CLAD_ENOTFOUND, e);
    /* A named alias has its own history. */
    CHECK_OK(store_alias_set(s, "t1", "champion", 3, 0, NULL, &e), e);
    CHECK_OK(store_alias_set(s, "t1", "champion", 3, 0, NULL, &e), e); /* no-op */
    CHECK_OK(store_alias_set(s, "t1", "champion", 4, 0, "better on rot15", &e), e);
    CHECK_OK(store_rollback(s, "t1", "champion", 0, 0, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 3);
    CHECK_INT_EQ(active(s, "t1"), 5);
    store_alias_move *h = NULL;
    size_t n = 0;
    CHECK_OK(store_alias_history(s, "t1", "champion", &h, &n, &e), e);
    CHECK_INT_EQ(n, 3);
    CHECK_STR_EQ(h[1].reason, "better on rot15");
    store_alias_history_free(h);
    CHECK_OK(store_alias_history(s, "t1", NULL, &h, &n, &e), e);
    CHECK_INT_EQ(n, 5 + 4 + 3);
    store_alias_history_free(h);
    store_close(s);
}

STORE_TEST(store_alias_rollback_onto_deleted_version_is_refused)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    for (int i = 0; i < 3; i++) fx_put(s, "t1", 0);
    CHECK_OK(store_version_delete(s, "t1", 2, 0, &e), e);
    int64_t v = 0;
    CHECK_CODE(store_rollback(s, "t1", NULL, 0, 0, NULL, &v, &e), CLAD_ECONFLICT, e);
    CHECK_STR_EQ(e.msg, "cannot roll back alias 'active' of task 't1': its previous target, version 2, was "
                        "deleted; roll back to an explicit version instead");
    CHECK_INT_EQ(active(s, "t1"), 3); /* nothing moved, not even to version 1 */
    CHECK_OK(store_rollback(s, "t1", NULL, 1, 0, NULL, &v, &e), e);
    CHECK_INT_EQ(v, 1);
    /* Undo onto a version deleted after the rollback is refused too. */
    CHECK_OK(store_alias_set(s, "t1", "keep3", 3, 0, NULL, &e), e);
    CHECK_OK(store_alias_delete(s, "t1", "keep3", 0, NULL, &e), e);
    CHECK_OK(store_version_delete(s, "t1", 3, 0, &e), e);
    CHECK_CODE(store_rollback_undo(s, "t1", NULL, 0, NULL, &v, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "version 3 was deleted"));
    CHECK_INT_EQ(active(s, "t1"), 1);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

/* A plain model of the documented semantics: a stack of earlier targets and a stack of whole states
 * to undo to. The store keeps links in its history rows instead; the two must agree on every step. */
#define MODEL_MAX 512
typedef struct mstate {
    int64_t cur;
    int64_t back[MODEL_MAX];
    int nb;
} mstate;
typedef struct model {
    mstate st;
    mstate undo[64];
    int nu;
} model;

static void model_push_undo(model *m)
{
    if (m->nu == 64) { /* keep the newest; the test never undoes that deep */
        memmove(m->undo, m->undo + 1, 63 * sizeof m->undo[0]);
        m->nu--;
    }
    m->undo[m->nu++] = m->st;
}

static int model_apply(model *m, int op, int64_t x)
{
    switch (op) {
    case 0: /* set */
        if (x == m->st.cur) return 0;
        m->st.back[m->st.nb++] = m->st.cur;
        m->st.cur = x;
        m->nu = 0;
        return 0;
    case 1: /* rollback to previous */
        if (m->st.nb == 0) return CLAD_ECONFLICT;
        model_push_undo(m);
        m->st.cur = m->st.back[--m->st.nb];
        return 0;
    case 2: { /* rollback to x */
        if (x == m->st.cur) return CLAD_ECONFLICT;
        model_push_undo(m);
        int i = m->st.nb - 1;
        while (i >= 0 && m->st.back[i] != x) i--;
        if (i >= 0) m->st.nb = i;
        else m->st.back[m->st.nb++] = m->st.cur;
        m->st.cur = x;
        return 0;
    }
    default: /* undo */
        if (m->nu == 0) return CLAD_ECONFLICT;
        m->st = m->undo[--m->nu];
        return 0;
    }
}

STORE_TEST(store_alias_random_moves_match_model)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    for (int i = 0; i < 8; i++) fx_put(s, "t1", STORE_PUT_KEEP_ACTIVE);
    CHECK_OK(store_alias_set(s, "t1", "champion", 1, 0, NULL, &e), e);
    static model m;
    m.st.cur = 1;
    rng r;
    rng_init(&r, 7);
    int moves = 1, conflicts = 0;
    for (int step = 0; step < 300; step++) {
        uint32_t pick = rng_below(&r, 20);
        int op = pick < 6 ? 0 : pick < 12 ? 1 : pick < 15 ? 2 : 3;
        int64_t x = 1 + rng_below(&r, 8);
        int64_t before = m.st.cur, got = 0;
        int want = model_apply(&m, op, x);
        int rc;
        clad_err_clear(&e);
        switch (op) {
        case 0: rc = store_alias_set(s, "t1", "champion", x, 0, NULL, &e); break;
        case 1: rc = store_rollback(s, "t1", "champion", 0, 0, NULL, &got, &e); break;
        case 2: rc = store_rollback(s, "t1", "champion", x, 0, NULL, &got, &e); break;
        default: rc = store_rollback_undo(s, "t1", "champion", 0, NULL, &got, &e); break;
        }
        CHECK_MSG(rc == want, "step %d op %d x %lld: store %s (%s), model %s", step, op, (long long)x,
                  clad_code_name(rc), e.msg, clad_code_name(want));
        int64_t now = 0;
        CHECK_OK(store_alias_get(s, "t1", "champion", &now, &e), e);
        CHECK_MSG(now == m.st.cur, "step %d op %d x %lld: store at %lld, model at %lld", step, op,
                  (long long)x, (long long)now, (long long)m.st.cur);
        if (rc == 0 && op != 0) CHECK_INT_EQ(got, now);
        moves += rc == 0 && now != before;
        conflicts += rc != 0;
    }
    CHECK(conflicts > 10 && moves > 150); /* both paths were exercised */
    store_alias_move *h = NULL;
    size_t n = 0;
    CHECK_OK(store_alias_history(s, "t1", "champion", &h, &n, &e), e);
    CHECK_INT_EQ(n, moves);
    for (size_t i = 1; i < n; i++) CHECK_INT_EQ(h[i].old_version, h[i - 1].new_version);
    store_alias_history_free(h);
    store_close(s);
}

/* ---- A reader on its own handle and thread while the writer rolls back and deletes ---- */

typedef struct reader_ctx {
    char path[512];
    atomic_int stop;
    int reads;
    int distinct;
} reader_ctx;

static void *reader_main(void *arg)
{
    reader_ctx *c = arg;
    clad_err e = {0};
    store *r = store_open_reader(c->path, &e);
    CHECK_MSG(r != NULL, "reader open: %s", e.msg);
    int64_t last = -1;
    while (!atomic_load(&c->stop)) {
        /* Alias and version resolved in one snapshot: never a version the writer just deleted. */
        store_version *v = NULL;
        CHECK_OK(store_version_get_alias(r, "t1", "active", STORE_WITH_BLOB, &v, &e), e);
        CHECK_MSG(fx_blob_ok(v), "active version %lld has the wrong blob", (long long)v->version);
        if (v->version != last) c->distinct++;
        last = v->version;
        store_version_free(v);
        /* Several reads in one snapshot agree with each other. */
        CHECK_OK(store_snapshot_begin(r, &e), e);
        int64_t a = 0;
        CHECK_OK(store_alias_get(r, "t1", "active", &a, &e), e);
        store_alias_move *h = NULL;
        size_t n = 0;
        CHECK_OK(store_alias_history(r, "t1", "active", &h, &n, &e), e);
        CHECK_MSG(n > 0 && h[n - 1].new_version == a, "alias at %lld but its last move went to %lld",
                  (long long)a, n ? (long long)h[n - 1].new_version : -1LL);
        store_alias_history_free(h);
        CHECK_OK(store_version_get(r, "t1", a, 0, &v, &e), e);
        store_version_free(v);
        store_snapshot_end(r);
        c->reads++;
    }
    store_close(r);
    return NULL;
}

STORE_TEST(store_alias_reader_during_rollbacks_sees_old_or_new)
{
    clad_err e = {0};
    store *w = fx_open("a.db");
    fx_task(w, "t1");
    fx_put(w, "t1", 0);
    fx_put(w, "t1", 0);
    static reader_ctx c;
    fx_path(c.path, sizeof c.path, "a.db");
    pthread_t th;
    CHECK(pthread_create(&th, NULL, reader_main, &c) == 0);
    /* Each round moves `active` forward, back and forward again, then deletes the version it just
     * left, so a reader that resolved the alias and loaded the version in two transactions would
     * sooner or later find its version gone. */
    for (int i = 0; i < 150; i++) {
        int64_t v = fx_put(w, "t1", 0);
        CHECK_OK(store_rollback(w, "t1", NULL, 0, 0, NULL, NULL, &e), e);
        CHECK_OK(store_rollback_undo(w, "t1", NULL, 0, NULL, NULL, &e), e);
        CHECK_OK(store_version_delete(w, "t1", v - 1, 0, &e), e);
    }
    atomic_store(&c.stop, 1);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_MSG(c.reads >= 20 && c.distinct >= 5, "reader made %d reads over %d targets", c.reads, c.distinct);
    CHECK_OK(store_check(w, STORE_CHECK_FULL, &e), e);
    store_close(w);
}
