/* A small in-tree test framework.
 *
 * Each TEST(name) registers itself at load time; the runner (tests/runner.c) forks one child per test,
 * gives it a timeout, prints TAP lines (`ok N name`, `not ok N name`, `ok N name # skip reason`) and ends
 * with the plain line `N passed, N failed, N skipped`. Assertions print both operands and end the child
 * with a failure, so a failed check can never be mistaken for a pass. A failing test's output (stdout and
 * stderr) is printed after its `not ok` line, each line as a `# ` comment.
 *
 * A test whose prerequisite is missing (not root, a tool not installed) calls TEST_SKIP("why"): it is
 * reported as skipped, never as passed.
 *
 * Run a subset: `build/clad-tests PATTERN...` runs tests whose name contains any PATTERN; `-PATTERN`
 * leaves out tests whose name contains PATTERN.
 * TEST_TIMEOUT(name, seconds) gives a slow test its own limit (default 60 s).
 */
#ifndef CLAD_TESTS_TEST_H
#define CLAD_TESTS_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn, int timeout_s);
_Noreturn void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
_Noreturn void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A scratch directory private to the running test, removed by the runner afterwards. */
const char *test_tmpdir(void);
/* The build directory (CLAD_BUILD, default "build"), to find programs such as cladd. */
const char *test_build_dir(void);

#define TEST_TIMEOUT(name, secs)                                                   \
    static void test_##name(void);                                                 \
    __attribute__((constructor)) static void test_register_##name(void)            \
    { test_register(#name, test_##name, secs); }                                   \
    static void test_##name(void)
#define TEST(name) TEST_TIMEOUT(name, 60)

/* Ends the running test as skipped; the reason is printed on its `ok N name # skip reason` line. */
#define TEST_SKIP(...) test_skip(__VA_ARGS__)

#define CHECK(cond)                                                                \
    do { if (!(cond)) test_fail(__FILE__, __LINE__, "CHECK(%s) failed", #cond); } while (0)
#define CHECK_MSG(cond, ...)                                                       \
    do { if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define CHECK_INT_EQ(a, b)                                                         \
    do { long long a_ = (long long)(a), b_ = (long long)(b);                       \
         if (a_ != b_) test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld",     \
                                 #a, #b, a_, b_); } while (0)
#define CHECK_STR_EQ(a, b)                                                         \
    do { const char *a_ = (a), *b_ = (b);                                          \
         if (!a_ || !b_ || strcmp(a_, b_) != 0)                                    \
             test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,    \
                       a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } while (0)
/* |a - b| <= tol */
#define CHECK_NEAR(a, b, tol)                                                      \
    do { double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);            \
         if (!(fabs(a_ - b_) <= t_))                                               \
             test_fail(__FILE__, __LINE__, "%s ~= %s: %.9g vs %.9g (diff %.3g > %.3g)", \
                       #a, #b, a_, b_, fabs(a_ - b_), t_); } while (0)
/* Elementwise: |a[i] - b[i]| <= atol + rtol * |b[i]| for all i < n. */
#define CHECK_ARRAY_NEAR(a, b, n, atol, rtol)                                      \
    test_check_array_near(__FILE__, __LINE__, #a, #b, (a), (b), (n), (atol), (rtol))
void test_check_array_near(const char *file, int line, const char *an, const char *bn,
                           const float *a, const float *b, size_t n, double atol, double rtol);

#endif
