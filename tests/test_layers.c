/* Tests of core/layers.h: every fast kernel against its naive twin, every backward pass against central
 * finite differences of L = sum(out * R) for a fixed random R, accumulation and NULL-gradient semantics,
 * determinism, and hand-checked cases for the index-shuffling layers (patches, tokens).
 *
 * Finite differences: L is evaluated in double from the float outputs, and the step actually taken is
 * recomputed as (float)(v + eps) - (float)(v - eps), so the only float noise left is the rounding of the
 * outputs that change. The tolerance is 0.2% of (|element| + largest |gradient|), about ten times the worst
 * error seen (run with LAYERS_VERBOSE=1 to print it): tight enough that a missing factor 2, a dropped term
 * or a transposed index fails (checked by planting such bugs), loose enough for float32.
 */
#include "tests/test.h"

#include "core/layers.h"
#include "core/parallel.h"
#include "core/rng.h"

/* ---- buffers: every test allocates through fbuf and frees everything at the end with bufs_free ---- */

#define MAX_BUFS 256
static void *bufs[MAX_BUFS];
static int n_bufs;

static float *fbuf(size_t n)
{
    CHECK(n_bufs < MAX_BUFS);
    float *p = calloc(n ? n : 1, sizeof *p);
    CHECK(p != NULL);
    bufs[n_bufs++] = p;
    return p;
}

static float *frand(rng *r, size_t n, float scale)
{
    float *p = fbuf(n);
    for (size_t i = 0; i < n; i++) p[i] = scale * rng_normal(r);
    return p;
}

static float *fcopy(const float *a, size_t n)
{
    float *p = fbuf(n);
    memcpy(p, a, n * sizeof *p);
    return p;
}

static void bufs_free(void)
{
    for (int i = 0; i < n_bufs; i++) free(bufs[i]);
    n_bufs = 0;
}

