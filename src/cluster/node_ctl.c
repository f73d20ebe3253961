/* node_ctl.c: the controller — the elected node's loop that places new
 * collections and applies plan.h's decisions, one fenced CAS per
 * collection per pass — and operators' requests on single shards
 * (POST /collections/{c}/cluster) on their way to it.
 *
 * A request is a key <prefix>/collections/<c>/op.<k> on the submitter's
 * lease (one per shard at a time). The controller applies it with
 * cl_plan_op in its next pass and deletes the key in the same transaction
 * as the map write, so "the key is gone and a later map exists" means
 * applied; a refusal is written into the key for the submitter, who then
 * deletes it. Every map write is guarded by the config's create_revision
 * (node.h, incarnations). Invariant: only this file writes shard maps, and
 * only through shardmap_cas_write_ex while this node holds the controller
 * key, so a deposed controller's decisions never land. */
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"
#include "cluster/node.h"
#include "cluster/node_int.h"
#include "cluster/plan.h"
#include "cluster/ring.h"
#include "cluster/shardmap.h"

#define CONTROLLER_TICK_MS 200

static char *map_json(const cl_coll *c, int64_t epoch) {
  json_t *shards = json_array();
  for (uint32_t s = 0; shards && s < c->shard_number; s++) {
    const cl_shard *sh = &c->shards[s];
    json_t *reps = json_array();
    for (uint32_t k = 0; k < sh->n_reps; k++) {
      const cl_replica *r = &sh->reps[k];
      json_t *o = json_pack("{s:s, s:s}", "node", r->node, "state",
                            r->state == CL_DEAD      ? "dead"
                            : r->state == CL_PARTIAL ? "partial"
                                                     : "insync");
      if (o && r->state == CL_PARTIAL) json_object_set_new(o, "xfer", json_integer(r->xfer));
      if (o && r->state == CL_DEAD) json_object_set_new(o, "dead_ms", json_integer(r->dead_ms));
      if (o && r->is_leaving) json_object_set_new(o, "leaving", json_true());
      json_array_append_new(reps, o);
    }
    json_t *so = json_pack("{s:I, s:I, s:s, s:o}", "id", (json_int_t)s, "term",
                           (json_int_t)sh->term, "primary", sh->primary, "replicas", reps);
    if (so && sh->is_pinned) json_object_set_new(so, "pinned", json_true());
    json_array_append_new(shards, so);
  }
  json_t *o = json_pack("{s:I, s:I, s:I, s:o}", "epoch", (json_int_t)epoch, "shard_number",
                        (json_int_t)c->shard_number, "replication_factor", (json_int_t)c->rf,
                        "shards", shards);
  char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return t;
}

/* The guard of every map write: the config is still the incarnation the
 * map was computed for (node.h). */
static etcd_cmp incarnation_guard(const cl_node *n, const cl_coll *c, char *key, size_t cap) {
  snprintf(key, cap, "%s/collections/%s/config", n->prefix, c->name);
  return (etcd_cmp){.key = key, .target = ETCD_CMP_CREATE, .result = ETCD_EQUAL,
                    .number = c->cfg_rev};
}

/* First placement of a collection over the live members: epoch and terms
 * start at the config's create_revision (node.h, incarnations). */
static void place_new(cl_node *n, const mship_view *v, cl_coll *c) {
  if (v->n == 0) return;
  const char **ids = qv_calloc(v->n, sizeof *ids);
  if (ids == NULL) return;
  for (size_t i = 0; i < v->n; i++) ids[i] = v->members[i].node_id;
  ring_opts ro;
  ring_opts_init(&ro);
  ro.rf = c->rf;
  ro.salt = c->name;
  ring_placement *p = NULL;
  qv_err err = {0};
  qv_rc rc = ring_place(ids, v->n, c->shard_number, &ro, &p, &err);
  qv_free(ids);
  if (rc != QV_OK) {
    qv_log(QV_LOG_WARN, "cluster", "placing %s: %s", c->name, err.msg);
    return;
  }
  c->shards = qv_calloc(c->shard_number, sizeof *c->shards);
  if (c->shards == NULL) goto out;
  for (uint32_t s = 0; s < c->shard_number; s++) {
    cl_shard *sh = &c->shards[s];
    sh->id = s;
    sh->term = c->cfg_rev > 1 ? (uint64_t)c->cfg_rev : 1;
    for (uint32_t k = 0; k < p->rf; k++) {
      snprintf(sh->reps[k].node, sizeof sh->reps[k].node, "%s", ring_replica(p, s, k));
      sh->reps[k].state = CL_INSYNC;
      sh->n_reps++;
    }
    snprintf(sh->primary, sizeof sh->primary, "%s", sh->reps[0].node);
  }
  int64_t epoch = c->cfg_rev > 1 ? c->cfg_rev : 1;
  char *json = map_json(c, epoch);
  if (json) {
    char gkey[MSHIP_PREFIX_MAX + CL_NAME_MAX + 32];
    etcd_cmp guard = incarnation_guard(n, c, gkey, sizeof gkey);
    shardmap_extra ex = {.guards = &guard, .n_guards = 1};
    rc = shardmap_cas_write_ex(n->m, c->name, NULL, json, &ex, NULL, &err);
    if (rc == QV_OK)
      qv_log(QV_LOG_INFO, "cluster", "placed %s: %u shards x %u copies on %zu nodes, epoch %lld",
             c->name, c->shard_number, p->rf, v->n, (long long)epoch);
    else
      qv_log(QV_LOG_WARN, "cluster", "placing %s: %s", c->name, err.msg);
  }
  free(json);
out:
  ring_placement_free(p);
}

