/* routes_search.c: the legacy read endpoints — search, search/batch,
 * recommend, recommend/batch, scroll, count — and the search machinery the
 * Query API (routes_query.c) reuses.
 *
 * Ids that must not be returned (the examples of a recommendation, the
 * point of a query by id) are removed by over-fetching: the engine is asked
 * for offset + limit + n_exclude hits without offset, the excluded ids are
 * dropped, then offset and limit are applied here. Invariant: results are
 * exactly min(limit, qualifying points after offset), best first, in
 * Qdrant's score convention (the engine's). */
#include <string.h>

#include "base/alloc.h"
#include "server/server_int.h"

void search_spec_free(search_spec *s) {
  qv_free(s->vec);
  qv_free(s->exclude);
  qv_filter_free(s->filter);
  memset(s, 0, sizeof *s);
}

static bool parse_limit(srv_req *r, const json_t *obj, uint32_t dflt, uint32_t *out) {
  const char *key = json_object_get(obj, "top") && !json_object_get(obj, "limit") ? "top" : "limit";
  uint64_t v = dflt;
  if (!srv_field_u64(r, obj, key, dflt == 0, &v)) return false;
  if (v == 0) return srv_invalid(r, key, "value 0 invalid, must be 1 or larger");
  if (v > 1000000) return srv_invalid(r, key, "value %llu invalid, must be 1000000 or less",
                                      (unsigned long long)v);
  *out = (uint32_t)v;
  return true;
}

bool search_spec_parse(srv_req *r, const json_t *obj, uint32_t default_limit, search_spec *s) {
  qv_search_params_init(&s->p);
  uint64_t offset = 0;
  if (!parse_limit(r, obj, default_limit, &s->p.k) ||
      !srv_field_u64(r, obj, "offset", false, &offset))
    return false;
  if (offset > 1000000) return srv_invalid(r, "offset", "value too large");
  s->p.offset = (uint32_t)offset;
  double t;
  bool has_t;
  if (!srv_field_f64(r, obj, "score_threshold", &has_t, &t)) return false;
  s->p.has_score_threshold = has_t;
  s->p.score_threshold = (float)t;
  if (!search_params_parse(r, json_object_get(obj, "params"), &s->p)) return false;
  if (!srv_filter_parse(r, obj, "filter", &s->filter)) return false;
  s->p.filter = s->filter;
  return srv_sel_parse(r, obj, false, &s->sel) && srv_with_vector(r, obj, false, &s->vsel);
}

bool search_spec_space(srv_req *r, srv_coll *sc, const char *name, search_spec *s) {
  if (!srv_space_get(r, sc, name, &s->space)) return false;
  s->p.vector_name = sc->sp[s->space].name;
  qv_free(s->vec);
  s->vec = qv_malloc((size_t)sc->sp[s->space].dim * sizeof(float));
  return s->vec != NULL || srv_fail(r, 500, "Service internal error: out of memory");
}

static bool excluded(const search_spec *s, const qv_point_id *id) {
  for (size_t i = 0; i < s->n_exclude; i++)
    if (qv_id_cmp(&s->exclude[i], id) == 0) return true;
  return false;
}

bool search_run(srv_req *r, srv_coll *sc, const search_spec *s, qv_hit **hits, size_t *n) {
  qv_search_params p = s->p;
  if (s->n_exclude) {
    p.k = s->p.k + s->p.offset + (uint32_t)s->n_exclude;
    p.offset = 0;
  }
  *hits = qv_malloc((size_t)p.k * sizeof **hits);
  if (*hits == NULL) return srv_fail(r, 500, "Service internal error: out of memory");
  qv_err err = {0};
  qv_rc rc = qv_search(sc->c, s->vec, sc->sp[s->space].dim, &p, *hits, n, &err);
  if (rc != QV_OK) {
    qv_free(*hits);
    *hits = NULL;
    return srv_rc_fail(r, rc, &err);
  }
  if (s->n_exclude) {
    size_t m = 0, skipped = 0;
    for (size_t i = 0; i < *n; i++) {
      if (excluded(s, &(*hits)[i].id)) continue;
      if (skipped < s->p.offset) {
        skipped++;
        continue;
      }
      if (m < s->p.k) (*hits)[m++] = (*hits)[i];
    }
    *n = m;
  }
  return true;
}

/* `vector` of a SearchRequest: an array (the unnamed vector) or
 * {"name", "vector"}; chooses the space and fills s->vec. */
