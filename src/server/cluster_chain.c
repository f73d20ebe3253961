/* cluster_chain.c: each shard's write chain — the primary's replication
 * backlog and every copy's persisted marker — so that a copy that comes
 * back after missing some writes is sent just those writes (a delta)
 * instead of being wiped and copied again.
 *
 * The chain of shard k is the sequence of writes its primaries applied, in
 * order; each write has a link `at` = (term, seq) and names its predecessor
 * `prev`. The primary keeps the writes of its term in a bounded in-memory
 * backlog (like Redis's replication backlog) and sends `prev` with every
 * replicated write. Every copy — the primary included — persists a marker:
 * the link of the last write it applied *while following the chain*.
 *
 *   marker VALID(m):  the copy holds exactly the chain up to m. A write
 *                     whose prev is m advances it; any other prev means the
 *                     copy missed something or has something the primary
 *                     lacks (after a change of primary): the write is
 *                     refused (412) and the primary reports the copy stale,
 *                     so it is refilled instead of silently differing.
 *   marker ABSENT:    a copy just created. It adopts the chain when the
 *                     write follows the root of an empty shard and the copy
 *                     is empty; otherwise it becomes BROKEN.
 *   marker BROKEN:    content unknown to the chain (being refilled, or an
 *                     older version's copy): writes apply, the marker stays
 *                     BROKEN until a full transfer ends (clg_set).
 *
 * A new primary starts its term's chain at its own marker when VALID, so
 * copies that followed the same predecessor continue without a copy; else
 * at a new root (its content as it is). A returning copy with VALID(m) is
 * caught up by replaying the backlog after m when m is in it (cluster_xfer.c).
 *
 * Durability: a VALID advance is a plain pwrite after the write is applied
 * (no fsync: it can only lag the data by the last write, and replaying a
 * write already applied — upsert, delete, payload and vector assignments —
 * gives the same state); the transitions to BROKEN and ABSENT are written
 * atomically with fsync before the copy's content changes under them, so a
 * crash can never leave a VALID marker over a half-refilled copy.
 *
 * Not owned: the shard lock that orders all of this (cluster_xfer.c), the
 * messages (routes_cluster.c). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/fileio.h"
#include "base/log.h"
#include "server/cluster_int.h"

/* Per shard, the backlog keeps at most this many of its newest writes, and
 * at most --cluster-backlog-bytes of their bodies (0: no backlog, every
 * returning copy is copied in full). */
#define BACKLOG_MAX_ENTRIES 200000u
#define MARK_MAGIC 0x4d435651u /* "QVCM" */

enum { MARK_ABSENT, MARK_VALID, MARK_BROKEN };

typedef struct chain {
  char coll[CL_NAME_MAX + 1];
  uint32_t k;
  bool loaded;
  int mstate;
  int fd; /* the marker file, kept open for advances; -1 when not open */
  cl_link mark;
  /* as primary of `term` */
  bool leading;
  uint64_t term;
  cl_link base, floor; /* floor: prev of the oldest retained entry */
  bool base_root_empty;
  clg_entry *e;
  size_t first, n, cap, bytes; /* live entries are e[first .. n) */
} chain;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static chain *g_ch;
static size_t g_n, g_cap;

static bool link_eq(cl_link a, cl_link b) { return a.term == b.term && a.seq == b.seq; }

static void mark_path(srv *s, const char *coll, uint32_t k, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/cluster_chain/%s.s%u", s->cfg.data_dir, coll, k);
}

typedef struct mark_rec {
  uint32_t magic, state;
  uint64_t term, seq;
  uint32_t crc, pad;
} mark_rec;

static void mark_load(srv *s, chain *c) {
  char path[PATH_MAX];
  mark_path(s, c->coll, c->k, path, sizeof path);
  c->mstate = MARK_ABSENT;
  c->loaded = true;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  mark_rec m;
  ssize_t got = pread(fd, &m, sizeof m, 0);
  close(fd);
  if (got != (ssize_t)sizeof m || m.magic != MARK_MAGIC ||
      m.crc != crc32c(&m, offsetof(mark_rec, crc)) || m.state > MARK_BROKEN) {
    c->mstate = MARK_BROKEN; /* torn or foreign: trust nothing */
    qv_log(QV_LOG_WARN, "cluster", "chain marker %s is unreadable: the copy will be refilled",
           path);
    return;
  }
  c->mstate = (int)m.state;
  c->mark = (cl_link){m.term, m.seq};
}

