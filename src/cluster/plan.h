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
 *     move, and adding always comes before removing. */
#ifndef QV_CLUSTER_PLAN_H
#define QV_CLUSTER_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/node.h"

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

#endif
