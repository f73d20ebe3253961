/* test_read_npy.c: the .npy reader (src/cli/read_npy.c): round trips for
 * NPY versions 1.0/2.0/3.0 and one error per refused file (dtype, Fortran
 * order, magic, version, shape, truncation, trailing bytes). The files are
 * written byte by byte here, as numpy.save lays them out. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/reader.h"
#include "testutil.h"

static char *g_dir;

static void setup(void) { g_dir = tu_tmpdir("clinpy"); }
static void teardown(void) { tu_rmdir(g_dir); }

static char *path_in(const char *name) {
  char *p = malloc(4096);
  snprintf(p, 4096, "%s/%s", g_dir, name);
  return p;
}

/* Writes an NPY file: magic, version major.0, the dict padded with spaces
 * and a newline so the data starts at a multiple of 64, then `data`. */
static void write_npy(const char *path, int major, const char *dict,
                      const void *data, size_t n) {
  size_t pre = major == 1 ? 10 : 12;
  size_t hlen = strlen(dict) + 1;
  while ((pre + hlen) % 64) hlen++;
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  fwrite("\x93NUMPY", 1, 6, f);
  unsigned char v[2] = {(unsigned char)major, 0};
  fwrite(v, 1, 2, f);
  if (major == 1) {
    uint16_t h = (uint16_t)hlen;
    fwrite(&h, 2, 1, f);
  } else {
    uint32_t h = (uint32_t)hlen;
    fwrite(&h, 4, 1, f);
  }
  fputs(dict, f);
  for (size_t i = strlen(dict) + 1; i < hlen; i++) fputc(' ', f);
  fputc('\n', f);
  if (n) fwrite(data, 1, n, f);
  fclose(f);
}

static const char *k_dict = "{'descr': '<f4', 'fortran_order': False, "
                            "'shape': (3, 2), }";
static const float k_data[6] = {1.5f, -2, 3, 4.25f, 1e-3f, 6e7f};

static qv_rc read_all(const char *path, float *out, size_t *n_out,
                      qv_err *err) {
  reader *r = NULL;
  qv_rc rc = cli_reader_open(path, &r, err);
  if (rc != QV_OK) return rc;
  float vecs[2 * 8];
  qv_point_id ids[2];
  uint64_t recnos[2];
  reader_batch b = {.cap = 2, .vecs = vecs, .ids = ids, .recnos = recnos};
  size_t n = 0;
  uint32_t dim = cli_reader_dim(r);
  while (1) {
    rc = cli_reader_next(r, &b, err);
    if (rc != QV_OK || b.n == 0) break;
    for (size_t i = 0; i < b.n; i++) {
      cr_expect_eq(ids[i].num, n + i);
      cr_expect_eq(recnos[i], n + i);
    }
    if (out) memcpy(out + n * dim, vecs, b.n * dim * sizeof(float));
    n += b.n;
  }
  cli_reader_close(r, NULL);
  if (n_out) *n_out = n;
  return rc;
}

