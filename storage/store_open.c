/* Opening and closing a store through its backend's driver, schema migrations, the store's own
 * invariant checks, and the calls the drivers answer per engine (size limit, backup, snapshots). */
#include "storage/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Applies every migration the database lacks, in one write transaction. */
static int migrate(store *s, clad_err *err)
{
    const db_ops *o = s->db->ops;
    int rc = tx_begin_write(s, err);
    if (rc) return rc;
    int64_t from = 0;
    bool foreign = false;
    /* Read again under the write lock: another process may have migrated in the meantime. */
    rc = o->header_read(s->db, &from, &foreign, err);
    for (int64_t v = from; rc == 0 && v < STORE_SCHEMA_VERSION; v++) {
        rc = o->exec(s->db, o->migrations[v], err);
        if (rc) clad_err_prefix(err, "migration %lld: ", (long long)v + 1);
    }
    if (rc == 0 && from < STORE_SCHEMA_VERSION) {
        rc = o->header_write(s->db, STORE_SCHEMA_VERSION, err);
        if (rc == 0) {
            jbuf j;
            jb_init(&j);
            jb_int(&j, "from", from);
            jb_int(&j, "to", STORE_SCHEMA_VERSION);
            rc = audit_add(s, STORE_UID_CLAD, "store.migrate", "store", jb_done(&j), err);
        }
    }
    return tx_end(s, rc, err);
}

/* Everything store_open, store_open_reader and store_open_worker share: connection, header checks. */
static store *open_common(const char *target, bool reader, bool worker, clad_err *err)
{
    if (!target || !*target) {
        clad_err_set(err, CLAD_EINVAL, "store path is empty");
        return NULL;
    }
    const db_ops *o = db_ops_for(target);
    char name[512];
    o->display(target, name, sizeof name);
    store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(name))) {
        free(s);
        clad_err_set(err, CLAD_ENOMEM, "out of memory opening store %s", name);
        return NULL;
    }
    s->readonly = reader;
    s->busy_ms = STORE_BUSY_TIMEOUT_MS;
    if (!(s->db = o->open(target, reader, err))) goto fail_close;

    /* Read the header before anything writes: a newer schema must leave the database untouched. The
     * values come from one read transaction, because another process may be creating the schema now. */
    int64_t version = 0;
    bool foreign = false, began;
    int rc = tx_read_begin(s, &began, err);
    if (rc == 0) rc = o->header_read(s->db, &version, &foreign, err);
    tx_read_end(s, began);
    if (rc) {
        clad_err_prefix(err, "opening: ");
        goto fail_close;
    }
    if (version > STORE_SCHEMA_VERSION) {
        clad_err_set(err, CLAD_EVERSION, "store schema version %lld is newer than this clad (%d); "
                     "upgrade clad", (long long)version, STORE_SCHEMA_VERSION);
        goto fail_close;
    }
    if (foreign) {
        clad_err_set(err, CLAD_EINVAL, "%s is not a clad store (it is some other %s database)", s->path, o->engine);
        goto fail_close;
    }
    if (reader || worker) {
        if (version != STORE_SCHEMA_VERSION) {
            clad_err_set(err, CLAD_EVERSION, "store schema version %lld is older than this clad (%d); "
                         "open it read-write once (start cladd) to migrate it",
                         (long long)version, STORE_SCHEMA_VERSION);
            goto fail_close;
        }
        /* A worker's writes are as durable and as careful with deleted data as the main handle's. */
        if (worker && o->writer_setup(s->db, false, err)) goto fail_close;
        return s;
    }
    if (version > 0 && o->check(s->db, STORE_CHECK_QUICK, err)) goto fail_close;
    if (o->writer_setup(s->db, version == 0, err)) goto fail_close;
    if (version < STORE_SCHEMA_VERSION && migrate(s, err)) goto fail_close;
    return s;

fail_close:
    store_close(s);
    return NULL;
}

store *store_open(const char *target, clad_err *err) { return open_common(target, false, false, err); }

store *store_open_reader(const char *target, clad_err *err) { return open_common(target, true, false, err); }

store *store_open_worker(const char *target, clad_err *err) { return open_common(target, false, true, err); }

int store_set_busy_timeout(store *s, int ms)
{
    int old = s->busy_ms;
    s->busy_ms = ms < 0 ? 0 : ms;
    s->db->ops->busy_timeout(s->db, s->busy_ms);
    return old;
}

const char *store_backend(const store *s) { return s->db->ops->name; }

int64_t store_change_mark(store *s) { return s->db->ops->change_mark(s->db); }

void store_close(store *s)
{
    if (!s) return;
    if (s->in_snapshot) store_snapshot_end(s);
    if (s->db) s->db->ops->close(s->db);
    free(s->path);
    free(s);
}

/* ---- Checks ---- */

