/* collection.c: the public collection API — validation of points and
 * queries, routing of points to shards by id hash, fan-out of searches and
 * reads over shards, and Qdrant's score conventions.
 *
 * Every write is validated whole before any of it is logged, so a bad point
 * rejects its batch. A batch that spans several shards is durable per shard;
 * it is not atomic across shards (each shard has its own log). */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/fileio.h"
#include "engine/engine.h"
#include "quant/f16.h"
#include "engine/id.h"
#include "engine/shard_read.h"
#include "vec/dist.h"

/* A payload larger than this is refused rather than logged. */
#define PAYLOAD_MAX_BYTES (64u << 20)

qv_rc collection_open(qv_db *db, const char *name, qv_collection **out,
                      qv_err *err) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/collections/%s", db->path, name);
  return collection_open_dir(db, name, path, out, err);
}

qv_rc collection_open_dir(qv_db *db, const char *name, const char *dir,
                          qv_collection **out, qv_err *err) {
  qv_collection *c = qv_calloc(1, sizeof *c);
  if (c == NULL) return qv_err_set(err, QV_ENOMEM, "collection: no memory");
  c->db = db;
  c->refs = 1;
  pthread_mutex_init(&c->idx_mu, NULL);
  c->name = qv_strdup(name);
  char path[PATH_MAX];
  c->dir = qv_strdup(dir);
  qv_rc rc = (c->name && c->dir) ? QV_OK : qv_err_set(err, QV_ENOMEM, "no memory");
  snprintf(path, sizeof path, "%s/config.json", c->dir);
  if (rc == QV_OK) rc = config_read(path, &c->cfg, err);
  if (rc == QV_OK) {
    spaces_from_config(&c->cfg, &c->sp);
    c->shards = qv_calloc(c->cfg.shard_number, sizeof *c->shards);
    if (c->shards == NULL) rc = qv_err_set(err, QV_ENOMEM, "no memory");
  }
  for (uint32_t i = 0; rc == QV_OK && i < c->cfg.shard_number; i++) {
    snprintf(path, sizeof path, "%s/%u", c->dir, i);
    rc = shard_open(path, i, &c->cfg, db->n_threads, &c->shards[i], err);
    if (rc == QV_OK) c->n_shards++;
  }
  if (rc == QV_OK) rc = collection_load_indexes(c, err);
  if (rc != QV_OK) {
    collection_unref(c);
    return rc;
  }
  *out = c;
  return QV_OK;
}

