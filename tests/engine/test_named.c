/* test_named.c: named vectors — per-vector dimensions and distances, points
 * with any subset of named vectors, search through each, reads, errors, and
 * the same answers after sealing and reopening. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"
#include "testutil.h"

static qv_db *open_db(const char *dir) {
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_db *db;
  qv_err e;
  cr_assert_eq(qv_open(dir, &o, &db, &e), QV_OK, "%s", e.msg);
  return db;
}

static void make(qv_db *db, bool with_unnamed) {
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = with_unnamed ? 4 : 0;
  cfg.distance = QV_EUCLID;
  cfg.full_scan_threshold = 10;
  cfg.n_named = 2;
  strcpy(cfg.named[0].name, "img");
  cfg.named[0].dim = 3;
  cfg.named[0].distance = QV_COSINE;
  strcpy(cfg.named[1].name, "txt");
  cfg.named[1].dim = 2;
  cfg.named[1].distance = QV_DOT;
  qv_err e;
  cr_assert_eq(qv_collection_create(db, "n", &cfg, &e), QV_OK, "%s", e.msg);
}

/* Points 0..199: every one has the unnamed vector and "img"; only even ids
 * have "txt". */
static void load(qv_collection *c) {
  static float base[200][4], img[200][3], txt[200][2];
  uint64_t s = 3;
  qv_point p[200];
  qv_named_vector nv[200][2];
  for (int i = 0; i < 200; i++) {
    for (int d = 0; d < 4; d++) base[i][d] = tu_randf(&s);
    for (int d = 0; d < 3; d++) img[i][d] = tu_randf(&s);
    for (int d = 0; d < 2; d++) txt[i][d] = tu_randf(&s);
    nv[i][0] = (qv_named_vector){"img", img[i], 3};
    nv[i][1] = (qv_named_vector){"txt", txt[i], 2};
    p[i] = (qv_point){.id = qv_id_num((uint64_t)i), .vector = base[i], .dim = 4,
                      .named = nv[i], .n_named = i % 2 == 0 ? 2 : 1};
  }
  qv_err e;
  cr_assert_eq(qv_upsert(c, p, 200, &e), QV_OK, "%s", e.msg);
}

static void check_searches(qv_collection *c) {
  qv_search_params p;
  qv_search_params_init(&p);
  p.k = 200;
  p.exact = true;
  qv_hit h[200];
  size_t n;
  qv_err e;
  float q4[4] = {0.1f, 0.2f, 0.3f, 0.4f}, q3[3] = {1, 0, 0}, q2[2] = {1, 1};
  cr_assert_eq(qv_search(c, q4, 4, &p, h, &n, &e), QV_OK, "%s", e.msg);
  cr_expect_eq(n, 200, "every point has the unnamed vector");
  p.vector_name = "img";
  cr_assert_eq(qv_search(c, q3, 3, &p, h, &n, &e), QV_OK, "%s", e.msg);
  cr_expect_eq(n, 200);
  cr_expect_leq(h[0].score, 1.0001f, "cosine similarity");
  cr_expect_geq(h[n - 1].score, -1.0001f);
  p.vector_name = "txt";
  cr_assert_eq(qv_search(c, q2, 2, &p, h, &n, &e), QV_OK, "%s", e.msg);
  cr_expect_eq(n, 100, "only points with \"txt\" are found through it");
  for (size_t i = 0; i < n; i++) cr_expect_eq(h[i].id.num % 2, 0);
  for (size_t i = 1; i < n; i++) cr_expect_geq(h[i - 1].score, h[i].score, "dot: descending");
  /* the graph path agrees on what it may return */
  p.exact = false;
  p.k = 10;
  cr_assert_eq(qv_search(c, q2, 2, &p, h, &n, &e), QV_OK);
  cr_expect_eq(n, 10);
  for (size_t i = 0; i < n; i++) cr_expect_eq(h[i].id.num % 2, 0, "no point without txt");
  p.vector_name = "nope";
  cr_expect_eq(qv_search(c, q2, 2, &p, h, &n, &e), QV_EINVAL);
  p.vector_name = "img";
  cr_expect_eq(qv_search(c, q2, 2, &p, h, &n, &e), QV_EDIM);
}

