/* Versions: put (with lineage, runtime dependencies, the `active` move and the producing job in one
 * transaction), get with sha256 verification, list, delete and retention. */
#include "storage/store_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const version_kinds[] = {"lora", "tied", "fusion", "merged", "full"};

static bool kind_valid(const char *kind)
{
    for (size_t i = 0; kind && i < sizeof version_kinds / sizeof version_kinds[0]; i++)
        if (strcmp(kind, version_kinds[i]) == 0) return true;
    return false;
}

/* Everything about the input that can be checked without the write lock. */
static int put_validate(store *s, const store_version_in *in, clad_err *err)
{
    int rc = check_name(in->task, "task", err);
    if (rc) return rc;
    if (!kind_valid(in->kind))
        return clad_err_set(err, CLAD_EINVAL, "version kind must be lora, tied, fusion, merged or full, not "
                            "\"%.32s\"", in->kind ? in->kind : "(null)");
    if (!in->adapter || in->adapter_size == 0)
        return clad_err_set(err, CLAD_EINVAL, "task '%s': the adapter blob is empty", in->task);
    if (in->adapter_size > STORE_BLOB_MAX)
        return clad_err_set(err, CLAD_ETOOLARGE, "task '%s': adapter blob of %zu bytes is over the %u byte "
                            "limit", in->task, in->adapter_size, STORE_BLOB_MAX);
    if (in->n_parents > STORE_PARENTS_MAX || (in->n_parents && !in->parents))
        return clad_err_set(err, CLAD_EINVAL, "a version may have at most %d parents", STORE_PARENTS_MAX);
    if (in->n_needs > STORE_PARENTS_MAX || (in->n_needs && !in->needs))
        return clad_err_set(err, CLAD_EINVAL, "a version may need at most %d versions", STORE_PARENTS_MAX);
    /* A fusion version cannot be served without its sources: refuse one that does not say which. */
    if (!strcmp(in->kind, "fusion") && !in->n_needs)
        return clad_err_set(err, CLAD_EINVAL, "task '%s': a fusion version must name the versions it needs",
                            in->task);
    if (in->base_sha256 && !sha256_hex_valid(in->base_sha256))
        return clad_err_set(err, CLAD_EINVAL, "base sha256 must be 64 lowercase hex digits");
    if (in->data_sha256 && !sha256_hex_valid(in->data_sha256))
        return clad_err_set(err, CLAD_EINVAL, "data sha256 must be 64 lowercase hex digits");
    if (!isfinite(in->wall_time_s) || in->wall_time_s < 0)
        return clad_err_set(err, CLAD_EINVAL, "wall time must be a finite number >= 0");
    if (in->job_id < 0) return clad_err_set(err, CLAD_EINVAL, "job id must be >= 0");
    if (in->create_task && (!in->create_task->name || strcmp(in->create_task->name, in->task) != 0))
        return clad_err_set(err, CLAD_EINVAL, "task '%s': the task to create has another name", in->task);
    if (in->create_task && (rc = task_validate(s, in->create_task, err))) return rc;
    if ((rc = check_json(s, in->lineage_json, "object", true, "lineage", err)) ||
        (rc = check_json(s, in->hparams_json, "object", true, "hyperparameters", err)) ||
        (rc = check_json(s, in->metrics_json, "object", true, "metrics", err)))
        return rc;
    return 0;
}

/* Resolves each parent to (task id, number) and refuses unknown ones. */
static int put_parents(store *s, int64_t child_id, const store_version_in *in, clad_err *err)
{
    for (size_t i = 0; i < in->n_parents; i++) {
        const store_ref *p = &in->parents[i];
        int64_t ptid, pvid;
        int rc = task_id(s, p->task, &ptid, err);
        if (rc == 0) rc = version_id(s, ptid, p->task, p->version, &pvid, err);
        if (rc) {
            clad_err_prefix(err, "parent %zu: ", i);
            return rc;
        }
        rc = st_exec(s, err,
                     "INSERT INTO version_parents (child_id, position, parent_task_id, parent_version) "
                     "VALUES (?1, ?2, ?3, ?4)", "IIII", child_id, (int64_t)i, ptid, p->version);
        if (rc) return rc;
    }
    return 0;
}

