/* cladd: the clad daemon. Serves the HTTP/JSON API on a Unix socket and runs jobs in the background.
 *
 * Startup: arguments, config file, paths; the worker pool is sized (UV_THREADPOOL_SIZE) before anything
 * uses it; routes from every API module's table; the socket (or systemd's); READY=1.
 * Stopping (SIGTERM/SIGINT): stop accepting and remove the socket; running jobs are asked to stop and
 * become interrupted when they return; then every connection is closed, the loop drains, exit 0.
 * SIGHUP rereads the config file.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/parallel.h"
#include "core/train.h"
#include "daemon/api.h"
#include "daemon/job_claim.h"
#include "daemon/log.h"
#include "daemon/node.h"

#ifndef CLAD_VERSION
#define CLAD_VERSION "unknown"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cladd [options]\n"
            "\n"
            "The clad daemon: continual-learning adapters behind an HTTP/JSON API on a Unix socket.\n"
            "\n"
            "options:\n"
            "  --socket PATH          listen on PATH (default: $RUNTIME_DIRECTORY/clad.sock under systemd,\n"
            "                         else $XDG_RUNTIME_DIR/clad/clad.sock, else /tmp/clad-$UID/clad.sock)\n"
            "  --state-dir DIR        keep state in DIR (default: $STATE_DIRECTORY, else\n"
            "                         $XDG_STATE_HOME/clad, else ~/.local/state/clad)\n"
            "  --config FILE          read settings from FILE (key = value lines; see docs/API.md)\n"
            "  --store LOCATION       the store: an absolute SQLite file path or a postgresql:// URI, shared\n"
            "                         by every node that uses it (default: STATE_DIR/clad.db)\n"
            "  --log-level LEVEL      error, warning, info (default) or debug\n"
            "  --foreground           run in the foreground (the only mode; accepted for clarity)\n"
            "  --enable-test-routes   serve /v1/debug/* routes (for the test suite only)\n"
            "  --routes               list the routes (method, path, access, query parameters, summary) and exit\n"
            "  --version              print the version and exit\n"
            "  --help                 print this help and exit\n");
}

/* --- the route tables ------------------------------------------------------------------------------- */

/* Every API module's table. A new module adds its table here (and declares it in daemon/api.h). */
static const route *const route_tables[] = {
    api_system_routes,
    api_jobs_routes,
    api_bases_routes,
    api_tasks_routes,
    api_train_routes,
    api_serve_routes,
    api_route_routes,
    api_merge_routes,
    api_lifecycle_routes,
    api_report_routes,
    api_interop_routes,
};

/* Adds every table (and the test routes when asked) to rt. */
static int add_routes(router *rt, bool test_routes, clad_err *err)
{
    for (size_t i = 0; i < sizeof route_tables / sizeof route_tables[0]; i++)
        if (router_add(rt, route_tables[i], err) != 0) return err->code;
    return test_routes ? router_add(rt, api_debug_routes, err) : 0;
}

/* cladd --routes: one line per route, tab-separated, as the router holds them (tests check docs/API.md
 * against it). */
static int print_routes(bool test_routes)
{
    router *rt = router_create();
    clad_err err = {0};
    int rc = add_routes(rt, test_routes, &err);
    for (size_t i = 0; !rc && i < router_count(rt); i++) {
        const route *r = router_get(rt, i);
        const char *q = router_get_query(rt, i);
        printf("%s\t%s\t%s\t%s\t%s\n", r->method, r->pattern, r->flags & ROUTE_WRITE ? "write" : "read",
               q[0] ? q : "-", r->summary ? r->summary : "");
    }
    if (rc) fprintf(stderr, "cladd: %s\n", err.msg);
    router_destroy(rt);
    return rc ? 1 : 0;
}

/* --- server callbacks ------------------------------------------------------------------------------- */

static bool on_head(http_req *req, void *data)
{
    cladd *app = data;
    return router_on_head(app->rt, req);
}

static void on_request(http_req *req, void *data)
{
    cladd *app = data;
    router_dispatch(app->rt, req);
}

/* Hands free heap pages back to the system when the daemon goes quiet (the request that just finished
 * held the last connection and no job runs), at most once a second. glibc keeps what the worker threads
 * freed in their arenas, so without this the RSS of an idle daemon stays at its busiest moment's. */
