/* Tests of the rank rule (core/ranks) and signatures (core/signature) on constructed matrices with known
 * spectra: pulls dW = sum_i s_i u_i v_i^T with orthonormal u, v and held-out gradients G built so that
 * component i earns exactly a chosen g_i nats. */
#include "tests/test.h"

#include "core/linalg.h"
#include "core/ranks.h"
#include "core/rng.h"
#include "core/signature.h"

static void fill_normal(float *x, size_t n, uint64_t seed)
{
    rng r;
    rng_init(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
}

/* Orthonormal U (m,k) and V (n,k) columns. */
static void orthonormal(float *Q, int m, int k, uint64_t seed)
{
    float *G = malloc(sizeof(float) * (size_t)m * k);
    fill_normal(G, (size_t)m * k, seed);
    CHECK_INT_EQ(linalg_qr(Q, NULL, G, m, k, NULL), 0);
    free(G);
}

/* A constructed layer: pull = sum_i s[i] u_i v_i^T, G = -sum_i (g[i]/s[i]) u_i v_i^T, so component i of the
 * pull earns -s_i u_i^T G v_i = g[i]. U (m,K), V (n,K) hold the K directions. */
typedef struct built {
    int m, n, K;
    float *U, *V, *pull, *grad;
} built;

static built build(int m, int n, int K, const float *s, const double *g, uint64_t seed)
{
    built b = {m, n, K, malloc(sizeof(float) * m * K), malloc(sizeof(float) * n * K),
               calloc((size_t)m * n, sizeof(float)), calloc((size_t)m * n, sizeof(float))};
    orthonormal(b.U, m, K, seed);
    orthonormal(b.V, n, K, seed + 1);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            for (int q = 0; q < K; q++) {
                float uv = b.U[i * K + q] * b.V[j * K + q];
                b.pull[i * n + j] += s[q] * uv;
                b.grad[i * n + j] -= (float)(g[q] / (double)s[q]) * uv;
            }
    return b;
}

static void built_free(built *b)
{
    free(b->U);
    free(b->V);
    free(b->pull);
    free(b->grad);
}

static rank_input one_layer_input(const built *b, const built *b2)
{
    rank_input in;
    memset(&in, 0, sizeof in);
    in.n_linear = b2 ? 3 : 2;
    in.layer[0] = (rank_input_layer){"fc1", b->m, b->n, b->pull, b->grad, 100.0};
    if (b2) in.layer[1] = (rank_input_layer){"fc2", b2->m, b2->n, b2->pull, b2->grad, 100.0};
    in.layer[in.n_linear - 1] = (rank_input_layer){"head", 10, b->m, NULL, NULL, 1.0};
    return in;
}

/* An earlier task whose adapter changed fc1 along the given columns of b (U[:,cols] and V[:,cols]) and whose
 * pull had the same components, earning gains[c] (sign < 0 flips the column vectors of the pull). */
static void earlier_sig(signature *sig, const built *b, const int *cols, int nc, int n_linear, const double *gains,
                        float sign)
{
    memset(sig, 0, sizeof *sig);
    sig->n_linear = n_linear;
    for (int li = 0; li < n_linear; li++) sig->layer[li].out = sig->layer[li].in = 1;
    sig_layer *L = &sig->layer[0];
    L->out = b->m;
    L->in = b->n;
    L->k = nc;
    L->U = malloc(sizeof(float) * b->m * nc);
    L->Vt = malloc(sizeof(float) * nc * b->n);
    L->s = malloc(sizeof(float) * nc);
    for (int c = 0; c < nc; c++) {
        for (int i = 0; i < b->m; i++) L->U[i * nc + c] = b->U[i * b->K + cols[c]];
        for (int j = 0; j < b->n; j++) L->Vt[c * b->n + j] = b->V[j * b->K + cols[c]];
        L->s[c] = 1.0f;
    }
    float *Up = malloc(sizeof(float) * b->m * nc);
    for (int i = 0; i < b->m * nc; i++) Up[i] = sign * L->U[i];
    CHECK_INT_EQ(sig_layer_set_pull(L, Up, L->Vt, gains, nc, NULL), 0);
    free(Up);
}

TEST(cl_ranks_components_earn_the_constructed_gains)
{
    const float s[4] = {4, 3, 2, 1};
    const double g[4] = {0.01, 0.3, -0.02, 0.1};
    built b = build(24, 16, 4, s, g, 1);
    float U[24 * 16], S[16], Vt[16 * 16];
    double gain[16];
    CHECK_INT_EQ(rank_components(U, S, Vt, gain, b.pull, b.grad, 24, 16, NULL), 0);
    /* components come out in singular-value order 4, 3, 2, 1, then zeros */
    CHECK_NEAR(S[0], 4, 1e-4);
    CHECK_NEAR(S[3], 1, 1e-4);
    for (int i = 0; i < 4; i++) CHECK_NEAR(gain[i], g[i], 1e-5);
    for (int i = 4; i < 16; i++) CHECK_NEAR(gain[i], 0.0, 1e-5);
    /* the four constructed components: one loss of 0.02, so the floor is 4 x 0.02 */
    CHECK_NEAR(rank_floor(gain, 4, 0.004), 0.08, 1e-5);
    CHECK_INT_EQ(rank_count_directions(gain, 4, rank_floor(gain, 4, 0.004)), 2);
    /* the floor is 4 x the median loss: noise of scale 0.01 puts it at 0.04, whatever one outlier does */
    const double noisy[8] = {0.5, 0.012, -0.01, 0.003, -0.008, -0.012, -0.3, 0.05};
    CHECK_NEAR(rank_floor(noisy, 8, 0.004), 4 * 0.011, 1e-12);
    CHECK_INT_EQ(rank_count_directions(noisy, 8, rank_floor(noisy, 8, 0.004)), 2);
    CHECK_NEAR(rank_floor(noisy, 8, 0.1), 0.1, 1e-12); /* never below theta */
    built_free(&b);
}

TEST(cl_ranks_auto_counts_significant_directions)
{
    /* fc1: four directions earn at least theta (the median loss is ~0: the rest of the components are
     * numerically zero), one earns less. fc2: everything earns less than theta -> rank 0. */
    const float s1[6] = {5, 4, 3, 2, 1, 0.5f};
    const double g1[6] = {0.30, 0.10, 0.05, 0.015, -0.02, 0.001};
    const float s2[2] = {1, 0.5f};
    const double g2[2] = {0.003, 0.001};
    built b1 = build(32, 20, 6, s1, g1, 3), b2 = build(20, 32, 2, s2, g2, 5);
    rank_input in = one_layer_input(&b1, &b2);
    rank_policy pol;
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1", NULL), 0);
    rank_plan plan;
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK(plan.layer[0].target && plan.layer[1].target && !plan.layer[2].target);
    CHECK_INT_EQ(plan.layer[0].directions, 4);
    CHECK_INT_EQ(plan.ranks[0], 4);
    CHECK_STR_EQ(plan.layer[0].why, "directions");
    CHECK_INT_EQ(plan.ranks[1], 0);
    CHECK_STR_EQ(plan.layer[1].why, "negligible");
    CHECK_INT_EQ(plan.ranks[2], 0);
    CHECK_NEAR(plan.layer[0].floor, 0.004, 1e-9);
    CHECK_NEAR(plan.layer[0].useful, 0.465, 1e-4);
    CHECK_NEAR(plan.layer[0].gain, 0.446, 1e-4);
    CHECK_INT_EQ(plan.layer[0].pull_k, 4);
    /* distance = ||pull|| / ||W|| = sqrt(25+16+9+4+1+0.25) / 10 */
    CHECK_NEAR(plan.layer[0].distance, sqrt(55.25) / 10.0, 1e-4);
    CHECK_NEAR(plan.layer[0].energy + plan.layer[1].energy, 1.0, 1e-9);
    CHECK_NEAR(plan.novelty, 1.0, 1e-12);  /* nothing earlier */
    CHECK_INT_EQ(plan.reuse, -1);
    CHECK_INT_EQ(plan.new_params, 4L * (32 + 20));
    rank_plan_finish(&plan);

    /* three ranks per direction at scale 3 */
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=3,price=0", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 12);
    rank_plan_finish(&plan);
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1.5", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 6);
    rank_plan_finish(&plan);

    /* r_max clamps, r_min raises */
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1,r_max=2", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 2);
    CHECK_STR_EQ(plan.layer[0].why, "r_max");
    rank_plan_finish(&plan);
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1,r_min=5,r_max=8", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 5);
    CHECK_STR_EQ(plan.layer[0].why, "r_min");
    CHECK_INT_EQ(plan.ranks[1], 0);
    rank_plan_finish(&plan);
    /* a larger theta keeps only the strongest */
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1,theta=0.2", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 1);
    rank_plan_finish(&plan);
    built_free(&b1);
    built_free(&b2);
}

TEST(cl_ranks_every_task_keeps_a_minimum_rank)
{
    /* Nothing earns theta anywhere: the layer that earns most still gets r_min. */
    const float s1[2] = {2, 1}, s2[2] = {2, 1};
    const double g1[2] = {0.001, 0.0005}, g2[2] = {0.003, 0.0};
    built b1 = build(16, 12, 2, s1, g1, 7), b2 = build(12, 16, 2, s2, g2, 9);
    rank_input in = one_layer_input(&b1, &b2);
    rank_policy pol;
    rank_policy_default(&pol);
    rank_plan plan;
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 0);
    CHECK_INT_EQ(plan.ranks[1], 1);
    CHECK_STR_EQ(plan.layer[1].why, "minimum");
    rank_plan_finish(&plan);
    built_free(&b1);
    built_free(&b2);
}

