/* sq8.c: training, encoding, query preparation and the scalar reference
 * kernels of the int8 quantizer (sq8.h).
 *
 * Owns the range rule (the central `quantile` of a sample, per dimension or
 * over all values) and the dispatch of sq8_ops. Does not own the SIMD
 * kernels (sq8_avx2.c, sq8_avx512.c).
 * Invariant: for a value x inside [lo_d, hi_d], decode(encode(x)) differs
 * from x by at most step_d / 2 plus float rounding; codes are always
 * 0..255 whatever the input (NaN encodes to 0). */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "quant/sq8.h"

void sq8_params_init(sq8_params *p) {
  p->quantile = SQ8_QUANTILE_DEFAULT;
  p->per_dim = false;
}

/* The k-th smallest of v[0..n) (0-based), reordering v. Iterative
 * quickselect with a median-of-three pivot: O(n) expected, no recursion. */
static float select_kth(float *v, size_t n, size_t k) {
  size_t l = 0, r = n - 1;
  while (l < r) {
    size_t m = l + (r - l) / 2;
    float a = v[l], b = v[m], c = v[r];
    float piv = (a < b) ? ((b < c) ? b : (a < c ? c : a))
                        : ((a < c) ? a : (b < c ? c : b));
    size_t i = l, j = r;
    while (i <= j) {
      while (v[i] < piv) i++;
      while (v[j] > piv) j--;
      if (i <= j) {
        float t = v[i];
        v[i] = v[j];
        v[j] = t;
        i++;
        if (j == 0) break;
        j--;
      }
    }
    if (k <= j) r = j;
    else if (k >= i) l = i;
    else return v[k];
  }
  return v[k];
}

/* lo/hi of the central `quantile` of v[0..n) (reorders v). The ranks are
 * floor((1-q)/2 * (n-1)) and its mirror, so q = 1 gives the min and max. */
static void quantile_range(float *v, size_t n, float quantile, float *lo,
                           float *hi) {
  size_t cut = (size_t)floor((1.0 - quantile) / 2.0 * (double)(n - 1));
  *lo = select_kth(v, n, cut);
  *hi = select_kth(v, n, n - 1 - cut);
}

static qv_rc sq8_alloc(uint32_t dim, bool per_dim, sq8 **out, qv_err *err) {
  sq8 *q = qv_calloc(1, sizeof *q);
  float *buf = qv_malloc(3 * (size_t)dim * sizeof(float));
  if (q == NULL || buf == NULL) {
    qv_free(q);
    qv_free(buf);
    return qv_err_set(err, QV_ENOMEM, "sq8: no memory for %u dimensions",
                      dim);
  }
  q->dim = dim;
  q->per_dim = per_dim;
  q->lo = buf;
  q->step = buf + dim;
  q->inv_step = buf + 2 * (size_t)dim;
  *out = q;
  return QV_OK;
}

static void set_range(sq8 *q, uint32_t d, float lo, float hi) {
  q->lo[d] = lo;
  q->step[d] = (hi - lo) / 255.0f;
  q->inv_step[d] = q->step[d] > 0 ? 1.0f / q->step[d] : 0.0f;
}

qv_rc sq8_from_ranges(const float *lo, const float *hi, uint32_t dim,
                      bool per_dim, sq8 **out, qv_err *err) {
  if (dim == 0) return qv_err_set(err, QV_EINVAL, "sq8: dim is 0");
  for (uint32_t d = 0; d < dim; d++)
    if (!isfinite(lo[d]) || !isfinite(hi[d]) || hi[d] < lo[d])
      return qv_err_set(err, QV_EINVAL,
                        "sq8: range of dimension %u is [%g, %g], expected "
                        "finite lo <= hi",
                        d, (double)lo[d], (double)hi[d]);
  sq8 *q = NULL;
  qv_rc rc = sq8_alloc(dim, per_dim, &q, err);
  if (rc != QV_OK) return rc;
  for (uint32_t d = 0; d < dim; d++) set_range(q, d, lo[d], hi[d]);
  *out = q;
  return QV_OK;
}

