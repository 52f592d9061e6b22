/* A minimal POSIX ustar archive writer and reader, for moving a directory of a few files (a PEFT adapter)
 * through one HTTP body: `curl ... | tar x` unpacks what clad writes, and `tar c` output is what clad reads.
 *
 * The writer emits one directory entry and regular files (mode 0644, mtime given), names up to 99 bytes.
 * The reader walks the archive checking every header's checksum and size against the buffer; it finds
 * regular files by their last path component, skips directories and pax/GNU extension records, and
 * refuses anything malformed with CLAD_EINVAL.
 */
#ifndef CLAD_IO_TAR_H
#define CLAD_IO_TAR_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define TAR_BLOCK 512

typedef struct tar_file {
    const char *name;   /* inside dir: "adapter_config.json" */
    const void *data;
    size_t len;
} tar_file;

/* dir/ and dir/<file> for each file, as a malloc'd archive. */
int tar_build(const char *dir, const tar_file *files, int n, int64_t mtime, uint8_t **out, size_t *len,
              clad_err *err);

/* The regular file whose last path component is `base` (the first one, in archive order). Points into
 * buf. CLAD_ENOTFOUND if absent. */
int tar_find(const void *buf, size_t len, const char *base, const uint8_t **data, size_t *size, clad_err *err);

#endif
