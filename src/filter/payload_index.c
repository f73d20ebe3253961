/* payload_index.c: building payload field indexes and turning conditions
 * into candidate rows; see payload_index.h. An index only ever adds rows
 * (a superset); integer and float indexes hold every JSON number, so a range
 * over an "integer" field still finds rows whose value is 10.5. */
#include "filter/payload_index.h"

#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"

static const char *type_names[] = {"keyword", "integer", "float", "bool", "datetime", "uuid"};

const char *pindex_type_name(pindex_type t) {
  return (unsigned)t < 6 ? type_names[t] : "?";
}

bool pindex_type_parse(const char *s, pindex_type *out) {
  for (int i = 0; s && i < 6; i++)
    if (strcmp(s, type_names[i]) == 0) {
      *out = (pindex_type)i;
      return true;
    }
  return false;
}

typedef struct num_entry {
  double key;
  uint32_t row;
} num_entry;

typedef struct str_entry {
  const char *s; /* points into the segment's cached payload JSON */
  uint32_t row;
} str_entry;

struct pindex {
  fpath path;
  pindex_type type;
  uint32_t n_rows;
  num_entry *nums;
  str_entry *strs;
  size_t n, cap;
  bool oom;
};

static bool is_text(pindex_type t) { return t == PINDEX_KEYWORD || t == PINDEX_UUID; }

typedef struct collect_ctx {
  pindex *ix;
  uint32_t row;
} collect_ctx;

static void push(pindex *ix, double key, const char *s, uint32_t row) {
  if (ix->n == ix->cap) {
    size_t ncap = ix->cap ? ix->cap * 2 : 1024;
    void *p = is_text(ix->type) ? qv_realloc(ix->strs, ncap * sizeof *ix->strs)
                                : qv_realloc(ix->nums, ncap * sizeof *ix->nums);
    if (p == NULL) {
      ix->oom = true;
      return;
    }
    if (is_text(ix->type))
      ix->strs = p;
    else
      ix->nums = p;
    ix->cap = ncap;
  }
  if (is_text(ix->type))
    ix->strs[ix->n++] = (str_entry){s, row};
  else
    ix->nums[ix->n++] = (num_entry){key, row};
}

static void collect(void *vctx, const json_t *v) {
  collect_ctx *c = vctx;
  pindex *ix = c->ix;
  switch (ix->type) {
  case PINDEX_KEYWORD:
  case PINDEX_UUID:
    if (json_is_string(v)) push(ix, 0, json_string_value(v), c->row);
    break;
  case PINDEX_INTEGER:
  case PINDEX_FLOAT:
    if (json_is_number(v)) push(ix, json_number_value(v), NULL, c->row);
    break;
  case PINDEX_BOOL:
    if (json_is_boolean(v)) push(ix, json_is_true(v) ? 1 : 0, NULL, c->row);
    break;
  case PINDEX_DATETIME: {
    int64_t us;
    if (json_is_string(v) && filter_parse_datetime(json_string_value(v), &us))
      push(ix, (double)us, NULL, c->row);
    break;
  }
  }
}

static int num_cmp(const void *a, const void *b) {
  const num_entry *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return x->row < y->row ? -1 : (x->row > y->row);
}

static int str_cmp(const void *a, const void *b) {
  const str_entry *x = a, *y = b;
  int c = strcmp(x->s, y->s);
  if (c) return c;
  return x->row < y->row ? -1 : (x->row > y->row);
}

qv_rc pindex_build(const char *field, pindex_type type, uint32_t n_rows,
                   pindex_payload_fn payload, void *ctx, pindex **out, qv_err *err) {
  pindex *ix = qv_calloc(1, sizeof *ix);
  if (ix == NULL) return qv_err_set(err, QV_ENOMEM, "payload index: no memory");
  ix->type = type;
  ix->n_rows = n_rows;
  qv_rc rc = filter_path_parse(field, &ix->path, err);
  for (uint32_t r = 0; rc == QV_OK && r < n_rows && !ix->oom; r++) {
    collect_ctx c = {ix, r};
    filter_path_values(payload(ctx, r), &ix->path, collect, &c);
  }
  if (rc == QV_OK && ix->oom)
    rc = qv_err_set(err, QV_ENOMEM, "payload index on %s: no memory", field);
  if (rc != QV_OK) {
    pindex_free(ix);
    return rc;
  }
  if (is_text(type))
    qsort(ix->strs, ix->n, sizeof *ix->strs, str_cmp);
  else
    qsort(ix->nums, ix->n, sizeof *ix->nums, num_cmp);
  *out = ix;
  return QV_OK;
}

