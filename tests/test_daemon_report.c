/* What clad shows and how operators steer it, end to end on the real daemon: the accuracy matrix and
 * cross-evaluations, the HTML report (checked in headless Chromium), `clad ps`, `aliases`, `health`, the
 * per task Prometheus series, promotion policies, deleting aliases, tasks and bases, and the CLI's
 * --detach, progress bar and Ctrl-C. Data: Gaussian class blobs in 16 dimensions on a small MLP base. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/model.h"
#include "core/rng.h"
#include "io/dataset_io.h"
#include "io/model_io.h"
#include "storage/store.h"
#include "tests/daemon_util.h"
#include "tests/test.h"

#define DIM 16
#define K 4

/* n samples of K Gaussian blobs whose centres depend on `task_seed` (so tasks differ); `seed` draws the
 * samples, so train and test files of one task share their centres. */
static void write_blobs(const char *path, int n, uint64_t task_seed, uint64_t seed)
{
    float centre[K][DIM];
    rng r;
    rng_init(&r, task_seed);
    for (int k = 0; k < K; k++)
        for (int j = 0; j < DIM; j++) centre[k][j] = rng_normal(&r);
    dataset d;
    CHECK_INT_EQ(dataset_init(&d, n, 1, (int[]){DIM}, NULL), 0);
    rng_init(&r, seed);
    for (int i = 0; i < n; i++) {
        d.y[i] = i % K;
        for (int j = 0; j < DIM; j++) d.x[(size_t)i * DIM + j] = centre[d.y[i]][j] + 0.7f * rng_normal(&r);
    }
    d.n_classes = K;
    CHECK_INT_EQ(dataset_save_safetensors(&d, path, NULL), 0);
    dataset_finish(&d);
}

typedef struct rig {
    daemon_proc d;
    char dir[256];
} rig;

static const char *in_tmp(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", test_tmpdir(), name);
    return p;
}

/* A daemon with base "mlp" and the files a.st, a-test.st, b.st, b-test.st (tasks a and b). */
static void rig_start(rig *g)
{
    model_config c = {.kind = MODEL_MLP, .input_dim = DIM, .n_hidden = 1, .hidden = {32}, .n_classes = K};
    write_random_base(in_tmp("base.st"), &c, 3);
    write_blobs(in_tmp("a.st"), 800, 11, 1);
    write_blobs(in_tmp("a-test.st"), 200, 11, 2);
    write_blobs(in_tmp("b.st"), 800, 22, 3);
    write_blobs(in_tmp("b-test.st"), 200, 22, 4);
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    daemon_start(&g->d, &o);
    char args[600], *out = NULL;
    snprintf(args, sizeof args, "base import mlp '%s' 2>&1", in_tmp("base.st"));
    int rc = clad_run(&g->d, args, &out);
    CHECK_MSG(rc == 0, "base import exited %d: %s", rc, out);
    free(out);
}

/* Runs clad with args (stderr folded into the output); checks the exit code; returns the output. */
static char *clad_ok(rig *g, int want, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static char *clad_ok(rig *g, int want, const char *fmt, ...)
{
    char args[2048], *out = NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args - 8, fmt, ap);
    va_end(ap);
    strcat(args, " 2>&1");
    int rc = clad_run(&g->d, args, &out);
    CHECK_MSG(rc == want, "clad %s exited %d (want %d):\n%s", args, rc, want, out);
    return out;
}

static json_t *get_json_ok(rig *g, const char *path)
{
    char *body = NULL;
    int code = curl_req(&g->d, "GET", path, NULL, &body, NULL);
    CHECK_MSG(code == 200, "GET %s answered %d: %s", path, code, body);
    json_t *j = json_or_fail(body);
    free(body);
    return j;
}

static void train_ok(rig *g, const char *task, const char *file, const char *opts)
{
    free(clad_ok(g, 0, "--json train %s '%s' %s", task, in_tmp(file), opts ? opts : ""));
}

/* A started rig with tasks a and b trained (two epochs each) on the base. */
static void rig_start_ab(rig *g)
{
    rig_start(g);
    train_ok(g, "a", "a.st", "--epochs 2 --lr 0.01");
    train_ok(g, "b", "b.st", "--epochs 2 --lr 0.01");
}

/* ---- the matrix ---------------------------------------------------------------------------------- */

