/* qcodes.c: building, decoding and scoring codes of every kind behind the
 * qcodes interface (qcodes.h). Owns the choice of kernel per (kind, metric)
 * and the per-query state; does not read or write files (qcodes_io.c) and
 * knows nothing of segments (the engine decides which codes a segment has).
 * Invariant: a qcodes never changes after qcodes_build / qcodes_load
 * returns, so scoring takes no locks. */
#include "quant/qcodes.h"

#include <string.h>

#include "base/alloc.h"
#include "base/err.h"

static size_t stride_of(const qcodes *c) {
  switch (c->kind) {
  case QCODES_SQ8:
  case QCODES_U8: return c->dim;
  case QCODES_F16: return (size_t)c->dim * 2;
  case QCODES_BQ: return bq_code_words(c->bq) * 8;
  case QCODES_PQ: return c->pq->m;
  }
  return 0;
}

qv_rc qcodes_build(const float *x, uint32_t n, const float *train, uint32_t n_train,
                   uint32_t dim, vec_metric metric, const qcodes_params *p, qcodes **out,
                   qv_err *err) {
  if (n == 0 || dim == 0)
    return qv_err_set(err, QV_EINVAL, "codes: %u rows of %u dimensions", n, dim);
  qcodes *c = qv_calloc(1, sizeof *c);
  if (c == NULL) return qv_err_set(err, QV_ENOMEM, "codes: no memory");
  c->kind = p->kind;
  c->metric = metric;
  c->dim = dim;
  c->n = n;
  qv_rc rc = QV_OK;
  switch (p->kind) {
  case QCODES_SQ8: {
    sq8_params sp;
    sq8_params_init(&sp);
    if (p->sq_quantile > 0) sp.quantile = p->sq_quantile;
    rc = sq8_train(train, n_train, dim, &sp, &c->sq, err);
    break;
  }
  case QCODES_U8: {
    /* lo 0, step 1: integers 0..255 encode to themselves */
    float *lo = qv_calloc(2 * (size_t)dim, sizeof(float));
    if (lo == NULL) {
      rc = qv_err_set(err, QV_ENOMEM, "codes: no memory");
      break;
    }
    for (uint32_t d = 0; d < dim; d++) lo[dim + d] = 255.0f;
    rc = sq8_from_ranges(lo, lo + dim, dim, false, &c->sq, err);
    qv_free(lo);
    break;
  }
  case QCODES_BQ: {
    bq_params bp;
    bq_params_init(&bp, p->bq_bits ? p->bq_bits : 1);
    rc = bq_train(train, n_train, dim, &bp, &c->bq, err);
    break;
  }
  case QCODES_PQ: {
    pq_params pp;
    pq_params_init(&pp, dim);
    pp.m = pq_m_for_ratio(dim, p->pq_ratio ? p->pq_ratio : 16);
    pp.n_threads = p->n_threads ? p->n_threads : 1;
    pp.seed = p->seed;
    rc = pq_train(train, n_train, dim, &pp, &c->pq, err);
    break;
  }
  case QCODES_F16: break;
  default: rc = qv_err_set(err, QV_EINVAL, "codes: unknown kind %d", (int)p->kind);
  }
  if (rc == QV_OK) {
    c->stride = stride_of(c);
    c->codes = qv_malloc_aligned((size_t)n * c->stride + 64);
    if (c->codes == NULL)
      rc = qv_err_set(err, QV_ENOMEM, "codes: no memory for %u rows", n);
  }
  if (rc == QV_OK) {
    switch (c->kind) {
    case QCODES_SQ8:
    case QCODES_U8: sq8_encode(c->sq, x, n, c->codes); break;
    case QCODES_BQ: bq_encode(c->bq, x, n, (uint64_t *)c->codes); break;
    case QCODES_PQ: rc = pq_encode(c->pq, x, n, c->codes, err); break;
    case QCODES_F16: f16_ops_get()->encode(x, (uint16_t *)c->codes, (size_t)n * dim); break;
    }
  }
  if (rc != QV_OK) {
    qcodes_free(c);
    return rc;
  }
  *out = c;
  return QV_OK;
}

void qcodes_free(qcodes *c) {
  if (c == NULL) return;
  sq8_free(c->sq);
  bq_free(c->bq);
  pq_free(c->pq);
  qv_free_aligned(c->codes);
  qv_free(c);
}

size_t qcodes_memory_bytes(const qcodes *c) {
  size_t b = (size_t)c->n * c->stride;
  if (c->sq) b += 3 * (size_t)c->dim * sizeof(float);
  if (c->bq) b += (2 * (size_t)c->bq->n_planes + 1) * c->dim * sizeof(float) + c->dim;
  if (c->pq) b += 2 * (size_t)PQ_KSUB * c->dim * sizeof(float);
  return b;
}

