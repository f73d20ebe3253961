/* manifest.c: reading and atomically replacing a shard's MANIFEST; see
 * manifest.h. */
#include "storage/manifest.h"

#include <string.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/fileio.h"

#define MAGIC "QVMANIF1"
#define VERSION 1u
#define FIXED (8 + 4 + 8 + 8 + 4)

qv_rc manifest_write(const char *path, const manifest *m, qv_err *err) {
  size_t n = FIXED + (size_t)m->n_segments * 8 + 4;
  unsigned char *b = qv_malloc(n);
  if (b == NULL) return qv_err_set(err, QV_ENOMEM, "manifest %s: no memory", path);
  unsigned char *p = b;
  uint32_t version = VERSION;
  memcpy(p, MAGIC, 8), p += 8;
  memcpy(p, &version, 4), p += 4;
  memcpy(p, &m->checkpoint_lsn, 8), p += 8;
  memcpy(p, &m->next_segment_id, 8), p += 8;
  memcpy(p, &m->n_segments, 4), p += 4;
  if (m->n_segments) memcpy(p, m->segment_ids, (size_t)m->n_segments * 8);
  p += (size_t)m->n_segments * 8;
  uint32_t crc = crc32c(b, (size_t)(p - b));
  memcpy(p, &crc, 4);
  qv_rc rc = fileio_write_atomic(path, b, n, err);
  qv_free(b);
  return rc;
}

qv_rc manifest_read(const char *path, manifest *out, qv_err *err) {
  char *b;
  size_t n;
  qv_rc rc = fileio_read_file(path, &b, &n, err);
  if (rc != QV_OK) return rc;
  manifest m;
  memset(&m, 0, sizeof m);
  uint32_t version, crc;
  const unsigned char *p = (const unsigned char *)b;
  if (n < FIXED + 4 || memcmp(p, MAGIC, 8) != 0) {
    rc = QV_CORRUPT(err, "manifest %s: bad magic or too short (%zu bytes)", path, n);
    goto out;
  }
  memcpy(&version, p + 8, 4);
  memcpy(&m.checkpoint_lsn, p + 12, 8);
  memcpy(&m.next_segment_id, p + 20, 8);
  memcpy(&m.n_segments, p + 28, 4);
  if (m.n_segments > MANIFEST_MAX_SEGMENTS ||
      n != FIXED + (size_t)m.n_segments * 8 + 4) {
    rc = QV_CORRUPT(err, "manifest %s: %u segments do not fit %zu bytes", path,
                    m.n_segments, n);
    goto out;
  }
  memcpy(&crc, p + n - 4, 4);
  if (crc32c(p, n - 4) != crc) {
    rc = QV_CORRUPT(err, "manifest %s: checksum mismatch", path);
    goto out;
  }
  if (version != VERSION) {
    rc = QV_CORRUPT(err, "manifest %s: version %u, expected %u", path, version,
                    VERSION);
    goto out;
  }
  m.segment_ids = qv_malloc((size_t)m.n_segments * 8 + 8);
  if (m.segment_ids == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "manifest %s: no memory", path);
    goto out;
  }
  memcpy(m.segment_ids, p + FIXED, (size_t)m.n_segments * 8);
  *out = m;
out:
  qv_free(b);
  return rc;
}

void manifest_free(manifest *m) {
  if (m == NULL) return;
  qv_free(m->segment_ids);
  m->segment_ids = NULL;
  m->n_segments = 0;
}
