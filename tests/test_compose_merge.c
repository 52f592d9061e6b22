/* Tests of merging: a single adapter merged without trimming reproduces its outputs (every method, lora and
 * tied sources), a hand-checked TIES case, DRM recovering tasks with orthogonal deltas, the mirror symmetry
 * of DRM-H and DRM-V, export as a LoRA, and refusals. */
#include "tests/test.h"

#include "core/fusion.h"
#include "core/merge.h"
#include "core/model.h"
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

TEST(compose_merge_single_adapter_reproduces_outputs)
{
    for (int kind = 0; kind < 3; kind++) {
        model *m = kind == 1 ? compose_small_mlp(10, 7, 2, 4, 3) : compose_small_vit(3);
        int K = m->cfg.n_classes;
        adapter *src;
        if (kind == 2) {
            int ranks[MODEL_MAX_LINEARS];
            compose_default_ranks(ranks, m, 2);
            src = adapter_tied_create(m, ranks, TIED_TL6, K, NULL);
            adapter_init(src, m, 4);
            compose_randomise(src, 0.3f, 4);
        } else {
            src = random_lora(m, 2, K, 4);
        }
        float *want = compose_probs(m, src, 6, 11);
        for (int method = MERGE_TA; method <= MERGE_DRM_V; method++) {
            merge_config c;
            merge_config_default(&c, (merge_method)method);
            c.drop = 0.0f;
            const adapter *srcs[1] = {src};
            clad_err e = {0};
            model *merged = merge_backbone(m, srcs, 1, &c, &e);
            CHECK_MSG(merged != NULL, "%s", e.msg);
            adapter *head = merge_head_adapter(merged, src, NULL);
            float *got = compose_probs(merged, head, 6, 11);
            for (int i = 0; i < 6 * K; i++)
                CHECK_MSG(fabsf(got[i] - want[i]) <= 1e-5f, "model %d method %s: probability %d is %.8g, the adapter "
                          "gives %.8g", kind, merge_method_name((merge_method)method), i, (double)got[i], (double)want[i]);
            free(got);
            adapter_destroy(head);
            model_destroy(merged);
        }
        free(want);
        adapter_destroy(src);
        model_destroy(m);
    }
}

TEST(compose_merge_ties_hand_checked)
{
    /* Three tasks of 2x2; drop 0.25 keeps each task's top 3 of 4 magnitudes:
     *   d1 = [1 -2; 3 .5] -> [1 -2; 3 0],  d2 = [-1 -1; 2 .1] -> [-1 -1; 2 0],  d3 = [2 1; -4 .2] -> [2 1; -4 0].
     * Sums 2, -2, 1, 0: signs +, -, +, and the last takes the majority sign +. Agreeing entries:
     * (1, 2) -> 1.5; (-2, -1) -> -1.5; (3, 2) -> 2.5; none -> 0. */
    const float d1[4] = {1, -2, 3, 0.5f}, d2[4] = {-1, -1, 2, 0.1f}, d3[4] = {2, 1, -4, 0.2f};
    const float *d[3] = {d1, d2, d3};
    merge_config c;
    merge_config_default(&c, MERGE_TIES);
    c.drop = 0.25f;
    float out[4];
    CHECK_INT_EQ(merge_deltas(out, d, 3, 2, 2, &c, NULL), 0);
    const float want[4] = {1.5f, -1.5f, 2.5f, 0.0f};
    CHECK_ARRAY_NEAR(out, want, 4, 1e-6, 0);
    /* Coefficients weight each task inside the disjoint mean; lambda scales the result. */
    const float coef[3] = {2, 1, 1};
    c.coef = coef;
    c.lambda = 0.5f;
    CHECK_INT_EQ(merge_deltas(out, d, 3, 2, 2, &c, NULL), 0);
    const float want2[4] = {0.5f * (2 + 2) / 2, 0.5f * (-4 - 1) / 2, 0.5f * (6 + 2) / 2, 0.0f};
    CHECK_ARRAY_NEAR(out, want2, 4, 1e-6, 0);
    /* Task arithmetic is lambda times the weighted sum. */
    merge_config_default(&c, MERGE_TA);
    c.lambda = 0.5f;
    CHECK_INT_EQ(merge_deltas(out, d, 3, 2, 2, &c, NULL), 0);
    const float want3[4] = {1.0f, -1.0f, 0.5f, 0.4f};
    CHECK_ARRAY_NEAR(out, want3, 4, 1e-6, 0);
}

