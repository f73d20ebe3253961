/* test_corruption.c: damaged and leftover files in a database directory.
 *
 * Each test fills a small database (two sealed segments, one of them
 * rewritten by a vacuum, plus writes that live only in the log), closes it,
 * damages or adds files, and reopens. The rule: a reopen either fails with
 * QV_ECORRUPT naming the damaged file, or succeeds with exactly the data
 * that was acknowledged -- never a crash, never success with wrong data --
 * and putting the original bytes back makes it open with all data again.
 * A torn log tail (a crash in the middle of an append) is not damage: the
 * reopen succeeds with the writes before it.
 *
 * Owns the expected-state model of the filled database and the file
 * surgery. Knows these on-disk layouts, and must follow them if they change:
 * the log frame header (storage/wal.h: WAL_HEADER_BYTES, u32 length at
 * offset 4) and the section table of segment.qvs (storage/segfile.h: six
 * {u64 offset, u64 size, u32 crc, u32 pad} descriptors from byte 48).
 * Kill -9 recovery is test_crash.c; injected I/O errors are test_faults.c. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "quiver.h"
#include "storage/wal.h"
#include "testutil.h"

#define DIM 8
#define N_IDS 320u

static char *g_dir;

static void cleanup(void) {
  tu_rmdir(g_dir);
  g_dir = NULL;
}

TestSuite(corruption, .fini = cleanup);

/* ---- the data and its model ------------------------------------------------ */

/* want[id]: the version of the live point, 0 if absent. */
typedef struct model {
  uint64_t want[N_IDS];
} model;

/* One write that went only to the log, in log order. */
typedef struct tail_op {
  bool is_delete;
  uint64_t id, ver; /* a delete removes ids id..id+ver-1 */
} tail_op;

#define MAX_TAIL 128
static tail_op g_tail[MAX_TAIL];
static size_t g_n_tail;

static void vec_of(uint64_t id, uint64_t ver, float *out) {
  uint64_t s = id * 1000003u + ver;
  for (int j = 0; j < DIM; j++) out[j] = tu_randf(&s);
}

static void apply_tail(model *m, const tail_op *op) {
  if (!op->is_delete) {
    m->want[op->id] = op->ver;
    return;
  }
  for (uint64_t i = 0; i < op->ver; i++) m->want[op->id + i] = 0;
}

/* Opens the database and every collection in it: a damaged collection no
 * longer fails qv_open (the others stay usable), so its error is the one
 * qv_collection_get reports. Returns the first error of either. */
static qv_rc open_rc(qv_db **db, qv_err *e) {
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.create = false;
  o.background_optimizer = false;
  memset(e, 0, sizeof *e);
  qv_rc rc = qv_open(g_dir, &o, db, e);
  if (rc != QV_OK) return rc;
  char **names = NULL;
  size_t n = 0;
  rc = qv_collection_list(*db, &names, &n, e);
  for (size_t i = 0; i < n; i++) {
    qv_collection *c;
    if (rc == QV_OK && (rc = qv_collection_get(*db, names[i], &c, e)) == QV_OK)
      qv_collection_release(c);
    free(names[i]);
  }
  free(names);
  if (rc != QV_OK) {
    qv_close(*db);
    *db = NULL;
  }
  return rc;
}

static qv_db *open_ok(void) {
  qv_db *db = NULL;
  qv_err e;
  qv_rc rc = open_rc(&db, &e);
  cr_assert_eq(rc, QV_OK, "open %s: %s: %s", g_dir, qv_rc_name(rc), e.msg);
  return db;
}

static qv_collection *coll(qv_db *db, const char *name) {
  qv_collection *c = NULL;
  qv_err e;
  cr_assert_eq(qv_collection_get(db, name, &c, &e), QV_OK, "%s", e.msg);
  return c;
}

static void upsert(qv_collection *c, uint64_t first, uint64_t n, uint64_t ver,
                   model *m) {
  for (uint64_t id = first; id < first + n; id++) {
    float v[DIM];
    char payload[32];
    vec_of(id, ver, v);
    snprintf(payload, sizeof payload, "{\"v\":%llu}", (unsigned long long)ver);
    qv_point p = {.id = qv_id_num(id), .vector = v, .dim = DIM, .payload = payload};
    qv_err e;
    cr_assert_eq(qv_upsert(c, &p, 1, &e), QV_OK, "%s", e.msg);
    if (m) m->want[id] = ver;
  }
}

