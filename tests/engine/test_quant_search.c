/* test_quant_search.c: searching sealed segments through their codes and
 * IVF indexes, through the public API, on real data (SIFT-small: the first
 * N_BASE base vectors, N_QUERY of its queries, L2). For every quantization
 * and index type, recall@10 against exact search (exact=true) with a floor
 * set a little below the measured value (written beside each floor), and
 * the query-time switches: rescore off returns code distances, ignore walks
 * the full vectors exactly as a collection without codes does, oversampling
 * and nprobe are honoured, filtered searches still return k, float16 loses
 * at most 0.005 recall against float32; Cosine through every code kind on
 * scifact-use512.
 *
 * One index build thread, so graphs are the same from run to run (and the
 * same with and without codes, which the ignore test relies on). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"
#include "testutil.h"

#define N_BASE 5000u
#define N_QUERY 100u
#define K 10u

static float *g_base, *g_query;
static size_t g_dim;

static void load_data(void) {
  if (g_base) return;
  char *bp = tu_data_path("siftsmall/siftsmall_base.fvecs");
  char *qp = tu_data_path("siftsmall/siftsmall_query.fvecs");
  cr_assert(bp && qp, "SIFT-small not found: set QV_SHARED_DATA");
  size_t nb, nq, dq;
  g_base = tu_read_fvecs(bp, &nb, &g_dim);
  g_query = tu_read_fvecs(qp, &nq, &dq);
  cr_assert(g_base && g_query && nb >= N_BASE && nq >= N_QUERY && dq == g_dim);
  free(bp);
  free(qp);
}

typedef struct fx {
  char *dir;
  qv_db *db;
  qv_collection *c;
} fx;

/* A sealed collection of the first N_BASE vectors with storage `st`; each
 * point's payload is {"g": id % 10}. */