static void trim_if_idle(cladd *app)
{
    static uint64_t last_ms;
    server_stats ss;
    unsigned counts[JOB_STATE_COUNT];
    server_get_stats(app->srv, &ss);
    job_queue_counts(app->jobs, counts);
    uint64_t now = uv_now(app->loop);
    if (ss.connections > 1 || counts[JOB_RUNNING] || now - last_ms < 1000) return;
    last_ms = now;
    malloc_trim(0);
}

static void on_done(const http_req *req, int status, double seconds, void *data)
{
    cladd *app = data;
    metrics_observe(app->metrics, req->route_index, status, seconds);
    bool write = req->route && (req->route->flags & ROUTE_WRITE);
    log_msg(write ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG, "%s %s -> %d in %.1f ms (pid %ld uid %ld)",
            req->method_name, req->path, status, seconds * 1e3, (long)req->peer->pid, (long)req->peer->uid);
    trim_if_idle(app);
}

/* --- job hooks: systemd STATUS ---------------------------------------------------------------------- */

static void update_status(cladd *app)
{
    if (app->stopping) return;
    unsigned counts[JOB_STATE_COUNT];
    job_queue_counts(app->jobs, counts);
    if (counts[JOB_RUNNING] || counts[JOB_QUEUED])
        notify_status(app->notify, "%u job(s) running, %u queued", counts[JOB_RUNNING], counts[JOB_QUEUED]);
    else
        notify_status(app->notify, "idle; serving on %s", server_socket_path(app->srv));
}

static int on_job_state(job *j, void *data, clad_err *err)
{
    int rc = app_job_state_hook(data, j, err);
    update_status(data);
    /* A finished job has freed its data and workspaces (often larger than glibc's mmap threshold, which
     * then rises, so the next ones come from the heaps): hand the free pages back to the system, or the
     * daemon's RSS grows by ~0.8 MB per training for good (clad-bench soak: +100 MB in 3 minutes). */
    if (job_get_state(j) > JOB_RUNNING) malloc_trim(0);
    return rc;
}

static int on_job_claim(job *j, void *data)
{
    return job_claim_hook(data, j);
}

static void on_job_progress(job *j, const json_t *event, void *data)
{
    cladd *app = data;
    app_job_progress_hook(app, j, event);
    const char *text = json_string_value(json_object_get(event, "status"));
    if (text && !app->stopping) notify_status(app->notify, "%s", text);
}

/* --- stopping ----------------------------------------------------------------------------------------- */

static void on_server_closed(server *srv, void *data)
{
    cladd *app = data;
    job_claim_stop(app);
    node_stop(app->node);
    app->node = NULL;
    job_queue_destroy(app->jobs);
    app->jobs = NULL;
    notify_close(app->notify);
    app->notify = NULL;
    log_info("all connections closed");
}

static void on_jobs_stopped(job_queue *q, void *data)
{
    cladd *app = data;
    log_info("no job is running; closing connections");
    server_close(app->srv, on_server_closed, app);
}

static void on_stop(int signum, void *data)
{
    cladd *app = data;
    app->stopping = true;
    unsigned counts[JOB_STATE_COUNT];
    job_queue_counts(app->jobs, counts);
    char status[128];
    snprintf(status, sizeof status, "stopping: waiting for %u running job(s)", counts[JOB_RUNNING]);
    notify_stopping(app->notify, status);
    server_stop_accepting(app->srv);
    job_queue_shutdown(app->jobs, on_jobs_stopped, app);
}

/* --- reload ------------------------------------------------------------------------------------------- */

static int cli_log_level = -1;

static server_limits limits_of(const cladd_config *c)
{
    return (server_limits){
        .max_body_bytes = c->max_body_bytes,
        .max_header_bytes = c->max_header_bytes,
        .max_connections = c->max_connections,
        .header_timeout_ms = c->header_timeout_ms,
        .idle_timeout_ms = c->idle_timeout_ms,
        .body_timeout_ms = c->body_timeout_ms,
    };
}

