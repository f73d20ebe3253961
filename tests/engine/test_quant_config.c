/* test_quant_config.c: the storage parameters of a vector space through the
 * public API — validation at create (each rule named in the message),
 * config.json round trip and reopen with codes loaded and identical
 * results, memory accounting per component, a damaged or missing codes file
 * isolating the collection as QV_ECORRUPT, and the float16 / uint8
 * datatypes (rounding on upsert, integer validation). */
#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"
#include "testutil.h"

static qv_db *open_db(const char *dir) {
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_db *db = NULL;
  qv_err e;
  cr_assert_eq(qv_open(dir, &o, &db, &e), QV_OK, "%s", e.msg);
  return db;
}

static qv_collection_config base_cfg(uint32_t dim, qv_distance d) {
  qv_collection_config c;
  qv_collection_config_init(&c);
  c.dim = dim;
  c.distance = d;
  c.full_scan_threshold = 10;
  return c;
}

/* Creates "c" with `cfg`; returns the rc and the message in *e. */
static qv_rc try_create(qv_db *db, const qv_collection_config *cfg, qv_err *e) {
  memset(e, 0, sizeof *e);
  return qv_collection_create(db, "c", cfg, e);
}

static void expect_einval(const qv_collection_config *cfg, const char *needle) {
  char *dir = tu_tmpdir("qcfg");
  qv_db *db = open_db(dir);
  qv_err e;
  qv_rc rc = try_create(db, cfg, &e);
  qv_close(db);
  tu_rmdir(dir);
  cr_assert_eq(rc, QV_EINVAL, "expected QV_EINVAL mentioning \"%s\", got %d (%s)", needle, rc,
               e.msg);
  cr_assert(strstr(e.msg, needle) != NULL, "message \"%s\" does not name \"%s\"", e.msg, needle);
}

Test(quant_config, bad_values_are_rejected_naming_the_field) {
  qv_collection_config c = base_cfg(8, QV_EUCLID);
  c.storage.pq_ratio = 12;
  expect_einval(&c, "pq_ratio 12");
  c = base_cfg(8, QV_EUCLID);
  c.storage.bq_bits = 4; /* 3 is QV_BQ_ONE_AND_HALF_BITS */
  expect_einval(&c, "bq_bits 4");
  c = base_cfg(8, QV_EUCLID);
  c.storage.sq_quantile = 0.3f;
  expect_einval(&c, "sq_quantile");
  c = base_cfg(8, QV_EUCLID);
  c.storage.ivf_nlist = 70000;
  expect_einval(&c, "ivf_nlist 70000");
  c = base_cfg(8, QV_EUCLID);
  c.storage.quantization = (qv_quantization)9;
  expect_einval(&c, "quantization 9");
  c = base_cfg(8, QV_COSINE);
  c.storage.datatype = QV_DATATYPE_UINT8;
  expect_einval(&c, "uint8 with Cosine");
  c = base_cfg(8, QV_MANHATTAN);
  c.storage.index = QV_VINDEX_IVF_FLAT;
  expect_einval(&c, "Manhattan");
  c = base_cfg(8, QV_EUCLID);
  c.storage.index = QV_VINDEX_IVF_PQ;
  c.storage.quantization = QV_QUANT_SCALAR;
  expect_einval(&c, "takes no quantization");
}

Test(quant_config, named_vector_storage_is_validated_too) {
  qv_collection_config c = base_cfg(0, QV_EUCLID);
  c.n_named = 1;
  snprintf(c.named[0].name, sizeof c.named[0].name, "img");
  c.named[0].dim = 4;
  c.named[0].distance = QV_EUCLID;
  c.named[0].storage.pq_ratio = 5;
  expect_einval(&c, "vector \"img\": pq_ratio 5");
}

