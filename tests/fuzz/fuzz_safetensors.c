/* Fuzzes the safetensors reader (io/st_reader.c): header JSON, offsets, dtypes, shapes, conversions. */
#include "tests/fuzz/fuzz.h"

#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clad_err e = {0};
    st_reader *r = st_reader_parse(data, size, &e);
    if (!r) {
        FUZZ_ASSERT(e.code < 0 && e.msg[0]);
        return 0;
    }
    for (int i = 0; i < st_reader_meta_count(r); i++) {
        const char *k = st_reader_meta_key(r, i);
        FUZZ_ASSERT(k && st_reader_meta(r, k));
    }
    for (int i = 0; i < st_reader_count(r); i++) {
        const st_tensor *t = st_reader_at(r, i);
        FUZZ_ASSERT(st_reader_find(r, t->name) == t);
        FUZZ_ASSERT(t->nbytes == (size_t)t->numel * st_dtype_size(t->dtype));
        FUZZ_ASSERT(t->data >= data && t->data + t->nbytes <= data + size);
        if (t->numel > (1 << 20)) continue;
        float *f = malloc(((size_t)t->numel + 1) * sizeof *f);
        int *n = malloc(((size_t)t->numel + 1) * sizeof *n);
        clad_err ce = {0};
        int rc = st_tensor_to_f32(t, f, &ce);
        if (rc) FUZZ_CHECK_ERR(rc, ce);
        clad_err_clear(&ce);
        rc = st_tensor_to_int(t, n, &ce);
        if (rc) FUZZ_CHECK_ERR(rc, ce);
        free(f);
        free(n);
    }
    st_reader_destroy(r);
    return 0;
}
