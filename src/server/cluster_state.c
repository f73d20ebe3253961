/* cluster_state.c: cluster mode's documents and admin calls — GET /cluster
 * (Qdrant's shape), GET /collections/{c}/cluster (Qdrant's
 * CollectionClusterInfo plus epoch, primary, term and pinned),
 * POST /collections/{c}/cluster (Qdrant's shard operations: move_shard,
 * replicate_shard, drop_replica, abort_transfer, and Quiver's
 * unpin_shard), GET /cluster/state
 * (everything the dashboard draws: members and leases, every collection's
 * map with replica states, load against the cap, transfer reports,
 * moves_left to the target placement, draining nodes, this node's event
 * ring and its transfers and shard sequence numbers), and
 * POST /cluster/nodes/{id}/drain|undrain.
 *
 * Reads only: the node's watched view (src/cluster/node.h) and the local
 * engine for point counts; the writes are the drain mark and the shard
 * operations, both keys in etcd that the controller acts on (a shard
 * operation is checked here against this node's view with the
 * controller's own function, cl_plan_op, so a bad one is refused with its
 * reason before it is submitted, then decided again by the controller
 * against the current map). Does not own the data path (routes_cluster.c)
 * or transfers (cluster_xfer.c).
 * Without --cluster the two collection/cluster documents describe the one
 * local node. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "cluster/plan.h"
#include "cluster/ring.h"
#include "server/cluster_int.h"

#define OP_WAIT_S_DEFAULT 10
#define OP_WAIT_S_MAX 600

static const char *state_name(cl_rstate st) {
  return st == CL_DEAD ? "dead" : st == CL_PARTIAL ? "partial" : "insync";
}

static json_t *peer_json(const char *node_id) { return json_integer((json_int_t)cl_peer_id(node_id)); }

/* GET /cluster in Qdrant's shape; the controller stands in for the Raft
 * leader. */
void clr_cluster_info(srv_req *r) {
  mship_status st;
  mship_status_get(cl_node_mship(clr_node()), &st);
  mship_view v = {0};
  qv_err err = {0};
  if (mship_view_get(cl_node_mship(clr_node()), &v, &err) != QV_OK) {
    srv_fail(r, 503, "Service unavailable: %s", err.msg);
    return;
  }
  json_t *peers = json_object();
  for (size_t i = 0; i < v.n; i++) {
    char uri[400];
    snprintf(uri, sizeof uri, "http://%s/", v.members[i].addr ? v.members[i].addr : "");
    json_object_set_new(peers, v.members[i].node_id, json_pack("{s:s}", "uri", uri));
  }
  json_t *leader = st.controller[0] ? peer_json(st.controller) : json_null();
  srv_ok(r, json_pack("{s:s, s:o, s:o, s:{s:i, s:i, s:i, s:o, s:s, s:b}, s:{s:s}, s:{}}",
                      "status", "enabled", "peer_id", peer_json(cl_node_id(clr_node())), "peers",
                      peers, "raft_info", "term", 0, "commit", 0, "pending_operations", 0,
                      "leader", leader, "role", st.is_controller ? "Leader" : "Follower",
                      "is_voter", 1, "consensus_thread_status", "consensus_thread_status",
                      "working", "message_send_failures"));
  mship_view_free(&v);
}

static uint64_t local_count(srv *s, const char *coll, uint32_t k) {
  char sn[CL_NAME_MAX + 16];
  clr_shard_name(coll, k, sn, sizeof sn);
  qv_collection *h = NULL;
  uint64_t n = 0;
  if (qv_collection_get(s->db, sn, &h, NULL) == QV_OK) {
    if (qv_count(h, &n, NULL) != QV_OK) n = 0;
    qv_collection_release(h);
  }
  return n;
}

static void coll_cluster_update(srv_req *r);

/* The transfer report of shard k of c when it is about copy `to`. */
static const cl_xfer *report_of(const cl_coll *c, uint32_t k, const char *to, int64_t xfer) {
  for (size_t i = 0; i < c->n_xfers; i++)
    if (c->xfers[i].shard == k && c->xfers[i].xfer == xfer && !strcmp(c->xfers[i].to, to))
      return &c->xfers[i];
  return NULL;
}

/* GET /collections/{c}/cluster in Qdrant's shape (CollectionClusterInfo).
 * Quiver adds "epoch" and, per shard copy, "primary", "term" and, for a
 * shard an operator placed, "pinned". POST goes to coll_cluster_update. */
