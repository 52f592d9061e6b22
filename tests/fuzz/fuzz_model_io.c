/* Fuzzes base model and adapter files (io/model_io.c): the first byte picks the reader.
 *   0: model_from_buffer with the config from the file (a base import)
 *   1: adapter_from_buffer for a fixed small base (a stored or uploaded adapter)
 *   2: adapter_file_sources, then adapter_fusion_from_buffer over two LoRA sources (a fusion version)
 * tests/fuzz/make_corpus.c writes the seeds for exactly this base (fuzz_model_io_base). */
#include "tests/fuzz/fuzz.h"

#include "io/model_io.h"
#include "tests/fuzz/harness_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static model *base;
    static adapter *sources[2];
    if (!base) {
        base = fuzz_model_base();
        for (int i = 0; i < 2; i++) sources[i] = fuzz_model_source(base, i);
    }
    if (size < 1) return 0;
    int mode = data[0] % 3;
    data++, size--;
    clad_err e = {0};
    if (mode == 0) {
        model *m = model_from_buffer(data, size, NULL, &e);
        if (!m) FUZZ_ASSERT(e.code < 0 && e.msg[0]);
        model_destroy(m);
    } else if (mode == 1) {
        adapter *a = adapter_from_buffer(base, data, size, &e);
        if (!a) FUZZ_ASSERT(e.code < 0 && e.msg[0]);
        adapter_destroy(a);
    } else {
        char names[FUSION_MAX_SOURCES][PARAM_NAME_MAX];
        int n = 0;
        int rc = adapter_file_sources(data, size, names, &n, &e);
        if (rc) {
            FUZZ_CHECK_ERR(rc, e);
            return 0;
        }
        FUZZ_ASSERT(n >= 0 && n <= FUSION_MAX_SOURCES);
        adapter *a = adapter_fusion_from_buffer(base, data, size, (const adapter *const *)sources, n < 2 ? n : 2, &e);
        if (!a) FUZZ_ASSERT(e.code < 0 && e.msg[0]);
        adapter_destroy(a);
    }
    return 0;
}