static bool search_vector(srv_req *r, srv_coll *sc, const json_t *v, search_spec *s) {
  const char *name = "";
  if (json_is_object(v) && json_object_get(v, "name")) {
    if (!srv_field_str(r, v, "name", true, &name)) return false;
    v = json_object_get(v, "vector");
    if (json_is_object(v)) return srv_wrong_input(r, "sparse vectors are not supported yet");
  } else if (json_is_object(v)) {
    return srv_format_err(r, "vector: expected a sequence of numbers or {\"name\", \"vector\"}");
  }
  return search_spec_space(r, sc, name, s) &&
         srv_vector_parse(r, v, "vector", sc->sp[s->space].dim, s->vec);
}

/* `using` (the space of a recommend or query level), and the refusal of
 * lookup_from. */
static bool check_using(srv_req *r, const json_t *obj, const char **name) {
  *name = "";
  if (!srv_field_str(r, obj, "using", false, name)) return false;
  const json_t *lf = json_object_get(obj, "lookup_from");
  if (lf && !json_is_null(lf)) return srv_wrong_input(r, "lookup_from is not supported yet");
  return true;
}

/* One SearchRequest -> ScoredPoint[] (NULL after setting an error). */
static json_t *search_one(srv_req *r, srv_coll *sc, const json_t *req) {
  search_spec s = {0};
  json_t *out = NULL;
  qv_hit *hits = NULL;
  size_t n = 0;
  if (!json_is_object(req)) {
    srv_format_err(r, "invalid type: expected a SearchRequest object");
    return NULL;
  }
  const json_t *v = json_object_get(req, "vector");
  if (v == NULL) {
    srv_format_err(r, "missing field `vector`");
    return NULL;
  }
  if (search_spec_parse(r, req, 0, &s) && search_vector(r, sc, v, &s) &&
      search_run(r, sc, &s, &hits, &n)) {
    out = srv_hits_json(r, sc, hits, n, &s.sel, &s.vsel);
    if (out == NULL) srv_fail(r, 500, "Service internal error: reading results failed");
  }
  qv_free(hits);
  search_spec_free(&s);
  return out;
}

bool point_vector(srv_req *r, srv_coll *sc, const qv_point_id *id, int space, float *out) {
  qv_records recs = {0};
  qv_err err = {0};
  qv_rc rc = qv_get(sc->c, id, 1, true, false, &recs, &err);
  bool ok = true;
  char t[40];
  srv_id_text(id, t);
  if (rc != QV_OK) {
    ok = srv_rc_fail(r, rc, &err);
  } else if (recs.n == 0) {
    ok = srv_fail(r, 404, "Not found: No point with id %s found", t);
  } else {
    const srv_space *sp = &sc->sp[space];
    const float *v = sp->name[0] == 0 ? recs.items[0].vector : NULL;
    for (uint32_t k = 0; v == NULL && k < recs.items[0].n_named; k++)
      if (strcmp(recs.items[0].named[k].name, sp->name) == 0) v = recs.items[0].named[k].vector;
    if (v == NULL)
      ok = srv_wrong_input(r, "point %s has no vector \"%s\"", t, sp->name);
    else
      memcpy(out, v, (size_t)sp->dim * sizeof(float));
  }
  qv_records_free(&recs);
  return ok;
}

/* Sums the examples of `arr` into sum[0..dim); ids are added to s->exclude. */
static bool add_examples(srv_req *r, srv_coll *sc, const json_t *arr, const char *what,
                         float *sum, float *tmp, search_spec *s) {
  uint32_t dim = sc->sp[s->space].dim;
  for (size_t i = 0; i < json_array_size(arr); i++) {
    const json_t *e = json_array_get(arr, i);
    char w[48];
    snprintf(w, sizeof w, "%s[%zu]", what, i);
    if (srv_is_vector(r, e)) {
      if (!srv_vector_parse(r, e, w, dim, tmp)) return false;
    } else {
      qv_point_id id;
      if (!srv_id_parse(r, e, w, &id) || !point_vector(r, sc, &id, s->space, tmp)) return false;
      s->exclude[s->n_exclude++] = id;
    }
    for (uint32_t d = 0; d < dim; d++) sum[d] += tmp[d];
  }
  return true;
}

