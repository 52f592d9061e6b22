/* Elementwise layers and the row softmax: GELU (tanh approximation, and exact), softmax, residual sum.
 * See core/layers.h for the contracts.
 *
 * GELU and softmax spend nearly all their time in exp, and the build's -O2 without -ffast-math leaves
 * every libm call scalar (about 7 ns each here). So exp is evaluated four lanes at a time with GCC/Clang
 * vector extensions (portable: SSE2 on x86-64, NEON on arm64, plain code elsewhere): range reduction
 * x = n ln2 + r with |r| <= ln2/2, a degree-7 Taylor polynomial for e^r (truncation below 1e-8 relative),
 * and 2^n built in the exponent bits. Measured error is under 1.2 ulp against exp in double over the
 * whole range; outputs below FLT_MIN are flushed to 0, overflow gives inf and NaN propagates. Every
 * element goes through the same lane code (a short tail is padded), so results do not depend on
 * position or length.
 */
#include "core/layers.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f v4f_dup(float a) { return (v4f){a, a, a, a}; }
/* Lane-wise m ? a : b for a comparison mask m (all ones or all zeros per lane). */
static inline v4f v4f_select(v4i m, v4f a, v4f b) { return (v4f)(((v4i)a & m) | ((v4i)b & ~m)); }
static inline v4f v4f_load(const float *p) { v4f v; memcpy(&v, p, sizeof v); return v; }
static inline void v4f_store(float *p, v4f v) { memcpy(p, &v, sizeof v); }

static inline v4f v4f_exp(v4f x)
{
    /* Above ln(FLT_MAX) exp overflows, below ln(FLT_MIN) it is subnormal: clamp so the arithmetic stays
     * in range and patch both ends at the exit. The comparisons are false for NaN, which flows through. */
    const float hi = 88.7228394f, lo = -87.3365448f;
    v4i over = x > v4f_dup(hi), under = x < v4f_dup(lo);
    v4f xc = v4f_select(over, v4f_dup(hi), v4f_select(under, v4f_dup(lo), x));
    /* n = round(x / ln2) by the 1.5 * 2^23 trick: adding it leaves n in the low mantissa bits. */
    const float shifter = 12582912.0f;
    v4f t = xc * v4f_dup(1.44269504088896341f) + v4f_dup(shifter);
    v4f n = t - v4f_dup(shifter);
    v4i ni = (v4i)t - (v4i)v4f_dup(shifter);
    /* r = x - n ln2 in two steps; ln2's high part has few enough bits that n * hi is exact. */
    v4f r = xc - n * v4f_dup(0.693145751953125f);
    r = r - n * v4f_dup(1.428606765330187045e-06f);
    v4f p = v4f_dup(1.0f / 5040.0f);
    p = p * r + v4f_dup(1.0f / 720.0f);
    p = p * r + v4f_dup(1.0f / 120.0f);
    p = p * r + v4f_dup(1.0f / 24.0f);
    p = p * r + v4f_dup(1.0f / 6.0f);
    p = p * r + v4f_dup(0.5f);
    p = p * r + v4f_dup(1.0f);
    p = p * r + v4f_dup(1.0f);
    /* n is in [-126, 128], and 2^128 is not a float: scale by 2^(n/2) twice (exact powers of two). */
    v4i n1 = ni >> 1, n2 = ni - n1;
    v4f y = p * (v4f)((n1 + 127) << 23) * (v4f)((n2 + 127) << 23);
    y = v4f_select(over, v4f_dup(INFINITY), y);
    return v4f_select(under, v4f_dup(0.0f), y);
}

/* ---- GELU -------------------------------------------------------------------------------------------- */

/* GPT-2's gelu_new / PyTorch's approximate="tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
 * It is evaluated through the identity 0.5 (1 + tanh u) = 1 / (1 + exp(-2u)): the same function within a
 * few ulp of the literal formula, with no cancellation (1 + exp(-2u) >= 1), and the tails come out right:
 * exp(-2u) = inf gives -0 for very negative x, exp(-2u) = 0 gives x. */
#define GELU_S 0.7978845608028654f
#define GELU_C 0.044715f

static inline v4f gelu_lanes(v4f v)
{
    v4f u = v4f_dup(GELU_S) * (v + v4f_dup(GELU_C) * v * v * v);
    return v / (v4f_dup(1.0f) + v4f_exp(v4f_dup(-2.0f) * u));
}

