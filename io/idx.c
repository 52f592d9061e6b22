/* IDX datasets (the MNIST / Fashion-MNIST format), raw or gzip'd: a big-endian header (magic 0x00000803 for
 * n x rows x cols unsigned-byte images, 0x00000801 for n unsigned-byte labels) followed by the bytes.
 * Declared sizes are checked against the limits and against the bytes actually present before anything
 * sized by them is allocated. */
#include "io/dataset_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u
#define IDX_IMAGES_HEADER 16
#define IDX_LABELS_HEADER 8

typedef struct idx_header {
    uint32_t n, rows, cols;  /* rows = cols = 1 for labels */
    size_t expected;         /* header + payload bytes the header declares */
} idx_header;

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static bool is_gzip(const uint8_t *p, size_t len)
{
    return len >= 2 && p[0] == 0x1f && p[1] == 0x8b;
}

/* Checks the header in p (avail bytes: the whole file, or a gunzip'd prefix of it). */
static int idx_check_header(const uint8_t *p, size_t avail, bool images, idx_header *h, clad_err *err)
{
    const char *what = images ? "IDX images" : "IDX labels";
    size_t hsize = images ? IDX_IMAGES_HEADER : IDX_LABELS_HEADER;
    uint32_t want = images ? IDX_IMAGES_MAGIC : IDX_LABELS_MAGIC;
    if (avail < 4)
        return clad_err_set(err, CLAD_EINVAL, "%s: file is %zu bytes, too short for a magic number", what, avail);
    uint32_t magic = load_be32(p);
    if (magic != want) {
        if (magic == IDX_IMAGES_MAGIC || magic == IDX_LABELS_MAGIC)
            return clad_err_set(err, CLAD_EINVAL, "%s: magic 0x%08x is an IDX %s file; were images and labels "
                                "swapped?", what, magic, magic == IDX_IMAGES_MAGIC ? "images" : "labels");
        return clad_err_set(err, CLAD_EINVAL, "%s: bad magic number 0x%08x (expected 0x%08x: unsigned bytes, %d "
                            "dimension%s)", what, magic, want, images ? 3 : 1, images ? "s" : "");
    }
    if (avail < hsize)
        return clad_err_set(err, CLAD_EINVAL, "%s: file is %zu bytes, shorter than its %zu-byte header", what,
                            avail, hsize);
    h->n = load_be32(p + 4);
    h->rows = images ? load_be32(p + 8) : 1;
    h->cols = images ? load_be32(p + 12) : 1;
    if (h->n == 0)
        return clad_err_set(err, CLAD_EINVAL, "%s: the header declares 0 samples", what);
    if (h->rows == 0 || h->cols == 0)
        return clad_err_set(err, CLAD_EINVAL, "%s: the header declares %u x %u pixel images", what, h->rows, h->cols);
    if (h->n > DATASET_MAX_SAMPLES)
        return clad_err_set(err, CLAD_ETOOLARGE, "%s: the header declares %u samples (limit %d)", what, h->n,
                            DATASET_MAX_SAMPLES);
    uint64_t dim = (uint64_t)h->rows * h->cols;
    if (dim > DATASET_MAX_DIM)
        return clad_err_set(err, CLAD_ETOOLARGE, "%s: the header declares %u x %u pixel images (limit %d pixels)",
                            what, h->rows, h->cols, DATASET_MAX_DIM);
    uint64_t total = hsize + (uint64_t)h->n * dim;  /* <= 1e7 * 2^20 + 16: no overflow */
    if (total > DATASET_IO_MAX_BYTES)
        return clad_err_set(err, CLAD_ETOOLARGE, "%s: the header declares %llu bytes (limit %llu)", what,
                            (unsigned long long)total, (unsigned long long)DATASET_IO_MAX_BYTES);
    h->expected = (size_t)total;
    return 0;
}

/* Validates one IDX buffer, gunzipping it if needed (into *owned, which the caller frees), and points
 * *data at its bytes. */
