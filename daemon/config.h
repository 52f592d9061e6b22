/* cladd's configuration: built-in defaults, paths from the environment, and an optional config file.
 *
 * cladd works with no config file. Paths come from the command line, else from systemd's environment,
 * else from the XDG directories (see config_resolve_paths). The config file uses simple `key = value`
 * lines; `#` starts a comment; blank lines are ignored; values may be quoted with "...". Sizes take an
 * optional K, M or G suffix (powers of 1024, "KiB" style accepted too); durations take ms, s or min (a
 * bare number is seconds). Keys (defaults in brackets):
 *
 *   write_group        group whose members may use write routes, besides root and cladd's own uid [none]
 *   socket_group       group to chown the socket to when cladd creates it (not under socket activation)
 *   log_level          error | warning | info | debug [info]
 *   max_body_bytes     largest request body [512M]
 *   max_header_bytes   largest request line plus headers [16K]
 *   max_connections    simultaneous client connections; more are answered 503 busy [256]
 *   header_timeout     time to send a complete request line and headers [10s]
 *   idle_timeout       how long an idle keep-alive connection is kept [60s]
 *   body_timeout       longest pause while a body is sent, or while a response is not read [30s]
 *   max_running_jobs   jobs running at once, each on its own worker thread [1]
 *   compute_threads    worker threads kept free for short compute such as predictions [2]
 *   engine_threads     threads of each running job's engine; 0 = one per online CPU [0]
 *   max_queued_jobs    queued jobs before submissions are answered 503 busy [64]
 *   max_compute_queue  pending compute requests before 503 busy [256]
 *   job_history        finished jobs kept in memory for /v1/jobs [1000]
 *   job_lease_seconds  lease of a job claimed from the shared queue; renewed every third of it [10]
 *   data_dirs          more directories whose dataset files base training may read by path, ':'-separated
 *                      absolute paths, besides the built-in CONFIG_BUILTIN_DATA_DIRS [none]
 *   store              where the store is: an absolute SQLite file path, or postgresql://... to share one
 *                      database between nodes (docs/SCALING.md) [STATE_DIR/clad.db]
 *   node_id            this node's name among the nodes sharing the store (letters, digits, '.', '_',
 *                      '-', at most 64) [host name + '-' + 8 hex digits of the state directory's hash]
 *
 * On SIGHUP the file is read again; limits, write_group and log_level take effect at once (for new
 * connections and requests); socket_group, max_running_jobs, compute_threads, engine_threads, store and node_id
 * need a restart.
 */
#ifndef CLAD_DAEMON_CONFIG_H
#define CLAD_DAEMON_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* sizeof(((struct sockaddr_un *)0)->sun_path) on Linux; a longer path cannot be bound. */
#define CONFIG_SOCKET_PATH_MAX 108
#define CONFIG_NAME_MAX 64
#define CONFIG_DATA_DIRS_MAX 4096
#define CONFIG_STORE_MAX 1024 /* a store path or a postgresql:// URI */
/* The dataset directories cladd ships with (Debian's Fashion-MNIST), ':'-separated. */
#define CONFIG_BUILTIN_DATA_DIRS "/usr/share/datasets/fashion-mnist"

typedef struct cladd_config {
    /* Paths: empty until set by the command line or config_resolve_paths. */
    char socket_path[CONFIG_SOCKET_PATH_MAX];
    char state_dir[PATH_MAX];
    char config_path[PATH_MAX]; /* "" = no config file */
    /* Set by config_resolve_paths when the path is one of the per-user defaults whose parent directory
     * cladd may create (mode 0700). An explicit --socket must name an existing directory. */
    bool socket_dir_is_default;

    char write_group[CONFIG_NAME_MAX];
    char socket_group[CONFIG_NAME_MAX];
    int log_level;

    uint64_t max_body_bytes;
    uint32_t max_header_bytes;
    uint32_t max_connections;
    uint32_t header_timeout_ms;
    uint32_t idle_timeout_ms;
    uint32_t body_timeout_ms;

    uint32_t max_running_jobs;
    uint32_t compute_threads;
    uint32_t engine_threads;
    uint32_t max_queued_jobs;
    uint32_t max_compute_queue;
    uint32_t job_history;
    uint32_t job_lease_seconds;
    char data_dirs[CONFIG_DATA_DIRS_MAX]; /* operator's extra dataset directories, ':'-separated */
    char store[CONFIG_STORE_MAX];         /* --store or `store`; "" = STATE_DIR/clad.db */
    char node_id[CONFIG_NAME_MAX + 1];    /* "" = derived from the host name and the state directory */

    bool enable_test_routes; /* command line only: --enable-test-routes */
} cladd_config;

/* Fills cfg with the built-in defaults and empty paths. */
void config_init(cladd_config *cfg);

/* Sets one file key from its text value. CLAD_EINVAL names the key and the problem for an unknown key or
 * a bad value; cfg is unchanged then. */
int config_set(cladd_config *cfg, const char *key, const char *value, clad_err *err);

/* Reads a config file into cfg (keys not in the file keep their values). On any error cfg is unchanged and
 * err names the file and line. The file may be at most 64 KiB. */
int config_load_file(cladd_config *cfg, const char *path, clad_err *err);

/* Fills the paths the command line left empty:
 *   socket: $RUNTIME_DIRECTORY/clad.sock, else $XDG_RUNTIME_DIR/clad/clad.sock, else /tmp/clad-$UID/clad.sock
 *   state:  $STATE_DIRECTORY, else $XDG_STATE_HOME/clad, else $HOME/.local/state/clad
 * ($RUNTIME_DIRECTORY and $STATE_DIRECTORY may list several directories separated by ':'; the first is
 * used.) CLAD_EINVAL if a path is too long or nothing usable is set (no HOME for the state dir). */
int config_resolve_paths(cladd_config *cfg, clad_err *err);

/* Server-side data paths: may the daemon read the dataset file at path for a client? Only a regular
 * file inside one of the built-in or configured data directories (after resolving symbolic links and
 * "..", so neither leads out of them). On true, resolved (size bytes) holds the resolved path to open.
 * The answer never says why not (missing, outside, not a file), so clients learn nothing about files
 * elsewhere. */
bool config_data_path_allowed(const cladd_config *cfg, const char *path, char *resolved, size_t size);

/* Is this store location a PostgreSQL URI (postgresql:// or postgres://)? */
bool config_store_is_postgres(const char *location);
/* The store location fit to print: a URI's password (user:PASSWORD@ or password=...) becomes "***". */
void config_store_redacted(const char *location, char *out, size_t size);
/* The default node id: the host name (only [A-Za-z0-9.-] kept, at most 55 bytes), '-', and the first 8 hex
 * digits of the sha256 of the state directory's path, so two nodes on one machine differ and a node
 * keeps its id across restarts. */
void config_default_node_id(const char *state_dir, char *out, size_t size);

/* Parses "512M", "16K", "1024" -> bytes; "10s", "500ms", "2min", "3" (seconds) -> milliseconds.
 * CLAD_EINVAL on junk or overflow. Exposed for tests. */
int config_parse_size(const char *s, uint64_t *out);
int config_parse_duration_ms(const char *s, uint32_t *out);

#endif
