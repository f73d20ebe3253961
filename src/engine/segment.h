/* segment.h: a segment — a run of rows of one shard.
 *
 * Life cycle:
 *
 *   MUTABLE --shard_freeze()--> FROZEN --optimizer builds--> (replaced by) SEALED
 *   SEALED(s) --optimizer merges--> (replaced by) SEALED
 *
 * A MUTABLE segment takes appends (under the shard's write lock) into flat
 * arrays reserved up front with anonymous mappings, so rows never move and
 * readers scan them without locks. A FROZEN one takes no more rows and is
 * searched exactly until its replacement is built. A SEALED segment lives in
 * a file (segfile) mapped read-only, with an HNSW graph.
 *
 * Visibility (MVCC): each row has the LSN of the write that created it
 * (ins_lsn) and of the write that replaced or deleted it (del_lsn, UINT64_MAX
 * while live). A reader with snapshot LSN s sees a row iff
 * ins_lsn <= s < del_lsn. del_lsn is the only field that changes after a row
 * is published; it is written once, atomically, under the shard's write lock.
 *
 * Segments are reference counted: the shard's segment list holds one
 * reference and every reader of that list holds the list. */
#ifndef QV_ENGINE_SEGMENT_H
#define QV_ENGINE_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/fileio.h"
#include "engine/segment_codes.h"
#include "engine/segment_index.h"
#include "engine/space.h"
#include "index/hnsw.h"
#include "quiver.h"
#include "storage/segfile.h"
#include "vec/dist.h"

#define LSN_LIVE UINT64_MAX

typedef enum seg_state { SEG_MUTABLE, SEG_FROZEN, SEG_SEALED } seg_state;

typedef struct segment {
  uint64_t seg_id; /* file name of a sealed segment */
  seg_state state;
  const spaces *sp; /* the collection's vector spaces (outlives segments) */
  uint32_t cap;     /* rows reserved (mutable) or held (sealed) */
  uint32_t n_rows;  /* published rows; atomic, release on append */

  /* per vector space: rows x dim floats (zeros where absent), presence */
  const float *vecs[QV_SPACES_MAX];
  const uint8_t *present[QV_SPACES_MAX];
  hnsw *graph[QV_SPACES_MAX]; /* sealed only; NULL for a space no row has */
  bool all_present[QV_SPACES_MAX]; /* sealed: every row has the vector */
  const qv_point_id *ids;
  const uint64_t *ins_lsn;
  uint64_t *del_lsn; /* always writable memory */
  uint32_t n_dead;   /* rows with del_lsn set; atomic */

  /* payloads: mutable rows own a qv_malloc'd copy each; sealed rows point
   * into the file */
  char **payloads;
  uint32_t *payload_lens;
  const uint64_t *payload_off;
  const char *payload_blob;
  /* payloads parsed on first use by a filter, published with a CAS; each
   * is immutable once published */
  struct json_t **pjson;

  /* tombstones: deletes recorded while this segment covered the log */
  segfile_tomb *tombs;
  uint32_t n_tombs, cap_tombs;

  uint64_t first_lsn, end_lsn; /* writes covered; end set when frozen */
  double build_seconds;

  /* Sealed only, per space, NULL where the space has none (the plan in
   * segment_codes.c decides): `codes` are lossy codes the graph is walked
   * on, the shortlist then rescored with the full vectors; `narrow` holds
   * the full vectors in the space's datatype (float16 / uint8, exact),
   * resident in place of the float32 copy in the file, which only get and
   * the exact scan read; `ivf` replaces `graph` when the space's index is
   * IVF. */
  qcodes *codes[QV_SPACES_MAX];
  qcodes *narrow[QV_SPACES_MAX];
  ivf *ivf[QV_SPACES_MAX];

  segidx pix;     /* payload indexes built for this segment */
  fileio_map map; /* sealed: the segment file */
  char *dir;      /* sealed: its directory */
  bool remove_on_free; /* set when superseded: delete dir on last unref */
  int refs;
} segment;

/* A new mutable segment with room for `cap` rows. Memory is reserved, not
 * committed: pages are touched only as rows arrive. `sp` is borrowed. */
qv_rc segment_new_mutable(const spaces *sp, uint32_t cap, uint64_t first_lsn,
                          segment **out, qv_err *err);

/* Opens sealed segment directory `dir` (segment.qvs + graph-<space>.qvh). */
qv_rc segment_open_sealed(const char *dir, uint64_t seg_id, const spaces *sp,
                          segment **out, qv_err *err);

/* The graph file of space `i` in segment directory `dir`. */
void segment_graph_path(const char *dir, uint32_t i, char *buf, size_t cap);

void segment_ref(segment *s);
void segment_unref(segment *s); /* accepts NULL */

/* Appends a row; the caller holds the shard's write lock and has checked
 * n_rows < cap. `vecs[i]` is the row's vector of space i, NULL when absent.
 * Copies vectors and payload — unless `owned_payload` is non-NULL: then that
 * qv_malloc'd copy (payload_len bytes + NUL) is taken over and nothing is
 * allocated, so the append cannot fail. Errors: QV_ENOMEM. */
qv_rc segment_append(segment *s, const qv_point_id *id, const float *const *vecs,
                     const char *payload, uint32_t payload_len, char *owned_payload,
                     uint64_t lsn, uint32_t *row);
qv_rc segment_add_tomb(segment *s, const qv_point_id *id, uint64_t lsn);
/* Room for `more` tombstones, so the next `more` adds cannot fail. */
qv_rc segment_reserve_tombs(segment *s, uint32_t more);
/* Marks row as replaced or deleted by the write at `lsn`. */
void segment_kill(segment *s, uint32_t row, uint64_t lsn);

static inline uint32_t segment_rows(const segment *s) {
  return __atomic_load_n(&s->n_rows, __ATOMIC_ACQUIRE);
}
static inline bool segment_visible(const segment *s, uint32_t row,
                                   uint64_t snap) {
  return s->ins_lsn[row] <= snap &&
         __atomic_load_n(&s->del_lsn[row], __ATOMIC_ACQUIRE) > snap;
}
static inline const float *segment_vec(const segment *s, uint32_t space,
                                       uint32_t row) {
  return s->vecs[space] + (size_t)row * s->sp->s[space].dim;
}
static inline bool segment_has(const segment *s, uint32_t space, uint32_t row) {
  return s->present[space][row] != 0;
}
const char *segment_payload(const segment *s, uint32_t row, uint32_t *len);
/* Does row's point match filter `f` (NULL matches)? Its payload, id and
 * which vectors it has (has_vector). */
bool segment_filter_match(segment *s, uint32_t row, const struct qv_filter *f);
/* The row's payload as parsed JSON, NULL for an empty payload; parsed once
 * and cached for the segment's life. Read-only: never modify the result. */
const struct json_t *segment_payload_json(segment *s, uint32_t row);

/* Bytes of vectors and payloads held (for info and metrics): full vectors
 * resident in RAM (narrow copies count instead of the float32 ones), full
 * vectors read from disk only (on_disk, or float32 copies behind narrow
 * ones), codes with their codebooks, graphs and IVF lists. */
uint64_t segment_vector_bytes(const segment *s);
uint64_t segment_vector_disk_bytes(const segment *s);
uint64_t segment_code_bytes(const segment *s);
uint64_t segment_graph_bytes(const segment *s);
uint64_t segment_payload_bytes(const segment *s);

#endif
