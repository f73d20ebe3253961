/* space.c: see space.h. */
#include "engine/space.h"

#include <string.h>

vec_metric metric_of(qv_distance d) {
  return d == QV_EUCLID ? VEC_L2SQ : d == QV_MANHATTAN ? VEC_L1 : VEC_NEG_DOT;
}

void spaces_from_config(const qv_collection_config *c, spaces *out) {
  memset(out, 0, sizeof *out);
  if (c->dim > 0) {
    vspace *s = &out->s[out->n++];
    s->dim = c->dim;
    s->distance = c->distance;
    s->metric = metric_of(c->distance);
    s->m = c->hnsw_m;
    s->ef_construct = c->hnsw_ef_construct;
    s->st = c->storage;
  }
  for (uint32_t i = 0; i < c->n_named && i < QV_VECTORS_MAX; i++) {
    vspace *s = &out->s[out->n++];
    memcpy(s->name, c->named[i].name, sizeof s->name);
    s->name[QV_VECTOR_NAME_MAX] = 0;
    s->dim = c->named[i].dim;
    s->distance = c->named[i].distance;
    s->metric = metric_of(s->distance);
    s->m = c->named[i].hnsw_m ? c->named[i].hnsw_m : c->hnsw_m;
    s->ef_construct =
        c->named[i].hnsw_ef_construct ? c->named[i].hnsw_ef_construct : c->hnsw_ef_construct;
    s->st = c->named[i].storage;
  }
}

int spaces_find(const spaces *sp, const char *name) {
  if (name == NULL) name = "";
  for (uint32_t i = 0; i < sp->n; i++)
    if (strcmp(sp->s[i].name, name) == 0) return (int)i;
  return -1;
}
