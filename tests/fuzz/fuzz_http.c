/* Fuzzes the HTTP request stream: the real server, connection state machine, http-parser callbacks,
 * query and path decoding and router (daemon/server.c, conn.c, http.c, router.c) on a private socket.
 * The first four bytes seed where the rest is cut into pieces (all zero: one write), so requests arrive
 * split at any point and pipelined; the routes below answer at once, stream, or answer later from the
 * loop (the way job and compute routes do), so pipelined bytes arrive while a handler owns a request. */
#include "tests/fuzz/fuzz.h"

#include <jansson.h>
#include <string.h>
#include <uv.h>

#include "tests/fuzz/harness_server.h"

static void echo(http_req *req)
{
    json_t *q = json_object();
    /* A name or value that is not UTF-8 is left out (json_string gives NULL, which set_new ignores). */
    for (size_t i = 0; i < req->n_query; i++)
        json_object_set_new(q, req->query_params[i].name, json_string(req->query_params[i].value));
    bool flag = false;
    clad_err e = {0};
    if (http_req_query_bool(req, "flag", &flag, &e)) {
        json_decref(q);
        http_reply_err(req, &e);
        return;
    }
    char mt[64];
    const char *ua = http_req_header(req, "user-agent");
    http_reply_json(req, 200, json_pack("{s:s?,s:s?,s:o,s:b,s:s,s:s?}", "a", http_req_param(req, "a"), "b",
                                        http_req_param(req, "b"), "query", q, "flag", flag, "type",
                                        http_req_media_type(req, mt, sizeof mt), "agent", ua));
}

static void json_body(http_req *req)
{
    http_reply_json(req, 200, json_pack("{s:I}", "keys", (json_int_t)json_object_size(req->json)));
}

static void upload(http_req *req)
{
    char *copy = http_req_alloc(req, req->body_len + 1);
    if (copy) memcpy(copy, req->body ? req->body : "", req->body_len);
    http_reply_json(req, 200, json_pack("{s:I}", "bytes", (json_int_t)req->body_len));
}

static void stream(http_req *req)
{
    if (http_stream_start(req, 200, HTTP_NDJSON) == 0)
        for (int i = 0; i < 3; i++) http_stream_json(req, json_pack("{s:i}", "i", i));
    http_stream_end(req);
}

typedef struct later {
    uv_timer_t timer;
    http_req *req;
    bool gone;
} later;

static void later_closed(uv_handle_t *h) { free(h->data); }

static void later_fire(uv_timer_t *t)
{
    later *l = t->data;
    http_reply_json(l->req, 200, json_pack("{s:b}", "gone", l->gone));
    uv_close((uv_handle_t *)t, later_closed);
}

static void later_gone(http_req *req, void *data) { ((later *)data)->gone = true; }

static void answer_later(http_req *req)
{
    later *l = calloc(1, sizeof *l);
    FUZZ_ASSERT(l);
    l->req = req;
    l->timer.data = l;
    uv_timer_init(fuzz_server_loop(), &l->timer);
    uv_timer_start(&l->timer, later_fire, 0, 0);
    http_req_on_gone(req, later_gone, l);
}

static const route routes[] = {
    {"GET", "/v1/echo/{a}/{b}", ROUTE_READ, echo, NULL, "parameters, query and headers back"},
    {"GET", "/v1/echo/fixed/{b}", ROUTE_READ, echo, NULL, "a literal segment beats a parameter"},
    {"POST", "/v1/json/{name}", ROUTE_WRITE | ROUTE_JSON, json_body, NULL, "a JSON object body"},
    {"PUT", "/v1/upload", ROUTE_WRITE, upload, "text/csv,application/octet-stream", "a raw body"},
    {"GET", "/v1/stream", ROUTE_READ, stream, NULL, "a chunked reply"},
    {"GET", "/v1/later", ROUTE_READ, answer_later, NULL, "a reply from a later loop turn"},
    {"POST", "/v1/later", ROUTE_READ, answer_later, "application/octet-stream", "same, with a body"},
    ROUTE_END,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    fuzz_server_start(routes);
    uint32_t seed = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 | data[3];
    fuzz_server_send(data + 4, size - 4, seed);
    return 0;
}