static int idx_open(const uint8_t *p, size_t len, bool images, idx_header *h, const uint8_t **data,
                    uint8_t **owned, clad_err *err)
{
    const char *what = images ? "IDX images" : "IDX labels";
    *owned = NULL;
    if (is_gzip(p, len)) {
        uint8_t head[IDX_IMAGES_HEADER];
        size_t got;
        size_t hsize = images ? IDX_IMAGES_HEADER : IDX_LABELS_HEADER;
        int rc = gunzip_prefix(p, len, head, hsize, &got, err);
        if (rc) {
            clad_err_prefix(err, "%s: ", what);
            return rc;
        }
        rc = idx_check_header(head, got, images, h, err);
        if (rc) return rc;
        size_t out_len;
        clad_err zerr = {0};
        rc = gunzip_buffer(p, len, h->expected, owned, &out_len, &zerr);
        if (rc == CLAD_ETOOLARGE)
            return clad_err_set(err, CLAD_EINVAL, "%s: the gzip'd data holds more than the %zu bytes its header "
                                "declares (%u x %u x %u)", what, h->expected, h->n, h->rows, h->cols);
        if (rc) return clad_err_set(err, rc, "%s: %s", what, zerr.msg);
        p = *owned;
        len = out_len;
    }
    int rc = idx_check_header(p, len, images, h, err);
    if (rc) return rc;
    if (len < h->expected) {
        if (images)
            return clad_err_set(err, CLAD_EINVAL, "IDX images: truncated: %zu bytes, but the header declares %u "
                                "images of %u x %u needing %zu", len, h->n, h->rows, h->cols, h->expected);
        return clad_err_set(err, CLAD_EINVAL, "IDX labels: truncated: %zu bytes, but the header declares %u labels "
                            "needing %zu", len, h->n, h->expected);
    }
    if (len > h->expected)
        return clad_err_set(err, CLAD_EINVAL, "%s: %zu trailing bytes after the %zu bytes the header declares",
                            what, len - h->expected, h->expected);
    *data = p + (images ? IDX_IMAGES_HEADER : IDX_LABELS_HEADER);
    return 0;
}

int dataset_parse_idx(dataset *out, const void *images, size_t images_len, const void *labels,
                      size_t labels_len, clad_err *err)
{
    memset(out, 0, sizeof *out);
    idx_header ih, lh;
    const uint8_t *px, *py = NULL;
    uint8_t *own_x = NULL, *own_y = NULL;
    int rc = idx_open(images, images_len, true, &ih, &px, &own_x, err);
    if (rc) goto free_bufs;
    if (labels) {
        rc = idx_open(labels, labels_len, false, &lh, &py, &own_y, err);
        if (rc) goto free_bufs;
        if (lh.n != ih.n) {
            rc = clad_err_set(err, CLAD_EINVAL, "IDX: %u images but %u labels", ih.n, lh.n);
            goto free_bufs;
        }
    }
    int shape[3] = {1, (int)ih.rows, (int)ih.cols};
    rc = dataset_init(out, (int)ih.n, 3, shape, err);
    if (rc) goto free_bufs;
    size_t total = (size_t)out->n * (size_t)out->dim;
    for (size_t i = 0; i < total; i++) out->x[i] = (float)px[i] / 255.0f;
    if (py)
        for (int i = 0; i < out->n; i++) out->y[i] = py[i];
    dataset_count_classes(out);

free_bufs:
    free(own_x);
    free(own_y);
    return rc;
}

int dataset_load_idx(dataset *out, const char *images_path, const char *labels_path, clad_err *err)
{
    memset(out, 0, sizeof *out);
    uint8_t *xb = NULL, *yb = NULL;
    size_t xl = 0, yl = 0;
    int rc = file_read_all(images_path, DATASET_IO_MAX_BYTES, &xb, &xl, err);
    if (rc) return rc;
    if (labels_path) {
        rc = file_read_all(labels_path, DATASET_IO_MAX_BYTES, &yb, &yl, err);
        if (rc) goto free_bufs;
    }
    rc = dataset_parse_idx(out, xb, xl, yb, yl, err);
    if (rc) clad_err_prefix(err, "'%s'%s%s%s: ", images_path, labels_path ? " with '" : "",
                            labels_path ? labels_path : "", labels_path ? "'" : "");
free_bufs:
    free(xb);
    free(yb);
    return rc;
}

/* dir/base.gz if it exists, else dir/base (some copies are shipped gunzip'd). */
static void fmnist_path(char *buf, size_t size, const char *dir, const char *base)
{
    snprintf(buf, size, "%s/%s.gz", dir, base);
    FILE *f = fopen(buf, "rb");
    if (f) {
        fclose(f);
        return;
    }
    snprintf(buf, size, "%s/%s", dir, base);
}

int dataset_load_fmnist(dataset *out, const char *dir, bool train, clad_err *err)
{
    memset(out, 0, sizeof *out);
    if (!dir) dir = FMNIST_DEFAULT_DIR;
    char xp[4096], yp[4096];
    fmnist_path(xp, sizeof xp, dir, train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte");
    fmnist_path(yp, sizeof yp, dir, train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte");
    int rc = dataset_load_idx(out, xp, yp, err);
    if (rc) {
        clad_err_prefix(err, "Fashion-MNIST (%s split): ", train ? "train" : "test");
        return rc;
    }
    if (out->n_classes > 10) {
        int n_classes = out->n_classes;
        dataset_finish(out);
        return clad_err_set(err, CLAD_EINVAL, "Fashion-MNIST: '%s' has labels up to %d; expected 10 classes", yp,
                            n_classes - 1);
    }
    out->n_classes = 10;
    return 0;
}
