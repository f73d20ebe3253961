/* bq.c: training, encoding, query preparation and the scalar reference
 * kernels of binary quantization (bq.h).
 *
 * Owns the level rule (thresholds from mean and spread refined by Lloyd-Max
 * passes, level values from bucket means), the one-and-a-half-bit plane
 * allocation (largest drops of the training squared error first) and the
 * code layout, and the dispatch of bq_ops. Does not own the SIMD kernels
 * (bq_avx2.c, bq_avx512.c), which see only words and weights.
 * Invariant: padding bits (past dim in each plane of a 1/2-bit code, past
 * sum(nb) in a 1.5-bit one) are always 0 in a code and their weights are 0
 * in a prepared query, so kernels may process whole words. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "quant/bq.h"

void bq_params_init(bq_params *p, uint32_t bits) {
  p->bits = bits;
  p->n_lloyd = BQ_LLOYD_DEFAULT;
  p->max_planes = BQ_MIX_PLANES_DEFAULT;
}

/* Standard normal quantiles that cut it into P + 1 equal-mass levels: the
 * starting thresholds (mean + z sd) of a P-plane thermometer code. */
static const float start_z[BQ_PLANES_MAX][BQ_PLANES_MAX] = {
    {0.0f}, {-BQ_TERCILE, BQ_TERCILE}, {-0.6745f, 0.0f, 0.6745f}};

static inline const float *sample_row(const float *x, size_t n, size_t ns, uint32_t dim,
                                      size_t i) {
  return x + (size_t)((double)i * n / ns) * dim;
}

/* Level values of a P-plane code = mean of the sampled values in each level
 * (an empty level takes its boundary). `acc` is 2 (P + 1) dim doubles: the
 * level sums, then the level counts, left there for sse_of. */
static void level_means(const float *x, size_t n, size_t ns, uint32_t dim, uint32_t P,
                        const float *thr, float *recon, double *acc) {
  double *lsum = acc, *lcnt = acc + (size_t)(P + 1) * dim;
  memset(acc, 0, 2 * (size_t)(P + 1) * dim * sizeof(double));
  for (size_t i = 0; i < ns; i++) {
    const float *row = sample_row(x, n, ns, dim, i);
    for (uint32_t d = 0; d < dim; d++) {
      uint32_t lv = 0;
      for (uint32_t p = 0; p < P; p++) lv += row[d] > thr[(size_t)p * dim + d];
      lsum[(size_t)lv * dim + d] += row[d];
      lcnt[(size_t)lv * dim + d] += 1;
    }
  }
  for (uint32_t d = 0; d < dim; d++) {
    for (uint32_t lv = 0; lv <= P; lv++) {
      size_t k = (size_t)lv * dim + d;
      if (lcnt[k] > 0) {
        recon[k] = (float)(lsum[k] / lcnt[k]);
      } else {
        uint32_t t = lv < P ? lv : P - 1;
        recon[k] = thr[(size_t)t * dim + d];
      }
    }
  }
}

/* Fits a P-plane thermometer code to every dimension: thresholds from
 * mean + z sd, level values, then n_lloyd Lloyd-Max passes moving each
 * threshold to the midpoint of its two level values (1-D k-means per
 * dimension), which lowers the reconstruction error the asymmetric score
 * is exact for. */
static void fit_planes(const float *x, size_t n, size_t ns, uint32_t dim, uint32_t P,
                       uint32_t n_lloyd, const double *mean, const double *sd, float *thr,
                       float *recon, double *acc) {
  for (uint32_t d = 0; d < dim; d++)
    for (uint32_t p = 0; p < P; p++)
      thr[(size_t)p * dim + d] = (float)(mean[d] + start_z[P - 1][p] * sd[d]);
  level_means(x, n, ns, dim, P, thr, recon, acc);
  for (uint32_t it = 0; it < n_lloyd; it++) {
    for (uint32_t d = 0; d < dim; d++)
      for (uint32_t p = 0; p < P; p++)
        thr[(size_t)p * dim + d] =
            (recon[(size_t)p * dim + d] + recon[(size_t)(p + 1) * dim + d]) / 2;
    level_means(x, n, ns, dim, P, thr, recon, acc);
  }
}

/* Squared error of each dimension's reconstruction over the sample, from
 * the level sums level_means left in `acc` (levels hold their means, so
 * SSE = sum x^2 - sum over levels of sum^2 / count). */
static void sse_of(const double *acc, const double *sq, uint32_t dim, uint32_t P,
                   double *sse) {
  const double *lsum = acc, *lcnt = acc + (size_t)(P + 1) * dim;
  for (uint32_t d = 0; d < dim; d++) {
    double s = sq[d];
    for (uint32_t lv = 0; lv <= P; lv++) {
      size_t k = (size_t)lv * dim + d;
      if (lcnt[k] > 0) s -= lsum[k] * lsum[k] / lcnt[k];
    }
    sse[d] = s > 0 ? s : 0;
  }
}

