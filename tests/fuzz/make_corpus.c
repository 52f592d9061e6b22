/* Writes the seed corpus of the fuzz targets into tests/fuzz/corpus/<target>/ (`make fuzz-corpus`; the
 * files are committed). Seeds are small and valid, so the fuzzers start from inputs that reach deep into
 * each parser; hand-written text seeds (HTTP, JSON, CSV) are spelled out here too, so the corpus can be
 * rebuilt from this file alone. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "core/fusion.h"
#include "io/dataset_io.h"
#include "io/model_io.h"
#include "io/safetensors.h"
#include "tests/fuzz/harness_model.h"

static const char *root = "tests/fuzz/corpus";

static void die(const char *what)
{
    fprintf(stderr, "make_corpus: %s\n", what);
    exit(1);
}

/* Writes prefix (plen bytes, may be 0) then data to corpus/<target>/<name>. */
static void put(const char *target, const char *name, const void *prefix, size_t plen, const void *data,
                size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) die(path);
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(prefix, 1, plen, f) != plen || fwrite(data, 1, len, f) != len || fclose(f) != 0) die(path);
}

/* Text after a binary prefix of plen bytes (which may hold NULs). */
static void put_text(const char *target, const char *name, const char *prefix, size_t plen, const char *text)
{
    put(target, name, prefix, plen, text, strlen(text));
}

/* gzip (with header) of in, into a malloc'd buffer. */
static uint8_t *gzip(const void *in, size_t len, size_t *out_len)
{
    z_stream z = {0};
    if (deflateInit2(&z, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) die("deflateInit2");
    size_t cap = deflateBound(&z, len) + 32;
    uint8_t *out = malloc(cap);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END) die("deflate");
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

static void idx_seeds(void)
{
    /* 3 images of 2x3 pixels and their labels */
    const uint8_t images[16 + 18] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 3,
                                     0, 50, 100, 150, 200, 250, 1, 2, 3, 4, 5, 6, 255, 0, 255, 0, 255, 0};
    const uint8_t labels[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 0, 2, 1};
    uint8_t buf[64];
    const uint8_t split[2] = {0, sizeof images};
    memcpy(buf, images, sizeof images);
    memcpy(buf + sizeof images, labels, sizeof labels);
    put("idx", "raw", split, 2, buf, sizeof images + sizeof labels);
    put("idx", "images-only", (const uint8_t[]){0xff, 0xff}, 2, images, sizeof images);
    size_t gi, gl;
    uint8_t *zi = gzip(images, sizeof images, &gi), *zl = gzip(labels, sizeof labels, &gl);
    uint8_t both[256];
    memcpy(both, zi, gi);
    memcpy(both + gi, zl, gl);
    put("idx", "gzip", (const uint8_t[]){0, (uint8_t)gi}, 2, both, gi + gl);
    put("dataset_detect", "idx-gzip", "\1", 1, zi, gi);
    put("dataset_detect", "idx-raw", "\1", 1, images, sizeof images);
    free(zi);
    free(zl);
}

static void safetensors_seeds(void)
{
    /* A dataset file, as clients upload them */
    dataset d;
    if (dataset_init(&d, 3, 1, (int[]){2}, NULL)) die("dataset_init");
    for (int i = 0; i < 6; i++) d.x[i] = (float)i * 0.5f;
    d.y[0] = 0, d.y[1] = 1, d.y[2] = 1;
    d.n_classes = 2;
    char path[] = "/tmp/clad-corpus-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || dataset_save_safetensors(&d, path, NULL)) die("dataset_save_safetensors");
    uint8_t *buf;
    size_t len;
    if (file_read_all(path, 1 << 20, &buf, &len, NULL)) die("file_read_all");
    remove(path);
    put("safetensors", "dataset", "", 0, buf, len);
    put("dataset_detect", "safetensors", "\0", 1, buf, len);
    free(buf);
    dataset_finish(&d);
    /* Every dtype the reader converts, and metadata */
    st_writer *w = st_writer_create();
    const uint8_t raw[16] = {0, 60, 0, 188, 128, 63, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8};
    st_writer_add(w, "f16", ST_F16, 1, (const int64_t[]){2}, raw, NULL);
    st_writer_add(w, "bf16", ST_BF16, 2, (const int64_t[]){1, 2}, raw + 4, NULL);
    st_writer_add(w, "u8", ST_U8, 1, (const int64_t[]){4}, raw + 8, NULL);
    st_writer_add(w, "i64", ST_I64, 1, (const int64_t[]){1}, raw + 8, NULL);
    st_writer_add(w, "scalar", ST_F32, 0, NULL, raw + 4, NULL);
    st_writer_meta(w, "format", "clad-test", NULL);
    if (st_writer_to_buffer(w, &buf, &len, NULL)) die("st_writer_to_buffer");
    put("safetensors", "dtypes", "", 0, buf, len);
    free(buf);
    st_writer_destroy(w);
    const char *hand = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"__metadata__\":{\"a\":\"b\"}}";
    uint8_t small[256];
    uint64_t hl = strlen(hand);
    for (int i = 0; i < 8; i++) small[i] = (uint8_t)(hl >> (8 * i));
    memcpy(small + 8, hand, hl);
    memset(small + 8 + hl, 0, 4);
    put("safetensors", "hand", "", 0, small, 8 + hl + 4);
}

