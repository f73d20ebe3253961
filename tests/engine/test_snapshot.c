/* test_snapshot.c: collection snapshots restore to the same points (sealed
 * segments, unsealed log tail, deletes), include every write acknowledged
 * before the call even while writes continue, and damaged or hostile
 * archives are refused without touching anything. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "quiver.h"
#include "testutil.h"

#define DIM 8

static qv_db *open_db(const char *dir) {
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_db *db;
  qv_err e;
  cr_assert_eq(qv_open(dir, &o, &db, &e), QV_OK, "%s", e.msg);
  return db;
}

static qv_collection *get(qv_db *db, const char *name) {
  qv_collection *c;
  qv_err e;
  cr_assert_eq(qv_collection_get(db, name, &c, &e), QV_OK, "%s", e.msg);
  return c;
}

static void put_range(qv_collection *c, uint64_t from, uint64_t to, uint64_t seed) {
  float v[DIM];
  char payload[64];
  qv_err e;
  for (uint64_t i = from; i < to; i++) {
    uint64_t s = seed + i;
    for (int d = 0; d < DIM; d++) v[d] = tu_randf(&s);
    snprintf(payload, sizeof payload, "{\"i\":%llu}", (unsigned long long)i);
    qv_point p = {.id = qv_id_num(i), .vector = v, .dim = DIM, .payload = payload};
    cr_assert_eq(qv_upsert(c, &p, 1, &e), QV_OK, "%s", e.msg);
  }
}

static void assert_same(qv_collection *a, qv_collection *b, uint64_t max_id) {
  uint64_t na, nb;
  qv_count(a, &na, NULL);
  qv_count(b, &nb, NULL);
  cr_assert_eq(na, nb, "counts %llu vs %llu", (unsigned long long)na, (unsigned long long)nb);
  for (uint64_t i = 0; i < max_id; i++) {
    qv_point_id id = qv_id_num(i);
    qv_records ra, rb;
    cr_assert_eq(qv_get(a, &id, 1, true, true, &ra, NULL), QV_OK);
    cr_assert_eq(qv_get(b, &id, 1, true, true, &rb, NULL), QV_OK);
    cr_assert_eq(ra.n, rb.n, "point %llu present in one only", (unsigned long long)i);
    if (ra.n) {
      cr_expect_arr_eq(ra.items[0].vector, rb.items[0].vector, DIM * sizeof(float));
      cr_expect_str_eq(ra.items[0].payload, rb.items[0].payload);
    }
    qv_records_free(&ra);
    qv_records_free(&rb);
  }
}

Test(snapshot, restore_reproduces_sealed_unsealed_and_deleted_points) {
  char *dir = tu_tmpdir("snap");
  qv_db *db = open_db(dir);
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = DIM;
  cfg.distance = QV_DOT;
  cfg.shard_number = 2;
  qv_err e;
  cr_assert_eq(qv_collection_create(db, "src", &cfg, &e), QV_OK);
  qv_collection *c = get(db, "src");
  put_range(c, 0, 300, 1);
  cr_assert_eq(qv_collection_optimize(c, &e), QV_OK);
  put_range(c, 200, 400, 2); /* updates across segments, in the log only */
  qv_point_id del[3] = {qv_id_num(5), qv_id_num(250), qv_id_num(399)};
  cr_assert_eq(qv_delete(c, del, 3, NULL, &e), QV_OK);
  char snap[4200];
  snprintf(snap, sizeof snap, "%s/src.snapshot", dir);
  cr_assert_eq(qv_snapshot_create(c, snap, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_snapshot_restore(db, "copy", snap, false, &e), QV_OK, "%s", e.msg);
  qv_collection *copy = get(db, "copy");
  assert_same(c, copy, 410);
  cr_expect_eq(qv_snapshot_restore(db, "copy", snap, false, &e), QV_EEXIST);
  put_range(copy, 1000, 1001, 3);
  qv_collection_release(copy);
  cr_assert_eq(qv_snapshot_restore(db, "copy", snap, true, &e), QV_OK, "%s", e.msg);
  copy = get(db, "copy");
  assert_same(c, copy, 1010); /* the replaced copy lost its extra point */
  qv_collection_release(copy);
  qv_collection_release(c);
  qv_close(db);
  db = open_db(dir); /* the restored collection is durable */
  c = get(db, "src");
  copy = get(db, "copy");
  assert_same(c, copy, 410);
  qv_collection_release(c);
  qv_collection_release(copy);
  qv_close(db);
  tu_rmdir(dir);
}

typedef struct writer_arg {
  qv_collection *c;
  uint64_t acked; /* ids [0, acked) are acknowledged */
  int stop;
} writer_arg;

static void *writer(void *p) {
  writer_arg *w = p;
  float v[DIM] = {1};
  for (uint64_t i = 0; !__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE) && i < 100000; i++) {
    qv_point pt = {.id = qv_id_num(i), .vector = v, .dim = DIM};
    if (qv_upsert(w->c, &pt, 1, NULL) != QV_OK) break;
    __atomic_store_n(&w->acked, i + 1, __ATOMIC_RELEASE);
  }
  return NULL;
}

