/* test_payload_index.c: payload indexes change speed, never results. The
 * same filtered searches run on two collections with identical points, one
 * with indexes on every field and one without, and must agree exactly —
 * over sealed segments, a growing mutable segment (rows past what an index
 * covers), and after reopening. Also creation, listing, dropping, errors. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"
#include "testutil.h"

#define DIM 8
static const char *cats[] = {"red", "green", "blue"};

static qv_db *open_db(const char *dir) {
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_db *db;
  qv_err e;
  cr_assert_eq(qv_open(dir, &o, &db, &e), QV_OK, "%s", e.msg);
  return db;
}

static qv_collection *make(qv_db *db, const char *name) {
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = DIM;
  cfg.distance = QV_EUCLID;
  cfg.full_scan_threshold = 50;
  qv_err e;
  cr_assert_eq(qv_collection_create(db, name, &cfg, &e), QV_OK);
  qv_collection *c;
  cr_assert_eq(qv_collection_get(db, name, &c, &e), QV_OK);
  return c;
}

static void load(qv_collection *a, qv_collection *b, uint64_t from, uint64_t to) {
  uint64_t s = from * 31 + 7;
  for (uint64_t i = from; i < to; i++) {
    float v[DIM];
    for (int d = 0; d < DIM; d++) v[d] = tu_randf(&s);
    char payload[160];
    int n = (int)(tu_rand(&s) % 1000);
    /* some points store the number as a float, some as a string, some lack it */
    const char *num_form = (i % 7 == 0) ? "\"n\":%d.5," : (i % 11 == 0) ? "\"n\":\"%d\"," : "\"n\":%d,";
    char num[40] = "";
    if (i % 13 != 0) snprintf(num, sizeof num, num_form, n);
    snprintf(payload, sizeof payload,
             "{%s\"cat\":\"%s\",\"ok\":%s,\"t\":\"2024-01-%02dT00:00:00Z\",\"tags\":[\"%s\",\"x\"]}",
             num, cats[i % 3], i % 2 ? "true" : "false", (int)(i % 28) + 1, cats[(i / 3) % 3]);
    qv_point p = {.id = qv_id_num(i), .vector = v, .dim = DIM, .payload = payload};
    qv_err e;
    cr_assert_eq(qv_upsert(a, &p, 1, &e), QV_OK, "%s", e.msg);
    cr_assert_eq(qv_upsert(b, &p, 1, &e), QV_OK, "%s", e.msg);
  }
}

static const char *filters[] = {
    "{\"must\":[{\"key\":\"cat\",\"match\":{\"value\":\"red\"}}]}",
    "{\"must\":[{\"key\":\"cat\",\"match\":{\"any\":[\"red\",\"blue\"]}},{\"key\":\"n\",\"range\":{\"gte\":100,\"lt\":600}}]}",
    "{\"must\":[{\"key\":\"n\",\"range\":{\"gt\":990}}]}",
    "{\"must\":[{\"key\":\"n\",\"match\":{\"value\":500}}]}",
    "{\"must\":[{\"key\":\"ok\",\"match\":{\"value\":true}},{\"key\":\"n\",\"range\":{\"lte\":50.5}}]}",
    "{\"must\":[{\"key\":\"t\",\"range\":{\"gte\":\"2024-01-10T00:00:00Z\",\"lt\":\"2024-01-12T00:00:00Z\"}}]}",
    "{\"must\":[{\"key\":\"tags[]\",\"match\":{\"value\":\"green\"}}],\"must_not\":[{\"key\":\"cat\",\"match\":{\"value\":\"green\"}}]}",
    "{\"should\":[{\"key\":\"cat\",\"match\":{\"value\":\"red\"}}]}",
};

static void compare(qv_collection *with, qv_collection *without, bool exact) {
  float q[DIM];
  uint64_t s = 5;
  for (size_t f = 0; f < sizeof filters / sizeof *filters; f++) {
    qv_filter *flt;
    qv_err e;
    cr_assert_eq(qv_filter_parse(filters[f], 0, &flt, &e), QV_OK, "%s", e.msg);
    for (int rep = 0; rep < 5; rep++) {
      for (int d = 0; d < DIM; d++) q[d] = tu_randf(&s);
      qv_search_params p;
      qv_search_params_init(&p);
      p.filter = flt;
      p.exact = exact;
      p.ef = 200;
      qv_hit h1[10], h2[10];
      size_t n1, n2;
      cr_assert_eq(qv_search(with, q, DIM, &p, h1, &n1, &e), QV_OK, "%s", e.msg);
      cr_assert_eq(qv_search(without, q, DIM, &p, h2, &n2, &e), QV_OK, "%s", e.msg);
      cr_assert_eq(n1, n2, "%s: %zu vs %zu results", filters[f], n1, n2);
      for (size_t i = 0; exact && i < n1; i++)
        cr_expect_eq(h1[i].id.num, h2[i].id.num, "%s rank %zu", filters[f], i);
    }
    qv_filter_free(flt);
  }
}

