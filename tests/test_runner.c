/* Tests of the test runner itself: skipped tests are reported as skipped, and a failing or crashing
 * test's output reaches the log. The selftest_* cases run only inside the nested runner started here. */
#include "tests/test.h"

#include <signal.h>
#include <sys/wait.h>

TEST(selftest_passes)
{
    printf("# a passing test's note\n");
}

TEST(selftest_fails_after_printing)
{
    printf("stdout line before the failure\n");
    CHECK_INT_EQ(1 + 1, 3);
}

TEST(selftest_crashes_after_printing)
{
    printf("stdout line before the crash\n");
    raise(SIGKILL); /* not SIGSEGV: sanitizers catch that and exit instead */
}

TEST(selftest_skips)
{
    printf("this line is printed before skipping\n");
    TEST_SKIP("needs a %s", "widget");
}

TEST(runner_reports_skips_and_failing_output)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "CLAD_RUNNER_SELFTEST=1 %s/clad-tests selftest_", test_build_dir());
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    static char out[16384];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    printf("%s", out);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 1, "nested runner status %d", status);
    CHECK(strstr(out, "1..4\n") != NULL);
    CHECK(strstr(out, "# stdout line before the failure\n") != NULL);
    CHECK(strstr(out, "1 + 1 == 3: 2 != 3") != NULL);
    CHECK(strstr(out, "not ok 2 selftest_fails_after_printing") != NULL);
    CHECK(strstr(out, "# stdout line before the crash\n# killed by signal 9\nnot ok 1 selftest_crashes") != NULL);
    CHECK(strstr(out, "ok 3 selftest_passes (") != NULL);
    CHECK(strstr(out, "ok 4 selftest_skips # skip needs a widget\n") != NULL);
    CHECK(strstr(out, "\n1 passed, 2 failed, 1 skipped\n") != NULL);
}
