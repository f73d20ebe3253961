/* routes_query.c: the universal Query API (POST .../points/query and
 * .../query/batch): nearest by vector or by point id, recommend
 * (average_vector), no query (id order), prefetch trees, and fusion of
 * prefetch results by RRF or DBSF.
 *
 * A query is a tree of levels; each level yields a ranked list of hits:
 *   - with a vector and no prefetch: an engine search;
 *   - with a vector and prefetches: the prefetched ids are re-scored by an
 *     engine search restricted to them (allow_ids);
 *   - with fusion: the prefetch lists are combined (RRF: sum of
 *     1/((rank+1)/w + k - 1), default k = 2; DBSF: per list
 *     (s - (mean - 3 sd)) / (6 sd), summed);
 *   - with no query: the first points in id order (score 0), or the only
 *     prefetch's list.
 * Each level searches the vector space named by its own `using` (default
 * the unnamed vector). The filter of a level also applies to every
 * prefetch below it, as in Qdrant. `offset` applies to the top level only. Invariant: every level
 * returns at most its limit of hits, best first. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "server/server_int.h"

#define MAX_DEPTH 8

typedef struct hitlist {
  qv_hit *h;
  size_t n;
} hitlist;

static bool run_level(srv_req *r, srv_coll *sc, const json_t *q, const json_t *parent_filter,
                      bool top, int depth, hitlist *out);

/* The filter of this level ANDed with the inherited one, as JSON (new ref). */
static json_t *combined_filter(const json_t *parent, const json_t *own) {
  bool has_own = own && !json_is_null(own);
  if (parent && has_own) return json_pack("{s:[O,O]}", "must", parent, own);
  if (parent) return json_incref((json_t *)parent);
  return has_own ? json_incref((json_t *)own) : NULL;
}

static bool is_id(const json_t *v) {
  return json_is_integer(v) || json_is_string(v) || jsonio_raw_text(v);
}

/* Turns `query` into s->vec in space `using` (adding excluded ids). Sets
 * *fusion to 'r' or 'd' for a fusion query, *none for a missing query;
 * only queries that need a vector check that `using` exists. */
static bool parse_query(srv_req *r, srv_coll *sc, const json_t *q, const char *using,
                        search_spec *s, char *fusion, double *rrf_k, const json_t **weights,
                        bool *none) {
  *fusion = 0;
  *none = false;
  if (q == NULL || json_is_null(q)) {
    *none = true;
    return true;
  }
  if (json_is_object(q) && json_object_get(q, "nearest")) {
    if (json_object_get(q, "mmr")) return srv_wrong_input(r, "mmr is not supported yet");
    q = json_object_get(q, "nearest");
  }
  if (srv_is_vector(r, q))
    return search_spec_space(r, sc, using, s) &&
           srv_vector_parse(r, q, "query", sc->sp[s->space].dim, s->vec);
  if (is_id(q)) {
    qv_point_id id;
    qv_point_id *ex = qv_realloc(s->exclude, (s->n_exclude + 1) * sizeof *ex);
    if (ex == NULL) return srv_fail(r, 500, "Service internal error: out of memory");
    s->exclude = ex;
    if (!srv_id_parse(r, q, "query", &id) || !search_spec_space(r, sc, using, s) ||
        !point_vector(r, sc, &id, s->space, s->vec))
      return false;
    s->exclude[s->n_exclude++] = id;
    return true;
  }
  if (!json_is_object(q)) return srv_format_err(r, "query: expected a vector, a point id or an object");
  const json_t *f = json_object_get(q, "fusion");
  if (f) {
    const char *name = json_string_value(f);
    if (name && !strcmp(name, "rrf")) *fusion = 'r';
    else if (name && !strcmp(name, "dbsf")) *fusion = 'd';
    else return srv_format_err(r, "query.fusion: unknown variant, expected `rrf` or `dbsf`");
    return true;
  }
  const json_t *rrf = json_object_get(q, "rrf");
  if (rrf) {
    if (!json_is_object(rrf)) return srv_format_err(r, "query.rrf: expected a map");
    uint64_t k = 2;
    if (!srv_field_u64(r, rrf, "k", false, &k)) return false;
    if (k == 0) return srv_invalid(r, "query.rrf.k", "value 0 invalid, must be 1 or larger");
    *rrf_k = (double)k;
    bool ok;
    *weights = srv_field_arr(r, rrf, "weights", &ok);
    *fusion = 'r';
    return ok;
  }
  const json_t *rec = json_object_get(q, "recommend");
  if (rec) {
    if (!json_is_object(rec)) return srv_format_err(r, "query.recommend: expected a map");
    const char *strategy = NULL;
    if (!srv_field_str(r, rec, "strategy", false, &strategy)) return false;
    if (strategy && strcmp(strategy, "average_vector") != 0)
      return srv_wrong_input(r, "recommend strategy \"%.30s\" is not supported yet "
                                "(only average_vector)", strategy);
    return search_spec_space(r, sc, using, s) &&
           recommend_vector(r, sc, json_object_get(rec, "positive"),
                            json_object_get(rec, "negative"), s);
  }
  const char *kind = "?";
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)q, key, val) {
    kind = key;
    break;
  }
  return srv_wrong_input(r, "query `%.40s` is not supported yet", kind);
}

