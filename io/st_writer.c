/* safetensors writer: collects tensors and metadata, then lays them out exactly as the reference writer
 * does (header `{"__metadata__":{...},"name":{"dtype":..,"shape":[..],"data_offsets":[b,e]},...}` with
 * compact separators, padded with spaces to a multiple of 8 bytes; tensors by descending dtype, then name)
 * and writes the file atomically. */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/st_internal.h"

typedef struct st_wtensor {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint8_t *data;
    size_t nbytes;
} st_wtensor;

struct st_writer {
    st_wtensor *t;
    int n, cap;
    char **meta_key;
    char **meta_val;
    int n_meta, cap_meta;
};

st_writer *st_writer_create(void)
{
    return calloc(1, sizeof(st_writer));
}

void st_writer_destroy(st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_key[i]);
        free(w->meta_val[i]);
    }
    free(w->t);
    free(w->meta_key);
    free(w->meta_val);
    free(w);
}

/* jansson refuses strings that are not valid UTF-8; the header must be UTF-8, so check up front. */
static bool valid_utf8(const char *s)
{
    json_t *j = json_string(s);
    if (!j) return false;
    json_decref(j);
    return true;
}

int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                  const void *data, clad_err *err)
{
    if (!name || !valid_utf8(name))
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor name is missing or not valid UTF-8");
    if (strcmp(name, "__metadata__") == 0)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: '__metadata__' is reserved and cannot name a tensor");
    if ((unsigned)dtype >= ST_DTYPE_COUNT)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' has an unknown dtype (%d)", name, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' has %d dimensions (0..%d supported)", name,
                            ndim, ST_MAX_DIMS);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' dimension %d is negative (%lld)", name,
                                i, (long long)shape[i]);
        uint64_t d = (uint64_t)shape[i];
        if (d != 0 && numel > (uint64_t)INT64_MAX / d)
            return clad_err_set(err, CLAD_ETOOLARGE, "safetensors: tensor '%s' has too many elements", name);
        numel *= d;
    }
    size_t esize = st_dtype_size(dtype);
    if (numel > SIZE_MAX / esize)
        return clad_err_set(err, CLAD_ETOOLARGE, "safetensors: tensor '%s' has too many bytes", name);
    size_t nbytes = (size_t)numel * esize;
    if (nbytes > 0 && !data)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' has no data", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return clad_err_set(err, CLAD_EINVAL, "safetensors: duplicate tensor name '%s'", name);

    if (w->n == w->cap) {
        int ncap = w->cap ? w->cap * 2 : 16;
        st_wtensor *nt = realloc(w->t, (size_t)ncap * sizeof *nt);
        if (!nt) return clad_err_set(err, CLAD_ENOMEM, "safetensors: out of memory");
        w->t = nt;
        w->cap = ncap;
    }
    st_wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->data = malloc(nbytes + 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return clad_err_set(err, CLAD_ENOMEM, "safetensors: cannot allocate %zu bytes for tensor '%s'", nbytes,
                            name);
    }
    if (nbytes) memcpy(t->data, data, nbytes);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    w->n++;
    return 0;
}

int st_writer_add_f32(st_writer *w, const char *name, int ndim, const int64_t *shape, const float *data,
                      clad_err *err)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return st_writer_add(w, name, ST_F32, ndim, shape, data, err);
#else
    /* The file is little-endian; byte-swap on other hosts. */
    int rc = st_writer_add(w, name, ST_F32, ndim, shape, data, err);
    if (rc) return rc;
    st_wtensor *t = &w->t[w->n - 1];
    for (size_t i = 0; i < t->nbytes / 4; i++) {
        uint32_t b;
        memcpy(&b, t->data + 4 * i, 4);
        st_store_u32(t->data + 4 * i, b);
    }
    return 0;
#endif
}

