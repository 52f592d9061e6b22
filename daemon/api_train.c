/* Training a task: POST /v1/tasks/{name}/train with a dataset body, as a job.
 *
 * Query options: base (required for a new task when more than one base exists), rank (auto | fixed:N |
 * linear, with settings as in core/ranks.h), epochs, lr, batch, seed, alpha, holdout (fraction of the
 * data kept aside to measure the new version), explain (probe and explain the ranks even under fixed:N,
 * which otherwise trains without a probe), from (a version of this task to continue from: its adapter is
 * reused and only new components train; without it a new version starts from the base), follow (stream
 * progress as NDJSON).
 *
 * The job, on a worker thread: parses the data, opens its own read-only store handle to collect the
 * signatures of the other tasks' active adapters on the same base, runs the continual-learning pipeline
 * (core/cl_pipeline.h: plan, train, signature), evaluates the adapter on the held-out part, and
 * serialises it with its signature; a version that reuses an earlier one stores only its new part and
 * needs the earlier version (daemon/version_compose.h). On the loop thread, finish stores it as a new version in one transaction (which also
 * marks the job succeeded) and points `active` at it. A cancelled, failed or interrupted job stores
 * nothing. The data is freed as soon as training ends: nothing per sample is kept.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cl_pipeline.h"
#include "core/fusion.h"
#include "core/prune.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "daemon/api.h"
#include "daemon/api_util.h"
#include "daemon/job_claim.h"
#include "daemon/log.h"
#include "daemon/train_promote.h"
#include "daemon/registry_load.h"
#include "daemon/version_compose.h"
#include "io/dataset_io.h"
#include "io/model_io.h"
#include "io/signature_io.h"

#define TRAIN_MAX_EARLIER 256

typedef struct train_arg {
    cladd *app;
    char task[STORE_NAME_MAX + 1];
    char db_path[PATH_MAX];
    int task_classes;           /* classes of an existing task, 0 for a new one */
    loaded_base *base;          /* held from submit to free (loop thread) */
    uint8_t *body;
    size_t body_len;
    char data_sha[SHA256_HEX_SIZE];
    cl_config cl;
    bool explain;               /* ?explain=1: plan (probe) even under fixed:N */
    int64_t from;               /* ?from=V: continue from version V of this task (0: start from the base) */
    train_config tc;
    uint64_t seed;
    double holdout;
    double prune;               /* 0: none; else rank pruning to this energy fraction after training */
    int tied;                   /* 0: LoRA; TIED_TL5 or TIED_TL6: Tied-LoRA of the plan's largest rank */
    int n_fuse;                 /* > 0: AdapterFusion over the active versions of these tasks */
    char fuse[FUSION_MAX_SOURCES][STORE_NAME_MAX + 1];
    adapter *fuse_src[FUSION_MAX_SOURCES]; /* loaded by the job, alive while the fusion adapter is */
    int peer_uid;
    http_req *req;              /* while the upload is hashed, before the job is submitted */
    promote_policy promote;     /* ?promote=: whether the new version becomes active */
    bool promoted;              /* the decision, recorded in lineage.promotion by run */
    int64_t job_id_stored;      /* the job's id in the store, where it is queued with its data */
    int revive_attempt;         /* a job of another node rebuilt here (api_train_revive): its start */
    json_t *params;             /* the job's public params, until it is submitted */
    /* results, from run to finish */
    int n_classes;
    uint8_t *blob;
    size_t blob_len;
    json_t *lineage, *metrics, *hparams;
    store_ref parents[FUSION_MAX_SOURCES + 2];
    size_t n_parents;
    store_ref need;             /* stored by reference: the version whose change this one reuses */
    size_t n_need;
    double wall;
} train_arg;

typedef struct earlier_set {
    int n;
    signature sig[TRAIN_MAX_EARLIER];
    const signature *ptr[TRAIN_MAX_EARLIER];
    store_ref ref[TRAIN_MAX_EARLIER];
} earlier_set;

/* Adds the signature of version v to e (false, with a warning, when it has none). */
static bool earlier_add(earlier_set *e, store *rd, const model *m, const store_version *v, clad_err *verr)
{
    if (version_signature(rd, m, v, &e->sig[e->n], verr) != 0) return false;
    e->ptr[e->n] = &e->sig[e->n];
    e->ref[e->n] = (store_ref){.version = v->version};
    snprintf(e->ref[e->n].task, sizeof e->ref[e->n].task, "%s", v->task);
    e->n++;
    return true;
}

/* Collects the signatures of the active versions of every OTHER task on this base, through a read-only
 * store handle of the worker's own (a new version of a task starts from the base, not from the task's
 * previous version), and then, with ?from=V, version V of this task (*from: its index, else -1). */
static int load_earlier(earlier_set *e, const train_arg *a, int *from, clad_err *err)
{
    e->n = 0;
    *from = -1;
    store *rd = store_open_reader(a->db_path, err);
    if (!rd) return err->code;
    store_task *tasks = NULL;
    size_t n = 0;
    int rc = store_tasks_list(rd, &tasks, &n, err);
    for (size_t i = 0; !rc && i < n && e->n < TRAIN_MAX_EARLIER - 1; i++) {
        if (strcmp(tasks[i].base, a->base->name) || strcmp(tasks[i].kind, "task") || !strcmp(tasks[i].name, a->task))
            continue;
        store_version *v = NULL;
        clad_err verr = {0};
        if (store_version_get_alias(rd, tasks[i].name, "active", STORE_WITH_BLOB, &v, &verr)) continue;
        if (!earlier_add(e, rd, a->base->m, v, &verr))
            log_warning("version %lld of task '%s' has no usable signature (%s); not compared",
                        (long long)v->version, v->task, verr.msg);
        store_version_free(v);
    }
    store_tasks_free(tasks, n);
    if (!rc && a->from) {
        store_version *v = NULL;
        rc = store_version_get(rd, a->task, a->from, STORE_WITH_BLOB, &v, err);
        if (!rc && strcmp(v->kind, "lora"))
            rc = clad_err_set(err, CLAD_EINVAL, "from: version %lld of task '%s' is a %s adapter; training continues "
                              "only from a lora one", (long long)a->from, a->task, v->kind);
        if (!rc && !earlier_add(e, rd, a->base->m, v, err)) rc = err->code;
        if (!rc) *from = e->n - 1;
        store_version_free(v);
    }
    store_close(rd);
    return rc;
}

