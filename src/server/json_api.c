/* json_api.c: the Qdrant wire conventions shared by every handler —
 * envelopes, error shapes and codes, the qv_rc -> HTTP table, typed request
 * fields, point ids, filters, and the with_payload selector applied to what
 * the engine returns (vectors and with_vector: json_vectors.c).
 *
 * Does not route (router.c) or touch MHD beyond reading query arguments.
 * Invariant: every helper that returns false has left exactly one error
 * response in r->resp; one that returns true has left r->resp alone. */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "server/server_int.h"

double srv_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- responses ---------------------------------------------------------------- */

void srv_raw(srv_req *r, unsigned status, const char *content_type, char *body,
             size_t len, void (*free_fn)(void *)) {
  if (r->resp.free_fn) r->resp.free_fn(r->resp.body);
  if (r->resp.is_file) close(r->resp.fd);
  r->resp.is_file = false;
  r->resp.disposition[0] = 0;
  r->resp.status = status;
  r->resp.content_type = content_type;
  r->resp.body = body;
  r->resp.len = len;
  r->resp.free_fn = free_fn;
}

void srv_file(srv_req *r, int fd, uint64_t size, const char *content_type,
              const char *filename) {
  srv_raw(r, 200, content_type, NULL, 0, NULL);
  r->resp.is_file = true;
  r->resp.fd = fd;
  r->resp.file_size = size;
  snprintf(r->resp.disposition, sizeof r->resp.disposition, "attachment; filename=\"%.255s\"",
           filename);
}

void srv_text(srv_req *r, unsigned status, const char *content_type, const char *text) {
  char *copy = qv_strdup(text);
  srv_raw(r, copy ? status : 500, content_type, copy, copy ? strlen(copy) : 0, qv_free);
}

/* Serialises `o` (stolen) as the response; 500 if memory runs out. */
static void reply_json(srv_req *r, unsigned status, json_t *o) {
  size_t len = 0;
  char *text = o ? jsonio_dumps(o, &len) : NULL;
  json_decref(o);
  if (text == NULL) {
    static const char oom[] = "{\"status\":{\"error\":\"Service internal error: out of memory\"},\"time\":0}";
    srv_raw(r, 500, "application/json", (char *)oom, sizeof oom - 1, NULL);
    return;
  }
  srv_raw(r, status, "application/json", text, len, qv_free);
}

static double elapsed(const srv_req *r) {
  double t = srv_now() - r->t0;
  return t > 0 ? t : 0;
}

void srv_ok(srv_req *r, json_t *result) {
  json_t *o = json_object();
  if (o && result) {
    json_object_set_new(o, "result", result);
    json_object_set_new(o, "status", json_string("ok"));
    json_object_set_new(o, "time", json_real(elapsed(r)));
  } else {
    json_decref(result);
    json_decref(o);
    o = NULL;
  }
  reply_json(r, 200, o);
}

void srv_accepted(srv_req *r) {
  reply_json(r, 202, json_pack("{s:s, s:f}", "status", "accepted", "time", elapsed(r)));
}

static bool vfail(srv_req *r, unsigned status, const char *prefix, const char *fmt,
                  va_list ap) {
  char msg[768];
  size_t p = strlen(prefix);
  memcpy(msg, prefix, p + 1);
  vsnprintf(msg + p, sizeof msg - p, fmt, ap);
  json_t *o = json_pack("{s:{s:s}, s:f}", "status", "error", msg, "time", elapsed(r));
  reply_json(r, status, o);
  return false;
}

bool srv_fail(srv_req *r, unsigned status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(r, status, "", fmt, ap);
  va_end(ap);
  return false;
}

bool srv_format_err(srv_req *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(r, 400, "Format error in JSON body: ", fmt, ap);
  va_end(ap);
  return false;
}

bool srv_wrong_input(srv_req *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(r, 400, "Wrong input: ", fmt, ap);
  va_end(ap);
  return false;
}

