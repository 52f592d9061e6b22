/* Tests of io/dataset_io: IDX (raw and gzip'd), Fashion-MNIST, safetensors datasets, CSV, format sniffing,
 * bounded file reads and gunzip. Every malformed input has its own test, built as a small synthetic file. */
#include "tests/test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "core/rng.h"
#include "io/dataset_io.h"
#include "io/safetensors.h"

/* ---- helpers ---- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* IDX images n x rows x cols with pixel (i) = (i * 37) % 256, plus `extra` more bytes (negative: fewer). */
static uint8_t *idx_images(uint32_t n, uint32_t rows, uint32_t cols, long extra, size_t *len)
{
    size_t payload = (size_t)n * rows * cols;
    *len = (size_t)((long)(16 + payload) + extra);
    uint8_t *b = calloc(*len + 16 + payload + 1, 1);
    CHECK(b != NULL);
    put_be32(b, 0x00000803);
    put_be32(b + 4, n);
    put_be32(b + 8, rows);
    put_be32(b + 12, cols);
    for (size_t i = 0; i < payload; i++) b[16 + i] = (uint8_t)(i * 37 % 256);
    return b;
}

static uint8_t *idx_labels(uint32_t n, const uint8_t *labels, size_t *len)
{
    *len = 8 + n;
    uint8_t *b = malloc(*len + 1);
    CHECK(b != NULL);
    put_be32(b, 0x00000801);
    put_be32(b + 4, n);
    memcpy(b + 8, labels, n);
    return b;
}

static uint8_t *gzip_mem(const void *in, size_t n, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    CHECK_INT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&zs, (uLong)n) + 64;
    uint8_t *out = malloc(cap);
    CHECK(out != NULL);
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    CHECK_INT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *out_len = zs.total_out;
    deflateEnd(&zs);
    return out;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot create %s", path);
    CHECK_INT_EQ(fwrite(data, 1, len, f), len);
    CHECK_INT_EQ(fclose(f), 0);
}

/* Expects `rc` to be an error with `code` and a message containing `needle`. */
static void expect_error(int rc, const clad_err *e, int code, const char *needle)
{
    CHECK_INT_EQ(rc, code);
    CHECK_INT_EQ(e->code, code);
    CHECK_MSG(strstr(e->msg, needle) != NULL, "message \"%s\" lacks \"%s\"", e->msg, needle);
}

static const uint8_t three_labels[3] = {0, 4, 2};

/* ---- IDX ---- */

static void check_idx_dataset(const dataset *d)
{
    CHECK_INT_EQ(d->n, 3);
    CHECK_INT_EQ(d->rank, 3);
    CHECK_INT_EQ(d->shape[0], 1);
    CHECK_INT_EQ(d->shape[1], 2);
    CHECK_INT_EQ(d->shape[2], 3);
    CHECK_INT_EQ(d->dim, 6);
    for (int i = 0; i < 18; i++) CHECK_NEAR(d->x[i], (float)(i * 37 % 256) / 255.0f, 0);
    CHECK_NEAR(d->x[0], 0.0, 0);
    CHECK_INT_EQ(d->y[0], 0);
    CHECK_INT_EQ(d->y[1], 4);
    CHECK_INT_EQ(d->y[2], 2);
    CHECK_INT_EQ(d->n_classes, 5);
    CHECK_INT_EQ(dataset_validate(d, NULL), 0);
}

TEST(dsio_idx_raw)
{
    size_t xl, yl;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl), *y = idx_labels(3, three_labels, &yl);
    x[16 + 5] = 255;
    dataset d;
    clad_err e = {0};
    CHECK_INT_EQ(dataset_parse_idx(&d, x, xl, y, yl, &e), 0);
    CHECK_NEAR(d.x[5], 1.0, 0);
    d.x[5] = (float)(5 * 37 % 256) / 255.0f;
    check_idx_dataset(&d);
    dataset_finish(&d);
    free(x);
    free(y);
}

TEST(dsio_idx_gzip)
{
    size_t xl, yl, gxl, gyl;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl), *y = idx_labels(3, three_labels, &yl);
    uint8_t *gx = gzip_mem(x, xl, &gxl), *gy = gzip_mem(y, yl, &gyl);
    dataset d;
    clad_err e = {0};
    CHECK_INT_EQ(dataset_parse_idx(&d, gx, gxl, gy, gyl, &e), 0);
    check_idx_dataset(&d);
    dataset_finish(&d);
    /* Mixed: gzip'd images, raw labels. */
    CHECK_INT_EQ(dataset_parse_idx(&d, gx, gxl, y, yl, &e), 0);
    check_idx_dataset(&d);
    dataset_finish(&d);
    free(x), free(y), free(gx), free(gy);
}

TEST(dsio_idx_gzip_multi_member)
{
    /* `cat a.gz b.gz` is a valid gzip file holding a then b. */
    size_t xl, l1, l2;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl);
    uint8_t *g1 = gzip_mem(x, 10, &l1), *g2 = gzip_mem(x + 10, xl - 10, &l2);
    uint8_t *cat = malloc(l1 + l2);
    memcpy(cat, g1, l1);
    memcpy(cat + l1, g2, l2);
    size_t yl;
    uint8_t *y = idx_labels(3, three_labels, &yl);
    dataset d;
    clad_err e = {0};
    CHECK_INT_EQ(dataset_parse_idx(&d, cat, l1 + l2, y, yl, &e), 0);
    check_idx_dataset(&d);
    dataset_finish(&d);
    free(x), free(g1), free(g2), free(cat), free(y);
}

TEST(dsio_idx_without_labels)
{
    size_t xl;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl);
    dataset d;
    CHECK_INT_EQ(dataset_parse_idx(&d, x, xl, NULL, 0, NULL), 0);
    CHECK_INT_EQ(d.n, 3);
    for (int i = 0; i < 3; i++) CHECK_INT_EQ(d.y[i], 0);
    CHECK_INT_EQ(d.n_classes, 1);
    dataset_finish(&d);
    free(x);
}

TEST(dsio_idx_bad_magic_images)
{
    size_t xl, yl;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl), *y = idx_labels(3, three_labels, &yl);
    put_be32(x, 0x00000804);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_idx(&d, x, xl, y, yl, &e), &e, CLAD_EINVAL,
                 "IDX images: bad magic number 0x00000804 (expected 0x00000803");
    CHECK(d.x == NULL);
    free(x), free(y);
}

TEST(dsio_idx_bad_magic_labels)
{
    size_t xl, yl;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl), *y = idx_labels(3, three_labels, &yl);
    put_be32(y, 0x00000901); /* signed bytes: not what IDX labels use */
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_idx(&d, x, xl, y, yl, &e), &e, CLAD_EINVAL,
                 "IDX labels: bad magic number 0x00000901 (expected 0x00000801");
    free(x), free(y);
}

