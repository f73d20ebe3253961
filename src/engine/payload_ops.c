/* payload_ops.c: set / overwrite / delete keys / clear of payloads, and the
 * filtered count, scroll and delete — the public API over
 * shard_rewrite_payloads and shard_select.
 *
 * Semantics (Qdrant's): set merges top-level keys, a key given as null is
 * removed, and with `key` ("a.b") the merge happens inside that nested object,
 * created if missing; overwrite replaces; delete removes dotted paths; clear
 * leaves {}. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "engine/engine.h"
#include "engine/id.h"
#include "engine/shard_read.h"
#include "filter/filter.h"

typedef struct op_ctx {
  json_t *patch;           /* set / overwrite */
  const char *key;         /* set: nested object path, or NULL */
  const char *const *keys; /* delete */
  size_t n_keys;
} op_ctx;

static char *dump(const json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s == NULL) return NULL;
  char *d = qv_strdup(s); /* payload text is qv_free'd by the shard */
  free(s);
  return d;
}

static json_t *copy_or_new(const json_t *old) {
  return old ? json_deep_copy(old) : json_object();
}

/* Walks (creating objects as needed) to the object at dotted path `key`. */
static json_t *object_at(json_t *root, const char *key) {
  json_t *cur = root;
  char *path = qv_strdup(key);
  if (path == NULL) return NULL;
  for (char *save = NULL, *part = strtok_r(path, ".", &save); part && cur;
       part = strtok_r(NULL, ".", &save)) {
    json_t *next = json_object_get(cur, part);
    if (!json_is_object(next)) {
      next = json_object();
      if (next == NULL || json_object_set_new(cur, part, next) != 0) next = NULL;
    }
    cur = next;
  }
  qv_free(path);
  return cur;
}

static qv_rc set_fn(void *vctx, const json_t *old, char **out, qv_err *err) {
  op_ctx *c = vctx;
  json_t *doc = copy_or_new(old);
  json_t *target = doc && c->key ? object_at(doc, c->key) : doc;
  if (target == NULL) {
    json_decref(doc);
    return qv_err_set(err, QV_ENOMEM, "set payload: no memory");
  }
  const char *k;
  json_t *v;
  json_object_foreach(c->patch, k, v) {
    if (json_is_null(v))
      json_object_del(target, k);
    else
      json_object_set(target, k, v);
  }
  *out = dump(doc);
  json_decref(doc);
  return *out ? QV_OK : qv_err_set(err, QV_ENOMEM, "set payload: no memory");
}

static qv_rc overwrite_fn(void *vctx, const json_t *old, char **out, qv_err *err) {
  op_ctx *c = vctx;
  *out = dump(c->patch);
  return *out ? QV_OK : qv_err_set(err, QV_ENOMEM, "overwrite payload: no memory");
}

static void delete_path(json_t *doc, const char *key) {
  char *path = qv_strdup(key);
  if (path == NULL) return;
  json_t *cur = doc;
  char *last = strrchr(path, '.');
  if (last != NULL) {
    *last = 0;
    for (char *save = NULL, *part = strtok_r(path, ".", &save); part && cur;
         part = strtok_r(NULL, ".", &save))
      cur = json_object_get(cur, part);
  }
  if (json_is_object(cur)) json_object_del(cur, last ? last + 1 : path);
  qv_free(path);
}

static qv_rc delete_fn(void *vctx, const json_t *old, char **out, qv_err *err) {
  op_ctx *c = vctx;
  json_t *doc = copy_or_new(old);
  if (doc == NULL) return qv_err_set(err, QV_ENOMEM, "delete payload: no memory");
  for (size_t i = 0; i < c->n_keys; i++) delete_path(doc, c->keys[i]);
  *out = dump(doc);
  json_decref(doc);
  return *out ? QV_OK : qv_err_set(err, QV_ENOMEM, "delete payload: no memory");
}

static qv_rc clear_fn(void *vctx, const json_t *old, char **out, qv_err *err) {
  *out = NULL;
  return QV_OK;
}

static uint32_t shard_of(const qv_collection *c, const qv_point_id *id) {
  return c->n_shards == 1 ? 0 : (uint32_t)(id_hash(id) % c->n_shards);
}

