/* The model API of the real daemon, end to end: bases, training jobs, versions, predictions, rollback,
 * aliases, errors, cancel, SIGKILL and SIGTERM during training, concurrent predictions while training.
 * Models and data are small (an MLP on a synthetic teacher task) so every test runs in seconds. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/model.h"
#include "core/rng.h"
#include "io/dataset_io.h"
#include "io/model_io.h"
#include "tests/daemon_util.h"
#include "tests/test.h"

#define IN 16
#define CLASSES 4
#define OCTET "-H 'Content-Type: application/octet-stream' "

/* Labels of a fixed random linear teacher on Gaussian inputs; `shift` changes the task (a permutation
 * of the input features by `shift` places), so tasks differ but share structure. */
static void write_task(const char *path, int n, int shift, uint64_t seed)
{
    dataset d;
    CHECK_INT_EQ(dataset_init(&d, n, 1, (int[]){IN}, NULL), 0);
    rng r;
    rng_init(&r, 1000);
    float W[CLASSES][IN];
    for (int k = 0; k < CLASSES; k++)
        for (int j = 0; j < IN; j++) W[k][j] = rng_normal(&r);
    rng_init(&r, seed);
    for (int i = 0; i < n; i++) {
        float *x = d.x + (size_t)i * IN;
        for (int j = 0; j < IN; j++) x[j] = rng_normal(&r);
        int best = 0;
        float bv = -1e30f;
        for (int k = 0; k < CLASSES; k++) {
            float s = 0;
            for (int j = 0; j < IN; j++) s += W[k][j] * x[(j + shift) % IN];
            if (s > bv) { bv = s; best = k; }
        }
        d.y[i] = best;
    }
    d.n_classes = CLASSES;
    CHECK_INT_EQ(dataset_save_safetensors(&d, path, NULL), 0);
    dataset_finish(&d);
}

typedef struct fixture {
    daemon_proc d;
    char base[512], t1[512], t1_test[512], t2[512];
} fixture;

static void path_in_tmp(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", test_tmpdir(), name);
}

/* Starts cladd, imports a small MLP base (trained nowhere: random features are enough for adapters to
 * learn the teacher) and writes two tasks' data. */
static void fixture_start(fixture *f)
{
    path_in_tmp(f->base, sizeof f->base, "base.safetensors");
    path_in_tmp(f->t1, sizeof f->t1, "t1.safetensors");
    path_in_tmp(f->t1_test, sizeof f->t1_test, "t1-test.safetensors");
    path_in_tmp(f->t2, sizeof f->t2, "t2.safetensors");
    model_config c = {.kind = MODEL_MLP, .input_dim = IN, .n_hidden = 2, .hidden = {32, 32}, .n_classes = CLASSES};
    write_random_base(f->base, &c, 7);
    write_task(f->t1, 1500, 0, 1);
    write_task(f->t1_test, 400, 0, 2);
    write_task(f->t2, 1500, 5, 3);
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    daemon_start(&f->d, &o);
    char args[700], *out = NULL;
    snprintf(args, sizeof args, "base import mlp '%s'", f->base);
    int rc = clad_run(&f->d, args, &out);
    CHECK_MSG(rc == 0, "clad base import exited %d: %s", rc, out);
    free(out);
}

/* POSTs a file as application/octet-stream; returns the status, the reply in *body. */
static int post_file(fixture *f, const char *path, const char *file, char **body)
{
    char extra[700];
    snprintf(extra, sizeof extra, OCTET "--data-binary '@%s'", file);
    return curl_req(&f->d, "POST", path, extra, body, NULL);
}

/* POST data to train `task` with options (a query string without '?'), following the job; returns the
 * final "end" event's job object. */
