/* LoRA branch of a linear layer, y += scale * (x A^T) B^T, computed as two thin products so the dense
 * (out,in) update B A is never formed: that costs N*r*(in+out) instead of out*in*(r+N).
 * See core/layers.h for the contract. */
#include "core/layers.h"

#include <assert.h>
#include <cblas.h>

void lora_forward(float *y, float *xa, const float *x, const float *A, const float *B, float scale,
                  int N, int in, int out, int r)
{
    assert(N >= 0 && in >= 0 && out >= 0 && r >= 0);
    if (r == 0 || N == 0) return;
    /* xa (N,r) = x (N,in) . A^T (in,r) */
    if (in > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, r, in, 1.0f, x, in, A, in, 0.0f, xa, r);
    else
        for (size_t i = 0; i < (size_t)N * (size_t)r; i++) xa[i] = 0.0f;
    /* y (N,out) += scale * xa (N,r) . B^T (r,out) */
    if (out > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, r, scale, xa, r, B, r, 1.0f, y, out);
}

void lora_forward_naive(float *y, float *xa, const float *x, const float *A, const float *B, float scale,
                        int N, int in, int out, int r)
{
    if (r == 0) return;
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < r; k++) {
            double s = 0.0;
            for (int i = 0; i < in; i++) s += (double)x[(size_t)n * in + i] * (double)A[(size_t)k * in + i];
            xa[(size_t)n * r + k] = (float)s;
        }
    }
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < out; o++) {
            double s = 0.0;
            for (int k = 0; k < r; k++) s += (double)xa[(size_t)n * r + k] * (double)B[(size_t)o * r + k];
            y[(size_t)n * out + o] += (float)((double)scale * s);
        }
    }
}

void lora_backward(float *dx, float *dA, float *dB, float *scratch, const float *dy, const float *x,
                   const float *xa, const float *A, const float *B, float scale,
                   int N, int in, int out, int r)
{
    assert(N >= 0 && in >= 0 && out >= 0 && r >= 0);
    if (r == 0 || N == 0 || out == 0) return;
    /* dB (out,r) += scale * dy^T (out,N) . xa (N,r) */
    if (dB)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, N, scale, dy, out, xa, r, 1.0f, dB, r);
    if ((!dx && !dA) || in == 0) return;
    /* g = scratch (N,r) = scale * dy (N,out) . B (out,r) */
    float *g = scratch;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, r, out, scale, dy, out, B, r, 0.0f, g, r);
    /* dx (N,in) += g (N,r) . A (r,in) */
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, r, 1.0f, g, r, A, in, 1.0f, dx, in);
    /* dA (r,in) += g^T (r,N) . x (N,in) */
    if (dA)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, N, 1.0f, g, r, x, in, 1.0f, dA, in);
}

void lora_backward_naive(float *dx, float *dA, float *dB, float *scratch, const float *dy,
                         const float *x, const float *xa, const float *A, const float *B, float scale,
                         int N, int in, int out, int r)
{
    if (r == 0) return;
    if (dB) {
        for (int o = 0; o < out; o++) {
            for (int k = 0; k < r; k++) {
                double s = 0.0;
                for (int n = 0; n < N; n++)
                    s += (double)dy[(size_t)n * out + o] * (double)xa[(size_t)n * r + k];
                dB[(size_t)o * r + k] += (float)((double)scale * s);
            }
        }
    }
    if (!dx && !dA) return;
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < r; k++) {
            double s = 0.0;
            for (int o = 0; o < out; o++) s += (double)dy[(size_t)n * out + o] * (double)B[(size_t)o * r + k];
            scratch[(size_t)n * r + k] = (float)((double)scale * s);
        }
    }
    if (dx) {
        for (int n = 0; n < N; n++) {
            for (int i = 0; i < in; i++) {
                double s = 0.0;
                for (int k = 0; k < r; k++)
                    s += (double)scratch[(size_t)n * r + k] * (double)A[(size_t)k * in + i];
                dx[(size_t)n * in + i] += (float)s;
            }
        }
    }
    if (dA) {
        for (int k = 0; k < r; k++) {
            for (int i = 0; i < in; i++) {
                double s = 0.0;
                for (int n = 0; n < N; n++)
                    s += (double)scratch[(size_t)n * r + k] * (double)x[(size_t)n * in + i];
                dA[(size_t)k * in + i] += (float)s;
            }
        }
    }
}
