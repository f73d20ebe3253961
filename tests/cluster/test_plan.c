/* test_plan.c: the controller's decisions (src/cluster/plan.c) without etcd
 * — transfers finishing, dead copies and promotion, the move delay, rejoin,
 * the one-in/one-out throttle, add-before-remove, draining, and a whole
 * join simulated step by step (the controller's passes with transfers
 * completing in between) checking the invariants after every step and the
 * share of copies moved at the end. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "cluster/plan.h"
#include "cluster/ring.h"

#define P 16u
#define RF 2u

static const char *ids4[] = {"n1", "n2", "n3", "n4"};

/* A collection placed over `n` members (first placement, epoch 1). */
static cl_coll placed(const char *const *members, size_t n) {
  cl_coll c;
  memset(&c, 0, sizeof c);
  snprintf(c.name, sizeof c.name, "docs");
  c.shard_number = P;
  c.rf = RF;
  c.has_map = true;
  c.epoch = 1;
  c.shards = qv_calloc(P, sizeof *c.shards);
  cr_assert_not_null(c.shards);
  ring_opts ro;
  ring_opts_init(&ro);
  ro.rf = RF;
  ro.salt = c.name;
  ring_placement *p = NULL;
  cr_assert_eq(ring_place(members, n, P, &ro, &p, NULL), QV_OK);
  for (uint32_t s = 0; s < P; s++) {
    cl_shard *sh = &c.shards[s];
    sh->id = s;
    sh->term = 1;
    for (uint32_t k = 0; k < p->rf; k++) {
      snprintf(sh->reps[k].node, sizeof sh->reps[k].node, "%s", ring_replica(p, s, k));
      sh->reps[k].state = CL_INSYNC;
    }
    sh->n_reps = p->rf;
    snprintf(sh->primary, sizeof sh->primary, "%s", sh->reps[0].node);
  }
  ring_placement_free(p);
  return c;
}

static cl_plan_in input(const char *const *live, size_t n_live, int64_t now) {
  cl_plan_in in = {.live = live, .n_live = n_live, .now_ms = now, .move_delay_ms = 5000};
  return in;
}

static int rep_of(const cl_shard *sh, const char *node) {
  for (uint32_t k = 0; k < sh->n_reps; k++)
    if (!strcmp(sh->reps[k].node, node)) return (int)k;
  return -1;
}

/* What the transfer sources would report: every partial copy done. */
static void finish_transfers(cl_coll *c) {
  qv_free(c->xfers);
  c->xfers = qv_calloc(P, sizeof *c->xfers);
  c->n_xfers = 0;
  for (uint32_t s = 0; s < P; s++)
    for (uint32_t k = 0; k < c->shards[s].n_reps; k++)
      if (c->shards[s].reps[k].state == CL_PARTIAL) {
        cl_xfer *x = &c->xfers[c->n_xfers++];
        x->shard = s;
        snprintf(x->from, sizeof x->from, "%s", c->shards[s].primary);
        snprintf(x->to, sizeof x->to, "%s", c->shards[s].reps[k].node);
        x->xfer = c->shards[s].reps[k].xfer;
        x->term = c->shards[s].term;
        snprintf(x->phase, sizeof x->phase, "done");
      }
}

/* Invariants of every map the controller writes. */
static void check_invariants(const cl_coll *c, const char *const *live, size_t n_live) {
  uint32_t in[8] = {0}, out[8] = {0};
  for (uint32_t s = 0; s < P; s++) {
    const cl_shard *sh = &c->shards[s];
    uint32_t insync = 0, partial = 0;
    for (uint32_t k = 0; k < sh->n_reps; k++) {
      insync += sh->reps[k].state == CL_INSYNC;
      partial += sh->reps[k].state == CL_PARTIAL;
      for (uint32_t j = k + 1; j < sh->n_reps; j++)
        cr_assert_str_neq(sh->reps[k].node, sh->reps[j].node, "shard %u: copies on one node", s);
      if (sh->reps[k].state == CL_PARTIAL)
        for (size_t i = 0; i < n_live; i++) {
          if (!strcmp(live[i], sh->reps[k].node)) in[i]++;
          if (!strcmp(live[i], sh->primary)) out[i]++;
        }
    }
    cr_assert_geq(insync, 1, "shard %u lost its last insync copy", s);
    cr_assert_leq(partial, 1, "shard %u: two transfers at once", s);
    int p = rep_of(sh, sh->primary);
    cr_assert(p >= 0 && sh->reps[p].state == CL_INSYNC, "shard %u: primary not insync", s);
  }
  for (size_t i = 0; i < n_live; i++) {
    cr_assert_leq(in[i], 1, "%s takes two transfers", live[i]);
    cr_assert_leq(out[i], 1, "%s sends two transfers", live[i]);
  }
}