bool srv_invalid(srv_req *r, const char *field, const char *fmt, ...) {
  char inner[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(inner, sizeof inner, fmt, ap);
  va_end(ap);
  return srv_fail(r, 422, "Validation error in JSON body: [%s: %s]", field, inner);
}

/* The one place a qv_rc becomes an HTTP status and Qdrant's message prefix. */
static const struct {
  qv_rc rc;
  unsigned status;
  const char *prefix;
} rc_table[] = {
    {QV_OK, 200, ""},
    {QV_EINVAL, 400, "Wrong input: "},
    {QV_EDIM, 400, "Wrong input: "},
    {QV_ENOTFOUND, 404, "Not found: "},
    {QV_EEXIST, 409, "Wrong input: "},
    {QV_ENOMEM, 500, "Service internal error: "},
    {QV_EIO, 500, "Service internal error: "},
    {QV_EBUSY, 503, "Service unavailable: "},
    {QV_ECORRUPT, 500, "Service internal error: "},
    {QV_ECLOSED, 500, "Service internal error: "},
};

static size_t rc_row(qv_rc rc) {
  for (size_t i = 0; i < sizeof rc_table / sizeof rc_table[0]; i++)
    if (rc_table[i].rc == rc) return i;
  return 5; /* an unknown code is an internal error */
}

unsigned srv_rc_status(qv_rc rc) { return rc_table[rc_row(rc)].status; }

bool srv_rc_fail(srv_req *r, qv_rc rc, const qv_err *err) {
  size_t i = rc_row(rc);
  return srv_fail(r, rc_table[i].status, "%s%s", rc_table[i].prefix,
                  err && err->msg[0] ? err->msg : qv_rc_name(rc));
}

/* ---- request basics ------------------------------------------------------------- */

const char *srv_query(srv_req *r, const char *key) {
  return r->conn ? MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key) : NULL;
}

json_t *srv_body_vecs(srv_req *r, bool allow_empty, const char *const *vec_paths) {
  size_t k = 0;
  while (k < r->body_len && strchr(" \t\r\n", r->body[k]) != NULL) k++;
  if (k == r->body_len && allow_empty) return json_object();
  char msg[256];
  jsonio_vecs_free(&r->vecs); /* a body is parsed once; be safe anyway */
  json_t *v = vec_paths ? jsonio_parse_vecs(r->body, r->body_len, vec_paths, &r->vecs, msg,
                                            sizeof msg)
                        : jsonio_parse(r->body, r->body_len, msg, sizeof msg);
  if (v == NULL) {
    srv_format_err(r, "%s", msg);
    return NULL;
  }
  if (!json_is_object(v)) {
    json_decref(v);
    srv_format_err(r, "invalid type: expected a JSON object at line 1 column 1");
    return NULL;
  }
  return v;
}

json_t *srv_body(srv_req *r, bool allow_empty) { return srv_body_vecs(r, allow_empty, NULL); }

/* Where the bodies carry dense vectors. Anything not listed still works
 * through jansson, only slower. */
const char *const srv_paths_upsert[] = {
    "points[].vector", "points[].vector.*", "points[].vectors", "points[].vectors.*",
    "batch.vectors[]", "batch.vectors.*[]",
    "operations[].upsert.points[].vector", "operations[].upsert.points[].vector.*",
    "operations[].upsert.batch.vectors[]", "operations[].upsert.batch.vectors.*[]",
    "operations[].update_vectors.points[].vector",
    "operations[].update_vectors.points[].vector.*", NULL};
const char *const srv_paths_search[] = {
    "vector", "vector.vector", "searches[].vector", "searches[].vector.vector",
    "query", "query.nearest", "searches[].query", "searches[].query.nearest",
    "prefetch.query", "prefetch[].query", "prefetch.query.nearest", "prefetch[].query.nearest",
    "positive[]", "negative[]", "searches[].positive[]", "searches[].negative[]",
    "query.recommend.positive[]", "query.recommend.negative[]", NULL};

bool srv_check_wait(srv_req *r) {
  const char *w = srv_query(r, "wait");
  if (w == NULL || !strcmp(w, "true") || !strcmp(w, "false")) return true;
  return srv_fail(r, 400, "Query deserialize error: wait: provided string was not `true` or `false`");
}

void srv_update_ok(srv_req *r) {
  const char *w = srv_query(r, "wait");
  bool wait = w != NULL && strcmp(w, "true") == 0;
  uint64_t op = __atomic_add_fetch(&r->s->op_seq, 1, __ATOMIC_RELAXED);
  /* The engine applies every write synchronously and durably, so even
   * wait=false is answered only after the write; it keeps Qdrant's word. */
  srv_ok(r, json_pack("{s:o, s:s}", "operation_id", jsonio_u64(op), "status",
                      wait ? "completed" : "acknowledged"));
}

