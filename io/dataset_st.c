/* Datasets stored as safetensors (tensor `x` [N, ...] and labels `y` [N]), and dataset_parse_any, which
 * recognises a dataset's format from its first bytes. */
#include "io/dataset_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

static bool is_label_dtype(st_dtype t)
{
    switch (t) {
    case ST_U8: case ST_I8: case ST_I16: case ST_U16: case ST_I32: case ST_U32: case ST_I64: case ST_U64:
        return true;
    default:
        return false;
    }
}

/* Per-sample shape from x's shape [N, ...]: [N,D] -> (D); [N,H,W] -> (1,H,W); [N,C,H,W] -> (C,H,W). */
static int sample_shape(const st_tensor *x, int *rank, int shape[DATASET_MAX_RANK], clad_err *err)
{
    if (x->ndim < 2 || x->ndim > 4)
        return clad_err_set(err, CLAD_EINVAL, "safetensors dataset: x has %d dimensions; expected [N,D], [N,H,W] "
                            "or [N,C,H,W]", x->ndim);
    for (int i = 0; i < x->ndim; i++) {
        if (x->shape[i] == 0)
            return clad_err_set(err, CLAD_EINVAL, "safetensors dataset: x dimension %d is 0", i);
        if (x->shape[i] > (i == 0 ? DATASET_MAX_SAMPLES : DATASET_MAX_DIM))
            return clad_err_set(err, CLAD_ETOOLARGE, "safetensors dataset: x dimension %d is %lld (limit %d)", i,
                                (long long)x->shape[i], i == 0 ? DATASET_MAX_SAMPLES : DATASET_MAX_DIM);
    }
    if (x->ndim == 2) {
        *rank = 1;
        shape[0] = (int)x->shape[1];
    } else {
        *rank = 3;
        int k = 0;
        if (x->ndim == 3) shape[k++] = 1;
        for (int i = 1; i < x->ndim; i++) shape[k++] = (int)x->shape[i];
    }
    return 0;
}

int dataset_parse_safetensors(dataset *out, const void *buf, size_t len, bool labels_optional,
                              clad_err *err)
{
    memset(out, 0, sizeof *out);
    clad_err rerr = {0};  /* the reader returns NULL, so its code comes back through here */
    st_reader *r = st_reader_parse(buf, len, &rerr);
    if (!r) return clad_err_set(err, rerr.code, "%s", rerr.msg);
    int rc = 0;
    const st_tensor *x = st_reader_find(r, "x");
    const st_tensor *y = st_reader_find(r, "y");
    if (!x) {
        rc = clad_err_set(err, CLAD_EINVAL, "safetensors dataset: no tensor named 'x' (the samples, [N, ...])");
        goto destroy_reader;
    }
    if (x->dtype != ST_U8 && x->dtype != ST_F32 && x->dtype != ST_F16 && x->dtype != ST_BF16 && x->dtype != ST_F64) {
        rc = clad_err_set(err, CLAD_EINVAL, "safetensors dataset: x has dtype %s; expected U8, F16, BF16, F32 or "
                          "F64", st_dtype_name(x->dtype));
        goto destroy_reader;
    }
    int rank, shape[DATASET_MAX_RANK];
    rc = sample_shape(x, &rank, shape, err);
    if (rc) goto destroy_reader;
    int n = (int)x->shape[0];
    if (!y && !labels_optional) {
        rc = clad_err_set(err, CLAD_EINVAL, "safetensors dataset: no tensor named 'y' (the labels, [N] integers)");
        goto destroy_reader;
    }
    if (y) {
        if (!is_label_dtype(y->dtype)) {
            rc = clad_err_set(err, CLAD_EINVAL, "safetensors dataset: y has dtype %s; labels must be integers (U8, "
                              "I8, I16, U16, I32, U32, I64 or U64)", st_dtype_name(y->dtype));
            goto destroy_reader;
        }
        if (y->ndim != 1 || y->shape[0] != x->shape[0]) {
            char got[64];
            snprintf(got, sizeof got, "%s%lld%s", y->ndim == 1 ? "[" : "rank ",
                     (long long)(y->ndim == 1 ? y->shape[0] : y->ndim), y->ndim == 1 ? "]" : "");
            rc = clad_err_set(err, CLAD_EINVAL, "safetensors dataset: x has %d samples but y has shape %s; expected "
                              "[%d]", n, got, n);
            goto destroy_reader;
        }
    }
    rc = dataset_init(out, n, rank, shape, err);
    if (rc) goto destroy_reader;
    rc = st_tensor_to_f32(x, out->x, err);
    if (rc) goto finish_out;
    if (x->dtype == ST_U8) {
        size_t total = (size_t)out->n * (size_t)out->dim;
        for (size_t i = 0; i < total; i++) out->x[i] /= 255.0f;
    }
    if (y) {
        rc = st_tensor_to_int(y, out->y, err);
        if (rc) goto finish_out;
        for (int i = 0; i < n; i++) {
            if (out->y[i] < 0) {
                rc = clad_err_set(err, CLAD_EINVAL, "safetensors dataset: label %d of sample %d is negative",
                                  out->y[i], i);
                goto finish_out;
            }
            if (out->y[i] >= DATASET_MAX_CLASSES) {
                rc = clad_err_set(err, CLAD_ETOOLARGE, "safetensors dataset: label %d of sample %d is over the "
                                  "limit of %d classes", out->y[i], i, DATASET_MAX_CLASSES);
                goto finish_out;
            }
        }
    }
    dataset_count_classes(out);
    rc = dataset_validate(out, err);
    if (rc) {
        clad_err_prefix(err, "safetensors dataset: ");
        goto finish_out;
    }
    st_reader_destroy(r);
    return 0;

finish_out:
    dataset_finish(out);
destroy_reader:
    st_reader_destroy(r);
    return rc;
}

