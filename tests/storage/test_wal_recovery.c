/* test_wal_recovery.c: what wal_open makes of a log a crash or a bad disk
 * left behind.
 *
 * A torn tail (the newest file ends in part of a record, or in a record whose
 * checksum fails, with nothing valid after it) is cut off and the log goes
 * on; any other damage is QV_ECORRUPT naming the file and offset, and the
 * file is left as it was. The tests build a log, edit its bytes as a crash or
 * a flipped bit would, and reopen. Offsets come from the documented framing:
 * WAL_HEADER_BYTES of header (magic, length @4, LSN @8, CRC @16), then the
 * payload. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "storage/wal.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------- */

enum { MAX_RECS = 64 };

/* A log built by build_log: what was appended and where each record starts
 * in its file. */
typedef struct built {
  size_t n;
  size_t len[MAX_RECS];
  unsigned char *p[MAX_RECS];
  uint64_t off[MAX_RECS + 1]; /* off[n] = file size (one file) */
} built;

static void fill(uint64_t *seed, unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)tu_rand(seed);
}

static wal *open_ok(const char *dir) {
  qv_err e = {0};
  wal *w = NULL;
  qv_rc rc = wal_open(dir, 1, &w, &e);
  cr_assert_eq(rc, QV_OK, "wal_open: %s (%s)", qv_rc_name(rc), e.msg);
  return w;
}

static uint64_t append_ok(wal *w, const void *p, size_t len) {
  qv_err e = {0};
  uint64_t lsn = 0;
  qv_rc rc = wal_append(w, p, len, &lsn, &e);
  cr_assert_eq(rc, QV_OK, "wal_append: %s (%s)", qv_rc_name(rc), e.msg);
  return lsn;
}

/* Appends records of the given lengths (random bytes) to one file at LSN 1. */
static void build_log(const char *dir, const size_t *lens, size_t n,
                      uint64_t seed, built *b) {
  cr_assert(n <= MAX_RECS);
  memset(b, 0, sizeof *b);
  wal *w = open_ok(dir);
  b->n = n;
  for (size_t i = 0; i < n; i++) {
    b->len[i] = lens[i];
    b->p[i] = malloc(lens[i]);
    fill(&seed, b->p[i], lens[i]);
    cr_assert_eq(append_ok(w, b->p[i], lens[i]), i + 1);
    b->off[i + 1] = b->off[i] + WAL_HEADER_BYTES + lens[i];
  }
  cr_assert_eq(wal_sync(w, n, NULL), QV_OK);
  wal_close(w);
}

static void built_free(built *b) {
  for (size_t i = 0; i < b->n; i++) free(b->p[i]);
}

static char *wal_path(const char *dir, uint64_t lsn) {
  char *p = malloc(4096);
  snprintf(p, 4096, "%s/%020llu.wal", dir, (unsigned long long)lsn);
  return p;
}

static unsigned char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "open %s", path);
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *p = malloc((size_t)size + 1);
  cr_assert_eq(fread(p, 1, (size_t)size, f), (size_t)size);
  fclose(f);
  *n = (size_t)size;
  return p;
}

static void write_all(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "create %s", path);
  cr_assert_eq(fwrite(p, 1, n, f), n);
  fclose(f);
}

static uint64_t file_size(const char *path) {
  struct stat st;
  cr_assert_eq(stat(path, &st), 0, "stat %s", path);
  return (uint64_t)st.st_size;
}

static void xor_byte(const char *path, uint64_t off, unsigned char mask) {
  int fd = open(path, O_RDWR);
  cr_assert_geq(fd, 0);
  unsigned char c;
  cr_assert_eq(pread(fd, &c, 1, (off_t)off), 1);
  c ^= mask;
  cr_assert_eq(pwrite(fd, &c, 1, (off_t)off), 1);
  close(fd);
}

static void put_le32(const char *path, uint64_t off, uint32_t v) {
  unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8),
                        (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
  int fd = open(path, O_RDWR);
  cr_assert_geq(fd, 0);
  cr_assert_eq(pwrite(fd, b, 4, (off_t)off), 4);
  close(fd);
}

typedef struct check_ctx {
  const built *b;
  size_t n_seen;
  int is_bad;
} check_ctx;

static qv_rc check_rec(void *ctx, uint64_t lsn, const void *p, size_t len,
                       qv_err *err) {
  check_ctx *c = ctx;
  size_t i = c->n_seen++;
  if (lsn != i + 1 || i >= c->b->n || len != c->b->len[i] ||
      memcmp(p, c->b->p[i], len) != 0)
    c->is_bad = 1;
  return QV_OK;
}

