/* shard.c: opening and recovering a shard, the write path and freezing.
 *
 * Recovery = sealed segments from the MANIFEST (oldest first, rows and
 * tombstones applied with LSN comparisons, so a later write always wins),
 * then the log replayed from checkpoint + 1 into a fresh mutable segment
 * through the same apply functions live writes use.
 *
 * Write path: take the write lock, append the record to the log, apply it to
 * the id map and the mutable segment, publish applied_lsn, drop the lock,
 * then wait for group commit (wal_sync). A write is visible to searches only
 * once it is both applied and durable. Building indexes is shard_build.c;
 * reading is shard_read.c. */
#include "engine/shard.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"
#include "engine/id.h"
#include "filter/filter.h"
#include "storage/manifest.h"

/* Mutable segments hold at most this many bytes of vectors, so huge
 * dimensions still seal at a sane size. */
#define MUTABLE_MAX_VECTOR_BYTES (1ull << 31)

void seglist_unref(seglist *l) {
  if (l == NULL || __atomic_sub_fetch(&l->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  for (uint32_t i = 0; i < l->n; i++) segment_unref(l->segs[i]);
  qv_free(l);
}

static seglist *seglist_new(uint32_t n) {
  seglist *l = qv_calloc(1, sizeof *l + (size_t)n * sizeof(segment *));
  if (l != NULL) {
    l->refs = 1;
    l->n = n;
  }
  return l;
}

qv_rc shard_create(const char *dir, qv_err *err) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/segments", dir);
  qv_rc rc = fileio_mkdirs(path, err);
  snprintf(path, sizeof path, "%s/wal", dir);
  if (rc == QV_OK) rc = fileio_mkdirs(path, err);
  if (rc != QV_OK) return rc;
  manifest m = {.checkpoint_lsn = 0, .next_segment_id = 1};
  snprintf(path, sizeof path, "%s/MANIFEST", dir);
  return manifest_write(path, &m, err);
}

/* ---- applying writes (live and during recovery) -------------------------- */

typedef struct apply_ctx {
  shard *sh;
  uint64_t lsn;
  size_t n_deleted;
  /* live writes: payload copies made before the record was logged, taken
   * over in order, so that applying a logged record cannot fail */
  char **owned;
  size_t next_owned;
} apply_ctx;

static qv_rc apply_upsert(void *vctx, const qv_point_id *id, const float *const *vecs,
                          const char *payload, uint32_t payload_len) {
  apply_ctx *a = vctx;
  shard *sh = a->sh;
  idmap_entry *e = idmap_get(&sh->map, id);
  if (e != NULL) segment_kill(e->seg, e->row, a->lsn);
  uint32_t row;
  char *own = a->owned ? a->owned[a->next_owned++] : NULL;
  qv_rc rc = segment_append(sh->mut, id, vecs, payload, payload_len, own, a->lsn, &row);
  if (rc == QV_OK) rc = idmap_put(&sh->map, id, sh->mut, row, a->lsn);
  return rc;
}

static qv_rc apply_delete(void *vctx, const qv_point_id *id) {
  apply_ctx *a = vctx;
  shard *sh = a->sh;
  idmap_entry *e = idmap_get(&sh->map, id);
  if (e == NULL) return QV_OK;
  segment_kill(e->seg, e->row, a->lsn);
  idmap_del(&sh->map, id);
  a->n_deleted++;
  return segment_add_tomb(sh->mut, id, a->lsn);
}

static const rec_visitor apply_visitor = {NULL, apply_upsert, apply_delete};

static qv_rc apply_record(shard *sh, uint64_t lsn, const void *rec, size_t len,
                          char **owned, size_t *n_deleted, qv_err *err) {
  apply_ctx a = {sh, lsn, 0, owned, 0};
  rec_visitor v = apply_visitor;
  v.ctx = &a;
  qv_rc rc = rec_decode(rec, len, &sh->sp, &v, err);
  if (rc == QV_ENOMEM) qv_err_set(err, rc, "shard %s: no memory to apply a write", sh->dir);
  if (n_deleted) *n_deleted = a.n_deleted;
  if (rc == QV_OK) __atomic_store_n(&sh->applied_lsn, lsn, __ATOMIC_RELEASE);
  return rc;
}

/* ---- segment list changes (write lock held) ------------------------------ */

void shard_install_list(shard *sh, seglist *nl) {
  seglist *old = sh->list;
  sh->list = nl;
  sh->mut = nl->segs[nl->n - 1];
  seglist_unref(old);
}

static qv_rc new_mutable(shard *sh, qv_err *err) {
  segment *m;
  uint64_t first = __atomic_load_n(&sh->applied_lsn, __ATOMIC_RELAXED) + 1;
  qv_rc rc = segment_new_mutable(&sh->sp, sh->mutable_cap, first, &m, err);
  if (rc != QV_OK) return rc;
  uint32_t n = sh->list ? sh->list->n : 0;
  seglist *nl = seglist_new(n + 1);
  if (nl == NULL) {
    segment_unref(m);
    return qv_err_set(err, QV_ENOMEM, "shard %s: no memory", sh->dir);
  }
  for (uint32_t i = 0; i < n; i++) {
    nl->segs[i] = sh->list->segs[i];
    segment_ref(nl->segs[i]);
  }
  nl->segs[n] = m;
  if (sh->list == NULL) {
    sh->list = nl;
    sh->mut = m;
  } else {
    shard_install_list(sh, nl);
  }
  return QV_OK;
}

static qv_rc freeze_locked(shard *sh, bool rotate, bool *frozen, qv_err *err) {
  segment *m = sh->mut;
  *frozen = false;
  if (segment_rows(m) == 0 && m->n_tombs == 0) return QV_OK;
  m->end_lsn = __atomic_load_n(&sh->applied_lsn, __ATOMIC_RELAXED);
  m->state = SEG_FROZEN;
  qv_rc rc = new_mutable(sh, err);
  if (rc != QV_OK) {
    m->state = SEG_MUTABLE;
    return rc;
  }
  *frozen = true;
  /* A fresh log file per segment lets the checkpoint drop whole files. */
  if (rotate && (rc = wal_rotate(sh->log, err)) != QV_OK) shard_fail(sh, err->msg);
  return rc;
}

qv_rc shard_freeze(shard *sh, bool *frozen, qv_err *err) {
  pthread_rwlock_wrlock(&sh->lock);
  qv_rc rc = freeze_locked(sh, true, frozen, err);
  pthread_rwlock_unlock(&sh->lock);
  return rc;
}

/* ---- open / recover ------------------------------------------------------ */

static qv_rc load_sealed(shard *sh, const manifest *m, qv_err *err) {
  seglist *l = seglist_new(m->n_segments);
  if (l == NULL) return qv_err_set(err, QV_ENOMEM, "shard %s: no memory", sh->dir);
  l->n = 0;
  sh->list = l;
  for (uint32_t i = 0; i < m->n_segments; i++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/segments/%llu", sh->dir,
             (unsigned long long)m->segment_ids[i]);
    segment *s;
    qv_rc rc = segment_open_sealed(path, m->segment_ids[i], &sh->sp, &s, err);
    if (rc != QV_OK) return rc;
    l->segs[l->n++] = s;
    for (uint32_t r = 0; r < s->n_rows; r++) {
      idmap_entry *e = idmap_get(&sh->map, &s->ids[r]);
      uint64_t lsn = s->ins_lsn[r];
      if (e != NULL && e->lsn >= lsn) {
        segment_kill(s, r, e->lsn);
        continue;
      }
      if (e != NULL) segment_kill(e->seg, e->row, lsn);
      if (idmap_put(&sh->map, &s->ids[r], s, r, lsn) != QV_OK)
        return qv_err_set(err, QV_ENOMEM, "shard %s: no memory for the id map", sh->dir);
    }
    for (uint32_t t = 0; t < s->n_tombs; t++) {
      idmap_entry *e = idmap_get(&sh->map, &s->tombs[t].id);
      if (e != NULL && e->lsn < s->tombs[t].lsn) {
        segment_kill(e->seg, e->row, s->tombs[t].lsn);
        idmap_del(&sh->map, &s->tombs[t].id);
      }
    }
  }
  return QV_OK;
}

