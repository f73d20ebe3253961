/* db.c: a database directory — its lock, the registry of collections, and
 * creating and dropping them.
 *
 *   <path>/LOCK                      flock'd by the process that has it open
 *   <path>/collections/<name>/       config.json + one directory per shard
 *
 * Creating builds the whole collection under a temporary name and renames
 * it into place; dropping renames it to a trash name first. Leftovers of
 * either (after a crash) are removed at open. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/fileio.h"
#include "base/log.h"
#include "engine/engine.h"
#include "vec/dist.h"

void qv_open_opts_init(qv_open_opts *o) {
  memset(o, 0, sizeof *o);
  o->create = true;
  o->background_optimizer = true;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

qv_rc db_register_locked(qv_db *db, qv_collection *c, qv_err *err) {
  qv_collection **n = qv_realloc(db->colls, (db->n_colls + 1) * sizeof *n);
  if (n == NULL) return qv_err_set(err, QV_ENOMEM, "no memory");
  db->colls = n;
  db->colls[db->n_colls++] = c;
  return QV_OK;
}

static qv_rc open_all(qv_db *db, qv_err *err) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/collections", db->path);
  qv_rc rc = fileio_mkdirs(path, err);
  if (rc != QV_OK) return rc;
  DIR *d = opendir(path);
  if (d == NULL) return qv_err_set(err, QV_EIO, "opendir %s: %s", path, strerror(errno));
  struct dirent *e;
  while (rc == QV_OK && (e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (e->d_name[0] == '.') { /* .tmp-* or .trash-*: an interrupted create or drop */
      char child[PATH_MAX + 256];
      snprintf(child, sizeof child, "%s/%s", path, e->d_name);
      qv_log(QV_LOG_INFO, "db", "removing leftover %s", child);
      fileio_remove_tree(child, NULL);
      continue;
    }
    if (name_validate(e->d_name, NULL) != QV_OK) continue;
    qv_collection *c;
    qv_err cerr = {0};
    rc = collection_open(db, e->d_name, &c, &cerr);
    if (rc == QV_ECORRUPT) {
      /* Stored bytes failed a check: keep the other collections usable and
       * answer for this one with the error until it is dropped or repaired. */
      qv_log(QV_LOG_ERROR, "db", "collection %s is unusable: %s", e->d_name, cerr.msg);
      struct broken_coll *b = qv_realloc(db->broken, (db->n_broken + 1) * sizeof *b);
      char *name = qv_strdup(e->d_name);
      if (b == NULL || name == NULL) {
        if (b != NULL) db->broken = b;
        qv_free(name);
        rc = qv_err_set(err, QV_ENOMEM, "open: no memory");
        continue;
      }
      db->broken = b;
      db->broken[db->n_broken].name = name;
      db->broken[db->n_broken].err = cerr;
      db->n_broken++;
      rc = QV_OK;
      continue;
    }
    if (rc != QV_OK) qv_err_copy(err, &cerr);
    if (rc == QV_OK && (rc = db_register_locked(db, c, err)) != QV_OK) collection_unref(c);
  }
  closedir(d);
  return rc;
}

qv_rc qv_open(const char *path, const qv_open_opts *opts, qv_db **out,
              qv_err *err) {
  *out = NULL;
  if (path == NULL || *path == 0)
    return qv_err_set(err, QV_EINVAL, "open: empty data directory path");
  /* Leaves room in PATH_MAX buffers for collections/<255-byte name>/<shard>/
   * segments/<id>/segment.qvs.tmp, so no path inside is ever cut short. */
  if (strlen(path) > 3000)
    return qv_err_set(err, QV_EINVAL, "open: data directory path of %zu bytes exceeds 3000",
                      strlen(path));
  qv_open_opts o;
  if (opts)
    o = *opts;
  else
    qv_open_opts_init(&o);
  dist_init();
  if (!fileio_exists(path)) {
    if (!o.create) return qv_err_set(err, QV_ENOTFOUND, "%s does not exist", path);
    qv_rc rc = fileio_mkdirs(path, err);
    if (rc != QV_OK) return rc;
  }
  qv_db *db = qv_calloc(1, sizeof *db);
  if (db == NULL) return qv_err_set(err, QV_ENOMEM, "open: no memory");
  db->lock_fd = -1;
  db->opts = o;
  db->path = qv_strdup(path);
  if (db->path == NULL) {
    qv_free(db);
    return qv_err_set(err, QV_ENOMEM, "open: no memory");
  }
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  db->n_threads = o.optimizer_threads ? o.optimizer_threads : (ncpu > 0 ? (uint32_t)ncpu : 1);
  pthread_mutex_init(&db->mu, NULL);
  pthread_cond_init(&db->cv, NULL);
  char lock[PATH_MAX];
  snprintf(lock, sizeof lock, "%s/LOCK", path);
  qv_rc rc = QV_OK;
  db->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (db->lock_fd < 0)
    rc = qv_err_set(err, QV_EIO, "open %s: %s", lock, strerror(errno));
  else if (flock(db->lock_fd, LOCK_EX | LOCK_NB) != 0)
    rc = qv_err_set(err, errno == EWOULDBLOCK ? QV_EBUSY : QV_EIO,
                    "%s is in use by another process (%s)", path, strerror(errno));
  if (rc == QV_OK) rc = open_all(db, err);
  if (rc == QV_OK && o.background_optimizer) rc = optimizer_start(db, err);
  if (rc != QV_OK) {
    qv_close(db);
    return rc;
  }
  qv_log(QV_LOG_INFO, "db", "opened %s: %zu collections, kernels %s", path,
         db->n_colls, dist_ops_get()->isa);
  *out = db;
  return QV_OK;
}