/* The log replays exactly the first n_whole records of b. */
static void assert_prefix(wal *w, const built *b, size_t n_whole) {
  check_ctx c = {.b = b};
  qv_err e = {0};
  cr_assert_eq(wal_replay(w, 1, check_rec, &c, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(c.n_seen, n_whole, "replayed %zu records, expected %zu",
               c.n_seen, n_whole);
  cr_assert(!c.is_bad, "replayed records differ from those appended");
}

/* Opening must fail with QV_ECORRUPT naming `file` and leave it unchanged. */
static void assert_corrupt(const char *dir, const char *file) {
  uint64_t size = file_size(file);
  qv_err e = {0};
  wal *w = NULL;
  qv_rc rc = wal_open(dir, 1, &w, &e);
  cr_assert_eq(rc, QV_ECORRUPT, "wal_open gave %s (%s)", qv_rc_name(rc), e.msg);
  cr_assert_null(w);
  const char *base = strrchr(file, '/') + 1;
  cr_assert(strstr(e.msg, base) != NULL, "message names %s: %s", base, e.msg);
  cr_assert(strstr(e.msg, "offset") != NULL, "message gives offset: %s", e.msg);
  cr_assert_eq(file_size(file), size, "a corrupt file is not truncated");
}

/* Reopens after a cut at `cut` bytes and checks the whole records survive,
 * the file is cut back to them, and appends carry on with the next LSN. */
static void check_cut(const char *dir, const char *path, const built *b,
                      const unsigned char *orig, uint64_t cut) {
  write_all(path, orig, cut);
  size_t n_whole = 0;
  while (n_whole < b->n && b->off[n_whole + 1] <= cut) n_whole++;

  wal *w = open_ok(dir);
  cr_assert_eq(wal_next_lsn(w), n_whole + 1, "cut at %llu: next LSN %llu",
               (unsigned long long)cut, (unsigned long long)wal_next_lsn(w));
  cr_assert_eq(file_size(path), b->off[n_whole], "cut at %llu: size %llu",
               (unsigned long long)cut, (unsigned long long)file_size(path));
  assert_prefix(w, b, n_whole);
  cr_assert_eq(append_ok(w, "after", 5), n_whole + 1);
  cr_assert_eq(wal_sync(w, n_whole + 1, NULL), QV_OK);
  wal_close(w);

  w = open_ok(dir);
  cr_assert_eq(wal_next_lsn(w), n_whole + 2,
               "cut at %llu: the new record "
               "did not survive",
               (unsigned long long)cut);
  wal_close(w);
}

static const size_t k_lens[] = {30, 5, 77, 1, 40, 25};
enum { K_N = sizeof k_lens / sizeof *k_lens };

/* ---- torn tails ---------------------------------------------------------- */

Test(wal_recovery, cut_at_every_byte_of_the_last_two_records) {
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 1, &b);
  char *path = wal_path(dir, 1);
  size_t n;
  unsigned char *orig = read_all(path, &n);
  cr_assert_eq(n, b.off[K_N]);
  for (uint64_t cut = b.off[K_N - 2]; cut <= b.off[K_N]; cut++)
    check_cut(dir, path, &b, orig, cut);
  free(orig);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery, cut_at_every_record_boundary_and_random_bytes) {
  size_t lens[40];
  uint64_t seed = 99;
  for (size_t i = 0; i < 40; i++) lens[i] = 1 + tu_rand(&seed) % 300;
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, lens, 40, 2, &b);
  char *path = wal_path(dir, 1);
  size_t n;
  unsigned char *orig = read_all(path, &n);
  for (size_t i = 0; i <= 40; i++) check_cut(dir, path, &b, orig, b.off[i]);
  for (int k = 0; k < 40; k++)
    check_cut(dir, path, &b, orig, tu_rand(&seed) % (n + 1));
  free(orig);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery, flipped_byte_in_the_last_payload_loses_only_that_record) {
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 3, &b);
  char *path = wal_path(dir, 1);
  xor_byte(path, b.off[K_N - 1] + WAL_HEADER_BYTES + 3, 0x40);
  wal *w = open_ok(dir);
  cr_assert_eq(wal_next_lsn(w), K_N);
  cr_assert_eq(file_size(path), b.off[K_N - 1]);
  assert_prefix(w, &b, K_N - 1);
  wal_close(w);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery, flipped_lsn_in_the_last_header_is_a_torn_tail) {
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 4, &b);
  char *path = wal_path(dir, 1);
  xor_byte(path, b.off[K_N - 1] + 8, 0x01); /* the CRC covers the LSN */
  wal *w = open_ok(dir);
  cr_assert_eq(wal_next_lsn(w), K_N);
  assert_prefix(w, &b, K_N - 1);
  wal_close(w);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery, zeroed_space_after_the_last_record_is_cut) {
  /* Some file systems leave a file longer than what reached the disk, the
   * rest reading as zeros. */
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 5, &b);
  char *path = wal_path(dir, 1);
  cr_assert_eq(truncate(path, (off_t)(b.off[K_N] + 4096)), 0);
  wal *w = open_ok(dir);
  cr_assert_eq(wal_next_lsn(w), K_N + 1);
  cr_assert_eq(file_size(path), b.off[K_N]);
  assert_prefix(w, &b, K_N);
  wal_close(w);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery, torn_first_record_leaves_an_empty_file) {
  char *dir = tu_tmpdir("walrec");
  size_t len = 100;
  built b;
  build_log(dir, &len, 1, 6, &b);
  char *path = wal_path(dir, 1);
  cr_assert_eq(truncate(path, 50), 0);
  wal *w = open_ok(dir);
  cr_assert_eq(wal_next_lsn(w), 1);
  cr_assert_eq(file_size(path), 0);
  cr_assert_eq(append_ok(w, "x", 1), 1);
  wal_close(w);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery,
     garbage_length_in_the_last_record_is_cut_without_reading_it) {
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 7, &b);
  char *path = wal_path(dir, 1);
  /* Over WAL_RECORD_MAX, then within it but past the end of the file. */
  uint32_t bad[] = {0xFFFFFFF0u, WAL_RECORD_MAX};
  for (int k = 0; k < 2; k++) {
    put_le32(path, b.off[K_N - 1] + 4, bad[k]);
    uint64_t before = qv_alloc_bytes();
    wal *w = open_ok(dir);
    cr_assert_lt(qv_alloc_bytes() - before, 1u << 20,
                 "open allocated %llu bytes",
                 (unsigned long long)(qv_alloc_bytes() - before));
    cr_assert_eq(wal_next_lsn(w), K_N);
    cr_assert_eq(file_size(path), b.off[K_N - 1]);
    assert_prefix(w, &b, K_N - 1);
    /* Put the last record back for the next round. */
    cr_assert_eq(append_ok(w, b.p[K_N - 1], b.len[K_N - 1]), K_N);
    wal_close(w);
  }
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