/* Removes segment directories the MANIFEST does not name: leftovers of a
 * build or merge interrupted by a crash. */
static void remove_orphans(shard *sh, const manifest *m) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/segments", sh->dir);
  DIR *d = opendir(path);
  if (d == NULL) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char *end;
    unsigned long long id = strtoull(e->d_name, &end, 10);
    bool known = false;
    for (uint32_t i = 0; *end == 0 && i < m->n_segments; i++)
      known |= m->segment_ids[i] == id;
    if (known) continue;
    char child[PATH_MAX + 256];
    snprintf(child, sizeof child, "%s/%s", path, e->d_name);
    qv_log(QV_LOG_INFO, "shard", "removing unfinished segment %s", child);
    fileio_remove_tree(child, NULL);
  }
  closedir(d);
}

typedef struct replay_ctx {
  shard *sh;
} replay_ctx;

static qv_rc replay_one(void *vctx, uint64_t lsn, const void *rec, size_t len,
                        qv_err *err) {
  shard *sh = ((replay_ctx *)vctx)->sh;
  /* Keep segments within capacity as live writes do; no log rotation here,
   * the files being replayed are still open for reading. */
  if (segment_rows(sh->mut) + len / (sh->row_bytes + 1) + 1 > sh->mutable_cap) {
    bool frozen;
    qv_rc rc = freeze_locked(sh, false, &frozen, err);
    if (rc != QV_OK) return rc;
  }
  return apply_record(sh, lsn, rec, len, NULL, NULL, err);
}

