/* test_faults.c: the engine under injected I/O and allocation failures.
 *
 * Faults come from the seams in src/base: fileio_fault_write_after(n) and
 * fileio_fault_fsync_after(n) make the n-th write or fsync from now fail (a
 * failing write writes half its bytes first, as a full disk or a crash
 * would), qv_alloc_fail_after(n) the n-th allocation. The rules checked:
 *  - a write whose log write or fsync fails returns QV_EIO, the collection
 *    then refuses writes (QV_ECLOSED) and says so (is_failed), searches never
 *    show the failed write, and after a reopen every acknowledged write is
 *    there;
 *  - a fault anywhere in an index build or merge (qv_collection_optimize)
 *    returns an error and loses nothing: after a reopen the data is exactly
 *    what was acknowledged, and optimizing again works;
 *  - an allocation failure in an upsert, a search, an optimize or an open
 *    returns QV_ENOMEM or succeeds -- never a crash, never QV_ECORRUPT, never
 *    a wrong answer.
 *
 * Owns the fault sweeps and the expected-state model; the background
 * optimizer is off everywhere so each fault lands on the same operation on
 * every run. Kill -9 is test_crash.c, damaged files test_corruption.c. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "quiver.h"
#include "testutil.h"

#define DIM 8
#define N_IDS 400u

static char *g_dir, *g_template;

static void reset_faults(void) {
  fileio_fault_write_after(0);
  fileio_fault_fsync_after(0);
  qv_alloc_fail_after(0);
}

static void cleanup(void) {
  reset_faults();
  tu_rmdir(g_dir);
  tu_rmdir(g_template);
  g_dir = g_template = NULL;
}

TestSuite(faults, .init = reset_faults, .fini = cleanup);

/* ---- data, model, handles ------------------------------------------------------ */

typedef struct model {
  uint64_t want[N_IDS]; /* version of the live point, 0: absent */
} model;

static void vec_of(uint64_t id, uint64_t ver, float *out) {
  uint64_t s = id * 1000003u + ver;
  for (int j = 0; j < DIM; j++) out[j] = tu_randf(&s);
}

static qv_rc open_at(const char *dir, qv_db **db, qv_err *e) {
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  o.optimizer_threads = 1;
  memset(e, 0, sizeof *e);
  *db = NULL;
  return qv_open(dir, &o, db, e);
}

static qv_db *open_ok(const char *dir) {
  qv_db *db;
  qv_err e;
  qv_rc rc = open_at(dir, &db, &e);
  cr_assert_eq(rc, QV_OK, "open %s: %s: %s", dir, qv_rc_name(rc), e.msg);
  return db;
}

static qv_collection *coll(qv_db *db) {
  qv_collection *c = NULL;
  qv_err e;
  cr_assert_eq(qv_collection_get(db, "f", &c, &e), QV_OK, "%s", e.msg);
  return c;
}

static void create(qv_db *db) {
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = DIM;
  cfg.distance = QV_EUCLID;
  cfg.hnsw_m = 8;
  cfg.hnsw_ef_construct = 32;
  cfg.segment_max_points = 1000;
  cfg.full_scan_threshold = 10;
  qv_err e;
  cr_assert_eq(qv_collection_create(db, "f", &cfg, &e), QV_OK, "%s", e.msg);
}

/* Upserts ids first..first+n-1 at version `ver` in one call. */
static qv_rc upsert_rc(qv_collection *c, uint64_t first, uint64_t n, uint64_t ver,
                       qv_err *e) {
  float v[64][DIM];
  char payload[64][32];
  qv_point p[64];
  cr_assert_leq(n, 64);
  for (uint64_t i = 0; i < n; i++) {
    vec_of(first + i, ver, v[i]);
    snprintf(payload[i], sizeof payload[i], "{\"v\":%llu}", (unsigned long long)ver);
    p[i] = (qv_point){.id = qv_id_num(first + i), .vector = v[i], .dim = DIM,
                      .payload = payload[i]};
  }
  return qv_upsert(c, p, n, e);
}

