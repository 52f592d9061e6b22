/* clad-bench cl: runs a continual-learning stream under one rank policy (or sequential full fine-tuning)
 * and reports the accuracy matrix, the standard metrics and every rank decision as JSON.
 * clad-bench export: writes one task's data of a stream as a safetensors dataset.
 *
 * Per task, in order: build its train and test data; run the pipeline the daemon's training job runs
 * (core/cl_pipeline.h: plan, train, signature); measure the base's linear probe on it (for forward
 * transfer); DROP its training data; then evaluate every task learned so far. At the end, every earlier task's test probabilities are recomputed and
 * compared byte for byte with those taken right after it was learned, and the base with its initial copy.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench/bench.h"
#include "bench/cl_routing.h"
#include "bench/stream.h"
#include "core/cl_pipeline.h"
#include "core/prune.h"
#include "core/metrics.h"
#include "io/dataset_io.h"
#include "io/model_io.h"
#include "io/safetensors.h"
#include "io/signature_io.h"

typedef struct cl_args {
    const char *stream_path, *policy, *cache, *save, *probe;
    int tied;                 /* 0: lora; TIED_TL5 / TIED_TL6: Tied-LoRA at the plan's largest rank */
    double prune;             /* > 0: rank pruning of each trained LoRA to this energy fraction */
    bool quick, json, explain, verbose;
    bool default_targets;     /* --targets default: only model_linear_is_default_target (a PEFT user's set) */
    const char *init;         /* --init pull | kaiming; NULL: cl_config's default (kaiming) */
    bool routing;             /* keep routing statistics and report accuracy without task ids */
    bool joint;               /* also train one adapter on all tasks at once (the joint reference) */
    bool route_sweep;         /* task-id accuracy over a grid of the router's settings */
    route_config route;       /* the router's settings (--route-shrink, --route-pool) */
    int route_components;     /* components per class of the routing statistics (--route-components) */
    unsigned long long seed;  /* --seed: overrides the stream's seed (data, shuffling, initialisation); 0 = keep */
} cl_args;

typedef struct task_state {
    dataset test;
    int K;                    /* classes of the task */
    adapter *ad;              /* adapter policies: the task's adapter; full-ft: its head (rank 0 everywhere) */
    signature sig;
    bool has_sig;
    route_stats rs;           /* --routing: statistics of the frozen base's features (core/route.h) */
    bool has_rs;
    cl_plan plan;
    bool has_plan;
    bool planned;             /* false: fixed:N without --explain, no probe ran */
    double plan_seconds;
    long new_params;          /* what the task stores: its new part when it reuses by reference */
    float *probs;             /* (n_test, K) test probabilities right after the task was learned */
    double train_seconds, head_only;
    long params;
    bool pruned;
    int rank_before[MODEL_MAX_LINEARS]; /* the trained adapter's ranks before pruning */
} task_state;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage_cl(FILE *f)
{
    fprintf(f, "usage: clad-bench cl --stream FILE [--policy auto|fixed:N|linear|full-ft] [--quick] [--json]\n"
               "                     [--explain] [--cache DIR] [-v]\n"
               "  --policy   rank policy, with optional settings: auto:theta=0.004,r_max=32,budget=N (default auto)\n"
               "  --quick    small subsets so the whole stream runs in about a minute\n"
               "  --explain  add every per-layer decision (distance, energy, gain, overlap, why) to the JSON\n"
               "  --cache    keep pretrained bases and the base's linear-probe accuracies in DIR\n"
               "  --save     write everything the learner retains (adapters, signatures, the JSON) to DIR\n"
               "  --probe    probe settings: samples=N,holdout=N,steps=N,batch=N,lr=X,points=N\n"
               "  --init     kaiming (default: PEFT's init) or pull (auto: new factors start from the probe's pull)\n"
               "  --targets  all (default: every linear but the head) or default (qkv, proj, fc1, fc2 only)\n"
               "  --kind     lora (default), tied-tl5 or tied-tl6 (Tied-LoRA at the plan's largest rank)\n"
               "  --routing  keep routing statistics per task and report task-id accuracy and accuracy without\n"
               "             task ids beside the task-aware accuracy (\"routing\" in the JSON)\n"
               "  --joint    also train one adapter on every task's data at once (\"joint\": the upper reference)\n"
               "  --route-shrink G, --route-pool P   the router's settings (core/route.h; defaults 0.001 and 1)\n"
               "  --route-sweep  task-id accuracy over a grid of both settings (\"routing.sweep\")\n"
               "  --route-components K   sub-clusters per class in the routing statistics (default 1)\n"
               "  --seed N   override the stream's seed (its data order, shuffling and initialisation)\n"
               "  --prune    rank-prune every trained LoRA to this energy fraction; tasks then report\n"
               "             ranks_before_pruning and ranks_after_pruning\n");
}

/* ---- helpers ------------------------------------------------------------------------------------------ */

