/* The in-process server of harness_server.h. */
#include "tests/fuzz/harness_server.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "daemon/conn.h"
#include "daemon/server.h"
#include "tests/fuzz/fuzz.h"

static uv_loop_t loop;
static server *srv;
static router *rt;
static char sock_path[108];

static bool on_head(http_req *req, void *data) { return router_on_head(rt, req); }
static void on_request(http_req *req, void *data) { router_dispatch(rt, req); }

void fuzz_server_start(const route *routes)
{
    if (srv) return;
    signal(SIGPIPE, SIG_IGN);
    FUZZ_ASSERT(uv_loop_init(&loop) == 0);
    rt = router_create();
    clad_err e = {0};
    FUZZ_ASSERT(router_add(rt, routes, &e) == 0);
    router_set_json_limit(rt, 1 << 16);
    /* Small limits, so the fuzzer reaches 413 and 431 with small inputs. */
    server_limits lim = {.max_body_bytes = 1 << 16, .max_header_bytes = 2048, .max_connections = 8,
                         .header_timeout_ms = 2000, .idle_timeout_ms = 2000, .body_timeout_ms = 2000};
    server_handlers h = {.on_head = on_head, .on_request = on_request};
    srv = server_create(&loop, &lim, &h);
    char dir[] = "/tmp/clad-fuzz-XXXXXX";
    FUZZ_ASSERT(mkdtemp(dir) != NULL);
    snprintf(sock_path, sizeof sock_path, "%s/s", dir);
    server_listen_opts o = {.path = sock_path, .mode = 0600};
    FUZZ_ASSERT(server_listen(srv, &o, &e) == 0);
}

/* Reads what is there; returns false once the server has closed the connection. */
static bool drain(int fd, size_t *got)
{
    char buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            *got += (size_t)n;
            continue;
        }
        if (n == 0) return false;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    }
}

size_t fuzz_server_send(const uint8_t *data, size_t len, uint32_t seed)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    FUZZ_ASSERT(fd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock_path);
    FUZZ_ASSERT(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    size_t got = 0, off = 0;
    bool open = true;
    int turns = 0;
    while (off < len && open && turns < 100000) {
        size_t piece = len - off;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 16) % 64;
            if (piece > len - off) piece = len - off;
        }
        ssize_t n = send(fd, data + off, piece, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) off += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) break;
        uv_run(&loop, UV_RUN_NOWAIT);
        open = drain(fd, &got);
        turns++;
    }
    shutdown(fd, SHUT_WR);
    /* The server answers what it has and closes; handlers that defer their reply finish meanwhile. */
    for (turns = 0; open && turns < 2000; turns++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        open = drain(fd, &got);
        if (open && turns > 100) usleep(100);
    }
    close(fd);
    fuzz_server_settle();
    return got;
}

uv_loop_t *fuzz_server_loop(void) { return &loop; }

void fuzz_server_settle(void)
{
    /* srv->conns (daemon/conn.h) lists every connection not yet freed. */
    for (int i = 0; i < 5000 && srv->conns; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (i > 100) usleep(200);
    }
    /* The client has closed its end: a connection still there after a second is one the server lost. */
    FUZZ_ASSERT(srv->conns == NULL);
}