TEST(dsio_idx_swapped_files)
{
    size_t xl, yl;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl), *y = idx_labels(3, three_labels, &yl);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_idx(&d, y, yl, x, xl, &e), &e, CLAD_EINVAL, "were images and labels swapped?");
    free(x), free(y);
}

TEST(dsio_idx_count_mismatch)
{
    size_t xl, yl;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl), *y = idx_labels(2, three_labels, &yl);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_idx(&d, x, xl, y, yl, &e), &e, CLAD_EINVAL, "IDX: 3 images but 2 labels");
    free(x), free(y);
}

TEST(dsio_idx_truncated_images)
{
    size_t xl, yl;
    uint8_t *x = idx_images(3, 2, 3, -1, &xl), *y = idx_labels(3, three_labels, &yl);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_idx(&d, x, xl, y, yl, &e), &e, CLAD_EINVAL,
                 "IDX images: truncated: 33 bytes, but the header declares 3 images of 2 x 3 needing 34");
    clad_err_clear(&e);
    expect_error(dataset_parse_idx(&d, x, 12, y, yl, &e), &e, CLAD_EINVAL,
                 "IDX images: file is 12 bytes, shorter than its 16-byte header");
    clad_err_clear(&e);
    expect_error(dataset_parse_idx(&d, x, 3, y, yl, &e), &e, CLAD_EINVAL, "too short for a magic number");
    free(x), free(y);
}

TEST(dsio_idx_truncated_labels)
{
    size_t xl, yl;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl), *y = idx_labels(3, three_labels, &yl);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_idx(&d, x, xl, y, yl - 1, &e), &e, CLAD_EINVAL,
                 "IDX labels: truncated: 10 bytes, but the header declares 3 labels needing 11");
    free(x), free(y);
}

TEST(dsio_idx_trailing_bytes)
{
    size_t xl, yl;
    uint8_t *x = idx_images(3, 2, 3, 2, &xl), *y = idx_labels(3, three_labels, &yl);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_idx(&d, x, xl, y, yl, &e), &e, CLAD_EINVAL,
                 "IDX images: 2 trailing bytes after the 34 bytes the header declares");
    free(x), free(y);
}

TEST(dsio_idx_zero_dims)
{
    size_t xl;
    uint8_t *x = idx_images(0, 2, 3, 0, &xl);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_idx(&d, x, xl, NULL, 0, &e), &e, CLAD_EINVAL, "declares 0 samples");
    put_be32(x + 4, 1);
    put_be32(x + 8, 0);
    clad_err_clear(&e);
    expect_error(dataset_parse_idx(&d, x, xl, NULL, 0, &e), &e, CLAD_EINVAL, "declares 0 x 3 pixel images");
    free(x);
}

TEST(dsio_idx_oversized_dims)
{
    /* Headers alone (16 bytes) declaring huge data: refused from the header, before any allocation. */
    uint8_t h[16];
    dataset d;
    clad_err e = {0};
    put_be32(h, 0x00000803), put_be32(h + 4, 0xffffffffu), put_be32(h + 8, 28), put_be32(h + 12, 28);
    expect_error(dataset_parse_idx(&d, h, 16, NULL, 0, &e), &e, CLAD_ETOOLARGE,
                 "declares 4294967295 samples (limit 10000000)");
    put_be32(h + 4, 1), put_be32(h + 8, 65536), put_be32(h + 12, 65536);
    clad_err_clear(&e);
    expect_error(dataset_parse_idx(&d, h, 16, NULL, 0, &e), &e, CLAD_ETOOLARGE,
                 "declares 65536 x 65536 pixel images");
    /* Each limit on its own is met, but together they declare ~10 GB. */
    put_be32(h + 4, 10000000), put_be32(h + 8, 32), put_be32(h + 12, 32);
    clad_err_clear(&e);
    expect_error(dataset_parse_idx(&d, h, 16, NULL, 0, &e), &e, CLAD_ETOOLARGE, "declares 10240000016 bytes");
    /* The same header gzip'd: refused from the inflated header alone. */
    size_t gl;
    uint8_t *g = gzip_mem(h, 16, &gl);
    clad_err_clear(&e);
    expect_error(dataset_parse_idx(&d, g, gl, NULL, 0, &e), &e, CLAD_ETOOLARGE, "declares 10240000016 bytes");
    free(g);
    /* Labels declaring more than their limit. */
    size_t xl;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl);
    uint8_t lh[8];
    put_be32(lh, 0x00000801), put_be32(lh + 4, 0x7fffffff);
    clad_err_clear(&e);
    expect_error(dataset_parse_idx(&d, x, xl, lh, 8, &e), &e, CLAD_ETOOLARGE, "IDX labels: the header declares");
    free(x);
}

TEST(dsio_idx_gzip_more_than_declared)
{
    /* A gzip'd file that holds far more than its header says: refused without inflating it all. */
    size_t xl, gl;
    uint8_t *x = idx_images(1, 4, 4, 100000, &xl);
    uint8_t *g = gzip_mem(x, xl, &gl);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_idx(&d, g, gl, NULL, 0, &e), &e, CLAD_EINVAL,
                 "gzip'd data holds more than the 32 bytes its header declares (1 x 4 x 4)");
    free(x), free(g);
}

TEST(dsio_idx_gzip_truncated)
{
    size_t xl, gl;
    uint8_t *x = idx_images(50, 8, 8, 0, &xl);
    for (size_t i = 16; i < xl; i++) x[i] = (uint8_t)(i * 7919 >> 3); /* less compressible */
    uint8_t *g = gzip_mem(x, xl, &gl);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_idx(&d, g, gl / 2, NULL, 0, &e), &e, CLAD_EINVAL, "gzip data is truncated");
    clad_err_clear(&e);
    /* Missing only the 8-byte trailer (CRC and size). */
    expect_error(dataset_parse_idx(&d, g, gl - 8, NULL, 0, &e), &e, CLAD_EINVAL, "truncated");
    free(x), free(g);
}

TEST(dsio_idx_gzip_corrupt)
{
    size_t xl, gl;
    uint8_t *x = idx_images(50, 8, 8, 0, &xl);
    uint8_t *g = gzip_mem(x, xl, &gl);
    /* A wrong CRC in the trailer. */
    g[gl - 6] ^= 0xff;
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_idx(&d, g, gl, NULL, 0, &e), &e, CLAD_EINVAL, "corrupt gzip data");
    free(x), free(g);
}

