/* The job runner's contracts under races, through the real daemon: a cancel answered 202 is honoured, a
 * job's error is published only with its final state, and job history survives a restart. Jobs here are
 * the test-only sleep jobs (--enable-test-routes), whose `tail_ms` stands for the work after a job's
 * last step that does not look at stop requests. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/daemon_util.h"
#include "tests/test.h"

/* Polls job id until its progress reports `done` >= done; returns its JSON (still running). */
static json_t *wait_progress(const daemon_proc *d, long long id, long long done, double timeout_s)
{
    double t0 = now_s();
    for (;;) {
        json_t *j = get_job(d, id);
        if (json_integer_value(json_object_get(json_object_get(j, "progress"), "done")) >= done) return j;
        json_decref(j);
        CHECK_MSG(now_s() - t0 < timeout_s, "job %lld made no progress in %.1f s", id, timeout_s);
        sleep_ms(10);
    }
}

TEST(daemon_job_cancel_after_the_last_step_is_honoured)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    /* One step, then 1.5 s of work that never checks for stop (as serialising a trained adapter). */
    long long id = submit_sleep(&d, "{\"steps\": 1, \"step_ms\": 10, \"tail_ms\": 1500}");
    json_t *j = wait_progress(&d, id, 1, 5);
    CHECK_STR_EQ(state_of(j), "running");
    json_decref(j);
    char path[64], *body = NULL;
    snprintf(path, sizeof path, "/v1/jobs/%lld", id);
    int code = curl_req(&d, "DELETE", path, NULL, &body, NULL);
    CHECK_MSG(code == 202, "cancel during the tail answered %d: %s", code, body);
    free(body);
    /* 202 promised a cancel: the finished work must be discarded, not published as a success. */
    j = wait_final(&d, id, 10);
    CHECK_STR_EQ(state_of(j), "cancelled");
    CHECK(json_is_null(json_object_get(j, "result")));
    CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "cancelled");
    json_decref(j);
    /* Once final, a cancel is 409 and changes nothing. */
    CHECK_INT_EQ(curl_req(&d, "DELETE", path, NULL, &body, NULL), 409);
    CHECK_STR_EQ(error_code_of(body), "conflict");
    free(body);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}

TEST(daemon_job_error_is_published_only_with_the_final_state)
{
    daemon_proc d;
    daemon_start(&d, NULL);
    /* The run sets its error at step 1, then works 1 s more before returning it. */
    long long id = submit_sleep(&d, "{\"steps\": 3, \"step_ms\": 10, \"fail_at\": 1, \"tail_ms\": 1000}");
    json_decref(wait_progress(&d, id, 1, 5));
    int running_seen = 0;
    for (double t0 = now_s(); now_s() - t0 < 0.6; sleep_ms(20)) {
        json_t *j = get_job(&d, id);
        if (!strcmp(state_of(j), "running")) {
            running_seen++;
            char *text = json_dumps(j, JSON_COMPACT);
            CHECK_MSG(json_is_null(json_object_get(j, "error")), "a running job shows an error: %s", text);
            free(text);
        }
        json_decref(j);
    }
    CHECK_MSG(running_seen > 3, "only %d polls saw the job running", running_seen);
    json_t *j = wait_final(&d, id, 10);
    CHECK_STR_EQ(state_of(j), "failed");
    json_t *e = json_object_get(j, "error");
    CHECK_STR_EQ(json_string_value(json_object_get(e, "code")), "invalid_input");
    CHECK(strstr(json_string_value(json_object_get(e, "message")), "failed on purpose at step 1") != NULL);
    json_decref(j);
    CHECK_INT_EQ(daemon_stop(&d, SIGTERM, 5), 0);
}
