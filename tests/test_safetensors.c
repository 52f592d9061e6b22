/* Tests of io/safetensors: every reader rule has its own malformed file, the writer is checked byte for
 * byte against files built by hand from the format description, and the reader survives every truncation
 * and thousands of corruptions of a valid file. */
#include "tests/test.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>

#include "core/rng.h"
#include "io/dataset_io.h"
#include "io/safetensors.h"

/* A file from a header text and data bytes; the header length is exactly strlen(json). */
static uint8_t *build(const char *json, const void *data, size_t dlen, size_t *len)
{
    size_t n = strlen(json);
    *len = 8 + n + dlen;
    uint8_t *b = malloc(*len ? *len : 1);
    CHECK(b != NULL);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, json, n);
    if (dlen) memcpy(b + 8 + n, data, dlen);
    return b;
}

/* Parses json+data and expects failure with `code` and a message containing `needle`. */
static void expect_reject(const char *json, const void *data, size_t dlen, int code, const char *needle)
{
    size_t len;
    uint8_t *b = build(json, data, dlen, &len);
    clad_err e = {0};
    st_reader *r = st_reader_parse(b, len, &e);
    CHECK_MSG(r == NULL, "header %s was accepted", json);
    CHECK_INT_EQ(e.code, code);
    CHECK_MSG(strstr(e.msg, needle) != NULL, "message \"%s\" lacks \"%s\"", e.msg, needle);
    free(b);
}

static st_reader *expect_accept(const char *json, const void *data, size_t dlen, uint8_t **keep)
{
    size_t len;
    *keep = build(json, data, dlen, &len);
    clad_err e = {0};
    st_reader *r = st_reader_parse(*keep, len, &e);
    CHECK_MSG(r != NULL, "header %s refused: %s", json, e.msg);
    return r;
}

static const uint8_t zeros[64];

TEST(st_dtype_table)
{
    CHECK_STR_EQ(st_dtype_name(ST_F32), "F32");
    CHECK_STR_EQ(st_dtype_name(ST_BF16), "BF16");
    CHECK_INT_EQ(st_dtype_size(ST_BOOL), 1);
    CHECK_INT_EQ(st_dtype_size(ST_F16), 2);
    CHECK_INT_EQ(st_dtype_size(ST_U32), 4);
    CHECK_INT_EQ(st_dtype_size(ST_F64), 8);
    CHECK_INT_EQ(st_dtype_size(ST_U64), 8);
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        st_dtype t;
        CHECK(st_dtype_from_name(st_dtype_name((st_dtype)i), &t));
        CHECK_INT_EQ(t, i);
    }
    st_dtype t;
    CHECK(!st_dtype_from_name("f32", &t));
    CHECK(!st_dtype_from_name("F8_E4M3", &t));
}

TEST(st_parse_basic)
{
    float a[2] = {1.5f, -2.0f};
    uint8_t data[11];
    memcpy(data, a, 8);
    data[8] = 7, data[9] = 8, data[10] = 9;
    uint8_t *keep;
    st_reader *r = expect_accept("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                 "\"b\":{\"dtype\":\"U8\",\"shape\":[1,3],\"data_offsets\":[8,11]}}",
                                 data, sizeof data, &keep);
    CHECK_INT_EQ(st_reader_count(r), 2);
    const st_tensor *ta = st_reader_find(r, "a"), *tb = st_reader_find(r, "b");
    CHECK(ta && tb);
    CHECK(st_reader_find(r, "c") == NULL);
    CHECK_INT_EQ(ta->dtype, ST_F32);
    CHECK_INT_EQ(ta->ndim, 1);
    CHECK_INT_EQ(ta->shape[0], 2);
    CHECK_INT_EQ(ta->numel, 2);
    CHECK_INT_EQ(ta->nbytes, 8);
    CHECK_INT_EQ(tb->ndim, 2);
    CHECK_INT_EQ(tb->shape[1], 3);
    CHECK(tb->data[2] == 9);
    float fa[2], fb[3];
    CHECK_INT_EQ(st_tensor_to_f32(ta, fa, NULL), 0);
    CHECK_ARRAY_NEAR(fa, a, 2, 0, 0);
    CHECK_INT_EQ(st_tensor_to_f32(tb, fb, NULL), 0);
    CHECK_NEAR(fb[0], 7, 0);
    CHECK_NEAR(fb[2], 9, 0);
    CHECK_INT_EQ(st_reader_meta_count(r), 0);
    CHECK(st_reader_meta(r, "x") == NULL);
    st_reader_destroy(r);
    st_reader_destroy(NULL);
    free(keep);
}

TEST(st_reader_orders_by_offset)
{
    /* JSON order is a, b, c; offset order is c, a, b. */
    uint8_t *keep;
    st_reader *r = expect_accept("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
                                 "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[6,7]},"
                                 "\"c\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}",
                                 zeros, 7, &keep);
    CHECK_STR_EQ(st_reader_at(r, 0)->name, "c");
    CHECK_STR_EQ(st_reader_at(r, 1)->name, "a");
    CHECK_STR_EQ(st_reader_at(r, 2)->name, "b");
    CHECK(st_reader_at(r, 3) == NULL);
    CHECK(st_reader_at(r, -1) == NULL);
    /* keep[0] is the header length (under 256 here); a's data starts 4 bytes into the data. */
    CHECK(st_reader_find(r, "a")->data == keep + 8 + keep[0] + 4);
    st_reader_destroy(r);
    free(keep);
}

TEST(st_parse_metadata)
{
    uint8_t *keep;
    st_reader *r = expect_accept("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                                 "\"__metadata__\":{\"format\":\"pt\",\"a\":\"b\"}}", zeros, 1, &keep);
    CHECK_INT_EQ(st_reader_count(r), 1);
    CHECK_INT_EQ(st_reader_meta_count(r), 2);
    CHECK_STR_EQ(st_reader_meta(r, "format"), "pt");
    CHECK_STR_EQ(st_reader_meta(r, "a"), "b");
    CHECK_STR_EQ(st_reader_meta_key(r, 0), "format");
    CHECK_STR_EQ(st_reader_meta_key(r, 1), "a");
    CHECK(st_reader_meta_key(r, 2) == NULL);
    CHECK(st_reader_find(r, "__metadata__") == NULL);
    st_reader_destroy(r);
    free(keep);
}

