/* Fuzzes every JSON request body the daemon takes: the router's JSON step (ROUTE_JSON: object, size,
 * duplicate keys) and then the validators of the API modules, called as their routes call them:
 *   rollback / undo / alias PUT   body_fields       (daemon/api_tasks.c)
 *   POST /v1/merges/{name}        parse_merge       (daemon/api_merge.c)
 *   POST /v1/bases/{name} (JSON)  parse_train_spec  (daemon/api_bases.c)
 *   predict with a JSON body      request_inputs    (daemon/api_util.c: json_inputs, inputs_check; as
 *                                                    /v1/tasks/{name}/predict and /v1/predict call it)
 * The first three are static: the module files are included here (their routes are not registered, so
 * nothing else of them runs). The first byte picks the route, the rest is the body; requests go through
 * the in-process server (harness_server.h), so the body reaches the validators exactly as it would in cladd. */
#include "daemon/api_bases.c"
#include "daemon/api_merge.c"
#include "daemon/api_tasks.c"

#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/harness_server.h"

static void fields_rollback(http_req *req)
{
    const char *alias = NULL, *reason = NULL;
    int64_t to = -1;
    if (body_fields(req, &alias, &reason, &to, "to")) {
        FUZZ_ASSERT(to >= 0);
        http_reply_json(req, 200, json_object());
    }
}

static void fields_undo(http_req *req)
{
    const char *alias = NULL, *reason = NULL;
    if (body_fields(req, &alias, &reason, NULL, NULL)) http_reply_json(req, 200, json_object());
}

static void fields_alias(http_req *req)
{
    const char *reason = NULL;
    int64_t version = -1;
    if (body_fields(req, NULL, &reason, &version, "version")) http_reply_json(req, 200, json_object());
}

static void merge_body(http_req *req)
{
    merge_arg *a = calloc(1, sizeof *a);
    FUZZ_ASSERT(a);
    clad_err e = {0};
    int rc = parse_merge(a, req->json, &e);
    if (rc) FUZZ_CHECK_ERR(rc, e);
    else FUZZ_ASSERT(a->n >= 1 && a->n <= MERGE_MAX_TASKS && a->rank >= 1);
    merge_free(a);
    http_reply_json(req, rc ? 400 : 200, json_object());
}

static void base_body(http_req *req)
{
    json_error_t je;
    json_t *spec = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (json_is_object(spec)) {
        base_train_arg *a = calloc(1, sizeof *a);
        FUZZ_ASSERT(a);
        clad_err e = {0};
        int rc = parse_train_spec(a, spec, &e);
        if (rc) FUZZ_CHECK_ERR(rc, e);
        base_train_free(a);
    }
    json_decref(spec);
    http_reply_json(req, 200, json_object());
}

static void predict_body(http_req *req)
{
    dataset d = {0};
    clad_err e = {0};
    /* An MLP with a small fixed input width, so rows of the right length are reachable. */
    model_config cfg = {.kind = MODEL_MLP, .input_dim = 3};
    int rc = request_inputs(&d, req, false, &cfg, &e);
    if (rc) FUZZ_CHECK_ERR(rc, e);
    else FUZZ_ASSERT(d.n >= 1 && d.dim == 3);
    dataset_finish(&d);
    http_reply_json(req, 200, json_object());
}

static const route routes[] = {
    {"POST", "/r/{name}", ROUTE_WRITE | ROUTE_JSON, fields_rollback, NULL, "rollback"},
    {"POST", "/u/{name}", ROUTE_WRITE | ROUTE_JSON, fields_undo, NULL, "rollback undo"},
    {"PUT", "/a/{name}", ROUTE_WRITE | ROUTE_JSON, fields_alias, NULL, "alias put"},
    {"POST", "/m/{name}", ROUTE_WRITE | ROUTE_JSON, merge_body, NULL, "merge"},
    {"POST", "/b/{name}", ROUTE_WRITE, base_body, "application/json", "base training"},
    {"POST", "/p/{name}", ROUTE_READ, predict_body, "application/json", "predict"},
    ROUTE_END,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const targets[] = {"POST /r/t1", "POST /u/t1", "PUT /a/active", "POST /m/t1",
                                          "POST /b/b1", "POST /p/t1"};
    if (size < 1 || size > (1 << 16)) return 0;
    fuzz_server_start(routes);
    char head[160];
    int n = snprintf(head, sizeof head, "%s HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     targets[data[0] % 6], size - 1);
    uint8_t *req = malloc((size_t)n + size - 1);
    FUZZ_ASSERT(req);
    memcpy(req, head, (size_t)n);
    memcpy(req + n, data + 1, size - 1);
    FUZZ_ASSERT(fuzz_server_send(req, (size_t)n + size - 1, 0) > 0);
    free(req);
    return 0;
}
