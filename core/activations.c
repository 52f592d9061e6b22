/* Elementwise layers and the row softmax: GELU (tanh approximation, and exact), softmax, residual sum.
 * See core/layers.h for the contracts.
 *
 * GELU and softmax spend nearly all their time in exp, and the build's -O2 without -ffast-math leaves
 * every libm call scalar (about 7 ns each here). So exp is evaluated sixteen lanes at a time with GCC/Clang
 * vector extensions, compiled for AVX-512, AVX2 and the baseline and chosen when the program loads
 * (core/simd.h; NEON on arm64, plain code elsewhere): range reduction
 * x = n ln2 + r with |r| <= ln2/2, a degree-7 Taylor polynomial for e^r (truncation below 1e-8 relative),
 * and 2^n built in the exponent bits. Measured error is under 1.2 ulp against exp in double over the
 * whole range; outputs below FLT_MIN are flushed to 0, overflow gives inf and NaN propagates. Every
 * element goes through the same lane code (a short tail is padded), so results do not depend on
 * position or length.
 */
#include "core/layers.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "core/parallel.h"
#include "core/simd.h"
#include "core/vec.h"

static inline vf vf_exp(vf x)
{
    /* Above ln(FLT_MAX) exp overflows, below ln(FLT_MIN) it is subnormal: clamp so the arithmetic stays
     * in range and patch both ends at the exit. The comparisons are false for NaN, which flows through. */
    const float hi = 88.7228394f, lo = -87.3365448f;
    vi over = x > vf_dup(hi), under = x < vf_dup(lo);
    vf xc = vf_select(over, vf_dup(hi), vf_select(under, vf_dup(lo), x));
    /* n = round(x / ln2) by the 1.5 * 2^23 trick: adding it leaves n in the low mantissa bits. */
    const float shifter = 12582912.0f;
    vf t = xc * vf_dup(1.44269504088896341f) + vf_dup(shifter);
    vf n = t - vf_dup(shifter);
    vi ni = (vi)t - (vi)vf_dup(shifter);
    /* r = x - n ln2 in two steps; ln2's high part has few enough bits that n * hi is exact. */
    vf r = xc - n * vf_dup(0.693145751953125f);
    r = r - n * vf_dup(1.428606765330187045e-06f);
    vf p = vf_dup(1.0f / 5040.0f);
    p = p * r + vf_dup(1.0f / 720.0f);
    p = p * r + vf_dup(1.0f / 120.0f);
    p = p * r + vf_dup(1.0f / 24.0f);
    p = p * r + vf_dup(1.0f / 6.0f);
    p = p * r + vf_dup(0.5f);
    p = p * r + vf_dup(1.0f);
    p = p * r + vf_dup(1.0f);
    /* n is in [-126, 128], and 2^128 is not a float: scale by 2^(n/2) twice (exact powers of two). */
    vi n1 = ni >> 1, n2 = ni - n1;
    vf y = p * (vf)((n1 + 127) << 23) * (vf)((n2 + 127) << 23);
    y = vf_select(over, vf_dup(INFINITY), y);
    return vf_select(under, vf_dup(0.0f), y);
}

/* ---- GELU -------------------------------------------------------------------------------------------- */

/* GPT-2's gelu_new / PyTorch's approximate="tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
 * It is evaluated through the identity 0.5 (1 + tanh u) = 1 / (1 + exp(-2u)): the same function within a
 * few ulp of the literal formula, with no cancellation (1 + exp(-2u) >= 1), and the tails come out right:
 * exp(-2u) = inf gives -0 for very negative x, exp(-2u) = 0 gives x. */
#define GELU_S 0.7978845608028654f
#define GELU_C 0.044715f

static inline vf gelu_lanes(vf v)
{
    vf u = vf_dup(GELU_S) * (v + vf_dup(GELU_C) * v * v * v);
    return v / (vf_dup(1.0f) + vf_exp(vf_dup(-2.0f) * u));
}

static inline vf gelu_grad_lanes(vf x)
{
    /* Beyond |x| = 20 the derivative is 1 or 0 to far below float precision; clamping there keeps x^3
     * from overflowing, and clamping u at -40 keeps e = exp(-2u) finite, since e * sg below would
     * otherwise be inf * 0 = NaN. Both clamps pass NaN through. */
    vf lim = vf_dup(20.0f);
    vf v = vf_select(x > lim, lim, vf_select(x < -lim, -lim, x));
    vf u = vf_dup(GELU_S) * (v + vf_dup(GELU_C) * v * v * v);
    u = vf_select(u < vf_dup(-40.0f), vf_dup(-40.0f), u);
    vf e = vf_exp(vf_dup(-2.0f) * u);
    vf sg = vf_dup(1.0f) / (vf_dup(1.0f) + e); /* 0.5 (1 + tanh u) */
    /* d/dx [x sg] = sg + x sg' du/dx with sg' = 0.5 (1 - tanh^2 u) = 2 sg (1 - sg); 1 - sg is taken as
     * e sg, which keeps its relative precision where sg rounds to nearly 1. */
    vf du = vf_dup(GELU_S) * (vf_dup(1.0f) + vf_dup(3.0f * GELU_C) * v * v);
    return sg + vf_dup(2.0f) * v * sg * (e * sg) * du;
}

