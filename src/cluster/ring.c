/* ring.c: placement of shards on nodes — rankings, bounded-load grant and
 * the diff between two placements (see ring.h for the contract,
 * docs/cluster.md for the measurements behind every choice here).
 *
 * Owns the placement function. Does not talk to etcd, know about replica
 * states (shardmap.c) or decide when to move anything (the controller does).
 *
 * The algorithm, in four steps:
 *   1. rank: every (shard, node) pair gets a key, smaller = more preferred.
 *      RING_RENDEZVOUS: node A sorts all shards by XXH3("<A>|<salt>|<s>")
 *      and prefers them in that order, so each node's preferences are a
 *      permutation — *stratified*: exactly one shard at every preference
 *      level. Plain rendezvous hashing draws every (shard, node) score
 *      independently, and a node's share of first places then varies like
 *      a binomial; with stratified levels its variance drops by about half
 *      (docs/cluster.md), which is what keeps joins within 1.5x of the ideal
 *      move in all but the smallest shard counts. RING_VNODES: the key is
 *      the clockwise distance from the shard's position to the node's
 *      nearest token (classic consistent hashing). Only the
 *      RANK_DEPTH_EXTRA + rf best nodes of each shard are kept;
 *   2. grant: all kept pairs are sorted by key and granted greedily — a pair
 *      is taken when its shard still needs a copy, its node does not hold
 *      the shard and is below the cap. Granting globally by key (a stable
 *      matching) rather than shard by shard means a full node keeps the
 *      shards it prefers most, so a joining node displaces marginal copies;
 *   3. repair: a shard still short (all kept nodes full or holding it)
 *      takes a copy through an augmenting path: some full node gives one of
 *      its shards to a node that lacks it, making room. A feasible
 *      assignment always exists (cap * n >= copies, rf <= n), so a path
 *      always exists;
 *   4. order: each shard lists its copies by key; the first is primary.
 *
 * Invariant: the result depends only on the sorted member ids, n_shards and
 * the options — no clock, no randomness, no hash-table iteration order —
 * because every node computes it on its own and they must all agree. */
#include "cluster/ring.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "base/alloc.h"
#include "base/err.h"
#include "engine/id.h"

/* Preference depth kept per shard beyond rf. Deeper nodes are reached only
 * when the nearer ones are full, and step 3 covers that; 32 makes every
 * node of a cluster of up to rf + 32 nodes ranked for every shard. */
#define RANK_DEPTH_EXTRA 32u
#define NONE UINT32_MAX

void ring_opts_init(ring_opts *o) {
  memset(o, 0, sizeof *o);
  o->algo = RING_RENDEZVOUS;
  o->vnodes = RING_VNODES_DEFAULT;
  o->rf = 1;
  o->eps = RING_EPS_DEFAULT;
}

uint64_t ring_hash(const void *data, size_t len) {
  return XXH3_64bits(data, len);
}

uint64_t ring_token(const char *node_id, uint32_t i) {
  char buf[RING_NODE_ID_MAX + 16];
  int n = snprintf(buf, sizeof buf, "%s#%u", node_id, i);
  return ring_hash(buf, (size_t)n);
}

uint64_t ring_shard_pos(const char *salt, uint32_t shard) {
  char buf[QV_NAME_MAX + 16];
  int n = snprintf(buf, sizeof buf, "%.*s/%u", (int)QV_NAME_MAX,
                   salt ? salt : "", shard);
  return ring_hash(buf, (size_t)n);
}

uint64_t ring_hrw_hash(const char *node_id, const char *salt, uint32_t shard) {
  char buf[RING_NODE_ID_MAX + QV_NAME_MAX + 16];
  int n = snprintf(buf, sizeof buf, "%s|%.*s|%u", node_id, (int)QV_NAME_MAX,
                   salt ? salt : "", shard);
  return ring_hash(buf, (size_t)n);
}

uint32_t ring_shard_of(const qv_point_id *id, uint32_t n_shards) {
  return n_shards <= 1 ? 0 : (uint32_t)(id_hash(id) % n_shards);
}

/* A (shard, member) preference; smaller key = more preferred. */
typedef struct pref {
  uint64_t key;
  uint32_t shard, member;
} pref;

typedef struct token {
  uint64_t pos;
  uint32_t member;
} token;

