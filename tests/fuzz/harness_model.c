/* See harness_model.h. */
#include "tests/fuzz/harness_model.h"

#include "tests/fuzz/fuzz.h"

model *fuzz_model_base(void)
{
    model_config c = {.kind = MODEL_MLP, .input_dim = 4, .n_hidden = 1, .hidden = {6}, .n_classes = 3};
    model *m = model_create(&c, NULL);
    FUZZ_ASSERT(m);
    model_init_random(m, 1);
    return m;
}

adapter *fuzz_model_source(const model *base, int i)
{
    int ranks[MODEL_MAX_LINEARS] = {0};
    for (int li = 0; li < base->n_linear - 1; li++) ranks[li] = 2; /* the head takes no rank */
    adapter *a = adapter_create(base, ranks, 4.0f, 3, NULL);
    FUZZ_ASSERT(a);
    adapter_init(a, base, 10 + (uint64_t)i);
    return a;
}