static void earlier_finish(earlier_set *e)
{
    for (int i = 0; i < e->n; i++) signature_finish(&e->sig[i]);
    e->n = 0;
}

/* The plan of a task trained under fixed:N without a probe: the ranks and why, nothing measured. */
static json_t *plan_fixed_json(const cl_task_result *r, const char *policy, const model *m, json_t *reuse)
{
    const rank_plan *rp = &r->plan.rank;
    json_t *layers = json_object(), *ranks = json_object();
    for (int li = 0; li < m->n_linear; li++) {
        const rank_layer *L = &rp->layer[li];
        if (!L->target) continue;
        json_object_set_new(layers, m->linear[li].name, json_pack("{s:i,s:i,s:s}", "rank", L->rank, "reused", L->reused,
                                                                  "why", L->why ? L->why : ""));
        json_object_set_new(ranks, m->linear[li].name, json_integer(rp->total[li]));
    }
    return json_pack("{s:s,s:b,s:o,s:o,s:o,s:I,s:n,s:f}", "policy", policy, "planned", 0, "ranks", ranks, "layers",
                     layers, "reuse", reuse, "new_params", (json_int_t)rp->new_params, "probe", "plan_seconds", 0.0);
}

/* Auto with a start: the rank the layer trained with first, the relative size of the smallest component it
 * kept and the size a component had to reach (0 before the cut; docs/RANKS.md 6b). */
static void trained_rank_json(json_t *layer, const rank_layer *L)
{
    json_object_set_new(layer, "rank_start", json_integer(L->rank_start));
    json_object_set_new(layer, "kept_size", json_real(L->kept_size));
    json_object_set_new(layer, "keep_at", json_real(L->keep_at));
}

/* The plan as JSON: task-level numbers and, per target layer, what decided its rank. */
static json_t *plan_json(const cl_task_result *r, const rank_policy *policy, const model *m, const earlier_set *e)
{
    char pol[64];
    rank_policy_name(policy, pol, sizeof pol);
    const cl_plan *p = &r->plan;
    const rank_plan *rp = &p->rank;
    json_t *reuse = json_null();
    if (rp->reuse >= 0 && rp->reuse < e->n)
        reuse = json_pack("{s:s,s:I}", "task", e->ref[rp->reuse].task, "version", (json_int_t)e->ref[rp->reuse].version);
    if (!r->planned) return plan_fixed_json(r, pol, m, reuse);
    /* The rule compared the task with rp->n_earlier of them: none under reuse=0. */
    int n_cmp = rp->n_earlier < e->n ? rp->n_earlier : e->n;
    json_t *layers = json_object(), *ranks = json_object(), *novelty = json_object(), *distance = json_object();
    for (int li = 0; li < m->n_linear; li++) {
        const rank_layer *L = &rp->layer[li];
        if (!L->target) continue;
        json_t *ov = json_object();
        for (int t = 0; t < n_cmp; t++) {
            char key[STORE_NAME_MAX + 24];
            snprintf(key, sizeof key, "%s@%lld", e->ref[t].task, (long long)e->ref[t].version);
            json_object_set_new(ov, key, json_real(L->overlap ? L->overlap[t] : 0.0));
        }
        json_object_set_new(layers, m->linear[li].name,
                            json_pack("{s:f,s:f,s:f,s:f,s:i,s:i,s:i,s:s,s:o}", "distance", L->distance, "energy",
                                      L->energy, "gain", L->gain, "novelty", L->novelty, "directions", L->directions,
                                      "rank", L->rank, "reused", L->reused, "why", L->why ? L->why : "", "overlap", ov));
        if (L->rank_start) trained_rank_json(json_object_get(layers, m->linear[li].name), L);
        json_object_set_new(ranks, m->linear[li].name, json_integer(rp->total[li]));
        json_object_set_new(novelty, m->linear[li].name, json_real(L->novelty));
        json_object_set_new(distance, m->linear[li].name, json_real(L->distance));
    }
    json_t *overlap = json_object();
    for (int t = 0; t < n_cmp; t++) {
        char key[STORE_NAME_MAX + 24];
        snprintf(key, sizeof key, "%s@%lld", e->ref[t].task, (long long)e->ref[t].version);
        json_object_set_new(overlap, key, json_real(rp->overlap ? rp->overlap[t] : 0.0));
    }
    json_t *pj = json_pack("{s:s,s:f,s:f,s:f,s:o,s:o,s:o,s:o,s:o,s:o,s:I,s:{s:f,s:f,s:f,s:f,s:f}}", "policy", pol,
                     "distance", rp->distance, "novelty", rp->novelty, "gain", rp->gain, "distances", distance,
                     "ranks", ranks, "novelty_by_layer", novelty, "overlap", overlap, "reuse", reuse, "layers",
                     layers, "new_params", (json_int_t)rp->new_params, "probe", "loss_before",
                     (double)p->loss_before, "loss_after", (double)p->loss_after, "holdout_before",
                     (double)p->holdout_before, "holdout_after", (double)p->holdout_after, "seconds",
                     seconds_us(p->probe_seconds));
    json_object_set_new(pj, "planned", json_true());
    json_object_set_new(pj, "plan_seconds", json_real(seconds_us(r->plan_seconds)));
    return pj;
}

