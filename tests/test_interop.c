/* Interop with PyTorch users' formats, checked against an independent implementation: the PyTorch script
 * tests/interop/make_checkpoints.py (timm and Hugging Face ViT forward passes, PEFT's LoRA layout and
 * scaling, random weights). clad's logits on the same inputs must match PyTorch's (float64) within 1e-4
 * for imported bases in both layouts, for clad adapters exported to PEFT and applied in PyTorch, and for
 * PEFT adapters made in PyTorch and imported into clad. Skipped, visibly, without Debian's python3-torch.
 */
#include "tests/test.h"

#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fusion.h"
#include "core/merge.h"
#include "core/model.h"
#include "core/rng.h"
#include "core/train.h"
#include "io/dataset_io.h"
#include "io/merge_io.h"
#include "io/model_io.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "io/tar.h"
#include "io/vit_import.h"
#include "tests/daemon_util.h"

/* Debian's python3 (a python3 earlier in PATH may lack the packaged torch); CLAD_PYTHON overrides it. */
static const char *python(void)
{
    const char *p = getenv("CLAD_PYTHON");
    return p && *p ? p : "/usr/bin/python3";
}
#define SCRIPT "tests/interop/make_checkpoints.py"
#define LOGIT_TOL 1e-4

static bool have_torch(void)
{
    static int ok = -1;
    if (access(SCRIPT, R_OK) != 0) {
        printf("# skipped: %s not found (run the tests from the source tree)\n", SCRIPT);
        return false;
    }
    if (ok < 0) {
        char cmd[1100];
        snprintf(cmd, sizeof cmd, "'%s' -c 'import torch, numpy' 2>/dev/null", python());
        ok = system(cmd) == 0;
    }
    if (!ok) printf("# skipped: %s cannot import torch (install python3-torch and python3-numpy)\n", python());
    return ok;
}

/* Runs the script with args (a printf format); fails the test if it fails. */
__attribute__((format(printf, 1, 2))) static void run_script(const char *fmt, ...)
{
    char args[2048], cmd[2300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s %s", python(), SCRIPT, args);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "%s failed (status %d)", cmd, rc);
}

static char *path_in(const char *dir, const char *file)
{
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 1024, "%s/%s/%s", test_tmpdir(), dir, file);
    return p;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    uint8_t *buf = NULL;
    clad_err err = {0};
    CHECK_MSG(file_read_all(path, 1u << 30, &buf, len, &err) == 0, "%s: %s", path, err.msg);
    return buf;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f && fwrite(data, 1, len, f) == len && fclose(f) == 0, "cannot write %s", path);
}

/* A tensor of a safetensors file as floats (malloc'd); *n receives the count. */
static float *read_tensor(const char *path, const char *name, size_t *n)
{
    clad_err err = {0};
    st_reader *r = st_reader_open(path, 1u << 30, &err);
    CHECK_MSG(r, "%s: %s", path, err.msg);
    const st_tensor *t = st_reader_find(r, name);
    CHECK_MSG(t, "%s has no tensor '%s'", path, name);
    float *v = malloc((size_t)t->numel * sizeof *v);
    CHECK(v && st_tensor_to_f32(t, v, &err) == 0);
    *n = (size_t)t->numel;
    st_reader_destroy(r);
    return v;
}

static model *import_file(const char *path, const vit_import_opts *o)
{
    size_t len;
    uint8_t *buf = read_file(path, &len);
    clad_err err = {0};
    model *m = vit_import(buf, len, o, &err);
    CHECK_MSG(m, "import %s: %s", path, err.msg);
    free(buf);
    return m;
}

/* clad's logits (N, K) for x (malloc'd). */
static float *clad_logits(const model *m, const adapter *a, const float *x, int N)
{
    clad_err err = {0};
    model_ws *ws = model_ws_create_for(m, a, N, false, &err);
    CHECK_MSG(ws, "workspace: %s", err.msg);
    model_forward(ws, m, a, x, NULL, N);
    int K = a ? a->n_classes : m->cfg.n_classes;
    float *out = malloc((size_t)N * (size_t)K * sizeof *out);
    CHECK(out);
    memcpy(out, model_ws_logits(ws), (size_t)N * (size_t)K * sizeof *out);
    model_ws_destroy(ws);
    return out;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - (double)b[i]));
    return d;
}

