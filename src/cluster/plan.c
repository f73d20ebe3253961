/* plan.c: the controller's per-collection decisions (rules in plan.h) and
 * the operator's requests on single shards (cl_plan_op).
 *
 * Owns nothing but the computation: node.c feeds it the watched view and
 * writes the result by fenced CAS. Invariants kept on the edited map: a
 * shard never loses its last insync copy, its primary is a live insync copy
 * whenever one exists, every copy is on a distinct node, at most one
 * partial copy per shard, only pinned shards have leaving copies, and the
 * throttle (one transfer in and one out per node) holds over the copies
 * the plan adds (an operator's transfer may exceed it). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "cluster/plan.h"
#include "cluster/ring.h"

static bool in_list(const char *const *v, size_t n, const char *s) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(v[i], s)) return true;
  return false;
}

static void say(const cl_plan_in *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const cl_plan_in *in, const char *fmt, ...) {
  if (in->log == NULL) return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  in->log(in->ctx, line);
}

static void drop_rep(cl_shard *sh, uint32_t k) {
  for (uint32_t i = k + 1; i < sh->n_reps; i++) sh->reps[i - 1] = sh->reps[i];
  sh->n_reps--;
}

static int find_rep(const cl_shard *sh, const char *node) {
  for (uint32_t k = 0; k < sh->n_reps; k++)
    if (!strcmp(sh->reps[k].node, node)) return (int)k;
  return -1;
}

static const cl_xfer *report_of(const cl_coll *c, uint32_t shard) {
  for (size_t i = 0; i < c->n_xfers; i++)
    if (c->xfers[i].shard == shard) return &c->xfers[i];
  return NULL;
}

/* Rule 9: the shard goes back to the ring. */
static void unpin(const cl_coll *c, cl_shard *sh, const cl_plan_in *in, const char *why) {
  sh->is_pinned = false;
  for (uint32_t k = 0; k < sh->n_reps; k++) sh->reps[k].is_leaving = false;
  say(in, "%s shard %u: pin released (%s), the ring places it again", c->name, sh->id, why);
}

static void clear_leaving(cl_shard *sh) {
  for (uint32_t k = 0; k < sh->n_reps; k++) sh->reps[k].is_leaving = false;
}

static uint32_t live_insync(const cl_shard *sh, const cl_plan_in *in) {
  uint32_t n = 0;
  for (uint32_t k = 0; k < sh->n_reps; k++)
    n += sh->reps[k].state == CL_INSYNC && in_list(in->live, in->n_live, sh->reps[k].node);
  return n;
}

