/* Elementwise layers: GELU (tanh approximation) and the residual sum. See core/layers.h. */
#include "core/layers.h"

#include <math.h>

/* GPT-2's gelu_new / PyTorch's approximate="tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
 * It is evaluated through the identity 0.5 (1 + tanh u) = 1 / (1 + exp(-2u)): the same function, within
 * an ulp or two of the literal formula, but glibc's expf is about 3-4x faster than its tanhf, and GELU runs
 * on the widest activation (N x 4C) twice per step. Large negative u overflows exp to inf and gives the
 * correct limit -0; there is no cancellation, since 1 + exp(-2u) >= 1. */
#define GELU_S 0.7978845608028654f
#define GELU_C 0.044715f

void gelu_forward(float *out, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_S * (v + GELU_C * v * v * v);
        out[i] = v / (1.0f + expf(-2.0f * u));
    }
}

void gelu_backward(float *dx, const float *x, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        /* Beyond |x| = 20 the derivative is 1 or 0 to far below float precision; clamping there keeps
         * x^2 and x^3 from overflowing (inf * 0 = NaN), and clamping u keeps e finite for the same reason.
         * Written as comparisons so a NaN input still propagates. */
        float v = x[i] > 20.0f ? 20.0f : x[i] < -20.0f ? -20.0f : x[i];
        float u = GELU_S * (v + GELU_C * v * v * v);
        float e = expf(-2.0f * (u < -40.0f ? -40.0f : u));
        float sg = 1.0f / (1.0f + e); /* = 0.5 (1 + tanh u) */
        /* d/dv [v sg] = sg + v sg' du/dv, with sg' = 0.5 (1 - tanh^2 u) = 2 sg (1 - sg). 1 - sg is taken
         * as e sg, which keeps its relative precision where sg rounds to nearly 1. */
        float du = GELU_S * (1.0f + 3.0f * GELU_C * v * v);
        float grad = sg + 2.0f * v * sg * (e * sg) * du;
        dx[i] += grad * dout[i];
    }
}

void residual_forward(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void residual_backward(float *da, float *db, const float *dout, size_t n)
{
    if (da)
        for (size_t i = 0; i < n; i++) da[i] += dout[i];
    if (db)
        for (size_t i = 0; i < n; i++) db[i] += dout[i];
}
