/* Crash safety of the whole daemon: the real cladd is SIGKILLed at random moments while client
 * processes train, fuse, merge, roll back, move aliases, delete versions and predict through its socket;
 * after every kill the store is checked directly and the daemon is restarted, and it must serve again
 * within 2 s.
 *
 * What the clients were told is the reference: a version is "acknowledged" once a client received the
 * successful end of its job (train or merge), a delete once it received its 200. After each kill:
 *   - the store opens, and `integrity_check`, the foreign keys, every blob's sha256 and the alias
 *     invariants pass (store_check STORE_CHECK_FULL);
 *   - every acknowledged version still loads with its sha256, unless a client asked to delete it;
 *     every acknowledged delete stayed deleted;
 *   - every task has at least one version, every alias points at a stored version, every version a
 *     fusion version needs (its parents) is stored, and every stored version is served by the
 *     restarted daemon;
 *   - after the restart every job is final (succeeded, failed, cancelled, interrupted), and each
 *     succeeded train or merge job names a version that is stored or was deleted on request.
 * The number of kills is CLAD_CRASH_ROUNDS (default CRASH_ROUNDS_DEFAULT).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/model.h"
#include "core/rng.h"
#include "io/dataset_io.h"
#include "io/model_io.h"
#include "storage/store.h"
#include "tests/daemon_util.h"
#include "tests/test.h"

#define CRASH_ROUNDS_DEFAULT 50
#define CRASH_IN 8
#define CRASH_CLASSES 3
#define CRASH_TRAINERS 2      /* client processes submitting jobs one after another */
#define CRASH_MUTATORS 2      /* client processes moving aliases, deleting and predicting */
#define CRASH_MAX_VERSIONS 32768 /* per task; about 10 per round are made */
#define CRASH_SERVE_LIMIT_S 2.0

/* Tasks the clients touch: trained ones, a fusion over two of them and a merge of them. */
static const char *const crash_tasks[] = {"t0", "t1", "t2", "f0", "m0"};
#define CRASH_N_TASKS (sizeof crash_tasks / sizeof crash_tasks[0])

static int task_index(const char *name)
{
    for (size_t i = 0; i < CRASH_N_TASKS; i++)
        if (!strcmp(crash_tasks[i], name)) return (int)i;
    return -1;
}

/* What the clients reported, by task and version. */
enum { SEEN_ACKED = 1, SEEN_DELETE_ASKED = 2, SEEN_DELETE_ACKED = 4 };

typedef struct crash_ctx {
    daemon_proc d;
    char acks[512];             /* the clients' log: one line per acknowledgement */
    long acks_read;             /* bytes of it already applied */
    uint8_t seen[CRASH_N_TASKS][CRASH_MAX_VERSIONS];
    char *train_body;           /* a small safetensors training set */
    size_t train_len;
    char predict_body[512];     /* one JSON input row */
    /* Totals for the summary line. */
    int versions_acked, deletes_acked, kills_in_job, errors;
    double worst_restart_s;
} crash_ctx;

/* A small labelled set: Gaussian inputs, label = the largest of the first CRASH_CLASSES features. */
static void write_data(const char *path, int n, uint64_t seed)
{
    dataset ds;
    CHECK_INT_EQ(dataset_init(&ds, n, 1, (int[]){CRASH_IN}, NULL), 0);
    rng r;
    rng_init(&r, seed);
    for (int i = 0; i < n; i++) {
        float *x = ds.x + (size_t)i * CRASH_IN;
        int best = 0;
        for (int j = 0; j < CRASH_IN; j++) x[j] = rng_normal(&r);
        for (int k = 1; k < CRASH_CLASSES; k++)
            if (x[k] > x[best]) best = k;
        ds.y[i] = best;
    }
    ds.n_classes = CRASH_CLASSES;
    CHECK_INT_EQ(dataset_save_safetensors(&ds, path, NULL), 0);
    dataset_finish(&ds);
}

static char *slurp(const char *path, size_t *len)
{
    uint8_t *b = NULL;
    CHECK_INT_EQ(file_read_all(path, 1u << 26, &b, len, NULL), 0);
    return (char *)b;
}

/* ---- The clients (forked; they exit when the daemon goes away) ------------------------------- */