void pindex_free(pindex *ix) {
  if (ix == NULL) return;
  filter_path_free(&ix->path);
  qv_free(ix->nums);
  qv_free(ix->strs);
  qv_free(ix);
}

uint32_t pindex_rows(const pindex *ix) { return ix->n_rows; }

uint64_t pindex_memory_bytes(const pindex *ix) {
  return sizeof *ix + ix->cap * (is_text(ix->type) ? sizeof(str_entry) : sizeof(num_entry));
}

void rowset_free(rowset *r) {
  qv_free(r->bits);
  memset(r, 0, sizeof *r);
}

static void set_row(rowset *out, uint32_t row) {
  uint64_t bit = 1ull << (row & 63);
  if (!(out->bits[row >> 6] & bit)) {
    out->bits[row >> 6] |= bit;
    out->count++;
  }
}

static bool all_of_type(const json_t *set, bool strings) {
  size_t i;
  const json_t *e;
  json_array_foreach(set, i, e) if (strings ? !json_is_string(e) : !json_is_integer(e)) return false;
  return true;
}

bool pindex_serves(pindex_type type, const fpath *path, const fcond *c) {
  if (!filter_path_eq(path, &c->path)) return false;
  switch (type) {
  case PINDEX_KEYWORD:
  case PINDEX_UUID:
    return (c->kind == FC_MATCH_VALUE && json_is_string(c->value)) ||
           (c->kind == FC_MATCH_ANY && all_of_type(c->set, true));
  case PINDEX_INTEGER:
    return (c->kind == FC_MATCH_VALUE && json_is_integer(c->value)) ||
           (c->kind == FC_MATCH_ANY && all_of_type(c->set, false)) || c->kind == FC_RANGE;
  case PINDEX_FLOAT: return c->kind == FC_RANGE;
  case PINDEX_BOOL: return c->kind == FC_MATCH_VALUE && json_is_boolean(c->value);
  case PINDEX_DATETIME: return c->kind == FC_DATETIME_RANGE;
  }
  return false;
}

/* First entry with key >= k (or > k when `after`). */
static size_t lower_num(const pindex *ix, double k, bool after) {
  size_t lo = 0, hi = ix->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    bool left = after ? ix->nums[mid].key <= k : ix->nums[mid].key < k;
    if (left)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static void add_num_range(const pindex *ix, size_t from, size_t to, rowset *out) {
  for (size_t i = from; i < to; i++) set_row(out, ix->nums[i].row);
}

static void add_num_eq(const pindex *ix, double k, rowset *out) {
  add_num_range(ix, lower_num(ix, k, false), lower_num(ix, k, true), out);
}

static void add_str_eq(const pindex *ix, const char *s, rowset *out) {
  size_t lo = 0, hi = ix->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (strcmp(ix->strs[mid].s, s) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (size_t i = lo; i < ix->n && strcmp(ix->strs[i].s, s) == 0; i++)
    set_row(out, ix->strs[i].row);
}

void pindex_candidates(const pindex *ix, const fcond *c, rowset *out) {
  if (c->kind == FC_MATCH_VALUE) {
    if (json_is_string(c->value))
      add_str_eq(ix, json_string_value(c->value), out);
    else if (json_is_boolean(c->value))
      add_num_eq(ix, json_is_true(c->value) ? 1 : 0, out);
    else
      add_num_eq(ix, (double)json_integer_value(c->value), out);
    return;
  }
  if (c->kind == FC_MATCH_ANY) {
    size_t i;
    const json_t *e;
    json_array_foreach(c->set, i, e) {
      if (json_is_string(e))
        add_str_eq(ix, json_string_value(e), out);
      else
        add_num_eq(ix, (double)json_integer_value(e), out);
    }
    return;
  }
  /* FC_RANGE, FC_DATETIME_RANGE: the tightest bounds, inclusive at both
   * ends (a superset; the filter itself decides strictness) */
  const fbounds *b = &c->range;
  size_t from = 0, to = ix->n;
  if (b->has_gt) from = lower_num(ix, b->gt, false);
  if (b->has_gte) {
    size_t f = lower_num(ix, b->gte, false);
    if (f > from) from = f;
  }
  if (b->has_lt) to = lower_num(ix, b->lt, true);
  if (b->has_lte) {
    size_t t = lower_num(ix, b->lte, true);
    if (t < to) to = t;
  }
  if (from < to) add_num_range(ix, from, to, out);
}
