/* Routing statistics and the LDA router (core/route.h) on tasks of known separability. A base without
 * hidden layers has the inputs themselves as features, so the Gaussians drawn here are exactly what the
 * router sees: its accuracy and posteriors can be checked against what the geometry allows. */
#include "tests/test.h"

#include <math.h>

#include "core/route.h"
#include "core/rng.h"
#include "io/model_io.h"
#include "io/signature_io.h"

#define DIM 12

/* A base whose features are its inputs (no hidden layer). */
static model *identity_base(void)
{
    model_config c = {.kind = MODEL_MLP, .input_dim = DIM, .n_hidden = 0, .n_classes = 2};
    model *m = model_create(&c, NULL);
    CHECK(m != NULL);
    model_init_random(m, 1);
    return m;
}

/* n samples of a task with `classes` classes: class k of task `task_seed` is N(centre, I) with the centre at
 * `sep` times a fixed random unit direction per (task, class); a correlated nuisance dimension pair makes
 * the shared covariance matter. */
static void make_task(dataset *d, int n, int classes, uint64_t task_seed, float sep, uint64_t sample_seed)
{
    CHECK_INT_EQ(dataset_init(d, n, 1, (int[]){DIM}, NULL), 0);
    float centre[8][DIM];
    rng r;
    rng_init(&r, task_seed);
    for (int k = 0; k < classes; k++) {
        double norm = 0;
        for (int j = 0; j < DIM; j++) {
            centre[k][j] = rng_normal(&r);
            norm += (double)(centre[k][j] * centre[k][j]);
        }
        for (int j = 0; j < DIM; j++) centre[k][j] *= sep / (float)sqrt(norm);
    }
    rng_init(&r, sample_seed);
    for (int i = 0; i < n; i++) {
        int k = i % classes;
        float *x = d->x + (size_t)i * DIM;
        for (int j = 0; j < DIM; j++) x[j] = centre[k][j] + rng_normal(&r);
        x[1] = x[0] + 0.1f * x[1]; /* strongly correlated with x[0] */
        d->y[i] = k;
    }
    d->n_classes = classes;
}

/* Fraction of d's samples routed to task `want`, and the mean posterior of the chosen task. */
static double routed_to(const task_router *r, const model *m, const dataset *d, int T, int want, double *mean_conf)
{
    float *feat = malloc((size_t)d->n * DIM * sizeof *feat), *p = malloc((size_t)d->n * T * sizeof *p);
    float *dist = malloc((size_t)d->n * sizeof *dist);
    float *scratch = malloc(task_router_scratch_floats(r, d->n) * sizeof *scratch);
    model_ws *ws = model_ws_create_for(m, NULL, 64, false, NULL);
    route_base_features(feat, ws, m, d->x, d->n);
    task_router_score(r, feat, d->n, p, dist, scratch);
    int hits = 0;
    double conf = 0;
    for (int i = 0; i < d->n; i++) {
        int best = 0;
        for (int t = 1; t < T; t++)
            if (p[(size_t)i * T + t] > p[(size_t)i * T + best]) best = t;
        hits += best == want;
        conf += (double)p[(size_t)i * T + best];
    }
    if (mean_conf) *mean_conf = conf / d->n;
    model_ws_destroy(ws);
    free(feat);
    free(p);
    free(dist);
    free(scratch);
    return (double)hits / d->n;
}

TEST(routing_separated_tasks_route_near_perfectly)
{
    model *m = identity_base();
    route_stats rs[3];
    dataset tr[3], te[3];
    for (int t = 0; t < 3; t++) {
        make_task(&tr[t], 3000, 2, 100 + (uint64_t)t, 6.0f, 1 + (uint64_t)t);
        make_task(&te[t], 600, 2, 100 + (uint64_t)t, 6.0f, 50 + (uint64_t)t);
        CHECK_INT_EQ(route_stats_compute(&rs[t], m, &tr[t], 2, 1, NULL), 0);
        CHECK_INT_EQ(rs[t].dim, DIM);
        CHECK_NEAR(rs[t].count[0], 1500.0f, 0.0f);
    }
    const route_stats *ptr[3] = {&rs[0], &rs[1], &rs[2]};
    /* The shared covariance (default) and half per-task covariances both separate them. */
    for (int k = 0; k < 2; k++) {
        route_config cfg;
        route_config_default(&cfg);
        if (k) cfg.pool = 0.5;
        task_router *r = task_router_create(ptr, 3, &cfg, NULL);
        CHECK(r != NULL);
        for (int t = 0; t < 3; t++) {
            double conf;
            double acc = routed_to(r, m, &te[t], 3, t, &conf);
            CHECK_MSG(acc >= 0.98, "pool %g: task %d routed correctly for %.3f of its inputs", cfg.pool, t, acc);
            CHECK_MSG(conf >= 0.95, "pool %g: task %d mean confidence %.3f", cfg.pool, t, conf);
        }
        task_router_destroy(r);
    }
    for (int t = 0; t < 3; t++) {
        route_stats_finish(&rs[t]);
        dataset_finish(&tr[t]);
        dataset_finish(&te[t]);
    }
    model_destroy(m);
}

