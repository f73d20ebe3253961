/* qtest.h: helpers shared by the tests of src/quant/ (tests/quant/): the
 * SIFT-small fixture with exact ground truth, a float tolerance for
 * summation-order differences, and unaligned random buffers. Header-only
 * (static inline) so that each test program stays one file. */
#ifndef QV_TESTS_QUANT_QTEST_H
#define QV_TESTS_QUANT_QTEST_H

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define QT_K 10

typedef struct qt_sift {
  float *base, *query;
  size_t n, nq, dim;
  uint32_t *gt; /* nq * QT_K exact neighbours, nearest first */
} qt_sift;

/* Loads SIFT-small (10,000 x 128 base, 100 queries) and computes the exact
 * top-10 under squared L2; skips the test when the data is missing. */
static inline qt_sift qt_sift_load(void) {
  qt_sift s = {0};
  char *bp = tu_data_path("siftsmall/siftsmall_base.fvecs");
  char *qp = tu_data_path("siftsmall/siftsmall_query.fvecs");
  if (bp == NULL || qp == NULL) cr_skip_test("no SIFT-small data");
  size_t qd = 0;
  s.base = tu_read_fvecs(bp, &s.n, &s.dim);
  s.query = tu_read_fvecs(qp, &s.nq, &qd);
  free(bp);
  free(qp);
  cr_assert_not_null(s.base);
  cr_assert_not_null(s.query);
  cr_assert_eq(qd, s.dim);
  s.gt = malloc(s.nq * QT_K * sizeof(uint32_t));
  for (size_t i = 0; i < s.nq; i++)
    tu_exact_knn_l2(s.base, s.n, s.dim, s.query + i * s.dim, QT_K,
                    s.gt + i * QT_K);
  return s;
}

static inline void qt_sift_free(qt_sift *s) {
  free(s->base);
  free(s->query);
  free(s->gt);
}

/* Float error bound for a sum of `dim` terms of total magnitude `mag` kept
 * in at least 8 lanes (as tests/vec/test_dist.c argues), doubled. */
static inline double qt_tol(size_t dim, double mag) {
  double steps = (double)(dim / 8 + 1) + 6.0 + 3.0;
  return 2.0 * steps * (FLT_EPSILON / 2) * mag + 1e-30;
}

/* Fills n floats uniform in [-scale, scale) from `seed`. */
static inline void qt_fill(float *x, size_t n, float scale, uint64_t seed) {
  uint64_t s = seed;
  for (size_t i = 0; i < n; i++) x[i] = tu_randf(&s) * scale;
}

static inline void qt_fill_bytes(uint8_t *x, size_t n, uint64_t seed) {
  uint64_t s = seed;
  for (size_t i = 0; i < n; i++) x[i] = (uint8_t)tu_rand(&s);
}

/* The dimensions every SIMD kernel is checked at: 1..300, 512, 784. */
#define QT_N_DIMS 302
static inline size_t qt_dim(size_t i) {
  return i < 300 ? i + 1 : (i == 300 ? 512 : 784);
}

#endif
