/* clad commands that show what the daemon knows: the accuracy matrix, the HTML report, what is loaded,
 * aliases, and health. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/cli.h"

/* The base named on the command line, or the only one there is. */
static int pick_base(const options *o, char *out, size_t size)
{
    if (o->n_args == 1) {
        if (!cli_name_ok("base", o->args[0])) return EXIT_USAGE;
        snprintf(out, size, "%s", o->args[0]);
        return 0;
    }
    if (o->n_args > 1) {
        fail_msg("give at most one BASE");
        return EXIT_USAGE;
    }
    options q = *o;
    q.json = false;
    json_t *r = NULL;
    int rc = get_json(&q, "/v1/bases", &r);
    if (rc) return rc;
    json_t *bases = json_object_get(r, "bases");
    if (json_array_size(bases) == 1) snprintf(out, size, "%s", str(json_array_get(bases, 0), "name"));
    else fail_msg(json_array_size(bases) ? "there are %zu bases; name one" : "there is no base yet", json_array_size(bases));
    rc = json_array_size(bases) == 1 ? 0 : EXIT_USAGE;
    json_decref(r);
    return rc;
}

/* "/v1/bases/BASE/what" for the base named on the command line or the only one; NULL after saying why
 * (*rc the exit code). */
static const char *base_path(const options *o, cli_url *u, const char *what, char *base, size_t size, int *rc)
{
    if ((*rc = pick_base(o, base, size))) return NULL;
    url_init(u, "/v1/bases");
    url_seg(u, base);
    url_lit(u, what);
    const char *path = url_path(u);
    if (!path) *rc = EXIT_USAGE;
    return path;
}

static void print_cross(json_t *cross)
{
    if (!json_array_size(cross)) return;
    printf("\nevaluations on other tasks' data (kept apart from the matrix):\n");
    size_t i;
    json_t *x;
    json_array_foreach(cross, i, x)
        printf("  %s@%lld on %s's data %s: accuracy %.4f, loss %.4f, %lld samples\n", str(x, "task"), num(x, "version"),
               str(x, "data_task"), json_is_string(json_object_get(x, "data_name")) ? str(x, "data_name") : str(x, "data_sha256"),
               json_number_value(json_object_get(x, "accuracy")), json_number_value(json_object_get(x, "loss")),
               num(x, "samples"));
}

static int cmd_matrix(const options *o)
{
    char base[160];
    cli_url u;
    int rc;
    const char *path = base_path(o, &u, "/matrix", base, sizeof base, &rc);
    if (!path) return rc;
    json_t *m = NULL;
    if ((rc = get_json(o, path, &m)) || !m) return rc;
    json_t *tasks = json_object_get(m, "tasks"), *rows = json_object_get(m, "rows"), *t, *row;
    size_t i, k;
    printf("%-24s", "AFTER \\ TASK");
    json_array_foreach(tasks, k, t) printf(" %10.10s", json_string_value(t));
    printf("\n");
    json_array_foreach(rows, i, row) {
        json_t *after = json_object_get(row, "after"), *cells = json_object_get(row, "cells");
        char label[96];
        snprintf(label, sizeof label, "%s@%lld", str(after, "task"), num(after, "version"));
        printf("%-24s", label);
        json_array_foreach(tasks, k, t) {
            json_t *c = json_object_get(cells, json_string_value(t));
            if (c) printf(" %10.4f", json_number_value(json_object_get(c, "accuracy")));
            else printf(" %10s", "-");
        }
        printf("\n");
    }
    /* Which data each column was measured on (the latest cell of each column). */
    json_array_foreach(tasks, k, t) {
        json_t *last = NULL;
        json_array_foreach(rows, i, row) {
            json_t *c = json_object_get(json_object_get(row, "cells"), json_string_value(t));
            if (c) last = c;
        }
        if (last)
            printf("%s: test data %s (sha256 %.12s..)\n", json_string_value(t),
                   json_is_string(json_object_get(last, "data_name")) ? str(last, "data_name") : "unnamed",
                   str(last, "data_sha256"));
    }
    print_cross(json_object_get(m, "cross"));
    json_decref(m);
    return 0;
}

