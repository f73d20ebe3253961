/* test_server_json.c: the server's JSON boundary (src/server/json_io.c) —
 * u64 ids above INT64_MAX survive parse and write, f32 values are written
 * in their shortest form, floats stay floats, strings are escaped — and the
 * settings of src/server/config.c (precedence, bounds, the separate
 * snapshot upload limit). The fast vector pass: test_server_json_scan.c. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "base/alloc.h"
#include "server/json_io.h"
#include "server/server_int.h"
#include "testutil.h"

static char *roundtrip(const char *text) {
  char msg[256];
  json_t *v = jsonio_parse(text, strlen(text), msg, sizeof msg);
  cr_assert_not_null(v, "%s: %s", text, msg);
  char *out = jsonio_dumps(v, NULL);
  json_decref(v);
  return out;
}

Test(server_json, ids_above_int64_max_survive_parse_and_write) {
  const char *in = "{\"ids\":[18446744073709551615,9223372036854775808,9223372036854775807,-5]}";
  char msg[256];
  json_t *v = jsonio_parse(in, strlen(in), msg, sizeof msg);
  cr_assert_not_null(v, "%s", msg);
  uint64_t x;
  json_t *ids = json_object_get(v, "ids");
  cr_assert(jsonio_get_u64(json_array_get(ids, 0), &x));
  cr_expect_eq(x, UINT64_MAX);
  cr_assert(jsonio_get_u64(json_array_get(ids, 1), &x));
  cr_expect_eq(x, (uint64_t)1 << 63);
  cr_assert(jsonio_get_u64(json_array_get(ids, 2), &x));
  cr_expect_eq(x, (uint64_t)INT64_MAX);
  cr_expect_not(jsonio_get_u64(json_array_get(ids, 3), &x));
  char *out = jsonio_dumps(v, NULL);
  cr_expect_str_eq(out, in);
  qv_free(out);
  json_decref(v);
}

Test(server_json, integers_beyond_u64_are_kept_as_text_not_wrapped) {
  char *out = roundtrip("[18446744073709551616]");
  cr_expect_str_eq(out, "[18446744073709551616]");
  qv_free(out);
  char msg[256];
  json_t *v = jsonio_parse("[18446744073709551616]", 22, msg, sizeof msg);
  uint64_t x;
  cr_expect_not(jsonio_get_u64(json_array_get(v, 0), &x));
  json_decref(v);
}

Test(server_json, numbers_inside_strings_are_not_rewritten) {
  char *out = roundtrip("{\"a\":\"99999999999999999999\",\"b\\\"\":1}");
  cr_expect_str_eq(out, "{\"a\":\"99999999999999999999\",\"b\\\"\":1}");
  qv_free(out);
}

Test(server_json, strings_starting_with_the_raw_mark_are_refused) {
  char msg[256];
  const char *in = "{\"a\":\"\\u0001123\"}";
  cr_expect_null(jsonio_parse(in, strlen(in), msg, sizeof msg));
  cr_expect(strstr(msg, "U+0001") != NULL, "%s", msg);
}

Test(server_json, floats_stay_floats_and_are_shortest) {
  char *out = roundtrip("[1.0,0.1,-2.5e-300,1e300,3]");
  cr_expect_str_eq(out, "[1.0,0.1,-2.5e-300,1e+300,3]");
  qv_free(out);
  json_t *a = json_array();
  json_array_append_new(a, jsonio_f32(0.1f));
  json_array_append_new(a, jsonio_f32(1.0f));
  json_array_append_new(a, jsonio_f32(0.70710677f));
  out = jsonio_dumps(a, NULL);
  cr_expect_str_eq(out, "[0.1,1.0,0.70710677]");
  qv_free(out);
  json_decref(a);
}

/* The reference: the fewest significant digits ("%.Ng", N = 1..9) that
 * read back as f. */
static int reference_digits(float f) {
  char buf[64];
  for (int p = 1; p <= 9; p++) {
    snprintf(buf, sizeof buf, "%.*g", p, (double)f);
    if (strtof(buf, NULL) == f) return p;
  }
  return 9;
}

/* Significant digits of a decimal: mantissa digits without leading and
 * trailing zeros. */
