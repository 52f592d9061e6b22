/* HTTP requests as route handlers see them, and the ways to answer them.
 *
 * The server (daemon/server.h) parses each request on a connection, one at a time, and hands it to the
 * router, which calls a route handler on the loop thread. From then on the handler OWNS the request and
 * must finish it exactly once, now or later from the loop thread, by one of:
 *
 *   http_reply, http_reply_json, http_reply_error, http_reply_err, http_reply_status_error
 *   http_stream_start ... http_stream_write / http_stream_json ... http_stream_end
 *
 * The request and every pointer in it stay valid until it is finished, even if the client goes away in
 * the meantime: a handler that waits (for a worker thread, for a job) may register http_req_on_gone to
 * learn that the client left; replies and stream writes after that are silently dropped, and the handler
 * still finishes the request (http_stream_end or any reply) to release it. Nothing here may be called
 * from a worker thread.
 *
 * Errors are answered as {"error": {"code": "<word>", "message": "<text>"}} where the word is a stable
 * code from core/error.h (clad_code_name) or one of the HTTP-level words "method_not_allowed" (405) and
 * "timeout" (408). http_status_for_code gives the status for each code.
 */
#ifndef CLAD_DAEMON_HTTP_H
#define CLAD_DAEMON_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/error.h"

#define HTTP_MAX_HEADERS 64 /* more header lines are answered 431 */
#define HTTP_MAX_PARAMS 8   /* {name} segments in a route pattern */
#define HTTP_MAX_QUERY 32   /* query parameters; more are answered 400 */
#define HTTP_MAX_GROUPS 64  /* supplementary groups of a peer that are looked at */

/* Content types used by the API. */
#define HTTP_JSON "application/json"
#define HTTP_NDJSON "application/x-ndjson"

struct route;
struct conn;

typedef struct http_header {
    const char *name; /* lower-cased */
    const char *value;
} http_header;

typedef struct http_param {
    const char *name;
    const char *value; /* percent-decoded */
} http_param;

/* Who is on the other end of the socket, from SO_PEERCRED and SO_PEERGROUPS at accept time. */
typedef struct http_peer {
    pid_t pid;
    uid_t uid;
    gid_t gid;
    int n_groups;   /* supplementary groups, or -1 if the kernel could not say (then the router asks NSS) */
    gid_t groups[HTTP_MAX_GROUPS];
} http_peer;

typedef struct http_req http_req;
typedef void (*http_gone_cb)(http_req *req, void *data);

/* One request. Handlers read the public fields; the rest belongs to the server. */
struct http_req {
    int method;               /* enum http_method from <http_parser.h> (HTTP_GET, HTTP_POST, ...) */
    const char *method_name;  /* "GET" */
    int http_major, http_minor;
    const char *path;         /* path part of the target as sent (not decoded), always starts with '/' */
    const char *query;        /* raw query string without '?', "" if none */
    const http_header *headers;
    size_t n_headers;
    const char *body;         /* request body, NUL-terminated after body_len for convenience */
    size_t body_len;
    json_t *json;             /* ROUTE_JSON routes: the parsed body object (borrowed, freed with the request) */
    const http_peer *peer;
    const struct route *route; /* the matched route, NULL before routing */
    int route_index;          /* the route's index in the router (for metrics), -1 if none */
    size_t n_params;          /* path parameters from {name} segments */
    http_param params[HTTP_MAX_PARAMS];
    size_t n_query;           /* decoded query parameters, in order */
    http_param query_params[HTTP_MAX_QUERY];
    uint64_t seq;             /* request number since the daemon started, for logs */
    void *app;                /* the application pointer given to the server */
    struct conn *conn;        /* private to the server */
};

/* --- reading a request ------------------------------------------------------------------------------ */

/* First header with this lower-case name, or NULL. */
const char *http_req_header(const http_req *req, const char *name);
/* Path parameter from the route pattern ("/v1/jobs/{id}" -> "id"), or NULL. */
const char *http_req_param(const http_req *req, const char *name);
/* First query parameter with this name (decoded), or NULL. "?follow" gives "". */
const char *http_req_query(const http_req *req, const char *name);
/* Query flag: absent -> false; "", "1", "true", "yes" -> true; "0", "false", "no" -> false; anything
 * else is CLAD_EINVAL with a message naming the parameter. */
