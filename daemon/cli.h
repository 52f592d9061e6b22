/* The clad CLI's shared pieces (daemon/cli_common.c) and its command modules.
 *
 * Every command returns an exit code from the enum below and prints what went wrong to stderr.
 */
#ifndef CLAD_DAEMON_CLI_H
#define CLAD_DAEMON_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "daemon/client.h"
#include "daemon/names.h"

#define CLI_MAX_OPTS 24

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
    EXIT_INTERRUPTED = 130, /* Ctrl-C while following a job (the job itself goes on unless cancelled) */
};

#define REQUEST_TIMEOUT_MS 60000
#define MAX_UPLOAD (1ull << 32)

typedef struct options {
    const char *socket;
    bool json;
    bool follow;
    bool detach;      /* --detach: submit a job, print its id, do not follow */
    const char *state;
    const char *lane;
    const char *content_type;
    int n_args;
    const char *args[8];
    /* --KEY VALUE options of the task commands (--base, --rank, --epochs, ...), in order. */
    int n_opts;
    const char *opt_key[CLI_MAX_OPTS], *opt_val[CLI_MAX_OPTS];
} options;


/* The value of --key, or NULL. */
const char *cli_opt(const options *o, const char *key);
void fail_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *default_socket(char *buf, size_t size);
int exit_for_status(int status);
int exit_for_client_error(int rc);
/* One request. On success (a complete reply) returns 0 with resp filled; otherwise prints why and returns
 * the exit code. */
int request(const options *o, client_request *rq, client_response *resp);
/* Prints a non-2xx reply: the JSON itself with --json, else "clad: code: message". Returns the exit code. */
int report_error(const options *o, const client_response *resp);
/* GET path and parse the JSON reply into *out (NULL after printing it raw with --json). */
int get_json(const options *o, const char *path, json_t **out);
/* Sends a request with an optional body and parses the JSON reply (NULL with --json: printed raw). */
int send_json(const options *o, const char *method, const char *path, const char *ctype, const void *body,
              size_t body_len, json_t **out);
const char *str(json_t *o, const char *key);
long long num(json_t *o, const char *key);
void format_duration(double s, char *buf, size_t size);
/* How long ago a Unix ms time was, as format_duration writes it ("-" for no time, ms <= 0). */
void format_age_ms(long long ms, char *buf, size_t size);
double age_of(const char *iso);
void progress_text(json_t *progress, char *buf, size_t size);
/* Streams an NDJSON job reply; returns EXIT_OK when the job succeeded. */
int follow_job(const options *o, const char *method, const char *path, const char *ctype, const void *body,
               size_t body_len);
/* The id of the job the last follow_job followed (0 if none was reported). */
long long followed_job_id(void);
bool valid_id(const char *s);
/* Reads a whole file (or stdin for "-"), bounded by MAX_UPLOAD. */
int read_body(const char *name, char **out, size_t *len);

/* --- request paths: everything the CLI puts in a URL is percent-encoded ---------------------------- */

typedef struct cli_url {
    char s[8192];
    size_t len;
    bool has_query;
    bool overflow;
} cli_url;

/* Starts a path with literal text ("/v1/tasks"), which must need no encoding. */
void url_init(cli_url *u, const char *literal);
/* Appends literal text ("/train"). */
void url_lit(cli_url *u, const char *literal);
/* Appends "/" and the percent-encoded segment. */
void url_seg(cli_url *u, const char *segment);
/* Appends "?key=value" or "&key=value" with value percent-encoded; a NULL value appends nothing. */
void url_query(cli_url *u, const char *key, const char *value);
/* The path, or NULL after printing an error when it did not fit. */
const char *url_path(const cli_url *u);

/* --- names and TASK[@VERSION|@ALIAS] ------------------------------------------------------------------ */

/* Checks a base, task or alias name against the store's rule (daemon/names.h); prints why not. */
bool cli_name_ok(const char *what, const char *name);

/* TASK, TASK@VERSION or TASK@ALIAS as given on the command line. */
typedef struct task_ref {
    char task[STORE_NAME_MAX + 1];
    char version[24]; /* digits, or "" */
    char alias[STORE_NAME_MAX + 1]; /* or "" */
} task_ref;

/* Parses arg into r, checking every name; prints why not and returns false. */
bool task_ref_parse(const char *arg, task_ref *r);
/* True when TASK@something was given. */
bool task_ref_has_ref(const task_ref *r);
/* The version number TASK@VERSION or TASK@ALIAS names (an alias is looked up through the daemon):
 * 0, or an exit code after saying why (EXIT_NOT_FOUND for an unknown alias). r must have a ref. */
int task_ref_version(const options *o, const task_ref *r, long long *out);

/* --- commands ---------------------------------------------------------------------------------------- */

/* One clad command. Tables of them drive dispatch, the usage listing, `clad CMD --help` and the check
 * that every option given belongs to the command (like the daemon's check of query parameters). */
typedef struct cli_command {
    const char *name;     /* "train" */
    const char *args;     /* "TASK FILE" */
    const char *summary;  /* one line for `clad --help` */
    const char *options;  /* the --options it takes, comma-separated ("base,rank,follow"); NULL: none */
    const char *help;     /* the rest of `clad train --help`: what it does and each option, lines of text */
    int (*run)(const options *o);
} cli_command;

/* Task commands (daemon/cli_tasks.c); the table ends with an entry whose name is NULL. */
extern const cli_command cli_task_commands[];

/* Is name one of the comma-separated list (NULL: none)? */
bool cli_listed(const char *list, const char *name);
/* Prints `usage: clad NAME ARGS`, the summary and the help text of a command. */
void cli_command_help(const cli_command *c, FILE *f);
/* A daemon error message in the CLI's words: "query parameter 'fuse_with'" and "?base=" become
 * "--fuse-with" and "--base". */
void cli_words(const char *msg, char *out, size_t size);
/* export / import (daemon/cli_interop.c); the table ends with an entry whose name is NULL. */
extern const cli_command cli_interop_commands[];

/* Report and inspection commands (daemon/cli_report.c): matrix, report, ps, nodes, aliases, health. */
extern const cli_command cli_report_commands[];
/* Lifecycle commands (daemon/cli_lifecycle.c): promote, delete. */
extern const cli_command cli_lifecycle_commands[];

/* Ctrl-C while following a job (daemon/cli_lifecycle.c): arm installs the handler, request() tells it the
 * socket to shut down so the wait ends at once; resolve asks whether to cancel the job (on a terminal) or
 * says that it continues and how to cancel it, and returns EXIT_INTERRUPTED (or a failed cancel's code). */
void cli_interrupt_arm(void);
void cli_interrupt_set_fd(int fd);
bool cli_interrupted(void);
int cli_interrupt_resolve(const options *o, long long job_id);

#endif
