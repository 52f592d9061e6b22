/* clad-bench soak: the daemon under mixed load for a bounded time, checked for failed requests, memory
 * growth and descriptor leaks.
 *
 * Starts the real cladd on a private socket, imports a randomly initialised mlp base (784-256-256-10),
 * trains four tasks, then runs for --seconds (or $SOAK_SECONDS; default 180):
 *   - 32 clients predicting (batch 4; now and then through the `champion` alias) and evaluating,
 *   - one client training the four tasks back to back (followed jobs),
 *   - one client rolling back, undoing rollbacks, moving the `champion` alias and deleting versions
 *     at random,
 *   - one slow client sending each prediction request a byte at a time,
 *   - one client sending garbage: random bytes, broken request lines, headers and bodies, oversized
 *     headers and bodies, invalid percent-escapes.
 * A request fails unless it gets its success status or an error the API documents for it (409 for a
 * rollback with nothing to roll back to, 404 for a version deleted meanwhile, 503 busy, any 4xx or a
 * closed connection for garbage); a training job fails unless it succeeds. At the end it reports the
 * requests by kind, the failed ones (each described on stderr), the latencies, VmRSS after the warm-up
 * (the first third) and at the end, and the open descriptors before and after the load. Exit status 1
 * if any request failed, the RSS grew by more than 10% or the descriptors grew.
 */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_daemon.h"
#include "core/model.h"
#include "core/rng.h"
#include "daemon/client.h"
#include "io/model_io.h"

#define SOAK_SERVE_CLIENTS 32
#define SOAK_TASKS 4
/* Growth allowed from the end of the warm-up to the end: 10%, but never less than 4 MB, because glibc's
 * heap keeps a few MB of fragments whose size varies from one quiet moment to the next (measured: -13% to
 * +9.5% on a ~24 MB daemon with no trend under load); a leak grows past that with time. */
#define SOAK_RSS_LIMIT 0.10
#define SOAK_RSS_FLOOR_KB 4096
#define SOAK_MAX_FAILURES_SHOWN 20

typedef enum soak_kind {
    K_PREDICT, K_EVALUATE, K_TRAIN, K_ROLLBACK, K_ALIAS, K_DELETE, K_LIST, K_SLOW, K_GARBAGE, K_N
} soak_kind;
static const char *const kind_name[K_N] = {"predict", "evaluate", "train", "rollback", "alias", "delete",
                                           "list", "slow", "garbage"};

typedef enum soak_role { ROLE_SERVE, ROLE_TRAIN, ROLE_MUTATE, ROLE_SLOW, ROLE_GARBAGE } soak_role;
static const char *const role_name[] = {"serve", "train", "mutate", "slow", "garbage"};

typedef struct soak_ctx {
    bench_daemon d;
    char *predict_body, *eval_body, *train_body, *slow_body;
    size_t predict_len, eval_len, train_len, slow_len;
    atomic_int stop;
    atomic_int paused;            /* clients wait between requests while set */
    atomic_int busy;              /* clients inside a request */
    atomic_int failures;          /* all clients; the first few are described on stderr */
} soak_ctx;

typedef struct soak_client {
    pthread_t thread;
    bool running;
    soak_ctx *c;
    soak_role role;
    rng r;
    long n[K_N], documented[K_N], failed[K_N];
    double *lat[K_N];             /* ms of each answered request (success or documented error) */
    size_t n_lat[K_N], cap_lat[K_N];
} soak_client;

/* Outcome of one request: success, an error the API documents for it, or a failure. */
typedef enum { OUT_OK, OUT_DOCUMENTED, OUT_FAILED } outcome;

static void record(soak_client *cl, soak_kind k, outcome o, double ms, const char *what, int status,
                   const char *body)
{
    cl->n[k]++;
    if (o == OUT_DOCUMENTED) cl->documented[k]++;
    if (o == OUT_FAILED) {
        cl->failed[k]++;
        if (atomic_fetch_add(&cl->c->failures, 1) < SOAK_MAX_FAILURES_SHOWN)
            fprintf(stderr, "soak: failed %s: %s -> %d %.300s\n", kind_name[k], what, status, body ? body : "");
    }
    if (o == OUT_FAILED) return;
    if (cl->n_lat[k] == cl->cap_lat[k]) {
        cl->cap_lat[k] = cl->cap_lat[k] ? 2 * cl->cap_lat[k] : 1024;
        cl->lat[k] = realloc(cl->lat[k], cl->cap_lat[k] * sizeof *cl->lat[k]);
        if (!cl->lat[k]) abort();
    }
    cl->lat[k][cl->n_lat[k]++] = ms;
}

