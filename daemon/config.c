/* cladd's configuration; see config.h for the file format and the keys. */
#include "daemon/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/sha256.h"
#include "daemon/log.h"
#include "daemon/names.h"

#define CONFIG_FILE_MAX (64 * 1024)

void config_init(cladd_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->log_level = LOG_LEVEL_INFO;
    cfg->max_body_bytes = 512ull << 20;
    cfg->max_header_bytes = 16u << 10;
    cfg->max_connections = 256;
    cfg->header_timeout_ms = 10000;
    cfg->idle_timeout_ms = 60000;
    cfg->body_timeout_ms = 30000;
    cfg->max_running_jobs = 1;
    cfg->compute_threads = 2;
    cfg->max_queued_jobs = 64;
    cfg->max_compute_queue = 256;
    cfg->job_history = 1000;
    cfg->job_lease_seconds = 10;
}

int config_parse_size(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s)) return CLAD_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return CLAD_EINVAL;
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k') shift = 10, end++;
    else if (*end == 'M' || *end == 'm') shift = 20, end++;
    else if (*end == 'G' || *end == 'g') shift = 30, end++;
    if (shift && (!strcmp(end, "iB") || !strcmp(end, "B"))) end += strlen(end);
    if (*end) return CLAD_EINVAL;
    if (shift && v > (UINT64_MAX >> shift)) return CLAD_EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

int config_parse_duration_ms(const char *s, uint32_t *out)
{
    if (!s || !isdigit((unsigned char)*s)) return CLAD_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return CLAD_EINVAL;
    unsigned long long mul;
    if (!strcmp(end, "ms")) mul = 1;
    else if (!strcmp(end, "s") || !*end) mul = 1000;
    else if (!strcmp(end, "min") || !strcmp(end, "m")) mul = 60000;
    else return CLAD_EINVAL;
    if (v > UINT32_MAX / mul) return CLAD_EINVAL;
    *out = (uint32_t)(v * mul);
    return 0;
}

/* Group and user names as POSIX portable names, so a typo cannot smuggle odd bytes into logs. */
static bool valid_name(const char *s)
{
    if (!*s || strlen(s) >= CONFIG_NAME_MAX) return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') return false;
    return *s != '-';
}

typedef enum { K_SIZE64, K_SIZE32, K_COUNT, K_DURATION, K_NAME, K_LOGLEVEL, K_DIRS, K_STORE, K_NODE } key_kind;

typedef struct {
    const char *key;
    key_kind kind;
    size_t offset;
    uint64_t min, max; /* bounds for numbers, in the stored unit */
} key_spec;

#define F(field) offsetof(cladd_config, field)
static const key_spec keys[] = {
    {"write_group", K_NAME, F(write_group), 0, 0},
    {"socket_group", K_NAME, F(socket_group), 0, 0},
    {"log_level", K_LOGLEVEL, F(log_level), 0, 0},
    {"max_body_bytes", K_SIZE64, F(max_body_bytes), 1, 1ull << 40},
    {"max_header_bytes", K_SIZE32, F(max_header_bytes), 1024, 1u << 20},
    {"max_connections", K_COUNT, F(max_connections), 1, 65536},
    {"header_timeout", K_DURATION, F(header_timeout_ms), 10, 3600000},
    {"idle_timeout", K_DURATION, F(idle_timeout_ms), 10, 86400000},
    {"body_timeout", K_DURATION, F(body_timeout_ms), 10, 3600000},
    {"max_running_jobs", K_COUNT, F(max_running_jobs), 1, 64},
    {"compute_threads", K_COUNT, F(compute_threads), 1, 64},
    {"engine_threads", K_COUNT, F(engine_threads), 0, 64},
    {"max_queued_jobs", K_COUNT, F(max_queued_jobs), 1, 100000},
    {"max_compute_queue", K_COUNT, F(max_compute_queue), 1, 100000},
    {"job_history", K_COUNT, F(job_history), 0, 1000000},
    {"job_lease_seconds", K_COUNT, F(job_lease_seconds), 1, 3600},
    {"data_dirs", K_DIRS, F(data_dirs), 0, 0},
    {"store", K_STORE, F(store), 0, 0},
    {"node_id", K_NODE, F(node_id), 0, 0},
};
#undef F

