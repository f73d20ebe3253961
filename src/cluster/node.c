/* node.c: a node in cluster mode — node id, membership, the watched view of
 * every collection's config and shard map, and the controller loop.
 *
 * Owns: the table of collections (guarded by `mu`, changes broadcast on
 * `cv`), the controller thread. Does not own: HTTP, the engine, shard data
 * (src/server/routes_cluster.c). See node.h for the keys and the
 * invariants; the controller is the only writer of a shard map and writes
 * only through shardmap_cas_write (fenced by its controller token), so a
 * deposed controller's decisions never land. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"
#include "cluster/etcd.h"
#include "cluster/node.h"
#include "cluster/plan.h"
#include "cluster/ring.h"
#include "cluster/shardmap.h"

#define CONTROLLER_TICK_MS 200
#define EVENTS_MAX 256u

typedef struct entry {
  cl_coll c;
  bool has_config;
} entry;

struct cl_node {
  etcd_client *etcd;
  mship *m;
  etcd_watch *w;
  char prefix[MSHIP_PREFIX_MAX + 1];
  char id[CL_ID_MAX + 1];
  uint32_t ttl_s;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  entry *colls;
  size_t n_colls, cap_colls;
  mship_view view; /* live members, under mu */
  pthread_t ctl;
  bool ctl_started, stop;
  uint32_t move_delay_s;
  bool synced; /* the collections watch delivered its first snapshot */
  etcd_watch *dw;  /* <prefix>/drain/ */
  char **draining; /* ids, under mu */
  size_t n_draining;
  /* Event ring (under ev_mu): the last EVENTS_MAX lines, seq-numbered. */
  pthread_mutex_t ev_mu;
  struct {
    uint64_t seq;
    int64_t ms;
    char text[240];
  } ev[EVENTS_MAX];
  uint64_t ev_seq;
};

void cl_coll_free(cl_coll *c) {
  if (c == NULL) return;
  qv_free(c->params);
  qv_free(c->shards);
  qv_free(c->xfers);
  qv_free(c->stale);
  memset(c, 0, sizeof *c);
}

