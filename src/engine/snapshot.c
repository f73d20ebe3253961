/* snapshot.c: collection snapshots and restores, built on shard snapshots.
 *
 * A shard snapshot is the shard's MANIFEST, the files of the sealed segments
 * it names, and its log files cut at the last whole record — captured while
 * the shard's build lock keeps the optimizer from sealing, merging or
 * dropping log files, and the write lock briefly keeps appends out while the
 * sizes are read. Sealed files never change and log files only grow, so the
 * copying itself runs while writes continue. Opening the copy is ordinary
 * recovery. The cluster moves shards with the same function.
 *
 * Archive layout:  config.json, [indexes.json], [payload_index.json], <shard>/MANIFEST,
 * <shard>/segments/<id>/{segment.qvs,graph-<space>.qvh,ivf-<space>.qvi,
 * codes-<space>.qvc,vecs-<space>.qvc}, <shard>/wal/<lsn>.wal */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"
#include "engine/engine.h"
#include "storage/manifest.h"
#include "storage/tar.h"

typedef struct walcap {
  char (*paths)[PATH_MAX + 32];
  uint64_t *bytes;
  size_t n, cap;
} walcap;

static qv_rc capture_wal(void *ctx, const char *path, uint64_t first_lsn,
                         uint64_t bytes, qv_err *err) {
  walcap *w = ctx;
  if (w->n == w->cap) {
    size_t ncap = w->cap ? w->cap * 2 : 8;
    void *p = qv_realloc(w->paths, ncap * sizeof *w->paths);
    if (p == NULL) return qv_err_set(err, QV_ENOMEM, "snapshot: no memory");
    w->paths = p;
    p = qv_realloc(w->bytes, ncap * sizeof *w->bytes);
    if (p == NULL) return qv_err_set(err, QV_ENOMEM, "snapshot: no memory");
    w->bytes = p;
    w->cap = ncap;
  }
  snprintf(w->paths[w->n], sizeof w->paths[0], "%s", path);
  w->bytes[w->n++] = bytes;
  return QV_OK;
}

static qv_rc add_whole_file(tar_writer *t, const char *member, const char *path,
                            qv_err *err) {
  char *data;
  size_t n;
  qv_rc rc = fileio_read_file(path, &data, &n, err);
  if (rc != QV_OK) return rc;
  rc = tar_add_bytes(t, member, data, n, err);
  qv_free(data);
  return rc;
}

qv_rc shard_snapshot(shard *sh, tar_writer *t, const char *prefix, qv_err *err) {
  char path[PATH_MAX + 64], member[256];
  walcap w = {0};
  manifest m = {0};
  pthread_mutex_lock(&sh->build_mu);
  pthread_rwlock_wrlock(&sh->lock);
  snprintf(path, sizeof path, "%s/MANIFEST", sh->dir);
  qv_rc rc = manifest_read(path, &m, err);
  if (rc == QV_OK) rc = wal_list_files(sh->log, capture_wal, &w, err);
  pthread_rwlock_unlock(&sh->lock);
  snprintf(member, sizeof member, "%s/MANIFEST", prefix);
  if (rc == QV_OK) rc = add_whole_file(t, member, path, err);
  for (uint32_t i = 0; rc == QV_OK && i < m.n_segments; i++) {
    unsigned long long id = (unsigned long long)m.segment_ids[i];
    snprintf(path, sizeof path, "%s/segments/%llu/segment.qvs", sh->dir, id);
    snprintf(member, sizeof member, "%s/segments/%llu/segment.qvs", prefix, id);
    rc = add_whole_file(t, member, path, err);
    /* per vector space that has rows (none in empty segments): a graph or
     * an IVF index, and the codes and narrow vectors of its plan */
    for (uint32_t s = 0; rc == QV_OK && s < sh->sp.n; s++) {
      char dir[PATH_MAX];
      snprintf(dir, sizeof dir, "%s/segments/%llu", sh->dir, id);
      void (*const paths[])(const char *, uint32_t, char *, size_t) = {
          segment_graph_path, segcodes_ivf_path, segcodes_codes_path, segcodes_vecs_path};
      for (size_t f = 0; rc == QV_OK && f < sizeof paths / sizeof paths[0]; f++) {
        paths[f](dir, s, path, sizeof path);
        if (!fileio_exists(path)) continue;
        snprintf(member, sizeof member, "%s/segments/%llu/%s", prefix, id, strrchr(path, '/') + 1);
        rc = add_whole_file(t, member, path, err);
      }
    }
  }
  for (size_t i = 0; rc == QV_OK && i < w.n; i++) {
    const char *base = strrchr(w.paths[i], '/');
    snprintf(member, sizeof member, "%s/wal/%s", prefix, base ? base + 1 : w.paths[i]);
    rc = tar_add_file(t, member, w.paths[i], w.bytes[i], err);
  }
  pthread_mutex_unlock(&sh->build_mu);
  manifest_free(&m);
  qv_free(w.paths);
  qv_free(w.bytes);
  return rc;
}