/* The spaces in the engine's order (see srv_space). */
static void coll_spaces(srv_coll *sc) {
  const qv_collection_config *cf = &sc->info.config;
  sc->n_sp = 0;
  sc->row_floats = 0;
  if (cf->dim > 0)
    sc->sp[sc->n_sp++] = (srv_space){"", cf->dim, cf->distance, 0};
  for (uint32_t i = 0; i < cf->n_named && i < QV_VECTORS_MAX; i++)
    sc->sp[sc->n_sp++] = (srv_space){cf->named[i].name, cf->named[i].dim,
                                     cf->named[i].distance, 0};
  for (uint32_t i = 0; i < sc->n_sp; i++) {
    sc->sp[i].offset = sc->row_floats;
    sc->row_floats += sc->sp[i].dim;
  }
}

bool srv_coll_open(srv_req *r, srv_coll *out) {
  memset(out, 0, sizeof *out);
  out->name = r->args[0];
  qv_rc rc = qv_collection_get(r->s->db, out->name, &out->c, NULL);
  if (rc == QV_ENOTFOUND || rc == QV_EINVAL)
    return srv_fail(r, 404, "Not found: Collection `%s` doesn't exist!", out->name);
  if (rc != QV_OK) return srv_rc_fail(r, rc, NULL);
  qv_err err = {0};
  rc = qv_collection_info_get(out->c, &out->info, &err);
  if (rc != QV_OK) {
    srv_coll_close(out);
    return srv_rc_fail(r, rc, &err);
  }
  coll_spaces(out);
  return true;
}

void srv_coll_close(srv_coll *sc) {
  if (sc->c) qv_collection_release(sc->c);
  sc->c = NULL;
}

/* ---- typed fields ----------------------------------------------------------------- */

const char *srv_type_name(const json_t *v) {
  if (v == NULL) return "nothing";
  if (jsonio_raw_text(v)) return "integer";
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "map";
  case JSON_ARRAY: return "sequence";
  case JSON_STRING: return "string";
  case JSON_INTEGER: return json_integer_value(v) < 0 ? "integer (negative)" : "integer";
  case JSON_REAL: return "floating point";
  case JSON_TRUE:
  case JSON_FALSE: return "boolean";
  default: return "null";
  }
}

static const json_t *present(const json_t *obj, const char *key) {
  const json_t *v = json_object_get(obj, key);
  return json_is_null(v) ? NULL : v;
}

bool srv_field_u64(srv_req *r, const json_t *obj, const char *key, bool required,
                   uint64_t *out) {
  const json_t *v = present(obj, key);
  if (v == NULL)
    return required ? srv_format_err(r, "missing field `%s`", key) : true;
  if (!jsonio_get_u64(v, out))
    return srv_format_err(r, "%s: invalid type: %s, expected an unsigned integer", key,
                          srv_type_name(v));
  return true;
}

bool srv_field_bool(srv_req *r, const json_t *obj, const char *key, bool *out) {
  const json_t *v = present(obj, key);
  if (v == NULL) return true;
  if (!json_is_boolean(v))
    return srv_format_err(r, "%s: invalid type: %s, expected a boolean", key, srv_type_name(v));
  *out = json_is_true(v);
  return true;
}

bool srv_field_f64(srv_req *r, const json_t *obj, const char *key, bool *is_present,
                   double *out) {
  const json_t *v = present(obj, key);
  *is_present = v != NULL;
  if (v == NULL) return true;
  if (!jsonio_get_f64(v, out))
    return srv_format_err(r, "%s: invalid type: %s, expected a number", key, srv_type_name(v));
  return true;
}

bool srv_field_str(srv_req *r, const json_t *obj, const char *key, bool required,
                   const char **out) {
  const json_t *v = present(obj, key);
  if (v == NULL)
    return required ? srv_format_err(r, "missing field `%s`", key) : true;
  if (!json_is_string(v) || jsonio_raw_text(v))
    return srv_format_err(r, "%s: invalid type: %s, expected a string", key, srv_type_name(v));
  *out = json_string_value(v);
  return true;
}