static inline v4f gelu_grad_lanes(v4f x)
{
    /* Beyond |x| = 20 the derivative is 1 or 0 to far below float precision; clamping there keeps x^3
     * from overflowing, and clamping u at -40 keeps e = exp(-2u) finite, since e * sg below would
     * otherwise be inf * 0 = NaN. Both clamps pass NaN through. */
    v4f lim = v4f_dup(20.0f);
    v4f v = v4f_select(x > lim, lim, v4f_select(x < -lim, -lim, x));
    v4f u = v4f_dup(GELU_S) * (v + v4f_dup(GELU_C) * v * v * v);
    u = v4f_select(u < v4f_dup(-40.0f), v4f_dup(-40.0f), u);
    v4f e = v4f_exp(v4f_dup(-2.0f) * u);
    v4f sg = v4f_dup(1.0f) / (v4f_dup(1.0f) + e); /* 0.5 (1 + tanh u) */
    /* d/dx [x sg] = sg + x sg' du/dx with sg' = 0.5 (1 - tanh^2 u) = 2 sg (1 - sg); 1 - sg is taken as
     * e sg, which keeps its relative precision where sg rounds to nearly 1. */
    v4f du = v4f_dup(GELU_S) * (v4f_dup(1.0f) + v4f_dup(3.0f * GELU_C) * v * v);
    return sg + v4f_dup(2.0f) * v * sg * (e * sg) * du;
}

void gelu_forward(float *out, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4) v4f_store(out + i, gelu_lanes(v4f_load(x + i)));
    if (i < n) {
        float buf[4] = {0, 0, 0, 0};
        memcpy(buf, x + i, (n - i) * sizeof *buf);
        v4f_store(buf, gelu_lanes(v4f_load(buf)));
        memcpy(out + i, buf, (n - i) * sizeof *buf);
    }
}

void gelu_backward(float *dx, const float *x, const float *dout, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        v4f_store(dx + i, v4f_load(dx + i) + gelu_grad_lanes(v4f_load(x + i)) * v4f_load(dout + i));
    if (i < n) {
        float bx[4] = {0, 0, 0, 0}, bd[4] = {0, 0, 0, 0}, bg[4] = {0, 0, 0, 0};
        memcpy(bx, x + i, (n - i) * sizeof *bx);
        memcpy(bd, dout + i, (n - i) * sizeof *bd);
        memcpy(bg, dx + i, (n - i) * sizeof *bg);
        v4f_store(bg, v4f_load(bg) + gelu_grad_lanes(v4f_load(bx)) * v4f_load(bd));
        memcpy(dx + i, bg, (n - i) * sizeof *bg);
    }
}

/* ---- exact GELU -------------------------------------------------------------------------------------- */

/* Plain loops over libm's erff/expf: imported ViTs must match PyTorch's nn.GELU() to float precision, and
 * the polynomial exp above is not needed for that. */
#define GELU_RSQRT2 0.70710678118654752f
#define GELU_RSQRT2PI 0.39894228040143268f

void gelu_erf_forward(float *out, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * GELU_RSQRT2));
}

void gelu_erf_backward(float *dx, const float *x, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float cdf = 0.5f * (1.0f + erff(x[i] * GELU_RSQRT2));
        float pdf = GELU_RSQRT2PI * expf(-0.5f * x[i] * x[i]);
        dx[i] += (cdf + x[i] * pdf) * dout[i];
    }
}

/* ---- softmax ----------------------------------------------------------------------------------------- */

void softmax_forward(float *out, const float *in, int N, int K)
{
    for (int row = 0; row < N; row++) {
        const float *x = in + (size_t)row * K;
        float *y = out + (size_t)row * K;
        float mx = x[0];
        for (int k = 1; k < K; k++) mx = x[k] > mx ? x[k] : mx;
        /* exp(x - max) in (0, 1], so the sum is in [1, K]: no overflow, no division by ~0. Four lane sums
         * added in a fixed order at the end keep the result deterministic. */
        v4f m4 = v4f_dup(mx), acc = v4f_dup(0.0f);
        int k = 0;
        for (; k + 4 <= K; k += 4) {
            v4f e = v4f_exp(v4f_load(x + k) - m4);
            v4f_store(y + k, e);
            acc += e;
        }
        if (k < K) {
            float buf[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY}; /* exp(-inf) = 0 adds nothing */
            memcpy(buf, x + k, (size_t)(K - k) * sizeof *buf);
            v4f e = v4f_exp(v4f_load(buf) - m4);
            v4f_store(buf, e);
            memcpy(y + k, buf, (size_t)(K - k) * sizeof *buf);
            acc += e;
        }
        float inv = 1.0f / ((acc[0] + acc[1]) + (acc[2] + acc[3]));
        for (k = 0; k < K; k++) y[k] *= inv;
    }
}

/* ---- residual ---------------------------------------------------------------------------------------- */

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