static void log_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(int fd, const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    /* O_APPEND and one write per line: lines of concurrent clients never interleave. */
    if (write(fd, line, (size_t)n) != n) _exit(9);
}

/* Whether a status is one the API documents for these requests under this load; a 5xx other than
 * 503 busy, or an unexplained 4xx, is a daemon bug the test reports. */
static bool status_expected(int status)
{
    return (status >= 200 && status < 300) || status == 400 || status == 404 || status == 409 || status == 503;
}

/* One request; a connection failure ends the client (the daemon was killed). Unexpected answers are
 * logged as "E" lines for the parent to fail on. */
static int client_call(const crash_ctx *c, int logfd, const char *method, const char *path, const char *ctype,
                       const void *body, size_t len, char **out)
{
    char *reply = NULL;
    int st = http_try(c->d.sock, method, path, ctype, body, len, 0, &reply);
    if (st == 0) {
        free(reply);
        _exit(0);
    }
    if (!status_expected(st)) log_line(logfd, "E %d %s %s %.300s", st, method, path, reply ? reply : "");
    if (out) *out = reply;
    else free(reply);
    return st;
}

/* The final job object of a followed job's NDJSON stream: its state and result version. A stream cut
 * off before its end line is the daemon being killed: the client ends. */
static const char *stream_end(char *body, int64_t *version)
{
    static char state[32];
    char *last = NULL, *save = NULL;
    for (char *line = strtok_r(body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) last = line;
    json_t *end = last ? json_loads(last, 0, NULL) : NULL;
    const char *event = json_string_value(json_object_get(end, "event"));
    if (!event || strcmp(event, "end")) _exit(0);
    json_t *job = json_object_get(end, "job");
    const char *st = json_string_value(json_object_get(job, "state"));
    snprintf(state, sizeof state, "%s", st ? st : "");
    *version = json_integer_value(json_object_get(json_object_get(job, "result"), "version"));
    json_decref(end);
    return state;
}

/* Submits one job (train, fusion or merge) and follows it; logs the version when it succeeds. */
static void trainer_step(const crash_ctx *c, int logfd, rng *r)
{
    uint32_t pick = rng_below(r, 10);
    char path[256], *reply = NULL;
    const char *task;
    int st;
    if (pick < 6) {
        task = crash_tasks[rng_below(r, 3)];
        snprintf(path, sizeof path, "/v1/tasks/%s/train?follow=1&epochs=1&rank=fixed:2&holdout=0.2&seed=%u", task,
                 rng_below(r, 1000));
        st = client_call(c, logfd, "POST", path, "application/octet-stream", c->train_body, c->train_len, &reply);
    } else if (pick < 8) {
        task = "f0";
        st = client_call(c, logfd, "POST", "/v1/tasks/f0/train?follow=1&epochs=1&fuse_with=t0,t1&holdout=0.2",
                         "application/octet-stream", c->train_body, c->train_len, &reply);
    } else {
        task = "m0";
        static const char body[] = "{\"tasks\": [\"t0\", \"t1\", \"t2\"], \"method\": \"ta\", \"rank\": 4}";
        st = client_call(c, logfd, "POST", "/v1/merges/m0?follow=1", "application/json", body, sizeof body - 1,
                         &reply);
    }
    if (st == 202) {
        int64_t v = 0;
        const char *state = stream_end(reply, &v);
        if (!strcmp(state, "succeeded") && v > 0) log_line(logfd, "V %s %lld", task, (long long)v);
        else if (strcmp(state, "failed") && strcmp(state, "interrupted"))
            log_line(logfd, "E 202 POST %s job ended %s", path, state);
    }
    free(reply);
}

/* A random stored version of task (0 when none), read through the API. */
static int64_t pick_version(const crash_ctx *c, int logfd, rng *r, const char *task)
{
    char path[128], *reply = NULL;
    snprintf(path, sizeof path, "/v1/tasks/%s/versions", task);
    int64_t v = 0;
    if (client_call(c, logfd, "GET", path, NULL, NULL, 0, &reply) == 200) {
        json_t *j = json_loads(reply, 0, NULL);
        json_t *list = json_object_get(j, "versions");
        if (json_array_size(list) > 0)
            v = json_integer_value(
                json_object_get(json_array_get(list, rng_below(r, (uint32_t)json_array_size(list))), "version"));
        json_decref(j);
    }
    free(reply);
    return v;
}

/* One random change or read that is not a job. */
static void mutator_step(const crash_ctx *c, int logfd, rng *r)
{
    const char *task = crash_tasks[rng_below(r, CRASH_N_TASKS)];
    char path[160], body[160];
    uint32_t pick = rng_below(r, 10);
    if (pick < 2) {
        snprintf(path, sizeof path, "/v1/tasks/%s/rollback%s", task, rng_below(r, 3) ? "" : "/undo");
        client_call(c, logfd, "POST", path, "application/json", "{}", 2, NULL);
    } else if (pick < 4) {
        int64_t v = pick_version(c, logfd, r, task);
        if (!v) return;
        snprintf(path, sizeof path, "/v1/tasks/%s/aliases/%s", task, rng_below(r, 2) ? "champion" : "active");
        int n = snprintf(body, sizeof body, "{\"version\": %lld, \"reason\": \"crash test\"}", (long long)v);
        client_call(c, logfd, "PUT", path, "application/json", body, (size_t)n, NULL);
    } else if (pick < 6) {
        int64_t v = pick_version(c, logfd, r, task);
        if (!v) return;
        /* Logged before the request: a delete the kill cut short may or may not have happened. */
        log_line(logfd, "d %s %lld", task, (long long)v);
        snprintf(path, sizeof path, "/v1/tasks/%s/versions/%lld", task, (long long)v);
        if (client_call(c, logfd, "DELETE", path, NULL, NULL, 0, NULL) == 200)
            log_line(logfd, "D %s %lld", task, (long long)v);
    } else if (pick < 9) {
        snprintf(path, sizeof path, "/v1/tasks/%s/predict%s", task, task[0] == 'm' ? "?task=t0" : "");
        client_call(c, logfd, "POST", path, "application/json", c->predict_body, strlen(c->predict_body), NULL);
    } else {
        snprintf(path, sizeof path, "/v1/tasks/%s/evaluate%s", task, task[0] == 'm' ? "?task=t0" : "");
        client_call(c, logfd, "POST", path, "application/octet-stream", c->train_body, c->train_len, NULL);
    }
}

static pid_t client_start(const crash_ctx *c, bool trainer, uint64_t seed)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid > 0) return pid;
    int logfd = open(c->acks, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (logfd < 0) _exit(8);
    rng r;
    rng_init(&r, seed);
    for (;;) {
        if (trainer) trainer_step(c, logfd, &r);
        else mutator_step(c, logfd, &r);
    }
}

