/* bq.c: training, encoding, query preparation and the scalar reference
 * kernels of binary quantization (bq.h).
 *
 * Owns the level rule (thresholds from mean and spread refined by Lloyd-Max
 * passes, level values from bucket means) and the dispatch of bq_ops. Does not own the SIMD kernels
 * (bq_avx2.c, bq_avx512.c).
 * Invariant: bits past dim are always 0 in a code and their weights are 0 in
 * a query, so kernels may process whole words. */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "quant/bq.h"

void bq_params_init(bq_params *p, uint32_t bits) {
  p->bits = bits;
  p->n_lloyd = BQ_LLOYD_DEFAULT;
}

/* Level values = mean of the sampled values in each level (an empty level
 * takes its boundary). `acc` is 2 (bits + 1) dim doubles of scratch. */
static void level_means(bq *b, const float *x, size_t n, size_t ns,
                        double *acc) {
  uint32_t dim = b->dim, bits = b->bits;
  double *lsum = acc, *lcnt = acc + (size_t)(bits + 1) * dim;
  memset(acc, 0, 2 * (size_t)(bits + 1) * dim * sizeof(double));
  for (size_t i = 0; i < ns; i++) {
    const float *row = x + (size_t)((double)i * n / ns) * dim;
    for (uint32_t d = 0; d < dim; d++) {
      uint32_t lv = row[d] > b->thr[d];
      if (bits == 2) lv += row[d] > b->thr[dim + d];
      lsum[(size_t)lv * dim + d] += row[d];
      lcnt[(size_t)lv * dim + d] += 1;
    }
  }
  for (uint32_t d = 0; d < dim; d++) {
    for (uint32_t lv = 0; lv <= bits; lv++) {
      size_t k = (size_t)lv * dim + d;
      if (lcnt[k] > 0) {
        b->recon[k] = (float)(lsum[k] / lcnt[k]);
      } else {
        uint32_t t = lv < bits ? lv : bits - 1;
        b->recon[k] = b->thr[(size_t)t * dim + d];
      }
    }
  }
}

qv_rc bq_train(const float *x, size_t n, uint32_t dim, const bq_params *p,
               bq **out, qv_err *err) {
  uint32_t bits = p->bits;
  if (n == 0 || dim == 0)
    return qv_err_set(err, QV_EINVAL, "bq: %zu vectors of %u dimensions", n,
                      dim);
  if (bits != 1 && bits != 2)
    return qv_err_set(err, QV_EINVAL, "bq: %u bits, expected 1 or 2", bits);
  if (p->n_lloyd > BQ_LLOYD_MAX)
    return qv_err_set(err, QV_EINVAL, "bq: %u Lloyd passes, at most %u",
                      p->n_lloyd, BQ_LLOYD_MAX);
  bq *b = qv_calloc(1, sizeof *b);
  float *thr = qv_malloc((size_t)bits * dim * sizeof(float));
  float *recon = qv_calloc((size_t)(bits + 1) * dim, sizeof(float));
  double *acc = qv_calloc(2 * (size_t)dim + (size_t)(bits + 1) * dim * 2,
                          sizeof(double));
  qv_rc rc = QV_OK;
  if (b == NULL || thr == NULL || recon == NULL || acc == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "bq: no memory for %u dimensions", dim);
    goto out;
  }
  b->dim = dim;
  b->bits = bits;
  b->n_words = (dim + 63) / 64;
  b->thr = thr;
  b->recon = recon;
  size_t ns = n < BQ_SAMPLE_ROWS ? n : BQ_SAMPLE_ROWS;
  double *sum = acc, *sq = acc + dim;
  /* Pass 1: mean and spread per dimension (double sums: 20k rows of
   * float would lose digits). */
  for (size_t i = 0; i < ns; i++) {
    const float *row = x + (size_t)((double)i * n / ns) * dim;
    for (uint32_t d = 0; d < dim; d++) {
      if (!isfinite(row[d])) {
        rc = qv_err_set(err, QV_EINVAL, "bq: training data holds %g",
                        (double)row[d]);
        goto out;
      }
      sum[d] += row[d];
      sq[d] += (double)row[d] * row[d];
    }
  }
  for (uint32_t d = 0; d < dim; d++) {
    double mean = sum[d] / ns;
    double var = sq[d] / ns - mean * mean;
    double sd = var > 0 ? sqrt(var) : 0;
    if (bits == 1) {
      thr[d] = (float)mean;
    } else {
      thr[d] = (float)(mean - BQ_TERCILE * sd);
      thr[dim + d] = (float)(mean + BQ_TERCILE * sd);
    }
  }
  /* Pass 2: level values; then Lloyd-Max passes move each threshold to
   * the midpoint of its two level values (1-D k-means per dimension), which
   * lowers the reconstruction error the asymmetric score is exact for. */
  level_means(b, x, n, ns, acc + 2 * (size_t)dim);
  for (uint32_t it = 0; it < p->n_lloyd; it++) {
    for (uint32_t d = 0; d < dim; d++)
      for (uint32_t pl = 0; pl < bits; pl++)
        thr[(size_t)pl * dim + d] = (recon[(size_t)pl * dim + d] +
                                     recon[(size_t)(pl + 1) * dim + d]) /
                                    2;
    level_means(b, x, n, ns, acc + 2 * (size_t)dim);
  }
