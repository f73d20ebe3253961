/* test_hnsw_build.c: hnsw_build's graph, single- and multi-threaded.
 *
 * Covers: parameter checks; the structural invariants of hnsw_int.h (counts
 * within capacity, ids in range, no self-links or duplicates, upper-level
 * neighbours present on that level); the level distribution; reachability;
 * recall of a multi-threaded build on SIFT-small; byte-identical files from
 * two one-thread builds with one seed; clean QV_ENOMEM on every allocation
 * failure. Looks inside the graph through hnsw_int.h on purpose. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "index/hnsw.h"
#include "index/hnsw_int.h"
#include "testutil.h"

static hnsw_params params(uint32_t m, uint32_t efc, uint32_t threads,
                          uint64_t seed) {
  hnsw_params p;
  hnsw_params_init(&p);
  p.m = m;
  p.ef_construct = efc;
  p.n_threads = threads;
  p.seed = seed;
  return p;
}

static hnsw *build(const float *v, uint32_t n, uint32_t dim,
                   const hnsw_params *p) {
  hnsw *h = NULL;
  qv_err err = {0};
  qv_rc rc = hnsw_build(v, n, dim, VEC_L2SQ, p, &h, &err);
  cr_assert_eq(rc, QV_OK, "hnsw_build: %s", err.msg);
  return h;
}

/* Checks every invariant listed in hnsw_int.h; reports the first failure. */
static void assert_well_formed(const hnsw *h) {
  cr_assert_lt(h->entry, h->n);
  cr_assert_eq(h->levels[h->entry], h->max_level);
  for (uint32_t r = 0; r < h->n; r++) {
    cr_assert_leq(h->levels[r], h->max_level, "node %u", r);
    for (uint32_t lc = 0; lc <= h->levels[r]; lc++) {
      const uint32_t *l = hnsw_list(h, r, lc);
      uint32_t cap = lc == 0 ? 2 * h->m : h->m;
      cr_assert_leq(l[0], cap, "node %u level %u: %u links", r, lc, l[0]);
      for (uint32_t i = 0; i < l[0]; i++) {
        uint32_t id = l[1 + i];
        cr_assert_lt(id, h->n, "node %u level %u: id %u", r, lc, id);
        cr_assert_neq(id, r, "node %u links to itself on level %u", r, lc);
        cr_assert_geq(h->levels[id], lc, "node %u level %u: %u is below", r, lc,
                      id);
        for (uint32_t j = 0; j < i; j++)
          cr_assert_neq(l[1 + j], id, "node %u level %u: %u twice", r, lc, id);
      }
    }
  }
}

/* Rows reachable from the entry point on level 0. */
static uint32_t reachable(const hnsw *h) {
  uint8_t *seen = calloc(h->n, 1);
  uint32_t *queue = malloc(h->n * sizeof *queue);
  uint32_t head = 0, tail = 0;
  queue[tail++] = h->entry;
  seen[h->entry] = 1;
  while (head < tail) {
    const uint32_t *l = hnsw_l0_list(h, queue[head++]);
    for (uint32_t i = 0; i < l[0]; i++)
      if (!seen[l[1 + i]]) {
        seen[l[1 + i]] = 1;
        queue[tail++] = l[1 + i];
      }
  }
  free(seen);
  free(queue);
  return tail;
}

Test(hnsw_build, rejects_bad_parameters) {
  float v[16] = {0};
  hnsw *h = NULL;
  qv_err err = {0};
  hnsw_params p = params(16, 100, 1, 1);
  cr_expect_eq(hnsw_build(v, 0, 4, VEC_L2SQ, &p, &h, &err), QV_EINVAL);
  cr_expect_eq(hnsw_build(NULL, 4, 4, VEC_L2SQ, &p, &h, &err), QV_EINVAL);
  cr_expect_eq(hnsw_build(v, 4, 0, VEC_L2SQ, &p, &h, &err), QV_EINVAL);
  p.m = HNSW_M_MIN - 1;
  cr_expect_eq(hnsw_build(v, 4, 4, VEC_L2SQ, &p, &h, &err), QV_EINVAL);
  cr_expect(strstr(err.msg, "m = 3") != NULL, "message: %s", err.msg);
  p.m = HNSW_M_MAX + 1;
  cr_expect_eq(hnsw_build(v, 4, 4, VEC_L2SQ, &p, &h, &err), QV_EINVAL);
  p = params(16, HNSW_EF_CONSTRUCT_MIN - 1, 1, 1);
  cr_expect_eq(hnsw_build(v, 4, 4, VEC_L2SQ, &p, &h, &err), QV_EINVAL);
  p = params(16, 100, 0, 1);
  cr_expect_eq(hnsw_build(v, 4, 4, VEC_L2SQ, &p, &h, &err), QV_EINVAL);
  p = params(16, 100, 1, 1);
  cr_expect_eq(hnsw_build(v, 4, 4, (vec_metric)99, &p, &h, &err), QV_EINVAL);
  cr_expect_null(h);
}

