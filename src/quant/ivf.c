/* ivf.c: building and searching IVF-Flat and IVF-PQ indexes (ivf.h).
 *
 * Owns training (coarse k-means, residual PQ), the list layout and the
 * nprobe search with its allow filter and rescoring. Does not read or write
 * files (ivf_io.c), cluster (kmeans.c) or define PQ (pq.c).
 * Invariants: see ivf_int.h. A search never writes to the index; all of its
 * state lives in the caller's ivf_scratch. */
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "quant/ivf_int.h"
#include "quant/kmeans.h"

#define RESIDUAL_BLOCK 4096 /* rows whose residuals are encoded at once */

struct ivf_scratch {
  float *cdist;     /* nlist */
  quant_hit *probe; /* nprobe */
  float *lut;       /* m * 256 */
  float *adc;       /* longest list */
  quant_hit *short_; /* shortlist */
  quant_hit *best;  /* k */
  size_t n_cdist, n_probe, n_lut, n_adc, n_short, n_best;
};

void ivf_params_init(ivf_params *p, ivf_kind kind, uint32_t dim) {
  p->kind = kind;
  p->nlist = IVF_NLIST_DEFAULT;
  p->pq_m = pq_m_for_ratio(dim, 16);
  p->n_iter = IVF_ITER_DEFAULT;
  p->max_per_centroid = KMEANS_MAX_PER_CENTROID_DEFAULT;
  p->n_threads = 1;
  p->seed = 0x697666ull; /* "ivf" */
}

void ivf_search_params_init(ivf_search_params *sp) {
  sp->nprobe = IVF_NPROBE_DEFAULT;
  sp->rescore = 0;
  sp->allow = NULL;
  sp->allow_ctx = NULL;
}

qv_rc ivf_shell_new(ivf_kind kind, vec_metric metric, uint32_t n,
                    uint32_t dim, uint32_t nlist, const float *vecs,
                    ivf **out, qv_err *err) {
  ivf *ix = qv_calloc(1, sizeof *ix);
  if (ix == NULL) return qv_err_set(err, QV_ENOMEM, "ivf: no memory");
  ix->kind = kind;
  ix->metric = metric;
  ix->n = n;
  ix->dim = dim;
  ix->nlist = nlist;
  ix->vecs = vecs;
  *out = ix;
  return QV_OK;
}

void ivf_free(ivf *ix) {
  if (ix == NULL) return;
  qv_free(ix->cent);
  qv_free(ix->list_off);
  qv_free(ix->ids);
  pq_free(ix->pq);
  qv_free(ix->codes);
  qv_free(ix->rterm);
  qv_free(ix);
}

uint32_t ivf_size(const ivf *ix) { return ix->n; }
ivf_kind ivf_get_kind(const ivf *ix) { return ix->kind; }
uint32_t ivf_nlist(const ivf *ix) { return ix->nlist; }

size_t ivf_memory_bytes(const ivf *ix) {
  size_t b = sizeof *ix + (size_t)ix->nlist * ix->dim * sizeof(float) +
             ((size_t)ix->nlist + 1 + ix->n) * sizeof(uint32_t);
  if (ix->rterm != NULL) b += (size_t)ix->n * sizeof(float);
  if (ix->pq != NULL)
    b += (size_t)ix->n * ix->pq->m +
         (size_t)PQ_KSUB * ix->dim * 2 * sizeof(float) +
         ((size_t)ix->pq->m + 1) * sizeof(uint32_t);
  return b;
}

size_t ivf_code_bytes(const ivf *ix) {
  if (ix->pq == NULL) return 0;
  return (size_t)ix->n * ix->pq->m + (ix->rterm ? (size_t)ix->n * sizeof(float) : 0) +
         (size_t)PQ_KSUB * ix->dim * 2 * sizeof(float) + ((size_t)ix->pq->m + 1) * sizeof(uint32_t);
}

