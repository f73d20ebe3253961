/* test_ivf.c: IVF-Flat and IVF-PQ (src/quant/ivf*.c).
 *
 * Lists partition the rows, probing every list is exact search, recall@10
 * on SIFT-small at stated floors (IVF-Flat nprobe 16, IVF-PQ + rescoring),
 * the allow filter, the dot-product metric, save/load round trips, and
 * corrupt files (truncated at every length class, bytes flipped across the
 * whole file, shape mismatches) failing with QV_ECORRUPT, never a crash. */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fileio.h"
#include "quant/ivf.h"
#include "quant/ivf_int.h"
#include "qtest.h"
#include "vec/dist.h"

static ivf *build(const float *x, uint32_t n, uint32_t dim, vec_metric m,
                  ivf_kind kind, uint32_t nlist, uint32_t pq_m) {
  ivf_params p;
  ivf_params_init(&p, kind, dim);
  p.nlist = nlist;
  if (pq_m) p.pq_m = pq_m;
  p.n_iter = 8;
  p.n_threads = 2;
  ivf *ix = NULL;
  qv_err err;
  cr_assert_eq(ivf_build(x, n, dim, m, &p, &ix, &err), QV_OK, "%s", err.msg);
  return ix;
}

static double recall_of(const ivf *ix, const qt_sift *s, uint32_t nprobe,
                        uint32_t rescore) {
  ivf_search_params sp;
  ivf_search_params_init(&sp);
  sp.nprobe = nprobe;
  sp.rescore = rescore;
  ivf_scratch *sc = ivf_scratch_new();
  double recall = 0;
  for (size_t i = 0; i < s->nq; i++) {
    quant_hit hits[QT_K];
    uint32_t n = 0, got[QT_K];
    cr_assert_eq(ivf_search(ix, s->query + i * s->dim, QT_K, &sp, sc, hits, &n),
                 QV_OK);
    for (uint32_t j = 0; j < n; j++) got[j] = hits[j].row;
    recall += tu_recall(got, n, s->gt + i * QT_K, QT_K);
  }
  ivf_scratch_free(sc);
  return recall / (double)s->nq;
}

Test(ivf, every_row_is_in_exactly_one_list) {
  enum { N = 2000, DIM = 16 };
  float *x = malloc(N * DIM * 4);
  qt_fill(x, N * DIM, 1.0f, 1);
  ivf *ix = build(x, N, DIM, VEC_L2SQ, IVF_FLAT, 20, 0);
  cr_assert_eq(ix->list_off[0], 0);
  cr_assert_eq(ix->list_off[20], N);
  char *seen = calloc(N, 1);
  for (uint32_t i = 0; i < N; i++) {
    cr_assert_lt(ix->ids[i], N);
    cr_assert_eq(seen[ix->ids[i]], 0);
    seen[ix->ids[i]] = 1;
  }
  /* each row sits in the list of its nearest centroid */
  vec_dist_fn l2 = dist_ops_get()->l2sq;
  for (uint32_t l = 0; l < 20; l++)
    for (uint32_t i = ix->list_off[l]; i < ix->list_off[l + 1]; i++) {
      const float *v = x + ix->ids[i] * DIM;
      float mine = l2(v, ix->cent + l * DIM, DIM);
      for (uint32_t o = 0; o < 20; o++)
        cr_assert_leq(mine, l2(v, ix->cent + o * DIM, DIM) * (1 + 1e-5f));
    }
  free(seen);
  ivf_free(ix);
  free(x);
}

Test(ivf, probing_every_list_is_exact_search) {
  qt_sift s = qt_sift_load();
  ivf *ix = build(s.base, (uint32_t)s.n, (uint32_t)s.dim, VEC_L2SQ, IVF_FLAT,
                  32, 0);
  cr_assert_eq(recall_of(ix, &s, 32, 0), 1.0);
  ivf_free(ix);
  qt_sift_free(&s);
}

/* Measured on SIFT-small, nlist 100 (= sqrt(n)): IVF-Flat nprobe 16 0.993;
 * IVF-PQ m 32 (x16), nprobe 16: 0.834 from codes alone, 0.992 after
 * rescoring 40 (oversampling 4). Floors with margin. */