uint32_t shard_mutable_cap(const shard *sh, uint32_t segment_max_points) {
  uint64_t cap = segment_max_points;
  uint64_t by_bytes = MUTABLE_MAX_VECTOR_BYTES / (sh->row_bytes ? sh->row_bytes : 1);
  if (cap > by_bytes) cap = by_bytes;
  if (cap < 16) cap = 16;
  return (uint32_t)cap;
}

qv_rc shard_open(const char *dir, uint32_t shard_no,
                 const qv_collection_config *cfg, uint32_t n_threads,
                 shard **out, qv_err *err) {
  shard *sh = qv_calloc(1, sizeof *sh);
  if (sh == NULL) return qv_err_set(err, QV_ENOMEM, "shard: no memory");
  sh->dir = qv_strdup(dir);
  sh->shard_no = shard_no;
  sh->cfg = *cfg;
  sh->n_threads = n_threads ? n_threads : 1;
  spaces_from_config(cfg, &sh->sp);
  sh->row_bytes = 0;
  for (uint32_t i = 0; i < sh->sp.n; i++) sh->row_bytes += sh->sp.s[i].dim * 4u;
  sh->mutable_cap = shard_mutable_cap(sh, cfg->segment_max_points);
  pthread_rwlock_init(&sh->lock, NULL);
  pthread_mutex_init(&sh->build_mu, NULL);
  idmap_init(&sh->map);

  manifest m = {0};
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/MANIFEST", dir);
  qv_rc rc = sh->dir ? manifest_read(path, &m, err)
                     : qv_err_set(err, QV_ENOMEM, "shard: no memory");
  if (rc == QV_ENOTFOUND)
    rc = QV_CORRUPT(err, "shard %s: MANIFEST is missing", dir);
  if (rc == QV_OK) {
    sh->checkpoint_lsn = m.checkpoint_lsn;
    sh->next_segment_id = m.next_segment_id;
    sh->applied_lsn = m.checkpoint_lsn;
    remove_orphans(sh, &m);
    rc = load_sealed(sh, &m, err);
  }
  snprintf(path, sizeof path, "%s/wal", dir);
  if (rc == QV_OK) rc = wal_open(path, m.checkpoint_lsn + 1, &sh->log, err);
  /* Every write after the checkpoint must still be in the log: a log that
   * starts later lost its oldest file. */
  if (rc == QV_OK && wal_first_lsn(sh->log) > m.checkpoint_lsn + 1)
    rc = QV_CORRUPT(err, "shard %s: the log starts at LSN %llu but the checkpoint is %llu: "
                    "log records %llu..%llu are missing", dir,
                    (unsigned long long)wal_first_lsn(sh->log),
                    (unsigned long long)m.checkpoint_lsn,
                    (unsigned long long)m.checkpoint_lsn + 1,
                    (unsigned long long)wal_first_lsn(sh->log) - 1);
  if (rc == QV_OK) rc = new_mutable(sh, err);
  if (rc == QV_OK) {
    replay_ctx rctx = {sh};
    rc = wal_replay(sh->log, m.checkpoint_lsn + 1, replay_one, &rctx, err);
  }
  /* What was replayed may sit only in the page cache after a crash: make it
   * durable before anything new is acknowledged on top of it. */
  if (rc == QV_OK && sh->applied_lsn > m.checkpoint_lsn)
    rc = wal_sync(sh->log, sh->applied_lsn, err);
  manifest_free(&m);
  if (rc != QV_OK) {
    shard_close(sh);
    return rc;
  }
  *out = sh;
  return QV_OK;
}