/* Groups rows by list: a counting sort of `assign`, stable in row order. */
static qv_rc make_lists(ivf *ix, const uint32_t *assign, qv_err *err) {
  ix->list_off = qv_calloc((size_t)ix->nlist + 1, sizeof(uint32_t));
  ix->ids = qv_malloc((size_t)ix->n * sizeof(uint32_t));
  if (ix->list_off == NULL || ix->ids == NULL)
    return qv_err_set(err, QV_ENOMEM, "ivf: no memory for %u rows", ix->n);
  for (uint32_t r = 0; r < ix->n; r++) ix->list_off[assign[r] + 1]++;
  for (uint32_t l = 0; l < ix->nlist; l++) {
    if (ix->list_off[l + 1] > ix->max_list) ix->max_list = ix->list_off[l + 1];
    ix->list_off[l + 1] += ix->list_off[l];
  }
  uint32_t *fill = qv_malloc((size_t)ix->nlist * sizeof(uint32_t));
  if (fill == NULL) return qv_err_set(err, QV_ENOMEM, "ivf: no memory");
  memcpy(fill, ix->list_off, (size_t)ix->nlist * sizeof(uint32_t));
  for (uint32_t r = 0; r < ix->n; r++) ix->ids[fill[assign[r]]++] = r;
  qv_free(fill);
  return QV_OK;
}

/* Trains the residual quantizer on evenly spaced rows and encodes every
 * row's residual, block by block, into list order. */
static qv_rc build_pq(ivf *ix, const ivf_params *p, const uint32_t *assign,
                      qv_err *err) {
  uint32_t dim = ix->dim;
  size_t ns = ix->n < PQ_MAX_TRAIN_DEFAULT ? ix->n : PQ_MAX_TRAIN_DEFAULT;
  size_t nbuf = ns > RESIDUAL_BLOCK ? ns : RESIDUAL_BLOCK;
  float *res = qv_malloc(nbuf * dim * sizeof(float));
  uint8_t *codes = qv_malloc((size_t)RESIDUAL_BLOCK * p->pq_m);
  ix->codes = qv_malloc((size_t)ix->n * p->pq_m);
  qv_rc rc = QV_OK;
  if (res == NULL || codes == NULL || ix->codes == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "ivf: no memory for residuals");
    goto out;
  }
  for (size_t i = 0; i < ns; i++) {
    size_t r = (size_t)((double)i * ix->n / ns);
    const float *x = ix->vecs + r * dim, *c = ix->cent + (size_t)assign[r] * dim;
    for (uint32_t d = 0; d < dim; d++) res[i * dim + d] = x[d] - c[d];
  }
  pq_params pp;
  pq_params_init(&pp, dim);
  pp.m = p->pq_m;
  pp.n_threads = p->n_threads;
  pp.seed = p->seed ^ 0x7071;
  rc = pq_train(res, ns, dim, &pp, &ix->pq, err);
  if (rc != QV_OK) goto out;
  /* Codes in list order: position i holds the code of ids[i]. */
  uint32_t m = ix->pq->m;
  for (size_t b = 0; b < ix->n; b += RESIDUAL_BLOCK) {
    size_t nb = ix->n - b < RESIDUAL_BLOCK ? ix->n - b : RESIDUAL_BLOCK;
    for (size_t i = 0; i < nb; i++) {
      uint32_t r = ix->ids[b + i];
      const float *x = ix->vecs + (size_t)r * dim;
      const float *c = ix->cent + (size_t)assign[r] * dim;
      for (uint32_t d = 0; d < dim; d++) res[i * dim + d] = x[d] - c[d];
    }
    rc = pq_encode(ix->pq, res, nb, codes, err);
    if (rc != QV_OK) goto out;
    memcpy(ix->codes + b * m, codes, nb * m);
  }
  if (ix->metric == VEC_L2SQ) rc = ivf_compute_rterm(ix, err);
out:
  qv_free(res);
  qv_free(codes);
  return rc;
}

