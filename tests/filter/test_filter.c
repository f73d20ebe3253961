/* test_filter.c: Qdrant filter semantics, case by case (QDRANT_API.md §2):
 * each row is a payload, a filter and whether the point must match. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "filter/filter.h"
#include "testutil.h"

typedef struct fcase {
  const char *payload, *filter;
  bool want;
} fcase;

static const fcase cases[] = {
    /* match.value: exact and type-strict */
    {"{\"c\":\"red\"}", "{\"must\":[{\"key\":\"c\",\"match\":{\"value\":\"red\"}}]}", true},
    {"{\"c\":\"Red\"}", "{\"must\":[{\"key\":\"c\",\"match\":{\"value\":\"red\"}}]}", false},
    {"{\"n\":5}", "{\"must\":[{\"key\":\"n\",\"match\":{\"value\":5}}]}", true},
    {"{\"n\":5.0}", "{\"must\":[{\"key\":\"n\",\"match\":{\"value\":5}}]}", false},
    {"{\"n\":\"5\"}", "{\"must\":[{\"key\":\"n\",\"match\":{\"value\":5}}]}", false},
    {"{\"b\":true}", "{\"must\":[{\"key\":\"b\",\"match\":{\"value\":true}}]}", true},
    {"{\"b\":1}", "{\"must\":[{\"key\":\"b\",\"match\":{\"value\":true}}]}", false},
    /* arrays: any element */
    {"{\"t\":[\"a\",\"b\"]}", "{\"must\":[{\"key\":\"t\",\"match\":{\"value\":\"b\"}}]}", true},
    {"{\"t\":[[\"b\"]]}", "{\"must\":[{\"key\":\"t\",\"match\":{\"value\":\"b\"}}]}", false},
    /* missing key: match false, must_not true */
    {"{}", "{\"must\":[{\"key\":\"c\",\"match\":{\"value\":\"red\"}}]}", false},
    {"{}", "{\"must_not\":[{\"key\":\"c\",\"match\":{\"value\":\"red\"}}]}", true},
    /* any / except */
    {"{\"c\":\"red\"}", "{\"must\":[{\"key\":\"c\",\"match\":{\"any\":[\"blue\",\"red\"]}}]}", true},
    {"{\"c\":\"red\"}", "{\"must\":[{\"key\":\"c\",\"match\":{\"any\":[]}}]}", false},
    {"{\"c\":[\"black\",\"green\"]}",
     "{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"black\",\"yellow\"]}}]}", true},
    {"{\"c\":[\"black\"]}", "{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"black\"]}}]}", false},
    {"{\"c\":true}", "{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"black\"]}}]}", true},
    {"{\"c\":null}", "{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"black\"]}}]}", false},
    {"{}", "{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"black\"]}}]}", false},
    {"{\"c\":[]}", "{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"black\"]}}]}", false},
    /* text: substring without an index */
    {"{\"d\":\"the quick fox\"}", "{\"must\":[{\"key\":\"d\",\"match\":{\"text\":\"quick\"}}]}", true},
    {"{\"d\":\"the quick fox\"}", "{\"must\":[{\"key\":\"d\",\"match\":{\"text\":\"slow\"}}]}", false},
    /* range: numbers, ints and floats alike; strings never */
    {"{\"p\":10}", "{\"must\":[{\"key\":\"p\",\"range\":{\"gte\":10,\"lt\":11}}]}", true},
    {"{\"p\":10.5}", "{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":10}}]}", true},
    {"{\"p\":10}", "{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":10}}]}", false},
    {"{\"p\":\"10\"}", "{\"must\":[{\"key\":\"p\",\"range\":{\"gte\":0}}]}", false},
    {"{\"p\":[1,50]}", "{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":40}}]}", true},
    /* datetime range */
    {"{\"t\":\"2023-02-08T10:49:00Z\"}",
     "{\"must\":[{\"key\":\"t\",\"range\":{\"gte\":\"2023-02-08T10:00:00Z\",\"lt\":\"2023-02-09\"}}]}", true},
    {"{\"t\":\"2023-02-08T12:49:00+03:00\"}",
     "{\"must\":[{\"key\":\"t\",\"range\":{\"lt\":\"2023-02-08T10:00:00Z\"}}]}", true},
    {"{\"t\":\"2023-02-10T00:00:00.5Z\"}",
     "{\"must\":[{\"key\":\"t\",\"range\":{\"lt\":\"2023-02-10T00:00:00Z\"}}]}", false},
    /* nested keys and arrays of objects */
    {"{\"a\":{\"b\":{\"c\":1}}}", "{\"must\":[{\"key\":\"a.b.c\",\"match\":{\"value\":1}}]}", true},
    {"{\"a\":[{\"b\":1},{\"b\":2}]}", "{\"must\":[{\"key\":\"a[].b\",\"match\":{\"value\":2}}]}", true},
    {"{\"a\":[{\"b\":1},{\"b\":2}]}", "{\"must\":[{\"key\":\"a.b\",\"match\":{\"value\":2}}]}", false},
    {"{\"a\":[{\"b\":1},{\"b\":2}]}", "{\"must\":[{\"key\":\"a[1].b\",\"match\":{\"value\":2}}]}", true},
    {"{\"a\":[{\"b\":1},{\"b\":2}]}", "{\"must\":[{\"key\":\"a[0].b\",\"match\":{\"value\":2}}]}", false},
    /* nested: one element satisfies the whole inner filter */
    {"{\"d\":[{\"n\":\"x\",\"v\":1},{\"n\":\"y\",\"v\":2}]}",
     "{\"must\":[{\"nested\":{\"key\":\"d\",\"filter\":{\"must\":[{\"key\":\"n\",\"match\":{\"value\":\"x\"}},{\"key\":\"v\",\"match\":{\"value\":2}}]}}}]}",
     false},
    {"{\"d\":[{\"n\":\"x\",\"v\":1},{\"n\":\"y\",\"v\":2}]}",
     "{\"must\":[{\"nested\":{\"key\":\"d\",\"filter\":{\"must\":[{\"key\":\"n\",\"match\":{\"value\":\"y\"}},{\"key\":\"v\",\"match\":{\"value\":2}}]}}}]}",
     true},
    /* is_empty / is_null / values_count */
    {"{}", "{\"must\":[{\"is_empty\":{\"key\":\"x\"}}]}", true},
    {"{\"x\":null}", "{\"must\":[{\"is_empty\":{\"key\":\"x\"}}]}", true},
    {"{\"x\":[]}", "{\"must\":[{\"is_empty\":{\"key\":\"x\"}}]}", true},
    {"{\"x\":0}", "{\"must\":[{\"is_empty\":{\"key\":\"x\"}}]}", false},
    {"{\"x\":null}", "{\"must\":[{\"is_null\":{\"key\":\"x\"}}]}", true},
    {"{}", "{\"must\":[{\"is_null\":{\"key\":\"x\"}}]}", false},
    {"{\"x\":[]}", "{\"must\":[{\"is_null\":{\"key\":\"x\"}}]}", false},
    {"{\"x\":[1,2,3]}", "{\"must\":[{\"key\":\"x\",\"values_count\":{\"gte\":3}}]}", true},
    {"{\"x\":7}", "{\"must\":[{\"key\":\"x\",\"values_count\":{\"lt\":2}}]}", true},
    {"{}", "{\"must\":[{\"key\":\"x\",\"values_count\":{\"lt\":1}}]}", true},
    /* has_id */
    {"{}", "{\"must\":[{\"has_id\":[1,42,3]}]}", true},
    {"{}", "{\"must\":[{\"has_id\":[1,3]}]}", false},
    /* an id as its decimal digits: how the server passes ids above INT64_MAX */
    {"{}", "{\"must\":[{\"has_id\":[\"42\"]}]}", true},
    {"{}", "{\"must\":[{\"has_id\":[\"18446744073709551615\"]}]}", false},
    /* clause logic: empty must true, empty should false, min_should */
    {"{}", "{\"must\":[]}", true},
    {"{}", "{\"should\":[]}", false},
    {"{}", "{}", true},
    {"{\"a\":1,\"b\":2}",
     "{\"should\":[{\"key\":\"a\",\"match\":{\"value\":9}},{\"key\":\"b\",\"match\":{\"value\":2}}]}", true},
    {"{\"a\":1,\"b\":2,\"c\":3}",
     "{\"min_should\":{\"min_count\":2,\"conditions\":[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":0}},{\"key\":\"c\",\"match\":{\"value\":3}}]}}",
     true},
    {"{\"a\":1,\"b\":2,\"c\":3}",
     "{\"min_should\":{\"min_count\":3,\"conditions\":[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":0}},{\"key\":\"c\",\"match\":{\"value\":3}}]}}",
     false},
    /* a single condition instead of an array; nested filters */
    {"{\"a\":1}", "{\"must\":{\"key\":\"a\",\"match\":{\"value\":1}}}", true},
    {"{\"a\":1,\"b\":5}",
     "{\"must\":[{\"should\":[{\"key\":\"a\",\"match\":{\"value\":2}},{\"key\":\"b\",\"range\":{\"gt\":4}}]}]}", true},
    /* geo */
    {"{\"l\":{\"lon\":13.40,\"lat\":52.52}}",
     "{\"must\":[{\"key\":\"l\",\"geo_radius\":{\"center\":{\"lon\":13.41,\"lat\":52.52},\"radius\":1000}}]}", true},
    {"{\"l\":{\"lon\":13.40,\"lat\":52.52}}",
     "{\"must\":[{\"key\":\"l\",\"geo_radius\":{\"center\":{\"lon\":13.50,\"lat\":52.52},\"radius\":1000}}]}", false},
    {"{\"l\":{\"lon\":13.40,\"lat\":52.52}}",
     "{\"must\":[{\"key\":\"l\",\"geo_bounding_box\":{\"top_left\":{\"lon\":13.0,\"lat\":53.0},\"bottom_right\":{\"lon\":14.0,\"lat\":52.0}}}]}", true},
    {"{\"l\":{\"lon\":179.5,\"lat\":0}}",
     "{\"must\":[{\"key\":\"l\",\"geo_bounding_box\":{\"top_left\":{\"lon\":179.0,\"lat\":1},\"bottom_right\":{\"lon\":-179.0,\"lat\":-1}}}]}", true},
    {"{\"l\":{\"lon\":0.5,\"lat\":0.5}}",
     "{\"must\":[{\"key\":\"l\",\"geo_polygon\":{\"exterior\":{\"points\":[{\"lon\":0,\"lat\":0},{\"lon\":1,\"lat\":0},{\"lon\":1,\"lat\":1},{\"lon\":0,\"lat\":1},{\"lon\":0,\"lat\":0}]}}}]}", true},
    {"{\"l\":{\"lon\":1.5,\"lat\":0.5}}",
     "{\"must\":[{\"key\":\"l\",\"geo_polygon\":{\"exterior\":{\"points\":[{\"lon\":0,\"lat\":0},{\"lon\":1,\"lat\":0},{\"lon\":1,\"lat\":1},{\"lon\":0,\"lat\":1},{\"lon\":0,\"lat\":0}]}}}]}", false},
};

