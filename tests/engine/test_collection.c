/* test_collection.c: the public collection and point API — lifecycle,
 * validation errors, get/delete/count/scroll semantics, persistence. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"
#include "testutil.h"

static qv_db *open_db(const char *dir) {
  qv_db *db = NULL;
  qv_err e;
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_rc rc = qv_open(dir, &o, &db, &e);
  cr_assert_eq(rc, QV_OK, "open %s: %s", dir, e.msg);
  return db;
}

static qv_collection *make(qv_db *db, const char *name, uint32_t dim,
                           qv_distance d, uint32_t shards) {
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = dim;
  cfg.distance = d;
  cfg.shard_number = shards;
  qv_err e;
  cr_assert_eq(qv_collection_create(db, name, &cfg, &e), QV_OK, "%s", e.msg);
  qv_collection *c;
  cr_assert_eq(qv_collection_get(db, name, &c, &e), QV_OK, "%s", e.msg);
  return c;
}

static void put(qv_collection *c, uint64_t id, const float *v, uint32_t dim,
                const char *payload) {
  qv_point p = {.id = qv_id_num(id), .vector = v, .dim = dim, .payload = payload};
  qv_err e;
  cr_assert_eq(qv_upsert(c, &p, 1, &e), QV_OK, "upsert %llu: %s",
               (unsigned long long)id, e.msg);
}

Test(collection, create_list_get_drop) {
  char *dir = tu_tmpdir("coll");
  qv_db *db = open_db(dir);
  qv_collection *a = make(db, "beta", 4, QV_DOT, 1);
  qv_collection *b = make(db, "alpha", 4, QV_DOT, 1);
  char **names;
  size_t n;
  qv_err e;
  cr_assert_eq(qv_collection_list(db, &names, &n, &e), QV_OK);
  cr_assert_eq(n, 2);
  cr_expect_str_eq(names[0], "alpha");
  cr_expect_str_eq(names[1], "beta");
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = 4;
  cr_expect_eq(qv_collection_create(db, "alpha", &cfg, &e), QV_EEXIST);
  cr_expect(strstr(e.msg, "alpha") != NULL, "message names the collection: %s", e.msg);
  qv_collection_release(a);
  qv_collection_release(b);
  cr_assert_eq(qv_collection_drop(db, "alpha", &e), QV_OK, "%s", e.msg);
  qv_collection *x;
  cr_expect_eq(qv_collection_get(db, "alpha", &x, &e), QV_ENOTFOUND);
  cr_expect_eq(qv_collection_drop(db, "alpha", &e), QV_ENOTFOUND);
  qv_close(db);
  db = open_db(dir); /* the drop is durable, beta survives */
  cr_expect_eq(qv_collection_get(db, "alpha", &x, &e), QV_ENOTFOUND);
  cr_assert_eq(qv_collection_get(db, "beta", &x, &e), QV_OK);
  qv_collection_release(x);
  qv_close(db);
  tu_rmdir(dir);
}

Test(collection, rejects_names_that_escape_or_are_malformed) {
  char *dir = tu_tmpdir("names");
  qv_db *db = open_db(dir);
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = 3;
  const char *bad[] = {"", ".", "..", "../x", "a/b", "/", "a\\b", "x y", "é"};
  qv_err e;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    cr_expect_eq(qv_collection_create(db, bad[i], &cfg, &e), QV_EINVAL,
                 "name \"%s\" must be rejected", bad[i]);
  char longname[300];
  memset(longname, 'a', 256);
  longname[256] = 0;
  cr_expect_eq(qv_collection_create(db, longname, &cfg, &e), QV_EINVAL);
  longname[255] = 0;
  cr_expect_eq(qv_collection_create(db, longname, &cfg, &e), QV_OK, "%s", e.msg);
  qv_close(db);
  tu_rmdir(dir);
}