static void upsert(qv_collection *c, uint64_t first, uint64_t n, uint64_t ver,
                   model *m) {
  qv_err e;
  cr_assert_eq(upsert_rc(c, first, n, ver, &e), QV_OK, "%s", e.msg);
  for (uint64_t i = 0; i < n; i++) m->want[first + i] = ver;
}

static void delete_range(qv_collection *c, uint64_t first, uint64_t n, model *m) {
  qv_point_id ids[64];
  for (uint64_t i = 0; i < n; i++) ids[i] = qv_id_num(first + i);
  qv_err e;
  cr_assert_eq(qv_delete(c, ids, n, NULL, &e), QV_OK, "%s", e.msg);
  for (uint64_t i = 0; i < n; i++) m->want[first + i] = 0;
}

/* Version of point `id` as stored (0: absent); checks its vector. */
static uint64_t stored_version(qv_collection *c, uint64_t id, qv_rc *rc_out) {
  qv_point_id pid = qv_id_num(id);
  qv_records r;
  qv_err e;
  qv_rc rc = qv_get(c, &pid, 1, true, true, &r, &e);
  if (rc_out) *rc_out = rc;
  if (rc != QV_OK) return 0;
  unsigned long long v = 0;
  if (r.n == 1) {
    cr_assert_eq(sscanf(r.items[0].payload, "{\"v\":%llu}", &v), 1);
    float want[DIM];
    vec_of(id, v, want);
    cr_assert(memcmp(r.items[0].vector, want, sizeof want) == 0,
              "point %llu v%llu: vector differs", (unsigned long long)id, v);
  }
  qv_records_free(&r);
  return v;
}

/* Whether an exact search for (id, ver)'s vector finds id at distance 0. */
static bool search_finds(qv_collection *c, uint64_t id, uint64_t ver, bool exact) {
  float q[DIM];
  vec_of(id, ver, q);
  qv_search_params sp;
  qv_search_params_init(&sp);
  sp.k = 3;
  sp.exact = exact;
  qv_hit hits[3];
  size_t n;
  qv_err e;
  cr_assert_eq(qv_search(c, q, DIM, &sp, hits, &n, &e), QV_OK, "%s", e.msg);
  for (size_t i = 0; i < n; i++)
    if (hits[i].id.num == id && hits[i].score == 0.0f) return true;
  return false;
}

/* Scroll, count and (optionally) search agree with the model. */
static void check_model(qv_collection *c, const model *m, bool with_search) {
  uint64_t n_want = 0, n_seen = 0;
  for (uint64_t id = 0; id < N_IDS; id++) n_want += m->want[id] != 0;
  qv_point_id cursor, *start = NULL;
  bool has_next = true;
  while (has_next) {
    qv_records r;
    qv_err e;
    cr_assert_eq(qv_scroll(c, start, 100, true, true, &r, &cursor, &has_next, &e),
                 QV_OK, "%s", e.msg);
    for (size_t i = 0; i < r.n; i++) {
      uint64_t id = r.items[i].id.num;
      unsigned long long v = 0;
      sscanf(r.items[i].payload, "{\"v\":%llu}", &v);
      cr_assert(id < N_IDS && m->want[id] == v,
                "point %llu: version %llu, expected %llu", (unsigned long long)id, v,
                id < N_IDS ? (unsigned long long)m->want[id] : 0ull);
      float want[DIM];
      vec_of(id, v, want);
      cr_assert(memcmp(r.items[i].vector, want, sizeof want) == 0,
                "point %llu: vector differs", (unsigned long long)id);
      n_seen++;
    }
    qv_records_free(&r);
    start = &cursor;
  }
  cr_assert_eq(n_seen, n_want, "%llu points, expected %llu", (unsigned long long)n_seen,
               (unsigned long long)n_want);
  uint64_t count;
  qv_err e;
  cr_assert_eq(qv_count(c, &count, &e), QV_OK);
  cr_assert_eq(count, n_want, "count %llu, expected %llu", (unsigned long long)count,
               (unsigned long long)n_want);
  for (uint64_t id = 0; with_search && id < N_IDS; id += 7) {
    if (m->want[id] != 0)
      cr_assert(search_finds(c, id, m->want[id], false), "search misses point %llu",
                (unsigned long long)id);
  }
}

