/* pq.c: product quantizer training, encoding, decoding, lookup tables and
 * the scalar ADC kernels (pq.h).
 *
 * Owns the subspace split, the parallel per-subspace k-means (kmeans.c does
 * the clustering) and the dispatch of pq_ops. Does not own the SIMD ADC
 * kernels (pq_avx2.c, pq_avx512.c).
 * Invariant: centroids in `cent` and `cent_t` always hold the same values;
 * codes are always < PQ_KSUB by construction (a byte). */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "quant/kmeans.h"
#include "quant/pq.h"

#define PQ_KERN_SUFFIX scalar
#include "quant/pq_kern.h"

void pq_params_init(pq_params *p, uint32_t dim) {
  p->m = pq_m_for_ratio(dim, 16);
  p->n_iter = PQ_ITER_DEFAULT;
  p->max_train = PQ_MAX_TRAIN_DEFAULT;
  p->n_threads = 1;
  p->seed = 0x7071ull; /* "pq" */
}

uint32_t pq_m_for_ratio(uint32_t dim, uint32_t ratio) {
  if (ratio == 0) return dim;
  uint64_t m = ((uint64_t)4 * dim + ratio - 1) / ratio;
  if (m < 1) m = 1;
  if (m > dim) m = dim;
  return (uint32_t)m;
}

static qv_rc pq_alloc(uint32_t dim, uint32_t m, pq **out, qv_err *err) {
  if (dim == 0 || m == 0 || m > dim)
    return qv_err_set(err, QV_EINVAL,
                      "pq: %u subspaces for %u dimensions, expected 1..dim",
                      m, dim);
  pq *q = qv_calloc(1, sizeof *q);
  uint32_t *off = qv_malloc(((size_t)m + 1) * sizeof(uint32_t));
  float *cent = qv_malloc((size_t)PQ_KSUB * dim * sizeof(float));
  float *ct = qv_malloc((size_t)PQ_KSUB * dim * sizeof(float));
  if (q == NULL || off == NULL || cent == NULL || ct == NULL) {
    qv_free(q);
    qv_free(off);
    qv_free(cent);
    qv_free(ct);
    return qv_err_set(err, QV_ENOMEM, "pq: no memory for %u dimensions",
                      dim);
  }
  q->dim = dim;
  q->m = m;
  q->off = off;
  q->cent = cent;
  q->cent_t = ct;
  uint32_t base = dim / m, extra = dim % m;
  off[0] = 0;
  for (uint32_t j = 0; j < m; j++) off[j + 1] = off[j] + base + (j < extra);
  *out = q;
  return QV_OK;
}

/* Rebuilds cent_t from cent for subspace j. */
static void transpose_sub(pq *q, uint32_t j) {
  uint32_t len = q->off[j + 1] - q->off[j];
  const float *c = q->cent + (size_t)PQ_KSUB * q->off[j];
  float *t = q->cent_t + (size_t)PQ_KSUB * q->off[j];
  for (uint32_t k = 0; k < PQ_KSUB; k++)
    for (uint32_t d = 0; d < len; d++)
      t[(size_t)d * PQ_KSUB + k] = c[(size_t)k * len + d];
}

qv_rc pq_from_centroids(uint32_t dim, uint32_t m, const float *cent,
                        pq **out, qv_err *err) {
  pq *q = NULL;
  qv_rc rc = pq_alloc(dim, m, &q, err);
  if (rc != QV_OK) return rc;
  memcpy(q->cent, cent, (size_t)PQ_KSUB * dim * sizeof(float));
  for (uint32_t j = 0; j < m; j++) transpose_sub(q, j);
  *out = q;
  return QV_OK;
}

void pq_free(pq *q) {
  if (q == NULL) return;
  qv_free(q->off);
  qv_free(q->cent);
  qv_free(q->cent_t);
  qv_free(q);
}

/* ---- training: subspaces handed out to threads by an atomic counter --- */

typedef struct train_ctx {
  pq *q;
  const float *x;
  size_t n, ns; /* rows, training rows (evenly spaced) */
  const pq_params *p;
  atomic_uint next;
  atomic_int failed; /* first failing qv_rc, or 0 */
} train_ctx;