static void coll_copy(cl_coll *dst, const cl_coll *src) {
  *dst = *src;
  dst->params = src->params ? qv_strdup(src->params) : NULL;
  dst->shards = NULL;
  dst->xfers = NULL;
  dst->n_xfers = 0;
  dst->stale = NULL;
  dst->n_stale = 0;
  if (src->n_stale && (dst->stale = qv_malloc(sizeof *src->stale * src->n_stale)) != NULL) {
    memcpy(dst->stale, src->stale, sizeof *src->stale * src->n_stale);
    dst->n_stale = src->n_stale;
  }
  if (src->has_map && src->shards) {
    dst->shards = qv_malloc(sizeof *src->shards * src->shard_number);
    if (dst->shards) memcpy(dst->shards, src->shards, sizeof *src->shards * src->shard_number);
    else dst->has_map = false;
  }
  if (src->n_xfers && (dst->xfers = qv_malloc(sizeof *src->xfers * src->n_xfers)) != NULL) {
    memcpy(dst->xfers, src->xfers, sizeof *src->xfers * src->n_xfers);
    dst->n_xfers = src->n_xfers;
  }
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cl_event(cl_node *n, const char *fmt, ...) {
  char line[240];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  qv_log(QV_LOG_INFO, "cluster", "%s", line);
  pthread_mutex_lock(&n->ev_mu);
  uint64_t seq = ++n->ev_seq;
  __typeof__(n->ev[0]) *e = &n->ev[seq % EVENTS_MAX];
  e->seq = seq;
  e->ms = wall_ms();
  snprintf(e->text, sizeof e->text, "%s", line);
  pthread_mutex_unlock(&n->ev_mu);
}

char *cl_events_json(cl_node *n, uint64_t after) {
  json_t *a = json_array();
  pthread_mutex_lock(&n->ev_mu);
  uint64_t first = n->ev_seq >= EVENTS_MAX ? n->ev_seq - EVENTS_MAX + 1 : 1;
  if (after + 1 > first) first = after + 1;
  for (uint64_t q = first; a && q <= n->ev_seq; q++) {
    const __typeof__(n->ev[0]) *e = &n->ev[q % EVENTS_MAX];
    json_array_append_new(a, json_pack("{s:I, s:I, s:s}", "seq", (json_int_t)e->seq, "ms",
                                       (json_int_t)e->ms, "text", e->text));
  }
  pthread_mutex_unlock(&n->ev_mu);
  char *t = a ? json_dumps(a, JSON_COMPACT) : NULL;
  json_decref(a);
  char *out = t ? qv_strdup(t) : NULL;
  free(t);
  return out;
}

uint64_t cl_peer_id(const char *node_id) { return strtoull(node_id, NULL, 10); }
const char *cl_node_id(const cl_node *n) { return n->id; }
mship *cl_node_mship(cl_node *n) { return n->m; }
bool cl_node_fenced(const cl_node *n) { return mship_is_fenced(n->m); }
uint32_t cl_node_ttl_s(const cl_node *n) { return n->ttl_s; }

uint32_t cl_load_cap(uint32_t copies, uint32_t n_nodes) {
  if (n_nodes == 0) return 0;
  return (uint32_t)ceil(1.25 * copies / n_nodes);
}

/* ---- parsing what etcd holds ------------------------------------------------- */

static bool parse_config(const char *text, size_t len, cl_coll *c) {
  json_t *o = json_loadb(text, len, 0, NULL);
  if (!json_is_object(o)) {
    json_decref(o);
    return false;
  }
  json_int_t p = json_integer_value(json_object_get(o, "shard_number"));
  json_int_t r = json_integer_value(json_object_get(o, "replication_factor"));
  json_t *params = json_object_get(o, "params");
  bool ok = p >= 1 && p <= CL_SHARDS_MAX && r >= 1 && r <= CL_RF_MAX && json_is_object(params);
  if (ok) {
    char *t = json_dumps(params, JSON_COMPACT);
    qv_free(c->params);
    c->params = t ? qv_strdup(t) : NULL;
    free(t);
    c->shard_number = (uint32_t)p;
    c->rf = (uint32_t)r;
    json_int_t w = json_integer_value(json_object_get(o, "write_consistency_factor"));
    c->wcf = w >= 1 && w <= CL_RF_MAX ? (uint32_t)w : 1;
    ok = c->params != NULL;
  }
  json_decref(o);
  return ok;
}

static bool parse_map(const char *text, size_t len, int64_t mod_rev, cl_coll *c) {
  json_t *o = json_loadb(text, len, 0, NULL);
  json_t *shards = json_object_get(o, "shards");
  size_t n = json_array_size(shards);
  bool ok = json_is_object(o) && n >= 1 && n <= CL_SHARDS_MAX;
  cl_shard *sh = ok ? qv_calloc(n, sizeof *sh) : NULL;
  ok = ok && sh != NULL;
  for (size_t i = 0; ok && i < n; i++) {
    json_t *s = json_array_get(shards, i);
    json_t *reps = json_object_get(s, "replicas");
    const char *prim = json_string_value(json_object_get(s, "primary"));
    sh[i].id = (uint32_t)i;
    sh[i].term = (uint64_t)json_integer_value(json_object_get(s, "term"));
    if (prim == NULL || strlen(prim) > CL_ID_MAX || json_array_size(reps) > CL_RF_MAX) {
      ok = false;
      break;
    }
    strcpy(sh[i].primary, prim);
    for (size_t k = 0; k < json_array_size(reps); k++) {
      json_t *rp = json_array_get(reps, k);
      const char *node = json_string_value(json_object_get(rp, "node"));
      const char *st = json_string_value(json_object_get(rp, "state"));
      if (node == NULL || strlen(node) > CL_ID_MAX) {
        ok = false;
        break;
      }
      strcpy(sh[i].reps[k].node, node);
      sh[i].reps[k].state = st && !strcmp(st, "dead")      ? CL_DEAD
                            : st && !strcmp(st, "partial") ? CL_PARTIAL
                                                           : CL_INSYNC;
      sh[i].reps[k].xfer = json_integer_value(json_object_get(rp, "xfer"));
      sh[i].reps[k].dead_ms = json_integer_value(json_object_get(rp, "dead_ms"));
      sh[i].n_reps++;
    }
  }
  if (ok) {
    qv_free(c->shards);
    c->shards = sh;
    c->shard_number = (uint32_t)n;
    c->epoch = json_integer_value(json_object_get(o, "epoch"));
    c->map_rev = mod_rev;
    c->has_map = true;
  } else {
    qv_free(sh);
  }
  json_decref(o);
  return ok;
}

static bool parse_xfer(const char *text, size_t len, uint32_t shard, cl_xfer *x) {
  json_t *o = json_loadb(text, len, 0, NULL);
  const char *from = json_string_value(json_object_get(o, "from"));
  const char *to = json_string_value(json_object_get(o, "to"));
  const char *ph = json_string_value(json_object_get(o, "phase"));
  bool ok = from && to && ph && strlen(from) <= CL_ID_MAX && strlen(to) <= CL_ID_MAX;
  if (ok) {
    memset(x, 0, sizeof *x);
    x->shard = shard;
    strcpy(x->from, from);
    strcpy(x->to, to);
    snprintf(x->phase, sizeof x->phase, "%s", ph);
    x->xfer = json_integer_value(json_object_get(o, "xfer"));
    x->term = (uint64_t)json_integer_value(json_object_get(o, "term"));
    x->copied = (uint64_t)json_integer_value(json_object_get(o, "copied"));
    x->total = (uint64_t)json_integer_value(json_object_get(o, "total"));
    x->started_ms = json_integer_value(json_object_get(o, "started_ms"));
    x->updated_ms = json_integer_value(json_object_get(o, "updated_ms"));
  }
  json_decref(o);
  return ok;
}

static void set_xfer(cl_coll *c, uint32_t shard, const cl_xfer *x) {
  for (size_t i = 0; i < c->n_xfers; i++)
    if (c->xfers[i].shard == shard) {
      if (x) c->xfers[i] = *x;
      else c->xfers[i] = c->xfers[--c->n_xfers];
      return;
    }
  if (x == NULL) return;
  cl_xfer *v = qv_realloc(c->xfers, (c->n_xfers + 1) * sizeof *v);
  if (v == NULL) return;
  c->xfers = v;
  c->xfers[c->n_xfers++] = *x;
}

/* Applies a stale.<shard>.<node> key (value {"from","term"}) to c. */
static void set_stale(cl_coll *c, const char *suffix, const char *val, size_t len,
                      bool is_delete) {
  char *end;
  unsigned long k = strtoul(suffix, &end, 10);
  if (*end != '.' || k >= CL_SHARDS_MAX || strlen(end + 1) > CL_ID_MAX) return;
  const char *node = end + 1;
  for (size_t i = 0; i < c->n_stale; i++)
    if (c->stale[i].shard == k && !strcmp(c->stale[i].node, node)) {
      c->stale[i] = c->stale[--c->n_stale];
      break;
    }
  if (is_delete) return;
  json_t *o = json_loadb(val, len, 0, NULL);
  const char *from = json_string_value(json_object_get(o, "from"));
  cl_stale *v = from && strlen(from) <= CL_ID_MAX
                    ? qv_realloc(c->stale, (c->n_stale + 1) * sizeof *v)
                    : NULL;
  if (v) {
    c->stale = v;
    cl_stale *x = &v[c->n_stale++];
    memset(x, 0, sizeof *x);
    x->shard = (uint32_t)k;
    snprintf(x->node, sizeof x->node, "%s", node);
    snprintf(x->from, sizeof x->from, "%s", from);
    x->term = (uint64_t)json_integer_value(json_object_get(o, "term"));
  }
  json_decref(o);
}

/* ---- the watched table (mu held) ---------------------------------------------- */

static entry *find(cl_node *n, const char *name) {
  for (size_t i = 0; i < n->n_colls; i++)
    if (!strcmp(n->colls[i].c.name, name)) return &n->colls[i];
  return NULL;
}

static entry *find_or_add(cl_node *n, const char *name) {
  entry *e = find(n, name);
  if (e || strlen(name) > CL_NAME_MAX) return e;
  if (n->n_colls == n->cap_colls) {
    size_t cap = n->cap_colls ? 2 * n->cap_colls : 8;
    entry *p = qv_realloc(n->colls, cap * sizeof *p);
    if (p == NULL) return NULL;
    n->colls = p;
    n->cap_colls = cap;
  }
  e = &n->colls[n->n_colls++];
  memset(e, 0, sizeof *e);
  strcpy(e->c.name, name);
  return e;
}

static void drop_entry(cl_node *n, entry *e) {
  cl_coll_free(&e->c);
  *e = n->colls[--n->n_colls];
}

/* Applies one key of <prefix>/collections/. */
static void apply_kv(cl_node *n, const char *key, const char *val, size_t len, int64_t rev,
                     bool is_delete) {
  size_t pl = strlen(n->prefix) + strlen("/collections/");
  if (strlen(key) <= pl) return;
  const char *rest = key + pl, *slash = strrchr(rest, '/');
  if (slash == NULL || (size_t)(slash - rest) > CL_NAME_MAX) return;
  char name[CL_NAME_MAX + 1];
  memcpy(name, rest, (size_t)(slash - rest));
  name[slash - rest] = 0;
  bool is_cfg = !strcmp(slash + 1, "config"), is_map = !strcmp(slash + 1, "shardmap");
  if (!strncmp(slash + 1, "stale.", 6)) {
    entry *e = find(n, name);
    if (e) set_stale(&e->c, slash + 7, val, len, is_delete);
    return;
  }
  if (!strncmp(slash + 1, "xfer.", 5)) {
    char *end;
    unsigned long k = strtoul(slash + 6, &end, 10);
    entry *e = *end == 0 && k < CL_SHARDS_MAX ? find(n, name) : NULL;
    cl_xfer x;
    if (e && is_delete) set_xfer(&e->c, (uint32_t)k, NULL);
    else if (e && parse_xfer(val, len, (uint32_t)k, &x)) set_xfer(&e->c, (uint32_t)k, &x);
    return;
  }
  if (!is_cfg && !is_map) return;
  if (is_delete) {
    entry *e = find(n, name);
    if (e && is_cfg) drop_entry(n, e);
    else if (e) e->c.has_map = false;
    return;
  }
  entry *e = find_or_add(n, name);
  if (e == NULL) return;
  bool ok = is_cfg ? parse_config(val, len, &e->c) : parse_map(val, len, rev, &e->c);
  if (is_cfg && ok) e->has_config = true;
  if (!ok) qv_log(QV_LOG_WARN, "cluster", "ignoring malformed %s", key);
}

static void on_watch(void *ctx, const etcd_watch_msg *m) {
  cl_node *n = ctx;
  pthread_mutex_lock(&n->mu);
  if (m->kind == ETCD_WATCH_SNAPSHOT) {
    n->synced = true;
    while (n->n_colls) drop_entry(n, &n->colls[0]);
    for (size_t i = 0; i < m->n_kvs; i++)
      apply_kv(n, m->kvs[i].key, m->kvs[i].value, m->kvs[i].value_len, m->kvs[i].mod_revision,
               false);
  } else if (m->kind == ETCD_WATCH_EVENTS) {
    for (size_t i = 0; i < m->n_events; i++) {
      const etcd_kv *kv = &m->events[i].kv;
      apply_kv(n, kv->key, kv->value, kv->value_len, kv->mod_revision, m->events[i].is_delete);
    }
  }
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
}

static void on_members(void *ctx, const mship_view *v) {
  cl_node *n = ctx;
  mship_view copy = {0};
  /* The view passed in is borrowed: keep our own copy of it. */
  copy.version = v->version;
  copy.revision = v->revision;
  copy.members = qv_calloc(v->n ? v->n : 1, sizeof *copy.members);
  if (copy.members == NULL) return;
  for (size_t i = 0; i < v->n; i++) {
    copy.members[i].node_id = qv_strdup(v->members[i].node_id);
    copy.members[i].addr = qv_strdup(v->members[i].addr);
    copy.members[i].value = qv_strdup(v->members[i].value);
    copy.members[i].lease = v->members[i].lease;
    copy.members[i].create_revision = v->members[i].create_revision;
    copy.members[i].mod_revision = v->members[i].mod_revision;
    copy.n++;
  }
  pthread_mutex_lock(&n->mu);
  mship_view old = n->view;
  n->view = copy;
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
  mship_view_free(&old);
}

/* ---- queries -------------------------------------------------------------------- */

bool cl_node_addr(cl_node *n, const char *node_id, char *buf, size_t cap) {
  bool found = false;
  pthread_mutex_lock(&n->mu);
  for (size_t i = 0; i < n->view.n; i++)
    if (!strcmp(n->view.members[i].node_id, node_id) && n->view.members[i].addr) {
      snprintf(buf, cap, "%s", n->view.members[i].addr);
      found = true;
      break;
    }
  pthread_mutex_unlock(&n->mu);
  return found;
}

bool cl_node_iaddr(cl_node *n, const char *node_id, char *buf, size_t cap) {
  bool found = false;
  pthread_mutex_lock(&n->mu);
  for (size_t i = 0; i < n->view.n && !found; i++) {
    const mship_member *m = &n->view.members[i];
    if (strcmp(m->node_id, node_id) != 0) continue;
    json_t *o = m->value ? json_loads(m->value, 0, NULL) : NULL;
    const char *ia = json_string_value(json_object_get(o, "iaddr"));
    if (ia && *ia) snprintf(buf, cap, "%s", ia), found = true;
    else if (m->addr) snprintf(buf, cap, "%s", m->addr), found = true;
    json_decref(o);
  }
  pthread_mutex_unlock(&n->mu);
  return found;
}

qv_rc cl_coll_get(cl_node *n, const char *name, cl_coll *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&n->mu);
  entry *e = find(n, name);
  bool ok = e && e->has_config;
  if (ok) coll_copy(out, &e->c);
  pthread_mutex_unlock(&n->mu);
  return ok ? QV_OK : QV_ENOTFOUND;
}

