/* shardmap.c: reading and fenced compare-and-swap writing of a collection's
 * shard map (shardmap.h has the contract).
 *
 * Owns the storage of the map, not its meaning: the controller decides
 * what the shards look like, this file only makes sure each write is based
 * on the latest version and comes from the current controller. The fence
 * is one etcd txn with three compares — the controller key still has the
 * create_revision we got when we won the election (our token) and still
 * sits on our lease (so nobody rewrote it since), and the map's
 * mod_revision is the one we read — so the checks and the write cannot be
 * separated by another writer. */
#include "cluster/shardmap.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"

void shardmap_doc_free(shardmap_doc *d) {
  if (d == NULL) return;
  qv_free(d->json);
  memset(d, 0, sizeof *d);
}

static bool is_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > QV_NAME_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' || *s == '.'))
      return false;
  return true;
}

static qv_rc map_key(const char *prefix, const char *collection, char *buf,
                     size_t len, qv_err *err) {
  if (!is_name_ok(collection))
    return qv_err_set(err, QV_EINVAL, "shardmap: bad collection name \"%.64s\"",
                      collection);
  snprintf(buf, len, "%s/collections/%s/shardmap", prefix, collection);
  return QV_OK;
}

/* The "epoch" of a JSON text; false when it is not an object with an
 * integer epoch >= 1. */
static bool epoch_of(const char *json, size_t len, int64_t *epoch) {
  json_t *j = json_loadb(json, len, 0, NULL);
  json_t *e = json_object_get(j, "epoch");
  bool ok =
      json_is_object(j) && json_is_integer(e) && json_integer_value(e) >= 1;
  if (ok) *epoch = (int64_t)json_integer_value(e);
  json_decref(j);
  return ok;
}

qv_rc shardmap_read(etcd_client *c, const char *prefix, const char *collection,
                    shardmap_doc *out, qv_err *err) {
  char key[512];
  qv_rc rc = map_key(prefix, collection, key, sizeof key, err);
  if (rc != QV_OK) return rc;
  etcd_kvs r;
  rc = etcd_get(c, key, &r, err);
  if (rc != QV_OK) return rc;
  if (r.n == 0) {
    etcd_kvs_free(&r);
    return qv_err_set(err, QV_ENOTFOUND, "shardmap %s: no map yet", collection);
  }
  etcd_kv *kv = &r.kvs[0];
  int64_t epoch = 0;
  if (!epoch_of(kv->value, kv->value_len, &epoch)) {
    etcd_kvs_free(&r);
    return QV_CORRUPT(
        err, "shardmap %s: stored value is not JSON with an epoch", collection);
  }
  memset(out, 0, sizeof *out);
  out->json = kv->value; /* take it over */
  out->len = kv->value_len;
  kv->value = NULL;
  out->epoch = epoch;
  out->mod_revision = kv->mod_revision;
  etcd_kvs_free(&r);
  return QV_OK;
}

/* After a refused txn: says why, from the failure branch's two reads (when
 * the controller and the map are as expected, an extra guard failed). */
static qv_rc explain_refusal(const etcd_txn_result *r, const char *map_key_s,
                             const char *ctrl_key, int64_t token, int64_t lease,
                             const shardmap_doc *prev, const char *collection,
                             qv_err *err) {
  const etcd_kv *map = NULL, *ctrl = NULL;
  for (size_t i = 0; i < r->kvs.n; i++) {
    if (strcmp(r->kvs.kvs[i].key, map_key_s) == 0) map = &r->kvs.kvs[i];
    if (strcmp(r->kvs.kvs[i].key, ctrl_key) == 0) ctrl = &r->kvs.kvs[i];
  }
  if (ctrl == NULL || ctrl->create_revision != token || ctrl->lease != lease)
    return qv_err_set(
        err, QV_EBUSY,
        "shardmap %s: refused: no longer the controller (token %lld, "
        "controller now %.64s)",
        collection, (long long)token, ctrl ? ctrl->value : "nobody");
  if (prev ? map && map->mod_revision == prev->mod_revision : map == NULL)
    return qv_err_set(err, QV_EBUSY,
                      "shardmap %s: refused: a guard failed (the collection "
                      "was deleted or re-created)",
                      collection);
  if (prev == NULL)
    return qv_err_set(err, QV_EBUSY,
                      "shardmap %s: refused: a map exists already%s",
                      collection, map ? "" : " (and was deleted since)");
  int64_t now_epoch = 0;
  if (map) epoch_of(map->value, map->value_len, &now_epoch);
  return qv_err_set(
      err, QV_EBUSY,
      "shardmap %s: refused: stale epoch %lld (revision %lld); etcd holds "
      "epoch %lld (revision %lld)",
      collection, (long long)prev->epoch, (long long)prev->mod_revision,
      (long long)now_epoch, (long long)(map ? map->mod_revision : 0));
}

