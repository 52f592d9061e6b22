/* Helpers shared by the compose_ tests; see test_compose.h. */
#include "tests/test_compose.h"

#include "core/rng.h"
#include "core/train.h"
#include "tests/test.h"

model *compose_small_vit(uint64_t seed)
{
    model_config c = {.kind = MODEL_VIT, .channels = 2, .height = 8, .width = 8, .patch = 4, .dim = 8,
                      .depth = 2, .heads = 2, .mlp_dim = 12, .n_classes = 3};
    model *m = model_create(&c, NULL);
    CHECK(m != NULL);
    model_init_random(m, seed);
    return m;
}

model *compose_small_mlp(int in, int h, int layers, int classes, uint64_t seed)
{
    model_config c = {.kind = MODEL_MLP, .input_dim = in, .n_hidden = layers, .n_classes = classes};
    for (int i = 0; i < layers; i++) c.hidden[i] = h;
    model *m = model_create(&c, NULL);
    CHECK(m != NULL);
    model_init_random(m, seed);
    return m;
}

void compose_default_ranks(int *ranks, const model *m, int r)
{
    for (int li = 0; li < MODEL_MAX_LINEARS; li++) ranks[li] = 0;
    for (int li = 0; li < m->n_linear; li++)
        if (model_linear_is_default_target(m, li)) ranks[li] = r;
}

void compose_randomise(adapter *a, float s, uint64_t seed)
{
    for (int ti = 0; ti < a->params.n; ti++) {
        if (ti == a->head_w || ti == a->head_b) continue;
        float *p = param_set_ptr(&a->params, ti);
        fill_normal(p, a->params.t[ti].numel, s, seed + (uint64_t)ti);
        /* Scales and V around 1 / the identity rather than 0, like their initial values. */
        const char *nm = a->params.t[ti].name;
        if (strstr(nm, ".tied_u") || strstr(nm, ".tied_v"))
            for (size_t k = 0; k < a->params.t[ti].numel; k++) p[k] += 1.0f;
        if (strstr(nm, ".value.weight")) {
            int C = a->params.t[ti].shape[0];
            for (int i = 0; i < C; i++) p[(size_t)i * C + i] += 1.0f;
        }
    }
}

float *compose_probs(const model *m, const adapter *a, int n, uint64_t seed)
{
    int dim = model_config_input_dim(&m->cfg), K = a ? a->n_classes : m->cfg.n_classes;
    float *x = malloc(sizeof(float) * (size_t)n * dim), *p = malloc(sizeof(float) * (size_t)n * K);
    fill_normal(x, (size_t)n * dim, 1.0f, seed);
    clad_err e = {0};
    CHECK_MSG(model_predict(m, a, x, n, 16, p, NULL, &e) == 0, "%s", e.msg);
    free(x);
    return p;
}

void compose_quadrant_data(dataset *d, int n, int in, int variant, uint64_t seed)
{
    CHECK_INT_EQ(dataset_init(d, n, 1, (int[]){in}, NULL), 0);
    fill_normal(d->x, (size_t)n * in, 1.0f, seed);
    for (int i = 0; i < n; i++) {
        const float *x = d->x + (size_t)i * in;
        float u = variant ? x[6] - x[7] + x[8] : x[0] + x[1] - x[2];
        float v = variant ? x[9] + x[10] + x[11] : x[3] - x[4] + x[5];
        d->y[i] = (u > 0) * 2 + (v > 0);
    }
    d->n_classes = 4;
}
