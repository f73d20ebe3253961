/* hnsw_search.c: k-NN search over a finished HNSW graph: greedy descent
 * through the upper levels, then a beam search (Algorithm 2 of Malkov &
 * Yashunin) of width max(ef, k) on level 0.
 *
 * Owns hnsw_search, hnsw_search_scored (the same walk scored by a caller's
 * function, e.g. on quantized codes) and the allow-list filter. Does not change the graph
 * (hnsw_build.c) or read files (hnsw_io.c). A finished graph never changes,
 * whether built here or mapped from a file, so nothing here locks; all
 * per-query state lives in the caller's hnsw_scratch, which a warm query
 * never reallocates.
 *
 * Filter: allow(ctx, row) decides only which rows enter the result heap.
 * Disallowed rows are still expanded, because the rows a filter keeps are
 * often reachable only through rows it drops. The beam stops once the result
 * heap holds ef allowed rows and the nearest unexpanded candidate is farther
 * than all of them; with a very selective filter the heap never fills and
 * the search walks the whole reachable graph, which is correct and bounded
 * by n. */
#include "base/alloc.h"
#include "base/err.h"
#include "index/hnsw_int.h"

/* The distance from the query to `row`: the float32 kernel on the graph's
 * vectors when `sc` is NULL, else the caller's scorer (codes). Every
 * function taking `sc` is always inlined and called with a literal NULL on
 * the float32 path, so the compiler emits that path exactly as it was
 * before scorers existed: no indirect call, no branch. */
static inline __attribute__((always_inline)) float node_dist(const hnsw *h, const float *q,
                                                             const hnsw_scorer *sc,
                                                             uint32_t row) {
  return sc ? sc->score(sc->ctx, row) : h->dist(q, hnsw_vec(h, row), h->dim);
}

static inline __attribute__((always_inline)) void node_prefetch(const hnsw *h,
                                                                const hnsw_scorer *sc,
                                                                uint32_t row) {
  if (sc == NULL)
    hnsw_prefetch_vec(hnsw_vec(h, row), (size_t)h->dim * sizeof(float));
  else if (sc->codes != NULL)
    hnsw_prefetch_vec((const float *)(sc->codes + (size_t)row * sc->stride), sc->stride);
}

/* Greedy descent from the entry point to level 1's local minimum. */
static inline __attribute__((always_inline)) uint32_t
descend(const hnsw *h, const float *q, const hnsw_scorer *sc, float *d_out) {
  uint32_t cur = h->entry;
  float d = node_dist(h, q, sc, cur);
  for (uint32_t lc = h->max_level; lc >= 1; lc--) {
    bool changed = true;
    while (changed) {
      changed = false;
      const uint32_t *l = hnsw_up_list(h, cur, lc);
      uint32_t cnt = l[0];
      for (uint32_t i = 0; i < cnt; i++) {
        uint32_t id = l[1 + i];
        if (sc == NULL && i + 1 < cnt) __builtin_prefetch(hnsw_vec(h, l[2 + i]));
        float dd = node_dist(h, q, sc, id);
        if (dd < d) {
          d = dd;
          cur = id;
          changed = true;
        }
      }
    }
  }
  *d_out = d;
  return cur;
}

/* Beam search on level 0 from ep; leaves up to ef allowed rows in the max-heap
 * s->res and returns their count through *n_res. Errors: QV_ENOMEM. */
