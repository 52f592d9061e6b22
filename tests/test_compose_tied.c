/* Tests of Tied-LoRA adapters: layout and parameter counts, whole-model gradients against finite
 * differences (the shared A and B accumulate over layers), equivalence with a plain LoRA, learning. */
#include "tests/test.h"

#include "core/model.h"
#include "core/train.h"
#include "tests/test_compose.h"

TEST(compose_tied_vit_groups_and_counts)
{
    model_config c;
    CHECK_INT_EQ(model_config_preset(&c, "vit-tiny", NULL), 0);
    model *m = model_create(&c, NULL);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 4);
    adapter *t5 = adapter_tied_create(m, ranks, TIED_TL5, 10, NULL);
    adapter *t6 = adapter_tied_create(m, ranks, TIED_TL6, 10, NULL);
    adapter *lo = adapter_create(m, ranks, 8.0f, 10, NULL);
    CHECK(t5 && t6 && lo);
    CHECK_INT_EQ(t5->tied.n_groups, 4);
    CHECK(param_set_find(&t5->params, "tied.qkv.lora_A.weight") >= 0);
    CHECK(param_set_find(&t5->params, "tied.fc2.lora_B.weight") >= 0);
    CHECK(param_set_find(&t5->params, "blocks.0.qkv.tied_u") < 0);
    CHECK(param_set_find(&t6->params, "blocks.3.fc1.tied_v") >= 0);
    size_t head = 64 * 10 + 10;
    size_t shared = 4 * (64 + 192) + 4 * (64 + 64) + 4 * (64 + 128) + 4 * (128 + 64);
    CHECK_INT_EQ(adapter_param_count(t5), shared + head);
    CHECK_INT_EQ(adapter_param_count(t6), shared + head + 4 * ((4 + 192) + (4 + 64) + (4 + 128) + (4 + 64)));
    CHECK_INT_EQ(adapter_param_count(lo), 4 * shared + head);  /* LoRA: one pair per block */
    /* Every member of a group points at the same shared tensors. */
    int q0 = model_linear_find(m, "blocks.0.qkv"), q3 = model_linear_find(m, "blocks.3.qkv");
    CHECK_INT_EQ(t5->A[q0], t5->A[q3]);
    CHECK_INT_EQ(t5->B[q0], t5->B[q3]);
    CHECK_NEAR(adapter_scale(t5, q0), 1.0, 0);
    adapter_destroy(t5);
    adapter_destroy(t6);
    adapter_destroy(lo);
    model_destroy(m);
}

TEST(compose_tied_mlp_groups_by_shape_and_checks_ranks)
{
    model *m = compose_small_mlp(10, 6, 3, 4, 1);  /* fc1 10->6, fc2 and fc3 6->6 */
    int ranks[MODEL_MAX_LINEARS] = {2, 3, 3, 0};
    adapter *a = adapter_tied_create(m, ranks, TIED_TL6, 4, NULL);
    CHECK(a != NULL);
    CHECK_INT_EQ(a->tied.n_groups, 2);
    CHECK(param_set_find(&a->params, "tied.fc1.lora_A.weight") >= 0);
    CHECK(param_set_find(&a->params, "tied.6x6.lora_A.weight") >= 0);
    CHECK_INT_EQ(a->A[1], a->A[2]);
    adapter_destroy(a);
    int bad[MODEL_MAX_LINEARS] = {2, 3, 2, 0};
    clad_err e = {0};
    CHECK(adapter_tied_create(m, bad, TIED_TL6, 4, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EINVAL);
    CHECK(strstr(e.msg, "fc2") && strstr(e.msg, "fc3"));
    clad_err_clear(&e);
    CHECK(adapter_tied_create(m, ranks, (tied_variant)4, 4, &e) == NULL);
    CHECK(strstr(e.msg, "tl5") != NULL);
    model_destroy(m);
}

TEST(compose_tied_tl5_vit_gradients_match_finite_differences)
{
    model *m = compose_small_vit(4);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 2);
    adapter *a = adapter_tied_create(m, ranks, TIED_TL5, 5, NULL);
    adapter_init(a, m, 9);
    compose_randomise(a, 0.3f, 9);
    check_model_grads(m, a, 3, 8);
    adapter_destroy(a);
    model_destroy(m);
}

