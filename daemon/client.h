/* A small blocking HTTP/1.1 client for the daemon's Unix socket, used by the clad CLI (and usable by
 * tests and tools). One request per connection; responses are parsed with http-parser, so chunked
 * (streamed) replies are decoded. No libuv.
 */
#ifndef CLAD_DAEMON_CLIENT_H
#define CLAD_DAEMON_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

/* Largest response body buffered in memory; larger replies fail with CLAD_ETOOLARGE. */
#define CLIENT_MAX_BODY (256u << 20)

/* Receives body bytes as they arrive (chunks already decoded); returns 0 to go on, nonzero to stop. */
typedef int (*client_body_fn)(const char *data, size_t len, void *data_arg);

typedef struct client_request {
    const char *method;       /* "GET" */
    const char *path;         /* "/v1/jobs/3?follow=1" (already percent-encoded) */
    const char *content_type; /* NULL when there is no body */
    const void *body;
    size_t body_len;
    client_body_fn on_body;   /* NULL: the body is collected in client_response.body */
    void *data;               /* for on_body */
    int timeout_ms;           /* longest wait for each read; 0 = wait for ever (streams) */
} client_request;

typedef struct client_response {
    int status;               /* HTTP status */
    char content_type[128];
    char *body;               /* NUL-terminated (when not streamed to on_body); free with client_response_finish */
    size_t body_len;
} client_response;

/* Connects to the socket at path. Returns the fd, or CLAD_EIO with a message naming the path and the
 * reason (and a hint when nothing listens there). */
int client_connect(const char *path, clad_err *err);

/* Sends rq on fd and reads the whole response (the fd is left open; close it afterwards). Returns 0 when
 * a complete response arrived (whatever its status), CLAD_EIO if the connection failed or was cut off,
 * CLAD_ECORRUPT for a malformed response, CLAD_ETOOLARGE past CLIENT_MAX_BODY, CLAD_ECANCELLED if
 * on_body asked to stop. */
int client_exchange(int fd, const client_request *rq, client_response *resp, clad_err *err);

void client_response_finish(client_response *resp);

/* One request on its own connection (connect, exchange, close), for tools and tests. Returns the HTTP
 * status, or 0 when the connection failed or was cut off (err says why). *body (if non-NULL) gets the
 * reply body (free it) or NULL. */
int client_call(const char *sock_path, const client_request *rq, char **body, clad_err *err);

/* Splits a byte stream into lines for NDJSON: feed it body bytes (it is a client_body_fn with a
 * client_lines as its data); on_line gets each line without its newline, NUL-terminated. Lines are
 * bounded by max_line (longer: the stream stops with an error). */
typedef struct client_lines {
    int (*on_line)(char *line, size_t len, void *data);
    void *data;
    size_t max_line;
    char *buf;
    size_t len, cap;
    bool overflow;
} client_lines;

int client_lines_feed(const char *data, size_t len, void *lines);
/* Delivers a last line without a newline, if any, and frees the buffer. Returns on_line's result. */
int client_lines_finish(client_lines *l);

#endif