qv_rc cl_coll_names(cl_node *n, char ***names, size_t *count) {
  pthread_mutex_lock(&n->mu);
  char **v = qv_calloc(n->n_colls ? n->n_colls : 1, sizeof *v);
  size_t k = 0;
  for (size_t i = 0; v && i < n->n_colls; i++)
    if (n->colls[i].has_config && (v[k] = qv_strdup(n->colls[i].c.name)) != NULL) k++;
  pthread_mutex_unlock(&n->mu);
  *names = v;
  *count = k;
  return v ? QV_OK : QV_ENOMEM;
}

void cl_names_free(char **names, size_t count) {
  for (size_t i = 0; names && i < count; i++) qv_free(names[i]);
  qv_free(names);
}

bool cl_wait_map(cl_node *n, const char *name, int64_t min_epoch, uint32_t timeout_ms) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
  bool ok = false;
  pthread_mutex_lock(&n->mu);
  for (;;) {
    entry *e = find(n, name);
    if (e && e->c.has_map && e->c.epoch >= min_epoch) {
      ok = true;
      break;
    }
    if (pthread_cond_timedwait(&n->cv, &n->mu, &dl) == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&n->mu);
  return ok;
}

qv_rc cl_coll_create(cl_node *n, const char *name, const char *params_json,
                     uint32_t shard_number, uint32_t rf, uint32_t wcf, qv_err *err) {
  json_t *params = json_loads(params_json, 0, NULL);
  if (!json_is_object(params) || shard_number < 1 || shard_number > CL_SHARDS_MAX || rf < 1 ||
      rf > CL_RF_MAX || wcf < 1 || wcf > rf) {
    json_decref(params);
    return qv_err_set(err, QV_EINVAL, "bad collection config for %s", name);
  }
  json_t *o = json_pack("{s:I, s:I, s:I, s:o}", "shard_number", (json_int_t)shard_number,
                        "replication_factor", (json_int_t)rf, "write_consistency_factor",
                        (json_int_t)wcf, "params", params);
  char *val = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (val == NULL) return qv_err_set(err, QV_ENOMEM, "out of memory");
  char key[MSHIP_PREFIX_MAX + CL_NAME_MAX + 32];
  snprintf(key, sizeof key, "%s/collections/%s/config", n->prefix, name);
  etcd_cmp cmp = {.key = key, .target = ETCD_CMP_CREATE, .result = ETCD_EQUAL, .number = 0};
  etcd_op put = {.kind = ETCD_OP_PUT, .key = key, .value = val, .value_len = strlen(val)};
  etcd_txn t = {.cmp = &cmp, .n_cmp = 1, .success = &put, .n_success = 1};
  etcd_txn_result res = {0};
  qv_rc rc = etcd_txn_do(n->etcd, &t, &res, err);
  free(val);
  bool won = res.succeeded;
  etcd_kvs_free(&res.kvs);
  if (rc != QV_OK) return rc;
  if (!won) return qv_err_set(err, QV_EEXIST, "collection %s exists", name);
  return QV_OK;
}

