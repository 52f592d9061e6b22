/* Errors shared by every module: a negative code from a small stable set, plus a message for people.
 *
 * Functions that can fail return 0 or a negative CLAD_E* code and, when given a non-NULL clad_err, fill it
 * with the same code and a message that names the problem ("safetensors: tensor 'x' ends at 812 past the
 * end of the data (800 bytes)"). The code words (clad_code_name) are part of the public API: the daemon
 * returns them in {"error": {"code": ...}}, so never rename one.
 */
#ifndef CLAD_CORE_ERROR_H
#define CLAD_CORE_ERROR_H

enum {
    CLAD_OK = 0,
    CLAD_EINVAL = -1,     /* "invalid_input": malformed or out-of-range input from a user */
    CLAD_ENOMEM = -2,     /* "out_of_memory" */
    CLAD_EIO = -3,        /* "io_error": a read or write of a file failed */
    CLAD_ENOTFOUND = -4,  /* "not_found": unknown name, version or id */
    CLAD_ECONFLICT = -5,  /* "conflict": the request contradicts current state */
    CLAD_ETOOLARGE = -6,  /* "too_large": a size over a limit */
    CLAD_ECORRUPT = -7,   /* "corrupt": stored data fails its checks (hash, integrity) */
    CLAD_EBUSY = -8,      /* "busy": try again later */
    CLAD_EFULL = -9,      /* "disk_full" */
    CLAD_EVERSION = -10,  /* "unsupported_version": written by a newer clad */
    CLAD_EDENIED = -11,   /* "denied" */
    CLAD_ECANCELLED = -12,/* "cancelled" */
    CLAD_EINTERNAL = -13, /* "internal": a bug; the message says where */
    CLAD_EMEDIA = -14,    /* "unsupported_media_type" */
};

typedef struct clad_err {
    int code;
    char msg[512];
} clad_err;

/* Stable code word for a code ("invalid_input"); "unknown" for anything else. */
const char *clad_code_name(int code);

/* Fills err (if non-NULL) and returns code, so `return clad_err_set(err, CLAD_EINVAL, "...")` works.
 * If err already holds an error the first one wins, because it is closest to the cause. */
int clad_err_set(clad_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with context ("loading base 'b1': "). */
void clad_err_prefix(clad_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline void clad_err_clear(clad_err *err)
{
    if (err) { err->code = 0; err->msg[0] = '\0'; }
}

#endif