void qcodes_decode(const qcodes *c, uint32_t row, float *x) {
  const uint8_t *code = qcodes_code(c, row);
  switch (c->kind) {
  case QCODES_SQ8:
  case QCODES_U8: sq8_decode(c->sq, code, 1, x); break;
  case QCODES_BQ: bq_decode(c->bq, (const uint64_t *)code, x); break;
  case QCODES_PQ: pq_decode(c->pq, code, x); break;
  case QCODES_F16: f16_ops_get()->decode((const uint16_t *)code, x, c->dim); break;
  }
}

/* ---- scoring ----------------------------------------------------------------- */

static bool grow_buf(qcodes_query *qq, size_t n) {
  if (qq->buf_cap >= n) return true;
  float *b = qv_malloc(n * sizeof(float));
  if (b == NULL) return false;
  qv_free(qq->buf);
  qq->buf = b;
  qq->buf_cap = n;
  return true;
}

qv_rc qcodes_query_prepare(const qcodes *c, const float *query, qcodes_query *qq,
                           qv_err *err) {
  qq->qc = c;
  qq->query = query;
  qq->fdist = dist_fn(dist_ops_get(), c->metric);
  bool l1 = c->metric == VEC_L1;
  switch (c->kind) {
  case QCODES_SQ8:
  case QCODES_U8:
    if (l1) break;
    if (qq->sq == NULL || qq->sq->dim != c->dim) {
      sq8_query_free(qq->sq);
      qq->sq = NULL;
      if (sq8_query_new(c->dim, &qq->sq, err) != QV_OK) return QV_ENOMEM;
    }
    sq8_query_prepare(c->sq, query, qq->sq);
    qq->sq_ops = sq8_ops_get();
    qq->mode = c->metric == VEC_L2SQ ? QM_SQ8_L2 : QM_SQ8_DOT;
    return QV_OK;
  case QCODES_BQ:
    if (qq->bq == NULL || qq->bq->n_words != bq_code_words(c->bq)) {
      bq_query_free(qq->bq);
      qq->bq = NULL;
      if (bq_query_new(c->bq, &qq->bq, err) != QV_OK) return QV_ENOMEM;
    }
    bq_query_prepare(c->bq, query, c->metric, qq->bq);
    qq->bq_ops = bq_ops_get();
    qq->mode = QM_BQ;
    return QV_OK;
  case QCODES_PQ:
    if (l1) break;
    if (!grow_buf(qq, (size_t)c->pq->m * PQ_KSUB))
      return qv_err_set(err, QV_ENOMEM, "codes: no memory for a lookup table");
    qq->pq_ops = pq_ops_get();
    pq_lut(c->pq, qq->pq_ops, query, c->metric, qq->buf);
    qq->mode = QM_PQ;
    return QV_OK;
  case QCODES_F16: {
    const f16_ops *o = f16_ops_get();
    qq->f16dist = c->metric == VEC_L2SQ ? o->l2sq : c->metric == VEC_L1 ? o->l1 : o->dot;
    qq->f16_sign = c->metric == VEC_NEG_DOT ? -1.0f : 1.0f;
    qq->mode = QM_F16;
    return QV_OK;
  }
  }
  if (!grow_buf(qq, c->dim))
    return qv_err_set(err, QV_ENOMEM, "codes: no memory for a query");
  qq->mode = QM_DECODE;
  return QV_OK;
}

void qcodes_query_destroy(qcodes_query *qq) {
  sq8_query_free(qq->sq);
  bq_query_free(qq->bq);
  qv_free(qq->buf);
  memset(qq, 0, sizeof *qq);
}

float qcodes_dist(qcodes_query *qq, uint32_t row) {
  const qcodes *c = qq->qc;
  const uint8_t *code = qcodes_code(c, row);
  switch (qq->mode) {
  case QM_SQ8_L2: return sq8_l2sq(qq->sq_ops, qq->sq, code);
  case QM_SQ8_DOT: return -sq8_dot(qq->sq_ops, qq->sq, code);
  case QM_BQ: return bq_asym(qq->bq_ops, qq->bq, (const uint64_t *)code);
  case QM_PQ: return qq->pq_ops->adc(qq->buf, code, c->pq->m);
  case QM_F16:
    return qq->f16_sign * qq->f16dist(qq->query, (const uint16_t *)code, c->dim);
  case QM_DECODE: break;
  }
  qcodes_decode(c, row, qq->buf);
  return qq->fdist(qq->query, qq->buf, c->dim);
}
