/* shard.h: a shard — a self-contained part of a collection with its own
 * write-ahead log, segments and MANIFEST, so that it can be snapshotted,
 * moved and restored on its own.
 *
 *   <dir>/MANIFEST            sealed segments in write order + checkpoint LSN
 *   <dir>/wal/                the log (storage/wal.h)
 *   <dir>/segments/<id>/      segment.qvs + graph.qvh per sealed segment
 *
 * Locking: `lock` (rwlock) guards the id map, the segment list pointer and
 * the mutable segment; writers hold it exclusively while they append to the
 * log and apply, readers briefly to take a reference to the segment list.
 * fsync happens outside it (group commit, storage/wal.c). `build_mu`
 * serialises index builds of this shard. Searches see the snapshot
 * min(applied LSN, durable LSN): never a half-applied batch, never a write
 * that could still be lost. */
#ifndef QV_ENGINE_SHARD_H
#define QV_ENGINE_SHARD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/idmap.h"
#include "engine/record.h"
#include "engine/segment.h"
#include "quiver.h"
#include "storage/wal.h"
#include "vec/dist.h"

/* An immutable array of segments in write order: sealed..., frozen...,
 * mutable. Replaced whole (copy on write) and reference counted. */
typedef struct seglist {
  int refs;
  uint32_t n;
  segment *segs[];
} seglist;

void seglist_unref(seglist *l);

typedef struct shard {
  char *dir;
  uint32_t shard_no;
  qv_collection_config cfg;
  spaces sp; /* segments point here: it lives as long as the shard */
  uint32_t row_bytes; /* bytes of all vectors of one row */
  uint32_t mutable_cap;

  wal *log;
  pthread_rwlock_t lock;
  pthread_mutex_t build_mu;
  idmap map;
  seglist *list;
  segment *mut; /* the last element of list */
  uint64_t applied_lsn; /* atomic */
  uint64_t checkpoint_lsn;
  uint64_t next_segment_id;
  bool failed; /* atomic; a write could not be made durable */
  idxdefs *defs; /* payload index definitions (NULL: none); under `lock` */
  rec_buf buf;
  uint32_t n_threads; /* index build threads */
} shard;

/* Creates an empty shard at `dir` (which must not exist). */
qv_rc shard_create(const char *dir, qv_err *err);
/* Opens and recovers the shard at `dir`. */
/* Rows of a new mutable segment for `segment_max_points` (capped by the
 * vector bytes a mutable segment may reserve). */
uint32_t shard_mutable_cap(const shard *sh, uint32_t segment_max_points);
qv_rc shard_open(const char *dir, uint32_t shard_no,
                 const qv_collection_config *cfg, uint32_t n_threads,
                 shard **out, qv_err *err);
void shard_close(shard *sh); /* accepts NULL */

/* Writes; points are validated and (Cosine) normalised by the caller.
 * vecs[i * sp.n + s] is point i's stored vector of space s (NULL: none);
 * only ids and payloads are read from `pts`. */
qv_rc shard_upsert(shard *sh, const qv_point *pts, const float *const *vecs,
                   size_t n, qv_err *err);
qv_rc shard_delete(shard *sh, const qv_point_id *ids, size_t n,
                   size_t *n_deleted, qv_err *err);

/* Computes a point's new payload from its current one (`old` NULL means {}):
 * *out receives qv_malloc'd JSON text (NULL or "" for {}). Must not modify
 * `old`, which is shared. */
typedef qv_rc (*payload_fn)(void *ctx, const struct json_t *old, char **out,
                            qv_err *err);

/* Rewrites the payloads of the points with these ids (ids non-NULL; missing
 * ones are skipped) or of those matching `filter` (ids NULL; filter NULL =
 * all), keeping their vectors; atomic per point, durable on return.
 * *n_changed (may be NULL) receives how many points were rewritten. */
qv_rc shard_rewrite_payloads(shard *sh, const qv_point_id *ids, size_t n,
                             const qv_filter *filter, payload_fn fn, void *ctx,
                             size_t *n_changed, qv_err *err);

/* A consistent read view: the segment list and the snapshot LSN. */
typedef struct shard_view {
  seglist *list;
  uint64_t snap;
  idxdefs *defs; /* counted reference, may be NULL */
} shard_view;
void shard_view_get(shard *sh, shard_view *v);
void shard_view_get_locked(shard *sh, shard_view *v); /* lock held */
void shard_view_put(shard_view *v);

/* Freezes the mutable segment (if it holds anything) so the optimizer seals
 * it; returns whether it did. */
qv_rc shard_freeze(shard *sh, bool *frozen, qv_err *err);
/* Seals the oldest frozen segment, or merges sealed segments that need it.
 * *did_work says whether there was anything to do. Holds build_mu; with
 * `wait` false it returns at once when another thread is building. */
qv_rc shard_optimize_step(shard *sh, bool wait, bool *did_work, qv_err *err);

/* Publishes a new segment list, taking ownership of `nl` and dropping the
 * old one; the write lock is held. */
void shard_install_list(shard *sh, seglist *nl);

/* Appends a consistent snapshot of the shard to the archive, its members
 * under `prefix/` (snapshot.c). Writes may continue meanwhile. */
struct tar_writer;
qv_rc shard_snapshot(shard *sh, struct tar_writer *t, const char *prefix,
                     qv_err *err);

/* Replaces the payload index definitions (takes a reference to `d`). */
void shard_set_indexes(shard *sh, idxdefs *d);

/* Make the shard refuse further writes after a durability failure. */
void shard_fail(shard *sh, const char *why);

#endif
