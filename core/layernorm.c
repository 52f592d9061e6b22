/* LayerNorm over the last dimension, as in GPT-2 / ViT: eps 1e-5, biased variance.
 * See core/layers.h for the contract. */
#include "core/layers.h"

#include <assert.h>
#include <math.h>

#define LAYERNORM_EPS 1e-5

void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, int N, int C)
{
    assert(N >= 0 && C > 0);
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * C;
        float *on = out + (size_t)n * C;
        /* Two passes (mean, then squared deviations) in double: the one-pass E[x^2] - E[x]^2 formula
         * cancels badly when |mean| >> std, and double costs nothing here since the sums are scalar
         * without -ffast-math anyway. */
        double s = 0.0;
        for (int i = 0; i < C; i++) s += (double)xn[i];
        double m = s / C;
        double v = 0.0;
        for (int i = 0; i < C; i++) {
            double d = (double)xn[i] - m;
            v += d * d;
        }
        v /= C;
        float mf = (float)m;
        float rs = (float)(1.0 / sqrt(v + LAYERNORM_EPS));
        for (int i = 0; i < C; i++) on[i] = (xn[i] - mf) * rs * w[i] + b[i];
        mean[n] = mf;
        rstd[n] = rs;
    }
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
            double sg = 0.0, sgx = 0.0;
            for (int i = 0; i < C; i++) {
                float xhat = (xn[i] - mf) * rs;
                float g = w[i] * dn[i];
                sg += (double)g;
                sgx += (double)(g * xhat);
            }
            float mg = (float)(sg / C), mgx = (float)(sgx / C);
            float *dxn = dx + (size_t)n * C;
            for (int i = 0; i < C; i++) {
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
