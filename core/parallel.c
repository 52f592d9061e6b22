/* The engine's fork-join pool; see parallel.h.
 *
 * One run at a time per pool: the caller publishes (fn, ctx, n_tasks), then one atomic word holding the
 * run's generation and its number of joining workers, and wakes the workers; every participant, the caller
 * included, claims task indices from an atomic counter until none are left. Claiming tasks dynamically
 * balances uneven tasks; it does not affect results, because every task writes only its own outputs
 * (parallel.h).
 *
 * A training step runs a par_for every few hundred microseconds, and a sleeping thread takes tens of
 * microseconds to wake (a futex round trip through the scheduler). So a worker that finishes a run, and a
 * caller waiting for its workers, first spin for a short while (PAR_SPIN_NS) watching the atomic words, and
 * only then sleep on the condition variables: back-to-back runs never sleep, and an idle pool stops costing
 * CPU after that moment. Generation and participant count share one word so a worker that reads it late can
 * never join a run it was not counted in.
 */
#include "core/parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* How long an idle worker, or a caller waiting for workers, spins before it sleeps. */
#define PAR_SPIN_NS 30000

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
    /* (generation << 8) | joining: the generation is bumped for every run and workers wait for it to
     * change; workers 1 .. joining take part in that run. */
    _Atomic uint64_t ticket;
    atomic_int running;     /* workers that have not finished the current run */
    atomic_bool stop;
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

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins up to PAR_SPIN_NS while done(p, arg) is false; returns its last value. */
static bool spin_until(bool (*done)(par_pool *, uint64_t), par_pool *p, uint64_t arg)
{
    uint64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        if (done(p, arg)) return true;
        cpu_relax();
        if (i % 64 == 63) {
            uint64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > PAR_SPIN_NS) return done(p, arg);
        }
    }
}

static bool ticket_moved(par_pool *p, uint64_t seen)
{
    return atomic_load_explicit(&p->ticket, memory_order_acquire) != seen ||
           atomic_load_explicit(&p->stop, memory_order_relaxed);
}

static bool workers_done(par_pool *p, uint64_t unused)
{
    return atomic_load_explicit(&p->running, memory_order_acquire) == 0;
}

static void *worker_main(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    par_pool *p = wa.p;
    bound = p;      /* for par_scratch; in_task keeps par_for on this thread serial */
    in_task = true;
    uint64_t seen = 0;
    bool joined = false;
    for (;;) {
        /* A worker left out of the last run (a lowered budget) sleeps at once: its core is lent out. */
        if (!joined || !spin_until(ticket_moved, p, seen)) {
            pthread_mutex_lock(&p->mu);
            while (!ticket_moved(p, seen)) pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load_explicit(&p->stop, memory_order_relaxed)) break;
        seen = atomic_load_explicit(&p->ticket, memory_order_acquire);
        /* Counted in this run's `running`, the caller waits for this worker: the run's fields stay put. */
        joined = wa.index <= (int)(seen & 0xff);
        if (!joined) continue;
        run_tasks(p, wa.index);
        if (atomic_fetch_sub_explicit(&p->running, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->idle);
            pthread_mutex_unlock(&p->mu);
        }
    }
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
    atomic_init(&p->ticket, 0);
    atomic_init(&p->running, 0);
    atomic_init(&p->stop, false);
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
    atomic_store(&p->stop, true);
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
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->running, participants - 1, memory_order_relaxed);
    uint64_t gen = (atomic_load_explicit(&p->ticket, memory_order_relaxed) >> 8) + 1;
    atomic_store_explicit(&p->ticket, gen << 8 | (uint64_t)(participants - 1), memory_order_release);
    /* Under the mutex, so a worker that checked the ticket just before it went to sleep is woken. */
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    in_task = true;
    run_tasks(p, 0);
    in_task = false;

    if (!spin_until(workers_done, p, 0)) {
        pthread_mutex_lock(&p->mu);
        while (!workers_done(p, 0)) pthread_cond_wait(&p->idle, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
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
