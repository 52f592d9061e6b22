/* Tests of pruning: the cubic schedule, the magnitude threshold, magnitude pruning during training, and
 * rank pruning on factors with known spectra. */
#include "tests/test.h"

#include <stdlib.h>

#include "core/linalg.h"
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

/* B (out,r) = Qb diag(s), A (r,in) = Qa^T with orthonormal Qb, Qa: B A has singular values s exactly. */
static void known_spectrum(float *B, float *A, const float *s, int out, int in, int r, uint64_t seed)
{
    float *G = malloc(sizeof(float) * (size_t)(out > in ? out : in) * r);
    float *Q = malloc(sizeof(float) * (size_t)(out > in ? out : in) * r);
    fill_normal(G, (size_t)out * r, 1.0f, seed);
    CHECK_INT_EQ(linalg_qr(Q, NULL, G, out, r, NULL), 0);
    for (int o = 0; o < out; o++)
        for (int j = 0; j < r; j++) B[o * r + j] = Q[o * r + j] * s[j];
    fill_normal(G, (size_t)in * r, 1.0f, seed + 1);
    CHECK_INT_EQ(linalg_qr(Q, NULL, G, in, r, NULL), 0);
    for (int j = 0; j < r; j++)
        for (int i = 0; i < in; i++) A[j * in + i] = Q[i * r + j];
    free(G);
    free(Q);
}

static double frob_diff_of_products(const float *B, const float *A, const float *B2, const float *A2, int out,
                                    int in, int r, int k)
{
    double sum = 0;
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            double x = 0, y = 0;
            for (int j = 0; j < r; j++) x += (double)B[o * r + j] * (double)A[j * in + i];
            for (int j = 0; j < k; j++) y += (double)B2[o * k + j] * (double)A2[j * in + i];
            sum += (x - y) * (x - y);
        }
    return sqrt(sum);
}

