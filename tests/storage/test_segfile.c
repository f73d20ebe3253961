/* test_segfile.c: sealed segment files and MANIFESTs round-trip, and every
 * single-byte flip or truncation is reported as QV_ECORRUPT. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "engine/id.h"
#include "storage/manifest.h"
#include "storage/segfile.h"
#include "testutil.h"

static void write_sample(const char *path, float *vecs) {
  qv_point_id ids[3] = {qv_id_num(10), qv_id_num(20), qv_id_num(30)};
  uint64_t lsns[3] = {5, 6, 7}, poff[4] = {0, 2, 2, 9};
  segfile_tomb t = {qv_id_num(99), 8};
  static const uint8_t present[3] = {1, 1, 1};
  for (int i = 0; i < 6; i++) vecs[i] = (float)i + 0.5f;
  segfile_data d = {.n_spaces = 1, .dims = {2}, .vecs = {vecs}, .present = {present},
                    .n_rows = 3, .n_tombs = 1, .first_lsn = 5, .end_lsn = 8,
                    .build_seconds = 1.5, .ids = ids, .lsns = lsns,
                    .payload_off = poff, .payload_blob = "{}{\"a\":1}", .tombs = &t};
  qv_err e;
  cr_assert_eq(segfile_write(path, &d, &e), QV_OK, "%s", e.msg);
}

Test(segfile, round_trips) {
  char *dir = tu_tmpdir("segf");
  char path[4200];
  snprintf(path, sizeof path, "%s/segment.qvs", dir);
  float vecs[6];
  write_sample(path, vecs);
  fileio_map m;
  segfile_data d;
  qv_err e;
  uint32_t dims[1] = {2}, wrong[1] = {3};
  cr_assert_eq(segfile_open(path, dims, 1, &m, &d, &e), QV_OK, "%s", e.msg);
  cr_expect_eq(d.n_rows, 3);
  cr_expect_eq(d.n_tombs, 1);
  cr_expect_eq(d.end_lsn, 8);
  cr_expect_arr_eq(d.vecs[0], vecs, sizeof vecs);
  cr_expect_eq(d.present[0][2], 1);
  cr_expect_eq(d.ids[2].num, 30);
  cr_expect_eq(d.lsns[1], 6);
  cr_expect_eq(memcmp(d.payload_blob + d.payload_off[2], "{\"a\":1}", 7), 0);
  cr_expect_eq(d.tombs[0].id.num, 99);
  cr_expect_eq(((uintptr_t)d.vecs[0]) % 64, 0, "vectors are aligned in the mapping");
  fileio_unmap(&m);
  cr_expect_eq(segfile_open(path, wrong, 1, &m, &d, &e), QV_ECORRUPT, "wrong dimension");
  cr_expect_eq(segfile_open(path, dims, 2, &m, &d, &e), QV_ECORRUPT, "wrong space count");
  tu_rmdir(dir);
}

static void flip(const char *path, long off) {
  int fd = open(path, O_RDWR);
  unsigned char b;
  cr_assert_eq(pread(fd, &b, 1, off), 1);
  b ^= 0x40;
  cr_assert_eq(pwrite(fd, &b, 1, off), 1);
  close(fd);
}

Test(segfile, every_flipped_byte_or_truncation_is_corrupt) {
  char *dir = tu_tmpdir("segflip");
  char path[4200];
  snprintf(path, sizeof path, "%s/segment.qvs", dir);
  float vecs[6];
  write_sample(path, vecs);
  char *orig;
  size_t n;
  cr_assert_eq(fileio_read_file(path, &orig, &n, NULL), QV_OK);
  /* Every byte that is covered by a checksum: the header and the sections
   * (the zero padding between sections is not data). */
  fileio_map m;
  segfile_data d;
  qv_err e;
  uint32_t dims[1] = {2};
  int checked = 0;
  for (long off = 0; off < (long)n; off++) {
    flip(path, off);
    qv_rc rc = segfile_open(path, dims, 1, &m, &d, &e);
    if (rc == QV_OK) {
      fileio_unmap(&m);
      /* only zero padding (unused header bytes, gaps between sections) may
       * change unnoticed */
      cr_expect(orig[off] == 0, "flip at %ld went unnoticed", off);
    } else {
      cr_expect_eq(rc, QV_ECORRUPT, "flip at %ld: %s", off, e.msg);
      cr_expect(strstr(e.msg, "segment.qvs") != NULL, "names the file: %s", e.msg);
      checked++;
    }
    flip(path, off);
  }
  cr_expect_gt(checked, 1000);
  for (long cut = 0; cut < (long)n; cut += 97) {
    cr_assert_eq(truncate(path, cut), 0);
    cr_expect_eq(segfile_open(path, dims, 1, &m, &d, &e), QV_ECORRUPT, "cut at %ld", cut);
    cr_assert_eq(fileio_write_atomic(path, orig, n, NULL), QV_OK);
  }
  qv_free(orig);
  tu_rmdir(dir);
}

Test(manifest, round_trips_and_detects_damage) {
  char *dir = tu_tmpdir("manif");
  char path[4200];
  snprintf(path, sizeof path, "%s/MANIFEST", dir);
  uint64_t ids[3] = {4, 9, 2};
  manifest m = {.checkpoint_lsn = 1234, .next_segment_id = 10, .n_segments = 3,
                .segment_ids = ids};
  qv_err e;
  cr_assert_eq(manifest_write(path, &m, &e), QV_OK);
  manifest r;
  cr_assert_eq(manifest_read(path, &r, &e), QV_OK, "%s", e.msg);
  cr_expect_eq(r.checkpoint_lsn, 1234);
  cr_expect_eq(r.n_segments, 3);
  cr_expect_eq(r.segment_ids[1], 9);
  manifest_free(&r);
  char *orig;
  size_t n;
  cr_assert_eq(fileio_read_file(path, &orig, &n, NULL), QV_OK);
  for (long off = 0; off < (long)n; off++) {
    flip(path, off);
    cr_expect_eq(manifest_read(path, &r, &e), QV_ECORRUPT, "flip at %ld", off);
    flip(path, off);
  }
  cr_assert_eq(truncate(path, (off_t)n - 1), 0);
  cr_expect_eq(manifest_read(path, &r, &e), QV_ECORRUPT);
  unlink(path);
  cr_expect_eq(manifest_read(path, &r, &e), QV_ENOTFOUND);
  qv_free(orig);
  tu_rmdir(dir);
}
