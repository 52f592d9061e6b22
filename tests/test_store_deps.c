/* Runtime dependencies between versions (a fusion version and the source versions it loads whenever it
 * is served): recorded with the version, protected from deletion like alias targets, respected by
 * retention, derived for stores written before they were recorded, and checked by store_check. */
#include <stdio.h>
#include <string.h>

#include "tests/test.h"
#include "tests/test_store_fixture.h"

static const char fusion_lineage[] =
    "{\"fusion\":{\"sources\":[{\"task\":\"a\",\"version\":1,\"weight\":0.5},"
    "{\"task\":\"b\",\"version\":1,\"weight\":0.5}]}}";

/* Puts the next version of f: a fusion version needing a@1 and b@1 (as the daemon stores one). */
static int put_fusion(store *s, size_t n_needs, clad_err *e)
{
    static const uint8_t blob[32] = {7};
    store_ref needs[2] = {{"a", 1}, {"b", 1}};
    store_version_in in = {.task = "f", .kind = "fusion", .adapter = blob, .adapter_size = sizeof blob,
                           .parents = needs, .n_parents = 2, .needs = needs, .n_needs = n_needs,
                           .lineage_json = fusion_lineage};
    return store_version_put(s, &in, 1000, NULL, e);
}

/* a@1, b@1 and f@1 (fusion over them); then a@2, so that a@1 is needed but no alias target. */
static store *deps_fixture(const char *file)
{
    clad_err e = {0};
    store *s = fx_open(file);
    fx_task(s, "a");
    fx_task(s, "b");
    fx_task(s, "f");
    fx_put(s, "a", 0);
    fx_put(s, "b", 0);
    CHECK_OK(put_fusion(s, 2, &e), e);
    fx_put(s, "a", 0);
    return s;
}

/* The fixture with sql run on its file behind the store's back (as an older clad, or damage, left it),
 * then opened again. */
static store *deps_fixture_edited(const char *file, const char *sql)
{
    char path[512];
    fx_path(path, sizeof path, file);
    store_close(deps_fixture(file));
    fx_exec(path, sql);
    return fx_open(file);
}

STORE_TEST(store_deps_needed_version_cannot_be_deleted)
{
    clad_err e = {0};
    store *s = deps_fixture("d.db");
    store_version *v = NULL;
    CHECK_OK(store_version_get(s, "f", 1, 0, &v, &e), e);
    CHECK_INT_EQ(v->n_needs, 2);
    CHECK_STR_EQ(v->needs[0].task, "a");
    CHECK_INT_EQ(v->needs[0].version, 1);
    CHECK_STR_EQ(v->needs[1].task, "b");
    store_version_free(v);

    CHECK_CODE(store_version_delete(s, "a", 1, 1000, &e), CLAD_ECONFLICT, e);
    CHECK_MSG(strstr(e.msg, "needed at run time by version 1 of task 'f'"), "%s", e.msg);
    CHECK_INT_EQ(fx_n_versions(s, "a"), 2);

    /* A fusion version must say what it needs, and what it names must exist; nothing is written. */
    CHECK_CODE(put_fusion(s, 0, &e), CLAD_EINVAL, e);
    store_ref missing = {"b", 9};
    static const uint8_t blob[8] = {1};
    store_version_in in = {.task = "f", .kind = "fusion", .adapter = blob, .adapter_size = sizeof blob,
                           .needs = &missing, .n_needs = 1};
    CHECK_CODE(store_version_put(s, &in, 1000, NULL, &e), CLAD_ENOTFOUND, e);
    CHECK_INT_EQ(fx_n_versions(s, "f"), 1);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);

    /* Once the dependent is gone, so is the protection. */
    fx_put(s, "f", 0); /* moves f's active alias off the fusion version */
    CHECK_OK(store_version_delete(s, "f", 1, 1000, &e), e);
    CHECK_OK(store_version_delete(s, "a", 1, 1000, &e), e);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