static void delete_range(qv_collection *c, uint64_t first, uint64_t n, model *m) {
  qv_point_id ids[64];
  cr_assert_leq(n, 64);
  for (uint64_t i = 0; i < n; i++) ids[i] = qv_id_num(first + i);
  qv_err e;
  cr_assert_eq(qv_delete(c, ids, n, NULL, &e), QV_OK, "%s", e.msg);
  for (uint64_t i = 0; m && i < n; i++) m->want[first + i] = 0;
}

static void optimize(qv_collection *c) {
  qv_err e;
  cr_assert_eq(qv_collection_optimize(c, &e), QV_OK, "optimize: %s", e.msg);
}

static void create(qv_db *db, const char *name, uint32_t seg_max) {
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = DIM;
  cfg.distance = QV_EUCLID;
  cfg.hnsw_m = 8;
  cfg.hnsw_ef_construct = 32;
  cfg.segment_max_points = seg_max;
  cfg.full_scan_threshold = 10;
  qv_err e;
  cr_assert_eq(qv_collection_create(db, name, &cfg, &e), QV_OK, "%s", e.msg);
}

/* Fills collection `name`: ids 0..149 v1 sealed; 100..249 v2 and deletes of
 * 0..9, sealed, which leaves 60 of the first segment's 150 rows dead so the
 * optimizer rewrites it (a vacuum); then, only in the log, 100 single-point
 * upserts of 200..299 v3 and one delete of 240..244 (g_tail, one record
 * each). `m` receives the final state. */
static void fill(qv_db *db, const char *name, model *m) {
  create(db, name, 1000);
  qv_collection *c = coll(db, name);
  memset(m, 0, sizeof *m);
  upsert(c, 0, 150, 1, m);
  optimize(c);
  upsert(c, 100, 150, 2, m);
  delete_range(c, 0, 10, m);
  optimize(c);
  g_n_tail = 0;
  for (uint64_t id = 200; id < 300; id++) {
    upsert(c, id, 1, 3, m);
    g_tail[g_n_tail++] = (tail_op){false, id, 3};
  }
  delete_range(c, 240, 5, m);
  g_tail[g_n_tail++] = (tail_op){true, 240, 5};
  qv_collection_info info;
  qv_err e;
  cr_assert_eq(qv_collection_info_get(c, &info, &e), QV_OK);
  cr_assert_eq(info.segments_count, 3, "two sealed segments and the mutable one");
  qv_collection_release(c);
}

/* The state before the log tail: `m` with the tail undone. */
static void model_before_tail(model *m) {
  memset(m, 0, sizeof *m);
  for (uint64_t id = 10; id < 100; id++) m->want[id] = 1;
  for (uint64_t id = 100; id < 250; id++) m->want[id] = 2;
}

static void check_model(qv_db *db, const char *name, const model *m) {
  qv_collection *c = coll(db, name);
  uint64_t n_want = 0, n_seen = 0;
  for (uint64_t id = 0; id < N_IDS; id++) n_want += m->want[id] != 0;
  qv_point_id cursor, *start = NULL;
  bool has_next = true;
  while (has_next) {
    qv_records r;
    qv_err e;
    cr_assert_eq(qv_scroll(c, start, 64, true, true, &r, &cursor, &has_next, &e),
                 QV_OK, "%s", e.msg);
    for (size_t i = 0; i < r.n; i++) {
      uint64_t id = r.items[i].id.num;
      cr_assert(id < N_IDS && m->want[id] != 0, "point %llu should not exist",
                (unsigned long long)id);
      unsigned long long v = 0;
      sscanf(r.items[i].payload, "{\"v\":%llu}", &v);
      cr_assert_eq(v, m->want[id], "point %llu: version %llu, expected %llu",
                   (unsigned long long)id, v, (unsigned long long)m->want[id]);
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
  cr_assert_eq(count, n_want);
  qv_collection_release(c);
}

static void reopen_and_check(const char *name, const model *m) {
  qv_db *db = open_ok();
  check_model(db, name, m);
  qv_close(db);
}

static void setup(model *m) {
  g_dir = tu_tmpdir("corrupt");
  cr_assert_not_null(g_dir);
  qv_db *db = open_ok();
  fill(db, "c", m);
  qv_close(db);
}

/* ---- file surgery ------------------------------------------------------------ */

static unsigned char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "open %s", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)len + 1);
  cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return b;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "create %s", path);
  cr_assert_eq(fwrite(b, 1, n, f), n);
  fclose(f);
}

