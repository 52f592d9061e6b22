/* End-to-end tests of clad-bench cl on a tiny synthetic stream, through the real binary (the same code path
 * as a benchmark run): ranks follow the teachers' ranks, a repeated task is recognised, nothing is
 * forgotten, and a byte scan of everything the learner retains finds no training sample of any task. */
#include "tests/test.h"

#include <dirent.h>
#include <jansson.h>
#include <sys/stat.h>

#include "io/dataset_io.h"

static const char *stream_text(int train, int quick_train)
{
    static char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"name\": \"tiny\",\n"
             " \"base\": {\"model\": {\"model\": \"mlp\", \"input_dim\": 32, \"hidden\": [48, 48], \"classes\": 6},"
             " \"init_seed\": 3},\n"
             " \"train_per_task\": %d, \"test_per_task\": 400, \"epochs\": 8, \"seed\": 1, \"lr\": 0.003,\n"
             " \"probe\": {\"samples\": 1024, \"holdout\": 512, \"steps\": 64, \"batch\": 64, \"points\": 4, \"lr\": 0.001},\n"
             " \"quick\": {\"train_per_task\": %d},\n"
             " \"tasks\": [\n"
             "  {\"name\": \"r1\", \"data\": \"synthetic\", \"teacher_rank\": {\"fc1\": 1}, \"teacher_scale\": 0.7,"
             " \"teacher_seed\": 1, \"seed\": 1},\n"
             "  {\"name\": \"r3\", \"data\": \"synthetic\", \"teacher_rank\": {\"fc1\": 3}, \"teacher_scale\": 0.7,"
             " \"teacher_seed\": 2, \"seed\": 2},\n"
             "  {\"name\": \"r8\", \"data\": \"synthetic\", \"teacher_rank\": {\"fc1\": 8}, \"teacher_scale\": 0.7,"
             " \"teacher_seed\": 3, \"seed\": 3},\n"
             "  {\"name\": \"r3 again\", \"data\": \"synthetic\", \"teacher_rank\": {\"fc1\": 3}, \"teacher_scale\": 0.7,"
             " \"teacher_seed\": 2, \"seed\": 4}\n"
             " ]}\n", train, quick_train);
    return buf;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* Runs `clad-bench ARGS` and returns its stdout parsed as JSON (NULL if it does not parse). */
static json_t *run_bench(const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "OPENBLAS_NUM_THREADS=1 %s/clad-bench %s", test_build_dir(), args);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    static char out[1 << 20];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    CHECK_MSG(status == 0, "'%s' failed (status %d)", cmd, status);
    json_error_t je;
    return json_loads(out, 0, &je);
}

static int layer_rank(const json_t *task, const char *layer)
{
    return (int)json_integer_value(json_object_get(json_object_get(task, "ranks"), layer));
}