/* Re-hashes every stored blob (adapters and inline base weights). */
static int check_blobs(store *s, clad_err *err)
{
    db_stmt *st;
    int rc = st_prepare(s, &st, err,
                        "SELECT t.name, v.version, v.adapter_size, v.adapter_sha256, b.data "
                        "FROM versions v JOIN tasks t ON t.id = v.task_id "
                        "LEFT JOIN version_blobs b ON b.version_id = v.id ORDER BY v.id", NULL);
    if (rc) return rc;
    while ((rc = st_step(s, st, err)) == 1) {
        const char *task = col_text(st, 0);
        long long ver = col_int64(st, 1);
        size_t n = 0;
        const void *data = col_blob(st, 4, &n);
        char hex[SHA256_HEX_SIZE];
        if (!data) {
            rc = clad_err_set(err, CLAD_ECORRUPT, "version %lld of task '%s': adapter blob missing", ver, task);
            break;
        }
        sha256_hex(data, n, hex);
        if ((int64_t)n != col_int64(st, 2) || strcmp(hex, col_text(st, 3)) != 0) {
            rc = clad_err_set(err, CLAD_ECORRUPT, "version %lld of task '%s': adapter blob sha256 mismatch",
                              ver, task);
            break;
        }
    }
    st_finalize(st);
    if (rc < 0) return rc;

    rc = st_prepare(s, &st, err, "SELECT name, weights_sha256, weights FROM bases WHERE weights IS NOT NULL",
                    NULL);
    if (rc) return rc;
    while ((rc = st_step(s, st, err)) == 1) {
        char hex[SHA256_HEX_SIZE];
        size_t n = 0;
        const void *data = col_blob(st, 2, &n);
        sha256_hex(data, n, hex);
        if (strcmp(hex, col_text(st, 1)) != 0) {
            rc = clad_err_set(err, CLAD_ECORRUPT, "base '%s': weights blob sha256 mismatch", col_text(st, 0));
            break;
        }
    }
    st_finalize(st);
    return rc < 0 ? rc : 0;
}

/* Invariants the schema cannot express; each query returns a description of the first violation. */
static const char *const invariant_queries[] = {
    "SELECT 'task ''' || t.name || ''' has versions but no active alias' FROM tasks t "
    "WHERE EXISTS (SELECT 1 FROM versions v WHERE v.task_id = t.id) "
    "AND NOT EXISTS (SELECT 1 FROM aliases a WHERE a.task_id = t.id AND a.name = 'active')",
    "SELECT 'alias ''' || a.name || ''' disagrees with its history row' FROM aliases a "
    "JOIN alias_history h ON h.id = a.state_id JOIN versions v ON v.id = a.version_id "
    "WHERE h.new_version IS DISTINCT FROM v.version OR h.task_id != a.task_id OR h.alias != a.name",
    "SELECT 'alias history row ' || h.id || ' names a version that was never written' "
    "FROM alias_history h JOIN tasks t ON t.id = h.task_id "
    "WHERE h.old_version >= t.next_version OR h.new_version >= t.next_version",
    "SELECT 'version ' || v.version || ' of task ''' || t.name || ''' is at or past the next number' "
    "FROM versions v JOIN tasks t ON t.id = v.task_id WHERE v.version >= t.next_version",
    "SELECT 'version ' || v.version || ' was produced by job ' || v.job_id || ' which did not succeed' "
    "FROM versions v JOIN jobs j ON j.id = v.job_id "
    "WHERE j.state != 'succeeded' OR j.result_version IS DISTINCT FROM v.version",
    /* Runtime dependencies (dangling ones fail foreign_key_check above). */
    "SELECT 'fusion version ' || v.version || ' of task ''' || t.name || ''' records no source versions "
    "(a source was deleted before clad recorded dependencies; it cannot be served)' "
    "FROM versions v JOIN tasks t ON t.id = v.task_id WHERE v.kind = 'fusion' "
    "AND NOT EXISTS (SELECT 1 FROM version_deps d WHERE d.version_id = v.id)",
    "SELECT 'version ' || v.version || ' of task ''' || t.name || ''' needs a version on another base' "
    "FROM version_deps d JOIN versions v ON v.id = d.version_id JOIN versions n ON n.id = d.needs_id "
    "JOIN tasks t ON t.id = v.task_id WHERE n.base_sha256 != v.base_sha256",
};

int store_check(store *s, int level, clad_err *err)
{
    int rc = s->db->ops->check(s->db, level, err);
    if (rc || level != STORE_CHECK_FULL) return rc;
    bool began;
    if ((rc = tx_read_begin(s, &began, err))) return rc;
    db_stmt *st;
    for (size_t i = 0; rc == 0 && i < sizeof invariant_queries / sizeof invariant_queries[0]; i++) {
        rc = st_prepare(s, &st, err, invariant_queries[i], NULL);
        if (rc) break;
        rc = st_step(s, st, err);
        if (rc == 1) rc = clad_err_set(err, CLAD_ECORRUPT, "store %s: %s", s->path, col_text(st, 0));
        st_finalize(st);
    }
    if (rc == 0) rc = check_blobs(s, err);
    tx_read_end(s, began);
    return rc;
}

int store_set_size_limit(store *s, int64_t max_bytes, int64_t *limit_out, clad_err *err)
{
    return s->db->ops->set_size_limit(s->db, max_bytes, limit_out, err);
}

int store_backup(store *s, const char *dest_path, clad_err *err)
{
    if (!dest_path || !*dest_path) return clad_err_set(err, CLAD_EINVAL, "backup path is empty");
    if (s->in_snapshot) return clad_err_set(err, CLAD_EINVAL, "store: backup inside a read snapshot");
    return s->db->ops->backup(s->db, dest_path, err);
}

/* ---- Snapshots ---- */

int store_snapshot_begin(store *s, clad_err *err)
{
    if (s->in_snapshot) return clad_err_set(err, CLAD_EINVAL, "store: snapshots do not nest");
    int rc = s->db->ops->begin(s->db, DB_TX_SNAPSHOT, err);
    if (rc) return rc;
    s->in_snapshot = true;
    return 0;
}

void store_snapshot_end(store *s)
{
    if (!s || !s->in_snapshot) return;
    s->in_snapshot = false;
    if (s->db->ops->in_tx(s->db)) s->db->ops->commit(s->db, NULL);
}
