/* bq.h: binary quantization: 1, 2 or "one and a half" bits per dimension.
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
 * code. A 1- or 2-bit code is `bits` planes of n_words = ceil(dim / 64)
 * little-endian 64-bit words each, plane 0 first; bits past dim are 0.
 * Bytes per vector: 8 * bits * n_words.
 *
 * One and a half bits (bits = BQ_ONE_AND_HALF, QV_BQ_ONE_AND_HALF_BITS):
 * a budget of ceil(1.5 dim / 64) words per code (the padding a word adds
 * is used, not wasted) is shared out among the dimensions by reconstruction
 * error: every dimension gets 0, 1, .. max_planes thermometer planes, each
 * level count fitted as above (Lloyd-Max from normal quantiles), and the
 * planes go greedily to the largest drops of the training squared error
 * (per dimension made concave first, so a dimension's planes are always
 * taken in order). Near-constant dimensions (Fashion-MNIST's border
 * pixels) get none and score as their mean; wide ones get 2. Layout: plane
 * p holds, bit after bit, the dimensions with nb[d] > p in increasing d,
 * starting at bit plane_off[p]; the planes follow each other without
 * padding, so a code is one bit string of the budget's length. Hamming is
 * still the L1 distance between levels and the asymmetric kernels are the
 * same: only the weight layout differs.
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
#define BQ_ONE_AND_HALF 3u /* the `bits` of the mixed code (QV_BQ_ONE_AND_HALF_BITS) */
#define BQ_PLANES_MAX 3u   /* thermometer planes one dimension may have */
#define BQ_MIX_PLANES_DEFAULT 2u
_Static_assert(BQ_ONE_AND_HALF == QV_BQ_ONE_AND_HALF_BITS, "one encoding number");

typedef struct bq_params {
  uint32_t bits;       /* 1, 2 or BQ_ONE_AND_HALF */
  uint32_t n_lloyd;    /* threshold refinement passes, 0..BQ_LLOYD_MAX */
  uint32_t max_planes; /* one and a half: planes a dimension may get, 1..BQ_PLANES_MAX */
} bq_params;

/* bits as given, n_lloyd = BQ_LLOYD_DEFAULT, max_planes =
 * BQ_MIX_PLANES_DEFAULT. */
void bq_params_init(bq_params *p, uint32_t bits);

typedef struct bq {
  uint32_t dim;
  uint32_t bits;       /* the encoding: 1, 2 or BQ_ONE_AND_HALF */
  uint32_t n_planes;   /* threshold planes stored: bits, or max_planes */
  uint32_t n_words;    /* 64-bit words per plane of a 1/2-bit code: ceil(dim / 64) */
  uint32_t code_words; /* 64-bit words per code */
  uint32_t plane_off[BQ_PLANES_MAX]; /* first bit of each plane in a code */
  uint8_t *nb;  /* dim: planes of each dimension (all `bits` for 1/2 bits) */
  float *thr;   /* n_planes * dim thresholds, plane-major (unused: copies) */
  float *recon; /* (n_planes + 1) * dim level values, level-major; levels
                   past nb[d] repeat level nb[d] */
} bq;

/* Trains thresholds and level values on n vectors (row r at x + r*dim,
 * borrowed for the call; at most BQ_SAMPLE_ROWS rows are read, each
 * 2 + n_lloyd times, per fitted plane count for one and a half bits).
 * Errors: QV_EINVAL (n or dim 0, bits not 1, 2 or BQ_ONE_AND_HALF,
 * n_lloyd or max_planes out of range, non-finite values), QV_ENOMEM. */
qv_rc bq_train(const float *x, size_t n, uint32_t dim, const bq_params *p,
               bq **out, qv_err *err);
void bq_free(bq *b); /* accepts NULL */

/* Builds a quantizer from stored tables (copied): thr and recon as in
 * struct bq with `n_planes` planes; nb (dim entries) only for
 * BQ_ONE_AND_HALF, else NULL. Checks the encoding, n_planes (bits for
 * 1/2 bits, 1..BQ_PLANES_MAX for one and a half), every nb[d] <= n_planes
 * and that sum(nb) fits bq_mixed_words(dim); QV_EINVAL says which check
 * failed. Errors: QV_EINVAL, QV_ENOMEM. */
qv_rc bq_from_tables(uint32_t dim, uint32_t bits, uint32_t n_planes, const float *thr,
                     const float *recon, const uint8_t *nb, bq **out, qv_err *err);

/* Words per code: bits * n_words for 1/2 bits; ceil(1.5 dim / 64) for one
 * and a half. */
static inline size_t bq_code_words(const bq *b) { return b->code_words; }
/* The words a one-and-a-half-bit code of `dim` dimensions takes. */
static inline uint32_t bq_mixed_words(uint32_t dim) {
  return (uint32_t)(((uint64_t)dim * 3 / 2 + 63) / 64);
}
/* Set bits a code may have: sum of nb (the rest are padding, always 0). */
uint32_t bq_code_bits(const bq *b);
/* Encodes n vectors; codes holds n * bq_code_words(b) words. */
void bq_encode(const bq *b, const float *x, size_t n, uint64_t *codes);
/* The reconstruction (level values) of one code into dim floats. */
void bq_decode(const bq *b, const uint64_t *code, float *x);

/* Per-query weights: w holds bq_code_words(b) * 64 floats, zero on padding
 * bits. */
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
 * code's reconstruction. O(n_planes * dim). */
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
