/* clad commands for bases, tasks, versions, serving and rollback; see daemon/cli.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/cli.h"

const char cli_tasks_usage[] =
    "  bases                       list base models\n"
    "  base import NAME FILE       import a base from safetensors [--config JSON]\n"
    "  base train NAME             train a base on a reference dataset [--model vit-tiny] [--data fmnist]\n"
    "                              [--epochs N] [--samples N] [--seed N] [--lr X] [--batch N]\n"
    "  train TASK FILE             train a new version of TASK from a dataset file (safetensors, IDX, CSV)\n"
    "                              [--base B] [--rank auto|fixed:N|linear] [--epochs N] [--lr X]\n"
    "                              [--batch N] [--seed N] [--alpha X] [--holdout F] [--prune TAU]\n"
    "                              [--kind lora|tl5|tl6] [--fuse-with a,b,c]\n"
    "  tasks                       list tasks with their active versions\n"
    "  versions TASK               versions of a task\n"
    "  show TASK[@VERSION]         a version's lineage: distances, ranks, overlaps, metrics\n"
    "  rollback TASK               move `active` back [--to VERSION] [--alias A] [--reason TEXT]\n"
    "  undo TASK                   undo the last rollback [--alias A]\n"
    "  alias TASK NAME VERSION     point an alias at a version [--reason TEXT]\n"
    "  predict TASK FILE           labels for the inputs in FILE [--version V | --alias A]\n"
    "                              (a merge: --task SOURCE picks the source task's head)\n"
    "  merge NAME --tasks a,b,c    merge the tasks' active adapters into one version [--method drm-h|drm-v|\n"
    "                              ties|ta] [--drop D] [--lambda L] [--rank R]\n"
    "  eval TASK FILE              accuracy and loss on labelled data [--version V | --alias A]\n"
    "  predict --any FILE          route each input to its task, then predict: task, confidence, label\n"
    "                              [--base B] [--tasks a,b,c] [--mode task|class] [--top-k N] [--threshold X]\n"
    "  eval --any FILE             task-id accuracy and accuracy with the task given and inferred, on data\n"
    "                              of several tasks (safetensors x, y, task + metadata tasks) [--base B]\n"
    "                              [--tasks a,b,c] [--threshold X]\n";

static const char *const value_options[] = {
    "base", "rank", "epochs", "lr", "batch", "seed", "alpha", "holdout", "prune", "kind", "fuse-with", "to", "alias", "version", "reason",
    "config", "model", "data", "samples", "tasks", "task", "method", "drop", "lambda",
    "any", "mode", "top-k", "threshold", NULL,
};

bool cli_value_option(const char *key)
{
    for (int i = 0; value_options[i]; i++)
        if (!strcmp(value_options[i], key)) return true;
    return false;
}

/* Appends "&key=value" (percent-encoded) to a query being built in buf. */
static void add_query(char *buf, size_t size, const char *key, const char *value)
{
    if (!value) return;
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, size > n ? size - n : 0, "%s%s=", strchr(buf, '?') ? "&" : "?", key);
    for (const unsigned char *p = (const unsigned char *)value; *p && n + 4 < size; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-._~:,", *p))
            buf[n++] = (char)*p;
        else
            n += (size_t)snprintf(buf + n, size - n, "%%%02X", *p);
    }
    buf[n < size ? n : size - 1] = '\0';
}

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