/* clad's logits for the inputs in io (x) against `want` (the reference logits); returns the max diff. */
static double compare_logits(const char *what, const model *m, const adapter *a, const char *io, const float *want,
                             size_t n_want)
{
    size_t nx;
    float *x = read_tensor(io, "x", &nx);
    int N = (int)(nx / (size_t)model_config_input_dim(&m->cfg));
    int K = a ? a->n_classes : m->cfg.n_classes;
    CHECK_INT_EQ((size_t)N * (size_t)K, n_want);
    float *got = clad_logits(m, a, x, N);
    double d = max_diff(got, want, n_want);
    printf("# %s: %d samples x %d classes, max |clad - pytorch| = %.3g\n", what, N, K, d);
    free(x);
    free(got);
    return d;
}

static double compare_base(const char *what, const model *m, const char *io)
{
    size_t n;
    float *want = read_tensor(io, "logits", &n);
    double d = compare_logits(what, m, NULL, io, want, n);
    free(want);
    return d;
}

TEST(interop_vit_timm_import_matches_pytorch)
{
    if (!have_torch()) return;
    run_script("base --layout timm --dim 48 --heads 3 --eps 1e-6 --out %s/t", test_tmpdir());
    vit_import_opts o = {.heads = 3};
    model *m = import_file(path_in("t", "model.safetensors"), &o);
    CHECK(m->cfg.dim == 48 && m->cfg.depth == 2 && m->cfg.patch == 8 && m->cfg.height == 32 && m->cfg.channels == 3);
    CHECK(m->cfg.gelu_erf && m->cfg.ln_eps == 1e-6f && m->cfg.n_classes == 5);
    CHECK(m->cfg.inputs_finite); /* timm's ViTs take normalised pixels */
    CHECK(compare_base("timm 32x32", m, path_in("t", "io.safetensors")) <= LOGIT_TOL);

    /* The comparison can fail: the tanh GELU on the same weights is off by more than the tolerance. */
    vit_import_opts wrong = {.heads = 3, .gelu_tanh = true};
    model *mt = import_file(path_in("t", "model.safetensors"), &wrong);
    CHECK(compare_base("timm with the wrong GELU", mt, path_in("t", "io.safetensors")) > LOGIT_TOL);
    model_destroy(mt);

    /* Export in timm's layout: the same names, shapes and values as the original file, and a re-import
     * takes heads, eps and GELU from the export's config. */
    uint8_t *buf = NULL;
    size_t len = 0;
    clad_err err = {0};
    CHECK(vit_export_timm(m, &buf, &len, &err) == 0);
    st_reader *ex = st_reader_parse(buf, len, &err), *orig = st_reader_open(path_in("t", "model.safetensors"), 1u << 30, &err);
    CHECK(ex && orig);
    CHECK_INT_EQ(st_reader_count(ex), st_reader_count(orig));
    for (int i = 0; i < st_reader_count(orig); i++) {
        const st_tensor *a = st_reader_at(orig, i), *b = st_reader_find(ex, a->name);
        CHECK_MSG(b, "export lacks '%s'", a->name);
        CHECK(a->ndim == b->ndim && a->nbytes == b->nbytes && !memcmp(a->shape, b->shape, sizeof a->shape));
        CHECK_MSG(!memcmp(a->data, b->data, a->nbytes), "'%s' differs", a->name);
    }
    st_reader_destroy(ex);
    st_reader_destroy(orig);
    vit_import_opts none = {0};
    model *back = vit_import(buf, len, &none, &err);
    CHECK_MSG(back, "%s", err.msg);
    CHECK(back->cfg.heads == 3 && back->cfg.ln_eps == 1e-6f && back->cfg.gelu_erf && back->cfg.inputs_finite);
    CHECK(param_set_same_layout(&back->params, &m->params));
    CHECK(!memcmp(back->params.data, m->params.data, m->params.total * sizeof(float)));
    free(buf);
    model_destroy(back);
    model_destroy(m);
}