/* dW = s u v^T for unit u, v. */
static void outer(float *D, const float *u, const float *v, float s, int n, int m)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) D[i * m + j] += s * u[i] * v[j];
}

static void unit(float *x, int n, uint64_t seed)
{
    fill_normal(x, (size_t)n, 1.0f, seed);
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    for (int i = 0; i < n; i++) x[i] = (float)((double)x[i] / sqrt(s));
}

TEST(compose_merge_drm_recovers_orthogonal_tasks)
{
    enum { N = 6, M = 5 };
    /* Generic orthogonal directions (Gram-Schmidt on random vectors), no trimming: DRM returns the sum. */
    float u1[N], u2[N], v1[M], v2[M];
    unit(u1, N, 1);
    unit(u2, N, 2);
    unit(v1, M, 3);
    unit(v2, M, 4);
    double du = 0, dv = 0;
    for (int i = 0; i < N; i++) du += (double)u1[i] * (double)u2[i];
    for (int i = 0; i < M; i++) dv += (double)v1[i] * (double)v2[i];
    for (int i = 0; i < N; i++) u2[i] -= (float)du * u1[i];  /* then renormalised below */
    for (int i = 0; i < M; i++) v2[i] -= (float)dv * v1[i];
    double n2 = 0, m2 = 0;
    for (int i = 0; i < N; i++) n2 += (double)u2[i] * (double)u2[i];
    for (int i = 0; i < M; i++) m2 += (double)v2[i] * (double)v2[i];
    for (int i = 0; i < N; i++) u2[i] = (float)((double)u2[i] / sqrt(n2));
    for (int i = 0; i < M; i++) v2[i] = (float)((double)v2[i] / sqrt(m2));
    float d1[N * M] = {0}, d2[N * M] = {0}, sum[N * M], out[N * M];
    outer(d1, u1, v1, 3.0f, N, M);
    outer(d2, u2, v2, 2.0f, N, M);
    for (int i = 0; i < N * M; i++) sum[i] = d1[i] + d2[i];
    const float *d[2] = {d1, d2};
    for (int method = MERGE_DRM_H; method <= MERGE_DRM_V; method++) {
        merge_config c;
        merge_config_default(&c, (merge_method)method);
        c.drop = 0.0f;
        CHECK_INT_EQ(merge_deltas(out, d, 2, N, M, &c, NULL), 0);
        CHECK_ARRAY_NEAR(out, sum, N * M, 1e-5, 0);
    }
    /* Axis-aligned (sparse) directions survive the default 80 % trim as well. */
    float a1[N * M] = {0}, a2[N * M] = {0};
    a1[0 * M + 1] = 3.0f;   /* e0 e1^T */
    a2[4 * M + 3] = -2.0f;  /* e4 e3^T */
    const float *a[2] = {a1, a2};
    for (int method = MERGE_DRM_H; method <= MERGE_DRM_V; method++) {
        merge_config c;
        merge_config_default(&c, (merge_method)method);
        CHECK_INT_EQ(merge_deltas(out, a, 2, N, M, &c, NULL), 0);
        CHECK_NEAR(out[0 * M + 1], 3.0, 1e-5);
        CHECK_NEAR(out[4 * M + 3], -2.0, 1e-5);
        double rest = 0;
        for (int i = 0; i < N * M; i++) rest += fabs((double)out[i]);
        CHECK_NEAR(rest, 5.0, 1e-4);
    }
    /* Task arithmetic adds them too. */
    merge_config c;
    merge_config_default(&c, MERGE_TA);
    CHECK_INT_EQ(merge_deltas(out, d, 2, N, M, &c, NULL), 0);
    CHECK_ARRAY_NEAR(out, sum, N * M, 1e-6, 0);
}

