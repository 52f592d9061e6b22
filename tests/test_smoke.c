/* Tests of the small shared pieces: error codes, datasets (the RNG is in test_rng.c). */
#include "tests/test.h"

#include "core/dataset.h"
#include "core/error.h"

TEST(error_codes_are_stable)
{
    CHECK_STR_EQ(clad_code_name(CLAD_EINVAL), "invalid_input");
    CHECK_STR_EQ(clad_code_name(CLAD_ENOTFOUND), "not_found");
    clad_err e = {0};
    CHECK_INT_EQ(clad_err_set(&e, CLAD_EIO, "first %d", 1), CLAD_EIO);
    clad_err_set(&e, CLAD_EINVAL, "second");
    CHECK_STR_EQ(e.msg, "first 1");
    CHECK_INT_EQ(e.code, CLAD_EIO);
    clad_err_prefix(&e, "ctx: ");
    CHECK_STR_EQ(e.msg, "ctx: first 1");
}

TEST(dataset_validate_names_bad_sample)
{
    dataset d;
    int shape[1] = {3};
    CHECK_INT_EQ(dataset_init(&d, 4, 1, shape, NULL), 0);
    d.y[2] = 5;
    d.n_classes = 3;
    clad_err e = {0};
    CHECK_INT_EQ(dataset_validate(&d, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "sample 2") != NULL);
    d.y[2] = 1;
    d.x[3 * 3 + 1] = NAN;
    clad_err_clear(&e);
    CHECK_INT_EQ(dataset_validate(&d, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "sample 3 feature 1") != NULL);
    dataset_finish(&d);
}
