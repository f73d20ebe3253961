/* cluster_coll.c: collection-level requests on a distributed collection
 * (create, info, exists) in cluster mode.
 *
 * A distributed collection's config and shard map live in etcd
 * (src/cluster/node.h); every node answers these from its watched copy.
 * Invariant: names ending in `.s<digits>` are reserved for the local shard
 * copies (`c.s<k>`), so a user collection cannot collide with one.
 * Not owned: the data path (routes_cluster.c, cluster_read.c). */
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "server/cluster_int.h"

#define CREATE_WAIT_MS 15000

/* Whether `name` ends in ".s<digits>" (reserved for shard copies). */
static bool is_shard_name(const char *name) {
  const char *d = strrchr(name, '.');
  if (d == NULL || d[1] != 's' || d[2] == 0) return false;
  for (const char *p = d + 2; *p; p++)
    if (*p < '0' || *p > '9') return false;
  return true;
}

/* ---- collections ------------------------------------------------------------------ */

static void coll_create(srv_req *r) {
  const char *name = r->args[0];
  if (is_shard_name(name)) {
    srv_wrong_input(r, "in cluster mode collection names ending in `.s<digits>` are reserved "
                       "for shard copies: `%s`", name);
    return;
  }
  json_t *body = srv_body(r, false);
  if (body == NULL) return;
  uint64_t shards = 1, rf = 1, wcf = 1;
  if (!srv_field_u64(r, body, "shard_number", false, &shards) ||
      !srv_field_u64(r, body, "replication_factor", false, &rf) ||
      !srv_field_u64(r, body, "write_consistency_factor", false, &wcf))
    goto out;
  if (shards < 1 || shards > CL_SHARDS_MAX || rf < 1 || rf > CL_RF_MAX || wcf < 1 || wcf > rf) {
    srv_wrong_input(r, "shard_number must be 1..%u, replication_factor 1..%u and "
                    "write_consistency_factor 1..replication_factor", CL_SHARDS_MAX, CL_RF_MAX);
    goto out;
  }
  json_object_del(body, "shard_number");
  json_object_del(body, "replication_factor");
  json_object_del(body, "write_consistency_factor");
  size_t len;
  char *params = jsonio_dumps(body, &len);
  qv_err err = {0};
  qv_rc rc = params ? cl_coll_create(clr_node(), name, params, (uint32_t)shards, (uint32_t)rf,
                                           (uint32_t)wcf, &err)
                    : QV_ENOMEM;
  qv_free(params);
  if (rc == QV_EEXIST) srv_fail(r, 409, "Wrong input: Collection `%s` already exists!", name);
  else if (rc != QV_OK) srv_fail(r, 503, "Service unavailable: etcd: %s", err.msg);
  else if (!cl_wait_map(clr_node(), name, 1, CREATE_WAIT_MS))
    srv_fail(r, 503, "Service unavailable: no controller placed `%s` within %d s", name,
             CREATE_WAIT_MS / 1000);
  else srv_ok(r, json_true());
out:
  json_decref(body);
}

static void coll_info(srv_req *r, const cl_coll *c) {
  json_t *params = json_loads(c->params, 0, NULL);
  if (params == NULL) params = json_object();
  json_object_set_new(params, "shard_number", json_integer(c->shard_number));
  json_object_set_new(params, "replication_factor", json_integer(c->rf));
  json_object_set_new(params, "write_consistency_factor", json_integer(c->wcf));
  srv_ok(r, json_pack("{s:s, s:s, s:{s:o}}", "status", "green", "optimizer_status", "ok",
                      "config", "params", params));
}


bool clc_route_global(srv_req *r) {
  if (router_routes[r->route].fn == h_coll_create) {
    coll_create(r);
    return true;
  }
  return false;
}

bool clc_route(srv_req *r, const cl_coll *c) {
  srv_handler fn = router_routes[r->route].fn;
  if (fn == h_coll_get) coll_info(r, c);
  else if (fn == h_coll_exists) srv_ok(r, json_pack("{s:b}", "exists", 1));
  else return false;
  return true;
}