void collection_unref(qv_collection *c) {
  if (c == NULL || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  for (uint32_t i = 0; i < c->n_shards; i++) shard_close(c->shards[i]);
  idxdefs_unref(c->defs);
  pthread_mutex_destroy(&c->idx_mu);
  if (c->dropped && c->dir) fileio_remove_tree(c->dir, NULL);
  qv_free(c->shards);
  qv_free(c->name);
  qv_free(c->dir);
  qv_free(c);
}

void qv_collection_release(qv_collection *c) { collection_unref(c); }

const char *qv_collection_name(const qv_collection *c) { return c->name; }

static uint32_t shard_of(const qv_collection *c, const qv_point_id *id) {
  return c->n_shards == 1 ? 0 : (uint32_t)(id_hash(id) % c->n_shards);
}

static qv_rc check_vector(const vspace *x, const float *v, size_t dim, const char *what,
                          qv_err *err) {
  const char *name = x->name[0] ? x->name : NULL;
  if (v == NULL)
    return qv_err_set(err, QV_EINVAL, "%s: no vector%s%s", what, name ? " " : "",
                      name ? name : "");
  if (dim != x->dim)
    return qv_err_set(err, QV_EDIM, "%s: %zu dimensions, %s%s%s expects %u", what, dim,
                      name ? "vector \"" : "the collection", name ? name : "",
                      name ? "\"" : "", x->dim);
  for (size_t i = 0; i < dim; i++)
    if (!isfinite(v[i]))
      return qv_err_set(err, QV_EINVAL, "%s: component %zu is %s; vectors must be finite",
                        what, i, isnan(v[i]) ? "NaN" : "infinite");
  return QV_OK;
}

/* The stored datatype's rule for an upserted vector (queries are free):
 * uint8 takes integers 0..255 only; float16 takes values it can hold
 * (|x| <= 65504; rounding happens in prepare_point). */
static qv_rc check_datatype(const vspace *x, const float *v, const char *what, qv_err *err) {
  const char *name = x->name[0] ? x->name : "";
  for (uint32_t i = 0; i < x->dim; i++) {
    if (x->st.datatype == QV_DATATYPE_UINT8 && !(v[i] >= 0 && v[i] <= 255 && v[i] == floorf(v[i])))
      return qv_err_set(err, QV_EINVAL,
                        "%s: vector%s%s component %u is %g; datatype uint8 takes integers 0..255",
                        what, name[0] ? " " : "", name, i, (double)v[i]);
    if (x->st.datatype == QV_DATATYPE_FLOAT16 && fabsf(v[i]) > 65504.0f)
      return qv_err_set(err, QV_EINVAL,
                        "%s: vector%s%s component %u is %g; datatype float16 holds |x| <= 65504",
                        what, name[0] ? " " : "", name, i, (double)v[i]);
  }
  return QV_OK;
}

static qv_rc check_payload(const qv_point *p, size_t *len, const char *what,
                           qv_err *err) {
  *len = 0;
  if (p->payload == NULL) return QV_OK;
  *len = p->payload_len ? p->payload_len : strlen(p->payload);
  if (*len == 0) return QV_OK;
  if (*len > PAYLOAD_MAX_BYTES)
    return qv_err_set(err, QV_EINVAL, "%s: payload of %zu bytes exceeds %u", what,
                      *len, PAYLOAD_MAX_BYTES);
  json_error_t je;
  json_t *o = json_loadb(p->payload, *len, JSON_REJECT_DUPLICATES, &je);
  bool ok = o != NULL && json_is_object(o);
  json_decref(o);
  if (!ok)
    return qv_err_set(err, QV_EINVAL, "%s: payload is not a JSON object: %s", what,
                      o ? "another JSON value" : je.text);
  return QV_OK;
}

static void point_name(const qv_point *p, size_t i, char *buf, size_t cap) {
  char id[40];
  snprintf(buf, cap, "point %s (#%zu)", qv_id_format(&p->id, id), i);
}

/* Checks point p and fills slot[0 .. sp.n) with its vectors (NULL where it
 * has none), copied into `store` and normalised for Cosine spaces. */
static qv_rc prepare_point(const qv_collection *c, const qv_point *p, size_t i,
                           const float **slot, float *store, size_t *plen, qv_err *err) {
  char what[80];
  point_name(p, i, what, sizeof what);
  const spaces *sp = &c->sp;
  for (uint32_t s = 0; s < sp->n; s++) slot[s] = NULL;
  qv_rc rc = QV_OK;
  if (sp->n > 0 && sp->s[0].name[0] == 0) {
    rc = check_vector(&sp->s[0], p->vector, p->dim, what, err);
    slot[0] = p->vector;
  } else if (p->vector != NULL) {
    rc = qv_err_set(err, QV_EINVAL, "%s: collection \"%s\" has only named vectors", what,
                    c->name);
  }
  if (p->n_named > 0 && p->named == NULL)
    rc = qv_err_set(err, QV_EINVAL, "%s: n_named without vectors", what);
  for (uint32_t k = 0; rc == QV_OK && k < p->n_named; k++) {
    const qv_named_vector *nv = &p->named[k];
    int s = nv->name && nv->name[0] ? spaces_find(sp, nv->name) : -1;
    if (s < 0)
      rc = qv_err_set(err, QV_EINVAL, "%s: collection \"%s\" has no vector named \"%.64s\"",
                      what, c->name, nv->name ? nv->name : "");
    else if (slot[s] != NULL)
      rc = qv_err_set(err, QV_EINVAL, "%s: vector \"%s\" given twice", what, nv->name);
    else if ((rc = check_vector(&sp->s[s], nv->vector, nv->dim, what, err)) == QV_OK)
      slot[s] = nv->vector;
  }
  if (rc == QV_OK) {
    bool any = false;
    for (uint32_t s = 0; s < sp->n; s++) any |= slot[s] != NULL;
    if (!any) rc = qv_err_set(err, QV_EINVAL, "%s: no vector", what);
  }
  for (uint32_t s = 0; rc == QV_OK && s < sp->n; s++)
    if (slot[s] != NULL) rc = check_datatype(&sp->s[s], slot[s], what, err);
  if (rc == QV_OK) rc = check_payload(p, plen, what, err);
  if (rc != QV_OK) return rc;
  for (uint32_t s = 0; s < sp->n; s++) {
    float *dst = store;
    store += sp->s[s].dim;
    if (slot[s] == NULL) continue;
    memcpy(dst, slot[s], (size_t)sp->s[s].dim * sizeof(float));
    if (sp->s[s].distance == QV_COSINE) vec_normalize(dst, sp->s[s].dim);
    /* float16: every copy (log, segments, get) holds the rounded values, so
     * results do not change when a segment is sealed into float16 */
    if (sp->s[s].st.datatype == QV_DATATYPE_FLOAT16)
      for (uint32_t d = 0; d < sp->s[s].dim; d++) dst[d] = f16_to_f32(f16_from_f32(dst[d]));
    slot[s] = dst;
  }
  return QV_OK;
}

qv_rc qv_upsert(qv_collection *c, const qv_point *pts, size_t n, qv_err *err) {
  if (n == 0) return QV_OK;
  if (pts == NULL) return qv_err_set(err, QV_EINVAL, "upsert: no points");
  const uint32_t ns = c->sp.n;
  size_t row_floats = 0;
  for (uint32_t s = 0; s < ns; s++) row_floats += c->sp.s[s].dim;
  float *store = qv_malloc_aligned(n * row_floats * sizeof(float));
  const float **slots = qv_malloc(n * ns * sizeof *slots + 1);
  qv_point *norm = qv_malloc(n * sizeof *norm);
  qv_rc rc = (store && slots && norm)
                 ? QV_OK
                 : qv_err_set(err, QV_ENOMEM, "upsert of %zu points: no memory", n);
  for (size_t i = 0; rc == QV_OK && i < n; i++) {
    size_t plen = 0;
    rc = prepare_point(c, &pts[i], i, slots + i * ns, store + i * row_floats, &plen, err);
    norm[i] = pts[i];
    norm[i].id = id_clean(&pts[i].id);
    norm[i].payload_len = plen;
  }
  if (rc == QV_OK && c->n_shards == 1) {
    rc = shard_upsert(c->shards[0], norm, slots, n, err);
  } else if (rc == QV_OK) {
    /* Group by shard, keeping each shard's points in call order so that the
     * last write of a duplicated id wins. */
    qv_point *part = qv_malloc(n * sizeof *part);
    const float **pslots = qv_malloc(n * ns * sizeof *pslots + 1);
    if (part == NULL || pslots == NULL) rc = qv_err_set(err, QV_ENOMEM, "upsert: no memory");
    for (uint32_t s = 0; rc == QV_OK && s < c->n_shards; s++) {
      size_t m = 0;
      for (size_t i = 0; i < n; i++) {
        if (shard_of(c, &norm[i].id) != s) continue;
        part[m] = norm[i];
        memcpy(pslots + m * ns, slots + i * ns, ns * sizeof *slots);
        m++;
      }
      if (m) rc = shard_upsert(c->shards[s], part, pslots, m, err);
    }
    qv_free(part);
    qv_free(pslots);
  }
  qv_free(norm);
  qv_free(slots);
  qv_free_aligned(store);
  return rc;
}

qv_rc qv_delete(qv_collection *c, const qv_point_id *ids, size_t n,
                size_t *n_deleted, qv_err *err) {
  size_t total = 0;
  qv_rc rc = QV_OK;
  if (n > 0 && ids == NULL) return qv_err_set(err, QV_EINVAL, "delete: no ids");
  if (c->n_shards == 1) {
    rc = shard_delete(c->shards[0], ids, n, &total, err);
  } else {
    qv_point_id *part = qv_malloc(n * sizeof *part + 1);
    if (part == NULL) return qv_err_set(err, QV_ENOMEM, "delete: no memory");
    for (uint32_t s = 0; rc == QV_OK && s < c->n_shards; s++) {
      size_t m = 0, d = 0;
      for (size_t i = 0; i < n; i++)
        if (shard_of(c, &ids[i]) == s) part[m++] = ids[i];
      if (m) rc = shard_delete(c->shards[s], part, m, &d, err);
      total += d;
    }
    qv_free(part);
  }
  if (rc == QV_OK && n_deleted) *n_deleted = total;
  return rc;
}

/* ---- reads ------------------------------------------------------------------ */

void qv_records_free(qv_records *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->n; i++) record_clear(&r->items[i]);
  qv_free(r->items);
  memset(r, 0, sizeof *r);
}