/* ---- The parent: kill, check, restart ------------------------------------------------------- */

/* Applies the clients' new log lines to c->seen; fails on "E" lines (unexpected answers). */
static void read_acks(crash_ctx *c)
{
    FILE *f = fopen(c->acks, "r");
    if (!f) return;
    fseek(f, c->acks_read, SEEK_SET);
    char line[700], task[80];
    long long v;
    int st;
    while (fgets(line, sizeof line, f)) {
        c->acks_read += (long)strlen(line);
        if (line[0] == 'E' && sscanf(line, "E %d", &st) == 1) {
            fprintf(stderr, "# unexpected answer: %s", line);
            c->errors++;
            continue;
        }
        char kind = line[0];
        CHECK_MSG(sscanf(line + 1, "%79s %lld", task, &v) == 2, "bad client log line: %s", line);
        int ti = task_index(task);
        CHECK(ti >= 0 && v > 0 && v < CRASH_MAX_VERSIONS);
        if (kind == 'V') c->seen[ti][v] |= SEEN_ACKED, c->versions_acked++;
        else if (kind == 'd') c->seen[ti][v] |= SEEN_DELETE_ASKED;
        else if (kind == 'D') c->seen[ti][v] |= SEEN_DELETE_ACKED, c->deletes_acked++;
    }
    fclose(f);
}

static bool version_stored(store *s, const char *task, int64_t v)
{
    store_version *sv = NULL;
    int rc = store_version_get(s, task, v, 0, &sv, NULL);
    store_version_free(sv);
    return rc == 0;
}

