/* Storage tests: opening, schema versions, bases, tasks, versions, deletion, retention, backup,
 * reader handles and snapshots. Every test works on real SQLite files in its own temp dir. */
#include "tests/test.h"

#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test_store_fixture.h"

STORE_TEST(store_open_creates_and_reopens)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    store_task *t = NULL;
    CHECK_OK(store_task_get(s, "t1", &t, &e), e);
    CHECK_STR_EQ(t->base, "mlp");
    CHECK_STR_EQ(t->kind, "task");
    CHECK_INT_EQ(t->n_classes, 10);
    CHECK_INT_EQ(t->n_versions, 0);
    store_task_free(t);
    store_close(s);

    s = fx_open("a.db");
    store_task *all = NULL;
    size_t n = 0;
    CHECK_OK(store_tasks_list(s, &all, &n, &e), e);
    CHECK_INT_EQ(n, 1);
    CHECK_STR_EQ(all[0].name, "t1");
    store_tasks_free(all, n);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    /* The migration itself is audited. */
    store_audit *a = NULL;
    CHECK_OK(store_audit_list(s, 0, 1, &a, &n, &e), e);
    CHECK_INT_EQ(n, 1);
    CHECK_STR_EQ(a[0].action, "store.migrate");
    store_audit_free(a, n);
    store_close(s);
}

STORE_TEST(store_bases_and_tasks_validate_input)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    float w[4] = {1, 2, 3, 4};
    store_base_in dup = {.name = "mlp", .config_json = "{}", .weights = w, .weights_size = sizeof w};
    CHECK_CODE(store_base_put(s, &dup, 0, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "'mlp' already exists"));
    store_base_in bad_json = {.name = "b2", .config_json = "[1,2", .weights = w, .weights_size = sizeof w};
    CHECK_CODE(store_base_put(s, &bad_json, 0, &e), CLAD_EINVAL, e);
    store_base_in no_sha = {.name = "b2", .config_json = "{}", .weights_path = "/models/vit.safetensors"};
    CHECK_CODE(store_base_put(s, &no_sha, 0, &e), CLAD_EINVAL, e);
    char sha[SHA256_HEX_SIZE];
    sha256_hex("x", 1, sha);
    store_base_in by_path = {.name = "vit", .config_json = "{\"dim\":64}",
                             .weights_path = "/models/vit.safetensors", .weights_sha256 = sha};
    CHECK_OK(store_base_put(s, &by_path, 0, &e), e);
    store_base *b = NULL;
    CHECK_OK(store_base_get(s, "vit", STORE_WITH_BLOB, &b, &e), e);
    CHECK_STR_EQ(b->weights_path, "/models/vit.safetensors");
    CHECK_STR_EQ(b->weights_sha256, sha);
    CHECK(b->weights == NULL);
    store_base_free(b);
    CHECK_OK(store_base_get(s, "mlp", STORE_WITH_BLOB, &b, &e), e);
    CHECK_INT_EQ(b->weights_size, 64 * sizeof(float));
    CHECK(((float *)b->weights)[2] == 3.0f);
    store_base_free(b);

    store_task_in dup_task = {.name = "t1", .base = "mlp", .n_classes = 2};
    CHECK_CODE(store_task_create(s, &dup_task, 0, &e), CLAD_ECONFLICT, e);
    store_task_in no_base = {.name = "t2", .base = "nope", .n_classes = 2};
    CHECK_CODE(store_task_create(s, &no_base, 0, &e), CLAD_ENOTFOUND, e);
    CHECK(strstr(e.msg, "unknown base 'nope'"));
    store_task_in bad_name = {.name = "a b", .base = "mlp", .n_classes = 2};
    CHECK_CODE(store_task_create(s, &bad_name, 0, &e), CLAD_EINVAL, e);
    store_task_in labels_bad = {.name = "t2", .base = "mlp", .n_classes = 3, .label_names_json = "[\"a\",\"b\"]"};
    CHECK_CODE(store_task_create(s, &labels_bad, 0, &e), CLAD_EINVAL, e);
    store_task_in zero = {.name = "t2", .base = "mlp", .n_classes = 0};
    CHECK_CODE(store_task_create(s, &zero, 0, &e), CLAD_EINVAL, e);
    store_task_in merge = {.name = "m1", .base = "vit", .kind = "merge", .n_classes = 0};
    CHECK_OK(store_task_create(s, &merge, 0, &e), e);
    store_task_in labels = {.name = "t2", .base = "mlp", .n_classes = 2, .label_names_json = "[\"cat\",\"dog\"]"};
    CHECK_OK(store_task_create(s, &labels, 0, &e), e);
    store_task *t = NULL;
    CHECK_OK(store_task_get(s, "t2", &t, &e), e);
    CHECK_STR_EQ(t->label_names_json, "[\"cat\",\"dog\"]");
    store_task_free(t);
    CHECK_CODE(store_task_get(s, "zzz", &t, &e), CLAD_ENOTFOUND, e);
    store_close(s);
}

