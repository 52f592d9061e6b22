/* The real cladd for the daemon benchmarks; see bench_daemon.h. */
#include "bench/bench_daemon.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/rng.h"
#include "daemon/client.h"
#include "io/dataset_io.h"

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int bench_daemon_call(const bench_daemon *d, const char *method, const char *path, const char *ctype,
                      const void *body, size_t len, char **out)
{
    client_request rq = {.method = method, .path = path, .content_type = body ? ctype : NULL, .body = body,
                         .body_len = len, .timeout_ms = 0};
    return client_call(d->sock, &rq, out, NULL);
}

int bench_daemon_start(bench_daemon *d, const char *name, const char *config)
{
    return bench_daemon_start_args(d, name, config, NULL, NULL);
}

int bench_daemon_start_args(bench_daemon *d, const char *name, const char *config, const char *cladd,
                            const char *const *args)
{
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/clad-bench-%s-XXXXXX", name);
    if (!mkdtemp(d->dir)) {
        perror("clad-bench: mkdtemp");
        return -1;
    }
    snprintf(d->sock, sizeof d->sock, "%s/clad.sock", d->dir);
    ssize_t n = cladd ? 0 : readlink("/proc/self/exe", d->cladd, sizeof d->cladd - 8);
    char *slash = n > 0 ? (d->cladd[n] = '\0', strrchr(d->cladd, '/')) : NULL;
    if (cladd) {
        snprintf(d->cladd, sizeof d->cladd, "%s", cladd);
    } else if (!slash) {
        fprintf(stderr, "clad-bench: cannot find this program's path\n");
        return -1;
    } else {
        snprintf(slash + 1, sizeof d->cladd - (size_t)(slash + 1 - d->cladd), "cladd");
    }
    if (access(d->cladd, X_OK)) {
        fprintf(stderr, "clad-bench: %s is missing: run make first\n", d->cladd);
        return -1;
    }
    char conf[PATH_MAX + 16], state[PATH_MAX + 16], log[PATH_MAX + 16];
    snprintf(conf, sizeof conf, "%s/cladd.conf", d->dir);
    snprintf(state, sizeof state, "%s/state", d->dir);
    snprintf(log, sizeof log, "%s/cladd.log", d->dir);
    if (config) {
        FILE *f = fopen(conf, "w");
        if (!f || fputs(config, f) < 0 || fclose(f)) {
            fprintf(stderr, "clad-bench: cannot write %s\n", conf);
            return -1;
        }
    }
    fflush(stdout);
    d->pid = fork();
    if (d->pid < 0) return -1;
    if (d->pid == 0) {
        if (!freopen(log, "w", stderr)) _exit(127);
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        const char *argv[24] = {d->cladd, "--socket", d->sock, "--state-dir", state};
        int argc = 5;
        if (config) {
            argv[argc++] = "--config";
            argv[argc++] = conf;
        }
        for (int i = 0; args && args[i] && argc < 23; i++) argv[argc++] = args[i];
        argv[argc] = NULL;
        execv(d->cladd, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        if (bench_daemon_call(d, "GET", "/v1/health", NULL, NULL, 0, NULL) == 200) return 0;
        usleep(20000);
    }
    fprintf(stderr, "clad-bench: cladd did not start; see %s\n", log);
    return -1;
}

int bench_daemon_stop(bench_daemon *d)
{
    if (d->pid <= 0) return -1;
    int status = 0;
    kill(d->pid, SIGTERM);
    waitpid(d->pid, &status, 0);
    d->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

void bench_daemon_remove(const bench_daemon *d)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
    if (system(cmd)) {}
}

long bench_daemon_rss_kb(const bench_daemon *d)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)d->pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return kb;
}

int bench_daemon_fd_count(const bench_daemon *d)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", (long)d->pid);
    DIR *dir = opendir(path);
    if (!dir) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(dir));)
        if (e->d_name[0] != '.') n++;
    closedir(dir);
    return n;
}

int bench_read_file(const char *path, char **buf, size_t *len)
{
    uint8_t *b = NULL;
    int rc = file_read_all(path, 1u << 30, &b, len, NULL);
    *buf = (char *)b;
    return rc;
}

int bench_write_images(const char *path, int n, uint64_t seed)
{
    dataset d;
    int shape[3] = {1, 28, 28};
    if (dataset_init(&d, n, 3, shape, NULL)) return -1;
    rng r;
    rng_init(&r, seed);
    for (size_t i = 0; i < (size_t)n * 784; i++) d.x[i] = rng_uniform(&r);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < 784; k += 7) s += (double)d.x[(size_t)i * 784 + k] * (double)((k * 2654435761u + seed) % 7);
        d.y[i] = (int)((unsigned long)(s * 10) % 10);
    }
    d.n_classes = 10;
    int rc = dataset_save_safetensors(&d, path, NULL);
    dataset_finish(&d);
    return rc;
}