/* Rules 1-4 on one shard. */
static bool repair_shard(const cl_coll *c, cl_shard *sh, const cl_plan_in *in) {
  bool changed = false;
  const cl_xfer *rep = report_of(c, sh->id);
  for (uint32_t k = 0; k < sh->n_reps; k++) {
    cl_replica *r = &sh->reps[k];
    if (r->state == CL_PARTIAL && rep && !strcmp(rep->phase, "done") && rep->xfer == r->xfer &&
        rep->term == sh->term && !strcmp(rep->from, sh->primary) && !strcmp(rep->to, r->node) &&
        in_list(in->live, in->n_live, r->node)) {
      r->state = CL_INSYNC;
      changed = true;
      say(in, "%s shard %u: copy on %s caught up (%" PRIu64 " points copied), now insync",
          c->name, sh->id, r->node, rep->copied);
    }
  }
  for (uint32_t k = 0; k < sh->n_reps;) {
    if (sh->reps[k].state == CL_PARTIAL && !in_list(in->live, in->n_live, sh->reps[k].node)) {
      say(in, "%s shard %u: transfer target %s is gone, partial copy dropped", c->name, sh->id,
          sh->reps[k].node);
      drop_rep(sh, k);
      clear_leaving(sh); /* a move that lost its target keeps its source */
      changed = true;
    } else {
      k++;
    }
  }
  for (size_t i = 0; i < c->n_stale; i++) {
    const cl_stale *st = &c->stale[i];
    int k = st->shard == sh->id && st->term == sh->term && !strcmp(st->from, sh->primary)
                ? find_rep(sh, st->node)
                : -1;
    if (k < 0 || sh->reps[k].state != CL_INSYNC || !strcmp(sh->reps[k].node, sh->primary))
      continue;
    sh->reps[k].state = CL_DEAD; /* the primary still holds every write */
    sh->reps[k].dead_ms = in->now_ms;
    changed = true;
    say(in, "%s shard %u: copy on %s missed a write, marked dead (it rejoins by transfer)",
        c->name, sh->id, st->node);
  }
  if (live_insync(sh, in) == 0) return changed; /* wait for the last copies */
  for (uint32_t k = 0; k < sh->n_reps; k++) {
    cl_replica *r = &sh->reps[k];
    if (r->state == CL_INSYNC && !in_list(in->live, in->n_live, r->node)) {
      r->state = CL_DEAD;
      r->dead_ms = in->now_ms;
      changed = true;
      say(in, "%s shard %u: copy on %s is dead", c->name, sh->id, r->node);
    }
  }
  int p = find_rep(sh, sh->primary);
  if (p < 0 || sh->reps[p].state != CL_INSYNC) {
    for (uint32_t k = 0; k < sh->n_reps; k++)
      if (sh->reps[k].state == CL_INSYNC) {
        snprintf(sh->primary, sizeof sh->primary, "%s", sh->reps[k].node);
        sh->term++;
        changed = true;
        say(in, "%s shard %u: %s promoted to primary, term %" PRIu64, c->name, sh->id,
            sh->primary, sh->term);
        break;
      }
  }
  for (uint32_t k = 0; k < sh->n_reps;) {
    cl_replica *r = &sh->reps[k];
    if (r->state == CL_DEAD && in->now_ms - r->dead_ms >= in->move_delay_ms &&
        !in_list(in->live, in->n_live, r->node)) {
      say(in, "%s shard %u: copy on %s dead for %" PRId64 " s, dropped", c->name, sh->id,
          r->node, (in->now_ms - r->dead_ms) / 1000);
      bool was_pinned = sh->is_pinned && !r->is_leaving;
      drop_rep(sh, k);
      if (was_pinned) unpin(c, sh, in, "a pinned copy died");
      changed = true;
    } else {
      k++;
    }
  }
  return changed;
}

/* Transfers in flight per node (rule 6's throttle). */
typedef struct load {
  const char *node;
  uint32_t in, out;
} load;

static load *load_of(load *v, size_t *n, size_t cap, const char *node) {
  for (size_t i = 0; i < *n; i++)
    if (!strcmp(v[i].node, node)) return &v[i];
  if (*n == cap) return NULL;
  v[*n] = (load){node, 0, 0};
  return &v[(*n)++];
}

static bool has_partial(const cl_shard *sh) {
  for (uint32_t k = 0; k < sh->n_reps; k++)
    if (sh->reps[k].state == CL_PARTIAL) return true;
  return false;
}

/* The ring members of rule 5; NULL when there are none. */
static const char **ring_members(const cl_coll *c, const cl_plan_in *in, size_t *n) {
  size_t cap = in->n_live + (size_t)c->shard_number * CL_RF_MAX;
  const char **v = qv_calloc(cap ? cap : 1, sizeof *v);
  *n = 0;
  if (v == NULL) return NULL;
  for (size_t i = 0; i < in->n_live; i++)
    if (!in_list(in->draining, in->n_draining, in->live[i]) && !in_list(v, *n, in->live[i]))
      v[(*n)++] = in->live[i];
  for (uint32_t s = 0; s < c->shard_number; s++)
    for (uint32_t k = 0; k < c->shards[s].n_reps; k++) {
      const cl_replica *r = &c->shards[s].reps[k];
      if (r->state == CL_DEAD && !in_list(in->draining, in->n_draining, r->node) &&
          !in_list(v, *n, r->node))
        v[(*n)++] = r->node;
    }
  if (*n == 0) {
    qv_free(v);
    return NULL;
  }
  return v;
}

