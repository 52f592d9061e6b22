/* The change feed and the node table (storage/store_changes.c, storage/store_node.c), on both backends:
 * which writes enter the feed and with what, that a refused write leaves no row, pruning, node
 * registration, and on PostgreSQL the notification each feed row sends at commit. */
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "tests/daemon_util.h"

#include "tests/test.h"
#include "tests/test_store_fixture.h"

/* The feed after id `after` as "kind base|task|version" lines. */
static void feed_text(store *s, int64_t after, char *out, size_t size)
{
    clad_err e = {0};
    store_change *c = NULL;
    size_t n = 0;
    CHECK_OK(store_changes_since(s, after, 0, &c, &n, NULL, &e), e);
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        CHECK(i == 0 || c[i].id > c[i - 1].id);
        len += (size_t)snprintf(out + len, size - len, "%s %s|%s|%lld\n", c[i].kind, c[i].base, c[i].task,
                                (long long)c[i].version);
    }
    store_changes_free(c);
}

STORE_TEST(store_changes_record_every_write_other_nodes_act_on)
{
    store *s = fx_open("c.db");
    clad_err e = {0};
    char text[2048];
    fx_task(s, "t");
    for (int i = 0; i < 3; i++) fx_put(s, "t", 0);
    CHECK_OK(store_alias_set(s, "t", "blue", 1, 1000, NULL, &e), e);
    CHECK_OK(store_rollback(s, "t", NULL, 0, 1000, "bad", NULL, &e), e);
    CHECK_OK(store_rollback_undo(s, "t", NULL, 1000, NULL, NULL, &e), e);
    CHECK_OK(store_alias_delete(s, "t", "blue", 1000, NULL, &e), e);
    CHECK_OK(store_version_delete(s, "t", 1, 1000, &e), e);
    store_gc_stats gs;
    CHECK_OK(store_gc(s, "t", 1, 1000, &gs, &e), e);
    feed_text(s, 0, text, sizeof text);
    CHECK_STR_EQ(text, "base.put mlp||0\ntask.create |t|0\nversion.put |t|1\nversion.put |t|2\nversion.put |t|3\n"
                       "alias.set |t|0\nalias.rollback |t|0\nalias.undo |t|0\nalias.delete |t|0\n"
                       "version.delete |t|1\nversion.gc |t|2\n");
    int64_t last = 0;
    CHECK_OK(store_changes_last(s, &last, &e), e);

    /* Refused writes, and writes nobody caches (jobs, evaluations), add nothing. */
    CHECK_CODE(store_version_delete(s, "t", 3, 1000, &e), CLAD_ECONFLICT, e); /* active points at it */
    CHECK_CODE(store_rollback(s, "t", NULL, 0, 1000, NULL, NULL, &e), CLAD_ECONFLICT, e);
    CHECK_CODE(store_base_delete(s, "mlp", 1000, &e), CLAD_ECONFLICT, e);
    int64_t job = 0;
    CHECK_OK(store_job_create(s, "train", "t", "mlp", NULL, 1000, &job, &e), e);
    store_eval ev = {.version = {"t", 3}, .accuracy = 0.5, .n_samples = 1};
    CHECK_OK(store_eval_add(s, &ev, 1000, NULL, &e), e);
    feed_text(s, last, text, sizeof text);
    CHECK_STR_EQ(text, "");

    CHECK_OK(store_job_mark_cancelled(s, job, 1000, &e), e);
    CHECK_OK(store_task_delete(s, "t", 1000, &e), e);
    CHECK_OK(store_base_delete(s, "mlp", 1000, &e), e);
    feed_text(s, last, text, sizeof text);
    CHECK_STR_EQ(text, "task.delete |t|0\nbase.delete mlp||0\n");
    store_close(s);
}

STORE_TEST(store_changes_prune_keeps_the_newest_and_reports_the_gap)
{
    store *s = fx_open("c.db");
    clad_err e = {0};
    fx_task(s, "t");
    for (int i = 0; i < 10; i++) fx_put(s, "t", 0);
    int64_t last = 0, oldest = 0, deleted = 0;
    CHECK_OK(store_changes_last(s, &last, &e), e);
    CHECK_INT_EQ(last, 12); /* base, task, 10 versions */
    CHECK_OK(store_changes_prune(s, 4, 3600000, 3600000, &deleted, &e), e);
    CHECK_INT_EQ(deleted, 8);
    store_change *c = NULL;
    size_t n = 0;
    /* A follower that had read up to 2 learns that 3..8 are gone (oldest 9 > 2 + 1). */
    CHECK_OK(store_changes_since(s, 2, 2, &c, &n, &oldest, &e), e);
    CHECK_INT_EQ(oldest, 9);
    CHECK_INT_EQ(n, 2); /* the limit */
    CHECK_INT_EQ(c[0].id, 9);
    CHECK_INT_EQ(c[1].version, 8);
    store_changes_free(c);
    /* Everything older than 0 ms goes; ids keep growing after the feed was emptied. */
    CHECK_OK(store_changes_prune(s, 100, 0, 3600000, &deleted, &e), e);
    CHECK_INT_EQ(deleted, 4);
    fx_put(s, "t", 0);
    CHECK_OK(store_changes_last(s, &last, &e), e);
    CHECK_INT_EQ(last, 13);
    store_close(s);
}

