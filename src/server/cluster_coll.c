/* cluster_coll.c: collection-level requests on distributed collections in
 * cluster mode — create, list, info, exists, delete, patch — the
 * node-to-node collection operations behind them, and the clean-up of local
 * shard copies (incarnation marks, clc_sweep).
 *
 * A distributed collection's config and shard map live in etcd
 * (src/cluster/node.h); every node answers from its watched copy and
 * reaches the copies through POST /internal/collections/{c}/{op} on each
 * node (its node-to-node listener):
 *
 *   drop   [uid=U]   wait until this node's view no longer has incarnation U
 *                    of c (without U: whatever it has now), then drop the
 *                    local copies c.s<k> that are stale (below)
 *   info   shard=K   the single-node CollectionInfo of this node's insync
 *                    copy of shard K
 *   patch            the request body applied (single-node PATCH) to every
 *                    local copy of c: validates a PATCH on one node
 *   sync   rev=R     wait until this node's view has config version R, then
 *                    bring every local copy to the stored params
 *   seen             wait until this node's view has c placed (so that a
 *                    PUT answers once every live node routes c)
 *
 * Incarnations: DELETE removes c's keys from etcd (every node forgets it
 * through its watch), then asks every live node to drop its copies before
 * it answers. A node that was down then still holds copies; a PUT of the
 * same name asks every live node to drop stale copies of it before the
 * config is written, and clc_sweep (the janitor's tick) drops copies of
 * collections that are gone. A copy is stale when its collection is absent
 * from a complete view (cl_view_complete), when its shard number is out of
 * range, or when its incarnation mark (file `cluster_uid` in the copy's
 * directory, written by clc_copy_mark) names another incarnation — and
 * only a local collection that carries a mark of cluster mode (its
 * incarnation mark or its write-chain marker) is ever taken for a copy.
 *
 * PATCH: the body is applied to one copy first (the primary of the first
 * shard whose primary is live), so a bad PATCH is refused with the
 * single-node message and changes nothing; then the params stored in etcd
 * are replaced (CAS on the config's version) with the PATCH merged in, so
 * copies created later use them; then every live node holding copies
 * brings them to the stored params (`sync`). Why calls and not each node
 * applying on its watch: the answer can say whether every copy took it, a
 * node learns of the change and applies it in one step, and a copy on a
 * node that was down is refilled by a transfer, which recreates it from
 * the stored params anyway. `sync` applies the stored state, not the
 * request, so PATCHes racing each other still leave every copy equal.
 *
 * Invariant: names ending in `.s<digits>` are reserved for the local shard
 * copies (`c.s<k>`), so a user collection cannot collide with one.
 * Not owned: the data path (routes_cluster.c, cluster_read.c), the shard
 * map and its operations (src/cluster, cluster_state.c). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "base/log.h"
#include "cluster/cluster_http.h"
#include "server/cluster_int.h"

#define CREATE_WAIT_MS 15000
#define VIEW_WAIT_MS 5000u
#define CALL_MS 15000u
/* A drop waits up to VIEW_WAIT_MS for the node's view, then drops. */
#define DROP_CALL_MS (VIEW_WAIT_MS + 2000u)
#define INFO_CALL_MS 4000u
#define PATCH_TRIES 4

/* If `name` is "<base>.s<digits>", its base (into buf) and shard number. */
static bool shard_name_parse(const char *name, char *base, size_t cap, uint32_t *k) {
  const char *d = strrchr(name, '.');
  if (d == NULL || d[1] != 's' || d[2] == 0 || (size_t)(d - name) >= cap || d == name)
    return false;
  unsigned long v = 0;
  for (const char *p = d + 2; *p; p++) {
    if (*p < '0' || *p > '9' || v > CL_SHARDS_MAX) return false;
    v = v * 10 + (unsigned long)(*p - '0');
  }
  memcpy(base, name, (size_t)(d - name));
  base[d - name] = 0;
  *k = (uint32_t)(v > UINT32_MAX ? UINT32_MAX : v);
  return true;
}

static bool is_shard_name(const char *name) {
  char base[CL_NAME_MAX + 16];
  uint32_t k;
  return shard_name_parse(name, base, sizeof base, &k);
}

static char *reply_text(json_t *result, size_t *len) {
  json_t *o = json_pack("{s:o, s:s, s:f}", "result", result, "status", "ok", "time", 0.0);
  char *t = o ? jsonio_dumps(o, len) : NULL;
  json_decref(o);
  return t;
}

static void reply_ok(clr_reply *out, json_t *result) {
  clr_reply_clear(out);
  out->body = reply_text(result, &out->len);
  out->status = out->body ? 200 : 500;
}

/* ---- incarnation marks of local copies ------------------------------------------ */

