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
 *   130  Ctrl-C while following a job (which goes on in the daemon unless cancelled when asked)
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
    cli_url u;
    url_init(&u, "/v1/jobs");
    url_query(&u, "limit", "1000");
    url_query(&u, "state", o->state);
    url_query(&u, "lane", o->lane);
    json_t *r = NULL;
    int rc = get_json(o, url_path(&u), &r);
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
    cli_url u;
    url_init(&u, "/v1/jobs");
    url_seg(&u, o->args[0]);
    if (o->follow) {
        url_query(&u, "follow", "1");
        return follow_job(o, "GET", url_path(&u), NULL, NULL, 0);
    }
    json_t *j = NULL;
    int rc = get_json(o, url_path(&u), &j);
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
    cli_url u;
    url_init(&u, "/v1/jobs");
    url_seg(&u, o->args[0]);
    client_request rq = {.method = "DELETE", .path = url_path(&u), .timeout_ms = REQUEST_TIMEOUT_MS};
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
    if (o->n_args >= 2 && o->n_args <= 3 && o->args[1][0] != '/') {
        fail_msg("clad raw: PATH must start with / (e.g. /%s)", o->args[1]);
        return EXIT_USAGE;
    }
    if (o->n_args < 2 || o->n_args > 3) {
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

static int cmd_help(const options *o);

static const cli_command core_commands[] = {
    {"status", "", "the daemon's state: uptime, connections, jobs", NULL, "", cmd_status},
    {"jobs", "", "list jobs, newest first", "state,lane",
     "  --state S           only jobs in state S (queued, running, succeeded, failed, cancelled, interrupted)\n"
     "  --lane L            only jobs of lane L (a task name, or the lane a job was given)\n",
     cmd_jobs},
    {"job", "ID", "one job", "follow",
     "  --follow, -f        show its progress until it ends (a progress bar on a terminal)\n", cmd_job},
    {"cancel", "ID", "cancel a queued or running job", NULL, "", cmd_cancel},
    {"raw", "METHOD PATH [FILE|-]", "send a request (body from FILE or stdin) and print the reply",
     "content-type", "  --content-type TYPE the body's media type (default application/json)\n", cmd_raw},
    {"help", "[COMMAND]", "this text, or a command's options", NULL, "", cmd_help},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};

static const cli_command *const command_tables[] = {core_commands, cli_task_commands, cli_report_commands,
                                                    cli_lifecycle_commands, cli_interop_commands};

static const cli_command *find_command(const char *name)
{
    for (size_t t = 0; t < sizeof command_tables / sizeof command_tables[0]; t++)
        for (const cli_command *c = command_tables[t]; c->name; c++)
            if (!strcmp(c->name, name)) return c;
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: clad [--socket PATH] [--json] COMMAND [ARGS] [--OPTION VALUE | --OPTION=VALUE]...\n"
               "\ncommands (clad COMMAND --help for each one's options):\n");
    for (size_t t = 0; t < sizeof command_tables / sizeof command_tables[0]; t++)
        for (const cli_command *c = command_tables[t]; c->name; c++) {
            char head[64];
            snprintf(head, sizeof head, "%s %s", c->name, c->args);
            fprintf(f, "  %-36s %s\n", head, c->summary);
        }
    fprintf(f,
            "\n"
            "options:\n"
            "  --socket PATH   the daemon's socket (default: $CLAD_SOCKET, else the first that exists of\n"
            "                  $XDG_RUNTIME_DIR/clad/clad.sock, /run/clad/clad.sock, /tmp/clad-$UID/clad.sock)\n"
            "  --json          print the daemon's JSON instead of tables\n"
            "  --version       (before the command) print clad's version; after it, --version V picks a version\n"
            "  --help          this text; after a command, that command's options\n"
            "\n"
            "exit codes: 0 ok, 1 error reply, 2 usage, 3 cannot connect, 4 not found, 5 denied,\n"
            "            6 conflict, 7 busy, 8 followed job did not succeed, 9 bad reply,\n"
            "            130 Ctrl-C while following a job\n");
}

