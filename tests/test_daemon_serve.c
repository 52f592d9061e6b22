/* Serving through the real daemon: a cache miss loads on the worker pool (the loop keeps answering other
 * clients meanwhile), and a hot LoRA version is folded into its base with the same predictions and
 * evaluations up to float rounding, counted in /v1/status and dropped when the version is deleted. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/dataset_io.h"
#include "io/model_io.h"
#include "storage/store.h"
#include "tests/daemon_util.h"
#include "tests/multinode_util.h"
#include "tests/test.h"
#include "tests/test_store_fixture.h"

#define JSON_BODY "-H 'Content-Type: application/json' "

/* Fills <tmp>/state/clad.db, before the daemon starts, with base "b" of config c and task "t" on it
 * holding `versions` LoRA versions (tests/multinode_util.h). */
static void store_fill(const model_config *c, int versions)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/state", test_tmpdir());
    CHECK_INT_EQ(mkdir(dir, 0700), 0);
    snprintf(path, sizeof path, "%s/clad.db", dir);
    store_fill_lora(path, c, versions);
}

static void start(daemon_proc *d)
{
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    daemon_start(d, &o);
}

/* {"inputs": [...]} with n rows of dim values; the path of the file goes to out. */
static void write_inputs(char *out, size_t size, int n, int dim)
{
    snprintf(out, size, "%s/inputs.json", test_tmpdir());
    FILE *f = fopen(out, "w");
    CHECK(f != NULL);
    fputs("{\"inputs\": [", f);
    for (int i = 0; i < n; i++) {
        fputs(i ? ",[" : "[", f);
        for (int k = 0; k < dim; k++) fprintf(f, "%s%.3f", k ? "," : "", (double)((i * 31 + k * 17) % 23) / 11.0 - 1.0);
        fputs("]", f);
    }
    fputs("]}", f);
    CHECK_INT_EQ(fclose(f), 0);
}

/* The daemon d on a store filled by store_fill(c, versions), with a file of n input rows for it (its path
 * to in). */
static void start_with_inputs(daemon_proc *d, const model_config *c, int versions, int n, char *in, size_t size)
{
    store_fill(c, versions);
    start(d);
    write_inputs(in, size, n, c->input_dim);
}

/* curl arguments that POST the JSON inputs file as the body. */
static void json_file_args(char *extra, size_t size, const char *file)
{
    snprintf(extra, size, JSON_BODY "--data-binary '@%s'", file);
}

/* The same inputs as CSV rows with a label (i % classes) first. */
static void write_labelled(char *out, size_t size, int n, int dim, int classes)
{
    snprintf(out, size, "%s/labelled.csv", test_tmpdir());
    FILE *f = fopen(out, "w");
    CHECK(f != NULL);
    for (int i = 0; i < n; i++) {
        fprintf(f, "%d", i % classes);
        for (int k = 0; k < dim; k++) fprintf(f, ",%.3f", (double)((i * 31 + k * 17) % 23) / 11.0 - 1.0);
        fputc('\n', f);
    }
    CHECK_INT_EQ(fclose(f), 0);
}

/* POST .../evaluate?version=1 with a CSV file: {accuracy, loss}. */
static void evaluate(const daemon_proc *d, const char *file, double *accuracy, double *loss)
{
    char extra[700], *body = NULL;
    snprintf(extra, sizeof extra, "-H 'Content-Type: text/csv' --data-binary '@%s'", file);
    int code = curl_req(d, "POST", "/v1/tasks/t/evaluate?version=1", extra, &body, NULL);
    CHECK_MSG(code == 200, "evaluate answered %d: %s", code, body);
    json_t *j = json_or_fail(body);
    *accuracy = json_number_value(json_object_get(j, "accuracy"));
    *loss = json_number_value(json_object_get(j, "loss"));
    json_decref(j);
    free(body);
}

static char *predict(const daemon_proc *d, const char *query, const char *file)
{
    char path[128], extra[700], *body = NULL;
    snprintf(path, sizeof path, "/v1/tasks/t/predict%s", query);
    json_file_args(extra, sizeof extra, file);
    int code = curl_req(d, "POST", path, extra, &body, NULL);
    CHECK_MSG(code == 200, "predict answered %d: %s", code, body);
    return body;
}

/* /v1/status "loaded".field */
static long long loaded_field(const daemon_proc *d, const char *field)
{
    char *body = NULL;
    CHECK_INT_EQ(curl_req(d, "GET", "/v1/status", NULL, &body, NULL), 200);
    json_t *j = json_or_fail(body);
    json_t *v = json_object_get(json_object_get(j, "loaded"), field);
    CHECK_MSG(json_is_integer(v), "status has no loaded.%s: %s", field, body);
    long long n = json_integer_value(v);
    json_decref(j);
    free(body);
    return n;
}

