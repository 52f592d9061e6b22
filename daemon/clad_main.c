/* clad: the command-line client of cladd. Talks to the daemon only through its public HTTP API.
 *
 * Output is human-readable by default and the daemon's JSON with --json. Exit codes (stable, for
 * scripts):
 *   0  success
 *   1  the daemon answered with an error not listed below (invalid_input, too_large, internal, ...)
 *   2  usage error (unknown command, missing argument)
 *   3  cannot connect to the daemon
 *   4  not found (404)
 *   5  denied (403)
 *   6  conflict (409), e.g. cancelling a job that has finished
 *   7  busy (503): try again later
 *   8  a followed job ended without succeeding (failed, cancelled or interrupted)
 *   9  the reply was cut off or malformed
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/client.h"

#ifndef CLAD_VERSION
#define CLAD_VERSION "unknown"
#endif

enum {
    EXIT_OK = 0,
    EXIT_ERROR = 1,
    EXIT_USAGE = 2,
    EXIT_CONNECT = 3,
    EXIT_NOT_FOUND = 4,
    EXIT_DENIED = 5,
    EXIT_CONFLICT = 6,
    EXIT_BUSY = 7,
    EXIT_JOB_FAILED = 8,
    EXIT_PROTOCOL = 9,
};

#define REQUEST_TIMEOUT_MS 60000
#define MAX_UPLOAD (1ull << 32)

typedef struct options {
    const char *socket;
    bool json;
    bool follow;
    const char *state;
    const char *lane;
    const char *content_type;
    int n_args;
    const char *args[8];
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clad [--socket PATH] [--json] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  status                      the daemon's state: uptime, connections, jobs\n"
            "  jobs [--state S] [--lane L] list jobs, newest first\n"
            "  job ID [--follow]           one job; --follow shows its progress until it ends\n"
            "  cancel ID                   cancel a queued or running job\n"
            "  raw METHOD PATH [FILE|-]    send a request (body from FILE or stdin) and print the reply\n"
            "                              [--content-type TYPE] (default application/json)\n"
            "\n"
            "options:\n"
            "  --socket PATH   the daemon's socket (default: $CLAD_SOCKET, else the first that exists of\n"
            "                  $XDG_RUNTIME_DIR/clad/clad.sock, /run/clad/clad.sock, /tmp/clad-$UID/clad.sock)\n"
            "  --json          print the daemon's JSON instead of tables\n"
            "  --version, --help\n"
            "\n"
            "exit codes: 0 ok, 1 error reply, 2 usage, 3 cannot connect, 4 not found, 5 denied,\n"
            "            6 conflict, 7 busy, 8 followed job did not succeed, 9 bad reply\n");
}

static void fail_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail_msg(const char *fmt, ...)
{
    va_list ap;
    fputs("clad: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* --- socket and requests ---------------------------------------------------------------------------- */

static const char *default_socket(char *buf, size_t size)
{
    const char *env = getenv("CLAD_SOCKET");
    if (env && *env) return env;
    char cand[3][256];
    int n = 0;
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg == '/') snprintf(cand[n++], sizeof cand[0], "%s/clad/clad.sock", xdg);
    snprintf(cand[n++], sizeof cand[0], "/run/clad/clad.sock");
    snprintf(cand[n++], sizeof cand[0], "/tmp/clad-%lu/clad.sock", (unsigned long)getuid());
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(cand[i], &st) == 0 && S_ISSOCK(st.st_mode)) {
            snprintf(buf, size, "%s", cand[i]);
            return buf;
        }
    }
    snprintf(buf, size, "%s", cand[n - 1]);
    return buf;
}

static int exit_for_status(int status)
{
    if (status >= 200 && status < 300) return EXIT_OK;
    switch (status) {
    case 404: return EXIT_NOT_FOUND;
    case 403: return EXIT_DENIED;
    case 409: return EXIT_CONFLICT;
    case 503: return EXIT_BUSY;
    default: return EXIT_ERROR;
    }
}

static int exit_for_client_error(int rc)
{
    return rc == CLAD_ECORRUPT || rc == CLAD_EIO ? EXIT_PROTOCOL : EXIT_ERROR;
}

/* One request. On success (a complete reply) returns 0 with resp filled; otherwise prints why and returns
 * the exit code. */
