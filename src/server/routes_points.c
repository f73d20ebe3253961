/* routes_points.c: point writes (upsert, delete, payload set / overwrite /
 * delete keys / clear, vector updates and deletes, batch) and reads by id
 * (retrieve, GET one point).
 *
 * Each write is parsed and validated whole before the engine is called, and
 * the engine makes it durable before returning, so the UpdateResult is sent
 * only for a write that survives kill -9 — with wait=false too (Qdrant
 * would answer before applying; answering later is compatible).
 * A batch (POST .../points/batch) applies its operations in order and stops
 * at the first failure; the ones before it stay applied (as in Qdrant, a
 * batch is not a transaction). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "server/server_int.h"

/* ---- upsert ----------------------------------------------------------------------- */

/* Points being written: each has a row of sc->row_floats floats (every
 * space of the collection; `mask` says which the point carries) and n_sp
 * qv_named_vector slots. */
typedef struct upsert_buf {
  qv_point *pts;
  float *rows;
  uint32_t *masks;
  qv_named_vector *nv;
  char **payloads;
  size_t n, row_floats, n_sp;
} upsert_buf;

static void upsert_buf_free(upsert_buf *u) {
  for (size_t i = 0; u->payloads && i < u->n; i++) qv_free(u->payloads[i]);
  qv_free(u->payloads);
  qv_free(u->pts);
  qv_free(u->rows);
  qv_free(u->masks);
  qv_free(u->nv);
  memset(u, 0, sizeof *u);
}

static bool upsert_buf_init(srv_req *r, const srv_coll *sc, upsert_buf *u, size_t n) {
  memset(u, 0, sizeof *u);
  u->row_floats = sc->row_floats;
  u->n_sp = sc->n_sp;
  u->pts = qv_calloc(n + 1, sizeof *u->pts);
  u->rows = qv_malloc((n * u->row_floats + 1) * sizeof(float));
  u->masks = qv_calloc(n + 1, sizeof *u->masks);
  u->nv = qv_calloc(n * u->n_sp + 1, sizeof *u->nv);
  u->payloads = qv_calloc(n + 1, sizeof *u->payloads);
  u->n = n;
  if (u->pts && u->rows && u->masks && u->nv && u->payloads) return true;
  upsert_buf_free(u);
  return srv_fail(r, 500, "Service internal error: out of memory");
}

static float *row_of(upsert_buf *u, size_t i) { return u->rows + i * u->row_floats; }

/* Points the qv_point of point i at its row. */
static void set_vectors(const srv_coll *sc, upsert_buf *u, size_t i) {
  srv_point_set_vectors(sc, &u->pts[i], row_of(u, i), u->masks[i], u->nv + i * u->n_sp);
}

/* Point i's payload: absent or null is {}, an object is serialised, any
 * other value is refused. */
static bool set_payload(srv_req *r, upsert_buf *u, size_t i, const json_t *p, const char *what) {
  if (p == NULL || json_is_null(p)) return true;
  if (!json_is_object(p))
    return srv_format_err(r, "%s: invalid type: expected a map (JSON object)", what);
  size_t len;
  u->payloads[i] = jsonio_dumps(p, &len);
  if (u->payloads[i] == NULL) return srv_fail(r, 500, "Service internal error: out of memory");
  u->pts[i].payload = u->payloads[i];
  u->pts[i].payload_len = len;
  return true;
}

