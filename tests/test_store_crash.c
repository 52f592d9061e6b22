/* Fault tests for the store: SIGKILL at random moments while a child commits, a full disk (through
 * the size limit), a corrupted adapter blob and a corrupted database page. */
#include "tests/test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/rng.h"
#include "tests/test_store_fixture.h"

#define CRASH_ROUNDS 60
#define CRASH_KEEP 30 /* retention the child applies now and then */

/* The writer that gets killed: the work of a daemon (jobs, versions, alias moves, retention, metrics,
 * fusion versions that need a version of t1, each created with its task) in a tight loop. After each version commits it reports the number on fd, so the parent knows which
 * versions were acknowledged (0 first, once it is set up). Never returns. */
static _Noreturn void crash_child(const char *path, int fd, uint64_t seed)
{
    clad_err e = {0};
    store *s = store_open(path, &e);
    if (!s) {
        fprintf(stderr, "# child open: %s\n", e.msg);
        _exit(3);
    }
    static const float w[16] = {1};
    store_base_in bi = {.name = "mlp", .config_json = "{}", .weights = w, .weights_size = sizeof w};
    int rc = store_base_put(s, &bi, 1000, &e);
    store_task_in ti = {.name = "t1", .base = "mlp", .n_classes = 10};
    if (rc == 0 || rc == CLAD_ECONFLICT) rc = store_task_create(s, &ti, 1000, &e);
    if (rc != 0 && rc != CLAD_ECONFLICT) _exit(4);
    store_jobs_mark_interrupted(s, NULL, NULL); /* what cladd does at startup */
    int64_t ready = 0;
    if (write(fd, &ready, sizeof ready) != (ssize_t)sizeof ready) _exit(6);
    rng r;
    rng_init(&r, seed);
    for (;;) {
        int64_t job = 0, v = 0;
        if (store_job_create(s, "train", "t1", NULL, "{\"epochs\":1}", 1000, &job, &e) ||
            store_job_mark_running(s, job, &e) || fx_put_job(s, "t1", job, &v, &e)) {
            fprintf(stderr, "# child: %s\n", e.msg);
            _exit(5);
        }
        if (write(fd, &v, sizeof v) != (ssize_t)sizeof v) _exit(6);
        uint32_t pick = rng_below(&r, 10);
        if (pick < 3)
            store_rollback(s, "t1", NULL, 0, 1000, "crash test", NULL, NULL);
        else if (pick < 5)
            store_rollback_undo(s, "t1", NULL, 1000, NULL, NULL, NULL);
        else if (pick < 7)
            store_alias_set(s, "t1", "champion", v, 1000, NULL, NULL);
        else if (pick < 8)
            store_gc(s, "t1", CRASH_KEEP, 1000, NULL, NULL);
        else if (pick < 9) {
            static const uint8_t blob[64] = {9};
            store_ref need = {"t1", v};
            store_task_in fi = {.name = "f", .base = "mlp", .n_classes = 10};
            store_version_in in = {.task = "f", .kind = "fusion", .adapter = blob, .adapter_size = sizeof blob,
                                   .needs = &need, .n_needs = 1, .create_task = &fi};
            store_version_put(s, &in, 1000, NULL, NULL);
        } else {
            store_acc_entry m[3] = {{{"t1", v}, {"t1", v}, 0.9, 0.3, 100, 0},
                                    {{"t1", v}, {"t1", 0}, 0.5, 1.2, 100, 0},
                                    {{"t1", v}, {"t1", v}, 0.8, 0.4, 50, 0}};
            store_matrix_add(s, m, 3, 1000, NULL);
        }
    }
}

typedef struct crash_stats {
    int in_flight;  /* rounds where a version committed but was not yet acknowledged */
    int64_t acked;  /* versions acknowledged in total */
    size_t fusion;  /* fusion versions stored at the last check */
} crash_stats;