/* Fuses the prefetch lists; output sorted by fused score, descending. */
typedef struct fused {
  qv_point_id id;
  double score;
  size_t first; /* order of first appearance, to keep ties stable */
} fused;

static int fused_cmp(const void *a, const void *b) {
  const fused *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return x->first < y->first ? -1 : x->first > y->first;
}

static bool fuse(srv_req *r, srv_coll *sc, const hitlist *lists, size_t n_lists, char kind,
                 double k, const json_t *weights, hitlist *out) {
  if (weights && json_array_size(weights) != n_lists)
    return srv_wrong_input(r, "rrf.weights has %zu entries for %zu prefetches",
                           json_array_size(weights), n_lists);
  size_t total = 0;
  for (size_t l = 0; l < n_lists; l++) total += lists[l].n;
  fused *f = qv_malloc((total + 1) * sizeof *f);
  if (f == NULL) return srv_fail(r, 500, "Service internal error: out of memory");
  size_t nf = 0;
  /* Distances (Euclid, Manhattan) rank lower-is-better; DBSF normalises a
   * higher-is-better score, so they are negated first. */
  bool is_dist = sc->info.config.distance == QV_EUCLID || sc->info.config.distance == QV_MANHATTAN;
  for (size_t l = 0; l < n_lists; l++) {
    double w = 1, mean = 0, sd = 0;
    if (weights && !jsonio_get_f64(json_array_get(weights, l), &w)) {
      qv_free(f);
      return srv_format_err(r, "rrf.weights[%zu]: expected a number", l);
    }
    if (weights && w <= 0) {
      qv_free(f);
      return srv_invalid(r, "rrf.weights", "weights must be positive");
    }
    const hitlist *h = &lists[l];
    if (kind == 'd' && h->n > 1) {
      for (size_t i = 0; i < h->n; i++) mean += is_dist ? -h->h[i].score : h->h[i].score;
      mean /= (double)h->n;
      for (size_t i = 0; i < h->n; i++) {
        double d = (is_dist ? -h->h[i].score : h->h[i].score) - mean;
        sd += d * d;
      }
      sd = sqrt(sd / (double)(h->n - 1));
    }
    for (size_t i = 0; i < h->n; i++) {
      double c;
      if (kind == 'r') {
        c = 1.0 / (((double)i + 1.0) / w + k - 1.0);
      } else {
        double s = is_dist ? -h->h[i].score : h->h[i].score;
        c = (h->n < 2 || sd == 0) ? 0.5 : (s - (mean - 3 * sd)) / (6 * sd);
      }
      size_t j = 0;
      while (j < nf && qv_id_cmp(&f[j].id, &h->h[i].id) != 0) j++;
      if (j == nf) f[nf++] = (fused){h->h[i].id, 0, nf};
      f[j].score += c;
    }
  }
  qsort(f, nf, sizeof *f, fused_cmp);
  out->h = qv_malloc((nf + 1) * sizeof *out->h);
  if (out->h == NULL) {
    qv_free(f);
    return srv_fail(r, 500, "Service internal error: out of memory");
  }
  for (size_t i = 0; i < nf; i++) out->h[i] = (qv_hit){f[i].id, (float)f[i].score};
  out->n = nf;
  qv_free(f);
  return true;
}