static json_t *train(fixture *f, const char *task, const char *file, const char *query)
{
    char path[512], extra[700], *body = NULL;
    snprintf(path, sizeof path, "/v1/tasks/%s/train?follow=1%s%s", task, query ? "&" : "", query ? query : "");
    snprintf(extra, sizeof extra, OCTET "--data-binary '@%s'", file);
    int code = curl_req(&f->d, "POST", path, extra, &body, NULL);
    CHECK_MSG(code == 202, "train answered %d: %s", code, body);
    /* The stream is NDJSON: the last line is the end event. */
    char *last = NULL, *save = NULL;
    bool saw_plan = false;
    for (char *line = strtok_r(body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strstr(line, "\"event\":\"plan\"")) saw_plan = true;
        last = line;
    }
    CHECK_MSG(saw_plan, "no plan event in the stream");
    json_t *end = json_or_fail(last);
    CHECK_STR_EQ(json_string_value(json_object_get(end, "event")), "end");
    json_t *job = json_incref(json_object_get(end, "job"));
    json_decref(end);
    free(body);
    return job;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static json_t *get(fixture *f, const char *path, int want)
{
    char *body = NULL;
    int code = curl_req(&f->d, "GET", path, NULL, &body, NULL);
    CHECK_MSG(code == want, "GET %s answered %d (want %d): %s", path, code, want, body);
    json_t *j = json_or_fail(body);
    free(body);
    return j;
}

/* Predicts the test file's inputs; returns the raw reply body (labels and probabilities). */
static char *predict(fixture *f, const char *task, const char *query, const char *file)
{
    char path[256], extra[700], *body = NULL;
    snprintf(path, sizeof path, "/v1/tasks/%s/predict%s%s", task, query ? "?" : "", query ? query : "");
    snprintf(extra, sizeof extra, OCTET "--data-binary '@%s'", file);
    int code = curl_req(&f->d, "POST", path, extra, &body, NULL);
    CHECK_MSG(code == 200, "predict answered %d: %s", code, body);
    return body;
}

/* The reply without its "version" field, to compare the outputs of two versions. */
static char *outputs_of(const char *reply)
{
    json_t *j = json_or_fail(reply);
    char *s = json_dumps(json_pack("{s:O,s:O}", "labels", json_object_get(j, "labels"), "p",
                                   json_object_get(j, "probabilities")), JSON_COMPACT);
    json_decref(j);
    return s;
}

static void stop(fixture *f)
{
    CHECK_INT_EQ(daemon_stop(&f->d, SIGTERM, 10), 0);
}

TEST_TIMEOUT(daemon_api_train_predict_rollback_alias, 120)
{
    fixture f;
    fixture_start(&f);
    json_t *job = train(&f, "t1", f.t1, "epochs=6&lr=0.01");
    CHECK_STR_EQ(jstr(job, "state"), "succeeded");
    CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(job, "result"), "version")), 1);
    /* The last progress event (the evaluation) still reads as a finished bar: done = total > 0. */
    json_t *pr = json_object_get(job, "progress");
    CHECK(json_integer_value(json_object_get(pr, "total")) > 0);
    CHECK_INT_EQ(json_integer_value(json_object_get(pr, "done")), json_integer_value(json_object_get(pr, "total")));
    json_decref(job);

    json_t *t = get(&f, "/v1/tasks/t1", 200);
    CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(t, "aliases"), "active")), 1);
    json_t *plan = json_object_get(json_object_get(json_object_get(t, "active"), "lineage"), "plan");
    CHECK(json_object_size(json_object_get(plan, "ranks")) > 0);
    CHECK(json_is_number(json_object_get(plan, "distance")));
    json_decref(t);

    /* Evaluate: clearly above chance (0.25), recorded. */
    char *body = NULL;
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/evaluate", f.t1_test, &body), 200);
    json_t *ev = json_or_fail(body);
    free(body);
    double acc1 = json_number_value(json_object_get(ev, "accuracy"));
    CHECK_MSG(acc1 > 0.6, "accuracy %.3f", acc1);
    CHECK(json_is_true(json_object_get(ev, "recorded")));
    json_decref(ev);

    char *p1 = predict(&f, "t1", NULL, f.t1_test), *o1 = outputs_of(p1);
    json_t *pj = json_or_fail(p1);
    CHECK_INT_EQ(json_array_size(json_object_get(pj, "labels")), 400);
    json_t *row = json_array_get(json_object_get(pj, "probabilities"), 0);
    double sum = 0;
    for (size_t k = 0; k < json_array_size(row); k++) sum += json_number_value(json_array_get(row, k));
    CHECK_NEAR(sum, 1.0, 1e-4);
    json_decref(pj);

    /* A second version becomes active; its parent is the first. */
    job = train(&f, "t1", f.t1, "epochs=1&rank=fixed:1&seed=9");
    CHECK_STR_EQ(jstr(job, "state"), "succeeded");
    json_decref(job);
    json_t *v2 = get(&f, "/v1/tasks/t1/versions/2", 200);
    json_t *parent = json_array_get(json_object_get(v2, "parents"), 0);
    CHECK_STR_EQ(jstr(parent, "task"), "t1");
    CHECK_INT_EQ(json_integer_value(json_object_get(parent, "version")), 1);
    CHECK_STR_EQ(jstr(json_object_get(v2, "hparams"), "rank"), "fixed:1");
    json_decref(v2);
    char *p2 = predict(&f, "t1", NULL, f.t1_test), *o2 = outputs_of(p2);
    CHECK(strcmp(o1, o2) != 0);

    /* Rollback: version 1's outputs, bit for bit; undo: version 2's again. */
    CHECK_INT_EQ(clad_run(&f.d, "rollback t1 --reason test", NULL), 0);
    char *p3 = predict(&f, "t1", NULL, f.t1_test), *o3 = outputs_of(p3);
    CHECK_STR_EQ(o3, o1);
    CHECK_INT_EQ(clad_run(&f.d, "undo t1", NULL), 0);
    char *p4 = predict(&f, "t1", NULL, f.t1_test), *o4 = outputs_of(p4);
    CHECK_STR_EQ(o4, o2);
    /* Nothing earlier than version 1 to roll back to, twice. */
    CHECK_INT_EQ(clad_run(&f.d, "rollback t1 --to 1", NULL), 0);
    CHECK_INT_EQ(clad_run(&f.d, "rollback t1", NULL), 6);

    /* An alias, a prediction through it, and deletion refused while it points there. */
    CHECK_INT_EQ(clad_run(&f.d, "alias t1 champion 2", NULL), 0);
    char *p5 = predict(&f, "t1", "alias=champion", f.t1_test), *o5 = outputs_of(p5);
    CHECK_STR_EQ(o5, o2);
    CHECK_INT_EQ(curl_req(&f.d, "DELETE", "/v1/tasks/t1/versions/2", NULL, &body, NULL), 409);
    CHECK_STR_EQ(error_code_of(body), "conflict");
    CHECK(strstr(body, "champion") != NULL);
    free(body);
    json_t *al = get(&f, "/v1/tasks/t1/aliases", 200);
    CHECK(json_array_size(json_object_get(al, "history")) >= 5);
    json_decref(al);

    /* The CLI's tables. */
    char *out = NULL;
    CHECK_INT_EQ(clad_run(&f.d, "versions t1", &out), 0);
    CHECK(strstr(out, "champion") != NULL);
    free(out);
    CHECK_INT_EQ(clad_run(&f.d, "show t1@1", &out), 0);
    CHECK(strstr(out, "DISTANCE") != NULL && strstr(out, "fc1") != NULL);
    free(out);
    char args[700];
    snprintf(args, sizeof args, "eval t1 '%s'", f.t1_test);
    CHECK_INT_EQ(clad_run(&f.d, args, &out), 0);
    CHECK(strstr(out, "accuracy") != NULL);
    free(out);

    free(p1); free(o1); free(p2); free(o2); free(p3); free(o3); free(p4); free(o4); free(p5); free(o5);
    stop(&f);
}