TEST(st_parse_empty_tensors_and_scalars)
{
    uint8_t *keep;
    float pi = 3.25f;
    st_reader *r = expect_accept("{\"e1\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
                                 "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                                 "\"e2\":{\"dtype\":\"F64\",\"shape\":[5,0],\"data_offsets\":[4,4]}}",
                                 &pi, 4, &keep);
    CHECK_INT_EQ(st_reader_count(r), 3);
    const st_tensor *s = st_reader_find(r, "s"), *e1 = st_reader_find(r, "e1");
    CHECK_INT_EQ(s->ndim, 0);
    CHECK_INT_EQ(s->numel, 1);
    float v;
    CHECK_INT_EQ(st_reader_get_f32(r, "s", 0, NULL, &v, NULL), 0);
    CHECK_NEAR(v, 3.25, 0);
    CHECK_INT_EQ(e1->numel, 0);
    CHECK_INT_EQ(e1->nbytes, 0);
    st_reader_destroy(r);
    free(keep);

    /* No tensors at all, padded as the reference writer pads. */
    r = expect_accept("{}      ", NULL, 0, &keep);
    CHECK_INT_EQ(st_reader_count(r), 0);
    st_reader_destroy(r);
    free(keep);
}

TEST(st_reject_short_file)
{
    uint8_t b[8] = {2, 0, 0, 0, 0, 0, 0, 0};
    for (size_t len = 0; len < 8; len++) {
        clad_err e = {0};
        CHECK(st_reader_parse(b, len, &e) == NULL);
        CHECK_INT_EQ(e.code, CLAD_EINVAL);
        CHECK_MSG(strstr(e.msg, "shorter than the 8-byte header length"), "%s", e.msg);
    }
}

TEST(st_reject_header_too_large)
{
    /* A header over the limit in a file that does hold that many bytes (calloc: the pages stay untouched). */
    uint64_t n = ST_MAX_HEADER + 1;
    uint8_t *big = calloc(1, (size_t)n + 8);
    CHECK(big != NULL);
    for (int i = 0; i < 8; i++) big[i] = (uint8_t)(n >> (8 * i));
    big[8] = '{';
    clad_err e = {0};
    CHECK(st_reader_parse(big, (size_t)n + 8, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_ETOOLARGE);
    CHECK_MSG(strstr(e.msg, "over the limit"), "%s", e.msg);
    free(big);
    /* A length past the end of a small file is another format (a tar's name bytes), not a large file. */
    uint8_t b[16] = {0};
    memset(b, 0xff, 8); /* 2^64 - 1 */
    clad_err_clear(&e);
    CHECK(st_reader_parse(b, sizeof b, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, "not a safetensors file?"), "%s", e.msg);
}

TEST(st_reject_header_past_end)
{
    /* Exactly the limit is not "too large" but still runs past this small file. */
    uint8_t b[16] = {0};
    uint64_t n = ST_MAX_HEADER;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(n >> (8 * i));
    b[8] = '{';
    clad_err e = {0};
    CHECK(st_reader_parse(b, sizeof b, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, "runs past the end of the file"), "%s", e.msg);
    b[0] = 9; /* 9 > 8 bytes present */
    for (int i = 1; i < 8; i++) b[i] = 0;
    clad_err_clear(&e);
    CHECK(st_reader_parse(b, sizeof b, &e) == NULL);
    CHECK_MSG(strstr(e.msg, "runs past the end of the file"), "%s", e.msg);
}

TEST(st_reject_header_not_brace)
{
    expect_reject("[1,2]", NULL, 0, CLAD_EINVAL, "does not start with '{'");
    expect_reject(" {}", NULL, 0, CLAD_EINVAL, "does not start with '{'");
    expect_reject("", NULL, 0, CLAD_EINVAL, "does not start with '{'");
}

TEST(st_reject_invalid_json)
{
    expect_reject("{\"a\":", NULL, 0, CLAD_EINVAL, "not valid JSON");
    expect_reject("{} x", NULL, 0, CLAD_EINVAL, "not valid JSON");
    expect_reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}\n\x01", zeros, 4, CLAD_EINVAL,
                  "not valid JSON");
    /* A raw NUL inside the header. */
    static const char hdr[] = "{\"a\"\0:1}";
    uint8_t b[8 + sizeof hdr - 1] = {sizeof hdr - 1};
    memcpy(b + 8, hdr, sizeof hdr - 1);
    clad_err e = {0};
    CHECK(st_reader_parse(b, sizeof b, &e) == NULL);
    CHECK_MSG(strstr(e.msg, "not valid JSON"), "%s", e.msg);
}

TEST(st_reject_deep_nesting)
{
    /* A million '[' must be refused by the parser's depth limit, not overflow the stack. */
    size_t n = 1000000;
    char *json = malloc(n + 8);
    memcpy(json, "{\"a\":", 5);
    memset(json + 5, '[', n - 5);
    json[n] = '\0';
    expect_reject(json, NULL, 0, CLAD_EINVAL, "maximum parsing depth");
    free(json);
}

TEST(st_reject_invalid_utf8)
{
    expect_reject("{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", zeros, 1, CLAD_EINVAL,
                  "not valid JSON");
}

TEST(st_reject_nul_in_name)
{
    expect_reject("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", zeros, 1, CLAD_EINVAL,
                  "not valid JSON");
}

TEST(st_reject_unknown_dtype)
{
    expect_reject("{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,1]}}", zeros, 1, CLAD_EINVAL,
                  "tensor 'w' has unknown or unsupported dtype 'Q4_K'");
    expect_reject("{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", zeros, 4, CLAD_EINVAL,
                  "unknown or unsupported dtype 'f32'");
}

