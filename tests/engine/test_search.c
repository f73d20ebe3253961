/* test_search.c: search through the public API — score conventions of the
 * four distances, exact search against brute force, HNSW recall on real data
 * (SIFT-small), allow-sets that still return k, offset, threshold, batches,
 * and results spanning sealed and mutable segments and several shards. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"
#include "testutil.h"

typedef struct fixture {
  char *dir;
  qv_db *db;
  qv_collection *c;
} fixture;

static void setup(fixture *f, uint32_t dim, qv_distance d, uint32_t shards,
                  uint32_t seg_max) {
  f->dir = tu_tmpdir("search");
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_err e;
  cr_assert_eq(qv_open(f->dir, &o, &f->db, &e), QV_OK, "%s", e.msg);
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = dim;
  cfg.distance = d;
  cfg.shard_number = shards;
  if (seg_max) cfg.segment_max_points = seg_max;
  cfg.full_scan_threshold = 100;
  cr_assert_eq(qv_collection_create(f->db, "s", &cfg, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_collection_get(f->db, "s", &f->c, &e), QV_OK);
}

static void teardown(fixture *f) {
  qv_collection_release(f->c);
  qv_close(f->db);
  tu_rmdir(f->dir);
}

static void load(fixture *f, const float *vecs, size_t n, uint32_t dim) {
  qv_point *p = malloc(n * sizeof *p);
  for (size_t i = 0; i < n; i++)
    p[i] = (qv_point){.id = qv_id_num(i), .vector = vecs + i * dim, .dim = dim};
  qv_err e;
  for (size_t at = 0; at < n; at += 1000) {
    size_t m = n - at < 1000 ? n - at : 1000;
    cr_assert_eq(qv_upsert(f->c, p + at, m, &e), QV_OK, "%s", e.msg);
  }
  free(p);
}

static size_t search(fixture *f, const float *q, uint32_t dim,
                     const qv_search_params *p, qv_hit *hits) {
  size_t n;
  qv_err e;
  cr_assert_eq(qv_search(f->c, q, dim, p, hits, &n, &e), QV_OK, "%s", e.msg);
  return n;
}

Test(search, euclid_scores_are_distances_ascending) {
  fixture f;
  setup(&f, 2, QV_EUCLID, 1, 0);
  float v[] = {0, 0, 3, 4, 1, 0};
  load(&f, v, 3, 2);
  qv_search_params p;
  qv_search_params_init(&p);
  qv_hit h[10];
  float q[2] = {0, 0};
  cr_assert_eq(search(&f, q, 2, &p, h), 3);
  cr_expect_eq(h[0].id.num, 0);
  cr_expect_float_eq(h[0].score, 0, 1e-6);
  cr_expect_eq(h[1].id.num, 2);
  cr_expect_float_eq(h[1].score, 1, 1e-6);
  cr_expect_eq(h[2].id.num, 1);
  cr_expect_float_eq(h[2].score, 5, 1e-5, "sqrt(3^2+4^2), not squared");
  p.has_score_threshold = true;
  p.score_threshold = 4.5f; /* distances below it */
  cr_expect_eq(search(&f, q, 2, &p, h), 2);
  teardown(&f);
}

Test(search, manhattan_and_dot) {
  fixture f;
  setup(&f, 2, QV_MANHATTAN, 1, 0);
  float v[] = {1, 1, -2, 3};
  load(&f, v, 2, 2);
  qv_search_params p;
  qv_search_params_init(&p);
  qv_hit h[10];
  float q[2] = {0, 0};
  cr_assert_eq(search(&f, q, 2, &p, h), 2);
  cr_expect_float_eq(h[0].score, 2, 1e-6);
  cr_expect_float_eq(h[1].score, 5, 1e-6);
  teardown(&f);
  setup(&f, 2, QV_DOT, 1, 0);
  load(&f, v, 2, 2);
  float q2[2] = {1, 2};
  cr_assert_eq(search(&f, q2, 2, &p, h), 2);
  cr_expect_eq(h[0].id.num, 1, "higher dot product first");
  cr_expect_float_eq(h[0].score, 4, 1e-6);
  cr_expect_float_eq(h[1].score, 3, 1e-6);
  p.has_score_threshold = true;
  p.score_threshold = 3.5f; /* scores above it */
  cr_expect_eq(search(&f, q2, 2, &p, h), 1);
  teardown(&f);
}