/* A fusion version loads its source versions whenever it is served: a source cannot be deleted while
 * the fusion version exists (409 naming it), and the fusion task keeps answering. */
TEST_TIMEOUT(daemon_api_fusion_sources_cannot_be_deleted, 120)
{
    fixture f;
    fixture_start(&f);
    json_decref(train(&f, "t1", f.t1, "epochs=2&rank=fixed:2"));
    json_decref(train(&f, "t2", f.t2, "epochs=2&rank=fixed:2"));
    char *body = NULL;
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t3/train?follow=1&epochs=1&fuse_with=t1,t2", f.t1, &body), 202);
    CHECK_MSG(strstr(body, "\"state\":\"succeeded\""), "%s", body);
    free(body);
    /* t1@1 is no longer an alias target, only a fusion source. */
    json_decref(train(&f, "t1", f.t1, "epochs=1&rank=fixed:1"));
    CHECK_INT_EQ(curl_req(&f.d, "DELETE", "/v1/tasks/t1/versions/1", NULL, &body, NULL), 409);
    CHECK_STR_EQ(error_code_of(body), "conflict");
    CHECK_MSG(strstr(body, "t3"), "the refusal names the dependent version: %s", body);
    free(body);
    json_t *v = get(&f, "/v1/tasks/t3/versions/1", 200);
    CHECK_INT_EQ(json_array_size(json_object_get(v, "needs")), 2);
    json_decref(v);
    char *p = predict(&f, "t3", NULL, f.t1_test);
    free(p);
    stop(&f);
}

/* The adapter cache forgets a deleted version at once. */
TEST_TIMEOUT(daemon_api_deleted_version_is_not_served_from_the_cache, 120)
{
    fixture f;
    fixture_start(&f);
    json_decref(train(&f, "t1", f.t1, "epochs=1&rank=fixed:1"));
    json_decref(train(&f, "t1", f.t1, "epochs=1&rank=fixed:2&seed=5"));
    char *p = predict(&f, "t1", "version=1", f.t1_test); /* now cached */
    free(p);
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&f.d, "DELETE", "/v1/tasks/t1/versions/1", NULL, &body, NULL), 200);
    free(body);
    char extra[700];
    snprintf(extra, sizeof extra, OCTET "--data-binary '@%s'", f.t1_test);
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/tasks/t1/predict?version=1", extra, &body, NULL), 404);
    CHECK_STR_EQ(error_code_of(body), "not_found");
    free(body);
    p = predict(&f, "t1", "version=2", f.t1_test);
    free(p);
    stop(&f);
}

TEST_TIMEOUT(daemon_api_earlier_tasks_are_untouched_by_later_ones, 120)
{
    fixture f;
    fixture_start(&f);
    json_t *job = train(&f, "t1", f.t1, "epochs=2");
    CHECK_STR_EQ(jstr(job, "state"), "succeeded");
    json_decref(job);
    char *before = predict(&f, "t1", NULL, f.t1_test);
    job = train(&f, "t2", f.t2, "epochs=2");
    CHECK_STR_EQ(jstr(job, "state"), "succeeded");
    json_decref(job);
    char *after = predict(&f, "t1", NULL, f.t1_test);
    CHECK_STR_EQ(after, before);
    /* The cache served the second prediction of t1 and holds one base. */
    json_t *st = get(&f, "/v1/status", 200), *loaded = json_object_get(st, "loaded");
    CHECK_INT_EQ(json_integer_value(json_object_get(loaded, "bases")), 1);
    CHECK(json_integer_value(json_object_get(loaded, "adapters")) >= 1);
    CHECK(json_integer_value(json_object_get(loaded, "adapter_cache_hits")) >= 1);
    json_decref(st);
    /* The second task was compared with the first. */
    json_t *v = get(&f, "/v1/tasks/t2/versions/1", 200);
    json_t *overlap = json_object_get(json_object_get(json_object_get(v, "lineage"), "plan"), "overlap");
    CHECK_MSG(json_object_get(overlap, "t1@1") != NULL, "no overlap with t1@1 in the plan");
    json_decref(v);
    free(before);
    free(after);
    stop(&f);
}

