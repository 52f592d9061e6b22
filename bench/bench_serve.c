/* clad-bench serve: the daemon as its users meet it, measured through its socket.
 *
 * Starts the real cladd (next to this program) on a private socket and state directory, imports a
 * randomly initialised vit-tiny base, trains small tasks on synthetic images, and measures: prediction
 * latency at batch 1 (p50, p99) with and without a training job running, requests per second and latency
 * with 32 concurrent clients (and how many requests the daemon batched per compute task), the time from
 * submitting a training job to its first step, the rate of a training job alone in the daemon against
 * `clad-bench speed` for the same model, batch and threads, the daemon's idle memory and the memory each
 * loaded adapter adds; and whether issue 9's daemon targets hold in this run. The absolute latencies
 * depend on the machine; the with/without-training ratio is the number to watch.
 *
 * --against CLADD: only the concurrent clients, on this daemon and on another cladd binary (an older build)
 * set up alike, in alternating 1-s windows, so a before/after comparison shares the machine's load.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_daemon.h"
#include "core/model.h"
#include "core/rng.h"
#include "daemon/client.h"
#include "io/dataset_io.h"
#include "io/model_io.h"

typedef struct serve_ctx {
    bench_daemon d;
    char *predict_body;
    size_t predict_len;
} serve_ctx;

static int die(const char *what)
{
    fprintf(stderr, "clad-bench serve: %s\n", what);
    return 1;
}

static int call(const serve_ctx *c, const char *method, const char *path, const char *ctype, const void *body,
                size_t len, char **out)
{
    return bench_daemon_call(&c->d, method, path, ctype, body, len, out);
}

static int train_task(serve_ctx *c, const char *task, const char *file, const char *opts)
{
    char *body = NULL, path[256];
    size_t len = 0;
    if (bench_read_file(file, &body, &len)) return -1;
    snprintf(path, sizeof path, "/v1/tasks/%s/train?follow=1&%s", task, opts);
    char *reply = NULL;
    int st = call(c, "POST", path, "application/octet-stream", body, len, &reply);
    int ok = st == 202 && reply && strstr(reply, "\"state\":\"succeeded\"");
    free(body);
    free(reply);
    return ok ? 0 : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* n sequential batch-1 predictions on each of n_paths paths, interleaved (so load that drifts during the
 * run affects every path alike); p50[k] and p99[k] in ms for path k. */
static int latency_paths(const serve_ctx *c, const char *const *paths, int n_paths, int n, double *p50, double *p99)
{
    double *t = malloc(sizeof *t * (size_t)n * (size_t)n_paths);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < n_paths; k++) {
            double t0 = bench_now();
            if (call(c, "POST", paths[k], "application/json", c->predict_body, c->predict_len, NULL) != 200) {
                free(t);
                return -1;
            }
            t[(size_t)k * n + i] = (bench_now() - t0) * 1e3;
        }
    for (int k = 0; k < n_paths; k++) {
        double *tk = t + (size_t)k * n;
        qsort(tk, (size_t)n, sizeof *tk, cmp_double);
        p50[k] = tk[n / 2];
        p99[k] = tk[(int)(n * 0.99)];
    }
    free(t);
    return 0;
}

static int latency_of(const serve_ctx *c, const char *path, int n, double *p50, double *p99)
{
    return latency_paths(c, &path, 1, n, p50, p99);
}

static int latency(const serve_ctx *c, int n, double *p50, double *p99)
{
    return latency_of(c, "/v1/tasks/t0/predict?probs=0", n, p50, p99);
}

/* Many clients at once: requests per second over all of them and the latency of each request. */
typedef struct load_result {
    double rps, p50_ms, p99_ms;
    double batches, batch_requests; /* the daemon's batch counters over the run */
} load_result;

/* The value of a metric line "name value" of /v1/metrics (0 when missing). */
static double metric(const serve_ctx *c, const char *name)
{
    char *body = NULL, key[128];
    double v = 0;
    snprintf(key, sizeof key, "\n%s ", name);
    if (call(c, "GET", "/v1/metrics", NULL, NULL, 0, &body) == 200 && strstr(body, key))
        v = strtod(strstr(body, key) + strlen(key), NULL);
    free(body);
    return v;
}

/* `clients` client processes predicting at batch 1 for `seconds`, each request on its own connection; every
 * request's latency comes back through a pipe (8-byte writes are atomic). */
