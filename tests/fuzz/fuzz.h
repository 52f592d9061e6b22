/* Shared by the libFuzzer targets in tests/fuzz (built and run by `make fuzz`, see docs/TESTING.md).
 *
 * Each target feeds the bytes libFuzzer gives it to one parser that sees outside input and checks what
 * the parser promises: it either succeeds with a consistent result or fails with a clad error code and a
 * message, never crashes, leaks (LeakSanitizer) or hits undefined behaviour (UBSan aborts the run). */
#ifndef CLAD_TESTS_FUZZ_FUZZ_H
#define CLAD_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken promise: print it and abort, so libFuzzer saves the input as a crash. */
#define FUZZ_ASSERT(cond)                                                                      \
    do { if (!(cond)) { fprintf(stderr, "fuzz: %s:%d: %s\n", __FILE__, __LINE__, #cond); abort(); } } while (0)

/* A failure must carry a known error code and a message. */
#define FUZZ_CHECK_ERR(rc, e)                                                                  \
    do { FUZZ_ASSERT((rc) < 0 && (e).code == (rc) && (e).msg[0] != '\0'); } while (0)

/* The end of every dataset parser's target: a failure is a clean error; a success is a valid, non-empty
 * dataset (freed here). Returns 0, libFuzzer's "keep going". */
#define FUZZ_DATASET_RESULT(rc, d, e)                                                          \
    do {                                                                                       \
        if (rc) {                                                                              \
            FUZZ_CHECK_ERR(rc, e);                                                             \
            return 0;                                                                          \
        }                                                                                      \
        clad_err_clear(&(e));                                                                  \
        FUZZ_ASSERT((d).n > 0 && dataset_validate(&(d), &(e)) == 0);                           \
        dataset_finish(&(d));                                                                  \
        return 0;                                                                              \
    } while (0)

#endif