/* Splits d into train and held-out parts after a seeded shuffle. */
static int split(dataset *tr, dataset *ho, const dataset *d, double frac, uint64_t seed, clad_err *err)
{
    int n_ho = d->n >= 20 ? (int)floor(frac * d->n) : 0;
    int *idx = malloc(sizeof *idx * (size_t)d->n);
    if (!idx) return clad_err_set(err, CLAD_ENOMEM, "out of memory");
    for (int i = 0; i < d->n; i++) idx[i] = i;
    rng r;
    rng_init(&r, seed ^ 0x5eedULL);
    rng_shuffle(&r, idx, d->n);
    int rc = dataset_select(tr, d, idx + n_ho, d->n - n_ho, err);
    if (!rc && n_ho) rc = dataset_select(ho, d, idx, n_ho, err);
    free(idx);
    return rc;
}

/* AdapterFusion: the active versions of the named tasks stay frozen; fusion layers and the head train. */
static int fusion_train(job *j, train_arg *a, const dataset *tr, const dataset *ho, adapter **out, train_result *res,
                        clad_err *err)
{
    const model *m = a->base->m;
    adapter *src[FUSION_MAX_SOURCES] = {0};
    char names[FUSION_MAX_SOURCES][STORE_NAME_MAX + 24];
    const char *name_ptr[FUSION_MAX_SOURCES];
    int rc = 0;
    store *rd = store_open_reader(a->db_path, err);
    if (!rd) return err->code;
    for (int i = 0; !rc && i < a->n_fuse; i++) {
        store_version *v = NULL;
        rc = store_version_get_alias(rd, a->fuse[i], "active", STORE_WITH_BLOB, &v, err);
        if (!rc && strcmp(v->kind, "lora") && strcmp(v->kind, "tied"))
            rc = clad_err_set(err, CLAD_EINVAL, "task '%s' has a %s adapter; fusion composes lora or tied ones", a->fuse[i], v->kind);
        if (!rc && !(src[i] = version_adapter(rd, m, v, err))) rc = err->code;
        if (!rc) {
            snprintf(names[i], sizeof names[i], "%s@%lld", v->task, (long long)v->version);
            name_ptr[i] = names[i];
            a->parents[a->n_parents] = (store_ref){.version = v->version};
            snprintf(a->parents[a->n_parents].task, sizeof a->parents[a->n_parents].task, "%s", v->task);
            a->n_parents++;
        }
        store_version_free(v);
    }
    store_close(rd);
    adapter *fa = NULL;
    if (!rc && !(fa = adapter_fusion_create(m, (const adapter *const *)src, name_ptr, a->n_fuse, a->n_classes, err)))
        rc = err->code;
    if (!rc) {
        adapter_init(fa, m, a->seed);
        char what[96];
        snprintf(what, sizeof what, "training fusion %s", a->task);
        train_reporter rep = {j, what, 10};
        rc = train_run((model *)m, fa, tr, &a->tc, train_reporter_step, &rep, res, err);
    }
    double weights[FUSION_MAX_SOURCES] = {0};
    if (!rc) rc = fusion_mean_weights(m, fa, ho->n ? ho : tr, 256, weights, NULL, err);
    if (!rc) {
        json_t *list = json_array();
        for (int i = 0; i < a->n_fuse; i++)
            json_array_append_new(list, json_pack("{s:s,s:I,s:f}", "task", a->parents[i].task, "version",
                                                  (json_int_t)a->parents[i].version, "weight", weights[i]));
        a->lineage = json_pack("{s:{s:o}}", "fusion", "sources", list);
    }
    /* The fusion adapter borrows its sources: serialise before they go. */
    if (!rc) rc = adapter_to_buffer(fa, m, &a->blob, &a->blob_len, err);
    if (!rc) *out = fa;
    else adapter_destroy(fa);
    /* The sources are freed by the caller after evaluation (train_arg keeps them). */
    for (int i = 0; i < a->n_fuse; i++) a->fuse_src[i] = src[i];
    return rc;
}

/* Decides promotion (worker thread) and records the decision in the lineage. */
static void record_promotion(train_arg *a, const model *m, const dataset *ho, double holdout_accuracy)
{
    json_t *d = promote_judge(a->promote, a->db_path, m, a->task, ho, holdout_accuracy);
    a->promoted = json_is_true(json_object_get(d, "promoted"));
    json_object_set_new(a->lineage, "promotion", d);
}

/* Posts the plan as a job event as soon as it is made (before training), and keeps it in the lineage. */
typedef struct plan_report {
    job *j;
    train_arg *a;
    const earlier_set *e;
} plan_report;

static void plan_posted(void *ctx, const cl_task_result *r)
{
    plan_report *p = ctx;
    train_arg *a = p->a;
    json_t *pj = plan_json(r, &a->cl.policy, a->base->m, p->e);
    a->lineage = json_pack("{s:O}", "plan", pj);
    json_object_set_new(pj, "event", json_string("plan"));
    char status[200];
    const rank_plan *rp = &r->plan.rank;
    if (r->planned)
        snprintf(status, sizeof status, "planned %s: distance %.4f, novelty %.2f, %ld new LoRA parameters%s", a->task,
                 rp->distance, rp->novelty, rp->new_params, rp->reuse >= 0 ? ", reusing an earlier task" : "");
    else
        snprintf(status, sizeof status, "%s: fixed ranks without a probe, %ld new LoRA parameters%s", a->task,
                 rp->new_params, rp->reuse >= 0 ? ", continuing from an earlier version" : "");
    json_object_set_new(pj, "status", json_string(status));
    job_post(p->j, pj);
    if (rp->reuse >= 0) a->parents[a->n_parents++] = p->e->ref[rp->reuse];
}