/* ---- the controller ---------------------------------------------------------------- */

static char *map_json(const cl_coll *c, int64_t epoch) {
  json_t *shards = json_array();
  for (uint32_t s = 0; shards && s < c->shard_number; s++) {
    const cl_shard *sh = &c->shards[s];
    json_t *reps = json_array();
    for (uint32_t k = 0; k < sh->n_reps; k++) {
      const cl_replica *r = &sh->reps[k];
      json_t *o = json_pack("{s:s, s:s}", "node", r->node, "state",
                            r->state == CL_DEAD      ? "dead"
                            : r->state == CL_PARTIAL ? "partial"
                                                     : "insync");
      if (o && r->state == CL_PARTIAL) json_object_set_new(o, "xfer", json_integer(r->xfer));
      if (o && r->state == CL_DEAD) json_object_set_new(o, "dead_ms", json_integer(r->dead_ms));
      json_array_append_new(reps, o);
    }
    json_array_append_new(shards, json_pack("{s:I, s:I, s:s, s:o}", "id", (json_int_t)s, "term",
                                            (json_int_t)sh->term, "primary", sh->primary,
                                            "replicas", reps));
  }
  json_t *o = json_pack("{s:I, s:I, s:I, s:o}", "epoch", (json_int_t)epoch, "shard_number",
                        (json_int_t)c->shard_number, "replication_factor", (json_int_t)c->rf,
                        "shards", shards);
  char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return t;
}

