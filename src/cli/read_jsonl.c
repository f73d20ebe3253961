/* read_jsonl.c: the JSON-lines reader for reader.h.
 *
 * Each non-blank line is one object {"id": ..., "vector": [...], "payload":
 * {...}}: the id an unsigned integer or a UUID string (any form
 * qv_id_parse_uuid accepts), the vector a non-empty array of numbers of the
 * same length on every line, the payload optional (an object or null) and
 * re-serialised compactly. Any other key, a duplicate key, or a value of the
 * wrong type is an error naming the 1-based line: a typo such as "vectr" must
 * not import points without vectors, and nothing is skipped silently.
 * Jansson holds integers as int64, so integer ids above 2^63-1 are refused
 * (as "too big integer"); such ids can be given as UUIDs only. */
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/reader.h"

typedef struct jsonl_state {
  char *line;
  size_t line_cap;
  uint64_t lineno;  /* of the line last read */
  bool has_pending; /* the first record, parsed by init to learn dim */
  qv_point_id pending_id;
  float *pending_vec;
  char *pending_payload;
  uint64_t pending_lineno;
  char **owned; /* payload strings handed out by the last batch */
  size_t n_owned, owned_cap;
} jsonl_state;

static const char *type_name(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a real number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  case JSON_NULL: return "null";
  }
  return "?";
}

static qv_rc parse_id(reader *r, uint64_t ln, json_t *v, qv_point_id *out,
                      qv_err *err) {
  if (json_is_integer(v)) {
    json_int_t n = json_integer_value(v);
    if (n < 0)
      return cli_err_set(err, QV_EINVAL,
                         "%s: line %llu: id %lld is negative: expected an "
                         "unsigned integer or a UUID",
                         r->path, (unsigned long long)ln, (long long)n);
    *out = qv_id_num((uint64_t)n);
    return QV_OK;
  }
  if (json_is_string(v)) {
    if (qv_id_parse_uuid(json_string_value(v), out, NULL) == QV_OK)
      return QV_OK;
    return cli_err_set(err, QV_EINVAL,
                       "%s: line %llu: id \"%.40s\" is not a UUID (string "
                       "ids must be UUIDs; numbers must be unquoted)",
                       r->path, (unsigned long long)ln, json_string_value(v));
  }
  return cli_err_set(err, QV_EINVAL,
                     "%s: line %llu: id is %s: expected an unsigned integer "
                     "or a UUID string",
                     r->path, (unsigned long long)ln, type_name(v));
}

/* Parses one line. On the first record (r->dim == 0) learns the dimension
 * and allocates s->pending_vec, which `vec` must then point to; later records
 * are written to `vec` (r->dim floats). *payload is a malloc'd compact JSON
 * string or NULL. */
static qv_rc parse_line(reader *r, const char *line, size_t len, uint64_t ln,
                        qv_point_id *id, float **vec, char **payload,
                        qv_err *err) {
  jsonl_state *s = r->impl;
  json_error_t jerr;
  qv_rc rc = QV_OK;
  *payload = NULL;
  json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
  if (o == NULL)
    return cli_err_set(
        err, QV_EINVAL, "%s: line %llu: invalid JSON at column %d: %s%s",
        r->path, (unsigned long long)ln, jerr.column, jerr.text,
        strstr(jerr.text, "too big") ? " (integers above "
                                       "2^63-1 are not supported)"
                                     : "");
  if (!json_is_object(o)) {
    rc = cli_err_set(err, QV_EINVAL,
                     "%s: line %llu: the line is %s: expected an object "
                     "{\"id\", \"vector\", \"payload\"}",
                     r->path, (unsigned long long)ln, type_name(o));
    goto out;
  }
  const char *key;
  json_t *val;
  json_object_foreach(o, key, val) {
    if (strcmp(key, "id") != 0 && strcmp(key, "vector") != 0 &&
        strcmp(key, "payload") != 0) {
      rc = cli_err_set(err, QV_EINVAL,
                       "%s: line %llu: unknown key \"%.40s\": expected id, "
                       "vector and payload",
                       r->path, (unsigned long long)ln, key);
      goto out;
    }
  }
  json_t *jid = json_object_get(o, "id");
  json_t *jvec = json_object_get(o, "vector");
  json_t *jpay = json_object_get(o, "payload");
  if (jid == NULL || jvec == NULL) {
    rc = cli_err_set(err, QV_EINVAL, "%s: line %llu: missing \"%s\"", r->path,
                     (unsigned long long)ln, jid == NULL ? "id" : "vector");
    goto out;
  }
  rc = parse_id(r, ln, jid, id, err);
  if (rc != QV_OK) goto out;
  if (!json_is_array(jvec)) {
    rc = cli_err_set(err, QV_EINVAL,
                     "%s: line %llu: \"vector\" is %s: expected an array of "
                     "numbers",
                     r->path, (unsigned long long)ln, type_name(jvec));
    goto out;
  }
  size_t n = json_array_size(jvec);
  if (n == 0 || n > QV_DIM_MAX) {
    rc = cli_err_set(err, QV_EINVAL,
                     "%s: line %llu: \"vector\" has %zu components: expected "
                     "1..%u",
                     r->path, (unsigned long long)ln, n, QV_DIM_MAX);
    goto out;
  }
  if (r->dim == 0) {
    s->pending_vec = malloc(n * sizeof(float));
    if (s->pending_vec == NULL) {
      rc = cli_err_set(err, QV_ENOMEM, "no memory");
      goto out;
    }
    *vec = s->pending_vec;
    r->dim = (uint32_t)n;
  } else if (n != r->dim) {
    rc = cli_err_set(err, QV_EINVAL,
                     "%s: line %llu: \"vector\" has %zu components, but the "
                     "first record has %u",
                     r->path, (unsigned long long)ln, n, r->dim);
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_array_get(jvec, i);
    if (!json_is_number(e)) {
      rc = cli_err_set(err, QV_EINVAL,
                       "%s: line %llu: vector[%zu] is %s: expected a number",
                       r->path, (unsigned long long)ln, i, type_name(e));
      goto out;
    }
    double d = json_number_value(e);
    if (!(fabs(d) <= FLT_MAX)) {
      rc = cli_err_set(err, QV_EINVAL,
                       "%s: line %llu: vector[%zu] = %g is out of float32 "
                       "range",
                       r->path, (unsigned long long)ln, i, d);
      goto out;
    }
    (*vec)[i] = (float)d;
  }
  if (jpay != NULL && !json_is_null(jpay)) {
    if (!json_is_object(jpay)) {
      rc = cli_err_set(err, QV_EINVAL,
                       "%s: line %llu: \"payload\" is %s: expected an object",
                       r->path, (unsigned long long)ln, type_name(jpay));
      goto out;
    }
    *payload = json_dumps(jpay, JSON_COMPACT);
    if (*payload == NULL) rc = cli_err_set(err, QV_ENOMEM, "no memory");
  }
out:
  json_decref(o);
  return rc;
}