/* The frozen base's features (the head's input) of every sample: run the base with an identity head. */
static int base_features(dataset *out, const model *m, const dataset *d, clad_err *err)
{
    const model_linear *H = &m->linear[m->n_linear - 1];
    int D = H->in, B = 256;
    adapter *id = adapter_create(m, NULL, 1.0f, D, err);
    if (!id) return err ? err->code : CLAD_EINVAL;
    float *w = param_set_ptr(&id->params, id->head_w);
    for (int i = 0; i < D; i++) w[(size_t)i * D + i] = 1.0f;
    int rc = dataset_init(out, d->n, 1, (int[]){D}, err);
    model_ws *ws = rc ? NULL : model_ws_create(m, B, 1, D, false, err);
    if (!rc && !ws) rc = err ? err->code : CLAD_ENOMEM;
    for (int s = 0; !rc && s < d->n; s += B) {
        int n = d->n - s < B ? d->n - s : B;
        model_forward(ws, m, id, d->x + (size_t)s * d->dim, NULL, n);
        memcpy(out->x + (size_t)s * D, model_ws_logits(ws), (size_t)n * D * sizeof(float));
    }
    if (!rc) {
        memcpy(out->y, d->y, (size_t)d->n * sizeof *d->y);
        out->n_classes = d->n_classes;
    }
    model_ws_destroy(ws);
    adapter_destroy(id);
    return rc;
}

/* Accuracy on test of the base with only a fresh head trained on train (a linear probe of its features),
 * trained with the same settings as the adapters. */
static int head_only_accuracy(double *acc, const model *base, const dataset *train, const dataset *test, int K,
                              const train_config *tc, uint64_t seed, clad_err *err)
{
    dataset ftr = {0}, fte = {0};
    model *lin = NULL;
    int rc = base_features(&ftr, base, train, err);
    if (!rc) rc = base_features(&fte, base, test, err);
    if (!rc) {
        model_config c = {.kind = MODEL_MLP, .input_dim = ftr.dim, .n_hidden = 0, .n_classes = K};
        lin = model_create(&c, err);
        if (!lin) rc = err ? err->code : CLAD_EINVAL;
    }
    if (!rc) {
        model_init_random(lin, seed);
        ftr.n_classes = fte.n_classes = K;
        rc = train_run(lin, NULL, &ftr, tc, NULL, NULL, NULL, err);
    }
    eval_result ev = {0};
    if (!rc) rc = model_evaluate(lin, NULL, &fte, 256, &ev, err);
    if (!rc) *acc = ev.accuracy;
    model_destroy(lin);
    dataset_finish(&ftr);
    dataset_finish(&fte);
    return rc;
}

/* Sequential full fine-tuning of the shared backbone with task head `head` (an adapter of rank 0): the
 * backbone and the head train together; the result goes back into shared and head. */
static int full_ft_train(model *shared, adapter *head, const dataset *d, const train_config *tc, train_result *res,
                         clad_err *err)
{
    model_config c = shared->cfg;
    c.n_classes = head->n_classes;
    model *mj = model_create(&c, err);
    if (!mj) return err ? err->code : CLAD_EINVAL;
    const model_linear *H = &shared->linear[shared->n_linear - 1];
    for (int ti = 0; ti < shared->params.n; ti++) {
        if (ti == H->weight || ti == H->bias) continue;
        int tj = param_set_find(&mj->params, shared->params.t[ti].name);
        memcpy(param_set_ptr(&mj->params, tj), param_set_ptr(&shared->params, ti),
               shared->params.t[ti].numel * sizeof(float));
    }
    const model_linear *Hj = &mj->linear[mj->n_linear - 1];
    size_t nw = head->params.t[head->head_w].numel, nb = head->params.t[head->head_b].numel;
    memcpy(param_set_ptr(&mj->params, Hj->weight), param_set_ptr(&head->params, head->head_w), nw * sizeof(float));
    memcpy(param_set_ptr(&mj->params, Hj->bias), param_set_ptr(&head->params, head->head_b), nb * sizeof(float));
    int rc = train_run(mj, NULL, d, tc, NULL, NULL, res, err);
    if (!rc) {
        for (int ti = 0; ti < shared->params.n; ti++) {
            if (ti == H->weight || ti == H->bias) continue;
            int tj = param_set_find(&mj->params, shared->params.t[ti].name);
            memcpy(param_set_ptr(&shared->params, ti), param_set_ptr(&mj->params, tj),
                   shared->params.t[ti].numel * sizeof(float));
        }
        memcpy(param_set_ptr(&head->params, head->head_w), param_set_ptr(&mj->params, Hj->weight), nw * sizeof(float));
        memcpy(param_set_ptr(&head->params, head->head_b), param_set_ptr(&mj->params, Hj->bias), nb * sizeof(float));
    }
    model_destroy(mj);
    return rc;
}

/* Parameters of a model without its head: what sequential fine-tuning changes besides each task's head. */
static long backbone_params(const model *m)
{
    const model_linear *H = &m->linear[m->n_linear - 1];
    return (long)(m->params.total - m->params.t[H->weight].numel - m->params.t[H->bias].numel);
}

static uint64_t fnv1a_bytes(const void *p, size_t n, uint64_t h)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

/* The base's linear-probe accuracy depends only on the stream text, --quick and the task: cache it. */
static bool cache_get(const char *dir, uint64_t key, double *v)
{
    if (!dir) return false;
    char path[1200];
    snprintf(path, sizeof path, "%s/headonly-%016llx.txt", dir, (unsigned long long)key);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    bool ok = fscanf(f, "%lf", v) == 1 && isfinite(*v);
    fclose(f);
    return ok;
}

static void cache_put(const char *dir, uint64_t key, double v)
{
    if (!dir) return;
    mkdir(dir, 0755);
    char path[1200];
    snprintf(path, sizeof path, "%s/headonly-%016llx.txt", dir, (unsigned long long)key);
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "%.9g\n", v);
    fclose(f);
}

