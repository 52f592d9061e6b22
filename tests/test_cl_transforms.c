/* Tests of core/transforms: rotation (identity, quarter turns, centre), pixel and label permutations,
 * inversion, noise statistics and determinism, class selection. */
#include "tests/test.h"

#include "core/rng.h"
#include "core/transforms.h"

static void fill_uniform(float *x, size_t n, uint64_t seed)
{
    rng r;
    rng_init(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = rng_uniform(&r);
}

TEST(cl_transforms_rotate_zero_is_identity)
{
    float src[2 * 7 * 5], dst[2 * 7 * 5];
    fill_uniform(src, sizeof src / sizeof *src, 1);
    transform_rotate_image(dst, src, 2, 7, 5, 0.0);
    CHECK_ARRAY_NEAR(dst, src, sizeof src / sizeof *src, 0, 0);
    transform_rotate_image(dst, src, 2, 7, 5, 360.0);
    CHECK_ARRAY_NEAR(dst, src, sizeof src / sizeof *src, 1e-6, 0);
}

TEST(cl_transforms_rotate_90_is_flip_then_transpose)
{
    /* Counter-clockwise as displayed: out[y][x] = in[x][N-1-y]. */
    enum { N = 6 };
    float src[N * N], dst[N * N], want[N * N];
    fill_uniform(src, N * N, 2);
    for (int y = 0; y < N; y++)
        for (int x = 0; x < N; x++) want[y * N + x] = src[x * N + (N - 1 - y)];
    transform_rotate_image(dst, src, 1, N, N, 90.0);
    CHECK_ARRAY_NEAR(dst, want, N * N, 1e-6, 0);
    /* four quarter turns come back; two equal a half turn */
    float a[N * N], b[N * N];
    transform_rotate_image(a, dst, 1, N, N, 90.0);
    transform_rotate_image(b, src, 1, N, N, 180.0);
    CHECK_ARRAY_NEAR(a, b, N * N, 1e-6, 0);
    transform_rotate_image(dst, a, 1, N, N, 90.0);
    transform_rotate_image(a, dst, 1, N, N, 90.0);
    CHECK_ARRAY_NEAR(a, src, N * N, 1e-6, 0);
    /* -90 undoes +90 */
    transform_rotate_image(a, src, 1, N, N, 90.0);
    transform_rotate_image(b, a, 1, N, N, -90.0);
    CHECK_ARRAY_NEAR(b, src, N * N, 1e-6, 0);
}

TEST(cl_transforms_rotate_keeps_centre_and_fills_zero)
{
    /* Odd size: the centre pixel stays put under any angle; corners rotated by 45 degrees leave the image. */
    enum { N = 9 };
    float src[N * N], dst[N * N];
    for (int i = 0; i < N * N; i++) src[i] = 1.0f;
    src[(N / 2) * N + N / 2] = 0.25f;
    transform_rotate_image(dst, src, 1, N, N, 37.0);
    CHECK_NEAR(dst[(N / 2) * N + N / 2], 0.25, 1e-6);
    transform_rotate_image(dst, src, 1, N, N, 45.0);
    CHECK_NEAR(dst[0], 0.0, 1e-6);
    CHECK_NEAR(dst[N * N - 1], 0.0, 1e-6);
    /* bilinear: a constant image stays constant well inside */
    CHECK_NEAR(dst[(N / 2 - 1) * N + N / 2 + 1], 1.0, 1e-5);
}

TEST(cl_transforms_permute_fraction_moves_exactly_that_many)
{
    enum { P = 784 };
    int perm[P];
    double fr[] = {0.0, 0.25, 0.5, 1.0};
    for (int f = 0; f < 4; f++) {
        transform_pixel_permutation(perm, P, fr[f], 7);
        int moved = 0, seen[P] = {0};
        for (int i = 0; i < P; i++) {
            moved += perm[i] != i;
            CHECK(perm[i] >= 0 && perm[i] < P);
            seen[perm[i]]++;
        }
        for (int i = 0; i < P; i++) CHECK_INT_EQ(seen[i], 1);
        CHECK_INT_EQ(moved, (int)lround(fr[f] * P));
    }
    int a[P], b[P], c[P];
    transform_pixel_permutation(a, P, 0.5, 3);
    transform_pixel_permutation(b, P, 0.5, 3);
    transform_pixel_permutation(c, P, 0.5, 4);
    CHECK(!memcmp(a, b, sizeof a));
    CHECK(memcmp(a, c, sizeof a) != 0);
    /* one position cannot move alone */
    transform_pixel_permutation(a, 4, 0.25, 3);
    for (int i = 0; i < 4; i++) CHECK_INT_EQ(a[i], i);
}

static dataset image_data(int n, int C, int H, int W, uint64_t seed)
{
    dataset d;
    CHECK_INT_EQ(dataset_init(&d, n, 3, (int[]){C, H, W}, NULL), 0);
    fill_uniform(d.x, (size_t)n * d.dim, seed);
    for (int i = 0; i < n; i++) d.y[i] = i % 10;
    d.n_classes = 10;
    return d;
}

TEST(cl_transforms_apply_permute_pixels_shares_positions_across_channels)
{
    dataset d = image_data(3, 2, 4, 4, 5), orig = image_data(3, 2, 4, 4, 5);
    transform t = {.op = TRANSFORM_PERMUTE_PIXELS, .fraction = 1.0, .seed = 9};
    CHECK_INT_EQ(transform_apply(&d, &t, 0, NULL), 0);
    int perm[16];
    transform_pixel_permutation(perm, 16, 1.0, 9);
    for (int i = 0; i < 3; i++)
        for (int c = 0; c < 2; c++)
            for (int p = 0; p < 16; p++)
                CHECK(d.x[(size_t)i * 32 + c * 16 + p] == orig.x[(size_t)i * 32 + c * 16 + perm[p]]);
    dataset_finish(&d);
    dataset_finish(&orig);
}

TEST(cl_transforms_invert_and_noise)
{
    dataset d = image_data(200, 1, 8, 8, 6), orig = image_data(200, 1, 8, 8, 6);
    transform inv = {.op = TRANSFORM_INVERT};
    CHECK_INT_EQ(transform_apply(&d, &inv, 0, NULL), 0);
    for (int i = 0; i < d.n * d.dim; i++) CHECK(d.x[i] == 1.0f - orig.x[i]);
    dataset_finish(&d);

    /* noise on a mid-grey image: mean ~0.5, std ~sigma, clamped to [0,1], deterministic per seed and salt */
    dataset g = image_data(500, 1, 8, 8, 1), g2 = image_data(500, 1, 8, 8, 1), g3 = image_data(500, 1, 8, 8, 1);
    for (int i = 0; i < g.n * g.dim; i++) g.x[i] = g2.x[i] = g3.x[i] = 0.5f;
    transform nz = {.op = TRANSFORM_NOISE, .sigma = 0.1, .seed = 3};
    CHECK_INT_EQ(transform_apply(&g, &nz, 1, NULL), 0);
    CHECK_INT_EQ(transform_apply(&g2, &nz, 1, NULL), 0);
    CHECK_INT_EQ(transform_apply(&g3, &nz, 2, NULL), 0);
    size_t n = (size_t)g.n * g.dim;
    CHECK(!memcmp(g.x, g2.x, n * sizeof(float)));
    CHECK(memcmp(g.x, g3.x, n * sizeof(float)) != 0);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(g.x[i] >= 0.0f && g.x[i] <= 1.0f);
        s += (double)g.x[i];
        s2 += ((double)g.x[i] - 0.5) * ((double)g.x[i] - 0.5);
    }
    CHECK_NEAR(s / n, 0.5, 0.003);
    CHECK_NEAR(sqrt(s2 / n), 0.1, 0.003);
    /* clamping: large noise on black pixels never goes below 0 */
    for (size_t i = 0; i < n; i++) g.x[i] = 0.0f;
    transform big = {.op = TRANSFORM_NOISE, .sigma = 5.0, .seed = 4};
    CHECK_INT_EQ(transform_apply(&g, &big, 0, NULL), 0);
    int zeros = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(g.x[i] >= 0.0f && g.x[i] <= 1.0f);
        zeros += g.x[i] == 0.0f;
    }
    CHECK(zeros > (int)(n / 3) && zeros < (int)(2 * n / 3));
    dataset_finish(&g);
    dataset_finish(&g2);
    dataset_finish(&g3);
    dataset_finish(&orig);
}