static void check_get(qv_collection *c) {
  qv_point_id ids[2] = {qv_id_num(4), qv_id_num(5)};
  qv_records r;
  cr_assert_eq(qv_get(c, ids, 2, true, false, &r, NULL), QV_OK);
  cr_assert_eq(r.n, 2);
  cr_expect_not_null(r.items[0].vector);
  cr_expect_eq(r.items[0].n_named, 2);
  cr_expect_eq(r.items[1].n_named, 1, "odd ids have no txt");
  cr_expect_str_eq(r.items[1].named[0].name, "img");
  float norm = 0;
  for (int d = 0; d < 3; d++) norm += r.items[1].named[0].vector[d] * r.items[1].named[0].vector[d];
  cr_expect_float_eq(norm, 1, 1e-5, "cosine vectors are stored normalised");
  qv_records_free(&r);
}

Test(named, search_get_seal_and_reopen) {
  char *dir = tu_tmpdir("named");
  qv_db *db = open_db(dir);
  make(db, true);
  qv_collection *c;
  qv_err e;
  cr_assert_eq(qv_collection_get(db, "n", &c, &e), QV_OK);
  load(c);
  check_searches(c);
  check_get(c);
  cr_assert_eq(qv_collection_optimize(c, &e), QV_OK, "%s", e.msg);
  check_searches(c);
  check_get(c);
  qv_collection_release(c);
  qv_close(db);
  db = open_db(dir);
  cr_assert_eq(qv_collection_get(db, "n", &c, &e), QV_OK, "%s", e.msg);
  qv_collection_info info;
  qv_collection_info_get(c, &info, &e);
  cr_expect_eq(info.config.n_named, 2, "named vectors survive in config.json");
  cr_expect_str_eq(info.config.named[1].name, "txt");
  check_searches(c);
  check_get(c);
  qv_collection_release(c);
  qv_close(db);
  tu_rmdir(dir);
}

Test(named, validation_errors_name_the_problem) {
  char *dir = tu_tmpdir("namederr");
  qv_db *db = open_db(dir);
  make(db, false); /* named vectors only */
  qv_collection *c;
  qv_err e;
  cr_assert_eq(qv_collection_get(db, "n", &c, &e), QV_OK);
  float v3[3] = {1, 2, 3}, v2[2] = {1, 2};
  qv_named_vector ok = {"img", v3, 3}, bad_dim = {"img", v2, 2}, unknown = {"zzz", v2, 2};
  qv_point p = {.id = qv_id_num(1), .named = &ok, .n_named = 1};
  cr_expect_eq(qv_upsert(c, &p, 1, &e), QV_OK, "%s", e.msg);
  p.named = &bad_dim;
  cr_expect_eq(qv_upsert(c, &p, 1, &e), QV_EDIM);
  cr_expect(strstr(e.msg, "img") != NULL, "%s", e.msg);
  p.named = &unknown;
  cr_expect_eq(qv_upsert(c, &p, 1, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "zzz") != NULL, "%s", e.msg);
  qv_named_vector twice[2] = {ok, ok};
  p.named = twice;
  p.n_named = 2;
  cr_expect_eq(qv_upsert(c, &p, 1, &e), QV_EINVAL);
  p.n_named = 0;
  cr_expect_eq(qv_upsert(c, &p, 1, &e), QV_EINVAL, "a point needs some vector");
  p.vector = v3;
  p.dim = 3;
  cr_expect_eq(qv_upsert(c, &p, 1, &e), QV_EINVAL, "no unnamed vector in this collection");
  qv_search_params sp;
  qv_search_params_init(&sp);
  qv_hit h[10];
  size_t n;
  cr_expect_eq(qv_search(c, v3, 3, &sp, h, &n, &e), QV_EINVAL, "must name a vector");
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.n_named = 2;
  strcpy(cfg.named[0].name, "a");
  cfg.named[0].dim = 2;
  strcpy(cfg.named[1].name, "a");
  cfg.named[1].dim = 2;
  cr_expect_eq(qv_collection_create(db, "dup", &cfg, &e), QV_EINVAL, "duplicate names");
  strcpy(cfg.named[1].name, "b/c");
  cr_expect_eq(qv_collection_create(db, "dup", &cfg, &e), QV_EINVAL, "bad characters");
  qv_collection_release(c);
  qv_close(db);
  tu_rmdir(dir);
}
