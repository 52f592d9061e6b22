/* Predicting without a task id: each input is routed to the task it belongs to (core/route.h).
 *
 *   POST /v1/predict?base=NAME    inputs -> per input: the task chosen, its confidence, the label
 *   POST /v1/evaluate?base=NAME   labelled inputs of several tasks with their true task names ->
 *                                 task-id accuracy, accuracy with the task given and inferred, confusion
 *
 * Candidates are the tasks of the base (or ?tasks=a,b,c), each at its `active` version, so rollbacks and
 * alias moves take effect at once; versions without routing statistics are left out (named in "skipped").
 * On the loop thread the versions are resolved, and those not cached load on the pool (registry_load.h);
 * then, on a compute thread, the router is built (once per set of versions: it is cached), the base runs
 * once over the inputs for their features, and each input's chosen adapter predicts its label.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/route.h"
#include "core/train.h"
#include "daemon/api.h"
#include "daemon/api_util.h"
#include "daemon/node.h"
#include "daemon/registry_load.h"
#include "io/safetensors.h"

#define ROUTE_MAX_TASKS 256
#define ROUTE_CHUNK 256
#define ROUTE_DEFAULT_THRESHOLD 3.0
#define ROUTER_CACHE 8
/* "task@version," for every candidate: a name, '@', at most 19 digits and ','. */
#define ROUTE_KEY_MAX (ROUTE_MAX_TASKS * (STORE_NAME_MAX + 22) + 1)

/* Routers by the exact set of versions they were built from (versions are immutable, so a key never goes
 * stale; a rollback simply asks for another key). Loop thread only. */
typedef struct cached_router {
    char key[ROUTE_KEY_MAX];
    task_router *r;
    int refs;
    uint64_t used;
} cached_router;
static cached_router *router_cache[ROUTER_CACHE];
static uint64_t router_clock;

typedef struct route_call {
    http_req *req;
    cladd *app;
    bool evaluate, class_mode;
    int top_k;
    double threshold;
    int n_tasks;
    loaded_adapter *la[ROUTE_MAX_TASKS];
    char key[ROUTE_KEY_MAX];
    cached_router *cr;          /* a cached router, referenced; else the worker builds `built` */
    task_router *built;
    json_t *skipped;
    struct candidate_want *want; /* while the candidates load */
    /* results (worker) */
    int n;
    int *task;                  /* (n) chosen task, -1: no match */
    int *label;                 /* (n) label from the chosen task's adapter (-1 without a task) */
    float *conf, *second, *dist, *label_conf;  /* (n): chosen task's posterior, the runner-up's, ... */
    float *tprob;               /* (n,T) task posteriors (top_k > 0 only) */
    /* evaluate */
    long tid_correct, given_correct, inferred_correct, no_match;
    long *confusion;            /* (T, T+1): true task x routed task (last column: no match) */
    int n_true;                 /* tasks named in the data */
} route_call;

static const task_router *call_router(const route_call *c) { return c->cr ? c->cr->r : c->built; }

/* The true task of every sample of an evaluation body: a safetensors file with "x", "y", an integer
 * tensor "task" (n) indexing the JSON list of names in the metadata key "tasks". */
