/* Blocking HTTP client over a Unix socket; see client.h. */
#include "daemon/client.h"

#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef CLAD_VERSION
#define CLAD_VERSION "unknown"
#endif

int client_connect(const char *path, clad_err *err)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return clad_err_set(err, CLAD_EINVAL, "socket path is longer than %zu bytes: %s", sizeof addr.sun_path - 1,
                            path);
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return clad_err_set(err, CLAD_EIO, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        const char *hint = e == ENOENT || e == ECONNREFUSED ? " (is cladd running? see --socket and CLAD_SOCKET)"
                           : e == EACCES                     ? " (you need to be in the socket's group)"
                                                             : "";
        return clad_err_set(err, CLAD_EIO, "cannot connect to %s: %s%s", path, strerror(e), hint);
    }
    return fd;
}

static int send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

typedef struct parse_state {
    const client_request *rq;
    client_response *resp;
    char field[32];
    size_t field_len;
    bool field_is_ctype;
    bool in_value;
    bool done;
    int error; /* CLAD_ETOOLARGE, CLAD_ENOMEM or CLAD_ECANCELLED from a callback */
    size_t cap;
} parse_state;

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    parse_state *s = p->data;
    if (s->in_value) {
        s->in_value = false;
        s->field_len = 0;
    }
    for (size_t i = 0; i < len && s->field_len + 1 < sizeof s->field; i++)
        s->field[s->field_len++] = (char)tolower((unsigned char)at[i]);
    s->field[s->field_len] = '\0';
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    parse_state *s = p->data;
    if (!s->in_value) {
        s->in_value = true;
        s->field_is_ctype = !strcmp(s->field, "content-type");
        if (s->field_is_ctype) s->resp->content_type[0] = '\0';
    }
    if (s->field_is_ctype) {
        size_t have = strlen(s->resp->content_type);
        size_t room = sizeof s->resp->content_type - 1 - have;
        size_t n = len < room ? len : room;
        memcpy(s->resp->content_type + have, at, n);
        s->resp->content_type[have + n] = '\0';
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    parse_state *s = p->data;
    s->resp->status = p->status_code;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    parse_state *s = p->data;
    if (s->rq->on_body) {
        if (s->rq->on_body(at, len, s->rq->data) != 0) {
            s->error = CLAD_ECANCELLED;
            return -1;
        }
        return 0;
    }
    client_response *r = s->resp;
    if (r->body_len + len > CLIENT_MAX_BODY) {
        s->error = CLAD_ETOOLARGE;
        return -1;
    }
    if (r->body_len + len + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < r->body_len + len + 1) cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) {
            s->error = CLAD_ENOMEM;
            return -1;
        }
        r->body = b;
        s->cap = cap;
    }
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

static int on_message_complete(http_parser *p)
{
    parse_state *s = p->data;
    /* A 1xx is an interim response; the real one follows. */
    if (p->status_code >= 100 && p->status_code < 200) return 0;
    s->done = true;
    http_parser_pause(p, 1);
    return 0;
}

