/* Fully connected layer y = x W^T + b: a cblas fast path and a plain-loop twin for the tests.
 * See core/layers.h for the contract (shapes, accumulation, NULL gradients). */
#include "core/layers.h"

#include <assert.h>
#include <cblas.h>
#include <stdbool.h>
#include <string.h>

#include "core/parallel.h"
#include "core/simd.h"
#include "core/vec.h"

typedef struct linear_job {
    float *y, *dx, *dW, *db;
    const float *x, *W, *b, *dy;
    const linear_epilogue *e;   /* forward: NULL for a plain linear */
    bool xa_ready[PAR_MAX_THREADS];   /* forward by columns: worker w has computed every row of xa */
    bool dx_set;                /* backward: dx = (overwrite) instead of += */
    int N, in, out;
    par_split split;   /* forward and dx: rows (samples) or columns; dW, db: output features */
} linear_job;

/* LoRA's first product xa (rows,r) = x[n0:n0+rows] (rows,in) . A^T (in,r). */
static void linear_xa(const linear_job *j, float *xa, int n0, int rows)
{
    const linear_epilogue *e = j->e;
    if (j->in > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, e->r, j->in, 1.0f, j->x + (size_t)n0 * j->in, j->in,
                    e->A, j->in, 0.0f, xa, e->r);
    else
        memset(xa, 0, (size_t)rows * (size_t)e->r * sizeof *xa);
}

/* The xa rows a task's LoRA product reads. A task of rows computes its own rows into e->xa. A task of
 * columns needs every row: each thread that takes part computes them once (the same call, so the same
 * bits), the caller into e->xa and a worker into its scratch; (N,r) is small next to the (N,cols,in) block
 * product, and the alternative, a separate run of the pool before the product, costs a wake-up per layer. */
static const float *linear_task_xa(linear_job *j, int worker, int n0, int rows)
{
    const linear_epilogue *e = j->e;
    if (!j->split.by_cols) {
        linear_xa(j, e->xa + (size_t)n0 * e->r, n0, rows);
        return e->xa + (size_t)n0 * e->r;
    }
    float *xa = worker == 0 ? e->xa : par_scratch(worker, (size_t)j->N * (size_t)e->r * sizeof(float));
    if (!j->xa_ready[worker]) linear_xa(j, xa, 0, j->N);
    j->xa_ready[worker] = true;
    return xa;
}

/* The epilogue on a block of rows x cols of y (leading dimension out) at (n0, o0), after the bias. */
SIMD_CLONES
static void linear_epilogue_block(linear_job *j, int worker, float *y, int n0, int o0, int rows, int cols)
{
    const linear_epilogue *e = j->e;
    int out = j->out;
    /* y (rows,cols) += scale * xa (rows,r) . B[o0:o0+cols]^T (r,cols) */
    if (e->r) {
        const float *xa = linear_task_xa(j, worker, n0, rows);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, e->r, e->scale, xa, e->r,
                    e->B + (size_t)o0 * e->r, e->r, 1.0f, y, out);
    }
    for (int n = 0; n < rows; n++) {
        float *yn = y + (size_t)n * out;
        if (e->res) vf_add_row(yn, e->res + (size_t)(n0 + n) * out + o0, cols);
        /* Inside a task these run serially on this block, with the lane code every element goes through. */
        float *an = e->act ? e->act + (size_t)(n0 + n) * out + o0 : NULL;
        if (e->act_kind == LINEAR_ACT_GELU) gelu_forward(an, yn, (size_t)cols);
        else if (e->act_kind == LINEAR_ACT_GELU_ERF) gelu_erf_forward(an, yn, (size_t)cols);
    }
}

SIMD_CLONES
static void linear_forward_task(void *ctx, int task, int worker)
{
    linear_job *j = ctx;
    int in = j->in, out = j->out, n0 = 0, o0 = 0, rows = j->N, cols = out;
    if (j->split.by_cols) cols = par_range(task, j->split.grain, out, &o0);
    else rows = par_range(task, j->split.grain, j->N, &n0);
    float *y = j->y + (size_t)n0 * out + o0;
    /* y (rows,cols) = x (rows,in) . W[o0:o0+cols]^T (in,cols) */
    if (in > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, in, 1.0f, j->x + (size_t)n0 * in, in,
                    j->W + (size_t)o0 * in, in, 0.0f, y, out);
    for (int n = 0; n < rows; n++) {
        /* sgemm rejects a zero leading dimension, and the product is empty anyway: y = b. */
        if (in == 0) memset(y + (size_t)n * out, 0, (size_t)cols * sizeof *y);
        if (j->b) vf_add_row(y + (size_t)n * out, j->b + o0, cols);
    }
    if (j->e) linear_epilogue_block(j, worker, y, n0, o0, rows, cols);
}

void linear_forward_fused(float *y, const float *x, const float *W, const float *b, const linear_epilogue *e,
                          int N, int in, int out)
{
    assert(N >= 0 && in >= 0 && out >= 0);
    assert(!e || ((e->act == NULL) == (e->act_kind == LINEAR_ACT_NONE) && e->r >= 0));
    if (N == 0 || out == 0) return;
    linear_job j = {.y = y, .x = x, .W = W, .b = b, .e = e, .N = N, .in = in, .out = out,
                    .split = par_split_product((size_t)N, (size_t)out, (size_t)in)};
    par_for(j.split.tasks, linear_forward_task, &j);
    /* Tasks of columns: if every one ran on a worker, the caller's xa was never written. */
    if (e && e->r && j.split.by_cols && !j.xa_ready[0]) linear_xa(&j, e->xa, 0, N);
}

void linear_forward(float *y, const float *x, const float *W, const float *b, int N, int in, int out)
{
    linear_forward_fused(y, x, W, b, NULL, N, in, out);
}

void linear_forward_fused_naive(float *y, const float *x, const float *W, const float *b, const linear_epilogue *e,
                                int N, int in, int out)
{
    linear_forward_naive(y, x, W, b, N, in, out);
    if (!e) return;
    if (e->r) lora_forward_naive(y, e->xa, x, e->A, e->B, e->scale, N, in, out, e->r);
    size_t n = (size_t)N * (size_t)out;
    if (e->res)
        for (size_t i = 0; i < n; i++) y[i] = e->res[i] + y[i];
    if (e->act_kind == LINEAR_ACT_GELU) gelu_forward(e->act, y, n);
    else if (e->act_kind == LINEAR_ACT_GELU_ERF) gelu_erf_forward(e->act, y, n);
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
                j->W + i0, in, j->dx_set ? 0.0f : 1.0f, j->dx + (size_t)n0 * in + i0, in);
}

/* dW and db for output features o0..: each sums over every row, in row order. */
SIMD_CLONES
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
        for (int n = 0; n < N; n++) vf_add_row(j->db + o0, j->dy + (size_t)n * out + o0, cols);
    }
}

static void linear_backward_job(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                                int N, int in, int out, bool dx_set)
{
    assert(N >= 0 && in >= 0 && out >= 0);
    if (dx_set && dx && (N == 0 || out == 0)) memset(dx, 0, (size_t)N * (size_t)in * sizeof *dx);
    if (N == 0 || out == 0) return;
    linear_job j = {.dx = dx, .dW = dW, .db = db, .dy = dy, .x = x, .W = W, .N = N, .in = in, .out = out,
                    .dx_set = dx_set};
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

void linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                     int N, int in, int out)
{
    linear_backward_job(dx, dW, db, dy, x, W, N, in, out, false);
}

void linear_backward_set(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                         int N, int in, int out)
{
    linear_backward_job(dx, dW, db, dy, x, W, N, in, out, true);
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
