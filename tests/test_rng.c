/* Tests of core/rng against known values (computed with an independent implementation of SplitMix64
 * seeding + xoshiro256**, written from the published algorithms), and of the distributions it draws. */
#include "tests/test.h"

#include "core/rng.h"

TEST(rng_matches_known_xoshiro256ss_outputs)
{
    rng r;
    rng_init(&r, 42);
    CHECK(rng_next(&r) == 0x15780b2e0c2ec716ULL);
    CHECK(rng_next(&r) == 0x6104d9866d113a7eULL);
    CHECK(rng_next(&r) == 0xae17533239e499a1ULL);
    rng_init(&r, 0);
    CHECK(rng_next(&r) == 0x99ec5f36cb75f2b4ULL);
    CHECK(rng_next(&r) == 0xbf6e1f784956452aULL);
    /* uniform: the top 24 bits over 2^24 */
    rng_init(&r, 7);
    CHECK_NEAR(rng_uniform(&r), 0.7005764245986938, 0);
    CHECK_NEAR(rng_uniform(&r), 0.2787511944770813, 0);
    CHECK_NEAR(rng_uniform(&r), 0.8396274447441101, 0);
    /* normal: Box-Muller on two draws */
    rng_init(&r, 7);
    CHECK_NEAR(rng_normal(&r), -0.15157274547711355, 1e-7);
    CHECK_NEAR(rng_normal(&r), 0.5870995807125802, 1e-7);
    /* below: Lemire's method; shuffle: Fisher-Yates from the top */
    rng_init(&r, 9);
    const int below[8] = {9, 8, 1, 9, 4, 8, 3, 4};
    for (int i = 0; i < 8; i++) CHECK_INT_EQ(rng_below(&r, 10), below[i]);
    rng_init(&r, 9);
    int a[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    const int shuffled[8] = {3, 0, 2, 6, 4, 1, 5, 7};
    rng_shuffle(&r, a, 8);
    for (int i = 0; i < 8; i++) CHECK_INT_EQ(a[i], shuffled[i]);
}

TEST(rng_distributions_have_the_right_moments)
{
    enum { N = 200000 };
    rng r;
    rng_init(&r, 123);
    double s1 = 0, s2 = 0, s4 = 0, u1 = 0, u2 = 0;
    float umin = 1, umax = 0;
    for (int i = 0; i < N; i++) {
        double z = rng_normal(&r);
        s1 += z, s2 += z * z, s4 += z * z * z * z;
        float u = rng_uniform(&r);
        umin = fminf(umin, u), umax = fmaxf(umax, u);
        u1 += (double)u, u2 += (double)u * (double)u;
    }
    /* normal: mean 0, variance 1, fourth moment 3 (standard errors 0.0022, 0.0032, 0.021) */
    CHECK_NEAR(s1 / N, 0.0, 0.01);
    CHECK_NEAR(s2 / N, 1.0, 0.015);
    CHECK_NEAR(s4 / N, 3.0, 0.1);
    /* uniform on [0, 1): mean 1/2, variance 1/12 */
    CHECK(umin >= 0.0f && umax < 1.0f && umin < 1e-4f && umax > 0.9999f);
    CHECK_NEAR(u1 / N, 0.5, 0.003);
    CHECK_NEAR(u2 / N - (u1 / N) * (u1 / N), 1.0 / 12.0, 0.002);
    /* below(7): chi-square over 7 bins, 6 degrees of freedom: 22.5 is the 0.999 quantile */
    int hist[7] = {0};
    for (int i = 0; i < N; i++) hist[rng_below(&r, 7)]++;
    double chi2 = 0;
    for (int k = 0; k < 7; k++) chi2 += (hist[k] - N / 7.0) * (hist[k] - N / 7.0) / (N / 7.0);
    CHECK_MSG(chi2 < 22.5, "chi-square %.2f", chi2);
    /* successive draws are uncorrelated */
    double c = 0;
    float prev = rng_uniform(&r);
    for (int i = 0; i < N; i++) {
        float u = rng_uniform(&r);
        c += ((double)prev - 0.5) * ((double)u - 0.5);
        prev = u;
    }
    CHECK_NEAR(c / N * 12.0, 0.0, 0.02);
}

TEST(rng_seeds_give_different_streams_and_below_stays_in_range)
{
    rng a, b;
    rng_init(&a, 1);
    rng_init(&b, 2);
    int same = 0;
    for (int i = 0; i < 1000; i++) same += rng_next(&a) == rng_next(&b);
    CHECK_INT_EQ(same, 0);
    /* bounds 1 and 2^32 - 1 (the rejection path) */
    for (int i = 0; i < 1000; i++) CHECK_INT_EQ(rng_below(&a, 1), 0);
    int high = 0;
    for (int i = 0; i < 1000; i++) high += rng_below(&a, 0xffffffffu) >= 0x80000000u;
    CHECK_NEAR(high, 500, 80);
}
