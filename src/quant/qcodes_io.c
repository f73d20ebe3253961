/* qcodes_io.c: qcodes_save / qcodes_load, the codes file of a sealed
 * segment's vector space.
 *
 * Owns the bytes on disk; does not train or score (qcodes.c). Layout (all
 * integers little-endian, floats IEEE 754 binary32):
 *
 *     0   magic "QVCODES\0"        8 bytes
 *     8   version (1)              u32
 *     12  kind (qcodes_kind)       u32
 *     16  metric (vec_metric)      u32
 *     20  dim, n                   u32 x 2
 *     28  param                    u32: BQ bits, PQ m, else 0
 *     32  stride (bytes a code)    u32
 *     36  reserved (0)             u32
 *     40  tables                   SQ8/U8: lo, step, inv_step (3 dim f32)
 *                                  BQ: thr (bits dim f32), recon ((bits+1) dim)
 *                                  PQ: centroids (256 dim f32, pq.h layout)
 *                                  F16: none
 *         codes                    n * stride bytes
 *     end crc32c of everything above u32
 *
 * Invariant: qcodes_load trusts nothing unchecked: the size is computed from
 * the header in 64 bits and must match exactly, then the checksum, then the
 * shape against what the caller expects, then finite tables — so a file
 * with a valid checksum but another shape cannot make scoring read out of
 * bounds. sq8 step and 1/step are stored, not recomputed, so codes score
 * bit-identically before and after a reopen. */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/fileio.h"
#include "quant/qcodes.h"

#define QC_MAGIC "QVCODES\0"
#define QC_VERSION 1u
#define HDR_BYTES 40u

static uint64_t table_floats(uint32_t kind, uint32_t dim, uint32_t param) {
  switch (kind) {
  case QCODES_SQ8:
  case QCODES_U8: return 3ull * dim;
  case QCODES_BQ: return (2ull * param + 1) * dim;
  case QCODES_PQ: return (uint64_t)PQ_KSUB * dim;
  }
  return 0;
}

static uint32_t param_of(const qcodes *c) {
  return c->kind == QCODES_BQ ? c->bq->bits : c->kind == QCODES_PQ ? c->pq->m : 0;
}

static void put(unsigned char **p, const void *src, size_t n) {
  memcpy(*p, src, n);
  *p += n;
}

static void put_u32(unsigned char **p, uint32_t v) { put(p, &v, 4); }

