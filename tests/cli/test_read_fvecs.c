/* test_read_fvecs.c: the .fvecs/.ivecs reader (src/cli/read_fvecs.c) and the
 * format dispatch of src/cli/reader.c: exact round trips, batching, gzip, and
 * one error per kind of malformed file, each naming the record. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/reader.h"
#include "testutil.h"

static char *g_dir;

static void setup(void) { g_dir = tu_tmpdir("clifvecs"); }
static void teardown(void) { tu_rmdir(g_dir); }

static char *path_in(const char *name) {
  char *p = malloc(4096);
  snprintf(p, 4096, "%s/%s", g_dir, name);
  return p;
}

static void write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(p, 1, n, f), n);
  fclose(f);
}

/* Appends one record: int32 d, then d floats. */
static void put_record(FILE *f, int32_t d, const float *v, size_t n) {
  fwrite(&d, 4, 1, f);
  fwrite(v, 4, n, f);
}

/* Writes n records of dim floats where value j of record i is i * 100 + j
 * + 0.25 (exact in float32). */
static void write_fvecs(const char *path, size_t n, int32_t dim) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  for (size_t i = 0; i < n; i++) {
    float v[64];
    for (int32_t j = 0; j < dim; j++)
      v[j] = (float)(i * 100 + (size_t)j) + 0.25f;
    put_record(f, dim, v, (size_t)dim);
  }
  fclose(f);
}

/* Reads the whole file; returns the first error (err filled) or QV_OK. */
static qv_rc read_all(const char *path, size_t *n_out, qv_err *err) {
  reader *r = NULL;
  qv_rc rc = cli_reader_open(path, &r, err);
  if (rc != QV_OK) return rc;
  uint32_t dim = cli_reader_dim(r) ? cli_reader_dim(r) : 1;
  float vecs[4 * 64];
  qv_point_id ids[4];
  uint64_t recnos[4];
  reader_batch b = {.cap = 4, .vecs = vecs, .ids = ids, .recnos = recnos};
  cr_assert_leq(dim, 64);
  size_t n = 0;
  do {
    rc = cli_reader_next(r, &b, err);
    n += b.n;
  } while (rc == QV_OK && b.n > 0);
  qv_rc crc = cli_reader_close(r, rc == QV_OK ? err : NULL);
  if (n_out) *n_out = n;
  return rc != QV_OK ? rc : crc;
}

