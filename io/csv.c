/* CSV datasets: one sample per line, the label first (see dataset_io.h for labels_optional), then the
 * features; commas; an optional header line; CRLF or LF; blank lines ignored. Two passes: the first checks
 * the shape of the table (so the allocation is sized from rows that really exist), the second parses the
 * numbers. Every error names the line (and column) at fault. */
#include "io/dataset_io.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct csv_line {
    const char *p;  /* without the line ending */
    size_t len;
    int lineno;     /* 1-based, counting every physical line */
} csv_line;

typedef struct csv_cursor {
    const char *buf;
    size_t len, pos;
    int lineno;
} csv_cursor;

/* Next line that is not blank; false at the end. */
static bool csv_next_line(csv_cursor *c, csv_line *out)
{
    while (c->pos < c->len) {
        const char *start = c->buf + c->pos;
        const char *nl = memchr(start, '\n', c->len - c->pos);
        size_t n = nl ? (size_t)(nl - start) : c->len - c->pos;
        c->pos += n + (nl ? 1 : 0);
        c->lineno++;
        if (n > 0 && start[n - 1] == '\r') n--;
        bool blank = true;
        for (size_t i = 0; i < n && blank; i++) blank = start[i] == ' ' || start[i] == '\t';
        if (blank) continue;
        out->p = start;
        out->len = n;
        out->lineno = c->lineno;
        return true;
    }
    return false;
}

static size_t csv_count_fields(const csv_line *l)
{
    size_t n = 1;
    for (size_t i = 0; i < l->len; i++) n += l->p[i] == ',';
    return n;
}

/* The field starting at *pos (trimmed of spaces and tabs); advances *pos past its comma. */
static void csv_field(const csv_line *l, size_t *pos, const char **f, size_t *flen)
{
    size_t s = *pos, e = s;
    while (e < l->len && l->p[e] != ',') e++;
    *pos = e + 1;
    while (s < e && (l->p[s] == ' ' || l->p[s] == '\t')) s++;
    while (e > s && (l->p[e - 1] == ' ' || l->p[e - 1] == '\t')) e--;
    *f = l->p + s;
    *flen = e - s;
}

/* Parses a decimal number that fills the whole field. Only digits, signs, '.', 'e' and 'E' are allowed, so
 * "nan", "inf" and hex floats are refused. 0 ok, 1 not a number, 2 out of range. */
