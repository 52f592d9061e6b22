/* safetensors: reader and writer, byte-compatible with the reference implementation.
 *
 * Layout: 8-byte little-endian header length N, then N bytes of JSON (padded with spaces so N % 8 == 0),
 * then the tensor bytes, contiguous, row-major, little-endian. `__metadata__` maps strings to strings.
 *
 * The reader never trusts a size: headers over ST_MAX_HEADER bytes, offsets past the end, gaps, overlaps,
 * duplicate names, byte counts that disagree with dtype x shape, and integer overflow are refused with
 * CLAD_EINVAL (or CLAD_ETOOLARGE) and a message naming the tensor.
 */
#ifndef CLAD_IO_SAFETENSORS_H
#define CLAD_IO_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define ST_MAX_HEADER 100000000ULL
#define ST_MAX_DIMS 8

typedef enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_I16, ST_U16, ST_F16, ST_BF16, ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64,
    ST_DTYPE_COUNT
} st_dtype;

const char *st_dtype_name(st_dtype t);  /* "F32" */
size_t st_dtype_size(st_dtype t);       /* bytes per element */

typedef struct st_tensor {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;          /* product of shape (1 for a scalar) */
    const uint8_t *data;    /* points into the reader's buffer; NOT aligned in general */
    size_t nbytes;
} st_tensor;

/* ---- reading ---- */
typedef struct st_reader st_reader;

/* Parses buf (len bytes). The reader BORROWS buf: it must outlive the reader. NULL on error (err says why). */
st_reader *st_reader_parse(const void *buf, size_t len, clad_err *err);
/* Reads a whole file (refusing files over max_bytes) and parses it; the reader owns the bytes. */
st_reader *st_reader_open(const char *path, size_t max_bytes, clad_err *err);
void st_reader_destroy(st_reader *r);  /* accepts NULL */

int st_reader_count(const st_reader *r);
const st_tensor *st_reader_at(const st_reader *r, int i);              /* in file order of offsets */
const st_tensor *st_reader_find(const st_reader *r, const char *name); /* NULL if absent */
const char *st_reader_meta(const st_reader *r, const char *key);       /* NULL if absent */
int st_reader_meta_count(const st_reader *r);
const char *st_reader_meta_key(const st_reader *r, int i);

/* Converts any float or integer tensor to float32 (F16/BF16 widened exactly). out has numel floats. */
int st_tensor_to_f32(const st_tensor *t, float *out, clad_err *err);
/* Converts an integer tensor (U8..U64, I8..I64) to int, refusing values that do not fit. */
int st_tensor_to_int(const st_tensor *t, int *out, clad_err *err);
/* Finds `name`, checks it has exactly the given shape, converts to f32. Names expected vs found on error. */
int st_reader_get_f32(const st_reader *r, const char *name, int ndim, const int64_t *shape, float *out,
                      clad_err *err);

/* ---- writing ---- */
typedef struct st_writer st_writer;

st_writer *st_writer_create(void);
void st_writer_destroy(st_writer *w);  /* accepts NULL */
/* Adds a tensor; data is COPIED. Refuses duplicate names. */
int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                  const void *data, clad_err *err);
int st_writer_add_f32(st_writer *w, const char *name, int ndim, const int64_t *shape, const float *data,
                      clad_err *err);
int st_writer_meta(st_writer *w, const char *key, const char *value, clad_err *err);
/* Serialises to a malloc'd buffer the caller frees. Tensors sorted by descending dtype alignment, then
 * name, as the reference writer does. */
int st_writer_to_buffer(st_writer *w, uint8_t **out, size_t *len, clad_err *err);
/* Writes atomically: a temporary file in the same directory, fsync, rename, fsync of the directory. */
int st_writer_to_file(st_writer *w, const char *path, clad_err *err);

/* ---- additions by the io module (the declarations above are unchanged) ---- */

/* Looks up a dtype by its file name ("F32"); false for names this reader does not support. */
bool st_dtype_from_name(const char *name, st_dtype *out);
/* Widens IEEE binary16 / bfloat16 bits to float exactly (subnormals, infinities and NaN payloads kept). */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t h);

#endif