TEST(st_reject_missing_dtype)
{
    expect_reject("{\"w\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,1]}}", zeros, 1, CLAD_EINVAL,
                  "tensor 'w' has no \"dtype\" string");
    expect_reject("{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", zeros, 1, CLAD_EINVAL,
                  "tensor 'w' has no \"dtype\" string");
}

TEST(st_reject_entry_not_object)
{
    expect_reject("{\"w\":[1,2]}", NULL, 0, CLAD_EINVAL, "entry 'w' is not an object");
}

TEST(st_reject_negative_dim)
{
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[2,-1],\"data_offsets\":[0,0]}}", NULL, 0, CLAD_EINVAL,
                  "bad shape for tensor 'w': dimension 1 is not a non-negative integer");
}

TEST(st_reject_non_integer_dim)
{
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[2.0],\"data_offsets\":[0,2]}}", zeros, 2, CLAD_EINVAL,
                  "bad shape for tensor 'w': dimension 0");
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[\"2\"],\"data_offsets\":[0,2]}}", zeros, 2, CLAD_EINVAL,
                  "bad shape for tensor 'w': dimension 0");
}

TEST(st_reject_shape_not_array)
{
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":2,\"data_offsets\":[0,2]}}", zeros, 2, CLAD_EINVAL,
                  "bad shape for tensor 'w': \"shape\" is missing or not an array");
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,2]}}", zeros, 2, CLAD_EINVAL,
                  "bad shape for tensor 'w'");
}

TEST(st_reject_too_many_dims)
{
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", zeros, 1,
                  CLAD_EINVAL, "9 dimensions (at most 8 supported)");
}

TEST(st_reject_offsets_not_two_integers)
{
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", zeros, 1, CLAD_EINVAL,
                  "tensor 'w': \"data_offsets\" must be an array of exactly 2 integers");
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,1]}}", zeros, 1, CLAD_EINVAL,
                  "exactly 2 integers");
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", zeros, 1, CLAD_EINVAL, "exactly 2 integers");
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1.0]}}", zeros, 1, CLAD_EINVAL,
                  "tensor 'w': \"data_offsets\" must be non-negative integers");
}

TEST(st_reject_offsets_negative)
{
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", zeros, 1, CLAD_EINVAL,
                  "tensor 'w': \"data_offsets\" must be non-negative integers");
}

TEST(st_reject_offsets_beyond_json_integers)
{
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", zeros, 1,
                  CLAD_EINVAL, "too big integer");
}

TEST(st_reject_offsets_end_before_begin)
{
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,2]}}", zeros, 4, CLAD_EINVAL,
                  "tensor 'w': data_offsets end 2 is before begin 4");
}

TEST(st_reject_size_mismatch)
{
    expect_reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", zeros, 20, CLAD_EINVAL,
                  "tensor 'w': data_offsets [0, 20) hold 20 bytes but F32 x shape [2,3] needs 24");
}

TEST(st_reject_numel_overflow)
{
    /* 2^32 * 2^32 = 2^64 overflows; the checked product must catch it rather than wrap to 0. */
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", NULL, 0,
                  CLAD_EINVAL, "tensor 'w': shape [4294967296,4294967296] has too many elements");
    /* 2^32 * 2^31 = 2^63 fits in 64 unsigned bits but not in int64. */
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,2147483648],\"data_offsets\":[0,0]}}", NULL, 0,
                  CLAD_EINVAL, "has too many elements");
    /* Overflow before a 0 dimension is still an error, as in the reference. */
    expect_reject("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]}}", NULL, 0,
                  CLAD_EINVAL, "has too many elements");
    /* 2^62 elements fit int64, but 2^62 * 4 bytes do not. */
    expect_reject("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", NULL, 0,
                  CLAD_EINVAL, "more bytes than fit in memory");
}

TEST(st_reject_gap)
{
    expect_reject("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]}}", zeros, 5, CLAD_EINVAL,
                  "gap before tensor 'b': it starts at data byte 3 but the previous tensor 'a' ends at 2");
    expect_reject("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", zeros, 3, CLAD_EINVAL,
                  "gap before tensor 'a': the first tensor starts at data byte 1 instead of 0");
}

TEST(st_reject_overlap)
{
    expect_reject("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", zeros, 4, CLAD_EINVAL,
                  "tensor 'b' at data bytes [2, 4) overlaps tensor 'a', which ends at 4");
    /* Two tensors on the same bytes. */
    expect_reject("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", zeros, 4, CLAD_EINVAL,
                  "overlaps tensor 'a'");
}

TEST(st_reject_trailing_bytes)
{
    expect_reject("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", zeros, 5, CLAD_EINVAL,
                  "3 trailing bytes after the last tensor");
    expect_reject("{}", zeros, 1, CLAD_EINVAL, "1 trailing bytes after the last tensor");
}

TEST(st_reject_truncated_data)
{
    expect_reject("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}", zeros, 9, CLAD_EINVAL,
                  "data is truncated: tensor 'b' ends at data byte 10 but the file holds only 9 bytes of data");
}

TEST(st_reject_duplicate_names)
{
    expect_reject("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", zeros, 2, CLAD_EINVAL,
                  "duplicate tensor name \"a\"");
}

TEST(st_reject_duplicate_entry_key)
{
    expect_reject("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1]}}", zeros, 1,
                  CLAD_EINVAL, "duplicate key \"dtype\" in a header entry");
}

TEST(st_reject_metadata_non_string)
{
    expect_reject("{\"__metadata__\":{\"ok\":\"yes\",\"epoch\":3}}", NULL, 0, CLAD_EINVAL,
                  "metadata value for 'epoch' is not a string");
    expect_reject("{\"__metadata__\":{\"n\":null}}", NULL, 0, CLAD_EINVAL, "metadata value for 'n'");
    expect_reject("{\"__metadata__\":{\"o\":{\"a\":\"b\"}}}", NULL, 0, CLAD_EINVAL, "metadata value for 'o'");
}