static json_t *json_num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* A metric as a number, or null with its reason recorded under "undefined". */
static void put_metric(json_t *o, json_t *undefined, const char *key, const cl_value *v)
{
    if (v->defined) {
        json_object_set_new(o, key, json_real(v->value));
    } else {
        json_object_set_new(o, key, json_null());
        json_object_set_new(undefined, key, json_string(v->reason));
    }
}

static json_t *task_json(const stream *s, int ti, const task_state *st, const model *base, bool adapters,
                         bool explain)
{
    json_t *t = json_object();
    json_object_set_new(t, "name", json_string(s->tasks[ti].name));
    const rank_plan *p = &st->plan.rank;
    json_object_set_new(t, "distance", st->planned ? json_real(p->distance) : json_null());
    json_t *ranks = json_object(), *nov = json_object(), *ov = json_object();
    for (int li = 0; st->has_plan && li < base->n_linear; li++) {
        if (!p->layer[li].target) continue;
        if (adapters) json_object_set_new(ranks, base->linear[li].name, json_integer(p->ranks[li]));
        json_object_set_new(nov, base->linear[li].name, json_real(p->layer[li].novelty));
    }
    for (int k = 0; st->has_plan && k < p->n_earlier; k++)
        json_object_set_new(ov, s->tasks[k].name, json_real(p->overlap[k]));
    json_object_set_new(t, "ranks", ranks);
    if (st->pruned && st->ad) {
        json_t *before = json_object(), *after = json_object();
        for (int li = 0; li < base->n_linear; li++) {
            if (!st->rank_before[li]) continue;
            json_object_set_new(before, base->linear[li].name, json_integer(st->rank_before[li]));
            json_object_set_new(after, base->linear[li].name, json_integer(st->ad->rank[li]));
        }
        json_object_set_new(t, "ranks_before_pruning", before);
        json_object_set_new(t, "ranks_after_pruning", after);
    }
    json_object_set_new(t, "novelty", nov);
    json_object_set_new(t, "overlap", ov);
    json_object_set_new(t, "params", json_integer(st->params));
    json_object_set_new(t, "new_params", json_integer(st->new_params));
    json_object_set_new(t, "plan_seconds", json_real(st->plan_seconds));
    json_object_set_new(t, "train_seconds", json_real(st->train_seconds));
    json_object_set_new(t, "probe_seconds", st->has_plan ? json_real(st->plan.probe_seconds) : json_null());
    json_object_set_new(t, "head_only_acc", json_num_or_null(st->head_only));
    if (adapters) json_object_set_new(t, "reuse", p->reuse >= 0 ? json_string(s->tasks[p->reuse].name) : json_null());
    if (explain && st->planned) {
        json_t *e = json_object(), *layers = json_object();
        json_object_set_new(e, "task_novelty", json_real(p->novelty));
        json_object_set_new(e, "probe_gain", json_real(p->gain));
        json_object_set_new(e, "probe_holdout_loss", json_pack("[f,f]", (double)st->plan.holdout_before,
                                                               (double)st->plan.holdout_after));
        json_object_set_new(e, "probe_seconds", json_real(st->plan.probe_seconds));
        for (int li = 0; li < base->n_linear; li++) {
            const rank_layer *R = &p->layer[li];
            if (!R->target) continue;
            json_t *l = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:i,s:i,s:f,s:f,s:i,s:i,s:s}", "distance", R->distance,
                                  "energy", R->energy, "gain", R->gain, "useful", R->useful, "floor", R->floor,
                                  "novelty", R->novelty, "significant", R->pull_k, "directions", R->directions,
                                  "left", R->left, "left_at", R->left_at, "rank", R->rank, "reused", R->reused,
                                  "why", R->why ? R->why : "");
            json_t *lo = json_object();
            for (int k = 0; k < p->n_earlier; k++) json_object_set_new(lo, s->tasks[k].name, json_real(R->overlap[k]));
            json_object_set_new(l, "overlap", lo);
            json_t *gains = json_array();
            for (int k = 0; k < R->pull_k; k++) json_array_append_new(gains, json_real(R->pull_gain[k]));
            json_object_set_new(l, "gains", gains);
            json_object_set_new(l, "found", json_integer(R->found));
            json_object_set_new(l, "best_per_param", json_real(R->best_per_param));
            if (R->rank_start) {
                json_object_set_new(l, "rank_start", json_integer(R->rank_start));
                json_object_set_new(l, "kept_size", json_real(R->kept_size));
                json_object_set_new(l, "keep_at", json_real(R->keep_at));
            }
            json_object_set_new(layers, base->linear[li].name, l);
        }
        json_object_set_new(e, "layers", layers);
        json_object_set_new(t, "explain", e);
    }
    return t;
}

/* ---- --save: everything the learner keeps ----------------------------------------------------------------- */

