/* Benchmark streams: parsing, base models and task data; see stream.h. */
#include "bench/stream.h"

#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/linalg.h"
#include "core/rng.h"
#include "core/train.h"
#include "io/dataset_io.h"
#include "io/model_io.h"

/* ---- parsing ---------------------------------------------------------------------------------------- */

static bool key_in(const char *key, const char *const *allowed)
{
    for (; *allowed; allowed++)
        if (!strcmp(key, *allowed)) return true;
    return false;
}

/* Refuses keys outside `allowed` so a typo cannot silently change an experiment. */
static int check_keys(const json_t *obj, const char *const *allowed, const char *where, clad_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        if (!key_in(key, allowed)) return clad_err_set(err, CLAD_EINVAL, "stream: unknown key '%s' in %s", key, where);
    }
    return 0;
}

static int get_int(const json_t *obj, const char *key, int lo, int hi, int *out, bool required, const char *where,
                   clad_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required) return clad_err_set(err, CLAD_EINVAL, "stream: %s needs '%s'", where, key);
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return clad_err_set(err, CLAD_EINVAL, "stream: %s: '%s' must be an integer in [%d, %d]", where, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_seed(const json_t *obj, const char *key, uint64_t *out, const char *where, clad_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return clad_err_set(err, CLAD_EINVAL, "stream: %s: '%s' must be a non-negative integer", where, key);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int get_num(const json_t *obj, const char *key, double lo, double hi, double *out, bool required,
                   const char *where, clad_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required) return clad_err_set(err, CLAD_EINVAL, "stream: %s needs '%s'", where, key);
        return 0;
    }
    double x = json_number_value(v);
    if (!json_is_number(v) || !(x >= lo && x <= hi))
        return clad_err_set(err, CLAD_EINVAL, "stream: %s: '%s' must be a number in [%g, %g]", where, key, lo, hi);
    *out = x;
    return 0;
}

static int parse_source(const char *name, stream_source *out, const char *where, clad_err *err)
{
    if (name && !strcmp(name, "fmnist")) *out = STREAM_FMNIST;
    else if (name && !strcmp(name, "mnist")) *out = STREAM_MNIST;
    else if (name && !strcmp(name, "synthetic")) *out = STREAM_SYNTHETIC;
    else return clad_err_set(err, CLAD_EINVAL, "stream: %s: 'data' must be \"fmnist\", \"mnist\" or \"synthetic\"", where);
    return 0;
}

static int parse_transform(transform *t, const json_t *j, const char *where, clad_err *err)
{
    static const char *const keys[] = {"op", "degrees", "fraction", "seed", "sigma", "keep", NULL};
    memset(t, 0, sizeof *t);
    if (!json_is_object(j)) return clad_err_set(err, CLAD_EINVAL, "stream: %s: a transform must be an object", where);
    if (check_keys(j, keys, where, err)) return CLAD_EINVAL;
    const char *op = json_string_value(json_object_get(j, "op"));
    if (!op) return clad_err_set(err, CLAD_EINVAL, "stream: %s: a transform needs 'op'", where);
    if (transform_op_parse(&t->op, op, err)) return CLAD_EINVAL;
    int rc = 0;
    switch (t->op) {
    case TRANSFORM_ROTATE: rc = get_num(j, "degrees", -36000, 36000, &t->degrees, true, where, err); break;
    case TRANSFORM_PERMUTE_PIXELS: rc = get_num(j, "fraction", 0, 1, &t->fraction, true, where, err); break;
    case TRANSFORM_NOISE: rc = get_num(j, "sigma", 0, 100, &t->sigma, true, where, err); break;
    case TRANSFORM_CLASSES: {
        json_t *k = json_object_get(j, "keep");
        if (!json_is_array(k) || json_array_size(k) < 1 || json_array_size(k) > TRANSFORM_MAX_CLASSES)
            return clad_err_set(err, CLAD_EINVAL, "stream: %s: classes needs 'keep': a list of 1 to %d labels", where,
                                TRANSFORM_MAX_CLASSES);
        t->n_keep = (int)json_array_size(k);
        for (int i = 0; i < t->n_keep; i++) {
            json_t *v = json_array_get(k, (size_t)i);
            if (!json_is_integer(v)) return clad_err_set(err, CLAD_EINVAL, "stream: %s: 'keep' holds a non-integer", where);
            t->keep[i] = (int)json_integer_value(v);
        }
        break;
    }
    default: break;
    }
    if (rc) return rc;
    if ((rc = get_seed(j, "seed", &t->seed, where, err))) return rc;
    return transform_validate(t, err);
}