void shard_close(shard *sh) {
  if (sh == NULL) return;
  wal_close(sh->log);
  seglist_unref(sh->list);
  idxdefs_unref(sh->defs);
  idmap_free(&sh->map);
  rec_buf_free(&sh->buf);
  pthread_rwlock_destroy(&sh->lock);
  pthread_mutex_destroy(&sh->build_mu);
  qv_free(sh->dir);
  qv_free(sh);
}

void shard_fail(shard *sh, const char *why) {
  if (!__atomic_exchange_n(&sh->failed, true, __ATOMIC_ACQ_REL))
    qv_log(QV_LOG_ERROR, "shard", "shard %s refuses writes until reopened: %s",
           sh->dir, why);
}

static qv_rc check_open(shard *sh, qv_err *err) {
  if (__atomic_load_n(&sh->failed, __ATOMIC_ACQUIRE))
    return qv_err_set(err, QV_ECLOSED,
                      "shard %s refuses writes after an earlier I/O error; "
                      "reopen the database to recover", sh->dir);
  return QV_OK;
}

/* ---- writes -------------------------------------------------------------- */

/* What applying a record may allocate, done before it is logged: after the
 * append, applying can no longer fail for want of memory, so a logged write
 * is never half applied. */
typedef struct prepared {
  char **owned; /* payload copies, one per upserted point (NULL if empty) */
  size_t n_owned;
} prepared;

static void prepared_free(prepared *p) {
  for (size_t i = 0; p->owned && i < p->n_owned; i++) qv_free(p->owned[i]);
  qv_free(p->owned);
  p->owned = NULL;
  p->n_owned = 0;
}

/* Write lock held. `pts` are the record's points (upsert) or NULL with
 * `n_ids` ids (delete). */
static qv_rc prepare(shard *sh, const qv_point *pts, size_t n, prepared *p, qv_err *err) {
  memset(p, 0, sizeof *p);
  bool ok = idmap_reserve(&sh->map, n) == QV_OK;
  if (ok && pts == NULL) ok = segment_reserve_tombs(sh->mut, (uint32_t)n) == QV_OK;
  if (ok && pts != NULL) {
    p->owned = qv_calloc(n + 1, sizeof *p->owned);
    ok = p->owned != NULL;
    for (size_t i = 0; ok && i < n; i++, p->n_owned++)
      if (pts[i].payload_len > 0)
        ok = (p->owned[i] = qv_strndup(pts[i].payload, pts[i].payload_len)) != NULL;
  }
  if (!ok) {
    prepared_free(p);
    return qv_err_set(err, QV_ENOMEM, "write of %zu points: no memory", n);
  }
  return QV_OK;
}

/* Appends the encoded record in sh->buf and applies it; write lock held and
 * `p` prepared for it. Consumes the payload copies. */
static qv_rc log_and_apply(shard *sh, prepared *p, uint64_t *lsn, size_t *n_deleted,
                           qv_err *err) {
  qv_rc rc = wal_append(sh->log, sh->buf.p, sh->buf.n, lsn, err);
  if (rc != QV_OK) {
    shard_fail(sh, err ? err->msg : "log append failed");
    prepared_free(p);
    return rc;
  }
  rc = apply_record(sh, *lsn, sh->buf.p, sh->buf.n, p->owned, n_deleted, err);
  qv_free(p->owned); /* the copies now belong to the segment */
  p->owned = NULL;
  p->n_owned = 0;
  if (rc != QV_OK) /* logged but not applied: memory and log disagree */
    shard_fail(sh, err ? err->msg : "apply failed");
  return rc;
}

static qv_rc sync_or_fail(shard *sh, uint64_t lsn, qv_err *err) {
  qv_rc rc = wal_sync(sh->log, lsn, err);
  if (rc != QV_OK) shard_fail(sh, err ? err->msg : "fsync failed");
  return rc;
}

