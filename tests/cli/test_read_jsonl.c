/* test_read_jsonl.c: the JSON-lines reader (src/cli/read_jsonl.c): ids
 * (integers and UUIDs), vectors, compact payloads, line numbers, and one
 * error per malformed line, each naming the line and the problem. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/reader.h"
#include "testutil.h"

static char *g_dir;

static void setup(void) { g_dir = tu_tmpdir("clijsonl"); }
static void teardown(void) { tu_rmdir(g_dir); }

static char *write_text(const char *name, const char *text) {
  char *p = malloc(4096);
  snprintf(p, 4096, "%s/%s", g_dir, name);
  FILE *f = fopen(p, "wb");
  cr_assert_not_null(f);
  fputs(text, f);
  fclose(f);
  return p;
}

/* Reads every record; returns the first error. */
static qv_rc read_all(const char *path, qv_err *err) {
  reader *r = NULL;
  qv_rc rc = cli_reader_open(path, &r, err);
  if (rc != QV_OK) return rc;
  float vecs[4 * 16];
  qv_point_id ids[4];
  uint64_t recnos[4];
  reader_batch b = {.cap = 4, .vecs = vecs, .ids = ids, .recnos = recnos};
  cr_assert_leq(cli_reader_dim(r), 16);
  do rc = cli_reader_next(r, &b, err);
  while (rc == QV_OK && b.n > 0);
  cli_reader_close(r, NULL);
  return rc;
}

static void expect_error(const char *text, const char *needle) {
  char *p = write_text("bad.jsonl", text);
  qv_err e = {0};
  cr_assert_eq(read_all(p, &e), QV_EINVAL, "accepted: %s", text);
  cr_expect(strstr(e.msg, needle) != NULL, "message: %s\nexpected: %s", e.msg,
            needle);
  cr_expect(strstr(e.msg, "bad.jsonl") != NULL, "no file in: %s", e.msg);
  free(p);
}

