/* The daemon's jobs, signals, systemd notifications, access control, metrics and the clad CLI, end to
 * end through the real socket. Jobs here are the test-only sleep jobs (--enable-test-routes). */
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/daemon_util.h"
#include "tests/test.h"

#define JSON_HDR "-H 'Content-Type: application/json' "

TEST(daemon_job_follow_streams_ndjson)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    curl_stream s;
    stream_open(&s, &d, "POST", "/v1/debug/sleep-job?follow=1",
                JSON_HDR "-D " "/dev/stderr -d '{\"steps\": 5, \"step_ms\": 30}' 2>/dev/null");
    char *line = stream_line(&s, 3000);
    CHECK(line != NULL);
    json_t *first = json_or_fail(line);
    free(line);
    CHECK_STR_EQ(json_string_value(json_object_get(first, "event")), "job");
    json_t *job = json_object_get(first, "job");
    CHECK_INT_EQ(json_integer_value(json_object_get(job, "id")), 1);
    CHECK_STR_EQ(json_string_value(json_object_get(job, "kind")), "sleep");
    json_decref(first);
    for (int step = 1; step <= 5; step++) {
        line = stream_line(&s, 3000);
        CHECK(line != NULL);
        json_t *ev = json_or_fail(line);
        free(line);
        CHECK_STR_EQ(json_string_value(json_object_get(ev, "event")), "progress");
        CHECK_INT_EQ(json_integer_value(json_object_get(ev, "job")), 1);
        CHECK_INT_EQ(json_integer_value(json_object_get(ev, "done")), step);
        CHECK_INT_EQ(json_integer_value(json_object_get(ev, "total")), 5);
        json_decref(ev);
    }
    line = stream_line(&s, 3000);
    CHECK(line != NULL);
    json_t *end = json_or_fail(line);
    free(line);
    CHECK_STR_EQ(json_string_value(json_object_get(end, "event")), "end");
    CHECK_STR_EQ(state_of(json_object_get(end, "job")), "succeeded");
    CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(json_object_get(end, "job"), "result"), "steps")), 5);
    json_decref(end);
    CHECK(stream_line(&s, 2000) == NULL); /* the stream ends with the job */
    stream_close(&s);

    /* Following a finished job: its snapshot, then the end line at once. */
    char *body, *hdrs;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs/1?follow=1", NULL, &body, &hdrs), 200);
    CHECK(strstr(hdrs, "Content-Type: application/x-ndjson") != NULL);
    CHECK(strstr(hdrs, "Transfer-Encoding: chunked") != NULL);
    char *nl = strchr(body, '\n');
    CHECK(nl && strstr(body, "\"event\":\"job\"") == body + 1 && strstr(nl, "\"event\":\"end\""));
    free(body);
    free(hdrs);
    /* Path parameters are percent-decoded. */
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs/%31", NULL, &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_job_cancel_takes_effect_within_a_step)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    long long id = submit_sleep(&d, "{\"steps\": 100, \"step_ms\": 100}");
    curl_stream s;
    stream_open(&s, &d, "GET", "/v1/jobs/1?follow=1", NULL);
    json_decref(stream_until(&s, "\"progress\"", 3000));
    double t0 = now_s();
    char *body;
    CHECK_INT_EQ(curl_req(&d, "DELETE", "/v1/jobs/1", NULL, &body, NULL), 202);
    json_t *j = json_or_fail(body);
    CHECK(json_is_true(json_object_get(j, "cancel_requested")));
    json_decref(j);
    free(body);
    json_t *end = stream_until(&s, "\"end\"", 3000);
    double dt = now_s() - t0;
    CHECK_MSG(dt < 0.35, "cancel took %.3f s; a step is 0.1 s", dt);
    json_t *job = json_object_get(end, "job");
    CHECK_STR_EQ(state_of(job), "cancelled");
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(job, "error"), "code")), "cancelled");
    CHECK(json_integer_value(json_object_get(json_object_get(job, "progress"), "done")) < 10);
    json_decref(end);
    stream_close(&s);

    j = get_job(&d, id);
    CHECK_STR_EQ(state_of(j), "cancelled");
    json_decref(j);
    CHECK_INT_EQ(curl_req(&d, "DELETE", "/v1/jobs/1", NULL, &body, NULL), 409);
    CHECK_STR_EQ(error_code_of(body), "conflict");
    free(body);
    CHECK_INT_EQ(curl_req(&d, "DELETE", "/v1/jobs/77", NULL, &body, NULL), 404);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_job_lanes_queue_and_final_states)
{
    daemon_proc d;
    daemon_opts o = {.config = "max_running_jobs = 2\n"};
    daemon_start(&d, &o);
    /* a and c run long enough (1.2 s) for the checks below on a loaded machine. */
    long long a = submit_sleep(&d, "{\"steps\": 8, \"step_ms\": 150, \"lane\": \"x\"}");
    long long b = submit_sleep(&d, "{\"steps\": 2, \"step_ms\": 10, \"lane\": \"x\"}");
    long long c = submit_sleep(&d, "{\"steps\": 8, \"step_ms\": 150, \"lane\": \"y\"}");
    long long e = submit_sleep(&d, "{\"steps\": 3, \"step_ms\": 10, \"lane\": \"x\", \"fail_at\": 2}");
    json_t *ja = get_job(&d, a), *jb = get_job(&d, b), *jc = get_job(&d, c), *je = get_job(&d, e);
    CHECK_STR_EQ(state_of(ja), "running");
    CHECK_STR_EQ(state_of(jb), "queued"); /* lane x is busy */
    CHECK_STR_EQ(state_of(jc), "running"); /* lane y is free and a second slot is open */
    CHECK_STR_EQ(state_of(je), "queued");
    json_decref(ja);
    json_decref(jb);
    json_decref(jc);
    json_decref(je);

    char *body;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs?state=queued", NULL, &body, NULL), 200);
    json_t *list = json_or_fail(body);
    json_t *jobs = json_object_get(list, "jobs");
    CHECK_INT_EQ(json_array_size(jobs), 2);
    CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(jobs, 0), "id")), e); /* newest first */
    json_decref(list);
    free(body);

    /* A queued job is cancelled at once. */
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", b);
    CHECK_INT_EQ(curl_req(&d, "DELETE", path, NULL, &body, NULL), 200);
    CHECK_STR_EQ(state_of(json_or_fail(body)), "cancelled");
    free(body);

    ja = wait_final(&d, a, 10);
    jc = wait_final(&d, c, 10);
    je = wait_final(&d, e, 10);
    CHECK_STR_EQ(state_of(ja), "succeeded");
    CHECK_STR_EQ(state_of(jc), "succeeded");
    CHECK_STR_EQ(state_of(je), "failed");
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(je, "error"), "code")), "invalid_input");
    CHECK(strstr(json_string_value(json_object_get(json_object_get(je, "error"), "message")), "step 2") != NULL);
    /* e ran in lane x only after a finished (RFC 3339 UTC strings compare as times). */
    CHECK(strcmp(json_string_value(json_object_get(je, "started")),
                 json_string_value(json_object_get(ja, "finished"))) >= 0);
    json_decref(ja);
    json_decref(jc);
    json_decref(je);

    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs?lane=x&limit=2", NULL, &body, NULL), 200);
    list = json_or_fail(body);
    CHECK_INT_EQ(json_array_size(json_object_get(list, "jobs")), 2);
    json_decref(list);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs?state=bogus", NULL, &body, NULL), 400);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_compute_is_not_blocked_by_a_running_job)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    long long id = submit_sleep(&d, "{\"steps\": 30, \"step_ms\": 50}");
    json_t *j = get_job(&d, id);
    CHECK_STR_EQ(state_of(j), "running");
    json_decref(j);
    for (int i = 0; i < 4; i++) {
        char *body;
        double t0 = now_s();
        CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/compute", JSON_HDR "-d '{\"ms\": 50}'", &body, NULL), 200);
        double dt = now_s() - t0;
        json_t *r = json_or_fail(body);
        double waited = json_number_value(json_object_get(r, "waited_ms"));
        CHECK_MSG(dt < 0.4 && waited < 100, "a 50 ms computation took %.3f s (waited %.1f ms) beside a job", dt,
                  waited);
        json_decref(r);
        free(body);
    }
    j = get_job(&d, id);
    CHECK_STR_EQ(state_of(j), "running");
    json_decref(j);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST_TIMEOUT(daemon_concurrent_clients_while_a_job_runs, 60)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    submit_sleep(&d, "{\"steps\": 40, \"step_ms\": 50}");
    enum { CLIENTS = 32, EACH = 5 };
    pid_t kids[CLIENTS];
    double t0 = now_s();
    for (int i = 0; i < CLIENTS; i++) {
        fflush(stdout);
        kids[i] = fork();
        CHECK(kids[i] >= 0);
        if (kids[i] == 0) {
            char cmd[2048];
            int n = snprintf(cmd, sizeof cmd, "curl -s -o /dev/null -w '%%{http_code}\\n' --unix-socket '%s'", d.sock);
            for (int k = 0; k < EACH; k++) n += snprintf(cmd + n, sizeof cmd - (size_t)n, " http://cladd/v1/health");
            FILE *p = popen(cmd, "r");
            if (!p) _exit(2);
            char line[32];
            int ok = 0;
            while (fgets(line, sizeof line, p))
                if (!strcmp(line, "200\n")) ok++;
            int st = pclose(p);
            _exit(ok == EACH && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1);
        }
    }
    int failed = 0;
    for (int i = 0; i < CLIENTS; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
    }
    double dt = now_s() - t0;
    CHECK_MSG(failed == 0, "%d of %d clients did not get all their answers", failed, CLIENTS);
    CHECK_MSG(dt < 10, "%d clients took %.1f s", CLIENTS, dt);
    char *body;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/metrics", NULL, &body, NULL), 200);
    char want[128];
    snprintf(want, sizeof want, "clad_http_requests_total{method=\"GET\",route=\"/v1/health\",code=\"200\"} %d\n",
             CLIENTS * EACH);
    CHECK_MSG(strstr(body, want) != NULL, "metrics lack %s", want);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_sigterm_interrupts_the_running_job_and_exits_0)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    curl_stream s;
    stream_open(&s, &d, "POST", "/v1/debug/sleep-job?follow=1", JSON_HDR "-d '{\"steps\": 100, \"step_ms\": 50}'");
    json_decref(stream_until(&s, "\"done\":2", 3000));
    double t0 = now_s();
    kill(d.pid, SIGTERM);
    json_t *end = stream_until(&s, "\"end\"", 3000);
    CHECK_STR_EQ(state_of(json_object_get(end, "job")), "interrupted");
    json_decref(end);
    CHECK(stream_line(&s, 2000) == NULL);
    stream_close(&s);
    int rc = daemon_wait(&d, 5);
    double dt = now_s() - t0;
    CHECK_INT_EQ(rc, 0);
    CHECK_MSG(dt < 1.5, "stopping took %.2f s with a 50 ms step", dt);
    CHECK_MSG(access(d.sock, F_OK) != 0, "socket file left behind");
    char *log = daemon_log(&d);
    CHECK_MSG(strstr(log, "interrupted") && strstr(log, "stopped"), "log:\n%s", log);
    free(log);
}

