/* test_hnsw_search.c: hnsw_search against exact answers.
 *
 * Covers: a stored vector finds itself; recall@10 against brute force on
 * SIFT-small and on random data for each metric, each above a stated floor;
 * the allow filter (only allowed rows, and k of them when enough exist);
 * k larger than ef; ordering and reported distances; scratch reuse across
 * graphs. Graph construction details are in test_hnsw_build.c, files in
 * test_hnsw_io.c. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/hnsw.h"
#include "testutil.h"

static hnsw *build(const float *v, uint32_t n, uint32_t dim, vec_metric metric,
                   uint32_t m, uint32_t efc, uint32_t threads) {
  hnsw_params p;
  hnsw_params_init(&p);
  p.m = m;
  p.ef_construct = efc;
  p.n_threads = threads;
  p.seed = 42;
  hnsw *h = NULL;
  qv_err err = {0};
  qv_rc rc = hnsw_build(v, n, dim, metric, &p, &h, &err);
  cr_assert_eq(rc, QV_OK, "hnsw_build: %s", err.msg);
  return h;
}

/* Exact distance in double, lower is better, as the index defines it. */
static double exact_dist(vec_metric metric, const float *a, const float *b,
                         uint32_t dim) {
  double s = 0;
  for (uint32_t j = 0; j < dim; j++) {
    double x = a[j], y = b[j];
    switch (metric) {
    case VEC_L2SQ: s += (x - y) * (x - y); break;
    case VEC_NEG_DOT: s -= x * y; break;
    case VEC_L1: s += fabs(x - y); break;
    }
  }
  return s;
}

typedef struct scored {
  double d;
  uint32_t row;
} scored;

static int scored_cmp(const void *a, const void *b) {
  const scored *x = a, *y = b;
  if (x->d != y->d) return x->d < y->d ? -1 : 1;
  return x->row < y->row ? -1 : (x->row > y->row);
}

static void exact_knn(vec_metric metric, const float *base, uint32_t n,
                      uint32_t dim, const float *q, uint32_t k, uint32_t *out) {
  scored *s = malloc(n * sizeof *s);
  for (uint32_t i = 0; i < n; i++)
    s[i] = (scored){exact_dist(metric, q, base + (size_t)i * dim, dim), i};
  qsort(s, n, sizeof *s, scored_cmp);
  for (uint32_t i = 0; i < k; i++) out[i] = s[i].row;
  free(s);
}

/* Mean recall@k of the graph over nq queries at beam width ef. */
static double mean_recall(const hnsw *h, vec_metric metric, const float *base,
                          uint32_t n, uint32_t dim, const float *queries,
                          uint32_t nq, uint32_t k, uint32_t ef) {
  hnsw_scratch *s = hnsw_scratch_new();
  hnsw_hit *hits = malloc(k * sizeof *hits);
  uint32_t *got = malloc(k * sizeof *got), *truth = malloc(k * sizeof *truth);
  double sum = 0;
  for (uint32_t qi = 0; qi < nq; qi++) {
    const float *q = queries + (size_t)qi * dim;
    uint32_t nh = 0;
    cr_assert_eq(hnsw_search(h, q, k, ef, NULL, NULL, s, hits, &nh), QV_OK);
    for (uint32_t i = 0; i < nh; i++) got[i] = hits[i].row;
    exact_knn(metric, base, n, dim, q, k, truth);
    sum += tu_recall(got, nh, truth, k);
  }
  free(hits);
  free(got);
  free(truth);
  hnsw_scratch_free(s);
  return sum / nq;
}

Test(hnsw_search, stored_vector_is_its_own_nearest_neighbour) {
  const uint32_t n = 2000, dim = 64;
  float *v = tu_random_vectors(n, dim, 7);
  hnsw *h = build(v, n, dim, VEC_L2SQ, 16, 100, 1);
  hnsw_scratch *s = hnsw_scratch_new();
  const uint32_t rows[] = {0, 1, 123, 999, 1500, 1999};
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    hnsw_hit hits[10];
    uint32_t nh = 0;
    cr_assert_eq(hnsw_search(h, v + (size_t)rows[i] * dim, 10, 32, NULL, NULL,
                             s, hits, &nh),
                 QV_OK);
    cr_assert_eq(nh, 10);
    cr_expect_eq(hits[0].row, rows[i], "row %u found %u first", rows[i],
                 hits[0].row);
    cr_expect_eq(hits[0].dist, 0.0f);
  }
  hnsw_scratch_free(s);
  hnsw_free(h);
  free(v);
}