/* Working state of one ring_place() call. */
typedef struct place_ctx {
  uint32_t n, p, rf, cap, depth;
  pref *top;       /* p * depth: each shard's best members, by key */
  uint32_t *n_top; /* entries used per shard */
  uint8_t *holds;  /* p * n: does shard s have a copy on member m */
  uint32_t *cnt;   /* copies granted per shard */
  uint32_t *rep;   /* p * rf member indexes (the placement's array) */
  uint32_t *load;  /* per member (the placement's array) */
  uint32_t *stamp; /* per member, marks for walks and searches */
  uint32_t stamp_gen;
} place_ctx;

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_pref(const void *a, const void *b) {
  const pref *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
  return x->member < y->member ? -1 : x->member > y->member;
}

static int cmp_token(const void *a, const void *b) {
  const token *x = a, *y = b;
  if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
  return x->member < y->member ? -1 : x->member > y->member;
}

static uint32_t next_stamp(place_ctx *c) {
  if (++c->stamp_gen == 0) { /* wrapped: forget old marks */
    memset(c->stamp, 0, c->n * sizeof *c->stamp);
    c->stamp_gen = 1;
  }
  return c->stamp_gen;
}

/* Keeps `pr` among its shard's `depth` best, in key order. */
static void top_insert(place_ctx *c, pref pr) {
  pref *t = &c->top[(size_t)pr.shard * c->depth];
  uint32_t n = c->n_top[pr.shard];
  if (n == c->depth) {
    if (cmp_pref(&pr, &t[n - 1]) >= 0) return;
    n--;
  }
  uint32_t i = n;
  for (; i > 0 && cmp_pref(&pr, &t[i - 1]) < 0; i--) t[i] = t[i - 1];
  t[i] = pr;
  c->n_top[pr.shard] = n + 1;
}

typedef struct hrw_item {
  uint64_t h;
  uint32_t shard;
} hrw_item;

static int cmp_hrw(const void *a, const void *b) {
  const hrw_item *x = a, *y = b;
  if (x->h != y->h) return x->h > y->h ? -1 : 1; /* largest hash first */
  return x->shard < y->shard ? -1 : x->shard > y->shard;
}

/* Step 1, RING_RENDEZVOUS: member m's level for shard s is the position of
 * s in m's hash order; the key puts the level above the hash bits so that
 * equal levels of two members are broken by their hashes. */
static qv_rc rank_rendezvous(place_ctx *c, char *const *members,
                             const char *salt) {
  hrw_item *it = qv_malloc((size_t)c->p * sizeof *it);
  if (it == NULL) return QV_ENOMEM;
  for (uint32_t m = 0; m < c->n; m++) {
    for (uint32_t s = 0; s < c->p; s++)
      it[s] = (hrw_item){ring_hrw_hash(members[m], salt, s), s};
    qsort(it, c->p, sizeof *it, cmp_hrw);
    for (uint32_t level = 0; level < c->p; level++)
      top_insert(c, (pref){(uint64_t)level << 40 | (~it[level].h >> 24),
                           it[level].shard, m});
  }
  qv_free(it);
  return QV_OK;
}

/* Step 1, RING_VNODES: walk clockwise from each shard's position; a
 * member's key is the distance to its first token met. */
static qv_rc rank_vnodes(place_ctx *c, char *const *members,
                         const ring_opts *o) {
  size_t n_tok = (size_t)c->n * o->vnodes;
  token *ring = qv_malloc(n_tok * sizeof *ring);
  if (ring == NULL) return QV_ENOMEM;
  for (uint32_t m = 0; m < c->n; m++)
    for (uint32_t i = 0; i < o->vnodes; i++)
      ring[(size_t)m * o->vnodes + i] = (token){ring_token(members[m], i), m};
  qsort(ring, n_tok, sizeof *ring, cmp_token);
  for (uint32_t s = 0; s < c->p; s++) {
    uint64_t pos = ring_shard_pos(o->salt, s);
    size_t lo = 0, hi = n_tok; /* first token at or after pos, wrapping */
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (ring[mid].pos < pos)
        lo = mid + 1;
      else
        hi = mid;
    }
    uint32_t st = next_stamp(c);
    for (size_t w = 0; w < n_tok && c->n_top[s] < c->depth; w++) {
      const token *t = &ring[(lo + w) % n_tok];
      if (c->stamp[t->member] == st) continue;
      c->stamp[t->member] = st;
      /* unsigned wrap-around = clockwise distance */
      top_insert(c, (pref){t->pos - pos, s, t->member});
    }
  }
  qv_free(ring);
  return QV_OK;
}

static void grant(place_ctx *c, uint32_t s, uint32_t m) {
  c->rep[(size_t)s * c->rf + c->cnt[s]++] = m;
  c->holds[(size_t)s * c->n + m] = 1;
  c->load[m]++;
}

