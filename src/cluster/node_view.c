/* node_view.c: a node's watched view of every collection — decoding the
 * keys under <prefix>/collections/ (config, shardmap, transfer and stale
 * reports, operators' requests) into private copies, and the queries and
 * bounded waits on them.
 *
 * Owns the table of collections (node_int.h: under `mu`, every change
 * broadcast on `cv`). Invariants: the watch delivers every change in
 * revision order, so what the table lacks after its first snapshot was
 * deleted; an entry is visible (cl_coll_get) only once its config was
 * decoded; a malformed value is ignored (and logged), never half-applied.
 * Does not write etcd (node.c, node_ctl.c). */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/log.h"
#include "cluster/node.h"
#include "cluster/node_int.h"

void cl_coll_free(cl_coll *c) {
  if (c == NULL) return;
  qv_free(c->params);
  qv_free(c->shards);
  qv_free(c->xfers);
  qv_free(c->stale);
  qv_free(c->ops);
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
  dst->ops = NULL;
  dst->n_ops = 0;
  if (src->n_ops && (dst->ops = qv_malloc(sizeof *src->ops * src->n_ops)) != NULL) {
    memcpy(dst->ops, src->ops, sizeof *src->ops * src->n_ops);
    dst->n_ops = src->n_ops;
  }
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

/* ---- decoding what etcd holds --------------------------------------------------- */

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
    c->uid = (uint64_t)json_integer_value(json_object_get(o, "uid"));
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
    sh[i].is_pinned = json_is_true(json_object_get(s, "pinned"));
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
      sh[i].reps[k].is_leaving = json_is_true(json_object_get(rp, "leaving"));
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

const char *const node_op_kinds[] = {"move", "replicate", "drop", "abort", "unpin"};
const size_t node_n_op_kinds = sizeof node_op_kinds / sizeof node_op_kinds[0];

/* Applies an op.<shard> key (value {"kind","from","to","id","refused"?})
 * to c. */
static void set_op(cl_coll *c, const char *suffix, const etcd_kv *kv, bool is_delete) {
  char *end;
  unsigned long k = strtoul(suffix, &end, 10);
  if (*end != 0 || k >= CL_SHARDS_MAX) return;
  for (size_t i = 0; i < c->n_ops; i++)
    if (c->ops[i].shard == k) {
      c->ops[i] = c->ops[--c->n_ops];
      break;
    }
  if (is_delete) return;
  json_t *o = json_loadb(kv->value, kv->value_len, 0, NULL);
  const char *kind = json_string_value(json_object_get(o, "kind"));
  const char *from = json_string_value(json_object_get(o, "from"));
  const char *to = json_string_value(json_object_get(o, "to"));
  const char *id = json_string_value(json_object_get(o, "id"));
  const char *refused = json_string_value(json_object_get(o, "refused"));
  int kk = -1;
  for (int i = 0; kind && i < (int)(node_n_op_kinds); i++)
    if (!strcmp(kind, node_op_kinds[i])) kk = i;
  cl_op *v = kk >= 0 && from && to && id && strlen(from) <= CL_ID_MAX && strlen(to) <= CL_ID_MAX
                 ? qv_realloc(c->ops, (c->n_ops + 1) * sizeof *v)
                 : NULL;
  if (v) {
    c->ops = v;
    cl_op *x = &v[c->n_ops++];
    memset(x, 0, sizeof *x);
    x->kind = (cl_op_kind)kk;
    x->shard = (uint32_t)k;
    snprintf(x->from, sizeof x->from, "%s", from);
    snprintf(x->to, sizeof x->to, "%s", to);
    snprintf(x->id, sizeof x->id, "%s", id);
    snprintf(x->refused, sizeof x->refused, "%s", refused ? refused : "");
    x->lease = kv->lease;
    x->rev = kv->mod_revision;
  }
  json_decref(o);
}

/* ---- the table (mu held) ------------------------------------------------------- */

static node_entry *find(cl_node *n, const char *name) {
  for (size_t i = 0; i < n->n_colls; i++)
    if (!strcmp(n->colls[i].c.name, name)) return &n->colls[i];
  return NULL;
}

static node_entry *find_or_add(cl_node *n, const char *name) {
  node_entry *e = find(n, name);
  if (e || strlen(name) > CL_NAME_MAX) return e;
  if (n->n_colls == n->cap_colls) {
    size_t cap = n->cap_colls ? 2 * n->cap_colls : 8;
    node_entry *p = qv_realloc(n->colls, cap * sizeof *p);
    if (p == NULL) return NULL;
    n->colls = p;
    n->cap_colls = cap;
  }
  e = &n->colls[n->n_colls++];
  memset(e, 0, sizeof *e);
  strcpy(e->c.name, name);
  return e;
}

void node_drop_entry(cl_node *n, node_entry *e) {
  cl_coll_free(&e->c);
  *e = n->colls[--n->n_colls];
}

/* Applies one key of <prefix>/collections/. */
static void apply_kv(cl_node *n, const etcd_kv *kv, bool is_delete) {
  const char *key = kv->key, *val = kv->value;
  size_t len = kv->value_len;
  size_t pl = strlen(n->prefix) + strlen("/collections/");
  if (strlen(key) <= pl) return;
  const char *rest = key + pl, *slash = strrchr(rest, '/');
  if (slash == NULL || (size_t)(slash - rest) > CL_NAME_MAX) return;
  char name[CL_NAME_MAX + 1];
  memcpy(name, rest, (size_t)(slash - rest));
  name[slash - rest] = 0;
  bool is_cfg = !strcmp(slash + 1, "config"), is_map = !strcmp(slash + 1, "shardmap");
  if (!strncmp(slash + 1, "stale.", 6)) {
    node_entry *e = find(n, name);
    if (e) set_stale(&e->c, slash + 7, val, len, is_delete);
    return;
  }
  if (!strncmp(slash + 1, "op.", 3)) {
    node_entry *e = find(n, name);
    if (e) set_op(&e->c, slash + 4, kv, is_delete);
    return;
  }
  if (!strncmp(slash + 1, "xfer.", 5)) {
    char *end;
    unsigned long k = strtoul(slash + 6, &end, 10);
    node_entry *e = *end == 0 && k < CL_SHARDS_MAX ? find(n, name) : NULL;
    cl_xfer x;
    if (e && is_delete) set_xfer(&e->c, (uint32_t)k, NULL);
    else if (e && parse_xfer(val, len, (uint32_t)k, &x)) set_xfer(&e->c, (uint32_t)k, &x);
    return;
  }
  if (!is_cfg && !is_map) return;
  if (is_delete) {
    node_entry *e = find(n, name);
    if (e && is_cfg) node_drop_entry(n, e);
    else if (e) e->c.has_map = false;
    return;
  }
  node_entry *e = find_or_add(n, name);
  if (e == NULL) return;
  bool ok = is_cfg ? parse_config(val, len, &e->c)
                    : parse_map(val, len, kv->mod_revision, &e->c);
  if (is_cfg && ok) {
    e->has_config = true;
    e->c.cfg_rev = kv->create_revision;
    e->c.cfg_mod_rev = kv->mod_revision;
  }
  if (!ok) qv_log(QV_LOG_WARN, "cluster", "ignoring malformed %s", key);
}

void node_on_watch(void *ctx, const etcd_watch_msg *m) {
  cl_node *n = ctx;
  pthread_mutex_lock(&n->mu);
  if (m->kind == ETCD_WATCH_SNAPSHOT) {
    n->synced = true;
    while (n->n_colls) node_drop_entry(n, &n->colls[0]);
    for (size_t i = 0; i < m->n_kvs; i++) apply_kv(n, &m->kvs[i], false);
  } else if (m->kind == ETCD_WATCH_EVENTS) {
    for (size_t i = 0; i < m->n_events; i++) apply_kv(n, &m->events[i].kv, m->events[i].is_delete);
  }
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
}

/* ---- queries and waits ----------------------------------------------------------- */

qv_rc cl_coll_get(cl_node *n, const char *name, cl_coll *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&n->mu);
  node_entry *e = find(n, name);
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
    node_entry *e = find(n, name);
    if (e && e->c.has_map && e->c.epoch >= min_epoch) {
      ok = true;
      break;
    }
    if (pthread_cond_timedwait(&n->cv, &n->mu, &dl) == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&n->mu);
  return ok;
}