TEST(st_reject_metadata_not_object)
{
    expect_reject("{\"__metadata__\":[\"a\"]}", NULL, 0, CLAD_EINVAL, "\"__metadata__\" is not an object");
    expect_reject("{\"__metadata__\":\"pt\"}", NULL, 0, CLAD_EINVAL, "\"__metadata__\" is not an object");
}

/* ---- element conversion ---- */

static uint32_t f32_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

TEST(st_f16_known_bits)
{
    CHECK_NEAR(st_f16_to_f32(0x3c00), 1.0, 0);
    CHECK_NEAR(st_f16_to_f32(0xc000), -2.0, 0);
    CHECK_NEAR(st_f16_to_f32(0x7bff), 65504.0, 0);                 /* largest finite */
    CHECK_NEAR(st_f16_to_f32(0x0400), ldexp(1, -14), 0);            /* smallest normal */
    CHECK_NEAR(st_f16_to_f32(0x0001), ldexp(1, -24), 0);            /* smallest subnormal */
    CHECK_NEAR(st_f16_to_f32(0x03ff), ldexp(1023, -24), 0);         /* largest subnormal */
    CHECK_NEAR(st_f16_to_f32(0x8001), -ldexp(1, -24), 0);
    CHECK_NEAR(st_f16_to_f32(0x3555), 0.333251953125, 0);
    CHECK_INT_EQ(f32_bits(st_f16_to_f32(0x0000)), 0x00000000);
    CHECK_INT_EQ(f32_bits(st_f16_to_f32(0x8000)), 0x80000000);     /* -0 keeps its sign */
    CHECK_INT_EQ(f32_bits(st_f16_to_f32(0x7c00)), 0x7f800000);     /* +inf */
    CHECK_INT_EQ(f32_bits(st_f16_to_f32(0xfc00)), 0xff800000);     /* -inf */
    CHECK_INT_EQ(f32_bits(st_f16_to_f32(0x7e00)), 0x7fc00000);     /* quiet NaN */
    CHECK_INT_EQ(f32_bits(st_f16_to_f32(0x7c01)), 0x7f802000);     /* NaN payload kept */
    CHECK(isnan(st_f16_to_f32(0xfe00)));

    /* Every finite half against the definition, exactly: (-1)^s * 2^(e-15) * (1 + m/1024), or m * 2^-24. */
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t e = (h >> 10) & 31, m = h & 1023;
        if (e == 31) continue;
        double v = e == 0 ? ldexp((double)m, -24) : ldexp((double)(1024 + m), (int)e - 25);
        if (h & 0x8000) v = -v;
        float f = st_f16_to_f32((uint16_t)h);
        CHECK_MSG((double)f == v, "half 0x%04x -> %.9g, expected %.9g", h, (double)f, v);
    }
}

TEST(st_bf16_known_bits)
{
    CHECK_NEAR(st_bf16_to_f32(0x3f80), 1.0, 0);
    CHECK_NEAR(st_bf16_to_f32(0xc000), -2.0, 0);
    CHECK_NEAR(st_bf16_to_f32(0x4049), 3.140625, 0);
    CHECK_NEAR(st_bf16_to_f32(0x0001), ldexp(1, -133), 0);         /* subnormal */
    CHECK_INT_EQ(f32_bits(st_bf16_to_f32(0x7f80)), 0x7f800000);
    CHECK_INT_EQ(f32_bits(st_bf16_to_f32(0xff80)), 0xff800000);
    CHECK_INT_EQ(f32_bits(st_bf16_to_f32(0x7fc1)), 0x7fc10000);
    CHECK_INT_EQ(f32_bits(st_bf16_to_f32(0x8000)), 0x80000000);
    for (uint32_t h = 0; h < 65536; h++)
        CHECK_INT_EQ(f32_bits(st_bf16_to_f32((uint16_t)h)), h << 16);
}

/* A one-tensor file of `dtype` with the given raw little-endian bytes. */
static st_reader *one_tensor(st_dtype dt, const void *bytes, int n, uint8_t **keep)
{
    char json[200];
    size_t sz = st_dtype_size(dt);
    snprintf(json, sizeof json, "{\"t\":{\"dtype\":\"%s\",\"shape\":[%d],\"data_offsets\":[0,%zu]}}",
             st_dtype_name(dt), n, sz * (size_t)n);
    return expect_accept(json, bytes, sz * (size_t)n, keep);
}

TEST(st_to_f32_every_dtype)
{
    static const struct {
        st_dtype dt;
        uint8_t bytes[16];
        float want[2];
    } cases[] = {
        {ST_BOOL, {0, 1}, {0, 1}},
        {ST_U8, {0, 255}, {0, 255}},
        {ST_I8, {0x80, 0x7f}, {-128, 127}},
        {ST_I16, {0x00, 0x80, 0xff, 0x7f}, {-32768, 32767}},
        {ST_U16, {0xff, 0xff, 0x02, 0x01}, {65535, 258}},
        {ST_F16, {0x00, 0x3c, 0x00, 0xc0}, {1, -2}},
        {ST_BF16, {0x80, 0x3f, 0x49, 0x40}, {1, 3.140625f}},
        {ST_I32, {0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03, 0x04}, {-1, 67305985}},
        {ST_U32, {0xff, 0xff, 0xff, 0xff, 7, 0, 0, 0}, {4294967295.0f, 7}},
        {ST_F32, {0, 0, 0xc0, 0x3f, 0, 0, 0x20, 0xc1}, {1.5f, -10}},
        {ST_F64, {0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0, 0, 0, 0, 0, 0, 0x24, 0xc0}, {1.5f, -10}},
        {ST_I64, {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 5}, {-2, 5}},
        {ST_U64, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 5}, {18446744073709551615.0f, 5}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        uint8_t *keep;
        st_reader *r = one_tensor(cases[c].dt, cases[c].bytes, 2, &keep);
        float got[2];
        CHECK_INT_EQ(st_tensor_to_f32(st_reader_at(r, 0), got, NULL), 0);
        CHECK_MSG(got[0] == cases[c].want[0] && got[1] == cases[c].want[1], "%s: got %g %g want %g %g",
                  st_dtype_name(cases[c].dt), (double)got[0], (double)got[1], (double)cases[c].want[0],
                  (double)cases[c].want[1]);
        st_reader_destroy(r);
        free(keep);
    }
}