/* No PyTorch needed: a clad image base exported and imported back keeps its [0, 1] input range (its config
 * travels in the export), one whose config says finite keeps that; the range is in the config's JSON only
 * when it is not the default. */
TEST(interop_vit_import_keeps_the_input_range)
{
    model_config c = {.kind = MODEL_VIT, .n_classes = 3, .channels = 1, .height = 8, .width = 8, .patch = 4,
                      .dim = 16, .depth = 1, .heads = 2, .mlp_dim = 32};
    for (int finite = 0; finite < 2; finite++) {
        c.inputs_finite = finite;
        model *m = model_create(&c, NULL);
        CHECK(m != NULL);
        model_init_random(m, 7);
        uint8_t *buf = NULL;
        size_t len = 0;
        clad_err err = {0};
        CHECK(vit_export_timm(m, &buf, &len, &err) == 0);
        vit_import_opts none = {0};
        model *back = vit_import(buf, len, &none, &err);
        CHECK_MSG(back, "%s", err.msg);
        CHECK_INT_EQ(back->cfg.inputs_finite, finite);
        json_t *j = model_config_to_json(&back->cfg);
        const char *range = json_string_value(json_object_get(j, "input_range"));
        CHECK_MSG(finite ? range && !strcmp(range, "finite") : !range, "input_range %s", range ? range : "(none)");
        json_decref(j);
        free(buf);
        model_destroy(back);
        model_destroy(m);
    }
}

TEST(interop_vit_hf_import_matches_pytorch)
{
    if (!have_torch()) return;
    const char *tmp = test_tmpdir();
    run_script("base --layout hf --dim 48 --heads 3 --eps 1e-12 --classes 4 --seed 3 --out %s/h + base --layout hf --dim 48 --heads 3 "
               "--eps 1e-12 --dtype F16 --seed 4 --out %s/h16 + base --layout timm --dim 48 --heads 3 --dtype BF16 --seed 5 --out %s/b16",
               tmp, tmp, tmp);
    /* Layout AUTO finds HF's names; eps 1e-12 is the HF default. */
    vit_import_opts o = {.heads = 3};
    model *m = import_file(path_in("h", "model.safetensors"), &o);
    CHECK(m->cfg.ln_eps == 1e-12f && m->cfg.n_classes == 4);
    CHECK(compare_base("hf 32x32", m, path_in("h", "io.safetensors")) <= LOGIT_TOL);
    model_destroy(m);
    /* Half-precision files (as checkpoints are often shared) widen exactly. */
    m = import_file(path_in("h16", "model.safetensors"), &o);
    CHECK(compare_base("hf F16", m, path_in("h16", "io.safetensors")) <= LOGIT_TOL);
    model_destroy(m);
    m = import_file(path_in("b16", "model.safetensors"), &o);
    CHECK(m->cfg.ln_eps == 1e-6f);
    CHECK(compare_base("timm BF16", m, path_in("b16", "io.safetensors")) <= LOGIT_TOL);
    model_destroy(m);

    /* A checkpoint missing a tensor, or read in the wrong layout, is refused naming the tensor. */
    size_t len;
    uint8_t *buf = read_file(path_in("h", "model.safetensors"), &len);
    clad_err err = {0};
    vit_import_opts timm = {.layout = VIT_LAYOUT_TIMM, .heads = 3};
    CHECK(vit_import(buf, len, &timm, &err) == NULL);
    CHECK_MSG(strstr(err.msg, "patch_embed.proj.weight"), "%s", err.msg);
    free(buf);
}

