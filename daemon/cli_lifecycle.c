/* clad commands for the lifecycle of what the daemon holds (promote, delete) and for leaving a followed
 * job: Ctrl-C while `clad train` (or `clad job ID --follow`) follows a job stops following, then asks
 * whether to cancel the job (when stdin is a terminal) or says that it continues and how to cancel it. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/cli.h"

/* --- leaving a followed job with Ctrl-C -------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;
static volatile sig_atomic_t active_fd = -1;

/* Only async-signal-safe calls: shutting the socket down makes the blocked read return at once. */
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
    if (active_fd >= 0) shutdown(active_fd, SHUT_RDWR);
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C ends clad as usual */
}

void cli_interrupt_arm(void)
{
    interrupted = 0;
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

void cli_interrupt_set_fd(int fd)
{
    active_fd = fd;
    if (fd >= 0 && interrupted) shutdown(fd, SHUT_RDWR);
}

bool cli_interrupted(void)
{
    return interrupted != 0;
}

static int cancel_job(const options *o, long long id)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", id);
    cli_url u;
    url_init(&u, "/v1/jobs");
    url_seg(&u, text);
    json_t *r = NULL;
    int rc = send_json(o, "DELETE", url_path(&u), NULL, NULL, 0, &r);
    if (!rc && r) fprintf(stderr, "clad: job %lld: %s\n", id, strcmp(str(r, "state"), "running") ? str(r, "state")
                                                                  : "cancel requested; it stops at its next step");
    json_decref(r);
    return rc;
}

int cli_interrupt_resolve(const options *o, long long job_id)
{
    signal(SIGINT, SIG_DFL);
    interrupted = 0; /* later requests (the cancel) must not be cut */
    if (job_id <= 0) {
        fail_msg("interrupted before the daemon named the job; 'clad jobs' lists it if it was queued");
        return EXIT_INTERRUPTED;
    }
    if (isatty(STDIN_FILENO) && isatty(STDERR_FILENO)) {
        fprintf(stderr, "\nclad: stopped following job %lld. Cancel it? [y/N] ", job_id);
        fflush(stderr);
        char line[32] = "";
        if (fgets(line, sizeof line, stdin) && (line[0] == 'y' || line[0] == 'Y')) {
            int rc = cancel_job(o, job_id);
            return rc ? rc : EXIT_INTERRUPTED;
        }
    }
    fprintf(stderr, "\nclad: job %lld continues in the daemon; follow it with 'clad job %lld --follow', cancel it "
                    "with 'clad cancel %lld'\n", job_id, job_id, job_id);
    return EXIT_INTERRUPTED;
}

/* --- promote and delete ------------------------------------------------------------------------------ */

/* TASK@VERSION or TASK@ALIAS (looked up through the daemon) as a task and a version number; 0, or an exit
 * code after saying why. */
static int version_of(const options *o, const char *arg, task_ref *r, long long *version, const char *usage_line)
{
    if (!task_ref_parse(arg, r)) return EXIT_USAGE;
    if (!task_ref_has_ref(r)) {
        fail_msg("'%s' names a task, not one of its versions: write %s@VERSION or %s@ALIAS (e.g. %s@1)\n"
                 "usage: clad %s", arg, arg, arg, arg, usage_line);
        return EXIT_USAGE;
    }
    return task_ref_version(o, r, version);
}

/* "/v1/tasks/TASK/versions/VERSION" followed by more literal text. */
static const char *version_url(cli_url *u, const char *task, long long version, const char *more)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", version);
    url_init(u, "/v1/tasks");
    url_seg(u, task);
    url_lit(u, "/versions");
    url_seg(u, text);
    url_lit(u, more);
    return url_path(u);
}

static char *reason_body(const options *o)
{
    json_t *b = json_object();
    if (cli_opt(o, "reason")) json_object_set_new(b, "reason", json_string(cli_opt(o, "reason")));
    char *text = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return text;
}

