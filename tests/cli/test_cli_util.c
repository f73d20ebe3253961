/* test_cli_util.c: the command line's shared pieces (src/cli/cli_util.c):
 * flag parsing and its usage errors, number and vector parsing,
 * percentiles, recall, the progress line and float formatting. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_util.h"

/* A command with one flag of each kind. */
typedef struct fixture {
  const char *dir;
  uint32_t k;
  uint64_t big;
  cli_u32_list ef;
  bool json;
  cli_flag flags[5];
  cli_cmd_spec spec;
} fixture;

static void fixture_init(fixture *f) {
  memset(f, 0, sizeof *f);
  f->k = 10;
  cli_flag flags[5] = {
      {"data-dir", CLI_FLAG_STR, &f->dir, "DIR", "the dir", 0, 0, true, false},
      {"k", CLI_FLAG_U32, &f->k, "K", "results", 1, 1000, false, false},
      {"big", CLI_FLAG_U64, &f->big, "N", "a big one", 0, 0, false, false},
      {"ef", CLI_FLAG_U32_LIST, &f->ef, "LIST", "beams", 1, 0, false, false},
      {"json", CLI_FLAG_BOOL, &f->json, NULL, "json", 0, 0, false, false},
  };
  memcpy(f->flags, flags, sizeof flags);
  cli_cmd_spec spec = {"demo", "FILE", "A demo.", f->flags, 5, 0, 1};
  f->spec = spec;
}

/* Runs cli_parse on a NULL-terminated argument list; the messages it
 * printed land in *msg (caller frees). */
static int parse(fixture *f, char **msg, const char **pos, size_t *n_pos, ...) {
  char *argv[32];
  int argc = 0;
  va_list ap;
  va_start(ap, n_pos);
  argv[argc++] = "demo";
  for (char *a; (a = va_arg(ap, char *)) != NULL;) argv[argc++] = a;
  va_end(ap);
  size_t len;
  FILE *m = open_memstream(msg, &len);
  const char *dummy[1];
  size_t dn;
  int rc = cli_parse(&f->spec, argc, argv, pos ? pos : dummy,
                     n_pos ? n_pos : &dn, m, m);
  fclose(m);
  return rc;
}

Test(cli_flags, values_in_both_spellings_and_positional) {
  fixture f;
  fixture_init(&f);
  char *msg;
  const char *pos[1];
  size_t np = 9;
  cr_assert_eq(parse(&f, &msg, pos, &np, "--data-dir", "/d", "--k=25",
                     "file.fvecs", "--ef", "10,20,40", "--json", "--big",
                     "18446744073709551615", NULL),
               CLI_PARSE_OK, "%s", msg);
  cr_expect_str_eq(f.dir, "/d");
  cr_expect_eq(f.k, 25);
  cr_expect_eq(f.big, UINT64_MAX);
  cr_expect_eq(f.ef.n, 3);
  cr_expect_eq(f.ef.v[2], 40);
  cr_expect(f.json);
  cr_expect_eq(np, 1);
  cr_expect_str_eq(pos[0], "file.fvecs");
  cr_expect(cli_flag_seen(&f.spec, "k"));
  cr_expect(!cli_flag_seen(&f.spec, "nope"));
  free(msg);
}

Test(cli_flags, defaults_stay_when_flag_absent) {
  fixture f;
  fixture_init(&f);
  char *msg;
  cr_assert_eq(parse(&f, &msg, NULL, NULL, "--data-dir", "x", NULL),
               CLI_PARSE_OK);
  cr_expect_eq(f.k, 10);
  cr_expect(!cli_flag_seen(&f.spec, "k"));
  free(msg);
}

static void expect_usage_error(const char *needle, ...) {
  fixture f;
  fixture_init(&f);
  char *argv[16];
  int argc = 0;
  va_list ap;
  va_start(ap, needle);
  argv[argc++] = "demo";
  for (char *a; (a = va_arg(ap, char *)) != NULL;) argv[argc++] = a;
  va_end(ap);
  char *msg;
  size_t len;
  FILE *m = open_memstream(&msg, &len);
  const char *pos[1];
  size_t np;
  int rc = cli_parse(&f.spec, argc, argv, pos, &np, m, m);
  fclose(m);
  cr_expect_eq(rc, CLI_PARSE_ERR);
  cr_expect(strstr(msg, needle) != NULL, "message: %s\nexpected: %s", msg,
            needle);
  free(msg);
}

Test(cli_flags, unknown_flag_is_named) {
  expect_usage_error("unknown flag \"--bogus\"", "--data-dir", "d", "--bogus",
                     NULL);
}

Test(cli_flags, unknown_flag_with_value_is_named_without_value) {
  expect_usage_error("unknown flag \"--bogus\"", "--bogus=3", NULL);
}