TEST_TIMEOUT(interop_vit_ti_224_matches_pytorch, 120)
{
    if (!have_torch()) return;
    run_script("base --layout timm --img 224 --patch 16 --dim 192 --depth 12 --heads 3 --mlp 768 --classes 10 --n 2 "
               "--out %s/ti", test_tmpdir());
    vit_import_opts o = {0}; /* heads = 192 / 64, timm's eps 1e-6, exact GELU: all defaults */
    model *m = import_file(path_in("ti", "model.safetensors"), &o);
    CHECK(m->cfg.heads == 3 && m->cfg.height == 224 && m->cfg.patch == 16 && m->seq_len == 197);
    CHECK(compare_base("ViT-Ti 224x224", m, path_in("ti", "io.safetensors")) <= LOGIT_TOL);
    model_destroy(m);
}

/* ---- PEFT ---- */

/* A small timm base from the script, imported. */
static model *small_base(const char *more)
{
    run_script("base --layout timm --dim 48 --heads 3 --eps 1e-6 --out %s/t %s", test_tmpdir(), more);
    vit_import_opts o = {.heads = 3};
    return import_file(path_in("t", "model.safetensors"), &o);
}

static void write_peft(const char *dir, const peft_files *f)
{
    char d[1024];
    snprintf(d, sizeof d, "%s/%s", test_tmpdir(), dir);
    CHECK(mkdir(d, 0755) == 0);
    write_file(path_in(dir, PEFT_MODEL_FILE), f->model, f->model_len);
    write_file(path_in(dir, PEFT_CONFIG_FILE), f->config, strlen(f->config));
}

/* clad's logits with a against the script's logits.safetensors in dir, on the inputs of io. */
static double compare_with_dir(const char *what, const model *m, const adapter *a, const char *dir, const char *io)
{
    size_t n;
    float *want = read_tensor(path_in(dir, "logits.safetensors"), "logits", &n);
    double d = compare_logits(what, m, a, io, want, n);
    free(want);
    return d;
}

/* Exports a to dir, applies it in PyTorch and compares with clad's logits. */
static double export_and_apply(const char *dir, const model *m, const adapter *a)
{
    peft_files f;
    clad_err err = {0};
    CHECK_MSG(peft_export(a, m, "random-vit", &f, &err) == 0, "%s", err.msg);
    write_peft(dir, &f);
    peft_files_finish(&f);
    run_script("peft-apply --base %s --io %s --heads 3 --eps 1e-6 --adapter %s/%s --out %s", path_in("t", "model.safetensors"),
               path_in("t", "io.safetensors"), test_tmpdir(), dir, path_in(dir, "logits.safetensors"));
    return compare_with_dir(dir, m, a, dir, path_in("t", "io.safetensors"));
}

