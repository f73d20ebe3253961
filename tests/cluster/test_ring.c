/* test_ring.c: shard placement (src/cluster/ring.c) — determinism, distinct
 * copies, the bounded-load cap, how many copies move when a node joins or
 * leaves, the diff, and agreement with the engine's point routing.
 *
 * No etcd needed. Member sets come from fixed seeds; a failing assertion
 * prints the seed. The movement test prints the measured table (run with
 * --verbose to see it). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/ring.h"
#include "engine/id.h"

#define SHARDS 64u
/* Member sets per configuration; QV_RING_SEEDS raises it (docs/cluster.md
 * quotes 2000). */
static int seeds_(void) {
  const char *e = getenv("QV_RING_SEEDS");
  int n = e ? atoi(e) : 0;
  return n > 0 ? n : 200;
}
#define SEEDS seeds_()

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

typedef struct idset {
  char ids[40][32];
  const char *ptr[40];
  size_t n;
} idset;

/* n random node ids, "node-<16 hex>". */
static void make_ids(idset *s, size_t n, uint64_t seed) {
  s->n = n;
  for (size_t i = 0; i < n; i++) {
    snprintf(s->ids[i], sizeof s->ids[i], "node-%016llx",
             (unsigned long long)splitmix(&seed));
    s->ptr[i] = s->ids[i];
  }
}

static ring_placement *place(const char *const *ids, size_t n, uint32_t shards,
                             uint32_t rf, double eps, ring_algo algo) {
  ring_opts o;
  ring_opts_init(&o);
  o.rf = rf;
  o.eps = eps;
  o.algo = algo;
  o.salt = "docs";
  ring_placement *p = NULL;
  qv_err err = {0};
  cr_assert_eq(ring_place(ids, n, shards, &o, &p, &err), QV_OK, "%s", err.msg);
  return p;
}

Test(ring, hashes_match_published_test_vectors) {
  /* XXH3-64 of the empty input is fixed by the xxhash spec; the others pin
   * our key formats (docs/cluster.md lists them). */
  cr_expect_eq(ring_hash("", 0), 0x2d06800538d394c2ull);
  cr_expect_eq(ring_token("node-a", 0), 0x42d3010ac73d0427ull);
  cr_expect_eq(ring_token("node-a", 1), 0xf05cdc7ab00202ceull);
  cr_expect_eq(ring_shard_pos("docs", 0), 0x874c1f9e0922fadcull);
  cr_expect_eq(ring_hrw_hash("node-a", "docs", 0), 0x6e1da747b62fe5d0ull);
  cr_expect_eq(ring_hrw_hash("node-a", NULL, 7), 0x72874c1e51bb9e84ull);
}

Test(ring, placement_of_a_small_cluster_is_pinned) {
  /* Every node must compute the same placement, across versions too: a
   * change here moves data in running clusters. */
  const char *ids[] = {"node-a", "node-b", "node-c"};
  ring_placement *p = place(ids, 3, 8, 2, RING_EPS_DEFAULT, RING_RENDEZVOUS);
  static const char *const want[8][2] = {
      {"node-c", "node-a"}, {"node-b", "node-a"}, {"node-b", "node-a"},
      {"node-a", "node-c"}, {"node-a", "node-b"}, {"node-b", "node-c"},
      {"node-c", "node-a"}, {"node-c", "node-b"}};
  for (uint32_t s = 0; s < 8; s++)
    for (uint32_t k = 0; k < 2; k++)
      cr_expect_str_eq(ring_replica(p, s, k), want[s][k], "shard %u copy %u", s,
                       k);
  ring_placement_free(p);
}

Test(ring, placement_does_not_depend_on_member_order) {
  for (int algo = RING_RENDEZVOUS; algo <= RING_VNODES; algo++)
    for (uint64_t seed = 1; seed <= 20; seed++) {
      idset s;
      make_ids(&s, 2 + seed % 9, seed);
      const char *rev[40];
      for (size_t i = 0; i < s.n; i++) rev[i] = s.ptr[s.n - 1 - i];
      ring_placement *a = place(s.ptr, s.n, 100, 3, 0.25, (ring_algo)algo);
      ring_placement *b = place(rev, s.n, 100, 3, 0.25, (ring_algo)algo);
      cr_assert_eq(a->rf, b->rf);
      cr_assert_eq(memcmp(a->replicas, b->replicas,
                          (size_t)a->n_shards * a->rf * sizeof(uint32_t)),
                   0, "algo %d seed %llu", algo, (unsigned long long)seed);
      ring_placement_free(a);
      ring_placement_free(b);
    }
}

