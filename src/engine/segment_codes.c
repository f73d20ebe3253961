/* segment_codes.c: the quantized codes, narrow vectors and IVF index of a
 * sealed segment's vector spaces: the plan (which of them a space gets),
 * building and saving them during a seal or merge, loading them on open.
 *
 * Does not search (shard_read.c) and does not decide when segments are
 * built (shard_build.c). Invariant: segcodes_plan_for is a pure function of
 * the space's configuration and the segment's row counts, both fixed for a
 * sealed segment, so the open expects exactly the files the build wrote. */
#include "engine/segment_codes.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"

void segcodes_codes_path(const char *dir, uint32_t i, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/codes-%u.qvc", dir, i);
}
void segcodes_vecs_path(const char *dir, uint32_t i, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/vecs-%u.qvc", dir, i);
}
void segcodes_ivf_path(const char *dir, uint32_t i, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/ivf-%u.qvi", dir, i);
}

uint32_t segcodes_nprobe_default(uint32_t nlist) {
  uint32_t p = nlist / 16;
  if (p < SEGCODES_NPROBE_MIN) p = SEGCODES_NPROBE_MIN;
  return p > nlist ? nlist : p;
}

void segcodes_plan_for(const vspace *x, uint32_t n_rows, uint32_t n_present,
                       segcodes_plan *p) {
  memset(p, 0, sizeof *p);
  const qv_storage_params *st = &x->st;
  if (st->index != QV_VINDEX_HNSW) {
    p->use_ivf = true;
    /* IVF-PQ trains 256 centroids per subspace on the rows */
    p->ivf = st->index == QV_VINDEX_IVF_PQ && n_rows >= SEGCODES_PQ_MIN_ROWS ? IVF_PQ : IVF_FLAT;
    /* about 4 sqrt(n): lists of ~sqrt(n)/4 rows balance the coarse step
     * (nlist distances) against the scan (nprobe lists) */
    uint32_t nl = st->ivf_nlist ? st->ivf_nlist : (uint32_t)(4.0 * sqrt((double)n_rows) + 0.5);
    if (nl > n_rows) nl = n_rows;
    if (nl > IVF_NLIST_MAX) nl = IVF_NLIST_MAX;
    p->nlist = nl < 1 ? 1 : nl;
    return;
  }
  switch (st->quantization) {
  case QV_QUANT_SCALAR: p->codes = QCODES_SQ8; break;
  case QV_QUANT_BINARY: p->codes = QCODES_BQ; break;
  case QV_QUANT_PRODUCT: p->codes = n_present >= SEGCODES_PQ_MIN_ROWS ? QCODES_PQ : 0; break;
  case QV_QUANT_NONE: break;
  }
  /* on_disk: the full vectors stay in the file, narrow or not */
  if (!st->on_disk) {
    if (st->datatype == QV_DATATYPE_FLOAT16) p->narrow = QCODES_F16;
    if (st->datatype == QV_DATATYPE_UINT8) p->narrow = QCODES_U8;
  }
}

static void params_of(const vspace *x, int kind, uint32_t n_threads, uint64_t seed,
                      qcodes_params *qp) {
  memset(qp, 0, sizeof *qp);
  qp->kind = (qcodes_kind)kind;
  qp->sq_quantile = x->st.sq_quantile;
  qp->bq_bits = x->st.bq_bits;
  qp->pq_ratio = x->st.pq_ratio;
  qp->n_threads = n_threads;
  qp->seed = seed;
}