/* Everything a kill must never break; committed[v] is 1 for versions the child acknowledged. */
static void crash_verify(const char *path, uint8_t *committed, int64_t *max_acked, crash_stats *cs)
{
    clad_err e = {0};
    store *s = store_open(path, &e);
    CHECK_MSG(s != NULL, "reopen after kill: %s: %s", clad_code_name(e.code), e.msg);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e); /* integrity_check, foreign keys, every sha256 */
    store_task *t = NULL;
    if (store_task_get(s, "t1", &t, NULL) != 0) { /* killed before the task existed */
        CHECK(*max_acked == 0);
        store_close(s);
        return;
    }
    int64_t latest = t->latest_version;
    store_task_free(t);
    store_version *list = NULL;
    size_t n = 0;
    CHECK_OK(store_versions_list(s, "t1", &list, &n, &e), e);
    /* Acknowledged versions are all there, except those retention removed (which have >= KEEP newer). */
    uint8_t *present = calloc((size_t)latest + 2, 1);
    for (size_t i = 0; i < n; i++) present[list[i].version] = 1;
    for (int64_t v = 1; v <= *max_acked; v++) {
        if (!committed[v] || present[v]) continue;
        int64_t newer = 0;
        for (size_t i = 0; i < n; i++) newer += list[i].version > v;
        CHECK_MSG(newer >= CRASH_KEEP, "acknowledged version %lld is missing", (long long)v);
    }
    /* At most one version committed without its acknowledgement: the one in flight at the kill. */
    CHECK_MSG(latest <= *max_acked + 1, "store has version %lld, child acknowledged up to %lld",
              (long long)latest, (long long)*max_acked);
    if (latest == *max_acked + 1) {
        cs->in_flight++;
        committed[latest] = 1;
        *max_acked = latest;
    }
    /* Every stored version loads with a matching sha256 and the content written for it, and it came
     * out of a job that is recorded as succeeded with that version. */
    for (size_t i = 0; i < n; i++) {
        store_version *v = NULL;
        CHECK_OK(store_version_get(s, "t1", list[i].version, STORE_WITH_BLOB, &v, &e), e);
        CHECK_MSG(fx_blob_ok(v), "version %lld has the wrong content", (long long)v->version);
        store_job *j = NULL;
        CHECK_OK(store_job_get(s, v->job_id, &j, &e), e);
        CHECK_INT_EQ(j->state, STORE_JOB_SUCCEEDED);
        CHECK_INT_EQ(j->result_version, v->version);
        store_job_free(j);
        store_version_free(v);
    }
    /* Aliases point at stored versions; history rows name versions that were written. */
    store_alias *al = NULL;
    size_t na = 0;
    CHECK_OK(store_aliases_list(s, "t1", &al, &na, &e), e);
    CHECK(n == 0 || na >= 1);
    for (size_t i = 0; i < na; i++)
        CHECK_MSG(al[i].version >= 1 && al[i].version <= latest && present[al[i].version],
                  "alias %s points at missing version %lld", al[i].name, (long long)al[i].version);
    store_aliases_free(al);
    /* Every fusion version's needs are stored (retention and kills never break a dependency). */
    store_version *fl = NULL;
    size_t nf = 0;
    if (store_versions_list(s, "f", &fl, &nf, NULL) == 0) {
        for (size_t i = 0; i < nf; i++) {
            CHECK_INT_EQ(fl[i].n_needs, 1);
            CHECK_MSG(fl[i].needs[0].version <= latest && present[fl[i].needs[0].version],
                      "fusion version %lld needs missing version %lld", (long long)fl[i].version,
                      (long long)fl[i].needs[0].version);
        }
        store_versions_free(fl, nf);
        cs->fusion = nf;
    }
    store_alias_move *h = NULL;
    size_t nh = 0;
    CHECK_OK(store_alias_history(s, "t1", NULL, &h, &nh, &e), e);
    for (size_t i = 0; i < nh; i++)
        CHECK(h[i].new_version <= latest && h[i].old_version <= latest);
    store_alias_history_free(h);
    /* Jobs: the restart marks the unfinished ones; none stays queued or running, none succeeded
     * without a stored (or retained-away) version. */
    int64_t marked = 0;
    CHECK_OK(store_jobs_mark_interrupted(s, &marked, &e), e);
    CHECK(marked <= 1);
    store_job *jobs = NULL;
    size_t nj = 0;
    CHECK_OK(store_jobs_list(s, NULL, 0, &jobs, &nj, &e), e);
    for (size_t i = 0; i < nj; i++) {
        CHECK_MSG(jobs[i].state == STORE_JOB_SUCCEEDED || jobs[i].state == STORE_JOB_INTERRUPTED,
                  "job %lld is %s", (long long)jobs[i].id, store_job_state_name(jobs[i].state));
        if (jobs[i].state == STORE_JOB_SUCCEEDED)
            CHECK(jobs[i].result_version >= 1 && jobs[i].result_version <= latest);
    }
    store_jobs_free(jobs, nj);
    cs->acked = *max_acked;
    free(present);
    store_versions_free(list, n);
    store_close(s);
}