static void mark_close(chain *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
}

/* Persists c's marker; `sync`: atomically with fsync (a transition the copy's
 * content is about to depend on). */
static void mark_store(srv *s, chain *c, bool sync) {
  char path[PATH_MAX], dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/cluster_chain", s->cfg.data_dir);
  mark_path(s, c->coll, c->k, path, sizeof path);
  mark_rec m = {MARK_MAGIC, (uint32_t)c->mstate, c->mark.term, c->mark.seq, 0, 0};
  m.crc = crc32c(&m, offsetof(mark_rec, crc));
  qv_err err = {0};
  if ((sync || c->fd < 0) && fileio_mkdirs(dir, &err) != QV_OK) {
    qv_log(QV_LOG_WARN, "cluster", "chain marker directory %s: %s", dir, err.msg);
    return;
  }
  if (sync) {
    /* A new file is renamed over the old one: the open one is stale. */
    mark_close(c);
    if (fileio_write_atomic(path, &m, sizeof m, &err) != QV_OK)
      qv_log(QV_LOG_WARN, "cluster", "chain marker %s: %s", path, err.msg);
    return;
  }
  /* Advances come with every replicated write: one pwrite on a file kept
   * open, not open + write + close. */
  if (c->fd < 0) c->fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (c->fd < 0 || pwrite(c->fd, &m, sizeof m, 0) != (ssize_t)sizeof m) {
    qv_log(QV_LOG_WARN, "cluster", "chain marker %s: %s", path, strerror(errno));
    mark_close(c);
  }
}

/* The chain record of (coll, k), loading its marker on first use (g_mu held). */
static chain *get(srv *s, const char *coll, uint32_t k) {
  for (size_t i = 0; i < g_n; i++)
    if (g_ch[i].k == k && !strcmp(g_ch[i].coll, coll)) return &g_ch[i];
  if (strlen(coll) > CL_NAME_MAX) return NULL;
  if (g_n == g_cap) {
    size_t cap = g_cap ? 2 * g_cap : 32;
    chain *v = qv_realloc(g_ch, cap * sizeof *v);
    if (v == NULL) return NULL;
    g_ch = v;
    g_cap = cap;
  }
  chain *c = &g_ch[g_n++];
  memset(c, 0, sizeof *c);
  snprintf(c->coll, sizeof c->coll, "%s", coll);
  c->k = k;
  c->fd = -1;
  mark_load(s, c);
  return c;
}

static void entries_drop(chain *c) {
  for (size_t i = c->first; i < c->n; i++) qv_free(c->e[i].body);
  qv_free(c->e);
  c->e = NULL;
  c->first = c->n = c->cap = c->bytes = 0;
}

static uint64_t local_count(srv *s, const char *coll, uint32_t k) {
  char sn[CL_NAME_MAX + 16];
  clr_shard_name(coll, k, sn, sizeof sn);
  qv_collection *h = NULL;
  uint64_t n = UINT64_MAX;
  if (qv_collection_get(s->db, sn, &h, NULL) == QV_OK) {
    if (qv_count(h, &n, NULL) != QV_OK) n = UINT64_MAX;
    qv_collection_release(h);
  }
  return n;
}

void clg_lead(srv *s, const char *coll, uint32_t k, uint64_t term, uint64_t first_seq) {
  pthread_mutex_lock(&g_mu);
  chain *c = get(s, coll, k);
  if (c && (!c->leading || c->term != term)) {
    entries_drop(c);
    c->leading = true;
    c->term = term;
    if (c->mstate == MARK_VALID) {
      c->base = c->mark;
      c->base_root_empty = false;
    } else {
      /* This node's content is the truth of its term: a new root. */
      c->base = (cl_link){term, first_seq - 1};
      c->base_root_empty = local_count(s, coll, k) == 0;
      c->mstate = MARK_VALID;
      c->mark = c->base;
      mark_store(s, c, true);
    }
    c->floor = c->base;
    qv_log(QV_LOG_INFO, "cluster", "%s shard %u: leading term %" PRIu64 " from (%" PRIu64
           ", %" PRIu64 ")%s", coll, k, term, c->base.term, c->base.seq,
           c->base_root_empty ? ", an empty root" : "");
  }
  pthread_mutex_unlock(&g_mu);
}