static void plan_log(void *ctx, const char *line) { cl_event(ctx, "%s", line); }

/* The stale reports a pass has seen are consumed by it (acted on, or
 * obsolete): delete them so they cannot act again after a rejoin. */
static void drop_stale_keys(cl_node *n, const cl_coll *c) {
  for (size_t i = 0; i < c->n_stale; i++) {
    char key[MSHIP_PREFIX_MAX + CL_NAME_MAX + CL_ID_MAX + 48];
    snprintf(key, sizeof key, "%s/collections/%s/stale.%u.%s", n->prefix, c->name,
             c->stale[i].shard, c->stale[i].node);
    etcd_delete(n->etcd, key, false, NULL, NULL, NULL);
  }
}

qv_rc cl_stale_publish(cl_node *n, const char *coll, uint32_t shard, const char *node,
                       uint64_t term, qv_err *err) {
  mship_status st;
  mship_status_get(n->m, &st);
  if (st.lease == 0) return qv_err_set(err, QV_EIO, "not registered");
  char key[MSHIP_PREFIX_MAX + CL_NAME_MAX + CL_ID_MAX + 48], val[CL_ID_MAX + 64];
  snprintf(key, sizeof key, "%s/collections/%s/stale.%u.%s", n->prefix, coll, shard, node);
  snprintf(val, sizeof val, "{\"from\":\"%s\",\"term\":%llu}", n->id,
           (unsigned long long)term);
  return etcd_put(n->etcd, key, val, strlen(val), st.lease, NULL, err);
}

/* Writes the controller's refusal into an operator's request (on the
 * submitter's lease, so it goes with the submitter). */
static void refuse_op(cl_node *n, const cl_coll *c, const cl_op *op, const char *why) {
  char key[MSHIP_PREFIX_MAX + CL_NAME_MAX + 48];
  snprintf(key, sizeof key, "%s/collections/%s/op.%u", n->prefix, c->name, op->shard);
  json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "kind", node_op_kinds[op->kind], "from",
                        op->from, "to", op->to, "id", op->id, "refused", why);
  char *val = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (val == NULL) return;
  /* Only the submission we decided on, and only while it waits. */
  etcd_cmp cmp = {.key = key, .target = ETCD_CMP_MOD, .result = ETCD_EQUAL, .number = op->rev};
  etcd_op put = {.kind = ETCD_OP_PUT, .key = key, .value = val, .value_len = strlen(val),
                 .lease = op->lease};
  etcd_txn t = {.cmp = &cmp, .n_cmp = 1, .success = &put, .n_success = 1};
  etcd_txn_result res = {0};
  if (op->lease != 0 && etcd_txn_do(n->etcd, &t, &res, NULL) == QV_OK)
    cl_event(n, "%s shard %u: %s refused: %s", c->name, op->shard, node_op_kinds[op->kind], why);
  etcd_kvs_free(&res.kvs);
  free(val);
}

/* One controller pass over a placed collection (plan.h), written as one CAS
 * with epoch + 1: first the operator's pending requests (cl_plan_op, each
 * consumed — its key deleted — by the same transaction), then the rules. */