TEST_TIMEOUT(interop_peft_export_applies_in_pytorch, 120)
{
    if (!have_torch()) return;
    model *m = small_base("");
    /* Per-layer ranks, rank 0 on some layers, a LoRA on the Conv2d patch embedding, a new 7-class head. */
    int ranks[MODEL_MAX_LINEARS] = {0};
    ranks[0] = 2;
    for (int l = 0; l < m->cfg.depth; l++)
        for (int k = 0; k < 4; k++) ranks[1 + 4 * l + k] = l == 1 && k == 1 ? 0 : 2 + (k + l) % 3;
    clad_err err = {0};
    adapter *a = adapter_create(m, ranks, 8.0f, 7, &err);
    CHECK(a);
    adapter_init(a, m, 5);
    /* Trained by clad for a few steps, so B is not zero. */
    dataset d = {0};
    int shape[3] = {3, 32, 32};
    CHECK(dataset_init(&d, 64, 3, shape, &err) == 0);
    rng g;
    rng_init(&g, 9);
    for (size_t i = 0; i < (size_t)d.n * (size_t)d.dim; i++) d.x[i] = rng_normal(&g);
    for (int i = 0; i < d.n; i++) d.y[i] = i % 7;
    d.n_classes = 7;
    train_config tc;
    train_config_default(&tc);
    tc.epochs = 3;
    tc.batch = 16;
    tc.lr = 1e-2f;
    train_result tr;
    CHECK_MSG(train_run(m, a, &d, &tc, NULL, NULL, &tr, &err) == 0, "%s", err.msg);
    dataset_finish(&d);
    float bmax = 0;
    const float *B = param_set_ptr(&a->params, a->B[1]);
    for (size_t k = 0; k < a->params.t[a->B[1]].numel; k++) bmax = fmaxf(bmax, fabsf(B[k]));
    CHECK(bmax > 1e-3f);
    CHECK(export_and_apply("lora", m, a) <= LOGIT_TOL);

    /* The config: r is the most common rank, the others in rank_pattern, rank-0 layers left out. */
    peft_files f;
    CHECK(peft_export(a, m, "random-vit", &f, &err) == 0);
    CHECK(strstr(f.config, "\"blocks.0.attn.qkv\"") && strstr(f.config, "\"patch_embed.proj\""));
    CHECK(!strstr(f.config, "\"blocks.1.attn.proj\""));
    CHECK(strstr(f.config, "\"rank_pattern\"") && strstr(f.config, "\"peft_type\": \"LORA\""));
    /* Round trip through the importer gives the same adapter. */
    adapter *back = peft_import(m, f.model, f.model_len, f.config, strlen(f.config), &err);
    CHECK_MSG(back, "%s", err.msg);
    CHECK(param_set_same_layout(&back->params, &a->params) && back->alpha == a->alpha);
    CHECK(!memcmp(back->params.data, a->params.data, a->params.total * sizeof(float)));
    adapter_destroy(back);
    peft_files_finish(&f);

    /* A merged version: its blob (the merged change as a LoRA plus every source's head) loads as the
     * registry loads it, and exports as that stored LoRA. */
    const adapter *srcs2[1] = {a};
    merge_config mc;
    merge_config_default(&mc, MERGE_TA);
    model *merged = merge_backbone(m, srcs2, 1, &mc, &err);
    CHECK_MSG(merged, "%s", err.msg);
    adapter *ml = merge_to_lora(m, merged, 4, a, &err);
    CHECK_MSG(ml, "%s", err.msg);
    const char *names[1] = {"src"};
    uint8_t *blob = NULL;
    size_t blen = 0;
    CHECK(merged_blob_build(ml, m, names, srcs2, 1, &blob, &blen, &err) == 0);
    adapter *stored = adapter_from_buffer(m, blob, blen, &err);
    CHECK_MSG(stored, "%s", err.msg);
    CHECK(export_and_apply("merged", m, stored) <= LOGIT_TOL);
    adapter_destroy(stored);
    free(blob);
    adapter_destroy(ml);
    model_destroy(merged);
    adapter_destroy(a);

    /* Tied (tl6, with u and v away from 1) exports as its exact LoRA equivalent. */
    int tranks[MODEL_MAX_LINEARS] = {0};
    for (int l = 0; l < m->cfg.depth; l++)
        for (int k = 0; k < 4; k++) tranks[1 + 4 * l + k] = 3;
    adapter *t = adapter_tied_create(m, tranks, TIED_TL6, 5, &err);
    CHECK(t);
    adapter_init(t, m, 6);
    for (int i = 0; i < t->params.n; i++) {
        if (i == t->head_w || i == t->head_b) continue;
        float *p = param_set_ptr(&t->params, i);
        for (size_t k = 0; k < t->params.t[i].numel; k++) p[k] += 0.3f * rng_normal(&g);
    }
    CHECK(export_and_apply("tied", m, t) <= LOGIT_TOL);

    /* Fusion has no plain LoRA form: refused, saying why. */
    const adapter *srcs[1] = {t};
    adapter *fu = adapter_fusion_create(m, srcs, NULL, 1, 5, &err);
    CHECK_MSG(fu, "%s", err.msg);
    adapter_init(fu, m, 7);
    clad_err_clear(&err);
    CHECK(peft_export(fu, m, "random-vit", &f, &err) == CLAD_EINVAL);
    CHECK_MSG(strstr(err.msg, "fusion") && strstr(err.msg, "no plain LoRA"), "%s", err.msg);
    adapter_destroy(fu);
    adapter_destroy(t);
    model_destroy(m);
}