Test(plan, a_done_report_turns_the_copy_insync) {
  cl_coll c = placed(ids4, 3);
  /* A shard whose target over four nodes has a copy on n4. */
  ring_opts ro;
  ring_opts_init(&ro);
  ro.rf = RF;
  ro.salt = c.name;
  ring_placement *p = NULL;
  cr_assert_eq(ring_place(ids4, 4, P, &ro, &p, NULL), QV_OK);
  uint32_t s = 0;
  while (s < P && !ring_holds(p, s, "n4")) s++;
  cr_assert_lt(s, P);
  ring_placement_free(p);
  cl_shard *sh = &c.shards[s];
  snprintf(sh->reps[2].node, sizeof sh->reps[2].node, "n4");
  sh->reps[2].state = CL_PARTIAL;
  sh->reps[2].xfer = 1;
  sh->n_reps = 3;
  cl_plan_in in = input(ids4, 4, 1000);
  cl_plan(&c, &in);
  cr_assert_eq(sh->reps[rep_of(sh, "n4")].state, CL_PARTIAL, "no report yet");
  finish_transfers(&c);
  for (size_t i = 0; i < c.n_xfers; i++) c.xfers[i].xfer = 99; /* reports of other transfers */
  cl_plan(&c, &in);
  cr_assert_eq(sh->reps[rep_of(sh, "n4")].state, CL_PARTIAL, "stale report taken");
  finish_transfers(&c);
  cr_assert(cl_plan(&c, &in));
  int k = rep_of(sh, "n4");
  cr_assert_geq(k, 0);
  cr_assert_eq(sh->reps[k].state, CL_INSYNC);
  cr_assert_eq(sh->n_reps, RF, "the copy outside the target went once n4 was insync");
  check_invariants(&c, ids4, 4);
  cl_coll_free(&c);
}

Test(plan, a_dead_primary_is_replaced_and_its_copy_waits_for_the_delay) {
  cl_coll c = placed(ids4, 3);
  const char *live[] = {"n1", "n2"};
  cl_plan_in in = input(live, 2, 10000);
  cr_assert(cl_plan(&c, &in));
  check_invariants(&c, live, 2);
  for (uint32_t s = 0; s < P; s++) {
    const cl_shard *sh = &c.shards[s];
    cr_assert_str_neq(sh->primary, "n3");
    int k = rep_of(sh, "n3");
    if (k >= 0) {
      cr_assert_eq(sh->reps[k].state, CL_DEAD, "shard %u", s);
      cr_assert_eq(sh->reps[k].dead_ms, 10000);
    }
  }
  /* Within the delay nothing moves; after it the dead copies go and new
   * ones are started on the survivors. */
  int64_t epoch = c.epoch;
  in.now_ms = 14000;
  cl_plan(&c, &in);
  bool any_dead = false;
  for (uint32_t s = 0; s < P; s++) any_dead |= rep_of(&c.shards[s], "n3") >= 0;
  cr_assert(any_dead, "dropped before the delay");
  in.now_ms = 15000;
  c.epoch = epoch + 1;
  cr_assert(cl_plan(&c, &in));
  for (uint32_t s = 0; s < P; s++) cr_assert_lt(rep_of(&c.shards[s], "n3"), 0);
  check_invariants(&c, live, 2);
  cl_coll_free(&c);
}

Test(plan, the_last_insync_copy_is_never_given_up) {
  cl_coll c = placed(ids4, 3);
  const char *live[] = {"n4"}; /* every holder is gone */
  cl_plan_in in = input(live, 1, 100000);
  cl_plan(&c, &in);
  for (uint32_t s = 0; s < P; s++) {
    uint32_t insync = 0;
    for (uint32_t k = 0; k < c.shards[s].n_reps; k++)
      insync += c.shards[s].reps[k].state == CL_INSYNC;
    cr_assert_geq(insync, 1, "shard %u", s);
  }
  cl_coll_free(&c);
}