static void shard_path(char *out, const char *name, const char *rel) {
  snprintf(out, PATH_MAX, "%s/collections/%s/0/%s", g_dir, name, rel);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Numeric names in `dir` (segment ids or log file LSNs), sorted. */
static size_t list_numbers(const char *dir, uint64_t *out, size_t cap) {
  DIR *d = opendir(dir);
  cr_assert_not_null(d, "opendir %s", dir);
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n < cap) {
    char *end;
    unsigned long long v = strtoull(e->d_name, &end, 10);
    if (end != e->d_name && (*end == 0 || !strcmp(end, ".wal"))) out[n++] = v;
  }
  closedir(d);
  qsort(out, n, sizeof *out, cmp_u64);
  return n;
}

/* Path of file `file` in the k-th sealed segment (by id). A `file` of
 * "graph" means the first graph file (graph*.qvh), whatever its space. */
static void segment_file(char *out, const char *name, size_t k, const char *file) {
  char dir[PATH_MAX];
  shard_path(dir, name, "segments");
  uint64_t ids[16];
  size_t n = list_numbers(dir, ids, 16);
  cr_assert_gt(n, k, "only %zu segments", n);
  snprintf(out, PATH_MAX, "%s/%llu/%s", dir, (unsigned long long)ids[k], file);
  if (strcmp(file, "graph") != 0) return;
  char seg[PATH_MAX];
  snprintf(seg, sizeof seg, "%s/%llu", dir, (unsigned long long)ids[k]);
  DIR *d = opendir(seg);
  cr_assert_not_null(d, "opendir %s", seg);
  struct dirent *e;
  bool found = false;
  while (!found && (e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name);
    found = !strncmp(e->d_name, "graph", 5) && len > 4 &&
            !strcmp(e->d_name + len - 4, ".qvh");
    if (found) snprintf(out, PATH_MAX, "%s/%s", seg, e->d_name);
  }
  closedir(d);
  cr_assert(found, "no graph file in %s", seg);
}

/* The newest log file that holds records. */
static void newest_wal(char *out, const char *name) {
  char dir[PATH_MAX];
  shard_path(dir, name, "wal");
  uint64_t lsns[64];
  size_t n = list_numbers(dir, lsns, 64);
  for (size_t i = n; i-- > 0;) {
    snprintf(out, PATH_MAX, "%s/%020llu.wal", dir, (unsigned long long)lsns[i]);
    struct stat st;
    if (stat(out, &st) == 0 && st.st_size > 0) return;
  }
  cr_assert_fail("no log file with records in %s", dir);
}

/* Offsets where records start, plus the file size as the last element. */
static size_t record_starts(const unsigned char *b, size_t n, size_t *out, size_t cap) {
  size_t k = 0, off = 0;
  while (off < n && k < cap) {
    out[k++] = off;
    uint32_t len = (uint32_t)b[off + 4] | (uint32_t)b[off + 5] << 8 |
                   (uint32_t)b[off + 6] << 16 | (uint32_t)b[off + 7] << 24;
    off += WAL_HEADER_BYTES + len;
  }
  cr_assert_eq(off, n, "log file does not end on a record boundary");
  out[k] = n;
  return k;
}

/* Reopens with byte `off` of `path` XORed with `mask`: must fail with
 * QV_ECORRUPT naming `path`. Restores the byte afterwards. */
static void expect_flip_detected(const char *path, size_t off, unsigned char mask) {
  size_t n;
  unsigned char *b = slurp(path, &n);
  cr_assert_lt(off, n);
  b[off] ^= mask;
  spit(path, b, n);
  qv_db *db = NULL;
  qv_err e;
  qv_rc rc = open_rc(&db, &e);
  if (db) qv_close(db);
  b[off] ^= mask;
  spit(path, b, n);
  free(b);
  cr_assert_eq(rc, QV_ECORRUPT, "%s: byte %zu ^ 0x%02x: %s (%s)", path, off, mask,
               qv_rc_name(rc), e.msg);
  cr_assert(strstr(e.msg, path) != NULL, "the message does not name %s: %s", path,
            e.msg);
}