static double dot_d(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

static double max_abs(const float *a, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fabs((double)a[i]) > m ? fabs((double)a[i]) : m;
    return m;
}

/* ---- central finite differences ------------------------------------------------------------------ */

typedef double (*loss_fn)(void *ctx);

/* Checks grad (n) against dL/dparam by central differences, perturbing param in place (restored after).
 * Passes when |num - grad| <= tol * (|grad| + max|grad|) for every element; also insists that the
 * gradient is not trivially zero so the comparison means something. */
static void check_fd(const char *file, int line, const char *what, float *param, const float *grad,
                     size_t n, float eps, double tol, loss_fn f, void *ctx)
{
    double gmax = max_abs(grad, n), worst = 0.0;
    if (!(gmax > 1e-3)) test_fail(file, line, "%s: analytic gradient is ~0 (max %.3g)", what, gmax);
    for (size_t i = 0; i < n; i++) {
        float v = param[i];
        float vp = v + eps, vm = v - eps;
        param[i] = vp;
        double lp = f(ctx);
        param[i] = vm;
        double lm = f(ctx);
        param[i] = v;
        double num = (lp - lm) / ((double)vp - (double)vm);
        double err = fabs(num - (double)grad[i]);
        double allowed = tol * (fabs((double)grad[i]) + gmax);
        if (!(err <= allowed))
            test_fail(file, line, "%s[%zu]: finite difference %.7g vs analytic %.7g (diff %.3g > %.3g)",
                      what, i, num, (double)grad[i], err, allowed);
        if (err / (fabs((double)grad[i]) + gmax) > worst) worst = err / (fabs((double)grad[i]) + gmax);
    }
    if (getenv("LAYERS_VERBOSE")) fprintf(stderr, "# %s: worst relative error %.3g\n", what, worst);
}
#define CHECK_FD(what, param, grad, n, eps, tol, f, ctx) \
    check_fd(__FILE__, __LINE__, what, param, grad, n, eps, tol, f, ctx)

/* Accumulation: starting from g0, two backward calls must give g0 + 2 g where g is one call from zero. */
static void check_accum(const char *file, int line, const char *what, const float *got, const float *g0,
                        const float *g, size_t n)
{
    double gmax = max_abs(g, n);
    for (size_t i = 0; i < n; i++) {
        double want = (double)g0[i] + 2.0 * (double)g[i];
        if (!(fabs((double)got[i] - want) <= 1e-5 * (gmax + fabs(want)) + 1e-6))
            test_fail(file, line, "%s[%zu]: after two backward calls %.9g, want g0 + 2g = %.9g", what, i,
                      (double)got[i], want);
    }
}
#define CHECK_ACCUM(what, got, g0, g, n) check_accum(__FILE__, __LINE__, what, got, g0, g, n)

static void check_bits_equal(const char *file, int line, const char *what, const float *a, const float *b,
                             size_t n)
{
    if (memcmp(a, b, n * sizeof *a) != 0) test_fail(file, line, "%s: not bit-identical", what);
}
#define CHECK_BITS(what, a, b, n) check_bits_equal(__FILE__, __LINE__, what, a, b, n)

/* ---- linear ---------------------------------------------------------------------------------------- */

typedef struct {
    float *y, *x, *W, *b, *R;
    int N, in, out;
} linear_ctx;

static double linear_loss(void *p)
{
    linear_ctx *c = p;
    linear_forward(c->y, c->x, c->W, c->b, c->N, c->in, c->out);
    return dot_d(c->y, c->R, (size_t)c->N * c->out);
}

static void linear_compare(rng *r, int N, int in, int out, int with_bias)
{
    size_t nx = (size_t)N * in, nw = (size_t)out * in, ny = (size_t)N * out;
    float *x = frand(r, nx, 1.0f), *W = frand(r, nw, 0.5f);
    float *b = with_bias ? frand(r, (size_t)out, 1.0f) : NULL;
    float *y1 = frand(r, ny, 9.0f), *y2 = frand(r, ny, 9.0f); /* garbage: forward must overwrite */
    linear_forward(y1, x, W, b, N, in, out);
    linear_forward_naive(y2, x, W, b, N, in, out);
    double tol = 1e-6 * in;
    CHECK_ARRAY_NEAR(y1, y2, ny, tol, 1e-5);

    float *dy = frand(r, ny, 1.0f);
    float *dx1 = frand(r, nx, 1.0f), *dW1 = frand(r, nw, 1.0f), *db1 = frand(r, (size_t)out, 1.0f);
    float *dx2 = fcopy(dx1, nx), *dW2 = fcopy(dW1, nw), *db2 = fcopy(db1, (size_t)out);
    linear_backward(dx1, dW1, db1, dy, x, W, N, in, out);
    linear_backward_naive(dx2, dW2, db2, dy, x, W, N, in, out);
    CHECK_ARRAY_NEAR(dx1, dx2, nx, 1e-6 * out, 1e-5);
    CHECK_ARRAY_NEAR(dW1, dW2, nw, 1e-6 * N, 1e-5);
    CHECK_ARRAY_NEAR(db1, db2, (size_t)out, 1e-6 * N, 1e-5);
}

TEST(layers_linear_matches_naive)
{
    rng r;
    rng_init(&r, 1);
    linear_compare(&r, 7, 13, 5, 1);
    linear_compare(&r, 7, 13, 5, 0);
    linear_compare(&r, 1, 1, 1, 1);
    linear_compare(&r, 5, 3, 11, 1);
    /* Big enough for OpenBLAS to block and pack, so a wrong leading dimension shows. */
    linear_compare(&r, 67, 300, 129, 1);
    bufs_free();
}

TEST(layers_linear_backward_fd)
{
    rng r;
    rng_init(&r, 2);
    int N = 7, in = 13, out = 5;
    size_t nx = (size_t)N * in, nw = (size_t)out * in, ny = (size_t)N * out;
    linear_ctx c = {fbuf(ny), frand(&r, nx, 1.0f), frand(&r, nw, 0.5f), frand(&r, (size_t)out, 1.0f),
                    frand(&r, ny, 1.0f), N, in, out};
    float *dx = fbuf(nx), *dW = fbuf(nw), *db = fbuf((size_t)out);
    linear_backward(dx, dW, db, c.R, c.x, c.W, N, in, out);
    CHECK_FD("linear dx", c.x, dx, nx, 1e-2f, 2e-3, linear_loss, &c);
    CHECK_FD("linear dW", c.W, dW, nw, 1e-2f, 2e-3, linear_loss, &c);
    CHECK_FD("linear db", c.b, db, (size_t)out, 1e-2f, 2e-3, linear_loss, &c);
    bufs_free();
}

TEST(layers_linear_backward_null_and_accumulates)
{
    rng r;
    rng_init(&r, 3);
    int N = 7, in = 13, out = 5;
    size_t nx = (size_t)N * in, nw = (size_t)out * in, ny = (size_t)N * out;
    float *x = frand(&r, nx, 1.0f), *W = frand(&r, nw, 1.0f), *dy = frand(&r, ny, 1.0f);
    float *dx = fbuf(nx), *dW = fbuf(nw), *db = fbuf((size_t)out);
    linear_backward(dx, dW, db, dy, x, W, N, in, out);

    /* Each gradient alone, the others NULL: same values, nothing else touched. */
    float *dx1 = fbuf(nx), *dW1 = fbuf(nw), *db1 = fbuf((size_t)out);
    linear_backward(dx1, NULL, NULL, dy, x, W, N, in, out);
    linear_backward(NULL, dW1, NULL, dy, x, W, N, in, out);
    linear_backward(NULL, NULL, db1, dy, x, W, N, in, out);
    CHECK_BITS("dx alone", dx1, dx, nx);
    CHECK_BITS("dW alone", dW1, dW, nw);
    CHECK_BITS("db alone", db1, db, (size_t)out);
    linear_backward(NULL, NULL, NULL, dy, x, W, N, in, out);

    float *gx0 = frand(&r, nx, 1.0f), *gW0 = frand(&r, nw, 1.0f), *gb0 = frand(&r, (size_t)out, 1.0f);
    float *gx = fcopy(gx0, nx), *gW = fcopy(gW0, nw), *gb = fcopy(gb0, (size_t)out);
    linear_backward(gx, gW, gb, dy, x, W, N, in, out);
    linear_backward(gx, gW, gb, dy, x, W, N, in, out);
    CHECK_ACCUM("linear dx", gx, gx0, dx, nx);
    CHECK_ACCUM("linear dW", gW, gW0, dW, nw);
    CHECK_ACCUM("linear db", gb, gb0, db, (size_t)out);

    /* The naive twin follows the same rules. */
    float *nx_ = fcopy(gx0, nx), *nW = fcopy(gW0, nw), *nb = fcopy(gb0, (size_t)out);
    linear_backward_naive(nx_, nW, nb, dy, x, W, N, in, out);
    linear_backward_naive(nx_, nW, nb, dy, x, W, N, in, out);
    linear_backward_naive(NULL, NULL, NULL, dy, x, W, N, in, out);
    CHECK_ACCUM("naive dx", nx_, gx0, dx, nx);
    CHECK_ACCUM("naive dW", nW, gW0, dW, nw);
    CHECK_ACCUM("naive db", nb, gb0, db, (size_t)out);
    bufs_free();
}

TEST(layers_linear_hand_checked)
{
    /* x = [1 2], W = [[1 0], [0 1], [3 -1]], b = [0.5 0 -1] -> y = [1.5 2 0] */
    float x[2] = {1, 2}, W[6] = {1, 0, 0, 1, 3, -1}, b[3] = {0.5f, 0, -1}, y[3];
    linear_forward(y, x, W, b, 1, 2, 3);
    float want[3] = {1.5f, 2, 0};
    CHECK_ARRAY_NEAR(y, want, 3, 0, 0);
    /* in == 0 is an empty product: y = b. */
    linear_forward(y, x, W, b, 1, 0, 3);
    CHECK_ARRAY_NEAR(y, b, 3, 0, 0);
}

/* ---- LoRA ------------------------------------------------------------------------------------------ */

typedef struct {
    float *y, *y0, *xa, *x, *A, *B, *R;
    float scale;
    int N, in, out, r;
} lora_ctx;

static double lora_loss(void *p)
{
    lora_ctx *c = p;
    size_t ny = (size_t)c->N * c->out;
    memcpy(c->y, c->y0, ny * sizeof *c->y);
    lora_forward(c->y, c->xa, c->x, c->A, c->B, c->scale, c->N, c->in, c->out, c->r);
    return dot_d(c->y, c->R, ny);
}

static void lora_compare(rng *g, int N, int in, int out, int r)
{
    size_t nx = (size_t)N * in, na = (size_t)r * in, nb = (size_t)out * r, ny = (size_t)N * out;
    size_t nxa = (size_t)N * r;
    float scale = r ? 2.0f / (float)r : 1.0f;
    float *x = frand(g, nx, 1.0f), *A = frand(g, na, 0.5f), *B = frand(g, nb, 0.5f);
    float *y1 = frand(g, ny, 1.0f), *y2 = fcopy(y1, ny), *y0 = fcopy(y1, ny);
    float *xa1 = fbuf(nxa), *xa2 = fbuf(nxa);
    lora_forward(y1, xa1, x, A, B, scale, N, in, out, r);
    lora_forward_naive(y2, xa2, x, A, B, scale, N, in, out, r);
    CHECK_ARRAY_NEAR(xa1, xa2, nxa, 1e-6 * in, 1e-5);
    CHECK_ARRAY_NEAR(y1, y2, ny, 1e-5 * in, 1e-5);
    if (r == 0) CHECK_BITS("r == 0 leaves y alone", y1, y0, ny);

    float *dy = frand(g, ny, 1.0f);
    float *dx1 = frand(g, nx, 1.0f), *dA1 = frand(g, na, 1.0f), *dB1 = frand(g, nb, 1.0f);
    float *dx2 = fcopy(dx1, nx), *dA2 = fcopy(dA1, na), *dB2 = fcopy(dB1, nb), *dx0 = fcopy(dx1, nx);
    float *s1 = fbuf(nxa), *s2 = fbuf(nxa);
    lora_backward(dx1, dA1, dB1, s1, dy, x, xa1, A, B, scale, N, in, out, r);
    lora_backward_naive(dx2, dA2, dB2, s2, dy, x, xa1, A, B, scale, N, in, out, r);
    CHECK_ARRAY_NEAR(dx1, dx2, nx, 1e-5 * (out + r), 1e-5);
    CHECK_ARRAY_NEAR(dA1, dA2, na, 1e-5 * (out + N), 1e-5);
    CHECK_ARRAY_NEAR(dB1, dB2, nb, 1e-5 * in * N, 1e-5);
    CHECK_ARRAY_NEAR(s1, s2, nxa, 1e-5 * out, 1e-5);
    if (r == 0) CHECK_BITS("r == 0 leaves dx alone", dx1, dx0, nx);
}

TEST(layers_lora_matches_naive)
{
    rng g;
    rng_init(&g, 4);
    lora_compare(&g, 7, 13, 5, 1);
    lora_compare(&g, 7, 13, 5, 3);
    lora_compare(&g, 7, 13, 5, 0);
    lora_compare(&g, 3, 5, 17, 2);
    lora_compare(&g, 67, 300, 129, 8);
    bufs_free();
}

static void lora_fd(int r)
{
    rng g;
    rng_init(&g, 5 + (uint64_t)r);
    int N = 7, in = 13, out = 5;
    size_t nx = (size_t)N * in, na = (size_t)r * in, nb = (size_t)out * r, ny = (size_t)N * out;
    lora_ctx c = {fbuf(ny), frand(&g, ny, 1.0f), fbuf((size_t)N * r), frand(&g, nx, 1.0f),
                  frand(&g, na, 0.5f), frand(&g, nb, 0.5f), frand(&g, ny, 1.0f), 4.0f / (float)r,
                  N, in, out, r};
    (void)lora_loss(&c); /* fills xa */
    float *dx = fbuf(nx), *dA = fbuf(na), *dB = fbuf(nb), *scratch = fbuf((size_t)N * r);
    lora_backward(dx, dA, dB, scratch, c.R, c.x, c.xa, c.A, c.B, c.scale, N, in, out, r);
    CHECK_FD("lora dx", c.x, dx, nx, 1e-2f, 2e-3, lora_loss, &c);
    CHECK_FD("lora dA", c.A, dA, na, 1e-2f, 2e-3, lora_loss, &c);
    CHECK_FD("lora dB", c.B, dB, nb, 1e-2f, 2e-3, lora_loss, &c);
}

TEST(layers_lora_backward_fd)
{
    lora_fd(1);
    lora_fd(3);
    bufs_free();
}

TEST(layers_lora_backward_null_and_accumulates)
{
    rng g;
    rng_init(&g, 6);
    int N = 7, in = 13, out = 5, r = 3;
    size_t nx = (size_t)N * in, na = (size_t)r * in, nb = (size_t)out * r, ny = (size_t)N * out;
    size_t nxa = (size_t)N * r;
    float scale = 0.5f;
    float *x = frand(&g, nx, 1.0f), *A = frand(&g, na, 1.0f), *B = frand(&g, nb, 1.0f);
    float *y = fbuf(ny), *xa = fbuf(nxa), *dy = frand(&g, ny, 1.0f), *s = fbuf(nxa);
    lora_forward(y, xa, x, A, B, scale, N, in, out, r);
    float *dx = fbuf(nx), *dA = fbuf(na), *dB = fbuf(nb);
    lora_backward(dx, dA, dB, s, dy, x, xa, A, B, scale, N, in, out, r);

    float *dx1 = fbuf(nx), *dA1 = fbuf(na), *dB1 = fbuf(nb);
    lora_backward(dx1, NULL, NULL, s, dy, x, xa, A, B, scale, N, in, out, r);
    lora_backward(NULL, dA1, NULL, s, dy, x, xa, A, B, scale, N, in, out, r);
    /* Only dB wanted: the g = scale dy B product is not needed, so scratch may be NULL. */
    lora_backward(NULL, NULL, dB1, NULL, dy, x, xa, A, B, scale, N, in, out, r);
    CHECK_BITS("dx alone", dx1, dx, nx);
    CHECK_BITS("dA alone", dA1, dA, na);
    CHECK_BITS("dB alone", dB1, dB, nb);
    /* LoRA-FA style: A frozen, only dB and dx. */
    float *dx2 = fbuf(nx), *dB2 = fbuf(nb);
    lora_backward(dx2, NULL, dB2, s, dy, x, xa, A, B, scale, N, in, out, r);
    CHECK_BITS("dx with frozen A", dx2, dx, nx);
    CHECK_BITS("dB with frozen A", dB2, dB, nb);

    float *gx0 = frand(&g, nx, 1.0f), *gA0 = frand(&g, na, 1.0f), *gB0 = frand(&g, nb, 1.0f);
    float *gx = fcopy(gx0, nx), *gA = fcopy(gA0, na), *gB = fcopy(gB0, nb);
    lora_backward(gx, gA, gB, s, dy, x, xa, A, B, scale, N, in, out, r);
    lora_backward(gx, gA, gB, s, dy, x, xa, A, B, scale, N, in, out, r);
    CHECK_ACCUM("lora dx", gx, gx0, dx, nx);
    CHECK_ACCUM("lora dA", gA, gA0, dA, na);
    CHECK_ACCUM("lora dB", gB, gB0, dB, nb);

    float *nx_ = fcopy(gx0, nx), *nA = fcopy(gA0, na), *nB = fcopy(gB0, nb);
    lora_backward_naive(nx_, nA, nB, s, dy, x, xa, A, B, scale, N, in, out, r);
    lora_backward_naive(nx_, nA, nB, s, dy, x, xa, A, B, scale, N, in, out, r);
    CHECK_ACCUM("naive dx", nx_, gx0, dx, nx);
    CHECK_ACCUM("naive dA", nA, gA0, dA, na);
    CHECK_ACCUM("naive dB", nB, gB0, dB, nb);
    bufs_free();
}

TEST(layers_lora_zero_B_is_identity)
{
    /* The standard LoRA init (B = 0) must leave the base output exactly unchanged. */
    rng g;
    rng_init(&g, 7);
    int N = 4, in = 6, out = 5, r = 2;
    float *x = frand(&g, (size_t)N * in, 1.0f), *A = frand(&g, (size_t)r * in, 1.0f);
    float *B = fbuf((size_t)out * r), *y = frand(&g, (size_t)N * out, 1.0f);
    float *y0 = fcopy(y, (size_t)N * out), *xa = fbuf((size_t)N * r);
    lora_forward(y, xa, x, A, B, 8.0f, N, in, out, r);
    CHECK_BITS("y with B = 0", y, y0, (size_t)N * out);
    bufs_free();
}

/* ---- LayerNorm ------------------------------------------------------------------------------------- */

typedef struct {
    float *out, *mean, *rstd, *x, *w, *b, *R;
    int N, C;
} ln_ctx;

static double ln_loss(void *p)
{
    ln_ctx *c = p;
    layernorm_forward(c->out, c->mean, c->rstd, c->x, c->w, c->b, c->N, c->C);
    return dot_d(c->out, c->R, (size_t)c->N * c->C);
}

/* A row's mean and biased variance in double, two passes: LayerNorm's reference. */
static void row_stats(const float *xi, int C, double *mean, double *var)
{
    double m = 0, v = 0;
    for (int j = 0; j < C; j++) m += (double)xi[j];
    m /= C;
    for (int j = 0; j < C; j++) v += ((double)xi[j] - m) * ((double)xi[j] - m);
    *mean = m;
    *var = v / C;
}

TEST(layers_layernorm_forward)
{
    rng g;
    rng_init(&g, 8);
    int N = 5, C = 11;
    size_t n = (size_t)N * C;
    /* Rows with a large offset and small spread: a one-pass variance would lose most digits here. */
    float *x = fbuf(n);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < C; j++) x[(size_t)i * C + j] = 1000.0f * (float)i + 0.25f * rng_normal(&g);
    float *w = frand(&g, (size_t)C, 1.0f), *b = frand(&g, (size_t)C, 1.0f);
    float *out = fbuf(n), *mean = fbuf((size_t)N), *rstd = fbuf((size_t)N), *want = fbuf(n);
    layernorm_forward(out, mean, rstd, x, w, b, N, C);
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        double m, v;
        row_stats(xi, C, &m, &v);
        double rs = 1.0 / sqrt(v + 1e-5);
        CHECK_NEAR(mean[i], m, 1e-6 * fabs(m) + 1e-7);
        CHECK_NEAR(rstd[i], rs, 1e-5 * rs);
        for (int j = 0; j < C; j++)
            want[(size_t)i * C + j] = (float)(((double)xi[j] - m) * rs * (double)w[j] + (double)b[j]);
    }
    /* Float rounding of x itself (ulp of 4000 is 2.4e-4) dominates for the offset rows. */
    CHECK_ARRAY_NEAR(out, want, n, 2e-3, 1e-3);

    /* w = 1, b = 0: each row has mean 0 and (biased) variance 1 - eps-ish. */
    for (int j = 0; j < C; j++) { w[j] = 1.0f; b[j] = 0.0f; }
    float *x2 = frand(&g, n, 3.0f);
    layernorm_forward(out, mean, rstd, x2, w, b, N, C);
    for (int i = 0; i < N; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < C; j++) m += (double)out[(size_t)i * C + j];
        for (int j = 0; j < C; j++) v += (double)out[(size_t)i * C + j] * (double)out[(size_t)i * C + j];
        CHECK_NEAR(m / C, 0.0, 1e-6);
        CHECK_NEAR(v / C, 1.0, 1e-4);
    }
    /* A constant row normalises to b without dividing by zero. */
    for (int j = 0; j < C; j++) x2[j] = 3.0f;
    layernorm_forward(out, mean, rstd, x2, w, b, 1, C);
    for (int j = 0; j < C; j++) CHECK_NEAR(out[j], 0.0, 1e-6);
    CHECK_NEAR(rstd[0], 1.0 / sqrt(1e-5), 1.0);
    bufs_free();
}