TEST(compose_prune_factors_on_known_spectra)
{
    enum { OUT = 12, IN = 9, R = 4 };
    const float s[R] = {10.0f, 5.0f, 1.0f, 0.1f};  /* energies 100, 25, 1, 0.01 of 126.01 */
    float B[OUT * R], A[R * IN], B2[OUT * R], A2[R * IN], S[R];
    known_spectrum(B, A, s, OUT, IN, R, 3);
    const struct { double tau; int k; } cases[] = {{0.5, 1}, {0.79, 1}, {0.8, 2}, {0.99, 2}, {0.9995, 3}, {1.0, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int k = -1;
        CHECK_INT_EQ(prune_factors(B2, A2, &k, S, B, A, OUT, IN, R, cases[c].tau, NULL), 0);
        CHECK_MSG(k == cases[c].k, "tau %g: rank %d, expected %d", cases[c].tau, k, cases[c].k);
        for (int j = 0; j < R; j++) CHECK_NEAR(S[j], s[j], 1e-4 * (double)s[0]);
        /* The error of the best rank-k approximation is the energy left out. */
        double left = 0;
        for (int j = k; j < R; j++) left += (double)s[j] * (double)s[j];
        CHECK_NEAR(frob_diff_of_products(B, A, B2, A2, OUT, IN, R, k), sqrt(left), 1e-4 * (double)s[0]);
    }
    /* A zero update keeps nothing. */
    memset(B, 0, sizeof B);
    int k = -1;
    CHECK_INT_EQ(prune_factors(B2, A2, &k, S, B, A, OUT, IN, R, 0.9, NULL), 0);
    CHECK_INT_EQ(k, 0);
    clad_err e = {0};
    CHECK_INT_EQ(prune_factors(B2, A2, &k, S, B, A, OUT, IN, R, 1.5, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "tau") != NULL);
}

/* Random (non-orthogonal) factors: the spectrum through QR must equal the SVD of the dense product. */
TEST(compose_prune_factors_match_dense_svd)
{
    enum { OUT = 20, IN = 15, R = 6 };
    float B[OUT * R], A[R * IN], B2[OUT * R], A2[R * IN], S[R], D[OUT * IN], Sd[IN];
    fill_normal(B, sizeof B / sizeof *B, 1.0f, 5);
    fill_normal(A, sizeof A / sizeof *A, 1.0f, 6);
    for (int o = 0; o < OUT; o++)
        for (int i = 0; i < IN; i++) {
            double x = 0;
            for (int j = 0; j < R; j++) x += (double)B[o * R + j] * (double)A[j * IN + i];
            D[o * IN + i] = (float)x;
        }
    CHECK_INT_EQ(linalg_svd(NULL, Sd, NULL, D, OUT, IN, NULL), 0);
    int k = 0;
    CHECK_INT_EQ(prune_factors(B2, A2, &k, S, B, A, OUT, IN, R, 0.95, NULL), 0);
    for (int j = 0; j < R; j++) CHECK_NEAR(S[j], Sd[j], 1e-4 * (double)Sd[0]);
    CHECK_INT_EQ(k, linalg_energy_rank(Sd, R, 0.95));
}

/* A LoRA of ranks 6 (fc1, 12 x 16) and 5 (fc2, 12 x 12), alpha 12, whose B A have the spectra s1 and s2. */
static adapter *adapter_with_spectra(const model *m, const float s1[6], const float s2[5])
{
    int ranks[MODEL_MAX_LINEARS] = {6, 5, 0};
    adapter *a = adapter_create(m, ranks, 12.0f, 4, NULL);
    adapter_init(a, m, 2);
    known_spectrum(param_set_ptr(&a->params, a->B[0]), param_set_ptr(&a->params, a->A[0]), s1, 12, 16, 6, 7);
    known_spectrum(param_set_ptr(&a->params, a->B[1]), param_set_ptr(&a->params, a->A[1]), s2, 12, 12, 5, 8);
    return a;
}

TEST(compose_prune_rank_shrinks_adapter_and_records_ranks)
{
    model *m = compose_small_mlp(16, 12, 2, 4, 1);
    int ranks[MODEL_MAX_LINEARS] = {6, 5, 0};
    /* Layer fc1: spectrum (8, 4, 0.01, 0, 0, 0); layer fc2: (3, 3, 3, 3, 3). */
    const float s1[6] = {8, 4, 0.01f, 0, 0, 0}, s2[5] = {3, 3, 3, 3, 3};
    adapter *a = adapter_with_spectra(m, s1, s2);
    clad_err e = {0};
    adapter *p = prune_rank(a, m, 0.99, &e);
    CHECK_MSG(p != NULL, "%s", e.msg);
    CHECK_INT_EQ(p->rank[0], 2);
    CHECK_INT_EQ(p->rank[1], 5);
    CHECK_INT_EQ(p->rank_before[0], 6);
    CHECK_INT_EQ(p->rank_before[1], 5);
    CHECK(adapter_param_count(p) < adapter_param_count(a));
    /* The layers' updates, scale included, are kept up to the dropped energy. */
    for (int li = 0; li < 2; li++) {
        const model_linear *L = &m->linear[li];
        float *d0 = malloc(sizeof(float) * (size_t)L->out * L->in), *d1 = malloc(sizeof(float) * (size_t)L->out * L->in);
        adapter_delta(d0, a, m, li);
        adapter_delta(d1, p, m, li);
        CHECK_ARRAY_NEAR(d1, d0, (size_t)L->out * L->in, 0.01 * 12.0 / 6 + 1e-4, 0);
        free(d0);
        free(d1);
    }
    /* Pruning again keeps the original ranks as the record. */
    adapter *p2 = prune_rank(p, m, 0.5, NULL);
    CHECK_INT_EQ(p2->rank[0], 1);
    CHECK_INT_EQ(p2->rank_before[0], 6);
    clad_err_clear(&e);
    adapter *t = adapter_tied_create(m, ranks, TIED_TL5, 4, NULL);
    CHECK(prune_rank(t, m, 0.9, &e) == NULL);
    CHECK(strstr(e.msg, "adapter_tied_to_lora") != NULL);
    adapter_destroy(t);
    adapter_destroy(p2);
    adapter_destroy(p);
    adapter_destroy(a);
    model_destroy(m);
}

/* prune_spectra gives prune_factors' singular values; prune_rank_to keeps the best approximation of the
 * ranks it is given, scale included, and refuses a rank above the adapter's. */
TEST(compose_prune_rank_to_given_ranks)
{
    model *m = compose_small_mlp(16, 12, 2, 4, 1);
    const float s1[6] = {8, 4, 2, 1, 0.5f, 0.25f}, s2[5] = {3, 2, 1, 1, 1};
    adapter *a = adapter_with_spectra(m, s1, s2);
    float *S = malloc(sizeof(float) * MODEL_MAX_LINEARS * PRUNE_MAX_RANK);
    CHECK_INT_EQ(prune_spectra(S, a, m, NULL), 0);
    CHECK_ARRAY_NEAR(S, s1, 6, 1e-4, 1e-4);
    CHECK_ARRAY_NEAR(S + PRUNE_MAX_RANK, s2, 5, 1e-4, 1e-4);
    CHECK(S[6] == 0.0f && S[2 * PRUNE_MAX_RANK] == 0.0f);
    int keep[MODEL_MAX_LINEARS] = {2, 0, 0};
    adapter *p = prune_rank_to(a, m, keep, NULL);
    CHECK(p != NULL);
    CHECK_INT_EQ(p->rank[0], 2);
    CHECK_INT_EQ(p->rank[1], 0);
    CHECK_INT_EQ(p->rank_before[0], 6);
    /* The kept change of fc1 is the top-2 part: what is left has the energy of 2, 1, 0.5, 0.25 (times the
     * scale 12/6 of the original). */
    const model_linear *L = &m->linear[0];
    size_t n = (size_t)L->out * L->in;
    float *d0 = malloc(sizeof(float) * n), *d1 = malloc(sizeof(float) * n);
    adapter_delta(d0, a, m, 0);
    adapter_delta(d1, p, m, 0);
    double res = 0.0;
    for (size_t i = 0; i < n; i++) res += ((double)d0[i] - (double)d1[i]) * ((double)d0[i] - (double)d1[i]);
    CHECK_NEAR(sqrt(res), 2.0 * sqrt(4 + 1 + 0.25 + 0.0625), 1e-3);
    keep[1] = 6;
    clad_err e = {0};
    CHECK(prune_rank_to(a, m, keep, &e) == NULL);
    CHECK(strstr(e.msg, "from rank 5 to 6") != NULL);
    free(d0);
    free(d1);
    free(S);
    adapter_destroy(p);
    adapter_destroy(a);
    model_destroy(m);
}