/* Runs fn over the selected points of every shard. */
static qv_rc rewrite(qv_collection *c, const qv_point_id *ids, size_t n,
                     const qv_filter *filter, payload_fn fn, op_ctx *ctx, qv_err *err) {
  qv_rc rc = QV_OK;
  qv_point_id *part = NULL;
  if (ids != NULL && c->n_shards > 1) {
    part = qv_malloc((n + 1) * sizeof *part);
    if (part == NULL) return qv_err_set(err, QV_ENOMEM, "payload update: no memory");
  }
  for (uint32_t s = 0; rc == QV_OK && s < c->n_shards; s++) {
    const qv_point_id *sel = ids;
    size_t m = n;
    if (part != NULL) {
      m = 0;
      for (size_t i = 0; i < n; i++)
        if (shard_of(c, &ids[i]) == s) part[m++] = ids[i];
      sel = part;
      if (m == 0) continue;
    }
    rc = shard_rewrite_payloads(c->shards[s], sel, m, filter, fn, ctx, NULL, err);
  }
  qv_free(part);
  return rc;
}

static qv_rc parse_object(const char *payload, const char *what, json_t **out,
                          qv_err *err) {
  json_error_t je;
  json_t *j = payload ? json_loads(payload, JSON_REJECT_DUPLICATES, &je) : NULL;
  if (!json_is_object(j)) {
    json_decref(j);
    return qv_err_set(err, QV_EINVAL, "%s: payload must be a JSON object%s%s", what,
                      payload ? ": " : "", payload ? je.text : "");
  }
  *out = j;
  return QV_OK;
}

qv_rc qv_payload_set(qv_collection *c, const qv_point_id *ids, size_t n,
                     const qv_filter *filter, const char *payload, const char *key,
                     qv_err *err) {
  op_ctx ctx = {0};
  if (key != NULL && (*key == 0 || strstr(key, "..") || key[0] == '.' ||
                      key[strlen(key) - 1] == '.' || strchr(key, '[')))
    return qv_err_set(err, QV_EINVAL, "set payload: key \"%s\" is not a path like a.b", key);
  qv_rc rc = parse_object(payload, "set payload", &ctx.patch, err);
  if (rc != QV_OK) return rc;
  ctx.key = key;
  rc = rewrite(c, ids, n, filter, set_fn, &ctx, err);
  json_decref(ctx.patch);
  return rc;
}

qv_rc qv_payload_overwrite(qv_collection *c, const qv_point_id *ids, size_t n,
                           const qv_filter *filter, const char *payload, qv_err *err) {
  op_ctx ctx = {0};
  qv_rc rc = parse_object(payload, "overwrite payload", &ctx.patch, err);
  if (rc != QV_OK) return rc;
  rc = rewrite(c, ids, n, filter, overwrite_fn, &ctx, err);
  json_decref(ctx.patch);
  return rc;
}

qv_rc qv_payload_delete_keys(qv_collection *c, const qv_point_id *ids, size_t n,
                             const qv_filter *filter, const char *const *keys,
                             size_t n_keys, qv_err *err) {
  for (size_t i = 0; i < n_keys; i++)
    if (keys[i] == NULL || keys[i][0] == 0)
      return qv_err_set(err, QV_EINVAL, "delete payload: key %zu is empty", i);
  op_ctx ctx = {.keys = keys, .n_keys = n_keys};
  return rewrite(c, ids, n, filter, delete_fn, &ctx, err);
}

qv_rc qv_payload_clear(qv_collection *c, const qv_point_id *ids, size_t n,
                       const qv_filter *filter, qv_err *err) {
  op_ctx ctx = {0};
  return rewrite(c, ids, n, filter, clear_fn, &ctx, err);
}

/* ---- filtered reads and deletes ------------------------------------------------ */

qv_rc qv_count_filtered(qv_collection *c, const qv_filter *filter, uint64_t *out,
                        qv_err *err) {
  uint64_t total = 0;
  for (uint32_t s = 0; s < c->n_shards; s++) {
    uint64_t n;
    qv_rc rc = shard_count_filtered(c->shards[s], filter, &n, err);
    if (rc != QV_OK) return rc;
    total += n;
  }
  *out = total;
  return QV_OK;
}

