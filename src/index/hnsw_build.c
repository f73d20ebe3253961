/* hnsw_build.c: parallel construction of an HNSW graph (Algorithms 1, 2
 * and 4 of Malkov & Yashunin, "Efficient and robust approximate nearest
 * neighbor search using Hierarchical Navigable Small World graphs").
 *
 * Owns hnsw_build. Does not search finished graphs (hnsw_search.c) or touch
 * files (hnsw_io.c).
 *
 * Concurrency: params->n_threads threads (the caller's included) take rows
 * from an atomic counter and insert them. Each node has a one-byte spinlock
 * guarding its link lists at every level; a thread holds at most one node
 * lock at a time (it copies a list out under the lock, then computes
 * distances unlocked), so there is no lock order to get wrong. The entry
 * point and top level are guarded by `global`; a thread inserting a node
 * above the current top keeps `global` for its whole insertion, so that no
 * insertion starts from an entry whose upper lists are still empty (rare:
 * about log_m(n) times per build). Everything touched is this graph's own
 * memory, so a build never blocks the rest of the process.
 *
 * Determinism: levels are drawn for all rows up front from the seed, and
 * with one thread rows are inserted in order 0..n-1, so one thread and one
 * seed always give the same graph, byte for byte. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "index/hnsw_int.h"

typedef struct build {
  hnsw *h;
  uint8_t *locks; /* one spinlock per node */
  pthread_mutex_t global;
  uint32_t next; /* atomic: next row to insert */
  int failed;    /* atomic: a worker ran out of memory */
} build;

typedef struct worker {
  build *b;
  hnsw_scratch s;
  hnsw_pair *sorted; /* the beam's result, ascending; ef_construct + 1 */
  hnsw_pair *sel;    /* selected neighbours; 3m + 1 */
  hnsw_pair *pool;   /* candidates while pruning a full list; 3m + 1 */
  hnsw_pair *chosen; /* r's neighbours, m per level, (HNSW_LEVEL_MAX + 1) m */
  uint32_t n_chosen[HNSW_LEVEL_MAX + 1];
  pthread_t tid;
} worker;

/* ---- node locks --------------------------------------------------------- */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static void node_lock(build *b, uint32_t r) {
  uint8_t *l = &b->locks[r];
  unsigned spins = 0;
  while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) {
    while (__atomic_load_n(l, __ATOMIC_RELAXED)) {
      /* The holder may have been descheduled on a shared machine; spinning
       * through its whole time slice would waste ours. */
      if (++spins < 128) {
        cpu_relax();
      } else {
        sched_yield();
        spins = 0;
      }
    }
  }
}

static void node_unlock(build *b, uint32_t r) {
  __atomic_store_n(&b->locks[r], 0, __ATOMIC_RELEASE);
}

/* Copies the list of `r` at level lc into ids; returns its count. */
static uint32_t copy_list(build *b, uint32_t r, uint32_t lc, uint32_t *ids) {
  node_lock(b, r);
  const uint32_t *l = hnsw_list(b->h, r, lc);
  uint32_t cnt = l[0];
  memcpy(ids, l + 1, (size_t)cnt * sizeof *ids);
  node_unlock(b, r);
  return cnt;
}

/* ---- levels ------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* floor(-ln(U) * mL) with U uniform in (0, 1] and mL = 1 / ln(m): the level
 * distribution of the paper, which makes each level about m times sparser
 * than the one below. */
static uint8_t draw_level(uint64_t *state, double ml) {
  double u = (double)((splitmix64(state) >> 11) + 1) * 0x1.0p-53;
  double l = -log(u) * ml;
  return l >= (double)HNSW_LEVEL_MAX ? (uint8_t)HNSW_LEVEL_MAX : (uint8_t)l;
}

/* ---- search during construction -------------------------------------- */

/* Moves (ep, *ep_d) greedily to the nearest node of level lc. */
static void greedy_locked(worker *w, const float *q, uint32_t lc, uint32_t *ep,
                          float *ep_d) {
  const hnsw *h = w->b->h;
  uint32_t *ids = w->s.ids;
  bool changed = true;
  while (changed) {
    changed = false;
    uint32_t cnt = copy_list(w->b, *ep, lc, ids);
    for (uint32_t i = 0; i < cnt; i++) {
      float d = h->dist(q, hnsw_vec(h, ids[i]), h->dim);
      if (d < *ep_d) {
        *ep_d = d;
        *ep = ids[i];
        changed = true;
      }
    }
  }
}

