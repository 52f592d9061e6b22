/* clad commands for bases, tasks, versions, serving and rollback; see daemon/cli.h. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/cli.h"

static const char *content_type_for(const char *file, const char *body, size_t len)
{
    size_t n = strlen(file);
    if (n > 4 && !strcmp(file + n - 4, ".csv")) return "text/csv";
    if (n > 5 && !strcmp(file + n - 5, ".json")) return "application/json";
    if (len && body[0] == '{') return "application/json";
    return "application/octet-stream";
}

static bool need_args(const options *o, int n, const char *usage_line)
{
    if (o->n_args == n) return true;
    fail_msg("usage: clad %s", usage_line);
    return false;
}

/* Checks every name of a comma-separated list (--tasks, --fuse-with). */
static bool names_ok(const char *option, const char *list)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", list) >= (int)sizeof buf) {
        fail_msg("--%s: the list is too long", option);
        return false;
    }
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (!cli_name_ok("task", t)) return false;
    if (!buf[0] || list[strlen(list) - 1] == ',' || strstr(list, ",,") || list[0] == ',') {
        fail_msg("--%s takes task names separated by commas, such as a,b,c", option);
        return false;
    }
    return true;
}

static double dnum(json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

/* ---- bases ---- */

static int cmd_bases(const options *o)
{
    json_t *r = NULL;
    int rc = get_json(o, "/v1/bases", &r);
    if (rc || !r) return rc;
    json_t *arr = json_object_get(r, "bases"), *b;
    size_t i;
    if (!json_array_size(arr)) printf("no bases\n");
    else printf("%-20s %-8s %-14s %s\n", "NAME", "MODEL", "SHA256", "CONFIG");
    json_array_foreach(arr, i, b) {
        char *cfg = json_dumps(json_object_get(b, "config"), JSON_COMPACT | JSON_SORT_KEYS);
        printf("%-20s %-8s %.12s.. %s\n", str(b, "name"), str(json_object_get(b, "config"), "model"), str(b, "sha256"),
               cfg ? cfg : "");
        free(cfg);
    }
    json_decref(r);
    return 0;
}

/* Puts option `key` into body as a number; a value that is not one all through is a usage error (atof
 * would read "abc" as 0 and "8x" as 8). */
static bool number_option(const options *o, const char *key, bool integer, json_t *body)
{
    const char *v = cli_opt(o, key);
    if (!v) return true;
    char *end = NULL;
    errno = 0;
    long long n = integer ? strtoll(v, &end, 10) : 0;
    double x = integer ? 0 : strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x)) {
        fail_msg("--%s must be a %s, not '%s'", key, integer ? "whole number" : "number", v);
        return false;
    }
    json_object_set_new(body, key, integer ? json_integer((json_int_t)n) : json_real(x));
    return true;
}

static int cmd_base(const options *o)
{
    if (o->n_args < 2 || (strcmp(o->args[0], "import") && strcmp(o->args[0], "train"))) {
        fail_msg("usage: clad base import NAME FILE | clad base train NAME [--model M] [--data D] ...");
        return EXIT_USAGE;
    }
    if (!cli_name_ok("base", o->args[1])) return EXIT_USAGE;
    cli_url u;
    url_init(&u, "/v1/bases");
    url_seg(&u, o->args[1]);
    if (!strcmp(o->args[0], "import")) {
        if (!need_args(o, 3, "base import NAME FILE [--config JSON]")) return EXIT_USAGE;
        url_query(&u, "config", cli_opt(o, "config"));
        const char *path = url_path(&u);
        if (!path) return EXIT_USAGE;
        char *body = NULL;
        size_t len = 0;
        int rc = read_body(o->args[2], &body, &len);
        if (rc) return rc;
        json_t *r = NULL;
        rc = send_json(o, "POST", path, "application/octet-stream", body, len, &r);
        free(body);
        if (!rc && r) printf("base %s imported (sha256 %s)\n", str(r, "name"), str(r, "sha256"));
        json_decref(r);
        return rc;
    }
    if (!need_args(o, 2, "base train NAME [--model M] [--data D] [--epochs N] [--samples N] [--seed N]")) return EXIT_USAGE;
    const char *model = cli_opt(o, "model");
    json_t *spec = json_object();
    json_error_t je;
    json_t *mj = model && model[0] == '{' ? json_loads(model, 0, &je) : json_string(model ? model : "vit-tiny");
    if (!mj) {
        fail_msg("--model: %s", je.text);
        json_decref(spec);
        return EXIT_USAGE;
    }
    json_object_set_new(spec, "model", mj);
    /* The daemon resolves nothing against our working directory: send an absolute path. */
    const char *data = cli_opt(o, "data") ? cli_opt(o, "data") : "fmnist";
    char data_abs[PATH_MAX];
    if (strcmp(data, "fmnist") && data[0] != '/') {
        if (!realpath(data, data_abs)) {
            fail_msg("--data %s: %s", data, strerror(errno));
            json_decref(spec);
            return EXIT_USAGE;
        }
        data = data_abs;
    }
    json_object_set_new(spec, "data", json_string(data));
    const char *ints[] = {"epochs", "samples", "seed", "batch"};
    bool ok = number_option(o, "lr", false, spec);
    for (int k = 0; ok && k < 4; k++) ok = number_option(o, ints[k], true, spec);
    if (!ok) {
        json_decref(spec);
        return EXIT_USAGE;
    }
    char *body = json_dumps(spec, JSON_COMPACT);
    json_decref(spec);
    url_query(&u, "follow", "1");
    int rc = follow_job(o, "POST", url_path(&u), "application/json", body, strlen(body));
    free(body);
    return rc;
}