/* Records the versions the new one (row id child_id, on base base_sha) loads at run time. They must
 * exist and be on the same base. */
static int put_needs(store *s, int64_t child_id, const char *base_sha, const store_version_in *in, clad_err *err)
{
    for (size_t i = 0; i < in->n_needs; i++) {
        const store_ref *p = &in->needs[i];
        int64_t ntid, nvid, same_base = 0;
        int rc = task_id(s, p->task, &ntid, err);
        if (rc == 0) rc = version_id(s, ntid, p->task, p->version, &nvid, err);
        if (rc == 0)
            rc = st_int(s, &same_base, err, "SELECT base_sha256 = ?2 FROM versions WHERE id = ?1", "It", nvid,
                        base_sha);
        if (rc == 0 && !same_base)
            rc = clad_err_set(err, CLAD_ECONFLICT, "version %lld of task '%s' is on another base",
                              (long long)p->version, p->task);
        if (rc == 0)
            rc = st_exec(s, err, "INSERT INTO version_deps (version_id, position, needs_id) VALUES (?1, ?2, ?3)",
                         "III", child_id, (int64_t)i, nvid);
        if (rc) {
            clad_err_prefix(err, "needed version %zu: ", i);
            return rc;
        }
    }
    return 0;
}

int store_version_put(store *s, const store_version_in *in, int peer_uid, int64_t *version_out, clad_err *err)
{
    int rc = put_validate(s, in, err);
    if (rc) return rc;
    /* Hash before taking the write lock: the lock is held only for the inserts and the commit. */
    char sha[SHA256_HEX_SIZE];
    sha256_hex(in->adapter, in->adapter_size, sha);

    if ((rc = tx_begin_write(s, err))) return rc;
    int64_t tid = 0, version = 0, vid = 0;
    char base_sha[SHA256_HEX_SIZE] = "";
    db_stmt *st;
    rc = task_id(s, in->task, &tid, err);
    if (rc == CLAD_ENOTFOUND && in->create_task) { /* the task and its first version commit together */
        clad_err_clear(err);
        rc = task_insert(s, in->create_task, peer_uid, err);
        if (rc == 0) rc = task_id(s, in->task, &tid, err);
    }
    if (rc == 0)
        rc = st_prepare(s, &st, err,
                        "SELECT t.next_version, b.weights_sha256, b.name FROM tasks t "
                        "JOIN bases b ON b.id = t.base_id WHERE t.id = ?1", "I", tid);
    if (rc == 0) {
        rc = st_step(s, st, err);
        if (rc == 1) {
            version = col_int64(st, 0);
            col_copy(st, 1, base_sha, sizeof base_sha);
            rc = 0;
            if (in->base_sha256 && strcmp(in->base_sha256, base_sha) != 0)
                rc = clad_err_set(err, CLAD_ECONFLICT, "task '%s': the adapter was trained on base sha256 "
                                  "%.12s... but the task's base '%s' has %.12s...", in->task, in->base_sha256,
                                  col_text(st, 2), base_sha);
        } else if (rc == 0) {
            rc = clad_err_set(err, CLAD_EINTERNAL, "task '%s' has no base row", in->task);
        }
        st_finalize(st);
    }
    /* A cancelled job must not sneak in a version, nor a node that lost the job's lease. */
    if (rc == 0 && in->job_id) rc = job_commit_check(s, in->job_id, "a version", err);
    if (rc == 0)
        rc = st_int(s, &vid, err,
                    "INSERT INTO versions (task_id, version, kind, adapter_size, adapter_sha256, base_sha256, "
                    "data_sha256, lineage_json, hparams_json, metrics_json, seed, clad_version, wall_time_s, "
                    "job_id, creator_uid, created_ms) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) RETURNING id",
                    "IItIttttttItdNiI", tid, version, in->kind, (int64_t)in->adapter_size, sha, base_sha,
                    in->data_sha256, in->lineage_json ? in->lineage_json : "{}",
                    in->hparams_json ? in->hparams_json : "{}", in->metrics_json ? in->metrics_json : "{}",
                    (int64_t)in->seed, CLAD_VERSION, in->wall_time_s, in->job_id, peer_uid, now_ms());
    if (rc == 0)
        rc = st_exec(s, err, "INSERT INTO version_blobs (version_id, data) VALUES (?1, ?2)", "Ib", vid,
                     in->adapter, in->adapter_size);
    if (rc == 0) rc = put_parents(s, vid, in, err);
    if (rc == 0) rc = put_needs(s, vid, base_sha, in, err);
    if (rc == 0)
        rc = st_exec(s, err, "UPDATE tasks SET next_version = ?2 WHERE id = ?1", "II", tid, version + 1);
    int64_t state = 0, cur = 0;
    bool move = false;
    if (rc == 0) rc = alias_state(s, tid, "active", &state, &cur, err);
    if (rc == 0 && (!state || !(in->flags & STORE_PUT_KEEP_ACTIVE))) {
        move = true;
        rc = alias_move(s, tid, "active", vid, version, "put", state, 0, peer_uid, NULL, err);
    }
    if (rc == 0 && in->job_id) rc = job_commit_done(s, in->job_id, version, err); /* they commit together */
    if (rc == 0) {
        char object[STORE_NAME_MAX + 32];
        snprintf(object, sizeof object, "version:%s/%lld", in->task, (long long)version);
        jbuf j;
        jb_init(&j);
        jb_str(&j, "kind", in->kind);
        jb_str(&j, "sha256", sha);
        jb_int(&j, "size", (int64_t)in->adapter_size);
        if (move) jb_int(&j, "active_from", cur);
        if (in->job_id) jb_int(&j, "job", in->job_id);
        rc = audit_add(s, peer_uid, "version.put", object, jb_done(&j), err);
    }
    rc = tx_end(s, rc, err);
    if (rc) {
        clad_err_prefix(err, "storing a version of task '%s': ", in->task);
        return rc;
    }
    if (version_out) *version_out = version;
    return 0;
}

