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

/* Where an evaluation belongs: whose data it is, and the matrix row it goes in. */
typedef struct eval_place {
    char owner[STORE_NAME_MAX + 1];   /* the task whose data it is */
    bool own;                         /* owner is the evaluated task */
    bool placed;                      /* own data: an entry of the matrix, in row `after` */
    store_ref after;
} eval_place;

/* Worker thread (it reads every task's versions and evaluations on base, so never on the loop): places
 * the evaluation of task on data with data_sha, with its own store reader of db_path. If the store cannot
 * be read, the data is the given task's (else task's own) and the evaluation is not placed in the matrix. */
void eval_record_place(const char *db_path, const http_req *req, const char *task, const char *base,
                       const char *data_sha, eval_place *p);
/* Loop thread: records the evaluation of task@version placed at p. Returns the JSON fields to add to the
 * reply (new reference: data_name, data_task, own_data, recorded); err says why it was not recorded
 * (CLAD_EDENIED for peers that may not write). */
json_t *eval_record(cladd *app, const http_req *req, const char *task, int64_t version, const eval_place *p,
                    const eval_result *ev, const char *data_sha, clad_err *err);

#endif