/* Imports the PEFT directory dir (under the test's tmpdir) onto m; the test fails if clad refuses it. */
static adapter *import_peft_dir(const model *m, const char *dir)
{
    size_t slen, clen;
    uint8_t *st = read_file(path_in(dir, PEFT_MODEL_FILE), &slen);
    char *cfg = (char *)read_file(path_in(dir, PEFT_CONFIG_FILE), &clen);
    clad_err err = {0};
    adapter *a = peft_import(m, st, slen, cfg, clen, &err);
    CHECK_MSG(a, "%s: %s", dir, err.msg);
    free(st);
    free(cfg);
    return a;
}

TEST_TIMEOUT(interop_peft_import_matches_pytorch, 120)
{
    if (!have_torch()) return;
    char more[2048];
    snprintf(more, sizeof more, "+ peft-make --base %s --io %s --heads 3 --eps 1e-6 --classes 7 --out %s/pm",
             path_in("t", "model.safetensors"), path_in("t", "io.safetensors"), test_tmpdir());
    model *m = small_base(more);
    adapter *a = import_peft_dir(m, "pm");
    /* rank_pattern gave per-layer ranks; the left-out module has none. */
    CHECK(a->n_classes == 7 && a->rank[1] == 4 && a->rank[2] == 2 && a->rank[3] == 3 && a->rank[5] == 5 && a->rank[6] == 0);
    CHECK(compare_with_dir("PEFT adapter from PyTorch", m, a, "pm", path_in("t", "io.safetensors")) <= LOGIT_TOL);
    adapter_destroy(a);

    /* A config that contradicts the file, DoRA and foreign modules are refused with the reason. */
    size_t slen;
    uint8_t *st = read_file(path_in("pm", PEFT_MODEL_FILE), &slen);
    clad_err err = {0};
    struct {
        const char *config, *expect;
    } bad[] = {
        {"{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"target_modules\":[],\"modules_to_save\":[\"head\"]}", "rank"},
        {"{\"peft_type\":\"LORA\",\"r\":4,\"use_dora\":true}", "use_dora"},
        {"{\"peft_type\":\"IA3\"}", "LORA"},
        {"{\"peft_type\":\"LORA\",\"r\":4,\"modules_to_save\":[\"norm\"]}", "only the task head"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        clad_err_clear(&err);
        CHECK(peft_import(m, st, slen, bad[i].config, strlen(bad[i].config), &err) == NULL);
        CHECK_MSG(strstr(err.msg, bad[i].expect), "config %zu: '%s' lacks '%s'", i, err.msg, bad[i].expect);
    }
    free(st);
    model_destroy(m);
}

/* ---- ustar: what clad writes, tar reads, and the other way round ---- */

TEST(interop_tar_round_trips_with_system_tar)
{
    const char *cfg = "{\"peft_type\": \"LORA\"}";
    uint8_t big[1500];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7);
    tar_file files[2] = {{PEFT_CONFIG_FILE, cfg, strlen(cfg)}, {PEFT_MODEL_FILE, big, sizeof big}};
    uint8_t *tar = NULL;
    size_t len = 0;
    clad_err err = {0};
    CHECK(tar_build("t-v1-peft", files, 2, 1700000000, &tar, &len, &err) == 0);
    CHECK(len % TAR_BLOCK == 0);
    const uint8_t *data;
    size_t n;
    CHECK(tar_find(tar, len, PEFT_MODEL_FILE, &data, &n, &err) == 0 && n == sizeof big && !memcmp(data, big, n));
    CHECK(tar_find(tar, len, "README.md", &data, &n, &err) == CLAD_ENOTFOUND);
    char path[1024], cmd[2200];
    snprintf(path, sizeof path, "%s/a.tar", test_tmpdir());
    write_file(path, tar, len);
    free(tar);
    if (system("command -v tar >/dev/null") != 0) {
        printf("# skipped: no tar program for the cross-check\n");
        return;
    }
    snprintf(cmd, sizeof cmd, "cd %s && tar xf a.tar", test_tmpdir());
    CHECK(system(cmd) == 0);
    snprintf(path, sizeof path, "%s/t-v1-peft/%s", test_tmpdir(), PEFT_MODEL_FILE);
    uint8_t *back = read_file(path, &n);
    CHECK(n == sizeof big && !memcmp(back, big, n));
    free(back);
    /* GNU tar's own archive of that directory (with a "./" prefix) is read back. */
    snprintf(cmd, sizeof cmd, "cd %s/t-v1-peft && tar cf ../b.tar ./%s ./%s", test_tmpdir(), PEFT_CONFIG_FILE, PEFT_MODEL_FILE);
    CHECK(system(cmd) == 0);
    snprintf(path, sizeof path, "%s/b.tar", test_tmpdir());
    uint8_t *gnu = read_file(path, &len);
    CHECK(tar_find(gnu, len, PEFT_CONFIG_FILE, &data, &n, &err) == 0 && n == strlen(cfg) && !memcmp(data, cfg, n));
    CHECK(tar_find(gnu, len, PEFT_MODEL_FILE, &data, &n, &err) == 0 && n == sizeof big && !memcmp(data, big, n));
    /* A damaged header is refused, not trusted. */
    gnu[100] ^= 1;
    clad_err_clear(&err);
    CHECK(tar_find(gnu, len, PEFT_MODEL_FILE, &data, &n, &err) == CLAD_EINVAL && strstr(err.msg, "checksum"));
    free(gnu);
}