STORE_TEST(store_version_roundtrip_with_lineage)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    fx_task(s, "t2");
    int64_t v1 = fx_put(s, "t1", 0), w1 = fx_put(s, "t2", 0);
    CHECK_INT_EQ(v1, 1);
    CHECK_INT_EQ(w1, 1);

    uint8_t blob[3000];
    memset(blob, 7, sizeof blob);
    char data_sha[SHA256_HEX_SIZE], blob_sha[SHA256_HEX_SIZE];
    sha256_hex("training data", 13, data_sha);
    sha256_hex(blob, sizeof blob, blob_sha);
    store_ref parents[2] = {{"t1", 1}, {"t2", 1}};
    store_version_in in = {.task = "t1", .kind = "merged", .adapter = blob, .adapter_size = sizeof blob,
                           .parents = parents, .n_parents = 2, .data_sha256 = data_sha,
                           .lineage_json = "{\"distance\":[0.1,0.2],\"novelty\":0.7,\"ranks\":[8,4]}",
                           .hparams_json = "{\"lr\":0.01}", .metrics_json = "{\"accuracy\":0.93}",
                           .seed = 0xfedcba9876543210ULL, .wall_time_s = 12.5};
    int64_t v = 0;
    CHECK_OK(store_version_put(s, &in, 4242, &v, &e), e);
    CHECK_INT_EQ(v, 2);

    store_version *got = NULL;
    CHECK_OK(store_version_get(s, "t1", 2, STORE_WITH_BLOB, &got, &e), e);
    CHECK_STR_EQ(got->task, "t1");
    CHECK_STR_EQ(got->kind, "merged");
    CHECK_INT_EQ(got->adapter_size, sizeof blob);
    CHECK(memcmp(got->adapter, blob, sizeof blob) == 0);
    CHECK_STR_EQ(got->sha256, blob_sha);
    CHECK_INT_EQ(got->n_parents, 2);
    CHECK_STR_EQ(got->parents[1].task, "t2");
    CHECK_INT_EQ(got->parents[1].version, 1);
    CHECK_STR_EQ(got->data_sha256, data_sha);
    store_base *b = NULL;
    CHECK_OK(store_base_get(s, "mlp", 0, &b, &e), e);
    CHECK_STR_EQ(got->base_sha256, b->weights_sha256);
    store_base_free(b);
    CHECK_STR_EQ(got->lineage_json, "{\"distance\":[0.1,0.2],\"novelty\":0.7,\"ranks\":[8,4]}");
    CHECK_STR_EQ(got->hparams_json, "{\"lr\":0.01}");
    CHECK_STR_EQ(got->metrics_json, "{\"accuracy\":0.93}");
    CHECK(got->seed == 0xfedcba9876543210ULL);
    CHECK_NEAR(got->wall_time_s, 12.5, 0);
    CHECK_STR_EQ(got->clad_version, CLAD_VERSION);
    CHECK_INT_EQ(got->creator_uid, 4242);
    CHECK(got->created_ms > 1600000000000LL);
    store_version_free(got);

    /* Without the blob flag nothing is loaded. */
    CHECK_OK(store_version_get(s, "t1", 1, 0, &got, &e), e);
    CHECK(got->adapter == NULL);
    CHECK_INT_EQ(got->n_parents, 0);
    store_version_free(got);

    store_version *list = NULL;
    size_t n = 0;
    CHECK_OK(store_versions_list(s, "t1", &list, &n, &e), e);
    CHECK_INT_EQ(n, 2);
    CHECK_INT_EQ(list[0].version, 1);
    CHECK_INT_EQ(list[1].version, 2);
    CHECK_INT_EQ(list[1].n_parents, 2);
    CHECK(list[1].adapter == NULL);
    store_versions_free(list, n);

    CHECK_CODE(store_version_get(s, "t1", 9, 0, &got, &e), CLAD_ENOTFOUND, e);
    CHECK(strstr(e.msg, "task 't1' has no version 9"));
    CHECK_CODE(store_version_get(s, "nope", 1, 0, &got, &e), CLAD_ENOTFOUND, e);
    store_close(s);
}

