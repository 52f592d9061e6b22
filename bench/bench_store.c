/* clad-bench store: registry latency and size on a real file.
 *
 * For adapter blobs sized like the reference configs it measures, on a fresh store each:
 *   commit    store_version_put (sha256, one transaction, WAL fsync), moving `active` each time
 *   rollback  store_rollback of `active` to its previous target (one transaction, fsync)
 *   load      store_version_get_alias with the blob (one read snapshot, sha256 check)
 *   size      growth of the database file per version (after checkpoint)
 *   open      store_open (with quick_check) and store_open_reader of the filled store
 *
 * Options: --versions N (default 200), --dir DIR (default $TMPDIR or /tmp), --json.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "core/rng.h"
#include "storage/store.h"

/* Adapter blob sizes: float32 tensors plus a safetensors header (8-byte length and about 96 bytes
 * of JSON per tensor). */
typedef struct store_config {
    const char *name;
    const char *detail;
    size_t floats;
    int tensors;
} store_config;

static const store_config configs[] = {
    /* LoRA r=8 on fc1 (784->256) and fc2 (256->256): A (8,in) and B (out,8); head (10,256) + bias. */
    {"mlp", "mlp 784-256-256-10, LoRA r=8 on fc1,fc2, 10x256 head",
     8 * 784 + 256 * 8 + 8 * 256 + 256 * 8 + 10 * 256 + 10, 6},
    /* ViT dim 64, depth 4, LoRA r=8 on qkv (64->192), proj (64->64), fc1 (64->256), fc2 (256->64) per
     * block, plus a 10x64 head and bias. */
    {"vit-tiny", "vit-tiny dim 64 depth 4, LoRA r=8 on qkv,proj,fc1,fc2, 10x64 head",
     4 * ((8 * 64 + 192 * 8) + (8 * 64 + 64 * 8) + (8 * 64 + 256 * 8) + (8 * 256 + 64 * 8)) + 10 * 64 + 10, 34},
};

static size_t config_bytes(const store_config *c)
{
    return c->floats * 4 + 8 + (size_t)c->tensors * 96;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct pct {
    double median, p99;
} pct;

/* Nearest-rank percentiles of ms[0..n), which gets sorted. */
static pct percentiles(double *ms, int n)
{
    qsort(ms, (size_t)n, sizeof *ms, cmp_double);
    int i50 = (int)ceil(0.50 * n) - 1, i99 = (int)ceil(0.99 * n) - 1;
    return (pct){ms[i50 < 0 ? 0 : i50], ms[i99 < 0 ? 0 : i99]};
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

typedef struct result {
    pct commit, rollback, load, open, open_reader;
    double bytes_per_version;
    size_t blob_bytes;
} result;

static int fail(const char *what, const clad_err *e)
{
    fprintf(stderr, "clad-bench store: %s: %s: %s\n", what, clad_code_name(e->code), e->msg);
    return 1;
}

/* Puts version i of the benchmark task; the blob differs per version in a few bytes. */
static int put_one(store *s, const store_config *c, unsigned char *blob, size_t bytes, int i, clad_err *e)
{
    memcpy(blob + 8 + (size_t)c->tensors * 96, &i, sizeof i);
    store_version_in in = {.task = "bench", .kind = "lora", .adapter = blob, .adapter_size = bytes,
                           .hparams_json = "{\"rank\":8,\"lr\":0.001,\"epochs\":5}",
                           .lineage_json = "{\"novelty\":0.5,\"ranks\":[8,8]}",
                           .metrics_json = "{\"accuracy\":0.9}", .seed = (uint64_t)i, .wall_time_s = 1};
    return store_version_put(s, &in, 0, NULL, e);
}

static int run_config(const store_config *c, const char *dir, int n, result *out)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/%s.db", dir, c->name);
    unlink(path);
    clad_err e = {0};
    store *s = store_open(path, &e);
    if (!s) return fail("open", &e);
    char sha[SHA256_HEX_SIZE];
    sha256_hex(c->name, strlen(c->name), sha);
    store_base_in bi = {.name = "base", .config_json = "{}", .weights_path = "/dev/null", .weights_sha256 = sha};
    store_task_in ti = {.name = "bench", .base = "base", .n_classes = 10};
    if (store_base_put(s, &bi, 0, &e) || store_task_create(s, &ti, 0, &e)) return fail("setup", &e);
    store_close(s); /* closing checkpoints the WAL, so the file size is the store's size */
    long long size0 = file_size(path);

    size_t bytes = config_bytes(c);
    unsigned char *blob = malloc(bytes);
    double *ms = malloc((size_t)n * sizeof *ms);
    if (!blob || !ms) {
        fprintf(stderr, "clad-bench store: out of memory\n");
        return 1;
    }
    rng r;
    rng_init(&r, 1);
    for (size_t i = 0; i < bytes; i++) blob[i] = (unsigned char)rng_next(&r);

    int rc = 0;
    if (!(s = store_open(path, &e))) return fail("reopen", &e);
    for (int i = 0; i < n && !rc; i++) {
        double t0 = now_s();
        rc = put_one(s, c, blob, bytes, i, &e);
        ms[i] = (now_s() - t0) * 1e3;
    }
    store_close(s);
    if (rc) return fail("commit", &e);
    out->commit = percentiles(ms, n);
    out->bytes_per_version = (double)(file_size(path) - size0) / n;
    out->blob_bytes = bytes;

    /* Opening: the writer's open runs quick_check over the whole file; a reader's open does not. */
    for (int i = 0; i < 10; i++) {
        double t0 = now_s();
        if (!(s = store_open(path, &e))) return fail("reopen", &e);
        store_close(s);
        ms[i] = (now_s() - t0) * 1e3;
    }
    out->open = percentiles(ms, 10);
    for (int i = 0; i < 50; i++) {
        double t0 = now_s();
        if (!(s = store_open_reader(path, &e))) return fail("reader open", &e);
        store_close(s);
        ms[i] = (now_s() - t0) * 1e3;
    }
    out->open_reader = percentiles(ms, 50);

    if (!(s = store_open(path, &e))) return fail("reopen", &e);
    int n_loads = n < 200 ? n : 200;
    for (int i = 0; i < n_loads && !rc; i++) {
        store_version *v = NULL;
        double t0 = now_s();
        rc = store_version_get_alias(s, "bench", "active", STORE_WITH_BLOB, &v, &e);
        ms[i] = (now_s() - t0) * 1e3;
        store_version_free(v);
    }
    if (rc) return fail("load", &e);
    out->load = percentiles(ms, n_loads);
    int n_rollbacks = n - 1; /* each walks one step further back */
    for (int i = 0; i < n_rollbacks && !rc; i++) {
        double t0 = now_s();
        rc = store_rollback(s, "bench", NULL, 0, 0, "bench", NULL, &e);
        ms[i] = (now_s() - t0) * 1e3;
    }
    if (rc) return fail("rollback", &e);
    out->rollback = percentiles(ms, n_rollbacks);
    store_close(s);
    unlink(path);
    free(blob);
    free(ms);
    return 0;
}

static void cpu_model(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            if (colon) {
                colon += 1 + (colon[1] == ' ');
                colon[strcspn(colon, "\n")] = '\0';
                snprintf(buf, cap, "%s", colon);
            }
            break;
        }
    }
    fclose(f);
}

