/* sq8.h: scalar int8 quantization (Qdrant's `scalar` / `int8`).
 *
 * Each component x_d is stored as one byte c_d with x_d ~ lo_d + step_d*c_d,
 * step_d = (hi_d - lo_d) / 255. [lo, hi] is trained from a sample as the
 * central `quantile` of the values (0.99 cuts 0.5% from each end, so rare
 * outliers do not stretch the step); values outside are clipped. Either one
 * range for all dimensions (per_dim false, Qdrant's behaviour, required for
 * the symmetric uint8-vs-uint8 kernels) or one per dimension.
 *
 * Distances ("lower is better" unless named dot): the ASYMMETRIC kernels
 * score a float32 query against codes, dequantizing on the fly; they need a
 * sq8_query prepared once per query (sq8_query_prepare). The SYMMETRIC
 * kernels score code against code with integer arithmetic (AVX-512 VNNI
 * where the CPU has it) and return the integer sums; sq8_sym_l2sq /
 * sq8_sym_dot scale them back for a global-range quantizer.
 *
 * Ownership: sq8_train returns a quantizer the caller frees with sq8_free;
 * it owns its lo/step arrays. Codes and queries are caller memory.
 * Thread-safety: a trained quantizer is read-only; any number of threads may
 * encode and score with it at once. Each thread needs its own sq8_query. */
#ifndef QV_QUANT_SQ8_H
#define QV_QUANT_SQ8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant/quant.h"
#include "quiver.h"

#define SQ8_QUANTILE_DEFAULT 0.99f
#define SQ8_QUANTILE_MIN 0.5f
#define SQ8_QUANTILE_MAX 1.0f
/* Rows sampled for the quantile: enough for a 0.5% tail per dimension to
 * hold ~100 values, small enough that training is a few ms. */
#define SQ8_SAMPLE_ROWS 20000u

typedef struct sq8_params {
  float quantile; /* central fraction of values kept unclipped, (0.5, 1] */
  bool per_dim;   /* one range per dimension instead of one for all */
} sq8_params;

typedef struct sq8 {
  uint32_t dim;
  bool per_dim;
  float *lo;       /* dim values (all equal unless per_dim) */
  float *step;     /* dim values, >= 0 (0 when the range is empty) */
  float *inv_step; /* 1/step, or 0 where step is 0 */
} sq8;

/* quantile = SQ8_QUANTILE_DEFAULT, per_dim = false. */
void sq8_params_init(sq8_params *p);

/* Trains the ranges on n vectors of `dim` floats (row r at x + r*dim;
 * borrowed for the call; at most SQ8_SAMPLE_ROWS evenly spaced rows are
 * read). Errors: QV_EINVAL (n or dim 0, quantile out of range, a non-finite
 * value), QV_ENOMEM. */
qv_rc sq8_train(const float *x, size_t n, uint32_t dim, const sq8_params *p,
                sq8 **out, qv_err *err);
/* Builds a quantizer from explicit ranges (dim values each; copied), e.g.
 * after loading them from a file. Errors: QV_EINVAL (hi < lo, non-finite),
 * QV_ENOMEM. */
qv_rc sq8_from_ranges(const float *lo, const float *hi, uint32_t dim,
                      bool per_dim, sq8 **out, qv_err *err);
void sq8_free(sq8 *q); /* accepts NULL */

/* Encodes n vectors into n*dim bytes (clipping to the range). */
void sq8_encode(const sq8 *q, const float *x, size_t n, uint8_t *codes);
/* Decodes n codes back to floats. */
void sq8_decode(const sq8 *q, const uint8_t *codes, size_t n, float *x);

/* ---- asymmetric scoring: float query vs codes --------------------------- */