TEST(routing_identical_tasks_are_ambiguous)
{
    model *m = identity_base();
    route_stats a, b;
    dataset ta, tb, te;
    make_task(&ta, 2000, 2, 7, 5.0f, 1);
    make_task(&tb, 2000, 2, 7, 5.0f, 2); /* the same task, other samples */
    make_task(&te, 400, 2, 7, 5.0f, 3);
    CHECK_INT_EQ(route_stats_compute(&a, m, &ta, 2, 1, NULL), 0);
    CHECK_INT_EQ(route_stats_compute(&b, m, &tb, 2, 1, NULL), 0);
    const route_stats *ptr[2] = {&a, &b};
    task_router *r = task_router_create(ptr, 2, NULL, NULL);
    double conf;
    double acc = routed_to(r, m, &te, 2, 0, &conf);
    /* Neither task is preferred: confidences near 1/2, and the choice close to a coin toss. */
    CHECK_MSG(conf < 0.65, "mean confidence %.3f for identical tasks", conf);
    CHECK_MSG(acc > 0.2 && acc < 0.8, "%.3f of the inputs went to the first of two identical tasks", acc);
    task_router_destroy(r);
    route_stats_finish(&a);
    route_stats_finish(&b);
    dataset_finish(&ta);
    dataset_finish(&tb);
    dataset_finish(&te);
    model_destroy(m);
}

TEST(routing_distance_flags_inputs_unlike_every_task)
{
    model *m = identity_base();
    route_stats a;
    dataset ta, te, far;
    make_task(&ta, 2000, 2, 11, 4.0f, 1);
    make_task(&te, 400, 2, 11, 4.0f, 2);
    make_task(&far, 400, 2, 12, 60.0f, 3); /* far from every class mean */
    CHECK_INT_EQ(route_stats_compute(&a, m, &ta, 2, 1, NULL), 0);
    const route_stats *ptr[1] = {&a};
    task_router *r = task_router_create(ptr, 1, NULL, NULL);
    float *feat = malloc(400 * DIM * sizeof *feat), dist[400], p[400];
    float *scratch = malloc(task_router_scratch_floats(r, 400) * sizeof *scratch);
    model_ws *ws = model_ws_create_for(m, NULL, 64, false, NULL);
    double near_mean = 0, far_min = INFINITY;
    route_base_features(feat, ws, m, te.x, 400);
    task_router_score(r, feat, 400, p, dist, scratch);
    for (int i = 0; i < 400; i++) near_mean += (double)dist[i] / 400;
    route_base_features(feat, ws, m, far.x, 400);
    task_router_score(r, feat, 400, p, dist, scratch);
    for (int i = 0; i < 400; i++) far_min = fmin(far_min, (double)dist[i]);
    CHECK_MSG(near_mean > 0.7 && near_mean < 1.3, "in-distribution distance %.3f (about 1 expected)", near_mean);
    CHECK_MSG(far_min > 3.0, "the nearest far input is at %.3f", far_min);
    model_ws_destroy(ws);
    free(feat);
    free(scratch);
    task_router_destroy(r);
    route_stats_finish(&a);
    dataset_finish(&ta);
    dataset_finish(&te);
    dataset_finish(&far);
    model_destroy(m);
}

TEST(routing_stats_round_trip_through_a_blob_and_drop_small_classes)
{
    model *m = identity_base();
    dataset d;
    make_task(&d, 403, 3, 5, 3.0f, 1);
    /* Class 2 keeps only ROUTE_MIN_CLASS_SAMPLES - 1 samples: it must be left out. */
    int kept = 0;
    for (int i = 0; i < d.n; i++)
        if (d.y[i] == 2 && kept++ >= ROUTE_MIN_CLASS_SAMPLES - 1) d.y[i] = 0;
    route_stats rs, back;
    CHECK_INT_EQ(route_stats_compute(&rs, m, &d, 3, 4, NULL), 0);
    CHECK(rs.count[2] == 0.0f);
    CHECK_INT_EQ(route_stats_seen(&rs), 2);
    /* Up to 4 components per class, each of at least ROUTE_MIN_CLASS_SAMPLES samples, summing to the class. */
    CHECK(rs.n_comp > 2 && rs.n_comp <= 8);
    float per_class[3] = {0};
    for (int j = 0; j < rs.n_comp; j++) {
        CHECK(rs.comp_count[j] >= ROUTE_MIN_CLASS_SAMPLES);
        per_class[rs.comp_class[j]] += rs.comp_count[j];
    }
    CHECK_ARRAY_NEAR(per_class, rs.count, 3, 0.0, 0.0);
    CHECK_INT_EQ((int)route_stats_bytes(&rs), (3 + 2 * rs.n_comp + rs.n_comp * DIM + DIM * (DIM + 1) / 2) * 4);
    adapter *a = adapter_create(m, NULL, 1.0f, 3, NULL);
    adapter_init(a, m, 1);
    signature sig = {.n_linear = m->n_linear};
    uint8_t *blob;
    size_t len;
    CHECK_INT_EQ(adapter_blob_build_routed(a, m, &sig, &rs, &blob, &len, NULL), 0);
    CHECK_INT_EQ(route_stats_from_blob(&back, m, blob, len, NULL), 0);
    CHECK_INT_EQ(back.n_classes, 3);
    CHECK_INT_EQ(back.n_comp, rs.n_comp);
    CHECK_ARRAY_NEAR(back.count, rs.count, 3, 0.0, 0.0);
    CHECK_ARRAY_NEAR(back.comp_count, rs.comp_count, rs.n_comp, 0.0, 0.0);
    for (int j = 0; j < rs.n_comp; j++) CHECK_INT_EQ(back.comp_class[j], rs.comp_class[j]);
    CHECK_ARRAY_NEAR(back.mean, rs.mean, rs.n_comp * DIM, 0.0, 0.0);
    CHECK_ARRAY_NEAR(back.scatter, rs.scatter, DIM * DIM, 0.0, 0.0);
    route_stats_finish(&back);
    /* The blob still loads as an adapter; one without statistics says so. */
    adapter *a2 = adapter_from_buffer(m, blob, len, NULL);
    CHECK(a2 != NULL);
    adapter_destroy(a2);
    free(blob);
    CHECK_INT_EQ(adapter_blob_build(a, m, &sig, &blob, &len, NULL), 0);
    clad_err err = {0};
    CHECK_INT_EQ(route_stats_from_blob(&back, m, blob, len, &err), CLAD_ENOTFOUND);
    free(blob);
    adapter_destroy(a);
    route_stats_finish(&rs);
    dataset_finish(&d);
    model_destroy(m);
}