/* Ranks as {layer: rank} for the layers where ranks[li] > 0. */
static json_t *ranks_json(const int *ranks, const model *m)
{
    json_t *o = json_object();
    for (int li = 0; li < m->n_linear; li++)
        if (ranks[li]) json_object_set_new(o, m->linear[li].name, json_integer(ranks[li]));
    return o;
}

static json_t *reused_json(const cl_task_result *r, const model *m) { return ranks_json(r->reused, m); }

/* The lineage record of rank pruning: ranks and parameters before and after. */
static json_t *prune_json(const cl_task_result *r, double tau, const model *m)
{
    long before = r->params;
    for (int li = 0; li < m->n_linear; li++)
        before += (long)(r->rank_before[li] - r->ad->rank[li]) * (m->linear[li].out + m->linear[li].in);
    return json_pack("{s:f,s:o,s:o,s:I,s:I}", "tau", tau, "ranks_before", ranks_json(r->rank_before, m), "ranks_after",
                     adapter_ranks_to_json(r->ad, m), "params_before", (json_int_t)before, "params_after",
                     (json_int_t)r->params);
}

static int train_job_run(job *j, void *argp, json_t **result, clad_err *err)
{
    train_arg *a = argp;
    const model *m = a->base->m;
    double t0 = uv_hrtime() * 1e-9;
    dataset all = {0}, tr = {0}, ho = {0};
    earlier_set *e = calloc(1, sizeof *e);
    cl_task_result cr = {0};
    adapter *ad = NULL; /* fusion only */
    route_stats rs = {0};
    int rc = body_to_dataset(&all, a->body, a->body_len, false, err);
    free(a->body); /* nothing per sample outlives the job */
    a->body = NULL;
    if (rc || (rc = job_check_stop(j, "reading the data", err))) goto done;
    if ((rc = inputs_check(&all, &m->cfg, err)) || (rc = train_check_data(m, NULL, &all, false, err))) goto done;
    a->n_classes = a->task_classes ? a->task_classes : all.n_classes;
    if (all.n_classes > a->n_classes) {
        rc = clad_err_set(err, CLAD_EINVAL, "labels go up to %d but task '%s' has %d classes", all.n_classes - 1,
                          a->task, a->n_classes);
        goto done;
    }
    if ((rc = split(&tr, &ho, &all, a->holdout, a->seed, err)) || (rc = job_check_stop(j, "reading the data", err)))
        goto done;
    dataset_finish(&all);
    char dstatus[160];
    snprintf(dstatus, sizeof dstatus, "%s: %d training and %d held-out samples, %d classes", a->task, tr.n, ho.n, a->n_classes);
    job_post(j, json_pack("{s:s,s:i,s:i,s:i,s:s}", "event", "data", "train", tr.n, "holdout", ho.n, "classes",
                          a->n_classes, "status", dstatus));

    if (a->n_fuse) {
        train_result fres;
        if ((rc = fusion_train(j, a, &tr, &ho, &ad, &fres, err))) goto done;
        eval_result fev = {0};
        if (ho.n && (rc = job_evaluate(j, m, ad, &ho, &fev, err))) goto done;
        a->metrics = json_pack("{s:o,s:o,s:i,s:I,s:f}", "holdout_accuracy", ho.n ? json_real(fev.accuracy) : json_null(),
                               "holdout_loss", ho.n ? json_real(fev.loss) : json_null(), "holdout_samples", ho.n,
                               "adapter_params", (json_int_t)adapter_param_count(ad), "train_seconds", seconds_us(fres.seconds));
        record_promotion(a, m, &ho, fev.accuracy);
        a->wall = uv_hrtime() * 1e-9 - t0;
        *result = json_pack("{s:s,s:O,s:O}", "task", a->task, "fusion", json_object_get(a->lineage, "fusion"), "metrics",
                            a->metrics);
        goto done;
    }
    int from = -1;
    if ((rc = load_earlier(e, a, &from, err))) goto done;
    if (a->cl.policy.kind != RANK_FIXED || a->explain) {
        char pstatus[160];
        snprintf(pstatus, sizeof pstatus, "probing %s against the base and %d earlier adapter(s)", a->task, e->n);
        job_post(j, json_pack("{s:s,s:i,s:s}", "event", "probe", "earlier", e->n, "status", pstatus));
    }
    if ((rc = job_check_stop(j, "loading earlier adapters", err))) goto done;
    /* The probe and the pipeline poll the job's stop flag between their steps and phases. */
    a->cl.probe.stop = job_stop_hook;
    a->cl.probe.stop_ctx = j;
    char what[96];
    snprintf(what, sizeof what, "training %s", a->task);
    train_reporter rep = {j, what, 10};
    plan_report prep = {j, a, e};
    cl_task_options opt;
    cl_task_options_default(&opt);
    opt.explain = a->explain;
    opt.from = from;
    opt.tied = a->tied;
    opt.prune = a->prune;
    opt.init_seed = a->seed;
    opt.on_step = train_reporter_step;
    opt.ctx = &rep;
    opt.on_plan = plan_posted;
    opt.plan_ctx = &prep;
    if ((rc = cl_task_run(&cr, m, e->ptr, e->n, &tr, a->n_classes, &a->cl, &a->tc, &opt, err))) goto done;
    /* Under auto with a start, training cut the ranks: the lineage keeps the plan with the kept ones. */
    if (cr.planned && rank_policy_trains_ranks(&a->cl.policy))
        json_object_set_new(a->lineage, "plan", plan_json(&cr, &a->cl.policy, m, e));
    if (cr.pruned) json_object_set_new(a->lineage, "prune", prune_json(&cr, a->prune, m));
    eval_result ev_tr, ev_ho = {0};
    if ((rc = job_evaluate(j, m, cr.ad, &tr, &ev_tr, err))) goto done;
    if (ho.n && (rc = job_evaluate(j, m, cr.ad, &ho, &ev_ho, err))) goto done;
    int n_holdout = ho.n;
    record_promotion(a, m, &ho, ev_ho.accuracy);
    /* Routing statistics of the frozen base's features (core/route.h): aggregates, taken before the data
     * goes. A task too small for them is stored without and left out of routing. */
    clad_err rerr = {0};
    if (route_stats_compute(&rs, m, &tr, a->n_classes, ROUTE_COMPONENTS, &rerr))
        log_warning("task '%s' gets no routing statistics: %s", a->task, rerr.msg);
    dataset_finish(&tr);
    dataset_finish(&ho);
    a->metrics = json_pack("{s:f,s:f,s:o,s:o,s:i,s:I,s:f}", "train_accuracy", (double)ev_tr.accuracy, "train_loss",
                           (double)ev_tr.loss, "holdout_accuracy", ev_ho.n ? json_real(ev_ho.accuracy) : json_null(),
                           "holdout_loss", ev_ho.n ? json_real(ev_ho.loss) : json_null(), "holdout_samples", ev_ho.n,
                           "adapter_params", (json_int_t)cr.params, "train_seconds", seconds_us(cr.train_seconds));
    json_object_set_new(a->metrics, "new_params", json_integer((json_int_t)cr.new_params));
    json_object_set_new(a->metrics, "plan_seconds", json_real(seconds_us(cr.plan_seconds)));
    char estatus[160];
    snprintf(estatus, sizeof estatus, "%s: train accuracy %.4f, held-out accuracy %.4f", a->task, (double)ev_tr.accuracy,
             n_holdout ? (double)ev_ho.accuracy : (double)NAN);
    /* Training is over: done = total, so the job's last progress still reads as a finished bar. */
    job_post(j, json_pack("{s:s,s:O,s:s,s:I,s:I}", "event", "evaluation", "metrics", a->metrics, "status", estatus,
                          "done", (json_int_t)cr.train.steps, "total", (json_int_t)cr.train.steps));
    if (rs.dim) json_object_set_new(a->metrics, "routing_bytes", json_integer((json_int_t)route_stats_bytes(&rs)));
    if ((rc = job_check_stop(j, "computing the signature", err))) goto done;
    if (cr.part) {
        /* Stored by reference: the new components and head; the reused version becomes a runtime need. */
        a->need = e->ref[cr.reuse];
        a->n_need = 1;
        char reuses[STORE_NAME_MAX + 24];
        snprintf(reuses, sizeof reuses, "%s@%lld", a->need.task, (long long)a->need.version);
        json_object_set_new(a->lineage, "stored_by_reference", json_pack("{s:s,s:I,s:o}", "task", a->need.task,
                                                                         "version", (json_int_t)a->need.version,
                                                                         "reused", reused_json(&cr, m)));
        rc = adapter_blob_build_part(cr.part, m, &cr.sig, rs.dim ? &rs : NULL, cr.reused, reuses, &a->blob,
                                     &a->blob_len, err);
    } else {
        rc = adapter_blob_build_routed(cr.ad, m, &cr.sig, rs.dim ? &rs : NULL, &a->blob, &a->blob_len, err);
    }
    if (rc) goto done;
    a->wall = uv_hrtime() * 1e-9 - t0;
    *result = json_pack("{s:s,s:O,s:O,s:I,s:I,s:f}", "task", a->task, "ranks",
                        json_object_get(json_object_get(a->lineage, "plan"), "ranks"), "metrics", a->metrics,
                        "params", (json_int_t)cr.params, "new_params", (json_int_t)cr.new_params, "plan_seconds",
                        seconds_us(cr.plan_seconds));
done:
    cl_task_result_finish(&cr);
    route_stats_finish(&rs);
    adapter_destroy(ad);
    if (e) earlier_finish(e);
    free(e);
    dataset_finish(&all);
    dataset_finish(&tr);
    dataset_finish(&ho);
    return rc;
}