/* Submits a job without following it: prints its id (stdout) and how to follow it (stderr). */
static int submit_detached(const options *o, const char *path, const char *ctype, const char *body, size_t len)
{
    json_t *j = NULL;
    int rc = send_json(o, "POST", path, ctype, body, len, &j);
    if (rc || !j) return rc;
    printf("%lld\n", num(j, "id"));
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "clad: job %lld %s; follow it with 'clad job %lld --follow'\n", num(j, "id"), str(j, "state"),
                num(j, "id"));
    json_decref(j);
    return 0;
}

/* ---- showing a version ---- */

/* A number as the API wrote it (at most 15 digits: 0.001 stays 0.001), or "-" when absent: `clad show`
 * never invents a value. */
static const char *numtext(json_t *o, const char *key, char *buf, size_t size)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v)) snprintf(buf, size, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) snprintf(buf, size, "%.15g", json_real_value(v));
    else snprintf(buf, size, "-");
    return buf;
}

/* A fixed-point number, or "-" when absent. */
static const char *fixed(json_t *o, const char *key, int digits, char *buf, size_t size)
{
    json_t *v = json_object_get(o, key);
    if (json_is_number(v)) snprintf(buf, size, "%.*f", digits, json_number_value(v));
    else snprintf(buf, size, "-");
    return buf;
}

/* "key value, key value" for the keys of an object (numbers as given, strings as they are). */
static void print_pairs(const char *label, json_t *o)
{
    const char *key;
    json_t *x;
    int n = 0;
    if (!json_object_size(o)) return;
    printf("%-9s", label);
    json_object_foreach(o, key, x) {
        char b[64];
        if (json_is_null(x) || json_is_object(x) || json_is_array(x)) continue;
        printf("%s%s %s", n++ ? ", " : "", key, json_is_string(x) ? json_string_value(x) : numtext(o, key, b, sizeof b));
    }
    printf("\n");
}

/* Per-layer ranks: one object {"layer": rank} or two (before and after). */
static void print_ranks(const char *label, json_t *ranks, json_t *after)
{
    const char *key;
    json_t *x;
    if (!json_object_size(ranks)) return;
    printf("%-9s", label);
    int n = 0;
    json_object_foreach(ranks, key, x) {
        printf("%s%s %lld", n++ ? ", " : "", key, (long long)json_integer_value(x));
        json_t *y = json_object_get(after, key);
        if (json_is_integer(y)) printf(" -> %lld", (long long)json_integer_value(y));
    }
    printf("\n");
}