static void index_all(qv_collection *c) {
  qv_err e;
  cr_assert_eq(qv_payload_index_create(c, "cat", QV_INDEX_KEYWORD, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_payload_index_create(c, "n", QV_INDEX_INTEGER, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_payload_index_create(c, "ok", QV_INDEX_BOOL, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_payload_index_create(c, "t", QV_INDEX_DATETIME, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_payload_index_create(c, "tags[]", QV_INDEX_KEYWORD, &e), QV_OK, "%s", e.msg);
}

Test(payload_index, results_equal_unindexed_everywhere, .timeout = 300) {
  char *dir = tu_tmpdir("pidx");
  qv_db *db = open_db(dir);
  qv_collection *with = make(db, "with"), *without = make(db, "without");
  index_all(with);
  load(with, without, 0, 3000);
  qv_err e;
  cr_assert_eq(qv_collection_optimize(with, &e), QV_OK);
  cr_assert_eq(qv_collection_optimize(without, &e), QV_OK);
  compare(with, without, true);  /* sealed */
  compare(with, without, false);
  load(with, without, 3000, 3300); /* mutable segment, index built ... */
  compare(with, without, true);
  load(with, without, 3300, 3900); /* ... then outgrown: rows past it */
  compare(with, without, true);
  qv_collection_release(with);
  qv_collection_release(without);
  qv_close(db);
  db = open_db(dir);
  cr_assert_eq(qv_collection_get(db, "with", &with, &e), QV_OK);
  cr_assert_eq(qv_collection_get(db, "without", &without, &e), QV_OK);
  compare(with, without, true);
  qv_collection_release(with);
  qv_collection_release(without);
  qv_close(db);
  tu_rmdir(dir);
}

Test(payload_index, create_list_drop_and_errors) {
  char *dir = tu_tmpdir("pidx2");
  qv_db *db = open_db(dir);
  qv_collection *c = make(db, "c"), *other = make(db, "o");
  load(c, other, 0, 130);
  qv_err e;
  cr_assert_eq(qv_payload_index_create(c, "n", QV_INDEX_INTEGER, &e), QV_OK);
  cr_assert_eq(qv_payload_index_create(c, "cat", QV_INDEX_KEYWORD, &e), QV_OK);
  cr_assert_eq(qv_payload_index_create(c, "cat", QV_INDEX_KEYWORD, &e), QV_OK, "idempotent");
  qv_payload_index_info *info;
  size_t n;
  cr_assert_eq(qv_payload_index_list(c, &info, &n, &e), QV_OK);
  cr_assert_eq(n, 2);
  cr_expect_str_eq(info[0].field, "n");
  /* 130 points: 10 lack n (i % 13 == 0); strings don't count (i % 11 == 0
   * but not i % 7 == 0 nor i % 13 == 0: 10 of them) */
  cr_expect_eq(info[0].points, 130 - 10 - 10, "points with a number at n: %llu",
               (unsigned long long)info[0].points);
  cr_expect_eq(info[1].points, 130);
  free(info);
  cr_expect_eq(qv_payload_index_create(c, "", QV_INDEX_KEYWORD, &e), QV_EINVAL);
  cr_expect_eq(qv_payload_index_create(c, "a..b", QV_INDEX_KEYWORD, &e), QV_EINVAL);
  cr_expect_eq(qv_payload_index_create(c, "a", (qv_index_type)99, &e), QV_EINVAL);
  qv_index_type t;
  cr_expect_eq(qv_index_type_parse("geo", &t, &e), QV_EINVAL);
  cr_assert_eq(qv_index_type_parse("datetime", &t, &e), QV_OK);
  cr_expect_eq(t, QV_INDEX_DATETIME);
  cr_assert_eq(qv_payload_index_drop(c, "n", &e), QV_OK);
  cr_expect_eq(qv_payload_index_drop(c, "n", &e), QV_ENOTFOUND);
  qv_collection_release(c);
  qv_collection_release(other);
  qv_close(db);
  db = open_db(dir); /* durable */
  cr_assert_eq(qv_collection_get(db, "c", &c, &e), QV_OK);
  cr_assert_eq(qv_payload_index_list(c, &info, &n, &e), QV_OK);
  cr_assert_eq(n, 1);
  cr_expect_str_eq(info[0].field, "cat");
  cr_expect_eq(info[0].type, QV_INDEX_KEYWORD);
  free(info);
  qv_collection_release(c);
  qv_close(db);
  tu_rmdir(dir);
}