TEST_TIMEOUT(daemon_report_matrix_keeps_cross_evaluations_apart, 120)
{
    rig g;
    rig_start(&g);
    train_ok(&g, "a", "a.st", "--epochs 3 --lr 0.01");
    train_ok(&g, "b", "b.st", "--epochs 3 --lr 0.01");
    char *out = clad_ok(&g, 0, "eval a '%s'", in_tmp("a-test.st"));
    CHECK_MSG(strstr(out, "(recorded)") && !strstr(out, "kept apart"), "%s", out);
    free(out);
    free(clad_ok(&g, 0, "eval b '%s'", in_tmp("b-test.st")));
    /* a on b's test data, said explicitly, and on b's training data, recognised by its sha256. */
    out = clad_ok(&g, 0, "eval a '%s' --data-task b", in_tmp("b-test.st"));
    CHECK_MSG(strstr(out, "data of task b: kept apart"), "%s", out);
    free(out);
    free(clad_ok(&g, 0, "eval a '%s'", in_tmp("b.st")));
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&g.d, "POST", "/v1/tasks/a/evaluate?data_task=nope",
                          "-H 'Content-Type: application/octet-stream' --data-binary @/dev/null", &body, NULL), 404);
    free(body);

    json_t *m = get_json_ok(&g, "/v1/bases/mlp/matrix");
    json_t *rows = json_object_get(m, "rows"), *cross = json_object_get(m, "cross");
    CHECK_INT_EQ(json_array_size(json_object_get(m, "tasks")), 2);
    CHECK_INT_EQ(json_array_size(rows), 2);
    /* Both own evaluations happened after b@1: they sit in b@1's row; a@1's row is empty. */
    CHECK_INT_EQ(json_object_size(json_object_get(json_array_get(rows, 0), "cells")), 0);
    json_t *cells = json_object_get(json_array_get(rows, 1), "cells");
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(json_array_get(rows, 1), "after"), "task")), "b");
    json_t *ca = json_object_get(cells, "a");
    CHECK_MSG(ca && json_number_value(json_object_get(ca, "accuracy")) > 0.8, "a's cell: %s", json_dumps(ca, 0));
    CHECK_STR_EQ(json_string_value(json_object_get(ca, "data_name")), "a-test.st");
    CHECK_INT_EQ(strlen(json_string_value(json_object_get(ca, "data_sha256"))), 64);
    CHECK_INT_EQ(json_integer_value(json_object_get(ca, "samples")), 200);
    CHECK_INT_EQ(json_array_size(cross), 2);
    for (size_t i = 0; i < 2; i++) {
        CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(cross, i), "task")), "a");
        CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(cross, i), "data_task")), "b");
    }
    json_decref(m);
    out = clad_ok(&g, 0, "matrix");
    CHECK_MSG(strstr(out, "b@1") && strstr(out, "a: test data a-test.st") && strstr(out, "on b's data b.st"), "%s", out);
    free(out);
    free(clad_ok(&g, 4, "matrix nope"));
    CHECK_INT_EQ(daemon_stop(&g.d, SIGTERM, 10), 0);
}

/* ---- the report in a real browser ------------------------------------------------------------------ */

/* Non-white pixels of an 8-bit RGB(A) PNG, decoded by python3's zlib; -1 if it cannot be read. */
static long png_ink(const char *png)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import struct,sys,zlib\n"
             "d=open(sys.argv[1],'rb').read();p=8;w=h=0;z=b''\n"
             "while p<len(d):\n"
             " n,t=struct.unpack('>I4s',d[p:p+8]);c=d[p+8:p+8+n];p+=12+n\n"
             " if t==b'IHDR':w,h,bd,ct=struct.unpack('>IIBB',c[:10])\n"
             " if t==b'IDAT':z+=c\n"
             "r=zlib.decompress(z);bpp=4 if ct==6 else 3;s=w*bpp;prev=bytearray(s);ink=0;o=0\n"
             "for y in range(h):\n"
             " f=r[o];row=bytearray(r[o+1:o+1+s]);o+=1+s\n"
             " for i in range(s):\n"
             "  a=row[i-bpp] if i>=bpp else 0;b=prev[i];c=prev[i-bpp] if i>=bpp else 0\n"
             "  if f==1:row[i]=(row[i]+a)&255\n"
             "  elif f==2:row[i]=(row[i]+b)&255\n"
             "  elif f==3:row[i]=(row[i]+(a+b)//2)&255\n"
             "  elif f==4:\n"
             "   q=a+b-c;pa=abs(q-a);pb=abs(q-b);pc=abs(q-c)\n"
             "   row[i]=(row[i]+(a if pa<=pb and pa<=pc else b if pb<=pc else c))&255\n"
             " ink+=sum(1 for x in range(0,s,bpp) if min(row[x:x+3])<200);prev=row\n"
             "print(ink)\" '%s'", png);
    FILE *p = popen(cmd, "r");
    long ink = -1;
    if (p && fscanf(p, "%ld", &ink) != 1) ink = -1;
    if (p) pclose(p);
    return ink;
}