static int read_true_tasks(route_call *c, int *true_task, int n, clad_err *err)
{
    st_reader *r = st_reader_parse(c->req->body, c->req->body_len, err);
    if (!r) return clad_err_set(err, CLAD_EINVAL, "the evaluation data must be a safetensors file (x, y, task)");
    const st_tensor *t = st_reader_find(r, "task");
    const char *names = st_reader_meta(r, "tasks");
    json_error_t je;
    json_t *list = names ? json_loads(names, 0, &je) : NULL;
    int rc = 0;
    if (!t || t->ndim != 1 || t->shape[0] != n) rc = clad_err_set(err, CLAD_EINVAL, "the data needs a tensor 'task' of %d task indices", n);
    else if (!json_is_array(list) || !json_array_size(list))
        rc = clad_err_set(err, CLAD_EINVAL, "the data needs the metadata 'tasks': a JSON list of task names");
    else rc = st_tensor_to_int(t, true_task, err);
    int map[ROUTE_MAX_TASKS];
    size_t k = rc ? 0 : json_array_size(list);
    if (k > ROUTE_MAX_TASKS) rc = clad_err_set(err, CLAD_EINVAL, "more than %d task names", ROUTE_MAX_TASKS);
    for (size_t i = 0; !rc && i < k; i++) {
        const char *name = json_string_value(json_array_get(list, i));
        map[i] = -1;
        for (int j = 0; name && j < c->n_tasks; j++)
            if (!strcmp(c->la[j]->task, name)) map[i] = j;
        if (map[i] < 0)
            rc = clad_err_set(err, CLAD_EINVAL, "task '%s' of the data is not among the routed tasks", name ? name : "?");
    }
    for (int i = 0; !rc && i < n; i++) {
        if (true_task[i] < 0 || (size_t)true_task[i] >= k)
            rc = clad_err_set(err, CLAD_EINVAL, "sample %d: task index %d is not in [0, %zu)", i, true_task[i], k);
        else true_task[i] = map[true_task[i]];
    }
    c->n_true = (int)k;
    json_decref(list);
    st_reader_destroy(r);
    return rc;
}

/* Labels of the samples idx[0..k) of chunk x (rows of dim) with task t's adapter. In class mode the label
 * is restricted to the classes the task was trained on (those with routing statistics). */
static int predict_group(const route_call *c, model_ws *ws, int t, const int *idx, int k, const float *x, int dim,
                         int *labels, float *label_conf, bool restrict_seen, clad_err *err)
{
    const loaded_adapter *la = c->la[t];
    int K = la->a->n_classes;
    float *xs = calloc((size_t)k * dim, sizeof *xs), *p = malloc((size_t)k * K * sizeof *p);
    if (!xs || !p) {
        free(xs);
        free(p);
        return clad_err_set(err, CLAD_ENOMEM, "out of memory");
    }
    for (int i = 0; i < k; i++) memcpy(xs + (size_t)i * dim, x + (size_t)idx[i] * dim, (size_t)dim * sizeof *xs);
    int rc = model_predict_ws(ws, la->base->m, la->a, xs, k, p, NULL, err);
    for (int i = 0; !rc && i < k; i++) {
        const float *pi = p + (size_t)i * K;
        int best = -1;
        double z = 0;
        for (int j = 0; j < K; j++) {
            if (restrict_seen && j < la->route.n_classes && la->route.count[j] <= 0) continue;
            z += (double)pi[j];
            if (best < 0 || pi[j] > pi[best]) best = j;
        }
        labels[i] = best;
        label_conf[i] = z > 0 ? (float)((double)pi[best] / z) : 0.0f;
    }
    free(xs);
    free(p);
    return rc;
}

