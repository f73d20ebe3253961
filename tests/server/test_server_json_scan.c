/* test_server_json_scan.c: the request pre-pass of src/server/json_scan.c — the
 * decimal -> float32 conversion against strtof (the reference) bit for
 * bit, the strict number grammar, vector arrays replaced only at the given
 * paths, and error messages identical to the plain parser's. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "server/json_io.h"

static uint32_t bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* jsonio_scan_f32 must consume the whole token and agree with strtof. */
static void same_as_strtof(const char *s) {
  float got = 12345.0f;
  size_t k = jsonio_scan_f32(s, strlen(s), &got);
  float want = strtof(s, NULL);
  if (isinf(want)) {
    cr_assert_eq(k, 0, "%s overflows float32 and must be refused", s);
    return;
  }
  cr_assert_eq(k, strlen(s), "%s: consumed %zu", s, k);
  cr_assert_eq(bits(got), bits(want), "%s: got %.9g (%08x), strtof %.9g (%08x)", s, got,
               bits(got), want, bits(want));
}

Test(json_scan, special_values_round_trip_exactly) {
  const char *v[] = {"0.1", "-0.0", "-0", "0", "1e-45", "1.4e-45", "7e-46", "7.1e-46",
                     "3.4028235e38", "3.4028234663852886e+38", "-3.4028235e38", "1.17549435e-38",
                     "1.1754942e-38", "16777217", "16777216.5", "0.30000001192092896",
                     "123456789012345678901234567890", "0.000000000000000000000000000001",
                     "9007199254740993", "18446744073709551615", "1E5", "2.5e+3", "5e-324",
                     "1e-400", "4.9406564584124654e-324", "0.12345678918552399"};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) same_as_strtof(v[i]);
  float f;
  cr_expect_eq(jsonio_scan_f32("-0.0", 4, &f), 4);
  cr_expect(signbit(f), "-0.0 keeps its sign");
  cr_expect_eq(jsonio_scan_f32("3.4028235e38", 12, &f), 12);
  cr_expect_eq(f, FLT_MAX);
  cr_expect_eq(jsonio_scan_f32("1e-45", 5, &f), 5);
  cr_expect_eq(bits(f), 1u, "the smallest subnormal");
}

Test(json_scan, overflow_is_refused) {
  float f;
  cr_expect_eq(jsonio_scan_f32("3.4028236e38", 12, &f), 0);
  cr_expect_eq(jsonio_scan_f32("1e39", 4, &f), 0);
  cr_expect_eq(jsonio_scan_f32("1e999", 5, &f), 0);
  cr_expect_eq(jsonio_scan_f32("-1e39", 5, &f), 0);
}

Test(json_scan, strict_json_number_grammar) {
  const char *bad[] = {"", "-", "+1", ".5", "1.", "1e", "1e+", "-.5", "e5", "NaN", "Infinity",
                       "-x"};
  float f;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_expect_eq(jsonio_scan_f32(bad[i], strlen(bad[i]), &f), 0, "\"%s\"", bad[i]);
  /* A token ends where the grammar ends; the caller checks what follows. */
  cr_expect_eq(jsonio_scan_f32("01", 2, &f), 1);
  cr_expect_eq(jsonio_scan_f32("1.5.3", 5, &f), 3);
  cr_expect_eq(jsonio_scan_f32("2,", 2, &f), 1);
}

/* The outputs of float formatting (what clients send) and random decimals
 * of every shape, each checked bit for bit against strtof. Fixed seed. */
Test(json_scan, random_decimals_agree_with_strtof) {
  srand(20261121);
  char s[96];
  for (int i = 0; i < 200000; i++) {
    uint32_t u = ((uint32_t)rand() << 16) ^ (uint32_t)rand();
    float x;
    memcpy(&x, &u, 4);
    if (!isfinite(x)) continue;
    static const char *fmts[] = {"%.9g", "%.17g", "%.6g", "%.12e", "%.3f"};
    snprintf(s, sizeof s, fmts[i % 5], i % 5 == 1 ? (double)x * (1 + 1e-12) : (double)x);
    if (strchr(s, 'n') || strchr(s, 'i')) continue;
    same_as_strtof(s);
  }
  for (int i = 0; i < 200000; i++) {
    int nd = 1 + rand() % 24, at = rand() % (nd + 1), e = rand() % 90 - 45;
    size_t p = 0;
    if (rand() & 1) s[p++] = '-';
    for (int d = 0; d < nd; d++) {
      if (d == at && d > 0) s[p++] = '.';
      s[p++] = (char)('0' + (d == 0 ? 1 + rand() % 9 : rand() % 10));
    }
    if (rand() % 3) p += (size_t)snprintf(s + p, sizeof s - p, "e%d", e);
    s[p] = 0;
    same_as_strtof(s);
  }
}