static void fx_build(fx *f, const qv_storage_params *st) {
  load_data();
  f->dir = tu_tmpdir("qsearch");
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  o.optimizer_threads = 1;
  qv_err e;
  cr_assert_eq(qv_open(f->dir, &o, &f->db, &e), QV_OK, "%s", e.msg);
  qv_collection_config c;
  qv_collection_config_init(&c);
  c.dim = (uint32_t)g_dim;
  c.distance = QV_EUCLID;
  c.hnsw_ef_construct = 64;
  c.full_scan_threshold = 100;
  c.storage = *st;
  cr_assert_eq(qv_collection_create(f->db, "c", &c, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_collection_get(f->db, "c", &f->c, &e), QV_OK);
  qv_point *p = calloc(N_BASE, sizeof *p);
  char(*pl)[16] = calloc(N_BASE, 16);
  for (uint32_t i = 0; i < N_BASE; i++) {
    snprintf(pl[i], 16, "{\"g\":%u}", i % 10);
    p[i] = (qv_point){.id = qv_id_num(i), .vector = g_base + (size_t)i * g_dim,
                      .dim = (uint32_t)g_dim, .payload = pl[i]};
  }
  cr_assert_eq(qv_upsert(f->c, p, N_BASE, &e), QV_OK, "%s", e.msg);
  free(p);
  free(pl);
  cr_assert_eq(qv_collection_optimize(f->c, &e), QV_OK, "%s", e.msg);
}

static void fx_free(fx *f) {
  qv_collection_release(f->c);
  qv_close(f->db);
  tu_rmdir(f->dir);
}

static void search(fx *f, uint32_t q, const qv_search_params *p, qv_hit *hits) {
  size_t n;
  qv_err e;
  cr_assert_eq(qv_search(f->c, g_query + (size_t)q * g_dim, g_dim, p, hits, &n, &e), QV_OK,
               "%s", e.msg);
  cr_assert_eq(n, p->k, "query %u: %zu hits, expected %u", q, n, p->k);
}

/* Mean recall@K of `p` against exact search on the same collection. */
static double recall(fx *f, const qv_search_params *p) {
  qv_search_params ex;
  qv_search_params_init(&ex);
  ex.k = K;
  ex.exact = true;
  double sum = 0;
  for (uint32_t q = 0; q < N_QUERY; q++) {
    qv_hit got[K], want[K];
    search(f, q, p, got);
    search(f, q, &ex, want);
    for (uint32_t i = 0; i < K; i++)
      for (uint32_t j = 0; j < K; j++)
        if (got[i].id.num == want[j].id.num) {
          sum += 1;
          break;
        }
  }
  return sum / (N_QUERY * K);
}

static qv_search_params params(uint32_t ef, float oversampling) {
  qv_search_params p;
  qv_search_params_init(&p);
  p.k = K;
  p.ef = ef;
  p.quant_oversampling = oversampling;
  return p;
}

/* Recall of one storage configuration at one setting, checked against a
 * floor; also checks the space actually has codes or an IVF index. */
static double check_recall(const qv_storage_params *st, qv_search_params p, double floor,
                           const char *what) {
  fx f;
  fx_build(&f, st);
  qv_collection_info info;
  qv_err e;
  cr_assert_eq(qv_collection_info_get(f.c, &info, &e), QV_OK);
  if (st->quantization != QV_QUANT_NONE || st->index == QV_VINDEX_IVF_PQ)
    cr_expect_gt(info.code_bytes, 0, "%s: no codes", what);
  double r = recall(&f, &p);
  cr_log_info("%s: recall@10 %.4f (floor %.2f)", what, r, floor);
  cr_expect_geq(r, floor, "%s: recall@10 %.4f below %.2f", what, r, floor);
  fx_free(&f);
  return r;
}

Test(quant_search, scalar_int8_with_rescoring) {
  qv_storage_params st = {.quantization = QV_QUANT_SCALAR};
  check_recall(&st, params(64, 1), 0.94, "int8 ef 64 os 1"); /* measured 0.968 */
}

Test(quant_search, binary_one_bit_with_oversampling) {
  qv_storage_params st = {.quantization = QV_QUANT_BINARY, .bq_bits = 1};
  check_recall(&st, params(64, 4), 0.78, "binary 1-bit os 4"); /* measured 0.827 */
}

Test(quant_search, binary_two_bits_with_oversampling) {
  qv_storage_params st = {.quantization = QV_QUANT_BINARY, .bq_bits = 2};
  check_recall(&st, params(64, 4), 0.90, "binary 2-bit os 4"); /* measured 0.954 */
}

/* QV_BQ_ONE_AND_HALF_BITS: 3 words a vector at 128 dims (1.5 bits) */
Test(quant_search, binary_one_and_half_bits_with_oversampling) {
  qv_storage_params st = {.quantization = QV_QUANT_BINARY, .bq_bits = QV_BQ_ONE_AND_HALF_BITS};
  check_recall(&st, params(64, 4), 0.87, "binary 1.5-bit os 4"); /* measured 0.921 */
}

Test(quant_search, product_x16_with_oversampling) {
  qv_storage_params st = {.quantization = QV_QUANT_PRODUCT, .pq_ratio = 16};
  check_recall(&st, params(64, 4), 0.95, "pq x16 os 4"); /* measured 0.997 */
}

Test(quant_search, ivf_flat_default_nprobe) {
  qv_storage_params st = {.index = QV_VINDEX_IVF_FLAT};
  check_recall(&st, params(0, 0), 0.90, "ivf-flat"); /* measured 0.965 (nlist 283, nprobe 17) */
}

Test(quant_search, ivf_pq_x16_with_rescoring) {
  qv_storage_params st = {.index = QV_VINDEX_IVF_PQ, .pq_ratio = 16};
  qv_search_params p = params(0, 4);
  p.nprobe = 32;
  check_recall(&st, p, 0.90, "ivf-pq x16 nprobe 32 os 4"); /* measured 0.993 */
}

Test(quant_search, float16_loses_at_most_0_005_recall) {
  qv_storage_params f32 = {0}, f16 = {.datatype = QV_DATATYPE_FLOAT16};
  double r32 = check_recall(&f32, params(32, 0), 0.95, "float32 ef 32"); /* measured 0.987 */
  double r16 = check_recall(&f16, params(32, 0), 0.95, "float16 ef 32"); /* measured 0.987 */
  cr_expect_geq(r16, r32 - 0.005, "float16 %.4f vs float32 %.4f", r16, r32);
}

/* ---- query-time switches ------------------------------------------------------ */

static float l2(uint32_t row, uint32_t q) {
  double s = 0;
  for (size_t d = 0; d < g_dim; d++) {
    double t = (double)g_base[(size_t)row * g_dim + d] - g_query[(size_t)q * g_dim + d];
    s += t * t;
  }
  return (float)sqrt(s);
}

Test(quant_search, rescore_off_returns_code_distances) {
  fx f;
  qv_storage_params st = {.quantization = QV_QUANT_SCALAR};
  fx_build(&f, &st);
  qv_search_params on = params(64, 2), off = on;
  off.quant_rescore = -1;
  size_t differ = 0;
  for (uint32_t q = 0; q < 20; q++) {
    qv_hit h[K];
    search(&f, q, &on, h);
    for (uint32_t i = 0; i < K; i++) {
      float want = l2((uint32_t)h[i].id.num, q);
      cr_expect(fabsf(h[i].score - want) <= 2e-5f * want, "rescored score %g vs %g",
                h[i].score, want);
    }
    search(&f, q, &off, h);
    for (uint32_t i = 0; i < K; i++) {
      float want = l2((uint32_t)h[i].id.num, q);
      cr_expect(fabsf(h[i].score - want) <= 0.05f * want, "code score %g far from %g",
                h[i].score, want);
      differ += fabsf(h[i].score - want) > 2e-5f * want;
    }
  }
  cr_expect_gt(differ, 100, "only %zu of 200 code scores differ from exact ones", differ);
  fx_free(&f);
}

Test(quant_search, ignore_walks_the_full_vectors) {
  fx plain, coded;
  qv_storage_params none = {0}, bin = {.quantization = QV_QUANT_BINARY};
  fx_build(&plain, &none);
  fx_build(&coded, &bin);
  qv_search_params p = params(32, 0), ign = p;
  ign.quant_ignore = true;
  size_t same_codes = 0;
  for (uint32_t q = 0; q < N_QUERY; q++) {
    qv_hit a[K], b[K], c[K];
    search(&plain, q, &p, a);
    search(&coded, q, &ign, b);
    search(&coded, q, &p, c);
    for (uint32_t i = 0; i < K; i++) {
      cr_expect_eq(a[i].id.num, b[i].id.num, "query %u hit %u", q, i);
      cr_expect_eq(a[i].score, b[i].score, "query %u hit %u", q, i);
      same_codes += a[i].id.num == c[i].id.num;
    }
  }
  /* without ignore the 1-bit codes lose neighbours: the switch matters */
  cr_expect_lt(same_codes, N_QUERY * K * 9 / 10, "codes gave %zu equal hits", same_codes);
  fx_free(&plain);
  fx_free(&coded);
}

Test(quant_search, oversampling_raises_binary_recall) {
  fx f;
  qv_storage_params st = {.quantization = QV_QUANT_BINARY, .bq_bits = 1};
  fx_build(&f, &st);
  double r1 = recall(&f, &(qv_search_params){.k = K, .ef = 16, .quant_rescore = 0,
                                              .quant_oversampling = 1});
  double r8 = recall(&f, &(qv_search_params){.k = K, .ef = 16, .quant_rescore = 0,
                                              .quant_oversampling = 8});
  cr_log_info("binary 1-bit: os 1 %.4f, os 8 %.4f", r1, r8);
  cr_expect_gt(r8, r1 + 0.1, "os 8 %.4f vs os 1 %.4f", r8, r1); /* measured 0.455 -> 0.937 */
  fx_free(&f);
}

Test(quant_search, nprobe_is_honoured) {
  fx f;
  qv_storage_params st = {.index = QV_VINDEX_IVF_FLAT, .ivf_nlist = 64};
  fx_build(&f, &st);
  qv_search_params one = params(0, 0), all = one;
  one.nprobe = 1;
  all.nprobe = 64;
  double r1 = recall(&f, &one), r64 = recall(&f, &all);
  cr_log_info("ivf-flat nlist 64: nprobe 1 %.4f, nprobe 64 %.4f", r1, r64);
  cr_expect_eq(r64, 1.0, "every list probed is exact search, got %.4f", r64);
  cr_expect_lt(r1, 0.8, "one list of 64 found %.4f", r1);
  fx_free(&f);
}

/* A filter matching half the points (enough that the planner walks the
 * index rather than scanning the matches): every index and code type must
 * still return k hits, each matching. */
Test(quant_search, filtered_search_returns_k_with_every_kind) {
  qv_storage_params kinds[] = {
      {.quantization = QV_QUANT_SCALAR},
      {.quantization = QV_QUANT_BINARY, .bq_bits = 2},
      {.quantization = QV_QUANT_PRODUCT, .pq_ratio = 8},
      {.index = QV_VINDEX_IVF_FLAT},
      {.index = QV_VINDEX_IVF_PQ},
  };
  const char *json = "{\"must_not\":[{\"key\":\"g\",\"match\":{\"any\":[0,1,2,3,4]}}]}";
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    fx f;
    fx_build(&f, &kinds[k]);
    qv_filter *flt;
    qv_err e;
    cr_assert_eq(qv_filter_parse(json, 0, &flt, &e), QV_OK, "%s", e.msg);
    qv_search_params p = params(16, 2);
    p.filter = flt;
    p.nprobe = 1; /* IVF: one list of ~18 rows often holds fewer than 10 matches */
    for (uint32_t q = 0; q < 20; q++) {
      qv_hit h[K];
      search(&f, q, &p, h); /* asserts K hits */
      for (uint32_t i = 0; i < K; i++)
        cr_expect_geq(h[i].id.num % 10, 5, "kind %zu: hit %llu does not match", k,
                     (unsigned long long)h[i].id.num);
    }
    qv_filter_free(flt);
    fx_free(&f);
  }
}