/* Every shard has min(rf, n) copies on distinct nodes, loads add up, and no
 * node is above ceil((1 + eps) * average). */
static void check_invariants(const ring_placement *p, uint32_t rf, double eps,
                             uint64_t seed) {
  uint32_t want_rf = rf < p->n_members ? rf : p->n_members;
  cr_assert_eq(p->rf, want_rf, "seed %llu", (unsigned long long)seed);
  uint32_t cap =
      (uint32_t)ceil((1.0 + eps) * p->n_shards * want_rf / p->n_members - 1e-9);
  cr_assert_eq(p->cap, cap < 1 ? 1 : cap, "seed %llu",
               (unsigned long long)seed);
  uint64_t total = 0;
  uint32_t load[40] = {0};
  for (uint32_t s = 0; s < p->n_shards; s++)
    for (uint32_t k = 0; k < p->rf; k++) {
      uint32_t m = p->replicas[(size_t)s * p->rf + k];
      cr_assert_lt(m, p->n_members);
      load[m]++;
      for (uint32_t j = 0; j < k; j++)
        cr_assert_neq(p->replicas[(size_t)s * p->rf + j], m,
                      "seed %llu: shard %u has two copies on %s",
                      (unsigned long long)seed, s, p->members[m]);
    }
  for (uint32_t m = 0; m < p->n_members; m++) {
    cr_assert_eq(load[m], p->load[m]);
    cr_assert_leq(load[m], p->cap, "seed %llu: %s holds %u copies, cap %u",
                  (unsigned long long)seed, p->members[m], load[m], p->cap);
    total += load[m];
  }
  cr_assert_eq(total, (uint64_t)p->n_shards * p->rf);
}

Test(ring, copies_are_distinct_and_the_load_cap_holds) {
  static const double eps[] = {0.0, 0.1, 0.25, 1.0};
  static const uint32_t shards[] = {1, 7, 64, 200};
  for (int algo = RING_RENDEZVOUS; algo <= RING_VNODES; algo++)
    for (uint64_t seed = 1; seed <= 60; seed++) {
      idset s;
      make_ids(&s, 1 + seed % 12, seed * 7919);
      uint32_t rf = 1 + (uint32_t)(seed % 4);
      double e = eps[seed % 4];
      ring_placement *p =
          place(s.ptr, s.n, shards[(seed / 4) % 4], rf, e, (ring_algo)algo);
      check_invariants(p, rf, e, seed);
      ring_placement_free(p);
    }
}

Test(ring, more_copies_than_members_gives_one_per_member) {
  const char *ids[] = {"a", "b"};
  ring_placement *p = place(ids, 2, 16, 3, 0.25, RING_RENDEZVOUS);
  cr_assert_eq(p->rf, 2);
  for (uint32_t s = 0; s < 16; s++)
    cr_assert_str_neq(ring_replica(p, s, 0), ring_replica(p, s, 1));
  ring_placement_free(p);
}