/* Beam search of width ef at level lc from ep (Algorithm 2), never entering
 * `self`. Leaves the result ascending in w->sorted; returns its size.
 * Errors: QV_ENOMEM (candidate heap). */
static qv_rc beam_locked(worker *w, const float *q, uint32_t self, uint32_t ep,
                         float ep_d, uint32_t lc, size_t *n_out) {
  const hnsw *h = w->b->h;
  hnsw_scratch *s = &w->s;
  uint32_t ef = h->ef_construct;
  qv_rc rc = hnsw_scratch_begin(s, h->n, ef, 2 * h->m, NULL);
  if (rc != QV_OK) return rc;
  uint16_t *vis = s->visited, tag = s->epoch;
  size_t n_cand = 0, n_res = 0;
  const size_t vec_bytes = (size_t)h->dim * sizeof(float);
  vis[self] = tag;
  vis[ep] = tag;
  heap_min_push(s->cand, &n_cand, (hnsw_pair){ep_d, ep});
  heap_max_push(s->res, &n_res, (hnsw_pair){ep_d, ep});
  float lower = ep_d;
  while (n_cand > 0) {
    hnsw_pair c = s->cand[0];
    if (c.d > lower && n_res >= ef) break;
    heap_min_pop(s->cand, &n_cand);
    uint32_t cnt = copy_list(w->b, c.id, lc, s->ids);
    uint32_t nn = 0;
    for (uint32_t i = 0; i < cnt; i++) {
      uint32_t id = s->ids[i];
      if (vis[id] == tag) continue;
      vis[id] = tag;
      s->ids[nn++] = id;
    }
    if (nn > 0) hnsw_prefetch_vec(hnsw_vec(h, s->ids[0]), vec_bytes);
    for (uint32_t i = 0; i < nn; i++) {
      uint32_t id = s->ids[i];
      if (i + 1 < nn) hnsw_prefetch_vec(hnsw_vec(h, s->ids[i + 1]), vec_bytes);
      float d = h->dist(q, hnsw_vec(h, id), h->dim);
      if (n_res < ef || d < lower) {
        if (n_cand + 1 > s->cap_cand) {
          rc = hnsw_scratch_grow_cand(s);
          if (rc != QV_OK) return rc;
        }
        heap_min_push(s->cand, &n_cand, (hnsw_pair){d, id});
        if (n_res < ef)
          heap_max_push(s->res, &n_res, (hnsw_pair){d, id});
        else
          heap_max_replace_top(s->res, n_res, (hnsw_pair){d, id});
        lower = s->res[0].d;
      }
    }
    if (n_cand > 0) {
      /* The next node to expand: its lock and list are touched next. */
      __builtin_prefetch(&w->b->locks[s->cand[0].id], 1);
      __builtin_prefetch(hnsw_list(h, s->cand[0].id, lc));
    }
  }
  heap_max_drain_sorted(s->res, n_res, w->sorted);
  *n_out = n_res;
  return QV_OK;
}

/* ---- neighbour selection (Algorithm 4) -------------------------------- */

/* Picks up to `max` of cand[0..n) (ascending distance to the base node),
 * keeping a candidate only if it is closer to the base than to every one
 * already kept: this spreads links over directions instead of spending them
 * all inside one dense cluster, which is what keeps the graph navigable.
 * With fewer than `max` candidates all are kept, as the reference
 * implementation does (nothing would be gained by dropping links to a
 * sparse neighbourhood). */
static size_t select_heuristic(const hnsw *h, const hnsw_pair *cand, size_t n,
                               uint32_t max, hnsw_pair *out) {
  if (n < max) {
    memcpy(out, cand, n * sizeof *out);
    return n;
  }
  size_t k = 0;
  for (size_t i = 0; i < n && k < max; i++) {
    const float *v = hnsw_vec(h, cand[i].id);
    bool good = true;
    for (size_t j = 0; j < k; j++) {
      if (h->dist(v, hnsw_vec(h, out[j].id), h->dim) < cand[i].d) {
        good = false;
        break;
      }
    }
    if (good) out[k++] = cand[i];
  }
  return k;
}

