/* safetensors reader: validates a whole buffer the way the reference implementation does, then gives
 * views of its tensors. Nothing in the file is trusted: every size is checked against the buffer, with
 * checked arithmetic, before it is used. */
#include "io/safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/dataset_io.h"
#include "io/st_internal.h"

typedef struct st_entry {
    st_tensor t;     /* first, so a pointer to it is what st_reader_at returns */
    uint64_t begin;  /* data_offsets, relative to the start of the data */
    uint64_t end;
} st_entry;

struct st_reader {
    json_t *root;        /* owns the tensor names and metadata strings */
    uint8_t *owned;      /* the file bytes when opened from a path */
    int n;
    st_entry *e;         /* sorted by offset (file order) */
    int *by_name;        /* indices into e, sorted by name, for st_reader_find */
    int n_meta;
    const char **meta_key;
    const char **meta_val;
};

/* The key a duplicate-key error from jansson points at, copied from its "near '...'" text. */
static void duplicate_key_text(const json_error_t *je, char *out, size_t size)
{
    const char *near = strstr(je->text, "near '");
    if (!near) {
        snprintf(out, size, "?");
        return;
    }
    near += 6;
    size_t len = strlen(near);
    if (len > 0 && near[len - 1] == '\'') len--;
    if (len >= size) len = size - 1;
    memcpy(out, near, len);
    out[len] = '\0';
}

/* Nesting depth of JSON text at byte `pos` (strings skipped), to tell a duplicate tensor name (depth 1)
 * from a duplicate key inside a tensor entry. */
static int json_depth_at(const char *s, size_t len, size_t pos)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len && i < pos; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return depth;
}

/* A JSON integer that must be >= 0; false otherwise. */
static bool get_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v)) return false;
    json_int_t i = json_integer_value(v);
    if (i < 0) return false;
    *out = (uint64_t)i;
    return true;
}

static int parse_tensor(st_entry *e, const char *name, const json_t *v, clad_err *err)
{
    memset(e, 0, sizeof *e);
    e->t.name = name;
    if (!json_is_object(v))
        return clad_err_set(err, CLAD_EINVAL, "safetensors: entry '%s' is not an object", name);

    const json_t *dt = json_object_get(v, "dtype");
    if (!json_is_string(dt))
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' has no \"dtype\" string", name);
    if (!st_dtype_from_name(json_string_value(dt), &e->t.dtype))
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' has unknown or unsupported dtype '%s'",
                            name, json_string_value(dt));

    const json_t *sh = json_object_get(v, "shape");
    if (!json_is_array(sh))
        return clad_err_set(err, CLAD_EINVAL, "safetensors: bad shape for tensor '%s': \"shape\" is missing or "
                            "not an array", name);
    size_t nd = json_array_size(sh);
    if (nd > ST_MAX_DIMS)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: bad shape for tensor '%s': %zu dimensions (at most "
                            "%d supported)", name, nd, ST_MAX_DIMS);
    e->t.ndim = (int)nd;
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (!get_uint(json_array_get(sh, i), &d))
            return clad_err_set(err, CLAD_EINVAL, "safetensors: bad shape for tensor '%s': dimension %zu is not a "
                                "non-negative integer", name, i);
        e->t.shape[i] = (int64_t)d;
        /* Checked like the reference: an overflow anywhere in the product is an error, even if a later
         * dimension is 0. */
        if (d != 0 && numel > (uint64_t)INT64_MAX / d) overflow = true;
        numel *= d;
    }
    char shape_txt[160];
    st_shape_format(shape_txt, sizeof shape_txt, e->t.ndim, e->t.shape);
    if (overflow)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s': shape %s has too many elements (the "
                            "product overflows 64 bits)", name, shape_txt);
    e->t.numel = (int64_t)numel;

    const json_t *off = json_object_get(v, "data_offsets");
    if (!json_is_array(off) || json_array_size(off) != 2)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s': \"data_offsets\" must be an array of "
                            "exactly 2 integers", name);
    if (!get_uint(json_array_get(off, 0), &e->begin) || !get_uint(json_array_get(off, 1), &e->end))
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s': \"data_offsets\" must be non-negative "
                            "integers", name);
    if (e->end < e->begin)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s': data_offsets end %llu is before begin %llu",
                            name, (unsigned long long)e->end, (unsigned long long)e->begin);

    size_t esize = st_dtype_size(e->t.dtype);
    if (numel > UINT64_MAX / esize || numel * esize > SIZE_MAX)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s': %s x shape %s is more bytes than fit in "
                            "memory", name, st_dtype_name(e->t.dtype), shape_txt);
    uint64_t nbytes = numel * esize;
    if (e->end - e->begin != nbytes)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s': data_offsets [%llu, %llu) hold %llu bytes "
                            "but %s x shape %s needs %llu", name, (unsigned long long)e->begin,
                            (unsigned long long)e->end, (unsigned long long)(e->end - e->begin),
                            st_dtype_name(e->t.dtype), shape_txt, (unsigned long long)nbytes);
    e->t.nbytes = (size_t)nbytes;
    return 0;
}