STORE_TEST(store_version_put_refuses_bad_input_and_writes_nothing)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    fx_put(s, "t1", 0);
    uint8_t blob[100] = {1};
    store_version_in in = {.task = "t1", .kind = "lora", .adapter = blob, .adapter_size = sizeof blob};
    int64_t v;
    store_version_in bad = in;
    bad.kind = "lorax";
    CHECK_CODE(store_version_put(s, &bad, 0, &v, &e), CLAD_EINVAL, e);
    bad = in;
    bad.hparams_json = "{\"lr\":";
    CHECK_CODE(store_version_put(s, &bad, 0, &v, &e), CLAD_EINVAL, e);
    CHECK(strstr(e.msg, "hyperparameters"));
    bad = in;
    bad.lineage_json = "[1]";
    CHECK_CODE(store_version_put(s, &bad, 0, &v, &e), CLAD_EINVAL, e);
    bad = in;
    store_ref p = {"t1", 7};
    bad.parents = &p;
    bad.n_parents = 1;
    CHECK_CODE(store_version_put(s, &bad, 0, &v, &e), CLAD_ENOTFOUND, e);
    CHECK(strstr(e.msg, "parent 0"));
    bad = in;
    char other[SHA256_HEX_SIZE];
    sha256_hex("another base", 12, other);
    bad.base_sha256 = other;
    CHECK_CODE(store_version_put(s, &bad, 0, &v, &e), CLAD_ECONFLICT, e);
    bad = in;
    bad.task = "t9";
    CHECK_CODE(store_version_put(s, &bad, 0, &v, &e), CLAD_ENOTFOUND, e);
    bad = in;
    bad.adapter_size = (size_t)STORE_BLOB_MAX + 1;
    CHECK_CODE(store_version_put(s, &bad, 0, &v, &e), CLAD_ETOOLARGE, e);
    bad = in;
    bad.job_id = 99;
    CHECK_CODE(store_version_put(s, &bad, 0, &v, &e), CLAD_ENOTFOUND, e);
    /* None of the failures consumed a number or left a row behind. */
    CHECK_INT_EQ(fx_put(s, "t1", 0), 2);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

