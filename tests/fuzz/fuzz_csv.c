/* Fuzzes the CSV dataset reader (io/csv.c); the first byte chooses labels_optional (predict uploads). */
#include "tests/fuzz/fuzz.h"

#include "io/dataset_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    bool labels_optional = data[0] & 1;
    dataset d;
    clad_err e = {0};
    int rc = dataset_parse_csv(&d, (const char *)data + 1, size - 1, labels_optional, &e);
    FUZZ_DATASET_RESULT(rc, d, e);
}
