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

/* ---- operator requests (cl_plan_op) and pinned shards ------------------------------- */

static cl_op mk_op(cl_op_kind kind, uint32_t shard, const char *from, const char *to) {
  cl_op op;
  memset(&op, 0, sizeof op);
  op.kind = kind;
  op.shard = shard;
  snprintf(op.from, sizeof op.from, "%s", from ? from : "");
  snprintf(op.to, sizeof op.to, "%s", to ? to : "");
  return op;
}

/* The node of ids4[0..3) that holds no copy of shard s. */
static const char *free_node(const cl_shard *sh) {
  for (int i = 0; i < 3; i++)
    if (rep_of(sh, ids4[i]) < 0) return ids4[i];
  return NULL;
}

/* Applies op as the controller would (then one plan pass) and advances the
 * epoch; returns cl_plan_op's answer. */
static qv_rc apply_op(cl_coll *c, const cl_op *op, const char *const *live, size_t n_live) {
  cl_plan_in in = input(live, n_live, 1000);
  qv_err err = {0};
  qv_rc rc = cl_plan_op(c, op, &in, &err);
  if (rc == QV_OK) {
    cl_plan(c, &in);
    c->epoch++;
  }
  return rc;
}

/* Transfers in flight finish, then the controller runs until nothing
 * changes; returns the number of passes. */
static int settle(cl_coll *c, const char *const *live, size_t n_live,
                  const char *const *drain, size_t n_drain) {
  finish_transfers(c);
  return converge(c, live, n_live, drain, n_drain);
}

/* The controller's rounds with nothing left to do: none may change the map. */
static void assert_quiet(cl_coll *c, const char *const *live, size_t n_live, int rounds) {
  for (int i = 0; i < rounds; i++) {
    cl_plan_in in = input(live, n_live, 1000 + i);
    cr_assert_not(cl_plan(c, &in), "round %d changed a settled map", i);
  }
}

Test(plan, a_moved_copy_stays_moved_through_later_rounds) {
  cl_coll c = placed(ids4, 3);
  cl_coll before = clone(&c);
  const uint32_t s = 5;
  cl_shard *sh = &c.shards[s];
  char from[CL_ID_MAX + 1], other[CL_ID_MAX + 1];
  snprintf(from, sizeof from, "%s", sh->primary); /* the primary moves: a handover too */
  snprintf(other, sizeof other, "%s", sh->reps[rep_of(sh, from) == 0 ? 1 : 0].node);
  const char *to = free_node(sh);
  uint64_t term = sh->term;
  int64_t epoch = c.epoch;
  cl_op op = mk_op(CL_OP_MOVE, s, from, to);
  cr_assert_eq(apply_op(&c, &op, ids4, 3), QV_OK);
  int k = rep_of(sh, to);
  cr_assert_geq(k, 0);
  cr_assert_eq(sh->reps[k].state, CL_PARTIAL);
  cr_assert_eq(sh->reps[k].xfer, epoch + 1, "the transfer id is the new map's epoch");
  cr_assert(sh->reps[rep_of(sh, from)].is_leaving);
  cr_assert(sh->is_pinned);
  int passes = settle(&c, ids4, 3, NULL, 0);
  cr_assert_lt(passes, 500);
  cr_assert_eq(sh->n_reps, 2);
  cr_assert_lt(rep_of(sh, from), 0, "the source copy went once the new one was insync");
  cr_assert_geq(rep_of(sh, other), 0);
  cr_assert_eq(sh->reps[rep_of(sh, to)].state, CL_INSYNC);
  cr_assert_str_eq(sh->primary, other, "the primary handed over to the copy that stays");
  cr_assert_eq(sh->term, term + 1);
  for (uint32_t t = 0; t < P; t++) {
    if (t == s) continue;
    cr_assert_eq(memcmp(&c.shards[t], &before.shards[t], sizeof c.shards[t]), 0,
                 "shard %u moved too", t);
  }
  assert_quiet(&c, ids4, 3, 20);
  cl_coll_free(&before);
  cl_coll_free(&c);
}

Test(plan, replicate_shard_adds_a_copy_beyond_rf_and_keeps_it) {
  cl_coll c = placed(ids4, 3);
  const uint32_t s = 2;
  cl_shard *sh = &c.shards[s];
  const char *to = free_node(sh);
  cl_op op = mk_op(CL_OP_REPLICATE, s, sh->reps[1].node, to);
  cr_assert_eq(apply_op(&c, &op, ids4, 3), QV_OK);
  for (uint32_t k = 0; k < sh->n_reps; k++) cr_assert_not(sh->reps[k].is_leaving);
  cr_assert_lt(settle(&c, ids4, 3, NULL, 0), 500);
  cr_assert_eq(sh->n_reps, 3);
  for (uint32_t k = 0; k < 3; k++) cr_assert_eq(sh->reps[k].state, CL_INSYNC);
  assert_quiet(&c, ids4, 3, 20);
  cl_coll_free(&c);
}

