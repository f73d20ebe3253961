/* test_record.c: log record encoding round-trips, and decoding refuses every
 * truncation and malformed field without reading out of bounds. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "engine/record.h"
#include "testutil.h"

typedef struct seen {
  int n_up, n_del;
  qv_point_id ids[8];
  float first[8][3];
  bool has_named[8];
  float named[8][2];
  char payload[8][32];
} seen;

/* one unnamed space of 3 and a named one of 2 */
static spaces two_spaces(void) {
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = 3;
  cfg.n_named = 1;
  strcpy(cfg.named[0].name, "img");
  cfg.named[0].dim = 2;
  spaces sp;
  spaces_from_config(&cfg, &sp);
  return sp;
}

static qv_rc on_up(void *c, const qv_point_id *id, const float *const *v, const char *p,
                   uint32_t len) {
  seen *s = c;
  s->ids[s->n_up] = *id;
  memcpy(s->first[s->n_up], v[0], sizeof s->first[0]);
  s->has_named[s->n_up] = v[1] != NULL;
  if (v[1]) memcpy(s->named[s->n_up], v[1], sizeof s->named[0]);
  memcpy(s->payload[s->n_up], p, len);
  s->payload[s->n_up][len] = 0;
  s->n_up++;
  return QV_OK;
}

static qv_rc on_del(void *c, const qv_point_id *id) {
  seen *s = c;
  s->ids[s->n_del++] = *id;
  return QV_OK;
}

Test(record, upsert_round_trips) {
  float v[6] = {1, 2, 3, -4, 5.5f, 6}, img[2] = {7, 8};
  qv_point p[2] = {{.id = qv_id_num(42), .payload = "{\"a\":1}", .payload_len = 7},
                   {.payload_len = 0}};
  cr_assert_eq(qv_id_parse_uuid("936da01f-9abd-4d9d-80c7-02af85c822a8", &p[1].id, NULL), QV_OK);
  spaces sp = two_spaces();
  const float *vecs[4] = {v, NULL, v + 3, img}; /* point 0 lacks "img" */
  rec_buf b = {0};
  cr_assert_eq(rec_encode_upsert(&b, p, vecs, 2, &sp), QV_OK);
  seen s = {0};
  rec_visitor vis = {&s, on_up, on_del};
  qv_err e;
  cr_assert_eq(rec_decode(b.p, b.n, &sp, &vis, &e), QV_OK, "%s", e.msg);
  cr_assert_eq(s.n_up, 2);
  cr_expect_eq(s.ids[0].num, 42);
  cr_expect(s.ids[1].is_uuid);
  cr_expect_eq(qv_id_cmp(&s.ids[1], &p[1].id), 0);
  cr_expect_arr_eq(s.first[1], v + 3, sizeof s.first[1]);
  cr_expect_not(s.has_named[0], "absent named vectors stay absent");
  cr_expect(s.has_named[1]);
  cr_expect_arr_eq(s.named[1], img, sizeof img);
  cr_expect_str_eq(s.payload[0], "{\"a\":1}");
  cr_expect_str_eq(s.payload[1], "");
  spaces other = sp;
  other.s[1].dim = 4;
  cr_expect_eq(rec_decode(b.p, b.n, &other, &vis, &e), QV_ECORRUPT, "dimension mismatch");
  other = sp;
  other.n = 1;
  cr_expect_eq(rec_decode(b.p, b.n, &other, &vis, &e), QV_ECORRUPT, "space count mismatch");
  rec_buf_free(&b);
}

Test(record, every_truncation_and_trailing_garbage_is_corrupt) {
  float v[3] = {1, 2, 3}, img[2] = {1, 1};
  qv_point p = {.id = qv_id_num(1), .payload = "{}", .payload_len = 2};
  spaces sp = two_spaces();
  const float *vecs[2] = {v, img};
  rec_buf b = {0};
  cr_assert_eq(rec_encode_upsert(&b, &p, vecs, 1, &sp), QV_OK);
  seen s = {0};
  rec_visitor vis = {&s, on_up, on_del};
  for (size_t cut = 0; cut < b.n; cut++) {
    unsigned char *copy = malloc(cut + 1); /* exact size: ASan sees overreads */
    memcpy(copy, b.p, cut);
    cr_expect_eq(rec_decode(copy, cut, &sp, &vis, NULL), QV_ECORRUPT, "cut at %zu", cut);
    free(copy);
  }
  cr_expect_eq(s.n_up, 0, "nothing is visited when the record is bad");
  unsigned char *longer = malloc(b.n + 1);
  memcpy(longer, b.p, b.n);
  longer[b.n] = 0;
  cr_expect_eq(rec_decode(longer, b.n + 1, &sp, &vis, NULL), QV_ECORRUPT);
  longer[0] = 9; /* unknown type */
  cr_expect_eq(rec_decode(longer, b.n, &sp, &vis, NULL), QV_ECORRUPT);
  free(longer);
  rec_buf_free(&b);
}

Test(record, delete_round_trips_and_huge_counts_are_refused) {
  qv_point_id ids[3] = {qv_id_num(5), qv_id_num(6), qv_id_num(7)};
  rec_buf b = {0};
  cr_assert_eq(rec_encode_delete(&b, ids, 3), QV_OK);
  seen s = {0};
  rec_visitor vis = {&s, on_up, on_del};
  spaces sp = two_spaces();
  cr_assert_eq(rec_decode(b.p, b.n, &sp, &vis, NULL), QV_OK);
  cr_expect_eq(s.n_del, 3);
  cr_expect_eq(s.ids[2].num, 7);
  uint32_t huge = 0xFFFFFFFFu; /* a count far beyond the bytes present */
  memcpy(b.p + 1, &huge, 4);
  cr_expect_eq(rec_decode(b.p, b.n, &sp, &vis, NULL), QV_ECORRUPT);
  rec_buf_free(&b);
}
