/* Helpers shared by the model tests; see model_check.h. */
#include "tests/model_check.h"

#include "core/rng.h"
#include "tests/test.h"

void fill_normal(float *x, size_t n, float s, uint64_t seed)
{
    rng r;
    rng_init(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = s * rng_normal(&r);
}

void check_model_grads(model *m, adapter *a, int N, int probes)
{
    int dim = model_config_input_dim(&m->cfg), K = a ? a->n_classes : m->cfg.n_classes;
    float *x = malloc(sizeof(float) * (size_t)N * dim);
    int *y = malloc(sizeof(int) * (size_t)N);
    fill_normal(x, (size_t)N * dim, 1.0f, 7);
    for (int i = 0; i < N; i++) y[i] = i % K;
    param_set *p = a ? &a->params : &m->params;
    float *g = calloc(p->total, sizeof *g);
    model_ws *ws = model_ws_create_for(m, a, N, true, NULL);
    CHECK(ws != NULL);
    model_forward(ws, m, a, x, y, N);
    model_backward(ws, m, a, a ? NULL : g, a ? g : NULL);
    rng r;
    rng_init(&r, 3);
    int checked = 0;
    for (int ti = 0; ti < p->n; ti++) {
        for (int k = 0; k < probes; k++) {
            size_t idx = p->t[ti].offset + rng_below(&r, (uint32_t)p->t[ti].numel);
            float old = p->data[idx], eps = 3e-3f;
            p->data[idx] = old + eps;
            double lp = model_forward(ws, m, a, x, y, N);
            p->data[idx] = old - eps;
            double lm = model_forward(ws, m, a, x, y, N);
            p->data[idx] = old;
            double fd = (lp - lm) / (2.0 * (double)eps);
            double an = g[idx];
            CHECK_MSG(fabs(fd - an) <= 2e-3 + 3e-2 * fabs(fd), "tensor %s entry %zu: analytic %.6g vs finite "
                      "difference %.6g", p->t[ti].name, idx - p->t[ti].offset, an, fd);
            checked++;
        }
    }
    CHECK(checked > 0);
    model_ws_destroy(ws);
    free(g);
    free(x);
    free(y);
}