Test(collection, rejects_bad_config) {
  char *dir = tu_tmpdir("cfg");
  qv_db *db = open_db(dir);
  qv_collection_config cfg;
  qv_err e;
  qv_collection_config_init(&cfg);
  cfg.dim = 0;
  cr_expect_eq(qv_collection_create(db, "c", &cfg, &e), QV_EINVAL);
  cfg.dim = 65536;
  cr_expect_eq(qv_collection_create(db, "c", &cfg, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "65536") != NULL, "%s", e.msg);
  cfg.dim = 65535;
  cfg.hnsw_m = 1;
  cr_expect_eq(qv_collection_create(db, "c", &cfg, &e), QV_EINVAL);
  qv_collection_config_init(&cfg);
  cfg.dim = 65535; /* the largest dimension works */
  cr_expect_eq(qv_collection_create(db, "c", &cfg, &e), QV_OK, "%s", e.msg);
  qv_close(db);
  tu_rmdir(dir);
}

Test(points, validation_rejects_whole_batch) {
  char *dir = tu_tmpdir("valid");
  qv_db *db = open_db(dir);
  qv_collection *c = make(db, "v", 3, QV_EUCLID, 1);
  float good[3] = {1, 2, 3}, nan_v[3] = {1, NAN, 3}, inf_v[3] = {INFINITY, 0, 0};
  qv_point pts[2] = {{.id = qv_id_num(1), .vector = good, .dim = 3},
                     {.id = qv_id_num(2), .vector = good, .dim = 2}};
  qv_err e;
  cr_expect_eq(qv_upsert(c, pts, 2, &e), QV_EDIM);
  cr_expect(strstr(e.msg, "2 dimensions") && strstr(e.msg, "expects 3"), "%s", e.msg);
  pts[1].dim = 3;
  pts[1].vector = nan_v;
  cr_expect_eq(qv_upsert(c, pts, 2, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "NaN") != NULL, "%s", e.msg);
  pts[1].vector = inf_v;
  cr_expect_eq(qv_upsert(c, pts, 2, &e), QV_EINVAL);
  pts[1].vector = NULL;
  cr_expect_eq(qv_upsert(c, pts, 2, &e), QV_EINVAL);
  pts[1].vector = good;
  pts[1].payload = "[1,2]";
  cr_expect_eq(qv_upsert(c, pts, 2, &e), QV_EINVAL);
  pts[1].payload = "{\"a\":";
  cr_expect_eq(qv_upsert(c, pts, 2, &e), QV_EINVAL);
  uint64_t n;
  qv_count(c, &n, &e);
  cr_expect_eq(n, 0, "nothing of a rejected batch is written");
  pts[1].payload = "{\"a\": [1, \"x\", null]}";
  cr_expect_eq(qv_upsert(c, pts, 2, &e), QV_OK, "%s", e.msg);
  qv_count(c, &n, &e);
  cr_expect_eq(n, 2);
  qv_collection_release(c);
  qv_close(db);
  tu_rmdir(dir);
}

Test(points, get_returns_vector_and_payload_verbatim) {
  char *dir = tu_tmpdir("get");
  qv_db *db = open_db(dir);
  qv_collection *c = make(db, "g", 3, QV_DOT, 1);
  float v[3] = {0.5f, -1.25f, 3};
  const char *payload = "{\"name\": \"caf\xc3\xa9\", \"n\": 1.50, \"tags\": [true, null]}";
  put(c, 7, v, 3, payload);
  qv_point_id uid;
  qv_err e;
  cr_assert_eq(qv_id_parse_uuid("550E8400-E29B-41D4-A716-446655440000", &uid, &e), QV_OK);
  qv_point p = {.id = uid, .vector = v, .dim = 3};
  cr_assert_eq(qv_upsert(c, &p, 1, &e), QV_OK);
  qv_point_id ids[3] = {qv_id_num(7), qv_id_num(8), uid};
  qv_records r;
  cr_assert_eq(qv_get(c, ids, 3, true, true, &r, &e), QV_OK);
  cr_assert_eq(r.n, 2, "missing ids are skipped");
  cr_expect_eq(r.items[0].id.num, 7);
  cr_expect_arr_eq(r.items[0].vector, v, sizeof v, "Dot vectors are stored as given");
  cr_expect_str_eq(r.items[0].payload, payload);
  cr_expect(r.items[1].id.is_uuid);
  cr_expect_str_eq(r.items[1].payload, "{}", "no payload reads back as {}");
  char buf[40];
  cr_expect_str_eq(qv_id_format(&r.items[1].id, buf), "550e8400-e29b-41d4-a716-446655440000");
  qv_records_free(&r);
  qv_collection_release(c);
  qv_close(db);
  tu_rmdir(dir);
}

