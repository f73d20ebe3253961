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

#define SEG_MAGIC "QVSEG002"
#define SEG_VERSION 2u
#define SEG_HEADER_BYTES 4096u
#define SEG_ALIGN 4096u
#define N_FIXED 5 /* ids, lsns, payload offsets, payloads, tombstones */
#define N_SECTIONS (2 * SEGFILE_SPACES_MAX + N_FIXED)

enum { S_IDS, S_LSNS, S_POFF, S_PBLOB, S_TOMBS };
static const char *fixed_name[N_FIXED] = {"ids", "lsns", "payload offsets", "payloads",
                                          "tombstones"};

typedef struct section {
  uint64_t off, size;
  uint32_t crc, pad;
} section;

typedef struct header {
  char magic[8];
  uint32_t version, n_spaces, n_rows, n_tombs;
  uint32_t dims[SEGFILE_SPACES_MAX];
  uint64_t first_lsn, end_lsn;
  double build_seconds;
  /* vectors of space i at 2i, presence at 2i+1, then the fixed ones */
  section sec[N_SECTIONS];
} header;

_Static_assert(sizeof(header) + 4 <= SEG_HEADER_BYTES, "header fits");
_Static_assert(sizeof(qv_point_id) == 32, "on-disk id is 32 bytes");
_Static_assert(sizeof(segfile_tomb) == 40, "on-disk tombstone is 40 bytes");

static uint32_t fixed(int which, uint32_t n_spaces) { return 2 * n_spaces + (uint32_t)which; }

static void section_label(uint32_t i, uint32_t n_spaces, char *buf, size_t cap) {
  if (i < 2 * n_spaces)
    snprintf(buf, cap, "%s of vector space %u", i % 2 ? "presence" : "vectors", i / 2);
  else
    snprintf(buf, cap, "%s", fixed_name[i - 2 * n_spaces]);
}