static bool parse_points_list(srv_req *r, srv_coll *sc, const json_t *arr, upsert_buf *u) {
  if (!json_is_array(arr)) return srv_format_err(r, "points: invalid type: expected a sequence");
  if (!upsert_buf_init(r, sc, u, json_array_size(arr))) return false;
  for (size_t i = 0; i < u->n; i++) {
    const json_t *p = json_array_get(arr, i);
    char what[64];
    if (!json_is_object(p))
      return srv_format_err(r, "points[%zu]: invalid type: expected a map", i);
    const json_t *id = json_object_get(p, "id"), *vec = json_object_get(p, "vector");
    if (id == NULL) return srv_format_err(r, "points[%zu]: missing field `id`", i);
    if (vec == NULL) vec = json_object_get(p, "vectors");
    if (vec == NULL) return srv_format_err(r, "points[%zu]: missing field `vector`", i);
    snprintf(what, sizeof what, "points[%zu].id", i);
    if (!srv_id_parse(r, id, what, &u->pts[i].id)) return false;
    snprintf(what, sizeof what, "points[%zu].vector", i);
    if (!srv_point_vectors(r, sc, vec, what, row_of(u, i), &u->masks[i])) return false;
    set_vectors(sc, u, i);
    snprintf(what, sizeof what, "points[%zu].payload", i);
    if (!set_payload(r, u, i, json_object_get(p, "payload"), what)) return false;
  }
  return true;
}

/* batch.vectors: a list of unnamed vectors, or {"name": [vectors]} with
 * one list per named vector, each as long as `ids`. */
static bool parse_batch_vectors(srv_req *r, srv_coll *sc, const json_t *vecs, upsert_buf *u) {
  char what[96];
  if (json_is_array(vecs)) {
    if (json_array_size(vecs) != u->n)
      return srv_wrong_input(r, "batch: %zu ids but %zu vectors", u->n, json_array_size(vecs));
    for (size_t i = 0; i < u->n; i++) {
      snprintf(what, sizeof what, "batch.vectors[%zu]", i);
      if (!srv_point_vectors(r, sc, json_array_get(vecs, i), what, row_of(u, i), &u->masks[i]))
        return false;
    }
    return true;
  }
  if (!json_is_object(vecs))
    return srv_format_err(r, "batch.vectors: expected a sequence or a map");
  const char *name;
  json_t *list;
  json_object_foreach((json_t *)vecs, name, list) {
    int s;
    if (!srv_space_get(r, sc, name, &s)) return false;
    if (!json_is_array(list) || json_array_size(list) != u->n)
      return srv_wrong_input(r, "batch.vectors.%.64s: expected a sequence of %zu vectors", name,
                             u->n);
    for (size_t i = 0; i < u->n; i++) {
      snprintf(what, sizeof what, "batch.vectors.%.40s[%zu]", name, i);
      if (!srv_vector_parse(r, json_array_get(list, i), what, sc->sp[s].dim,
                            row_of(u, i) + sc->sp[s].offset))
        return false;
      u->masks[i] |= 1u << s;
    }
  }
  return true;
}

static bool parse_batch(srv_req *r, srv_coll *sc, const json_t *b, upsert_buf *u) {
  if (!json_is_object(b)) return srv_format_err(r, "batch: invalid type: expected a map");
  const json_t *ids = json_object_get(b, "ids"), *vecs = json_object_get(b, "vectors");
  const json_t *pls = json_object_get(b, "payloads");
  if (!json_is_array(ids)) return srv_format_err(r, "batch.ids: expected a sequence");
  if (vecs == NULL) return srv_format_err(r, "batch: missing field `vectors`");
  size_t n = json_array_size(ids);
  if (pls != NULL && !json_is_null(pls) &&
      (!json_is_array(pls) || json_array_size(pls) != n))
    return srv_wrong_input(r, "batch.payloads: expected a sequence of %zu payloads", n);
  if (!upsert_buf_init(r, sc, u, n) || !parse_batch_vectors(r, sc, vecs, u)) return false;
  for (size_t i = 0; i < n; i++) {
    char what[64];
    snprintf(what, sizeof what, "batch.ids[%zu]", i);
    if (!srv_id_parse(r, json_array_get(ids, i), what, &u->pts[i].id)) return false;
    set_vectors(sc, u, i);
    snprintf(what, sizeof what, "batch.payloads[%zu]", i);
    if (json_is_array(pls) && !set_payload(r, u, i, json_array_get(pls, i), what)) return false;
  }
  return true;
}