Test(plan, drop_replica_removes_a_copy_and_never_the_last_insync_one) {
  cl_coll c = placed(ids4, 3);
  const uint32_t s = 7;
  cl_shard *sh = &c.shards[s];
  char prim[CL_ID_MAX + 1], second[CL_ID_MAX + 1];
  snprintf(prim, sizeof prim, "%s", sh->primary);
  snprintf(second, sizeof second, "%s", sh->reps[rep_of(sh, prim) == 0 ? 1 : 0].node);
  uint64_t term = sh->term;
  cl_op op = mk_op(CL_OP_DROP, s, prim, NULL);
  cr_assert_eq(apply_op(&c, &op, ids4, 3), QV_OK);
  cr_assert_eq(sh->n_reps, 1);
  cr_assert_str_eq(sh->primary, second, "the primary handed over before its copy went");
  cr_assert_eq(sh->term, term + 1);
  cr_assert(sh->is_pinned);
  assert_quiet(&c, ids4, 3, 20); /* below rf by request: not re-replicated */
  cl_coll before = clone(&c);
  op = mk_op(CL_OP_DROP, s, second, NULL);
  qv_err err = {0};
  cl_plan_in in = input(ids4, 3, 1000);
  cr_assert_eq(cl_plan_op(&c, &op, &in, &err), QV_EINVAL);
  cr_assert(strstr(err.msg, "last active replica"), "%s", err.msg);
  cr_assert_eq(memcmp(c.shards, before.shards, P * sizeof *c.shards), 0,
               "a refusal changed the map");
  cl_coll_free(&before);
  cl_coll_free(&c);
}

Test(plan, abort_transfer_removes_the_partial_copy_and_keeps_the_source) {
  cl_coll c = placed(ids4, 3);
  const uint32_t s = 9;
  cl_shard *sh = &c.shards[s];
  cl_shard orig = *sh;
  const char *to = free_node(sh);
  cl_op op = mk_op(CL_OP_MOVE, s, sh->primary, to);
  cr_assert_eq(apply_op(&c, &op, ids4, 3), QV_OK);
  cl_op wrong = mk_op(CL_OP_ABORT, s, to, sh->primary); /* the other direction */
  cr_assert_eq(apply_op(&c, &wrong, ids4, 3), QV_EINVAL);
  cl_op abort = mk_op(CL_OP_ABORT, s, sh->primary, to);
  cr_assert_eq(apply_op(&c, &abort, ids4, 3), QV_OK);
  cr_assert_lt(rep_of(sh, to), 0);
  cr_assert_lt(settle(&c, ids4, 3, NULL, 0), 500);
  cr_assert_eq(sh->n_reps, orig.n_reps);
  for (uint32_t k = 0; k < orig.n_reps; k++) {
    int j = rep_of(sh, orig.reps[k].node);
    cr_assert_geq(j, 0, "the source copy was kept");
    cr_assert_eq(sh->reps[j].state, CL_INSYNC);
    cr_assert_not(sh->reps[j].is_leaving);
  }
  cr_assert_str_eq(sh->primary, orig.primary);
  assert_quiet(&c, ids4, 3, 5);
  cl_coll_free(&c);
}

Test(plan, a_move_whose_target_dies_keeps_its_source) {
  cl_coll c = placed(ids4, 4);
  const uint32_t s = 4;
  cl_shard *sh = &c.shards[s];
  cl_shard orig = *sh;
  const char *to = NULL;
  for (int i = 0; i < 4 && to == NULL; i++)
    if (rep_of(sh, ids4[i]) < 0) to = ids4[i];
  cl_op op = mk_op(CL_OP_MOVE, s, sh->reps[1].node, to);
  cr_assert_eq(apply_op(&c, &op, ids4, 4), QV_OK);
  const char *live[3];
  size_t n = 0;
  for (int i = 0; i < 4; i++)
    if (strcmp(ids4[i], to)) live[n++] = ids4[i];
  cl_plan_in in = input(live, n, 2000);
  cr_assert(cl_plan(&c, &in));
  cr_assert_lt(rep_of(sh, to), 0, "the partial copy on a dead node is dropped");
  for (uint32_t k = 0; k < orig.n_reps; k++) {
    int j = rep_of(sh, orig.reps[k].node);
    cr_assert_geq(j, 0);
    cr_assert_not(sh->reps[j].is_leaving, "the move lost its target: its source stays");
  }
  cl_coll_free(&c);
}

