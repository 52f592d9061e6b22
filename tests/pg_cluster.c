/* A throwaway PostgreSQL cluster shared by the tests of one runner process; see pg_cluster.h. */
#include "tests/pg_cluster.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test.h"

static pid_t owner_pid;      /* the runner: it alone stops the cluster */
static char dir[128];        /* /tmp/clad-pg-<runner pid>: data, socket, logs */
static char bindir[256];
static char user[64];

static void at_exit(void)
{
    if (getpid() == owner_pid) pg_cluster_stop();
}

/* Runs in the runner before any test forks, so every test finds the same directory. */
__attribute__((constructor)) static void pg_cluster_init(void)
{
    owner_pid = getpid();
    snprintf(dir, sizeof dir, "/tmp/clad-pg-%ld", (long)owner_pid);
    atexit(at_exit);
}

bool pg_cluster_available(char *why, size_t cap)
{
    glob_t g;
    bool found = glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) == 0 && g.gl_pathc > 0;
    if (found) { /* the newest version: glob sorts, and 15 < 16 as strings as long as both have two digits */
        snprintf(bindir, sizeof bindir, "%s", g.gl_pathv[g.gl_pathc - 1]);
        *strrchr(bindir, '/') = '\0';
    }
    globfree(&g);
    if (!found) {
        if (why) snprintf(why, cap, "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)");
        return false;
    }
    if (geteuid() == 0 && !getpwnam("postgres")) {
        if (why) snprintf(why, cap, "running as root and there is no 'postgres' user to run initdb as");
        return false;
    }
    return true;
}

const char *pg_cluster_socket_dir(void) { return dir; }

const char *pg_cluster_user(void)
{
    if (!user[0]) {
        struct passwd *pw = geteuid() == 0 ? NULL : getpwuid(geteuid());
        snprintf(user, sizeof user, "%s", pw ? pw->pw_name : "postgres");
    }
    return user;
}

/* Runs bindir/prog with args (NULL-terminated), as `postgres` when we are root, with output appended to
 * dir/log. Returns the exit status (or -1). */
static int run_tool(const char *prog, const char *const *args)
{
    char path[512], log[256];
    snprintf(path, sizeof path, "%s/%s", bindir, prog);
    snprintf(log, sizeof log, "%s/tools.log", dir);
    const char *argv[24];
    int n = 0;
    if (geteuid() == 0) {
        static const char *const as_postgres[] = {"runuser", "-u", "postgres", "--"};
        for (int i = 0; i < 4; i++) argv[n++] = as_postgres[i];
    }
    argv[n++] = path;
    for (int i = 0; args[i] && n < 23; i++) argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        if (chdir(dir) != 0) _exit(126); /* a directory the postgres user can read */
        execv(geteuid() == 0 ? "/usr/sbin/runuser" : path, (char *const *)argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool server_answers(void)
{
    char uri[512];
    pg_cluster_uri("postgres", uri, sizeof uri);
    return PQping(uri) == PQPING_OK;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

static int start_locked(char *why, size_t cap)
{
    char ready[160], data[160], opts[512];
    snprintf(ready, sizeof ready, "%s/ready", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    if (access(ready, F_OK) == 0 && server_answers()) return 0;
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); /* a leftover of a crashed start */
    if (mkdir(dir, 0700) != 0) {
        snprintf(why, cap, "mkdir %s: %s", dir, strerror(errno));
        return -1;
    }
    struct passwd *pg = geteuid() == 0 ? getpwnam("postgres") : NULL;
    if (pg && chown(dir, pg->pw_uid, pg->pw_gid) != 0) {
        snprintf(why, cap, "chown %s to postgres: %s", dir, strerror(errno));
        return -1;
    }
    const char *const initdb[] = {"-D", data, "-U", pg_cluster_user(), "--auth=trust", "-E", "UTF8",
                                  "--locale=C", "--no-sync", NULL};
    if (run_tool("initdb", initdb) != 0) {
        snprintf(why, cap, "initdb failed (see %s/tools.log)", dir);
        return -1;
    }
    snprintf(opts, sizeof opts, "-c listen_addresses='' -c unix_socket_directories='%s' -c fsync=off "
             "-c full_page_writes=off -c shared_buffers=16MB -c max_connections=60", dir);
    char log[160];
    snprintf(log, sizeof log, "%s/server.log", dir);
    const char *const start[] = {"-D", data, "-l", log, "-w", "-t", "60", "-o", opts, "start", NULL};
    if (run_tool("pg_ctl", start) != 0 || !server_answers()) {
        snprintf(why, cap, "pg_ctl start failed (see %s/server.log)", dir);
        return -1;
    }
    int fd = open(ready, O_WRONLY | O_CREAT, 0644);
    if (fd >= 0) close(fd);
    return 0;
}

int pg_cluster_start(char *why, size_t cap)
{
    if (!pg_cluster_available(why, cap)) return -1;
    /* Tests of one runner run one at a time, but a test may start the cluster from several processes. */
    char lock[160];
    snprintf(lock, sizeof lock, "%s.lock", dir);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600); /* the server must not inherit the lock */
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        snprintf(why, cap, "lock %s: %s", lock, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    int rc = start_locked(why, cap);
    close(fd);
    return rc;
}

void pg_cluster_require(void)
{
    char why[256];
    if (!pg_cluster_available(why, sizeof why)) TEST_SKIP("%s", why);
    CHECK_MSG(pg_cluster_start(why, sizeof why) == 0, "PostgreSQL test cluster: %s", why);
}

void pg_cluster_uri(const char *name, char *uri, size_t cap)
{
    snprintf(uri, cap, "postgresql://%s@/%s?host=%s", pg_cluster_user(), name, dir);
}

static PGconn *connect_db(const char *name)
{
    char uri[512];
    pg_cluster_uri(name, uri, sizeof uri);
    PGconn *c = PQconnectdb(uri);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pg_cluster: connecting to %s: %s", uri, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int run_sql(PGconn *c, const char *sql, const char *ok_state)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType t = PQresultStatus(r);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    int rc = t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK || (ok_state && state && !strcmp(state, ok_state))
                 ? 0 : -1;
    if (rc) fprintf(stderr, "pg_cluster: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return rc;
}

int pg_cluster_create_db(const char *name, char *uri, size_t cap)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63 || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != n)
        return -1;
    PGconn *c = connect_db("postgres");
    if (!c) return -1;
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", name);
    int rc = run_sql(c, sql, "42P04"); /* duplicate_database: another process of the test made it */
    PQfinish(c);
    if (rc == 0) pg_cluster_uri(name, uri, cap);
    return rc;
}

int pg_cluster_exec(const char *name, const char *sql)
{
    PGconn *c = connect_db(name);
    if (!c) return -1;
    int rc = run_sql(c, sql, NULL);
    PQfinish(c);
    return rc;
}

void pg_cluster_stop(void)
{
    char data[160], lock[160];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(lock, sizeof lock, "%s.lock", dir);
    if (access(data, F_OK) == 0 && pg_cluster_available(NULL, 0)) {
        const char *const stop[] = {"-D", data, "-m", "immediate", "-w", "stop", NULL};
        run_tool("pg_ctl", stop);
    }
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    unlink(lock);
}