static int route_work(void *argp, clad_err *err)
{
    route_call *c = argp;
    const model *m = c->la[0]->base->m;
    int dim = model_config_input_dim(&m->cfg), D = route_feature_dim(m), T = c->n_tasks;
    dataset d = {0};
    int *true_task = NULL, *idx = NULL, *lab = NULL;
    float *feat = NULL, *scratch = NULL, *tp = NULL, *lc = NULL;
    model_ws *ws = NULL;
    int rc = request_inputs(&d, c->req, c->evaluate, &m->cfg, err);
    if (rc) return rc;
    c->n = d.n;
    if (c->evaluate) {
        true_task = malloc((size_t)d.n * sizeof *true_task);
        c->confusion = calloc((size_t)T * (T + 1), sizeof *c->confusion);
        if (!true_task || !c->confusion) {
            rc = clad_err_set(err, CLAD_ENOMEM, "out of memory");
            goto done;
        }
        if ((rc = read_true_tasks(c, true_task, d.n, err))) goto done;
    }
    if (!c->cr) {
        const route_stats *stats[ROUTE_MAX_TASKS];
        for (int t = 0; t < T; t++) stats[t] = &c->la[t]->route;
        if (!(c->built = task_router_create(stats, T, NULL, err))) {
            rc = err->code;
            goto done;
        }
    }
    const task_router *r = call_router(c);
    int chunk = d.n < ROUTE_CHUNK ? d.n : ROUTE_CHUNK;
    c->task = malloc((size_t)d.n * sizeof *c->task);
    c->label = malloc((size_t)d.n * sizeof *c->label);
    c->conf = malloc((size_t)d.n * sizeof *c->conf);
    c->second = malloc((size_t)d.n * sizeof *c->second);
    c->dist = malloc((size_t)d.n * sizeof *c->dist);
    c->label_conf = malloc((size_t)d.n * sizeof *c->label_conf);
    c->tprob = c->top_k ? malloc((size_t)d.n * T * sizeof *c->tprob) : NULL;
    feat = malloc((size_t)chunk * D * sizeof *feat);
    scratch = malloc(task_router_scratch_floats(r, chunk) * sizeof *scratch);
    tp = malloc((size_t)chunk * T * sizeof *tp);
    idx = malloc((size_t)chunk * sizeof *idx);
    lab = malloc((size_t)chunk * sizeof *lab);
    lc = malloc((size_t)chunk * sizeof *lc);
    if (!c->task || !c->label || !c->conf || !c->second || !c->dist || !c->label_conf || (c->top_k && !c->tprob) || !feat ||
        !scratch || !tp || !idx || !lab || !lc) {
        rc = clad_err_set(err, CLAD_ENOMEM, "out of memory for %d inputs", d.n);
        goto done;
    }
    /* One workspace for the base and every candidate adapter (lora or tied: those carry statistics). */
    int max_rank = 1, max_classes = m->cfg.n_classes;
    for (int t = 0; t < T; t++) {
        const adapter *a = c->la[t]->a;
        for (int li = 0; li < a->n_linear; li++) max_rank = a->rank[li] > max_rank ? a->rank[li] : max_rank;
        max_classes = a->n_classes > max_classes ? a->n_classes : max_classes;
    }
    if (!(ws = model_ws_create(m, chunk, max_rank, max_classes, false, err))) {
        rc = err->code;
        goto done;
    }
    for (int s = 0; !rc && s < d.n; s += chunk) {
        int n = d.n - s < chunk ? d.n - s : chunk;
        const float *x = d.x + (size_t)s * dim;
        route_base_features(feat, ws, m, x, n);
        task_router_score(r, feat, n, tp, c->dist + s, scratch);
        if (c->tprob) memcpy(c->tprob + (size_t)s * T, tp, (size_t)n * T * sizeof *tp);
        for (int i = 0; i < n; i++) {
            int best = 0;
            for (int t = 1; t < T; t++)
                if (tp[(size_t)i * T + t] > tp[(size_t)i * T + best]) best = t;
            c->conf[s + i] = tp[(size_t)i * T + best];
            c->second[s + i] = 0;
            for (int t = 0; t < T; t++)
                if (t != best && tp[(size_t)i * T + t] > c->second[s + i]) c->second[s + i] = tp[(size_t)i * T + t];
            c->task[s + i] = (double)c->dist[s + i] > c->threshold ? -1 : best;
            c->label[s + i] = -1;
            c->label_conf[s + i] = 0;
        }
        /* One adapter run per task that received inputs of this chunk. */
        for (int t = 0; !rc && t < T; t++) {
            int k = 0;
            for (int i = 0; i < n; i++)
                if (c->task[s + i] == t) idx[k++] = i;
            if (!k) continue;
            rc = predict_group(c, ws, t, idx, k, x, dim, lab, lc, c->class_mode, err);
            for (int i = 0; !rc && i < k; i++) {
                c->label[s + idx[i]] = lab[i];
                c->label_conf[s + idx[i]] = lc[i];
            }
        }
        if (!c->evaluate) continue;
        /* With the task given: each sample through its true task's adapter. */
        for (int t = 0; !rc && t < T; t++) {
            int k = 0;
            for (int i = 0; i < n; i++)
                if (true_task[s + i] == t) idx[k++] = i;
            if (!k) continue;
            rc = predict_group(c, ws, t, idx, k, x, dim, lab, lc, false, err);
            for (int i = 0; !rc && i < k; i++) c->given_correct += lab[i] == d.y[s + idx[i]];
        }
        for (int i = 0; i < n; i++) {
            int tt = true_task[s + i], rt = c->task[s + i];
            c->confusion[(size_t)tt * (T + 1) + (rt < 0 ? T : rt)]++;
            c->tid_correct += rt == tt;
            c->no_match += rt < 0;
            c->inferred_correct += rt >= 0 && c->label[s + i] == d.y[s + i];
        }
    }
done:
    model_ws_destroy(ws);
    dataset_finish(&d);
    free(true_task);
    free(feat);
    free(scratch);
    free(tp);
    free(idx);
    free(lab);
    free(lc);
    return rc;
}