TEST_TIMEOUT(cl_stream_ranks_follow_teachers_and_nothing_is_forgotten, 120)
{
    char stream[512], save[512], args[1600];
    snprintf(stream, sizeof stream, "%s/tiny.json", test_tmpdir());
    snprintf(save, sizeof save, "%s/kept", test_tmpdir());
    write_file(stream, stream_text(4000, 1000));
    snprintf(args, sizeof args, "cl --stream %s --json --explain --save %s", stream, save);
    json_t *r = run_bench(args);
    CHECK(r != NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(r, "policy")), "auto");
    json_t *tasks = json_object_get(r, "tasks");
    CHECK_INT_EQ(json_array_size(tasks), 4);
    int f1 = layer_rank(json_array_get(tasks, 0), "fc1"), f3 = layer_rank(json_array_get(tasks, 1), "fc1"),
        f8 = layer_rank(json_array_get(tasks, 2), "fc1");
    CHECK_MSG(f1 < f3 && f3 < f8, "fc1 ranks for teacher ranks 1, 3, 8: %d, %d, %d", f1, f3, f8);
    /* The repeated task reuses its twin, is almost entirely known, and gets at most a tenth of its twin's
     * rank units (none, when every layer is covered by the reused change). */
    json_t *again = json_array_get(tasks, 3);
    CHECK_STR_EQ(json_string_value(json_object_get(again, "reuse")), "r3");
    double ov = json_real_value(json_object_get(json_object_get(again, "overlap"), "r3"));
    double ov_other = json_real_value(json_object_get(json_object_get(again, "overlap"), "r8"));
    CHECK_MSG(ov > 0.5 && ov > 2 * ov_other, "overlap with r3 %g, with r8 %g", ov, ov_other);
    double nov = json_real_value(json_object_get(json_object_get(again, "explain"), "task_novelty"));
    CHECK_MSG(nov < 0.25, "novelty of the repeat %g", nov);
    int total = 0;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(again, "ranks"), k, v) total += (int)json_integer_value(v);
    int twin = 0;
    json_object_foreach(json_object_get(json_array_get(tasks, 1), "ranks"), k, v) twin += (int)json_integer_value(v);
    CHECK_MSG(twin >= 1 && total * 10 <= twin, "the repeat has %d new rank units, its twin %d", total, twin);
    /* Rehearsal-free adapters never forget: every column of R is constant below the diagonal, exactly. */
    json_t *R = json_object_get(r, "R");
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j <= i; j++)
            CHECK(json_real_value(json_array_get(json_array_get(R, i), j)) ==
                  json_real_value(json_array_get(json_array_get(R, j), j)));
    CHECK(json_is_null(json_array_get(json_array_get(R, 0), 1)));
    CHECK(json_real_value(json_object_get(r, "forgetting_max")) == 0.0);
    CHECK(json_real_value(json_object_get(r, "bwt")) == 0.0);
    CHECK(json_is_true(json_object_get(r, "earlier_predictions_unchanged")));
    CHECK(json_is_true(json_object_get(r, "base_unchanged")));
    CHECK(json_real_value(json_object_get(r, "acc")) > 0.6);
    /* The stream's cost split: what the last half of the tasks stores over what the first half does. */
    double half[2] = {0, 0};
    for (size_t i = 0; i < 4; i++)
        half[i >= 2] += (double)json_integer_value(json_object_get(json_array_get(tasks, i), "new_params"));
    CHECK_NEAR(json_real_value(json_object_get(r, "last_half_over_first_half")), half[1] / half[0], 1e-5);  /* printed to 6 digits */
    CHECK(json_is_number(json_object_get(r, "fwt")));
    json_decref(r);
}

/* ---- the per-sample scan ---- */

#define WIN 16 /* bytes: four floats */

typedef struct row_set {
    size_t cap;
    uint64_t *h;
} row_set;

static uint64_t hash16(const uint8_t *p)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < WIN; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h | 1; /* 0 marks an empty slot */
}

static void set_add(row_set *s, uint64_t h)
{
    size_t i = h % s->cap;
    while (s->h[i] && s->h[i] != h) i = (i + 1) % s->cap;
    s->h[i] = h;
}

static bool set_has(const row_set *s, uint64_t h)
{
    size_t i = h % s->cap;
    while (s->h[i]) {
        if (s->h[i] == h) return true;
        i = (i + 1) % s->cap;
    }
    return false;
}

/* Every four-float window of every training sample (at each float offset) goes into the set. */
static void add_task_rows(row_set *s, const char *stream, const char *task, const char *dir)
{
    char out[600], args[1600];
    snprintf(out, sizeof out, "%s/%s.train.safetensors", dir, task[0] == 'r' && task[2] == ' ' ? "again" : task);
    snprintf(args, sizeof args, "export --stream %s --task '%s' --split train --out %s 2>/dev/null", stream, task, out);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "OPENBLAS_NUM_THREADS=1 %s/clad-bench %s", test_build_dir(), args);
    CHECK_INT_EQ(system(cmd), 0);
    uint8_t *buf;
    size_t len;
    CHECK_INT_EQ(file_read_all(out, 1 << 26, &buf, &len, NULL), 0);
    dataset d;
    CHECK_INT_EQ(dataset_parse_safetensors(&d, buf, len, false, NULL), 0);
    CHECK_INT_EQ(d.dim, 32);
    for (int i = 0; i < d.n; i++)
        for (int o = 0; o + 4 <= d.dim; o++) set_add(s, hash16((const uint8_t *)(d.x + (size_t)i * d.dim + o)));
    dataset_finish(&d);
    free(buf);
    remove(out);
}

