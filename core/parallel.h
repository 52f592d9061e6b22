/* A small fork-join thread pool for the engine's kernels, with an explicit thread budget per job.
 *
 * A job (a training run, a prediction batch) creates or borrows a pool and binds it to the thread it runs
 * on (`par_bind`). Kernels called on that thread then split their work into tasks with `par_for`; on a
 * thread with no pool bound, or inside a task, `par_for` runs the tasks in order on the caller. So the
 * kernels' signatures do not change, and code that never binds a pool stays single-threaded.
 *
 * Determinism: kernels split their work into tasks whose boundaries depend only on the problem's shape,
 * never on the number of threads, and every task writes its own outputs. With OpenBLAS pinned to one
 * thread, results are therefore bit-identical for any thread count and any budget, including a budget that
 * changes while a job runs (how the daemon lends cores to predictions).
 */
#ifndef CLAD_CORE_PARALLEL_H
#define CLAD_CORE_PARALLEL_H

#include <stdbool.h>
#include <stddef.h>

#define PAR_MAX_THREADS 64

typedef struct par_pool par_pool;

/* A pool of `threads` participants: the calling thread plus threads - 1 workers (1..PAR_MAX_THREADS).
 * Returns NULL if a thread cannot be started. */
par_pool *par_pool_create(int threads);
/* Stops and joins the workers. The pool must not be running a par_for. Accepts NULL. */
void par_pool_destroy(par_pool *p);
int par_pool_threads(const par_pool *p);

/* How many participants later par_for calls use, clamped to 1..threads; safe from any thread at any
 * time (a running par_for keeps the budget it started with). */
void par_pool_set_budget(par_pool *p, int threads);
int par_pool_budget(const par_pool *p);

/* Binds p (or NULL to unbind) to the calling thread; returns the previous binding so callers can nest. */
par_pool *par_bind(par_pool *p);

/* Runs fn(ctx, task, worker) for task = 0 .. n_tasks - 1 and returns when all are done. worker is in
 * 0 .. par_workers() - 1 and no two tasks running at the same time share it, so it indexes per-worker
 * scratch. Tasks must be independent of each other and of the order they run in. */
typedef void (*par_fn)(void *ctx, int task, int worker);
void par_for(int n_tasks, par_fn fn, void *ctx);

/* The number of distinct worker indices the next par_for on this thread may use (1 when serial). */
int par_workers(void);

/* Scratch memory private to worker `worker` (1 .. par_workers() - 1) of the pool bound to this thread: at
 * least `bytes`, 64-byte aligned, kept until the pool is destroyed and reused by later calls. Worker 0 is
 * the calling thread, which uses the scratch its caller passed in, so a kernel that runs serially needs no
 * pool. Valid only inside a par_for task with that worker index. Aborts on allocation failure (sizes come
 * from model shapes, not from requests). */
void *par_scratch(int worker, size_t bytes);

/* Number of tasks for n items processed `grain` at a time (at least 1 when n > 0). */
static inline int par_chunks(size_t n, size_t grain) { return (int)((n + grain - 1) / grain); }

/* Task `task`'s items [*s0, *s0 + return) of n items cut `grain` at a time. */
static inline int par_range(int task, size_t grain, int n, int *s0)
{
    *s0 = (int)((size_t)task * grain);
    return n - *s0 < (int)grain ? n - *s0 : (int)grain;
}

/* How a matrix product with `rows` x `cols` outputs, each a sum of `k` products, is cut into tasks. A task
 * packs its operands again (OpenBLAS copies both into its own layout first), which costs about as much as a
 * few dozen multiply-adds per float: so a task gets at least PAR_MIN_EXTENT rows (or columns) and about a
 * million multiply-adds. Rows are split when there are enough of them for two tasks, else columns (a
 * batch of 128 samples through a 784x256 layer), else the product is one task. The cut depends only on the
 * shape, which keeps the results independent of the thread count. */
#define PAR_MIN_EXTENT 128
typedef struct par_split {
    bool by_cols;   /* tasks take column ranges (else row ranges) */
    size_t grain;   /* rows or columns per task */
    int tasks;
} par_split;

/* Rows (or columns) per task when each costs `madds_per_unit` multiply-adds; also the row grain of the
 * products split by rows only (the LoRA products). */
static inline size_t par_grain(size_t madds_per_unit)
{
    size_t n = madds_per_unit ? ((size_t)1 << 20) / madds_per_unit : 1;
    n = (n + 15) / 16 * 16;
    return n < PAR_MIN_EXTENT ? PAR_MIN_EXTENT : n;
}

/* Rows per task of a product split by rows: par_grain's, raised toward PAR_ROWS_TASKS tasks (but at most
 * PAR_MAX_MADDS per task) so that a long product does not pack its weight once per million multiply-adds:
 * with dim 64 packing costs about what multiplying does. */
#define PAR_ROWS_TASKS 16
#define PAR_MAX_MADDS ((size_t)1 << 22)
static inline size_t par_row_grain(size_t rows, size_t madds_per_row)
{
    size_t g = par_grain(madds_per_row), even = (rows / PAR_ROWS_TASKS + 15) / 16 * 16;
    size_t cap = madds_per_row ? PAR_MAX_MADDS / madds_per_row / 16 * 16 : even;
    if (even > cap) even = cap;
    return even > g ? even : g;
}

static inline par_split par_split_product(size_t rows, size_t cols, size_t k)
{
    size_t rg = par_row_grain(rows, cols * k), cg = par_grain(rows * k);
    if (rows >= 2 * rg) return (par_split){false, rg, par_chunks(rows, rg)};
    if (cols >= 2 * cg) return (par_split){true, cg, par_chunks(cols, cg)};
    return (par_split){false, rows ? rows : 1, rows ? 1 : 0};
}

#endif
