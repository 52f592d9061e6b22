/* Fully connected layer y = x W^T + b: a cblas fast path and a plain-loop twin for the tests.
 * See core/layers.h for the contract (shapes, accumulation, NULL gradients). */
#include "core/layers.h"

#include <assert.h>
#include <cblas.h>
#include <string.h>

void linear_forward(float *y, const float *x, const float *W, const float *b, int N, int in, int out)
{
    assert(N >= 0 && in >= 0 && out >= 0);
    if (N == 0 || out == 0) return;
    if (in == 0) {
        /* sgemm rejects a zero leading dimension, and the product is empty anyway: y = b. */
        for (int n = 0; n < N; n++) {
            if (b) memcpy(y + (size_t)n * out, b, (size_t)out * sizeof *y);
            else memset(y + (size_t)n * out, 0, (size_t)out * sizeof *y);
        }
        return;
    }
    /* y (N,out) = x (N,in) . W^T (in,out) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
    if (b) {
        for (int n = 0; n < N; n++) {
            float *yn = y + (size_t)n * out;
            for (int o = 0; o < out; o++) yn[o] += b[o];
        }
    }
}

void linear_forward_naive(float *y, const float *x, const float *W, const float *b,
                          int N, int in, int out)
{
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < out; o++) {
            double s = 0.0;
            for (int i = 0; i < in; i++) s += (double)x[(size_t)n * in + i] * (double)W[(size_t)o * in + i];
            if (b) s += (double)b[o];
            y[(size_t)n * out + o] = (float)s;
        }
    }
}

void linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                     int N, int in, int out)
{
    assert(N >= 0 && in >= 0 && out >= 0);
    if (N == 0 || out == 0) return;
    if (in > 0) {
        /* dx (N,in) += dy (N,out) . W (out,in) */
        if (dx)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, out, 1.0f, dy, out, W, in, 1.0f,
                        dx, in);
        /* dW (out,in) += dy^T (out,N) . x (N,in) */
        if (dW)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, N, 1.0f, dy, out, x, in, 1.0f,
                        dW, in);
    }
    if (db) {
        /* Row by row so memory is read in order; the order of additions is fixed. */
        for (int n = 0; n < N; n++) {
            const float *dyn = dy + (size_t)n * out;
            for (int o = 0; o < out; o++) db[o] += dyn[o];
        }
    }
}

void linear_backward_naive(float *dx, float *dW, float *db, const float *dy, const float *x,
                           const float *W, int N, int in, int out)
{
    if (dx) {
        for (int n = 0; n < N; n++) {
            for (int i = 0; i < in; i++) {
                double s = 0.0;
                for (int o = 0; o < out; o++)
                    s += (double)dy[(size_t)n * out + o] * (double)W[(size_t)o * in + i];
                dx[(size_t)n * in + i] += (float)s;
            }
        }
    }
    if (dW) {
        for (int o = 0; o < out; o++) {
            for (int i = 0; i < in; i++) {
                double s = 0.0;
                for (int n = 0; n < N; n++)
                    s += (double)dy[(size_t)n * out + o] * (double)x[(size_t)n * in + i];
                dW[(size_t)o * in + i] += (float)s;
            }
        }
    }
    if (db) {
        for (int o = 0; o < out; o++) {
            double s = 0.0;
            for (int n = 0; n < N; n++) s += (double)dy[(size_t)n * out + o];
            db[o] += (float)s;
        }
    }
}