/* A file name from a task name: letters, digits, '-', '_' and '.' kept, anything else '_'. */
static void file_stem(char *out, size_t size, int i, const char *name)
{
    int n = snprintf(out, size, "%02d-", i);
    for (const char *c = name; *c && (size_t)n + 1 < size; c++)
        out[n++] = (char)((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                                  *c == '-' || *c == '_' || *c == '.' ? *c : '_');
    out[n] = '\0';
}

static int save_signature(const signature *sig, const route_stats *rs, const model *m, const char *path,
                          clad_err *err)
{
    st_writer *w = st_writer_create();
    int rc = rs ? route_stats_to_writer(w, rs, err) : 0;
    char name[PARAM_NAME_MAX + 8];
    for (int li = 0; !rc && li < sig->n_linear; li++) {
        const sig_layer *L = &sig->layer[li];
        if (!L->k) continue;
        snprintf(name, sizeof name, "%s.U", m->linear[li].name);
        rc = st_writer_add_f32(w, name, 2, (int64_t[]){L->out, L->k}, L->U, err);
        snprintf(name, sizeof name, "%s.Vt", m->linear[li].name);
        if (!rc) rc = st_writer_add_f32(w, name, 2, (int64_t[]){L->k, L->in}, L->Vt, err);
        snprintf(name, sizeof name, "%s.s", m->linear[li].name);
        if (!rc) rc = st_writer_add_f32(w, name, 1, (int64_t[]){L->k}, L->s, err);
    }
    if (!rc) rc = st_writer_meta(w, "format", "clad-signature", err);
    if (!rc) rc = st_writer_to_file(w, path, err);
    st_writer_destroy(w);
    return rc;
}

static int save_all(const char *dir, const stream *s, const task_state *st, const model *base, const model *shared,
                    const json_t *result, clad_err *err)
{
    mkdir(dir, 0755);
    char path[1400], stem[96];
    int rc = 0;
    for (int i = 0; !rc && i < s->n_tasks; i++) {
        file_stem(stem, sizeof stem, i, s->tasks[i].name);
        snprintf(path, sizeof path, "%s/%s.adapter.safetensors", dir, stem);
        rc = adapter_save(st[i].ad, shared ? shared : base, path, err);
        if (!rc && st[i].has_sig) {
            snprintf(path, sizeof path, "%s/%s.signature.safetensors", dir, stem);
            rc = save_signature(&st[i].sig, st[i].has_rs ? &st[i].rs : NULL, base, path, err);
        }
    }
    if (!rc && shared) {
        snprintf(path, sizeof path, "%s/backbone.safetensors", dir);
        rc = model_save(shared, path, err);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/result.json", dir);
        if (json_dump_file(result, path, JSON_INDENT(1) | JSON_REAL_PRECISION(9)))
            rc = clad_err_set(err, CLAD_EIO, "cannot write %s", path);
    }
    return rc;
}

/* "samples=512,steps=48,..." over the defaults. */
static int parse_probe(probe_config *pc, const char *text, clad_err *err)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", text);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *eq = strchr(tok, '=');
        if (!eq) return clad_err_set(err, CLAD_EINVAL, "--probe: '%s' is not key=value", tok);
        *eq = '\0';
        double v = atof(eq + 1);
        if (!strcmp(tok, "samples")) pc->samples = (int)v;
        else if (!strcmp(tok, "holdout")) pc->holdout = (int)v;
        else if (!strcmp(tok, "steps")) pc->steps = (int)v;
        else if (!strcmp(tok, "batch")) pc->batch = (int)v;
        else if (!strcmp(tok, "points")) pc->path_points = (int)v;
        else if (!strcmp(tok, "lr")) pc->lr = (float)v;
        else return clad_err_set(err, CLAD_EINVAL, "--probe: unknown setting '%s'", tok);
    }
    return probe_config_validate(pc, err);
}

/* ---- the run ------------------------------------------------------------------------------------------- */