static int csv_number(const char *f, size_t n, double *out)
{
    char tmp[128];
    if (n == 0 || n >= sizeof tmp) return 1;
    for (size_t i = 0; i < n; i++) {
        char c = f[i];
        if (!(isdigit((unsigned char)c) || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E')) return 1;
    }
    memcpy(tmp, f, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    double d = strtod(tmp, &end);
    if (end != tmp + n || end == tmp) return 1;
    if (errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL)) return 2;
    *out = d;
    return 0;
}

/* A field shown in a message: printable ASCII, at most 40 characters. */
static void csv_show(char *buf, size_t size, const char *f, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < size && i < 40; i++)
        buf[k++] = (f[i] >= 0x20 && f[i] < 0x7f) ? f[i] : '?';
    if (n > 40 && k + 4 < size) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
}

static bool is_label_name(const char *f, size_t n)
{
    if (n >= 2 && f[0] == '"' && f[n - 1] == '"') {
        f++;
        n -= 2;
    }
    static const char *const names[] = {"label", "labels", "y", "target", "class"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strlen(names[i]) == n && strncasecmp(f, names[i], n) == 0) return true;
    return false;
}

int dataset_parse_csv(dataset *out, const char *buf, size_t len, bool labels_optional, clad_err *err)
{
    memset(out, 0, sizeof *out);
    csv_cursor c = {buf, len, 0, 0};
    csv_line l;

    /* Pass 1: header, column count, row count. */
    bool header = false, label_named = false;
    size_t ncols = 0;
    int cols_line = 0, header_line = 0;
    long long nrows = 0;
    bool first = true;
    while (csv_next_line(&c, &l)) {
        size_t nf = csv_count_fields(&l);
        if (first) {
            first = false;
            const char *f;
            size_t fl, pos = 0;
            double d;
            csv_field(&l, &pos, &f, &fl);
            if (csv_number(f, fl, &d) == 1) {
                header = true;
                header_line = l.lineno;
                label_named = is_label_name(f, fl);
                ncols = nf;
                cols_line = l.lineno;
                continue;
            }
        }
        if (ncols == 0) {
            ncols = nf;
            cols_line = l.lineno;
        } else if (nf != ncols) {
            return clad_err_set(err, CLAD_EINVAL, "csv: line %d has %zu fields, expected %zu (as on %s %d)%s",
                                l.lineno, nf, ncols, header && cols_line == header_line ? "the header, line" : "line",
                                cols_line, header && cols_line == header_line ? "; line 1 was taken as a header "
                                "because its first field is not a number" : "");
        }
        if (++nrows > DATASET_MAX_SAMPLES)
            return clad_err_set(err, CLAD_ETOOLARGE, "csv: more than %d rows", DATASET_MAX_SAMPLES);
    }
    if (nrows == 0)
        return clad_err_set(err, CLAD_EINVAL, header ? "csv: a header line but no data rows"
                                                     : "csv: the input is empty (no data rows)");
    bool has_label = !labels_optional || label_named;
    size_t dim = ncols - (has_label ? 1 : 0);
    if (dim == 0)
        return clad_err_set(err, CLAD_EINVAL, "csv: line %d has a label but no features", cols_line);
    if (dim > DATASET_MAX_DIM)
        return clad_err_set(err, CLAD_ETOOLARGE, "csv: %zu features per row (limit %d)", dim, DATASET_MAX_DIM);

    /* Pass 2: numbers. Every field is at least one character plus a separator, so the allocation is
     * bounded by the input size. */
    int shape[1] = {(int)dim};
    int rc = dataset_init(out, (int)nrows, 1, shape, err);
    if (rc) return rc;
    c = (csv_cursor){buf, len, 0, 0};
    if (header) csv_next_line(&c, &l);
    int row = 0;
    while (csv_next_line(&c, &l)) {
        size_t pos = 0;
        float *x = out->x + (size_t)row * dim;
        for (size_t col = 0; col < ncols; col++) {
            const char *f;
            size_t fl;
            double d;
            csv_field(&l, &pos, &f, &fl);
            int nr = csv_number(f, fl, &d);
            char shown[64];
            if (nr != 0) {
                csv_show(shown, sizeof shown, f, fl);
                rc = clad_err_set(err, CLAD_EINVAL, "csv: line %d, column %zu: '%s' is %s", l.lineno, col + 1,
                                  shown, nr == 1 ? (fl ? "not a number" : "empty") : "out of range");
                goto fail;
            }
            if (has_label && col == 0) {
                if (d != floor(d) || d < 0 || d >= DATASET_MAX_CLASSES) {
                    csv_show(shown, sizeof shown, f, fl);
                    rc = clad_err_set(err, CLAD_EINVAL, "csv: line %d, column 1: label '%s' is not an integer in "
                                      "[0, %d)", l.lineno, shown, DATASET_MAX_CLASSES);
                    goto fail;
                }
                out->y[row] = (int)d;
                continue;
            }
            float v = (float)d;
            if (!isfinite(v)) {
                csv_show(shown, sizeof shown, f, fl);
                rc = clad_err_set(err, CLAD_EINVAL, "csv: line %d, column %zu: '%s' is out of range for a float",
                                  l.lineno, col + 1, shown);
                goto fail;
            }
            *x++ = v;
        }
        row++;
    }
    dataset_count_classes(out);
    return 0;

fail:
    dataset_finish(out);
    return rc;
}