int config_set(cladd_config *cfg, const char *key, const char *value, clad_err *err)
{
    const key_spec *k = NULL;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!strcmp(keys[i].key, key)) k = &keys[i];
    if (!k) return clad_err_set(err, CLAD_EINVAL, "unknown key '%s'", key);

    char *field = (char *)cfg + k->offset;
    uint64_t v = 0;
    uint32_t ms = 0;
    switch (k->kind) {
    case K_NAME:
        if (*value && !valid_name(value))
            return clad_err_set(err, CLAD_EINVAL, "%s: '%s' is not a valid group name", key, value);
        snprintf(field, CONFIG_NAME_MAX, "%s", value);
        return 0;
    case K_DIRS:
        if (strlen(value) >= CONFIG_DATA_DIRS_MAX)
            return clad_err_set(err, CLAD_EINVAL, "%s: longer than %d bytes", key, CONFIG_DATA_DIRS_MAX - 1);
        for (const char *p = value; *p;) {
            size_t n = strcspn(p, ":");
            if (*p != '/')
                return clad_err_set(err, CLAD_EINVAL, "%s: '%.*s' is not an absolute directory path", key, (int)n, p);
            p += n;
            if (*p == ':') p++;
        }
        snprintf(field, CONFIG_DATA_DIRS_MAX, "%s", value);
        return 0;
    case K_STORE:
        if (strlen(value) >= CONFIG_STORE_MAX)
            return clad_err_set(err, CLAD_EINVAL, "%s: longer than %d bytes", key, CONFIG_STORE_MAX - 1);
        if (*value && *value != '/' && !config_store_is_postgres(value))
            return clad_err_set(err, CLAD_EINVAL, "%s: '%.64s' is neither an absolute file path nor a postgresql:// URI",
                                key, value);
        snprintf(field, CONFIG_STORE_MAX, "%s", value);
        return 0;
    case K_NODE:
        if (*value && !name_is_valid(value))
            return clad_err_set(err, CLAD_EINVAL, "%s: '%s' is not 1..64 of letters, digits, '.', '_', '-'", key, value);
        snprintf(field, CONFIG_NAME_MAX + 1, "%s", value);
        return 0;
    case K_LOGLEVEL: {
        int level = log_level_parse(value);
        if (level < 0)
            return clad_err_set(err, CLAD_EINVAL, "%s: '%s' is not one of error, warning, info, debug",
                                key, value);
        *(int *)field = level;
        return 0;
    }
    case K_DURATION:
        if (config_parse_duration_ms(value, &ms) != 0)
            return clad_err_set(err, CLAD_EINVAL, "%s: '%s' is not a duration such as 500ms, 10s or 2min",
                                key, value);
        v = ms;
        break;
    case K_SIZE64:
    case K_SIZE32:
        if (config_parse_size(value, &v) != 0)
            return clad_err_set(err, CLAD_EINVAL, "%s: '%s' is not a size such as 4096, 16K or 512M",
                                key, value);
        break;
    case K_COUNT: {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(value, &end, 10);
        if (!isdigit((unsigned char)*value) || *end || errno)
            return clad_err_set(err, CLAD_EINVAL, "%s: '%s' is not a whole number", key, value);
        v = n;
        break;
    }
    }
    if (v < k->min || v > k->max)
        return clad_err_set(err, CLAD_EINVAL, "%s: %s is outside %llu..%llu%s", key, value,
                            (unsigned long long)k->min, (unsigned long long)k->max,
                            k->kind == K_DURATION ? " ms" : k->kind == K_COUNT ? "" : " bytes");
    if (k->kind == K_SIZE64) *(uint64_t *)field = v;
    else *(uint32_t *)field = (uint32_t)v;
    return 0;
}

