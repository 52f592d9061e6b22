/* The route table as a whole: query parameters a route does not declare are refused, and docs/API.md
 * documents exactly the routes cladd serves (read from `cladd --routes` at run time, so routes added by
 * any module are covered), with the query parameters each one accepts. */
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

/* --- docs/API.md against the route table -------------------------------------------------------------- */

typedef struct route_line {
    char method[16], path[256], query[512];
} route_line;

/* The routes of `cladd --routes --enable-test-routes`. */
static size_t read_routes(route_line *out, size_t max)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s/cladd --routes --enable-test-routes", test_build_dir());
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    char line[2048];
    size_t n = 0;
    while (fgets(line, sizeof line, p)) {
        CHECK(n < max);
        route_line *r = &out[n++];
        char *save = NULL, *method = strtok_r(line, "\t", &save), *path = strtok_r(NULL, "\t", &save);
        strtok_r(NULL, "\t", &save); /* access */
        char *query = strtok_r(NULL, "\t", &save);
        CHECK_MSG(method && path && query, "malformed cladd --routes line");
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->path, sizeof r->path, "%s", path);
        snprintf(r->query, sizeof r->query, "%s", strcmp(query, "-") ? query : "");
    }
    CHECK_INT_EQ(pclose(p), 0);
    return n;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    CHECK(buf != NULL);
    CHECK_INT_EQ(fread(buf, 1, (size_t)n, f), n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The part of the docs that documents `needle`: from its "###" heading to the next heading, or the table
 * row or line it appears on. NULL if it is not there. Malloc'd. */
static char *section_of(const char *docs, const char *needle)
{
    const char *hit = NULL;
    for (int pass = 0; pass < 2 && !hit; pass++) /* headings first, then table rows */
        for (const char *p = docs; !hit && (p = strstr(p, needle)); p++) {
            const char *bol = p;
            while (bol > docs && bol[-1] != '\n') bol--;
            if (pass == 0 ? !strncmp(bol, "### ", 4) : bol[0] == '|') hit = bol;
        }
    if (!hit) return NULL;
    const char *end;
    if (hit[0] == '|') {
        end = strchr(hit, '\n');
    } else {
        end = strstr(hit + 4, "\n#");
    }
    if (!end) end = hit + strlen(hit);
    return strndup(hit, (size_t)(end - hit));
}

TEST(daemon_api_md_documents_every_route_and_nothing_else)
{
    char *docs = read_text("docs/API.md");
    if (!docs) {
        printf("# skipped: docs/API.md not found from %s\n", getcwd((char[512]){0}, 512));
        return;
    }
    static route_line routes[512];
    size_t n = read_routes(routes, 512);
    CHECK(n >= 20);
    int missing = 0;
    for (size_t i = 0; i < n; i++) {
        char needle[300];
        snprintf(needle, sizeof needle, "`%.15s %.255s`", routes[i].method, routes[i].path);
        char *sec = section_of(docs, needle);
        if (!sec) {
            fprintf(stderr, "# %s is served but not documented under a '###' heading or in a table\n", needle);
            missing++;
            continue;
        }
        /* Each query parameter the route accepts is named in its section. */
        char q[512], *save = NULL;
        snprintf(q, sizeof q, "%s", routes[i].query);
        for (char *name = strtok_r(q, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
            char a[80], b[80], c[80];
            snprintf(a, sizeof a, "`%s`", name);
            snprintf(b, sizeof b, "`%s=", name);
            snprintf(c, sizeof c, "?%s=", name);
            if (!strstr(sec, a) && !strstr(sec, b) && !strstr(sec, c)) {
                fprintf(stderr, "# %s accepts ?%s= but its section does not name it\n", needle, name);
                missing++;
            }
        }
        free(sec);
    }
    /* Every "`METHOD /path`" in the docs is served. */
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH"};
    for (const char *p = docs; (p = strchr(p, '`')); p++) {
        for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
            size_t ml = strlen(methods[m]);
            if (strncmp(p + 1, methods[m], ml) || p[1 + ml] != ' ' || p[2 + ml] != '/') continue;
            const char *path = p + 2 + ml, *close = strchr(path, '`');
            if (!close) continue;
            size_t len = strcspn(path, "?`");
            bool found = false;
            for (size_t i = 0; i < n && !found; i++)
                found = !strcmp(routes[i].method, methods[m]) && strlen(routes[i].path) == len &&
                        !strncmp(routes[i].path, path, len);
            if (!found) {
                fprintf(stderr, "# docs/API.md names %.*s, which cladd does not serve\n", (int)(close - p - 1), p + 1);
                missing++;
            }
        }
    }
    free(docs);
    CHECK_MSG(missing == 0, "%d mismatch(es) between the route table and docs/API.md (listed above)", missing);
}

/* One wording per error class, whichever route answers. */
TEST(daemon_errors_use_one_wording_per_class)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    static const struct {
        const char *method, *path, *body, *code, *start;
    } cases[] = {
        {"GET", "/v1/jobs/99", NULL, "not_found", "unknown job 99"},
        {"DELETE", "/v1/jobs/99", NULL, "not_found", "unknown job 99"},
        {"GET", "/v1/tasks/nosuch", NULL, "not_found", "unknown task 'nosuch'"},
        {"GET", "/v1/bases/nosuch", NULL, "not_found", "unknown base 'nosuch'"},
        {"POST", "/v1/tasks/t/rollback", "{\"bogus\":1}", "invalid_input", "unknown key 'bogus' (known: "},
        {"PUT", "/v1/tasks/t/aliases/a", "{\"bogus\":1}", "invalid_input", "unknown key 'bogus' (known: "},
        {"POST", "/v1/merges/m", "{\"bogus\":1}", "invalid_input", "unknown key 'bogus' (known: "},
        {"POST", "/v1/bases/b", "{\"bogus\":1}", "invalid_input", "unknown key 'bogus' (known: "},
        {"GET", "/v1/jobs?bogus=1", NULL, "invalid_input", "unknown query parameter 'bogus' (known: "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char extra[256] = "", *body = NULL;
        if (cases[i].body)
            snprintf(extra, sizeof extra, "-H 'Content-Type: application/json' -d '%s'", cases[i].body);
        curl_req(&d, cases[i].method, cases[i].path, extra, &body, NULL);
        json_t *j = json_or_fail(body);
        json_t *e = json_object_get(j, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));
        CHECK_MSG(!strcmp(error_code_of(body), cases[i].code) && msg && !strncmp(msg, cases[i].start, strlen(cases[i].start)),
                  "%s %s: want %s \"%s...\", got %s", cases[i].method, cases[i].path, cases[i].code, cases[i].start, body);
        json_decref(j);
        free(body);
    }
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}
