/* Accuracy without task ids, and the joint-training reference; see cl_routing.h. */
#include "bench/cl_routing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/train.h"

#define CHUNK 256
#define DEFAULT_THRESHOLD 3.0 /* the daemon's default no-match distance (daemon/api_route.c) */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int cl_global_label(const stream_task *t, int l)
{
    for (int k = t->n_transforms - 1; k >= 0; k--)
        if (t->transforms[k].op == TRANSFORM_CLASSES) return l >= 0 && l < t->transforms[k].n_keep ? t->transforms[k].keep[l] : l;
    return l;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Labels of the rows idx[0..k) of x (rows of dim) with adapter a. */
static int predict_rows(const model *base, const adapter *a, const float *x, int dim, const int *idx, int k, int *labels,
                        clad_err *err)
{
    float *xs = calloc((size_t)k * dim, sizeof *xs);
    if (!xs) return clad_err_set(err, CLAD_ENOMEM, "out of memory");
    for (int i = 0; i < k; i++) memcpy(xs + (size_t)i * dim, x + (size_t)idx[i] * dim, (size_t)dim * sizeof *xs);
    int rc = model_predict(base, a, xs, k, CHUNK, NULL, labels, err);
    free(xs);
    return rc;
}

static task_router *router_of(const cl_routing_task *tasks, int T, const route_config *cfg, clad_err *err)
{
    const route_stats **stats = malloc((size_t)T * sizeof *stats);
    if (!stats) abort();
    for (int t = 0; t < T; t++) stats[t] = tasks[t].rs;
    task_router *r = task_router_create(stats, T, cfg, err);
    free(stats);
    return r;
}

json_t *cl_routing_sweep(const model *base, const cl_routing_task *tasks, int T, clad_err *err)
{
    static const double shrinks[] = {0.001, 0.003, 0.01, 0.03, 0.1}, pools[] = {0.5, 1};
    int D = route_feature_dim(base), dim = model_config_input_dim(&base->cfg);
    /* Features of every test sample, once. */
    float **feat = calloc((size_t)T, sizeof *feat);
    model_ws *ws = model_ws_create_for(base, NULL, CHUNK, false, err);
    if (!feat || !ws) abort();
    for (int j = 0; j < T; j++) {
        feat[j] = malloc((size_t)tasks[j].test->n * D * sizeof **feat);
        if (!feat[j]) abort();
        route_base_features(feat[j], ws, base, tasks[j].test->x, tasks[j].test->n);
    }
    (void)dim;
    model_ws_destroy(ws);
    json_t *out = json_array();
    for (size_t a = 0; out && a < sizeof shrinks / sizeof *shrinks; a++)
        for (size_t b = 0; out && b < sizeof pools / sizeof *pools; b++) {
            route_config cfg = {shrinks[a], pools[b]};
            task_router *r = router_of(tasks, T, &cfg, err);
            if (!r) {
                json_decref(out);
                out = NULL;
                break;
            }
            double sum = 0;
            for (int j = 0; j < T; j++) {
                int n = tasks[j].test->n;
                float *p = malloc((size_t)n * T * sizeof *p), *sc = malloc(task_router_scratch_floats(r, n) * sizeof *sc);
                if (!p || !sc) abort();
                task_router_score(r, feat[j], n, p, NULL, sc);
                long ok = 0;
                for (int i = 0; i < n; i++) {
                    int best = 0;
                    for (int t = 1; t < T; t++)
                        if (p[(size_t)i * T + t] > p[(size_t)i * T + best]) best = t;
                    ok += best == j;
                }
                sum += (double)ok / n;
                free(p);
                free(sc);
            }
            json_array_append_new(out, json_pack("{s:f,s:f,s:f}", "shrink", cfg.shrink, "pool", cfg.pool, "task_id_acc", sum / T));
            task_router_destroy(r);
        }
    for (int j = 0; j < T; j++) free(feat[j]);
    free(feat);
    return out;
}

json_t *cl_routing_evaluate(const model *base, const cl_routing_task *tasks, int T, const route_config *cfg,
                            clad_err *err)
{
    double t0 = now_s();
    task_router *r = router_of(tasks, T, cfg, err);
    if (!r) return NULL;
    int D = route_feature_dim(base), dim = model_config_input_dim(&base->cfg);
    size_t n_all = 0;
    for (int j = 0; j < T; j++) n_all += (size_t)tasks[j].test->n;
    float *feat = malloc((size_t)CHUNK * D * sizeof *feat), *p = malloc((size_t)CHUNK * T * sizeof *p);
    float *dist = malloc((size_t)CHUNK * sizeof *dist), *all_dist = malloc(n_all * sizeof *all_dist);
    float *scratch = malloc(task_router_scratch_floats(r, CHUNK) * sizeof *scratch);
    int *routed = malloc((size_t)CHUNK * sizeof *routed), *idx = malloc((size_t)CHUNK * sizeof *idx);
    int *lab = malloc((size_t)CHUNK * sizeof *lab);
    long *conf = calloc((size_t)T * T, sizeof *conf);
    model_ws *ws = model_ws_create_for(base, NULL, CHUNK, false, err);
    json_t *per = json_array(), *out = NULL;
    double tid_sum = 0, routed_sum = 0, aware_sum = 0;
    size_t n_dist = 0, far = 0;
    int rc = ws ? 0 : CLAD_ENOMEM;
    if (!feat || !p || !dist || !all_dist || !scratch || !routed || !idx || !lab || !conf)
        rc = clad_err_set(err, CLAD_ENOMEM, "out of memory");
    for (int j = 0; !rc && j < T; j++) {
        const dataset *d = tasks[j].test;
        long tid_ok = 0, label_ok = 0;
        for (int s = 0; !rc && s < d->n; s += CHUNK) {
            int n = d->n - s < CHUNK ? d->n - s : CHUNK;
            const float *x = d->x + (size_t)s * dim;
            route_base_features(feat, ws, base, x, n);
            task_router_score(r, feat, n, p, dist, scratch);
            for (int i = 0; i < n; i++) {
                int best = 0;
                for (int t = 1; t < T; t++)
                    if (p[(size_t)i * T + t] > p[(size_t)i * T + best]) best = t;
                routed[i] = best;
                tid_ok += best == j;
                conf[(size_t)j * T + best]++;
                all_dist[n_dist++] = dist[i];
                far += (double)dist[i] > DEFAULT_THRESHOLD;
            }
            for (int t = 0; !rc && t < T; t++) {
                int k = 0;
                for (int i = 0; i < n; i++)
                    if (routed[i] == t) idx[k++] = i;
                if (!k) continue;
                rc = predict_rows(base, tasks[t].ad, x, dim, idx, k, lab, err);
                for (int i = 0; !rc && i < k; i++)
                    label_ok += cl_global_label(tasks[t].def, lab[i]) == cl_global_label(tasks[j].def, d->y[s + idx[i]]);
            }
        }
        double tid = (double)tid_ok / d->n, acc = (double)label_ok / d->n;
        tid_sum += tid;
        routed_sum += acc;
        aware_sum += tasks[j].task_aware_acc;
        json_array_append_new(per, json_pack("{s:s,s:f,s:f,s:f,s:I}", "name", tasks[j].def->name, "task_id_acc", tid,
                                             "acc_routed", acc, "acc_task_aware", tasks[j].task_aware_acc,
                                             "routing_bytes", (json_int_t)route_stats_bytes(tasks[j].rs)));
    }
    if (!rc) {
        json_t *cm = json_array(), *bytes = json_array();
        for (int j = 0; j < T; j++) {
            json_t *row = json_array();
            for (int t = 0; t < T; t++) json_array_append_new(row, json_integer(conf[(size_t)j * T + t]));
            json_array_append_new(cm, row);
            json_array_append_new(bytes, json_integer((json_int_t)route_stats_bytes(tasks[j].rs)));
        }
        qsort(all_dist, n_dist, sizeof *all_dist, cmp_float);
        out = json_pack("{s:f,s:f,s:f,s:f,s:o,s:o,s:o,s:f,s:f,s:f,s:f,s:i}", "task_id_acc", tid_sum / T, "acc_routed",
                        routed_sum / T, "acc_task_aware", aware_sum / T, "gap", (aware_sum - routed_sum) / T,
                        "per_task", per, "confusion", cm, "bytes_per_task", bytes, "distance_p50",
                        (double)all_dist[n_dist / 2], "distance_p99", (double)all_dist[(size_t)(0.99 * (double)n_dist)],
                        "no_match_at_default", (double)far / (double)n_dist, "seconds", now_s() - t0, "feature_dim", D);
        json_object_set_new(out, "shrink", json_real(cfg ? cfg->shrink : ROUTE_SHRINK));
        json_object_set_new(out, "pool", json_real(cfg ? cfg->pool : ROUTE_POOL));
        per = NULL;
    }
    json_decref(per);
    model_ws_destroy(ws);
    task_router_destroy(r);
    free(feat);
    free(p);
    free(dist);
    free(all_dist);
    free(scratch);
    free(routed);
    free(idx);
    free(lab);
    free(conf);
    return out;
}

/* Task ti's data of one split with global labels. */
static int global_data(dataset *d, const stream *s, int ti, bool train, const model *base, stream_sources *src,
                       clad_err *err)
{
    int rc = stream_task_data(d, s, ti, train, base, src, err);
    if (rc) return rc;
    int K = 0;
    for (int i = 0; i < d->n; i++) {
        d->y[i] = cl_global_label(&s->tasks[ti], d->y[i]);
        if (d->y[i] + 1 > K) K = d->y[i] + 1;
    }
    d->n_classes = K > d->n_classes ? K : d->n_classes;
    return 0;
}

json_t *cl_joint_evaluate(const stream *s, stream_sources *src, const model *base, const cl_config *cfg,
                          const train_config *tc, clad_err *err)
{
    double t0 = now_s();
    int T = s->n_tasks, n = 0, K = 0, rc = 0;
    dataset all = {0};
    for (int t = 0; !rc && t < T; t++) {
        dataset d = {0};
        if ((rc = global_data(&d, s, t, true, base, src, err))) break;
        if (!all.n) {
            rc = dataset_init(&all, d.n, d.rank, d.shape, err);
        } else {
            /* Grow the union by this task's samples. */
            dataset g = {0};
            if (!(rc = dataset_init(&g, n + d.n, all.rank, all.shape, err))) {
                memcpy(g.x, all.x, (size_t)n * all.dim * sizeof *g.x);
                memcpy(g.y, all.y, (size_t)n * sizeof *g.y);
                dataset_finish(&all);
                all = g;
            }
        }
        if (!rc) {
            memcpy(all.x + (size_t)n * all.dim, d.x, (size_t)d.n * d.dim * sizeof *d.x);
            memcpy(all.y + n, d.y, (size_t)d.n * sizeof *d.y);
            n += d.n;
            if (d.n_classes > K) K = d.n_classes;
        }
        dataset_finish(&d);
    }
    all.n_classes = K;
    cl_plan plan = {0};
    adapter *ad = NULL;
    train_result res = {0};
    if (!rc) rc = cl_plan_task(&plan, base, NULL, 0, &all, K, cfg, err);
    if (!rc && !(ad = cl_train_task(base, &plan, NULL, &all, K, cfg, tc, s->seed, NULL, NULL, &res, err)))
        rc = err ? err->code : CLAD_EINVAL;
    dataset_finish(&all);
    json_t *per = json_array(), *out = NULL;
    double sum = 0;
    for (int t = 0; !rc && t < T; t++) {
        dataset d = {0};
        eval_result ev;
        if (!(rc = global_data(&d, s, t, false, base, src, err))) {
            d.n_classes = K;
            rc = model_evaluate(base, ad, &d, 256, &ev, err);
        }
        if (!rc) {
            sum += (double)ev.accuracy;
            json_array_append_new(per, json_pack("{s:s,s:f}", "name", s->tasks[t].name, "acc", (double)ev.accuracy));
        }
        dataset_finish(&d);
    }
    if (!rc) {
        out = json_pack("{s:f,s:o,s:I,s:i,s:f,s:f}", "acc", sum / T, "per_task", per, "params",
                        (json_int_t)adapter_param_count(ad), "classes", K, "train_seconds", res.seconds, "seconds",
                        now_s() - t0);
        per = NULL;
    }
    json_decref(per);
    adapter_destroy(ad);
    cl_plan_finish(&plan);
    return out;
}