TEST(st_to_int_checks_range)
{
    uint8_t *keep;
    uint8_t i64[16] = {0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 9}; /* -5, 9 */
    st_reader *r = one_tensor(ST_I64, i64, 2, &keep);
    int v[2];
    CHECK_INT_EQ(st_tensor_to_int(st_reader_at(r, 0), v, NULL), 0);
    CHECK_INT_EQ(v[0], -5);
    CHECK_INT_EQ(v[1], 9);
    st_reader_destroy(r);
    free(keep);

    uint8_t big[16] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0}; /* 1, 2^31 */
    r = one_tensor(ST_U64, big, 2, &keep);
    clad_err e = {0};
    CHECK_INT_EQ(st_tensor_to_int(st_reader_at(r, 0), v, &e), CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, "element 1 (2147483648) does not fit an int"), "%s", e.msg);
    st_reader_destroy(r);
    free(keep);

    uint8_t f32[4] = {0, 0, 0x80, 0x3f};
    r = one_tensor(ST_F32, f32, 1, &keep);
    clad_err_clear(&e);
    CHECK_INT_EQ(st_tensor_to_int(st_reader_at(r, 0), v, &e), CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, "dtype F32; integers are expected"), "%s", e.msg);
    st_reader_destroy(r);
    free(keep);
}

TEST(st_get_f32_checks_shape)
{
    uint8_t *keep;
    st_reader *r = expect_accept("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", zeros, 24,
                                 &keep);
    float out[6];
    int64_t good[2] = {2, 3}, bad[2] = {3, 2};
    CHECK_INT_EQ(st_reader_get_f32(r, "w", 2, good, out, NULL), 0);
    clad_err e = {0};
    CHECK_INT_EQ(st_reader_get_f32(r, "w", 2, bad, out, &e), CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, "tensor 'w' has shape [2,3], expected [3,2]"), "%s", e.msg);
    clad_err_clear(&e);
    CHECK_INT_EQ(st_reader_get_f32(r, "w", 1, good, out, &e), CLAD_EINVAL);
    clad_err_clear(&e);
    CHECK_INT_EQ(st_reader_get_f32(r, "v", 2, good, out, &e), CLAD_ENOTFOUND);
    CHECK_MSG(strstr(e.msg, "no tensor named 'v'"), "%s", e.msg);
    st_reader_destroy(r);
    free(keep);
}

/* ---- writer ---- */

/* The expected file for header text `json`: length, json, spaces to a multiple of 8, then data. */
static uint8_t *expected_file(const char *json, const void *data, size_t dlen, size_t *len)
{
    size_t n = strlen(json), padded = (n + 7) / 8 * 8;
    *len = 8 + padded + dlen;
    uint8_t *b = malloc(*len);
    CHECK(b != NULL);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(padded >> (8 * i));
    memcpy(b + 8, json, n);
    memset(b + 8 + n, ' ', padded - n);
    if (dlen) memcpy(b + 8 + padded, data, dlen);
    return b;
}

static void check_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len)
{
    CHECK_INT_EQ(got_len, want_len);
    for (size_t i = 0; i < want_len; i++)
        CHECK_MSG(got[i] == want[i], "byte %zu: 0x%02x != 0x%02x ('%c' vs '%c')", i, got[i], want[i],
                  got[i] >= 32 && got[i] < 127 ? got[i] : '.', want[i] >= 32 && want[i] < 127 ? want[i] : '.');
}

TEST(st_writer_matches_reference_bytes)
{
    st_writer *w = st_writer_create();
    float t[2] = {1.0f, 2.0f};
    int64_t shape[1] = {2};
    CHECK_INT_EQ(st_writer_add_f32(w, "t", 1, shape, t, NULL), 0);
    CHECK_INT_EQ(st_writer_meta(w, "k", "v", NULL), 0);
    uint8_t *buf;
    size_t len;
    CHECK_INT_EQ(st_writer_to_buffer(w, &buf, &len, NULL), 0);

    /* Built by hand: 79 bytes of JSON, 1 space to 80, then 1.0f and 2.0f little-endian. */
    static const char json[] = "{\"__metadata__\":{\"k\":\"v\"},\"t\":{\"dtype\":\"F32\",\"shape\":[2],"
                               "\"data_offsets\":[0,8]}}";
    CHECK_INT_EQ(strlen(json), 79);
    uint8_t want[8 + 80 + 8] = {80, 0, 0, 0, 0, 0, 0, 0};
    memcpy(want + 8, json, 79);
    want[8 + 79] = ' ';
    static const uint8_t data[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40};
    memcpy(want + 88, data, 8);
    check_bytes(buf, len, want, sizeof want);
    free(buf);
    st_writer_destroy(w);
}