int client_exchange(int fd, const client_request *rq, client_response *resp, clad_err *err)
{
    memset(resp, 0, sizeof *resp);
    char head[16384]; /* the CLI's paths are at most 8 KiB (cli_url) */
    int hl = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: cladd\r\nUser-Agent: clad/%s\r\nConnection: close\r\n", rq->method,
                      rq->path, CLAD_VERSION);
    if (hl < 0 || hl >= (int)sizeof head - 128) return clad_err_set(err, CLAD_EINVAL, "request path is too long");
    if (rq->body || rq->content_type)
        hl += snprintf(head + hl, sizeof head - (size_t)hl, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                       rq->content_type ? rq->content_type : "application/octet-stream", rq->body_len);
    hl += snprintf(head + hl, sizeof head - (size_t)hl, "\r\n");
    /* If sending fails the daemon may still have answered (413 before the whole body): read anyway. */
    int send_errno = 0;
    if (send_all(fd, head, (size_t)hl) != 0 || (rq->body_len && send_all(fd, rq->body, rq->body_len) != 0))
        send_errno = errno;

    http_parser_settings settings;
    http_parser_settings_init(&settings);
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    http_parser parser;
    http_parser_init(&parser, HTTP_RESPONSE);
    parse_state st = {.rq = rq, .resp = resp};
    parser.data = &st;

    char buf[65536];
    int rc = 0;
    while (!st.done) {
        if (rq->timeout_ms > 0) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            int pr = poll(&pfd, 1, rq->timeout_ms);
            if (pr == 0) {
                rc = clad_err_set(err, CLAD_EIO, "no reply from the daemon within %d ms", rq->timeout_ms);
                break;
            }
            if (pr < 0 && errno == EINTR) continue;
        }
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            rc = clad_err_set(err, CLAD_EIO, "reading the reply: %s", strerror(errno));
            break;
        }
        size_t used = http_parser_execute(&parser, &settings, buf, (size_t)n);
        enum http_errno e = HTTP_PARSER_ERRNO(&parser);
        if (st.done) break;
        if (st.error) {
            rc = st.error == CLAD_ECANCELLED ? clad_err_set(err, CLAD_ECANCELLED, "stopped reading the reply")
                 : st.error == CLAD_ETOOLARGE
                     ? clad_err_set(err, CLAD_ETOOLARGE, "reply is larger than %u bytes", CLIENT_MAX_BODY)
                     : clad_err_set(err, CLAD_ENOMEM, "out of memory reading the reply");
            break;
        }
        if (e != HPE_OK || used != (size_t)n) {
            rc = clad_err_set(err, CLAD_ECORRUPT, "malformed reply from the daemon: %s", http_errno_description(e));
            break;
        }
        if (n == 0) {
            if (send_errno)
                rc = clad_err_set(err, CLAD_EIO, "sending the request failed: %s", strerror(send_errno));
            else
                rc = clad_err_set(err, CLAD_EIO, "the daemon closed the connection before the reply was complete");
            break;
        }
    }
    if (rc != 0) client_response_finish(resp);
    else if (!resp->body) {
        resp->body = calloc(1, 1);
        if (!resp->body) rc = clad_err_set(err, CLAD_ENOMEM, "out of memory");
    }
    return rc;
}

void client_response_finish(client_response *resp)
{
    if (!resp) return;
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}

int client_call(const char *sock_path, const client_request *rq, char **body, clad_err *err)
{
    if (body) *body = NULL;
    int fd = client_connect(sock_path, err);
    if (fd < 0) return 0;
    client_response resp = {0};
    int rc = client_exchange(fd, rq, &resp, err);
    close(fd);
    if (!rc && body) *body = resp.body, resp.body = NULL;
    client_response_finish(&resp);
    return rc ? 0 : resp.status;
}

int client_lines_feed(const char *data, size_t len, void *arg)
{
    client_lines *l = arg;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            if (l->len + 1 > l->cap) {
                char *b = realloc(l->buf, l->len + 1);
                if (!b) return -1;
                l->buf = b;
                l->cap = l->len + 1;
            }
            l->buf[l->len] = '\0';
            size_t n = l->len;
            l->len = 0;
            if (n > 0 && l->buf[n - 1] == '\r') l->buf[--n] = '\0';
            int rc = l->on_line(l->buf, n, l->data);
            if (rc) return rc;
            continue;
        }
        if (l->max_line && l->len >= l->max_line) {
            l->overflow = true;
            return -1;
        }
        if (l->len + 2 > l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 1024;
            char *b = realloc(l->buf, cap);
            if (!b) return -1;
            l->buf = b;
            l->cap = cap;
        }
        l->buf[l->len++] = data[i];
    }
    return 0;
}

int client_lines_finish(client_lines *l)
{
    int rc = 0;
    if (l->len > 0 && l->buf) {
        l->buf[l->len] = '\0';
        rc = l->on_line(l->buf, l->len, l->data);
    }
    free(l->buf);
    l->buf = NULL;
    l->len = l->cap = 0;
    return rc;
}
