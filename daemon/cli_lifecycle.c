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

const char cli_lifecycle_usage[] =
    "  promote TASK@VERSION        point `active` at a version, or TASK@candidate [--reason TEXT]\n"
    "  delete task NAME            delete a task and all its versions (refused while others depend on it)\n"
    "  delete base NAME            delete a base (refused while tasks use it)\n"
    "  delete alias TASK NAME      delete an alias (not `active`) [--reason TEXT]\n"
    "  delete version TASK@VERSION delete a version no alias points at\n";

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
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    json_t *r = NULL;
    int rc = send_json(o, "DELETE", path, NULL, NULL, 0, &r);
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

/* Splits "TASK@VERSION" or "TASK@ALIAS" into task and a version number (an alias is resolved through the
 * daemon). Returns 0, or an exit code after saying why. */
static int resolve_ref(const options *o, const char *arg, char *task, size_t size, char *version, size_t vsize,
                       const char *usage_line)
{
    snprintf(task, size, "%s", arg);
    char *at = strchr(task, '@');
    if (!at || !at[1]) {
        fail_msg("usage: clad %s", usage_line);
        return EXIT_USAGE;
    }
    *at = '\0';
    if (valid_id(at + 1)) {
        snprintf(version, vsize, "%s", at + 1);
        return 0;
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s", task);
    options q = *o;
    q.json = false;
    json_t *t = NULL;
    int rc = get_json(&q, path, &t);
    if (rc) return rc;
    json_t *v = json_object_get(json_object_get(t, "aliases"), at + 1);
    bool found = json_is_integer(v);
    if (found) snprintf(version, vsize, "%lld", (long long)json_integer_value(v));
    else fail_msg("not_found: task '%s' has no alias '%s'", task, at + 1);
    json_decref(t);
    return found ? 0 : EXIT_NOT_FOUND;
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
    char task[160], path[320], v[24];
    if (o->n_args != 1) {
        fail_msg("usage: clad promote TASK@VERSION|TASK@ALIAS [--reason TEXT]");
        return EXIT_USAGE;
    }
    int rc = resolve_ref(o, o->args[0], task, sizeof task, v, sizeof v, "promote TASK@VERSION|TASK@ALIAS [--reason TEXT]");
    if (rc) return rc;
    snprintf(path, sizeof path, "/v1/tasks/%s/versions/%s/promote", task, v);
    char *body = reason_body(o);
    json_t *r = NULL;
    rc = send_json(o, "POST", path, "application/json", body, strlen(body), &r);
    free(body);
    if (!rc && r)
        printf("promoted %s@%lld: active %lld -> %lld%s\n", task, num(r, "to"), num(r, "from"), num(r, "to"),
               json_is_true(json_object_get(r, "candidate_cleared")) ? " (no longer the candidate)" : "");
    json_decref(r);
    return rc;
}

static int cmd_delete(const options *o)
{
    static const char usage_line[] = "delete task NAME | base NAME | alias TASK NAME | version TASK@VERSION";
    const char *what = o->n_args ? o->args[0] : "";
    char path[320], task[160], v[24];
    bool alias = !strcmp(what, "alias");
    if (!strcmp(what, "task") && o->n_args == 2) {
        snprintf(path, sizeof path, "/v1/tasks/%s", o->args[1]);
    } else if (!strcmp(what, "base") && o->n_args == 2) {
        snprintf(path, sizeof path, "/v1/bases/%s", o->args[1]);
    } else if (alias && o->n_args == 3) {
        snprintf(path, sizeof path, "/v1/tasks/%s/aliases/%s", o->args[1], o->args[2]);
    } else if (!strcmp(what, "version") && o->n_args == 2) {
        int rc = resolve_ref(o, o->args[1], task, sizeof task, v, sizeof v, usage_line);
        if (rc) return rc;
        snprintf(path, sizeof path, "/v1/tasks/%s/versions/%s", task, v);
    } else {
        fail_msg("usage: clad %s", usage_line);
        return EXIT_USAGE;
    }
    char *body = alias ? reason_body(o) : NULL;
    json_t *r = NULL;
    int rc = send_json(o, "DELETE", path, "application/json", body, body ? strlen(body) : 0, &r);
    free(body);
    if (!rc && r) {
        printf("deleted %s ", what);
        for (int i = 1; i < o->n_args; i++) printf("%s%s", i > 1 ? " " : "", o->args[i]);
        printf("\n");
    }
    json_decref(r);
    return rc;
}

int cli_lifecycle_dispatch(const char *command, const options *o)
{
    if (!strcmp(command, "promote")) return cmd_promote(o);
    if (!strcmp(command, "delete")) return cmd_delete(o);
    return -1;
}