void h_coll_cluster(srv_req *r) {
  if (!strcmp(r->method, "POST")) {
    coll_cluster_update(r);
    return;
  }
  if (clr_node() == NULL) {
    srv_coll sc;
    if (!srv_coll_open(r, &sc)) return;
    uint64_t n = 0;
    if (qv_count(sc.c, &n, NULL) != QV_OK) n = 0;
    srv_coll_close(&sc);
    srv_ok(r, json_pack("{s:i, s:i, s:[{s:i, s:o, s:s}], s:[], s:[]}", "peer_id", 0,
                        "shard_count", 1, "local_shards", "shard_id", 0, "points_count",
                        jsonio_u64(n), "state", "Active", "remote_shards", "shard_transfers"));
    return;
  }
  cl_coll c;
  if (cl_coll_get(clr_node(), r->args[0], &c) != QV_OK || !c.has_map) {
    cl_coll_free(&c);
    srv_fail(r, 404, "Not found: Collection `%s` doesn't exist!", r->args[0]);
    return;
  }
  json_t *local = json_array(), *remote = json_array();
  for (uint32_t k = 0; k < c.shard_number; k++) {
    const cl_shard *sh = &c.shards[k];
    for (uint32_t i = 0; i < sh->n_reps; i++) {
      const cl_replica *rp = &sh->reps[i];
      const char *state = rp->state == CL_DEAD      ? "Dead"
                          : rp->state == CL_PARTIAL ? "Partial"
                                                    : "Active";
      bool primary = !strcmp(rp->node, sh->primary);
      json_t *o;
      if (!strcmp(rp->node, cl_node_id(clr_node())))
        json_array_append_new(local, o = json_pack("{s:i, s:o, s:s, s:b, s:I}", "shard_id", (int)k,
                                                   "points_count",
                                                   jsonio_u64(local_count(r->s, c.name, k)),
                                                   "state", state, "primary", primary, "term",
                                                   (json_int_t)sh->term));
      else
        json_array_append_new(remote, o = json_pack("{s:i, s:o, s:s, s:b, s:I}", "shard_id",
                                                    (int)k, "peer_id", peer_json(rp->node),
                                                    "state", state, "primary", primary, "term",
                                                    (json_int_t)sh->term));
      if (o && sh->is_pinned) json_object_set_new(o, "pinned", json_true());
    }
  }
  json_t *transfers = json_array();
  for (uint32_t k = 0; k < c.shard_number; k++)
    for (uint32_t i = 0; i < c.shards[k].n_reps; i++) {
      const cl_replica *rp = &c.shards[k].reps[i];
      if (rp->state != CL_PARTIAL) continue;
      json_t *t = json_pack("{s:i, s:o, s:o, s:b, s:s}", "shard_id", (int)k, "from",
                            peer_json(c.shards[k].primary), "to", peer_json(rp->node), "sync", 0,
                            "method", "stream_records");
      const cl_xfer *x = report_of(&c, k, rp->node, rp->xfer);
      char comment[160];
      if (t && x) {
        snprintf(comment, sizeof comment, "%s: %llu of %llu points", x->phase,
                 (unsigned long long)x->copied, (unsigned long long)x->total);
        json_object_set_new(t, "comment", json_string(comment));
      }
      json_array_append_new(transfers, t);
    }
  srv_ok(r, json_pack("{s:o, s:i, s:o, s:o, s:o, s:I}", "peer_id",
                      peer_json(cl_node_id(clr_node())), "shard_count", (int)c.shard_number,
                      "local_shards", local, "remote_shards", remote, "shard_transfers",
                      transfers, "epoch", (json_int_t)c.epoch));
  cl_coll_free(&c);
}

/* Copies that differ from the target placement over the live, non-draining
 * members (adds + removes; 0 = balanced, every copy insync); -1 when no
 * target can be computed. A pinned shard's target is its copies that are
 * not leaving (plan.h rule 8). */
static int moves_to_target(const cl_coll *c, const mship_view *v) {
  const char **ids = qv_calloc(v->n ? v->n : 1, sizeof *ids);
  size_t n = 0;
  for (size_t i = 0; ids && i < v->n; i++)
    if (!cl_is_draining(clr_node(), v->members[i].node_id)) ids[n++] = v->members[i].node_id;
  ring_opts ro;
  ring_opts_init(&ro);
  ro.rf = c->rf;
  ro.salt = c->name;
  ring_placement *p = NULL;
  int moves = -1;
  if (n > 0 && ring_place(ids, n, c->shard_number, &ro, &p, NULL) == QV_OK) {
    moves = 0;
    for (uint32_t k = 0; k < c->shard_number; k++) {
      const cl_shard *sh = &c->shards[k];
      if (sh->is_pinned) {
        for (uint32_t j = 0; j < sh->n_reps; j++)
          moves += sh->reps[j].is_leaving || sh->reps[j].state != CL_INSYNC;
        continue;
      }
      for (uint32_t j = 0; j < sh->n_reps; j++)
        moves += !ring_holds(p, k, sh->reps[j].node) || sh->reps[j].state != CL_INSYNC;
      for (uint32_t j = 0; j < p->rf; j++) {
        bool held = false;
        for (uint32_t i = 0; i < sh->n_reps; i++)
          held |= !strcmp(sh->reps[i].node, ring_replica(p, k, j));
        moves += !held;
      }
    }
  }
  ring_placement_free(p);
  qv_free(ids);
  return moves;
}

