/* The daemon's pieces in process: config parsing and paths, route tables, access decisions, percent
 * decoding, the NDJSON line splitter, and the job queue driven on a private libuv loop. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "daemon/client.h"
#include "daemon/config.h"
#include "daemon/http.h"
#include "daemon/jobs.h"
#include "daemon/log.h"
#include "daemon/router.h"
#include "tests/test.h"

/* --- config ------------------------------------------------------------------------------------------ */

TEST(daemon_config_sizes_and_durations)
{
    uint64_t v;
    CHECK_INT_EQ(config_parse_size("512M", &v), 0);
    CHECK_INT_EQ(v, 512ull << 20);
    CHECK_INT_EQ(config_parse_size("16K", &v), 0);
    CHECK_INT_EQ(v, 16384);
    CHECK_INT_EQ(config_parse_size("16KiB", &v), 0);
    CHECK_INT_EQ(v, 16384);
    CHECK_INT_EQ(config_parse_size("2g", &v), 0);
    CHECK_INT_EQ(v, 2ull << 30);
    CHECK_INT_EQ(config_parse_size("4096", &v), 0);
    CHECK_INT_EQ(v, 4096);
    const char *bad_sizes[] = {"", "K", "-1", "12X", "1.5M", "99999999999999999999", "17179869184G"};
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++)
        CHECK_MSG(config_parse_size(bad_sizes[i], &v) == CLAD_EINVAL, "size '%s' accepted", bad_sizes[i]);

    uint32_t ms;
    CHECK_INT_EQ(config_parse_duration_ms("10s", &ms), 0);
    CHECK_INT_EQ(ms, 10000);
    CHECK_INT_EQ(config_parse_duration_ms("250ms", &ms), 0);
    CHECK_INT_EQ(ms, 250);
    CHECK_INT_EQ(config_parse_duration_ms("2min", &ms), 0);
    CHECK_INT_EQ(ms, 120000);
    CHECK_INT_EQ(config_parse_duration_ms("3", &ms), 0);
    CHECK_INT_EQ(ms, 3000);
    const char *bad_durations[] = {"", "s", "5h", "-3s", "9999999999s"};
    for (size_t i = 0; i < sizeof bad_durations / sizeof bad_durations[0]; i++)
        CHECK_MSG(config_parse_duration_ms(bad_durations[i], &ms) == CLAD_EINVAL, "duration '%s' accepted",
                  bad_durations[i]);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