TEST(cl_ranks_fixed_and_linear_policies)
{
    const float s[3] = {3, 2, 1};
    const double g[3] = {0.2, 0.1, 0.05};
    built b1 = build(16, 12, 3, s, g, 11), b2 = build(12, 4, 3, s, g, 13);
    rank_input in = one_layer_input(&b1, &b2);
    rank_policy pol;
    rank_plan plan;
    CHECK_INT_EQ(rank_policy_parse(&pol, "fixed:6", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 6);
    CHECK_INT_EQ(plan.ranks[1], 4);  /* a 12x4 layer holds at most rank 4 */
    CHECK_STR_EQ(plan.layer[1].why, "layer size");
    CHECK_INT_EQ(plan.ranks[2], 0);
    rank_plan_finish(&plan);
    /* linear: rank = round(gain * distance); distance = sqrt(14)/10 = 0.374 -> 20 * 0.374 = 7.48 -> 7 */
    CHECK_INT_EQ(rank_policy_parse(&pol, "linear:gain=20", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 7);
    CHECK_INT_EQ(plan.ranks[1], 4);
    rank_plan_finish(&plan);
    char name[32];
    rank_policy_name(&pol, name, sizeof name);
    CHECK_STR_EQ(name, "linear:gain=20");
    CHECK_INT_EQ(rank_policy_parse(&pol, "fixed:3", NULL), 0);
    rank_policy_name(&pol, name, sizeof name);
    CHECK_STR_EQ(name, "fixed:3");
    char big[128];
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:r_max=16,scale=3,budget=500,price=3e-05", NULL), 0);
    rank_policy_name(&pol, big, sizeof big);
    CHECK_STR_EQ(big, "auto:r_max=16,budget=500,scale=3,price=3e-05");
    rank_policy back;
    CHECK_INT_EQ(rank_policy_parse(&back, big, NULL), 0);
    CHECK(!memcmp(&back, &pol, sizeof pol));
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto", NULL), 0);
    rank_policy_name(&pol, big, sizeof big);
    CHECK_STR_EQ(big, "auto");
    CHECK_INT_EQ(rank_policy_parse(&pol, "linear:gain=50", NULL), 0);
    rank_policy_name(&pol, big, sizeof big);
    CHECK_STR_EQ(big, "linear:gain=50");
    clad_err e = {0};
    CHECK_INT_EQ(rank_policy_parse(&pol, "fixed", &e), CLAD_EINVAL);
    CHECK_INT_EQ(rank_policy_parse(&pol, "fixed:0", NULL), CLAD_EINVAL);
    CHECK_INT_EQ(rank_policy_parse(&pol, "greedy", NULL), CLAD_EINVAL);
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:tau=3", NULL), CLAD_EINVAL);
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:r_min=9,r_max=4", NULL), CLAD_EINVAL);
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:theta=0.01,r_max=8,budget=1000", NULL), 0);
    CHECK(pol.theta == 0.01 && pol.r_max == 8 && pol.budget == 1000);
    built_free(&b1);
    built_free(&b2);
}

TEST(cl_ranks_overlap_novelty_and_reuse)
{
    /* fc1 earns 0.30, 0.10, 0.05 on three directions. Earlier task A pulled (and adapted) along the first
     * two with gains 0.3 and 0.1, B along the third with 0.05, C along the first two but the other way. */
    const float s[4] = {4, 3, 2, 0.5f};
    const double g[4] = {0.30, 0.10, 0.05, -0.01};
    built b = build(30, 20, 4, s, g, 21);
    rank_input in = one_layer_input(&b, NULL);
    signature A, B, C;
    earlier_sig(&A, &b, (const int[]){0, 1}, 2, in.n_linear, (const double[]){0.3, 0.1}, 1.0f);
    earlier_sig(&B, &b, (const int[]){2}, 1, in.n_linear, (const double[]){0.05}, 1.0f);
    earlier_sig(&C, &b, (const int[]){0, 1}, 2, in.n_linear, (const double[]){0.3, 0.1}, -1.0f);
    const signature *earlier[3] = {&A, &B, &C};
    rank_policy pol;
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1", NULL), 0);
    rank_plan plan;
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, earlier, 3, &pol, NULL), 0);
    /* cosines of S = 0.3 u0v0 + 0.1 u1v1 + 0.05 u2v2 with A's (0.3, 0.1) and B's (0.05) pulls */
    double norm = sqrt(0.09 + 0.01 + 0.0025);
    CHECK_NEAR(plan.overlap[0], 0.10 / (norm * sqrt(0.10)), 1e-4);
    CHECK_NEAR(plan.overlap[1], 0.0025 / (norm * 0.05), 1e-4);
    CHECK_NEAR(plan.overlap[2], 0.0, 1e-12);  /* same subspace, opposite pull: not similar */
    CHECK_NEAR(plan.layer[0].overlap[0], plan.overlap[0], 1e-9);
    CHECK_NEAR(plan.novelty, 0.0, 1e-4);  /* all three directions lie in the earlier footprints */
    /* A is reused; what is left (0.05 of 0.45 = 11%) is covered: no new rank (the task learns through A's
     * change and its own head) */
    CHECK_INT_EQ(plan.reuse, 0);
    CHECK_INT_EQ(plan.layer[0].reused, 2);
    CHECK_NEAR(plan.layer[0].left, 0.05 / 0.45, 1e-3);
    /* A's footprint spans 2 of 30 output and 2 of 20 input directions: chance leaves 1 - 1/150 of a change */
    CHECK_NEAR(plan.layer[0].left_at, 0.25 * (1.0 - (2.0 / 30.0) * (2.0 / 20.0)), 1e-9);
    CHECK_INT_EQ(plan.ranks[0], 0);
    CHECK_STR_EQ(plan.layer[0].why, "covered by reuse");
    CHECK_INT_EQ(plan.total[0], 2);
    CHECK_INT_EQ(plan.new_params, 0);
    rank_plan_finish(&plan);

    /* with a lower left_min the third direction is learned anew */
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1,left=0.05", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, earlier, 3, &pol, NULL), 0);
    CHECK_INT_EQ(plan.layer[0].directions, 1);
    CHECK_INT_EQ(plan.ranks[0], 1);
    CHECK_STR_EQ(plan.layer[0].why, "directions");
    rank_plan_finish(&plan);

    /* only B earlier: too little overlap to reuse; novelty = 0.40 / 0.45 */
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, earlier + 1, 1, &pol, NULL), 0);
    CHECK_INT_EQ(plan.reuse, -1);
    CHECK_NEAR(plan.novelty, 0.40 / 0.45, 1e-4);
    CHECK_INT_EQ(plan.ranks[0], 3);
    rank_plan_finish(&plan);

    /* only C: the subspace is known (novelty 0.05 / 0.45) but the pull is not C's, so C is not reused */
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, earlier + 2, 1, &pol, NULL), 0);
    CHECK_INT_EQ(plan.reuse, -1);
    CHECK_NEAR(plan.novelty, 0.05 / 0.45, 1e-4);
    CHECK_INT_EQ(plan.ranks[0], 3);
    rank_plan_finish(&plan);

    /* a signature stored without the pull's gains compares directions with unit weights */
    free(A.layer[0].gp);
    A.layer[0].gp = NULL;
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, earlier, 1, &pol, NULL), 0);
    CHECK_NEAR(plan.overlap[0], 0.40 / (norm * sqrt(2.0)), 1e-4);
    rank_plan_finish(&plan);

    /* fixed never reuses */
    CHECK_INT_EQ(rank_policy_parse(&pol, "fixed:2", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, earlier, 3, &pol, NULL), 0);
    CHECK_INT_EQ(plan.reuse, -1);
    CHECK_INT_EQ(plan.total[0], 2);
    rank_plan_finish(&plan);

    /* a signature for another model is refused */
    signature bad = A;
    bad.n_linear = 5;
    const signature *wrong[1] = {&bad};
    clad_err e = {0};
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, wrong, 1, &pol, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "another model") != NULL);
    signature_finish(&A);
    signature_finish(&B);
    signature_finish(&C);
    built_free(&b);
}