static void move_copy(place_ctx *c, uint32_t t, uint32_t from, uint32_t to) {
  uint32_t *r = &c->rep[(size_t)t * c->rf];
  for (uint32_t k = 0; k < c->cnt[t]; k++)
    if (r[k] == from) r[k] = to;
  c->holds[(size_t)t * c->n + from] = 0;
  c->holds[(size_t)t * c->n + to] = 1;
  c->load[from]--;
  c->load[to]++;
}

/* Step 3: one augmenting path for shard `s`, breadth first over members.
 * A member X that lacks `s` can take it if it is below the cap, or if one
 * of its shards t moves to a member Y that lacks t; Y in turn may be full,
 * and so on. Returns false when no path exists (impossible with a feasible
 * cap; the caller then breaks the cap rather than lose a copy). */
static bool augment(place_ctx *c, uint32_t s, uint32_t *parent, uint32_t *via,
                    uint32_t *queue) {
  uint32_t head = 0, tail = 0, st = next_stamp(c);
  for (uint32_t m = 0; m < c->n; m++) {
    if (c->holds[(size_t)s * c->n + m]) continue;
    c->stamp[m] = st;
    parent[m] = NONE;
    queue[tail++] = m;
  }
  while (head < tail) {
    uint32_t x = queue[head++];
    if (c->load[x] < c->cap) {
      /* Apply the path backwards. Each member on it gains one copy and
       * gives another, so the checks made on the original state hold. */
      uint32_t y = x;
      while (parent[y] != NONE) {
        move_copy(c, via[y], parent[y], y);
        y = parent[y];
      }
      grant(c, s, y);
      return true;
    }
    for (uint32_t t = 0; t < c->p; t++) {
      if (!c->holds[(size_t)t * c->n + x]) continue;
      for (uint32_t y = 0; y < c->n; y++) {
        if (c->stamp[y] == st || c->holds[(size_t)t * c->n + y]) continue;
        c->stamp[y] = st;
        parent[y] = x;
        via[y] = t;
        queue[tail++] = y;
      }
    }
  }
  return false;
}

/* The key of (s, m), or UINT64_MAX when m is not among s's kept best. */
static uint64_t key_of(const place_ctx *c, uint32_t s, uint32_t m) {
  const pref *t = &c->top[(size_t)s * c->depth];
  for (uint32_t i = 0; i < c->n_top[s]; i++)
    if (t[i].member == m) return t[i].key;
  return UINT64_MAX;
}

/* Step 4: most preferred copy first; the primary is the first. */
static void order_replicas(place_ctx *c) {
  for (uint32_t s = 0; s < c->p; s++) {
    uint32_t *r = &c->rep[(size_t)s * c->rf];
    uint64_t d[64]; /* rf <= 64, checked on input */
    for (uint32_t k = 0; k < c->rf; k++) d[k] = key_of(c, s, r[k]);
    for (uint32_t k = 1; k < c->rf; k++) /* insertion sort: rf is small */
      for (uint32_t j = k;
           j > 0 && (d[j] < d[j - 1] || (d[j] == d[j - 1] && r[j] < r[j - 1]));
           j--) {
        uint64_t td = d[j];
        d[j] = d[j - 1];
        d[j - 1] = td;
        uint32_t tr = r[j];
        r[j] = r[j - 1];
        r[j - 1] = tr;
      }
  }
}

static qv_rc check_input(const char *const *members, size_t n, uint32_t p,
                         const ring_opts *o, qv_err *err) {
  if (n == 0)
    return qv_err_set(err, QV_EINVAL, "ring: no members to place shards on");
  if (n > RING_MEMBERS_MAX)
    return qv_err_set(err, QV_EINVAL, "ring: %zu members, at most %u", n,
                      RING_MEMBERS_MAX);
  if (p == 0 || p > RING_SHARDS_MAX)
    return qv_err_set(err, QV_EINVAL, "ring: %u shards, expected 1..%u", p,
                      RING_SHARDS_MAX);
  if (o->algo != RING_RENDEZVOUS && o->algo != RING_VNODES)
    return qv_err_set(err, QV_EINVAL, "ring: unknown algorithm %d",
                      (int)o->algo);
  if (o->algo == RING_VNODES &&
      (o->vnodes < RING_VNODES_MIN || o->vnodes > RING_VNODES_MAX))
    return qv_err_set(err, QV_EINVAL, "ring: vnodes %u, expected %u..%u",
                      o->vnodes, RING_VNODES_MIN, RING_VNODES_MAX);
  if (o->rf == 0 || o->rf > 64)
    return qv_err_set(err, QV_EINVAL,
                      "ring: replication factor %u, expected 1..64", o->rf);
  if (!(o->eps >= 0.0 && o->eps <= RING_EPS_MAX)) /* also rejects NaN */
    return qv_err_set(err, QV_EINVAL, "ring: load slack eps %g, expected 0..%g",
                      o->eps, RING_EPS_MAX);
  for (size_t i = 0; i < n; i++) {
    size_t len = members[i] ? strlen(members[i]) : 0;
    if (len == 0 || len > RING_NODE_ID_MAX)
      return qv_err_set(
          err, QV_EINVAL,
          "ring: member %zu: node id of %zu bytes, expected 1..%u", i, len,
          RING_NODE_ID_MAX);
  }
  return QV_OK;
}

