/* JSON text of a reply in one pass; see json_text.h. */
#include "daemon/json_text.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct text {
    char *buf;
    size_t len, cap;
    bool oom;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->oom) return;
    if (t->len + n + 2 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (t->len + n + 2 > cap) cap *= 2;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->oom = true;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
}

static void put_str(text *t, const char *s)
{
    put(t, s, strlen(s));
}

/* Escaped as jansson does without JSON_ENSURE_ASCII: quote, backslash and control characters. */
static void put_string(text *t, const char *s, size_t n)
{
    put(t, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(t, s + run, i - run);
        run = i + 1;
        char esc[8];
        switch (c) {
        case '"': put(t, "\\\"", 2); break;
        case '\\': put(t, "\\\\", 2); break;
        case '\b': put(t, "\\b", 2); break;
        case '\f': put(t, "\\f", 2); break;
        case '\n': put(t, "\\n", 2); break;
        case '\r': put(t, "\\r", 2); break;
        case '\t': put(t, "\\t", 2); break;
        default: put(t, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04X", c)); break;
        }
    }
    put(t, s + run, n - run);
    put(t, "\"", 1);
}

int json_text_float_digits(float f)
{
    /* Round-tripping is monotone in the digits, so a binary search finds the fewest. */
    char buf[32];
    int lo = 1, hi = 9;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        snprintf(buf, sizeof buf, "%.*g", mid, (double)f);
        if (strtof(buf, NULL) == f) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/* Does x hold a float32 exactly (and is not a whole number)? Such values went through float32. */
static bool holds_float(double x)
{
    return isfinite(x) && fabs(x) <= (double)FLT_MAX && (double)(float)x == x && x != floor(x);
}

/* As jansson writes a real: a '.' or an exponent always, no '+' or leading zeros in the exponent. */
static void put_real(text *t, double x)
{
    char buf[48];
    int digits = holds_float(x) ? json_text_float_digits((float)x) : 15;
    int n = snprintf(buf, sizeof buf - 2, "%.*g", digits, x);
    if (!strchr(buf, '.') && !strchr(buf, 'e')) {
        memcpy(buf + n, ".0", 3);
        n += 2;
    }
    char *e = strchr(buf, 'e');
    if (e) {
        char *start = e + 1, *end = e + 2;
        if (*start == '-') start++;
        while (*end == '0') end++;
        if (end != start) {
            memmove(start, end, (size_t)(buf + n - end) + 1);
            n -= (int)(end - start);
        }
    }
    put(t, buf, (size_t)n);
}

static void put_json(text *t, const json_t *j)
{
    char num[32];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *v;
        bool first = true;
        put(t, "{", 1);
        json_object_foreach((json_t *)j, key, v) {
            if (!first) put(t, ",", 1);
            first = false;
            put_string(t, key, strlen(key));
            put(t, ":", 1);
            put_json(t, v);
        }
        put(t, "}", 1);
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        put(t, "[", 1);
        json_array_foreach(j, i, v) {
            if (i) put(t, ",", 1);
            put_json(t, v);
        }
        put(t, "]", 1);
        break;
    }
    case JSON_STRING: put_string(t, json_string_value(j), json_string_length(j)); break;
    case JSON_INTEGER:
        put(t, num, (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(j)));
        break;
    case JSON_REAL: put_real(t, json_real_value(j)); break;
    case JSON_TRUE: put_str(t, "true"); break;
    case JSON_FALSE: put_str(t, "false"); break;
    case JSON_NULL: put_str(t, "null"); break;
    }
}

char *json_text_line(const json_t *j, size_t *len)
{
    text t = {0};
    put_json(&t, j);
    put(&t, "\n", 1);
    if (t.oom) {
        free(t.buf);
        return NULL;
    }
    t.buf[t.len] = '\0';
    *len = t.len;
    return t.buf;
}