static void reopen_and_check(const char *dir, const model *m) {
  qv_db *db = open_ok(dir);
  qv_collection *c = coll(db);
  check_model(c, m, true);
  qv_collection_release(c);
  qv_close(db);
}

static bool is_failed(qv_collection *c) {
  qv_collection_info info;
  qv_err e;
  cr_assert_eq(qv_collection_info_get(c, &info, &e), QV_OK);
  return info.is_failed;
}

/* ---- copies of a prepared directory ----------------------------------------------- */

static void copy_tree(const char *from, const char *to) {
  struct stat st;
  cr_assert_eq(stat(from, &st), 0, "stat %s", from);
  if (!S_ISDIR(st.st_mode)) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    cr_assert(in && out, "copy %s to %s", from, to);
    char buf[1 << 14];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) cr_assert_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
    return;
  }
  if (mkdir(to, 0755) != 0) cr_assert_eq(stat(to, &st), 0, "mkdir %s", to);
  DIR *d = opendir(from);
  cr_assert_not_null(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "LOCK"))
      continue;
    char a[PATH_MAX], b[PATH_MAX];
    snprintf(a, sizeof a, "%s/%s", from, e->d_name);
    snprintf(b, sizeof b, "%s/%s", to, e->d_name);
    copy_tree(a, b);
  }
  closedir(d);
}

/* A fresh g_dir holding a copy of g_template. */
static void fresh_copy(void) {
  tu_rmdir(g_dir);
  g_dir = tu_tmpdir("faults");
  cr_assert_not_null(g_dir);
  copy_tree(g_template, g_dir);
}

/* The template for the build sweeps: nine sealed segments of 20 points (so
 * the optimizer must merge), then, in the log only, updates of 0..14 (15 of
 * the first segment's 20 rows dead: a vacuum) and deletes of 20..24. The
 * next optimize seals the log's segment, vacuums and merges: every kind of
 * build, each ending in a MANIFEST write. */
static void make_build_template(model *m) {
  g_template = tu_tmpdir("faults-tpl");
  qv_db *db = open_ok(g_template);
  create(db);
  qv_collection *c = coll(db);
  memset(m, 0, sizeof *m);
  for (uint64_t r = 0; r < 9; r++) {
    upsert(c, r * 20, 20, 1, m);
    qv_err e;
    cr_assert_eq(qv_collection_optimize(c, &e), QV_OK, "%s", e.msg);
  }
  upsert(c, 0, 15, 2, m);
  delete_range(c, 20, 5, m);
  qv_collection_release(c);
  qv_close(db);
}

/* ---- the log's write and fsync failures ------------------------------------------- */

