/* The audit log: one row per write with the peer uid, the action, the object and a JSON detail. */
#include "storage/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jb_init(jbuf *j)
{
    j->buf[0] = '{';
    j->buf[1] = '\0';
    j->n = 1;
    j->truncated = false;
}

static void jb_raw(jbuf *j, const char *p, size_t n)
{
    /* Keep room for the closing brace; a detail that does not fit is cut at a key boundary. */
    if (j->truncated || j->n + n + 2 > sizeof j->buf) {
        j->truncated = true;
        return;
    }
    memcpy(j->buf + j->n, p, n);
    j->n += n;
    j->buf[j->n] = '\0';
}

static void jb_key(jbuf *j, const char *key)
{
    char tmp[80];
    int n = snprintf(tmp, sizeof tmp, "%s\"%s\":", j->n > 1 ? "," : "", key);
    jb_raw(j, tmp, (size_t)n);
}

void jb_str(jbuf *j, const char *key, const char *val)
{
    char tmp[2 * STORE_REASON_MAX + 8];
    size_t n = 0;
    tmp[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)(val ? val : ""); *p && n < sizeof tmp - 8; p++) {
        if (*p == '"' || *p == '\\') {
            tmp[n++] = '\\';
            tmp[n++] = (char)*p;
        } else if (*p < 0x20) {
            n += (size_t)snprintf(tmp + n, sizeof tmp - n, "\\u%04x", *p);
        } else {
            tmp[n++] = (char)*p;
        }
    }
    tmp[n++] = '"';
    size_t before = j->n;
    jb_key(j, key);
    jb_raw(j, tmp, n);
    if (j->truncated) { /* drop a dangling key */
        j->n = before;
        j->buf[j->n] = '\0';
    }
}

void jb_int(jbuf *j, const char *key, int64_t val)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)val);
    size_t before = j->n;
    jb_key(j, key);
    jb_raw(j, tmp, (size_t)n);
    if (j->truncated) {
        j->n = before;
        j->buf[j->n] = '\0';
    }
}

const char *jb_done(jbuf *j)
{
    j->buf[j->n] = '}';
    j->buf[j->n + 1] = '\0';
    return j->buf;
}

int audit_add(store *s, int peer_uid, const char *action, const char *object, const char *detail_json,
              clad_err *err)
{
    int rc = st_exec(s, err,
                     "INSERT INTO audit (time_ms, peer_uid, action, object, detail_json) VALUES (?1,?2,?3,?4,?5)",
                     "Iittt", now_ms(), peer_uid, action, object, detail_json ? detail_json : "{}");
    /* Every audited write other nodes must act on also enters the change feed, in the same transaction. */
    return rc ? rc : change_add(s, action, object, err);
}

int store_audit_list(store *s, int64_t after_id, size_t limit, store_audit **out, size_t *n, clad_err *err)
{
    *out = NULL;
    *n = 0;
    db_stmt *st;
    int rc = st_prepare(s, &st, err,
                        "SELECT id, time_ms, peer_uid, action, object, detail_json FROM audit "
                        "WHERE id > ?1 ORDER BY id LIMIT ?2", "II", after_id,
                        limit ? (int64_t)limit : INT64_MAX);
    if (rc) return rc;
    row_list rows = ROW_LIST_INIT(store_audit);
    store_audit *r;
    while (rc == 0 && (r = st_step_append(s, st, &rows, "listing the audit log", &rc, err))) {
        r->id = col_int64(st, 0);
        r->time_ms = col_int64(st, 1);
        r->peer_uid = col_int(st, 2);
        col_copy(st, 3, r->action, sizeof r->action);
        col_copy(st, 4, r->object, sizeof r->object);
        r->detail_json = col_strdup(st, 5);
    }
    st_finalize(st);
    if (rc < 0) {
        store_audit_free(rows.items, rows.n);
        return rc;
    }
    *out = rows.items;
    *n = rows.n;
    return 0;
}

void store_audit_free(store_audit *a, size_t n)
{
    if (!a) return;
    for (size_t i = 0; i < n; i++) free(a[i].detail_json);
    free(a);
}