/* ---- through the daemon: clad import / export and the routes ---- */

TEST_TIMEOUT(interop_daemon_import_export_round_trip, 180)
{
    if (!have_torch()) return;
    const char *tmp = test_tmpdir();
    run_script("base --layout hf --dim 48 --heads 3 --eps 1e-12 --classes 4 --seed 3 --out %s/h + base --layout timm --dim 48 "
               "--heads 3 --eps 1e-6 --out %s/t + peft-make --base %s --io %s --heads 3 --eps 1e-6 --classes 7 --out %s/pm",
               tmp, tmp, path_in("t", "model.safetensors"), path_in("t", "io.safetensors"), tmp);
    daemon_proc d;
    daemon_start(&d, NULL);
    char args[2048], *out = NULL;

    /* An HF directory: config.json gives heads 3 and eps 1e-12; the export re-imports to PyTorch's logits. */
    snprintf(args, sizeof args, "import base hf1 %s/h", tmp);
    int rc = clad_run(&d, args, &out);
    CHECK_MSG(rc == 0 && strstr(out, "heads 3"), "clad %s: %d %s", args, rc, out);
    free(out);
    snprintf(args, sizeof args, "export base hf1 --out %s/hf1.safetensors", tmp);
    CHECK_INT_EQ(clad_run(&d, args, NULL), 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/hf1.safetensors", tmp);
    vit_import_opts none = {0};
    model *m = import_file(path, &none);
    CHECK(m->cfg.ln_eps == 1e-12f && m->cfg.heads == 3);
    CHECK(compare_base("hf via the daemon, exported as timm", m, path_in("h", "io.safetensors")) <= LOGIT_TOL);
    model_destroy(m);

    /* A timm file with its heads given; then a PEFT adapter made in PyTorch goes in and comes back out,
     * and PyTorch applies the exported one to the same logits. */
    snprintf(args, sizeof args, "import base t1 %s/t/model.safetensors --heads 3", tmp);
    CHECK_INT_EQ(clad_run(&d, args, NULL), 0);
    snprintf(args, sizeof args, "import adapter pt %s/pm --base t1", tmp);
    rc = clad_run(&d, args, &out);
    CHECK_MSG(rc == 0 && strstr(out, "pt@1 imported"), "clad %s: %d %s", args, rc, out);
    free(out);
    /* An imported version counts its parameters like a trained one. */
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/tasks/pt/versions/1", NULL, &out, NULL), 200);
    CHECK_MSG(strstr(out, "\"adapter_params\":"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "export adapter pt@active --out %s/back", tmp);
    CHECK_INT_EQ(clad_run(&d, args, NULL), 0);
    run_script("peft-apply --base %s --io %s --heads 3 --eps 1e-6 --adapter %s/back --out %s", path_in("t", "model.safetensors"),
               path_in("t", "io.safetensors"), tmp, path_in("back", "logits.safetensors"));
    size_t n1, n2;
    float *want = read_tensor(path_in("pm", "logits.safetensors"), "logits", &n1);
    float *got = read_tensor(path_in("back", "logits.safetensors"), "logits", &n2);
    CHECK_INT_EQ(n1, n2);
    double diff = max_diff(want, got, n1);
    printf("# PEFT in and out of the daemon: max |before - after| = %.3g\n", diff);
    CHECK(diff <= LOGIT_TOL);
    free(want);
    free(got);

    /* The routes: a tar that tar reads, one file with ?file=, and clear refusals. */
    char *body = NULL, *headers = NULL;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/tasks/pt/versions/1/export?format=peft", NULL, NULL, &headers), 200);
    CHECK(strstr(headers, "application/x-tar") && strstr(headers, "pt-v1-peft.tar"));
    free(headers);
    snprintf(args, sizeof args,
             "curl -s --unix-socket '%s' 'http://cladd/v1/tasks/pt/versions/1/export' | tar tf - | sort | tr '\\n' ' ' > %s/list",
             d.sock, tmp);
    CHECK(system(args) == 0);
    snprintf(path, sizeof path, "%s/list", tmp);
    size_t ll;
    char *list = (char *)read_file(path, &ll);
    CHECK_MSG(strstr(list, "pt-v1-peft/adapter_config.json pt-v1-peft/adapter_model.safetensors"), "%s", list);
    free(list);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/tasks/pt/versions/1/export?file=adapter_config.json", NULL, &body, NULL), 200);
    json_t *cfg = json_or_fail(body);
    CHECK_STR_EQ(json_string_value(json_object_get(cfg, "peft_type")), "LORA");
    CHECK_STR_EQ(json_string_value(json_object_get(cfg, "base_model_name_or_path")), "t1");
    json_decref(cfg);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/tasks/pt/versions/1/export?format=onnx", NULL, &body, NULL), 400);
    CHECK(strstr(body, "onnx"));
    free(body);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/tasks/pt/versions/9/export", NULL, &body, NULL), 404);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/tasks/pt2/import?base=t1", "-H 'Content-Type: application/x-tar' --data-binary 'nope'",
                          &body, NULL), 400);
    CHECK_STR_EQ(error_code_of(body), "invalid_input");
    free(body);
    snprintf(args, sizeof args, "-H 'Content-Type: application/octet-stream' --data-binary @%s/t/model.safetensors", tmp);
    CHECK_INT_EQ(curl_req(&d, "POST", "/v1/bases/t1/import", args, &body, NULL), 409);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
}

