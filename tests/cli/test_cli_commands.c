/* test_cli_commands.c: the `quiver` subcommands end to end over the real
 * library: import a small generated data set, then search, info and bench
 * it, checking what they print and their exit codes. The commands are
 * called as functions (src/cli/cli.h) with their output captured; the last
 * tests run the built binary ($QV_CLI, set by ctest) for the exit codes of
 * main(). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cli/cli.h"
#include "testutil.h"

#define N 600
#define DIM 16
#define SEED 7

static char *g_dir;
static char g_data[4096], g_base[4096], g_queries[4096], g_gt[4096];
static float *g_vecs;

static void setup(void) {
  g_dir = tu_tmpdir("clicmd");
  cr_assert_not_null(g_dir);
  snprintf(g_data, sizeof g_data, "%s/db", g_dir);
  snprintf(g_base, sizeof g_base, "%s/base.fvecs", g_dir);
  snprintf(g_queries, sizeof g_queries, "%s/q.fvecs", g_dir);
  snprintf(g_gt, sizeof g_gt, "%s/gt.ivecs", g_dir);
  g_vecs = tu_random_vectors(N, DIM, SEED);
  cr_assert(tu_write_fvecs(g_base, g_vecs, N, DIM));
  float *q = tu_random_vectors(40, DIM, SEED + 1);
  cr_assert(tu_write_fvecs(g_queries, q, 40, DIM));
  /* exact ground truth, 10 per query, as .ivecs */
  FILE *f = fopen(g_gt, "wb");
  for (size_t i = 0; i < 40; i++) {
    uint32_t nn[10];
    tu_exact_knn_l2(g_vecs, N, DIM, q + i * DIM, 10, nn);
    int32_t rec[11] = {10};
    for (int j = 0; j < 10; j++) rec[j + 1] = (int32_t)nn[j];
    fwrite(rec, 4, 11, f);
  }
  fclose(f);
  free(q);
}

static void teardown(void) {
  free(g_vecs);
  tu_rmdir(g_dir);
}

typedef struct run_result {
  int status;
  char *out, *err;
} run_result;

/* Calls cmd(argv...) with captured output; the list ends with NULL. */
static run_result run(int (*cmd)(int, char **, FILE *, FILE *), ...) {
  char *argv[64];
  int argc = 0;
  va_list ap;
  va_start(ap, cmd);
  for (char *a; (a = va_arg(ap, char *)) != NULL;) argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  run_result r;
  size_t lo, le;
  FILE *out = open_memstream(&r.out, &lo);
  FILE *err = open_memstream(&r.err, &le);
  r.status = cmd(argc, argv, out, err);
  fclose(out);
  fclose(err);
  return r;
}

static void run_free(run_result *r) {
  free(r->out);
  free(r->err);
}

/* Imports base.fvecs with HNSW forced on (full scan threshold 0). */
static void import_base(void) {
  run_result r = run(cmd_import, "import", "--data-dir", g_data, "--collection",
                     "c", "--distance", "Euclid", "--m", "8", "--ef-construct",
                     "64", "--full-scan-threshold", "0", g_base, NULL);
  cr_assert_eq(r.status, 0, "import failed: %s", r.err);
  cr_assert(strstr(r.out, "imported 600 points (16-d) in ") == r.out, "%s",
            r.out);
  cr_assert(strstr(r.out, "points/s; indexed in ") != NULL, "%s", r.out);
  run_free(&r);
}

static char *vector_arg(size_t row) {
  static char buf[1024];
  size_t off = 0;
  for (size_t j = 0; j < DIM; j++)
    off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%.9g", j ? "," : "",
                            (double)g_vecs[row * DIM + j]);
  return buf;
}

