/* Storage tests for jobs (state machine, restart marking, a version and its job in one commit),
 * metrics (accuracy matrix, evaluations) and the audit log. */
#include "tests/test.h"

#include "tests/test_store_fixture.h"

STORE_TEST(store_jobs_state_machine)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    int64_t id = 0;
    CHECK_CODE(store_job_create(s, "train", "t1", NULL, "[1]", 500, &id, &e), CLAD_EINVAL, e);
    CHECK_OK(store_job_create(s, "train", "t1", "mlp", "{\"epochs\":3}", 500, &id, &e), e);
    store_job *j = NULL;
    CHECK_OK(store_job_get(s, id, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_QUEUED);
    CHECK_STR_EQ(j->kind, "train");
    CHECK_STR_EQ(j->task, "t1");
    CHECK_STR_EQ(j->lane, "mlp");
    CHECK_STR_EQ(j->request_json, "{\"epochs\":3}");
    CHECK_STR_EQ(j->progress_json, "{}");
    CHECK_INT_EQ(j->peer_uid, 500);
    CHECK(j->created_ms > 0 && j->started_ms == 0 && j->finished_ms == 0);
    store_job_free(j);

    CHECK_CODE(store_job_mark_succeeded(s, id, 0, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "is queued; it cannot become succeeded"));
    CHECK_CODE(store_job_set_progress(s, id, "{\"epoch\":1}", &e), CLAD_ECONFLICT, e);
    CHECK_OK(store_job_mark_running(s, id, &e), e);
    CHECK_CODE(store_job_mark_running(s, id, &e), CLAD_ECONFLICT, e);
    CHECK_OK(store_job_set_progress(s, id, "{\"epoch\":2,\"loss\":0.4}", &e), e);
    CHECK_OK(store_job_mark_failed(s, id, CLAD_EINVAL, "dataset sample 3 has label 12 >= 10", &e), e);
    CHECK_CODE(store_job_mark_cancelled(s, id, 501, &e), CLAD_ECONFLICT, e);
    CHECK_OK(store_job_get(s, id, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_FAILED);
    CHECK_INT_EQ(j->error_code, CLAD_EINVAL);
    CHECK_STR_EQ(j->error_msg, "dataset sample 3 has label 12 >= 10");
    CHECK_STR_EQ(j->progress_json, "{\"epoch\":2,\"loss\":0.4}");
    CHECK(j->started_ms > 0 && j->finished_ms >= j->started_ms);
    store_job_free(j);

    int64_t id2 = 0, id3 = 0;
    CHECK_OK(store_job_create(s, "eval", NULL, NULL, NULL, 500, &id2, &e), e);
    CHECK_OK(store_job_mark_cancelled(s, id2, 501, &e), e);
    CHECK_OK(store_job_create(s, "eval", "t2", NULL, NULL, 500, &id3, &e), e);
    CHECK_OK(store_job_mark_running(s, id3, &e), e);
    CHECK_OK(store_job_mark_succeeded(s, id3, 0, &e), e);
    CHECK_CODE(store_job_get(s, 999, &j, &e), CLAD_ENOTFOUND, e);

    store_job *list = NULL;
    size_t n = 0;
    CHECK_OK(store_jobs_list(s, NULL, 0, &list, &n, &e), e);
    CHECK_INT_EQ(n, 3);
    CHECK_INT_EQ(list[0].id, id3); /* newest first */
    CHECK_STR_EQ(store_job_state_name(list[1].state), "cancelled");
    CHECK_STR_EQ(list[1].task, "");
    store_jobs_free(list, n);
    CHECK_OK(store_jobs_list(s, "t1", 0, &list, &n, &e), e);
    CHECK_INT_EQ(n, 1);
    store_jobs_free(list, n);
    CHECK_OK(store_jobs_list(s, NULL, 2, &list, &n, &e), e);
    CHECK_INT_EQ(n, 2);
    store_jobs_free(list, n);
    store_close(s);
}

/* A task's queued or running job blocks deleting it; a finished one or another task's does not. */
STORE_TEST(store_task_delete_waits_for_the_tasks_jobs)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    fx_task(s, "t2");
    int64_t mine = 0, other = 0, base_job = 0;
    CHECK_OK(store_job_create(s, "train", "t1", "mlp", NULL, 500, &mine, &e), e);
    CHECK_OK(store_job_create(s, "train", "t2", "mlp", NULL, 500, &other, &e), e);
    CHECK_OK(store_job_create(s, "base-train", NULL, "mlp", NULL, 500, &base_job, &e), e);
    CHECK_CODE(store_task_delete(s, "t1", 500, &e), CLAD_ECONFLICT, e);
    char want[80];
    snprintf(want, sizeof want, "task 't1' has unfinished work: job %lld (queued)", (long long)mine);
    CHECK_MSG(strstr(e.msg, want), "%s", e.msg);
    CHECK_OK(store_job_mark_running(s, mine, &e), e);
    CHECK_CODE(store_task_delete(s, "t1", 500, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "(running)"));
    CHECK_OK(store_job_mark_cancelled(s, mine, 500, &e), e);
    CHECK_OK(store_task_delete(s, "t1", 500, &e), e);
    CHECK_CODE(store_task_delete(s, "t2", 500, &e), CLAD_ECONFLICT, e);
    store_close(s);
}

