/* clad-bench speed: training and inference throughput of the reference configs, reported against the
 * machine's own sgemm peak measured in the same run (ratios survive noisy shared machines; absolute
 * numbers do not). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench/bench.h"
#include "core/fold.h"
#include "core/model.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/train.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best of several runs of a large square sgemm. */
static double sgemm_peak_gflops(int n)
{
    float *a = malloc(sizeof(float) * (size_t)n * n), *b = malloc(sizeof(float) * (size_t)n * n);
    float *c = malloc(sizeof(float) * (size_t)n * n);
    rng r;
    rng_init(&r, 1);
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = rng_uniform(&r);
        b[i] = rng_uniform(&r);
    }
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double g = 2.0 * n * n * (double)n / (now_s() - t0) / 1e9;
        if (g > best) best = g;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* Multiply-add FLOPs of one forward pass on N samples (matrix products only: they are >95% of the work). */
static double forward_flops(const model *m, const adapter *a, int N)
{
    double f = 0;
    int T = m->seq_len;
    for (int li = 0; li < m->n_linear; li++) {
        const model_linear *L = &m->linear[li];
        double rows = L->is_head ? N : (m->cfg.kind == MODEL_VIT ? (li == 0 ? (double)N * (T - 1) : (double)N * T) : N);
        f += 2.0 * rows * L->in * L->out;
        if (a && a->rank[li]) f += 2.0 * rows * a->rank[li] * (L->in + L->out);
    }
    if (m->cfg.kind == MODEL_VIT) f += m->cfg.depth * 4.0 * N * (double)T * T * m->cfg.dim; /* QK^T and AV */
    return f;
}

/* Backward with a frozen base: input gradients of every linear but the first, LoRA factor gradients,
 * attention's four products, and the head's weight gradient. */
static double backward_flops(const model *m, const adapter *a, int N)
{
    double f = 0;
    int T = m->seq_len;
    for (int li = 0; li < m->n_linear; li++) {
        const model_linear *L = &m->linear[li];
        double rows = L->is_head ? N : (m->cfg.kind == MODEL_VIT ? (li == 0 ? (double)N * (T - 1) : (double)N * T) : N);
        if (li > 0) f += 2.0 * rows * L->in * L->out;           /* dx */
        if (L->is_head) f += 2.0 * rows * L->in * L->out;       /* dW of the trained head */
        if (a && a->rank[li]) f += 2.0 * rows * a->rank[li] * (2.0 * L->in + 2.0 * L->out); /* g, dA, dB, dx */
    }
    if (m->cfg.kind == MODEL_VIT) f += m->cfg.depth * 8.0 * N * (double)T * T * m->cfg.dim;
    return f;
}

typedef struct speed_result {
    double train_samples_per_s, train_gflops, infer_b1, infer_b128;
    double folded_b1, folded_b128;   /* the adapter folded into the weights, as the daemon serves a hot version */
    double full_train_samples_per_s; /* every base weight trained, no adapter (how a base is made) */
    size_t params, adapter_params;
} speed_result;

/* Samples per second of whole training runs over d until `seconds` have passed. */
static double train_rate(model *m, adapter *a, const dataset *d, double seconds)
{
    train_config tc;
    train_config_default(&tc);
    tc.batch = 128;
    train_result tr;
    long samples = 0;
    double t0 = now_s();
    do {
        train_run(m, a, d, &tc, NULL, NULL, &tr, NULL);
        samples += tr.samples;
    } while (now_s() - t0 < seconds);
    return samples / (now_s() - t0);
}

/* Samples per second of predictions at batch bs on the first 512 samples of x, with a reused workspace (a
 * server keeps one per thread, so the timing excludes its allocation). */
static double infer_rate(const model *m, const adapter *a, const float *x, int dim, int bs, double seconds)
{
    int labels[512];
    long done = 0;
    model_ws *ws = model_ws_create(m, bs, 8, a ? a->n_classes : m->cfg.n_classes, false, NULL);
    double t0 = now_s();
    do {
        for (int s = 0; s + bs <= 512; s += bs) model_predict_ws(ws, m, a, x + (size_t)s * dim, bs, NULL, labels, NULL);
        done += 512;
    } while (now_s() - t0 < seconds);
    model_ws_destroy(ws);
    return done / (now_s() - t0);
}