TEST_TIMEOUT(daemon_report_html_renders_in_chromium, 180)
{
    rig g;
    rig_start_ab(&g);
    train_ok(&g, "a", "a.st", "--epochs 1 --lr 0.01 --seed 5");
    free(clad_ok(&g, 0, "rollback a --reason 'report test'"));
    free(clad_ok(&g, 0, "eval a '%s'", in_tmp("a-test.st")));
    free(clad_ok(&g, 0, "eval b '%s'", in_tmp("b-test.st")));
    const char *html = in_tmp("report.html");
    free(clad_ok(&g, 0, "report --out '%s'", html));
    char *bad = clad_ok(&g, 1, "report --out '%s'", in_tmp("no-such-dir/report.html"));
    CHECK_MSG(strstr(bad, "No such file or directory"), "an unwritable --out without its reason:\n%s", bad);
    free(bad);
    char *page = NULL;
    double t0 = now_s();
    CHECK_INT_EQ(curl_req(&g.d, "GET", "/v1/bases/mlp/report", NULL, &page, NULL), 200);
    printf("# report: %zu bytes in %.1f ms (curl included)\n", strlen(page), (now_s() - t0) * 1e3);
    static const char *const ids[] = {"plot-matrix", "plot-ranks", "plot-overlap", "plot-distance", "plot-params", "plot-aliases"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "<svg id=\"%s\"", ids[i]);
        CHECK_MSG(strstr(page, needle), "no %s in the report", ids[i]);
    }
    /* Self-contained: nothing is fetched from anywhere. */
    CHECK_MSG(!strstr(page, "src=") && !strstr(page, "href=") && !strstr(page, "@import") && !strstr(page, "url("),
              "the report refers to an external resource");
    CHECK_MSG(strstr(page, "a@2") && strstr(page, "rollback"), "versions or alias moves missing");
    free(page);

    if (system("command -v chromium >/dev/null 2>&1") != 0) {
        printf("# skipped: chromium is not installed (scripts/deps.sh installs it)\n");
        CHECK_INT_EQ(daemon_stop(&g.d, SIGTERM, 10), 0);
        return;
    }
    char cmd[2048], *dom = NULL;
    const char *flags = "--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run "
                        "--disable-background-networking --user-data-dir=\"$TMPDIR_CHROME\"";
    snprintf(cmd, sizeof cmd, "cd '%s' && TMPDIR_CHROME='%s/chrome' HOME='%s' timeout 60 chromium %s --enable-logging=stderr "
             "--v=0 --dump-dom 'file://%s' > dom.html 2> console.log", test_tmpdir(), test_tmpdir(), test_tmpdir(),
             flags, html);
    CHECK_INT_EQ(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "cat '%s/dom.html'", test_tmpdir());
    FILE *p = popen(cmd, "r");
    size_t cap = 1 << 20, n = 0;
    dom = malloc(cap);
    n = fread(dom, 1, cap - 1, p);
    dom[n] = '\0';
    pclose(p);
    CHECK_MSG(strstr(dom, "data-plots=\"ok\""), "the page did not mark its plots ok:\n%.400s", dom);
    CHECK_MSG(strstr(dom, "<rect") && strstr(dom, "<circle"), "no drawn shapes in the DOM");
    free(dom);
    snprintf(cmd, sizeof cmd, "grep -E 'CONSOLE.*(Uncaught|Error|error)|Refused to' '%s/console.log'", test_tmpdir());
    CHECK_MSG(system(cmd) != 0, "console errors while loading the report");
    const char *png = in_tmp("shot.png");
    snprintf(cmd, sizeof cmd, "cd '%s' && TMPDIR_CHROME='%s/chrome' HOME='%s' timeout 60 chromium %s "
             "--window-size=1200,2400 --hide-scrollbars --screenshot='%s' 'file://%s' >/dev/null 2>&1",
             test_tmpdir(), test_tmpdir(), test_tmpdir(), flags, png, html);
    CHECK_INT_EQ(system(cmd), 0);
    struct stat st;
    CHECK_INT_EQ(stat(png, &st), 0);
    long ink = png_ink(png);
    printf("# screenshot %lld bytes, %ld non-white pixels\n", (long long)st.st_size, ink);
    if (getenv("CLAD_KEEP_REPORT")) { /* to look at the page and the screenshot after the run */
        snprintf(cmd, sizeof cmd, "cp '%s' '%s' \"$CLAD_KEEP_REPORT\"/", html, png);
        CHECK_INT_EQ(system(cmd), 0);
    }
    CHECK_MSG(ink > 20000, "the screenshot looks blank (%ld non-white pixels)", ink);
    CHECK_INT_EQ(daemon_stop(&g.d, SIGTERM, 10), 0);
}