/* Per-query state. L2, per-dimension ranges: a[d] = q_d - lo_d, s[d] =
 * step_d, ||q - x||^2 = sum (a_d - s_d c_d)^2. L2, one global range
 * (is_global): a[d] = (q_d - lo) / step, so ||q - x||^2 = l2_bias + scale *
 * sum (a_d - c_d)^2 with scale = step^2 -- one float stream instead of two
 * (l2_bias covers an empty range, step 0). Dot: w[d] = q_d step_d and bias
 * = sum q_d lo_d, so <q, x> = bias + sum w_d c_d. The caller owns it; free
 * with sq8_query_free. */
typedef struct sq8_query {
  uint32_t dim;
  bool is_global;
  float *a, *s, *w; /* one allocation, 3 * dim floats */
  float bias;       /* dot */
  float scale, l2_bias; /* L2 with is_global */
} sq8_query;

/* Allocates a query for quantizer dim `dim`. Errors: QV_ENOMEM. */
qv_rc sq8_query_new(uint32_t dim, sq8_query **out, qv_err *err);
void sq8_query_free(sq8_query *qq); /* accepts NULL */
/* Fills `qq` for `query` (dim floats, borrowed for the call). O(dim). */
void sq8_query_prepare(const sq8 *q, const float *query, sq8_query *qq);

/* ---- the kernel tables -------------------------------------------------- */

typedef struct sq8_ops {
  /* sum (a_d - s_d c_d)^2: the squared L2 from a prepared query. */
  float (*l2sq_asym)(const float *a, const float *s, const uint8_t *c,
                     size_t dim);
  /* sum (a_d - c_d)^2: the global-range L2 before scaling. */
  float (*l2sq_asym_g)(const float *a, const uint8_t *c, size_t dim);
  /* sum w_d c_d: add the query's bias for the dot product. */
  float (*dot_asym)(const float *w, const uint8_t *c, size_t dim);
  /* sum (a_d - b_d)^2 and sum a_d b_d over codes; exact for dim <= 66051
   * (the sums fit in 32 bits). */
  uint32_t (*l2sq_u8)(const uint8_t *a, const uint8_t *b, size_t dim);
  uint32_t (*dot_u8)(const uint8_t *a, const uint8_t *b, size_t dim);
  const char *isa; /* "avx512-vnni" when the VNNI kernels are in use */
} sq8_ops;

const sq8_ops *sq8_ops_get(void);          /* never NULL */
const sq8_ops *sq8_ops_isa(quant_isa isa); /* NULL if the CPU can't */

extern const sq8_ops sq8_ops_scalar;
extern const sq8_ops sq8_ops_avx2;
extern const sq8_ops sq8_ops_avx512;
extern const sq8_ops sq8_ops_avx512_vnni;

/* Convenience wrappers over sq8_ops_get() for one code. */
static inline float sq8_l2sq(const sq8_ops *ops, const sq8_query *qq,
                             const uint8_t *code) {
  if (qq->is_global)
    return qq->l2_bias + qq->scale * ops->l2sq_asym_g(qq->a, code, qq->dim);
  return ops->l2sq_asym(qq->a, qq->s, code, qq->dim);
}
static inline float sq8_dot(const sq8_ops *ops, const sq8_query *qq,
                            const uint8_t *code) {
  return qq->bias + ops->dot_asym(qq->w, code, qq->dim);
}

/* Symmetric distances between two codes of a global-range quantizer
 * (per_dim false; the caller's bug otherwise): step^2 * sum (a-b)^2, and
 * dim lo^2 + lo step (sum_a + sum_b) + step^2 sum ab, where sum_a / sum_b
 * are sq8_code_sum() of each code -- computed once per stored vector (4
 * bytes beside the code, like Qdrant's per-vector offset), not per
 * distance. */
uint32_t sq8_code_sum(const uint8_t *code, uint32_t dim);
float sq8_sym_l2sq(const sq8 *q, const sq8_ops *ops, const uint8_t *a,
                   const uint8_t *b);
float sq8_sym_dot(const sq8 *q, const sq8_ops *ops, const uint8_t *a,
                  uint32_t sum_a, const uint8_t *b, uint32_t sum_b);

#endif