TEST(cl_transforms_labels_permute_and_classes_renumber)
{
    dataset d = image_data(100, 1, 2, 2, 8);
    transform pl = {.op = TRANSFORM_PERMUTE_LABELS, .seed = 5};
    int perm[10];
    transform_label_permutation(perm, 10, 5);
    for (int k = 0; k < 10; k++) CHECK(perm[k] != k);
    CHECK_INT_EQ(transform_apply(&d, &pl, 0, NULL), 0);
    for (int i = 0; i < d.n; i++) CHECK_INT_EQ(d.y[i], perm[i % 10]);
    dataset_finish(&d);

    dataset c = image_data(100, 1, 2, 2, 8), orig = image_data(100, 1, 2, 2, 8);
    transform cl = {.op = TRANSFORM_CLASSES, .n_keep = 3, .keep = {7, 2, 5}};
    CHECK_INT_EQ(transform_apply(&c, &cl, 0, NULL), 0);
    CHECK_INT_EQ(c.n, 30);
    CHECK_INT_EQ(c.n_classes, 3);
    int k = 0;
    for (int i = 0; i < orig.n; i++) {
        int y = orig.y[i], want = y == 7 ? 0 : y == 2 ? 1 : y == 5 ? 2 : -1;
        if (want < 0) continue;
        CHECK_INT_EQ(c.y[k], want);
        CHECK(!memcmp(c.x + (size_t)k * c.dim, orig.x + (size_t)i * orig.dim, (size_t)c.dim * sizeof(float)));
        k++;
    }
    CHECK_INT_EQ(k, 30);
    dataset_finish(&c);

    /* errors name the problem */
    clad_err e = {0};
    dataset z = image_data(10, 1, 2, 2, 8);
    transform bad = {.op = TRANSFORM_CLASSES, .n_keep = 2, .keep = {3, 3}};
    CHECK_INT_EQ(transform_apply(&z, &bad, 0, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "twice") != NULL);
    clad_err_clear(&e);
    transform absent = {.op = TRANSFORM_CLASSES, .n_keep = 1, .keep = {12}};
    CHECK_INT_EQ(transform_apply(&z, &absent, 0, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "12") != NULL);
    clad_err_clear(&e);
    transform frac = {.op = TRANSFORM_PERMUTE_PIXELS, .fraction = 1.5};
    CHECK_INT_EQ(transform_apply(&z, &frac, 0, &e), CLAD_EINVAL);
    dataset flat;
    CHECK_INT_EQ(dataset_init(&flat, 2, 1, (int[]){5}, NULL), 0);
    transform rot = {.op = TRANSFORM_ROTATE, .degrees = 10};
    clad_err_clear(&e);
    CHECK_INT_EQ(transform_apply(&flat, &rot, 0, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "images") != NULL);
    transform_op op;
    CHECK_INT_EQ(transform_op_parse(&op, "noise", NULL), 0);
    CHECK_INT_EQ(op, TRANSFORM_NOISE);
    CHECK_STR_EQ(transform_op_name(TRANSFORM_PERMUTE_LABELS), "permute_labels");
    CHECK_INT_EQ(transform_op_parse(&op, "blur", NULL), CLAD_EINVAL);
    dataset_finish(&flat);
    dataset_finish(&z);
    dataset_finish(&orig);
}