bool op_upsert(srv_req *r, srv_coll *sc, const json_t *body) {
  const char *mode = NULL;
  if (!srv_field_str(r, body, "update_mode", false, &mode)) return false;
  if (mode && strcmp(mode, "upsert") != 0)
    return srv_wrong_input(r, "update_mode \"%.20s\" is not supported yet (only upsert)", mode);
  const json_t *uf = json_object_get(body, "update_filter");
  if (uf && !json_is_null(uf)) return srv_wrong_input(r, "update_filter is not supported yet");
  const json_t *pts = json_object_get(body, "points"), *batch = json_object_get(body, "batch");
  upsert_buf u = {0};
  bool ok;
  if (pts && !json_is_null(pts))
    ok = parse_points_list(r, sc, pts, &u);
  else if (batch && !json_is_null(batch))
    ok = parse_batch(r, sc, batch, &u);
  else
    ok = srv_format_err(r, "expected `points` (a list) or `batch`");
  if (ok && u.n > 0) {
    qv_err err = {0};
    qv_rc rc = qv_upsert(sc->c, u.pts, u.n, &err);
    if (rc != QV_OK) ok = srv_rc_fail(r, rc, &err);
  }
  upsert_buf_free(&u);
  return ok;
}

/* ---- selectors of points: a list of ids or a filter ----------------------------- */

typedef struct point_sel {
  qv_point_id *ids; /* NULL: use filter */
  size_t n;
  qv_filter *filter;
} point_sel;

static void point_sel_free(point_sel *p) {
  qv_free(p->ids);
  qv_filter_free(p->filter);
  memset(p, 0, sizeof *p);
}

static bool point_sel_parse(srv_req *r, const json_t *body, point_sel *out) {
  memset(out, 0, sizeof *out);
  const json_t *pts = json_object_get(body, "points");
  const json_t *flt = json_object_get(body, "filter");
  bool has_pts = pts && !json_is_null(pts), has_flt = flt && !json_is_null(flt);
  if (has_pts && has_flt)
    return srv_wrong_input(r, "give either `points` or `filter`, not both");
  if (has_pts) return srv_ids_parse(r, pts, "points", &out->ids, &out->n);
  if (has_flt) return srv_filter_parse(r, body, "filter", &out->filter);
  return srv_format_err(r, "expected `points` (a list of ids) or `filter`");
}

bool op_delete(srv_req *r, srv_coll *sc, const json_t *body) {
  point_sel ps;
  if (!point_sel_parse(r, body, &ps)) return false;
  qv_err err = {0};
  qv_rc rc = ps.ids ? qv_delete(sc->c, ps.ids, ps.n, NULL, &err)
                    : qv_delete_filtered(sc->c, ps.filter, NULL, &err);
  point_sel_free(&ps);
  return rc == QV_OK ? true : srv_rc_fail(r, rc, &err);
}

bool op_payload(srv_req *r, srv_coll *sc, const json_t *body, int kind) {
  point_sel ps;
  if (!point_sel_parse(r, body, &ps)) return false;
  char *payload = NULL;
  const char **keys = NULL;
  size_t n_keys = 0;
  const char *key = NULL;
  bool ok = true;
  if (kind == PAYLOAD_SET || kind == PAYLOAD_OVERWRITE) {
    const json_t *p = json_object_get(body, "payload");
    if (!json_is_object(p))
      ok = srv_format_err(r, p ? "payload: invalid type: expected a map" : "missing field `payload`");
    else if ((payload = jsonio_dumps(p, NULL)) == NULL)
      ok = srv_fail(r, 500, "Service internal error: out of memory");
    if (ok && kind == PAYLOAD_SET) ok = srv_field_str(r, body, "key", false, &key);
  } else if (kind == PAYLOAD_DELETE) {
    const json_t *k = json_object_get(body, "keys");
    if (!json_is_array(k)) ok = srv_format_err(r, k ? "keys: expected a sequence of strings"
                                                    : "missing field `keys`");
    n_keys = ok ? json_array_size(k) : 0;
    keys = qv_calloc(n_keys + 1, sizeof *keys);
    if (ok && keys == NULL) ok = srv_fail(r, 500, "Service internal error: out of memory");
    for (size_t i = 0; ok && i < n_keys; i++) {
      keys[i] = json_string_value(json_array_get(k, i));
      if (keys[i] == NULL || jsonio_raw_text(json_array_get(k, i)))
        ok = srv_format_err(r, "keys[%zu]: expected a string", i);
    }
  }
  /* An empty id list selects nothing; the engine wants n > 0 with ids. */
  if (ok && !(ps.ids && ps.n == 0)) {
    qv_err err = {0};
    qv_rc rc = QV_OK;
    const qv_point_id *ids = ps.ids;
    switch (kind) {
    case PAYLOAD_SET: rc = qv_payload_set(sc->c, ids, ps.n, ps.filter, payload, key, &err); break;
    case PAYLOAD_OVERWRITE:
      rc = qv_payload_overwrite(sc->c, ids, ps.n, ps.filter, payload, &err);
      break;
    case PAYLOAD_DELETE:
      rc = qv_payload_delete_keys(sc->c, ids, ps.n, ps.filter, keys, n_keys, &err);
      break;
    default: rc = qv_payload_clear(sc->c, ids, ps.n, ps.filter, &err); break;
    }
    if (rc != QV_OK) ok = srv_rc_fail(r, rc, &err);
  }
  qv_free(payload);
  qv_free(keys);
  point_sel_free(&ps);
  return ok;
}

