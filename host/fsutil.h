/* Durable file-system helpers: atomic writes (temp, fsync, rename, fsync dir), directories. */
#ifndef FSUTIL_H
#define FSUTIL_H

#include <stddef.h>

#include "sf_err.h"

/* Writes len bytes to path atomically: path.tmp.<pid>, fsync, rename, fsync the directory. */
int fs_write_atomic(const char *path, const void *data, size_t len, sf_err *err);
/* mkdir -p; SF_EINPUT naming the path on failure. */
int fs_mkdirs(const char *path, sf_err *err);
int fs_fsync_dir(const char *dir, sf_err *err);
/* rm -rf (used to drop temp directories and old checkpoints). */
int fs_remove_tree(const char *path);
int fs_exists(const char *path);
int fs_is_dir(const char *path);
/* Reads a whole file into a malloc'd buffer (NUL-terminated). */
int fs_read_all(const char *path, char **data, size_t *len, sf_err *err);

#endif
