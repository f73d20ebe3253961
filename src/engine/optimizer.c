/* optimizer.c: the background thread that seals frozen segments, builds
 * their graphs and merges sealed segments, for every collection of a db.
 *
 * It polls every shard (a short wait between rounds when idle) and never
 * holds the registry lock while it works: it takes references to the
 * collections first. A build uses the db's optimizer threads; at most one
 * build runs per shard at a time (shard->build_mu), so qv_collection_optimize
 * and this thread cooperate without doing the same work twice. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"
#include "engine/engine.h"

#define IDLE_WAIT_MS 100

static void *run(void *arg) {
  qv_db *db = arg;
  pthread_mutex_lock(&db->mu);
  while (!db->stop) {
    size_t n = db->n_colls;
    qv_collection **cs = qv_malloc((n + 1) * sizeof *cs);
    if (cs != NULL)
      for (size_t i = 0; i < n; i++) {
        cs[i] = db->colls[i];
        __atomic_add_fetch(&cs[i]->refs, 1, __ATOMIC_RELAXED);
      }
    pthread_mutex_unlock(&db->mu);
    bool busy = false;
    for (size_t i = 0; cs != NULL && i < n; i++) {
      for (uint32_t s = 0; s < cs[i]->n_shards; s++) {
        bool did = false;
        qv_err e;
        if (__atomic_load_n(&db->stop, __ATOMIC_ACQUIRE)) break;
        if (shard_optimize_step(cs[i]->shards[s], false, &did, &e) != QV_OK &&
            e.rc != QV_ECLOSED)
          qv_log(QV_LOG_WARN, "optimizer", "%s/%u: %s", cs[i]->name, s, e.msg);
        busy |= did;
      }
      collection_unref(cs[i]);
    }
    qv_free(cs);
    pthread_mutex_lock(&db->mu);
    if (!busy && !db->stop) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += IDLE_WAIT_MS * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&db->cv, &db->mu, &ts);
    }
  }
  pthread_mutex_unlock(&db->mu);
  return NULL;
}

qv_rc optimizer_start(qv_db *db, qv_err *err) {
  int e = pthread_create(&db->optimizer, NULL, run, db);
  if (e != 0) return qv_err_set(err, QV_ENOMEM, "optimizer thread: %s", strerror(e));
  db->has_thread = true;
  return QV_OK;
}

void optimizer_stop(qv_db *db) {
  if (!db->has_thread) return;
  pthread_mutex_lock(&db->mu);
  __atomic_store_n(&db->stop, true, __ATOMIC_RELEASE);
  pthread_cond_broadcast(&db->cv);
  pthread_mutex_unlock(&db->mu);
  pthread_join(db->optimizer, NULL);
  db->has_thread = false;
}