TEST(daemon_config_file_applies_or_names_the_bad_line)
{
    char path[300];
    snprintf(path, sizeof path, "%s/cladd.conf", test_tmpdir());
    cladd_config c;
    config_init(&c);
    CHECK_INT_EQ(c.max_body_bytes, 512ull << 20);
    CHECK_INT_EQ(c.max_header_bytes, 16384);
    CHECK_INT_EQ(c.max_connections, 256);
    CHECK_INT_EQ(c.header_timeout_ms, 10000);

    write_text(path, "# cladd settings\n\n  write_group = \"clad\"   # trailing comment\n"
                     "max_body_bytes=1G\nheader_timeout = 2s\nlog_level = debug\nmax_running_jobs = 2\n");
    clad_err err = {0};
    CHECK_INT_EQ(config_load_file(&c, path, &err), 0);
    CHECK_STR_EQ(c.write_group, "clad");
    CHECK_INT_EQ(c.max_body_bytes, 1ull << 30);
    CHECK_INT_EQ(c.header_timeout_ms, 2000);
    CHECK_INT_EQ(c.log_level, 7);
    CHECK_INT_EQ(c.max_running_jobs, 2);

    struct {
        const char *text, *want;
    } bad[] = {
        {"max_connections = 10\nnonsense\n", "line 2: expected key = value"},
        {"max_conections = 10\n", "line 1: unknown key 'max_conections'"},
        {"\n\nmax_connections = 0\n", "line 3: max_connections: 0 is outside 1..65536"},
        {"max_header_bytes = 100\n", "outside 1024..1048576"},
        {"write_group = bad name\n", "not a valid group name"},
        {"log_level = loud\n", "not one of error, warning, info, debug"},
        {"idle_timeout = soon\n", "not a duration"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cladd_config before = c;
        write_text(path, bad[i].text);
        clad_err e = {0};
        CHECK_INT_EQ(config_load_file(&c, path, &e), CLAD_EINVAL);
        CHECK_MSG(strstr(e.msg, bad[i].want) != NULL, "message '%s' lacks '%s'", e.msg, bad[i].want);
        CHECK_MSG(memcmp(&before, &c, sizeof c) == 0, "a bad file changed the configuration");
    }
    clad_err e = {0};
    CHECK_INT_EQ(config_load_file(&c, "/nonexistent/cladd.conf", &e), CLAD_EIO);
    CHECK(strstr(e.msg, "/nonexistent/cladd.conf") != NULL);
}

TEST(daemon_config_default_paths_follow_the_environment)
{
    cladd_config c;
    clad_err err = {0};
    unsetenv("RUNTIME_DIRECTORY");
    unsetenv("STATE_DIRECTORY");
    unsetenv("XDG_RUNTIME_DIR");
    unsetenv("XDG_STATE_HOME");

    setenv("RUNTIME_DIRECTORY", "/run/clad:/run/other", 1);
    setenv("STATE_DIRECTORY", "/var/lib/clad", 1);
    config_init(&c);
    CHECK_INT_EQ(config_resolve_paths(&c, &err), 0);
    CHECK_STR_EQ(c.socket_path, "/run/clad/clad.sock");
    CHECK_STR_EQ(c.state_dir, "/var/lib/clad");
    CHECK(!c.socket_dir_is_default);

    unsetenv("RUNTIME_DIRECTORY");
    unsetenv("STATE_DIRECTORY");
    setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
    setenv("XDG_STATE_HOME", "/home/u/.state", 1);
    config_init(&c);
    CHECK_INT_EQ(config_resolve_paths(&c, &err), 0);
    CHECK_STR_EQ(c.socket_path, "/run/user/1000/clad/clad.sock");
    CHECK_STR_EQ(c.state_dir, "/home/u/.state/clad");
    CHECK(c.socket_dir_is_default);

    unsetenv("XDG_RUNTIME_DIR");
    unsetenv("XDG_STATE_HOME");
    setenv("HOME", "/home/u", 1);
    config_init(&c);
    CHECK_INT_EQ(config_resolve_paths(&c, &err), 0);
    char want[64];
    snprintf(want, sizeof want, "/tmp/clad-%lu/clad.sock", (unsigned long)getuid());
    CHECK_STR_EQ(c.socket_path, want);
    CHECK_STR_EQ(c.state_dir, "/home/u/.local/state/clad");

    /* Command-line values are kept. */
    config_init(&c);
    snprintf(c.socket_path, sizeof c.socket_path, "/x/s.sock");
    snprintf(c.state_dir, sizeof c.state_dir, "/x/state");
    CHECK_INT_EQ(config_resolve_paths(&c, &err), 0);
    CHECK_STR_EQ(c.socket_path, "/x/s.sock");
    CHECK_STR_EQ(c.state_dir, "/x/state");

    /* A runtime directory too long for a socket path is an error, not a truncation. */
    char longdir[200];
    memset(longdir, 'd', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = '\0';
    setenv("RUNTIME_DIRECTORY", longdir, 1);
    config_init(&c);
    CHECK_INT_EQ(config_resolve_paths(&c, &err), CLAD_EINVAL);
    CHECK(strstr(err.msg, "longer") != NULL);
    unsetenv("RUNTIME_DIRECTORY");
    unsetenv("HOME");
    config_init(&c);
    snprintf(c.socket_path, sizeof c.socket_path, "/x/s.sock");
    clad_err e2 = {0};
    CHECK_INT_EQ(config_resolve_paths(&c, &e2), CLAD_EINVAL);
    CHECK(strstr(e2.msg, "--state-dir") != NULL);
}

/* --- router ------------------------------------------------------------------------------------------- */

static void nop_handler(http_req *req) { (void)req; }

static const route test_routes[] = {
    {"GET", "/v1/tasks", ROUTE_READ, nop_handler, NULL, ""},
    {"GET", "/v1/tasks/{name}", ROUTE_READ, nop_handler, NULL, ""},
    {"DELETE", "/v1/tasks/{name}", ROUTE_WRITE, nop_handler, NULL, ""},
    {"GET", "/v1/tasks/stats", ROUTE_READ, nop_handler, NULL, ""},
    {"POST", "/v1/tasks/{name}/train", ROUTE_WRITE | ROUTE_JSON, nop_handler, NULL, ""},
    {"GET", "/v1/tasks/{name}/versions/{v}", ROUTE_READ, nop_handler, NULL, ""},
    ROUTE_END,
};

TEST(daemon_router_matches_patterns_and_lists_allowed_methods)
{
    router *rt = router_create();
    clad_err err = {0};
    CHECK_INT_EQ(router_add(rt, test_routes, &err), 0);
    CHECK_INT_EQ(router_count(rt), 6);
    size_t idx = 99;
    char allow[64];
    CHECK_INT_EQ(router_match(rt, "GET", "/v1/tasks", NULL, &idx, allow, sizeof allow), ROUTER_FOUND);
    CHECK_INT_EQ(idx, 0);
    CHECK_INT_EQ(router_match(rt, "GET", "/v1/tasks/rot15", NULL, &idx, allow, sizeof allow), ROUTER_FOUND);
    CHECK_INT_EQ(idx, 1);
    /* The literal segment wins over {name}. */
    CHECK_INT_EQ(router_match(rt, "GET", "/v1/tasks/stats", NULL, &idx, allow, sizeof allow), ROUTER_FOUND);
    CHECK_INT_EQ(idx, 3);
    CHECK_INT_EQ(router_match(rt, "GET", "/v1/tasks/a/versions/3", NULL, &idx, allow, sizeof allow), ROUTER_FOUND);
    CHECK_INT_EQ(idx, 5);
    CHECK_INT_EQ(router_match(rt, "PUT", "/v1/tasks/rot15", NULL, &idx, allow, sizeof allow), ROUTER_NO_METHOD);
    CHECK_STR_EQ(allow, "GET, DELETE");
    CHECK_INT_EQ(router_match(rt, "GET", "/v1/tasks/a/train", NULL, &idx, allow, sizeof allow), ROUTER_NO_METHOD);
    CHECK_STR_EQ(allow, "POST");
    const char *missing[] = {"/v1/task", "/v1/tasks/", "/v1//tasks", "/", "/v1/tasks/a/b", "/v2/tasks", "v1/tasks"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++)
        CHECK_MSG(router_match(rt, "GET", missing[i], NULL, &idx, allow, sizeof allow) == ROUTER_NO_PATH,
                  "%s matched", missing[i]);
    router_destroy(rt);
}

TEST(daemon_router_rejects_malformed_tables)
{
    struct {
        route r;
        const char *want;
    } bad[] = {
        {{"GET", "v1/x", 0, nop_handler, NULL, ""}, "must start with '/'"},
        {{"GET", "/v1/{x", 0, nop_handler, NULL, ""}, "bad parameter"},
        {{"GET", "/v1//x", 0, nop_handler, NULL, ""}, "empty segment"},
        {{"GET", "/v1/x/", 0, nop_handler, NULL, ""}, "trailing"},
        {{"FETCH", "/v1/x", 0, nop_handler, NULL, ""}, "unknown method"},
        {{"GET", "/v1/a{b}", 0, nop_handler, NULL, ""}, "braces"},
        {{"GET", "/v1/x", 0, NULL, NULL, ""}, "handler"},
        {{"GET", "/v1/tasks", 0, nop_handler, NULL, ""}, "defined twice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        router *rt = router_create();
        clad_err err = {0};
        CHECK_INT_EQ(router_add(rt, test_routes, &err), 0);
        route table[2] = {bad[i].r, ROUTE_END};
        CHECK_INT_EQ(router_add(rt, table, &err), CLAD_EINVAL);
        CHECK_MSG(strstr(err.msg, bad[i].want) != NULL, "message '%s' lacks '%s'", err.msg, bad[i].want);
        router_destroy(rt);
    }
}

TEST(daemon_router_write_access_decisions)
{
    log_set_level(LOG_LEVEL_ERROR); /* the queue's info lines would only be noise here */
    router *rt = router_create();
    char reason[200];
    http_peer root = {.pid = 1, .uid = 0, .gid = 0, .n_groups = 0};
    CHECK(router_peer_may_write(rt, &root, reason, sizeof reason));
    http_peer self = {.pid = 1, .uid = geteuid(), .gid = 4242, .n_groups = 0};
    CHECK(router_peer_may_write(rt, &self, reason, sizeof reason));
    uid_t other_uid = geteuid() == 54321 ? 54322 : 54321;
    http_peer other = {.pid = 1, .uid = other_uid, .gid = 4242, .n_groups = 1, .groups = {4243}};
    CHECK(!router_peer_may_write(rt, &other, reason, sizeof reason));
    CHECK(strstr(reason, "no write_group") != NULL);

    router_set_write_group(rt, "root"); /* gid 0 */
    CHECK(!router_peer_may_write(rt, &other, reason, sizeof reason));
    CHECK(strstr(reason, "group 'root'") != NULL);
    http_peer primary = other;
    primary.gid = 0;
    CHECK(router_peer_may_write(rt, &primary, reason, sizeof reason));
    http_peer supplementary = other;
    supplementary.n_groups = 3;
    supplementary.groups[0] = 5;
    supplementary.groups[1] = 0;
    supplementary.groups[2] = 7;
    CHECK(router_peer_may_write(rt, &supplementary, reason, sizeof reason));
    router_set_write_group(rt, "no-such-group-here");
    CHECK(!router_peer_may_write(rt, &supplementary, reason, sizeof reason));
    router_destroy(rt);
}

TEST(daemon_http_helpers)
{
    char out[64];
    CHECK_INT_EQ(http_percent_decode(out, "a%20b%2Fc", 9, false), 5);
    CHECK_STR_EQ(out, "a b/c");
    CHECK_INT_EQ(http_percent_decode(out, "x+y", 3, false), 3);
    CHECK_STR_EQ(out, "x+y");
    CHECK_INT_EQ(http_percent_decode(out, "x+y", 3, true), 3);
    CHECK_STR_EQ(out, "x y");
    CHECK_INT_EQ(http_percent_decode(out, "%zz", 3, false), -1);
    CHECK_INT_EQ(http_percent_decode(out, "ab%2", 4, false), -1);
    CHECK_INT_EQ(http_percent_decode(out, "ab%", 3, false), -1);
    CHECK_INT_EQ(http_percent_decode(out, "%00", 3, false), -1);

    CHECK_INT_EQ(http_status_for_code(CLAD_EINVAL), 400);
    CHECK_INT_EQ(http_status_for_code(CLAD_EDENIED), 403);
    CHECK_INT_EQ(http_status_for_code(CLAD_ENOTFOUND), 404);
    CHECK_INT_EQ(http_status_for_code(CLAD_ECONFLICT), 409);
    CHECK_INT_EQ(http_status_for_code(CLAD_ETOOLARGE), 413);
    CHECK_INT_EQ(http_status_for_code(CLAD_EMEDIA), 415);
    CHECK_INT_EQ(http_status_for_code(CLAD_EBUSY), 503);
    CHECK_INT_EQ(http_status_for_code(CLAD_EINTERNAL), 500);
    CHECK_INT_EQ(http_status_for_code(CLAD_ECORRUPT), 500);
    CHECK_STR_EQ(http_status_text(404), "Not Found");
    CHECK_STR_EQ(http_status_text(799), "Unknown");

    json_t *e = http_error_json("not_found", "no job 3");
    char *s = json_dumps(e, JSON_COMPACT);
    CHECK_STR_EQ(s, "{\"error\":{\"code\":\"not_found\",\"message\":\"no job 3\"}}");
    free(s);
    json_decref(e);
}

typedef struct line_log {
    char text[256];
    int n;
} line_log;

static int collect_line(char *line, size_t len, void *data)
{
    line_log *l = data;
    size_t used = strlen(l->text);
    snprintf(l->text + used, sizeof l->text - used, "[%s]", line);
    l->n++;
    return 0;
}

TEST(daemon_client_line_splitter)
{
    line_log log = {{0}, 0};
    client_lines lines = {.on_line = collect_line, .data = &log, .max_line = 16};
    const char *pieces[] = {"a\nb", "b\r\n", "", "\nccc"};
    for (size_t i = 0; i < 4; i++) CHECK_INT_EQ(client_lines_feed(pieces[i], strlen(pieces[i]), &lines), 0);
    CHECK_STR_EQ(log.text, "[a][bb][]");
    CHECK_INT_EQ(client_lines_finish(&lines), 0);
    CHECK_STR_EQ(log.text, "[a][bb][][ccc]");
    client_lines small = {.on_line = collect_line, .data = &log, .max_line = 4};
    CHECK(client_lines_feed("abcdefgh", 8, &small) != 0);
    CHECK(small.overflow);
    client_lines_finish(&small);
}

/* --- job queue in process ----------------------------------------------------------------------------- */

static atomic_int gate_open;

/* Posts one progress event, then waits for the gate or a stop request. */
static int gate_run(job *j, void *arg, json_t **result, clad_err *err)
{
    job_post(j, json_pack("{s:i,s:i}", "done", 1, "total", 2));
    while (!atomic_load(&gate_open)) {
        if (job_should_stop(j)) return clad_err_set(err, CLAD_ECANCELLED, "stopped");
        usleep(1000);
    }
    *result = json_pack("{s:s}", "lane", (const char *)arg);
    return 0;
}

static int n_freed;
static void count_free(void *arg)
{
    (void)arg;
    n_freed++;
}

static const job_kind gate_kind = {.name = "gate", .run = gate_run, .free_arg = count_free};

typedef struct hook_log {
    char text[1024];
    bool refuse;
} hook_log;

static int record_state(job *j, void *data, clad_err *err)
{
    hook_log *h = data;
    if (h->refuse && job_get_state(j) == JOB_QUEUED) return clad_err_set(err, CLAD_EIO, "store is read-only");
    size_t used = strlen(h->text);
    snprintf(h->text + used, sizeof h->text - used, "%llu:%s ", (unsigned long long)job_id(j),
             job_state_name(job_get_state(j)));
    return 0;
}

static job *submit(job_queue *q, const char *lane, clad_err *err)
{
    job_spec spec = {.kind = &gate_kind, .lane = lane, .arg = (void *)lane, .owner_uid = 0};
    job *j = NULL;
    return job_submit(q, &spec, &j, err) == 0 ? j : NULL;
}

/* Runs the loop until cond(q) holds or 5 s pass. */
static void run_until(uv_loop_t *loop, bool (*cond)(void *), void *arg)
{
    for (int i = 0; i < 5000 && !cond(arg); i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    CHECK_MSG(cond(arg), "condition not reached within 5 s");
}

static bool all_final(void *arg)
{
    unsigned c[JOB_STATE_COUNT];
    job_queue_counts(arg, c);
    return c[JOB_QUEUED] == 0 && c[JOB_RUNNING] == 0;
}

TEST(daemon_jobs_lanes_limits_and_hooks)
{
    log_set_level(LOG_LEVEL_ERROR); /* the queue's info lines would only be noise here */
    uv_loop_t loop;
    uv_loop_init(&loop);
    hook_log h = {{0}, false};
    job_queue_options o = {.max_running = 1, .max_queued = 2, .max_compute = 4, .history = 10,
                           .hooks = {.on_state = record_state, .data = &h}};
    job_queue *q = job_queue_create(&loop, &o);
    atomic_store(&gate_open, 0);
    n_freed = 0;
    clad_err err = {0};
    job *a = submit(q, "a", &err), *b = submit(q, "b", &err), *c = submit(q, "a", &err);
    CHECK(a && b && c);
    CHECK_INT_EQ(job_get_state(a), JOB_RUNNING);
    CHECK_INT_EQ(job_get_state(b), JOB_QUEUED); /* lane b is free, but only one job runs at a time */
    CHECK_INT_EQ(job_get_state(c), JOB_QUEUED);
    clad_err busy = {0};
    CHECK(submit(q, "z", &busy) == NULL);
    CHECK_INT_EQ(busy.code, CLAD_EBUSY);
    clad_err lane_err = {0};
    CHECK(submit(q, "", &lane_err) == NULL);
    CHECK_INT_EQ(lane_err.code, CLAD_EINVAL);

    atomic_store(&gate_open, 1);
    run_until(&loop, all_final, q);
    /* FIFO among free lanes: b (older) before c. */
    CHECK_STR_EQ(h.text, "1:queued 1:running 2:queued 3:queued 1:succeeded 2:running 2:succeeded 3:running 3:succeeded ");
    CHECK_INT_EQ(n_freed, 3);
    json_t *ja = job_to_json(a);
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(ja, "result"), "lane")), "a");
    CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(ja, "progress"), "done")), 1);
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(ja, "progress"), "event")), "progress");
    json_decref(ja);

    /* A store that cannot record the job refuses the submission; the arg stays the caller's. */
    h.refuse = true;
    clad_err refused = {0};
    CHECK(submit(q, "a", &refused) == NULL);
    CHECK_INT_EQ(refused.code, CLAD_EIO);
    CHECK(job_find(q, 4) == NULL);
    CHECK_INT_EQ(n_freed, 3);
    h.refuse = false;
    job *d = submit(q, "a", &err);
    CHECK(d != NULL);
    CHECK_INT_EQ(job_id(d), 4); /* the refused submission used no id */
    run_until(&loop, all_final, q);

    /* Restored history keeps ids unique. */
    job_record rec = {.id = 100, .kind = "train", .lane = "base1", .state = JOB_FAILED, .created = 1.0,
                      .error_code = CLAD_EIO, .error_message = "disk"};
    CHECK_INT_EQ(job_queue_restore(q, &rec, &err), 0);
    job_record dup = rec;
    clad_err dup_err = {0};
    CHECK_INT_EQ(job_queue_restore(q, &dup, &dup_err), CLAD_ECONFLICT);
    job *e = submit(q, "a", &err);
    CHECK_INT_EQ(job_id(e), 101);
    run_until(&loop, all_final, q);
    json_t *jr = job_to_json(job_find(q, 100));
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(jr, "error"), "code")), "io_error");
    json_decref(jr);

    job_queue_shutdown(q, NULL, NULL);
    job_queue_destroy(q);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT_EQ(uv_loop_close(&loop), 0);
}