STORE_TEST(store_put_moves_active_unless_asked_not_to)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    int64_t a = 0;
    CHECK_CODE(store_alias_get(s, "t1", "active", &a, &e), CLAD_ENOTFOUND, e);
    /* The first version becomes active even with KEEP_ACTIVE: active exists once a version does. */
    fx_put(s, "t1", STORE_PUT_KEEP_ACTIVE);
    CHECK_OK(store_alias_get(s, "t1", "active", &a, &e), e);
    CHECK_INT_EQ(a, 1);
    fx_put(s, "t1", 0);
    CHECK_OK(store_alias_get(s, "t1", "active", &a, &e), e);
    CHECK_INT_EQ(a, 2);
    fx_put(s, "t1", STORE_PUT_KEEP_ACTIVE);
    CHECK_OK(store_alias_get(s, "t1", "active", &a, &e), e);
    CHECK_INT_EQ(a, 2);
    store_version *v = NULL;
    CHECK_OK(store_version_get_alias(s, "t1", "active", STORE_WITH_BLOB, &v, &e), e);
    CHECK_INT_EQ(v->version, 2);
    CHECK(fx_blob_ok(v));
    store_version_free(v);
    store_close(s);
}

STORE_TEST(store_version_numbers_are_never_reused)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    for (int i = 0; i < 3; i++) fx_put(s, "t1", 0);
    CHECK_OK(store_alias_set(s, "t1", "active", 2, 7, "v3 regressed", &e), e);
    CHECK_OK(store_version_delete(s, "t1", 3, 7, &e), e);
    CHECK_INT_EQ(fx_put(s, "t1", 0), 4);
    store_version *v = NULL;
    CHECK_CODE(store_version_get(s, "t1", 3, 0, &v, &e), CLAD_ENOTFOUND, e);
    CHECK(strstr(e.msg, "version 3 of task 't1' was deleted"));
    store_task *t = NULL;
    CHECK_OK(store_task_get(s, "t1", &t, &e), e);
    CHECK_INT_EQ(t->n_versions, 3);
    CHECK_INT_EQ(t->latest_version, 4);
    store_task_free(t);
    store_close(s);
}

STORE_TEST(store_delete_refused_while_an_alias_points_at_it)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    fx_put(s, "t1", 0);
    fx_put(s, "t1", 0);
    CHECK_OK(store_alias_set(s, "t1", "champion", 1, 7, NULL, &e), e);
    CHECK_CODE(store_version_delete(s, "t1", 2, 7, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "active"));
    CHECK_CODE(store_version_delete(s, "t1", 1, 7, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "champion"));
    CHECK_CODE(store_alias_delete(s, "t1", "active", 7, NULL, &e), CLAD_ECONFLICT, e);
    CHECK_OK(store_alias_delete(s, "t1", "champion", 7, "retired", &e), e);
    CHECK_OK(store_version_delete(s, "t1", 1, 7, &e), e);
    CHECK_CODE(store_version_delete(s, "t1", 1, 7, &e), CLAD_ENOTFOUND, e);
    store_alias *al = NULL;
    size_t n = 0;
    CHECK_OK(store_aliases_list(s, "t1", &al, &n, &e), e);
    CHECK_INT_EQ(n, 1);
    CHECK_STR_EQ(al[0].name, "active");
    CHECK_INT_EQ(al[0].version, 2);
    store_aliases_free(al);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

