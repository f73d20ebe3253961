/* json_vectors.c: vectors on the wire — the vector spaces of a collection
 * (unnamed and named), dense vectors in requests (JSON arrays or the
 * placeholders of the fast body pass, json_scan.c), a point's VectorStruct
 * (an array, or {"name": [...]}), with_vector selectors, and vectors in
 * responses (Record, ScoredPoint).
 *
 * Qdrant's rules kept here: the unnamed vector is the named vector "";
 * a name the collection lacks is 400 "Wrong input: Not existing vector
 * name error: <name>"; a point's vectors are written back as a plain array
 * when what is returned is only the unnamed vector, else as a map.
 * Invariant: a float that reaches the engine is finite as float32 and was
 * rounded once from the request's decimal (json_scan.c) — or, for arrays
 * the fast pass left to jansson, from its double. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "server/server_int.h"

int srv_space_find(const srv_coll *sc, const char *name) {
  if (name == NULL) name = "";
  for (uint32_t i = 0; i < sc->n_sp; i++)
    if (strcmp(sc->sp[i].name, name) == 0) return (int)i;
  return -1;
}

bool srv_space_get(srv_req *r, const srv_coll *sc, const char *name, int *out) {
  *out = srv_space_find(sc, name);
  if (*out >= 0) return true;
  return srv_wrong_input(r, "Not existing vector name error: %.80s", name ? name : "");
}

bool srv_is_vector(srv_req *r, const json_t *v) {
  uint32_t n;
  if (jsonio_vec(&r->vecs, v, &n) != NULL) return true;
  return json_is_array(v) && (json_array_size(v) == 0 || !json_is_array(json_array_get(v, 0)));
}

bool srv_vector_parse(srv_req *r, const json_t *v, const char *what, uint32_t dim,
                      float *out) {
  if (v == NULL || json_is_null(v)) return srv_format_err(r, "%s: missing vector", what);
  uint32_t n_fast;
  const float *fast = jsonio_vec(&r->vecs, v, &n_fast);
  if (fast != NULL) {
    if (n_fast != dim)
      return srv_wrong_input(r, "Vector dimension error: expected dim: %u, got %u", dim, n_fast);
    memcpy(out, fast, (size_t)dim * sizeof(float));
    return true;
  }
  if (!json_is_array(v))
    return srv_format_err(r, "%s: invalid type: %s, expected a sequence of numbers", what,
                          srv_type_name(v));
  size_t n = json_array_size(v);
  for (size_t i = 0; i < n; i++) {
    double d;
    const json_t *x = json_array_get(v, i);
    if (json_is_array(x))
      return srv_wrong_input(r, "%s: multivectors are not supported", what);
    if (!jsonio_get_f64(x, &d))
      return srv_format_err(r, "%s[%zu]: invalid type: %s, expected a number", what, i,
                            srv_type_name(x));
    /* Out of range means "rounds to infinity", so FLT_MAX written as
     * 3.4028235e38 (a little above it) is accepted, as by strtof. */
    if (!isfinite(d) || isinf((float)d))
      return srv_format_err(r, "%s[%zu]: %g is out of range for a 32-bit float", what, i, d);
    if (i < dim) out[i] = (float)d;
  }
  if (n != dim)
    return srv_wrong_input(r, "Vector dimension error: expected dim: %u, got %zu", dim, n);
  return true;
}

/* One named entry of a VectorStruct into its space of the row. */
static bool named_entry(srv_req *r, const srv_coll *sc, const char *name, const json_t *v,
                        const char *what, float *row, uint32_t *mask) {
  int s;
  char w[128];
  snprintf(w, sizeof w, "%.48s.%.64s", what, name);
  if (!srv_space_get(r, sc, name, &s)) return false;
  if (json_is_object(v) && (json_object_get(v, "indices") || json_object_get(v, "values")))
    return srv_wrong_input(r, "%s: sparse vectors are not supported yet", w);
  if (json_is_array(v) && json_array_size(v) > 0 && json_is_array(json_array_get(v, 0)))
    return srv_wrong_input(r, "%s: multivectors are not supported", w);
  if (!srv_vector_parse(r, v, w, sc->sp[s].dim, row + sc->sp[s].offset)) return false;
  *mask |= 1u << s;
  return true;
}

bool srv_point_vectors(srv_req *r, const srv_coll *sc, const json_t *v, const char *what,
                       float *row, uint32_t *mask) {
  *mask = 0;
  if (v == NULL || json_is_null(v)) return srv_format_err(r, "%s: missing vector", what);
  if (json_is_object(v)) {
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
      if (!named_entry(r, sc, key, val, what, row, mask)) return false;
    }
    return true;
  }
  uint32_t n;
  if (!json_is_array(v) && jsonio_vec(&r->vecs, v, &n) == NULL)
    return srv_format_err(r, "%s: invalid type: %s, expected a sequence of numbers or a map "
                             "of named vectors",
                          what, srv_type_name(v));
  return named_entry(r, sc, "", v, what, row, mask);
}

void srv_point_set_vectors(const srv_coll *sc, qv_point *p, const float *row, uint32_t mask,
                           qv_named_vector *nv) {
  p->vector = NULL;
  p->dim = 0;
  p->named = nv;
  p->n_named = 0;
  for (uint32_t s = 0; s < sc->n_sp; s++) {
    if (!(mask & (1u << s))) continue;
    const srv_space *sp = &sc->sp[s];
    if (sp->name[0] == 0) {
      p->vector = row + sp->offset;
      p->dim = sp->dim;
    } else {
      nv[p->n_named++] = (qv_named_vector){sp->name, row + sp->offset, sp->dim};
    }
  }
}

