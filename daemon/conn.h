/* Private to the HTTP server (server.c, conn.c, http.c): the server and connection structures and the
 * functions that move a connection through its phases. Route handlers use daemon/http.h instead.
 *
 * A connection goes HEAD (waiting for or reading a request line and headers; "idle" between requests)
 * -> BODY (reading a body) -> HANDLER (a handler owns the request; bytes that arrive meanwhile are kept,
 * unparsed, for the next request) -> FLUSH (the response is written, waiting for the last write) and
 * back to HEAD, or to LINGER (after a response that closes the connection: our side is shut down and
 * input is discarded briefly so the client reads the response before the close) and CLOSED.
 *
 * Memory: a conn is freed when its libuv handles are closed AND no handler owns its request, so a
 * handler may finish a request whose client left long ago.
 */
#ifndef CLAD_DAEMON_CONN_H
#define CLAD_DAEMON_CONN_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "daemon/http.h"
#include "daemon/server.h"

typedef struct conn conn;

typedef enum {
    PHASE_HEAD,
    PHASE_BODY,
    PHASE_HANDLER,
    PHASE_FLUSH,
    PHASE_LINGER,
    PHASE_CLOSED,
} conn_phase;

struct server {
    uv_loop_t *loop;
    uv_pipe_t listener;
    bool listening;          /* listener handle initialized and not yet closed */
    bool listener_open;      /* listener handle not yet through its close callback */
    bool activated;          /* socket passed by systemd */
    bool created_socket;     /* we created the file: remove it when we stop */
    dev_t sock_dev;          /* identity of the file we created, so we never unlink someone else's */
    ino_t sock_ino;
    char path[108];
    server_limits limits;
    server_handlers h;
    conn *conns;             /* every conn not yet freed */
    uint64_t n_active;       /* open, counted against max_connections */
    uint64_t n_rejecting;    /* being answered 503 */
    server_stats stats;
    uint64_t next_conn_id;
    uint64_t next_req_seq;
    bool stopping;
    bool closing_all;
    uv_timer_t force_timer;  /* server_close: closes what is still flushing after a grace period */
    bool force_timer_open;
    void (*close_cb)(server *srv, void *data);
    void *close_data;
    char rbuf[64 * 1024];    /* shared read buffer: every read is consumed before the next one */
};

/* What the parser callbacks saw; acted on after http_parser_execute pauses. */
typedef enum {
    EV_NONE,
    EV_HEAD,            /* headers complete */
    EV_MESSAGE,         /* request complete */
    EV_BODY_TOO_LARGE,
    EV_HEAD_TOO_LARGE,  /* too many header lines or bytes */
    EV_NO_MEMORY,
} conn_event;

typedef struct conn_hdr {
    size_t name_off, value_off; /* offsets into conn.head; value_off SIZE_MAX if no value came */
} conn_hdr;

struct conn {
    uv_pipe_t pipe;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    server *srv;
    conn *prev, *next;
    uint64_t id;
    server_limits limits;    /* snapshot per request, so a reload never changes a request mid-way */
    http_parser parser;
    conn_phase phase;
    conn_event event;
    http_peer peer;
    int open_handles;        /* pipe and timer until their close callbacks */
    bool counted;            /* counted in n_active */
    bool rejected;           /* over the connection limit: answered 503 */
    bool closing;            /* uv_close called */
    bool idle;               /* HEAD phase with no byte of the next request seen */
    bool reading;            /* uv_read_start active */
    bool read_eof;
    bool close_after;        /* close once the current response is sent */
    bool has_body;
    bool in_gone_cb;         /* defers freeing while the gone callback runs */

    /* Request line and headers: NUL-separated strings in one buffer, bounded by max_header_bytes. */
    char *head;
    size_t head_len, head_cap;
    int last_seg;            /* which callback appended last: 0 none, 1 url, 2 field, 3 value */
    size_t url_off;
    size_t n_hdr;
    conn_hdr hdr[HTTP_MAX_HEADERS];
    http_header headers[HTTP_MAX_HEADERS];
    char *arena;             /* decoded path pieces and query parameters */
    size_t arena_len, arena_cap;
    char *body;
    size_t body_len, body_cap;
    void *allocs;            /* http_req_alloc blocks, a list freed with the request */
    char *pending;           /* bytes received while a handler owned the request (pipelining) */
    size_t pending_len;

    http_req req;
    bool req_owned;          /* a handler owns req (from dispatch until it finishes the request) */
    bool req_done;           /* the current request was answered */
    bool streaming;
    bool stream_chunked;
    int resp_status;
    double t_ready;          /* seconds (monotonic) when the request became complete or failed */
    double latency;          /* seconds from t_ready to the start of the response */
    size_t write_queued;     /* bytes handed to libuv and not yet written */
    http_gone_cb gone_cb;
    void *gone_data;
};

/* Seconds on a monotonic clock. */
double conn_now(void);

/* Accepts one connection from srv->listener; reject answers 503 busy and closes it. */
void conn_accept(server *srv, bool reject);

/* Stopping: closes the connection if it is between requests, otherwise closes it after the response. */
void conn_drain(conn *c);

/* Closes now; a handler owning the request gets its gone callback (later, from the close callback). */
void conn_close(conn *c);

/* The response functions behind daemon/http.h. */
void conn_respond(conn *c, int status, const char *content_type, const void *body, size_t len,
                  const char *extra_headers);
int conn_stream_start(conn *c, int status, const char *content_type);
int conn_stream_chunk(conn *c, const void *data, size_t len);
void conn_stream_end(conn *c);

/* Request-lifetime memory (http_req_alloc). */
void *conn_alloc(conn *c, size_t n);

/* Called by conn.c when a conn has been freed, so server_close can complete. */
void server_conn_freed(server *srv);

#endif
