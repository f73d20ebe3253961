/* test_idmap.c: the id -> location table against a naive array model under
 * random puts and deletes (backward-shift deletion is easy to get wrong). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "engine/idmap.h"
#include "testutil.h"

#define UNIVERSE 3000

Test(idmap, matches_a_naive_model_under_random_operations) {
  idmap m;
  idmap_init(&m);
  static int model_row[UNIVERSE]; /* -1 = absent */
  for (int i = 0; i < UNIVERSE; i++) model_row[i] = -1;
  uint64_t seed = 77;
  struct segment *seg = (struct segment *)&m; /* any non-NULL marker */
  for (int step = 0; step < 200000; step++) {
    uint64_t r = tu_rand(&seed);
    int id = (int)(r % UNIVERSE);
    qv_point_id pid = qv_id_num((uint64_t)id * 7919u); /* spread hashes */
    if ((r >> 32) % 3 == 0) {
      idmap_del(&m, &pid);
      model_row[id] = -1;
    } else {
      uint32_t row = (uint32_t)(r >> 40);
      cr_assert_eq(idmap_put(&m, &pid, seg, row, (uint64_t)step), QV_OK);
      model_row[id] = (int)row;
    }
    if (step % 9973 == 0) {
      size_t live = 0;
      for (int i = 0; i < UNIVERSE; i++) {
        qv_point_id q = qv_id_num((uint64_t)i * 7919u);
        idmap_entry *e = idmap_get(&m, &q);
        if (model_row[i] < 0) {
          cr_assert_null(e, "id %d should be absent at step %d", i, step);
        } else {
          live++;
          cr_assert_not_null(e, "id %d should be present at step %d", i, step);
          cr_assert_eq(e->row, (uint32_t)model_row[i]);
        }
      }
      cr_assert_eq(m.n, live);
    }
  }
  idmap_free(&m);
}

Test(idmap, uuid_and_integer_ids_do_not_collide) {
  idmap m;
  idmap_init(&m);
  qv_point_id n = qv_id_num(0), u;
  memset(&u, 0, sizeof u);
  u.is_uuid = true; /* the all-zero UUID vs integer 0 */
  struct segment *seg = (struct segment *)&m;
  cr_assert_eq(idmap_put(&m, &n, seg, 1, 1), QV_OK);
  cr_assert_eq(idmap_put(&m, &u, seg, 2, 2), QV_OK);
  cr_expect_eq(m.n, 2);
  cr_expect_eq(idmap_get(&m, &n)->row, 1);
  cr_expect_eq(idmap_get(&m, &u)->row, 2);
  idmap_free(&m);
}