Test(cli_commands, searched_vector_finds_its_own_id_first, .init = setup,
     .fini = teardown) {
  import_base();
  run_result r = run(cmd_search, "search", "--data-dir", g_data, "--collection",
                     "c", "--k", "3", "--vector", vector_arg(123), NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  cr_expect(strncmp(r.out, "123\t0\n", 6) == 0, "output:\n%s", r.out);
  int lines = 0;
  for (char *p = r.out; *p; p++) lines += *p == '\n';
  cr_expect_eq(lines, 3, "output:\n%s", r.out);
  run_free(&r);
}

Test(cli_commands, search_from_query_file_prints_json, .init = setup,
     .fini = teardown) {
  import_base();
  run_result r = run(cmd_search, "search", "--data-dir", g_data, "--collection",
                     "c", "--k", "5", "--exact", "--json", "--query-file",
                     g_base, "--query-index", "77", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  json_error_t je;
  json_t *j = json_loads(r.out, 0, &je);
  cr_assert_not_null(j, "not JSON: %s (%s)", r.out, je.text);
  cr_assert(json_is_array(j));
  cr_expect_eq(json_array_size(j), 5);
  json_t *first = json_array_get(j, 0);
  cr_expect_eq(json_integer_value(json_object_get(first, "id")), 77);
  cr_expect_eq(json_number_value(json_object_get(first, "score")), 0.0);
  /* scores ascend (Euclid is a distance) */
  for (size_t i = 1; i < 5; i++)
    cr_expect_geq(
        json_number_value(json_object_get(json_array_get(j, i), "score")),
        json_number_value(json_object_get(json_array_get(j, i - 1), "score")));
  json_decref(j);
  run_free(&r);
}

/* Parses bench --json output: one object a line. */
static size_t parse_lines(char *text, json_t **objs, size_t cap) {
  size_t n = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    cr_assert_not_null(j, "line is not JSON: %s (%s)", line, je.text);
    cr_assert_lt(n, cap);
    objs[n++] = j;
  }
  return n;
}

Test(cli_commands, bench_json_lines_parse_and_exact_recall_is_one,
     .init = setup, .fini = teardown) {
  import_base();
  run_result r = run(cmd_bench, "bench", "--data-dir", g_data, "--collection",
                     "c", "--queries", g_queries, "--k", "10", "--ef", "16,64",
                     "--threads", "1,2", "--repeat", "2", "--min-pass-ms", "0",
                     "--exact", "--json", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  json_t *o[16];
  size_t n = parse_lines(r.out, o, 16);
  cr_assert_eq(n, 2 * 2 + 2 + 1, "lines: %zu", n);
  for (size_t i = 0; i < 6; i++) {
    const char *mode = json_string_value(json_object_get(o[i], "mode"));
    double recall = json_number_value(json_object_get(o[i], "recall"));
    cr_assert_not_null(mode);
    cr_expect(json_number_value(json_object_get(o[i], "qps")) > 0);
    cr_expect(json_number_value(json_object_get(o[i], "p50_ms")) <=
              json_number_value(json_object_get(o[i], "p99_ms")));
    cr_expect_eq(json_integer_value(json_object_get(o[i], "queries")), 40);
    if (strcmp(mode, "exact") == 0) {
      cr_expect_eq(recall, 1.0, "exact recall %g", recall);
      cr_expect(json_is_null(json_object_get(o[i], "ef")));
      cr_expect(json_number_value(json_object_get(o[i], "scan_gbps")) > 0);
    } else {
      cr_expect(recall >= 0 && recall <= 1);
    }
  }
  /* the ef=64 rows: HNSW on 600 points with a 64-wide beam is near exact */
  cr_expect_eq(json_integer_value(json_object_get(o[2], "ef")), 64);
  cr_expect_geq(json_number_value(json_object_get(o[2], "recall")), 0.9);
  cr_expect_eq(json_integer_value(json_object_get(o[3], "threads")), 2);
  json_t *s = o[6];
  cr_expect(json_is_true(json_object_get(s, "summary")));
  cr_expect_eq(json_integer_value(json_object_get(s, "points")), N);
  cr_expect_eq(json_integer_value(json_object_get(s, "dim")), DIM);
  cr_expect_eq(json_integer_value(json_object_get(s, "vector_bytes")) +
                   json_integer_value(json_object_get(s, "graph_bytes")),
               json_integer_value(json_object_get(s, "index_bytes")));
  cr_expect_gt(json_integer_value(json_object_get(s, "graph_bytes")), 0);
  cr_expect_not_null(json_string_value(json_object_get(s, "isa")));
  for (size_t i = 0; i < n; i++) json_decref(o[i]);
  run_free(&r);
}

Test(cli_commands, bench_against_gt_file_gives_exact_recall_one, .init = setup,
     .fini = teardown) {
  import_base();
  run_result r =
      run(cmd_bench, "bench", "--data-dir", g_data, "--collection", "c",
          "--queries", g_queries, "--gt", g_gt, "--ef", "32", "--repeat", "1",
          "--min-pass-ms", "0", "--exact", "--json", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  json_t *o[8];
  size_t n = parse_lines(r.out, o, 8);
  cr_assert_eq(n, 3);
  cr_expect_str_eq(json_string_value(json_object_get(o[1], "mode")), "exact");
  cr_expect_eq(json_number_value(json_object_get(o[1], "recall")), 1.0);
  cr_expect_str_eq(json_string_value(json_object_get(o[2], "truth")), g_gt);
  for (size_t i = 0; i < n; i++) json_decref(o[i]);
  run_free(&r);
}

Test(cli_commands, bench_table_has_a_row_per_setting, .init = setup,
     .fini = teardown) {
  import_base();
  run_result r = run(cmd_bench, "bench", "--data-dir", g_data, "--collection",
                     "c", "--queries", g_queries, "--ef", "8,16,32", "--repeat",
                     "1", "--min-pass-ms", "0", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  cr_expect(strstr(r.out, "mode") == r.out, "%s", r.out);
  int rows = 0;
  for (char *p = strstr(r.out, "\nhnsw"); p; p = strstr(p + 1, "\nhnsw"))
    rows++;
  cr_expect_eq(rows, 3, "%s", r.out);
  cr_expect(strstr(r.out, "600 points, 16-d, Euclid") != NULL, "%s", r.out);
  run_free(&r);
}

Test(cli_commands, info_reports_counts_as_json_and_text, .init = setup,
     .fini = teardown) {
  import_base();
  run_result r = run(cmd_info, "info", "--data-dir", g_data, "--collection",
                     "c", "--json", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  json_t *j = json_loads(r.out, 0, NULL);
  cr_assert_not_null(j, "%s", r.out);
  cr_expect_eq(json_integer_value(json_object_get(j, "points_count")), N);
  json_t *cfg = json_object_get(j, "config");
  cr_expect_eq(json_integer_value(json_object_get(cfg, "dim")), DIM);
  cr_expect_eq(json_integer_value(json_object_get(cfg, "hnsw_m")), 8);
  cr_expect_str_eq(json_string_value(json_object_get(cfg, "distance")),
                   "Euclid");
  json_decref(j);
  run_free(&r);
  r = run(cmd_info, "info", "--data-dir", g_data, NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  cr_expect_str_eq(r.out, "c\t600 points\t16-d\tEuclid\n");
  run_free(&r);
}

Test(cli_commands, reimport_with_other_dim_is_refused, .init = setup,
     .fini = teardown) {
  import_base();
  char other[4200];
  snprintf(other, sizeof other, "%s/other.fvecs", g_dir);
  cr_assert(tu_write_fvecs(other, g_vecs, 10, 8));
  run_result r = run(cmd_import, "import", "--data-dir", g_data, "--collection",
                     "c", "--distance", "Euclid", other, NULL);
  cr_expect_eq(r.status, 1);
  cr_expect(strstr(r.err, "exists with 16-d vectors and distance Euclid") !=
                NULL,
            "%s", r.err);
  cr_expect(strstr(r.err, "has 8-d vectors") != NULL, "%s", r.err);
  run_free(&r);
}

Test(cli_commands, reimport_with_other_distance_is_refused, .init = setup,
     .fini = teardown) {
  import_base();
  run_result r = run(cmd_import, "import", "--data-dir", g_data, "--collection",
                     "c", "--distance", "Cosine", g_base, NULL);
  cr_expect_eq(r.status, 1);
  cr_expect(strstr(r.err, "--distance Cosine") != NULL, "%s", r.err);
  run_free(&r);
}

Test(cli_commands, nan_in_a_row_is_reported_with_the_row, .init = setup,
     .fini = teardown) {
  g_vecs[5 * DIM + 3] = NAN;
  cr_assert(tu_write_fvecs(g_base, g_vecs, N, DIM));
  run_result r = run(cmd_import, "import", "--data-dir", g_data, "--collection",
                     "c", "--distance", "Dot", g_base, NULL);
  cr_expect_eq(r.status, 1);
  cr_expect(strstr(r.err, "row 5 (id 5): vector[3] is NaN") != NULL, "%s",
            r.err);
  run_free(&r);
}

static char *write_jsonl(const char *name, const char *text) {
  static char p[4200];
  snprintf(p, sizeof p, "%s/%s", g_dir, name);
  FILE *f = fopen(p, "w");
  fputs(text, f);
  fclose(f);
  return p;
}

Test(cli_commands, jsonl_import_keeps_uuid_ids_and_payloads, .init = setup,
     .fini = teardown) {
  const char *p = write_jsonl(
      "p.jsonl",
      "{\"id\": \"3f2504e0-4f89-11d3-9a0c-0305e82c3301\", \"vector\": [1, 0], "
      "\"payload\": {\"color\": \"red\"}}\n"
      "{\"id\": 42, \"vector\": [0, 1], \"payload\": {\"color\": \"blue\"}}\n");
  run_result r = run(cmd_import, "import", "--data-dir", g_data, "--collection",
                     "j", "--distance", "Cosine", p, NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  cr_expect(strstr(r.out, "imported 2 points (2-d)") == r.out, "%s", r.out);
  run_free(&r);
  r = run(cmd_search, "search", "--data-dir", g_data, "--collection", "j",
          "--vector", "[0.9, 0.1]", "--k", "2", "--with-payload", "--json",
          NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  json_t *j = json_loads(r.out, 0, NULL);
  cr_assert_not_null(j, "%s", r.out);
  json_t *first = json_array_get(j, 0);
  cr_expect_str_eq(json_string_value(json_object_get(first, "id")),
                   "3f2504e0-4f89-11d3-9a0c-0305e82c3301");
  cr_expect_str_eq(json_string_value(json_object_get(
                       json_object_get(first, "payload"), "color")),
                   "red");
  cr_expect_eq(json_integer_value(json_object_get(json_array_get(j, 1), "id")),
               42);
  json_decref(j);
  run_free(&r);
}

Test(cli_commands, bad_jsonl_line_fails_naming_the_line, .init = setup,
     .fini = teardown) {
  const char *p =
      write_jsonl("bad.jsonl", "{\"id\": 1, \"vector\": [1, 0]}\n"
                               "{\"id\": 2, \"vector\": [1, \"x\"]}\n");
  run_result r = run(cmd_import, "import", "--data-dir", g_data, "--collection",
                     "j", "--distance", "Cosine", p, NULL);
  cr_expect_eq(r.status, 1);
  cr_expect(strstr(r.err, "line 2: vector[1] is a string") != NULL, "%s",
            r.err);
  run_free(&r);
}

Test(cli_commands, missing_distance_for_a_new_collection_is_usage,
     .init = setup, .fini = teardown) {
  run_result r = run(cmd_import, "import", "--data-dir", g_data, "--collection",
                     "new", g_base, NULL);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "--distance is required") != NULL, "%s", r.err);
  run_free(&r);
}

Test(cli_commands, usage_errors_exit_2_naming_the_flag, .init = setup,
     .fini = teardown) {
  run_result r = run(cmd_import, "import", "--data-dir", g_data, "--collection",
                     "c", "--m", "1000", g_base, NULL);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "--m: 1000 is out of range") != NULL, "%s", r.err);
  run_free(&r);
  r = run(cmd_bench, "bench", "--data-dir", g_data, "--collection", "c",
          "--queries", g_queries, "--ef", "ten", NULL);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "--ef") != NULL, "%s", r.err);
  run_free(&r);
  r = run(cmd_search, "search", "--data-dir", g_data, "--collection", "c",
          NULL);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "--vector") != NULL, "%s", r.err);
  run_free(&r);
  r = run(cmd_info, "info", "--data-dir", g_data, "--frobnicate", NULL);
  cr_expect_eq(r.status, 2);
  cr_expect(strstr(r.err, "--frobnicate") != NULL, "%s", r.err);
  run_free(&r);
}