static int parse_task(stream_task *t, const json_t *j, int index, clad_err *err)
{
    static const char *const keys[] = {"name", "data", "transforms", "teacher_rank", "teacher_scale", "teacher_seed",
                                       "seed", NULL};
    char where[96];
    snprintf(where, sizeof where, "task %d", index);
    memset(t, 0, sizeof *t);
    if (!json_is_object(j)) return clad_err_set(err, CLAD_EINVAL, "stream: %s must be an object", where);
    const char *name = json_string_value(json_object_get(j, "name"));
    if (!name || !*name || strlen(name) >= sizeof t->name)
        return clad_err_set(err, CLAD_EINVAL, "stream: %s needs a 'name' of 1 to %d characters", where,
                            STREAM_NAME_MAX - 1);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(where, sizeof where, "task '%s'", name);
    if (check_keys(j, keys, where, err)) return CLAD_EINVAL;
    if (parse_source(json_string_value(json_object_get(j, "data")), &t->data, where, err)) return CLAD_EINVAL;
    json_t *tf = json_object_get(j, "transforms");
    if (tf) {
        if (!json_is_array(tf) || json_array_size(tf) > STREAM_MAX_TRANSFORMS)
            return clad_err_set(err, CLAD_EINVAL, "stream: %s: 'transforms' must be a list of at most %d", where,
                                STREAM_MAX_TRANSFORMS);
        t->n_transforms = (int)json_array_size(tf);
        for (int i = 0; i < t->n_transforms; i++)
            if (parse_transform(&t->transforms[i], json_array_get(tf, (size_t)i), where, err)) return CLAD_EINVAL;
    }
    t->teacher_scale = 0.5;
    t->teacher_seed = 1;
    t->seed = (uint64_t)index + 1;
    int rc;
    if ((rc = get_num(j, "teacher_scale", 0, 100, &t->teacher_scale, false, where, err))) return rc;
    if ((rc = get_seed(j, "teacher_seed", &t->teacher_seed, where, err))) return rc;
    if ((rc = get_seed(j, "seed", &t->seed, where, err))) return rc;
    json_t *tr = json_object_get(j, "teacher_rank");
    if (t->data == STREAM_SYNTHETIC) {
        if (!json_is_object(tr) || json_object_size(tr) < 1 || json_object_size(tr) > MODEL_MAX_LINEARS)
            return clad_err_set(err, CLAD_EINVAL, "stream: %s: a synthetic task needs 'teacher_rank': {\"layer\": rank}",
                                where);
        const char *key;
        json_t *v;
        json_object_foreach(tr, key, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 4096 ||
                strlen(key) >= PARAM_NAME_MAX)
                return clad_err_set(err, CLAD_EINVAL, "stream: %s: teacher_rank '%s' must be an integer in [1, 4096]",
                                    where, key);
            snprintf(t->teacher_layer[t->n_teacher], PARAM_NAME_MAX, "%s", key);
            t->teacher_rank[t->n_teacher++] = (int)json_integer_value(v);
        }
    } else if (tr) {
        return clad_err_set(err, CLAD_EINVAL, "stream: %s: 'teacher_rank' is only for synthetic tasks", where);
    }
    return 0;
}

