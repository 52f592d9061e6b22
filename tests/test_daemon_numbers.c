/* Numbers in replies print as people wrote them: a value that went through float32 as its shortest
 * decimal (0.001, not 0.0010000000474974513). The daemon end of it is in test_daemon_cli.c. */
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/http.h"
#include "daemon/json_text.h"
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

/* The reference: a tidied deep copy dumped by jansson, as replies were written before json_text. */
static void tidy_float_reals(json_t *j)
{
    const char *key;
    json_t *v;
    size_t i;
    if (json_is_real(j)) {
        double x = json_real_value(j);
        if (isfinite(x) && fabs(x) <= (double)FLT_MAX && (double)(float)x == x && x != floor(x))
            json_real_set(j, http_float_shortest((float)x));
    }
    if (json_is_object(j)) json_object_foreach(j, key, v) tidy_float_reals(v);
    if (json_is_array(j)) json_array_foreach(j, i, v) tidy_float_reals(v);
}

TEST(daemon_json_text_matches_jansson_on_a_tidied_copy)
{
    json_t *probs = json_array();
    for (int i = 0; i < 200; i++) json_array_append_new(probs, json_real((double)((float)i / 7.0f)));
    json_t *j = json_pack("{s:s,s:I,s:o,s:[f,f,f,f,f,f,f,f,f],s:{s:b,s:b,s:n,s:s},s:[],s:{}}", "task",
                          "a \"quoted\" \\ tab\t nl\n bell\x07 é", "version", (json_int_t)-12345678901LL,
                          "probabilities", probs, "reals", 0.1, 1e20, 1e-5, 123456789.0, -0.0, 3.0,
                          (double)0.001f, 1.0 / 3.0, (double)FLT_MAX, "flags", "t", 1, "f", 0, "none", "key\x01",
                          "ctl", "empty", "obj");
    CHECK(j != NULL);
    json_t *copy = json_deep_copy(j);
    tidy_float_reals(copy);
    char *want = json_dumps(copy, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    size_t len = 0;
    char *got = json_text_line(j, &len);
    CHECK(want != NULL && got != NULL);
    CHECK_INT_EQ((long long)len, (long long)strlen(want) + 1);
    CHECK_MSG(got[len - 1] == '\n' && !strncmp(got, want, len - 1), "json_text:\n%s\njansson:\n%s", got, want);
    free(want);
    free(got);
    json_decref(copy);
    json_decref(j);
}