json_t *srv_field_obj(srv_req *r, const json_t *obj, const char *key, bool *ok) {
  const json_t *v = present(obj, key);
  *ok = true;
  if (v != NULL && !json_is_object(v)) {
    *ok = srv_format_err(r, "%s: invalid type: %s, expected a map", key, srv_type_name(v));
    return NULL;
  }
  return (json_t *)v;
}

json_t *srv_field_arr(srv_req *r, const json_t *obj, const char *key, bool *ok) {
  const json_t *v = present(obj, key);
  *ok = true;
  if (v != NULL && !json_is_array(v)) {
    *ok = srv_format_err(r, "%s: invalid type: %s, expected a sequence", key, srv_type_name(v));
    return NULL;
  }
  return (json_t *)v;
}

/* ---- ids ---------------------------------------------------------------------------- */

bool srv_id_parse(srv_req *r, const json_t *v, const char *what, qv_point_id *out) {
  uint64_t num;
  if (json_is_integer(v) || jsonio_raw_text(v)) {
    if (jsonio_get_u64(v, &num)) {
      *out = qv_id_num(num);
      return true;
    }
    if (json_is_integer(v))
      return srv_format_err(r, "%s: %lld is not a valid point id: expected an unsigned "
                               "integer or a UUID",
                            what, (long long)json_integer_value(v));
    return srv_format_err(r, "%s: %s is not a valid point id: it exceeds 2^64-1", what,
                          jsonio_raw_text(v));
  }
  if (json_is_string(v)) {
    if (qv_id_parse_uuid(json_string_value(v), out, NULL) == QV_OK) return true;
    return srv_format_err(r, "%s: \"%.80s\" is not a valid point id: expected an unsigned "
                             "integer or a UUID",
                          what, json_string_value(v));
  }
  return srv_format_err(r, "%s: invalid type: %s, expected an unsigned integer or a UUID",
                        what, srv_type_name(v));
}

bool srv_ids_parse(srv_req *r, const json_t *arr, const char *what, qv_point_id **out,
                   size_t *n) {
  if (!json_is_array(arr))
    return srv_format_err(r, "%s: invalid type: %s, expected a sequence of point ids", what,
                          srv_type_name(arr));
  size_t m = json_array_size(arr);
  qv_point_id *ids = qv_malloc((m + 1) * sizeof *ids);
  if (ids == NULL) return srv_fail(r, 500, "Service internal error: out of memory");
  for (size_t i = 0; i < m; i++) {
    char w[64];
    snprintf(w, sizeof w, "%.40s[%zu]", what, i);
    if (!srv_id_parse(r, json_array_get(arr, i), w, &ids[i])) {
      qv_free(ids);
      return false;
    }
  }
  *out = ids;
  *n = m;
  return true;
}

void srv_id_text(const qv_point_id *id, char buf[40]) { qv_id_format(id, buf); }

json_t *srv_id_json(const qv_point_id *id) {
  if (!id->is_uuid) return jsonio_u64(id->num);
  char buf[40];
  return json_string(qv_id_format(id, buf));
}

/* ---- filters ---------------------------------------------------------------------------- */

/* Ids above INT64_MAX in `has_id` become strings of their digits, which
 * the engine's filter parser reads as numeric ids (its JSON parser cannot
 * hold them as integers). Elsewhere raw numbers are written back as is. */
static void has_id_digits(json_t *v) {
  if (json_is_array(v)) {
    for (size_t i = 0; i < json_array_size(v); i++) has_id_digits(json_array_get(v, i));
    return;
  }
  if (!json_is_object(v)) return;
  const char *k;
  json_t *x;
  json_object_foreach(v, k, x) {
    if (strcmp(k, "has_id") != 0 || !json_is_array(x)) {
      has_id_digits(x);
      continue;
    }
    for (size_t i = 0; i < json_array_size(x); i++) {
      const char *raw = jsonio_raw_text(json_array_get(x, i));
      if (raw) json_array_set_new(x, i, json_string(raw));
    }
  }
}