out:
  qv_free(acc);
  if (rc != QV_OK) {
    qv_free(thr);
    qv_free(recon);
    qv_free(b);
    return rc;
  }
  *out = b;
  return QV_OK;
}

void bq_free(bq *b) {
  if (b == NULL) return;
  qv_free(b->thr);
  qv_free(b->recon);
  qv_free(b);
}

void bq_encode(const bq *b, const float *x, size_t n, uint64_t *codes) {
  size_t nw = b->n_words, cw = bq_code_words(b);
  for (size_t r = 0; r < n; r++) {
    const float *row = x + r * b->dim;
    uint64_t *c = codes + r * cw;
    memset(c, 0, cw * sizeof(uint64_t));
    for (uint32_t p = 0; p < b->bits; p++) {
      const float *t = b->thr + (size_t)p * b->dim;
      for (uint32_t d = 0; d < b->dim; d++)
        if (row[d] > t[d]) c[p * nw + d / 64] |= (uint64_t)1 << (d % 64);
    }
  }
}

void bq_decode(const bq *b, const uint64_t *code, float *x) {
  size_t nw = b->n_words;
  for (uint32_t d = 0; d < b->dim; d++) {
    uint32_t lv = 0;
    for (uint32_t p = 0; p < b->bits; p++)
      lv += (code[p * nw + d / 64] >> (d % 64)) & 1u;
    x[d] = b->recon[(size_t)lv * b->dim + d];
  }
}

qv_rc bq_query_new(const bq *b, bq_query **out, qv_err *err) {
  bq_query *qq = qv_calloc(1, sizeof *qq);
  size_t nw = bq_code_words(b);
  float *w = qv_calloc(nw * 64, sizeof(float));
  if (qq == NULL || w == NULL) {
    qv_free(qq);
    qv_free(w);
    return qv_err_set(err, QV_ENOMEM, "bq: no memory for a query");
  }
  qq->n_words = nw;
  qq->w = w;
  *out = qq;
  return QV_OK;
}

void bq_query_free(bq_query *qq) {
  if (qq == NULL) return;
  qv_free(qq->w);
  qv_free(qq);
}

/* The per-dimension term of `metric` between q and v. */
static inline double term(vec_metric metric, double q, double v) {
  switch (metric) {
  case VEC_NEG_DOT: return -q * v;
  case VEC_L1: return fabs(q - v);
  default: return (q - v) * (q - v);
  }
}

/* A thermometer code has bit p set exactly when the level is > p, so the
 * term of level L is term(r_0) + sum_{p < L} (term(r_{p+1}) - term(r_p)):
 * the base holds every term(r_0), the weight of bit p the step. */
void bq_query_prepare(const bq *b, const float *query, vec_metric metric,
                      bq_query *qq) {
  double base = 0;
  size_t plane = (size_t)b->n_words * 64;
  for (uint32_t d = 0; d < b->dim; d++) {
    double prev = term(metric, query[d], b->recon[d]);
    base += prev;
    for (uint32_t p = 0; p < b->bits; p++) {
      double next =
          term(metric, query[d], b->recon[(size_t)(p + 1) * b->dim + d]);
      qq->w[p * plane + d] = (float)(next - prev);
      prev = next;
    }
  }
  qq->base = (float)base;
}

/* ---- scalar reference kernels ----------------------------------------- */

static uint32_t hamming_scalar(const uint64_t *a, const uint64_t *b,
                               size_t n_words) {
  uint32_t s = 0;
  for (size_t i = 0; i < n_words; i++)
    s += (uint32_t)__builtin_popcountll(a[i] ^ b[i]);
  return s;
}

static float asym_scalar(const float *w, const uint64_t *code,
                         size_t n_words) {
  double s = 0;
  for (size_t i = 0; i < n_words; i++)
    for (uint64_t m = code[i]; m != 0; m &= m - 1)
      s += w[i * 64 + (size_t)__builtin_ctzll(m)];
  return (float)s;
}

const bq_ops bq_ops_scalar = {
    .hamming = hamming_scalar,
    .asym = asym_scalar,
    .isa = "scalar",
};

const bq_ops *bq_ops_isa(quant_isa isa) {
  if (!quant_isa_runs(isa)) return NULL;
  switch (isa) {
  case QUANT_ISA_AVX2: return &bq_ops_avx2;
  case QUANT_ISA_AVX512:
    return quant_cpu_has_vpopcntdq() ? &bq_ops_avx512_vpopcnt
                                     : &bq_ops_avx512;
  default: return &bq_ops_scalar;
  }
}

const bq_ops *bq_ops_get(void) { return bq_ops_isa(quant_isa_chosen()); }
