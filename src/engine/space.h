/* space.h: the vector spaces of a collection — the unnamed vector (if any)
 * and its named vectors — derived once from the configuration. Space 0 is
 * the unnamed vector when the collection has one. Every segment keeps one
 * vector array, presence map and graph per space. */
#ifndef QV_ENGINE_SPACE_H
#define QV_ENGINE_SPACE_H

#include <stdint.h>

#include "quiver.h"
#include "vec/dist.h"

#define QV_SPACES_MAX (QV_VECTORS_MAX + 1)

typedef struct vspace {
  char name[QV_VECTOR_NAME_MAX + 1]; /* "" for the unnamed vector */
  uint32_t dim;
  qv_distance distance;
  vec_metric metric;
  uint32_t m, ef_construct;
  /* How sealed segments store, compress and index this space (zeros =
   * defaults, resolved where used: segment_codes.c). */
  qv_storage_params st;
} vspace;

typedef struct spaces {
  uint32_t n;
  vspace s[QV_SPACES_MAX];
} spaces;

void spaces_from_config(const qv_collection_config *c, spaces *out);
/* Index of the space called `name` (NULL or "" = unnamed), or -1. */
int spaces_find(const spaces *sp, const char *name);
vec_metric metric_of(qv_distance d);

#endif
