/* pq.h: product quantization (Jegou, Douze & Schmid, TPAMI 2011).
 *
 * A vector is cut into m consecutive sub-vectors (lengths differ by at most
 * one: the first dim % m are one longer); each is replaced by the index of
 * the nearest of PQ_KSUB = 256 centroids trained by k-means on that
 * subspace. A code is m bytes. Compression against float32 storage is
 * 4 dim / m, so a ratio xR means m = ceil(4 dim / R) (pq_m_for_ratio):
 *
 *     ratio  dsub = dim/m   dim 128   dim 512   dim 784
 *      x4        1            128       512       784
 *      x8        2             64       256       392
 *      x16       4             32       128       196
 *      x32       8             16        64        98
 *      x64      16              8        32        49
 *
 * Distances use ADC (asymmetric distance computation): per query a lookup
 * table lut[j * 256 + c] = distance between the query's j-th sub-vector and
 * centroid c of subspace j (squared L2, or the negated dot product); the
 * distance to a code is then the sum of m table entries.
 *
 * Ownership: pq_train / pq_from_centroids return a quantizer the caller
 * frees with pq_free; codes and tables are caller memory.
 * Thread-safety: a trained quantizer is read-only; kernels are pure. */
#ifndef QV_QUANT_PQ_H
#define QV_QUANT_PQ_H

#include <stddef.h>
#include <stdint.h>

#include "quant/quant.h"
#include "quiver.h"
#include "vec/dist.h"

#define PQ_KSUB 256
#define PQ_ITER_DEFAULT 12
#define PQ_MAX_TRAIN_DEFAULT 65536u /* rows; 256 per centroid, as faiss */

typedef struct pq_params {
  uint32_t m;         /* subspaces, 1 <= m <= dim */
  uint32_t n_iter;    /* k-means iterations per subspace */
  uint32_t max_train; /* training rows read (evenly spaced) */
  uint32_t n_threads; /* subspaces are trained in parallel */
  uint64_t seed;
} pq_params;

typedef struct pq {
  uint32_t dim, m;
  uint32_t *off; /* m + 1 offsets: subspace j is dims [off[j], off[j+1]) */
  /* Centroids of subspace j, row-major: centroid c at
   * cent + PQ_KSUB * off[j] + c * len_j. Total PQ_KSUB * dim floats. */
  float *cent;
  /* The same transposed per subspace (cent_t + PQ_KSUB * off[j] +
   * d * PQ_KSUB + c), for the lookup-table kernel. */
  float *cent_t;
} pq;

/* m = pq_m_for_ratio(dim, 16) (at least 1), defaults for the rest. */
void pq_params_init(pq_params *p, uint32_t dim);
/* ceil(4 * dim / ratio), clamped to [1, dim]. */
uint32_t pq_m_for_ratio(uint32_t dim, uint32_t ratio);

/* Trains the codebooks on n vectors (row r at x + r*dim, borrowed for the
 * call). Errors: QV_EINVAL (n < PQ_KSUB, m out of range, dim 0),
 * QV_ENOMEM. */
qv_rc pq_train(const float *x, size_t n, uint32_t dim, const pq_params *p,
               pq **out, qv_err *err);
/* A quantizer from PQ_KSUB * dim centroid floats in the `cent` layout above
 * (copied), e.g. read back from a file. Errors: QV_EINVAL, QV_ENOMEM. */
qv_rc pq_from_centroids(uint32_t dim, uint32_t m, const float *cent,
                        pq **out, qv_err *err);
void pq_free(pq *q); /* accepts NULL */

/* Encodes n vectors into n * m bytes. Errors: QV_ENOMEM (scratch). */
qv_rc pq_encode(const pq *q, const float *x, size_t n, uint8_t *codes,
                qv_err *err);
/* Decodes one code into dim floats. */
void pq_decode(const pq *q, const uint8_t *code, float *x);

typedef struct pq_ops {
  /* lut[c] for one subspace: distance from sub-query `q` (len floats) to
   * the 256 centroids in transposed layout ct[d * 256 + c]. */
  void (*lut_l2)(const float *q, const float *ct, uint32_t len, float *lut);
  void (*lut_neg_dot)(const float *q, const float *ct, uint32_t len,
                      float *lut);
  /* sum_j lut[j * 256 + code[j]] for j < m. */
  float (*adc)(const float *lut, const uint8_t *code, size_t m);
  /* out[i] = adc(lut, codes + i * m, m) for i < n. */
  void (*adc_batch)(const float *lut, const uint8_t *codes, size_t n,
                    size_t m, float *out);
  const char *isa;
} pq_ops;

const pq_ops *pq_ops_get(void);          /* never NULL */
const pq_ops *pq_ops_isa(quant_isa isa); /* NULL if the CPU can't */

/* The ADC kernels of the scalar table, which every table uses (plain loads
 * beat gathers on the CPUs measured; see pq.c). */
float pq_adc_scalar(const float *lut, const uint8_t *code, size_t m);
void pq_adc_batch_scalar(const float *lut, const uint8_t *codes, size_t n,
                         size_t m, float *out);

extern const pq_ops pq_ops_scalar;
extern const pq_ops pq_ops_avx2;
extern const pq_ops pq_ops_avx512;

/* Fills lut (m * PQ_KSUB floats) for `query` under VEC_L2SQ or VEC_NEG_DOT
 * (other metrics: the caller's bug; L2 is used). O(256 * dim). */
void pq_lut(const pq *q, const pq_ops *ops, const float *query,
            vec_metric metric, float *lut);

#endif