qv_rc qv_snapshot_create(qv_collection *c, const char *path, qv_err *err) {
  tar_writer *t;
  qv_rc rc = tar_create(path, &t, err);
  if (rc != QV_OK) return rc;
  char src[PATH_MAX + 32], prefix[32];
  snprintf(src, sizeof src, "%s/config.json", c->dir);
  rc = add_whole_file(t, "config.json", src, err);
  static const char *extras[] = {"indexes.json", "payload_index.json"};
  for (int i = 0; rc == QV_OK && i < 2; i++) {
    snprintf(src, sizeof src, "%s/%s", c->dir, extras[i]);
    if (fileio_exists(src)) rc = add_whole_file(t, extras[i], src, err);
  }
  for (uint32_t s = 0; rc == QV_OK && s < c->n_shards; s++) {
    snprintf(prefix, sizeof prefix, "%u", s);
    rc = shard_snapshot(c->shards[s], t, prefix, err);
  }
  if (rc != QV_OK) {
    tar_abort(t);
    return rc;
  }
  return tar_finish(t, err);
}

qv_rc qv_snapshot_restore(qv_db *db, const char *name, const char *path, bool replace,
                          qv_err *err) {
  qv_rc rc = name_validate(name, err);
  if (rc != QV_OK) return rc;
  if (!fileio_exists(path))
    return qv_err_set(err, QV_ENOTFOUND, "snapshot %s does not exist", path);
  char tmp[PATH_MAX], dst[PATH_MAX];
  pthread_mutex_lock(&db->mu);
  snprintf(tmp, sizeof tmp, "%s/collections/.tmp-%llu", db->path,
           (unsigned long long)++db->tmp_seq);
  pthread_mutex_unlock(&db->mu);
  snprintf(dst, sizeof dst, "%s/collections/%s", db->path, name);
  fileio_remove_tree(tmp, NULL);
  rc = fileio_mkdirs(tmp, err);
  if (rc == QV_OK) rc = tar_extract(path, tmp, err);
  if (rc == QV_OK) {
    int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || syncfs(fd) != 0)
      rc = qv_err_set(err, QV_EIO, "sync %s: %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
  }
  /* Full recovery where it was unpacked: every checksum is verified before
   * anything that exists is touched. */
  qv_collection *c = NULL;
  if (rc == QV_OK) {
    rc = collection_open_dir(db, name, tmp, &c, err);
    /* name the archive; the message names the member that failed */
    if (rc == QV_ECORRUPT || rc == QV_ENOTFOUND)
      rc = QV_CORRUPT(err, "snapshot %s: %s", path, err ? err->msg : "invalid");
  }
  collection_unref(c);
  c = NULL;
  if (rc != QV_OK) {
    fileio_remove_tree(tmp, NULL);
    return rc;
  }
  pthread_mutex_lock(&db->mu);
  size_t at;
  qv_collection *old = db_find_locked(db, name, &at);
  if (old != NULL && !replace)
    rc = qv_err_set(err, QV_EEXIST, "collection \"%s\" already exists", name);
  if (rc == QV_OK && old != NULL) rc = db_drop_locked(db, old, at, err);
  bool dropped_old = rc == QV_OK && old != NULL;
  if (rc == QV_OK && rename(tmp, dst) != 0)
    rc = qv_err_set(err, QV_EIO, "rename %s: %s", tmp, strerror(errno));
  char parent[PATH_MAX];
  snprintf(parent, sizeof parent, "%s/collections", db->path);
  if (rc == QV_OK) rc = fileio_fsync_dir(parent, err);
  if (rc == QV_OK) rc = collection_open(db, name, &c, err);
  if (rc == QV_OK && (rc = db_register_locked(db, c, err)) != QV_OK) collection_unref(c);
  pthread_mutex_unlock(&db->mu);
  if (dropped_old) collection_unref(old); /* the registry's reference */
  if (rc != QV_OK) fileio_remove_tree(tmp, NULL);
  else qv_log(QV_LOG_INFO, "snapshot", "restored collection %s from %s", name, path);
  return rc;
}