TEST_TIMEOUT(daemon_api_errors_are_clear_and_change_nothing, 120)
{
    fixture f;
    fixture_start(&f);
    char *body = NULL, bad[512];
    /* Unknown names. */
    CHECK_INT_EQ(curl_req(&f.d, "GET", "/v1/tasks/nope", NULL, &body, NULL), 404);
    CHECK_STR_EQ(error_code_of(body), "not_found");
    free(body);
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/tasks/nope/predict", "-H 'Content-Type: application/json' -d '{\"inputs\":[[1]]}'", &body, NULL), 404);
    free(body);
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/train?base=other", f.t1, &body), 404);
    CHECK_STR_EQ(error_code_of(body), "not_found");
    free(body);
    /* Bad names and options. */
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/-bad/train", f.t1, &body), 400);
    free(body);
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/train?epochs=0", f.t1, &body), 400);
    CHECK(strstr(body, "epochs") != NULL);
    free(body);
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/train?rank=huge", f.t1, &body), 400);
    free(body);
    /* Malformed data: the job fails with the reader's message, and no task or version appears. */
    path_in_tmp(bad, sizeof bad, "bad.safetensors");
    FILE *fp = fopen(bad, "wb");
    fwrite("\x10\0\0\0\0\0\0\0{\"x\":", 1, 13, fp);
    fclose(fp);
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/train?follow=1", bad, &body), 202);
    CHECK_MSG(strstr(body, "\"state\":\"failed\"") && strstr(body, "safetensors"), "%s", body);
    free(body);
    json_t *tasks = get(&f, "/v1/tasks", 200);
    CHECK_INT_EQ(json_array_size(json_object_get(tasks, "tasks")), 0);
    json_decref(tasks);
    /* Wrong input size and non-finite inputs in predictions. */
    json_t *ok = train(&f, "t1", f.t1, "epochs=1");
    json_decref(ok);
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/tasks/t1/predict", "-H 'Content-Type: application/json' -d '{\"inputs\":[[1,2,3]]}'", &body, NULL), 400);
    CHECK(strstr(body, "16") != NULL);
    free(body);
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/tasks/t1/predict", "-H 'Content-Type: application/json' -d '{\"inputs\":[[1,2,3'", &body, NULL), 400);
    CHECK_STR_EQ(error_code_of(body), "invalid_input");
    free(body);
    /* A bad ?follow is refused before the job is submitted: no job is left behind. */
    json_t *before = get(&f, "/v1/jobs", 200);
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/train?follow=maybe", f.t1, &body), 400);
    CHECK_MSG(strstr(body, "'follow'"), "%s", body);
    free(body);
    json_t *after = get(&f, "/v1/jobs", 200);
    CHECK_INT_EQ(json_array_size(json_object_get(after, "jobs")), json_array_size(json_object_get(before, "jobs")));
    json_decref(before);
    json_decref(after);
    /* Evaluate needs labels: JSON inputs are refused as such, not parsed as a CSV. */
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/tasks/t1/evaluate", "-H 'Content-Type: application/json' -d '{\"inputs\":[[0]]}'", &body, NULL), 400);
    CHECK_MSG(strstr(body, "evaluation needs labels"), "%s", body);
    free(body);
    /* An unknown key is refused as on every JSON route, not ignored (a typo must not pass silently). */
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/tasks/t1/predict", "-H 'Content-Type: application/json' -d '{\"inputs\":[[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]],\"top_k\":2}'", &body, NULL), 400);
    CHECK_MSG(strstr(body, "unknown key 'top_k' (known: inputs)") != NULL, "%s", body);
    free(body);
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/tasks/t1/predict?version=7", "-H 'Content-Type: application/json' -d '{\"inputs\":[[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]}'", &body, NULL), 404);
    free(body);
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/tasks/t1/predict?version=x", "-H 'Content-Type: application/json' -d '{}'", &body, NULL), 400);
    free(body);
    CHECK_INT_EQ(curl_req(&f.d, "GET", "/v1/tasks/t1/versions/99999999999999999999", NULL, &body, NULL), 400);
    CHECK_MSG(strstr(body, "version '99999999999999999999' must be"), "%s", body);
    free(body);
    CHECK_INT_EQ(curl_req(&f.d, "GET", "/v1/tasks/t1/versions/0", NULL, &body, NULL), 400);
    free(body);
    /* Labels beyond the task's classes on a retrain. */
    dataset d;
    dataset_init(&d, 50, 1, (int[]){IN}, NULL);
    for (int i = 0; i < 50; i++) d.y[i] = i % 6;
    d.n_classes = 6;
    char six[512];
    path_in_tmp(six, sizeof six, "six.safetensors");
    dataset_save_safetensors(&d, six, NULL);
    dataset_finish(&d);
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/train?follow=1", six, &body), 202);
    CHECK(strstr(body, "\"state\":\"failed\"") != NULL && strstr(body, "4 classes") != NULL);
    free(body);
    /* A base that exists is never replaced. */
    CHECK_INT_EQ(post_file(&f, "/v1/bases/mlp", f.base, &body), 409);
    free(body);
    /* Still exactly one version, still serving. */
    json_t *vs = get(&f, "/v1/tasks/t1/versions", 200);
    CHECK_INT_EQ(json_array_size(json_object_get(vs, "versions")), 1);
    json_decref(vs);
    free(predict(&f, "t1", NULL, f.t1_test));
    stop(&f);
}

/* Starts a long training (many epochs of tiny steps) and returns its job id once it is training. */
static long long start_long_training(fixture *f, curl_stream *s, const char *task)
{
    char path[256], extra[700];
    snprintf(path, sizeof path, "/v1/tasks/%s/train?follow=1&epochs=1000&batch=16", task);
    snprintf(extra, sizeof extra, OCTET "--data-binary '@%s'", f->t1);
    stream_open(s, &f->d, "POST", path, extra);
    json_t *first = stream_until(s, "\"event\":\"job\"", 10000);
    long long id = json_integer_value(json_object_get(json_object_get(first, "job"), "id"));
    json_decref(first);
    json_decref(stream_until(s, "\"event\":\"step\"", 30000));
    return id;
}

