/* test_concurrency.c: searches and reads in parallel with writes and with
 * background index builds and merges. A writer rewrites all N points in one
 * batch per version v (every vector = v in each component); a reader that
 * sees a consistent snapshot finds all N points at one version, so the N
 * distances from the origin are equal. A torn snapshot, a lost point or a
 * duplicate shows up as unequal scores or a count other than N. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"
#include "testutil.h"

#define N 60
#define DIM 4
#define VERSIONS 400
#define READERS 3

typedef struct shared {
  qv_collection *c;
  int done;
  int failures;
  char first_failure[256];
  long searches;
} shared;

static void fail(shared *s, const char *msg) {
  if (__atomic_fetch_add(&s->failures, 1, __ATOMIC_RELAXED) == 0)
    snprintf(s->first_failure, sizeof s->first_failure, "%s", msg);
}

static void *writer(void *arg) {
  shared *s = arg;
  static float vecs[N * DIM];
  qv_point pts[N];
  for (int v = 1; v <= VERSIONS; v++) {
    for (int i = 0; i < N; i++) {
      for (int d = 0; d < DIM; d++) vecs[i * DIM + d] = (float)v;
      pts[i] = (qv_point){.id = qv_id_num(i), .vector = vecs + i * DIM, .dim = DIM};
    }
    qv_err e;
    if (qv_upsert(s->c, pts, N, &e) != QV_OK) fail(s, e.msg);
  }
  __atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void *reader(void *arg) {
  shared *s = arg;
  float origin[DIM] = {0};
  qv_hit hits[N];
  int round = 0;
  while (!__atomic_load_n(&s->done, __ATOMIC_ACQUIRE)) {
    qv_search_params p;
    qv_search_params_init(&p);
    p.k = N;
    p.exact = (round++ % 2) == 0; /* alternate exact scans and graph search */
    p.ef = 2 * N;
    size_t n;
    qv_err e;
    char msg[256];
    if (qv_search(s->c, origin, DIM, &p, hits, &n, &e) != QV_OK) {
      fail(s, e.msg);
      break;
    }
    __atomic_fetch_add(&s->searches, 1, __ATOMIC_RELAXED);
    if (n == 0) continue; /* before the first write is durable */
    if (n != N) {
      snprintf(msg, sizeof msg, "%s search returned %zu of %d points",
               p.exact ? "exact" : "graph", n, N);
      fail(s, msg);
      continue;
    }
    for (size_t i = 1; i < n; i++)
      if (hits[i].score != hits[0].score) {
        snprintf(msg, sizeof msg, "torn snapshot: scores %g and %g in one result",
                 hits[0].score, hits[i].score);
        fail(s, msg);
        break;
      }
    uint64_t count;
    qv_count(s->c, &count, &e);
    if (count != N && count != 0) {
      snprintf(msg, sizeof msg, "count %llu, expected %d", (unsigned long long)count, N);
      fail(s, msg);
    }
  }
  return NULL;
}

Test(concurrency, searches_see_consistent_snapshots_during_writes_and_builds,
     .timeout = 300) {
  char *dir = tu_tmpdir("conc");
  qv_db *db;
  qv_err e;
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = true; /* seal, build and merge while we read */
  cr_assert_eq(qv_open(dir, &o, &db, &e), QV_OK, "%s", e.msg);
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = DIM;
  cfg.distance = QV_EUCLID;
  cfg.segment_max_points = 4 * N; /* a freeze every few versions */
  cfg.full_scan_threshold = 10;   /* sealed segments are searched by graph */
  cr_assert_eq(qv_collection_create(db, "c", &cfg, &e), QV_OK, "%s", e.msg);
  shared s = {0};
  cr_assert_eq(qv_collection_get(db, "c", &s.c, &e), QV_OK);
  pthread_t w, r[READERS];
  pthread_create(&w, NULL, writer, &s);
  for (int i = 0; i < READERS; i++) pthread_create(&r[i], NULL, reader, &s);
  pthread_join(w, NULL);
  for (int i = 0; i < READERS; i++) pthread_join(r[i], NULL);
  cr_expect_eq(s.failures, 0, "%d failures, first: %s", s.failures, s.first_failure);
  cr_expect_gt(s.searches, 0);
  /* The final state is the last version everywhere, and survives reopen. */
  cr_assert_eq(qv_collection_optimize(s.c, &e), QV_OK, "%s", e.msg);
  qv_collection_release(s.c);
  qv_close(db);
  cr_assert_eq(qv_open(dir, &o, &db, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_collection_get(db, "c", &s.c, &e), QV_OK);
  float origin[DIM] = {0};
  qv_hit hits[N];
  size_t n;
  qv_search_params p;
  qv_search_params_init(&p);
  p.k = N;
  cr_assert_eq(qv_search(s.c, origin, DIM, &p, hits, &n, &e), QV_OK);
  cr_assert_eq(n, N);
  for (size_t i = 0; i < n; i++)
    cr_expect_float_eq(hits[i].score, VERSIONS * 2.0f, 1e-3, "sqrt(4 * v^2) = 2v");
  qv_collection_release(s.c);
  qv_close(db);
  tu_rmdir(dir);
}
