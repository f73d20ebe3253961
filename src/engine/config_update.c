/* config_update.c: the settings of a collection that may change after
 * creation (Qdrant's PATCH /collections/{c}).
 *
 * Owns qv_collection_update. What may change is what takes effect at a
 * later, well-defined point without touching existing data: HNSW m and
 * ef_construct (of the unnamed and each named vector) for segments sealed
 * from now on, segment_max_points for the next mutable segment, and
 * full_scan_threshold for the next search. Everything else (dimensions,
 * distance, shards, named vectors, storage) is fixed: a change is refused
 * with the field's name rather than ignored.
 *
 * Order: config.json is replaced (atomically, checksummed) before memory,
 * so a crash leaves either the old or the new settings, both valid. Each
 * shard changes under its build_mu (no build reads m / ef_construct
 * meanwhile) and its write lock (no freeze reads mutable_cap); searches read
 * full_scan_threshold and m with atomic loads. c->cfg changes under idx_mu,
 * which qv_collection_info_get also takes to copy it. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "engine/engine.h"
#include "engine/shard.h"

/* Names the first fixed field that differs, or returns NULL. */
static const char *fixed_change(const qv_collection_config *a, const qv_collection_config *b) {
  if (a->dim != b->dim) return "vector size";
  if (a->distance != b->distance) return "distance";
  if (a->shard_number != b->shard_number) return "shard_number";
  if (memcmp(&a->storage, &b->storage, sizeof a->storage) != 0) return "storage";
  if (a->n_named != b->n_named) return "named vectors";
  for (uint32_t i = 0; i < a->n_named; i++) {
    const qv_vector_params *x = &a->named[i], *y = &b->named[i];
    if (strcmp(x->name, y->name) != 0) return "named vectors";
    if (x->dim != y->dim) return "vector size of a named vector";
    if (x->distance != y->distance) return "distance of a named vector";
    if (memcmp(&x->storage, &y->storage, sizeof x->storage) != 0) return "storage of a named vector";
  }
  return NULL;
}

static void shard_apply(shard *sh, const qv_collection_config *cfg) {
  spaces sp;
  spaces_from_config(cfg, &sp);
  pthread_mutex_lock(&sh->build_mu);
  pthread_rwlock_wrlock(&sh->lock);
  for (uint32_t i = 0; i < sh->sp.n; i++) {
    __atomic_store_n(&sh->sp.s[i].m, sp.s[i].m, __ATOMIC_RELAXED);
    sh->sp.s[i].ef_construct = sp.s[i].ef_construct;
  }
  sh->cfg.hnsw_m = cfg->hnsw_m;
  sh->cfg.hnsw_ef_construct = cfg->hnsw_ef_construct;
  sh->cfg.segment_max_points = cfg->segment_max_points;
  __atomic_store_n(&sh->cfg.full_scan_threshold, cfg->full_scan_threshold, __ATOMIC_RELAXED);
  sh->mutable_cap = shard_mutable_cap(sh, cfg->segment_max_points);
  pthread_rwlock_unlock(&sh->lock);
  pthread_mutex_unlock(&sh->build_mu);
}

qv_rc qv_collection_update(qv_collection *c, const qv_collection_config *cfg, qv_err *err) {
  qv_rc rc = config_validate(cfg, err);
  if (rc != QV_OK) return rc;
  pthread_mutex_lock(&c->idx_mu);
  const char *what = fixed_change(&c->cfg, cfg);
  if (what != NULL) {
    rc = qv_err_set(err, QV_EINVAL, "%s cannot change after the collection is created", what);
  } else {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/config.json", c->dir);
    rc = config_write(path, cfg, err);
  }
  if (rc == QV_OK) {
    for (uint32_t i = 0; i < c->n_shards; i++) shard_apply(c->shards[i], cfg);
    c->cfg = *cfg;
    /* Readers use c->sp's shapes, never its m / ef_construct: leave it. */
  }
  pthread_mutex_unlock(&c->idx_mu);
  return rc;
}
