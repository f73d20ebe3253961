/* shard_build.c: turning frozen segments into sealed, indexed ones, and
 * merging sealed segments to reclaim deleted rows.
 *
 * Both are "rebuild": gather the rows of a run of input segments that are
 * not dead at the build's snapshot, write them to a new segment file, build
 * and save its graph, then — under the write lock — carry over deletions
 * that happened during the build, point the id map at the new rows, replace
 * the inputs in the segment list, and write the MANIFEST. Only the MANIFEST
 * write makes the new segment part of the shard, so a crash at any point
 * leaves either the old state or the new one (shard_open removes orphans).
 *
 * Invariant: the list is sealed..., frozen..., mutable; frozen segments are
 * sealed oldest first, so the checkpoint (end LSN of the newest sealed
 * segment) only moves forward. Readers keep the old segments alive through
 * their list reference; superseded sealed segments delete their files when
 * the last reference goes. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"
#include "engine/id.h"
#include "engine/shard.h"
#include "storage/manifest.h"

/* A sealed segment is rewritten when this share of its rows is dead. */
#define VACUUM_DEAD_FRACTION 0.2
/* Adjacent sealed segments are merged while there are more than this, up
 * to MERGE_RUN of them at a time. */
#define MAX_SEALED_SEGMENTS 8
#define MERGE_RUN 8

typedef struct build {
  uint32_t first, count; /* input run in the list */
  bool drop_tombs;       /* the run starts at the oldest segment */
  /* gathered rows */
  uint32_t n;
  segment **src_seg;
  uint32_t *src_row;
  float *vecs[QV_SPACES_MAX];
  uint8_t *present[QV_SPACES_MAX];
  uint32_t n_present[QV_SPACES_MAX];
  qv_point_id *ids;
  uint64_t *lsns;
  uint64_t *poff;
  char *blob;
  segfile_tomb *tombs;
  uint32_t n_tombs;
  uint64_t first_lsn, end_lsn;
} build;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void build_free(build *b) {
  qv_free(b->src_seg);
  qv_free(b->src_row);
  for (uint32_t i = 0; i < QV_SPACES_MAX; i++) {
    qv_free_aligned(b->vecs[i]);
    qv_free(b->present[i]);
  }
  qv_free(b->ids);
  qv_free(b->lsns);
  qv_free(b->poff);
  qv_free(b->blob);
  qv_free(b->tombs);
}

static int tomb_cmp(const void *a, const void *b) {
  const segfile_tomb *x = a, *y = b;
  int c = qv_id_cmp(&x->id, &y->id);
  if (c) return c;
  return x->lsn < y->lsn ? -1 : (x->lsn > y->lsn);
}