/* Measured 0.998 (m = 16, ef_construct = 100, 100 queries, ef = 64); the
 * floor leaves room for a different but still correct build order. */
#define SIFT_RECALL_FLOOR 0.97

Test(hnsw_search, recall_on_siftsmall_at_ef_64) {
  char *bp = tu_data_path("siftsmall/siftsmall_base.fvecs");
  char *qp = tu_data_path("siftsmall/siftsmall_query.fvecs");
  if (bp == NULL || qp == NULL) cr_skip_test("QV_SHARED_DATA has no siftsmall");
  size_t n, dim, nq, qdim;
  float *base = tu_read_fvecs(bp, &n, &dim);
  float *q = tu_read_fvecs(qp, &nq, &qdim);
  cr_assert(base != NULL && q != NULL && dim == 128 && qdim == 128);
  hnsw *h = build(base, (uint32_t)n, (uint32_t)dim, VEC_L2SQ, 16, 100, 1);
  double r = mean_recall(h, VEC_L2SQ, base, (uint32_t)n, (uint32_t)dim, q,
                         (uint32_t)nq, 10, 64);
  cr_log_info("siftsmall recall@10 at ef=64: %.4f", r);
  cr_expect_geq(r, SIFT_RECALL_FLOOR, "recall %.4f < floor %.2f", r,
                SIFT_RECALL_FLOOR);
  hnsw_free(h);
  free(base);
  free(q);
  free(bp);
  free(qp);
}

/* Random uniform data in 24 dimensions is about the hardest case a graph
 * meets in tests (no cluster structure). 3,000 rows, m = 16,
 * ef_construct = 100, ef = 64, 100 queries; measured recall: L2SQ 0.99,
 * NEG_DOT on unit vectors 0.99, L1 0.98. */
#define RANDOM_RECALL_FLOOR 0.93

static void random_recall(vec_metric metric, bool normalize) {
  const uint32_t n = 3000, dim = 24, nq = 100;
  float *v = tu_random_vectors(n, dim, 11);
  float *q = tu_random_vectors(nq, dim, 12);
  if (normalize) {
    for (uint32_t i = 0; i < n; i++) vec_normalize(v + (size_t)i * dim, dim);
    for (uint32_t i = 0; i < nq; i++) vec_normalize(q + (size_t)i * dim, dim);
  }
  hnsw *h = build(v, n, dim, metric, 16, 100, 1);
  double r = mean_recall(h, metric, v, n, dim, q, nq, 10, 64);
  cr_log_info("metric %d recall@10 at ef=64: %.4f", (int)metric, r);
  cr_expect_geq(r, RANDOM_RECALL_FLOOR, "metric %d: recall %.4f < %.2f",
                (int)metric, r, RANDOM_RECALL_FLOOR);
  hnsw_free(h);
  free(v);
  free(q);
}

Test(hnsw_search, recall_on_random_l2sq) { random_recall(VEC_L2SQ, false); }
Test(hnsw_search, recall_on_random_neg_dot_unit_vectors) {
  random_recall(VEC_NEG_DOT, true);
}
Test(hnsw_search, recall_on_random_l1) { random_recall(VEC_L1, false); }

Test(hnsw_search, hits_are_sorted_with_true_distances) {
  const uint32_t n = 1500, dim = 32;
  float *v = tu_random_vectors(n, dim, 3);
  float *q = tu_random_vectors(1, dim, 4);
  hnsw *h = build(v, n, dim, VEC_L2SQ, 8, 64, 1);
  hnsw_hit hits[20];
  uint32_t nh = 0;
  cr_assert_eq(hnsw_search(h, q, 20, 50, NULL, NULL, NULL, hits, &nh), QV_OK);
  cr_assert_eq(nh, 20);
  for (uint32_t i = 0; i < nh; i++) {
    double d = exact_dist(VEC_L2SQ, q, v + (size_t)hits[i].row * dim, dim);
    cr_expect_float_eq(hits[i].dist, d, 1e-3 * (1 + d), "hit %u", i);
    if (i > 0) cr_expect_leq(hits[i - 1].dist, hits[i].dist, "order at %u", i);
    for (uint32_t j = 0; j < i; j++)
      cr_expect_neq(hits[i].row, hits[j].row, "duplicate row %u", hits[i].row);
  }
  hnsw_free(h);
  free(v);
  free(q);
}