TEST_TIMEOUT(store_crash_sigkill_never_leaves_half_a_write, 120)
{
    char path[512];
    fx_path(path, sizeof path, "crash.db");
    static uint8_t committed[1 << 16];
    int64_t max_acked = 0;
    crash_stats cs = {0};
    rng r;
    rng_init(&r, (uint64_t)time(NULL));
    for (int round = 0; round < CRASH_ROUNDS; round++) {
        int fds[2];
        CHECK(pipe(fds) == 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(path, fds[1], rng_next(&r) + (uint64_t)round);
        }
        close(fds[1]);
        /* Most kills land in the commit loop: after the child is set up and has acknowledged 0, 1 or 2
         * versions (so the test makes progress however slow the machine is), then 0-30 ms later. Every
         * fifth lands anywhere, including store creation, migration and WAL recovery at open. */
        int64_t v;
        if (round % 5 != 0) {
            CHECK(read(fds[0], &v, sizeof v) == (ssize_t)sizeof v && v == 0);
            for (int k = 0; k < round % 3; k++) {
                CHECK(read(fds[0], &v, sizeof v) == (ssize_t)sizeof v && v > 0);
                committed[v] = 1;
                if (v > max_acked) max_acked = v;
            }
        }
        struct timespec ts = {0, (long)rng_below(&r, 30000) * 1000}; /* 0-30 ms */
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child ended by itself (status %d)", status);
        ssize_t got;
        while ((got = read(fds[0], &v, sizeof v)) == (ssize_t)sizeof v) {
            if (v == 0) continue;
            CHECK(v >= 1 && v < (int64_t)sizeof committed);
            committed[v] = 1;
            if (v > max_acked) max_acked = v;
        }
        CHECK(got == 0);
        close(fds[0]);
        crash_verify(path, committed, &max_acked, &cs);
    }
    fprintf(stderr, "# %d kills, %lld versions acknowledged, %d kills right after a commit, %zu fusion versions\n",
            CRASH_ROUNDS, (long long)cs.acked, cs.in_flight, cs.fusion);
}

/* ---- Full disk ---- */

