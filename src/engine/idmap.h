/* idmap.h: where each live point of a shard lives.
 *
 * Maps a point id to (segment, row, lsn of the write that put it there).
 * Open addressing with linear probing and backward-shift deletion; the table
 * doubles at 70% load. Not thread-safe: the shard's lock guards it. */
#ifndef QV_ENGINE_IDMAP_H
#define QV_ENGINE_IDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "quiver.h"

struct segment;

typedef struct idmap_entry {
  qv_point_id id;
  struct segment *seg; /* NULL marks an empty slot */
  uint32_t row;
  uint64_t lsn;
} idmap_entry;

typedef struct idmap {
  idmap_entry *slots;
  size_t cap; /* power of two */
  size_t n;
} idmap;

void idmap_init(idmap *m);
void idmap_free(idmap *m);
/* The live entry of `id`, or NULL. The pointer is valid until the next put
 * or del. */
idmap_entry *idmap_get(const idmap *m, const qv_point_id *id);
/* Inserts or overwrites. Errors: QV_ENOMEM (the map is unchanged). */
qv_rc idmap_put(idmap *m, const qv_point_id *id, struct segment *seg,
                uint32_t row, uint64_t lsn);
void idmap_del(idmap *m, const qv_point_id *id);
/* Makes room for `more` new entries, so that the next `more` puts cannot
 * fail. Errors: QV_ENOMEM (the map is unchanged). */
qv_rc idmap_reserve(idmap *m, size_t more);

#endif