qv_rc shard_upsert(shard *sh, const qv_point *pts, const float *const *vecs,
                   size_t n, qv_err *err) {
  uint64_t lsn = 0;
  qv_rc rc = QV_OK;
  /* A record must fit one mutable segment: split big batches. */
  for (size_t at = 0; rc == QV_OK && at < n;) {
    size_t chunk = n - at;
    if (chunk > sh->mutable_cap) chunk = sh->mutable_cap;
    pthread_rwlock_wrlock(&sh->lock);
    rc = check_open(sh, err);
    if (rc == QV_OK && segment_rows(sh->mut) + chunk > sh->mutable_cap) {
      bool frozen;
      rc = freeze_locked(sh, true, &frozen, err);
    }
    if (rc == QV_OK &&
        rec_encode_upsert(&sh->buf, pts + at, vecs + at * sh->sp.n, chunk, &sh->sp) !=
            QV_OK)
      rc = qv_err_set(err, QV_ENOMEM, "upsert of %zu points: no memory", chunk);
    prepared prep;
    if (rc == QV_OK) rc = prepare(sh, pts + at, chunk, &prep, err);
    if (rc == QV_OK) rc = log_and_apply(sh, &prep, &lsn, NULL, err);
    pthread_rwlock_unlock(&sh->lock);
    at += chunk;
  }
  if (rc == QV_OK && lsn) rc = sync_or_fail(sh, lsn, err);
  return rc;
}

qv_rc shard_delete(shard *sh, const qv_point_id *ids, size_t n,
                   size_t *n_deleted, qv_err *err) {
  uint64_t lsn = 0;
  size_t deleted = 0;
  pthread_rwlock_wrlock(&sh->lock);
  qv_rc rc = check_open(sh, err);
  /* Only ids that exist are logged: deleting nothing writes nothing. */
  qv_point_id *live = NULL;
  size_t n_live = 0;
  if (rc == QV_OK && n > 0) {
    live = qv_malloc(n * sizeof *live);
    if (live == NULL) rc = qv_err_set(err, QV_ENOMEM, "delete: no memory");
  }
  for (size_t i = 0; rc == QV_OK && i < n; i++) {
    if (idmap_get(&sh->map, &ids[i]) == NULL) continue;
    bool dup = false;
    for (size_t j = 0; j < n_live && !dup; j++) dup = id_eq(&live[j], &ids[i]);
    if (!dup) live[n_live++] = ids[i];
  }
  if (rc == QV_OK && n_live > 0) {
    prepared prep;
    if (rec_encode_delete(&sh->buf, live, n_live) != QV_OK)
      rc = qv_err_set(err, QV_ENOMEM, "delete: no memory");
    if (rc == QV_OK) rc = prepare(sh, NULL, n_live, &prep, err);
    if (rc == QV_OK) rc = log_and_apply(sh, &prep, &lsn, &deleted, err);
  }
  pthread_rwlock_unlock(&sh->lock);
  qv_free(live);
  if (rc == QV_OK && lsn) rc = sync_or_fail(sh, lsn, err);
  if (rc == QV_OK && n_deleted) *n_deleted = deleted;
  return rc;
}

/* ---- payload rewrites -------------------------------------------------------- */

typedef struct target {
  segment *seg;
  uint32_t row;
  qv_point_id id;
} target;

/* Collects the rows to rewrite; write lock held. */
static qv_rc collect_targets(shard *sh, const qv_point_id *ids, size_t n,
                             const qv_filter *filter, target **out, size_t *n_out,
                             qv_err *err) {
  size_t cap = ids ? n : sh->map.n;
  target *t = qv_malloc((cap + 1) * sizeof *t);
  if (t == NULL) return qv_err_set(err, QV_ENOMEM, "payload update: no memory");
  size_t m = 0;
  if (ids != NULL) {
    for (size_t i = 0; i < n; i++) {
      idmap_entry *e = idmap_get(&sh->map, &ids[i]);
      bool dup = false;
      for (size_t j = 0; e && j < m && !dup; j++) dup = id_eq(&t[j].id, &e->id);
      if (e != NULL && !dup) t[m++] = (target){e->seg, e->row, e->id};
    }
  } else {
    for (size_t i = 0; i < sh->map.cap; i++) {
      idmap_entry *e = &sh->map.slots[i];
      if (e->seg == NULL) continue;
      if (filter && !segment_filter_match(e->seg, e->row, filter))
        continue;
      t[m++] = (target){e->seg, e->row, e->id};
    }
  }
  *out = t;
  *n_out = m;
  return QV_OK;
}