static void on_reload(void *data)
{
    cladd *app = data;
    char status[160];
    snprintf(status, sizeof status, "ready; serving on %s", server_socket_path(app->srv));
    /* The RELOADING/READY handshake happens even with nothing to reload, so systemd never waits. */
    notify_reloading(app->notify);
    if (!app->cfg.config_path[0]) {
        log_info("no config file was given (--config); nothing to reload");
        notify_reloaded(app->notify, status);
        return;
    }
    /* Start from the defaults so a key removed from the file goes back to its default. */
    cladd_config next;
    config_init(&next);
    memcpy(next.socket_path, app->cfg.socket_path, sizeof next.socket_path);
    memcpy(next.state_dir, app->cfg.state_dir, sizeof next.state_dir);
    memcpy(next.config_path, app->cfg.config_path, sizeof next.config_path);
    memcpy(next.store, app->cfg.store, sizeof next.store);       /* both are fixed while running */
    memcpy(next.node_id, app->cfg.node_id, sizeof next.node_id);
    next.socket_dir_is_default = app->cfg.socket_dir_is_default;
    next.enable_test_routes = app->cfg.enable_test_routes;
    clad_err err = {0};
    if (config_load_file(&next, next.config_path, &err) != 0) {
        log_error("reload failed, keeping the running configuration: %s", err.msg);
    } else {
        if (cli_log_level >= 0) next.log_level = cli_log_level;
        if (next.max_running_jobs != app->cfg.max_running_jobs || next.compute_threads != app->cfg.compute_threads ||
            next.engine_threads != app->cfg.engine_threads ||
            strcmp(next.socket_group, app->cfg.socket_group))
            log_warning("max_running_jobs, compute_threads, engine_threads and socket_group take effect only after a "
                        "restart");
        next.max_running_jobs = app->cfg.max_running_jobs;
        next.compute_threads = app->cfg.compute_threads;
        next.engine_threads = app->cfg.engine_threads;
        memcpy(next.socket_group, app->cfg.socket_group, sizeof next.socket_group);
        app->cfg = next;
        log_set_level(next.log_level);
        server_limits lim = limits_of(&next);
        server_set_limits(app->srv, &lim);
        router_set_write_group(app->rt, next.write_group);
        job_queue_set_limits(app->jobs, next.max_queued_jobs, next.max_compute_queue, next.job_history);
        log_info("configuration reloaded from %s", next.config_path);
    }
    notify_reloaded(app->notify, status);
}

/* --- startup ------------------------------------------------------------------------------------------ */

static int lock_state_dir(const char *dir, clad_err *err);

/* Creates dir (and missing parents) with mode; the last component must end up a directory we own when
 * must_own (the per-user defaults under /tmp, where someone else could have planted it). */
static int make_dir(const char *dir, mode_t mode, bool must_own, clad_err *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return clad_err_set(err, CLAD_EINVAL, "path too long: %s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return clad_err_set(err, CLAD_EIO, "cannot create %s: %s", path, strerror(errno));
        *p = '/';
    }
    if (mkdir(path, mode) != 0 && errno != EEXIST)
        return clad_err_set(err, CLAD_EIO, "cannot create %s: %s", path, strerror(errno));
    struct stat st;
    if (lstat(path, &st) != 0) return clad_err_set(err, CLAD_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return clad_err_set(err, CLAD_EIO, "%s is not a directory", path);
    if (must_own && (st.st_uid != geteuid() || (st.st_mode & 0077)))
        return clad_err_set(err, CLAD_EDENIED, "%s is not a private directory owned by uid %ld; refusing to use it",
                            path, (long)geteuid());
    return 0;
}

/* Makes the state directory, locks it (*lock_fd) and then makes the socket's directory, so a daemon
 * refused for a held state directory has created nothing. */
static int prepare_paths(cladd_config *cfg, int *lock_fd, clad_err *err)
{
    int rc = make_dir(cfg->state_dir, 0700, false, err);
    if (rc) return rc;
    *lock_fd = lock_state_dir(cfg->state_dir, err);
    if (*lock_fd < 0) return *lock_fd;
    if (cfg->socket_dir_is_default) {
        char dir[sizeof cfg->socket_path];
        snprintf(dir, sizeof dir, "%s", cfg->socket_path);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = '\0';
            rc = make_dir(dir, 0700, true, err);
        }
    }
    return rc;
}

/* The engine threads each running job gets: the configured count, or one per online CPU. */
static unsigned engine_threads(const cladd_config *cfg)
{
    if (cfg->engine_threads) return cfg->engine_threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > PAR_MAX_THREADS ? PAR_MAX_THREADS : (unsigned)n;
}