void srv_record_to_row(const srv_coll *sc, const qv_record *rec, float *row, uint32_t *mask) {
  *mask = 0;
  int s = srv_space_find(sc, "");
  if (s >= 0 && rec->vector != NULL) {
    memcpy(row + sc->sp[s].offset, rec->vector, (size_t)sc->sp[s].dim * sizeof(float));
    *mask |= 1u << s;
  }
  for (uint32_t k = 0; k < rec->n_named; k++) {
    s = srv_space_find(sc, rec->named[k].name);
    if (s < 0 || rec->named[k].dim != sc->sp[s].dim) continue;
    memcpy(row + sc->sp[s].offset, rec->named[k].vector, (size_t)sc->sp[s].dim * sizeof(float));
    *mask |= 1u << s;
  }
}

/* ---- with_vector and output ---------------------------------------------------- */

bool srv_with_vector(srv_req *r, const json_t *obj, bool dflt, srv_vsel *out) {
  const json_t *v = json_object_get(obj, "with_vector");
  if (v == NULL || json_is_null(v)) v = json_object_get(obj, "with_vectors");
  if (json_is_null(v)) v = NULL;
  out->any = dflt;
  out->names = NULL;
  if (v == NULL) return true;
  if (json_is_boolean(v)) {
    out->any = json_is_true(v);
    return true;
  }
  if (srv_is_string_list(v)) {
    out->any = json_array_size(v) > 0;
    out->names = v;
    return true;
  }
  return srv_format_err(r, "with_vector: expected true, false or a list of vector names");
}

static bool selected(const srv_vsel *vs, const char *name) {
  if (!vs->any) return false;
  if (vs->names == NULL) return true;
  for (size_t i = 0; i < json_array_size(vs->names); i++)
    if (strcmp(json_string_value(json_array_get(vs->names, i)), name) == 0) return true;
  return false;
}

static json_t *vector_json(const float *v, uint32_t dim) {
  json_t *a = json_array();
  for (uint32_t i = 0; a && i < dim; i++)
    if (json_array_append_new(a, jsonio_f32(v[i])) != 0) {
      json_decref(a);
      return NULL;
    }
  return a;
}

json_t *srv_vectors_json(const srv_coll *sc, const qv_record *rec, const srv_vsel *vs) {
  if (!vs->any) return NULL;
  int un = srv_space_find(sc, "");
  bool with_unnamed = un >= 0 && rec->vector != NULL && selected(vs, "");
  size_t n_named = 0;
  for (uint32_t k = 0; k < rec->n_named; k++) n_named += selected(vs, rec->named[k].name);
  if (with_unnamed && n_named == 0) return vector_json(rec->vector, sc->sp[un].dim);
  /* A collection of the unnamed vector alone answers a selection of
   * unknown names with no `vector` at all; one with named vectors with a
   * map, possibly empty. */
  if (!with_unnamed && n_named == 0 && sc->n_sp == 1 && un == 0) return NULL;
  json_t *o = json_object();
  if (o && with_unnamed) json_object_set_new(o, "", vector_json(rec->vector, sc->sp[un].dim));
  for (uint32_t k = 0; o && k < rec->n_named; k++)
    if (selected(vs, rec->named[k].name))
      json_object_set_new(o, rec->named[k].name,
                          vector_json(rec->named[k].vector, rec->named[k].dim));
  return o;
}

json_t *srv_record_json(const srv_coll *sc, const qv_record *rec, const srv_sel *sel,
                        const srv_vsel *vs) {
  json_t *o = json_object();
  if (o == NULL) return NULL;
  json_object_set_new(o, "id", srv_id_json(&rec->id));
  json_t *p = srv_payload_json(sel, rec->payload, rec->payload_len);
  if (p) json_object_set_new(o, "payload", p);
  json_t *v = srv_vectors_json(sc, rec, vs);
  if (v) json_object_set_new(o, "vector", v);
  return o;
}

json_t *srv_hits_json(srv_req *r, srv_coll *sc, const qv_hit *hits, size_t n,
                      const srv_sel *sel, const srv_vsel *vs) {
  json_t *arr = json_array();
  if (arr == NULL) return NULL;
  qv_records recs = {0};
  bool fetch = (sel->mode != SEL_NONE || vs->any) && n > 0;
  if (fetch) {
    qv_point_id *ids = qv_malloc(n * sizeof *ids);
    if (ids == NULL) {
      json_decref(arr);
      return NULL;
    }
    for (size_t i = 0; i < n; i++) ids[i] = hits[i].id;
    qv_rc rc = qv_get(sc->c, ids, n, vs->any, sel->mode != SEL_NONE, &recs, NULL);
    qv_free(ids);
    if (rc != QV_OK) {
      json_decref(arr);
      return NULL;
    }
  }
  size_t j = 0;
  for (size_t i = 0; i < n; i++) {
    const qv_record *rec = NULL;
    if (fetch) {
      /* qv_get skips ids deleted since the search; so do we. */
      if (j >= recs.n || qv_id_cmp(&recs.items[j].id, &hits[i].id) != 0) continue;
      rec = &recs.items[j++];
    }
    json_t *o = json_object();
    if (o == NULL) break;
    json_object_set_new(o, "id", srv_id_json(&hits[i].id));
    json_object_set_new(o, "version", json_integer(0));
    json_object_set_new(o, "score", jsonio_f32(hits[i].score));
    if (rec) {
      json_t *p = srv_payload_json(sel, rec->payload, rec->payload_len);
      if (p) json_object_set_new(o, "payload", p);
      json_t *v = srv_vectors_json(sc, rec, vs);
      if (v) json_object_set_new(o, "vector", v);
    }
    json_array_append_new(arr, o);
  }
  qv_records_free(&recs);
  (void)r;
  return arr;
}
