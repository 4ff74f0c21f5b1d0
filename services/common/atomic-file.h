/* SPDX-License-Identifier: MIT */
#pragma once

/* Files that are either wholly old or wholly new, whatever happens: the content goes to a temporary
 * file beside the target, which is flushed, renamed over the target, and then the directory is flushed
 * so that the rename itself survives a power cut. */

#include <stddef.h>
#include <sys/types.h>

/* Writes len bytes to path with the given mode (the umask does not apply). The directory must exist. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* The same relative to a directory fd (name must not contain '/'). */
int write_file_atomic_at(int dir_fd, const char *name, const void *data, size_t len, mode_t mode);

/* Reads a whole regular file (at most max_size bytes, else -EFBIG). The buffer is NUL-terminated
 * (the terminator is not counted in *ret_len). ret_len may be NULL. */
int read_file_full(const char *path, size_t max_size, char **ret, size_t *ret_len);
int read_file_full_at(int dir_fd, const char *name, size_t max_size, char **ret, size_t *ret_len);

/* Creates a directory and its parents as needed (mode for the ones created); 0 if it exists. */
int mkdir_parents(const char *path, mode_t mode);