static void *train_worker(void *arg) {
  train_ctx *t = arg;
  pq *q = t->q;
  uint32_t maxlen = q->off[1] - q->off[0]; /* the first is the longest */
  float *sub = qv_malloc(t->ns * maxlen * sizeof(float));
  if (sub == NULL) {
    atomic_store(&t->failed, QV_ENOMEM);
    return NULL;
  }
  for (;;) {
    uint32_t j = atomic_fetch_add(&t->next, 1);
    if (j >= q->m || atomic_load(&t->failed) != 0) break;
    uint32_t len = q->off[j + 1] - q->off[j];
    for (size_t i = 0; i < t->ns; i++) {
      const float *row = t->x + (size_t)((double)i * t->n / t->ns) * q->dim;
      memcpy(sub + i * len, row + q->off[j], len * sizeof(float));
    }
    kmeans_params kp;
    kmeans_params_init(&kp, PQ_KSUB);
    kp.n_iter = t->p->n_iter;
    kp.seed = t->p->seed + j; /* a different stream per subspace */
    qv_rc rc = kmeans_train(sub, t->ns, len, &kp,
                            q->cent + (size_t)PQ_KSUB * q->off[j], NULL,
                            NULL);
    if (rc != QV_OK) {
      atomic_store(&t->failed, (int)rc);
      break;
    }
    transpose_sub(q, j);
  }
  qv_free(sub);
  return NULL;
}

qv_rc pq_train(const float *x, size_t n, uint32_t dim, const pq_params *p,
               pq **out, qv_err *err) {
  if (n < PQ_KSUB)
    return qv_err_set(err, QV_EINVAL,
                      "pq: %zu training vectors, need at least %u", n,
                      PQ_KSUB);
  pq *q = NULL;
  qv_rc rc = pq_alloc(dim, p->m, &q, err);
  if (rc != QV_OK) return rc;
  train_ctx t = {.q = q, .x = x, .n = n, .p = p};
  size_t cap = p->max_train >= PQ_KSUB ? p->max_train : PQ_KSUB;
  t.ns = n < cap ? n : cap;
  atomic_init(&t.next, 0);
  atomic_init(&t.failed, 0);
  uint32_t nt = p->n_threads ? p->n_threads : 1;
  if (nt > q->m) nt = q->m;
  pthread_t tid[64];
  if (nt > 64) nt = 64;
  uint32_t started = 0;
  for (uint32_t i = 1; i < nt; i++) {
    if (pthread_create(&tid[i], NULL, train_worker, &t) != 0) break;
    started = i;
  }
  train_worker(&t); /* this thread works too, so 0 extra threads is fine */
  for (uint32_t i = 1; i <= started; i++) pthread_join(tid[i], NULL);
  int failed = atomic_load(&t.failed);
  if (failed != 0) {
    pq_free(q);
    return qv_err_set(err, (qv_rc)failed, "pq: training %u subspaces failed",
                      p->m);
  }
  *out = q;
  return QV_OK;
}

/* ---- encode / decode ---------------------------------------------------- */

#define ENCODE_BLOCK 1024 /* rows per batch: sub-vectors stay in L2 */

qv_rc pq_encode(const pq *q, const float *x, size_t n, uint8_t *codes,
                qv_err *err) {
  uint32_t maxlen = q->off[1] - q->off[0];
  float *sub = qv_malloc((size_t)ENCODE_BLOCK * maxlen * sizeof(float));
  uint32_t *as = qv_malloc(ENCODE_BLOCK * sizeof(uint32_t));
  qv_rc rc = QV_OK;
  if (sub == NULL || as == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "pq: no memory to encode");
    goto out;
  }
  for (size_t b = 0; b < n; b += ENCODE_BLOCK) {
    size_t nb = n - b < ENCODE_BLOCK ? n - b : ENCODE_BLOCK;
    for (uint32_t j = 0; j < q->m; j++) {
      uint32_t len = q->off[j + 1] - q->off[j];
      for (size_t i = 0; i < nb; i++)
        memcpy(sub + i * len, x + (b + i) * q->dim + q->off[j],
               len * sizeof(float));
      rc = kmeans_assign(q->cent + (size_t)PQ_KSUB * q->off[j], PQ_KSUB, len,
                         sub, nb, 1, as, NULL, err);
      if (rc != QV_OK) goto out;
      for (size_t i = 0; i < nb; i++)
        codes[(b + i) * q->m + j] = (uint8_t)as[i];
    }
  }
