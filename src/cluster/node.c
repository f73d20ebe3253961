/* node.c: a node in cluster mode — its id, membership and member view,
 * addresses of peers, the event ring, drain marks, and its writes to etcd
 * outside the shard map (collection config create / delete / params,
 * transfer reports); start and stop.
 *
 * The split: node_view.c keeps the watched view of the collections,
 * node_ctl.c runs the controller and carries operators' requests to it;
 * node_int.h is what the three share (the struct, `mu` and `cv`). Does not
 * own HTTP, the engine or shard data (src/server/). See node.h for the keys
 * and the invariants. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
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
#include "cluster/node_int.h"


int64_t node_wall_ms(void) {
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
  e->ms = node_wall_ms();
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

/* A random odd u63: fits int64 (Qdrant clients parse peer ids, jansson
 * integers are signed) and is never 0. */
bool node_random_u63(uint64_t *out) {
  uint64_t v = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  bool ok = fd >= 0 && read(fd, &v, sizeof v) == (ssize_t)sizeof v;
  if (fd >= 0) close(fd);
  if (ok) *out = (v >> 1) | 1;
  return ok;
}
const char *cl_node_id(const cl_node *n) { return n->id; }
mship *cl_node_mship(cl_node *n) { return n->m; }
bool cl_node_fenced(const cl_node *n) { return mship_is_fenced(n->m); }
uint32_t cl_node_ttl_s(const cl_node *n) { return n->ttl_s; }

uint32_t cl_load_cap(uint32_t copies, uint32_t n_nodes) {
  if (n_nodes == 0) return 0;
  return (uint32_t)ceil(1.25 * copies / n_nodes);
}

/* ---- members ------------------------------------------------------------------- */

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

/* ---- collection configs ------------------------------------------------------------ */

qv_rc cl_coll_create(cl_node *n, const char *name, const char *params_json,
                     uint32_t shard_number, uint32_t rf, uint32_t wcf, qv_err *err) {
  json_t *params = json_loads(params_json, 0, NULL);
  if (!json_is_object(params) || shard_number < 1 || shard_number > CL_SHARDS_MAX || rf < 1 ||
      rf > CL_RF_MAX || wcf < 1 || wcf > rf) {
    json_decref(params);
    return qv_err_set(err, QV_EINVAL, "bad collection config for %s", name);
  }
  uint64_t uid = 0;
  if (!node_random_u63(&uid)) {
    json_decref(params);
    return qv_err_set(err, QV_EIO, "cannot read /dev/urandom");
  }
  json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:o}", "shard_number", (json_int_t)shard_number,
                        "replication_factor", (json_int_t)rf, "write_consistency_factor",
                        (json_int_t)wcf, "uid", (json_int_t)uid, "params", params);
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

qv_rc cl_coll_delete(cl_node *n, const char *name, qv_err *err) {
  if (strlen(name) == 0 || strlen(name) > CL_NAME_MAX || strchr(name, '/'))
    return qv_err_set(err, QV_EINVAL, "bad collection name \"%.64s\"", name);
  /* The trailing slash: "docs/" must not take "docs2/" with it. */
  char key[MSHIP_PREFIX_MAX + CL_NAME_MAX + 32];
  snprintf(key, sizeof key, "%s/collections/%s/", n->prefix, name);
  return etcd_delete(n->etcd, key, true, NULL, NULL, err);
}

qv_rc cl_coll_set_params(cl_node *n, const char *name, const char *params_json,
                         int64_t if_mod_rev, int64_t *mod_rev, qv_err *err) {
  char key[MSHIP_PREFIX_MAX + CL_NAME_MAX + 32];
  snprintf(key, sizeof key, "%s/collections/%s/config", n->prefix, name);
  json_t *params = json_loads(params_json, 0, NULL);
  if (!json_is_object(params)) {
    json_decref(params);
    return qv_err_set(err, QV_EINVAL, "%s: params must be a JSON object", name);
  }
  etcd_kvs cur;
  qv_rc rc = etcd_get(n->etcd, key, &cur, err);
  if (rc != QV_OK) {
    json_decref(params);
    return rc;
  }
  json_t *o = cur.n ? json_loadb(cur.kvs[0].value, cur.kvs[0].value_len, 0, NULL) : NULL;
  bool same = cur.n && cur.kvs[0].mod_revision == if_mod_rev;
  etcd_kvs_free(&cur);
  if (!json_is_object(o) || !same) {
    json_decref(o);
    json_decref(params);
    return o ? qv_err_set(err, QV_EBUSY, "%s: the config changed meanwhile", name)
             : qv_err_set(err, QV_ENOTFOUND, "%s: no config", name);
  }
  json_object_set_new(o, "params", params); /* the rest (uid, shards) as stored */
  char *val = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (val == NULL) return qv_err_set(err, QV_ENOMEM, "out of memory");
  etcd_cmp cmp = {.key = key, .target = ETCD_CMP_MOD, .result = ETCD_EQUAL, .number = if_mod_rev};
  etcd_op put = {.kind = ETCD_OP_PUT, .key = key, .value = val, .value_len = strlen(val)};
  etcd_txn t = {.cmp = &cmp, .n_cmp = 1, .success = &put, .n_success = 1};
  etcd_txn_result res = {0};
  rc = etcd_txn_do(n->etcd, &t, &res, err);
  free(val);
  bool won = res.succeeded;
  int64_t rev = res.revision;
  etcd_kvs_free(&res.kvs);
  if (rc != QV_OK) return rc;
  if (!won) return qv_err_set(err, QV_EBUSY, "%s: the config changed meanwhile", name);
  if (mod_rev) *mod_rev = rev;
  return QV_OK;
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
                        "updated_ms", (json_int_t)node_wall_ms());
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
  snprintf(val, sizeof val, "{\"since_ms\":%lld}", (long long)node_wall_ms());
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
    uint64_t r;
    if (!node_random_u63(&r)) return qv_err_set(err, QV_EIO, "cannot read /dev/urandom");
    v = r;
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
  wo.fn = node_on_watch;
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
  if (pthread_create(&n->ctl, NULL, node_controller_main, n) != 0) {
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
  while (n->n_colls) node_drop_entry(n, &n->colls[0]);
  qv_free(n->colls);
  mship_view_free(&n->view);
  while (n->n_draining) qv_free(n->draining[--n->n_draining]);
  qv_free(n->draining);
  pthread_mutex_destroy(&n->ev_mu);
  pthread_cond_destroy(&n->cv);
  pthread_mutex_destroy(&n->mu);
  qv_free(n);
}