qv_rc ivf_build(const float *vecs, uint32_t n, uint32_t dim,
                vec_metric metric, const ivf_params *p, ivf **out,
                qv_err *err) {
  if (n == 0 || dim == 0)
    return qv_err_set(err, QV_EINVAL, "ivf: %u rows of %u dimensions", n,
                      dim);
  if (metric != VEC_L2SQ && metric != VEC_NEG_DOT)
    return qv_err_set(err, QV_EINVAL,
                      "ivf: metric %d, expected L2SQ or NEG_DOT", (int)metric);
  if (p->kind != IVF_FLAT && p->kind != IVF_PQ)
    return qv_err_set(err, QV_EINVAL, "ivf: kind %d", (int)p->kind);
  if (p->nlist < IVF_NLIST_MIN || p->nlist > IVF_NLIST_MAX || p->nlist > n)
    return qv_err_set(err, QV_EINVAL,
                      "ivf: nlist %u, expected %u..%u and at most %u rows",
                      p->nlist, IVF_NLIST_MIN, IVF_NLIST_MAX, n);
  if (p->kind == IVF_PQ && (p->pq_m == 0 || p->pq_m > dim || n < PQ_KSUB))
    return qv_err_set(err, QV_EINVAL,
                      "ivf-pq: m %u for %u dimensions and %u rows, expected "
                      "1..dim and at least %u rows",
                      p->pq_m, dim, n, PQ_KSUB);
  ivf *ix = NULL;
  qv_rc rc = ivf_shell_new(p->kind, metric, n, dim, p->nlist, vecs, &ix, err);
  if (rc != QV_OK) return rc;
  uint32_t *assign = qv_malloc((size_t)n * sizeof(uint32_t));
  ix->cent = qv_malloc((size_t)p->nlist * dim * sizeof(float));
  if (assign == NULL || ix->cent == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "ivf: no memory for %u rows", n);
    goto out;
  }
  kmeans_params kp;
  kmeans_params_init(&kp, p->nlist);
  kp.n_iter = p->n_iter;
  kp.max_per_centroid = p->max_per_centroid;
  kp.n_threads = p->n_threads ? p->n_threads : 1;
  kp.seed = p->seed;
  rc = kmeans_train(vecs, n, dim, &kp, ix->cent, NULL, err);
  if (rc == QV_OK)
    rc = kmeans_assign(ix->cent, p->nlist, dim, vecs, n, kp.n_threads,
                       assign, NULL, err);
  if (rc == QV_OK) rc = make_lists(ix, assign, err);
  if (rc == QV_OK && p->kind == IVF_PQ) rc = build_pq(ix, p, assign, err);
out:
  qv_free(assign);
  if (rc != QV_OK) {
    ivf_free(ix);
    return rc;
  }
  *out = ix;
  return QV_OK;
}

qv_rc ivf_compute_rterm(ivf *ix, qv_err *err) {
  uint32_t dim = ix->dim, m = ix->pq->m;
  ix->rterm = qv_malloc(((size_t)ix->n ? ix->n : 1) * sizeof(float));
  float *r = qv_malloc((size_t)dim * sizeof(float));
  if (ix->rterm == NULL || r == NULL) {
    qv_free(r);
    return qv_err_set(err, QV_ENOMEM, "ivf: no memory for %u rows", ix->n);
  }
  for (uint32_t l = 0; l < ix->nlist; l++) {
    const float *c = ix->cent + (size_t)l * dim;
    for (uint32_t i = ix->list_off[l]; i < ix->list_off[l + 1]; i++) {
      pq_decode(ix->pq, ix->codes + (size_t)i * m, r);
      double t = 0;
      for (uint32_t d = 0; d < dim; d++) t += (double)r[d] * (r[d] + 2 * c[d]);
      ix->rterm[i] = (float)t;
    }
  }
  qv_free(r);
  return QV_OK;
}

/* ---- search ------------------------------------------------------------- */

ivf_scratch *ivf_scratch_new(void) { return qv_calloc(1, sizeof(ivf_scratch)); }

void ivf_scratch_free(ivf_scratch *s) {
  if (s == NULL) return;
  qv_free(s->cdist);
  qv_free(s->probe);
  qv_free(s->lut);
  qv_free(s->adc);
  qv_free(s->short_);
  qv_free(s->best);
  qv_free(s);
}

/* Makes *p hold at least `want` elements of `size` bytes. */
static bool grow(void **p, size_t *have, size_t want, size_t size) {
  if (*have >= want) return true;
  void *q = qv_malloc(want * size);
  if (q == NULL) return false;
  qv_free(*p);
  *p = q;
  *have = want;
  return true;
}

#define GROW(s, field, cap, want)                                              \
  grow((void **)&(s)->field, &(s)->cap, (want), sizeof(*(s)->field))

static inline bool allowed(const ivf_search_params *sp, uint32_t row) {
  return sp->allow == NULL || sp->allow(sp->allow_ctx, row);
}