/* First placement of a collection over the live members. */
static void place_new(cl_node *n, const mship_view *v, cl_coll *c) {
  if (v->n == 0) return;
  const char **ids = qv_calloc(v->n, sizeof *ids);
  if (ids == NULL) return;
  for (size_t i = 0; i < v->n; i++) ids[i] = v->members[i].node_id;
  ring_opts ro;
  ring_opts_init(&ro);
  ro.rf = c->rf;
  ro.salt = c->name;
  ring_placement *p = NULL;
  qv_err err = {0};
  qv_rc rc = ring_place(ids, v->n, c->shard_number, &ro, &p, &err);
  qv_free(ids);
  if (rc != QV_OK) {
    qv_log(QV_LOG_WARN, "cluster", "placing %s: %s", c->name, err.msg);
    return;
  }
  c->shards = qv_calloc(c->shard_number, sizeof *c->shards);
  if (c->shards == NULL) goto out;
  for (uint32_t s = 0; s < c->shard_number; s++) {
    cl_shard *sh = &c->shards[s];
    sh->id = s;
    sh->term = 1;
    for (uint32_t k = 0; k < p->rf; k++) {
      snprintf(sh->reps[k].node, sizeof sh->reps[k].node, "%s", ring_replica(p, s, k));
      sh->reps[k].state = CL_INSYNC;
      sh->n_reps++;
    }
    snprintf(sh->primary, sizeof sh->primary, "%s", sh->reps[0].node);
  }
  char *json = map_json(c, 1);
  if (json) {
    rc = shardmap_cas_write(n->m, c->name, NULL, json, NULL, &err);
    if (rc == QV_OK)
      qv_log(QV_LOG_INFO, "cluster", "placed %s: %u shards x %u copies on %zu nodes, epoch 1",
             c->name, c->shard_number, p->rf, v->n);
    else
      qv_log(QV_LOG_WARN, "cluster", "placing %s: %s", c->name, err.msg);
  }
  free(json);
out:
  ring_placement_free(p);
}