Test(ring, uncapped_rendezvous_gives_each_shard_its_most_preferring_nodes) {
  /* The spec in ring.h: node A prefers shards in descending order of
   * XXH3("A|salt|s"); without a binding cap each shard's copies are the rf
   * nodes that rank it highest, primary first. Recomputed here by hand. */
  const char *ids[] = {"n1", "n2", "n3", "n4", "n5"};
  enum { N = 5, P = 32, RF = 2 };
  uint32_t level[N][P]; /* 0 = favourite */
  uint64_t hash[N][P];
  for (int m = 0; m < N; m++)
    for (uint32_t s = 0; s < P; s++) {
      uint64_t h = ring_hrw_hash(ids[m], "docs", s);
      hash[m][s] = h;
      uint32_t above = 0;
      for (uint32_t t = 0; t < P; t++) {
        uint64_t g = ring_hrw_hash(ids[m], "docs", t);
        above += g > h || (g == h && t < s);
      }
      level[m][s] = above;
    }
  ring_placement *p = place(ids, N, P, RF, RING_EPS_MAX, RING_RENDEZVOUS);
  /* a before b: lower level, or the same level and a larger hash */
#define BEFORE(a, b, s)                                                        \
  (level[a][s] < level[b][s] ||                                                \
   (level[a][s] == level[b][s] && hash[a][s] > hash[b][s]))
  for (uint32_t s = 0; s < P; s++) {
    int best = -1, second = -1;
    for (int m = 0; m < N; m++) {
      if (best < 0 || BEFORE(m, best, s)) {
        second = best;
        best = m;
      } else if (second < 0 || BEFORE(m, second, s)) {
        second = m;
      }
    }
    cr_expect_str_eq(ring_replica(p, s, 0), ids[best], "shard %u primary", s);
    cr_expect_str_eq(ring_replica(p, s, 1), ids[second], "shard %u second copy",
                     s);
  }
  ring_placement_free(p);
}

/* Adds node N+1 to N random nodes, SEEDS times: the fraction of all copies
 * that move (copies the new placement has and the old one lacks). */
typedef struct move_stats {
  double mean, max;
  int over; /* runs above 1.5 / (N + 1) */
} move_stats;

static move_stats join_moves(ring_algo algo, uint32_t n, uint32_t rf) {
  move_stats st = {0};
  for (int seed = 0; seed < SEEDS; seed++) {
    idset s;
    make_ids(&s, n + 1, (uint64_t)seed * 1000003u + n * 31u + rf);
    ring_placement *a = place(s.ptr, n, SHARDS, rf, RING_EPS_DEFAULT, algo);
    ring_placement *b = place(s.ptr, n + 1, SHARDS, rf, RING_EPS_DEFAULT, algo);
    ring_diff d;
    cr_assert_eq(ring_placement_diff(a, b, &d, NULL), QV_OK);
    double f = (double)d.n_adds / ((double)SHARDS * rf);
    st.mean += f / SEEDS;
    if (f > st.max) st.max = f;
    if (f > 1.5 / (n + 1) + 1e-12) st.over++;
    ring_diff_free(&d);
    ring_placement_free(a);
    ring_placement_free(b);
  }
  return st;
}

Test(ring, a_join_moves_about_one_share_and_never_1_5_shares) {
  /* Goal (CLUSTER.md d): mean ~ 1/(N+1), every run <= 1.5/(N+1), for
   * N = 2..8, 64 shards, rf 1..3. It holds for every run wherever the new
   * node ends up with at least 10 copies on average. Below that (rf = 1,
   * N >= 6: 7 to 9 copies a node) the granularity of 64 shards shows: about
   * 1% of random member sets move one or two copies more than 1.5 shares
   * (docs/cluster.md explains why no placement that is a function of the
   * member set alone avoids it); there the test bounds the rate and the
   * worst case instead. */
  for (uint32_t rf = 1; rf <= 3; rf++)
    for (uint32_t n = 2; n <= 8; n++) {
      if (rf > n) continue;
      move_stats st = join_moves(RING_RENDEZVOUS, n, rf);
      double ideal = 1.0 / (n + 1);
      cr_log_info("join rf=%u N=%u->%u: mean %.4f (%.2fx ideal), max %.4f "
                  "(%.2fx), over 1.5x "
                  "in %d/%d runs",
                  rf, n, n + 1, st.mean, st.mean / ideal, st.max,
                  st.max / ideal, st.over, SEEDS);
      cr_expect_leq(st.mean, 1.12 * ideal, "rf %u N %u: mean %.4f", rf, n,
                    st.mean);
      cr_expect_geq(st.mean, 0.9 * ideal, "rf %u N %u: mean %.4f", rf, n,
                    st.mean);
      if ((double)SHARDS * rf / (n + 1) >= 10.0) {
        cr_expect_eq(st.over, 0,
                     "rf %u N %u: %d runs above 1.5/(N+1), max %.4f", rf, n,
                     st.over, st.max);
      } else {
        cr_expect_leq(st.over, SEEDS * 5 / 100, "rf %u N %u: %d runs over", rf,
                      n, st.over);
        cr_expect_leq(st.max, 2.0 * ideal, "rf %u N %u: max %.4f", rf, n,
                      st.max);
      }
    }
}