/* --- systemd notifications -------------------------------------------------------------------------- */

static int notify_listener(char *path, size_t size)
{
    snprintf(path, size, "%s/notify.sock", test_tmpdir());
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%.*s", (int)sizeof a.sun_path - 1, path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    return fd;
}

/* Appends datagrams to log until one contains needle or the timeout passes. */
static bool notify_wait(int fd, char *log, size_t size, const char *needle, int timeout_ms)
{
    double deadline = now_s() + timeout_ms / 1000.0;
    while (!strstr(log, needle)) {
        int left = (int)((deadline - now_s()) * 1000);
        if (left <= 0) return false;
        struct timeval tv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buf[1024];
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0) continue;
        buf[n] = '\0';
        size_t used = strlen(log);
        snprintf(log + used, size - used, "%s\n", buf);
    }
    return true;
}

TEST(daemon_notify_ready_status_watchdog_stopping)
{
    char path[300], env_notify[400];
    int fd = notify_listener(path, sizeof path);
    snprintf(env_notify, sizeof env_notify, "NOTIFY_SOCKET=%s", path);
    const char *env[] = {env_notify, "WATCHDOG_USEC=100000", "WATCHDOG_PID=self", NULL};
    daemon_proc d;
    daemon_opts o = {.env = env};
    daemon_start(&d, &o);
    static char log[65536];
    CHECK_MSG(notify_wait(fd, log, sizeof log, "READY=1", 3000), "no READY=1; got:\n%s", log);
    CHECK(strstr(log, "STATUS=ready") != NULL);
    CHECK_MSG(notify_wait(fd, log, sizeof log, "WATCHDOG=1", 1000), "no WATCHDOG=1 within 1 s; got:\n%s", log);
    /* Long enough to outlast the 250 ms STATUS coalescing. */
    submit_sleep(&d, "{\"steps\": 10, \"step_ms\": 50}");
    CHECK_MSG(notify_wait(fd, log, sizeof log, "STATUS=sleep job 1: step", 3000), "no job STATUS; got:\n%s", log);
    /* The reload handshake. */
    kill(d.pid, SIGHUP);
    CHECK_MSG(notify_wait(fd, log, sizeof log, "RELOADING=1\nMONOTONIC_USEC=", 3000), "no RELOADING=1; got:\n%s",
              log);
    kill(d.pid, SIGTERM);
    CHECK_MSG(notify_wait(fd, log, sizeof log, "STOPPING=1", 3000), "no STOPPING=1; got:\n%s", log);
    CHECK_INT_EQ(daemon_wait(&d, 5), 0);
    close(fd);
}

