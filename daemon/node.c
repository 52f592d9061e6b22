/* Node identity, heartbeat and the change feed; see node.h. */
#include "daemon/node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/api.h"
#include "daemon/job_claim.h"
#include "daemon/log.h"

#ifndef CLAD_VERSION
#define CLAD_VERSION "unknown"
#endif

/* Changes read per poll; a longer backlog is read over the following polls. */
#define NODE_FEED_BATCH 1000

/* A LISTEN connection of its own (a store reader that runs no other query, so its socket turns readable
 * exactly when a notification arrives: a change of the feed, or a job waiting for a node) and the poll
 * handle watching it. Heap-allocated: after a broken
 * connection the handle is closed and a new one made for the new descriptor. */
typedef struct listener {
    uv_poll_t poll;
    store *st;
    struct node *n;
} listener;

struct node {
    cladd *app;
    store_node self;
    uv_timer_t beat, feed;
    int open_handles;       /* freed when the last close callback has run */
    bool notify;            /* the backend has LISTEN/NOTIFY: listen, and poll only as a fallback */
    listener *listen;       /* NULL while not listening (SQLite, or reconnecting) */
    bool listen_failing;
    unsigned beats;
    bool beat_failing, feed_failing; /* log a failure once, and its end */
    int64_t last_change;    /* the newest change id applied */
    uint64_t applied, dropped, full_drops;
    uint64_t notifications; /* feed reads a notification triggered */
    uint64_t job_notifications; /* claims a job notification triggered */
    int64_t last_lag_ms;    /* commit to apply, of the newest change applied (-1: none yet) */
};

/* How often the feed timer reads the feed: rarely when notifications do the work. */
static unsigned feed_poll_ms(const node *n)
{
    return n->notify ? NODE_POLL_NOTIFY_MS : NODE_POLL_MS;
}

/* Logs a failing store call once, and that it works again. */
static void note_result(bool *failing, int rc, const char *what, const clad_err *err)
{
    if (rc && !*failing) log_warning("%s failed (retrying): %s", what, err->msg);
    else if (!rc && *failing) log_info("%s works again", what);
    *failing = rc != 0;
}

/* Drops what this node caches about one change. Deletes matter; creations and alias moves leave nothing
 * stale here (aliases are resolved in the store per request, and a name is created only after the delete
 * that freed it, which came first in the feed). */
static void apply_change(node *n, const store_change *c)
{
    registry *r = n->app->reg;
    bool dropped = true;
    if (!strcmp(c->kind, "version.delete") || !strcmp(c->kind, "version.gc"))
        registry_adapter_forget(r, c->task, c->version);
    else if (!strcmp(c->kind, "task.delete")) registry_forget_task(r, c->task);
    else if (!strcmp(c->kind, "base.delete")) registry_forget_base(r, c->base);
    else dropped = false;
    if (dropped) n->dropped++;
    n->applied++;
    n->last_change = c->id;
    n->last_lag_ms = wall_ms() - c->at_ms;
    log_debug("change %lld: %s %s%s v%lld, %lld ms after its commit", (long long)c->id, c->kind, c->base, c->task,
              (long long)c->version, (long long)n->last_lag_ms);
}

static void feed_poll(node *n)
{
    store_change *cs = NULL;
    size_t count = 0;
    int64_t oldest = 0;
    clad_err err = {0};
    int rc = store_changes_since(n->app->st, n->last_change, NODE_FEED_BATCH, &cs, &count, &oldest, &err);
    note_result(&n->feed_failing, rc, "following the store's change feed", &err);
    if (rc) return;
    if (count && oldest > n->last_change + 1) {
        /* Rows this node never read were pruned: it cannot know what changed, so it forgets everything. */
        log_warning("changes %lld..%lld were pruned before this node read them; dropping every cached model",
                    (long long)n->last_change + 1, (long long)oldest - 1);
        registry_forget_all(n->app->reg);
        n->full_drops++;
    }
    for (size_t i = 0; i < count; i++) apply_change(n, &cs[i]);
    store_changes_free(cs);
}

static void on_listener_closed(uv_handle_t *h)
{
    listener *l = h->data;
    if (--l->n->open_handles == 0) free(l->n);
    free(l);
}

/* Stops listening (the connection broke, or the node stops). The handle stops before its descriptor
 * closes, as libuv requires. */