static inline __attribute__((always_inline)) qv_rc
beam_l0(const hnsw *h, const float *q, const hnsw_scorer *sc, uint32_t ep, float ep_d,
        uint32_t ef, hnsw_allow_fn allow, void *ctx, hnsw_scratch *s, size_t *n_res_out) {
  uint16_t *vis = s->visited;
  const uint16_t tag = s->epoch;
  hnsw_pair *cand = s->cand, *res = s->res;
  uint32_t *ids = s->ids;
  size_t n_cand = 0, n_res = 0;

  vis[ep] = tag;
  heap_min_push(cand, &n_cand, (hnsw_pair){ep_d, ep});
  float lower = __builtin_inff();
  if (allow == NULL || allow(ctx, ep)) {
    heap_max_push(res, &n_res, (hnsw_pair){ep_d, ep});
    lower = ep_d;
  }
  while (n_cand > 0) {
    hnsw_pair c = cand[0];
    if (c.d > lower && n_res >= ef) break;
    heap_min_pop(cand, &n_cand);
    const uint32_t *l = hnsw_l0_list(h, c.id);
    uint32_t cnt = l[0];
    /* Collect the unvisited neighbours first: the visited tags are a small
     * array that stays in cache, and knowing which vectors will be read lets
     * the next one be prefetched in full while the current one is summed. */
    uint32_t nn = 0;
    for (uint32_t i = 0; i < cnt; i++) {
      uint32_t id = l[1 + i];
      if (vis[id] == tag) continue;
      vis[id] = tag;
      ids[nn++] = id;
    }
    if (nn > 0) node_prefetch(h, sc, ids[0]);
    for (uint32_t i = 0; i < nn; i++) {
      uint32_t id = ids[i];
      if (i + 1 < nn) node_prefetch(h, sc, ids[i + 1]);
      float d = node_dist(h, q, sc, id);
      if (n_res < ef || d < lower) {
        if (n_cand + 1 > s->cap_cand) {
          if (hnsw_scratch_grow_cand(s) != QV_OK) return QV_ENOMEM;
          cand = s->cand;
        }
        heap_min_push(cand, &n_cand, (hnsw_pair){d, id});
        if (allow == NULL || allow(ctx, id)) {
          if (n_res < ef)
            heap_max_push(res, &n_res, (hnsw_pair){d, id});
          else
            heap_max_replace_top(res, n_res, (hnsw_pair){d, id});
          lower = res[0].d;
        }
      }
    }
    /* The next node to expand: its list is read right after this. */
    if (n_cand > 0) __builtin_prefetch(hnsw_l0_list(h, cand[0].id));
  }
  *n_res_out = n_res;
  return QV_OK;
}

static inline __attribute__((always_inline)) qv_rc
search_impl(const hnsw *h, const float *query, const hnsw_scorer *sc, uint32_t k, uint32_t ef,
            hnsw_allow_fn allow, void *allow_ctx, hnsw_scratch *s, hnsw_hit *out,
            uint32_t *n_out) {
  if (k == 0) {
    *n_out = 0;
    return QV_OK;
  }
  uint32_t width = ef > k ? ef : k;
  hnsw_scratch *own = NULL;
  if (s == NULL) {
    own = s = hnsw_scratch_new();
    if (s == NULL) return QV_ENOMEM;
  }
  qv_rc rc = hnsw_scratch_begin(s, h->n, width, 2 * h->m, NULL);
  size_t n_res = 0;
  if (rc == QV_OK) {
    float ep_d;
    uint32_t ep = descend(h, query, sc, &ep_d);
    rc = beam_l0(h, query, sc, ep, ep_d, width, allow, allow_ctx, s, &n_res);
  }
  if (rc == QV_OK) {
    /* Pop the farthest until k remain, then fill from the back. */
    while (n_res > k) heap_max_pop(s->res, &n_res);
    uint32_t n = (uint32_t)n_res;
    while (n_res > 0) {
      out[n_res - 1] = (hnsw_hit){.row = s->res[0].id, .dist = s->res[0].d};
      heap_max_pop(s->res, &n_res);
    }
    *n_out = n;
  }
  hnsw_scratch_free(own);
  return rc;
}

qv_rc hnsw_search(const hnsw *h, const float *query, uint32_t k, uint32_t ef,
                  hnsw_allow_fn allow, void *allow_ctx, hnsw_scratch *s,
                  hnsw_hit *out, uint32_t *n_out) {
  return search_impl(h, query, NULL, k, ef, allow, allow_ctx, s, out, n_out);
}

qv_rc hnsw_search_scored(const hnsw *h, const hnsw_scorer *sc, uint32_t k, uint32_t ef,
                         hnsw_allow_fn allow, void *allow_ctx, hnsw_scratch *s,
                         hnsw_hit *out, uint32_t *n_out) {
  return search_impl(h, NULL, sc, k, ef, allow, allow_ctx, s, out, n_out);
}