TEST(cl_ranks_budget_drops_least_earning_directions)
{
    const float s1[4] = {4, 3, 2, 1}, s2[3] = {3, 2, 1};
    const double g1[4] = {0.5, 0.2, 0.03, 0.02}, g2[3] = {0.4, 0.025, 0.01};
    built b1 = build(20, 20, 4, s1, g1, 31), b2 = build(20, 20, 3, s2, g2, 33);
    rank_input in = one_layer_input(&b1, &b2);
    rank_policy pol;
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1", NULL), 0);
    rank_plan plan;
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 4);
    CHECK_INT_EQ(plan.ranks[1], 3);
    rank_plan_finish(&plan);
    /* 4 directions of 40 parameters fit: the 0.01, 0.02 and 0.025 go, in that order */
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1,budget=160", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 3);
    CHECK_INT_EQ(plan.ranks[1], 1);
    CHECK_STR_EQ(plan.layer[1].why, "budget");
    CHECK_INT_EQ(plan.new_params, 160);
    rank_plan_finish(&plan);
    /* with two ranks per direction (8 and 6), a budget of 280 keeps 7 units: the units of the 0.01, 0.02,
     * 0.025 and 0.03 directions go, in that order, until (5, 2) fit */
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=2,budget=280", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 5);
    CHECK_INT_EQ(plan.ranks[1], 2);
    rank_plan_finish(&plan);
    built_free(&b1);
    built_free(&b2);
}