/* Windows of the file (at every byte offset) found in the set. */
static int scan_file(const row_set *s, const char *path)
{
    uint8_t *buf;
    size_t len;
    CHECK_INT_EQ(file_read_all(path, 1 << 26, &buf, &len, NULL), 0);
    int hits = 0;
    for (size_t o = 0; o + WIN <= len; o++) hits += set_has(s, hash16(buf + o));
    free(buf);
    return hits;
}

TEST_TIMEOUT(cl_stream_retains_nothing_per_sample, 120)
{
    char stream[512], save[512], args[1600];
    snprintf(stream, sizeof stream, "%s/tiny.json", test_tmpdir());
    snprintf(save, sizeof save, "%s/kept", test_tmpdir());
    write_file(stream, stream_text(3000, 1000));
    /* --routing: the routing statistics are kept (in the signature files) and scanned too. */
    snprintf(args, sizeof args, "cl --stream %s --json --routing --save %s", stream, save);
    json_t *r = run_bench(args);
    CHECK(r != NULL);
    json_decref(r);

    row_set s = {1 << 20, calloc(1 << 20, sizeof(uint64_t))};
    const char *names[] = {"r1", "r3", "r8", "r3 again"};
    for (int t = 0; t < 4; t++) add_task_rows(&s, stream, names[t], test_tmpdir());

    /* Every file the learner kept: adapters, signatures, the records. */
    DIR *dir = opendir(save);
    CHECK(dir != NULL);
    struct dirent *e;
    int files = 0, adapters = 0, signatures = 0;
    char path[1200], planted[1200] = "";
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", save, e->d_name);
        files++;
        adapters += strstr(e->d_name, ".adapter.") != NULL;
        signatures += strstr(e->d_name, ".signature.") != NULL;
        if (strstr(e->d_name, ".signature.")) {
            uint8_t *sb;
            size_t sl;
            CHECK_INT_EQ(file_read_all(path, 1 << 26, &sb, &sl, NULL), 0);
            CHECK_MSG(memmem(sb, sl, "routing.scatter", 15) != NULL, "%s has no routing statistics", path);
            free(sb);
        }
        CHECK_MSG(scan_file(&s, path) == 0, "%s holds a window of a training sample", path);
        if (!planted[0] && strstr(e->d_name, ".adapter.")) snprintf(planted, sizeof planted, "%s", path);
    }
    closedir(dir);
    CHECK_INT_EQ(adapters, 4);
    CHECK_INT_EQ(signatures, 4);
    CHECK_INT_EQ(files, 9);

    /* The scan can fail: plant one training sample in a copy of an adapter file and it is found. */
    char exported[600];
    snprintf(exported, sizeof exported, "%s/r1.x.safetensors", test_tmpdir());
    snprintf(args, sizeof args, "OPENBLAS_NUM_THREADS=1 %s/clad-bench export --stream %s --task r1 --split train "
             "--out %s 2>/dev/null", test_build_dir(), stream, exported);
    CHECK_INT_EQ(system(args), 0);
    uint8_t *buf, *ex;
    size_t len, exlen;
    CHECK_INT_EQ(file_read_all(planted, 1 << 26, &buf, &len, NULL), 0);
    CHECK_INT_EQ(file_read_all(exported, 1 << 26, &ex, &exlen, NULL), 0);
    dataset d;
    CHECK_INT_EQ(dataset_parse_safetensors(&d, ex, exlen, false, NULL), 0);
    memcpy(buf + len / 2, d.x + 32 * 123, 128); /* sample 123, at an odd place */
    char copy[1300];
    snprintf(copy, sizeof copy, "%s/planted.bin", test_tmpdir());
    FILE *f = fopen(copy, "wb");
    CHECK(f && fwrite(buf, 1, len, f) == len);
    fclose(f);
    CHECK(scan_file(&s, copy) >= 29);
    dataset_finish(&d);
    free(buf);
    free(ex);
    free(s.h);
}