static json_t *tasks_json(const route_call *c)
{
    json_t *list = json_array();
    for (int t = 0; t < c->n_tasks; t++)
        json_array_append_new(list, json_pack("{s:s,s:I,s:I}", "task", c->la[t]->task, "version",
                                              (json_int_t)c->la[t]->version, "routing_bytes",
                                              (json_int_t)route_stats_bytes(&c->la[t]->route)));
    return list;
}

static json_t *prediction_json(const route_call *c, int i)
{
    int T = c->n_tasks, t = c->task[i];
    json_t *o = json_object();
    if (t < 0) {
        json_object_set_new(o, "task", json_null());
        json_object_set_new(o, "reason", json_string("no_match"));
    } else {
        json_object_set_new(o, "task", json_string(c->la[t]->task));
        json_object_set_new(o, "version", json_integer(c->la[t]->version));
        json_object_set_new(o, "label", json_integer(c->label[i]));
    }
    json_object_set_new(o, "confidence", json_real(c->conf[i]));
    json_object_set_new(o, "distance", json_real(c->dist[i]));
    if (t >= 0 && c->class_mode) json_object_set_new(o, "class_confidence", json_real(c->conf[i] * c->label_conf[i]));
    /* Ambiguous: the runner-up task is at least half as likely as the chosen one. */
    json_object_set_new(o, "ambiguous", json_boolean(t >= 0 && c->second[i] >= 0.5f * c->conf[i]));
    if (c->top_k) {
        int order[ROUTE_MAX_TASKS];
        for (int k = 0; k < T; k++) order[k] = k;
        const float *p = c->tprob + (size_t)i * T;
        json_t *top = json_array();
        for (int k = 0; k < c->top_k && k < T; k++) {
            int b = k;
            for (int j = k + 1; j < T; j++)
                if (p[order[j]] > p[order[b]]) b = j;
            int tmp = order[k];
            order[k] = order[b];
            order[b] = tmp;
            json_array_append_new(top, json_pack("{s:s,s:f}", "task", c->la[order[k]]->task, "score", (double)p[order[k]]));
        }
        json_object_set_new(o, "top_k", top);
    }
    return o;
}

static json_t *evaluation_json(const route_call *c)
{
    int T = c->n_tasks;
    double n = c->n;
    json_t *names = json_array(), *conf = json_object();
    for (int t = 0; t < T; t++) json_array_append_new(names, json_string(c->la[t]->task));
    for (int t = 0; t < T; t++) {
        json_t *row = json_object();
        long total = 0;
        for (int k = 0; k <= T; k++) {
            long v = c->confusion[(size_t)t * (T + 1) + k];
            total += v;
            if (v) json_object_set_new(row, k < T ? c->la[k]->task : "no_match", json_integer(v));
        }
        if (total) json_object_set_new(conf, c->la[t]->task, row);
    }
    return json_pack("{s:i,s:f,s:f,s:f,s:I,s:o,s:o}", "samples", c->n, "task_id_accuracy", c->tid_correct / n,
                     "accuracy_task_given", c->given_correct / n, "accuracy_task_inferred", c->inferred_correct / n,
                     "no_match", (json_int_t)c->no_match, "tasks_routed", names, "confusion", conf);
}

