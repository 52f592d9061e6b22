/* Tests of adapter files for the compose kinds: tied (tl5, tl6) and fusion round trips, the recorded rank
 * before pruning, and the errors a reader gives. */
#include "tests/test.h"

#include "core/fusion.h"
#include "core/model.h"
#include "io/model_io.h"
#include "tests/test_compose.h"

static void check_same(const model *m, const adapter *a, const adapter *b)
{
    CHECK_INT_EQ(a->kind, b->kind);
    CHECK(param_set_same_layout(&a->params, &b->params));
    CHECK(memcmp(a->params.data, b->params.data, a->params.total * sizeof(float)) == 0);
    for (int li = 0; li < m->n_linear; li++) {
        CHECK_INT_EQ(a->rank[li], b->rank[li]);
        CHECK_INT_EQ(a->rank_before[li], b->rank_before[li]);
    }
}

TEST(compose_io_tied_round_trip)
{
    model *m = compose_small_vit(1);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 2);
    for (int v = TIED_TL5; v <= TIED_TL6; v++) {
        adapter *a = adapter_tied_create(m, ranks, (tied_variant)v, 4, NULL);
        adapter_init(a, m, 2);
        compose_randomise(a, 0.3f, 3);
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK_INT_EQ(adapter_to_buffer(a, m, &buf, &len, NULL), 0);
        clad_err e = {0};
        adapter *b = adapter_from_buffer(m, buf, len, &e);
        CHECK_MSG(b != NULL, "%s", e.msg);
        check_same(m, a, b);
        CHECK_INT_EQ(b->tied.variant, v);
        free(buf);
        adapter_destroy(a);
        adapter_destroy(b);
    }
    model_destroy(m);
}

TEST(compose_io_rank_before_round_trip)
{
    model *m = compose_small_mlp(10, 7, 2, 4, 1);
    int ranks[MODEL_MAX_LINEARS] = {2, 1, 0};
    adapter *a = adapter_create(m, ranks, 4.0f, 4, NULL);
    adapter_init(a, m, 1);
    a->rank_before[0] = 6;
    a->rank_before[1] = 4;
    char path[512];
    snprintf(path, sizeof path, "%s/pruned.safetensors", test_tmpdir());
    CHECK_INT_EQ(adapter_save(a, m, path, NULL), 0);
    adapter *b = adapter_load(m, path, NULL);
    CHECK(b != NULL);
    check_same(m, a, b);
    adapter_destroy(a);
    adapter_destroy(b);
    model_destroy(m);
}

TEST(compose_io_fusion_round_trip_needs_its_sources)
{
    model *m = compose_small_vit(2);
    int ranks[MODEL_MAX_LINEARS];
    compose_default_ranks(ranks, m, 2);
    adapter *s0 = adapter_create(m, ranks, 4.0f, 3, NULL), *s1 = adapter_create(m, ranks, 4.0f, 3, NULL);
    adapter_init(s0, m, 1);
    adapter_init(s1, m, 2);
    const adapter *src[2] = {s0, s1};
    adapter *f = adapter_fusion_create(m, src, (const char *const[]){"rot15", "invert"}, 2, 5, NULL);
    adapter_init(f, m, 3);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_INT_EQ(adapter_to_buffer(f, m, &buf, &len, NULL), 0);
    clad_err e = {0};
    CHECK(adapter_from_buffer(m, buf, len, &e) == NULL);
    CHECK(strstr(e.msg, "adapter_fusion_load") != NULL);
    char names[FUSION_MAX_SOURCES][PARAM_NAME_MAX];
    int n = 0;
    CHECK_INT_EQ(adapter_file_sources(buf, len, names, &n, NULL), 0);
    CHECK_INT_EQ(n, 2);
    CHECK_STR_EQ(names[0], "rot15");
    CHECK_STR_EQ(names[1], "invert");
    clad_err_clear(&e);
    CHECK(adapter_fusion_from_buffer(m, buf, len, src, 1, &e) == NULL);
    CHECK(strstr(e.msg, "2 sources") != NULL);
    adapter *g = adapter_fusion_from_buffer(m, buf, len, src, 2, &e);
    CHECK_MSG(g != NULL, "%s", e.msg);
    check_same(m, f, g);
    CHECK_STR_EQ(g->fusion.source_name[1], "invert");
    float *pf = compose_probs(m, f, 4, 1), *pg = compose_probs(m, g, 4, 1);
    CHECK_ARRAY_NEAR(pf, pg, 4 * 5, 0, 0);
    free(pf);
    free(pg);
    free(buf);
    adapter_destroy(f);
    adapter_destroy(g);
    adapter_destroy(s0);
    adapter_destroy(s1);
    model_destroy(m);
}
