/* Deleting whole tasks and bases, refused while anything outside them depends on them.
 *
 * A task's own aliases, alias history, versions, evaluations and accuracy-matrix entries go with it; what
 * blocks the delete is what lives elsewhere: versions of other tasks that need one of its versions at run
 * time (version_deps: a fusion's sources) or name one as a parent (fusions, merges, reused changes), and
 * jobs still queued or running for it. A base is blocked by
 * the tasks on it. The refusal names what depends, so the operator knows what to delete first.
 */
#include <stdio.h>
#include <string.h>

#include "storage/store_internal.h"

/* Appends the first column of each row (up to a few) to list as "a, b, c", with "and N more". Returns
 * 0 with *count rows seen, or an error. */
static int name_rows(store *s, char *list, size_t size, int64_t *count, clad_err *err, const char *sql, int64_t id)
{
    db_stmt *st;
    int rc = st_prepare(s, &st, err, sql, "I", id);
    size_t n = 0;
    *count = 0;
    list[0] = '\0';
    while (rc == 0 && (rc = st_step(s, st, err)) == 1) {
        rc = 0;
        if (++*count <= 8) {
            const char *name = col_text(st, 0);
            n += (size_t)snprintf(list + n, n < size ? size - n : 0, "%s%s", n ? ", " : "", name ? name : "?");
        }
    }
    st_finalize(st);
    if (rc == 0 && *count > 8 && n < size) snprintf(list + n, size - n, " and %lld more", (long long)*count - 8);
    return rc;
}

/* Audits a delete that went through as "<kind>.delete" on "<kind>:<name>", ends the write transaction
 * begun by the caller (committing on rc 0), and hands the freed pages back. */
static int delete_finish(store *s, int rc, int peer_uid, const char *kind, const char *name, clad_err *err)
{
    if (rc == 0) {
        char object[STORE_NAME_MAX + 8], action[16];
        snprintf(object, sizeof object, "%s:%s", kind, name);
        snprintf(action, sizeof action, "%s.delete", kind);
        rc = audit_add(s, peer_uid, action, object, "{}", err);
    }
    rc = tx_end(s, rc, err);
    if (rc == 0) st_reclaim(s);
    return rc;
}

int store_task_delete(store *s, const char *task, int peer_uid, clad_err *err)
{
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t tid = 0, n = 0;
    char list[600];
    rc = task_id(s, task, &tid, err);
    /* Its own work first: the job would fail at its end, and cancelling it is the operator's first step. */
    if (rc == 0)
        rc = name_rows(s, list, sizeof list, &n, err,
                       "SELECT 'job ' || id || ' (' || state || ')' FROM jobs WHERE task = (SELECT name FROM tasks"
                       " WHERE id = ?1) AND state IN ('queued', 'running') ORDER BY id", tid);
    if (rc == 0 && n)
        rc = clad_err_set(err, CLAD_ECONFLICT, "task '%s' has unfinished work: %s; cancel it first", task, list);
    if (rc == 0)
        rc = name_rows(s, list, sizeof list, &n, err,
                       "SELECT t.name || '@' || v.version || ' (needs ' || nt.name || '@' || n.version || ')'"
                       " FROM version_deps d JOIN versions n ON n.id = d.needs_id JOIN tasks nt ON nt.id = n.task_id"
                       " JOIN versions v ON v.id = d.version_id JOIN tasks t ON t.id = v.task_id"
                       " WHERE n.task_id = ?1 AND v.task_id != ?1 ORDER BY 1", tid);
    if (rc == 0 && n)
        rc = clad_err_set(err, CLAD_ECONFLICT, "task '%s' is needed at run time by %s; delete those first", task, list);
    if (rc == 0)
        rc = name_rows(s, list, sizeof list, &n, err,
                       "SELECT DISTINCT t.name || '@' || v.version FROM version_parents p"
                       " JOIN versions v ON v.id = p.child_id JOIN tasks t ON t.id = v.task_id"
                       " WHERE p.parent_task_id = ?1 AND v.task_id != ?1 ORDER BY 1", tid);
    if (rc == 0 && n)
        rc = clad_err_set(err, CLAD_ECONFLICT, "task '%s' is a parent of %s; delete those first", task, list);
    /* Children before parents: aliases point at versions and history rows, and the task's own version_deps
     * rows at its versions (they would cascade; deleting them first does not depend on that). */
    static const char *const deletes[] = {
        "DELETE FROM aliases WHERE task_id = ?1",
        "DELETE FROM alias_history WHERE task_id = ?1",
        "DELETE FROM version_deps WHERE version_id IN (SELECT id FROM versions WHERE task_id = ?1)",
        "DELETE FROM versions WHERE task_id = ?1",
        "DELETE FROM accuracy_matrix WHERE after_task_id = ?1 OR eval_task_id = ?1",
        "DELETE FROM evaluations WHERE task_id = ?1",
        "DELETE FROM tasks WHERE id = ?1",
    };
    for (size_t i = 0; rc == 0 && i < sizeof deletes / sizeof deletes[0]; i++) rc = st_exec(s, err, deletes[i], "I", tid);
    return delete_finish(s, rc, peer_uid, "task", task, err);
}

int store_base_delete(store *s, const char *base, int peer_uid, clad_err *err)
{
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t bid = 0, n = 0;
    char list[600];
    rc = st_int(s, &bid, err, "SELECT id FROM bases WHERE name = ?1", "t", base);
    if (rc == CLAD_ENOTFOUND) rc = clad_err_set(err, CLAD_ENOTFOUND, "unknown base '%s'", base);
    if (rc == 0)
        rc = name_rows(s, list, sizeof list, &n, err, "SELECT name FROM tasks WHERE base_id = ?1 ORDER BY name", bid);
    if (rc == 0 && n)
        rc = clad_err_set(err, CLAD_ECONFLICT, "base '%s' has %lld task(s): %s; delete them first", base,
                          (long long)n, list);
    if (rc == 0) rc = st_exec(s, err, "DELETE FROM bases WHERE id = ?1", "I", bid);
    return delete_finish(s, rc, peer_uid, "base", base, err);
}
