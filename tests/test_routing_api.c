/* Predicting without a task id through the real daemon: POST /v1/predict and /v1/evaluate on a base,
 * clad predict/eval --any. Tasks are small MLP tasks whose inputs come from well-separated regions (so the
 * right task is known), one task is trained twice on the same data (identical: ambiguous), and the tests
 * check routing across restart, rollback, exclusion, and the errors for bad requests. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/model.h"
#include "core/rng.h"
#include "io/dataset_io.h"
#include "io/model_io.h"
#include "io/safetensors.h"
#include "tests/daemon_util.h"
#include "tests/test.h"

#define IN 16
#define CLASSES 3
#define OCTET "-H 'Content-Type: application/octet-stream' "

/* Region r of the input space: N(c_r, I) with c_r = 2.5 * a fixed sign pattern per region; labels from a
 * fixed linear teacher. far = true puts the centre 40 away from every region. */
static void fill_region(dataset *d, int at, int n, int region, uint64_t seed)
{
    rng r;
    rng_init(&r, 77);
    float W[CLASSES][IN];
    for (int k = 0; k < CLASSES; k++)
        for (int j = 0; j < IN; j++) W[k][j] = rng_normal(&r);
    rng_init(&r, seed);
    for (int i = at; i < at + n; i++) {
        float *x = d->x + (size_t)i * IN;
        for (int j = 0; j < IN; j++) {
            float c = region == 9 ? 40.0f : 2.5f * (((j * 7 + region * 5) % 3) - 1.0f);
            x[j] = c + rng_normal(&r);
        }
        int best = 0;
        float bv = -1e30f;
        for (int k = 0; k < CLASSES; k++) {
            float s = 0;
            for (int j = 0; j < IN; j++) s += W[k][j] * x[j];
            if (s > bv) bv = s, best = k;
        }
        d->y[i] = best;
    }
}

static void write_region(const char *path, int n, int region, uint64_t seed)
{
    dataset d;
    CHECK_INT_EQ(dataset_init(&d, n, 1, (int[]){IN}, NULL), 0);
    fill_region(&d, 0, n, region, seed);
    d.n_classes = CLASSES;
    CHECK_INT_EQ(dataset_save_safetensors(&d, path, NULL), 0);
    dataset_finish(&d);
}

/* An evaluation file of several tasks: x, y, task (indices into the metadata list "tasks"). */
static void write_multi(const char *path, int per, const char *const *names, const int *regions, int k)
{
    dataset d;
    CHECK_INT_EQ(dataset_init(&d, per * k, 1, (int[]){IN}, NULL), 0);
    int64_t *y = malloc(sizeof *y * (size_t)d.n), *task = malloc(sizeof *task * (size_t)d.n);
    for (int t = 0; t < k; t++) {
        fill_region(&d, t * per, per, regions[t], 900 + (uint64_t)t);
        for (int i = t * per; i < (t + 1) * per; i++) task[i] = t, y[i] = d.y[i];
    }
    json_t *list = json_array();
    for (int t = 0; t < k; t++) json_array_append_new(list, json_string(names[t]));
    char *meta = json_dumps(list, JSON_COMPACT);
    st_writer *w = st_writer_create();
    CHECK_INT_EQ(st_writer_add_f32(w, "x", 2, (int64_t[]){d.n, IN}, d.x, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "y", ST_I64, 1, (int64_t[]){d.n}, y, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "task", ST_I64, 1, (int64_t[]){d.n}, task, NULL), 0);
    CHECK_INT_EQ(st_writer_meta(w, "tasks", meta, NULL), 0);
    CHECK_INT_EQ(st_writer_to_file(w, path, NULL), 0);
    st_writer_destroy(w);
    json_decref(list);
    free(meta);
    free(y);
    free(task);
    dataset_finish(&d);
}

typedef struct fixture {
    daemon_proc d;
    char dir[512];
} fixture;

static const char *tmp(fixture *f, const char *name)
{
    static char buf[4][700];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmpdir(), name);
    return buf[k];
}

static void fixture_start(fixture *f)
{
    model_config c = {.kind = MODEL_MLP, .input_dim = IN, .n_hidden = 2, .hidden = {32, 32}, .n_classes = CLASSES};
    write_random_base(tmp(f, "base.safetensors"), &c, 7);
    for (int r = 0; r < 3; r++) {
        char name[32];
        snprintf(name, sizeof name, "r%d.safetensors", r);
        write_region(tmp(f, name), 1200, r, 10 + (uint64_t)r);
        snprintf(name, sizeof name, "r%d-test.safetensors", r);
        write_region(tmp(f, name), 200, r, 20 + (uint64_t)r);
    }
    write_region(tmp(f, "far.safetensors"), 50, 9, 5);
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    daemon_start(&f->d, &o);
}

