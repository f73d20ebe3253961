/* node.h: one Quiver process in cluster mode — its membership (through
 * membership.h), its in-memory copy of every collection's stored config and
 * shard map (kept current by one etcd watch), and the controller loop that
 * places new collections and then applies plan.h's decisions (transfers,
 * dead copies, promotion, drain, rejoin) one CAS per collection per pass.
 *
 * etcd keys used here (besides membership's):
 *   <prefix>/collections/<c>/config    {"shard_number","replication_factor",
 *                                       "write_consistency_factor","uid",
 *                                       "params": <collection params>},
 *                                       created (create-if-absent) by the node
 *                                       that took the PUT; "params" replaced
 *                                       by a PATCH (CAS on its version); the
 *                                       whole <c>/ prefix deleted by a DELETE
 *   <prefix>/collections/<c>/shardmap  {"epoch","shard_number",
 *                                       "replication_factor","shards":[{"id",
 *                                       "term","primary","replicas":[{"node",
 *                                       "state":"insync"|"dead"}]}]}, written
 *                                       by the controller only (fenced CAS,
 *                                       shardmap.h); replicas may also be
 *                                       "partial" (with "xfer") or carry
 *                                       "dead_ms"; a shard may be "pinned"
 *                                       and its replicas "leaving" (plan.h)
 *   <prefix>/collections/<c>/xfer.<k>  a transfer source's report (cl_xfer)
 *   <prefix>/collections/<c>/stale.<k>.<node>  a primary's stale-copy report
 *   <prefix>/collections/<c>/op.<k>    an operator's request on shard k
 *                                       (cl_op_submit), on the submitter's
 *                                       lease; consumed by the controller
 *   <prefix>/drain/<node_id>           drain marks
 *
 * Incarnations: a collection deleted and created again under the same name
 * is a new incarnation. Its config carries a fresh random "uid" (local
 * shard copies are marked with it, src/server/cluster_coll.c), and its
 * first map starts epoch and every shard's term at the config key's etcd
 * create_revision — larger than any epoch or term an earlier incarnation
 * reached (each of those was one map write, at an earlier revision) — so
 * every fencing check (map epoch, shard term, sequence freshness, transfer
 * ids) refuses what the old incarnation's nodes still send. Every map
 * write is also conditional on that create_revision, so a controller pass
 * that raced a DELETE can never leave a map behind.
 *
 * This file knows nothing about HTTP or the engine: the server
 * (src/server/routes_cluster.c) routes requests by the view kept here.
 *
 * Invariants kept by the controller: the map's epoch goes up by exactly one
 * per change; a shard's primary is always one of its "insync" replicas; a
 * shard never loses its last "insync" replica (a dead node's copy stays
 * "insync" when it is the only one left, so the shard waits for it instead
 * of losing acknowledged writes); a promotion bumps the shard's term.
 *
 * Threads: the watch and membership callbacks and the controller thread run
 * inside; every function here may be called from any thread. */
#ifndef QV_CLUSTER_NODE_H
#define QV_CLUSTER_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/membership.h"
#include "quiver.h"

#define CL_RF_MAX 8u
#define CL_SHARDS_MAX 1024u
#define CL_NAME_MAX 255u
#define CL_ID_MAX MSHIP_NODE_ID_MAX

/* A copy's state. CL_PARTIAL: being filled by a transfer from the primary;
 * it receives every live write but serves no read and does not count for
 * acknowledgements until the controller turns it CL_INSYNC. */
typedef enum cl_rstate { CL_INSYNC = 0, CL_DEAD, CL_PARTIAL } cl_rstate;

typedef struct cl_replica {
  char node[CL_ID_MAX + 1];
  cl_rstate state;
  int64_t xfer;    /* CL_PARTIAL: the map epoch that added it (the transfer's id) */
  int64_t dead_ms; /* CL_DEAD: wall-clock unix ms when it was marked dead */
  bool is_leaving; /* pinned shards: removed once the others are insync */
} cl_replica;

/* A transfer source's report, <prefix>/collections/<c>/xfer.<shard>, written
 * by the primary on its own lease (so it vanishes when the source dies). */
typedef struct cl_xfer {
  uint32_t shard;
  char from[CL_ID_MAX + 1], to[CL_ID_MAX + 1];
  int64_t xfer;  /* the partial copy's id (cl_replica.xfer) */
  uint64_t term; /* the source's term as primary */
  char phase[16]; /* "copying", "done" (caught up, live writes flowing), "failed" */
  uint64_t copied, total; /* points */
  int64_t started_ms, updated_ms;
} cl_xfer;

typedef struct cl_shard {
  uint32_t id;
  uint64_t term;
  char primary[CL_ID_MAX + 1];
  cl_replica reps[CL_RF_MAX];
  uint32_t n_reps;
  bool is_pinned; /* placed by an operator, not by the ring (plan.h rule 8) */
} cl_shard;