/* ---- sealed segment files ------------------------------------------------------ */

/* Places in segment.qvs found by content, not by layout: padding is zero
 * and sections start at 4096-byte boundaries, so a non-zero byte below 4096
 * is header and one above is section data. */
static size_t nonzero_from(const unsigned char *b, size_t n, size_t off) {
  while (off < n && b[off] == 0) off++;
  cr_assert_lt(off, n, "no data after the offset");
  return off;
}

static size_t nonzero_before(const unsigned char *b, size_t off) {
  while (off > 0 && b[off - 1] == 0) off--;
  cr_assert_gt(off, 0);
  return off - 1;
}

Test(corruption, segment_file_flips_are_detected) {
  model m;
  setup(&m);
  for (size_t k = 0; k < 2; k++) {
    char path[PATH_MAX];
    segment_file(path, "c", k, "segment.qvs");
    size_t n;
    unsigned char *b = slurp(path, &n);
    size_t first = nonzero_from(b, n, 4096), last = nonzero_before(b, n);
    /* magic, version, the header's last byte (its checksum), first vector
     * byte, the middle of the data, its last byte */
    size_t offs[] = {0,     9, nonzero_before(b, 4096), first,
                     nonzero_from(b, n, (first + last) / 2), last};
    free(b);
    for (size_t i = 0; i < sizeof offs / sizeof *offs; i++)
      expect_flip_detected(path, offs[i], 0xff);
    expect_flip_detected(path, offs[4], 0x01); /* one bit */
  }
  reopen_and_check("c", &m);
}

Test(corruption, graph_file_flips_are_detected) {
  model m;
  setup(&m);
  for (size_t k = 0; k < 2; k++) {
    char path[PATH_MAX];
    segment_file(path, "c", k, "graph");
    size_t n;
    free(slurp(path, &n));
    size_t offs[] = {0, 12, 64, n / 2, n - 5, n - 1};
    for (size_t i = 0; i < sizeof offs / sizeof *offs; i++)
      expect_flip_detected(path, offs[i], 0xff);
    expect_flip_detected(path, n / 3, 0x10);
  }
  reopen_and_check("c", &m);
}

/* Any byte of a segment or graph file: damage is either detected or does
 * not matter (alignment padding is not checksummed and not read). */
Test(corruption, segment_and_graph_flips_never_give_wrong_data) {
  model m;
  setup(&m);
  const char *files[] = {"segment.qvs", "graph"};
  size_t n_detected = 0, n_harmless = 0;
  for (size_t k = 0; k < 2; k++)
    for (size_t f = 0; f < 2; f++) {
      char path[PATH_MAX];
      segment_file(path, "c", k, files[f]);
      size_t n;
      unsigned char *b = slurp(path, &n);
      for (size_t off = k * 7 + f; off < n; off += 89) {
        b[off] ^= 0x5a;
        spit(path, b, n);
        qv_db *db = NULL;
        qv_err e;
        qv_rc rc = open_rc(&db, &e);
        b[off] ^= 0x5a;
        if (rc == QV_OK) {
          check_model(db, "c", &m); /* right data, or the test fails here */
          qv_close(db);
          n_harmless++;
        } else {
          cr_assert_eq(rc, QV_ECORRUPT, "%s byte %zu: %s (%s)", path, off,
                       qv_rc_name(rc), e.msg);
          cr_assert(strstr(e.msg, path) != NULL, "%s byte %zu: %s", path, off, e.msg);
          n_detected++;
        }
        spit(path, b, n);
      }
      free(b);
    }
  cr_log_info("%zu flips detected, %zu harmless (padding)", n_detected, n_harmless);
  cr_assert_gt(n_detected, 0);
  reopen_and_check("c", &m);
}