/* The first offset + limit points in id order, score 0. */
static bool id_order(srv_req *r, srv_coll *sc, const search_spec *s, hitlist *out) {
  qv_records recs = {0};
  qv_point_id next;
  bool has_next;
  qv_err err = {0};
  qv_rc rc = qv_scroll_filtered(sc->c, s->filter, NULL, (size_t)s->p.k + s->p.offset, false,
                                false, &recs, &next, &has_next, &err);
  if (rc != QV_OK) return srv_rc_fail(r, rc, &err);
  out->h = qv_malloc((recs.n + 1) * sizeof *out->h);
  if (out->h == NULL) {
    qv_records_free(&recs);
    return srv_fail(r, 500, "Service internal error: out of memory");
  }
  for (size_t i = 0; i < recs.n; i++) out->h[i] = (qv_hit){recs.items[i].id, 0};
  out->n = recs.n;
  qv_records_free(&recs);
  return true;
}

/* Applies score_threshold (fusion: >=), offset and limit to a list. */
static void trim(hitlist *h, const search_spec *s, bool threshold) {
  size_t m = 0, skipped = 0;
  for (size_t i = 0; i < h->n; i++) {
    if (threshold && s->p.has_score_threshold && h->h[i].score < s->p.score_threshold) continue;
    if (skipped < s->p.offset) {
      skipped++;
      continue;
    }
    if (m < s->p.k) h->h[m++] = h->h[i];
  }
  h->n = m;
}

static bool run_prefetches(srv_req *r, srv_coll *sc, const json_t *pf, const json_t *filter,
                           int depth, hitlist **lists, size_t *n) {
  *lists = NULL;
  *n = 0;
  if (pf == NULL || json_is_null(pf)) return true;
  size_t m = json_is_array(pf) ? json_array_size(pf) : 1;
  if (!json_is_array(pf) && !json_is_object(pf))
    return srv_format_err(r, "prefetch: expected an object or a sequence of objects");
  if (depth >= MAX_DEPTH) return srv_wrong_input(r, "prefetch is nested more than %d deep", MAX_DEPTH);
  *lists = qv_calloc(m + 1, sizeof **lists);
  if (*lists == NULL) return srv_fail(r, 500, "Service internal error: out of memory");
  for (size_t i = 0; i < m; i++) {
    const json_t *one = json_is_array(pf) ? json_array_get(pf, i) : pf;
    if (!json_is_object(one)) return srv_format_err(r, "prefetch[%zu]: expected a map", i);
    if (!run_level(r, sc, one, filter, false, depth + 1, &(*lists)[i])) return false;
    (*n)++;
  }
  return true;
}

static void free_lists(hitlist *lists, size_t n) {
  for (size_t i = 0; lists && i < n; i++) qv_free(lists[i].h);
  qv_free(lists);
}