static void plan_log(void *ctx, const char *line) { cl_event(ctx, "%s", line); }

/* The stale reports a pass has seen are consumed by it (acted on, or
 * obsolete): delete them so they cannot act again after a rejoin. */
static void drop_stale_keys(cl_node *n, const cl_coll *c) {
  for (size_t i = 0; i < c->n_stale; i++) {
    char key[MSHIP_PREFIX_MAX + CL_NAME_MAX + CL_ID_MAX + 48];
    snprintf(key, sizeof key, "%s/collections/%s/stale.%u.%s", n->prefix, c->name,
             c->stale[i].shard, c->stale[i].node);
    etcd_delete(n->etcd, key, false, NULL, NULL, NULL);
  }
}

qv_rc cl_stale_publish(cl_node *n, const char *coll, uint32_t shard, const char *node,
                       uint64_t term, qv_err *err) {
  mship_status st;
  mship_status_get(n->m, &st);
  if (st.lease == 0) return qv_err_set(err, QV_EIO, "not registered");
  char key[MSHIP_PREFIX_MAX + CL_NAME_MAX + CL_ID_MAX + 48], val[CL_ID_MAX + 64];
  snprintf(key, sizeof key, "%s/collections/%s/stale.%u.%s", n->prefix, coll, shard, node);
  snprintf(val, sizeof val, "{\"from\":\"%s\",\"term\":%llu}", n->id,
           (unsigned long long)term);
  return etcd_put(n->etcd, key, val, strlen(val), st.lease, NULL, err);
}

/* One controller pass over a placed collection (plan.h), written as one CAS
 * with epoch + 1. */
static void repair(cl_node *n, const mship_view *v, cl_coll *c) {
  const char **live = qv_calloc(v->n ? v->n : 1, sizeof *live);
  char **drain = NULL;
  size_t n_drain = 0;
  if (live == NULL || cl_drain_list(n, &drain, &n_drain) != QV_OK) {
    qv_free(live);
    return;
  }
  for (size_t i = 0; i < v->n; i++) live[i] = v->members[i].node_id;
  cl_plan_in in = {.live = live, .n_live = v->n, .draining = (const char *const *)drain,
                   .n_draining = n_drain, .now_ms = wall_ms(),
                   .move_delay_ms = (int64_t)n->move_delay_s * 1000, .log = plan_log, .ctx = n};
  bool changed = cl_plan(c, &in);
  qv_free(live);
  cl_names_free(drain, n_drain);
  if (!changed) {
    drop_stale_keys(n, c); /* what is left were obsolete (older terms) */
    return;
  }
  char *json = map_json(c, c->epoch + 1);
  if (json == NULL) return;
  shardmap_doc prev = {.epoch = c->epoch, .mod_revision = c->map_rev};
  qv_err err = {0};
  if (shardmap_cas_write(n->m, c->name, &prev, json, NULL, &err) != QV_OK) {
    qv_log(QV_LOG_WARN, "cluster", "updating the map of %s: %s", c->name, err.msg);
  } else {
    cl_event(n, "%s: map epoch %lld", c->name, (long long)(c->epoch + 1));
    drop_stale_keys(n, c);
  }
  free(json);
}

/* ---- transfer reports and draining ---------------------------------------------- */

qv_rc cl_xfer_publish(cl_node *n, const char *coll, const cl_xfer *x, qv_err *err) {
  mship_status st;
  mship_status_get(n->m, &st);
  if (st.lease == 0) return qv_err_set(err, QV_EIO, "not registered");
  json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:I}", "from", x->from, "to",
                        x->to, "xfer", (json_int_t)x->xfer, "term", (json_int_t)x->term, "phase",
                        x->phase, "copied", (json_int_t)x->copied, "total",
                        (json_int_t)x->total, "started_ms", (json_int_t)x->started_ms,
                        "updated_ms", (json_int_t)wall_ms());
  char *val = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (val == NULL) return qv_err_set(err, QV_ENOMEM, "out of memory");
  char key[MSHIP_PREFIX_MAX + CL_NAME_MAX + 48];
  snprintf(key, sizeof key, "%s/collections/%s/xfer.%u", n->prefix, coll, x->shard);
  qv_rc rc = etcd_put(n->etcd, key, val, strlen(val), st.lease, NULL, err);
  free(val);
  return rc;
}

void cl_xfer_unpublish(cl_node *n, const char *coll, uint32_t shard) {
  char key[MSHIP_PREFIX_MAX + CL_NAME_MAX + 48];
  snprintf(key, sizeof key, "%s/collections/%s/xfer.%u", n->prefix, coll, shard);
  etcd_delete(n->etcd, key, false, NULL, NULL, NULL);
}