STORE_TEST(store_gc_keeps_newest_and_aliased)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    fx_task(s, "t2");
    size_t bytes_expected = 0;
    for (int i = 1; i <= 10; i++) {
        fx_put(s, "t1", 0);
        if (i != 2 && i <= 6) bytes_expected += fx_blob_size("t1", i);
    }
    for (int i = 1; i <= 4; i++) fx_put(s, "t2", 0);
    CHECK_OK(store_alias_set(s, "t1", "champion", 2, 0, NULL, &e), e);
    store_gc_stats st;
    CHECK_CODE(store_gc(s, "t1", 0, 0, &st, &e), CLAD_EINVAL, e);
    CHECK_OK(store_gc(s, "t1", 3, 0, &st, &e), e);
    CHECK_INT_EQ(st.versions_deleted, 6); /* 1, 3, 4, 5, 6, 7 go; 2 (champion), 8, 9, 10 stay */
    /* 7 goes too: keep 3 means 8, 9, 10 */
    bytes_expected += fx_blob_size("t1", 7);
    CHECK_INT_EQ(st.bytes_freed, bytes_expected);
    store_version *list = NULL;
    size_t n = 0;
    CHECK_OK(store_versions_list(s, "t1", &list, &n, &e), e);
    CHECK_INT_EQ(n, 4);
    int64_t want[4] = {2, 8, 9, 10};
    for (int i = 0; i < 4; i++) CHECK_INT_EQ(list[i].version, want[i]);
    store_versions_free(list, n);
    CHECK_OK(store_versions_list(s, "t2", &list, &n, &e), e);
    CHECK_INT_EQ(n, 4); /* another task is untouched */
    store_versions_free(list, n);
    /* Every task at once. */
    CHECK_OK(store_gc(s, NULL, 1, 0, &st, &e), e);
    CHECK_INT_EQ(st.versions_deleted, 2 + 3); /* t1: 8, 9 ; t2: 1, 2, 3 */
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_audit *a = NULL;
    CHECK_OK(store_audit_list(s, 0, 0, &a, &n, &e), e);
    size_t gc_rows = 0;
    for (size_t i = 0; i < n; i++) gc_rows += strcmp(a[i].action, "version.gc") == 0;
    CHECK_INT_EQ(gc_rows, 11);
    store_audit_free(a, n);
    store_close(s);
}

TEST(store_gc_returns_space_to_the_file_system)
{
    clad_err e = {0};
    char path[512];
    fx_path(path, sizeof path, "a.db");
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    for (int i = 0; i < 40; i++) fx_put(s, "t1", 0);
    store_close(s); /* checkpoints the WAL into the main file */
    struct stat before, after;
    CHECK(stat(path, &before) == 0);
    s = fx_open("a.db");
    store_gc_stats st;
    CHECK_OK(store_gc(s, "t1", 2, 0, &st, &e), e);
    CHECK_INT_EQ(st.versions_deleted, 38);
    store_close(s);
    CHECK(stat(path, &after) == 0);
    CHECK_MSG(after.st_size < before.st_size / 4, "file %lld bytes before gc, %lld after",
              (long long)before.st_size, (long long)after.st_size);
}

/* Lists grow their array while stepping the query (st_step_append): every row arrives once, in order,
 * past the first and second growth. */
STORE_TEST(store_lists_return_every_row_past_growth)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    for (int i = 0; i < 40; i++) fx_put(s, "t1", 0);
    store_version *v = NULL;
    size_t n = 0;
    CHECK_OK(store_versions_list(s, "t1", &v, &n, &e), e);
    CHECK_INT_EQ(n, 40);
    for (size_t i = 0; i < n; i++) CHECK_INT_EQ(v[i].version, (int64_t)i + 1);
    store_versions_free(v, n);
    store_audit *a = NULL;
    CHECK_OK(store_audit_list(s, 0, 0, &a, &n, &e), e);
    CHECK_MSG(n > 40, "%zu audit rows", n);
    for (size_t i = 1; i < n; i++) CHECK(a[i].id > a[i - 1].id);
    store_audit_free(a, n);
    store_close(s);
}

/* Writes user_version (bytes 60..63 of the header, big-endian) of a closed database file. */
static void set_user_version(const char *path, uint32_t v)
{
    size_t n;
    uint8_t *data = fx_read_file(path, &n);
    CHECK(n >= 100);
    data[60] = (uint8_t)(v >> 24);
    data[61] = (uint8_t)(v >> 16);
    data[62] = (uint8_t)(v >> 8);
    data[63] = (uint8_t)v;
    fx_write_file(path, data, 100);
    free(data);
}