static int run_stream(const cl_args *a, json_t **out, clad_err *err)
{
    stream *s = calloc(1, sizeof *s);
    if (!s) abort();
    stream_sources src = {0};
    model *base = NULL, *base_copy = NULL, *shared = NULL;
    task_state *st = NULL;
    double *R = NULL, *b = NULL;
    json_t *res = NULL;
    uint8_t *stream_text = NULL;
    size_t stream_len = 0;
    double t_start = now_s();
    int rc = stream_load(s, a->stream_path, err);
    if (!rc) rc = file_read_all(a->stream_path, 1 << 20, &stream_text, &stream_len, err);
    if (rc) goto cleanup;
    if (a->quick) stream_make_quick(s);
    if (a->seed) s->seed = a->seed;

    bool full_ft = !strcmp(a->policy, "full-ft");
    rank_policy pol;
    if (!full_ft && (rc = rank_policy_parse(&pol, a->policy, err))) goto cleanup;
    if (full_ft) rank_policy_parse(&pol, "fixed:1", NULL); /* only for the explanation's probe */

    double base_seconds = 0;
    if (a->verbose) fprintf(stderr, "[cl] %s: base...\n", s->name);
    if (!(base = stream_base_create(s, &src, a->cache, &base_seconds, err))) {
        rc = err ? err->code : CLAD_EINVAL;
        goto cleanup;
    }
    if (!(base_copy = model_create(&base->cfg, err))) {
        rc = CLAD_ENOMEM;
        goto cleanup;
    }
    memcpy(base_copy->params.data, base->params.data, base->params.total * sizeof(float));
    if (full_ft) {
        if (!(shared = model_create(&base->cfg, err))) {
            rc = CLAD_ENOMEM;
            goto cleanup;
        }
        memcpy(shared->params.data, base->params.data, base->params.total * sizeof(float));
    }

    cl_config cfg;
    cl_config_default(&cfg, base);
    cfg.policy = pol;
    cfg.alpha = s->alpha;
    cfg.probe.seed = s->seed;
    if (s->probe_samples) cfg.probe.samples = s->probe_samples;
    if (s->probe_holdout) cfg.probe.holdout = s->probe_holdout;
    if (s->probe_steps) cfg.probe.steps = s->probe_steps;
    if (s->probe_batch) cfg.probe.batch = s->probe_batch;
    if (s->probe_points) cfg.probe.path_points = s->probe_points;
    if (s->probe_lr > 0) cfg.probe.lr = (float)s->probe_lr;
    if (a->probe && (rc = parse_probe(&cfg.probe, a->probe, err))) goto cleanup;
    if (a->init) cfg.init_from_pull = !strcmp(a->init, "pull");
    if (a->default_targets)
        for (int li = 0; li < base->n_linear; li++) cfg.targets[li] = model_linear_is_default_target(base, li);
    train_config tc;
    train_config_default(&tc);
    tc.epochs = s->epochs;
    tc.lr = s->lr;
    tc.batch = s->batch;
    tc.seed = s->seed;

    int T = s->n_tasks;
    st = calloc((size_t)T, sizeof *st);
    R = malloc((size_t)T * T * sizeof *R);
    b = malloc((size_t)T * sizeof *b);
    if (!st || !R || !b) abort();
    for (int i = 0; i < T * T; i++) R[i] = NAN;
    uint64_t stream_key = fnv1a_bytes(stream_text, stream_len, a->quick ? 0x9u : 0x7u) ^ (a->seed * 0x2545f4914f6cdd1dULL);

    for (int i = 0; i < T; i++) {
        dataset train = {0};
        task_state *ts = &st[i];
        if ((rc = stream_task_data(&train, s, i, true, base, &src, err)) ||
            (rc = stream_task_data(&ts->test, s, i, false, base, &src, err)))
            goto task_fail;
        ts->K = train.n_classes > ts->test.n_classes ? train.n_classes : ts->test.n_classes;
        train.n_classes = ts->test.n_classes = ts->K;

        const signature *earlier[STREAM_MAX_TASKS];
        int n_earlier = 0;
        for (int k = 0; k < i; k++)
            if (st[k].has_sig) earlier[n_earlier++] = &st[k].sig;
        train_result tr = {0};
        if (full_ft) {
            /* The forgetting baseline is not the pipeline; its probe only explains the task's distance. */
            double tp = now_s();
            if ((rc = cl_plan_task(&ts->plan, base, n_earlier ? earlier : NULL, n_earlier, &train, ts->K, &cfg, err)))
                goto task_fail;
            ts->has_plan = ts->planned = true;
            ts->plan_seconds = now_s() - tp;
            if (a->verbose) fprintf(stderr, "[cl] task %s: train...\n", s->tasks[i].name);
            ts->ad = adapter_create(shared, NULL, cfg.alpha, ts->K, err);
            if (!ts->ad) {
                rc = err ? err->code : CLAD_EINVAL;
                goto task_fail;
            }
            adapter_init(ts->ad, base, s->seed + (uint64_t)i);
            if ((rc = full_ft_train(shared, ts->ad, &train, &tc, &tr, err))) goto task_fail;
            ts->params = backbone_params(shared) + (long)adapter_param_count(ts->ad);
            ts->new_params = ts->params;
        } else {
            cl_task_options opt;
            cl_task_options_default(&opt);
            opt.explain = a->explain;
            opt.tied = a->tied;
            opt.prune = a->prune;
            opt.init_seed = s->seed + (uint64_t)i;
            cl_task_result cr;
            if (a->verbose) fprintf(stderr, "[cl] task %s: plan and train...\n", s->tasks[i].name);
            rc = cl_task_run(&cr, base, n_earlier ? earlier : NULL, n_earlier, &train, ts->K, &cfg, &tc, &opt, err);
            if (rc) {
                cl_task_result_finish(&cr);
                goto task_fail;
            }
            /* The task keeps what the pipeline made. */
            ts->plan = cr.plan;
            ts->has_plan = true;
            ts->planned = cr.planned;
            ts->plan_seconds = cr.plan_seconds;
            ts->ad = cr.ad;
            ts->sig = cr.sig;
            ts->has_sig = true;
            ts->params = cr.params;
            ts->new_params = cr.new_params;
            ts->pruned = cr.pruned;
            memcpy(ts->rank_before, cr.rank_before, sizeof ts->rank_before);
            tr = cr.train;
            memset(&cr.plan, 0, sizeof cr.plan);
            memset(&cr.sig, 0, sizeof cr.sig);
            cr.ad = NULL;
            cl_task_result_finish(&cr);
        }
        ts->train_seconds = tr.seconds;

        uint64_t key = stream_key ^ ((uint64_t)i * 0x9e3779b97f4a7c15ULL);
        if (!cache_get(a->cache, key, &ts->head_only)) {
            if (a->verbose) fprintf(stderr, "[cl] task %s: base linear probe...\n", s->tasks[i].name);
            if ((rc = head_only_accuracy(&ts->head_only, base, &train, &ts->test, ts->K, &tc, s->seed, err)))
                goto task_fail;
            cache_put(a->cache, key, ts->head_only);
        }
        b[i] = ts->head_only;
        if (a->routing && !full_ft) {
            if ((rc = route_stats_compute(&ts->rs, base, &train, ts->K, a->route_components, err))) goto task_fail;
            ts->has_rs = true;
        }
        /* Rehearsal-free: the task's training data is gone from here on. */
        dataset_finish(&train);

        const model *run_m = full_ft ? shared : base;
        for (int j = 0; j <= i; j++) {
            eval_result ev;
            if ((rc = model_evaluate(run_m, st[j].ad, &st[j].test, 256, &ev, err))) goto task_fail;
            R[(size_t)i * T + j] = ev.accuracy;
        }
        ts->probs = malloc((size_t)ts->test.n * (size_t)ts->K * sizeof *ts->probs);
        if (!ts->probs) abort();
        if ((rc = model_predict(run_m, ts->ad, ts->test.x, ts->test.n, 256, ts->probs, NULL, err))) goto task_fail;
        if (a->verbose)
            fprintf(stderr, "[cl] task %s: acc %.4f (head only %.4f), %.1fs\n", s->tasks[i].name,
                    R[(size_t)i * T + i], ts->head_only, tr.seconds);
        continue;
    task_fail:
        dataset_finish(&train);
        clad_err_prefix(err, "task '%s': ", s->tasks[i].name);
        goto cleanup;
    }

    /* Bit-identical checks: earlier tasks' probabilities now versus right after they were learned. */
    bool preds_same = true;
    const model *run_m = full_ft ? shared : base;
    for (int j = 0; j < T; j++) {
        size_t n = (size_t)st[j].test.n * (size_t)st[j].K;
        float *p = malloc(n * sizeof *p);
        if (!p) abort();
        if ((rc = model_predict(run_m, st[j].ad, st[j].test.x, st[j].test.n, 256, p, NULL, err))) {
            free(p);
            goto cleanup;
        }
        if (memcmp(p, st[j].probs, n * sizeof *p)) preds_same = false;
        free(p);
    }
    bool base_same = !memcmp(base->params.data, base_copy->params.data, base->params.total * sizeof(float));

    cl_metrics met;
    cl_metrics_compute(&met, R, T, b);
    res = json_object();
    json_t *undefined = json_object(), *tasks = json_array(), *Rj = json_array();
    char pname[64];
    if (full_ft) snprintf(pname, sizeof pname, "full-ft");
    else rank_policy_name(&pol, pname, sizeof pname);
    json_object_set_new(res, "stream", json_string(s->name));
    json_object_set_new(res, "policy", json_string(pname));
    long total = 0, heads = 0, stored = 0, stored_half[2] = {0, 0};
    for (int i = 0; i < T; i++) {
        json_array_append_new(tasks, task_json(s, i, &st[i], base, !full_ft, a->explain));
        total += st[i].params;
        stored += st[i].new_params;
        stored_half[i >= T / 2] += st[i].new_params;
        heads += (long)adapter_param_count(st[i].ad);
        json_t *row = json_array();
        for (int j = 0; j < T; j++) json_array_append_new(row, json_num_or_null(R[(size_t)i * T + j]));
        json_array_append_new(Rj, row);
    }
    if (full_ft) /* one shared backbone plus every task's head */
        total = backbone_params(shared) + heads;
    json_object_set_new(res, "tasks", tasks);
    json_object_set_new(res, "R", Rj);
    put_metric(res, undefined, "acc", &met.acc);
    put_metric(res, undefined, "aia", &met.aia);
    put_metric(res, undefined, "forgetting_max", &met.forgetting_max);
    put_metric(res, undefined, "forgetting_first", &met.forgetting_first);
    put_metric(res, undefined, "bwt", &met.bwt);
    put_metric(res, undefined, "fwt", &met.fwt);
    json_object_set_new(res, "params_total", json_integer(total));
    json_object_set_new(res, "new_params_total", json_integer(full_ft ? total : stored));
    /* What a long stream of related tasks should show: later tasks cost less than earlier ones. */
    if (!full_ft && T >= 2 && stored_half[0] > 0)
        json_object_set_new(res, "last_half_over_first_half", json_real((double)stored_half[1] / (double)stored_half[0]));
    if (json_object_size(undefined)) json_object_set_new(res, "undefined", undefined);
    else json_decref(undefined);
    if (a->routing && !full_ft) {
        cl_routing_task *rt = calloc((size_t)T, sizeof *rt);
        if (!rt) abort();
        for (int j = 0; j < T; j++)
            rt[j] = (cl_routing_task){&s->tasks[j], &st[j].test, st[j].ad, &st[j].rs, R[(size_t)(T - 1) * T + j]};
        if (a->verbose) fprintf(stderr, "[cl] routing every test sample among %d tasks...\n", T);
        json_t *rj = cl_routing_evaluate(base, rt, T, &a->route, err);
        json_t *sweep = rj && a->route_sweep ? cl_routing_sweep(base, rt, T, err) : NULL;
        if (sweep) json_object_set_new(rj, "sweep", sweep);
        free(rt);
        if (!rj || (a->route_sweep && !sweep)) {
            json_decref(rj);
            rc = err ? err->code : CLAD_EINVAL;
            goto cleanup;
        }
        json_object_set_new(res, "routing", rj);
    }
    if (a->joint && !full_ft) {
        if (a->verbose) fprintf(stderr, "[cl] joint training on every task's data...\n");
        json_t *jj = cl_joint_evaluate(s, &src, base, &cfg, &tc, err);
        if (!jj) {
            rc = err ? err->code : CLAD_EINVAL;
            goto cleanup;
        }
        json_object_set_new(res, "joint", jj);
    }
    json_object_set_new(res, "earlier_predictions_unchanged", json_boolean(preds_same));
    json_object_set_new(res, "base_unchanged", json_boolean(base_same));
    json_object_set_new(res, "quick", json_boolean(a->quick));
    json_object_set_new(res, "base_seconds", json_real(base_seconds));
    json_object_set_new(res, "seconds", json_real(now_s() - t_start));
    if (a->save && (rc = save_all(a->save, s, st, base, shared, res, err))) goto cleanup;
    *out = res;
    res = NULL;
cleanup:
    json_decref(res);
    for (int i = 0; st && i < s->n_tasks; i++) {
        dataset_finish(&st[i].test);
        adapter_destroy(st[i].ad);
        if (st[i].has_sig) signature_finish(&st[i].sig);
        route_stats_finish(&st[i].rs);
        if (st[i].has_plan) cl_plan_finish(&st[i].plan);
        free(st[i].probs);
    }
    free(st);
    free(R);
    free(b);
    free(stream_text);
    model_destroy(base);
    model_destroy(base_copy);
    model_destroy(shared);
    stream_sources_finish(&src);
    free(s);
    return rc;
}