/* DRM-V on the transposed deltas is the transpose of DRM-H (the two are mirror images). */
TEST(compose_merge_drm_h_and_v_are_mirrors)
{
    enum { N = 7, M = 5, T = 3 };
    float d[T][N * M], dt[T][M * N], h[N * M], v[M * N];
    const float *dp[T], *dtp[T];
    for (int t = 0; t < T; t++) {
        fill_normal(d[t], N * M, 1.0f, 20 + t);
        for (int i = 0; i < N; i++)
            for (int j = 0; j < M; j++) dt[t][j * N + i] = d[t][i * M + j];
        dp[t] = d[t];
        dtp[t] = dt[t];
    }
    merge_config c;
    merge_config_default(&c, MERGE_DRM_H);
    c.drop = 0.0f;
    CHECK_INT_EQ(merge_deltas(h, dp, T, N, M, &c, NULL), 0);
    c.method = MERGE_DRM_V;
    CHECK_INT_EQ(merge_deltas(v, dtp, T, M, N, &c, NULL), 0);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < M; j++) CHECK_NEAR(h[i * M + j], v[j * N + i], 1e-4);
}

TEST(compose_merge_exports_as_lora)
{
    model *m = compose_small_vit(5);
    adapter *a = random_lora(m, 2, 3, 1), *b = random_lora(m, 1, 3, 2);
    const adapter *srcs[2] = {a, b};
    merge_config c;
    merge_config_default(&c, MERGE_TA);
    model *merged = merge_backbone(m, srcs, 2, &c, NULL);
    CHECK(merged != NULL);
    /* Rank 3 holds the sum of a rank-2 and a rank-1 change exactly. */
    adapter *exp = merge_to_lora(m, merged, 3, a, NULL);
    CHECK(exp != NULL);
    adapter *head = merge_head_adapter(merged, a, NULL);
    float *pm = compose_probs(merged, head, 5, 3), *pe = compose_probs(m, exp, 5, 3);
    CHECK_ARRAY_NEAR(pe, pm, 5 * 3, 1e-5, 0);
    int q = model_linear_find(m, "blocks.0.qkv");
    CHECK_INT_EQ(exp->rank[q], 3);
    CHECK_INT_EQ(exp->rank[0], 0);  /* patch_embed is not changed by the merge */
    /* Rank 1 is the best rank-1 approximation: its error is the second singular value and beyond. */
    adapter *small = merge_to_lora(m, merged, 1, a, NULL);
    CHECK_INT_EQ(small->rank[q], 1);
    CHECK(adapter_param_count(small) < adapter_param_count(exp));
    free(pm);
    free(pe);
    adapter_destroy(small);
    adapter_destroy(exp);
    adapter_destroy(head);
    model_destroy(merged);
    adapter_destroy(a);
    adapter_destroy(b);
    model_destroy(m);
}

TEST(compose_merge_refuses_bad_input)
{
    model *m = compose_small_vit(5);
    adapter *a = random_lora(m, 2, 3, 1);
    const adapter *srcs[1] = {a};
    adapter *f = adapter_fusion_create(m, srcs, NULL, 1, 3, NULL);
    const adapter *fs[2] = {a, f};
    merge_config c;
    merge_config_default(&c, MERGE_DRM_H);
    clad_err e = {0};
    CHECK(merge_backbone(m, fs, 2, &c, &e) == NULL);
    CHECK(strstr(e.msg, "fusion") != NULL);
    c.drop = 1.0f;
    clad_err_clear(&e);
    CHECK(merge_backbone(m, srcs, 1, &c, &e) == NULL);
    CHECK(strstr(e.msg, "drop") != NULL);
    merge_method mm;
    clad_err_clear(&e);
    CHECK_INT_EQ(merge_method_parse(&mm, "drm", &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "drm-h") != NULL);
    CHECK_INT_EQ(merge_method_parse(&mm, "drm-v", NULL), 0);
    CHECK_INT_EQ(mm, MERGE_DRM_V);
    adapter_destroy(f);
    adapter_destroy(a);
    model_destroy(m);
}