static void mark_path(srv *s, const char *copy, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/collections/%s/cluster_uid", s->cfg.data_dir, copy);
}

/* The incarnation a local copy was made for; 0 when unmarked. */
static uint64_t copy_uid(srv *s, const char *copy) {
  char path[PATH_MAX], *text = NULL;
  size_t n = 0;
  mark_path(s, copy, path, sizeof path);
  if (fileio_read_file(path, &text, &n, NULL) != QV_OK) return 0;
  uint64_t v = strtoull(text, NULL, 10);
  qv_free(text);
  return v;
}

bool clc_copy_current(srv *s, const cl_coll *c, uint32_t k) {
  char sn[CL_NAME_MAX + 16];
  clr_shard_name(c->name, k, sn, sizeof sn);
  return copy_uid(s, sn) == c->uid;
}

void clc_copy_mark(srv *s, const cl_coll *c, uint32_t k) {
  char sn[CL_NAME_MAX + 16], path[PATH_MAX], text[32];
  clr_shard_name(c->name, k, sn, sizeof sn);
  mark_path(s, sn, path, sizeof path);
  int len = snprintf(text, sizeof text, "%llu\n", (unsigned long long)c->uid);
  qv_err err = {0};
  if (fileio_write_atomic(path, text, (size_t)len, &err) != QV_OK)
    qv_log(QV_LOG_WARN, "cluster", "marking %s: %s", sn, err.msg);
}

/* Whether local collection `copy` (named base.s<k>) was made as a shard
 * copy: it carries an incarnation mark, or the write-chain marker every
 * copy gets when it is created (cluster_chain.c keeps it at
 * <data>/cluster_chain/<base>.s<k>). A collection with such a name from
 * before cluster mode has neither and is never dropped. */
static bool is_cluster_copy(srv *s, const char *base, uint32_t k, const char *copy) {
  char path[PATH_MAX];
  mark_path(s, copy, path, sizeof path);
  if (access(path, F_OK) == 0) return true;
  snprintf(path, sizeof path, "%s/cluster_chain/%s.s%u", s->cfg.data_dir, base, k);
  return access(path, F_OK) == 0;
}

/* Whether local copy `copy` of shard k of `base` is stale (top of file). */
static bool copy_is_stale(srv *s, const char *base, uint32_t k, const char *copy) {
  cl_coll c;
  bool stale;
  if (!is_cluster_copy(s, base, k, copy)) return false;
  if (cl_coll_get(clr_node(), base, &c) != QV_OK) {
    stale = cl_view_complete(clr_node());
  } else {
    uint64_t mark = copy_uid(s, copy);
    stale = k >= c.shard_number || (mark != 0 && mark != c.uid);
  }
  cl_coll_free(&c);
  return stale;
}

/* Drops the stale local copies of `only` (NULL: of every collection);
 * returns how many. Each is checked again under its shard lock, which a
 * primary's writes hold. */
static size_t drop_stale(srv *s, const char *only) {
  char **names = NULL;
  size_t n = 0, dropped = 0;
  if (!cl_view_complete(clr_node()) || qv_collection_list(s->db, &names, &n, NULL) != QV_OK)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char base[CL_NAME_MAX + 16];
    uint32_t k;
    if (shard_name_parse(names[i], base, sizeof base, &k) && (only == NULL || !strcmp(base, only))
        && copy_is_stale(s, base, k, names[i])) {
      clx_lock(base, k);
      if (copy_is_stale(s, base, k, names[i]) &&
          qv_collection_drop(s->db, names[i], NULL) == QV_OK) {
        clg_remove(s, base, k); /* its write-chain marker and backlog go with it */
        dropped++;
        cl_event(clr_node(), "%s: local copy %s removed (collection deleted or re-created)", base,
                 names[i]);
      }
      clx_unlock(base, k);
    }
    free(names[i]);
  }
  free(names);
  return dropped;
}

void clc_sweep(srv *s) { drop_stale(s, NULL); }

/* ---- node-to-node collection operations ---------------------------------------------- */

typedef struct iop {
  const char *op;
  bool has_uid;
  uint64_t uid;
  int64_t rev;
  uint32_t shard;
} iop;

/* The local copies of c this node holds (insync or partial), ensured when
 * insync (a shard that never took a write has none yet). Returns how many
 * of ks[] were filled. */
static uint32_t my_copies(srv *s, const cl_coll *c, uint32_t *ks, clr_reply *out) {
  uint32_t n = 0;
  for (uint32_t k = 0; c->has_map && k < c->shard_number; k++) {
    const cl_replica *mine = clr_my_copy(&c->shards[k]);
    if (mine == NULL || mine->state == CL_DEAD) continue;
    char sn[CL_NAME_MAX + 16];
    clr_shard_name(c->name, k, sn, sizeof sn);
    qv_collection *h = NULL;
    bool exists = qv_collection_get(s->db, sn, &h, NULL) == QV_OK;
    qv_collection_release(h);
    if (!exists && mine->state == CL_INSYNC) {
      exists = clr_ensure_shard(s, c, k, out);
      clr_reply_clear(out);
    }
    if (exists) ks[n++] = k;
  }
  return n;
}