TEST(cl_signature_reproduces_the_adapter_change)
{
    int out = 18, in = 13, r = 5;
    float *B = malloc(sizeof(float) * out * r), *A = malloc(sizeof(float) * r * in);
    fill_normal(B, (size_t)out * r, 41);
    fill_normal(A, (size_t)r * in, 42);
    float scale = 16.0f / (float)r;
    float *want = calloc((size_t)out * in, sizeof(float)), *got = malloc(sizeof(float) * out * in);
    for (int i = 0; i < out; i++)
        for (int j = 0; j < in; j++)
            for (int q = 0; q < r; q++) want[i * in + j] += scale * B[i * r + q] * A[q * in + j];
    signature sig;
    memset(&sig, 0, sizeof sig);
    sig.n_linear = 1;
    CHECK_INT_EQ(sig_layer_from_factors(&sig.layer[0], B, A, scale, out, in, r, 1.0, NULL), 0);
    CHECK_INT_EQ(sig.layer[0].k, 5);
    for (int i = 0; i + 1 < 5; i++) CHECK(sig.layer[0].s[i] >= sig.layer[0].s[i + 1]);
    CHECK_NEAR(sig.layer[0].energy, linalg_frob2(want, (size_t)out * in), 1e-3 * sig.layer[0].energy);
    signature_layer_delta(got, &sig, 0);
    CHECK_ARRAY_NEAR(got, want, (size_t)out * in, 1e-4, 1e-4);
    /* inside its own subspace: all of the energy */
    CHECK_NEAR(linalg_inside_energy(want, out, in, sig.layer[0].U, 5, sig.layer[0].Vt, 5),
               linalg_frob2(want, (size_t)out * in), 1e-5 * linalg_frob2(want, (size_t)out * in));
    CHECK_INT_EQ(signature_floats(&sig), 5 * (18 + 13 + 1));
    signature_finish(&sig);
    free(B);
    free(A);
    free(want);
    free(got);
}

