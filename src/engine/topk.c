/* topk.c: see topk.h. */
#include "engine/topk.h"

#include <math.h>
#include <stdlib.h>

static int worse(const shard_hit *a, const shard_hit *b) {
  if (a->dist != b->dist) return a->dist > b->dist;
  return qv_id_cmp(&a->id, &b->id) > 0;
}

void topk_init(topk *t, shard_hit *buf, uint32_t k) {
  t->h = buf;
  t->n = 0;
  t->k = k;
}

float topk_bound(const topk *t) { return t->n < t->k ? INFINITY : t->h[0].dist; }

static void sift_down(shard_hit *h, uint32_t n, uint32_t i) {
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && worse(&h[l], &h[m])) m = l;
    if (r < n && worse(&h[r], &h[m])) m = r;
    if (m == i) return;
    shard_hit tmp = h[i];
    h[i] = h[m];
    h[m] = tmp;
    i = m;
  }
}

void topk_push(topk *t, const qv_point_id *id, float dist) {
  shard_hit x = {*id, dist};
  if (t->n < t->k) {
    uint32_t i = t->n++;
    t->h[i] = x;
    while (i > 0) {
      uint32_t p = (i - 1) / 2;
      if (!worse(&t->h[i], &t->h[p])) break;
      shard_hit tmp = t->h[i];
      t->h[i] = t->h[p];
      t->h[p] = tmp;
      i = p;
    }
    return;
  }
  if (t->k == 0 || !worse(&t->h[0], &x)) return;
  t->h[0] = x;
  sift_down(t->h, t->n, 0);
}

static int hit_cmp(const void *a, const void *b) {
  const shard_hit *x = a, *y = b;
  if (worse(x, y)) return 1;
  if (worse(y, x)) return -1;
  return 0;
}

void topk_sort(topk *t) { qsort(t->h, t->n, sizeof *t->h, hit_cmp); }