/* Midpoints between adjacent floats, written exactly, and their neighbours
 * one digit away: where a second rounding would go wrong. */
Test(json_scan, float_midpoints_round_to_even) {
  srand(7);
  char s[128];
  for (int i = 0; i < 20000; i++) {
    uint32_t u = (((uint32_t)rand() << 16) ^ (uint32_t)rand()) & 0x7effffffu;
    float a;
    memcpy(&a, &u, 4);
    if (!isfinite(a) || a < FLT_MIN) continue;
    double mid = ((double)a + (double)nextafterf(a, INFINITY)) / 2;
    snprintf(s, sizeof s, "%.40g", mid);
    same_as_strtof(s);
    snprintf(s, sizeof s, "%.17g", mid);
    same_as_strtof(s);
    snprintf(s, sizeof s, "%.17g", nextafter(mid, 0));
    same_as_strtof(s);
  }
}

static const char *UPSERT_PATHS[] = {"points[].vector", "points[].vector.*", "batch.vectors[]",
                                     NULL};

Test(json_scan, vector_arrays_become_placeholders_only_at_paths) {
  const char *in = "{\"points\":[{\"id\":1,\"vector\":[0.5, -1e-45 ,3],"
                   "\"payload\":{\"vector\":[1,2],\"a\":[1.5]}},"
                   "{\"id\":2,\"vector\":{\"img\":[1,2],\"txt\":[\"x\"]}}],"
                   "\"vector\":[9]}";
  jsonio_vecs vecs = {0};
  char msg[256];
  json_t *v = jsonio_parse_vecs(in, strlen(in), UPSERT_PATHS, &vecs, msg, sizeof msg);
  cr_assert_not_null(v, "%s", msg);
  cr_expect_eq(vecs.n, 2);
  json_t *p0 = json_array_get(json_object_get(v, "points"), 0);
  uint32_t n = 0;
  const float *f = jsonio_vec(&vecs, json_object_get(p0, "vector"), &n);
  cr_assert_not_null(f);
  cr_expect_eq(n, 3);
  cr_expect_eq(f[0], 0.5f);
  cr_expect_eq(bits(f[1]), 0x80000001u);
  cr_expect_eq(f[2], 3.0f);
  /* A payload's "vector" key is not a vector position. */
  json_t *pl = json_object_get(p0, "payload");
  cr_expect(json_is_array(json_object_get(pl, "vector")));
  json_t *named = json_object_get(json_array_get(json_object_get(v, "points"), 1), "vector");
  f = jsonio_vec(&vecs, json_object_get(named, "img"), &n);
  cr_assert_not_null(f);
  cr_expect_eq(n, 2);
  cr_expect_eq(f[1], 2.0f);
  cr_expect(json_is_array(json_object_get(named, "txt")), "non-numbers stay JSON");
  cr_expect(json_is_array(json_object_get(v, "vector")), "top-level vector is not a path here");
  cr_expect_null(jsonio_vec(&vecs, json_object_get(v, "vector"), &n));
  json_decref(v);
  jsonio_vecs_free(&vecs);
}

Test(json_scan, batch_vectors_and_big_ids_together) {
  const char *in = "{\"batch\":{\"ids\":[18446744073709551615,2],\"vectors\":[[1,2],[3,4]]}}";
  jsonio_vecs vecs = {0};
  char msg[256];
  json_t *v = jsonio_parse_vecs(in, strlen(in), UPSERT_PATHS, &vecs, msg, sizeof msg);
  cr_assert_not_null(v, "%s", msg);
  json_t *b = json_object_get(v, "batch");
  uint64_t id;
  cr_expect(jsonio_get_u64(json_array_get(json_object_get(b, "ids"), 0), &id));
  cr_expect_eq(id, UINT64_MAX);
  uint32_t n;
  const float *f = jsonio_vec(&vecs, json_array_get(json_object_get(b, "vectors"), 1), &n);
  cr_assert_not_null(f);
  cr_expect(n == 2 && f[0] == 3.0f && f[1] == 4.0f);
  json_decref(v);
  jsonio_vecs_free(&vecs);
}

Test(json_scan, left_alone_arrays_keep_their_json) {
  const char *in = "{\"points\":[{\"id\":1,\"vector\":[]},{\"id\":2,\"vector\":[1e39,1]},"
                   "{\"id\":3,\"vector\":[[1,2]]},{\"id\":4,\"vector\":[1, \"2\"]}]}";
  jsonio_vecs vecs = {0};
  char msg[256];
  json_t *v = jsonio_parse_vecs(in, strlen(in), UPSERT_PATHS, &vecs, msg, sizeof msg);
  cr_assert_not_null(v, "%s", msg);
  cr_expect_eq(vecs.n, 0);
  for (size_t i = 0; i < 4; i++)
    cr_expect(json_is_array(json_object_get(json_array_get(json_object_get(v, "points"), i),
                                            "vector")));
  json_decref(v);
  jsonio_vecs_free(&vecs);
}

