/* Tests of models, adapters and training: whole-model gradients against finite differences, learning,
 * frozen bases, determinism and file round trips. */
#include "tests/test.h"

#include "core/model.h"
#include "core/rng.h"
#include "core/train.h"
#include "io/dataset_io.h"
#include "io/model_io.h"
#include "tests/model_check.h"

static model *small_vit(uint64_t seed)
{
    model_config c = {.kind = MODEL_VIT, .channels = 2, .height = 8, .width = 8, .patch = 4, .dim = 8,
                      .depth = 2, .heads = 2, .mlp_dim = 12, .n_classes = 3};
    model *m = model_create(&c, NULL);
    CHECK(m != NULL);
    model_init_random(m, seed);
    return m;
}

static model *small_mlp(int in, int h, int classes, uint64_t seed)
{
    model_config c = {.kind = MODEL_MLP, .input_dim = in, .n_hidden = 2, .hidden = {h, h}, .n_classes = classes};
    model *m = model_create(&c, NULL);
    CHECK(m != NULL);
    model_init_random(m, seed);
    return m;
}

TEST(model_vit_base_gradients_match_finite_differences)
{
    model *m = small_vit(1);
    check_model_grads(m, NULL, 3, 6);
    model_destroy(m);
}

TEST(model_mlp_base_gradients_match_finite_differences)
{
    model *m = small_mlp(10, 7, 4, 2);
    check_model_grads(m, NULL, 5, 6);
    model_destroy(m);
}

static adapter *random_adapter(model *m, int rank, int classes, uint64_t seed)
{
    int ranks[MODEL_MAX_LINEARS] = {0};
    for (int li = 0; li < m->n_linear; li++)
        if (!m->linear[li].is_head) ranks[li] = rank;
    adapter *a = adapter_create(m, ranks, 2.0f * rank, classes, NULL);
    CHECK(a != NULL);
    adapter_init(a, m, seed);
    /* A non-zero B so every LoRA gradient path carries signal. */
    for (int li = 0; li < a->n_linear; li++)
        if (a->rank[li]) fill_normal(param_set_ptr(&a->params, a->B[li]), a->params.t[a->B[li]].numel, 0.3f, seed + li);
    return a;
}

TEST(model_vit_adapter_gradients_match_finite_differences)
{
    model *m = small_vit(4);
    adapter *a = random_adapter(m, 2, 5, 9);  /* patch_embed adapted too; 5 classes != base's 3 */
    check_model_grads(m, a, 3, 6);
    adapter_destroy(a);
    model_destroy(m);
}

TEST(model_mlp_adapter_gradients_match_finite_differences)
{
    model *m = small_mlp(10, 7, 4, 5);
    adapter *a = random_adapter(m, 3, 4, 11);
    check_model_grads(m, a, 4, 6);
    adapter_destroy(a);
    model_destroy(m);
}

TEST(model_adapter_with_zero_b_matches_base)
{
    model *m = small_vit(6);
    int ranks[MODEL_MAX_LINEARS] = {0};
    for (int li = 0; li < m->n_linear; li++) ranks[li] = m->linear[li].is_head ? 0 : 2;
    adapter *a = adapter_create(m, ranks, 4.0f, 3, NULL);
    adapter_init(a, m, 1);
    float x[2 * 2 * 8 * 8];
    fill_normal(x, sizeof x / sizeof *x, 1.0f, 3);
    float pb[6], pa[6];
    CHECK_INT_EQ(model_predict(m, NULL, x, 2, 2, pb, NULL, NULL), 0);
    CHECK_INT_EQ(model_predict(m, a, x, 2, 2, pa, NULL, NULL), 0);
    CHECK_ARRAY_NEAR(pa, pb, 6, 0, 0);
    adapter_destroy(a);
    model_destroy(m);
}