/* A primary's report that an insync copy failed to apply a write it applied
 * (<prefix>/collections/<c>/stale.<shard>.<node>, on the primary's lease):
 * the copies may differ, so the controller marks the copy dead and it is
 * refilled by a transfer. */
typedef struct cl_stale {
  uint32_t shard;
  char node[CL_ID_MAX + 1], from[CL_ID_MAX + 1];
  uint64_t term;
} cl_stale;

/* An operator's request on one shard (POST /collections/{c}/cluster),
 * applied by the controller with cl_plan_op (plan.h). */
typedef enum cl_op_kind {
  CL_OP_MOVE = 0,  /* move_shard: copy to `to`, then drop `from`'s copy */
  CL_OP_REPLICATE, /* replicate_shard: one more copy, on `to` */
  CL_OP_DROP,      /* drop_replica: remove the copy on `from` */
  CL_OP_ABORT,     /* abort_transfer: remove the partial copy on `to` */
  CL_OP_UNPIN,     /* Quiver's unpin_shard: the ring places the shard again */
} cl_op_kind;

typedef struct cl_op {
  cl_op_kind kind;
  uint32_t shard;
  char from[CL_ID_MAX + 1], to[CL_ID_MAX + 1]; /* node ids ("" when unused) */
  /* As stored in etcd (node.c): the submission's id, the submitter's
   * lease, and the controller's refusal ("" while pending). */
  char id[40];
  int64_t lease, rev; /* rev: the key's mod_revision */
  char refused[240];
} cl_op;

/* A private copy of one collection as this node last saw it in etcd. */
typedef struct cl_coll {
  char name[CL_NAME_MAX + 1];
  char *params; /* the collection params (JSON text), qv_malloc'd */
  uint32_t shard_number, rf;
  uint32_t wcf; /* write_consistency_factor: insync copies a write needs, >= 1 */
  uint64_t uid; /* the incarnation's random id (0: created before uids) */
  /* The config key's create_revision (the incarnation's place in etcd's
   * history) and mod_revision (its version, bumped by a PATCH). */
  int64_t cfg_rev, cfg_mod_rev;
  bool has_map;
  int64_t epoch, map_rev; /* when has_map */
  cl_shard *shards;       /* shard_number entries when has_map */
  cl_xfer *xfers;         /* transfer reports seen, at most one per shard */
  size_t n_xfers;
  cl_stale *stale;        /* stale-copy reports seen */
  size_t n_stale;
  cl_op *ops;             /* operator requests seen, at most one per shard */
  size_t n_ops;
} cl_coll;

void cl_coll_free(cl_coll *c); /* accepts NULL; leaves *c empty */

typedef struct cl_node_opts {
  const char *endpoints; /* etcd, comma-separated */
  const char *prefix;    /* default "/quiver/v1" */
  const char *node_addr; /* host:port other nodes use */
  const char *data_dir;  /* the node id is kept in <data_dir>/cluster_node_id */
  uint32_t ttl_s;        /* lease TTL, default 5 */
  /* How long a dead copy is waited for before it is re-created elsewhere
   * (a node back within it rejoins its old copies); default 60 s. */
  uint32_t move_delay_s;
  /* Node-to-node address (a listener with a thread per connection), kept
   * in the member record as "iaddr"; NULL = peers dial node_addr. */
  const char *internal_addr;
} cl_node_opts;

typedef struct cl_node cl_node;

/* Reads (or creates) the node id, registers in etcd, starts the watch and
 * the controller thread. Errors: QV_EINVAL, QV_EIO (etcd unreachable, the
 * data directory unusable), QV_EEXIST (this node id is registered by a live
 * process), QV_ENOMEM. */
qv_rc cl_node_start(const cl_node_opts *o, cl_node **out, qv_err *err);
/* Stops the threads and leaves the cluster (lease revoked). Accepts NULL. */
void cl_node_stop(cl_node *n);

const char *cl_node_id(const cl_node *n);
/* The node id as Qdrant's numeric peer id (ids are decimal u64 text). */
uint64_t cl_peer_id(const char *node_id);
mship *cl_node_mship(cl_node *n);
bool cl_node_fenced(const cl_node *n);
uint32_t cl_node_ttl_s(const cl_node *n);

/* "host:port" of live member `node_id` into buf; false when it is not live. */
bool cl_node_addr(cl_node *n, const char *node_id, char *buf, size_t cap);
/* The address node-to-node calls to `node_id` go to: its "iaddr" when it
 * advertises one, else its addr. False when it is not live. */
bool cl_node_iaddr(cl_node *n, const char *node_id, char *buf, size_t cap);

