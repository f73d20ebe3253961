/* topk.h: a bounded max-heap keeping the k best (smallest distance) hits,
 * ties broken by id so results are deterministic. */
#ifndef QV_ENGINE_TOPK_H
#define QV_ENGINE_TOPK_H

#include <stdint.h>

#include "quiver.h"

typedef struct shard_hit {
  qv_point_id id;
  float dist; /* lower is better */
} shard_hit;

typedef struct topk {
  shard_hit *h; /* caller-provided, k entries */
  uint32_t n, k;
} topk;

void topk_init(topk *t, shard_hit *buf, uint32_t k);
/* The distance a new hit must beat to enter (INFINITY until full). */
float topk_bound(const topk *t);
void topk_push(topk *t, const qv_point_id *id, float dist);
/* Sorts in place, best first; the heap is unusable afterwards. */
void topk_sort(topk *t);

#endif