TEST(cl_signature_truncates_by_energy_and_keeps_pull_bases)
{
    /* B A with singular values 3, 1, 0.01: keeping 99% of the energy keeps two directions. */
    int out = 10, in = 8, r = 3;
    float *Q1 = malloc(sizeof(float) * out * r), *Q2 = malloc(sizeof(float) * in * r);
    orthonormal(Q1, out, r, 51);
    orthonormal(Q2, in, r, 52);
    const float sv[3] = {3, 1, 0.01f};
    float *B = malloc(sizeof(float) * out * r), *A = malloc(sizeof(float) * r * in);
    for (int i = 0; i < out; i++)
        for (int q = 0; q < r; q++) B[i * r + q] = Q1[i * r + q] * sv[q];
    for (int q = 0; q < r; q++)
        for (int j = 0; j < in; j++) A[q * in + j] = Q2[j * r + q];
    sig_layer L;
    CHECK_INT_EQ(sig_layer_from_factors(&L, B, A, 1.0f, out, in, r, 0.99, NULL), 0);
    CHECK_INT_EQ(L.k, 2);
    CHECK_NEAR(L.s[0], 3, 1e-4);
    CHECK_NEAR(L.s[1], 1, 1e-4);
    /* pull components are copied with their gains; too many for the layer are refused */
    float Up[10 * 2], Vtp[2 * 8];
    fill_normal(Up, 20, 53);
    fill_normal(Vtp, 16, 54);
    const double gains[2] = {0.25, 0.125};
    CHECK_INT_EQ(sig_layer_set_pull(&L, Up, Vtp, gains, 2, NULL), 0);
    CHECK_INT_EQ(L.kp, 2);
    CHECK_ARRAY_NEAR(L.Up, Up, 20, 0, 0);
    CHECK(L.gp[0] == 0.25f && L.gp[1] == 0.125f);
    CHECK_INT_EQ(signature_floats(&(signature){.n_linear = 1, .layer = {L}}), 2 * (10 + 8 + 1) + 2 * (10 + 8 + 1));
    CHECK_INT_EQ(sig_layer_set_pull(&L, Up, Vtp, gains, 9, NULL), CLAD_EINVAL);
    CHECK_INT_EQ(sig_layer_set_pull(&L, NULL, NULL, NULL, 0, NULL), 0);
    CHECK_INT_EQ(L.kp, 0);
    sig_layer_finish(&L);
    clad_err e = {0};
    CHECK_INT_EQ(sig_layer_from_factors(&L, B, A, 1.0f, out, in, 12, 0.99, &e), CLAD_EINVAL);
    free(Q1);
    free(Q2);
    free(B);
    free(A);
}

