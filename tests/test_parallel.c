/* Tests of the engine's thread pool (core/parallel.h): every task runs exactly once on a valid worker,
 * nested runs are serial, budgets clamp, and whole training runs are bit-identical for any thread count
 * or budget, even one that changes while training. */
#include "tests/test.h"

#include <stdatomic.h>

#include "core/parallel.h"
#include "core/rng.h"
#include "core/train.h"
#include "io/model_io.h"

typedef struct count_ctx {
    atomic_int runs[512];
    atomic_int bad_worker;
    atomic_int nested_tasks;
    int workers;
} count_ctx;

static void nested_task(void *ctx, int task, int worker)
{
    count_ctx *c = ctx;
    if (worker != 0) atomic_fetch_add(&c->bad_worker, 1);  /* nested runs are serial, on worker 0 */
    atomic_fetch_add(&c->nested_tasks, 1);
}

static void count_task(void *ctx, int task, int worker)
{
    count_ctx *c = ctx;
    atomic_fetch_add(&c->runs[task], 1);
    if (worker < 0 || worker >= c->workers) atomic_fetch_add(&c->bad_worker, 1);
    if (worker > 0) CHECK(par_scratch(worker, 1000) != NULL);
    if (task % 7 == 0) par_for(3, nested_task, ctx);
}

TEST(parallel_runs_every_task_once_on_a_valid_worker)
{
    for (int threads = 1; threads <= 4; threads++) {
        par_pool *p = par_pool_create(threads);
        CHECK(p != NULL);
        CHECK_INT_EQ(par_pool_threads(p), threads);
        par_bind(p);
        CHECK_INT_EQ(par_workers(), threads);
        int sizes[] = {0, 1, 2, 3, 17, 512};
        for (int rep = 0; rep < 20; rep++) {
            for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
                static count_ctx c;
                memset(&c, 0, sizeof c);
                c.workers = par_workers();
                par_for(sizes[k], count_task, &c);
                for (int t = 0; t < sizes[k]; t++) CHECK_INT_EQ(atomic_load(&c.runs[t]), 1);
                CHECK_INT_EQ(atomic_load(&c.bad_worker), 0);
                CHECK_INT_EQ(atomic_load(&c.nested_tasks), 3 * ((sizes[k] + 6) / 7));
            }
        }
        par_bind(NULL);
        CHECK_INT_EQ(par_workers(), 1);
        par_pool_destroy(p);
    }
    par_pool_destroy(NULL);
    CHECK(par_pool_create(0) == NULL);
    CHECK(par_pool_create(PAR_MAX_THREADS + 1) == NULL);
}

TEST(parallel_budget_is_clamped_and_bindings_nest)
{
    par_pool *p = par_pool_create(3), *q = par_pool_create(2);
    CHECK(p && q);
    par_pool_set_budget(p, 0);
    CHECK_INT_EQ(par_pool_budget(p), 1);
    par_pool_set_budget(p, 99);
    CHECK_INT_EQ(par_pool_budget(p), 3);
    par_pool_set_budget(p, 2);
    CHECK(par_bind(p) == NULL);
    CHECK_INT_EQ(par_workers(), 2);
    CHECK(par_bind(q) == p);
    CHECK_INT_EQ(par_workers(), 2);
    CHECK(par_bind(p) == q);
    par_bind(NULL);
    par_pool_destroy(p);
    par_pool_destroy(q);
}

/* A small ViT big enough that its kernels split into several tasks. */
static model *vit_for_threads(void)
{
    model_config cfg;
    model_config_preset(&cfg, "vit-tiny", NULL);
    model *m = model_create(&cfg, NULL);
    CHECK(m != NULL);
    model_init_random(m, 3);
    return m;
}

typedef struct budget_flip {
    par_pool *pool;
} budget_flip;

/* Changes the pool's budget every step, as the daemon does when predictions arrive. */
static bool flip_budget(void *ctx, const train_progress *pr)
{
    budget_flip *f = ctx;
    if (f->pool) par_pool_set_budget(f->pool, 1 + (int)(pr->step % par_pool_threads(f->pool)));
    return true;
}

static void train_with_threads(int threads, bool flip, uint8_t **out, size_t *len)
{
    model *m = vit_for_threads();
    int ranks[MODEL_MAX_LINEARS] = {0};
    for (int li = 0; li < m->n_linear; li++)
        if (model_linear_is_default_target(m, li)) ranks[li] = 4;
    adapter *a = adapter_create(m, ranks, 8.0f, 10, NULL);
    CHECK(a != NULL);
    adapter_init(a, m, 4);
    dataset d;
    dataset_init(&d, 96, 3, (int[]){1, 28, 28}, NULL);
    rng r;
    rng_init(&r, 5);
    for (size_t i = 0; i < (size_t)d.n * 784; i++) d.x[i] = rng_uniform(&r);
    for (int i = 0; i < d.n; i++) d.y[i] = (int)rng_below(&r, 10);
    d.n_classes = 10;
    train_config tc;
    train_config_default(&tc);
    tc.batch = 32;
    tc.epochs = 2;
    par_pool *p = threads > 1 ? par_pool_create(threads) : NULL;
    budget_flip f = {flip ? p : NULL};
    par_bind(p);
    CHECK_INT_EQ(train_run(m, a, &d, &tc, flip_budget, &f, NULL, NULL), 0);
    par_bind(NULL);
    par_pool_destroy(p);
    CHECK_INT_EQ(adapter_to_buffer(a, m, out, len, NULL), 0);
    dataset_finish(&d);
    adapter_destroy(a);
    model_destroy(m);
}

TEST_TIMEOUT(parallel_training_is_bit_identical_for_any_thread_count, 120)
{
    uint8_t *ref = NULL, *got = NULL;
    size_t nref, ngot;
    train_with_threads(1, false, &ref, &nref);
    int cases[][2] = {{2, 0}, {3, 0}, {3, 1}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        train_with_threads(cases[k][0], cases[k][1], &got, &ngot);
        CHECK_MSG(ngot == nref && memcmp(got, ref, nref) == 0, "%d threads%s: adapter differs from 1 thread",
                  cases[k][0], cases[k][1] ? " with a changing budget" : "");
        free(got);
    }
    free(ref);
}
