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

#include "daemon/cli.h"

#ifndef CLAD_VERSION
#define CLAD_VERSION "unknown"
#endif

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
            "%s"
            "%s"
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
            "            6 conflict, 7 busy, 8 followed job did not succeed, 9 bad reply\n",
            cli_tasks_usage, cli_interop_usage);
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
        } else if (a[0] == '-' && a[1] == '-' && has_next && cli_value_option(a + 2)) {
            if (o.n_opts == CLI_MAX_OPTS) {
                fail_msg("too many options");
                return EXIT_USAGE;
            }
            o.opt_key[o.n_opts] = a + 2;
            o.opt_val[o.n_opts++] = argv[++i];
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
    int trc = cli_tasks_dispatch(command, &o);
    if (trc >= 0) return trc;
    trc = cli_interop_dispatch(command, &o);
    if (trc >= 0) return trc;
    if (!strcmp(command, "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    fail_msg("unknown command or wrong arguments: %s", command);
    usage(stderr);
    return EXIT_USAGE;
}