/* ---- corruption ---------------------------------------------------------- */

Test(wal_recovery, flipped_byte_in_an_early_record_is_corrupt) {
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 8, &b);
  char *path = wal_path(dir, 1);
  xor_byte(path, b.off[1] + WAL_HEADER_BYTES, 0x01);
  assert_corrupt(dir, path);
  /* The message gives the damaged record's offset. */
  qv_err e = {0};
  wal *w = NULL;
  cr_assert_eq(wal_open(dir, 1, &w, &e), QV_ECORRUPT);
  char want[64];
  snprintf(want, sizeof want, "offset %llu", (unsigned long long)b.off[1]);
  cr_assert(strstr(e.msg, want) != NULL, "want \"%s\" in: %s", want, e.msg);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery, garbage_length_in_a_middle_record_is_corrupt) {
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 9, &b);
  char *path = wal_path(dir, 1);
  put_le32(path, b.off[2] + 4, 0xFFFFFFF0u);
  assert_corrupt(dir, path);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery, bad_magic_followed_by_valid_records_is_corrupt) {
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 10, &b);
  char *path = wal_path(dir, 1);
  xor_byte(path, b.off[K_N - 2], 0xFF);
  assert_corrupt(dir, path);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery, repeated_record_with_a_valid_crc_is_corrupt) {
  /* A whole record with the wrong LSN was written whole: not a torn write,
   * even at the very end. */
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 11, &b);
  char *path = wal_path(dir, 1);
  size_t n;
  unsigned char *p = read_all(path, &n);
  size_t last = b.off[K_N] - b.off[K_N - 1];
  unsigned char *q = malloc(n + last);
  memcpy(q, p, n);
  memcpy(q + n, p + b.off[K_N - 1], last);
  write_all(path, q, n + last);
  assert_corrupt(dir, path);
  free(q);
  free(p);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

/* Builds files at LSNs 1, 6 and 11 of five records each. */
static void build_three_files(const char *dir) {
  wal *w = open_ok(dir);
  for (int f = 0; f < 3; f++) {
    for (int i = 0; i < 5; i++) append_ok(w, "0123456789", 10);
    if (f < 2) cr_assert_eq(wal_rotate(w, NULL), QV_OK);
  }
  cr_assert_eq(wal_sync(w, 15, NULL), QV_OK);
  wal_close(w);
}

Test(wal_recovery, damage_in_an_older_file_is_corrupt) {
  char *dir = tu_tmpdir("walrec");
  build_three_files(dir);
  char *path = wal_path(dir, 6);
  /* Its last record: would be a torn tail in the newest file. */
  xor_byte(path, file_size(path) - 1, 0x01);
  assert_corrupt(dir, path);
  free(path);
  tu_rmdir(dir);
}