Test(plan, a_pin_is_released_when_its_node_drains_or_its_copy_dies) {
  cl_coll c = placed(ids4, 3);
  const uint32_t s = 3;
  cl_shard *sh = &c.shards[s];
  const char *to = free_node(sh);
  cl_op op = mk_op(CL_OP_REPLICATE, s, sh->primary, to);
  cr_assert_eq(apply_op(&c, &op, ids4, 3), QV_OK);
  cr_assert_lt(settle(&c, ids4, 3, NULL, 0), 500);
  cr_assert(sh->is_pinned);
  cl_coll dying = clone(&c);
  /* Drain: the pin goes and the ring moves the copies off the node. */
  const char *drain[] = {to};
  cr_assert_lt(settle(&c, ids4, 3, drain, 1), 500);
  cr_assert_not(c.shards[s].is_pinned);
  cr_assert_lt(rep_of(&c.shards[s], to), 0);
  /* Death past the move delay: the dead pinned copy is dropped, the pin
   * with it. */
  const char *live[2];
  size_t n = 0;
  for (int i = 0; i < 3; i++)
    if (strcmp(ids4[i], to)) live[n++] = ids4[i];
  cl_plan_in in = input(live, n, 10000);
  cl_plan(&dying, &in);
  cr_assert(dying.shards[s].is_pinned, "within the move delay the pin holds");
  in.now_ms = 20000;
  cl_plan(&dying, &in);
  cr_assert_not(dying.shards[s].is_pinned);
  cr_assert_lt(rep_of(&dying.shards[s], to), 0);
  cl_coll_free(&dying);
  cl_coll_free(&c);
}

Test(plan, unpin_gives_the_shard_back_to_the_ring) {
  cl_coll c = placed(ids4, 3);
  cl_coll before = clone(&c);
  const uint32_t s = 11;
  cl_shard *sh = &c.shards[s];
  cl_op op = mk_op(CL_OP_MOVE, s, sh->reps[1].node, free_node(sh));
  cr_assert_eq(apply_op(&c, &op, ids4, 3), QV_OK);
  cr_assert_lt(settle(&c, ids4, 3, NULL, 0), 500);
  cr_assert_gt(moved(&before, &c), 0);
  op = mk_op(CL_OP_UNPIN, s, NULL, NULL);
  cr_assert_eq(apply_op(&c, &op, ids4, 3), QV_OK);
  cr_assert_not(sh->is_pinned);
  cr_assert_lt(settle(&c, ids4, 3, NULL, 0), 500);
  cr_assert_eq(moved(&before, &c), 0, "the ring's placement is back");
  cl_coll_free(&before);
  cl_coll_free(&c);
}

Test(plan, bad_operator_requests_are_refused_and_change_nothing) {
  cl_coll c = placed(ids4, 3);
  cl_shard *sh = &c.shards[1];
  const char *to = free_node(sh);
  const char *holder = sh->reps[1].node;
  struct {
    cl_op op;
    qv_rc want;
    const char *says;
  } cases[] = {
      {mk_op(CL_OP_MOVE, P, holder, to), QV_ENOTFOUND, "does not exist"},
      {mk_op(CL_OP_MOVE, 1, holder, "n9"), QV_EINVAL, "Peer n9 does not exist"},
      {mk_op(CL_OP_MOVE, 1, "n9", to), QV_EINVAL, "Peer n9 does not exist"},
      {mk_op(CL_OP_MOVE, 1, to, holder), QV_EINVAL, "no active replica"},
      {mk_op(CL_OP_REPLICATE, 1, holder, sh->primary), QV_EINVAL, "already has a replica"},
      {mk_op(CL_OP_MOVE, 1, holder, holder), QV_EINVAL, "to itself"},
      {mk_op(CL_OP_MOVE, 1, holder, "n4"), QV_EINVAL, "Peer n4 does not exist"},
      {mk_op(CL_OP_DROP, 1, to, NULL), QV_EINVAL, "no replica"},
      {mk_op(CL_OP_ABORT, 1, sh->primary, to), QV_EINVAL, "no transfer"},
  };
  cl_coll before = clone(&c);
  cl_plan_in in = input(ids4, 3, 1000);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    qv_err err = {0};
    cr_assert_eq(cl_plan_op(&c, &cases[i].op, &in, &err), cases[i].want, "case %zu: %s", i,
                 err.msg);
    cr_assert(strstr(err.msg, cases[i].says), "case %zu: %s", i, err.msg);
    cr_assert_eq(memcmp(c.shards, before.shards, P * sizeof *c.shards), 0, "case %zu", i);
  }
  /* One transfer per shard: a second request waits for the first. */
  cl_op first = mk_op(CL_OP_REPLICATE, 1, holder, to);
  cr_assert_eq(cl_plan_op(&c, &first, &in, NULL), QV_OK);
  const char *four[] = {"n1", "n2", "n3", "n4"};
  cl_plan_in in4 = input(four, 4, 1000);
  cl_op second = mk_op(CL_OP_REPLICATE, 1, holder, "n4");
  qv_err err = {0};
  cr_assert_eq(cl_plan_op(&c, &second, &in4, &err), QV_EBUSY, "%s", err.msg);
  cl_coll_free(&before);
  cl_coll_free(&c);
}