bool recommend_vector(srv_req *r, srv_coll *sc, const json_t *pos, const json_t *neg,
                      search_spec *s) {
  uint32_t dim = sc->sp[s->space].dim;
  float *out = s->vec;
  if (pos && !json_is_null(pos) && !json_is_array(pos))
    return srv_format_err(r, "positive: expected a sequence of ids or vectors");
  if (neg && !json_is_null(neg) && !json_is_array(neg))
    return srv_format_err(r, "negative: expected a sequence of ids or vectors");
  size_t np = json_array_size(pos), nn = json_array_size(neg);
  if (np == 0)
    return srv_wrong_input(r, "Positive vectors should not be empty with `average` strategy");
  qv_point_id *ex = qv_realloc(s->exclude, (s->n_exclude + np + nn + 1) * sizeof *ex);
  float *sp = qv_calloc(dim, sizeof(float)), *sn = qv_calloc(dim, sizeof(float));
  float *tmp = qv_malloc((size_t)dim * sizeof(float));
  if (ex) s->exclude = ex;
  bool ok = (ex && sp && sn && tmp) || srv_fail(r, 500, "Service internal error: out of memory");
  if (ok) ok = add_examples(r, sc, pos, "positive", sp, tmp, s);
  if (ok) ok = add_examples(r, sc, neg, "negative", sn, tmp, s);
  /* average_vector: avg(pos), or avg(pos) + (avg(pos) - avg(neg)). */
  for (uint32_t d = 0; ok && d < dim; d++) {
    float ap = sp[d] / (float)np;
    out[d] = nn ? 2.0f * ap - sn[d] / (float)nn : ap;
  }
  qv_free(sp);
  qv_free(sn);
  qv_free(tmp);
  return ok;
}

static json_t *recommend_one(srv_req *r, srv_coll *sc, const json_t *req) {
  search_spec s = {0};
  json_t *out = NULL;
  qv_hit *hits = NULL;
  size_t n = 0;
  const char *strategy = NULL, *name;
  if (!json_is_object(req)) {
    srv_format_err(r, "invalid type: expected a RecommendRequest object");
    return NULL;
  }
  bool ok = check_using(r, req, &name) && srv_field_str(r, req, "strategy", false, &strategy);
  if (ok && strategy && strcmp(strategy, "average_vector") != 0)
    ok = srv_wrong_input(r, "recommend strategy \"%.30s\" is not supported yet "
                            "(only average_vector)", strategy);
  if (ok) ok = search_spec_parse(r, req, 0, &s) && search_spec_space(r, sc, name, &s);
  if (ok)
    ok = recommend_vector(r, sc, json_object_get(req, "positive"),
                          json_object_get(req, "negative"), &s);
  if (ok && search_run(r, sc, &s, &hits, &n)) {
    out = srv_hits_json(r, sc, hits, n, &s.sel, &s.vsel);
    if (out == NULL) srv_fail(r, 500, "Service internal error: reading results failed");
  }
  qv_free(hits);
  search_spec_free(&s);
  return out;
}

void srv_run_one(srv_req *r, bool empty_ok, srv_one_fn fn) {
  json_t *body = srv_body_vecs(r, empty_ok, srv_paths_search);
  srv_coll sc = {0};
  if (body && srv_coll_open(r, &sc)) {
    json_t *res = fn(r, &sc, body);
    if (res) srv_ok(r, res);
  }
  srv_coll_close(&sc);
  json_decref(body);
}

void srv_run_batch(srv_req *r, srv_one_fn fn) {
  json_t *body = srv_body_vecs(r, false, srv_paths_search);
  srv_coll sc = {0};
  if (body == NULL || !srv_coll_open(r, &sc)) goto out;
  const json_t *arr = json_object_get(body, "searches");
  if (!json_is_array(arr)) {
    srv_format_err(r, arr ? "searches: expected a sequence" : "missing field `searches`");
    goto out;
  }
  json_t *all = json_array();
  for (size_t i = 0; i < json_array_size(arr); i++) {
    json_t *one = fn(r, &sc, json_array_get(arr, i));
    if (one == NULL) {
      json_decref(all);
      goto out;
    }
    json_array_append_new(all, one);
  }
  srv_ok(r, all);
out:
  srv_coll_close(&sc);
  json_decref(body);
}

void h_search(srv_req *r) { srv_run_one(r, false, search_one); }
void h_search_batch(srv_req *r) { srv_run_batch(r, search_one); }
void h_recommend(srv_req *r) { srv_run_one(r, false, recommend_one); }
void h_recommend_batch(srv_req *r) { srv_run_batch(r, recommend_one); }

/* ---- scroll and count ---------------------------------------------------------------- */

/* Scroll with order_by: "key" or {key, direction: asc|desc, start_from}. Points
 * carry order_value; there is no next_page_offset (page with start_from). */