static int significant_digits(const char *s) {
  char d[64];
  int n = 0;
  for (; *s && *s != 'e'; s++)
    if (*s >= '0' && *s <= '9') d[n++] = *s;
  int lo = 0;
  while (lo < n && d[lo] == '0') lo++;
  while (n > lo && d[n - 1] == '0') n--;
  return n > lo ? n - lo : 1;
}

static void check_f32(float f, size_t *longer) {
  char buf[JSONIO_F32_MAX];
  size_t n = jsonio_format_f32(f, buf);
  cr_assert_eq(n, strlen(buf));
  char *end;
  float back = strtof(buf, &end);
  cr_assert_eq(*end, 0, "trailing text in \"%s\"", buf);
  cr_assert(memcmp(&back, &f, sizeof f) == 0, "%a written as \"%s\" reads back as %a", (double)f,
            buf, (double)back);
  cr_assert(strpbrk(buf, ".e") != NULL, "\"%s\" would read back as an integer", buf);
  if (f != 0 && significant_digits(buf) > reference_digits(f)) {
    if (*longer < 5) cr_log_info("longer: %a as \"%s\" (%d digits suffice)", (double)f, buf, reference_digits(f));
    (*longer)++;
  }
}

Test(server_json, f32_text_reads_back_exactly_and_is_short) {
  static const float special[] = {1.0f, 0.1f, -0.1f, 0.70710677f, 16777216.0f, 16777217.0f,
                                  1e-7f, 123456789.0f, 3.4028235e38f, 1.17549435e-38f,
                                  1.4e-45f, -1.4e-45f, 0.5f, 100.0f, 1e10f, 9.999999e-6f,
                                  0.33333334f, 2.7182817f, -0.0f, 1e16f, 1e15f};
  size_t longer = 0;
  for (size_t i = 0; i < sizeof special / sizeof *special; i++) check_f32(special[i], &longer);
  char buf[JSONIO_F32_MAX];
  jsonio_format_f32(0.1f, buf);
  cr_expect_str_eq(buf, "0.1");
  jsonio_format_f32(-2.5f, buf);
  cr_expect_str_eq(buf, "-2.5");
  jsonio_format_f32(100.0f, buf);
  cr_expect_str_eq(buf, "100.0");
  jsonio_format_f32(1.5e-7f, buf);
  cr_expect_str_eq(buf, "1.5e-7");
  jsonio_format_f32(-0.0f, buf);
  cr_expect_str_eq(buf, "-0.0");
  /* Random bit patterns cover every exponent; values near 1 are what
   * scores look like. */
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < 400000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    uint32_t bits = (uint32_t)x;
    float f;
    memcpy(&f, &bits, sizeof f);
    if (isfinite(f)) check_f32(f, &longer);
    check_f32((float)((double)(x >> 11) / 9007199254740992.0) * 2.0f - 1.0f, &longer);
  }
  cr_expect_eq(longer, 0, "%zu values printed with more digits than needed", longer);
}

Test(server_json, control_characters_are_escaped) {
  json_t *s = json_string("a\"b\\c\n\x02\xc3\xa9");
  char *out = jsonio_dumps(s, NULL);
  cr_expect_str_eq(out, "\"a\\\"b\\\\c\\n\\u0002\xc3\xa9\"");
  qv_free(out);
  json_decref(s);
}

Test(server_json, parse_errors_name_line_and_column) {
  char msg[256];
  cr_expect_null(jsonio_parse("", 0, msg, sizeof msg));
  cr_expect_str_eq(msg, "EOF while parsing a value at line 1 column 0");
  cr_expect_null(jsonio_parse("{\"a\":1,\"a\":2}", 13, msg, sizeof msg));
  cr_expect(strstr(msg, "duplicate") != NULL, "%s", msg);
  cr_expect_null(jsonio_parse("[1e999]", 7, msg, sizeof msg));
  cr_expect(strstr(msg, "line 1") != NULL, "%s", msg);
}