Test(search, cosine_normalises_stored_vectors_and_queries) {
  fixture f;
  setup(&f, 2, QV_COSINE, 1, 0);
  float v[] = {3, 4, 0, 10};
  load(&f, v, 2, 2);
  qv_search_params p;
  qv_search_params_init(&p);
  qv_hit h[10];
  float q[2] = {6, 8};
  cr_assert_eq(search(&f, q, 2, &p, h), 2);
  cr_expect_eq(h[0].id.num, 0);
  cr_expect_float_eq(h[0].score, 1, 1e-6, "self similarity is 1");
  cr_expect_float_eq(h[1].score, 0.8f, 1e-6);
  qv_records r;
  qv_point_id id = qv_id_num(0);
  cr_assert_eq(qv_get(f.c, &id, 1, true, false, &r, NULL), QV_OK);
  cr_expect_float_eq(r.items[0].vector[0], 0.6f, 1e-6, "stored normalised");
  cr_expect_float_eq(r.items[0].vector[1], 0.8f, 1e-6);
  qv_records_free(&r);
  teardown(&f);
}

Test(search, rejects_bad_queries) {
  fixture f;
  setup(&f, 3, QV_EUCLID, 1, 0);
  qv_search_params p;
  qv_search_params_init(&p);
  qv_hit h[10];
  size_t n;
  qv_err e;
  float q[3] = {0, NAN, 0};
  cr_expect_eq(qv_search(f.c, q, 3, &p, h, &n, &e), QV_EINVAL);
  q[1] = 0;
  cr_expect_eq(qv_search(f.c, q, 4, &p, h, &n, &e), QV_EDIM);
  p.k = 0;
  cr_expect_eq(qv_search(f.c, q, 3, &p, h, &n, &e), QV_EINVAL);
  teardown(&f);
}

/* Exact search equals brute force; the graph agrees on most of it. */
Test(search, exact_matches_brute_force_across_segments_and_shards) {
  fixture f;
  const uint32_t dim = 24, n = 3000;
  setup(&f, dim, QV_EUCLID, 3, 700); /* several sealed segments per shard */
  float *v = tu_random_vectors(n, dim, 11);
  load(&f, v, n / 2, dim);
  qv_err e;
  cr_assert_eq(qv_collection_optimize(f.c, &e), QV_OK, "%s", e.msg);
  qv_point *p2 = malloc(n / 2 * sizeof *p2);
  for (uint32_t i = 0; i < n / 2; i++)
    p2[i] = (qv_point){.id = qv_id_num(n / 2 + i), .vector = v + (size_t)(n / 2 + i) * dim,
                       .dim = dim};
  cr_assert_eq(qv_upsert(f.c, p2, n / 2, &e), QV_OK); /* mutable, unsealed */
  free(p2);
  float *q = tu_random_vectors(20, dim, 12);
  qv_search_params p;
  qv_search_params_init(&p);
  p.exact = true;
  qv_hit h[10];
  uint32_t truth[10], got[10];
  double recall = 0;
  for (int i = 0; i < 20; i++) {
    tu_exact_knn_l2(v, n, dim, q + i * dim, 10, truth);
    cr_assert_eq(search(&f, q + i * dim, dim, &p, h), 10);
    for (int j = 0; j < 10; j++) cr_expect_eq(h[j].id.num, truth[j], "query %d rank %d", i, j);
    qv_search_params g;
    qv_search_params_init(&g);
    g.ef = 100;
    cr_assert_eq(search(&f, q + i * dim, dim, &g, h), 10);
    for (int j = 0; j < 10; j++) got[j] = (uint32_t)h[j].id.num;
    recall += tu_recall(got, 10, truth, 10);
  }
  cr_expect_geq(recall / 20, 0.9, "graph recall %.3f", recall / 20);
  free(q);
  free(v);
  teardown(&f);
}

/* Real data: SIFT-small through the engine, against its exact ground
 * truth. Floor 0.95 at ef=64 (measured about 0.99). */
