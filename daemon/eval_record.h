/* What an evaluation used and where it belongs: the data's name and whose test data it is.
 *
 * An evaluation of task T records, besides its numbers, the sha256 of its data, an optional human name
 * (?data_name=, `clad eval` sends the file name) and the task whose data it is (?data_task=; by default
 * recognised by its sha256: the training data of another task's version, or data already recorded as
 * another task's; otherwise T's own). Only evaluations on a task's own data become entries of the
 * accuracy matrix, placed in the row of the latest version committed on the base at that time; a task
 * evaluated on another task's data is kept as a cross-evaluation beside the matrix, never in it.
 * These details live in the evaluation's detail_json: {"data_name", "data_task", "own_data", "after"}.
 */
#ifndef CLAD_DAEMON_EVAL_RECORD_H
#define CLAD_DAEMON_EVAL_RECORD_H

#include "core/train.h"
#include "daemon/api.h"

/* Checks ?data_name= and ?data_task= before any work; answers 400/404 and returns false on a bad one. */
bool eval_record_check(http_req *req);

/* Loop thread: records the evaluation of task@version on data with data_sha. Returns the JSON fields to
 * add to the reply (new reference: data_name, data_task, own_data, recorded); err says why it was not
 * recorded (CLAD_EDENIED for peers that may not write). */
json_t *eval_record(cladd *app, const http_req *req, const char *task, int64_t version, const char *base,
                    const eval_result *ev, const char *data_sha, clad_err *err);

#endif