static void print_version(json_t *v)
{
    char a[64], b[64], c[64], d[32], e[32];
    json_t *lineage = json_object_get(v, "lineage");
    json_t *plan = json_object_get(lineage, "plan"), *m = json_object_get(v, "metrics");
    printf("%s@%lld  kind %s  sha256 %.16s..  %lld bytes  created %s\n", str(v, "task"), num(v, "version"),
           str(v, "kind"), str(v, "sha256"), num(v, "bytes"), str(v, "created"));
    json_t *parents = json_object_get(v, "parents"), *p;
    size_t i;
    if (json_array_size(parents)) {
        printf("%-9s", "parents");
        json_array_foreach(parents, i, p) printf("%s%s@%lld", i ? ", " : "", str(p, "task"), num(p, "version"));
        printf("\n");
    }
    print_pairs("metrics", m);
    print_pairs("hparams", json_object_get(v, "hparams"));
    json_t *imported = json_object_get(lineage, "imported");
    if (json_is_object(imported)) {
        printf("%-9s%s (config sha256 %.16s.., model sha256 %.16s..)\n", "imported", str(imported, "format"),
               str(imported, "config_sha256"), str(imported, "model_sha256"));
        print_ranks("ranks", json_object_get(json_object_get(v, "hparams"), "ranks"), NULL);
    }
    json_t *promotion = json_object_get(lineage, "promotion");
    if (json_is_object(promotion))
        printf("%-9s%s when trained: %s\n", "promote",
               json_is_true(json_object_get(promotion, "promoted")) ? "made active" : "not made active",
               str(promotion, "reason"));
    json_t *merge = json_object_get(lineage, "merge");
    if (json_is_object(merge)) {
        printf("%-9smethod %s, drop %s, lambda %s, stored rank %s\n", "merge", str(merge, "method"),
               numtext(merge, "drop", a, sizeof a), numtext(merge, "lambda", b, sizeof b),
               numtext(merge, "rank", c, sizeof c));
        json_t *src = json_object_get(merge, "sources");
        if (json_array_size(src)) {
            printf("%-9s", "sources");
            json_array_foreach(src, i, p) printf("%s%s@%lld", i ? ", " : "", str(p, "task"), num(p, "version"));
            printf("\n");
        }
        print_ranks("ranks", json_object_get(merge, "ranks"), NULL);
    }
    json_t *fusion = json_object_get(json_object_get(lineage, "fusion"), "sources");
    if (json_array_size(fusion)) {
        printf("%-9s", "fusion");
        json_array_foreach(fusion, i, p)
            printf("%s%s@%lld weight %s", i ? ", " : "", str(p, "task"), num(p, "version"), fixed(p, "weight", 3, a, sizeof a));
        printf("\n");
    }
    json_t *prune = json_object_get(lineage, "prune");
    if (json_is_object(prune)) {
        printf("%-9skeeping %s of each layer's energy: %s -> %s parameters\n", "pruned", numtext(prune, "tau", a, sizeof a),
               numtext(prune, "params_before", b, sizeof b), numtext(prune, "params_after", c, sizeof c));
        print_ranks("ranks", json_object_get(prune, "ranks_before"), json_object_get(prune, "ranks_after"));
    }
    if (!json_is_object(plan)) return;
    if (json_is_false(json_object_get(plan, "planned")))
        printf("%-9spolicy %s, no probe (ask with --explain)\n", "plan", str(plan, "policy"));
    else
        printf("%-9spolicy %s, distance %s, novelty %s, held-out gain %s nats\n", "plan", str(plan, "policy"),
               fixed(plan, "distance", 4, a, sizeof a), fixed(plan, "novelty", 3, b, sizeof b), fixed(plan, "gain", 4, c, sizeof c));
    json_t *reuse = json_object_get(plan, "reuse");
    if (json_is_object(reuse))
        printf("reuses   %s@%lld (%s)\n", str(reuse, "task"), num(reuse, "version"),
               json_is_object(json_object_get(lineage, "stored_by_reference"))
                   ? "its change is referenced, frozen: this version stores only its new components"
                   : "its change is copied, frozen");
    json_t *ov = json_object_get(plan, "overlap"), *x;
    const char *key;
    if (json_object_size(ov)) {
        printf("overlap ");
        json_object_foreach(ov, key, x) printf(" %s %s", key, fixed(ov, key, 3, a, sizeof a));
        printf("\n");
    }
    json_t *layers = json_object_get(plan, "layers");
    if (!json_object_size(layers)) return;
    /* START: the rank training began with, when training decided the ranks (docs/RANKS.md 6b). */
    char f[32];
    printf("%-18s %9s %8s %8s %5s %5s %6s  %s\n", "LAYER", "DISTANCE", "NOVELTY", "GAIN", "START", "RANK", "REUSED", "WHY");
    json_object_foreach(layers, key, x)
        printf("%-18s %9s %8s %8s %5s %5s %6s  %s\n", key, fixed(x, "distance", 4, a, sizeof a),
               fixed(x, "novelty", 3, b, sizeof b), fixed(x, "gain", 4, c, sizeof c), numtext(x, "rank_start", f, sizeof f),
               numtext(x, "rank", d, sizeof d), numtext(x, "reused", e, sizeof e), str(x, "why"));
}

/* GET of a task's version: @VERSION directly, @ALIAS (or `active`) through the task's alias map. */
static int get_version(const options *o, const task_ref *r, json_t **out)
{
    cli_url u;
    url_init(&u, "/v1/tasks");
    url_seg(&u, r->task);
    *out = NULL;
    if (r->version[0]) {
        url_seg(&u, "versions");
        url_seg(&u, r->version);
        return get_json(o, url_path(&u), out);
    }
    json_t *t = NULL;
    options quiet = *o;
    quiet.json = false; /* the task is only a step on the way; --json prints the version */
    int rc = get_json(&quiet, url_path(&u), &t);
    if (rc || !t) return rc;
    const char *alias = r->alias[0] ? r->alias : "active";
    json_t *v = json_object_get(json_object_get(t, "aliases"), alias);
    if (!json_is_integer(v)) {
        if (r->alias[0])
            fail_msg("not_found: task '%s' has no alias '%s'%s", r->task, alias,
                     !strcmp(alias, "candidate") ? " (no version waits: train with --promote if-better or never)" : "");
        else printf("task %s has no version yet\n", r->task);
        json_decref(t);
        return r->alias[0] ? EXIT_NOT_FOUND : EXIT_OK;
    }
    task_ref by_number = *r;
    snprintf(by_number.version, sizeof by_number.version, "%lld", (long long)json_integer_value(v));
    json_decref(t);
    return get_version(o, &by_number, out);
}

int task_ref_version(const options *o, const task_ref *r, long long *out)
{
    if (r->version[0]) {
        *out = atoll(r->version);
        return 0;
    }
    options quiet = *o;
    quiet.json = false;
    json_t *v = NULL;
    int rc = get_version(&quiet, r, &v);
    if (rc || !v) return rc ? rc : EXIT_NOT_FOUND;
    *out = num(v, "version");
    json_decref(v);
    return 0;
}

