/* Shared plumbing of the compose benchmarks; see compose_util.h. */
#include "bench/compose_util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/model_io.h"

double compose_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static unsigned long long fnv1a(unsigned long long h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int compose_run_open(compose_run *r, const char *stream_path, bool quick, const char *cache, clad_err *err)
{
    memset(r, 0, sizeof *r);
    r->quick = quick;
    r->cache = cache;
    int rc = stream_load(&r->s, stream_path, err);
    if (rc) return rc;
    if (quick) stream_make_quick(&r->s);
    r->base = stream_base_create(&r->s, &r->src, cache, &r->base_seconds, err);
    if (!r->base) return err ? err->code : CLAD_EINVAL;
    r->base_fp = fnv1a(1469598103934665603ULL, r->base->params.data, r->base->params.total * sizeof(float));
    train_config_default(&r->tc);
    r->tc.epochs = r->s.epochs;
    r->tc.lr = r->s.lr;
    r->tc.batch = r->s.batch;
    r->tc.seed = r->s.seed;
    return 0;
}

void compose_run_close(compose_run *r)
{
    model_destroy(r->base);
    stream_sources_finish(&r->src);
    r->base = NULL;
}

int compose_task_data(compose_run *r, int ti, dataset *train, dataset *test, clad_err *err)
{
    int rc = 0;
    if (train && (rc = stream_task_data(train, &r->s, ti, true, r->base, &r->src, err))) return rc;
    if (test && (rc = stream_task_data(test, &r->s, ti, false, r->base, &r->src, err))) {
        if (train) dataset_finish(train);
        return rc;
    }
    return 0;
}

const char *compose_kind_name(compose_kind k)
{
    return k == COMPOSE_TL5 ? "tied-tl5" : k == COMPOSE_TL6 ? "tied-tl6" : "lora";
}

/* Everything that determines a trained adapter, hashed into its cache file name. */
static void cache_path(char *path, size_t n, const compose_run *r, int ti, compose_kind k, const int *ranks)
{
    char key[2048];
    const stream_task *t = &r->s.tasks[ti];
    int len = snprintf(key, sizeof key, "v1|%s|%s|%d|%d|%d|%d|%.9g|%.9g|%llu|%llx|", r->s.name, t->name, (int)k,
                       r->s.train_per_task, r->s.epochs, r->s.batch, (double)r->s.lr, (double)r->s.alpha,
                       (unsigned long long)r->s.seed, r->base_fp);
    unsigned long long h = fnv1a(1469598103934665603ULL, key, (size_t)len);
    h = fnv1a(h, t, sizeof *t);
    h = fnv1a(h, ranks, sizeof(int) * MODEL_MAX_LINEARS);
    snprintf(path, n, "%s/compose-%s-%s-%016llx.safetensors", r->cache, t->name, compose_kind_name(k), h);
}

adapter *compose_train(compose_run *r, int ti, const dataset *train, compose_kind k, int rank, const int *ranks_in,
                       double *seconds, clad_err *err)
{
    const model *m = r->base;
    int ranks[MODEL_MAX_LINEARS] = {0};
    for (int li = 0; li < m->n_linear; li++)
        ranks[li] = ranks_in ? ranks_in[li] : model_linear_is_default_target(m, li) ? rank : 0;
    int K = train ? train->n_classes : 0;
    char path[1400] = "";
    if (seconds) *seconds = 0.0;
    if (r->cache) {
        cache_path(path, sizeof path, r, ti, k, ranks);
        FILE *f = fopen(path, "rb");
        if (f) {
            fclose(f);
            adapter *a = adapter_load(m, path, NULL);
            if (a) return a;
        }
    }
    if (!train) {
        clad_err_set(err, CLAD_EINVAL, "task '%s': no cached adapter and no training data", r->s.tasks[ti].name);
        return NULL;
    }
    adapter *a = k == COMPOSE_LORA ? adapter_create(m, ranks, r->s.alpha, K, err)
                                   : adapter_tied_create(m, ranks, (tied_variant)k, K, err);
    if (!a) return NULL;
    adapter_init(a, m, r->s.seed + 1000u * (unsigned)ti + (unsigned)k);
    train_result res;
    double t0 = compose_now();
    if (train_run(r->base, a, train, &r->tc, NULL, NULL, &res, err)) {
        adapter_destroy(a);
        return NULL;
    }
    if (seconds) *seconds = compose_now() - t0;
    if (r->cache) adapter_save(a, m, path, NULL);  /* a failed cache write only costs time later */
    return a;
}

double compose_accuracy(const model *m, const adapter *a, const dataset *d)
{
    eval_result ev;
    clad_err e = {0};
    if (model_evaluate(m, a, d, 256, &ev, &e)) {
        fprintf(stderr, "clad-bench: evaluation failed: %s\n", e.msg);
        return -1.0;
    }
    return ev.accuracy;
}

int compose_task_list(const compose_run *r, const char *list, int *idx, int max)
{
    int n = 0;
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char name[STREAM_NAME_MAX];
        if (len == 0 || len >= sizeof name || n == max) {
            fprintf(stderr, "clad-bench: bad task list '%s'\n", list);
            return -1;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        int ti = stream_task_find(&r->s, name);
        if (ti < 0) {
            fprintf(stderr, "clad-bench: the stream has no task '%s'\n", name);
            return -1;
        }
        idx[n++] = ti;
        p += len + (comma ? 1 : 0);
    }
    return n;
}