static int request(const options *o, client_request *rq, client_response *resp)
{
    clad_err err = {0};
    int fd = client_connect(o->socket, &err);
    if (fd < 0) {
        fail_msg("%s", err.msg);
        return EXIT_CONNECT;
    }
    int rc = client_exchange(fd, rq, resp, &err);
    close(fd);
    if (rc != 0) {
        fail_msg("%s", err.msg);
        return exit_for_client_error(rc);
    }
    return 0;
}

/* Prints a non-2xx reply: the JSON itself with --json, else "clad: code: message". Returns the exit code. */
static int report_error(const options *o, const client_response *resp)
{
    if (o->json) {
        fwrite(resp->body, 1, resp->body_len, stdout);
    } else {
        json_t *j = json_loads(resp->body, 0, NULL);
        json_t *e = json_object_get(j, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        if (code && msg) fail_msg("%s: %s", code, msg);
        else fail_msg("the daemon answered %d: %.200s", resp->status, resp->body);
        json_decref(j);
    }
    return exit_for_status(resp->status);
}

/* GET path and parse the JSON reply into *out. Returns 0 or an exit code (after printing). */
static int get_json(const options *o, const char *path, json_t **out)
{
    client_request rq = {.method = "GET", .path = path, .timeout_ms = REQUEST_TIMEOUT_MS};
    client_response resp;
    int rc = request(o, &rq, &resp);
    if (rc) return rc;
    if (resp.status < 200 || resp.status >= 300) {
        rc = report_error(o, &resp);
        client_response_finish(&resp);
        return rc;
    }
    if (o->json) {
        fwrite(resp.body, 1, resp.body_len, stdout);
        client_response_finish(&resp);
        *out = NULL;
        return 0;
    }
    json_error_t je;
    *out = json_loads(resp.body, 0, &je);
    client_response_finish(&resp);
    if (!*out) {
        fail_msg("the daemon's reply is not JSON: %s", je.text);
        return EXIT_PROTOCOL;
    }
    return 0;
}

/* --- formatting ------------------------------------------------------------------------------------- */

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "-";
}

static long long num(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

static void format_duration(double s, char *buf, size_t size)
{
    long long t = (long long)s;
    if (t >= 86400) snprintf(buf, size, "%lldd %02lldh %02lldm", t / 86400, t % 86400 / 3600, t % 3600 / 60);
    else if (t >= 3600) snprintf(buf, size, "%lldh %02lldm %02llds", t / 3600, t % 3600 / 60, t % 60);
    else if (t >= 60) snprintf(buf, size, "%lldm %02llds", t / 60, t % 60);
    else snprintf(buf, size, "%.1fs", s);
}

/* "2025-01-31T12:00:00.123Z" -> seconds ago, or -1. */
static double age_of(const char *iso)
{
    struct tm tm = {0};
    if (!iso || !strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm)) return -1;
    return difftime(time(NULL), timegm(&tm));
}

static void progress_text(json_t *progress, char *buf, size_t size)
{
    json_t *done = json_object_get(progress, "done"), *total = json_object_get(progress, "total");
    if (json_is_integer(done) && json_is_integer(total) && json_integer_value(total) > 0)
        snprintf(buf, size, "%lld/%lld %3.0f%%", (long long)json_integer_value(done),
                 (long long)json_integer_value(total),
                 100.0 * (double)json_integer_value(done) / (double)json_integer_value(total));
    else
        snprintf(buf, size, "-");
}

/* --- commands ----------------------------------------------------------------------------------------- */

static int cmd_status(const options *o)
{
    json_t *s = NULL;
    int rc = get_json(o, "/v1/status", &s);
    if (rc || !s) return rc;
    char up[64];
    format_duration(json_number_value(json_object_get(s, "uptime_s")), up, sizeof up);
    printf("cladd %s, pid %lld, up %s%s\n", str(s, "version"), num(s, "pid"), up,
           strcmp(str(s, "status"), "ok") ? " (stopping)" : "");
    printf("%-13s%s%s\n", "socket", str(s, "socket"),
           json_is_true(json_object_get(s, "socket_activated")) ? " (from systemd)" : "");
    printf("%-13s%s\n", "state dir", str(s, "state_dir"));
    json_t *c = json_object_get(s, "connections");
    printf("%-13s%lld open (limit %lld), %lld total, %lld rejected\n", "connections", num(c, "open"),
           num(c, "limit"), num(c, "total"), num(c, "rejected"));
    printf("%-13s%lld\n", "requests", num(s, "requests_total"));
    json_t *j = json_object_get(s, "jobs");
    printf("%-13s%lld running, %lld queued, %lld succeeded, %lld failed, %lld cancelled, %lld interrupted\n",
           "jobs", num(j, "running"), num(j, "queued"), num(j, "succeeded"), num(j, "failed"),
           num(j, "cancelled"), num(j, "interrupted"));
    printf("%-13s%lld KiB resident\n", "memory", num(s, "memory_rss_bytes") / 1024);
    json_decref(s);
    return 0;
}