/* ---- ps, aliases, health, metrics ---------------------------------------------------------------- */

TEST_TIMEOUT(daemon_report_ps_aliases_health_metrics, 120)
{
    rig g;
    rig_start(&g);
    char *out = clad_ok(&g, 0, "health");
    CHECK_MSG(strstr(out, "ok (cladd"), "%s", out);
    free(out);
    train_ok(&g, "a", "a.st", "--epochs 2 --lr 0.01");
    free(clad_ok(&g, 0, "predict a '%s'", in_tmp("a-test.st")));
    free(clad_ok(&g, 0, "predict a '%s'", in_tmp("a-test.st")));
    free(clad_ok(&g, 0, "alias a champion 1 --reason best"));
    out = clad_ok(&g, 0, "ps");
    CHECK_MSG(strstr(out, "base") && strstr(out, "mlp") && strstr(out, "a@1") && strstr(out, "ago"), "%s", out);
    free(out);
    json_t *l = get_json_ok(&g, "/v1/loaded");
    json_t *ad = json_array_get(json_object_get(l, "adapters"), 0);
    CHECK_INT_EQ(json_integer_value(json_object_get(ad, "hits")), 1);
    CHECK(json_integer_value(json_object_get(ad, "bytes")) > 0);
    /* Idle: no request holds the base, though its cached adapter refers to it. */
    json_t *base = json_array_get(json_object_get(l, "bases"), 0);
    CHECK_INT_EQ(json_integer_value(json_object_get(base, "in_use")), 0);
    json_decref(l);
    out = clad_ok(&g, 0, "aliases");
    CHECK_MSG(strstr(out, "champion") && strstr(out, "active"), "%s", out);
    free(out);
    out = clad_ok(&g, 0, "aliases a");
    CHECK_MSG(strstr(out, "champion         -> 1") && strstr(out, "best"), "%s", out);
    free(out);
    char *metrics = NULL;
    CHECK_INT_EQ(curl_req(&g.d, "GET", "/v1/metrics", NULL, &metrics, NULL), 200);
    CHECK_MSG(strstr(metrics, "clad_task_predict_requests_total{task=\"a\",version=\"1\"} 2\n") &&
                  strstr(metrics, "clad_task_adapter_cache_hits_total{task=\"a\",version=\"1\"} 1\n") &&
                  strstr(metrics, "clad_task_adapter_cache_misses_total{task=\"a\",version=\"1\"} 1\n") &&
                  strstr(metrics, "clad_task_samples_total{task=\"a\",version=\"1\"} 400\n") &&
                  strstr(metrics, "clad_task_active_holdout_accuracy{task=\"a\",version=\"1\"} ") &&
                  strstr(metrics, "clad_task_active_training_seconds{task=\"a\",version=\"1\"} "),
              "per task series missing:\n%s", metrics);
    free(metrics);
    CHECK_INT_EQ(daemon_stop(&g.d, SIGTERM, 10), 0);
}

/* ---- lifecycle ---------------------------------------------------------------------------------------- */

static long long alias_of(rig *g, const char *task, const char *alias)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", task);
    json_t *t = get_json_ok(g, path);
    json_t *v = json_object_get(json_object_get(t, "aliases"), alias);
    long long r = v ? (long long)json_integer_value(v) : 0;
    json_decref(t);
    return r;
}

