/* Helpers for the daemon tests; see daemon_util.h. */
#include "tests/daemon_util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/rng.h"
#include "daemon/client.h"
#include "io/model_io.h"
#include "tests/test.h"

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)(n > 0 ? n : 0) + 1);
    if (!buf) abort();
    size_t got = n > 0 ? fread(buf, 1, (size_t)n, f) : 0;
    buf[got] = '\0';
    fclose(f);
    return buf;
}

char *daemon_log(const daemon_proc *d)
{
    return read_file(d->log);
}

static bool can_connect(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%.*s", (int)sizeof a.sun_path - 1, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

void daemon_start(daemon_proc *d, const daemon_opts *opts)
{
    static const daemon_opts none = {0};
    if (!opts) opts = &none;
    char dir[200];
    snprintf(dir, sizeof dir, "%s%s%s", test_tmpdir(), opts->subdir ? "/" : "", opts->subdir ? opts->subdir : "");
    if (opts->subdir) CHECK(mkdir(dir, 0700) == 0 || errno == EEXIST);
    memset(d, 0, sizeof *d);
    snprintf(d->sock, sizeof d->sock, "%s/clad.sock", dir);
    snprintf(d->state, sizeof d->state, "%s/state", dir);
    snprintf(d->conf, sizeof d->conf, "%s/cladd.conf", dir);
    snprintf(d->log, sizeof d->log, "%s/cladd.log", dir);
    if (opts->config) {
        FILE *f = fopen(d->conf, "w");
        CHECK(f != NULL);
        fputs(opts->config, f);
        fclose(f);
    }
    char bin[512];
    snprintf(bin, sizeof bin, "%s/cladd", test_build_dir());
    CHECK_MSG(access(bin, X_OK) == 0, "%s is missing: run make first", bin);

    const char *argv[32];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--socket";
    argv[n++] = d->sock;
    argv[n++] = "--state-dir";
    argv[n++] = d->state;
    if (opts->config) {
        argv[n++] = "--config";
        argv[n++] = d->conf;
    }
    if (!opts->no_test_routes) argv[n++] = "--enable-test-routes";
    for (int i = 0; opts->args && opts->args[i] && n < 30; i++) argv[n++] = opts->args[i];
    argv[n] = NULL;

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int logfd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int devnull = open("/dev/null", O_RDWR);
        if (logfd < 0 || devnull < 0) _exit(127);
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        dup2(logfd, STDERR_FILENO);
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_USEC");
        unsetenv("LISTEN_FDS");
        for (int i = 0; opts->env && opts->env[i]; i++) {
            if (!strcmp(opts->env[i], "WATCHDOG_PID=self")) {
                char pidbuf[32];
                snprintf(pidbuf, sizeof pidbuf, "%ld", (long)getpid());
                setenv("WATCHDOG_PID", pidbuf, 1);
            } else {
                putenv((char *)opts->env[i]);
            }
        }
        if (opts->listen_fd > 0) {
            if (opts->listen_fd != 3) {
                dup2(opts->listen_fd, 3);
                close(opts->listen_fd);
            }
            fcntl(3, F_SETFD, 0);
            char pidbuf[32];
            snprintf(pidbuf, sizeof pidbuf, "%ld", (long)getpid());
            setenv("LISTEN_PID", pidbuf, 1);
            setenv("LISTEN_FDS", "1", 1);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    d->pid = pid;
    if (opts->no_wait) return;
    const char *probe = d->sock;
    double t0 = now_s();
    while (!can_connect(probe)) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            d->pid = 0;
            test_fail(__FILE__, __LINE__, "cladd exited during startup (status %d); log:\n%s", status,
                      daemon_log(d));
        }
        if (now_s() - t0 > 10) test_fail(__FILE__, __LINE__, "cladd not ready after 10 s; log:\n%s", daemon_log(d));
        sleep_ms(5);
    }
}