Test(points, upsert_replaces_and_delete_removes) {
  char *dir = tu_tmpdir("upd");
  qv_db *db = open_db(dir);
  qv_collection *c = make(db, "u", 2, QV_EUCLID, 1);
  float a[2] = {1, 1}, b[2] = {5, 5};
  put(c, 1, a, 2, "{\"v\":1}");
  qv_err e;
  cr_assert_eq(qv_collection_optimize(c, &e), QV_OK, "%s", e.msg); /* sealed */
  put(c, 1, b, 2, "{\"v\":2}"); /* replaces across segments */
  qv_records r;
  qv_point_id id = qv_id_num(1);
  cr_assert_eq(qv_get(c, &id, 1, true, true, &r, &e), QV_OK);
  cr_assert_eq(r.n, 1);
  cr_expect_float_eq(r.items[0].vector[0], 5, 0);
  cr_expect_str_eq(r.items[0].payload, "{\"v\":2}");
  qv_records_free(&r);
  uint64_t n;
  qv_count(c, &n, &e);
  cr_expect_eq(n, 1);
  size_t deleted = 99;
  qv_point_id ids[2] = {qv_id_num(1), qv_id_num(42)};
  cr_assert_eq(qv_delete(c, ids, 2, &deleted, &e), QV_OK);
  cr_expect_eq(deleted, 1, "only existing ids count");
  qv_count(c, &n, &e);
  cr_expect_eq(n, 0);
  qv_search_params p;
  qv_search_params_init(&p);
  qv_hit hits[10];
  size_t nh;
  cr_assert_eq(qv_search(c, a, 2, &p, hits, &nh, &e), QV_OK);
  cr_expect_eq(nh, 0, "deleted points are not found (sealed or not)");
  qv_collection_release(c);
  qv_close(db);
  db = open_db(dir); /* ... and stay deleted after reopening */
  cr_assert_eq(qv_collection_get(db, "u", &c, &e), QV_OK);
  qv_count(c, &n, &e);
  cr_expect_eq(n, 0);
  cr_assert_eq(qv_search(c, a, 2, &p, hits, &nh, &e), QV_OK);
  cr_expect_eq(nh, 0);
  qv_collection_release(c);
  qv_close(db);
  tu_rmdir(dir);
}

static void scroll_all(qv_collection *c, size_t page, uint64_t *out, size_t *n) {
  qv_point_id cur;
  bool has = false, first = true;
  *n = 0;
  while (first || has) {
    qv_records r;
    qv_point_id next;
    qv_err e;
    cr_assert_eq(qv_scroll(c, first ? NULL : &cur, page, false, false, &r, &next, &has, &e),
                 QV_OK, "%s", e.msg);
    cr_assert(r.n <= page);
    for (size_t i = 0; i < r.n; i++) out[(*n)++] = r.items[i].id.num;
    qv_records_free(&r);
    cur = next;
    first = false;
  }
}

Test(points, scroll_pages_through_every_id_in_order_across_shards) {
  char *dir = tu_tmpdir("scroll");
  qv_db *db = open_db(dir);
  qv_collection *c = make(db, "s", 2, QV_DOT, 3);
  uint64_t seed = 5;
  float v[2] = {1, 0};
  for (int i = 0; i < 500; i++) put(c, tu_rand(&seed) % 100000, v, 2, NULL);
  uint64_t n;
  qv_err e;
  qv_count(c, &n, &e);
  uint64_t *ids = malloc(600 * sizeof *ids);
  size_t got;
  scroll_all(c, 7, ids, &got);
  cr_expect_eq(got, n, "scroll visits every point once (%zu vs %llu)", got,
               (unsigned long long)n);
  for (size_t i = 1; i < got; i++) cr_expect_lt(ids[i - 1], ids[i], "ascending ids");
  free(ids);
  qv_collection_release(c);
  qv_close(db);
  tu_rmdir(dir);
}