Test(plan, a_returning_node_rejoins_its_dead_copies_by_transfer) {
  cl_coll c = placed(ids4, 3);
  const char *two[] = {"n1", "n2"};
  cl_plan_in in = input(two, 2, 1000);
  cl_plan(&c, &in);
  c.epoch = 2;
  in = input(ids4, 3, 2000); /* n3 back within the delay */
  cr_assert(cl_plan(&c, &in));
  check_invariants(&c, ids4, 3);
  uint32_t partial = 0;
  for (uint32_t s = 0; s < P; s++) {
    int k = rep_of(&c.shards[s], "n3");
    if (k >= 0 && c.shards[s].reps[k].state == CL_PARTIAL) {
      partial++;
      cr_assert_eq(c.shards[s].reps[k].xfer, 3);
    }
  }
  cr_assert_eq(partial, 1, "one transfer into n3 at a time, got %u", partial);
  cl_coll_free(&c);
}

/* The controller's loop until nothing changes, transfers completing between
 * passes; returns the number of passes. */
static int converge(cl_coll *c, const char *const *live, size_t n_live,
                    const char *const *drain, size_t n_drain) {
  int passes = 0;
  for (; passes < 500; passes++) {
    cl_plan_in in = input(live, n_live, 1000);
    in.draining = drain;
    in.n_draining = n_drain;
    bool changed = cl_plan(c, &in);
    check_invariants(c, live, n_live);
    if (!changed) break;
    c->epoch++;
    finish_transfers(c);
  }
  return passes;
}

static uint32_t moved(const cl_coll *a, const cl_coll *b) {
  uint32_t n = 0;
  for (uint32_t s = 0; s < P; s++)
    for (uint32_t k = 0; k < b->shards[s].n_reps; k++)
      n += rep_of(&a->shards[s], b->shards[s].reps[k].node) < 0;
  return n;
}

static cl_coll clone(const cl_coll *c) {
  cl_coll d = *c;
  d.params = NULL;
  d.xfers = NULL;
  d.n_xfers = 0;
  d.shards = qv_malloc(P * sizeof *d.shards);
  memcpy(d.shards, c->shards, P * sizeof *d.shards);
  return d;
}

Test(plan, a_join_adds_before_removing_and_moves_about_one_share) {
  cl_coll c = placed(ids4, 3);
  cl_coll before = clone(&c);
  int passes = converge(&c, ids4, 4, NULL, 0);
  cr_assert_lt(passes, 500);
  uint32_t m = moved(&before, &c);
  cr_log_info("3 -> 4 nodes: %u of %u copies moved in %d passes", m, P * RF, passes);
  cr_assert_gt(m, 0);
  cr_assert_leq((double)m / (P * RF), 1.5 / 4);
  uint32_t on4 = 0;
  for (uint32_t s = 0; s < P; s++) {
    cr_assert_eq(c.shards[s].n_reps, RF);
    on4 += rep_of(&c.shards[s], "n4") >= 0;
  }
  cr_assert_eq(on4, m, "every moved copy went to the newcomer");
  cl_coll_free(&before);
  cl_coll_free(&c);
}

Test(plan, draining_moves_every_copy_off_the_node) {
  cl_coll c = placed(ids4, 4);
  const char *drain[] = {"n2"};
  int passes = converge(&c, ids4, 4, drain, 1);
  cr_assert_lt(passes, 500);
  for (uint32_t s = 0; s < P; s++) {
    cr_assert_lt(rep_of(&c.shards[s], "n2"), 0, "shard %u still on n2", s);
    cr_assert_eq(c.shards[s].n_reps, RF);
  }
  cl_coll_free(&c);
}

Test(plan, a_copy_reported_stale_by_its_primary_is_refilled) {
  cl_coll c = placed(ids4, 3);
  cl_shard *sh = &c.shards[0];
  const char *victim = sh->reps[1].node;
  cl_stale st;
  memset(&st, 0, sizeof st);
  snprintf(st.node, sizeof st.node, "%s", victim);
  snprintf(st.from, sizeof st.from, "%s", sh->primary);
  st.term = 7; /* an older or other term: ignored */
  c.stale = &st;
  c.n_stale = 1;
  cl_plan_in in = input(ids4, 3, 1000);
  cl_plan(&c, &in);
  cr_assert_eq(sh->reps[rep_of(sh, victim)].state, CL_INSYNC);
  st.term = sh->term;
  cr_assert(cl_plan(&c, &in));
  int k = rep_of(sh, victim);
  cr_assert_geq(k, 0);
  cr_assert_eq(sh->reps[k].state, CL_PARTIAL, "marked dead, then rejoined by a transfer");
  cr_assert_str_neq(sh->primary, victim);
  check_invariants(&c, ids4, 3);
  c.stale = NULL;
  c.n_stale = 0;
  cl_coll_free(&c);
}
