/* Server-side data paths through the real daemon: base training reads a file by path only inside the
 * allowed data directories (built in, plus data_dirs from the config file), and a refusal tells the
 * client nothing about the file. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rng.h"
#include "daemon/config.h"
#include "io/dataset_io.h"
#include "tests/daemon_util.h"
#include "tests/test.h"

/* A small labelled dataset (16 features, 4 classes) as safetensors. */
static void write_data(const char *path)
{
    dataset d;
    CHECK_INT_EQ(dataset_init(&d, 64, 1, (int[]){16}, NULL), 0);
    rng r;
    rng_init(&r, 9);
    for (int i = 0; i < d.n; i++) {
        for (int k = 0; k < 16; k++) d.x[i * 16 + k] = rng_normal(&r);
        d.y[i] = i % 4;
    }
    d.n_classes = 4;
    CHECK_INT_EQ(dataset_save_safetensors(&d, path, NULL), 0);
    dataset_finish(&d);
}

/* POSTs a base training spec reading `data`; returns the status, the reply in *body. */
static int train_base_from(const daemon_proc *d, const char *name, const char *data, char **body)
{
    char path[128], extra[1200];
    snprintf(path, sizeof path, "/v1/bases/%s", name);
    snprintf(extra, sizeof extra,
             "-H 'Content-Type: application/json' -d '{\"model\": {\"model\": \"mlp\", \"input_dim\": 16, "
             "\"hidden\": [8], \"classes\": 4}, \"data\": \"%s\", \"epochs\": 1}'", data);
    return curl_req(d, "POST", path, extra, body, NULL);
}

TEST_TIMEOUT(daemon_base_training_reads_only_allowed_data_paths, 60)
{
    const char *tmp = test_tmpdir();
    char dir[512], inside[600], outside[600], link[600], dotdot[700], missing[600], config[700];
    snprintf(dir, sizeof dir, "%s/data", tmp);
    CHECK_INT_EQ(mkdir(dir, 0755), 0);
    snprintf(inside, sizeof inside, "%s/ok.safetensors", dir);
    snprintf(outside, sizeof outside, "%s/outside.safetensors", tmp);
    snprintf(link, sizeof link, "%s/link.safetensors", dir);
    snprintf(dotdot, sizeof dotdot, "%s/../outside.safetensors", dir);
    snprintf(missing, sizeof missing, "%s/missing.safetensors", dir);
    write_data(inside);
    write_data(outside);
    CHECK_INT_EQ(symlink(outside, link), 0);
    snprintf(config, sizeof config, "data_dirs = /nonexistent:%s\n", dir);
    daemon_opts o = {.config = config};
    daemon_proc d;
    daemon_start(&d, &o);

    /* Everything outside, or not a readable regular file inside, gets one and the same 403. */
    const char *refused[] = {"/etc/shadow", "/etc/passwd", "/proc/self/environ", outside, link, dotdot, missing,
                             dir, NULL};
    char *first = NULL;
    for (int i = 0; refused[i]; i++) {
        char *body = NULL;
        int code = train_base_from(&d, "b1", refused[i], &body);
        CHECK_MSG(code == 403, "data %s answered %d: %s", refused[i], code, body);
        CHECK_STR_EQ(error_code_of(body), "denied");
        CHECK_MSG(!strstr(body, "shadow") && !strstr(body, "passwd") && !strstr(body, "outside"),
                  "the refusal echoes the path: %s", body);
        if (!first) first = strdup(body);
        else CHECK_STR_EQ(body, first);
        free(body);
    }
    free(first);
    /* A relative path means nothing to the daemon (it has no client working directory): a 400 that says
     * so, and still nothing about any file. */
    char *body = NULL;
    CHECK_INT_EQ(train_base_from(&d, "b1", "relative/path", &body), 400);
    CHECK_MSG(strstr(body, "absolute path") && !strstr(body, "relative"), "%s", body);
    free(body);
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/jobs", NULL, &body, NULL), 200);
    CHECK_MSG(strstr(body, "\"jobs\":[]") != NULL, "a refused path still made a job: %s", body);
    free(body);

    /* A file in an allowed directory trains. */
    CHECK_INT_EQ(train_base_from(&d, "b1", inside, &body), 202);
    free(body);
    json_t *j = wait_final(&d, 1, 30);
    CHECK_STR_EQ(state_of(j), "succeeded");
    json_decref(j);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_config_data_dirs_take_absolute_paths)
{
    cladd_config c;
    config_init(&c);
    clad_err e = {0};
    CHECK_INT_EQ(config_set(&c, "data_dirs", "relative/dir", &e), CLAD_EINVAL);
    CHECK(strstr(e.msg, "data_dirs: 'relative/dir' is not an absolute directory path") != NULL);
    clad_err_clear(&e);
    CHECK_INT_EQ(config_set(&c, "data_dirs", "/srv/a:", &e), 0);
    CHECK_STR_EQ(c.data_dirs, "/srv/a:");
    char resolved[4096];
    CHECK(!config_data_path_allowed(&c, "/etc/passwd", resolved, sizeof resolved));
    CHECK(!config_data_path_allowed(&c, "/srv/a/../../etc/passwd", resolved, sizeof resolved));
    const char *shipped = FMNIST_DEFAULT_DIR "/train-labels-idx1-ubyte.gz";
    if (access(shipped, R_OK) == 0) CHECK(config_data_path_allowed(&c, shipped, resolved, sizeof resolved));
}
