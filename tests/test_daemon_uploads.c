/* Large uploads against the real daemon: running out of memory fails one request (never the daemon),
 * and work as large as an upload never stalls the event loop for other clients. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

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
    model_config c = {.kind = MODEL_MLP, .input_dim = 16, .n_hidden = 1, .hidden = {8}, .n_classes = 4};
    daemon_start_with_base(d, &c, "mlp");
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
#ifdef __SANITIZE_ADDRESS__
    /* ASan's allocator aborts on a failed allocation by design and maps terabytes of shadow memory. */
    printf("# skipped: an address-sanitizer build cannot run under RLIMIT_AS\n");
    return;
#endif
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

TEST_TIMEOUT(daemon_large_upload_does_not_stall_other_clients, 120)
{
    daemon_proc d;
    start_with_base(&d);
    char file[512];
    write_zeros(file, sizeof file, "upload.bin", 256 * MiB);
    char extra[700];
    snprintf(extra, sizeof extra, OCTET "--data-binary '@%s'", file);
    curl_stream s;
    stream_open(&s, &d, "POST", "/v1/tasks/t/train?follow=1", extra);
    /* Poll the status on other connections until the upload is answered (its handler has run). */
    double worst = 0.0, t0 = now_s();
    int polls = 0;
    char *line = NULL;
    while (!(line = stream_line(&s, 10))) {
        double l = status_latency(&d);
        if (l > worst) worst = l;
        polls++;
        if (now_s() - t0 > 60) {
            char *log = daemon_log(&d);
            CHECK_MSG(false, "the upload was not answered in 60 s (%d polls, fd %d, len %zu); log:\n%s", polls, s.fd, s.len, log);
        }
    }
    CHECK_MSG(strstr(line, "\"event\":\"job\"") != NULL, "the upload was answered: %s", line);
    free(line);
    stream_close(&s);
    printf("# %d status requests during a 256 MiB upload and its handling; the slowest took %.3f s\n", polls, worst);
    CHECK_MSG(polls >= 5, "only %d status requests ran during the upload", polls);
#ifdef __SANITIZE_ADDRESS__
    /* ASan's realloc copies where glibc's remaps: growing the upload's buffer alone takes seconds. */
    printf("# not timed: an address-sanitizer build\n");
#else
    CHECK_MSG(worst < 0.3, "a status request waited %.3f s behind the upload", worst);
#endif
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
}

/* Writes a JSON object of about `bytes` bytes ({"pad": "xxx..."}) to <tmp>/name. */
static void write_json(char *out, size_t size, const char *name, long bytes)
{
    snprintf(out, size, "%s/%s", test_tmpdir(), name);
    FILE *f = fopen(out, "wb");
    CHECK(f != NULL);
    fputs("{\"pad\": \"", f);
    for (long i = 0; i < bytes; i++) fputc('x', f);
    fputs("\"}", f);
    CHECK_INT_EQ(fclose(f), 0);
}

/* POSTs a JSON file; returns the status and checks a 413 names too_large. */
static int post_json(const daemon_proc *d, const char *path, const char *file)
{
    char extra[700], *body = NULL;
    snprintf(extra, sizeof extra, "-H 'Content-Type: application/json' --data-binary '@%s'", file);
    int code = curl_req(d, "POST", path, extra, &body, NULL);
    if (code == 413) CHECK_STR_EQ(error_code_of(body), "too_large");
    free(body);
    return code;
}

TEST_TIMEOUT(daemon_json_body_limits_hold_on_every_route, 60)
{
    daemon_proc d;
    start_with_base(&d);
    char small[512], mid[512], big[512];
    write_json(small, sizeof small, "small.json", 100 << 10);
    write_json(mid, sizeof mid, "mid.json", 2 << 20);
    write_json(big, sizeof big, "big.json", 65L << 20);
    /* A base training spec: 64 KiB. */
    CHECK_INT_EQ(post_json(&d, "/v1/bases/b2", small), 413);
    /* Bodies of JSON routes, parsed on the loop: 1 MiB. */
    CHECK_INT_EQ(post_json(&d, "/v1/tasks/t/rollback", mid), 413);
    CHECK_INT_EQ(post_json(&d, "/v1/merges/m", mid), 413);
    /* Prediction inputs: 64 MiB, refused before parsing (and before looking the task up). */
    CHECK_INT_EQ(post_json(&d, "/v1/tasks/t/predict", big), 413);
    CHECK_INT_EQ(post_json(&d, "/v1/tasks/t/predict", small), 404);
    char *body = NULL;
    CHECK_INT_EQ(curl_req(&d, "GET", "/v1/health", NULL, &body, NULL), 200);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
}