/* Little-endian int64 copies of n ints (safetensors is little-endian). NULL when out of memory. */
static int64_t *le_int64(const int *v, int n)
{
    int64_t *o = malloc(((size_t)n + 1) * sizeof *o);
    if (!o) return NULL;
    for (int i = 0; i < n; i++) o[i] = v[i];
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    for (int i = 0; i < n; i++) {
        uint64_t u = (uint64_t)o[i];
        uint8_t *p = (uint8_t *)&o[i];
        for (int b = 0; b < 8; b++) p[b] = (uint8_t)(u >> (8 * b));
    }
#endif
    return o;
}

int dataset_save_safetensors_tasks(const dataset *d, const int *task, const char *tasks_json, const char *path,
                                   clad_err *err)
{
    if (d->rank < 1 || d->rank > DATASET_MAX_RANK || d->n < 0)
        return clad_err_set(err, CLAD_EINVAL, "safetensors dataset: cannot save a dataset of rank %d", d->rank);
    int64_t xs[1 + DATASET_MAX_RANK];
    xs[0] = d->n;
    for (int i = 0; i < d->rank; i++) xs[1 + i] = d->shape[i];
    int64_t ns[1] = {d->n};
    int rc = 0;
    st_writer *w = st_writer_create();
    int64_t *y64 = le_int64(d->y, d->n), *t64 = task ? le_int64(task, d->n) : NULL;
    if (!w || !y64 || (task && !t64)) {
        rc = clad_err_set(err, CLAD_ENOMEM, "safetensors dataset: out of memory");
        goto free_all;
    }
    rc = st_writer_add_f32(w, "x", 1 + d->rank, xs, d->x, err);
    if (!rc) rc = st_writer_add(w, "y", ST_I64, 1, ns, y64, err);
    if (!rc && task) rc = st_writer_add(w, "task", ST_I64, 1, ns, t64, err);
    if (!rc && task) rc = st_writer_meta(w, "tasks", tasks_json, err);
    if (!rc) rc = st_writer_to_file(w, path, err);
free_all:
    free(y64);
    free(t64);
    st_writer_destroy(w);
    return rc;
}