void qv_close(qv_db *db) {
  if (db == NULL) return;
  optimizer_stop(db);
  for (size_t i = 0; i < db->n_colls; i++) collection_unref(db->colls[i]);
  qv_free(db->colls);
  for (size_t i = 0; i < db->n_broken; i++) qv_free(db->broken[i].name);
  qv_free(db->broken);
  if (db->lock_fd >= 0) close(db->lock_fd);
  pthread_mutex_destroy(&db->mu);
  pthread_cond_destroy(&db->cv);
  qv_free(db->path);
  qv_free(db);
}

static struct broken_coll *find_broken(qv_db *db, const char *name, size_t *at) {
  for (size_t i = 0; i < db->n_broken; i++)
    if (strcmp(db->broken[i].name, name) == 0) {
      if (at) *at = i;
      return &db->broken[i];
    }
  return NULL;
}

qv_collection *db_find_locked(qv_db *db, const char *name, size_t *at) {
  for (size_t i = 0; i < db->n_colls; i++)
    if (strcmp(db->colls[i]->name, name) == 0) {
      if (at) *at = i;
      return db->colls[i];
    }
  return NULL;
}

qv_rc qv_collection_create(qv_db *db, const char *name,
                           const qv_collection_config *cfg, qv_err *err) {
  qv_rc rc = name_validate(name, err);
  if (rc == QV_OK) rc = config_validate(cfg, err);
  if (rc != QV_OK) return rc;
  pthread_mutex_lock(&db->mu);
  if (db_find_locked(db, name, NULL) != NULL || find_broken(db, name, NULL) != NULL) {
    pthread_mutex_unlock(&db->mu);
    return qv_err_set(err, QV_EEXIST, "collection \"%s\" already exists", name);
  }
  char tmp[PATH_MAX], dst[PATH_MAX], path[PATH_MAX + 32];
  /* Not derived from the name: a 255-byte name plus a prefix would exceed
   * the file system's limit on one path component. */
  snprintf(tmp, sizeof tmp, "%s/collections/.tmp-%llu", db->path,
           (unsigned long long)++db->tmp_seq);
  snprintf(dst, sizeof dst, "%s/collections/%s", db->path, name);
  fileio_remove_tree(tmp, NULL);
  rc = fileio_mkdirs(tmp, err);
  snprintf(path, sizeof path, "%s/config.json", tmp);
  if (rc == QV_OK) rc = config_write(path, cfg, err);
  for (uint32_t i = 0; rc == QV_OK && i < cfg->shard_number; i++) {
    snprintf(path, sizeof path, "%s/%u", tmp, i);
    rc = shard_create(path, err);
    if (rc == QV_OK) rc = fileio_fsync_dir(path, err);
  }
  if (rc == QV_OK) rc = fileio_fsync_dir(tmp, err);
  if (rc == QV_OK && rename(tmp, dst) != 0)
    rc = qv_err_set(err, QV_EIO, "rename %s: %s", tmp, strerror(errno));
  snprintf(path, sizeof path, "%s/collections", db->path);
  if (rc == QV_OK) rc = fileio_fsync_dir(path, err);
  qv_collection *c = NULL;
  if (rc == QV_OK) rc = collection_open(db, name, &c, err);
  if (rc == QV_OK && (rc = db_register_locked(db, c, err)) != QV_OK) collection_unref(c);
  if (rc != QV_OK) fileio_remove_tree(tmp, NULL);
  pthread_mutex_unlock(&db->mu);
  return rc;
}