int http_req_query_bool(const http_req *req, const char *name, bool *out, clad_err *err);
/* n bytes that live until the request is finished (freed with it); NULL if out of memory. */
void *http_req_alloc(http_req *req, size_t n);
/* Takes the body out of the request (no copy): the caller owns the returned buffer (NUL-terminated after
 * *len bytes; free with free) and req->body becomes "" of length 0. NULL (with *len 0) if there is no body.
 * For handlers whose work outlives the request, such as a training job that keeps its upload. */
char *http_req_take_body(http_req *req, size_t *len);
/* Media type of the body without parameters, lower-cased into buf ("application/json"); "" if none. */
const char *http_req_media_type(const http_req *req, char *buf, size_t size);

/* --- answering ---------------------------------------------------------------------------------------- */

/* Answers status with a body (copied; content_type may be NULL when len is 0) and finishes the request.
 * extra_headers is NULL or complete CRLF-terminated header lines ("Allow: GET\r\n"). */
void http_reply(http_req *req, int status, const char *content_type, const void *body, size_t len,
                const char *extra_headers);
/* Answers status with body serialized compactly plus a newline; steals the reference to body. */
void http_reply_json(http_req *req, int status, json_t *body);
/* Answers the error JSON for a clad code (CLAD_EINVAL -> 400 invalid_input, ...). */
void http_reply_error(http_req *req, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Same from a filled clad_err (CLAD_EINTERNAL if it holds no code). */
void http_reply_err(http_req *req, const clad_err *err);
/* Error JSON with an explicit status and code word, for HTTP-level errors (405 method_not_allowed, 408
 * timeout, 431 too_large). */
void http_reply_status_error(http_req *req, int status, const char *code_word, const char *extra_headers,
                             const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Starts a streamed response (Transfer-Encoding: chunked; to an HTTP/1.0 client the body simply ends when
 * the connection closes). Returns 0, or CLAD_EIO if the client is already gone (the request must still be
 * finished with http_stream_end). */
int http_stream_start(http_req *req, int status, const char *content_type);
/* Sends data as one chunk (copied). CLAD_EIO once the client is gone. If the client stops reading and
 * more than 8 MiB wait to be sent, the connection is dropped (gone callback) rather than buffering more. */
int http_stream_write(http_req *req, const void *data, size_t len);
/* Sends one NDJSON line: obj serialized compactly plus "\n"; steals the reference. */
int http_stream_json(http_req *req, json_t *obj);
/* Ends the stream and finishes the request. */
void http_stream_end(http_req *req);

/* Registers cb to run once, on the loop thread, if the connection ends before the request is finished
 * (client closed, timed out, daemon stopping). It never runs from inside another http_* call. Replaces
 * an earlier registration; cb NULL removes it. Register it in the handler itself, before returning to
 * the loop: a registration made after the connection has closed never fires (http_req_is_gone is then
 * already true). */
void http_req_on_gone(http_req *req, http_gone_cb cb, void *data);
/* True once the client is gone; replies would be dropped. */
bool http_req_is_gone(const http_req *req);

/* --- helpers -------------------------------------------------------------------------------------- */

/* HTTP status for a clad error code: 400 invalid_input, 403 denied, 404 not_found, 409 conflict and
 * cancelled, 413 too_large, 415 unsupported_media_type, 503 busy and out_of_memory, 507 disk_full,
 * 500 for the rest. */
int http_status_for_code(int code);
/* Reason phrase ("Not Found"); "Unknown" for codes http-parser does not know. */
const char *http_status_text(int status);
/* {"error": {"code": code_word, "message": message}} (new reference). */
json_t *http_error_json(const char *code_word, const char *message);
/* Percent-decodes src[0..len) into dst (size at least len + 1) and NUL-terminates it; '+' becomes a
 * space when plus_is_space (query strings). Rejects bad escapes and decoded NUL bytes with -1, else
 * returns the decoded length. */
long http_percent_decode(char *dst, const char *src, size_t len, bool plus_is_space);
/* A wall-clock time (Unix seconds) as the API writes times: RFC 3339 UTC with milliseconds,
 * "2025-01-31T12:00:00.123Z"; null for t <= 0 ("not yet"). New reference. */
json_t *http_time_json(double unix_seconds);
/* The same from Unix milliseconds, as the store keeps times. */
json_t *http_time_ms_json(int64_t unix_ms);
/* The double nearest to the shortest decimal that reads back as f (0.001f -> 0.001). Replies apply it to
 * every real that holds a float32 exactly. */
double http_float_shortest(float f);
/* Is s well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF)? JSON replies can
 * only carry such text, so decoded parameters are checked with it. */
bool http_utf8_valid(const char *s);

#endif
