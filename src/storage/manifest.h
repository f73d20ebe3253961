/* manifest.h: the MANIFEST of a shard: which sealed segments make up the
 * shard, in write order, and the checkpoint LSN — every write with an LSN up
 * to it is in those segments, so the log is replayed from checkpoint + 1.
 *
 * Binary, little-endian: magic "QVMANIF1", version, checkpoint_lsn,
 * next_segment_id, n_segments, segment ids, CRC-32C of all before it.
 * Replaced atomically (write, fsync, rename, fsync dir). */
#ifndef QV_STORAGE_MANIFEST_H
#define QV_STORAGE_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "quiver.h"

#define MANIFEST_MAX_SEGMENTS 100000u

typedef struct manifest {
  uint64_t checkpoint_lsn;
  uint64_t next_segment_id;
  uint32_t n_segments;
  uint64_t *segment_ids; /* qv_malloc'd, in write order (oldest first) */
} manifest;

qv_rc manifest_write(const char *path, const manifest *m, qv_err *err);
/* Errors: QV_ENOTFOUND (no file), QV_ECORRUPT, QV_EIO, QV_ENOMEM. */
qv_rc manifest_read(const char *path, manifest *out, qv_err *err);
void manifest_free(manifest *m);

#endif
