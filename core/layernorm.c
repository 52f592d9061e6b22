/* LayerNorm over the last dimension, as in GPT-2 / ViT: eps 1e-5 (or the caller's), biased variance.
 * See core/layers.h for the contract. */
#include "core/layers.h"

#include <assert.h>
#include <math.h>

#define LAYERNORM_EPS 1e-5

/* The row sums below use four accumulators added in a fixed order: one accumulator would chain every add
 * on the previous one (a 4-cycle latency per element), and the fixed order keeps results deterministic. */

static double row_sum(const float *x, int C)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int i = 0;
    for (; i + 4 <= C; i += 4) {
        s0 += (double)x[i];
        s1 += (double)x[i + 1];
        s2 += (double)x[i + 2];
        s3 += (double)x[i + 3];
    }
    for (; i < C; i++) s0 += (double)x[i];
    return (s0 + s1) + (s2 + s3);
}

static double row_sum_sq_dev(const float *x, double m, int C)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int i = 0;
    for (; i + 4 <= C; i += 4) {
        double d0 = (double)x[i] - m, d1 = (double)x[i + 1] - m;
        double d2 = (double)x[i + 2] - m, d3 = (double)x[i + 3] - m;
        s0 += d0 * d0;
        s1 += d1 * d1;
        s2 += d2 * d2;
        s3 += d3 * d3;
    }
    for (; i < C; i++) s0 += ((double)x[i] - m) * ((double)x[i] - m);
    return (s0 + s1) + (s2 + s3);
}

/* eps in double, so the default keeps exactly the bits of 1e-5 it always had. */
static void ln_forward(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b, int N,
                       int C, double eps)
{
    assert(N >= 0 && C > 0 && eps >= 0.0);
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * C;
        float *on = out + (size_t)n * C;
        /* Two passes (mean, then squared deviations) in double: the one-pass E[x^2] - E[x]^2 formula
         * cancels badly when |mean| >> std, and double costs nothing here since the sums are scalar
         * without -ffast-math anyway. */
        double m = row_sum(xn, C) / C;
        double v = row_sum_sq_dev(xn, m, C) / C;
        float mf = (float)m;
        float rs = (float)(1.0 / sqrt(v + eps));
        for (int i = 0; i < C; i++) on[i] = (xn[i] - mf) * rs * w[i] + b[i];
        mean[n] = mf;
        rstd[n] = rs;
    }
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, int N, int C)
{
    ln_forward(out, mean, rstd, x, w, b, N, C, LAYERNORM_EPS);
}

void layernorm_forward_eps(float *out, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int N, int C, float eps)
{
    ln_forward(out, mean, rstd, x, w, b, N, C, (double)eps);
}

void layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                        const float *w, const float *mean, const float *rstd, int N, int C)
{
    assert(N >= 0 && C > 0);
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * C;
        const float *dn = dout + (size_t)n * C;
        float mf = mean[n], rs = rstd[n];
        if (dx) {
            /* With xhat = (x - mean) * rstd and g = w * dout:
             * dx = rstd * (g - mean(g) - xhat * mean(g * xhat)). */
            double sg0 = 0.0, sg1 = 0.0, sgx0 = 0.0, sgx1 = 0.0;
            int i = 0;
            for (; i + 2 <= C; i += 2) {
                float g0 = w[i] * dn[i], g1 = w[i + 1] * dn[i + 1];
                sg0 += (double)g0;
                sg1 += (double)g1;
                sgx0 += (double)(g0 * ((xn[i] - mf) * rs));
                sgx1 += (double)(g1 * ((xn[i + 1] - mf) * rs));
            }
            for (; i < C; i++) {
                float g = w[i] * dn[i];
                sg0 += (double)g;
                sgx0 += (double)(g * ((xn[i] - mf) * rs));
            }
            float mg = (float)((sg0 + sg1) / C), mgx = (float)((sgx0 + sgx1) / C);
            float *dxn = dx + (size_t)n * C;
            for (i = 0; i < C; i++) {
                float xhat = (xn[i] - mf) * rs;
                float g = w[i] * dn[i];
                dxn[i] += (g - mg - xhat * mgx) * rs;
            }
        }
        if (dw) {
            for (int i = 0; i < C; i++) dw[i] += dn[i] * ((xn[i] - mf) * rs);
        }
        if (db) {
            for (int i = 0; i < C; i++) db[i] += dn[i];
        }
    }
}