int st_writer_meta(st_writer *w, const char *key, const char *value, clad_err *err)
{
    if (!key || !value || !valid_utf8(key) || !valid_utf8(value))
        return clad_err_set(err, CLAD_EINVAL, "safetensors: metadata key or value is missing or not valid UTF-8");
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta_key[i], key) == 0) {
            char *v = strdup(value);
            if (!v) return clad_err_set(err, CLAD_ENOMEM, "safetensors: out of memory");
            free(w->meta_val[i]);
            w->meta_val[i] = v;
            return 0;
        }
    if (w->n_meta == w->cap_meta) {
        int ncap = w->cap_meta ? w->cap_meta * 2 : 8;
        char **nk = realloc(w->meta_key, (size_t)ncap * sizeof *nk);
        if (!nk) return clad_err_set(err, CLAD_ENOMEM, "safetensors: out of memory");
        w->meta_key = nk;
        char **nv = realloc(w->meta_val, (size_t)ncap * sizeof *nv);
        if (!nv) return clad_err_set(err, CLAD_ENOMEM, "safetensors: out of memory");
        w->meta_val = nv;
        w->cap_meta = ncap;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return clad_err_set(err, CLAD_ENOMEM, "safetensors: out of memory");
    }
    w->meta_key[w->n_meta] = k;
    w->meta_val[w->n_meta] = v;
    w->n_meta++;
    return 0;
}