Test(cli_flags, single_dash_flag_is_unknown) {
  expect_usage_error("unknown flag \"-k\"", "-k", "3", NULL);
}

Test(cli_flags, missing_value_names_the_flag) {
  expect_usage_error("--k needs a value", "--data-dir", "d", "--k", NULL);
}

Test(cli_flags, bad_number_names_the_flag) {
  expect_usage_error("--k: \"ten\" is not a non-negative integer", "--data-dir",
                     "d", "--k", "ten", NULL);
}

Test(cli_flags, negative_number_is_refused) {
  expect_usage_error("--k: \"-5\" is not", "--data-dir", "d", "--k", "-5",
                     NULL);
}

Test(cli_flags, trailing_garbage_is_refused) {
  expect_usage_error("--k: \"10x\"", "--data-dir", "d", "--k", "10x", NULL);
}

Test(cli_flags, out_of_range_names_the_bounds) {
  expect_usage_error("--k: 0 is out of range (1..1000)", "--data-dir", "d",
                     "--k", "0", NULL);
}

Test(cli_flags, overflow_is_refused) {
  expect_usage_error("--big: \"18446744073709551616\"", "--data-dir", "d",
                     "--big", "18446744073709551616", NULL);
}

Test(cli_flags, bad_list_is_refused) {
  expect_usage_error("--ef: \"10,,20\" is not a comma-separated list",
                     "--data-dir", "d", "--ef", "10,,20", NULL);
}

Test(cli_flags, list_item_out_of_range_is_refused) {
  expect_usage_error("--ef: 0 is out of range", "--data-dir", "d", "--ef",
                     "10,0", NULL);
}

Test(cli_flags, bool_with_value_is_refused) {
  expect_usage_error("--json takes no value", "--data-dir", "d", "--json=1",
                     NULL);
}

Test(cli_flags, required_flag_is_named) {
  expect_usage_error("--data-dir is required", "--k", "3", NULL);
}

Test(cli_flags, extra_positional_is_refused) {
  expect_usage_error("unexpected argument \"b\"", "--data-dir", "d", "a", "b",
                     NULL);
}

Test(cli_flags, help_lists_every_flag) {
  fixture f;
  fixture_init(&f);
  char *msg;
  cr_assert_eq(parse(&f, &msg, NULL, NULL, "--help", NULL), CLI_PARSE_HELP);
  cr_expect(strstr(msg, "usage: quiver demo [options] FILE") != NULL, "%s",
            msg);
  cr_expect(strstr(msg, "--data-dir DIR") != NULL, "%s", msg);
  cr_expect(strstr(msg, "(required)") != NULL, "%s", msg);
  cr_expect(strstr(msg, "--ef LIST") != NULL, "%s", msg);
  cr_expect(strstr(msg, "--json ") != NULL, "%s", msg);
  free(msg);
}

Test(cli_flags, double_dash_ends_flags) {
  fixture f;
  fixture_init(&f);
  char *msg;
  const char *pos[1];
  size_t np;
  cr_assert_eq(parse(&f, &msg, pos, &np, "--data-dir", "d", "--", "--k", NULL),
               CLI_PARSE_OK, "%s", msg);
  cr_expect_str_eq(pos[0], "--k");
  free(msg);
}

Test(cli_numbers, floats_in_several_spellings) {
  float *v = NULL;
  size_t n = 0;
  qv_err e = {0};
  cr_assert_eq(cli_parse_floats("0.1,0.2,-3e2", &v, &n, &e), QV_OK, "%s",
               e.msg);
  cr_assert_eq(n, 3);
  cr_expect_eq(v[0], 0.1f);
  cr_expect_eq(v[2], -300.0f);
  free(v);
  cr_assert_eq(cli_parse_floats(" [1, 2 ,3] ", &v, &n, &e), QV_OK, "%s", e.msg);
  cr_expect_eq(n, 3);
  cr_expect_eq(v[1], 2.0f);
  free(v);
}

Test(cli_numbers, malformed_vectors_are_refused) {
  const char *bad[] = {"", "1,,2", "1,abc", "[1,2", "1 2", "1e40", "[1]x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    float *v = NULL;
    size_t n = 0;
    qv_err e = {0};
    cr_expect_eq(cli_parse_floats(bad[i], &v, &n, &e), QV_EINVAL,
                 "accepted \"%s\"", bad[i]);
    cr_expect_neq(e.msg[0], 0, "no message for \"%s\"", bad[i]);
  }
}

