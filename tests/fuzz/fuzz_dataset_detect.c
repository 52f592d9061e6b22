/* Fuzzes dataset format detection (dataset_parse_any: safetensors, IDX raw or gzip'd, CSV), the path
 * every uploaded training, evaluation and prediction body takes. The first byte chooses labels_optional. */
#include "tests/fuzz/fuzz.h"

#include "io/dataset_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    dataset d;
    clad_err e = {0};
    int rc = dataset_parse_any(&d, data + 1, size - 1, data[0] & 1, &e);
    FUZZ_DATASET_RESULT(rc, d, e);
}