TEST(store_newer_schema_is_refused_and_left_untouched)
{
    clad_err e = {0};
    char path[512], wal[600];
    fx_path(path, sizeof path, "a.db");
    snprintf(wal, sizeof wal, "%s-wal", path);
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    fx_put(s, "t1", 0);
    store_close(s);
    set_user_version(path, 99);
    size_t n0, n1;
    uint8_t *before = fx_read_file(path, &n0);
    s = store_open(path, &e);
    CHECK(s == NULL);
    CHECK_INT_EQ(e.code, CLAD_EVERSION);
    char want[96];
    snprintf(want, sizeof want, "store schema version 99 is newer than this clad (%d); upgrade clad", STORE_SCHEMA_VERSION);
    CHECK_STR_EQ(e.msg, want);
    clad_err_clear(&e);
    CHECK(store_open_reader(path, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EVERSION);
    uint8_t *after = fx_read_file(path, &n1);
    CHECK_INT_EQ(n0, n1);
    CHECK(memcmp(before, after, n0) == 0);
    CHECK(access(wal, F_OK) != 0);
    free(before);
    free(after);
    /* Back to our version, the store opens with its data. */
    set_user_version(path, STORE_SCHEMA_VERSION);
    s = fx_open("a.db");
    store_version *v = NULL;
    CHECK_OK(store_version_get(s, "t1", 1, STORE_WITH_BLOB, &v, &e), e);
    CHECK(fx_blob_ok(v));
    store_version_free(v);
    store_close(s);
}

TEST(store_open_refuses_garbage_and_foreign_files)
{
    clad_err e = {0};
    char path[512];
    fx_path(path, sizeof path, "junk.db");
    uint8_t junk[8192];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 31 + 7);
    fx_write_file(path, junk, sizeof junk);
    CHECK(store_open(path, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_ECORRUPT);
    /* A real SQLite database that is not a store: clear its application_id (bytes 68..71). */
    store *s = fx_open("other.db");
    store_close(s);
    fx_path(path, sizeof path, "other.db");
    uint8_t zero[4] = {0};
    size_t n;
    uint8_t *data = fx_read_file(path, &n);
    memcpy(data + 68, zero, 4);
    fx_write_file(path, data, n);
    free(data);
    clad_err_clear(&e);
    CHECK(store_open(path, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EINVAL);
    CHECK(strstr(e.msg, "not a clad store"));
    fx_path(path, sizeof path, "missing.db");
    clad_err_clear(&e);
    CHECK(store_open_reader(path, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_ENOTFOUND);
}

STORE_TEST(store_reader_handle_reads_and_refuses_writes)
{
    clad_err e = {0};
    char path[512];
    fx_path(path, sizeof path, "a.db");
    store *w = fx_open("a.db");
    fx_task(w, "t1");
    fx_put(w, "t1", 0);
    store *r = store_open_reader(path, &e);
    CHECK_MSG(r != NULL, "%s", e.msg);
    store_version *v = NULL;
    CHECK_OK(store_version_get_alias(r, "t1", "active", STORE_WITH_BLOB, &v, &e), e);
    CHECK(fx_blob_ok(v));
    store_version_free(v);
    CHECK_CODE(store_alias_set(r, "t1", "x", 1, 0, NULL, &e), CLAD_EDENIED, e);
    /* The reader sees the writer's later commits. */
    fx_put(w, "t1", 0);
    int64_t a;
    CHECK_OK(store_alias_get(r, "t1", "active", &a, &e), e);
    CHECK_INT_EQ(a, 2);
    store_close(r);
    store_close(w);
}

STORE_TEST(store_snapshot_sees_one_state)
{
    clad_err e = {0};
    char path[512];
    fx_path(path, sizeof path, "a.db");
    store *w = fx_open("a.db");
    fx_task(w, "t1");
    fx_put(w, "t1", 0);
    fx_put(w, "t1", 0);
    store *r = store_open_reader(path, &e);
    CHECK(r != NULL);
    CHECK_OK(store_snapshot_begin(r, &e), e);
    CHECK_CODE(store_snapshot_begin(r, &e), CLAD_EINVAL, e);
    int64_t a;
    CHECK_OK(store_alias_get(r, "t1", "active", &a, &e), e);
    CHECK_INT_EQ(a, 2);
    CHECK_OK(store_rollback(w, "t1", NULL, 0, 0, NULL, NULL, &e), e);
    fx_put(w, "t1", 0);
    CHECK_OK(store_alias_get(r, "t1", "active", &a, &e), e);
    CHECK_INT_EQ(a, 2);
    store_version *list = NULL;
    size_t n;
    CHECK_OK(store_versions_list(r, "t1", &list, &n, &e), e);
    CHECK_INT_EQ(n, 2);
    store_versions_free(list, n);
    store_snapshot_end(r);
    CHECK_OK(store_alias_get(r, "t1", "active", &a, &e), e);
    CHECK_INT_EQ(a, 3);
    /* A writer handle inside a snapshot refuses writes. */
    CHECK_OK(store_snapshot_begin(w, &e), e);
    CHECK_CODE(store_alias_set(w, "t1", "x", 1, 0, NULL, &e), CLAD_EINVAL, e);
    store_snapshot_end(w);
    store_close(r);
    store_close(w);
}

/* Compares two stores version by version (metadata, blobs) and alias by alias. */
static void check_same_store(store *a, store *b, const char *task)
{
    clad_err e = {0};
    store_version *la = NULL, *lb = NULL;
    size_t na, nb;
    CHECK_OK(store_versions_list(a, task, &la, &na, &e), e);
    CHECK_OK(store_versions_list(b, task, &lb, &nb, &e), e);
    CHECK_INT_EQ(na, nb);
    for (size_t i = 0; i < na; i++) {
        CHECK_INT_EQ(la[i].version, lb[i].version);
        CHECK_STR_EQ(la[i].sha256, lb[i].sha256);
        store_version *v = NULL;
        CHECK_OK(store_version_get(b, task, lb[i].version, STORE_WITH_BLOB, &v, &e), e);
        CHECK(fx_blob_ok(v));
        store_version_free(v);
    }
    store_versions_free(la, na);
    store_versions_free(lb, nb);
    int64_t x, y;
    CHECK_OK(store_alias_get(a, task, "active", &x, &e), e);
    CHECK_OK(store_alias_get(b, task, "active", &y, &e), e);
    CHECK_INT_EQ(x, y);
}

TEST(store_backup_is_a_complete_consistent_copy)
{
    clad_err e = {0};
    char path[512], bpath[512];
    fx_path(path, sizeof path, "a.db");
    fx_path(bpath, sizeof bpath, "backup.db");
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    for (int i = 0; i < 12; i++) fx_put(s, "t1", 0);
    CHECK_OK(store_rollback(s, "t1", NULL, 0, 0, "bad", NULL, &e), e);
    CHECK_OK(store_backup(s, bpath, &e), e);
    store *b = store_open(bpath, &e);
    CHECK_MSG(b != NULL, "%s", e.msg);
    CHECK_OK(store_check(b, STORE_CHECK_FULL, &e), e);
    check_same_store(s, b, "t1");
    store_close(b);

    /* Backups taken while another process commits are each complete and consistent. */
    pid_t pid = fork();
    if (pid == 0) {
        store *c = store_open(path, NULL);
        for (int i = 0; i < 40 && c; i++) {
            if (fx_put_job(c, "t1", 0, &(int64_t){0}, NULL) != 0) _exit(1);
        }
        store_close(c);
        _exit(c ? 0 : 1);
    }
    for (int i = 0; i < 4; i++) {
        CHECK_OK(store_backup(s, bpath, &e), e);
        b = store_open(bpath, &e);
        CHECK_MSG(b != NULL, "%s", e.msg);
        CHECK_OK(store_check(b, STORE_CHECK_FULL, &e), e);
        store_close(b);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_OK(store_backup(s, bpath, &e), e);
    b = store_open(bpath, &e);
    check_same_store(s, b, "t1");
    store_close(b);
    CHECK_CODE(store_backup(s, "/nonexistent-dir/x.db", &e), CLAD_EIO, e);
    store_close(s);
}

/* ---- Several threads, each with its own handle, on a store that does not exist yet ---- */

typedef struct opener_ctx {
    char path[512];
    char task[16];
    int ok;
} opener_ctx;

static void *opener_main(void *arg)
{
    opener_ctx *c = arg;
    clad_err e = {0};
    store *s = store_open(c->path, &e);
    CHECK_MSG(s != NULL, "thread open: %s: %s", clad_code_name(e.code), e.msg);
    static const float w[16] = {1};
    store_base_in bi = {.name = "mlp", .config_json = "{}", .weights = w, .weights_size = sizeof w};
    int rc = store_base_put(s, &bi, 0, &e);
    CHECK_MSG(rc == 0 || rc == CLAD_ECONFLICT, "base: %s", e.msg);
    store_task_in ti = {.name = c->task, .base = "mlp", .n_classes = 3};
    clad_err_clear(&e);
    CHECK_OK(store_task_create(s, &ti, 0, &e), e);
    for (int i = 0; i < 5; i++) {
        int64_t v;
        CHECK_OK(fx_put_job(s, c->task, 0, &v, &e), e);
        store *r = store_open_reader(c->path, &e); /* cheap per-job reader handles */
        CHECK(r != NULL);
        store_version *got = NULL;
        CHECK_OK(store_version_get_alias(r, c->task, "active", STORE_WITH_BLOB, &got, &e), e);
        CHECK(fx_blob_ok(got) && got->version == v);
        store_version_free(got);
        store_close(r);
    }
    store_close(s);
    c->ok = 1;
    return NULL;
}

STORE_TEST(store_threads_open_and_write_one_file)
{
    enum { N = 4 };
    static opener_ctx ctx[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        fx_path(ctx[i].path, sizeof ctx[i].path, "shared.db");
        snprintf(ctx[i].task, sizeof ctx[i].task, "task%d", i);
        CHECK(pthread_create(&th[i], NULL, opener_main, &ctx[i]) == 0);
    }
    for (int i = 0; i < N; i++) {
        CHECK(pthread_join(th[i], NULL) == 0);
        CHECK(ctx[i].ok);
    }
    clad_err e = {0};
    store *s = fx_open("shared.db");
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_task *t = NULL;
    size_t n = 0;
    CHECK_OK(store_tasks_list(s, &t, &n, &e), e);
    CHECK_INT_EQ(n, N);
    for (size_t i = 0; i < n; i++) CHECK_INT_EQ(t[i].n_versions, 5);
    store_tasks_free(t, n);
    store_audit *a = NULL;
    CHECK_OK(store_audit_list(s, 0, 0, &a, &n, &e), e);
    size_t migrations = 0;
    for (size_t i = 0; i < n; i++) migrations += strcmp(a[i].action, "store.migrate") == 0;
    CHECK_INT_EQ(migrations, 1); /* the schema was created exactly once */
    store_audit_free(a, n);
    store_close(s);
}

STORE_TEST(store_change_mark_moves_with_every_commit)
{
    clad_err e = {0};
    char path[512];
    store *w = fx_open_with_task("a.db", "t1", 0, path, sizeof path);
    store *r = store_open_reader(path, &e);
    CHECK_MSG(r != NULL, "%s", e.msg);
    int64_t before_r = store_change_mark(r), before_w = store_change_mark(w);
    fx_put(w, "t1", 0);
    CHECK(store_change_mark(r) != before_r); /* another connection's commit */
    CHECK(store_change_mark(w) != before_w); /* this connection's own */
    store_close(r);
    store_close(w);
}