/* Schema 3 wrote the lane into `task`; migration 4 moves it to `lane` and takes a training's task from
 * its request. */
TEST(store_jobs_migration_separates_lane_and_task)
{
    clad_err e = {0};
    char path[512];
    fx_path(path, sizeof path, "m.db");
    store *s = fx_open("m.db");
    store_close(s);
    fx_exec(path, FX_UNDO_SCHEMA_6 "ALTER TABLE jobs DROP COLUMN lane; DROP TABLE nodes; DROP TABLE changes;"
                  "INSERT INTO jobs (kind, task, state, request_json, peer_uid, created_ms) VALUES "
                  "('train', 'mlp', 'succeeded', '{\"task\":\"t1\",\"base\":\"mlp\"}', 500, 1),"
                  "('merge', 'mlp', 'failed', '{\"tasks\":[\"t1\"]}', 500, 2);"
                  "PRAGMA user_version = 3");
    s = fx_open("m.db");
    store_job *list = NULL;
    size_t n = 0;
    CHECK_OK(store_jobs_list(s, NULL, 0, &list, &n, &e), e);
    CHECK_INT_EQ(n, 2);
    CHECK_STR_EQ(list[0].kind, "merge");
    CHECK_STR_EQ(list[0].task, "");
    CHECK_STR_EQ(list[0].lane, "mlp");
    CHECK_STR_EQ(list[1].task, "t1");
    CHECK_STR_EQ(list[1].lane, "mlp");
    store_jobs_free(list, n);
    store_close(s);
}

