/* Shared plumbing of the compose benchmarks (clad-bench merge, fusion, tied): open a stream, make or load its
 * base, build a task's data, train a task adapter of a given kind and rank (reusing an earlier run's
 * adapter from the cache directory when one matches exactly), evaluate, print JSON numbers. */
#ifndef CLAD_BENCH_COMPOSE_UTIL_H
#define CLAD_BENCH_COMPOSE_UTIL_H

#include <stdbool.h>
#include <stdio.h>

#include "bench/stream.h"
#include "core/train.h"

typedef struct compose_run {
    stream s;
    stream_sources src;
    model *base;
    double base_seconds;
    bool quick;
    const char *cache;            /* directory for bases and trained adapters, or NULL */
    unsigned long long base_fp;   /* fingerprint of the base's weights (part of every adapter cache key) */
    train_config tc;              /* the stream's training settings */
} compose_run;

/* Loads the stream (shrunk with quick) and its base. Errors are reported in err. */
int compose_run_open(compose_run *r, const char *stream_path, bool quick, const char *cache, clad_err *err);
void compose_run_close(compose_run *r);

/* Task ti's train and test data (train may be NULL). */
int compose_task_data(compose_run *r, int ti, dataset *train, dataset *test, clad_err *err);

/* Adapter kinds the benchmarks train: plain LoRA, tied tl5, tied tl6. */
typedef enum compose_kind { COMPOSE_LORA = 0, COMPOSE_TL5 = 5, COMPOSE_TL6 = 6 } compose_kind;
const char *compose_kind_name(compose_kind k);

/* Trains (or loads from the cache) task ti's adapter of kind k with rank `rank` on every default target
 * (ranks: per-linear override, may be NULL), on train (needed unless cached). *seconds gets the training
 * time (0 when loaded). NULL on error. */
adapter *compose_train(compose_run *r, int ti, const dataset *train, compose_kind k, int rank, const int *ranks,
                       double *seconds, clad_err *err);

/* Test accuracy of (m, a) on d, or -1 after printing the error. */
double compose_accuracy(const model *m, const adapter *a, const dataset *d);

/* Splits "a,b,c" into task indices of the stream (at most max); -1 with a message on an unknown name. */
int compose_task_list(const compose_run *r, const char *list, int *idx, int max);

double compose_now(void);

#endif
