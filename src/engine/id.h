/* id.h: internal helpers for point ids (the public ones are in quiver.h). */
#ifndef QV_ENGINE_ID_H
#define QV_ENGINE_ID_H

#include <stdbool.h>
#include <stdint.h>

#include "quiver.h"

/* A stable 64-bit hash of an id: the same on every machine and version,
 * because shard routing (and later cluster placement) depends on it. */
uint64_t id_hash(const qv_point_id *id);
bool id_eq(const qv_point_id *a, const qv_point_id *b);
/* The id with its padding zeroed, so it can be hashed or written as bytes. */
qv_point_id id_clean(const qv_point_id *id);

#endif