/* Runs single-node PATCH `body` on every local copy of c; the first failure
 * is the answer. */
static void patch_copies(srv *s, const cl_coll *c, const char *body, size_t len,
                         clr_reply *out) {
  uint32_t *ks = qv_calloc(c->shard_number ? c->shard_number : 1, sizeof *ks);
  if (ks == NULL) {
    clr_reply_err(out, 500, "Service internal error: out of memory");
    return;
  }
  uint32_t n = my_copies(s, c, ks, out);
  for (uint32_t i = 0; i < n; i++) {
    char sn[CL_NAME_MAX + 16];
    clr_shard_name(c->name, ks[i], sn, sizeof sn);
    clr_sub_run(s, h_coll_patch, sn, body, len, out);
    if (out->status != 200) break;
  }
  if (n == 0 || out->status == 200) reply_ok(out, json_true());
  qv_free(ks);
}

/* The single-node PATCH that brings a copy to `params` (a create body): the
 * settings a PATCH can change, as stored. NULL when there are none. */
static json_t *params_patch(const char *params) {
  json_t *p = json_loads(params, 0, NULL), *out = json_object();
  json_t *vecs = json_object_get(p, "vectors"), *hc = json_object();
  bool single = json_object_get(vecs, "size") != NULL;
  /* The unnamed vector's own hnsw_config is the collection level's,
   * overridden by the collection level (create's order). */
  json_t *unnamed = single ? vecs : json_object_get(vecs, "");
  const char *keys[] = {"m", "ef_construct", "full_scan_threshold"};
  json_t *levels[] = {json_object_get(unnamed, "hnsw_config"), json_object_get(p, "hnsw_config")};
  for (int l = 0; l < 2; l++)
    for (int i = 0; i < 3; i++)
      if (json_is_integer(json_object_get(levels[l], keys[i])))
        json_object_set(hc, keys[i], json_object_get(levels[l], keys[i]));
  if (json_object_size(hc)) json_object_set(out, "hnsw_config", hc);
  json_decref(hc);
  const char *name;
  json_t *v, *pv = json_object();
  json_object_foreach(single ? NULL : vecs, name, v) {
    json_t *h = json_object_get(v, "hnsw_config");
    if (name[0] && json_is_integer(json_object_get(h, "m")) &&
        json_is_integer(json_object_get(h, "ef_construct")))
      json_object_set_new(pv, name, json_pack("{s:{s:O, s:O}}", "hnsw_config", "m",
                                              json_object_get(h, "m"), "ef_construct",
                                              json_object_get(h, "ef_construct")));
  }
  if (json_object_size(pv)) json_object_set(out, "vectors", pv);
  json_decref(pv);
  json_t *it = json_object_get(json_object_get(p, "optimizers_config"), "indexing_threshold");
  if (json_is_integer(it) && json_integer_value(it) > 0)
    json_object_set_new(out, "optimizers_config", json_pack("{s:O}", "indexing_threshold", it));
  json_decref(p);
  if (json_object_size(out) == 0) {
    json_decref(out);
    return NULL;
  }
  return out;
}

