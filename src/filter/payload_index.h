/* payload_index.h: in-memory indexes over one payload field of one segment.
 *
 * An index answers "which rows may match this condition" with a superset of
 * the true answer; the caller still evaluates the whole filter on each
 * candidate, so an index changes speed, never results. Built from rows
 * [0, n_rows) of a segment and immutable afterwards (a segment that grows
 * gets a new, larger index; see engine/segment_index.c).
 *
 *   keyword, uuid: sorted (string, row) pairs — match value / any
 *   integer, float, datetime: sorted (number, row) pairs — match value / any
 *     on integers, range (datetime: microseconds since the epoch)
 *   bool: sorted (0/1, row) pairs — match value */
#ifndef QV_FILTER_PAYLOAD_INDEX_H
#define QV_FILTER_PAYLOAD_INDEX_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "filter/filter.h"
#include "quiver.h"

typedef enum pindex_type {
  PINDEX_KEYWORD = 0,
  PINDEX_INTEGER,
  PINDEX_FLOAT,
  PINDEX_BOOL,
  PINDEX_DATETIME,
  PINDEX_UUID,
} pindex_type;

const char *pindex_type_name(pindex_type t); /* Qdrant's: "keyword", ... */
bool pindex_type_parse(const char *s, pindex_type *out);

typedef struct pindex pindex;

/* Supplies row r's payload (NULL = {}); must stay valid for the index's life. */
typedef const json_t *(*pindex_payload_fn)(void *ctx, uint32_t row);

/* Builds the index of `field` over rows [0, n_rows). Errors: QV_ENOMEM. */
qv_rc pindex_build(const char *field, pindex_type type, uint32_t n_rows,
                   pindex_payload_fn payload, void *ctx, pindex **out, qv_err *err);
void pindex_free(pindex *ix);
uint32_t pindex_rows(const pindex *ix);       /* rows covered */
uint64_t pindex_memory_bytes(const pindex *ix);

/* A bitset over rows [0, n). */
typedef struct rowset {
  uint64_t *bits;
  uint32_t n;
  uint32_t count; /* rows set */
} rowset;

void rowset_free(rowset *r);
static inline bool rowset_has(const rowset *r, uint32_t row) {
  return row < r->n && (r->bits[row >> 6] >> (row & 63)) & 1;
}

/* Whether an index of `type` on `path` can narrow condition `c` (same
 * field, a kind it serves). */
bool pindex_serves(pindex_type type, const fpath *path, const fcond *c);
/* Sets in `out` (sized for at least pindex_rows(ix) rows, zeroed by the
 * caller) every row that may satisfy `c`. */
void pindex_candidates(const pindex *ix, const fcond *c, rowset *out);

#endif