/* A command that works on a task as a whole: TASK@... is a usage error that says so. */
static bool task_only(const char *arg, const char *command, task_ref *r)
{
    if (!task_ref_parse(arg, r)) return false;
    if (!task_ref_has_ref(r)) return true;
    fail_msg("clad %s works on the task as a whole: give %s without '@%s'", command, r->task,
             r->version[0] ? r->version : r->alias);
    return false;
}

static int cmd_show(const options *o)
{
    if (!need_args(o, 1, "show TASK[@VERSION|@ALIAS]")) return EXIT_USAGE;
    task_ref r;
    if (!task_ref_parse(o->args[0], &r)) return EXIT_USAGE;
    json_t *v = NULL;
    int rc = get_version(o, &r, &v);
    if (rc || !v) return rc;
    print_version(v);
    json_decref(v);
    return 0;
}

/* ---- training ---- */

static int cmd_train(const options *o)
{
    if (!need_args(o, 2, "train TASK FILE [--base B] [--rank auto|fixed:N|linear] [--epochs N] ...")) return EXIT_USAGE;
    task_ref r;
    if (!task_only(o->args[0], "train", &r)) return EXIT_USAGE;
    if (cli_opt(o, "base") && !cli_name_ok("base", cli_opt(o, "base"))) return EXIT_USAGE;
    if (cli_opt(o, "fuse-with") && !names_ok("fuse-with", cli_opt(o, "fuse-with"))) return EXIT_USAGE;
    cli_url u;
    url_init(&u, "/v1/tasks");
    url_seg(&u, o->args[0]);
    url_seg(&u, "train");
    const char *keys[] = {"base", "rank", "epochs", "lr", "batch", "seed", "alpha", "holdout", "prune", "kind", "promote",
                          "from", "explain"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) url_query(&u, keys[k], cli_opt(o, keys[k]));
    url_query(&u, "fuse_with", cli_opt(o, "fuse-with"));
    if (!o->detach) url_query(&u, "follow", "1");
    const char *path = url_path(&u);
    if (!path) return EXIT_USAGE;
    char *body = NULL;
    size_t len = 0;
    int rc = read_body(o->args[1], &body, &len);
    if (rc) return rc;
    if (o->detach) {
        rc = submit_detached(o, path, content_type_for(o->args[1], body, len), body, len);
        free(body);
        return rc;
    }
    rc = follow_job(o, "POST", path, content_type_for(o->args[1], body, len), body, len);
    free(body);
    if (rc || o->json) return rc;
    /* Show the version this job made, which is not `active` when it waits as the candidate. */
    task_ref made = r;
    json_t *job = NULL;
    char jpath[64];
    snprintf(jpath, sizeof jpath, "/v1/jobs/%lld", followed_job_id());
    if (followed_job_id() > 0 && !get_json(o, jpath, &job) && job) {
        json_t *ver = json_object_get(json_object_get(job, "result"), "version");
        if (json_is_integer(ver)) snprintf(made.version, sizeof made.version, "%lld", (long long)json_integer_value(ver));
        json_decref(job);
    }
    json_t *v = NULL;
    if ((rc = get_version(o, &made, &v)) || !v) return rc;
    print_version(v);
    json_decref(v);
    return 0;
}

/* ---- tasks and versions ---- */

static int cmd_tasks(const options *o)
{
    json_t *r = NULL;
    int rc = get_json(o, "/v1/tasks", &r);
    if (rc || !r) return rc;
    json_t *arr = json_object_get(r, "tasks"), *t;
    size_t i;
    if (!json_array_size(arr)) printf("no tasks\n");
    else printf("%-20s %-16s %-6s %8s %8s %s\n", "TASK", "BASE", "KIND", "CLASSES", "VERSIONS", "ALIASES");
    json_array_foreach(arr, i, t) {
        char aliases[256] = "";
        size_t n = 0;
        const char *key;
        json_t *v;
        json_object_foreach(json_object_get(t, "aliases"), key, v)
            n += (size_t)snprintf(aliases + n, n < sizeof aliases ? sizeof aliases - n : 0, "%s%s=%lld", n ? " " : "",
                                  key, (long long)json_integer_value(v));
        /* A merge predicts through its source tasks' heads (?task=SOURCE): it has no classes of its own. */
        char classes[24] = "-";
        if (strcmp(str(t, "kind"), "merge")) snprintf(classes, sizeof classes, "%lld", num(t, "classes"));
        printf("%-20s %-16s %-6s %8s %8lld %s\n", str(t, "name"), str(t, "base"), str(t, "kind"), classes,
               num(t, "versions"), aliases);
    }
    json_decref(r);
    return 0;
}