Test(ring, the_vnode_ring_moves_more_than_rendezvous_but_stays_near_a_share) {
  /* Kept for comparison (and for drawing a ring); the reason rendezvous is
   * the default is that it exceeds 1.5 shares far less often. */
  int over_vnodes = 0, over_rendezvous = 0;
  for (uint32_t rf = 1; rf <= 3; rf++)
    for (uint32_t n = 2; n <= 8; n++) {
      if (rf > n) continue;
      move_stats v = join_moves(RING_VNODES, n, rf);
      move_stats r = join_moves(RING_RENDEZVOUS, n, rf);
      double ideal = 1.0 / (n + 1);
      cr_log_info("vnodes rf=%u N=%u->%u: mean %.2fx ideal, max %.2fx, over "
                  "1.5x in %d/%d runs",
                  rf, n, n + 1, v.mean / ideal, v.max / ideal, v.over, SEEDS);
      cr_expect_leq(v.mean, 1.25 * ideal, "vnodes rf %u N %u", rf, n);
      over_vnodes += v.over;
      over_rendezvous += r.over;
    }
  cr_expect_lt(over_rendezvous, over_vnodes);
}

Test(ring, a_leave_moves_about_the_leavers_own_copies) {
  for (uint32_t rf = 1; rf <= 3; rf++)
    for (uint32_t n = 3; n <= 9; n++) {
      if (rf > n - 1) continue;
      double extra_sum = 0, extra_max = 0;
      for (int seed = 0; seed < SEEDS; seed++) {
        idset s;
        make_ids(&s, n, (uint64_t)seed * 7777u + n * 13u + rf);
        ring_placement *a =
            place(s.ptr, n, SHARDS, rf, RING_EPS_DEFAULT, RING_RENDEZVOUS);
        const char *rest[40];
        size_t leaver = (size_t)seed % n, k = 0;
        for (size_t i = 0; i < n; i++)
          if (i != leaver) rest[k++] = s.ptr[i];
        ring_placement *b =
            place(rest, n - 1, SHARDS, rf, RING_EPS_DEFAULT, RING_RENDEZVOUS);
        ring_diff d;
        cr_assert_eq(ring_placement_diff(a, b, &d, NULL), QV_OK);
        uint32_t held = 0;
        for (uint32_t m = 0; m < a->n_members; m++)
          if (strcmp(a->members[m], s.ptr[leaver]) == 0) held = a->load[m];
        cr_assert_geq(d.n_adds, held,
                      "the leaver's copies must all be re-homed");
        double extra = ((double)d.n_adds - held) / ((double)SHARDS * rf);
        extra_sum += extra;
        if (extra > extra_max) extra_max = extra;
        ring_diff_free(&d);
        ring_placement_free(a);
        ring_placement_free(b);
      }
      cr_log_info("leave rf=%u N=%u->%u: extra copies moved mean %.4f max %.4f",
                  rf, n, n - 1, extra_sum / SEEDS, extra_max);
      cr_expect_leq(extra_sum / SEEDS, 0.02, "rf %u N %u", rf, n);
      cr_expect_leq(extra_max, 0.08, "rf %u N %u", rf, n);
    }
}