static int cmd_base(const options *o)
{
    if (o->n_args < 2 || (strcmp(o->args[0], "import") && strcmp(o->args[0], "train"))) {
        fail_msg("usage: clad base import NAME FILE | clad base train NAME [--model M] [--data D] ...");
        return EXIT_USAGE;
    }
    char path[512] = "";
    snprintf(path, sizeof path, "/v1/bases/%s", o->args[1]);
    if (!strcmp(o->args[0], "import")) {
        if (!need_args(o, 3, "base import NAME FILE [--config JSON]")) return EXIT_USAGE;
        add_query(path, sizeof path, "config", cli_opt(o, "config"));
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
    json_object_set_new(spec, "data", json_string(cli_opt(o, "data") ? cli_opt(o, "data") : "fmnist"));
    const char *ints[] = {"epochs", "samples", "seed", "batch"};
    for (int k = 0; k < 4; k++)
        if (cli_opt(o, ints[k])) json_object_set_new(spec, ints[k], json_integer(atoll(cli_opt(o, ints[k]))));
    if (cli_opt(o, "lr")) json_object_set_new(spec, "lr", json_real(atof(cli_opt(o, "lr"))));
    char *body = json_dumps(spec, JSON_COMPACT);
    json_decref(spec);
    add_query(path, sizeof path, "follow", "1");
    int rc = follow_job(o, "POST", path, "application/json", body, strlen(body));
    free(body);
    return rc;
}

/* ---- showing a version ---- */

static void print_plan(json_t *v)
{
    json_t *plan = json_object_get(json_object_get(v, "lineage"), "plan");
    json_t *m = json_object_get(v, "metrics");
    printf("%s@%lld  kind %s  sha256 %.16s..  %lld bytes\n", str(v, "task"), num(v, "version"), str(v, "kind"),
           str(v, "sha256"), num(v, "bytes"));
    json_t *parents = json_object_get(v, "parents"), *p;
    size_t i;
    if (json_array_size(parents)) {
        printf("parents  ");
        json_array_foreach(parents, i, p) printf("%s%s@%lld", i ? ", " : "", str(p, "task"), num(p, "version"));
        printf("\n");
    }
    if (json_is_object(m)) {
        json_t *ha = json_object_get(m, "holdout_accuracy");
        printf("metrics  train accuracy %.4f", dnum(m, "train_accuracy"));
        if (json_is_number(ha)) printf(", held-out accuracy %.4f (%lld samples)", json_number_value(ha), num(m, "holdout_samples"));
        printf(", %lld adapter parameters, %.1f s training\n", num(m, "adapter_params"), dnum(m, "train_seconds"));
    }
    if (!json_is_object(plan)) return;
    printf("plan     policy %s, distance %.4f, novelty %.3f, held-out gain %.4f nats\n", str(plan, "policy"),
           dnum(plan, "distance"), dnum(plan, "novelty"), dnum(plan, "gain"));
    json_t *reuse = json_object_get(plan, "reuse");
    if (json_is_object(reuse)) printf("reuses   %s@%lld (its change is copied, frozen)\n", str(reuse, "task"), num(reuse, "version"));
    json_t *ov = json_object_get(plan, "overlap"), *x;
    const char *key;
    if (json_object_size(ov)) {
        printf("overlap ");
        json_object_foreach(ov, key, x) printf(" %s %.3f", key, json_number_value(x));
        printf("\n");
    }
    printf("%-18s %9s %8s %8s %5s %6s  %s\n", "LAYER", "DISTANCE", "NOVELTY", "GAIN", "RANK", "REUSED", "WHY");
    json_object_foreach(json_object_get(plan, "layers"), key, x)
        printf("%-18s %9.4f %8.3f %8.4f %5lld %6lld  %s\n", key, dnum(x, "distance"), dnum(x, "novelty"), dnum(x, "gain"),
               num(x, "rank"), num(x, "reused"), str(x, "why"));
}

static int cmd_show(const options *o)
{
    if (!need_args(o, 1, "show TASK[@VERSION]")) return EXIT_USAGE;
    char task[128], path[256];
    snprintf(task, sizeof task, "%s", o->args[0]);
    char *at = strchr(task, '@');
    json_t *v = NULL;
    int rc;
    if (at) {
        *at = '\0';
        snprintf(path, sizeof path, "/v1/tasks/%s/versions/%s", task, at + 1);
        rc = get_json(o, path, &v);
        if (rc || !v) return rc;
    } else {
        json_t *t = NULL;
        snprintf(path, sizeof path, "/v1/tasks/%s", task);
        rc = get_json(o, path, &t);
        if (rc || !t) return rc;
        v = json_incref(json_object_get(t, "active"));
        json_decref(t);
        if (!v) {
            printf("task %s has no version yet\n", task);
            return 0;
        }
    }
    print_plan(v);
    json_decref(v);
    return 0;
}

/* ---- training ---- */

static int cmd_train(const options *o)
{
    if (!need_args(o, 2, "train TASK FILE [--base B] [--rank auto|fixed:N|linear] [--epochs N] ...")) return EXIT_USAGE;
    char path[1024];
    snprintf(path, sizeof path, "/v1/tasks/%s/train", o->args[0]);
    const char *keys[] = {"base", "rank", "epochs", "lr", "batch", "seed", "alpha", "holdout", "prune", "kind"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) add_query(path, sizeof path, keys[k], cli_opt(o, keys[k]));
    add_query(path, sizeof path, "fuse_with", cli_opt(o, "fuse-with"));
    add_query(path, sizeof path, "follow", "1");
    char *body = NULL;
    size_t len = 0;
    int rc = read_body(o->args[1], &body, &len);
    if (rc) return rc;
    rc = follow_job(o, "POST", path, content_type_for(o->args[1], body, len), body, len);
    free(body);
    if (rc || o->json) return rc;
    options q = *o;
    q.n_args = 1;
    return cmd_show(&q);
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
        printf("%-20s %-16s %-6s %8lld %8lld %s\n", str(t, "name"), str(t, "base"), str(t, "kind"), num(t, "classes"),
               num(t, "versions"), aliases);
    }
    json_decref(r);
    return 0;
}