TEST(routing_router_refuses_bad_sets)
{
    model *m = identity_base();
    clad_err err = {0};
    CHECK(task_router_create(NULL, 0, NULL, &err) == NULL);
    CHECK_INT_EQ(err.code, CLAD_EINVAL);
    route_stats a, b;
    CHECK_INT_EQ(route_stats_init(&a, DIM, 2, 1, NULL), 0);
    CHECK_INT_EQ(route_stats_init(&b, DIM + 1, 2, 1, NULL), 0);
    a.count[0] = b.count[0] = a.comp_count[0] = b.comp_count[0] = 10;
    const route_stats *ptr[2] = {&a, &b};
    clad_err_clear(&err);
    CHECK(task_router_create(ptr, 2, NULL, &err) == NULL);
    CHECK_INT_EQ(err.code, CLAD_EINVAL);
    /* Too few samples: nothing to route with. */
    dataset d;
    make_task(&d, 10, 2, 1, 1.0f, 1);
    route_stats c;
    clad_err_clear(&err);
    CHECK_INT_EQ(route_stats_compute(&c, m, &d, 2, 1, &err), CLAD_EINVAL);
    dataset_finish(&d);
    route_stats_finish(&a);
    route_stats_finish(&b);
    model_destroy(m);
}

/* Task A's only class has two far-apart modes (+c and -c); task B's class sits between them, where A's
 * single mean lies. One mean per class cannot tell B's inputs from A's; two components per class can. */
TEST(routing_components_separate_a_bimodal_class)
{
    model *m = identity_base();
    dataset a, b, tb;
    CHECK_INT_EQ(dataset_init(&a, 2000, 1, (int[]){DIM}, NULL), 0);
    CHECK_INT_EQ(dataset_init(&b, 2000, 1, (int[]){DIM}, NULL), 0);
    CHECK_INT_EQ(dataset_init(&tb, 400, 1, (int[]){DIM}, NULL), 0);
    rng r;
    rng_init(&r, 3);
    for (int i = 0; i < 2000 * DIM; i++) {
        a.x[i] = rng_normal(&r) + ((i / DIM) % 2 ? 8.0f : -8.0f) * (i % DIM == 0);
        b.x[i] = rng_normal(&r);
    }
    for (int i = 0; i < 400 * DIM; i++) tb.x[i] = rng_normal(&r);
    a.n_classes = b.n_classes = tb.n_classes = 1;
    double acc[2];
    for (int k = 0; k < 2; k++) {
        route_stats sa, sb;
        CHECK_INT_EQ(route_stats_compute(&sa, m, &a, 1, k ? 2 : 1, NULL), 0);
        CHECK_INT_EQ(route_stats_compute(&sb, m, &b, 1, k ? 2 : 1, NULL), 0);
        if (k) CHECK_INT_EQ(sa.n_comp, 2);
        const route_stats *ptr[2] = {&sa, &sb};
        task_router *rt = task_router_create(ptr, 2, NULL, NULL);
        acc[k] = routed_to(rt, m, &tb, 2, 1, NULL);
        task_router_destroy(rt);
        route_stats_finish(&sa);
        route_stats_finish(&sb);
    }
    CHECK_MSG(acc[0] < 0.8, "one component per class routed %.3f of B's inputs right", acc[0]);
    CHECK_MSG(acc[1] > 0.95, "two components per class routed %.3f of B's inputs right", acc[1]);
    dataset_finish(&a);
    dataset_finish(&b);
    dataset_finish(&tb);
    model_destroy(m);
}
