/* Daemon log lines; see log.h. */
#include "daemon/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int current_level = LOG_LEVEL_INFO;
static int journal_mode = -1; /* -1 until checked */

double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void log_set_level(int level) { current_level = level; }
int log_get_level(void) { return current_level; }

int log_level_parse(const char *name)
{
    if (!strcmp(name, "error")) return LOG_LEVEL_ERROR;
    if (!strcmp(name, "warning") || !strcmp(name, "warn")) return LOG_LEVEL_WARNING;
    if (!strcmp(name, "info")) return LOG_LEVEL_INFO;
    if (!strcmp(name, "debug")) return LOG_LEVEL_DEBUG;
    return -1;
}

const char *log_level_name(int level)
{
    switch (level) {
    case LOG_LEVEL_ERROR: return "error";
    case LOG_LEVEL_WARNING: return "warning";
    case LOG_LEVEL_INFO: return "info";
    case LOG_LEVEL_DEBUG: return "debug";
    default: return "log";
    }
}

/* JOURNAL_STREAM is "DEV:INODE" of the journal stream; it is inherited by children whose stderr may point
 * elsewhere, so it counts only when it matches our actual stderr. */
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    if (!js) return false;
    unsigned long long dev, ino;
    if (sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
    struct stat st;
    if (fstat(STDERR_FILENO, &st) != 0) return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_msg(int level, const char *fmt, ...)
{
    if (level > current_level) return;
    if (journal_mode < 0) journal_mode = stderr_is_journal();

    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';

    if (journal_mode) {
        fprintf(stderr, "<%d>%s\n", level, line);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        char when[32];
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
        fprintf(stderr, "%s.%03ldZ cladd[%ld] %s: %s\n", when, ts.tv_nsec / 1000000L, (long)getpid(),
                log_level_name(level), line);
    }
    fflush(stderr);
}
