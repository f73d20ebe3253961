/* test_cli_quant.c: the storage and quantized-search flags of the command
 * line — `quiver import --datatype/--quantization/--pq-ratio/--bq-bits/
 * --index/--nlist/--on-disk-vectors` and `quiver bench --oversampling/
 * --rescore/--nprobe` — and the flag kinds behind them (CLI_FLAG_CHOICE,
 * CLI_FLAG_F64, CLI_FLAG_TRUTH).
 *
 * Bad values and meaningless combinations must be usage errors (exit 2)
 * whose message names the flag; good ones must reach the library (the
 * collection's stored qv_storage_params) and the bench output (the row
 * fields and the summary's byte split, index_bytes = vector + code + graph
 * bytes). Data: 800 seeded random 16-d vectors, written as .fvecs. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_util.h"
#include "testutil.h"

#define N 800
#define DIM 16
#define SEED 11

static char *g_dir;
static char g_data[4096], g_base[4096], g_queries[4096];

static void setup(void) {
  g_dir = tu_tmpdir("cliquant");
  cr_assert_not_null(g_dir);
  snprintf(g_data, sizeof g_data, "%s/db", g_dir);
  snprintf(g_base, sizeof g_base, "%s/base.fvecs", g_dir);
  snprintf(g_queries, sizeof g_queries, "%s/q.fvecs", g_dir);
  float *v = tu_random_vectors(N, DIM, SEED);
  cr_assert(tu_write_fvecs(g_base, v, N, DIM));
  cr_assert(tu_write_fvecs(g_queries, v, 30, DIM)); /* stored vectors as queries */
  free(v);
}

static void teardown(void) { tu_rmdir(g_dir); }

typedef struct run_result {
  int status;
  char *out, *err;
} run_result;

/* Calls cmd with the NULL-terminated argv `args`, output captured. */
static run_result run_argv(int (*cmd)(int, char **, FILE *, FILE *), char **args) {
  int argc = 0;
  while (args[argc]) argc++;
  run_result r;
  size_t lo, le;
  FILE *out = open_memstream(&r.out, &lo);
  FILE *err = open_memstream(&r.err, &le);
  r.status = cmd(argc, args, out, err);
  fclose(out);
  fclose(err);
  return r;
}

static void run_free(run_result *r) {
  free(r->out);
  free(r->err);
}

/* `quiver import` of base.fvecs into collection `name` with extra flags
 * (NULL-terminated). */
static run_result import_with(const char *name, ...) {
  char *argv[64] = {"import", "--data-dir", g_data, "--collection", (char *)name,
                    "--distance", "Euclid", "--full-scan-threshold", "0"};
  int argc = 9;
  va_list ap;
  va_start(ap, name);
  for (char *a; (a = va_arg(ap, char *)) != NULL;) argv[argc++] = a;
  va_end(ap);
  argv[argc++] = g_base;
  argv[argc] = NULL;
  return run_argv(cmd_import, argv);
}

static run_result bench_with(const char *name, ...) {
  char *argv[64] = {"bench", "--data-dir", g_data, "--collection", (char *)name,
                    "--queries", g_queries, "--repeat", "1", "--min-pass-ms", "0", "--json"};
  int argc = 12;
  va_list ap;
  va_start(ap, name);
  for (char *a; (a = va_arg(ap, char *)) != NULL;) argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  return run_argv(cmd_bench, argv);
}

/* The stored storage parameters of collection `name`. */
static qv_storage_params stored(const char *name) {
  qv_db *db = NULL;
  qv_collection *c = NULL;
  qv_open_opts oo;
  qv_open_opts_init(&oo);
  oo.create = false;
  oo.background_optimizer = false;
  cr_assert_eq(qv_open(g_data, &oo, &db, NULL), QV_OK);
  cr_assert_eq(qv_collection_get(db, name, &c, NULL), QV_OK);
  qv_collection_info in;
  cr_assert_eq(qv_collection_info_get(c, &in, NULL), QV_OK);
  qv_collection_release(c);
  qv_close(db);
  return in.config.storage;
}

/* ---- usage errors ------------------------------------------------------------------ */

