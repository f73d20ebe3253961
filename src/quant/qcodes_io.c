/* qcodes_io.c: qcodes_save / qcodes_load, the codes file of a sealed
 * segment's vector space.
 *
 * Owns the bytes on disk; does not train or score (qcodes.c). Layout (all
 * integers little-endian, floats IEEE 754 binary32):
 *
 *     0   magic "QVCODES\0"        8 bytes
 *     8   version (1, or 2 when     u32
 *         the codes are 1.5-bit)
 *     12  kind (qcodes_kind)       u32
 *     16  metric (vec_metric)      u32
 *     20  dim, n                   u32 x 2
 *     28  param                    u32: BQ bits (1, 2, 3 = one and a half),
 *                                  PQ m, else 0
 *     32  stride (bytes a code)    u32
 *     36  planes                   u32: 1.5-bit BQ: threshold planes P; else 0
 *     40  tables                   SQ8/U8: lo, step, inv_step (3 dim f32)
 *                                  BQ: thr (bits dim f32), recon ((bits+1) dim)
 *                                  1.5-bit BQ: thr (P dim), recon ((P+1) dim),
 *                                  planes of each dimension (dim f32, 0..P)
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
 * bit-identically before and after a reopen.
 *
 * Versions: 1.5-bit codes need the planes word and the per-dimension plane
 * counts, so their files say version 2; every other file is still written
 * as version 1, byte for byte as before. Both load. A reader that knows
 * only version 1 refuses a 1.5-bit file with QV_ECORRUPT "version 2,
 * expected 1" naming it, rather than misreading it. */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/fileio.h"
#include "quant/qcodes.h"

#define QC_MAGIC "QVCODES\0"
#define QC_VERSION 1u
#define QC_VERSION_MIXED 2u /* 1.5-bit binary codes */
#define HDR_BYTES 40u

static uint64_t table_floats(uint32_t kind, uint32_t dim, uint32_t param, uint32_t planes) {
  switch (kind) {
  case QCODES_SQ8:
  case QCODES_U8: return 3ull * dim;
  case QCODES_BQ:
    return param == BQ_ONE_AND_HALF ? (2ull * planes + 2) * dim : (2ull * param + 1) * dim;
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

static bool is_mixed(const qcodes *c) {
  return c->kind == QCODES_BQ && c->bq->bits == BQ_ONE_AND_HALF;
}

qv_rc qcodes_save(const qcodes *c, const char *path, qv_err *err) {
  uint32_t param = param_of(c), planes = is_mixed(c) ? c->bq->n_planes : 0;
  uint64_t tf = table_floats(c->kind, c->dim, param, planes);
  uint64_t body = HDR_BYTES + tf * 4 + (uint64_t)c->n * c->stride;
  unsigned char *buf = qv_malloc((size_t)body + 4);
  if (buf == NULL)
    return qv_err_set(err, QV_ENOMEM, "codes %s: no memory for %llu bytes", path,
                      (unsigned long long)body);
  unsigned char *p = buf;
  put(&p, QC_MAGIC, 8);
  put_u32(&p, is_mixed(c) ? QC_VERSION_MIXED : QC_VERSION);
  put_u32(&p, (uint32_t)c->kind);
  put_u32(&p, (uint32_t)c->metric);
  put_u32(&p, c->dim);
  put_u32(&p, c->n);
  put_u32(&p, param);
  put_u32(&p, (uint32_t)c->stride);
  put_u32(&p, planes);
  size_t dimb = (size_t)c->dim * 4;
  switch (c->kind) {
  case QCODES_SQ8:
  case QCODES_U8:
    put(&p, c->sq->lo, dimb);
    put(&p, c->sq->step, dimb);
    put(&p, c->sq->inv_step, dimb);
    break;
  case QCODES_BQ:
    put(&p, c->bq->thr, dimb * c->bq->n_planes);
    put(&p, c->bq->recon, dimb * (c->bq->n_planes + 1));
    for (uint32_t d = 0; planes && d < c->dim; d++) {
      float f = c->bq->nb[d];
      put(&p, &f, 4);
    }
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
static qv_rc make_quantizer(qcodes *c, uint32_t param, uint32_t planes, const float *t,
                            const char *path, qv_err *err) {
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
    bool mixed = param == BQ_ONE_AND_HALF;
    if (param != 1 && param != 2 && !mixed)
      return QV_CORRUPT(err, "codes %s: binary encoding %u", path, param);
    if (mixed && (planes < 1 || planes > BQ_PLANES_MAX))
      return QV_CORRUPT(err, "codes %s: %u planes", path, planes);
    uint32_t P = mixed ? planes : param;
    uint8_t *nb = NULL;
    if (mixed) {
      const float *fnb = t + dim * (2 * P + 1);
      nb = qv_malloc(dim);
      if (nb == NULL) return qv_err_set(err, QV_ENOMEM, "codes %s: no memory", path);
      for (size_t d = 0; d < dim; d++) {
        if (!(fnb[d] >= 0 && fnb[d] <= (float)P && fnb[d] == (float)(uint32_t)fnb[d])) {
          qv_free(nb);
          return QV_CORRUPT(err, "codes %s: dimension %zu has %g planes", path, d,
                            (double)fnb[d]);
        }
        nb[d] = (uint8_t)fnb[d];
      }
    }
    qv_rc rc = bq_from_tables(c->dim, param, P, t, t + dim * P, nb, &c->bq, err);
    qv_free(nb);
    if (rc == QV_EINVAL) return QV_CORRUPT(err, "codes %s: bad binary tables", path);
    return rc;
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
           stride = get_u32(b + 32), planes = get_u32(b + 36);
  bool mixed = fkind == QCODES_BQ && param == BQ_ONE_AND_HALF;
  if (!mixed) planes = 0;
  uint64_t tf = table_floats(fkind, fdim, param > 64 ? 64 : param, planes > 64 ? 64 : planes);
  uint64_t body = HDR_BYTES + tf * 4 + (uint64_t)fn * stride;
  if (version != QC_VERSION && version != QC_VERSION_MIXED) {
    rc = QV_CORRUPT(err, "codes %s: version %u, expected %u or %u", path, version, QC_VERSION,
                    QC_VERSION_MIXED);
  } else if (mixed && version != QC_VERSION_MIXED) {
    rc = QV_CORRUPT(err, "codes %s: 1.5-bit codes in a version %u file", path, version);
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
  rc = make_quantizer(c, param, planes, tables, path, err);
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