static void log_fault_case(bool is_fsync) {
  g_dir = tu_tmpdir("faults");
  model m = {0};
  qv_db *db = open_ok(g_dir);
  create(db);
  qv_collection *c = coll(db);
  for (uint64_t id = 0; id < 50; id++) upsert(c, id, 1, 1, &m);
  if (is_fsync)
    fileio_fault_fsync_after(1);
  else
    fileio_fault_write_after(1);
  qv_err e;
  qv_rc rc = upsert_rc(c, 50, 1, 1, &e);
  reset_faults();
  cr_assert_eq(rc, QV_EIO, "the faulted upsert: %s (%s)", qv_rc_name(rc), e.msg);
  cr_assert(is_failed(c));
  rc = upsert_rc(c, 51, 1, 1, &e);
  cr_assert_eq(rc, QV_ECLOSED, "the next upsert: %s", qv_rc_name(rc));
  qv_point_id del = qv_id_num(3);
  cr_assert_eq(qv_delete(c, &del, 1, NULL, &e), QV_ECLOSED);
  rc = qv_collection_optimize(c, &e);
  cr_assert(rc == QV_ECLOSED || rc == QV_EIO, "optimize after the fault: %s",
            qv_rc_name(rc));
  /* Searches still answer, from acknowledged data only. */
  cr_assert(search_finds(c, 7, 1, true));
  cr_assert(!search_finds(c, 50, 1, true), "search shows the failed write");
  qv_collection_release(c);
  qv_close(db);

  db = open_ok(g_dir);
  c = coll(db);
  /* The failed write may have reached the file (an fsync that failed after
   * the bytes were handed over) or not (a half-written record, cut as a torn
   * tail); either way it is whole or absent. */
  uint64_t v50 = stored_version(c, 50, NULL);
  if (!is_fsync) cr_assert_eq(v50, 0, "a half-written record was replayed");
  m.want[50] = v50;
  check_model(c, &m, true);
  /* Writable again, and what is written now survives another reopen (the
   * cut tail left nothing that would read as damage). */
  upsert(c, 60, 10, 2, &m);
  qv_collection_release(c);
  qv_close(db);
  reopen_and_check(g_dir, &m);
}

Test(faults, wal_fsync_failure_fails_the_collection_keeps_acked_writes) {
  log_fault_case(true);
}

Test(faults, wal_write_failure_fails_the_collection_keeps_acked_writes) {
  log_fault_case(false);
}

/* Several writers share the failing fsync (group commit): every one of them
 * gets an error, no one gets QV_OK for a write that is not durable. */
typedef struct racer {
  qv_collection *c;
  uint64_t first, n_acked;
  qv_rc last;
} racer;

static void *race(void *arg) {
  racer *r = arg;
  for (uint64_t i = 0; i < 40; i++) {
    qv_err e;
    r->last = upsert_rc(r->c, r->first + i, 1, 1, &e);
    if (r->last != QV_OK) break;
    r->n_acked++;
  }
  return NULL;
}

Test(faults, wal_fsync_failure_with_concurrent_writers_keeps_acked_writes) {
  g_dir = tu_tmpdir("faults");
  qv_db *db = open_ok(g_dir);
  create(db);
  qv_collection *c = coll(db);
  fileio_fault_fsync_after(25);
  racer r[4];
  pthread_t th[4];
  for (int t = 0; t < 4; t++) {
    r[t] = (racer){.c = c, .first = (uint64_t)t * 100};
    pthread_create(&th[t], NULL, race, &r[t]);
  }
  for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
  reset_faults();
  uint64_t total = 0;
  for (int t = 0; t < 4; t++) {
    total += r[t].n_acked;
    cr_assert(r[t].last == QV_EIO || r[t].last == QV_ECLOSED,
              "writer %d ended with %s after %llu writes", t, qv_rc_name(r[t].last),
              (unsigned long long)r[t].n_acked);
  }
  cr_assert_lt(total, 160);
  qv_collection_release(c);
  qv_close(db);
  db = open_ok(g_dir);
  c = coll(db);
  for (int t = 0; t < 4; t++)
    for (uint64_t i = 0; i < r[t].n_acked; i++)
      cr_assert_eq(stored_version(c, r[t].first + i, NULL), 1,
                   "acknowledged point %llu is lost", (unsigned long long)(r[t].first + i));
  qv_collection_release(c);
  qv_close(db);
}

/* ---- faults inside index builds ---------------------------------------------------- */

/* Fault number n (write or fsync) during an optimize of a copy of the
 * template: an error or success, and after a reopen exactly the model. */