static int parse_base(stream *s, const json_t *b, clad_err *err)
{
    static const char *const keys[] = {"model", "pretrain", "path", "init_seed", NULL};
    static const char *const pkeys[] = {"data", "epochs", "seed", "samples", NULL};
    if (!json_is_object(b)) return clad_err_set(err, CLAD_EINVAL, "stream: 'base' must be an object");
    if (check_keys(b, keys, "base", err)) return CLAD_EINVAL;
    json_t *path = json_object_get(b, "path");
    if (path) {
        const char *p = json_string_value(path);
        if (!p || !*p) return clad_err_set(err, CLAD_EINVAL, "stream: base 'path' must be a file name");
        int w = p[0] == '/' || !s->dir[0] ? snprintf(s->base_path, sizeof s->base_path, "%s", p)
                                          : snprintf(s->base_path, sizeof s->base_path, "%s/%s", s->dir, p);
        if (w < 0 || (size_t)w >= sizeof s->base_path)
            return clad_err_set(err, CLAD_EINVAL, "stream: base 'path' is too long");
        s->base_from_file = true;
        if (json_object_get(b, "pretrain") || json_object_get(b, "init_seed"))
            return clad_err_set(err, CLAD_EINVAL, "stream: base 'path' excludes 'pretrain' and 'init_seed'");
        return 0;
    }
    json_t *mj = json_object_get(b, "model");
    if (!mj) return clad_err_set(err, CLAD_EINVAL, "stream: base needs 'path' or 'model'");
    if (model_config_from_json(&s->base_cfg, mj, err)) {
        /* An unknown preset is not_found to model_config_from_json but a mistake in this file. */
        if (err) err->code = CLAD_EINVAL;
        clad_err_prefix(err, "stream: base: ");
        return CLAD_EINVAL;
    }
    int rc;
    if ((rc = get_seed(b, "init_seed", &s->init_seed, "base", err))) return rc;
    json_t *p = json_object_get(b, "pretrain");
    if (!p) return 0;
    if (!json_is_object(p)) return clad_err_set(err, CLAD_EINVAL, "stream: base 'pretrain' must be an object");
    if (check_keys(p, pkeys, "base.pretrain", err)) return CLAD_EINVAL;
    s->pretrain = true;
    s->pretrain_epochs = 3;
    s->pretrain_seed = 1;
    s->pretrain_samples = 0;
    if (parse_source(json_string_value(json_object_get(p, "data")), &s->pretrain_data, "base.pretrain", err))
        return CLAD_EINVAL;
    if (s->pretrain_data == STREAM_SYNTHETIC)
        return clad_err_set(err, CLAD_EINVAL, "stream: base.pretrain: only \"fmnist\" or \"mnist\" data can pretrain a base");
    if ((rc = get_int(p, "epochs", 1, 1000, &s->pretrain_epochs, false, "base.pretrain", err))) return rc;
    if ((rc = get_int(p, "samples", 16, DATASET_MAX_SAMPLES, &s->pretrain_samples, false, "base.pretrain", err)))
        return rc;
    return get_seed(p, "seed", &s->pretrain_seed, "base.pretrain", err);
}