Test(cli_numbers, u64_parsing_is_strict) {
  uint64_t v;
  cr_expect(cli_parse_u64("0", &v) && v == 0);
  cr_expect(cli_parse_u64("007", &v) && v == 7);
  cr_expect(!cli_parse_u64("", &v));
  cr_expect(!cli_parse_u64("+1", &v));
  cr_expect(!cli_parse_u64(" 1", &v));
  cr_expect(!cli_parse_u64("1.0", &v));
}

Test(cli_numbers, float_format_is_shortest_exact) {
  char b[32];
  cr_expect_str_eq(cli_fmt_float(0.1f, b), "0.1");
  cr_expect_str_eq(cli_fmt_float(1234567.0f, b), "1234567");
  cr_expect_str_eq(cli_fmt_float(0.0f, b), "0");
  float x = 0.123456789f;
  cr_expect_eq(strtof(cli_fmt_float(x, b), NULL), x);
}

Test(cli_stats, percentiles_interpolate_between_ranks) {
  double v[100];
  for (int i = 0; i < 100; i++) v[i] = i + 1;
  cr_expect_float_eq(cli_percentile_sorted(v, 100, 50), 50.5, 1e-9);
  cr_expect_float_eq(cli_percentile_sorted(v, 100, 99), 99.01, 1e-9);
  cr_expect_float_eq(cli_percentile_sorted(v, 100, 0), 1.0, 1e-12);
  cr_expect_float_eq(cli_percentile_sorted(v, 100, 100), 100.0, 1e-12);
  double one = 4.5;
  cr_expect_float_eq(cli_percentile_sorted(&one, 1, 99), 4.5, 1e-12);
  cr_expect_eq(cli_percentile_sorted(NULL, 0, 50), 0.0);
}

Test(cli_stats, median_sorts_its_input) {
  double v[5] = {9, 1, 7, 3, 5};
  cr_expect_float_eq(cli_median(v, 5), 5.0, 1e-12);
  cr_expect_eq(v[0], 1.0);
  cr_expect_eq(v[4], 9.0);
  double w[4] = {4, 1, 3, 2};
  cr_expect_float_eq(cli_median(w, 4), 2.5, 1e-12);
}

Test(cli_stats, recall_counts_truth_found_in_hits) {
  qv_point_id truth[4], got[5];
  for (int i = 0; i < 4; i++) truth[i] = qv_id_num((uint64_t)i * 10);
  got[0] = qv_id_num(30);
  got[1] = qv_id_num(5);
  got[2] = qv_id_num(0);
  got[3] = qv_id_num(20);
  got[4] = qv_id_num(10);
  /* recall@4 over 5 hits: all four truths present */
  cr_expect_float_eq(cli_recall(got, 5, truth, 4), 1.0, 1e-12);
  /* only the first 3 hits: 30, 0 of {0,10,20,30} */
  cr_expect_float_eq(cli_recall(got, 3, truth, 4), 0.5, 1e-12);
  cr_expect_float_eq(cli_recall(got, 0, truth, 4), 0.0, 1e-12);
  cr_expect_float_eq(cli_recall(got, 0, truth, 0), 1.0, 1e-12);
  qv_point_id u = {.is_uuid = true};
  u.uuid[15] = 30; /* a UUID never equals the integer 30 */
  cr_expect_float_eq(cli_recall(&u, 1, &truth[3], 1), 0.0, 1e-12);
}

Test(cli_progress, line_shows_counts_rate_and_eta) {
  char b[200];
  cli_progress_format(b, sizeof b, 250, 1000, 2.0, "points", false);
  cr_expect_str_eq(b, "250/1000 points (25%), 125 points/s, ETA 6 s");
  cli_progress_format(b, sizeof b, 500, 1000, 1.0, "points", true);
  cr_expect(strstr(b, "[###############...............]") == b, "%s", b);
  cr_expect(strstr(b, " 50% 500/1000 points") != NULL, "%s", b);
  cli_progress_format(b, sizeof b, 42, 0, 2.0, "points", true);
  cr_expect_str_eq(b, "42 points, 21 points/s, 2.0 s");
}

Test(cli_progress, plain_mode_prints_periodic_lines) {
  char *text;
  size_t len;
  FILE *m = open_memstream(&text, &len);
  cli_progress p;
  cli_progress_init(&p, m, 100, "points");
  cr_expect(!p.is_tty);
  p.plain_every = 0; /* every update prints */
  cli_progress_update(&p, 10);
  cli_progress_update(&p, 20);
  cli_progress_finish(&p);
  fclose(m);
  cr_expect(strstr(text, "progress: 10/100 points") != NULL, "%s", text);
  cr_expect(strstr(text, "progress: 20/100 points") != NULL, "%s", text);
  cr_expect(strchr(text, '\r') == NULL, "a plain stream got a redraw: %s",
            text);
  free(text);
}