static void bench_config(const char *preset, double seconds, speed_result *out)
{
    model_config cfg;
    model_config_preset(&cfg, preset, NULL);
    model *m = model_create(&cfg, NULL);
    model_init_random(m, 1);
    int ranks[MODEL_MAX_LINEARS] = {0};
    for (int li = 0; li < m->n_linear; li++)
        if (model_linear_is_default_target(m, li)) ranks[li] = 8;
    adapter *a = adapter_create(m, ranks, 16.0f, cfg.n_classes, NULL);
    adapter_init(a, m, 1);
    int dim = model_config_input_dim(&cfg);
    dataset d;
    int shape[3] = {cfg.channels, cfg.height, cfg.width};
    if (cfg.kind == MODEL_MLP) dataset_init(&d, 2048, 1, (int[]){dim}, NULL);
    else dataset_init(&d, 2048, 3, shape, NULL);
    rng r;
    rng_init(&r, 2);
    for (size_t i = 0; i < (size_t)d.n * dim; i++) d.x[i] = rng_uniform(&r);
    for (int i = 0; i < d.n; i++) d.y[i] = (int)rng_below(&r, 10);
    d.n_classes = 10;

    /* LoRA training: whole epochs of 2048 samples until `seconds` have passed. */
    out->train_samples_per_s = train_rate(m, a, &d, seconds);
    out->train_gflops = (forward_flops(m, a, 1) + backward_flops(m, a, 1)) * out->train_samples_per_s / 1e9;
    out->infer_b1 = infer_rate(m, a, d.x, dim, 1, seconds / 2);
    out->infer_b128 = infer_rate(m, a, d.x, dim, 128, seconds / 2);
    model *folded = model_fold(m, a, NULL);
    if (folded) {
        out->folded_b1 = infer_rate(folded, NULL, d.x, dim, 1, seconds / 2);
        out->folded_b128 = infer_rate(folded, NULL, d.x, dim, 128, seconds / 2);
        model_destroy(folded);
    }
    /* Last, since it changes the base: full training of every weight. */
    out->full_train_samples_per_s = train_rate(m, NULL, &d, seconds);
    out->params = m->params.total;
    out->adapter_params = a->params.total;
    dataset_finish(&d);
    adapter_destroy(a);
    model_destroy(m);
}

int bench_speed_main(int argc, char **argv)
{
    double seconds = 3.0;
    int json = 0, threads = 1;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--quick")) seconds = 0.5;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: clad-bench speed [--quick] [--json] [--threads N] [--model mlp|vit-tiny]\n");
            return 2;
        }
    }
    if (only && strcmp(only, "mlp") && strcmp(only, "vit-tiny")) {
        fprintf(stderr, "clad-bench speed: --model must be mlp or vit-tiny\n");
        return 2;
    }
    if (threads < 1 || threads > PAR_MAX_THREADS) {
        fprintf(stderr, "clad-bench speed: --threads must be 1..%d\n", PAR_MAX_THREADS);
        return 2;
    }
    /* The peak is OpenBLAS's own on the same number of threads; the engine then runs its kernels on a pool
     * of that many threads with OpenBLAS pinned to one (core/parallel.h). */
    blas_set_threads(threads);
    double peak = sgemm_peak_gflops(1024);
    blas_set_threads(1);
    par_pool *pool = par_pool_create(threads);
    if (!pool) {
        fprintf(stderr, "clad-bench speed: cannot start %d threads\n", threads);
        return 1;
    }
    par_bind(pool);
    speed_result res[2] = {0};
    const char *names[2] = {"mlp", "vit-tiny"};
    for (int i = 0; i < 2; i++)
        if (!only || !strcmp(only, names[i])) bench_config(names[i], seconds, &res[i]);
    par_bind(NULL);
    par_pool_destroy(pool);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf(json ? "{" : "");
    printf("\"sgemm_peak_gflops\": %.2f, \"threads\": %d, ", peak, threads);
    for (int i = 0; i < 2; i++)
        if (!only || !strcmp(only, names[i]))
            printf("\"%s\": {\"lora_rank\": 8, \"batch\": 128, \"base_params\": %zu, \"adapter_params\": %zu, "
               "\"train_samples_per_s\": %.1f, \"train_gflops\": %.3f, \"train_fraction_of_peak\": %.3f, "
               "\"infer_samples_per_s_b1\": %.1f, \"infer_samples_per_s_b128\": %.1f, "
               "\"infer_folded_samples_per_s_b1\": %.1f, \"infer_folded_samples_per_s_b128\": %.1f, "
               "\"full_train_samples_per_s\": %.1f}, ",
               names[i], res[i].params, res[i].adapter_params, res[i].train_samples_per_s, res[i].train_gflops,
               res[i].train_gflops / peak, res[i].infer_b1, res[i].infer_b128, res[i].folded_b1, res[i].folded_b128,
               res[i].full_train_samples_per_s);
    printf("\"peak_rss_mb\": %.1f%s\n", ru.ru_maxrss / 1024.0, json ? "}" : "");
    return 0;
}
