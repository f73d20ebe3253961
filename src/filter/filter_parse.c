/* filter_parse.c: Qdrant filter JSON -> the tree of filter.h.
 *
 * Strict like Qdrant: unknown keys in a Filter or a condition are errors,
 * types are checked, and every error message names the key and what was
 * expected. Owns no evaluation (filter_eval.c). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/err.h"
#include "filter/filter.h"

static void cond_free(fcond *c);

static void clause_free(fclause *cl) {
  for (uint32_t i = 0; i < cl->n; i++) cond_free(&cl->conds[i]);
  qv_free(cl->conds);
}

void qv_filter_free(qv_filter *f) {
  if (f == NULL) return;
  clause_free(&f->must);
  clause_free(&f->should);
  clause_free(&f->must_not);
  clause_free(&f->min_should);
  qv_free(f);
}

void filter_path_free(fpath *p) {
  for (uint32_t i = 0; i < p->n; i++) qv_free(p->steps[i].name);
  qv_free(p->steps);
  p->steps = NULL;
  p->n = 0;
}

bool filter_path_eq(const fpath *a, const fpath *b) {
  if (a->n != b->n) return false;
  for (uint32_t i = 0; i < a->n; i++) {
    const fpath_step *x = &a->steps[i], *y = &b->steps[i];
    if (x->is_index != y->is_index || x->index != y->index) return false;
    if (!x->is_index && strcmp(x->name, y->name) != 0) return false;
  }
  return true;
}

static void cond_free(fcond *c) {
  filter_path_free(&c->path);
  json_decref(c->value);
  json_decref(c->set);
  qv_free(c->text);
  qv_free(c->poly);
  qv_free(c->ids);
  qv_free(c->vector_name);
  qv_filter_free(c->sub);
}

/* ---- key paths ------------------------------------------------------------ */

qv_rc filter_path_parse(const char *key, fpath *p, qv_err *err) {
  memset(p, 0, sizeof *p);
  size_t len = strlen(key);
  if (len == 0) return qv_err_set(err, QV_EINVAL, "filter: empty key");
  p->steps = qv_calloc(len + 1, sizeof *p->steps);
  if (p->steps == NULL) return qv_err_set(err, QV_ENOMEM, "filter: no memory");
  const char *s = key;
  while (*s) {
    if (*s == '[') {
      const char *close = strchr(s, ']');
      if (close == NULL) return qv_err_set(err, QV_EINVAL, "filter: key \"%s\": unclosed [", key);
      fpath_step *st = &p->steps[p->n++];
      st->is_index = true;
      if (close == s + 1) {
        st->index = -1;
      } else {
        long v = 0;
        for (const char *d = s + 1; d < close; d++) {
          if (!isdigit((unsigned char)*d) || v > 100000000)
            return qv_err_set(err, QV_EINVAL, "filter: key \"%s\": bad index", key);
          v = v * 10 + (*d - '0');
        }
        st->index = (int32_t)v;
      }
      s = close + 1;
      if (*s == '.') s++;
      continue;
    }
    size_t n = strcspn(s, ".[");
    if (n == 0) return qv_err_set(err, QV_EINVAL, "filter: key \"%s\": empty part", key);
    fpath_step *st = &p->steps[p->n++];
    st->name = qv_strndup(s, n);
    if (st->name == NULL) return qv_err_set(err, QV_ENOMEM, "filter: no memory");
    s += n;
    if (*s == '.') {
      s++;
      if (*s == 0) return qv_err_set(err, QV_EINVAL, "filter: key \"%s\" ends with '.'", key);
    }
  }
  return QV_OK;
}

/* ---- helpers -------------------------------------------------------------------- */

static bool only_keys(const json_t *o, const char *const *allowed, const char *what,
                      qv_err *err) {
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)o, k, v) {
    bool ok = false;
    for (const char *const *a = allowed; *a; a++) ok |= strcmp(*a, k) == 0;
    if (!ok) {
      qv_err_set(err, QV_EINVAL, "filter: unknown field \"%s\" in %s", k, what);
      return false;
    }
  }
  return true;
}

static qv_rc get_number(const json_t *v, const char *what, double *out, qv_err *err) {
  if (!json_is_number(v))
    return qv_err_set(err, QV_EINVAL, "filter: %s must be a number", what);
  *out = json_number_value(v);
  return QV_OK;
}