out:
  qv_free(sub);
  qv_free(as);
  return rc;
}

void pq_decode(const pq *q, const uint8_t *code, float *x) {
  for (uint32_t j = 0; j < q->m; j++) {
    uint32_t len = q->off[j + 1] - q->off[j];
    memcpy(x + q->off[j],
           q->cent + (size_t)PQ_KSUB * q->off[j] + (size_t)code[j] * len,
           len * sizeof(float));
  }
}

void pq_lut(const pq *q, const pq_ops *ops, const float *query,
            vec_metric metric, float *lut) {
  for (uint32_t j = 0; j < q->m; j++) {
    uint32_t len = q->off[j + 1] - q->off[j];
    const float *ct = q->cent_t + (size_t)PQ_KSUB * q->off[j];
    if (metric == VEC_NEG_DOT)
      ops->lut_neg_dot(query + q->off[j], ct, len, lut + (size_t)j * PQ_KSUB);
    else
      ops->lut_l2(query + q->off[j], ct, len, lut + (size_t)j * PQ_KSUB);
  }
}

/* ---- ADC, for every table --------------------------------------------- *
 * Plain loads beat VGATHERDPS here: on this machine (AMD Zen 5) the AVX-512
 * gather ADC scanned Fashion-MNIST x64 codes at 31 M codes/s, AVX2 gathers
 * at 52 M, these scalar loops at 74 M (one code) and 87 M (four codes
 * interleaved), so the SIMD tables share them (bench/README-quant.md). */

/* Four independent sums within one code hide the load latency. */

float pq_adc_scalar(const float *lut, const uint8_t *code, size_t m) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t j = 0;
  for (; j + 4 <= m; j += 4) {
    s0 += lut[(j + 0) * PQ_KSUB + code[j + 0]];
    s1 += lut[(j + 1) * PQ_KSUB + code[j + 1]];
    s2 += lut[(j + 2) * PQ_KSUB + code[j + 2]];
    s3 += lut[(j + 3) * PQ_KSUB + code[j + 3]];
  }
  for (; j < m; j++) s0 += lut[j * PQ_KSUB + code[j]];
  return (s0 + s1) + (s2 + s3);
}

/* Four codes at a time, one sum each: the four chains of table loads are
 * independent, so loads overlap without splitting a code's sum. */
void pq_adc_batch_scalar(const float *lut, const uint8_t *codes, size_t n,
                         size_t m, float *out) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint8_t *c0 = codes + i * m, *c1 = c0 + m, *c2 = c1 + m,
                  *c3 = c2 + m;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t j = 0; j < m; j++) {
      const float *t = lut + j * PQ_KSUB;
      s0 += t[c0[j]];
      s1 += t[c1[j]];
      s2 += t[c2[j]];
      s3 += t[c3[j]];
    }
    out[i] = s0;
    out[i + 1] = s1;
    out[i + 2] = s2;
    out[i + 3] = s3;
  }
  for (; i < n; i++) out[i] = pq_adc_scalar(lut, codes + i * m, m);
}

const pq_ops pq_ops_scalar = {
    .lut_l2 = lut_l2_scalar,
    .lut_neg_dot = lut_neg_dot_scalar,
    .adc = pq_adc_scalar,
    .adc_batch = pq_adc_batch_scalar,
    .isa = "scalar",
};

static const pq_ops *const pq_tables[QUANT_ISA_COUNT] = {
    &pq_ops_scalar, &pq_ops_avx2, &pq_ops_avx512};

const pq_ops *pq_ops_isa(quant_isa isa) {
  return quant_isa_runs(isa) ? pq_tables[isa] : NULL;
}

const pq_ops *pq_ops_get(void) { return pq_tables[quant_isa_chosen()]; }