qv_rc qv_get(qv_collection *c, const qv_point_id *ids, size_t n,
             bool with_vector, bool with_payload, qv_records *out, qv_err *err) {
  memset(out, 0, sizeof *out);
  out->items = qv_calloc(n + 1, sizeof *out->items);
  if (out->items == NULL) return qv_err_set(err, QV_ENOMEM, "get: no memory");
  for (size_t i = 0; i < n; i++) {
    bool found;
    qv_rc rc = shard_get(c->shards[shard_of(c, &ids[i])], &ids[i], with_vector,
                         with_payload, &out->items[out->n], &found, err);
    if (rc != QV_OK) {
      qv_records_free(out);
      return rc;
    }
    if (found) out->n++;
  }
  return QV_OK;
}

qv_rc qv_count(qv_collection *c, uint64_t *out, qv_err *err) {
  uint64_t n = 0;
  for (uint32_t s = 0; s < c->n_shards; s++) n += shard_count(c->shards[s]);
  *out = n;
  return QV_OK;
}

static int record_cmp(const void *a, const void *b) {
  return qv_id_cmp(&((const qv_record *)a)->id, &((const qv_record *)b)->id);
}

qv_rc qv_scroll(qv_collection *c, const qv_point_id *start, size_t limit,
                bool with_vector, bool with_payload, qv_records *out,
                qv_point_id *next, bool *has_next, qv_err *err) {
  return qv_scroll_filtered(c, NULL, start, limit, with_vector, with_payload, out,
                            next, has_next, err);
}