Test(points, integer_ids_sort_before_uuids) {
  qv_point_id u, i = qv_id_num(UINT64_MAX);
  cr_assert_eq(qv_id_parse_uuid("00000000-0000-0000-0000-000000000000", &u, NULL), QV_OK);
  cr_expect_lt(qv_id_cmp(&i, &u), 0);
  qv_point_id forms[4];
  cr_assert_eq(qv_id_parse_uuid("936DA01F9ABD4d9d80C702AF85C822A8", &forms[0], NULL), QV_OK);
  cr_assert_eq(qv_id_parse_uuid("{936da01f-9abd-4d9d-80c7-02af85c822a8}", &forms[1], NULL), QV_OK);
  cr_assert_eq(qv_id_parse_uuid("urn:uuid:936da01f-9abd-4d9d-80c7-02af85c822a8", &forms[2], NULL), QV_OK);
  cr_assert_eq(qv_id_parse_uuid("936da01f-9abd-4d9d-80c7-02af85c822a8", &forms[3], NULL), QV_OK);
  for (int k = 1; k < 4; k++) cr_expect_eq(qv_id_cmp(&forms[0], &forms[k]), 0);
  qv_err e;
  cr_expect_eq(qv_id_parse_uuid("936da01f-9abd-4d9d-80c7-02af85c822a", &u, &e), QV_EINVAL);
  cr_expect_eq(qv_id_parse_uuid("not-a-uuid", &u, &e), QV_EINVAL);
  cr_expect_eq(qv_id_parse_uuid("936da01f+9abd-4d9d-80c7-02af85c822a8", &u, &e), QV_EINVAL);
}

Test(db, second_open_of_the_same_directory_is_busy) {
  char *dir = tu_tmpdir("busy");
  qv_db *db = open_db(dir);
  qv_db *db2 = NULL;
  qv_err e;
  cr_expect_eq(qv_open(dir, NULL, &db2, &e), QV_EBUSY);
  cr_expect_null(db2);
  qv_close(db);
  cr_expect_eq(qv_open(dir, NULL, &db2, &e), QV_OK, "free again after close: %s", e.msg);
  qv_close(db2);
  tu_rmdir(dir);
}

Test(collection, update_changes_only_the_mutable_settings_durably) {
  char *dir = tu_tmpdir("update");
  qv_db *db = open_db(dir);
  qv_collection *c = make(db, "u", 4, QV_EUCLID, 1);
  qv_collection_info info;
  qv_err e;
  cr_assert_eq(qv_collection_info_get(c, &info, &e), QV_OK);
  qv_collection_config cfg = info.config;
  cfg.hnsw_m = 8;
  cfg.hnsw_ef_construct = 40;
  cfg.full_scan_threshold = 5;
  cfg.segment_max_points = 32;
  cr_assert_eq(qv_collection_update(c, &cfg, &e), QV_OK, "%s", e.msg);

  qv_collection_config bad = cfg;
  bad.dim = 8;
  cr_assert_eq(qv_collection_update(c, &bad, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "vector size") != NULL, "%s", e.msg);
  bad = cfg;
  bad.storage.quantization = QV_QUANT_SCALAR;
  cr_assert_eq(qv_collection_update(c, &bad, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "storage") != NULL, "%s", e.msg);
  bad = cfg;
  bad.hnsw_m = 2;
  cr_assert_eq(qv_collection_update(c, &bad, &e), QV_EINVAL);

  /* The new segment size applies from the next mutable segment on. */
  cr_assert_eq(qv_collection_optimize(c, &e), QV_OK, "%s", e.msg);
  uint64_t seed = 5;
  for (uint64_t i = 0; i < 100; i++) {
    float v[4] = {tu_randf(&seed), tu_randf(&seed), tu_randf(&seed), tu_randf(&seed)};
    put(c, i, v, 4, NULL);
  }
  cr_assert_eq(qv_collection_info_get(c, &info, &e), QV_OK);
  cr_expect_geq(info.segments_count, 4, "100 points in segments of 32: %u segments",
                info.segments_count);
  qv_collection_release(c);
  qv_close(db);

  db = open_db(dir);
  cr_assert_eq(qv_collection_get(db, "u", &c, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_collection_info_get(c, &info, &e), QV_OK);
  cr_expect_eq(info.config.hnsw_m, 8);
  cr_expect_eq(info.config.hnsw_ef_construct, 40);
  cr_expect_eq(info.config.full_scan_threshold, 5);
  cr_expect_eq(info.config.segment_max_points, 32);
  cr_expect_eq(info.config.dim, 4);
  cr_expect_eq(info.points_count, 100);
  qv_collection_release(c);
  qv_close(db);
  tu_rmdir(dir);
}