TEST(cl_ranks_auto_buys_directions_worth_their_parameters)
{
    /* fc1 (40x40, 80 parameters per rank) and fc2 (8x40, 48 per rank) each have directions earning 0.2,
     * 0.05 and 0.01. At scale 1 and a price of 7e-4 nats per parameter: fc1 buys 0.2 (2.5e-3 per parameter)
     * only (0.05 earns 6.2e-4), fc2 buys 0.2 and 0.05 (1.04e-3) but not 0.01 (2.1e-4). */
    const float s[3] = {3, 2, 1};
    const double g[3] = {0.2, 0.05, 0.01};
    built b1 = build(40, 40, 3, s, g, 41), b2 = build(8, 40, 3, s, g, 43);
    rank_input in = one_layer_input(&b1, &b2);
    rank_policy pol;
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1,price=7e-4", NULL), 0);
    rank_plan plan;
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.layer[0].found, 3);
    CHECK_INT_EQ(plan.ranks[0], 1);
    CHECK_STR_EQ(plan.layer[0].why, "price");
    CHECK_NEAR(plan.layer[0].best_per_param, 0.2 / 80, 1e-6);
    CHECK_INT_EQ(plan.ranks[1], 2);
    CHECK_INT_EQ(plan.new_params, 80 + 2 * 48);
    rank_plan_finish(&plan);
    /* a price above every direction's: rank 0 everywhere but the task minimum on the layer earning most */
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1,price=0.01", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0] + plan.ranks[1], 1);
    rank_plan_finish(&plan);
    /* price 0 buys every significant direction, at scale ranks each */
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=2,price=0", NULL), 0);
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 6);
    CHECK_INT_EQ(plan.ranks[1], 6);
    CHECK_STR_EQ(plan.layer[0].why, "directions");
    rank_plan_finish(&plan);
    built_free(&b1);
    built_free(&b2);
}

