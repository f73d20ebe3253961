/* shard_read.c: the read side of a shard — k-NN search over every segment,
 * point lookups, scrolling in id order and counting.
 *
 * Search plans per segment: a sealed segment with a graph and enough live
 * rows is searched through the graph, with an allow function that hides rows
 * outside the snapshot or the allow-set; if the beam returns fewer than k,
 * the segment is scanned exactly, so k results come back whenever k
 * qualifying points exist. Other segments are scanned exactly. A small
 * allow-set skips segments entirely: its ids are looked up in the id map and
 * scored directly.
 *
 * Codes (segment_codes.h): a graph is walked on the segment's lossy codes
 * for a shortlist of oversampling x k, rescored with the full vectors
 * (narrow copies where the datatype has them, else the float32 file); a
 * space indexed by IVF is searched through it instead of a graph. The exact
 * scan and the direct path always score float32 vectors. */
#include "engine/shard_read.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "engine/id.h"
#include "filter/filter.h"

/* An allow-set this small (or under 1/20 of the shard) is scored directly. */
#define ALLOW_DIRECT_MAX 2000
/* Without a payload index a filter's selectivity is estimated on this many
 * evenly spaced rows of a segment. */
#define FILTER_SAMPLE 256

/* ---- per-thread search state ------------------------------------------------ */

/* Graph and IVF scratch plus the prepared queries of the codes walked and
 * of the narrow vectors rescored; created on a thread's first search,
 * reused by every later one, freed when the thread exits. */
typedef struct search_tls {
  hnsw_scratch *graph;
  ivf_scratch *ivf;
  qcodes_query walk, full;
} search_tls;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_destroy(void *p) {
  search_tls *t = p;
  hnsw_scratch_free(t->graph);
  ivf_scratch_free(t->ivf);
  qcodes_query_destroy(&t->walk);
  qcodes_query_destroy(&t->full);
  qv_free(t);
}
static void tls_key_init(void) { pthread_key_create(&tls_key, tls_destroy); }

static search_tls *thread_state(void) {
  pthread_once(&tls_once, tls_key_init);
  search_tls *t = pthread_getspecific(tls_key);
  if (t == NULL) {
    t = qv_calloc(1, sizeof *t);
    if (t == NULL) return NULL;
    t->graph = hnsw_scratch_new();
    t->ivf = ivf_scratch_new();
    if (t->graph == NULL || t->ivf == NULL || pthread_setspecific(tls_key, t) != 0) {
      tls_destroy(t);
      return NULL;
    }
  }
  return t;
}

/* ---- search --------------------------------------------------------------- */

typedef struct allow_ctx {
  segment *seg;
  uint32_t space;
  uint64_t snap;
  const idmap *allow;
  const qv_filter *filter;
  const rowset *cand; /* rows a payload index allows, or NULL */
} allow_ctx;

static bool payload_ok(segment *s, uint32_t row, const qv_filter *f) {
  return segment_filter_match(s, row, f);
}

static bool row_allowed(void *vctx, uint32_t row) {
  const allow_ctx *c = vctx;
  if (c->cand != NULL && !rowset_has(c->cand, row)) return false;
  if (!segment_visible(c->seg, row, c->snap) || !segment_has(c->seg, c->space, row))
    return false;
  if (c->allow != NULL && idmap_get(c->allow, &c->seg->ids[row]) == NULL) return false;
  return payload_ok(c->seg, row, c->filter);
}

static void scan_exact(segment *s, uint32_t n, uint64_t snap,
                       const shard_search_args *a, const rowset *cand, vec_dist_fn dist,
                       topk *out) {
  allow_ctx c = {s, a->space, snap, a->allow, a->filter, cand};
  const float *q = a->query;
  uint32_t dim = s->sp->s[a->space].dim;
  for (uint32_t r = 0; r < n; r++) {
    /* with candidates, skip whole empty words of the bitset */
    if (cand != NULL && cand->bits[r >> 6] == 0) {
      r |= 63;
      continue;
    }
    if (!row_allowed(&c, r)) continue;
    float d = dist(q, segment_vec(s, a->space, r), dim);
    if (d <= topk_bound(out)) topk_push(out, &s->ids[r], d);
  }
}

/* Rows of the segment the filter is expected to match, from evenly spaced
 * rows. */
