/* Promotion policy of training jobs; see train_promote.h. */
#include "daemon/version_compose.h"
#include "daemon/train_promote.h"

#include <stdio.h>
#include <string.h>

#include "core/train.h"
#include "io/model_io.h"

static const char *const names[] = {"always", "if-better", "never"};

const char *promote_policy_name(promote_policy p)
{
    return names[p];
}

int promote_parse(const http_req *req, promote_policy *out, clad_err *err)
{
    const char *v = http_req_query(req, "promote");
    *out = PROMOTE_ALWAYS;
    if (!v) return 0;
    for (int i = 0; i < 3; i++)
        if (!strcmp(v, names[i])) {
            *out = (promote_policy)i;
            return 0;
        }
    return clad_err_set(err, CLAD_EINVAL, "query parameter 'promote' must be always, if-better or never");
}

/* The active version's accuracy on ho (or its recorded held-out accuracy when it cannot be evaluated
 * alone). Returns false when the task has no active version. */
static bool active_accuracy(const char *db_path, const model *m, const char *task, const dataset *ho, int64_t *version,
                            double *acc, bool *same_data)
{
    store *rd = store_open_reader(db_path, NULL);
    store_version *v = NULL;
    bool found = rd && store_version_get_alias(rd, task, "active", STORE_WITH_BLOB, &v, NULL) == 0;
    if (!found) {
        store_close(rd);
        return false;
    }
    *version = v->version;
    *same_data = false;
    adapter *a = strcmp(v->kind, "fusion") ? version_adapter(rd, m, v, NULL) : NULL;
    store_close(rd);
    eval_result ev;
    if (a && ho->n && model_evaluate(m, a, ho, 256, &ev, NULL) == 0) {
        *acc = ev.accuracy;
        *same_data = true;
    } else {
        json_t *mj = json_loads(v->metrics_json ? v->metrics_json : "{}", 0, NULL);
        json_t *h = json_object_get(mj, "holdout_accuracy");
        *acc = json_is_number(h) ? json_number_value(h) : 0.0;
        json_decref(mj);
    }
    adapter_destroy(a);
    store_version_free(v);
    return true;
}

json_t *promote_judge(promote_policy p, const char *db_path, const model *m, const char *task, const dataset *ho,
                      double new_acc)
{
    json_t *d = json_pack("{s:s}", "policy", names[p]);
    char reason[STORE_REASON_MAX + 1];
    bool promoted = p == PROMOTE_ALWAYS;
    int64_t av = 0;
    double acc = 0;
    bool same = false;
    if (p == PROMOTE_ALWAYS) {
        snprintf(reason, sizeof reason, "promote=always");
    } else if (!active_accuracy(db_path, m, task, ho, &av, &acc, &same)) {
        promoted = true;
        snprintf(reason, sizeof reason, "the task had no active version");
    } else if (p == PROMOTE_NEVER) {
        snprintf(reason, sizeof reason, "promote=never: waits for 'clad promote %s@<version>'", task);
    } else if (!ho->n) {
        snprintf(reason, sizeof reason, "no held-out data to compare with active version %lld", (long long)av);
    } else {
        promoted = new_acc >= acc;
        snprintf(reason, sizeof reason, "held-out accuracy %.4f is %s active version %lld's %.4f on %s", new_acc,
                 promoted ? "not below" : "below", (long long)av, acc,
                 same ? "the same held-out samples" : "its own held-out samples (a fusion cannot be re-evaluated alone)");
        json_object_set_new(d, "active_version", json_integer(av));
        json_object_set_new(d, "active_accuracy", json_real(acc));
        json_object_set_new(d, "new_accuracy", json_real(new_acc));
        json_object_set_new(d, "holdout_samples", json_integer(ho->n));
        json_object_set_new(d, "same_data", json_boolean(same));
    }
    json_object_set_new(d, "promoted", json_boolean(promoted));
    json_object_set_new(d, "reason", json_string(reason));
    return d;
}

int promote_park(cladd *app, const char *task, int64_t version, const json_t *decision, int peer_uid, clad_err *err)
{
    const char *reason = json_string_value(json_object_get(decision, "reason"));
    return store_alias_set(app->st, task, "candidate", version, peer_uid, reason, err);
}
