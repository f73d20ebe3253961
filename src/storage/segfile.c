/* segfile.c: writing and verifying sealed segment files; see segfile.h.
 * Owns the byte layout only; what rows mean is the engine's business. */
#include "storage/segfile.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"

#define SEG_MAGIC "QVSEG001"
#define SEG_VERSION 1u
#define SEG_HEADER_BYTES 512u
#define SEG_ALIGN 4096u
#define N_SECTIONS 6

enum { S_VECS, S_IDS, S_LSNS, S_POFF, S_PBLOB, S_TOMBS };
static const char *section_name[N_SECTIONS] = {
    "vectors", "ids", "lsns", "payload offsets", "payloads", "tombstones"};

typedef struct section {
  uint64_t off, size;
  uint32_t crc, pad;
} section;

typedef struct header {
  char magic[8];
  uint32_t version, dim, n_rows, n_tombs;
  uint64_t first_lsn, end_lsn;
  double build_seconds;
  section sec[N_SECTIONS];
} header;

_Static_assert(sizeof(header) + 4 <= SEG_HEADER_BYTES, "header fits");
_Static_assert(sizeof(qv_point_id) == 32, "on-disk id is 32 bytes");
_Static_assert(sizeof(segfile_tomb) == 40, "on-disk tombstone is 40 bytes");

static uint64_t align_up(uint64_t x) { return (x + SEG_ALIGN - 1) & ~(uint64_t)(SEG_ALIGN - 1); }

static qv_rc pad_to(int fd, uint64_t *pos, uint64_t target, const char *path,
                    qv_err *err) {
  static const char zeros[SEG_ALIGN];
  while (*pos < target) {
    size_t n = (size_t)(target - *pos);
    if (n > sizeof zeros) n = sizeof zeros;
    qv_rc rc = fileio_write_all(fd, zeros, n, path, err);
    if (rc != QV_OK) return rc;
    *pos += n;
  }
  return QV_OK;
}

qv_rc segfile_write(const char *path, const segfile_data *d, qv_err *err) {
  const void *ptr[N_SECTIONS] = {d->vecs, d->ids, d->lsns, d->payload_off,
                                 d->payload_blob, d->tombs};
  uint64_t size[N_SECTIONS] = {
      (uint64_t)d->n_rows * d->dim * sizeof(float),
      (uint64_t)d->n_rows * sizeof(qv_point_id),
      (uint64_t)d->n_rows * sizeof(uint64_t),
      ((uint64_t)d->n_rows + 1) * sizeof(uint64_t),
      d->payload_off[d->n_rows],
      (uint64_t)d->n_tombs * sizeof(segfile_tomb)};
  header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, SEG_MAGIC, 8);
  h.version = SEG_VERSION;
  h.dim = d->dim;
  h.n_rows = d->n_rows;
  h.n_tombs = d->n_tombs;
  h.first_lsn = d->first_lsn;
  h.end_lsn = d->end_lsn;
  h.build_seconds = d->build_seconds;
  uint64_t pos = align_up(SEG_HEADER_BYTES);
  for (int i = 0; i < N_SECTIONS; i++) {
    h.sec[i].off = pos;
    h.sec[i].size = size[i];
    h.sec[i].crc = size[i] ? crc32c(ptr[i], size[i]) : 0;
    pos = align_up(pos + size[i]);
  }
  unsigned char hbuf[SEG_HEADER_BYTES];
  memset(hbuf, 0, sizeof hbuf);
  memcpy(hbuf, &h, sizeof h);
  uint32_t hcrc = crc32c(hbuf, SEG_HEADER_BYTES - 4);
  memcpy(hbuf + SEG_HEADER_BYTES - 4, &hcrc, 4);

  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return qv_err_set(err, QV_EINVAL, "path too long: %s", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return qv_err_set(err, QV_EIO, "create %s: %m", tmp);
  uint64_t at = 0;
  qv_rc rc = fileio_write_all(fd, hbuf, sizeof hbuf, tmp, err);
  at = sizeof hbuf;
  for (int i = 0; rc == QV_OK && i < N_SECTIONS; i++) {
    rc = pad_to(fd, &at, h.sec[i].off, tmp, err);
    if (rc == QV_OK && size[i]) {
      rc = fileio_write_all(fd, ptr[i], size[i], tmp, err);
      at += size[i];
    }
  }
  if (rc == QV_OK) rc = fileio_fsync(fd, tmp, err);
  close(fd);
  if (rc == QV_OK && rename(tmp, path) != 0)
    rc = qv_err_set(err, QV_EIO, "rename %s: %m", tmp);
  if (rc != QV_OK) {
    unlink(tmp);
    return rc;
  }
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash != NULL) *slash = 0;
  return fileio_fsync_dir(slash ? dir : ".", err);
}