static json_t *promotion_of(rig *g, const char *task, int version)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s/versions/%d", task, version);
    json_t *v = get_json_ok(g, path);
    json_t *p = json_incref(json_object_get(json_object_get(v, "lineage"), "promotion"));
    json_decref(v);
    CHECK_MSG(json_is_object(p), "version %s@%d has no lineage.promotion", task, version);
    return p;
}

TEST_TIMEOUT(daemon_lifecycle_promote_policies, 120)
{
    rig g;
    rig_start(&g);
    train_ok(&g, "a", "a.st", "--epochs 3 --lr 0.01 --promote if-better"); /* no active yet: promoted */
    CHECK_INT_EQ(alias_of(&g, "a", "active"), 1);
    /* A version that learned nothing stays a candidate, with the comparison in its lineage. */
    /* fixed:4 starts from PEFT's init (auto would start from the probe's pull, already a trained change). */
    train_ok(&g, "a", "a.st", "--epochs 1 --lr 0.0000001 --seed 9 --rank fixed:4 --promote if-better");
    CHECK_INT_EQ(alias_of(&g, "a", "active"), 1);
    CHECK_INT_EQ(alias_of(&g, "a", "candidate"), 2);
    json_t *p = promotion_of(&g, "a", 2);
    CHECK(json_is_false(json_object_get(p, "promoted")));
    CHECK(json_is_true(json_object_get(p, "same_data")));
    CHECK_INT_EQ(json_integer_value(json_object_get(p, "active_version")), 1);
    CHECK(json_number_value(json_object_get(p, "new_accuracy")) < json_number_value(json_object_get(p, "active_accuracy")));
    CHECK_MSG(strstr(json_string_value(json_object_get(p, "reason")), "below active version 1"), "%s",
              json_string_value(json_object_get(p, "reason")));
    json_decref(p);
    char *out = clad_ok(&g, 0, "aliases a");
    CHECK_MSG(strstr(out, "candidate        -> 2") && strstr(out, "is below"), "%s", out);
    free(out);
    /* An operator promotes it anyway; it stops being the candidate. */
    out = clad_ok(&g, 0, "promote a@candidate --reason 'operator says so'");
    CHECK_MSG(strstr(out, "active 1 -> 2") && strstr(out, "no longer the candidate"), "%s", out);
    free(out);
    CHECK_INT_EQ(alias_of(&g, "a", "active"), 2);
    CHECK_INT_EQ(alias_of(&g, "a", "candidate"), 0);
    /* Better than the (poor) active version: promoted. */
    train_ok(&g, "a", "a.st", "--epochs 3 --lr 0.01 --seed 3 --promote if-better");
    CHECK_INT_EQ(alias_of(&g, "a", "active"), 3);
    p = promotion_of(&g, "a", 3);
    CHECK(json_is_true(json_object_get(p, "promoted")));
    json_decref(p);
    /* never: stored as the candidate whatever it scores. */
    train_ok(&g, "a", "a.st", "--epochs 3 --lr 0.01 --seed 4 --promote never");
    CHECK_INT_EQ(alias_of(&g, "a", "active"), 3);
    CHECK_INT_EQ(alias_of(&g, "a", "candidate"), 4);
    free(clad_ok(&g, 4, "promote a@99"));
    free(clad_ok(&g, 4, "promote a@nope"));
    free(clad_ok(&g, 2, "promote a"));
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&g.d, "POST", "/v1/tasks/a/train?promote=maybe",
                          "-H 'Content-Type: application/octet-stream' --data-binary @/dev/null", &body, NULL), 400);
    CHECK_MSG(strstr(body, "always, if-better or never"), "%s", body);
    free(body);
    CHECK_INT_EQ(daemon_stop(&g.d, SIGTERM, 10), 0);
}

/* The daemon's store, opened for reading beside it. */
static store *rig_store(rig *g)
{
    char db[600];
    snprintf(db, sizeof db, "%s/clad.db", g->d.state);
    store *s = store_open_reader(db, NULL);
    CHECK(s != NULL);
    return s;
}

/* Audit rows with this action and object, read through the store API. */
static int audited(rig *g, const char *action, const char *object)
{
    store *s = rig_store(g);
    store_audit *a = NULL;
    size_t n = 0;
    CHECK_INT_EQ(store_audit_list(s, 0, 0, &a, &n, NULL), 0);
    int found = 0;
    for (size_t i = 0; i < n; i++) found += !strcmp(a[i].action, action) && !strcmp(a[i].object, object);
    store_audit_free(a, n);
    store_close(s);
    return found;
}