TEST(store_full_disk_is_a_clear_error_and_the_store_recovers)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    for (int i = 0; i < 3; i++) fx_put(s, "t1", 0);
    int64_t limit = 0;
    CHECK_OK(store_set_size_limit(s, 4096, &limit, &e), e); /* below the current size: stays at it */
    CHECK(limit > 4096);
    CHECK_OK(store_set_size_limit(s, limit + 160 * 1024, &limit, &e), e);
    store_audit *a = NULL;
    size_t n_audit_before, n_audit_after, n;
    CHECK_OK(store_audit_list(s, 0, 0, &a, &n_audit_before, &e), e);
    store_audit_free(a, n_audit_before);

    int64_t v = 0, last = 3;
    int rc = 0;
    for (int i = 0; i < 50 && rc == 0; i++) {
        clad_err_clear(&e);
        rc = fx_put_job(s, "t1", 0, &v, &e);
        if (rc == 0) last = v;
    }
    CHECK_INT_EQ(rc, CLAD_EFULL);
    CHECK_MSG(strstr(e.msg, "is full") && strstr(e.msg, "nothing was written"), "message: %s", e.msg);
    CHECK(last > 3); /* some fitted before the limit */
    CHECK_OK(store_audit_list(s, 0, 0, &a, &n_audit_after, &e), e);
    store_audit_free(a, n_audit_after);
    CHECK_INT_EQ(n_audit_after, n_audit_before + (size_t)(last - 3));

    /* Consistent, on this handle and on a fresh one; the failed put left no trace. */
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_task *t = NULL;
    CHECK_OK(store_task_get(s, "t1", &t, &e), e);
    CHECK_INT_EQ(t->latest_version, last);
    CHECK_INT_EQ(t->n_versions, last);
    store_task_free(t);
    char path[512];
    fx_path(path, sizeof path, "a.db");
    store *r = store_open_reader(path, &e);
    CHECK(r != NULL);
    int64_t act = 0;
    CHECK_OK(store_alias_get(r, "t1", "active", &act, &e), e);
    CHECK_INT_EQ(act, last);
    store_close(r);

    /* Still usable: retention frees pages even when full, then new versions fit under the same limit. */
    store_gc_stats gs;
    CHECK_OK(store_gc(s, "t1", 1, 0, &gs, &e), e);
    CHECK(gs.versions_deleted == last - 1);
    CHECK_OK(store_alias_set(s, "t1", "champion", last, 0, "disk full", &e), e);
    CHECK_OK(fx_put_job(s, "t1", 0, &v, &e), e);
    CHECK_INT_EQ(v, last + 1);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
    (void)n;
}

/* A job's result is a new task and its first version in one transaction: when storing the version
 * fails (disk full, or the job is no longer running), no task is left behind either. */
static size_t audit_count(store *s)
{
    clad_err e = {0};
    store_audit *a = NULL;
    size_t n = 0;
    CHECK_OK(store_audit_list(s, 0, 0, &a, &n, &e), e);
    store_audit_free(a, n);
    return n;
}

TEST(store_task_and_first_version_commit_together)
{
    clad_err e = {0};
    store *s = fx_open("a.db");
    fx_task(s, "t1"); /* creates base "mlp" */
    store_task_in ti = {.name = "new", .base = "mlp", .n_classes = 3};
    static uint8_t blob[256 * 1024];
    fx_blob(blob, sizeof blob, "new", 1);
    store_version_in in = {.task = "new", .kind = "lora", .adapter = blob, .adapter_size = sizeof blob,
                           .create_task = &ti};
    int64_t limit = 0, v = 0, job = 0;
    CHECK_OK(store_set_size_limit(s, 4096, &limit, &e), e); /* the current size */
    CHECK_OK(store_set_size_limit(s, limit + 64 * 1024, &limit, &e), e);
    size_t n_audit = audit_count(s);

    /* Fault in the second step: the task row fits, the version's blob does not. */
    CHECK_CODE(store_version_put(s, &in, 1000, &v, &e), CLAD_EFULL, e);
    store_task *t = NULL;
    CHECK_CODE(store_task_get(s, "new", &t, &e), CLAD_ENOTFOUND, e);
    CHECK_INT_EQ(audit_count(s), n_audit);
    CHECK_OK(store_set_size_limit(s, limit + 4 * sizeof blob, &limit, &e), e);

    /* The producing job was cancelled meanwhile: refused after the task insert, nothing kept. */
    CHECK_OK(store_job_create(s, "train", "new", NULL, NULL, 1000, &job, &e), e); /* queued, not running */
    n_audit = audit_count(s);
    in.job_id = job;
    CHECK_CODE(store_version_put(s, &in, 1000, &v, &e), CLAD_ECONFLICT, e);
    CHECK_CODE(store_task_get(s, "new", &t, &e), CLAD_ENOTFOUND, e);
    CHECK_INT_EQ(audit_count(s), n_audit);

    /* A bad task description is refused before anything is written. */
    in.job_id = 0;
    store_task_in bad = ti;
    bad.name = "other";
    in.create_task = &bad;
    CHECK_CODE(store_version_put(s, &in, 1000, &v, &e), CLAD_EINVAL, e);

    /* Success: both, with the task as described; again: the existing task is used. */
    in.create_task = &ti;
    CHECK_OK(store_version_put(s, &in, 1000, &v, &e), e);
    CHECK_INT_EQ(v, 1);
    CHECK_OK(store_task_get(s, "new", &t, &e), e);
    CHECK_INT_EQ(t->n_classes, 3);
    CHECK_INT_EQ(t->n_versions, 1);
    store_task_free(t);
    CHECK_INT_EQ(audit_count(s), n_audit + 2); /* task.create and version.put */
    in.adapter_size = 64;
    CHECK_OK(store_version_put(s, &in, 1000, &v, &e), e);
    CHECK_INT_EQ(v, 2);
    CHECK_OK(store_check(s, STORE_CHECK_FULL, &e), e);
    store_close(s);
}

