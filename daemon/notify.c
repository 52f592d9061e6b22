/* sd_notify and signal handling; see notify.h. */
#include "daemon/notify.h"

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "daemon/log.h"

#define STATUS_MIN_INTERVAL_MS 250

struct notifier {
    uv_loop_t *loop;
    notify_callbacks cb;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t watchdog;
    uv_timer_t status_timer;
    uint64_t watchdog_usec;
    uint64_t last_status_ms;
    bool status_pending;
    bool stopping;
    int open_handles;
    char status[256];
};

static void notify_send(const char *msg)
{
    int rc = sd_notify(0, msg);
    if (rc < 0) log_debug("sd_notify(%s): %s", msg, strerror(-rc));
}

static void on_signal(uv_signal_t *s, int signum)
{
    notifier *n = s->data;
    if (signum == SIGHUP) {
        log_info("SIGHUP: reloading the configuration");
        if (n->cb.on_reload) n->cb.on_reload(n->cb.data);
        return;
    }
    if (n->stopping) {
        log_warning("%s: already stopping; waiting for running jobs to return", strsignal(signum));
        return;
    }
    n->stopping = true;
    log_info("%s: stopping", strsignal(signum));
    if (n->cb.on_stop) n->cb.on_stop(signum, n->cb.data);
}

static void on_watchdog(uv_timer_t *t)
{
    notify_send("WATCHDOG=1");
}

static void send_status(notifier *n)
{
    char msg[300];
    snprintf(msg, sizeof msg, "STATUS=%s", n->status);
    notify_send(msg);
    n->last_status_ms = uv_now(n->loop);
    n->status_pending = false;
}

static void on_status_timer(uv_timer_t *t)
{
    notifier *n = t->data;
    if (n->status_pending) send_status(n);
}

notifier *notify_create(uv_loop_t *loop, const notify_callbacks *cb)
{
    notifier *n = calloc(1, sizeof *n);
    if (!n) abort();
    n->loop = loop;
    n->cb = *cb;
    uv_signal_t *sigs[] = {&n->sig_term, &n->sig_int, &n->sig_hup};
    int nums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(loop, sigs[i]);
        sigs[i]->data = n;
        uv_signal_start(sigs[i], on_signal, nums[i]);
    }
    uv_timer_init(loop, &n->watchdog);
    uv_timer_init(loop, &n->status_timer);
    n->watchdog.data = n->status_timer.data = n;
    n->open_handles = 5;
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        n->watchdog_usec = usec;
        uint64_t ms = usec / 2000;
        if (ms == 0) ms = 1;
        uv_timer_start(&n->watchdog, on_watchdog, ms, ms);
        log_info("systemd watchdog every %llu ms", (unsigned long long)ms);
    }
    /* Signal handles must not keep the loop alive once everything else has stopped. */
    uv_unref((uv_handle_t *)&n->sig_term);
    uv_unref((uv_handle_t *)&n->sig_int);
    uv_unref((uv_handle_t *)&n->sig_hup);
    uv_unref((uv_handle_t *)&n->watchdog);
    return n;
}

void notify_ready(notifier *n, const char *status)
{
    snprintf(n->status, sizeof n->status, "%s", status);
    char msg[300];
    snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", status);
    notify_send(msg);
    n->last_status_ms = uv_now(n->loop);
}

void notify_status(notifier *n, const char *fmt, ...)
{
    char text[sizeof n->status];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    for (char *p = text; *p; p++)
        if (*p == '\n') *p = ' ';
    if (!strcmp(text, n->status)) return;
    memcpy(n->status, text, sizeof text);
    uint64_t now = uv_now(n->loop);
    if (now - n->last_status_ms >= STATUS_MIN_INTERVAL_MS) {
        send_status(n);
    } else if (!n->status_pending) {
        n->status_pending = true;
        uv_timer_start(&n->status_timer, on_status_timer, STATUS_MIN_INTERVAL_MS - (now - n->last_status_ms), 0);
    }
}

void notify_reloading(notifier *n)
{
    /* MONOTONIC_USEC lets systemd (Type=notify-reload, v253+) match the reload to its request. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[80];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000ull);
    notify_send(msg);
}

void notify_reloaded(notifier *n, const char *status)
{
    notify_ready(n, status);
}

void notify_stopping(notifier *n, const char *status)
{
    snprintf(n->status, sizeof n->status, "%s", status);
    char msg[300];
    snprintf(msg, sizeof msg, "STOPPING=1\nSTATUS=%s", status);
    notify_send(msg);
    n->status_pending = false;
    uv_timer_stop(&n->status_timer);
}

uint64_t notify_watchdog_usec(const notifier *n)
{
    return n->watchdog_usec;
}

static void on_closed(uv_handle_t *h)
{
    notifier *n = h->data;
    if (--n->open_handles == 0) free(n);
}

void notify_close(notifier *n)
{
    if (!n) return;
    uv_handle_t *hs[] = {(uv_handle_t *)&n->sig_term, (uv_handle_t *)&n->sig_int, (uv_handle_t *)&n->sig_hup,
                         (uv_handle_t *)&n->watchdog, (uv_handle_t *)&n->status_timer};
    for (int i = 0; i < 5; i++) uv_close(hs[i], on_closed);
}