Test(snapshot, holds_every_write_acknowledged_before_it_during_writes) {
  char *dir = tu_tmpdir("snapw");
  qv_db *db = open_db(dir);
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = DIM;
  cfg.segment_max_points = 200; /* freezes and log rotation during the run */
  qv_err e;
  cr_assert_eq(qv_collection_create(db, "w", &cfg, &e), QV_OK);
  writer_arg w = {.c = get(db, "w")};
  pthread_t t;
  pthread_create(&t, NULL, writer, &w);
  while (__atomic_load_n(&w.acked, __ATOMIC_ACQUIRE) < 500) usleep(1000);
  char snap[4200];
  snprintf(snap, sizeof snap, "%s/w.snapshot", dir);
  uint64_t before = __atomic_load_n(&w.acked, __ATOMIC_ACQUIRE);
  cr_assert_eq(qv_snapshot_create(w.c, snap, &e), QV_OK, "%s", e.msg);
  __atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
  pthread_join(t, NULL);
  cr_assert_eq(qv_snapshot_restore(db, "r", snap, false, &e), QV_OK, "%s", e.msg);
  qv_collection *r = get(db, "r");
  uint64_t n;
  qv_count(r, &n, NULL);
  cr_expect_geq(n, before, "snapshot has %llu points, %llu were acknowledged before it",
                (unsigned long long)n, (unsigned long long)before);
  for (uint64_t i = 0; i < before; i++) {
    qv_point_id id = qv_id_num(i);
    qv_records rr;
    cr_assert_eq(qv_get(r, &id, 1, false, false, &rr, NULL), QV_OK);
    cr_expect_eq(rr.n, 1, "acknowledged point %llu missing", (unsigned long long)i);
    qv_records_free(&rr);
  }
  qv_collection_release(r);
  qv_collection_release(w.c);
  qv_close(db);
  tu_rmdir(dir);
}

Test(snapshot, damaged_or_hostile_archives_change_nothing) {
  char *dir = tu_tmpdir("snapbad");
  qv_db *db = open_db(dir);
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = DIM;
  qv_err e;
  cr_assert_eq(qv_collection_create(db, "s", &cfg, &e), QV_OK);
  qv_collection *c = get(db, "s");
  put_range(c, 0, 100, 4);
  cr_assert_eq(qv_collection_optimize(c, &e), QV_OK);
  char snap[4200], bad[4200];
  snprintf(snap, sizeof snap, "%s/s.snapshot", dir);
  snprintf(bad, sizeof bad, "%s/bad.snapshot", dir);
  cr_assert_eq(qv_snapshot_create(c, snap, &e), QV_OK);
  char *data;
  size_t n;
  cr_assert_eq(fileio_read_file(snap, &data, &n, NULL), QV_OK);
  /* truncated archives */
  for (size_t cut = 0; cut < n; cut += n / 7 + 1) {
    cr_assert_eq(fileio_write_atomic(bad, data, cut, NULL), QV_OK);
    cr_expect_eq(qv_snapshot_restore(db, "t", bad, false, &e), QV_ECORRUPT, "cut at %zu", cut);
  }
  /* a flipped byte inside a segment file's data */
  char *segmember = memmem(data, n, "segment.qvs", 11);
  cr_assert_not_null(segmember);
  size_t body = (size_t)(segmember - data) / 512 * 512 + 512; /* first data block */
  data[body + 4096 + 100] ^= 1; /* inside the vectors section */
  cr_assert_eq(fileio_write_atomic(bad, data, n, NULL), QV_OK);
  cr_expect_eq(qv_snapshot_restore(db, "t", bad, false, &e), QV_ECORRUPT);
  data[body + 4096 + 100] ^= 1; /* inside the vectors section */
  /* a member path that climbs out, with a valid header checksum */
  char *hdr = data; /* the first member's header */
  memset(hdr, 0, 100);
  memcpy(hdr, "../escape", 9);
  unsigned sum = 0;
  for (int i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? ' ' : (unsigned char)hdr[i];
  snprintf(hdr + 148, 8, "%06o", sum);
  hdr[155] = ' ';
  cr_assert_eq(fileio_write_atomic(bad, data, n, NULL), QV_OK);
  cr_expect_eq(qv_snapshot_restore(db, "t", bad, false, &e), QV_ECORRUPT);
  cr_expect(strstr(e.msg, "escape") != NULL, "%s", e.msg);
  char escaped[4200];
  snprintf(escaped, sizeof escaped, "%s/collections/escape", dir);
  cr_expect_not(fileio_exists(escaped));
  qv_collection *t;
  cr_expect_eq(qv_collection_get(db, "t", &t, &e), QV_ENOTFOUND, "nothing was created");
  cr_expect_eq(qv_snapshot_restore(db, "t", "/nonexistent.snapshot", false, &e), QV_ENOTFOUND);
  qv_free(data);
  qv_collection_release(c);
  qv_close(db);
  tu_rmdir(dir);
}