static void repair(cl_node *n, const mship_view *v, cl_coll *c) {
  const char **live = qv_calloc(v->n ? v->n : 1, sizeof *live);
  char **drain = NULL;
  size_t n_drain = 0;
  if (live == NULL || cl_drain_list(n, &drain, &n_drain) != QV_OK) {
    qv_free(live);
    return;
  }
  for (size_t i = 0; i < v->n; i++) live[i] = v->members[i].node_id;
  cl_plan_in in = {.live = live, .n_live = v->n, .draining = (const char *const *)drain,
                   .n_draining = n_drain, .now_ms = node_wall_ms(),
                   .move_delay_ms = (int64_t)n->move_delay_s * 1000, .log = plan_log, .ctx = n};
  /* Requests: applied ones are deleted with the map write; refused ones
   * are answered once the pass is known to be based on the current map. */
  enum { OPS_MAX = 32 };
  char op_keys[OPS_MAX][MSHIP_PREFIX_MAX + CL_NAME_MAX + 48];
  etcd_op consumed[OPS_MAX];
  size_t n_consumed = 0, n_refused = 0;
  const cl_op *refused[OPS_MAX];
  char why[OPS_MAX][sizeof c->ops[0].refused];
  bool changed = false;
  for (size_t i = 0; i < c->n_ops && n_consumed + n_refused < OPS_MAX; i++) {
    const cl_op *op = &c->ops[i];
    if (op->refused[0]) continue; /* answered; the submitter removes it */
    qv_err err = {0};
    if (cl_plan_op(c, op, &in, &err) == QV_OK) {
      snprintf(op_keys[n_consumed], sizeof op_keys[0], "%s/collections/%s/op.%u", n->prefix,
               c->name, op->shard);
      consumed[n_consumed] = (etcd_op){.kind = ETCD_OP_DELETE, .key = op_keys[n_consumed]};
      n_consumed++;
      changed = true;
    } else {
      snprintf(why[n_refused], sizeof why[0], "%s", err.msg);
      refused[n_refused++] = op;
    }
  }
  changed |= cl_plan(c, &in);
  qv_free(live);
  cl_names_free(drain, n_drain);
  bool based_on_current = !changed;
  if (changed) {
    char *json = map_json(c, c->epoch + 1);
    if (json == NULL) return;
    shardmap_doc prev = {.epoch = c->epoch, .mod_revision = c->map_rev};
    qv_err err = {0};
    char gkey[MSHIP_PREFIX_MAX + CL_NAME_MAX + 32];
    etcd_cmp guard = incarnation_guard(n, c, gkey, sizeof gkey);
    shardmap_extra ex = {.guards = &guard, .n_guards = 1, .ops = consumed, .n_ops = n_consumed};
    if (shardmap_cas_write_ex(n->m, c->name, &prev, json, &ex, NULL, &err) != QV_OK) {
      qv_log(QV_LOG_WARN, "cluster", "updating the map of %s: %s", c->name, err.msg);
    } else {
      cl_event(n, "%s: map epoch %lld", c->name, (long long)(c->epoch + 1));
      based_on_current = true;
    }
    free(json);
  }
  if (!based_on_current) return;
  drop_stale_keys(n, c); /* acted on, or obsolete (older terms) */
  for (size_t i = 0; i < n_refused; i++) refuse_op(n, c, refused[i], why[i]);
}

void *node_controller_main(void *arg) {
  cl_node *n = arg;
  pthread_mutex_lock(&n->mu);
  while (!n->stop) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += CONTROLLER_TICK_MS * 1000000L;
    if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&n->cv, &n->mu, &dl);
    if (n->stop) break;
    pthread_mutex_unlock(&n->mu);
    if (mship_is_controller(n->m, NULL)) {
      mship_view v = {0};
      qv_err err = {0};
      char **names = NULL;
      size_t count = 0;
      if (mship_view_get(n->m, &v, &err) == QV_OK && cl_coll_names(n, &names, &count) == QV_OK) {
        for (size_t i = 0; i < count; i++) {
          cl_coll c;
          if (cl_coll_get(n, names[i], &c) != QV_OK) continue;
          if (!c.has_map) place_new(n, &v, &c);
          else repair(n, &v, &c);
          cl_coll_free(&c);
        }
      }
      cl_names_free(names, count);
      mship_view_free(&v);
    }
    pthread_mutex_lock(&n->mu);
  }
  pthread_mutex_unlock(&n->mu);
  return NULL;
}

/* ---- operators' requests ------------------------------------------------------ */

/* What cl_op_submit waits for (evaluated under mu). */
typedef struct op_wait {
  uint32_t shard;
  const char *id;
  int64_t put_rev;
  int outcome; /* 0 pending, 1 applied, 2 refused, 3 collection gone */
  char why[sizeof ((cl_op *)0)->refused];
} op_wait;