/* Waits up to 20 s for loaded.field to equal want. */
static void wait_loaded(const daemon_proc *d, const char *field, long long want)
{
    double t0 = now_s();
    long long got;
    while ((got = loaded_field(d, field)) != want && now_s() - t0 < 20) sleep_ms(50);
    CHECK_MSG(got == want, "loaded.%s is %lld, not %lld", field, got, want);
}

TEST_TIMEOUT(daemon_serve_hot_version_is_folded_with_the_same_predictions, 120)
{
    model_config c = {.kind = MODEL_MLP, .input_dim = 16, .n_hidden = 2, .hidden = {32, 24}, .n_classes = 5};
    daemon_proc d;
    char in[512];
    start_with_inputs(&d, &c, 2, 40, in, sizeof in);
    char csv[512];
    write_labelled(csv, sizeof csv, 40, c.input_dim, c.n_classes);
    double acc0, loss0, acc1, loss1;
    evaluate(&d, csv, &acc0, &loss0);
    char *first = predict(&d, "?version=1", in);
    CHECK_INT_EQ(loaded_field(&d, "folded"), 0);
    /* Requests give their workspace back to the pool. */
    CHECK(loaded_field(&d, "idle_workspaces") >= 1);
    for (int i = 1; i < 8; i++) free(predict(&d, "?version=1", in));
    wait_loaded(&d, "folded", 1);
    long long folded_bytes = loaded_field(&d, "folded_bytes");
    CHECK_MSG(folded_bytes > 0, "folded_bytes %lld", folded_bytes);
    CHECK(loaded_field(&d, "adapter_bytes") > folded_bytes);
    /* The folded model answers as the adapter did. */
    for (int i = 0; i < 3; i++) {
        char *again = predict(&d, "?version=1", in);
        CHECK_MSG(predictions_close(first, again, 1e-5), "after folding:\n%s\nbefore:\n%s", again, first);
        free(again);
    }
    evaluate(&d, csv, &acc1, &loss1);
    CHECK_MSG(acc1 == acc0 && fabs(loss1 - loss0) <= 1e-5, "evaluation after folding: accuracy %g loss %g, before %g %g",
              acc1, loss1, acc0, loss0);
    /* Deleting the version drops its fold with it. */
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&d, "DELETE", "/v1/tasks/t/versions/1", NULL, &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(loaded_field(&d, "folded"), 0);
    CHECK_INT_EQ(loaded_field(&d, "folded_bytes"), 0);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/tasks/t/predict?version=1", JSON_BODY "-d '{\"inputs\": [[0]]}'", &body, NULL), 404);
    free(body);
    free(first);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
}

/* A base of about 130 MB: reading, hashing and deserializing it takes a good part of a second. */
static const model_config big_mlp = {.kind = MODEL_MLP, .input_dim = 2048, .n_hidden = 2, .hidden = {4096, 3072}, .n_classes = 4};

/* Sends `method path` (extra: curl arguments) while the big base and its adapter are not loaded, polls
 * /v1/status on other connections until it is answered, and checks that none of them waited behind the
 * load. Returns the answer's first line (owned by the caller). */
static char *answered_without_stalling(const daemon_proc *d, const char *method, const char *path, const char *extra)
{
    curl_stream s;
    stream_open(&s, d, method, path, extra);
    double worst = 0.0, t0 = now_s();
    int polls = 0;
    char *line = NULL;
    while (!(line = stream_line(&s, 10))) {
        double l = status_latency(d);
        if (l > worst) worst = l;
        polls++;
        CHECK_MSG(now_s() - t0 < 120, "%s %s was not answered in 120 s (%d polls)", method, path, polls);
    }
    double loaded_s = now_s() - t0;
    stream_close(&s);
    printf("# %s %s: %d status requests in the %.2f s a %.0f MB base took to load; the slowest took %.3f s\n", method,
           path, polls, loaded_s, (double)loaded_field(d, "base_bytes") / 1e6, worst);
    CHECK_MSG(polls >= 3, "only %d status requests ran during the load", polls);
#ifdef __SANITIZE_ADDRESS__
    printf("# not timed: an address-sanitizer build\n");
#else
    /* The old daemon (loads on the loop) stalled it for the whole load, 1.1 s here; the margin is for a
     * shared machine's scheduling delays. */
    CHECK_MSG(worst < 0.5, "a status request waited %.3f s behind the load", worst);
#endif
    CHECK_INT_EQ(loaded_field(d, "bases"), 1);
    CHECK_INT_EQ(loaded_field(d, "loading"), 0);
    return line;
}

