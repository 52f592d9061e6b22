/* Base models and tasks. */
#include "storage/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* ---- Bases ---- */

int store_base_put(store *s, const store_base_in *in, int peer_uid, clad_err *err)
{
    int rc = check_name(in->name, "base", err);
    if (rc) return rc;
    if ((rc = check_json(s, in->config_json, "object", false, "base config", err))) return rc;
    char hex[SHA256_HEX_SIZE] = "";
    if (in->weights) {
        if (in->weights_size == 0 || in->weights_size > STORE_BLOB_MAX)
            return clad_err_set(err, in->weights_size ? CLAD_ETOOLARGE : CLAD_EINVAL,
                                "base '%s': weights must be 1..%u bytes, got %zu", in->name, STORE_BLOB_MAX,
                                in->weights_size);
        sha256_hex(in->weights, in->weights_size, hex);
        if (in->weights_sha256 && strcmp(in->weights_sha256, hex) != 0)
            return clad_err_set(err, CLAD_EINVAL, "base '%s': weights do not match the given sha256 %s",
                                in->name, in->weights_sha256);
    } else {
        if (!in->weights_path || !*in->weights_path || strlen(in->weights_path) > 4096)
            return clad_err_set(err, CLAD_EINVAL, "base '%s': give weights or a weights path (up to 4096 "
                                "bytes)", in->name);
        if (!sha256_hex_valid(in->weights_sha256))
            return clad_err_set(err, CLAD_EINVAL, "base '%s': a weights path needs the weights' sha256 as "
                                "64 lowercase hex digits", in->name);
        memcpy(hex, in->weights_sha256, SHA256_HEX_SIZE);
    }

    if ((rc = tx_begin_write(s, err))) return rc;
    /* A base trained by a job commits only while this node holds the job's lease, as a version does. */
    int64_t id;
    rc = in->job_id ? job_commit_check(s, in->job_id, "a base", err) : 0;
    if (rc == 0) rc = st_int(s, &id, err, "SELECT id FROM bases WHERE name = ?1", "t", in->name);
    if (rc == 0) rc = clad_err_set(err, CLAD_ECONFLICT, "base '%s' already exists", in->name);
    else if (rc == CLAD_ENOTFOUND) rc = 0;
    if (rc == 0)
        rc = st_exec(s, err,
                     "INSERT INTO bases (name, config_json, weights_path, weights_size, weights_sha256, "
                     "created_ms, weights) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                     "tttItIb", in->name, in->config_json, in->weights ? NULL : in->weights_path,
                     (int64_t)in->weights_size, hex, now_ms(), in->weights, in->weights_size);
    if (rc == 0) {
        char object[96];
        snprintf(object, sizeof object, "base:%s", in->name);
        jbuf j;
        jb_init(&j);
        jb_str(&j, "sha256", hex);
        jb_int(&j, "size", (int64_t)in->weights_size);
        jb_str(&j, "storage", in->weights ? "inline" : "path");
        if (in->job_id) jb_int(&j, "job", in->job_id);
        rc = audit_add(s, peer_uid, "base.put", object, jb_done(&j), err);
    }
    if (rc == 0 && in->job_id) rc = job_commit_done(s, in->job_id, 0, err);
    return tx_end(s, rc, err);
}

static const char base_cols[] =
    "SELECT id, name, config_json, weights_path, weights_size, weights_sha256, created_ms FROM bases ";

static void base_from_row(db_stmt *st, store_base *b)
{
    memset(b, 0, sizeof *b);
    b->id = col_int64(st, 0);
    col_copy(st, 1, b->name, sizeof b->name);
    b->config_json = col_strdup(st, 2);
    b->weights_path = col_strdup(st, 3);
    b->weights_size = (size_t)col_int64(st, 4);
    col_copy(st, 5, b->weights_sha256, sizeof b->weights_sha256);
    b->created_ms = col_int64(st, 6);
}