TEST(layers_layernorm_backward_fd)
{
    rng g;
    rng_init(&g, 9);
    int N = 5, C = 11;
    size_t n = (size_t)N * C;
    ln_ctx c = {fbuf(n), fbuf((size_t)N), fbuf((size_t)N), frand(&g, n, 1.0f), frand(&g, (size_t)C, 1.0f),
                frand(&g, (size_t)C, 1.0f), frand(&g, n, 1.0f), N, C};
    for (size_t i = 0; i < n; i++) c.x[i] += 0.5f; /* nonzero mean, so the mean term matters */
    (void)ln_loss(&c);
    float *dx = fbuf(n), *dw = fbuf((size_t)C), *db = fbuf((size_t)C);
    layernorm_backward(dx, dw, db, c.R, c.x, c.w, c.mean, c.rstd, N, C);
    CHECK_FD("layernorm dx", c.x, dx, n, 1e-3f, 2e-3, ln_loss, &c);
    CHECK_FD("layernorm dgamma", c.w, dw, (size_t)C, 1e-2f, 2e-3, ln_loss, &c);
    CHECK_FD("layernorm dbeta", c.b, db, (size_t)C, 1e-2f, 2e-3, ln_loss, &c);

    /* Frozen gamma/beta (NULL) leave dx unchanged; dx NULL computes only dw/db. */
    float *dx1 = fbuf(n), *dw1 = fbuf((size_t)C), *db1 = fbuf((size_t)C);
    layernorm_backward(dx1, NULL, NULL, c.R, c.x, c.w, c.mean, c.rstd, N, C);
    layernorm_backward(NULL, dw1, db1, c.R, c.x, c.w, c.mean, c.rstd, N, C);
    CHECK_BITS("dx with frozen w, b", dx1, dx, n);
    CHECK_BITS("dw alone", dw1, dw, (size_t)C);
    CHECK_BITS("db alone", db1, db, (size_t)C);

    float *gx0 = frand(&g, n, 1.0f), *gw0 = frand(&g, (size_t)C, 1.0f), *gb0 = frand(&g, (size_t)C, 1.0f);
    float *gx = fcopy(gx0, n), *gw = fcopy(gw0, (size_t)C), *gb = fcopy(gb0, (size_t)C);
    layernorm_backward(gx, gw, gb, c.R, c.x, c.w, c.mean, c.rstd, N, C);
    layernorm_backward(gx, gw, gb, c.R, c.x, c.w, c.mean, c.rstd, N, C);
    CHECK_ACCUM("layernorm dx", gx, gx0, dx, n);
    CHECK_ACCUM("layernorm dw", gw, gw0, dw, (size_t)C);
    CHECK_ACCUM("layernorm db", gb, gb0, db, (size_t)C);
    bufs_free();
}

/* ---- GELU and residual ----------------------------------------------------------------------------- */

typedef struct {
    float *out, *x, *R;
    size_t n;
} gelu_ctx;

static double gelu_loss(void *p)
{
    gelu_ctx *c = p;
    gelu_forward(c->out, c->x, c->n);
    return dot_d(c->out, c->R, c->n);
}

/* x = -10, -9.99, ..., the grid the GELU kernels are checked on, and a buffer of ones. */
static float *gelu_grid(int G)
{
    float *xs = fbuf((size_t)G);
    for (int i = 0; i < G; i++) xs[i] = -10.0f + 0.01f * (float)i;
    return xs;
}

static float *fones(int n)
{
    float *p = fbuf((size_t)n);
    for (int i = 0; i < n; i++) p[i] = 1.0f;
    return p;
}

