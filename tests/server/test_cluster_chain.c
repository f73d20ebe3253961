/* test_cluster_chain.c: the rules of a shard's write chain
 * (src/server/cluster_chain.c) — which writes a copy follows, adopts or
 * refuses, what the primary's backlog can replay, that the marker survives
 * a restart and that a torn marker is trusted for nothing. The end-to-end
 * catch-up runs in tests/cluster/test_cluster_rejoin.py. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "server/cluster_int.h"
#include "testutil.h"

static srv g;
static char *dir;

static void setup(void) {
  memset(&g, 0, sizeof g);
  dir = tu_tmpdir("chain");
  g.cfg.data_dir = dir;
  g.cfg.cluster_backlog_bytes = 1 << 20;
  qv_err e;
  cr_assert_eq(qv_open(dir, NULL, &g.db, &e), QV_OK, "%s", e.msg);
}

static void teardown(void) {
  clg_reset();
  qv_close(g.db);
  tu_rmdir(dir);
}

/* Local copy c.s<k> (what the marker's owner holds), with n points. */
static void local_copy(uint32_t k, int n) {
  char name[32];
  snprintf(name, sizeof name, "c.s%u", k);
  qv_collection_config cfg;
  qv_collection_config_init(&cfg);
  cfg.dim = 2;
  qv_err e;
  cr_assert_eq(qv_collection_create(g.db, name, &cfg, &e), QV_OK, "%s", e.msg);
  qv_collection *h;
  cr_assert_eq(qv_collection_get(g.db, name, &h, &e), QV_OK, "%s", e.msg);
  for (int i = 0; i < n; i++) {
    float v[2] = {(float)i, 1};
    qv_point p = {.id = qv_id_num((uint64_t)i + 1), .vector = v, .dim = 2};
    cr_assert_eq(qv_upsert(h, &p, 1, &e), QV_OK, "%s", e.msg);
  }
  qv_collection_release(h);
}

static cl_link L(uint64_t t, uint64_t s) { return (cl_link){t, s}; }

/* The primary logs n writes of term t from seq first; returns the last link. */
static cl_link lead_and_write(uint32_t k, uint64_t t, uint64_t first, int n) {
  clg_lead(&g, "c", k, t, first);
  cl_link prev = {0, 0};
  bool root_empty;
  for (int i = 0; i < n; i++) {
    char body[32];
    int len = snprintf(body, sizeof body, "{\"w\":%d}", i);
    clg_append(&g, "c", k, L(t, first + (uint64_t)i), CLW_UPSERT, body, (size_t)len, &prev,
               &root_empty);
  }
  return n ? L(t, first + (uint64_t)n - 1) : prev;
}

TestSuite(cluster_chain, .init = setup, .fini = teardown);

Test(cluster_chain, a_new_empty_copy_adopts_the_root_of_an_empty_shard_and_then_follows) {
  local_copy(0, 0);
  clg_forget(&g, "c", 0);
  cr_expect_eq(clg_check(&g, "c", 0, L(1, 99), false), CLG_UNKNOWN); /* not a root */
  cr_expect_eq(clg_check(&g, "c", 0, L(1, 99), true), CLG_ADOPTS);
  clg_applied(&g, "c", 0, L(1, 100), CLG_ADOPTS);
  cl_link at;
  cr_assert(clg_marker(&g, "c", 0, &at));
  cr_expect(at.term == 1 && at.seq == 100);
  cr_expect_eq(clg_check(&g, "c", 0, L(1, 100), false), CLG_FOLLOWS);
  cr_expect_eq(clg_check(&g, "c", 0, L(1, 101), false), CLG_BROKEN); /* it missed 101 */
}

Test(cluster_chain, a_non_empty_copy_does_not_adopt_a_root) {
  local_copy(0, 3);
  clg_forget(&g, "c", 0);
  cr_expect_eq(clg_check(&g, "c", 0, L(1, 99), true), CLG_UNKNOWN);
  clg_applied(&g, "c", 0, L(1, 100), CLG_UNKNOWN);
  cl_link at;
  cr_expect_not(clg_marker(&g, "c", 0, &at)); /* broken: not eligible for a catch-up */
  cr_expect_eq(clg_check(&g, "c", 0, L(1, 100), false), CLG_UNKNOWN); /* applies, stays so */
}

Test(cluster_chain, the_primary_sends_each_write_with_its_predecessor) {
  local_copy(0, 0);
  clg_forget(&g, "c", 0);
  clg_lead(&g, "c", 0, 3, 1000);
  cl_link prev;
  bool root_empty;
  clg_append(&g, "c", 0, L(3, 1000), CLW_UPSERT, "{}", 2, &prev, &root_empty);
  cr_expect(prev.term == 3 && prev.seq == 999 && root_empty); /* the root of an empty shard */
  clg_append(&g, "c", 0, L(3, 1001), CLW_DELETE, "{}", 2, &prev, &root_empty);
  cr_expect(prev.term == 3 && prev.seq == 1000 && !root_empty);
  cl_link head;
  cr_assert(clg_head(&g, "c", 0, &head));
  cr_expect(head.seq == 1001);
}

