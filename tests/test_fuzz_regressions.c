/* Regression tests for what the fuzzers (tests/fuzz, `make fuzz`) found, one test per finding, in the
 * normal suite so the fix stays without clang or a fuzzing run. docs/TESTING.md lists the findings. */
#include "tests/test.h"

#include <signal.h>

#include "bench/stream.h"
#include "tests/daemon_util.h"

/* fuzz_stream_spec: an unknown model preset in a stream file returned CLAD_EINVAL while the error said
 * not_found (the code of model_config_from_json), so the return value and the error disagreed. */
TEST(fuzz_regression_stream_unknown_preset_is_invalid_input)
{
    static stream s;
    clad_err e = {0};
    int rc = stream_parse(&s, "{\"name\": \"x\", \"base\": {\"model\": \"vit-nosuch\"}, \"train_per_task\": 10,"
                              " \"test_per_task\": 10, \"tasks\": [{\"name\": \"a\", \"data\": \"fmnist\"}]}",
                          "", &e);
    CHECK_INT_EQ(rc, CLAD_EINVAL);
    CHECK_INT_EQ(e.code, CLAD_EINVAL);
    CHECK_MSG(strstr(e.msg, "vit-nosuch") != NULL, "%s", e.msg);
}

/* fuzz_json_bodies: the same mistake in a base-training body was answered 404 not_found (the route
 * exists; the body is wrong), because the handler replied with the error's code, not the return value. */
TEST(fuzz_regression_base_training_unknown_preset_is_400)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    char *body = NULL;
    int status = curl_req(&d, "POST", "/v1/bases/b1",
                          "-H 'Content-Type: application/json' -d '{\"model\": \"vit-nosuch\"}'", &body, NULL);
    CHECK_MSG(status == 400, "status %d: %s", status, body);
    CHECK_STR_EQ(error_code_of(body), "invalid_input");
    CHECK_MSG(strstr(body, "vit-nosuch") != NULL, "%s", body);
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 10), 0);
}
