/* Metrics: entries of the continual-learning accuracy matrix and evaluation results, both naming
 * versions by (task, number) so they outlive a deleted version. */
#include "storage/store_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_numbers(double accuracy, double loss, int64_t n_samples, clad_err *err)
{
    /* SQLite stores NaN as NULL, so non-finite values are refused here rather than silently lost. */
    if (!isfinite(accuracy) || accuracy < 0 || accuracy > 1)
        return clad_err_set(err, CLAD_EINVAL, "accuracy must be in [0, 1], got %g", accuracy);
    if (!isfinite(loss)) return clad_err_set(err, CLAD_EINVAL, "loss must be finite");
    if (n_samples < 0) return clad_err_set(err, CLAD_EINVAL, "sample count must be >= 0");
    return 0;
}

/* Task id of an existing version (version 0 allowed when zero_ok: "no task-specific version"). */
static int ref_resolve(store *s, const store_ref *r, bool zero_ok, int64_t *tid, clad_err *err)
{
    int rc = task_id(s, r->task, tid, err);
    if (rc) return rc;
    if (zero_ok && r->version == 0) return 0;
    int64_t vid;
    return version_id(s, *tid, r->task, r->version, &vid, err);
}

int store_matrix_add(store *s, const store_acc_entry *e, size_t n, int peer_uid, clad_err *err)
{
    for (size_t i = 0; i < n; i++) {
        int rc = check_numbers(e[i].accuracy, e[i].loss, e[i].n_samples, err);
        if (rc) {
            clad_err_prefix(err, "accuracy matrix entry %zu: ", i);
            return rc;
        }
    }
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t t = now_ms();
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int64_t after_tid, eval_tid;
        rc = ref_resolve(s, &e[i].after, false, &after_tid, err);
        if (rc == 0) rc = ref_resolve(s, &e[i].evaluated, true, &eval_tid, err);
        if (rc == 0)
            rc = st_exec(s, err,
                         "INSERT INTO accuracy_matrix (after_task_id, after_version, eval_task_id, eval_version, "
                         "accuracy, loss, n_samples, peer_uid, time_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                         "IIIIddIiI", after_tid, e[i].after.version, eval_tid, e[i].evaluated.version,
                         e[i].accuracy, e[i].loss, e[i].n_samples, peer_uid, t);
        if (rc) clad_err_prefix(err, "accuracy matrix entry %zu: ", i);
    }
    if (rc == 0 && n) {
        char object[STORE_NAME_MAX + 32];
        snprintf(object, sizeof object, "version:%s/%lld", e[0].after.task, (long long)e[0].after.version);
        jbuf j;
        jb_init(&j);
        jb_int(&j, "entries", (int64_t)n);
        rc = audit_add(s, peer_uid, "matrix.add", object, jb_done(&j), err);
    }
    return tx_end(s, rc, err);
}