/* Reads the points `ids` (u->n of them) with every vector and their
 * payloads into u (rows, masks, payloads). A missing point is 404, or with
 * skip_missing left out: u->n then counts the points found. */
static bool read_points(srv_req *r, srv_coll *sc, const qv_point_id *ids, upsert_buf *u,
                        bool skip_missing) {
  qv_records recs = {0};
  qv_err err = {0};
  qv_rc rc = qv_get(sc->c, ids, u->n, true, true, &recs, &err);
  if (rc != QV_OK) return srv_rc_fail(r, rc, &err);
  bool ok = true;
  size_t j = 0, k = 0;
  for (size_t i = 0; ok && i < u->n; i++) {
    if (j >= recs.n || qv_id_cmp(&recs.items[j].id, &ids[i]) != 0) {
      if (skip_missing) continue;
      char t[40];
      srv_id_text(&ids[i], t);
      ok = srv_fail(r, 404, "Not found: No point with id %s found", t);
      break;
    }
    const qv_record *rec = &recs.items[j++];
    const char *pl = rec->payload ? rec->payload : "{}";
    size_t pl_len = rec->payload ? rec->payload_len : 2;
    u->pts[k].id = ids[i];
    srv_record_to_row(sc, rec, row_of(u, k), &u->masks[k]);
    u->payloads[k] = qv_strndup(pl, pl_len);
    if (u->payloads[k] == NULL) ok = srv_fail(r, 500, "Service internal error: out of memory");
    u->pts[k].payload = u->payloads[k];
    u->pts[k].payload_len = pl_len;
    k++;
  }
  if (ok) u->n = k;
  qv_records_free(&recs);
  return ok;
}

/* Writes the rows of u back (vectors as in masks, payloads kept). */
static bool write_points(srv_req *r, srv_coll *sc, upsert_buf *u) {
  for (size_t i = 0; i < u->n; i++) set_vectors(sc, u, i);
  qv_err err = {0};
  qv_rc rc = u->n ? qv_upsert(sc->c, u->pts, u->n, &err) : QV_OK;
  return rc == QV_OK ? true : srv_rc_fail(r, rc, &err);
}

/* PUT .../points/vectors: each point gets the vectors given, keeps the
 * others and its payload. Read-then-upsert: a payload update racing with
 * it on the same point may be lost (the engine has no per-point
 * compare-and-set yet). Cosine vectors that are kept are normalised again,
 * which may move their last bit. */