Test(read_fvecs, round_trip_in_batches_keeps_values_ids_and_row_numbers,
     .init = setup, .fini = teardown) {
  char *p = path_in("a.fvecs");
  write_fvecs(p, 5, 3);
  reader *r = NULL;
  qv_err e = {0};
  cr_assert_eq(cli_reader_open(p, &r, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(cli_reader_dim(r), 3);
  cr_assert_eq(cli_reader_total(r), 5);
  cr_assert_str_eq(cli_reader_format(r), "fvecs");
  float vecs[2 * 3];
  qv_point_id ids[2];
  uint64_t recnos[2];
  const char *payloads[2];
  size_t lens[2];
  reader_batch b = {.cap = 2,
                    .vecs = vecs,
                    .ids = ids,
                    .recnos = recnos,
                    .payloads = payloads,
                    .payload_lens = lens};
  size_t seen = 0;
  size_t sizes[] = {2, 2, 1, 0};
  for (int call = 0; call < 4; call++) {
    cr_assert_eq(cli_reader_next(r, &b, &e), QV_OK, "%s", e.msg);
    cr_assert_eq(b.n, sizes[call], "call %d gave %zu", call, b.n);
    for (size_t i = 0; i < b.n; i++, seen++) {
      cr_expect(!ids[i].is_uuid);
      cr_expect_eq(ids[i].num, seen);
      cr_expect_eq(recnos[i], seen);
      cr_expect_null(payloads[i]);
      for (size_t j = 0; j < 3; j++)
        cr_expect_eq(vecs[i * 3 + j], (float)(seen * 100 + j) + 0.25f);
    }
  }
  cr_assert_eq(cli_reader_close(r, &e), QV_OK);
  free(p);
}

Test(read_fvecs, gzip_file_reads_the_same_values, .init = setup,
     .fini = teardown) {
  char *p = path_in("b.fvecs");
  write_fvecs(p, 7, 4);
  char cmd[8300];
  snprintf(cmd, sizeof cmd, "gzip -k '%s'", p);
  cr_assert_eq(system(cmd), 0);
  char *gz = path_in("b.fvecs.gz");
  float *v = NULL;
  size_t n = 0;
  uint32_t dim = 0;
  qv_err e = {0};
  cr_assert_eq(cli_reader_load_all(gz, 0, &v, &n, &dim, &e), QV_OK, "%s",
               e.msg);
  cr_assert_eq(n, 7);
  cr_assert_eq(dim, 4);
  cr_expect_eq(v[6 * 4 + 3], 603.25f);
  free(v);
  free(p);
  free(gz);
}

Test(read_fvecs, corrupt_gzip_is_reported, .init = setup, .fini = teardown) {
  char *p = path_in("bad.fvecs.gz");
  write_bytes(p, "this is not gzip data at all", 28);
  qv_err e = {0};
  qv_rc rc = read_all(p, NULL, &e);
  cr_assert_neq(rc, QV_OK);
  cr_expect(strstr(e.msg, "gzip") != NULL, "message: %s", e.msg);
  free(p);
}

Test(read_fvecs, truncated_record_names_the_record, .init = setup,
     .fini = teardown) {
  char *p = path_in("t.fvecs");
  write_fvecs(p, 3, 4);
  FILE *f = fopen(p, "ab");
  float half[2] = {1, 2};
  put_record(f, 4, half, 2); /* record 3 says 4 floats, holds 2 */
  fclose(f);
  qv_err e = {0};
  size_t n = 0;
  cr_assert_eq(read_all(p, &n, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "record 3") != NULL, "message: %s", e.msg);
  cr_expect(strstr(e.msg, "truncated") != NULL, "message: %s", e.msg);
  cr_expect(strstr(e.msg, "t.fvecs") != NULL, "message: %s", e.msg);
  free(p);
}

Test(read_fvecs, truncated_header_is_an_error, .init = setup,
     .fini = teardown) {
  char *p = path_in("h.fvecs");
  write_fvecs(p, 2, 4);
  FILE *f = fopen(p, "ab");
  fwrite("\x04\x00", 1, 2, f);
  fclose(f);
  qv_err e = {0};
  cr_assert_eq(read_all(p, NULL, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "record 2: truncated header") != NULL, "message: %s",
            e.msg);
  free(p);
}

Test(read_fvecs, inconsistent_dimension_names_both, .init = setup,
     .fini = teardown) {
  char *p = path_in("d.fvecs");
  FILE *f = fopen(p, "wb");
  float v[5] = {1, 2, 3, 4, 5};
  put_record(f, 4, v, 4);
  put_record(f, 5, v, 5);
  fclose(f);
  qv_err e = {0};
  cr_assert_eq(read_all(p, NULL, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "record 1: dimension 5, but record 0 has 4") != NULL,
            "message: %s", e.msg);
  free(p);
}

Test(read_fvecs, non_positive_dimension_is_refused_at_open, .init = setup,
     .fini = teardown) {
  char *p = path_in("neg.fvecs");
  int32_t d = -3;
  write_bytes(p, &d, 4);
  reader *r = NULL;
  qv_err e = {0};
  cr_assert_eq(cli_reader_open(p, &r, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "dimension -3 is outside") != NULL, "message: %s",
            e.msg);
  free(p);
}

Test(read_fvecs, empty_file_has_no_records, .init = setup, .fini = teardown) {
  char *p = path_in("empty.fvecs");
  write_bytes(p, "", 0);
  reader *r = NULL;
  qv_err e = {0};
  cr_assert_eq(cli_reader_open(p, &r, &e), QV_OK, "%s", e.msg);
  cr_expect_eq(cli_reader_dim(r), 0);
  float v[1];
  qv_point_id ids[1];
  uint64_t recnos[1];
  reader_batch b = {.cap = 1, .vecs = v, .ids = ids, .recnos = recnos};
  cr_assert_eq(cli_reader_next(r, &b, &e), QV_OK);
  cr_expect_eq(b.n, 0);
  cli_reader_close(r, NULL);
  float *all = NULL;
  size_t n;
  uint32_t dim;
  cr_expect_eq(cli_reader_load_all(p, 0, &all, &n, &dim, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "no vectors") != NULL, "message: %s", e.msg);
  free(p);
}

Test(read_fvecs, ivecs_load_returns_the_integers, .init = setup,
     .fini = teardown) {
  char *p = path_in("gt.ivecs");
  FILE *f = fopen(p, "wb");
  for (int32_t i = 0; i < 3; i++) {
    int32_t rec[4] = {3, i, i + 10, i + 20};
    fwrite(rec, 4, 4, f);
  }
  fclose(f);
  void *raw = NULL;
  size_t n = 0;
  uint32_t dim = 0;
  qv_err e = {0};
  cr_assert_eq(cli_vecs_load(p, &raw, &n, &dim, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(n, 3);
  cr_assert_eq(dim, 3);
  const int32_t *g = raw;
  cr_expect_eq(g[2 * 3 + 0], 2);
  cr_expect_eq(g[2 * 3 + 2], 22);
  free(raw);
  free(p);
}

Test(read_fvecs, load_all_stops_at_the_limit, .init = setup, .fini = teardown) {
  char *p = path_in("l.fvecs");
  write_fvecs(p, 10, 2);
  float *v = NULL;
  size_t n = 0;
  uint32_t dim = 0;
  qv_err e = {0};
  cr_assert_eq(cli_reader_load_all(p, 4, &v, &n, &dim, &e), QV_OK, "%s", e.msg);
  cr_expect_eq(n, 4);
  cr_expect_eq(v[3 * 2 + 1], 301.25f);
  free(v);
  free(p);
}

Test(read_fvecs, unknown_extension_is_refused, .init = setup,
     .fini = teardown) {
  char *p = path_in("x.csv");
  write_bytes(p, "1,2\n", 4);
  reader *r = NULL;
  qv_err e = {0};
  cr_assert_eq(cli_reader_open(p, &r, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "unknown file type") != NULL, "message: %s", e.msg);
  free(p);
}

Test(read_fvecs, missing_file_names_the_path, .init = setup, .fini = teardown) {
  char *p = path_in("nope.fvecs");
  reader *r = NULL;
  qv_err e = {0};
  cr_assert_eq(cli_reader_open(p, &r, &e), QV_EIO);
  cr_expect(strstr(e.msg, "nope.fvecs") != NULL, "message: %s", e.msg);
  free(p);
}
