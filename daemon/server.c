/* The listening socket and the set of connections; see server.h. Per-connection work is in conn.c. */
#include "daemon/conn.h"
#include "daemon/server.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon/log.h"

#define LISTEN_BACKLOG 128
/* server_close lets responses being written finish for this long before closing their connections. */
#define CLOSE_GRACE_MS 2000

server *server_create(uv_loop_t *loop, const server_limits *limits, const server_handlers *handlers)
{
    server *srv = calloc(1, sizeof *srv);
    if (!srv) abort();
    srv->loop = loop;
    srv->h = *handlers;
    server_set_limits(srv, limits);
    return srv;
}

void server_set_limits(server *srv, const server_limits *limits)
{
    srv->limits = *limits;
    /* http-parser keeps this bound in a process-wide variable; one server per process makes that fine. */
    http_parser_set_max_header_size(limits->max_header_bytes);
}

static void on_connection(uv_stream_t *listener, int status)
{
    server *srv = listener->data;
    if (status < 0) {
        log_warning("accept on %s: %s", srv->path, uv_strerror(status));
        return;
    }
    if (srv->stopping) return;
    conn_accept(srv, srv->n_active >= srv->limits.max_connections);
}

/* Probes an existing socket file: 1 if something listens there, 0 if it is stale, -1 with errno. */
static int socket_is_live(const struct sockaddr_un *addr)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int rc = connect(fd, (const struct sockaddr *)addr, sizeof *addr);
    int e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN || e == EINPROGRESS) return 1; /* EAGAIN: a listener with a full backlog */
    if (e == ECONNREFUSED) return 0;
    errno = e;
    return -1;
}

/* Creates, binds and listens on a new socket file. Returns the fd or a negative clad code. */
static int socket_create(server *srv, const server_listen_opts *opts, clad_err *err)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t plen = strlen(opts->path);
    if (plen == 0 || plen >= sizeof addr.sun_path)
        return clad_err_set(err, CLAD_EINVAL, "socket path '%s' is empty or longer than %zu bytes", opts->path,
                            sizeof addr.sun_path - 1);
    memcpy(addr.sun_path, opts->path, plen + 1);

    struct stat st;
    if (lstat(opts->path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return clad_err_set(err, CLAD_ECONFLICT, "%s exists and is not a socket; not replacing it",
                                opts->path);
        int live = socket_is_live(&addr);
        if (live > 0)
            return clad_err_set(err, CLAD_EBUSY, "another daemon is already listening on %s", opts->path);
        if (live < 0)
            return clad_err_set(err, CLAD_EIO, "cannot check the existing socket %s: %s", opts->path,
                                strerror(errno));
        if (unlink(opts->path) != 0 && errno != ENOENT)
            return clad_err_set(err, CLAD_EIO, "cannot remove the stale socket %s: %s", opts->path,
                                strerror(errno));
        log_info("removed stale socket %s", opts->path);
    } else if (errno != ENOENT) {
        return clad_err_set(err, CLAD_EIO, "%s: %s", opts->path, strerror(errno));
    }

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return clad_err_set(err, CLAD_EIO, "socket: %s", strerror(errno));
    /* bind creates the file with 0777 & ~umask; setting the umask around it means the socket never
     * exists, even for an instant, with wider permissions than asked. We are still single-threaded. */
    mode_t old = umask(0777 & ~(mode_t)opts->mode);
    int rc = bind(fd, (struct sockaddr *)&addr, sizeof addr);
    int e = errno;
    umask(old);
    if (rc != 0) {
        close(fd);
        if (e == EADDRINUSE)
            return clad_err_set(err, CLAD_EBUSY, "%s was created by someone else while starting", opts->path);
        return clad_err_set(err, CLAD_EIO, "cannot bind %s: %s", opts->path, strerror(e));
    }
    if (chmod(opts->path, opts->mode) != 0) {
        e = errno;
        goto fail_bound;
    }
    if (opts->group && *opts->group) {
        struct group gr, *res = NULL;
        char buf[4096];
        if (getgrnam_r(opts->group, &gr, buf, sizeof buf, &res) != 0 || !res) {
            unlink(opts->path);
            close(fd);
            return clad_err_set(err, CLAD_EINVAL, "socket_group '%s' is not a known group", opts->group);
        }
        if (chown(opts->path, (uid_t)-1, res->gr_gid) != 0) {
            e = errno;
            unlink(opts->path);
            close(fd);
            return clad_err_set(err, CLAD_EIO, "cannot give %s to group %s: %s", opts->path, opts->group,
                                strerror(e));
        }
    }
    if (stat(opts->path, &st) != 0) {
        e = errno;
        goto fail_bound;
    }
    srv->sock_dev = st.st_dev;
    srv->sock_ino = st.st_ino;
    if (listen(fd, LISTEN_BACKLOG) != 0) {
        e = errno;
        goto fail_bound;
    }
    srv->created_socket = true;
    return fd;

fail_bound:
    unlink(opts->path);
    close(fd);
    return clad_err_set(err, CLAD_EIO, "socket %s: %s", opts->path, strerror(e));
}