int bench_store_main(int argc, char **argv)
{
    int n = 200, json = 0;
    const char *base_dir = getenv("TMPDIR");
    if (!base_dir || !*base_dir) base_dir = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--versions") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) base_dir = argv[++i];
        else {
            fprintf(stderr, "usage: clad-bench store [--versions N] [--dir DIR] [--json]\n");
            return 2;
        }
    }
    if (n < 2 || n > 100000) {
        fprintf(stderr, "clad-bench store: --versions must be 2..100000\n");
        return 2;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/clad-bench-store-XXXXXX", base_dir);
    if (!mkdtemp(dir)) {
        perror("clad-bench store: mkdtemp");
        return 1;
    }
    size_t nc = sizeof configs / sizeof configs[0];
    result res[sizeof configs / sizeof configs[0]];
    int rc = 0;
    for (size_t i = 0; i < nc && !rc; i++) rc = run_config(&configs[i], dir, n, &res[i]);
    rmdir(dir);
    if (rc) return 1;

    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    if (json) {
        printf("{\"bench\":\"store\",\"versions\":%d,\"machine\":{\"nproc\":%ld,\"cpu\":\"%s\"},"
               "\"durability\":\"WAL, synchronous=FULL\",\"configs\":[", n, nproc, cpu);
        for (size_t i = 0; i < nc; i++)
            printf("%s{\"name\":\"%s\",\"detail\":\"%s\",\"blob_bytes\":%zu,"
                   "\"commit_ms\":{\"median\":%.3f,\"p99\":%.3f},"
                   "\"rollback_ms\":{\"median\":%.3f,\"p99\":%.3f},"
                   "\"load_ms\":{\"median\":%.3f,\"p99\":%.3f},"
                   "\"open_ms\":{\"median\":%.3f},\"open_reader_ms\":{\"median\":%.3f},"
                   "\"store_bytes_per_version\":%.0f}",
                   i ? "," : "", configs[i].name, configs[i].detail, res[i].blob_bytes, res[i].commit.median,
                   res[i].commit.p99, res[i].rollback.median, res[i].rollback.p99, res[i].load.median,
                   res[i].load.p99, res[i].open.median, res[i].open_reader.median, res[i].bytes_per_version);
        printf("]}\n");
    } else {
        printf("store benchmark: %d versions per config, %ld CPUs (%s), WAL + synchronous=FULL\n", n, nproc, cpu);
        printf("%-10s %10s %18s %18s %18s %9s %9s %12s\n", "config", "blob B", "commit ms p50/p99",
               "rollback ms p50/99", "load ms p50/p99", "open ms", "reader ms", "B/version");
        for (size_t i = 0; i < nc; i++)
            printf("%-10s %10zu %8.3f /%8.3f %8.3f /%8.3f %8.3f /%8.3f %9.3f %9.3f %12.0f\n", configs[i].name,
                   res[i].blob_bytes, res[i].commit.median, res[i].commit.p99, res[i].rollback.median,
                   res[i].rollback.p99, res[i].load.median, res[i].load.p99, res[i].open.median,
                   res[i].open_reader.median, res[i].bytes_per_version);
    }
    return 0;
}