TEST_TIMEOUT(daemon_api_cancel_leaves_no_version, 120)
{
    fixture f;
    fixture_start(&f);
    curl_stream s;
    long long id = start_long_training(&f, &s, "t1");
    char path[64], *body = NULL;
    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    double t0 = now_s();
    CHECK_INT_EQ(curl_req(&f.d, "DELETE", path, NULL, &body, NULL), 202);
    free(body);
    json_t *end = stream_until(&s, "\"event\":\"end\"", 10000);
    CHECK_STR_EQ(jstr(json_object_get(end, "job"), "state"), "cancelled");
    CHECK_MSG(now_s() - t0 < 2.0, "cancel took %.2f s", now_s() - t0);
    json_decref(end);
    stream_close(&s);
    CHECK_INT_EQ(curl_req(&f.d, "GET", "/v1/tasks/t1", NULL, &body, NULL), 404);
    free(body);
    stop(&f);
}

TEST_TIMEOUT(daemon_api_sigkill_during_training_then_restart, 150)
{
    fixture f;
    fixture_start(&f);
    json_t *job = train(&f, "t2", f.t2, "epochs=1");
    json_decref(job);
    char *before = predict(&f, "t2", NULL, f.t1_test);
    curl_stream s;
    long long id = start_long_training(&f, &s, "t1");
    CHECK_INT_EQ(daemon_stop(&f.d, SIGKILL, 10), 128 + SIGKILL);
    stream_close(&s);
    /* Restart on the same state: the job is interrupted, t2 unchanged, t1 has no version, and t1 trains. */
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    daemon_start(&f.d, &o);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    json_t *j = get(&f, path, 200);
    CHECK_STR_EQ(jstr(j, "state"), "interrupted");
    json_decref(j);
    char *after = predict(&f, "t2", NULL, f.t1_test);
    CHECK_STR_EQ(after, before);
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&f.d, "GET", "/v1/tasks/t1", NULL, &body, NULL), 404);
    free(body);
    job = train(&f, "t1", f.t1, "epochs=1");
    CHECK_STR_EQ(jstr(job, "state"), "succeeded");
    json_decref(job);
    free(before);
    free(after);
    stop(&f);
}

TEST_TIMEOUT(daemon_api_sigterm_during_training_interrupts_cleanly, 120)
{
    fixture f;
    fixture_start(&f);
    curl_stream s;
    long long id = start_long_training(&f, &s, "t1");
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
    stream_close(&s);
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    daemon_start(&f.d, &o);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    json_t *j = get(&f, path, 200);
    CHECK_STR_EQ(jstr(j, "state"), "interrupted");
    json_decref(j);
    stop(&f);
}

TEST_TIMEOUT(daemon_api_concurrent_predictions_while_training, 150)
{
    fixture f;
    fixture_start(&f);
    json_t *job = train(&f, "t2", f.t2, "epochs=1");
    json_decref(job);
    char *reference = predict(&f, "t2", NULL, f.t1_test);
    curl_stream s;
    start_long_training(&f, &s, "t1");
    /* 32 clients, 5 predictions each, all while t1 trains: every answer equals the reference. */
    enum { CLIENTS = 32, EACH = 5 };
    pid_t pids[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
        pids[c] = fork();
        if (pids[c] == 0) {
            for (int k = 0; k < EACH; k++) {
                char *got = predict(&f, "t2", NULL, f.t1_test);
                if (!predictions_close(got, reference, 1e-5)) _exit(3);
                free(got);
            }
            _exit(0);
        }
    }
    double t0 = now_s();
    for (int c = 0; c < CLIENTS; c++) {
        int st = 0;
        waitpid(pids[c], &st, 0);
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %d: status %d", c, st);
    }
    double dt = now_s() - t0;
    /* The training job was still running the whole time. */
    json_t *jobs = get(&f, "/v1/jobs?state=running", 200);
    CHECK_INT_EQ(json_array_size(json_object_get(jobs, "jobs")), 1);
    json_decref(jobs);
    printf("# %d predictions of 400 samples by %d clients in %.2f s while training\n", CLIENTS * EACH, CLIENTS, dt);
    stream_close(&s);
    free(reference);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 20), 0);
}

TEST_TIMEOUT(daemon_api_train_with_rank_pruning_records_before_and_after, 120)
{
    fixture f;
    fixture_start(&f);
    json_t *job = train(&f, "t1", f.t1, "epochs=2&rank=fixed:8&prune=0.9");
    CHECK_STR_EQ(jstr(job, "state"), "succeeded");
    json_decref(job);
    json_t *v = get(&f, "/v1/tasks/t1/versions/1", 200);
    json_t *pr = json_object_get(json_object_get(v, "lineage"), "prune");
    CHECK_MSG(json_is_object(pr), "no prune record in the lineage");
    CHECK_NEAR(json_number_value(json_object_get(pr, "tau")), 0.9, 1e-9);
    CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(pr, "ranks_before"), "fc1")), 8);
    long long after = json_integer_value(json_object_get(json_object_get(pr, "ranks_after"), "fc1"));
    CHECK(after >= 1 && after <= 8);
    CHECK(json_integer_value(json_object_get(pr, "params_after")) <= json_integer_value(json_object_get(pr, "params_before")));
    CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(v, "metrics"), "adapter_params")),
                 json_integer_value(json_object_get(pr, "params_after")));
    json_decref(v);
    char *body = NULL;
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/train?prune=1.5", f.t1, &body), 400);
    CHECK(strstr(body, "prune") != NULL);
    free(body);
    free(predict(&f, "t1", NULL, f.t1_test));
    stop(&f);
}