/* Plane offsets and words per code from bits and nb; false when the planes
 * do not fit the code (only possible for tables read from a file). */
static bool set_layout(bq *b) {
  b->n_words = (b->dim + 63) / 64;
  memset(b->plane_off, 0, sizeof b->plane_off);
  if (b->bits != BQ_ONE_AND_HALF) {
    for (uint32_t p = 0; p < b->bits; p++) b->plane_off[p] = p * b->n_words * 64;
    b->code_words = b->bits * b->n_words;
    return true;
  }
  uint64_t off = 0;
  for (uint32_t p = 0; p < b->n_planes; p++) {
    b->plane_off[p] = (uint32_t)off;
    for (uint32_t d = 0; d < b->dim; d++) off += b->nb[d] > p;
  }
  b->code_words = bq_mixed_words(b->dim);
  return off <= (uint64_t)b->code_words * 64;
}

uint32_t bq_code_bits(const bq *b) {
  uint32_t s = 0;
  for (uint32_t d = 0; d < b->dim; d++) s += b->nb[d];
  return s;
}

typedef struct plane_gain {
  double gain; /* drop of the squared error this plane buys (made concave) */
  uint32_t d, k; /* dimension, plane number 1.. */
} plane_gain;

static int by_gain(const void *pa, const void *pb) {
  const plane_gain *a = pa, *b = pb;
  if (a->gain != b->gain) return a->gain > b->gain ? -1 : 1;
  if (a->k != b->k) return a->k < b->k ? -1 : 1;
  return a->d < b->d ? -1 : a->d > b->d;
}

/* Shares `budget` planes among the dimensions: sse[k * dim + d] is the
 * error of dimension d with k planes (k = 0..P). Each dimension's drops are
 * made non-increasing by pooling adjacent violators (so taking the largest
 * drops first takes a dimension's planes in order, ties broken by plane
 * number), then the `budget` largest positive drops win. Greedy on a concave
 * envelope: optimal up to the pooled blocks. */
static qv_rc allocate_planes(const double *sse, uint32_t dim, uint32_t P, uint64_t budget,
                             uint8_t *nb, qv_err *err) {
  plane_gain *g = qv_malloc((size_t)dim * P * sizeof *g);
  if (g == NULL) return qv_err_set(err, QV_ENOMEM, "bq: no memory for %u dimensions", dim);
  for (uint32_t d = 0; d < dim; d++) {
    double inc[BQ_PLANES_MAX];
    uint32_t len[BQ_PLANES_MAX], nblk = 0;
    for (uint32_t k = 1; k <= P; k++) {
      inc[nblk] = sse[(size_t)(k - 1) * dim + d] - sse[(size_t)k * dim + d];
      len[nblk++] = 1;
      while (nblk > 1 && inc[nblk - 2] < inc[nblk - 1]) { /* pool the violators */
        double tot = inc[nblk - 2] * len[nblk - 2] + inc[nblk - 1] * len[nblk - 1];
        len[nblk - 2] += len[nblk - 1];
        inc[nblk - 2] = tot / len[nblk - 2];
        nblk--;
      }
    }
    uint32_t k = 1;
    for (uint32_t bk = 0; bk < nblk; bk++)
      for (uint32_t j = 0; j < len[bk]; j++, k++)
        g[(size_t)d * P + k - 1] = (plane_gain){inc[bk], d, k};
  }
  qsort(g, (size_t)dim * P, sizeof *g, by_gain);
  /* A plane that buys (up to rounding) nothing stays unused: a constant
   * dimension scores the same as its mean either way, and an unused bit
   * is a 0 that costs no memory beyond the code's fixed words. */
  double total = 0;
  for (uint32_t d = 0; d < dim; d++) total += sse[d];
  memset(nb, 0, dim);
  for (uint64_t i = 0; i < budget && i < (uint64_t)dim * P && g[i].gain > 1e-9 * total; i++)
    nb[g[i].d]++;
  qv_free(g);
  return QV_OK;
}

/* One and a half bits: fits 1..P planes to every dimension, shares the
 * code's bits by error drop, and keeps for each dimension the tables of
 * the plane count it got. `sq` and `mean` are per-dimension sums of
 * squares and means over the ns sampled rows. */