static int parse_metadata(st_reader *r, const json_t *meta, clad_err *err)
{
    if (!json_is_object(meta))
        return clad_err_set(err, CLAD_EINVAL, "safetensors: \"__metadata__\" is not an object of strings");
    size_t n = json_object_size(meta);
    r->meta_key = calloc(n + 1, sizeof *r->meta_key);
    r->meta_val = calloc(n + 1, sizeof *r->meta_val);
    if (!r->meta_key || !r->meta_val) return clad_err_set(err, CLAD_ENOMEM, "safetensors: out of memory");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)meta, key, val) {
        if (!json_is_string(val))
            return clad_err_set(err, CLAD_EINVAL, "safetensors: metadata value for '%s' is not a string", key);
        r->meta_key[r->n_meta] = key;
        r->meta_val[r->n_meta] = json_string_value(val);
        r->n_meta++;
    }
    return 0;
}

static int cmp_offset(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

static int cmp_name_index(const void *a, const void *b, void *ctx)
{
    const st_entry *e = ctx;
    return strcmp(e[*(const int *)a].t.name, e[*(const int *)b].t.name);
}

/* Tensors sorted by offset must tile the data exactly: from 0, no gap, no overlap, ending at its end. */
static int check_layout(const st_reader *r, uint64_t data_len, clad_err *err)
{
    uint64_t at = 0;
    const char *prev = NULL;
    for (int i = 0; i < r->n; i++) {
        const st_entry *e = &r->e[i];
        if (e->begin > at) {
            if (prev)
                return clad_err_set(err, CLAD_EINVAL, "safetensors: gap before tensor '%s': it starts at data "
                                    "byte %llu but the previous tensor '%s' ends at %llu", e->t.name,
                                    (unsigned long long)e->begin, prev, (unsigned long long)at);
            return clad_err_set(err, CLAD_EINVAL, "safetensors: gap before tensor '%s': the first tensor starts "
                                "at data byte %llu instead of 0", e->t.name, (unsigned long long)e->begin);
        }
        if (e->begin < at)
            return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' at data bytes [%llu, %llu) overlaps "
                                "tensor '%s', which ends at %llu", e->t.name, (unsigned long long)e->begin,
                                (unsigned long long)e->end, prev, (unsigned long long)at);
        at = e->end;
        prev = e->t.name;
    }
    if (at > data_len)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: data is truncated: tensor '%s' ends at data byte %llu "
                            "but the file holds only %llu bytes of data", prev, (unsigned long long)at,
                            (unsigned long long)data_len);
    if (at < data_len)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: %llu trailing bytes after the last tensor (tensors "
                            "end at data byte %llu, the file holds %llu)", (unsigned long long)(data_len - at),
                            (unsigned long long)at, (unsigned long long)data_len);
    return 0;
}

