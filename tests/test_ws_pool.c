/* The prediction workspace pool (core/ws_pool.h): reuse, fit checks, the idle bound, forgetting a model,
 * and predictions through pooled workspaces equal to fresh ones. */
#include "tests/test.h"

#include "core/train.h"
#include "core/ws_pool.h"
#include "tests/test_compose.h"

TEST(ws_pool_reuses_fitting_workspaces_and_bounds_idle_ones)
{
    model *m = compose_small_mlp(10, 7, 2, 4, 1), *m2 = compose_small_mlp(10, 7, 2, 4, 2);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 2);
    adapter *small = adapter_create(m, ranks, 4.0f, 4, NULL);
    compose_default_ranks(ranks, m, 6);
    adapter *big = adapter_create(m, ranks, 4.0f, 9, NULL);
    ws_pool *p = ws_pool_create(8, 2);
    CHECK(p != NULL);
    clad_err e = {0};
    model_ws *a = ws_pool_take(p, m, small, &e);
    CHECK(a != NULL);
    ws_pool_give(p, a);
    CHECK_INT_EQ(ws_pool_idle(p), 1);
    CHECK(ws_pool_take(p, m, small, &e) == a);          /* reused */
    ws_pool_give(p, a);
    model_ws *b = ws_pool_take(p, m, big, &e);          /* a's ranks and classes are too small */
    CHECK(b != NULL && b != a);
    CHECK(model_ws_fits(b, m, big));
    model_ws *c = ws_pool_take(p, m2, NULL, &e);        /* another model */
    CHECK(c != NULL && c != a && model_ws_model(c) == m2);
    model_ws *d = ws_pool_take(p, m, small, &e);        /* a, the only idle one that fits */
    CHECK(d == a);
    ws_pool_give(p, b);
    ws_pool_give(p, c);
    ws_pool_give(p, d);                                 /* beyond max_idle: destroyed */
    CHECK_INT_EQ(ws_pool_idle(p), 2);
    ws_pool_forget_model(p, m2);
    CHECK_INT_EQ(ws_pool_idle(p), 1);
    ws_pool_give(p, NULL);
    ws_pool_destroy(p);
    ws_pool_destroy(NULL);
    CHECK(ws_pool_create(0, 1) == NULL);
    adapter_destroy(small);
    adapter_destroy(big);
    model_destroy(m);
    model_destroy(m2);
}

TEST(ws_pool_predictions_match_fresh_workspaces)
{
    model *m = compose_small_vit(2);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 2);
    adapter *a = adapter_create(m, ranks, 4.0f, 3, NULL);
    adapter_init(a, m, 3);
    compose_randomise(a, 0.3f, 3);
    ws_pool *p = ws_pool_create(4, 1);
    int dim = model_config_input_dim(&m->cfg), n = 10;
    float *x = malloc(sizeof(float) * (size_t)n * dim), want[30], got[30];
    fill_normal(x, (size_t)n * dim, 1.0f, 4);
    CHECK_INT_EQ(model_predict(m, a, x, n, 4, want, NULL, NULL), 0);
    for (int rep = 0; rep < 3; rep++) {  /* the same workspace again, dirty from the last request */
        model_ws *ws = ws_pool_take(p, m, a, NULL);
        CHECK_INT_EQ(model_predict_ws(ws, m, a, x, n, got, NULL, NULL), 0);
        ws_pool_give(p, ws);
        CHECK(memcmp(got, want, sizeof want) == 0);
    }
    ws_pool_destroy(p);
    free(x);
    adapter_destroy(a);
    model_destroy(m);
}
