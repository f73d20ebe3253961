/* hnsw_io.c: saving an HNSW graph to a checksummed file and mapping it back.
 *
 * Owns hnsw_save and hnsw_load and the file format (README.md). Does not
 * build or search. The level-0 section sits at offset 128, a multiple of 64,
 * and the upper section at a 64-byte boundary, so a mapped file is searched
 * in place with the same alignment as a built graph.
 *
 * Invariant: nothing from a file is trusted before it passes every check;
 * the checksum catches damage, and the structural checks (counts within
 * capacity, ids < n, upper-level neighbours present on that level, sizes
 * matching the shape) catch well-formed lies, so that a mapped graph can be
 * searched with no bounds checks in the hot loop. Every failure is
 * QV_ECORRUPT naming the file and the check. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "index/hnsw_int.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "hnsw files are little-endian and mapped in place"
#endif

#define HNSW_MAGIC "QVHNSW01"
#define HNSW_VERSION 1u
#define HEADER_BYTES 128u
#define TRAILER_BYTES 4u /* CRC-32C of every byte before it */

typedef struct file_header {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  uint32_t n, dim, metric, m;
  uint32_t ef_construct, max_level, entry, l0_stride;
  uint64_t l0_off, l0_bytes;
  uint64_t levels_off, levels_bytes;
  uint64_t up_off, up_bytes;
  uint64_t file_bytes;
  uint8_t reserved[24]; /* zero */
} file_header;

_Static_assert(sizeof(file_header) == HEADER_BYTES, "header is 128 bytes");

static uint64_t align64(uint64_t x) { return (x + 63) & ~(uint64_t)63; }

/* The one layout a graph of this shape may have; both sides compute it. */
static void layout(file_header *f, uint64_t n_up_slots) {
  f->l0_off = HEADER_BYTES;
  f->l0_bytes = (uint64_t)f->n * f->l0_stride * sizeof(uint32_t);
  f->levels_off = f->l0_off + f->l0_bytes;
  f->levels_bytes = f->n;
  f->up_off = align64(f->levels_off + f->levels_bytes);
  f->up_bytes = n_up_slots * (1 + (uint64_t)f->m) * sizeof(uint32_t);
  f->file_bytes = f->up_off + f->up_bytes + TRAILER_BYTES;
}

/* ---- save --------------------------------------------------------------- */

typedef struct writer {
  int fd;
  const char *path;
  uint32_t crc;
  uint64_t off;
} writer;

static qv_rc put(writer *w, const void *p, size_t n, qv_err *err) {
  w->crc = crc32c_extend(w->crc, p, n);
  w->off += n;
  return fileio_write_all(w->fd, p, n, w->path, err);
}

static qv_rc pad_to(writer *w, uint64_t off, qv_err *err) {
  static const unsigned char zeros[64];
  qv_rc rc = QV_OK;
  while (rc == QV_OK && w->off < off) {
    size_t n =
        off - w->off < sizeof zeros ? (size_t)(off - w->off) : sizeof zeros;
    rc = put(w, zeros, n, err);
  }
  return rc;
}

static void dir_of(const char *path, char *dir, size_t cap) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL) {
    snprintf(dir, cap, ".");
  } else if (slash == path) {
    snprintf(dir, cap, "/");
  } else {
    snprintf(dir, cap, "%.*s", (int)(slash - path), path);
  }
}