int daemon_wait(daemon_proc *d, double timeout_s)
{
    if (d->pid <= 0) return -1;
    double t0 = now_s();
    for (;;) {
        int status;
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        if (r == d->pid) {
            d->pid = 0;
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
            return -1;
        }
        if (now_s() - t0 > timeout_s) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
            d->pid = 0;
            return -1;
        }
        sleep_ms(5);
    }
}

int daemon_stop(daemon_proc *d, int sig, double timeout_s)
{
    if (d->pid <= 0) return -1;
    kill(d->pid, sig);
    return daemon_wait(d, timeout_s);
}

int curl_req(const daemon_proc *d, const char *method, const char *path, const char *extra, char **body,
             char **headers)
{
    static int counter;
    char bodyf[300], hdrf[300], cmd[4096];
    counter++;
    snprintf(bodyf, sizeof bodyf, "%s/curl-body-%d-%d", test_tmpdir(), (int)getpid(), counter);
    snprintf(hdrf, sizeof hdrf, "%s/curl-hdr-%d-%d", test_tmpdir(), (int)getpid(), counter);
    snprintf(cmd, sizeof cmd, "curl -s -X %s --unix-socket '%s' -o '%s' -D '%s' -w '%%{http_code}' %s 'http://cladd%s'",
             method, d->sock, bodyf, hdrf, extra ? extra : "", path);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    char out[64] = {0};
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    pclose(p);
    if (body) *body = read_file(bodyf);
    if (headers) *headers = read_file(hdrf);
    unlink(bodyf);
    unlink(hdrf);
    return atoi(out);
}

int http_try(const char *sock, const char *method, const char *path, const char *ctype, const void *body,
             size_t len, int timeout_ms, char **out)
{
    client_request rq = {.method = method, .path = path, .content_type = body ? ctype : NULL, .body = body,
                         .body_len = len, .timeout_ms = timeout_ms};
    return client_call(sock, &rq, out, NULL);
}

int clad_run(const daemon_proc *d, const char *args, char **out)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s/clad --socket '%s' %s", test_build_dir(), d->sock, args);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (cap - n < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
            CHECK(buf != NULL);
        }
    }
    buf[n] = '\0';
    int status = pclose(p);
    if (out) *out = buf;
    else free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void write_argmax_csv(const char *path, int n, int features, uint64_t seed)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    rng r;
    rng_init(&r, seed);
    for (int i = 0; i < n; i++) {
        float x[64];
        int best = 0;
        CHECK(features >= 4 && features <= 64);
        for (int j = 0; j < features; j++) x[j] = rng_normal(&r);
        for (int j = 1; j < 4; j++)
            if (x[j] > x[best]) best = j;
        fprintf(f, "%d", best);
        for (int j = 0; j < features; j++) fprintf(f, ",%.4f", (double)x[j]);
        fputc('\n', f);
    }
    fclose(f);
}

json_t *json_or_fail(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text ? text : "", 0, &je);
    CHECK_MSG(j != NULL, "not JSON (%s): %.300s", je.text, text ? text : "(null)");
    return j;
}

const char *error_code_of(const char *body)
{
    static char code[64];
    code[0] = '\0';
    json_t *j = json_loads(body ? body : "", 0, NULL);
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    if (c) snprintf(code, sizeof code, "%s", c);
    json_decref(j);
    return code;
}

int raw_connect(const daemon_proc *d)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%.*s", (int)sizeof a.sun_path - 1, d->sock);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK_MSG(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect %s: %s", d->sock, strerror(errno));
    return fd;
}

void raw_send(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        CHECK_MSG(n > 0, "send: %s", strerror(errno));
        data += n;
        len -= (size_t)n;
    }
}

void raw_send_str(int fd, const char *s)
{
    raw_send(fd, s, strlen(s));
}

