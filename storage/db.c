/* Choosing a driver for a store target, and the change-notification calls every driver answers. */
#include <string.h>

#include "storage/db.h"

const db_ops *db_ops_for(const char *target)
{
    if (strncmp(target, "postgresql://", 13) == 0 || strncmp(target, "postgres://", 11) == 0) return &db_pg_ops;
    return &db_sqlite_ops;
}

int db_listen(db *d, const char *channel, clad_err *err) { return d->ops->listen(d, channel, err); }

int db_notify(db *d, const char *channel, const char *payload, clad_err *err)
{
    return d->ops->notify(d, channel, payload, err);
}

int db_notify_fd(db *d) { return d->ops->notify_fd(d); }

int db_drain(db *d, const char *channel) { return d->ops->drain(d, channel); }