/* GET /cluster/state: everything the dashboard draws (docs/cluster.md). */
void h_cluster_state(srv_req *r) {
  if (clr_node() == NULL) {
    srv_ok(r, json_pack("{s:b}", "enabled", 0));
    return;
  }
  mship *m = cl_node_mship(clr_node());
  mship_status st;
  mship_status_get(m, &st);
  mship_view v = {0};
  qv_err err = {0};
  if (mship_view_get(m, &v, &err) != QV_OK) {
    srv_fail(r, 503, "Service unavailable: %s", err.msg);
    return;
  }
  json_t *members = json_array();
  for (size_t i = 0; i < v.n; i++) {
    int64_t ttl = -1;
    if (etcd_lease_ttl(mship_client(m), v.members[i].lease, &ttl, NULL) != QV_OK) ttl = -1;
    json_array_append_new(
        members, json_pack("{s:s, s:o, s:s, s:I, s:I, s:b}", "node_id", v.members[i].node_id,
                           "peer_id", peer_json(v.members[i].node_id), "addr",
                           v.members[i].addr ? v.members[i].addr : "", "lease",
                           (json_int_t)v.members[i].lease, "lease_ttl_left_s", (json_int_t)ttl,
                           "controller", !strcmp(st.controller, v.members[i].node_id)));
  }
  json_t *colls = json_object();
  char **names = NULL;
  size_t count = 0;
  cl_coll_names(clr_node(), &names, &count);
  for (size_t i = 0; i < count; i++) {
    cl_coll c;
    if (cl_coll_get(clr_node(), names[i], &c) != QV_OK) continue;
    json_t *shards = json_array(), *load = json_object();
    for (uint32_t k = 0; c.has_map && k < c.shard_number; k++) {
      const cl_shard *sh = &c.shards[k];
      json_t *reps = json_array();
      for (uint32_t j = 0; j < sh->n_reps; j++) {
        const cl_replica *rp = &sh->reps[j];
        json_t *ro = json_pack("{s:s, s:s}", "node", rp->node, "state", state_name(rp->state));
        if (ro && rp->is_leaving) json_object_set_new(ro, "leaving", json_true());
        json_array_append_new(reps, ro);
        if (rp->state == CL_INSYNC) {
          json_int_t was = json_integer_value(json_object_get(load, rp->node));
          json_object_set_new(load, rp->node, json_integer(was + 1));
        }
      }
      json_t *so = json_pack("{s:i, s:I, s:s, s:o}", "id", (int)k, "term", (json_int_t)sh->term,
                             "primary", sh->primary, "replicas", reps);
      if (so && sh->is_pinned) json_object_set_new(so, "pinned", json_true());
      json_array_append_new(shards, so);
    }
    json_t *xfers = json_array();
    int moves_left = c.has_map ? moves_to_target(&c, &v) : -1;
    for (size_t j = 0; j < c.n_xfers; j++) {
      const cl_xfer *x = &c.xfers[j];
      json_array_append_new(
          xfers, json_pack("{s:i, s:s, s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:I}", "shard",
                           (int)x->shard, "from", x->from, "to", x->to, "xfer",
                           (json_int_t)x->xfer, "term", (json_int_t)x->term, "phase", x->phase,
                           "copied", (json_int_t)x->copied, "total", (json_int_t)x->total,
                           "started_ms", (json_int_t)x->started_ms, "updated_ms",
                           (json_int_t)x->updated_ms));
    }
    json_object_set_new(
        colls, c.name,
        json_pack("{s:b, s:I, s:i, s:i, s:i, s:o, s:o, s:o, s:i}", "placed", c.has_map, "epoch",
                  (json_int_t)c.epoch, "shard_number", (int)c.shard_number,
                  "replication_factor", (int)c.rf, "load_cap",
                  (int)cl_load_cap(c.shard_number * c.rf, (uint32_t)v.n), "load", load,
                  "shards", shards, "transfers", xfers, "moves_left", moves_left));
    cl_coll_free(&c);
  }
  cl_names_free(names, count);
  json_t *draining = json_array();
  if (cl_drain_list(clr_node(), &names, &count) == QV_OK) {
    for (size_t i = 0; i < count; i++) json_array_append_new(draining, json_string(names[i]));
    cl_names_free(names, count);
  }
  const char *after = srv_query(r, "events_after");
  char *ev = cl_events_json(clr_node(), after ? strtoull(after, NULL, 10) : 0);
  json_t *events = ev ? json_loads(ev, 0, NULL) : NULL;
  qv_free(ev);
  srv_ok(r, json_pack("{s:b, s:s, s:o, s:s, s:b, s:b, s:I, s:i, s:o, s:o, s:o, s:o, s:o}",
                      "enabled", 1, "node_id", cl_node_id(clr_node()), "peer_id",
                      peer_json(cl_node_id(clr_node())), "controller", st.controller,
                      "is_controller", st.is_controller, "fenced", st.is_fenced, "incarnation",
                      (json_int_t)st.incarnation, "lease_ttl_s", (int)cl_node_ttl_s(clr_node()),
                      "members", members, "collections", colls, "draining", draining, "events",
                      events ? events : json_array(), "local", clx_state_json()));
  mship_view_free(&v);
}

