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