/* A short table for people (the JSON is for tools). */
static void print_table(const json_t *r)
{
    printf("stream %s, policy %s\n", json_string_value(json_object_get(r, "stream")),
           json_string_value(json_object_get(r, "policy")));
    json_t *tasks = json_object_get(r, "tasks"), *Rm = json_object_get(r, "R");
    size_t T = json_array_size(tasks);
    printf("%-12s %9s %8s %8s %7s %9s  %s\n", "task", "distance", "params", "new", "plan s", "final acc", "ranks");
    for (size_t i = 0; i < T; i++) {
        json_t *t = json_array_get(tasks, i);
        printf("%-12s %9.4f %8lld %8lld %7.2f %9.4f  ", json_string_value(json_object_get(t, "name")),
               json_real_value(json_object_get(t, "distance")), json_integer_value(json_object_get(t, "params")),
               json_integer_value(json_object_get(t, "new_params")), json_real_value(json_object_get(t, "plan_seconds")),
               json_real_value(json_array_get(json_array_get(Rm, T - 1), i)));
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(t, "ranks"), k, v) printf("%lld ", json_integer_value(v));
        printf("\n");
    }
    const char *keys[] = {"acc", "aia", "forgetting_max", "forgetting_first", "bwt", "fwt"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        json_t *v = json_object_get(r, keys[i]);
        if (json_is_null(v)) printf("%s: null (%s)\n", keys[i],
                                    json_string_value(json_object_get(json_object_get(r, "undefined"), keys[i])));
        else printf("%s: %.4f\n", keys[i], json_real_value(v));
    }
    printf("params_total: %lld (stored: %lld)\n", json_integer_value(json_object_get(r, "params_total")),
           json_integer_value(json_object_get(r, "new_params_total")));
    json_t *rt = json_object_get(r, "routing");
    if (rt)
        printf("routing: task-id accuracy %.4f, accuracy without task ids %.4f (with: %.4f)\n",
               json_real_value(json_object_get(rt, "task_id_acc")), json_real_value(json_object_get(rt, "acc_routed")),
               json_real_value(json_object_get(rt, "acc_task_aware")));
    if (json_object_get(r, "joint"))
        printf("joint training: accuracy %.4f\n", json_real_value(json_object_get(json_object_get(r, "joint"), "acc")));
}