/* ---- Corruption ---- */

/* Offset of needle in hay, or -1. */
static long find_bytes(const uint8_t *hay, size_t n, const uint8_t *needle, size_t k)
{
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0) return (long)i;
    return -1;
}

TEST(store_corrupted_blob_is_detected_by_its_hash)
{
    clad_err e = {0};
    char path[512];
    fx_path(path, sizeof path, "a.db");
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    for (int i = 0; i < 3; i++) fx_put(s, "t1", 0);
    store_close(s); /* the WAL is checkpointed into the main file */

    /* Flip one byte in the middle of version 2's adapter, found by its content. */
    size_t bn = fx_blob_size("t1", 2), n;
    uint8_t *blob = malloc(bn);
    fx_blob(blob, bn, "t1", 2);
    uint8_t *file = fx_read_file(path, &n);
    long at = find_bytes(file, n, blob + 200, 32);
    CHECK(at >= 0);
    file[at + 5] ^= 0x40;
    fx_write_file(path, file, n);
    free(file);
    free(blob);

    s = fx_open("a.db"); /* the page structure is intact, so opening succeeds */
    store_version *v = NULL;
    CHECK_CODE(store_version_get(s, "t1", 2, STORE_WITH_BLOB, &v, &e), CLAD_ECORRUPT, e);
    CHECK_STR_EQ(e.msg, "version 2 of task 't1': adapter blob sha256 mismatch");
    CHECK(v == NULL);
    CHECK_OK(store_version_get(s, "t1", 2, 0, &v, &e), e); /* metadata is still readable */
    store_version_free(v);
    CHECK_OK(store_version_get(s, "t1", 3, STORE_WITH_BLOB, &v, &e), e);
    CHECK(fx_blob_ok(v));
    store_version_free(v);
    CHECK_CODE(store_check(s, STORE_CHECK_FULL, &e), CLAD_ECORRUPT, e);
    CHECK(strstr(e.msg, "version 2 of task 't1'"));
    /* An alias onto the damaged version fails the same way rather than serving something else. */
    CHECK_OK(store_rollback(s, "t1", NULL, 2, 0, NULL, NULL, &e), e);
    CHECK_CODE(store_version_get_alias(s, "t1", "active", STORE_WITH_BLOB, &v, &e), CLAD_ECORRUPT, e);
    store_close(s);
}

TEST(store_corrupted_page_fails_the_open_check)
{
    clad_err e = {0};
    char path[512];
    fx_path(path, sizeof path, "a.db");
    store *s = fx_open("a.db");
    fx_task(s, "t1");
    for (int i = 0; i < 6; i++) fx_put(s, "t1", 0);
    store_close(s);
    size_t n;
    uint8_t *file = fx_read_file(path, &n);
    CHECK(n > 8 * 4096);
    /* Scribble over the b-tree pages after the header page: sqlite_master still parses, the tables
     * do not. */
    for (size_t i = 4096; i < 6 * 4096; i++) file[i] = (uint8_t)(i * 131 + 17);
    fx_write_file(path, file, n);
    free(file);
    CHECK(store_open(path, &e) == NULL);
    CHECK_INT_EQ(e.code, CLAD_ECORRUPT);
    CHECK_MSG(strstr(e.msg, "restore it from a backup"), "message: %s", e.msg);
}