void ring_placement_free(ring_placement *p) {
  if (p == NULL) return;
  if (p->members)
    for (uint32_t i = 0; i < p->n_members; i++) qv_free(p->members[i]);
  qv_free(p->members);
  qv_free(p->replicas);
  qv_free(p->load);
  qv_free(p);
}

/* Copies and sorts the ids into `pl`; rejects duplicates. */
static qv_rc copy_members(ring_placement *pl, const char *const *members,
                          size_t n, qv_err *err) {
  pl->members = qv_calloc(n, sizeof *pl->members);
  if (pl->members == NULL) return qv_err_set(err, QV_ENOMEM, "ring: no memory");
  pl->n_members = (uint32_t)n;
  for (size_t i = 0; i < n; i++)
    if ((pl->members[i] = qv_strdup(members[i])) == NULL)
      return qv_err_set(err, QV_ENOMEM, "ring: no memory");
  qsort(pl->members, n, sizeof *pl->members, cmp_str);
  for (size_t i = 1; i < n; i++)
    if (strcmp(pl->members[i - 1], pl->members[i]) == 0)
      return qv_err_set(err, QV_EINVAL, "ring: node id \"%.64s\" listed twice",
                        pl->members[i]);
  return QV_OK;
}

/* Steps 2 and 3 over the kept preferences. */
static qv_rc grant_all(place_ctx *c) {
  size_t n_pref = 0;
  for (uint32_t s = 0; s < c->p; s++) n_pref += c->n_top[s];
  pref *all = qv_malloc(n_pref * sizeof *all);
  uint32_t *bfs = qv_malloc(3 * (size_t)c->n * sizeof *bfs);
  if (all == NULL || bfs == NULL) {
    qv_free(all);
    qv_free(bfs);
    return QV_ENOMEM;
  }
  size_t k = 0;
  for (uint32_t s = 0; s < c->p; s++)
    for (uint32_t i = 0; i < c->n_top[s]; i++)
      all[k++] = c->top[(size_t)s * c->depth + i];
  qsort(all, n_pref, sizeof *all, cmp_pref);
  for (size_t i = 0; i < n_pref; i++) {
    const pref *pr = &all[i];
    if (c->cnt[pr->shard] < c->rf && c->load[pr->member] < c->cap &&
        !c->holds[(size_t)pr->shard * c->n + pr->member])
      grant(c, pr->shard, pr->member);
  }
  for (uint32_t s = 0; s < c->p; s++)
    while (c->cnt[s] < c->rf) {
      if (augment(c, s, bfs, bfs + c->n, bfs + 2 * (size_t)c->n)) continue;
      uint32_t best = NONE; /* unreachable; see augment() */
      for (uint32_t m = 0; m < c->n; m++)
        if (!c->holds[(size_t)s * c->n + m] &&
            (best == NONE || c->load[m] < c->load[best]))
          best = m;
      grant(c, s, best);
    }
  qv_free(all);
  qv_free(bfs);
  return QV_OK;
}

static void ctx_free(place_ctx *c) {
  qv_free(c->top);
  qv_free(c->n_top);
  qv_free(c->holds);
  qv_free(c->cnt);
  qv_free(c->stamp);
}