static void cache_release(cached_router *cr)
{
    if (cr) cr->refs--;
}

/* Keeps a router the worker built, evicting the least recently used unreferenced entry when full. */
static void cache_put(route_call *c)
{
    int slot = -1;
    for (int i = 0; i < ROUTER_CACHE; i++) {
        if (router_cache[i] && !strcmp(router_cache[i]->key, c->key)) return; /* another call built it too */
        if (!router_cache[i]) slot = slot < 0 ? i : slot;
    }
    if (slot < 0) {
        for (int i = 0; i < ROUTER_CACHE; i++)
            if (!router_cache[i]->refs && (slot < 0 || router_cache[i]->used < router_cache[slot]->used)) slot = i;
        if (slot < 0) return;
        task_router_destroy(router_cache[slot]->r);
        free(router_cache[slot]);
        router_cache[slot] = NULL;
    }
    cached_router *cr = calloc(1, sizeof *cr);
    if (!cr) abort();
    snprintf(cr->key, sizeof cr->key, "%s", c->key);
    cr->r = c->built;
    cr->used = ++router_clock;
    router_cache[slot] = cr;
    c->built = NULL;
}

static void route_call_free(route_call *c)
{
    for (int t = 0; t < c->n_tasks; t++) registry_adapter_release(c->app->reg, c->la[t]);
    cache_release(c->cr);
    task_router_destroy(c->built);
    json_decref(c->skipped);
    free(c->task);
    free(c->label);
    free(c->conf);
    free(c->second);
    free(c->dist);
    free(c->label_conf);
    free(c->tprob);
    free(c->confusion);
    free(c);
}

static void route_done(void *argp, int status, const clad_err *err)
{
    route_call *c = argp;
    if (status) {
        http_reply_err(c->req, err);
    } else {
        json_t *j = json_pack("{s:s,s:o,s:O,s:f}", "base", c->la[0]->base->name, "tasks", tasks_json(c), "skipped",
                              c->skipped, "threshold", c->threshold);
        if (c->evaluate) {
            json_t *ev = evaluation_json(c);
            json_object_update(j, ev);
            json_decref(ev);
        } else {
            json_t *preds = json_array();
            for (int i = 0; i < c->n; i++) json_array_append_new(preds, prediction_json(c, i));
            json_object_set_new(j, "mode", json_string(c->class_mode ? "class" : "task"));
            json_object_set_new(j, "predictions", preds);
        }
        http_reply_json(c->req, 200, j);
    }
    if (c->built) cache_put(c);
    route_call_free(c);
}

/* Candidates are found in three steps. On the loop, from the store's small rows: each task's active
 * version (or the cached resolution of the same list). On the pool: every version not cached loads
 * (daemon/registry_load.h), all at once. On the loop again, once all are in: each is checked (its base,
 * its routing statistics) and the call goes to the pool. Nothing loads on the loop. */
typedef struct candidate_slot {
    route_call *c;
    int i;
    registry_alias_get active; /* the get of the task's active version */
} candidate_slot;

typedef struct candidate_want {
    int n, pending;                 /* pending: loads not yet answered, + 1 while they are being started */
    char task[ROUTE_MAX_TASKS][STORE_NAME_MAX + 1];
    int64_t version[ROUTE_MAX_TASKS];
    bool explicit_[ROUTE_MAX_TASKS];
    loaded_adapter *got[ROUTE_MAX_TASKS];
    candidate_slot slot[ROUTE_MAX_TASKS];
    clad_err err;                   /* the error of the first failed load, by position */
    int err_at;
    char base[STORE_NAME_MAX + 1];
    char key[STORE_NAME_MAX + 8200]; /* candidate cache key; "" when the resolution came from the cache */
    int64_t mark, feed;
} candidate_want;

