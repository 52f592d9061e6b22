/* Fully connected layer y = x W^T + b: a cblas fast path and a plain-loop twin for the tests.
 * See core/layers.h for the contract (shapes, accumulation, NULL gradients). */
#include "core/layers.h"

#include <assert.h>
#include <cblas.h>
#include <string.h>

#include "core/parallel.h"
#include "core/simd.h"
#include "core/vec.h"

typedef struct linear_job {
    float *y, *dx, *dW, *db;
    const float *x, *W, *b, *dy;
    int N, in, out;
    size_t grain;   /* rows (forward, dx) or output features (dW, db) per task */
} linear_job;

SIMD_CLONES
static void linear_forward_task(void *ctx, int task, int worker)
{
    const linear_job *j = ctx;
    int n0 = (int)((size_t)task * j->grain), rows = j->N - n0 < (int)j->grain ? j->N - n0 : (int)j->grain;
    int in = j->in, out = j->out;
    float *y = j->y + (size_t)n0 * out;
    /* y (rows,out) = x (rows,in) . W^T (in,out) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, j->x + (size_t)n0 * in, in, j->W,
                in, 0.0f, y, out);
    if (j->b)
        for (int n = 0; n < rows; n++) vf_add_row(y + (size_t)n * out, j->b, out);
}

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
    linear_job j = {.y = y, .x = x, .W = W, .b = b, .N = N, .in = in, .out = out,
                    .grain = par_row_grain((size_t)in * (size_t)out)};
    par_for(par_chunks((size_t)N, j.grain), linear_forward_task, &j);
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

/* dx rows n0.. of the backward pass. */
static void linear_backward_dx_task(void *ctx, int task, int worker)
{
    const linear_job *j = ctx;
    int n0 = (int)((size_t)task * j->grain), rows = j->N - n0 < (int)j->grain ? j->N - n0 : (int)j->grain;
    /* dx (rows,in) += dy (rows,out) . W (out,in) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, j->in, j->out, 1.0f, j->dy + (size_t)n0 * j->out,
                j->out, j->W, j->in, 1.0f, j->dx + (size_t)n0 * j->in, j->in);
}

/* dW and db for output features o0..: each sums over every row, in row order. */
static void linear_backward_dw_task(void *ctx, int task, int worker)
{
    const linear_job *j = ctx;
    int o0 = (int)((size_t)task * j->grain), cols = j->out - o0 < (int)j->grain ? j->out - o0 : (int)j->grain;
    int N = j->N, in = j->in, out = j->out;
    /* dW (cols,in) += dy^T (cols,N) . x (N,in) */
    if (j->dW && in > 0)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, in, N, 1.0f, j->dy + o0, out, j->x, in, 1.0f,
                    j->dW + (size_t)o0 * in, in);
    if (j->db) {
        /* Row by row so memory is read in order; the order of additions is fixed. */
        for (int n = 0; n < N; n++) {
            const float *dyn = j->dy + (size_t)n * out + o0;
            for (int o = 0; o < cols; o++) j->db[o0 + o] += dyn[o];
        }
    }
}

void linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                     int N, int in, int out)
{
    assert(N >= 0 && in >= 0 && out >= 0);
    if (N == 0 || out == 0) return;
    linear_job j = {.dx = dx, .dW = dW, .db = db, .dy = dy, .x = x, .W = W, .N = N, .in = in, .out = out};
    if (dx && in > 0) {
        j.grain = par_row_grain((size_t)in * (size_t)out);
        par_for(par_chunks((size_t)N, j.grain), linear_backward_dx_task, &j);
    }
    if (dW || db) {
        j.grain = par_row_grain((size_t)N * (size_t)(in > 0 ? in : 1));
        par_for(par_chunks((size_t)out, j.grain), linear_backward_dw_task, &j);
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
