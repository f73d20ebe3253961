/* test_wal.c: the write-ahead log's normal life: append, sync, reopen,
 * replay, rotation, dropping old files, LSN numbering and group commit.
 *
 * Crash recovery and corruption are in test_wal_recovery.c, injected I/O
 * faults in test_wal_faults.c. Every test works in its own temporary
 * directory and compares replayed bytes with what it appended. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "storage/wal.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------- */

typedef struct rec {
  uint64_t lsn;
  size_t len;
  unsigned char *p;
} rec;

typedef struct recs {
  rec *v;
  size_t n, cap;
} recs;

static void recs_push(recs *r, uint64_t lsn, const void *p, size_t len) {
  if (r->n == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 64;
    r->v = realloc(r->v, r->cap * sizeof *r->v);
    cr_assert_not_null(r->v);
  }
  rec *x = &r->v[r->n++];
  x->lsn = lsn;
  x->len = len;
  x->p = malloc(len);
  cr_assert_not_null(x->p);
  memcpy(x->p, p, len);
}

static void recs_free(recs *r) {
  for (size_t i = 0; i < r->n; i++) free(r->v[i].p);
  free(r->v);
  memset(r, 0, sizeof *r);
}

static qv_rc collect(void *ctx, uint64_t lsn, const void *p, size_t len,
                     qv_err *err) {
  recs_push(ctx, lsn, p, len);
  return QV_OK;
}

static void fill(uint64_t *seed, unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)tu_rand(seed);
}

static wal *open_ok(const char *dir, uint64_t min_next_lsn) {
  qv_err e = {0};
  wal *w = NULL;
  qv_rc rc = wal_open(dir, min_next_lsn, &w, &e);
  cr_assert_eq(rc, QV_OK, "wal_open %s: %s (%s)", dir, qv_rc_name(rc), e.msg);
  return w;
}

static uint64_t append_ok(wal *w, const void *p, size_t len) {
  qv_err e = {0};
  uint64_t lsn = 0;
  qv_rc rc = wal_append(w, p, len, &lsn, &e);
  cr_assert_eq(rc, QV_OK, "wal_append: %s (%s)", qv_rc_name(rc), e.msg);
  return lsn;
}

/* Appends n records of random lengths 1..max_len, remembering them. */
static void append_random(wal *w, recs *exp, size_t n, size_t max_len,
                          uint64_t *seed) {
  unsigned char *buf = malloc(max_len);
  for (size_t i = 0; i < n; i++) {
    size_t len = 1 + tu_rand(seed) % max_len;
    fill(seed, buf, len);
    uint64_t lsn = append_ok(w, buf, len);
    recs_push(exp, lsn, buf, len);
  }
  free(buf);
}

static void sync_ok(wal *w, uint64_t lsn) {
  qv_err e = {0};
  qv_rc rc = wal_sync(w, lsn, &e);
  cr_assert_eq(rc, QV_OK, "wal_sync %llu: %s (%s)", (unsigned long long)lsn,
               qv_rc_name(rc), e.msg);
}

static void replay_ok(wal *w, uint64_t from, recs *got) {
  qv_err e = {0};
  qv_rc rc = wal_replay(w, from, collect, got, &e);
  cr_assert_eq(rc, QV_OK, "wal_replay: %s (%s)", qv_rc_name(rc), e.msg);
}

/* got must equal exp[first..exp->n). */
static void assert_same(const recs *got, const recs *exp, size_t first) {
  cr_assert_eq(got->n, exp->n - first, "replayed %zu records, expected %zu",
               got->n, exp->n - first);
  for (size_t i = 0; i < got->n; i++) {
    const rec *g = &got->v[i], *x = &exp->v[first + i];
    cr_assert_eq(g->lsn, x->lsn, "record %zu: LSN %llu, expected %llu", i,
                 (unsigned long long)g->lsn, (unsigned long long)x->lsn);
    cr_assert_eq(g->len, x->len, "LSN %llu: %zu bytes, expected %zu",
                 (unsigned long long)g->lsn, g->len, x->len);
    cr_assert(memcmp(g->p, x->p, g->len) == 0, "LSN %llu: bytes differ",
              (unsigned long long)g->lsn);
  }
}

/* Counts *.wal files in dir and sums their sizes. */
static size_t count_wal_files(const char *dir, uint64_t *bytes) {
  DIR *d = opendir(dir);
  cr_assert_not_null(d);
  size_t n = 0;
  uint64_t sum = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t l = strlen(e->d_name);
    if (l < 4 || strcmp(e->d_name + l - 4, ".wal") != 0) continue;
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    n++;
    sum += (uint64_t)st.st_size;
  }
  closedir(d);
  if (bytes != NULL) *bytes = sum;
  return n;
}

