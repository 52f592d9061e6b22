/* The name rule of bases, tasks and aliases, shared by the daemon and the clad CLI (which checks names
 * before it sends anything). Beyond libc it needs only store.h, for STORE_NAME_MAX. */
#ifndef CLAD_DAEMON_NAMES_H
#define CLAD_DAEMON_NAMES_H

#include <stdbool.h>

#include "storage/store.h"

/* 1..STORE_NAME_MAX (64) of [A-Za-z0-9._-], starting with a letter or digit. */
bool name_is_valid(const char *name);

/* The rule in words, for error messages ("1 to 64 letters, digits, ..."). */
#define NAME_STRINGIFY_(x) #x
#define NAME_STRINGIFY(x) NAME_STRINGIFY_(x)
#define NAME_RULE_TEXT "1 to " NAME_STRINGIFY(STORE_NAME_MAX) " letters, digits, '.', '_' or '-', starting with a letter or digit"

#endif
