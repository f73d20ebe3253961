/* test_hnsw_scored.c: hnsw_search_scored, the graph walked with a caller's
 * distance. A scorer that computes the float32 distance itself must give
 * exactly hnsw_search's hits (same walk, same ties); a scorer on int8 codes
 * (qcodes) must find most of the true neighbours; the allow filter and the
 * scorer's context are honoured. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "index/hnsw.h"
#include "quant/qcodes.h"
#include "testutil.h"
#include "vec/dist.h"

#define N 3000u
#define DIM 48u

typedef struct fctx {
  const float *vecs, *q;
  vec_dist_fn dist;
  unsigned calls;
} fctx;

static float score_f32(void *ctx, uint32_t row) {
  fctx *c = ctx;
  c->calls++;
  return c->dist(c->q, c->vecs + (size_t)row * DIM, DIM);
}

static float score_codes(void *ctx, uint32_t row) { return qcodes_dist(ctx, row); }

static bool even_only(void *ctx, uint32_t row) {
  (void)ctx;
  return row % 2 == 0;
}

static hnsw *build(const float *v) {
  hnsw_params p;
  hnsw_params_init(&p);
  p.seed = 7;
  hnsw *h = NULL;
  qv_err e;
  cr_assert_eq(hnsw_build(v, N, DIM, VEC_L2SQ, &p, &h, &e), QV_OK, "%s", e.msg);
  return h;
}

Test(hnsw_scored, float_scorer_matches_hnsw_search_exactly) {
  float *v = tu_random_vectors(N, DIM, 11), *qs = tu_random_vectors(50, DIM, 12);
  hnsw *h = build(v);
  fctx c = {v, NULL, dist_fn(dist_ops_get(), VEC_L2SQ), 0};
  hnsw_scorer sc = {score_f32, &c, NULL, 0};
  for (uint32_t q = 0; q < 50; q++) {
    hnsw_hit a[10], b[10];
    uint32_t na, nb;
    c.q = qs + (size_t)q * DIM;
    bool filt = q % 2;
    cr_assert_eq(hnsw_search(h, c.q, 10, 32, filt ? even_only : NULL, NULL, NULL, a, &na),
                 QV_OK);
    cr_assert_eq(hnsw_search_scored(h, &sc, 10, 32, filt ? even_only : NULL, NULL, NULL, b,
                                    &nb),
                 QV_OK);
    cr_assert_eq(na, nb);
    for (uint32_t i = 0; i < na; i++) {
      cr_expect_eq(a[i].row, b[i].row, "query %u hit %u", q, i);
      cr_expect_eq(a[i].dist, b[i].dist, "query %u hit %u", q, i);
      if (filt) cr_expect_eq(b[i].row % 2, 0);
    }
  }
  cr_expect_gt(c.calls, 50u * 32, "the scorer was not used");
  hnsw_free(h);
  free(v);
  free(qs);
}

Test(hnsw_scored, int8_codes_find_the_neighbours) {
  float *v = tu_random_vectors(N, DIM, 21), *qs = tu_random_vectors(50, DIM, 22);
  hnsw *h = build(v);
  qcodes_params qp = {.kind = QCODES_SQ8, .sq_quantile = 1.0f};
  qcodes *codes = NULL;
  qv_err e;
  cr_assert_eq(qcodes_build(v, N, v, N, DIM, VEC_L2SQ, &qp, &codes, &e), QV_OK, "%s", e.msg);
  qcodes_query qq = {0};
  hnsw_scorer sc = {score_codes, &qq, codes->codes, codes->stride};
  double hit = 0;
  for (uint32_t q = 0; q < 50; q++) {
    const float *qv = qs + (size_t)q * DIM;
    cr_assert_eq(qcodes_query_prepare(codes, qv, &qq, &e), QV_OK);
    hnsw_hit b[10];
    uint32_t nb;
    cr_assert_eq(hnsw_search_scored(h, &sc, 10, 64, NULL, NULL, NULL, b, &nb), QV_OK);
    cr_assert_eq(nb, 10);
    uint32_t truth[10], got[10];
    tu_exact_knn_l2(v, N, DIM, qv, 10, truth);
    for (uint32_t i = 0; i < 10; i++) got[i] = b[i].row;
    hit += tu_recall(got, 10, truth, 10);
  }
  double r = hit / 50;
  cr_log_info("int8 walk, no rescoring: recall@10 %.3f", r);
  cr_expect_geq(r, 0.95, "recall %.3f", r); /* measured 0.988 */
  qcodes_query_destroy(&qq);
  qcodes_free(codes);
  hnsw_free(h);
  free(v);
  free(qs);
}
