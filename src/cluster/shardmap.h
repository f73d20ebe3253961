/* shardmap.h: the stored shard map of a collection — where its shards are
 * and in which state — at <prefix>/collections/<name>/shardmap in etcd.
 *
 * The document is JSON with at least an integer "epoch" >= 1; the rest
 * (shards, replicas, terms, states) belongs to the controller and the data
 * path and is stored verbatim. Only the controller writes it, and only by
 * compare-and-swap: a write names the version it replaces (the key's
 * mod_revision as read, with epoch + 1), and it is refused when anyone wrote
 * in between or when the writer no longer holds the controller key it
 * campaigned for (its token). So two controllers, or one controller racing
 * its own stale read, can never both win, and epochs in etcd's history are
 * consecutive. A write may carry guards (more compares) and more
 * operations in the same transaction (shardmap_cas_write_ex). */
#ifndef QV_CLUSTER_SHARDMAP_H
#define QV_CLUSTER_SHARDMAP_H

#include <stdint.h>

#include "cluster/etcd.h"
#include "cluster/membership.h"
#include "quiver.h"

typedef struct shardmap_doc {
  char *json; /* NUL-terminated */
  size_t len;
  int64_t epoch;
  int64_t mod_revision; /* the etcd version this document is */
} shardmap_doc;

void shardmap_doc_free(shardmap_doc *d); /* accepts NULL; leaves *d empty */

/* Reads the map of `collection` under `prefix` (any node may). On QV_OK
 * *out is filled; free with shardmap_doc_free. Errors: QV_ENOTFOUND (no map
 * yet), QV_ECORRUPT (stored value is not JSON with an integer epoch),
 * QV_EINVAL (bad name), QV_EIO. */
qv_rc shardmap_read(etcd_client *c, const char *prefix, const char *collection,
                    shardmap_doc *out, qv_err *err);

/* Writes `json` as the new map of `collection`, replacing `prev` (as read
 * by shardmap_read), or creating the first map when prev is NULL. `json`
 * must be an object whose "epoch" is prev->epoch + 1 (>= 1 when creating).
 * Must be called on the controller. On QV_OK *mod_revision (may be NULL)
 * is the new version. Errors: QV_EBUSY (refused, nothing written: the map
 * changed since `prev` — a stale epoch — or exists already when creating,
 * or this node is not, or no longer, the controller; the message says
 * which; re-read and decide again), QV_EINVAL (bad document or epoch),
 * QV_EIO (outcome unknown: re-read). */
qv_rc shardmap_cas_write(mship *m, const char *collection,
                         const shardmap_doc *prev, const char *json,
                         int64_t *mod_revision, qv_err *err);

/* What a map write may add to its transaction: more compares that must
 * hold (e.g. the collection's config still being the incarnation the map
 * was computed for) and more operations done with the put (e.g. deleting
 * the requests the new map consumed). Borrowed for the call. */
typedef struct shardmap_extra {
  const etcd_cmp *guards;
  size_t n_guards;
  const etcd_op *ops; /* success branch only; must not touch the map key */
  size_t n_ops;
} shardmap_extra;

/* shardmap_cas_write with `extra` (may be NULL): refused (QV_EBUSY, "a
 * guard failed") also when one of extra->guards does not hold; the extra
 * operations happen in the same transaction as the put, or not at all. */
qv_rc shardmap_cas_write_ex(mship *m, const char *collection,
                            const shardmap_doc *prev, const char *json,
                            const shardmap_extra *extra, int64_t *mod_revision,
                            qv_err *err);

#endif
