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
    par_split split;   /* forward and dx: rows (samples) or columns; dW, db: output features */
} linear_job;

SIMD_CLONES
static void linear_forward_task(void *ctx, int task, int worker)
{
    const linear_job *j = ctx;
    int in = j->in, out = j->out, n0 = 0, o0 = 0, rows = j->N, cols = out;
    if (j->split.by_cols) cols = par_range(task, j->split.grain, out, &o0);
    else rows = par_range(task, j->split.grain, j->N, &n0);
    float *y = j->y + (size_t)n0 * out + o0;
    /* y (rows,cols) = x (rows,in) . W[o0:o0+cols]^T (in,cols) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, in, 1.0f, j->x + (size_t)n0 * in, in,
                j->W + (size_t)o0 * in, in, 0.0f, y, out);
    if (j->b)
        for (int n = 0; n < rows; n++) vf_add_row(y + (size_t)n * out, j->b + o0, cols);
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
                    .split = par_split_product((size_t)N, (size_t)out, (size_t)in)};
    par_for(j.split.tasks, linear_forward_task, &j);
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

/* A block of dx: rows n0.. or input features i0.. */
static void linear_backward_dx_task(void *ctx, int task, int worker)
{
    const linear_job *j = ctx;
    int in = j->in, out = j->out, n0 = 0, i0 = 0, rows = j->N, cols = in;
    if (j->split.by_cols) cols = par_range(task, j->split.grain, in, &i0);
    else rows = par_range(task, j->split.grain, j->N, &n0);
    /* dx[n0:, i0:] (rows,cols) += dy (rows,out) . W[:, i0:] (out,cols) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols, out, 1.0f, j->dy + (size_t)n0 * out, out,
                j->W + i0, in, 1.0f, j->dx + (size_t)n0 * in + i0, in);
}

/* dW and db for output features o0..: each sums over every row, in row order. */
static void linear_backward_dw_task(void *ctx, int task, int worker)
{
    const linear_job *j = ctx;
    int o0 = 0, cols = par_range(task, j->split.grain, j->out, &o0);
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
        j.split = par_split_product((size_t)N, (size_t)in, (size_t)out);
        par_for(j.split.tasks, linear_backward_dx_task, &j);
    }
    if (dW || db) {
        /* Split by output features only: db's sums must not be cut. */
        size_t grain = par_grain((size_t)N * (size_t)(in > 0 ? in : 1));
        j.split = (par_split){false, grain, par_chunks((size_t)out, grain)};
        par_for(j.split.tasks, linear_backward_dw_task, &j);
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