qv_rc shardmap_cas_write(mship *m, const char *collection,
                         const shardmap_doc *prev, const char *json,
                         int64_t *mod_revision, qv_err *err) {
  return shardmap_cas_write_ex(m, collection, prev, json, NULL, mod_revision,
                               err);
}

#define EXTRA_MAX 64u

qv_rc shardmap_cas_write_ex(mship *m, const char *collection,
                            const shardmap_doc *prev, const char *json,
                            const shardmap_extra *extra, int64_t *mod_revision,
                            qv_err *err) {
  size_t n_guards = extra ? extra->n_guards : 0;
  size_t n_ops = extra ? extra->n_ops : 0;
  if (n_guards > EXTRA_MAX || n_ops > EXTRA_MAX)
    return qv_err_set(err, QV_EINVAL,
                      "shardmap %s: more than %u guards or operations",
                      collection, EXTRA_MAX);
  char key[512], ctrl_key[512];
  qv_rc rc = map_key(mship_prefix(m), collection, key, sizeof key, err);
  if (rc != QV_OK) return rc;
  snprintf(ctrl_key, sizeof ctrl_key, "%s/controller", mship_prefix(m));
  int64_t epoch = 0, want = prev ? prev->epoch + 1 : 1;
  if (json == NULL || !epoch_of(json, strlen(json), &epoch))
    return qv_err_set(err, QV_EINVAL,
                      "shardmap %s: not a JSON object with an epoch >= 1",
                      collection);
  if (prev ? epoch != want : epoch < 1)
    return qv_err_set(err, QV_EINVAL, "shardmap %s: epoch %lld, expected %lld",
                      collection, (long long)epoch, (long long)want);
  mship_status st;
  mship_status_get(m, &st);
  if (!st.is_controller)
    return qv_err_set(err, QV_EBUSY,
                      "shardmap %s: refused: %s is not the controller",
                      collection, mship_node_id(m));
  int64_t token = st.controller_token, lease = st.lease;
  etcd_cmp cmp[3 + EXTRA_MAX] = {
      {.key = ctrl_key,
       .target = ETCD_CMP_CREATE,
       .result = ETCD_EQUAL,
       .number = token},
      {.key = ctrl_key,
       .target = ETCD_CMP_LEASE,
       .result = ETCD_EQUAL,
       .number = lease},
      {.key = key,
       .target = prev ? ETCD_CMP_MOD : ETCD_CMP_CREATE,
       .result = ETCD_EQUAL,
       .number = prev ? prev->mod_revision : 0},
  };
  for (size_t i = 0; i < n_guards; i++) cmp[3 + i] = extra->guards[i];
  etcd_op ops[1 + EXTRA_MAX];
  ops[0] = (etcd_op){.kind = ETCD_OP_PUT,
                     .key = key,
                     .value = json,
                     .value_len = strlen(json)};
  for (size_t i = 0; i < n_ops; i++) ops[1 + i] = extra->ops[i];
  etcd_op reads[2] = {{.kind = ETCD_OP_GET, .key = key},
                      {.kind = ETCD_OP_GET, .key = ctrl_key}};
  etcd_txn t = {.cmp = cmp,
                .n_cmp = 3 + n_guards,
                .success = ops,
                .n_success = 1 + n_ops,
                .failure = reads,
                .n_failure = 2};
  etcd_txn_result r;
  rc = etcd_txn_do(mship_client(m), &t, &r, err);
  if (rc != QV_OK) return rc;
  if (r.succeeded) {
    if (mod_revision) *mod_revision = r.revision;
  } else {
    rc =
        explain_refusal(&r, key, ctrl_key, token, lease, prev, collection, err);
  }
  etcd_kvs_free(&r.kvs);
  return rc;
}
