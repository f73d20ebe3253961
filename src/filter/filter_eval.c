/* filter_eval.c: evaluating a parsed filter against one point.
 *
 * Values at a key path are gathered first (objects walked by name, "[]"
 * fans out over array elements, "[i]" picks one; a name step on an array
 * yields nothing), then arrays among them are opened one level, and a
 * condition holds when any of the resulting elements satisfies it. Read-only
 * over the filter and the payload: safe from any number of threads. */
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "engine/id.h"
#include "filter/filter.h"

typedef struct vals {
  const json_t **v;
  size_t n, cap;
  const json_t *inline_buf[16];
} vals;

static void vals_init(vals *s) {
  s->v = s->inline_buf;
  s->n = 0;
  s->cap = 16;
}

static void vals_free(vals *s) {
  if (s->v != s->inline_buf) qv_free(s->v);
}

static void vals_push(vals *s, const json_t *j) {
  if (s->n == s->cap) {
    size_t ncap = s->cap * 2;
    const json_t **nv = qv_malloc(ncap * sizeof *nv);
    if (nv == NULL) return; /* out of memory: the value is skipped */
    memcpy(nv, s->v, s->n * sizeof *nv);
    if (s->v != s->inline_buf) qv_free(s->v);
    s->v = nv;
    s->cap = ncap;
  }
  s->v[s->n++] = j;
}

static void walk(const json_t *cur, const fpath *p, uint32_t step, vals *out) {
  if (step == p->n) {
    vals_push(out, cur);
    return;
  }
  const fpath_step *st = &p->steps[step];
  if (!st->is_index) {
    if (!json_is_object(cur)) return;
    const json_t *m = json_object_get(cur, st->name);
    if (m != NULL) walk(m, p, step + 1, out);
    return;
  }
  if (!json_is_array(cur)) return;
  if (st->index >= 0) {
    const json_t *e = json_array_get(cur, (size_t)st->index);
    if (e != NULL) walk(e, p, step + 1, out);
    return;
  }
  size_t i;
  const json_t *e;
  json_array_foreach(cur, i, e) walk(e, p, step + 1, out);
}

/* The values at the path, arrays opened one level. */
static void gather(const json_t *payload, const fpath *p, vals *raw, vals *flat) {
  if (payload != NULL) walk(payload, p, 0, raw);
  for (size_t i = 0; i < raw->n; i++) {
    if (json_is_array(raw->v[i])) {
      size_t k;
      const json_t *e;
      json_array_foreach(raw->v[i], k, e) vals_push(flat, e);
    } else {
      vals_push(flat, raw->v[i]);
    }
  }
}

void filter_path_values(const json_t *payload, const fpath *p,
                        void (*fn)(void *ctx, const json_t *v), void *ctx) {
  vals raw, flat;
  vals_init(&raw);
  vals_init(&flat);
  gather(payload, p, &raw, &flat);
  for (size_t i = 0; i < flat.n; i++) fn(ctx, flat.v[i]);
  vals_free(&raw);
  vals_free(&flat);
}

static bool in_bounds(const fbounds *b, double x) {
  if (b->has_gt && !(x > b->gt)) return false;
  if (b->has_gte && !(x >= b->gte)) return false;
  if (b->has_lt && !(x < b->lt)) return false;
  if (b->has_lte && !(x <= b->lte)) return false;
  return true;
}

static bool scalar_eq(const json_t *a, const json_t *b) {
  if (json_is_string(a) && json_is_string(b)) return strcmp(json_string_value(a), json_string_value(b)) == 0;
  if (json_is_integer(a) && json_is_integer(b)) return json_integer_value(a) == json_integer_value(b);
  if (json_is_boolean(a) && json_is_boolean(b)) return json_is_true(a) == json_is_true(b);
  return false;
}

static bool in_set(const json_t *set, const json_t *e) {
  size_t i;
  const json_t *s;
  json_array_foreach(set, i, s) if (scalar_eq(s, e)) return true;
  return false;
}

static bool geo_of(const json_t *e, double *lon, double *lat) {
  const json_t *a = json_object_get(e, "lon"), *b = json_object_get(e, "lat");
  if (!json_is_number(a) || !json_is_number(b)) return false;
  *lon = json_number_value(a);
  *lat = json_number_value(b);
  return true;
}

static double haversine_m(double lon1, double lat1, double lon2, double lat2) {
  const double r = 6371008.8, d2r = M_PI / 180;
  double dlat = (lat2 - lat1) * d2r, dlon = (lon2 - lon1) * d2r;
  double a = sin(dlat / 2) * sin(dlat / 2) +
             cos(lat1 * d2r) * cos(lat2 * d2r) * sin(dlon / 2) * sin(dlon / 2);
  return 2 * r * asin(sqrt(a < 1 ? a : 1));
}