Test(quant_config, storage_round_trips_through_config_json) {
  char *dir = tu_tmpdir("qcfg");
  qv_db *db = open_db(dir);
  qv_collection_config c = base_cfg(16, QV_DOT);
  c.storage = (qv_storage_params){.datatype = QV_DATATYPE_FLOAT16,
                                  .on_disk = true,
                                  .quantization = QV_QUANT_BINARY,
                                  .sq_quantile = 0.95f,
                                  .bq_bits = 2,
                                  .pq_ratio = 32,
                                  .quant_always_ram = true,
                                  .index = QV_VINDEX_HNSW,
                                  .ivf_nlist = 77};
  c.n_named = 1;
  snprintf(c.named[0].name, sizeof c.named[0].name, "t");
  c.named[0].dim = 8;
  c.named[0].distance = QV_EUCLID;
  c.named[0].storage.index = QV_VINDEX_IVF_PQ;
  c.named[0].storage.pq_ratio = 8;
  qv_err e;
  cr_assert_eq(try_create(db, &c, &e), QV_OK, "%s", e.msg);
  qv_close(db);
  db = open_db(dir);
  qv_collection *coll;
  cr_assert_eq(qv_collection_get(db, "c", &coll, &e), QV_OK, "%s", e.msg);
  qv_collection_info info;
  cr_assert_eq(qv_collection_info_get(coll, &info, &e), QV_OK);
  const qv_storage_params *s = &info.config.storage;
  cr_expect_eq(s->datatype, QV_DATATYPE_FLOAT16);
  cr_expect(s->on_disk);
  cr_expect_eq(s->quantization, QV_QUANT_BINARY);
  cr_expect_float_eq(s->sq_quantile, 0.95f, 1e-9);
  cr_expect_eq(s->bq_bits, 2);
  cr_expect_eq(s->pq_ratio, 32);
  cr_expect(s->quant_always_ram);
  cr_expect_eq(s->ivf_nlist, 77);
  cr_expect_eq(info.config.named[0].storage.index, QV_VINDEX_IVF_PQ);
  cr_expect_eq(info.config.named[0].storage.pq_ratio, 8);
  qv_collection_release(coll);
  qv_close(db);
  tu_rmdir(dir);
}

Test(quant_config, default_storage_leaves_config_json_without_the_key) {
  char *dir = tu_tmpdir("qcfg");
  qv_db *db = open_db(dir);
  qv_collection_config c = base_cfg(4, QV_EUCLID);
  qv_err e;
  cr_assert_eq(try_create(db, &c, &e), QV_OK, "%s", e.msg);
  qv_close(db);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/collections/c/config.json", dir);
  FILE *f = fopen(path, "rb");
  if (f == NULL) { /* layout without a collections/ level */
    snprintf(path, sizeof path, "%s/c/config.json", dir);
    f = fopen(path, "rb");
  }
  cr_assert_not_null(f, "config.json not found under %s", dir);
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  cr_expect(strstr(buf, "storage") == NULL, "%s", buf);
  tu_rmdir(dir);
}

/* ---- sealed segments with codes --------------------------------------------- */

typedef struct fx {
  char *dir;
  qv_db *db;
  qv_collection *c;
  float *vecs;
  uint32_t n, dim;
} fx;

static void fx_open(fx *f) {
  f->db = open_db(f->dir);
  qv_err e;
  cr_assert_eq(qv_collection_get(f->db, "c", &f->c, &e), QV_OK, "%s", e.msg);
}

static void fx_close(fx *f) {
  qv_collection_release(f->c);
  qv_close(f->db);
  f->c = NULL;
  f->db = NULL;
}

