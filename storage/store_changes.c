/* The change feed: one `changes` row per write that other nodes sharing the store must act on.
 *
 * A node caches what it read from the store (loaded versions, folded copies, resolved aliases); when
 * another node deletes a version or moves an alias, the cache must learn of it. The rows are appended by
 * audit_add, so every audited write of a listed action enters the feed in its own transaction: a change
 * is never seen before it commits and never lost after. Rows are numbered in commit order (SQLite has one
 * writer at a time; PostgreSQL writers are serialised at begin, db.h). Followers read the rows after the
 * last id they saw (store_changes_since); on PostgreSQL each such write also sends NOTIFY clad_changes,
 * delivered at commit, so followers need not wait for their next poll.
 */
#include "storage/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The audit actions that enter the feed. Everything else (jobs, metrics, evaluations, migrations)
 * changes nothing another node caches. */
static const char *const feed_actions[] = {
    "alias.set", "alias.rollback", "alias.undo", "alias.delete", "version.put",
    "version.delete", "version.gc", "task.create", "task.delete", "base.put", "base.delete",
};

static bool in_feed(const char *action)
{
    for (size_t i = 0; i < sizeof feed_actions / sizeof feed_actions[0]; i++)
        if (!strcmp(feed_actions[i], action)) return true;
    return false;
}

int change_add(store *s, const char *action, const char *object, clad_err *err)
{
    if (!in_feed(action)) return 0;
    /* object is "kind:name" or "kind:task/rest"; names never hold ':' or '/' (check_name). */
    char base[STORE_NAME_MAX + 1] = "", task[STORE_NAME_MAX + 1] = "";
    int64_t version = 0;
    const char *colon = strchr(object, ':');
    const char *name = colon ? colon + 1 : object;
    size_t n = strcspn(name, "/");
    if (n > STORE_NAME_MAX) n = STORE_NAME_MAX;
    if (!strncmp(object, "base:", 5)) {
        memcpy(base, name, n);
        base[n] = '\0';
    } else {
        memcpy(task, name, n);
        task[n] = '\0';
        if (!strncmp(object, "version:", 8) && name[n] == '/') version = strtoll(name + n + 1, NULL, 10);
    }
    int rc = st_exec(s, err, "INSERT INTO changes (kind, base, task, version, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                     "tttII", action, base, task, version, now_ms());
    /* Delivered at commit, so a listener never reads the feed before the row is there. The payload is a
     * hint only: listeners read the rows. SQLite has no notifications (its followers poll; its notify
     * does nothing). */
    if (rc == 0) rc = db_notify(s->db, STORE_CHANGES_CHANNEL, action, err);
    return rc;
}

int store_changes_listen(store *s, clad_err *err)
{
    return db_listen(s->db, STORE_CHANGES_CHANNEL, err);
}

int store_changes_fd(store *s)
{
    return db_notify_fd(s->db);
}

int store_changes_drain(store *s)
{
    return db_drain(s->db, STORE_CHANGES_CHANNEL);
}

int store_changes_since(store *s, int64_t after_id, size_t limit, store_change **out, size_t *n,
                        int64_t *oldest_id, clad_err *err)
{
    *out = NULL;
    *n = 0;
    bool began;
    int rc = tx_read_begin(s, &began, err);
    if (rc) return rc;
    int64_t oldest = 0;
    rc = st_int(s, &oldest, err, "SELECT coalesce(min(id), 0) FROM changes", NULL);
    db_stmt *st = NULL;
    if (rc == 0)
        rc = st_prepare(s, &st, err,
                        "SELECT id, kind, base, task, version, at_ms FROM changes WHERE id > ?1 ORDER BY id LIMIT ?2",
                        "II", after_id, limit ? (int64_t)limit : INT64_MAX);
    row_list rows = ROW_LIST_INIT(store_change);
    store_change *r;
    while (rc == 0 && (r = st_step_append(s, st, &rows, "reading the change feed", &rc, err))) {
        r->id = col_int64(st, 0);
        col_copy(st, 1, r->kind, sizeof r->kind);
        col_copy(st, 2, r->base, sizeof r->base);
        col_copy(st, 3, r->task, sizeof r->task);
        r->version = col_int64(st, 4);
        r->at_ms = col_int64(st, 5);
    }
    st_finalize(st);
    tx_read_end(s, began);
    if (rc < 0) {
        free(rows.items);
        return rc;
    }
    if (oldest_id) *oldest_id = oldest;
    *out = rows.items;
    *n = rows.n;
    return 0;
}

void store_changes_free(store_change *c)
{
    free(c);
}

int store_changes_last(store *s, int64_t *id, clad_err *err)
{
    return st_int(s, id, err, "SELECT coalesce(max(id), 0) FROM changes", NULL);
}

int store_changes_prune(store *s, int64_t keep_rows, int64_t keep_ms, int64_t node_keep_ms, int64_t *n_deleted,
                        clad_err *err)
{
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t now = now_ms();
    rc = st_exec(s, err,
                 "DELETE FROM changes WHERE id <= (SELECT max(id) FROM changes) - ?1 OR at_ms <= ?2", "II",
                 keep_rows, now - keep_ms);
    int64_t deleted = rc ? 0 : st_changes(s);
    if (rc == 0) rc = st_exec(s, err, "DELETE FROM nodes WHERE last_seen_ms < ?1", "I", now - node_keep_ms);
    rc = tx_end(s, rc, err);
    if (rc == 0 && n_deleted) *n_deleted = deleted;
    return rc;
}