static int concurrent_load(const serve_ctx *c, int clients, double seconds, load_result *out)
{
    int fds[2];
    pid_t pids[64];
    if (pipe(fds) || clients > 64) return -1;
    double b0 = metric(c, "clad_predict_batches_total"), r0 = metric(c, "clad_predict_batch_requests_total");
    for (int k = 0; k < clients; k++) {
        if ((pids[k] = fork()) == 0) {
            close(fds[0]);
            double t0 = bench_now();
            while (bench_now() - t0 < seconds) {
                double t1 = bench_now();
                if (call(c, "POST", "/v1/tasks/t0/predict?probs=0", "application/json", c->predict_body, c->predict_len,
                         NULL) != 200)
                    continue;
                double ms = (bench_now() - t1) * 1e3;
                if (write(fds[1], &ms, sizeof ms) != sizeof ms) _exit(1);
            }
            _exit(0);
        }
    }
    close(fds[1]);
    size_t n = 0, cap = 4096;
    double *ms = malloc(cap * sizeof *ms), one;
    double t0 = bench_now();
    while (ms && read(fds[0], &one, sizeof one) == sizeof one) {
        if (n == cap && !(ms = realloc(ms, (cap *= 2) * sizeof *ms))) break;
        ms[n++] = one;
    }
    double dt = bench_now() - t0;
    close(fds[0]);
    for (int k = 0; k < clients; k++) waitpid(pids[k], NULL, 0);
    if (!ms || !n) {
        free(ms);
        return -1;
    }
    qsort(ms, n, sizeof *ms, cmp_double);
    out->rps = (double)n / (dt > seconds ? dt : seconds);
    out->p50_ms = ms[n / 2];
    out->p99_ms = ms[(size_t)((double)n * 0.99)];
    out->batches = metric(c, "clad_predict_batches_total") - b0;
    out->batch_requests = metric(c, "clad_predict_batch_requests_total") - r0;
    free(ms);
    return 0;
}

/* Sends POST /v1/tasks/{query} with file as the body, for the caller to read the followed job from the
 * returned connection (-1 when it could not be sent). */
static int post_training(serve_ctx *c, const char *file, const char *query)
{
    char *body = NULL;
    size_t len = 0;
    if (bench_read_file(file, &body, &len)) return -1;
    clad_err err = {0};
    int fd = client_connect(c->d.sock, &err);
    char head[512];
    int hl = snprintf(head, sizeof head, "POST /v1/tasks/%s HTTP/1.1\r\nHost: clad\r\n"
                      "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n\r\n", query, len);
    if (fd >= 0 && (write(fd, head, (size_t)hl) != hl || write(fd, body, len) != (ssize_t)len)) {
        close(fd);
        fd = -1;
    }
    free(body);
    return fd;
}

/* A training job alone in the daemon: samples per second between its step events (from step 10 on, so the
 * start-up is left out), over about `seconds` of training; the job is cancelled afterwards. */
static double daemon_train_rate(serve_ctx *c, const char *file, int batch, double seconds)
{
    char query[128];
    snprintf(query, sizeof query, "rate/train?follow=1&epochs=500&batch=%d&rank=fixed:8", batch);
    int fd = post_training(c, file, query);
    bool sent = fd >= 0;
    static char buf[1 << 20];
    size_t have = 0, scan = 0;
    long step0 = -1, step1 = -1;
    double sec0 = 0, sec1 = 0;
    unsigned long long job = 0;
    while (sent && have < sizeof buf - 1) {
        ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
        if (r <= 0) break;
        have += (size_t)r;
        buf[have] = '\0';
        char *idp = strstr(buf, "\"id\":");
        if (idp && !job) job = strtoull(idp + 5, NULL, 10);
        /* Each complete step event: {"event":"step",...,"step":S,...,"seconds":T,...}\n */
        char *ev;
        while ((ev = strstr(buf + scan, "\"event\":\"step\"")) && strchr(ev, '\n')) {
            char *nl = strchr(ev, '\n'), *sp = strstr(ev, "\"step\":"), *tp = strstr(ev, "\"seconds\":");
            scan = (size_t)(nl - buf) + 1;
            if (!sp || !tp || sp > nl || tp > nl) continue;
            long step = strtol(sp + 7, NULL, 10);
            double sec = strtod(tp + 10, NULL);
            if (step < 10) continue;
            if (step0 < 0) step0 = step, sec0 = sec;
            step1 = step, sec1 = sec;
        }
        if (step0 >= 0 && sec1 - sec0 >= seconds) break;
    }
    close(fd);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%llu", job);
    if (job) call(c, "DELETE", path, NULL, NULL, 0, NULL);
    return step1 > step0 && sec1 > sec0 ? (double)(step1 - step0) * batch / (sec1 - sec0) : -1;
}