static double filter_estimate(segment *s, uint32_t n, const qv_filter *f) {
  uint32_t step = n > FILTER_SAMPLE ? n / FILTER_SAMPLE : 1, seen = 0, hit = 0;
  for (uint32_t r = 0; r < n; r += step, seen++) hit += payload_ok(s, r, f);
  return seen ? (double)hit / seen * n : 0;
}

/* Is scanning the `matches` rows of a filter cheaper than walking the graph?
 * A filtered beam of width ef visits about ef / s nodes to collect ef allowed
 * ones (s = matches / n), each costing a distance to its 2m neighbours, while
 * the scan costs `matches` distances: scan when matches^2 < ef * 2m * n.
 * Filters correlated with the vectors (a class label) make the walk longer
 * still, so the estimate leans towards the scan on purpose. */
static bool scan_is_cheaper(double matches, uint32_t n, uint32_t ef, uint32_t m) {
  return matches * matches < (double)ef * 2.0 * m * n;
}

static float score_codes(void *ctx, uint32_t row) { return qcodes_dist(ctx, row); }

/* The shortlist the codes of a segment give before rescoring. */
static uint32_t shortlist(const shard_search_args *a, uint32_t k) {
  double w = ceil((double)a->oversampling * k);
  return w > k ? (w > 1e6 ? 1000000u : (uint32_t)w) : k;
}

/* Walks the segment's graph — on its lossy codes unless the query ignores
 * them, else on its narrow vectors, else on the float32 vectors — and pushes
 * the best hits into `out`: a shortlist of oversampling x k when the codes
 * are lossy, rescored with the full vectors unless rescoring is off (then
 * the codes' own distances are returned). *too_few is set when the walk
 * found fewer than k allowed rows. */
static qv_rc search_graph(segment *s, const shard_search_args *a, allow_ctx *c, bool filtered,
                          uint32_t ef, vec_dist_fn dist, topk *out, bool *too_few,
                          qv_err *err) {
  uint32_t sp = a->space, kk = out->k;
  qcodes *walk = !a->quant_ignore && s->codes[sp] ? s->codes[sp] : s->narrow[sp];
  bool lossy = walk != NULL && !qcodes_is_exact(walk);
  uint32_t want = lossy ? shortlist(a, kk) : kk;
  if (ef < want) ef = want;
  search_tls *t = thread_state();
  /* the common k fits on the stack: no allocation per segment per query */
  hnsw_hit stack_hits[256];
  hnsw_hit *hits = want <= 256 ? stack_hits : qv_malloc((size_t)want * sizeof *hits);
  if (t == NULL || hits == NULL) {
    if (hits != stack_hits) qv_free(hits);
    return qv_err_set(err, QV_ENOMEM, "search: no memory for %u hits", want);
  }
  hnsw_allow_fn allow = filtered ? row_allowed : NULL;
  uint32_t nh = 0;
  qv_rc rc = QV_OK;
  if (walk != NULL) {
    rc = qcodes_query_prepare(walk, a->query, &t->walk, err);
    hnsw_scorer sc = {score_codes, &t->walk, walk->codes, walk->stride};
    if (rc == QV_OK)
      rc = hnsw_search_scored(s->graph[sp], &sc, want, ef, allow, c, t->graph, hits, &nh);
  } else {
    rc = hnsw_search(s->graph[sp], a->query, kk, ef, allow, c, t->graph, hits, &nh);
  }
  bool rescore = lossy && a->rescore;
  qcodes *full = s->narrow[sp];
  if (rc == QV_OK && rescore && full != NULL)
    rc = qcodes_query_prepare(full, a->query, &t->full, err);
  if (rc == QV_OK && nh < kk) {
    *too_few = true;
  } else if (rc == QV_OK) {
    uint32_t dim = s->sp->s[sp].dim;
    for (uint32_t i = 0; i < nh; i++) {
      uint32_t r = hits[i].row;
      float d = hits[i].dist;
      if (rescore)
        d = full != NULL ? qcodes_dist(&t->full, r) : dist(a->query, segment_vec(s, sp, r), dim);
      topk_push(out, &s->ids[r], d);
    }
  } else {
    qv_err_set(err, rc, "search: no memory for a graph search");
  }
  if (hits != stack_hits) qv_free(hits);
  return rc;
}

/* Searches the segment's IVF index: nprobe lists (default by nlist), IVF-PQ
 * scoring a shortlist of oversampling x k by its codes and rescoring it
 * with the full vectors unless rescoring is off. */