/* Takes the socket systemd passed, if any: returns the fd, 0 if none was passed, or a negative code. */
static int socket_from_systemd(server *srv, clad_err *err)
{
    int n = sd_listen_fds(1); /* 1: unset LISTEN_FDS so nothing we start inherits it */
    if (n <= 0) return n < 0 ? clad_err_set(err, CLAD_EIO, "sd_listen_fds: %s", strerror(-n)) : 0;
    if (n > 1)
        return clad_err_set(err, CLAD_EINVAL, "systemd passed %d sockets; cladd expects one (ListenStream=)", n);
    int fd = SD_LISTEN_FDS_START;
    if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
        return clad_err_set(err, CLAD_EINVAL, "the socket systemd passed is not a listening AF_UNIX stream socket");
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    struct sockaddr_un addr;
    socklen_t len = sizeof addr;
    memset(&addr, 0, sizeof addr);
    if (getsockname(fd, (struct sockaddr *)&addr, &len) == 0 && addr.sun_path[0])
        snprintf(srv->path, sizeof srv->path, "%.*s", (int)sizeof addr.sun_path, addr.sun_path);
    srv->activated = true;
    return fd;
}

int server_listen(server *srv, const server_listen_opts *opts, clad_err *err)
{
    snprintf(srv->path, sizeof srv->path, "%s", opts->path ? opts->path : "");
    int fd = 0;
    if (opts->use_activation) fd = socket_from_systemd(srv, err);
    if (fd < 0) return fd;
    if (fd == 0) fd = socket_create(srv, opts, err);
    if (fd < 0) return fd;

    uv_pipe_init(srv->loop, &srv->listener, 0);
    srv->listener.data = srv;
    srv->listening = srv->listener_open = true;
    int rc = uv_pipe_open(&srv->listener, fd);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&srv->listener, LISTEN_BACKLOG, on_connection);
    if (rc < 0) {
        server_stop_accepting(srv);
        return clad_err_set(err, CLAD_EIO, "listen on %s: %s", srv->path, uv_strerror(rc));
    }
    log_info("listening on %s%s", srv->path, srv->activated ? " (socket from systemd)" : "");
    return 0;
}

static void server_maybe_closed(server *srv);

static void on_force_timer_closed(uv_handle_t *h)
{
    server *srv = h->data;
    srv->force_timer_open = false;
    server_maybe_closed(srv);
}

static void server_maybe_closed(server *srv)
{
    if (!srv->closing_all || srv->conns || srv->listener_open || !srv->close_cb) return;
    if (srv->force_timer_open) {
        if (!uv_is_closing((uv_handle_t *)&srv->force_timer))
            uv_close((uv_handle_t *)&srv->force_timer, on_force_timer_closed);
        return;
    }
    void (*cb)(server *, void *) = srv->close_cb;
    srv->close_cb = NULL;
    cb(srv, srv->close_data);
}

static void on_listener_closed(uv_handle_t *h)
{
    server *srv = h->data;
    srv->listener_open = false;
    server_maybe_closed(srv);
}

void server_conn_freed(server *srv)
{
    server_maybe_closed(srv);
}

void server_stop_accepting(server *srv)
{
    srv->stopping = true;
    if (srv->listening) {
        srv->listening = false;
        uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
        struct stat st;
        /* Remove the file only if it is still the one we created (a new daemon may have replaced it). */
        if (srv->created_socket && lstat(srv->path, &st) == 0 && st.st_dev == srv->sock_dev &&
            st.st_ino == srv->sock_ino)
            unlink(srv->path);
        srv->created_socket = false;
    }
    /* conn_drain never frees a conn synchronously, so walking the list is safe. */
    for (conn *c = srv->conns; c; c = c->next) conn_drain(c);
}

static void on_force_timer(uv_timer_t *t)
{
    server *srv = t->data;
    for (conn *c = srv->conns; c; c = c->next) conn_close(c);
}

void server_close(server *srv, void (*cb)(server *srv, void *data), void *data)
{
    server_stop_accepting(srv);
    srv->closing_all = true;
    srv->close_cb = cb;
    srv->close_data = data;
    bool flushing = false;
    for (conn *c = srv->conns; c; c = c->next) {
        /* A response on its way out (a follower's last line, say) is let finish; it closes by itself. */
        if (c->phase == PHASE_FLUSH || c->phase == PHASE_LINGER) flushing = true;
        else conn_close(c);
    }
    if (flushing) {
        uv_timer_init(srv->loop, &srv->force_timer);
        srv->force_timer.data = srv;
        srv->force_timer_open = true;
        uv_timer_start(&srv->force_timer, on_force_timer, CLOSE_GRACE_MS, 0);
    }
    server_maybe_closed(srv);
}

void server_destroy(server *srv)
{
    if (!srv) return;
    if (srv->conns || srv->listener_open || srv->force_timer_open)
        log_error("bug: server destroyed with %s still open", srv->conns ? "connections" : "the listener");
    free(srv);
}

void server_get_stats(const server *srv, server_stats *out)
{
    *out = srv->stats;
    out->connections = srv->n_active;
}

const char *server_socket_path(const server *srv)
{
    return srv->path;
}

bool server_socket_activated(const server *srv)
{
    return srv->activated;
}