/* The checks on the killed daemon's store (the daemon is not running). Returns whether a job was
 * queued or running at the kill. */
static bool check_store_after_kill(crash_ctx *c, int round)
{
    char path[600];
    snprintf(path, sizeof path, "%s/clad.db", c->d.state);
    clad_err e = {0};
    store *s = store_open(path, &e);
    CHECK_MSG(s != NULL, "round %d: the store does not open after the kill: %s", round, e.msg);
    CHECK_MSG(store_check(s, STORE_CHECK_FULL, &e) == 0, "round %d: store check after the kill: %s", round, e.msg);

    /* Acknowledged versions load with their sha256; acknowledged deletes stayed done. */
    for (size_t ti = 0; ti < CRASH_N_TASKS; ti++)
        for (int64_t v = 1; v < CRASH_MAX_VERSIONS; v++) {
            uint8_t f = c->seen[ti][v];
            if ((f & SEEN_ACKED) && !(f & SEEN_DELETE_ASKED)) {
                store_version *sv = NULL;
                int rc = store_version_get(s, crash_tasks[ti], v, STORE_WITH_BLOB, &sv, &e);
                CHECK_MSG(rc == 0, "round %d: acknowledged version %lld of %s: %s", round, (long long)v,
                          crash_tasks[ti], e.msg);
                store_version_free(sv);
            }
            if (f & SEEN_DELETE_ACKED)
                CHECK_MSG(!version_stored(s, crash_tasks[ti], v),
                          "round %d: version %lld of %s is back after its delete was acknowledged", round,
                          (long long)v, crash_tasks[ti]);
        }

    /* No task without a version, no alias or fusion source pointing at nothing. */
    store_task *tasks = NULL;
    size_t nt = 0;
    CHECK_MSG(store_tasks_list(s, &tasks, &nt, &e) == 0, "%s", e.msg);
    for (size_t i = 0; i < nt; i++) {
        CHECK_MSG(tasks[i].n_versions >= 1, "round %d: task %s has no version (created without one)", round,
                  tasks[i].name);
        store_alias *al = NULL;
        size_t na = 0;
        CHECK_MSG(store_aliases_list(s, tasks[i].name, &al, &na, &e) == 0, "%s", e.msg);
        for (size_t k = 0; k < na; k++)
            CHECK_MSG(version_stored(s, tasks[i].name, al[k].version), "round %d: alias %s of %s points at missing version %lld",
                      round, al[k].name, tasks[i].name, (long long)al[k].version);
        store_aliases_free(al);
        store_version *vs = NULL;
        size_t nv = 0;
        CHECK_MSG(store_versions_list(s, tasks[i].name, &vs, &nv, &e) == 0, "%s", e.msg);
        for (size_t k = 0; k < nv; k++) {
            if (strcmp(vs[k].kind, "fusion")) continue;
            for (size_t p = 0; p < vs[k].n_parents; p++)
                CHECK_MSG(version_stored(s, vs[k].parents[p].task, vs[k].parents[p].version),
                          "round %d: fusion version %lld of %s needs version %lld of %s, which was deleted", round,
                          (long long)vs[k].version, tasks[i].name, (long long)vs[k].parents[p].version,
                          vs[k].parents[p].task);
        }
        store_versions_free(vs, nv);
    }
    store_tasks_free(tasks, nt);

    store_job *jobs = NULL;
    size_t nj = 0;
    CHECK_MSG(store_jobs_list(s, NULL, 20, &jobs, &nj, &e) == 0, "%s", e.msg);
    bool in_job = false;
    for (size_t i = 0; i < nj; i++) in_job |= jobs[i].state == STORE_JOB_RUNNING;
    store_jobs_free(jobs, nj);
    store_close(s);
    return in_job;
}

/* Starts cladd and returns the seconds until it answers a prediction. */
static double restart(crash_ctx *c)
{
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    double t0 = now_s();
    daemon_start(&c->d, &o);
    int st = 0;
    while (now_s() - t0 < 10) {
        st = http_try(c->d.sock, "POST", "/v1/tasks/t0/predict", "application/json", c->predict_body,
                      strlen(c->predict_body), 2000, NULL);
        if (st == 200) break;
        sleep_ms(5);
    }
    double dt = now_s() - t0;
    CHECK_MSG(st == 200, "the restarted daemon does not predict (status %d); log:\n%s", st, daemon_log(&c->d));
    return dt;
}