static void scroll_ordered(srv_req *r, srv_coll *sc, const json_t *ob, bool has_offset,
                           const qv_filter *flt, uint32_t limit, const srv_sel *sel,
                           const srv_vsel *vs) {
  const char *key = NULL, *dir = "asc";
  const json_t *from = NULL;
  if (json_is_string(ob)) {
    key = json_string_value(ob);
  } else if (json_is_object(ob)) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)ob, k, v) {
      if (!strcmp(k, "key") && json_is_string(v)) key = json_string_value(v);
      else if (!strcmp(k, "direction") && json_is_string(v)) dir = json_string_value(v);
      else if (!strcmp(k, "start_from")) from = v;
      else {
        srv_format_err(r, "order_by: unknown or mistyped field \"%s\"", k);
        return;
      }
    }
  }
  if (key == NULL || key[0] == 0) {
    srv_format_err(r, "order_by: expected a key, or {\"key\": ..., \"direction\": \"asc\"|\"desc\", \"start_from\": ...}");
    return;
  }
  if (strcmp(dir, "asc") != 0 && strcmp(dir, "desc") != 0) {
    srv_format_err(r, "order_by.direction: expected \"asc\" or \"desc\"");
    return;
  }
  if (has_offset) {
    srv_wrong_input(r, "offset cannot be used with order_by; page with order_by.start_from");
    return;
  }
  double start = 0;
  bool has_from = from != NULL && !json_is_null(from);
  if (has_from) {
    int64_t us;
    if (json_is_number(from)) {
      start = json_number_value(from);
    } else if (json_is_string(from) && qv_datetime_parse(json_string_value(from), &us)) {
      start = (double)us;
    } else {
      srv_format_err(r, "order_by.start_from: expected a number or an RFC 3339 date-time");
      return;
    }
  }
  qv_records recs = {0};
  double *vals = NULL;
  qv_err err = {0};
  qv_rc rc = qv_scroll_ordered(sc->c, flt, key, dir[0] == 'd', has_from ? &start : NULL, limit,
                               vs->any, sel->mode != SEL_NONE, &recs, &vals, &err);
  if (rc != QV_OK) {
    srv_rc_fail(r, rc, &err);
    return;
  }
  json_t *pts = json_array();
  for (size_t i = 0; i < recs.n; i++) {
    json_t *p = srv_record_json(sc, &recs.items[i], sel, vs);
    double v = vals[i];
    json_object_set_new(p, "order_value",
                        v == (double)(json_int_t)v ? json_integer((json_int_t)v) : json_real(v));
    json_array_append_new(pts, p);
  }
  free(vals);
  qv_records_free(&recs);
  srv_ok(r, json_pack("{s:o, s:n}", "points", pts, "next_page_offset"));
}

void h_scroll(srv_req *r) {
  json_t *body = srv_body(r, true);
  srv_coll sc = {0};
  qv_filter *flt = NULL;
  qv_records recs = {0};
  srv_sel sel;
  srv_vsel vs;
  bool has_start = false;
  qv_point_id start, next;
  uint32_t limit = 10;
  if (body == NULL || !srv_coll_open(r, &sc)) goto out;
  const json_t *off = json_object_get(body, "offset");
  if (off && !json_is_null(off)) {
    if (!srv_id_parse(r, off, "offset", &start)) goto out;
    has_start = true;
  }
  const json_t *ob = json_object_get(body, "order_by");
  if (!parse_limit(r, body, 10, &limit) || !srv_sel_parse(r, body, true, &sel) ||
      !srv_with_vector(r, body, false, &vs) ||
      !srv_filter_parse(r, body, "filter", &flt))
    goto out;
  if (ob && !json_is_null(ob)) {
    scroll_ordered(r, &sc, ob, has_start, flt, limit, &sel, &vs);
    goto out;
  }
  bool has_next = false;
  qv_err err = {0};
  qv_rc rc = qv_scroll_filtered(sc.c, flt, has_start ? &start : NULL, limit, vs.any,
                                sel.mode != SEL_NONE, &recs, &next, &has_next, &err);
  if (rc != QV_OK) {
    srv_rc_fail(r, rc, &err);
    goto out;
  }
  json_t *pts = json_array();
  for (size_t i = 0; i < recs.n; i++)
    json_array_append_new(pts, srv_record_json(&sc, &recs.items[i], &sel, &vs));
  srv_ok(r, json_pack("{s:o, s:o}", "points", pts, "next_page_offset",
                      has_next ? srv_id_json(&next) : json_null()));
out:
  qv_records_free(&recs);
  qv_filter_free(flt);
  srv_coll_close(&sc);
  json_decref(body);
}

void h_count(srv_req *r) {
  json_t *body = srv_body(r, true);
  srv_coll sc = {0};
  qv_filter *flt = NULL;
  bool exact = true;
  if (body == NULL || !srv_coll_open(r, &sc)) goto out;
  if (!srv_field_bool(r, body, "exact", &exact) || !srv_filter_parse(r, body, "filter", &flt))
    goto out;
  uint64_t n = 0;
  qv_err err = {0};
  qv_rc rc = flt ? qv_count_filtered(sc.c, flt, &n, &err) : qv_count(sc.c, &n, &err);
  if (rc != QV_OK) {
    srv_rc_fail(r, rc, &err);
    goto out;
  }
  srv_ok(r, json_pack("{s:o}", "count", jsonio_u64(n)));
out:
  qv_filter_free(flt);
  srv_coll_close(&sc);
  json_decref(body);
}