static qv_rc parse_bounds(const json_t *o, bool datetime_ok, fbounds *b, bool *is_dt,
                          qv_err *err) {
  static const char *const keys[] = {"gt", "gte", "lt", "lte", NULL};
  if (!json_is_object(o)) return qv_err_set(err, QV_EINVAL, "filter: range must be an object");
  if (!only_keys(o, keys, "range", err)) return QV_EINVAL;
  memset(b, 0, sizeof *b);
  *is_dt = false;
  bool *has[4] = {&b->has_gt, &b->has_gte, &b->has_lt, &b->has_lte};
  double *val[4] = {&b->gt, &b->gte, &b->lt, &b->lte};
  int n_num = 0, n_str = 0;
  for (int i = 0; i < 4; i++) {
    json_t *v = json_object_get(o, keys[i]);
    if (v == NULL || json_is_null(v)) continue;
    *has[i] = true;
    if (json_is_string(v) && datetime_ok) {
      int64_t us;
      if (!filter_parse_datetime(json_string_value(v), &us))
        return qv_err_set(err, QV_EINVAL, "filter: range.%s \"%s\" is not an RFC 3339 date-time",
                          keys[i], json_string_value(v));
      *val[i] = (double)us;
      n_str++;
    } else {
      qv_rc rc = get_number(v, keys[i], val[i], err);
      if (rc != QV_OK) return rc;
      n_num++;
    }
  }
  if (n_num && n_str)
    return qv_err_set(err, QV_EINVAL, "filter: range mixes numbers and date-times");
  *is_dt = n_str > 0;
  return QV_OK;
}

static qv_rc parse_geo_point(const json_t *o, const char *what, double *lon, double *lat,
                             qv_err *err) {
  static const char *const keys[] = {"lon", "lat", NULL};
  if (!json_is_object(o)) return qv_err_set(err, QV_EINVAL, "filter: %s must be {lon, lat}", what);
  if (!only_keys(o, keys, what, err)) return QV_EINVAL;
  qv_rc rc = get_number(json_object_get(o, "lon"), "lon", lon, err);
  if (rc == QV_OK) rc = get_number(json_object_get(o, "lat"), "lat", lat, err);
  if (rc == QV_OK && (*lon < -180 || *lon > 180 || *lat < -90 || *lat > 90))
    rc = qv_err_set(err, QV_EINVAL, "filter: %s out of range (lon -180..180, lat -90..90)", what);
  return rc;
}

/* A numeric id written as its decimal digits (how the server passes ids
 * above INT64_MAX, which JSON parsers here cannot hold as integers). */
static bool digits_id(const char *s, qv_point_id *out) {
  uint64_t v = 0;
  if (*s == 0) return false;
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10) return false;
    v = v * 10 + (uint64_t)(*s - '0');
  }
  *out = qv_id_num(v);
  return true;
}

static qv_rc parse_id(const json_t *v, qv_point_id *out, qv_err *err) {
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    *out = qv_id_num((uint64_t)json_integer_value(v));
    return QV_OK;
  }
  if (json_is_string(v) && digits_id(json_string_value(v), out)) return QV_OK;
  if (json_is_string(v)) return qv_id_parse_uuid(json_string_value(v), out, err);
  return qv_err_set(err, QV_EINVAL, "filter: has_id entries must be unsigned integers or UUIDs");
}

static qv_rc parse_filter(const json_t *j, qv_filter **out, qv_err *err);

/* ---- conditions ------------------------------------------------------------------ */

static qv_rc parse_match(const json_t *m, fcond *c, qv_err *err) {
  if (!json_is_object(m) || json_object_size(m) != 1)
    return qv_err_set(err, QV_EINVAL,
                      "filter: match must be an object with one of value, any, except, text");
  json_t *v;
  if ((v = json_object_get(m, "value")) != NULL) {
    if (!json_is_string(v) && !json_is_integer(v) && !json_is_boolean(v))
      return qv_err_set(err, QV_EINVAL,
                        "filter: match.value must be a string, an integer or a boolean");
    c->kind = FC_MATCH_VALUE;
    c->value = json_incref(v);
    return QV_OK;
  }
  bool any = (v = json_object_get(m, "any")) != NULL;
  if (any || (v = json_object_get(m, "except")) != NULL) {
    if (!json_is_array(v))
      return qv_err_set(err, QV_EINVAL, "filter: match.%s must be an array", any ? "any" : "except");
    size_t i;
    json_t *e;
    int kinds = 0;
    json_array_foreach(v, i, e) {
      if (json_is_string(e))
        kinds |= 1;
      else if (json_is_integer(e))
        kinds |= 2;
      else
        return qv_err_set(err, QV_EINVAL, "filter: match.%s holds strings or integers",
                          any ? "any" : "except");
    }
    if (kinds == 3)
      return qv_err_set(err, QV_EINVAL, "filter: match.%s mixes strings and integers",
                        any ? "any" : "except");
    c->kind = any ? FC_MATCH_ANY : FC_MATCH_EXCEPT;
    c->set = json_incref(v);
    return QV_OK;
  }
  if ((v = json_object_get(m, "text")) != NULL) {
    if (!json_is_string(v)) return qv_err_set(err, QV_EINVAL, "filter: match.text must be a string");
    c->kind = FC_MATCH_TEXT;
    c->text = qv_strdup(json_string_value(v));
    return c->text ? QV_OK : qv_err_set(err, QV_ENOMEM, "filter: no memory");
  }
  const char *k = json_object_iter_key(json_object_iter((json_t *)m));
  return qv_err_set(err, QV_EINVAL, "filter: unknown match kind \"%s\"", k ? k : "");
}