/* One request through the project's client; classifies its status: `ok` is the success status,
 * `documented` a list of other acceptable statuses ending with 0. 503 busy is always acceptable. */
static int request(soak_client *cl, soak_kind k, const char *method, const char *path, const char *ctype,
                   const void *body, size_t len, int ok, const int *documented, char **out)
{
    double t0 = bench_now();
    char *reply = NULL;
    int st = bench_daemon_call(&cl->c->d, method, path, ctype, body, len, &reply);
    double ms = (bench_now() - t0) * 1e3;
    outcome o = st == ok ? OUT_OK : st == 503 ? OUT_DOCUMENTED : OUT_FAILED;
    for (int i = 0; o == OUT_FAILED && st && documented && documented[i]; i++)
        if (st == documented[i]) o = OUT_DOCUMENTED;
    char what[300];
    snprintf(what, sizeof what, "%s %s", method, path);
    record(cl, k, o, ms, what, st, reply);
    if (out) *out = reply;
    else free(reply);
    return st;
}

static void pause_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* ---- The clients ---------------------------------------------------------------------------- */

static void serve_step(soak_client *cl)
{
    static const int alias_missing[] = {404, 0};
    char path[128];
    unsigned task = rng_below(&cl->r, SOAK_TASKS);
    bool champion = rng_below(&cl->r, 10) == 0;
    if (rng_below(&cl->r, 4) == 0) {
        snprintf(path, sizeof path, "/v1/tasks/t%u/evaluate", task);
        request(cl, K_EVALUATE, "POST", path, "application/octet-stream", cl->c->eval_body, cl->c->eval_len, 200,
                NULL, NULL);
        return;
    }
    snprintf(path, sizeof path, "/v1/tasks/t%u/predict%s", task, champion ? "?alias=champion" : "");
    request(cl, K_PREDICT, "POST", path, "application/json", cl->c->predict_body, cl->c->predict_len, 200,
            champion ? alias_missing : NULL, NULL);
}

static void train_step(soak_client *cl)
{
    char path[160], *reply = NULL;
    snprintf(path, sizeof path, "/v1/tasks/t%u/train?follow=1&epochs=1&rank=fixed:4&seed=%u",
             rng_below(&cl->r, SOAK_TASKS), rng_below(&cl->r, 1000));
    double t0 = bench_now();
    int st = bench_daemon_call(&cl->c->d, "POST", path, "application/octet-stream", cl->c->train_body,
                               cl->c->train_len, &reply);
    /* The stream ends with the job: the request succeeded only if the job did. */
    bool ok = st == 202 && reply && strstr(reply, "\"event\":\"end\"") && strstr(reply, "\"state\":\"succeeded\"");
    record(cl, K_TRAIN, ok ? OUT_OK : st == 503 ? OUT_DOCUMENTED : OUT_FAILED, (bench_now() - t0) * 1e3, path, st,
           reply && strlen(reply) > 300 ? reply + strlen(reply) - 300 : reply);
    free(reply);
}

/* A random version of a task from its list (0 if the list failed). */
static long long random_version(soak_client *cl, unsigned task)
{
    char path[64], *reply = NULL;
    snprintf(path, sizeof path, "/v1/tasks/t%u/versions", task);
    long long v = 0;
    if (request(cl, K_LIST, "GET", path, NULL, NULL, 0, 200, NULL, &reply) == 200) {
        json_t *j = json_loads(reply, 0, NULL);
        json_t *list = json_object_get(j, "versions");
        size_t n = json_array_size(list);
        if (n) v = json_integer_value(json_object_get(json_array_get(list, rng_below(&cl->r, (uint32_t)n)), "version"));
        json_decref(j);
    }
    free(reply);
    return v;
}

