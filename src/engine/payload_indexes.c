/* payload_indexes.c: the public payload index API — definitions kept in the
 * collection's indexes.json (checksummed, replaced atomically) and handed to
 * every shard; the indexes themselves are built per segment on first use
 * (segment_index.c). */
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "engine/engine.h"
#include "engine/json_file.h"
#include "filter/filter.h"

/* Definition ids only need to be unique within the process. */
static uint64_t g_next_id;

const char *qv_index_type_name(qv_index_type t) { return pindex_type_name((pindex_type)t); }

qv_rc qv_index_type_parse(const char *name, qv_index_type *out, qv_err *err) {
  pindex_type t;
  if (!pindex_type_parse(name, &t))
    return qv_err_set(err, QV_EINVAL,
                      "index type \"%.40s\": expected keyword, integer, float, bool, datetime "
                      "or uuid", name ? name : "");
  *out = (qv_index_type)t;
  return QV_OK;
}

static void indexes_path(const qv_collection *c, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/indexes.json", c->dir);
}

static qv_rc add_def(idxdefs *d, const char *field, pindex_type type, qv_err *err) {
  if (d->n == PINDEX_MAX)
    return qv_err_set(err, QV_EINVAL, "at most %u payload indexes per collection", PINDEX_MAX);
  if (strlen(field) >= sizeof d->d[0].field)
    return qv_err_set(err, QV_EINVAL, "index field name of %zu bytes is too long", strlen(field));
  idxdef *x = &d->d[d->n];
  memset(x, 0, sizeof *x);
  qv_rc rc = filter_path_parse(field, &x->path, err);
  if (rc != QV_OK) return rc;
  snprintf(x->field, sizeof x->field, "%s", field);
  x->type = type;
  x->id = __atomic_add_fetch(&g_next_id, 1, __ATOMIC_RELAXED);
  d->n++;
  return QV_OK;
}

static idxdefs *defs_new(void) {
  idxdefs *d = qv_calloc(1, sizeof *d);
  if (d != NULL) d->refs = 1;
  return d;
}

static qv_rc save(qv_collection *c, const idxdefs *d, qv_err *err) {
  json_t *arr = json_array();
  for (uint32_t i = 0; arr && i < d->n; i++)
    json_array_append_new(arr, json_pack("{s:s, s:s}", "field", d->d[i].field, "type",
                                         pindex_type_name(d->d[i].type)));
  json_t *o = arr ? json_pack("{s:i, s:o}", "format", 1, "indexes", arr) : NULL;
  if (o == NULL) return qv_err_set(err, QV_ENOMEM, "indexes: no memory");
  char path[PATH_MAX];
  indexes_path(c, path, sizeof path);
  qv_rc rc = json_file_write(path, o, err);
  json_decref(o);
  return rc;
}

/* Installs `d` (taking over the caller's reference); idx_mu held or open. */
static void publish(qv_collection *c, idxdefs *d) {
  for (uint32_t s = 0; s < c->n_shards; s++) shard_set_indexes(c->shards[s], d);
  idxdefs *old = c->defs;
  c->defs = d;
  idxdefs_unref(old);
}

qv_rc collection_load_indexes(qv_collection *c, qv_err *err) {
  char path[PATH_MAX];
  indexes_path(c, path, sizeof path);
  json_t *o;
  qv_rc rc = json_file_read(path, &o, err);
  if (rc == QV_ENOTFOUND) return QV_OK; /* no indexes */
  if (rc != QV_OK) return rc;
  idxdefs *d = defs_new();
  json_t *arr = json_object_get(o, "indexes");
  if (d == NULL) rc = qv_err_set(err, QV_ENOMEM, "indexes: no memory");
  if (rc == QV_OK && (!json_is_array(arr) || json_array_size(arr) > PINDEX_MAX))
    rc = QV_CORRUPT(err, "%s: \"indexes\" is not a list of at most %u", path, PINDEX_MAX);
  for (size_t i = 0; rc == QV_OK && i < json_array_size(arr); i++) {
    json_t *e = json_array_get(arr, i);
    const char *field = json_string_value(json_object_get(e, "field"));
    pindex_type t;
    if (field == NULL || !pindex_type_parse(json_string_value(json_object_get(e, "type")), &t))
      rc = QV_CORRUPT(err, "%s: index %zu is malformed", path, i);
    else if (add_def(d, field, t, err) != QV_OK)
      rc = QV_CORRUPT(err, "%s: index %zu: %s", path, i, err ? err->msg : "invalid");
  }
  json_decref(o);
  if (rc != QV_OK) {
    idxdefs_unref(d);
    return rc;
  }
  publish(c, d);
  return QV_OK;
}