static qv_rc parse_field(const json_t *o, fcond *c, qv_err *err) {
  static const char *const keys[] = {"key", "match", "range", "geo_radius", "geo_bounding_box",
                                     "geo_polygon", "values_count", "is_empty", "is_null", NULL};
  if (!only_keys(o, keys, "field condition", err)) return QV_EINVAL;
  json_t *key = json_object_get(o, "key");
  if (!json_is_string(key)) return qv_err_set(err, QV_EINVAL, "filter: field condition needs a string \"key\"");
  qv_rc rc = filter_path_parse(json_string_value(key), &c->path, err);
  if (rc != QV_OK) return rc;
  int n_kinds = 0;
  json_t *v;
  if ((v = json_object_get(o, "match")) != NULL) n_kinds++, rc = parse_match(v, c, err);
  if (rc == QV_OK && (v = json_object_get(o, "range")) != NULL) {
    bool dt = false;
    n_kinds++;
    rc = parse_bounds(v, true, &c->range, &dt, err);
    c->kind = dt ? FC_DATETIME_RANGE : FC_RANGE;
  }
  if (rc == QV_OK && (v = json_object_get(o, "values_count")) != NULL) {
    bool dt = false;
    n_kinds++;
    rc = parse_bounds(v, false, &c->range, &dt, err);
    c->kind = FC_VALUES_COUNT;
  }
  if (rc == QV_OK && (v = json_object_get(o, "geo_radius")) != NULL) {
    n_kinds++;
    c->kind = FC_GEO_RADIUS;
    rc = json_is_object(v) ? parse_geo_point(json_object_get(v, "center"), "geo_radius.center",
                                             &c->lon, &c->lat, err)
                           : qv_err_set(err, QV_EINVAL, "filter: geo_radius must be an object");
    if (rc == QV_OK) rc = get_number(json_object_get(v, "radius"), "geo_radius.radius", &c->radius, err);
  }
  if (rc == QV_OK && (v = json_object_get(o, "geo_bounding_box")) != NULL) {
    n_kinds++;
    c->kind = FC_GEO_BOX;
    rc = json_is_object(v) ? parse_geo_point(json_object_get(v, "top_left"), "top_left", &c->left,
                                             &c->top, err)
                           : qv_err_set(err, QV_EINVAL, "filter: geo_bounding_box must be an object");
    if (rc == QV_OK)
      rc = parse_geo_point(json_object_get(v, "bottom_right"), "bottom_right", &c->right,
                           &c->bottom, err);
  }
  if (rc == QV_OK && (v = json_object_get(o, "geo_polygon")) != NULL) {
    n_kinds++;
    c->kind = FC_GEO_POLYGON;
    json_t *ext = json_is_object(v) ? json_object_get(v, "exterior") : NULL;
    json_t *pts = json_is_object(ext) ? json_object_get(ext, "points") : NULL;
    if (!json_is_array(pts) || json_array_size(pts) < 4)
      return qv_err_set(err, QV_EINVAL,
                        "filter: geo_polygon.exterior.points needs at least 4 points");
    c->n_poly = (uint32_t)json_array_size(pts);
    c->poly = qv_malloc(sizeof(double) * 2 * c->n_poly);
    if (c->poly == NULL) return qv_err_set(err, QV_ENOMEM, "filter: no memory");
    for (uint32_t i = 0; rc == QV_OK && i < c->n_poly; i++)
      rc = parse_geo_point(json_array_get(pts, i), "polygon point", &c->poly[2 * i],
                           &c->poly[2 * i + 1], err);
  }
  if (rc == QV_OK && (v = json_object_get(o, "is_empty")) != NULL) {
    n_kinds++;
    c->kind = FC_IS_EMPTY;
  }
  if (rc == QV_OK && (v = json_object_get(o, "is_null")) != NULL) {
    n_kinds++;
    c->kind = FC_IS_NULL;
  }
  if (rc == QV_OK && n_kinds != 1)
    rc = qv_err_set(err, QV_EINVAL,
                    "filter: condition on \"%s\" needs exactly one of match, range, "
                    "geo_radius, geo_bounding_box, geo_polygon, values_count",
                    json_string_value(key));
  return rc;
}

