/* Direct tests of core/optim: AdamW (bias correction, decoupled weight decay per tensor, eps outside the
 * square root), the warm-up + cosine schedule and gradient clipping, against values worked out by hand
 * (the arithmetic is in the comments). Training tests only see the optimizer through a falling loss,
 * which survives most optimizer bugs. */
#include "tests/test.h"

#include "core/optim.h"

/* Two tensors: "w" (2 values, decayed) and "b" (3 values, not decayed), all starting at 1. */
static void two_tensors(param_set *p)
{
    param_set_init(p);
    param_set_add(p, "w", 1, (int[]){2}, true);
    param_set_add(p, "b", 1, (int[]){3}, false);
    CHECK_INT_EQ(param_set_alloc(p, NULL), 0);
    for (size_t i = 0; i < p->total; i++) p->data[i] = 1.0f;
}

TEST(optim_adamw_first_steps_match_hand_computed)
{
    param_set p;
    two_tensors(&p);
    adamw o;
    CHECK_INT_EQ(adamw_init(&o, p.total, NULL), 0);
    /* Every value gets the same gradients 0.5, -0.25, 1.0; lr 0.1, betas (0.9, 0.999), eps 1e-8, no decay.
     * step 1: m = 0.05, v = 0.00025; mhat = 0.05/0.1 = 0.5, vhat = 0.00025/0.001 = 0.25;
     *         w = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.900000002 (Adam's first step is lr * sign(g))
     * step 2: m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225;
     *         mhat = 0.02/0.19, vhat = 0.00031225/0.001999; w = 0.873366299
     * step 3: m = 0.018 + 0.1 = 0.118, v = 0.000311938 + 0.001 = 0.001311938; w = 0.807555140 */
    const float grads[3] = {0.5f, -0.25f, 1.0f};
    const double m_want[3] = {0.05, 0.02, 0.118}, v_want[3] = {0.00025, 0.00031225, 0.00131193775};
    const double w_want[3] = {0.900000002, 0.8733662987, 0.8075551397};
    float g[5];
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < 5; i++) g[i] = grads[s];
        adamw_step(&o, &p, g, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f);
        CHECK_INT_EQ(o.t, s + 1);
        for (int i = 0; i < 5; i++) {
            CHECK_NEAR(o.m[i], m_want[s], 1e-7);
            CHECK_NEAR(o.v[i], v_want[s], 5e-5 * v_want[s]); /* 1 - 0.999f is 1.3e-5 off */
            CHECK_NEAR(p.data[i], w_want[s], 2e-6);
        }
    }
    adamw_finish(&o);
    param_set_finish(&p);
}

TEST(optim_adamw_each_value_uses_its_own_gradient)
{
    param_set p;
    two_tensors(&p);
    adamw o;
    CHECK_INT_EQ(adamw_init(&o, p.total, NULL), 0);
    /* First step: w -= lr * sign(g) for any |g| >> eps; a zero gradient moves nothing. */
    float g[5] = {2.0f, -3.0f, 0.0f, 1e-3f, -7.0f};
    adamw_step(&o, &p, g, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f);
    const float want[5] = {0.99f, 1.01f, 1.0f, 0.99f, 1.01f};
    CHECK_ARRAY_NEAR(p.data, want, 5, 1e-6, 0);
    CHECK_NEAR(o.m[1], -0.3, 1e-7);
    CHECK_NEAR(o.v[4], 0.049, 3e-6);
    adamw_finish(&o);
    param_set_finish(&p);
}

TEST(optim_adamw_decay_is_decoupled_and_per_tensor)
{
    param_set p;
    two_tensors(&p);
    p.data[1] = 2.0f;
    adamw o;
    CHECK_INT_EQ(adamw_init(&o, p.total, NULL), 0);
    /* lr 0.1, decay 0.1: decayed values lose lr * wd * w_old = 0.01 * w_old on top of the Adam step of
     * 0.1; the decay does not enter the moments (decoupled), and "b" (decay off) is not decayed.
     * w[0]: 1 - 0.1 - 0.01 = 0.89; w[1]: 2 - 0.1 - 0.02 = 1.88; b: 1 - 0.1 = 0.9. */
    float g[5] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    adamw_step(&o, &p, g, 0.1f, 0.9f, 0.999f, 1e-8f, 0.1f);
    const float want[5] = {0.89f, 1.88f, 0.9f, 0.9f, 0.9f};
    CHECK_ARRAY_NEAR(p.data, want, 5, 2e-6, 0);
    for (int i = 0; i < 5; i++) CHECK_NEAR(o.m[i], 0.05, 1e-7);
    /* With a zero gradient only the decay acts: 0.89 * (1 - 0.01) = 0.8811; the Adam part is 0 because
     * the moments decay too but m stays proportional: step 2 m = 0.045, mhat = 0.045/0.19 = 0.236842,
     * v = 0.00024975, vhat = 0.12493747, sqrt = 0.35346495, update = 0.0670058. */
    for (int i = 0; i < 5; i++) g[i] = 0.0f;
    adamw_step(&o, &p, g, 0.1f, 0.9f, 0.999f, 1e-8f, 0.1f);
    CHECK_NEAR(p.data[0], 0.89 - 0.0670058 - 0.0089, 2e-6);
    CHECK_NEAR(p.data[2], 0.9 - 0.0670058, 2e-6);
    adamw_finish(&o);
    param_set_finish(&p);
}