static void iop_run(srv *s, const char *name, const iop *q, const char *body, size_t len,
                    clr_reply *out) {
  cl_node *n = clr_node();
  cl_coll c;
  memset(&c, 0, sizeof c);
  if (!strcmp(q->op, "drop")) {
    if (q->has_uid) cl_wait_gone(n, name, q->uid, VIEW_WAIT_MS);
    else if (cl_coll_get(n, name, &c) == QV_OK) cl_wait_gone(n, name, c.uid, VIEW_WAIT_MS);
    reply_ok(out, json_pack("{s:I}", "dropped", (json_int_t)drop_stale(s, name)));
  } else if (!strcmp(q->op, "seen")) {
    if (cl_wait_map(n, name, 1, VIEW_WAIT_MS)) reply_ok(out, json_true());
    else clr_reply_err(out, 503, "Service unavailable: `%s` is not placed in this node's view",
                       name);
  } else if (!strcmp(q->op, "info")) {
    const cl_replica *mine = NULL;
    if (cl_coll_get(n, name, &c) != QV_OK || !c.has_map || q->shard >= c.shard_number ||
        (mine = clr_my_copy(&c.shards[q->shard])) == NULL || mine->state != CL_INSYNC) {
      clr_reply_err(out, 409, "Stale shard map: no in-sync copy of shard %u of `%s` here",
                    q->shard, name);
    } else if (clr_ensure_shard(s, &c, q->shard, out)) {
      char sn[CL_NAME_MAX + 16];
      clr_shard_name(name, q->shard, sn, sizeof sn);
      clr_sub_run(s, h_coll_get, sn, "", 0, out);
    }
  } else if (!strcmp(q->op, "patch") || !strcmp(q->op, "sync")) {
    bool sync = q->op[0] == 's';
    if (sync && !cl_wait_config(n, name, q->rev, VIEW_WAIT_MS)) {
      clr_reply_err(out, 503, "Service unavailable: this node has not seen version %lld of the "
                    "config of `%s`", (long long)q->rev, name);
    } else if (cl_coll_get(n, name, &c) != QV_OK) {
      clr_reply_err(out, 404, "Not found: Collection `%s` doesn't exist!", name);
    } else if (!sync) {
      patch_copies(s, &c, body, len, out);
    } else {
      json_t *p = params_patch(c.params);
      size_t plen = 0;
      char *text = p ? jsonio_dumps(p, &plen) : NULL;
      json_decref(p);
      if (text) patch_copies(s, &c, text, plen, out);
      else reply_ok(out, json_true());
      qv_free(text);
    }
  } else {
    clr_reply_err(out, 404, "Not found: collection operation %s", q->op);
  }
  cl_coll_free(&c);
}

static void internal_route(srv_req *r) {
  iop q = {.op = r->args[1]};
  const char *v;
  if ((v = srv_query(r, "uid")) != NULL) q.has_uid = true, q.uid = strtoull(v, NULL, 10);
  if ((v = srv_query(r, "rev")) != NULL) q.rev = strtoll(v, NULL, 10);
  if ((v = srv_query(r, "shard")) != NULL) q.shard = (uint32_t)strtoul(v, NULL, 10);
  clr_reply out = {0};
  iop_run(r->s, r->args[0], &q, r->body ? r->body : "", r->body_len, &out);
  srv_raw(r, out.status, "application/json", out.body, out.len, qv_free);
}

/* Runs operation qs[i * q_step] on nodes[i] for each i (this node
 * directly, the others through their node-to-node address, in parallel);
 * out[i] is node i's answer (status 0 with a message when it could not be
 * reached). q_step 0: one operation for all. */
static void on_nodes(srv *s, const char *name, const iop *qs, size_t q_step,
                     const char *const *nodes, size_t n, const char *body, size_t len,
                     uint32_t timeout_ms, clr_reply *out) {
  cl_call *calls = qv_calloc(n ? n : 1, sizeof *calls);
  size_t *which = qv_calloc(n ? n : 1, sizeof *which), nc = 0;
  const char *me = cl_node_id(clr_node());
  for (size_t i = 0; calls && which && i < n; i++) {
    char addr[300];
    if (!strcmp(nodes[i], me)) continue;
    if (!cl_node_iaddr(clr_node(), nodes[i], addr, sizeof addr)) {
      clr_reply_err(&out[i], 503, "Service unavailable: node %s is not live", nodes[i]);
      out[i].status = 0;
      continue;
    }
    cl_call *cc = &calls[nc];
    const iop *q = &qs[i * q_step];
    int w = snprintf(cc->url, sizeof cc->url, "http://%s/internal/collections/%s/%s?shard=%u",
                     addr, name, q->op, q->shard);
    if (q->has_uid && w > 0 && (size_t)w < sizeof cc->url)
      w += snprintf(cc->url + w, sizeof cc->url - (size_t)w, "&uid=%llu",
                    (unsigned long long)q->uid);
    if (q->rev && w > 0 && (size_t)w < sizeof cc->url)
      snprintf(cc->url + w, sizeof cc->url - (size_t)w, "&rev=%lld", (long long)q->rev);
    cc->body = body;
    cc->len = len;
    cc->api_key = clr_api_key();
    which[nc++] = i;
  }
  for (size_t i = 0; i < n; i++)
    if (!strcmp(nodes[i], me)) iop_run(s, name, &qs[i * q_step], body, len, &out[i]);
  if (calls && which) cl_http_run(calls, nc, timeout_ms);
  for (size_t j = 0; calls && which && j < nc; j++) {
    clr_reply *o = &out[which[j]];
    clr_reply_clear(o);
    if (calls[j].status) {
      o->status = calls[j].status;
      o->body = calls[j].resp;
      o->len = calls[j].resp_len;
      calls[j].resp = NULL;
    } else {
      clr_reply_err(o, 503, "Service unavailable: node %s: %s", nodes[which[j]], calls[j].err);
      o->status = 0;
    }
    cl_call_clear(&calls[j]);
  }
  qv_free(calls);
  qv_free(which);
}

