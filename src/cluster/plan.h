/* plan.h: the controller's decisions for one collection, as a pure function
 * of (shard map, live members, draining members, transfer reports, clock).
 *
 * cl_plan() takes a collection as this node sees it (node.h) and edits its
 * shard map in place into the next map to write (epoch + 1), returning
 * whether anything changed. It reads no clock and no global state, so every
 * rule below is unit-tested without etcd (tests/cluster/test_plan.c):
 *
 *  1. A partial copy whose transfer source (the shard's primary, same term)
 *     reported "done" for the same transfer id becomes insync.
 *  2. An insync copy that its primary (same term) reported stale — it
 *     failed to apply a write the primary applied — becomes dead (and, its
 *     node being live, rejoins by a full transfer, rule 6).
 *     A partial copy on a node that is not live is dropped (it held nothing
 *     anyone relies on); an insync copy on a node that is not live becomes
 *     dead — unless no live insync copy would remain: the last copies are
 *     waited for, never given up (an acknowledged write may be only there).
 *  3. A shard whose primary is not a live insync copy gets the first live
 *     insync copy as primary, term + 1.
 *  4. A dead copy older than the move delay is dropped (when the shard has a
 *     live insync copy); its node then leaves the placement and rule 6
 *     re-creates the copy elsewhere.
 *  5. The target placement is ring_place over the live, non-draining members
 *     plus nodes whose dead copies are still within the move delay.
 *  6. At most one new partial copy per shard, and per node at most one
 *     transfer in (partial copies it holds) and one out (partial copies of
 *     shards it is primary of): a dead copy on a live node rejoins (becomes
 *     partial, a full transfer refills it), else the first target node
 *     without a copy gets one. Under-replicated shards go first.
 *  7. Only when every target copy of a shard is insync (no transfer in
 *     flight) are the copies outside the target removed; a primary that is
 *     removed hands over to the first insync target copy, term + 1. So a
 *     shard never has fewer insync copies than min(rf, targets) because of a
 *     move, and adding always comes before removing.
 *
 * Pinned shards (an operator's move_shard, replicate_shard, drop_replica or
 * abort_transfer through POST /collections/{c}/cluster, cl_plan_op):
 *
 *  8. A pinned shard's target is its own copies minus those marked leaving,
 *     not the ring: rule 6 only rejoins its dead copies on live nodes, and
 *     rule 7 removes its leaving copies once it has no partial copy and
 *     every other copy is insync on a live node (a removed primary hands
 *     over to the first such copy, term + 1). So the next plan round never
 *     undoes an operator's placement.
 *  9. The pin is released (the shard goes back to the ring, its leaving
 *     marks cleared) when a pinned copy's node drains, or when rule 4 drops
 *     a pinned copy that stayed dead past the move delay. A partial copy of
 *     a pinned shard that rule 2 drops (its node died) clears the leaving
 *     marks: a move that lost its target keeps its source. */
#ifndef QV_CLUSTER_PLAN_H
#define QV_CLUSTER_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/node.h"
#include "quiver.h"

typedef struct cl_plan_in {
  const char *const *live; /* live member ids */
  size_t n_live;
  const char *const *draining; /* ids marked draining (may be absent ones) */
  size_t n_draining;
  int64_t now_ms;        /* wall-clock unix ms (dead copies' age) */
  int64_t move_delay_ms; /* rule 4 */
  /* Called once per decision with a line of text (may be NULL). */
  void (*log)(void *ctx, const char *line);
  void *ctx;
} cl_plan_in;

/* Edits c's shards into the next map (whose epoch will be c->epoch + 1; new
 * transfer ids are that epoch). True when anything changed. `c` must have a
 * map. */
bool cl_plan(cl_coll *c, const cl_plan_in *in);

/* Applies an operator's request `op` to c's map (the same next map as
 * cl_plan; a copy it adds gets transfer id c->epoch + 1), pinning the
 * shard (rule 8). The source of a transfer is always the shard's primary,
 * whose data every insync copy equals, so `from` only has to hold an
 * insync copy. Operator transfers skip rule 6's per-node throttle but keep
 * one partial copy per shard.
 *   CL_OP_MOVE, CL_OP_REPLICATE: `from` holds an insync copy, `to` is live,
 *     not draining and holds no copy, the shard has no partial copy and
 *     fewer than CL_RF_MAX copies; adds a partial copy on `to` (MOVE also
 *     marks `from`'s copy leaving).
 *   CL_OP_DROP: removes `from`'s copy at once; an insync one only while
 *     another insync copy on a live node remains (which becomes primary,
 *     term + 1, if needed).
 *   CL_OP_ABORT: removes the partial copy on `to` whose source (the
 *     primary) is `from`, and clears the leaving marks.
 *   CL_OP_UNPIN: gives the shard back to the ring (Quiver's extension).
 * Errors (nothing changed): QV_ENOTFOUND (no such shard), QV_EINVAL (a
 * peer that is not a member, or a request the map refuses; the message
 * says why in Qdrant's words), QV_EBUSY (the shard's transfer slot is
 * taken). */
qv_rc cl_plan_op(cl_coll *c, const cl_op *op, const cl_plan_in *in, qv_err *err);

#endif
