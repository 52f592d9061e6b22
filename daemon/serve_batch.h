/* Gathering concurrent requests for one model into one compute task.
 *
 * A request submitted while tasks for the same key (the model and adapter it runs) are queued on the
 * compute pool and have not started joins one of them instead of queueing its own; when a thread is free
 * the request starts at once, so nothing waits for a batch to fill (only what is already waiting is
 * batched).
 * A task takes at most SERVE_BATCH_MAX requests. It prepares once for all of them (begin: a workspace),
 * then runs each request's own rows with run: a request's answer is computed exactly as it would be
 * alone, bit for bit. (One forward over the concatenated rows would differ in the low bits: OpenBLAS picks
 * its kernels by the number of rows, so a row's result depends on how many rows share its product.)
 * What a batch saves is the rest of a request's cost on the pool: the queue hand-offs between threads,
 * taking and warming a workspace, and the training job's rebudgeting per compute task.
 *
 * Loop thread, except the ops marked worker.
 */
#ifndef CLAD_DAEMON_SERVE_BATCH_H
#define CLAD_DAEMON_SERVE_BATCH_H

#include <stdio.h>

#include "daemon/jobs.h"

#define SERVE_BATCH_MAX 32

typedef struct serve_batch_ops {
    /* Worker: prepares what every request of the batch shares (*ctx), from the first request. */
    int (*begin)(void *first, void **ctx, clad_err *err);
    /* Worker: runs one request with ctx; its result stays in the request. */
    int (*run)(void *item, void *ctx, clad_err *err);
    /* Worker: gives back ctx (after a successful begin). */
    void (*end)(void *first, void *ctx);
    /* Loop: the request is done (status 0 or a CLAD_E* code with err). Called once per request. */
    void (*done)(void *item, int status, const clad_err *err);
} serve_batch_ops;

/* Runs item in a batch keyed by (key1, key2) on q's compute pool. It joins a waiting batch of its key only
 * when `spread` of them already wait (the compute threads: each thread that frees up then finds a batch,
 * instead of one thread running everything that waited while the others idle), the one with the fewest
 * requests. On an error (the pool refused the task) done is never called for item and the caller
 * answers it. */
int serve_batch_submit(job_queue *q, const serve_batch_ops *ops, const void *key1, const void *key2, unsigned spread,
                       void *item, clad_err *err);

/* The counters clad_predict_batches_total, clad_predict_batch_requests_total and the largest batch so far,
 * in the Prometheus text format. */
void serve_batch_metrics_write(FILE *f);

typedef struct serve_batch_stats {
    unsigned long long batches, requests, max_size;
} serve_batch_stats;
void serve_batch_get_stats(serve_batch_stats *st);

#endif