/* The reference order: dtype descending (the enum is in increasing alignment order), then name bytewise. */
static int cmp_layout(const void *a, const void *b, void *ctx)
{
    const st_wtensor *t = ctx;
    const st_wtensor *x = &t[*(const int *)a], *y = &t[*(const int *)b];
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_meta(const void *a, const void *b, void *ctx)
{
    char **keys = ctx;
    return strcmp(keys[*(const int *)a], keys[*(const int *)b]);
}

/* Builds the header JSON for tensors in `order`; NULL on allocation failure. Metadata keys are sorted so
 * output is reproducible (the reference writes them in hash order, so any order is compatible). */
static char *header_json(const st_writer *w, const int *order)
{
    json_t *root = json_object();
    if (!root) return NULL;
    char *text = NULL;
    if (w->n_meta > 0) {
        int *mo = malloc((size_t)w->n_meta * sizeof *mo);
        json_t *meta = json_object();
        if (!mo || !meta || json_object_set_new(root, "__metadata__", meta)) {
            free(mo);
            goto done;
        }
        for (int i = 0; i < w->n_meta; i++) mo[i] = i;
        qsort_r(mo, (size_t)w->n_meta, sizeof *mo, cmp_meta, w->meta_key);
        for (int i = 0; i < w->n_meta; i++)
            if (json_object_set_new(meta, w->meta_key[mo[i]], json_string(w->meta_val[mo[i]]))) {
                free(mo);
                goto done;
            }
        free(mo);
    }
    uint64_t offset = 0;
    for (int k = 0; k < w->n; k++) {
        const st_wtensor *t = &w->t[order[k]];
        json_t *shape = json_array();
        json_t *offs = json_array();
        json_t *info = json_object();
        if (!shape || !offs || !info) {
            json_decref(shape);
            json_decref(offs);
            json_decref(info);
            goto done;
        }
        for (int i = 0; i < t->ndim; i++) json_array_append_new(shape, json_integer((json_int_t)t->shape[i]));
        json_array_append_new(offs, json_integer((json_int_t)offset));
        json_array_append_new(offs, json_integer((json_int_t)(offset + t->nbytes)));
        offset += t->nbytes;
        /* Field order as the reference serialises its struct: dtype, shape, data_offsets. */
        if (json_object_set_new(info, "dtype", json_string(st_dtype_name(t->dtype))) ||
            json_object_set_new(info, "shape", shape) || json_object_set_new(info, "data_offsets", offs) ||
            json_object_set_new(root, t->name, info))
            goto done;
    }
    text = json_dumps(root, JSON_COMPACT);
done:
    json_decref(root);
    return text;
}

int st_writer_to_buffer(st_writer *w, uint8_t **out, size_t *len, clad_err *err)
{
    *out = NULL;
    *len = 0;
    int *order = malloc(((size_t)w->n + 1) * sizeof *order);
    if (!order) return clad_err_set(err, CLAD_ENOMEM, "safetensors: out of memory");
    for (int i = 0; i < w->n; i++) order[i] = i;
    qsort_r(order, (size_t)w->n, sizeof *order, cmp_layout, w->t);

    int rc = 0;
    char *json = header_json(w, order);
    if (!json) {
        rc = clad_err_set(err, CLAD_ENOMEM, "safetensors: out of memory building the header");
        goto free_order;
    }
    size_t jlen = strlen(json);
    size_t hlen = (jlen + 7) / 8 * 8;  /* spaces up to a multiple of 8, so the data starts 8-aligned */
    if (hlen > ST_MAX_HEADER) {
        rc = clad_err_set(err, CLAD_ETOOLARGE, "safetensors: header would be %zu bytes (limit %llu)", hlen,
                          (unsigned long long)ST_MAX_HEADER);
        goto free_json;
    }
    size_t total = 8 + hlen;
    for (int i = 0; i < w->n; i++) {
        if (w->t[i].nbytes > SIZE_MAX - total) {
            rc = clad_err_set(err, CLAD_ETOOLARGE, "safetensors: file would be larger than memory");
            goto free_json;
        }
        total += w->t[i].nbytes;
    }
    uint8_t *buf = malloc(total);
    if (!buf) {
        rc = clad_err_set(err, CLAD_ENOMEM, "safetensors: cannot allocate %zu bytes", total);
        goto free_json;
    }
    st_store_u64(buf, (uint64_t)hlen);
    memcpy(buf + 8, json, jlen);
    memset(buf + 8 + jlen, ' ', hlen - jlen);
    size_t at = 8 + hlen;
    for (int k = 0; k < w->n; k++) {
        const st_wtensor *t = &w->t[order[k]];
        if (t->nbytes) memcpy(buf + at, t->data, t->nbytes);
        at += t->nbytes;
    }
    *out = buf;
    *len = total;
free_json:
    free(json);
free_order:
    free(order);
    return rc;
}

static int write_error(const char *what, const char *path, int e, clad_err *err)
{
    int code = e == ENOSPC || e == EDQUOT ? CLAD_EFULL : e == EACCES || e == EPERM ? CLAD_EDENIED : CLAD_EIO;
    return clad_err_set(err, code, "safetensors: cannot %s '%s': %s", what, path, strerror(e));
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync of the directory holding path, so the rename itself survives a crash. */
static int fsync_parent(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) {
            errno = ENAMETOOLONG;
            return -1;
        }
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int st_writer_to_file(st_writer *w, const char *path, clad_err *err)
{
    uint8_t *buf;
    size_t len;
    int rc = st_writer_to_buffer(w, &buf, &len, err);
    if (rc) return rc;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) {
        rc = clad_err_set(err, CLAD_ENOMEM, "safetensors: out of memory");
        goto free_buf;
    }
    /* Same directory as the target, so rename() is atomic (same filesystem). */
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = write_error("create a temporary file for", path, errno, err);
        goto free_tmp;
    }
    /* mkstemp makes 0600; tensors are ordinary data files. */
    if (fchmod(fd, 0644) != 0 || write_all(fd, buf, len) != 0 || fsync(fd) != 0) {
        rc = write_error("write", tmp, errno, err);
        close(fd);
        goto unlink_tmp;
    }
    if (close(fd) != 0) {
        rc = write_error("close", tmp, errno, err);
        goto unlink_tmp;
    }
    if (rename(tmp, path) != 0) {
        rc = write_error("rename a temporary file onto", path, errno, err);
        goto unlink_tmp;
    }
    if (fsync_parent(path) != 0) {
        /* The data is in place; only its durability across a crash is uncertain. Report it. */
        rc = write_error("fsync the directory of", path, errno, err);
    }
    goto free_tmp;

unlink_tmp:
    unlink(tmp);
free_tmp:
    free(tmp);
free_buf:
    free(buf);
    return rc;
}