qv_rc qv_scroll_filtered(qv_collection *c, const qv_filter *filter,
                         const qv_point_id *start, size_t limit, bool with_vector,
                         bool with_payload, qv_records *out, qv_point_id *next,
                         bool *has_next, qv_err *err) {
  memset(out, 0, sizeof *out);
  *has_next = false;
  if (limit == 0) return qv_err_set(err, QV_EINVAL, "scroll: limit must be >= 1");
  if (limit > (SIZE_MAX / sizeof(qv_record)) / (c->n_shards + 1) - 1)
    return qv_err_set(err, QV_EINVAL, "scroll: limit %zu is too large", limit);
  /* Each shard gives its first limit + 1; the merged first limit + 1 holds
   * the page and the next cursor. */
  size_t per = limit + 1;
  qv_record *all = qv_calloc(per * c->n_shards, sizeof *all);
  if (all == NULL) return qv_err_set(err, QV_ENOMEM, "scroll: no memory");
  size_t total = 0;
  qv_rc rc = QV_OK;
  for (uint32_t s = 0; rc == QV_OK && s < c->n_shards; s++) {
    size_t got;
    rc = shard_scroll(c->shards[s], filter, start, per, with_vector, with_payload,
                      all + total, &got, err);
    total += got;
  }
  if (rc == QV_OK && c->n_shards > 1) qsort(all, total, sizeof *all, record_cmp);
  if (rc == QV_OK && total > limit) {
    *has_next = true;
    *next = all[limit].id;
  }
  for (size_t i = limit; i < total; i++) record_clear(&all[i]);
  if (rc != QV_OK) {
    for (size_t i = 0; i < total && i < limit; i++) record_clear(&all[i]);
    qv_free(all);
    return rc;
  }
  out->items = all;
  out->n = total < limit ? total : limit;
  return QV_OK;
}