STORE_TEST(store_nodes_claim_beat_and_list)
{
    store *s = fx_open("n.db");
    clad_err e = {0};
    store_node a = {.id = "a", .host = "h1", .state_dir = "/s/a", .socket = "/run/a.sock", .version = "0.1", .pid = 11};
    store_node b = {.id = "b", .host = "h1", .state_dir = "/s/b", .socket = "/run/b.sock", .version = "0.1", .pid = 12};
    CHECK_OK(store_node_claim(s, &a, 5000, &e), e);
    CHECK_OK(store_node_claim(s, &b, 5000, &e), e);
    /* Another node under a's id while a beats: refused, naming a. A restart of a itself is not. */
    store_node impostor = b;
    snprintf(impostor.id, sizeof impostor.id, "a");
    CHECK_CODE(store_node_claim(s, &impostor, 5000, &e), CLAD_ECONFLICT, e);
    CHECK_MSG(strstr(e.msg, "pid 11") && strstr(e.msg, "/s/a"), "%s", e.msg);
    a.pid = 13;
    CHECK_OK(store_node_claim(s, &a, 5000, &e), e);
    CHECK_OK(store_node_beat(s, "b", 2, &e), e);
    CHECK_CODE(store_node_beat(s, "nobody", 0, &e), CLAD_ENOTFOUND, e);
    CHECK_OK(store_node_stopped(s, "a", &e), e);
    /* A stopped node's id is free for another. */
    CHECK_OK(store_node_claim(s, &impostor, 5000, &e), e);
    CHECK_OK(store_node_stopped(s, "a", &e), e);

    store_node *list = NULL;
    size_t n = 0;
    CHECK_OK(store_nodes_list(s, 0, &list, &n, &e), e);
    CHECK_INT_EQ(n, 2);
    CHECK_STR_EQ(list[0].id, "a");
    CHECK_STR_EQ(list[0].state_dir, "/s/b");
    CHECK(list[0].stopped_ms > 0);
    CHECK_STR_EQ(list[1].socket, "/run/b.sock");
    CHECK_INT_EQ(list[1].running_jobs, 2);
    CHECK_INT_EQ(list[1].stopped_ms, 0);
    CHECK(list[1].last_seen_ms >= list[1].started_ms);
    store_nodes_free(list);
    CHECK_OK(store_nodes_list(s, (int64_t)1 << 62, &list, &n, &e), e);
    CHECK_INT_EQ(n, 0);
    store_nodes_free(list);
    store_close(s);
}

/* Whether a notification arrives at listener l within timeout_ms (and consumes it). */
static bool notified_within(store *l, int timeout_ms)
{
    struct pollfd p = {.fd = store_changes_fd(l), .events = POLLIN};
    CHECK(p.fd >= 0);
    for (double t0 = now_s(); now_s() - t0 < timeout_ms / 1000.0;) {
        int got = store_changes_drain(l);
        CHECK(got >= 0);
        if (got) return true;
        poll(&p, 1, 20);
    }
    return false;
}

/* PostgreSQL: a write that enters the feed notifies listeners at its commit; a refused write, whose
 * transaction rolls back, does not. SQLite has no notifications and says so. */
TEST(store_changes_notify_listeners_at_commit_pg)
{
    clad_err e = {0};
    store *lite = fx_open("lite.db");
    CHECK_CODE(store_changes_listen(lite, &e), CLAD_EINVAL, e);
    CHECK_INT_EQ(store_changes_fd(lite), -1);
    store_close(lite);

    fx_use_backend(FX_PG);
    store *s = fx_open("c.db");
    fx_task(s, "t");
    fx_put(s, "t", 0);
    char uri[512];
    fx_path(uri, sizeof uri, "c.db");
    store *l = store_open_reader(uri, &e);
    CHECK_MSG(l != NULL, "%s", e.msg);
    CHECK_OK(store_changes_listen(l, &e), e);
    CHECK(!notified_within(l, 100));
    fx_put(s, "t", 0);
    CHECK(notified_within(l, 5000));
    CHECK_CODE(store_version_delete(s, "t", 2, 1000, &e), CLAD_ECONFLICT, e); /* active */
    CHECK_OK(store_job_create(s, "train", "t", "mlp", NULL, 1000, NULL, &e), e); /* not in the feed */
    CHECK(!notified_within(l, 300));
    CHECK_OK(store_version_delete(s, "t", 1, 1000, &e), e);
    CHECK(notified_within(l, 5000));
    store_close(l);
    store_close(s);
}