/* Rule 6 on one shard (rule 8: a pinned shard only rejoins). */
static bool add_copy(const cl_coll *c, cl_shard *sh, const ring_placement *p, load *ld,
                     size_t *n_ld, size_t cap_ld, int64_t xfer, const cl_plan_in *in) {
  if (has_partial(sh) || !in_list(in->live, in->n_live, sh->primary)) return false;
  load *src = load_of(ld, n_ld, cap_ld, sh->primary);
  if (src == NULL || src->out > 0) return false;
  int target = -1;
  const char *node = NULL;
  for (uint32_t k = 0; k < sh->n_reps && node == NULL; k++) {
    const cl_replica *r = &sh->reps[k];
    bool wanted = sh->is_pinned ? !r->is_leaving : p == NULL || ring_holds(p, sh->id, r->node);
    if (r->state == CL_DEAD && in_list(in->live, in->n_live, r->node) &&
        !in_list(in->draining, in->n_draining, r->node) && wanted) {
      target = (int)k;
      node = r->node;
    }
  }
  for (uint32_t k = 0; p && !sh->is_pinned && k < p->rf && node == NULL; k++) {
    const char *want = ring_replica(p, sh->id, k);
    if (find_rep(sh, want) < 0 && in_list(in->live, in->n_live, want)) node = want;
  }
  if (node == NULL) return false;
  load *dst = load_of(ld, n_ld, cap_ld, node);
  if (dst == NULL || dst->in > 0) return false;
  if (target < 0) {
    if (sh->n_reps == CL_RF_MAX) return false;
    target = (int)sh->n_reps++;
    memset(&sh->reps[target], 0, sizeof sh->reps[target]);
    snprintf(sh->reps[target].node, sizeof sh->reps[target].node, "%s", node);
    say(in, "%s shard %u: new copy on %s, transfer from %s", c->name, sh->id, node, sh->primary);
  } else {
    say(in, "%s shard %u: %s is back, its copy rejoins by a transfer from %s", c->name, sh->id,
        node, sh->primary);
  }
  sh->reps[target].state = CL_PARTIAL;
  sh->reps[target].xfer = xfer;
  sh->reps[target].dead_ms = 0;
  dst->in++;
  src->out++;
  return true;
}

/* Rule 7 on one shard. */
static bool trim_shard(const cl_coll *c, cl_shard *sh, const ring_placement *p,
                       const cl_plan_in *in) {
  if (has_partial(sh)) return false;
  for (uint32_t k = 0; k < p->rf; k++) {
    int r = find_rep(sh, ring_replica(p, sh->id, k));
    if (r < 0 || sh->reps[r].state != CL_INSYNC ||
        !in_list(in->live, in->n_live, sh->reps[r].node))
      return false;
  }
  bool changed = false;
  for (uint32_t k = 0; k < sh->n_reps;) {
    if (ring_holds(p, sh->id, sh->reps[k].node)) {
      k++;
      continue;
    }
    if (!strcmp(sh->reps[k].node, sh->primary)) {
      snprintf(sh->primary, sizeof sh->primary, "%s", ring_replica(p, sh->id, 0));
      sh->term++;
      say(in, "%s shard %u: primary moves to %s, term %" PRIu64, c->name, sh->id, sh->primary,
          sh->term);
    }
    say(in, "%s shard %u: copy on %s removed", c->name, sh->id, sh->reps[k].node);
    drop_rep(sh, k);
    changed = true;
  }
  return changed;
}

/* The first insync copy on a live node that is not `except` and not
 * leaving; -1 when none. */
static int successor(const cl_shard *sh, const char *except, const cl_plan_in *in) {
  for (uint32_t k = 0; k < sh->n_reps; k++) {
    const cl_replica *r = &sh->reps[k];
    if (r->state == CL_INSYNC && !r->is_leaving && strcmp(r->node, except) &&
        in_list(in->live, in->n_live, r->node))
      return (int)k;
  }
  return -1;
}

/* Removes copy k of a shard, handing the primary over first when it is
 * copy k (to `succ`, a successor() of it). */
static void remove_copy(const cl_coll *c, cl_shard *sh, uint32_t k, int succ,
                        const cl_plan_in *in) {
  if (!strcmp(sh->reps[k].node, sh->primary) && succ >= 0) {
    snprintf(sh->primary, sizeof sh->primary, "%s", sh->reps[succ].node);
    sh->term++;
    say(in, "%s shard %u: primary moves to %s, term %" PRIu64, c->name, sh->id, sh->primary,
        sh->term);
  }
  say(in, "%s shard %u: copy on %s removed", c->name, sh->id, sh->reps[k].node);
  drop_rep(sh, k);
}

/* Rule 8's removals: a pinned shard's leaving copies go once it has no
 * partial copy and every other copy is insync on a live node. */