bool op_vectors(srv_req *r, srv_coll *sc, const json_t *body) {
  const json_t *pts = json_object_get(body, "points");
  if (!json_is_array(pts)) return srv_format_err(r, "points: expected a sequence");
  size_t n = json_array_size(pts);
  upsert_buf u, given;
  if (!upsert_buf_init(r, sc, &u, n)) return false;
  if (!upsert_buf_init(r, sc, &given, n)) {
    upsert_buf_free(&u);
    return false;
  }
  qv_point_id *ids = qv_malloc((n + 1) * sizeof *ids);
  bool ok = ids != NULL || srv_fail(r, 500, "Service internal error: out of memory");
  for (size_t i = 0; ok && i < n; i++) {
    const json_t *p = json_array_get(pts, i);
    char what[64];
    snprintf(what, sizeof what, "points[%zu].id", i);
    if (!json_is_object(p)) ok = srv_format_err(r, "points[%zu]: expected a map", i);
    if (ok) ok = srv_id_parse(r, json_object_get(p, "id"), what, &ids[i]);
    snprintf(what, sizeof what, "points[%zu].vector", i);
    const json_t *v = ok ? json_object_get(p, "vector") : NULL;
    if (ok && v == NULL) v = json_object_get(p, "vectors");
    if (ok) ok = srv_point_vectors(r, sc, v, what, row_of(&given, i), &given.masks[i]);
  }
  if (ok) ok = read_points(r, sc, ids, &u, false);
  for (size_t i = 0; ok && i < n; i++)
    for (uint32_t s = 0; s < sc->n_sp; s++) {
      if (!(given.masks[i] & (1u << s))) continue;
      memcpy(row_of(&u, i) + sc->sp[s].offset, row_of(&given, i) + sc->sp[s].offset,
             (size_t)sc->sp[s].dim * sizeof(float));
      u.masks[i] |= 1u << s;
    }
  if (ok) ok = write_points(r, sc, &u);
  qv_free(ids);
  upsert_buf_free(&given);
  upsert_buf_free(&u);
  return ok;
}

/* Clears the spaces named in `names` (a JSON list) from mask bits. */
static bool names_mask(srv_req *r, srv_coll *sc, const json_t *names, uint32_t *drop) {
  *drop = 0;
  if (!srv_is_string_list(names))
    return srv_format_err(r, names ? "vector: expected a sequence of vector names"
                                   : "missing field `vector`");
  for (size_t i = 0; i < json_array_size(names); i++) {
    int s;
    if (!srv_space_get(r, sc, json_string_value(json_array_get(names, i)), &s)) return false;
    *drop |= 1u << s;
  }
  return true;
}

/* Removes the named vectors from the points `ids` (n of them); points
 * that do not exist (or no longer) are ignored, as by every other write. */
static bool drop_vectors(srv_req *r, srv_coll *sc, const qv_point_id *ids, size_t n,
                         uint32_t drop) {
  upsert_buf u;
  if (n == 0) return true;
  if (!upsert_buf_init(r, sc, &u, n)) return false;
  bool ok = read_points(r, sc, ids, &u, true);
  for (size_t i = 0; ok && i < u.n; i++) u.masks[i] &= ~drop;
  if (ok) ok = write_points(r, sc, &u);
  upsert_buf_free(&u);
  return ok;
}

/* POST .../points/vectors/delete: {points | filter, vector: [names]}.
 * Read-then-upsert like op_vectors. The engine keeps at least one vector
 * per point and always the unnamed one when the collection has it, so
 * deleting those is refused by its checks (400). */