TEST(compose_tied_tl6_vit_gradients_match_finite_differences)
{
    model *m = compose_small_vit(5);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 2);
    adapter *a = adapter_tied_create(m, ranks, TIED_TL6, 3, NULL);
    adapter_init(a, m, 10);
    compose_randomise(a, 0.3f, 10);
    check_model_grads(m, a, 3, 6);
    adapter_destroy(a);
    model_destroy(m);
}

TEST(compose_tied_tl6_mlp_gradients_match_finite_differences)
{
    model *m = compose_small_mlp(10, 7, 3, 4, 2);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 3);
    adapter *a = adapter_tied_create(m, ranks, TIED_TL6, 4, NULL);
    adapter_init(a, m, 11);
    compose_randomise(a, 0.3f, 11);
    check_model_grads(m, a, 4, 8);
    adapter_destroy(a);
    model_destroy(m);
}

/* dW_l = diag(v_l) B diag(u_l) A, checked entry by entry, and the equivalent LoRA predicts the same. */
TEST(compose_tied_equals_its_lora_form)
{
    model *m = compose_small_vit(6);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 2);
    adapter *t = adapter_tied_create(m, ranks, TIED_TL6, 3, NULL);
    adapter_init(t, m, 1);
    compose_randomise(t, 0.4f, 12);
    int li = model_linear_find(m, "blocks.1.fc1");
    const model_linear *L = &m->linear[li];
    float *dW = malloc(sizeof(float) * (size_t)L->out * L->in);
    adapter_delta(dW, t, m, li);
    const float *A = param_set_ptr(&t->params, t->A[li]), *B = param_set_ptr(&t->params, t->B[li]);
    const float *u = param_set_ptr(&t->params, t->tied.u[li]), *v = param_set_ptr(&t->params, t->tied.v[li]);
    for (int o = 0; o < L->out; o++)
        for (int i = 0; i < L->in; i++) {
            double s = 0;
            for (int k = 0; k < 2; k++) s += (double)v[o] * (double)B[o * 2 + k] * (double)u[k] * (double)A[k * L->in + i];
            CHECK_NEAR(dW[(size_t)o * L->in + i], s, 1e-5);
        }
    adapter *l = adapter_tied_to_lora(t, m, NULL);
    CHECK(l != NULL && l->kind == ADAPTER_LORA);
    float *pt = compose_probs(m, t, 6, 3), *pl = compose_probs(m, l, 6, 3);
    CHECK_ARRAY_NEAR(pt, pl, 6 * 3, 1e-5, 1e-4);
    free(pt);
    free(pl);
    free(dW);
    adapter_destroy(l);
    adapter_destroy(t);
    model_destroy(m);
}

TEST(compose_tied_learns_what_head_cannot)
{
    dataset tr, te;
    compose_quadrant_data(&tr, 3000, 32, 0, 1);
    compose_quadrant_data(&te, 1000, 32, 0, 2);
    model *m = compose_small_mlp(32, 16, 2, 4, 9);
    train_config tc;
    train_config_default(&tc);
    tc.epochs = 10;
    tc.lr = 1e-2f;
    for (int variant = TIED_TL5; variant <= TIED_TL6; variant++) {
        int ranks[MODEL_MAX_LINEARS];
        compose_default_ranks(ranks, m, 4);
        adapter *a = adapter_tied_create(m, ranks, (tied_variant)variant, 4, NULL);
        adapter_init(a, m, 5);
        clad_err e = {0};
        CHECK_MSG(train_run(m, a, &tr, &tc, NULL, NULL, NULL, &e) == 0, "%s", e.msg);
        eval_result ev;
        CHECK_INT_EQ(model_evaluate(m, a, &te, 256, &ev, NULL), 0);
        printf("# tl%d accuracy %.4f\n", variant, (double)ev.accuracy);
        CHECK_MSG(ev.accuracy >= 0.85f, "tl%d accuracy %.4f < 0.85", variant, (double)ev.accuracy);
        adapter_destroy(a);
    }
    model_destroy(m);
    dataset_finish(&tr);
    dataset_finish(&te);
}