/* ---- Reading ---- */

static const char version_cols[] =
    "SELECT v.id, t.name, v.version, v.kind, v.adapter_size, v.adapter_sha256, v.base_sha256, v.data_sha256, "
    "v.lineage_json, v.hparams_json, v.metrics_json, v.seed, v.clad_version, v.wall_time_s, v.job_id, "
    "v.creator_uid, v.created_ms FROM versions v JOIN tasks t ON t.id = v.task_id ";

static void version_from_row(db_stmt *st, store_version *v)
{
    memset(v, 0, sizeof *v);
    v->id = col_int64(st, 0);
    col_copy(st, 1, v->task, sizeof v->task);
    v->version = col_int64(st, 2);
    col_copy(st, 3, v->kind, sizeof v->kind);
    v->adapter_size = (size_t)col_int64(st, 4);
    col_copy(st, 5, v->sha256, sizeof v->sha256);
    col_copy(st, 6, v->base_sha256, sizeof v->base_sha256);
    col_copy(st, 7, v->data_sha256, sizeof v->data_sha256);
    v->lineage_json = col_strdup(st, 8);
    v->hparams_json = col_strdup(st, 9);
    v->metrics_json = col_strdup(st, 10);
    v->seed = (uint64_t)col_int64(st, 11);
    col_copy(st, 12, v->clad_version, sizeof v->clad_version);
    v->wall_time_s = col_double(st, 13);
    v->job_id = col_int64(st, 14);
    v->creator_uid = col_int(st, 15);
    v->created_ms = col_int64(st, 16);
}