static int wal_file_exists(const char *dir, uint64_t lsn) {
  char path[8192];
  snprintf(path, sizeof path, "%s/%020llu.wal", dir, (unsigned long long)lsn);
  return access(path, F_OK) == 0;
}

/* ---- round trips --------------------------------------------------------- */

Test(wal, records_of_random_lengths_survive_reopen) {
  uint64_t seed = 42;
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  recs exp = {0};
  /* 1 byte and 1 MiB at the edges of the usual sizes. */
  size_t lens[] = {1, 1u << 20, 1, 7, 1u << 20, 1};
  unsigned char *big = malloc(1u << 20);
  for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
    fill(&seed, big, lens[i]);
    recs_push(&exp, append_ok(w, big, lens[i]), big, lens[i]);
    append_random(w, &exp, 20, 5000, &seed);
  }
  free(big);
  sync_ok(w, wal_next_lsn(w) - 1);
  cr_assert_eq(exp.v[0].lsn, 1);
  wal_close(w);

  w = open_ok(dir, 1);
  cr_assert_eq(wal_next_lsn(w), exp.n + 1);
  recs got = {0};
  replay_ok(w, 1, &got);
  assert_same(&got, &exp, 0);
  recs_free(&got);
  recs_free(&exp);
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal, replay_from_a_middle_lsn_starts_there) {
  uint64_t seed = 7;
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  recs exp = {0};
  append_random(w, &exp, 50, 300, &seed);
  recs got = {0};
  replay_ok(w, 23, &got); /* before close: re-reads the current file */
  assert_same(&got, &exp, 22);
  recs_free(&got);
  wal_close(w);

  w = open_ok(dir, 1);
  replay_ok(w, 23, &got);
  assert_same(&got, &exp, 22);
  recs_free(&got);
  replay_ok(w, 51, &got);
  cr_assert_eq(got.n, 0, "nothing from past the end, got %zu", got.n);
  recs_free(&exp);
  wal_close(w);
  tu_rmdir(dir);
}

static qv_rc stop_at_three(void *ctx, uint64_t lsn, const void *p, size_t len,
                           qv_err *err) {
  (*(int *)ctx)++;
  if (lsn == 3) return qv_err_set(err, QV_EINVAL, "stop");
  return QV_OK;
}

Test(wal, replay_returns_the_callbacks_first_error) {
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  for (int i = 0; i < 6; i++) append_ok(w, "abc", 3);
  int calls = 0;
  qv_err e = {0};
  cr_assert_eq(wal_replay(w, 1, stop_at_three, &calls, &e), QV_EINVAL);
  cr_assert_eq(calls, 3);
  cr_assert_str_eq(e.msg, "stop");
  wal_close(w);
  tu_rmdir(dir);
}

/* ---- rotation and dropping ----------------------------------------------- */