#define IVF_FLAT_FLOOR 0.96
#define IVF_PQ_FLOOR 0.93

Test(ivf, flat_nprobe_16_recall_on_siftsmall) {
  qt_sift s = qt_sift_load();
  ivf *ix = build(s.base, (uint32_t)s.n, (uint32_t)s.dim, VEC_L2SQ, IVF_FLAT,
                  100, 0);
  double r = recall_of(ix, &s, 16, 0);
  cr_log_info("ivf-flat nlist 100 nprobe 16 recall@10 = %.4f", r);
  cr_assert_geq(r, IVF_FLAT_FLOOR, "recall %.4f", r);
  ivf_free(ix);
  qt_sift_free(&s);
}

Test(ivf, pq_with_rescoring_recall_on_siftsmall) {
  qt_sift s = qt_sift_load();
  ivf *ix = build(s.base, (uint32_t)s.n, (uint32_t)s.dim, VEC_L2SQ, IVF_PQ,
                  100, 32);
  double raw = recall_of(ix, &s, 16, 0), r = recall_of(ix, &s, 16, 40);
  cr_log_info("ivf-pq x16 nprobe 16: recall@10 %.4f raw, %.4f rescored x4",
              raw, r);
  cr_assert_geq(r, IVF_PQ_FLOOR, "recall %.4f", r);
  cr_assert_gt(r, raw, "rescoring did not help: %.4f vs %.4f", r, raw);
  ivf_free(ix);
  qt_sift_free(&s);
}

static bool only_even(void *ctx, uint32_t row) {
  (void)ctx;
  return row % 2 == 0;
}

static void check_filter(ivf_kind kind) {
  enum { N = 3000, DIM = 24 };
  float *x = malloc(N * DIM * 4), q[DIM];
  qt_fill(x, N * DIM, 1.0f, 3);
  qt_fill(q, DIM, 1.0f, 4);
  ivf *ix = build(x, N, DIM, VEC_L2SQ, kind, 10, 6);
  ivf_search_params sp;
  ivf_search_params_init(&sp);
  sp.nprobe = 10;
  sp.rescore = 50;
  sp.allow = only_even;
  ivf_scratch *sc = ivf_scratch_new();
  quant_hit hits[20];
  uint32_t n = 0;
  cr_assert_eq(ivf_search(ix, q, 20, &sp, sc, hits, &n), QV_OK);
  cr_assert_eq(n, 20);
  for (uint32_t i = 0; i < n; i++) {
    cr_assert_eq(hits[i].row % 2, 0);
    if (i) cr_assert_leq(hits[i - 1].dist, hits[i].dist);
  }
  /* Flat with every list probed: exactly the 20 nearest even rows */
  if (kind == IVF_FLAT) {
    vec_dist_fn l2 = dist_ops_get()->l2sq;
    uint32_t better = 0;
    for (uint32_t r = 0; r < N; r += 2)
      if (l2(q, x + r * DIM, DIM) < hits[19].dist) better++;
    cr_assert_eq(better, 19);
  }
  ivf_scratch_free(sc);
  ivf_free(ix);
  free(x);
}

Test(ivf, flat_allow_filter_returns_k_allowed_rows) { check_filter(IVF_FLAT); }
Test(ivf, pq_allow_filter_returns_k_allowed_rows) { check_filter(IVF_PQ); }

