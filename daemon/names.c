/* The name rule; see names.h. */
#include "daemon/names.h"

#include <ctype.h>
#include <string.h>

bool name_is_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > STORE_NAME_MAX || !isalnum((unsigned char)name[0])) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i])) return false;
    return true;
}