/* clad-bench speed's training rate for the same model, batch and threads (run next to this program). */
static double speed_train_rate(const char *preset, int threads)
{
    char exe[PATH_MAX], cmd[PATH_MAX + 128], out[8192];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return -1;
    exe[n] = '\0';
    snprintf(cmd, sizeof cmd, "OPENBLAS_NUM_THREADS=1 '%s' speed --json --model %s --threads %d", exe, preset, threads);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t k = fread(out, 1, sizeof out - 1, p);
    out[k] = '\0';
    pclose(p);
    const char *r = strstr(out, "\"train_samples_per_s\": ");
    return r ? strtod(r + 23, NULL) : -1;
}

/* Submits a long training job and returns the seconds until its first step event; leaves it running. */
static double time_to_first_step(serve_ctx *c, const char *file, uint64_t *job_id)
{
    /* Follow by hand: send the request, read until the first "step" line. */
    double t0 = bench_now();
    int fd = post_training(c, file, "t1/train?follow=1&epochs=200");
    if (fd < 0) return -1;
    char buf[65536];
    size_t have = 0;
    double t = -1;
    while (have < sizeof buf - 1) {
        ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
        if (r <= 0) break;
        have += (size_t)r;
        buf[have] = '\0';
        char *idp = strstr(buf, "\"id\":");
        if (idp && !*job_id) *job_id = strtoull(idp + 5, NULL, 10);
        if (strstr(buf, "\"event\":\"step\"")) {
            t = bench_now() - t0;
            break;
        }
    }
    close(fd);
    return t;
}

/* Starts cladd (the one at path cladd, NULL: beside this program) with a base of `preset` (random weights:
 * latency does not depend on their values) and `adapters` trained tasks t0, t11, t12, ...; writes the
 * task data files data2 (2000 images) and data3 (4000) into its directory for later jobs. */
static int serve_setup(serve_ctx *c, const char *cladd, const char *preset, bool quick, int adapters, long *idle_kb,
                       char *data2, char *data3, size_t size)
{
    if (bench_daemon_start_args(&c->d, "serve", NULL, cladd, NULL)) return die("cladd did not start");
    char base[PATH_MAX + 32], data[PATH_MAX + 32];
    snprintf(base, sizeof base, "%s/base.safetensors", c->d.dir);
    snprintf(data, sizeof data, "%s/task.safetensors", c->d.dir);
    snprintf(data2, size, "%s/task2.safetensors", c->d.dir);
    snprintf(data3, size, "%s/task3.safetensors", c->d.dir);
    model_config cfg;
    if (model_config_preset(&cfg, preset, NULL)) return die("--model takes a preset name (vit-tiny, mlp)");
    model *m = model_create(&cfg, NULL);
    model_init_random(m, 1);
    if (model_save(m, base, NULL)) return die("cannot write the base");
    model_destroy(m);
    if (bench_write_images(data, quick ? 300 : 1000, 1) || bench_write_images(data2, 2000, 2) ||
        bench_write_images(data3, 4000, 3))
        return die("cannot write task data");
    *idle_kb = bench_daemon_rss_kb(&c->d);
    char *bbuf = NULL;
    size_t blen = 0;
    bench_read_file(base, &bbuf, &blen);
    int st = call(c, "POST", "/v1/bases/base", "application/octet-stream", bbuf, blen, NULL);
    free(bbuf);
    if (st != 201) return die("base import failed");
    for (int k = 0; k < adapters; k++) {
        char task[16];
        snprintf(task, sizeof task, "t%d", k == 0 ? 0 : 10 + k);
        if (train_task(c, task, data, "epochs=1&rank=fixed:8")) return die("training a task failed");
    }
    return 0;
}

