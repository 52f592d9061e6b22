/* Tests of AdapterFusion over LoRA adapters: whole-model gradients against finite differences (vit and mlp,
 * including the V penalty), the identity case, source checks, and a fusion that learns which source fits. */
#include "tests/test.h"

#include "core/fusion.h"
#include "core/model.h"
#include "core/train.h"
#include "io/model_io.h"
#include "tests/test_compose.h"

static adapter *random_lora(model *m, int r, int classes, uint64_t seed)
{
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, r);
    adapter *a = adapter_create(m, ranks, 2.0f * r, classes, NULL);
    CHECK(a != NULL);
    adapter_init(a, m, seed);
    compose_randomise(a, 0.3f, seed);
    return a;
}

TEST(compose_fusion_vit_gradients_match_finite_differences)
{
    model *m = compose_small_vit(4);
    adapter *s0 = random_lora(m, 2, 3, 1), *s1 = random_lora(m, 1, 3, 2);
    const adapter *src[2] = {s0, s1};
    clad_err e = {0};
    adapter *f = adapter_fusion_create(m, src, NULL, 2, 5, &e);
    CHECK_MSG(f != NULL, "%s", e.msg);
    CHECK_INT_EQ(f->fusion.n_sites, 2);
    adapter_init(f, m, 3);
    compose_randomise(f, 0.3f, 3);  /* Q, K large enough that the softmax is far from uniform */
    check_model_grads(m, f, 3, 6);
    adapter_destroy(f);
    adapter_destroy(s0);
    adapter_destroy(s1);
    model_destroy(m);
}

TEST(compose_fusion_mlp_gradients_match_finite_differences)
{
    model *m = compose_small_mlp(10, 7, 2, 4, 5);
    adapter *s0 = random_lora(m, 2, 4, 1), *s1 = random_lora(m, 3, 2, 2);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 2);
    adapter *s2 = adapter_tied_create(m, ranks, TIED_TL6, 4, NULL);  /* converted to a LoRA copy */
    adapter_init(s2, m, 3);
    compose_randomise(s2, 0.3f, 3);
    const adapter *src[3] = {s0, s1, s2};
    adapter *f = adapter_fusion_create(m, src, (const char *const[]){"a", "b", "c"}, 3, 4, NULL);
    CHECK(f != NULL);
    CHECK(f->fusion.owned[2] != NULL && f->fusion.source[2] == f->fusion.owned[2]);
    CHECK(f->fusion.source[0] == s0);
    CHECK_STR_EQ(f->fusion.source_name[1], "b");
    CHECK(param_set_find(&f->params, "fc2.fusion.value.weight") >= 0);
    adapter_init(f, m, 4);
    compose_randomise(f, 0.3f, 4);
    check_model_grads(m, f, 5, 8);
    adapter_destroy(f);
    adapter_destroy(s0);
    adapter_destroy(s1);
    adapter_destroy(s2);
    model_destroy(m);
}

/* With one source, V = I and the source's head, the fusion adapter predicts exactly as the source. */
TEST(compose_fusion_single_source_identity_reproduces_source)
{
    for (int kind = 0; kind < 2; kind++) {
        model *m = kind ? compose_small_vit(7) : compose_small_mlp(10, 7, 2, 3, 7);
        adapter *s = random_lora(m, 2, 3, 8);
        const adapter *src[1] = {s};
        adapter *f = adapter_fusion_create(m, src, NULL, 1, 3, NULL);
        adapter_init(f, m, 9);
        for (int site = 0; site < f->fusion.n_sites; site++) {
            float *V = param_set_ptr(&f->params, f->fusion.v_w[site]);
            int C = fusion_site_dim(m, site);
            for (int i = 0; i < C * C; i++) V[i] = i % (C + 1) == 0 ? 1.0f : 0.0f;
        }
        CHECK_INT_EQ(adapter_copy_head(f, s, NULL), 0);
        float *pf = compose_probs(m, f, 5, 1), *ps = compose_probs(m, s, 5, 1);
        CHECK_ARRAY_NEAR(pf, ps, 5 * 3, 1e-6, 1e-5);
        free(pf);
        free(ps);
        adapter_destroy(f);
        adapter_destroy(s);
        model_destroy(m);
    }
}