static int cmd_versions(const options *o)
{
    if (!need_args(o, 1, "versions TASK")) return EXIT_USAGE;
    task_ref ref;
    if (!task_only(o->args[0], "versions", &ref)) return EXIT_USAGE;
    cli_url u;
    url_init(&u, "/v1/tasks");
    url_seg(&u, o->args[0]);
    url_seg(&u, "versions");
    json_t *r = NULL;
    int rc = get_json(o, url_path(&u), &r);
    if (rc || !r) return rc;
    json_t *aliases = json_object_get(r, "aliases"), *arr = json_object_get(r, "versions"), *v;
    size_t i;
    printf("%-8s %-7s %10s %10s %10s %9s  %s\n", "VERSION", "KIND", "PARAMS", "NEW", "HELD-OUT", "AGE", "ALIASES");
    json_array_foreach(arr, i, v) {
        char names[128] = "", age[64] = "-";
        size_t n = 0;
        const char *key;
        json_t *x;
        json_object_foreach(aliases, key, x)
            if (json_integer_value(x) == num(v, "version"))
                n += (size_t)snprintf(names + n, n < sizeof names ? sizeof names - n : 0, "%s%s", n ? "," : "", key);
        json_t *m = json_object_get(v, "metrics"), *ha = json_object_get(m, "holdout_accuracy");
        char acc[16] = "-", params[24] = "-"; /* "-" when not recorded (imported versions), never a made-up 0 */
        if (json_is_number(ha)) snprintf(acc, sizeof acc, "%.4f", json_number_value(ha));
        if (json_is_integer(json_object_get(m, "adapter_params"))) snprintf(params, sizeof params, "%lld", num(m, "adapter_params"));
        /* NEW: what the version stores itself; less than PARAMS when it reuses an earlier version by reference. */
        char fresh[24] = "-";
        if (json_is_integer(json_object_get(m, "new_params"))) snprintf(fresh, sizeof fresh, "%lld", num(m, "new_params"));
        format_age_ms(num(v, "created_ms"), age, sizeof age);
        printf("%-8lld %-7s %10s %10s %10s %9s  %s\n", num(v, "version"), str(v, "kind"), params, fresh, acc, age, names);
    }
    json_decref(r);
    return 0;
}

/* ---- rollback and aliases ---- */

static int post_move(const options *o, const char *method, const cli_url *u, json_t *body, const char *verb)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    json_t *r = NULL;
    int rc = send_json(o, method, url_path(u), "application/json", text, strlen(text), &r);
    free(text);
    if (!rc && r) {
        char from[24] = "-"; /* a new alias came from nowhere */
        if (num(r, "from")) snprintf(from, sizeof from, "%lld", num(r, "from"));
        printf("%s %s: %s %s -> %lld\n", verb, str(r, "task"), str(r, "alias"), from, num(r, "to"));
    }
    json_decref(r);
    return rc;
}

/* The body of a rollback, undo or alias move; NULL after printing an error. */
static json_t *move_body(const options *o)
{
    if (cli_opt(o, "alias") && !cli_name_ok("alias", cli_opt(o, "alias"))) return NULL;
    json_t *b = json_object();
    if (cli_opt(o, "alias")) json_object_set_new(b, "alias", json_string(cli_opt(o, "alias")));
    if (cli_opt(o, "reason")) json_object_set_new(b, "reason", json_string(cli_opt(o, "reason")));
    return b;
}

/* "/v1/tasks/TASK" followed by more literal segments. */
static void task_url(cli_url *u, const char *task, const char *more)
{
    url_init(u, "/v1/tasks");
    url_seg(u, task);
    url_lit(u, more);
}

static int cmd_rollback(const options *o)
{
    if (!need_args(o, 1, "rollback TASK[@VERSION|@ALIAS] [--to VERSION] [--alias A] [--reason TEXT]")) return EXIT_USAGE;
    task_ref r;
    if (!task_ref_parse(o->args[0], &r)) return EXIT_USAGE;
    const char *to = cli_opt(o, "to");
    if (to && !valid_id(to)) {
        fail_msg("--to takes a version number");
        return EXIT_USAGE;
    }
    if (to && task_ref_has_ref(&r)) {
        fail_msg("give the target either as %s or with --to, not both", o->args[0]);
        return EXIT_USAGE;
    }
    long long target = to ? atoll(to) : 0;
    if (task_ref_has_ref(&r)) {
        int rc = task_ref_version(o, &r, &target);
        if (rc) return rc;
    }
    json_t *b = move_body(o);
    if (!b) return EXIT_USAGE;
    if (target) json_object_set_new(b, "to", json_integer(target));
    cli_url u;
    task_url(&u, r.task, "/rollback");
    return post_move(o, "POST", &u, b, "rolled back");
}

static int cmd_undo(const options *o)
{
    if (!need_args(o, 1, "undo TASK [--alias A]")) return EXIT_USAGE;
    task_ref r;
    if (!task_only(o->args[0], "undo", &r)) return EXIT_USAGE;
    json_t *b = move_body(o);
    if (!b) return EXIT_USAGE;
    cli_url u;
    task_url(&u, o->args[0], "/rollback/undo");
    return post_move(o, "POST", &u, b, "undid rollback of");
}