static qv_rc parse_key_only(const json_t *o, const char *what, fcond *c, qv_err *err) {
  static const char *const keys[] = {"key", NULL};
  if (!json_is_object(o) || !only_keys(o, keys, what, err) ||
      !json_is_string(json_object_get(o, "key")))
    return qv_err_set(err, QV_EINVAL, "filter: %s must be {\"key\": \"...\"}", what);
  return filter_path_parse(json_string_value(json_object_get(o, "key")), &c->path, err);
}

static qv_rc parse_cond(const json_t *o, fcond *c, qv_err *err) {
  memset(c, 0, sizeof *c);
  if (!json_is_object(o)) return qv_err_set(err, QV_EINVAL, "filter: a condition must be an object");
  json_t *v;
  if (json_object_get(o, "key") != NULL) return parse_field(o, c, err);
  if (json_object_size(o) == 1 && (v = json_object_get(o, "is_empty")) != NULL) {
    c->kind = FC_IS_EMPTY;
    return parse_key_only(v, "is_empty", c, err);
  }
  if (json_object_size(o) == 1 && (v = json_object_get(o, "is_null")) != NULL) {
    c->kind = FC_IS_NULL;
    return parse_key_only(v, "is_null", c, err);
  }
  if (json_object_size(o) == 1 && (v = json_object_get(o, "has_id")) != NULL) {
    c->kind = FC_HAS_ID;
    if (!json_is_array(v)) return qv_err_set(err, QV_EINVAL, "filter: has_id must be an array");
    c->ids = qv_malloc((json_array_size(v) + 1) * sizeof *c->ids);
    if (c->ids == NULL) return qv_err_set(err, QV_ENOMEM, "filter: no memory");
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
      qv_rc rc = parse_id(e, &c->ids[c->n_ids], err);
      if (rc != QV_OK) return rc;
      c->n_ids++;
    }
    return QV_OK;
  }
  if (json_object_size(o) == 1 && (v = json_object_get(o, "has_vector")) != NULL) {
    c->kind = FC_HAS_VECTOR;
    if (!json_is_string(v)) return qv_err_set(err, QV_EINVAL, "filter: has_vector must be a string");
    c->vector_name = qv_strdup(json_string_value(v));
    return c->vector_name ? QV_OK : qv_err_set(err, QV_ENOMEM, "filter: no memory");
  }
  if (json_object_size(o) == 1 && (v = json_object_get(o, "nested")) != NULL) {
    static const char *const keys[] = {"key", "filter", NULL};
    c->kind = FC_NESTED;
    if (!json_is_object(v) || !only_keys(v, keys, "nested", err) ||
        !json_is_string(json_object_get(v, "key")))
      return qv_err_set(err, QV_EINVAL, "filter: nested must be {\"key\": ..., \"filter\": {...}}");
    qv_rc rc = filter_path_parse(json_string_value(json_object_get(v, "key")), &c->path, err);
    if (rc == QV_OK) rc = parse_filter(json_object_get(v, "filter"), &c->sub, err);
    return rc;
  }
  c->kind = FC_FILTER;
  return parse_filter(o, &c->sub, err);
}

static qv_rc parse_clause(const json_t *v, const char *name, fclause *cl, qv_err *err) {
  if (v == NULL || json_is_null(v)) return QV_OK;
  cl->present = true;
  size_t n = json_is_array(v) ? json_array_size(v) : 1;
  cl->conds = qv_calloc(n + 1, sizeof *cl->conds);
  if (cl->conds == NULL) return qv_err_set(err, QV_ENOMEM, "filter: no memory");
  for (size_t i = 0; i < n; i++) {
    qv_rc rc = parse_cond(json_is_array(v) ? json_array_get(v, i) : v, &cl->conds[i], err);
    cl->n = (uint32_t)i + 1; /* freed even when half built */
    if (rc != QV_OK) return rc;
  }
  (void)name;
  return QV_OK;
}