Test(wal_recovery, cut_older_file_is_corrupt) {
  char *dir = tu_tmpdir("walrec");
  build_three_files(dir);
  char *path = wal_path(dir, 6);
  uint64_t rec = WAL_HEADER_BYTES + 10;
  cr_assert_eq(truncate(path, (off_t)(4 * rec + 7)), 0); /* mid-record */
  assert_corrupt(dir, path);
  cr_assert_eq(truncate(path, (off_t)(4 * rec)), 0); /* on a boundary */
  char *next = wal_path(dir, 11);
  assert_corrupt(dir, next); /* LSN 10 is missing before file 11 */
  free(next);
  free(path);
  tu_rmdir(dir);
}

Test(wal_recovery, missing_middle_file_is_a_gap) {
  char *dir = tu_tmpdir("walrec");
  build_three_files(dir);
  char *mid = wal_path(dir, 6), *last = wal_path(dir, 11);
  cr_assert_eq(unlink(mid), 0);
  assert_corrupt(dir, last);
  free(mid);
  free(last);
  tu_rmdir(dir);
}

Test(wal_recovery, file_name_disagreeing_with_its_first_record_is_corrupt) {
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 12, &b);
  char *from = wal_path(dir, 1), *to = wal_path(dir, 2);
  cr_assert_eq(rename(from, to), 0);
  assert_corrupt(dir, to);
  free(from);
  free(to);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery, empty_newest_file_is_fine) {
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 13, &b);
  /* As a crash right after rotation's create leaves it. */
  char *path = wal_path(dir, K_N + 1);
  write_all(path, "", 0);
  wal *w = open_ok(dir);
  cr_assert_eq(wal_next_lsn(w), K_N + 1);
  assert_prefix(w, &b, K_N);
  cr_assert_eq(append_ok(w, "x", 1), K_N + 1);
  wal_close(w);
  cr_assert_eq(file_size(path), WAL_HEADER_BYTES + 1, "appends go to it");
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery, every_single_byte_flip_is_cut_or_reported) {
  /* Exhaustive over the file: a flip in the last record is a torn tail
   * (only that record lost); a flip anywhere before it has valid records
   * after it, so it must be reported, and the file left alone. */
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 14, &b);
  char *path = wal_path(dir, 1);
  size_t n;
  unsigned char *orig = read_all(path, &n);
  for (uint64_t off = 0; off < n; off++) {
    orig[off] ^= 0x10;
    write_all(path, orig, n);
    orig[off] ^= 0x10;
    qv_err e = {0};
    wal *w = NULL;
    qv_rc rc = wal_open(dir, 1, &w, &e);
    if (off >= b.off[K_N - 1]) {
      cr_assert_eq(rc, QV_OK, "flip at %llu: %s (%s)", (unsigned long long)off,
                   qv_rc_name(rc), e.msg);
      assert_prefix(w, &b, K_N - 1);
      cr_assert_eq(file_size(path), b.off[K_N - 1]);
      wal_close(w);
    } else {
      cr_assert_eq(rc, QV_ECORRUPT, "flip at %llu: %s", (unsigned long long)off,
                   qv_rc_name(rc));
      cr_assert_eq(file_size(path), n);
    }
  }
  free(orig);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}

Test(wal_recovery, file_named_lsn_zero_is_corrupt) {
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, 2, 15, &b);
  char *zero = wal_path(dir, 0);
  write_all(zero, "", 0);
  assert_corrupt(dir, zero);
  free(zero);
  built_free(&b);
  tu_rmdir(dir);
}

static char g_warn[512];
static void keep_warning(void *ctx, qv_log_level level, const char *subsystem,
                         const char *msg) {
  if (level == QV_LOG_WARN && strcmp(subsystem, "wal") == 0)
    snprintf(g_warn, sizeof g_warn, "%s", msg);
}

Test(wal_recovery, cutting_a_torn_tail_is_logged_as_a_warning) {
  char *dir = tu_tmpdir("walrec");
  built b;
  build_log(dir, k_lens, K_N, 16, &b);
  char *path = wal_path(dir, 1);
  cr_assert_eq(truncate(path, (off_t)(b.off[K_N] - 3)), 0);
  qv_set_log(keep_warning, NULL, QV_LOG_DEBUG);
  wal *w = open_ok(dir);
  qv_set_log(NULL, NULL, QV_LOG_INFO);
  char want[64];
  snprintf(want, sizeof want, "offset %llu",
           (unsigned long long)b.off[K_N - 1]);
  cr_assert(strstr(g_warn, "00000000000000000001.wal") != NULL &&
                strstr(g_warn, want) != NULL,
            "warning names the file and %s: \"%s\"", want, g_warn);
  wal_close(w);
  free(path);
  built_free(&b);
  tu_rmdir(dir);
}
