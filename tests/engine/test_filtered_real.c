/* test_filtered_real.c: filtered search on real data (SIFT-small, 10,000 x
 * 128) with a synthetic payload {"n": 0..9999 (a permutation), "g": n % 10}.
 * At every selectivity from 0.1% to 100%, with and without payload indexes:
 * k results whenever k points match, every result matches, and recall@10
 * against exact filtered search is at least 0.95 (the floor; measured about
 * 0.99 and above). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"
#include "testutil.h"

static void run(bool with_indexes) {
  char *base = tu_data_path("siftsmall/siftsmall_base.fvecs");
  char *qf = tu_data_path("siftsmall/siftsmall_query.fvecs");
  cr_assert(base && qf, "SIFT-small missing: set QV_SHARED_DATA");
  size_t n, dim, nq, qdim;
  float *v = tu_read_fvecs(base, &n, &dim);
  float *q = tu_read_fvecs(qf, &nq, &qdim);
  char *dir = tu_tmpdir("freal");
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_db *db;
  qv_err e;
  cr_assert_eq(qv_open(dir, &o, &db, &e), QV_OK);
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = (uint32_t)dim;
  cfg.distance = QV_EUCLID;
  cr_assert_eq(qv_collection_create(db, "s", &cfg, &e), QV_OK);
  qv_collection *c;
  cr_assert_eq(qv_collection_get(db, "s", &c, &e), QV_OK);
  if (with_indexes) {
    cr_assert_eq(qv_payload_index_create(c, "n", QV_INDEX_INTEGER, &e), QV_OK);
    cr_assert_eq(qv_payload_index_create(c, "g", QV_INDEX_INTEGER, &e), QV_OK);
  }
  /* n is a permutation of 0..n-1, so "n < t" matches exactly t points */
  uint32_t *perm = malloc(n * sizeof *perm);
  for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
  uint64_t s = 42;
  for (size_t i = n - 1; i > 0; i--) {
    size_t j = tu_rand(&s) % (i + 1);
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  static char payloads[10000][48];
  qv_point *p = malloc(n * sizeof *p);
  for (size_t i = 0; i < n; i++) {
    snprintf(payloads[i], sizeof payloads[i], "{\"n\":%u,\"g\":%u}", perm[i], perm[i] % 10);
    p[i] = (qv_point){.id = qv_id_num(i), .vector = v + i * dim, .dim = (uint32_t)dim,
                      .payload = payloads[i]};
  }
  cr_assert_eq(qv_upsert(c, p, n, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_collection_optimize(c, &e), QV_OK);
  const char *filters[] = {"{\"must\":[{\"key\":\"n\",\"range\":{\"lt\":10}}]}",     /* 0.1% */
                           "{\"must\":[{\"key\":\"n\",\"range\":{\"lt\":100}}]}",    /* 1% */
                           "{\"must\":[{\"key\":\"g\",\"match\":{\"value\":3}}]}",   /* 10% */
                           "{\"must\":[{\"key\":\"n\",\"range\":{\"lt\":3000}}]}",   /* 30% */
                           "{\"must\":[{\"key\":\"n\",\"range\":{\"gte\":5000}}]}",  /* 50% */
                           "{\"must_not\":[{\"key\":\"g\",\"match\":{\"value\":0}}]}", /* 90% */
                           NULL};
  for (int f = 0; filters[f] != NULL || f == 6; f++) {
    qv_filter *flt = NULL;
    if (filters[f] != NULL) cr_assert_eq(qv_filter_parse(filters[f], 0, &flt, &e), QV_OK);
    double recall = 0;
    for (size_t qi = 0; qi < nq; qi++) {
      qv_search_params ex, ap;
      qv_search_params_init(&ex);
      ex.exact = true;
      ex.filter = flt;
      ap = ex;
      ap.exact = false;
      ap.ef = 64;
      qv_hit he[10], ha[10];
      size_t ne, na;
      cr_assert_eq(qv_search(c, q + qi * dim, dim, &ex, he, &ne, &e), QV_OK);
      cr_assert_eq(qv_search(c, q + qi * dim, dim, &ap, ha, &na, &e), QV_OK);
      cr_assert_eq(ne, 10, "exact filtered search returns k");
      cr_assert_eq(na, 10, "%s: graph search returned %zu of 10", filters[f], na);
      uint32_t got[10], truth[10];
      for (int k = 0; k < 10; k++) {
        got[k] = (uint32_t)ha[k].id.num;
        truth[k] = (uint32_t)he[k].id.num;
      }
      recall += tu_recall(got, 10, truth, 10);
    }
    recall /= (double)nq;
    cr_log_info("%s indexes, %s: recall@10 %.4f", with_indexes ? "with" : "without",
                filters[f] ? filters[f] : "no filter", recall);
    cr_expect_geq(recall, 0.95, "%s: recall@10 %.4f below 0.95", filters[f] ? filters[f] : "-",
                  recall);
    qv_filter_free(flt);
    if (filters[f] == NULL) break;
  }
  qv_collection_release(c);
  qv_close(db);
  tu_rmdir(dir);
  free(perm);
  free(p);
  free(v);
  free(q);
  free(base);
  free(qf);
}

Test(filtered_real, siftsmall_without_indexes, .timeout = 600) { run(false); }
Test(filtered_real, siftsmall_with_indexes, .timeout = 600) { run(true); }
