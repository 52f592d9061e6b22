/* Large uploads against the real daemon: running out of memory fails one request (never the daemon). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/model.h"
#include "io/model_io.h"
#include "tests/daemon_util.h"
#include "tests/test.h"

#define OCTET "-H 'Content-Type: application/octet-stream' "
#define MiB (1024L * 1024L)

/* Writes `bytes` zero bytes to <tmp>/name; the path goes to out. */
static void write_zeros(char *out, size_t size, const char *name, long bytes)
{
    snprintf(out, size, "%s/%s", test_tmpdir(), name);
    FILE *f = fopen(out, "wb");
    CHECK(f != NULL);
    static char block[1 << 16];
    for (long done = 0; done < bytes; done += (long)sizeof block)
        CHECK_INT_EQ(fwrite(block, 1, sizeof block, f), sizeof block);
    CHECK_INT_EQ(fclose(f), 0);
}

/* Starts cladd and imports a small MLP base "mlp" so that training uploads reach their handler. */
static void start_with_base(daemon_proc *d)
{
    char base[512];
    snprintf(base, sizeof base, "%s/base.safetensors", test_tmpdir());
    model_config c = {.kind = MODEL_MLP, .input_dim = 16, .n_hidden = 1, .hidden = {8}, .n_classes = 4};
    model *m = model_create(&c, NULL);
    model_init_random(m, 1);
    CHECK_INT_EQ(model_save(m, base, NULL), 0);
    model_destroy(m);
    static const char *const env[] = {"OPENBLAS_NUM_THREADS=1", NULL};
    daemon_opts o = {.env = env};
    daemon_start(d, &o);
    char extra[700], *body = NULL;
    snprintf(extra, sizeof extra, OCTET "--data-binary '@%s'", base);
    int code = curl_req(d, "POST", "/v1/bases/mlp", extra, &body, NULL);
    CHECK_MSG(code == 201, "base import answered %d: %s", code, body);
    free(body);
}

/* The daemon's address space now, from /proc (bytes). */
static long vm_size(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %ld kB", &kb) == 1) break;
    fclose(f);
    CHECK(kb > 0);
    return kb * 1024;
}

TEST_TIMEOUT(daemon_upload_out_of_memory_fails_the_request_not_the_daemon, 120)
{
    daemon_proc d;
    start_with_base(&d);
    /* Room for the upload's own buffer (which grows to 128 MiB for 100 MiB) and little more: a second
     * copy of the upload cannot be made. */
    char file[512];
    write_zeros(file, sizeof file, "upload.bin", 100 * MiB);
    struct rlimit rl = {.rlim_cur = (rlim_t)(vm_size(d.pid) + 128 * MiB + 40 * MiB)};
    rl.rlim_max = rl.rlim_cur;
    CHECK_MSG(prlimit(d.pid, RLIMIT_AS, &rl, NULL) == 0, "prlimit on the daemon failed");
    char extra[700], *body = NULL;
    snprintf(extra, sizeof extra, OCTET "--data-binary '@%s'", file);
    int code = curl_req(&d, "POST", "/v1/tasks/t/train", extra, &body, NULL);
    /* Accepted (the job then fails on the data) or refused for memory: either way an answer. */
    CHECK_MSG(code == 202 || code == 503, "the upload was answered %d: %s", code, body ? body : "");
    free(body);
    CHECK_MSG(kill(d.pid, 0) == 0, "the daemon died on an upload it had no memory for");
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/health", NULL, &body, NULL), 200);
    free(body);
    if (code == 202) {
        json_t *j = wait_final(&d, 1, 30);
        CHECK_STR_EQ(state_of(j), "failed");
        json_decref(j);
    }
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
}
