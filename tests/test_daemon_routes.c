/* The route table as a whole: query parameters a route does not declare are refused. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/router.h"
#include "tests/daemon_util.h"
#include "tests/test.h"

static void noop(http_req *req) { (void)req; }

TEST(daemon_router_query_part_of_patterns)
{
    router *rt = router_create();
    clad_err err = {0};
    const route good[] = {
        {"GET", "/v1/x{?a,b}", ROUTE_READ, noop, NULL, "x"},
        {"GET", "/v1/y", ROUTE_READ, noop, NULL, "y"},
        ROUTE_END,
    };
    CHECK_INT_EQ(router_add(rt, good, &err), 0);
    size_t index = 99;
    CHECK_INT_EQ(router_match(rt, "GET", "/v1/x", NULL, &index, NULL, 0), ROUTER_FOUND);
    CHECK_INT_EQ(index, 0);
    CHECK_STR_EQ(router_get(rt, 0)->pattern, "/v1/x"); /* logs and metrics see the path alone */
    CHECK_STR_EQ(router_get_query(rt, 0), "a,b");
    CHECK_STR_EQ(router_get_query(rt, 1), "");
    /* The same path with another query list is the same route. */
    const route twice[] = {{"GET", "/v1/x{?c}", ROUTE_READ, noop, NULL, "again"}, ROUTE_END};
    CHECK_INT_EQ(router_add(rt, twice, &err), CLAD_EINVAL);
    static const char *const bad[] = {"/v1/z{?}", "/v1/z{?a", "/v1/z{?a}/more", "/v1/z{?a/b}", "/v1/z{?a{b}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const route t[] = {{"GET", bad[i], ROUTE_READ, noop, NULL, "bad"}, ROUTE_END};
        CHECK_MSG(router_add(rt, t, &err) == CLAD_EINVAL, "pattern %s was accepted", bad[i]);
    }
    router_destroy(rt);
}

static void expect_400(const daemon_proc *d, const char *method, const char *path, const char *extra,
                       const char *needle)
{
    char *body = NULL;
    int code = curl_req(d, method, path, extra, &body, NULL);
    CHECK_MSG(code == 400, "%s %s answered %d: %s", method, path, code, body);
    CHECK_STR_EQ(error_code_of(body), "invalid_input");
    CHECK_MSG(strstr(body, needle), "%s %s: no \"%s\" in %s", method, path, needle, body);
    free(body);
}

TEST(daemon_unknown_query_parameters_are_400)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    expect_400(&d, "GET", "/v1/health?verbose=1", NULL, "unknown query parameter 'verbose' (GET /v1/health takes none)");
    expect_400(&d, "GET", "/v1/jobs?stat=running", NULL, "unknown query parameter 'stat' (known: state,lane,limit)");
    /* The misspelling that used to train with the default epochs: refused before the body is read. */
    expect_400(&d, "POST", "/v1/tasks/t1/train?epoch=1", "-H 'Content-Type: text/csv' --data-binary '0,1,2'",
               "'epoch'");
    expect_400(&d, "POST", "/v1/tasks/t1/evaluate?probs=0", "-H 'Content-Type: text/csv' --data-binary '0,1,2'",
               "'probs'");
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/tasks", NULL, &body, NULL), 200);
    CHECK_MSG(strstr(body, "\"tasks\":[]"), "a refused request created something: %s", body);
    free(body);
    /* Declared parameters still work. */
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs?state=running&limit=5", NULL, &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}