TEST(cl_ranks_adapter_starts_from_the_pull)
{
    /* fc1 of an mlp 20-32-10: the pull has four significant components (gains 0.3, 0.1, 0.05, 0.015) and two
     * that are not. An adapter with the plan's ranks, started from the pull, makes exactly the change of
     * the four significant components. */
    const float s1[6] = {5, 4, 3, 2, 1, 0.5f};
    const double g1[6] = {0.30, 0.10, 0.05, 0.015, -0.02, 0.001};
    built b = build(32, 20, 6, s1, g1, 51);
    rank_input in = one_layer_input(&b, NULL);
    model_config cfg = {.kind = MODEL_MLP, .n_classes = 10, .input_dim = 20, .n_hidden = 1, .hidden = {32}};
    model *m = model_create(&cfg, NULL);
    CHECK(m != NULL);
    CHECK_INT_EQ(m->n_linear, 2);
    rank_policy pol;
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:scale=1,price=0", NULL), 0);
    rank_plan plan;
    CHECK_INT_EQ(rank_plan_compute(&plan, &in, NULL, 0, &pol, NULL), 0);
    CHECK_INT_EQ(plan.ranks[0], 4);
    adapter *a = adapter_create(m, plan.ranks, 16.0f, 10, NULL);
    CHECK(a != NULL);
    adapter_init(a, m, 7);
    CHECK_INT_EQ(rank_plan_init_adapter(a, &plan, NULL), 0);
    float *dW = malloc(sizeof(float) * 32 * 20);
    adapter_delta(dW, a, m, 0);
    double worst = 0.0;
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 20; j++) {
            double want = 0.0;
            for (int q = 0; q < 4; q++) want += (double)s1[q] * (double)b.U[i * 6 + q] * (double)b.V[j * 6 + q];
            double d = fabs((double)dW[i * 20 + j] - want);
            if (d > worst) worst = d;
        }
    CHECK_MSG(worst < 1e-4, "largest difference %g", worst);
    /* a plan that reuses an earlier task is refused */
    plan.reuse = 0;
    clad_err e = {0};
    CHECK_INT_EQ(rank_plan_init_adapter(a, &plan, &e), CLAD_EINVAL);
    plan.reuse = -1;
    free(dW);
    adapter_destroy(a);
    model_destroy(m);
    rank_plan_finish(&plan);
    built_free(&b);
}

/* Ranks decided by training: every target starts at `start` (within the room the reused components
 * leave), then keeps the components whose size reaches keep x ||W_l||; a task without reuse keeps at least
 * r_min on the layer that moved most. */
/* rank_policy_parse refuses text with CLAD_EINVAL and a message holding part (and part2 unless NULL). */
static void check_refused(const char *text, const char *part, const char *part2)
{
    rank_policy p;
    clad_err e = {0};
    CHECK_INT_EQ(rank_policy_parse(&p, text, &e), CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, part) && (!part2 || strstr(e.msg, part2)), "%s: %s", text, e.msg);
}