/* Reads (task name, number) rows of sql (bound to the version's row id) into a new array. */
static int load_refs(store *s, int64_t vid, const char *sql, store_ref **out, size_t *n, clad_err *err)
{
    db_stmt *st;
    int rc = st_prepare(s, &st, err, sql, "I", vid);
    if (rc) return rc;
    row_list rows = ROW_LIST_INIT(store_ref);
    store_ref *r;
    while (rc == 0 && (r = st_step_append(s, st, &rows, "reading lineage", &rc, err))) {
        col_copy(st, 0, r->task, sizeof r->task);
        r->version = col_int64(st, 1);
    }
    st_finalize(st);
    *out = rows.items;
    *n = rows.n;
    return rc;
}

/* Parents (past records, by name and number) and runtime dependencies (live rows). */
static int load_parents(store *s, store_version *v, clad_err *err)
{
    int rc = load_refs(s, v->id,
                       "SELECT t.name, p.parent_version FROM version_parents p "
                       "JOIN tasks t ON t.id = p.parent_task_id WHERE p.child_id = ?1 ORDER BY p.position",
                       &v->parents, &v->n_parents, err);
    if (rc) return rc;
    return load_refs(s, v->id,
                     "SELECT t.name, n.version FROM version_deps d JOIN versions n ON n.id = d.needs_id "
                     "JOIN tasks t ON t.id = n.task_id WHERE d.version_id = ?1 ORDER BY d.position",
                     &v->needs, &v->n_needs, err);
}

/* Loads the adapter blob and checks it against the stored size and sha256. */
static int load_blob(store *s, store_version *v, clad_err *err)
{
    db_stmt *st;
    int rc = st_prepare(s, &st, err, "SELECT data FROM version_blobs WHERE version_id = ?1", "I", v->id);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        size_t n = 0;
        const void *data = col_blob(st, 0, &n);
        char hex[SHA256_HEX_SIZE] = "";
        if (data) sha256_hex(data, n, hex);
        if (!data || n != v->adapter_size || strcmp(hex, v->sha256) != 0)
            rc = clad_err_set(err, CLAD_ECORRUPT, "version %lld of task '%s': adapter blob sha256 mismatch",
                              (long long)v->version, v->task);
        else if (!(v->adapter = malloc(n)))
            rc = clad_err_set(err, CLAD_ENOMEM, "version %lld of task '%s': out of memory for %zu bytes",
                              (long long)v->version, v->task, n);
        else {
            memcpy(v->adapter, data, n);
            rc = 0;
        }
    } else if (rc == 0) {
        rc = clad_err_set(err, CLAD_ECORRUPT, "version %lld of task '%s': adapter blob missing",
                          (long long)v->version, v->task);
    }
    st_finalize(st);
    return rc;
}

static void version_release(store_version *v)
{
    free(v->adapter);
    free(v->parents);
    free(v->needs);
    free(v->lineage_json);
    free(v->hparams_json);
    free(v->metrics_json);
}