/* Waits on the view (mu held by the caller) until done(e) or the deadline. */
bool node_wait_view(cl_node *n, const char *name, uint32_t timeout_ms,
                    bool (*done)(const node_entry *e, void *arg), void *arg) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
  bool ok = false;
  pthread_mutex_lock(&n->mu);
  for (;;) {
    node_entry *e = find(n, name);
    if (done(e && e->has_config ? e : NULL, arg)) {
      ok = true;
      break;
    }
    if (pthread_cond_timedwait(&n->cv, &n->mu, &dl) == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&n->mu);
  return ok;
}

static bool is_gone(const node_entry *e, void *arg) {
  return e == NULL || e->c.uid != *(uint64_t *)arg;
}

static bool has_config_rev(const node_entry *e, void *arg) {
  return e != NULL && e->c.cfg_mod_rev >= *(int64_t *)arg;
}

bool cl_wait_gone(cl_node *n, const char *name, uint64_t uid, uint32_t timeout_ms) {
  return node_wait_view(n, name, timeout_ms, is_gone, &uid);
}

bool cl_wait_config(cl_node *n, const char *name, int64_t min_mod_rev, uint32_t timeout_ms) {
  return node_wait_view(n, name, timeout_ms, has_config_rev, &min_mod_rev);
}

bool cl_view_complete(cl_node *n) {
  pthread_mutex_lock(&n->mu);
  bool synced = n->synced;
  pthread_mutex_unlock(&n->mu);
  return synced && !mship_is_fenced(n->m);
}