static bool is_blank(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
      return false;
  return true;
}

/* Reads the next non-blank line into s->line; returns its length, 0 at end
 * of file, or -1 on a read error. */
static ssize_t next_line(jsonl_state *s, FILE *f) {
  while (1) {
    ssize_t len = getline(&s->line, &s->line_cap, f);
    if (len < 0) return ferror(f) ? -1 : 0;
    s->lineno++;
    if (!is_blank(s->line, (size_t)len)) return len;
  }
}

static void free_owned(jsonl_state *s) {
  for (size_t i = 0; i < s->n_owned; i++) free(s->owned[i]);
  s->n_owned = 0;
}

static qv_rc keep_payload(jsonl_state *s, char *p, qv_err *err) {
  if (p == NULL) return QV_OK;
  if (s->n_owned == s->owned_cap) {
    size_t ncap = s->owned_cap ? 2 * s->owned_cap : 256;
    char **n = realloc(s->owned, ncap * sizeof *n);
    if (n == NULL) {
      free(p);
      return cli_err_set(err, QV_ENOMEM, "no memory");
    }
    s->owned = n;
    s->owned_cap = ncap;
  }
  s->owned[s->n_owned++] = p;
  return QV_OK;
}

static void emit(reader_batch *b, size_t i, const qv_point_id *id, uint64_t ln,
                 char *payload) {
  b->ids[i] = *id;
  b->recnos[i] = ln;
  if (b->payloads != NULL) b->payloads[i] = payload;
  if (b->payload_lens != NULL)
    b->payload_lens[i] = payload ? strlen(payload) : 0;
}

static qv_rc jsonl_next(reader *r, reader_batch *b, qv_err *err) {
  jsonl_state *s = r->impl;
  free_owned(s);
  size_t i = 0;
  qv_rc rc = QV_OK;
  if (s->has_pending && b->cap > 0) {
    s->has_pending = false;
    memcpy(b->vecs, s->pending_vec, (size_t)r->dim * sizeof(float));
    rc = keep_payload(s, s->pending_payload, err);
    if (rc != QV_OK) return rc;
    emit(b, i++, &s->pending_id, s->pending_lineno, s->pending_payload);
    s->pending_payload = NULL;
  }
  while (i < b->cap) {
    ssize_t len = next_line(s, r->in.f);
    if (len < 0)
      return cli_err_set(err, QV_EIO, "%s: line %llu: read error", r->path,
                         (unsigned long long)s->lineno + 1);
    if (len == 0) break;
    qv_point_id id;
    float *vec = b->vecs + i * r->dim;
    char *payload;
    rc = parse_line(r, s->line, (size_t)len, s->lineno, &id, &vec, &payload,
                    err);
    if (rc == QV_OK) rc = keep_payload(s, payload, err);
    if (rc != QV_OK) return rc;
    emit(b, i++, &id, s->lineno, payload);
    r->next_recno++;
  }
  b->n = i;
  return QV_OK;
}

static void jsonl_close(reader *r) {
  jsonl_state *s = r->impl;
  if (s == NULL) return;
  free_owned(s);
  free(s->owned);
  free(s->line);
  free(s->pending_vec);
  free(s->pending_payload);
  free(s);
  r->impl = NULL;
}

static const reader_ops jsonl_ops = {"jsonl", "line", jsonl_next, jsonl_close};

qv_rc cli_jsonl_init(reader *r, qv_err *err) {
  r->ops = &jsonl_ops;
  jsonl_state *s = calloc(1, sizeof *s);
  if (s == NULL) return cli_err_set(err, QV_ENOMEM, "no memory");
  r->impl = s;
  ssize_t len = next_line(s, r->in.f);
  if (len < 0)
    return cli_err_set(err, QV_EIO, "%s: line 1: read error", r->path);
  if (len == 0) return QV_OK; /* no records: dim stays 0 */
  float *vec = NULL;
  qv_rc rc = parse_line(r, s->line, (size_t)len, s->lineno, &s->pending_id,
                        &vec, &s->pending_payload, err);
  if (rc != QV_OK) return rc;
  s->has_pending = true;
  s->pending_lineno = s->lineno;
  r->next_recno = 1;
  return QV_OK;
}