static qv_rc search_ivf(segment *s, const shard_search_args *a, allow_ctx *c, bool filtered,
                        topk *out, bool *too_few, qv_err *err) {
  const ivf *ix = s->ivf[a->space];
  uint32_t kk = out->k;
  search_tls *t = thread_state();
  quant_hit stack_hits[256];
  quant_hit *hits = kk <= 256 ? stack_hits : qv_malloc((size_t)kk * sizeof *hits);
  if (t == NULL || hits == NULL) {
    if (hits != stack_hits) qv_free(hits);
    return qv_err_set(err, QV_ENOMEM, "search: no memory for %u hits", kk);
  }
  ivf_search_params isp;
  ivf_search_params_init(&isp);
  isp.nprobe = a->nprobe ? a->nprobe : segcodes_nprobe_default(ivf_nlist(ix));
  isp.rescore = ivf_get_kind(ix) == IVF_PQ && a->rescore ? shortlist(a, kk) : 0;
  isp.allow = filtered ? row_allowed : NULL;
  isp.allow_ctx = c;
  uint32_t nh = 0;
  qv_rc rc = ivf_search(ix, a->query, kk, &isp, t->ivf, hits, &nh);
  if (rc != QV_OK) {
    qv_err_set(err, rc, "search: ivf search failed");
  } else if (nh < kk) {
    *too_few = true;
  } else {
    for (uint32_t i = 0; i < nh; i++) topk_push(out, &s->ids[hits[i].row], hits[i].dist);
  }
  if (hits != stack_hits) qv_free(hits);
  return rc;
}

static qv_rc search_segment(shard *sh, segment *s, const shard_view *v,
                            const shard_search_args *a, vec_dist_fn dist,
                            topk *out, qv_err *err) {
  uint64_t snap = v->snap;
  uint32_t n = segment_rows(s);
  if (n == 0) return QV_OK;
  uint32_t live = n - __atomic_load_n(&s->n_dead, __ATOMIC_RELAXED);
  hnsw *graph = s->graph[a->space];
  /* Plan: payload indexes give the candidates of the filter's indexed
   * conditions exactly (few: scan them; many: filter the graph walk by
   * them); without one the filter's selectivity is estimated on a sample. */
  rowset cand = {0};
  bool have_cand = a->filter != NULL && segidx_candidates(s, n, v->defs, a->filter, &cand);
  uint32_t ef = a->ef > out->k ? a->ef : out->k;
  bool selective = false;
  if (a->filter != NULL) {
    double matches = have_cand ? cand.count : filter_estimate(s, n, a->filter);
    /* m and full_scan_threshold may change under us (qv_collection_update) */
    selective = scan_is_cheaper(matches, n, ef, __atomic_load_n(&sh->sp.s[a->space].m, __ATOMIC_RELAXED));
  }
  bool use_graph = s->state == SEG_SEALED && (graph != NULL || s->ivf[a->space] != NULL) &&
                   !a->exact &&
                   live >= __atomic_load_n(&sh->cfg.full_scan_threshold, __ATOMIC_RELAXED) &&
                   !selective;
  const rowset *cp = have_cand ? &cand : NULL;
  if (!use_graph) {
    scan_exact(s, n, snap, a, cp, dist, out);
    rowset_free(&cand);
    return QV_OK;
  }
  allow_ctx c = {s, a->space, snap, a->allow, a->filter, cp};
  /* Rows without this vector are zeros in the graph: always filter them. */
  bool filtered = a->allow != NULL || a->filter != NULL || live < n ||
                  !s->all_present[a->space];
  bool too_few = false;
  qv_rc rc = s->ivf[a->space] != NULL
                 ? search_ivf(s, a, &c, filtered, out, &too_few, err)
                 : search_graph(s, a, &c, filtered, ef, dist, out, &too_few, err);
  /* The index found fewer than k allowed rows: the exact scan keeps the
   * promise of k results whenever k rows qualify. */
  if (rc == QV_OK && too_few) scan_exact(s, n, snap, a, cp, dist, out);
  rowset_free(&cand);
  return rc;
}