qv_rc hnsw_save(const hnsw *h, const char *path, qv_err *err) {
  file_header f;
  memset(&f, 0, sizeof f);
  memcpy(f.magic, HNSW_MAGIC, 8);
  f.version = HNSW_VERSION;
  f.header_bytes = HEADER_BYTES;
  f.n = h->n;
  f.dim = h->dim;
  f.metric = (uint32_t)h->metric;
  f.m = h->m;
  f.ef_construct = h->ef_construct;
  f.max_level = h->max_level;
  f.entry = h->entry;
  f.l0_stride = h->l0_stride;
  layout(&f, h->n_up_slots);

  char tmp[4096], dir[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return qv_err_set(err, QV_EIO, "hnsw %s: path too long", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return qv_err_set(err, QV_EIO, "hnsw: create %s: %s", tmp, strerror(errno));
  writer w = {.fd = fd, .path = tmp};
  qv_rc rc = put(&w, &f, sizeof f, err);
  if (rc == QV_OK) rc = put(&w, h->l0, f.l0_bytes, err);
  if (rc == QV_OK) rc = put(&w, h->levels, f.levels_bytes, err);
  if (rc == QV_OK) rc = pad_to(&w, f.up_off, err);
  if (rc == QV_OK && f.up_bytes > 0) rc = put(&w, h->up, f.up_bytes, err);
  if (rc == QV_OK) {
    uint32_t crc = w.crc;
    rc = put(&w, &crc, sizeof crc, err);
  }
  if (rc == QV_OK) rc = fileio_fsync(fd, tmp, err);
  if (close(fd) != 0 && rc == QV_OK)
    rc = qv_err_set(err, QV_EIO, "hnsw: close %s: %s", tmp, strerror(errno));
  if (rc == QV_OK && rename(tmp, path) != 0)
    rc = qv_err_set(err, QV_EIO, "hnsw: rename %s to %s: %s", tmp, path,
                    strerror(errno));
  if (rc != QV_OK) {
    unlink(tmp);
    return rc;
  }
  dir_of(path, dir, sizeof dir);
  return fileio_fsync_dir(dir, err);
}

/* ---- load --------------------------------------------------------------- */

static qv_rc check_header(const char *path, const file_header *f, size_t size,
                          qv_err *err) {
  if (memcmp(f->magic, HNSW_MAGIC, 8) != 0)
    return QV_CORRUPT(err, "hnsw %s: bad magic, not a graph file", path);
  if (f->version != HNSW_VERSION)
    return QV_CORRUPT(err, "hnsw %s: version %u, expected %u", path, f->version,
                      HNSW_VERSION);
  if (f->header_bytes != HEADER_BYTES)
    return QV_CORRUPT(err, "hnsw %s: header of %u bytes, expected %u", path,
                      f->header_bytes, HEADER_BYTES);
  if (f->file_bytes != size)
    return QV_CORRUPT(err, "hnsw %s: file is %zu bytes, header says %llu", path,
                      size, (unsigned long long)f->file_bytes);
  return QV_OK;
}

static qv_rc check_shape(const char *path, const file_header *f, uint32_t n,
                         uint32_t dim, vec_metric metric, qv_err *err) {
  if (f->n != n)
    return QV_CORRUPT(err, "hnsw %s: %u nodes, the segment has %u rows", path,
                      f->n, n);
  if (f->dim != dim)
    return QV_CORRUPT(err, "hnsw %s: dim %u, the segment has %u", path, f->dim,
                      dim);
  if (f->metric != (uint32_t)metric)
    return QV_CORRUPT(err, "hnsw %s: metric %u, the segment uses %u", path,
                      f->metric, (unsigned)metric);
  if (f->m < HNSW_M_MIN || f->m > HNSW_M_MAX || f->l0_stride != 1 + 2 * f->m)
    return QV_CORRUPT(err, "hnsw %s: m = %u with level-0 stride %u", path, f->m,
                      f->l0_stride);
  if (f->max_level > HNSW_LEVEL_MAX || f->entry >= n)
    return QV_CORRUPT(err, "hnsw %s: entry %u at level %u out of range", path,
                      f->entry, f->max_level);
  return QV_OK;
}

/* Checks one list: count within cap, ids < n, on level lc or above. */
static bool list_ok(const hnsw *h, const uint32_t *l, uint32_t cap,
                    uint32_t lc) {
  if (l[0] > cap) return false;
  for (uint32_t i = 0; i < l[0]; i++) {
    uint32_t id = l[1 + i];
    if (id >= h->n || h->levels[id] < lc) return false;
  }
  return true;
}

static qv_rc check_graph(const char *path, const hnsw *h, qv_err *err) {
  if (h->levels[h->entry] != h->max_level)
    return QV_CORRUPT(err, "hnsw %s: entry %u is on level %u, not the top %u",
                      path, h->entry, h->levels[h->entry], h->max_level);
  for (uint32_t r = 0; r < h->n; r++) {
    if (!list_ok(h, hnsw_l0_list(h, r), 2 * h->m, 0))
      return QV_CORRUPT(err,
                        "hnsw %s: level-0 list of node %u has a bad "
                        "count or neighbour id",
                        path, r);
    for (uint32_t lc = 1; lc <= h->levels[r]; lc++)
      if (!list_ok(h, hnsw_up_list(h, r, lc), h->m, lc))
        return QV_CORRUPT(err,
                          "hnsw %s: level-%u list of node %u has a bad "
                          "count or neighbour id",
                          path, lc, r);
  }
  return QV_OK;
}

qv_rc hnsw_load(const char *path, const float *vecs, uint32_t n, uint32_t dim,
                vec_metric metric, hnsw **out, qv_err *err) {
  if (vecs == NULL || n == 0 || dim == 0)
    return qv_err_set(err, QV_EINVAL,
                      "hnsw %s: need vectors (n = %u, dim = %u)", path, n, dim);
  fileio_map map = {0};
  qv_rc rc = fileio_map_file(path, &map, err);
  if (rc != QV_OK) return rc;
  hnsw *h = NULL;
  file_header f;
  if (map.n < HEADER_BYTES + TRAILER_BYTES) {
    rc = QV_CORRUPT(err, "hnsw %s: %zu bytes, shorter than a header", path,
                    map.n);
    goto out;
  }
  memcpy(&f, map.p, sizeof f);
  rc = check_header(path, &f, map.n, err);
  if (rc != QV_OK) goto out;
  uint32_t stored, crc = crc32c(map.p, map.n - TRAILER_BYTES);
  memcpy(&stored, map.p + map.n - TRAILER_BYTES, sizeof stored);
  if (stored != crc) {
    rc = QV_CORRUPT(err,
                    "hnsw %s: checksum mismatch (stored %08x, computed "
                    "%08x)",
                    path, stored, crc);
    goto out;
  }
  rc = check_shape(path, &f, n, dim, metric, err);
  if (rc != QV_OK) goto out;

  rc = hnsw_alloc_shell(vecs, n, dim, metric, f.m, &h, err);
  if (rc != QV_OK) goto out;
  h->ef_construct = f.ef_construct;
  h->max_level = f.max_level;
  h->entry = f.entry;
  /* The levels section's place depends only on n and m; check it is inside
   * the file before reading it to size the rest. */
  file_header want = f;
  layout(&want, 0);
  if (want.levels_off + want.levels_bytes > map.n - TRAILER_BYTES ||
      f.l0_off != want.l0_off || f.l0_bytes != want.l0_bytes ||
      f.levels_off != want.levels_off || f.levels_bytes != want.levels_bytes) {
    rc = QV_CORRUPT(err, "hnsw %s: level sections do not match %u nodes", path,
                    n);
    goto out;
  }
  h->levels = (uint8_t *)(map.p + f.levels_off);
  for (uint32_t r = 0; r < n; r++) {
    if (h->levels[r] > f.max_level) {
      rc = QV_CORRUPT(err, "hnsw %s: node %u on level %u above the top %u",
                      path, r, h->levels[r], f.max_level);
      goto out;
    }
  }
  h->up_first = qv_malloc((size_t)n * sizeof *h->up_first);
  if (h->up_first == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "hnsw %s: no memory for %u nodes", path, n);
    goto out;
  }
  h->n_up_slots = hnsw_index_levels(h->levels, n, h->up_first);
  layout(&want, h->n_up_slots);
  if (h->n_up_slots == UINT64_MAX || f.up_off != want.up_off ||
      f.up_bytes != want.up_bytes || f.file_bytes != want.file_bytes) {
    rc = QV_CORRUPT(err,
                    "hnsw %s: upper-level section does not match the "
                    "node levels",
                    path);
    goto out;
  }
  h->l0 = (uint32_t *)(map.p + f.l0_off);
  h->up = f.up_bytes > 0 ? (uint32_t *)(map.p + f.up_off) : NULL;
  rc = check_graph(path, h, err);

out:
  if (rc != QV_OK) {
    if (h != NULL) {
      qv_free(h->up_first);
      qv_free(h);
    }
    fileio_unmap(&map);
    return rc;
  }
  h->is_mapped = true;
  h->map = map;
  *out = h;
  return QV_OK;
}
