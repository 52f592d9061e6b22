/* The clad CLI's shared pieces (daemon/cli_common.c) and its command modules.
 *
 * Every command returns an exit code from the enum below and prints what went wrong to stderr.
 */
#ifndef CLAD_DAEMON_CLI_H
#define CLAD_DAEMON_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "daemon/client.h"

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
double age_of(const char *iso);
void progress_text(json_t *progress, char *buf, size_t size);
/* Streams an NDJSON job reply; returns EXIT_OK when the job succeeded. */
int follow_job(const options *o, const char *method, const char *path, const char *ctype, const void *body,
               size_t body_len);
bool valid_id(const char *s);
/* Reads a whole file (or stdin for "-"), bounded by MAX_UPLOAD. */
int read_body(const char *name, char **out, size_t *len);

/* Task commands (daemon/cli_tasks.c): returns -1 when command is not one of them. */
bool cli_value_option(const char *key);
int cli_tasks_dispatch(const char *command, const options *o);
/* Their usage lines. */
extern const char cli_tasks_usage[];
/* export / import (daemon/cli_interop.c): -1 when command is neither. */
int cli_interop_dispatch(const char *command, const options *o);
extern const char cli_interop_usage[];

#endif
