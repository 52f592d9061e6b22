/* Gathering concurrent requests for one model into one compute task; see serve_batch.h. */
#include "daemon/serve_batch.h"

#include <stdbool.h>
#include <stdlib.h>

#include <uv.h>

typedef struct batch {
    struct batch *next;             /* the loop's list of batches in flight */
    const serve_batch_ops *ops;
    const void *key1, *key2;
    /* The loop appends while !started; the worker sets started before it reads items, so the items a
     * worker runs never change under it. */
    uv_mutex_t lock;
    bool started;
    int n;
    void *items[SERVE_BATCH_MAX];
    int status[SERVE_BATCH_MAX];
    clad_err err[SERVE_BATCH_MAX];
} batch;

static batch *in_flight;
static serve_batch_stats stats;

static int batch_work(void *arg, clad_err *err)
{
    batch *b = arg;
    (void)err;
    uv_mutex_lock(&b->lock);
    b->started = true;
    uv_mutex_unlock(&b->lock);
    void *ctx = NULL;
    int rc = b->ops->begin(b->items[0], &ctx, &b->err[0]);
    for (int i = 0; i < b->n; i++) {
        if (rc) {
            b->status[i] = rc;
            b->err[i] = b->err[0];
        } else {
            b->status[i] = b->ops->run(b->items[i], ctx, &b->err[i]);
        }
    }
    if (!rc) b->ops->end(b->items[0], ctx);
    return 0;  /* each request has its own status */
}

static void batch_unlink(batch *b)
{
    for (batch **p = &in_flight; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
}

static void batch_done(void *arg, int status, const clad_err *err)
{
    batch *b = arg;
    batch_unlink(b);
    stats.batches++;
    stats.requests += (unsigned long long)b->n;
    if ((unsigned long long)b->n > stats.max_size) stats.max_size = (unsigned long long)b->n;
    for (int i = 0; i < b->n; i++) b->ops->done(b->items[i], status ? status : b->status[i], status ? err : &b->err[i]);
    uv_mutex_destroy(&b->lock);
    free(b);
}

/* Of the batches of this key that have not started: how many there are, and the one with the fewest
 * requests that has room (or NULL). */
static batch *batch_joinable(const serve_batch_ops *ops, const void *key1, const void *key2, unsigned *waiting)
{
    batch *best = NULL;
    *waiting = 0;
    for (batch *b = in_flight; b; b = b->next) {
        if (b->ops != ops || b->key1 != key1 || b->key2 != key2) continue;
        uv_mutex_lock(&b->lock);
        bool open = !b->started;
        uv_mutex_unlock(&b->lock);
        if (!open) continue;
        (*waiting)++;
        if (b->n < SERVE_BATCH_MAX && (!best || b->n < best->n)) best = b;
    }
    return best;
}

int serve_batch_submit(job_queue *q, const serve_batch_ops *ops, const void *key1, const void *key2, unsigned spread,
                       void *item, clad_err *err)
{
    unsigned waiting = 0;
    batch *b = batch_joinable(ops, key1, key2, &waiting);
    if (b && waiting >= spread) {
        uv_mutex_lock(&b->lock);
        bool open = !b->started;  /* it may have started since batch_joinable looked */
        if (open) b->items[b->n++] = item;
        uv_mutex_unlock(&b->lock);
        if (open) return 0;
    }
    b = calloc(1, sizeof *b);
    if (!b) return clad_err_set(err, CLAD_ENOMEM, "out of memory");
    if (uv_mutex_init(&b->lock)) abort();
    b->ops = ops;
    b->key1 = key1;
    b->key2 = key2;
    b->items[b->n++] = item;
    int rc = job_queue_compute(q, batch_work, batch_done, b, err);
    if (rc) {
        uv_mutex_destroy(&b->lock);
        free(b);
        return rc;
    }
    b->next = in_flight;
    in_flight = b;
    return 0;
}

void serve_batch_get_stats(serve_batch_stats *st)
{
    *st = stats;
}

void serve_batch_metrics_write(FILE *f)
{
    fprintf(f,
            "# HELP clad_predict_batches_total Compute tasks that ran predictions (each one or more requests for one "
            "version).\n# TYPE clad_predict_batches_total counter\nclad_predict_batches_total %llu\n"
            "# HELP clad_predict_batch_requests_total Prediction requests those tasks ran; above the task count when "
            "requests were batched.\n# TYPE clad_predict_batch_requests_total counter\n"
            "clad_predict_batch_requests_total %llu\n"
            "# HELP clad_predict_batch_size_max The most requests one task has run.\n"
            "# TYPE clad_predict_batch_size_max gauge\nclad_predict_batch_size_max %llu\n",
            stats.batches, stats.requests, stats.max_size);
}