static void build_fault_sweep(bool is_fsync) {
  model m;
  make_build_template(&m);
  unsigned n_ok_run = 0, n_err = 0, n;
  for (n = 1; n_ok_run < 4 && n < 400; n++) {
    fresh_copy();
    qv_db *db = open_ok(g_dir);
    qv_collection *c = coll(db);
    if (is_fsync)
      fileio_fault_fsync_after(n);
    else
      fileio_fault_write_after(n);
    qv_err e = {0};
    qv_rc rc = qv_collection_optimize(c, &e);
    reset_faults();
    cr_assert(rc == QV_OK || rc == QV_EIO || rc == QV_ECLOSED,
              "%s fault %u: optimize gave %s (%s)", is_fsync ? "fsync" : "write", n,
              qv_rc_name(rc), e.msg);
    n_ok_run = rc == QV_OK ? n_ok_run + 1 : 0;
    n_err += rc != QV_OK;
    qv_collection_release(c);
    qv_close(db);

    qv_err oe;
    rc = open_at(g_dir, &db, &oe);
    cr_assert_eq(rc, QV_OK, "%s fault %u during optimize, then reopen: %s: %s",
                 is_fsync ? "fsync" : "write", n, qv_rc_name(rc), oe.msg);
    c = coll(db);
    check_model(c, &m, true);
    cr_assert_eq(qv_collection_optimize(c, &e), QV_OK, "optimize after reopen: %s",
                 e.msg);
    check_model(c, &m, true);
    qv_collection_release(c);
    qv_close(db);
  }
  cr_log_info("%s faults: %u of the first %u failed the optimize",
              is_fsync ? "fsync" : "write", n_err, n - 1);
  cr_assert_gt(n_err, 0);
}

Test(faults, write_fault_during_optimize_loses_nothing, .timeout = 0) {
  build_fault_sweep(false);
}

Test(faults, fsync_fault_during_optimize_loses_nothing, .timeout = 0) {
  build_fault_sweep(true);
}

/* ---- allocation failures ------------------------------------------------------------ */

/* Allocation n of an upsert of 10 points fails: QV_ENOMEM or QV_OK. A
 * QV_ENOMEM that did not fail the collection wrote nothing; one that did
 * left the batch whole or absent, in memory and after a reopen. */
Test(faults, alloc_failure_during_upsert, .timeout = 0) {
  g_dir = tu_tmpdir("faults");
  model m = {0};
  qv_db *db = open_ok(g_dir);
  create(db);
  qv_collection *c = coll(db);
  upsert(c, 0, 50, 1, &m);
  unsigned n_ok_run = 0, n_enomem = 0, n;
  for (n = 1; n_ok_run < 4 && n < 500; n++) {
    uint64_t first = 100 + (n % 25) * 10, ver = 10 + n;
    qv_alloc_fail_after(n);
    qv_err e = {0};
    qv_rc rc = upsert_rc(c, first, 10, ver, &e);
    reset_faults();
    cr_assert(rc == QV_OK || rc == QV_ENOMEM, "alloc %u: %s (%s)", n, qv_rc_name(rc),
              e.msg);
    n_ok_run = rc == QV_OK ? n_ok_run + 1 : 0;
    if (rc == QV_OK) {
      for (uint64_t i = 0; i < 10; i++) m.want[first + i] = ver;
      check_model(c, &m, false);
      continue;
    }
    n_enomem++;
    if (!is_failed(c)) { /* refused before logging: nothing written */
      check_model(c, &m, false);
      continue;
    }
    /* Logged, not applied: the batch must not show in part. */
    unsigned present = 0;
    for (uint64_t i = 0; i < 10; i++) {
      qv_rc grc;
      uint64_t v = stored_version(c, first + i, &grc);
      present += grc == QV_OK && v == ver;
    }
    cr_assert(present == 0 || present == 10,
              "alloc %u: after QV_ENOMEM, reads show %u of the batch's 10 points", n,
              present);
    qv_collection_release(c);
    qv_close(db);
    db = open_ok(g_dir);
    c = coll(db);
    present = 0;
    for (uint64_t i = 0; i < 10; i++) present += stored_version(c, first + i, NULL) == ver;
    cr_assert(present == 0 || present == 10,
              "alloc %u: after reopen %u of the batch's 10 points exist", n, present);
    for (uint64_t i = 0; present && i < 10; i++) m.want[first + i] = ver;
    check_model(c, &m, true);
  }
  cr_log_info("upsert: %u of the first %u allocations failed it", n_enomem, n - 1);
  cr_assert_gt(n_enomem, 0);
  qv_collection_release(c);
  qv_close(db);
  reopen_and_check(g_dir, &m);
}