/* Takes an exclusive flock on STATE_DIR/cladd.lock for the daemon's lifetime and writes our pid into it:
 * two daemons on one state directory would mark each other's jobs interrupted and disagree about the
 * store. Returns the open fd (kept, close-on-exec) or a negative code naming the pid that holds it. The
 * lock file is the only thing created before this check, and only when it did not exist yet. */
static int lock_state_dir(const char *dir, clad_err *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/cladd.lock", dir) >= (int)sizeof path)
        return clad_err_set(err, CLAD_EINVAL, "state directory path is too long: %s", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return clad_err_set(err, CLAD_EIO, "cannot open the lock file %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char holder[32] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(fd);
        if (e != EWOULDBLOCK) return clad_err_set(err, CLAD_EIO, "cannot lock %s: %s", path, strerror(e));
        return clad_err_set(err, CLAD_EBUSY, "state directory %s is in use by another cladd (pid %s, holding %s); "
                            "refusing to start", dir, holder[0] ? holder : "unknown", path);
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        log_warning("cannot write our pid into %s: %s", path, strerror(errno));
    return fd;
}

/* Sizes libuv's worker pool before its first use: job threads plus threads kept for compute, so a
 * prediction never waits for a training job to free a thread (see daemon/jobs.h). */
static unsigned size_threadpool(const cladd_config *cfg)
{
    unsigned want = cfg->max_running_jobs + cfg->compute_threads;
    const char *env = getenv("UV_THREADPOOL_SIZE");
    unsigned have = env ? (unsigned)strtoul(env, NULL, 10) : 0;
    if (have >= want) return have;
    if (env) log_warning("UV_THREADPOOL_SIZE=%s is below max_running_jobs + compute_threads; using %u", env, want);
    char buf[16];
    snprintf(buf, sizeof buf, "%u", want);
    setenv("UV_THREADPOOL_SIZE", buf, 1);
    return want;
}

int main(int argc, char **argv)
{
    static cladd app;
    config_init(&app.cfg);

    enum { OPT_SOCKET = 256, OPT_STATE, OPT_STORE, OPT_CONFIG, OPT_LOG, OPT_FG, OPT_TEST, OPT_ROUTES, OPT_VERSION, OPT_HELP };
    bool list_routes = false;
    const char *store_arg = NULL; /* applied after the config file, which it overrides */
    static const struct option opts[] = {
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"state-dir", required_argument, NULL, OPT_STATE},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"store", required_argument, NULL, OPT_STORE},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"foreground", no_argument, NULL, OPT_FG},
        {"enable-test-routes", no_argument, NULL, OPT_TEST},
        {"routes", no_argument, NULL, OPT_ROUTES},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case OPT_SOCKET:
            if (snprintf(app.cfg.socket_path, sizeof app.cfg.socket_path, "%s", optarg) >=
                (int)sizeof app.cfg.socket_path) {
                fprintf(stderr, "cladd: --socket path is longer than %zu bytes\n", sizeof app.cfg.socket_path - 1);
                return 2;
            }
            break;
        case OPT_STATE:
            snprintf(app.cfg.state_dir, sizeof app.cfg.state_dir, "%s", optarg);
            break;
        case OPT_STORE:
            store_arg = optarg;
            break;
        case OPT_CONFIG:
            snprintf(app.cfg.config_path, sizeof app.cfg.config_path, "%s", optarg);
            break;
        case OPT_LOG:
            if ((cli_log_level = log_level_parse(optarg)) < 0) {
                fprintf(stderr, "cladd: --log-level must be error, warning, info or debug\n");
                return 2;
            }
            break;
        case OPT_FG:
            break;
        case OPT_TEST:
            app.cfg.enable_test_routes = true;
            break;
        case OPT_ROUTES:
            list_routes = true;
            break;
        case OPT_VERSION:
            printf("cladd %s\n", CLAD_VERSION);
            return 0;
        case OPT_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cladd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    clad_err err = {0};
    if (list_routes) return print_routes(app.cfg.enable_test_routes);
    if (app.cfg.config_path[0] && config_load_file(&app.cfg, app.cfg.config_path, &err) != 0) {
        fprintf(stderr, "cladd: %s\n", err.msg);
        return 1;
    }
    if (store_arg && config_set(&app.cfg, "store", store_arg, &err) != 0) {
        fprintf(stderr, "cladd: --%s\n", err.msg);
        return 2;
    }
    if (cli_log_level >= 0) app.cfg.log_level = cli_log_level;
    log_set_level(app.cfg.log_level);
    int lock_fd = -1; /* held until exit */
    if (config_resolve_paths(&app.cfg, &err) != 0 || prepare_paths(&app.cfg, &lock_fd, &err) != 0) {
        log_error("%s", err.msg);
        return 1;
    }
    if (!app.cfg.node_id[0]) config_default_node_id(app.cfg.state_dir, app.cfg.node_id, sizeof app.cfg.node_id);

    signal(SIGPIPE, SIG_IGN); /* a client that disconnects mid-write is an EPIPE, not a crash */
    json_object_seed(0);      /* before any thread could race to seed jansson's hash */
    /* Training and predictions each run on their own worker thread, and a training job's engine threads
     * (engine_threads) are its parallelism; OpenBLAS threads on top of those would only contend for the
     * same cores, and one OpenBLAS thread keeps training deterministic for any engine thread count. */
    if (!getenv("OPENBLAS_NUM_THREADS")) blas_set_threads(1);
    app.threadpool_size = size_threadpool(&app.cfg);

    uv_loop_t loop;
    uv_loop_init(&loop);
    app.loop = &loop;
    app.started_wall = wall_now();
    app.started_mono = (double)uv_hrtime() * 1e-9;

    int rc = 1;
    app.rt = router_create();
    router_set_write_group(app.rt, app.cfg.write_group);
    if (add_routes(app.rt, app.cfg.enable_test_routes, &err) != 0) goto destroy_router;
    if (app.cfg.enable_test_routes) log_warning("test routes under /v1/debug are enabled; never do this in production");
    app.metrics = metrics_create(router_count(app.rt));

    job_queue_options jo = {
        .max_running = app.cfg.max_running_jobs,
        .max_queued = app.cfg.max_queued_jobs,
        .max_compute = app.cfg.max_compute_queue,
        .history = app.cfg.job_history,
        .engine_threads = engine_threads(&app.cfg),
        .hooks = {.on_state = on_job_state, .on_progress = on_job_progress, .on_claim = on_job_claim, .data = &app},
    };
    app.jobs = job_queue_create(&loop, &jo);
    job_claim_start(&app);

    server_limits lim = limits_of(&app.cfg);
    server_handlers sh = {.on_head = on_head, .on_request = on_request, .on_done = on_done, .data = &app};
    app.srv = server_create(&loop, &lim, &sh);
    notify_callbacks nc = {.on_stop = on_stop, .on_reload = on_reload, .data = &app};
    app.notify = notify_create(&loop, &nc);

    server_listen_opts lo = {
        .path = app.cfg.socket_path,
        .mode = 0660,
        .group = app.cfg.socket_group,
        .use_activation = true,
    };
    /* The socket before the store: a daemon refused because another one serves the socket must not
     * create a database first. Nothing is served before uv_run. */
    if (server_listen(app.srv, &lo, &err) != 0 || app_store_open(&app, &err) != 0 ||
        node_start(&app, &app.node, &err) != 0) {
        log_error("%s", err.msg);
        /* Close what was opened (the socket is removed) so the loop can be closed cleanly. */
        job_queue_shutdown(app.jobs, on_jobs_stopped, &app);
        uv_run(&loop, UV_RUN_DEFAULT);
        goto destroy_all;
    }
    log_info("cladd %s ready: pid %ld, state in %s, worker pool of %u threads (%u for jobs), %u engine thread(s) "
             "per job, %d BLAS thread(s)",
             CLAD_VERSION, (long)getpid(), app.cfg.state_dir, app.threadpool_size, app.cfg.max_running_jobs,
             engine_threads(&app.cfg), blas_threads());
    char status[160];
    snprintf(status, sizeof status, "ready; serving on %s", server_socket_path(app.srv));
    notify_ready(app.notify, status);

    uv_run(&loop, UV_RUN_DEFAULT);
    rc = 0;
    log_info("stopped");

destroy_all:
    server_destroy(app.srv);
    app_store_close(&app);
    metrics_destroy(app.metrics);
destroy_router:
    if (rc && err.msg[0] && !app.srv) log_error("%s", err.msg);
    router_destroy(app.rt);
    if (uv_loop_close(&loop) != 0) log_error("bug: the loop still has open handles at exit");
    return rc;
}