TEST(layers_gelu_values)
{
    /* Reference values of 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed in double. */
    float x[9] = {-6.0f, -3.0f, -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 3.0f, 6.0f}, y[9];
    gelu_forward(y, x, 9);
    for (int i = 0; i < 9; i++) {
        double v = x[i];
        double want = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
        CHECK_NEAR(y[i], want, 1e-6 * (1.0 + fabs(want)));
    }
    /* Published values of the tanh approximation (differs from the erf GELU in the 4th digit). */
    CHECK_NEAR(y[6], 0.841192, 1e-6);
    CHECK_NEAR(y[2], -0.158808, 1e-6);
    CHECK(y[4] == 0.0f);

    /* A dense grid against the literal tanh formula and its derivative, in double. */
    enum { G = 2001 };
    float *xs = gelu_grid(G), *ys = fbuf(G), *dx = fbuf(G), *ones = fones(G);
    gelu_forward(ys, xs, G);
    gelu_backward(dx, xs, ones, G);
    double s = sqrt(2.0 / M_PI);
    for (int i = 0; i < G; i++) {
        double v = xs[i], u = s * (v + 0.044715 * v * v * v), t = tanh(u);
        double want = 0.5 * v * (1.0 + t);
        double dwant = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * s * (1.0 + 3.0 * 0.044715 * v * v);
        CHECK_NEAR(ys[i], want, 1e-6 * fabs(want) + 1e-7);
        CHECK_NEAR(dx[i], dwant, 1e-6 * fabs(dwant) + 1e-7);
    }
    /* Far tails: x for large x, -0 for very negative x, never NaN (x^3 overflows to inf there); a NaN
     * input is not hidden. */
    float big[4] = {50.0f, -50.0f, 1e30f, -1e30f}, yb[4], db[4] = {0, 0, 0, 0}, ob[4] = {1, 1, 1, 1};
    gelu_forward(yb, big, 4);
    gelu_backward(db, big, ob, 4);
    CHECK(yb[0] == 50.0f && yb[1] == 0.0f && yb[2] == 1e30f && yb[3] == 0.0f);
    CHECK(db[0] == 1.0f && db[2] == 1.0f);
    CHECK(fabs((double)db[1]) < 1e-30 && fabs((double)db[3]) < 1e-30);
    float nan_in = NAN, nan_out = 0.0f;
    gelu_backward(&nan_out, &nan_in, ob, 1);
    CHECK(isnan(nan_out));
    bufs_free();
}

/* Finite differences and accumulation for a GELU backward kernel against its forward's loss. */
static void check_gelu_backward(const char *what, void (*backward)(float *, const float *, const float *, size_t),
                                double (*loss)(void *), uint64_t seed)
{
    rng g;
    rng_init(&g, seed);
    size_t n = 64;
    gelu_ctx c = {fbuf(n), frand(&g, n, 2.0f), frand(&g, n, 1.0f), n};
    float *dx = fbuf(n);
    backward(dx, c.x, c.R, n);
    CHECK_FD(what, c.x, dx, n, 1e-3f, 2e-3, loss, &c);
    float *g0 = frand(&g, n, 1.0f), *gx = fcopy(g0, n);
    backward(gx, c.x, c.R, n);
    backward(gx, c.x, c.R, n);
    CHECK_ACCUM(what, gx, g0, dx, n);
    bufs_free();
}

TEST(layers_gelu_backward_fd) { check_gelu_backward("gelu dx", gelu_backward, gelu_loss, 10); }

typedef struct {
    float *out, *a, *b, *R;
    size_t n;
} res_ctx;

static double res_loss(void *p)
{
    res_ctx *c = p;
    residual_forward(c->out, c->a, c->b, c->n);
    return dot_d(c->out, c->R, c->n);
}

TEST(layers_residual_fd_null_and_accumulates)
{
    rng g;
    rng_init(&g, 11);
    size_t n = 37;
    res_ctx c = {fbuf(n), frand(&g, n, 1.0f), frand(&g, n, 1.0f), frand(&g, n, 1.0f), n};
    (void)res_loss(&c);
    for (size_t i = 0; i < n; i++) CHECK(c.out[i] == c.a[i] + c.b[i]);
    float *da = fbuf(n), *db = fbuf(n);
    residual_backward(da, db, c.R, n);
    CHECK_FD("residual da", c.a, da, n, 1e-2f, 2e-3, res_loss, &c);
    CHECK_FD("residual db", c.b, db, n, 1e-2f, 2e-3, res_loss, &c);
    float *a0 = frand(&g, n, 1.0f), *ga = fcopy(a0, n), *b0 = frand(&g, n, 1.0f), *gb = fcopy(b0, n);
    residual_backward(ga, gb, c.R, n);
    residual_backward(ga, gb, c.R, n);
    CHECK_ACCUM("residual da", ga, a0, da, n);
    CHECK_ACCUM("residual db", gb, b0, db, n);
    float *only = fbuf(n);
    residual_backward(NULL, only, c.R, n);
    residual_backward(only, NULL, c.R, n);
    residual_backward(NULL, NULL, c.R, n);
    CHECK_ACCUM("residual NULL halves", only, fbuf(n), c.R, n);
    bufs_free();
}

/* ---- softmax --------------------------------------------------------------------------------------- */

TEST(layers_softmax_matches_double)
{
    rng g;
    rng_init(&g, 19);
    /* Every row length 1..50 (the kernel works sixteen lanes at a time: short rows padded, ragged tails
     * overlapping the last full vector), in and out of place, against softmax in double. */
    for (int K = 1; K <= 50; K++) {
        int N = 9;
        size_t n = (size_t)N * K;
        float *x = frand(&g, n, 6.0f), *y = fbuf(n), *inplace = fcopy(x, n);
        softmax_forward(y, x, N, K);
        softmax_forward(inplace, inplace, N, K);
        CHECK_BITS("in place", inplace, y, n);
        for (int r = 0; r < N; r++) {
            const float *xr = x + (size_t)r * K;
            double mx = xr[0], s = 0, ps = 0;
            for (int k = 1; k < K; k++) mx = fmax(mx, (double)xr[k]);
            for (int k = 0; k < K; k++) s += exp((double)xr[k] - mx);
            for (int k = 0; k < K; k++) {
                double want = exp((double)xr[k] - mx) / s;
                /* x - max is rounded in float: relative error up to |x - max| * 2^-24 before exp. */
                double gap = mx - (double)xr[k];
                CHECK_NEAR(y[(size_t)r * K + k], want, (1e-6 + 1.2e-7 * gap) * want + 1e-30);
                ps += (double)y[(size_t)r * K + k];
            }
            CHECK_NEAR(ps, 1.0, 1e-6);
        }
    }
    bufs_free();
}

TEST(layers_softmax_extremes)
{
    /* Logits ~1e4 (exp would overflow without the max subtraction), a gap of 100 whose probability is
     * below FLT_MIN (flushed to 0), -inf entries (masked), and a row where everything ties. */
    float x[3 * 5] = {1e4f, 1e4f - 1.0f, 1e4f - 100.0f, -1e4f, 1e4f - 2.0f,
                      0.0f, -INFINITY, 3.0f, -INFINITY, 3.0f,
                      7.0f, 7.0f, 7.0f, 7.0f, 7.0f};
    float y[15];
    softmax_forward(y, x, 3, 5);
    for (int i = 0; i < 15; i++) CHECK(isfinite(y[i]) && y[i] >= 0.0f);
    double z = 1.0 + exp(-1.0) + exp(-2.0);
    CHECK_NEAR(y[0], 1.0 / z, 1e-7);
    CHECK_NEAR(y[1], exp(-1.0) / z, 1e-7);
    CHECK(y[2] == 0.0f && y[3] == 0.0f);
    CHECK_NEAR(y[4], exp(-2.0) / z, 1e-7);
    CHECK(y[6] == 0.0f && y[8] == 0.0f);
    CHECK_NEAR(y[7], 1.0 / (2.0 + exp(-3.0)), 1e-7);
    for (int i = 10; i < 15; i++) CHECK_NEAR(y[i], 0.2, 1e-7);
    /* A NaN in a row is not hidden. */
    float xn[4] = {0.0f, NAN, 1.0f, 2.0f}, yn[4];
    softmax_forward(yn, xn, 1, 4);
    CHECK(isnan(yn[1]));
}

/* ---- attention ------------------------------------------------------------------------------------- */

typedef struct {
    float *out, *att, *qkv, *R;
    int B, T, C, NH;
} att_ctx;

static double att_loss(void *p)
{
    att_ctx *c = p;
    attention_forward(c->out, c->att, c->qkv, c->B, c->T, c->C, c->NH);
    return dot_d(c->out, c->R, (size_t)c->B * c->T * c->C);
}

static void attention_compare(rng *g, int B, int T, int C, int NH)
{
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
    float *qkv = frand(g, nq, 1.0f);
    float *o1 = frand(g, no, 9.0f), *o2 = frand(g, no, 9.0f), *a1 = fbuf(na), *a2 = fbuf(na);
    attention_forward(o1, a1, qkv, B, T, C, NH);
    attention_forward_naive(o2, a2, qkv, B, T, C, NH);
    CHECK_ARRAY_NEAR(a1, a2, na, 1e-6, 1e-5);
    CHECK_ARRAY_NEAR(o1, o2, no, 1e-5, 1e-5);
    for (size_t row = 0; row < (size_t)B * NH * T; row++) {
        double s = 0;
        for (int j = 0; j < T; j++) {
            CHECK(a1[row * T + j] >= 0.0f);
            s += (double)a1[row * T + j];
        }
        CHECK_NEAR(s, 1.0, 1e-6);
    }
    float *dout = frand(g, no, 1.0f), *d1 = frand(g, nq, 1.0f), *d2 = fcopy(d1, nq);
    float *s1 = fbuf((size_t)T * T), *s2 = fbuf((size_t)T * T);
    attention_backward(d1, s1, dout, qkv, a1, B, T, C, NH);
    attention_backward_naive(d2, s2, dout, qkv, a1, B, T, C, NH);
    CHECK_ARRAY_NEAR(d1, d2, nq, 1e-5, 1e-4);
}

