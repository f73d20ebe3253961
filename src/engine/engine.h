/* engine.h: the structures behind the public handles, shared by db.c,
 * collection.c and config.c. */
#ifndef QV_ENGINE_ENGINE_H
#define QV_ENGINE_ENGINE_H

#include <pthread.h>
#include <stdbool.h>

#include "engine/shard.h"
#include "quiver.h"

struct qv_collection {
  qv_db *db;
  char *name;
  char *dir;
  qv_collection_config cfg;
  spaces sp;
  shard **shards;
  uint32_t n_shards;
  pthread_mutex_t idx_mu; /* serialises payload index and config changes;
                           * guards copies of cfg (config_update.c) */
  idxdefs *defs;          /* payload index definitions, or NULL */
  int refs;     /* the registry's one plus one per borrower */
  bool dropped; /* files are removed when the last reference goes */
};

struct qv_db {
  char *path;
  int lock_fd;
  qv_open_opts opts;
  uint32_t n_threads;
  pthread_mutex_t mu; /* guards the registry and `stop` */
  pthread_cond_t cv;  /* wakes the optimizer */
  qv_collection **colls;
  size_t n_colls;
  /* collections that failed a check at open: listed, their names taken,
   * qv_collection_get answers with the stored error, drop removes them */
  struct broken_coll {
    char *name;
    qv_err err;
  } *broken;
  size_t n_broken;
  bool stop;
  bool has_thread;
  pthread_t optimizer;
  uint64_t tmp_seq;
};

/* config.c */
qv_rc config_validate(const qv_collection_config *c, qv_err *err);
qv_rc config_write(const char *path, const qv_collection_config *c, qv_err *err);
qv_rc config_read(const char *path, qv_collection_config *c, qv_err *err);
qv_rc name_validate(const char *name, qv_err *err);

/* collection.c */
qv_rc collection_open(qv_db *db, const char *name, qv_collection **out,
                      qv_err *err);
/* The same for a collection directory somewhere else (a snapshot being
 * restored is checked where it was unpacked before it is moved in). */
qv_rc collection_open_dir(qv_db *db, const char *name, const char *dir,
                          qv_collection **out, qv_err *err);
void collection_unref(qv_collection *c);

/* db.c: registry access for snapshot restore (db->mu held). */
qv_rc db_register_locked(qv_db *db, qv_collection *c, qv_err *err);
qv_collection *db_find_locked(qv_db *db, const char *name, size_t *at);
qv_rc db_drop_locked(qv_db *db, qv_collection *c, size_t at, qv_err *err);

/* payload_indexes.c: loads indexes.json into c->defs and the shards. */
qv_rc collection_load_indexes(qv_collection *c, qv_err *err);

/* optimizer.c */
qv_rc optimizer_start(qv_db *db, qv_err *err);
void optimizer_stop(qv_db *db);

#endif