/* After a restart, before new load: every job is final and every stored version is served. */
static void check_daemon_after_restart(crash_ctx *c, int round)
{
    char path[600];
    snprintf(path, sizeof path, "%s/clad.db", c->d.state);
    clad_err e = {0};
    store *s = store_open_reader(path, &e);
    CHECK_MSG(s != NULL, "%s", e.msg);
    /* A succeeded job is matched to its version by job id (a merge's or fusion's sources are other tasks). */
    store_job *jobs = NULL;
    size_t nj = 0;
    CHECK_MSG(store_jobs_list(s, NULL, 0, &jobs, &nj, &e) == 0, "%s", e.msg);
    int64_t max_id = nj ? jobs[0].id : 0; /* newest first */
    uint8_t *has_version = calloc((size_t)max_id + 1, 1);
    CHECK(has_version != NULL);
    for (size_t ti = 0; ti < CRASH_N_TASKS; ti++) {
        store_version *vs = NULL;
        size_t nv = 0;
        if (store_versions_list(s, crash_tasks[ti], &vs, &nv, NULL) != 0) continue;
        for (size_t k = 0; k < nv; k++)
            if (vs[k].job_id > 0 && vs[k].job_id <= max_id) has_version[vs[k].job_id] = 1;
        store_versions_free(vs, nv);
    }
    for (size_t i = 0; i < nj; i++) {
        const store_job *j = &jobs[i];
        CHECK_MSG(j->state != STORE_JOB_QUEUED && j->state != STORE_JOB_RUNNING,
                  "round %d: job %lld is still %s after the restart", round, (long long)j->id,
                  store_job_state_name(j->state));
        if (j->state != STORE_JOB_SUCCEEDED || has_version[j->id]) continue;
        bool delete_asked = false;
        for (size_t ti = 0; ti < CRASH_N_TASKS && j->result_version > 0 && j->result_version < CRASH_MAX_VERSIONS; ti++)
            delete_asked |= (c->seen[ti][j->result_version] & SEEN_DELETE_ASKED) != 0;
        CHECK_MSG(delete_asked, "round %d: %s job %lld succeeded with version %lld, which is not stored", round,
                  j->kind, (long long)j->id, (long long)j->result_version);
    }
    free(has_version);
    store_jobs_free(jobs, nj);

    /* The active version of every task and every fusion version (which loads its sources) predicts:
     * nothing they depend on is missing. */
    for (size_t ti = 0; ti < CRASH_N_TASKS; ti++) {
        store_version *vs = NULL;
        size_t nv = 0;
        int64_t active = 0;
        if (store_versions_list(s, crash_tasks[ti], &vs, &nv, NULL) != 0 || nv == 0) continue; /* not created yet */
        CHECK_MSG(store_alias_get(s, crash_tasks[ti], "active", &active, &e) == 0, "%s", e.msg);
        for (size_t k = 0; k < nv; k++) {
            if (vs[k].version != active && strcmp(vs[k].kind, "fusion")) continue;
            char q[160], *reply = NULL;
            snprintf(q, sizeof q, "/v1/tasks/%s/predict?version=%lld%s", crash_tasks[ti], (long long)vs[k].version,
                     ti == 4 ? "&task=t0" : "");
            int st = http_try(c->d.sock, "POST", q, "application/json", c->predict_body, strlen(c->predict_body),
                              5000, &reply);
            CHECK_MSG(st == 200, "round %d: %s answered %d: %s", round, q, st, reply ? reply : "");
            free(reply);
        }
        store_versions_free(vs, nv);
    }
    store_close(s);
}

/* Imports the base and trains the first version of every task, so the clients have something to
 * change from the start. */
