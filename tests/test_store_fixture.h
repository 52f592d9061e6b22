/* Shared helpers for the storage tests: fresh stores in the test's temp dir and deterministic adapter
 * blobs whose content says which version they belong to, so a test can tell any two apart. */
#ifndef CLAD_TESTS_TEST_STORE_FIXTURE_H
#define CLAD_TESTS_TEST_STORE_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "storage/store.h"

/* buf = test_tmpdir()/file */
void fx_path(char *buf, size_t cap, const char *file);
/* Opens (creating) test_tmpdir()/file; fails the test on error. */
store *fx_open(const char *file);
/* Adds base "mlp" (inline weights) if missing and task `task` (10 classes) on it. */
void fx_task(store *s, const char *task);
/* How many versions task has now. */
int64_t fx_n_versions(store *s, const char *task);
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
/* Runs sql on the file with SQLite directly, as an older clad or a damaged file would have left it. */
void fx_exec(const char *path, const char *sql);
/* SQL that takes a store back from schema 6 to schema 5 (without the shared queue's columns and table),
 * for tests of older migrations; it leaves user_version to the caller. */
#define FX_UNDO_SCHEMA_6                                                                                    \
    "DROP TABLE job_data; ALTER TABLE jobs DROP COLUMN node; ALTER TABLE jobs DROP COLUMN attempt;"         \
    " ALTER TABLE jobs DROP COLUMN lease_until; ALTER TABLE jobs DROP COLUMN cancel_requested;"
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