TEST(st_writer_matches_reference_test_vectors)
{
    /* Cases from the reference implementation's own tests: no tensors; metadata only; one F32 [1,1,2,3]. */
    st_writer *w = st_writer_create();
    uint8_t *buf;
    size_t len;
    CHECK_INT_EQ(st_writer_to_buffer(w, &buf, &len, NULL), 0);
    static const uint8_t empty[] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    check_bytes(buf, len, empty, sizeof empty);
    free(buf);

    CHECK_INT_EQ(st_writer_meta(w, "framework", "pt", NULL), 0);
    CHECK_INT_EQ(st_writer_to_buffer(w, &buf, &len, NULL), 0);
    size_t wl;
    uint8_t *want = expected_file("{\"__metadata__\":{\"framework\":\"pt\"}}", NULL, 0, &wl);
    CHECK_INT_EQ(want[0], 40);
    check_bytes(buf, len, want, wl);
    free(buf);
    free(want);
    st_writer_destroy(w);

    w = st_writer_create();
    float v[6] = {0, 1, 2, 3, 4, 5};
    int64_t shape[4] = {1, 1, 2, 3};
    CHECK_INT_EQ(st_writer_add_f32(w, "attn0", 4, shape, v, NULL), 0);
    CHECK_INT_EQ(st_writer_to_buffer(w, &buf, &len, NULL), 0);
    want = expected_file("{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}", v,
                         sizeof v, &wl);
    CHECK_INT_EQ(want[0], 72);
    check_bytes(buf, len, want, wl);
    free(buf);
    free(want);
    st_writer_destroy(w);
}

TEST(st_writer_header_is_padded_and_aligned)
{
    /* Names of every length 1..16 shift the JSON length through all residues mod 8. */
    for (int k = 1; k <= 16; k++) {
        st_writer *w = st_writer_create();
        char name[32];
        memset(name, 'n', (size_t)k);
        name[k] = '\0';
        double d = 1.25;
        int64_t shape[1] = {1};
        CHECK_INT_EQ(st_writer_add(w, name, ST_F64, 1, shape, &d, NULL), 0);
        uint8_t *buf;
        size_t len;
        CHECK_INT_EQ(st_writer_to_buffer(w, &buf, &len, NULL), 0);
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
        CHECK_INT_EQ(n % 8, 0);
        CHECK_INT_EQ((8 + n) % 8, 0);
        CHECK(buf[8] == '{');
        CHECK_INT_EQ(len, 8 + n + 8);
        /* The JSON ends with '}' and only spaces follow it. */
        size_t end = 8 + (size_t)n;
        while (buf[end - 1] == ' ') end--;
        CHECK(buf[end - 1] == '}');
        CHECK((8 + n) - (end - 8) < 8 + 8);
        st_reader *r = st_reader_parse(buf, len, NULL);
        CHECK(r != NULL);
        double back;
        memcpy(&back, st_reader_find(r, name)->data, 8);
        CHECK_NEAR(back, 1.25, 0);
        st_reader_destroy(r);
        free(buf);
        st_writer_destroy(w);
    }
}

TEST(st_writer_orders_by_dtype_then_name)
{
    st_writer *w = st_writer_create();
    uint8_t z[64] = {0};
    int64_t one[1] = {1};
    CHECK_INT_EQ(st_writer_add(w, "a", ST_U8, 1, one, z, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "z", ST_F64, 1, one, z, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "m", ST_F32, 1, one, z, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "b", ST_F32, 1, one, z, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "c", ST_I64, 1, one, z, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "d", ST_U64, 1, one, z, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "h", ST_F16, 1, one, z, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "B", ST_F32, 1, one, z, NULL), 0);
    uint8_t *buf;
    size_t len;
    CHECK_INT_EQ(st_writer_to_buffer(w, &buf, &len, NULL), 0);
    st_reader *r = st_reader_parse(buf, len, NULL);
    CHECK(r != NULL);
    static const char *const want[] = {"d", "c", "z", "B", "b", "m", "h", "a"};
    CHECK_INT_EQ(st_reader_count(r), 8);
    for (int i = 0; i < 8; i++) CHECK_STR_EQ(st_reader_at(r, i)->name, want[i]);
    /* Every tensor starts aligned to its element size in the file. */
    for (int i = 0; i < 8; i++) {
        const st_tensor *t = st_reader_at(r, i);
        CHECK_INT_EQ((size_t)(t->data - buf) % st_dtype_size(t->dtype), 0);
    }
    st_reader_destroy(r);
    free(buf);
    st_writer_destroy(w);
}

