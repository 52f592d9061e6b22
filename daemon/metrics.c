/* Request counters and latency histogram; see metrics.h. */
#include "daemon/metrics.h"

#include <stdlib.h>
#include <string.h>

#define STATUS_SLOTS 24 /* distinct statuses per route; the server sends far fewer */

static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_BUCKETS (sizeof bucket_le / sizeof bucket_le[0])

typedef struct route_counts {
    int status[STATUS_SLOTS];
    uint64_t count[STATUS_SLOTS];
} route_counts;

struct metrics {
    size_t n_routes;
    route_counts *routes; /* n_routes + 1; the last is "unmatched" */
    uint64_t buckets[N_BUCKETS];
    uint64_t n;
    double sum;
};

metrics *metrics_create(size_t n_routes)
{
    metrics *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->n_routes = n_routes;
    m->routes = calloc(n_routes + 1, sizeof *m->routes);
    if (!m->routes) abort();
    return m;
}

void metrics_destroy(metrics *m)
{
    if (!m) return;
    free(m->routes);
    free(m);
}

void metrics_observe(metrics *m, int route_index, int status, double seconds)
{
    size_t r = route_index >= 0 && (size_t)route_index < m->n_routes ? (size_t)route_index : m->n_routes;
    route_counts *rc = &m->routes[r];
    for (int i = 0; i < STATUS_SLOTS; i++) {
        if (rc->count[i] == 0 || rc->status[i] == status) {
            rc->status[i] = status;
            rc->count[i]++;
            break;
        }
    }
    if (seconds < 0) seconds = 0;
    for (size_t b = 0; b < N_BUCKETS; b++)
        if (seconds <= bucket_le[b]) m->buckets[b]++;
    m->n++;
    m->sum += seconds;
}

uint64_t metrics_requests_total(const metrics *m)
{
    return m->n;
}

void metrics_write(const metrics *m, FILE *f, const char *(*route_method)(size_t i, void *data),
                   const char *(*route_pattern)(size_t i, void *data), void *data)
{
    fputs("# HELP clad_http_requests_total HTTP requests answered, by route and status code.\n"
          "# TYPE clad_http_requests_total counter\n", f);
    for (size_t r = 0; r <= m->n_routes; r++) {
        const route_counts *rc = &m->routes[r];
        const char *method = r < m->n_routes ? route_method(r, data) : "";
        const char *pattern = r < m->n_routes ? route_pattern(r, data) : "unmatched";
        for (int i = 0; i < STATUS_SLOTS && rc->count[i]; i++)
            fprintf(f, "clad_http_requests_total{method=\"%s\",route=\"%s\",code=\"%d\"} %llu\n", method,
                    pattern, rc->status[i], (unsigned long long)rc->count[i]);
    }
    fputs("# HELP clad_http_request_duration_seconds Time from a complete request to the start of its response.\n"
          "# TYPE clad_http_request_duration_seconds histogram\n", f);
    for (size_t b = 0; b < N_BUCKETS; b++)
        fprintf(f, "clad_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n", bucket_le[b],
                (unsigned long long)m->buckets[b]);
    fprintf(f, "clad_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)m->n);
    fprintf(f, "clad_http_request_duration_seconds_sum %.6f\n", m->sum);
    fprintf(f, "clad_http_request_duration_seconds_count %llu\n", (unsigned long long)m->n);
}