bool op_delete_vectors(srv_req *r, srv_coll *sc, const json_t *body) {
  uint32_t drop;
  if (!names_mask(r, sc, json_object_get(body, "vector"), &drop)) return false;
  const json_t *pts = json_object_get(body, "points");
  const json_t *flt = json_object_get(body, "filter");
  bool has_pts = pts && !json_is_null(pts), has_flt = flt && !json_is_null(flt);
  if (has_pts == has_flt)
    return srv_wrong_input(r, "give either `points` or `filter`");
  if (has_pts) {
    qv_point_id *ids;
    size_t n;
    if (!srv_ids_parse(r, pts, "points", &ids, &n)) return false;
    bool ok = drop_vectors(r, sc, ids, n, drop);
    qv_free(ids);
    return ok;
  }
  qv_filter *f = NULL;
  if (!srv_filter_parse(r, body, "filter", &f)) return false;
  /* Page through the matches by id; each page is rewritten before the
   * next is read, so memory stays bounded. */
  bool ok = true, has_next = true, first = true;
  qv_point_id start, next;
  while (ok && has_next) {
    qv_records recs = {0};
    qv_err err = {0};
    qv_rc rc = qv_scroll_filtered(sc->c, f, first ? NULL : &start, 256, false, false, &recs,
                                  &next, &has_next, &err);
    first = false;
    if (rc != QV_OK) {
      ok = srv_rc_fail(r, rc, &err);
      break;
    }
    qv_point_id *ids = qv_malloc((recs.n + 1) * sizeof *ids);
    ok = ids != NULL || srv_fail(r, 500, "Service internal error: out of memory");
    for (size_t i = 0; ok && i < recs.n; i++) ids[i] = recs.items[i].id;
    if (ok) ok = drop_vectors(r, sc, ids, recs.n, drop);
    qv_free(ids);
    qv_records_free(&recs);
    if (has_next) start = next;
  }
  qv_filter_free(f);
  return ok;
}

/* ---- endpoints ------------------------------------------------------------------------ */

/* The common shape of a write endpoint. */
static void write_endpoint(srv_req *r, int op, int kind) {
  json_t *body = srv_body_vecs(r, false, op == 0 || op == 3 ? srv_paths_upsert : NULL);
  srv_coll sc = {0};
  bool ok = body != NULL && srv_check_wait(r) && srv_coll_open(r, &sc);
  if (ok) {
    switch (op) {
    case 0: ok = op_upsert(r, &sc, body); break;
    case 1: ok = op_delete(r, &sc, body); break;
    case 2: ok = op_payload(r, &sc, body, kind); break;
    case 3: ok = op_vectors(r, &sc, body); break;
    default: ok = op_delete_vectors(r, &sc, body); break;
    }
  }
  if (ok) srv_update_ok(r);
  srv_coll_close(&sc);
  json_decref(body);
}

void h_upsert(srv_req *r) { write_endpoint(r, 0, 0); }
void h_delete(srv_req *r) { write_endpoint(r, 1, 0); }
void h_payload_set(srv_req *r) { write_endpoint(r, 2, PAYLOAD_SET); }
void h_payload_overwrite(srv_req *r) { write_endpoint(r, 2, PAYLOAD_OVERWRITE); }
void h_payload_delete(srv_req *r) { write_endpoint(r, 2, PAYLOAD_DELETE); }
void h_payload_clear(srv_req *r) { write_endpoint(r, 2, PAYLOAD_CLEAR); }
void h_vectors_update(srv_req *r) { write_endpoint(r, 3, 0); }
void h_vectors_delete(srv_req *r) { write_endpoint(r, 4, 0); }

static bool batch_one(srv_req *r, srv_coll *sc, const json_t *op, size_t i) {
  const char *name;
  json_t *arg;
  if (!json_is_object(op) || json_object_size(op) != 1)
    return srv_format_err(r, "operations[%zu]: expected an object with one operation", i);
  json_object_foreach((json_t *)op, name, arg) {
    if (!json_is_object(arg))
      return srv_format_err(r, "operations[%zu].%s: expected a map", i, name);
    if (!strcmp(name, "upsert")) return op_upsert(r, sc, arg);
    if (!strcmp(name, "delete")) return op_delete(r, sc, arg);
    if (!strcmp(name, "set_payload")) return op_payload(r, sc, arg, PAYLOAD_SET);
    if (!strcmp(name, "overwrite_payload")) return op_payload(r, sc, arg, PAYLOAD_OVERWRITE);
    if (!strcmp(name, "delete_payload")) return op_payload(r, sc, arg, PAYLOAD_DELETE);
    if (!strcmp(name, "clear_payload")) return op_payload(r, sc, arg, PAYLOAD_CLEAR);
    if (!strcmp(name, "update_vectors")) return op_vectors(r, sc, arg);
    if (!strcmp(name, "delete_vectors")) return op_delete_vectors(r, sc, arg);
    return srv_format_err(r, "operations[%zu]: unknown variant `%.40s`", i, name);
  }
  return true;
}