TEST(layers_attention_matches_naive)
{
    rng g;
    rng_init(&g, 12);
    attention_compare(&g, 2, 5, 12, 3);
    attention_compare(&g, 1, 17, 16, 2);
    attention_compare(&g, 3, 1, 6, 6); /* one token: att = 1, out = v */
    attention_compare(&g, 2, 50, 64, 4);
    bufs_free();
}

/* Gradients against finite differences, accumulation, and every part of dqkv nonzero. */
static void attention_fd_check(int B, int T, int C, int NH)
{
    rng g;
    rng_init(&g, 13);
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
    att_ctx c = {fbuf(no), fbuf(na), frand(&g, nq, 1.0f), frand(&g, no, 1.0f), B, T, C, NH};
    (void)att_loss(&c);
    float *dqkv = fbuf(nq), *scratch = fbuf((size_t)T * T);
    attention_backward(dqkv, scratch, c.R, c.qkv, c.att, B, T, C, NH);
    CHECK_FD("attention dqkv", c.qkv, dqkv, nq, 1e-3f, 2e-3, att_loss, &c);
    /* Each of the q, k and v parts carries gradient (a dropped term would show as zeros). */
    for (int part = 0; part < 3; part++) {
        double m = 0;
        for (int t = 0; t < B * T; t++)
            for (int j = 0; j < C; j++) m = fmax(m, fabs((double)dqkv[(size_t)t * 3 * C + part * C + j]));
        CHECK_MSG(m > 1e-2, "part %d of dqkv is ~0 (max %.3g)", part, m);
    }
    float *g0 = frand(&g, nq, 1.0f), *gq = fcopy(g0, nq);
    attention_backward(gq, scratch, c.R, c.qkv, c.att, B, T, C, NH);
    attention_backward(gq, scratch, c.R, c.qkv, c.att, B, T, C, NH);
    CHECK_ACCUM("attention dqkv", gq, g0, dqkv, nq);
    bufs_free();
}

TEST(layers_attention_backward_fd)
{
    attention_fd_check(2, 5, 12, 3);   /* head size 4: one sgemm per product */
    attention_fd_check(2, 7, 32, 2);   /* head size 16: the 16-lane tile products */
}

TEST(layers_attention_large_scores_stable)
{
    /* Scores of order 1e4: without subtracting the row max, expf overflows to inf and att to NaN. */
    rng g;
    rng_init(&g, 14);
    int B = 1, T = 6, C = 8, NH = 2;
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
    float *qkv = frand(&g, nq, 100.0f), *out = fbuf(no), *att = fbuf(na), *want = fbuf(na), *o2 = fbuf(no);
    attention_forward(out, att, qkv, B, T, C, NH);
    attention_forward_naive(o2, want, qkv, B, T, C, NH);
    for (size_t i = 0; i < na; i++) CHECK(isfinite(att[i]));
    for (size_t i = 0; i < no; i++) CHECK(isfinite(out[i]));
    CHECK_ARRAY_NEAR(att, want, na, 1e-5, 1e-4);
    CHECK_ARRAY_NEAR(out, o2, no, 1e-2, 1e-4);
    bufs_free();
}

TEST(layers_attention_hand_checked)
{
    /* T = 2, one head of size 1: q = (1, 0), k = (0, ln 3 ... ) chosen so the softmax is easy. With
     * hs = 1 the scale is 1, token 0 scores (q0 k0, q0 k1) = (0, ln 3) -> att (1/4, 3/4). */
    float L3 = logf(3.0f);
    /* per token [q | k | v], C = 1 */
    float qkv[6] = {1.0f, 0.0f, 10.0f, /* token 0 */ 0.0f, L3, 20.0f /* token 1 */};
    float out[2], att[4];
    attention_forward(out, att, qkv, 1, 2, 1, 1);
    CHECK_NEAR(att[0], 0.25, 1e-6);
    CHECK_NEAR(att[1], 0.75, 1e-6);
    CHECK_NEAR(att[2], 0.5, 1e-6); /* q1 = 0: uniform */
    CHECK_NEAR(att[3], 0.5, 1e-6);
    CHECK_NEAR(out[0], 0.25 * 10 + 0.75 * 20, 1e-5);
    CHECK_NEAR(out[1], 15.0, 1e-5);
}

/* ---- patches and tokens ---------------------------------------------------------------------------- */

TEST(layers_patchify_hand_checked)
{
    /* 1x4x4 image with values 0..15, 2x2 patches: patch 0 is the top-left block {0,1,4,5}, patch 1 the
     * top-right {2,3,6,7}, then the bottom row of patches. */
    float img[16], p[16];
    for (int i = 0; i < 16; i++) img[i] = (float)i;
    patchify_forward(p, img, 1, 1, 4, 4, 2, 2);
    float want[16] = {0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15};
    CHECK_ARRAY_NEAR(p, want, 16, 0, 0);

    /* 2 channels, 2x4 image, 2x2 patches: each patch vector is channel 0's block then channel 1's,
     * i.e. (c, y, x). Channel c pixel (y, x) has value 100 c + 10 y + x. */
    float img2[16], p2[16];
    for (int c = 0; c < 2; c++)
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 4; x++) img2[c * 8 + y * 4 + x] = (float)(100 * c + 10 * y + x);
    patchify_forward(p2, img2, 1, 2, 2, 4, 2, 2);
    float want2[16] = {0, 1, 10, 11, 100, 101, 110, 111, /* patch (0,0) */
                       2, 3, 12, 13, 102, 103, 112, 113 /* patch (0,1) */};
    CHECK_ARRAY_NEAR(p2, want2, 16, 0, 0);

    /* Batch of 2, 3 channels, non-square image and patches, against the index formula. */
    int B = 2, Cin = 3, H = 6, W = 4, ph = 3, pw = 2, gy = H / ph, gx = W / pw, pd = Cin * ph * pw;
    float im[2 * 3 * 6 * 4], pp[2 * 3 * 6 * 4];
    for (int i = 0; i < B * Cin * H * W; i++) im[i] = (float)i;
    patchify_forward(pp, im, B, Cin, H, W, ph, pw);
    for (int b = 0; b < B; b++)
        for (int py = 0; py < gy; py++)
            for (int px = 0; px < gx; px++)
                for (int c = 0; c < Cin; c++)
                    for (int y = 0; y < ph; y++)
                        for (int x = 0; x < pw; x++) {
                            float got = pp[((b * gy + py) * gx + px) * pd + (c * ph + y) * pw + x];
                            float exp_ = im[((b * Cin + c) * H + py * ph + y) * W + px * pw + x];
                            CHECK(got == exp_);
                        }
}

typedef struct {
    float *tokens, *emb, *cls, *pos, *R;
    int B, P, C;
} tok_ctx;

static double tok_loss(void *p)
{
    tok_ctx *c = p;
    tokens_forward(c->tokens, c->emb, c->cls, c->pos, c->B, c->P, c->C);
    return dot_d(c->tokens, c->R, (size_t)c->B * (c->P + 1) * c->C);
}

TEST(layers_tokens_forward_backward)
{
    /* Hand-checked: B = 1, P = 2, C = 2. */
    float emb[4] = {1, 2, 3, 4}, cls[2] = {10, 20}, pos[6] = {0.5f, 0.25f, 100, 200, 1000, 2000}, tk[6];
    tokens_forward(tk, emb, cls, pos, 1, 2, 2);
    float want[6] = {10.5f, 20.25f, 101, 202, 1003, 2004};
    CHECK_ARRAY_NEAR(tk, want, 6, 0, 0);

    rng g;
    rng_init(&g, 15);
    int B = 3, P = 4, C = 5, T = P + 1;
    size_t ne = (size_t)B * P * C, nt = (size_t)B * T * C;
    tok_ctx c = {fbuf(nt), frand(&g, ne, 1.0f), frand(&g, (size_t)C, 1.0f), frand(&g, (size_t)T * C, 1.0f),
                 frand(&g, nt, 1.0f), B, P, C};
    float *demb = fbuf(ne), *dcls = fbuf((size_t)C), *dpos = fbuf((size_t)T * C);
    tokens_backward(demb, dcls, dpos, c.R, B, P, C);
    CHECK_FD("tokens demb", c.emb, demb, ne, 1e-2f, 2e-3, tok_loss, &c);
    CHECK_FD("tokens dcls", c.cls, dcls, (size_t)C, 1e-2f, 2e-3, tok_loss, &c);
    CHECK_FD("tokens dpos", c.pos, dpos, (size_t)T * C, 1e-2f, 2e-3, tok_loss, &c);

    float *demb1 = fbuf(ne), *dcls1 = fbuf((size_t)C), *dpos1 = fbuf((size_t)T * C);
    tokens_backward(demb1, NULL, NULL, c.R, B, P, C);
    tokens_backward(NULL, dcls1, NULL, c.R, B, P, C);
    tokens_backward(NULL, NULL, dpos1, c.R, B, P, C);
    CHECK_BITS("demb alone", demb1, demb, ne);
    CHECK_BITS("dcls alone", dcls1, dcls, (size_t)C);
    CHECK_BITS("dpos alone", dpos1, dpos, (size_t)T * C);

    float *e0 = frand(&g, ne, 1.0f), *c0 = frand(&g, (size_t)C, 1.0f), *p0 = frand(&g, (size_t)T * C, 1.0f);
    float *ge = fcopy(e0, ne), *gc = fcopy(c0, (size_t)C), *gp = fcopy(p0, (size_t)T * C);
    tokens_backward(ge, gc, gp, c.R, B, P, C);
    tokens_backward(ge, gc, gp, c.R, B, P, C);
    CHECK_ACCUM("tokens demb", ge, e0, demb, ne);
    CHECK_ACCUM("tokens dcls", gc, c0, dcls, (size_t)C);
    CHECK_ACCUM("tokens dpos", gp, p0, dpos, (size_t)T * C);
    bufs_free();
}

