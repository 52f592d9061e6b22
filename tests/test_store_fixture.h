/* Shared helpers for the storage tests: fresh stores (an SQLite file in the test's temp dir, or a fresh
 * database on the shared PostgreSQL test cluster) and deterministic adapter blobs whose content says which
 * version they belong to, so a test can tell any two apart.
 *
 * STORE_TEST(name) { ... } defines a test that runs once per backend: `name` on SQLite and `name_pg` on
 * PostgreSQL (skipped, visibly, where PostgreSQL is not installed). Inside it, fx_open, fx_path, fx_exec
 * and fx_count work on that test's store of the current backend. A plain TEST uses SQLite. */
#ifndef CLAD_TESTS_TEST_STORE_FIXTURE_H
#define CLAD_TESTS_TEST_STORE_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"
#include "tests/test.h"

typedef enum fx_backend { FX_SQLITE, FX_PG } fx_backend;
/* Chooses the backend for the rest of the test; FX_PG starts the shared cluster (or skips the test). */
void fx_use_backend(fx_backend b);
bool fx_on_pg(void);

#define STORE_TEST_TIMEOUT(name, secs)                                               \
    static void store_test_##name(void);                                             \
    TEST_TIMEOUT(name, secs) { fx_use_backend(FX_SQLITE); store_test_##name(); }     \
    TEST_TIMEOUT(name##_pg, secs) { fx_use_backend(FX_PG); store_test_##name(); }    \
    static void store_test_##name(void)
#define STORE_TEST(name) STORE_TEST_TIMEOUT(name, 60)

/* The store target for file: test_tmpdir()/file on SQLite; on PostgreSQL the URI of a database private to
 * this test and file (created when missing). */
void fx_path(char *buf, size_t cap, const char *file);
/* Opens (creating) test_tmpdir()/file; fails the test on error. */
store *fx_open(const char *file);
/* Adds base "mlp" (inline weights) if missing and task `task` (10 classes) on it. */
void fx_task(store *s, const char *task);
/* How many versions task has now. */
int64_t fx_n_versions(store *s, const char *task);
/* fx_open(file), fx_task(task) and n_versions fx_put; path (may be NULL) receives the store target. */
store *fx_open_with_task(const char *file, const char *task, int n_versions, char *path, size_t cap);
/* Fills buf with the blob for (task, version): 8 bytes of version, then seeded bytes; size >= 16. */
void fx_blob(uint8_t *buf, size_t size, const char *task, int64_t version);
/* Size of the blob fx_put writes for (task, version): varies between 1 and 40 KiB. */
size_t fx_blob_size(const char *task, int64_t version);
/* True when v->adapter is exactly fx_blob(v->task, v->version). */
int fx_blob_ok(const store_version *v);
/* Puts the next version of task with fx_blob content; checks the number it got and returns it. */
int64_t fx_put(store *s, const char *task, unsigned flags);
/* Same with a job id; returns the clad code instead of failing. */
int fx_put_job(store *s, const char *task, int64_t job_id, int64_t *version, clad_err *err);
/* Runs sql on the store at path (a file or a URI from fx_path) directly, as an older clad or damage would
 * have left it. */
void fx_exec(const char *path, const char *sql);
/* SQL that takes a store back from schema 6 to schema 5 (without the shared queue's columns and table),
 * for tests of older migrations; it leaves user_version to the caller. */
#define FX_UNDO_SCHEMA_6                                                                                    \
    "DROP TABLE job_data; ALTER TABLE jobs DROP COLUMN node; ALTER TABLE jobs DROP COLUMN attempt;"         \
    " ALTER TABLE jobs DROP COLUMN lease_until; ALTER TABLE jobs DROP COLUMN cancel_requested;"
/* The integer the one-row query sql gives on the store at path, read directly. */
int64_t fx_count(const char *path, const char *sql);
/* Reads a whole file (test helper); returns malloc'd bytes and sets *n. */
uint8_t *fx_read_file(const char *path, size_t *n);
void fx_write_file(const char *path, const uint8_t *data, size_t n);

/* Runs `call`, whose error argument must be &e, and checks the code it returns (0 for CHECK_OK). */
#define CHECK_CODE(call, code, e)                                                      \
    do { clad_err_clear(&(e)); int rc_ = (call);                                       \
         if (rc_ != (code)) test_fail(__FILE__, __LINE__, "%s: got %s (%s), want %s", #call, \
                                      clad_code_name(rc_), (e).msg, clad_code_name(code)); } while (0)
#define CHECK_OK(call, e) CHECK_CODE(call, 0, e)

#endif
