/* Request accessors, replies, streams and small HTTP helpers; see http.h. The writing itself is in
 * conn.c. */
#include "daemon/http.h"

#include <ctype.h>
#include <http_parser.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "daemon/conn.h"
#include "daemon/json_text.h"
#include "daemon/log.h"

const char *http_req_header(const http_req *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (!strcmp(req->headers[i].name, name)) return req->headers[i].value;
    return NULL;
}

const char *http_req_param(const http_req *req, const char *name)
{
    for (size_t i = 0; i < req->n_params; i++)
        if (!strcmp(req->params[i].name, name)) return req->params[i].value;
    return NULL;
}

const char *http_req_query(const http_req *req, const char *name)
{
    for (size_t i = 0; i < req->n_query; i++)
        if (!strcmp(req->query_params[i].name, name)) return req->query_params[i].value;
    return NULL;
}

int http_req_query_bool(const http_req *req, const char *name, bool *out, clad_err *err)
{
    const char *v = http_req_query(req, name);
    if (!v) {
        *out = false;
        return 0;
    }
    if (!*v || !strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes")) {
        *out = true;
        return 0;
    }
    if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no")) {
        *out = false;
        return 0;
    }
    return clad_err_set(err, CLAD_EINVAL, "query parameter '%s' must be 1 or 0 (true or false), not '%.40s'",
                        name, v);
}

void *http_req_alloc(http_req *req, size_t n)
{
    return conn_alloc(req->conn, n);
}

const char *http_req_media_type(const http_req *req, char *buf, size_t size)
{
    const char *ct = http_req_header(req, "content-type");
    size_t n = 0;
    if (ct) {
        while (*ct == ' ' || *ct == '\t') ct++;
        while (ct[n] && ct[n] != ';' && ct[n] != ' ' && ct[n] != '\t') n++;
    }
    if (n >= size) n = size - 1; /* an absurdly long type is cut and then simply matches nothing */
    for (size_t i = 0; i < n; i++) buf[i] = (char)tolower((unsigned char)ct[i]);
    buf[n] = '\0';
    return buf;
}

/* --- replies ----------------------------------------------------------------------------------------------- */

void http_reply(http_req *req, int status, const char *content_type, const void *body, size_t len,
                const char *extra_headers)
{
    conn_respond(req->conn, status, content_type, body, len, extra_headers);
}

/* "2025-01-31T12:00:00.123Z" */
static json_t *time_string(time_t s, int ms)
{
    struct tm tm;
    gmtime_r(&s, &tm);
    char buf[48];
    size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof buf - n, ".%03dZ", ms);
    return json_string(buf);
}

json_t *http_time_json(double t)
{
    if (!(t > 0)) return json_null();
    time_t s = (time_t)t;
    int ms = (int)((t - (double)s) * 1000.0);
    return time_string(s, ms > 999 ? 999 : ms);
}

json_t *http_time_ms_json(int64_t ms)
{
    return ms > 0 ? time_string((time_t)(ms / 1000), (int)(ms % 1000)) : json_null();
}

double http_float_shortest(float f)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%.*g", json_text_float_digits(f), (double)f);
    return strtod(buf, NULL);
}

void http_reply_json(http_req *req, int status, json_t *body)
{
    size_t len = 0;
    char *line = body ? json_text_line(body, &len) : NULL;
    json_decref(body);
    if (!line) {
        static const char oom[] = "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"cannot build the reply\"}}\n";
        http_reply(req, 503, HTTP_JSON, oom, sizeof oom - 1, NULL);
        return;
    }
    http_reply(req, status, HTTP_JSON, line, len, NULL);
    free(line);
}

json_t *http_error_json(const char *code_word, const char *message)
{
    return json_pack("{s:{s:s,s:s}}", "error", "code", code_word, "message", message);
}

