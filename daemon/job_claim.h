/* The node's side of the shared job queue (storage/store_queue.c; docs/SCALING.md, "Shared job queue").
 *
 * Every job a node accepts is queued in the store with its data. Before a queued job starts, the node
 * claims it in the store (job_claim_hook); a job of another node whose lane is free is claimed by a timer
 * (every JOB_CLAIM_POLL_MS while this node has a free slot) and rebuilt from its stored request and data
 * (the kind's revive function). While a claimed job is queued here or runs, the timer renews its lease every
 * lease/3; a renewal that fails means another node has the job: it is stopped without writing anything. A
 * cancel made through another node reaches the owner with the renewal. Loop thread only. */
#ifndef CLAD_DAEMON_JOB_CLAIM_H
#define CLAD_DAEMON_JOB_CLAIM_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/jobs.h"
#include "storage/store.h"

#define JOB_CLAIM_POLL_MS 250
#define JOB_CLAIM_RETRY_MS 10          /* a claim that found the store busy is retried after 10-20 ms */
#define JOB_CLAIM_CHECKPOINT_TICKS 120 /* every 30 s a worker checkpoints the store's log */

struct cladd;

/* Rebuilds a claimed job of another node from its store record and data (ownership of data passes) and
 * submits it with job_submit (spec.id = sj->id), possibly later, once its base is loaded. On failure
 * (now or later) it calls job_claim_revive_failed. */
typedef void (*job_revive_fn)(struct cladd *app, const store_job *sj, void *data, size_t data_len);

/* Starts the timer (the node's id is app->cfg.node_id). */
void job_claim_start(struct cladd *app);
/* Stops the timer (after the job queue has stopped). */
void job_claim_stop(struct cladd *app);
/* The job queue's on_claim hook. */
int job_claim_hook(struct cladd *app, job *j);
/* A job ended or was queued here: look for more work now rather than at the next tick. */
void job_claim_kick(struct cladd *app);
/* A claimed job that could not be rebuilt here ends failed with err (this node owns it). */
void job_claim_revive_failed(struct cladd *app, int64_t id, const clad_err *err);

/* The claimed job's stored request as a JSON object (new reference), or NULL after ending the job failed
 * (job_claim_revive_failed) because it has none that parses. */
json_t *job_claim_request(struct cladd *app, const store_job *sj);
/* Submits a rebuilt job (spec->id: its id in the store) as this node's start `attempt`. On failure the
 * job ends failed (job_claim_revive_failed), spec->arg stays the caller's to free, and the error is
 * returned. */
int job_claim_resubmit(struct cladd *app, job_spec *spec, int attempt);

/* Revive functions of the kinds that any node can run (api_train.c, api_merge.c, api_bases.c). */
void api_train_revive(struct cladd *app, const store_job *sj, void *data, size_t data_len);
void api_merge_revive(struct cladd *app, const store_job *sj, void *data, size_t data_len);
void api_base_train_revive(struct cladd *app, const store_job *sj, void *data, size_t data_len);

#endif