TEST(dsio_load_idx_files)
{
    size_t xl, yl, gxl;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl), *y = idx_labels(3, three_labels, &yl);
    uint8_t *gx = gzip_mem(x, xl, &gxl);
    char xp[512], yp[512], missing[512];
    snprintf(xp, sizeof xp, "%s/images.gz", test_tmpdir());
    snprintf(yp, sizeof yp, "%s/labels", test_tmpdir());
    snprintf(missing, sizeof missing, "%s/nope", test_tmpdir());
    write_file(xp, gx, gxl);
    write_file(yp, y, yl);
    dataset d;
    clad_err e = {0};
    CHECK_INT_EQ(dataset_load_idx(&d, xp, yp, &e), 0);
    check_idx_dataset(&d);
    dataset_finish(&d);
    expect_error(dataset_load_idx(&d, xp, missing, &e), &e, CLAD_ENOTFOUND, missing);
    /* A parse error names the files. */
    write_file(yp, y, yl - 1);
    clad_err_clear(&e);
    expect_error(dataset_load_idx(&d, xp, yp, &e), &e, CLAD_EINVAL, "labels': IDX labels: truncated");
    CHECK(strstr(e.msg, xp) != NULL);
    free(x), free(y), free(gx);
}

/* ---- Fashion-MNIST (the dataset-fashion-mnist package is a build dependency) ---- */

static void check_fmnist(bool train, int n_expected)
{
    dataset d;
    clad_err e = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = dataset_load_fmnist(&d, NULL, train, &e);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK_MSG(rc == 0, "%s", e.msg);
    printf("# Fashion-MNIST %s: %d samples loaded in %.2f s\n", train ? "train" : "test", d.n,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
    CHECK_INT_EQ(d.n, n_expected);
    CHECK_INT_EQ(d.rank, 3);
    CHECK_INT_EQ(d.shape[0], 1);
    CHECK_INT_EQ(d.shape[1], 28);
    CHECK_INT_EQ(d.shape[2], 28);
    CHECK_INT_EQ(d.dim, 784);
    CHECK_INT_EQ(d.n_classes, 10);
    /* Fashion-MNIST is balanced: n/10 samples per class. */
    int count[10] = {0};
    for (int i = 0; i < d.n; i++) {
        CHECK(d.y[i] >= 0 && d.y[i] < 10);
        count[d.y[i]]++;
    }
    for (int c = 0; c < 10; c++) CHECK_INT_EQ(count[c], n_expected / 10);
    double sum = 0;
    float lo = 1, hi = 0;
    size_t total = (size_t)d.n * (size_t)d.dim;
    for (size_t i = 0; i < total; i++) {
        sum += (double)d.x[i];
        if (d.x[i] < lo) lo = d.x[i];
        if (d.x[i] > hi) hi = d.x[i];
    }
    CHECK_NEAR(lo, 0.0, 0);
    CHECK_NEAR(hi, 1.0, 0);
    CHECK_NEAR(sum / (double)total, 0.286, 0.01); /* the well-known mean pixel of Fashion-MNIST */
    CHECK_INT_EQ(dataset_validate(&d, NULL), 0);
    dataset_finish(&d);
}

TEST(dsio_fmnist_train)
{
    check_fmnist(true, 60000);
}

TEST(dsio_fmnist_test)
{
    check_fmnist(false, 10000);
}

TEST(dsio_fmnist_missing_dir)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/empty", test_tmpdir());
    dataset d;
    clad_err e = {0};
    expect_error(dataset_load_fmnist(&d, dir, true, &e), &e, CLAD_ENOTFOUND, "train-images-idx3-ubyte");
    CHECK(strstr(e.msg, "Fashion-MNIST (train split)") != NULL);
}

/* ---- safetensors datasets ---- */

/* A file with x (dtype, shape, raw bytes) and optionally y. */
static uint8_t *st_dataset(st_dtype xt, int xnd, const int64_t *xs, const void *xd, st_dtype yt, int ynd,
                           const int64_t *ys, const void *yd, size_t *len)
{
    st_writer *w = st_writer_create();
    CHECK_INT_EQ(st_writer_add(w, "x", xt, xnd, xs, xd, NULL), 0);
    if (yd) CHECK_INT_EQ(st_writer_add(w, "y", yt, ynd, ys, yd, NULL), 0);
    uint8_t *buf;
    CHECK_INT_EQ(st_writer_to_buffer(w, &buf, len, NULL), 0);
    st_writer_destroy(w);
    return buf;
}

TEST(dsio_st_rank2_features)
{
    float x[6] = {1, 2, 3, 4, 5, 6};
    int64_t y[2] = {3, 1};
    size_t len;
    uint8_t *b = st_dataset(ST_F32, 2, (int64_t[]){2, 3}, x, ST_I64, 1, (int64_t[]){2}, y, &len);
    dataset d;
    clad_err e = {0};
    CHECK_INT_EQ(dataset_parse_safetensors(&d, b, len, false, &e), 0);
    CHECK_INT_EQ(d.n, 2);
    CHECK_INT_EQ(d.rank, 1);
    CHECK_INT_EQ(d.shape[0], 3);
    CHECK_ARRAY_NEAR(d.x, x, 6, 0, 0);
    CHECK_INT_EQ(d.y[0], 3);
    CHECK_INT_EQ(d.y[1], 1);
    CHECK_INT_EQ(d.n_classes, 4);
    dataset_finish(&d);
    free(b);
}

TEST(dsio_st_rank3_u8_images)
{
    uint8_t x[24];
    for (int i = 0; i < 24; i++) x[i] = (uint8_t)(i * 11);
    uint8_t y[2] = {0, 1};
    size_t len;
    uint8_t *b = st_dataset(ST_U8, 3, (int64_t[]){2, 3, 4}, x, ST_U8, 1, (int64_t[]){2}, y, &len);
    dataset d;
    CHECK_INT_EQ(dataset_parse_safetensors(&d, b, len, false, NULL), 0);
    CHECK_INT_EQ(d.rank, 3);
    CHECK_INT_EQ(d.shape[0], 1);
    CHECK_INT_EQ(d.shape[1], 3);
    CHECK_INT_EQ(d.shape[2], 4);
    for (int i = 0; i < 24; i++) CHECK_NEAR(d.x[i], (float)(i * 11) / 255.0f, 0);
    dataset_finish(&d);
    free(b);
}

TEST(dsio_st_rank4_f16_images)
{
    uint16_t x[2 * 3 * 2 * 2];
    float want[24];
    for (int i = 0; i < 24; i++) {
        x[i] = (uint16_t)(0x3c00 + i); /* 1 + i/1024 */
        want[i] = 1.0f + (float)i / 1024.0f;
    }
    int32_t y[2] = {1, 0};
    size_t len;
    uint8_t *b = st_dataset(ST_F16, 4, (int64_t[]){2, 3, 2, 2}, x, ST_I32, 1, (int64_t[]){2}, y, &len);
    dataset d;
    CHECK_INT_EQ(dataset_parse_safetensors(&d, b, len, false, NULL), 0);
    CHECK_INT_EQ(d.rank, 3);
    CHECK_INT_EQ(d.shape[0], 3);
    CHECK_INT_EQ(d.shape[1], 2);
    CHECK_INT_EQ(d.shape[2], 2);
    CHECK_INT_EQ(d.dim, 12);
    CHECK_ARRAY_NEAR(d.x, want, 24, 0, 0);
    dataset_finish(&d);
    free(b);
}