/* Drops the oldest entries until the backlog fits (g_mu held). */
static void trim(chain *c, uint64_t max_bytes) {
  size_t drop = c->first;
  while (drop < c->n && (c->bytes > max_bytes || c->n - drop > BACKLOG_MAX_ENTRIES)) {
    c->floor = c->e[drop].at;
    c->bytes -= c->e[drop].len;
    qv_free(c->e[drop].body);
    drop++;
  }
  c->first = drop;
  if (c->first > 0 && c->first >= c->n / 2) {
    memmove(c->e, c->e + c->first, (c->n - c->first) * sizeof *c->e);
    c->n -= c->first;
    c->first = 0;
  }
}

void clg_append(srv *s, const char *coll, uint32_t k, cl_link at, int op, const char *body,
                size_t len, cl_link *prev, bool *root_empty) {
  pthread_mutex_lock(&g_mu);
  chain *c = get(s, coll, k);
  *prev = (cl_link){0, 0};
  *root_empty = false;
  if (c && c->leading) {
    cl_link head = c->n > c->first ? c->e[c->n - 1].at : c->base;
    *prev = head;
    *root_empty = link_eq(head, c->base) && c->base_root_empty;
    bool logged = false;
    if (c->n == c->cap) {
      size_t cap = c->cap ? 2 * c->cap : 256;
      clg_entry *v = qv_realloc(c->e, cap * sizeof *v);
      if (v) c->e = v, c->cap = cap;
    }
    char *copy = c->n < c->cap ? qv_strndup(body, len) : NULL;
    if (copy) {
      c->e[c->n++] = (clg_entry){at, head, op, copy, len};
      c->bytes += len;
      logged = true;
      trim(c, s->cfg.cluster_backlog_bytes);
    }
    if (!logged) { /* out of memory: no delta can start before this write */
      entries_drop(c);
      c->base = c->floor = at;
      c->base_root_empty = false;
    }
    /* The primary's content is its term's chain: its marker follows. */
    c->mstate = MARK_VALID;
    c->mark = at;
    mark_store(s, c, false);
  }
  pthread_mutex_unlock(&g_mu);
}

clg_verdict clg_check(srv *s, const char *coll, uint32_t k, cl_link prev, bool root_empty) {
  pthread_mutex_lock(&g_mu);
  chain *c = get(s, coll, k);
  clg_verdict v = CLG_UNKNOWN;
  if (c && c->mstate == MARK_VALID) v = link_eq(c->mark, prev) ? CLG_FOLLOWS : CLG_BROKEN;
  else if (c && c->mstate == MARK_ABSENT && root_empty && local_count(s, coll, k) == 0)
    v = CLG_ADOPTS;
  if (c) c->leading = false; /* a copy now: any backlog it had is another term's */
  pthread_mutex_unlock(&g_mu);
  return v;
}

void clg_describe(srv *s, const char *coll, uint32_t k, char *buf, size_t cap) {
  pthread_mutex_lock(&g_mu);
  chain *c = get(s, coll, k);
  if (c == NULL) snprintf(buf, cap, "unknown");
  else if (c->mstate == MARK_VALID)
    snprintf(buf, cap, "(%" PRIu64 ", %" PRIu64 ")", c->mark.term, c->mark.seq);
  else snprintf(buf, cap, "%s", c->mstate == MARK_ABSENT ? "absent" : "broken");
  pthread_mutex_unlock(&g_mu);
}

void clg_applied(srv *s, const char *coll, uint32_t k, cl_link at, clg_verdict v) {
  pthread_mutex_lock(&g_mu);
  chain *c = get(s, coll, k);
  if (c && (v == CLG_FOLLOWS || v == CLG_ADOPTS)) {
    c->mstate = MARK_VALID;
    c->mark = at;
    mark_store(s, c, v == CLG_ADOPTS);
  } else if (c && c->mstate != MARK_BROKEN) {
    c->mstate = MARK_BROKEN;
    mark_store(s, c, true);
  }
  pthread_mutex_unlock(&g_mu);
}

static void set_state(srv *s, const char *coll, uint32_t k, int state, cl_link at) {
  pthread_mutex_lock(&g_mu);
  chain *c = get(s, coll, k);
  if (c) {
    c->mstate = state;
    c->mark = at;
    c->leading = false;
    entries_drop(c);
    mark_store(s, c, true);
  }
  pthread_mutex_unlock(&g_mu);
}

void clg_break(srv *s, const char *coll, uint32_t k) {
  set_state(s, coll, k, MARK_BROKEN, (cl_link){0, 0});
}