Test(hnsw_search, k_larger_than_ef_widens_the_beam) {
  const uint32_t n = 1000, dim = 16;
  float *v = tu_random_vectors(n, dim, 5);
  hnsw *h = build(v, n, dim, VEC_L2SQ, 8, 64, 1);
  hnsw_hit hits[100];
  uint32_t nh = 0;
  cr_assert_eq(hnsw_search(h, v, 100, 10, NULL, NULL, NULL, hits, &nh), QV_OK);
  cr_expect_eq(nh, 100);
  cr_assert_eq(hnsw_search(h, v, 0, 10, NULL, NULL, NULL, hits, &nh), QV_OK);
  cr_expect_eq(nh, 0);
  hnsw_free(h);
  free(v);
}

Test(hnsw_search, k_above_n_returns_every_row) {
  const uint32_t n = 30, dim = 8;
  float *v = tu_random_vectors(n, dim, 6);
  hnsw *h = build(v, n, dim, VEC_L2SQ, 4, 16, 1);
  hnsw_hit hits[50];
  uint32_t nh = 0;
  cr_assert_eq(hnsw_search(h, v, 50, 50, NULL, NULL, NULL, hits, &nh), QV_OK);
  cr_expect_eq(nh, n);
  hnsw_free(h);
  free(v);
}

/* ---- the allow filter ------------------------------------------------- */

typedef struct allow_ctx {
  uint32_t modulus; /* allow rows r % modulus == 0, when non-zero */
  const uint32_t *rows;
  uint32_t n_rows;
  uint32_t calls;
} allow_ctx;

static bool allow_row(void *ctx, uint32_t row) {
  allow_ctx *a = ctx;
  a->calls++;
  if (a->modulus != 0) return row % a->modulus == 0;
  for (uint32_t i = 0; i < a->n_rows; i++)
    if (a->rows[i] == row) return true;
  return false;
}

Test(hnsw_search, filter_every_tenth_row_returns_k_allowed) {
  const uint32_t n = 3000, dim = 32, nq = 20;
  float *v = tu_random_vectors(n, dim, 8);
  float *q = tu_random_vectors(nq, dim, 9);
  hnsw *h = build(v, n, dim, VEC_L2SQ, 16, 100, 1);
  hnsw_scratch *s = hnsw_scratch_new();
  double recall = 0;
  for (uint32_t qi = 0; qi < nq; qi++) {
    allow_ctx a = {.modulus = 10};
    hnsw_hit hits[10];
    uint32_t nh = 0;
    const float *qq = q + (size_t)qi * dim;
    cr_assert_eq(hnsw_search(h, qq, 10, 64, allow_row, &a, s, hits, &nh),
                 QV_OK);
    cr_expect_eq(nh, 10, "query %u: %u hits", qi, nh);
    for (uint32_t i = 0; i < nh; i++)
      cr_expect_eq(hits[i].row % 10, 0, "query %u: row %u not allowed", qi,
                   hits[i].row);
    /* Exact answer among the allowed rows: the tenth rows as a sub-base. */
    scored best[300];
    for (uint32_t r = 0; r < n / 10; r++)
      best[r] = (scored){
          exact_dist(VEC_L2SQ, qq, v + (size_t)r * 10 * dim, dim), r * 10};
    qsort(best, n / 10, sizeof best[0], scored_cmp);
    uint32_t got[10], truth[10];
    for (uint32_t i = 0; i < 10; i++) {
      got[i] = i < nh ? hits[i].row : UINT32_MAX;
      truth[i] = best[i].row;
    }
    recall += tu_recall(got, nh, truth, 10);
  }
  recall /= nq;
  cr_log_info("filtered recall@10: %.3f", recall);
  /* Measured 1.00: a 10% filter keeps the beam going until it has 64
   * allowed rows, which covers the true 10 easily. */
  cr_expect_geq(recall, 0.9, "filtered recall %.3f", recall);
  hnsw_scratch_free(s);
  hnsw_free(h);
  free(v);
  free(q);
}

