/* The test runner: one forked child per test, a timeout each, TAP-like output, summary line. */
#include "tests/test.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const char *name;
    test_fn fn;
    int timeout_s;
} test_case;

static test_case *tests;
static int n_tests, cap_tests;
static char tmpdir[256];

void test_register(const char *name, test_fn fn, int timeout_s)
{
    if (n_tests == cap_tests) {
        cap_tests = cap_tests ? cap_tests * 2 : 64;
        tests = realloc(tests, (size_t)cap_tests * sizeof *tests);
        if (!tests) abort();
    }
    tests[n_tests++] = (test_case){name, fn, timeout_s};
}

_Noreturn void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "# %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(1);
}

void test_check_array_near(const char *file, int line, const char *an, const char *bn,
                           const float *a, const float *b, size_t n, double atol, double rtol)
{
    for (size_t i = 0; i < n; i++) {
        double x = a[i], y = b[i];
        if (!(fabs(x - y) <= atol + rtol * fabs(y)))
            test_fail(file, line, "%s[%zu] ~= %s[%zu]: %.9g vs %.9g (diff %.3g, atol %.3g rtol %.3g)",
                      an, i, bn, i, x, y, fabs(x - y), atol, rtol);
    }
}

const char *test_tmpdir(void) { return tmpdir; }

const char *test_build_dir(void)
{
    const char *b = getenv("CLAD_BUILD");
    return b && *b ? b : "build";
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

static int selected(const char *name, int argc, char **argv)
{
    if (argc <= 1) return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i])) return 1;
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const test_case *)a)->name, ((const test_case *)b)->name);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs one test in a child with its own temporary directory; returns 1 on pass. */
static int run_one(const test_case *t)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/clad-test-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "# mkdtemp: %s\n", strerror(errno));
        return 0;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0); /* so a timeout can kill whatever the test started */
        alarm((unsigned)t->timeout_s);
        t->fn();
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    double t0 = now_s();
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    double dt = now_s() - t0;
    kill(-pid, SIGKILL); /* reap helpers the test may have left behind */
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    int pass = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!pass && WIFSIGNALED(status))
        fprintf(stderr, "# killed by signal %d%s\n", WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
    printf("%s %s (%.2fs)\n", pass ? "ok" : "not ok", t->name, dt);
    fflush(stdout);
    return pass;
}

int main(int argc, char **argv)
{
    qsort(tests, (size_t)n_tests, sizeof *tests, cmp_name);
    signal(SIGPIPE, SIG_IGN);
    int passed = 0, failed = 0;
    for (int i = 0; i < n_tests; i++) {
        if (!selected(tests[i].name, argc, argv)) continue;
        if (run_one(&tests[i])) passed++;
        else failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