Test(cluster_chain, the_backlog_replays_what_follows_a_marker_in_order) {
  local_copy(0, 0);
  lead_and_write(0, 2, 50, 10);
  clg_entry *e;
  size_t n, left;
  cr_assert(clg_after(&g, "c", 0, L(2, 53), 4, &e, &n, &left));
  cr_expect_eq(left, 6);
  cr_assert_eq(n, 4);
  for (size_t i = 0; i < n; i++) {
    cr_expect_eq(e[i].at.seq, 54 + i);
    cr_expect_eq(e[i].prev.seq, 53 + i);
    char want[32];
    snprintf(want, sizeof want, "{\"w\":%zu}", 4 + i);
    cr_expect_str_eq(e[i].body, want);
  }
  clg_entries_free(e, n);
  /* The head: nothing left; a link never written: not in the backlog. */
  cr_expect(clg_after(&g, "c", 0, L(2, 59), 4, &e, &n, &left));
  cr_expect_eq(left, 0);
  clg_entries_free(e, n);
  cr_expect_not(clg_after(&g, "c", 0, L(2, 500), 4, &e, &n, &left));
  cr_expect_not(clg_after(&g, "c", 0, L(1, 53), 4, &e, &n, &left));
}

Test(cluster_chain, writes_pushed_out_of_the_backlog_cannot_be_replayed) {
  local_copy(0, 0);
  g.cfg.cluster_backlog_bytes = 8 * 7; /* seven 8-byte bodies */
  lead_and_write(0, 1, 10, 20);
  clg_entry *e;
  size_t n, left;
  cr_expect_not(clg_after(&g, "c", 0, L(1, 11), 100, &e, &n, &left)); /* evicted */
  cr_assert(clg_after(&g, "c", 0, L(1, 22), 100, &e, &n, &left)); /* the floor */
  cr_expect_eq(n, 7);
  cr_expect_eq(e[0].at.seq, 23);
  clg_entries_free(e, n);
  g.cfg.cluster_backlog_bytes = 0; /* no backlog: only the head itself */
  lead_and_write(0, 2, 100, 3);
  cr_expect_not(clg_after(&g, "c", 0, L(2, 100), 100, &e, &n, &left));
}

Test(cluster_chain, a_new_primary_continues_from_its_own_marker) {
  local_copy(0, 2);
  clg_set(&g, "c", 0, L(4, 70)); /* it followed the chain up to (4, 70) as a copy */
  clg_lead(&g, "c", 0, 5, 9000);
  cl_link prev;
  bool root_empty;
  clg_append(&g, "c", 0, L(5, 9000), CLW_UPSERT, "{}", 2, &prev, &root_empty);
  cr_expect(prev.term == 4 && prev.seq == 70 && !root_empty);
  /* A copy at (4, 70) follows; it is in the backlog's reach too. */
  clg_entry *e;
  size_t n, left;
  cr_assert(clg_after(&g, "c", 0, L(4, 70), 10, &e, &n, &left));
  cr_expect_eq(n, 1);
  clg_entries_free(e, n);
}

Test(cluster_chain, the_marker_survives_a_restart) {
  local_copy(1, 0);
  clg_set(&g, "c", 1, L(7, 123));
  clg_reset(); /* the process ends: only the file is left */
  cl_link at;
  cr_assert(clg_marker(&g, "c", 1, &at));
  cr_expect(at.term == 7 && at.seq == 123);
  clg_break(&g, "c", 1);
  clg_reset();
  cr_expect_not(clg_marker(&g, "c", 1, &at));
  clg_remove(&g, "c", 1);
  cr_expect_eq(clg_check(&g, "c", 1, L(7, 123), false), CLG_UNKNOWN); /* absent again */
}

Test(cluster_chain, a_torn_marker_is_trusted_for_nothing) {
  local_copy(2, 0);
  clg_set(&g, "c", 2, L(7, 123));
  clg_reset();
  char path[4096];
  snprintf(path, sizeof path, "%s/cluster_chain/c.s2", dir);
  int fd = open(path, O_WRONLY);
  cr_assert_geq(fd, 0);
  cr_assert_eq(pwrite(fd, "\x01", 1, 12), 1); /* one byte of the seq */
  close(fd);
  cl_link at;
  cr_expect_not(clg_marker(&g, "c", 2, &at));
  /* Neither followed nor adopted, even as the root of an empty shard. */
  cr_expect_eq(clg_check(&g, "c", 2, L(7, 123), true), CLG_UNKNOWN);
}