/* Malformed bodies give the plain parser's message, column included. */
Test(json_scan, errors_match_the_plain_parser) {
  const char *bad[] = {
      "{\"points\":[{\"id\":1,\"vector\":[1,2,3]},{\"id\":2,\"vector\":[1,2",
      "{\"points\":[{\"id\":1,\"vector\":[1,2,3]}],}",
      "{\"points\":[{\"id\":1,\"vector\":[1,2,3,]}]}",
      "{\"points\":[{\"id\":1,\"vector\":[1,2,3]},{\"id\":1,\"id\":2}]}",
      "{\"points\":[{\"id\":1,\"vector\":[1,2,3]}],\"x\":\"\\u0001a\"}",
      "{\"points\":[{\"id\":1,\"vector\":[1,2,3]}],\"x\":\"\\u0002a\"}",
      "{\"points\":[{\"id\":1,\"vector\":[1,NaN]}]}",
      "{\"points\":[{\"id\":1,\"vector\":[1,1e999]}]}",
      "{\"points\":[{\"id\":1,\"vector\":[01]}]}",
      "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
      "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char m1[256] = "", m2[256] = "";
    jsonio_vecs vecs = {0};
    json_t *a = jsonio_parse(bad[i], strlen(bad[i]), m1, sizeof m1);
    json_t *b = jsonio_parse_vecs(bad[i], strlen(bad[i]), UPSERT_PATHS, &vecs, m2, sizeof m2);
    cr_expect_null(a, "%s", bad[i]);
    cr_expect_null(b, "%s", bad[i]);
    cr_expect_str_eq(m2, m1, "body %zu", i);
    jsonio_vecs_free(&vecs);
  }
}

/* Byte mutations of a valid body (fixed seed): the fast pass must accept
 * exactly what the plain parser accepts, with the same message when not,
 * and the same number of points when it does. */
Test(json_scan, mutated_bodies_parse_exactly_like_the_plain_parser) {
  const char *base = "{\"points\":[{\"id\":1,\"vector\":[0.5,-1.25e-3,3,1E2],"
                     "\"payload\":{\"a\":[1,2]}},"
                     "{\"id\":18446744073709551615,\"vector\":{\"x\":[1,2],\"\":[-0.0,7]}},"
                     "{\"id\":\"6ba7b810-9dad-11d1-80b4-00c04fd430c8\",\"vectors\":[1,2,3,4]}],"
                     "\"batch\":{\"ids\":[5],\"vectors\":[[9,8,7,6]]}}";
  static const char alphabet[] = "[]{},:\"-+.eE0123456789 \\ux";
  size_t n = strlen(base);
  char *buf = malloc(n + 1);
  srand(424242);
  int accepted = 0;
  for (int it = 0; it < 20000; it++) {
    memcpy(buf, base, n + 1);
    int k = 1 + rand() % 3;
    for (int j = 0; j < k; j++) buf[rand() % n] = alphabet[rand() % (sizeof alphabet - 1)];
    char m1[256] = "", m2[256] = "";
    jsonio_vecs vecs = {0};
    json_t *a = jsonio_parse(buf, n, m1, sizeof m1);
    json_t *b = jsonio_parse_vecs(buf, n, UPSERT_PATHS, &vecs, m2, sizeof m2);
    cr_assert_eq(a == NULL, b == NULL, "%s\nplain: %s\nfast: %s", buf, m1, m2);
    if (a == NULL) {
      cr_assert_str_eq(m2, m1, "%s", buf);
    } else {
      accepted++;
      cr_assert_eq(json_array_size(json_object_get(a, "points")),
                   json_array_size(json_object_get(b, "points")), "%s", buf);
    }
    json_decref(a);
    json_decref(b);
    jsonio_vecs_free(&vecs);
  }
  cr_expect_gt(accepted, 1000, "the mutations should leave many bodies valid");
  free(buf);
}

Test(json_scan, placeholders_cannot_be_forged) {
  const char *in = "{\"points\":[{\"id\":1,\"vector\":\"\\u00020\"}]}";
  char msg[256];
  jsonio_vecs vecs = {0};
  cr_expect_null(jsonio_parse_vecs(in, strlen(in), UPSERT_PATHS, &vecs, msg, sizeof msg));
  cr_expect(strstr(msg, "U+0002") != NULL, "%s", msg);
  jsonio_vecs_free(&vecs);
}