static int train_job_finish(job *j, void *argp, int status, clad_err *err)
{
    train_arg *a = argp;
    cladd *app = a->app;
    if (status) return status;
    store_task *t = NULL;
    /* A new task is created by store_version_put, in the transaction of its first version. */
    store_task_in ti = {.name = a->task, .base = a->base->name, .kind = "task", .n_classes = a->n_classes};
    if (store_task_get(app->st, a->task, &t, NULL) == 0) {
        /* The previous active version is this one's parent (a retraining of the same task). */
        int64_t prev = 0;
        if (store_alias_get(app->st, a->task, "active", &prev, NULL) == 0 && a->n_parents < 2 &&
            !(a->n_parents && !strcmp(a->parents[0].task, a->task) && a->parents[0].version == prev)) {
            a->parents[a->n_parents] = (store_ref){.version = prev};
            snprintf(a->parents[a->n_parents].task, sizeof a->parents[a->n_parents].task, "%s", a->task);
            a->n_parents++;
        }
        store_task_free(t);
    }
    char *lineage = json_dumps(a->lineage, JSON_COMPACT), *metrics_text = json_dumps(a->metrics, JSON_COMPACT);
    char *hparams = json_dumps(a->hparams, JSON_COMPACT);
    store_version_in vi = {
        .task = a->task, .kind = a->n_fuse ? "fusion" : a->tied ? "tied" : "lora", .adapter = a->blob, .adapter_size = a->blob_len,
        .parents = a->parents, .n_parents = a->n_parents, .needs = a->n_need ? &a->need : a->parents,
        .n_needs = a->n_need ? a->n_need : (size_t)a->n_fuse,
        .base_sha256 = a->base->sha256,
        .data_sha256 = a->data_sha, .lineage_json = lineage, .hparams_json = hparams, .metrics_json = metrics_text,
        .seed = a->seed, .wall_time_s = a->wall, .job_id = app_store_job_id(app, j), .create_task = &ti,
        .flags = a->promoted ? 0 : STORE_PUT_KEEP_ACTIVE,
    };
    int64_t version = 0;
    int rc = store_version_put(app->st, &vi, a->peer_uid, &version, err);
    free(lineage);
    free(metrics_text);
    free(hparams);
    if (rc == 0) {
        log_info("task '%s' version %lld stored (%zu bytes)", a->task, (long long)version, a->blob_len);
        json_t *res = job_run_result(j);
        if (res) json_object_set_new(res, "version", json_integer(version));
        if (res) json_object_set_new(res, "promoted", json_boolean(a->promoted));
        clad_err perr = {0};
        if (!a->promoted &&
            promote_park(app, a->task, version, json_object_get(a->lineage, "promotion"), a->peer_uid, &perr))
            log_warning("version %lld of '%s' not aliased as candidate: %s", (long long)version, a->task, perr.msg);
    }
    return rc;
}

