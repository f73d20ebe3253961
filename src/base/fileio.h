/* fileio.h: the storage I/O seam.
 *
 * Every write, fsync and rename that durability depends on goes through these
 * functions, so that tests can inject short writes and fsync failures
 * (fileio_fault_set) and see that the caller reports QV_EIO and keeps its data
 * intact. Functions return qv_rc and name the path in the message. */
#ifndef QV_BASE_FILEIO_H
#define QV_BASE_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#include "quiver.h"

/* Writes all `n` bytes at the file position (retrying short writes and EINTR). */
qv_rc fileio_write_all(int fd, const void *p, size_t n, const char *path,
                       qv_err *err);
/* Reads exactly `n` bytes at `off`; QV_ECORRUPT if the file is shorter. */
qv_rc fileio_pread_all(int fd, void *p, size_t n, uint64_t off,
                       const char *path, qv_err *err);
qv_rc fileio_fsync(int fd, const char *path, qv_err *err);
/* fsyncs the directory so that a create, rename or unlink in it is durable. */
qv_rc fileio_fsync_dir(const char *dir, qv_err *err);
/* Writes `n` bytes to `path` atomically: a temporary file in the same
 * directory, fsync, rename over `path`, fsync of the directory. */
qv_rc fileio_write_atomic(const char *path, const void *p, size_t n,
                          qv_err *err);
/* Reads a whole file into a qv_malloc'd buffer (NUL-terminated for
 * convenience; *n excludes the NUL). QV_ENOTFOUND if it does not exist. */
qv_rc fileio_read_file(const char *path, char **out, size_t *n, qv_err *err);
/* mkdir -p; existing directories are fine. */
qv_rc fileio_mkdirs(const char *path, qv_err *err);
/* rm -rf; a missing path is fine. */
qv_rc fileio_remove_tree(const char *path, qv_err *err);
int fileio_exists(const char *path);

/* A read-only mapping of a whole file. */
typedef struct fileio_map {
  const unsigned char *p;
  size_t n;
} fileio_map;
qv_rc fileio_map_file(const char *path, fileio_map *out, qv_err *err);
void fileio_unmap(fileio_map *m);

/* Test hooks: make the `n`th write (or fsync) from now fail. A failing write
 * writes half its bytes first, as a full disk or a crash would. 0 disables. */
void fileio_fault_write_after(uint64_t n);
void fileio_fault_fsync_after(uint64_t n);

#endif