qv_rc ivf_search(const ivf *ix, const float *query, uint32_t k,
                 const ivf_search_params *sp, ivf_scratch *s, quant_hit *out,
                 uint32_t *n_out) {
  *n_out = 0;
  if (k == 0) return QV_OK;
  uint32_t nprobe = sp->nprobe < 1 ? 1 : sp->nprobe;
  if (nprobe > ix->nlist) nprobe = ix->nlist;
  bool is_pq = ix->kind == IVF_PQ;
  uint32_t n_short = k;
  if (is_pq && sp->rescore > k) n_short = sp->rescore;
  if (!GROW(s, cdist, n_cdist, ix->nlist) || !GROW(s, probe, n_probe, nprobe) ||
      !GROW(s, best, n_best, k) || !GROW(s, short_, n_short, n_short) ||
      (is_pq && (!GROW(s, lut, n_lut, (size_t)ix->pq->m * PQ_KSUB) ||
                 !GROW(s, adc, n_adc, ix->max_list > 0 ? ix->max_list : 1))))
    return QV_ENOMEM;

  const dist_ops *dops = dist_ops_get();
  vec_dist_fn full = dist_fn(dops, ix->metric);
  /* Coarse step: squared L2 to every centroid, keep the nprobe nearest. */
  quant_topk probe;
  quant_topk_init(&probe, s->probe, nprobe);
  for (uint32_t l = 0; l < ix->nlist; l++) {
    float d = dops->l2sq(query, ix->cent + (size_t)l * ix->dim, ix->dim);
    s->cdist[l] = d;
    if (d < quant_topk_bound(&probe)) quant_topk_push(&probe, l, d);
  }
  quant_topk_sort(&probe); /* nearest lists first: the heap fills sooner */

  quant_topk top;
  quant_topk_init(&top, is_pq ? s->short_ : s->best, n_short);
  if (!is_pq) {
    for (uint32_t pi = 0; pi < probe.n; pi++) {
      uint32_t l = probe.h[pi].row;
      for (uint32_t i = ix->list_off[l]; i < ix->list_off[l + 1]; i++) {
        uint32_t r = ix->ids[i];
        if (i + 1 < ix->list_off[l + 1])
          __builtin_prefetch(ix->vecs + (size_t)ix->ids[i + 1] * ix->dim);
        float d = full(query, ix->vecs + (size_t)r * ix->dim, ix->dim);
        if (d < quant_topk_bound(&top) && allowed(sp, r))
          quant_topk_push(&top, r, d);
      }
    }
  } else {
    const pq_ops *pops = pq_ops_get();
    const pq *q = ix->pq;
    bool dot = ix->metric == VEC_NEG_DOT;
    /* One table of -<q_j, centroid> serves every list. Dot: <q, c + r> =
     * <q, c> + <q, r>. L2: |q - c - r|^2 = |q - c|^2 - 2 <q, r> + rterm,
     * with |q - c|^2 from the coarse step (see ivf_int.h). */
    pq_lut(q, pops, query, VEC_NEG_DOT, s->lut);
    for (uint32_t pi = 0; pi < probe.n; pi++) {
      uint32_t l = probe.h[pi].row;
      uint32_t lo = ix->list_off[l], cnt = ix->list_off[l + 1] - lo;
      if (cnt == 0) continue;
      pops->adc_batch(s->lut, ix->codes + (size_t)lo * q->m, cnt, q->m,
                      s->adc);
      if (dot) {
        float bias = -dops->dot(query, ix->cent + (size_t)l * ix->dim, ix->dim);
        for (uint32_t i = 0; i < cnt; i++) s->adc[i] += bias;
      } else {
        float bias = s->cdist[l];
        const float *rt = ix->rterm + lo;
        for (uint32_t i = 0; i < cnt; i++)
          s->adc[i] = bias + 2.0f * s->adc[i] + rt[i];
      }
      for (uint32_t i = 0; i < cnt; i++) {
        float d = s->adc[i];
        uint32_t r = ix->ids[lo + i];
        if (d < quant_topk_bound(&top) && allowed(sp, r))
          quant_topk_push(&top, r, d);
      }
    }
    if (sp->rescore > 0) { /* exact distances for the shortlist */
      quant_topk fin;
      quant_topk_init(&fin, s->best, k);
      for (uint32_t i = 0; i < top.n; i++) {
        uint32_t r = top.h[i].row;
        quant_topk_push(&fin, r,
                        full(query, ix->vecs + (size_t)r * ix->dim, ix->dim));
      }
      top = fin;
    }
  }
  quant_topk_sort(&top);
  uint32_t n = top.n < k ? top.n : k;
  memcpy(out, top.h, n * sizeof *out);
  *n_out = n;
  return QV_OK;
}