static bool valid_id(const char *id) {
  size_t l = strlen(id);
  if (l == 0 || l > CL_ID_MAX) return false;
  for (const char *p = id; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
          *p == '-' || *p == '_' || *p == '.'))
      return false;
  return true;
}

qv_rc cl_drain_set(cl_node *n, const char *node_id, bool on, qv_err *err) {
  if (!valid_id(node_id)) return qv_err_set(err, QV_EINVAL, "bad node id");
  char key[MSHIP_PREFIX_MAX + CL_ID_MAX + 16];
  snprintf(key, sizeof key, "%s/drain/%s", n->prefix, node_id);
  if (!on) return etcd_delete(n->etcd, key, false, NULL, NULL, err);
  char val[64];
  snprintf(val, sizeof val, "{\"since_ms\":%lld}", (long long)wall_ms());
  return etcd_put(n->etcd, key, val, strlen(val), 0, NULL, err);
}

bool cl_is_draining(cl_node *n, const char *node_id) {
  bool yes = false;
  pthread_mutex_lock(&n->mu);
  for (size_t i = 0; i < n->n_draining; i++)
    if (!strcmp(n->draining[i], node_id)) yes = true;
  pthread_mutex_unlock(&n->mu);
  return yes;
}

qv_rc cl_drain_list(cl_node *n, char ***ids, size_t *count) {
  pthread_mutex_lock(&n->mu);
  char **v = qv_calloc(n->n_draining ? n->n_draining : 1, sizeof *v);
  size_t k = 0;
  for (size_t i = 0; v && i < n->n_draining; i++)
    if ((v[k] = qv_strdup(n->draining[i])) != NULL) k++;
  pthread_mutex_unlock(&n->mu);
  *ids = v;
  *count = k;
  return v ? QV_OK : QV_ENOMEM;
}

static void drain_apply(cl_node *n, const char *key, bool is_delete) {
  const char *id = strrchr(key, '/');
  if (id == NULL || !valid_id(++id)) return;
  for (size_t i = 0; i < n->n_draining; i++)
    if (!strcmp(n->draining[i], id)) {
      if (is_delete) {
        qv_free(n->draining[i]);
        n->draining[i] = n->draining[--n->n_draining];
      }
      return;
    }
  if (is_delete) return;
  char **v = qv_realloc(n->draining, (n->n_draining + 1) * sizeof *v);
  if (v == NULL) return;
  n->draining = v;
  if ((v[n->n_draining] = qv_strdup(id)) != NULL) n->n_draining++;
}

static void on_drain_watch(void *ctx, const etcd_watch_msg *m) {
  cl_node *n = ctx;
  pthread_mutex_lock(&n->mu);
  if (m->kind == ETCD_WATCH_SNAPSHOT) {
    while (n->n_draining) qv_free(n->draining[--n->n_draining]);
    for (size_t i = 0; i < m->n_kvs; i++) drain_apply(n, m->kvs[i].key, false);
  } else if (m->kind == ETCD_WATCH_EVENTS) {
    for (size_t i = 0; i < m->n_events; i++)
      drain_apply(n, m->events[i].kv.key, m->events[i].is_delete);
  }
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
}

static void *controller_main(void *arg) {
  cl_node *n = arg;
  pthread_mutex_lock(&n->mu);
  while (!n->stop) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += CONTROLLER_TICK_MS * 1000000L;
    if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&n->cv, &n->mu, &dl);
    if (n->stop) break;
    pthread_mutex_unlock(&n->mu);
    if (mship_is_controller(n->m, NULL)) {
      mship_view v = {0};
      qv_err err = {0};
      char **names = NULL;
      size_t count = 0;
      if (mship_view_get(n->m, &v, &err) == QV_OK && cl_coll_names(n, &names, &count) == QV_OK) {
        for (size_t i = 0; i < count; i++) {
          cl_coll c;
          if (cl_coll_get(n, names[i], &c) != QV_OK) continue;
          if (!c.has_map) place_new(n, &v, &c);
          else repair(n, &v, &c);
          cl_coll_free(&c);
        }
      }
      cl_names_free(names, count);
      mship_view_free(&v);
    }
    pthread_mutex_lock(&n->mu);
  }
  pthread_mutex_unlock(&n->mu);
  return NULL;
}

/* ---- start and stop -------------------------------------------------------------------- */

static bool mkdirs(const char *path) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return false;
  for (char *p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) return false;
      *p = '/';
    }
  return mkdir(buf, 0755) == 0 || errno == EEXIST;
}

/* The node id survives restarts: a random u63 in decimal, kept in
 * <data_dir>/cluster_node_id. */