Test(wal, rotation_and_drop_before_keep_later_records) {
  uint64_t seed = 3;
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  recs exp = {0};
  qv_err e = {0};
  for (int f = 0; f < 3; f++) {
    append_random(w, &exp, 10, 200, &seed); /* files at 1, 11, 21 */
    if (f < 2) cr_assert_eq(wal_rotate(w, &e), QV_OK, "%s", e.msg);
  }
  uint64_t disk = 0;
  cr_assert_eq(count_wal_files(dir, &disk), 3);
  cr_assert_eq(wal_bytes(w), disk);
  cr_assert(wal_file_exists(dir, 1) && wal_file_exists(dir, 11) &&
            wal_file_exists(dir, 21));
  /* Rotation fsyncs the old file: everything before it is durable. */
  cr_assert_eq(wal_durable_lsn(w), 20);

  cr_assert_eq(wal_drop_before(w, 15, &e), QV_OK, "%s", e.msg);
  cr_assert(!wal_file_exists(dir, 1), "file 1 holds only LSNs < 15");
  cr_assert(wal_file_exists(dir, 11), "file 11 holds LSNs 15..20");
  cr_assert_eq(count_wal_files(dir, &disk), 2);
  cr_assert_eq(wal_bytes(w), disk);

  recs got = {0};
  replay_ok(w, 1, &got);
  assert_same(&got, &exp, 10);
  recs_free(&got);

  /* The newest file stays even when all its records are old. */
  cr_assert_eq(wal_drop_before(w, 1000, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(count_wal_files(dir, NULL), 1);
  cr_assert(wal_file_exists(dir, 21));
  sync_ok(w, 30);
  wal_close(w);

  w = open_ok(dir, 1);
  cr_assert_eq(wal_next_lsn(w), 31);
  replay_ok(w, 1, &got);
  assert_same(&got, &exp, 20);
  recs_free(&got);
  recs_free(&exp);
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal, rotate_with_an_empty_newest_file_does_nothing) {
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  qv_err e = {0};
  cr_assert_eq(wal_rotate(w, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(count_wal_files(dir, NULL), 1);
  append_ok(w, "x", 1);
  cr_assert_eq(wal_rotate(w, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(wal_rotate(w, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(count_wal_files(dir, NULL), 2);
  cr_assert(wal_file_exists(dir, 2));
  cr_assert_eq(append_ok(w, "y", 1), 2);
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal, replay_spans_rotated_files) {
  uint64_t seed = 11;
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  recs exp = {0};
  qv_err e = {0};
  for (int f = 0; f < 4; f++) {
    append_random(w, &exp, 5, 100, &seed);
    cr_assert_eq(wal_rotate(w, &e), QV_OK, "%s", e.msg);
  }
  wal_close(w);
  w = open_ok(dir, 1);
  recs got = {0};
  replay_ok(w, 8, &got); /* the middle of the second file */
  assert_same(&got, &exp, 7);
  recs_free(&got);
  recs_free(&exp);
  wal_close(w);
  tu_rmdir(dir);
}

/* ---- LSN numbering ------------------------------------------------------- */

Test(wal, next_lsn_continues_after_reopen) {
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  cr_assert_eq(wal_next_lsn(w), 1);
  cr_assert_eq(wal_durable_lsn(w), 0);
  for (int i = 0; i < 7; i++) append_ok(w, "abcd", 4);
  wal_close(w);
  w = open_ok(dir, 1);
  cr_assert_eq(wal_next_lsn(w), 8);
  cr_assert_eq(wal_durable_lsn(w), 7, "open fsyncs what it found");
  cr_assert_eq(append_ok(w, "e", 1), 8);
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal, new_log_starts_at_min_next_lsn) {
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 100);
  cr_assert_eq(wal_next_lsn(w), 100);
  cr_assert_eq(wal_durable_lsn(w), 99);
  cr_assert(wal_file_exists(dir, 100));
  cr_assert_eq(append_ok(w, "a", 1), 100);
  wal_close(w);
  w = open_ok(dir, 1);
  cr_assert_eq(wal_next_lsn(w), 101);
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal, min_next_lsn_below_the_log_end_changes_nothing) {
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  for (int i = 0; i < 10; i++) append_ok(w, "a", 1);
  wal_close(w);
  w = open_ok(dir, 5);
  cr_assert_eq(wal_next_lsn(w), 11);
  recs got = {0};
  replay_ok(w, 1, &got);
  cr_assert_eq(got.n, 10);
  recs_free(&got);
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal, min_next_lsn_past_the_log_end_starts_a_fresh_log) {
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  qv_err e = {0};
  for (int i = 0; i < 10; i++) append_ok(w, "a", 1);
  cr_assert_eq(wal_rotate(w, &e), QV_OK, "%s", e.msg);
  append_ok(w, "b", 1);
  wal_close(w);

  /* The checkpoint claims LSN 49: handing out 12.. again would reuse LSNs. */
  w = open_ok(dir, 50);
  cr_assert_eq(wal_next_lsn(w), 50);
  cr_assert(!wal_file_exists(dir, 1) && !wal_file_exists(dir, 11));
  cr_assert_eq(count_wal_files(dir, NULL), 1);
  recs got = {0};
  replay_ok(w, 1, &got);
  cr_assert_eq(got.n, 0);
  cr_assert_eq(append_ok(w, "c", 1), 50);
  wal_close(w);

  w = open_ok(dir, 1);
  cr_assert_eq(wal_next_lsn(w), 51);
  replay_ok(w, 1, &got);
  cr_assert_eq(got.n, 1);
  cr_assert_eq(got.v[0].lsn, 50);
  recs_free(&got);
  wal_close(w);
  tu_rmdir(dir);
}

/* ---- the directory and the arguments ------------------------------------- */

static void touch(const char *dir, const char *name, const char *text) {
  char path[8192];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(text, f);
  fclose(f);
}

Test(wal, files_not_named_like_log_files_are_ignored) {
  char *dir = tu_tmpdir("wal");
  touch(dir, "notes.txt", "hello");
  touch(dir, "00000000000000000001.wal.tmp", "garbage garbage garbage");
  touch(dir, "1.wal", "garbage");
  touch(dir, "0000000000000000000x.wal", "garbage");
  touch(dir, "000000000000000000001.wal", "garbage"); /* 21 digits */
  char sub[4096];
  snprintf(sub, sizeof sub, "%s/00000000000000000009.walx", dir);
  cr_assert_eq(mkdir(sub, 0755), 0);

  wal *w = open_ok(dir, 1);
  append_ok(w, "abc", 3);
  wal_close(w);
  w = open_ok(dir, 1);
  cr_assert_eq(wal_next_lsn(w), 2);
  wal_close(w);
  char path[8192];
  snprintf(path, sizeof path, "%s/notes.txt", dir);
  cr_assert_eq(access(path, F_OK), 0, "a stranger's file is left alone");
  tu_rmdir(dir);
}

Test(wal, missing_directory_is_created) {
  char *dir = tu_tmpdir("wal");
  char sub[4096];
  snprintf(sub, sizeof sub, "%s/a/b/wal", dir);
  wal *w = open_ok(sub, 1);
  cr_assert(wal_file_exists(sub, 1));
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal, bad_arguments_are_rejected) {
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  qv_err e = {0};
  uint64_t lsn = 0;
  cr_assert_eq(wal_append(w, "x", 0, &lsn, &e), QV_EINVAL);
  cr_assert_eq(wal_append(w, NULL, 3, &lsn, &e), QV_EINVAL);
  cr_assert_eq(wal_sync(w, 1, &e), QV_EINVAL, "LSN 1 was never appended");
  cr_assert_eq(wal_next_lsn(w), 1, "a rejected append takes no LSN");
  append_ok(w, "x", 1);
  cr_assert_eq(wal_sync(w, 2, &e), QV_EINVAL);
  cr_assert_eq(wal_sync(w, 0, &e), QV_OK, "LSN 0 is trivially durable");
  wal_close(NULL);
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal, sync_makes_everything_appended_durable) {
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  for (int i = 0; i < 5; i++) append_ok(w, "abc", 3);
  cr_assert_eq(wal_durable_lsn(w), 0);
  sync_ok(w, 3);
  cr_assert_eq(wal_durable_lsn(w), 5, "the leader syncs all it can see");
  uint64_t n = wal_fsync_count(w);
  sync_ok(w, 4);
  cr_assert_eq(wal_fsync_count(w), n, "already durable: no fsync");
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal, wal_bytes_matches_the_files_on_disk) {
  uint64_t seed = 5;
  char *dir = tu_tmpdir("wal");
  wal *w = open_ok(dir, 1);
  recs exp = {0};
  qv_err e = {0};
  append_random(w, &exp, 30, 1000, &seed);
  cr_assert_eq(wal_rotate(w, &e), QV_OK, "%s", e.msg);
  append_random(w, &exp, 30, 1000, &seed);
  uint64_t disk = 0;
  count_wal_files(dir, &disk);
  cr_assert_eq(wal_bytes(w), disk);
  size_t payload = 0;
  for (size_t i = 0; i < exp.n; i++) payload += exp.v[i].len;
  cr_assert_eq(disk, payload + exp.n * WAL_HEADER_BYTES);
  wal_close(w);
  w = open_ok(dir, 1);
  cr_assert_eq(wal_bytes(w), disk);
  wal_close(w);
  recs_free(&exp);
  tu_rmdir(dir);
}

/* ---- group commit -------------------------------------------------------- */

enum { GC_THREADS = 8, GC_PER_THREAD = 200 };

typedef struct gc_ctx {
  wal *w;
  pthread_mutex_t append_mu; /* the caller serialises appends */
} gc_ctx;

typedef struct gc_arg {
  gc_ctx *g;
  int id;
  int n_errors;
} gc_arg;

static void *gc_writer(void *p) {
  gc_arg *a = p;
  unsigned char buf[100];
  for (int i = 0; i < GC_PER_THREAD; i++) {
    memset(buf, 0, sizeof buf);
    buf[0] = (unsigned char)a->id;
    memcpy(buf + 1, &i, sizeof i);
    uint64_t lsn = 0;
    pthread_mutex_lock(&a->g->append_mu);
    qv_rc rc = wal_append(a->g->w, buf, sizeof buf, &lsn, NULL);
    pthread_mutex_unlock(&a->g->append_mu);
    if (rc == QV_OK) rc = wal_sync(a->g->w, lsn, NULL);
    if (rc != QV_OK || wal_durable_lsn(a->g->w) < lsn) a->n_errors++;
  }
  return NULL;
}

Test(wal, concurrent_syncs_share_fsyncs) {
  char *dir = tu_tmpdir("wal");
  gc_ctx g = {.w = open_ok(dir, 1)};
  pthread_mutex_init(&g.append_mu, NULL);
  uint64_t fsyncs0 = wal_fsync_count(g.w);
  pthread_t th[GC_THREADS];
  gc_arg args[GC_THREADS];
  for (int t = 0; t < GC_THREADS; t++) {
    args[t] = (gc_arg){.g = &g, .id = t};
    cr_assert_eq(pthread_create(&th[t], NULL, gc_writer, &args[t]), 0);
  }
  for (int t = 0; t < GC_THREADS; t++) pthread_join(th[t], NULL);
  for (int t = 0; t < GC_THREADS; t++)
    cr_assert_eq(args[t].n_errors, 0, "thread %d: %d failed syncs", t,
                 args[t].n_errors);

  const uint64_t n_syncs = GC_THREADS * GC_PER_THREAD;
  uint64_t fsyncs = wal_fsync_count(g.w) - fsyncs0;
  fprintf(stderr, "group commit: %llu syncs, %llu fsyncs\n",
          (unsigned long long)n_syncs, (unsigned long long)fsyncs);
  cr_assert_lt(fsyncs, n_syncs, "%llu fsyncs for %llu syncs: none shared",
               (unsigned long long)fsyncs, (unsigned long long)n_syncs);
  cr_assert_eq(wal_durable_lsn(g.w), n_syncs);
  cr_assert_eq(wal_next_lsn(g.w), n_syncs + 1);
  wal_close(g.w);

  /* Each thread's records come back in its own order. */
  g.w = open_ok(dir, 1);
  recs got = {0};
  replay_ok(g.w, 1, &got);
  cr_assert_eq(got.n, n_syncs);
  int seen[GC_THREADS] = {0};
  for (size_t i = 0; i < got.n; i++) {
    int t = got.v[i].p[0], k;
    memcpy(&k, got.v[i].p + 1, sizeof k);
    cr_assert(t < GC_THREADS && k == seen[t], "thread %d record %d, want %d", t,
              k, t < GC_THREADS ? seen[t] : -1);
    seen[t]++;
  }
  recs_free(&got);
  wal_close(g.w);
  pthread_mutex_destroy(&g.append_mu);
  tu_rmdir(dir);
}

/* Lines up four syncs behind a leader (through the test hook, no sleeps) and
 * checks that the leader's one fsync answers all five. */
typedef struct hook_ctx {
  wal *w;
  pthread_t th[4];
  qv_rc rcs[4];
  uint64_t lsns[4];
  int n_calls;
} hook_ctx;

typedef struct waiter_arg {
  hook_ctx *h;
  int i;
} waiter_arg;

static waiter_arg g_waiters[4];

static void *waiter(void *p) {
  waiter_arg *a = p;
  a->h->rcs[a->i] = wal_sync(a->h->w, a->h->lsns[a->i], NULL);
  return NULL;
}

static void line_up_waiters(void *ctx) {
  hook_ctx *h = ctx;
  if (h->n_calls++ > 0) return;
  for (int i = 0; i < 4; i++) {
    g_waiters[i] = (waiter_arg){.h = h, .i = i};
    pthread_create(&h->th[i], NULL, waiter, &g_waiters[i]);
  }
  while (wal_sync_waiters(h->w) < 4) sched_yield();
}

Test(wal, waiters_behind_a_leader_share_its_fsync) {
  char *dir = tu_tmpdir("wal");
  hook_ctx h = {.w = open_ok(dir, 1), .lsns = {1, 2, 3, 4}};
  for (int i = 0; i < 5; i++) append_ok(h.w, "abcdef", 6);
  wal_set_sync_hook(h.w, line_up_waiters, &h);
  uint64_t fsyncs0 = wal_fsync_count(h.w);
  sync_ok(h.w, 5);
  for (int i = 0; i < 4; i++) pthread_join(h.th[i], NULL);
  for (int i = 0; i < 4; i++)
    cr_assert_eq(h.rcs[i], QV_OK, "waiter %d: %s", i, qv_rc_name(h.rcs[i]));
  cr_assert_eq(wal_fsync_count(h.w) - fsyncs0, 1, "one fsync for 5 syncs");
  cr_assert_eq(h.n_calls, 1, "only one leader");
  cr_assert_eq(wal_durable_lsn(h.w), 5);
  wal_close(h.w);
  tu_rmdir(dir);
}