TEST(model_vit_param_views_name_their_tensors)
{
    model *m = small_vit(6);
    char name[PARAM_NAME_MAX];
    CHECK_INT_EQ(m->vit.cls_token, param_set_find(&m->params, "cls_token"));
    CHECK_INT_EQ(m->vit.pos_embed, param_set_find(&m->params, "pos_embed"));
    CHECK_INT_EQ(m->vit.ln.weight, param_set_find(&m->params, "ln.weight"));
    CHECK_INT_EQ(m->vit.ln.bias, param_set_find(&m->params, "ln.bias"));
    for (int l = 0; l < m->cfg.depth; l++) {
        const char *part[4] = {"ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"};
        const int idx[4] = {m->vit.ln1[l].weight, m->vit.ln1[l].bias, m->vit.ln2[l].weight, m->vit.ln2[l].bias};
        for (int j = 0; j < 4; j++) {
            snprintf(name, sizeof name, "blocks.%d.%s", l, part[j]);
            CHECK_INT_EQ(idx[j], param_set_find(&m->params, name));
        }
    }
    model *p = small_mlp(10, 7, 4, 6);
    CHECK_INT_EQ(p->vit.cls_token, -1);
    CHECK_INT_EQ(p->vit.ln1[0].weight, -1);
    model_destroy(p);
    model_destroy(m);
}

TEST(model_adapter_lora_set_alpha_keeps_every_change)
{
    model *m = small_mlp(10, 7, 4, 5);
    int ranks[MODEL_MAX_LINEARS] = {3, 2};
    adapter *a = adapter_create(m, ranks, 48.0f, 4, NULL);
    adapter_init(a, m, 2);
    for (int li = 0; li < 2; li++) fill_normal(param_set_ptr(&a->params, a->B[li]), a->params.t[a->B[li]].numel, 0.5f, 7 + li);
    float before[70], after[70];
    for (int li = 0; li < 2; li++) {
        adapter_delta(before, a, m, li);
        adapter_lora_set_alpha(a, 16.0f);
        CHECK(a->alpha == 16.0f);
        adapter_delta(after, a, m, li);
        int n = m->linear[li].out * m->linear[li].in;
        CHECK_ARRAY_NEAR(after, before, n, 1e-6, 1e-5);
        CHECK(fabsf(adapter_scale(a, li) - 16.0f / (float)ranks[li]) < 1e-6f);
        adapter_lora_set_alpha(a, 48.0f); /* and back, for the next layer */
    }
    adapter_destroy(a);
    model_destroy(m);
}