/* Elementwise sweeps are split into tasks of ELEM_GRAIN elements (a multiple of the lane count, so every
 * element goes through the same lane code whatever the split) for the bound thread pool. */
#define ELEM_GRAIN 16384

typedef struct elem_job {
    float *out, *out2;
    const float *a, *b;
    size_t n;
    bool set;   /* backward: out = (overwrite) instead of += */
} elem_job;

static size_t elem_begin(const elem_job *j, int task) { return (size_t)task * ELEM_GRAIN; }
static size_t elem_len(const elem_job *j, int task)
{
    size_t s = elem_begin(j, task);
    return j->n - s < ELEM_GRAIN ? j->n - s : ELEM_GRAIN;
}

SIMD_CLONES
static void gelu_forward_serial(float *out, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + VL <= n; i += VL) vf_store(out + i, gelu_lanes(vf_load(x + i)));
    if (i < n) {
        float buf[VL] = {0};
        memcpy(buf, x + i, (n - i) * sizeof *buf);
        vf_store(buf, gelu_lanes(vf_load(buf)));
        memcpy(out + i, buf, (n - i) * sizeof *buf);
    }
}

static void gelu_forward_task(void *ctx, int task, int worker)
{
    const elem_job *j = ctx;
    size_t s = elem_begin(j, task);
    gelu_forward_serial(j->out + s, j->a + s, elem_len(j, task));
}

void gelu_forward(float *out, const float *x, size_t n)
{
    elem_job j = {.out = out, .a = x, .n = n};
    par_for(par_chunks(n, ELEM_GRAIN), gelu_forward_task, &j);
}

SIMD_CLONES
static void gelu_backward_serial(float *dx, const float *x, const float *dout, size_t n, bool set)
{
    size_t i = 0;
    if (set)
        for (; i + VL <= n; i += VL) vf_store(dx + i, gelu_grad_lanes(vf_load(x + i)) * vf_load(dout + i));
    else
        for (; i + VL <= n; i += VL)
            vf_store(dx + i, vf_load(dx + i) + gelu_grad_lanes(vf_load(x + i)) * vf_load(dout + i));
    if (i < n) {
        float bx[VL] = {0}, bd[VL] = {0}, bg[VL] = {0};
        memcpy(bx, x + i, (n - i) * sizeof *bx);
        memcpy(bd, dout + i, (n - i) * sizeof *bd);
        vf g = gelu_grad_lanes(vf_load(bx)) * vf_load(bd);
        if (!set) {
            memcpy(bg, dx + i, (n - i) * sizeof *bg);
            g = vf_load(bg) + g;
        }
        vf_store(bg, g);
        memcpy(dx + i, bg, (n - i) * sizeof *bg);
    }
}

static void gelu_backward_task(void *ctx, int task, int worker)
{
    const elem_job *j = ctx;
    size_t s = elem_begin(j, task);
    gelu_backward_serial(j->out + s, j->a + s, j->b + s, elem_len(j, task), j->set);
}

void gelu_backward(float *dx, const float *x, const float *dout, size_t n)
{
    elem_job j = {.out = dx, .a = x, .b = dout, .n = n};
    par_for(par_chunks(n, ELEM_GRAIN), gelu_backward_task, &j);
}

void gelu_backward_set(float *dx, const float *x, const float *dout, size_t n)
{
    elem_job j = {.out = dx, .a = x, .b = dout, .n = n, .set = true};
    par_for(par_chunks(n, ELEM_GRAIN), gelu_backward_task, &j);
}

/* ---- exact GELU -------------------------------------------------------------------------------------- */

/* Scalar loops over libm's erff/expf inside each chunk task: imported ViTs must match PyTorch's nn.GELU()
 * to float precision, and a lane erf would need its own polynomial with its own error; the chunks keep
 * the split (and so the results) independent of the thread count, like the kernels above. */
#define GELU_RSQRT2 0.70710678118654752f
#define GELU_RSQRT2PI 0.39894228040143268f

static void gelu_erf_forward_task(void *ctx, int task, int worker)
{
    const elem_job *j = ctx;
    size_t s = elem_begin(j, task), n = elem_len(j, task);
    float *out = j->out + s;
    const float *x = j->a + s;
    for (size_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * GELU_RSQRT2));
}

