/* One client connection: HTTP framing with http-parser, the phase machine, timeouts and response
 * writing. See conn.h for the phases and the memory rule. */
#include "daemon/conn.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "daemon/log.h"

/* Bytes of a pipelined next request kept while a handler works; beyond this we stop reading. */
#define PENDING_MAX (64 * 1024)
/* A streamed response whose client stops reading is dropped beyond this much unsent data. */
#define STREAM_MAX_QUEUED (8u << 20)
/* How long input is discarded after a closing response, so the client can read the response. */
#define LINGER_MS 1000
/* First allocation for a body whose size is not known, or is large (grown by doubling). */
#define BODY_INITIAL (64 * 1024)
/* Over-limit connections being answered 503 at once; beyond this they are closed without an answer. */
#define REJECT_MAX 64
/* Longest Content-Type a handler may send; keeps every response head within its fixed buffer. */
#define CONTENT_TYPE_MAX 200

enum { SEG_NONE, SEG_URL, SEG_FIELD, SEG_VALUE };

typedef struct wreq {
    uv_write_t req;
    conn *c;
    size_t len;
    bool last; /* the last write of a response: its completion ends the response */
    char data[];
} wreq;

static void conn_after_response(conn *c);
static void conn_maybe_free(conn *c);
static void conn_fail(conn *c, int status, const char *code_word, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void conn_feed(conn *c, const char *data, size_t len);

double conn_now(void)
{
    return (double)uv_hrtime() * 1e-9;
}

/* --- timers --------------------------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void timer_arm(conn *c, uint32_t ms)
{
    if (!c->closing) uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void timer_stop(conn *c)
{
    if (!c->closing) uv_timer_stop(&c->timer);
}

static void on_timer(uv_timer_t *t)
{
    conn *c = t->data;
    switch (c->phase) {
    case PHASE_HEAD:
        if (c->idle) {
            log_debug("connection %llu: idle for %u ms; closed", (unsigned long long)c->id,
                      c->limits.idle_timeout_ms);
            conn_close(c);
        } else {
            log_info("connection %llu (pid %ld uid %ld): request headers not complete after %u ms; dropped",
                     (unsigned long long)c->id, (long)c->peer.pid, (long)c->peer.uid,
                     c->limits.header_timeout_ms);
            conn_fail(c, 408, "timeout", "request headers not complete within %u ms",
                      c->limits.header_timeout_ms);
        }
        break;
    case PHASE_BODY:
        log_info("connection %llu: no body bytes for %u ms; dropped", (unsigned long long)c->id,
                 c->limits.body_timeout_ms);
        conn_fail(c, 408, "timeout", "no request body bytes received for %u ms", c->limits.body_timeout_ms);
        break;
    case PHASE_HANDLER:
    case PHASE_FLUSH:
        log_info("connection %llu: client did not read the response for %u ms; dropped",
                 (unsigned long long)c->id, c->limits.body_timeout_ms);
        conn_close(c);
        break;
    case PHASE_LINGER:
    case PHASE_CLOSED:
        conn_close(c);
        break;
    }
}

/* --- writing -------------------------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    conn *c = w->c;
    bool last = w->last;
    c->write_queued -= w->len;
    free(w);
    if (c->closing) return;
    if (status < 0) {
        log_debug("connection %llu: write failed: %s", (unsigned long long)c->id, uv_strerror(status));
        conn_close(c);
        return;
    }
    if (c->phase == PHASE_HANDLER || c->phase == PHASE_FLUSH) {
        if (c->write_queued) timer_arm(c, c->limits.body_timeout_ms);
        else timer_stop(c);
    }
    if (last) conn_after_response(c);
}

/* Queues a copy of parts[0..n) as one write. Returns 0, or CLAD_EIO if the connection is closing or the
 * write cannot start (the connection is then closed). */
static int conn_write(conn *c, const uv_buf_t *parts, size_t n, bool last)
{
    if (c->closing) return CLAD_EIO;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += parts[i].len;
    wreq *w = malloc(sizeof *w + len);
    if (!w) {
        log_error("connection %llu: out of memory for a %zu-byte write; closing", (unsigned long long)c->id,
                  len);
        conn_close(c);
        return CLAD_EIO;
    }
    w->c = c;
    w->len = len;
    w->last = last;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].len == 0) continue;
        memcpy(w->data + off, parts[i].base, parts[i].len);
        off += parts[i].len;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write);
    if (rc < 0) {
        free(w);
        log_debug("connection %llu: write: %s", (unsigned long long)c->id, uv_strerror(rc));
        conn_close(c);
        return CLAD_EIO;
    }
    c->write_queued += len;
    if ((c->phase == PHASE_HANDLER || c->phase == PHASE_FLUSH) && !uv_is_active((uv_handle_t *)&c->timer))
        timer_arm(c, c->limits.body_timeout_ms);
    return 0;
}