void clg_forget(srv *s, const char *coll, uint32_t k) {
  set_state(s, coll, k, MARK_ABSENT, (cl_link){0, 0});
}

void clg_set(srv *s, const char *coll, uint32_t k, cl_link at) {
  set_state(s, coll, k, MARK_VALID, at);
}

void clg_remove(srv *s, const char *coll, uint32_t k) {
  char path[PATH_MAX];
  mark_path(s, coll, k, path, sizeof path);
  pthread_mutex_lock(&g_mu);
  for (size_t i = 0; i < g_n; i++)
    if (g_ch[i].k == k && !strcmp(g_ch[i].coll, coll)) {
      entries_drop(&g_ch[i]);
      mark_close(&g_ch[i]);
      g_ch[i] = g_ch[--g_n];
      break;
    }
  unlink(path);
  pthread_mutex_unlock(&g_mu);
}

bool clg_marker(srv *s, const char *coll, uint32_t k, cl_link *at) {
  pthread_mutex_lock(&g_mu);
  chain *c = get(s, coll, k);
  bool valid = c && c->mstate == MARK_VALID;
  if (valid) *at = c->mark;
  pthread_mutex_unlock(&g_mu);
  return valid;
}

bool clg_head(srv *s, const char *coll, uint32_t k, cl_link *at) {
  pthread_mutex_lock(&g_mu);
  chain *c = get(s, coll, k);
  bool ok = c && c->leading;
  if (ok) *at = c->n > c->first ? c->e[c->n - 1].at : c->base;
  pthread_mutex_unlock(&g_mu);
  return ok;
}

bool clg_after(srv *s, const char *coll, uint32_t k, cl_link after, size_t max, clg_entry **out,
               size_t *n_out, size_t *left) {
  *n_out = 0;
  *left = 0;
  if (out) *out = NULL;
  pthread_mutex_lock(&g_mu);
  chain *c = get(s, coll, k);
  bool found = false;
  size_t from = 0;
  if (c && c->leading) {
    if (link_eq(after, c->floor)) found = true, from = c->first;
    for (size_t i = c->first; !found && i < c->n; i++)
      if (link_eq(c->e[i].at, after)) found = true, from = i + 1;
  }
  if (found) {
    *left = c->n - from;
    size_t take = *left < max ? *left : max;
    clg_entry *v = take && out ? qv_calloc(take, sizeof *v) : NULL;
    for (size_t i = 0; v && i < take; i++) {
      v[i] = c->e[from + i];
      v[i].body = qv_strndup(c->e[from + i].body, c->e[from + i].len);
      if (v[i].body == NULL) {
        clg_entries_free(v, i);
        v = NULL;
      }
    }
    if (take && out && v == NULL) found = false;
    else if (out) *out = v, *n_out = take;
  }
  pthread_mutex_unlock(&g_mu);
  return found;
}

void clg_entries_free(clg_entry *e, size_t n) {
  for (size_t i = 0; e && i < n; i++) qv_free(e[i].body);
  qv_free(e);
}

json_t *clg_state_json(void) {
  json_t *arr = json_array();
  pthread_mutex_lock(&g_mu);
  for (size_t i = 0; arr && i < g_n; i++) {
    const chain *c = &g_ch[i];
    json_t *o = json_pack("{s:s, s:i, s:s}", "collection", c->coll, "shard", (int)c->k, "marker",
                          c->mstate == MARK_VALID    ? "valid"
                          : c->mstate == MARK_ABSENT ? "absent"
                                                     : "broken");
    if (o && c->mstate == MARK_VALID)
      json_object_set_new(o, "at", json_pack("[I, I]", (json_int_t)c->mark.term,
                                             (json_int_t)c->mark.seq));
    if (o && c->leading)
      json_object_set_new(o, "backlog",
                          json_pack("{s:I, s:I, s:I}", "term", (json_int_t)c->term, "entries",
                                    (json_int_t)(c->n - c->first), "bytes",
                                    (json_int_t)c->bytes));
    if (o) json_array_append_new(arr, o);
  }
  pthread_mutex_unlock(&g_mu);
  return arr;
}

void clg_reset(void) {
  pthread_mutex_lock(&g_mu);
  for (size_t i = 0; i < g_n; i++) {
    entries_drop(&g_ch[i]);
    mark_close(&g_ch[i]);
  }
  qv_free(g_ch);
  g_ch = NULL;
  g_n = g_cap = 0;
  pthread_mutex_unlock(&g_mu);
}