static void expect_round_trip(int major) {
  char name[32];
  snprintf(name, sizeof name, "v%d.npy", major);
  char *p = path_in(name);
  write_npy(p, major, k_dict, k_data, sizeof k_data);
  float got[6];
  size_t n = 0;
  qv_err e = {0};
  cr_assert_eq(read_all(p, got, &n, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(n, 3);
  cr_expect_eq(memcmp(got, k_data, sizeof k_data), 0);
  free(p);
}

Test(read_npy, version_1_round_trip, .init = setup, .fini = teardown) {
  expect_round_trip(1);
}

Test(read_npy, version_2_round_trip, .init = setup, .fini = teardown) {
  expect_round_trip(2);
}

Test(read_npy, version_3_round_trip, .init = setup, .fini = teardown) {
  expect_round_trip(3);
}

Test(read_npy, header_gives_dim_and_total, .init = setup, .fini = teardown) {
  char *p = path_in("h.npy");
  write_npy(p, 1,
            "{\"shape\": (3, 2), \"fortran_order\": False, \"descr\": "
            "\"<f4\"}",
            k_data, sizeof k_data);
  reader *r = NULL;
  qv_err e = {0};
  cr_assert_eq(cli_reader_open(p, &r, &e), QV_OK, "%s", e.msg);
  cr_expect_eq(cli_reader_dim(r), 2);
  cr_expect_eq(cli_reader_total(r), 3);
  cr_expect_str_eq(cli_reader_recno_word(r), "row");
  cli_reader_close(r, NULL);
  free(p);
}

static void expect_open_error(const char *name, int major, const char *dict,
                              const char *needle) {
  char *p = path_in(name);
  write_npy(p, major, dict, k_data, sizeof k_data);
  reader *r = NULL;
  qv_err e = {0};
  cr_assert_eq(cli_reader_open(p, &r, &e), QV_EINVAL, "opened %s", name);
  cr_expect(strstr(e.msg, needle) != NULL, "message: %s", e.msg);
  cr_expect(strstr(e.msg, name) != NULL, "message lacks the file: %s", e.msg);
  free(p);
}

Test(read_npy, float64_dtype_is_refused, .init = setup, .fini = teardown) {
  expect_open_error("f8.npy", 1,
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (3, "
                    "1), }",
                    "dtype '<f8' is not supported");
}

Test(read_npy, big_endian_float32_is_refused, .init = setup, .fini = teardown) {
  expect_open_error("be.npy", 1,
                    "{'descr': '>f4', 'fortran_order': False, 'shape': (3, "
                    "2), }",
                    "'>f4'");
}

Test(read_npy, fortran_order_is_refused, .init = setup, .fini = teardown) {
  expect_open_error("fo.npy", 1,
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (3, "
                    "2), }",
                    "'fortran_order': True is not supported");
}

Test(read_npy, one_dimensional_array_is_refused, .init = setup,
     .fini = teardown) {
  expect_open_error("1d.npy", 1,
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), "
                    "}",
                    "expected a 2-D array");
}

Test(read_npy, structured_dtype_is_refused, .init = setup, .fini = teardown) {
  expect_open_error("st.npy", 1,
                    "{'descr': [('a', '<f4')], 'fortran_order': False, "
                    "'shape': (3,), }",
                    "structured");
}

Test(read_npy, header_without_shape_is_refused, .init = setup,
     .fini = teardown) {
  expect_open_error("ns.npy", 1, "{'descr': '<f4', 'fortran_order': False}",
                    "lacks 'shape'");
}

Test(read_npy, unsupported_version_is_refused, .init = setup,
     .fini = teardown) {
  expect_open_error("v4.npy", 4, k_dict, "version 4.0 is not supported");
}

Test(read_npy, bad_magic_is_refused, .init = setup, .fini = teardown) {
  char *p = path_in("magic.npy");
  FILE *f = fopen(p, "wb");
  fputs("PK\x03\x04 this is a zip file, not npy", f);
  fclose(f);
  reader *r = NULL;
  qv_err e = {0};
  cr_assert_eq(cli_reader_open(p, &r, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "bad magic") != NULL, "message: %s", e.msg);
  free(p);
}

Test(read_npy, truncated_data_names_the_row, .init = setup, .fini = teardown) {
  char *p = path_in("trunc.npy");
  write_npy(p, 1, k_dict, k_data, sizeof k_data - 6);
  qv_err e = {0};
  cr_assert_eq(read_all(p, NULL, NULL, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "row 2: truncated") != NULL, "message: %s", e.msg);
  free(p);
}

Test(read_npy, bytes_after_the_last_row_are_refused, .init = setup,
     .fini = teardown) {
  char *p = path_in("long.npy");
  float more[8];
  memcpy(more, k_data, sizeof k_data);
  more[6] = more[7] = 9;
  write_npy(p, 1, k_dict, more, sizeof more);
  qv_err e = {0};
  cr_assert_eq(read_all(p, NULL, NULL, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "continues after the 3 rows") != NULL, "message: %s",
            e.msg);
  free(p);
}

Test(read_npy, zero_rows_is_an_empty_file, .init = setup, .fini = teardown) {
  char *p = path_in("zero.npy");
  write_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }",
            NULL, 0);
  size_t n = 7;
  qv_err e = {0};
  cr_assert_eq(read_all(p, NULL, &n, &e), QV_OK, "%s", e.msg);
  cr_expect_eq(n, 0);
  free(p);
}