qv_rc qv_collection_drop(qv_db *db, const char *name, qv_err *err) {
  qv_rc rc = name_validate(name, err);
  if (rc != QV_OK) return rc;
  pthread_mutex_lock(&db->mu);
  size_t at;
  qv_collection *c = db_find_locked(db, name, &at);
  if (c == NULL && find_broken(db, name, &at) != NULL) {
    /* a damaged collection: move its files aside and remove them */
    char trash[PATH_MAX], dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/collections/%s", db->path, name);
    snprintf(trash, sizeof trash, "%s/collections/.trash-%llu", db->path,
             (unsigned long long)++db->tmp_seq);
    if (rename(dir, trash) != 0) {
      rc = qv_err_set(err, QV_EIO, "rename %s: %s", dir, strerror(errno));
    } else {
      qv_free(db->broken[at].name);
      db->broken[at] = db->broken[--db->n_broken];
    }
    pthread_mutex_unlock(&db->mu);
    if (rc == QV_OK) fileio_remove_tree(trash, NULL);
    return rc;
  }
  if (c == NULL) {
    pthread_mutex_unlock(&db->mu);
    return qv_err_set(err, QV_ENOTFOUND, "collection \"%s\" does not exist", name);
  }
  rc = db_drop_locked(db, c, at, err);
  pthread_mutex_unlock(&db->mu);
  if (rc == QV_OK) collection_unref(c); /* the registry's reference */
  return rc;
}

/* Moves the collection's directory to a trash name and takes it out of the
 * registry; the caller then drops the registry's reference. */
qv_rc db_drop_locked(qv_db *db, qv_collection *c, size_t at, qv_err *err) {
  char trash[PATH_MAX], path[PATH_MAX];
  snprintf(trash, sizeof trash, "%s/collections/.trash-%llu", db->path,
           (unsigned long long)++db->tmp_seq);
  if (rename(c->dir, trash) != 0)
    return qv_err_set(err, QV_EIO, "rename %s: %s", c->dir, strerror(errno));
  snprintf(path, sizeof path, "%s/collections", db->path);
  fileio_fsync_dir(path, NULL);
  char *old = c->dir;
  c->dir = qv_strdup(trash);
  qv_free(old);
  c->dropped = true;
  db->colls[at] = db->colls[--db->n_colls];
  return QV_OK;
}

qv_rc qv_collection_get(qv_db *db, const char *name, qv_collection **out,
                        qv_err *err) {
  qv_rc rc = name_validate(name, err);
  if (rc != QV_OK) return rc;
  pthread_mutex_lock(&db->mu);
  qv_collection *c = db_find_locked(db, name, NULL);
  if (c != NULL) __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
  struct broken_coll *b = c ? NULL : find_broken(db, name, NULL);
  if (b != NULL) {
    rc = qv_err_copy(err, &b->err);
    if (err == NULL) rc = QV_ECORRUPT;
  }
  pthread_mutex_unlock(&db->mu);
  if (b != NULL) return rc;
  if (c == NULL)
    return qv_err_set(err, QV_ENOTFOUND, "collection \"%s\" does not exist", name);
  *out = c;
  return QV_OK;
}

qv_rc qv_collection_list(qv_db *db, char ***names, size_t *n, qv_err *err) {
  pthread_mutex_lock(&db->mu);
  size_t count = db->n_colls + db->n_broken;
  char **v = calloc(count + 1, sizeof *v);
  qv_rc rc = v ? QV_OK : qv_err_set(err, QV_ENOMEM, "list: no memory");
  for (size_t i = 0; rc == QV_OK && i < count; i++) {
    v[i] = strdup(i < db->n_colls ? db->colls[i]->name : db->broken[i - db->n_colls].name);
    if (v[i] == NULL) rc = qv_err_set(err, QV_ENOMEM, "list: no memory");
  }
  pthread_mutex_unlock(&db->mu);
  if (rc != QV_OK) {
    for (size_t i = 0; v && i < count; i++) free(v[i]);
    free(v);
    return rc;
  }
  qsort(v, count, sizeof *v, name_cmp);
  *names = v;
  *n = count;
  return QV_OK;
}