TEST(dsio_st_bf16_and_f64)
{
    uint16_t xb[4] = {0x3f80, 0xc000, 0x4049, 0x0000};
    float wb[4] = {1, -2, 3.140625f, 0};
    uint16_t y16[2] = {2, 5};
    size_t len;
    uint8_t *b = st_dataset(ST_BF16, 2, (int64_t[]){2, 2}, xb, ST_U16, 1, (int64_t[]){2}, y16, &len);
    dataset d;
    CHECK_INT_EQ(dataset_parse_safetensors(&d, b, len, false, NULL), 0);
    CHECK_ARRAY_NEAR(d.x, wb, 4, 0, 0);
    CHECK_INT_EQ(d.n_classes, 6);
    dataset_finish(&d);
    free(b);
    double xd[4] = {0.1, -2.5, 1e10, 0};
    float wd[4] = {0.1f, -2.5f, 1e10f, 0};
    uint64_t y64[2] = {0, 9};
    b = st_dataset(ST_F64, 2, (int64_t[]){2, 2}, xd, ST_U64, 1, (int64_t[]){2}, y64, &len);
    CHECK_INT_EQ(dataset_parse_safetensors(&d, b, len, false, NULL), 0);
    CHECK_ARRAY_NEAR(d.x, wd, 4, 0, 0);
    CHECK_INT_EQ(d.y[1], 9);
    dataset_finish(&d);
    free(b);
}

TEST(dsio_st_mismatched_n)
{
    float x[8] = {0};
    int64_t y[3] = {0, 1, 2};
    size_t len;
    uint8_t *b = st_dataset(ST_F32, 2, (int64_t[]){4, 2}, x, ST_I64, 1, (int64_t[]){3}, y, &len);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL,
                 "x has 4 samples but y has shape [3]; expected [4]");
    free(b);
    b = st_dataset(ST_F32, 2, (int64_t[]){3, 2}, x, ST_I64, 2, (int64_t[]){3, 1}, y, &len);
    clad_err_clear(&e);
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL, "y has shape rank 2");
    free(b);
}

TEST(dsio_st_negative_label)
{
    float x[6] = {0};
    int8_t y[3] = {0, 1, -1};
    size_t len;
    uint8_t *b = st_dataset(ST_F32, 2, (int64_t[]){3, 2}, x, ST_I8, 1, (int64_t[]){3}, y, &len);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL,
                 "label -1 of sample 2 is negative");
    CHECK(d.x == NULL && d.y == NULL);
    free(b);
}

TEST(dsio_st_label_too_large)
{
    float x[2] = {0};
    int64_t y[2] = {0, 3000000000LL};
    size_t len;
    uint8_t *b = st_dataset(ST_F32, 2, (int64_t[]){2, 1}, x, ST_I64, 1, (int64_t[]){2}, y, &len);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL, "does not fit an int");
    free(b);
    y[1] = DATASET_MAX_CLASSES;
    b = st_dataset(ST_F32, 2, (int64_t[]){2, 1}, x, ST_I64, 1, (int64_t[]){2}, y, &len);
    clad_err_clear(&e);
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_ETOOLARGE, "over the limit");
    free(b);
}

TEST(dsio_st_nan_feature)
{
    float x[6] = {0, 1, 2, 3, NAN, 5};
    int64_t y[3] = {0, 1, 2};
    size_t len;
    uint8_t *b = st_dataset(ST_F32, 2, (int64_t[]){3, 2}, x, ST_I64, 1, (int64_t[]){3}, y, &len);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL,
                 "safetensors dataset: dataset: sample 2 feature 0 is not finite");
    free(b);
}

TEST(dsio_st_inf_feature)
{
    /* An F64 value beyond float range becomes inf and is refused too. */
    double x[4] = {0, 1, 1e300, 3};
    int64_t y[2] = {0, 1};
    size_t len;
    uint8_t *b = st_dataset(ST_F64, 2, (int64_t[]){2, 2}, x, ST_I64, 1, (int64_t[]){2}, y, &len);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL, "sample 1 feature 0 is not finite");
    free(b);
    uint16_t h[2] = {0x3c00, 0xfc00}; /* 1, -inf */
    b = st_dataset(ST_F16, 2, (int64_t[]){2, 1}, h, ST_I64, 1, (int64_t[]){2}, y, &len);
    clad_err_clear(&e);
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL, "sample 1 feature 0 is not finite");
    free(b);
}

TEST(dsio_st_float_labels)
{
    float x[4] = {0}, y[2] = {0, 1};
    size_t len;
    uint8_t *b = st_dataset(ST_F32, 2, (int64_t[]){2, 2}, x, ST_F32, 1, (int64_t[]){2}, y, &len);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL,
                 "y has dtype F32; labels must be integers");
    free(b);
}

TEST(dsio_st_bad_rank)
{
    float x[32] = {0};
    int64_t y[2] = {0, 1};
    size_t len;
    dataset d;
    clad_err e = {0};
    uint8_t *b = st_dataset(ST_F32, 1, (int64_t[]){2}, x, ST_I64, 1, (int64_t[]){2}, y, &len);
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL,
                 "x has 1 dimensions; expected [N,D], [N,H,W] or [N,C,H,W]");
    free(b);
    b = st_dataset(ST_F32, 5, (int64_t[]){2, 2, 2, 2, 2}, x, ST_I64, 1, (int64_t[]){2}, y, &len);
    clad_err_clear(&e);
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL, "x has 5 dimensions");
    free(b);
}

TEST(dsio_st_zero_size)
{
    int64_t y[1] = {0};
    size_t len;
    dataset d;
    clad_err e = {0};
    uint8_t *b = st_dataset(ST_F32, 2, (int64_t[]){0, 3}, NULL, ST_I64, 1, (int64_t[]){0}, y, &len);
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL, "x dimension 0 is 0");
    free(b);
    b = st_dataset(ST_F32, 2, (int64_t[]){1, 0}, NULL, ST_I64, 1, (int64_t[]){1}, y, &len);
    clad_err_clear(&e);
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL, "x dimension 1 is 0");
    free(b);
}

TEST(dsio_st_x_dtype_refused)
{
    int32_t x[4] = {0};
    int64_t y[2] = {0, 1};
    size_t len;
    uint8_t *b = st_dataset(ST_I32, 2, (int64_t[]){2, 2}, x, ST_I64, 1, (int64_t[]){2}, y, &len);
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL,
                 "x has dtype I32; expected U8, F16, BF16, F32 or F64");
    free(b);
}

