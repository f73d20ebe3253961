/* test_wal_faults.c: the write-ahead log under injected I/O and allocation
 * failures.
 *
 * A failed write or fsync must be reported once as QV_EIO, after which the
 * log refuses appends, syncs, rotations and drops with QV_ECLOSED (waiters
 * behind a failing leader included); reopening recovers every record that
 * was fully written and cuts a half-written one. Faults come from the seam in
 * src/base/fileio.h (the Nth write or fsync from now fails; a failing write
 * writes half its bytes first) and src/base/alloc.h. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "storage/wal.h"
#include "testutil.h"

/* Each test runs in its own process, but reset anyway so that one test's
 * unused fault cannot fire in the next. */
static void reset_faults(void) {
  fileio_fault_write_after(0);
  fileio_fault_fsync_after(0);
  qv_alloc_fail_after(0);
}

TestSuite(wal_faults, .init = reset_faults, .fini = reset_faults);

/* ---- helpers ------------------------------------------------------------- */

static wal *open_ok(const char *dir) {
  qv_err e = {0};
  wal *w = NULL;
  qv_rc rc = wal_open(dir, 1, &w, &e);
  cr_assert_eq(rc, QV_OK, "wal_open: %s (%s)", qv_rc_name(rc), e.msg);
  return w;
}

/* Record i holds `len` bytes of value (i & 0xff). */
static uint64_t append_nth(wal *w, uint64_t i, size_t len) {
  unsigned char *p = malloc(len);
  memset(p, (int)(i & 0xff), len);
  qv_err e = {0};
  uint64_t lsn = 0;
  qv_rc rc = wal_append(w, p, len, &lsn, &e);
  free(p);
  cr_assert_eq(rc, QV_OK, "wal_append: %s (%s)", qv_rc_name(rc), e.msg);
  cr_assert_eq(lsn, i);
  return lsn;
}

typedef struct check_ctx {
  size_t len, n_seen;
  int is_bad;
} check_ctx;

static qv_rc check_rec(void *ctx, uint64_t lsn, const void *p, size_t len,
                       qv_err *err) {
  check_ctx *c = ctx;
  const unsigned char *b = p;
  c->n_seen++;
  if (lsn != c->n_seen || len != c->len) c->is_bad = 1;
  for (size_t i = 0; i < len; i++)
    if (b[i] != (unsigned char)(lsn & 0xff)) c->is_bad = 1;
  return QV_OK;
}