Test(server_config, precedence_is_flags_env_file_defaults) {
  char *dir = tu_tmpdir("srvcfg");
  char path[512];
  snprintf(path, sizeof path, "%s/c.yaml", dir);
  FILE *f = fopen(path, "w");
  fprintf(f, "service:\n  http_port: 7001\n  host: \"::1\"  # v6\n  max_request_size_mb: 2\n"
             "storage:\n  storage_path: /from/file\nlog_level: debug\n");
  fclose(f);
  setenv("QUIVER__SERVICE__HTTP_PORT", "7002", 1);
  char *argv[] = {"serve", "--config", path, "--data-dir", "/from/flag", NULL};
  srv_config cfg;
  FILE *err = tmpfile();
  cr_assert_eq(srvcfg_load(5, argv, &cfg, err), -1);
  cr_expect_eq(cfg.port, 7002);               /* env over file */
  cr_expect_str_eq(cfg.host, "::1");          /* file over default */
  cr_expect_str_eq(cfg.data_dir, "/from/flag"); /* flag over file */
  cr_expect_eq(cfg.max_body_bytes, 2u << 20); /* MiB in the file */
  cr_expect_eq(cfg.log_level, QV_LOG_DEBUG);
  srvcfg_free(&cfg);
  char *argv2[] = {"serve", "--config", path, "--port=7003", NULL};
  cr_assert_eq(srvcfg_load(4, argv2, &cfg, err), -1);
  cr_expect_eq(cfg.port, 7003);
  srvcfg_free(&cfg);
  unsetenv("QUIVER__SERVICE__HTTP_PORT");
  fclose(err);
  tu_rmdir(dir);
}

Test(server_config, bad_values_are_usage_errors) {
  FILE *err = tmpfile();
  srv_config cfg;
  char *a1[] = {"serve", "--port", "65536", NULL};
  cr_expect_eq(srvcfg_load(3, a1, &cfg, err), 2);
  srvcfg_free(&cfg);
  char *a2[] = {"serve", "--max-body-bytes", "12x", NULL};
  cr_expect_eq(srvcfg_load(3, a2, &cfg, err), 2);
  srvcfg_free(&cfg);
  char *a3[] = {"serve", "--threads", NULL};
  cr_expect_eq(srvcfg_load(2, a3, &cfg, err), 2);
  srvcfg_free(&cfg);
  setenv("QUIVER__LOG_LEVEL", "chatty", 1);
  char *a4[] = {"serve", NULL};
  cr_expect_eq(srvcfg_load(1, a4, &cfg, err), 2);
  srvcfg_free(&cfg);
  unsetenv("QUIVER__LOG_LEVEL");
  fclose(err);
}

Test(server_config, snapshot_upload_limit_is_its_own_setting) {
  FILE *err = tmpfile();
  srv_config cfg;
  char *a0[] = {"serve", "--max-body-bytes", "2048", NULL};
  cr_assert_eq(srvcfg_load(3, a0, &cfg, err), -1);
  cr_expect_eq(cfg.max_body_bytes, 2048);
  cr_expect_eq(cfg.max_snapshot_upload_bytes, 16ull << 30, "16 GiB by default");
  srvcfg_free(&cfg);
  setenv("QUIVER__SERVICE__MAX_SNAPSHOT_UPLOAD_BYTES", "5000", 1);
  char *a1[] = {"serve", NULL};
  cr_assert_eq(srvcfg_load(1, a1, &cfg, err), -1);
  cr_expect_eq(cfg.max_snapshot_upload_bytes, 5000);
  srvcfg_free(&cfg);
  char *a2[] = {"serve", "--max-snapshot-upload-bytes", "100", NULL};
  cr_expect_eq(srvcfg_load(3, a2, &cfg, err), 2, "below the 1024 floor");
  srvcfg_free(&cfg);
  unsetenv("QUIVER__SERVICE__MAX_SNAPSHOT_UPLOAD_BYTES");
  fclose(err);
}

Test(server_auth, keys_by_header_or_bearer) {
  srv_config cfg = {0};
  cfg.api_key = "k1";
  cfg.read_only_api_key = "r1";
  cr_expect_eq(auth_level(&cfg, NULL, NULL), SRV_AUTH_NONE);
  cr_expect_eq(auth_level(&cfg, "k1", NULL), SRV_AUTH_FULL);
  cr_expect_eq(auth_level(&cfg, NULL, "Bearer k1"), SRV_AUTH_FULL);
  cr_expect_eq(auth_level(&cfg, NULL, "bearer r1"), SRV_AUTH_READ);
  cr_expect_eq(auth_level(&cfg, "k", NULL), SRV_AUTH_NONE);
  cr_expect_eq(auth_level(&cfg, "k1x", "Basic k1"), SRV_AUTH_NONE);
  cfg.api_key = "";
  cfg.read_only_api_key = "";
  cr_expect_eq(auth_level(&cfg, NULL, NULL), SRV_AUTH_FULL);
}