int bench_cl_main(int argc, char **argv)
{
    cl_args a = {.policy = "auto", .cache = getenv("CLAD_BENCH_CACHE")};
    route_config_default(&a.route);
    a.route_components = ROUTE_COMPONENTS;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stream") && i + 1 < argc) a.stream_path = argv[++i];
        else if (!strcmp(argv[i], "--policy") && i + 1 < argc) a.policy = argv[++i];
        else if (!strcmp(argv[i], "--cache") && i + 1 < argc) a.cache = argv[++i];
        else if (!strcmp(argv[i], "--save") && i + 1 < argc) a.save = argv[++i];
        else if (!strcmp(argv[i], "--probe") && i + 1 < argc) a.probe = argv[++i];
        else if (!strcmp(argv[i], "--kind") && i + 1 < argc) {
            const char *k = argv[++i];
            if (!strcmp(k, "tied-tl5")) a.tied = TIED_TL5;
            else if (!strcmp(k, "tied-tl6")) a.tied = TIED_TL6;
            else if (strcmp(k, "lora")) {
                fprintf(stderr, "clad-bench cl: --kind takes lora, tied-tl5 or tied-tl6\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--prune") && i + 1 < argc) {
            a.prune = strtod(argv[++i], NULL);
            if (!(a.prune >= 0.5 && a.prune <= 1.0)) {
                fprintf(stderr, "clad-bench cl: --prune takes an energy fraction in [0.5, 1]\n");
                return 2;
            }
        }
        else if (!strcmp(argv[i], "--quick")) a.quick = true;
        else if (!strcmp(argv[i], "--routing")) a.routing = true;
        else if (!strcmp(argv[i], "--joint")) a.joint = true;
        else if (!strcmp(argv[i], "--route-sweep")) a.route_sweep = true;
        else if (!strcmp(argv[i], "--route-shrink") && i + 1 < argc) a.route.shrink = strtod(argv[++i], NULL);
        else if (!strcmp(argv[i], "--route-pool") && i + 1 < argc) a.route.pool = strtod(argv[++i], NULL);
        else if (!strcmp(argv[i], "--route-components") && i + 1 < argc) a.route_components = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) a.seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--json")) a.json = true;
        else if (!strcmp(argv[i], "--init") && i + 1 < argc && (!strcmp(argv[i + 1], "kaiming") || !strcmp(argv[i + 1], "pull")))
            a.init = argv[++i];
        else if (!strcmp(argv[i], "--targets") && i + 1 < argc && (!strcmp(argv[i + 1], "default") || !strcmp(argv[i + 1], "all")))
            a.default_targets = !strcmp(argv[++i], "default");
        else if (!strcmp(argv[i], "--explain")) a.explain = true;
        else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) a.verbose = true;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage_cl(stdout);
            return 0;
        } else {
            fprintf(stderr, "clad-bench cl: unexpected argument '%s'\n", argv[i]);
            usage_cl(stderr);
            return 2;
        }
    }
    if (!a.stream_path) {
        usage_cl(stderr);
        return 2;
    }
    clad_err err = {0};
    json_t *r = NULL;
    if (run_stream(&a, &r, &err)) {
        fprintf(stderr, "clad-bench cl: %s: %s\n", clad_code_name(err.code), err.msg);
        return 1;
    }
    if (a.json) {
        char *text = json_dumps(r, JSON_COMPACT | JSON_REAL_PRECISION(6));
        printf("%s\n", text ? text : "{}");
        free(text);
    } else {
        print_table(r);
    }
    json_decref(r);
    return 0;
}