int dataset_save_safetensors(const dataset *d, const char *path, clad_err *err)
{
    return dataset_save_safetensors_tasks(d, NULL, NULL, path, err);
}

/* ---- format sniffing ---- */

/* An 8-byte length under 4 GiB (so its high bytes are NUL, which text never has) followed by '{'. The
 * length is not compared with the input size here, so a truncated file gets the safetensors reader's
 * precise error rather than a confusing CSV one. */
static bool looks_like_safetensors(const uint8_t *p, size_t len)
{
    return len >= 9 && p[8] == '{' && p[4] == 0 && p[5] == 0 && p[6] == 0 && p[7] == 0;
}

static bool is_idx(const uint8_t *p, size_t len, uint8_t ndim)
{
    return len >= 4 && p[0] == 0 && p[1] == 0 && p[2] == 0x08 && p[3] == ndim;
}

static int parse_plain(dataset *out, const uint8_t *p, size_t len, bool labels_optional, clad_err *err)
{
    if (looks_like_safetensors(p, len)) return dataset_parse_safetensors(out, p, len, labels_optional, err);
    if (is_idx(p, len, 3)) {
        if (!labels_optional)
            return clad_err_set(err, CLAD_EINVAL, "IDX images carry no labels; send safetensors (x and y) or CSV "
                                "(label first) to train");
        return dataset_parse_idx(out, p, len, NULL, 0, err);
    }
    if (is_idx(p, len, 1))
        return clad_err_set(err, CLAD_EINVAL, "this is an IDX labels file without its images");
    /* CSV is text: a NUL or another control byte means some other binary format, and a CSV error about
     * fields and lines would only mislead. */
    size_t look = len < 4096 ? len : 4096;
    for (size_t i = 0; i < look; i++)
        if (p[i] < 0x20 && p[i] != '\n' && p[i] != '\r' && p[i] != '\t')
            return clad_err_set(err, CLAD_EINVAL, "the data is not a dataset clad reads: not safetensors, IDX "
                                "(optionally gzip) or CSV text (binary byte 0x%02x at offset %zu)", p[i], i);
    return dataset_parse_csv(out, (const char *)p, len, labels_optional, err);
}

int dataset_parse_any(dataset *out, const void *buf, size_t len, bool labels_optional, clad_err *err)
{
    memset(out, 0, sizeof *out);
    const uint8_t *p = buf;
    if (len == 0) return clad_err_set(err, CLAD_EINVAL, "dataset: the input is empty");
    if (!(len >= 2 && p[0] == 0x1f && p[1] == 0x8b)) return parse_plain(out, p, len, labels_optional, err);

    /* gzip: IDX images are inflated by the IDX reader, which checks their header first; anything else is
     * inflated here (bounded) and sniffed again. */
    uint8_t head[4];
    size_t got;
    int rc = gunzip_prefix(p, len, head, sizeof head, &got, err);
    if (rc) return rc;
    if (is_idx(head, got, 3)) {
        if (!labels_optional)
            return clad_err_set(err, CLAD_EINVAL, "IDX images carry no labels; send safetensors (x and y) or CSV "
                                "(label first) to train");
        return dataset_parse_idx(out, p, len, NULL, 0, err);
    }
    uint8_t *plain;
    size_t plain_len;
    rc = gunzip_buffer(p, len, DATASET_IO_MAX_BYTES, &plain, &plain_len, err);
    if (rc) return rc;
    if (plain_len >= 2 && plain[0] == 0x1f && plain[1] == 0x8b)
        rc = clad_err_set(err, CLAD_EINVAL, "dataset: gzip inside gzip is not accepted");
    else if (plain_len == 0)
        rc = clad_err_set(err, CLAD_EINVAL, "dataset: the input is empty once gunzip'd");
    else
        rc = parse_plain(out, plain, plain_len, labels_optional, err);
    free(plain);
    return rc;
}