/* POST /cluster/nodes/{id}/drain | undrain: marks a node draining (the
 * controller moves every copy off it; the node may be stopped once the
 * answer of GET .../drain shows no copies left) or clears the mark. Any
 * node takes it; the mark lives in etcd. */
void h_cluster_node_op(srv_req *r) {
  if (clr_node() == NULL) {
    srv_fail(r, 404, "Not found: this node is not in cluster mode");
    return;
  }
  const char *id = r->args[0], *op = r->args[1];
  if (!strcmp(id, "self")) id = cl_node_id(clr_node());
  bool on = !strcmp(op, "drain");
  if (!on && strcmp(op, "undrain")) {
    srv_fail(r, 404, "Not found: node operation %s (drain, undrain)", op);
    return;
  }
  qv_err err = {0};
  qv_rc rc = cl_drain_set(clr_node(), id, on, &err);
  if (rc == QV_EINVAL) {
    srv_wrong_input(r, "bad node id `%s`", id);
    return;
  }
  if (rc != QV_OK) {
    srv_fail(r, 503, "Service unavailable: etcd: %s", err.msg);
    return;
  }
  /* Copies still held, over every collection (what the operator waits for). */
  uint64_t held = 0;
  char **names = NULL;
  size_t count = 0;
  cl_coll_names(clr_node(), &names, &count);
  for (size_t i = 0; i < count; i++) {
    cl_coll c;
    if (cl_coll_get(clr_node(), names[i], &c) != QV_OK) continue;
    for (uint32_t k = 0; c.has_map && k < c.shard_number; k++)
      for (uint32_t j = 0; j < c.shards[k].n_reps; j++)
        held += !strcmp(c.shards[k].reps[j].node, id);
    cl_coll_free(&c);
  }
  cl_names_free(names, count);
  cl_event(clr_node(), "node %s %s", id, on ? "marked draining" : "no longer draining");
  srv_ok(r, json_pack("{s:s, s:b, s:I}", "node_id", id, "draining", on, "copies_held",
                      (json_int_t)held));
}

/* ---- POST /collections/{c}/cluster --------------------------------------------------- */

/* Reads a peer id field (Qdrant's u64) into a node id. */
static bool peer_field(srv_req *r, const json_t *o, const char *key, char *node, size_t cap) {
  uint64_t id = 0;
  if (!srv_field_u64(r, o, key, true, &id)) return false;
  snprintf(node, cap, "%llu", (unsigned long long)id);
  return true;
}

/* The operation of a ClusterOperations body into *op; false after
 * answering 400/422. */