int stream_parse(stream *s, const char *text, const char *dir, clad_err *err)
{
    static const char *const keys[] = {"name", "base", "train_per_task", "test_per_task", "epochs", "seed", "lr",
                                       "batch", "alpha", "quick", "probe", "tasks", NULL};
    static const char *const pkeys[] = {"samples", "holdout", "steps", "batch", "lr", "points", NULL};
    static const char *const qkeys[] = {"train_per_task", "test_per_task", "epochs", "pretrain_samples", NULL};
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s", dir ? dir : "");
    json_error_t je;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!j) return clad_err_set(err, CLAD_EINVAL, "stream: not valid JSON (line %d: %s)", je.line, je.text);
    int rc = CLAD_EINVAL;
    if (!json_is_object(j)) {
        clad_err_set(err, CLAD_EINVAL, "stream: the file must hold one JSON object");
        goto done;
    }
    if (check_keys(j, keys, "the stream", err)) goto done;
    const char *name = json_string_value(json_object_get(j, "name"));
    if (!name || !*name || strlen(name) >= sizeof s->name) {
        clad_err_set(err, CLAD_EINVAL, "stream: 'name' must be a string of 1 to %d characters", STREAM_NAME_MAX - 1);
        goto done;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    if (parse_base(s, json_object_get(j, "base"), err)) goto done;
    s->epochs = 1;
    s->seed = 1;
    s->batch = 64;
    double lr = 1e-3, alpha = 16;
    if (get_int(j, "train_per_task", 1, DATASET_MAX_SAMPLES, &s->train_per_task, true, "the stream", err) ||
        get_int(j, "test_per_task", 1, DATASET_MAX_SAMPLES, &s->test_per_task, true, "the stream", err) ||
        get_int(j, "epochs", 1, 1000, &s->epochs, false, "the stream", err) ||
        get_int(j, "batch", 1, 4096, &s->batch, false, "the stream", err) ||
        get_seed(j, "seed", &s->seed, "the stream", err) ||
        get_num(j, "lr", 1e-8, 10, &lr, false, "the stream", err) ||
        get_num(j, "alpha", 1e-3, 1e6, &alpha, false, "the stream", err))
        goto done;
    s->lr = (float)lr;
    s->alpha = (float)alpha;
    json_t *q = json_object_get(j, "quick");
    if (q) {
        if (!json_is_object(q) || check_keys(q, qkeys, "quick", err)) {
            clad_err_set(err, CLAD_EINVAL, "stream: 'quick' must be an object");
            goto done;
        }
        if (get_int(q, "train_per_task", 1, DATASET_MAX_SAMPLES, &s->quick_train, false, "quick", err) ||
            get_int(q, "test_per_task", 1, DATASET_MAX_SAMPLES, &s->quick_test, false, "quick", err) ||
            get_int(q, "epochs", 1, 1000, &s->quick_epochs, false, "quick", err) ||
            get_int(q, "pretrain_samples", 16, DATASET_MAX_SAMPLES, &s->quick_pretrain_samples, false, "quick", err))
            goto done;
    }
    json_t *pr = json_object_get(j, "probe");
    if (pr) {
        if (!json_is_object(pr)) {
            clad_err_set(err, CLAD_EINVAL, "stream: 'probe' must be an object");
            goto done;
        }
        if (check_keys(pr, pkeys, "probe", err) ||
            get_int(pr, "samples", 16, 65536, &s->probe_samples, false, "probe", err) ||
            get_int(pr, "holdout", 16, 65536, &s->probe_holdout, false, "probe", err) ||
            get_int(pr, "steps", 1, 10000, &s->probe_steps, false, "probe", err) ||
            get_int(pr, "batch", 1, 4096, &s->probe_batch, false, "probe", err) ||
            get_int(pr, "points", 1, 64, &s->probe_points, false, "probe", err) ||
            get_num(pr, "lr", 1e-8, 1, &s->probe_lr, false, "probe", err))
            goto done;
    }
    json_t *tasks = json_object_get(j, "tasks");
    if (!json_is_array(tasks) || json_array_size(tasks) < 1 || json_array_size(tasks) > STREAM_MAX_TASKS) {
        clad_err_set(err, CLAD_EINVAL, "stream: 'tasks' must be a list of 1 to %d tasks", STREAM_MAX_TASKS);
        goto done;
    }
    s->n_tasks = (int)json_array_size(tasks);
    for (int i = 0; i < s->n_tasks; i++) {
        if (parse_task(&s->tasks[i], json_array_get(tasks, (size_t)i), i, err)) goto done;
        for (int k = 0; k < i; k++)
            if (!strcmp(s->tasks[k].name, s->tasks[i].name)) {
                clad_err_set(err, CLAD_EINVAL, "stream: two tasks are named '%s'", s->tasks[i].name);
                goto done;
            }
        if (s->tasks[i].data == STREAM_SYNTHETIC && s->base_from_file) {
            /* Allowed: the teacher is built from whatever base is loaded. */
        }
    }
    rc = 0;
done:
    json_decref(j);
    return rc;
}

int stream_load(stream *s, const char *path, clad_err *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = file_read_all(path, 1 << 20, &buf, &len, err);
    if (rc) return rc;
    char *copy = strdup(path);
    if (!copy) abort();
    rc = stream_parse(s, (const char *)buf, dirname(copy), err);
    if (rc) clad_err_prefix(err, "%s: ", path);
    free(copy);
    free(buf);
    return rc;
}

