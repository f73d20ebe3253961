/* test_kmeans.c: k-means (src/quant/kmeans*.c).
 *
 * Well-separated blobs are recovered, the nearest-centroid assignment
 * equals brute force on both the short-vector and the long-vector path,
 * results do not depend on the thread count, iterations lower the
 * objective, and empty clusters are repaired. */
#include "quant/kmeans.h"
#include "qtest.h"

/* n points in `k` tight blobs around far-apart centres: point i is in
 * blob i % k. */
static float *blobs(size_t n, uint32_t dim, uint32_t k, uint64_t seed) {
  float *centres = malloc((size_t)k * dim * 4), *x = malloc(n * dim * 4);
  qt_fill(centres, (size_t)k * dim, 100.0f, seed);
  qt_fill(x, n * dim, 1.0f, seed + 1);
  for (size_t i = 0; i < n; i++)
    for (uint32_t d = 0; d < dim; d++)
      x[i * dim + d] += centres[(i % k) * dim + d];
  free(centres);
  return x;
}

static void check_blobs(uint32_t dim) {
  enum { N = 3000, K = 10 };
  float *x = blobs(N, dim, K, 5), *c = malloc(K * dim * 4);
  kmeans_params p;
  kmeans_params_init(&p, K);
  kmeans_stats st;
  cr_assert_eq(kmeans_train(x, N, dim, &p, c, &st, NULL), QV_OK);
  uint32_t *as = malloc(N * 4);
  cr_assert_eq(kmeans_assign(c, K, dim, x, N, 1, as, NULL, NULL), QV_OK);
  /* every blob maps to one cluster, and different blobs to different ones */
  for (size_t i = K; i < N; i++) cr_assert_eq(as[i], as[i % K], "dim %u", dim);
  for (int a = 0; a < K; a++)
    for (int b = a + 1; b < K; b++) cr_assert_neq(as[a], as[b]);
  cr_assert_lt(st.objective, 1.0 * dim); /* uniform [-1,1): var 1/3 per dim */
  free(x);
  free(c);
  free(as);
}

Test(kmeans, recovers_separated_blobs_short_vectors) { check_blobs(4); }
Test(kmeans, recovers_separated_blobs_long_vectors) { check_blobs(64); }

static void check_assign(uint32_t dim) {
  enum { N = 500, K = 37 };
  float *x = malloc(N * dim * 4), *c = malloc(K * dim * 4),
        *dist = malloc(N * 4);
  uint32_t *as = malloc(N * 4);
  qt_fill(x, N * dim, 1.0f, 7);
  qt_fill(c, K * dim, 1.0f, 8);
  cr_assert_eq(kmeans_assign(c, K, dim, x, N, 3, as, dist, NULL), QV_OK);
  for (int i = 0; i < N; i++) {
    double best = INFINITY;
    for (int k = 0; k < K; k++) {
      double s = 0;
      for (uint32_t d = 0; d < dim; d++) {
        double t = (double)x[i * dim + d] - c[k * dim + d];
        s += t * t;
      }
      if (s < best) best = s;
    }
    double got = 0;
    for (uint32_t d = 0; d < dim; d++) {
      double t = (double)x[i * dim + d] - c[as[i] * dim + d];
      got += t * t;
    }
    /* the chosen centroid is the nearest up to float rounding */
    cr_assert_leq(got, best + 1e-4 * (best + 1), "dim %u point %d", dim, i);
    cr_assert_float_eq(dist[i], got, 1e-3 * (got + 1));
  }
  free(x);
  free(c);
  free(dist);
  free(as);
}

Test(kmeans, assignment_is_nearest_short_path) { check_assign(3); }
Test(kmeans, assignment_is_nearest_long_path) { check_assign(100); }

Test(kmeans, result_does_not_depend_on_thread_count) {
  enum { N = 2000, DIM = 40, K = 16 };
  float *x = malloc(N * DIM * 4), *c1 = malloc(K * DIM * 4),
        *c3 = malloc(K * DIM * 4);
  qt_fill(x, N * DIM, 1.0f, 9);
  kmeans_params p;
  kmeans_params_init(&p, K);
  cr_assert_eq(kmeans_train(x, N, DIM, &p, c1, NULL, NULL), QV_OK);
  p.n_threads = 3;
  cr_assert_eq(kmeans_train(x, N, DIM, &p, c3, NULL, NULL), QV_OK);
  cr_assert_eq(memcmp(c1, c3, K * DIM * 4), 0);
  free(x);
  free(c1);
  free(c3);
}

Test(kmeans, iterations_lower_the_objective) {
  enum { N = 4000, DIM = 8, K = 64 };
  float *x = malloc(N * DIM * 4), *c = malloc(K * DIM * 4);
  qt_fill(x, N * DIM, 1.0f, 10);
  kmeans_params p;
  kmeans_params_init(&p, K);
  kmeans_stats s0, s10;
  p.n_iter = 0;
  cr_assert_eq(kmeans_train(x, N, DIM, &p, c, &s0, NULL), QV_OK);
  p.n_iter = 10;
  cr_assert_eq(kmeans_train(x, N, DIM, &p, c, &s10, NULL), QV_OK);
  cr_assert_lt(s10.objective, s0.objective * 0.95, "%g vs %g", s10.objective,
               s0.objective);
  free(x);
  free(c);
}

Test(kmeans, empty_clusters_are_repaired) {
  /* 4 distinct points, each repeated: k = 8 leaves clusters empty after
   * the first assignment; all centroids must stay finite. */
  enum { N = 400, DIM = 2, K = 8 };
  float x[N * DIM];
  for (int i = 0; i < N; i++) {
    x[2 * i] = (float)(i % 4);
    x[2 * i + 1] = (float)((i % 4) * 3);
  }
  float c[K * DIM];
  kmeans_params p;
  kmeans_params_init(&p, K);
  kmeans_stats st;
  cr_assert_eq(kmeans_train(x, N, DIM, &p, c, &st, NULL), QV_OK);
  cr_assert_gt(st.n_repair, 0);
  for (int i = 0; i < K * DIM; i++) cr_assert(isfinite(c[i]));
  cr_assert_lt(st.objective, 1e-3); /* every point sits near a centroid */
}

Test(kmeans, bad_parameters_are_rejected) {
  float x[6] = {0};
  float c[6];
  kmeans_params p;
  kmeans_params_init(&p, 4);
  cr_assert_eq(kmeans_train(x, 3, 2, &p, c, NULL, NULL), QV_EINVAL);
  kmeans_params_init(&p, 0);
  cr_assert_eq(kmeans_train(x, 3, 2, &p, c, NULL, NULL), QV_EINVAL);
  kmeans_params_init(&p, 2);
  p.n_threads = 0;
  cr_assert_eq(kmeans_train(x, 3, 2, &p, c, NULL, NULL), QV_EINVAL);
}