TEST_TIMEOUT(daemon_api_merge_serves_each_source_with_its_head, 120)
{
    fixture f;
    fixture_start(&f);
    json_t *job = train(&f, "t1", f.t1, "epochs=2&rank=fixed:2");
    json_decref(job);
    job = train(&f, "t2", f.t2, "epochs=2&rank=fixed:2");
    json_decref(job);
    /* A merge of one task with coefficient 1 and no trimming reproduces that task. */
    char *body = NULL;
    int code = curl_req(&f.d, "POST", "/v1/merges/solo?follow=1",
                        "-H 'Content-Type: application/json' -d '{\"tasks\":[\"t1\"],\"method\":\"ta\",\"rank\":16}'", &body, NULL);
    CHECK_MSG(code == 202 && strstr(body, "\"state\":\"succeeded\""), "merge answered %d: %s", code, body);
    free(body);
    char *own = predict(&f, "t1", NULL, f.t1_test), *merged = predict(&f, "solo", "task=t1", f.t1_test);
    json_t *a = json_or_fail(own), *b = json_or_fail(merged);
    json_t *pa = json_object_get(a, "probabilities"), *pb = json_object_get(b, "probabilities");
    CHECK_INT_EQ(json_array_size(pb), json_array_size(pa));
    for (size_t i = 0; i < json_array_size(pa); i++)
        for (size_t k = 0; k < CLASSES; k++)
            CHECK_NEAR(json_number_value(json_array_get(json_array_get(pb, i), k)),
                       json_number_value(json_array_get(json_array_get(pa, i), k)), 1e-4);
    json_decref(a);
    json_decref(b);
    free(own);
    free(merged);
    /* Two tasks with DRM-H through the CLI; lineage names both sources; a non-source is refused. */
    CHECK_INT_EQ(clad_run(&f.d, "merge both --tasks t1,t2 --method drm-h", NULL), 0);
    json_t *v = get(&f, "/v1/tasks/both/versions/1", 200);
    CHECK_STR_EQ(jstr(v, "kind"), "merged");
    CHECK_INT_EQ(json_array_size(json_object_get(v, "parents")), 2);
    CHECK_STR_EQ(jstr(json_object_get(json_object_get(v, "lineage"), "merge"), "method"), "drm-h");
    json_decref(v);
    free(predict(&f, "both", "task=t2", f.t1_test));
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/both/predict?task=t9", f.t1_test, &body), 404);
    CHECK(strstr(body, "t9") != NULL);
    free(body);
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/merges/bad", "-H 'Content-Type: application/json' -d '{\"tasks\":[\"t1\"],\"method\":\"avg\"}'", &body, NULL), 400);
    free(body);
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/merges/t1", "-H 'Content-Type: application/json' -d '{\"tasks\":[\"t2\"]}'", &body, NULL), 409);
    free(body);
    /* Sources are checked before any job: an unknown one is 404, one on another base 409 (no job made). */
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/merges/m2", "-H 'Content-Type: application/json' -d '{\"tasks\":[\"t1\",\"t9\"]}'", &body, NULL), 404);
    CHECK_MSG(strstr(body, "unknown task 't9'"), "%s", body);
    free(body);
    char args[1200];
    snprintf(args, sizeof args, "base import other '%s'", f.base);
    CHECK_INT_EQ(clad_run(&f.d, args, NULL), 0);
    snprintf(args, sizeof args, "train t3 '%s' --base other --epochs 1", f.t1);
    CHECK_INT_EQ(clad_run(&f.d, args, NULL), 0);
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/merges/m2", "-H 'Content-Type: application/json' -d '{\"tasks\":[\"t1\",\"t3\"]}'", &body, NULL), 409);
    CHECK_MSG(strstr(body, "task 't3' is on base 'other', not 'mlp'"), "%s", body);
    free(body);
    json_t *failed = get(&f, "/v1/jobs?state=failed", 200);
    CHECK_INT_EQ(json_array_size(json_object_get(failed, "jobs")), 0);
    json_decref(failed);
    stop(&f);
}

TEST_TIMEOUT(daemon_api_tied_lora_versions_train_and_serve, 120)
{
    fixture f;
    fixture_start(&f);
    json_t *job = train(&f, "t1", f.t1, "epochs=3&rank=fixed:4&kind=tl6&lr=0.01");
    CHECK_STR_EQ(jstr(job, "state"), "succeeded");
    json_decref(job);
    json_t *v = get(&f, "/v1/tasks/t1/versions/1", 200);
    CHECK_STR_EQ(jstr(v, "kind"), "tied");
    CHECK_STR_EQ(jstr(json_object_get(v, "hparams"), "kind"), "tl6");
    json_decref(v);
    char *body = NULL;
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/evaluate", f.t1_test, &body), 200);
    json_t *ev = json_or_fail(body);
    CHECK_MSG(json_number_value(json_object_get(ev, "accuracy")) > 0.5, "%s", body);
    json_decref(ev);
    free(body);
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/train?kind=tl9", f.t1, &body), 400);
    free(body);
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/train?kind=tl5&prune=0.9", f.t1, &body), 400);
    free(body);
    stop(&f);
}