STORE_TEST(store_jobs_interrupted_at_restart)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    int64_t q = 0, r = 0, d = 0;
    CHECK_OK(store_job_create(s, "train", "t1", NULL, NULL, 500, &q, &e), e);
    CHECK_OK(store_job_create(s, "train", "t1", NULL, NULL, 500, &r, &e), e);
    CHECK_OK(store_job_mark_running(s, r, &e), e);
    CHECK_OK(store_job_create(s, "train", "t1", NULL, NULL, 500, &d, &e), e);
    CHECK_OK(store_job_mark_running(s, d, &e), e);
    CHECK_OK(store_job_mark_succeeded(s, d, 0, &e), e);
    store_close(s); /* the "crash" */

    s = fx_open("a.db");
    int64_t marked = 0;
    CHECK_OK(store_jobs_mark_interrupted(s, &marked, &e), e);
    CHECK_INT_EQ(marked, 2);
    store_job *j = NULL;
    CHECK_OK(store_job_get(s, q, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_INTERRUPTED);
    CHECK_STR_EQ(j->error_msg, "clad stopped while the job was queued");
    store_job_free(j);
    CHECK_OK(store_job_get(s, r, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_INTERRUPTED);
    CHECK_STR_EQ(j->error_msg, "clad stopped while the job was running");
    store_job_free(j);
    CHECK_OK(store_job_get(s, d, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_SUCCEEDED);
    store_job_free(j);
    /* Interrupted jobs are final: they are never resumed. */
    CHECK_CODE(store_job_mark_running(s, r, &e), CLAD_ECONFLICT, e);
    CHECK_OK(store_jobs_mark_interrupted(s, &marked, &e), e);
    CHECK_INT_EQ(marked, 0);
    store_close(s);
}

STORE_TEST(store_version_and_its_job_commit_together)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    int64_t job = 0, v = 0;
    CHECK_OK(store_job_create(s, "train", "t1", NULL, NULL, 500, &job, &e), e);
    /* A queued (not yet running) or cancelled job cannot produce a version. */
    CHECK_CODE(fx_put_job(s, "t1", job, &v, &e), CLAD_ECONFLICT, e);
    CHECK_OK(store_job_mark_running(s, job, &e), e);
    CHECK_OK(fx_put_job(s, "t1", job, &v, &e), e);
    CHECK_INT_EQ(v, 1);
    store_job *j = NULL;
    CHECK_OK(store_job_get(s, job, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_SUCCEEDED);
    CHECK_INT_EQ(j->result_version, 1);
    store_job_free(j);
    store_version *sv = NULL;
    CHECK_OK(store_version_get(s, "t1", 1, 0, &sv, &e), e);
    CHECK_INT_EQ(sv->job_id, job);
    store_version_free(sv);
    /* The same job cannot produce a second version. */
    CHECK_CODE(fx_put_job(s, "t1", job, &v, &e), CLAD_ECONFLICT, e);
    int64_t job2 = 0;
    CHECK_OK(store_job_create(s, "train", "t1", NULL, NULL, 500, &job2, &e), e);
    CHECK_OK(store_job_mark_running(s, job2, &e), e);
    CHECK_OK(store_job_mark_cancelled(s, job2, 501, &e), e);
    CHECK_CODE(fx_put_job(s, "t1", job2, &v, &e), CLAD_ECONFLICT, e);
    CHECK(strstr(e.msg, "cancelled"));
    store_task *t = NULL;
    CHECK_OK(store_task_get(s, "t1", &t, &e), e);
    CHECK_INT_EQ(t->n_versions, 1);
    store_task_free(t);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

STORE_TEST(store_metrics_matrix_and_evaluations)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    fx_task(s, "t2");
    fx_put(s, "t1", 0);
    fx_put(s, "t2", 0);
    fx_put(s, "t2", 0);
    store_acc_entry m[3] = {
        {.after = {"t2", 2}, .evaluated = {"t1", 1}, .accuracy = 0.91, .loss = 0.3, .n_samples = 1000},
        {.after = {"t2", 2}, .evaluated = {"t2", 2}, .accuracy = 0.88, .loss = 0.4, .n_samples = 1000},
        {.after = {"t1", 1}, .evaluated = {"t1", 0}, .accuracy = 0.5, .loss = 1.0, .n_samples = 10},
    };
    store_acc_entry bad = m[0];
    bad.accuracy = 1.5;
    CHECK_CODE(store_matrix_add(s, &bad, 1, 0, &e), CLAD_EINVAL, e);
    bad = m[0];
    bad.loss = NAN;
    CHECK_CODE(store_matrix_add(s, &bad, 1, 0, &e), CLAD_EINVAL, e);
    /* One bad entry refuses the whole batch. */
    store_acc_entry batch[2] = {m[0], m[0]};
    batch[1].evaluated.version = 7;
    CHECK_CODE(store_matrix_add(s, batch, 2, 0, &e), CLAD_ENOTFOUND, e);
    CHECK(strstr(e.msg, "entry 1"));
    CHECK_OK(store_matrix_add(s, m, 3, 77, &e), e);

    store_acc_entry *got = NULL;
    size_t n = 0;
    CHECK_OK(store_matrix_list(s, NULL, &got, &n, &e), e);
    CHECK_INT_EQ(n, 3);
    CHECK_STR_EQ(got[0].after.task, "t2");
    CHECK_INT_EQ(got[0].after.version, 2);
    CHECK_STR_EQ(got[0].evaluated.task, "t1");
    CHECK_NEAR(got[0].accuracy, 0.91, 0);
    CHECK_INT_EQ(got[2].evaluated.version, 0);
    store_matrix_free(got);
    CHECK_OK(store_matrix_list(s, "t2", &got, &n, &e), e);
    CHECK_INT_EQ(n, 2);
    store_matrix_free(got);

    store_eval ev = {.version = {"t2", 1}, .accuracy = 0.7, .loss = 0.9, .n_samples = 500,
                     .detail_json = "{\"per_class\":[0.6,0.8]}"};
    sha256_hex("test split", 10, ev.data_sha256);
    int64_t eid = 0;
    CHECK_OK(store_eval_add(s, &ev, 77, &eid, &e), e);
    ev.version.version = 2;
    ev.detail_json = NULL;
    ev.data_sha256[0] = '\0';
    CHECK_OK(store_eval_add(s, &ev, 77, NULL, &e), e);
    ev.version.version = 5;
    CHECK_CODE(store_eval_add(s, &ev, 77, NULL, &e), CLAD_ENOTFOUND, e);
    store_eval *evs = NULL;
    CHECK_OK(store_evals_list(s, "t2", 1, &evs, &n, &e), e);
    CHECK_INT_EQ(n, 1);
    CHECK_INT_EQ(evs[0].id, eid);
    CHECK_STR_EQ(evs[0].detail_json, "{\"per_class\":[0.6,0.8]}");
    CHECK(sha256_hex_valid(evs[0].data_sha256));
    CHECK_INT_EQ(evs[0].peer_uid, 77);
    store_evals_free(evs, n);
    CHECK_OK(store_evals_list(s, "t2", 0, &evs, &n, &e), e);
    CHECK_INT_EQ(n, 2);
    CHECK_STR_EQ(evs[1].data_sha256, "");
    store_evals_free(evs, n);

    /* Metrics outlive the versions they describe. */
    CHECK_OK(store_gc(s, "t2", 1, 0, NULL, &e), e);
    CHECK_OK(store_evals_list(s, "t2", 1, &evs, &n, &e), e);
    CHECK_INT_EQ(n, 1);
    store_evals_free(evs, n);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

STORE_TEST(store_audit_log_records_every_write_with_peer)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    store_audit *a = NULL;
    size_t n = 0;
    CHECK_OK(store_audit_list(s, 0, 0, &a, &n, &e), e);
    int64_t start = a[n - 1].id;
    store_audit_free(a, n);

    fx_task(s, "t1"); /* base.put + task.create, uid 1000 */
    fx_put(s, "t1", 0);
    fx_put(s, "t1", 0);
    CHECK_OK(store_rollback(s, "t1", NULL, 0, 601, "quote \" and \\ back", NULL, &e), e);
    CHECK_OK(store_rollback_undo(s, "t1", NULL, 602, NULL, NULL, &e), e);
    CHECK_OK(store_alias_set(s, "t1", "champion", 1, 603, NULL, &e), e);
    CHECK_OK(store_alias_delete(s, "t1", "champion", 604, NULL, &e), e);
    CHECK_OK(store_version_delete(s, "t1", 1, 605, &e), e);
    int64_t job;
    CHECK_OK(store_job_create(s, "train", "t1", NULL, NULL, 606, &job, &e), e);
    CHECK_OK(store_job_mark_running(s, job, &e), e);
    CHECK_OK(store_job_mark_cancelled(s, job, 607, &e), e);
    /* Failed writes leave no audit row. */
    CHECK_CODE(store_version_delete(s, "t1", 2, 608, &e), CLAD_ECONFLICT, e);

    CHECK_OK(store_audit_list(s, start, 0, &a, &n, &e), e);
    static const struct { const char *action, *object; int uid; } want[] = {
        {"base.put", "base:mlp", 1000},
        {"task.create", "task:t1", 1000},
        {"version.put", "version:t1/1", 1000},
        {"version.put", "version:t1/2", 1000},
        {"alias.rollback", "alias:t1/active", 601},
        {"alias.undo", "alias:t1/active", 602},
        {"alias.set", "alias:t1/champion", 603},
        {"alias.delete", "alias:t1/champion", 604},
        {"version.delete", "version:t1/1", 605},
        {"job.create", "job:1", 606},
        {"job.running", "job:1", 606},
        {"job.cancelled", "job:1", 607},
    };
    CHECK_INT_EQ(n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < n; i++) {
        CHECK_STR_EQ(a[i].action, want[i].action);
        CHECK_STR_EQ(a[i].object, want[i].object);
        CHECK_INT_EQ(a[i].peer_uid, want[i].uid);
        CHECK(a[i].time_ms > 0);
    }
    CHECK_STR_EQ(a[4].detail_json, "{\"from\":2,\"to\":1,\"reason\":\"quote \\\" and \\\\ back\"}");
    store_audit_free(a, n);
    CHECK_OK(store_audit_list(s, start, 3, &a, &n, &e), e);
    CHECK_INT_EQ(n, 3);
    store_audit_free(a, n);
    store_close(s);
}

STORE_TEST(store_job_outcome_keeps_result_progress_and_times)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    int64_t id = 0;
    CHECK_OK(store_job_create(s, "train", "t1", NULL, NULL, 500, &id, &e), e);
    store_job_outcome o = {.result_json = "{\"version\":2}", .progress_json = "{\"step\":9}", .created_ms = 1000,
                           .started_ms = 2000, .finished_ms = 3000};
    /* Only a finished job has an outcome. */
    CHECK_CODE(store_job_set_outcome(s, id, &o, &e), CLAD_ECONFLICT, e);
    CHECK_OK(store_job_mark_running(s, id, &e), e);
    CHECK_OK(store_job_mark_failed(s, id, CLAD_EINVAL, "bad data", &e), e);
    store_job_outcome bad = {.result_json = "[1]"};
    CHECK_CODE(store_job_set_outcome(s, id, &bad, &e), CLAD_EINVAL, e);
    CHECK_OK(store_job_set_outcome(s, id, &o, &e), e);
    store_job *j = NULL;
    CHECK_OK(store_job_get(s, id, &j, &e), e);
    CHECK_STR_EQ(j->result_json, "{\"version\":2}");
    CHECK_STR_EQ(j->progress_json, "{\"step\":9}");
    CHECK(j->created_ms == 1000 && j->started_ms == 2000 && j->finished_ms == 3000);
    store_job_free(j);
    /* NULL and 0 leave a field as it is. */
    store_job_outcome keep = {0};
    CHECK_OK(store_job_set_outcome(s, id, &keep, &e), e);
    CHECK_OK(store_job_get(s, id, &j, &e), e);
    CHECK_STR_EQ(j->result_json, "{\"version\":2}");
    CHECK(j->finished_ms == 3000);
    store_job_free(j);
    store_close(s);
}

STORE_TEST(store_job_finish_records_state_and_outcome_together)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    int64_t id = 0;
    CHECK_OK(store_job_create(s, "train", "t1", NULL, NULL, 500, &id, &e), e);
    CHECK_OK(store_job_mark_running(s, id, &e), e);
    store_job_end end = {.state = STORE_JOB_FAILED, .error_code = CLAD_EINVAL, .error_msg = "bad data",
                         .outcome = {.progress_json = "{\"step\":4}", .finished_ms = 4242}};
    CHECK_OK(store_job_finish(s, id, &end, &e), e);
    store_job *j = NULL;
    CHECK_OK(store_job_get(s, id, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_FAILED);
    CHECK_STR_EQ(j->error_msg, "bad data");
    CHECK_STR_EQ(j->progress_json, "{\"step\":4}");
    CHECK(j->finished_ms == 4242 && j->result_json == NULL);
    store_job_free(j);
    /* A second end is refused and changes nothing, outcome included. */
    store_job_end again = {.state = STORE_JOB_CANCELLED, .outcome = {.result_json = "{\"x\":1}"}};
    CHECK_CODE(store_job_finish(s, id, &again, &e), CLAD_ECONFLICT, e);
    CHECK_OK(store_job_get(s, id, &j, &e), e);
    CHECK(j->state == STORE_JOB_FAILED && j->result_json == NULL);
    store_job_free(j);
    /* Graceful shutdown: a running job ends interrupted, with the progress it had. */
    int64_t stopped = 0;
    CHECK_OK(store_job_create(s, "train", "t1", NULL, NULL, 500, &stopped, &e), e);
    CHECK_OK(store_job_mark_running(s, stopped, &e), e);
    store_job_end stop = {.state = STORE_JOB_INTERRUPTED, .outcome = {.progress_json = "{\"step\":2}"}};
    CHECK_OK(store_job_finish(s, stopped, &stop, &e), e);
    CHECK_OK(store_job_get(s, stopped, &j, &e), e);
    CHECK_INT_EQ(j->state, STORE_JOB_INTERRUPTED);
    CHECK_STR_EQ(j->progress_json, "{\"step\":2}");
    CHECK(j->finished_ms > 0);
    store_job_free(j);
    CHECK_CODE(store_job_finish(s, stopped, &stop, &e), CLAD_ECONFLICT, e);
    store_close(s);
}