int store_matrix_list(store *s, const char *task, store_acc_entry **out, size_t *n, clad_err *err)
{
    *out = NULL;
    *n = 0;
    bool began;
    int rc = tx_read_begin(s, &began, err);
    if (rc) return rc;
    int64_t tid = 0;
    if (task) rc = task_id(s, task, &tid, err);
    db_stmt *st = NULL;
    if (rc == 0)
        rc = st_prepare(s, &st, err,
                        "SELECT ta.name, m.after_version, te.name, m.eval_version, m.accuracy, m.loss, "
                        "m.n_samples, m.time_ms FROM accuracy_matrix m "
                        "JOIN tasks ta ON ta.id = m.after_task_id JOIN tasks te ON te.id = m.eval_task_id "
                        "WHERE ?1 IS NULL OR m.after_task_id = ?1 ORDER BY m.id", "N", tid);
    row_list rows = ROW_LIST_INIT(store_acc_entry);
    store_acc_entry *r;
    while (rc == 0 && (r = st_step_append(s, st, &rows, "listing the accuracy matrix", &rc, err))) {
        col_copy(st, 0, r->after.task, sizeof r->after.task);
        r->after.version = col_int64(st, 1);
        col_copy(st, 2, r->evaluated.task, sizeof r->evaluated.task);
        r->evaluated.version = col_int64(st, 3);
        r->accuracy = col_double(st, 4);
        r->loss = col_double(st, 5);
        r->n_samples = col_int64(st, 6);
        r->time_ms = col_int64(st, 7);
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

void store_matrix_free(store_acc_entry *e) { free(e); }

int store_eval_add(store *s, const store_eval *in, int peer_uid, int64_t *id_out, clad_err *err)
{
    int rc = check_numbers(in->accuracy, in->loss, in->n_samples, err);
    if (rc) return rc;
    if (in->data_sha256[0] && !sha256_hex_valid(in->data_sha256))
        return clad_err_set(err, CLAD_EINVAL, "evaluation data sha256 must be 64 lowercase hex digits");
    if ((rc = check_json(s, in->detail_json, "object", true, "evaluation detail", err))) return rc;
    if ((rc = tx_begin_write(s, err))) return rc;
    int64_t tid, id = 0;
    rc = ref_resolve(s, &in->version, false, &tid, err);
    if (rc == 0)
        rc = st_int(s, &id, err,
                    "INSERT INTO evaluations (task_id, version, data_sha256, accuracy, loss, n_samples, "
                    "detail_json, peer_uid, time_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9) RETURNING id",
                    "IItddItiI", tid, in->version.version, in->data_sha256[0] ? in->data_sha256 : NULL,
                    in->accuracy, in->loss, in->n_samples, in->detail_json ? in->detail_json : "{}",
                    peer_uid, now_ms());
    if (rc == 0) {
        char object[STORE_NAME_MAX + 32];
        snprintf(object, sizeof object, "version:%s/%lld", in->version.task, (long long)in->version.version);
        jbuf j;
        jb_init(&j);
        jb_int(&j, "evaluation", id);
        rc = audit_add(s, peer_uid, "eval.add", object, jb_done(&j), err);
    }
    rc = tx_end(s, rc, err);
    if (rc == 0 && id_out) *id_out = id;
    return rc;
}

int store_evals_list(store *s, const char *task, int64_t version, store_eval **out, size_t *n, clad_err *err)
{
    *out = NULL;
    *n = 0;
    bool began;
    int rc = tx_read_begin(s, &began, err);
    if (rc) return rc;
    int64_t tid = 0;
    db_stmt *st = NULL;
    if ((rc = task_id(s, task, &tid, err)) == 0)
        rc = st_prepare(s, &st, err,
                        "SELECT id, version, data_sha256, accuracy, loss, n_samples, detail_json, peer_uid, "
                        "time_ms FROM evaluations WHERE task_id = ?1 AND (?2 = 0 OR version = ?2) ORDER BY id",
                        "II", tid, version);
    row_list rows = ROW_LIST_INIT(store_eval);
    store_eval *r;
    while (rc == 0 && (r = st_step_append(s, st, &rows, "listing evaluations", &rc, err))) {
        r->id = col_int64(st, 0);
        snprintf(r->version.task, sizeof r->version.task, "%s", task);
        r->version.version = col_int64(st, 1);
        col_copy(st, 2, r->data_sha256, sizeof r->data_sha256);
        r->accuracy = col_double(st, 3);
        r->loss = col_double(st, 4);
        r->n_samples = col_int64(st, 5);
        r->detail_json = col_strdup(st, 6);
        r->peer_uid = col_int(st, 7);
        r->time_ms = col_int64(st, 8);
    }
    st_finalize(st);
    tx_read_end(s, began);
    if (rc < 0) {
        store_evals_free(rows.items, rows.n);
        return rc;
    }
    *out = rows.items;
    *n = rows.n;
    return 0;
}

void store_evals_free(store_eval *e, size_t n)
{
    if (!e) return;
    for (size_t i = 0; i < n; i++) free(e[i].detail_json);
    free(e);
}