/* The live members (free with cl_names_free); false when etcd cannot say. */
static bool live_members(char ***ids, size_t *n) {
  mship_view v = {0};
  if (mship_view_get(cl_node_mship(clr_node()), &v, NULL) != QV_OK) return false;
  char **out = qv_calloc(v.n ? v.n : 1, sizeof *out);
  size_t k = 0;
  for (size_t i = 0; out && i < v.n; i++)
    if ((out[k] = qv_strdup(v.members[i].node_id)) != NULL) k++;
  mship_view_free(&v);
  *ids = out;
  *n = k;
  return out != NULL;
}

/* Runs q on every live node; returns how many did not answer 200 (each
 * logged as failing to `what`). */
static size_t on_every_node(srv *s, const char *name, const iop *q, uint32_t timeout_ms,
                            const char *what) {
  char **ids = NULL;
  size_t n = 0, failed = 0;
  if (!live_members(&ids, &n)) return 1;
  clr_reply *out = qv_calloc(n ? n : 1, sizeof *out);
  if (out) on_nodes(s, name, q, 0, (const char *const *)ids, n, "", 0, timeout_ms, out);
  for (size_t i = 0; out && i < n; i++) {
    if (out[i].status != 200) {
      failed++;
      qv_log(QV_LOG_WARN, "cluster", "%s %s on %s: %u %.200s", what, name, ids[i],
             out[i].status, out[i].body ? out[i].body : "");
    }
    clr_reply_clear(&out[i]);
  }
  qv_free(out);
  cl_names_free(ids, n);
  return failed + (out == NULL);
}

/* Asks every live node to drop its stale copies of `name` (after DELETE:
 * those of incarnation uid; before a create: whatever is left); returns
 * how many nodes did not answer. */
static size_t drop_everywhere(srv *s, const char *name, bool has_uid, uint64_t uid) {
  iop q = {.op = "drop", .has_uid = has_uid, .uid = uid};
  return on_every_node(s, name, &q, DROP_CALL_MS, "dropping the copies of");
}

/* ---- create, list, delete --------------------------------------------------------------- */

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
  cl_coll old;
  if (cl_coll_get(clr_node(), name, &old) == QV_OK) {
    cl_coll_free(&old);
    srv_fail(r, 409, "Wrong input: Collection `%s` already exists!", name);
    goto out;
  }
  /* Copies an earlier incarnation left on nodes that were down when it was
   * deleted must go before this one can be placed there. */
  drop_everywhere(r->s, name, false, 0);
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
  else {
    /* Answer once every live node routes it (their watches lag by
     * milliseconds; a request right after the PUT must not be a 404). */
    iop seen = {.op = "seen"};
    on_every_node(r->s, name, &seen, DROP_CALL_MS, "waiting for the placement of");
    srv_ok(r, json_true());
  }
out:
  json_decref(body);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* GET /collections: the distributed collections and the local ones, not
 * the shard copies. */
static void coll_list(srv_req *r) {
  char **dist = NULL, **local = NULL;
  size_t n_dist = 0, n_local = 0;
  qv_err err = {0};
  if (cl_coll_names(clr_node(), &dist, &n_dist) != QV_OK) {
    srv_fail(r, 500, "Service internal error: out of memory");
    return;
  }
  qv_rc rc = qv_collection_list(r->s->db, &local, &n_local, &err);
  if (rc != QV_OK) {
    cl_names_free(dist, n_dist);
    srv_rc_fail(r, rc, &err);
    return;
  }
  const char **all = qv_calloc(n_dist + n_local + 1, sizeof *all);
  size_t n = 0;
  for (size_t i = 0; all && i < n_dist; i++) all[n++] = dist[i];
  for (size_t i = 0; all && i < n_local; i++)
    if (!is_shard_name(local[i])) all[n++] = local[i];
  if (all) qsort(all, n, sizeof *all, cmp_str);
  json_t *arr = json_array();
  for (size_t i = 0; all && i < n; i++)
    if (i == 0 || strcmp(all[i], all[i - 1]))
      json_array_append_new(arr, json_pack("{s:s}", "name", all[i]));
  qv_free(all);
  cl_names_free(dist, n_dist);
  for (size_t i = 0; i < n_local; i++) free(local[i]);
  free(local);
  srv_ok(r, json_pack("{s:o}", "collections", arr));
}

static void coll_delete(srv_req *r, const cl_coll *c) {
  qv_err err = {0};
  if (cl_coll_delete(clr_node(), c->name, &err) != QV_OK) {
    srv_fail(r, 503, "Service unavailable: etcd: %s", err.msg);
    return;
  }
  /* Answer only when this node forgot it (a read through it is then 404)
   * and every live node dropped its copies; a node that did not answer
   * drops them in its sweep. */
  cl_wait_gone(clr_node(), c->name, c->uid, VIEW_WAIT_MS);
  size_t failed = drop_everywhere(r->s, c->name, true, c->uid);
  cl_event(clr_node(), "%s: deleted%s", c->name,
           failed ? " (some nodes drop their copies later)" : "");
  srv_ok(r, json_true());
}