/* ---- search ------------------------------------------------------------------ */

void qv_search_params_init(qv_search_params *p) {
  memset(p, 0, sizeof *p);
  p->k = 10;
}

static float to_score(qv_distance d, float dist) {
  switch (d) {
  case QV_EUCLID: return sqrtf(dist > 0 ? dist : 0);
  case QV_MANHATTAN: return dist;
  default: return -dist;
  }
}

static bool passes(qv_distance d, float score, float t) {
  return (d == QV_COSINE || d == QV_DOT) ? score > t : score < t;
}

static qv_rc search_one(qv_collection *c, uint32_t space, const float *query,
                        const qv_search_params *p, const idmap *allow,
                        const size_t *allow_per_shard, shard_hit *buf,
                        qv_hit *hits, size_t *n_hits, qv_err *err) {
  const vspace *x = &c->sp.s[space];
  uint32_t dim = x->dim;
  float *q = qv_malloc_aligned((size_t)dim * sizeof(float));
  if (q == NULL) return qv_err_set(err, QV_ENOMEM, "search: no memory");
  memcpy(q, query, (size_t)dim * sizeof(float));
  if (x->distance == QV_COSINE) vec_normalize(q, dim);
  uint32_t kk = p->k + p->offset;
  topk t;
  topk_init(&t, buf, kk);
  shard_search_args a = {.query = q,
                         .space = space,
                         .ef = p->ef ? p->ef : (kk > 64 ? kk : 64),
                         .exact = p->exact,
                         .allow = allow,
                         .filter = p->filter,
                         .quant_ignore = p->quant_ignore,
                         .rescore = p->quant_rescore >= 0,
                         .oversampling = p->quant_oversampling > 1 ? p->quant_oversampling : 1,
                         .nprobe = p->nprobe};
  qv_rc rc = QV_OK;
  for (uint32_t s = 0; rc == QV_OK && s < c->n_shards; s++) {
    a.n_allow = allow ? allow_per_shard[s] : 0;
    if (allow && a.n_allow == 0) continue;
    rc = shard_search(c->shards[s], &a, &t, err);
  }
  qv_free_aligned(q);
  if (rc != QV_OK) return rc;
  topk_sort(&t);
  size_t n = 0;
  for (uint32_t i = p->offset; i < t.n; i++) {
    float score = to_score(x->distance, t.h[i].dist);
    if (p->has_score_threshold && !passes(x->distance, score, p->score_threshold))
      continue;
    hits[n].id = t.h[i].id;
    hits[n].score = score;
    n++;
  }
  *n_hits = n;
  return QV_OK;
}