typedef struct bad_case {
  const char *flag, *value, *flag2, *value2; /* flag2 may be NULL */
  const char *says;                           /* expected in the message */
} bad_case;

Test(cli_quant, import_refuses_bad_storage_flags_with_exit_2, .init = setup, .fini = teardown) {
  static const bad_case cases[] = {
      {"--datatype", "float64", NULL, NULL, "--datatype: \"float64\" is not one of float32, "
                                            "float16 or uint8"},
      {"--quantization", "int4", NULL, NULL, "--quantization: \"int4\" is not one of"},
      {"--quantization", "scalar", NULL, NULL, "--quantization"},
      {"--pq-ratio", "12", "--quantization", "pq", "--pq-ratio: \"12\" is not one of 4, 8, 16, "
                                                   "32 or 64"},
      {"--bq-bits", "3", "--quantization", "binary", "--bq-bits"},
      {"--index", "ivf", NULL, NULL, "--index: \"ivf\" is not one of hnsw, ivf-flat or ivf-pq"},
      {"--nlist", "0", "--index", "ivf-flat", "--nlist: 0 is out of range"},
      {"--nlist", "many", "--index", "ivf-flat", "--nlist"},
      {"--pq-ratio", "16", NULL, NULL, "--pq-ratio needs --quantization pq or --index ivf-pq"},
      {"--bq-bits", "2", "--quantization", "int8", "--bq-bits needs --quantization binary"},
      {"--nlist", "64", NULL, NULL, "--nlist needs --index ivf-flat or ivf-pq"},
      {"--quantization", "int8", "--index", "ivf-pq", "cannot be combined with --index ivf-pq"},
      {"--quantization", "binary", "--index", "ivf-flat", "cannot be combined"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const bad_case *b = &cases[i];
    run_result r = b->flag2 ? import_with("bad", b->flag, b->value, b->flag2, b->value2, NULL)
                            : import_with("bad", b->flag, b->value, NULL);
    cr_expect_eq(r.status, CLI_EXIT_USAGE, "case %zu (%s %s): status %d, %s", i, b->flag,
                 b->value, r.status, r.err);
    cr_expect(strstr(r.err, b->says) != NULL, "case %zu: message %s", i, r.err);
    run_free(&r);
  }
  /* nothing was created by a refused command */
  cr_expect_eq(access(g_data, F_OK), -1);
}

Test(cli_quant, bench_refuses_bad_search_flags_with_exit_2, .init = setup, .fini = teardown) {
  run_result r = import_with("c", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_free(&r);
  static const char *const cases[][3] = {
      {"--oversampling", "0.5", "--oversampling: 0.5 is out of range (1..1000)"},
      {"--oversampling", "2x", "--oversampling: \"2x\" is not a number"},
      {"--oversampling", "nan", "--oversampling: \"nan\" is not a number"},
      {"--oversampling", "5000", "out of range"},
      {"--rescore", "yes", "--rescore: \"yes\" is not true or false"},
      {"--rescore", "1", "--rescore"},
      {"--nprobe", "0", "--nprobe: 0 is out of range"},
      {"--nprobe", "4,,8", "--nprobe"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    r = bench_with("c", cases[i][0], cases[i][1], NULL);
    cr_expect_eq(r.status, CLI_EXIT_USAGE, "case %zu: status %d, %s", i, r.status, r.err);
    cr_expect(strstr(r.err, cases[i][2]) != NULL, "case %zu: message %s", i, r.err);
    run_free(&r);
  }
}

/* ---- flags reach the library ---------------------------------------------------------- */

Test(cli_quant, resolve_maps_flags_to_storage_params) {
  cli_storage_flags f;
  qv_storage_params s;
  cli_storage_flags_init(&f);
  cr_assert(cli_storage_resolve("t", &f, &s, stderr));
  cr_expect_eq(s.quantization, QV_QUANT_NONE);
  cr_expect_eq(s.index, QV_VINDEX_HNSW);
  cr_expect_not(cli_storage_given(&f));

  f.datatype = 1;     /* float16 */
  f.quantization = 2; /* binary */
  f.bq_bits = 1;      /* "2" */
  f.on_disk = true;
  cr_assert(cli_storage_resolve("t", &f, &s, stderr));
  cr_expect_eq(s.datatype, QV_DATATYPE_FLOAT16);
  cr_expect_eq(s.quantization, QV_QUANT_BINARY);
  cr_expect_eq(s.bq_bits, 2);
  cr_expect(s.on_disk);
  cr_expect(cli_storage_given(&f));

  cli_storage_flags_init(&f);
  f.index = 2;    /* ivf-pq */
  f.pq_ratio = 3; /* x32 */
  f.nlist = 50;
  cr_assert(cli_storage_resolve("t", &f, &s, stderr));
  cr_expect_eq(s.index, QV_VINDEX_IVF_PQ);
  cr_expect_eq(s.quantization, QV_QUANT_NONE);
  cr_expect_eq(s.pq_ratio, 32);
  cr_expect_eq(s.ivf_nlist, 50);
}

Test(cli_quant, import_stores_int8_codes_with_vectors_on_disk, .init = setup, .fini = teardown) {
  run_result r = import_with("q8", "--quantization", "int8", "--on-disk-vectors", "--datatype",
                             "float16", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_free(&r);
  qv_storage_params s = stored("q8");
  cr_expect_eq(s.quantization, QV_QUANT_SCALAR);
  cr_expect_eq(s.datatype, QV_DATATYPE_FLOAT16);
  cr_expect(s.on_disk);
  cr_expect_eq(s.index, QV_VINDEX_HNSW);
}

Test(cli_quant, import_stores_ivf_pq_with_ratio_and_nlist, .init = setup, .fini = teardown) {
  run_result r = import_with("ivfpq", "--index", "ivf-pq", "--pq-ratio", "8", "--nlist", "16",
                             NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_free(&r);
  qv_storage_params s = stored("ivfpq");
  cr_expect_eq(s.index, QV_VINDEX_IVF_PQ);
  cr_expect_eq(s.pq_ratio, 8);
  cr_expect_eq(s.ivf_nlist, 16);
  cr_expect_eq(s.quantization, QV_QUANT_NONE);
}

Test(cli_quant, import_into_existing_collection_keeps_storage_and_says_so, .init = setup,
     .fini = teardown) {
  run_result r = import_with("keep", "--quantization", "binary", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_free(&r);
  r = import_with("keep", "--quantization", "pq", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  cr_expect(strstr(r.err, "its storage (float32, 1-bit binary codes, hnsw) is kept") != NULL,
            "%s", r.err);
  run_free(&r);
  cr_expect_eq(stored("keep").quantization, QV_QUANT_BINARY);
}

/* One bench --json output split into lines (at most cap). */
static size_t parse_lines(char *text, json_t **o, size_t cap) {
  size_t n = 0;
  for (char *line = strtok(text, "\n"); line && n < cap; line = strtok(NULL, "\n")) {
    o[n] = json_loads(line, 0, NULL);
    cr_assert_not_null(o[n], "not JSON: %s", line);
    n++;
  }
  return n;
}

Test(cli_quant, bench_rows_carry_quant_settings_and_summary_splits_bytes, .init = setup,
     .fini = teardown) {
  run_result r = import_with("q", "--quantization", "int8", "--on-disk-vectors", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_free(&r);
  r = bench_with("q", "--ef", "64", "--nprobe", "2,4", "--oversampling", "3", "--rescore", "true",
                 NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  json_t *o[8];
  size_t n = parse_lines(r.out, o, 8);
  cr_assert_eq(n, 3, "one row per nprobe, then the summary");
  for (size_t i = 0; i < 2; i++) {
    cr_expect_str_eq(json_string_value(json_object_get(o[i], "mode")), "hnsw");
    cr_expect_eq(json_integer_value(json_object_get(o[i], "ef")), 64);
    cr_expect_eq(json_integer_value(json_object_get(o[i], "nprobe")), i ? 4 : 2);
    cr_expect_eq(json_real_value(json_object_get(o[i], "oversampling")), 3.0);
    cr_expect(json_is_true(json_object_get(o[i], "rescore")));
    /* stored vectors as queries, rescored: each finds itself among 10 */
    cr_expect_geq(json_number_value(json_object_get(o[i], "recall")), 0.9);
  }
  json_t *s = o[2];
  cr_assert(json_is_true(json_object_get(s, "summary")));
  json_int_t vb = json_integer_value(json_object_get(s, "vector_bytes"));
  json_int_t cb = json_integer_value(json_object_get(s, "code_bytes"));
  json_int_t gb = json_integer_value(json_object_get(s, "graph_bytes"));
  json_int_t db = json_integer_value(json_object_get(s, "vector_disk_bytes"));
  cr_expect_eq(vb + cb + gb, json_integer_value(json_object_get(s, "index_bytes")));
  /* int8 codes: about one byte a dimension; full vectors only on disk */
  cr_expect_geq(cb, (json_int_t)N * DIM);
  cr_expect_lt(cb, (json_int_t)N * DIM * 4);
  cr_expect_geq(db, (json_int_t)N * DIM * 4);
  cr_expect_lt(vb, (json_int_t)N * DIM * 4);
  cr_expect_str_eq(json_string_value(json_object_get(s, "quantization")), "scalar");
  cr_expect(json_is_true(json_object_get(s, "on_disk")));
  for (size_t i = 0; i < n; i++) json_decref(o[i]);
  run_free(&r);
}

Test(cli_quant, bench_nprobe_alone_runs_one_row_per_nprobe_on_ivf, .init = setup,
     .fini = teardown) {
  run_result r = import_with("ivf", "--index", "ivf-flat", "--nlist", "8", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  run_free(&r);
  r = bench_with("ivf", "--nprobe", "1,8", NULL);
  cr_assert_eq(r.status, 0, "%s", r.err);
  json_t *o[8];
  size_t n = parse_lines(r.out, o, 8);
  cr_assert_eq(n, 3);
  cr_expect_str_eq(json_string_value(json_object_get(o[0], "mode")), "ivf-flat");
  cr_expect(json_is_null(json_object_get(o[0], "ef")));
  cr_expect_eq(json_integer_value(json_object_get(o[1], "nprobe")), 8);
  /* probing every list of an IVF-Flat index is exact search */
  cr_expect_eq(json_number_value(json_object_get(o[1], "recall")), 1.0);
  cr_expect_str_eq(json_string_value(json_object_get(o[2], "index")), "ivf-flat");
  for (size_t i = 0; i < n; i++) json_decref(o[i]);
  run_free(&r);
}

/* ---- the flag kinds ------------------------------------------------------------------- */

Test(cli_quant, choice_f64_and_truth_flags_parse_strictly) {
  int choice = -1;
  double x = 0;
  bool t = false;
  cli_flag flags[] = {
      {"c", CLI_FLAG_CHOICE, &choice, "a|bb|c", "choice", 0, 0, false, false},
      {"x", CLI_FLAG_F64, &x, "X", "number", 1, 10, false, false},
      {"t", CLI_FLAG_TRUTH, &t, "true|false", "truth", 0, 0, false, false},
  };
  cli_cmd_spec spec = {"t", NULL, "test", flags, 3, 0, 0};
  char *ok[] = {"t", "--c", "bb", "--x=2.5", "--t", "true", NULL};
  size_t np;
  FILE *sink = fopen("/dev/null", "w");
  cr_assert_eq(cli_parse(&spec, 6, ok, NULL, &np, sink, sink), CLI_PARSE_OK);
  cr_expect_eq(choice, 1);
  cr_expect_eq(x, 2.5);
  cr_expect(t);
  char *bad[][3] = {{"t", "--c", "b"},    {"t", "--c", "bbb"}, {"t", "--x", "0.99"},
                    {"t", "--x", "10.5"}, {"t", "--x", "1e"},  {"t", "--x", "inf"},
                    {"t", "--t", "True"}, {"t", "--t", ""}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_expect_eq(cli_parse(&spec, 3, bad[i], NULL, &np, sink, sink), CLI_PARSE_ERR, "case %zu",
                 i);
  fclose(sink);
}
