/* test_filtered.c: filters through the engine, property style. Points get
 * random payloads; for each generated filter the test computes the matching
 * ids itself from the generated values (not through the filter code) and
 * checks count, scroll, delete and search against that set. Also payload
 * set / overwrite / delete / clear by ids and by filter, across reopen. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"
#include "testutil.h"

#define N 6000
#define DIM 16
static const char *cats[] = {"red", "green", "blue", "black", "white"};

typedef struct gen {
  int cat; /* -1: key missing */
  int num; /* 0..9999 */
  bool tag_a, tag_b;
} gen;

typedef struct fx {
  char *dir;
  qv_db *db;
  qv_collection *c;
  gen g[N];
  float *v;
} fx;

static void open_fx(fx *f) {
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_err e;
  cr_assert_eq(qv_open(f->dir, &o, &f->db, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(qv_collection_get(f->db, "f", &f->c, &e), QV_OK, "%s", e.msg);
}

static void close_fx(fx *f) {
  qv_collection_release(f->c);
  qv_close(f->db);
}

static void setup(fx *f, bool seal) {
  f->dir = tu_tmpdir("filtered");
  qv_open_opts o;
  qv_open_opts_init(&o);
  o.background_optimizer = false;
  qv_err e;
  cr_assert_eq(qv_open(f->dir, &o, &f->db, &e), QV_OK);
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = DIM;
  cfg.distance = QV_EUCLID;
  cfg.shard_number = 2;
  cfg.full_scan_threshold = 100;
  cr_assert_eq(qv_collection_create(f->db, "f", &cfg, &e), QV_OK);
  cr_assert_eq(qv_collection_get(f->db, "f", &f->c, &e), QV_OK);
  f->v = tu_random_vectors(N, DIM, 21);
  uint64_t s = 99;
  static char payloads[N][128];
  qv_point *p = malloc(N * sizeof *p);
  for (int i = 0; i < N; i++) {
    gen *g = &f->g[i];
    g->cat = (int)(tu_rand(&s) % 6) - 1;
    g->num = (int)(tu_rand(&s) % 10000);
    g->tag_a = tu_rand(&s) % 2;
    g->tag_b = tu_rand(&s) % 4 == 0;
    char cat[40] = "";
    if (g->cat >= 0) snprintf(cat, sizeof cat, "\"cat\":\"%s\",", cats[g->cat]);
    snprintf(payloads[i], sizeof payloads[i], "{%s\"num\":%d,\"tags\":[%s%s%s]}", cat, g->num,
             g->tag_a ? "\"a\"" : "", g->tag_a && g->tag_b ? "," : "", g->tag_b ? "\"b\"" : "");
    p[i] = (qv_point){.id = qv_id_num((uint64_t)i), .vector = f->v + i * DIM, .dim = DIM,
                      .payload = payloads[i]};
  }
  cr_assert_eq(qv_upsert(f->c, p, N, &e), QV_OK, "%s", e.msg);
  free(p);
  if (seal) cr_assert_eq(qv_collection_optimize(f->c, &e), QV_OK);
}

static void teardown(fx *f) {
  close_fx(f);
  free(f->v);
  tu_rmdir(f->dir);
}

/* Filter kinds the test can also evaluate by itself. */
typedef struct query {
  char json[256];
  int kind, a, b;
} query;

static bool expect(const gen *g, const query *q) {
  switch (q->kind) {
  case 0: return g->cat == q->a;                          /* cat == X */
  case 1: return g->num >= q->a && g->num < q->b;          /* range */
  case 2: return g->tag_b && g->num < q->a;                /* tags any [b] and num < */
  case 3: return g->cat != q->a && g->cat >= 0;            /* except: other value present */
  default: return !(g->cat == q->a) && g->num >= q->b;     /* must_not + range */
  }
}

static query make_query(int kind, int a, int b) {
  query q = {.kind = kind, .a = a, .b = b};
  switch (kind) {
  case 0: snprintf(q.json, sizeof q.json, "{\"must\":[{\"key\":\"cat\",\"match\":{\"value\":\"%s\"}}]}", cats[a]); break;
  case 1: snprintf(q.json, sizeof q.json, "{\"must\":[{\"key\":\"num\",\"range\":{\"gte\":%d,\"lt\":%d}}]}", a, b); break;
  case 2: snprintf(q.json, sizeof q.json, "{\"must\":[{\"key\":\"tags\",\"match\":{\"any\":[\"b\"]}},{\"key\":\"num\",\"range\":{\"lt\":%d}}]}", a); break;
  case 3: snprintf(q.json, sizeof q.json, "{\"must\":[{\"key\":\"cat\",\"match\":{\"except\":[\"%s\"]}}]}", cats[a]); break;
  default: snprintf(q.json, sizeof q.json, "{\"must_not\":[{\"key\":\"cat\",\"match\":{\"value\":\"%s\"}}],\"must\":[{\"key\":\"num\",\"range\":{\"gte\":%d}}]}", cats[a], b);
  }
  return q;
}

static query random_query(uint64_t *s) {
  int kind = (int)(tu_rand(s) % 5), a, b;
  if (kind == 1) {
    a = (int)(tu_rand(s) % 10000);
    b = a + 1 + (int)(tu_rand(s) % 3000);
  } else if (kind == 2) {
    a = (int)(tu_rand(s) % 10000);
    b = 0;
  } else {
    a = (int)(tu_rand(s) % 5);
    b = (int)(tu_rand(s) % 10000);
  }
  return make_query(kind, a, b);
}

Test(filtered, count_and_scroll_match_independent_evaluation, .timeout = 300) {
  static fx f;
  setup(&f, false);
  uint64_t s = 7;
  for (int round = 0; round < 40; round++) {
    if (round == 20) {
      qv_err e;
      cr_assert_eq(qv_collection_optimize(f.c, &e), QV_OK); /* sealed segments too */
    }
    query q = random_query(&s);
    qv_filter *flt;
    qv_err e;
    cr_assert_eq(qv_filter_parse(q.json, 0, &flt, &e), QV_OK, "%s: %s", q.json, e.msg);
    uint64_t want = 0, got;
    for (int i = 0; i < N; i++) want += expect(&f.g[i], &q);
    cr_assert_eq(qv_count_filtered(f.c, flt, &got, &e), QV_OK);
    cr_expect_eq(got, want, "count for %s", q.json);
    /* scroll every page: exactly the matching ids, ascending */
    qv_point_id cur;
    bool has = true, first = true;
    int expect_next = 0;
    while (has) {
      qv_records r;
      qv_point_id next;
      cr_assert_eq(qv_scroll_filtered(f.c, flt, first ? NULL : &cur, 97, false, false, &r,
                                      &next, &has, &e), QV_OK);
      for (size_t i = 0; i < r.n; i++) {
        while (expect_next < N && !expect(&f.g[expect_next], &q)) expect_next++;
        cr_assert_eq(r.items[i].id.num, (uint64_t)expect_next, "scroll %s", q.json);
        expect_next++;
      }
      qv_records_free(&r);
      cur = next;
      first = false;
    }
    while (expect_next < N && !expect(&f.g[expect_next], &q)) expect_next++;
    cr_expect_eq(expect_next, N, "scroll missed matching ids for %s", q.json);
    qv_filter_free(flt);
  }
  teardown(&f);
}

static double filtered_recall(fx *f, const query *q, bool exact, int n_queries,
                              size_t *min_results, size_t *n_match_out) {
  qv_filter *flt;
  qv_err e;
  cr_assert_eq(qv_filter_parse(q->json, 0, &flt, &e), QV_OK);
  uint32_t *match = malloc(N * sizeof *match);
  size_t n_match = 0;
  for (int i = 0; i < N; i++)
    if (expect(&f->g[i], q)) match[n_match++] = (uint32_t)i;
  float *sub = malloc(n_match * DIM * sizeof *sub + 4);
  for (size_t i = 0; i < n_match; i++) memcpy(sub + i * DIM, f->v + match[i] * DIM, DIM * 4);
  float *qs = tu_random_vectors((size_t)n_queries, DIM, 1234);
  double recall = 0;
  *min_results = 10;
  for (int qi = 0; qi < n_queries; qi++) {
    qv_search_params p;
    qv_search_params_init(&p);
    p.filter = flt;
    p.exact = exact;
    p.ef = 64;
    qv_hit h[10];
    size_t nh;
    cr_assert_eq(qv_search(f->c, qs + qi * DIM, DIM, &p, h, &nh, &e), QV_OK, "%s", e.msg);
    size_t k = n_match < 10 ? n_match : 10;
    if (nh < *min_results) *min_results = nh;
    cr_expect_eq(nh, k, "%s: %zu results, %zu match", q->json, nh, n_match);
    uint32_t truth_rows[10], truth[10], got[10];
    if (k) tu_exact_knn_l2(sub, n_match, DIM, qs + qi * DIM, k, truth_rows);
    for (size_t j = 0; j < k; j++) truth[j] = match[truth_rows[j]];
    for (size_t j = 0; j < nh; j++) {
      got[j] = (uint32_t)h[j].id.num;
      cr_expect(expect(&f->g[got[j]], q), "result %u does not match %s", got[j], q->json);
    }
    recall += k ? tu_recall(got, nh, truth, k) : 1;
  }
  free(qs);
  free(sub);
  free(match);
  qv_filter_free(flt);
  *n_match_out = n_match;
  return recall / n_queries;
}

/* Selectivities from 0.1% to 100%: k results whenever k match, and recall@10
 * against exact filtered search >= 0.95 (graph or exact, as planned). */
Test(filtered, search_keeps_k_and_recall_at_every_selectivity, .timeout = 300) {
  static fx f;
  setup(&f, true);
  const int widths[] = {6, 60, 600, 3000, 6000, 10000};
  for (size_t i = 0; i < sizeof widths / sizeof *widths; i++) {
    query q = make_query(1, 0, widths[i]);
    size_t min_res, n_match;
    double r = filtered_recall(&f, &q, false, 30, &min_res, &n_match);
    cr_log_info("selectivity %.4f: recall %.3f", n_match / (double)N, r);
    cr_expect_geq(r, 0.95, "%s (%zu match): recall %.3f", q.json, n_match, r);
    double rx = filtered_recall(&f, &q, true, 5, &min_res, &n_match);
    cr_expect_eq(rx, 1.0, "exact filtered search is exact");
  }
  teardown(&f);
}

Test(filtered, delete_by_filter_removes_exactly_the_matching_points) {
  static fx f;
  setup(&f, true);
  query q = make_query(0, 2, 0); /* cat == blue */
  qv_filter *flt;
  qv_err e;
  cr_assert_eq(qv_filter_parse(q.json, 0, &flt, &e), QV_OK);
  size_t want = 0, deleted;
  for (int i = 0; i < N; i++) want += expect(&f.g[i], &q);
  cr_assert_eq(qv_delete_filtered(f.c, flt, &deleted, &e), QV_OK, "%s", e.msg);
  cr_expect_eq(deleted, want);
  uint64_t n;
  qv_count(f.c, &n, &e);
  cr_expect_eq(n, N - want);
  qv_count_filtered(f.c, flt, &n, &e);
  cr_expect_eq(n, 0);
  qv_filter_free(flt);
  teardown(&f);
}

static char *payload_of(qv_collection *c, uint64_t id) {
  qv_records r;
  qv_point_id pid = qv_id_num(id);
  cr_assert_eq(qv_get(c, &pid, 1, true, true, &r, NULL), QV_OK);
  cr_assert_eq(r.n, 1);
  char *s = strdup(r.items[0].payload);
  qv_records_free(&r);
  return s;
}

Test(filtered, payload_updates_by_ids_and_by_filter_survive_reopen) {
  static fx f;
  setup(&f, true);
  qv_err e;
  qv_point_id ids[2] = {qv_id_num(1), qv_id_num(2)};
  cr_assert_eq(qv_payload_overwrite(f.c, ids, 2, NULL, "{\"a\":1,\"b\":{\"c\":2}}", &e), QV_OK,
               "%s", e.msg);
  cr_assert_eq(qv_payload_set(f.c, ids, 1, NULL, "{\"a\":null,\"z\":true}", NULL, &e), QV_OK);
  cr_assert_eq(qv_payload_set(f.c, ids + 1, 1, NULL, "{\"d\":3}", "b.x", &e), QV_OK, "%s", e.msg);
  char *p1 = payload_of(f.c, 1), *p2 = payload_of(f.c, 2);
  cr_expect_str_eq(p1, "{\"b\":{\"c\":2},\"z\":true}", "null removes a key");
  cr_expect_str_eq(p2, "{\"a\":1,\"b\":{\"c\":2,\"x\":{\"d\":3}}}", "nested set creates b.x");
  free(p1);
  free(p2);
  const char *keys[] = {"b.c"};
  cr_assert_eq(qv_payload_delete_keys(f.c, ids + 1, 1, NULL, keys, 1, &e), QV_OK);
  p2 = payload_of(f.c, 2);
  cr_expect_str_eq(p2, "{\"a\":1,\"b\":{\"x\":{\"d\":3}}}");
  free(p2);
  /* by filter: every black point gets flag = 1, then is cleared */
  qv_filter *black;
  cr_assert_eq(qv_filter_parse("{\"must\":[{\"key\":\"cat\",\"match\":{\"value\":\"black\"}}]}",
                               0, &black, &e), QV_OK);
  uint64_t n_black;
  qv_count_filtered(f.c, black, &n_black, &e);
  cr_assert_gt(n_black, 0);
  cr_assert_eq(qv_payload_set(f.c, NULL, 0, black, "{\"flag\":1}", NULL, &e), QV_OK);
  qv_filter *flag;
  cr_assert_eq(qv_filter_parse("{\"must\":[{\"key\":\"flag\",\"match\":{\"value\":1}}]}", 0,
                               &flag, &e), QV_OK);
  uint64_t n_flag;
  qv_count_filtered(f.c, flag, &n_flag, &e);
  cr_expect_eq(n_flag, n_black);
  uint64_t total;
  qv_count(f.c, &total, &e);
  cr_expect_eq(total, N, "payload updates keep every point");
  /* vectors are kept: a point still finds itself */
  qv_search_params sp;
  qv_search_params_init(&sp);
  qv_hit h[10];
  size_t nh;
  cr_assert_eq(qv_search(f.c, f.v + 1 * DIM, DIM, &sp, h, &nh, &e), QV_OK);
  cr_expect_eq(h[0].id.num, 1);
  cr_assert_eq(qv_payload_clear(f.c, NULL, 0, black, &e), QV_OK);
  close_fx(&f);
  open_fx(&f); /* durable */
  qv_count_filtered(f.c, flag, &n_flag, &e);
  cr_expect_eq(n_flag, 0, "cleared payloads have no flag");
  qv_count_filtered(f.c, black, &n_black, &e);
  cr_expect_eq(n_black, 0, "cleared payloads have no cat");
  p1 = payload_of(f.c, 1);
  cr_expect_str_eq(p1, "{\"b\":{\"c\":2},\"z\":true}");
  free(p1);
  cr_expect_eq(qv_payload_set(f.c, ids, 1, NULL, "[1]", NULL, &e), QV_EINVAL);
  cr_expect_eq(qv_payload_set(f.c, ids, 1, NULL, "{}", "a..b", &e), QV_EINVAL);
  qv_filter_free(black);
  qv_filter_free(flag);
  teardown(&f);
}