/* ---- info ------------------------------------------------------------------------------- */

static int status_rank(const char *s) {
  return s == NULL ? 3 : !strcmp(s, "green") ? 0 : !strcmp(s, "yellow") ? 1 : 2;
}

/* Adds shard info `o` (a single-node CollectionInfo) into the total. */
static void info_add(json_t *total, const json_t *o) {
  static const char *const sums[] = {"points_count", "segments_count", "indexed_vectors_count"};
  for (int i = 0; i < 3; i++) {
    uint64_t a = 0, b = 0;
    jsonio_get_u64(json_object_get(total, sums[i]), &a);
    jsonio_get_u64(json_object_get(o, sums[i]), &b);
    json_object_set_new(total, sums[i], jsonio_u64(a + b));
  }
  const char *st = json_string_value(json_object_get(o, "status"));
  if (status_rank(st) > status_rank(json_string_value(json_object_get(total, "status"))))
    json_object_set(total, "status", json_object_get(o, "status"));
  if (!json_is_string(json_object_get(o, "optimizer_status")))
    json_object_set(total, "optimizer_status", json_object_get(o, "optimizer_status"));
  json_t *ps = json_object_get(total, "payload_schema");
  const char *field;
  json_t *f;
  json_object_foreach(json_object_get(o, "payload_schema"), field, f) {
    json_t *have = json_object_get(ps, field);
    if (have == NULL) continue;
    uint64_t a = 0, b = 0;
    jsonio_get_u64(json_object_get(have, "points"), &a);
    jsonio_get_u64(json_object_get(f, "points"), &b);
    json_object_set_new(have, "points", jsonio_u64(a + b));
  }
}

/* The info of one insync copy per shard (this node's first, then the
 * primary's, then the others; a round of parallel calls per attempt),
 * merged in shard order. */
static void coll_info(srv_req *r, const cl_coll *c) {
  uint32_t ns = c->has_map ? c->shard_number : 0;
  json_t *total = NULL, *missing = json_array();
  json_t **got = qv_calloc(ns ? ns : 1, sizeof *got);
  iop *qs = qv_calloc(ns ? ns : 1, sizeof *qs);
  const char **to = qv_calloc(ns ? ns : 1, sizeof *to);
  uint32_t *which = qv_calloc(ns ? ns : 1, sizeof *which);
  clr_reply *outs = qv_calloc(ns ? ns : 1, sizeof *outs);
  if (!got || !qs || !to || !which || !outs) {
    srv_fail(r, 500, "Service internal error: out of memory");
    goto out;
  }
  const char *me = cl_node_id(clr_node());
  for (uint32_t attempt = 0; attempt <= CL_RF_MAX; attempt++) {
    size_t n = 0;
    for (uint32_t k = 0; k < ns; k++) {
      if (got[k]) continue;
      const char *cand[CL_RF_MAX + 1];
      uint32_t nc = clr_candidates(&c->shards[k], me, cand);
      if (attempt >= nc) continue;
      qs[n] = (iop){.op = "info", .shard = k};
      to[n] = cand[attempt];
      which[n++] = k;
    }
    if (n == 0) break;
    on_nodes(r->s, c->name, qs, 1, to, n, "", 0, INFO_CALL_MS, outs);
    for (size_t i = 0; i < n; i++) {
      char msg[128];
      json_t *o = outs[i].status == 200 ? jsonio_parse(outs[i].body, outs[i].len, msg, sizeof msg)
                                        : NULL;
      got[which[i]] = json_incref(json_object_get(o, "result"));
      json_decref(o);
      clr_reply_clear(&outs[i]);
    }
  }
  for (uint32_t k = 0; k < ns; k++) {
    if (got[k] == NULL) json_array_append_new(missing, json_integer(k));
    else if (total == NULL) total = json_incref(got[k]);
    else info_add(total, got[k]);
  }
  if (total == NULL) { /* no copy answered: the stored config alone */
    json_t *params = json_loads(c->params, 0, NULL);
    total = json_pack("{s:s, s:s, s:i, s:i, s:i, s:{s:o}, s:{}}", "status", "green",
                      "optimizer_status", "ok", "segments_count", 0, "points_count", 0,
                      "indexed_vectors_count", 0, "config", "params",
                      params ? params : json_object(), "payload_schema");
  }
  json_t *params = json_object_get(json_object_get(total, "config"), "params");
  json_object_set_new(params, "shard_number", json_integer(c->shard_number));
  json_object_set_new(params, "replication_factor", json_integer(c->rf));
  json_object_set_new(params, "write_consistency_factor", json_integer(c->wcf));
  if (json_array_size(missing) > 0 || !c->has_map) {
    char *list = jsonio_dumps(missing, NULL);
    json_object_set_new(total, "status", json_string("red"));
    json_object_set_new(total, "optimizer_status",
                        json_pack("{s:s+}", "error",
                                  c->has_map ? "no copy answered for shards " : "not placed yet",
                                  c->has_map && list ? list : ""));
    qv_free(list);
  }
  srv_ok(r, total);
out:
  for (uint32_t k = 0; got && k < ns; k++) json_decref(got[k]);
  qv_free(got);
  qv_free(qs);
  qv_free(to);
  qv_free(which);
  qv_free(outs);
  json_decref(missing);
}

