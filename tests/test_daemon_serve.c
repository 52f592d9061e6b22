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
    snprintf(extra, sizeof extra, JSON_BODY "--data-binary '@%s'", file);
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
    store_fill(&c, 2);
    daemon_proc d;
    start(&d);
    char in[512];
    write_inputs(in, sizeof in, 40, c.input_dim);
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

TEST_TIMEOUT(daemon_serve_cache_miss_loads_off_the_event_loop, 180)
{
    /* A base of about 130 MB: reading, hashing and deserializing it takes a good part of a second. */
    model_config c = {.kind = MODEL_MLP, .input_dim = 2048, .n_hidden = 2, .hidden = {4096, 3072}, .n_classes = 4};
    store_fill(&c, 1);
    daemon_proc d;
    start(&d);
    char in[512];
    write_inputs(in, sizeof in, 1, c.input_dim);
    char extra[700];
    snprintf(extra, sizeof extra, JSON_BODY "--data-binary '@%s'", in);
    /* Two requests for the same uncached version: one load, both answered. */
    curl_stream s1, s2;
    stream_open(&s1, &d, "POST", "/v1/tasks/t/predict", extra);
    stream_open(&s2, &d, "POST", "/v1/tasks/t/predict", extra);
    double worst = 0.0, t0 = now_s();
    int polls = 0;
    char *line = NULL;
    while (!(line = stream_line(&s1, 10))) {
        double l = status_latency(&d);
        if (l > worst) worst = l;
        polls++;
        CHECK_MSG(now_s() - t0 < 120, "the prediction was not answered in 120 s (%d polls)", polls);
    }
    double loaded_s = now_s() - t0;
    CHECK_MSG(strstr(line, "\"labels\"") != NULL, "the prediction was answered: %.300s", line);
    free(line);
    line = stream_line(&s2, 60000);
    CHECK_MSG(line && strstr(line, "\"labels\"") != NULL, "the second prediction was answered: %.300s", line ? line : "nothing");
    free(line);
    stream_close(&s1);
    stream_close(&s2);
    printf("# %d status requests in the %.2f s a %.0f MB base took to load and serve; the slowest took %.3f s\n",
           polls, loaded_s, (double)loaded_field(&d, "base_bytes") / 1e6, worst);
    CHECK_MSG(polls >= 3, "only %d status requests ran during the load", polls);
#ifdef __SANITIZE_ADDRESS__
    printf("# not timed: an address-sanitizer build\n");
#else
    /* The old daemon (loads on the loop) stalled it for the whole load, 1.1 s here; the margin is for a
     * shared machine's scheduling delays. */
    CHECK_MSG(worst < 0.5, "a status request waited %.3f s behind the load", worst);
#endif
    CHECK_INT_EQ(loaded_field(&d, "bases"), 1);
    CHECK_INT_EQ(loaded_field(&d, "adapters"), 1);
    CHECK_INT_EQ(loaded_field(&d, "loading"), 0);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
}