static int cmd_promote(const options *o)
{
    static const char usage_line[] = "promote TASK@VERSION|TASK@ALIAS [--reason TEXT]";
    task_ref r;
    long long v = 0;
    if (o->n_args != 1) {
        fail_msg("usage: clad %s", usage_line);
        return EXIT_USAGE;
    }
    int rc = version_of(o, o->args[0], &r, &v, usage_line);
    if (rc) return rc;
    cli_url u;
    const char *path = version_url(&u, r.task, v, "/promote");
    if (!path) return EXIT_USAGE;
    char *body = reason_body(o);
    json_t *reply = NULL;
    rc = send_json(o, "POST", path, "application/json", body, strlen(body), &reply);
    free(body);
    if (!rc && reply && num(reply, "from") == num(reply, "to"))
        printf("%s@%lld is already active: nothing changed%s\n", r.task, num(reply, "to"),
               json_is_true(json_object_get(reply, "candidate_cleared")) ? " (no longer the candidate)" : "");
    else if (!rc && reply)
        printf("promoted %s@%lld: active %lld -> %lld%s\n", r.task, num(reply, "to"), num(reply, "from"),
               num(reply, "to"), json_is_true(json_object_get(reply, "candidate_cleared")) ? " (no longer the candidate)" : "");
    json_decref(reply);
    return rc;
}

/* The path of what `clad delete WHAT ...` names; NULL (with *rc the exit code) after saying why. */
static const char *delete_path(const options *o, const char *what, cli_url *u, int *rc)
{
    static const char usage_line[] =
        "delete task NAME | base NAME | alias TASK NAME | version TASK@VERSION|TASK@ALIAS";
    *rc = EXIT_USAGE;
    if (strcmp(what, "alias") && cli_opt(o, "reason")) {
        fail_msg("--reason goes with clad delete alias");
        return NULL;
    }
    if ((!strcmp(what, "task") || !strcmp(what, "base")) && o->n_args == 2) {
        if (!cli_name_ok(what, o->args[1])) return NULL;
        url_init(u, what[0] == 't' ? "/v1/tasks" : "/v1/bases");
        url_seg(u, o->args[1]);
    } else if (!strcmp(what, "alias") && o->n_args == 3) {
        if (!cli_name_ok("task", o->args[1]) || !cli_name_ok("alias", o->args[2])) return NULL;
        url_init(u, "/v1/tasks");
        url_seg(u, o->args[1]);
        url_lit(u, "/aliases");
        url_seg(u, o->args[2]);
    } else if (!strcmp(what, "version") && o->n_args == 2) {
        task_ref r;
        long long v = 0;
        if ((*rc = version_of(o, o->args[1], &r, &v, usage_line))) return NULL;
        *rc = EXIT_USAGE;
        version_url(u, r.task, v, "");
    } else {
        fail_msg("usage: clad %s", usage_line);
        return NULL;
    }
    return url_path(u);
}

static int cmd_delete(const options *o)
{
    const char *what = o->n_args ? o->args[0] : "";
    cli_url u;
    int rc;
    const char *path = delete_path(o, what, &u, &rc);
    if (!path) return rc;
    bool alias = !strcmp(what, "alias");
    char *body = alias ? reason_body(o) : NULL;
    json_t *r = NULL;
    rc = send_json(o, "DELETE", path, "application/json", body, body ? strlen(body) : 0, &r);
    free(body);
    if (!rc && r) {
        printf("deleted %s ", what);
        for (int i = 1; i < o->n_args; i++) printf("%s%s", i > 1 ? " " : "", o->args[i]);
        printf("\n");
    }
    json_decref(r);
    return rc;
}

const cli_command cli_lifecycle_commands[] = {
    {"promote", "TASK@VERSION|TASK@ALIAS", "point `active` at a version (TASK@candidate: the waiting one)", "reason",
     "A version trained with --promote if-better or never waits under the alias `candidate`; promoting it\n"
     "moves `active` there and drops `candidate`.\n"
     "  --reason TEXT       recorded in the alias history\n",
     cmd_promote},
    {"delete", "task|base|alias|version ...", "delete a task, base, alias or version no longer needed", "reason",
     "delete task NAME: the task with all its versions, aliases and evaluations; refused (naming them)\n"
     "  while other tasks' versions need or derive from its versions, or while a job trains it.\n"
     "delete base NAME: refused while tasks are on it or jobs run on it.\n"
     "delete alias TASK NAME: any alias but `active`.\n"
     "delete version TASK@VERSION (or TASK@ALIAS): a version no alias points at and no other needs.\n"
     "  --reason TEXT       (delete alias) recorded in the alias history\n",
     cmd_delete},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};