TEST_TIMEOUT(interop_peft_hf_import_matches_pytorch, 120)
{
    if (!have_torch()) return;
    /* An adapter for a Hugging Face ViT as PEFT users make one: LoRA on query and value (short names in
     * target_modules, regex keys in rank_pattern and alpha_pattern), the classifier in modules_to_save. */
    run_script("base --layout hf --dim 48 --heads 3 --eps 1e-12 --classes 4 --seed 3 --out %s/h + peft-make --base %s --io %s "
               "--heads 3 --eps 1e-12 --classes 6 --out %s/ph",
               test_tmpdir(), path_in("h", "model.safetensors"), path_in("h", "io.safetensors"), test_tmpdir());
    vit_import_opts o = {.heads = 3};
    model *m = import_file(path_in("h", "model.safetensors"), &o);
    adapter *a = import_peft_dir(m, "ph");
    /* qkv holds query's and value's ranks side by side (4 + 3; layer 1's value has 6); fc1 rank 2. */
    CHECK(a->n_classes == 6 && a->rank[1] == 7 && a->rank[5] == 10 && a->rank[3] == 2 && a->rank[2] == 0 && a->rank[4] == 0);
    CHECK(compare_with_dir("HF PEFT adapter from PyTorch", m, a, "ph", path_in("h", "io.safetensors")) <= LOGIT_TOL);
    adapter_destroy(a);
    model_destroy(m);
}
