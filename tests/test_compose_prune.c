/* Tests of pruning: the cubic schedule, the magnitude threshold, magnitude pruning during training, and
 * rank pruning on factors with known spectra. */
#include "tests/test.h"

#include <stdlib.h>

#include "core/prune.h"
#include "core/rng.h"
#include "core/train.h"
#include "tests/test_compose.h"

TEST(compose_prune_cubic_schedule_values)
{
    /* LSLo's script: P = 0.9, t1 = 2, t2 = 10. */
    CHECK_NEAR(prune_cubic_fraction(0.9, 2, 10, 1), 0.0, 0);
    CHECK_NEAR(prune_cubic_fraction(0.9, 2, 10, 2), 0.0, 1e-12);
    CHECK_NEAR(prune_cubic_fraction(0.9, 2, 10, 7), 0.9 * (1 - 0.125), 1e-12);
    CHECK_NEAR(prune_cubic_fraction(0.9, 2, 10, 3), 0.9 * (1 - 0.729), 1e-12);
    CHECK_NEAR(prune_cubic_fraction(0.9, 2, 10, 12), 0.9, 1e-12);
    CHECK_NEAR(prune_cubic_fraction(0.9, 2, 10, 15), 0.9, 0);
    double prev = 0;
    for (int e = 1; e <= 15; e++) {
        double f = prune_cubic_fraction(0.9, 2, 10, e);
        CHECK(f >= prev);
        prev = f;
    }
}

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

TEST(compose_prune_threshold_matches_sorting)
{
    rng r;
    rng_init(&r, 5);
    for (int trial = 0; trial < 200; trial++) {
        size_t n = 1 + rng_below(&r, 300);
        float *x = malloc(n * sizeof *x), *sc = malloc(n * sizeof *sc), *sorted = malloc(n * sizeof *sorted);
        for (size_t i = 0; i < n; i++) {
            /* Few distinct values in some trials, so ties are common. */
            x[i] = trial % 2 ? (float)((int)rng_below(&r, 7) - 3) : rng_normal(&r);
            sorted[i] = fabsf(x[i]);
        }
        qsort(sorted, n, sizeof *sorted, cmp_desc);
        size_t k = rng_below(&r, (uint32_t)n + 2);
        float t = prune_magnitude_threshold(x, n, k, sc);
        if (k == 0) CHECK(isinf(t));
        else if (k >= n) CHECK(t == 0.0f);
        else CHECK_MSG(t == sorted[k - 1], "n %zu k %zu: %g vs %g", n, k, (double)t, (double)sorted[k - 1]);
        free(x);
        free(sc);
        free(sorted);
    }
}

TEST(compose_prune_schedule_masks_smallest_b_entries_during_training)
{
    dataset tr, te;
    compose_quadrant_data(&tr, 2000, 32, 0, 1);
    compose_quadrant_data(&te, 1000, 32, 0, 2);
    model *m = compose_small_mlp(32, 16, 2, 4, 9);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 4);
    adapter *a = adapter_create(m, ranks, 8.0f, 4, NULL);
    adapter_init(a, m, 5);
    prune_sched ps;
    CHECK_INT_EQ(prune_sched_init(&ps, a, 0.5, 2, 3, NULL), 0);
    CHECK_INT_EQ(ps.n, 16 * 4 * 2);
    train_config tc;
    train_config_default(&tc);
    tc.epochs = 8;
    tc.lr = 1e-2f;
    tc.epoch_hook = prune_sched_epoch_hook;
    tc.step_hook = prune_sched_step_hook;
    tc.hook_ctx = &ps;
    clad_err e = {0};
    CHECK_MSG(train_run(m, a, &tr, &tc, NULL, NULL, NULL, &e) == 0, "%s", e.msg);
    CHECK_NEAR(ps.fraction, 0.5, 0);
    size_t zeros = 0;
    for (int li = 0; li < 2; li++) {
        const float *B = param_set_ptr(&a->params, a->B[li]);
        for (size_t i = 0; i < a->params.t[a->B[li]].numel; i++) zeros += B[i] == 0.0f;
    }
    CHECK_INT_EQ(zeros, ps.n / 2);
    CHECK_INT_EQ(ps.pruned, ps.n / 2);
    eval_result ev;
    CHECK_INT_EQ(model_evaluate(m, a, &te, 256, &ev, NULL), 0);
    printf("# accuracy with half of B pruned: %.4f\n", (double)ev.accuracy);
    CHECK_MSG(ev.accuracy >= 0.85f, "accuracy %.4f < 0.85", (double)ev.accuracy);
    /* A bad schedule is refused by name. */
    prune_sched bad;
    clad_err_clear(&e);
    CHECK_INT_EQ(prune_sched_init(&bad, a, 1.0, 2, 3, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "fraction") != NULL);
    prune_sched_finish(&ps);
    adapter_destroy(a);
    model_destroy(m);
    dataset_finish(&tr);
    dataset_finish(&te);
}