qv_rc segfile_open(const char *path, uint32_t expect_dim, fileio_map *map,
                   segfile_data *out, qv_err *err) {
  qv_rc rc = fileio_map_file(path, map, err);
  if (rc != QV_OK) return rc;
  const unsigned char *p = map->p;
  header h;
  if (map->n < SEG_HEADER_BYTES) {
    rc = QV_CORRUPT(err, "segment %s: %zu bytes, shorter than its header", path,
                    map->n);
    goto fail;
  }
  memcpy(&h, p, sizeof h);
  uint32_t hcrc;
  memcpy(&hcrc, p + SEG_HEADER_BYTES - 4, 4);
  if (memcmp(h.magic, SEG_MAGIC, 8) != 0) {
    rc = QV_CORRUPT(err, "segment %s: bad magic", path);
    goto fail;
  }
  if (crc32c(p, SEG_HEADER_BYTES - 4) != hcrc) {
    rc = QV_CORRUPT(err, "segment %s: header checksum mismatch", path);
    goto fail;
  }
  if (h.version != SEG_VERSION) {
    rc = QV_CORRUPT(err, "segment %s: version %u, expected %u", path, h.version,
                    SEG_VERSION);
    goto fail;
  }
  if (h.dim != expect_dim) {
    rc = QV_CORRUPT(err, "segment %s: %u dimensions, collection has %u", path,
                    h.dim, expect_dim);
    goto fail;
  }
  uint64_t want[N_SECTIONS] = {(uint64_t)h.n_rows * h.dim * sizeof(float),
                               (uint64_t)h.n_rows * sizeof(qv_point_id),
                               (uint64_t)h.n_rows * sizeof(uint64_t),
                               ((uint64_t)h.n_rows + 1) * sizeof(uint64_t),
                               h.sec[S_PBLOB].size,
                               (uint64_t)h.n_tombs * sizeof(segfile_tomb)};
  for (int i = 0; i < N_SECTIONS; i++) {
    const section *s = &h.sec[i];
    if (s->size != want[i] || s->off % SEG_ALIGN != 0 || s->off > map->n ||
        s->size > map->n - s->off) {
      rc = QV_CORRUPT(err, "segment %s: %s section out of bounds", path,
                      section_name[i]);
      goto fail;
    }
    if (s->size && crc32c(p + s->off, s->size) != s->crc) {
      rc = QV_CORRUPT(err, "segment %s: %s checksum mismatch", path,
                      section_name[i]);
      goto fail;
    }
  }
  /* The file ends exactly where its last section does: a cut anywhere,
   * padding included, is noticed. */
  if (map->n != h.sec[S_TOMBS].off + h.sec[S_TOMBS].size) {
    rc = QV_CORRUPT(err, "segment %s: %zu bytes, expected %llu", path, map->n,
                    (unsigned long long)(h.sec[S_TOMBS].off + h.sec[S_TOMBS].size));
    goto fail;
  }
  const uint64_t *poff = (const uint64_t *)(p + h.sec[S_POFF].off);
  for (uint32_t i = 0; i < h.n_rows; i++)
    if (poff[i] > poff[i + 1]) {
      rc = QV_CORRUPT(err, "segment %s: payload offsets decrease at row %u",
                      path, i);
      goto fail;
    }
  if (poff[0] != 0 || poff[h.n_rows] != h.sec[S_PBLOB].size) {
    rc = QV_CORRUPT(err, "segment %s: payload offsets disagree with size", path);
    goto fail;
  }
  memset(out, 0, sizeof *out);
  out->dim = h.dim;
  out->n_rows = h.n_rows;
  out->n_tombs = h.n_tombs;
  out->first_lsn = h.first_lsn;
  out->end_lsn = h.end_lsn;
  out->build_seconds = h.build_seconds;
  out->vecs = (const float *)(p + h.sec[S_VECS].off);
  out->ids = (const qv_point_id *)(p + h.sec[S_IDS].off);
  out->lsns = (const uint64_t *)(p + h.sec[S_LSNS].off);
  out->payload_off = poff;
  out->payload_blob = (const char *)(p + h.sec[S_PBLOB].off);
  out->tombs = (const segfile_tomb *)(p + h.sec[S_TOMBS].off);
  return QV_OK;
fail:
  fileio_unmap(map);
  return rc;
}