Test(ivf, dot_metric_on_unit_vectors_finds_the_best_inner_products) {
  enum { N = 2000, DIM = 32 };
  float *x = malloc(N * DIM * 4), q[DIM];
  qt_fill(x, N * DIM, 1.0f, 5);
  qt_fill(q, DIM, 1.0f, 6);
  for (int i = 0; i < N; i++) vec_normalize(x + i * DIM, DIM);
  vec_normalize(q, DIM);
  for (int kind = IVF_FLAT; kind <= IVF_PQ; kind++) {
    ivf *ix = build(x, N, DIM, VEC_NEG_DOT, (ivf_kind)kind, 16, 16);
    ivf_search_params sp;
    ivf_search_params_init(&sp);
    sp.nprobe = 16;
    sp.rescore = 100;
    ivf_scratch *sc = ivf_scratch_new();
    quant_hit hits[5];
    uint32_t n;
    cr_assert_eq(ivf_search(ix, q, 5, &sp, sc, hits, &n), QV_OK);
    cr_assert_eq(n, 5);
    uint32_t best = 0;
    float bd = INFINITY;
    for (uint32_t r = 0; r < N; r++) {
      float d = -dist_ops_get()->dot(q, x + r * DIM, DIM);
      if (d < bd) bd = d, best = r;
    }
    cr_assert_eq(hits[0].row, best, "kind %d", kind);
    cr_assert_float_eq(hits[0].dist, bd, 1e-5);
    ivf_scratch_free(sc);
    ivf_free(ix);
  }
  free(x);
}

Test(ivf, bad_parameters_are_rejected) {
  float x[300 * 4] = {0};
  ivf_params p;
  ivf *ix = NULL;
  ivf_params_init(&p, IVF_FLAT, 4);
  p.nlist = 301;
  cr_assert_eq(ivf_build(x, 300, 4, VEC_L2SQ, &p, &ix, NULL), QV_EINVAL);
  p.nlist = 4;
  cr_assert_eq(ivf_build(x, 300, 4, VEC_L1, &p, &ix, NULL), QV_EINVAL);
  ivf_params_init(&p, IVF_PQ, 4);
  p.nlist = 4;
  cr_assert_eq(ivf_build(x, 200, 4, VEC_L2SQ, &p, &ix, NULL), QV_EINVAL);
  p.pq_m = 5;
  cr_assert_eq(ivf_build(x, 300, 4, VEC_L2SQ, &p, &ix, NULL), QV_EINVAL);
  cr_assert_null(ix);
}

/* ---- files ---------------------------------------------------------------- */

typedef struct fixture {
  float *x, q[20];
  ivf *ix;
  char *dir, path[512];
} fixture;

enum { FN = 600, FDIM = 20 };

static void fixture_make(fixture *f, ivf_kind kind) {
  f->x = malloc(FN * FDIM * 4);
  qt_fill(f->x, FN * FDIM, 1.0f, 7);
  qt_fill(f->q, FDIM, 1.0f, 8);
  f->ix = build(f->x, FN, FDIM, VEC_L2SQ, kind, 8, 5);
  f->dir = tu_tmpdir("ivf");
  snprintf(f->path, sizeof f->path, "%s/index.qvi", f->dir);
  qv_err err;
  cr_assert_eq(ivf_save(f->ix, f->path, &err), QV_OK, "%s", err.msg);
}

static void fixture_free(fixture *f) {
  ivf_free(f->ix);
  tu_rmdir(f->dir);
  free(f->x);
}

static void search10(const ivf *ix, const float *q, quant_hit *hits,
                     uint32_t *n) {
  ivf_search_params sp;
  ivf_search_params_init(&sp);
  sp.nprobe = 3;
  sp.rescore = 20;
  ivf_scratch *sc = ivf_scratch_new();
  cr_assert_eq(ivf_search(ix, q, 10, &sp, sc, hits, n), QV_OK);
  ivf_scratch_free(sc);
}

static void check_round_trip(ivf_kind kind) {
  fixture f;
  fixture_make(&f, kind);
  ivf *back = NULL;
  qv_err err;
  cr_assert_eq(ivf_load(f.path, f.x, FN, FDIM, VEC_L2SQ, &back, &err), QV_OK,
               "%s", err.msg);
  quant_hit a[10], b[10];
  uint32_t na, nb;
  search10(f.ix, f.q, a, &na);
  search10(back, f.q, b, &nb);
  cr_assert_eq(na, nb);
  cr_assert_eq(memcmp(a, b, na * sizeof *a), 0);
  cr_assert_eq(ivf_memory_bytes(back), ivf_memory_bytes(f.ix));
  ivf_free(back);
  fixture_free(&f);
}