Test(search, hnsw_recall_on_siftsmall, .timeout = 600) {
  char *base = tu_data_path("siftsmall/siftsmall_base.fvecs");
  char *qf = tu_data_path("siftsmall/siftsmall_query.fvecs");
  char *gt = tu_data_path("siftsmall/siftsmall_groundtruth.ivecs");
  cr_assert(base && qf && gt, "SIFT-small missing: set QV_SHARED_DATA");
  size_t n, dim, nq, qdim, ng, gdim;
  float *v = tu_read_fvecs(base, &n, &dim);
  float *q = tu_read_fvecs(qf, &nq, &qdim);
  int32_t *g = tu_read_ivecs(gt, &ng, &gdim);
  cr_assert_eq(n, 10000);
  fixture f;
  setup(&f, (uint32_t)dim, QV_EUCLID, 1, 0);
  load(&f, v, n, (uint32_t)dim);
  qv_err e;
  cr_assert_eq(qv_collection_optimize(f.c, &e), QV_OK, "%s", e.msg);
  qv_collection_info info;
  qv_collection_info_get(f.c, &info, &e);
  cr_expect_eq(info.indexed_vectors_count, 10000);
  qv_search_params p;
  qv_search_params_init(&p);
  p.ef = 64;
  qv_hit h[10];
  double recall = 0;
  for (size_t i = 0; i < nq; i++) {
    cr_assert_eq(search(&f, q + i * dim, (uint32_t)dim, &p, h), 10);
    uint32_t got[10], truth[10];
    for (int j = 0; j < 10; j++) {
      got[j] = (uint32_t)h[j].id.num;
      truth[j] = (uint32_t)g[i * gdim + j];
    }
    recall += tu_recall(got, 10, truth, 10);
  }
  recall /= (double)nq;
  cr_log_info("siftsmall recall@10 at ef=64: %.4f", recall);
  cr_expect_geq(recall, 0.95, "recall@10 %.4f below the 0.95 floor", recall);
  teardown(&f);
  free(v);
  free(q);
  free(g);
  free(base);
  free(qf);
  free(gt);
}

static void check_allowed(fixture *f, const float *v, uint32_t dim, size_t n_allow,
                          uint32_t stride) {
  qv_point_id *allow = malloc(n_allow * sizeof *allow);
  for (size_t i = 0; i < n_allow; i++) allow[i] = qv_id_num(i * stride);
  qv_search_params p;
  qv_search_params_init(&p);
  p.allow_ids = allow;
  p.n_allow = n_allow;
  qv_hit h[10];
  for (int qi = 0; qi < 10; qi++) {
    size_t got = search(f, v + (size_t)(qi * 37 + 1) * dim, dim, &p, h);
    cr_expect_eq(got, n_allow < 10 ? n_allow : 10, "k results when k allowed exist");
    for (size_t j = 0; j < got; j++)
      cr_expect_eq(h[j].id.num % stride, 0, "only allowed ids (%llu)",
                   (unsigned long long)h[j].id.num);
  }
  free(allow);
}

Test(search, allow_set_returns_k_when_k_allowed_exist) {
  fixture f;
  const uint32_t dim = 16, n = 8000;
  setup(&f, dim, QV_EUCLID, 2, 0);
  float *v = tu_random_vectors(n, dim, 3);
  load(&f, v, n, dim);
  qv_err e;
  cr_assert_eq(qv_collection_optimize(f.c, &e), QV_OK, "%s", e.msg);
  check_allowed(&f, v, dim, 3, 7);      /* fewer than k */
  check_allowed(&f, v, dim, 50, 97);    /* small: scored directly */
  check_allowed(&f, v, dim, 4000, 2);   /* large: filtered graph search */
  check_allowed(&f, v, dim, 2700, 3);
  qv_search_params p;
  qv_search_params_init(&p);
  qv_point_id none[1];
  p.allow_ids = none; /* non-NULL with n_allow 0: nothing allowed */
  p.n_allow = 0;
  qv_hit h[10];
  cr_expect_eq(search(&f, v, dim, &p, h), 0);
  free(v);
  teardown(&f);
}

Test(search, offset_skips_and_batch_equals_single) {
  fixture f;
  const uint32_t dim = 8, n = 500;
  setup(&f, dim, QV_DOT, 1, 0);
  float *v = tu_random_vectors(n, dim, 9);
  load(&f, v, n, dim);
  qv_search_params p;
  qv_search_params_init(&p);
  p.exact = true;
  p.k = 15;
  qv_hit all[15], part[10];
  cr_assert_eq(search(&f, v, dim, &p, all), 15);
  p.k = 10;
  p.offset = 5;
  cr_assert_eq(search(&f, v, dim, &p, part), 10);
  for (int i = 0; i < 10; i++) cr_expect_eq(part[i].id.num, all[i + 5].id.num);
  p.offset = 0;
  qv_hit batch[40], one[10];
  size_t nb[4];
  qv_err e;
  cr_assert_eq(qv_search_batch(f.c, v, 4, dim, &p, batch, nb, &e), QV_OK, "%s", e.msg);
  for (int qi = 0; qi < 4; qi++) {
    cr_assert_eq(search(&f, v + qi * dim, dim, &p, one), nb[qi]);
    for (size_t j = 0; j < nb[qi]; j++)
      cr_expect_eq(batch[qi * 10 + j].id.num, one[j].id.num);
  }
  free(v);
  teardown(&f);
}
