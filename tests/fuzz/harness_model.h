/* The small base model and LoRA sources that fuzz_model_io reads adapters for and make_corpus writes
 * seed files for: an MLP 4 -> 6 -> 3, deterministic weights. */
#ifndef CLAD_TESTS_FUZZ_HARNESS_MODEL_H
#define CLAD_TESTS_FUZZ_HARNESS_MODEL_H

#include "core/model.h"

model *fuzz_model_base(void);
/* LoRA adapter i (rank 2 on every layer but the head) on base. */
adapter *fuzz_model_source(const model *base, int i);

#endif