/* Scores each allowed id at its current location. */
static void search_direct(shard *sh, const shard_search_args *a,
                          vec_dist_fn dist, topk *out) {
  pthread_rwlock_rdlock(&sh->lock);
  const idmap *al = a->allow;
  for (size_t i = 0; i < al->cap; i++) {
    const idmap_entry *ae = &al->slots[i];
    if (ae->seg == NULL) continue;
    const idmap_entry *e = idmap_get(&sh->map, &ae->id);
    if (e == NULL || !segment_has(e->seg, a->space, e->row) ||
        !payload_ok(e->seg, e->row, a->filter))
      continue;
    float d = dist(a->query, segment_vec(e->seg, a->space, e->row), sh->sp.s[a->space].dim);
    topk_push(out, &e->id, d);
  }
  pthread_rwlock_unlock(&sh->lock);
}

qv_rc shard_search(shard *sh, const shard_search_args *a, topk *out,
                   qv_err *err) {
  vec_dist_fn dist = dist_fn(dist_ops_get(), sh->sp.s[a->space].metric);
  if (a->allow != NULL &&
      (a->n_allow <= ALLOW_DIRECT_MAX || a->n_allow * 20 < shard_count(sh))) {
    search_direct(sh, a, dist, out);
    return QV_OK;
  }
  shard_view v;
  shard_view_get(sh, &v);
  qv_rc rc = QV_OK;
  for (uint32_t i = 0; rc == QV_OK && i < v.list->n; i++)
    rc = search_segment(sh, v.list->segs[i], &v, a, dist, out, err);
  shard_view_put(&v);
  return rc;
}

/* ---- point reads ------------------------------------------------------------ */

void record_clear(qv_record *r) {
  qv_free((void *)r->vector);
  qv_free((void *)r->payload);
  for (uint32_t i = 0; i < r->n_named; i++) qv_free((void *)r->named[i].vector);
  qv_free(r->named);
  memset(r, 0, sizeof *r);
}

static float *copy_vec(const segment *s, uint32_t space, uint32_t row) {
  size_t bytes = (size_t)s->sp->s[space].dim * 4;
  float *v = qv_malloc(bytes);
  if (v != NULL) memcpy(v, segment_vec(s, space, row), bytes);
  return v;
}

/* Copies row data; lock held. Named vectors' names point into the shard's
 * spaces, which live as long as the collection. */
static qv_rc copy_record(const idmap_entry *e, bool wv, bool wp, qv_record *rec) {
  memset(rec, 0, sizeof *rec);
  rec->id = e->id;
  const segment *s = e->seg;
  const spaces *sp = s->sp;
  for (uint32_t i = 0; wv && i < sp->n; i++) {
    if (!segment_has(s, i, e->row)) continue;
    float *v = copy_vec(s, i, e->row);
    if (v == NULL) goto oom;
    if (sp->s[i].name[0] == 0) {
      rec->vector = v;
      continue;
    }
    if (rec->named == NULL && (rec->named = qv_calloc(sp->n, sizeof *rec->named)) == NULL) {
      qv_free(v);
      goto oom;
    }
    rec->named[rec->n_named++] = (qv_named_vector){sp->s[i].name, v, sp->s[i].dim};
  }
  if (wp) {
    uint32_t len;
    const char *pl = segment_payload(e->seg, e->row, &len);
    if (len == 0) {
      pl = "{}";
      len = 2;
    }
    char *p = qv_strndup(pl, len);
    if (p == NULL) goto oom;
    rec->payload = p;
    rec->payload_len = len;
  }
  return QV_OK;
oom:
  record_clear(rec);
  return QV_ENOMEM;
}

/* Reads return only durable data: wait for writes already applied. */
static qv_rc settle(shard *sh, qv_err *err) {
  uint64_t applied = __atomic_load_n(&sh->applied_lsn, __ATOMIC_ACQUIRE);
  if (applied <= sh->checkpoint_lsn || wal_durable_lsn(sh->log) >= applied) return QV_OK;
  return wal_sync(sh->log, applied, err);
}

qv_rc shard_get(shard *sh, const qv_point_id *id, bool with_vector,
                bool with_payload, qv_record *rec, bool *found, qv_err *err) {
  qv_rc rc = settle(sh, err);
  if (rc != QV_OK) return rc;
  pthread_rwlock_rdlock(&sh->lock);
  const idmap_entry *e = idmap_get(&sh->map, id);
  *found = e != NULL;
  if (e != NULL) rc = copy_record(e, with_vector, with_payload, rec);
  pthread_rwlock_unlock(&sh->lock);
  if (rc != QV_OK) return qv_err_set(err, rc, "get: no memory");
  return QV_OK;
}