/* --- request state ------------------------------------------------------------------------------------- */

static void free_allocs(conn *c)
{
    while (c->allocs) {
        void *next = *(void **)c->allocs;
        free(c->allocs);
        c->allocs = next;
    }
}

static void req_reset(conn *c)
{
    free_allocs(c);
    json_decref(c->req.json);
    free(c->head);
    free(c->arena);
    free(c->body);
    c->head = c->arena = c->body = NULL;
    c->head_len = c->head_cap = c->arena_len = c->arena_cap = c->body_len = c->body_cap = 0;
    c->last_seg = SEG_NONE;
    c->url_off = 0;
    c->n_hdr = 0;
    c->has_body = false;
    c->req_done = false;
    c->streaming = false;
    c->stream_chunked = false;
    c->resp_status = 0;
    c->latency = 0;
    c->gone_cb = NULL;
    c->gone_data = NULL;
    c->event = EV_NONE;
    memset(&c->req, 0, sizeof c->req);
    c->req.method = -1;
    c->req.method_name = "-";
    c->req.path = "-";
    c->req.query = "";
    c->req.body = "";
    c->req.route_index = -1;
    c->req.peer = &c->peer;
    c->req.app = c->srv->h.data;
    c->req.conn = c;
    c->limits = c->srv->limits;
}

/* The request is answered (or its stream ended): report it, and release it if the connection is gone. */
static void conn_request_finished(conn *c)
{
    c->req_done = true;
    server *srv = c->srv;
    srv->stats.requests_total++;
    if (srv->h.on_done) srv->h.on_done(&c->req, c->resp_status, c->latency, srv->h.data);
    c->req_owned = false;
    if (c->closing) conn_maybe_free(c);
}

/* --- closing ------------------------------------------------------------------------------------------- */

static void conn_free(conn *c)
{
    server *srv = c->srv;
    if (c->prev) c->prev->next = c->next;
    else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free_allocs(c);
    json_decref(c->req.json);
    free(c->head);
    free(c->arena);
    free(c->body);
    free(c->pending);
    free(c);
    server_conn_freed(srv);
}

static void conn_maybe_free(conn *c)
{
    if (c->open_handles == 0 && !c->req_owned && !c->in_gone_cb) conn_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->open_handles > 0) return;
    if (c->req_owned && c->gone_cb) {
        http_gone_cb cb = c->gone_cb;
        c->gone_cb = NULL;
        c->in_gone_cb = true;
        cb(&c->req, c->gone_data);
        c->in_gone_cb = false;
    }
    conn_maybe_free(c);
}

void conn_close(conn *c)
{
    if (c->closing) return;
    c->closing = true;
    c->phase = PHASE_CLOSED;
    server *srv = c->srv;
    if (c->counted) {
        c->counted = false;
        srv->n_active--;
    }
    if (c->rejected) {
        c->rejected = false;
        srv->n_rejecting--;
    }
    uv_read_stop((uv_stream_t *)&c->pipe);
    c->reading = false;
    uv_close((uv_handle_t *)&c->pipe, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn *c = req->data;
    if (c->closing) return;
    if (status < 0 || c->read_eof) conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    buf->base = c->srv->rbuf;
    buf->len = sizeof c->srv->rbuf;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(conn *c)
{
    if (c->closing || c->reading || c->read_eof) return;
    if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) == 0) c->reading = true;
}

/* After a response that ends the connection: shut our side down, discard input briefly, then close. */
static void conn_linger(conn *c)
{
    if (c->closing) return;
    c->phase = PHASE_LINGER;
    if (c->read_eof) {
        conn_close(c);
        return;
    }
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->pipe, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    conn_read_start(c);
    timer_arm(c, LINGER_MS);
}

void conn_drain(conn *c)
{
    if (c->closing) return;
    switch (c->phase) {
    case PHASE_HEAD:
    case PHASE_BODY:
        /* No request was handed over yet: nothing is lost by closing. */
        conn_close(c);
        break;
    case PHASE_HANDLER:
    case PHASE_FLUSH:
        c->close_after = true;
        break;
    case PHASE_LINGER:
    case PHASE_CLOSED:
        break;
    }
}