static void model_seeds(void)
{
    model *m = fuzz_model_base();
    adapter *src[2] = {fuzz_model_source(m, 0), fuzz_model_source(m, 1)};
    uint8_t *buf;
    size_t len;
    if (model_to_buffer(m, &buf, &len, NULL)) die("model_to_buffer");
    put("model_io", "model", "\0", 1, buf, len);
    put("safetensors", "model", "", 0, buf, len);
    free(buf);
    if (adapter_to_buffer(src[0], m, &buf, &len, NULL)) die("adapter_to_buffer");
    put("model_io", "adapter", "\1", 1, buf, len);
    free(buf);
    const char *names[2] = {"t1", "t2"};
    adapter *f = adapter_fusion_create(m, (const adapter *const *)src, names, 2, 3, NULL);
    if (!f) die("adapter_fusion_create");
    adapter_init(f, m, 3);
    if (adapter_to_buffer(f, m, &buf, &len, NULL)) die("adapter_to_buffer (fusion)");
    put("model_io", "fusion", "\2", 1, buf, len);
    free(buf);
    adapter_destroy(f);
    adapter_destroy(src[0]);
    adapter_destroy(src[1]);
    model_destroy(m);
}

static void text_seeds(void)
{
    put_text("csv", "labelled", "\0", 1, "label,a,b\n0,1.5,2\n1,-3,4e2\n\n2,0,0\n");
    put_text("csv", "features", "\1", 1, "1,2,3\n4,5,6\n");
    put_text("dataset_detect", "csv", "\0", 1, "0,0.5,0.25\n1,1,0\n");

    /* 4 seed bytes (how the stream is cut), then the bytes on the connection */
    static const char *const http[][2] = {
        {"get", "GET /v1/echo/a%20b/c?x=1&flag=yes&y=%41 HTTP/1.1\r\nHost: x\r\nUser-Agent: fuzz\r\n\r\n"},
        {"pipelined", "GET /v1/later HTTP/1.1\r\n\r\nGET /v1/echo/fixed/q?flag HTTP/1.1\r\n\r\n"
                      "POST /v1/json/x HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\": 1}\n"},
        {"chunked", "PUT /v1/upload HTTP/1.1\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n"
                    "Expect: 100-continue\r\n\r\n4\r\n0,1\n\r\n0\r\n\r\n"},
        {"stream-http10", "GET /v1/stream HTTP/1.0\r\n\r\n"},
        {"errors", "DELETE /v1/echo/a/b HTTP/1.1\r\n\r\nGET /nowhere HTTP/1.1\r\n\r\n"
                   "POST /v1/later HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"},
        {"too-large", "POST /v1/json/x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"},
    };
    for (size_t i = 0; i < sizeof http / sizeof http[0]; i++) {
        put_text("http", http[i][0], "\0\0\0\0", 4, http[i][1]);
        char name[64];
        snprintf(name, sizeof name, "%s-split", http[i][0]);
        put_text("http", name, "\x12\x34\x56\x78", 4, http[i][1]);
    }

    /* route byte (0 rollback, 1 undo, 2 alias, 3 merge, 4 base training, 5 predict), then the body */
    static const char *const json[][3] = {
        {"rollback", "\0", "{\"alias\": \"active\", \"to\": 2, \"reason\": \"bad\"}"},
        {"undo", "\1", "{\"alias\": \"stable\"}"},
        {"alias", "\2", "{\"version\": 3, \"reason\": \"promote\"}"},
        {"merge", "\3", "{\"tasks\": [\"t1\", \"t2\"], \"method\": \"ties\", \"drop\": 0.8, \"lambda\": 1, \"rank\": 8}"},
        {"merge-drm", "\3", "{\"tasks\": [\"a\"], \"method\": \"drm-v\"}"},
        {"base", "\4", "{\"model\": {\"model\": \"mlp\", \"input_dim\": 4, \"hidden\": [8], \"classes\": 3},"
                       " \"data\": \"fmnist\", \"epochs\": 1, \"batch\": 32, \"lr\": 0.01, \"seed\": 2, \"samples\": 100}"},
        {"base-preset", "\4", "{\"model\": \"vit-tiny\"}"},
        {"predict", "\5", "{\"inputs\": [[1, 2, 3], [0.5, -1, 1e3]]}"},
        {"empty", "\0", ""},
    };
    for (size_t i = 0; i < sizeof json / sizeof json[0]; i++)
        put("json_bodies", json[i][0], json[i][1], 1, json[i][2], strlen(json[i][2]));
}

static void stream_seeds(void)
{
    static const char *const files[] = {"fmnist-domains", "synthetic-distances", "synthetic-ranks"};
    for (size_t i = 0; i < 3; i++) {
        char path[256];
        snprintf(path, sizeof path, "bench/streams/%s.json", files[i]);
        uint8_t *buf;
        size_t len;
        if (file_read_all(path, 1 << 20, &buf, &len, NULL)) die(path);
        put("stream_spec", files[i], "", 0, buf, len);
        free(buf);
    }
    put_text("stream_spec", "from-file", "", 0,
             "{\"name\": \"s\", \"base\": {\"path\": \"base.safetensors\"}, \"train_per_task\": 10, \"test_per_task\": 5,"
             " \"quick\": {\"train_per_task\": 2}, \"probe\": {\"samples\": 8, \"points\": 2},"
             " \"tasks\": [{\"name\": \"a\", \"data\": \"fmnist\", \"transforms\": [{\"op\": \"noise\", \"sigma\": 0.1}]}]}");
}

int main(int argc, char **argv)
{
    if (argc > 1) root = argv[1];
    if (mkdir(root, 0755) != 0 && errno != EEXIST) die(root);
    idx_seeds();
    safetensors_seeds();
    model_seeds();
    text_seeds();
    stream_seeds();
    return 0;
}
