/* One daemon per state directory: a second cladd on the same state directory (or the same socket) is
 * refused before it creates anything, and says which pid holds the directory. Real processes. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/daemon_util.h"
#include "tests/test.h"

/* Runs a second cladd (killed after 10 s if it does not exit by itself); returns its exit status and
 * its output in *out. */
static int run_second_cladd(const char *sock, const char *state, char **out)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "timeout -s KILL 10 %s/cladd --socket '%s' --state-dir '%s' 2>&1", test_build_dir(),
             sock, state);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    char *buf = calloc(1, 65536);
    CHECK(buf != NULL);
    size_t n = fread(buf, 1, 65535, p);
    buf[n] = '\0';
    int status = pclose(p);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void check_serves(const daemon_proc *d)
{
    char *body = NULL;
    CHECK_INT_EQ(curl_req(d, "GET", "/v1/health", NULL, &body, NULL), 200);
    free(body);
}

TEST(daemon_second_cladd_on_the_same_state_dir_is_refused_naming_the_pid)
{
    daemon_proc a;
    daemon_start(&a, NULL);
    /* A job of the first daemon that the second must not touch (it used to mark it interrupted). */
    char *body = NULL;
    int code = curl_req(&a, "POST", "/v1/debug/sleep-job", "-H 'Content-Type: application/json' -d '{\"steps\":10,\"step_ms\":100}'",
                        &body, NULL);
    CHECK_MSG(code == 202, "submit answered %d: %s", code, body);
    free(body);

    char other_sock[300], *out = NULL;
    snprintf(other_sock, sizeof other_sock, "%s/other.sock", test_tmpdir());
    int rc = run_second_cladd(other_sock, a.state, &out);
    CHECK_MSG(rc == 1, "second cladd exited %d (137: it kept running); output:\n%s", rc, out);
    char pid[64];
    snprintf(pid, sizeof pid, "pid %ld", (long)a.pid);
    CHECK_MSG(strstr(out, pid) && strstr(out, "in use"), "refusal does not name %s:\n%s", pid, out);
    CHECK_MSG(!exists(other_sock), "the refused daemon left its socket %s", other_sock);
    free(out);

    /* The first daemon is undisturbed: it serves and its job finishes normally. */
    check_serves(&a);
    double t0 = now_s();
    for (;;) {
        CHECK_INT_EQ(curl_req(&a, "GET", "/v1/jobs/1", NULL, &body, NULL), 200);
        json_t *j = json_or_fail(body);
        free(body);
        char state[32];
        snprintf(state, sizeof state, "%s", json_string_value(json_object_get(j, "state")));
        json_decref(j);
        if (!strcmp(state, "succeeded")) break;
        CHECK_MSG(!strcmp(state, "running") || !strcmp(state, "queued"), "job 1 became %s", state);
        CHECK_MSG(now_s() - t0 < 10, "job 1 still %s after 10 s", state);
        sleep_ms(50);
    }
    CHECK_INT_EQ(daemon_stop(&a, SIGTERM, 10), 0);

    /* The lock goes with the process: a new daemon on the same directory starts (stale pid in the file). */
    daemon_start(&a, NULL);
    check_serves(&a);
    CHECK_INT_EQ(daemon_stop(&a, SIGTERM, 10), 0);
}

TEST(daemon_refused_for_a_busy_socket_creates_no_database)
{
    daemon_proc a;
    daemon_start(&a, NULL);
    char state2[300], db2[320], *out = NULL;
    snprintf(state2, sizeof state2, "%s/state2", test_tmpdir());
    snprintf(db2, sizeof db2, "%s/clad.db", state2);
    int rc = run_second_cladd(a.sock, state2, &out);
    CHECK_MSG(rc == 1, "second cladd exited %d; output:\n%s", rc, out);
    CHECK_MSG(strstr(out, "already listening"), "refusal does not say why:\n%s", out);
    CHECK_MSG(!exists(db2), "the refused daemon created %s", db2);
    free(out);
    check_serves(&a);
    CHECK_INT_EQ(daemon_stop(&a, SIGTERM, 10), 0);
}