Test(corruption, missing_segment_directory_is_detected) {
  model m;
  setup(&m);
  char path[PATH_MAX], dir[PATH_MAX], aside[PATH_MAX + 8];
  segment_file(path, "c", 1, "segment.qvs");
  snprintf(dir, sizeof dir, "%s", path);
  *strrchr(dir, '/') = 0;
  snprintf(aside, sizeof aside, "%s.away", g_dir);
  cr_assert_eq(rename(dir, aside), 0);
  qv_db *db = NULL;
  qv_err e;
  qv_rc rc = open_rc(&db, &e);
  cr_assert_eq(rename(aside, dir), 0);
  cr_assert_eq(rc, QV_ECORRUPT, "%s: %s", qv_rc_name(rc), e.msg);
  cr_assert(strstr(e.msg, dir) != NULL, "message does not name %s: %s", dir, e.msg);
  reopen_and_check("c", &m);
}

Test(corruption, missing_graph_file_is_detected) {
  model m;
  setup(&m);
  char path[PATH_MAX], aside[PATH_MAX + 8];
  segment_file(path, "c", 0, "graph");
  snprintf(aside, sizeof aside, "%s.away", g_dir);
  cr_assert_eq(rename(path, aside), 0);
  qv_db *db = NULL;
  qv_err e;
  qv_rc rc = open_rc(&db, &e);
  cr_assert_eq(rename(aside, path), 0);
  cr_assert_eq(rc, QV_ECORRUPT, "%s: %s", qv_rc_name(rc), e.msg);
  cr_assert(strstr(e.msg, path) != NULL, "%s", e.msg);
  reopen_and_check("c", &m);
}

/* ---- MANIFEST and config.json ------------------------------------------------- */

Test(corruption, manifest_flips_are_detected) {
  model m;
  setup(&m);
  char path[PATH_MAX];
  shard_path(path, "c", "MANIFEST");
  size_t n;
  free(slurp(path, &n));
  for (size_t off = 0; off < n; off++) expect_flip_detected(path, off, 0xff);
  expect_flip_detected(path, 13, 0x01); /* a checkpoint bit */
  reopen_and_check("c", &m);
}

Test(corruption, missing_manifest_is_detected) {
  model m;
  setup(&m);
  char path[PATH_MAX], aside[PATH_MAX + 8];
  shard_path(path, "c", "MANIFEST");
  snprintf(aside, sizeof aside, "%s.away", g_dir);
  cr_assert_eq(rename(path, aside), 0);
  qv_db *db = NULL;
  qv_err e;
  qv_rc rc = open_rc(&db, &e);
  cr_assert_eq(rename(aside, path), 0);
  cr_assert_eq(rc, QV_ECORRUPT, "%s: %s", qv_rc_name(rc), e.msg);
  cr_assert(strstr(e.msg, "MANIFEST") != NULL, "%s", e.msg);
  reopen_and_check("c", &m);
}

Test(corruption, config_json_flips_are_detected) {
  model m;
  setup(&m);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/collections/c/config.json", g_dir);
  size_t n;
  free(slurp(path, &n));
  size_t offs[] = {0, 1, n / 2, n - 2, n - 1};
  for (size_t i = 0; i < sizeof offs / sizeof *offs; i++)
    expect_flip_detected(path, offs[i], 0xff);
  reopen_and_check("c", &m);
}

/* A single bit flipped in a digit keeps config.json valid JSON; only its
 * checksum can tell that the setting changed. */
Test(corruption, config_json_digit_bit_flip_is_detected) {
  model m;
  setup(&m);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/collections/c/config.json", g_dir);
  size_t n;
  unsigned char *b = slurp(path, &n);
  char *at = strstr((char *)b, "\"segment_max_points\": 1000");
  cr_assert_not_null(at, "config.json: %s", b);
  size_t off = (size_t)(at - (char *)b) + strlen("\"segment_max_points\": ");
  free(b);
  expect_flip_detected(path, off, 0x02); /* 1000 -> 3000 */
  reopen_and_check("c", &m);
}

/* ---- the log ------------------------------------------------------------------- */

/* Cutting the newest log file anywhere -- at a record boundary or inside a
 * record, as a crash mid-append would -- leaves exactly the records before
 * the cut. */
