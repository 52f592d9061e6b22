/* Fuzzes benchmark stream spec files (bench/stream.c: stream_parse, then the --quick shrink). */
#include "tests/fuzz/fuzz.h"

#include <string.h>

#include "bench/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    static stream s; /* large: keep it off the stack */
    clad_err e = {0};
    int rc = stream_parse(&s, text, "/nonexistent", &e);
    if (rc) {
        FUZZ_CHECK_ERR(rc, e);
    } else {
        FUZZ_ASSERT(s.n_tasks >= 1 && s.n_tasks <= STREAM_MAX_TASKS);
        for (int i = 0; i < s.n_tasks; i++) FUZZ_ASSERT(stream_task_find(&s, s.tasks[i].name) == i);
        stream_make_quick(&s);
    }
    free(text);
    return 0;
}
