/* Promotion policy of a training job (?promote=always|if-better|never): whether the new version becomes
 * `active` or waits under the alias `candidate`, and why (recorded in its lineage as `promotion`). */
#ifndef CLAD_DAEMON_TRAIN_PROMOTE_H
#define CLAD_DAEMON_TRAIN_PROMOTE_H

#include <jansson.h>
#include <stdbool.h>

#include "core/dataset.h"
#include "core/model.h"
#include "daemon/api.h"

typedef enum promote_policy { PROMOTE_ALWAYS = 0, PROMOTE_IF_BETTER, PROMOTE_NEVER } promote_policy;

/* Reads ?promote= (absent: always). CLAD_EINVAL naming the accepted values. */
int promote_parse(const http_req *req, promote_policy *out, clad_err *err);
const char *promote_policy_name(promote_policy p);

/* Worker thread, after the new adapter was evaluated on the held-out part ho (new_acc): decides and
 * returns the lineage entry (new reference) {"policy", "promoted", "reason", ...}. For if-better the
 * task's current active version is evaluated on the same ho through a read-only handle on db_path (a
 * fusion, which needs its sources, is compared by its recorded held-out accuracy instead, and the
 * reason says so). A task without an active version always promotes. */
json_t *promote_judge(promote_policy p, const char *db_path, const model *m, const char *task, const dataset *ho,
                      double new_acc);

/* Loop thread, after the version was stored with STORE_PUT_KEEP_ACTIVE: points `candidate` at it, with the
 * lineage's reason. */
int promote_park(cladd *app, const char *task, int64_t version, const json_t *decision, int peer_uid, clad_err *err);

#endif
