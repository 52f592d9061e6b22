/* safetensors dtypes and element conversion (to float32 and to int). The reader is in st_reader.c, the
 * writer in st_writer.c. Elements are little-endian in the file whatever the host order is. */
#include "io/safetensors.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "io/st_internal.h"

/* In the reference implementation's order (increasing alignment); the writer sorts by it. */
static const struct {
    const char *name;
    size_t size;
} dtype_info[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},     [ST_I16] = {"I16", 2},
    [ST_U16] = {"U16", 2},   [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_I32] = {"I32", 4},
    [ST_U32] = {"U32", 4},   [ST_F32] = {"F32", 4}, [ST_F64] = {"F64", 8},   [ST_I64] = {"I64", 8},
    [ST_U64] = {"U64", 8},
};

const char *st_dtype_name(st_dtype t)
{
    return (unsigned)t < ST_DTYPE_COUNT ? dtype_info[t].name : "?";
}

size_t st_dtype_size(st_dtype t)
{
    return (unsigned)t < ST_DTYPE_COUNT ? dtype_info[t].size : 0;
}

bool st_dtype_from_name(const char *name, st_dtype *out)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (st_dtype)i;
            return true;
        }
    return false;
}

static float bits_to_f32(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | mant << 13);  /* inf, NaN (payload kept) */
    if (exp == 0) {
        if (mant == 0) return bits_to_f32(sign);                             /* +-0 */
        /* Subnormal: mant * 2^-24. Shift the leading 1 up to the implicit-bit position; every f16
         * subnormal is a normal f32, so this is exact. */
        int shift = 0;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            shift++;
        }
        return bits_to_f32(sign | (uint32_t)(127 - 15 + 1 - shift) << 23 | (mant & 0x3ffu) << 13);
    }
    return bits_to_f32(sign | (exp + 127 - 15) << 23 | mant << 13);
}

float st_bf16_to_f32(uint16_t h)
{
    return bits_to_f32((uint32_t)h << 16);
}

int st_tensor_to_f32(const st_tensor *t, float *out, clad_err *err)
{
    const uint8_t *p = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case ST_BOOL:
        for (size_t i = 0; i < n; i++) out[i] = p[i] ? 1.0f : 0.0f;
        break;
    case ST_U8:
        for (size_t i = 0; i < n; i++) out[i] = (float)p[i];
        break;
    case ST_I8:
        for (size_t i = 0; i < n; i++) out[i] = (float)(int8_t)p[i];
        break;
    case ST_I16:
        for (size_t i = 0; i < n; i++) out[i] = (float)(int16_t)st_load_u16(p + 2 * i);
        break;
    case ST_U16:
        for (size_t i = 0; i < n; i++) out[i] = (float)st_load_u16(p + 2 * i);
        break;
    case ST_F16:
        for (size_t i = 0; i < n; i++) out[i] = st_f16_to_f32(st_load_u16(p + 2 * i));
        break;
    case ST_BF16:
        for (size_t i = 0; i < n; i++) out[i] = st_bf16_to_f32(st_load_u16(p + 2 * i));
        break;
    case ST_I32:
        for (size_t i = 0; i < n; i++) out[i] = (float)(int32_t)st_load_u32(p + 4 * i);
        break;
    case ST_U32:
        for (size_t i = 0; i < n; i++) out[i] = (float)st_load_u32(p + 4 * i);
        break;
    case ST_F32:
        for (size_t i = 0; i < n; i++) out[i] = bits_to_f32(st_load_u32(p + 4 * i));
        break;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            uint64_t b = st_load_u64(p + 8 * i);
            double d;
            memcpy(&d, &b, sizeof d);
            out[i] = (float)d;
        }
        break;
    case ST_I64:
        for (size_t i = 0; i < n; i++) out[i] = (float)(int64_t)st_load_u64(p + 8 * i);
        break;
    case ST_U64:
        for (size_t i = 0; i < n; i++) out[i] = (float)st_load_u64(p + 8 * i);
        break;
    default:
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' has an unknown dtype", t->name);
    }
    return 0;
}

int st_tensor_to_int(const st_tensor *t, int *out, clad_err *err)
{
    const uint8_t *p = t->data;
    size_t n = (size_t)t->numel;
    for (size_t i = 0; i < n; i++) {
        long long v;
        unsigned long long u = 0;
        bool is_unsigned = false;
        switch (t->dtype) {
        case ST_BOOL: v = p[i] ? 1 : 0; break;
        case ST_U8: v = p[i]; break;
        case ST_I8: v = (int8_t)p[i]; break;
        case ST_I16: v = (int16_t)st_load_u16(p + 2 * i); break;
        case ST_U16: v = st_load_u16(p + 2 * i); break;
        case ST_I32: v = (int32_t)st_load_u32(p + 4 * i); break;
        case ST_U32: v = st_load_u32(p + 4 * i); break;
        case ST_I64: v = (int64_t)st_load_u64(p + 8 * i); break;
        case ST_U64:
            u = st_load_u64(p + 8 * i);
            is_unsigned = true;
            v = u > (unsigned long long)INT_MAX ? LLONG_MAX : (long long)u;
            break;
        default:
            return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' has dtype %s; integers are expected",
                                t->name, st_dtype_name(t->dtype));
        }
        if (v < INT_MIN || v > INT_MAX) {
            if (is_unsigned)
                return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' element %zu (%llu) does not fit an int",
                                    t->name, i, u);
            return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' element %zu (%lld) does not fit an int",
                                t->name, i, v);
        }
        out[i] = (int)v;
    }
    return 0;
}

int st_reader_get_f32(const st_reader *r, const char *name, int ndim, const int64_t *shape, float *out,
                      clad_err *err)
{
    const st_tensor *t = st_reader_find(r, name);
    if (!t) return clad_err_set(err, CLAD_ENOTFOUND, "safetensors: no tensor named '%s'", name);
    char want[160], got[160];
    st_shape_format(want, sizeof want, ndim, shape);
    st_shape_format(got, sizeof got, t->ndim, t->shape);
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same)
        return clad_err_set(err, CLAD_EINVAL, "safetensors: tensor '%s' has shape %s, expected %s", name, got, want);
    return st_tensor_to_f32(t, out, err);
}

void st_shape_format(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t at = 0;
    int w = snprintf(buf, size, "[");
    if (w > 0) at = (size_t)w;
    for (int i = 0; i < ndim && at < size; i++) {
        w = snprintf(buf + at, size - at, "%s%lld", i ? "," : "", (long long)shape[i]);
        if (w > 0) at += (size_t)w;
    }
    if (at < size) snprintf(buf + at, size - at, "]");
}
