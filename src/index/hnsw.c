/* hnsw.c: the HNSW graph object's lifecycle glue: parameter defaults,
 * the shared shell allocation, free, size and memory accounting, and the
 * per-thread search scratch.
 *
 * Does not build (hnsw_build.c), search (hnsw_search.c) or read and write
 * files (hnsw_io.c). Invariant kept here: a scratch's visited tags are all
 * != epoch for rows not yet seen by the current query, which is why a new
 * epoch that wraps to 0 clears the array once (every 65,535 queries) instead
 * of clearing per query. */
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "index/hnsw_int.h"

void hnsw_params_init(hnsw_params *p) {
  p->m = HNSW_M_DEFAULT;
  p->ef_construct = HNSW_EF_CONSTRUCT_DEFAULT;
  p->n_threads = 1;
  p->seed = 0x5eed;
}

qv_rc hnsw_alloc_shell(const float *vecs, uint32_t n, uint32_t dim,
                       vec_metric metric, uint32_t m, hnsw **out, qv_err *err) {
  vec_dist_fn fn = dist_fn(dist_ops_get(), metric);
  if (fn == NULL)
    return qv_err_set(err, QV_EINVAL, "hnsw: unknown metric %d", (int)metric);
  hnsw *h = qv_calloc(1, sizeof *h);
  if (h == NULL) return qv_err_set(err, QV_ENOMEM, "hnsw: no memory");
  h->vecs = vecs;
  h->n = n;
  h->dim = dim;
  h->metric = metric;
  h->dist = fn;
  h->m = m;
  h->l0_stride = 1 + 2 * m;
  h->up_stride = 1 + m;
  *out = h;
  return QV_OK;
}

uint64_t hnsw_index_levels(const uint8_t *levels, uint32_t n,
                           uint32_t *up_first) {
  uint64_t slots = 0;
  for (uint32_t r = 0; r < n; r++) {
    up_first[r] = (uint32_t)slots;
    slots += levels[r];
    if (slots > UINT32_MAX) return UINT64_MAX;
  }
  return slots;
}

void hnsw_free(hnsw *h) {
  if (h == NULL) return;
  if (h->is_mapped) {
    fileio_unmap(&h->map);
  } else {
    qv_free_aligned(h->l0);
    qv_free(h->levels);
    qv_free_aligned(h->up);
  }
  qv_free(h->up_first);
  qv_free(h);
}

uint32_t hnsw_size(const hnsw *h) { return h->n; }

size_t hnsw_memory_bytes(const hnsw *h) {
  size_t l0 = (size_t)h->n * h->l0_stride * sizeof(uint32_t);
  size_t up = (size_t)h->n_up_slots * h->up_stride * sizeof(uint32_t);
  return sizeof *h + l0 + (size_t)h->n /* levels */ +
         (size_t)h->n * sizeof(uint32_t) /* up_first */ + up;
}

/* ---- scratch ------------------------------------------------------------ */

hnsw_scratch *hnsw_scratch_new(void) {
  return qv_calloc(1, sizeof(hnsw_scratch));
}

void hnsw_scratch_free(hnsw_scratch *s) {
  if (s == NULL) return;
  qv_free(s->visited);
  qv_free(s->cand);
  qv_free(s->res);
  qv_free(s->ids);
  qv_free(s);
}

static bool grow_pairs(hnsw_pair **p, size_t *cap, size_t want) {
  if (*cap >= want) return true;
  size_t c = *cap ? *cap : 64;
  while (c < want) c *= 2;
  hnsw_pair *q = qv_realloc(*p, c * sizeof *q);
  if (q == NULL) return false;
  *p = q;
  *cap = c;
  return true;
}

qv_rc hnsw_scratch_grow_cand(hnsw_scratch *s) {
  if (!grow_pairs(&s->cand, &s->cap_cand, s->cap_cand * 2 + 64))
    return QV_ENOMEM;
  return QV_OK;
}

qv_rc hnsw_scratch_begin(hnsw_scratch *s, uint32_t n, uint32_t ef,
                         uint32_t max_degree, qv_err *err) {
  if (s->n_visited < n) {
    /* A fresh zeroed array: old tags would be meaningless past the old end,
     * and starting over at epoch 1 keeps "tag == epoch" exact. */
    uint16_t *v = qv_calloc(n, sizeof *v);
    if (v == NULL)
      return qv_err_set(err, QV_ENOMEM, "hnsw: no memory for %u visited tags",
                        n);
    qv_free(s->visited);
    s->visited = v;
    s->n_visited = n;
    s->epoch = 0;
  }
  if (!grow_pairs(&s->res, &s->cap_res, (size_t)ef + 1) ||
      !grow_pairs(&s->cand, &s->cap_cand, (size_t)ef + max_degree + 1))
    return qv_err_set(err, QV_ENOMEM, "hnsw: no memory for heaps of %u", ef);
  if (s->cap_ids < max_degree) {
    uint32_t *ids = qv_realloc(s->ids, (size_t)max_degree * sizeof *ids);
    if (ids == NULL)
      return qv_err_set(err, QV_ENOMEM, "hnsw: no memory for %u ids",
                        max_degree);
    s->ids = ids;
    s->cap_ids = max_degree;
  }
  if (++s->epoch == 0) {
    memset(s->visited, 0, (size_t)s->n_visited * sizeof *s->visited);
    s->epoch = 1;
  }
  return QV_OK;
}