/* A collection of n random vectors with `st`, sealed (optimized). */
static void fx_setup(fx *f, uint32_t n, uint32_t dim, qv_distance d,
                     const qv_storage_params *st) {
  f->dir = tu_tmpdir("qcodes");
  f->n = n;
  f->dim = dim;
  f->db = open_db(f->dir);
  qv_collection_config c = base_cfg(dim, d);
  c.storage = *st;
  qv_err e;
  cr_assert_eq(try_create(f->db, &c, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_collection_get(f->db, "c", &f->c, &e), QV_OK);
  f->vecs = tu_random_vectors(n, dim, 42);
  qv_point *p = calloc(n, sizeof *p);
  for (uint32_t i = 0; i < n; i++)
    p[i] = (qv_point){.id = qv_id_num(i), .vector = f->vecs + (size_t)i * dim, .dim = dim};
  cr_assert_eq(qv_upsert(f->c, p, n, &e), QV_OK, "%s", e.msg);
  free(p);
  cr_assert_eq(qv_collection_optimize(f->c, &e), QV_OK, "%s", e.msg);
}

static void fx_teardown(fx *f) {
  if (f->c) fx_close(f);
  free(f->vecs);
  tu_rmdir(f->dir);
}

static void run_queries(fx *f, const qv_search_params *p, qv_hit *out /* 20 x k */) {
  for (int q = 0; q < 20; q++) {
    size_t nh;
    qv_err e;
    cr_assert_eq(qv_search(f->c, f->vecs + (size_t)(q * 29) * f->dim, f->dim, p,
                           out + (size_t)q * p->k, &nh, &e),
                 QV_OK, "%s", e.msg);
    cr_assert_eq(nh, p->k);
  }
}

Test(quant_config, reopen_loads_codes_and_gives_the_same_results) {
  qv_quantization kinds[] = {QV_QUANT_SCALAR, QV_QUANT_BINARY, QV_QUANT_PRODUCT};
  for (int k = 0; k < 3; k++) {
    fx f = {0};
    qv_storage_params st = {.quantization = kinds[k], .bq_bits = 2, .pq_ratio = 8};
    fx_setup(&f, 600, 32, QV_EUCLID, &st);
    qv_collection_info info;
    qv_err e;
    cr_assert_eq(qv_collection_info_get(f.c, &info, &e), QV_OK);
    cr_expect_gt(info.code_bytes, 0, "%s: no codes", qv_quantization_name(kinds[k]));
    qv_search_params p;
    qv_search_params_init(&p);
    p.k = 5;
    p.quant_rescore = -1; /* code distances: any change of the codes shows */
    qv_hit before[100], after[100];
    run_queries(&f, &p, before);
    fx_close(&f);
    fx_open(&f);
    qv_collection_info info2;
    cr_assert_eq(qv_collection_info_get(f.c, &info2, &e), QV_OK);
    cr_expect_eq(info2.code_bytes, info.code_bytes);
    run_queries(&f, &p, after);
    for (int i = 0; i < 100; i++) {
      cr_expect_eq(before[i].id.num, after[i].id.num, "%s hit %d",
                   qv_quantization_name(kinds[k]), i);
      cr_expect_eq(before[i].score, after[i].score, "%s hit %d",
                   qv_quantization_name(kinds[k]), i);
    }
    fx_teardown(&f);
  }
}

Test(quant_config, memory_is_split_into_vectors_codes_and_graph) {
  fx f = {0};
  qv_storage_params st = {.quantization = QV_QUANT_SCALAR};
  fx_setup(&f, 500, 64, QV_EUCLID, &st);
  qv_collection_info i;
  qv_err e;
  cr_assert_eq(qv_collection_info_get(f.c, &i, &e), QV_OK);
  cr_expect_eq(i.vector_bytes, 500ull * 64 * 4);
  cr_expect_eq(i.vector_disk_bytes, 0);
  /* one byte a dimension plus the quantizer's ranges (3 floats a dim) */
  cr_expect_eq(i.code_bytes, 500ull * 64 + 3 * 64 * 4);
  cr_expect_gt(i.graph_bytes, 0);
  fx_teardown(&f);

  fx g = {0};
  st.on_disk = true;
  fx_setup(&g, 500, 64, QV_EUCLID, &st);
  cr_assert_eq(qv_collection_info_get(g.c, &i, &e), QV_OK);
  cr_expect_eq(i.vector_bytes, 0, "on_disk vectors counted as resident");
  cr_expect_eq(i.vector_disk_bytes, 500ull * 64 * 4);
  fx_teardown(&g);
}

/* The segment directory of the collection's only sealed segment. */
static void find_file(const char *dir, const char *name, char *out, size_t cap) {
  char cmd[PATH_MAX + 64];
  snprintf(cmd, sizeof cmd, "find %s -name '%s' | head -1", dir, name);
  FILE *p = popen(cmd, "r");
  cr_assert_not_null(p);
  cr_assert_not_null(fgets(out, (int)cap, p), "no %s under %s", name, dir);
  pclose(p);
  out[strcspn(out, "\n")] = 0;
}

static qv_rc reopen_rc(fx *f, qv_err *e) {
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_db *db = NULL;
  memset(e, 0, sizeof *e);
  qv_rc rc = qv_open(f->dir, &o, &db, e);
  if (rc != QV_OK) return rc;
  qv_collection *c;
  rc = qv_collection_get(db, "c", &c, e);
  if (rc == QV_OK) qv_collection_release(c);
  qv_close(db);
  return rc;
}

static void flip(const char *path, long off) {
  FILE *fp = fopen(path, "r+b");
  cr_assert_not_null(fp);
  fseek(fp, off, off < 0 ? SEEK_END : SEEK_SET);
  int ch = fgetc(fp);
  fseek(fp, -1, SEEK_CUR);
  fputc(ch ^ 0x20, fp);
  fclose(fp);
}

Test(quant_config, damaged_codes_file_isolates_the_collection) {
  fx f = {0};
  qv_storage_params st = {.quantization = QV_QUANT_SCALAR};
  fx_setup(&f, 300, 16, QV_EUCLID, &st);
  fx_close(&f);
  char path[PATH_MAX];
  find_file(f.dir, "codes-0.qvc", path, sizeof path);
  long offs[] = {3, 14, 45, 2000, -2};
  for (int i = 0; i < 5; i++) {
    flip(path, offs[i]);
    qv_err e;
    qv_rc rc = reopen_rc(&f, &e);
    cr_expect_eq(rc, QV_ECORRUPT, "flip at %ld: rc %d (%s)", offs[i], rc, e.msg);
    cr_expect(strstr(e.msg, path) != NULL, "message does not name %s: %s", path, e.msg);
    flip(path, offs[i]);
  }
  qv_err e;
  cr_assert_eq(reopen_rc(&f, &e), QV_OK, "restored file: %s", e.msg);
  char aside[PATH_MAX + 8];
  snprintf(aside, sizeof aside, "%s.away", path);
  cr_assert_eq(rename(path, aside), 0);
  qv_rc rc = reopen_rc(&f, &e);
  cr_expect_eq(rc, QV_ECORRUPT, "missing codes file: rc %d", rc);
  cr_expect(strstr(e.msg, path) != NULL, "%s", e.msg);
  cr_assert_eq(rename(aside, path), 0);
  fx_teardown(&f);
}

/* ---- datatypes --------------------------------------------------------------- */

Test(quant_config, uint8_rejects_non_integers_and_out_of_range_values) {
  char *dir = tu_tmpdir("qcfg");
  qv_db *db = open_db(dir);
  qv_collection_config c = base_cfg(4, QV_EUCLID);
  c.storage.datatype = QV_DATATYPE_UINT8;
  qv_err e;
  cr_assert_eq(try_create(db, &c, &e), QV_OK, "%s", e.msg);
  qv_collection *coll;
  cr_assert_eq(qv_collection_get(db, "c", &coll, &e), QV_OK);
  float good[4] = {0, 1, 200, 255}, frac[4] = {0, 1.5f, 2, 3}, neg[4] = {0, -1, 2, 3},
        big[4] = {0, 256, 2, 3};
  qv_point p = {.id = qv_id_num(1), .vector = good, .dim = 4};
  cr_expect_eq(qv_upsert(coll, &p, 1, &e), QV_OK, "%s", e.msg);
  p.vector = frac;
  cr_expect_eq(qv_upsert(coll, &p, 1, &e), QV_EINVAL);
  cr_expect(strstr(e.msg, "uint8") != NULL, "%s", e.msg);
  p.vector = neg;
  cr_expect_eq(qv_upsert(coll, &p, 1, &e), QV_EINVAL);
  p.vector = big;
  cr_expect_eq(qv_upsert(coll, &p, 1, &e), QV_EINVAL);
  qv_collection_release(coll);
  qv_close(db);
  tu_rmdir(dir);
}

Test(quant_config, float16_vectors_are_rounded_on_upsert_and_stored_narrow) {
  fx f = {0};
  qv_storage_params st = {.datatype = QV_DATATYPE_FLOAT16};
  fx_setup(&f, 300, 16, QV_EUCLID, &st);
  qv_records r;
  qv_err e;
  qv_point_id id = qv_id_num(7);
  cr_assert_eq(qv_get(f.c, &id, 1, true, false, &r, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(r.n, 1);
  for (uint32_t d = 0; d < 16; d++) {
    float want = f.vecs[7 * 16 + d];
    float got = r.items[0].vector[d];
    cr_expect(fabsf(got - want) <= fabsf(want) * (1.0f / 2048) + 1e-7f, "dim %u: %g vs %g", d,
              got, want);
  }
  qv_records_free(&r);
  qv_collection_info i;
  cr_assert_eq(qv_collection_info_get(f.c, &i, &e), QV_OK);
  cr_expect_eq(i.vector_bytes, 300ull * 16 * 2, "float16 vectors are 2 bytes a dimension");
  cr_expect_eq(i.vector_disk_bytes, 300ull * 16 * 4);
  fx_teardown(&f);
}

Test(quant_config, snapshot_carries_codes_and_ivf) {
  qv_storage_params kinds[] = {{.quantization = QV_QUANT_SCALAR},
                               {.index = QV_VINDEX_IVF_PQ, .pq_ratio = 8},
                               {.datatype = QV_DATATYPE_FLOAT16}};
  for (int k = 0; k < 3; k++) {
    fx f = {0};
    fx_setup(&f, 400, 16, QV_EUCLID, &kinds[k]);
    char snap[PATH_MAX];
    snprintf(snap, sizeof snap, "%s/c.snapshot", f.dir);
    qv_err e;
    cr_assert_eq(qv_snapshot_create(f.c, snap, &e), QV_OK, "%s", e.msg);
    cr_assert_eq(qv_snapshot_restore(f.db, "r", snap, false, &e), QV_OK, "kind %d: %s", k, e.msg);
    qv_collection *r;
    cr_assert_eq(qv_collection_get(f.db, "r", &r, &e), QV_OK);
    qv_collection_info a, b;
    cr_assert_eq(qv_collection_info_get(f.c, &a, &e), QV_OK);
    cr_assert_eq(qv_collection_info_get(r, &b, &e), QV_OK);
    cr_expect_eq(a.code_bytes, b.code_bytes, "kind %d", k);
    cr_expect_eq(a.vector_bytes, b.vector_bytes, "kind %d", k);
    cr_expect_eq(a.graph_bytes, b.graph_bytes, "kind %d", k);
    qv_search_params p;
    qv_search_params_init(&p);
    p.k = 5;
    qv_hit h1[5], h2[5];
    size_t n1, n2;
    cr_assert_eq(qv_search(f.c, f.vecs, 16, &p, h1, &n1, &e), QV_OK);
    cr_assert_eq(qv_search(r, f.vecs, 16, &p, h2, &n2, &e), QV_OK);
    cr_assert_eq(n1, n2);
    for (size_t i = 0; i < n1; i++) cr_expect_eq(h1[i].id.num, h2[i].id.num);
    qv_collection_release(r);
    fx_teardown(&f);
  }
}