/* The size every section must have, from the header's counts. */
static void expected_sizes(const header *h, uint64_t *size) {
  for (uint32_t sp = 0; sp < h->n_spaces; sp++) {
    size[2 * sp] = (uint64_t)h->n_rows * h->dims[sp] * sizeof(float);
    size[2 * sp + 1] = h->n_rows;
  }
  size[fixed(S_IDS, h->n_spaces)] = (uint64_t)h->n_rows * sizeof(qv_point_id);
  size[fixed(S_LSNS, h->n_spaces)] = (uint64_t)h->n_rows * sizeof(uint64_t);
  size[fixed(S_POFF, h->n_spaces)] = ((uint64_t)h->n_rows + 1) * sizeof(uint64_t);
  size[fixed(S_PBLOB, h->n_spaces)] = h->sec[fixed(S_PBLOB, h->n_spaces)].size;
  size[fixed(S_TOMBS, h->n_spaces)] = (uint64_t)h->n_tombs * sizeof(segfile_tomb);
}

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
  if (d->n_spaces > SEGFILE_SPACES_MAX)
    return qv_err_set(err, QV_EINVAL, "segment %s: %u vector spaces", path, d->n_spaces);
  header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, SEG_MAGIC, 8);
  h.version = SEG_VERSION;
  h.n_spaces = d->n_spaces;
  memcpy(h.dims, d->dims, sizeof h.dims);
  h.n_rows = d->n_rows;
  h.n_tombs = d->n_tombs;
  h.first_lsn = d->first_lsn;
  h.end_lsn = d->end_lsn;
  h.build_seconds = d->build_seconds;
  h.sec[fixed(S_PBLOB, d->n_spaces)].size = d->payload_off[d->n_rows];
  uint64_t size[N_SECTIONS] = {0};
  expected_sizes(&h, size);
  const void *ptr[N_SECTIONS] = {0};
  for (uint32_t sp = 0; sp < d->n_spaces; sp++) {
    ptr[2 * sp] = d->vecs[sp];
    ptr[2 * sp + 1] = d->present[sp];
  }
  ptr[fixed(S_IDS, d->n_spaces)] = d->ids;
  ptr[fixed(S_LSNS, d->n_spaces)] = d->lsns;
  ptr[fixed(S_POFF, d->n_spaces)] = d->payload_off;
  ptr[fixed(S_PBLOB, d->n_spaces)] = d->payload_blob;
  ptr[fixed(S_TOMBS, d->n_spaces)] = d->tombs;
  uint32_t n_sec = 2 * d->n_spaces + N_FIXED;
  uint64_t pos = align_up(SEG_HEADER_BYTES);
  for (uint32_t i = 0; i < n_sec; i++) {
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
  for (uint32_t i = 0; rc == QV_OK && i < n_sec; i++) {
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

qv_rc segfile_open(const char *path, const uint32_t *expect_dims,
                   uint32_t n_expect, fileio_map *map, segfile_data *out,
                   qv_err *err) {
  qv_rc rc = fileio_map_file(path, map, err);
  if (rc != QV_OK) return rc;
  const unsigned char *p = map->p;
  header h;
  char label[64];
  if (map->n < SEG_HEADER_BYTES) {
    rc = QV_CORRUPT(err, "segment %s: %zu bytes, shorter than its header", path, map->n);
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
    rc = QV_CORRUPT(err, "segment %s: version %u, expected %u", path, h.version, SEG_VERSION);
    goto fail;
  }
  if (h.n_spaces != n_expect) {
    rc = QV_CORRUPT(err, "segment %s: %u vector spaces, collection has %u", path, h.n_spaces,
                    n_expect);
    goto fail;
  }
  for (uint32_t sp = 0; sp < h.n_spaces; sp++)
    if (h.dims[sp] != expect_dims[sp]) {
      rc = QV_CORRUPT(err, "segment %s: vector space %u has %u dimensions, collection has %u",
                      path, sp, h.dims[sp], expect_dims[sp]);
      goto fail;
    }
  uint64_t want[N_SECTIONS] = {0};
  expected_sizes(&h, want);
  uint32_t n_sec = 2 * h.n_spaces + N_FIXED;
  for (uint32_t i = 0; i < n_sec; i++) {
    const section *s = &h.sec[i];
    if (s->size != want[i] || s->off % SEG_ALIGN != 0 || s->off > map->n ||
        s->size > map->n - s->off) {
      section_label(i, h.n_spaces, label, sizeof label);
      rc = QV_CORRUPT(err, "segment %s: %s section out of bounds", path, label);
      goto fail;
    }
    if (s->size && crc32c(p + s->off, s->size) != s->crc) {
      section_label(i, h.n_spaces, label, sizeof label);
      rc = QV_CORRUPT(err, "segment %s: %s checksum mismatch", path, label);
      goto fail;
    }
  }
  /* The file ends exactly where its last section does: a cut anywhere,
   * padding included, is noticed. */
  const section *last = &h.sec[n_sec - 1];
  if (map->n != last->off + last->size) {
    rc = QV_CORRUPT(err, "segment %s: %zu bytes, expected %llu", path, map->n,
                    (unsigned long long)(last->off + last->size));
    goto fail;
  }
  const uint64_t *poff = (const uint64_t *)(p + h.sec[fixed(S_POFF, h.n_spaces)].off);
  uint64_t blob = h.sec[fixed(S_PBLOB, h.n_spaces)].size;
  for (uint32_t i = 0; i < h.n_rows; i++)
    if (poff[i] > poff[i + 1]) {
      rc = QV_CORRUPT(err, "segment %s: payload offsets decrease at row %u", path, i);
      goto fail;
    }
  if (poff[0] != 0 || poff[h.n_rows] != blob) {
    rc = QV_CORRUPT(err, "segment %s: payload offsets disagree with size", path);
    goto fail;
  }
  memset(out, 0, sizeof *out);
  out->n_spaces = h.n_spaces;
  memcpy(out->dims, h.dims, sizeof out->dims);
  for (uint32_t sp = 0; sp < h.n_spaces; sp++) {
    out->vecs[sp] = (const float *)(p + h.sec[2 * sp].off);
    out->present[sp] = p + h.sec[2 * sp + 1].off;
  }
  out->n_rows = h.n_rows;
  out->n_tombs = h.n_tombs;
  out->first_lsn = h.first_lsn;
  out->end_lsn = h.end_lsn;
  out->build_seconds = h.build_seconds;
  out->ids = (const qv_point_id *)(p + h.sec[fixed(S_IDS, h.n_spaces)].off);
  out->lsns = (const uint64_t *)(p + h.sec[fixed(S_LSNS, h.n_spaces)].off);
  out->payload_off = poff;
  out->payload_blob = (const char *)(p + h.sec[fixed(S_PBLOB, h.n_spaces)].off);
  out->tombs = (const segfile_tomb *)(p + h.sec[fixed(S_TOMBS, h.n_spaces)].off);
  return QV_OK;
fail:
  fileio_unmap(map);
  return rc;
}
