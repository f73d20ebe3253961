/* filter.h: Qdrant's payload filter language — the parsed tree and its
 * evaluation against one point (id + payload JSON).
 *
 * The tree is built once per request by filter_parse.c and is immutable
 * afterwards, so any number of search threads may evaluate it at once.
 * Semantics follow Qdrant's reference checker (see docs/filters.md): missing
 * keys fail match/range/geo, arrays match when any element does, should: []
 * is false, must: [] is true. */
#ifndef QV_FILTER_FILTER_H
#define QV_FILTER_FILTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "quiver.h"

typedef enum fcond_kind {
  FC_FILTER,       /* a nested Filter */
  FC_MATCH_VALUE,  /* key + match.value */
  FC_MATCH_ANY,    /* key + match.any */
  FC_MATCH_EXCEPT, /* key + match.except */
  FC_MATCH_TEXT,   /* key + match.text (substring without a text index) */
  FC_RANGE,        /* key + range over numbers */
  FC_DATETIME_RANGE, /* key + range with RFC 3339 bounds */
  FC_VALUES_COUNT, /* key + values_count */
  FC_GEO_RADIUS,
  FC_GEO_BOX,
  FC_GEO_POLYGON,
  FC_IS_EMPTY,
  FC_IS_NULL,
  FC_HAS_ID,
  FC_HAS_VECTOR,
  FC_NESTED, /* key + filter applied per array element */
} fcond_kind;

/* A key path: "a.b[].c", "a[0]". */
typedef struct fpath_step {
  char *name;    /* member name, or NULL for an index step */
  int32_t index; /* -1: "[]" (every element); >= 0: that element */
  bool is_index;
} fpath_step;

typedef struct fpath {
  fpath_step *steps;
  uint32_t n;
} fpath;

typedef struct fbounds {
  bool has_gt, has_gte, has_lt, has_lte;
  double gt, gte, lt, lte;
} fbounds;

struct qv_filter;

typedef struct fcond {
  fcond_kind kind;
  fpath path;
  /* match */
  json_t *value;   /* FC_MATCH_VALUE: string, integer or bool */
  json_t *set;     /* FC_MATCH_ANY / EXCEPT: array of strings or integers */
  char *text;      /* FC_MATCH_TEXT */
  fbounds range;   /* FC_RANGE, FC_VALUES_COUNT, FC_DATETIME_RANGE (microseconds) */
  /* geo */
  double lon, lat, radius;           /* radius */
  double left, top, right, bottom;   /* box */
  double *poly;                      /* exterior ring lon,lat pairs */
  uint32_t n_poly;
  /* has_id */
  qv_point_id *ids;
  uint32_t n_ids;
  char *vector_name;      /* has_vector */
  struct qv_filter *sub;  /* FC_FILTER, FC_NESTED */
} fcond;

typedef struct fclause {
  fcond *conds;
  uint32_t n;
  bool present;
} fclause;

struct qv_filter {
  fclause must, should, must_not, min_should;
  uint32_t min_count;
};

/* Parses a Filter object. Errors name the offending key: QV_EINVAL. */
qv_rc filter_from_json(const json_t *j, struct qv_filter **out, qv_err *err);

/* Does the point (id, payload object; payload may be NULL = {}) match?
 * `has_vector` conditions hold only for the unnamed vector. */
bool filter_match(const struct qv_filter *f, const qv_point_id *id,
                  const json_t *payload);

/* The point being checked, for conditions that look beyond its payload:
 * its id and which vectors it has (`has_vector(ctx, name)`, name "" for
 * the unnamed vector; NULL: only the unnamed one). */
typedef struct filter_point {
  const qv_point_id *id;
  bool (*has_vector)(void *ctx, const char *name);
  void *ctx;
} filter_point;

bool filter_match_point(const struct qv_filter *f, const filter_point *pt,
                        const json_t *payload);

/* Key paths, shared with the payload indexes. */
qv_rc filter_path_parse(const char *key, fpath *out, qv_err *err);
void filter_path_free(fpath *p);
bool filter_path_eq(const fpath *a, const fpath *b);
/* Calls fn for every value at path `p` of `payload`, arrays opened one
 * level (the values conditions are checked against). */
void filter_path_values(const json_t *payload, const fpath *p,
                        void (*fn)(void *ctx, const json_t *v), void *ctx);

/* Parses RFC 3339 date-times ("2023-02-08T10:49:00Z", fractional seconds,
 * "+01:00" offsets, a space instead of T, or a plain date) to microseconds
 * since the epoch. Returns false when `s` is not one. */
bool filter_parse_datetime(const char *s, int64_t *out_us);

#endif
