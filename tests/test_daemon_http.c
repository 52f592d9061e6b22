/* The daemon's HTTP layer end to end: the real build/cladd on a private socket, driven by curl and by
 * raw sockets (for malformed, slow and pipelining clients). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/daemon_util.h"
#include "tests/test.h"

/* Short limits so the slow-client cases take about a second. */
static const char *const small_limits = "header_timeout = 1s\n"
                                        "body_timeout = 1s\n"
                                        "idle_timeout = 5s\n"
                                        "max_header_bytes = 2K\n"
                                        "max_body_bytes = 64K\n"
                                        "max_connections = 8\n";

static void start_small(daemon_proc *d)
{
    daemon_opts o = {.config = small_limits};
    daemon_start(d, &o);
}

static void write_file(const char *path, size_t n, char fill)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    for (size_t i = 0; i < n; i++) fputc(fill, f);
    fclose(f);
}

TEST(daemon_http_health_and_status)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    char *body;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/health", NULL, &body, NULL), 200);
    json_t *j = json_or_fail(body);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "status")), "ok");
    CHECK_STR_EQ(json_string_value(json_object_get(j, "version")), CLAD_VERSION);
    json_decref(j);
    free(body);

    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/status", NULL, &body, NULL), 200);
    j = json_or_fail(body);
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "pid")), d.pid);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "socket")), d.sock);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "state_dir")), d.state);
    CHECK(json_is_false(json_object_get(j, "socket_activated")));
    CHECK(json_integer_value(json_object_get(json_object_get(j, "connections"), "open")) >= 1);
    CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(j, "jobs"), "running")), 0);
    /* Default pool: one job thread plus two compute threads. */
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "threadpool_size")), 3);
    json_decref(j);
    free(body);

    struct stat st;
    CHECK(stat(d.sock, &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK_INT_EQ(st.st_mode & 0777, 0660);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
    CHECK_MSG(access(d.sock, F_OK) != 0, "socket file left behind after a clean stop");
}

TEST(daemon_http_not_found_and_method_not_allowed)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    char *body, *hdrs;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/nope", NULL, &body, NULL), 404);
    CHECK_STR_EQ(error_code_of(body), "not_found");
    free(body);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs/", NULL, &body, NULL), 404); /* trailing slash */
    free(body);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1//jobs", NULL, &body, NULL), 404);
    free(body);

    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/health", NULL, &body, &hdrs), 405);
    CHECK_STR_EQ(error_code_of(body), "method_not_allowed");
    CHECK_MSG(strstr(hdrs, "\r\nAllow: GET\r\n") != NULL, "no Allow header in:\n%s", hdrs);
    free(body);
    free(hdrs);
    CHECK_INT_EQ(curl_req(&d, "PUT", "/v1/jobs/7", NULL, &body, &hdrs), 405);
    CHECK_MSG(strstr(hdrs, "\r\nAllow: GET, DELETE\r\n") || strstr(hdrs, "\r\nAllow: DELETE, GET\r\n"),
              "Allow header should list GET and DELETE:\n%s", hdrs);
    free(body);
    free(hdrs);

    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs/abc", NULL, &body, NULL), 400);
    CHECK_STR_EQ(error_code_of(body), "invalid_input");
    free(body);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs/12", NULL, &body, NULL), 404);
    CHECK_STR_EQ(error_code_of(body), "not_found");
    free(body);
    /* Test routes exist only with --enable-test-routes. */
    daemon_proc d2;
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
    daemon_opts o = {.no_test_routes = true};
    daemon_start(&d2, &o);
    CHECK_INT_EQ(curl_req(&d2, "POST", "/v1/debug/sleep-job", "-d '{}'", &body, NULL), 404);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d2, SIGTERM, 5), 0);
}