static void import_base(fixture *f)
{
    char args[800], *out = NULL;
    snprintf(args, sizeof args, "base import mlp '%s'", tmp(f, "base.safetensors"));
    int rc = clad_run(&f->d, args, &out);
    CHECK_MSG(rc == 0, "clad base import exited %d: %s", rc, out);
    free(out);
}

static void train(fixture *f, const char *task, const char *file)
{
    char args[800], *out = NULL;
    snprintf(args, sizeof args, "train %s '%s' --epochs 3 --rank fixed:2", task, tmp(f, file));
    int rc = clad_run(&f->d, args, &out);
    CHECK_MSG(rc == 0, "clad train %s exited %d: %s", task, rc, out);
    free(out);
}

static int post(fixture *f, const char *path, const char *file, char **body)
{
    char extra[800];
    snprintf(extra, sizeof extra, OCTET "--data-binary '@%s'", tmp(f, file));
    return curl_req(&f->d, "POST", path, extra, body, NULL);
}

/* Routes a file's inputs; returns the fraction sent to `want` (NULL: to no task) and checks every routed
 * input carries a label and (when given) that version. */
static double routed_share(fixture *f, const char *query, const char *file, const char *want, int want_version)
{
    char path[512], *body = NULL;
    snprintf(path, sizeof path, "/v1/predict?%s", query);
    int code = post(f, path, file, &body);
    CHECK_MSG(code == 200, "predict answered %d: %s", code, body);
    json_t *r = json_or_fail(body), *p;
    size_t i, hits = 0, n = json_array_size(json_object_get(r, "predictions"));
    json_array_foreach(json_object_get(r, "predictions"), i, p) {
        json_t *t = json_object_get(p, "task");
        if (!want ? json_is_null(t) : (json_is_string(t) && !strcmp(json_string_value(t), want))) {
            hits++;
            if (want) CHECK(json_is_integer(json_object_get(p, "label")));
            if (want && want_version) CHECK_INT_EQ(json_integer_value(json_object_get(p, "version")), want_version);
            if (!want) CHECK_STR_EQ(json_string_value(json_object_get(p, "reason")), "no_match");
        }
    }
    json_decref(r);
    free(body);
    CHECK(n > 0);
    return (double)hits / (double)n;
}

