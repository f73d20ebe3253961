/* make_seeds.c: builds a tiny database through the public API (4-d unnamed +
 * 2-d named vector, 64 sealed points, a log tail, a snapshot) and writes its
 * files, each prefixed with fuzz_files' format byte, as seeds.
 *   make_seeds WORK_DIR SEEDS_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/ivf.h"
#include "quant/qcodes.h"
#include "quiver.h"

static void seed(const char *seeds, const char *name, int kind, const char *src) {
  FILE *in = fopen(src, "rb");
  if (in == NULL) {
    fprintf(stderr, "no %s\n", src);
    exit(1);
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/fuzz_files/%s", seeds, name);
  FILE *out = fopen(path, "wb");
  fputc(kind, out);
  int ch;
  while ((ch = fgetc(in)) != EOF) fputc(ch, out);
  fclose(in);
  fclose(out);
}

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  char db_dir[4096], cmd[8300], p[4300];
  snprintf(db_dir, sizeof db_dir, "%s/db", argv[1]);
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/fuzz_files' '%s/fuzz_filter' '%s/fuzz_record'",
           db_dir, argv[2], argv[2], argv[2]);
  if (system(cmd) != 0) return 1;
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_db *db;
  qv_err e;
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = 4;
  cfg.distance = QV_EUCLID;
  cfg.n_named = 1;
  strcpy(cfg.named[0].name, "v");
  cfg.named[0].dim = 2;
  qv_collection *c;
  if (qv_open(db_dir, &o, &db, &e) || qv_collection_create(db, "c", &cfg, &e) ||
      qv_collection_get(db, "c", &c, &e))
    return fprintf(stderr, "%s\n", e.msg), 1;
  for (int i = 0; i < 69; i++) {
    float v[4] = {(float)i, (float)(i % 7), 1, -1}, w[2] = {(float)i, 1};
    qv_named_vector nv = {"v", w, 2};
    char payload[64];
    snprintf(payload, sizeof payload, "{\"i\":%d,\"tag\":[\"a\",%d]}", i, i % 3);
    qv_point pt = {.id = qv_id_num((uint64_t)i), .vector = v, .dim = 4, .payload = payload,
                   .named = &nv, .n_named = (uint32_t)(i % 2)};
    if (qv_upsert(c, &pt, 1, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    if (i == 63 && qv_collection_optimize(c, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
  }
  qv_point_id del = qv_id_num(3);
  qv_delete(c, &del, 1, NULL, &e);
  snprintf(p, sizeof p, "%s/c.snapshot", argv[1]);
  if (qv_snapshot_create(c, p, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
  seed(argv[2], "snapshot", 4, p);
  qv_collection_release(c);
  qv_close(db);
  snprintf(p, sizeof p, "%s/collections/c/0/segments/1/segment.qvs", db_dir);
  seed(argv[2], "segment", 0, p);
  snprintf(p, sizeof p, "%s/collections/c/0/MANIFEST", db_dir);
  seed(argv[2], "manifest", 1, p);
  snprintf(p, sizeof p, "%s/collections/c/0/segments/1/graph-0.qvh", db_dir);
  seed(argv[2], "graph", 3, p);
  snprintf(p, sizeof p, "%s/collections/c/config.json", db_dir);
  seed(argv[2], "config", 5, p);
  snprintf(cmd, sizeof cmd, "ls %s/collections/c/0/wal/*.wal | tail -1", db_dir);
  FILE *ls = popen(cmd, "r");
  char wal[4096] = "";
  if (fgets(wal, sizeof wal, ls)) wal[strcspn(wal, "\n")] = 0;
  pclose(ls);
  seed(argv[2], "wal", 2, wal);
  /* Codes and IVF files of 300 rows of 8 dims, as fuzz_files loads them. */
  enum { QN = 300, QD = 8 };
  static float x[QN * QD];
  for (int i = 0; i < QN * QD; i++) x[i] = (float)((i * 7919) % 101) / 17.0f - 3.0f;
  static const struct { qcodes_kind kind; uint32_t bits; const char *name; } qk[] = {
      {QCODES_SQ8, 0, "codes-sq8"}, {QCODES_BQ, 1, "codes-bq1"}, {QCODES_BQ, 2, "codes-bq2"},
      {QCODES_BQ, 3, "codes-bq15"}, {QCODES_PQ, 0, "codes-pq"}, {QCODES_F16, 0, "codes-f16"}};
  for (size_t i = 0; i < sizeof qk / sizeof *qk; i++) {
    qcodes_params qp = {.kind = qk[i].kind, .sq_quantile = 0.99f, .bq_bits = qk[i].bits,
                        .pq_ratio = 8, .seed = 1};
    qcodes *q;
    snprintf(p, sizeof p, "%s/%s.qvc", argv[1], qk[i].name);
    if (qcodes_build(x, QN, x, QN, QD, VEC_L2SQ, &qp, &q, &e) || qcodes_save(q, p, &e))
      return fprintf(stderr, "%s: %s\n", qk[i].name, e.msg), 1;
    qcodes_free(q);
    seed(argv[2], qk[i].name, 6, p);
  }
  for (int k = 0; k < 2; k++) {
    ivf_params ip;
    ivf_params_init(&ip, k ? IVF_PQ : IVF_FLAT, QD);
    ip.nlist = 8;
    ivf *iv;
    snprintf(p, sizeof p, "%s/ivf-%d.qvi", argv[1], k);
    if (ivf_build(x, QN, QD, VEC_L2SQ, &ip, &iv, &e) || ivf_save(iv, p, &e))
      return fprintf(stderr, "ivf: %s\n", e.msg), 1;
    ivf_free(iv);
    seed(argv[2], k ? "ivf-pq" : "ivf-flat", 7, p);
  }
  snprintf(p, sizeof p, "%s/fuzz_filter/f1", argv[2]);
  FILE *f = fopen(p, "w");
  fputs("{\"must\":[{\"key\":\"a\",\"match\":{\"any\":[1,2]}},{\"nested\":{\"key\":\"n\",\"filter\":"
        "{\"must\":[{\"key\":\"x\",\"range\":{\"gte\":2}}]}}}],\"should\":[{\"has_id\":[7]}],"
        "\"must_not\":[{\"is_empty\":{\"key\":\"c[].d\"}}],\"min_should\":{\"min_count\":1,"
        "\"conditions\":[{\"key\":\"t\",\"range\":{\"lt\":\"2025-01-01T00:00:00Z\"}}]}}",
        f);
  fclose(f);
  return 0;
}