void h_batch(srv_req *r) {
  json_t *body = srv_body_vecs(r, false, srv_paths_upsert);
  srv_coll sc = {0};
  if (body == NULL || !srv_check_wait(r) || !srv_coll_open(r, &sc)) goto out;
  const json_t *ops = json_object_get(body, "operations");
  if (!json_is_array(ops)) {
    srv_format_err(r, ops ? "operations: expected a sequence" : "missing field `operations`");
    goto out;
  }
  const char *w = srv_query(r, "wait");
  bool wait = w && !strcmp(w, "true");
  json_t *results = json_array();
  for (size_t i = 0; i < json_array_size(ops); i++) {
    if (!batch_one(r, &sc, json_array_get(ops, i), i)) {
      json_decref(results);
      goto out;
    }
    uint64_t id = __atomic_add_fetch(&r->s->op_seq, 1, __ATOMIC_RELAXED);
    json_array_append_new(results, json_pack("{s:o, s:s}", "operation_id", jsonio_u64(id),
                                             "status", wait ? "completed" : "acknowledged"));
  }
  srv_ok(r, results);
out:
  srv_coll_close(&sc);
  json_decref(body);
}

/* ---- reads by id ------------------------------------------------------------------------ */

void h_retrieve(srv_req *r) {
  json_t *body = srv_body(r, false);
  srv_coll sc = {0};
  qv_point_id *ids = NULL;
  size_t n = 0;
  srv_sel sel;
  srv_vsel vs;
  qv_records recs = {0};
  if (body == NULL || !srv_coll_open(r, &sc)) goto out;
  const json_t *arr = json_object_get(body, "ids");
  if (arr == NULL) {
    srv_format_err(r, "missing field `ids`");
    goto out;
  }
  if (!srv_ids_parse(r, arr, "ids", &ids, &n) || !srv_sel_parse(r, body, true, &sel) ||
      !srv_with_vector(r, body, false, &vs))
    goto out;
  qv_err err = {0};
  qv_rc rc = qv_get(sc.c, ids, n, vs.any, sel.mode != SEL_NONE, &recs, &err);
  if (rc != QV_OK) {
    srv_rc_fail(r, rc, &err);
    goto out;
  }
  json_t *res = json_array();
  for (size_t i = 0; i < recs.n; i++)
    json_array_append_new(res, srv_record_json(&sc, &recs.items[i], &sel, &vs));
  srv_ok(r, res);
out:
  qv_records_free(&recs);
  qv_free(ids);
  srv_coll_close(&sc);
  json_decref(body);
}

/* A point id from the URL: decimal digits or a UUID. */
bool srv_path_id(srv_req *r, const char *text, qv_point_id *out) {
  if (text[0] != 0 && strspn(text, "0123456789") == strlen(text)) {
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (*end == 0 && errno == 0) {
      *out = qv_id_num(v);
      return true;
    }
  } else if (qv_id_parse_uuid(text, out, NULL) == QV_OK) {
    return true;
  }
  return srv_fail(r, 400, "Wrong input: Unable to parse point id \"%.80s\": expected an "
                          "unsigned integer or a UUID",
                  text);
}

void h_point_get(srv_req *r) {
  srv_coll sc = {0};
  qv_point_id id;
  if (!srv_coll_open(r, &sc)) return;
  if (!srv_path_id(r, r->args[1], &id)) {
    srv_coll_close(&sc);
    return;
  }
  qv_records recs = {0};
  qv_err err = {0};
  qv_rc rc = qv_get(sc.c, &id, 1, true, true, &recs, &err);
  if (rc != QV_OK) {
    srv_rc_fail(r, rc, &err);
  } else if (recs.n == 0) {
    char t[40];
    srv_id_text(&id, t);
    srv_fail(r, 404, "Not found: No point with id %s found", t);
  } else {
    srv_sel all = {SEL_ALL, NULL};
    srv_vsel every = {true, NULL};
    srv_ok(r, srv_record_json(&sc, &recs.items[0], &all, &every));
  }
  qv_records_free(&recs);
  srv_coll_close(&sc);
}