static bool trim_pinned(const cl_coll *c, cl_shard *sh, const cl_plan_in *in) {
  if (has_partial(sh)) return false;
  uint32_t keep = 0, leaving = 0;
  for (uint32_t k = 0; k < sh->n_reps; k++) {
    const cl_replica *r = &sh->reps[k];
    if (r->is_leaving) {
      leaving++;
      continue;
    }
    if (r->state != CL_INSYNC || !in_list(in->live, in->n_live, r->node)) return false;
    keep++;
  }
  if (leaving == 0 || keep == 0) return false;
  for (uint32_t k = 0; k < sh->n_reps;) {
    if (!sh->reps[k].is_leaving) {
      k++;
      continue;
    }
    remove_copy(c, sh, k, successor(sh, sh->reps[k].node, in), in);
  }
  return true;
}

/* Rule 9 for draining: a pinned copy on a draining node releases the pin. */
static bool release_drained_pins(const cl_coll *c, const cl_plan_in *in) {
  bool changed = false;
  for (uint32_t s = 0; s < c->shard_number; s++) {
    cl_shard *sh = &c->shards[s];
    for (uint32_t k = 0; sh->is_pinned && k < sh->n_reps; k++)
      if (!sh->reps[k].is_leaving && in_list(in->draining, in->n_draining, sh->reps[k].node)) {
        unpin(c, sh, in, "a pinned node is draining");
        changed = true;
      }
  }
  return changed;
}

bool cl_plan(cl_coll *c, const cl_plan_in *in) {
  if (!c->has_map || c->shards == NULL) return false;
  bool changed = false;
  for (uint32_t s = 0; s < c->shard_number; s++) changed |= repair_shard(c, &c->shards[s], in);
  changed |= release_drained_pins(c, in);

  size_t n_members = 0;
  const char **members = ring_members(c, in, &n_members);
  ring_placement *p = NULL;
  if (members) {
    ring_opts ro;
    ring_opts_init(&ro);
    ro.rf = c->rf;
    ro.salt = c->name;
    qv_err err = {0};
    if (ring_place(members, n_members, c->shard_number, &ro, &p, &err) != QV_OK) {
      say(in, "%s: placement failed: %s", c->name, err.msg);
      p = NULL;
    }
  }
  size_t cap_ld = (size_t)c->shard_number * CL_RF_MAX + in->n_live + 1, n_ld = 0;
  load *ld = qv_calloc(cap_ld, sizeof *ld);
  if (ld) {
    for (uint32_t s = 0; s < c->shard_number; s++) {
      const cl_shard *sh = &c->shards[s];
      for (uint32_t k = 0; k < sh->n_reps; k++)
        if (sh->reps[k].state == CL_PARTIAL) {
          load *a = load_of(ld, &n_ld, cap_ld, sh->reps[k].node);
          load *b = load_of(ld, &n_ld, cap_ld, sh->primary);
          if (a) a->in++;
          if (b) b->out++;
        }
    }
    /* Under-replicated shards first, then the rest (rule 6). */
    for (int pass = 0; pass < 2; pass++)
      for (uint32_t s = 0; s < c->shard_number; s++) {
        cl_shard *sh = &c->shards[s];
        bool under = live_insync(sh, in) < (p ? p->rf : c->rf);
        if (under == (pass == 0))
          changed |= add_copy(c, sh, p, ld, &n_ld, cap_ld, c->epoch + 1, in);
      }
    qv_free(ld);
  }
  for (uint32_t s = 0; s < c->shard_number; s++) {
    cl_shard *sh = &c->shards[s];
    if (sh->is_pinned) changed |= trim_pinned(c, sh, in);
    else if (p) changed |= trim_shard(c, sh, p, in);
  }
  ring_placement_free(p);
  qv_free(members);
  return changed;
}

/* ---- operator requests ------------------------------------------------------------ */