static bool parse_op(srv_req *r, const json_t *body, cl_op *op) {
  static const struct {
    const char *key;
    cl_op_kind kind;
  } kinds[] = {{"move_shard", CL_OP_MOVE},     {"replicate_shard", CL_OP_REPLICATE},
               {"drop_replica", CL_OP_DROP},   {"abort_transfer", CL_OP_ABORT},
               {"unpin_shard", CL_OP_UNPIN}};
  const char *key = NULL;
  json_t *v = NULL;
  if (json_object_size(body) != 1) {
    srv_format_err(r, "expected exactly one of `move_shard`, `replicate_shard`, "
                      "`abort_transfer`, `drop_replica`, `unpin_shard`");
    return false;
  }
  json_object_foreach((json_t *)body, key, v) break;
  int kk = -1;
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (!strcmp(key, kinds[i].key)) kk = (int)i;
  if (kk < 0) {
    srv_wrong_input(r, "cluster operation `%.60s` is not supported (Quiver takes move_shard, "
                       "replicate_shard, abort_transfer, drop_replica, unpin_shard)", key);
    return false;
  }
  if (!json_is_object(v)) {
    srv_format_err(r, "%s: invalid type: %s, expected a map", key, srv_type_name(v));
    return false;
  }
  memset(op, 0, sizeof *op);
  op->kind = kinds[kk].kind;
  uint64_t shard = 0;
  if (!srv_field_u64(r, v, "shard_id", true, &shard)) return false;
  op->shard = shard > UINT32_MAX ? UINT32_MAX : (uint32_t)shard;
  if (op->kind == CL_OP_DROP) return peer_field(r, v, "peer_id", op->from, sizeof op->from);
  if (op->kind == CL_OP_UNPIN) return true;
  const char *method = NULL;
  if (!peer_field(r, v, "from_peer_id", op->from, sizeof op->from) ||
      !peer_field(r, v, "to_peer_id", op->to, sizeof op->to) ||
      !srv_field_str(r, v, "method", false, &method))
    return false;
  /* Every method fills the copy by streaming its records (docs/cluster.md). */
  if (method && strcmp(method, "stream_records") && strcmp(method, "snapshot") &&
      strcmp(method, "wal_delta")) {
    srv_format_err(r, "%s.method: unknown variant `%.40s`, expected one of `stream_records`, "
                      "`snapshot`, `wal_delta`", key, method);
    return false;
  }
  return true;
}

static unsigned op_status(qv_rc rc) {
  return rc == QV_ENOTFOUND ? 404 : rc == QV_EINVAL || rc == QV_EBUSY ? 400 : 503;
}

/* POST /collections/{c}/cluster: checked against this node's view, then
 * submitted to the controller (cl_op_submit); answers true once the map
 * with the change is visible here (the transfer, if any, runs on). */
static void coll_cluster_update(srv_req *r) {
  if (clr_node() == NULL) {
    srv_fail(r, 400, "Bad request: Distributed mode disabled");
    return;
  }
  json_t *body = srv_body(r, false);
  cl_coll c;
  memset(&c, 0, sizeof c);
  char **drain = NULL;
  size_t n_drain = 0;
  mship_view v = {0};
  const char **live = NULL;
  cl_op op;
  if (body == NULL || !parse_op(r, body, &op)) goto out;
  const char *t = srv_query(r, "timeout");
  unsigned long wait_s = t ? strtoul(t, NULL, 10) : OP_WAIT_S_DEFAULT;
  if (wait_s == 0 || wait_s > OP_WAIT_S_MAX) wait_s = OP_WAIT_S_DEFAULT;
  if (cl_coll_get(clr_node(), r->args[0], &c) != QV_OK) {
    srv_fail(r, 404, "Not found: Collection `%s` doesn't exist!", r->args[0]);
    goto out;
  }
  qv_err err = {0};
  if (!c.has_map || mship_view_get(cl_node_mship(clr_node()), &v, &err) != QV_OK ||
      cl_drain_list(clr_node(), &drain, &n_drain) != QV_OK) {
    srv_fail(r, 503, "Service unavailable: %s", c.has_map ? err.msg : "not placed yet");
    goto out;
  }
  live = qv_calloc(v.n ? v.n : 1, sizeof *live);
  if (live == NULL) {
    srv_fail(r, 500, "Service internal error: out of memory");
    goto out;
  }
  for (size_t i = 0; i < v.n; i++) live[i] = v.members[i].node_id;
  cl_plan_in in = {.live = live, .n_live = v.n, .draining = (const char *const *)drain,
                   .n_draining = n_drain};
  qv_rc rc = cl_plan_op(&c, &op, &in, &err); /* on this node's copy: a check */
  if (rc == QV_OK) rc = cl_op_submit(clr_node(), r->args[0], &op, (uint32_t)wait_s * 1000, &err);
  if (rc == QV_EBUSY && strstr(err.msg, "pending"))
    srv_fail(r, 409, "Conflict: %s", err.msg);
  else if (rc != QV_OK)
    srv_fail(r, op_status(rc), "%s%s", rc == QV_EIO ? "Service unavailable: " : "", err.msg);
  else srv_ok(r, json_true());
out:
  qv_free(live);
  mship_view_free(&v);
  cl_names_free(drain, n_drain);
  cl_coll_free(&c);
  json_decref(body);
}