void gelu_erf_forward(float *out, const float *x, size_t n)
{
    elem_job j = {.out = out, .a = x, .n = n};
    par_for(par_chunks(n, ELEM_GRAIN), gelu_erf_forward_task, &j);
}

static void gelu_erf_backward_task(void *ctx, int task, int worker)
{
    const elem_job *j = ctx;
    size_t s = elem_begin(j, task), n = elem_len(j, task);
    float *dx = j->out + s;
    const float *x = j->a + s, *dout = j->b + s;
    for (size_t i = 0; i < n; i++) {
        float cdf = 0.5f * (1.0f + erff(x[i] * GELU_RSQRT2));
        float pdf = GELU_RSQRT2PI * expf(-0.5f * x[i] * x[i]);
        float g = (cdf + x[i] * pdf) * dout[i];
        dx[i] = j->set ? g : dx[i] + g;
    }
}

void gelu_erf_backward(float *dx, const float *x, const float *dout, size_t n)
{
    elem_job j = {.out = dx, .a = x, .b = dout, .n = n};
    par_for(par_chunks(n, ELEM_GRAIN), gelu_erf_backward_task, &j);
}

void gelu_erf_backward_set(float *dx, const float *x, const float *dout, size_t n)
{
    elem_job j = {.out = dx, .a = x, .b = dout, .n = n, .set = true};
    par_for(par_chunks(n, ELEM_GRAIN), gelu_erf_backward_task, &j);
}

/* ---- softmax ----------------------------------------------------------------------------------------- */

SIMD_CLONES
void softmax_forward(float *out, const float *in, int N, int K)
{
    for (int row = 0; row < N; row++) {
        const float *x = in + (size_t)row * K;
        float *y = out + (size_t)row * K;
        float mx = vf_row_max(x, K);
        /* exp(x - max) in (0, 1], so the sum is in [1, K]: no overflow, no division by ~0. Four lane sums
         * added in a fixed order at the end keep the result deterministic. */
        vf m4 = vf_splat(mx), acc = vf_dup(0.0f);   /* +0 for -0: exp(x - 0) is the same either way */
        int full = K / VL * VL;
        /* A ragged tail is handled with the last VL elements of the row, read before anything is written
         * (out may equal in); lanes it shares with the last full vector get the same bits again and are
         * counted once. Rows shorter than VL go through a padded buffer. */
        vf tail = vf_dup(0.0f);
        if (full < K && K >= VL) tail = vf_exp(vf_load(x + K - VL) - m4);
        for (int k = 0; k < full; k += VL) {
            vf e = vf_exp(vf_load(x + k) - m4);
            vf_store(y + k, e);
            acc += e;
        }
        if (full < K && K >= VL) {
            vf_store(y + K - VL, tail);
            acc += vf_select(vf_lane_index() >= full - (K - VL), tail, vf_dup(0.0f));
        } else if (full < K) {
            float buf[VL]; /* exp(-inf) = 0 adds nothing */
            for (int l = 0; l < VL; l++) buf[l] = -INFINITY;
            memcpy(buf, x, (size_t)K * sizeof *buf);
            vf e = vf_exp(vf_load(buf) - m4);
            vf_store(buf, e);
            memcpy(y, buf, (size_t)K * sizeof *buf);
            acc += e;
        }
        vf inv = vf_splat(1.0f / vf_sum(acc));
        int k = 0;
        for (; k + VL <= K; k += VL) vf_store(y + k, vf_load(y + k) * inv);
        for (; k < K; k++) y[k] *= inv[0];
    }
}

/* ---- residual ---------------------------------------------------------------------------------------- */

SIMD_CLONES
static void residual_forward_task(void *ctx, int task, int worker)
{
    const elem_job *j = ctx;
    size_t s = elem_begin(j, task), e = s + elem_len(j, task);
    for (size_t i = s; i < e; i++) j->out[i] = j->a[i] + j->b[i];
}

void residual_forward(float *out, const float *a, const float *b, size_t n)
{
    elem_job j = {.out = out, .a = a, .b = b, .n = n};
    par_for(par_chunks(n, ELEM_GRAIN), residual_forward_task, &j);
}

SIMD_CLONES
static void residual_backward_task(void *ctx, int task, int worker)
{
    const elem_job *j = ctx;
    size_t s = elem_begin(j, task), e = s + elem_len(j, task);
    if (j->out)
        for (size_t i = s; i < e; i++) j->out[i] += j->a[i];
    if (j->out2)
        for (size_t i = s; i < e; i++) j->out2[i] += j->a[i];
}

void residual_backward(float *da, float *db, const float *dout, size_t n)
{
    elem_job j = {.out = da, .out2 = db, .a = dout, .n = n};
    par_for(par_chunks(n, ELEM_GRAIN), residual_backward_task, &j);
}
