/* ring.h: where shards live — consistent hashing of a collection's shards
 * onto cluster nodes with a bounded-load cap and `rf` copies per shard on
 * distinct nodes. Two rankings are offered: stratified rendezvous hashing
 * (the default; it moves the least data, docs/cluster.md) and the
 * classic ring with virtual nodes (kept for comparison and drawing).
 *
 * Placement has two levels. A point goes to shard id_hash(id) % n_shards
 * (ring_shard_of, the same rule the engine uses). A shard goes to nodes by
 * ring_place(), a pure function of (member ids, n_shards, options): every
 * node that computes it from the same input gets the same answer, byte for
 * byte, on any machine. The ring says where shards *should* be; the shard map
 * in etcd (shardmap.h) records where they *are*.
 *
 * Hashes are XXH3-64 (xxhash 0.8, whose output is frozen by its spec).
 * Rendezvous: node A ranks the shards by XXH3_64("<A>|<salt>|<shard>"),
 * largest first, and its preference for shard s is that rank (a permutation
 * of 0..n_shards-1: every node has exactly one favourite shard, one second
 * favourite, ...); two nodes at the same rank for a shard are ordered by
 * the larger hash. Ring: a node's i-th token is XXH3_64("<node_id>#<i>"), a
 * shard's position is XXH3_64("<salt>/<shard>"). docs/cluster.md lists test
 * vectors. */
#ifndef QV_CLUSTER_RING_H
#define QV_CLUSTER_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quiver.h"

#define RING_VNODES_DEFAULT 128u
#define RING_VNODES_MIN 1u
#define RING_VNODES_MAX 4096u
#define RING_EPS_DEFAULT 0.25
#define RING_EPS_MAX 100.0
#define RING_NODE_ID_MAX 128u /* bytes of a node id, without the NUL */
#define RING_SHARDS_MAX 65536u
#define RING_MEMBERS_MAX 4096u

typedef enum ring_algo {
  RING_RENDEZVOUS = 0, /* stratified rendezvous hashing (default) */
  RING_VNODES,         /* consistent-hash ring with `vnodes` tokens per node */
} ring_algo;

typedef struct ring_opts {
  ring_algo algo;  /* default RING_RENDEZVOUS */
  uint32_t vnodes; /* RING_VNODES: tokens per node, RING_VNODES_MIN..MAX
                    * (default 128); ignored by RING_RENDEZVOUS */
  uint32_t rf;     /* copies per shard wanted, >= 1 (default 1) */
  /* Bounded load: no node holds more than ceil((1 + eps) * copies / nodes)
   * copies. 0..RING_EPS_MAX, default 0.25. */
  double eps;
  /* Spreads collections differently: shard positions hash "<salt>/<shard>".
   * Borrowed for the call; NULL means "". Usually the collection name. */
  const char *salt;
} ring_opts;

void ring_opts_init(ring_opts *o);

/* The result of ring_place(). Owns everything it points to. */
typedef struct ring_placement {
  uint32_t n_shards;
  uint32_t rf; /* copies per shard: min(opts.rf, n_members) */
  uint32_t n_members;
  uint32_t cap;   /* the bounded-load cap that was applied */
  char **members; /* node ids in strcmp order */
  /* n_shards * rf member indexes: shard s owns [s * rf, (s + 1) * rf), in
   * preference order; the first is the preferred primary. */
  uint32_t *replicas;
  uint32_t *load; /* copies held, per member */
} ring_placement;

/* Places `n_shards` shards on the `n_members` nodes named by `members`
 * (distinct, non-empty, at most RING_NODE_ID_MAX bytes; order does not
 * matter). `o` may be NULL for the defaults. On QV_OK *out is owned by the
 * caller (ring_placement_free). Guarantees: every shard has min(rf, n)
 * copies on distinct nodes; every node holds at most `cap` copies; the
 * result depends only on the set of ids, n_shards and `o`.
 * Errors: QV_EINVAL (no members, a duplicate or malformed id, bad options),
 * QV_ENOMEM. Cost: O(n_shards * n_members * log) time and memory. */
qv_rc ring_place(const char *const *members, size_t n_members,
                 uint32_t n_shards, const ring_opts *o, ring_placement **out,
                 qv_err *err);
void ring_placement_free(ring_placement *p); /* accepts NULL */

/* The node id of copy `k` (0 = preferred primary) of `shard`; borrowed from
 * `p`. NULL when out of range. */
const char *ring_replica(const ring_placement *p, uint32_t shard, uint32_t k);
/* Whether `shard` has a copy on `node`. */
bool ring_holds(const ring_placement *p, uint32_t shard, const char *node);

/* One step of moving from one placement to another: give `shard` a copy on
 * `node` (is_add), or take it away. `node` is borrowed from the placement it
 * came from (the new one for adds, the old one for removes). */
typedef struct ring_move {
  uint32_t shard;
  bool is_add;
  const char *node;
} ring_move;

typedef struct ring_diff {
  ring_move *moves; /* all adds (by shard, then node), then all removes */
  size_t n_moves;
  size_t n_adds; /* moves[0..n_adds) are adds */
} ring_diff;

/* Lists the copy moves that turn `from` into `to` (same n_shards): adds
 * first, then removes, so that following the list in order never leaves a
 * shard with fewer copies than either placement has. Changes of primary
 * alone are not moves. The diff borrows node ids from both placements: free
 * it (ring_diff_free) before them. Errors: QV_EINVAL (different n_shards),
 * QV_ENOMEM. */
qv_rc ring_placement_diff(const ring_placement *from, const ring_placement *to,
                          ring_diff *out, qv_err *err);
void ring_diff_free(ring_diff *d); /* accepts NULL */

/* The shard of a point: id_hash(id) % n_shards (n_shards >= 1). */
uint32_t ring_shard_of(const qv_point_id *id, uint32_t n_shards);

/* The hashes the ring is made of, exposed for test vectors and for drawing
 * the ring: XXH3_64 of the bytes, of "<node>#<i>", of "<salt>/<shard>". */
uint64_t ring_hash(const void *data, size_t len);
uint64_t ring_token(const char *node_id, uint32_t i);
uint64_t ring_shard_pos(const char *salt, uint32_t shard);
/* The rendezvous hash of (node, salt, shard); `salt` NULL means "". */
uint64_t ring_hrw_hash(const char *node_id, const char *salt, uint32_t shard);

#endif