TEST(dsio_st_missing_tensors)
{
    float x[4] = {0};
    size_t len;
    dataset d;
    clad_err e = {0};
    uint8_t *b = st_dataset(ST_F32, 2, (int64_t[]){2, 2}, x, ST_I64, 0, NULL, NULL, &len);
    expect_error(dataset_parse_safetensors(&d, b, len, false, &e), &e, CLAD_EINVAL, "no tensor named 'y'");
    /* Optional labels: absent y means every label is 0. */
    CHECK_INT_EQ(dataset_parse_safetensors(&d, b, len, true, NULL), 0);
    CHECK_INT_EQ(d.n, 2);
    CHECK_INT_EQ(d.y[0] + d.y[1], 0);
    CHECK_INT_EQ(d.n_classes, 1);
    dataset_finish(&d);
    free(b);

    st_writer *w = st_writer_create();
    CHECK_INT_EQ(st_writer_add_f32(w, "X", 2, (int64_t[]){2, 2}, x, NULL), 0);
    CHECK_INT_EQ(st_writer_to_buffer(w, &b, &len, NULL), 0);
    clad_err_clear(&e);
    expect_error(dataset_parse_safetensors(&d, b, len, true, &e), &e, CLAD_EINVAL, "no tensor named 'x'");
    free(b);
    st_writer_destroy(w);
}

TEST(dsio_st_malformed_file)
{
    uint8_t b[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, '{', '}'};
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_safetensors(&d, b, sizeof b, false, &e), &e, CLAD_EINVAL, "not a safetensors file?");
    CHECK_INT_EQ(dataset_parse_safetensors(&d, b, 3, false, NULL), CLAD_EINVAL);
}

TEST(dsio_st_save_roundtrip)
{
    dataset d, back;
    int shape[3] = {2, 3, 4};
    CHECK_INT_EQ(dataset_init(&d, 5, 3, shape, NULL), 0);
    rng g;
    rng_init(&g, 3);
    for (int i = 0; i < 5 * 24; i++) d.x[i] = rng_normal(&g);
    for (int i = 0; i < 5; i++) d.y[i] = (int)rng_below(&g, 7);
    dataset_count_classes(&d);
    char path[512];
    snprintf(path, sizeof path, "%s/data.safetensors", test_tmpdir());
    clad_err e = {0};
    CHECK_INT_EQ(dataset_save_safetensors(&d, path, &e), 0);

    /* On disk: x F32 [5,2,3,4] and y I64 [5]. */
    st_reader *r = st_reader_open(path, 1 << 20, &e);
    CHECK_MSG(r != NULL, "%s", e.msg);
    const st_tensor *x = st_reader_find(r, "x"), *y = st_reader_find(r, "y");
    CHECK(x && y);
    CHECK_INT_EQ(x->dtype, ST_F32);
    CHECK_INT_EQ(x->ndim, 4);
    CHECK_INT_EQ(x->shape[0], 5);
    CHECK_INT_EQ(x->shape[3], 4);
    CHECK_INT_EQ(y->dtype, ST_I64);
    CHECK_INT_EQ(y->ndim, 1);
    st_reader_destroy(r);

    uint8_t *buf;
    size_t len;
    CHECK_INT_EQ(file_read_all(path, 1 << 20, &buf, &len, NULL), 0);
    CHECK_INT_EQ(dataset_parse_safetensors(&back, buf, len, false, &e), 0);
    CHECK_INT_EQ(back.n, 5);
    CHECK_INT_EQ(back.rank, 3);
    for (int i = 0; i < 3; i++) CHECK_INT_EQ(back.shape[i], shape[i]);
    CHECK_ARRAY_NEAR(back.x, d.x, 5 * 24, 0, 0);
    for (int i = 0; i < 5; i++) CHECK_INT_EQ(back.y[i], d.y[i]);
    CHECK_INT_EQ(back.n_classes, d.n_classes);
    dataset_finish(&back);
    dataset_finish(&d);
    free(buf);

    /* Flat features. */
    int flat[1] = {3};
    CHECK_INT_EQ(dataset_init(&d, 2, 1, flat, NULL), 0);
    for (int i = 0; i < 6; i++) d.x[i] = (float)i;
    d.y[1] = 1;
    CHECK_INT_EQ(dataset_save_safetensors(&d, path, NULL), 0);
    CHECK_INT_EQ(file_read_all(path, 1 << 20, &buf, &len, NULL), 0);
    CHECK_INT_EQ(dataset_parse_safetensors(&back, buf, len, false, NULL), 0);
    CHECK_INT_EQ(back.rank, 1);
    CHECK_INT_EQ(back.dim, 3);
    CHECK_ARRAY_NEAR(back.x, d.x, 6, 0, 0);
    dataset_finish(&back);
    dataset_finish(&d);
    free(buf);
}

/* ---- CSV ---- */

static int parse_csv(dataset *d, const char *text, bool labels_optional, clad_err *e)
{
    /* An exact-size copy without a terminating NUL: the parser must respect len. */
    size_t n = strlen(text);
    char *copy = malloc(n ? n : 1);
    CHECK(copy != NULL);
    copy[0] = '9'; /* past len when n == 0: must not be read */
    memcpy(copy, text, n);
    int rc = dataset_parse_csv(d, copy, n, labels_optional, e);
    free(copy);
    return rc;
}

TEST(dsio_csv_basic)
{
    dataset d;
    clad_err e = {0};
    CHECK_INT_EQ(parse_csv(&d, "1,0.5,2\n0,-1,3e2\n3,+4,.25\n", false, &e), 0);
    CHECK_INT_EQ(d.n, 3);
    CHECK_INT_EQ(d.rank, 1);
    CHECK_INT_EQ(d.dim, 2);
    float want[6] = {0.5f, 2, -1, 300, 4, 0.25f};
    CHECK_ARRAY_NEAR(d.x, want, 6, 0, 0);
    CHECK_INT_EQ(d.y[0], 1);
    CHECK_INT_EQ(d.y[1], 0);
    CHECK_INT_EQ(d.y[2], 3);
    CHECK_INT_EQ(d.n_classes, 4);
    dataset_finish(&d);
}

TEST(dsio_csv_header)
{
    dataset d;
    clad_err e = {0};
    CHECK_INT_EQ(parse_csv(&d, "label,pixel1,pixel2\n2,10,20\n1,30,40", false, &e), 0);
    CHECK_INT_EQ(d.n, 2);
    CHECK_INT_EQ(d.dim, 2);
    CHECK_NEAR(d.x[3], 40, 0);
    CHECK_INT_EQ(d.y[0], 2);
    dataset_finish(&d);
}

TEST(dsio_csv_crlf_blank_lines_and_spaces)
{
    dataset d;
    clad_err e = {0};
    CHECK_INT_EQ(parse_csv(&d, "\r\nclass, a ,b\r\n\r\n 1 , 2.5 ,\t3\r\n   \r\n0,4,5\r\n\r\n", false, &e), 0);
    CHECK_INT_EQ(d.n, 2);
    float want[4] = {2.5f, 3, 4, 5};
    CHECK_ARRAY_NEAR(d.x, want, 4, 0, 0);
    CHECK_INT_EQ(d.y[0], 1);
    dataset_finish(&d);
}

