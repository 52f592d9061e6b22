/* LayerNorm over the last dimension, as in GPT-2 / ViT: eps 1e-5 (or the caller's), biased variance.
 * See core/layers.h for the contract. */
#include "core/layers.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "core/parallel.h"
#include "core/simd.h"
#include "core/vec.h"

#define LAYERNORM_EPS 1e-5

/* Row sums are taken in double (see layernorm_forward_rows), eight lanes at a time: eight independent
 * accumulators, each lane's floats converted exactly, added up in a fixed tree at the end, so results are
 * deterministic and the same for every CPU clone (core/simd.h). */
static inline double row_sum(const float *x, int C)
{
    vd8 acc = {0};
    double tail = 0.0;
    int i = 0;
    for (; i + 8 <= C; i += 8) acc += vd8_widen(vf8_load(x + i));
    for (; i < C; i++) tail += (double)x[i];
    return vd8_sum(acc) + tail;
}

static inline double row_sum_sq_dev(const float *x, double m, int C)
{
    vd8 acc = {0};
    double tail = 0.0;
    int i = 0;
    for (; i + 8 <= C; i += 8) {
        vd8 d = vd8_widen(vf8_load(x + i)) - m;
        acc += d * d;
    }
    for (; i < C; i++) tail += ((double)x[i] - m) * ((double)x[i] - m);
    return vd8_sum(acc) + tail;
}

/* Rows are split into tasks of ROW_GRAIN rows for the bound thread pool; each row's arithmetic does not
 * depend on the split. */
#define ROW_GRAIN 64

typedef struct layernorm_job {
    float *out, *mean, *rstd, *dx, *dw, *db;
    const float *x, *w, *b, *dout, *mean_in, *rstd_in;
    double eps; /* forward only; in double, so the default keeps exactly the bits of 1e-5 it always had */
    int N, C;
} layernorm_job;

SIMD_CLONES
static void layernorm_forward_rows(const layernorm_job *j, int n0, int n1)
{
    float *out = j->out, *mean = j->mean, *rstd = j->rstd;
    const float *x = j->x, *w = j->w, *b = j->b;
    int C = j->C;
    for (int n = n0; n < n1; n++) {
        const float *xn = x + (size_t)n * C;
        float *on = out + (size_t)n * C;
        /* Two passes (mean, then squared deviations) in double: the one-pass E[x^2] - E[x]^2 formula
         * cancels badly when |mean| >> std, and double costs nothing here since the sums are scalar
         * without -ffast-math anyway. */
        double m = row_sum(xn, C) / C;
        double v = row_sum_sq_dev(xn, m, C) / C;
        float mf = (float)m;
        float rs = (float)(1.0 / sqrt(v + j->eps));
        int i = 0;
        for (; i + 8 <= C; i += 8)
            vf8_store(on + i, (vf8_load(xn + i) - mf) * rs * vf8_load(w + i) + vf8_load(b + i));
        for (; i < C; i++) on[i] = (xn[i] - mf) * rs * w[i] + b[i];
        mean[n] = mf;
        rstd[n] = rs;
    }
}

static void layernorm_forward_task(void *ctx, int task, int worker)
{
    const layernorm_job *j = ctx;
    int n0 = task * ROW_GRAIN, n1 = n0 + ROW_GRAIN < j->N ? n0 + ROW_GRAIN : j->N;
    layernorm_forward_rows(j, n0, n1);
}

static void layernorm_forward_job(float *out, float *mean, float *rstd, const float *x, const float *w,
                                  const float *b, int N, int C, double eps)
{
    assert(N >= 0 && C > 0 && eps >= 0.0);
    layernorm_job j = {.out = out, .mean = mean, .rstd = rstd, .x = x, .w = w, .b = b, .eps = eps, .N = N,
                       .C = C};
    par_for(par_chunks((size_t)N, ROW_GRAIN), layernorm_forward_task, &j);
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, int N, int C)
{
    layernorm_forward_job(out, mean, rstd, x, w, b, N, C, LAYERNORM_EPS);
}

void layernorm_forward_eps(float *out, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int N, int C, float eps)
{
    layernorm_forward_job(out, mean, rstd, x, w, b, N, C, (double)eps);
}