qv_rc sq8_train(const float *x, size_t n, uint32_t dim, const sq8_params *p,
                sq8 **out, qv_err *err) {
  if (n == 0 || dim == 0)
    return qv_err_set(err, QV_EINVAL, "sq8: %zu vectors of %u dimensions",
                      n, dim);
  if (!(p->quantile > SQ8_QUANTILE_MIN && p->quantile <= SQ8_QUANTILE_MAX))
    return qv_err_set(err, QV_EINVAL,
                      "sq8: quantile %g, expected (%g, %g]",
                      (double)p->quantile, (double)SQ8_QUANTILE_MIN,
                      (double)SQ8_QUANTILE_MAX);
  size_t ns = n < SQ8_SAMPLE_ROWS ? n : SQ8_SAMPLE_ROWS;
  size_t per = p->per_dim ? ns : ns * dim; /* values per range */
  float *v = qv_malloc(per * sizeof(float));
  if (v == NULL) return qv_err_set(err, QV_ENOMEM, "sq8: no memory");
  sq8 *q = NULL;
  qv_rc rc = sq8_alloc(dim, p->per_dim, &q, err);
  if (rc != QV_OK) {
    qv_free(v);
    return rc;
  }
  /* Evenly spaced rows, so a file sorted by anything is still sampled
   * across its whole length; deterministic without a seed. */
  for (uint32_t d = 0; d < (p->per_dim ? dim : 1u); d++) {
    size_t k = 0;
    for (size_t i = 0; i < ns; i++) {
      const float *row = x + (size_t)((double)i * n / ns) * dim;
      if (p->per_dim) {
        v[k++] = row[d];
      } else {
        memcpy(v + k, row, dim * sizeof(float));
        k += dim;
      }
    }
    for (size_t i = 0; i < k; i++)
      if (!isfinite(v[i])) {
        double bad = v[i];
        qv_free(v);
        sq8_free(q);
        return qv_err_set(err, QV_EINVAL, "sq8: training data holds %g",
                          bad);
      }
    float lo, hi;
    quantile_range(v, k, p->quantile, &lo, &hi);
    if (p->per_dim) {
      set_range(q, d, lo, hi);
    } else {
      for (uint32_t e = 0; e < dim; e++) set_range(q, e, lo, hi);
    }
  }
  qv_free(v);
  *out = q;
  return QV_OK;
}

void sq8_free(sq8 *q) {
  if (q == NULL) return;
  qv_free(q->lo);
  qv_free(q);
}

/* Round half up of (x - lo) / step, clipped; the comparison form also maps
 * NaN to 0 (every comparison with NaN is false). */
static inline uint8_t encode_one(float x, float lo, float inv) {
  float t = (x - lo) * inv + 0.5f;
  if (!(t >= 1.0f)) return 0;
  if (t >= 255.0f) return 255;
  return (uint8_t)t;
}

void sq8_encode(const sq8 *q, const float *x, size_t n, uint8_t *codes) {
  size_t dim = q->dim;
  for (size_t r = 0; r < n; r++)
    for (size_t d = 0; d < dim; d++)
      codes[r * dim + d] =
          encode_one(x[r * dim + d], q->lo[d], q->inv_step[d]);
}

void sq8_decode(const sq8 *q, const uint8_t *codes, size_t n, float *x) {
  size_t dim = q->dim;
  for (size_t r = 0; r < n; r++)
    for (size_t d = 0; d < dim; d++)
      x[r * dim + d] = q->lo[d] + q->step[d] * (float)codes[r * dim + d];
}

qv_rc sq8_query_new(uint32_t dim, sq8_query **out, qv_err *err) {
  sq8_query *qq = qv_calloc(1, sizeof *qq);
  float *buf = qv_malloc(3 * (size_t)(dim ? dim : 1) * sizeof(float));
  if (qq == NULL || buf == NULL) {
    qv_free(qq);
    qv_free(buf);
    return qv_err_set(err, QV_ENOMEM, "sq8: no memory for a query");
  }
  qq->dim = dim;
  qq->a = buf;
  qq->s = buf + dim;
  qq->w = buf + 2 * (size_t)dim;
  *out = qq;
  return QV_OK;
}

void sq8_query_free(sq8_query *qq) {
  if (qq == NULL) return;
  qv_free(qq->a);
  qv_free(qq);
}

