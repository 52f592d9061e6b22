/* Whole-file reads and gunzip into memory, both bounded by a caller's limit (see dataset_io.h). */
#include "io/dataset_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Deflate cannot expand data by more than about 1032:1, so an honest gzip stream of n bytes never inflates
 * to more than this; used only to cap the size hint in the gzip trailer, which a forger controls. */
#define GZIP_MAX_RATIO 1032

static int errno_code(int e)
{
    if (e == ENOENT || e == ENOTDIR) return CLAD_ENOTFOUND;
    if (e == EACCES || e == EPERM) return CLAD_EDENIED;
    if (e == ENOMEM) return CLAD_ENOMEM;
    return CLAD_EIO;
}

int file_read_all(const char *path, size_t max_bytes, uint8_t **out, size_t *len, clad_err *err)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return clad_err_set(err, errno_code(e), "cannot open '%s': %s", path, strerror(e));
    }
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        rc = clad_err_set(err, errno_code(e), "cannot stat '%s': %s", path, strerror(e));
        goto close_fd;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = clad_err_set(err, CLAD_EINVAL, "'%s' is a directory, not a file", path);
        goto close_fd;
    }
    if (S_ISREG(st.st_mode) && (unsigned long long)st.st_size > max_bytes) {
        rc = clad_err_set(err, CLAD_ETOOLARGE, "'%s' is %lld bytes, over the limit of %zu bytes", path,
                          (long long)st.st_size, max_bytes);
        goto close_fd;
    }
    /* A regular file's size is only a hint (it may grow while we read); pipes have none. One byte past the
     * limit is read so "exactly max_bytes" and "more" can be told apart. */
    size_t limit = max_bytes < SIZE_MAX - 1 ? max_bytes + 1 : max_bytes;
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
    if (cap > limit) cap = limit;
    if (cap == 0) cap = 1;
    uint8_t *buf = malloc(cap + 1);
    if (!buf) {
        rc = clad_err_set(err, CLAD_ENOMEM, "cannot allocate %zu bytes to read '%s'", cap, path);
        goto close_fd;
    }
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= limit) break;
            size_t ncap = cap > limit / 2 ? limit : cap * 2;
            uint8_t *nb = realloc(buf, ncap + 1);
            if (!nb) {
                rc = clad_err_set(err, CLAD_ENOMEM, "cannot allocate %zu bytes to read '%s'", ncap, path);
                goto free_buf;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            rc = clad_err_set(err, errno_code(e), "cannot read '%s': %s", path, strerror(e));
            goto free_buf;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    if (n > max_bytes) {
        rc = clad_err_set(err, CLAD_ETOOLARGE, "'%s' is over the limit of %zu bytes", path, max_bytes);
        goto free_buf;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    close(fd);
    return 0;

free_buf:
    free(buf);
close_fd:
    close(fd);
    return rc;
}

static bool is_gzip(const uint8_t *p, size_t len)
{
    return len >= 2 && p[0] == 0x1f && p[1] == 0x8b;
}

/* One inflate call on the window [in+*pos_in, in+in_len) x [out+*produced, out+cap), advancing both.
 * zlib counts in uInt, so very large buffers are fed in pieces. */
static int inflate_step(z_stream *zs, const uint8_t *in, size_t in_len, size_t *pos_in, uint8_t *out,
                        size_t cap, size_t *produced, bool *progressed)
{
    size_t ai = in_len - *pos_in, ao = cap - *produced;
    if (ai > UINT_MAX) ai = UINT_MAX;
    if (ao > UINT_MAX) ao = UINT_MAX;
    zs->next_in = (Bytef *)(uintptr_t)(in + *pos_in);  /* zlib's API is not const-correct */
    zs->avail_in = (uInt)ai;
    zs->next_out = out + *produced;
    zs->avail_out = (uInt)ao;
    int zrc = inflate(zs, Z_NO_FLUSH);
    size_t used = ai - zs->avail_in, made = ao - zs->avail_out;
    *pos_in += used;
    *produced += made;
    *progressed = used > 0 || made > 0;
    return zrc;
}

/* Turns a zlib failure into a clad error. */
static int inflate_error(z_stream *zs, int zrc, bool input_done, clad_err *err)
{
    if (zrc == Z_MEM_ERROR) return clad_err_set(err, CLAD_ENOMEM, "gunzip: out of memory");
    if (zrc == Z_DATA_ERROR || zrc == Z_NEED_DICT || zrc == Z_STREAM_ERROR)
        return clad_err_set(err, CLAD_EINVAL, "gunzip: corrupt gzip data (%s)", zs->msg ? zs->msg : "bad stream");
    if (input_done) return clad_err_set(err, CLAD_EINVAL, "gunzip: gzip data is truncated");
    return clad_err_set(err, CLAD_EINVAL, "gunzip: gzip stream makes no progress (zlib code %d)", zrc);
}

int gunzip_buffer(const void *in_, size_t in_len, size_t max_out, uint8_t **out, size_t *out_len, clad_err *err)
{
    const uint8_t *in = in_;
    *out = NULL;
    *out_len = 0;
    if (!is_gzip(in, in_len)) return clad_err_set(err, CLAD_EINVAL, "gunzip: input is not gzip data");
    if (max_out >= SIZE_MAX - 1) max_out = SIZE_MAX - 2;
    size_t limit = max_out + 1;  /* one byte more than allowed, to detect "too large" */

    /* First allocation: the trailer's size hint (mod 2^32), trusted only up to what deflate could produce. */
    size_t hint = 65536;
    if (in_len >= 4) {
        const uint8_t *t = in + in_len - 4;
        hint = (size_t)t[0] | (size_t)t[1] << 8 | (size_t)t[2] << 16 | (size_t)t[3] << 24;
        hint += 1;
    }
    size_t ratio_cap = in_len < SIZE_MAX / GZIP_MAX_RATIO - 1024 ? in_len * GZIP_MAX_RATIO + 1024 : SIZE_MAX / 2;
    size_t cap = hint < ratio_cap ? hint : ratio_cap;
    if (cap > limit) cap = limit;
    if (cap < 64) cap = 64 < limit ? 64 : limit;

    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return clad_err_set(err, CLAD_ENOMEM, "gunzip: out of memory");
    int rc = 0;
    uint8_t *buf = malloc(cap + 1);
    if (!buf) {
        rc = clad_err_set(err, CLAD_ENOMEM, "gunzip: cannot allocate %zu bytes", cap);
        goto end_inflate;
    }
    size_t pos_in = 0, produced = 0;
    for (;;) {
        if (produced == cap) {
            if (cap >= limit) {
                rc = clad_err_set(err, CLAD_ETOOLARGE, "gunzip: data inflates to more than %zu bytes", max_out);
                goto free_buf;
            }
            size_t ncap = cap > limit / 2 ? limit : cap * 2;
            uint8_t *nb = realloc(buf, ncap + 1);
            if (!nb) {
                rc = clad_err_set(err, CLAD_ENOMEM, "gunzip: cannot allocate %zu bytes", ncap);
                goto free_buf;
            }
            buf = nb;
            cap = ncap;
        }
        bool progressed;
        int zrc = inflate_step(&zs, in, in_len, &pos_in, buf, cap, &produced, &progressed);
        if (produced > max_out) {
            rc = clad_err_set(err, CLAD_ETOOLARGE, "gunzip: data inflates to more than %zu bytes", max_out);
            goto free_buf;
        }
        if (zrc == Z_STREAM_END) {
            if (pos_in == in_len) break;
            /* gzip allows several members back to back (as `cat a.gz b.gz` makes). */
            if (is_gzip(in + pos_in, in_len - pos_in)) {
                inflateReset(&zs);
                continue;
            }
            rc = clad_err_set(err, CLAD_EINVAL, "gunzip: %zu bytes of trailing garbage after the gzip data",
                              in_len - pos_in);
            goto free_buf;
        }
        /* The buffer always has room when inflate is called, so no progress means the input ran out
         * (truncated) or the stream is stuck. */
        if ((zrc == Z_OK || zrc == Z_BUF_ERROR) && progressed) continue;
        rc = inflate_error(&zs, zrc, pos_in == in_len, err);
        goto free_buf;
    }
    buf[produced] = '\0';
    *out = buf;
    *out_len = produced;
    inflateEnd(&zs);
    return 0;

free_buf:
    free(buf);
end_inflate:
    inflateEnd(&zs);
    return rc;
}

int gunzip_prefix(const void *in_, size_t in_len, void *out, size_t want, size_t *got, clad_err *err)
{
    const uint8_t *in = in_;
    *got = 0;
    if (!is_gzip(in, in_len)) return clad_err_set(err, CLAD_EINVAL, "gunzip: input is not gzip data");
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return clad_err_set(err, CLAD_ENOMEM, "gunzip: out of memory");
    int rc = 0;
    size_t pos_in = 0, produced = 0;
    while (produced < want) {
        bool progressed;
        int zrc = inflate_step(&zs, in, in_len, &pos_in, out, want, &produced, &progressed);
        if (zrc == Z_STREAM_END) {
            if (pos_in < in_len && is_gzip(in + pos_in, in_len - pos_in)) {
                inflateReset(&zs);
                continue;
            }
            break;
        }
        if ((zrc == Z_OK || zrc == Z_BUF_ERROR) && progressed) continue;
        if (produced == want) break;
        rc = inflate_error(&zs, zrc, pos_in == in_len, err);
        break;
    }
    inflateEnd(&zs);
    *got = produced;
    return rc;
}
