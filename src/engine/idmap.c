/* idmap.c: the id -> location hash table of a shard; see idmap.h. */
#include "engine/idmap.h"

#include <string.h>

#include "base/alloc.h"
#include "engine/id.h"

void idmap_init(idmap *m) { memset(m, 0, sizeof *m); }

void idmap_free(idmap *m) {
  qv_free(m->slots);
  memset(m, 0, sizeof *m);
}

static size_t slot_of(const idmap *m, const qv_point_id *id) {
  return (size_t)id_hash(id) & (m->cap - 1);
}

idmap_entry *idmap_get(const idmap *m, const qv_point_id *id) {
  if (m->cap == 0) return NULL;
  for (size_t i = slot_of(m, id);; i = (i + 1) & (m->cap - 1)) {
    idmap_entry *e = &m->slots[i];
    if (e->seg == NULL) return NULL;
    if (id_eq(&e->id, id)) return e;
  }
}

static qv_rc grow_to(idmap *m, size_t ncap) {
  idmap_entry *ns = qv_calloc(ncap, sizeof *ns);
  if (ns == NULL) return QV_ENOMEM;
  for (size_t i = 0; i < m->cap; i++) {
    idmap_entry *e = &m->slots[i];
    if (e->seg == NULL) continue;
    size_t j = (size_t)id_hash(&e->id) & (ncap - 1);
    while (ns[j].seg != NULL) j = (j + 1) & (ncap - 1);
    ns[j] = *e;
  }
  qv_free(m->slots);
  m->slots = ns;
  m->cap = ncap;
  return QV_OK;
}

qv_rc idmap_put(idmap *m, const qv_point_id *id, struct segment *seg,
                uint32_t row, uint64_t lsn) {
  idmap_entry *e = idmap_get(m, id);
  if (e != NULL) {
    e->seg = seg;
    e->row = row;
    e->lsn = lsn;
    return QV_OK;
  }
  if ((m->n + 1) * 10 > m->cap * 7) {
    qv_rc rc = grow_to(m, m->cap ? m->cap * 2 : 1024);
    if (rc != QV_OK) return rc;
  }
  size_t i = slot_of(m, id);
  while (m->slots[i].seg != NULL) i = (i + 1) & (m->cap - 1);
  m->slots[i].id = id_clean(id);
  m->slots[i].seg = seg;
  m->slots[i].row = row;
  m->slots[i].lsn = lsn;
  m->n++;
  return QV_OK;
}

void idmap_del(idmap *m, const qv_point_id *id) {
  idmap_entry *e = idmap_get(m, id);
  if (e == NULL) return;
  size_t i = (size_t)(e - m->slots);
  /* Backward-shift: move later members of the probe run into the hole so
   * lookups never stop early at it. */
  size_t j = i;
  for (;;) {
    j = (j + 1) & (m->cap - 1);
    if (m->slots[j].seg == NULL) break;
    size_t home = (size_t)id_hash(&m->slots[j].id) & (m->cap - 1);
    /* slot j may move to i when its home is not in the cyclic range (i, j] */
    int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!in_range) {
      m->slots[i] = m->slots[j];
      i = j;
    }
  }
  memset(&m->slots[i], 0, sizeof m->slots[i]);
  m->n--;
}

qv_rc idmap_reserve(idmap *m, size_t more) {
  size_t cap = m->cap ? m->cap : 1024;
  while ((m->n + more + 1) * 10 > cap * 7) cap *= 2;
  return cap == m->cap ? QV_OK : grow_to(m, cap);
}
