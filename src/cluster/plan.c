/* plan.c: the controller's per-collection decisions (rules in plan.h).
 *
 * Owns nothing but the computation: node.c feeds it the watched view and
 * writes the result by fenced CAS. Invariants kept on the edited map: a
 * shard never loses its last insync copy, its primary is a live insync copy
 * whenever one exists, every copy is on a distinct node, at most one
 * partial copy per shard, and the throttle (one transfer in and one out per
 * node) holds over the whole map. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
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
      drop_rep(sh, k);
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

/* Rule 6 on one shard. */
static bool add_copy(const cl_coll *c, cl_shard *sh, const ring_placement *p, load *ld,
                     size_t *n_ld, size_t cap_ld, int64_t xfer, const cl_plan_in *in) {
  if (has_partial(sh) || !in_list(in->live, in->n_live, sh->primary)) return false;
  load *src = load_of(ld, n_ld, cap_ld, sh->primary);
  if (src == NULL || src->out > 0) return false;
  int target = -1;
  const char *node = NULL;
  for (uint32_t k = 0; k < sh->n_reps && node == NULL; k++) {
    const cl_replica *r = &sh->reps[k];
    if (r->state == CL_DEAD && in_list(in->live, in->n_live, r->node) &&
        !in_list(in->draining, in->n_draining, r->node) &&
        (p == NULL || ring_holds(p, sh->id, r->node))) {
      target = (int)k;
      node = r->node;
    }
  }
  for (uint32_t k = 0; p && k < p->rf && node == NULL; k++) {
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

bool cl_plan(cl_coll *c, const cl_plan_in *in) {
  if (!c->has_map || c->shards == NULL) return false;
  bool changed = false;
  for (uint32_t s = 0; s < c->shard_number; s++) changed |= repair_shard(c, &c->shards[s], in);

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
  for (uint32_t s = 0; p && s < c->shard_number; s++) changed |= trim_shard(c, &c->shards[s], p, in);
  ring_placement_free(p);
  qv_free(members);
  return changed;
}