/* max-heap of entry pointers by id, keeping the `limit` smallest ids */
static void heap_sift(const idmap_entry **h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && qv_id_cmp(&h[l]->id, &h[m]->id) > 0) m = l;
    if (r < n && qv_id_cmp(&h[r]->id, &h[m]->id) > 0) m = r;
    if (m == i) return;
    const idmap_entry *t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

static int entry_cmp(const void *a, const void *b) {
  const idmap_entry *const *x = a, *const *y = b;
  return qv_id_cmp(&(*x)->id, &(*y)->id);
}

qv_rc shard_scroll(shard *sh, const qv_filter *filter, const qv_point_id *start,
                   size_t limit, bool with_vector, bool with_payload,
                   qv_record *out, size_t *n_out, qv_err *err) {
  *n_out = 0;
  if (limit == 0) return QV_OK;
  qv_rc rc = settle(sh, err);
  if (rc != QV_OK) return rc;
  const idmap_entry **h = qv_malloc(limit * sizeof *h);
  if (h == NULL) return qv_err_set(err, QV_ENOMEM, "scroll: no memory");
  size_t n = 0;
  pthread_rwlock_rdlock(&sh->lock);
  for (size_t i = 0; i < sh->map.cap; i++) {
    const idmap_entry *e = &sh->map.slots[i];
    if (e->seg == NULL || (start && qv_id_cmp(&e->id, start) < 0)) continue;
    if (n == limit && qv_id_cmp(&e->id, &h[0]->id) >= 0) continue;
    if (!payload_ok(e->seg, e->row, filter)) continue;
    if (n < limit) {
      h[n++] = e;
      for (size_t j = n - 1; j > 0;) { /* sift up */
        size_t p = (j - 1) / 2;
        if (qv_id_cmp(&h[j]->id, &h[p]->id) <= 0) break;
        const idmap_entry *t = h[j];
        h[j] = h[p];
        h[p] = t;
        j = p;
      }
    } else if (qv_id_cmp(&e->id, &h[0]->id) < 0) {
      h[0] = e;
      heap_sift(h, n, 0);
    }
  }
  qsort(h, n, sizeof *h, entry_cmp);
  for (size_t i = 0; rc == QV_OK && i < n; i++)
    rc = copy_record(h[i], with_vector, with_payload, &out[i]);
  pthread_rwlock_unlock(&sh->lock);
  qv_free(h);
  if (rc != QV_OK) {
    for (size_t i = 0; i < n; i++) record_clear(&out[i]);
    return qv_err_set(err, rc, "scroll: no memory");
  }
  *n_out = n;
  return QV_OK;
}

uint64_t shard_count(shard *sh) {
  pthread_rwlock_rdlock(&sh->lock);
  uint64_t n = sh->map.n;
  pthread_rwlock_unlock(&sh->lock);
  return n;
}

qv_rc shard_count_filtered(shard *sh, const qv_filter *filter, uint64_t *out,
                           qv_err *err) {
  if (filter == NULL) {
    *out = shard_count(sh);
    return QV_OK;
  }
  qv_rc rc = settle(sh, err);
  if (rc != QV_OK) return rc;
  uint64_t n = 0;
  pthread_rwlock_rdlock(&sh->lock);
  for (size_t i = 0; i < sh->map.cap; i++) {
    const idmap_entry *e = &sh->map.slots[i];
    if (e->seg != NULL) n += payload_ok(e->seg, e->row, filter);
  }
  pthread_rwlock_unlock(&sh->lock);
  *out = n;
  return QV_OK;
}

qv_rc shard_select(shard *sh, const qv_filter *filter, qv_point_id **ids,
                   size_t *n_out, qv_err *err) {
  qv_rc rc = settle(sh, err);
  if (rc != QV_OK) return rc;
  pthread_rwlock_rdlock(&sh->lock);
  qv_point_id *v = qv_malloc((sh->map.n + 1) * sizeof *v);
  size_t n = 0;
  for (size_t i = 0; v != NULL && i < sh->map.cap; i++) {
    const idmap_entry *e = &sh->map.slots[i];
    if (e->seg != NULL && payload_ok(e->seg, e->row, filter)) v[n++] = e->id;
  }
  pthread_rwlock_unlock(&sh->lock);
  if (v == NULL) return qv_err_set(err, QV_ENOMEM, "select: no memory");
  *ids = v;
  *n_out = n;
  return QV_OK;
}