/* Copies the rows of list->segs[first, first+count) not dead at `snap`. */
static qv_rc gather(shard *sh, seglist *l, build *b, uint64_t snap, qv_err *err) {
  const spaces *sp = &sh->sp;
  uint64_t total = 0, blob_bytes = 0, tomb_total = 0;
  for (uint32_t i = b->first; i < b->first + b->count; i++) {
    segment *s = l->segs[i];
    uint32_t n = segment_rows(s);
    for (uint32_t r = 0; r < n; r++) {
      if (__atomic_load_n(&s->del_lsn[r], __ATOMIC_ACQUIRE) <= snap) continue;
      uint32_t len;
      segment_payload(s, r, &len);
      total++;
      blob_bytes += len;
    }
    if (!b->drop_tombs) tomb_total += s->n_tombs;
  }
  if (total > UINT32_MAX) return qv_err_set(err, QV_EINVAL, "segment too large");
  b->src_seg = qv_malloc(total * sizeof *b->src_seg + 8);
  b->src_row = qv_malloc(total * 4 + 8);
  bool vec_ok = true;
  for (uint32_t i = 0; i < sp->n; i++) {
    b->vecs[i] = qv_malloc_aligned(total * sp->s[i].dim * 4 + 64);
    b->present[i] = qv_calloc(total + 1, 1);
    vec_ok &= b->vecs[i] != NULL && b->present[i] != NULL;
  }
  b->ids = qv_calloc(total + 1, sizeof *b->ids);
  b->lsns = qv_malloc(total * 8 + 8);
  b->poff = qv_malloc((total + 1) * 8);
  b->blob = qv_malloc(blob_bytes + 1);
  b->tombs = qv_malloc(tomb_total * sizeof *b->tombs + 8);
  if (!b->src_seg || !b->src_row || !vec_ok || !b->ids || !b->lsns ||
      !b->poff || !b->blob || !b->tombs)
    return qv_err_set(err, QV_ENOMEM, "index build of %llu rows: no memory",
                      (unsigned long long)total);
  uint64_t at = 0;
  b->poff[0] = 0;
  b->first_lsn = l->segs[b->first]->first_lsn;
  b->end_lsn = l->segs[b->first + b->count - 1]->end_lsn;
  for (uint32_t i = b->first; i < b->first + b->count; i++) {
    segment *s = l->segs[i];
    uint32_t n = segment_rows(s);
    for (uint32_t r = 0; r < n; r++) {
      if (__atomic_load_n(&s->del_lsn[r], __ATOMIC_ACQUIRE) <= snap) continue;
      uint32_t k = b->n++, len;
      const char *pl = segment_payload(s, r, &len);
      b->src_seg[k] = s;
      b->src_row[k] = r;
      for (uint32_t x = 0; x < sp->n; x++) {
        uint32_t dim = sp->s[x].dim;
        if (segment_has(s, x, r)) {
          memcpy(b->vecs[x] + (size_t)k * dim, segment_vec(s, x, r), (size_t)dim * 4);
          b->present[x][k] = 1;
          b->n_present[x]++;
        } else {
          memset(b->vecs[x] + (size_t)k * dim, 0, (size_t)dim * 4);
        }
      }
      b->ids[k] = id_clean(&s->ids[r]);
      b->lsns[k] = s->ins_lsn[r];
      if (len) memcpy(b->blob + at, pl, len);
      at += len;
      b->poff[k + 1] = at;
    }
    if (!b->drop_tombs)
      for (uint32_t t = 0; t < s->n_tombs; t++) b->tombs[b->n_tombs++] = s->tombs[t];
  }
  /* One tombstone per id (the newest) is enough. */
  qsort(b->tombs, b->n_tombs, sizeof *b->tombs, tomb_cmp);
  uint32_t w = 0;
  for (uint32_t t = 0; t < b->n_tombs; t++) {
    if (w > 0 && id_eq(&b->tombs[w - 1].id, &b->tombs[t].id))
      b->tombs[w - 1] = b->tombs[t];
    else
      b->tombs[w++] = b->tombs[t];
  }
  b->n_tombs = w;
  return QV_OK;
}

/* Writes segment.qvs, graph-<space>.qvh (or ivf-<space>.qvi) and any codes
 * into segments/<id>.tmp, then renames it. */
static qv_rc write_segment(shard *sh, build *b, uint64_t seg_id, char *final_dir,
                           qv_err *err) {
  char tmp[PATH_MAX], path[PATH_MAX];
  snprintf(final_dir, PATH_MAX, "%s/segments/%llu", sh->dir, (unsigned long long)seg_id);
  snprintf(tmp, sizeof tmp, "%s.tmp", final_dir);
  fileio_remove_tree(tmp, NULL);
  qv_rc rc = fileio_mkdirs(tmp, err);
  if (rc != QV_OK) return rc;
  double t0 = now_s();
  /* One graph per vector space that some row has. Rows without the vector
   * are zeros in the array, in the graph as stepping stones only, and never
   * returned (shard_read.c checks presence). */
  /* The space's storage plan (segment_codes.c) may put an IVF index in
   * place of the graph and add codes or narrow vectors beside it. */
  for (uint32_t i = 0; rc == QV_OK && i < sh->sp.n; i++) {
    if (b->n_present[i] == 0) continue;
    const vspace *x = &sh->sp.s[i];
    uint64_t seed = 0x5157495645520000ull + seg_id;
    segcodes_plan plan;
    segcodes_plan_for(x, b->n, b->n_present[i], &plan);
    if (plan.use_ivf) {
      rc = segcodes_build_ivf(x, &plan, b->vecs[i], b->n, sh->n_threads, seed, tmp, i, err);
    } else {
      hnsw *g = NULL;
      hnsw_params hp = {x->m, x->ef_construct, sh->n_threads, seed};
      rc = hnsw_build(b->vecs[i], b->n, x->dim, x->metric, &hp, &g, err);
      segment_graph_path(tmp, i, path, sizeof path);
      if (rc == QV_OK) rc = hnsw_save(g, path, err);
      hnsw_free(g);
    }
    if (rc == QV_OK)
      rc = segcodes_build(x, &plan, b->vecs[i], b->present[i], b->n, b->n_present[i],
                          sh->n_threads, seed, tmp, i, err);
  }
  double build_s = now_s() - t0;
  segfile_data d = {.n_spaces = sh->sp.n,
                    .n_rows = b->n,
                    .n_tombs = b->n_tombs,
                    .first_lsn = b->first_lsn,
                    .end_lsn = b->end_lsn,
                    .build_seconds = build_s,
                    .ids = b->ids,
                    .lsns = b->lsns,
                    .payload_off = b->poff,
                    .payload_blob = b->blob,
                    .tombs = b->tombs};
  for (uint32_t i = 0; i < sh->sp.n; i++) {
    d.dims[i] = sh->sp.s[i].dim;
    d.vecs[i] = b->vecs[i];
    d.present[i] = b->present[i];
  }
  snprintf(path, sizeof path, "%s/segment.qvs", tmp);
  if (rc == QV_OK) rc = segfile_write(path, &d, err);
  if (rc == QV_OK && rename(tmp, final_dir) != 0)
    rc = qv_err_set(err, QV_EIO, "rename %s: %m", tmp);
  snprintf(path, sizeof path, "%s/segments", sh->dir);
  if (rc == QV_OK) rc = fileio_fsync_dir(path, err);
  if (rc != QV_OK) fileio_remove_tree(tmp, NULL);
  if (rc == QV_OK)
    qv_log(QV_LOG_INFO, "optimizer", "shard %s: segment %llu: %u rows indexed in %.2f s",
           sh->dir, (unsigned long long)seg_id, b->n, build_s);
  return rc;
}