TEST(st_writer_roundtrip)
{
    rng g;
    rng_init(&g, 7);
    st_writer *w = st_writer_create();
    uint8_t raw[ST_DTYPE_COUNT][96];
    int64_t shapes[ST_DTYPE_COUNT][3];
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        size_t sz = st_dtype_size((st_dtype)d);
        shapes[d][0] = 2;
        shapes[d][1] = 1 + d % 3;
        shapes[d][2] = 2;
        size_t nbytes = (size_t)(shapes[d][0] * shapes[d][1] * shapes[d][2]) * sz;
        CHECK(nbytes <= sizeof raw[d]);
        for (size_t i = 0; i < nbytes; i++) raw[d][i] = (uint8_t)rng_next(&g);
        char name[32];
        snprintf(name, sizeof name, "layer.%d.%s", d, st_dtype_name((st_dtype)d));
        CHECK_INT_EQ(st_writer_add(w, name, (st_dtype)d, 3, shapes[d], raw[d], NULL), 0);
    }
    float f[5] = {0.5f, -1e-30f, 3e30f, 0, -7};
    int64_t fs[1] = {5};
    CHECK_INT_EQ(st_writer_add_f32(w, "floats", 1, fs, f, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "empty", ST_F32, 2, (int64_t[]){0, 4}, NULL, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "scalar", ST_I32, 0, NULL, &(int32_t){-3}, NULL), 0);
    CHECK_INT_EQ(st_writer_meta(w, "format", "pt", NULL), 0);
    CHECK_INT_EQ(st_writer_meta(w, "note", "caf\xc3\xa9 \"quoted\" \\ \n", NULL), 0);
    uint8_t *buf;
    size_t len;
    CHECK_INT_EQ(st_writer_to_buffer(w, &buf, &len, NULL), 0);
    clad_err e = {0};
    st_reader *r = st_reader_parse(buf, len, &e);
    CHECK_MSG(r != NULL, "%s", e.msg);
    CHECK_INT_EQ(st_reader_count(r), ST_DTYPE_COUNT + 3);
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        char name[32];
        snprintf(name, sizeof name, "layer.%d.%s", d, st_dtype_name((st_dtype)d));
        const st_tensor *t = st_reader_find(r, name);
        CHECK_MSG(t != NULL, "%s missing", name);
        CHECK_INT_EQ(t->dtype, d);
        CHECK_INT_EQ(t->ndim, 3);
        for (int i = 0; i < 3; i++) CHECK_INT_EQ(t->shape[i], shapes[d][i]);
        CHECK(memcmp(t->data, raw[d], t->nbytes) == 0);
    }
    float back[5];
    CHECK_INT_EQ(st_reader_get_f32(r, "floats", 1, fs, back, NULL), 0);
    CHECK_ARRAY_NEAR(back, f, 5, 0, 0);
    CHECK_INT_EQ(st_reader_find(r, "empty")->numel, 0);
    int sc;
    CHECK_INT_EQ(st_tensor_to_int(st_reader_find(r, "scalar"), &sc, NULL), 0);
    CHECK_INT_EQ(sc, -3);
    CHECK_STR_EQ(st_reader_meta(r, "format"), "pt");
    CHECK_STR_EQ(st_reader_meta(r, "note"), "caf\xc3\xa9 \"quoted\" \\ \n");
    st_reader_destroy(r);

    /* Writing what was read gives the same bytes again. */
    r = st_reader_parse(buf, len, NULL);
    st_writer *w2 = st_writer_create();
    for (int i = 0; i < st_reader_count(r); i++) {
        const st_tensor *t = st_reader_at(r, i);
        CHECK_INT_EQ(st_writer_add(w2, t->name, t->dtype, t->ndim, t->shape, t->data, NULL), 0);
    }
    for (int i = 0; i < st_reader_meta_count(r); i++)
        CHECK_INT_EQ(st_writer_meta(w2, st_reader_meta_key(r, i), st_reader_meta(r, st_reader_meta_key(r, i)), NULL),
                     0);
    uint8_t *buf2;
    size_t len2;
    CHECK_INT_EQ(st_writer_to_buffer(w2, &buf2, &len2, NULL), 0);
    check_bytes(buf2, len2, buf, len);
    free(buf2);
    st_writer_destroy(w2);
    st_reader_destroy(r);
    free(buf);
    st_writer_destroy(w);
}

TEST(st_writer_refuses_bad_tensors)
{
    st_writer *w = st_writer_create();
    float v[4] = {0};
    int64_t s1[1] = {4}, neg[1] = {-1}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    clad_err e = {0};
    CHECK_INT_EQ(st_writer_add_f32(w, "w", 1, s1, v, NULL), 0);
    CHECK_INT_EQ(st_writer_add_f32(w, "w", 1, s1, v, &e), CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, "duplicate tensor name 'w'"), "%s", e.msg);
    clad_err_clear(&e);
    CHECK_INT_EQ(st_writer_add_f32(w, "__metadata__", 1, s1, v, &e), CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, "reserved"), "%s", e.msg);
    clad_err_clear(&e);
    CHECK_INT_EQ(st_writer_add_f32(w, "n", 1, neg, v, &e), CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, "dimension 0 is negative"), "%s", e.msg);
    clad_err_clear(&e);
    CHECK_INT_EQ(st_writer_add_f32(w, "d9", 9, s9, v, &e), CLAD_EINVAL);
    clad_err_clear(&e);
    CHECK_INT_EQ(st_writer_add_f32(w, "bad\xff", 1, s1, v, &e), CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, "UTF-8"), "%s", e.msg);
    clad_err_clear(&e);
    CHECK_INT_EQ(st_writer_add_f32(w, "nodata", 1, s1, NULL, &e), CLAD_EINVAL);
    clad_err_clear(&e);
    CHECK_INT_EQ(st_writer_meta(w, "k", "\xc3", &e), CLAD_EINVAL);
    /* Only the first tensor made it in. */
    uint8_t *buf;
    size_t len;
    CHECK_INT_EQ(st_writer_to_buffer(w, &buf, &len, NULL), 0);
    st_reader *r = st_reader_parse(buf, len, NULL);
    CHECK_INT_EQ(st_reader_count(r), 1);
    CHECK_INT_EQ(st_reader_meta_count(r), 0);
    st_reader_destroy(r);
    free(buf);
    st_writer_destroy(w);
    st_writer_destroy(NULL);
}

TEST(st_writer_meta_replaces_value)
{
    st_writer *w = st_writer_create();
    CHECK_INT_EQ(st_writer_meta(w, "b", "1", NULL), 0);
    CHECK_INT_EQ(st_writer_meta(w, "a", "2", NULL), 0);
    CHECK_INT_EQ(st_writer_meta(w, "b", "3", NULL), 0);
    uint8_t *buf;
    size_t len;
    CHECK_INT_EQ(st_writer_to_buffer(w, &buf, &len, NULL), 0);
    size_t wl;
    uint8_t *want = expected_file("{\"__metadata__\":{\"a\":\"2\",\"b\":\"3\"}}", NULL, 0, &wl);
    check_bytes(buf, len, want, wl);
    free(want);
    free(buf);
    st_writer_destroy(w);
}

/* Names in dir other than . and .. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

TEST(st_writer_to_file_is_atomic_replace)
{
    char path[512];
    snprintf(path, sizeof path, "%s/adapter.safetensors", test_tmpdir());
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    fputs("old contents", f);
    fclose(f);

    st_writer *w = st_writer_create();
    float v[3] = {1, 2, 3};
    int64_t s[1] = {3};
    CHECK_INT_EQ(st_writer_add_f32(w, "w", 1, s, v, NULL), 0);
    CHECK_INT_EQ(st_writer_to_file(w, path, NULL), 0);
    uint8_t *want, *got;
    size_t wl, gl;
    CHECK_INT_EQ(st_writer_to_buffer(w, &want, &wl, NULL), 0);
    CHECK_INT_EQ(file_read_all(path, 1 << 20, &got, &gl, NULL), 0);
    check_bytes(got, gl, want, wl);
    CHECK_INT_EQ(count_entries(test_tmpdir()), 1); /* no temporary file left behind */
    struct stat st;
    CHECK_INT_EQ(stat(path, &st), 0);
    CHECK_INT_EQ(st.st_mode & 0777, 0644);
    clad_err e = {0};
    st_reader *r = st_reader_open(path, 1 << 20, &e);
    CHECK_MSG(r != NULL, "%s", e.msg);
    float back[3];
    CHECK_INT_EQ(st_reader_get_f32(r, "w", 1, s, back, NULL), 0);
    CHECK_ARRAY_NEAR(back, v, 3, 0, 0);
    st_reader_destroy(r);
    free(want);
    free(got);
    st_writer_destroy(w);
}