static int cmd_jobs(const options *o)
{
    char path[256];
    int n = snprintf(path, sizeof path, "/v1/jobs?limit=1000");
    if (o->state) n += snprintf(path + n, sizeof path - (size_t)n, "&state=%s", o->state);
    if (o->lane) snprintf(path + n, sizeof path - (size_t)n, "&lane=%s", o->lane);
    json_t *r = NULL;
    int rc = get_json(o, path, &r);
    if (rc || !r) return rc;
    json_t *jobs = json_object_get(r, "jobs");
    if (json_array_size(jobs) == 0) {
        printf("no jobs\n");
    } else {
        printf("%-6s %-10s %-16s %-12s %-14s %s\n", "ID", "KIND", "LANE", "STATE", "PROGRESS", "AGE");
        size_t i;
        json_t *j;
        json_array_foreach(jobs, i, j) {
            char prog[32], age[64] = "-";
            progress_text(json_object_get(j, "progress"), prog, sizeof prog);
            double a = age_of(str(j, "created"));
            if (a >= 0) format_duration(a, age, sizeof age);
            printf("%-6lld %-10s %-16s %-12s %-14s %s\n", num(j, "id"), str(j, "kind"), str(j, "lane"),
                   str(j, "state"), prog, age);
        }
    }
    json_decref(r);
    return 0;
}

static void print_job(json_t *j)
{
    printf("%-10s%lld\n", "job", num(j, "id"));
    printf("%-10s%s\n", "kind", str(j, "kind"));
    printf("%-10s%s\n", "lane", str(j, "lane"));
    printf("%-10s%s%s\n", "state", str(j, "state"),
           json_is_true(json_object_get(j, "cancel_requested")) && !strcmp(str(j, "state"), "running")
               ? " (cancel requested)"
               : "");
    printf("%-10s%s\n", "created", str(j, "created"));
    printf("%-10s%s\n", "started", str(j, "started"));
    printf("%-10s%s\n", "finished", str(j, "finished"));
    json_t *p = json_object_get(j, "progress");
    if (json_is_object(p)) {
        char prog[32];
        progress_text(p, prog, sizeof prog);
        printf("%-10s%s  %s\n", "progress", prog, str(p, "status"));
    }
    char *params = json_dumps(json_object_get(j, "params"), JSON_COMPACT);
    printf("%-10s%s\n", "params", params ? params : "-");
    free(params);
    json_t *res = json_object_get(j, "result");
    if (json_is_object(res)) {
        char *text = json_dumps(res, JSON_COMPACT);
        printf("%-10s%s\n", "result", text ? text : "-");
        free(text);
    }
    json_t *e = json_object_get(j, "error");
    if (json_is_object(e)) printf("%-10s%s: %s\n", "error", str(e, "code"), str(e, "message"));
}

/* --- following a job ------------------------------------------------------------------------------ */

typedef struct follow_state {
    const options *o;
    bool tty;
    bool bar_shown;
    char final_state[32];
    char error[400]; /* "code: message" of an error reply */
} follow_state;

static void draw_bar(follow_state *f, json_t *ev)
{
    json_t *done = json_object_get(ev, "done"), *total = json_object_get(ev, "total");
    double frac = -1;
    if (json_is_integer(done) && json_is_integer(total) && json_integer_value(total) > 0)
        frac = (double)json_integer_value(done) / (double)json_integer_value(total);
    const char *status = json_string_value(json_object_get(ev, "status"));
    char bar[32];
    const int width = 24;
    int filled = frac < 0 ? 0 : (int)(frac * width + 0.5);
    if (filled > width) filled = width;
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '-';
    bar[width] = '\0';
    if (frac >= 0)
        printf("\r\033[K[%s] %3.0f%%  %s", bar, frac * 100, status ? status : "");
    else
        printf("\r\033[K%s", status ? status : "working");
    fflush(stdout);
    f->bar_shown = true;
}