/* Swaps the new segment in for the inputs; write lock held. Everything that
 * can fail — allocations and the MANIFEST write — comes first; only then is
 * memory changed. On failure nothing changes in memory, and no file is
 * removed: if the MANIFEST did reach the disk, the new segment is there for
 * it; if not, the new segment is an orphan that the next open removes. */
static qv_rc install(shard *sh, build *b, segment *ns, qv_err *err) {
  seglist *l = sh->list;
  /* The inputs are still at [first, first+count): only this function (under
   * build_mu) removes sealed or frozen segments, and new ones are appended. */
  seglist *nl = qv_calloc(1, sizeof *nl + (size_t)(l->n - b->count + 1) * sizeof(segment *));
  manifest m = {0};
  m.segment_ids = qv_malloc(((size_t)l->n + 1) * 8);
  if (nl == NULL || m.segment_ids == NULL) {
    qv_free(nl);
    qv_free(m.segment_ids);
    return qv_err_set(err, QV_ENOMEM, "shard %s: no memory", sh->dir);
  }
  nl->refs = 1;
  uint64_t checkpoint = sh->checkpoint_lsn;
  for (uint32_t i = 0; i < l->n; i++) {
    if (i >= b->first && i < b->first + b->count) {
      if (i == b->first) nl->segs[nl->n++] = ns;
      continue;
    }
    nl->segs[nl->n++] = l->segs[i];
  }
  for (uint32_t i = 0; i < nl->n; i++) {
    segment *s = nl->segs[i];
    if (s->state != SEG_SEALED) break;
    m.segment_ids[m.n_segments++] = s->seg_id;
    if (s->end_lsn > checkpoint) checkpoint = s->end_lsn;
  }
  m.checkpoint_lsn = checkpoint;
  m.next_segment_id = sh->next_segment_id;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/MANIFEST", sh->dir);
  qv_rc rc = manifest_write(path, &m, err);
  qv_free(m.segment_ids);
  if (rc != QV_OK) {
    /* Whether the new MANIFEST reached the disk is unknown: keep every file
     * and take no more writes until a reopen settles it. */
    qv_free(nl);
    shard_fail(sh, err ? err->msg : "manifest write failed");
    return rc;
  }
  /* From here on nothing can fail. */
  for (uint32_t i = 0; i < nl->n; i++)
    if (nl->segs[i] != ns) segment_ref(nl->segs[i]);
  for (uint32_t k = 0; k < b->n; k++) {
    segment *s = b->src_seg[k];
    uint32_t r = b->src_row[k];
    uint64_t d = __atomic_load_n(&s->del_lsn[r], __ATOMIC_ACQUIRE);
    if (d != LSN_LIVE) {
      segment_kill(ns, k, d);
      continue;
    }
    idmap_entry *e = idmap_get(&sh->map, &ns->ids[k]);
    if (e != NULL && e->seg == s && e->row == r) {
      e->seg = ns;
      e->row = k;
    }
  }
  for (uint32_t i = b->first; i < b->first + b->count; i++)
    if (l->segs[i]->state == SEG_SEALED) l->segs[i]->remove_on_free = true;
  sh->checkpoint_lsn = checkpoint;
  shard_install_list(sh, nl);
  return QV_OK;
}