static void train_arg_free(void *argp)
{
    train_arg *a = argp;
    for (int i = 0; i < a->n_fuse; i++) adapter_destroy(a->fuse_src[i]);
    if (a->base) registry_base_release(a->app->reg, a->base);
    free(a->body);
    free(a->blob);
    json_decref(a->lineage);
    json_decref(a->metrics);
    json_decref(a->hparams);
    json_decref(a->params);
    free(a);
}

static const job_kind train_kind = {"train", train_job_run, train_job_finish, train_arg_free};

/* The base of a new task: ?base=, or the only base there is. */
static int parse_options(train_arg *a, const http_req *req, clad_err *err)
{
    train_config_default(&a->tc);
    a->tc.epochs = 2;
    a->seed = 1;
    a->holdout = 0.1;
    long long epochs = a->tc.epochs, batch = a->tc.batch, seed = 1;
    double lr = a->tc.lr, alpha = a->cl.alpha, holdout = a->holdout, prune = 0;
    int rc = query_int(req, "epochs", 1, 1000, &epochs, err);
    if (!rc) rc = query_int(req, "batch", 1, 4096, &batch, err);
    if (!rc) rc = query_int(req, "seed", 0, INT64_MAX, &seed, err);
    if (!rc) rc = query_float(req, "lr", 1e-7, 1.0, &lr, err);
    if (!rc) rc = query_float(req, "alpha", 1e-3, 1e4, &alpha, err);
    if (!rc) rc = query_float(req, "holdout", 0.0, 0.5, &holdout, err);
    if (!rc) rc = query_float(req, "prune", 0.5, 1.0, &prune, err);
    if (!rc) rc = promote_parse(req, &a->promote, err);
    long long from = 0;
    if (!rc) rc = query_int(req, "from", 1, INT64_MAX, &from, err);
    if (!rc) rc = http_req_query_bool(req, "explain", &a->explain, err);
    if (!rc && from && (a->tied || http_req_query(req, "fuse_with")))
        rc = clad_err_set(err, CLAD_EINVAL, "from continues a LoRA version; kind=tl5/tl6 and fuse_with do not apply");
    if (!rc && from && !a->task_classes)
        rc = clad_err_set(err, CLAD_ENOTFOUND, "from: task '%s' has no version %lld (it has no version yet)", a->task, from);
    a->from = from;
    const char *kind = http_req_query(req, "kind");
    if (!rc && kind) {
        if (!strcmp(kind, "tl5")) a->tied = TIED_TL5;
        else if (!strcmp(kind, "tl6")) a->tied = TIED_TL6;
        else if (strcmp(kind, "lora")) rc = clad_err_set(err, CLAD_EINVAL, "query parameter 'kind' must be lora, tl5 or tl6");
    }
    if (!rc && a->tied && http_req_query(req, "prune"))
        rc = clad_err_set(err, CLAD_EINVAL, "rank pruning applies to LoRA adapters, not Tied-LoRA");
    const char *fuse = http_req_query(req, "fuse_with");
    if (!rc && fuse) {
        char buf[1200];
        snprintf(buf, sizeof buf, "%s", fuse);
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); !rc && t; t = strtok_r(NULL, ",", &save)) {
            if (a->n_fuse == FUSION_MAX_SOURCES) rc = clad_err_set(err, CLAD_EINVAL, "at most %d tasks to fuse", FUSION_MAX_SOURCES);
            else if (!name_is_valid(t)) rc = clad_err_set(err, CLAD_EINVAL, "fuse_with: '%s' is not a task name", t);
            else snprintf(a->fuse[a->n_fuse++], sizeof a->fuse[0], "%s", t);
        }
        if (!rc && !a->n_fuse) rc = clad_err_set(err, CLAD_EINVAL, "fuse_with lists no task");
        if (!rc && (a->tied || http_req_query(req, "prune")))
            rc = clad_err_set(err, CLAD_EINVAL, "fuse_with trains a fusion adapter; kind and prune do not apply");
    }
    const char *rank = http_req_query(req, "rank");
    if (!rc && rank) rc = rank_policy_parse(&a->cl.policy, rank, err);
    if (rc) return rc;
    a->tc.epochs = (int)epochs;
    a->tc.batch = (int)batch;
    a->tc.lr = (float)lr;
    a->tc.seed = (uint64_t)seed;
    a->seed = (uint64_t)seed;
    a->cl.alpha = (float)alpha;
    a->cl.probe.seed = (uint64_t)seed;
    a->holdout = holdout;
    a->prune = prune < 1.0 ? prune : 0;
    char pol[64];
    rank_policy_name(&a->cl.policy, pol, sizeof pol);
    a->hparams = json_pack("{s:i,s:i,s:f,s:I,s:f,s:f,s:s,s:f,s:f,s:o}", "epochs", a->tc.epochs, "batch", a->tc.batch,
                           "lr", (double)a->tc.lr, "seed", (json_int_t)seed, "alpha", (double)a->cl.alpha, "holdout",
                           holdout, "rank", pol, "weight_decay", (double)a->tc.weight_decay, "clip", (double)a->tc.clip,
                           "prune", a->prune > 0 ? json_real(a->prune) : json_null());
    json_object_set_new(a->hparams, "promote", json_string(promote_policy_name(a->promote)));
    json_object_set_new(a->hparams, "explain", json_boolean(a->explain));
    json_object_set_new(a->hparams, "from", a->from ? json_integer(a->from) : json_null());
    json_object_set_new(a->hparams, "kind", json_string(a->n_fuse ? "fusion" : a->tied == TIED_TL5 ? "tl5"
                                                        : a->tied == TIED_TL6 ? "tl6" : "lora"));
    return 0;
}