/* Allocation n of a search fails: QV_ENOMEM, or the same hits as without
 * the fault. Over two sealed segments (graph search) and a mutable one. */
Test(faults, alloc_failure_during_search, .timeout = 0) {
  g_dir = tu_tmpdir("faults");
  model m = {0};
  qv_db *db = open_ok(g_dir);
  create(db);
  qv_collection *c = coll(db);
  qv_err e;
  upsert(c, 0, 60, 1, &m);
  cr_assert_eq(qv_collection_optimize(c, &e), QV_OK);
  upsert(c, 60, 60, 1, &m);
  cr_assert_eq(qv_collection_optimize(c, &e), QV_OK);
  upsert(c, 120, 30, 1, &m);
  delete_range(c, 5, 5, &m);
  float q[DIM];
  vec_of(33, 1, q);
  for (int exact = 0; exact < 2; exact++) {
    qv_search_params sp;
    qv_search_params_init(&sp);
    sp.k = 10;
    sp.exact = exact;
    qv_hit base[10], hits[10];
    size_t n_base, n_hits;
    cr_assert_eq(qv_search(c, q, DIM, &sp, base, &n_base, &e), QV_OK);
    cr_assert_eq(n_base, 10);
    unsigned n_ok_run = 0, n;
    for (n = 1; n_ok_run < 4 && n < 500; n++) {
      qv_alloc_fail_after(n);
      qv_rc rc = qv_search(c, q, DIM, &sp, hits, &n_hits, &e);
      reset_faults();
      cr_assert(rc == QV_OK || rc == QV_ENOMEM, "alloc %u: %s", n, qv_rc_name(rc));
      n_ok_run = rc == QV_OK ? n_ok_run + 1 : 0;
      if (rc != QV_OK) continue;
      cr_assert_eq(n_hits, n_base, "alloc %u: %zu hits, expected %zu", n, n_hits, n_base);
      for (size_t i = 0; i < n_hits; i++)
        cr_assert(hits[i].id.num == base[i].id.num && hits[i].score == base[i].score,
                  "alloc %u: hit %zu differs", n, i);
    }
    cr_assert_gt(n, 2, "no allocation in a search?");
  }
  check_model(c, &m, true);
  qv_collection_release(c);
  qv_close(db);
}

/* Deletes every third live point and rewrites the next third, then checks
 * that no search finds a replaced or deleted version: the writes must reach
 * the rows searches read, wherever the optimizer put them. */