/* Picks the next job under the read lock: the oldest frozen segment, else a
 * sealed segment with many dead rows, else the smallest adjacent pair when
 * there are too many sealed segments. Returns false when there is none. */
static bool pick_job(shard *sh, build *b) {
  seglist *l = sh->list;
  uint32_t n_sealed = 0;
  for (uint32_t i = 0; i < l->n; i++) {
    segment *s = l->segs[i];
    if (s->state == SEG_FROZEN) {
      b->first = i;
      b->count = 1;
      b->drop_tombs = (i == 0);
      return true;
    }
    n_sealed += s->state == SEG_SEALED;
  }
  for (uint32_t i = 0; i < n_sealed; i++) {
    segment *s = l->segs[i];
    uint32_t dead = __atomic_load_n(&s->n_dead, __ATOMIC_RELAXED);
    if (s->n_rows > 0 && dead > VACUUM_DEAD_FRACTION * s->n_rows) {
      b->first = i;
      b->count = 1;
      b->drop_tombs = (i == 0);
      return true;
    }
  }
  if (n_sealed > MAX_SEALED_SEGMENTS) {
    /* Merge the run of up to MERGE_RUN adjacent segments with the fewest
     * live rows: cheap to rebuild, and it shrinks the count quickly when
     * many small segments piled up (say, after many short-lived writers). */
    uint32_t run = n_sealed - MAX_SEALED_SEGMENTS + 1;
    if (run > MERGE_RUN) run = MERGE_RUN;
    if (run < 2) run = 2;
    uint64_t best = UINT64_MAX;
    for (uint32_t i = 0; i + run <= n_sealed; i++) {
      uint64_t live = 0;
      for (uint32_t k = i; k < i + run; k++)
        live += l->segs[k]->n_rows - __atomic_load_n(&l->segs[k]->n_dead, __ATOMIC_RELAXED);
      if (live < best) {
        best = live;
        b->first = i;
      }
    }
    b->count = run;
    b->drop_tombs = (b->first == 0);
    return true;
  }
  return false;
}

qv_rc shard_optimize_step(shard *sh, bool wait, bool *did_work, qv_err *err) {
  *did_work = false;
  if (wait)
    pthread_mutex_lock(&sh->build_mu);
  else if (pthread_mutex_trylock(&sh->build_mu) != 0)
    return QV_OK;
  if (__atomic_load_n(&sh->failed, __ATOMIC_ACQUIRE)) {
    pthread_mutex_unlock(&sh->build_mu);
    return qv_err_set(err, QV_ECLOSED, "shard %s is closed after an I/O error", sh->dir);
  }
  build b;
  memset(&b, 0, sizeof b);
  shard_view v;
  pthread_rwlock_rdlock(&sh->lock);
  bool have = pick_job(sh, &b);
  shard_view_get_locked(sh, &v);
  uint64_t seg_id = sh->next_segment_id;
  pthread_rwlock_unlock(&sh->lock);
  qv_rc rc = QV_OK;
  if (!have) goto out;
  *did_work = true;
  rc = gather(sh, v.list, &b, v.snap, err);
  char dir[PATH_MAX];
  if (rc == QV_OK) {
    pthread_rwlock_wrlock(&sh->lock);
    sh->next_segment_id = seg_id + 1;
    pthread_rwlock_unlock(&sh->lock);
    rc = write_segment(sh, &b, seg_id, dir, err);
  }
  segment *ns = NULL;
  if (rc == QV_OK)
    rc = segment_open_sealed(dir, seg_id, &sh->sp, &ns, err);
  if (rc == QV_OK) {
    pthread_rwlock_wrlock(&sh->lock);
    rc = install(sh, &b, ns, err);
    bool installed = rc == QV_OK;
    /* Dropping log files changes the log's file table, which appends and
     * rotations also change: under the write lock like them. */
    if (installed) rc = wal_drop_before(sh->log, sh->checkpoint_lsn + 1, err);
    pthread_rwlock_unlock(&sh->lock);
    if (!installed) segment_unref(ns); /* not installed; its files stay */
  } else if (rc != QV_OK) {
    qv_log(QV_LOG_ERROR, "optimizer", "shard %s: index build failed: %s", sh->dir,
           err ? err->msg : "?");
  }
out:
  shard_view_put(&v);
  build_free(&b);
  pthread_mutex_unlock(&sh->build_mu);
  return rc;
}