/* Wants task `name` at its active version. A task without one is left out (listed explicitly, that is an
 * error). */
static int want_candidate(route_call *c, candidate_want *w, const char *name, bool explicit, clad_err *err)
{
    int64_t version = 0;
    int rc = store_alias_get(c->app->st, name, "active", &version, err);
    if (rc == CLAD_ENOTFOUND) {
        clad_err_clear(err);
        if (!explicit) return 0; /* a task without an active version is not routed to */
        store_task *t = NULL;
        rc = store_task_get(c->app->st, name, &t, err); /* names an unknown task as such */
        store_task_free(t);
        return rc ? rc : clad_err_set(err, CLAD_ENOTFOUND, "task '%s' has no active version", name);
    }
    if (rc) return rc;
    if (w->n == ROUTE_MAX_TASKS) return clad_err_set(err, CLAD_ETOOLARGE, "more than %d tasks to route to", ROUTE_MAX_TASKS);
    snprintf(w->task[w->n], sizeof w->task[0], "%s", name);
    w->version[w->n] = version;
    w->explicit_[w->n++] = explicit;
    return 0;
}

/* Takes loaded candidate la into the call, or leaves it out (listed in "skipped") or fails. */
static int add_candidate(route_call *c, const candidate_want *w, int i, loaded_adapter *la, clad_err *err)
{
    if (strcmp(la->base->name, w->base)) {
        registry_adapter_release(c->app->reg, la);
        return clad_err_set(err, CLAD_EINVAL, "task '%s' belongs to base '%s', not '%s'", w->task[i], la->base->name, w->base);
    }
    if (!la->route.dim) {
        registry_adapter_release(c->app->reg, la);
        if (w->explicit_[i])
            return clad_err_set(err, CLAD_EINVAL, "task '%s' version %lld has no routing statistics (%s)", w->task[i],
                                (long long)w->version[i], "trained before routing existed, or a fusion");
        json_array_append_new(c->skipped, json_string(w->task[i]));
        return 0;
    }
    c->la[c->n_tasks++] = la;
    return 0;
}

static int resolve_candidates(route_call *c, candidate_want *w, const char *list, clad_err *err)
{
    int rc = 0;
    if (list) {
        char buf[8192];
        if (strlen(list) >= sizeof buf) return clad_err_set(err, CLAD_EINVAL, "'tasks' is too long");
        snprintf(buf, sizeof buf, "%s", list);
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); !rc && tok; tok = strtok_r(NULL, ",", &save)) {
            if (!name_is_valid(tok)) return clad_err_set(err, CLAD_EINVAL, "task name '%s' is not valid", tok);
            for (int t = 0; t < w->n; t++)
                if (!strcmp(w->task[t], tok)) return clad_err_set(err, CLAD_EINVAL, "task '%s' is listed twice", tok);
            rc = want_candidate(c, w, tok, true, err);
        }
    } else {
        store_task *tasks = NULL;
        size_t n = 0;
        rc = store_tasks_list(c->app->st, &tasks, &n, err);
        for (size_t i = 0; !rc && i < n; i++)
            if (!strcmp(tasks[i].base, w->base) && !strcmp(tasks[i].kind, "task"))
                rc = want_candidate(c, w, tasks[i].name, false, err);
        store_tasks_free(tasks, n);
    }
    return rc;
}

/* The last resolutions of candidate lists (base and ?tasks= -> task versions that passed the checks),
 * valid while the store is unchanged (store_change_mark) and no other node changed it (the change feed's
 * position, node.h): a prediction then costs no query. Loop thread only. */
