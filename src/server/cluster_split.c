/* cluster_split.c: the write operations of a distributed collection, and
 * how one write request is cut into the parts each shard applies.
 *
 * Each operation is a single-node handler run on a shard's local copy
 * (routes_cluster.c sends the part to the shard's primary, which applies
 * and replicates it). Points go to shard ring_shard_of(id); a write that
 * names points (`points` as ids or as objects with `id`, or upsert's
 * column form `batch`) sends each shard only its own; one that selects by
 * filter, or concerns the whole collection (a payload index), goes to
 * every shard whole.
 *
 * Invariant: the parts hold every point of the request exactly once and in
 * the request's order, and every other field of the body unchanged, so a
 * shard's copy ends as a single node would.
 * Not owned: sending, sequencing and replication (routes_cluster.c). */
#include <string.h>

#include "base/alloc.h"
#include "cluster/ring.h"
#include "server/cluster_int.h"

static const struct {
  const char *name;     /* on the wire: /internal/shards/{c}/{k}/{name} */
  const char *batch_as; /* its name inside POST .../points/batch */
  srv_handler fn;
} ops[CLW_N] = {
    [CLW_UPSERT] = {"upsert", "upsert", h_upsert},
    [CLW_DELETE] = {"delete", "delete", h_delete},
    [CLW_PAYLOAD_SET] = {"payload_set", "set_payload", h_payload_set},
    [CLW_PAYLOAD_OVERWRITE] = {"payload_overwrite", "overwrite_payload", h_payload_overwrite},
    [CLW_PAYLOAD_DELETE] = {"payload_delete", "delete_payload", h_payload_delete},
    [CLW_PAYLOAD_CLEAR] = {"payload_clear", "clear_payload", h_payload_clear},
    [CLW_VECTORS_UPDATE] = {"vectors_update", "update_vectors", h_vectors_update},
    [CLW_VECTORS_DELETE] = {"vectors_delete", "delete_vectors", h_vectors_delete},
    [CLW_INDEX_CREATE] = {"index_create", NULL, h_index_create},
    [CLW_INDEX_DELETE] = {"index_delete", NULL, h_index_delete},
};

const char *clw_name(int op) { return op >= 0 && op < CLW_N ? ops[op].name : "?"; }

srv_handler clw_handler(int op) { return op >= 0 && op < CLW_N ? ops[op].fn : NULL; }

int clw_parse(const char *name) {
  for (int i = 0; i < CLW_N; i++)
    if (!strcmp(ops[i].name, name)) return i;
  return -1;
}

int clw_of_handler(srv_handler fn) {
  for (int i = 0; i < CLW_N; i++)
    if (ops[i].fn == fn) return i;
  return -1;
}

int clw_of_batch_name(const char *name) {
  for (int i = 0; i < CLW_N; i++)
    if (ops[i].batch_as && !strcmp(ops[i].batch_as, name)) return i;
  return -1;
}

/* parts[k] = a copy of body with `key` replaced by an empty array. */
static json_t *part_of(json_t **parts, uint32_t k, const json_t *body, const char *key) {
  if (parts[k] == NULL) {
    parts[k] = json_copy((json_t *)body);
    if (parts[k]) json_object_set_new(parts[k], key, json_array());
  }
  return parts[k] ? json_object_get(parts[k], key) : NULL;
}

static bool oom(srv_req *r) { return srv_fail(r, 500, "Service internal error: out of memory"); }

/* Upsert's column form: {"batch": {"ids", "vectors" (list or per name),
 * "payloads"}}, cut by row. */
static bool split_columns(srv_req *r, const json_t *body, uint32_t ns, json_t **parts) {
  const json_t *b = json_object_get(body, "batch");
  const json_t *ids = json_object_get(b, "ids");
  const json_t *vecs = json_object_get(b, "vectors");
  const json_t *pays = json_object_get(b, "payloads");
  if (!json_is_array(ids)) return srv_format_err(r, "batch.ids: expected a sequence");
  for (size_t i = 0; i < json_array_size(ids); i++) {
    qv_point_id id;
    if (!srv_id_parse(r, json_array_get(ids, i), "batch.ids[]", &id)) return false;
    uint32_t k = ring_shard_of(&id, ns);
    if (parts[k] == NULL) {
      json_t *nb = json_object();
      json_object_set_new(nb, "ids", json_array());
      if (json_is_array(vecs)) json_object_set_new(nb, "vectors", json_array());
      else if (json_is_object(vecs)) {
        json_t *m = json_object();
        const char *name;
        json_t *col;
        json_object_foreach((json_t *)vecs, name, col) json_object_set_new(m, name, json_array());
        json_object_set_new(nb, "vectors", m);
      } else if (vecs) json_object_set(nb, "vectors", (json_t *)vecs); /* the handler says why */
      if (json_is_array(pays)) json_object_set_new(nb, "payloads", json_array());
      parts[k] = json_copy((json_t *)body);
      if (parts[k] == NULL || nb == NULL) {
        json_decref(nb);
        return oom(r);
      }
      json_object_set_new(parts[k], "batch", nb);
    }
    json_t *nb = json_object_get(parts[k], "batch");
    json_array_append(json_object_get(nb, "ids"), json_array_get(ids, i));
    if (json_is_array(vecs))
      json_array_append(json_object_get(nb, "vectors"), json_array_get(vecs, i));
    else if (json_is_object(vecs)) {
      const char *name;
      json_t *col;
      json_object_foreach((json_t *)vecs, name, col)
        if (json_array_get(col, i))
          json_array_append(json_object_get(json_object_get(nb, "vectors"), name),
                            json_array_get(col, i));
    }
    if (json_is_array(pays) && json_array_get(pays, i))
      json_array_append(json_object_get(nb, "payloads"), json_array_get(pays, i));
  }
  return true;
}

bool clw_split(srv_req *r, int op, const json_t *body, uint32_t ns, json_t **parts) {
  if (op == CLW_UPSERT && json_is_object(json_object_get(body, "batch")) &&
      !json_object_get(body, "points"))
    return split_columns(r, body, ns, parts);
  const json_t *pts = json_object_get(body, "points");
  bool by_id = op != CLW_INDEX_CREATE && op != CLW_INDEX_DELETE && json_is_array(pts);
  if (op == CLW_UPSERT && !by_id)
    return srv_format_err(r, "missing field `points` (or `batch`)");
  if (!by_id) { /* by filter, or the whole collection: every shard, whole */
    for (uint32_t k = 0; k < ns; k++)
      if ((parts[k] = json_copy((json_t *)body)) == NULL) return oom(r);
    return true;
  }
  bool objects = op == CLW_UPSERT || op == CLW_VECTORS_UPDATE;
  for (size_t i = 0; i < json_array_size(pts); i++) {
    const json_t *v = json_array_get(pts, i);
    qv_point_id id;
    if (!srv_id_parse(r, objects ? json_object_get(v, "id") : v,
                      objects ? "points[].id" : "points[]", &id))
      return false;
    json_t *list = part_of(parts, ring_shard_of(&id, ns), body, "points");
    if (list == NULL) return oom(r);
    json_array_append(list, (json_t *)v);
  }
  return true;
}
