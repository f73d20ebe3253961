/* hnsw.h: a Hierarchical Navigable Small World graph over a borrowed array of
 * float32 vectors (row r at vecs + r * dim). Built once, in parallel, then
 * read-only: a sealed segment's graph never changes, so searches take no
 * locks. Saved to and mapped from a checksummed file.
 *
 * Distances are "lower is better" (see vec/dist.h). Rows are the segment's
 * row numbers 0..n-1. */
#ifndef QV_INDEX_HNSW_H
#define QV_INDEX_HNSW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quiver.h"
#include "vec/dist.h"

#define HNSW_M_DEFAULT 16
#define HNSW_M_MIN 4
#define HNSW_M_MAX 128
#define HNSW_EF_CONSTRUCT_DEFAULT 100
#define HNSW_EF_CONSTRUCT_MIN 8
#define HNSW_EF_CONSTRUCT_MAX 4096

typedef struct hnsw hnsw;

typedef struct hnsw_params {
  uint32_t m;            /* neighbours per node above level 0; 2m at level 0 */
  uint32_t ef_construct; /* beam width while building */
  uint32_t n_threads;    /* build threads, >= 1 */
  uint64_t seed;         /* level assignment; same seed + 1 thread = same graph */
} hnsw_params;

typedef struct hnsw_hit {
  uint32_t row;
  float dist;
} hnsw_hit;

/* Returns whether row may appear in results. Called from search threads; must
 * be cheap and thread-safe. Disallowed rows are still traversed. */
typedef bool (*hnsw_allow_fn)(void *ctx, uint32_t row);

/* Fills `p` with the defaults: m = HNSW_M_DEFAULT, ef_construct =
 * HNSW_EF_CONSTRUCT_DEFAULT, one thread, a fixed seed. */
void hnsw_params_init(hnsw_params *p);

/* Builds the graph of n vectors. `vecs` is borrowed and must outlive the
 * graph. Errors: QV_EINVAL (n == 0, params out of range), QV_ENOMEM. */
qv_rc hnsw_build(const float *vecs, uint32_t n, uint32_t dim, vec_metric metric,
                 const hnsw_params *params, hnsw **out, qv_err *err);

/* Writes the graph to `path` (temporary file, fsync, rename, fsync of the
 * directory). The file has a magic, version, the shape (n, dim, metric, m) and
 * a CRC-32C of everything. Errors: QV_EIO. */
qv_rc hnsw_save(const hnsw *h, const char *path, qv_err *err);

/* Maps a graph saved by hnsw_save over the same vectors. Checks magic,
 * version, shape against the arguments, bounds of every neighbour id and the
 * checksum. Errors: QV_ECORRUPT (names the file and the failed check), QV_EIO. */
qv_rc hnsw_load(const char *path, const float *vecs, uint32_t n, uint32_t dim,
                vec_metric metric, hnsw **out, qv_err *err);

void hnsw_free(hnsw *h); /* accepts NULL */

/* Resident bytes of the graph (links and levels, not the vectors). */
size_t hnsw_memory_bytes(const hnsw *h);
uint32_t hnsw_size(const hnsw *h);

/* Per-thread search state (visited set, heaps), reused across queries and
 * graphs; grows as needed. */
typedef struct hnsw_scratch hnsw_scratch;
hnsw_scratch *hnsw_scratch_new(void);
void hnsw_scratch_free(hnsw_scratch *s); /* accepts NULL */

/* Finds up to k nearest allowed rows to `query` with beam width max(ef, k),
 * nearest first. *n_out < k only when the beam found fewer allowed rows
 * (callers fall back to an exact scan when they know more exist).
 * `allow` may be NULL (every row allowed). Errors: QV_ENOMEM. */
qv_rc hnsw_search(const hnsw *h, const float *query, uint32_t k, uint32_t ef,
                  hnsw_allow_fn allow, void *allow_ctx, hnsw_scratch *s,
                  hnsw_hit *out, uint32_t *n_out);

/* A caller's distance for hnsw_search_scored: score(ctx, row) is the
 * distance from the caller's query to `row` ("lower is better"), typically
 * computed on compact codes. `codes` (may be NULL) + row * stride is read
 * ahead of score() as a prefetch hint. */
typedef struct hnsw_scorer {
  float (*score)(void *ctx, uint32_t row);
  void *ctx;
  const uint8_t *codes;
  size_t stride;
} hnsw_scorer;

/* hnsw_search with every distance taken from `sc` instead of the graph's
 * float32 vectors: the graph built on full vectors, walked on codes. Hits
 * carry the scorer's distances. Same contract otherwise. */
qv_rc hnsw_search_scored(const hnsw *h, const hnsw_scorer *sc, uint32_t k, uint32_t ef,
                         hnsw_allow_fn allow, void *allow_ctx, hnsw_scratch *s,
                         hnsw_hit *out, uint32_t *n_out);

#endif