qv_rc shard_rewrite_payloads(shard *sh, const qv_point_id *ids, size_t n,
                             const qv_filter *filter, payload_fn fn, void *ctx,
                             size_t *n_changed, qv_err *err) {
  uint32_t ns = sh->sp.n;
  target *t = NULL;
  size_t nt = 0, done = 0;
  uint64_t lsn = 0;
  pthread_rwlock_wrlock(&sh->lock);
  qv_rc rc = check_open(sh, err);
  if (rc == QV_OK) rc = collect_targets(sh, ids, n, filter, &t, &nt, err);
  size_t chunk_cap = nt < sh->mutable_cap ? nt : sh->mutable_cap;
  qv_point *pts = NULL;
  const float **vecs = NULL;
  if (rc == QV_OK && nt > 0) {
    pts = qv_calloc(chunk_cap, sizeof *pts);
    vecs = qv_malloc(chunk_cap * ns * sizeof *vecs + 1);
    if (pts == NULL || vecs == NULL)
      rc = qv_err_set(err, QV_ENOMEM, "payload update of %zu points: no memory", nt);
  }
  /* Chunks of at most one mutable segment each, like shard_upsert. */
  for (size_t at = 0; rc == QV_OK && at < nt;) {
    size_t m = nt - at < chunk_cap ? nt - at : chunk_cap;
    for (size_t i = 0; rc == QV_OK && i < m; i++) {
      target *x = &t[at + i];
      char *text = NULL;
      rc = fn(ctx, segment_payload_json(x->seg, x->row), &text, err);
      /* The old rows stay mapped while the write lock is held: point at them. */
      for (uint32_t sp = 0; sp < ns; sp++)
        vecs[i * ns + sp] =
            segment_has(x->seg, sp, x->row) ? segment_vec(x->seg, sp, x->row) : NULL;
      pts[i] = (qv_point){.id = x->id, .payload = text, .payload_len = text ? strlen(text) : 0};
    }
    if (rc == QV_OK && segment_rows(sh->mut) + m > sh->mutable_cap) {
      bool frozen;
      rc = freeze_locked(sh, true, &frozen, err);
    }
    if (rc == QV_OK && rec_encode_upsert(&sh->buf, pts, vecs, m, &sh->sp) != QV_OK)
      rc = qv_err_set(err, QV_ENOMEM, "payload update: no memory");
    prepared prep;
    if (rc == QV_OK) rc = prepare(sh, pts, m, &prep, err);
    if (rc == QV_OK) rc = log_and_apply(sh, &prep, &lsn, NULL, err);
    for (size_t i = 0; i < m; i++) {
      qv_free((char *)pts[i].payload);
      pts[i].payload = NULL;
    }
    if (rc == QV_OK) done += m;
    at += m;
  }
  pthread_rwlock_unlock(&sh->lock);
  qv_free(t);
  qv_free(pts);
  qv_free(vecs);
  if (rc == QV_OK && lsn) rc = sync_or_fail(sh, lsn, err);
  if (rc == QV_OK && n_changed) *n_changed = done;
  return rc;
}

/* ---- views ---------------------------------------------------------------- */

void shard_view_get_locked(shard *sh, shard_view *v) {
  v->list = sh->list;
  __atomic_add_fetch(&v->list->refs, 1, __ATOMIC_RELAXED);
  uint64_t applied = __atomic_load_n(&sh->applied_lsn, __ATOMIC_ACQUIRE);
  uint64_t durable = wal_durable_lsn(sh->log);
  /* Replayed records are made durable before open returns, so durable below
   * the checkpoint only means nothing new was written yet. */
  if (durable < sh->checkpoint_lsn) durable = sh->checkpoint_lsn;
  v->snap = applied < durable ? applied : durable;
  v->defs = idxdefs_ref(sh->defs);
}

void shard_view_get(shard *sh, shard_view *v) {
  pthread_rwlock_rdlock(&sh->lock);
  shard_view_get_locked(sh, v);
  pthread_rwlock_unlock(&sh->lock);
}

void shard_view_put(shard_view *v) {
  seglist_unref(v->list);
  idxdefs_unref(v->defs);
  v->list = NULL;
  v->defs = NULL;
}

void shard_set_indexes(shard *sh, idxdefs *d) {
  idxdefs_ref(d);
  pthread_rwlock_wrlock(&sh->lock);
  idxdefs *old = sh->defs;
  sh->defs = d;
  pthread_rwlock_unlock(&sh->lock);
  idxdefs_unref(old);
}