SIMD_CLONES
static void layernorm_backward_rows(const layernorm_job *j, int n0, int n1)
{
    float *dx = j->dx;
    const float *dout = j->dout, *x = j->x, *w = j->w, *mean = j->mean_in, *rstd = j->rstd_in;
    int C = j->C;
    for (int n = n0; n < n1; n++) {
        const float *xn = x + (size_t)n * C;
        const float *dn = dout + (size_t)n * C;
        float mf = mean[n], rs = rstd[n];
        /* With xhat = (x - mean) * rstd and g = w * dout:
         * dx = rstd * (g - mean(g) - xhat * mean(g * xhat)). */
        vd8 sg = {0}, sgx = {0};
        double sg_tail = 0.0, sgx_tail = 0.0;
        int i = 0;
        for (; i + 8 <= C; i += 8) {
            vf8 g = vf8_load(w + i) * vf8_load(dn + i);
            sg += vd8_widen(g);
            sgx += vd8_widen(g * ((vf8_load(xn + i) - mf) * rs));
        }
        for (; i < C; i++) {
            float g = w[i] * dn[i];
            sg_tail += (double)g;
            sgx_tail += (double)(g * ((xn[i] - mf) * rs));
        }
        float mg = (float)((vd8_sum(sg) + sg_tail) / C), mgx = (float)((vd8_sum(sgx) + sgx_tail) / C);
        float *dxn = dx + (size_t)n * C;
        for (i = 0; i + 8 <= C; i += 8) {
            vf8 xhat = (vf8_load(xn + i) - mf) * rs;
            vf8 g = vf8_load(w + i) * vf8_load(dn + i);
            vf8_store(dxn + i, vf8_load(dxn + i) + (g - mg - xhat * mgx) * rs);
        }
        for (; i < C; i++) {
            float xhat = (xn[i] - mf) * rs;
            float g = w[i] * dn[i];
            dxn[i] += (g - mg - xhat * mgx) * rs;
        }
    }
}

static void layernorm_backward_task(void *ctx, int task, int worker)
{
    const layernorm_job *j = ctx;
    int n0 = task * ROW_GRAIN, n1 = n0 + ROW_GRAIN < j->N ? n0 + ROW_GRAIN : j->N;
    layernorm_backward_rows(j, n0, n1);
}

/* dw and db sum over every row; a task takes CHANNEL_GRAIN channels and sums each in row order, so the
 * result does not depend on the split. */
#define CHANNEL_GRAIN VL

SIMD_CLONES
static void layernorm_backward_params_task(void *ctx, int task, int worker)
{
    const layernorm_job *j = ctx;
    int c0 = task * CHANNEL_GRAIN, c1 = c0 + CHANNEL_GRAIN < j->C ? c0 + CHANNEL_GRAIN : j->C, C = j->C;
    for (int n = 0; n < j->N; n++) {
        const float *xn = j->x + (size_t)n * C, *dn = j->dout + (size_t)n * C;
        float mf = j->mean_in[n], rs = j->rstd_in[n];
        if (c1 - c0 == VL) {
            /* The scalar loop's operations, one lane per channel. */
            vf d = vf_load(dn + c0);
            if (j->dw) vf_store(j->dw + c0, vf_load(j->dw + c0) + d * ((vf_load(xn + c0) - mf) * rs));
            if (j->db) vf_store(j->db + c0, vf_load(j->db + c0) + d);
            continue;
        }
        if (j->dw)
            for (int i = c0; i < c1; i++) j->dw[i] += dn[i] * ((xn[i] - mf) * rs);
        if (j->db)
            for (int i = c0; i < c1; i++) j->db[i] += dn[i];
    }
}

void layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                        const float *w, const float *mean, const float *rstd, int N, int C)
{
    assert(N >= 0 && C > 0);
    layernorm_job j = {.dx = dx, .dw = dw, .db = db, .dout = dout, .x = x, .w = w, .mean_in = mean,
                       .rstd_in = rstd, .N = N, .C = C};
    if (dx) par_for(par_chunks((size_t)N, ROW_GRAIN), layernorm_backward_task, &j);
    if (dw || db) par_for(par_chunks((size_t)C, CHANNEL_GRAIN), layernorm_backward_params_task, &j);
}
