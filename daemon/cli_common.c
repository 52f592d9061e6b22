/* Shared pieces of the clad CLI: socket and requests, error reporting, formatting, following jobs. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/cli.h"

void fail_msg(const char *fmt, ...)
{
    va_list ap;
    fputs("clad: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* --- socket and requests ---------------------------------------------------------------------------- */

const char *default_socket(char *buf, size_t size)
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

int exit_for_status(int status)
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

int exit_for_client_error(int rc)
{
    return rc == CLAD_ECORRUPT || rc == CLAD_EIO ? EXIT_PROTOCOL : EXIT_ERROR;
}

/* One request. On success (a complete reply) returns 0 with resp filled; otherwise prints why and returns
 * the exit code. */
int request(const options *o, client_request *rq, client_response *resp)
{
    if (!rq->path) return EXIT_USAGE; /* url_path said why */
    clad_err err = {0};
    int fd = client_connect(o->socket, &err);
    if (fd < 0) {
        fail_msg("%s", err.msg);
        return EXIT_CONNECT;
    }
    cli_interrupt_set_fd(fd);
    int rc = client_exchange(fd, rq, resp, &err);
    cli_interrupt_set_fd(-1);
    close(fd);
    if (rc != 0) {
        if (!cli_interrupted()) fail_msg("%s", err.msg); /* Ctrl-C cut it: the caller explains */
        return exit_for_client_error(rc);
    }
    return 0;
}

/* Prints a non-2xx reply: the JSON itself with --json, else "clad: code: message". Returns the exit code. */
int report_error(const options *o, const client_response *resp)
{
    if (o->json) {
        fwrite(resp->body, 1, resp->body_len, stdout);
    } else {
        json_t *j = json_loads(resp->body, 0, NULL);
        json_t *e = json_object_get(j, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        char words[600];
        if (code && msg) {
            cli_words(msg, words, sizeof words);
            fail_msg("%s: %s", code, words);
        } else {
            fail_msg("the daemon answered %d: %.200s", resp->status, resp->body);
        }
        json_decref(j);
    }
    return exit_for_status(resp->status);
}

/* GET path and parse the JSON reply into *out. Returns 0 or an exit code (after printing). */
int get_json(const options *o, const char *path, json_t **out)
{
    return send_json(o, "GET", path, NULL, NULL, 0, out);
}

/* --- formatting ------------------------------------------------------------------------------------- */

const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "-";
}