/* Pool thread: the upload's hash (the data's identity in the version's record), then the job and its
 * data queued in the store in one transaction, where every node can claim it. Uploads may be 512 MiB:
 * neither step runs on the loop. */
static int train_hash_work(void *argp, clad_err *err)
{
    train_arg *a = argp;
    sha256_hex(a->body, a->body_len, a->data_sha);
    json_object_set_new(a->params, "data_sha256", json_string(a->data_sha));
    char *request = json_dumps(a->params, JSON_COMPACT);
    store *w = request ? store_open_worker(a->db_path, err) : NULL;
    int rc = !request ? clad_err_set(err, CLAD_ENOMEM, "out of memory") : !w ? err->code
             : store_job_create_with_data(w, "train", a->task, a->base->name, request, a->body, a->body_len,
                                          a->peer_uid, &a->job_id_stored, err);
    store_close(w);
    free(request);
    return rc;
}

/* The request's query options (not follow), which another node parses again to run the job. */
static json_t *query_json(const http_req *req)
{
    json_t *q = json_object();
    for (size_t i = 0; i < req->n_query; i++)
        if (strcmp(req->query_params[i].name, "follow"))
            json_object_set_new(q, req->query_params[i].name, json_string(req->query_params[i].value));
    return q;
}

/* Loop thread: the job is in the store; queue it here too (this node claims it when its lane is free). */
static void train_hash_done(void *argp, int status, const clad_err *herr)
{
    train_arg *a = argp;
    cladd *app = a->app;
    http_req *req = a->req;
    a->req = NULL;
    app->n_storing--;
    clad_err err = {0};
    if (status) {
        err = *herr;
    } else {
        app_link_add(app, (uint64_t)a->job_id_stored); /* its record exists: the queued hook adds none */
        job_spec js = {.kind = &train_kind, .lane = a->base->name, .task = a->task, .arg = a,
                       .params = json_incref(a->params), .owner_uid = req->peer->uid,
                       .id = (uint64_t)a->job_id_stored};
        job *j = NULL;
        if (job_submit(app->jobs, &js, &j, &err) == 0) {
            api_reply_job(req, j, 202);
            return;
        }
        /* Refused here (queue full, stopping): the stored job ends with the reason, and its data goes. */
        clad_err ferr = {0};
        if (store_job_mark_failed(app->st, a->job_id_stored, err.code, err.msg, &ferr) != 0)
            log_warning("job %lld: cannot record its refusal: %s", (long long)a->job_id_stored, ferr.msg);
        app_link_drop(app, app_link_find(app, (uint64_t)a->job_id_stored));
    }
    train_arg_free(a);
    http_reply_err(req, &err);
}

static void train_on_base(void *data, loaded_base *b, const clad_err *berr);

static void train_post(http_req *req)
{
    cladd *app = req->app;
    const char *task = http_req_param(req, "name");
    if (!require_name(req, "task", task)) return;
    clad_err err = {0};
    char base[STORE_NAME_MAX + 1];
    train_arg *a = calloc(1, sizeof *a);
    if (!a) {
        http_reply_error(req, CLAD_ENOMEM, "out of memory");
        return;
    }
    a->app = app;
    a->peer_uid = app_peer_uid(req);
    snprintf(a->task, sizeof a->task, "%s", task);
    snprintf(a->db_path, sizeof a->db_path, "%s", app->db_path);
    store_task *t = NULL;
    int rc = 0;
    if (store_task_get(app->st, task, &t, NULL) == 0) {
        if (strcmp(t->kind, "task")) rc = clad_err_set(&err, CLAD_ECONFLICT, "'%s' is a %s, not a trainable task", task, t->kind);
        const char *qb = http_req_query(req, "base");
        if (!rc && qb && strcmp(qb, t->base))
            rc = clad_err_set(&err, CLAD_ECONFLICT, "task '%s' belongs to base '%s', not '%s'", task, t->base, qb);
        snprintf(base, sizeof base, "%s", t->base);
        a->task_classes = t->n_classes;
        store_task_free(t);
    } else {
        rc = query_base(app, req, base, sizeof base, &err);
    }
    if (rc) {
        train_arg_free(a);
        http_reply_err(req, &err);
        return;
    }
    a->req = req;
    registry_loader_base(app->loads, base, train_on_base, a); /* a cold base loads on the pool */
}