static qv_rc train_mixed(bq *b, const float *x, size_t n, size_t ns, uint32_t n_lloyd,
                         const double *mean, const double *sd, const double *sq,
                         qv_err *err) {
  uint32_t dim = b->dim, P = b->n_planes;
  size_t fl = 0; /* floats of the tables of 1..P planes */
  for (uint32_t k = 1; k <= P; k++) fl += (size_t)(2 * k + 1) * dim;
  float *tab = qv_malloc(fl * sizeof(float));
  double *sse = qv_malloc((size_t)(P + 1) * dim * sizeof(double));
  double *acc = qv_malloc(2 * (size_t)(P + 1) * dim * sizeof(double));
  qv_rc rc = QV_OK;
  if (tab == NULL || sse == NULL || acc == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "bq: no memory for %u dimensions", dim);
    goto out;
  }
  for (uint32_t d = 0; d < dim; d++) { /* no planes: the mean */
    double s = sq[d] - (double)ns * mean[d] * mean[d];
    sse[d] = s > 0 ? s : 0;
  }
  float *t = tab;
  for (uint32_t k = 1; k <= P; k++) {
    float *thr = t, *recon = t + (size_t)k * dim;
    fit_planes(x, n, ns, dim, k, n_lloyd, mean, sd, thr, recon, acc);
    sse_of(acc, sq, dim, k, sse + (size_t)k * dim);
    t += (size_t)(2 * k + 1) * dim;
  }
  uint64_t budget = (uint64_t)bq_mixed_words(dim) * 64;
  rc = allocate_planes(sse, dim, P, budget, b->nb, err);
  if (rc != QV_OK) goto out;
  /* Final tables: dimension d takes those of its nb[d]-plane fit; unused
   * planes repeat the last threshold and unused levels the top level, so
   * every table value stays finite and meaningful. */
  for (uint32_t d = 0; d < dim; d++) {
    uint32_t k = b->nb[d];
    const float *kt = tab;
    for (uint32_t j = 1; j < k; j++) kt += (size_t)(2 * j + 1) * dim;
    for (uint32_t p = 0; p < P; p++)
      b->thr[(size_t)p * dim + d] =
          k == 0 ? (float)mean[d] : kt[(size_t)(p < k ? p : k - 1) * dim + d];
    for (uint32_t lv = 0; lv <= P; lv++)
      b->recon[(size_t)lv * dim + d] =
          k == 0 ? (float)mean[d] : kt[(size_t)k * dim + (size_t)(lv < k ? lv : k) * dim + d];
  }
  set_layout(b);
out:
  qv_free(tab);
  qv_free(sse);
  qv_free(acc);
  return rc;
}

static bq *bq_alloc(uint32_t dim, uint32_t bits, uint32_t n_planes) {
  bq *b = qv_calloc(1, sizeof *b);
  if (b == NULL) return NULL;
  b->dim = dim;
  b->bits = bits;
  b->n_planes = n_planes;
  b->nb = qv_malloc(dim);
  b->thr = qv_malloc((size_t)n_planes * dim * sizeof(float));
  b->recon = qv_calloc((size_t)(n_planes + 1) * dim, sizeof(float));
  if (b->nb == NULL || b->thr == NULL || b->recon == NULL) {
    bq_free(b);
    return NULL;
  }
  memset(b->nb, (int)(bits == BQ_ONE_AND_HALF ? 0 : bits), dim);
  return b;
}

qv_rc bq_train(const float *x, size_t n, uint32_t dim, const bq_params *p,
               bq **out, qv_err *err) {
  uint32_t bits = p->bits;
  bool mixed = bits == BQ_ONE_AND_HALF;
  if (n == 0 || dim == 0)
    return qv_err_set(err, QV_EINVAL, "bq: %zu vectors of %u dimensions", n,
                      dim);
  if (bits != 1 && bits != 2 && !mixed)
    return qv_err_set(err, QV_EINVAL, "bq: encoding %u, expected 1, 2 or %u (1.5 bits)", bits,
                      BQ_ONE_AND_HALF);
  if (p->n_lloyd > BQ_LLOYD_MAX)
    return qv_err_set(err, QV_EINVAL, "bq: %u Lloyd passes, at most %u",
                      p->n_lloyd, BQ_LLOYD_MAX);
  if (mixed && (p->max_planes < 1 || p->max_planes > BQ_PLANES_MAX))
    return qv_err_set(err, QV_EINVAL, "bq: %u planes a dimension, expected 1..%u",
                      p->max_planes, BQ_PLANES_MAX);
  uint32_t P = mixed ? p->max_planes : bits;
  bq *b = bq_alloc(dim, bits, P);
  double *acc = qv_calloc(3 * (size_t)dim + (size_t)(P + 1) * dim * 2, sizeof(double));
  qv_rc rc = QV_OK;
  if (b == NULL || acc == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "bq: no memory for %u dimensions", dim);
    goto out;
  }
  size_t ns = n < BQ_SAMPLE_ROWS ? n : BQ_SAMPLE_ROWS;
  double *sum = acc, *sq = acc + dim, *sd = acc + 2 * (size_t)dim;
  /* Pass 1: mean and spread per dimension (double sums: 20k rows of
   * float would lose digits). */
  for (size_t i = 0; i < ns; i++) {
    const float *row = sample_row(x, n, ns, dim, i);
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
    sum[d] /= ns; /* now the mean */
    double var = sq[d] / ns - sum[d] * sum[d];
    sd[d] = var > 0 ? sqrt(var) : 0;
  }
  if (mixed) {
    rc = train_mixed(b, x, n, ns, p->n_lloyd, sum, sd, sq, err);
  } else {
    fit_planes(x, n, ns, dim, bits, p->n_lloyd, sum, sd, b->thr, b->recon,
               acc + 3 * (size_t)dim);
    set_layout(b);
  }