TEST_TIMEOUT(daemon_serve_cache_miss_loads_off_the_event_loop, 180)
{
    daemon_proc d;
    char in[512], extra[700];
    start_with_inputs(&d, &big_mlp, 1, 1, in, sizeof in);
    json_file_args(extra, sizeof extra, in);
    /* Two requests for the same uncached version: one load, both answered; the second waited for the
     * first's load, which counts as a wait, not a miss. */
    curl_stream s2;
    stream_open(&s2, &d, "POST", "/v1/tasks/t/predict", extra);
    char *line = answered_without_stalling(&d, "POST", "/v1/tasks/t/predict", extra);
    CHECK_MSG(strstr(line, "\"labels\"") != NULL, "the prediction was answered: %.300s", line);
    free(line);
    line = stream_line(&s2, 60000);
    CHECK_MSG(line && strstr(line, "\"labels\"") != NULL, "the second prediction was answered: %.300s", line ? line : "nothing");
    free(line);
    stream_close(&s2);
    CHECK_INT_EQ(loaded_field(&d, "adapters"), 1);
    long long misses = loaded_field(&d, "adapter_cache_misses"), waits = loaded_field(&d, "adapter_cache_waits");
    CHECK_MSG(misses == 1 && waits <= 1, "%lld misses and %lld waits for one load", misses, waits);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
}

TEST_TIMEOUT(daemon_serve_routed_and_export_loads_leave_the_loop_free, 240)
{
    daemon_proc d;
    char in[512], extra[700];
    start_with_inputs(&d, &big_mlp, 1, 1, in, sizeof in);
    json_file_args(extra, sizeof extra, in);
    /* The routed prediction loads its candidate (whose version has no routing statistics, so once it is
     * loaded the answer is 409), then the export finds it cached; a second daemon's export loads. */
    char *line = answered_without_stalling(&d, "POST", "/v1/predict?base=b", extra);
    CHECK_MSG(strstr(line, "conflict") != NULL, "the routed prediction found no task to route to: %.300s", line);
    free(line);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
    start(&d);
    line = answered_without_stalling(&d, "GET", "/v1/tasks/t/versions/1/export?file=adapter_config.json", NULL);
    CHECK_MSG(line[0] == '{', "the export answered its config (a JSON object): %.300s", line);
    free(line);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
}

/* One raw HTTP request POST path with a JSON body on its own connection; returns the fd to read from. */
static int raw_post(const daemon_proc *d, const char *path, const char *body)
{
    int fd = raw_connect(d);
    char head[256];
    snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
             path, strlen(body));
    raw_send_str(fd, head);
    raw_send_str(fd, body);
    return fd;
}

/* The body of a raw response (owned by the caller), failing the test unless the status is 200. */
static char *raw_body(int fd)
{
    int status = 0;
    char *r = raw_response(fd, 60000, &status);
    CHECK_MSG(status == 200, "answered %d: %.300s", status, r ? r : "nothing");
    char *b = strdup(strstr(r, "\r\n\r\n") + 4);
    free(r);
    close(fd);
    return b;
}

/* The value of a metric line "name value" of /v1/metrics. */
static double metric(const daemon_proc *d, const char *name)
{
    char *body = NULL, key[128];
    CHECK_INT_EQ(curl_req(d, "GET", "/v1/metrics", NULL, &body, NULL), 200);
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(body, key);
    CHECK_MSG(p != NULL, "/v1/metrics has no %s", name);
    double v = strtod(p + strlen(key), NULL);
    free(body);
    return v;
}