/* The rest of train_post, once the base is loaded (b NULL: berr says why not). */
static void train_on_base(void *data, loaded_base *b, const clad_err *berr)
{
    train_arg *a = data;
    cladd *app = a->app;
    http_req *req = a->req;
    clad_err err = {0};
    int rc = 0;
    if (!b) {
        err = *berr;
        rc = err.code;
    } else {
        a->base = b;
        cl_config_default(&a->cl, a->base->m);
        rc = parse_options(a, req, &err);
    }
    /* fuse_with names tasks of this base: refused now (404, 409), not by a job that fails later. */
    for (int i = 0; !rc && i < a->n_fuse; i++) {
        store_task *t = NULL;
        if ((rc = store_task_get(app->st, a->fuse[i], &t, &err))) break;
        if (strcmp(t->base, b->name))
            rc = clad_err_set(&err, CLAD_ECONFLICT, "fuse_with: task '%s' is on base '%s', not '%s'", t->name, t->base, b->name);
        store_task_free(t);
    }
    if (!rc && !req->body_len) rc = clad_err_set(&err, CLAD_EINVAL, "the request has no training data");
    /* The job keeps the upload itself (uploads may be 512 MiB: no copy), hashed on the pool first so
     * that no work proportional to the upload runs on the loop. */
    if (!rc) {
        a->body = (uint8_t *)http_req_take_body(req, &a->body_len);
        a->params = json_pack("{s:s,s:s,s:I,s:s,s:O,s:o}", "task", a->task, "base", a->base->name, "bytes",
                              (json_int_t)a->body_len, "data_sha256", "", "options", a->hparams, "query",
                              query_json(req));
        if (!a->params) rc = clad_err_set(&err, CLAD_ENOMEM, "out of memory");
    }
    if (!rc) {
        rc = job_queue_compute(app->jobs, train_hash_work, train_hash_done, a, &err);
        if (!rc) app->n_storing++;
    }
    if (rc) {
        train_arg_free(a);
        http_reply_err(req, &err);
    }
}

/* The rest of api_train_revive, once the base is loaded (b NULL: berr says why not). */
static void revive_on_base(void *data, loaded_base *b, const clad_err *berr)
{
    train_arg *a = data;
    clad_err err = {0};
    int rc = 0;
    if (!b) {
        err = *berr;
        rc = err.code ? err.code : CLAD_EINTERNAL;
    } else {
        a->base = b;
        cl_config_default(&a->cl, b->m);
        /* The options as the accepting node parsed them from its request. */
        http_req q = {0};
        const char *name;
        json_t *v;
        json_object_foreach(json_object_get(a->params, "query"), name, v) {
            if (q.n_query < HTTP_MAX_QUERY && json_is_string(v))
                q.query_params[q.n_query++] = (http_param){name, json_string_value(v)};
        }
        rc = parse_options(a, &q, &err);
    }
    if (rc == 0) {
        job_spec js = {.kind = &train_kind, .lane = b->name, .task = a->task, .arg = a,
                       .params = json_incref(a->params), .owner_uid = (uid_t)a->peer_uid,
                       .id = (uint64_t)a->job_id_stored};
        if (job_claim_resubmit(a->app, &js, a->revive_attempt) == 0) return;
    } else {
        job_claim_revive_failed(a->app, a->job_id_stored, &err);
    }
    train_arg_free(a);
}

void api_train_revive(cladd *app, const store_job *sj, void *data, size_t data_len)
{
    clad_err err = {0};
    train_arg *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->app = app;
    a->body = data;
    a->body_len = data_len;
    a->peer_uid = sj->peer_uid;
    a->job_id_stored = sj->id;
    a->revive_attempt = sj->attempt;
    snprintf(a->db_path, sizeof a->db_path, "%s", app->db_path);
    if (!(a->params = job_claim_request(app, sj))) {
        train_arg_free(a);
        return;
    }
    const char *task = json_string_value(json_object_get(a->params, "task"));
    const char *base = json_string_value(json_object_get(a->params, "base"));
    const char *sha = json_string_value(json_object_get(a->params, "data_sha256"));
    if (!task || !base || !sha || strlen(sha) != SHA256_HEX_SIZE - 1 || !data) {
        clad_err_set(&err, CLAD_EINVAL, "the stored training request is incomplete (task, base, data)");
        job_claim_revive_failed(app, sj->id, &err);
        train_arg_free(a);
        return;
    }
    snprintf(a->task, sizeof a->task, "%s", task);
    memcpy(a->data_sha, sha, SHA256_HEX_SIZE);
    store_task *t = NULL;
    if (store_task_get(app->st, task, &t, NULL) == 0) a->task_classes = t->n_classes;
    store_task_free(t);
    registry_loader_base(app->loads, base, revive_on_base, a);
}

const route api_train_routes[] = {
    {"POST", "/v1/tasks/{name}/train{?base,rank,epochs,batch,lr,seed,alpha,holdout,kind,fuse_with,prune,promote,explain,from,follow}", ROUTE_WRITE, train_post,
     "application/octet-stream,application/x-safetensors,text/csv", "train a new version of a task (job)"},
    ROUTE_END,
};