qv_rc segcodes_build(const vspace *x, const segcodes_plan *p, const float *vecs,
                     const uint8_t *present, uint32_t n, uint32_t n_present,
                     uint32_t n_threads, uint64_t seed, const char *dir, uint32_t space,
                     qv_err *err) {
  char path[4096];
  qv_rc rc = QV_OK;
  if (p->codes) {
    /* Train on the rows that have the vector: the zeros standing in for
     * absent ones would pull ranges and centroids towards the origin. */
    const float *train = vecs;
    float *compact = NULL;
    size_t dim = x->dim;
    if (n_present < n) {
      compact = qv_malloc((size_t)n_present * dim * sizeof(float) + 64);
      if (compact == NULL) return qv_err_set(err, QV_ENOMEM, "codes: no memory");
      size_t k = 0;
      for (uint32_t r = 0; r < n; r++)
        if (present[r]) memcpy(compact + k++ * dim, vecs + (size_t)r * dim, dim * sizeof(float));
      train = compact;
    }
    qcodes_params qp;
    params_of(x, p->codes, n_threads, seed, &qp);
    qcodes *c = NULL;
    rc = qcodes_build(vecs, n, train, n_present, x->dim, x->metric, &qp, &c, err);
    qv_free(compact);
    segcodes_codes_path(dir, space, path, sizeof path);
    if (rc == QV_OK) rc = qcodes_save(c, path, err);
    qcodes_free(c);
  }
  if (rc == QV_OK && p->narrow) {
    qcodes_params qp;
    params_of(x, p->narrow, n_threads, seed, &qp);
    qcodes *c = NULL;
    rc = qcodes_build(vecs, n, vecs, n, x->dim, x->metric, &qp, &c, err);
    segcodes_vecs_path(dir, space, path, sizeof path);
    if (rc == QV_OK) rc = qcodes_save(c, path, err);
    qcodes_free(c);
  }
  return rc;
}

qv_rc segcodes_build_ivf(const vspace *x, const segcodes_plan *p, const float *vecs,
                         uint32_t n, uint32_t n_threads, uint64_t seed, const char *dir,
                         uint32_t space, qv_err *err) {
  char path[4096];
  ivf_params ip;
  ivf_params_init(&ip, p->ivf, x->dim);
  ip.nlist = p->nlist;
  if (p->ivf == IVF_PQ) ip.pq_m = pq_m_for_ratio(x->dim, x->st.pq_ratio ? x->st.pq_ratio : 16);
  ip.n_threads = n_threads ? n_threads : 1;
  ip.seed = seed;
  ivf *ix = NULL;
  qv_rc rc = ivf_build(vecs, n, x->dim, x->metric, &ip, &ix, err);
  segcodes_ivf_path(dir, space, path, sizeof path);
  if (rc == QV_OK) rc = ivf_save(ix, path, err);
  ivf_free(ix);
  return rc;
}

qv_rc segcodes_open(const vspace *x, const segcodes_plan *p, const char *dir, uint32_t space,
                    const float *vecs, uint32_t n, qcodes **codes, qcodes **narrow, ivf **ix,
                    qv_err *err) {
  char path[4096];
  *codes = *narrow = NULL;
  *ix = NULL;
  qv_rc rc = QV_OK;
  if (p->use_ivf) {
    segcodes_ivf_path(dir, space, path, sizeof path);
    rc = ivf_load(path, vecs, n, x->dim, x->metric, ix, err);
    if (rc == QV_OK && (ivf_get_kind(*ix) != p->ivf || ivf_nlist(*ix) != p->nlist)) {
      ivf_free(*ix);
      *ix = NULL;
      rc = QV_CORRUPT(err, "ivf %s: kind or nlist differs from the configuration", path);
    }
    return rc;
  }
  if (p->codes) {
    segcodes_codes_path(dir, space, path, sizeof path);
    rc = qcodes_load(path, (qcodes_kind)p->codes, n, x->dim, x->metric, codes, err);
  }
  if (rc == QV_OK && p->narrow) {
    segcodes_vecs_path(dir, space, path, sizeof path);
    rc = qcodes_load(path, (qcodes_kind)p->narrow, n, x->dim, x->metric, narrow, err);
  }
  if (rc != QV_OK) {
    qcodes_free(*codes);
    qcodes_free(*narrow);
    *codes = *narrow = NULL;
  }
  return rc;
}