static int cmd_alias(const options *o)
{
    /* alias TASK NAME VERSION, or alias TASK@VERSION NAME (TASK@ALIAS NAME copies an alias). */
    task_ref r;
    if (o->n_args == 2 || o->n_args == 3) {
        if (!task_ref_parse(o->args[0], &r)) return EXIT_USAGE;
    }
    if ((o->n_args != 2 && o->n_args != 3) || (o->n_args == 2) != task_ref_has_ref(&r)) {
        fail_msg("usage: clad alias TASK@VERSION NAME, or clad alias TASK NAME VERSION");
        return EXIT_USAGE;
    }
    if (!cli_name_ok("alias", o->args[1])) return EXIT_USAGE;
    if (o->n_args == 3 && !valid_id(o->args[2])) {
        fail_msg("VERSION must be a version number");
        return EXIT_USAGE;
    }
    long long version = o->n_args == 3 ? atoll(o->args[2]) : 0;
    if (!version) {
        int rc = task_ref_version(o, &r, &version);
        if (rc) return rc;
    }
    json_t *b = json_pack("{s:I}", "version", (json_int_t)version);
    if (cli_opt(o, "reason")) json_object_set_new(b, "reason", json_string(cli_opt(o, "reason")));
    cli_url u;
    task_url(&u, r.task, "/aliases");
    url_seg(&u, o->args[1]);
    return post_move(o, "PUT", &u, b, "moved");
}

/* ---- serving ---- */

static int cmd_serve(const options *o, bool evaluate)
{
    if (!need_args(o, 2, evaluate ? "eval TASK[@VERSION|@ALIAS] FILE" : "predict TASK[@VERSION|@ALIAS] FILE"))
        return EXIT_USAGE;
    task_ref ref;
    if (!task_ref_parse(o->args[0], &ref)) return EXIT_USAGE;
    const char *version = cli_opt(o, "version"), *alias = cli_opt(o, "alias"), *source = cli_opt(o, "task");
    if (task_ref_has_ref(&ref) && (version || alias)) {
        fail_msg("give the version either as %s or with --version/--alias, not both", o->args[0]);
        return EXIT_USAGE;
    }
    if (version && alias) {
        fail_msg("give either --version or --alias, not both");
        return EXIT_USAGE;
    }
    if (ref.version[0]) version = ref.version;
    if (ref.alias[0]) alias = ref.alias;
    if (version && !valid_id(version)) {
        fail_msg("--version takes a version number");
        return EXIT_USAGE;
    }
    const char *data_task = cli_opt(o, "data-task");
    if ((alias && !cli_name_ok("alias", alias)) || (source && !cli_name_ok("task", source)) ||
        (data_task && !cli_name_ok("task", data_task)))
        return EXIT_USAGE;
    cli_url u;
    task_url(&u, ref.task, evaluate ? "/evaluate" : "/predict");
    url_query(&u, "version", version);
    url_query(&u, "alias", alias);
    url_query(&u, "task", source);
    if (evaluate) { /* provenance for the report: the file's name, and whose test data it is */
        const char *slash = strrchr(o->args[1], '/');
        if (strcmp(o->args[1], "-")) url_query(&u, "data_name", slash ? slash + 1 : o->args[1]);
        url_query(&u, "data_task", data_task);
    }
    if (!evaluate && !o->json) url_query(&u, "probs", "0");
    const char *path = url_path(&u);
    if (!path) return EXIT_USAGE;
    char *body = NULL;
    size_t len = 0;
    int rc = read_body(o->args[1], &body, &len);
    if (rc) return rc;
    json_t *r = NULL;
    rc = send_json(o, "POST", path, content_type_for(o->args[1], body, len), body, len, &r);
    free(body);
    if (rc || !r) return rc;
    if (evaluate) {
        printf("%s@%lld: accuracy %.4f, loss %.4f on %lld samples%s\n", str(r, "task"), num(r, "version"),
               dnum(r, "accuracy"), dnum(r, "loss"), num(r, "samples"),
               json_is_true(json_object_get(r, "recorded")) ? " (recorded)" : "");
        if (json_is_false(json_object_get(r, "own_data")))
            printf("data of task %s: kept apart from the accuracy matrix\n", str(r, "data_task"));
    } else {
        json_t *labels = json_object_get(r, "labels"), *l;
        size_t i;
        json_array_foreach(labels, i, l) printf("%lld\n", (long long)json_integer_value(l));
    }
    json_decref(r);
    return 0;
}