qv_rc qcodes_save(const qcodes *c, const char *path, qv_err *err) {
  uint32_t param = param_of(c);
  uint64_t tf = table_floats(c->kind, c->dim, param);
  uint64_t body = HDR_BYTES + tf * 4 + (uint64_t)c->n * c->stride;
  unsigned char *buf = qv_malloc((size_t)body + 4);
  if (buf == NULL)
    return qv_err_set(err, QV_ENOMEM, "codes %s: no memory for %llu bytes", path,
                      (unsigned long long)body);
  unsigned char *p = buf;
  put(&p, QC_MAGIC, 8);
  put_u32(&p, QC_VERSION);
  put_u32(&p, (uint32_t)c->kind);
  put_u32(&p, (uint32_t)c->metric);
  put_u32(&p, c->dim);
  put_u32(&p, c->n);
  put_u32(&p, param);
  put_u32(&p, (uint32_t)c->stride);
  put_u32(&p, 0);
  size_t dimb = (size_t)c->dim * 4;
  switch (c->kind) {
  case QCODES_SQ8:
  case QCODES_U8:
    put(&p, c->sq->lo, dimb);
    put(&p, c->sq->step, dimb);
    put(&p, c->sq->inv_step, dimb);
    break;
  case QCODES_BQ:
    put(&p, c->bq->thr, dimb * c->bq->bits);
    put(&p, c->bq->recon, dimb * (c->bq->bits + 1));
    break;
  case QCODES_PQ: put(&p, c->pq->cent, dimb * PQ_KSUB); break;
  case QCODES_F16: break;
  }
  put(&p, c->codes, (size_t)c->n * c->stride);
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

/* Rebuilds the quantizer of `c` from the checked tables at `t`. */
static qv_rc make_quantizer(qcodes *c, uint32_t param, const float *t, const char *path,
                            qv_err *err) {
  size_t dim = c->dim;
  switch (c->kind) {
  case QCODES_SQ8:
  case QCODES_U8: {
    float *hi = qv_malloc(dim * sizeof(float));
    if (hi == NULL) return qv_err_set(err, QV_ENOMEM, "codes %s: no memory", path);
    for (size_t d = 0; d < dim; d++) {
      if (!(t[dim + d] >= 0)) {
        qv_free(hi);
        return QV_CORRUPT(err, "codes %s: negative sq8 step", path);
      }
      hi[d] = t[d] + 255.0f * t[dim + d];
    }
    qv_rc rc = sq8_from_ranges(t, hi, c->dim, false, &c->sq, err);
    qv_free(hi);
    if (rc == QV_EINVAL) return QV_CORRUPT(err, "codes %s: bad sq8 range", path);
    if (rc != QV_OK) return rc;
    memcpy(c->sq->step, t + dim, dim * 4);
    memcpy(c->sq->inv_step, t + 2 * dim, dim * 4);
    /* per_dim when the ranges differ (sq8_train's per_dim mode) */
    for (size_t d = 1; d < dim; d++)
      if (t[d] != t[0] || t[dim + d] != t[dim]) c->sq->per_dim = true;
    return QV_OK;
  }
  case QCODES_BQ: {
    if (param != 1 && param != 2) return QV_CORRUPT(err, "codes %s: %u bits", path, param);
    bq *b = qv_calloc(1, sizeof *b);
    float *thr = qv_malloc(dim * param * 4), *recon = qv_malloc(dim * (param + 1) * 4);
    if (b == NULL || thr == NULL || recon == NULL) {
      qv_free(b);
      qv_free(thr);
      qv_free(recon);
      return qv_err_set(err, QV_ENOMEM, "codes %s: no memory", path);
    }
    memcpy(thr, t, dim * param * 4);
    memcpy(recon, t + dim * param, dim * (param + 1) * 4);
    b->dim = c->dim;
    b->bits = param;
    b->n_words = (c->dim + 63) / 64;
    b->thr = thr;
    b->recon = recon;
    c->bq = b;
    return QV_OK;
  }
  case QCODES_PQ: {
    if (param < 1 || param > c->dim) return QV_CORRUPT(err, "codes %s: pq m %u", path, param);
    qv_rc rc = pq_from_centroids(c->dim, param, t, &c->pq, err);
    if (rc == QV_EINVAL) return QV_CORRUPT(err, "codes %s: bad codebook", path);
    return rc;
  }
  case QCODES_F16: return QV_OK;
  }
  return QV_CORRUPT(err, "codes %s: unknown kind", path);
}

qv_rc qcodes_load(const char *path, qcodes_kind kind, uint32_t n, uint32_t dim,
                  vec_metric metric, qcodes **out, qv_err *err) {
  char *raw;
  size_t len;
  qv_rc rc = fileio_read_file(path, &raw, &len, err);
  if (rc == QV_ENOTFOUND) return QV_CORRUPT(err, "codes %s is missing", path);
  if (rc != QV_OK) return rc;
  const unsigned char *b = (const unsigned char *)raw;
  qcodes *c = NULL;
  if (len < HDR_BYTES + 4 || memcmp(b, QC_MAGIC, 8) != 0) {
    rc = QV_CORRUPT(err, "codes %s: bad magic or short file (%zu bytes)", path, len);
    goto out;
  }
  uint32_t version = get_u32(b + 8), fkind = get_u32(b + 12), fmetric = get_u32(b + 16),
           fdim = get_u32(b + 20), fn = get_u32(b + 24), param = get_u32(b + 28),
           stride = get_u32(b + 32);
  uint64_t tf = table_floats(fkind, fdim, param > 64 ? 64 : param);
  uint64_t body = HDR_BYTES + tf * 4 + (uint64_t)fn * stride;
  if (version != QC_VERSION) {
    rc = QV_CORRUPT(err, "codes %s: version %u, expected %u", path, version, QC_VERSION);
  } else if (body + 4 != len) {
    rc = QV_CORRUPT(err, "codes %s: %zu bytes, the header implies %llu", path, len,
                    (unsigned long long)(body + 4));
  } else if (crc32c(b, (size_t)body) != get_u32(b + body)) {
    rc = QV_CORRUPT(err, "codes %s: checksum mismatch", path);
  } else if (fkind != (uint32_t)kind || fmetric != (uint32_t)metric || fdim != dim || fn != n) {
    rc = QV_CORRUPT(err, "codes %s: kind %u metric %u dim %u rows %u, expected %u %u %u %u",
                    path, fkind, fmetric, fdim, fn, (unsigned)kind, (unsigned)metric, dim, n);
  }
  if (rc != QV_OK) goto out;
  const float *tables = (const float *)(b + HDR_BYTES); /* the buffer is malloc-aligned */
  for (uint64_t i = 0; i < tf; i++)
    if (!isfinite(tables[i])) {
      rc = QV_CORRUPT(err, "codes %s: table value %llu is not finite", path,
                      (unsigned long long)i);
      goto out;
    }
  c = qv_calloc(1, sizeof *c);
  if (c == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "codes %s: no memory", path);
    goto out;
  }
  c->kind = kind;
  c->metric = metric;
  c->dim = dim;
  c->n = n;
  rc = make_quantizer(c, param, tables, path, err);
  if (rc != QV_OK) goto out;
  c->stride = kind == QCODES_SQ8 || kind == QCODES_U8 ? dim
              : kind == QCODES_F16                    ? (size_t)dim * 2
              : kind == QCODES_BQ                     ? bq_code_words(c->bq) * 8
                                                      : c->pq->m;
  if (c->stride != stride) {
    rc = QV_CORRUPT(err, "codes %s: %u bytes a code, expected %zu", path, stride, c->stride);
    goto out;
  }
  c->codes = qv_malloc_aligned((size_t)n * stride + 64);
  if (c->codes == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "codes %s: no memory for %u rows", path, n);
    goto out;
  }
  memcpy(c->codes, b + HDR_BYTES + tf * 4, (size_t)n * stride);
out:
  qv_free(raw);
  if (rc != QV_OK) {
    qcodes_free(c);
    return rc;
  }
  *out = c;
  return QV_OK;
}