/* ---- cross-entropy --------------------------------------------------------------------------------- */

/* -log softmax(z)_t in double, by log-sum-exp around the max. */
static double ce_naive(const float *z, int K, int t)
{
    double mx = z[0];
    for (int k = 1; k < K; k++) mx = fmax(mx, (double)z[k]);
    double s = 0;
    for (int k = 0; k < K; k++) s += exp((double)z[k] - mx);
    return log(s) + mx - (double)z[t];
}

TEST(layers_crossentropy_forward)
{
    rng g;
    rng_init(&g, 16);
    int N = 6, K = 7;
    float *z = frand(&g, (size_t)N * K, 2.0f), *probs = fbuf((size_t)N * K), *losses = fbuf((size_t)N);
    int t[6];
    for (int n = 0; n < N; n++) t[n] = (int)rng_below(&g, (uint32_t)K);
    float mean = crossentropy_forward(probs, losses, z, t, N, K);
    double sum = 0;
    for (int n = 0; n < N; n++) {
        double want = ce_naive(z + (size_t)n * K, K, t[n]);
        CHECK_NEAR(losses[n], want, 1e-6 * (1 + want));
        CHECK_NEAR(losses[n], -log((double)probs[(size_t)n * K + t[n]]), 1e-5);
        double ps = 0;
        for (int k = 0; k < K; k++) ps += (double)probs[(size_t)n * K + k];
        CHECK_NEAR(ps, 1.0, 1e-6);
        sum += want;
    }
    CHECK_NEAR(mean, sum / N, 1e-6);

    /* Uniform logits: loss is log K. */
    float zu[3] = {5, 5, 5}, pu[3], lu;
    int tu = 1;
    crossentropy_forward(pu, &lu, zu, &tu, 1, 3);
    CHECK_NEAR(lu, log(3.0), 1e-6);
    CHECK_NEAR(pu[0], 1.0 / 3, 1e-7);
    bufs_free();
}

TEST(layers_crossentropy_large_logits_stable)
{
    /* Logits ~1e4: exp overflows without the max subtraction; and a target whose probability underflows
     * to 0 in float must still give its true finite loss (not inf). */
    float z[2 * 4] = {1e4f, 1e4f - 1.0f, 1e4f - 30.0f, -1e4f, /* row 0 */
                      -1e4f, 1e4f, 0.0f, 1e4f - 2.0f /* row 1 */};
    int t[2] = {1, 0};
    float probs[8], losses[2];
    float mean = crossentropy_forward(probs, losses, z, t, 2, 4);
    for (int i = 0; i < 8; i++) CHECK(isfinite(probs[i]));
    CHECK(isfinite(mean));
    CHECK_NEAR(losses[0], ce_naive(z, 4, 1), 1e-5);
    CHECK_NEAR(losses[0], 1.0 + log(1 + exp(-1.0) + exp(-30.0)), 1e-6);
    CHECK_NEAR(losses[1], 2e4 + log(1 + exp(-2.0)), 4e-3); /* float spacing at 2e4 is 2e-3 */
    CHECK(probs[4] == 0.0f); /* underflowed, yet the loss is right */
    CHECK_NEAR(probs[5], 1.0 / (1.0 + exp(-2.0)), 1e-6);
    CHECK_NEAR(mean, 0.5 * ((double)losses[0] + (double)losses[1]), 4e-3);
}

typedef struct {
    float *probs, *losses, *z;
    const int *t;
    int N, K;
} ce_ctx;

static double ce_loss(void *p)
{
    ce_ctx *c = p;
    crossentropy_forward(c->probs, c->losses, c->z, c->t, c->N, c->K);
    double s = 0;
    for (int n = 0; n < c->N; n++) s += (double)c->losses[n];
    return s / c->N;
}

TEST(layers_crossentropy_backward_fd)
{
    rng g;
    rng_init(&g, 17);
    int N = 5, K = 7;
    int t[5];
    for (int n = 0; n < N; n++) t[n] = (int)rng_below(&g, (uint32_t)K);
    ce_ctx c = {fbuf((size_t)N * K), fbuf((size_t)N), frand(&g, (size_t)N * K, 2.0f), t, N, K};
    (void)ce_loss(&c);
    float *dz = fbuf((size_t)N * K);
    crossentropy_backward(dz, c.probs, t, 1.0f / (float)N, N, K);
    CHECK_FD("crossentropy dlogits", c.z, dz, (size_t)N * K, 1e-3f, 2e-3, ce_loss, &c);
    /* Rows of the gradient sum to 0 (softmax is shift-invariant). */
    for (int n = 0; n < N; n++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += (double)dz[(size_t)n * K + k];
        CHECK_NEAR(s, 0.0, 1e-7);
    }
    float *g0 = frand(&g, (size_t)N * K, 1.0f), *gz = fcopy(g0, (size_t)N * K);
    crossentropy_backward(gz, c.probs, t, 1.0f / (float)N, N, K);
    crossentropy_backward(gz, c.probs, t, 1.0f / (float)N, N, K);
    CHECK_ACCUM("crossentropy dlogits", gz, g0, dz, (size_t)N * K);
    bufs_free();
}

/* ---- determinism ----------------------------------------------------------------------------------- */

/* A whole small forward/backward chain (LayerNorm, qkv linear with LoRA, attention, GELU, head, loss and
 * every backward); res receives the loss and five gradients or activations, sizes their lengths. */
enum { CHAIN_OUTPUTS = 6 };
static void layer_chain(int B, int T, int C, int NH, float *res[CHAIN_OUTPUTS], size_t sizes[CHAIN_OUTPUTS])
{
    int N = B * T, r = 4, K = 5;
    rng g;
    rng_init(&g, 18);
    size_t nx = (size_t)N * C;
    float *x = frand(&g, nx, 1.0f), *W = frand(&g, (size_t)3 * C * C, 0.3f);
    float *bq = frand(&g, (size_t)3 * C, 0.1f), *A = frand(&g, (size_t)r * C, 0.3f);
    float *Bm = frand(&g, (size_t)3 * C * r, 0.3f), *lw = frand(&g, (size_t)C, 1.0f);
    float *lb = frand(&g, (size_t)C, 1.0f), *Wh = frand(&g, (size_t)K * C, 0.3f);
    float *ln = fbuf(nx), *mean = fbuf((size_t)N), *rstd = fbuf((size_t)N);
    float *qkv = fbuf(nx * 3), *xa = fbuf((size_t)N * r), *att = fbuf((size_t)B * NH * T * T);
    float *ao = fbuf(nx), *ge = fbuf(nx), *logits = fbuf((size_t)N * K);
    float *probs = fbuf((size_t)N * K), *losses = fbuf((size_t)N);
    int *tg = malloc((size_t)N * sizeof *tg);
    for (int n = 0; n < N; n++) tg[n] = n % K;
    layernorm_forward(ln, mean, rstd, x, lw, lb, N, C);
    linear_forward(qkv, ln, W, bq, N, C, 3 * C);
    lora_forward(qkv, xa, ln, A, Bm, 0.5f, N, C, 3 * C, r);
    attention_forward(ao, att, qkv, B, T, C, NH);
    gelu_forward(ge, ao, nx);
    residual_forward(ge, ge, ao, nx);
    linear_forward(logits, ge, Wh, NULL, N, C, K);
    float loss = crossentropy_forward(probs, losses, logits, tg, N, K);
    float *dlog = fbuf((size_t)N * K), *dge = fbuf(nx), *dao = fbuf(nx), *dqkv = fbuf(nx * 3);
    float *dln = fbuf(nx), *dA = fbuf((size_t)r * C), *dB = fbuf((size_t)3 * C * r), *dx = fbuf(nx);
    float *dWh = fbuf((size_t)K * C), *dbh = fbuf((size_t)K), *dlw = fbuf((size_t)C);
    float *s = fbuf((size_t)T * T > (size_t)N * r ? (size_t)T * T : (size_t)N * r); /* both scratches */
    crossentropy_backward(dlog, probs, tg, 1.0f / (float)N, N, K);
    linear_backward(dge, dWh, dbh, dlog, ge, Wh, N, C, K);
    residual_backward(dao, NULL, dge, nx);
    gelu_backward(dao, ao, dge, nx);
    attention_backward(dqkv, s, dao, qkv, att, B, T, C, NH);
    lora_backward(dln, dA, dB, s, dqkv, ln, xa, A, Bm, 0.5f, N, C, 3 * C, r);
    linear_backward(dln, NULL, NULL, dqkv, ln, W, N, C, 3 * C);
    layernorm_backward(dx, dlw, NULL, dln, x, lw, mean, rstd, N, C);
    layernorm_backward(dx, NULL, NULL, dln, x, lw, mean, rstd, N, C);
    free(tg);
    float *l = fbuf(1);
    l[0] = loss;
    float *out[CHAIN_OUTPUTS] = {l, dx, dA, dB, dWh, att};
    size_t n[CHAIN_OUTPUTS] = {1, nx, (size_t)r * C, (size_t)3 * C * r, (size_t)K * C, (size_t)B * NH * T * T};
    for (int i = 0; i < CHAIN_OUTPUTS; i++) {
        res[i] = out[i];
        sizes[i] = n[i];
    }
}