/* A copy of collection `name`. Errors: QV_ENOTFOUND. */
qv_rc cl_coll_get(cl_node *n, const char *name, cl_coll *out);
/* The names of every known collection (qv_malloc'd array of qv_malloc'd
 * strings; free with cl_names_free). */
qv_rc cl_coll_names(cl_node *n, char ***names, size_t *count);
void cl_names_free(char **names, size_t count);

/* Waits (bounded) until this node's copy of `name` has a map of at least
 * `min_epoch`. True when it has. */
bool cl_wait_map(cl_node *n, const char *name, int64_t min_epoch, uint32_t timeout_ms);

/* Stores the config of a new collection, create-if-absent; the controller
 * then places it. `params_json` is a JSON object. Errors: QV_EEXIST,
 * QV_EINVAL, QV_EIO (outcome unknown). */
qv_rc cl_coll_create(cl_node *n, const char *name, const char *params_json,
                     uint32_t shard_number, uint32_t rf, uint32_t wcf, qv_err *err);

/* Deletes collection `name` from etcd — config, map, reports, requests —
 * in one call; every node's watch then forgets it. Errors: QV_EINVAL (bad
 * name), QV_EIO (outcome unknown: deleting again is harmless). */
qv_rc cl_coll_delete(cl_node *n, const char *name, qv_err *err);

/* Replaces the stored params of `name` (a JSON object) if its config is
 * still at version `if_mod_rev` (cl_coll.cfg_mod_rev); *mod_rev (may be
 * NULL) receives the new version. Errors: QV_EBUSY (changed meanwhile:
 * re-read and retry), QV_ENOTFOUND (deleted or re-created), QV_EINVAL,
 * QV_EIO (outcome unknown). */
qv_rc cl_coll_set_params(cl_node *n, const char *name, const char *params_json,
                         int64_t if_mod_rev, int64_t *mod_rev, qv_err *err);

/* Waits (bounded) until this node's copy of `name` is gone or belongs to
 * another incarnation than `uid` (true), or has a config of at least
 * version `min_mod_rev` (cl_wait_config). */
bool cl_wait_gone(cl_node *n, const char *name, uint64_t uid, uint32_t timeout_ms);
bool cl_wait_config(cl_node *n, const char *name, int64_t min_mod_rev, uint32_t timeout_ms);

/* Whether this node's view of the collections is complete: the watch
 * delivered its first snapshot and the node is not fenced. What is absent
 * from a complete view was deleted (or never existed). */
bool cl_view_complete(cl_node *n);

/* Submits an operator's request to the controller (key op.<shard>, on
 * this node's lease, create-if-absent) and waits up to timeout_ms for the
 * outcome. QV_OK: applied (this node's view already shows the new map).
 * Errors: QV_EINVAL (refused; err says why), QV_EBUSY (a request on the
 * shard is pending), QV_ENOTFOUND (the collection went away), QV_EIO
 * (etcd, or no answer in time: the outcome is unknown). */
qv_rc cl_op_submit(cl_node *n, const char *coll, const cl_op *op, uint32_t timeout_ms,
                   qv_err *err);

/* The bounded-load cap the placement applies to `copies` copies over
 * `n_nodes` nodes (ring.h's rule, eps 0.25). */
uint32_t cl_load_cap(uint32_t copies, uint32_t n_nodes);

/* Publishes a transfer report (this node is the source) on this node's
 * lease; `x->shard` names the key. Errors: QV_EIO, QV_ENOMEM. */
qv_rc cl_xfer_publish(cl_node *n, const char *coll, const cl_xfer *x, qv_err *err);
/* Removes the report of shard `shard` of `coll`. */
void cl_xfer_unpublish(cl_node *n, const char *coll, uint32_t shard);

/* Reports (as the primary of `shard` at `term`) that the copy on `node`
 * missed a write. Errors: QV_EIO. */
qv_rc cl_stale_publish(cl_node *n, const char *coll, uint32_t shard, const char *node,
                       uint64_t term, qv_err *err);

/* Marks node `node_id` as draining (the controller moves every copy off it)
 * or clears the mark: key <prefix>/drain/<node_id>, no lease. Errors:
 * QV_EINVAL (bad id), QV_EIO. */
qv_rc cl_drain_set(cl_node *n, const char *node_id, bool on, qv_err *err);
bool cl_is_draining(cl_node *n, const char *node_id);
/* The draining node ids (free with cl_names_free). */
qv_rc cl_drain_list(cl_node *n, char ***ids, size_t *count);

/* Recent controller and data-path events (newest last) as a JSON array
 * text, qv_malloc'd; events are also logged. */
void cl_event(cl_node *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *cl_events_json(cl_node *n, uint64_t after);

#endif