static void mutate_step(soak_client *cl)
{
    static const int nothing_to_undo[] = {409, 0}, gone[] = {404, 0}, gone_or_aliased[] = {404, 409, 0};
    unsigned task = rng_below(&cl->r, SOAK_TASKS), pick = rng_below(&cl->r, 20);
    char path[128], body[96];
    if (pick < 5) {
        snprintf(path, sizeof path, "/v1/tasks/t%u/rollback%s", task, pick == 0 ? "/undo" : "");
        request(cl, K_ROLLBACK, "POST", path, "application/json", "{}", 2, 200, nothing_to_undo, NULL);
    } else if (pick < 10) {
        long long v = random_version(cl, task);
        if (!v) return;
        snprintf(path, sizeof path, "/v1/tasks/t%u/aliases/champion", task);
        int n = snprintf(body, sizeof body, "{\"version\": %lld, \"reason\": \"soak\"}", v);
        request(cl, K_ALIAS, "PUT", path, "application/json", body, (size_t)n, 200, gone, NULL);
    } else {
        /* Deletes outnumber new versions a little, so the store stays about the same size. */
        long long v = random_version(cl, task);
        if (!v) return;
        snprintf(path, sizeof path, "/v1/tasks/t%u/versions/%lld", task, v);
        request(cl, K_DELETE, "DELETE", path, NULL, NULL, 0, 200, gone_or_aliased, NULL);
    }
    pause_ms(10);
}

/* Raw exchanges for the slow and the garbage client: send, then read until the daemon closes (the
 * requests say `Connection: close`; malformed ones are closed by the daemon) or timeout_ms passes.
 * Returns the status of the first response line, 0 if the daemon closed without answering, -1 on
 * timeout or a failed connection. */
static int raw_exchange(const soak_ctx *c, const char *data, size_t len, int byte_delay_us, int timeout_ms)
{
    clad_err err = {0};
    int fd = client_connect(c->d.sock, &err);
    if (fd < 0) return -1;
    size_t sent = 0;
    while (sent < len) {
        size_t chunk = byte_delay_us ? 1 : len - sent;
        ssize_t n = send(fd, data + sent, chunk, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* the daemon refused the rest (e.g. 413): read its answer */
        sent += (size_t)n;
        if (byte_delay_us) {
            struct timespec ts = {0, byte_delay_us * 1000L};
            nanosleep(&ts, NULL);
        }
    }
    char head[64] = {0};
    size_t have = 0;
    double deadline = bench_now() + timeout_ms / 1000.0;
    int status = -1;
    for (;;) {
        int left = (int)((deadline - bench_now()) * 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) <= 0) break;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { /* closed (a reset counts too) */
            status = 0;
            if (sscanf(head, "HTTP/1.%*d %d", &status) != 1) status = 0;
            break;
        }
        size_t take = (size_t)n < sizeof head - 1 - have ? (size_t)n : sizeof head - 1 - have;
        memcpy(head + have, buf, take);
        have += take;
    }
    close(fd);
    return status;
}

static void slow_step(soak_client *cl)
{
    const soak_ctx *c = cl->c;
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "POST /v1/tasks/t%u/predict?probs=0 HTTP/1.1\r\nHost: cladd\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      rng_below(&cl->r, SOAK_TASKS), c->slow_len);
    size_t len = (size_t)hl + c->slow_len;
    char *req = malloc(len);
    if (!req) abort();
    memcpy(req, head, (size_t)hl);
    memcpy(req + hl, c->slow_body, c->slow_len);
    double t0 = bench_now();
    /* 1 ms between bytes: the ~3 KB request takes a few seconds; the headers stay well within
     * header_timeout, each body byte within body_timeout. */
    int st = raw_exchange(c, req, len, 1000, 60000);
    record(cl, K_SLOW, st == 200 ? OUT_OK : OUT_FAILED, (bench_now() - t0) * 1e3, "predict, a byte at a time", st,
           NULL);
    free(req);
}

