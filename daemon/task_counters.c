/* Per task version serving counters; see task_counters.h. */
#include "daemon/task_counters.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "storage/store.h"

typedef struct counter_row {
    char task[STORE_NAME_MAX + 1];
    int64_t version;
    uint64_t predict, evaluate, samples, hits, waits, misses;
} counter_row;

static counter_row *rows;
static size_t n_rows, cap_rows;

static counter_row *row_for(const char *task, int64_t version)
{
    for (size_t i = 0; i < n_rows; i++)
        if (rows[i].version == version && !strcmp(rows[i].task, task)) return &rows[i];
    if (n_rows == cap_rows) {
        cap_rows = cap_rows ? 2 * cap_rows : 32;
        rows = realloc(rows, cap_rows * sizeof *rows);
        if (!rows) abort();
    }
    counter_row *r = &rows[n_rows++];
    memset(r, 0, sizeof *r);
    strncpy(r->task, task, STORE_NAME_MAX);
    r->version = version;
    return r;
}

void task_counters_add(const char *task, int64_t version, bool evaluate, int64_t samples, registry_found how)
{
    counter_row *r = row_for(task, version);
    if (evaluate) r->evaluate++;
    else r->predict++;
    r->samples += (uint64_t)samples;
    if (how == REGISTRY_CACHED) r->hits++;
    else if (how == REGISTRY_WAITED) r->waits++;
    else r->misses++;
}

void task_counters_forget(const char *task)
{
    size_t k = 0;
    for (size_t i = 0; i < n_rows; i++)
        if (strcmp(rows[i].task, task)) rows[k++] = rows[i];
    n_rows = k;
}

void task_counters_write(FILE *f)
{
    static const struct {
        const char *name, *help;
        size_t offset;
    } fam[] = {
        {"clad_task_predict_requests_total", "Prediction requests served, per task version.", offsetof(counter_row, predict)},
        {"clad_task_evaluate_requests_total", "Evaluation requests served, per task version.", offsetof(counter_row, evaluate)},
        {"clad_task_samples_total", "Samples predicted or evaluated, per task version.", offsetof(counter_row, samples)},
        {"clad_task_adapter_cache_hits_total", "Requests whose adapter was already loaded.", offsetof(counter_row, hits)},
        {"clad_task_adapter_cache_waits_total", "Requests that waited for a load of their adapter another request had started.", offsetof(counter_row, waits)},
        {"clad_task_adapter_cache_misses_total", "Requests that loaded their adapter from the store.", offsetof(counter_row, misses)},
    };
    for (size_t k = 0; k < sizeof fam / sizeof fam[0]; k++) {
        fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", fam[k].name, fam[k].help, fam[k].name);
        for (size_t i = 0; i < n_rows; i++)
            fprintf(f, "%s{task=\"%s\",version=\"%lld\"} %llu\n", fam[k].name, rows[i].task, (long long)rows[i].version,
                    (unsigned long long)*(const uint64_t *)((const char *)&rows[i] + fam[k].offset));
    }
}

void task_counters_clear(void)
{
    free(rows);
    rows = NULL;
    n_rows = cap_rows = 0;
}
