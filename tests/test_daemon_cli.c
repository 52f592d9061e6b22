/* The clad CLI against the real daemon: options, names, TASK@VERSION, encoding, per-command help.
 * A small MLP base and a CSV task keep training to a fraction of a second. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/dataset.h"
#include "core/model.h"
#include "core/rng.h"
#include "daemon/api_util.h"
#include "io/model_io.h"
#include "tests/daemon_util.h"
#include "tests/test.h"

#define FEATURES 8

typedef struct cli_fixture {
    daemon_proc d;
    char csv[512];   /* labelled: label first, FEATURES values */
} cli_fixture;

/* cladd with an MLP base "mlp"; with `versions` > 0 also task t1 trained that many times via clad. */
static void cli_fixture_start(cli_fixture *f, int versions)
{
    daemon_start(&f->d, NULL);
    snprintf(f->csv, sizeof f->csv, "%s/t1.csv", test_tmpdir());
    write_argmax_csv(f->csv, 240, FEATURES, 5);
    char base[512], args[1200], *out = NULL;
    snprintf(base, sizeof base, "%s/base.safetensors", test_tmpdir());
    model_config c = {.kind = MODEL_MLP, .input_dim = FEATURES, .n_hidden = 1, .hidden = {16}, .n_classes = 4};
    write_random_base(base, &c, 3);
    snprintf(args, sizeof args, "base import mlp '%s' 2>&1", base);
    int rc = clad_run(&f->d, args, &out);
    CHECK_MSG(rc == 0, "clad base import exited %d: %s", rc, out);
    free(out);
    for (int v = 1; v <= versions; v++) {
        snprintf(args, sizeof args, "train t1 '%s' --epochs 1 --seed %d 2>&1", f->csv, v);
        rc = clad_run(&f->d, args, &out);
        CHECK_MSG(rc == 0, "clad train exited %d: %s", rc, out);
        free(out);
    }
}

/* Runs clad with stderr folded into the output; checks the exit code and that `want` (if any) appears. */
static void expect_clad(const daemon_proc *d, const char *args, int want_rc, const char *want)
{
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s 2>&1", args);
    int rc = clad_run(d, cmd, &out);
    CHECK_MSG(rc == want_rc, "clad %s exited %d (want %d):\n%s", args, rc, want_rc, out);
    CHECK_MSG(!want || strstr(out, want), "clad %s: no '%s' in:\n%s", args, want, out);
    free(out);
}

/* expect_clad with a file name put into args_fmt at its "%s". */
static void expect_clad_file(const daemon_proc *d, const char *args_fmt, const char *file, int want_rc,
                             const char *want)
{
    char args[1400];
    snprintf(args, sizeof args, args_fmt, file);
    expect_clad(d, args, want_rc, want);
}

