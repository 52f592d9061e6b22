/* Aliases, their history, rollback and undo.
 *
 * Every move of an alias appends a row to alias_history, and the alias points at the row that set its
 * current target (its "state"). Two links in each row make rollback and undo O(1) and keep the rules
 * in the data rather than in a replay of the log:
 *
 *   back_id  the state a rollback returns to. A forward move (put, set) links back to the state it
 *            replaced. A rollback to the previous target copies that state's own back_id, so repeated
 *            rollbacks walk back (5 -> 4 -> 3) rather than bouncing between two versions.
 *   undo_id  the state an undo returns to: set on rollbacks (the state they replaced). An undo copies
 *            the links of the state it returns to, so successive undos undo earlier rollbacks in turn.
 *
 * Example: puts of 1..5 give states S1..S5 with S(k).back = S(k-1). rollback -> R1 (4, back S3,
 * undo S5); rollback -> R2 (3, back S2, undo R1); undo -> U1 (4, back S3, undo S5); undo -> U2 (5,
 * back S4, undo none); undo -> refused.
 *
 * An explicit rollback to version X whose state is on the back chain acts like that many rollbacks at
 * once (back = that state's back_id); otherwise back = the current state. Either way undo_id = current.
 */
#include "storage/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int alias_state(store *s, int64_t tid, const char *alias, int64_t *state_id, int64_t *version,
                clad_err *err)
{
    *state_id = 0;
    *version = 0;
    db_stmt *st;
    int rc = st_prepare(s, &st, err,
                        "SELECT a.state_id, v.version FROM aliases a JOIN versions v ON v.id = a.version_id "
                        "WHERE a.task_id = ?1 AND a.name = ?2", "It", tid, alias);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        *state_id = col_int64(st, 0);
        *version = col_int64(st, 1);
        rc = 0;
    }
    st_finalize(st);
    return rc;
}

int alias_move(store *s, int64_t tid, const char *alias, int64_t vid, int64_t version, const char *action,
               int64_t back_id, int64_t undo_id, int peer_uid, const char *reason, clad_err *err)
{
    int64_t cur_state, cur_version;
    int64_t hid = 0;
    int rc = alias_state(s, tid, alias, &cur_state, &cur_version, err);
    if (rc) return rc;
    rc = st_int(s, &hid, err,
                "INSERT INTO alias_history (task_id, alias, action, old_version, new_version, back_id, "
                "undo_id, peer_uid, reason, time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
                "RETURNING id", "IttNINNitI", tid, alias, action, cur_version, version, back_id, undo_id,
                peer_uid, reason ? reason : "", now_ms());
    if (rc) return rc;
    return st_exec(s, err,
                   "INSERT INTO aliases (task_id, name, version_id, state_id) VALUES (?1, ?2, ?3, ?4) "
                   "ON CONFLICT (task_id, name) DO UPDATE SET version_id = excluded.version_id, "
                   "state_id = excluded.state_id", "ItII", tid, alias, vid, hid);
}

/* One history row's links. */
typedef struct hist_row {
    int64_t version, back_id, undo_id;
} hist_row;

static int hist_get(store *s, int64_t id, hist_row *h, clad_err *err)
{
    db_stmt *st;
    int rc = st_prepare(s, &st, err, "SELECT new_version, back_id, undo_id FROM alias_history WHERE id = ?1",
                        "I", id);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        h->version = col_int64(st, 0);
        h->back_id = col_int64(st, 1); /* NULL reads as 0 */
        h->undo_id = col_int64(st, 2);
        rc = 0;
    } else if (rc == 0) {
        rc = clad_err_set(err, CLAD_ECORRUPT, "store: alias history row %lld is missing", (long long)id);
    }
    st_finalize(st);
    return rc;
}

static int audit_move(store *s, const char *task, const char *alias, const char *action, int64_t from,
                      int64_t to, int peer_uid, const char *reason, clad_err *err)
{
    char object[2 * STORE_NAME_MAX + 16], act[32];
    snprintf(object, sizeof object, "alias:%s/%s", task, alias);
    snprintf(act, sizeof act, "alias.%s", action);
    jbuf j;
    jb_init(&j);
    jb_int(&j, "from", from);
    jb_int(&j, "to", to);
    if (reason && *reason) jb_str(&j, "reason", reason);
    return audit_add(s, peer_uid, act, object, jb_done(&j), err);
}

/* Looks up task and alias for a write; fills the alias's current state. */
static int alias_prepare(store *s, const char *task, const char *alias, const char *reason, int64_t *tid,
                         int64_t *state, int64_t *version, bool must_exist, clad_err *err)
{
    int rc = check_name(alias, "alias", err);
    if (rc || (rc = check_reason(reason, err)) || (rc = task_id(s, task, tid, err))) return rc;
    if ((rc = alias_state(s, *tid, alias, state, version, err))) return rc;
    if (must_exist && !*state) return clad_err_set(err, CLAD_ENOTFOUND, "task '%s' has no alias '%s'", task, alias);
    return 0;
}