TEST(dsio_csv_ragged_rows)
{
    dataset d;
    clad_err e = {0};
    expect_error(parse_csv(&d, "1,2,3\n\n1,2\n", false, &e), &e, CLAD_EINVAL,
                 "csv: line 3 has 2 fields, expected 3 (as on line 1)");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "label,a,b\n1,2,3\n1,2,3,4\n", false, &e), &e, CLAD_EINVAL,
                 "csv: line 3 has 4 fields, expected 3 (as on the header, line 1)");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "label,a\n1,2,3\n", false, &e), &e, CLAD_EINVAL, "line 2 has 3 fields, expected 2");
}

TEST(dsio_csv_non_numeric)
{
    dataset d;
    clad_err e = {0};
    expect_error(parse_csv(&d, "1,2,3\n0,4,abc\n", false, &e), &e, CLAD_EINVAL,
                 "csv: line 2, column 3: 'abc' is not a number");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "1,,3\n", false, &e), &e, CLAD_EINVAL, "line 1, column 2: '' is empty");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "1,nan,3\n", false, &e), &e, CLAD_EINVAL, "column 2: 'nan' is not a number");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "1,inf,3\n", false, &e), &e, CLAD_EINVAL, "'inf' is not a number");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "1,0x10,3\n", false, &e), &e, CLAD_EINVAL, "'0x10' is not a number");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "1,2,1e999\n", false, &e), &e, CLAD_EINVAL, "column 3: '1e999' is out of range");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "1,2,1e39\n", false, &e), &e, CLAD_EINVAL, "'1e39' is out of range for a float");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "1,2,3\n1,2,\"3\"\n", false, &e), &e, CLAD_EINVAL, "line 2, column 3");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "1,2,3 4\n", false, &e), &e, CLAD_EINVAL, "'3 4' is not a number");
}

TEST(dsio_csv_bad_labels)
{
    dataset d;
    clad_err e = {0};
    expect_error(parse_csv(&d, "1,2\n1.5,2\n", false, &e), &e, CLAD_EINVAL,
                 "csv: line 2, column 1: label '1.5' is not an integer");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "-1,2\n", false, &e), &e, CLAD_EINVAL, "label '-1' is not an integer in [0, 100000)");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "100000,2\n", false, &e), &e, CLAD_EINVAL, "label '100000'");
    /* An integral value written as a float is accepted. */
    CHECK_INT_EQ(parse_csv(&d, "2.0,1\n", false, NULL), 0);
    CHECK_INT_EQ(d.y[0], 2);
    dataset_finish(&d);
}

TEST(dsio_csv_empty_input)
{
    dataset d;
    clad_err e = {0};
    expect_error(parse_csv(&d, "", false, &e), &e, CLAD_EINVAL, "csv: the input is empty");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "\n \r\n\t\n", false, &e), &e, CLAD_EINVAL, "csv: the input is empty");
    clad_err_clear(&e);
    expect_error(parse_csv(&d, "label,a,b\r\n\r\n", false, &e), &e, CLAD_EINVAL, "a header line but no data rows");
}

TEST(dsio_csv_label_without_features)
{
    dataset d;
    clad_err e = {0};
    expect_error(parse_csv(&d, "\n1\n2\n", false, &e), &e, CLAD_EINVAL, "csv: line 2 has a label but no features");
}

TEST(dsio_csv_labels_optional)
{
    dataset d;
    /* No header: every column is a feature. */
    CHECK_INT_EQ(parse_csv(&d, "1,2,3\n4,5,6\n", true, NULL), 0);
    CHECK_INT_EQ(d.dim, 3);
    CHECK_INT_EQ(d.y[0] + d.y[1], 0);
    CHECK_INT_EQ(d.n_classes, 1);
    CHECK_NEAR(d.x[0], 1, 0);
    dataset_finish(&d);
    /* A header naming the label column: it is read as labels. */
    CHECK_INT_EQ(parse_csv(&d, "Label,f1,f2\n1,2,3\n0,5,6\n", true, NULL), 0);
    CHECK_INT_EQ(d.dim, 2);
    CHECK_INT_EQ(d.y[0], 1);
    CHECK_INT_EQ(d.n_classes, 2);
    dataset_finish(&d);
    /* A header without one: all features. */
    CHECK_INT_EQ(parse_csv(&d, "f0,f1,f2\n1,2,3\n", true, NULL), 0);
    CHECK_INT_EQ(d.dim, 3);
    dataset_finish(&d);
}

TEST(dsio_csv_respects_length)
{
    const char *text = "1,2\n3,4";
    dataset d;
    CHECK_INT_EQ(dataset_parse_csv(&d, text, 3, false, NULL), 0);
    CHECK_INT_EQ(d.n, 1);
    dataset_finish(&d);
    /* A NUL byte inside the buffer is data, and not a number. */
    clad_err e = {0};
    expect_error(dataset_parse_csv(&d, "1,2\0" "5\n", 6, false, &e), &e, CLAD_EINVAL, "line 1, column 2");
}

/* ---- format sniffing ---- */

TEST(dsio_any_detects_formats)
{
    dataset d;
    clad_err e = {0};
    /* safetensors */
    float x[4] = {1, 2, 3, 4};
    int64_t y[2] = {0, 1};
    size_t sl;
    uint8_t *st = st_dataset(ST_F32, 2, (int64_t[]){2, 2}, x, ST_I64, 1, (int64_t[]){2}, y, &sl);
    CHECK_INT_EQ(dataset_parse_any(&d, st, sl, false, &e), 0);
    CHECK_INT_EQ(d.n, 2);
    CHECK_INT_EQ(d.dim, 2);
    dataset_finish(&d);
    /* gzip'd safetensors */
    size_t gsl;
    uint8_t *gst = gzip_mem(st, sl, &gsl);
    CHECK_INT_EQ(dataset_parse_any(&d, gst, gsl, false, &e), 0);
    CHECK_INT_EQ(d.n, 2);
    dataset_finish(&d);
    /* CSV, raw and gzip'd */
    const char *csv = "label,a\n1,0.5\n0,0.25\n2,1\n";
    CHECK_INT_EQ(dataset_parse_any(&d, csv, strlen(csv), false, &e), 0);
    CHECK_INT_EQ(d.n, 3);
    CHECK_INT_EQ(d.n_classes, 3);
    dataset_finish(&d);
    size_t gcl;
    uint8_t *gcsv = gzip_mem(csv, strlen(csv), &gcl);
    CHECK_INT_EQ(dataset_parse_any(&d, gcsv, gcl, false, &e), 0);
    CHECK_INT_EQ(d.n, 3);
    dataset_finish(&d);
    /* IDX images, raw and gzip'd: only for predict (no labels). */
    size_t il, gil;
    uint8_t *idx = idx_images(3, 2, 3, 0, &il);
    uint8_t *gidx = gzip_mem(idx, il, &gil);
    CHECK_INT_EQ(dataset_parse_any(&d, idx, il, true, &e), 0);
    CHECK_INT_EQ(d.rank, 3);
    CHECK_INT_EQ(d.n, 3);
    dataset_finish(&d);
    CHECK_INT_EQ(dataset_parse_any(&d, gidx, gil, true, &e), 0);
    CHECK_INT_EQ(d.n, 3);
    dataset_finish(&d);
    expect_error(dataset_parse_any(&d, idx, il, false, &e), &e, CLAD_EINVAL, "IDX images carry no labels");
    clad_err_clear(&e);
    expect_error(dataset_parse_any(&d, gidx, gil, false, &e), &e, CLAD_EINVAL, "IDX images carry no labels");
    free(st), free(gst), free(gcsv), free(idx), free(gidx);
}