st_reader *st_reader_parse(const void *buf, size_t len, clad_err *err)
{
    const uint8_t *p = buf;
    if (len < 8) {
        clad_err_set(err, CLAD_EINVAL, "safetensors: file is %zu bytes, shorter than the 8-byte header length", len);
        return NULL;
    }
    uint64_t hlen = st_load_u64(p);
    /* Past the end first: any other file (a tar, a CSV) read as safetensors is corrupt, not too large. */
    if (hlen > len - 8) {
        clad_err_set(err, CLAD_EINVAL, "safetensors: header length %llu runs past the end of the file (%zu bytes "
                     "follow the length; not a safetensors file?)", (unsigned long long)hlen, len - 8);
        return NULL;
    }
    if (hlen > ST_MAX_HEADER) {
        clad_err_set(err, CLAD_ETOOLARGE, "safetensors: header length %llu is over the limit of %llu bytes",
                     (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
        return NULL;
    }
    const char *hdr = (const char *)p + 8;
    if (hlen == 0 || hdr[0] != '{') {
        clad_err_set(err, CLAD_EINVAL, "safetensors: header does not start with '{'");
        return NULL;
    }

    st_reader *r = calloc(1, sizeof *r);
    if (!r) {
        clad_err_set(err, CLAD_ENOMEM, "safetensors: out of memory");
        return NULL;
    }
    json_error_t je;
    r->root = json_loadb(hdr, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!r->root) {
        if (json_error_code(&je) == json_error_duplicate_key) {
            char key[128];
            duplicate_key_text(&je, key, sizeof key);
            if (json_depth_at(hdr, (size_t)hlen, (size_t)je.position) <= 1)
                clad_err_set(err, CLAD_EINVAL, "safetensors: duplicate tensor name %s in the header", key);
            else
                clad_err_set(err, CLAD_EINVAL, "safetensors: duplicate key %s in a header entry (header byte %d)",
                             key, je.position);
        } else {
            clad_err_set(err, CLAD_EINVAL, "safetensors: header is not valid JSON: %s (header byte %d)", je.text,
                         je.position);
        }
        goto fail;
    }
    if (!json_is_object(r->root)) {
        clad_err_set(err, CLAD_EINVAL, "safetensors: header is not a JSON object");
        goto fail;
    }

    /* Entry counts are bounded by the header size, itself bounded by ST_MAX_HEADER. */
    size_t count = json_object_size(r->root);
    r->e = calloc(count + 1, sizeof *r->e);
    r->by_name = calloc(count + 1, sizeof *r->by_name);
    if (!r->e || !r->by_name) {
        clad_err_set(err, CLAD_ENOMEM, "safetensors: out of memory for %zu tensors", count);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(r->root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (parse_metadata(r, val, err)) goto fail;
            continue;
        }
        if (parse_tensor(&r->e[r->n], key, val, err)) goto fail;
        r->n++;
    }

    qsort(r->e, (size_t)r->n, sizeof *r->e, cmp_offset);
    uint64_t data_len = (uint64_t)(len - 8 - (size_t)hlen);
    if (check_layout(r, data_len, err)) goto fail;
    const uint8_t *data = p + 8 + hlen;
    for (int i = 0; i < r->n; i++) {
        r->e[i].t.data = data + r->e[i].begin;
        r->by_name[i] = i;
    }
    qsort_r(r->by_name, (size_t)r->n, sizeof *r->by_name, cmp_name_index, r->e);
    return r;

fail:
    st_reader_destroy(r);
    return NULL;
}

st_reader *st_reader_open(const char *path, size_t max_bytes, clad_err *err)
{
    uint8_t *buf;
    size_t len;
    if (file_read_all(path, max_bytes, &buf, &len, err)) return NULL;
    st_reader *r = st_reader_parse(buf, len, err);
    if (!r) {
        clad_err_prefix(err, "'%s': ", path);
        free(buf);
        return NULL;
    }
    r->owned = buf;
    return r;
}

void st_reader_destroy(st_reader *r)
{
    if (!r) return;
    json_decref(r->root);
    free(r->owned);
    free(r->e);
    free(r->by_name);
    free(r->meta_key);
    free(r->meta_val);
    free(r);
}

int st_reader_count(const st_reader *r)
{
    return r->n;
}

const st_tensor *st_reader_at(const st_reader *r, int i)
{
    return i >= 0 && i < r->n ? &r->e[i].t : NULL;
}

const st_tensor *st_reader_find(const st_reader *r, const char *name)
{
    int lo = 0, hi = r->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const st_tensor *t = &r->e[r->by_name[mid]].t;
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *st_reader_meta(const st_reader *r, const char *key)
{
    for (int i = 0; i < r->n_meta; i++)
        if (strcmp(r->meta_key[i], key) == 0) return r->meta_val[i];
    return NULL;
}

int st_reader_meta_count(const st_reader *r)
{
    return r->n_meta;
}

const char *st_reader_meta_key(const st_reader *r, int i)
{
    return i >= 0 && i < r->n_meta ? r->meta_key[i] : NULL;
}
