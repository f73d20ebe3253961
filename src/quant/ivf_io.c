/* ivf_io.c: ivf_save / ivf_load, the IVF file format.
 *
 * Owns the bytes on disk; does not build or search (ivf.c). The layout
 * (all integers little-endian, floats IEEE 754 binary32):
 *
 *     0   magic "QVIVF\0\0\0"        8 bytes
 *     8   version (1)                u32
 *     12  kind (0 flat, 1 pq)        u32
 *     16  metric (vec_metric)        u32
 *     20  dim, n, nlist, pq_m        u32 x 4 (pq_m 0 for flat)
 *     36  reserved (0)               u32
 *     40  centroids                  nlist * dim f32
 *         list offsets               (nlist + 1) u32
 *         row ids                    n u32
 *         [pq] codebooks             256 * dim f32 (pq.h `cent` layout)
 *         [pq] codes                 n * pq_m bytes, in row-id order
 *     end crc32c of everything above u32
 *
 * Invariant: ivf_load trusts nothing it has not checked: the size is
 * computed from the header in 64 bits and must match the file exactly, the
 * checksum must match, and the structure is validated again (offsets, ids
 * forming a permutation, finite floats) so that even a file with a valid
 * checksum cannot make a search read out of bounds. Every failure is
 * QV_ECORRUPT naming the path and the check. */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/fileio.h"
#include "quant/ivf_int.h"

#define IVF_MAGIC "QVIVF\0\0\0"
#define IVF_VERSION 1u
#define HDR_BYTES 40u

/* Byte size of the body (without the trailing CRC) for a header's shape,
 * in 64 bits: at most ~2^16 * 2^32 * ... fits as every factor is < 2^32
 * and products of two such are < 2^64. */
static uint64_t body_bytes(uint32_t kind, uint32_t dim, uint32_t n,
                           uint32_t nlist, uint32_t pq_m) {
  uint64_t b = HDR_BYTES + (uint64_t)nlist * dim * 4 +
               ((uint64_t)nlist + 1) * 4 + (uint64_t)n * 4;
  if (kind == IVF_PQ) b += (uint64_t)PQ_KSUB * dim * 4 + (uint64_t)n * pq_m;
  return b;
}

static void put_u32(unsigned char **p, uint32_t v) {
  memcpy(*p, &v, 4);
  *p += 4;
}

static void put(unsigned char **p, const void *src, size_t n) {
  memcpy(*p, src, n);
  *p += n;
}

qv_rc ivf_save(const ivf *ix, const char *path, qv_err *err) {
  uint32_t pq_m = ix->pq ? ix->pq->m : 0;
  uint64_t body = body_bytes(ix->kind, ix->dim, ix->n, ix->nlist, pq_m);
  unsigned char *buf = qv_malloc((size_t)body + 4);
  if (buf == NULL)
    return qv_err_set(err, QV_ENOMEM, "ivf %s: no memory for %llu bytes",
                      path, (unsigned long long)body);
  unsigned char *p = buf;
  put(&p, IVF_MAGIC, 8);
  put_u32(&p, IVF_VERSION);
  put_u32(&p, (uint32_t)ix->kind);
  put_u32(&p, (uint32_t)ix->metric);
  put_u32(&p, ix->dim);
  put_u32(&p, ix->n);
  put_u32(&p, ix->nlist);
  put_u32(&p, pq_m);
  put_u32(&p, 0);
  put(&p, ix->cent, (size_t)ix->nlist * ix->dim * 4);
  put(&p, ix->list_off, ((size_t)ix->nlist + 1) * 4);
  put(&p, ix->ids, (size_t)ix->n * 4);
  if (ix->kind == IVF_PQ) {
    put(&p, ix->pq->cent, (size_t)PQ_KSUB * ix->dim * 4);
    put(&p, ix->codes, (size_t)ix->n * pq_m);
  }
  put_u32(&p, crc32c(buf, (size_t)body));
  qv_rc rc = fileio_write_atomic(path, buf, (size_t)body + 4, err);
  qv_free(buf);
  return rc;
}

static uint32_t get_u32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static bool all_finite(const unsigned char *p, size_t n_floats) {
  for (size_t i = 0; i < n_floats; i++) {
    float f;
    memcpy(&f, p + i * 4, 4);
    if (!isfinite(f)) return false;
  }
  return true;
}

/* Checks the list offsets and that ids are a permutation of 0..n-1. */
static qv_rc check_lists(const char *path, const uint32_t *off,
                         const uint32_t *ids, uint32_t nlist, uint32_t n,
                         qv_err *err) {
  if (off[0] != 0 || off[nlist] != n)
    return QV_CORRUPT(err, "ivf %s: list offsets span %u..%u, expected 0..%u",
                      path, off[0], off[nlist], n);
  for (uint32_t l = 0; l < nlist; l++)
    if (off[l + 1] < off[l])
      return QV_CORRUPT(err, "ivf %s: list %u ends before it starts", path,
                        l);
  uint64_t *seen = qv_calloc(((size_t)n + 63) / 64, sizeof(uint64_t));
  if (seen == NULL)
    return qv_err_set(err, QV_ENOMEM, "ivf %s: no memory", path);
  qv_rc rc = QV_OK;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t r = ids[i];
    if (r >= n || (seen[r / 64] >> (r % 64)) & 1) {
      rc = QV_CORRUPT(err, "ivf %s: row id %u at %u is %s", path, r, i,
                      r >= n ? "out of range" : "repeated");
      break;
    }
    seen[r / 64] |= (uint64_t)1 << (r % 64);
  }
  qv_free(seen);
  return rc;
}

