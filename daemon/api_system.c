/* Routes about the daemon itself: /v1/health, /v1/status, /v1/metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/api.h"
#include "daemon/node.h"
#include "daemon/registry_load.h"

#ifndef CLAD_VERSION
#define CLAD_VERSION "unknown"
#endif

static void health(http_req *req)
{
    cladd *app = req->app;
    http_reply_json(req, 200, json_pack("{s:s,s:s}", "status", app->stopping ? "stopping" : "ok", "version",
                                        CLAD_VERSION));
}

static json_t *jobs_summary(const cladd *app)
{
    unsigned counts[JOB_STATE_COUNT];
    job_queue_counts(app->jobs, counts);
    json_t *o = json_object();
    for (int s = 0; s < JOB_STATE_COUNT; s++)
        json_object_set_new(o, job_state_name((job_state)s), json_integer(counts[s]));
    return o;
}

/* Resident set size from /proc/self/statm, in bytes (0 if unavailable). */
static unsigned long long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    return n == 2 ? resident * (unsigned long long)sysconf(_SC_PAGESIZE) : 0;
}

static void status(http_req *req)
{
    cladd *app = req->app;
    const cladd_config *c = &app->cfg;
    server_stats st;
    server_get_stats(app->srv, &st);
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(app->stopping ? "stopping" : "ok"));
    json_object_set_new(o, "version", json_string(CLAD_VERSION));
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "uid", json_integer(geteuid()));
    json_object_set_new(o, "started", http_time_json(app->started_wall));
    json_object_set_new(o, "uptime_s", json_real(api_uptime(app)));
    json_object_set_new(o, "socket", json_string(server_socket_path(app->srv)));
    json_object_set_new(o, "socket_activated", json_boolean(server_socket_activated(app->srv)));
    json_object_set_new(o, "state_dir", json_string(c->state_dir));
    json_object_set_new(o, "config_file", c->config_path[0] ? json_string(c->config_path) : json_null());
    json_object_set_new(o, "connections",
                        json_pack("{s:I,s:I,s:I,s:I}", "open", (json_int_t)st.connections, "limit",
                                  (json_int_t)c->max_connections, "total", (json_int_t)st.connections_total,
                                  "rejected", (json_int_t)st.connections_rejected));
    json_object_set_new(o, "requests_total", json_integer((json_int_t)st.requests_total));
    json_object_set_new(o, "jobs", jobs_summary(app));
    json_object_set_new(o, "compute", json_pack("{s:I,s:I}", "in_flight",
                                                (json_int_t)job_queue_compute_count(app->jobs), "threads",
                                                (json_int_t)c->compute_threads));
    json_object_set_new(o, "threadpool_size", json_integer(app->threadpool_size));
    json_object_set_new(o, "engine_threads", json_integer((json_int_t)job_queue_engine_threads(app->jobs)));
    json_object_set_new(o, "watchdog_usec", json_integer((json_int_t)notify_watchdog_usec(app->notify)));
    json_object_set_new(o, "memory_rss_bytes", json_integer((json_int_t)rss_bytes()));
    if (app->reg) {
        registry_stats rs;
        registry_get_stats(app->reg, &rs);
        json_object_set_new(o, "loaded", json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "bases", (json_int_t)rs.bases,
                                                   "base_bytes", (json_int_t)rs.base_bytes, "adapters",
                                                   (json_int_t)rs.adapters, "adapter_bytes",
                                                   (json_int_t)rs.adapter_bytes, "adapter_cache_hits",
                                                   (json_int_t)rs.adapter_hits, "adapter_cache_misses",
                                                   (json_int_t)rs.adapter_misses));
        json_t *loaded = json_object_get(o, "loaded");
        json_object_set_new(loaded, "folded", json_integer((json_int_t)rs.folded));
        json_object_set_new(loaded, "folded_bytes", json_integer((json_int_t)rs.folded_bytes));
        json_object_set_new(loaded, "loading", json_integer((json_int_t)registry_loader_pending(app->loads)));
        json_object_set_new(loaded, "idle_workspaces", json_integer((json_int_t)ws_pool_idle(registry_ws_pool(app->reg))));
    }
    json_object_set_new(
        o, "limits",
        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "max_body_bytes", (json_int_t)c->max_body_bytes,
                  "max_header_bytes", (json_int_t)c->max_header_bytes, "max_connections",
                  (json_int_t)c->max_connections, "header_timeout_ms", (json_int_t)c->header_timeout_ms,
                  "idle_timeout_ms", (json_int_t)c->idle_timeout_ms, "body_timeout_ms",
                  (json_int_t)c->body_timeout_ms, "max_running_jobs", (json_int_t)c->max_running_jobs,
                  "max_queued_jobs", (json_int_t)c->max_queued_jobs));
    json_object_set_new(o, "write_group", c->write_group[0] ? json_string(c->write_group) : json_null());
    char location[CONFIG_STORE_MAX];
    config_store_redacted(app->db_path, location, sizeof location);
    json_object_set_new(o, "store", json_string(location));
    if (app->node) json_object_update_new(o, node_status_json(app->node));
    http_reply_json(req, 200, o);
}

