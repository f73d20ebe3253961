/* qcodes.h: one code per row of a vector array, of any kind src/quant/
 * knows, behind one interface: the "codes" of a sealed segment's vector
 * space that the engine searches instead of (or before rescoring with) the
 * float32 vectors.
 *
 * Kinds:
 *   QCODES_SQ8  int8 scalar codes (sq8.h), trained quantile range; lossy
 *   QCODES_BQ   1-, 1.5- or 2-bit binary codes (bq.h), asymmetric scoring; lossy
 *   QCODES_PQ   product codes (pq.h), ADC; lossy
 *   QCODES_F16  IEEE binary16 values (f16.h); exact for vectors that were
 *               rounded to float16 on upsert (datatype float16)
 *   QCODES_U8   integers 0..255 as sq8 with lo 0, step 1; exact for vectors
 *               of integers (datatype uint8)
 *
 * Distances are "lower is better" in the vec_metric of the codes (L2SQ,
 * NEG_DOT, L1). Where a kind has no kernel for the metric (sq8, u8 and pq
 * under L1; pq under nothing else) the code is decoded into the query's
 * buffer and scored with the float32 kernel: correct, slower.
 *
 * Ownership: qcodes_build / qcodes_load return codes the caller frees with
 * qcodes_free; they own their quantizer and their 64-byte aligned code
 * array. A qcodes_query is caller memory (zero it before first use, release
 * with qcodes_query_destroy); it grows its buffers on demand and may be
 * reused across codes of different kinds and shapes.
 * Thread-safety: codes are read-only after build/load; each thread needs
 * its own qcodes_query. File format: see src/quant/README.md. */
#ifndef QV_QUANT_QCODES_H
#define QV_QUANT_QCODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant/bq.h"
#include "quant/f16.h"
#include "quant/pq.h"
#include "quant/sq8.h"
#include "quiver.h"
#include "vec/dist.h"

typedef enum qcodes_kind {
  QCODES_SQ8 = 1,
  QCODES_BQ = 2,
  QCODES_PQ = 3,
  QCODES_F16 = 4,
  QCODES_U8 = 5,
} qcodes_kind;

typedef struct qcodes_params {
  qcodes_kind kind;
  float sq_quantile;  /* SQ8: (0.5, 1] */
  uint32_t bq_bits;   /* BQ: 1, 2 or BQ_ONE_AND_HALF; 0 = 1 */
  uint32_t pq_ratio;  /* PQ: 4..64 (m = pq_m_for_ratio(dim, ratio)) */
  uint32_t n_threads; /* PQ training */
  uint64_t seed;
} qcodes_params;

typedef struct qcodes {
  qcodes_kind kind;
  vec_metric metric;
  uint32_t dim, n;
  size_t stride; /* bytes per code */
  sq8 *sq;       /* SQ8, U8 */
  bq *bq;        /* BQ */
  pq *pq;        /* PQ */
  uint8_t *codes; /* n * stride, 64-byte aligned */
} qcodes;

/* Whether the codes hold the stored values exactly (F16, U8), so that
 * rescoring them would change nothing. */
static inline bool qcodes_is_exact(const qcodes *c) {
  return c->kind == QCODES_F16 || c->kind == QCODES_U8;
}

/* Trains on `n_train` rows at `train` (row r at train + r*dim; borrowed for
 * the call; may be `x` itself) and encodes the n rows at `x`. PQ needs
 * n_train >= PQ_KSUB. Errors: QV_EINVAL (shape, parameters, non-finite
 * training values), QV_ENOMEM. */
qv_rc qcodes_build(const float *x, uint32_t n, const float *train, uint32_t n_train,
                   uint32_t dim, vec_metric metric, const qcodes_params *p, qcodes **out,
                   qv_err *err);
void qcodes_free(qcodes *c); /* accepts NULL */

/* Resident bytes: codes plus quantizer tables. */
size_t qcodes_memory_bytes(const qcodes *c);

/* Decodes row `row` into dim floats. */
void qcodes_decode(const qcodes *c, uint32_t row, float *x);

/* ---- files (qcodes_io.c) ---------------------------------------------------- */

/* Writes the codes and their quantizer to `path` atomically with a CRC-32C.
 * Errors: QV_EIO, QV_ENOMEM. */
qv_rc qcodes_save(const qcodes *c, const char *path, qv_err *err);
/* Reads codes saved by qcodes_save and checks them against the expected
 * kind and shape. Errors: QV_ECORRUPT (missing file, size, magic, version,
 * checksum, shape, non-finite tables; names the file and the check),
 * QV_ENOMEM. */
qv_rc qcodes_load(const char *path, qcodes_kind kind, uint32_t n, uint32_t dim,
                  vec_metric metric, qcodes **out, qv_err *err);

/* ---- scoring ------------------------------------------------------------------ */

typedef enum qcodes_mode {
  QM_SQ8_L2,
  QM_SQ8_DOT,
  QM_BQ,
  QM_PQ,
  QM_F16,
  QM_DECODE, /* decode + float32 kernel */
} qcodes_mode;

typedef struct qcodes_query {
  const qcodes *qc;
  qcodes_mode mode;
  const float *query; /* borrowed from qcodes_query_prepare's caller */
  vec_dist_fn fdist;  /* QM_DECODE */
  float (*f16dist)(const float *q, const uint16_t *v, size_t dim); /* QM_F16 */
  float f16_sign; /* -1 for the dot product (lower is better) */
  const sq8_ops *sq_ops;
  const bq_ops *bq_ops;
  const pq_ops *pq_ops;
  /* buffers, grown on demand */
  sq8_query *sq;
  bq_query *bq;
  float *buf; /* PQ lookup table or the decoded row */
  size_t buf_cap;
} qcodes_query;

/* Prepares `qq` for scoring `query` (dim floats, borrowed until the last
 * qcodes_dist) against `c`. Errors: QV_ENOMEM. */
qv_rc qcodes_query_prepare(const qcodes *c, const float *query, qcodes_query *qq,
                           qv_err *err);
void qcodes_query_destroy(qcodes_query *qq); /* leaves it zeroed */

/* Distance from the prepared query to row `row`'s code. */
float qcodes_dist(qcodes_query *qq, uint32_t row);

static inline const uint8_t *qcodes_code(const qcodes *c, uint32_t row) {
  return c->codes + (size_t)row * c->stride;
}

#endif