TEST(st_writer_to_file_reports_missing_dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/no/such/dir/a.safetensors", test_tmpdir());
    st_writer *w = st_writer_create();
    clad_err e = {0};
    CHECK_INT_EQ(st_writer_to_file(w, path, &e), CLAD_EIO);
    CHECK_MSG(strstr(e.msg, path) != NULL, "%s", e.msg);
    CHECK_INT_EQ(count_entries(test_tmpdir()), 0);
    st_writer_destroy(w);
}

TEST(st_reader_open_checks_file)
{
    char path[512];
    snprintf(path, sizeof path, "%s/a.safetensors", test_tmpdir());
    clad_err e = {0};
    CHECK(st_reader_open(path, 1 << 20, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_ENOTFOUND);
    st_writer *w = st_writer_create();
    float v[64] = {0};
    int64_t s[1] = {64};
    CHECK_INT_EQ(st_writer_add_f32(w, "w", 1, s, v, NULL), 0);
    CHECK_INT_EQ(st_writer_to_file(w, path, NULL), 0);
    clad_err_clear(&e);
    CHECK(st_reader_open(path, 100, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_ETOOLARGE);
    /* A malformed file names the path in the error. */
    FILE *f = fopen(path, "wb");
    fputs("12345678{}", f);
    fclose(f);
    clad_err_clear(&e);
    CHECK(st_reader_open(path, 1 << 20, &e) == NULL);
    CHECK_MSG(strstr(e.msg, path) && strstr(e.msg, "header length"), "%s", e.msg);
    st_writer_destroy(w);
}

/* ---- robustness ---- */

/* Parses a private, exactly-sized copy (so the sanitizer sees any read past the end) and, if it is
 * accepted, touches every tensor. Returns whether it was accepted. */
static bool parse_and_touch(const uint8_t *src, size_t len)
{
    uint8_t *b = malloc(len ? len : 1);
    CHECK(b != NULL);
    if (len) memcpy(b, src, len);
    clad_err e = {0};
    st_reader *r = st_reader_parse(b, len, &e);
    if (!r) {
        CHECK(e.code != 0 && e.msg[0] != '\0');
        free(b);
        return false;
    }
    for (int i = 0; i < st_reader_count(r); i++) {
        const st_tensor *t = st_reader_at(r, i);
        CHECK(t->data >= b + 8 && t->data + t->nbytes <= b + len);
        CHECK(t->nbytes == (size_t)t->numel * st_dtype_size(t->dtype));
        CHECK(st_reader_find(r, t->name) == t);
        float *f = malloc((size_t)t->numel * sizeof *f + 1);
        CHECK(f != NULL);
        CHECK_INT_EQ(st_tensor_to_f32(t, f, NULL), 0);
        free(f);
    }
    for (int i = 0; i < st_reader_meta_count(r); i++) CHECK(st_reader_meta(r, st_reader_meta_key(r, i)) != NULL);
    st_reader_destroy(r);
    free(b);
    return true;
}

TEST(st_fuzz_truncations_and_corruptions)
{
    st_writer *w = st_writer_create();
    float f[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {0x3c00, 0x7c00, 0x0001};
    uint8_t u[5] = {1, 2, 3, 4, 5};
    int64_t l[2] = {-1, 1};
    CHECK_INT_EQ(st_writer_add_f32(w, "base.lora_A.weight", 2, (int64_t[]){2, 3}, f, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "h", ST_F16, 1, (int64_t[]){3}, h, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "u", ST_U8, 2, (int64_t[]){5, 1}, u, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "l", ST_I64, 1, (int64_t[]){2}, l, NULL), 0);
    CHECK_INT_EQ(st_writer_add(w, "e", ST_BF16, 2, (int64_t[]){0, 7}, NULL, NULL), 0);
    CHECK_INT_EQ(st_writer_meta(w, "format", "pt", NULL), 0);
    uint8_t *buf;
    size_t len;
    CHECK_INT_EQ(st_writer_to_buffer(w, &buf, &len, NULL), 0);
    CHECK(parse_and_touch(buf, len));

    /* No proper prefix of a valid file is valid: the last tensor must end exactly at the end. */
    for (size_t n = 0; n < len; n++) CHECK_MSG(!parse_and_touch(buf, n), "prefix of %zu bytes accepted", n);

    rng g;
    rng_init(&g, 12345);
    uint8_t *mut = malloc(len);
    int accepted = 0;
    for (int k = 0; k < 6000; k++) {
        memcpy(mut, buf, len);
        size_t pos = rng_below(&g, (uint32_t)len);
        /* Half the time a random byte; otherwise a byte that keeps JSON plausible. */
        static const char plausible[] = "0123456789{}[]\",:-. eE";
        mut[pos] = (k & 1) ? (uint8_t)rng_next(&g) : (uint8_t)plausible[rng_below(&g, sizeof plausible - 1)];
        accepted += parse_and_touch(mut, len);
    }
    /* Corruptions of tensor bytes and padding are still valid files, so some must be accepted. */
    CHECK(accepted > 0);
    printf("# %d of 6000 corrupted files accepted\n", accepted);
    free(mut);
    free(buf);
    st_writer_destroy(w);
}