/* Loads and verifies an inline weights blob into b. */
static int base_load_weights(store *s, store_base *b, clad_err *err)
{
    db_stmt *st;
    int rc = st_prepare(s, &st, err, "SELECT weights FROM bases WHERE id = ?1", "I", b->id);
    if (rc) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        size_t n = 0;
        const void *data = col_blob(st, 0, &n);
        char hex[SHA256_HEX_SIZE];
        rc = 0;
        if (data) {
            sha256_hex(data, n, hex);
            if (n != b->weights_size || strcmp(hex, b->weights_sha256) != 0)
                rc = clad_err_set(err, CLAD_ECORRUPT, "base '%s': weights blob sha256 mismatch", b->name);
            else if (!(b->weights = malloc(n)))
                rc = clad_err_set(err, CLAD_ENOMEM, "base '%s': out of memory for %zu bytes of weights",
                                  b->name, n);
            else
                memcpy(b->weights, data, n);
        }
    } else if (rc == 0) {
        rc = clad_err_set(err, CLAD_ENOTFOUND, "base '%s' disappeared while loading", b->name);
    }
    st_finalize(st);
    return rc;
}

int store_base_get(store *s, const char *name, unsigned flags, store_base **out, clad_err *err)
{
    *out = NULL;
    int rc = check_name(name, "base", err);
    if (rc) return rc;
    bool began;
    if ((rc = tx_read_begin(s, &began, err))) return rc;
    db_stmt *st;
    char sql[256];
    snprintf(sql, sizeof sql, "%sWHERE name = ?1", base_cols);
    rc = st_prepare(s, &st, err, sql, "t", name);
    store_base *b = NULL;
    if (rc == 0) {
        rc = st_step(s, st, err);
        if (rc == 1) {
            b = malloc(sizeof *b);
            if (!b) abort();
            base_from_row(st, b);
            rc = 0;
        } else if (rc == 0) {
            rc = clad_err_set(err, CLAD_ENOTFOUND, "unknown base '%s'", name);
        }
        st_finalize(st);
    }
    if (rc == 0 && (flags & STORE_WITH_BLOB)) rc = base_load_weights(s, b, err);
    tx_read_end(s, began);
    if (rc) {
        store_base_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

int store_bases_list(store *s, store_base **out, size_t *n, clad_err *err)
{
    *out = NULL;
    *n = 0;
    db_stmt *st;
    char sql[256];
    snprintf(sql, sizeof sql, "%sORDER BY id", base_cols);
    int rc = st_prepare(s, &st, err, sql, NULL);
    if (rc) return rc;
    row_list rows = ROW_LIST_INIT(store_base);
    store_base *r;
    while (rc == 0 && (r = st_step_append(s, st, &rows, "listing bases", &rc, err))) base_from_row(st, r);
    st_finalize(st);
    if (rc < 0) {
        store_bases_free(rows.items, rows.n);
        return rc;
    }
    *out = rows.items;
    *n = rows.n;
    return 0;
}

static void base_release(store_base *b)
{
    free(b->config_json);
    free(b->weights);
    free(b->weights_path);
}

void store_base_free(store_base *b)
{
    if (!b) return;
    base_release(b);
    free(b);
}

void store_bases_free(store_base *b, size_t n)
{
    if (!b) return;
    for (size_t i = 0; i < n; i++) base_release(&b[i]);
    free(b);
}

/* ---- Tasks ---- */

int task_validate(store *s, const store_task_in *in, clad_err *err)
{
    int rc = check_name(in->name, "task", err);
    if (rc || (rc = check_name(in->base, "base", err))) return rc;
    const char *kind = in->kind ? in->kind : "task";
    if (strcmp(kind, "task") != 0 && strcmp(kind, "merge") != 0)
        return clad_err_set(err, CLAD_EINVAL, "task '%s': kind must be \"task\" or \"merge\", not \"%.32s\"",
                            in->name, kind);
    int min_classes = strcmp(kind, "task") == 0 ? 1 : 0;
    if (in->n_classes < min_classes || in->n_classes > STORE_CLASSES_MAX)
        return clad_err_set(err, CLAD_EINVAL, "task '%s': n_classes must be %d..%d, got %d", in->name,
                            min_classes, STORE_CLASSES_MAX, in->n_classes);
    if ((rc = check_json(s, in->label_names_json, "array", true, "label names", err))) return rc;
    if (in->label_names_json) {
        json_t *names = json_loads(in->label_names_json, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        bool ok = json_array_size(names) == (size_t)in->n_classes;
        for (size_t i = 0; ok && i < json_array_size(names); i++) ok = json_is_string(json_array_get(names, i));
        json_decref(names);
        if (!ok)
            return clad_err_set(err, CLAD_EINVAL, "task '%s': label names must be an array of %d strings",
                                in->name, in->n_classes);
    }
    return 0;
}

int task_insert(store *s, const store_task_in *in, int peer_uid, clad_err *err)
{
    const char *kind = in->kind ? in->kind : "task";
    int64_t base_id = 0, existing;
    int rc = st_int(s, &existing, err, "SELECT id FROM tasks WHERE name = ?1", "t", in->name);
    if (rc == 0) rc = clad_err_set(err, CLAD_ECONFLICT, "task '%s' already exists", in->name);
    else if (rc == CLAD_ENOTFOUND) rc = 0;
    if (rc == 0) {
        rc = st_int(s, &base_id, err, "SELECT id FROM bases WHERE name = ?1", "t", in->base);
        if (rc == CLAD_ENOTFOUND) rc = clad_err_set(err, rc, "unknown base '%s'", in->base);
    }
    if (rc == 0)
        rc = st_exec(s, err,
                     "INSERT INTO tasks (name, kind, base_id, n_classes, label_names_json, created_ms) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6)", "ttIitI", in->name, kind, base_id, in->n_classes,
                     in->label_names_json, now_ms());
    if (rc == 0) {
        char object[96];
        snprintf(object, sizeof object, "task:%s", in->name);
        jbuf j;
        jb_init(&j);
        jb_str(&j, "base", in->base);
        jb_str(&j, "kind", kind);
        jb_int(&j, "n_classes", in->n_classes);
        rc = audit_add(s, peer_uid, "task.create", object, jb_done(&j), err);
    }
    return rc;
}

int store_task_create(store *s, const store_task_in *in, int peer_uid, clad_err *err)
{
    int rc = task_validate(s, in, err);
    if (rc || (rc = tx_begin_write(s, err))) return rc;
    return tx_end(s, task_insert(s, in, peer_uid, err), err);
}

static const char task_cols[] =
    "SELECT t.id, t.name, b.name, t.kind, t.n_classes, t.label_names_json, "
    "(SELECT count(*) FROM versions v WHERE v.task_id = t.id), t.next_version - 1, t.created_ms "
    "FROM tasks t JOIN bases b ON b.id = t.base_id ";

static void task_from_row(db_stmt *st, store_task *t)
{
    memset(t, 0, sizeof *t);
    t->id = col_int64(st, 0);
    col_copy(st, 1, t->name, sizeof t->name);
    col_copy(st, 2, t->base, sizeof t->base);
    col_copy(st, 3, t->kind, sizeof t->kind);
    t->n_classes = col_int(st, 4);
    t->label_names_json = col_strdup(st, 5);
    t->n_versions = col_int64(st, 6);
    t->latest_version = col_int64(st, 7);
    t->created_ms = col_int64(st, 8);
}

int store_task_get(store *s, const char *name, store_task **out, clad_err *err)
{
    *out = NULL;
    int rc = check_name(name, "task", err);
    if (rc) return rc;
    db_stmt *st;
    char sql[512];
    snprintf(sql, sizeof sql, "%sWHERE t.name = ?1", task_cols);
    if ((rc = st_prepare(s, &st, err, sql, "t", name))) return rc;
    rc = st_step(s, st, err);
    if (rc == 1) {
        store_task *t = malloc(sizeof *t);
        if (!t) abort();
        task_from_row(st, t);
        *out = t;
        rc = 0;
    } else if (rc == 0) {
        rc = clad_err_set(err, CLAD_ENOTFOUND, "unknown task '%s'", name);
    }
    st_finalize(st);
    return rc;
}

int store_tasks_list(store *s, store_task **out, size_t *n, clad_err *err)
{
    *out = NULL;
    *n = 0;
    db_stmt *st;
    char sql[512];
    snprintf(sql, sizeof sql, "%sORDER BY t.id", task_cols);
    int rc = st_prepare(s, &st, err, sql, NULL);
    if (rc) return rc;
    row_list rows = ROW_LIST_INIT(store_task);
    store_task *r;
    while (rc == 0 && (r = st_step_append(s, st, &rows, "listing tasks", &rc, err))) task_from_row(st, r);
    st_finalize(st);
    if (rc < 0) {
        store_tasks_free(rows.items, rows.n);
        return rc;
    }
    *out = rows.items;
    *n = rows.n;
    return 0;
}

void store_task_free(store_task *t)
{
    if (!t) return;
    free(t->label_names_json);
    free(t);
}

void store_tasks_free(store_task *t, size_t n)
{
    if (!t) return;
    for (size_t i = 0; i < n; i++) free(t[i].label_names_json);
    free(t);
}