/* Malformed requests; each is answered with a 4xx, or the connection is closed. */
#define RAW(text) text, sizeof text - 1
static const struct {
    const char *what, *req;
    size_t len;
} garbage_fixed[] = {
    {"bad Content-Length", RAW("POST /v1/tasks/t0/predict HTTP/1.1\r\nContent-Length: 1x2\r\n\r\n")},
    {"truncated JSON", RAW("POST /v1/tasks/t0/predict HTTP/1.1\r\nConnection: close\r\nContent-Type: "
                           "application/json\r\nContent-Length: 14\r\n\r\n{\"inputs\": [[1")},
    {"huge Content-Length", RAW("POST /v1/tasks/t0/predict HTTP/1.1\r\nConnection: close\r\nContent-Type: "
                                "application/json\r\nContent-Length: 99999999999\r\n\r\n{")},
    {"header without a colon", RAW("GET /v1/health HTTP/1.1\r\nthis is not a header\r\n\r\n")},
    {"unknown method", RAW("BREW /v1/health HTTP/1.1\r\nConnection: close\r\n\r\n")},
    {"invalid percent-escape", RAW("GET /v1/tasks/%FF%FE/versions HTTP/1.1\r\nConnection: close\r\n\r\n")},
    {"bad chunk size", RAW("POST /v1/tasks/t0/predict HTTP/1.1\r\nConnection: close\r\nContent-Type: "
                           "application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")},
    {"NUL in the request line", RAW("GET /v1/hea\0lth HTTP/1.1\r\n\r\n")},
};
#define GARBAGE_FIXED (sizeof garbage_fixed / sizeof garbage_fixed[0])

/* One malformed request of a random kind: a fixed one, random bytes, or oversized headers. */
static void garbage_step(soak_client *cl)
{
    char req[24 * 1024];
    size_t n;
    unsigned pick = rng_below(&cl->r, GARBAGE_FIXED + 2);
    const char *what;
    if (pick < GARBAGE_FIXED) {
        what = garbage_fixed[pick].what;
        n = garbage_fixed[pick].len;
        memcpy(req, garbage_fixed[pick].req, n);
    } else if (pick == GARBAGE_FIXED) {
        what = "random bytes";
        n = 64 + rng_below(&cl->r, 448);
        for (size_t i = 0; i < n; i++) req[i] = (char)rng_below(&cl->r, 256);
        memcpy(req + n, "\r\n\r\n", 4);
        n += 4;
    } else {
        what = "oversized headers";
        n = (size_t)snprintf(req, sizeof req, "GET /v1/health HTTP/1.1\r\nX-Big: ");
        while (n < 20000) req[n++] = 'a';
        n += (size_t)snprintf(req + n, sizeof req - n, "\r\n\r\n");
    }
    double t0 = bench_now();
    int st = raw_exchange(cl->c, req, n, 0, 15000);
    outcome o = st == 0 || (st >= 400 && st < 500) ? OUT_DOCUMENTED : OUT_FAILED;
    record(cl, K_GARBAGE, o, (bench_now() - t0) * 1e3, what, st, NULL);
    pause_ms(5);
}

static void *client_main(void *arg)
{
    soak_client *cl = arg;
    soak_ctx *c = cl->c;
    while (!atomic_load(&c->stop)) {
        if (atomic_load(&c->paused)) {
            pause_ms(10);
            continue;
        }
        atomic_fetch_add(&c->busy, 1);
        if (atomic_load(&c->paused)) { /* the main thread paused between our two checks */
            atomic_fetch_sub(&c->busy, 1);
            continue;
        }
        switch (cl->role) {
        case ROLE_SERVE: serve_step(cl); break;
        case ROLE_TRAIN: train_step(cl); break;
        case ROLE_MUTATE: mutate_step(cl); break;
        case ROLE_SLOW: slow_step(cl); break;
        case ROLE_GARBAGE: garbage_step(cl); break;
        }
        atomic_fetch_sub(&c->busy, 1);
    }
    return NULL;
}

/* ---- Setup and report ----------------------------------------------------------------------- */