TEST_TIMEOUT(daemon_api_fusion_over_earlier_tasks, 120)
{
    fixture f;
    fixture_start(&f);
    json_decref(train(&f, "t1", f.t1, "epochs=2&rank=fixed:2"));
    json_decref(train(&f, "t2", f.t2, "epochs=2&rank=fixed:2"));
    /* t3 is t1's data again: fusion over t1 and t2 should lean on t1. */
    char path[128], extra[700], *body = NULL;
    snprintf(path, sizeof path, "/v1/tasks/t3/train?follow=1&epochs=3&fuse_with=t1,t2");
    CHECK_INT_EQ(post_file(&f, path, f.t1, &body), 202);
    CHECK_MSG(strstr(body, "\"state\":\"succeeded\""), "%s", body);
    free(body);
    json_t *v = get(&f, "/v1/tasks/t3/versions/1", 200);
    CHECK_STR_EQ(jstr(v, "kind"), "fusion");
    CHECK_INT_EQ(json_array_size(json_object_get(v, "parents")), 2);
    json_t *srcs = json_object_get(json_object_get(json_object_get(v, "lineage"), "fusion"), "sources");
    CHECK_INT_EQ(json_array_size(srcs), 2);
    double w1 = json_number_value(json_object_get(json_array_get(srcs, 0), "weight"));
    double w2 = json_number_value(json_object_get(json_array_get(srcs, 1), "weight"));
    CHECK_NEAR(w1 + w2, 1.0, 1e-3);
    printf("# fusion weights: t1 %.3f, t2 %.3f\n", w1, w2);
    json_decref(v);
    /* Served through the registry, which loads t1 and t2 first. */
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t3/evaluate", f.t1_test, &body), 200);
    json_t *ev = json_or_fail(body);
    CHECK_MSG(json_number_value(json_object_get(ev, "accuracy")) > 0.5, "%s", body);
    json_decref(ev);
    free(body);
    snprintf(extra, sizeof extra, OCTET "--data-binary '@%s'", f.t1);
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/tasks/t4/train?fuse_with=t1,-x", extra, &body, NULL), 400);
    free(body);
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/tasks/t4/train?fuse_with=t1&kind=tl5", extra, &body, NULL), 400);
    free(body);
    /* An unknown source is refused before any job is made. */
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/tasks/t4/train?follow=1&fuse_with=nosuch", extra, &body, NULL), 404);
    CHECK_MSG(strstr(body, "unknown task 'nosuch'"), "%s", body);
    free(body);
    stop(&f);
}

/* ---- the pipeline's semantics (core/cl_pipeline.h) --------------------------------------------------- */

static json_t *plan_of(json_t *version) { return json_object_get(json_object_get(version, "lineage"), "plan"); }

static long long metric_int(json_t *version, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(version, "metrics"), key));
}

/* Starts f, trains t1 on its data (2 epochs), then `task` on the same data (1 epoch: a second version of
 * t1, or the first of another task), and returns the version the second training made. */
static json_t *start_and_train_twice(fixture *f, const char *task)
{
    fixture_start(f);
    json_decref(train(f, "t1", f->t1, "epochs=2"));
    json_t *job = train(f, task, f->t1, "epochs=1");
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/versions/%lld", task,
             (long long)json_integer_value(json_object_get(json_object_get(job, "result"), "version")));
    json_decref(job);
    return get(f, path, 200);
}

TEST_TIMEOUT(daemon_api_fixed_rank_skips_the_plan_unless_explained, 120)
{
    fixture f;
    fixture_start(&f);
    json_t *job = train(&f, "t1", f.t1, "epochs=1&rank=fixed:2");
    CHECK_STR_EQ(jstr(job, "state"), "succeeded");
    json_t *res = json_object_get(job, "result");
    CHECK(json_real_value(json_object_get(res, "plan_seconds")) == 0.0);
    json_decref(job);
    json_t *v = get(&f, "/v1/tasks/t1/versions/1", 200);
    CHECK(json_is_false(json_object_get(plan_of(v), "planned")));
    CHECK(json_is_null(json_object_get(plan_of(v), "probe")));
    CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(plan_of(v), "ranks"), "fc1")), 2);
    CHECK_STR_EQ(jstr(json_object_get(json_object_get(plan_of(v), "layers"), "fc1"), "why"), "fixed");
    json_decref(v);
    /* With explain=1 the probe runs and the explanation is the full one. */
    job = train(&f, "t1", f.t1, "epochs=1&rank=fixed:2&explain=1");
    res = json_object_get(job, "result");
    double plan_s = json_real_value(json_object_get(res, "plan_seconds"));
    CHECK_MSG(plan_s > 0.0, "plan_seconds %g", plan_s);
    json_decref(job);
    v = get(&f, "/v1/tasks/t1/versions/2", 200);
    CHECK(json_is_true(json_object_get(plan_of(v), "planned")));
    CHECK(json_is_object(json_object_get(plan_of(v), "probe")));
    CHECK(json_real_value(json_object_get(json_object_get(json_object_get(plan_of(v), "layers"), "fc1"), "distance")) > 0);
    CHECK(json_real_value(json_object_get(json_object_get(v, "metrics"), "plan_seconds")) > 0);
    json_decref(v);
    char *body = NULL;
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/train?explain=maybe", f.t1, &body), 400);
    free(body);
    stop(&f);
}

/* A new version of a task starts from the base; from=V continues from version V, stored by reference:
 * its blob holds about its new parameters, V cannot be deleted while it is needed, and the version serves
 * (also after a restart, composed anew) and exports as the full composed adapter. */