static void listener_close(node *n)
{
    listener *l = n->listen;
    if (!l) return;
    n->listen = NULL;
    uv_poll_stop(&l->poll);
    store_close(l->st);
    l->st = NULL;
    uv_close((uv_handle_t *)&l->poll, on_listener_closed);
}

static void on_notified(uv_poll_t *p, int status, int events)
{
    listener *l = p->data;
    node *n = l->n;
    int changes = status < 0 ? -1 : store_changes_drain(l->st);
    int jobs = changes < 0 ? -1 : store_jobs_drain(l->st);
    if (changes < 0 || jobs < 0) {
        log_warning("the notification connection broke; polling every %d ms (jobs: %d ms) until it is back",
                    NODE_POLL_NOTIFY_MS, JOB_CLAIM_POLL_MS);
        listener_close(n);
    }
    if (changes > 0) n->notifications++;
    if (changes != 0) feed_poll(n); /* also after a break: read what may have been missed */
    if (jobs > 0) { /* a job waits for a node: try to claim it now rather than at the next poll */
        n->job_notifications++;
        job_claim_kick(n->app);
    }
}

/* Opens a LISTEN connection and watches it; on failure the timer tries again at its next tick. */
static void listener_open(node *n)
{
    if (!n->notify || n->listen) return;
    clad_err err = {0};
    listener *l = calloc(1, sizeof *l);
    if (!l) abort();
    l->n = n;
    int rc = (l->st = store_open_reader(n->app->db_path, &err)) ? store_changes_listen(l->st, &err) : err.code;
    if (!rc) rc = store_jobs_listen(l->st, &err);
    int fd = rc ? -1 : store_changes_fd(l->st);
    if (!rc && fd < 0) rc = clad_err_set(&err, CLAD_EIO, "no descriptor to watch for notifications");
    if (!rc && (rc = uv_poll_init(n->app->loop, &l->poll, fd)) < 0)
        rc = clad_err_set(&err, CLAD_EIO, "watching the notification connection: %s", uv_strerror(rc));
    note_result(&n->listen_failing, rc, "listening for store changes", &err);
    if (rc) {
        store_close(l->st);
        free(l);
        return;
    }
    l->poll.data = l;
    n->open_handles++;
    n->listen = l;
    uv_poll_start(&l->poll, UV_READABLE, on_notified);
    /* A change may have committed between the last read and LISTEN: read once now. */
    feed_poll(n);
}

static void on_feed(uv_timer_t *t)
{
    node *n = t->data;
    listener_open(n);
    feed_poll(n);
}

static void on_beat(uv_timer_t *t)
{
    node *n = t->data;
    cladd *app = n->app;
    unsigned counts[JOB_STATE_COUNT];
    job_queue_counts(app->jobs, counts);
    clad_err err = {0};
    /* A worker may hold the write lock for seconds while it stores a large upload (the shared job
     * queue): the loop skips this beat rather than wait for it. */
    int busy_ms = store_set_busy_timeout(app->st, 0);
    int rc = store_node_beat(app->st, n->self.id, counts[JOB_RUNNING], &err);
    if (rc == CLAD_ENOTFOUND) { /* pruned while this node was stalled for long: register again */
        clad_err_clear(&err);
        rc = store_node_claim(app->st, &n->self, NODE_DEAD_MS, &err);
    }
    store_set_busy_timeout(app->st, busy_ms);
    if (rc == CLAD_EBUSY) return;
    note_result(&n->beat_failing, rc, "the node heartbeat", &err);
    if (rc == 0 && ++n->beats % NODE_PRUNE_EVERY == 0) {
        int64_t deleted = 0;
        if (store_changes_prune(app->st, NODE_FEED_KEEP_ROWS, NODE_FEED_KEEP_MS, NODE_ROW_KEEP_MS, &deleted, &err))
            log_warning("pruning the change feed: %s", err.msg);
        else if (deleted)
            log_debug("pruned %lld change rows", (long long)deleted);
    }
}