TEST(daemon_sighup_reloads_the_config_file)
{
    daemon_proc d;
    daemon_opts o = {.config = "max_body_bytes = 1K\n"};
    daemon_start(&d, &o);
    char path[300], extra[400], *body;
    snprintf(path, sizeof path, "%s/two-k.json", test_tmpdir());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputc('"', f);
    for (int i = 0; i < 2000; i++) fputc('a', f);
    fputc('"', f);
    fclose(f);
    snprintf(extra, sizeof extra, "-H 'Content-Type: text/plain' --data-binary @%s", path);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/echo", extra, &body, NULL), 413);
    free(body);

    f = fopen(d.conf, "w");
    CHECK(f != NULL);
    fputs("# raised\nmax_body_bytes = 4K\n", f);
    fclose(f);
    kill(d.pid, SIGHUP);
    double t0 = now_s();
    for (;;) {
        char *log = daemon_log(&d);
        bool done = strstr(log, "configuration reloaded") != NULL;
        free(log);
        if (done) break;
        CHECK_MSG(now_s() - t0 < 3, "no reload logged");
        sleep_ms(10);
    }
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/echo", extra, &body, NULL), 200);
    free(body);

    /* A broken file is refused and the running configuration stays. */
    f = fopen(d.conf, "w");
    fputs("max_body_bytes = lots\n", f);
    fclose(f);
    kill(d.pid, SIGHUP);
    t0 = now_s();
    for (;;) {
        char *log = daemon_log(&d);
        bool done = strstr(log, "reload failed") != NULL;
        if (done) CHECK_MSG(strstr(log, "line 1") != NULL, "the error should name the line:\n%s", log);
        free(log);
        if (done) break;
        CHECK_MSG(now_s() - t0 < 3, "no reload failure logged");
        sleep_ms(10);
    }
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/echo", extra, &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

/* --- access control ----------------------------------------------------------------------------------- */

/* In a child running as nobody: one request on a raw socket; returns the status (0 on failure). */
static int request_as_nobody(const daemon_proc *d, const char *request)
{
    int p[2];
    CHECK(pipe(p) == 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%.*s", (int)sizeof a.sun_path - 1, d->sock);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        int status = 0;
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
            if (send(fd, request, strlen(request), MSG_NOSIGNAL) == (ssize_t)strlen(request)) {
                char *r = raw_response(fd, 3000, &status);
                if (r && status == 403 && !strstr(r, "\"denied\"")) status = 1; /* wrong code word */
                free(r);
            }
        }
        if (write(p[1], &status, sizeof status) != sizeof status) _exit(4);
        _exit(0);
    }
    close(p[1]);
    int status = 0;
    if (read(p[0], &status, sizeof status) != sizeof status) status = 0;
    close(p[0]);
    waitpid(pid, NULL, 0);
    return status;
}