/* Jobs the store records for task, all on lane, read through the store API (-1 if one is on another). */
static int jobs_of(rig *g, const char *task, const char *lane)
{
    store *s = rig_store(g);
    store_job *j = NULL;
    size_t n = 0;
    CHECK_INT_EQ(store_jobs_list(s, task, 0, &j, &n, NULL), 0);
    int found = (int)n;
    for (size_t i = 0; i < n; i++)
        if (strcmp(j[i].lane, lane)) found = -1;
    store_jobs_free(j, n);
    store_close(s);
    return found;
}

TEST_TIMEOUT(daemon_lifecycle_delete_refuses_dependents, 120)
{
    rig g;
    rig_start_ab(&g);
    train_ok(&g, "c", "b.st", "--epochs 1 --lr 0.01 --fuse-with a");
    char *out = clad_ok(&g, 6, "delete task a");
    CHECK_MSG(strstr(out, "conflict") && strstr(out, "c@1"), "%s", out);
    free(out);
    out = clad_ok(&g, 6, "delete base mlp");
    CHECK_MSG(strstr(out, "3 task(s): a, b, c"), "%s", out);
    free(out);
    out = clad_ok(&g, 6, "delete alias a active");
    free(out);
    /* A version an alias points at: the message says the alias may be moved or deleted. */
    free(clad_ok(&g, 0, "alias a@1 keep"));
    out = clad_ok(&g, 6, "delete version a@keep");
    CHECK_MSG(strstr(out, "target of alias(es) active, keep; move them (or delete any but active) first"), "%s", out);
    free(out);
    free(clad_ok(&g, 0, "delete alias a keep"));
    /* Not while a training of it runs. */
    out = clad_ok(&g, 0, "train a '%s' --epochs 1000 --batch 16 --detach", in_tmp("a.st"));
    long long job = atoll(out);
    free(out);
    out = clad_ok(&g, 6, "delete task a");
    char want[96];
    snprintf(want, sizeof want, "task 'a' has unfinished work: job %lld (", job);
    CHECK_MSG(strstr(out, want), "%s", out);
    free(out);
    free(clad_ok(&g, 0, "cancel %lld", job));
    free(clad_ok(&g, 8, "job %lld --follow", job));
    /* Nor while a merge into it waits (its request names only the sources): the store records each job
     * with the task it makes, apart from its lane. */
    static const char merge[] = "-H 'Content-Type: application/json' -d '{\"tasks\":[\"a\",\"b\"],\"rank\":4}'";
    char *body = NULL;
    int code = curl_req(&g.d, "POST", "/v1/merges/m?follow=1", merge, &body, NULL);
    CHECK_MSG(code == 202 && strstr(body, "\"state\":\"succeeded\""), "merge answered %d: %s", code, body);
    free(body);
    out = clad_ok(&g, 0, "train b '%s' --epochs 1000 --batch 16 --detach", in_tmp("b.st")); /* holds the lane */
    long long holder = atoll(out);
    free(out);
    CHECK_INT_EQ(curl_req(&g.d, "POST", "/v1/merges/m", merge, &body, NULL), 202);
    json_t *mj = json_or_fail(body);
    long long merging = json_integer_value(json_object_get(mj, "id"));
    CHECK_STR_EQ(state_of(mj), "queued");
    json_decref(mj);
    free(body);
    out = clad_ok(&g, 6, "delete task m");
    snprintf(want, sizeof want, "task 'm' has unfinished work: job %lld (queued)", merging);
    CHECK_MSG(strstr(out, want), "%s", out);
    free(out);
    CHECK_INT_EQ(jobs_of(&g, "m", "mlp"), 2);
    CHECK_INT_EQ(jobs_of(&g, "a", "mlp"), 2); /* its first training and the cancelled one */
    free(clad_ok(&g, 0, "cancel %lld", merging));
    free(clad_ok(&g, 0, "cancel %lld", holder));
    free(clad_ok(&g, 8, "job %lld --follow", holder));
    free(clad_ok(&g, 0, "delete task m"));
    free(clad_ok(&g, 0, "alias a champion 1"));
    free(clad_ok(&g, 0, "delete alias a champion --reason retired"));
    CHECK_INT_EQ(alias_of(&g, "a", "champion"), 0);
    free(clad_ok(&g, 4, "delete alias a champion"));
    free(clad_ok(&g, 2, "delete nothing x"));

    /* a is served (and so cached) before it goes; a new task of the same name must not get the old one. */
    char *before = clad_ok(&g, 0, "predict a '%s'", in_tmp("a-test.st"));
    free(clad_ok(&g, 0, "delete task c"));
    out = clad_ok(&g, 0, "delete task a");
    CHECK_MSG(strstr(out, "deleted task a"), "%s", out);
    free(out);
    CHECK_INT_EQ(curl_req(&g.d, "GET", "/v1/tasks/a", NULL, &body, NULL), 404);
    free(body);
    train_ok(&g, "a", "b.st", "--epochs 2 --lr 0.01"); /* other data: other predictions */
    CHECK_INT_EQ(alias_of(&g, "a", "active"), 1);
    char *after = clad_ok(&g, 0, "predict a '%s'", in_tmp("a-test.st"));
    CHECK_MSG(strcmp(before, after), "the re-created task answered with the deleted task's adapter");
    free(before);
    free(after);
    CHECK_INT_EQ(audited(&g, "task.delete", "task:a"), 1);
    CHECK_INT_EQ(audited(&g, "task.delete", "task:c"), 1);
    CHECK_INT_EQ(audited(&g, "alias.delete", "alias:a/champion"), 1);

    free(clad_ok(&g, 0, "delete task a"));
    free(clad_ok(&g, 0, "delete task b"));
    free(clad_ok(&g, 0, "delete base mlp"));
    CHECK_INT_EQ(audited(&g, "base.delete", "base:mlp"), 1);
    CHECK_INT_EQ(curl_req(&g.d, "GET", "/v1/bases/mlp", NULL, &body, NULL), 404);
    free(body);
    /* Nothing of the deleted tasks and base stays in memory, and the cache's byte counts say so. */
    json_t *st = get_json_ok(&g, "/v1/status"), *loaded = json_object_get(st, "loaded");
    CHECK_INT_EQ(json_integer_value(json_object_get(loaded, "adapters")), 0);
    CHECK_INT_EQ(json_integer_value(json_object_get(loaded, "adapter_bytes")), 0);
    CHECK_INT_EQ(json_integer_value(json_object_get(loaded, "bases")), 0);
    CHECK_INT_EQ(json_integer_value(json_object_get(loaded, "base_bytes")), 0);
    json_decref(st);
    free(clad_ok(&g, 4, "delete base mlp"));
    CHECK_INT_EQ(daemon_stop(&g.d, SIGTERM, 10), 0);
}