TEST(dsio_any_refuses_odd_inputs)
{
    dataset d;
    clad_err e = {0};
    expect_error(dataset_parse_any(&d, "", 0, true, &e), &e, CLAD_EINVAL, "the input is empty");
    size_t ll;
    uint8_t *lab = idx_labels(3, three_labels, &ll);
    clad_err_clear(&e);
    expect_error(dataset_parse_any(&d, lab, ll, true, &e), &e, CLAD_EINVAL, "IDX labels file without its images");
    size_t g1, g2;
    uint8_t *gz1 = gzip_mem("1,2\n", 4, &g1);
    uint8_t *gz2 = gzip_mem(gz1, g1, &g2);
    clad_err_clear(&e);
    expect_error(dataset_parse_any(&d, gz2, g2, true, &e), &e, CLAD_EINVAL, "gzip inside gzip");
    uint8_t *empty = gzip_mem("", 0, &g1);
    clad_err_clear(&e);
    expect_error(dataset_parse_any(&d, empty, g1, true, &e), &e, CLAD_EINVAL, "empty once gunzip'd");
    clad_err_clear(&e);
    expect_error(dataset_parse_any(&d, "hello world", 11, true, &e), &e, CLAD_EINVAL, "csv:");
    /* A truncated safetensors file is still recognised, and the reader says what is wrong. */
    float x[4] = {1, 2, 3, 4};
    int64_t y[2] = {0, 1};
    size_t sl;
    uint8_t *st = st_dataset(ST_F32, 2, (int64_t[]){2, 2}, x, ST_I64, 1, (int64_t[]){2}, y, &sl);
    clad_err_clear(&e);
    expect_error(dataset_parse_any(&d, st, sl - 1, true, &e), &e, CLAD_EINVAL, "safetensors: data is truncated");
    clad_err_clear(&e);
    expect_error(dataset_parse_any(&d, st, 40, true, &e), &e, CLAD_EINVAL, "runs past the end of the file");
    free(st);
    free(lab), free(gz1), free(gz2), free(empty);
}

/* ---- file reads and gunzip ---- */

TEST(dsio_file_read_all)
{
    char path[512];
    snprintf(path, sizeof path, "%s/f.bin", test_tmpdir());
    write_file(path, "hello", 5);
    uint8_t *b;
    size_t n;
    CHECK_INT_EQ(file_read_all(path, 5, &b, &n, NULL), 0);
    CHECK_INT_EQ(n, 5);
    CHECK_STR_EQ((char *)b, "hello"); /* NUL-terminated */
    free(b);
    clad_err e = {0};
    expect_error(file_read_all(path, 4, &b, &n, &e), &e, CLAD_ETOOLARGE, "over the limit of 4 bytes");
    CHECK(b == NULL);
    snprintf(path, sizeof path, "%s/missing", test_tmpdir());
    clad_err_clear(&e);
    expect_error(file_read_all(path, 100, &b, &n, &e), &e, CLAD_ENOTFOUND, path);
    clad_err_clear(&e);
    expect_error(file_read_all(test_tmpdir(), 100, &b, &n, &e), &e, CLAD_EINVAL, "is a directory");
    /* A file whose size stat cannot tell (procfs reports 0). */
    CHECK_INT_EQ(file_read_all("/proc/self/status", 1 << 20, &b, &n, NULL), 0);
    CHECK(n > 0 && strstr((char *)b, "Name:") != NULL);
    free(b);
    clad_err_clear(&e);
    expect_error(file_read_all("/proc/self/status", 16, &b, &n, &e), &e, CLAD_ETOOLARGE, "over the limit");
}

TEST(dsio_gunzip_buffer)
{
    rng g;
    rng_init(&g, 99);
    size_t n = 200000;
    uint8_t *raw = malloc(n);
    for (size_t i = 0; i < n; i++) raw[i] = (uint8_t)(rng_below(&g, 16) + 'a');
    size_t gl;
    uint8_t *gz = gzip_mem(raw, n, &gl);
    uint8_t *out;
    size_t ol;
    CHECK_INT_EQ(gunzip_buffer(gz, gl, n, &out, &ol, NULL), 0);
    CHECK_INT_EQ(ol, n);
    CHECK(memcmp(out, raw, n) == 0);
    CHECK(out[n] == 0);
    free(out);
    clad_err e = {0};
    expect_error(gunzip_buffer(gz, gl, n - 1, &out, &ol, &e), &e, CLAD_ETOOLARGE, "more than 199999 bytes");
    CHECK(out == NULL);
    /* A forged size hint in the trailer (huge, or tiny) changes nothing but the first allocation. */
    uint8_t *forged = malloc(gl);
    memcpy(forged, gz, gl);
    forged[gl - 1] = 0xff, forged[gl - 2] = 0xff;
    clad_err_clear(&e);
    expect_error(gunzip_buffer(forged, gl, n, &out, &ol, &e), &e, CLAD_EINVAL, "corrupt");  /* ISIZE is checked */
    free(forged);
    clad_err_clear(&e);
    expect_error(gunzip_buffer(raw, n, n, &out, &ol, &e), &e, CLAD_EINVAL, "not gzip");
    clad_err_clear(&e);
    expect_error(gunzip_buffer(gz, gl - 100, n, &out, &ol, &e), &e, CLAD_EINVAL, "truncated");
    uint8_t *trail = malloc(gl + 3);
    memcpy(trail, gz, gl);
    memcpy(trail + gl, "xyz", 3);
    clad_err_clear(&e);
    expect_error(gunzip_buffer(trail, gl + 3, n, &out, &ol, &e), &e, CLAD_EINVAL, "3 bytes of trailing garbage");
    free(trail);
    /* Empty payload. */
    uint8_t *ez = gzip_mem("", 0, &gl);
    CHECK_INT_EQ(gunzip_buffer(ez, gl, 10, &out, &ol, NULL), 0);
    CHECK_INT_EQ(ol, 0);
    free(out);
    free(ez);
    free(gz);
    free(raw);
}

