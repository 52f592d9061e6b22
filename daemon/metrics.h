/* Request counters and the latency histogram, rendered in the Prometheus text format.
 *
 * Counters are kept per route (the router's index; -1 for requests that matched none: 404s, malformed
 * HTTP, timeouts) and per status code, so the label set stays small and bounded whatever clients send.
 * Loop thread only.
 */
#ifndef CLAD_DAEMON_METRICS_H
#define CLAD_DAEMON_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct metrics metrics;

/* For n_routes routes (indexes 0..n_routes-1) plus the unmatched bucket. Aborts on allocation failure. */
metrics *metrics_create(size_t n_routes);
void metrics_destroy(metrics *m);

/* Counts one finished request: its route index (or -1), its status (0 = never answered) and the seconds
 * from the complete request to the start of its response. */
void metrics_observe(metrics *m, int route_index, int status, double seconds);

uint64_t metrics_requests_total(const metrics *m);

/* Writes clad_http_requests_total{method,route,code} and clad_http_request_duration_seconds to f.
 * route_method and route_pattern name route i. */
void metrics_write(const metrics *m, FILE *f, const char *(*route_method)(size_t i, void *data),
                   const char *(*route_pattern)(size_t i, void *data), void *data);

#endif