int store_alias_get(store *s, const char *task, const char *alias, int64_t *version_out, clad_err *err)
{
    int64_t tid, state, version;
    bool began;
    int rc = check_name(alias, "alias", err);
    if (rc || (rc = tx_read_begin(s, &began, err))) return rc;
    rc = task_id(s, task, &tid, err);
    if (rc == 0) rc = alias_state(s, tid, alias, &state, &version, err);
    if (rc == 0 && !state) rc = clad_err_set(err, CLAD_ENOTFOUND, "task '%s' has no alias '%s'", task, alias);
    tx_read_end(s, began);
    if (rc == 0 && version_out) *version_out = version;
    return rc;
}

int store_aliases_list(store *s, const char *task, store_alias **out, size_t *n, clad_err *err)
{
    *out = NULL;
    *n = 0;
    int64_t tid;
    bool began;
    int rc = tx_read_begin(s, &began, err);
    if (rc) return rc;
    db_stmt *st = NULL;
    if ((rc = task_id(s, task, &tid, err)) == 0)
        rc = st_prepare(s, &st, err,
                        "SELECT a.name, v.version, h.time_ms FROM aliases a "
                        "JOIN versions v ON v.id = a.version_id JOIN alias_history h ON h.id = a.state_id "
                        "WHERE a.task_id = ?1 ORDER BY a.name", "I", tid);
    row_list rows = ROW_LIST_INIT(store_alias);
    store_alias *r;
    while (rc == 0 && (r = st_step_append(s, st, &rows, "listing aliases", &rc, err))) {
        col_copy(st, 0, r->name, sizeof r->name);
        r->version = col_int64(st, 1);
        r->updated_ms = col_int64(st, 2);
    }
    st_finalize(st);
    tx_read_end(s, began);
    if (rc < 0) {
        free(rows.items);
        return rc;
    }
    *out = rows.items;
    *n = rows.n;
    return 0;
}

void store_aliases_free(store_alias *a) { free(a); }

int store_alias_set(store *s, const char *task, const char *alias, int64_t version, int peer_uid,
                    const char *reason, clad_err *err)
{
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t tid, state, cur, vid = 0;
    rc = alias_prepare(s, task, alias, reason, &tid, &state, &cur, false, err);
    if (rc == 0) rc = version_id(s, tid, task, version, &vid, err);
    if (rc == 0 && state && cur == version) return tx_end(s, 0, err); /* already there: no move */
    if (rc == 0) rc = alias_move(s, tid, alias, vid, version, "set", state, 0, peer_uid, reason, err);
    if (rc == 0) rc = audit_move(s, task, alias, "set", cur, version, peer_uid, reason, err);
    return tx_end(s, rc, err);
}

int store_alias_delete(store *s, const char *task, const char *alias, int peer_uid, const char *reason,
                       clad_err *err)
{
    if (alias && strcmp(alias, "active") == 0)
        return clad_err_set(err, CLAD_ECONFLICT, "alias 'active' of task '%s' cannot be deleted; move it "
                            "with a rollback or set instead", task ? task : "");
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t tid, state, cur;
    rc = alias_prepare(s, task, alias, reason, &tid, &state, &cur, true, err);
    if (rc == 0)
        rc = st_exec(s, err,
                     "INSERT INTO alias_history (task_id, alias, action, old_version, peer_uid, reason, "
                     "time_ms) VALUES (?1, ?2, 'delete', ?3, ?4, ?5, ?6)", "ItIitI", tid, alias, cur,
                     peer_uid, reason ? reason : "", now_ms());
    if (rc == 0)
        rc = st_exec(s, err, "DELETE FROM aliases WHERE task_id = ?1 AND name = ?2", "It", tid, alias);
    if (rc == 0) rc = audit_move(s, task, alias, "delete", cur, 0, peer_uid, reason, err);
    return tx_end(s, rc, err);
}

/* Finds the state on alias's back chain (starting after `state`) whose target is version; 0 if none. */
static int chain_find(store *s, int64_t state, int64_t version, int64_t *found, int64_t *found_back,
                      clad_err *err)
{
    *found = *found_back = 0;
    db_stmt *st;
    int rc = st_prepare(s, &st, err,
                        "WITH RECURSIVE chain(id, new_version, back_id) AS ("
                        "  SELECT h.id, h.new_version, h.back_id FROM alias_history h"
                        "  WHERE h.id = (SELECT back_id FROM alias_history WHERE id = ?1)"
                        "  UNION ALL SELECT h.id, h.new_version, h.back_id FROM alias_history h"
                        "  JOIN chain c ON h.id = c.back_id) "
                        "SELECT id, back_id FROM chain WHERE new_version = ?2 LIMIT 1", "II", state, version);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        *found = col_int64(st, 0);
        *found_back = col_int64(st, 1);
        rc = 0;
    }
    st_finalize(st);
    return rc;
}

