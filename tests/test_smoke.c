/* Tests of the small shared pieces: error codes, RNG, datasets. */
#include "tests/test.h"

#include "core/dataset.h"
#include "core/error.h"
#include "core/rng.h"

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

TEST(rng_is_deterministic_and_uniform)
{
    rng a, b;
    rng_init(&a, 42);
    rng_init(&b, 42);
    double sum = 0, sum2 = 0;
    for (int i = 0; i < 100000; i++) {
        CHECK_INT_EQ(rng_next(&a), rng_next(&b));
        float z = rng_normal(&a);
        (void)rng_normal(&b);
        sum += (double)z;
        sum2 += (double)z * (double)z;
    }
    CHECK_NEAR(sum / 100000, 0.0, 0.02);
    CHECK_NEAR(sum2 / 100000, 1.0, 0.02);
    int hist[10] = {0};
    for (int i = 0; i < 100000; i++) hist[rng_below(&a, 10)]++;
    for (int i = 0; i < 10; i++) CHECK_NEAR(hist[i], 10000, 500);
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