/* The shared body of the two getters, inside a read transaction. version == 0 means: resolve alias. */
static int version_get(store *s, const char *task, int64_t version, const char *alias, unsigned flags,
                       store_version **out, clad_err *err)
{
    int64_t tid, state;
    int rc = task_id(s, task, &tid, err);
    if (rc) return rc;
    if (alias) {
        if ((rc = alias_state(s, tid, alias, &state, &version, err))) return rc;
        if (!state) return clad_err_set(err, CLAD_ENOTFOUND, "task '%s' has no alias '%s'", task, alias);
    }
    db_stmt *st;
    char sql[640];
    snprintf(sql, sizeof sql, "%sWHERE v.task_id = ?1 AND v.version = ?2", version_cols);
    if ((rc = st_prepare(s, &st, err, sql, "II", tid, version))) return rc;
    rc = st_step(s, st, err);
    store_version *v = NULL;
    if (rc == 1) {
        v = malloc(sizeof *v);
        if (!v) abort();
        version_from_row(st, v);
        rc = 0;
    }
    st_finalize(st);
    if (rc == 0 && !v) {
        int64_t unused;
        return version_id(s, tid, task, version, &unused, err); /* words the not-found message */
    }
    if (rc == 0) rc = load_parents(s, v, err);
    if (rc == 0 && (flags & STORE_WITH_BLOB)) rc = load_blob(s, v, err);
    if (rc) {
        store_version_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

int store_version_get(store *s, const char *task, int64_t version, unsigned flags, store_version **out,
                      clad_err *err)
{
    *out = NULL;
    if (version < 1) return clad_err_set(err, CLAD_EINVAL, "version numbers start at 1, got %lld", (long long)version);
    bool began;
    int rc = tx_read_begin(s, &began, err);
    if (rc) return rc;
    rc = version_get(s, task, version, NULL, flags, out, err);
    tx_read_end(s, began);
    return rc;
}

int store_version_get_alias(store *s, const char *task, const char *alias, unsigned flags, store_version **out,
                            clad_err *err)
{
    *out = NULL;
    int rc = check_name(alias, "alias", err);
    if (rc) return rc;
    /* One read transaction for alias and version: a concurrent rollback is seen entirely or not at all. */
    bool began;
    if ((rc = tx_read_begin(s, &began, err))) return rc;
    rc = version_get(s, task, 0, alias, flags, out, err);
    tx_read_end(s, began);
    return rc;
}

int store_versions_list(store *s, const char *task, store_version **out, size_t *n, clad_err *err)
{
    *out = NULL;
    *n = 0;
    bool began;
    int rc = tx_read_begin(s, &began, err);
    if (rc) return rc;
    int64_t tid;
    db_stmt *st = NULL;
    char sql[640];
    snprintf(sql, sizeof sql, "%sWHERE v.task_id = ?1 ORDER BY v.version", version_cols);
    if ((rc = task_id(s, task, &tid, err)) == 0) rc = st_prepare(s, &st, err, sql, "I", tid);
    row_list rows = ROW_LIST_INIT(store_version);
    store_version *r;
    while (rc == 0 && (r = st_step_append(s, st, &rows, "listing versions", &rc, err))) version_from_row(st, r);
    st_finalize(st);
    store_version *a = rows.items;
    for (size_t i = 0; rc == 0 && i < rows.n; i++) rc = load_parents(s, &a[i], err);
    tx_read_end(s, began);
    if (rc < 0) {
        store_versions_free(a, rows.n);
        return rc;
    }
    *out = a;
    *n = rows.n;
    return 0;
}

void store_version_free(store_version *v)
{
    if (!v) return;
    version_release(v);
    free(v);
}

void store_versions_free(store_version *v, size_t n)
{
    if (!v) return;
    for (size_t i = 0; i < n; i++) version_release(&v[i]);
    free(v);
}

/* ---- Deleting ---- */

/* What still points at version row ?1, as text (NULL when none): its aliases, and the versions that
 * need it at run time. */
static const char holders_sql[] =
    "SELECT (SELECT group_concat(name, ', ') FROM aliases WHERE version_id = ?1), "
    "(SELECT group_concat('version ' || v.version || ' of task ''' || t.name || '''', ', ') "
    " FROM version_deps d JOIN versions v ON v.id = d.version_id JOIN tasks t ON t.id = v.task_id "
    " WHERE d.needs_id = ?1)";

/* Deletes one version row (blob, parent and dependency rows cascade) unless an alias points at it or
 * another version needs it. */
static int delete_one(store *s, const char *task, int64_t version, int64_t vid, clad_err *err)
{
    db_stmt *st;
    int rc = st_prepare(s, &st, err, holders_sql, "I", vid);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1 && col_text(st, 0))
        rc = clad_err_set(err, CLAD_ECONFLICT, "version %lld of task '%s' is the target of alias(es) %s; move "
                          "them (or delete any but active) first", (long long)version, task, col_text(st, 0));
    else if (rc == 1 && col_text(st, 1))
        rc = clad_err_set(err, CLAD_ECONFLICT, "version %lld of task '%s' is needed at run time by %.300s; "
                          "delete those first", (long long)version, task, col_text(st, 1));
    else if (rc == 1)
        rc = 0;
    st_finalize(st);
    if (rc) return rc;
    return st_exec(s, err, "DELETE FROM versions WHERE id = ?1", "I", vid);
}

int store_version_delete(store *s, const char *task, int64_t version, int peer_uid, clad_err *err)
{
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t tid, vid;
    rc = task_id(s, task, &tid, err);
    if (rc == 0) rc = version_id(s, tid, task, version, &vid, err);
    if (rc == 0) rc = delete_one(s, task, version, vid, err);
    if (rc == 0) {
        char object[STORE_NAME_MAX + 32];
        snprintf(object, sizeof object, "version:%s/%lld", task, (long long)version);
        rc = audit_add(s, peer_uid, "version.delete", object, "{}", err);
    }
    rc = tx_end(s, rc, err);
    /* Give freed pages back to the file system (auto_vacuum = INCREMENTAL); best effort. */
    if (rc == 0) st_reclaim(s);
    return rc;
}

int store_gc(store *s, const char *task, int keep, int peer_uid, store_gc_stats *stats, clad_err *err)
{
    if (stats) *stats = (store_gc_stats){0, 0};
    if (keep < 1) return clad_err_set(err, CLAD_EINVAL, "retention must keep at least 1 version, got %d", keep);
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t tid = 0;
    if (task) rc = task_id(s, task, &tid, err);
    /* Kept: the newest `keep` of each task in scope, every version outside the scope, every alias
     * target, and (transitively) every version a kept one needs at run time. Victims are the rest; they
     * are collected first and deleted after, so the scan never sees its own deletions, newest first so
     * that a dependent goes before the versions it needs. */
    static const char victims[] =
        "WITH RECURSIVE ranked AS ("
        "  SELECT id, task_id, row_number() OVER (PARTITION BY task_id ORDER BY version DESC) AS newest"
        "  FROM versions),"
        " kept(id) AS ("
        "  SELECT id FROM ranked WHERE newest <= ?2 OR (?1 IS NOT NULL AND task_id != ?1)"
        "    OR id IN (SELECT version_id FROM aliases)"
        "  UNION SELECT d.needs_id FROM version_deps d JOIN kept k ON k.id = d.version_id) "
        "SELECT v.id, t.name, v.version, v.adapter_size FROM versions v JOIN tasks t ON t.id = v.task_id "
        "WHERE (?1 IS NULL OR v.task_id = ?1) AND v.id NOT IN (SELECT id FROM kept) ORDER BY v.id DESC";
    typedef struct victim {
        int64_t id, version, size;
        char task[STORE_NAME_MAX + 1];
    } victim;
    row_list rows = ROW_LIST_INIT(victim);
    db_stmt *st = NULL;
    if (rc == 0) rc = st_prepare(s, &st, err, victims, "Ni", tid, keep);
    victim *r;
    while (rc == 0 && (r = st_step_append(s, st, &rows, "collecting versions to delete", &rc, err))) {
        r->id = col_int64(st, 0);
        col_copy(st, 1, r->task, sizeof r->task);
        r->version = col_int64(st, 2);
        r->size = col_int64(st, 3);
    }
    st_finalize(st);
    victim *vs = rows.items;
    size_t n = rows.n;
    int64_t bytes = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = st_exec(s, err, "DELETE FROM versions WHERE id = ?1", "I", vs[i].id);
        if (rc) break;
        char object[STORE_NAME_MAX + 32];
        snprintf(object, sizeof object, "version:%s/%lld", vs[i].task, (long long)vs[i].version);
        jbuf j;
        jb_init(&j);
        jb_int(&j, "keep", keep);
        rc = audit_add(s, peer_uid, "version.gc", object, jb_done(&j), err);
        bytes += vs[i].size;
    }
    free(vs);
    rc = tx_end(s, rc, err);
    if (rc == 0 && n) st_reclaim(s);
    if (rc == 0 && stats) *stats = (store_gc_stats){(int64_t)n, bytes};
    return rc;
}
