/* segment_index.h: payload index definitions and the per-segment cache of
 * built indexes (segment_index.c).
 *
 * A collection's definitions are an immutable, reference-counted list that
 * is replaced whole when an index is created or dropped. Each segment builds
 * the index of a definition on first use, over the rows it has at that
 * moment; a growing (mutable) segment rebuilds it once it has grown by a
 * quarter, and rows past what an index covers are always candidates. */
#ifndef QV_ENGINE_SEGMENT_INDEX_H
#define QV_ENGINE_SEGMENT_INDEX_H

#include <pthread.h>

#include "filter/payload_index.h"
#include "quiver.h"

#define PINDEX_MAX 64 /* indexed fields per collection */

typedef struct idxdef {
  char field[256];
  pindex_type type;
  uint64_t id; /* unique per definition, so caches never confuse two */
  fpath path;  /* field, parsed */
} idxdef;

typedef struct idxdefs {
  int refs;
  uint32_t n;
  idxdef d[PINDEX_MAX];
} idxdefs;

idxdefs *idxdefs_ref(idxdefs *d);
void idxdefs_unref(idxdefs *d);

struct segment;

/* One built index in a segment's cache. */
typedef struct segpix {
  uint64_t def_id;
  pindex *ix;
  int refs;
} segpix;

typedef struct segidx {
  pthread_mutex_t mu;
  segpix *built[PINDEX_MAX];
  uint32_t n_built;
} segidx;

void segidx_init(segidx *c);
void segidx_destroy(segidx *c);

/* Candidate rows of `f` in segment `s` from its indexable `must`
 * conditions. Returns false when no condition could use an index (then
 * `out` is untouched); true with `out` set (rows [0, n_rows), including the
 * rows past an index's coverage). Errors leave it false. */
bool segidx_candidates(struct segment *s, uint32_t n_rows, const idxdefs *defs,
                       const qv_filter *f, rowset *out);

#endif