/* Copies the current definitions except `field` into a new list *out. */
static qv_rc copy_without(const idxdefs *cur, const char *field, bool *found, idxdefs **out,
                          qv_err *err) {
  idxdefs *d = defs_new();
  *found = false;
  if (d == NULL) return qv_err_set(err, QV_ENOMEM, "indexes: no memory");
  for (uint32_t i = 0; cur && i < cur->n; i++) {
    if (strcmp(cur->d[i].field, field) == 0) {
      *found = true;
      continue;
    }
    d->d[d->n] = cur->d[i];
    memset(&d->d[d->n].path, 0, sizeof d->d[d->n].path);
    qv_rc rc = filter_path_parse(cur->d[i].field, &d->d[d->n].path, err);
    if (rc != QV_OK) {
      idxdefs_unref(d);
      return rc;
    }
    d->n++;
  }
  *out = d;
  return QV_OK;
}

qv_rc qv_payload_index_create(qv_collection *c, const char *field, qv_index_type type,
                              qv_err *err) {
  if (field == NULL || *field == 0)
    return qv_err_set(err, QV_EINVAL, "payload index: empty field name");
  if ((unsigned)type > QV_INDEX_UUID)
    return qv_err_set(err, QV_EINVAL, "payload index: unknown type %d", (int)type);
  fpath p;
  qv_rc rc = filter_path_parse(field, &p, err);
  if (rc != QV_OK) return rc;
  filter_path_free(&p);
  pthread_mutex_lock(&c->idx_mu);
  for (uint32_t i = 0; c->defs && i < c->defs->n; i++)
    if (strcmp(c->defs->d[i].field, field) == 0 && c->defs->d[i].type == (pindex_type)type) {
      pthread_mutex_unlock(&c->idx_mu);
      return QV_OK; /* already there */
    }
  bool found;
  idxdefs *d = NULL;
  rc = copy_without(c->defs, field, &found, &d, err);
  if (rc == QV_OK) rc = add_def(d, field, (pindex_type)type, err);
  if (rc == QV_OK) rc = save(c, d, err);
  if (rc == QV_OK)
    publish(c, d);
  else
    idxdefs_unref(d);
  pthread_mutex_unlock(&c->idx_mu);
  return rc;
}

qv_rc qv_payload_index_drop(qv_collection *c, const char *field, qv_err *err) {
  if (field == NULL) return qv_err_set(err, QV_EINVAL, "payload index: no field");
  pthread_mutex_lock(&c->idx_mu);
  bool found;
  idxdefs *d = NULL;
  qv_rc rc = copy_without(c->defs, field, &found, &d, err);
  if (rc == QV_OK && !found)
    rc = qv_err_set(err, QV_ENOTFOUND, "no payload index on \"%.200s\"", field);
  if (rc == QV_OK) rc = save(c, d, err);
  if (rc == QV_OK)
    publish(c, d);
  else
    idxdefs_unref(d);
  pthread_mutex_unlock(&c->idx_mu);
  return rc;
}

typedef struct count_ctx {
  pindex_type type;
  bool hit;
} count_ctx;

static void typed_value(void *vctx, const json_t *v) {
  count_ctx *c = vctx;
  switch (c->type) {
  case PINDEX_KEYWORD:
  case PINDEX_UUID: c->hit |= json_is_string(v); break;
  case PINDEX_INTEGER:
  case PINDEX_FLOAT: c->hit |= json_is_number(v); break;
  case PINDEX_BOOL: c->hit |= json_is_boolean(v); break;
  case PINDEX_DATETIME: {
    int64_t us;
    c->hit |= json_is_string(v) && filter_parse_datetime(json_string_value(v), &us);
    break;
  }
  }
}

qv_rc qv_payload_index_list(qv_collection *c, qv_payload_index_info **out, size_t *n,
                            qv_err *err) {
  pthread_mutex_lock(&c->idx_mu);
  idxdefs *d = idxdefs_ref(c->defs);
  pthread_mutex_unlock(&c->idx_mu);
  size_t m = d ? d->n : 0;
  qv_payload_index_info *v = calloc(m + 1, sizeof *v);
  if (v == NULL) {
    idxdefs_unref(d);
    return qv_err_set(err, QV_ENOMEM, "indexes: no memory");
  }
  for (size_t i = 0; i < m; i++) {
    snprintf(v[i].field, sizeof v[i].field, "%s", d->d[i].field);
    v[i].type = (qv_index_type)d->d[i].type;
    for (uint32_t s = 0; s < c->n_shards; s++) {
      shard *sh = c->shards[s];
      pthread_rwlock_rdlock(&sh->lock);
      for (size_t k = 0; k < sh->map.cap; k++) {
        idmap_entry *e = &sh->map.slots[k];
        if (e->seg == NULL) continue;
        count_ctx cc = {d->d[i].type, false};
        filter_path_values(segment_payload_json(e->seg, e->row), &d->d[i].path, typed_value, &cc);
        v[i].points += cc.hit;
      }
      pthread_rwlock_unlock(&sh->lock);
    }
  }
  idxdefs_unref(d);
  *out = v;
  *n = m;
  return QV_OK;
}