/* The last byte of a response was written. */
static void conn_after_response(conn *c)
{
    if (c->close_after || c->srv->stopping) {
        conn_linger(c);
        return;
    }
    req_reset(c);
    c->phase = PHASE_HEAD;
    c->idle = true;
    timer_arm(c, c->limits.idle_timeout_ms);
    if (c->pending_len) {
        /* A pipelined request arrived while the handler worked: parse it now, from this fresh stack. */
        char *p = c->pending;
        size_t n = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        conn_feed(c, p, n);
        free(p);
    }
    if (!c->closing && (c->phase == PHASE_HEAD || c->phase == PHASE_BODY)) {
        if (c->read_eof) conn_close(c);
        else conn_read_start(c);
    }
}

/* --- responses ----------------------------------------------------------------------------------------- */

static const char *connection_word(const conn *c)
{
    return c->close_after || c->srv->stopping ? "close" : "keep-alive";
}

static const char *safe_content_type(const char *ct)
{
    if (!ct) return "text/plain";
    if (strlen(ct) > CONTENT_TYPE_MAX || strpbrk(ct, "\r\n")) {
        log_error("bug: a handler sent a malformed or overlong Content-Type; using application/octet-stream");
        return "application/octet-stream";
    }
    return ct;
}

void conn_respond(conn *c, int status, const char *content_type, const void *body, size_t len,
                  const char *extra_headers)
{
    if (c->req_done || c->streaming) {
        log_error("bug: request %llu (%s %s) answered twice", (unsigned long long)c->req.seq,
                  c->req.method_name, c->req.path);
        return;
    }
    c->resp_status = status;
    c->latency = conn_now() - c->t_ready;
    /* Answering before the request was read completely (an early error): the rest of the request is
     * unread, so the connection cannot carry another one. */
    if (c->phase == PHASE_HEAD || c->phase == PHASE_BODY) c->close_after = true;
    if (c->closing) c->resp_status = 499; /* nginx's "client closed request", for metrics and the log */
    if (!c->closing) {
        char head[512];
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 %d %s\r\n"
                          "Content-Type: %s\r\n"
                          "Content-Length: %zu\r\n"
                          "Cache-Control: no-store\r\n"
                          "Connection: %s\r\n",
                          status, http_status_text(status), safe_content_type(content_type), len,
                          connection_word(c));
        uv_buf_t parts[4] = {
            uv_buf_init(head, (unsigned)hl),
            uv_buf_init((char *)(extra_headers ? extra_headers : ""),
                        (unsigned)(extra_headers ? strlen(extra_headers) : 0)),
            uv_buf_init((char *)"\r\n", 2),
            /* A response to HEAD announces its length but carries no body. */
            uv_buf_init((char *)body, c->req.method == HTTP_HEAD ? 0 : (unsigned)len),
        };
        if (conn_write(c, parts, 4, true) == 0) c->phase = PHASE_FLUSH;
    }
    conn_request_finished(c);
}

int conn_stream_start(conn *c, int status, const char *content_type)
{
    if (c->req_done || c->streaming) {
        log_error("bug: request %llu (%s %s) answered twice", (unsigned long long)c->req.seq,
                  c->req.method_name, c->req.path);
        return CLAD_EINTERNAL;
    }
    c->streaming = true;
    c->resp_status = status;
    c->latency = conn_now() - c->t_ready;
    if (c->closing) {
        c->resp_status = 499;
        return CLAD_EIO;
    }
    /* HTTP/1.0 has no chunked encoding: the body then ends with the connection. */
    c->stream_chunked = !(c->req.http_major == 1 && c->req.http_minor == 0);
    if (!c->stream_chunked) c->close_after = true;
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\n"
                      "Content-Type: %s\r\n"
                      "%s"
                      "Cache-Control: no-store\r\n"
                      "Connection: %s\r\n\r\n",
                      status, http_status_text(status), safe_content_type(content_type),
                      c->stream_chunked ? "Transfer-Encoding: chunked\r\n" : "", connection_word(c));
    uv_buf_t part = uv_buf_init(head, (unsigned)hl);
    return conn_write(c, &part, 1, false);
}