/* ---- the CLI's job handling ----------------------------------------------------------------------- */

TEST_TIMEOUT(daemon_cli_detach_progress_and_interrupt, 150)
{
    rig g;
    rig_start(&g);
    /* --detach prints only the job id. */
    char *out = NULL;
    char args[700];
    snprintf(args, sizeof args, "train a '%s' --epochs 2 --detach", in_tmp("a.st"));
    CHECK_INT_EQ(clad_run(&g.d, args, &out), 0);
    long long id = atoll(out);
    CHECK_MSG(id > 0 && strspn(out, "0123456789\n") == strlen(out), "--detach printed: %s", out);
    free(out);
    snprintf(args, sizeof args, "job %lld --follow", id);
    CHECK_INT_EQ(clad_run(&g.d, args, NULL), 0);

    /* Step events carry done and total. */
    char path[128], extra[600], *body = NULL;
    snprintf(path, sizeof path, "/v1/tasks/a/train?follow=1&epochs=1");
    snprintf(extra, sizeof extra, "-H 'Content-Type: application/octet-stream' --data-binary '@%s'", in_tmp("a.st"));
    CHECK_INT_EQ(curl_req(&g.d, "POST", path, extra, &body, NULL), 202);
    CHECK_MSG(strstr(body, "\"event\":\"step\"") && strstr(body, "\"done\":") && strstr(body, "\"total\":"), "%s", body);
    free(body);

    /* On a terminal (script(1) gives clad one), the bar is drawn on stderr. */
    if (system("command -v script >/dev/null 2>&1") == 0) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "script -qec \"%s/clad --socket '%s' train a '%s' --epochs 2 >/dev/null\" /dev/null",
                 test_build_dir(), g.d.sock, in_tmp("a.st"));
        FILE *p = popen(cmd, "r");
        char buf[65536];
        size_t n = fread(buf, 1, sizeof buf - 1, p);
        buf[n] = '\0';
        CHECK_INT_EQ(pclose(p), 0);
        CHECK_MSG(strstr(buf, "[########################] 100%"), "no progress bar on the terminal:\n%s", buf);
    } else {
        printf("# skipped the terminal check: script(1) is missing\n");
    }

    /* Ctrl-C while following: clad leaves, the job goes on, and clad says how to cancel it. */
    const char *log = in_tmp("clad.log");
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        FILE *o = freopen(log, "w", stdout);
        (void)o;
        dup2(fileno(stdout), 2);
        FILE *i = freopen("/dev/null", "r", stdin);
        (void)i;
        char bin[512];
        snprintf(bin, sizeof bin, "%s/clad", test_build_dir());
        execl(bin, "clad", "--socket", g.d.sock, "train", "a", in_tmp("a.st"), "--epochs", "1000", "--batch", "16",
              (char *)NULL);
        _exit(127);
    }
    long long job = 0;
    for (int i = 0; i < 200 && !job; i++) {
        sleep_ms(50);
        json_t *jobs = get_json_ok(&g, "/v1/jobs?state=running");
        json_t *j = json_array_get(json_object_get(jobs, "jobs"), 0);
        if (j && json_is_object(json_object_get(j, "progress")) &&
            json_object_get(json_object_get(j, "progress"), "done"))
            job = (long long)json_integer_value(json_object_get(j, "id"));
        json_decref(jobs);
    }
    CHECK_MSG(job > 0, "the long training never started");
    kill(pid, SIGINT);
    int status = 0;
    CHECK_INT_EQ(waitpid(pid, &status, 0), pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 130, "clad ended with status %d", status);
    /* The message is at the end of the log, after every step line (more than the buffer when training
     * runs fast): read its tail. */
    snprintf(args, sizeof args, "tail -c 8000 '%s'", log);
    FILE *p = popen(args, "r");
    char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, p);
    text[n] = '\0';
    pclose(p);
    char want[160];
    snprintf(want, sizeof want, "job %lld continues in the daemon", job);
    CHECK_MSG(strstr(text, want) && strstr(text, "clad cancel"), "clad said:\n%s", text);
    snprintf(path, sizeof path, "/v1/jobs/%lld", job);
    json_t *j = get_json_ok(&g, path);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "state")), "running");
    json_decref(j);
    snprintf(args, sizeof args, "cancel %lld", job);
    CHECK_INT_EQ(clad_run(&g.d, args, NULL), 0);

    /* On a terminal, Ctrl-C asks; answering y cancels the job. python3's pty module plays the terminal:
     * it types Ctrl-C once a step of ten or more is shown (which step the bar shows first depends on
     * timing), then y at the question. */
    char cmd[3000];
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import os,pty,re,select,sys,time\n"
             "pid,fd=pty.fork()\n"
             "if pid==0:os.execv(sys.argv[1],sys.argv[1:])\n"
             "out=b'';sent=0;t0=time.time()\n"
             "while time.time()-t0<60:\n"
             " if select.select([fd],[],[],0.1)[0]:\n"
             "  try:d=os.read(fd,65536)\n"
             "  except OSError:break\n"
             "  if not d:break\n"
             "  out+=d\n"
             " if sent==0 and re.search(rb'step [0-9]{2,}/',out):os.write(fd,b'\\x03');sent=1\n"
             " if sent==1 and b'[y/N]' in out:os.write(fd,b'y\\n');sent=2\n"
             "os.waitpid(pid,0)\n"
             "sys.stdout.write(out.decode(errors='replace')[-600:])\" '%s/clad' --socket '%s' train a '%s' --epochs 1000 "
             "--batch 16", test_build_dir(), g.d.sock, in_tmp("a.st"));
    p = popen(cmd, "r");
    n = fread(text, 1, sizeof text - 1, p);
    text[n] = '\0';
    pclose(p);
    CHECK_MSG(strstr(text, "Cancel it? [y/N]") && strstr(text, "cancel requested"), "on a terminal:\n%s", text);
    json_t *running = get_json_ok(&g, "/v1/jobs?state=running");
    CHECK_INT_EQ(json_array_size(json_object_get(running, "jobs")), 0);
    json_decref(running);
    CHECK_INT_EQ(daemon_stop(&g.d, SIGTERM, 20), 0);
}