TEST_TIMEOUT(routing_api_routes_separated_tasks_and_reports_evaluation, 150)
{
    fixture f;
    fixture_start(&f);
    import_base(&f);
    train(&f, "a", "r0.safetensors");
    train(&f, "b", "r1.safetensors");
    train(&f, "c", "r2.safetensors");
    CHECK(routed_share(&f, "base=mlp", "r0-test.safetensors", "a", 1) >= 0.95);
    CHECK(routed_share(&f, "base=mlp", "r1-test.safetensors", "b", 1) >= 0.95);
    CHECK(routed_share(&f, "mode=class", "r2-test.safetensors", "c", 1) >= 0.95);
    /* Inputs unlike every task are not forced onto one; a huge threshold forces them. */
    CHECK(routed_share(&f, "base=mlp", "far.safetensors", NULL, 0) == 1.0);
    CHECK(routed_share(&f, "base=mlp&threshold=1e9", "far.safetensors", NULL, 0) == 0.0);

    /* top_k lists the tasks by score; the JSON body form works too. */
    char *body = NULL;
    const char *json = "-H 'Content-Type: application/json' -d '{\"inputs\": [[2.5,0,-2.5,2.5,0,-2.5,2.5,0,-2.5,2.5,0,-2.5,2.5,0,-2.5,2.5]]}'";
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/predict?top_k=3", json, &body, NULL), 200);
    printf("# %s", body);
    json_t *r = json_or_fail(body);
    json_t *p0 = json_array_get(json_object_get(r, "predictions"), 0);
    CHECK_INT_EQ(json_array_size(json_object_get(p0, "top_k")), 3);
    CHECK_INT_EQ(json_array_size(json_object_get(r, "tasks")), 3);
    CHECK(json_integer_value(json_object_get(json_array_get(json_object_get(r, "tasks"), 0), "routing_bytes")) > 0);
    json_decref(r);
    free(body);

    /* Evaluation without task ids. */
    const char *names[] = {"a", "b", "c"};
    write_multi(tmp(&f, "multi.safetensors"), 150, names, (int[]){0, 1, 2}, 3);
    CHECK_INT_EQ(post(&f, "/v1/evaluate?base=mlp", "multi.safetensors", &body), 200);
    printf("# %s", body);
    r = json_or_fail(body);
    double tid = json_real_value(json_object_get(r, "task_id_accuracy"));
    double given = json_real_value(json_object_get(r, "accuracy_task_given"));
    double inferred = json_real_value(json_object_get(r, "accuracy_task_inferred"));
    CHECK_MSG(tid >= 0.95, "task-id accuracy %.3f", tid);
    CHECK_MSG(given > 0.6 && inferred >= given - 0.05, "given %.3f inferred %.3f", given, inferred);
    CHECK_INT_EQ(json_integer_value(json_object_get(r, "samples")), 450);
    CHECK(json_integer_value(json_object_get(json_object_get(json_object_get(r, "confusion"), "a"), "a")) >= 140);
    json_decref(r);
    free(body);

    /* The CLI. */
    char args[900], *out = NULL;
    snprintf(args, sizeof args, "predict --any '%s' --tasks a,b", tmp(&f, "r1-test.safetensors"));
    CHECK_INT_EQ(clad_run(&f.d, args, &out), 0);
    CHECK(strncmp(out, "b\t", 2) == 0);
    free(out);
    snprintf(args, sizeof args, "eval --any '%s'", tmp(&f, "multi.safetensors"));
    CHECK_INT_EQ(clad_run(&f.d, args, &out), 0);
    CHECK(strstr(out, "task_id_accuracy ") != NULL && strstr(out, "confusion a ") != NULL);
    free(out);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

TEST_TIMEOUT(routing_api_identical_tasks_are_ambiguous_and_exclusion_removes_a_task, 150)
{
    fixture f;
    fixture_start(&f);
    import_base(&f);
    train(&f, "a", "r0.safetensors");
    train(&f, "twin", "r0.safetensors");
    train(&f, "b", "r1.safetensors");
    char *body = NULL;
    CHECK_INT_EQ(post(&f, "/v1/predict?base=mlp&tasks=a,twin", "r0-test.safetensors", &body), 200);
    json_t *r = json_or_fail(body), *p;
    size_t i, ambiguous = 0, n = 0;
    json_array_foreach(json_object_get(r, "predictions"), i, p) {
        ambiguous += json_is_true(json_object_get(p, "ambiguous"));
        n++;
    }
    CHECK_MSG(ambiguous * 10 >= n * 9, "%zu of %zu inputs of two identical tasks reported ambiguous", ambiguous, n);
    json_decref(r);
    free(body);
    /* Excluding a task removes it: r0's inputs then go to a alone (not twin, not b). */
    CHECK(routed_share(&f, "tasks=a,b", "r0-test.safetensors", "a", 1) >= 0.95);
    CHECK(routed_share(&f, "tasks=twin,b", "r0-test.safetensors", "twin", 1) >= 0.95);
    CHECK(routed_share(&f, "tasks=b", "r0-test.safetensors", "a", 0) == 0.0);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

TEST_TIMEOUT(routing_api_survives_restart_and_follows_rollback, 150)
{
    fixture f;
    fixture_start(&f);
    import_base(&f);
    train(&f, "a", "r0.safetensors");
    train(&f, "b", "r1.safetensors");
    /* Version 2 of a learns another region: r0's inputs no longer match a, r2's do. */
    train(&f, "a", "r2.safetensors");
    CHECK(routed_share(&f, "base=mlp", "r2-test.safetensors", "a", 2) >= 0.95);
    CHECK(routed_share(&f, "base=mlp", "r0-test.safetensors", "a", 0) <= 0.5);

    char *before = NULL, *after = NULL;
    CHECK_INT_EQ(post(&f, "/v1/predict?base=mlp", "r2-test.safetensors", &before), 200);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    daemon_start(&f.d, &o);
    CHECK_INT_EQ(post(&f, "/v1/predict?base=mlp", "r2-test.safetensors", &after), 200);
    CHECK_STR_EQ(after, before);
    free(before);
    free(after);

    /* Rolling back routes with version 1's statistics again. */
    char *out = NULL;
    CHECK_INT_EQ(clad_run(&f.d, "rollback a", &out), 0);
    free(out);
    CHECK(routed_share(&f, "base=mlp", "r0-test.safetensors", "a", 1) >= 0.95);
    CHECK(routed_share(&f, "base=mlp", "r2-test.safetensors", "a", 0) <= 0.5);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

TEST_TIMEOUT(routing_api_bad_requests_get_clear_errors, 120)
{
    fixture f;
    fixture_start(&f);
    char *body = NULL;
    /* No base at all, then a base without tasks. */
    CHECK_INT_EQ(post(&f, "/v1/predict", "r0-test.safetensors", &body), 404);
    free(body);
    import_base(&f);
    CHECK_INT_EQ(post(&f, "/v1/predict?base=mlp", "r0-test.safetensors", &body), 409);
    CHECK_STR_EQ(error_code_of(body), "conflict");
    CHECK(strstr(body, "no task") != NULL);
    free(body);
    train(&f, "a", "r0.safetensors");
    /* Wrong input size. */
    CHECK_INT_EQ(curl_req(&f.d, "POST", "/v1/predict", "-H 'Content-Type: application/json' -d '{\"inputs\": [[1,2,3]]}'",
                          &body, NULL), 400);
    CHECK(strstr(body, "16") != NULL);
    free(body);
    /* NaN in a safetensors body. */
    dataset d;
    CHECK_INT_EQ(dataset_init(&d, 2, 1, (int[]){IN}, NULL), 0);
    d.x[3] = NAN;
    st_writer *w = st_writer_create();
    CHECK_INT_EQ(st_writer_add_f32(w, "x", 2, (int64_t[]){2, IN}, d.x, NULL), 0);
    CHECK_INT_EQ(st_writer_to_file(w, tmp(&f, "nan.safetensors"), NULL), 0);
    st_writer_destroy(w);
    dataset_finish(&d);
    CHECK_INT_EQ(post(&f, "/v1/predict", "nan.safetensors", &body), 400);
    CHECK_STR_EQ(error_code_of(body), "invalid_input");
    free(body);
    /* Bad options and names. */
    CHECK_INT_EQ(post(&f, "/v1/predict?mode=both", "r0-test.safetensors", &body), 400);
    free(body);
    CHECK_INT_EQ(post(&f, "/v1/predict?tasks=a,nosuch", "r0-test.safetensors", &body), 404);
    CHECK(strstr(body, "nosuch") != NULL);
    free(body);
    CHECK_INT_EQ(post(&f, "/v1/predict?tasks=a,a", "r0-test.safetensors", &body), 400);
    free(body);
    CHECK_INT_EQ(post(&f, "/v1/predict?base=other", "r0-test.safetensors", &body), 404);
    free(body);
    CHECK_INT_EQ(post(&f, "/v1/predict?threshold=-1", "r0-test.safetensors", &body), 400);
    free(body);
    /* An evaluation needs the task of every sample. */
    CHECK_INT_EQ(post(&f, "/v1/evaluate", "r0-test.safetensors", &body), 400);
    CHECK(strstr(body, "task") != NULL);
    free(body);
    const char *names[] = {"nosuch"};
    write_multi(tmp(&f, "bad-multi.safetensors"), 20, names, (int[]){0}, 1);
    CHECK_INT_EQ(post(&f, "/v1/evaluate", "bad-multi.safetensors", &body), 400);
    CHECK(strstr(body, "nosuch") != NULL);
    free(body);
    /* The daemon kept serving. */
    CHECK(routed_share(&f, "base=mlp", "r0-test.safetensors", "a", 1) >= 0.95);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

/* DELETE /v1/tasks/{name} takes a task out of routing at once, even with the candidates and the router of
 * the earlier set cached; deleting the last task leaves a base with nothing to route to. */
TEST_TIMEOUT(routing_api_deleted_task_leaves_routing, 150)
{
    fixture f;
    fixture_start(&f);
    import_base(&f);
    train(&f, "a", "r0.safetensors");
    train(&f, "b", "r1.safetensors");
    CHECK(routed_share(&f, "base=mlp", "r0-test.safetensors", "a", 1) >= 0.95);
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&f.d, "DELETE", "/v1/tasks/a", NULL, &body, NULL), 200);
    free(body);
    /* a's inputs now match b poorly or nothing: never a, and a is no candidate. */
    CHECK(routed_share(&f, "base=mlp", "r0-test.safetensors", "a", 0) == 0.0);
    CHECK_INT_EQ(post(&f, "/v1/predict?base=mlp", "r1-test.safetensors", &body), 200);
    json_t *r = json_or_fail(body), *t;
    size_t i;
    CHECK_INT_EQ(json_array_size(json_object_get(r, "tasks")), 1);
    json_array_foreach(json_object_get(r, "tasks"), i, t) CHECK_STR_EQ(json_string_value(json_object_get(t, "task")), "b");
    json_decref(r);
    free(body);
    CHECK_INT_EQ(post(&f, "/v1/predict?base=mlp&tasks=a,b", "r0-test.safetensors", &body), 404);
    CHECK_STR_EQ(error_code_of(body), "not_found");
    free(body);
    CHECK_INT_EQ(curl_req(&f.d, "DELETE", "/v1/tasks/b", NULL, &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(post(&f, "/v1/predict?base=mlp", "r1-test.safetensors", &body), 409);
    CHECK(strstr(body, "no task") != NULL);
    free(body);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}