int conn_stream_chunk(conn *c, const void *data, size_t len)
{
    if (!c->streaming || c->req_done) return CLAD_EINTERNAL;
    if (c->closing) return CLAD_EIO;
    if (len == 0) return 0; /* a zero-length chunk would end the stream */
    if (c->write_queued + len > STREAM_MAX_QUEUED) {
        log_warning("connection %llu: client is not reading its stream (%zu bytes waiting); dropped",
                    (unsigned long long)c->id, c->write_queued);
        conn_close(c);
        return CLAD_EIO;
    }
    char size_line[24];
    int sl = c->stream_chunked ? snprintf(size_line, sizeof size_line, "%zx\r\n", len) : 0;
    uv_buf_t parts[3] = {
        uv_buf_init(size_line, (unsigned)sl),
        uv_buf_init((char *)data, (unsigned)len),
        uv_buf_init((char *)"\r\n", c->stream_chunked ? 2 : 0),
    };
    return conn_write(c, parts, 3, false);
}

void conn_stream_end(conn *c)
{
    if (c->req_done) {
        log_error("bug: request %llu (%s %s) finished twice", (unsigned long long)c->req.seq,
                  c->req.method_name, c->req.path);
        return;
    }
    if (!c->streaming) {
        log_error("bug: request %llu (%s %s) ended a stream it never started", (unsigned long long)c->req.seq,
                  c->req.method_name, c->req.path);
        conn_respond(c, 500, HTTP_JSON, "{\"error\":{\"code\":\"internal\",\"message\":\"no response\"}}\n",
                     56, NULL);
        return;
    }
    if (!c->closing) {
        if (c->stream_chunked) {
            uv_buf_t part = uv_buf_init((char *)"0\r\n\r\n", 5);
            if (conn_write(c, &part, 1, true) == 0) c->phase = PHASE_FLUSH;
        } else {
            conn_linger(c); /* the shutdown waits for the queued writes */
        }
    }
    conn_request_finished(c);
}

/* An error found by the server itself while reading a request: answer it and close. */
static void conn_fail(conn *c, int status, const char *code_word, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    timer_stop(c);
    c->t_ready = conn_now();
    c->close_after = true;
    json_t *j = http_error_json(code_word, msg);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text) {
        conn_close(c);
        return;
    }
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (!line) {
        free(text);
        conn_close(c);
        return;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    conn_respond(c, status, HTTP_JSON, line, n + 1, NULL);
    free(line);
}

void *conn_alloc(conn *c, size_t n)
{
    /* A header of max_align_t keeps the returned memory aligned for any type. */
    char *block = malloc(sizeof(max_align_t) + n);
    if (!block) return NULL;
    *(void **)block = c->allocs;
    c->allocs = block;
    return block + sizeof(max_align_t);
}

/* Defined here rather than in http.c: it hands over the connection's own body buffer. */
char *http_req_take_body(http_req *req, size_t *len)
{
    conn *c = req->conn;
    char *body = c->body;
    *len = c->body_len;
    if (!body) return NULL;
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    req->body = "";
    req->body_len = 0;
    return body;
}

/* --- request parsing ----------------------------------------------------------------------------------- */

static int grow(char **buf, size_t *cap, size_t need, size_t limit)
{
    if (need <= *cap) return 0;
    if (need > limit) return -1;
    size_t n = *cap ? *cap : 256;
    while (n < need) n *= 2;
    if (n > limit) n = limit;
    char *p = realloc(*buf, n);
    if (!p) return -2;
    *buf = p;
    *cap = n;
    return 0;
}