out:
  qv_free(acc);
  if (rc != QV_OK) {
    bq_free(b);
    return rc;
  }
  *out = b;
  return QV_OK;
}

qv_rc bq_from_tables(uint32_t dim, uint32_t bits, uint32_t n_planes, const float *thr,
                     const float *recon, const uint8_t *nb, bq **out, qv_err *err) {
  bool mixed = bits == BQ_ONE_AND_HALF;
  if (dim == 0 || (bits != 1 && bits != 2 && !mixed))
    return qv_err_set(err, QV_EINVAL, "bq: encoding %u of %u dimensions", bits, dim);
  if (mixed ? n_planes < 1 || n_planes > BQ_PLANES_MAX || nb == NULL : n_planes != bits)
    return qv_err_set(err, QV_EINVAL, "bq: %u planes for encoding %u", n_planes, bits);
  bq *b = bq_alloc(dim, bits, n_planes);
  if (b == NULL) return qv_err_set(err, QV_ENOMEM, "bq: no memory for %u dimensions", dim);
  memcpy(b->thr, thr, (size_t)n_planes * dim * sizeof(float));
  memcpy(b->recon, recon, (size_t)(n_planes + 1) * dim * sizeof(float));
  if (mixed) {
    for (uint32_t d = 0; d < dim; d++)
      if (nb[d] > n_planes) {
        bq_free(b);
        return qv_err_set(err, QV_EINVAL, "bq: dimension %u has %u planes of %u", d,
                          nb[d], n_planes);
      }
    memcpy(b->nb, nb, dim);
  }
  if (!set_layout(b)) {
    bq_free(b);
    return qv_err_set(err, QV_EINVAL, "bq: the planes hold more bits than %u words",
                      bq_mixed_words(dim));
  }
  *out = b;
  return QV_OK;
}

void bq_free(bq *b) {
  if (b == NULL) return;
  qv_free(b->nb);
  qv_free(b->thr);
  qv_free(b->recon);
  qv_free(b);
}

/* For 1/2 bits every dimension is in every plane, so the running count of
 * plane p is d and the bit is plane_off[p] + d: the plane-major layout. */
void bq_encode(const bq *b, const float *x, size_t n, uint64_t *codes) {
  size_t cw = bq_code_words(b);
  uint32_t dim = b->dim;
  for (size_t r = 0; r < n; r++) {
    const float *row = x + r * dim;
    uint64_t *c = codes + r * cw;
    uint32_t cnt[BQ_PLANES_MAX];
    memcpy(cnt, b->plane_off, sizeof cnt);
    memset(c, 0, cw * sizeof(uint64_t));
    for (uint32_t d = 0; d < dim; d++)
      for (uint32_t p = 0; p < b->nb[d]; p++) {
        uint32_t bit = cnt[p]++;
        if (row[d] > b->thr[(size_t)p * dim + d]) c[bit / 64] |= (uint64_t)1 << (bit % 64);
      }
  }
}

void bq_decode(const bq *b, const uint64_t *code, float *x) {
  uint32_t cnt[BQ_PLANES_MAX];
  memcpy(cnt, b->plane_off, sizeof cnt);
  for (uint32_t d = 0; d < b->dim; d++) {
    uint32_t lv = 0;
    for (uint32_t p = 0; p < b->nb[d]; p++) {
      uint32_t bit = cnt[p]++;
      lv += (code[bit / 64] >> (bit % 64)) & 1u;
    }
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
  uint32_t cnt[BQ_PLANES_MAX];
  memcpy(cnt, b->plane_off, sizeof cnt);
  /* padding and (for a reused query) other layouts' positions read 0 */
  memset(qq->w, 0, qq->n_words * 64 * sizeof(float));
  for (uint32_t d = 0; d < b->dim; d++) {
    double prev = term(metric, query[d], b->recon[d]);
    base += prev;
    for (uint32_t p = 0; p < b->nb[d]; p++) {
      double next =
          term(metric, query[d], b->recon[(size_t)(p + 1) * b->dim + d]);
      qq->w[cnt[p]++] = (float)(next - prev);
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