static bool run_level(srv_req *r, srv_coll *sc, const json_t *q, const json_t *parent_filter,
                      bool top, int depth, hitlist *out) {
  search_spec s = {0};
  hitlist *lists = NULL;
  size_t n_lists = 0;
  json_t *filter = combined_filter(parent_filter, json_object_get(q, "filter"));
  json_t *spec_obj = json_deep_copy(q);
  char fusion;
  double rrf_k = 2;
  const json_t *weights = NULL;
  const char *using = "";
  bool none, ok = spec_obj != NULL;
  memset(out, 0, sizeof *out);
  if (ok) {
    /* The level's own view: the combined filter, no offset below the top. */
    json_object_set(spec_obj, "filter", filter ? filter : json_null());
    if (!top) json_object_del(spec_obj, "offset");
  } else {
    srv_fail(r, 500, "Service internal error: out of memory");
  }
  if (ok) ok = search_spec_parse(r, spec_obj, 10, &s);
  if (ok) ok = srv_field_str(r, q, "using", false, &using);
  if (ok) {
    const json_t *lf = json_object_get(q, "lookup_from");
    if (lf && !json_is_null(lf)) ok = srv_wrong_input(r, "lookup_from is not supported yet");
  }
  if (ok)
    ok = parse_query(r, sc, json_object_get(q, "query"), using, &s, &fusion, &rrf_k, &weights,
                     &none);
  if (ok) ok = run_prefetches(r, sc, json_object_get(q, "prefetch"), filter, depth, &lists, &n_lists);
  if (ok && fusion) {
    if (n_lists == 0) ok = srv_wrong_input(r, "fusion needs at least one prefetch");
    else ok = fuse(r, sc, lists, n_lists, fusion, rrf_k, weights, out);
    if (ok) trim(out, &s, true);
  } else if (ok && none) {
    if (n_lists == 1) {
      *out = lists[0];
      lists[0].h = NULL;
      trim(out, &s, false);
    } else if (n_lists > 1) {
      ok = srv_wrong_input(r, "a query is needed to combine several prefetches (e.g. fusion)");
    } else {
      ok = id_order(r, sc, &s, out);
      if (ok) trim(out, &s, false);
    }
  } else if (ok) {
    qv_point_id *allow = NULL;
    size_t n_allow = 0;
    if (n_lists > 0) { /* re-score only what the prefetches found */
      for (size_t i = 0; i < n_lists; i++) n_allow += lists[i].n;
      allow = qv_malloc((n_allow + 1) * sizeof *allow);
      if (allow == NULL) ok = srv_fail(r, 500, "Service internal error: out of memory");
      n_allow = 0;
      for (size_t i = 0; ok && i < n_lists; i++)
        for (size_t j = 0; j < lists[i].n; j++) allow[n_allow++] = lists[i].h[j].id;
      s.p.allow_ids = allow;
      s.p.n_allow = n_allow;
    }
    if (ok) ok = search_run(r, sc, &s, &out->h, &out->n);
    qv_free(allow);
  }
  free_lists(lists, n_lists);
  search_spec_free(&s);
  json_decref(spec_obj);
  json_decref(filter);
  if (!ok) {
    qv_free(out->h);
    memset(out, 0, sizeof *out);
  }
  return ok;
}

static json_t *query_one(srv_req *r, srv_coll *sc, const json_t *q) {
  if (!json_is_object(q)) {
    srv_format_err(r, "invalid type: expected a QueryRequest object");
    return NULL;
  }
  hitlist h;
  if (!run_level(r, sc, q, NULL, true, 0, &h)) return NULL;
  srv_sel sel;
  srv_vsel vs;
  json_t *pts = NULL;
  if (srv_sel_parse(r, q, false, &sel) && srv_with_vector(r, q, false, &vs)) {
    pts = srv_hits_json(r, sc, h.h, h.n, &sel, &vs);
    if (pts == NULL) srv_fail(r, 500, "Service internal error: reading results failed");
  }
  qv_free(h.h);
  return pts ? json_pack("{s:o}", "points", pts) : NULL;
}

void h_query(srv_req *r) { srv_run_one(r, true, query_one); }

void h_query_batch(srv_req *r) { srv_run_batch(r, query_one); }
