/* segment_index.c: index definitions and the per-segment cache of built
 * payload indexes; see segment_index.h.
 *
 * Locking: segidx.mu guards the cache slots; building happens outside it,
 * and a built index is reference counted so that a reader keeps using the
 * one it took while a larger one replaces it. */
#include "engine/segment_index.h"

#include <string.h>

#include "base/alloc.h"
#include "engine/segment.h"
#include "filter/filter.h"

idxdefs *idxdefs_ref(idxdefs *d) {
  if (d != NULL) __atomic_add_fetch(&d->refs, 1, __ATOMIC_RELAXED);
  return d;
}

void idxdefs_unref(idxdefs *d) {
  if (d == NULL || __atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  for (uint32_t i = 0; i < d->n; i++) filter_path_free(&d->d[i].path);
  qv_free(d);
}

void segidx_init(segidx *c) {
  memset(c, 0, sizeof *c);
  pthread_mutex_init(&c->mu, NULL);
}

static void segpix_unref(segpix *p) {
  if (p == NULL || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  pindex_free(p->ix);
  qv_free(p);
}

void segidx_destroy(segidx *c) {
  for (uint32_t i = 0; i < c->n_built; i++) segpix_unref(c->built[i]);
  c->n_built = 0;
  pthread_mutex_destroy(&c->mu);
}

static const json_t *row_payload(void *ctx, uint32_t row) {
  return segment_payload_json(ctx, row);
}

/* The segment's index for `d` covering enough of its n_rows rows, built if
 * needed; a counted reference (segpix_unref), or NULL without memory. */
static segpix *get_index(segment *s, uint32_t n_rows, const idxdef *d) {
  segidx *c = &s->pix;
  pthread_mutex_lock(&c->mu);
  segpix *have = NULL;
  uint32_t slot = c->n_built;
  for (uint32_t i = 0; i < c->n_built; i++)
    if (c->built[i]->def_id == d->id) {
      have = c->built[i];
      slot = i;
    }
  /* A growing segment rebuilds after growing by a quarter: the rows past an
   * index are scanned, and that stays a small share. */
  if (have != NULL && (uint64_t)pindex_rows(have->ix) * 5 >= (uint64_t)n_rows * 4) {
    __atomic_add_fetch(&have->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->mu);
    return have;
  }
  pthread_mutex_unlock(&c->mu);
  segpix *p = qv_calloc(1, sizeof *p);
  if (p == NULL || pindex_build(d->field, d->type, n_rows, row_payload, s, &p->ix, NULL) != QV_OK) {
    qv_free(p);
    return NULL;
  }
  p->def_id = d->id;
  p->refs = 2; /* the cache's and ours */
  pthread_mutex_lock(&c->mu);
  /* Another thread may have published meanwhile: keep the larger. */
  slot = c->n_built;
  for (uint32_t i = 0; i < c->n_built; i++)
    if (c->built[i]->def_id == d->id) slot = i;
  if (slot < c->n_built && pindex_rows(c->built[slot]->ix) >= n_rows) {
    segpix *other = c->built[slot];
    __atomic_add_fetch(&other->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->mu);
    p->refs = 1;
    segpix_unref(p);
    return other;
  }
  if (slot < c->n_built) {
    segpix_unref(c->built[slot]);
    c->built[slot] = p;
  } else if (c->n_built < PINDEX_MAX) {
    c->built[c->n_built++] = p;
  } else {
    p->refs = 1; /* cache full (stale definitions): use it once */
  }
  pthread_mutex_unlock(&c->mu);
  return p;
}

static bool alloc_rows(rowset *r, uint32_t n) {
  r->n = n;
  r->count = 0;
  r->bits = qv_calloc((size_t)n / 64 + 1, sizeof *r->bits);
  return r->bits != NULL;
}

bool segidx_candidates(segment *s, uint32_t n_rows, const idxdefs *defs,
                       const qv_filter *f, rowset *out) {
  if (defs == NULL || defs->n == 0 || f == NULL || f->must.n == 0 || n_rows == 0) return false;
  rowset acc = {0};
  bool have = false;
  for (uint32_t i = 0; i < f->must.n; i++) {
    const fcond *c = &f->must.conds[i];
    const idxdef *d = NULL;
    for (uint32_t k = 0; k < defs->n && d == NULL; k++)
      if (pindex_serves(defs->d[k].type, &defs->d[k].path, c)) d = &defs->d[k];
    if (d == NULL) continue;
    segpix *p = get_index(s, n_rows, d);
    rowset r;
    if (p == NULL || !alloc_rows(&r, n_rows)) {
      segpix_unref(p);
      continue;
    }
    pindex_candidates(p->ix, c, &r);
    /* rows the index does not cover yet are candidates */
    for (uint32_t row = pindex_rows(p->ix); row < n_rows; row++) {
      uint64_t bit = 1ull << (row & 63);
      if (!(r.bits[row >> 6] & bit)) {
        r.bits[row >> 6] |= bit;
        r.count++;
      }
    }
    segpix_unref(p);
    if (!have) {
      acc = r;
      have = true;
      continue;
    }
    acc.count = 0;
    for (size_t w = 0; w <= (size_t)n_rows / 64; w++) {
      acc.bits[w] &= r.bits[w];
      acc.count += (uint32_t)__builtin_popcountll(acc.bits[w]);
    }
    rowset_free(&r);
  }
  if (have) *out = acc;
  return have;
}