Test(filter, semantics_case_by_case) {
  qv_point_id id = qv_id_num(42);
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    qv_filter *f;
    qv_err e;
    qv_rc rc = qv_filter_parse(cases[i].filter, 0, &f, &e);
    cr_assert_eq(rc, QV_OK, "case %zu: %s: %s", i, cases[i].filter, e.msg);
    json_t *p = json_loads(cases[i].payload, 0, NULL);
    cr_assert_not_null(p, "case %zu payload", i);
    cr_expect_eq(filter_match(f, &id, p), cases[i].want, "case %zu: payload %s, filter %s", i,
                 cases[i].payload, cases[i].filter);
    json_decref(p);
    qv_filter_free(f);
  }
}

/* The point has the vectors named in ctx, a NULL-separated list. */
static bool has_listed_vector(void *ctx, const char *name) {
  for (const char *const *v = ctx; *v; v++)
    if (strcmp(*v, name) == 0) return true;
  return false;
}

Test(filter, has_vector_asks_the_point) {
  qv_point_id id = qv_id_num(7);
  const char *with_image[] = {"", "image", NULL};
  const char *text_only[] = {"text", NULL};
  filter_point a = {&id, has_listed_vector, with_image};
  filter_point b = {&id, has_listed_vector, text_only};
  qv_filter *f;
  qv_err e;
  const char *src = "{\"must\":[{\"has_vector\":\"image\"}]}";
  cr_assert_eq(qv_filter_parse(src, 0, &f, &e), QV_OK, "%s", e.msg);
  cr_expect(filter_match_point(f, &a, NULL));
  cr_expect_not(filter_match_point(f, &b, NULL));
  cr_expect_not(filter_match(f, &id, NULL), "without a callback only \"\" exists");
  qv_filter_free(f);
  src = "{\"must_not\":[{\"has_vector\":\"\"}], \"should\":[{\"nested\":{\"key\":\"a\","
        "\"filter\":{\"must\":[{\"has_vector\":\"text\"}]}}}]}";
  cr_assert_eq(qv_filter_parse(src, 0, &f, &e), QV_OK, "%s", e.msg);
  json_t *p = json_loads("{\"a\":[{\"x\":1}]}", 0, NULL);
  cr_expect(filter_match_point(f, &b, p), "nested conditions see the same point");
  cr_expect_not(filter_match_point(f, &a, p));
  json_decref(p);
  qv_filter_free(f);
}