static bool in_polygon(const fcond *c, double lon, double lat) {
  bool inside = false;
  for (uint32_t i = 0, j = c->n_poly - 1; i < c->n_poly; j = i++) {
    double xi = c->poly[2 * i], yi = c->poly[2 * i + 1];
    double xj = c->poly[2 * j], yj = c->poly[2 * j + 1];
    if (((yi > lat) != (yj > lat)) && lon < (xj - xi) * (lat - yi) / (yj - yi) + xi)
      inside = !inside;
  }
  return inside;
}

static bool element_matches(const fcond *c, const json_t *e) {
  switch (c->kind) {
  case FC_MATCH_VALUE: return scalar_eq(c->value, e);
  case FC_MATCH_ANY: return in_set(c->set, e);
  case FC_MATCH_EXCEPT: return !json_is_null(e) && !in_set(c->set, e);
  case FC_MATCH_TEXT:
    return json_is_string(e) && strstr(json_string_value(e), c->text) != NULL;
  case FC_RANGE: return json_is_number(e) && in_bounds(&c->range, json_number_value(e));
  case FC_DATETIME_RANGE: {
    int64_t us;
    return json_is_string(e) && filter_parse_datetime(json_string_value(e), &us) &&
           in_bounds(&c->range, (double)us);
  }
  case FC_GEO_RADIUS: {
    double lon, lat;
    return geo_of(e, &lon, &lat) && haversine_m(c->lon, c->lat, lon, lat) <= c->radius;
  }
  case FC_GEO_BOX: {
    double lon, lat;
    if (!geo_of(e, &lon, &lat) || lat > c->top || lat < c->bottom) return false;
    if (c->left <= c->right) return lon >= c->left && lon <= c->right;
    return lon >= c->left || lon <= c->right; /* box across the antimeridian */
  }
  case FC_GEO_POLYGON: {
    double lon, lat;
    return geo_of(e, &lon, &lat) && in_polygon(c, lon, lat);
  }
  default: return false;
  }
}

static bool match(const qv_filter *f, const filter_point *pt, const json_t *payload);

static bool cond_holds(const fcond *c, const filter_point *pt, const json_t *payload) {
  switch (c->kind) {
  case FC_FILTER: return match(c->sub, pt, payload);
  case FC_HAS_ID:
    for (uint32_t i = 0; i < c->n_ids; i++)
      if (id_eq(&c->ids[i], pt->id)) return true;
    return false;
  case FC_HAS_VECTOR:
    /* Without a callback the point is known to have only its unnamed vector. */
    return pt->has_vector ? pt->has_vector(pt->ctx, c->vector_name) : c->vector_name[0] == 0;
  default: break;
  }
  vals raw, flat;
  vals_init(&raw);
  vals_init(&flat);
  gather(payload, &c->path, &raw, &flat);
  bool r = false;
  switch (c->kind) {
  case FC_IS_EMPTY:
    r = true;
    for (size_t i = 0; i < raw.n && r; i++)
      r = json_is_null(raw.v[i]) || (json_is_array(raw.v[i]) && json_array_size(raw.v[i]) == 0);
    break;
  case FC_IS_NULL:
    for (size_t i = 0; i < raw.n && !r; i++) r = json_is_null(raw.v[i]);
    break;
  case FC_VALUES_COUNT: {
    size_t n = 0;
    for (size_t i = 0; i < flat.n; i++) n += !json_is_null(flat.v[i]);
    r = in_bounds(&c->range, (double)n);
    break;
  }
  case FC_NESTED:
    for (size_t i = 0; i < flat.n && !r; i++)
      r = json_is_object(flat.v[i]) && match(c->sub, pt, flat.v[i]);
    break;
  default:
    for (size_t i = 0; i < flat.n && !r; i++) r = element_matches(c, flat.v[i]);
  }
  vals_free(&raw);
  vals_free(&flat);
  return r;
}

static bool match(const qv_filter *f, const filter_point *pt, const json_t *payload) {
  for (uint32_t i = 0; i < f->must.n; i++)
    if (!cond_holds(&f->must.conds[i], pt, payload)) return false;
  for (uint32_t i = 0; i < f->must_not.n; i++)
    if (cond_holds(&f->must_not.conds[i], pt, payload)) return false;
  if (f->should.present) {
    bool any = false;
    for (uint32_t i = 0; i < f->should.n && !any; i++)
      any = cond_holds(&f->should.conds[i], pt, payload);
    if (!any) return false;
  }
  if (f->min_should.present) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < f->min_should.n && n < f->min_count; i++)
      n += cond_holds(&f->min_should.conds[i], pt, payload);
    if (n < f->min_count) return false;
  }
  return true;
}

bool filter_match(const qv_filter *f, const qv_point_id *id, const json_t *payload) {
  filter_point pt = {id, NULL, NULL};
  return match(f, &pt, payload);
}

bool filter_match_point(const qv_filter *f, const filter_point *pt, const json_t *payload) {
  return match(f, pt, payload);
}