qv_rc qv_delete_filtered(qv_collection *c, const qv_filter *filter,
                         size_t *n_deleted, qv_err *err) {
  size_t total = 0;
  for (uint32_t s = 0; s < c->n_shards; s++) {
    qv_point_id *ids;
    size_t n, d = 0;
    qv_rc rc = shard_select(c->shards[s], filter, &ids, &n, err);
    if (rc != QV_OK) return rc;
    if (n) rc = shard_delete(c->shards[s], ids, n, &d, err);
    qv_free(ids);
    if (rc != QV_OK) return rc;
    total += d;
  }
  if (n_deleted) *n_deleted = total;
  return QV_OK;
}

/* ---- ordered scroll ------------------------------------------------------------ */

typedef struct ordered {
  double v;
  qv_point_id id;
} ordered;

typedef struct pick_ctx {
  bool desc, have;
  double best;
} pick_ctx;

static void pick_value(void *vctx, const json_t *v) {
  pick_ctx *p = vctx;
  double x;
  int64_t us;
  if (json_is_number(v))
    x = json_number_value(v);
  else if (json_is_string(v) && filter_parse_datetime(json_string_value(v), &us))
    x = (double)us;
  else
    return;
  if (!p->have || (p->desc ? x > p->best : x < p->best)) p->best = x;
  p->have = true;
}

static int ordered_cmp(const void *a, const void *b, void *ctx) {
  const ordered *x = a, *y = b;
  bool desc = *(const bool *)ctx;
  if (x->v != y->v) return (x->v < y->v) == !desc ? -1 : 1;
  return qv_id_cmp(&x->id, &y->id);
}

qv_rc qv_scroll_ordered(qv_collection *c, const qv_filter *filter, const char *key,
                        bool descending, const double *start_from, size_t limit,
                        bool with_vector, bool with_payload, qv_records *out,
                        double **order_values, qv_err *err) {
  memset(out, 0, sizeof *out);
  if (order_values) *order_values = NULL;
  if (limit == 0) return qv_err_set(err, QV_EINVAL, "scroll: limit must be >= 1");
  fpath path;
  qv_rc rc = filter_path_parse(key ? key : "", &path, err);
  if (rc != QV_OK) return rc;
  ordered *all = NULL;
  size_t n = 0, cap = 0;
  for (uint32_t s = 0; rc == QV_OK && s < c->n_shards; s++) {
    shard *sh = c->shards[s];
    pthread_rwlock_rdlock(&sh->lock);
    for (size_t i = 0; rc == QV_OK && i < sh->map.cap; i++) {
      idmap_entry *e = &sh->map.slots[i];
      if (e->seg == NULL) continue;
      const json_t *payload = segment_payload_json(e->seg, e->row);
      if (filter && !segment_filter_match(e->seg, e->row, filter)) continue;
      pick_ctx pc = {descending, false, 0};
      filter_path_values(payload, &path, pick_value, &pc);
      if (!pc.have) continue;
      if (start_from && (descending ? pc.best > *start_from : pc.best < *start_from)) continue;
      if (n == cap) {
        cap = cap ? cap * 2 : 1024;
        ordered *g = qv_realloc(all, cap * sizeof *all);
        if (g == NULL) {
          rc = qv_err_set(err, QV_ENOMEM, "scroll: no memory");
          break;
        }
        all = g;
      }
      all[n++] = (ordered){pc.best, e->id};
    }
    pthread_rwlock_unlock(&sh->lock);
  }
  filter_path_free(&path);
  if (rc == QV_OK && n > 1) qsort_r(all, n, sizeof *all, ordered_cmp, &descending);
  size_t m = n < limit ? n : limit;
  qv_point_id *ids = rc == QV_OK ? qv_malloc((m + 1) * sizeof *ids) : NULL;
  double *vals = rc == QV_OK ? malloc((m + 1) * sizeof *vals) : NULL;
  if (rc == QV_OK && (ids == NULL || vals == NULL))
    rc = qv_err_set(err, QV_ENOMEM, "scroll: no memory");
  for (size_t i = 0; rc == QV_OK && i < m; i++) ids[i] = all[i].id;
  if (rc == QV_OK) rc = qv_get(c, ids, m, with_vector, with_payload, out, err);
  /* a point deleted since it was ordered is missing from `out`: align */
  size_t k = 0;
  for (size_t i = 0; rc == QV_OK && i < m && k < out->n; i++)
    if (id_eq(&all[i].id, &out->items[k].id)) vals[k++] = all[i].v;
  qv_free(all);
  qv_free(ids);
  if (rc == QV_OK && order_values)
    *order_values = vals;
  else
    free(vals);
  return rc;
}
