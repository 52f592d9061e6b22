/* Daemon log lines on stderr, with levels.
 *
 * Under systemd (stderr connected to the journal, detected through JOURNAL_STREAM) each line starts with
 * the sd-daemon priority prefix ("<4>") so journald records the level and adds its own timestamp.
 * Otherwise a line reads "2025-01-31T12:00:00.123Z cladd[42] warning: message". Lines below the current
 * level are dropped. Only the loop thread logs; worker threads report through their job instead.
 * The wall clock that stamps the lines is here too, for the daemon's other wall times.
 */
#ifndef CLAD_DAEMON_LOG_H
#define CLAD_DAEMON_LOG_H

#include <stdint.h>

/* Levels are syslog priorities, so they map directly onto journald's. */
enum {
    LOG_LEVEL_ERROR = 3,
    LOG_LEVEL_WARNING = 4,
    LOG_LEVEL_INFO = 6,
    LOG_LEVEL_DEBUG = 7,
};

/* Sets the threshold: lines with a level above it (less severe) are dropped. Default LOG_LEVEL_INFO. */
void log_set_level(int level);
int log_get_level(void);

/* "error", "warning", "info", "debug" -> level; -1 for anything else. */
int log_level_parse(const char *name);
const char *log_level_name(int level);

/* Writes one line (a trailing newline is added; embedded newlines are replaced by spaces so one event
 * stays one journal entry). */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

/* The wall clock (CLOCK_REALTIME), which times shown to people and stored in the database use: seconds
 * since the epoch, and whole milliseconds. Any thread. */
double wall_now(void);
int64_t wall_ms(void);

#endif