/* Is the resolved path inside one directory of the ':'-separated list? */
static bool inside_one_of(const char *list, const char *resolved)
{
    char dir[PATH_MAX], real[PATH_MAX];
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ":");
        if (n && n < sizeof dir) {
            memcpy(dir, p, n);
            dir[n] = '\0';
            size_t rn = realpath(dir, real) ? strlen(real) : 0;
            /* "/" as a data directory is allowed if the operator says so; it then has no '/' to add. */
            if (rn && !strncmp(resolved, real, rn) && (resolved[rn] == '/' || (rn == 1 && real[0] == '/')))
                return true;
        }
        p += n;
        if (*p == ':') p++;
    }
    return false;
}

bool config_data_path_allowed(const cladd_config *cfg, const char *path, char *resolved, size_t size)
{
    char real[PATH_MAX];
    struct stat st;
    if (!path || path[0] != '/' || !realpath(path, real) || stat(real, &st) != 0 || !S_ISREG(st.st_mode))
        return false;
    if (!inside_one_of(CONFIG_BUILTIN_DATA_DIRS, real) && !inside_one_of(cfg->data_dirs, real)) return false;
    return snprintf(resolved, size, "%s", real) < (int)size;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

int config_load_file(cladd_config *cfg, const char *path, clad_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f) return clad_err_set(err, CLAD_EIO, "config file %s: %s", path, strerror(errno));
    char *text = malloc(CONFIG_FILE_MAX + 1);
    if (!text) {
        fclose(f);
        return clad_err_set(err, CLAD_ENOMEM, "config file %s: out of memory", path);
    }
    size_t n = fread(text, 1, CONFIG_FILE_MAX + 1, f);
    int rerr = ferror(f);
    fclose(f);
    int rc = 0;
    if (rerr) {
        rc = clad_err_set(err, CLAD_EIO, "config file %s: read error", path);
        goto free_text;
    }
    if (n > CONFIG_FILE_MAX) {
        rc = clad_err_set(err, CLAD_ETOOLARGE, "config file %s is larger than %d bytes", path,
                          CONFIG_FILE_MAX);
        goto free_text;
    }
    text[n] = '\0';
    if (memchr(text, '\0', n)) {
        rc = clad_err_set(err, CLAD_EINVAL, "config file %s contains a NUL byte", path);
        goto free_text;
    }

    /* Parse into a copy so a bad line leaves the running configuration untouched. */
    cladd_config next = *cfg;
    int lineno = 0;
    for (char *line = text, *nl; line; line = nl) {
        nl = strchr(line, '\n');
        if (nl) *nl++ = '\0';
        lineno++;
        /* A comment starts at the first '#' outside double quotes. */
        bool quoted = false;
        for (char *p = line; *p; p++) {
            if (*p == '"') quoted = !quoted;
            else if (*p == '#' && !quoted) {
                *p = '\0';
                break;
            }
        }
        char *s = trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = clad_err_set(err, CLAD_EINVAL, "config file %s line %d: expected key = value", path,
                              lineno);
            goto free_text;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        size_t vl = strlen(value);
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
            value[vl - 1] = '\0';
            value++;
        }
        clad_err kerr = {0};
        if (config_set(&next, key, value, &kerr) != 0) {
            rc = clad_err_set(err, kerr.code, "config file %s line %d: %s", path, lineno, kerr.msg);
            goto free_text;
        }
    }
    *cfg = next;
free_text:
    free(text);
    return rc;
}

/* First entry of a ':'-separated list, or NULL when unset or empty. */
static const char *first_dir(const char *list, char *buf, size_t size)
{
    if (!list || !*list) return NULL;
    const char *colon = strchr(list, ':');
    size_t n = colon ? (size_t)(colon - list) : strlen(list);
    if (n == 0 || n >= size) return NULL;
    memcpy(buf, list, n);
    buf[n] = '\0';
    return buf;
}

static int set_path(char *dst, size_t size, clad_err *err, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int set_path(char *dst, size_t size, clad_err *err, const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) {
        dst[0] = '\0';
        return clad_err_set(err, CLAD_EINVAL, "%s path is longer than %zu bytes; use a shorter one", what,
                            size - 1);
    }
    return 0;
}