Test(hnsw_build, single_vector_graph_is_searchable) {
  float v[3] = {1, 2, 3};
  hnsw_params p = params(16, 100, 4, 1);
  hnsw *h = build(v, 1, 3, &p);
  cr_expect_eq(hnsw_size(h), 1);
  hnsw_hit hit;
  uint32_t nh = 0;
  cr_assert_eq(hnsw_search(h, v, 5, 10, NULL, NULL, NULL, &hit, &nh), QV_OK);
  cr_expect_eq(nh, 1);
  cr_expect_eq(hit.row, 0);
  hnsw_free(h);
}

Test(hnsw_build, graph_is_well_formed_and_connected) {
  const uint32_t n = 3000, dim = 16;
  float *v = tu_random_vectors(n, dim, 21);
  for (uint32_t threads = 1; threads <= 3; threads += 2) {
    hnsw_params p = params(6, 40, threads, 5);
    hnsw *h = build(v, n, dim, &p);
    assert_well_formed(h);
    uint32_t got = reachable(h);
    /* The pruning heuristic can strand a node whose every in-link was
     * pruned by a closer one (the paper's graph has no guarantee either);
     * with m = 6 that is 0 to 3 nodes in 3,000 over 20 seeds, 1 or 3
     * threads alike (before insert() wrote all of a node's lists ahead of
     * its back-links, 3 threads stranded half as many again). */
    cr_expect_geq(got, n - n / 300, "%u threads: %u of %u reachable", threads,
                  got, n);
    hnsw_free(h);
  }
  free(v);
}

Test(hnsw_build, levels_thin_out_by_a_factor_of_m) {
  const uint32_t n = 8000, dim = 2, m = 4;
  float *v = tu_random_vectors(n, dim, 22);
  hnsw_params p = params(m, 16, 1, 9);
  hnsw *h = build(v, n, dim, &p);
  uint32_t above[4] = {0};
  for (uint32_t r = 0; r < n; r++)
    for (uint32_t l = 1; l < 4 && l <= h->levels[r]; l++) above[l]++;
  /* P(level >= l) = m^-l: 2000, 500, 125 expected of 8,000. */
  cr_expect(above[1] > 1800 && above[1] < 2200, "level>=1: %u", above[1]);
  cr_expect(above[2] > 400 && above[2] < 600, "level>=2: %u", above[2]);
  cr_expect(above[3] > 80 && above[3] < 170, "level>=3: %u", above[3]);
  cr_expect_geq(hnsw_memory_bytes(h),
                (size_t)n * (1 + 2 * m) * sizeof(uint32_t) + n);
  hnsw_free(h);
  free(v);
}

Test(hnsw_build, levels_depend_only_on_the_seed) {
  const uint32_t n = 2000, dim = 4;
  float *v = tu_random_vectors(n, dim, 25);
  hnsw_params p1 = params(8, 16, 1, 1234), p3 = params(8, 16, 3, 1234);
  hnsw *a = build(v, n, dim, &p1), *b = build(v, n, dim, &p3);
  cr_expect(memcmp(a->levels, b->levels, n) == 0);
  cr_expect_eq(a->max_level, b->max_level);
  p3.seed = 1235;
  hnsw *c = build(v, n, dim, &p3);
  cr_expect(memcmp(a->levels, c->levels, n) != 0, "seed had no effect");
  hnsw_free(a);
  hnsw_free(b);
  hnsw_free(c);
  free(v);
}

/* Same floor as the one-thread SIFT-small test in test_hnsw_search.c
 * (measured there 0.997; here with 2 and 4 threads 0.997 and 0.996). */
#define SIFT_RECALL_FLOOR 0.97

