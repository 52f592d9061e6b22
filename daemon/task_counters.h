/* Per task version serving counters for the Prometheus page: prediction and evaluation requests, samples,
 * and how each request found its adapter: in the cache (a hit), waiting for a load another request had
 * started (a wait: a hit after a wait, the store was read once for both), or loading it (a miss). Kept in memory (they restart at 0 with the daemon, as Prometheus
 * counters may). Loop thread only; one table per process. */
#ifndef CLAD_DAEMON_TASK_COUNTERS_H
#define CLAD_DAEMON_TASK_COUNTERS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "daemon/registry_load.h"

/* Counts one served request of task@version: evaluate or predict, n samples, how its adapter was found. */
void task_counters_add(const char *task, int64_t version, bool evaluate, int64_t samples, registry_found how);
/* Drops every row of task (deleted from the store, so a new task of that name starts at 0). */
void task_counters_forget(const char *task);
/* Writes the clad_task_* counter families. */
void task_counters_write(FILE *f);
/* Frees the table (at exit). */
void task_counters_clear(void);

#endif