static int cmd_report(const options *o)
{
    char base[160], file[256];
    cli_url u;
    int rc;
    const char *path = base_path(o, &u, "/report", base, sizeof base, &rc);
    if (!path) return rc;
    const char *out = cli_opt(o, "out");
    if (!out && isatty(STDOUT_FILENO)) {
        snprintf(file, sizeof file, "clad-report-%s.html", base);
        out = file;
    }
    client_request rq = {.method = "GET", .path = path, .timeout_ms = REQUEST_TIMEOUT_MS};
    client_response resp;
    if ((rc = request(o, &rq, &resp))) return rc;
    if (resp.status != 200) {
        rc = report_error(o, &resp);
        client_response_finish(&resp);
        return rc;
    }
    FILE *f = out && strcmp(out, "-") ? fopen(out, "w") : stdout;
    if (!f) {
        fail_msg("cannot write %s: %s", out, strerror(errno));
        client_response_finish(&resp);
        return EXIT_ERROR; /* as clad export does */
    }
    bool ok = fwrite(resp.body, 1, resp.body_len, f) == resp.body_len;
    if (f != stdout) ok = fclose(f) == 0 && ok;
    else ok = fflush(stdout) == 0 && ok;
    if (!ok) fail_msg("writing %s failed", out && strcmp(out, "-") ? out : "stdout");
    else if (f != stdout) fprintf(stderr, "clad: report of base %s written to %s (%zu bytes)\n", base, out, resp.body_len);
    client_response_finish(&resp);
    return ok ? 0 : EXIT_ERROR;
}

/* "3m 10s ago" for a Unix ms time. */
static void ago(long long ms, char *buf, size_t size)
{
    if (ms <= 0) {
        snprintf(buf, size, "-");
        return;
    }
    char d[48];
    format_age_ms(ms, d, sizeof d);
    snprintf(buf, size, "%s ago", d);
}

static int cmd_ps(const options *o)
{
    json_t *r = NULL;
    int rc = get_json(o, "/v1/loaded", &r);
    if (rc || !r) return rc;
    json_t *bases = json_object_get(r, "bases"), *adapters = json_object_get(r, "adapters"), *x;
    size_t i;
    printf("%-8s %-28s %-8s %12s %6s %8s  %s\n", "WHAT", "NAME", "KIND", "BYTES", "IN USE", "HITS", "LAST USE");
    char when[64], name[96];
    json_array_foreach(bases, i, x) {
        ago(num(x, "last_used_ms"), when, sizeof when);
        printf("%-8s %-28s %-8s %12lld %6lld %8s  %s\n", "base", str(x, "name"), "-", num(x, "bytes"), num(x, "in_use"), "-", when);
    }
    json_array_foreach(adapters, i, x) {
        ago(num(x, "last_used_ms"), when, sizeof when);
        snprintf(name, sizeof name, "%s@%lld", str(x, "task"), num(x, "version"));
        printf("%-8s %-28s %-8s %12lld %6lld %8lld  %s\n", "adapter", name, str(x, "kind"), num(x, "bytes"),
               num(x, "in_use"), num(x, "hits"), when);
    }
    if (!json_array_size(bases) && !json_array_size(adapters)) printf("nothing is loaded\n");
    json_decref(r);
    return 0;
}

/* The nodes sharing the daemon's store (/v1/status "nodes"), this one marked with '*'. */
static int cmd_nodes(const options *o)
{
    json_t *s = NULL, *x;
    int rc = get_json(o, "/v1/status", &s);
    if (rc || !s) return rc;
    json_t *nodes = json_object_get(s, "nodes");
    size_t i;
    printf("  %-28s %-8s %-16s %8s %5s  %-18s %s\n", "NODE", "STATE", "HOST", "PID", "JOBS", "LAST SEEN", "SOCKET");
    json_array_foreach(nodes, i, x) {
        char seen[64];
        ago(num(x, "last_seen_ms"), seen, sizeof seen);
        printf("%c %-28s %-8s %-16s %8lld %5lld  %-18s %s\n", json_is_true(json_object_get(x, "self")) ? '*' : ' ',
               str(x, "id"), str(x, "state"), str(x, "host"), num(x, "pid"), num(x, "running_jobs"), seen,
               str(x, "socket"));
    }
    printf("store %s\n", str(s, "store"));
    json_decref(s);
    return 0;
}