/* One byte with a deadline: 1 read, 0 end of stream, -1 timeout or error. */
static int read_byte(int fd, double deadline, char *out)
{
    for (;;) {
        int left = (int)((deadline - now_s()) * 1000);
        if (left < 0) return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        ssize_t n = recv(fd, out, 1, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno == ECONNRESET ? 0 : -1;
        return n == 1 ? 1 : 0;
    }
}

char *raw_response(int fd, int timeout_ms, int *status)
{
    double deadline = now_s() + timeout_ms / 1000.0;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    CHECK(buf != NULL);
    *status = 0;
    long content_length = -1;
    bool chunked = false, head_done = false;
    size_t body_start = 0;
    for (;;) {
        char ch;
        int r = read_byte(fd, deadline, &ch);
        if (r <= 0) break;
        if (n + 2 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            CHECK(buf != NULL);
        }
        buf[n++] = ch;
        buf[n] = '\0';
        if (!head_done && n >= 4 && !memcmp(buf + n - 4, "\r\n\r\n", 4)) {
            int st = 0;
            if (sscanf(buf, "HTTP/1.%*d %d", &st) != 1) break;
            if (st == 100) { /* interim: start over */
                n = 0;
                continue;
            }
            head_done = true;
            *status = st;
            body_start = n;
            const char *cl = strcasestr(buf, "\r\ncontent-length:");
            if (cl) content_length = strtol(cl + 17, NULL, 10);
            chunked = strcasestr(buf, "\r\ntransfer-encoding: chunked") != NULL;
            if (content_length == 0) return buf;
            continue;
        }
        if (head_done) {
            if (content_length >= 0 && (long)(n - body_start) == content_length) return buf;
            if (chunked && n - body_start >= 5 && !memcmp(buf + n - 5, "0\r\n\r\n", 5) &&
                (n - body_start == 5 || buf[n - 6] == '\n'))
                return buf;
        }
    }
    if (head_done && content_length < 0 && !chunked) return buf; /* body until close */
    free(buf);
    *status = 0;
    return NULL;
}

bool raw_closed_within(int fd, int timeout_ms)
{
    double deadline = now_s() + timeout_ms / 1000.0;
    for (;;) {
        char ch;
        int r = read_byte(fd, deadline, &ch);
        if (r == 0) return true;
        if (r < 0) return false;
    }
}

void stream_open(curl_stream *s, const daemon_proc *d, const char *method, const char *path, const char *extra)
{
    memset(s, 0, sizeof *s);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec curl -sN -X %s --unix-socket '%s' %s 'http://cladd%s'", method, d->sock,
             extra ? extra : "", path);
    int p[2];
    CHECK(pipe(p) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        close(p[0]);
        close(p[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    s->pid = pid;
    s->fd = p[0];
}

char *stream_line(curl_stream *s, int timeout_ms)
{
    double deadline = now_s() + timeout_ms / 1000.0;
    for (;;) {
        char *nl = memchr(s->buf, '\n', s->len);
        if (nl) {
            size_t n = (size_t)(nl - s->buf);
            char *line = malloc(n + 1);
            CHECK(line != NULL);
            memcpy(line, s->buf, n);
            line[n] = '\0';
            memmove(s->buf, nl + 1, s->len - n - 1);
            s->len -= n + 1;
            return line;
        }
        if (s->fd < 0 || s->len == sizeof s->buf) return NULL;
        int left = (int)((deadline - now_s()) * 1000);
        if (left <= 0) return NULL;
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        int r = poll(&p, 1, left);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return NULL;
        ssize_t n = read(s->fd, s->buf + s->len, sizeof s->buf - s->len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            close(s->fd);
            s->fd = -1;
            if (s->len == 0) return NULL;
            /* A last line without a newline. */
            char *line = malloc(s->len + 1);
            CHECK(line != NULL);
            memcpy(line, s->buf, s->len);
            line[s->len] = '\0';
            s->len = 0;
            return line;
        }
        s->len += (size_t)n;
    }
}

json_t *stream_until(curl_stream *s, const char *needle, int timeout_ms)
{
    double deadline = now_s() + timeout_ms / 1000.0;
    for (;;) {
        int left = (int)((deadline - now_s()) * 1000);
        char *line = left > 0 ? stream_line(s, left) : NULL;
        CHECK_MSG(line != NULL, "stream ended or timed out waiting for a line with %s", needle);
        if (strstr(line, needle)) {
            json_t *j = json_or_fail(line);
            free(line);
            return j;
        }
        free(line);
    }
}

void stream_close(curl_stream *s)
{
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* --- jobs --- */

#define JSON_HDR "-H 'Content-Type: application/json' "

/* Submits a sleep job and returns its id. */
long long submit_sleep(const daemon_proc *d, const char *json_body)
{
    char extra[512], *body;
    snprintf(extra, sizeof extra, JSON_HDR "-d '%s'", json_body);
    int code = curl_req(d, "POST", "/v1/debug/sleep-job", extra, &body, NULL);
    CHECK_MSG(code == 202, "submit answered %d: %s", code, body);
    json_t *j = json_or_fail(body);
    long long id = json_integer_value(json_object_get(j, "id"));
    json_decref(j);
    free(body);
    CHECK(id > 0);
    return id;
}

/* GET /v1/jobs/ID as JSON. */
json_t *get_job(const daemon_proc *d, long long id)
{
    char path[64], *body;
    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    CHECK_INT_EQ(curl_req(d, "GET", path, NULL, &body, NULL), 200);
    json_t *j = json_or_fail(body);
    free(body);
    return j;
}

const char *state_of(json_t *job)
{
    static char buf[32];
    snprintf(buf, sizeof buf, "%s", json_string_value(json_object_get(job, "state")));
    return buf;
}

/* Waits until job id reaches a final state; returns its JSON. */
json_t *wait_final(const daemon_proc *d, long long id, double timeout_s)
{
    double t0 = now_s();
    for (;;) {
        json_t *j = get_job(d, id);
        const char *s = state_of(j);
        if (strcmp(s, "queued") && strcmp(s, "running")) return j;
        json_decref(j);
        CHECK_MSG(now_s() - t0 < timeout_s, "job %lld not finished after %.1f s", id, timeout_s);
        sleep_ms(20);
    }
}

void write_random_base(const char *path, const model_config *c, uint64_t seed)
{
    model *m = model_create(c, NULL);
    CHECK(m != NULL);
    model_init_random(m, seed);
    CHECK_INT_EQ(model_save(m, path, NULL), 0);
    model_destroy(m);
}

void daemon_start_with_base(daemon_proc *d, const model_config *c, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/base-%s.safetensors", test_tmpdir(), name);
    write_random_base(path, c, 5);
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    daemon_start(d, &o);
    char url[128], extra[700], *body = NULL;
    snprintf(url, sizeof url, "/v1/bases/%s", name);
    snprintf(extra, sizeof extra, "-H 'Content-Type: application/octet-stream' --data-binary '@%s'", path);
    int code = curl_req(d, "POST", url, extra, &body, NULL);
    CHECK_MSG(code == 201, "base import answered %d: %s", code, body);
    free(body);
}

bool predictions_close(const char *reply_a, const char *reply_b, double tol)
{
    json_t *a = json_loads(reply_a, 0, NULL), *b = json_loads(reply_b, 0, NULL);
    bool same = a && b && json_equal(json_object_get(a, "labels"), json_object_get(b, "labels"));
    json_t *pa = json_object_get(a, "probabilities"), *pb = json_object_get(b, "probabilities");
    same = same && json_array_size(pa) == json_array_size(pb);
    for (size_t i = 0; same && i < json_array_size(pa); i++) {
        json_t *ra = json_array_get(pa, i), *rb = json_array_get(pb, i);
        same = json_array_size(ra) == json_array_size(rb);
        for (size_t k = 0; same && k < json_array_size(ra); k++)
            same = fabs(json_number_value(json_array_get(ra, k)) - json_number_value(json_array_get(rb, k))) <= tol;
    }
    json_decref(a);
    json_decref(b);
    return same;
}

double status_latency(const daemon_proc *d)
{
    double t0 = now_s();
    int fd = raw_connect(d);
    raw_send_str(fd, "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    int status = 0;
    free(raw_response(fd, 10000, &status));
    close(fd);
    CHECK_INT_EQ(status, 200);
    return now_s() - t0;
}