Test(ivf_io, flat_round_trip_searches_the_same) { check_round_trip(IVF_FLAT); }
Test(ivf_io, pq_round_trip_searches_the_same) { check_round_trip(IVF_PQ); }

static unsigned char *slurp(const char *path, size_t *n) {
  char *p;
  cr_assert_eq(fileio_read_file(path, &p, n, NULL), QV_OK);
  unsigned char *c = malloc(*n);
  memcpy(c, p, *n);
  qv_free(p);
  return c;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
  FILE *fp = fopen(path, "wb");
  cr_assert_not_null(fp);
  cr_assert_eq(fwrite(b, 1, n, fp), n);
  fclose(fp);
}

static void expect_corrupt(const fixture *f, const char *what) {
  ivf *back = NULL;
  qv_err err = {0};
  qv_rc rc = ivf_load(f->path, f->x, FN, FDIM, VEC_L2SQ, &back, &err);
  cr_assert_eq(rc, QV_ECORRUPT, "%s: rc %d", what, (int)rc);
  cr_assert_null(back);
  cr_assert_not_null(strstr(err.msg, f->path), "%s: '%s' lacks the path",
                    what, err.msg);
}

static void check_truncation(ivf_kind kind) {
  fixture f;
  fixture_make(&f, kind);
  size_t n;
  unsigned char *b = slurp(f.path, &n);
  /* every length up to the header + some, then a stride through the rest */
  for (size_t len = 0; len < n; len += len < 64 ? 1 : 97) {
    spit(f.path, b, len);
    char what[64];
    snprintf(what, sizeof what, "truncated to %zu of %zu", len, n);
    expect_corrupt(&f, what);
  }
  spit(f.path, b, n - 1);
  expect_corrupt(&f, "last byte cut");
  free(b);
  fixture_free(&f);
}

Test(ivf_io, flat_truncated_files_are_corrupt) { check_truncation(IVF_FLAT); }
Test(ivf_io, pq_truncated_files_are_corrupt) { check_truncation(IVF_PQ); }

static void check_flips(ivf_kind kind) {
  fixture f;
  fixture_make(&f, kind);
  size_t n;
  unsigned char *b = slurp(f.path, &n);
  for (size_t off = 0; off < n; off += off < 48 ? 1 : 61) {
    b[off] ^= 0x10;
    spit(f.path, b, n);
    char what[64];
    snprintf(what, sizeof what, "byte %zu of %zu flipped", off, n);
    expect_corrupt(&f, what);
    b[off] ^= 0x10;
  }
  /* a longer file (junk appended) is corrupt too */
  unsigned char *longer = malloc(n + 4);
  memcpy(longer, b, n);
  memset(longer + n, 0, 4);
  spit(f.path, longer, n + 4);
  expect_corrupt(&f, "appended bytes");
  free(longer);
  free(b);
  fixture_free(&f);
}

Test(ivf_io, flat_flipped_bytes_are_corrupt) { check_flips(IVF_FLAT); }
Test(ivf_io, pq_flipped_bytes_are_corrupt) { check_flips(IVF_PQ); }

Test(ivf_io, shape_mismatch_and_missing_file_are_corrupt) {
  fixture f;
  fixture_make(&f, IVF_FLAT);
  ivf *back = NULL;
  qv_err err;
  cr_assert_eq(ivf_load(f.path, f.x, FN - 1, FDIM, VEC_L2SQ, &back, &err),
               QV_ECORRUPT);
  cr_assert_eq(ivf_load(f.path, f.x, FN, FDIM, VEC_NEG_DOT, &back, &err),
               QV_ECORRUPT);
  cr_assert_eq(ivf_load(f.path, f.x, FN, FDIM + 1, VEC_L2SQ, &back, &err),
               QV_ECORRUPT);
  unlink(f.path);
  cr_assert_eq(ivf_load(f.path, f.x, FN, FDIM, VEC_L2SQ, &back, &err),
               QV_ECORRUPT);
  cr_assert_null(back);
  fixture_free(&f);
}