static int cmd_versions(const options *o)
{
    if (!need_args(o, 1, "versions TASK")) return EXIT_USAGE;
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/versions", o->args[0]);
    json_t *r = NULL;
    int rc = get_json(o, path, &r);
    if (rc || !r) return rc;
    json_t *aliases = json_object_get(r, "aliases"), *arr = json_object_get(r, "versions"), *v;
    size_t i;
    printf("%-8s %-7s %10s %10s %9s  %s\n", "VERSION", "KIND", "PARAMS", "HELD-OUT", "AGE", "ALIASES");
    json_array_foreach(arr, i, v) {
        char names[128] = "", age[64] = "-";
        size_t n = 0;
        const char *key;
        json_t *x;
        json_object_foreach(aliases, key, x)
            if (json_integer_value(x) == num(v, "version"))
                n += (size_t)snprintf(names + n, n < sizeof names ? sizeof names - n : 0, "%s%s", n ? "," : "", key);
        json_t *m = json_object_get(v, "metrics"), *ha = json_object_get(m, "holdout_accuracy");
        char acc[16] = "-";
        if (json_is_number(ha)) snprintf(acc, sizeof acc, "%.4f", json_number_value(ha));
        double created = (double)num(v, "created_ms") / 1e3;
        if (created > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double a = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 - created;
            format_duration(a > 0 ? a : 0, age, sizeof age);
        }
        printf("%-8lld %-7s %10lld %10s %9s  %s\n", num(v, "version"), str(v, "kind"), num(m, "adapter_params"), acc, age,
               names);
    }
    json_decref(r);
    return 0;
}

/* ---- rollback and aliases ---- */

static int post_move(const options *o, const char *path, json_t *body, const char *verb)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    json_t *r = NULL;
    int rc = send_json(o, strstr(path, "/aliases/") ? "PUT" : "POST", path, "application/json", text, strlen(text), &r);
    free(text);
    if (!rc && r)
        printf("%s %s: %s %lld -> %lld\n", verb, str(r, "task"), str(r, "alias"), num(r, "from"), num(r, "to"));
    json_decref(r);
    return rc;
}

static json_t *move_body(const options *o)
{
    json_t *b = json_object();
    if (cli_opt(o, "alias")) json_object_set_new(b, "alias", json_string(cli_opt(o, "alias")));
    if (cli_opt(o, "reason")) json_object_set_new(b, "reason", json_string(cli_opt(o, "reason")));
    return b;
}