TEST_TIMEOUT(daemon_serve_concurrent_predictions_batch_with_the_answers_alone, 120)
{
    enum { CLIENTS = 8 };
    model_config c = {.kind = MODEL_MLP, .input_dim = 16, .n_hidden = 2, .hidden = {32, 24}, .n_classes = 5};
    daemon_proc d;
    char in[512];
    start_with_inputs(&d, &c, 1, 1, in, sizeof in);
    /* Folded first, so every answer below comes from the same model. */
    for (int i = 0; i < 8; i++) free(predict(&d, "?version=1", in));
    wait_loaded(&d, "folded", 1);
    char *bodies[CLIENTS], *alone[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        size_t k = 0, cap = 512;
        bodies[i] = malloc(cap);
        k += (size_t)snprintf(bodies[i], cap, "{\"inputs\": [[");
        for (int j = 0; j < c.input_dim; j++) k += (size_t)snprintf(bodies[i] + k, cap - k, "%s%d.%d", j ? "," : "", (i + j) % 5 - 2, i);
        snprintf(bodies[i] + k, cap - k, "]]}");
        alone[i] = raw_body(raw_post(&d, "/v1/tasks/t/predict", bodies[i]));
    }
    double batches0 = metric(&d, "clad_predict_batches_total"), requests0 = metric(&d, "clad_predict_batch_requests_total");
    /* Every worker thread of the pool (max_running_jobs 1 + compute_threads 2) sleeps, so the first prediction
     * waits in the queue and the others arrive while it does. */
    int sleepers[3], fds[CLIENTS];
    for (int i = 0; i < 3; i++) sleepers[i] = raw_post(&d, "/v1/debug/compute", "{\"ms\": 1500}");
    for (int i = 0; i < CLIENTS; i++) fds[i] = raw_post(&d, "/v1/tasks/t/predict", bodies[i]);
    for (int i = 0; i < CLIENTS; i++) {
        char *got = raw_body(fds[i]);
        CHECK_MSG(!strcmp(got, alone[i]), "client %d: batched\n%s\nalone\n%s", i, got, alone[i]);
        free(got);
    }
    for (int i = 0; i < 3; i++) free(raw_body(sleepers[i]));
    double batches = metric(&d, "clad_predict_batches_total") - batches0;
    double requests = metric(&d, "clad_predict_batch_requests_total") - requests0;
    printf("# %d concurrent predictions ran in %.0f compute tasks (largest %.0f)\n", CLIENTS, batches,
           metric(&d, "clad_predict_batch_size_max"));
    CHECK_MSG(requests == CLIENTS, "%.0f requests counted, not %d", requests, CLIENTS);
    CHECK_MSG(batches < CLIENTS, "%d predictions ran in %.0f tasks: none was batched", CLIENTS, batches);
    for (int i = 0; i < CLIENTS; i++) {
        free(bodies[i]);
        free(alone[i]);
    }
    /* Deleting the task drops its serving counters. */
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/metrics", NULL, &body, NULL), 200);
    CHECK_MSG(strstr(body, "clad_task_predict_requests_total{task=\"t\"") != NULL, "no counters of t: %.2000s", body);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "DELETE", "/v1/tasks/t", NULL, &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/metrics", NULL, &body, NULL), 200);
    CHECK_MSG(strstr(body, "{task=\"t\"") == NULL, "counters of the deleted task t remain: %.2000s", body);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
}

/* A prediction that resolved the active alias is answered even when that version is rolled away from and
 * deleted while it loads: it is served by the version the alias names by then (before, a 404 "deleted
 * while it was being loaded", seen under `make soak`). */
TEST_TIMEOUT(daemon_serve_prediction_follows_the_alias_when_its_version_goes, 60)
{
    model_config c = {.kind = MODEL_MLP, .input_dim = 16, .n_hidden = 2, .hidden = {32, 24}, .n_classes = 5};
    daemon_proc d;
    char in[512], *body = NULL;
    start_with_inputs(&d, &c, 2, 1, in, sizeof in);
    CHECK_INT_EQ(curl_req(&d, "PUT", "/v1/tasks/t/aliases/active", "-H 'Content-Type: application/json' -d '{\"version\": 2}'",
                          &body, NULL), 200);
    free(body);
    char *inputs = NULL;
    size_t len = 0;
    CHECK_INT_EQ(file_read_all(in, 1 << 20, (uint8_t **)&inputs, &len, NULL), 0);
    inputs = realloc(inputs, len + 1);
    inputs[len] = '\0';
    /* Every worker of the pool (max_running_jobs 1 + compute_threads 2) sleeps, so the load of version 2
     * waits behind them while the alias moves back to 1 and version 2 is deleted. */
    int sleepers[3];
    for (int i = 0; i < 3; i++) sleepers[i] = raw_post(&d, "/v1/debug/compute", "{\"ms\": 2500}");
    int fd = raw_post(&d, "/v1/tasks/t/predict", inputs);
    sleep_ms(200);
    CHECK_INT_EQ(curl_req(&d, "PUT", "/v1/tasks/t/aliases/active", "-H 'Content-Type: application/json' -d '{\"version\": 1}'",
                          &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "DELETE", "/v1/tasks/t/versions/2", NULL, &body, NULL), 200);
    free(body);
    char *got = raw_body(fd);
    json_t *j = json_or_fail(got);
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "version")), 1);
    CHECK_INT_EQ(json_array_size(json_object_get(j, "labels")), 1);
    json_decref(j);
    free(got);
    for (int i = 0; i < 3; i++) free(raw_body(sleepers[i]));
    free(inputs);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
}