static bool op_decided(const node_entry *e, void *arg) {
  op_wait *w = arg; /* the caller's, written under mu */
  if (e == NULL) return (w->outcome = 3) != 0;
  for (size_t i = 0; i < e->c.n_ops; i++) {
    const cl_op *op = &e->c.ops[i];
    if (op->shard != w->shard || strcmp(op->id, w->id)) continue;
    if (op->refused[0] == 0) return false;
    snprintf(w->why, sizeof w->why, "%s", op->refused);
    return (w->outcome = 2) != 0;
  }
  /* The key is gone: the controller consumed it in the transaction that
   * wrote a later map (seen already: events arrive in revision order). */
  if (e->c.has_map && e->c.map_rev > w->put_rev) return (w->outcome = 1) != 0;
  return false;
}

qv_rc cl_op_submit(cl_node *n, const char *coll, const cl_op *op, uint32_t timeout_ms,
                   qv_err *err) {
  mship_status st;
  mship_status_get(n->m, &st);
  uint64_t r = 0;
  if (st.lease == 0 || st.is_fenced) return qv_err_set(err, QV_EIO, "this node is not registered");
  if ((unsigned)op->kind >= node_n_op_kinds || !node_random_u63(&r))
    return qv_err_set(err, QV_EINVAL, "bad request");
  char id[sizeof op->id], key[MSHIP_PREFIX_MAX + CL_NAME_MAX + 48];
  snprintf(id, sizeof id, "%s.%llx", n->id, (unsigned long long)r);
  snprintf(key, sizeof key, "%s/collections/%s/op.%u", n->prefix, coll, op->shard);
  json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "kind", node_op_kinds[op->kind], "from", op->from,
                        "to", op->to, "id", id);
  char *val = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (val == NULL) return qv_err_set(err, QV_ENOMEM, "out of memory");
  etcd_cmp absent = {.key = key, .target = ETCD_CMP_CREATE, .result = ETCD_EQUAL, .number = 0};
  etcd_op put = {.kind = ETCD_OP_PUT, .key = key, .value = val, .value_len = strlen(val),
                 .lease = st.lease};
  etcd_txn t = {.cmp = &absent, .n_cmp = 1, .success = &put, .n_success = 1};
  etcd_txn_result res = {0};
  qv_rc rc = etcd_txn_do(n->etcd, &t, &res, err);
  free(val);
  bool won = res.succeeded;
  etcd_kvs_free(&res.kvs);
  if (rc != QV_OK) return rc;
  if (!won)
    return qv_err_set(err, QV_EBUSY, "another request on shard %u of `%s` is pending", op->shard,
                      coll);
  op_wait w = {.shard = op->shard, .id = id, .put_rev = res.revision};
  bool decided = node_wait_view(n, coll, timeout_ms, op_decided, &w);
  if (!decided) {
    /* Withdraw it, unless the controller decided meanwhile. */
    etcd_cmp mine = {.key = key, .target = ETCD_CMP_CREATE, .result = ETCD_EQUAL,
                     .number = res.revision};
    etcd_cmp pending = {.key = key, .target = ETCD_CMP_MOD, .result = ETCD_EQUAL,
                        .number = res.revision};
    etcd_cmp both[2] = {mine, pending};
    etcd_op del = {.kind = ETCD_OP_DELETE, .key = key};
    etcd_txn wt = {.cmp = both, .n_cmp = 2, .success = &del, .n_success = 1};
    etcd_txn_result wr = {0};
    bool withdrawn = etcd_txn_do(n->etcd, &wt, &wr, NULL) == QV_OK && wr.succeeded;
    etcd_kvs_free(&wr.kvs);
    if (withdrawn)
      return qv_err_set(err, QV_EIO, "no controller took the request within %u ms (withdrawn)",
                        timeout_ms);
    decided = node_wait_view(n, coll, 3000, op_decided, &w);
    if (!decided) return qv_err_set(err, QV_EIO, "the outcome of the request is unknown");
  }
  if (w.outcome == 3) return qv_err_set(err, QV_ENOTFOUND, "`%s` was deleted", coll);
  if (w.outcome == 2) {
    etcd_cmp mine = {.key = key, .target = ETCD_CMP_CREATE, .result = ETCD_EQUAL,
                     .number = res.revision};
    etcd_op del = {.kind = ETCD_OP_DELETE, .key = key};
    etcd_txn dt = {.cmp = &mine, .n_cmp = 1, .success = &del, .n_success = 1};
    etcd_txn_result dr = {0};
    etcd_txn_do(n->etcd, &dt, &dr, NULL);
    etcd_kvs_free(&dr.kvs);
    return qv_err_set(err, QV_EINVAL, "%s", w.why);
  }
  return QV_OK;
}
