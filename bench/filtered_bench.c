/* filtered_bench.c: filtered search on Fashion-MNIST (60,000 x 784, L2) with
 * its class label and a synthetic numeric payload, per selectivity: recall@10
 * against exact filtered search, QPS and p50/p99 of the graph (planned)
 * search, with and without payload indexes. Run by bench/run_filtered.sh.
 *
 *   filtered_bench BASE.fvecs LABELS.idx1 QUERIES.fvecs DATA_DIR [N_QUERIES] [EF] */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quiver.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *read_fvecs(const char *path, size_t *n, size_t *dim) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  int32_t d;
  size_t cap = 0;
  float *v = NULL;
  *n = 0;
  while (fread(&d, 4, 1, f) == 1) {
    if (*n == cap) v = realloc(v, (cap = cap ? cap * 2 : 1024) * (size_t)d * 4);
    if (fread(v + *n * d, 4, d, f) != (size_t)d) break;
    (*n)++;
  }
  *dim = (size_t)d;
  fclose(f);
  return v;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s BASE.fvecs LABELS QUERIES.fvecs DATA_DIR [NQ] [EF]\n", argv[0]);
    return 2;
  }
  size_t n, dim, nq, qd;
  float *v = read_fvecs(argv[1], &n, &dim), *q = read_fvecs(argv[3], &nq, &qd);
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "gzip -dc '%s'", argv[2]);
  FILE *lf = popen(cmd, "r");
  unsigned char hdr[8], *labels = malloc(n);
  if (!v || !q || !lf || fread(hdr, 1, 8, lf) != 8 || fread(labels, 1, n, lf) != n) {
    fprintf(stderr, "cannot read inputs\n");
    return 1;
  }
  pclose(lf);
  size_t n_queries = argc > 5 ? (size_t)atoi(argv[5]) : 1000;
  uint32_t ef = argc > 6 ? (uint32_t)atoi(argv[6]) : 64;
  if (n_queries > nq) n_queries = nq;
  qv_db *db;
  qv_err e;
  qv_open_opts o;
  qv_open_opts_init(&o);
  char cmdrm[4200];
  snprintf(cmdrm, sizeof cmdrm, "rm -rf '%s'", argv[4]);
  if (system(cmdrm) != 0) return 1;
  if (qv_open(argv[4], &o, &db, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
  const char *names[2] = {"plain", "indexed"};
  qv_collection *c[2];
  for (int k = 0; k < 2; k++) {
    qv_collection_config cfg;
    qv_collection_config_init(&cfg);
    cfg.dim = (uint32_t)dim;
    cfg.distance = QV_EUCLID;
    cfg.hnsw_m = 16;
    cfg.hnsw_ef_construct = 200;
    if (qv_collection_create(db, names[k], &cfg, &e) || qv_collection_get(db, names[k], &c[k], &e))
      return fprintf(stderr, "%s\n", e.msg), 1;
  }
  qv_payload_index_create(c[1], "label", QV_INDEX_INTEGER, &e);
  qv_payload_index_create(c[1], "n", QV_INDEX_INTEGER, &e);
  /* n: a permutation of 0..n-1, so "n < t" matches exactly t points */
  uint32_t *perm = malloc(n * 4);
  for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
  uint64_t s = 7;
  for (size_t i = n - 1; i > 0; i--) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    size_t j = (s >> 33) % (i + 1);
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  char(*payloads)[48] = malloc(n * 48);
  qv_point *p = malloc(n * sizeof *p);
  for (size_t i = 0; i < n; i++) {
    snprintf(payloads[i], 48, "{\"label\":%u,\"n\":%u}", labels[i], perm[i]);
    p[i] = (qv_point){.id = qv_id_num(i), .vector = v + i * dim, .dim = (uint32_t)dim,
                      .payload = payloads[i]};
  }
  for (int k = 0; k < 2; k++) {
    for (size_t at = 0; at < n; at += 1000)
      if (qv_upsert(c[k], p + at, n - at < 1000 ? n - at : 1000, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    if (qv_collection_optimize(c[k], &e)) return fprintf(stderr, "%s\n", e.msg), 1;
  }
  struct { const char *label, *json; } sel[] = {
      {"0.1%", "{\"must\":[{\"key\":\"n\",\"range\":{\"lt\":60}}]}"},
      {"1%", "{\"must\":[{\"key\":\"n\",\"range\":{\"lt\":600}}]}"},
      {"5%", "{\"must\":[{\"key\":\"n\",\"range\":{\"lt\":3000}}]}"},
      {"10% (label)", "{\"must\":[{\"key\":\"label\",\"match\":{\"value\":7}}]}"},
      {"20%", "{\"must\":[{\"key\":\"n\",\"range\":{\"lt\":12000}}]}"},
      {"50%", "{\"must\":[{\"key\":\"n\",\"range\":{\"lt\":30000}}]}"},
      {"90% (not label)", "{\"must_not\":[{\"key\":\"label\",\"match\":{\"value\":7}}]}"},
      {"100%", NULL},
  };
  printf("| selectivity | payload index | recall@10 | QPS (1 thread) | p50 ms | p99 ms |\n");
  printf("|---|---|---|---|---|---|\n");
  double *lat = malloc(n_queries * sizeof *lat);
  for (size_t f = 0; f < sizeof sel / sizeof *sel; f++) {
    qv_filter *flt = NULL;
    if (sel[f].json && qv_filter_parse(sel[f].json, 0, &flt, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    for (int k = 0; k < 2; k++) {
      double recall = 0, total = 0;
      for (size_t i = 0; i < n_queries; i++) {
        qv_search_params ex, ap;
        qv_search_params_init(&ex);
        ex.filter = flt;
        ex.exact = true;
        ap = ex;
        ap.exact = false;
        ap.ef = ef;
        qv_hit he[10], ha[10];
        size_t ne, na;
        qv_search(c[k], q + i * dim, dim, &ex, he, &ne, &e);
        double t0 = now();
        qv_search(c[k], q + i * dim, dim, &ap, ha, &na, &e);
        lat[i] = now() - t0;
        total += lat[i];
        int hit = 0;
        for (size_t a = 0; a < na; a++)
          for (size_t b = 0; b < ne; b++) hit += ha[a].id.num == he[b].id.num;
        recall += ne ? (double)hit / ne : 1;
      }
      qsort(lat, n_queries, sizeof *lat, cmp_double);
      printf("| %s | %s | %.4f | %.0f | %.3f | %.3f |\n", sel[f].label, k ? "yes" : "no",
             recall / n_queries, n_queries / total, lat[n_queries / 2] * 1e3,
             lat[n_queries * 99 / 100] * 1e3);
      fflush(stdout);
    }
    qv_filter_free(flt);
  }
  qv_collection_release(c[0]);
  qv_collection_release(c[1]);
  qv_close(db);
  return 0;
}