/* Copies n bytes at *p into a new qv_malloc'd block. */
static void *take(const unsigned char **p, size_t n) {
  void *q = qv_malloc(n ? n : 1);
  if (q != NULL) memcpy(q, *p, n);
  *p += n;
  return q;
}

qv_rc ivf_load(const char *path, const float *vecs, uint32_t n, uint32_t dim,
               vec_metric metric, ivf **out, qv_err *err) {
  fileio_map m;
  qv_rc rc = fileio_map_file(path, &m, err);
  if (rc != QV_OK) return rc;
  ivf *ix = NULL;
  const unsigned char *p = m.p;
  if (m.n < HDR_BYTES + 4) {
    rc = QV_CORRUPT(err, "ivf %s: %zu bytes, shorter than a header", path,
                    m.n);
    goto out;
  }
  if (memcmp(p, IVF_MAGIC, 8) != 0) {
    rc = QV_CORRUPT(err, "ivf %s: bad magic", path);
    goto out;
  }
  uint32_t version = get_u32(p + 8), kind = get_u32(p + 12),
           fmetric = get_u32(p + 16), fdim = get_u32(p + 20),
           fn = get_u32(p + 24), nlist = get_u32(p + 28),
           pq_m = get_u32(p + 32);
  if (version != IVF_VERSION) {
    rc = QV_CORRUPT(err, "ivf %s: version %u, expected %u", path, version,
                    IVF_VERSION);
    goto out;
  }
  if (kind > IVF_PQ || nlist < IVF_NLIST_MIN || nlist > IVF_NLIST_MAX ||
      (kind == IVF_PQ ? (pq_m == 0 || pq_m > fdim) : pq_m != 0)) {
    rc = QV_CORRUPT(err, "ivf %s: bad header (kind %u, nlist %u, pq_m %u)",
                    path, kind, nlist, pq_m);
    goto out;
  }
  uint64_t body = body_bytes(kind, fdim, fn, nlist, pq_m);
  if ((uint64_t)m.n != body + 4) {
    rc = QV_CORRUPT(err, "ivf %s: %zu bytes, the header implies %llu", path,
                    m.n, (unsigned long long)(body + 4));
    goto out;
  }
  uint32_t want = get_u32(p + body), got = crc32c(p, (size_t)body);
  if (want != got) {
    rc = QV_CORRUPT(err, "ivf %s: checksum %08x, stored %08x", path, got,
                    want);
    goto out;
  }
  if (fmetric != (uint32_t)metric || fdim != dim || fn != n ||
      nlist > n) {
    rc = QV_CORRUPT(err,
                    "ivf %s: holds %u rows of %u dimensions, metric %u, %u "
                    "lists; expected %u rows of %u, metric %d",
                    path, fn, fdim, fmetric, nlist, n, dim, (int)metric);
    goto out;
  }
  rc = ivf_shell_new((ivf_kind)kind, metric, n, dim, nlist, vecs, &ix, err);
  if (rc != QV_OK) goto out;
  const unsigned char *q = p + HDR_BYTES;
  if (!all_finite(q, (size_t)nlist * dim)) {
    rc = QV_CORRUPT(err, "ivf %s: a centroid is not finite", path);
    goto out;
  }
  ix->cent = take(&q, (size_t)nlist * dim * 4);
  ix->list_off = take(&q, ((size_t)nlist + 1) * 4);
  ix->ids = take(&q, (size_t)n * 4);
  if (ix->cent == NULL || ix->list_off == NULL || ix->ids == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "ivf %s: no memory", path);
    goto out;
  }
  rc = check_lists(path, ix->list_off, ix->ids, nlist, n, err);
  if (rc != QV_OK) goto out;
  for (uint32_t l = 0; l < nlist; l++) {
    uint32_t len = ix->list_off[l + 1] - ix->list_off[l];
    if (len > ix->max_list) ix->max_list = len;
  }
  if (kind == IVF_PQ) {
    if (!all_finite(q, (size_t)PQ_KSUB * dim)) {
      rc = QV_CORRUPT(err, "ivf %s: a PQ centroid is not finite", path);
      goto out;
    }
    rc = pq_from_centroids(dim, pq_m, (const float *)(const void *)q, &ix->pq,
                           err);
    if (rc != QV_OK) goto out;
    q += (size_t)PQ_KSUB * dim * 4;
    ix->codes = take(&q, (size_t)n * pq_m);
    if (ix->codes == NULL) {
      rc = qv_err_set(err, QV_ENOMEM, "ivf %s: no memory", path);
      goto out;
    }
    if (metric == VEC_L2SQ) rc = ivf_compute_rterm(ix, err);
  }
out:
  fileio_unmap(&m);
  if (rc != QV_OK) {
    ivf_free(ix);
    return rc;
  }
  *out = ix;
  return QV_OK;
}