static int cmd_help(const options *o)
{
    if (o->n_args == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    const cli_command *c = o->n_args == 1 ? find_command(o->args[0]) : NULL;
    if (!c) {
        fail_msg("no such command: %s (clad help lists them)", o->args[0]);
        return EXIT_USAGE;
    }
    cli_command_help(c, stdout);
    return EXIT_OK;
}

/* --- main ------------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    options o = {0};
    const char *command = NULL;
    bool help = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!strcmp(a, "-h")) {
            help = true;
            continue;
        }
        if (!strcmp(a, "-f")) {
            o.follow = true;
            continue;
        }
        if (!strcmp(a, "-d")) {
            o.detach = true;
            continue;
        }
        if (a[0] != '-' || !strcmp(a, "-") || (a[1] != '-' && command)) {
            /* A command, an argument, "-" (stdin), or a negative number after the command. */
            if (!command) command = a;
            else if (o.n_args < (int)(sizeof o.args / sizeof o.args[0])) o.args[o.n_args++] = a;
            else {
                fail_msg("too many arguments");
                return EXIT_USAGE;
            }
            continue;
        }
        if (a[1] != '-' || !a[2]) {
            fail_msg("unknown option %s (options are --NAME VALUE or --NAME=VALUE)", a);
            return EXIT_USAGE;
        }
        /* --key value or --key=value (the '=' is cut in place; argv is ours). */
        char *key = a + 2, *value = strchr(key, '=');
        if (value) *value++ = '\0';
        bool is_flag = !strcmp(key, "help") || !strcmp(key, "json") || !strcmp(key, "follow") || !strcmp(key, "detach") ||
                       !strcmp(key, "explain") || (!strcmp(key, "version") && !command && !value);
        if (is_flag && value) {
            fail_msg("--%s takes no value", key);
            return EXIT_USAGE;
        }
        if (!strcmp(key, "help")) {
            help = true;
        } else if (!strcmp(key, "version") && is_flag) {
            /* Only before the command: after it, --version V is an option (predict, eval). */
            printf("clad %s\n", CLAD_VERSION);
            return EXIT_OK;
        } else if (!strcmp(key, "json")) {
            o.json = true;
        } else if (!strcmp(key, "follow")) {
            o.follow = true;
        } else if (!strcmp(key, "detach")) {
            o.detach = true;
        } else if (!strcmp(key, "explain") && o.n_opts < CLI_MAX_OPTS) {
            /* A flag that is passed on as an option (clad train --explain). */
            o.opt_key[o.n_opts] = key;
            o.opt_val[o.n_opts++] = "1";
        } else {
            if (!value && i + 1 < argc) value = argv[++i];
            if (!value) {
                fail_msg("--%s needs a value", key);
                return EXIT_USAGE;
            }
            if (!strcmp(key, "socket")) {
                o.socket = value;
            } else if (o.n_opts == CLI_MAX_OPTS) {
                fail_msg("too many options");
                return EXIT_USAGE;
            } else {
                o.opt_key[o.n_opts] = key;
                o.opt_val[o.n_opts++] = value;
            }
        }
    }
    if (!command) {
        usage(help ? stdout : stderr);
        return help ? EXIT_OK : EXIT_USAGE;
    }
    const cli_command *c = find_command(command);
    if (!c) {
        fail_msg("unknown command: %s (clad --help lists them)", command);
        return EXIT_USAGE;
    }
    if (help) {
        cli_command_help(c, stdout);
        return EXIT_OK;
    }
    if (!c->args[0] && o.n_args) {
        fail_msg("clad %s takes no arguments (got '%s')", command, o.args[0]);
        return EXIT_USAGE;
    }
    for (int i = 0; i < o.n_opts; i++)
        if (!cli_listed(c->options, o.opt_key[i]) || !strcmp(o.opt_key[i], "follow") || !strcmp(o.opt_key[i], "detach")) {
            fail_msg("clad %s does not take --%s (clad %s --help lists its options)", command, o.opt_key[i], command);
            return EXIT_USAGE;
        }
    if (o.follow && !cli_listed(c->options, "follow")) {
        fail_msg("clad %s does not take --follow", command);
        return EXIT_USAGE;
    }
    if (o.detach && !cli_listed(c->options, "detach")) {
        fail_msg("clad %s does not take --detach", command);
        return EXIT_USAGE;
    }
    o.state = cli_opt(&o, "state");
    o.lane = cli_opt(&o, "lane");
    o.content_type = cli_opt(&o, "content-type");
    if (o.state && (strspn(o.state, "abcdefghijklmnopqrstuvwxyz") != strlen(o.state))) {
        fail_msg("--state takes a state name such as running");
        return EXIT_USAGE;
    }
    char sock[256];
    if (!o.socket) o.socket = default_socket(sock, sizeof sock);
    return c->run(&o);
}