Test(read_jsonl, round_trip_ids_vectors_payloads_and_lines, .init = setup,
     .fini = teardown) {
  char *p = write_text(
      "ok.jsonl",
      "{\"id\": 7, \"vector\": [0.5, -1, 2e3], \"payload\": {\"a\" : 1, "
      "\"b\": [\"x\", null]}}\n"
      "\n"
      "{\"id\": \"550E8400-e29b-41d4-a716-446655440000\", \"vector\": [1, 2, "
      "3]}\n"
      "  \t\r\n"
      "{\"vector\": [4, 5, 6], \"payload\": null, \"id\": "
      "9223372036854775807}\n");
  reader *r = NULL;
  qv_err e = {0};
  cr_assert_eq(cli_reader_open(p, &r, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(cli_reader_dim(r), 3);
  cr_expect_str_eq(cli_reader_recno_word(r), "line");
  float vecs[8 * 3];
  qv_point_id ids[8];
  uint64_t recnos[8];
  const char *payloads[8];
  size_t lens[8];
  reader_batch b = {.cap = 8,
                    .vecs = vecs,
                    .ids = ids,
                    .recnos = recnos,
                    .payloads = payloads,
                    .payload_lens = lens};
  cr_assert_eq(cli_reader_next(r, &b, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(b.n, 3);
  cr_expect(!ids[0].is_uuid);
  cr_expect_eq(ids[0].num, 7);
  cr_expect_eq(recnos[0], 1);
  cr_expect_eq(vecs[0], 0.5f);
  cr_expect_eq(vecs[1], -1.0f);
  cr_expect_eq(vecs[2], 2000.0f);
  cr_expect_str_eq(payloads[0], "{\"a\":1,\"b\":[\"x\",null]}");
  cr_expect_eq(lens[0], strlen(payloads[0]));
  cr_expect(ids[1].is_uuid);
  char buf[40];
  cr_expect_str_eq(qv_id_format(&ids[1], buf),
                   "550e8400-e29b-41d4-a716-446655440000");
  cr_expect_eq(recnos[1], 3);
  cr_expect_null(payloads[1]);
  cr_expect_eq(vecs[1 * 3 + 2], 3.0f);
  cr_expect_eq(ids[2].num, 9223372036854775807ull);
  cr_expect_eq(recnos[2], 5);
  cr_expect_null(payloads[2]);
  cr_assert_eq(cli_reader_next(r, &b, &e), QV_OK);
  cr_expect_eq(b.n, 0);
  cli_reader_close(r, NULL);
  free(p);
}

Test(read_jsonl, batches_continue_across_calls, .init = setup,
     .fini = teardown) {
  char text[2048] = "";
  for (int i = 0; i < 10; i++) {
    char line[128];
    snprintf(line, sizeof line,
             "{\"id\": %d, \"vector\": [%d, 1], \"payload\": {\"i\": %d}}\n",
             i * 2, i, i);
    strcat(text, line);
  }
  char *p = write_text("many.jsonl", text);
  reader *r = NULL;
  qv_err e = {0};
  cr_assert_eq(cli_reader_open(p, &r, &e), QV_OK, "%s", e.msg);
  float vecs[3 * 2];
  qv_point_id ids[3];
  uint64_t recnos[3];
  const char *payloads[3];
  size_t lens[3];
  reader_batch b = {.cap = 3,
                    .vecs = vecs,
                    .ids = ids,
                    .recnos = recnos,
                    .payloads = payloads,
                    .payload_lens = lens};
  int seen = 0;
  while (cli_reader_next(r, &b, &e) == QV_OK && b.n > 0)
    for (size_t i = 0; i < b.n; i++, seen++) {
      char want[32];
      snprintf(want, sizeof want, "{\"i\":%d}", seen);
      cr_expect_eq(ids[i].num, (uint64_t)seen * 2);
      cr_expect_eq(vecs[i * 2], (float)seen);
      cr_expect_str_eq(payloads[i], want);
    }
  cr_expect_eq(seen, 10);
  cli_reader_close(r, NULL);
  free(p);
}

Test(read_jsonl, invalid_json_names_the_line, .init = setup, .fini = teardown) {
  expect_error("{\"id\": 1, \"vector\": [1]}\n{\"id\": 2, \"vector\": [1,]}\n",
               "line 2: invalid JSON");
}

Test(read_jsonl, missing_vector_is_an_error, .init = setup, .fini = teardown) {
  expect_error("{\"id\": 1, \"payload\": {}}\n", "line 1: missing \"vector\"");
}

Test(read_jsonl, missing_id_is_an_error, .init = setup, .fini = teardown) {
  expect_error("{\"vector\": [1, 2]}\n", "line 1: missing \"id\"");
}

Test(read_jsonl, string_id_that_is_not_a_uuid_is_an_error, .init = setup,
     .fini = teardown) {
  expect_error("{\"id\": 1, \"vector\": [1]}\n{\"id\": \"17\", \"vector\": "
               "[1]}\n",
               "line 2: id \"17\" is not a UUID");
}

Test(read_jsonl, negative_id_is_an_error, .init = setup, .fini = teardown) {
  expect_error("{\"id\": -5, \"vector\": [1]}\n", "line 1: id -5 is negative");
}

Test(read_jsonl, fractional_id_is_an_error, .init = setup, .fini = teardown) {
  expect_error("{\"id\": 1.5, \"vector\": [1]}\n",
               "line 1: id is a real number");
}

Test(read_jsonl, vector_of_strings_is_an_error, .init = setup,
     .fini = teardown) {
  expect_error("{\"id\": 1, \"vector\": [\"0.1\", \"0.2\"]}\n",
               "line 1: vector[0] is a string: expected a number");
}

Test(read_jsonl, vector_that_is_not_an_array_is_an_error, .init = setup,
     .fini = teardown) {
  expect_error("{\"id\": 1, \"vector\": \"1,2\"}\n", "\"vector\" is a string");
}

Test(read_jsonl, empty_vector_is_an_error, .init = setup, .fini = teardown) {
  expect_error("{\"id\": 1, \"vector\": []}\n", "has 0 components");
}

Test(read_jsonl, changing_dimension_names_the_line, .init = setup,
     .fini = teardown) {
  expect_error("{\"id\": 1, \"vector\": [1, 2]}\n\n{\"id\": 2, \"vector\": "
               "[1, 2, 3]}\n",
               "line 3: \"vector\" has 3 components, but the first record "
               "has 2");
}

Test(read_jsonl, float32_overflow_is_an_error, .init = setup,
     .fini = teardown) {
  expect_error("{\"id\": 1, \"vector\": [1e39]}\n",
               "vector[0] = 1e+39 is out of float32 range");
}

Test(read_jsonl, payload_that_is_not_an_object_is_an_error, .init = setup,
     .fini = teardown) {
  expect_error("{\"id\": 1, \"vector\": [1], \"payload\": [1]}\n",
               "\"payload\" is an array: expected an object");
}

Test(read_jsonl, unknown_key_is_an_error, .init = setup, .fini = teardown) {
  expect_error("{\"id\": 1, \"vectr\": [1]}\n", "unknown key \"vectr\"");
}

Test(read_jsonl, duplicate_key_is_an_error, .init = setup, .fini = teardown) {
  expect_error("{\"id\": 1, \"id\": 2, \"vector\": [1]}\n",
               "line 1: invalid JSON");
}

Test(read_jsonl, line_that_is_not_an_object_is_an_error, .init = setup,
     .fini = teardown) {
  expect_error("[1, 2, 3]\n", "line 1: the line is an array");
}

Test(read_jsonl, id_beyond_int64_is_refused_not_wrapped, .init = setup,
     .fini = teardown) {
  expect_error("{\"id\": 18446744073709551615, \"vector\": [1]}\n",
               "line 1: invalid JSON");
}