int store_rollback(store *s, const char *task, const char *alias, int64_t to_version, int peer_uid,
                   const char *reason, int64_t *version_out, clad_err *err)
{
    if (!alias) alias = "active";
    if (to_version < 0) return clad_err_set(err, CLAD_EINVAL, "rollback: version must be >= 0");
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t tid, state, cur, target = to_version, back = 0, vid = 0;
    rc = alias_prepare(s, task, alias, reason, &tid, &state, &cur, true, err);
    if (rc == 0 && to_version == 0) {
        hist_row h, prev;
        rc = hist_get(s, state, &h, err);
        if (rc == 0 && !h.back_id)
            rc = clad_err_set(err, CLAD_ECONFLICT, "alias '%s' of task '%s' has no earlier target to roll "
                              "back to", alias, task);
        if (rc == 0) rc = hist_get(s, h.back_id, &prev, err);
        if (rc == 0) {
            target = prev.version;
            back = prev.back_id;
            rc = version_id(s, tid, task, target, &vid, NULL);
            if (rc == CLAD_ENOTFOUND)
                rc = clad_err_set(err, CLAD_ECONFLICT, "cannot roll back alias '%s' of task '%s': its "
                                  "previous target, version %lld, was deleted; roll back to an explicit "
                                  "version instead", alias, task, (long long)target);
            else if (rc)
                rc = version_id(s, tid, task, target, &vid, err);
        }
    } else if (rc == 0) {
        if (to_version == cur)
            rc = clad_err_set(err, CLAD_ECONFLICT, "alias '%s' of task '%s' already points at version %lld",
                              alias, task, (long long)cur);
        if (rc == 0) rc = version_id(s, tid, task, to_version, &vid, err);
        int64_t found = 0;
        if (rc == 0) rc = chain_find(s, state, to_version, &found, &back, err);
        if (rc == 0 && !found) back = state;
    }
    if (rc == 0) rc = alias_move(s, tid, alias, vid, target, "rollback", back, state, peer_uid, reason, err);
    if (rc == 0) rc = audit_move(s, task, alias, "rollback", cur, target, peer_uid, reason, err);
    rc = tx_end(s, rc, err);
    if (rc == 0 && version_out) *version_out = target;
    return rc;
}

int store_rollback_undo(store *s, const char *task, const char *alias, int peer_uid, const char *reason,
                        int64_t *version_out, clad_err *err)
{
    if (!alias) alias = "active";
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t tid, state, cur, vid = 0;
    hist_row h, u = {0};
    rc = alias_prepare(s, task, alias, reason, &tid, &state, &cur, true, err);
    if (rc == 0) rc = hist_get(s, state, &h, err);
    if (rc == 0 && !h.undo_id)
        rc = clad_err_set(err, CLAD_ECONFLICT, "the current target of alias '%s' of task '%s' (version %lld) "
                          "was not set by a rollback; nothing to undo", alias, task, (long long)cur);
    if (rc == 0) rc = hist_get(s, h.undo_id, &u, err);
    if (rc == 0) {
        rc = version_id(s, tid, task, u.version, &vid, NULL);
        if (rc == CLAD_ENOTFOUND)
            rc = clad_err_set(err, CLAD_ECONFLICT, "cannot undo the rollback of alias '%s' of task '%s': "
                              "version %lld was deleted", alias, task, (long long)u.version);
        else if (rc)
            rc = version_id(s, tid, task, u.version, &vid, err);
    }
    if (rc == 0)
        rc = alias_move(s, tid, alias, vid, u.version, "undo", u.back_id, u.undo_id, peer_uid, reason, err);
    if (rc == 0) rc = audit_move(s, task, alias, "undo", cur, u.version, peer_uid, reason, err);
    rc = tx_end(s, rc, err);
    if (rc == 0 && version_out) *version_out = u.version;
    return rc;
}

int store_alias_history(store *s, const char *task, const char *alias, store_alias_move **out, size_t *n,
                        clad_err *err)
{
    *out = NULL;
    *n = 0;
    int rc = alias ? check_name(alias, "alias", err) : 0;
    if (rc) return rc;
    bool began;
    if ((rc = tx_read_begin(s, &began, err))) return rc;
    int64_t tid;
    db_stmt *st = NULL;
    if ((rc = task_id(s, task, &tid, err)) == 0)
        rc = st_prepare(s, &st, err,
                        "SELECT id, time_ms, peer_uid, alias, action, old_version, new_version, reason "
                        "FROM alias_history WHERE task_id = ?1 AND (?2 IS NULL OR alias = ?2) ORDER BY id",
                        "It", tid, alias);
    row_list rows = ROW_LIST_INIT(store_alias_move);
    store_alias_move *m;
    while (rc == 0 && (m = st_step_append(s, st, &rows, "listing alias history", &rc, err))) {
        m->id = col_int64(st, 0);
        m->time_ms = col_int64(st, 1);
        m->peer_uid = col_int(st, 2);
        col_copy(st, 3, m->alias, sizeof m->alias);
        col_copy(st, 4, m->action, sizeof m->action);
        m->old_version = col_int64(st, 5);
        m->new_version = col_int64(st, 6);
        col_copy(st, 7, m->reason, sizeof m->reason);
    }
    st_finalize(st);
    tx_read_end(s, began);
    if (rc < 0) {
        free(rows.items);
        return rc;
    }
    *out = rows.items;
    *n = rows.n;
    return 0;
}

void store_alias_history_free(store_alias_move *m) { free(m); }
