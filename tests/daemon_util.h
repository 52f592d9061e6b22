/* Helpers for the daemon tests: start the real build/cladd on a private socket in the test's temporary
 * directory, talk to it with curl, with build/clad and with raw sockets (for malformed and slow clients),
 * and stop it. Every helper fails the test (test_fail) when the environment itself breaks.
 */
#ifndef CLAD_TESTS_DAEMON_UTIL_H
#define CLAD_TESTS_DAEMON_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/model.h"

typedef struct daemon_opts {
    const char *config;       /* text of the config file, or NULL for none */
    const char *const *env;   /* extra "KEY=VALUE" entries, NULL-terminated; "WATCHDOG_PID=self" becomes
                                 the daemon's own pid */
    const char *const *args;  /* extra arguments, NULL-terminated */
    int listen_fd;            /* > 0: passed as the systemd socket (fd 3, LISTEN_FDS=1) */
    bool no_test_routes;      /* leave out --enable-test-routes */
    bool no_wait;             /* do not wait for the socket (the start is expected to fail) */
    const char *subdir;       /* NULL: socket, state, config and log in the test's directory; else in its
                                 subdirectory of that name (several daemons in one test) */
} daemon_opts;

typedef struct daemon_proc {
    pid_t pid;
    char sock[256];
    char state[256];
    char conf[256];
    char log[256];
} daemon_proc;

/* Starts cladd with --socket <tmp>/clad.sock --state-dir <tmp>/state (and --config when opts->config) and
 * waits until the socket accepts connections (10 s at most). opts may be NULL. */
void daemon_start(daemon_proc *d, const daemon_opts *opts);
/* Starts cladd (one BLAS thread) and imports a randomly initialised base of config c as `name`. */
void daemon_start_with_base(daemon_proc *d, const model_config *c, const char *name);
/* Writes a base of config c with seeded random weights to path (a model file cladd imports). */
void write_random_base(const char *path, const model_config *c, uint64_t seed);
/* Sends sig and waits up to timeout_s for the exit. Returns the exit status, 128 + signal if killed by a
 * signal, or -1 if it did not exit in time (it is then killed). */
int daemon_stop(daemon_proc *d, int sig, double timeout_s);
/* waitpid with a timeout; same return values as daemon_stop. */
int daemon_wait(daemon_proc *d, double timeout_s);
/* The daemon's log so far (malloc'd), for checks and for failure messages. */
char *daemon_log(const daemon_proc *d);

/* curl --unix-socket: returns the HTTP status (0 if curl itself failed). *body (if non-NULL) gets the
 * response body and *headers (if non-NULL) the response headers, malloc'd. extra is more curl
 * arguments, already shell-safe (may be NULL). */
int curl_req(const daemon_proc *d, const char *method, const char *path, const char *extra, char **body,
             char **headers);
/* One request through the project's own client (daemon/client.h) that never fails the test, for load
 * generators that must outlive a killed daemon: returns the HTTP status, or 0 when the connection failed
 * or was cut off. *out (if non-NULL) gets the body (malloc'd) or NULL. timeout_ms bounds each read (0:
 * none). */
int http_try(const char *sock, const char *method, const char *path, const char *ctype, const void *body,
             size_t len, int timeout_ms, char **out);
/* Runs build/clad --socket <sock> ARGS (a shell fragment); returns its exit code, *out its stdout. */
int clad_run(const daemon_proc *d, const char *args, char **out);

/* n rows of a labelled CSV (label first, then `features` >= 4 values from seed) whose label is the index of
 * the largest of the first four values: a small task any base of that input size learns. */
void write_argmax_csv(const char *path, int n, int features, uint64_t seed);

/* Parses JSON or fails the test. */
json_t *json_or_fail(const char *text);
/* The error code word of an error reply body, or "" (the string lives in a static buffer). */
const char *error_code_of(const char *body);

/* Seconds one GET /v1/status takes on a fresh connection (fails the test unless it answers 200): how
 * long the event loop makes other clients wait. */
double status_latency(const daemon_proc *d);

/* Two prediction replies agree: the same labels, probabilities within tol (a folded version computes
 * the same sums in another order). */
bool predictions_close(const char *reply_a, const char *reply_b, double tol);

/* Raw sockets. */
int raw_connect(const daemon_proc *d);
void raw_send(int fd, const char *data, size_t len);
void raw_send_str(int fd, const char *s);
/* Reads one HTTP response (headers and a Content-Length or chunked body) within timeout_ms. Returns the
 * whole text (malloc'd) and its status in *status, or NULL (status 0) on timeout or end of stream. */
char *raw_response(int fd, int timeout_ms, int *status);
/* True if the peer closes (EOF or reset) within timeout_ms; data read meanwhile is discarded. */
bool raw_closed_within(int fd, int timeout_ms);

/* A streamed reply read line by line as it arrives, through `curl -N` in a child process. */
typedef struct curl_stream {
    pid_t pid;
    int fd;
    char buf[65536];
    size_t len;
} curl_stream;

/* Starts curl -sN on method and path (extra: more curl arguments, shell-safe, may be NULL). */
void stream_open(curl_stream *s, const daemon_proc *d, const char *method, const char *path, const char *extra);
/* The next line without its newline (malloc'd), or NULL at the end of the stream or after timeout_ms. */
char *stream_line(curl_stream *s, int timeout_ms);
/* Stops curl (if still running) and reaps it. */
void stream_close(curl_stream *s);
/* Reads lines until one contains needle; returns it parsed as JSON (fails the test on timeout). */
json_t *stream_until(curl_stream *s, const char *needle, int timeout_ms);

/* Jobs (through the test-only sleep job and /v1/jobs; each fails the test on an unexpected answer). */
/* POSTs json_body to /v1/debug/sleep-job and returns the new job's id. */
long long submit_sleep(const daemon_proc *d, const char *json_body);
/* GET /v1/jobs/ID as JSON. */
json_t *get_job(const daemon_proc *d, long long id);
/* The job's state (a static buffer). */
const char *state_of(json_t *job);
/* Waits until job id reaches a final state; returns its JSON. */
json_t *wait_final(const daemon_proc *d, long long id, double timeout_s);

/* Monotonic seconds. */
double now_s(void);
void sleep_ms(int ms);

#endif