/* The adapter cache as the daemon reports it (GET /v1/status, "loaded"): entries and counted bytes. */
static void cache_stats(const soak_ctx *c, long *adapters, long *bytes)
{
    char *reply = NULL;
    *adapters = *bytes = -1;
    if (bench_daemon_call(&c->d, "GET", "/v1/status", NULL, NULL, 0, &reply) == 200) {
        json_t *j = json_loads(reply, 0, NULL);
        json_t *loaded = json_object_get(j, "loaded");
        *adapters = (long)json_integer_value(json_object_get(loaded, "adapters"));
        *bytes = (long)json_integer_value(json_object_get(loaded, "adapter_bytes"));
        json_decref(j);
    }
    free(reply);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int soak_setup(soak_ctx *c)
{
    char base[PATH_MAX + 32], train[PATH_MAX + 32], eval[PATH_MAX + 32];
    snprintf(base, sizeof base, "%s/base.safetensors", c->d.dir);
    snprintf(train, sizeof train, "%s/train.safetensors", c->d.dir);
    snprintf(eval, sizeof eval, "%s/eval.safetensors", c->d.dir);
    model_config cfg;
    model_config_preset(&cfg, "mlp", NULL);
    model *m = model_create(&cfg, NULL);
    if (!m) return -1;
    model_init_random(m, 1);
    int rc = model_save(m, base, NULL);
    model_destroy(m);
    if (rc || bench_write_images(train, 300, 1) || bench_write_images(eval, 64, 2)) return -1;
    char *bbuf = NULL;
    size_t blen = 0;
    if (bench_read_file(base, &bbuf, &blen) || bench_read_file(train, &c->train_body, &c->train_len) ||
        bench_read_file(eval, &c->eval_body, &c->eval_len))
        return -1;
    int st = bench_daemon_call(&c->d, "POST", "/v1/bases/mlp", "application/octet-stream", bbuf, blen, NULL);
    free(bbuf);
    if (st != 201) return -1;
    for (int t = 0; t < SOAK_TASKS; t++) {
        char path[128], *reply = NULL;
        snprintf(path, sizeof path, "/v1/tasks/t%d/train?follow=1&epochs=1&rank=fixed:4", t);
        st = bench_daemon_call(&c->d, "POST", path, "application/octet-stream", c->train_body, c->train_len, &reply);
        bool ok = st == 202 && reply && strstr(reply, "\"state\":\"succeeded\"");
        free(reply);
        if (!ok) return -1;
    }
    /* Four different rows, so predictions are not one cached answer. */
    json_t *rows = json_array();
    rng r;
    rng_init(&r, 9);
    for (int i = 0; i < 4; i++) {
        json_t *row = json_array();
        for (int k = 0; k < 784; k++) json_array_append_new(row, json_real((double)(int)(rng_uniform(&r) * 100) / 100));
        json_array_append_new(rows, row);
    }
    json_t *body = json_pack("{s:o}", "inputs", rows);
    c->predict_body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    c->predict_len = strlen(c->predict_body);
    /* The slow client's request: one short row (~3 KB). */
    json_t *row = json_array();
    for (int k = 0; k < 784; k++) json_array_append_new(row, json_integer(k % 2));
    body = json_pack("{s:[o]}", "inputs", row);
    c->slow_body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    c->slow_len = strlen(c->slow_body);
    return 0;
}

typedef struct soak_totals {
    long n, documented, failed;
    double p50, p99;
} soak_totals;

static soak_totals totals_of(soak_client *cl, int n_clients, soak_kind k)
{
    soak_totals t = {0, 0, 0, 0, 0};
    size_t n_lat = 0;
    for (int i = 0; i < n_clients; i++) {
        t.n += cl[i].n[k];
        t.documented += cl[i].documented[k];
        t.failed += cl[i].failed[k];
        n_lat += cl[i].n_lat[k];
    }
    if (!n_lat) return t;
    double *all = malloc(n_lat * sizeof *all);
    if (!all) abort();
    size_t at = 0;
    for (int i = 0; i < n_clients; i++) {
        if (cl[i].n_lat[k]) memcpy(all + at, cl[i].lat[k], cl[i].n_lat[k] * sizeof *all);
        at += cl[i].n_lat[k];
    }
    qsort(all, n_lat, sizeof *all, cmp_double);
    t.p50 = all[n_lat / 2];
    t.p99 = all[(size_t)((double)n_lat * 0.99)];
    free(all);
    return t;
}

/* The daemon at a quiet moment: no request in flight. */
typedef struct soak_snapshot {
    long rss_kb, cache_adapters, cache_bytes;
    int fds;
} soak_snapshot;

/* Holds the clients between two requests and waits until none is in one (the slow client's request
 * takes a few seconds), then lets the daemon finish closing connections, and measures it. The daemon
 * hands free heap pages back when it goes quiet, but at most once a second, so the last request before
 * the pause may have found it too soon: one request more after a second of quiet makes every snapshot
 * see the trimmed heap, not the chance timing of the last trim. */
static soak_snapshot quiet_snapshot(soak_ctx *c)
{
    atomic_store(&c->paused, 1);
    while (atomic_load(&c->busy) > 0) pause_ms(20);
    pause_ms(1100);
    bench_daemon_call(&c->d, "GET", "/v1/health", NULL, NULL, 0, NULL);
    pause_ms(200);
    soak_snapshot sn = {.rss_kb = bench_daemon_rss_kb(&c->d), .fds = bench_daemon_fd_count(&c->d)};
    cache_stats(c, &sn.cache_adapters, &sn.cache_bytes);
    atomic_store(&c->paused, 0);
    return sn;
}

int bench_soak_main(int argc, char **argv)
{
    bool json = false;
    const char *roles = "serve,train,mutate,slow,garbage";
    double seconds = getenv("SOAK_SECONDS") ? atof(getenv("SOAK_SECONDS")) : 180;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--roles") && i + 1 < argc) roles = argv[++i];
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: clad-bench soak [--seconds N] [--roles serve,train,mutate,slow,garbage] "
                            "[--json]\n  (default: $SOAK_SECONDS or 180 s, every role)\n");
            return 2;
        }
    }
    if (!(seconds >= 5)) {
        fprintf(stderr, "clad-bench soak: --seconds must be at least 5\n");
        return 2;
    }
    static soak_ctx c;
    if (bench_daemon_start(&c.d, "soak", NULL)) return 1;
    if (soak_setup(&c)) {
        fprintf(stderr, "clad-bench soak: setup (base import, first trainings) failed; see %s/cladd.log\n", c.d.dir);
        bench_daemon_stop(&c.d);
        return 1;
    }
    json_object_seed(0); /* before the threads: jansson seeds its hash tables once */

    enum { N_CLIENTS = SOAK_SERVE_CLIENTS + 4 };
    static soak_client cl[N_CLIENTS];
    soak_snapshot before = quiet_snapshot(&c);
    double t0 = bench_now();
    for (int i = 0; i < N_CLIENTS; i++) {
        cl[i].c = &c;
        cl[i].role = i < SOAK_SERVE_CLIENTS ? ROLE_SERVE : (soak_role)(ROLE_TRAIN + i - SOAK_SERVE_CLIENTS);
        rng_init(&cl[i].r, 1000 + (uint64_t)i);
        if (!strstr(roles, role_name[cl[i].role])) continue;
        if (pthread_create(&cl[i].thread, NULL, client_main, &cl[i])) {
            fprintf(stderr, "clad-bench soak: cannot start a client thread\n");
            return 1;
        }
        cl[i].running = true;
    }
    /* Warm-up: the first third, long enough for the bounded high-water marks (SQLite's page cache, the
     * allocator's arenas at peak concurrency) to be reached: with predictions alone RSS levels off after
     * about 30 s. Then RSS is sampled under load until the end. */
    while (bench_now() - t0 < seconds / 3) pause_ms(100);
    soak_snapshot warm = quiet_snapshot(&c);
    long rss_max = warm.rss_kb, rss_trace[10] = {0}; /* under load, at the end of each tenth of the run */
    while (bench_now() - t0 < seconds) {
        pause_ms(500);
        long kb = bench_daemon_rss_kb(&c.d);
        if (kb > rss_max) rss_max = kb;
        for (int k = 0; k < (int)((bench_now() - t0) / seconds * 10) && k < 10; k++)
            if (!rss_trace[k]) rss_trace[k] = kb;
    }
    soak_snapshot end = quiet_snapshot(&c);
    double elapsed = bench_now() - t0;
    atomic_store(&c.stop, 1);
    for (int i = 0; i < N_CLIENTS; i++)
        if (cl[i].running) pthread_join(cl[i].thread, NULL);
    int health = bench_daemon_call(&c.d, "GET", "/v1/health", NULL, NULL, 0, NULL);
    int exit_status = bench_daemon_stop(&c.d);

    soak_totals tot[K_N], all = {0, 0, 0, 0, 0};
    for (int k = 0; k < K_N; k++) {
        tot[k] = totals_of(cl, N_CLIENTS, (soak_kind)k);
        all.n += tot[k].n;
        all.documented += tot[k].documented;
        all.failed += tot[k].failed;
    }
    double growth = warm.rss_kb > 0 ? (double)(end.rss_kb - warm.rss_kb) / (double)warm.rss_kb : 1;
    /* Descriptors are compared with the end of the warm-up, like RSS: SQLite keeps the descriptor of a
     * closed reader connection open for reuse while the process holds locks on the same file (POSIX locks
     * are per process), so one more descriptor can appear with the first load and stay, without growing. */
    long allowed_kb = (long)(SOAK_RSS_LIMIT * (double)warm.rss_kb);
    if (allowed_kb < SOAK_RSS_FLOOR_KB) allowed_kb = SOAK_RSS_FLOOR_KB;
    /* The adapter cache may fill up to its budget (versions trained during the soak, folded copies of the
     * base for hot ones): what it counts as grown is allowed on top; memory it does not count is not. */
    if (end.cache_bytes > warm.cache_bytes) allowed_kb += (end.cache_bytes - warm.cache_bytes) / 1024;
    bool ok = all.failed == 0 && warm.rss_kb > 0 && end.rss_kb - warm.rss_kb <= allowed_kb && end.fds <= warm.fds &&
              health == 200 && exit_status == 0;
    if (json) {
        printf("{\"seconds\": %.1f, \"roles\": \"%s\", \"requests\": {", elapsed, roles);
        for (int k = 0; k < K_N; k++)
            printf("%s\"%s\": {\"n\": %ld, \"documented_errors\": %ld, \"failed\": %ld, \"p50_ms\": %.2f, "
                   "\"p99_ms\": %.2f}", k ? ", " : "", kind_name[k], tot[k].n, tot[k].documented, tot[k].failed,
                   tot[k].p50, tot[k].p99);
        printf("}, \"failed\": %ld, \"rss_kb\": {\"before\": %ld, \"warm\": %ld, \"end\": %ld, "
               "\"max_under_load\": %ld}, \"rss_growth\": %.4f, \"cached_adapters\": {\"warm\": %ld, \"end\": %ld}, "
               "\"fds\": {\"before\": %d, \"warm\": %d, \"end\": %d}, \"exit_status\": %d, \"ok\": %s}\n",
               all.failed, before.rss_kb, warm.rss_kb, end.rss_kb, rss_max, growth, warm.cache_adapters,
               end.cache_adapters, before.fds, warm.fds, end.fds, exit_status, ok ? "true" : "false");
    } else {
        printf("soak: %.0f s, clients: %s (serve: %d predicting and evaluating)\n", elapsed, roles,
               SOAK_SERVE_CLIENTS);
        printf("%-9s %9s %11s %7s %9s %9s\n", "kind", "requests", "documented", "failed", "p50 ms", "p99 ms");
        for (int k = 0; k < K_N; k++)
            printf("%-9s %9ld %11ld %7ld %9.2f %9.2f\n", kind_name[k], tot[k].n, tot[k].documented,
                   tot[k].failed, tot[k].p50, tot[k].p99);
        printf("%-9s %9ld %11ld %7ld   (%.0f requests/s)\n", "total", all.n, all.documented, all.failed,
               (double)all.n / elapsed);
        printf("RSS (quiet): before %.1f MB, after warm-up %.1f MB, after the soak %.1f MB (%+.1f%%, limit +%.1f MB: "
               "%.0f%% or %d MB, plus the cache's growth); highest under load %.1f MB\n", before.rss_kb / 1024.0, warm.rss_kb / 1024.0,
               end.rss_kb / 1024.0, growth * 100, allowed_kb / 1024.0, SOAK_RSS_LIMIT * 100, SOAK_RSS_FLOOR_KB / 1024,
               rss_max / 1024.0);
        printf("RSS under load at each tenth of the run (MB):");
        for (int k = 0; k < 10; k++) printf(" %.1f", rss_trace[k] / 1024.0);
        printf("\nadapter cache: %ld adapters (%.1f MB counted) after warm-up, %ld (%.1f MB) after the soak\n",
               warm.cache_adapters, warm.cache_bytes / 1048576.0, end.cache_adapters, end.cache_bytes / 1048576.0);
        printf("open descriptors: before %d, after warm-up %d, after the soak %d; health after the soak %d; "
               "exit status %d\n", before.fds, warm.fds, end.fds, health, exit_status);
        printf("%s\n", ok ? "soak passed" : "soak FAILED");
    }
    if (ok) bench_daemon_remove(&c.d);
    else fprintf(stderr, "clad-bench soak: the daemon's log is in %s/cladd.log\n", c.d.dir);
    for (int i = 0; i < N_CLIENTS; i++)
        for (int k = 0; k < K_N; k++) free(cl[i].lat[k]);
    free(c.predict_body);
    free(c.eval_body);
    free(c.train_body);
    free(c.slow_body);
    return ok ? 0 : 1;
}
