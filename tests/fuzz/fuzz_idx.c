/* Fuzzes the IDX reader (io/idx.c), raw and gzip'd: the first two bytes say where the images end and the
 * labels begin (0xffff: no labels), so one input covers both files and their combinations. */
#include "tests/fuzz/fuzz.h"

#include "io/dataset_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    size_t split = (size_t)data[0] << 8 | data[1];
    data += 2, size -= 2;
    const uint8_t *labels = NULL;
    size_t labels_len = 0, images_len = size;
    if (split != 0xffff) {
        images_len = split < size ? split : size;
        labels = data + images_len;
        labels_len = size - images_len;
    }
    dataset d;
    clad_err e = {0};
    int rc = dataset_parse_idx(&d, data, images_len, labels, labels_len, &e);
    FUZZ_DATASET_RESULT(rc, d, e);
}
