/* The HTTP/1.1 server on a Unix domain socket: listening, accepting, limits, connection lifecycle.
 *
 * One server runs on one libuv loop. It accepts connections (or takes the socket from systemd), reads
 * each connection's requests one at a time (a pipelined request waits until the previous response is
 * sent), and hands every complete request to its handlers, which route it and eventually answer with the
 * functions of daemon/http.h. It enforces the limits: body and header sizes, the number of connections
 * (extra ones are answered 503 busy and closed), and timeouts for slow headers, stalled bodies, idle
 * keep-alive connections and clients that do not read their responses. Malformed HTTP is answered 400
 * (431 for oversized headers) and closes that connection only.
 *
 * Lifecycle (libuv style): server_create, server_listen, ... server_stop_accepting when the daemon starts
 * to stop, server_close to close every connection (the callback runs when all are gone), then
 * server_destroy.
 */
#ifndef CLAD_DAEMON_SERVER_H
#define CLAD_DAEMON_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "core/error.h"
#include "daemon/http.h"

typedef struct server server;

typedef struct server_limits {
    uint64_t max_body_bytes;     /* larger bodies: 413 */
    uint32_t max_header_bytes;   /* request line plus headers; larger: 431 */
    uint32_t max_connections;    /* more: 503 busy, then close */
    uint32_t header_timeout_ms;  /* from accept, or from the first byte of a request, to the end of headers */
    uint32_t idle_timeout_ms;    /* keep-alive connection with no request in progress */
    uint32_t body_timeout_ms;    /* longest pause while reading a body or while the client does not read */
} server_limits;

typedef struct server_handlers {
    /* When a request's headers are complete, before its body is read. Returns true to read the body and
     * then call on_request; false after answering the request itself (an error such as 404, 403 or 415,
     * so a client is not made to upload a large body first). */
    bool (*on_head)(http_req *req, void *data);
    /* When the request is complete; the handler owns req from here (see daemon/http.h). */
    void (*on_request)(http_req *req, void *data);
    /* After every finished request, answered by a handler or by the server itself (400, 408, 413, 431,
     * 503): its status (499 if the client left before the answer) and the seconds from the
     * complete request (or the error) to the start of the response. For metrics and the access log. */
    void (*on_done)(const http_req *req, int status, double seconds, void *data);
    void *data; /* passed to the callbacks and exposed as req->app */
} server_handlers;

typedef struct server_listen_opts {
    const char *path;     /* socket path; with systemd activation only reported */
    unsigned mode;        /* file mode of a socket cladd creates, e.g. 0660 */
    const char *group;    /* NULL or a group to chown the socket to */
    bool use_activation;  /* take the socket from systemd if LISTEN_FDS says it passed one */
} server_listen_opts;

typedef struct server_stats {
    uint64_t connections;        /* open now (not counting those being answered 503) */
    uint64_t connections_total;  /* accepted since start */
    uint64_t connections_rejected; /* answered 503 busy because of max_connections */
    uint64_t requests_total;     /* finished requests */
} server_stats;

/* Creates a server on loop. Aborts on allocation failure (startup only). */
server *server_create(uv_loop_t *loop, const server_limits *limits, const server_handlers *handlers);

/* Starts listening. Without activation it creates the socket file with opts->mode (umask around bind) and
 * replaces an existing socket file only if nothing is listening on it (a live daemon: CLAD_EBUSY; a file
 * that is not a socket: CLAD_ECONFLICT). With activation (sd_listen_fds) it uses the passed socket, which
 * must be a listening AF_UNIX stream socket. Other failures: CLAD_EIO. err names the path. */
int server_listen(server *srv, const server_listen_opts *opts, clad_err *err);

/* New limits for new connections and requests; connections keep the limits they started with for the
 * request in progress. */
void server_set_limits(server *srv, const server_limits *limits);

/* Stops accepting and removes the socket file this server created (a socket passed by systemd stays).
 * Idle connections are closed; a connection with a request in progress is closed after its response.
 * Safe to call more than once. */
void server_stop_accepting(server *srv);

/* Closes every connection now (handlers still holding a request get their gone callbacks) and calls cb
 * once no connection remains, which can be only after the handlers have finished their requests. Stops
 * accepting first if that was not done. */
void server_close(server *srv, void (*cb)(server *srv, void *data), void *data);

/* Frees the server; only after server_close's callback (or if server_listen was never called). */
void server_destroy(server *srv);

void server_get_stats(const server *srv, server_stats *out);
/* The socket path (from opts, or from the passed socket's address under activation). */
const char *server_socket_path(const server *srv);
bool server_socket_activated(const server *srv);

#endif