TEST_TIMEOUT(daemon_api_retraining_starts_from_the_base_unless_from, 150)
{
    fixture f;
    json_t *v2 = start_and_train_twice(&f, "t1");
    CHECK_INT_EQ(json_integer_value(json_object_get(v2, "version")), 2);
    CHECK(json_is_null(json_object_get(plan_of(v2), "reuse")));
    CHECK_MSG(!json_object_get(json_object_get(plan_of(v2), "overlap"), "t1@1"), "t1@2 was compared with t1@1");
    CHECK_INT_EQ(json_array_size(json_object_get(v2, "needs")), 0);
    json_decref(v2);

    json_t *job = train(&f, "t1", f.t1, "epochs=1&rank=fixed:1&from=1");
    CHECK_STR_EQ(jstr(job, "state"), "succeeded");
    json_decref(job);
    json_t *v1 = get(&f, "/v1/tasks/t1/versions/1", 200), *v3 = get(&f, "/v1/tasks/t1/versions/3", 200);
    json_t *reuse = json_object_get(plan_of(v3), "reuse");
    CHECK_STR_EQ(jstr(reuse, "task"), "t1");
    CHECK_INT_EQ(json_integer_value(json_object_get(reuse, "version")), 1);
    json_t *needs = json_object_get(v3, "needs");
    CHECK_INT_EQ(json_array_size(needs), 1);
    CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(needs, 0), "version")), 1);
    long long new3 = metric_int(v3, "new_params"), all3 = metric_int(v3, "adapter_params");
    long long bytes1 = json_integer_value(json_object_get(v1, "bytes")), bytes3 = json_integer_value(json_object_get(v3, "bytes"));
    long long other1 = bytes1 - 4 * metric_int(v1, "adapter_params"); /* what a whole version stores besides its parameters */
    printf("# t1@1: %lld params, %lld bytes; t1@3 (from t1@1): %lld params, %lld new, %lld bytes\n",
           metric_int(v1, "adapter_params"), bytes1, all3, new3, bytes3);
    CHECK_MSG(new3 > 0 && new3 < all3, "new_params %lld of %lld", new3, all3);
    CHECK_MSG(bytes3 <= 4 * new3 + other1, "t1@3 stores %lld bytes for %lld new parameters", bytes3, new3);
    json_decref(v1);
    json_decref(v3);

    /* t1@1 is needed by t1@3: its deletion is refused, naming the dependent. */
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&f.d, "DELETE", "/v1/tasks/t1/versions/1", NULL, &body, NULL), 409);
    CHECK_STR_EQ(error_code_of(body), "conflict");
    CHECK_MSG(strstr(body, "needed at run time by version 3 of task 't1'"), "the refusal names the dependent: %s", body);
    free(body);
    /* Served composed, the same after a restart (composed again when loaded); exported whole. */
    char *before = predict(&f, "t1", "version=3", f.t1_test);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGKILL, 10), 128 + SIGKILL);
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    daemon_start(&f.d, &o);
    char *after = predict(&f, "t1", "version=3", f.t1_test);
    CHECK_STR_EQ(after, before);
    json_t *cfg = get(&f, "/v1/tasks/t1/versions/3/export?file=adapter_config.json", 200);
    json_t *v = get(&f, "/v1/tasks/t1/versions/3", 200);
    json_t *ranks = json_object_get(plan_of(v), "ranks");
    json_t *pattern = json_object_get(json_object_get(cfg, "rank_pattern"), "fc1"); /* else the common "r" */
    CHECK_INT_EQ(json_integer_value(pattern ? pattern : json_object_get(cfg, "r")), json_integer_value(json_object_get(ranks, "fc1")));
    CHECK(json_integer_value(json_object_get(ranks, "fc1")) > 1);
    json_decref(cfg);
    json_t *v3full = v;
    /* A chain: t1@4 continues from t1@3, itself stored by reference to t1@1; composed through both. */
    json_decref(train(&f, "t1", f.t1, "epochs=1&rank=fixed:1&from=3"));
    v = get(&f, "/v1/tasks/t1/versions/4", 200);
    CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(json_object_get(v, "needs"), 0), "version")), 3);
    /* It reuses the directions t1@3's signature keeps (99.9% of its change's energy) plus one new. */
    long long kept = json_integer_value(json_object_get(
        json_object_get(json_object_get(json_object_get(v, "lineage"), "stored_by_reference"), "reused"), "fc1"));
    CHECK_MSG(kept >= 1 && kept <= json_integer_value(json_object_get(ranks, "fc1")), "reused %lld", kept);
    CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(plan_of(v), "ranks"), "fc1")), kept + 1);
    json_decref(v);
    char *chain_before = predict(&f, "t1", "version=4", f.t1_test);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGKILL, 10), 128 + SIGKILL);
    daemon_start(&f.d, &o);
    char *chain_after = predict(&f, "t1", "version=4", f.t1_test);
    CHECK_STR_EQ(chain_after, chain_before);
    free(chain_before);
    free(chain_after);
    json_decref(v3full);
    /* from names a version of this task that exists. */
    CHECK_INT_EQ(post_file(&f, "/v1/tasks/t1/train?follow=1&epochs=1&from=9", f.t1, &body), 202);
    CHECK_MSG(strstr(body, "\"state\":\"failed\"") && strstr(body, "not_found"), "%s", body);
    free(body);
    free(before);
    free(after);
    stop(&f);
}

TEST_TIMEOUT(daemon_api_reuse_zero_disables_reuse, 120)
{
    fixture f;
    /* The same data under another name: auto may build on t1; with reuse=0 it does not, nor compares. */
    json_t *v = start_and_train_twice(&f, "same");
    printf("# auto on t1's data again: reuse %s\n", json_is_null(json_object_get(plan_of(v), "reuse")) ? "none" : "t1@1");
    json_decref(v);
    json_decref(train(&f, "off", f.t1, "epochs=1&rank=auto:reuse=0"));
    v = get(&f, "/v1/tasks/off/versions/1", 200);
    CHECK(json_is_null(json_object_get(plan_of(v), "reuse")));
    CHECK_INT_EQ(json_object_size(json_object_get(plan_of(v), "overlap")), 0);
    CHECK_INT_EQ(json_array_size(json_object_get(v, "needs")), 0);
    CHECK_INT_EQ(metric_int(v, "new_params"), metric_int(v, "adapter_params"));
    json_decref(v);
    stop(&f);
}