TEST(compose_fusion_rejects_bad_sources)
{
    model *m = compose_small_vit(1);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 2);
    ranks[0] = 2;  /* patch_embed */
    adapter *pe = adapter_create(m, ranks, 4.0f, 3, NULL);
    adapter *ok = random_lora(m, 2, 3, 1);
    clad_err e = {0};
    const adapter *src[2] = {ok, pe};
    CHECK(adapter_fusion_create(m, src, (const char *const[]){"good", "embeds"}, 2, 3, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EINVAL);
    CHECK(strstr(e.msg, "'embeds'") && strstr(e.msg, "patch_embed"));
    clad_err_clear(&e);
    CHECK(adapter_fusion_create(m, src, NULL, 0, 3, &e) == NULL);
    CHECK(strstr(e.msg, "0 sources") != NULL);
    adapter *f = adapter_fusion_create(m, src, NULL, 1, 3, NULL);
    const adapter *nested[1] = {f};
    clad_err_clear(&e);
    CHECK(adapter_fusion_create(m, nested, NULL, 1, 3, &e) == NULL);
    CHECK(strstr(e.msg, "fusion") != NULL);
    model *other = compose_small_mlp(10, 7, 2, 3, 1);
    clad_err_clear(&e);
    CHECK(adapter_fusion_create(other, src, NULL, 1, 3, &e) == NULL);
    CHECK(strstr(e.msg, "another model") != NULL);
    adapter_destroy(f);
    adapter_destroy(pe);
    adapter_destroy(ok);
    model_destroy(m);
    model_destroy(other);
}

static adapter *train_lora(model *m, const dataset *d, uint64_t seed)
{
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 4);
    adapter *a = adapter_create(m, ranks, 8.0f, 4, NULL);
    adapter_init(a, m, seed);
    train_config tc;
    train_config_default(&tc);
    tc.epochs = 10;
    tc.lr = 1e-2f;
    CHECK_INT_EQ(train_run(m, a, d, &tc, NULL, NULL, NULL, NULL), 0);
    return a;
}

/* Two sources trained on different tasks; a fusion trained on the first task's data must lean on the
 * first source, reach its accuracy, and leave the base and both sources bit-identical. */
TEST(compose_fusion_leans_on_the_matching_source)
{
    dataset t0, t1, te0;
    compose_quadrant_data(&t0, 3000, 32, 0, 1);
    compose_quadrant_data(&t1, 3000, 32, 1, 2);
    compose_quadrant_data(&te0, 1000, 32, 0, 3);
    model *m = compose_small_mlp(32, 16, 2, 4, 9);
    adapter *a0 = train_lora(m, &t0, 5), *a1 = train_lora(m, &t1, 6);
    uint8_t *before[3], *after[3];
    size_t nb[3], na[3];
    CHECK_INT_EQ(model_to_buffer(m, &before[0], &nb[0], NULL), 0);
    CHECK_INT_EQ(adapter_to_buffer(a0, m, &before[1], &nb[1], NULL), 0);
    CHECK_INT_EQ(adapter_to_buffer(a1, m, &before[2], &nb[2], NULL), 0);
    /* The second source first, so a lean on index 1 cannot come from position. */
    const adapter *src[2] = {a1, a0};
    adapter *f = adapter_fusion_create(m, src, (const char *const[]){"t1", "t0"}, 2, 4, NULL);
    adapter_init(f, m, 7);
    train_config tc;
    train_config_default(&tc);
    tc.epochs = 6;
    tc.lr = 5e-3f;
    clad_err e = {0};
    CHECK_MSG(train_run(m, f, &t0, &tc, NULL, NULL, NULL, &e) == 0, "%s", e.msg);
    eval_result ev;
    CHECK_INT_EQ(model_evaluate(m, f, &te0, 256, &ev, NULL), 0);
    double w[2], ws[2 * 2];
    CHECK_INT_EQ(fusion_mean_weights(m, f, &te0, 128, w, ws, NULL), 0);
    printf("# fusion accuracy %.4f, weights t1 %.3f t0 %.3f\n", (double)ev.accuracy, w[0], w[1]);
    CHECK_NEAR(w[0] + w[1], 1.0, 1e-5);
    CHECK_NEAR(ws[0] + ws[1], 1.0, 1e-5);
    CHECK_MSG(w[1] > 0.6, "fusion weight on the matching source %.3f <= 0.6", w[1]);
    CHECK_MSG(ev.accuracy >= 0.85f, "fusion accuracy %.4f < 0.85", (double)ev.accuracy);
    CHECK_INT_EQ(model_to_buffer(m, &after[0], &na[0], NULL), 0);
    CHECK_INT_EQ(adapter_to_buffer(a0, m, &after[1], &na[1], NULL), 0);
    CHECK_INT_EQ(adapter_to_buffer(a1, m, &after[2], &na[2], NULL), 0);
    for (int i = 0; i < 3; i++) {
        CHECK(nb[i] == na[i] && memcmp(before[i], after[i], nb[i]) == 0);
        free(before[i]);
        free(after[i]);
    }
    adapter_destroy(f);
    adapter_destroy(a0);
    adapter_destroy(a1);
    model_destroy(m);
    dataset_finish(&t0);
    dataset_finish(&t1);
    dataset_finish(&te0);
}
