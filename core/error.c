/* Error codes and messages; see error.h. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *clad_code_name(int code)
{
    switch (code) {
    case CLAD_OK: return "ok";
    case CLAD_EINVAL: return "invalid_input";
    case CLAD_ENOMEM: return "out_of_memory";
    case CLAD_EIO: return "io_error";
    case CLAD_ENOTFOUND: return "not_found";
    case CLAD_ECONFLICT: return "conflict";
    case CLAD_ETOOLARGE: return "too_large";
    case CLAD_ECORRUPT: return "corrupt";
    case CLAD_EBUSY: return "busy";
    case CLAD_EFULL: return "disk_full";
    case CLAD_EVERSION: return "unsupported_version";
    case CLAD_EDENIED: return "denied";
    case CLAD_ECANCELLED: return "cancelled";
    case CLAD_EINTERNAL: return "internal";
    case CLAD_EMEDIA: return "unsupported_media_type";
    default: return "unknown";
    }
}

int clad_err_set(clad_err *err, int code, const char *fmt, ...)
{
    if (!err || err->code != 0) return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

void clad_err_prefix(clad_err *err, const char *fmt, ...)
{
    if (!err) return;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Built by hand: snprintf of two bounded strings into one trips -Wformat-truncation. */
    memcpy(old, err->msg, sizeof old);
    size_t np = strnlen(prefix, sizeof err->msg - 1);
    size_t no = strnlen(old, sizeof old);
    if (np + no > sizeof err->msg - 1) no = sizeof err->msg - 1 - np;
    memcpy(err->msg, prefix, np);
    memcpy(err->msg + np, old, no);
    err->msg[np + no] = '\0';
}