TEST(dsio_gunzip_bounded_against_bombs)
{
    /* 64 MB of zeros compress to ~64 KB; with a 1 MB limit the inflater stops early. */
    size_t n = 64u << 20;
    uint8_t *zero = calloc(n, 1);
    size_t gl;
    uint8_t *gz = gzip_mem(zero, n, &gl);
    free(zero);
    CHECK(gl < n / 500);
    uint8_t *out;
    size_t ol;
    clad_err e = {0};
    expect_error(gunzip_buffer(gz, gl, 1 << 20, &out, &ol, &e), &e, CLAD_ETOOLARGE, "more than 1048576 bytes");
    free(gz);
}

TEST(dsio_gunzip_prefix)
{
    size_t xl, gl;
    uint8_t *x = idx_images(3, 2, 3, 0, &xl);
    uint8_t *gz = gzip_mem(x, xl, &gl);
    uint8_t head[16];
    size_t got;
    CHECK_INT_EQ(gunzip_prefix(gz, gl, head, 16, &got, NULL), 0);
    CHECK_INT_EQ(got, 16);
    CHECK(memcmp(head, x, 16) == 0);
    uint8_t all[64];
    CHECK_INT_EQ(gunzip_prefix(gz, gl, all, sizeof all, &got, NULL), 0);
    CHECK_INT_EQ(got, xl); /* the stream is shorter than asked */
    clad_err e = {0};
    expect_error(gunzip_prefix(x, xl, head, 16, &got, &e), &e, CLAD_EINVAL, "not gzip");
    free(x), free(gz);
}

/* ---- robustness ---- */

/* Parses an exact-size copy (so the sanitizer sees over-reads); anything accepted must be a valid dataset. */
static bool any_parses(const uint8_t *src, size_t len, bool labels_optional)
{
    uint8_t *b = malloc(len ? len : 1);
    if (len) memcpy(b, src, len);
    dataset d;
    clad_err e = {0};
    int rc = dataset_parse_any(&d, b, len, labels_optional, &e);
    free(b);
    if (rc) {
        CHECK(e.code == rc && e.msg[0] != '\0');
        CHECK(d.x == NULL && d.y == NULL);
        return false;
    }
    CHECK(d.n > 0 && d.dim > 0);
    CHECK_MSG(dataset_validate(&d, &e) == 0, "accepted an invalid dataset: %s", e.msg);
    dataset_finish(&d);
    return true;
}

TEST(dsio_fuzz_parse_any)
{
    float x[12];
    for (int i = 0; i < 12; i++) x[i] = (float)i * 0.5f;
    int64_t y[3] = {2, 0, 1};
    size_t sl, il, gil;
    uint8_t *st = st_dataset(ST_F32, 3, (int64_t[]){3, 2, 2}, x, ST_I64, 1, (int64_t[]){3}, y, &sl);
    uint8_t *idx = idx_images(3, 2, 3, 0, &il);
    uint8_t *gidx = gzip_mem(idx, il, &gil);
    const char *csv = "label,a,b\r\n1,0.5,2\r\n0,-1,3e2\r\n";
    const struct {
        const uint8_t *p;
        size_t n;
    } inputs[] = {{st, sl}, {idx, il}, {gidx, gil}, {(const uint8_t *)csv, strlen(csv)}};
    rng g;
    rng_init(&g, 4242);
    int accepted = 0, tried = 0;
    for (size_t k = 0; k < sizeof inputs / sizeof *inputs; k++) {
        CHECK(any_parses(inputs[k].p, inputs[k].n, true));
        for (size_t n = 0; n < inputs[k].n; n++) accepted += any_parses(inputs[k].p, n, n & 1), tried++;
        uint8_t *mut = malloc(inputs[k].n);
        for (int it = 0; it < 1500; it++) {
            memcpy(mut, inputs[k].p, inputs[k].n);
            mut[rng_below(&g, (uint32_t)inputs[k].n)] = (uint8_t)rng_next(&g);
            accepted += any_parses(mut, inputs[k].n, it & 1), tried++;
        }
        free(mut);
    }
    printf("# %d of %d truncated or corrupted datasets accepted\n", accepted, tried);
    free(st), free(idx), free(gidx);
}

TEST(dataset_append_and_save_with_tasks_round_trip)
{
    /* Two tasks' samples one after the other, saved with their task indices (what `clad eval --any`
     * reads), and read back: x and y as written, "task" and the "tasks" names beside them. */
    dataset a = {0}, b = {0}, d = {0};
    clad_err e = {0};
    CHECK_INT_EQ(dataset_init(&a, 2, 1, (int[]){3}, &e), 0);
    CHECK_INT_EQ(dataset_init(&b, 3, 1, (int[]){3}, &e), 0);
    for (int i = 0; i < 6; i++) a.x[i] = (float)i;
    for (int i = 0; i < 9; i++) b.x[i] = (float)(10 + i);
    a.y[1] = 4;
    b.y[2] = 2;
    CHECK_INT_EQ(dataset_append(&d, &a, &e), 0);
    CHECK_INT_EQ(dataset_append(&d, &b, &e), 0);
    CHECK_INT_EQ(d.n, 5);
    CHECK_INT_EQ(d.n_classes, 5);
    CHECK(d.x[5] == 5.0f && d.x[6] == 10.0f && d.y[1] == 4 && d.y[4] == 2);
    dataset other = {0};
    CHECK_INT_EQ(dataset_init(&other, 1, 1, (int[]){4}, &e), 0);
    CHECK_INT_EQ(dataset_append(&d, &other, &e), CLAD_EINVAL);
    char path[512];
    snprintf(path, sizeof path, "%s/two.safetensors", test_tmpdir());
    int task[5] = {0, 0, 1, 1, 1};
    CHECK_INT_EQ(dataset_save_safetensors_tasks(&d, task, "[\"a\",\"b\"]", path, &e), 0);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    static uint8_t buf[4096];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    dataset back = {0};
    CHECK_INT_EQ(dataset_parse_safetensors(&back, buf, len, false, &e), 0);
    CHECK_INT_EQ(back.n, 5);
    CHECK(memcmp(back.x, d.x, 15 * sizeof *back.x) == 0 && memcmp(back.y, d.y, 5 * sizeof *back.y) == 0);
    st_reader *r = st_reader_parse(buf, len, &e);
    CHECK(r != NULL);
    CHECK_STR_EQ(st_reader_meta(r, "tasks"), "[\"a\",\"b\"]");
    int got[5];
    CHECK_INT_EQ(st_tensor_to_int(st_reader_find(r, "task"), got, &e), 0);
    CHECK(memcmp(got, task, sizeof got) == 0);
    st_reader_destroy(r);
    dataset_finish(&back);
    dataset_finish(&other);
    dataset_finish(&a);
    dataset_finish(&b);
    dataset_finish(&d);
}