/* Insertion sort by (d, id): lists are at most 3m + 1 long. */
static void sort_pairs(hnsw_pair *p, size_t n) {
  for (size_t i = 1; i < n; i++) {
    hnsw_pair x = p[i];
    size_t j = i;
    while (j > 0 &&
           (p[j - 1].d > x.d || (p[j - 1].d == x.d && p[j - 1].id > x.id))) {
      p[j] = p[j - 1];
      j--;
    }
    p[j] = x;
  }
}

static bool list_has(const uint32_t *l, uint32_t id) {
  for (uint32_t i = 0; i < l[0]; i++)
    if (l[1 + i] == id) return true;
  return false;
}

/* Adds `id` (at distance d from `base`) to base's list at level lc, pruning
 * with the heuristic when the list is full. Caller holds base's lock. */
static void add_link(worker *w, uint32_t base, uint32_t lc, uint32_t id,
                     float d) {
  const hnsw *h = w->b->h;
  uint32_t *l = hnsw_list(h, base, lc);
  uint32_t cap = lc == 0 ? 2 * h->m : h->m;
  if (list_has(l, id)) return;
  if (l[0] < cap) {
    l[1 + l[0]] = id;
    l[0]++;
    return;
  }
  const float *bv = hnsw_vec(h, base);
  size_t n = 0;
  for (uint32_t i = 0; i < l[0]; i++)
    w->pool[n++] =
        (hnsw_pair){h->dist(bv, hnsw_vec(h, l[1 + i]), h->dim), l[1 + i]};
  w->pool[n++] = (hnsw_pair){d, id};
  sort_pairs(w->pool, n);
  size_t k = select_heuristic(h, w->pool, n, cap, w->sel);
  for (size_t i = 0; i < k; i++) l[1 + i] = w->sel[i].id;
  l[0] = (uint32_t)k;
}

/* Writes r's own list at level lc from its selection. Caller holds r's
 * lock. Normally the list is still empty (r is unreachable until its
 * back-links exist); the merge keeps any link that got there first anyway. */
static void write_own_list(worker *w, uint32_t r, uint32_t lc,
                           const hnsw_pair *chosen, size_t k) {
  uint32_t *l = hnsw_list(w->b->h, r, lc);
  if (l[0] == 0) {
    for (size_t i = 0; i < k; i++) l[1 + i] = chosen[i].id;
    l[0] = (uint32_t)k;
  } else {
    for (size_t i = 0; i < k; i++)
      add_link(w, r, lc, chosen[i].id, chosen[i].d);
  }
}

/* ---- insertion (Algorithm 1) ------------------------------------------ */

/* Inserts row r in three phases: (1) search every level from the top down
 * and choose r's neighbours on each; (2) write all of r's own lists; (3) add
 * the back-links. Only (3) makes r reachable, so any thread that reaches r,
 * on any level, finds r's lists on every level below already complete. (With
 * the levels interleaved, a thread could reach r on level 1 and start its
 * level-0 beam from r's still empty level-0 list, ending with one neighbour
 * and, once that one pruned it, an unreachable node.) */