TEST(daemon_write_routes_are_denied_to_other_uids)
{
    if (geteuid() != 0) TEST_SKIP("needs root to act as another uid");
    struct group *g = getgrgid(65534);
    CHECK_MSG(g != NULL, "no group 65534 on this system");
    char group[64], conf[256];
    snprintf(group, sizeof group, "%s", g->gr_name);
    /* nobody must be able to reach the socket: the directory traversable, the socket in its group. */
    CHECK(chmod(test_tmpdir(), 0755) == 0);
    snprintf(conf, sizeof conf, "socket_group = %s\n", group);
    daemon_proc d;
    daemon_opts o = {.config = conf};
    daemon_start(&d, &o);
    struct stat st;
    CHECK(stat(d.sock, &st) == 0);
    CHECK_INT_EQ(st.st_gid, 65534);
    CHECK_INT_EQ(st.st_mode & 0777, 0660);

    static const char health[] = "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char submit[] = "POST /v1/debug/sleep-job HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 29\r\n\r\n{\"steps\": 1, \"step_ms\": 1}   ";
    static const char cancel[] = "DELETE /v1/jobs/1 HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK_INT_EQ(request_as_nobody(&d, health), 200); /* reads are open to anyone who can connect */
    CHECK_INT_EQ(request_as_nobody(&d, submit), 403);
    CHECK_INT_EQ(request_as_nobody(&d, cancel), 403);
    char *log = daemon_log(&d);
    CHECK_MSG(strstr(log, "denied: POST /v1/debug/sleep-job") && strstr(log, "uid 65534"), "no audit line:\n%s", log);
    free(log);
    char *body;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs", NULL, &body, NULL), 200);
    CHECK(strstr(body, "\"jobs\":[]") != NULL); /* the denied submit left nothing behind */
    free(body);

    /* With write_group = the peer's group (reloaded), the same write is allowed. */
    FILE *f = fopen(d.conf, "w");
    CHECK(f != NULL);
    fprintf(f, "socket_group = %s\nwrite_group = %s\n", group, group);
    fclose(f);
    kill(d.pid, SIGHUP);
    double t0 = now_s();
    int code;
    while ((code = request_as_nobody(&d, submit)) == 403 && now_s() - t0 < 3) sleep_ms(20);
    CHECK_INT_EQ(code, 202);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

/* --- metrics ---------------------------------------------------------------------------------------- */

TEST(daemon_metrics_prometheus_text)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    char *body, *hdrs;
    for (int i = 0; i < 3; i++) {
        CHECK_INT_EQ(curl_req(&d, "GET", "/v1/health", NULL, &body, NULL), 200);
        free(body);
    }
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/nowhere", NULL, &body, NULL), 404);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs/5", NULL, &body, NULL), 404);
    free(body);
    long long id = submit_sleep(&d, "{\"steps\": 1, \"step_ms\": 1}");
    json_decref(wait_final(&d, id, 5));
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/metrics", NULL, &body, &hdrs), 200);
    CHECK(strstr(hdrs, "Content-Type: text/plain; version=0.0.4") != NULL);
    const char *want[] = {
        "# TYPE clad_http_requests_total counter\n",
        "clad_http_requests_total{method=\"GET\",route=\"/v1/health\",code=\"200\"} 3\n",
        "clad_http_requests_total{method=\"\",route=\"unmatched\",code=\"404\"} 1\n",
        "clad_http_requests_total{method=\"GET\",route=\"/v1/jobs/{id}\",code=\"404\"} 1\n",
        "clad_http_requests_total{method=\"POST\",route=\"/v1/debug/sleep-job\",code=\"202\"} 1\n",
        "# TYPE clad_http_request_duration_seconds histogram\n",
        "clad_http_request_duration_seconds_bucket{le=\"+Inf\"} ",
        "clad_connections 1\n",
        "clad_jobs{state=\"succeeded\"} 1\n",
        "clad_jobs{state=\"running\"} 0\n",
        "clad_process_uptime_seconds ",
        "clad_process_resident_memory_bytes ",
        "clad_build_info{version=\"" CLAD_VERSION "\"} 1\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK_MSG(strstr(body, want[i]) != NULL, "metrics lack: %s\n%s", want[i], body);
    free(body);
    free(hdrs);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

/* --- the clad CLI ------------------------------------------------------------------------------------ */

TEST(daemon_clad_cli_verbs_and_exit_codes)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    char *out;
    CHECK_INT_EQ(clad_run(&d, "status", &out), 0);
    CHECK_MSG(strstr(out, "socket") && strstr(out, d.sock) && strstr(out, "jobs"), "status:\n%s", out);
    free(out);
    CHECK_INT_EQ(clad_run(&d, "--json status", &out), 0);
    json_t *j = json_or_fail(out);
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "pid")), d.pid);
    json_decref(j);
    free(out);
    CHECK_INT_EQ(clad_run(&d, "jobs", &out), 0);
    CHECK(strstr(out, "no jobs") != NULL);
    free(out);

    long long id = submit_sleep(&d, "{\"steps\": 4, \"step_ms\": 30}");
    CHECK_INT_EQ(clad_run(&d, "job 1 --follow", &out), 0); /* not a tty: one line per event */
    CHECK_MSG(strstr(out, "sleep job 1: step 4/4") && strstr(out, "job 1 succeeded"), "follow:\n%s", out);
    free(out);
    CHECK_INT_EQ(clad_run(&d, "jobs", &out), 0);
    CHECK(strstr(out, "succeeded") && strstr(out, "4/4"));
    free(out);
    CHECK_INT_EQ(clad_run(&d, "job 1", &out), 0);
    CHECK(strstr(out, "state     succeeded") != NULL);
    free(out);
    CHECK_INT_EQ(clad_run(&d, "--json jobs", &out), 0);
    j = json_or_fail(out);
    CHECK_INT_EQ(json_array_size(json_object_get(j, "jobs")), 1);
    json_decref(j);
    free(out);

    /* Exit codes scripts rely on. */
    CHECK_INT_EQ(clad_run(&d, "cancel 1 2>/dev/null", NULL), 6); /* finished: conflict */
    CHECK_INT_EQ(clad_run(&d, "job 99 2>/dev/null", NULL), 4);
    CHECK_INT_EQ(clad_run(&d, "bogus 2>/dev/null", NULL), 2);
    CHECK_INT_EQ(clad_run(&d, "job 2>/dev/null", NULL), 2);
    CHECK_INT_EQ(clad_run(&d, "--socket /nonexistent/clad.sock status 2>/dev/null", NULL), 3);
    long long failing = submit_sleep(&d, "{\"steps\": 3, \"step_ms\": 10, \"fail_at\": 1}");
    char args[64];
    snprintf(args, sizeof args, "job %lld --follow", failing);
    CHECK_INT_EQ(clad_run(&d, args, &out), 8);
    CHECK(strstr(out, "failed") != NULL);
    free(out);
    long long long_job = submit_sleep(&d, "{\"steps\": 100, \"step_ms\": 50}");
    snprintf(args, sizeof args, "cancel %lld", long_job);
    CHECK_INT_EQ(clad_run(&d, args, &out), 0);
    CHECK(strstr(out, "cancel requested") != NULL);
    free(out);
    json_decref(wait_final(&d, long_job, 5));

    /* raw: any request, exit code from the status; the body is printed as is. */
    CHECK_INT_EQ(clad_run(&d, "raw GET /v1/health", &out), 0);
    CHECK(strstr(out, "\"status\":\"ok\"") != NULL);
    free(out);
    CHECK_INT_EQ(clad_run(&d, "raw GET /v1/nope", &out), 4);
    CHECK(strstr(out, "not_found") != NULL);
    free(out);
    char raw_args[512], body_file[300];
    snprintf(body_file, sizeof body_file, "%s/compute.json", test_tmpdir());
    FILE *bf = fopen(body_file, "w");
    CHECK(bf != NULL);
    fputs("{\"ms\": 1}", bf);
    fclose(bf);
    snprintf(raw_args, sizeof raw_args, "raw POST /v1/debug/compute - < %s", body_file);
    CHECK_INT_EQ(clad_run(&d, raw_args, &out), 0);
    CHECK(strstr(out, "\"slept_ms\":1") != NULL);
    free(out);
    snprintf(raw_args, sizeof raw_args, "raw POST /v1/debug/compute %s", body_file);
    CHECK_INT_EQ(clad_run(&d, raw_args, &out), 0);
    free(out);

    /* CLAD_SOCKET is used when there is no --socket. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "CLAD_SOCKET='%s' %s/clad status >/dev/null", d.sock, test_build_dir());
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    (void)id;
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

/* --- cladd itself ----------------------------------------------------------------------------------- */

