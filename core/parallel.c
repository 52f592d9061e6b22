/* The engine's fork-join pool; see parallel.h.
 *
 * One run at a time per pool: the caller publishes (fn, ctx, n_tasks) under the mutex, bumps a generation
 * number and wakes the workers; every participant, the caller included, claims task indices from an atomic
 * counter until none are left. Workers sleep on a condition variable between runs, so an idle pool costs
 * nothing. Claiming tasks dynamically balances uneven tasks; it does not affect results, because every task
 * writes only its own outputs (parallel.h).
 */
#include "core/parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct par_buf {
    void *p;
    size_t n;
} par_buf;

struct par_pool {
    int threads;
    atomic_int budget;
    pthread_t workers[PAR_MAX_THREADS];
    int n_started;
    pthread_mutex_t mu;
    pthread_cond_t wake, idle;
    uint64_t gen;           /* bumped for every run; workers wait for it to change */
    int joining;            /* workers 1 .. joining take part in the current run */
    int running;            /* workers that have not finished the current run */
    bool stop;
    /* the current run */
    par_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next;
    par_buf scratch[PAR_MAX_THREADS];
};

typedef struct worker_arg {
    par_pool *p;
    int index;
} worker_arg;

static _Thread_local par_pool *bound;
static _Thread_local bool in_task;   /* a par_for inside a task runs serially */

static void run_tasks(par_pool *p, int worker)
{
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (t >= p->n_tasks) break;
        p->fn(p->ctx, t, worker);
    }
}

static void *worker_main(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    par_pool *p = wa.p;
    bound = p;      /* for par_scratch; in_task keeps par_for on this thread serial */
    in_task = true;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        if (wa.index > p->joining) continue;
        pthread_mutex_unlock(&p->mu);
        run_tasks(p, wa.index);
        pthread_mutex_lock(&p->mu);
        if (--p->running == 0) pthread_cond_signal(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

par_pool *par_pool_create(int threads)
{
    if (threads < 1 || threads > PAR_MAX_THREADS) return NULL;
    par_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->threads = threads;
    atomic_init(&p->budget, threads);
    atomic_init(&p->next, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->idle, NULL);
    for (int i = 1; i < threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) goto fail;
        *wa = (worker_arg){p, i};
        if (pthread_create(&p->workers[i], NULL, worker_main, wa) != 0) {
            free(wa);
            goto fail;
        }
        p->n_started = i;
    }
    return p;
fail:
    par_pool_destroy(p);
    return NULL;
}

void par_pool_destroy(par_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i <= p->n_started; i++) pthread_join(p->workers[i], NULL);
    for (int i = 0; i < PAR_MAX_THREADS; i++) free(p->scratch[i].p);
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int par_pool_threads(const par_pool *p) { return p->threads; }

void par_pool_set_budget(par_pool *p, int threads)
{
    if (threads < 1) threads = 1;
    if (threads > p->threads) threads = p->threads;
    atomic_store_explicit(&p->budget, threads, memory_order_relaxed);
}

int par_pool_budget(const par_pool *p) { return atomic_load_explicit(&p->budget, memory_order_relaxed); }

par_pool *par_bind(par_pool *p)
{
    par_pool *old = bound;
    bound = p;
    return old;
}

int par_workers(void)
{
    if (!bound || in_task) return 1;
    return par_pool_budget(bound);
}

void par_for(int n_tasks, par_fn fn, void *ctx)
{
    par_pool *p = bound;
    int participants = par_workers();
    if (participants > n_tasks) participants = n_tasks;
    if (participants <= 1) {
        bool was = in_task;
        in_task = true;
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        in_task = was;
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->joining = participants - 1;
    p->running = participants - 1;
    p->gen++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    in_task = true;
    run_tasks(p, 0);
    in_task = false;

    pthread_mutex_lock(&p->mu);
    while (p->running > 0) pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void *par_scratch(int worker, size_t bytes)
{
    par_pool *p = bound;   /* workers are bound to their own pool */
    if (!p || worker < 1 || worker >= p->threads) abort();
    par_buf *b = &p->scratch[worker];
    if (b->n < bytes) {
        free(b->p);
        size_t n = (bytes + 63) / 64 * 64;
        b->p = aligned_alloc(64, n);
        if (!b->p) abort();
        b->n = n;
    }
    return b->p;
}