static const char *route_method(size_t i, void *data)
{
    return router_get(data, i)->method;
}

static const char *route_pattern(size_t i, void *data)
{
    return router_get(data, i)->pattern;
}

static void prometheus(http_req *req)
{
    cladd *app = req->app;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        http_reply_error(req, CLAD_ENOMEM, "out of memory");
        return;
    }
    metrics_write(app->metrics, f, route_method, route_pattern, app->rt);

    server_stats st;
    server_get_stats(app->srv, &st);
    fprintf(f, "# HELP clad_connections Client connections open now.\n# TYPE clad_connections gauge\n"
               "clad_connections %llu\n",
            (unsigned long long)st.connections);
    fprintf(f, "# HELP clad_connections_total Client connections accepted.\n"
               "# TYPE clad_connections_total counter\nclad_connections_total %llu\n",
            (unsigned long long)st.connections_total);
    fprintf(f, "# HELP clad_connections_rejected_total Connections answered 503 over max_connections.\n"
               "# TYPE clad_connections_rejected_total counter\nclad_connections_rejected_total %llu\n",
            (unsigned long long)st.connections_rejected);
    unsigned counts[JOB_STATE_COUNT];
    job_queue_counts(app->jobs, counts);
    fputs("# HELP clad_jobs Jobs known to the daemon, by state.\n# TYPE clad_jobs gauge\n", f);
    for (int s = 0; s < JOB_STATE_COUNT; s++)
        fprintf(f, "clad_jobs{state=\"%s\"} %u\n", job_state_name((job_state)s), counts[s]);
    fprintf(f, "# HELP clad_compute_in_flight Short compute tasks (predictions) in progress.\n"
               "# TYPE clad_compute_in_flight gauge\nclad_compute_in_flight %u\n",
            job_queue_compute_count(app->jobs));
    fprintf(f, "# HELP clad_process_uptime_seconds Seconds since cladd started.\n"
               "# TYPE clad_process_uptime_seconds gauge\nclad_process_uptime_seconds %.3f\n",
            api_uptime(app));
    fprintf(f, "# HELP clad_process_start_time_seconds Start time of cladd since the Unix epoch.\n"
               "# TYPE clad_process_start_time_seconds gauge\nclad_process_start_time_seconds %.3f\n",
            app->started_wall);
    fprintf(f, "# HELP clad_process_resident_memory_bytes Resident memory of cladd.\n"
               "# TYPE clad_process_resident_memory_bytes gauge\nclad_process_resident_memory_bytes %llu\n",
            rss_bytes());
    fprintf(f, "# HELP clad_build_info The running version.\n# TYPE clad_build_info gauge\n"
               "clad_build_info{version=\"%s\"} 1\n",
            CLAD_VERSION);
    report_metrics_write(app, f);
    if (fclose(f) != 0 || !text) {
        free(text);
        http_reply_error(req, CLAD_ENOMEM, "out of memory");
        return;
    }
    http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL);
    free(text);
}

const route api_system_routes[] = {
    {"GET", "/v1/health", ROUTE_READ, health, NULL, "liveness: status and version"},
    {"GET", "/v1/status", ROUTE_READ, status, NULL, "uptime, connections, jobs, paths, limits, this node and the others"},
    {"GET", "/v1/metrics", ROUTE_READ, prometheus, NULL, "Prometheus text format"},
    ROUTE_END,
};