static int on_follow_line(char *line, size_t len, void *data)
{
    follow_state *f = data;
    if (len == 0) return 0;
    json_t *ev = json_loadb(line, len, 0, NULL);
    const char *kind = json_string_value(json_object_get(ev, "event"));
    json_t *job = json_object_get(ev, "job");
    if (kind && !strcmp(kind, "end"))
        snprintf(f->final_state, sizeof f->final_state, "%s", str(job, "state"));
    json_t *err = kind ? NULL : json_object_get(ev, "error");
    if (err)
        snprintf(f->error, sizeof f->error, "%s: %s", str(err, "code"), str(err, "message"));
    if (f->o->json) {
        fwrite(line, 1, len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    } else if (kind && !strcmp(kind, "job")) {
        printf("job %lld (%s, lane %s): %s\n", num(job, "id"), str(job, "kind"), str(job, "lane"),
               str(job, "state"));
    } else if (kind && !strcmp(kind, "end")) {
        if (f->bar_shown) printf("\n");
        json_t *e = json_object_get(job, "error");
        if (json_is_object(e)) printf("job %lld %s: %s\n", num(job, "id"), str(job, "state"), str(e, "message"));
        else printf("job %lld %s\n", num(job, "id"), str(job, "state"));
    } else if (ev && !err) {
        if (f->tty) {
            draw_bar(f, ev);
        } else {
            const char *status = json_string_value(json_object_get(ev, "status"));
            if (status) printf("%s\n", status);
            else printf("%.*s\n", (int)len, line);
            fflush(stdout);
        }
    }
    json_decref(ev);
    return 0;
}

/* Streams an NDJSON job reply (GET /v1/jobs/ID?follow=1). */
static int follow_job(const options *o, const char *method, const char *path, const char *ctype,
                      const void *body, size_t body_len)
{
    follow_state f = {.o = o, .tty = isatty(STDOUT_FILENO)};
    client_lines lines = {.on_line = on_follow_line, .data = &f, .max_line = 16u << 20};
    client_request rq = {.method = method, .path = path, .content_type = ctype, .body = body,
                         .body_len = body_len, .on_body = client_lines_feed, .data = &lines};
    client_response resp;
    /* A non-2xx reply is small JSON: collect it instead of splitting it. */
    int rc = request(o, &rq, &resp);
    client_lines_finish(&lines);
    if (rc) return rc;
    if (resp.status < 200 || resp.status >= 300) {
        /* The error body went through the line splitter: printed as is with --json, else summarized. */
        if (!o->json) {
            if (f.error[0]) fail_msg("%s", f.error);
            else fail_msg("the daemon answered %d", resp.status);
        }
        client_response_finish(&resp);
        return exit_for_status(resp.status);
    }
    client_response_finish(&resp);
    if (!f.final_state[0]) {
        fail_msg("the stream ended before the job did");
        return EXIT_PROTOCOL;
    }
    return strcmp(f.final_state, "succeeded") ? EXIT_JOB_FAILED : EXIT_OK;
}

static bool valid_id(const char *s)
{
    if (!s || !*s || strlen(s) > 19) return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return false;
    return true;
}

static int cmd_job(const options *o)
{
    if (o->n_args != 1 || !valid_id(o->args[0])) {
        fail_msg("usage: clad job ID [--follow]");
        return EXIT_USAGE;
    }
    char path[64];
    if (o->follow) {
        snprintf(path, sizeof path, "/v1/jobs/%s?follow=1", o->args[0]);
        return follow_job(o, "GET", path, NULL, NULL, 0);
    }
    snprintf(path, sizeof path, "/v1/jobs/%s", o->args[0]);
    json_t *j = NULL;
    int rc = get_json(o, path, &j);
    if (rc || !j) return rc;
    print_job(j);
    json_decref(j);
    return 0;
}

static int cmd_cancel(const options *o)
{
    if (o->n_args != 1 || !valid_id(o->args[0])) {
        fail_msg("usage: clad cancel ID");
        return EXIT_USAGE;
    }
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%s", o->args[0]);
    client_request rq = {.method = "DELETE", .path = path, .timeout_ms = REQUEST_TIMEOUT_MS};
    client_response resp;
    int rc = request(o, &rq, &resp);
    if (rc) return rc;
    if (resp.status < 200 || resp.status >= 300) {
        rc = report_error(o, &resp);
    } else if (o->json) {
        fwrite(resp.body, 1, resp.body_len, stdout);
    } else {
        json_t *j = json_loads(resp.body, 0, NULL);
        if (resp.status == 202)
            printf("job %s: cancel requested; it stops at its next step\n", o->args[0]);
        else
            printf("job %s %s\n", o->args[0], str(j, "state"));
        json_decref(j);
    }
    client_response_finish(&resp);
    return rc;
}

/* Reads a whole file (or stdin for "-"), bounded by MAX_UPLOAD. */
static int read_body(const char *name, char **out, size_t *len)
{
    int fd = strcmp(name, "-") ? open(name, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
    if (fd < 0) {
        fail_msg("%s: %s", name, strerror(errno));
        return EXIT_USAGE;
    }
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    int rc = 0;
    for (;;) {
        if (!buf) {
            fail_msg("out of memory reading %s", name);
            rc = EXIT_ERROR;
            break;
        }
        if (n == cap) {
            if (cap >= MAX_UPLOAD) {
                fail_msg("%s is larger than %llu bytes", name, (unsigned long long)MAX_UPLOAD);
                rc = EXIT_USAGE;
                break;
            }
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                buf = NULL;
                continue;
            }
            buf = b;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            fail_msg("%s: %s", name, strerror(errno));
            rc = EXIT_USAGE;
            break;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    if (fd != STDIN_FILENO) close(fd);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return 0;
}

static int raw_body(const char *data, size_t len, void *arg)
{
    fwrite(data, 1, len, stdout);
    fflush(stdout); /* streams show up as they come */
    return 0;
}

static int cmd_raw(const options *o)
{
    if (o->n_args < 2 || o->n_args > 3 || o->args[1][0] != '/') {
        fail_msg("usage: clad raw METHOD PATH [FILE|-] [--content-type TYPE]");
        return EXIT_USAGE;
    }
    char *body = NULL;
    size_t body_len = 0;
    if (o->n_args == 3) {
        int rc = read_body(o->args[2], &body, &body_len);
        if (rc) return rc;
    }
    client_request rq = {.method = o->args[0], .path = o->args[1], .on_body = raw_body};
    if (body) {
        rq.body = body;
        rq.body_len = body_len;
        rq.content_type = o->content_type ? o->content_type : "application/json";
    }
    client_response resp;
    int rc = request(o, &rq, &resp);
    free(body);
    if (rc) return rc;
    rc = exit_for_status(resp.status);
    client_response_finish(&resp);
    return rc;
}

/* --- main ------------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    options o = {0};
    const char *command = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_next = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--version")) {
            printf("clad %s\n", CLAD_VERSION);
            return EXIT_OK;
        } else if (!strcmp(a, "--json")) {
            o.json = true;
        } else if (!strcmp(a, "--follow") || !strcmp(a, "-f")) {
            o.follow = true;
        } else if (!strcmp(a, "--socket") && has_next) {
            o.socket = argv[++i];
        } else if (!strcmp(a, "--state") && has_next) {
            o.state = argv[++i];
        } else if (!strcmp(a, "--lane") && has_next) {
            o.lane = argv[++i];
        } else if (!strcmp(a, "--content-type") && has_next) {
            o.content_type = argv[++i];
        } else if (a[0] == '-' && a[1] == '-') {
            fail_msg("unknown option or missing value: %s", a);
            usage(stderr);
            return EXIT_USAGE;
        } else if (!command) {
            command = a;
        } else if (o.n_args < (int)(sizeof o.args / sizeof o.args[0])) {
            o.args[o.n_args++] = a;
        } else {
            fail_msg("too many arguments");
            return EXIT_USAGE;
        }
    }
    if (!command) {
        usage(stderr);
        return EXIT_USAGE;
    }
    char sock[256];
    if (!o.socket) o.socket = default_socket(sock, sizeof sock);
    if ((o.state || o.lane) && strcmp(command, "jobs")) {
        fail_msg("--state and --lane go with 'clad jobs'");
        return EXIT_USAGE;
    }
    if (o.state && (strspn(o.state, "abcdefghijklmnopqrstuvwxyz") != strlen(o.state))) {
        fail_msg("--state takes a state name such as running");
        return EXIT_USAGE;
    }
    if (o.lane && strpbrk(o.lane, "&?#% /")) {
        fail_msg("--lane takes a plain name");
        return EXIT_USAGE;
    }
    if (!strcmp(command, "status") && o.n_args == 0) return cmd_status(&o);
    if (!strcmp(command, "jobs") && o.n_args == 0) return cmd_jobs(&o);
    if (!strcmp(command, "job")) return cmd_job(&o);
    if (!strcmp(command, "cancel")) return cmd_cancel(&o);
    if (!strcmp(command, "raw")) return cmd_raw(&o);
    if (!strcmp(command, "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    fail_msg("unknown command or wrong arguments: %s", command);
    usage(stderr);
    return EXIT_USAGE;
}