int config_resolve_paths(cladd_config *cfg, clad_err *err)
{
    char dir[PATH_MAX];
    int rc;
    if (!cfg->socket_path[0]) {
        const char *d;
        if ((d = first_dir(getenv("RUNTIME_DIRECTORY"), dir, sizeof dir))) {
            rc = set_path(cfg->socket_path, sizeof cfg->socket_path, err, "socket", "%s/clad.sock", d);
        } else if ((d = getenv("XDG_RUNTIME_DIR")) && *d == '/') {
            rc = set_path(cfg->socket_path, sizeof cfg->socket_path, err, "socket", "%s/clad/clad.sock", d);
            cfg->socket_dir_is_default = true;
        } else {
            rc = set_path(cfg->socket_path, sizeof cfg->socket_path, err, "socket", "/tmp/clad-%lu/clad.sock",
                          (unsigned long)getuid());
            cfg->socket_dir_is_default = true;
        }
        if (rc) return rc;
    }
    if (!cfg->state_dir[0]) {
        const char *d;
        if ((d = first_dir(getenv("STATE_DIRECTORY"), dir, sizeof dir))) {
            rc = set_path(cfg->state_dir, sizeof cfg->state_dir, err, "state", "%s", d);
        } else if ((d = getenv("XDG_STATE_HOME")) && *d == '/') {
            rc = set_path(cfg->state_dir, sizeof cfg->state_dir, err, "state", "%s/clad", d);
        } else if ((d = getenv("HOME")) && *d == '/') {
            rc = set_path(cfg->state_dir, sizeof cfg->state_dir, err, "state", "%s/.local/state/clad", d);
        } else {
            return clad_err_set(err, CLAD_EINVAL,
                                "no state directory: set --state-dir, STATE_DIRECTORY, XDG_STATE_HOME or HOME");
        }
        if (rc) return rc;
    }
    return 0;
}

bool config_store_is_postgres(const char *location)
{
    return !strncmp(location, "postgresql://", 13) || !strncmp(location, "postgres://", 11);
}

void config_store_redacted(const char *location, char *out, size_t size)
{
    if (!config_store_is_postgres(location)) {
        snprintf(out, size, "%s", location);
        return;
    }
    /* Copied piece by piece: "user:" then "***" for what stood up to '@'; "password=" then "***" for what
     * stood up to the next '&'. */
    const char *auth = strstr(location, "://") + 3;
    const char *at = strchr(auth, '@'), *slash = strchr(auth, '/');
    const char *colon = at && (!slash || at < slash) ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    size_t n = 0;
    for (const char *p = location; *p && n + 1 < size;) {
        if (p == colon) {
            n += (size_t)snprintf(out + n, size - n, ":***");
            p = at;
        } else if (!strncmp(p, "password=", 9) && p > location && (p[-1] == '?' || p[-1] == '&')) {
            n += (size_t)snprintf(out + n, size - n, "password=***");
            p += 9 + strcspn(p + 9, "&");
        } else {
            out[n++] = *p++;
        }
        if (n >= size) n = size - 1;
    }
    out[n] = '\0';
}

void config_default_node_id(const char *state_dir, char *out, size_t size)
{
    char host[256] = "";
    if (gethostname(host, sizeof host) != 0 || !host[0]) snprintf(host, sizeof host, "node");
    host[sizeof host - 1] = '\0';
    char clean[56];
    size_t n = 0;
    for (const char *p = host; *p && n < sizeof clean - 1; p++)
        if (isalnum((unsigned char)*p) || *p == '.' || *p == '-') clean[n++] = *p;
    clean[n] = '\0';
    if (!n || !isalnum((unsigned char)clean[0])) snprintf(clean, sizeof clean, "node");
    char real[PATH_MAX], hex[SHA256_HEX_SIZE];
    const char *dir = realpath(state_dir, real) ? real : state_dir;
    sha256_hex(dir, strlen(dir), hex);
    snprintf(out, size, "%s-%.8s", clean, hex);
}