static int cmd_aliases(const options *o)
{
    if (o->n_args > 1) {
        fail_msg("usage: clad aliases [TASK]");
        return EXIT_USAGE;
    }
    json_t *r = NULL, *x;
    size_t i;
    const char *key;
    int rc;
    if (!o->n_args) {
        if ((rc = get_json(o, "/v1/tasks", &r)) || !r) return rc;
        printf("%-24s %-16s %s\n", "TASK", "ALIAS", "VERSION");
        json_array_foreach(json_object_get(r, "tasks"), i, x) {
            json_t *v;
            json_object_foreach(json_object_get(x, "aliases"), key, v)
                printf("%-24s %-16s %lld\n", str(x, "name"), key, (long long)json_integer_value(v));
        }
        json_decref(r);
        return 0;
    }
    if (!cli_name_ok("task", o->args[0])) return EXIT_USAGE;
    cli_url u;
    url_init(&u, "/v1/tasks");
    url_seg(&u, o->args[0]);
    url_lit(&u, "/aliases");
    if ((rc = get_json(o, url_path(&u), &r)) || !r) return rc;
    json_object_foreach(json_object_get(r, "aliases"), key, x) printf("%-16s -> %lld\n", key, (long long)json_integer_value(x));
    printf("\n%-24s %-16s %-9s %6s %6s  %s\n", "WHEN", "ALIAS", "ACTION", "FROM", "TO", "REASON");
    json_array_foreach(json_object_get(r, "history"), i, x) {
        char when[64];
        ago(num(x, "time_ms"), when, sizeof when);
        char from[24] = "-"; /* a new alias came from nowhere */
        if (num(x, "from")) snprintf(from, sizeof from, "%lld", num(x, "from"));
        printf("%-24s %-16s %-9s %6s %6lld  %s\n", when, str(x, "alias"), str(x, "action"), from, num(x, "to"),
               str(x, "reason"));
    }
    json_decref(r);
    return 0;
}

static int cmd_health(const options *o)
{
    json_t *r = NULL;
    int rc = get_json(o, "/v1/health", &r);
    if (rc || !r) return rc; /* with --json the reply was printed; the exit code says it answered */
    bool ok = !strcmp(str(r, "status"), "ok");
    printf("%s (cladd %s)\n", str(r, "status"), str(r, "version"));
    json_decref(r);
    return ok ? EXIT_OK : EXIT_BUSY;
}

const cli_command cli_report_commands[] = {
    {"matrix", "[BASE]", "the accuracy matrix of a base's tasks, and cross-evaluations", NULL,
     "BASE may be left out when there is one base. Rows are versions (after training them), columns the\n"
     "tasks whose own test data was evaluated; evaluations on another task's data are listed apart.\n",
     cmd_matrix},
    {"report", "[BASE]", "an HTML report of a base's tasks with plots", "out",
     "BASE may be left out when there is one base. The page is one self-contained file.\n"
     "  --out FILE          where to write it (- for stdout; default stdout, or clad-report-BASE.html\n"
     "                      when stdout is a terminal)\n",
     cmd_report},
    {"ps", "", "bases and adapter versions loaded in the daemon's memory", NULL, "", cmd_ps},
    {"nodes", "", "the nodes sharing the daemon's store: live, dead (no heartbeat for 5 s) or stopped", NULL, "",
     cmd_nodes},
    {"aliases", "[TASK]", "aliases of every task, or one task's aliases with their history", NULL, "",
     cmd_aliases},
    {"health", "", "exits 0 when the daemon answers and is not stopping (7 when stopping)", NULL, "",
     cmd_health},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};