typedef struct follow_log {
    int progress, ends;
    char last_state[32];
    job_follower *self;
    bool unfollow_on_first;
} follow_log;

static void on_event(job *j, const json_t *ev, bool last, void *data)
{
    follow_log *f = data;
    if (last) {
        f->ends++;
        snprintf(f->last_state, sizeof f->last_state, "%s",
                 json_string_value(json_object_get(json_object_get(ev, "job"), "state")));
    } else {
        f->progress++;
        if (f->unfollow_on_first) job_unfollow(f->self); /* safe from inside the callback */
    }
}

static bool is_running(void *arg) { return job_get_state(arg) == JOB_RUNNING; }

static int shutdown_calls;
static void on_shutdown_done(job_queue *q, void *data)
{
    shutdown_calls++;
}

static bool shutdown_done(void *arg) { return shutdown_calls > 0; }

TEST(daemon_jobs_cancel_follow_and_shutdown)
{
    log_set_level(LOG_LEVEL_ERROR); /* the queue's info lines would only be noise here */
    uv_loop_t loop;
    uv_loop_init(&loop);
    job_queue_options o = {.max_running = 1, .max_queued = 8, .max_compute = 4, .history = 10};
    job_queue *q = job_queue_create(&loop, &o);
    atomic_store(&gate_open, 0);
    clad_err err = {0};
    job *a = submit(q, "a", &err), *b = submit(q, "a", &err);
    follow_log fa = {0}, fb = {.unfollow_on_first = true};
    CHECK(job_follow(a, on_event, &fa) != NULL);
    fb.self = job_follow(a, on_event, &fb);
    CHECK(fb.self != NULL);

    CHECK_INT_EQ(job_cancel(q, b, &err), 0); /* queued: at once */
    CHECK_INT_EQ(job_get_state(b), JOB_CANCELLED);
    CHECK_INT_EQ(job_cancel(q, a, &err), 0); /* running: asked */
    CHECK(job_cancel_requested(a));
    run_until(&loop, all_final, q);
    CHECK_INT_EQ(job_get_state(a), JOB_CANCELLED);
    CHECK_INT_EQ(fa.progress, 1);
    CHECK_INT_EQ(fa.ends, 1);
    CHECK_STR_EQ(fa.last_state, "cancelled");
    CHECK_INT_EQ(fb.progress, 1);
    CHECK_INT_EQ(fb.ends, 0); /* unfollowed itself during its first event */
    clad_err conflict = {0};
    CHECK_INT_EQ(job_cancel(q, a, &conflict), CLAD_ECONFLICT);
    CHECK(job_follow(a, on_event, &fa) == NULL); /* finished: nothing to follow */

    /* Stopping: the queued job is interrupted at once, the running one when it returns. */
    job *c = submit(q, "a", &err), *d = submit(q, "a", &err);
    run_until(&loop, is_running, c);
    shutdown_calls = 0;
    job_queue_shutdown(q, on_shutdown_done, NULL);
    CHECK_INT_EQ(job_get_state(d), JOB_INTERRUPTED);
    CHECK_INT_EQ(shutdown_calls, 0); /* never inside the call */
    clad_err stopping = {0};
    CHECK(submit(q, "a", &stopping) == NULL);
    CHECK_INT_EQ(stopping.code, CLAD_EBUSY);
    run_until(&loop, shutdown_done, NULL);
    CHECK_INT_EQ(job_get_state(c), JOB_INTERRUPTED);
    CHECK_INT_EQ(shutdown_calls, 1);
    job_queue_destroy(q);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT_EQ(uv_loop_close(&loop), 0);
}