TEST(layers_deterministic)
{
    /* Same inputs, same bits. */
    float *res[2][CHAIN_OUTPUTS];
    size_t sizes[CHAIN_OUTPUTS];
    for (int run = 0; run < 2; run++) layer_chain(2, 9, 16, 4, res[run], sizes);
    for (int i = 0; i < CHAIN_OUTPUTS; i++) CHECK_BITS("second run", res[1][i], res[0][i], sizes[i]);
    CHECK(max_abs(res[0][2], sizes[2]) > 0.0);
    bufs_free();
}

TEST(layers_linear_split_by_columns_matches_serial_and_naive)
{
    /* Few rows, wide layers: the forward and dx products are cut by columns (core/parallel.h), which must
     * give the serial bits, and both must match the naive twin. */
    int N = 64, in = 300, out = 600;
    rng g;
    rng_init(&g, 23);
    float *x = frand(&g, (size_t)N * in, 1.0f), *W = frand(&g, (size_t)out * in, 0.1f), *b = frand(&g, (size_t)out, 0.1f);
    float *dy = frand(&g, (size_t)N * out, 1.0f);
    float *y[2], *dx[2], *dW[2], *db[2];
    CHECK(par_split_product((size_t)N, (size_t)out, (size_t)in).by_cols);
    CHECK(par_split_product((size_t)N, (size_t)in, (size_t)out).by_cols);
    for (int run = 0; run < 2; run++) {
        par_pool *p = run ? par_pool_create(3) : NULL;
        par_bind(p);
        y[run] = fbuf((size_t)N * out);
        dx[run] = fbuf((size_t)N * in);
        dW[run] = fbuf((size_t)out * in);
        db[run] = fbuf((size_t)out);
        linear_forward(y[run], x, W, b, N, in, out);
        linear_backward(dx[run], dW[run], db[run], dy, x, W, N, in, out);
        par_bind(NULL);
        par_pool_destroy(p);
    }
    CHECK_BITS("y", y[1], y[0], (size_t)N * out);
    CHECK_BITS("dx", dx[1], dx[0], (size_t)N * in);
    CHECK_BITS("dW", dW[1], dW[0], (size_t)out * in);
    CHECK_BITS("db", db[1], db[0], (size_t)out);
    float *yn = fbuf((size_t)N * out), *dxn = fbuf((size_t)N * in), *dWn = fbuf((size_t)out * in), *dbn = fbuf((size_t)out);
    linear_forward_naive(yn, x, W, b, N, in, out);
    linear_backward_naive(dxn, dWn, dbn, dy, x, W, N, in, out);
    CHECK_ARRAY_NEAR(y[1], yn, (size_t)N * out, 1e-4, 1e-4);
    CHECK_ARRAY_NEAR(dx[1], dxn, (size_t)N * in, 1e-4, 1e-4);
    CHECK_ARRAY_NEAR(dW[1], dWn, (size_t)out * in, 1e-4, 1e-4);
    CHECK_ARRAY_NEAR(db[1], dbn, (size_t)out, 1e-4, 1e-4);
    bufs_free();
}

/* linear_forward_fused: the same bits serially and on pools of 2 and 3 threads; the kernels it fuses, run
 * one after another, to float rounding (OpenBLAS may round a product differently for another block shape);
 * and the naive twin. */
static void check_linear_fused(int N, int in, int out, int r, bool with_res, linear_act act_kind)
{
    rng g;
    rng_init(&g, (uint64_t)(N * 7 + in * 3 + out + r));
    size_t ny = (size_t)N * out;
    float *x = frand(&g, (size_t)N * in, 1.0f), *W = frand(&g, (size_t)out * in, 0.1f), *b = frand(&g, (size_t)out, 0.1f);
    float *A = frand(&g, (size_t)(r ? r : 1) * in, 0.2f), *B = frand(&g, (size_t)out * (r ? r : 1), 0.2f);
    float *res = with_res ? frand(&g, ny, 1.0f) : NULL;
    /* unfused reference */
    float *y0 = fbuf(ny), *xa0 = fbuf((size_t)N * (r ? r : 1)), *act0 = fbuf(ny);
    linear_forward(y0, x, W, b, N, in, out);
    lora_forward(y0, xa0, x, A, B, 0.5f, N, in, out, r);
    if (res) residual_forward(y0, res, y0, ny);
    if (act_kind == LINEAR_ACT_GELU) gelu_forward(act0, y0, ny);
    if (act_kind == LINEAR_ACT_GELU_ERF) gelu_erf_forward(act0, y0, ny);
    float *y1 = NULL, *xa1 = NULL, *act1 = NULL;
    for (int run = 0; run < 3; run++) {
        par_pool *p = run ? par_pool_create(run + 1) : NULL;
        par_bind(p);
        float *y = fbuf(ny), *xa = fbuf((size_t)N * (r ? r : 1)), *act = fbuf(ny);
        if (!run) y1 = y, xa1 = xa, act1 = act;
        linear_epilogue e = {.A = A, .B = B, .xa = xa, .scale = 0.5f, .r = r, .res = res,
                             .act = act_kind == LINEAR_ACT_NONE ? NULL : act, .act_kind = act_kind};
        linear_forward_fused(y, x, W, b, &e, N, in, out);
        par_bind(NULL);
        par_pool_destroy(p);
        CHECK_BITS("fused y, pool vs serial", y, y1, ny);
        CHECK_BITS("fused xa, pool vs serial", xa, xa1, (size_t)N * (r ? r : 1));
        CHECK_BITS("fused act, pool vs serial", act, act1, ny);
        if (run) continue;
        CHECK_ARRAY_NEAR(y, y0, ny, 1e-5, 1e-5);
        if (r) CHECK_ARRAY_NEAR(xa, xa0, (size_t)N * r, 1e-5, 1e-5);
        if (act_kind != LINEAR_ACT_NONE) CHECK_ARRAY_NEAR(act, act0, ny, 1e-5, 1e-5);
        float *yn = fbuf(ny), *xan = fbuf((size_t)N * (r ? r : 1)), *actn = fbuf(ny);
        e.xa = xan;
        e.act = e.act ? actn : NULL;
        linear_forward_fused_naive(yn, x, W, b, &e, N, in, out);
        CHECK_ARRAY_NEAR(y, yn, ny, 1e-4, 1e-4);
        if (act_kind != LINEAR_ACT_NONE) CHECK_ARRAY_NEAR(act, actn, ny, 1e-4, 1e-4);
    }
}

TEST(layers_linear_fused_matches_unfused_bits_and_naive)
{
    CHECK(par_split_product(64, 600, 300).by_cols);
    CHECK(!par_split_product(700, 192, 64).by_cols && par_split_product(700, 192, 64).tasks > 1);
    check_linear_fused(64, 300, 600, 4, true, LINEAR_ACT_GELU);       /* tasks of columns */
    check_linear_fused(700, 64, 192, 8, false, LINEAR_ACT_GELU);      /* tasks of rows */
    check_linear_fused(700, 64, 192, 8, true, LINEAR_ACT_NONE);
    check_linear_fused(64, 300, 600, 0, false, LINEAR_ACT_GELU_ERF);  /* no LoRA */
    check_linear_fused(3, 17, 5, 2, true, LINEAR_ACT_GELU);           /* one task, ragged rows */
    check_linear_fused(4, 0, 6, 2, true, LINEAR_ACT_GELU);            /* empty inner dimension */
    bufs_free();
}

static void check_same_values(const char *file, int line, const char *what, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i]))
            test_fail(file, line, "%s[%zu]: %.9g, want %.9g", what, i, (double)a[i], (double)b[i]);
}
#define CHECK_SAME(what, a, b, n) check_same_values(__FILE__, __LINE__, what, a, b, n)

TEST(layers_backward_set_equals_zero_then_accumulate)
{
    /* The _set kernels overwrite their input gradient: the values of zeroing it and accumulating (a zero's
     * sign may differ), whatever the buffer held before; on a pool too. */
    rng g;
    rng_init(&g, 41);
    int N = 150, in = 40, out = 70, B = 3, T = 9, C = 8, NH = 2;
    size_t nx = (size_t)N * in, ny = (size_t)N * out, nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    float *x = frand(&g, nx, 1.0f), *W = frand(&g, (size_t)out * in, 0.2f), *dy = frand(&g, ny, 1.0f);
    float *qkv = frand(&g, nq, 1.0f), *dout = frand(&g, no, 1.0f), *att = fbuf((size_t)B * NH * T * T);
    float *ao = fbuf(no), *scratch = fbuf((size_t)T * T);
    attention_forward(ao, att, qkv, B, T, C, NH);
    float *want[4] = {fbuf(nx), fbuf(ny), fbuf(ny), fbuf(nq)};
    linear_backward(want[0], NULL, NULL, dy, x, W, N, in, out);
    gelu_backward(want[1], dy, dy, ny);
    gelu_erf_backward(want[2], dy, dy, ny);
    attention_backward(want[3], scratch, dout, qkv, att, B, T, C, NH);
    for (int run = 0; run < 2; run++) {
        par_pool *p = run ? par_pool_create(2) : NULL;
        par_bind(p);
        float *got[4] = {frand(&g, nx, 9.0f), frand(&g, ny, 9.0f), frand(&g, ny, 9.0f), frand(&g, nq, 9.0f)};
        linear_backward_set(got[0], NULL, NULL, dy, x, W, N, in, out);
        gelu_backward_set(got[1], dy, dy, ny);
        gelu_erf_backward_set(got[2], dy, dy, ny);
        attention_backward_set(got[3], scratch, dout, qkv, att, B, T, C, NH);
        par_bind(NULL);
        par_pool_destroy(p);
        CHECK_SAME("linear dx", got[0], want[0], nx);
        CHECK_SAME("gelu dx", got[1], want[1], ny);
        CHECK_SAME("gelu_erf dx", got[2], want[2], ny);
        CHECK_SAME("attention dqkv", got[3], want[3], nq);
    }
    bufs_free();
}