STORE_TEST(store_deps_retention_keeps_what_kept_versions_need)
{
    clad_err e = {0};
    store *s = deps_fixture("g.db");
    store_gc_stats st;
    CHECK_OK(store_gc(s, "a", 1, 1000, &st, &e), e);
    CHECK_INT_EQ(st.versions_deleted, 0); /* a@1 is past keep=1 but f@1 needs it */
    CHECK_OK(store_gc(s, NULL, 1, 1000, &st, &e), e);
    CHECK_INT_EQ(st.versions_deleted, 0);
    /* f@1 falls out of retention: it and then a@1 go in the same run. */
    fx_put(s, "f", 0);
    CHECK_OK(store_gc(s, NULL, 1, 1000, &st, &e), e);
    CHECK_INT_EQ(st.versions_deleted, 2);
    CHECK_INT_EQ(fx_n_versions(s, "a"), 1);
    CHECK_INT_EQ(fx_n_versions(s, "b"), 1);
    CHECK_INT_EQ(fx_n_versions(s, "f"), 1);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

/* Schema 1 is today's schema without version_deps, jobs.result_json, jobs.lane, nodes and changes: a store written by
 * clad 0.1. */
TEST(store_deps_migration_from_schema_1_derives_fusion_sources)
{
    clad_err e = {0};
    store *s = deps_fixture_edited("m.db", FX_UNDO_SCHEMA_6 " DROP TABLE version_deps; ALTER TABLE jobs DROP COLUMN result_json;"
                                           " ALTER TABLE jobs DROP COLUMN lane; DROP TABLE nodes; DROP TABLE changes;"
                                           " PRAGMA user_version = 1");
    store_version *v = NULL;
    CHECK_OK(store_version_get(s, "f", 1, 0, &v, &e), e);
    CHECK_INT_EQ(v->n_needs, 2);
    CHECK_STR_EQ(v->needs[1].task, "b");
    store_version_free(v);
    CHECK_CODE(store_version_delete(s, "a", 1, 1000, &e), CLAD_ECONFLICT, e);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

TEST(store_deps_check_reports_a_fusion_version_without_sources)
{
    clad_err e = {0};
    /* What schema 1 allowed: a source deleted under its fusion version. */
    store *s = deps_fixture_edited("c.db", "PRAGMA foreign_keys = ON; DELETE FROM version_deps");
    CHECK_CODE(store_check(s, STORE_CHECK_FULL, &e), CLAD_ECORRUPT, e);
    CHECK_MSG(strstr(e.msg, "fusion version 1 of task 'f' records no source versions"), "%s", e.msg);
    store_close(s);
}

/* A task whose versions another task's version needs at run time cannot go (the refusal names who needs
 * what); a task that goes takes its versions' version_deps rows with it. The fusion version here records
 * no parents, so only version_deps can protect its sources. */
STORE_TEST(store_deps_task_delete_respects_runtime_dependencies)
{
    clad_err e = {0};
    char path[512];
    fx_path(path, sizeof path, "t.db");
    store *s = fx_open("t.db");
    fx_task(s, "a");
    fx_task(s, "b");
    fx_task(s, "f");
    fx_put(s, "a", 0);
    fx_put(s, "b", 0);
    static const uint8_t blob[32] = {7};
    store_ref needs[2] = {{"a", 1}, {"b", 1}};
    store_version_in in = {.task = "f", .kind = "fusion", .adapter = blob, .adapter_size = sizeof blob,
                           .needs = needs, .n_needs = 2, .lineage_json = fusion_lineage};
    CHECK_OK(store_version_put(s, &in, 1000, NULL, &e), e);

    CHECK_CODE(store_task_delete(s, "a", 1000, &e), CLAD_ECONFLICT, e);
    CHECK_MSG(strstr(e.msg, "task 'a' is needed at run time by f@1 (needs a@1)"), "%s", e.msg);
    CHECK_CODE(store_task_delete(s, "b", 1000, &e), CLAD_ECONFLICT, e);
    CHECK_MSG(strstr(e.msg, "f@1 (needs b@1)"), "%s", e.msg);
    CHECK_INT_EQ(fx_n_versions(s, "a"), 1);
    store_close(s);
    CHECK_INT_EQ(fx_count(path, "SELECT count(*) FROM version_deps"), 2);

    s = fx_open("t.db");
    CHECK_OK(store_task_delete(s, "f", 1000, &e), e);
    store_close(s);
    CHECK_INT_EQ(fx_count(path, "SELECT count(*) FROM version_deps"), 0);
    s = fx_open("t.db");
    CHECK_OK(store_task_delete(s, "a", 1000, &e), e);
    CHECK_OK(store_task_delete(s, "b", 1000, &e), e);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}