static qv_rc parse_filter(const json_t *j, qv_filter **out, qv_err *err) {
  static const char *const keys[] = {"must", "should", "must_not", "min_should", NULL};
  if (!json_is_object(j)) return qv_err_set(err, QV_EINVAL, "filter: a filter must be a JSON object");
  if (!only_keys(j, keys, "filter", err)) return QV_EINVAL;
  qv_filter *f = qv_calloc(1, sizeof *f);
  if (f == NULL) return qv_err_set(err, QV_ENOMEM, "filter: no memory");
  qv_rc rc = parse_clause(json_object_get(j, "must"), "must", &f->must, err);
  if (rc == QV_OK) rc = parse_clause(json_object_get(j, "should"), "should", &f->should, err);
  if (rc == QV_OK) rc = parse_clause(json_object_get(j, "must_not"), "must_not", &f->must_not, err);
  json_t *ms = json_object_get(j, "min_should");
  if (rc == QV_OK && ms != NULL && !json_is_null(ms)) {
    static const char *const mkeys[] = {"conditions", "min_count", NULL};
    json_t *mc = json_is_object(ms) ? json_object_get(ms, "min_count") : NULL;
    if (!json_is_object(ms) || !only_keys(ms, mkeys, "min_should", err) ||
        !json_is_integer(mc) || json_integer_value(mc) < 0 ||
        !json_is_array(json_object_get(ms, "conditions")))
      rc = qv_err_set(err, QV_EINVAL,
                      "filter: min_should must be {\"conditions\": [...], \"min_count\": n}");
    else {
      f->min_count = (uint32_t)json_integer_value(mc);
      rc = parse_clause(json_object_get(ms, "conditions"), "min_should", &f->min_should, err);
    }
  }
  if (rc != QV_OK) {
    qv_filter_free(f);
    return rc;
  }
  *out = f;
  return QV_OK;
}

qv_rc filter_from_json(const json_t *j, qv_filter **out, qv_err *err) {
  return parse_filter(j, out, err);
}

qv_rc qv_filter_parse(const char *text, size_t len, qv_filter **out, qv_err *err) {
  if (text == NULL) return qv_err_set(err, QV_EINVAL, "filter: no text");
  json_error_t je;
  json_t *j = json_loadb(text, len ? len : strlen(text), 0, &je);
  if (j == NULL) return qv_err_set(err, QV_EINVAL, "filter: invalid JSON: %s", je.text);
  qv_rc rc = parse_filter(j, out, err);
  json_decref(j);
  return rc;
}

/* ---- date-times -------------------------------------------------------------------- */

static int digits(const char *s, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i])) return 0;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 1;
}

/* days since 1970-01-01 of a proleptic Gregorian date */
static int64_t days_from_civil(int y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool filter_parse_datetime(const char *s, int64_t *out_us) {
  int y, mo, d, h = 0, mi = 0, sec = 0;
  if (strlen(s) < 10 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
      s[7] != '-' || !digits(s + 8, 2, &d))
    return false;
  if (mo < 1 || mo > 12 || d < 1 || d > 31) return false;
  const char *p = s + 10;
  int64_t frac_us = 0, offset_s = 0;
  if (*p == 'T' || *p == 't' || *p == ' ') {
    p++;
    if (!digits(p, 2, &h) || p[2] != ':' || !digits(p + 3, 2, &mi)) return false;
    p += 5;
    if (*p == ':') {
      if (!digits(p + 1, 2, &sec)) return false;
      p += 3;
    }
    if (*p == '.') {
      p++;
      int64_t scale = 100000;
      if (!isdigit((unsigned char)*p)) return false;
      while (isdigit((unsigned char)*p)) {
        frac_us += (*p - '0') * scale;
        scale /= 10;
        p++;
      }
    }
    if (*p == 'Z' || *p == 'z') {
      p++;
    } else if (*p == '+' || *p == '-') {
      int oh, om;
      int sign = *p == '-' ? -1 : 1;
      if (!digits(p + 1, 2, &oh)) return false;
      if (p[3] == ':' ? !digits(p + 4, 2, &om) : !digits(p + 3, 2, &om)) return false;
      p += p[3] == ':' ? 6 : 5;
      offset_s = sign * (oh * 3600 + om * 60);
    }
  }
  if (*p != 0 || h > 23 || mi > 59 || sec > 60) return false;
  int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_s;
  *out_us = t * 1000000 + frac_us;
  return true;
}

bool qv_datetime_parse(const char *s, int64_t *us) {
  return s != NULL && filter_parse_datetime(s, us);
}
