/* ustar writer and reader; see tar.h. Header layout (POSIX.1-1988 ustar): name 0..99, mode 100, uid 108,
 * gid 116, size 124 (12 octal), mtime 136, chksum 148 (8), typeflag 156, linkname 157, magic 257
 * ("ustar\0"), version 263 ("00"), uname 265, gname 297, devmajor 329, devminor 337, prefix 345..499. */
#include "io/tar.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t round_block(size_t n)
{
    return (n + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
}

static unsigned header_sum(const uint8_t *h)
{
    unsigned s = 0;
    for (int i = 0; i < TAR_BLOCK; i++) s += (i >= 148 && i < 156) ? (unsigned)' ' : h[i];
    return s;
}

/* An octal number right-aligned in a field of w bytes ending with NUL (values fit: sizes are checked). */
static void put_octal(uint8_t *p, int w, unsigned long long v)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%0*llo", w - 1, v);
    memcpy(p, tmp + strlen(tmp) - (size_t)(w - 1), (size_t)(w - 1));
    p[w - 1] = 0;
}

static void put_header(uint8_t *h, const char *name, char type, size_t size, int64_t mtime)
{
    memset(h, 0, TAR_BLOCK);
    snprintf((char *)h, 100, "%s", name);
    put_octal(h + 100, 8, type == '5' ? 0755u : 0644u);
    put_octal(h + 108, 8, 0);
    put_octal(h + 116, 8, 0);
    put_octal(h + 124, 12, size);
    put_octal(h + 136, 12, (unsigned long long)(mtime > 0 ? mtime : 0));
    h[156] = (uint8_t)type;
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    snprintf((char *)h + 265, 32, "clad");
    snprintf((char *)h + 297, 32, "clad");
    put_octal(h + 148, 7, header_sum(h));
    h[155] = ' ';
}

int tar_build(const char *dir, const tar_file *files, int n, int64_t mtime, uint8_t **out, size_t *len,
              clad_err *err)
{
    size_t total = TAR_BLOCK + 2 * TAR_BLOCK;
    for (int i = 0; i < n; i++) {
        if (strlen(dir) + 1 + strlen(files[i].name) > 99)
            return clad_err_set(err, CLAD_EINVAL, "tar: name '%s/%s' is longer than 99 bytes", dir, files[i].name);
        if (files[i].len >= (1ull << 33))
            return clad_err_set(err, CLAD_ETOOLARGE, "tar: '%s' is 8 GiB or more (ustar's limit)", files[i].name);
        total += TAR_BLOCK + round_block(files[i].len);
    }
    uint8_t *buf = calloc(1, total);
    if (!buf) return clad_err_set(err, CLAD_ENOMEM, "tar: out of memory for %zu bytes", total);
    char name[128];
    snprintf(name, sizeof name, "%s/", dir);
    put_header(buf, name, '5', 0, mtime);
    size_t off = TAR_BLOCK;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s/%s", dir, files[i].name);
        put_header(buf + off, name, '0', files[i].len, mtime);
        off += TAR_BLOCK;
        if (files[i].len) memcpy(buf + off, files[i].data, files[i].len);
        off += round_block(files[i].len);
    }
    *out = buf;
    *len = total;
    return 0;
}

/* Octal field of width w (NUL- or space-terminated); false if malformed. */
static bool parse_octal(const uint8_t *p, int w, unsigned long long *v)
{
    int i = 0;
    while (i < w && p[i] == ' ') i++;
    if (i == w || p[i] < '0' || p[i] > '7') return false;
    *v = 0;
    for (; i < w && p[i] >= '0' && p[i] <= '7'; i++) {
        if (*v >> 60) return false;
        *v = *v * 8 + (unsigned)(p[i] - '0');
    }
    return i == w || p[i] == 0 || p[i] == ' ';
}

static bool is_zero_block(const uint8_t *h)
{
    for (int i = 0; i < TAR_BLOCK; i++)
        if (h[i]) return false;
    return true;
}

int tar_find(const void *buf, size_t len, const char *base, const uint8_t **data, size_t *size, clad_err *err)
{
    const uint8_t *b = buf;
    size_t off = 0;
    while (off + TAR_BLOCK <= len) {
        const uint8_t *h = b + off;
        if (is_zero_block(h)) break;
        unsigned long long sum, fsize;
        if (!parse_octal(h + 148, 8, &sum) || sum != header_sum(h))
            return clad_err_set(err, CLAD_EINVAL, "tar: bad header checksum at byte %zu (not a tar archive?)", off);
        if (!parse_octal(h + 124, 12, &fsize) || fsize > len - off - TAR_BLOCK)
            return clad_err_set(err, CLAD_EINVAL, "tar: entry at byte %zu claims %llu bytes past the end", off, fsize);
        char name[260];
        /* ustar splits long names into prefix "/" name. */
        if (h[345]) snprintf(name, sizeof name, "%.155s/%.100s", (const char *)h + 345, (const char *)h);
        else snprintf(name, sizeof name, "%.100s", (const char *)h);
        const char *slash = strrchr(name, '/'), *last = slash ? slash + 1 : name;
        char type = (char)h[156];
        if ((type == '0' || type == '\0') && !strcmp(last, base)) {
            *data = h + TAR_BLOCK;
            *size = (size_t)fsize;
            return 0;
        }
        off += TAR_BLOCK + round_block((size_t)fsize);
    }
    return clad_err_set(err, CLAD_ENOTFOUND, "tar: the archive has no file '%s'", base);
}
