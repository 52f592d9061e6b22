/* Helpers for the multi-node tests; see multinode_util.h. */
#include "tests/multinode_util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/model_io.h"
#include "storage/store.h"
#include "tests/test.h"
#include "tests/test_store_fixture.h"

void mn_start(mn_cluster *c, int n, const char *location)
{
    mn_start_config(c, n, location, NULL);
}

void mn_start_config(mn_cluster *c, int n, const char *location, const char *more)
{
    const char *configs[MN_MAX_NODES];
    for (int i = 0; i < MN_MAX_NODES; i++) configs[i] = more;
    mn_start_configs(c, n, location, configs);
}

void mn_start_configs(mn_cluster *c, int n, const char *location, const char *const *more)
{
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    CHECK(n > 0 && n <= MN_MAX_NODES);
    memset(c, 0, sizeof *c);
    c->n = n;
    snprintf(c->store, sizeof c->store, "%s", location);
    for (int i = 0; i < n; i++) {
        char sub[8], config[1024];
        snprintf(sub, sizeof sub, "n%d", i);
        snprintf(config, sizeof config, "node_id = n%d\n%s", i, more[i] ? more[i] : "");
        const char *args[] = {"--store", c->store, NULL};
        daemon_opts o = {.env = env, .args = args, .config = config, .subdir = sub};
        daemon_start(&c->node[i], &o);
    }
}

void mn_stop(mn_cluster *c)
{
    for (int i = 0; i < c->n; i++)
        if (c->node[i].pid > 0) {
            int rc = daemon_stop(&c->node[i], SIGTERM, 20);
            CHECK_MSG(rc == 0, "node n%d exited with %d; log:\n%s", i, rc, daemon_log(&c->node[i]));
        }
}

void store_fill_lora(const char *location, const model_config *cfg, int versions)
{
    clad_err e = {0};
    store *s = store_open(location, &e);
    CHECK_MSG(s != NULL, "%s", e.msg);
    model *m = model_create(cfg, NULL);
    CHECK(m != NULL);
    model_init_random(m, 3);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_OK(model_to_buffer(m, &buf, &len, &e), e);
    store_base_in bi = {.name = "b", .config_json = "{}", .weights = buf, .weights_size = len};
    CHECK_OK(store_base_put(s, &bi, 1000, &e), e);
    free(buf);
    store_task_in ti = {.name = "t", .base = "b", .n_classes = cfg->n_classes};
    CHECK_OK(store_task_create(s, &ti, 1000, &e), e);
    int ranks[MODEL_MAX_LINEARS];
    for (int i = 0; i < MODEL_MAX_LINEARS; i++) ranks[i] = 2;
    ranks[cfg->n_hidden] = 0; /* not the head */
    for (int v = 0; v < versions; v++) {
        adapter *a = adapter_create(m, ranks, 4, cfg->n_classes, &e);
        CHECK_MSG(a != NULL, "%s", e.msg);
        adapter_init(a, m, (uint64_t)v + 7);
        /* Non-zero B factors, so the folded weights differ from the base's. */
        for (size_t k = 0; k < a->params.total; k++) a->params.data[k] += 0.01f * (float)((k * 7 + (size_t)v) % 13) - 0.06f;
        CHECK_OK(adapter_to_buffer(a, m, &buf, &len, &e), e);
        store_version_in vi = {.task = "t", .kind = "lora", .adapter = buf, .adapter_size = len};
        CHECK_OK(store_version_put(s, &vi, 1000, NULL, &e), e);
        free(buf);
        adapter_destroy(a);
    }
    model_destroy(m);
    store_close(s);
}

long long mn_submit_json(const daemon_proc *d, const char *path, const char *json)
{
    char extra[1024], *body = NULL;
    snprintf(extra, sizeof extra, "-H 'Content-Type: application/json' -d '%s'", json);
    int code = curl_req(d, "POST", path, extra, &body, NULL);
    CHECK_MSG(code == 202, "POST %s answered %d: %s", path, code, body);
    json_t *j = json_or_fail(body);
    long long id = (long long)json_integer_value(json_object_get(j, "id"));
    json_decref(j);
    free(body);
    return id;
}

long long mn_occupy_slot(const daemon_proc *d, const char *lane)
{
    char body[128];
    snprintf(body, sizeof body, "{\"steps\": 3000, \"step_ms\": 100, \"lane\": \"%s\"}", lane);
    long long id = submit_sleep(d, body);
    for (;;) {
        json_t *j = get_job(d, id);
        bool running = !strcmp(state_of(j), "running");
        CHECK_MSG(running || !strcmp(state_of(j), "queued"), "sleep job %lld: %s", id, json_dumps(j, 0));
        json_decref(j);
        if (running) return id;
        sleep_ms(50);
    }
}

json_t *mn_status(const daemon_proc *d)
{
    char *body = NULL;
    int code = curl_req(d, "GET", "/v1/status", NULL, &body, NULL);
    CHECK_MSG(code == 200, "status answered %d: %s", code, body);
    json_t *j = json_or_fail(body);
    free(body);
    return j;
}

const char *mn_node_state(const daemon_proc *d, const char *id)
{
    static char state[16];
    json_t *j = mn_status(d), *x;
    size_t i;
    state[0] = '\0';
    json_array_foreach(json_object_get(j, "nodes"), i, x)
        if (!strcmp(json_string_value(json_object_get(x, "id")), id))
            snprintf(state, sizeof state, "%s", json_string_value(json_object_get(x, "state")));
    json_decref(j);
    return state;
}

double mn_wait_node_state(const daemon_proc *d, const char *id, const char *want, double timeout_s)
{
    double t0 = now_s();
    while (strcmp(mn_node_state(d, id), want)) {
        if (now_s() - t0 > timeout_s) {
            json_t *j = mn_status(d);
            char *text = json_dumps(json_object_get(j, "nodes"), JSON_INDENT(1));
            test_fail(__FILE__, __LINE__, "node %s not %s after %.0f s: %s", id, want, timeout_s, text);
        }
        sleep_ms(50);
    }
    return now_s() - t0;
}