static int compute_sleep(void *arg, clad_err *err)
{
    usleep(20000);
    return *(int *)arg == 3 ? clad_err_set(err, CLAD_EINVAL, "task 3 fails") : 0;
}

static int compute_done_count, compute_fail_count;
static void compute_finished(void *arg, int status, const clad_err *err)
{
    compute_done_count++;
    if (status == CLAD_EINVAL && strstr(err->msg, "task 3")) compute_fail_count++;
}

static bool computes_done(void *arg) { return compute_done_count == 4; }

TEST(daemon_jobs_compute_tasks_and_history)
{
    log_set_level(LOG_LEVEL_ERROR); /* the queue's info lines would only be noise here */
    uv_loop_t loop;
    uv_loop_init(&loop);
    job_queue_options o = {.max_running = 1, .max_queued = 8, .max_compute = 4, .history = 2};
    job_queue *q = job_queue_create(&loop, &o);
    static int ids[5] = {0, 1, 2, 3, 4};
    clad_err err = {0};
    compute_done_count = compute_fail_count = 0;
    for (int i = 0; i < 4; i++) CHECK_INT_EQ(job_queue_compute(q, compute_sleep, compute_finished, &ids[i], &err), 0);
    clad_err busy = {0};
    CHECK_INT_EQ(job_queue_compute(q, compute_sleep, compute_finished, &ids[4], &busy), CLAD_EBUSY);
    CHECK_INT_EQ(job_queue_compute_count(q), 4);
    run_until(&loop, computes_done, NULL);
    CHECK_INT_EQ(compute_fail_count, 1);
    CHECK_INT_EQ(job_queue_compute_count(q), 0);

    /* Only the newest `history` finished jobs are kept. */
    atomic_store(&gate_open, 1);
    for (int i = 0; i < 4; i++) {
        CHECK(submit(q, "h", &err) != NULL);
        run_until(&loop, all_final, q);
    }
    CHECK(job_find(q, 1) == NULL && job_find(q, 2) == NULL);
    CHECK(job_find(q, 3) != NULL && job_find(q, 4) != NULL);
    json_t *list = job_queue_list_json(q, -1, NULL, 100);
    CHECK_INT_EQ(json_array_size(list), 2);
    CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(list, 0), "id")), 4);
    json_decref(list);
    job_queue_shutdown(q, NULL, NULL);
    job_queue_destroy(q);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT_EQ(uv_loop_close(&loop), 0);
}
