/* tar.h: the POSIX ustar archives snapshots are made of.
 *
 * Writing streams regular files and directories into one archive file.
 * Reading extracts an archive under a directory and trusts nothing: header
 * checksums are verified, only regular files and directories are accepted,
 * and a member whose path is absolute, contains "..", or is longer than the
 * format allows is refused — an archive cannot write outside its target. */
#ifndef QV_STORAGE_TAR_H
#define QV_STORAGE_TAR_H

#include <stdint.h>

#include "quiver.h"

typedef struct tar_writer tar_writer;

qv_rc tar_create(const char *path, tar_writer **out, qv_err *err);
/* Adds `len` bytes of file `src` (from its start) as member `name`. The file
 * must hold at least `len` bytes. */
qv_rc tar_add_file(tar_writer *t, const char *name, const char *src, uint64_t len,
                   qv_err *err);
qv_rc tar_add_bytes(tar_writer *t, const char *name, const void *p, uint64_t len,
                    qv_err *err);
/* Writes the end-of-archive blocks, fsyncs and closes; then the archive is
 * complete. tar_abort closes and removes an unfinished one. */
qv_rc tar_finish(tar_writer *t, qv_err *err);
void tar_abort(tar_writer *t);

/* Extracts `path` under directory `dir` (which must exist). Every file is
 * fsynced. Errors: QV_ECORRUPT (naming the member and the problem), QV_EIO. */
qv_rc tar_extract(const char *path, const char *dir, qv_err *err);

#endif