long long num(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

void format_duration(double s, char *buf, size_t size)
{
    long long t = (long long)s;
    if (t >= 86400) snprintf(buf, size, "%lldd %02lldh %02lldm", t / 86400, t % 86400 / 3600, t % 3600 / 60);
    else if (t >= 3600) snprintf(buf, size, "%lldh %02lldm %02llds", t / 3600, t % 3600 / 60, t % 60);
    else if (t >= 60) snprintf(buf, size, "%lldm %02llds", t / 60, t % 60);
    else snprintf(buf, size, "%.1fs", s);
}

void format_age_ms(long long ms, char *buf, size_t size)
{
    if (ms <= 0) {
        snprintf(buf, size, "-");
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double s = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 - (double)ms / 1e3;
    format_duration(s > 0 ? s : 0, buf, size);
}

/* "2025-01-31T12:00:00.123Z" -> seconds ago, or -1. */
double age_of(const char *iso)
{
    struct tm tm = {0};
    if (!iso || !strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm)) return -1;
    return difftime(time(NULL), timegm(&tm));
}

void progress_text(json_t *progress, char *buf, size_t size)
{
    json_t *done = json_object_get(progress, "done"), *total = json_object_get(progress, "total");
    if (json_is_integer(done) && json_is_integer(total) && json_integer_value(total) > 0)
        snprintf(buf, size, "%lld/%lld %3.0f%%", (long long)json_integer_value(done),
                 (long long)json_integer_value(total),
                 100.0 * (double)json_integer_value(done) / (double)json_integer_value(total));
    else
        snprintf(buf, size, "-");
}


/* --- following a job ------------------------------------------------------------------------------ */

typedef struct follow_state {
    const options *o;
    bool tty;
    bool bar_shown;
    long long job_id; /* from the first event, for Ctrl-C */
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
        fprintf(stderr, "\r\033[K[%s] %3.0f%%  %s", bar, frac * 100, status ? status : "");
    else
        fprintf(stderr, "\r\033[K%s", status ? status : "working");
    f->bar_shown = true;
}

static int on_follow_line(char *line, size_t len, void *data)
{
    follow_state *f = data;
    if (len == 0) return 0;
    json_t *ev = json_loadb(line, len, 0, NULL);
    const char *kind = json_string_value(json_object_get(ev, "event"));
    json_t *job = json_object_get(ev, "job");
    if (kind && !strcmp(kind, "job")) f->job_id = num(job, "id");
    if (kind && !strcmp(kind, "end"))
        snprintf(f->final_state, sizeof f->final_state, "%s", str(job, "state"));
    json_t *err = kind ? NULL : json_object_get(ev, "error");
    if (err) {
        char words[380];
        cli_words(str(err, "message"), words, sizeof words);
        snprintf(f->error, sizeof f->error, "%s: %s", str(err, "code"), words);
    }
    if (f->o->json) {
        fwrite(line, 1, len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    } else if (kind && !strcmp(kind, "job")) {
        printf("job %lld (%s, lane %s): %s\n", num(job, "id"), str(job, "kind"), str(job, "lane"),
               str(job, "state"));
    } else if (kind && !strcmp(kind, "end")) {
        if (f->bar_shown) fputc('\n', stderr);
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

static long long last_followed_job;

long long followed_job_id(void)
{
    return last_followed_job;
}

/* Streams an NDJSON job reply (GET /v1/jobs/ID?follow=1). */
int follow_job(const options *o, const char *method, const char *path, const char *ctype,
                      const void *body, size_t body_len)
{
    /* The bar goes to stderr when that is a terminal; otherwise one status line per event on stdout. */
    follow_state f = {.o = o, .tty = isatty(STDERR_FILENO)};
    client_lines lines = {.on_line = on_follow_line, .data = &f, .max_line = 16u << 20};
    client_request rq = {.method = method, .path = path, .content_type = ctype, .body = body,
                         .body_len = body_len, .on_body = client_lines_feed, .data = &lines};
    client_response resp;
    /* A non-2xx reply is small JSON: collect it instead of splitting it. */
    cli_interrupt_arm();
    int rc = request(o, &rq, &resp);
    client_lines_finish(&lines);
    last_followed_job = f.job_id;
    if (cli_interrupted()) {
        if (!rc) client_response_finish(&resp);
        return cli_interrupt_resolve(o, f.job_id);
    }
    signal(SIGINT, SIG_DFL);
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

bool valid_id(const char *s)
{
    if (!s || !*s || strspn(s, "0123456789") != strlen(s)) return false;
    /* Ids and versions are int64 in the store: a longer number would be clamped, naming another one. */
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    return errno == 0 && v >= 0;
}


/* Reads a whole file (or stdin for "-"), bounded by MAX_UPLOAD. */
int read_body(const char *name, char **out, size_t *len)
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


const char *cli_opt(const options *o, const char *key)
{
    for (int i = 0; i < o->n_opts; i++)
        if (!strcmp(o->opt_key[i], key)) return o->opt_val[i];
    return NULL;
}

int send_json(const options *o, const char *method, const char *path, const char *ctype, const void *body,
              size_t body_len, json_t **out)
{
    /* Requests with a body may wait for work (an upload to parse); plain reads time out. */
    client_request rq = {.method = method, .path = path, .content_type = body ? ctype : NULL, .body = body,
                         .body_len = body_len, .timeout_ms = body ? 0 : REQUEST_TIMEOUT_MS};
    client_response resp;
    *out = NULL;
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

/* --- request paths ------------------------------------------------------------------------------------ */

static void url_put(cli_url *u, const char *text, bool encode)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        bool plain = !encode || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                     strchr("-._~", *p);
        size_t need = plain ? 1 : 3;
        if (u->len + need >= sizeof u->s) {
            u->overflow = true;
            return;
        }
        if (plain) u->s[u->len++] = (char)*p;
        else u->len += (size_t)snprintf(u->s + u->len, 4, "%%%02X", *p);
    }
    u->s[u->len] = '\0';
}

void url_init(cli_url *u, const char *literal)
{
    u->len = 0;
    u->s[0] = '\0';
    u->has_query = u->overflow = false;
    url_put(u, literal, false);
}

void url_lit(cli_url *u, const char *literal)
{
    url_put(u, literal, false);
}

void url_seg(cli_url *u, const char *segment)
{
    url_put(u, "/", false);
    url_put(u, segment, true);
}

void url_query(cli_url *u, const char *key, const char *value)
{
    if (!value) return;
    url_put(u, u->has_query ? "&" : "?", false);
    u->has_query = true;
    url_put(u, key, true);
    url_put(u, "=", false);
    url_put(u, value, true);
}

const char *url_path(const cli_url *u)
{
    if (!u->overflow) return u->s;
    fail_msg("the request is too long (an option value is longer than %zu bytes)", sizeof u->s);
    return NULL;
}

/* --- names ------------------------------------------------------------------------------------------- */

bool cli_name_ok(const char *what, const char *name)
{
    if (name_is_valid(name)) return true;
    fail_msg("%s name '%s' is not valid: use " NAME_RULE_TEXT, what, name);
    return false;
}

bool task_ref_parse(const char *arg, task_ref *r)
{
    memset(r, 0, sizeof *r);
    const char *at = strchr(arg, '@');
    size_t n = at ? (size_t)(at - arg) : strlen(arg);
    if (n > STORE_NAME_MAX) {
        fail_msg("task name '%.*s' is not valid: use " NAME_RULE_TEXT, (int)n, arg);
        return false;
    }
    memcpy(r->task, arg, n);
    r->task[n] = '\0';
    if (!cli_name_ok("task", r->task)) return false;
    if (!at) return true;
    const char *ref = at + 1;
    if (*ref && strspn(ref, "0123456789") == strlen(ref)) {
        if (!valid_id(ref) || strtoull(ref, NULL, 10) == 0) {
            fail_msg("'%s': versions are numbered from 1 to %lld", arg, (long long)INT64_MAX);
            return false;
        }
        snprintf(r->version, sizeof r->version, "%s", ref);
        return true;
    }
    if (!name_is_valid(ref)) {
        fail_msg("'%s': after '@' give a version number or an alias name (" NAME_RULE_TEXT ")", arg);
        return false;
    }
    snprintf(r->alias, sizeof r->alias, "%s", ref);
    return true;
}

bool task_ref_has_ref(const task_ref *r)
{
    return r->version[0] || r->alias[0];
}

/* --- commands ---------------------------------------------------------------------------------------- */

void cli_command_help(const cli_command *c, FILE *f)
{
    fprintf(f, "usage: clad %s%s%s%s\n\n%c%s.\n", c->name, c->args[0] ? " " : "", c->args,
            c->options ? " [options]" : "", toupper((unsigned char)c->summary[0]), c->summary + 1);
    if (c->help && c->help[0]) fprintf(f, "\n%s", c->help);
    fprintf(f, "\nOptions take a value as --name VALUE or --name=VALUE; --json prints the daemon's JSON.\n");
}

/* Copies a run of [a-z_] from *p as an option name ("fuse_with" -> "fuse-with"); returns its length. */
static size_t option_word(const char *p, char *out, size_t size)
{
    size_t n = 0;
    while (((p[n] >= 'a' && p[n] <= 'z') || p[n] == '_') && n + 1 < size) {
        out[n] = p[n] == '_' ? '-' : p[n];
        n++;
    }
    out[n] = '\0';
    return n;
}

void cli_words(const char *msg, char *out, size_t size)
{
    static const char qp[] = "query parameter '";
    size_t o = 0;
    char name[64];
    for (const char *p = msg; *p && o + 1 < size;) {
        size_t n;
        if (!strncmp(p, qp, sizeof qp - 1) && (n = option_word(p + sizeof qp - 1, name, sizeof name)) &&
            p[sizeof qp - 1 + n] == '\'') {
            /* "query parameter 'epochs' must be ..." -> "--epochs must be ..." */
            o += (size_t)snprintf(out + o, size - o, "--%s", name);
            p += sizeof qp - 1 + n + 1;
        } else if (*p == '?' && (n = option_word(p + 1, name, sizeof name)) && p[1 + n] == '=') {
            /* "say which with ?base=NAME" -> "say which with --base NAME" */
            bool has_value = p[2 + n] && p[2 + n] != ' ';
            o += (size_t)snprintf(out + o, size - o, "--%s%s", name, has_value ? " " : "");
            p += 2 + n;
        } else {
            out[o++] = *p++;
        }
        if (o >= size) o = size - 1;
    }
    out[o] = '\0';
}

bool cli_listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
        if (strcspn(p, ",") == n && !strncmp(p, name, n)) return true;
    }
    return false;
}