static int head_append(http_parser *p, int seg, const char *at, size_t len)
{
    conn *c = p->data;
    /* http-parser bounds the header section (http_parser_set_max_header_size); this bound only keeps a
     * surprise in the parser from growing the buffer without limit. */
    size_t limit = (size_t)c->limits.max_header_bytes + 1024;
    if (seg != c->last_seg) {
        if (c->last_seg != SEG_NONE) {
            if (grow(&c->head, &c->head_cap, c->head_len + 1, limit) != 0) goto too_large;
            c->head[c->head_len++] = '\0';
        }
        if (seg == SEG_URL) {
            c->url_off = c->head_len;
        } else if (seg == SEG_FIELD) {
            if (c->n_hdr == HTTP_MAX_HEADERS) goto too_large;
            c->hdr[c->n_hdr].name_off = c->head_len;
            c->hdr[c->n_hdr].value_off = SIZE_MAX;
            c->n_hdr++;
        } else if (c->n_hdr > 0) {
            c->hdr[c->n_hdr - 1].value_off = c->head_len;
        }
        c->last_seg = seg;
    }
    int g = grow(&c->head, &c->head_cap, c->head_len + len + 1, limit);
    if (g == -2) {
        c->event = EV_NO_MEMORY;
        return -1;
    }
    if (g != 0) goto too_large;
    memcpy(c->head + c->head_len, at, len);
    c->head_len += len;
    return 0;
too_large:
    c->event = EV_HEAD_TOO_LARGE;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    conn *c = p->data;
    if (c->idle) {
        /* The header timeout counts from the first byte of this request. */
        c->idle = false;
        timer_arm(c, c->limits.header_timeout_ms);
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    return head_append(p, SEG_URL, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    return head_append(p, SEG_FIELD, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    return head_append(p, SEG_VALUE, at, len);
}

static int on_headers_complete(http_parser *p)
{
    conn *c = p->data;
    c->event = EV_HEAD;
    http_parser_pause(p, 1);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if ((uint64_t)c->body_len + len > c->limits.max_body_bytes) {
        c->event = EV_BODY_TOO_LARGE;
        http_parser_pause(p, 1);
        return 0;
    }
    if (c->body_len + len + 1 > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : BODY_INITIAL;
        while (cap < c->body_len + len + 1) cap *= 2;
        if (cap > c->limits.max_body_bytes + 1) cap = (size_t)c->limits.max_body_bytes + 1;
        char *b = realloc(c->body, cap);
        if (!b) {
            c->event = EV_NO_MEMORY;
            http_parser_pause(p, 1);
            return 0;
        }
        c->body = b;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    c->event = EV_MESSAGE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static char *arena_take(conn *c, size_t n)
{
    if (c->arena_len + n > c->arena_cap) return NULL;
    char *p = c->arena + c->arena_len;
    c->arena_len += n;
    return p;
}

/* Splits and decodes "a=1&b=x%20y" into req.query_params. Returns 0 or -1 after answering 400. */
static int parse_query(conn *c, const char *q)
{
    http_req *r = &c->req;
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t plen = amp ? (size_t)(amp - q) : strlen(q);
        if (plen > 0) {
            if (r->n_query == HTTP_MAX_QUERY) {
                conn_fail(c, 400, "invalid_input", "more than %d query parameters", HTTP_MAX_QUERY);
                return -1;
            }
            const char *eq = memchr(q, '=', plen);
            size_t nlen = eq ? (size_t)(eq - q) : plen;
            size_t vlen = eq ? plen - nlen - 1 : 0;
            char *name = arena_take(c, nlen + 1), *value = arena_take(c, vlen + 1);
            if (!name || !value || http_percent_decode(name, q, nlen, true) < 0 ||
                http_percent_decode(value, eq ? eq + 1 : "", vlen, true) < 0) {
                conn_fail(c, 400, "invalid_input", "query parameter %.*s is not valid percent-encoding",
                          (int)(nlen < 64 ? nlen : 64), q);
                return -1;
            }
            r->query_params[r->n_query++] = (http_param){name, value};
        }
        q += plen + (amp ? 1 : 0);
    }
    return 0;
}

/* Headers are complete: fill the request, check what can be checked before the body. Returns true to go
 * on reading, false if the request was answered (the rest of the input is then dropped). */
static bool conn_head_done(conn *c)
{
    http_req *r = &c->req;
    http_parser *p = &c->parser;
    if (grow(&c->head, &c->head_cap, c->head_len + 1, (size_t)c->limits.max_header_bytes + 2048) != 0) {
        conn_fail(c, 431, "too_large", "request headers are larger than %u bytes", c->limits.max_header_bytes);
        return false;
    }
    c->head[c->head_len++] = '\0';
    for (size_t i = 0; i < c->n_hdr; i++) {
        char *name = c->head + c->hdr[i].name_off;
        for (char *s = name; *s; s++) *s = (char)tolower((unsigned char)*s);
        const char *value = c->hdr[i].value_off == SIZE_MAX ? "" : c->head + c->hdr[i].value_off;
        c->headers[i] = (http_header){name, value};
    }
    r->headers = c->headers;
    r->n_headers = c->n_hdr;
    r->method = p->method;
    r->method_name = http_method_str((enum http_method)p->method);
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->seq = ++c->srv->next_req_seq;
    c->t_ready = conn_now();

    if (p->upgrade || p->method == HTTP_CONNECT) {
        conn_fail(c, 400, "invalid_input", "protocol upgrades and CONNECT are not supported");
        return false;
    }
    const char *url = c->head + c->url_off;
    size_t url_len = strlen(url);
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (url_len == 0 || http_parser_parse_url(url, url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH))) {
        conn_fail(c, 400, "invalid_input", "the request target is not a valid path");
        return false;
    }
    c->arena_cap = 4 * url_len + 64;
    c->arena = malloc(c->arena_cap);
    if (!c->arena) {
        conn_fail(c, 503, "busy", "out of memory");
        return false;
    }
    char *path = arena_take(c, (size_t)u.field_data[UF_PATH].len + 1);
    memcpy(path, url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    path[u.field_data[UF_PATH].len] = '\0';
    r->path = path;
    if (path[0] != '/') {
        conn_fail(c, 400, "invalid_input", "the request path must start with '/'");
        return false;
    }
    if (u.field_set & (1 << UF_QUERY)) {
        char *query = arena_take(c, (size_t)u.field_data[UF_QUERY].len + 1);
        memcpy(query, url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
        query[u.field_data[UF_QUERY].len] = '\0';
        r->query = query;
        if (parse_query(c, query) != 0) return false;
    }

    c->has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENTLENGTH) && p->content_length > 0);
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->limits.max_body_bytes) {
        conn_fail(c, 413, "too_large", "request body of %llu bytes is larger than the limit of %llu bytes",
                  (unsigned long long)p->content_length, (unsigned long long)c->limits.max_body_bytes);
        return false;
    }
    if (!c->has_body) return true; /* routed when complete, so a 404 keeps the connection alive */

    c->phase = PHASE_BODY;
    timer_arm(c, c->limits.body_timeout_ms);
    server *srv = c->srv;
    if (srv->h.on_head && !srv->h.on_head(r, srv->h.data)) return false;
    const char *expect = http_req_header(r, "expect");
    if (expect && !strcasecmp(expect, "100-continue")) {
        uv_buf_t part = uv_buf_init((char *)"HTTP/1.1 100 Continue\r\n\r\n", 25);
        if (conn_write(c, &part, 1, false) != 0) return false;
    }
    return true;
}

/* The request is complete: give it to the handler. */
static void conn_dispatch(conn *c)
{
    c->phase = PHASE_HANDLER;
    timer_stop(c);
    c->t_ready = conn_now();
    if (!http_should_keep_alive(&c->parser)) c->close_after = true;
    if (c->body) {
        c->body[c->body_len] = '\0';
        c->req.body = c->body;
    }
    c->req.body_len = c->body_len;
    c->req_owned = true;
    c->srv->h.on_request(&c->req, c->srv->h.data);
}

static void stash_pending(conn *c, const char *data, size_t len)
{
    if (len == 0) return;
    char *p = realloc(c->pending, c->pending_len + len);
    if (!p) {
        log_error("connection %llu: out of memory for pipelined input; closing", (unsigned long long)c->id);
        conn_close(c);
        return;
    }
    memcpy(p + c->pending_len, data, len);
    c->pending = p;
    c->pending_len += len;
    if (c->pending_len >= PENDING_MAX && c->reading) {
        /* Back-pressure on a client that pipelines a lot: the kernel buffers the rest. */
        uv_read_stop((uv_stream_t *)&c->pipe);
        c->reading = false;
    }
}

static void conn_feed(conn *c, const char *data, size_t len)
{
    while (len > 0 && !c->closing) {
        size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        data += n;
        len -= n;
        if (e == HPE_OK) {
            if (len > 0) { /* only after an upgrade, which conn_head_done refuses */
                conn_fail(c, 400, "invalid_input", "unexpected bytes after the request");
            }
            return;
        }
        if (e != HPE_PAUSED) {
            if (c->event == EV_HEAD_TOO_LARGE || e == HPE_HEADER_OVERFLOW)
                conn_fail(c, 431, "too_large", "request line and headers are larger than %u bytes or %d lines",
                          c->limits.max_header_bytes, HTTP_MAX_HEADERS);
            else if (c->event == EV_NO_MEMORY)
                conn_fail(c, 503, "busy", "out of memory while reading the request");
            else
                conn_fail(c, 400, "invalid_input", "malformed HTTP request: %s", http_errno_description(e));
            return;
        }
        http_parser_pause(&c->parser, 0);
        conn_event ev = c->event;
        c->event = EV_NONE;
        switch (ev) {
        case EV_HEAD:
            if (!conn_head_done(c)) return;
            break;
        case EV_MESSAGE:
            stash_pending(c, data, len);
            conn_dispatch(c);
            return;
        case EV_BODY_TOO_LARGE:
            conn_fail(c, 413, "too_large", "request body is larger than the limit of %llu bytes",
                      (unsigned long long)c->limits.max_body_bytes);
            return;
        case EV_NO_MEMORY:
            conn_fail(c, 503, "busy", "out of memory while reading the request body");
            return;
        default:
            conn_fail(c, 500, "internal", "request parser paused unexpectedly");
            return;
        }
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (nread == 0 || c->closing) return;
    if (nread < 0) {
        c->read_eof = true;
        uv_read_stop(s);
        c->reading = false;
        switch (c->phase) {
        case PHASE_FLUSH:
            /* Let the response finish (the client may have only shut down its sending side). */
            c->close_after = true;
            break;
        case PHASE_HANDLER:
            /* The client left while a handler works: it learns through its gone callback. */
            log_debug("connection %llu: client left during %s %s", (unsigned long long)c->id,
                      c->req.method_name, c->req.path);
            conn_close(c);
            break;
        default:
            conn_close(c);
            break;
        }
        return;
    }
    switch (c->phase) {
    case PHASE_HEAD:
    case PHASE_BODY:
        if (c->phase == PHASE_BODY) timer_arm(c, c->limits.body_timeout_ms);
        conn_feed(c, buf->base, (size_t)nread);
        break;
    case PHASE_HANDLER:
    case PHASE_FLUSH:
        if (!c->close_after) stash_pending(c, buf->base, (size_t)nread);
        break;
    case PHASE_LINGER:
    case PHASE_CLOSED:
        break; /* discarded */
    }
}

/* --- accepting ----------------------------------------------------------------------------------------- */

static void read_peer(conn *c)
{
    uv_os_fd_t fd;
    c->peer.pid = 0;
    c->peer.uid = (uid_t)-1;
    c->peer.gid = (gid_t)-1;
    c->peer.n_groups = -1;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0) return;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        c->peer.pid = cred.pid;
        c->peer.uid = cred.uid;
        c->peer.gid = cred.gid;
    } else {
        log_warning("connection %llu: SO_PEERCRED: %s", (unsigned long long)c->id, strerror(errno));
    }
    /* The peer's supplementary groups as the kernel recorded them at connect (Linux 4.13+); without
     * them the router falls back to the group database. */
    socklen_t glen = sizeof c->peer.groups;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, c->peer.groups, &glen) == 0)
        c->peer.n_groups = (int)(glen / sizeof(gid_t));
}