int node_start(cladd *app, node **out, clad_err *err)
{
    node *n = calloc(1, sizeof *n);
    if (!n) abort();
    n->app = app;
    n->last_lag_ms = -1;
    store_node *s = &n->self;
    snprintf(s->id, sizeof s->id, "%s", app->cfg.node_id);
    if (gethostname(s->host, sizeof s->host) != 0) snprintf(s->host, sizeof s->host, "unknown");
    s->host[sizeof s->host - 1] = '\0';
    snprintf(s->state_dir, sizeof s->state_dir, "%.*s", (int)sizeof s->state_dir - 1, app->cfg.state_dir);
    snprintf(s->socket, sizeof s->socket, "%.*s", (int)sizeof s->socket - 1, server_socket_path(app->srv));
    snprintf(s->version, sizeof s->version, "%s", CLAD_VERSION);
    s->pid = getpid();
    /* A node starts with an empty cache, so it follows the feed from its current end. */
    int rc = store_node_claim(app->st, s, NODE_DEAD_MS, err);
    if (!rc) rc = store_changes_last(app->st, &n->last_change, err);
    if (rc) {
        free(n);
        return rc;
    }
    s->started_ms = s->last_seen_ms = wall_ms();
    uv_timer_init(app->loop, &n->beat);
    uv_timer_init(app->loop, &n->feed);
    n->beat.data = n->feed.data = n;
    n->open_handles = 2;
    n->notify = config_store_is_postgres(app->db_path);
    unsigned poll_ms = feed_poll_ms(n);
    uv_timer_start(&n->beat, on_beat, NODE_BEAT_MS, NODE_BEAT_MS);
    uv_timer_start(&n->feed, on_feed, poll_ms, poll_ms);
    listener_open(n);
    log_info("node '%s' joined the store; following its change feed from change %lld (%s, polled every %u ms)",
             s->id, (long long)n->last_change, n->listen ? "LISTEN clad_changes, clad_jobs" : "no notifications",
             poll_ms);
    *out = n;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    node *n = h->data;
    if (--n->open_handles == 0) free(n);
}

void node_stop(node *n)
{
    if (!n) return;
    clad_err err = {0};
    if (store_node_stopped(n->app->st, n->self.id, &err)) log_warning("recording the node's stop: %s", err.msg);
    listener_close(n);
    uv_close((uv_handle_t *)&n->beat, on_timer_closed);
    uv_close((uv_handle_t *)&n->feed, on_timer_closed);
}

static json_t *node_json(const store_node *s, int64_t now, bool self)
{
    const char *state = s->stopped_ms ? "stopped" : now - s->last_seen_ms > NODE_DEAD_MS ? "dead" : "live";
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:b}", "id", s->id, "host", s->host, "pid",
                          (json_int_t)s->pid, "socket", s->socket, "state_dir", s->state_dir, "version", s->version,
                          "started_ms", (json_int_t)s->started_ms, "last_seen_ms", (json_int_t)s->last_seen_ms,
                          "running_jobs", (json_int_t)s->running_jobs, "state", state, "self", self);
    json_object_set_new(o, "stopped_ms", s->stopped_ms ? json_integer((json_int_t)s->stopped_ms) : json_null());
    return o;
}

int64_t node_last_change(const node *n)
{
    return n ? n->last_change : 0;
}

json_t *node_status_json(node *n)
{
    int64_t now = wall_ms();
    store_node *list = NULL;
    size_t count = 0;
    clad_err err = {0};
    json_t *nodes = json_array(), *self = NULL;
    if (store_nodes_list(n->app->st, now - NODE_SHOWN_MS, &list, &count, &err) == 0) {
        for (size_t i = 0; i < count; i++) {
            bool is_self = !strcmp(list[i].id, n->self.id);
            json_t *o = node_json(&list[i], now, is_self);
            if (is_self) self = json_incref(o);
            json_array_append_new(nodes, o);
        }
    }
    store_nodes_free(list);
    if (!self) self = node_json(&n->self, now, true); /* the store is unreachable, or our row was pruned */
    json_object_set_new(self, "feed",
                        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:I,s:I}", "last_change", (json_int_t)n->last_change,
                                  "applied", (json_int_t)n->applied, "dropped", (json_int_t)n->dropped, "full_drops",
                                  (json_int_t)n->full_drops, "last_lag_ms", (json_int_t)n->last_lag_ms, "poll_ms",
                                  (json_int_t)feed_poll_ms(n), "listening", n->listen != NULL, "notifications",
                                  (json_int_t)n->notifications, "job_notifications",
                                  (json_int_t)n->job_notifications));
    if (err.code) json_object_set_new(self, "store_error", json_string(err.msg));
    return json_pack("{s:o,s:o}", "node", self, "nodes", nodes);
}