static qv_rc node_id_load(const char *dir, char *id, size_t cap, qv_err *err) {
  if (!mkdirs(dir)) return qv_err_set(err, QV_EIO, "cannot create %s: %s", dir, strerror(errno));
  char path[4200];
  snprintf(path, sizeof path, "%s/cluster_node_id", dir);
  FILE *f = fopen(path, "r");
  unsigned long long v = 0;
  if (f) {
    int got = fscanf(f, "%llu", &v);
    fclose(f);
    if (got != 1 || v == 0) return qv_err_set(err, QV_ECORRUPT, "%s: not a node id", path);
  } else {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &v, sizeof v) != (ssize_t)sizeof v) {
      if (fd >= 0) close(fd);
      return qv_err_set(err, QV_EIO, "cannot read /dev/urandom");
    }
    close(fd);
    v = (v >> 1) | 1; /* fits int64 (Qdrant clients parse peer ids), never 0 */
    f = fopen(path, "w");
    if (f == NULL || fprintf(f, "%llu\n", v) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
      if (f) fclose(f);
      return qv_err_set(err, QV_EIO, "cannot write %s", path);
    }
    fclose(f);
  }
  snprintf(id, cap, "%llu", v);
  return QV_OK;
}

qv_rc cl_node_start(const cl_node_opts *o, cl_node **out, qv_err *err) {
  *out = NULL;
  cl_node *n = qv_calloc(1, sizeof *n);
  if (n == NULL) return qv_err_set(err, QV_ENOMEM, "out of memory");
  pthread_mutex_init(&n->mu, NULL);
  pthread_mutex_init(&n->ev_mu, NULL);
  pthread_cond_init(&n->cv, NULL);
  n->move_delay_s = o->move_delay_s ? o->move_delay_s : 60;
  snprintf(n->prefix, sizeof n->prefix, "%s", o->prefix ? o->prefix : "/quiver/v1");
  n->ttl_s = o->ttl_s ? o->ttl_s : MSHIP_TTL_S_DEFAULT;
  qv_rc rc = node_id_load(o->data_dir, n->id, sizeof n->id, err);
  if (rc != QV_OK) goto fail;
  etcd_opts eo;
  etcd_opts_init(&eo);
  eo.endpoints = o->endpoints;
  rc = etcd_client_new(&eo, &n->etcd, err);
  if (rc != QV_OK) goto fail;
  mship_opts mo;
  mship_opts_init(&mo);
  mo.prefix = n->prefix;
  mo.node_id = n->id;
  mo.addr = o->node_addr;
  mo.ttl_s = n->ttl_s;
  char meta[320];
  if (o->internal_addr && *o->internal_addr) {
    snprintf(meta, sizeof meta, "{\"iaddr\":\"%s\"}", o->internal_addr);
    mo.meta_json = meta;
  }
  mo.on_members = on_members;
  mo.ctx = n;
  rc = mship_start(n->etcd, &mo, &n->m, err);
  if (rc != QV_OK) goto fail;
  char wkey[MSHIP_PREFIX_MAX + 32];
  snprintf(wkey, sizeof wkey, "%s/collections/", n->prefix);
  etcd_watch_opts wo;
  etcd_watch_opts_init(&wo);
  wo.key = wkey;
  wo.prefix = true;
  wo.fn = on_watch;
  wo.ctx = n;
  rc = etcd_watch_start(n->etcd, &wo, &n->w, err);
  if (rc != QV_OK) goto fail;
  /* Serve only once the collections are known: a request for a distributed
   * collection must not be taken for a local one (404). */
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 10;
  pthread_mutex_lock(&n->mu);
  while (!n->synced && pthread_cond_timedwait(&n->cv, &n->mu, &dl) != ETIMEDOUT) {
  }
  pthread_mutex_unlock(&n->mu);
  snprintf(wkey, sizeof wkey, "%s/drain/", n->prefix);
  wo.fn = on_drain_watch;
  rc = etcd_watch_start(n->etcd, &wo, &n->dw, err);
  if (rc != QV_OK) goto fail;
  if (pthread_create(&n->ctl, NULL, controller_main, n) != 0) {
    rc = qv_err_set(err, QV_EIO, "cannot start the controller thread");
    goto fail;
  }
  n->ctl_started = true;
  qv_log(QV_LOG_INFO, "cluster", "node %s (%s) joined %s at %s, lease TTL %u s", n->id,
         o->node_addr, o->endpoints, n->prefix, n->ttl_s);
  *out = n;
  return QV_OK;
fail:
  cl_node_stop(n);
  return rc;
}

void cl_node_stop(cl_node *n) {
  if (n == NULL) return;
  pthread_mutex_lock(&n->mu);
  n->stop = true;
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
  if (n->ctl_started) pthread_join(n->ctl, NULL);
  etcd_watch_stop(n->w);
  etcd_watch_stop(n->dw);
  mship_stop(n->m);
  etcd_client_free(n->etcd);
  while (n->n_colls) drop_entry(n, &n->colls[0]);
  qv_free(n->colls);
  mship_view_free(&n->view);
  while (n->n_draining) qv_free(n->draining[--n->n_draining]);
  qv_free(n->draining);
  pthread_mutex_destroy(&n->ev_mu);
  pthread_cond_destroy(&n->cv);
  pthread_mutex_destroy(&n->mu);
  qv_free(n);
}