static void crash_setup(crash_ctx *c)
{
    char base[600], data[600];
    snprintf(base, sizeof base, "%s/base.safetensors", test_tmpdir());
    snprintf(data, sizeof data, "%s/train.safetensors", test_tmpdir());
    snprintf(c->acks, sizeof c->acks, "%s/acks.log", test_tmpdir());
    model_config mc = {.kind = MODEL_MLP, .input_dim = CRASH_IN, .n_hidden = 1, .hidden = {16},
                       .n_classes = CRASH_CLASSES};
    write_random_base(base, &mc, 3);
    write_data(data, 240, 5);
    c->train_body = slurp(data, &c->train_len);
    int n = snprintf(c->predict_body, sizeof c->predict_body, "{\"inputs\": [[");
    for (int j = 0; j < CRASH_IN; j++) n += snprintf(c->predict_body + n, sizeof c->predict_body - (size_t)n, "%s0.%d", j ? "," : "", j);
    snprintf(c->predict_body + n, sizeof c->predict_body - (size_t)n, "]]}");

    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    daemon_start(&c->d, &o);
    size_t blen;
    char *bbody = slurp(base, &blen), *reply = NULL;
    int st = http_try(c->d.sock, "POST", "/v1/bases/mlp", "application/octet-stream", bbody, blen, 10000, &reply);
    CHECK_MSG(st == 201, "base import answered %d: %s", st, reply ? reply : "");
    free(bbody);
    free(reply);
    /* The fusion and the merge need their sources from the start. */
    for (int i = 0; i < 3; i++) {
        char path[160];
        snprintf(path, sizeof path, "/v1/tasks/t%d/train?follow=1&epochs=1&rank=fixed:2", i);
        st = http_try(c->d.sock, "POST", path, "application/octet-stream", c->train_body, c->train_len, 30000, &reply);
        CHECK_MSG(st == 202 && strstr(reply, "\"succeeded\""), "training t%d answered %d: %s", i, st, reply ? reply : "");
        free(reply);
    }
}

TEST_TIMEOUT(daemon_crash_sigkill_under_load_keeps_every_acknowledged_change, 600)
{
    static crash_ctx c;
    memset(&c, 0, sizeof c);
    const char *env = getenv("CLAD_CRASH_ROUNDS");
    int rounds = env && atoi(env) > 0 ? atoi(env) : CRASH_ROUNDS_DEFAULT;
    crash_setup(&c);
    rng r;
    uint64_t seed = (uint64_t)time(NULL);
    rng_init(&r, seed);
    fprintf(stderr, "# seed %llu, %d rounds\n", (unsigned long long)seed, rounds);
    double t_start = now_s();
    for (int round = 1; round <= rounds; round++) {
        pid_t clients[CRASH_TRAINERS + CRASH_MUTATORS];
        for (int k = 0; k < CRASH_TRAINERS + CRASH_MUTATORS; k++)
            clients[k] = client_start(&c, k < CRASH_TRAINERS, rng_next(&r));
        /* Long enough for jobs to reach their commit (a training takes ~0.1-0.5 s here). */
        sleep_ms(30 + (int)rng_below(&r, 900));
        CHECK_INT_EQ(daemon_stop(&c.d, SIGKILL, 5), 128 + SIGKILL);
        for (int k = 0; k < CRASH_TRAINERS + CRASH_MUTATORS; k++) {
            int status;
            CHECK(waitpid(clients[k], &status, 0) == clients[k]);
            CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "client %d ended with status %d", k, status);
        }
        read_acks(&c);
        c.kills_in_job += check_store_after_kill(&c, round);
        double dt = restart(&c);
        if (dt > c.worst_restart_s) c.worst_restart_s = dt;
        CHECK_MSG(dt < CRASH_SERVE_LIMIT_S, "round %d: serving again took %.2f s", round, dt);
        check_daemon_after_restart(&c, round);
    }
    CHECK_INT_EQ(daemon_stop(&c.d, SIGTERM, 10), 0);
    fprintf(stderr,
            "# %d kills in %.1f s (%d while a job ran), %d versions and %d deletes acknowledged, slowest "
            "restart to a prediction %.3f s\n",
            rounds, now_s() - t_start, c.kills_in_job, c.versions_acked, c.deletes_acked, c.worst_restart_s);
    CHECK_MSG(c.errors == 0, "%d requests got an answer outside the documented errors (listed above)", c.errors);
    free(c.train_body);
}