Test(cli_commands, read_commands_do_not_create_a_data_dir, .init = setup,
     .fini = teardown) {
  run_result r = run(cmd_info, "info", "--data-dir", g_data, NULL);
  cr_expect_eq(r.status, 1);
  cr_expect(access(g_data, F_OK) != 0, "info created %s", g_data);
  run_free(&r);
}

/* ---- the binary ---------------------------------------------------------- */

static int run_binary(const char *args, char *out, size_t cap) {
  const char *cli = getenv("QV_CLI");
  if (cli == NULL || access(cli, X_OK) != 0) return -1;
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", cli, args);
  FILE *p = popen(cmd, "r");
  size_t n = fread(out, 1, cap - 1, p);
  out[n] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -2;
}

Test(cli_binary, version_help_and_exit_codes) {
  char out[8192];
  int rc = run_binary("--version", out, sizeof out);
  if (rc == -1) cr_skip_test("QV_CLI is not set or not built");
  cr_expect_eq(rc, 0);
  cr_expect_str_eq(out, "quiver " QV_VERSION_STRING "\n");
  cr_expect_eq(run_binary("--help", out, sizeof out), 0);
  cr_expect(strstr(out, "bench") != NULL, "%s", out);
  cr_expect_eq(run_binary("bench --help", out, sizeof out), 0);
  cr_expect(strstr(out, "--gt FILE") != NULL, "%s", out);
  cr_expect_eq(run_binary("frobnicate", out, sizeof out), 2);
  cr_expect(strstr(out, "unknown command \"frobnicate\"") != NULL, "%s", out);
  cr_expect_eq(run_binary("--bogus", out, sizeof out), 2);
  cr_expect_eq(run_binary("import --collection", out, sizeof out), 2);
  cr_expect(strstr(out, "--collection needs a value") != NULL, "%s", out);
  cr_expect_eq(run_binary("", out, sizeof out), 2);
}