static void churn(qv_collection *c, model *m, unsigned n, const char *why) {
  model before = *m;
  /* Few calls, so few fsyncs: this runs once per allocation tried. */
  static float vecs[200][DIM];
  static char payloads[200][32];
  qv_point pts[200];
  qv_point_id del[200];
  size_t n_del = 0, n_up = 0;
  for (uint64_t id = 0; id < 200; id++) {
    if (m->want[id] == 0 || id % 3 == 2) continue;
    if (id % 3 == 0) {
      del[n_del++] = qv_id_num(id);
      m->want[id] = 0;
      continue;
    }
    uint64_t ver = m->want[id] + 10;
    vec_of(id, ver, vecs[n_up]);
    snprintf(payloads[n_up], sizeof payloads[n_up], "{\"v\":%llu}", (unsigned long long)ver);
    pts[n_up] = (qv_point){.id = qv_id_num(id), .vector = vecs[n_up], .dim = DIM,
                           .payload = payloads[n_up]};
    n_up++;
    m->want[id] = ver;
  }
  qv_err e;
  cr_assert_eq(qv_delete(c, del, n_del, NULL, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_upsert(c, pts, n_up, &e), QV_OK, "%s", e.msg);
  check_model(c, m, true);
  for (uint64_t id = 0; id < 200; id++) {
    if (before.want[id] == 0 || id % 3 == 2) continue;
    for (int exact = 0; exact < 2; exact++)
      cr_assert(!search_finds(c, id, before.want[id], exact),
                "alloc %u (%s): %s search finds point %llu v%llu, which was %s", n, why,
                exact ? "exact" : "graph", (unsigned long long)id,
                (unsigned long long)before.want[id],
                id % 3 == 0 ? "deleted" : "replaced");
  }
}

/* Allocation n of an optimize fails: an error or success, then the same
 * handle keeps answering correctly -- also after further writes, which must
 * reach the rows the id map points at -- and a reopen has the model. */
Test(faults, alloc_failure_during_optimize, .timeout = 0) {
  model tm;
  make_build_template(&tm);
  unsigned n_ok_run = 0, n_err = 0, n;
  for (n = 1; n_ok_run < 4 && n < 2000; n++) {
    model m = tm;
    fresh_copy();
    qv_db *db = open_ok(g_dir);
    qv_collection *c = coll(db);
    qv_alloc_fail_after(n);
    qv_err e = {0};
    qv_rc rc = qv_collection_optimize(c, &e);
    reset_faults();
    cr_assert(rc == QV_OK || rc == QV_ENOMEM || rc == QV_ECLOSED,
              "alloc %u: optimize gave %s (%s)", n, qv_rc_name(rc), e.msg);
    n_ok_run = rc == QV_OK ? n_ok_run + 1 : 0;
    n_err += rc != QV_OK;
    check_model(c, &m, true);
    if (!is_failed(c)) {
      char why[sizeof e.msg];
      snprintf(why, sizeof why, "%s", rc == QV_OK ? "optimize succeeded" : e.msg);
      cr_assert_eq(qv_collection_optimize(c, &e), QV_OK, "alloc %u: optimize again: %s",
                   n, e.msg);
      churn(c, &m, n, why);
    }
    qv_collection_release(c);
    qv_close(db);
    reopen_and_check(g_dir, &m);
  }
  cr_log_info("optimize: %u of %u tried allocations failed it", n_err, n);
  cr_assert_gt(n_err, 0);
}

/* Allocation n of an open (recovery: MANIFEST, segments, graphs, log
 * replay) fails: QV_ENOMEM, never QV_ECORRUPT, never QV_OK with the data
 * missing, and nothing on disk is harmed: the next open has everything. */
Test(faults, alloc_failure_during_open, .timeout = 0) {
  model m;
  make_build_template(&m);
  g_dir = tu_tmpdir("faults");
  copy_tree(g_template, g_dir);
  /* Whatever a failed open might create relative to the working directory
   * lands in a directory this test removes. */
  cr_assert_eq(chdir(g_template), 0);
  unsigned n_ok_run = 0, n_err = 0, n;
  for (n = 1; n_ok_run < 4 && n < 5000; n++) {
    qv_db *db;
    qv_err e;
    qv_alloc_fail_after(n);
    qv_rc rc = open_at(g_dir, &db, &e);
    reset_faults();
    cr_assert(rc == QV_OK || rc == QV_ENOMEM, "alloc %u: open gave %s (%s)", n,
              qv_rc_name(rc), e.msg);
    n_ok_run = rc == QV_OK ? n_ok_run + 1 : 0;
    n_err += rc != QV_OK;
    if (rc == QV_OK) {
      qv_collection *c = coll(db);
      check_model(c, &m, true);
      qv_collection_release(c);
      qv_close(db);
    } else {
      reopen_and_check(g_dir, &m);
    }
  }
  cr_log_info("open: %u of the tried allocations failed it (up to %u)", n_err, n);
  cr_assert_gt(n_err, 0);
}
