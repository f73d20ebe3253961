/* membership.h: a node's place in the cluster — registration under an etcd
 * lease, self-fencing when the lease cannot be renewed, a live view of the
 * members, and election of the one controller.
 *
 * Keys (prefix e.g. "/quiver/v1", values JSON):
 *   <prefix>/members/<node_id>  written by the node, on its lease:
 *                               {"node_id","addr","started_at","incarnation",
 *                                ...meta}
 *   <prefix>/controller         the node id of the controller, on its lease;
 *                               the key's create_revision is the controller
 *                               token (a fencing token: a later controller
 *                               always has a larger one)
 *
 * Liveness: the lease (TTL opts.ttl_s) is renewed every TTL/3. A node is
 * *fenced* from the moment it can no longer be sure its lease is alive:
 * etcd says the lease is gone, or no renewal succeeded for TTL - margin
 * (margin = min(1 s, TTL/4)) since the last successful one was *sent* — so
 * the node stops acting before etcd can hand its keys to anyone else.
 * mship_is_fenced() computes this from the clock on every call, so it is
 * exact even while the renewal thread is blocked. A fenced node drops the
 * controller role, revokes what is left of its lease and registers again
 * (new lease, incarnation + 1) as soon as etcd answers; the upper layer
 * learns both steps through on_state and must rejoin its shards as a new
 * incarnation (docs/cluster.md).
 *
 * Threads: mship runs one renewal thread and two etcd watches (members,
 * controller). Callbacks run on those threads and may run concurrently with
 * each other; keep them short, and never call mship_stop from one.
 * Everything else may be called from any thread. */
#ifndef QV_CLUSTER_MEMBERSHIP_H
#define QV_CLUSTER_MEMBERSHIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/etcd.h"
#include "quiver.h"

#define MSHIP_TTL_S_DEFAULT 5u
#define MSHIP_TTL_S_MIN 2u /* etcd's own minimum */
#define MSHIP_TTL_S_MAX 3600u
#define MSHIP_NODE_ID_MAX 128u
#define MSHIP_PREFIX_MAX 200u

typedef struct mship mship;

typedef struct mship_member {
  char *node_id;
  char *addr;  /* from the registered JSON; "" when absent */
  char *value; /* the registered JSON, NUL-terminated */
  int64_t create_revision, mod_revision, lease;
} mship_member;

typedef struct mship_view {
  uint64_t version;      /* +1 on every change this node has seen */
  int64_t revision;      /* the etcd revision the view reflects */
  mship_member *members; /* sorted by node_id */
  size_t n;
} mship_view;

void mship_view_free(mship_view *v); /* accepts NULL; leaves *v empty */

typedef enum mship_event {
  MSHIP_REGISTERED = 0, /* holds a lease again (after a fence) */
  MSHIP_FENCED,         /* lost (or could not confirm) its lease */
  MSHIP_CONTROLLER_GAINED,
  MSHIP_CONTROLLER_LOST,
} mship_event;

typedef struct mship_opts {
  const char *prefix;    /* "/quiver/v1": no trailing '/', at most
                          * MSHIP_PREFIX_MAX bytes */
  const char *node_id;   /* letters, digits, '-', '_', '.', at most
                          * MSHIP_NODE_ID_MAX bytes */
  const char *addr;      /* "host:port" others use to reach this node */
  const char *meta_json; /* optional JSON object merged into the member
                          * value (zone, capacity, ...); NULL = none */
  uint32_t ttl_s;        /* lease TTL, MSHIP_TTL_S_MIN..MAX (default 5) */
  bool campaign;         /* stand for controller (default true) */
  /* Called with a private copy of the view after every change. */
  void (*on_members)(void *ctx, const mship_view *v);
  void (*on_state)(void *ctx, mship_event ev);
  void *ctx;
} mship_opts;

void mship_opts_init(mship_opts *o);

/* Registers the node (waiting up to TTL + 1 s for a previous incarnation's
 * key to expire) and starts renewing, watching and campaigning. Borrows `c`
 * until mship_stop (it must outlive the mship); copies `o`'s strings.
 * On QV_OK the member key exists and *out is owned by the caller.
 * Errors: QV_EINVAL (bad option), QV_EEXIST (the node id is registered by a
 * live process), QV_EIO (etcd unreachable), QV_ENOMEM. */
qv_rc mship_start(etcd_client *c, const mship_opts *o, mship **out,
                  qv_err *err);

/* Leaves: stops the threads, then revokes the lease so that the member key
 * (and the controller key, if held) disappear at once. Accepts NULL. */
void mship_stop(mship *m);

/* True when the data path must refuse work: see the top of this file.
 * Cheap (atomics and a clock read). */
bool mship_is_fenced(const mship *m);

/* True when this node holds the controller key and is not fenced; *token
 * (may be NULL) receives the controller token. */
bool mship_is_controller(const mship *m, int64_t *token);

/* A copy of the current view; free with mship_view_free. */
qv_rc mship_view_get(mship *m, mship_view *out, qv_err *err);

typedef struct mship_status {
  bool is_registered, is_fenced, is_controller;
  int64_t lease;            /* 0 while not registered */
  uint64_t incarnation;     /* 1 at start, +1 per re-registration */
  uint64_t fences;          /* times this node fenced itself */
  int64_t controller_token; /* when is_controller */
  char controller[MSHIP_NODE_ID_MAX + 1]; /* holder seen, "" if none */
  /* CLOCK_MONOTONIC milliseconds: when the last successful renewal was
   * sent, and when the node last fenced itself (0 = never). */
  uint64_t last_renew_ms, fenced_at_ms;
} mship_status;

void mship_status_get(mship *m, mship_status *out);

/* For the shard map (shardmap.c): the client, the key prefix, this node's
 * id; borrowed from `m`. */
etcd_client *mship_client(const mship *m);
const char *mship_prefix(const mship *m);
const char *mship_node_id(const mship *m);

#endif
