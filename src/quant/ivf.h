/* ivf.h: inverted-file indexes over a borrowed array of float32 vectors
 * (row r at vecs + r * dim): IVF-Flat and IVF-PQ.
 *
 * Build: k-means (kmeans.h) trains `nlist` coarse centroids on a sample,
 * every row goes to the list of its nearest centroid (squared L2, also for
 * VEC_NEG_DOT, whose vectors the engine normalizes). IVF-PQ also trains a
 * product quantizer (pq.h) on the residuals x - centroid and keeps the m-byte
 * code of every row's residual.
 * Search: the `nprobe` lists whose centroids are nearest to the query are
 * scanned. IVF-Flat scores rows with the full vectors. IVF-PQ scores codes
 * by ADC (a lookup table per list for L2; one table plus a per-list offset
 * for the dot product) into a shortlist of `rescore` rows, which are then
 * re-scored with the full vectors (rescore 0: ADC distances are returned).
 * Distances are "lower is better" (vec/dist.h): L2SQ or NEG_DOT.
 *
 * Ownership: the index borrows `vecs`, which must outlive it and not change;
 * it owns everything else (centroids, lists, codes). Thread-safety: a built
 * or loaded index is read-only; searches from many threads are safe, each
 * with its own ivf_scratch. On-disk format: see src/quant/README.md. */
#ifndef QV_QUANT_IVF_H
#define QV_QUANT_IVF_H

#include <stddef.h>
#include <stdint.h>

#include "quant/quant.h"
#include "quiver.h"
#include "vec/dist.h"

#define IVF_NLIST_DEFAULT 256
#define IVF_NLIST_MIN 1
#define IVF_NLIST_MAX 65536
#define IVF_NPROBE_DEFAULT 16
#define IVF_ITER_DEFAULT 16

typedef enum ivf_kind { IVF_FLAT = 0, IVF_PQ = 1 } ivf_kind;

typedef struct ivf_params {
  ivf_kind kind;
  uint32_t nlist;            /* IVF_NLIST_MIN..IVF_NLIST_MAX, <= n */
  uint32_t pq_m;             /* IVF_PQ: bytes per code, 1..dim */
  uint32_t n_iter;           /* coarse k-means iterations */
  uint32_t max_per_centroid; /* coarse training sample: nlist * this rows */
  uint32_t n_threads;        /* build threads, >= 1 */
  uint64_t seed;
} ivf_params;

/* nlist = IVF_NLIST_DEFAULT, pq_m = pq_m_for_ratio(dim, 16) (x16), one
 * thread, a fixed seed. */
void ivf_params_init(ivf_params *p, ivf_kind kind, uint32_t dim);

typedef struct ivf ivf;

/* Builds an index of n rows. Errors: QV_EINVAL (n, dim, nlist, pq_m or
 * metric out of range; IVF-PQ needs n >= 256), QV_ENOMEM. */
qv_rc ivf_build(const float *vecs, uint32_t n, uint32_t dim,
                vec_metric metric, const ivf_params *p, ivf **out,
                qv_err *err);
void ivf_free(ivf *ix); /* accepts NULL */

uint32_t ivf_size(const ivf *ix);
ivf_kind ivf_get_kind(const ivf *ix);
uint32_t ivf_nlist(const ivf *ix);
/* Resident bytes owned by the index (centroids, lists, codes, codebooks),
 * not the borrowed vectors. */
size_t ivf_memory_bytes(const ivf *ix);
/* The part of ivf_memory_bytes that is product codes and their codebooks
 * (0 for IVF-Flat); the rest is centroids and lists. */
size_t ivf_code_bytes(const ivf *ix);

typedef struct ivf_search_params {
  uint32_t nprobe;      /* lists scanned, clamped to 1..nlist */
  uint32_t rescore;     /* IVF-PQ shortlist rescored exactly; values below
                           k count as k; 0 = no rescoring. Ignored by Flat. */
  quant_allow_fn allow; /* NULL: every row allowed */
  void *allow_ctx;
} ivf_search_params;

/* nprobe = IVF_NPROBE_DEFAULT, rescore = 0, no filter. */
void ivf_search_params_init(ivf_search_params *sp);

/* Per-thread search buffers, reused across queries and indexes. */
typedef struct ivf_scratch ivf_scratch;
ivf_scratch *ivf_scratch_new(void); /* NULL when out of memory */
void ivf_scratch_free(ivf_scratch *s); /* accepts NULL */

/* Up to k nearest allowed rows among the probed lists, nearest first, into
 * out[0..*n_out). Errors: QV_ENOMEM (growing scratch). */
qv_rc ivf_search(const ivf *ix, const float *query, uint32_t k,
                 const ivf_search_params *sp, ivf_scratch *s, quant_hit *out,
                 uint32_t *n_out);

/* Writes the index to `path` atomically (temporary file, fsync, rename,
 * fsync of the directory): magic, version, shape, centroids, lists,
 * codebooks and codes, then a CRC-32C of all of it. Errors: QV_EIO,
 * QV_ENOMEM. */
qv_rc ivf_save(const ivf *ix, const char *path, qv_err *err);

/* Reads an index saved by ivf_save over the same vectors (borrowed as in
 * ivf_build); the returned index owns copies of everything else, and the
 * file is not kept open. Checks the size, magic, version, checksum, the
 * shape against the arguments, every list offset and row id, and that all
 * floats are finite. Errors: QV_ECORRUPT (a failed check or a missing
 * file; names the file and the check), QV_EIO, QV_ENOMEM. */
qv_rc ivf_load(const char *path, const float *vecs, uint32_t n, uint32_t dim,
               vec_metric metric, ivf **out, qv_err *err);

#endif
