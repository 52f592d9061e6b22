/* Numbers in replies print as people wrote them: a value that went through float32 as its shortest
 * decimal (0.001, not 0.0010000000474974513). The daemon end of it is in test_daemon_cli.c. */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/http.h"
#include "tests/test.h"

TEST(daemon_float_shortest_reads_back_as_the_same_float)
{
    CHECK(http_float_shortest(0.001f) == 0.001);
    CHECK(http_float_shortest(0.1f) == 0.1);
    CHECK(http_float_shortest(16.0f) == 16.0);
    CHECK(http_float_shortest(3e-5f) == 3e-5);
    CHECK(http_float_shortest(1.0f / 3.0f) == 0.33333334);
    const float cases[] = {FLT_MIN, FLT_MAX, -2.5e-7f, 0.123456789f, 1e-45f, 7.0f / 9.0f};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MSG((float)http_float_shortest(cases[i]) == cases[i], "%.9g does not read back", (double)cases[i]);
}