static void usage_export(FILE *f)
{
    fprintf(f, "usage: clad-bench export --stream FILE --task NAME[,NAME...] --split train|test --out FILE [--quick]\n"
               "                         [--samples N] [--cache DIR]\n"
               "  --task     one task, or several: their samples one after the other, with a tensor 'task'\n"
               "             and the metadata 'tasks' naming them (the file `clad eval --any` takes)\n"
               "  --samples  how many samples to write per task (default: the stream's train_per_task or\n"
               "             test_per_task for the split, after --quick)\n");
}

int bench_export_main(int argc, char **argv)
{
    const char *path = NULL, *task = NULL, *split = NULL, *out = NULL, *cache = getenv("CLAD_BENCH_CACHE");
    bool quick = false;
    long samples = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stream") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--task") && i + 1 < argc) task = argv[++i];
        else if (!strcmp(argv[i], "--split") && i + 1 < argc) split = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--cache") && i + 1 < argc) cache = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--samples") && i + 1 < argc) {
            char *end = NULL;
            samples = strtol(argv[++i], &end, 10);
            if (!end || *end || samples < 1 || samples > DATASET_MAX_SAMPLES) {
                fprintf(stderr, "clad-bench export: --samples needs a count in [1, %d]\n", DATASET_MAX_SAMPLES);
                return 2;
            }
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage_export(stdout);
            return 0;
        } else {
            fprintf(stderr, "clad-bench export: unexpected argument '%s'\n", argv[i]);
            path = NULL;
            break;
        }
    }
    if (!path || !task || !out || !split || (strcmp(split, "train") && strcmp(split, "test"))) {
        usage_export(stderr);
        return 2;
    }
    clad_err err = {0};
    stream *s = calloc(1, sizeof *s);
    if (!s) abort();
    stream_sources src = {0};
    model *base = NULL;
    dataset d = {0};
    int rc = stream_load(s, path, &err);
    if (!rc) {
        if (quick) stream_make_quick(s);
        /* --samples overrides the split's size (the stream's train_per_task or test_per_task). */
        if (samples && !strcmp(split, "train")) s->train_per_task = (int)samples;
        if (samples && !strcmp(split, "test")) s->test_per_task = (int)samples;
    }
    /* One task, or several written one after the other with their task indices. */
    char names[STREAM_MAX_TASKS][STREAM_NAME_MAX];
    int n_names = 0, *task_of = NULL;
    for (const char *p = task; !rc && *p;) {
        size_t len = strcspn(p, ",");
        if (!len || len >= STREAM_NAME_MAX || n_names == STREAM_MAX_TASKS) {
            rc = clad_err_set(&err, CLAD_EINVAL, "--task takes up to %d names separated by commas", STREAM_MAX_TASKS);
            break;
        }
        snprintf(names[n_names++], sizeof names[0], "%.*s", (int)len, p);
        p += len + (p[len] == ',');
    }
    json_t *list = json_array();
    for (int k = 0; !rc && k < n_names; k++) {
        int ti = stream_task_find(s, names[k]);
        dataset part = {0};
        if (ti < 0) rc = clad_err_set(&err, CLAD_ENOTFOUND, "stream '%s' has no task '%s'", s->name, names[k]);
        /* Only synthetic tasks need the base (their labels come from a teacher built on it). */
        if (!rc && s->tasks[ti].data == STREAM_SYNTHETIC && !base && !(base = stream_base_create(s, &src, cache, NULL, &err)))
            rc = err.code ? err.code : CLAD_EINVAL;
        if (!rc) rc = stream_task_data(&part, s, ti, !strcmp(split, "train"), base, &src, &err);
        if (!rc) rc = dataset_append(&d, &part, &err);
        int *grown = rc ? NULL : realloc(task_of, (size_t)d.n * sizeof *task_of);
        if (!rc && !grown) rc = clad_err_set(&err, CLAD_ENOMEM, "out of memory");
        if (!rc) {
            task_of = grown;
            for (int i = d.n - part.n; i < d.n; i++) task_of[i] = k;
            json_array_append_new(list, json_string(names[k]));
        }
        dataset_finish(&part);
    }
    char *tasks_json = rc ? NULL : json_dumps(list, JSON_COMPACT);
    json_decref(list);
    if (!rc) rc = n_names > 1 ? dataset_save_safetensors_tasks(&d, task_of, tasks_json, out, &err)
                              : dataset_save_safetensors(&d, out, &err);
    free(tasks_json);
    free(task_of);
    if (rc) fprintf(stderr, "clad-bench export: %s: %s\n", clad_code_name(err.code), err.msg);
    else fprintf(stderr, "clad-bench export: wrote %d samples of task '%s' (%s) to %s\n", d.n, task, split, out);
    dataset_finish(&d);
    model_destroy(base);
    stream_sources_finish(&src);
    free(s);
    return rc ? 1 : 0;
}