TEST_TIMEOUT(cl_stream_retained_sizes_do_not_grow_with_samples, 120)
{
    /* fixed:2 so the ranks cannot differ: the adapters kept after 1000 and after 4000 samples per task have
     * exactly the same size, and each signature stays within a bound set by the layer shapes alone. */
    char stream[512], a[512], b[512], args[1600];
    snprintf(stream, sizeof stream, "%s/tiny.json", test_tmpdir());
    write_file(stream, stream_text(4000, 1000));
    snprintf(a, sizeof a, "%s/small", test_tmpdir());
    snprintf(b, sizeof b, "%s/large", test_tmpdir());
    snprintf(args, sizeof args, "cl --stream %s --json --quick --policy fixed:2 --save %s", stream, a);
    json_t *r1 = run_bench(args);
    snprintf(args, sizeof args, "cl --stream %s --json --policy fixed:2 --save %s", stream, b);
    json_t *r2 = run_bench(args);
    CHECK(r1 && r2);
    CHECK_INT_EQ(json_integer_value(json_object_get(r1, "params_total")),
                 json_integer_value(json_object_get(r2, "params_total")));
    const char *names[] = {"00-r1", "01-r3", "02-r8", "03-r3_again"};
    /* Signature bound: per layer at most min(out,in) directions of each kind: fc1 48x32 -> 32, fc2 48x48 ->
     * 48, each (out + in + 1) floats, twice (adapter and pull), plus a header. */
    long bound = 4L * 2 * (32 * (48 + 32 + 1) + 48 * (48 + 48 + 1)) + 4096;
    for (int t = 0; t < 4; t++) {
        char pa[700], pb[700];
        struct stat sa, sb;
        snprintf(pa, sizeof pa, "%s/%s.adapter.safetensors", a, names[t]);
        snprintf(pb, sizeof pb, "%s/%s.adapter.safetensors", b, names[t]);
        CHECK_INT_EQ(stat(pa, &sa), 0);
        CHECK_INT_EQ(stat(pb, &sb), 0);
        CHECK_INT_EQ(sa.st_size, sb.st_size);
        snprintf(pa, sizeof pa, "%s/%s.signature.safetensors", a, names[t]);
        snprintf(pb, sizeof pb, "%s/%s.signature.safetensors", b, names[t]);
        CHECK_INT_EQ(stat(pa, &sa), 0);
        CHECK_INT_EQ(stat(pb, &sb), 0);
        CHECK(sa.st_size <= bound && sb.st_size <= bound);
    }
    json_decref(r1);
    json_decref(r2);
}

TEST_TIMEOUT(cl_stream_full_finetuning_forgets, 120)
{
    char stream[512], args[1600];
    snprintf(stream, sizeof stream, "%s/tiny.json", test_tmpdir());
    write_file(stream, stream_text(3000, 1000));
    snprintf(args, sizeof args, "cl --stream %s --json --policy full-ft", stream);
    json_t *r = run_bench(args);
    CHECK(r != NULL);
    CHECK_STR_EQ(json_string_value(json_object_get(r, "policy")), "full-ft");
    CHECK_MSG(json_real_value(json_object_get(r, "forgetting_max")) > 0.02, "forgetting %g",
              json_real_value(json_object_get(r, "forgetting_max")));
    CHECK(json_real_value(json_object_get(r, "bwt")) < 0.0);
    CHECK_INT_EQ(json_object_size(json_object_get(json_array_get(json_object_get(r, "tasks"), 0), "ranks")), 0);
    json_decref(r);
}