TEST(optim_adamw_eps_is_outside_the_square_root)
{
    param_set p;
    two_tensors(&p);
    adamw o;
    CHECK_INT_EQ(adamw_init(&o, p.total, NULL), 0);
    /* g = 1e-6, eps = 1e-8: mhat = 1e-6, sqrt(vhat) = 1e-6, step = lr * 1e-6 / (1e-6 + 1e-8) = 0.990099 lr.
     * eps inside the root would give lr * 1e-6 / sqrt(1e-12 + 1e-8) = 0.00995 lr. */
    float g[5] = {1e-6f, 1e-6f, 1e-6f, 1e-6f, 1e-6f};
    adamw_step(&o, &p, g, 1.0f, 0.9f, 0.999f, 1e-8f, 0.0f);
    CHECK_NEAR(p.data[0], 1.0 - 1.0 / 1.01, 1e-5);
    /* A large eps: step = 0.5 / (0.5 + 0.1) = 0.8333 (inside the root: 0.5 / sqrt(0.35) = 0.845). */
    for (size_t i = 0; i < p.total; i++) p.data[i] = 1.0f, g[i] = 0.5f, o.m[i] = o.v[i] = 0.0f;
    o.t = 0;
    adamw_step(&o, &p, g, 1.0f, 0.9f, 0.999f, 0.1f, 0.0f);
    CHECK_NEAR(p.data[4], 1.0 - 0.5 / 0.6, 1e-6);
    adamw_finish(&o);
    param_set_finish(&p);
}

TEST(optim_adamw_bias_correction_uses_the_step_count)
{
    param_set p;
    two_tensors(&p);
    adamw o;
    CHECK_INT_EQ(adamw_init(&o, p.total, NULL), 0);
    /* Resuming at t = 9 (as after 9 steps): the 10th step corrects by 1 - beta^10.
     * m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 0.00025, c1 = 1 - 0.9^10 = 0.65132156,
     * c2 = 1 - 0.999^10 = 0.00995512; step = 0.1 * 0.0767670 / 0.1584737 = 0.0484426. */
    o.t = 9;
    float g[5] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    adamw_step(&o, &p, g, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f);
    CHECK_INT_EQ(o.t, 10);
    CHECK_NEAR(p.data[3], 1.0 - 0.0484426, 2e-6);
    adamw_finish(&o);
    param_set_finish(&p);
}

TEST(optim_schedule_warms_up_then_follows_the_cosine)
{
    /* warm-up 4 of 12 steps, lr 1, floor 0.1: steps 0..3 give 1/4, 2/4, 3/4, 4/4; then the cosine over the
     * remaining 8 steps: progress (step - 4) / 8, lr = 0.1 + 0.9 * (1 + cos(pi * progress)) / 2. */
    const double want[14] = {0.25, 0.5, 0.75, 1.0,
                             1.0, 0.965746, 0.868198, 0.722208, 0.55, 0.377792, 0.231802, 0.134254,
                             0.1, 0.1};
    for (int s = 0; s < 14; s++) CHECK_NEAR(lr_schedule(s, 12, 4, 1.0f, 0.1f), want[s], 1e-6);
    CHECK_NEAR(lr_schedule(1000, 12, 4, 1.0f, 0.1f), 0.1, 1e-7);
    /* lr scales the whole curve; no warm-up starts at lr; total <= warm-up stays at lr afterwards. */
    CHECK_NEAR(lr_schedule(8, 12, 4, 3e-3f, 0.1f), 3e-3 * 0.55, 1e-9);
    CHECK_NEAR(lr_schedule(0, 10, 0, 2.0f, 0.0f), 2.0, 1e-7);
    CHECK_NEAR(lr_schedule(5, 10, 0, 2.0f, 0.0f), 1.0, 1e-6);
    CHECK_NEAR(lr_schedule(10, 10, 0, 2.0f, 0.0f), 0.0, 1e-7);
    CHECK_NEAR(lr_schedule(3, 4, 4, 1.0f, 0.1f), 1.0, 1e-7);
    CHECK_NEAR(lr_schedule(6, 4, 4, 1.0f, 0.1f), 1.0, 1e-7);
}

TEST(optim_clip_scales_to_the_max_norm)
{
    float g[4] = {3.0f, 0.0f, -4.0f, 0.0f};
    CHECK_NEAR(grad_norm(g, 4), 5.0, 1e-12);
    CHECK_NEAR(grad_clip(g, 4, 10.0f), 5.0, 1e-12);   /* below the limit: untouched */
    const float same[4] = {3.0f, 0.0f, -4.0f, 0.0f};
    CHECK_ARRAY_NEAR(g, same, 4, 0, 0);
    CHECK_NEAR(grad_clip(g, 4, 0.0f), 5.0, 1e-12);    /* 0 = off */
    CHECK_ARRAY_NEAR(g, same, 4, 0, 0);
    CHECK_NEAR(grad_clip(g, 4, 1.0f), 5.0, 1e-12);    /* returns the norm before clipping */
    const float clipped[4] = {0.6f, 0.0f, -0.8f, 0.0f};
    CHECK_ARRAY_NEAR(g, clipped, 4, 1e-7, 0);
    CHECK_NEAR(grad_norm(g, 4), 1.0, 1e-6);
    /* The norm is accumulated in double: 2^24 ones plus one more would stall a float sum. */
    size_t n = (1u << 24) + 1;
    float *big = malloc(n * sizeof *big);
    for (size_t i = 0; i < n; i++) big[i] = 1.0f;
    CHECK_NEAR(grad_norm(big, n), sqrt((double)n), 1e-6);
    free(big);
}