void conn_accept(server *srv, bool reject)
{
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        log_error("out of memory accepting a connection");
        return;
    }
    c->srv = srv;
    c->id = ++srv->next_conn_id;
    uv_pipe_init(srv->loop, &c->pipe, 0);
    uv_timer_init(srv->loop, &c->timer);
    c->pipe.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    req_reset(c);

    int rc = uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&c->pipe);
    if (rc < 0) {
        log_warning("accept: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    read_peer(c);
    srv->stats.connections_total++;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->phase = PHASE_HEAD;
    c->t_ready = conn_now();
    if (reject && srv->n_rejecting >= REJECT_MAX) {
        srv->stats.connections_rejected++;
        conn_close(c); /* a flood: no answer, just the close */
        return;
    }
    if (reject) {
        c->rejected = true;
        srv->n_rejecting++;
        srv->stats.connections_rejected++;
        log_warning("connection %llu (pid %ld uid %ld): %llu connections open, the limit; answered busy",
                    (unsigned long long)c->id, (long)c->peer.pid, (long)c->peer.uid,
                    (unsigned long long)srv->n_active);
        conn_fail(c, 503, "busy", "too many connections (limit %u); try again later",
                  c->limits.max_connections);
        return;
    }
    c->counted = true;
    srv->n_active++;
    log_debug("connection %llu: pid %ld uid %ld gid %ld", (unsigned long long)c->id, (long)c->peer.pid,
              (long)c->peer.uid, (long)c->peer.gid);
    /* A new connection has header_timeout to send its first request (not the longer idle timeout). */
    timer_arm(c, c->limits.header_timeout_ms);
    conn_read_start(c);
}