Test(filter, malformed_filters_are_rejected_with_a_message) {
  const char *bad[] = {
      "[]", "{\"must\":5}", "{\"shoud\":[]}", "{\"must\":[{\"key\":\"a\"}]}",
      "{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1.5}}]}",
      "{\"must\":[{\"key\":\"a\",\"match\":{\"any\":[1,\"x\"]}}]}",
      "{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1},\"range\":{\"gt\":1}}]}",
      "{\"must\":[{\"key\":\"a\",\"range\":{\"gt\":\"yesterday\"}}]}",
      "{\"must\":[{\"key\":\"a\",\"range\":{\"above\":1}}]}",
      "{\"must\":[{\"key\":\"\",\"match\":{\"value\":1}}]}",
      "{\"must\":[{\"key\":\"a[x]\",\"match\":{\"value\":1}}]}",
      "{\"must\":[{\"has_id\":[-1]}]}", "{\"must\":[{\"has_id\":[\"nope\"]}]}",
      "{\"must\":[{\"has_id\":[\"18446744073709551616\"]}]}",
      "{\"must\":[{\"key\":\"l\",\"geo_radius\":{\"center\":{\"lon\":200,\"lat\":0},\"radius\":1}}]}",
      "{\"min_should\":{\"min_count\":-1,\"conditions\":[]}}", "{\"must\":[{\"key\":\"a\",",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    qv_filter *f = NULL;
    qv_err e = {0};
    cr_expect_eq(qv_filter_parse(bad[i], 0, &f, &e), QV_EINVAL, "must reject %s", bad[i]);
    cr_expect_gt(strlen(e.msg), 8, "with a message: %s", bad[i]);
    cr_expect_null(f);
  }
}

Test(filter, datetimes_parse_to_the_same_instant) {
  int64_t a, b, c;
  cr_assert(filter_parse_datetime("2023-02-08T10:49:00Z", &a));
  cr_assert(filter_parse_datetime("2023-02-08 12:49:00+02:00", &b));
  cr_assert(filter_parse_datetime("2023-02-08T10:49:00.000000Z", &c));
  cr_expect_eq(a, b);
  cr_expect_eq(a, c);
  cr_expect_eq(a, 1675853340LL * 1000000);
  cr_expect_not(filter_parse_datetime("2023-13-01", &a));
  cr_expect_not(filter_parse_datetime("yesterday", &a));
}