/* The log holds exactly records 1..n as append_nth(i, len) wrote them. */
static void assert_records(wal *w, size_t n, size_t len) {
  check_ctx c = {.len = len};
  qv_err e = {0};
  cr_assert_eq(wal_replay(w, 1, check_rec, &c, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(c.n_seen, n, "replayed %zu records, expected %zu", c.n_seen, n);
  cr_assert(!c.is_bad, "replayed records differ from those appended");
  cr_assert_eq(wal_next_lsn(w), n + 1);
}

/* Every mutating call now answers QV_ECLOSED with the documented message. */
static void assert_closed(wal *w) {
  qv_err e = {0};
  uint64_t lsn = 0;
  cr_assert_eq(wal_append(w, "x", 1, &lsn, &e), QV_ECLOSED);
  cr_assert(strstr(e.msg, "closed after an earlier I/O error") != NULL, "%s",
            e.msg);
  cr_assert_eq(wal_sync(w, wal_next_lsn(w) - 1, &e), QV_ECLOSED);
  cr_assert_eq(wal_rotate(w, &e), QV_ECLOSED);
  cr_assert_eq(wal_drop_before(w, 1000, &e), QV_ECLOSED);
}

static uint64_t file_size(const char *dir, uint64_t lsn) {
  char path[8192];
  snprintf(path, sizeof path, "%s/%020llu.wal", dir, (unsigned long long)lsn);
  struct stat st;
  cr_assert_eq(stat(path, &st), 0, "stat %s", path);
  return (uint64_t)st.st_size;
}

/* ---- fsync faults -------------------------------------------------------- */

Test(wal_faults, failed_fsync_fails_the_sync_then_closes_the_log) {
  char *dir = tu_tmpdir("walf");
  wal *w = open_ok(dir);
  for (uint64_t i = 1; i <= 10; i++) append_nth(w, i, 50);
  fileio_fault_fsync_after(1);
  qv_err e = {0};
  cr_assert_eq(wal_sync(w, 10, &e), QV_EIO);
  cr_assert(strstr(e.msg, "injected") != NULL, "the OS message: %s", e.msg);
  cr_assert_eq(wal_durable_lsn(w), 0, "nothing became durable");
  assert_closed(w);
  wal_close(w);

  w = open_ok(dir);
  assert_records(w, 10, 50);
  append_nth(w, 11, 50);
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal_faults, failed_fsync_in_rotate_closes_the_log) {
  char *dir = tu_tmpdir("walf");
  wal *w = open_ok(dir);
  for (uint64_t i = 1; i <= 3; i++) append_nth(w, i, 20);
  fileio_fault_fsync_after(1);
  qv_err e = {0};
  cr_assert_eq(wal_rotate(w, &e), QV_EIO);
  assert_closed(w);
  wal_close(w);
  w = open_ok(dir);
  assert_records(w, 3, 20);
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal_faults, failed_directory_fsync_in_rotate_recovers_to_an_empty_file) {
  char *dir = tu_tmpdir("walf");
  wal *w = open_ok(dir);
  for (uint64_t i = 1; i <= 3; i++) append_nth(w, i, 20);
  fileio_fault_fsync_after(2); /* the file's fsync passes, the dir's fails */
  qv_err e = {0};
  cr_assert_eq(wal_rotate(w, &e), QV_EIO);
  cr_assert_eq(wal_durable_lsn(w), 3, "the old file was fsynced");
  assert_closed(w);
  wal_close(w);
  w = open_ok(dir);
  assert_records(w, 3, 20);
  append_nth(w, 4, 20);
  wal_close(w);
  cr_assert_eq(file_size(dir, 4), WAL_HEADER_BYTES + 20);
  w = open_ok(dir);
  assert_records(w, 4, 20);
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal_faults, failed_directory_fsync_in_drop_closes_the_log) {
  char *dir = tu_tmpdir("walf");
  wal *w = open_ok(dir);
  qv_err e = {0};
  append_nth(w, 1, 20);
  cr_assert_eq(wal_rotate(w, &e), QV_OK, "%s", e.msg);
  append_nth(w, 2, 20);
  fileio_fault_fsync_after(1);
  cr_assert_eq(wal_drop_before(w, 2, &e), QV_EIO);
  assert_closed(w);
  wal_close(w);
  w = open_ok(dir);
  cr_assert_eq(wal_next_lsn(w), 3);
  wal_close(w);
  tu_rmdir(dir);
}

/* ---- write faults -------------------------------------------------------- */

Test(wal_faults, torn_write_is_cut_on_reopen) {
  char *dir = tu_tmpdir("walf");
  wal *w = open_ok(dir);
  for (uint64_t i = 1; i <= 5; i++) append_nth(w, i, 100);
  cr_assert_eq(wal_sync(w, 5, NULL), QV_OK);
  fileio_fault_write_after(1);
  unsigned char big[1000];
  memset(big, 6, sizeof big);
  qv_err e = {0};
  uint64_t lsn = 0;
  cr_assert_eq(wal_append(w, big, sizeof big, &lsn, &e), QV_EIO);
  cr_assert(strstr(e.msg, "injected") != NULL, "%s", e.msg);
  uint64_t whole = 5 * (WAL_HEADER_BYTES + 100);
  cr_assert_eq(file_size(dir, 1), whole + (WAL_HEADER_BYTES + 1000) / 2,
               "the fault wrote half the record");
  cr_assert_eq(wal_next_lsn(w), 6, "the failed record took no LSN");
  assert_closed(w);
  wal_close(w);

  w = open_ok(dir);
  cr_assert_eq(file_size(dir, 1), whole, "the half record was cut");
  assert_records(w, 5, 100);
  append_nth(w, 6, 100);
  wal_close(w);
  w = open_ok(dir);
  assert_records(w, 6, 100);
  wal_close(w);
  tu_rmdir(dir);
}

Test(wal_faults, torn_first_write_recovers_an_empty_log) {
  char *dir = tu_tmpdir("walf");
  wal *w = open_ok(dir);
  fileio_fault_write_after(1);
  unsigned char rec[64] = {1};
  cr_assert_eq(wal_append(w, rec, sizeof rec, NULL, NULL), QV_EIO);
  wal_close(w);
  w = open_ok(dir);
  assert_records(w, 0, 64);
  cr_assert_eq(file_size(dir, 1), 0);
  append_nth(w, 1, 64);
  wal_close(w);
  tu_rmdir(dir);
}

/* ---- waiters behind a failing leader ------------------------------------- */

typedef struct hook_ctx {
  wal *w;
  pthread_t th[4];
  qv_rc rcs[4];
  int n_calls;
} hook_ctx;

typedef struct waiter_arg {
  hook_ctx *h;
  int i;
} waiter_arg;

static waiter_arg g_waiters[4];

static void *waiter(void *p) {
  waiter_arg *a = p;
  a->h->rcs[a->i] = wal_sync(a->h->w, (uint64_t)a->i + 1, NULL);
  return NULL;
}

/* Runs in the leader before its fsync: starts four syncs and returns once
 * all four wait for the leader (no sleeps: the count is taken under the
 * log's lock right before each waits). */
static void line_up_waiters(void *ctx) {
  hook_ctx *h = ctx;
  if (h->n_calls++ > 0) return;
  for (int i = 0; i < 4; i++) {
    g_waiters[i] = (waiter_arg){.h = h, .i = i};
    pthread_create(&h->th[i], NULL, waiter, &g_waiters[i]);
  }
  while (wal_sync_waiters(h->w) < 4) sched_yield();
}

Test(wal_faults, waiters_behind_a_failed_leader_get_closed) {
  char *dir = tu_tmpdir("walf");
  hook_ctx h = {.w = open_ok(dir)};
  for (uint64_t i = 1; i <= 5; i++) append_nth(h.w, i, 10);
  wal_set_sync_hook(h.w, line_up_waiters, &h);
  fileio_fault_fsync_after(1);
  qv_err e = {0};
  cr_assert_eq(wal_sync(h.w, 5, &e), QV_EIO, "the leader sees the fault");
  for (int i = 0; i < 4; i++) pthread_join(h.th[i], NULL);
  for (int i = 0; i < 4; i++)
    cr_assert_eq(h.rcs[i], QV_ECLOSED, "waiter %d: %s", i,
                 qv_rc_name(h.rcs[i]));
  cr_assert_eq(h.n_calls, 1, "no waiter became a leader after the failure");
  cr_assert_eq(wal_sync_waiters(h.w), 0);
  wal_close(h.w);
  tu_rmdir(dir);
}

/* ---- allocation faults --------------------------------------------------- */

Test(wal_faults, every_failed_allocation_in_open_is_reported) {
  char *dir = tu_tmpdir("walf");
  wal *w = open_ok(dir);
  for (uint64_t i = 1; i <= 3; i++) {
    append_nth(w, i, 30);
    cr_assert_eq(wal_rotate(w, NULL), QV_OK);
  }
  wal_close(w);
  /* Fail the 1st, 2nd, ... allocation until open needs no more; ASan's
   * leak check catches anything a failed open forgets to free. */
  int n_failed = 0;
  for (uint64_t k = 1; k < 100; k++) {
    qv_alloc_fail_after(k);
    qv_err e = {0};
    w = NULL;
    qv_rc rc = wal_open(dir, 1, &w, &e);
    qv_alloc_fail_after(0);
    if (rc == QV_OK) {
      assert_records(w, 3, 30);
      wal_close(w);
      break;
    }
    cr_assert_eq(rc, QV_ENOMEM, "allocation %llu: %s (%s)",
                 (unsigned long long)k, qv_rc_name(rc), e.msg);
    cr_assert_null(w);
    n_failed++;
  }
  cr_assert_gt(n_failed, 0, "open allocates, so some run must have failed");
  tu_rmdir(dir);
}

Test(wal_faults, failed_allocation_in_append_leaves_the_log_usable) {
  char *dir = tu_tmpdir("walf");
  wal *w = open_ok(dir);
  append_nth(w, 1, 10);
  qv_alloc_fail_after(1); /* the frame buffer must grow for 5000 bytes */
  unsigned char *big = calloc(1, 5000);
  cr_assert_eq(wal_append(w, big, 5000, NULL, NULL), QV_ENOMEM);
  free(big);
  cr_assert_eq(wal_next_lsn(w), 2);
  append_nth(w, 2, 10);
  cr_assert_eq(wal_sync(w, 2, NULL), QV_OK);
  wal_close(w);
  w = open_ok(dir);
  assert_records(w, 2, 10);
  wal_close(w);
  tu_rmdir(dir);
}