/* predict --any / eval --any: without a task id (POST /v1/predict, /v1/evaluate on a base). */
static int cmd_route(const options *o, bool evaluate)
{
    const char *file = cli_opt(o, "any");
    const char *base = cli_opt(o, "base"), *tasks = cli_opt(o, "tasks");
    if (o->n_args) {
        fail_msg("%s --any FILE takes no TASK", evaluate ? "eval" : "predict");
        return EXIT_USAGE;
    }
    if ((base && !cli_name_ok("base", base)) || (tasks && !names_ok("tasks", tasks))) return EXIT_USAGE;
    cli_url u;
    url_init(&u, evaluate ? "/v1/evaluate" : "/v1/predict");
    url_query(&u, "base", base);
    url_query(&u, "tasks", tasks);
    url_query(&u, "mode", cli_opt(o, "mode"));
    url_query(&u, "top_k", cli_opt(o, "top-k"));
    url_query(&u, "threshold", cli_opt(o, "threshold"));
    const char *path = url_path(&u);
    if (!path) return EXIT_USAGE;
    char *body = NULL;
    size_t len = 0;
    int rc = read_body(file, &body, &len);
    if (rc) return rc;
    json_t *r = NULL;
    rc = send_json(o, "POST", path, content_type_for(file, body, len), body, len, &r);
    free(body);
    if (rc || !r) return rc;
    if (evaluate) {
        printf("samples %lld\ntask_id_accuracy %.4f\naccuracy_task_given %.4f\naccuracy_task_inferred %.4f\n"
               "no_match %lld\n", num(r, "samples"), dnum(r, "task_id_accuracy"), dnum(r, "accuracy_task_given"),
               dnum(r, "accuracy_task_inferred"), num(r, "no_match"));
        const char *t;
        json_t *row;
        json_object_foreach(json_object_get(r, "confusion"), t, row) {
            char *text = json_dumps(row, JSON_COMPACT | JSON_SORT_KEYS);
            printf("confusion %s %s\n", t, text);
            free(text);
        }
    } else {
        json_t *p;
        size_t i;
        json_array_foreach(json_object_get(r, "predictions"), i, p) {
            if (json_is_null(json_object_get(p, "task")))
                printf("-\t-\tno_match\t%.3f\n", dnum(p, "distance"));
            else
                printf("%s\t%lld\t%.3f%s\n", str(p, "task"), num(p, "label"), dnum(p, "confidence"),
                       json_is_true(json_object_get(p, "ambiguous")) ? "\tambiguous" : "");
        }
    }
    json_decref(r);
    return 0;
}

static int cmd_merge(const options *o)
{
    const char *tasks = cli_opt(o, "tasks");
    if (!need_args(o, 1, "merge NAME --tasks a,b,c [--method drm-h] [--drop D] [--lambda L] [--rank R]")) return EXIT_USAGE;
    if (!tasks) {
        fail_msg("--tasks a,b,c is required");
        return EXIT_USAGE;
    }
    if (!cli_name_ok("merge", o->args[0]) || !names_ok("tasks", tasks)) return EXIT_USAGE;
    json_t *b = json_object(), *list = json_array();
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", tasks);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(list, json_string(t));
    json_object_set_new(b, "tasks", list);
    if (cli_opt(o, "method")) json_object_set_new(b, "method", json_string(cli_opt(o, "method")));
    if (!number_option(o, "drop", false, b) || !number_option(o, "lambda", false, b) || !number_option(o, "rank", true, b)) {
        json_decref(b);
        return EXIT_USAGE;
    }
    char *text = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    cli_url u;
    url_init(&u, "/v1/merges");
    url_seg(&u, o->args[0]);
    url_query(&u, "follow", "1");
    int rc = follow_job(o, "POST", url_path(&u), "application/json", text, strlen(text));
    free(text);
    return rc;
}

/* predict and eval take options of two forms; one form's options in the other would be ignored: refuse them. */
static int predict_or_eval(const options *o, bool evaluate)
{
    static const char *const any_only[] = {"base", "tasks", "mode", "top-k", "threshold", NULL};
    static const char *const task_only[] = {"version", "alias", "task", "data-task", NULL};
    const char *command = evaluate ? "eval" : "predict";
    bool any = cli_opt(o, "any") != NULL;
    for (const char *const *k = any ? task_only : any_only; *k; k++)
        if (cli_opt(o, *k)) {
            fail_msg("clad %s %s does not take --%s (clad %s --help lists each form's options)", command,
                     any ? "--any" : "TASK", *k, command);
            return EXIT_USAGE;
        }
    return any ? cmd_route(o, evaluate) : cmd_serve(o, evaluate);
}

static int cmd_predict(const options *o) { return predict_or_eval(o, false); }
static int cmd_eval(const options *o) { return predict_or_eval(o, true); }

#define REF_HELP                                                                                            \
    "TASK@VERSION picks a version by number, TASK@ALIAS by alias (default: the `active` alias).\n"

