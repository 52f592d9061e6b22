/* LoRA branch of a linear layer, y += scale * (x A^T) B^T, computed as two thin products so the dense
 * (out,in) update B A is never formed: that costs N*r*(in+out) instead of out*in*(r+N).
 * See core/layers.h for the contract. */
#include "core/layers.h"

#include <assert.h>
#include <cblas.h>

#include "core/parallel.h"

typedef struct lora_job {
    float *y, *xa, *dx, *g, *dA, *dB;
    const float *x, *A, *B, *dy, *xa_in;
    float scale;
    int N, in, out, r;
    size_t grain;   /* rows per task */
} lora_job;

static void lora_forward_task(void *ctx, int task, int worker)
{
    const lora_job *j = ctx;
    int n0, rows = par_range(task, j->grain, j->N, &n0), in = j->in, out = j->out, r = j->r;
    float *xa = j->xa + (size_t)n0 * r;
    /* xa (rows,r) = x (rows,in) . A^T (in,r) */
    if (in > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r, in, 1.0f, j->x + (size_t)n0 * in, in, j->A,
                    in, 0.0f, xa, r);
    else
        for (size_t i = 0; i < (size_t)rows * (size_t)r; i++) xa[i] = 0.0f;
    /* y (rows,out) += scale * xa (rows,r) . B^T (r,out) */
    if (out > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, r, j->scale, xa, r, j->B, r, 1.0f,
                    j->y + (size_t)n0 * out, out);
}

void lora_forward(float *y, float *xa, const float *x, const float *A, const float *B, float scale,
                  int N, int in, int out, int r)
{
    assert(N >= 0 && in >= 0 && out >= 0 && r >= 0);
    if (r == 0 || N == 0) return;
    lora_job j = {.y = y, .xa = xa, .x = x, .A = A, .B = B, .scale = scale, .N = N, .in = in, .out = out, .r = r,
                  .grain = par_grain((size_t)r * ((size_t)in + (size_t)out))};
    par_for(par_chunks((size_t)N, j.grain), lora_forward_task, &j);
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

/* Rows of g = scale * dy B and of dx += g A. */
static void lora_backward_rows_task(void *ctx, int task, int worker)
{
    const lora_job *j = ctx;
    int n0, rows = par_range(task, j->grain, j->N, &n0), in = j->in, out = j->out, r = j->r;
    float *g = j->g + (size_t)n0 * r;
    /* g (rows,r) = scale * dy (rows,out) . B (out,r) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, r, out, j->scale, j->dy + (size_t)n0 * out, out,
                j->B, r, 0.0f, g, r);
    /* dx (rows,in) += g (rows,r) . A (r,in) */
    if (j->dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in, r, 1.0f, g, r, j->A, in, 1.0f,
                    j->dx + (size_t)n0 * in, in);
}

/* The factor gradients, each a sum over all N rows kept in one call: task 0 is dB, task 1 is dA, so the two
 * run side by side on a pool instead of one after the other on the caller. */
static void lora_backward_factors_task(void *ctx, int task, int worker)
{
    const lora_job *j = ctx;
    int N = j->N, in = j->in, out = j->out, r = j->r;
    /* dB (out,r) += scale * dy^T (out,N) . xa (N,r) */
    if (task == 0 && j->dB)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, N, j->scale, j->dy, out, j->xa_in, r, 1.0f,
                    j->dB, r);
    /* dA (r,in) += g^T (r,N) . x (N,in) */
    if (task == 1 && j->dA)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, N, 1.0f, j->g, r, j->x, in, 1.0f, j->dA, in);
}

void lora_backward(float *dx, float *dA, float *dB, float *scratch, const float *dy, const float *x,
                   const float *xa, const float *A, const float *B, float scale,
                   int N, int in, int out, int r)
{
    assert(N >= 0 && in >= 0 && out >= 0 && r >= 0);
    if (r == 0 || N == 0 || out == 0) return;
    if (in == 0) dx = dA = NULL;
    lora_job j = {.dx = dx, .dA = dA, .dB = dB, .g = scratch, .x = x, .xa_in = xa, .dy = dy, .A = A, .B = B,
                  .scale = scale, .N = N, .in = in, .out = out, .r = r,
                  .grain = par_grain((size_t)r * ((size_t)in + (size_t)out))};
    /* g = scale * dy B by rows, and dx += g A, before dA reads g */
    if (dx || dA) par_for(par_chunks((size_t)N, j.grain), lora_backward_rows_task, &j);
    par_for(dA ? 2 : 1, lora_backward_factors_task, &j);
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
