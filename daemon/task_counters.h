/* Per task version serving counters for the Prometheus page: prediction and evaluation requests, samples,
 * and adapter cache hits and misses. Kept in memory (they restart at 0 with the daemon, as Prometheus
 * counters may). Loop thread only; one table per process. */
#ifndef CLAD_DAEMON_TASK_COUNTERS_H
#define CLAD_DAEMON_TASK_COUNTERS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Counts one served request of task@version: evaluate or predict, n samples, adapter found in the cache. */
void task_counters_add(const char *task, int64_t version, bool evaluate, int64_t samples, bool cache_hit);
/* Writes the clad_task_* counter families. */
void task_counters_write(FILE *f);
/* Frees the table (at exit). */
void task_counters_clear(void);

#endif