const cli_command cli_task_commands[] = {
    {"bases", "", "list base models", NULL, "", cmd_bases},
    {"base", "import NAME FILE | train NAME", "import a base from safetensors, or train one on a reference dataset",
     "config,model,data,epochs,samples,seed,lr,batch",
     "base import NAME FILE: FILE is a safetensors checkpoint of every base parameter.\n"
     "  --config JSON       the model config when FILE does not carry it (a preset name or a JSON object)\n"
     "base train NAME: trains every weight as a job and follows it.\n"
     "  --model M           preset (mlp, vit-tiny) or a JSON config (default vit-tiny)\n"
     "  --data D            fmnist (default) or a dataset file the daemon may read\n"
     "  --epochs N, --samples N, --seed N, --lr X, --batch N\n",
     cmd_base},
    {"train", "TASK FILE", "train a new version of TASK from a dataset file",
     "base,rank,epochs,lr,batch,seed,alpha,holdout,prune,kind,fuse-with,promote,from,explain,detach",
     "FILE is safetensors (x, y), IDX or CSV with the label first. The job is followed until it ends; then\n"
     "the new version is shown as `clad show` does. Ctrl-C while following asks whether to cancel the job.\n"
     "  --base B            the base of a new task (default: the only base)\n"
     "  --rank R            auto (default), fixed:N, linear, or auto:theta=0.01,r_max=16,budget=20000\n"
     "                      (fixed:N trains without a probe unless --explain; auto:reuse=0 reuses no earlier task)\n"
     "  --from V            continue from version V of TASK (reused, referenced; only new components train);\n"
     "                      without it a new version starts from the base\n"
     "  --explain           probe and explain the ranks even under fixed:N\n"
     "  --epochs N          passes over the data (default 2)\n"
     "  --lr X, --batch N, --seed N, --alpha X\n"
     "  --holdout F         fraction kept aside to measure the version (0..0.5, default 0.1)\n"
     "  --prune TAU         after training, keep the smallest ranks holding TAU of each layer's energy\n"
     "  --kind K            lora (default), tl5 or tl6 (Tied-LoRA)\n"
     "  --fuse-with a,b,c   AdapterFusion over these tasks' active versions\n"
     "  --promote P         always (default), if-better (than active on the held-out data) or never\n"
     "  --detach, -d        submit the job, print its id and return (follow it with clad job ID --follow)\n",
     cmd_train},
    {"tasks", "", "list tasks with their active versions", NULL, "", cmd_tasks},
    {"versions", "TASK", "versions of a task, with aliases and held-out accuracy", NULL, "", cmd_versions},
    {"show", "TASK[@VERSION|@ALIAS]", "a version's lineage: distances, ranks, overlaps, metrics", NULL,
     REF_HELP, cmd_show},
    {"rollback", "TASK[@VERSION|@ALIAS]", "move `active` (or --alias) back", "to,alias,reason",
     "Without a target, back to the version the alias pointed at before; TASK@VERSION or --to V moves it\n"
     "to that version, TASK@ALIAS to the version that alias points at.\n"
     "  --to VERSION        the version to move to\n"
     "  --alias A           the alias to move (default active)\n"
     "  --reason TEXT       recorded in the alias history\n",
     cmd_rollback},
    {"undo", "TASK", "undo the last rollback", "alias,reason",
     "  --alias A           the alias whose rollback to undo (default active)\n"
     "  --reason TEXT       recorded in the alias history\n",
     cmd_undo},
    {"alias", "TASK@VERSION NAME", "point an alias at a version", "reason",
     "Also: clad alias TASK NAME VERSION. TASK@ALIAS NAME points NAME where ALIAS points.\n"
     "  --reason TEXT       recorded in the alias history\n",
     cmd_alias},
    {"predict", "TASK[@VERSION|@ALIAS] FILE | --any FILE", "labels for the inputs in FILE, one per line",
     "version,alias,task,any,base,tasks,mode,top-k,threshold",
     "FILE holds inputs: safetensors, IDX, CSV (features only, or label first with a `label` header)\n"
     "or JSON {\"inputs\": [[...], ...]}. " REF_HELP
     "  --version V, --alias A   the same as TASK@V, TASK@A\n"
     "  --task SOURCE       for a merge: serve SOURCE's head\n"
     "--any FILE: without a task id, route each input to its task, then predict; prints\n"
     "task, label, confidence (\"ambiguous\" when two tasks are close; \"no_match\" past the threshold).\n"
     "  --base B            the base whose tasks to route to (default: the only base)\n"
     "  --tasks a,b,c       route only among these tasks (default: every task with routing statistics)\n"
     "  --mode M            task (default: the task's own labels) or class (one label over the union of\n"
     "                      the candidates' classes)\n"
     "  --top-k N           also list the N best tasks with their scores (with --json)\n"
     "  --threshold X       distance past which an input is no_match\n",
     cmd_predict},
    {"eval", "TASK[@VERSION|@ALIAS] FILE | --any FILE", "accuracy and loss on labelled data",
     "version,alias,task,data-task,any,base,tasks,threshold",
     REF_HELP "  --version V, --alias A   the same as TASK@V, TASK@A\n"
     "  --task SOURCE       for a merge: evaluate SOURCE's head\n"
     "  --data-task T       FILE is task T's test data: recorded, but kept out of TASK's matrix column\n"
     "--any FILE: data of several tasks (safetensors x, y, task + metadata tasks): task-id accuracy, and\n"
     "accuracy with the task given and inferred. --base B, --tasks a,b,c, --threshold X as for predict --any.\n",
     cmd_eval},
    {"merge", "NAME --tasks a,b,c", "merge the tasks' active adapters into one version",
     "tasks,method,drop,lambda,rank",
     "  --tasks a,b,c       the tasks to merge (required)\n"
     "  --method M          drm-h (default), drm-v, ties or ta\n"
     "  --drop D            fraction of entries trimmed (default 0.8)\n"
     "  --lambda L          scale of the merged change (default 1)\n"
     "  --rank R            rank of the stored LoRA (default 64)\n",
     cmd_merge},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};
