/* Folding adapters into the base (core/fold.h): the folded model predicts what the base with the adapter
 * predicts, for lora and tied adapters on an mlp and a vit (including patch_embed, and a head with its
 * own class count); fusion adapters are refused; the base is untouched. */
#include "tests/test.h"

#include "core/fold.h"
#include "core/fusion.h"
#include "tests/test_compose.h"

static void check_fold(model *m, adapter *a)
{
    size_t nb = m->params.total;
    float *before = malloc(nb * sizeof *before);
    memcpy(before, m->params.data, nb * sizeof *before);
    clad_err e = {0};
    model *f = model_fold(m, a, &e);
    CHECK_MSG(f != NULL, "%s", e.msg);
    CHECK_INT_EQ(f->cfg.n_classes, a->n_classes);
    float *want = compose_probs(m, a, 24, 77), *got = compose_probs(f, NULL, 24, 77);
    CHECK_ARRAY_NEAR(got, want, (size_t)24 * a->n_classes, 2e-6, 1e-4);
    /* Not a no-op: the adapter changes the predictions compared with the base's own weights. */
    float *plain = compose_probs(m, NULL, 24, 77);
    if (m->cfg.n_classes == a->n_classes) {
        double diff = 0;
        for (size_t k = 0; k < (size_t)24 * a->n_classes; k++) diff += fabs((double)plain[k] - (double)want[k]);
        CHECK_MSG(diff > 1e-3, "the adapter changes nothing (%.3g): the test would pass for any fold", diff);
    }
    CHECK(memcmp(before, m->params.data, nb * sizeof *before) == 0);
    free(plain);
    free(want);
    free(got);
    free(before);
    model_destroy(f);
}

TEST(compose_fold_lora_and_tied_predict_like_the_unfolded_adapter)
{
    for (int kind = 0; kind < 2; kind++) {
        model *m = kind ? compose_small_vit(3) : compose_small_mlp(10, 7, 2, 4, 3);
        int ranks[MODEL_MAX_LINEARS];
        compose_default_ranks(ranks, m, 2);
        if (kind) ranks[0] = 2; /* patch_embed as well */
        int classes[2] = {m->cfg.n_classes, 5};
        for (int c = 0; c < 2; c++) {
            adapter *a = adapter_create(m, ranks, 4.0f, classes[c], NULL);
            adapter_init(a, m, 5);
            compose_randomise(a, 0.3f, 5 + (uint64_t)c);
            check_fold(m, a);
            adapter_destroy(a);
        }
        if (kind) ranks[0] = 0;
        adapter *t = adapter_tied_create(m, ranks, TIED_TL6, m->cfg.n_classes, NULL);
        adapter_init(t, m, 6);
        compose_randomise(t, 0.3f, 6);
        check_fold(m, t);
        adapter_destroy(t);
        model_destroy(m);
    }
}

TEST(compose_fold_refuses_fusion)
{
    model *m = compose_small_mlp(10, 7, 2, 4, 3);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 2);
    adapter *s = adapter_create(m, ranks, 4.0f, 4, NULL);
    adapter_init(s, m, 1);
    const adapter *src[1] = {s};
    clad_err e = {0};
    adapter *fu = adapter_fusion_create(m, src, NULL, 1, 4, &e);
    CHECK_MSG(fu != NULL, "%s", e.msg);
    CHECK(model_fold(m, fu, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EINVAL);
    CHECK(strstr(e.msg, "fusion") != NULL);
    adapter_destroy(fu);
    adapter_destroy(s);
    model_destroy(m);
}