static int run_status(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(daemon_cladd_arguments_and_config_errors)
{
    char cmd[1024], conf[300];
    const char *b = test_build_dir();
    snprintf(cmd, sizeof cmd, "%s/cladd --version | grep -q '^cladd " CLAD_VERSION "$'", b);
    CHECK_INT_EQ(run_status(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/cladd --help | grep -q -- --socket", b);
    CHECK_INT_EQ(run_status(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/cladd --bogus 2>/dev/null", b);
    CHECK_INT_EQ(run_status(cmd), 2);
    snprintf(conf, sizeof conf, "%s/bad.conf", test_tmpdir());
    FILE *f = fopen(conf, "w");
    CHECK(f != NULL);
    fputs("# fine\nmax_connections = 10\nheader_timout = 5s\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s/cladd --config %s --socket %s/x.sock --state-dir %s/st 2>&1 | grep -q \"line 3: unknown key 'header_timout'\"",
             b, conf, test_tmpdir(), test_tmpdir());
    CHECK_INT_EQ(run_status(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/cladd --config %s/missing.conf --socket %s/x.sock 2>/dev/null", b, test_tmpdir(),
             test_tmpdir());
    CHECK_INT_EQ(run_status(cmd), 1);
}

TEST(daemon_systemd_units_verify)
{
    if (run_status("command -v systemd-analyze >/dev/null 2>&1") != 0) TEST_SKIP("systemd-analyze is not installed");
    /* Verify copies whose ExecStart points at the binary just built (verify checks that it exists). */
    char cwd[1024], cmd[4096];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    const char *b = test_build_dir();
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; cp '%s/systemd/cladd.service' '%s/systemd/cladd.socket' .; "
             "sed -i 's#^ExecStart=.*#ExecStart=%s%s%s/cladd#' cladd.service; "
             "systemd-analyze verify ./cladd.socket ./cladd.service > verify.log 2>&1",
             test_tmpdir(), cwd, cwd, b[0] == '/' ? "" : cwd, b[0] == '/' ? "" : "/", b);
    int rc = run_status(cmd);
    if (rc != 0) {
        char path[300];
        snprintf(path, sizeof path, "%s/verify.log", test_tmpdir());
        FILE *f = fopen(path, "r");
        char text[4096] = "";
        if (f) {
            size_t n = fread(text, 1, sizeof text - 1, f);
            text[n] = '\0';
            fclose(f);
        }
        CHECK_MSG(rc == 0, "systemd-analyze verify failed:\n%s", text);
    }
    /* The properties the daemon relies on. */
    snprintf(cmd, sizeof cmd,
             "cd '%s/systemd' && grep -q '^Type=notify$' cladd.service && grep -q '^WatchdogSec=' cladd.service && "
             "grep -q '^RestrictAddressFamilies=AF_UNIX$' cladd.service && grep -q '^PrivateNetwork=yes$' cladd.service && "
             "grep -q '^SocketMode=0660$' cladd.socket && grep -q '^ListenStream=/run/clad/clad.sock$' cladd.socket",
             cwd);
    CHECK_INT_EQ(run_status(cmd), 0);
}