Test(ring, a_diff_lists_adds_then_removes_and_replays_old_into_new) {
  idset s;
  make_ids(&s, 7, 99);
  ring_placement *a = place(s.ptr, 5, 48, 2, 0.25, RING_RENDEZVOUS);
  ring_placement *b =
      place(s.ptr + 2, 5, 48, 2, 0.25, RING_RENDEZVOUS); /* 2 leave, 2 join */
  ring_diff d;
  cr_assert_eq(ring_placement_diff(a, b, &d, NULL), QV_OK);
  cr_assert_gt(d.n_adds, 0);
  cr_assert_eq(d.n_moves - d.n_adds, d.n_adds,
               "same copy count: as many removes as adds");
  for (size_t i = 0; i < d.n_moves; i++)
    cr_assert_eq(d.moves[i].is_add, i < d.n_adds);
  /* Replay on a per-shard set of holders. */
  for (uint32_t sh = 0; sh < 48; sh++) {
    const char *hold[8];
    size_t nh = 0;
    for (uint32_t k = 0; k < a->rf; k++) hold[nh++] = ring_replica(a, sh, k);
    for (size_t i = 0; i < d.n_moves; i++) {
      if (d.moves[i].shard != sh) continue;
      if (d.moves[i].is_add) {
        cr_assert(!ring_holds(a, sh, d.moves[i].node));
        hold[nh++] = d.moves[i].node;
      } else {
        cr_assert_geq(nh, b->rf, "a remove must never leave a shard short");
        for (size_t j = 0; j < nh; j++)
          if (strcmp(hold[j], d.moves[i].node) == 0) hold[j] = hold[--nh];
      }
    }
    cr_assert_eq(nh, b->rf);
    for (size_t j = 0; j < nh; j++)
      cr_assert(ring_holds(b, sh, hold[j]), "shard %u", sh);
  }
  ring_diff_free(&d);
  ring_placement_free(a);
  ring_placement_free(b);
}

Test(ring, point_routing_agrees_with_id_hash) {
  uint64_t st = 5;
  for (int i = 0; i < 5000; i++) {
    qv_point_id id = qv_id_num(splitmix(&st) % 100000);
    if (i % 2) {
      id.is_uuid = true;
      for (int k = 0; k < 16; k++) id.uuid[k] = (uint8_t)splitmix(&st);
    }
    id = id_clean(&id);
    uint32_t p = 1 + (uint32_t)(splitmix(&st) % 300);
    cr_assert_eq(ring_shard_of(&id, p), (uint32_t)(id_hash(&id) % p));
  }
  qv_point_id a = qv_id_num(42), u;
  cr_assert_eq(
      qv_id_parse_uuid("550e8400-e29b-41d4-a716-446655440000", &u, NULL),
      QV_OK);
  cr_expect_eq(ring_shard_of(&a, 64),
               21); /* pinned: routing must never change */
  cr_expect_eq(ring_shard_of(&u, 64), 5);
  cr_expect_eq(ring_shard_of(&a, 1), 0);
}

Test(ring, bad_input_is_refused_with_a_message) {
  const char *dup[] = {"a", "b", "a"}, *empty[] = {"a", ""}, *ok[] = {"a"};
  ring_placement *p = NULL;
  qv_err err = {0};
  ring_opts o;
  ring_opts_init(&o);
  cr_expect_eq(ring_place(dup, 3, 8, &o, &p, &err), QV_EINVAL);
  cr_expect(strstr(err.msg, "\"a\" listed twice") != NULL, "%s", err.msg);
  cr_expect_eq(ring_place(empty, 2, 8, &o, &p, &err), QV_EINVAL);
  cr_expect_eq(ring_place(ok, 0, 8, &o, &p, &err), QV_EINVAL);
  cr_expect_eq(ring_place(ok, 1, 0, &o, &p, &err), QV_EINVAL);
  o.rf = 0;
  cr_expect_eq(ring_place(ok, 1, 8, &o, &p, &err), QV_EINVAL);
  o.rf = 1;
  o.eps = NAN;
  cr_expect_eq(ring_place(ok, 1, 8, &o, &p, &err), QV_EINVAL);
  o.eps = 0.25;
  o.algo = RING_VNODES;
  o.vnodes = 0;
  cr_expect_eq(ring_place(ok, 1, 8, &o, &p, &err), QV_EINVAL);
  cr_expect_null(p);
  ring_placement q = {0};
  cr_expect_eq(ring_placement_diff(&q, &(ring_placement){.n_shards = 3},
                                   &(ring_diff){0}, &err),
               QV_EINVAL);
}