void stream_make_quick(stream *s)
{
    int tr = s->quick_train ? s->quick_train : (s->train_per_task < 1000 ? s->train_per_task : 1000);
    int te = s->quick_test ? s->quick_test : (s->test_per_task < 500 ? s->test_per_task : 500);
    s->train_per_task = tr;
    s->test_per_task = te;
    if (s->quick_epochs) s->epochs = s->quick_epochs;
    else if (s->epochs > 2) s->epochs = 2;
    int ps = s->pretrain_samples ? s->pretrain_samples : 60000;
    s->pretrain_samples = s->quick_pretrain_samples ? s->quick_pretrain_samples : (ps < 2000 ? ps : 2000);
}

int stream_task_find(const stream *s, const char *name)
{
    for (int i = 0; i < s->n_tasks; i++)
        if (!strcmp(s->tasks[i].name, name)) return i;
    return -1;
}

/* ---- sources ---------------------------------------------------------------------------------------- */

void stream_sources_finish(stream_sources *src)
{
    if (!src) return;
    dataset_finish(&src->fmnist_train);
    dataset_finish(&src->fmnist_test);
    src->fmnist_loaded = false;
    dataset_finish(&src->mnist_train);
    dataset_finish(&src->mnist_test);
    src->mnist_loaded = false;
}

static int load_fmnist(stream_sources *src, clad_err *err)
{
    if (src->fmnist_loaded) return 0;
    const char *dir = getenv("CLAD_FMNIST_DIR");
    int rc = dataset_load_fmnist(&src->fmnist_train, dir, true, err);
    if (!rc) rc = dataset_load_fmnist(&src->fmnist_test, dir, false, err);
    if (rc) {
        clad_err_prefix(err, "Fashion-MNIST (set CLAD_FMNIST_DIR or install it in %s): ",
                        dir ? dir : FMNIST_DEFAULT_DIR);
        stream_sources_finish(src);
        return rc;
    }
    src->fmnist_loaded = true;
    return 0;
}

static int load_mnist(stream_sources *src, clad_err *err)
{
    if (src->mnist_loaded) return 0;
    const char *dir = getenv("CLAD_MNIST_DIR");
    if (!dir) dir = STREAM_MNIST_DEFAULT_DIR;
    /* Same file names and format as Fashion-MNIST. */
    int rc = dataset_load_fmnist(&src->mnist_train, dir, true, err);
    if (!rc) rc = dataset_load_fmnist(&src->mnist_test, dir, false, err);
    if (rc) {
        clad_err_prefix(err, "MNIST (run `make bench-data` or set CLAD_MNIST_DIR; looked in %s): ", dir);
        stream_sources_finish(src);
        return rc;
    }
    src->mnist_loaded = true;
    return 0;
}

/* The train or test split of an image source, loaded on first use. */
static const dataset *image_source(stream_sources *src, stream_source which, bool train, clad_err *err)
{
    if (which == STREAM_MNIST) {
        if (load_mnist(src, err)) return NULL;
        return train ? &src->mnist_train : &src->mnist_test;
    }
    if (load_fmnist(src, err)) return NULL;
    return train ? &src->fmnist_train : &src->fmnist_test;
}

