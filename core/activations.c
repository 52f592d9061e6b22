/* Elementwise layers: GELU (tanh approximation) and the residual sum. See core/layers.h. */
#include "core/layers.h"

#include <math.h>

/* sqrt(2/pi), and the cubic coefficient of GPT-2's gelu_new / PyTorch's approximate="tanh". */
#define GELU_S 0.7978845608028654f
#define GELU_C 0.044715f

void gelu_forward(float *out, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_S * (v + GELU_C * v * v * v);
        out[i] = 0.5f * v * (1.0f + tanhf(u));
    }
}

void gelu_backward(float *dx, const float *x, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_S * (v + GELU_C * v * v * v);
        float t = tanhf(u);
        /* d/dv [0.5 v (1 + tanh u)] = 0.5 (1 + t) + 0.5 v (1 - t^2) du/dv */
        float du = GELU_S * (1.0f + 3.0f * GELU_C * v * v);
        float grad = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
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