Test(corruption, wal_cut_anywhere_keeps_the_records_before_it) {
  model m;
  setup(&m);
  char path[PATH_MAX];
  newest_wal(path, "c");
  size_t n;
  unsigned char *orig = slurp(path, &n);
  size_t starts[MAX_TAIL + 2];
  size_t n_rec = record_starts(orig, n, starts, MAX_TAIL + 1);
  cr_assert_eq(n_rec, g_n_tail, "%zu records in %s, expected %zu", n_rec, path,
               g_n_tail);
  uint64_t rng = 7;
  for (size_t k = 0; k <= n_rec; k++) {
    /* k whole records survive: cut at their end, or inside record k */
    size_t cuts[4] = {starts[k], 0, 0, 0}, n_cuts = 1;
    if (k < n_rec) {
      size_t len = starts[k + 1] - starts[k];
      cuts[n_cuts++] = starts[k] + 1 + tu_rand(&rng) % (WAL_HEADER_BYTES - 1);
      cuts[n_cuts++] = starts[k] + WAL_HEADER_BYTES + tu_rand(&rng) % (len - WAL_HEADER_BYTES);
      cuts[n_cuts++] = starts[k + 1] - 1;
    }
    model want;
    model_before_tail(&want);
    for (size_t i = 0; i < k; i++) apply_tail(&want, &g_tail[i]);
    for (size_t c = 0; c < n_cuts; c++) {
      spit(path, orig, cuts[c]);
      qv_db *db = NULL;
      qv_err e;
      qv_rc rc = open_rc(&db, &e);
      cr_assert_eq(rc, QV_OK, "cut at %zu (record %zu): %s", cuts[c], k, e.msg);
      check_model(db, "c", &want);
      qv_close(db);
    }
  }
  spit(path, orig, n);
  free(orig);
  reopen_and_check("c", &m);
}

/* Damage followed by valid records cannot be a torn tail. */
Test(corruption, wal_flip_before_valid_records_is_detected) {
  model m;
  setup(&m);
  char path[PATH_MAX];
  newest_wal(path, "c");
  size_t n;
  unsigned char *b = slurp(path, &n);
  size_t starts[MAX_TAIL + 2];
  size_t n_rec = record_starts(b, n, starts, MAX_TAIL + 1);
  free(b);
  size_t offs[] = {starts[0], starts[0] + 5, starts[0] + 17, starts[0] + 30,
                   starts[n_rec / 2] + 25, starts[n_rec - 2] + 3};
  for (size_t i = 0; i < sizeof offs / sizeof *offs; i++) {
    expect_flip_detected(path, offs[i], 0xff);
    expect_flip_detected(path, offs[i], 0x04);
  }
  reopen_and_check("c", &m);
}

/* Damage in the last record looks exactly like a torn tail: the record is
 * cut and the rest opens. (An acknowledged write lost to bit rot in the
 * last record is indistinguishable from a crash mid-append.) */
Test(corruption, wal_flip_in_last_record_is_cut_as_a_torn_tail) {
  model m;
  setup(&m);
  char path[PATH_MAX];
  newest_wal(path, "c");
  size_t n;
  unsigned char *b = slurp(path, &n);
  size_t starts[MAX_TAIL + 2];
  size_t n_rec = record_starts(b, n, starts, MAX_TAIL + 1);
  b[starts[n_rec - 1] + 21] ^= 0xff;
  spit(path, b, n);
  free(b);
  model want;
  model_before_tail(&want);
  for (size_t i = 0; i + 1 < n_rec; i++) apply_tail(&want, &g_tail[i]);
  reopen_and_check("c", &want);
  struct stat st;
  cr_assert_eq(stat(path, &st), 0);
  cr_assert_eq((size_t)st.st_size, starts[n_rec - 1], "the torn record was not cut");
}

/* Builds a log of several files (each freeze rotates it; with the optimizer
 * off, nothing is sealed and nothing dropped): 40 points in 16-point
 * segments. Returns the file LSNs. */
static size_t multi_file_log(model *m, uint64_t *lsns, size_t cap) {
  g_dir = tu_tmpdir("corrupt");
  qv_db *db = open_ok();
  create(db, "w", 16);
  qv_collection *c = coll(db, "w");
  memset(m, 0, sizeof *m);
  upsert(c, 0, 40, 1, m);
  qv_collection_release(c);
  qv_close(db);
  char dir[PATH_MAX];
  shard_path(dir, "w", "wal");
  size_t n = list_numbers(dir, lsns, cap);
  cr_assert_geq(n, 3, "expected rotated log files, got %zu", n);
  return n;
}