#define CANDIDATE_CACHE 4
typedef struct candidate_list {
    char key[STORE_NAME_MAX + 8200];
    int64_t mark, feed;
    int n;
    char task[ROUTE_MAX_TASKS][STORE_NAME_MAX + 1];
    int64_t version[ROUTE_MAX_TASKS];
    json_t *skipped;
    uint64_t used;
} candidate_list;
static candidate_list *candidate_cache[CANDIDATE_CACHE];
static uint64_t candidate_clock;

/* Remembers the call's candidates as the resolution of w's key, in the least recently used slot. */
static void candidate_cache_put(const route_call *c, const candidate_want *w)
{
    int slot = 0;
    for (int i = 0; i < CANDIDATE_CACHE; i++) {
        if (!candidate_cache[i]) {
            slot = i;
            break;
        }
        if (candidate_cache[i]->used < candidate_cache[slot]->used) slot = i;
    }
    candidate_list *e = candidate_cache[slot];
    if (!e && !(e = candidate_cache[slot] = calloc(1, sizeof *e))) abort();
    json_decref(e->skipped);
    snprintf(e->key, sizeof e->key, "%s", w->key);
    e->mark = w->mark;
    e->feed = w->feed;
    e->n = c->n_tasks;
    for (int t = 0; t < c->n_tasks; t++) {
        snprintf(e->task[t], sizeof e->task[t], "%s", c->la[t]->task);
        e->version[t] = c->la[t]->version;
    }
    e->skipped = json_deep_copy(c->skipped);
    e->used = ++candidate_clock;
}

/* Fills w with the versions to load: from the candidate cache, else from the store. */
static int want_candidates(route_call *c, candidate_want *w, const char *list, clad_err *err)
{
    snprintf(w->key, sizeof w->key, "%s|%s", w->base, list ? list : "*");
    w->mark = store_change_mark(c->app->st);
    w->feed = node_last_change(c->app->node);
    for (int i = 0; i < CANDIDATE_CACHE; i++) {
        candidate_list *hit = candidate_cache[i];
        if (!hit || hit->mark != w->mark || hit->feed != w->feed || strcmp(hit->key, w->key)) continue;
        hit->used = ++candidate_clock;
        json_decref(c->skipped);
        c->skipped = json_deep_copy(hit->skipped);
        for (int t = 0; t < hit->n; t++) {
            snprintf(w->task[t], sizeof w->task[t], "%s", hit->task[t]);
            w->version[t] = hit->version[t];
            w->explicit_[t] = true;  /* they passed the checks once; versions are immutable */
        }
        w->n = hit->n;
        w->key[0] = '\0';  /* already cached */
        return 0;
    }
    return resolve_candidates(c, w, list, err);
}

static void route_submit(route_call *c);

/* Every load has answered: check the candidates in order, then run the call. */
static void candidates_ready(route_call *c)
{
    candidate_want *w = c->want;
    clad_err err = {0};
    int rc = 0;
    for (int i = 0; i < w->n; i++) {
        loaded_adapter *la = w->got[i];
        w->got[i] = NULL;
        if (rc || i >= w->err_at) registry_adapter_release(c->app->reg, la);
        else rc = add_candidate(c, w, i, la, &err);
    }
    if (!rc && w->err_at < w->n) {
        err = w->err;
        rc = err.code;
    }
    if (!rc && !c->n_tasks)
        rc = clad_err_set(&err, CLAD_ECONFLICT, "base '%s' has no task with routing statistics to route to", w->base);
    if (!rc && w->key[0]) candidate_cache_put(c, w);
    c->want = NULL;
    free(w);
    if (rc) {
        http_reply_err(c->req, &err);
        route_call_free(c);
        return;
    }
    route_submit(c);
}

static void on_candidate(void *data, loaded_adapter *la, registry_found how, const clad_err *err)
{
    candidate_slot *s = data;
    candidate_want *w = s->c->want;
    (void)how;
    w->got[s->i] = la;
    if (!la && s->i < w->err_at) {
        w->err = *err;
        w->err_at = s->i;
    }
    if (--w->pending == 0) candidates_ready(s->c);
}