/* A 64-bit mix of a few integers, for seeds derived from the stream seed. */
static uint64_t mix(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ (b + 0x632be59bd9b4e019ULL) * 0xbf58476d1ce4e5b9ULL ^ c * 0x94d049bb133111ebULL;
    x ^= x >> 31;
    x *= 0xd6e8feb86659fd93ULL;
    return x ^ (x >> 32);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

/* ---- base ------------------------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Random inputs of the synthetic tasks: N(0,1) features for an MLP, U(0,1) pixels for a ViT. */
static void random_inputs(float *x, size_t n, const model *m, uint64_t seed)
{
    rng r;
    rng_init(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = m->cfg.kind == MODEL_MLP ? rng_normal(&r) : rng_uniform(&r);
}

/* A random network is a poor reference: its argmax favours a few classes and its logits are nearly flat,
 * so its loss on its own labels is close to log(K). Shifting the head bias by the mean logit over random
 * inputs balances the classes; scaling the head so the logits spread with a standard deviation of
 * RANDOM_BASE_LOGIT_STD makes it confident, like a trained model. */
#define RANDOM_BASE_LOGIT_STD 4.0
static int calibrate_head(model *m, clad_err *err)
{
    int n = 2048, B = 256, dim = model_config_input_dim(&m->cfg), K = m->cfg.n_classes;
    float *x = malloc((size_t)n * (size_t)dim * sizeof *x);
    model_ws *ws = model_ws_create(m, B, 1, K, false, err);
    int rc = 0;
    if (!x || !ws) {
        rc = ws ? clad_err_set(err, CLAD_ENOMEM, "out of memory") : CLAD_ENOMEM;
        goto cleanup;
    }
    random_inputs(x, (size_t)n * dim, m, 0xba1a0ceULL);
    double mean[MODEL_MAX_CLASSES] = {0}, sq = 0.0;
    for (int s = 0; s < n; s += B) {
        model_forward(ws, m, NULL, x + (size_t)s * dim, NULL, B);
        const float *lg = model_ws_logits(ws);
        for (int i = 0; i < B; i++)
            for (int k = 0; k < K; k++) mean[k] += (double)lg[(size_t)i * K + k] / n;
    }
    for (int s = 0; s < n; s += B) {
        model_forward(ws, m, NULL, x + (size_t)s * dim, NULL, B);
        const float *lg = model_ws_logits(ws);
        for (int i = 0; i < B; i++)
            for (int k = 0; k < K; k++) {
                double d = (double)lg[(size_t)i * K + k] - mean[k];
                sq += d * d / ((double)n * K);
            }
    }
    const model_linear *H = &m->linear[m->n_linear - 1];
    float *w = param_set_ptr(&m->params, H->weight), *b = param_set_ptr(&m->params, H->bias);
    float c = sq > 0.0 ? (float)(RANDOM_BASE_LOGIT_STD / sqrt(sq)) : 1.0f;
    for (size_t i = 0; i < (size_t)H->out * (size_t)H->in; i++) w[i] *= c;
    for (int k = 0; k < K; k++) b[k] = (b[k] - (float)mean[k]) * c;
cleanup:
    free(x);
    model_ws_destroy(ws);
    return rc;
}

model *stream_base_create(const stream *s, stream_sources *src, const char *cache_dir, double *seconds,
                          clad_err *err)
{
    double t0 = now_s();
    model *m = NULL;
    if (seconds) *seconds = 0;
    if (s->base_from_file) {
        m = model_load(s->base_path, NULL, err);
        if (!m) clad_err_prefix(err, "stream base '%s': ", s->base_path);
        return m;
    }
    char cache_path[1200] = "";
    int samples = s->pretrain_samples ? s->pretrain_samples : s->train_per_task;
    if (s->pretrain && cache_dir) {
        json_t *cj = model_config_to_json(&s->base_cfg);
        char *ctext = json_dumps(cj, JSON_COMPACT | JSON_SORT_KEYS);
        char desc[1024];
        snprintf(desc, sizeof desc, "%s|%s|%d|%d|%llu|%g|%d", ctext ? ctext : "",
                 s->pretrain_data == STREAM_MNIST ? "mnist" : "fmnist", s->pretrain_epochs, samples,
                 (unsigned long long)s->pretrain_seed, (double)s->lr, s->batch);
        free(ctext);
        json_decref(cj);
        snprintf(cache_path, sizeof cache_path, "%s/base-%016llx.safetensors", cache_dir,
                 (unsigned long long)fnv1a(desc));
        struct stat st;
        if (stat(cache_path, &st) == 0) {
            m = model_load(cache_path, &s->base_cfg, err);
            if (m) {
                if (seconds) *seconds = now_s() - t0;
                return m;
            }
            clad_err_clear(err);  /* a bad cache entry is rebuilt */
        }
    }
    m = model_create(&s->base_cfg, err);
    if (!m) return NULL;
    if (!s->pretrain) {
        model_init_random(m, s->init_seed);
        if (calibrate_head(m, err)) goto fail;
        if (seconds) *seconds = now_s() - t0;
        return m;
    }
    model_init_random(m, s->pretrain_seed);
    const dataset *pre = image_source(src, s->pretrain_data, true, err);
    if (!pre) goto fail;
    dataset sub = {0};
    int n = samples < pre->n ? samples : pre->n;
    if (dataset_sample(&sub, pre, n, mix(s->pretrain_seed, 0xba5e, 0), err)) goto fail;
    train_config tc;
    train_config_default(&tc);
    tc.epochs = s->pretrain_epochs;
    tc.lr = s->lr;
    tc.batch = s->batch;
    tc.seed = s->pretrain_seed;
    int rc = train_run(m, NULL, &sub, &tc, NULL, NULL, NULL, err);
    dataset_finish(&sub);
    if (rc) {
        clad_err_prefix(err, "pretraining the base: ");
        goto fail;
    }
    if (cache_path[0]) {
        mkdir(cache_dir, 0755);
        clad_err e2 = {0};
        if (model_save(m, cache_path, &e2)) fprintf(stderr, "clad-bench: cannot cache the base: %s\n", e2.msg);
    }
    if (seconds) *seconds = now_s() - t0;
    return m;
fail:
    model_destroy(m);
    return NULL;
}

/* ---- task data -------------------------------------------------------------------------------------- */

/* Indices of the source samples that survive the task's label transforms (permute_labels, classes), found
 * by running those transforms on a one-feature dataset holding each sample's index. */
static int surviving_indices(int **out, int *n_out, const dataset *src, const stream_task *t, clad_err *err)
{
    dataset idx = {0};
    int rc = dataset_init(&idx, src->n, 1, (int[]){1}, err);
    if (rc) return rc;
    for (int i = 0; i < src->n; i++) {
        idx.x[i] = (float)i;
        idx.y[i] = src->y[i];
    }
    idx.n_classes = src->n_classes;
    for (int k = 0; k < t->n_transforms && !rc; k++) {
        transform_op op = t->transforms[k].op;
        if (op == TRANSFORM_PERMUTE_LABELS || op == TRANSFORM_CLASSES) rc = transform_apply(&idx, &t->transforms[k], 0, err);
    }
    if (!rc) {
        *out = malloc((size_t)idx.n * sizeof **out);
        if (!*out) rc = clad_err_set(err, CLAD_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < idx.n; i++) (*out)[i] = (int)idx.x[i];
        *n_out = idx.n;
    }
    dataset_finish(&idx);
    return rc;
}

static int image_task(dataset *out, const stream *s, int ti, bool train, stream_sources *src, clad_err *err)
{
    const stream_task *t = &s->tasks[ti];
    const dataset *full = image_source(src, t->data, train, err);
    if (!full) return err ? err->code : CLAD_EIO;
    int rc;
    int want = train ? s->train_per_task : s->test_per_task;
    int *idx = NULL, n = 0;
    if ((rc = surviving_indices(&idx, &n, full, t, err))) return rc;
    rng r;
    rng_init(&r, mix(s->seed, (uint64_t)ti + 1, train ? 1 : 2));
    rng_shuffle(&r, idx, n);
    if (want > n) want = n;
    rc = dataset_select(out, full, idx, want, err);
    free(idx);
    if (rc) return rc;
    out->n_classes = full->n_classes;
    for (int k = 0; k < t->n_transforms; k++)
        if ((rc = transform_apply(out, &t->transforms[k], train ? 1 : 2, err))) {
            dataset_finish(out);
            return rc;
        }
    return 0;
}

/* Random orthonormal columns Q (n,r) from a Gaussian matrix. */
static int random_orthonormal(float *Q, int n, int r, rng *g, clad_err *err)
{
    float *G = malloc((size_t)n * (size_t)r * sizeof *G);
    if (!G) return clad_err_set(err, CLAD_ENOMEM, "out of memory");
    for (size_t i = 0; i < (size_t)n * r; i++) G[i] = rng_normal(g);
    int rc = linalg_qr(Q, NULL, G, n, r, err);
    free(G);
    return rc;
}

/* The teacher of a synthetic task: the base plus, per listed layer, scale * ||W|| * Q1 Q2^T / sqrt(r). */
static model *make_teacher(const stream_task *t, const model *base, clad_err *err)
{
    model *tm = model_create(&base->cfg, err);
    if (!tm) return NULL;
    memcpy(tm->params.data, base->params.data, base->params.total * sizeof *base->params.data);
    for (int k = 0; k < t->n_teacher; k++) {
        int li = model_linear_find(base, t->teacher_layer[k]);
        if (li < 0 || base->linear[li].is_head) {
            clad_err_set(err, CLAD_EINVAL, "task '%s': teacher_rank names '%s', which is not an adaptable layer", t->name,
                         t->teacher_layer[k]);
            goto fail;
        }
        const model_linear *L = &base->linear[li];
        int r = t->teacher_rank[k];
        if (r > L->out || r > L->in) {
            clad_err_set(err, CLAD_EINVAL, "task '%s': teacher rank %d does not fit layer '%s' (%dx%d)", t->name, r,
                         L->name, L->out, L->in);
            goto fail;
        }
        float *W = param_set_ptr(&tm->params, L->weight);
        size_t n = (size_t)L->out * (size_t)L->in;
        double wn = sqrt(linalg_frob2(W, n));
        float *Q1 = malloc((size_t)L->out * r * sizeof *Q1), *Q2 = malloc((size_t)L->in * r * sizeof *Q2);
        if (!Q1 || !Q2) {
            free(Q1);
            free(Q2);
            clad_err_set(err, CLAD_ENOMEM, "out of memory");
            goto fail;
        }
        rng g;
        rng_init(&g, mix(t->teacher_seed, fnv1a(L->name), (uint64_t)r));
        int rc = random_orthonormal(Q1, L->out, r, &g, err);
        if (!rc) rc = random_orthonormal(Q2, L->in, r, &g, err);
        if (!rc) {
            float c = (float)(t->teacher_scale * wn / sqrt((double)r));
            for (int i = 0; i < L->out; i++)
                for (int j = 0; j < L->in; j++) {
                    double v = 0.0;
                    for (int q = 0; q < r; q++) v += (double)Q1[(size_t)i * r + q] * (double)Q2[(size_t)j * r + q];
                    W[(size_t)i * L->in + j] += c * (float)v;
                }
        }
        free(Q1);
        free(Q2);
        if (rc) goto fail;
    }
    return tm;
fail:
    model_destroy(tm);
    return NULL;
}

static int synthetic_task(dataset *out, const stream *s, int ti, bool train, const model *base, clad_err *err)
{
    const stream_task *t = &s->tasks[ti];
    if (!base) return clad_err_set(err, CLAD_EINVAL, "task '%s': synthetic data needs the base model", t->name);
    int n = train ? s->train_per_task : s->test_per_task;
    int rc = 0;
    if (base->cfg.kind == MODEL_MLP) rc = dataset_init(out, n, 1, (int[]){base->cfg.input_dim}, err);
    else rc = dataset_init(out, n, 3, (int[]){base->cfg.channels, base->cfg.height, base->cfg.width}, err);
    if (rc) return rc;
    model *tm = make_teacher(t, base, err);
    if (!tm) {
        dataset_finish(out);
        return err ? err->code : CLAD_EINVAL;
    }
    random_inputs(out->x, (size_t)n * out->dim, base, mix(t->seed, train ? 1 : 2, 0x5eed));
    rc = model_predict(tm, NULL, out->x, n, 256, NULL, out->y, err);
    out->n_classes = base->cfg.n_classes;
    model_destroy(tm);
    for (int k = 0; !rc && k < t->n_transforms; k++) rc = transform_apply(out, &t->transforms[k], train ? 1 : 2, err);
    if (rc) dataset_finish(out);
    return rc;
}

int stream_task_data(dataset *out, const stream *s, int ti, bool train, const model *base, stream_sources *src,
                     clad_err *err)
{
    memset(out, 0, sizeof *out);
    if (ti < 0 || ti >= s->n_tasks) return clad_err_set(err, CLAD_EINVAL, "stream: no task %d", ti);
    int rc = s->tasks[ti].data != STREAM_SYNTHETIC ? image_task(out, s, ti, train, src, err)
                                                   : synthetic_task(out, s, ti, train, base, err);
    if (rc) clad_err_prefix(err, "task '%s': ", s->tasks[ti].name);
    return rc;
}