Test(hnsw_build, multi_threaded_build_keeps_recall) {
  char *bp = tu_data_path("siftsmall/siftsmall_base.fvecs");
  char *qp = tu_data_path("siftsmall/siftsmall_query.fvecs");
  if (bp == NULL || qp == NULL) cr_skip_test("QV_SHARED_DATA has no siftsmall");
  size_t n, dim, nq, qdim;
  float *base = tu_read_fvecs(bp, &n, &dim);
  float *q = tu_read_fvecs(qp, &nq, &qdim);
  cr_assert(base != NULL && q != NULL && dim == qdim);
  uint32_t(*truth)[10] = malloc(nq * sizeof *truth);
  for (size_t i = 0; i < nq; i++)
    tu_exact_knn_l2(base, n, dim, q + i * dim, 10, truth[i]);
  for (uint32_t threads = 2; threads <= 4; threads += 2) {
    hnsw_params p = params(16, 100, threads, 42);
    hnsw *h = build(base, (uint32_t)n, (uint32_t)dim, &p);
    assert_well_formed(h);
    hnsw_scratch *s = hnsw_scratch_new();
    double sum = 0;
    for (size_t i = 0; i < nq; i++) {
      hnsw_hit hits[10];
      uint32_t nh = 0, got[10];
      cr_assert_eq(
          hnsw_search(h, q + i * dim, 10, 64, NULL, NULL, s, hits, &nh), QV_OK);
      for (uint32_t j = 0; j < nh; j++) got[j] = hits[j].row;
      sum += tu_recall(got, nh, truth[i], 10);
    }
    double r = sum / nq;
    cr_log_info("%u threads: recall@10 %.4f", threads, r);
    cr_expect_geq(r, SIFT_RECALL_FLOOR, "%u threads: recall %.4f", threads, r);
    hnsw_scratch_free(s);
    hnsw_free(h);
  }
  free(truth);
  free(base);
  free(q);
  free(bp);
  free(qp);
}

static unsigned char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "open %s", path);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc(*n + 1);
  cr_assert_eq(fread(b, 1, *n, f), *n);
  fclose(f);
  return b;
}

static unsigned char *saved_bytes(const float *v, uint32_t n, uint32_t dim,
                                  const hnsw_params *p, const char *path,
                                  size_t *len) {
  hnsw *h = build(v, n, dim, p);
  qv_err err = {0};
  cr_assert_eq(hnsw_save(h, path, &err), QV_OK, "save: %s", err.msg);
  hnsw_free(h);
  return slurp(path, len);
}

Test(hnsw_build, one_thread_build_is_deterministic) {
  const uint32_t n = 2000, dim = 24;
  float *v = tu_random_vectors(n, dim, 23);
  char *dir = tu_tmpdir("hnswdet");
  char path[4200];
  snprintf(path, sizeof path, "%s/g.hnsw", dir);
  hnsw_params p = params(8, 50, 1, 77);
  size_t na, nb, nc;
  unsigned char *a = saved_bytes(v, n, dim, &p, path, &na);
  unsigned char *b = saved_bytes(v, n, dim, &p, path, &nb);
  cr_assert_eq(na, nb);
  cr_expect(memcmp(a, b, na) == 0, "same seed, different files");
  /* And the comparison can tell graphs apart: another seed differs. */
  p.seed = 78;
  unsigned char *c = saved_bytes(v, n, dim, &p, path, &nc);
  cr_expect(nc != na || memcmp(a, c, na) != 0, "seed had no effect");
  free(a);
  free(b);
  free(c);
  free(v);
  tu_rmdir(dir);
}

Test(hnsw_build, allocation_failure_is_enomem_without_leaks) {
  const uint32_t n = 300, dim = 8;
  float *v = tu_random_vectors(n, dim, 24);
  hnsw_params p = params(8, 32, 2, 3);
  int failures = 0;
  for (uint64_t k = 1; k < 40; k++) {
    hnsw *h = NULL;
    qv_err err = {0};
    qv_alloc_fail_after(k);
    qv_rc rc = hnsw_build(v, n, dim, VEC_L2SQ, &p, &h, &err);
    qv_alloc_fail_after(0);
    if (rc == QV_OK) {
      assert_well_formed(h);
      hnsw_free(h);
      continue;
    }
    failures++;
    cr_expect_eq(rc, QV_ENOMEM, "allocation %llu: %s", (unsigned long long)k,
                 err.msg);
    cr_expect_null(h);
  }
  cr_expect_geq(failures, 5, "only %d allocations could fail", failures);
  free(v);
}