bool srv_filter_parse(srv_req *r, const json_t *obj, const char *key, qv_filter **out) {
  *out = NULL;
  const json_t *f = present(obj, key);
  if (f == NULL) return true;
  if (!json_is_object(f))
    return srv_format_err(r, "%s: invalid type: %s, expected a map", key, srv_type_name(f));
  json_t *copy = json_deep_copy(f);
  if (copy == NULL) return srv_fail(r, 500, "Service internal error: out of memory");
  has_id_digits(copy);
  size_t len;
  char *text = jsonio_dumps(copy, &len);
  json_decref(copy);
  if (text == NULL) return srv_fail(r, 500, "Service internal error: out of memory");
  qv_err err = {0};
  qv_rc rc = qv_filter_parse(text, len, out, &err);
  qv_free(text);
  if (rc == QV_EINVAL) return srv_format_err(r, "%s: %s", key, err.msg);
  if (rc != QV_OK) return srv_rc_fail(r, rc, &err);
  return true;
}

/* ---- selectors --------------------------------------------------------------------------- */

bool srv_is_string_list(const json_t *v) {
  if (!json_is_array(v)) return false;
  for (size_t i = 0; i < json_array_size(v); i++)
    if (!json_is_string(json_array_get(v, i)) || jsonio_raw_text(json_array_get(v, i)))
      return false;
  return true;
}

bool srv_sel_parse(srv_req *r, const json_t *obj, bool dflt, srv_sel *out) {
  const json_t *v = present(obj, "with_payload");
  out->keys = NULL;
  out->mode = dflt ? SEL_ALL : SEL_NONE;
  if (v == NULL) return true;
  if (json_is_boolean(v)) {
    out->mode = json_is_true(v) ? SEL_ALL : SEL_NONE;
    return true;
  }
  if (srv_is_string_list(v)) {
    out->mode = SEL_INCLUDE;
    out->keys = v;
    return true;
  }
  if (json_is_object(v) && json_object_size(v) == 1) {
    const json_t *inc = json_object_get(v, "include"), *exc = json_object_get(v, "exclude");
    if (srv_is_string_list(inc) || srv_is_string_list(exc)) {
      out->mode = inc ? SEL_INCLUDE : SEL_EXCLUDE;
      out->keys = inc ? inc : exc;
      return true;
    }
  }
  return srv_format_err(r, "with_payload: expected true, false, a list of keys, "
                           "{\"include\": [...]} or {\"exclude\": [...]}");
}

/* Copies the value at dotted `path` of src into dst, creating objects. */
static void include_path(json_t *dst, const json_t *src, const char *path) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", path);
  char *save = NULL, *tok = strtok_r(buf, ".", &save);
  while (tok != NULL) {
    const json_t *next = json_object_get(src, tok);
    if (next == NULL) return;
    char *rest = strtok_r(NULL, ".", &save);
    if (rest == NULL) {
      json_object_set(dst, tok, (json_t *)next);
      return;
    }
    if (!json_is_object(next)) return;
    json_t *d = json_object_get(dst, tok);
    if (!json_is_object(d)) {
      d = json_object();
      if (d == NULL || json_object_set_new(dst, tok, d) != 0) return;
    }
    dst = d;
    src = next;
    tok = rest;
  }
}

static void exclude_path(json_t *obj, const char *path) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", path);
  char *save = NULL, *tok = strtok_r(buf, ".", &save);
  while (tok != NULL && json_is_object(obj)) {
    char *rest = strtok_r(NULL, ".", &save);
    if (rest == NULL) {
      json_object_del(obj, tok);
      return;
    }
    obj = json_object_get(obj, tok);
    tok = rest;
  }
}

json_t *srv_payload_json(const srv_sel *sel, const char *text, size_t len) {
  if (sel->mode == SEL_NONE) return NULL;
  if (text == NULL || len == 0) return json_object();
  if (sel->mode == SEL_ALL) return jsonio_raw_json(text, len);
  json_t *all = json_loadb(text, len, 0, NULL);
  if (!json_is_object(all)) {
    json_decref(all);
    return json_object();
  }
  json_t *out;
  if (sel->mode == SEL_INCLUDE) {
    out = json_object();
    for (size_t i = 0; out && i < json_array_size(sel->keys); i++)
      include_path(out, all, json_string_value(json_array_get(sel->keys, i)));
    json_decref(all);
  } else {
    out = all;
    for (size_t i = 0; i < json_array_size(sel->keys); i++)
      exclude_path(out, json_string_value(json_array_get(sel->keys, i)));
  }
  return out;
}

