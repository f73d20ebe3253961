/* segfile.h: the file of a sealed segment.
 *
 * One file holds a segment's rows (vectors, ids, write LSNs, payloads) and its
 * tombstones. Layout (little-endian, sections 4096-byte aligned so the vector
 * array can be used in place from a read-only mapping):
 *
 *   header (4096 bytes): magic "QVSEG002", version, number of vector spaces
 *     and their dimensions, n_rows, n_tombs, first_lsn, end_lsn,
 *     build_seconds, then section descriptors {offset, size, crc32c}: per
 *     space its vectors (n_rows x dim floats, zero where absent) and its
 *     presence bytes (1 = the row has this vector), then ids, lsns, payload
 *     offsets, payload bytes, tombstones; then a CRC-32C of the header.
 *   sections, each at its offset; the file ends where the last one does.
 *
 * Written once to a temporary name, fsynced and renamed; never modified.
 * segfile_open checks every size and checksum before anything is trusted. */
#ifndef QV_STORAGE_SEGFILE_H
#define QV_STORAGE_SEGFILE_H

#include <stddef.h>
#include <stdint.h>

#include "base/fileio.h"
#include "quiver.h"

typedef struct segfile_tomb {
  qv_point_id id;
  uint64_t lsn;
} segfile_tomb;

#define SEGFILE_SPACES_MAX 17

typedef struct segfile_data {
  uint32_t n_spaces;
  uint32_t dims[SEGFILE_SPACES_MAX];
  const float *vecs[SEGFILE_SPACES_MAX];      /* n_rows * dims[s] */
  const uint8_t *present[SEGFILE_SPACES_MAX]; /* n_rows */
  uint32_t n_rows;
  uint32_t n_tombs;
  uint64_t first_lsn, end_lsn; /* the LSN range of writes the segment covers */
  double build_seconds;
  const qv_point_id *ids;      /* n_rows, padding zeroed */
  const uint64_t *lsns;        /* n_rows */
  const uint64_t *payload_off; /* n_rows + 1, payload i = blob[off[i], off[i+1]) */
  const char *payload_blob;
  const segfile_tomb *tombs; /* n_tombs */
} segfile_data;

/* Writes `d` to `path` durably (temporary file, fsync, rename, fsync dir). */
qv_rc segfile_write(const char *path, const segfile_data *d, qv_err *err);

/* Maps `path` and fills `out` with pointers into the mapping, which the
 * caller releases with fileio_unmap(map) once nothing uses them. Verifies
 * magic, version, that the spaces' dimensions equal `expect_dims[0 ..
 * n_expect)`, section bounds and every checksum.
 * Errors: QV_ECORRUPT naming the file and the check, QV_EIO. */
qv_rc segfile_open(const char *path, const uint32_t *expect_dims,
                   uint32_t n_expect, fileio_map *map, segfile_data *out,
                   qv_err *err);

#endif
