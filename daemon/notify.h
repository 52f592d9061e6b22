/* systemd integration and signals: sd_notify (READY, STATUS, WATCHDOG, RELOADING, STOPPING) and
 * SIGTERM/SIGINT/SIGHUP through uv_signal.
 *
 * Outside systemd (no NOTIFY_SOCKET) the notifications do nothing, so cladd runs the same in a terminal.
 * The watchdog timer runs only when systemd asks for it (WatchdogSec= sets WATCHDOG_USEC) and pings at
 * half the interval from the loop thread, so a loop that stops turning is restarted by systemd.
 * STATUS updates are coalesced to at most four a second (progress may come much faster); the newest
 * text always gets through.
 */
#ifndef CLAD_DAEMON_NOTIFY_H
#define CLAD_DAEMON_NOTIFY_H

#include <stdint.h>
#include <uv.h>

typedef struct notifier notifier;

typedef struct notify_callbacks {
    /* SIGTERM or SIGINT, the first time (later ones are only logged). */
    void (*on_stop)(int signum, void *data);
    /* SIGHUP. */
    void (*on_reload)(void *data);
    void *data;
} notify_callbacks;

/* Starts the signal watchers and, if systemd enabled it, the watchdog timer. Aborts on allocation
 * failure (startup only). */
notifier *notify_create(uv_loop_t *loop, const notify_callbacks *cb);

/* READY=1 with a status line. */
void notify_ready(notifier *n, const char *status);
/* STATUS=<text>, coalesced. */
void notify_status(notifier *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* RELOADING=1 before a reload, READY=1 after it. */
void notify_reloading(notifier *n);
void notify_reloaded(notifier *n, const char *status);
/* STOPPING=1 with a status line. */
void notify_stopping(notifier *n, const char *status);

/* Watchdog interval in microseconds (0 if disabled), for /v1/status. */
uint64_t notify_watchdog_usec(const notifier *n);

/* Stops the signal watchers and timers; the notifier is freed once its handles are closed (run the loop
 * after this). */
void notify_close(notifier *n);

#endif