TEST(model_adapter_rejects_bad_ranks)
{
    model *m = small_mlp(10, 7, 4, 5);
    int ranks[MODEL_MAX_LINEARS] = {8};  /* fc1 is 10 -> 7, so at most 7 */
    clad_err e = {0};
    CHECK(adapter_create(m, ranks, 1.0f, 4, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_EINVAL);
    CHECK(strstr(e.msg, "fc1") != NULL);
    int head_rank[MODEL_MAX_LINEARS] = {0, 0, 1};
    clad_err_clear(&e);
    CHECK(adapter_create(m, head_rank, 1.0f, 4, &e) == NULL);
    CHECK(strstr(e.msg, "head") != NULL);
    model_destroy(m);
}

/* Labels from a random linear teacher: argmax(Wt x). */
static void teacher_data(dataset *d, int n, int in, int classes, uint64_t seed)
{
    CHECK_INT_EQ(dataset_init(d, n, 1, (int[]){in}, NULL), 0);
    float *Wt = malloc(sizeof(float) * (size_t)classes * in);
    fill_normal(Wt, (size_t)classes * in, 1.0f, 1000);
    fill_normal(d->x, (size_t)n * in, 1.0f, seed);
    for (int i = 0; i < n; i++) {
        int best = 0;
        float bv = -1e30f;
        for (int k = 0; k < classes; k++) {
            float s = 0;
            for (int j = 0; j < in; j++) s += Wt[k * in + j] * d->x[(size_t)i * in + j];
            if (s > bv) { bv = s; best = k; }
        }
        d->y[i] = best;
    }
    d->n_classes = classes;
    free(Wt);
}

TEST(model_mlp_learns_synthetic_task)
{
    dataset tr, te;
    teacher_data(&tr, 4000, 16, 4, 1);
    teacher_data(&te, 1000, 16, 4, 2);
    model *m = small_mlp(16, 64, 4, 3);
    train_config tc;
    train_config_default(&tc);
    tc.epochs = 15;
    tc.batch = 64;
    tc.lr = 3e-3f;
    CHECK_INT_EQ(train_run(m, NULL, &tr, &tc, NULL, NULL, NULL, NULL), 0);
    eval_result ev;
    CHECK_INT_EQ(model_evaluate(m, NULL, &te, 256, &ev, NULL), 0);
    CHECK_MSG(ev.accuracy >= 0.95f, "held-out accuracy %.4f < 0.95", (double)ev.accuracy);
    model_destroy(m);
    dataset_finish(&tr);
    dataset_finish(&te);
}

/* Quadrant of two projections: a frozen random narrow MLP cannot represent it with its head alone. */
static void quadrant_data(dataset *d, int n, int in, uint64_t seed)
{
    CHECK_INT_EQ(dataset_init(d, n, 1, (int[]){in}, NULL), 0);
    fill_normal(d->x, (size_t)n * in, 1.0f, seed);
    for (int i = 0; i < n; i++) {
        const float *x = d->x + (size_t)i * in;
        float u = x[0] + x[1] - x[2], v = x[3] - x[4] + x[5];
        d->y[i] = (u > 0) * 2 + (v > 0);
    }
    d->n_classes = 4;
}

TEST(model_lora_on_frozen_mlp_learns_what_head_cannot)
{
    dataset tr, te;
    quadrant_data(&tr, 4000, 32, 1);
    quadrant_data(&te, 1000, 32, 2);
    model *m = small_mlp(32, 16, 4, 9);
    uint8_t *before = NULL, *after = NULL;
    size_t nb = 0, na = 0;
    CHECK_INT_EQ(model_to_buffer(m, &before, &nb, NULL), 0);
    train_config tc;
    train_config_default(&tc);
    tc.epochs = 10;
    tc.lr = 1e-2f;
    float acc[2];
    for (int variant = 0; variant < 2; variant++) {
        int ranks[MODEL_MAX_LINEARS] = {0};
        if (variant) ranks[0] = ranks[1] = 4;
        adapter *a = adapter_create(m, ranks, 8.0f, 4, NULL);
        adapter_init(a, m, 5);
        CHECK_INT_EQ(train_run(m, a, &tr, &tc, NULL, NULL, NULL, NULL), 0);
        eval_result ev;
        CHECK_INT_EQ(model_evaluate(m, a, &te, 256, &ev, NULL), 0);
        acc[variant] = ev.accuracy;
        adapter_destroy(a);
    }
    printf("# head only %.4f, LoRA %.4f\n", (double)acc[0], (double)acc[1]);
    CHECK_MSG(acc[1] >= 0.9f, "LoRA accuracy %.4f < 0.9", (double)acc[1]);
    CHECK_MSG(acc[1] - acc[0] >= 0.1f, "LoRA %.4f is not clearly above head-only %.4f", (double)acc[1],
              (double)acc[0]);
    CHECK_INT_EQ(model_to_buffer(m, &after, &na, NULL), 0);
    CHECK(nb == na && memcmp(before, after, nb) == 0);  /* the base is bit-identical */
    free(before);
    free(after);
    model_destroy(m);
    dataset_finish(&tr);
    dataset_finish(&te);
}

static void train_once(uint64_t seed, uint8_t **out, size_t *len)
{
    dataset tr;
    teacher_data(&tr, 300, 2 * 8 * 8, 3, 5);
    tr.rank = 3;
    tr.shape[0] = 2; tr.shape[1] = 8; tr.shape[2] = 8;
    model *m = small_vit(1);
    adapter *a = random_adapter(m, 2, 3, 2);
    train_config tc;
    train_config_default(&tc);
    tc.epochs = 2;
    tc.batch = 32;
    tc.seed = seed;
    CHECK_INT_EQ(train_run(m, a, &tr, &tc, NULL, NULL, NULL, NULL), 0);
    CHECK_INT_EQ(adapter_to_buffer(a, m, out, len, NULL), 0);
    adapter_destroy(a);
    model_destroy(m);
    dataset_finish(&tr);
}

TEST(model_training_is_deterministic)
{
    uint8_t *a = NULL, *b = NULL, *c = NULL;
    size_t na, nb, nc;
    train_once(7, &a, &na);
    train_once(7, &b, &nb);
    train_once(8, &c, &nc);
    CHECK(na == nb && memcmp(a, b, na) == 0);
    CHECK(na == nc && memcmp(a, c, na) != 0);
    free(a);
    free(b);
    free(c);
}

static bool count_steps(void *ctx, const train_progress *p)
{
    int *n = ctx;
    (*n)++;
    return p->step < 3;  /* cancel after the third step */
}

TEST(model_training_cancels_and_reports_progress)
{
    dataset tr;
    teacher_data(&tr, 256, 10, 4, 1);
    model *m = small_mlp(10, 8, 4, 1);
    train_config tc;
    train_config_default(&tc);
    tc.batch = 16;
    int steps = 0;
    clad_err e = {0};
    CHECK_INT_EQ(train_run(m, NULL, &tr, &tc, count_steps, &steps, NULL, &e), CLAD_ECANCELLED);
    CHECK_INT_EQ(steps, 3);
    tr.x[5] = NAN;
    clad_err_clear(&e);
    CHECK_INT_EQ(train_run(m, NULL, &tr, &tc, NULL, NULL, NULL, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "not finite") != NULL);
    tr.x[5] = 0;
    tr.y[9] = 4;
    tr.n_classes = 5;
    clad_err_clear(&e);
    CHECK_INT_EQ(train_run(m, NULL, &tr, &tc, NULL, NULL, NULL, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "sample 9") != NULL);
    model_destroy(m);
    dataset_finish(&tr);
}

TEST(model_files_round_trip)
{
    model *m = small_vit(3);
    adapter *a = random_adapter(m, 2, 3, 4);
    char mp[512], ap[512];
    snprintf(mp, sizeof mp, "%s/base.safetensors", test_tmpdir());
    snprintf(ap, sizeof ap, "%s/adapter.safetensors", test_tmpdir());
    CHECK_INT_EQ(model_save(m, mp, NULL), 0);
    CHECK_INT_EQ(adapter_save(a, m, ap, NULL), 0);
    clad_err e = {0};
    model *m2 = model_load(mp, NULL, &e);
    CHECK_MSG(m2 != NULL, "%s", e.msg);
    adapter *a2 = adapter_load(m2, ap, &e);
    CHECK_MSG(a2 != NULL, "%s", e.msg);
    CHECK(param_set_same_layout(&m->params, &m2->params));
    CHECK(memcmp(m->params.data, m2->params.data, m->params.total * sizeof(float)) == 0);
    CHECK(memcmp(a->params.data, a2->params.data, a->params.total * sizeof(float)) == 0);
    CHECK_INT_EQ(a2->rank[1], 2);
    /* A base config that does not match the file is refused with the tensor named. */
    model_config other = m->cfg;
    other.mlp_dim = 16;
    clad_err_clear(&e);
    CHECK(model_load(mp, &other, &e) == NULL);
    CHECK(strstr(e.msg, "fc1") != NULL);
    adapter_destroy(a);
    adapter_destroy(a2);
    model_destroy(m);
    model_destroy(m2);
}

TEST(model_config_json_errors_name_the_field)
{
    model_config c;
    clad_err e = {0};
    CHECK_INT_EQ(model_config_parse(&c, "\"vit-tiny\"", &e), 0);
    CHECK_INT_EQ(c.dim, 64);
    CHECK_INT_EQ(model_config_parse(&c, "{\"model\":\"vit-tiny\",\"classes\":5}", &e), 0);
    CHECK_INT_EQ(c.n_classes, 5);
    CHECK_INT_EQ(c.depth, 4);
    CHECK_INT_EQ(model_config_parse(&c, "{\"model\":\"mlp\",\"input_dim\":784,\"hidden\":[256,256],\"classes\":10}", &e), 0);
    CHECK_INT_EQ(c.hidden[1], 256);
    CHECK_INT_EQ(model_config_parse(&c, "{\"model\":\"vit\",\"channels\":1,\"height\":28,\"width\":28,\"patch\":5,"
                                        "\"dim\":64,\"depth\":1,\"heads\":4,\"mlp_dim\":8,\"classes\":10}", &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "patch 5") != NULL);
    clad_err_clear(&e);
    CHECK_INT_EQ(model_config_parse(&c, "{\"model\":\"mlp\",\"inputs\":3}", &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "'inputs'") != NULL);
    clad_err_clear(&e);
    /* An unknown preset, quoted or bare, is bad input; a bare known one parses. */
    CHECK_INT_EQ(model_config_parse(&c, "\"resnet\"", &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "'resnet'") != NULL);
    clad_err_clear(&e);
    CHECK_INT_EQ(model_config_parse(&c, "resnet", &e), CLAD_EINVAL);
    clad_err_clear(&e);
    CHECK_INT_EQ(model_config_parse(&c, " mlp ", &e), CLAD_EINVAL);
    clad_err_clear(&e);
    CHECK_INT_EQ(model_config_parse(&c, "mlp", &e), 0);
    CHECK_INT_EQ(c.kind, MODEL_MLP);
}

TEST(model_vit_tiny_loss_falls_on_fashion_mnist)
{
    dataset all, tr;
    clad_err e = {0};
    CHECK_MSG(dataset_load_fmnist(&all, NULL, false, &e) == 0, "%s", e.msg);
    CHECK_INT_EQ(dataset_sample(&tr, &all, 1024, 1, NULL), 0);
    model_config c;
    CHECK_INT_EQ(model_config_preset(&c, "vit-tiny", NULL), 0);
    model *m = model_create(&c, NULL);
    model_init_random(m, 1);
    eval_result before, after;
    CHECK_INT_EQ(model_evaluate(m, NULL, &tr, 256, &before, NULL), 0);
    train_config tc;
    train_config_default(&tc);
    tc.epochs = 3;
    tc.batch = 64;
    CHECK_INT_EQ(train_run(m, NULL, &tr, &tc, NULL, NULL, NULL, &e), 0);
    CHECK_INT_EQ(model_evaluate(m, NULL, &tr, 256, &after, NULL), 0);
    printf("# loss %.4f -> %.4f, accuracy %.3f -> %.3f\n", (double)before.loss, (double)after.loss,
           (double)before.accuracy, (double)after.accuracy);
    CHECK_MSG(after.loss < 0.7f * before.loss, "loss fell only from %.4f to %.4f", (double)before.loss,
              (double)after.loss);
    model_destroy(m);
    dataset_finish(&tr);
    dataset_finish(&all);
}

TEST(model_vit_erf_gelu_and_eps_gradients_match_finite_differences)
{
    /* The config of imported timm/HF ViTs: exact GELU and their LayerNorm eps, in forward and backward.
     * (The two GELU derivatives differ by at most 9e-4, below finite differences' resolution, so which
     * derivative is used is pinned by layers_gelu_erf_values; this checks the wiring stays consistent.) */
    model *m = small_vit(2);
    m->cfg.gelu_erf = true;
    m->cfg.ln_eps = 1e-6f;
    check_model_grads(m, NULL, 3, 6);
    adapter *a = random_adapter(m, 2, 3, 5);
    check_model_grads(m, a, 3, 6);
    adapter_destroy(a);
    model_destroy(m);
}

typedef struct step_log {
    long cancel_after;   /* 0: never */
    int n;
    long step[64];
    float lr[64];
} step_log;

static bool log_steps(void *ctx, const train_progress *p)
{
    step_log *l = ctx;
    if (l->n < 64) {
        l->step[l->n] = p->step;
        l->lr[l->n++] = p->lr;
    }
    return !l->cancel_after || p->step < l->cancel_after;
}

/* A window of steps runs exactly those steps of the whole run: the first part ends with the weights a run
 * stopped at the same step has, the second part sees the whole run's step numbers and learning rates. */
TEST(model_training_window_runs_the_whole_runs_steps)
{
    dataset tr;
    teacher_data(&tr, 200, 10, 4, 3);
    model *m = small_mlp(10, 8, 4, 1);
    train_config tc;
    train_config_default(&tc);
    tc.epochs = 3;
    tc.batch = 32;  /* 7 steps per epoch, 21 in all */
    CHECK_INT_EQ(train_total_steps(&tc, tr.n), 21);
    adapter *whole = random_adapter(m, 2, 4, 2), *stopped = random_adapter(m, 2, 4, 2);
    adapter *first = random_adapter(m, 2, 4, 2);
    step_log lw = {0}, ls = {.cancel_after = 10}, l1 = {0}, l2 = {0};
    CHECK_INT_EQ(train_run(m, whole, &tr, &tc, log_steps, &lw, NULL, NULL), 0);
    CHECK_INT_EQ(train_run(m, stopped, &tr, &tc, log_steps, &ls, NULL, NULL), CLAD_ECANCELLED);
    train_config t1 = tc, t2 = tc;
    t1.step_end = 10;
    t2.step_begin = 10;
    train_result r1, r2;
    CHECK_INT_EQ(train_run(m, first, &tr, &t1, log_steps, &l1, &r1, NULL), 0);
    CHECK_INT_EQ(r1.steps, 10);
    CHECK(!memcmp(first->params.data, stopped->params.data, first->params.total * sizeof(float)));
    CHECK_INT_EQ(train_run(m, first, &tr, &t2, log_steps, &l2, &r2, NULL), 0);
    CHECK_INT_EQ(r2.steps, 11);
    CHECK_INT_EQ(l2.n, 11);
    for (int i = 0; i < l2.n; i++) {
        CHECK_INT_EQ(l2.step[i], lw.step[10 + i]);
        CHECK(l2.lr[i] == lw.lr[10 + i]);
    }
    /* The optimizer restarts with the window, so the two parts differ from the whole run only after the cut. */
    CHECK(memcmp(first->params.data, whole->params.data, first->params.total * sizeof(float)) != 0);
    clad_err e = {0};
    t1.step_begin = 12;
    CHECK_INT_EQ(train_run(m, first, &tr, &t1, NULL, NULL, NULL, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "window") != NULL);
    t1.step_begin = 0;
    t1.step_end = 22;
    clad_err_clear(&e);
    CHECK_INT_EQ(train_run(m, first, &tr, &t1, NULL, NULL, NULL, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "21 steps") != NULL);
    t2.step_begin = 21;  /* nothing left to run */
    clad_err_clear(&e);
    CHECK_INT_EQ(train_run(m, first, &tr, &t2, NULL, NULL, NULL, &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "[21, 21)") != NULL);
    adapter_destroy(whole);
    adapter_destroy(stopped);
    adapter_destroy(first);
    model_destroy(m);
    dataset_finish(&tr);
}