qv_rc ring_place(const char *const *members, size_t n_members,
                 uint32_t n_shards, const ring_opts *opts, ring_placement **out,
                 qv_err *err) {
  ring_opts defaults;
  if (opts == NULL) {
    ring_opts_init(&defaults);
    opts = &defaults;
  }
  qv_rc rc = check_input(members, n_members, n_shards, opts, err);
  if (rc != QV_OK) return rc;
  ring_placement *pl = qv_calloc(1, sizeof *pl);
  if (pl == NULL) return qv_err_set(err, QV_ENOMEM, "ring: no memory");
  place_ctx c;
  memset(&c, 0, sizeof c);
  rc = copy_members(pl, members, n_members, err);
  if (rc != QV_OK) goto out;

  c.n = (uint32_t)n_members;
  c.p = n_shards;
  c.rf = opts->rf < c.n ? opts->rf : c.n;
  c.depth = c.rf + RANK_DEPTH_EXTRA < c.n ? c.rf + RANK_DEPTH_EXTRA : c.n;
  /* The 1e-9 keeps an exact quotient (40.0) from rounding up to 41 when
   * (1 + eps) is not exactly representable. */
  double avg = (double)c.p * c.rf / c.n;
  c.cap = (uint32_t)ceil((1.0 + opts->eps) * avg - 1e-9);
  if (c.cap < 1) c.cap = 1;
  c.top = qv_malloc((size_t)c.p * c.depth * sizeof *c.top);
  c.n_top = qv_calloc(c.p, sizeof *c.n_top);
  c.holds = qv_calloc((size_t)c.p * c.n, 1);
  c.cnt = qv_calloc(c.p, sizeof *c.cnt);
  c.stamp = qv_calloc(c.n, sizeof *c.stamp);
  pl->replicas = qv_malloc((size_t)c.p * c.rf * sizeof *pl->replicas);
  pl->load = qv_calloc(c.n, sizeof *pl->load);
  c.rep = pl->replicas;
  c.load = pl->load;
  if (!c.top || !c.n_top || !c.holds || !c.cnt || !c.stamp || !pl->replicas ||
      !pl->load)
    rc = QV_ENOMEM;
  if (rc == QV_OK)
    rc = opts->algo == RING_VNODES
             ? rank_vnodes(&c, pl->members, opts)
             : rank_rendezvous(&c, pl->members, opts->salt);
  if (rc == QV_OK) rc = grant_all(&c);
  if (rc != QV_OK) {
    qv_err_set(err, rc, "ring: no memory for %u shards x %u members", c.p, c.n);
    goto out;
  }
  order_replicas(&c);
  pl->n_shards = c.p;
  pl->rf = c.rf;
  pl->cap = c.cap;
out:
  ctx_free(&c);
  if (rc != QV_OK) {
    ring_placement_free(pl);
    return rc;
  }
  *out = pl;
  return QV_OK;
}

static uint32_t member_index(const ring_placement *p, const char *node) {
  size_t lo = 0, hi = p->n_members;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(p->members[mid], node);
    if (c == 0) return (uint32_t)mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NONE;
}

const char *ring_replica(const ring_placement *p, uint32_t shard, uint32_t k) {
  if (p == NULL || shard >= p->n_shards || k >= p->rf) return NULL;
  return p->members[p->replicas[(size_t)shard * p->rf + k]];
}

bool ring_holds(const ring_placement *p, uint32_t shard, const char *node) {
  if (p == NULL || shard >= p->n_shards) return false;
  uint32_t m = member_index(p, node);
  if (m == NONE) return false;
  for (uint32_t k = 0; k < p->rf; k++)
    if (p->replicas[(size_t)shard * p->rf + k] == m) return true;
  return false;
}

void ring_diff_free(ring_diff *d) {
  if (d == NULL) return;
  qv_free(d->moves);
  memset(d, 0, sizeof *d);
}

/* Appends the copies of `a` that `b` lacks, shard by shard, as adds (when
 * `a` is the new placement) or removes. */
static size_t collect(const ring_placement *a, const ring_placement *b,
                      bool is_add, ring_move *moves) {
  size_t n = 0;
  for (uint32_t s = 0; s < a->n_shards; s++)
    for (uint32_t k = 0; k < a->rf; k++) {
      const char *node = a->members[a->replicas[(size_t)s * a->rf + k]];
      if (ring_holds(b, s, node)) continue;
      if (moves) moves[n] = (ring_move){s, is_add, node};
      n++;
    }
  return n;
}

qv_rc ring_placement_diff(const ring_placement *from, const ring_placement *to,
                          ring_diff *out, qv_err *err) {
  if (from->n_shards != to->n_shards)
    return qv_err_set(err, QV_EINVAL, "ring diff: %u shards before, %u after",
                      from->n_shards, to->n_shards);
  size_t n_add = collect(to, from, true, NULL);
  size_t n_rm = collect(from, to, false, NULL);
  ring_move *moves = NULL;
  if (n_add + n_rm > 0) {
    moves = qv_malloc((n_add + n_rm) * sizeof *moves);
    if (moves == NULL)
      return qv_err_set(err, QV_ENOMEM, "ring diff: no memory");
    collect(to, from, true, moves);
    collect(from, to, false, moves + n_add);
  }
  out->moves = moves;
  out->n_moves = n_add + n_rm;
  out->n_adds = n_add;
  return QV_OK;
}