/* This daemon (a) against another cladd binary (b), both set up alike: 1-s windows of 32 concurrent batch-1
 * clients, alternating a, b, b, a, ... so that the shared machine's load falls on both alike. Prints each
 * one's requests/s over all its windows, the median of its windows' p50 and p99, and the ratio. */
static int compare_against(serve_ctx *a, serve_ctx *b, int rounds)
{
    double total[2] = {0}, p50[2][64], p99[2][64], batches[2] = {0}, reqs[2] = {0};
    for (int r = 0; r < rounds && r < 64; r++)
        for (int k = 0; k < 2; k++) {
            int which = (r % 2) ? 1 - k : k;
            load_result lr;
            if (concurrent_load(which ? b : a, 32, 1.0, &lr)) return die("concurrent predictions failed");
            total[which] += lr.rps;
            p50[which][r] = lr.p50_ms;
            p99[which][r] = lr.p99_ms;
            batches[which] += lr.batches;
            reqs[which] += lr.batch_requests;
        }
    int n = rounds < 64 ? rounds : 64;
    printf("{\"clients_32_batch1_alternating\": {\"rounds\": %d", n);
    for (int k = 0; k < 2; k++) {
        qsort(p50[k], (size_t)n, sizeof(double), cmp_double);
        qsort(p99[k], (size_t)n, sizeof(double), cmp_double);
        printf(", \"%s\": {\"requests_per_s\": %.0f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"mean_batch\": %.2f}",
               k ? "against" : "this", total[k] / n, p50[k][n / 2], p99[k][n / 2], batches[k] > 0 ? reqs[k] / batches[k] : 0.0);
    }
    printf(", \"requests_per_s_ratio\": %.3f}}\n", total[1] > 0 ? total[0] / total[1] : 0.0);
    return 0;
}

