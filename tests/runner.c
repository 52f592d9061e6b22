/* The test runner: one forked child per test, a timeout each, TAP output, summary line.
 *
 * A child's stdout and stderr go to a private file, replayed as `# ` comment lines before the test's
 * result line: nothing a test printed is lost when it fails, crashes or times out (stdout is made line
 * buffered in the child, and test_fail flushes it before _exit). A skipped test exits with SKIP_STATUS
 * after writing its reason to a pipe. Tests named selftest_* exercise the runner itself and run only when
 * CLAD_RUNNER_SELFTEST is set (tests/test_runner.c starts them in a nested runner). */
#include "tests/test.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
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

enum { SKIP_STATUS = 77, MAX_REPLAY = 64 * 1024 };
enum test_result { TEST_PASSED, TEST_FAILED, TEST_SKIPPED };

static test_case *tests;
static int n_tests, cap_tests;
static char tmpdir[256];
static int skip_fd = -1; /* in the child: where test_skip writes its reason */

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
    fflush(stdout);
    fflush(stderr);
    _exit(1);
}

_Noreturn void test_skip(const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (n <= 0) n = snprintf(reason, sizeof reason, "no reason given");
    if ((size_t)n >= sizeof reason) n = (int)sizeof reason - 1;
    fflush(stdout);
    fflush(stderr);
    if (skip_fd >= 0 && write(skip_fd, reason, (size_t)n) < 0) _exit(1);
    _exit(SKIP_STATUS);
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

/* Patterns select tests whose name contains them; a pattern "-X" leaves out tests containing X. */
static int selected(const char *name, int argc, char **argv)
{
    int includes = 0, hit = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-') {
            if (argv[i][1] && strstr(name, argv[i] + 1)) return 0;
        } else {
            includes++;
            hit |= strstr(name, argv[i]) != NULL;
        }
    }
    return includes == 0 || hit;
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

/* Prints what the test wrote (at most the last MAX_REPLAY bytes), each line as a TAP comment. */
static void replay_output(int fd)
{
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0) return;
    off_t from = size > MAX_REPLAY ? size - MAX_REPLAY : 0;
    if (from > 0) printf("# (first %lld bytes of output left out)\n", (long long)from);
    static char buf[MAX_REPLAY + 1];
    ssize_t n = pread(fd, buf, (size_t)(size - from), from);
    if (n <= 0) return;
    buf[n] = '\0';
    for (char *line = buf, *end; line < buf + n; line = end + 1) {
        end = memchr(line, '\n', (size_t)(buf + n - line));
        if (!end) end = buf + n;
        *end = '\0';
        printf("%s%s\n", line[0] == '#' ? "" : "# ", line);
    }
}

/* Runs one test (number `num` in the TAP output) in a child with its own temporary directory. */
static enum test_result run_one(const test_case *t, int num)
{
    char outpath[] = "/tmp/clad-test-out-XXXXXX";
    int out = mkstemp(outpath), skip_pipe[2];
    if (out >= 0) unlink(outpath); /* only the open descriptor is used: nothing to clean up later */
    snprintf(tmpdir, sizeof tmpdir, "/tmp/clad-test-XXXXXX");
    if (out < 0 || pipe2(skip_pipe, O_CLOEXEC) != 0) {
        printf("# cannot set up %s: %s\nnot ok %d %s\n", t->name, strerror(errno), num, t->name);
        exit(1); /* out of descriptors: every later test would fail the same way */
    }
    if (!mkdtemp(tmpdir)) {
        printf("# mkdtemp: %s\nnot ok %d %s\n", strerror(errno), num, t->name);
        close(out);
        close(skip_pipe[0]);
        close(skip_pipe[1]);
        return TEST_FAILED;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0); /* so a timeout can kill whatever the test started */
        dup2(out, STDOUT_FILENO);
        dup2(out, STDERR_FILENO);
        close(out);
        /* A crash or timeout must not lose buffered lines. glibc ignores a mode change on a stream that
         * has been used unless it is given a new buffer. */
        static char line_buf[4096];
        setvbuf(stdout, line_buf, _IOLBF, sizeof line_buf);
        close(skip_pipe[0]);
        skip_fd = skip_pipe[1];
        alarm((unsigned)t->timeout_s);
        t->fn();
        fflush(stdout);
        _exit(0);
    }
    close(skip_pipe[1]);
    int status = 0;
    double t0 = now_s();
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    double dt = now_s() - t0;
    kill(-pid, SIGKILL); /* reap helpers the test may have left behind */
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    char reason[512] = "";
    fcntl(skip_pipe[0], F_SETFL, O_NONBLOCK);
    ssize_t rn = read(skip_pipe[0], reason, sizeof reason - 1);
    reason[rn > 0 ? rn : 0] = '\0';
    close(skip_pipe[0]);
    replay_output(out);
    close(out);
    enum test_result r = TEST_FAILED;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) r = TEST_PASSED;
    else if (WIFEXITED(status) && WEXITSTATUS(status) == SKIP_STATUS && rn > 0) r = TEST_SKIPPED;
    if (WIFSIGNALED(status))
        printf("# killed by signal %d%s\n", WTERMSIG(status),
               WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
    if (r == TEST_SKIPPED) printf("ok %d %s # skip %s\n", num, t->name, reason);
    else printf("%s %d %s (%.2fs)\n", r == TEST_PASSED ? "ok" : "not ok", num, t->name, dt);
    fflush(stdout);
    return r;
}

int main(int argc, char **argv)
{
    qsort(tests, (size_t)n_tests, sizeof *tests, cmp_name);
    signal(SIGPIPE, SIG_IGN);
    bool selftest = getenv("CLAD_RUNNER_SELFTEST") != NULL;
    int planned = 0;
    for (int i = 0; i < n_tests; i++) {
        bool is_self = strncmp(tests[i].name, "selftest_", 9) == 0;
        if (is_self != selftest || !selected(tests[i].name, argc, argv)) tests[i].fn = NULL;
        else planned++;
    }
    printf("1..%d\n", planned);
    int count[3] = {0}, num = 0;
    for (int i = 0; i < n_tests; i++)
        if (tests[i].fn) count[run_one(&tests[i], ++num)]++;
    printf("%d passed, %d failed, %d skipped\n", count[TEST_PASSED], count[TEST_FAILED], count[TEST_SKIPPED]);
    return count[TEST_FAILED] ? 1 : 0;
}