static int cmd_rollback(const options *o)
{
    if (!need_args(o, 1, "rollback TASK [--to VERSION] [--alias A] [--reason TEXT]")) return EXIT_USAGE;
    json_t *b = move_body(o);
    const char *to = cli_opt(o, "to");
    if (to) {
        if (!valid_id(to)) {
            json_decref(b);
            fail_msg("--to takes a version number");
            return EXIT_USAGE;
        }
        json_object_set_new(b, "to", json_integer(atoll(to)));
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/rollback", o->args[0]);
    return post_move(o, path, b, "rolled back");
}

static int cmd_undo(const options *o)
{
    if (!need_args(o, 1, "undo TASK [--alias A]")) return EXIT_USAGE;
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/rollback/undo", o->args[0]);
    return post_move(o, path, move_body(o), "undid rollback of");
}

static int cmd_alias(const options *o)
{
    if (!need_args(o, 3, "alias TASK NAME VERSION [--reason TEXT]")) return EXIT_USAGE;
    if (!valid_id(o->args[2])) {
        fail_msg("VERSION must be a version number");
        return EXIT_USAGE;
    }
    json_t *b = json_pack("{s:I}", "version", (json_int_t)atoll(o->args[2]));
    if (cli_opt(o, "reason")) json_object_set_new(b, "reason", json_string(cli_opt(o, "reason")));
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/aliases/%s", o->args[0], o->args[1]);
    return post_move(o, path, b, "moved");
}

/* ---- serving ---- */

static int cmd_serve(const options *o, bool evaluate)
{
    if (!need_args(o, 2, evaluate ? "eval TASK FILE [--version V | --alias A]" : "predict TASK FILE [--version V | --alias A]"))
        return EXIT_USAGE;
    char path[512];
    snprintf(path, sizeof path, "/v1/tasks/%s/%s", o->args[0], evaluate ? "evaluate" : "predict");
    add_query(path, sizeof path, "version", cli_opt(o, "version"));
    add_query(path, sizeof path, "alias", cli_opt(o, "alias"));
    add_query(path, sizeof path, "task", cli_opt(o, "task"));
    if (!evaluate && !o->json) add_query(path, sizeof path, "probs", "0");
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
    char path[8400];
    snprintf(path, sizeof path, "/v1/%s", evaluate ? "evaluate" : "predict");
    add_query(path, sizeof path, "base", cli_opt(o, "base"));
    add_query(path, sizeof path, "tasks", cli_opt(o, "tasks"));
    add_query(path, sizeof path, "mode", cli_opt(o, "mode"));
    add_query(path, sizeof path, "top_k", cli_opt(o, "top-k"));
    add_query(path, sizeof path, "threshold", cli_opt(o, "threshold"));
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
    json_t *b = json_object(), *list = json_array();
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", tasks);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(list, json_string(t));
    json_object_set_new(b, "tasks", list);
    if (cli_opt(o, "method")) json_object_set_new(b, "method", json_string(cli_opt(o, "method")));
    if (cli_opt(o, "drop")) json_object_set_new(b, "drop", json_real(atof(cli_opt(o, "drop"))));
    if (cli_opt(o, "lambda")) json_object_set_new(b, "lambda", json_real(atof(cli_opt(o, "lambda"))));
    if (cli_opt(o, "rank")) json_object_set_new(b, "rank", json_integer(atoll(cli_opt(o, "rank"))));
    char *text = json_dumps(b, JSON_COMPACT), path[256];
    json_decref(b);
    snprintf(path, sizeof path, "/v1/merges/%s?follow=1", o->args[0]);
    int rc = follow_job(o, "POST", path, "application/json", text, strlen(text));
    free(text);
    return rc;
}

int cli_tasks_dispatch(const char *command, const options *o)
{
    if (!strcmp(command, "merge")) return cmd_merge(o);
    if (!strcmp(command, "bases")) return cmd_bases(o);
    if (!strcmp(command, "base")) return cmd_base(o);
    if (!strcmp(command, "train")) return cmd_train(o);
    if (!strcmp(command, "tasks")) return cmd_tasks(o);
    if (!strcmp(command, "versions")) return cmd_versions(o);
    if (!strcmp(command, "show")) return cmd_show(o);
    if (!strcmp(command, "rollback")) return cmd_rollback(o);
    if (!strcmp(command, "undo")) return cmd_undo(o);
    if (!strcmp(command, "alias")) return cmd_alias(o);
    if (!strcmp(command, "predict")) return cli_opt(o, "any") ? cmd_route(o, false) : cmd_serve(o, false);
    if (!strcmp(command, "eval")) return cli_opt(o, "any") ? cmd_route(o, true) : cmd_serve(o, true);
    return -1;
}