TEST(daemon_cli_version_after_the_command_selects_a_version)
{
    cli_fixture f;
    cli_fixture_start(&f, 2);
    expect_clad_file(&f.d, "eval t1 '%s' --version 1", f.csv, 0, "t1@1: accuracy");
    expect_clad_file(&f.d, "eval t1 '%s' --version 2", f.csv, 0, "t1@2: accuracy");
    expect_clad_file(&f.d, "--json eval t1 '%s' --version 1", f.csv, 0, "\"version\":1");
    expect_clad_file(&f.d, "eval t1 '%s' --version 9", f.csv, 4, "not_found");
    expect_clad_file(&f.d, "predict t1 '%s' --version", f.csv, 2, "--version");
    /* Before the command it is still the program's version. */
    expect_clad(&f.d, "--version", 0, "clad " CLAD_VERSION);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

TEST(daemon_cli_checks_names_before_any_request)
{
    /* No daemon: a request would fail to connect (exit 3), so exit 2 proves nothing was sent. */
    daemon_proc none = {0};
    snprintf(none.sock, sizeof none.sock, "%s/no-daemon.sock", test_tmpdir());
    char csv[512];
    snprintf(csv, sizeof csv, "%s/x.csv", test_tmpdir());
    write_argmax_csv(csv, 4, FEATURES, 5);
    static const char *const bad[] = {"'my task'", "'rot15?x=1'", "''", "'a/b'", "'-x'", "'%41'", "'\xc3\xa9t\xc3\xa9'"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[1024];
        const char *forms[] = {"show %s", "versions %s", "rollback %s", "undo %s", "alias %s champion 1",
                               "alias t1 %s 1", "train %s x.csv", "base import %s x", "merge %s --tasks a,b",
                               "merge m --tasks a,%s", "train t1 x.csv --base %s", "train t1 x.csv --fuse-with a,%s",
                               "eval t1 x.csv --data-task %s", "matrix %s", "report %s", "aliases %s",
                               "promote %s@1", "delete task %s", "delete base %s", "delete alias t1 %s",
                               "delete alias %s champion", "delete version %s@1",
                               "export adapter %s", "export base %s", "import adapter %s x", "import base %s x",
                               "import adapter t1 x --base %s"};
        for (size_t k = 0; k < sizeof forms / sizeof forms[0]; k++) {
            char cmd[512];
            snprintf(cmd, sizeof cmd, forms[k], bad[i]);
            /* A leading '-' makes "-x" look like an option to the argument parser: a usage error too. */
            expect_clad(&none, cmd, 2, NULL);
        }
        snprintf(args, sizeof args, "predict %s '%s'", bad[i], csv);
        expect_clad(&none, args, 2, "name");
        snprintf(args, sizeof args, "eval t1 '%s' --alias %s", csv, bad[i]);
        expect_clad(&none, args, 2, "name");
    }
    expect_clad(&none, "show 'my task'", 2, "task name 'my task' is not valid");
    expect_clad(&none, "show ''", 2, "task name '' is not valid");
    expect_clad(&none, "show 'rot15?x=1'", 2, "task name 'rot15?x=1' is not valid");
    /* Each command takes its own arguments and options only. */
    expect_clad(&none, "ps x", 2, "takes no arguments");
    expect_clad(&none, "health --out x", 2, "does not take --out");
    expect_clad(&none, "matrix --detach", 2, "does not take --detach");
    expect_clad(&none, "delete task rot15 --reason x", 2, "--reason goes with clad delete alias");
    expect_clad(&none, "promote rot15", 2, "usage: clad promote");
    /* A good name gets as far as connecting. */
    expect_clad(&none, "show rot15", 3, "cannot connect");
    expect_clad(&none, "delete alias rot15 old --reason x", 3, "cannot connect");
}

TEST(daemon_cli_percent_encodes_option_values)
{
    cli_fixture f;
    cli_fixture_start(&f, 0);
    char *body = NULL;
    int code = curl_req(&f.d, "POST", "/v1/debug/sleep-job", "-H 'Content-Type: application/json' "
                        "-d '{\"steps\":1,\"step_ms\":1,\"lane\":\"debug\"}'", &body, NULL);
    CHECK_MSG(code == 202, "sleep-job answered %d: %s", code, body);
    free(body);
    expect_clad(&f.d, "jobs --lane debug", 0, "debug");
    /* Query syntax inside a value stays inside the value. */
    expect_clad(&f.d, "jobs --lane 'x&lane=debug'", 0, "no jobs");
    expect_clad_file(&f.d, "train t1 '%s' --rank 'fixed:1&epochs=50'", f.csv, 1, "invalid_input");
    expect_clad(&f.d, "tasks", 0, "no tasks");
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

TEST(daemon_cli_task_at_version_or_alias_in_every_command)
{
    cli_fixture f;
    cli_fixture_start(&f, 2);
    /* In order: each step may depend on the ones before. "%s" is the fixture's CSV. */
    static const struct {
        const char *args;
        int rc;
        const char *want;
    } steps[] = {
        {"show t1@1", 0, "t1@1 "},
        {"show t1", 0, "t1@2 "},
        {"alias t1@1 stable", 0, "stable - -> 1"},
        {"show t1@stable", 0, "t1@1 "},
        {"alias t1 champion 2", 0, NULL}, /* the older form still works */
        {"alias t1@champion best", 0, "best - -> 2"},
        {"--json alias t1@1 fresh", 0, "\"from\":null"},
        {"eval t1@stable '%s'", 0, "t1@1: accuracy"},
        {"eval t1@2 '%s'", 0, "t1@2: accuracy"},
        {"--json predict t1@1 '%s'", 0, "\"version\":1"},
        {"rollback t1@stable --reason=test", 0, "active 2 -> 1"},
        {"show t1", 0, "t1@1 "},
        {"rollback t1@2", 0, "active 1 -> 2"},
        /* Where a version makes no sense, or is given twice, a usage error says so. */
        {"versions t1@1", 2, "as a whole"},
        {"train t1@1 '%s'", 2, "as a whole"},
        {"eval t1@1 '%s' --version 2", 2, "not both"},
        {"rollback t1@1 --to 2", 2, "not both"},
        {"show t1@0", 2, "numbered from 1"},
        {"show t1@", 2, "version number or an alias"},
        {"show t1@nosuch", 4, "not_found: task 't1' has no alias 'nosuch'"},
        {"promote t1@candidate", 4, "no version waits"},
        /* A version that waits as the candidate is the one shown after training, with why it waits. */
        {"train t1 '%s' --epochs 1 --promote never", 0, "t1@3 "},
        {"show t1@candidate", 0, "not made active when trained: promote=never"},
        {"show t1@1", 0, "made active when trained: promote=always"},
        {"promote t1@candidate", 0, "active 2 -> 3"},
        {"show t1@7", 4, "not_found"},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        expect_clad_file(&f.d, steps[i].args, f.csv, steps[i].rc, steps[i].want);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

TEST(daemon_cli_options_help_and_errors_in_cli_words)
{
    cli_fixture f;
    cli_fixture_start(&f, 1);
    char args[1024];
    /* --opt=value is --opt value. */
    expect_clad_file(&f.d, "eval t1 '%s' --version=1", f.csv, 0, "t1@1: accuracy");
    expect_clad(&f.d, "jobs --state=succeeded", 0, "succeeded");
    expect_clad(&f.d, "--json=1 tasks", 2, "--json takes no value");
    /* Per-command help, and options that do not belong to the command. */
    expect_clad(&f.d, "train --help", 0, "usage: clad train TASK FILE");
    expect_clad(&f.d, "train --help", 0, "--fuse-with a,b,c");
    expect_clad(&f.d, "help eval", 0, "usage: clad eval TASK[@VERSION|@ALIAS] FILE");
    expect_clad(&f.d, "show t1 --epochs 3", 2, "clad show does not take --epochs");
    expect_clad(&f.d, "tasks t1", 2, "takes no arguments");
    expect_clad(&f.d, "status --follow", 2, "does not take --follow");
    expect_clad(&f.d, "export --help", 0, "usage: clad export adapter TASK[@VERSION|@ALIAS] | base NAME");
    expect_clad(&f.d, "import --help", 0, "--ln-eps X");
    expect_clad(&f.d, "export base b --heads 3", 2, "clad export does not take --heads");
    expect_clad(&f.d, "import base b x --base c", 2, "--base is not an option of 'base'");
    expect_clad(&f.d, "import adapter t x --layout hf", 2, "--layout is not an option of 'adapter'");
    expect_clad(&f.d, "export nothing t1", 2, "usage: clad export");
    /* predict and eval have two forms: an option of the other form would be ignored, so it is refused. */
    expect_clad_file(&f.d, "predict t1 '%s' --tasks t1", f.csv, 2, "clad predict TASK does not take --tasks");
    expect_clad_file(&f.d, "eval --any '%s' --version 1", f.csv, 2, "clad eval --any does not take --version");
    /* Numbers the CLI puts into a JSON body are checked whole: "abc" is not 0, "8x" not 8. */
    expect_clad(&f.d, "merge m --tasks t1 --drop abc", 2, "--drop must be a number, not 'abc'");
    expect_clad(&f.d, "merge m --tasks t1 --rank 8x", 2, "--rank must be a whole number, not '8x'");
    expect_clad(&f.d, "base train b2 --model mlp --epochs abc", 2, "--epochs must be a whole number, not 'abc'");
    expect_clad(&f.d, "base train b2 --model mlp --lr 1e-3x", 2, "--lr must be a number, not '1e-3x'");
    /* The daemon's words for query parameters come back as the CLI's options. */
    snprintf(args, sizeof args, "train t1 '%s' --epochs 0", f.csv);
    char cmd[1200], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s 2>&1", args);
    CHECK_INT_EQ(clad_run(&f.d, cmd, &out), 1);
    CHECK_MSG(strstr(out, "--epochs must be a whole number") && !strstr(out, "query parameter"), "%s", out);
    free(out);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

/* Mistakes a new user made, each answered with what to do instead. */
TEST(daemon_cli_new_user_mistakes_get_precise_messages)
{
    cli_fixture f;
    cli_fixture_start(&f, 1);
    char args[1400], path[1024];
    /* Relative paths: the CLI resolves them; the daemon refuses one that is not absolute. */
    snprintf(args, sizeof args, "base train b2 --model mlp --data no-such-file.csv");
    expect_clad(&f.d, args, 2, "--data no-such-file.csv: No such file");
    snprintf(args, sizeof args, "raw POST /v1/bases/b2 '%s/rel.json'", test_tmpdir());
    snprintf(path, sizeof path, "%s/rel.json", test_tmpdir());
    FILE *b = fopen(path, "w");
    CHECK(b != NULL);
    fputs("{\"data\": \"t1.csv\"}", b);
    fclose(b);
    expect_clad(&f.d, args, 1, "or an absolute path");
    expect_clad(&f.d, "raw GET v1/health", 2, "PATH must start with / (e.g. /v1/health)");
    expect_clad(&f.d, "delete version t1", 2, "'t1' names a task, not one of its versions: write t1@VERSION");
    expect_clad(&f.d, "show t1@9223372036854775808", 2, "versions are numbered from 1 to 9223372036854775807");
    expect_clad(&f.d, "promote t1@1", 0, "t1@1 is already active: nothing changed");
    /* A body field of the wrong type is named. */
    snprintf(path, sizeof path, "%s/alias.json", test_tmpdir());
    b = fopen(path, "w");
    CHECK(b != NULL);
    fputs("{\"version\": \"1\"}", b);
    fclose(b);
    expect_clad_file(&f.d, "raw PUT /v1/tasks/t1/aliases/prod '%s'", path, 1, "'version' must be a version number");
    /* An unknown preset is bad input, not a missing resource; a bare preset name is a config. */
    snprintf(path, sizeof path, "%s/base.safetensors", test_tmpdir());
    expect_clad_file(&f.d, "base import b3 '%s' --config mlpx", path, 1, "invalid_input: unknown model preset 'mlpx'");
    expect_clad_file(&f.d, "base import b3 '%s' --config vit-tiny", path, 1, "no tensor named");
    /* A binary file is not taken for CSV. */
    expect_clad_file(&f.d, "train t1 '%s/clad' --epochs 1", test_build_dir(), 8, "not a dataset clad reads");
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

/* Writes n rows of `values` numbers (label first when labelled), each value `scale` times a uniform
 * number in [0, 1). */
static void write_rows(const char *path, int n, int values, bool labelled, double scale)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    rng r;
    rng_init(&r, 9);
    for (int i = 0; i < n; i++) {
        if (labelled) fprintf(f, "%d,", i % 4);
        for (int j = 0; j < values; j++) fprintf(f, "%s%.4f", j ? "," : "", scale * (double)rng_uniform(&r));
        fputc('\n', f);
    }
    fclose(f);
}

TEST(daemon_predict_inputs_labelled_csv_shapes_and_pixel_range)
{
    cli_fixture f;
    cli_fixture_start(&f, 1);
    char args[1400], path[512], *labelled = NULL, *unlabelled = NULL;
    /* The labelled training CSV predicts as the same rows without their labels. */
    snprintf(path, sizeof path, "%s/features.csv", test_tmpdir());
    snprintf(args, sizeof args, "cut -d, -f2- '%s' > '%s'", f.csv, path);
    CHECK_INT_EQ(system(args), 0);
    snprintf(args, sizeof args, "predict t1 '%s'", f.csv);
    CHECK_INT_EQ(clad_run(&f.d, args, &labelled), 0);
    snprintf(args, sizeof args, "predict t1 '%s'", path);
    CHECK_INT_EQ(clad_run(&f.d, args, &unlabelled), 0);
    CHECK_STR_EQ(labelled, unlabelled);
    size_t lines = 0;
    for (const char *p = labelled; *p; p++) lines += *p == '\n';
    CHECK_INT_EQ(lines, 240);
    free(labelled);
    /* A label column that holds no valid label (-1 for "unknown") is still ignored. */
    char unknown[512], *unknown_out = NULL;
    snprintf(unknown, sizeof unknown, "%s/unknown.csv", test_tmpdir());
    snprintf(args, sizeof args, "sed 's/^[0-9]*,/-1,/' '%s' > '%s'", f.csv, unknown);
    CHECK_INT_EQ(system(args), 0);
    snprintf(args, sizeof args, "predict t1 '%s'", unknown);
    CHECK_INT_EQ(clad_run(&f.d, args, &unknown_out), 0);
    CHECK_STR_EQ(unknown_out, unlabelled);
    free(unknown_out);
    free(unlabelled);
    /* A shape error names both shapes. */
    write_rows(path, 3, 5, false, 1.0);
    expect_clad_file(&f.d, "predict t1 '%s'", path, 1, "samples have shape [5] (5 values) but the model takes [8] (8 values)");

    /* An image model: pixels outside [0, 1] are refused, in training and in prediction. */
    char base[512];
    snprintf(base, sizeof base, "%s/vit.safetensors", test_tmpdir());
    model_config c = {.kind = MODEL_VIT, .n_classes = 4, .channels = 1, .height = 8, .width = 8, .patch = 4,
                      .dim = 16, .depth = 1, .heads = 2, .mlp_dim = 32};
    write_random_base(base, &c, 4);
    expect_clad_file(&f.d, "base import vit '%s'", base, 0, NULL);
    write_rows(path, 64, 64, true, 1.0);
    expect_clad_file(&f.d, "train img '%s' --base vit --epochs 1", path, 0, NULL);
    write_rows(path, 4, 64, false, 255.0);
    expect_clad_file(&f.d, "predict img '%s'", path, 1, "image inputs are pixels in [0, 1] (divide 0..255 pixels by 255)");
    write_rows(path, 64, 64, true, 255.0);
    expect_clad_file(&f.d, "train img '%s' --base vit --epochs 1", path, 8, "pixels in [0, 1]");
    write_rows(path, 2, 10, false, 1.0);
    expect_clad_file(&f.d, "predict img '%s'", path, 1, "the model takes [1, 8, 8] (64 values), channels first");

    /* A base whose config says its inputs are normalised (as imported timm/HF ViTs' are) takes values
     * outside [0, 1], in training and in prediction; its config keeps the range. */
    c.inputs_finite = true;
    write_random_base(base, &c, 5);
    expect_clad_file(&f.d, "base import vitn '%s'", base, 0, NULL);
    char *out = NULL;
    CHECK_INT_EQ(clad_run(&f.d, "bases", &out), 0);
    CHECK_MSG(strstr(out, "\"input_range\":\"finite\""), "vitn's config does not keep its input range: %s", out);
    free(out);
    write_rows(path, 64, 64, true, -3.0);
    expect_clad_file(&f.d, "train imgn '%s' --base vitn --epochs 1", path, 0, NULL);
    write_rows(path, 4, 64, false, 255.0);
    expect_clad_file(&f.d, "predict imgn '%s'", path, 0, NULL);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

/* The input range check itself, on both kinds of image base: NaN and infinities are never inputs. */
TEST(daemon_inputs_check_unit_and_finite_ranges)
{
    model_config unit = {.kind = MODEL_VIT, .n_classes = 2, .channels = 1, .height = 2, .width = 2, .patch = 2,
                         .dim = 8, .depth = 1, .heads = 1, .mlp_dim = 8};
    model_config finite = unit;
    finite.inputs_finite = true;
    float x[4] = {0.0f, 0.5f, 1.0f, 0.25f};
    dataset d = {.x = x, .n = 1, .dim = 4};
    clad_err err = {0};
    CHECK_INT_EQ(inputs_check(&d, &unit, &err), 0);
    CHECK_INT_EQ(inputs_check(&d, &finite, &err), 0);
    x[2] = -2.1f; /* a normalised pixel */
    CHECK_INT_EQ(inputs_check(&d, &unit, &err), CLAD_EINVAL);
    CHECK_MSG(strstr(err.msg, "sample 0 value 2 is -2.1: image inputs are pixels in [0, 1]"), "%s", err.msg);
    CHECK_INT_EQ(inputs_check(&d, &finite, &err), 0);
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        x[3] = bad[k];
        err = (clad_err){0};
        CHECK_INT_EQ(inputs_check(&d, &finite, &err), CLAD_EINVAL);
        CHECK_MSG(strstr(err.msg, "sample 0 value 3 is ") && strstr(err.msg, "inputs must be finite numbers"), "%s", err.msg);
        CHECK_INT_EQ(inputs_check(&d, &unit, &err), CLAD_EINVAL);
    }
    d.dim = 3;
    err = (clad_err){0};
    CHECK_INT_EQ(inputs_check(&d, &finite, &err), CLAD_EINVAL);
    CHECK_MSG(strstr(err.msg, "channels first, normalised as the base expects"), "%s", err.msg);
}

TEST(daemon_float32_values_print_as_given)
{
    cli_fixture f;
    cli_fixture_start(&f, 0);
    char args[1200], *out = NULL;
    expect_clad_file(&f.d, "train t1 '%s' --lr 0.001 --holdout 0.2 --alpha 0.1 --epochs 1", f.csv, 0, NULL);
    CHECK_INT_EQ(clad_run(&f.d, "--json show t1@1", &out), 0);
    CHECK_MSG(strstr(out, "\"lr\":0.001,") && strstr(out, "\"alpha\":0.1,") && strstr(out, "\"holdout\":0.2,"),
              "hyperparameters not as given: %s", out);
    CHECK_MSG(!strstr(out, "0000000") && !strstr(out, "9999999"), "float noise in: %s", out);
    free(out);
    snprintf(args, sizeof args, "--json predict t1 '%s'", f.csv);
    CHECK_INT_EQ(clad_run(&f.d, args, &out), 0);
    CHECK_MSG(!strstr(out, "0000000") && !strstr(out, "9999999"), "float noise in the probabilities: %.400s", out);
    free(out);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

/* An RFC 3339 UTC time with milliseconds, and (when ms > 0) the same instant as ms. */
static void check_time(json_t *t, long long ms, const char *what)
{
    const char *s = json_string_value(t);
    CHECK_MSG(s && strlen(s) == 24 && s[10] == 'T' && s[19] == '.' && s[23] == 'Z', "%s: '%s' is not RFC 3339 "
              "with milliseconds", what, s ? s : "(not a string)");
    if (ms <= 0) return;
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char want[40];
    size_t n = strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(want + n, sizeof want - n, ".%03dZ", (int)(ms % 1000));
    CHECK_MSG(!strcmp(s, want), "%s: %s is not the instant %lld ms (%s)", what, s, ms, want);
}

static json_t *get_ok(const daemon_proc *d, const char *path)
{
    char *body = NULL;
    int code = curl_req(d, "GET", path, NULL, &body, NULL);
    CHECK_MSG(code == 200, "GET %s answered %d: %s", path, code, body);
    json_t *j = json_or_fail(body);
    free(body);
    return j;
}

TEST(daemon_times_are_rfc3339_with_milliseconds_everywhere)
{
    cli_fixture f;
    cli_fixture_start(&f, 1);
    expect_clad(&f.d, "alias t1 stable 1", 0, NULL);
    json_t *j = get_ok(&f.d, "/v1/tasks/t1");
    check_time(json_object_get(j, "created"), json_integer_value(json_object_get(j, "created_ms")), "task");
    json_t *v = json_object_get(j, "active");
    check_time(json_object_get(v, "created"), json_integer_value(json_object_get(v, "created_ms")), "version");
    json_decref(j);
    j = get_ok(&f.d, "/v1/tasks/t1/aliases");
    json_t *h = json_array_get(json_object_get(j, "history"), 0);
    check_time(json_object_get(h, "time"), json_integer_value(json_object_get(h, "time_ms")), "alias history");
    json_decref(j);
    j = get_ok(&f.d, "/v1/bases/mlp");
    check_time(json_object_get(j, "created"), json_integer_value(json_object_get(j, "created_ms")), "base");
    json_decref(j);
    j = get_ok(&f.d, "/v1/status");
    check_time(json_object_get(j, "started"), 0, "status started");
    json_decref(j);
    j = get_ok(&f.d, "/v1/jobs/1");
    check_time(json_object_get(j, "created"), 0, "job created");
    check_time(json_object_get(j, "finished"), 0, "job finished");
    json_decref(j);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}

TEST(daemon_cli_show_never_invents_values)
{
    cli_fixture f;
    cli_fixture_start(&f, 1);
    char *out = NULL;
    expect_clad_file(&f.d, "train fused '%s' --fuse-with t1 --epochs 1", f.csv, 0, NULL);
    expect_clad_file(&f.d, "train pruned '%s' --prune 0.9 --epochs 1", f.csv, 0, NULL);
    expect_clad(&f.d, "merge m --tasks t1,pruned --method ties --drop 0.5", 0, NULL);

    CHECK_INT_EQ(clad_run(&f.d, "show fused", &out), 0);
    CHECK_MSG(strstr(out, "fusion   t1@1 weight ") && !strstr(out, "train_accuracy") && !strstr(out, "0.0000"),
              "fusion version shown as:\n%s", out);
    free(out);
    CHECK_INT_EQ(clad_run(&f.d, "show pruned", &out), 0);
    CHECK_MSG(strstr(out, "pruned   keeping 0.9 of each layer's energy: ") && strstr(out, " -> "), "pruned version:\n%s", out);
    CHECK_MSG(strstr(out, "hparams") && strstr(out, "lr 0.001,"), "hyperparameters not shown as given:\n%s", out);
    free(out);
    CHECK_INT_EQ(clad_run(&f.d, "show m", &out), 0);
    CHECK_MSG(strstr(out, "merge    method ties, drop 0.5, lambda 1, stored rank 64") && strstr(out, "sources  t1@1, pruned@1"),
              "merged version:\n%s", out);
    CHECK_MSG(!strstr(out, "plan ") && !strstr(out, "DISTANCE"), "a merge has no plan, yet one is shown:\n%s", out);
    free(out);
    /* An imported version shows where it came from and its ranks. */
    char dir[600], args[1400];
    snprintf(dir, sizeof dir, "%s/t1-peft", test_tmpdir());
    snprintf(args, sizeof args, "export adapter t1@1 --out '%s'", dir);
    expect_clad(&f.d, args, 0, NULL);
    snprintf(args, sizeof args, "import adapter back '%s' --base mlp", dir);
    expect_clad(&f.d, args, 0, "back@1 imported");
    CHECK_INT_EQ(clad_run(&f.d, "show back", &out), 0);
    CHECK_MSG(strstr(out, "imported peft (config sha256 ") && strstr(out, "\nranks    fc1 "), "imported version:\n%s", out);
    free(out);
    snprintf(args, sizeof args, "import adapter m '%s'", dir);
    expect_clad(&f.d, args, 6, "'m' is a merge, not a trainable task");
    /* A merge records no adapter_params: its PARAMS column says "-", not 0. */
    CHECK_INT_EQ(clad_run(&f.d, "versions m", &out), 0);
    CHECK_MSG(strstr(out, "\n1        merged           -          -"), "merge's versions:\n%s", out);
    free(out);
    CHECK_INT_EQ(daemon_stop(&f.d, SIGTERM, 10), 0);
}