qv_rc qv_search_batch(qv_collection *c, const float *queries, size_t n,
                      size_t dim, const qv_search_params *p, qv_hit *hits,
                      size_t *n_hits, qv_err *err) {
  if (p == NULL || p->k == 0)
    return qv_err_set(err, QV_EINVAL, "search: k must be >= 1");
  if ((uint64_t)p->k + p->offset > 1000000)
    return qv_err_set(err, QV_EINVAL, "search: k + offset = %llu exceeds 1000000",
                      (unsigned long long)p->k + p->offset);
  if (p->quant_rescore < -1 || p->quant_rescore > 1)
    return qv_err_set(err, QV_EINVAL, "search: quantization rescore %d, expected -1, 0 or 1",
                      p->quant_rescore);
  if (!(p->quant_oversampling >= 0 && p->quant_oversampling <= 1000))
    return qv_err_set(err, QV_EINVAL, "search: quantization oversampling %g, expected 0..1000",
                      (double)p->quant_oversampling);
  int space = spaces_find(&c->sp, p->vector_name);
  if (space < 0) {
    if (p->vector_name && p->vector_name[0])
      return qv_err_set(err, QV_EINVAL, "search: collection \"%s\" has no vector named \"%.64s\"",
                        c->name, p->vector_name);
    return qv_err_set(err, QV_EINVAL,
                      "search: collection \"%s\" has only named vectors; name one to search",
                      c->name);
  }
  for (size_t i = 0; i < n; i++) {
    char what[40];
    snprintf(what, sizeof what, "query %zu", i);
    qv_rc rc = check_vector(&c->sp.s[space], queries ? queries + i * dim : NULL, dim, what, err);
    if (rc != QV_OK) return rc;
  }
  idmap allow;
  idmap_init(&allow);
  size_t *per_shard = NULL;
  qv_rc rc = QV_OK;
  if (p->allow_ids != NULL) {
    per_shard = qv_calloc(c->n_shards, sizeof *per_shard);
    if (per_shard == NULL) rc = qv_err_set(err, QV_ENOMEM, "search: no memory");
    /* A set of ids; the segment pointer only marks the slot as used. */
    for (size_t i = 0; rc == QV_OK && i < p->n_allow; i++) {
      if (idmap_get(&allow, &p->allow_ids[i]) != NULL) continue;
      if (idmap_put(&allow, &p->allow_ids[i], (struct segment *)&allow, 0, 0) != QV_OK)
        rc = qv_err_set(err, QV_ENOMEM, "search: no memory for the allow-set");
      else
        per_shard[shard_of(c, &p->allow_ids[i])]++;
    }
  }
  shard_hit *buf = NULL;
  if (rc == QV_OK) {
    buf = qv_malloc(((size_t)p->k + p->offset) * sizeof *buf);
    if (buf == NULL) rc = qv_err_set(err, QV_ENOMEM, "search: no memory");
  }
  for (size_t i = 0; rc == QV_OK && i < n; i++)
    rc = search_one(c, (uint32_t)space, queries + i * dim, p, p->allow_ids ? &allow : NULL,
                    per_shard, buf, hits + i * p->k, &n_hits[i], err);
  qv_free(buf);
  qv_free(per_shard);
  idmap_free(&allow);
  return rc;
}

qv_rc qv_search(qv_collection *c, const float *query, size_t dim,
                const qv_search_params *p, qv_hit *hits, size_t *n_hits,
                qv_err *err) {
  return qv_search_batch(c, query, 1, dim, p, hits, n_hits, err);
}

/* ---- maintenance and info ------------------------------------------------------ */

qv_rc qv_collection_optimize(qv_collection *c, qv_err *err) {
  qv_rc rc = QV_OK;
  for (uint32_t s = 0; rc == QV_OK && s < c->n_shards; s++) {
    bool frozen, did = true;
    rc = shard_freeze(c->shards[s], &frozen, err);
    while (rc == QV_OK && did) rc = shard_optimize_step(c->shards[s], true, &did, err);
  }
  return rc;
}

qv_rc qv_collection_info_get(qv_collection *c, qv_collection_info *out,
                             qv_err *err) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&c->idx_mu); /* qv_collection_update may be changing it */
  out->config = c->cfg;
  pthread_mutex_unlock(&c->idx_mu);
  out->isa = dist_ops_get()->isa;
  for (uint32_t s = 0; s < c->n_shards; s++) {
    shard *sh = c->shards[s];
    out->points_count += shard_count(sh);
    out->wal_bytes += wal_bytes(sh->log);
    out->is_failed |= __atomic_load_n(&sh->failed, __ATOMIC_ACQUIRE);
    shard_view v;
    shard_view_get(sh, &v);
    for (uint32_t i = 0; i < v.list->n; i++) {
      segment *g = v.list->segs[i];
      uint32_t rows = segment_rows(g);
      if (rows == 0 && g->state == SEG_MUTABLE) continue;
      out->segments_count++;
      out->vector_bytes += segment_vector_bytes(g);
      out->payload_bytes += segment_payload_bytes(g);
      if (g->state == SEG_FROZEN) out->pending_builds++;
      if (g->state == SEG_SEALED) {
        out->indexed_vectors_count += rows - __atomic_load_n(&g->n_dead, __ATOMIC_RELAXED);
        out->vector_disk_bytes += segment_vector_disk_bytes(g);
        out->code_bytes += segment_code_bytes(g);
        out->graph_bytes += segment_graph_bytes(g);
        out->build_seconds += g->build_seconds;
      }
    }
    shard_view_put(&v);
  }
  return QV_OK;
}
