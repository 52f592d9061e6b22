/* The real cladd for the daemon benchmarks (serve, soak): started next to this program on a private
 * socket and state directory under /tmp, talked to with the project's own client, measured through
 * /proc, stopped and removed. Also the synthetic image data those benchmarks train on.
 */
#ifndef CLAD_BENCH_BENCH_DAEMON_H
#define CLAD_BENCH_BENCH_DAEMON_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct bench_daemon {
    char dir[PATH_MAX];          /* private directory: socket, state/, cladd.log, data files */
    char sock[PATH_MAX + 16];
    char cladd[PATH_MAX];
    pid_t pid;
} bench_daemon;

/* Makes /tmp/clad-bench-NAME-XXXXXX, finds cladd beside this program, starts it with
 * OPENBLAS_NUM_THREADS=1 (and --config DIR/cladd.conf holding `config` when it is not NULL) and waits
 * until /v1/health answers (4 s at most). Returns 0, or -1 after saying why on stderr. */
int bench_daemon_start(bench_daemon *d, const char *name, const char *config);
/* bench_daemon_start with the cladd binary at path cladd (NULL: the one beside this program) and more
 * cladd arguments (NULL-terminated; NULL: none), such as --store. */
int bench_daemon_start_args(bench_daemon *d, const char *name, const char *config, const char *cladd,
                            const char *const *args);
/* SIGTERM and wait; returns the exit status (128 + signal when killed). */
int bench_daemon_stop(bench_daemon *d);
/* Removes the private directory. */
void bench_daemon_remove(const bench_daemon *d);

/* One request on its own connection; returns the HTTP status, or 0 when the connection failed or was
 * cut off. *out (if non-NULL) gets the body (malloc'd). */
int bench_daemon_call(const bench_daemon *d, const char *method, const char *path, const char *ctype,
                      const void *body, size_t len, char **out);

/* The daemon's resident memory in KiB and its number of open file descriptors (-1 on error). */
long bench_daemon_rss_kb(const bench_daemon *d);
int bench_daemon_fd_count(const bench_daemon *d);

double bench_now(void);
int bench_read_file(const char *path, char **buf, size_t *len);
/* n random 28x28 images with labels from a fixed random rule (10 classes), as a safetensors file. */
int bench_write_images(const char *path, int n, uint64_t seed);

#endif