TEST(layers_parallel_match_serial_bit_for_bit)
{
    /* Big enough that every kernel splits into several tasks (rows of the linears and LayerNorm, GELU and
     * residual chunks, (sample, head) pairs), on pools of several sizes and budgets: the split depends only
     * on shapes, so the bits must not change. (make test pins OpenBLAS to one thread.) */
    float *serial[CHAIN_OUTPUTS], *par[CHAIN_OUTPUTS];
    size_t sizes[CHAIN_OUTPUTS];
    layer_chain(8, 65, 64, 4, serial, sizes);
    for (int threads = 2; threads <= 4; threads++) {
        for (int budget = 2; budget <= threads; budget++) {
            par_pool *p = par_pool_create(threads);
            CHECK(p != NULL);
            par_pool_set_budget(p, budget);
            par_bind(p);
            layer_chain(8, 65, 64, 4, par, sizes);
            par_bind(NULL);
            par_pool_destroy(p);
            for (int i = 0; i < CHAIN_OUTPUTS; i++) CHECK_BITS("pool vs serial", par[i], serial[i], sizes[i]);
        }
    }
    CHECK(max_abs(serial[1], sizes[1]) > 0.0);
    bufs_free();
}

TEST(layers_degenerate_shapes)
{
    /* Empty batches and empty inner dimensions are no-ops or empty sums, never a crash or a BLAS error. */
    float one[4] = {1, 2, 3, 4}, y[4] = {9, 9, 9, 9}, g[4] = {0, 0, 0, 0}, d[4] = {0, 0, 0, 0};
    linear_forward(y, one, one, NULL, 0, 2, 2);
    CHECK(y[0] == 9.0f);
    linear_forward(y, one, one, NULL, 2, 0, 2); /* empty product, no bias: zeros */
    for (int i = 0; i < 4; i++) CHECK(y[i] == 0.0f);
    linear_backward(g, g, d, one, one, one, 2, 0, 2); /* only db has entries */
    CHECK(d[0] == 4.0f && d[1] == 6.0f);
    linear_backward(g, g, g, one, one, one, 0, 2, 2);
    for (int i = 0; i < 4; i++) CHECK(g[i] == 0.0f);
    lora_forward(y, g, one, one, one, 1.0f, 2, 0, 2, 1); /* x A^T is empty: y unchanged */
    for (int i = 0; i < 4; i++) CHECK(y[i] == 0.0f);
    float probs[1], losses[1];
    int t = 0;
    CHECK(crossentropy_forward(probs, losses, one, &t, 0, 3) == 0.0f);
    attention_forward(y, g, one, 0, 2, 2, 1);
    softmax_forward(y, one, 0, 4);
    tokens_forward(y, one, one, one, 0, 1, 2);
    patchify_forward(y, one, 0, 1, 2, 2, 1, 1);
    gelu_forward(y, one, 0);
    CHECK(y[0] == 0.0f);
}

/* ---- exact GELU and LayerNorm eps (imported timm / Hugging Face ViTs) ------------------------------ */

static double gelu_erf_loss(void *p)
{
    gelu_ctx *c = p;
    gelu_erf_forward(c->out, c->x, c->n);
    return dot_d(c->out, c->R, c->n);
}

TEST(layers_gelu_erf_values)
{
    /* A dense grid against 0.5 x (1 + erf(x / sqrt 2)) and Phi(x) + x phi(x) in double. */
    enum { G = 2001 };
    float *xs = gelu_grid(G), *ys = fbuf(G), *dx = fbuf(G), *ones = fones(G);
    gelu_erf_forward(ys, xs, G);
    gelu_erf_backward(dx, xs, ones, G);
    for (int i = 0; i < G; i++) {
        double v = xs[i], cdf = 0.5 * (1.0 + erf(v / sqrt(2.0)));
        double want = v * cdf, dwant = cdf + v * exp(-0.5 * v * v) / sqrt(2.0 * M_PI);
        CHECK_NEAR(ys[i], want, 1e-6 * fabs(want) + 1e-7);
        CHECK_NEAR(dx[i], dwant, 1e-6 * fabs(dwant) + 1e-7);
    }
    /* Published values of the exact GELU, which the tanh form misses in the 4th digit (0.841192). */
    float one = 1.0f, y = 0.0f;
    gelu_erf_forward(&y, &one, 1);
    CHECK_NEAR(y, 0.8413447, 1e-6);
    float m1 = -1.0f;
    gelu_erf_forward(&y, &m1, 1);
    CHECK_NEAR(y, -0.1586553, 1e-6);
    bufs_free();
}

TEST(layers_gelu_erf_backward_fd) { check_gelu_backward("gelu_erf dx", gelu_erf_backward, gelu_erf_loss, 12); }

TEST(layers_layernorm_eps)
{
    rng g;
    rng_init(&g, 13);
    int N = 3, C = 16;
    size_t n = (size_t)N * C;
    float *x = frand(&g, n, 0.01f), *w = frand(&g, (size_t)C, 1.0f), *b = frand(&g, (size_t)C, 1.0f);
    float *out = fbuf(n), *mean = fbuf((size_t)N), *rstd = fbuf((size_t)N), *ref = fbuf(n);
    /* The default entry point is the eps variant at 1e-5, bit for bit. */
    layernorm_forward(ref, mean, rstd, x, w, b, N, C);
    layernorm_forward_eps(out, mean, rstd, x, w, b, N, C, 1e-5f);
    CHECK_ARRAY_NEAR(out, ref, n, 1e-7, 1e-6);
    /* Small variances (1e-4) make eps visible: 1e-6 and 1e-12 against the formula in double. */
    const float epss[2] = {1e-6f, 1e-12f};
    for (int e = 0; e < 2; e++) {
        layernorm_forward_eps(out, mean, rstd, x, w, b, N, C, epss[e]);
        for (int i = 0; i < N; i++) {
            const float *xi = x + (size_t)i * C;
            double m, v;
            row_stats(xi, C, &m, &v);
            double rs = 1.0 / sqrt(v + (double)epss[e]);
            CHECK_NEAR(rstd[i], rs, 1e-6 * rs);
            for (int j = 0; j < C; j++)
                CHECK_NEAR(out[(size_t)i * C + j], ((double)xi[j] - m) * rs * (double)w[j] + (double)b[j], 1e-5);
        }
    }
    layernorm_forward(ref, mean, rstd, x, w, b, N, C);
    layernorm_forward_eps(out, mean, rstd, x, w, b, N, C, 1e-6f);
    double diff = 0;
    for (size_t i = 0; i < n; i++) diff = fmax(diff, fabs((double)out[i] - (double)ref[i]));
    CHECK_MSG(diff > 1e-3, "eps 1e-6 and 1e-5 gave the same output (max diff %g)", diff);
    bufs_free();
}

/* The exact GELU and the eps LayerNorm split like the other kernels (chunks and rows): the same bits on
 * a pool as serially. */
static void exact_chain(float *out[3], size_t n, int C)
{
    rng g;
    rng_init(&g, 31);
    float *x = frand(&g, n, 3.0f), *d = frand(&g, n, 1.0f), *w = frand(&g, (size_t)C, 1.0f), *b = frand(&g, (size_t)C, 1.0f);
    int N = (int)(n / (size_t)C);
    out[0] = fbuf(n);
    out[1] = fbuf(n);
    out[2] = fbuf(n);
    float *mean = fbuf((size_t)N), *rstd = fbuf((size_t)N);
    gelu_erf_forward(out[0], x, n);
    gelu_erf_backward(out[1], x, d, n);
    layernorm_forward_eps(out[2], mean, rstd, x, w, b, N, C, 1e-12f);
}

TEST(layers_exact_gelu_and_eps_parallel_match_serial)
{
    size_t n = (size_t)3 * 16384 + 64 * 7; /* four GELU chunks, several LayerNorm row tasks */
    float *serial[3], *par[3];
    exact_chain(serial, n, 64);
    par_pool *p = par_pool_create(3);
    CHECK(p != NULL);
    par_bind(p);
    exact_chain(par, n, 64);
    par_bind(NULL);
    par_pool_destroy(p);
    for (int i = 0; i < 3; i++) CHECK_BITS("pool vs serial", par[i], serial[i], n);
    CHECK(max_abs(serial[1], n) > 0.0);
    bufs_free();
}
