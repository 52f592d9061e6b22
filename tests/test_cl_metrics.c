/* Tests of core/metrics on accuracy matrices computed by hand. */
#include "tests/test.h"

#include "core/metrics.h"

TEST(cl_metrics_three_tasks_by_hand)
{
    /* R[i][j]: accuracy on task j after learning task i (upper triangle never read). */
    const double R[9] = {
        0.90, 99, 99,
        0.80, 0.70, 99,
        0.85, 0.60, 0.95,
    };
    const double base[3] = {0.50, 0.40, 0.70};
    cl_metrics m;
    cl_metrics_compute(&m, R, 3, base);
    /* acc = (0.85 + 0.60 + 0.95) / 3 */
    CHECK(m.acc.defined);
    CHECK_NEAR(m.acc.value, 0.80, 1e-12);
    /* aia = (0.90 + (0.80+0.70)/2 + 0.80) / 3 = (0.90 + 0.75 + 0.80) / 3 */
    CHECK_NEAR(m.aia.value, 2.45 / 3, 1e-12);
    /* forgetting_max: task 0 best of {0.90, 0.80} = 0.90 -> 0.05; task 1 best 0.70 -> 0.10; mean 0.075 */
    CHECK_NEAR(m.forgetting_max.value, 0.075, 1e-12);
    /* forgetting_first: (0.90-0.85 + 0.70-0.60)/2 = 0.075; bwt = -0.075 */
    CHECK_NEAR(m.forgetting_first.value, 0.075, 1e-12);
    CHECK_NEAR(m.bwt.value, -0.075, 1e-12);
    /* fwt: ((0.70-0.40) + (0.95-0.70)) / 2 = 0.275 */
    CHECK(m.fwt.defined);
    CHECK_NEAR(m.fwt.value, 0.275, 1e-12);
}

TEST(cl_metrics_max_and_first_forgetting_differ)
{
    /* Task 0 improves after task 1 (backward transfer), then drops: the max-based definition measures the
     * drop from the best (0.95), the first-trained one from when it was learned (0.80). */
    const double R[9] = {
        0.80, 0, 0,
        0.95, 0.90, 0,
        0.70, 0.90, 0.60,
    };
    cl_metrics m;
    cl_metrics_compute(&m, R, 3, NULL);
    CHECK_NEAR(m.forgetting_max.value, (0.25 + 0.0) / 2, 1e-12);
    CHECK_NEAR(m.forgetting_first.value, (0.10 + 0.0) / 2, 1e-12);
    CHECK_NEAR(m.bwt.value, -0.05, 1e-12);
    /* no base accuracies: fwt undefined with a reason, not 0 */
    CHECK(!m.fwt.defined);
    CHECK(strstr(m.fwt.reason, "linear-probe") != NULL);
}

TEST(cl_metrics_single_task_leaves_forgetting_undefined)
{
    const double R[1] = {0.9};
    const double base[1] = {0.6};
    cl_metrics m;
    cl_metrics_compute(&m, R, 1, base);
    CHECK(m.acc.defined && m.aia.defined);
    CHECK_NEAR(m.acc.value, 0.9, 1e-12);
    CHECK_NEAR(m.aia.value, 0.9, 1e-12);
    CHECK(!m.forgetting_max.defined && !m.forgetting_first.defined && !m.bwt.defined && !m.fwt.defined);
    CHECK(strstr(m.forgetting_max.reason, "two tasks") != NULL);
    CHECK(m.forgetting_max.value == 0.0);  /* never read, but not garbage */
}

TEST(cl_metrics_missing_entries_are_undefined)
{
    const double R[4] = {0.9, 0, NAN, 0.8};
    cl_metrics m;
    cl_metrics_compute(&m, R, 2, NULL);
    CHECK(!m.acc.defined && !m.bwt.defined);
    CHECK(strstr(m.acc.reason, "missing") != NULL);
    cl_metrics_compute(&m, NULL, 0, NULL);
    CHECK(!m.aia.defined);
    const double R2[4] = {0.9, 0, 0.7, 0.8}, base[2] = {0.5, NAN};
    cl_metrics_compute(&m, R2, 2, base);
    CHECK(m.acc.defined && !m.fwt.defined);
    CHECK_NEAR(m.forgetting_first.value, 0.2, 1e-12);
}