static qv_rc insert(worker *w, uint32_t r) {
  build *b = w->b;
  hnsw *h = b->h;
  uint32_t level = h->levels[r];
  pthread_mutex_lock(&b->global);
  uint32_t ep = h->entry, top = h->max_level;
  bool holds_global = level > top;
  if (!holds_global) pthread_mutex_unlock(&b->global);

  const float *q = hnsw_vec(h, r);
  float ep_d = h->dist(q, hnsw_vec(h, ep), h->dim);
  for (uint32_t lc = top; lc > level; lc--) greedy_locked(w, q, lc, &ep, &ep_d);
  uint32_t start = level < top ? level : top;
  qv_rc rc = QV_OK;
  for (uint32_t lc = start; lc != UINT32_MAX; lc--) {
    size_t n_sorted = 0;
    rc = beam_locked(w, q, r, ep, ep_d, lc, &n_sorted);
    if (rc != QV_OK) break;
    /* The nearest node found is the entry for the level below. */
    ep = w->sorted[0].id;
    ep_d = w->sorted[0].d;
    w->n_chosen[lc] = (uint32_t)select_heuristic(h, w->sorted, n_sorted, h->m,
                                                 w->chosen + (size_t)lc * h->m);
  }
  if (rc == QV_OK) {
    node_lock(b, r);
    for (uint32_t lc = 0; lc <= start; lc++)
      write_own_list(w, r, lc, w->chosen + (size_t)lc * h->m, w->n_chosen[lc]);
    node_unlock(b, r);
    for (uint32_t lc = start; lc != UINT32_MAX; lc--) {
      const hnsw_pair *c = w->chosen + (size_t)lc * h->m;
      for (uint32_t i = 0; i < w->n_chosen[lc]; i++) {
        node_lock(b, c[i].id);
        add_link(w, c[i].id, lc, r, c[i].d);
        node_unlock(b, c[i].id);
      }
    }
  }
  if (holds_global) {
    if (rc == QV_OK) {
      h->entry = r;
      h->max_level = level;
    }
    pthread_mutex_unlock(&b->global);
  }
  return rc;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  build *b = w->b;
  for (;;) {
    if (__atomic_load_n(&b->failed, __ATOMIC_RELAXED)) break;
    uint32_t r = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
    if (r >= b->h->n) break;
    if (insert(w, r) != QV_OK) {
      __atomic_store_n(&b->failed, 1, __ATOMIC_RELAXED);
      break;
    }
  }
  return NULL;
}

static void worker_release(worker *w) {
  qv_free(w->s.visited);
  qv_free(w->s.cand);
  qv_free(w->s.res);
  qv_free(w->s.ids);
  qv_free(w->sorted);
  qv_free(w->sel);
  qv_free(w->pool);
  qv_free(w->chosen);
}

static qv_rc worker_init(worker *w, build *b) {
  const hnsw *h = b->h;
  memset(w, 0, sizeof *w);
  w->b = b;
  size_t pool = 3 * (size_t)h->m + 1;
  w->sorted = qv_malloc(((size_t)h->ef_construct + 1) * sizeof(hnsw_pair));
  w->sel = qv_malloc(pool * sizeof(hnsw_pair));
  w->pool = qv_malloc(pool * sizeof(hnsw_pair));
  w->chosen =
      qv_malloc((HNSW_LEVEL_MAX + 1) * (size_t)h->m * sizeof(hnsw_pair));
  if (w->sorted == NULL || w->sel == NULL || w->pool == NULL ||
      w->chosen == NULL)
    return QV_ENOMEM;
  /* Size the visited set and heaps now so that the workers only allocate if
   * a beam outgrows its candidate heap. */
  return hnsw_scratch_begin(&w->s, h->n, h->ef_construct, 2 * h->m, NULL);
}

/* ---- the entry point ---------------------------------------------------- */

static qv_rc check_params(const float *vecs, uint32_t n, uint32_t dim,
                          const hnsw_params *p, qv_err *err) {
  if (vecs == NULL || n == 0 || dim == 0)
    return qv_err_set(err, QV_EINVAL, "hnsw: need vectors (n = %u, dim = %u)",
                      n, dim);
  if (n == UINT32_MAX)
    return qv_err_set(err, QV_EINVAL, "hnsw: %u rows, at most %u", n,
                      UINT32_MAX - 1);
  if (p == NULL) return qv_err_set(err, QV_EINVAL, "hnsw: no parameters");
  if (p->m < HNSW_M_MIN || p->m > HNSW_M_MAX)
    return qv_err_set(err, QV_EINVAL, "hnsw: m = %u, expected %u..%u", p->m,
                      HNSW_M_MIN, HNSW_M_MAX);
  if (p->ef_construct < HNSW_EF_CONSTRUCT_MIN ||
      p->ef_construct > HNSW_EF_CONSTRUCT_MAX)
    return qv_err_set(
        err, QV_EINVAL, "hnsw: ef_construct = %u, expected %u..%u",
        p->ef_construct, HNSW_EF_CONSTRUCT_MIN, HNSW_EF_CONSTRUCT_MAX);
  if (p->n_threads == 0)
    return qv_err_set(err, QV_EINVAL, "hnsw: n_threads = 0, expected >= 1");
  return QV_OK;
}

