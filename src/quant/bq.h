/* bq.h: binary quantization: 1 or 2 bits per dimension.
 *
 * 1 bit: bit_d = x_d > thr_d, starting from thr = the per-dimension
 * training mean (the sign of the centred component). 2 bits: a thermometer
 * code of three levels, bit0_d = x_d > thr0_d, bit1_d = x_d > thr1_d,
 * starting from mean -/+ t sigma_d with t = 0.4307 (the terciles of a normal
 * distribution), so that popcount(a ^ b) is the L1 distance between levels.
 * Then n_lloyd Lloyd-Max passes (default 3) move every threshold to the
 * midpoint of the level values beside it: on SIFT-small, Fashion-MNIST and
 * scifact-use512 that raised asymmetric recall by 0.01..0.08 at the same
 * oversampling, while Hamming ranking gained on scifact and lost a little on
 * the other two (see src/quant/README.md); n_lloyd 0 keeps the plain sign
 * code. A code is `bits`
 * planes of n_words = ceil(dim / 64) little-endian 64-bit words each, plane
 * 0 first; bits past dim are 0. Bytes per vector: 8 * bits * n_words.
 *
 * Scoring: hamming() between two codes (symmetric), and an ASYMMETRIC score
 * of a float32 query against a code: each level of dimension d stands for
 * the training mean r_{d,level} of the values that fall in it, and because
 * the metric is a sum over dimensions, dist(q, reconstruction(code)) is
 * base + sum over set bits of a per-(plane, dimension) weight. That sum is
 * exact for the reconstruction and costs one masked add per 16 bits; it
 * ranks far better than Hamming (see src/quant/README.md for recall).
 *
 * Ownership: bq_train returns a quantizer owned by the caller (bq_free).
 * Codes and queries are caller memory. Thread-safety: a trained quantizer
 * is read-only; each thread prepares its own bq_query. */
#ifndef QV_QUANT_BQ_H
#define QV_QUANT_BQ_H

#include <stddef.h>
#include <stdint.h>

#include "quant/quant.h"
#include "quiver.h"
#include "vec/dist.h"

#define BQ_SAMPLE_ROWS 20000u /* training rows read (evenly spaced) */
#define BQ_TERCILE 0.4307f     /* Phi^-1(2/3): equal-mass levels for 2 bits */
#define BQ_LLOYD_DEFAULT 3     /* passes; more measured no better */
#define BQ_LLOYD_MAX 100

typedef struct bq_params {
  uint32_t bits;    /* 1 or 2 */
  uint32_t n_lloyd; /* threshold refinement passes, 0..BQ_LLOYD_MAX */
} bq_params;

/* bits as given, n_lloyd = BQ_LLOYD_DEFAULT. */
void bq_params_init(bq_params *p, uint32_t bits);

typedef struct bq {
  uint32_t dim;
  uint32_t bits;    /* 1 or 2 */
  uint32_t n_words; /* 64-bit words per plane: ceil(dim / 64) */
  float *thr;       /* bits * dim thresholds, plane-major */
  float *recon;     /* (bits + 1) * dim level values, level-major */
} bq;

/* Trains thresholds and level values on n vectors (row r at x + r*dim,
 * borrowed for the call; at most BQ_SAMPLE_ROWS rows are read, each
 * 2 + n_lloyd times). Errors: QV_EINVAL (n or dim 0, bits not 1 or 2,
 * n_lloyd too large, non-finite values), QV_ENOMEM. */
qv_rc bq_train(const float *x, size_t n, uint32_t dim, const bq_params *p,
               bq **out, qv_err *err);
void bq_free(bq *b); /* accepts NULL */

/* Words per code: bits * n_words. */
static inline size_t bq_code_words(const bq *b) {
  return (size_t)b->bits * b->n_words;
}
/* Encodes n vectors; codes holds n * bq_code_words(b) words. */
void bq_encode(const bq *b, const float *x, size_t n, uint64_t *codes);
/* The reconstruction (level values) of one code into dim floats. */
void bq_decode(const bq *b, const uint64_t *code, float *x);

/* Per-query weights: w holds bq_code_words(b) * 64 floats, zero past dim. */
typedef struct bq_query {
  size_t n_words; /* total words per code */
  float *w;
  float base;
} bq_query;

/* Allocates a query for `b`. Errors: QV_ENOMEM. */
qv_rc bq_query_new(const bq *b, bq_query **out, qv_err *err);
void bq_query_free(bq_query *qq); /* accepts NULL */
/* Prepares `qq` so that base + ops->asym(w, code) is the distance `metric`
 * (VEC_L2SQ, VEC_NEG_DOT or VEC_L1; lower is better) from `query` to the
 * code's reconstruction. O(bits * dim). */
void bq_query_prepare(const bq *b, const float *query, vec_metric metric,
                      bq_query *qq);

typedef struct bq_ops {
  /* popcount(a ^ b) over n_words words. */
  uint32_t (*hamming)(const uint64_t *a, const uint64_t *b, size_t n_words);
  /* sum of w[i] over the set bits i of code (n_words words). */
  float (*asym)(const float *w, const uint64_t *code, size_t n_words);
  const char *isa; /* "avx512-vpopcntdq" when that Hamming is in use */
} bq_ops;

const bq_ops *bq_ops_get(void);          /* never NULL */
const bq_ops *bq_ops_isa(quant_isa isa); /* NULL if the CPU can't */

extern const bq_ops bq_ops_scalar;
extern const bq_ops bq_ops_avx2;
extern const bq_ops bq_ops_avx512;
extern const bq_ops bq_ops_avx512_vpopcnt;

static inline float bq_asym(const bq_ops *ops, const bq_query *qq,
                            const uint64_t *code) {
  return qq->base + ops->asym(qq->w, code, qq->n_words);
}

#endif