TEST(cl_stream_bad_streams_are_refused_with_a_reason)
{
    char stream[512], cmd[2048];
    snprintf(stream, sizeof stream, "%s/bad.json", test_tmpdir());
    const char *bad[] = {
        "{\"name\": \"x\", \"base\": {\"model\": \"mlp\"}, \"train_per_task\": 10, \"test_per_task\": 10, "
        "\"tasks\": [{\"name\": \"a\", \"data\": \"fmnist\", \"transforms\": [{\"op\": \"blur\"}]}]}",
        "{\"name\": \"x\", \"base\": {\"model\": \"mlp\"}, \"train_per_task\": 10, \"test_per_task\": 10, "
        "\"tasks\": [{\"name\": \"a\", \"data\": \"synthetic\"}]}",
        "{\"name\": \"x\", \"base\": {\"model\": \"mlp\"}, \"train_per_task\": 10, \"test_per_task\": 10, "
        "\"epoch\": 2, \"tasks\": [{\"name\": \"a\", \"data\": \"fmnist\"}]}",
        "{\"name\": \"x\", \"base\": {\"model\": \"mlp\"}, \"train_per_task\": 10, \"test_per_task\": 10, "
        "\"tasks\": [{\"name\": \"a\", \"data\": \"fmnist\"}, {\"name\": \"a\", \"data\": \"fmnist\"}]}",
    };
    const char *why[] = {"blur", "teacher_rank", "epoch", "two tasks"};
    for (int i = 0; i < 4; i++) {
        write_file(stream, bad[i]);
        snprintf(cmd, sizeof cmd, "%s/clad-bench cl --stream %s --json 2>&1", test_build_dir(), stream);
        FILE *p = popen(cmd, "r");
        char out[4096] = "";
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = '\0';
        int status = pclose(p);
        CHECK(status != 0);
        CHECK_MSG(strstr(out, why[i]) != NULL, "message '%s' does not name '%s'", out, why[i]);
    }
}

TEST(cl_stream_export_writes_the_requested_split_and_size)
{
    char stream[512], out[600], cmd[2048];
    snprintf(stream, sizeof stream, "%s/tiny.json", test_tmpdir());
    write_file(stream, stream_text(3000, 1000));
    snprintf(out, sizeof out, "%s/r8.safetensors", test_tmpdir());
    const char *variants[] = {"--split train", "--split test", "--split train --samples 77", "--split train --quick"};
    const int want[] = {3000, 400, 77, 1000};
    for (int i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, "OPENBLAS_NUM_THREADS=1 %s/clad-bench export --stream %s --task r8 %s --out %s "
                 "2>/dev/null", test_build_dir(), stream, variants[i], out);
        CHECK_INT_EQ(system(cmd), 0);
        uint8_t *buf;
        size_t len;
        CHECK_INT_EQ(file_read_all(out, 1 << 26, &buf, &len, NULL), 0);
        dataset d;
        CHECK_INT_EQ(dataset_parse_safetensors(&d, buf, len, false, NULL), 0);
        CHECK_INT_EQ(d.n, want[i]);
        CHECK_INT_EQ(d.dim, 32);
        for (int k = 0; k < d.n; k++) CHECK(d.y[k] >= 0 && d.y[k] < 6);
        dataset_finish(&d);
        free(buf);
    }
    /* an unknown task is refused */
    snprintf(cmd, sizeof cmd, "%s/clad-bench export --stream %s --task nope --split train --out %s 2>/dev/null",
             test_build_dir(), stream, out);
    CHECK(system(cmd) != 0);
    /* --help prints the usage and succeeds, as in the other subcommands */
    snprintf(cmd, sizeof cmd, "%s/clad-bench export --help | grep -q 'usage: clad-bench export'", test_build_dir());
    CHECK_INT_EQ(system(cmd), 0);
}