Test(hnsw_search, filter_with_three_allowed_rows_returns_only_those) {
  const uint32_t n = 2000, dim = 16;
  float *v = tu_random_vectors(n, dim, 10);
  hnsw *h = build(v, n, dim, VEC_L2SQ, 8, 64, 1);
  const uint32_t allowed[3] = {17, 1234, 1999};
  allow_ctx a = {.rows = allowed, .n_rows = 3};
  hnsw_hit hits[10];
  uint32_t nh = 0;
  cr_assert_eq(
      hnsw_search(h, v + 500 * dim, 10, 16, allow_row, &a, NULL, hits, &nh),
      QV_OK);
  cr_expect_leq(nh, 3);
  /* The beam never fills, so it walks the whole (connected) graph. */
  cr_expect_eq(nh, 3, "found %u of the 3 allowed rows", nh);
  for (uint32_t i = 0; i < nh; i++)
    cr_expect(hits[i].row == 17 || hits[i].row == 1234 || hits[i].row == 1999,
              "row %u is not allowed", hits[i].row);
  hnsw_free(h);
  free(v);
}

Test(hnsw_search, filter_allowing_nothing_returns_nothing) {
  const uint32_t n = 500, dim = 8;
  float *v = tu_random_vectors(n, dim, 12);
  hnsw *h = build(v, n, dim, VEC_L2SQ, 8, 32, 1);
  allow_ctx a = {.rows = NULL, .n_rows = 0};
  hnsw_hit hits[10];
  uint32_t nh = 7;
  cr_assert_eq(hnsw_search(h, v, 10, 16, allow_row, &a, NULL, hits, &nh),
               QV_OK);
  cr_expect_eq(nh, 0);
  cr_expect_geq(a.calls, n / 2, "only %u rows were considered", a.calls);
  hnsw_free(h);
  free(v);
}

/* A reused scratch must give exactly the answers of a fresh one, across
 * graphs of different sizes and after the 16-bit visited epoch wraps. */
Test(hnsw_search, reused_scratch_matches_fresh_scratch) {
  const uint32_t dim = 8, nq = 40;
  const uint32_t sizes[2] = {50, 4000};
  float *base[2] = {tu_random_vectors(50, dim, 13),
                    tu_random_vectors(4000, dim, 14)};
  float *q = tu_random_vectors(nq, dim, 15);
  hnsw *g[2] = {build(base[0], sizes[0], dim, VEC_L2SQ, 4, 16, 1),
                build(base[1], sizes[1], dim, VEC_L2SQ, 8, 32, 1)};
  hnsw_hit ref[2][40][5];
  uint32_t n_ref[2][40];
  for (int gi = 0; gi < 2; gi++)
    for (uint32_t i = 0; i < nq; i++)
      cr_assert_eq(hnsw_search(g[gi], q + i * dim, 5, 8, NULL, NULL, NULL,
                               ref[gi][i], &n_ref[gi][i]),
                   QV_OK);
  hnsw_scratch *s = hnsw_scratch_new();
  for (uint32_t i = 0; i < 70000; i++) {
    int gi = i % 3 == 0;
    uint32_t qi = (i * 7u) % nq;
    hnsw_hit hits[5];
    uint32_t nh = 0;
    cr_assert_eq(
        hnsw_search(g[gi], q + qi * dim, 5, 8, NULL, NULL, s, hits, &nh),
        QV_OK);
    cr_assert_eq(nh, n_ref[gi][qi]);
    for (uint32_t j = 0; j < nh; j++)
      cr_assert_eq(hits[j].row, ref[gi][qi][j].row,
                   "query %u (graph %d, pass %u) hit %u differs", qi, gi, i, j);
  }
  hnsw_scratch_free(s);
  for (int gi = 0; gi < 2; gi++) {
    hnsw_free(g[gi]);
    free(base[gi]);
  }
  free(q);
}