static const char *op_name(cl_op_kind k) {
  static const char *names[] = {"move_shard", "replicate_shard", "drop_replica",
                                "abort_transfer", "unpin_shard"};
  return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

/* Adds a partial copy on `to` (MOVE, REPLICATE), after the checks. */
static qv_rc op_transfer(cl_coll *c, cl_shard *sh, const cl_op *op, const cl_plan_in *in,
                         qv_err *err) {
  if (!strcmp(op->from, op->to))
    return qv_err_set(err, QV_EINVAL, "Bad request: cannot transfer shard %u of `%s` from peer "
                      "%s to itself", sh->id, c->name, op->to);
  int f = find_rep(sh, op->from);
  if (f < 0 && !in_list(in->live, in->n_live, op->from))
    return qv_err_set(err, QV_EINVAL, "Bad request: Peer %s does not exist", op->from);
  if (!in_list(in->live, in->n_live, op->to))
    return qv_err_set(err, QV_EINVAL, "Bad request: Peer %s does not exist", op->to);
  if (f < 0 || sh->reps[f].state != CL_INSYNC || sh->reps[f].is_leaving)
    return qv_err_set(err, QV_EINVAL, "Bad request: Shard %u of `%s` has no active replica on "
                      "peer %s", sh->id, c->name, op->from);
  if (find_rep(sh, op->to) >= 0)
    return qv_err_set(err, QV_EINVAL, "Bad request: Shard %u of `%s` already has a replica on "
                      "peer %s", sh->id, c->name, op->to);
  if (in_list(in->draining, in->n_draining, op->to))
    return qv_err_set(err, QV_EINVAL, "Bad request: peer %s is draining", op->to);
  if (has_partial(sh))
    return qv_err_set(err, QV_EBUSY, "Bad request: Shard %u of `%s` is already involved in a "
                      "transfer", sh->id, c->name);
  if (sh->n_reps >= CL_RF_MAX)
    return qv_err_set(err, QV_EINVAL, "Bad request: Shard %u of `%s` has %u replicas, the most "
                      "Quiver keeps", sh->id, c->name, CL_RF_MAX);
  cl_replica *r = &sh->reps[sh->n_reps++];
  memset(r, 0, sizeof *r);
  snprintf(r->node, sizeof r->node, "%s", op->to);
  r->state = CL_PARTIAL;
  r->xfer = c->epoch + 1;
  if (op->kind == CL_OP_MOVE) sh->reps[f].is_leaving = true;
  sh->is_pinned = true;
  say(in, "%s shard %u: %s from %s to %s: new copy on %s, transfer from %s", c->name, sh->id,
      op_name(op->kind), op->from, op->to, op->to, sh->primary);
  return QV_OK;
}

qv_rc cl_plan_op(cl_coll *c, const cl_op *op, const cl_plan_in *in, qv_err *err) {
  if (!c->has_map || c->shards == NULL || op->shard >= c->shard_number)
    return qv_err_set(err, QV_ENOTFOUND, "Not found: Shard %u of `%s` does not exist", op->shard,
                      c->name);
  cl_shard *sh = &c->shards[op->shard];
  switch (op->kind) {
  case CL_OP_MOVE:
  case CL_OP_REPLICATE:
    return op_transfer(c, sh, op, in, err);
  case CL_OP_DROP: {
    int k = find_rep(sh, op->from);
    if (k < 0 && !in_list(in->live, in->n_live, op->from))
      return qv_err_set(err, QV_EINVAL, "Bad request: Peer %s does not exist", op->from);
    if (k < 0)
      return qv_err_set(err, QV_EINVAL, "Bad request: Shard %u of `%s` has no replica on peer %s",
                        sh->id, c->name, op->from);
    int succ = successor(sh, op->from, in);
    if (sh->reps[k].state == CL_INSYNC && succ < 0)
      return qv_err_set(err, QV_EINVAL, "Bad request: cannot drop the last active replica of "
                        "shard %u of `%s` (no other insync copy on a live peer)", sh->id,
                        c->name);
    if (sh->reps[k].state == CL_PARTIAL) clear_leaving(sh);
    remove_copy(c, sh, (uint32_t)k, succ, in);
    sh->is_pinned = true;
    return QV_OK;
  }
  case CL_OP_ABORT: {
    int k = find_rep(sh, op->to);
    if (k < 0 || sh->reps[k].state != CL_PARTIAL || strcmp(sh->primary, op->from))
      return qv_err_set(err, QV_EINVAL, "Bad request: there is no transfer of shard %u of `%s` "
                        "from peer %s to peer %s", sh->id, c->name, op->from, op->to);
    say(in, "%s shard %u: transfer to %s aborted", c->name, sh->id, op->to);
    drop_rep(sh, (uint32_t)k);
    clear_leaving(sh);
    sh->is_pinned = true;
    return QV_OK;
  }
  case CL_OP_UNPIN:
    if (sh->is_pinned) unpin(c, sh, in, "asked for");
    return QV_OK;
  }
  return qv_err_set(err, QV_EINVAL, "Bad request: unknown operation");
}
