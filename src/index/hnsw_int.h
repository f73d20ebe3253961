/* hnsw_int.h: the in-memory layout of an HNSW graph, shared by hnsw.c,
 * hnsw_build.c, hnsw_search.c and hnsw_io.c only. Nothing outside
 * src/index/ may include it.
 *
 * Layout (see README.md for the file format, which mirrors it):
 *   l0        n fixed-size slots of l0_stride = 1 + 2m uint32 words:
 *             [count, id_0 .. id_{2m-1}], one flat 64-byte aligned array, so
 *             the list of row r is at l0 + r * l0_stride with no indirection
 *             and the whole level (132 bytes a node at m = 16) stays small
 *             enough to live in the last-level cache next to the vectors.
 *   levels    n bytes, the top level of each node (0 for most of them).
 *   up        upper-level slots of up_stride = 1 + m words: node r with
 *             levels[r] = L owns L consecutive slots starting at slot
 *             up_first[r], the one for level l (1 <= l <= L) being
 *             up_first[r] + l - 1. up_first is the prefix sum of levels and
 *             is derived, never stored in files.
 *
 * Invariants of a finished graph (checked by hnsw_load for files):
 *   - every count <= its capacity (2m at level 0, m above), every id < n;
 *   - a node listed at level l has levels[id] >= l (descent relies on it to
 *     stay inside `up`);
 *   - levels[entry] == max_level and every levels[r] <= max_level.
 * A mapped graph points l0, levels and up into the read-only file mapping and
 * must never be written. */
#ifndef QV_INDEX_HNSW_INT_H
#define QV_INDEX_HNSW_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/fileio.h"
#include "index/hnsw.h"

/* Levels are -ln(U) / ln(m) with U >= 2^-53, so at m = 4 a level above 27
 * cannot be drawn; the cap only bounds what a file may claim. */
#define HNSW_LEVEL_MAX 31u

struct hnsw {
  const float *vecs; /* borrowed: row r at vecs + r * dim */
  uint32_t n, dim;
  vec_metric metric;
  vec_dist_fn dist; /* dist_fn(dist_ops_get(), metric), chosen once */
  uint32_t m, ef_construct;
  uint32_t l0_stride; /* 1 + 2m words */
  uint32_t up_stride; /* 1 + m words */
  uint32_t max_level, entry;
  uint32_t *l0;
  uint8_t *levels;
  uint32_t *up_first; /* always owned (qv_malloc) */
  uint32_t *up;       /* NULL when no node is above level 0 */
  uint64_t n_up_slots;
  bool is_mapped; /* l0, levels, up live in `map` */
  fileio_map map;
};

static inline uint32_t *hnsw_l0_list(const hnsw *h, uint32_t row) {
  return h->l0 + (size_t)row * h->l0_stride;
}

/* The slot of `row` at level `lc` >= 1; only valid when levels[row] >= lc. */
static inline uint32_t *hnsw_up_list(const hnsw *h, uint32_t row, uint32_t lc) {
  return h->up + ((size_t)h->up_first[row] + lc - 1) * h->up_stride;
}

static inline uint32_t *hnsw_list(const hnsw *h, uint32_t row, uint32_t lc) {
  return lc == 0 ? hnsw_l0_list(h, row) : hnsw_up_list(h, row, lc);
}

static inline const float *hnsw_vec(const hnsw *h, uint32_t row) {
  return h->vecs + (size_t)row * h->dim;
}

/* Fills up_first from levels; returns the number of upper slots, or
 * UINT64_MAX if they do not fit the uint32 slot index. */
uint64_t hnsw_index_levels(const uint8_t *levels, uint32_t n,
                           uint32_t *up_first);

/* Allocates the struct (zeroed) with shape fields set and dist chosen. */
qv_rc hnsw_alloc_shell(const float *vecs, uint32_t n, uint32_t dim,
                       vec_metric metric, uint32_t m, hnsw **out, qv_err *err);

/* ---- search state ------------------------------------------------------ */

typedef struct hnsw_pair {
  float d;
  uint32_t id;
} hnsw_pair;

struct hnsw_scratch {
  uint16_t *visited; /* visited[r] == epoch: r seen by the current query */
  uint32_t n_visited;
  uint16_t epoch;
  hnsw_pair *cand; /* min-heap of nodes to expand */
  size_t cap_cand;
  hnsw_pair *res; /* max-heap of the best ef allowed nodes */
  size_t cap_res;
  uint32_t *ids; /* a copy of one neighbour list (build) or the unvisited
                  * neighbours of the node being expanded (search) */
  size_t cap_ids;
};

/* Makes the visited set cover n rows and the result heap hold ef + 1 pairs,
 * and starts a new epoch. The only allocating step of a warm search.
 * Errors: QV_ENOMEM. */
qv_rc hnsw_scratch_begin(hnsw_scratch *s, uint32_t n, uint32_t ef,
                         uint32_t max_degree, qv_err *err);

/* Doubles the candidate heap. Errors: QV_ENOMEM. */
qv_rc hnsw_scratch_grow_cand(hnsw_scratch *s);

/* ---- binary heaps over hnsw_pair ---------------------------------------
 * Hand-rolled rather than generic: they sit in the innermost loop, and a
 * pair of float + uint32 compares in one instruction. */

static inline void heap_max_push(hnsw_pair *h, size_t *n, hnsw_pair x) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) >> 1;
    if (h[p].d >= x.d) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = x;
}

/* Removes the maximum. */
static inline void heap_max_pop(hnsw_pair *h, size_t *n) {
  size_t len = --(*n);
  if (len == 0) return;
  hnsw_pair x = h[len];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= len) break;
    if (c + 1 < len && h[c + 1].d > h[c].d) c++;
    if (h[c].d <= x.d) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}

/* Replaces the maximum by x (cheaper than pop + push). */
static inline void heap_max_replace_top(hnsw_pair *h, size_t n, hnsw_pair x) {
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && h[c + 1].d > h[c].d) c++;
    if (h[c].d <= x.d) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}

static inline void heap_min_push(hnsw_pair *h, size_t *n, hnsw_pair x) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) >> 1;
    if (h[p].d <= x.d) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = x;
}

static inline void heap_min_pop(hnsw_pair *h, size_t *n) {
  size_t len = --(*n);
  if (len == 0) return;
  hnsw_pair x = h[len];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= len) break;
    if (c + 1 < len && h[c + 1].d < h[c].d) c++;
    if (h[c].d >= x.d) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}

/* Empties a max-heap into out[0..n) in ascending order of d. */
static inline void heap_max_drain_sorted(hnsw_pair *h, size_t n,
                                         hnsw_pair *out) {
  while (n > 0) {
    out[n - 1] = h[0];
    heap_max_pop(h, &n);
  }
}

/* Reads vectors ahead of use: the whole vector of the next neighbour while
 * the current one's distance is computed (a 784-float row is 49 lines, and
 * the hardware prefetcher only catches on after a few of them). */
static inline void hnsw_prefetch_vec(const float *v, size_t bytes) {
  const char *p = (const char *)v;
  for (size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
}

#endif