Test(corruption, wal_flip_in_an_older_file_is_detected) {
  model m;
  uint64_t lsns[16];
  multi_file_log(&m, lsns, 16);
  char path[PATH_MAX], rel[64];
  snprintf(rel, sizeof rel, "wal/%020llu.wal", (unsigned long long)lsns[0]);
  shard_path(path, "w", rel);
  size_t n;
  free(slurp(path, &n));
  expect_flip_detected(path, n - 1, 0xff); /* its last record, not a tail */
  expect_flip_detected(path, 0, 0xff);
  reopen_and_check("w", &m);
}

/* The oldest log file still needed (its records are above the checkpoint)
 * goes missing: the log now starts after checkpoint + 1, a gap that open
 * must report rather than silently losing those writes. */
Test(corruption, wal_missing_oldest_needed_file_is_detected) {
  model m;
  uint64_t lsns[16];
  multi_file_log(&m, lsns, 16);
  char path[PATH_MAX], rel[64], aside[PATH_MAX + 8];
  snprintf(rel, sizeof rel, "wal/%020llu.wal", (unsigned long long)lsns[0]);
  shard_path(path, "w", rel);
  snprintf(aside, sizeof aside, "%s.away", g_dir);
  cr_assert_eq(rename(path, aside), 0);
  qv_db *db = NULL;
  qv_err e;
  qv_rc rc = open_rc(&db, &e);
  uint64_t count = 0;
  if (rc == QV_OK) {
    qv_collection *c = coll(db, "w");
    qv_count(c, &count, &e);
    qv_collection_release(c);
    qv_close(db);
  }
  cr_assert_eq(rename(aside, path), 0);
  cr_assert_eq(rc, QV_ECORRUPT,
               "log file %s removed: open gave %s with %llu of 40 points", path,
               qv_rc_name(rc), (unsigned long long)count);
  reopen_and_check("w", &m);
}

/* A log file in the middle missing is an LSN gap. */
Test(corruption, wal_missing_middle_file_is_detected) {
  model m;
  uint64_t lsns[16];
  multi_file_log(&m, lsns, 16);
  char path[PATH_MAX], rel[64], aside[PATH_MAX + 8];
  snprintf(rel, sizeof rel, "wal/%020llu.wal", (unsigned long long)lsns[1]);
  shard_path(path, "w", rel);
  snprintf(aside, sizeof aside, "%s.away", g_dir);
  cr_assert_eq(rename(path, aside), 0);
  qv_db *db = NULL;
  qv_err e;
  qv_rc rc = open_rc(&db, &e);
  if (db) qv_close(db);
  cr_assert_eq(rename(aside, path), 0);
  cr_assert_eq(rc, QV_ECORRUPT, "%s: %s", qv_rc_name(rc), e.msg);
  reopen_and_check("w", &m);
}

/* ---- leftovers of interrupted work ---------------------------------------------- */

static void copy_file(const char *from, const char *to) {
  size_t n;
  unsigned char *b = slurp(from, &n);
  spit(to, b, n);
  free(b);
}

Test(corruption, leftover_segment_directories_are_removed) {
  model m;
  setup(&m);
  char seg[PATH_MAX], dir[PATH_MAX], tmp[PATH_MAX + 32], orphan[PATH_MAX + 32];
  char from[PATH_MAX + 64], to[PATH_MAX + 64];
  segment_file(seg, "c", 0, "");
  shard_path(dir, "c", "segments");
  /* an interrupted build and a segment the MANIFEST never named (a build
   * whose MANIFEST write did not happen): both full copies of a real one */
  snprintf(tmp, sizeof tmp, "%s/9998.tmp", dir);
  snprintf(orphan, sizeof orphan, "%s/9999", dir);
  for (int d = 0; d < 2; d++) {
    const char *target = d ? orphan : tmp;
    cr_assert_eq(mkdir(target, 0755), 0);
    DIR *dd = opendir(seg);
    cr_assert_not_null(dd);
    struct dirent *e;
    while ((e = readdir(dd)) != NULL) {
      if (e->d_name[0] == '.') continue;
      snprintf(from, sizeof from, "%s%s", seg, e->d_name);
      snprintf(to, sizeof to, "%s/%s", target, e->d_name);
      copy_file(from, to);
    }
    closedir(dd);
  }
  reopen_and_check("c", &m);
  struct stat st;
  cr_assert_neq(stat(tmp, &st), 0, "%s survived the open", tmp);
  cr_assert_neq(stat(orphan, &st), 0, "%s survived the open", orphan);
}