/* ---- patch ---------------------------------------------------------------------------- */

/* Merges `src`'s keys into the object at dst[key] (created when absent). */
static void merge_into(json_t *dst, const char *key, const json_t *src) {
  if (!json_is_object(src)) return;
  json_t *d = json_object_get(dst, key);
  if (!json_is_object(d)) {
    d = json_object();
    json_object_set_new(dst, key, d);
  }
  json_object_update(d, (json_t *)src);
}

/* The create body `params` with PATCH `body` merged in, as the single-node
 * PATCH changes a config: the unnamed vector's hnsw_config is the
 * collection level's; a named vector's hnsw_config, once patched, holds
 * both m and ef_construct (the missing one taken from the collection
 * level). NULL when `params` is not an object. */
static char *params_merge(const char *params, const json_t *body) {
  json_t *p = json_loads(params, 0, NULL);
  if (!json_is_object(p)) {
    json_decref(p);
    return NULL;
  }
  json_t *vecs = json_object_get(p, "vectors");
  bool single = json_object_get(vecs, "size") != NULL;
  const char *name;
  json_t *v;
  json_object_foreach(json_object_get(body, "vectors"), name, v)
    if (!name[0]) merge_into(p, "hnsw_config", json_object_get(v, "hnsw_config"));
  merge_into(p, "hnsw_config", json_object_get(body, "hnsw_config"));
  qv_collection_config dflt;
  qv_collection_config_init(&dflt);
  json_t *hc = json_object_get(p, "hnsw_config");
  json_t *unnamed = single ? vecs : json_object_get(vecs, "");
  json_t *uh = json_object_get(unnamed, "hnsw_config");
  json_t *m = json_object_get(hc, "m") ? json_object_get(hc, "m") : json_object_get(uh, "m");
  json_t *ef = json_object_get(hc, "ef_construct") ? json_object_get(hc, "ef_construct")
                                                   : json_object_get(uh, "ef_construct");
  json_object_foreach(json_object_get(body, "vectors"), name, v) {
    json_t *target = single || !name[0] ? NULL : json_object_get(vecs, name);
    json_t *h = json_object_get(v, "hnsw_config");
    if (!json_is_object(target) || !json_is_object(h)) continue;
    merge_into(target, "hnsw_config", h);
    json_t *th = json_object_get(target, "hnsw_config");
    if (!json_object_get(th, "m"))
      json_object_set_new(th, "m", m ? json_incref(m) : json_integer(dflt.hnsw_m));
    if (!json_object_get(th, "ef_construct"))
      json_object_set_new(th, "ef_construct",
                          ef ? json_incref(ef) : json_integer(dflt.hnsw_ef_construct));
  }
  json_t *oc = json_object_get(body, "optimizers_config");
  if (json_object_get(oc, "indexing_threshold"))
    merge_into(p, "optimizers_config", oc);
  size_t len;
  char *out = jsonio_dumps(p, &len);
  json_decref(p);
  return out;
}