static void reply_error_v(http_req *req, int status, const char *code_word, const char *extra_headers,
                          const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* A message quoting client bytes (or cut inside a character) must still be a JSON string. */
    if (!http_utf8_valid(msg))
        for (unsigned char *p = (unsigned char *)msg; *p; p++)
            if (*p >= 0x80) *p = '?';
    if (status >= 500) log_warning("%s %s: %d %s: %s", req->method_name, req->path, status, code_word, msg);
    size_t len = 0;
    json_t *j = http_error_json(code_word, msg);
    char *line = j ? json_text_line(j, &len) : NULL;
    json_decref(j);
    if (!line) {
        static const char oom[] = "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"cannot build the reply\"}}\n";
        http_reply(req, 503, HTTP_JSON, oom, sizeof oom - 1, NULL);
        return;
    }
    http_reply(req, status, HTTP_JSON, line, len, extra_headers);
    free(line);
}

void http_reply_error(http_req *req, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(req, http_status_for_code(code), clad_code_name(code), NULL, fmt, ap);
    va_end(ap);
}

void http_reply_err(http_req *req, const clad_err *err)
{
    int code = err && err->code ? err->code : CLAD_EINTERNAL;
    const char *msg = err && err->msg[0] ? err->msg : "unexpected error";
    http_reply_error(req, code, "%s", msg);
}

void http_reply_status_error(http_req *req, int status, const char *code_word, const char *extra_headers,
                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_error_v(req, status, code_word, extra_headers, fmt, ap);
    va_end(ap);
}

/* --- streams ---------------------------------------------------------------------------------------------- */

int http_stream_start(http_req *req, int status, const char *content_type)
{
    return conn_stream_start(req->conn, status, content_type);
}

int http_stream_write(http_req *req, const void *data, size_t len)
{
    return conn_stream_chunk(req->conn, data, len);
}

int http_stream_json(http_req *req, json_t *obj)
{
    size_t len = 0;
    char *line = obj ? json_text_line(obj, &len) : NULL;
    json_decref(obj);
    if (!line) return CLAD_ENOMEM;
    int rc = conn_stream_chunk(req->conn, line, len);
    free(line);
    return rc;
}

void http_stream_end(http_req *req)
{
    conn_stream_end(req->conn);
}

void http_req_on_gone(http_req *req, http_gone_cb cb, void *data)
{
    req->conn->gone_cb = cb;
    req->conn->gone_data = data;
}

bool http_req_is_gone(const http_req *req)
{
    return req->conn->closing;
}

/* --- helpers ---------------------------------------------------------------------------------------------- */

int http_status_for_code(int code)
{
    switch (code) {
    case CLAD_OK: return 200;
    case CLAD_EINVAL: return 400;
    case CLAD_EDENIED: return 403;
    case CLAD_ENOTFOUND: return 404;
    case CLAD_ECONFLICT: return 409;
    case CLAD_ECANCELLED: return 409;
    case CLAD_ETOOLARGE: return 413;
    case CLAD_EMEDIA: return 415;
    case CLAD_EBUSY: return 503;
    case CLAD_ENOMEM: return 503;
    case CLAD_EFULL: return 507;
    default: return 500; /* io_error, corrupt, unsupported_version, internal: the daemon's side */
    }
}

const char *http_status_text(int status)
{
    const char *s = http_status_str((enum http_status)status);
    return s && strcmp(s, "<unknown>") ? s : "Unknown";
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

long http_percent_decode(char *dst, const char *src, size_t len, bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = src[i];
        if (ch == '%') {
            int hi = i + 2 < len ? hexval((unsigned char)src[i + 1]) : -1;
            int lo = hi >= 0 ? hexval((unsigned char)src[i + 2]) : -1;
            if (lo < 0) return -1;
            ch = (char)(hi * 16 + lo);
            if (ch == '\0') return -1;
            i += 2;
        } else if (ch == '+' && plus_is_space) {
            ch = ' ';
        }
        dst[o++] = ch;
    }
    dst[o] = '\0';
    return (long)o;
}

bool http_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int more;
        unsigned cp, min;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            more = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        for (int i = 1; i <= more; i++) {
            if ((p[i] & 0xC0) != 0x80) return false; /* also stops at the NUL */
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        p += more + 1;
    }
    return true;
}