/* Cosine (negated dot on unit vectors) through every code kind, on real
 * sentence embeddings (scifact-use512: the first 2,500 of 5,183 x 512): the dot-product
 * kernels of int8, binary and product codes and IVF-PQ's per-list bias. */
Test(quant_search, cosine_codes_on_sentence_embeddings) {
  char *dp = tu_data_path("scifact-use512/docs.fvecs");
  char *qp = tu_data_path("scifact-use512/queries.fvecs");
  cr_assert(dp && qp, "scifact-use512 not found: set QV_SHARED_DATA");
  size_t nd, dim, nq, dq;
  float *docs = tu_read_fvecs(dp, &nd, &dim), *qs = tu_read_fvecs(qp, &nq, &dq);
  cr_assert(docs && qs && dq == dim && nq >= 50 && nd >= 2500);
  nd = 2500; /* keeps the test under a minute with sanitizers */
  struct {
    qv_storage_params st;
    float os;
    double floor;
  } kinds[] = {
      {{.quantization = QV_QUANT_SCALAR}, 1, 0.93},               /* measured 0.970 */
      {{.quantization = QV_QUANT_BINARY, .bq_bits = 2}, 8, 0.96}, /* measured 0.990 */
      {{.quantization = QV_QUANT_BINARY, .bq_bits = QV_BQ_ONE_AND_HALF_BITS}, 8, 0.95},
      /* measured 0.990, as 2 bits: 12 words a vector against 16 */
      {{.quantization = QV_QUANT_PRODUCT, .pq_ratio = 16}, 8, 0.97}, /* measured 0.996 */
      {{.index = QV_VINDEX_IVF_PQ, .pq_ratio = 16}, 8, 0.80},     /* measured 0.846: nlist 200, default nprobe 12 */
  };
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    fx f;
    f.dir = tu_tmpdir("qcos");
    qv_open_opts o;
    qv_open_opts_init(&o);
    o.background_optimizer = false;
    o.optimizer_threads = 1;
    qv_err e;
    cr_assert_eq(qv_open(f.dir, &o, &f.db, &e), QV_OK, "%s", e.msg);
    qv_collection_config c;
    qv_collection_config_init(&c);
    c.dim = (uint32_t)dim;
    c.distance = QV_COSINE;
    c.hnsw_ef_construct = 64;
    c.full_scan_threshold = 100;
    c.storage = kinds[k].st;
    cr_assert_eq(qv_collection_create(f.db, "c", &c, &e), QV_OK, "%s", e.msg);
    cr_assert_eq(qv_collection_get(f.db, "c", &f.c, &e), QV_OK);
    qv_point *p = calloc(nd, sizeof *p);
    for (size_t i = 0; i < nd; i++)
      p[i] = (qv_point){.id = qv_id_num(i), .vector = docs + i * dim, .dim = (uint32_t)dim};
    cr_assert_eq(qv_upsert(f.c, p, nd, &e), QV_OK, "%s", e.msg);
    free(p);
    cr_assert_eq(qv_collection_optimize(f.c, &e), QV_OK, "%s", e.msg);
    qv_search_params sp = params(64, kinds[k].os), ex;
    qv_search_params_init(&ex);
    ex.k = K;
    ex.exact = true;
    double hit = 0;
    for (uint32_t q = 0; q < 50; q++) {
      qv_hit got[K], want[K];
      size_t n1, n2;
      cr_assert_eq(qv_search(f.c, qs + (size_t)q * dim, dim, &sp, got, &n1, &e), QV_OK);
      cr_assert_eq(qv_search(f.c, qs + (size_t)q * dim, dim, &ex, want, &n2, &e), QV_OK);
      cr_assert_eq(n1, K);
      for (uint32_t i = 0; i < K; i++) {
        cr_expect(got[i].score <= 1.001f && got[i].score >= -1.001f, "cosine score %g",
                  got[i].score);
        for (uint32_t j = 0; j < K; j++) hit += got[i].id.num == want[j].id.num;
      }
    }
    double r = hit / (50.0 * K);
    cr_log_info("cosine kind %zu: recall@10 %.4f", k, r);
    cr_expect_geq(r, kinds[k].floor, "cosine kind %zu: recall %.4f", k, r);
    fx_free(&f);
  }
  free(docs);
  free(qs);
  free(dp);
  free(qp);
}