TEST(daemon_http_malformed_requests_close_only_their_connection)
{
    daemon_proc d;
    start_small(&d);
    int status;
    int a = raw_connect(&d);
    raw_send_str(a, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    char *r = raw_response(a, 2000, &status);
    CHECK_INT_EQ(status, 200);
    free(r);

    int b = raw_connect(&d);
    raw_send_str(b, "GARBAGE LINE\r\n\r\n");
    r = raw_response(b, 2000, &status);
    CHECK_INT_EQ(status, 400);
    CHECK(strstr(r, "\"invalid_input\"") != NULL);
    CHECK(strstr(r, "Connection: close") != NULL);
    free(r);
    CHECK(raw_closed_within(b, 2000));
    close(b);

    int c = raw_connect(&d);
    raw_send_str(c, "POST /v1/debug/echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n");
    r = raw_response(c, 2000, &status);
    CHECK_INT_EQ(status, 400);
    CHECK_MSG(strstr(r, "chunk") != NULL, "the message should name the chunk problem: %s", r);
    free(r);
    CHECK(raw_closed_within(c, 2000));
    close(c);

    /* Both a Content-Length and a chunked encoding: refused (request smuggling). */
    c = raw_connect(&d);
    raw_send_str(c, "POST /v1/debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    r = raw_response(c, 2000, &status);
    CHECK_INT_EQ(status, 400);
    free(r);
    close(c);

    /* The first connection is unaffected. */
    raw_send_str(a, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    r = raw_response(a, 2000, &status);
    CHECK_INT_EQ(status, 200);
    free(r);
    close(a);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_http_oversized_headers_are_431)
{
    daemon_proc d;
    start_small(&d);
    int status;
    char big[4000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    int fd = raw_connect(&d);
    raw_send_str(fd, "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ");
    raw_send_str(fd, big);
    raw_send_str(fd, "\r\n\r\n");
    char *r = raw_response(fd, 2000, &status);
    CHECK_INT_EQ(status, 431);
    CHECK(strstr(r, "\"too_large\"") != NULL);
    free(r);
    CHECK(raw_closed_within(fd, 2000));
    close(fd);

    /* Too many header lines, each small. */
    fd = raw_connect(&d);
    raw_send_str(fd, "GET /v1/health HTTP/1.1\r\n");
    for (int i = 0; i < 70; i++) raw_send_str(fd, "X: y\r\n");
    raw_send_str(fd, "\r\n");
    r = raw_response(fd, 2000, &status);
    CHECK_INT_EQ(status, 431);
    free(r);
    close(fd);

    char *body;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/health", NULL, &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_http_oversized_bodies_are_413)
{
    daemon_proc d;
    start_small(&d);
    char path[300], extra[400], *body;
    snprintf(path, sizeof path, "%s/exact.bin", test_tmpdir());
    write_file(path, 64 * 1024, 'x');
    snprintf(extra, sizeof extra, "-H 'Content-Type: application/octet-stream' --data-binary @%s", path);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/echo", extra, &body, NULL), 200);
    json_t *j = json_or_fail(body);
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "bytes")), 64 * 1024);
    json_decref(j);
    free(body);

    snprintf(path, sizeof path, "%s/big.bin", test_tmpdir());
    write_file(path, 64 * 1024 + 1, 'x');
    snprintf(extra, sizeof extra, "-H 'Content-Type: application/octet-stream' --data-binary @%s", path);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/echo", extra, &body, NULL), 413);
    CHECK_STR_EQ(error_code_of(body), "too_large");
    free(body);

    /* Chunked, so the size is only known as it arrives. */
    snprintf(extra, sizeof extra,
             "-H 'Content-Type: application/octet-stream' -H 'Transfer-Encoding: chunked' --data-binary @%s", path);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/echo", extra, &body, NULL), 413);
    CHECK_STR_EQ(error_code_of(body), "too_large");
    free(body);

    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/health", NULL, &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

static unsigned long long fnv1a(const char *s, size_t n)
{
    unsigned long long h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

TEST(daemon_http_chunked_request_body_and_expect_continue)
{
    daemon_proc d;
    start_small(&d);
    int status;
    int fd = raw_connect(&d);
    raw_send_str(fd, "POST /v1/debug/echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n");
    raw_send_str(fd, "5\r\nhello\r\n");
    sleep_ms(20);
    raw_send_str(fd, "1\r\n \r\n6;ext=1\r\nworld!\r\n0\r\n\r\n");
    char *r = raw_response(fd, 2000, &status);
    CHECK_INT_EQ(status, 200);
    char want[64];
    snprintf(want, sizeof want, "\"fnv1a\":\"%016llx\"", fnv1a("hello world!", 12));
    CHECK_MSG(strstr(r, "\"bytes\":12") && strstr(r, want), "echo of a chunked body: %s", r);
    free(r);
    close(fd);

    /* curl waits for "100 Continue" before sending a body it announced with Expect. */
    char path[300], extra[400], *body;
    snprintf(path, sizeof path, "%s/two-k.bin", test_tmpdir());
    write_file(path, 2048, 'y');
    snprintf(extra, sizeof extra,
             "-H 'Expect: 100-continue' -H 'Content-Type: application/octet-stream' --data-binary @%s", path);
    double t0 = now_s();
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/echo", extra, &body, NULL), 200);
    CHECK_MSG(now_s() - t0 < 0.9, "curl waited for its 1 s Expect timeout: no 100 Continue was sent");
    CHECK(strstr(body, "\"bytes\":2048") != NULL);
    free(body);
    /* A rejected upload is answered before the body is sent. */
    snprintf(extra, sizeof extra, "-H 'Expect: 100-continue' -H 'Content-Type: image/png' --data-binary @%s", path);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/echo", extra, &body, NULL), 415);
    CHECK_STR_EQ(error_code_of(body), "unsupported_media_type");
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_http_slow_headers_do_not_block_others_and_are_dropped)
{
    daemon_proc d;
    start_small(&d);
    int slow = raw_connect(&d);
    raw_send_str(slow, "GET /v1/health HTTP/1.1\r\nHo");
    double t0 = now_s();
    /* Others are served at once while the slow client holds its connection. */
    for (int i = 0; i < 3; i++) {
        char *body;
        double t1 = now_s();
        CHECK_INT_EQ(curl_req(&d, "GET", "/v1/health", NULL, &body, NULL), 200);
        CHECK_MSG(now_s() - t1 < 0.5, "a request took %.2f s while a slow client stalled", now_s() - t1);
        free(body);
    }
    int status;
    char *r = raw_response(slow, 3000, &status);
    double waited = now_s() - t0;
    CHECK_INT_EQ(status, 408);
    CHECK(strstr(r, "\"timeout\"") != NULL);
    free(r);
    CHECK(raw_closed_within(slow, 2000));
    CHECK_MSG(waited > 0.8 && waited < 2.5, "dropped after %.2f s; the header timeout is 1 s", waited);
    close(slow);

    /* A stalled body is dropped after the body timeout. */
    int fd = raw_connect(&d);
    raw_send_str(fd, "POST /v1/debug/echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                     "Content-Length: 10\r\n\r\nhello");
    t0 = now_s();
    r = raw_response(fd, 3000, &status);
    CHECK_INT_EQ(status, 408);
    CHECK_MSG(now_s() - t0 > 0.8, "dropped too early");
    free(r);
    close(fd);

    /* A connection that never sends anything is dropped too. */
    fd = raw_connect(&d);
    CHECK(raw_closed_within(fd, 3000));
    close(fd);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_http_connection_limit_answers_503)
{
    daemon_proc d;
    daemon_opts o = {.config = "max_connections = 4\nheader_timeout = 20s\n"};
    daemon_start(&d, &o);
    /* The readiness probe's connection counts until the daemon sees it close: wait for that. */
    double t0 = now_s();
    for (;;) {
        char *b;
        CHECK_INT_EQ(curl_req(&d, "GET", "/v1/status", NULL, &b, NULL), 200);
        json_t *s = json_or_fail(b);
        long long open_now = json_integer_value(json_object_get(json_object_get(s, "connections"), "open"));
        json_decref(s);
        free(b);
        if (open_now == 1) break;
        CHECK_MSG(now_s() - t0 < 2, "%lld connections still open", open_now);
        sleep_ms(10);
    }
    int fds[4];
    for (int i = 0; i < 4; i++) fds[i] = raw_connect(&d);
    /* Make sure the daemon accepted all four before the fifth arrives. */
    raw_send_str(fds[0], "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    int status;
    char *r = raw_response(fds[0], 2000, &status);
    CHECK_INT_EQ(status, 200);
    free(r);

    int extra = raw_connect(&d);
    raw_send_str(extra, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    r = raw_response(extra, 2000, &status);
    CHECK_INT_EQ(status, 503);
    CHECK(strstr(r, "\"busy\"") != NULL);
    free(r);
    CHECK(raw_closed_within(extra, 2000));
    close(extra);

    /* A slot frees when a client leaves. */
    close(fds[1]);
    t0 = now_s();
    char *body = NULL;
    int code = 0;
    while (now_s() - t0 < 2) {
        free(body);
        code = curl_req(&d, "GET", "/v1/status", NULL, &body, NULL);
        if (code == 200) break;
        sleep_ms(20);
    }
    CHECK_INT_EQ(code, 200);
    json_t *j = json_or_fail(body);
    CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(j, "connections"), "rejected")), 1);
    json_decref(j);
    free(body);
    for (int i = 0; i < 4; i++)
        if (i != 1) close(fds[i]);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_http_json_bodies_and_media_types)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    char *body;
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/sleep-job",
                          "-H 'Content-Type: application/json' -d '{\"steps\": 3,\n  \"step_ms\": }'", &body, NULL),
                 400);
    CHECK_STR_EQ(error_code_of(body), "invalid_input");
    CHECK_MSG(strstr(body, "line 2") && strstr(body, "column"), "parse error should name line and column: %s", body);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/sleep-job", "-H 'Content-Type: application/json' -d '[1,2]'",
                          &body, NULL),
                 400);
    CHECK(strstr(body, "JSON object") != NULL);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/sleep-job",
                          "-H 'Content-Type: application/json' -d '{\"steps\": 1, \"steps\": 2}'", &body, NULL),
                 400);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/sleep-job", "-H 'Content-Type: application/json' -d '{\"steps\": -4}'",
                          &body, NULL),
                 400);
    CHECK(strstr(body, "steps") != NULL);
    free(body);
    /* Wrong media types: a form post, and a body on a route that takes none. */
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/sleep-job", "-d '{}'", &body, NULL), 415);
    CHECK_STR_EQ(error_code_of(body), "unsupported_media_type");
    free(body);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/health", "-H 'Content-Type: application/json' --data-binary '{}' -X GET",
                          &body, NULL),
                 415);
    free(body);
    /* A JSON media type with parameters is fine, and so is a body without a Content-Type. */
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/compute",
                          "-H 'Content-Type: application/json; charset=utf-8' -d '{\"ms\": 1}'", &body, NULL),
                 200);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/compute", "-H 'Content-Type:' -d '{\"ms\": 1}'", &body, NULL), 200);
    free(body);
    /* Query flags are validated. */
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/debug/sleep-job?follow=maybe",
                          "-H 'Content-Type: application/json' -d '{\"steps\":1,\"step_ms\":0}'", &body, NULL),
                 400);
    CHECK(strstr(body, "follow") != NULL);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_http_keep_alive_and_pipelining)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    int status;
    int fd = raw_connect(&d);
    for (int i = 0; i < 3; i++) {
        raw_send_str(fd, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
        char *r = raw_response(fd, 2000, &status);
        CHECK_INT_EQ(status, 200);
        CHECK(strstr(r, "Connection: keep-alive") != NULL);
        free(r);
    }
    /* Three requests in one write: answered one at a time, in order. */
    raw_send_str(fd, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
                     "GET /v1/nope HTTP/1.1\r\nHost: x\r\n\r\n"
                     "POST /v1/debug/echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc");
    char *r = raw_response(fd, 2000, &status);
    CHECK_INT_EQ(status, 200);
    free(r);
    r = raw_response(fd, 2000, &status);
    CHECK_INT_EQ(status, 404);
    free(r);
    r = raw_response(fd, 2000, &status);
    CHECK_INT_EQ(status, 200);
    CHECK(strstr(r, "\"bytes\":3") != NULL);
    free(r);
    /* A response to HEAD has no body: the next response follows the headers directly. */
    raw_send_str(fd, "HEAD /v1/health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    char seen[2048] = "";
    size_t got = 0;
    double t0 = now_s();
    while (!strstr(seen, "\"version\"") && now_s() - t0 < 2 && got < sizeof seen - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t n = recv(fd, seen + got, sizeof seen - 1 - got, 0);
        if (n <= 0) break;
        got += (size_t)n;
        seen[got] = '\0';
    }
    char *gap = strstr(seen, "\r\n\r\n");
    CHECK_MSG(strncmp(seen, "HTTP/1.1 405", 12) == 0 && gap && strncmp(gap + 4, "HTTP/1.1 200", 12) == 0,
              "HEAD reply carried a body or broke the connection:\n%s", seen);
    /* Connection: close is honoured. */
    raw_send_str(fd, "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    r = raw_response(fd, 2000, &status);
    CHECK_INT_EQ(status, 200);
    CHECK(strstr(r, "Connection: close") != NULL);
    free(r);
    CHECK(raw_closed_within(fd, 2000));
    close(fd);
    /* HTTP/1.0 without keep-alive: one response, then close. */
    fd = raw_connect(&d);
    raw_send_str(fd, "GET /v1/health HTTP/1.0\r\n\r\n");
    r = raw_response(fd, 2000, &status);
    CHECK_INT_EQ(status, 200);
    free(r);
    CHECK(raw_closed_within(fd, 2000));
    close(fd);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

/* Binds a socket file at path and closes it without removing it: a stale socket. */
static void make_stale_socket(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%.*s", (int)sizeof a.sun_path - 1, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(fd, 1) == 0);
    close(fd);
}

TEST(daemon_http_socket_file_safety)
{
    char sock[300];
    snprintf(sock, sizeof sock, "%s/clad.sock", test_tmpdir());
    make_stale_socket(sock);
    daemon_proc d;
    daemon_start(&d, NULL); /* replaces the stale socket */
    char *log = daemon_log(&d);
    CHECK_MSG(strstr(log, "removed stale socket") != NULL, "log: %s", log);
    free(log);

    /* A second daemon on the same live socket (with its own state directory) refuses and leaves the first
     * alone. */
    daemon_proc d2;
    char state2[300];
    snprintf(state2, sizeof state2, "%s/state2", test_tmpdir());
    const char *const other_state[] = {"--state-dir", state2, NULL};
    daemon_opts o = {.no_wait = true, .args = other_state};
    daemon_start(&d2, &o);
    CHECK_INT_EQ(daemon_wait(&d2, 5), 1);
    log = daemon_log(&d2);
    CHECK_MSG(strstr(log, "already listening") != NULL, "log: %s", log);
    free(log);
    char *body;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/health", NULL, &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);

    /* A file that is not a socket is never replaced. */
    FILE *f = fopen(sock, "w");
    CHECK(f != NULL);
    fputs("precious", f);
    fclose(f);
    daemon_start(&d2, &o);
    CHECK_INT_EQ(daemon_wait(&d2, 5), 1);
    struct stat st;
    CHECK(stat(sock, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 8);
}

TEST(daemon_http_systemd_socket_activation)
{
    char sock[300];
    snprintf(sock, sizeof sock, "%s/clad.sock", test_tmpdir());
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%.*s", (int)sizeof a.sun_path - 1, sock);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(fd, 16) == 0);
    daemon_proc d;
    daemon_opts o = {.listen_fd = fd};
    daemon_start(&d, &o);
    close(fd);
    char *body;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/status", NULL, &body, NULL), 200);
    json_t *j = json_or_fail(body);
    CHECK(json_is_true(json_object_get(j, "socket_activated")));
    CHECK_STR_EQ(json_string_value(json_object_get(j, "socket")), sock);
    json_decref(j);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
    /* The socket belongs to systemd: cladd leaves it in place. */
    CHECK(access(sock, F_OK) == 0);
}

/* Bytes that are not UTF-8 cannot go into a JSON reply: a path parameter or query value holding them is a
 * 400 invalid_input (it was 503 out_of_memory, which tells clients to retry), and the daemon serves on. */
TEST(daemon_http_invalid_utf8_in_parameters_is_400)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    static const char *const paths[] = {
        "/v1/tasks/%FF",                 /* a lone byte that is never UTF-8 */
        "/v1/tasks/%C3%28/versions",     /* a broken two-byte sequence */
        "/v1/tasks/%C0%AF",              /* an overlong '/' */
        "/v1/tasks/%ED%A0%80/aliases",   /* a UTF-16 surrogate */
        "/v1/bases/%E2%82",              /* cut short */
        "/v1/jobs?lane=%FF",             /* a query value */
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char *body = NULL;
        int code = curl_req(&d, "GET", paths[i], NULL, &body, NULL);
        CHECK_MSG(code == 400, "GET %s answered %d: %s", paths[i], code, body);
        CHECK_STR_EQ(error_code_of(body), "invalid_input");
        CHECK_MSG(strstr(body, "UTF-8") != NULL, "GET %s: the message does not say why: %s", paths[i], body);
        free(body);
    }
    /* Well-formed UTF-8 is a name like any other: not found, not an encoding error. */
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/tasks/%C3%A9t%C3%A9", NULL, &body, NULL), 400);
    CHECK_STR_EQ(error_code_of(body), "invalid_input");
    CHECK_MSG(strstr(body, "UTF-8") == NULL, "valid UTF-8 reported as an encoding error: %s", body);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/health", NULL, &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}