int bench_serve_main(int argc, char **argv)
{
    bool json = false, quick = false;
    const char *preset = "vit-tiny", *against = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) preset = argv[++i];
        else if (!strcmp(argv[i], "--against") && i + 1 < argc) against = argv[++i];
        else {
            fprintf(stderr, "usage: clad-bench serve [--quick] [--json] [--model vit-tiny|mlp] [--against CLADD]\n");
            return 2;
        }
    }
    serve_ctx c = {0};
    char data2[PATH_MAX + 32], data3[PATH_MAX + 32];
    long idle_kb = 0;
    int adapters = quick ? 2 : 4;
    if (serve_setup(&c, NULL, preset, quick, against ? 1 : adapters, &idle_kb, data2, data3, sizeof data2)) return 1;
    /* One prediction per task loads every adapter; the growth is what loaded adapters cost. */
    json_t *row = json_array();
    for (int k = 0; k < 784; k++) json_array_append_new(row, json_real(0.5));
    char *pb = json_dumps(json_pack("{s:[o]}", "inputs", row), JSON_COMPACT);
    c.predict_body = pb;
    c.predict_len = strlen(pb);
    if (against) {
        serve_ctx other = {.predict_body = pb, .predict_len = c.predict_len};
        long other_kb = 0;
        int rc = serve_setup(&other, against, preset, quick, 1, &other_kb, data2, data3, sizeof data2);
        /* Warm both: the adapter loaded and folded. */
        for (int i = 0; !rc && i < 20; i++)
            if (call(&c, "POST", "/v1/tasks/t0/predict", "application/json", pb, c.predict_len, NULL) != 200 ||
                call(&other, "POST", "/v1/tasks/t0/predict", "application/json", pb, c.predict_len, NULL) != 200)
                rc = die("predictions failed");
        if (!rc) rc = compare_against(&c, &other, quick ? 4 : 10);
        bench_daemon_stop(&c.d);
        bench_daemon_stop(&other.d);
        bench_daemon_remove(&c.d);
        bench_daemon_remove(&other.d);
        free(pb);
        return rc;
    }
    long before_kb = bench_daemon_rss_kb(&c.d);
    for (int k = 0; k < adapters; k++) {
        char path[64];
        snprintf(path, sizeof path, "/v1/tasks/t%d/predict", k == 0 ? 0 : 10 + k);
        call(&c, "POST", path, "application/json", pb, c.predict_len, NULL);
    }
    long after_kb = bench_daemon_rss_kb(&c.d);

    int reps = quick ? 100 : 500;
    double p50_idle, p99_idle, p50_busy, p99_busy, p50_routed, p99_routed;
    /* With and without a task id, interleaved. Routed over every task (the router is built by the first call
     * and cached); the threshold is lifted so that every input reaches an adapter, as an in-distribution
     * input would (the constant input here matches no task). */
    const char *paths[2] = {"/v1/tasks/t0/predict?probs=0", "/v1/predict?base=base&threshold=1e30"};
    double p50s[2], p99s[2];
    if (latency_paths(&c, paths, 2, reps, p50s, p99s)) return die("predictions failed");
    p50_idle = p50s[0], p99_idle = p99s[0], p50_routed = p50s[1], p99_routed = p99s[1];
    load_result idle, busy;
    if (concurrent_load(&c, 32, quick ? 1.0 : 3.0, &idle)) return die("concurrent predictions failed");
    uint64_t job = 0;
    double first_step = time_to_first_step(&c, data2, &job);
    if (latency(&c, reps, &p50_busy, &p99_busy)) return die("predictions during training failed");
    if (concurrent_load(&c, 32, quick ? 1.0 : 3.0, &busy)) return die("concurrent predictions during training failed");
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%llu", (unsigned long long)job);
    call(&c, "DELETE", path, NULL, NULL, 0, NULL);
    /* A training job alone against clad-bench speed in the same window (same model, batch 128, the
     * daemon's engine threads). */
    char *status = NULL;
    int threads = 1;
    if (call(&c, "GET", "/v1/status", NULL, NULL, 0, &status) == 200 && strstr(status, "\"engine_threads\":"))
        threads = atoi(strstr(status, "\"engine_threads\":") + 17);
    free(status);
    sleep(1); /* the cancelled job lets go of its threads */
    double train_daemon = daemon_train_rate(&c, data3, 128, quick ? 4.0 : 10.0);
    bench_daemon_stop(&c.d);
    double train_speed = speed_train_rate(preset, threads);
    free(pb);

    printf("{\"model\": \"%s\", \"predict_batch1_ms\": {\"idle\": {\"p50\": %.3f, \"p99\": %.3f}, "
           "\"routed\": {\"p50\": %.3f, \"p99\": %.3f, \"tasks\": %d, \"p50_ratio\": %.3f}, "
           "\"training\": {\"p50\": %.3f, \"p99\": %.3f}}, ",
           preset, p50_idle, p99_idle, p50_routed, p99_routed, adapters, p50_routed / p50_idle, p50_busy, p99_busy);
    const load_result *lr[2] = {&idle, &busy};
    printf("\"clients_32_batch1\": {");
    for (int k = 0; k < 2; k++)
        printf("%s\"%s\": {\"requests_per_s\": %.0f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"mean_batch\": %.2f}", k ? ", " : "",
               k ? "training" : "idle", lr[k]->rps, lr[k]->p50_ms, lr[k]->p99_ms,
               lr[k]->batches > 0 ? lr[k]->batch_requests / lr[k]->batches : 0.0);
    printf("}, \"train_samples_per_s\": {\"daemon\": %.1f, \"clad_bench_speed\": %.1f, \"ratio\": %.3f, \"batch\": 128, "
           "\"engine_threads\": %d}, ", train_daemon, train_speed, train_speed > 0 ? train_daemon / train_speed : 0.0, threads);
    printf("\"targets\": {\"p50_idle_under_1ms\": %s, \"p50_training_under_1ms\": %s, \"p99_training_under_5ms\": %s, "
           "\"train_within_10pct\": %s}, ", p50_idle < 1.0 ? "true" : "false", p50_busy < 1.0 ? "true" : "false",
           p99_busy < 5.0 ? "true" : "false", train_speed > 0 && train_daemon >= 0.9 * train_speed ? "true" : "false");
    double load[3] = {0};
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) {
        if (fscanf(la, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3) load[0] = -1;
        fclose(la);
    }
    printf("\"submit_to_first_step_s\": %.3f, \"idle_rss_mb\": %.1f, \"rss_per_loaded_adapter_mb\": %.2f, "
           "\"adapters_loaded\": %d, \"loadavg_1m_at_end\": %.2f}\n", first_step, idle_kb / 1024.0,
           (after_kb - before_kb) / 1024.0 / adapters, adapters, load[0]);
    (void)json;
    bench_daemon_remove(&c.d);
    return 0;
}