static void coll_patch(srv_req *r, const cl_coll *c0) {
  json_t *body = srv_body(r, true);
  if (body == NULL) return;
  cl_coll c;
  memset(&c, 0, sizeof c);
  char **holders = NULL;
  size_t n_holders = 0;
  const char *validator = NULL;
  if (!c0->has_map) {
    srv_fail(r, 503, "Service unavailable: collection `%s` is not placed yet", c0->name);
    goto out;
  }
  /* 1. Validate on one copy: the single-node PATCH checks before it
   * changes anything, and every copy has the same config. */
  for (uint32_t k = 0; k < c0->shard_number && validator == NULL; k++) {
    char addr[300];
    if (cl_node_iaddr(clr_node(), c0->shards[k].primary, addr, sizeof addr))
      validator = c0->shards[k].primary;
  }
  if (validator == NULL) {
    srv_fail(r, 503, "Service unavailable: no primary of `%s` is live", c0->name);
    goto out;
  }
  clr_reply rp = {0};
  iop check = {.op = "patch"};
  on_nodes(r->s, c0->name, &check, 0, &validator, 1, r->body ? r->body : "", r->body_len,
           CALL_MS, &rp);
  if (rp.status != 200) {
    if (rp.status) srv_raw(r, rp.status, "application/json", rp.body, rp.len, qv_free);
    else srv_fail(r, 503, "Service unavailable: validating on %s failed", validator);
    if (rp.status) rp.body = NULL;
    clr_reply_clear(&rp);
    goto out;
  }
  clr_reply_clear(&rp);
  /* 2. Store the merged params (CAS on the config's version; a PATCH that
   * raced this one is merged with, not overwritten). */
  int64_t rev = 0;
  qv_err err = {0};
  qv_rc rc = QV_EBUSY;
  for (int t = 0; t < PATCH_TRIES && rc == QV_EBUSY; t++) {
    cl_coll_free(&c);
    if (t > 0) cl_wait_config(clr_node(), c0->name, c0->cfg_mod_rev + 1, 1000);
    if (cl_coll_get(clr_node(), c0->name, &c) != QV_OK || c.uid != c0->uid) {
      rc = QV_ENOTFOUND;
      break;
    }
    char *merged = params_merge(c.params, body);
    rc = merged ? cl_coll_set_params(clr_node(), c.name, merged, c.cfg_mod_rev, &rev, &err)
                : QV_ENOMEM;
    qv_free(merged);
  }
  if (rc == QV_ENOTFOUND) {
    srv_fail(r, 404, "Not found: Collection `%s` doesn't exist!", c0->name);
    goto out;
  }
  if (rc != QV_OK) {
    srv_fail(r, 503, "Service unavailable: storing the params of `%s`: %s", c0->name, err.msg);
    goto out;
  }
  /* 3. Every live node holding copies brings them to the stored params. */
  holders = qv_calloc((size_t)c.shard_number * CL_RF_MAX + 1, sizeof *holders);
  for (uint32_t k = 0; holders && c.has_map && k < c.shard_number; k++)
    for (uint32_t i = 0; i < c.shards[k].n_reps; i++) {
      const char *node = c.shards[k].reps[i].node;
      bool seen = false;
      for (size_t j = 0; j < n_holders && !seen; j++) seen = !strcmp(holders[j], node);
      char addr[300];
      if (!seen && cl_node_iaddr(clr_node(), node, addr, sizeof addr))
        holders[n_holders++] = qv_strdup(node);
    }
  clr_reply *outs = qv_calloc(n_holders ? n_holders : 1, sizeof *outs);
  iop sync = {.op = "sync", .rev = rev};
  if (outs)
    on_nodes(r->s, c.name, &sync, 0, (const char *const *)holders, n_holders, "", 0, CALL_MS,
             outs);
  char failed[600] = "";
  for (size_t i = 0; outs && i < n_holders; i++) {
    if (outs[i].status != 200 && strlen(failed) + 200 < sizeof failed)
      snprintf(failed + strlen(failed), sizeof failed - strlen(failed), "%s%s: %u %.120s",
               failed[0] ? "; " : "", holders[i], outs[i].status, outs[i].body ? outs[i].body : "");
    clr_reply_clear(&outs[i]);
  }
  qv_free(outs);
  if (outs == NULL) srv_fail(r, 500, "Service internal error: out of memory");
  else if (failed[0])
    srv_fail(r, 503, "Service unavailable: the params of `%s` are stored, but some copies did "
             "not take them (repeat the PATCH): %s", c.name, failed);
  else srv_ok(r, json_true());
out:
  for (size_t i = 0; i < n_holders; i++) qv_free(holders[i]);
  qv_free(holders);
  cl_coll_free(&c);
  json_decref(body);
}

/* ---- routing --------------------------------------------------------------------------- */

bool clc_route_global(srv_req *r) {
  srv_handler fn = router_routes[r->route].fn;
  if (!strncmp(router_routes[r->route].pattern, "/internal/collections/", 22)) {
    internal_route(r);
    return true;
  }
  if (fn == h_coll_create) {
    coll_create(r);
    return true;
  }
  if (fn == h_coll_list) {
    coll_list(r);
    return true;
  }
  return false;
}

bool clc_route(srv_req *r, const cl_coll *c) {
  srv_handler fn = router_routes[r->route].fn;
  if (fn == h_coll_get) coll_info(r, c);
  else if (fn == h_coll_exists) srv_ok(r, json_pack("{s:b}", "exists", 1));
  else if (fn == h_coll_delete) coll_delete(r, c);
  else if (fn == h_coll_patch) coll_patch(r, c);
  else return false;
  return true;
}