/* Loads every wanted version (the callbacks may run inside this call, on cache hits). */
static void candidates_load(route_call *c)
{
    candidate_want *w = c->want;
    w->err_at = w->n;
    w->pending = w->n + 1;
    for (int i = 0; i < w->n; i++) {
        w->slot[i] = (candidate_slot){.c = c, .i = i};
        registry_loader_alias(c->app->loads, &w->slot[i].active, w->task[i], "active", w->version[i], on_candidate,
                              &w->slot[i]);
    }
    if (--w->pending == 0) candidates_ready(c);
}

/* The call with its candidates: the router from the cache (or built by the worker), then the pool. */
static void route_submit(route_call *c)
{
    clad_err err = {0};
    size_t k = 0;
    for (int t = 0; t < c->n_tasks; t++)
        k += (size_t)snprintf(c->key + k, sizeof c->key - k, "%s@%lld,", c->la[t]->task, (long long)c->la[t]->version);
    for (int i = 0; i < ROUTER_CACHE; i++)
        if (router_cache[i] && !strcmp(router_cache[i]->key, c->key)) {
            c->cr = router_cache[i];
            c->cr->refs++;
            c->cr->used = ++router_clock;
        }
    if (job_queue_compute(c->app->jobs, route_work, route_done, c, &err)) {
        http_reply_err(c->req, &err);
        route_call_free(c);
    }
}

static void route_serve(http_req *req, bool evaluate)
{
    cladd *app = req->app;
    clad_err err = {0};
    route_call *c = calloc(1, sizeof *c);
    candidate_want *w = calloc(1, sizeof *w);
    if (!c || !w) abort();
    c->req = req;
    c->app = app;
    c->evaluate = evaluate;
    c->threshold = ROUTE_DEFAULT_THRESHOLD;
    c->skipped = json_array();
    c->want = w;
    long long top_k = 0;
    const char *mode = http_req_query(req, "mode");
    int rc = request_json_size_check(req, evaluate, &err);
    if (!rc) rc = query_base(app, req, w->base, sizeof w->base, &err);
    if (!rc) rc = query_int(req, "top_k", 0, ROUTE_MAX_TASKS, &top_k, &err);
    if (!rc) rc = query_float(req, "threshold", 0.0, 1e30, &c->threshold, &err);
    if (!rc && mode && strcmp(mode, "task") && strcmp(mode, "class"))
        rc = clad_err_set(&err, CLAD_EINVAL, "'mode' must be 'task' or 'class', not '%s'", mode);
    if (!rc) {
        /* Only that the base exists: its weights load with the candidates. */
        store_base *b = NULL;
        rc = store_base_get(app->st, w->base, 0, &b, &err);
        store_base_free(b);
    }
    c->class_mode = mode && !strcmp(mode, "class");
    c->top_k = (int)top_k;
    if (!rc) rc = want_candidates(c, w, http_req_query(req, "tasks"), &err);
    if (rc) {
        c->want = NULL;
        free(w);
        route_call_free(c);
        http_reply_err(req, &err);
        return;
    }
    candidates_load(c);
}

static void predict_any(http_req *req) { route_serve(req, false); }
static void evaluate_any(http_req *req) { route_serve(req, true); }

#define ROUTE_TYPES "application/json,application/octet-stream,application/x-safetensors,text/csv"
const route api_route_routes[] = {
    {"POST", "/v1/predict{?base,tasks,mode,top_k,threshold}", ROUTE_READ, predict_any, ROUTE_TYPES, "predict without a task id: route each input"},
    {"POST", "/v1/evaluate{?base,tasks,threshold}", ROUTE_READ, evaluate_any, ROUTE_TYPES, "task-id and routed accuracy on labelled data"},
    ROUTE_END,
};