void sq8_query_prepare(const sq8 *q, const float *query, sq8_query *qq) {
  double bias = 0, l2_bias = 0;
  qq->is_global = !q->per_dim;
  for (uint32_t d = 0; d < q->dim; d++) {
    double t = (double)query[d] - q->lo[d];
    if (qq->is_global) { /* codes of an empty range are all 0 */
      qq->a[d] = (float)(t * q->inv_step[d]);
      if (q->step[d] == 0) l2_bias += t * t;
    } else {
      qq->a[d] = (float)t;
    }
    qq->s[d] = q->step[d];
    qq->w[d] = query[d] * q->step[d];
    bias += (double)query[d] * q->lo[d];
  }
  qq->bias = (float)bias;
  qq->scale = q->step[0] * q->step[0];
  qq->l2_bias = (float)l2_bias;
}

float sq8_sym_l2sq(const sq8 *q, const sq8_ops *ops, const uint8_t *a,
                   const uint8_t *b) {
  float s = q->step[0];
  return s * s * (float)ops->l2sq_u8(a, b, q->dim);
}

uint32_t sq8_code_sum(const uint8_t *code, uint32_t dim) {
  uint32_t s = 0; /* < 2^32 for dim < 16.8 M */
  for (uint32_t i = 0; i < dim; i++) s += code[i];
  return s;
}

float sq8_sym_dot(const sq8 *q, const sq8_ops *ops, const uint8_t *a,
                  uint32_t sum_a, const uint8_t *b, uint32_t sum_b) {
  double lo = q->lo[0], s = q->step[0];
  double sums = (double)sum_a + (double)sum_b;
  return (float)(q->dim * lo * lo + lo * s * sums +
                 s * s * (double)ops->dot_u8(a, b, q->dim));
}

/* ---- scalar reference kernels (double sums, one rounding) ------------- */

static float l2sq_asym_scalar(const float *a, const float *s,
                              const uint8_t *c, size_t dim) {
  double acc = 0;
  for (size_t i = 0; i < dim; i++) {
    double d = (double)a[i] - (double)s[i] * c[i];
    acc += d * d;
  }
  return (float)acc;
}

static float l2sq_asym_g_scalar(const float *a, const uint8_t *c,
                                size_t dim) {
  double acc = 0;
  for (size_t i = 0; i < dim; i++) {
    double d = (double)a[i] - c[i];
    acc += d * d;
  }
  return (float)acc;
}

static float dot_asym_scalar(const float *w, const uint8_t *c, size_t dim) {
  double acc = 0;
  for (size_t i = 0; i < dim; i++) acc += (double)w[i] * c[i];
  return (float)acc;
}

static uint32_t l2sq_u8_scalar(const uint8_t *a, const uint8_t *b,
                               size_t dim) {
  uint32_t acc = 0;
  for (size_t i = 0; i < dim; i++) {
    int d = (int)a[i] - (int)b[i];
    acc += (uint32_t)(d * d);
  }
  return acc;
}

static uint32_t dot_u8_scalar(const uint8_t *a, const uint8_t *b,
                              size_t dim) {
  uint32_t acc = 0;
  for (size_t i = 0; i < dim; i++) acc += (uint32_t)a[i] * b[i];
  return acc;
}

const sq8_ops sq8_ops_scalar = {
    .l2sq_asym = l2sq_asym_scalar,
    .l2sq_asym_g = l2sq_asym_g_scalar,
    .dot_asym = dot_asym_scalar,
    .l2sq_u8 = l2sq_u8_scalar,
    .dot_u8 = dot_u8_scalar,
    .isa = "scalar",
};

const sq8_ops *sq8_ops_isa(quant_isa isa) {
  if (!quant_isa_runs(isa)) return NULL;
  switch (isa) {
  case QUANT_ISA_AVX2: return &sq8_ops_avx2;
  case QUANT_ISA_AVX512:
    return quant_cpu_has_vnni() ? &sq8_ops_avx512_vnni : &sq8_ops_avx512;
  default: return &sq8_ops_scalar;
  }
}

const sq8_ops *sq8_ops_get(void) { return sq8_ops_isa(quant_isa_chosen()); }