TEST(cl_ranks_training_keeps_the_components_that_grew)
{
    model_config c = {.kind = MODEL_MLP, .input_dim = 12, .n_hidden = 2, .hidden = {24, 24}, .n_classes = 4};
    model *m = model_create(&c, NULL);
    CHECK(m != NULL);
    model_init_random(m, 3);
    rank_policy pol;
    CHECK_INT_EQ(rank_policy_parse(&pol, "auto:start=8,keep=0.01,r_max=6", NULL), 0);
    rank_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.n_linear = m->n_linear;
    plan.reuse = -1;
    plan.layer[0].target = plan.layer[1].target = true;
    plan.layer[0].rank = 2;
    plan.layer[1].rank = 9;  /* above the start: kept as the start */
    plan.layer[1].reused = 0;
    rank_plan_start(&plan, m, &pol);
    CHECK_INT_EQ(plan.ranks[0], 8);
    CHECK_INT_EQ(plan.ranks[1], 9);
    CHECK_INT_EQ(plan.layer[0].rank_start, 8);
    CHECK_INT_EQ(plan.ranks[2], 0);  /* the head is no target */
    CHECK_INT_EQ(plan.new_params, 8L * (24 + 12) + 9L * (24 + 24));

    float *S = calloc((size_t)MODEL_MAX_LINEARS * 16, sizeof(float));
    double w[2];
    for (int li = 0; li < 2; li++) {
        const model_linear *L = &m->linear[li];
        w[li] = sqrt(linalg_frob2(param_set_ptr(&m->params, L->weight), (size_t)L->out * L->in));
    }
    const double rel0[8] = {0.05, 0.02, 0.011, 0.009, 0.001, 0, 0, 0};
    for (int j = 0; j < 8; j++) S[j] = (float)(rel0[j] * w[0]);
    for (int j = 0; j < 9; j++) S[16 + j] = (float)(0.003 * w[1]);
    rank_plan_keep_trained(&plan, m, S, 16, &pol);
    CHECK_INT_EQ(plan.ranks[0], 3);
    CHECK_STR_EQ(plan.layer[0].why, "trained");
    CHECK_NEAR(plan.layer[0].kept_size, 0.011, 1e-6);
    CHECK_INT_EQ(plan.ranks[1], 0);
    CHECK_STR_EQ(plan.layer[1].why, "negligible after training");
    CHECK_INT_EQ(plan.new_params, 3L * (24 + 12));
    CHECK_INT_EQ(plan.layer[0].rank_start, 8);

    /* A kept component is also a tenth of the layer's largest; r_max caps. */
    for (int j = 0; j < 8; j++) S[j] = (float)((j < 3 ? 0.5 : j < 6 ? 0.04 : 0.02) * w[0]);
    rank_plan_keep_trained(&plan, m, S, 16, &pol);  /* 0.1 x 0.5 = 0.05 */
    CHECK_INT_EQ(plan.ranks[0], 3);
    CHECK_NEAR(plan.layer[0].keep_at, 0.05, 1e-6);
    for (int j = 0; j < 8; j++) S[j] = (float)((j < 4 ? 0.5 : 0.001) * w[0]);
    rank_policy capped = pol;
    capped.r_max = 2;
    rank_plan_keep_trained(&plan, m, S, 16, &capped);
    CHECK_INT_EQ(plan.ranks[0], 2);
    CHECK_STR_EQ(plan.layer[0].why, "r_max");
    for (int j = 0; j < 8; j++) S[j] = (float)(0.001 * w[0]);
    rank_plan_keep_trained(&plan, m, S, 16, &pol);
    CHECK_INT_EQ(plan.ranks[0], 0);
    CHECK_INT_EQ(plan.ranks[1], 1);
    CHECK_STR_EQ(plan.layer[1].why, "minimum");
    /* With a reused task the new components may all go: the task learns through the reused change. */
    plan.reuse = 0;
    plan.layer[0].reused = 6;
    plan.layer[0].rank = plan.layer[1].rank = 0;
    plan.layer[0].left = 0.5;   /* half of what the layer's pull earns is left to learn */
    plan.layer[1].left = 0.1;   /* covered by the reused task: nothing new */
    plan.layer[0].left_at = plan.layer[1].left_at = 0.2;
    rank_plan_start(&plan, m, &pol);
    CHECK_INT_EQ(plan.layer[0].rank_start, 6);  /* 12 - 6 reused */
    /* The widest start (6) sets the stable scale: alpha sqrt(6); stable=0 or no start trains at alpha. */
    CHECK(fabsf(rank_plan_training_alpha(&plan, &pol, 16.0f) - 16.0f * sqrtf(6.0f)) < 1e-5f);
    rank_policy flat = pol;
    flat.stable = 0;
    CHECK(rank_plan_training_alpha(&plan, &flat, 16.0f) == 16.0f);
    flat = pol;
    flat.start = 0;
    CHECK(rank_plan_training_alpha(&plan, &flat, 16.0f) == 16.0f);
    CHECK_INT_EQ(plan.total[0], 12);
    CHECK_INT_EQ(plan.layer[1].rank_start, 0);
    CHECK_INT_EQ(plan.ranks[1], 0);
    for (int j = 0; j < 8; j++) S[j] = (float)(0.001 * w[0]);
    rank_plan_keep_trained(&plan, m, S, 16, &pol);
    CHECK_INT_EQ(plan.ranks[0] + plan.ranks[1], 0);
    CHECK_INT_EQ(plan.total[0], 6);

    char name[96];
    rank_policy_name(&pol, name, sizeof name);
    CHECK_STR_EQ(name, "auto:r_max=6,start=8,keep=0.01");
    rank_policy back;
    CHECK_INT_EQ(rank_policy_parse(&back, name, NULL), 0);
    CHECK(!memcmp(&back, &pol, sizeof pol));
    /* A bad setting says what the key takes; an unknown key lists the known ones. */
    check_refused("auto:cut=1", "cut is a number in [0.05, 0.95]", NULL);
    check_refused("auto:stable=2", "stable is a whole number in [0, 1]", NULL);
    check_refused("auto:start=2.5", "start is a whole number in [0, 4096]", NULL);
    check_refused("auto:theta=0", "(0, 100]", NULL);
    check_refused("auto:bogus=1", "'bogus' is unknown (r_min, r_max,", "keep, stable, gain)");
    CHECK_INT_EQ(rank_policy_parse(&back, "auto:stable=0", NULL), 0);
    rank_policy_name(&back, name, sizeof name);
    CHECK_STR_EQ(name, "auto:stable=0");
    free(S);
    model_destroy(m);
}