/* Allocates levels, up_first, l0 and up of a fresh graph, all zeroed (zero
 * padding makes saved files byte-identical for identical graphs). */
static qv_rc alloc_graph(hnsw *h, uint64_t seed, qv_err *err) {
  h->levels = qv_malloc(h->n);
  h->up_first = qv_malloc((size_t)h->n * sizeof *h->up_first);
  size_t l0_bytes = (size_t)h->n * h->l0_stride * sizeof(uint32_t);
  h->l0 = qv_malloc_aligned(l0_bytes);
  if (h->levels == NULL || h->up_first == NULL || h->l0 == NULL)
    return qv_err_set(err, QV_ENOMEM, "hnsw: no memory for %u nodes", h->n);
  memset(h->l0, 0, l0_bytes);
  double ml = 1.0 / log((double)h->m);
  uint64_t state = seed;
  for (uint32_t r = 0; r < h->n; r++) h->levels[r] = draw_level(&state, ml);
  h->n_up_slots = hnsw_index_levels(h->levels, h->n, h->up_first);
  if (h->n_up_slots == UINT64_MAX)
    return qv_err_set(err, QV_EINVAL, "hnsw: too many upper-level slots");
  if (h->n_up_slots > 0) {
    size_t up_bytes = (size_t)h->n_up_slots * h->up_stride * sizeof(uint32_t);
    h->up = qv_malloc_aligned(up_bytes);
    if (h->up == NULL)
      return qv_err_set(err, QV_ENOMEM, "hnsw: no memory for upper levels");
    memset(h->up, 0, up_bytes);
  }
  return QV_OK;
}

qv_rc hnsw_build(const float *vecs, uint32_t n, uint32_t dim, vec_metric metric,
                 const hnsw_params *params, hnsw **out, qv_err *err) {
  qv_rc rc = check_params(vecs, n, dim, params, err);
  if (rc != QV_OK) return rc;
  hnsw *h = NULL;
  rc = hnsw_alloc_shell(vecs, n, dim, metric, params->m, &h, err);
  if (rc != QV_OK) return rc;
  h->ef_construct = params->ef_construct;
  rc = alloc_graph(h, params->seed, err);
  if (rc != QV_OK) {
    hnsw_free(h);
    return rc;
  }

  uint32_t n_threads = params->n_threads, started = 0;
  if (n_threads > n) n_threads = n;
  build b = {.h = h, .next = 1};
  b.locks = qv_calloc(n, 1);
  worker *ws = qv_calloc(n_threads, sizeof *ws);
  if (b.locks == NULL || ws == NULL) {
    rc = qv_err_set(err, QV_ENOMEM, "hnsw: no memory for build state");
    goto out;
  }
  pthread_mutex_init(&b.global, NULL);
  for (uint32_t t = 0; t < n_threads; t++) {
    if (worker_init(&ws[t], &b) != QV_OK) {
      rc = qv_err_set(err, QV_ENOMEM, "hnsw: no memory for build workers");
      goto out_workers;
    }
  }
  /* Row 0 is the first entry point; it has no links until others arrive. */
  h->entry = 0;
  h->max_level = h->levels[0];
  for (uint32_t t = 1; t < n_threads; t++) {
    /* Fewer threads than asked is only slower, never wrong. */
    if (pthread_create(&ws[t].tid, NULL, worker_main, &ws[t]) != 0) break;
    started++;
  }
  worker_main(&ws[0]);
  for (uint32_t t = 1; t <= started; t++) pthread_join(ws[t].tid, NULL);
  if (b.failed)
    rc = qv_err_set(err, QV_ENOMEM, "hnsw: no memory while inserting");

out_workers:
  for (uint32_t t = 0; t < n_threads; t++) worker_release(&ws[t]);
  pthread_mutex_destroy(&b.global);
out:
  qv_free(ws);
  qv_free(b.locks);
  if (rc != QV_OK) {
    hnsw_free(h);
    return rc;
  }
  *out = h;
  return QV_OK;
}