Test(corruption, leftover_collection_directories_are_removed) {
  model m;
  setup(&m);
  const char *names[] = {".tmp-x", ".trash-x-1"};
  char path[PATH_MAX], file[PATH_MAX + 32];
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/collections/%s", g_dir, names[i]);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(file, sizeof file, "%s/config.json", path);
    spit(file, (const unsigned char *)"{", 1);
  }
  qv_db *db = open_ok();
  check_model(db, "c", &m);
  char **list;
  size_t n;
  qv_err e;
  cr_assert_eq(qv_collection_list(db, &list, &n, &e), QV_OK);
  cr_assert_eq(n, 1, "leftovers listed as collections");
  free(list[0]);
  free(list);
  qv_close(db);
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/collections/%s", g_dir, names[i]);
    struct stat st;
    cr_assert_neq(stat(path, &st), 0, "%s survived the open", path);
  }
}

/* ---- several collections, several handles ---------------------------------------- */

/* Today one damaged collection fails the whole open (QV_ECORRUPT naming its
 * file); the healthy one is reachable again once the damage is repaired.
 * docs/durability.md discusses opening the rest instead. */
Test(corruption, one_damaged_collection_leaves_the_others_usable) {
  model m, m2;
  setup(&m);
  qv_db *db = open_ok();
  fill(db, "d", &m2);
  qv_close(db);
  char path[PATH_MAX];
  shard_path(path, "d", "MANIFEST");
  size_t n;
  unsigned char *b = slurp(path, &n);
  b[30] ^= 0xff;
  spit(path, b, n);
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_err e;
  cr_assert_eq(qv_open(g_dir, &o, &db, &e), QV_OK, "the database opens: %s", e.msg);
  check_model(db, "c", &m); /* the healthy collection is whole */
  qv_collection *d = NULL;
  cr_expect_eq(qv_collection_get(db, "d", &d, &e), QV_ECORRUPT);
  cr_expect(strstr(e.msg, "MANIFEST") != NULL, "names the file: %s", e.msg);
  char **names;
  size_t k;
  cr_assert_eq(qv_collection_list(db, &names, &k, &e), QV_OK);
  cr_expect_eq(k, 2, "the damaged collection is still listed");
  for (size_t i = 0; i < k; i++) free(names[i]);
  free(names);
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = DIM;
  cr_expect_eq(qv_collection_create(db, "d", &cfg, &e), QV_EEXIST, "its name stays taken");
  qv_close(db);
  b[30] ^= 0xff; /* repaired, it opens again with all its data */
  spit(path, b, n);
  free(b);
  db = open_ok();
  check_model(db, "d", &m2);
  qv_close(db);
  /* a damaged collection can be dropped */
  b = slurp(path, &n);
  b[30] ^= 0xff;
  spit(path, b, n);
  free(b);
  cr_assert_eq(qv_open(g_dir, &o, &db, &e), QV_OK);
  cr_expect_eq(qv_collection_drop(db, "d", &e), QV_OK, "%s", e.msg);
  cr_expect_eq(qv_collection_get(db, "d", &d, &e), QV_ENOTFOUND);
  qv_close(db);
  reopen_and_check("c", &m);
}

Test(corruption, second_open_of_an_open_directory_is_busy) {
  model m;
  setup(&m);
  qv_db *db = open_ok();
  qv_db *db2 = NULL;
  qv_err e;
  cr_assert_eq(open_rc(&db2, &e), QV_EBUSY, "same process: %s", e.msg);
  cr_assert_null(db2);
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) { /* another process */
    qv_db *db3 = NULL;
    qv_err e3;
    _exit(open_rc(&db3, &e3) == QV_EBUSY ? 0 : 1);
  }
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "another process could open it (status 0x%x)", status);
  check_model(db, "c", &m); /* the failed opens did not disturb the first */
  qv_close(db);
  reopen_and_check("c", &m);
}
